//! twill-bench: endpoint creation latency, agent memory and same-host TCP
//! throughput, with their references (a bare veth pair between two
//! namespaces) measured in the same run. Everything runs in namespaces the
//! benchmark creates and removes; traffic never leaves them.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use twill_api::{Client, Endpoint, Request};

const NODE_NETNS: &str = "twbench-node";
const BARE_A: &str = "twbench-bare-a";
const BARE_B: &str = "twbench-bare-b";
const BPF_ROOT: &str = "/sys/fs/bpf/twill-bench";
const ENDPOINTS: usize = 100;
const IPERF_SECONDS: &str = "4";
const IPERF_ROUNDS: usize = 3;

struct Row {
    metric: String,
    twill: String,
    reference: String,
    ratio: String,
}

fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Bench {
    dir: PathBuf,
    agent: Option<Child>,
    client: Arc<Client>,
}

impl Bench {
    fn start() -> anyhow::Result<Self> {
        Self::cleanup_leftovers();
        let dir = std::env::temp_dir().join("twill-bench");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        sh(&["ip", "netns", "add", NODE_NETNS])?;
        sh(&["ip", "-n", NODE_NETNS, "link", "set", "lo", "up"])?;
        let socket = dir.join("twill.sock");
        let bin = std::env::current_exe()?.parent().unwrap().join("twill-agent");
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let agent = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{NODE_NETNS}"))
            .arg(bin)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--api-socket")
            .arg(&socket)
            .args(["--bpf-root", BPF_ROOT, "--pod-cidr", "10.210.0.0/24", "--node-name", "bench"])
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()?;
        let client = Arc::new(Client::new(&socket));
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.call_value(&Request::Status).is_err() {
            if Instant::now() > deadline {
                bail!("agent did not start; see {}", dir.join("agent.log").display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { dir, agent: Some(agent), client })
    }

    fn agent_pid(&self) -> u32 {
        self.agent.as_ref().unwrap().id()
    }

    fn cleanup_leftovers() {
        for ns in [NODE_NETNS, BARE_A, BARE_B] {
            if Path::new("/run/netns").join(ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
        for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("twill_bench_") {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
        let _ = std::fs::remove_dir_all(BPF_ROOT);
    }

    fn create(&self, name: &str, labels: &str) -> anyhow::Result<Endpoint> {
        Ok(self.client.call(&Request::EndpointCreate {
            name: name.into(),
            namespace: "default".into(),
            labels: vec![labels.into()],
            ports: vec![],
        })?)
    }

    fn delete(&self, name: &str) -> anyhow::Result<()> {
        self.client
            .call_value(&Request::EndpointDelete { name: name.into(), namespace: "default".into() })?;
        Ok(())
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.client.call_value(&Request::Uninstall);
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        Self::cleanup_leftovers();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// iperf3 TCP throughput in Gbit/s from `client_ns` to `server_ip` served in `server_ns`.
fn iperf(server_ns: &str, client_ns: &str, server_ip: &str) -> anyhow::Result<f64> {
    let mut server = Command::new("ip")
        .args(["netns", "exec", server_ns, "iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut result = None;
    while Instant::now() < deadline {
        let out = Command::new("ip")
            .args(["netns", "exec", client_ns, "iperf3", "-c", server_ip, "-t", IPERF_SECONDS, "-J"])
            .output()?;
        if out.status.success() {
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            result = report["end"]["sum_received"]["bits_per_second"].as_f64();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    result.map(|bps| bps / 1e9).context("iperf3 did not complete")
}

fn bare_veth() -> anyhow::Result<()> {
    sh(&["ip", "netns", "add", BARE_A])?;
    sh(&["ip", "netns", "add", BARE_B])?;
    sh(&[
        "ip", "-n", BARE_A, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", BARE_B,
    ])?;
    for (ns, ip) in [(BARE_A, "10.251.0.1/24"), (BARE_B, "10.251.0.2/24")] {
        sh(&["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"])?;
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    if Path::new("/proc/self").exists() && unsafe_geteuid() != 0 {
        bail!("twill-bench must run as root");
    }
    let bench = Bench::start()?;
    let mut rows = Vec::new();
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_kib(bench.agent_pid());

    // Sequential creates.
    let mut latencies = Vec::with_capacity(ENDPOINTS);
    for i in 0..ENDPOINTS {
        let start = Instant::now();
        bench.create(&format!("seq{i}"), &format!("app=a{}", i % 10))?;
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let loaded_rss = rss_kib(bench.agent_pid());
    rows.push(Row {
        metric: format!("endpoint create, {ENDPOINTS} sequential, p50"),
        twill: ms(percentile(&latencies, 0.5)),
        reference: "Cilium ~5 ms (templated datapath only)".into(),
        ratio: format!("{:.2}", percentile(&latencies, 0.5).as_secs_f64() / 0.005),
    });
    rows.push(Row {
        metric: format!("endpoint create, {ENDPOINTS} sequential, p99"),
        twill: ms(percentile(&latencies, 0.99)),
        reference: String::new(),
        ratio: String::new(),
    });
    rows.push(Row {
        metric: "agent RSS idle".into(),
        twill: format!("{:.1} MiB", idle_rss as f64 / 1024.0),
        reference: String::new(),
        ratio: String::new(),
    });
    rows.push(Row {
        metric: format!("agent RSS with {ENDPOINTS} endpoints"),
        twill: format!("{:.1} MiB", loaded_rss as f64 / 1024.0),
        reference: String::new(),
        ratio: String::new(),
    });

    let start = Instant::now();
    for i in 0..ENDPOINTS {
        bench.delete(&format!("seq{i}"))?;
    }
    rows.push(Row {
        metric: format!("endpoint delete, mean of {ENDPOINTS}"),
        twill: ms(start.elapsed() / ENDPOINTS as u32),
        reference: String::new(),
        ratio: String::new(),
    });

    // 100 creates at once, as a busy node's runtime would issue them.
    let wall = Instant::now();
    let handles: Vec<_> = (0..ENDPOINTS)
        .map(|i| {
            let client = bench.client.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                client
                    .call_value(&Request::EndpointCreate {
                        name: format!("par{i}"),
                        namespace: "default".into(),
                        labels: vec![format!("app=p{}", i % 10)],
                        ports: vec![],
                    })
                    .map(|_| start.elapsed())
            })
        })
        .collect();
    let mut parallel = Vec::new();
    for h in handles {
        parallel.push(h.join().unwrap()?);
    }
    let wall = wall.elapsed();
    parallel.sort();
    rows.push(Row {
        metric: format!("endpoint create, {ENDPOINTS} parallel, p50 / p99"),
        twill: format!("{} / {}", ms(percentile(&parallel, 0.5)), ms(percentile(&parallel, 0.99))),
        reference: "Cilium pod setup 0.3-7.8 s".into(),
        ratio: String::new(),
    });
    rows.push(Row {
        metric: format!("endpoint create, {ENDPOINTS} parallel, all done"),
        twill: ms(wall),
        reference: String::new(),
        ratio: String::new(),
    });
    for i in 0..ENDPOINTS {
        bench.delete(&format!("par{i}"))?;
    }

    // Same-host TCP throughput: Twill endpoints vs a bare veth pair.
    let _a = bench.create("iperf-client", "app=client")?;
    let b = bench.create("iperf-server", "app=server")?;
    let client_ns = "twill_bench_default_iperf-client";
    let server_ns = "twill_bench_default_iperf-server";
    bare_veth()?;
    let (mut twill_runs, mut bare_runs) = (Vec::new(), Vec::new());
    for _ in 0..IPERF_ROUNDS {
        twill_runs.push(iperf(server_ns, client_ns, &b.ipv4)?);
        bare_runs.push(iperf(BARE_B, BARE_A, "10.251.0.2")?);
    }
    let (twill_gbps, bare_gbps) = (median(twill_runs), median(bare_runs));
    rows.push(Row {
        metric: format!("TCP throughput, iperf3 {IPERF_SECONDS}s x{IPERF_ROUNDS}, median"),
        twill: format!("{twill_gbps:.2} Gbit/s"),
        reference: format!("bare veth {bare_gbps:.2} Gbit/s"),
        ratio: format!("{:.3}", twill_gbps / bare_gbps),
    });

    print_table(&rows);
    Ok(())
}

fn unsafe_geteuid() -> u32 {
    // Reading the effective uid from /proc avoids a libc dependency here.
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").and_then(|v| v.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(u32::MAX)
}

fn print_table(rows: &[Row]) {
    let headers = ["metric", "twill", "reference (same run or published)", "ratio"];
    let cells = |r: &Row| [r.metric.clone(), r.twill.clone(), r.reference.clone(), r.ratio.clone()];
    let mut widths = headers.map(str::len);
    for r in rows {
        for (i, c) in cells(r).iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |c: [String; 4]| {
        println!(
            "| {:<w0$} | {:>w1$} | {:<w2$} | {:>w3$} |",
            c[0],
            c[1],
            c[2],
            c[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    };
    line(headers.map(String::from));
    println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
    for r in rows {
        line(cells(r));
    }
}
