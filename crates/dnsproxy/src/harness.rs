//! For tests and the benchmark: a network namespace of the caller's own
//! with a real dnsmasq on its loopback, and a way to run async code
//! inside that namespace (on a thread of its own: setns changes only the
//! calling thread, and sockets keep the namespace they were made in).
//! Needs root and Debian's `dnsmasq`.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// A namespace `twdns-PID-N`, removed (with its dnsmasq) on drop.
pub struct DnsNamespace {
    pub name: String,
    dnsmasq: Option<Child>,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

impl DnsNamespace {
    /// Creates the namespace with loopback up.
    pub fn new() -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("twdns-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = DnsNamespace { name, dnsmasq: None };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// Starts dnsmasq on 127.0.0.1:53 in the namespace, answering
    /// `addresses` (domain → IPv4, subdomains included, as
    /// `--address=/DOMAIN/IP` does) with TTL `ttl`, and waits (polling,
    /// 10 s at most) until it answers.
    pub fn start_dnsmasq(&mut self, addresses: &[(&str, &str)], ttl: u32) -> Result<SocketAddr, String> {
        self.start_dnsmasq_on(std::net::Ipv4Addr::LOCALHOST, addresses, ttl)
    }

    /// [`Self::start_dnsmasq`] on another address of the namespace.
    pub fn start_dnsmasq_on(
        &mut self,
        listen: std::net::Ipv4Addr,
        addresses: &[(&str, &str)],
        ttl: u32,
    ) -> Result<SocketAddr, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts"])
            .args([
                "--conf-file=/dev/null",
                "--port=53",
                &format!("--listen-address={listen}"),
                "--bind-interfaces",
            ])
            .args(["--pid-file=", "--cache-size=0", &format!("--local-ttl={ttl}")]);
        for (domain, ip) in addresses {
            cmd.arg(format!("--address=/{domain}/{ip}"));
        }
        let child =
            cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| format!("dnsmasq: {e}"))?;
        self.dnsmasq = Some(child);
        let server = SocketAddr::from((listen, 53));
        let probe = addresses.first().map(|(d, _)| d.to_string()).unwrap_or_else(|| "probe.test".into());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let probe = probe.clone();
            let answered =
                self.enter(move || query_blocking(server, &probe, Duration::from_millis(200)).is_ok());
            if answered {
                return Ok(server);
            }
            if let Some(status) = self.dnsmasq.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let mut err = String::new();
                if let Some(mut e) = self.dnsmasq.take().and_then(|mut c| c.stderr.take()) {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("dnsmasq exited with {status}: {err}"));
            }
        }
        Err("dnsmasq did not answer within 10 s".into())
    }

    /// Runs `ip -n NAME ARGS...` (e.g. to add addresses and routes).
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new("ip").args(["netns", "exec", &self.name]).args(args))
    }

    /// Runs `f` on a new thread inside the namespace and returns its result.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on an fd we hold open; affects this thread only.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the namespace thread panicked")
    }

    /// Runs a future on a current-thread runtime inside the namespace.
    pub fn block_on<T: Send + 'static, F: Future<Output = T> + 'static>(
        &self,
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        self.enter(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(f())
        })
    }
}

impl Drop for DnsNamespace {
    fn drop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// An A query for `name` with id `id`.
pub fn query_bytes(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).expect("a valid test name"), RecordType::A));
    m.to_vec().expect("encodes")
}

/// Sends one A query straight to `server` and waits for the answer.
pub fn query_blocking(server: SocketAddr, name: &str, timeout: Duration) -> std::io::Result<Message> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(timeout))?;
    sock.connect(server)?;
    sock.send(&query_bytes(name, 1))?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf)?;
    Message::from_vec(&buf[..n]).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
