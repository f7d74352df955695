//! A small TCP request/response tool, run by the benchmark inside the
//! namespaces it measures (`ip netns exec NS twill-bench __tcp-...`):
//!
//! * `__tcp-server PORT MAX_SECONDS [CPU]`: echoes every MSG_BYTES-byte
//!   request back, on as many connections as come, and exits after
//!   MAX_SECONDS whatever happens (the benchmark also kills it when done).
//! * `__tcp-client IP:PORT rr|crr SECONDS MAX_COUNT [CPU]`: `rr` sends
//!   requests on one connection, one outstanding at a time (netperf
//!   TCP_RR); `crr` opens a connection per request and closes it (netperf
//!   TCP_CRR). Stops after SECONDS or MAX_COUNT transactions, whichever
//!   comes first, and prints `{"count": N, "seconds": S, "p50_us": M,
//!   "p99_us": P}` (M, P: the median and 99th percentile of one
//!   transaction's round trip, `rr` only;
//!   `crr` adds `connect_p50_us` and `connect_p99_us`, how long connect()
//!   takes: the first packet's round trip).
//! * `__tcp-probe IP:PORT TIMEOUT_MS`: exits 0 if a connection opens.
//!
//! With CPU, the process runs on that CPU only.
//!
//! `crr` closes each connection with a reset (SO_LINGER 0), so no
//! TIME_WAIT state piles up and every run starts from the same state, and
//! widens the namespace's ephemeral port range to 1024-65535: connect()
//! takes even ports first, so up to 32,256 connections to one server port
//! never reuse a 4-tuple (which would find the closed connection's
//! conntrack entry instead of being a new connection).

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// Request and response size, bytes.
pub const MSG_BYTES: usize = 64;
const SERVER_THREADS: usize = 4;
/// How long a client waits for its server to listen.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Runs the calling process (all its threads, created later) on one CPU.
fn pin(args: &[String], index: usize) -> anyhow::Result<()> {
    let Some(cpu) = args.get(index) else { return Ok(()) };
    let cpu: usize = cpu.parse().context("CPU")?;
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays in bounds for
    // cpu < CPU_SETSIZE, checked first.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            bail!("CPU {cpu} out of range");
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes close() send a reset instead of a FIN: no TIME_WAIT.
fn close_with_reset(stream: &TcpStream) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on an open socket with a correctly sized value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("SO_LINGER: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn arg<'a>(args: &'a [String], i: usize, what: &str) -> anyhow::Result<&'a str> {
    args.get(i).map(String::as_str).with_context(|| format!("missing argument {what}"))
}

/// Reads one whole message; `false` on a clean end of stream before it.
fn read_message(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = [0u8; MSG_BYTES];
    while read_message(&mut stream, &mut buf)? {
        stream.write_all(&buf)?;
    }
    Ok(())
}

pub fn server(args: &[String]) -> anyhow::Result<()> {
    let port: u16 = arg(args, 0, "PORT")?.parse()?;
    let max_seconds: u64 = arg(args, 1, "MAX_SECONDS")?.parse()?;
    pin(args, 2)?;
    let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding port {port}"))?;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(max_seconds));
        std::process::exit(0);
    });
    let mut workers = Vec::new();
    for _ in 0..SERVER_THREADS {
        let listener = listener.try_clone()?;
        workers.push(std::thread::spawn(move || loop {
            if let Ok((stream, _)) = listener.accept() {
                let _ = echo(stream);
            }
        }));
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

fn connect_when_ready(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                if e.kind() != ErrorKind::ConnectionRefused && e.kind() != ErrorKind::TimedOut {
                    bail!("connecting to {addr}: {e}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => bail!("connecting to {addr}: {e} (server not reachable for {CONNECT_WAIT:?})"),
        }
    }
}

fn transact(stream: &mut TcpStream, buf: &mut [u8; MSG_BYTES]) -> anyhow::Result<()> {
    stream.write_all(buf)?;
    if !read_message(stream, buf)? {
        bail!("server closed the connection");
    }
    Ok(())
}

pub fn client(args: &[String]) -> anyhow::Result<()> {
    let addr: SocketAddr = arg(args, 0, "IP:PORT")?.parse()?;
    let mode = arg(args, 1, "rr|crr")?;
    let seconds: f64 = arg(args, 2, "SECONDS")?.parse()?;
    let max_count: u64 = arg(args, 3, "MAX_COUNT")?.parse()?;
    pin(args, 4)?;
    let mut buf = [7u8; MSG_BYTES];
    let mut stream = connect_when_ready(addr)?;
    stream.set_nodelay(true)?;
    let mut count = 0u64;
    // Round trips in 100 ns buckets up to 10 ms (the last bucket holds
    // everything slower): bounded memory whatever the count.
    let mut latency = vec![0u64; 100_001];
    // crr: how long connect() takes, the first packet's round trip.
    let mut connect = vec![0u64; 100_001];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    match mode {
        "rr" => {
            let mut now = start;
            while count < max_count && now < deadline {
                transact(&mut stream, &mut buf).with_context(|| format!("after {count} transactions"))?;
                let done = Instant::now();
                let bucket = ((done - now).as_nanos() / 100).min(latency.len() as u128 - 1) as usize;
                latency[bucket] += 1;
                now = done;
                count += 1;
            }
        }
        "crr" => {
            // This namespace is the benchmark's own (see the module docs).
            std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535")
                .context("widening the ephemeral port range")?;
            drop(stream);
            while count < max_count && Instant::now() < deadline {
                let opening = Instant::now();
                let mut s = TcpStream::connect(addr).with_context(|| format!("after {count} connections"))?;
                let bucket = (opening.elapsed().as_nanos() / 100).min(connect.len() as u128 - 1) as usize;
                connect[bucket] += 1;
                s.set_nodelay(true)?;
                transact(&mut s, &mut buf).with_context(|| format!("after {count} connections"))?;
                close_with_reset(&s)?;
                count += 1;
            }
        }
        other => bail!("unknown mode {other:?}; expected rr or crr"),
    }
    let us = |histogram: &[u64], q: f64| percentile(histogram, q).map(|bucket| bucket as f64 / 10.0);
    println!(
        "{}",
        serde_json::json!({
            "count": count,
            "seconds": start.elapsed().as_secs_f64(),
            "p50_us": us(&latency, 0.50),
            "p99_us": us(&latency, 0.99),
            "connect_p50_us": us(&connect, 0.50),
            "connect_p99_us": us(&connect, 0.99),
        })
    );
    Ok(())
}

/// The bucket holding quantile `q` of a histogram (None if it is empty).
fn percentile(histogram: &[u64], q: f64) -> Option<usize> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    histogram.iter().position(|n| {
        seen += n;
        seen >= rank
    })
}

pub fn probe(args: &[String]) -> anyhow::Result<()> {
    let addr: SocketAddr = arg(args, 0, "IP:PORT")?.parse()?;
    let timeout: u64 = arg(args, 1, "TIMEOUT_MS")?.parse()?;
    match TcpStream::connect_timeout(&addr, Duration::from_millis(timeout)) {
        Ok(_) => Ok(()),
        Err(e) => {
            println!("{e}");
            std::process::exit(1)
        }
    }
}
