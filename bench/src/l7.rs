//! HTTP through the L7 proxy: requests per second and latency (p50, p99)
//! with wrk, one keep-alive load of 8 connections from one endpoint to an
//! HTTP server in another, three ways in interleaved rounds of one run:
//!
//! * direct: no policy on the server;
//! * L3/L4: a CiliumNetworkPolicy allowing the client on the port;
//! * L7: the same with `rules.http` (GET /public), so every request goes
//!   through twill-proxy and is matched and reported as two L7 flows;
//! * relay: the L3/L4 policy, and wrk connects to a plain `socat` TCP
//!   relay in the node's namespace (where twill-proxy runs) that connects
//!   to the server: the same extra user-space hop with no HTTP parsing,
//!   policy or records, so the ceiling any user-space proxy on this path
//!   meets on this machine.
//!
//! Then the proxy's memory per connection: its RSS before and after a
//! thousand idle keep-alive connections through it.
//!
//! The server is the same small asyncio HTTP/1.1 responder in every case,
//! pinned to one CPU like wrk is to the other: at this machine's size it
//! bounds the direct rate, so the L7 ratio is the proxy's cost on top of
//! a server that itself costs something.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use twill_api::{PolicyFile, PolicyImported, Request};

use crate::{median, Bench, Row};

const ROUNDS: usize = 3;
const SECONDS: u32 = 4;
const CONNECTIONS: u32 = 8;
const PORT: u16 = 8080;
const POLICY: &str = "bench-l7";
/// The relay's port on the node's router address.
const RELAY_PORT: u16 = 18080;
const IDLE_CONNECTIONS: usize = 1000;

/// Opens IDLE_CONNECTIONS keep-alive connections to URL's host:port,
/// one GET on each (so the proxy has its upstream connection too), prints
/// "ready", then holds them until stdin closes.
const IDLE_CLIENT: &str = r#"
import resource, socket, sys
n, ip, port, path = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
req = ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, ip)).encode()
conns = []
for _ in range(n):
    s = socket.create_connection((ip, port), timeout=10)
    s.sendall(req)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk: sys.exit("connection closed before the answer")
        got += chunk
    if b" 200 " not in got.split(b"\r\n")[0]: sys.exit("answer: %r" % got[:80])
    conns.append(s)
print("ready", flush=True)
sys.stdin.read()
"#;

const SERVER: &str = r#"
import asyncio, sys
R = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"
async def conn(r, w):
    buf = b""
    try:
        while True:
            data = await r.read(65536)
            if not data: break
            buf += data
            n = buf.count(b"\r\n\r\n")
            if n:
                buf = buf[buf.rfind(b"\r\n\r\n") + 4:]
                w.write(R * n)
                await w.drain()
    except ConnectionError:
        pass
    w.close()
import resource
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def main():
    s = await asyncio.start_server(conn, "0.0.0.0", int(sys.argv[1]), backlog=1024)
    async with s: await s.serve_forever()
asyncio.run(main())
"#;

fn policy(mode: &str) -> String {
    let rules =
        if mode == "l7" { "\n      rules:\n        http: [{method: GET, path: /public}]" } else { "" };
    // The relay's connections to the server come from the node itself.
    let from = if mode == "relay" { "\n    fromEntities: [host]" } else { "" };
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {POLICY}, namespace: default}}\nspec:\n  endpointSelector: {{matchLabels: {{app: l7-web}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: l7-client}}}}]{from}\n    toPorts:\n    - ports: [{{port: \"{PORT}\", protocol: TCP}}]{rules}\n"
    )
}

/// The twill-proxy serving `bench`'s agent: the one whose control socket
/// is in the agent's run directory.
fn proxy_pid(bench: &Bench) -> Option<u32> {
    let socket = bench.run_dir().join("proxy.sock");
    let socket = socket.to_string_lossy();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_proxy = args.first()?.ends_with(b"twill-proxy");
        (is_proxy && args.iter().any(|a| *a == socket.as_bytes())).then_some(pid)
    })
}

struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// wrk's "Requests/sec:" and its latency distribution's 50% and 99%.
fn parse_wrk(out: &str) -> anyhow::Result<Sample> {
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => return None,
        })
    };
    let field =
        |key: &str| out.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()));
    let rps = field("Requests/sec:").and_then(|v| v.parse().ok()).context("no Requests/sec in wrk output")?;
    let p50 = field("50%").and_then(|v| ms(&v)).context("no 50% latency in wrk output")?;
    let p99 = field("99%").and_then(|v| ms(&v)).context("no 99% latency in wrk output")?;
    if out.contains("Non-2xx") {
        bail!("wrk saw non-2xx answers:\n{out}");
    }
    Ok(Sample { rps, p50_ms: p50, p99_ms: p99 })
}

pub fn run(bench: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let server = bench.create("l7-web", "app=l7-web")?;
    let client = bench.create("l7-client", "app=l7-client")?;
    let url = format!("http://{}:{PORT}/public", server.ipv4);
    let router = bench.router_ip();
    let relay_url = format!("http://{router}:{RELAY_PORT}/public");
    let mut relay: Child = Command::new("ip")
        .args(["netns", "exec", crate::NODE_NETNS, "socat"])
        .arg(format!("TCP-LISTEN:{RELAY_PORT},bind={router},reuseaddr,fork,backlog=1024"))
        .arg(format!("TCP:{}:{PORT},nodelay", server.ipv4))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting socat (scripts/setup.sh installs it)")?;
    let mut srv: Child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &server.netns,
            "taskset",
            "-c",
            "0",
            "python3",
            "-c",
            SERVER,
            &PORT.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| -> anyhow::Result<()> {
        let wrk = |url: &str| -> anyhow::Result<Sample> {
            let out = Command::new("ip")
                .args(["netns", "exec", &client.netns, "taskset", "-c", "1", "wrk", "-t1"])
                .arg(format!("-c{CONNECTIONS}"))
                .arg(format!("-d{SECONDS}s"))
                .args(["--latency", url])
                .output()
                .context("running wrk (scripts/setup.sh installs it)")?;
            parse_wrk(&String::from_utf8_lossy(&out.stdout))
        };
        let set = |mode: &str| -> anyhow::Result<()> {
            let _ = bench.client().call_value(&Request::PolicyDelete {
                name: Some(POLICY.into()),
                namespace: Some("default".into()),
                kind: None,
                all: false,
                labels: vec![],
            });
            if mode != "direct" {
                let _: PolicyImported = bench.client().call(&Request::PolicyImport {
                    files: vec![PolicyFile { name: "l7.yaml".into(), content: policy(mode) }],
                })?;
            }
            // Until the server answers through the new state (the proxy
            // listening, for L7).
            let url = if mode == "relay" { &relay_url } else { &url };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let ok = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &client.netns,
                        "curl",
                        "-sf",
                        "--max-time",
                        "1",
                        "-o",
                        "/dev/null",
                        url,
                    ])
                    .status()?
                    .success();
                if ok {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("{mode}: {url} does not answer");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let modes = ["direct", "l3l4", "relay", "l7"];
        let mut samples: Vec<Vec<Sample>> = modes.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            for (i, mode) in modes.iter().enumerate() {
                set(mode)?;
                samples[i].push(wrk(if *mode == "relay" { &relay_url } else { &url })?);
            }
        }
        let summary = |s: &[Sample]| {
            let rps = median(s.iter().map(|x| x.rps).collect());
            let p50 = median(s.iter().map(|x| x.p50_ms).collect());
            let p99 = median(s.iter().map(|x| x.p99_ms).collect());
            (rps, p99, format!("{rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms"))
        };
        let (direct_rps, _, direct) = summary(&samples[0]);
        let (l3l4_rps, l3l4_p99, l3l4) = summary(&samples[1]);
        let (relay_rps, relay_p99, relay_text) = summary(&samples[2]);
        let (l7_rps, l7_p99, l7) = summary(&samples[3]);
        rows.push(Row::new(
            format!("HTTP keep-alive, wrk {CONNECTIONS} conns: L3/L4 policy vs no policy"),
            l3l4.clone(),
            direct.clone(),
            format!("{:.2}", l3l4_rps / direct_rps),
        ));
        rows.push(Row::new(
            format!("HTTP keep-alive, wrk {CONNECTIONS} conns: L7 (proxy, GET /public) vs no policy"),
            l7,
            direct,
            format!("{:.2}", l7_rps / direct_rps),
        ));
        rows.push(Row::new(
            format!("HTTP keep-alive, wrk {CONNECTIONS} conns: L7 vs L3/L4 (goal >= 0.8, p99 +0.2 ms)"),
            format!("p99 {:+.2} ms", l7_p99 - l3l4_p99),
            l3l4.clone(),
            format!("{:.2}", l7_rps / l3l4_rps),
        ));
        rows.push(Row::new(
            format!("HTTP keep-alive, wrk {CONNECTIONS} conns: socat TCP relay on the node (L3/L4) vs L3/L4"),
            format!("{relay_text}, p99 {:+.2} ms", relay_p99 - l3l4_p99),
            l3l4,
            format!("{:.2}", relay_rps / l3l4_rps),
        ));
        rows.push(Row::new(
            format!("HTTP keep-alive, wrk {CONNECTIONS} conns: L7 vs the socat relay (user-space ceiling)"),
            format!("p99 {:+.2} ms", l7_p99 - relay_p99),
            relay_text,
            format!("{:.2}", l7_rps / relay_rps),
        ));

        // Memory per connection, with the L7 policy in force.
        set("l7")?;
        let pid = proxy_pid(bench).context("no twill-proxy process for the bench agent")?;
        let before = crate::rss_kib(pid);
        let mut idle = Command::new("ip")
            .args(["netns", "exec", &client.netns, "python3", "-c", IDLE_CLIENT])
            .args([&IDLE_CONNECTIONS.to_string(), &server.ipv4.to_string(), &PORT.to_string(), "/public"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(idle.stdout.as_mut().expect("piped stdout")),
            &mut line,
        )?;
        let after = crate::rss_kib(pid);
        drop(idle.stdin.take());
        let _ = idle.wait();
        if line.trim() != "ready" {
            bail!("the idle client did not open {IDLE_CONNECTIONS} connections through the proxy");
        }
        rows.push(Row::new(
            format!(
                "twill-proxy RSS per open keep-alive connection ({IDLE_CONNECTIONS} idle, one request each)"
            ),
            format!(
                "{:.1} KiB ({:.1} -> {:.1} MiB)",
                after.saturating_sub(before) as f64 / IDLE_CONNECTIONS as f64,
                before as f64 / 1024.0,
                after as f64 / 1024.0
            ),
            "",
            "",
        ));
        Ok(())
    })();
    let _ = srv.kill();
    let _ = srv.wait();
    let _ = relay.kill();
    let _ = relay.wait();
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_output_is_read() {
        let out = "Running 4s test\n  Latency Distribution\n     50%  412.00us\n     75%    1.10ms\n     90%    2.00ms\n     99%    3.21ms\n  8000 requests in 4.00s\nRequests/sec:   2000.50\nTransfer/sec:  100KB\n";
        let s = super::parse_wrk(out).unwrap();
        assert_eq!((s.rps, s.p50_ms, s.p99_ms), (2000.5, 0.412, 3.21));
    }
}
