//! twill-bench: endpoint creation latency, agent memory, policy
//! resolution, and same-host TCP stream, request/response and connection
//! rates with and without a 10,000-entry policy, each with its reference
//! (published figure, bare veth pair, iptables rule set) measured in the
//! same run. Everything runs in namespaces the benchmark creates and
//! removes; traffic never leaves them.
//!
//! `twill-bench [--only SECTION[,SECTION]]`, sections: resolver, endpoints,
//! cni, datapath, egress, services, flows, l7, ui, relay, dns (`policy` = resolver,datapath). The default
//! runs them all.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use twill_api::{Client, Endpoint, Request};

mod bpfstats;
mod cluster;
mod cni;
mod cross_node;
mod datapath;
mod dns;
mod egress;
mod floor;
mod l7;
mod observer;
mod pingpong;
mod relay;
mod resolver;
mod services;
mod ui;

pub const NODE_NETNS: &str = "twbench-node";
pub const BPF_ROOT: &str = "/sys/fs/bpf/twill-bench";
const ENDPOINTS: usize = 100;
/// Namespaces the benchmark itself creates (Twill's endpoints are
/// `twill_bench_*`).
const OWN_NETNS_PREFIX: &str = "twbench-";

pub struct Row {
    metric: String,
    twill: String,
    reference: String,
    ratio: String,
}

impl Row {
    pub fn new(
        metric: impl Into<String>,
        twill: impl Into<String>,
        reference: impl Into<String>,
        ratio: impl Into<String>,
    ) -> Self {
        Self { metric: metric.into(), twill: twill.into(), reference: reference.into(), ratio: ratio.into() }
    }
}

/// A veth pair: `device` in namespace `ns`, its peer `eth0` in `peer_ns`,
/// made from inside `ns` so the machine's own namespace never holds
/// either end.
pub fn veth_into(ns: &str, device: &str, peer_ns: &str) -> anyhow::Result<String> {
    sh(&["ip", "-n", ns, "link", "add", device, "type", "veth", "peer", "name", "eth0", "netns", peer_ns])
}

pub fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Milliseconds with three significant decimals below 1 ms.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// 12345 -> "12,345".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Where a process's resident memory is, from /proc/PID/smaps, in KiB:
/// the heap and other anonymous memory; mapped files (the binary, libc);
/// and mmapped BPF maps (the event ring buffer: the kernel maps its data
/// pages twice, so RSS shows twice the ring's size).
#[derive(Clone, Copy, Default)]
pub struct RssBreakdown {
    pub anon: u64,
    pub files: u64,
    pub bpf_maps: u64,
}

impl RssBreakdown {
    pub fn of(pid: u32) -> Self {
        let mut out = Self::default();
        let mut current: Option<&str> = None;
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        for line in smaps.lines() {
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            if !first.ends_with(':') {
                // A mapping header: ADDR-ADDR PERMS OFFSET DEV INODE [PATH].
                let path = words.nth(4).unwrap_or("");
                current = Some(if path.contains("bpf-map") {
                    "bpf"
                } else if path.starts_with('/') {
                    "files"
                } else {
                    "anon"
                });
            } else if let (Some(kib), Some(kind)) = (line.strip_prefix("Rss:"), current) {
                let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                match kind {
                    "bpf" => out.bpf_maps += kib,
                    "files" => out.files += kib,
                    _ => out.anon += kib,
                }
            }
        }
        out
    }

    pub fn describe(&self) -> String {
        format!(
            "anon {:.1} + files {:.1} + BPF map mmaps {:.1} MiB",
            self.anon as f64 / 1024.0,
            self.files as f64 / 1024.0,
            self.bpf_maps as f64 / 1024.0
        )
    }
}

pub struct Bench {
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
        // Extra agent flags for a comparison run (e.g. `--proxy-threads 2`),
        // space-separated.
        let flags = std::env::var("TWILL_BENCH_AGENT_FLAGS").unwrap_or_default();
        let flags: Vec<&str> = flags.split_whitespace().collect();
        let agent = Self::spawn_agent(&dir, &flags)?;
        let client = Arc::new(Client::new(&socket));
        let bench = Self { dir, agent: Some(agent), client };
        bench.wait_ready()?;
        Ok(bench)
    }

    /// Stops the agent (SIGTERM: the datapath keeps running) and starts it
    /// again with `extra` flags, as an operator would to change them.
    pub fn restart_agent(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        if let Some(mut agent) = self.agent.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
            agent.wait()?;
        }
        self.agent = Some(Self::spawn_agent(&self.dir, extra)?);
        self.wait_ready()
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.client.call_value(&Request::Status).is_err() {
            if Instant::now() > deadline {
                bail!("agent did not start; see {}", self.dir.join("agent.log").display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn spawn_agent(dir: &Path, extra: &[&str]) -> anyhow::Result<Child> {
        let socket = dir.join("twill.sock");
        let bin = std::env::current_exe()?.parent().unwrap().join("twill-agent");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log"))?;
        let agent = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{NODE_NETNS}"))
            .arg(bin)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--api-socket")
            .arg(&socket)
            .args(["--bpf-root", BPF_ROOT, "--pod-cidr", "10.210.0.0/24", "--node-name", "bench"])
            // Its own observer socket, not the host agent's; the agent's
            // TCP listeners are on loopback inside NODE_NETNS.
            .arg("--hubble-socket")
            .arg(dir.join("hubble.sock"))
            .args(extra)
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()?;
        Ok(agent)
    }

    /// The agent's run directory (its API socket's), where twill-proxy's
    /// control socket is.
    pub fn run_dir(&self) -> &Path {
        &self.dir
    }

    /// The node's address on the pod network (the first of --pod-cidr).
    pub fn router_ip(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 210, 0, 1)
    }

    pub fn agent_pid(&self) -> u32 {
        self.agent.as_ref().unwrap().id()
    }

    /// Removes what an interrupted run may have left: the benchmark's own
    /// namespaces (bare veth pairs, iptables pairs, the node) and Twill's
    /// endpoint namespaces for node "bench", and the bpffs pins.
    fn cleanup_leftovers() {
        for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(OWN_NETNS_PREFIX) || name.starts_with("twill_bench_") {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
        let _ = std::fs::remove_dir_all(BPF_ROOT);
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("twill.sock")
    }

    pub fn create(&self, name: &str, labels: &str) -> anyhow::Result<Endpoint> {
        Ok(self.client.call(&Request::EndpointCreate {
            name: name.into(),
            namespace: "default".into(),
            labels: vec![labels.into()],
            ports: vec![],
        })?)
    }

    pub fn delete(&self, name: &str) -> anyhow::Result<()> {
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

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Endpoint create/delete latency and agent memory.
fn endpoints(bench: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_kib(bench.agent_pid());
    let idle_breakdown = RssBreakdown::of(bench.agent_pid());

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
        reference: idle_breakdown.describe(),
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
    rows.push(Row::new(
        "agent RSS per endpoint",
        format!("{:.3} MiB", (loaded_rss as f64 - idle_rss as f64) / 1024.0 / ENDPOINTS as f64),
        format!("({ENDPOINTS} sequential creates over idle)"),
        "",
    ));
    memory_by_policy_size(bench, rows)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Agent RSS with the datapath section's endpoints (PEERS peers, a client
/// and a server) under policies of growing size: none, about 1,000 and
/// about 10,000 entries in the server's map, the same shape as the
/// datapath policy, imported one after the other under one name (each
/// import replaces the last). No traffic: the flow ring stays empty.
fn memory_by_policy_size(bench: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    const NAME: &str = "bench-mem";
    let endpoints = datapath::PEERS + 2;
    datapath::create_policy_endpoints(bench)?;
    let none = rss_kib(bench.agent_pid());
    rows.push(Row::new(
        format!("agent RSS, {endpoints} endpoints, no policy"),
        mib(none),
        RssBreakdown::of(bench.agent_pid()).describe(),
        "",
    ));
    // (peers, cidrs): 3 + 40 x peers + 8 x cidrs entries.
    let mut sized = Vec::new();
    for (peers, cidrs) in [(5, 100), (datapath::PEERS, 1_000)] {
        let content = datapath::policy_yaml_sized(NAME, peers, cidrs);
        let _: twill_api::PolicyImported = bench.client().call(&Request::PolicyImport {
            files: vec![twill_api::PolicyFile { name: format!("{NAME}.yaml"), content }],
        })?;
        let rss = rss_kib(bench.agent_pid());
        let breakdown = RssBreakdown::of(bench.agent_pid());
        // Counted after the RSS reading: listing the map allocates too.
        let map: twill_api::BpfPolicy = bench
            .client()
            .call(&Request::BpfPolicyGet { name: "tp-server".into(), namespace: "default".into() })?;
        let entries = map.entries.len();
        rows.push(Row::new(
            format!("agent RSS, {endpoints} endpoints, {} policy entries", thousands(entries as u64)),
            mib(rss),
            breakdown.describe(),
            "",
        ));
        sized.push((entries, rss));
    }
    let (entries, rss) = *sized.last().unwrap();
    rows.push(Row::new(
        "agent RSS per 1,000 policy entries",
        format!("{:.2} MiB", (rss as f64 - none as f64) / 1024.0 / (entries as f64 / 1000.0)),
        format!("({} entries over no policy, {endpoints} endpoints)", thousands(entries as u64)),
        "",
    ));
    bench.client().call_value(&Request::PolicyDelete {
        name: Some(NAME.into()),
        namespace: Some("default".into()),
        kind: None,
        all: false,
        labels: vec![],
    })?;
    rows.push(Row::new(
        format!("agent RSS, {endpoints} endpoints, policy deleted"),
        mib(rss_kib(bench.agent_pid())),
        "",
        "",
    ));
    datapath::delete_policy_endpoints(bench)
}

const SECTIONS: &[&str] = &[
    "resolver",
    "observer",
    "endpoints",
    "cni",
    "datapath",
    "egress",
    "services",
    "flows",
    "debug",
    "l7",
    "cross-node",
    "cluster",
    "ui",
    "relay",
    "dns",
];

fn usage() -> String {
    format!(
        "usage: twill-bench [--only SECTION[,SECTION...]]\n\
         sections: {} (\"policy\" = resolver,datapath); default: all\n\
         Prints one table; every reference is measured in the same run or published.",
        SECTIONS.join(", ")
    )
}

fn sections(args: &[String]) -> anyhow::Result<Vec<&'static str>> {
    let mut chosen: Vec<&'static str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let list = match a.as_str() {
            "--only" => it.next().with_context(usage)?.clone(),
            s if s.starts_with("--only=") => s["--only=".len()..].to_string(),
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{}", usage()),
        };
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let names: &[&'static str] = match name {
                "policy" => &["resolver", "datapath"],
                n => match SECTIONS.iter().find(|s| **s == n) {
                    Some(s) => std::slice::from_ref(s),
                    None => bail!("unknown section {n:?}\n{}", usage()),
                },
            };
            chosen.extend(names.iter().copied());
        }
    }
    if chosen.is_empty() {
        return Ok(SECTIONS.to_vec());
    }
    // Always in the default order.
    Ok(SECTIONS.iter().copied().filter(|s| chosen.contains(s)).collect())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Hidden helpers the benchmark runs inside namespaces.
    match args.first().map(String::as_str) {
        Some("__tcp-server") => return pingpong::server(&args[1..]),
        Some("__tcp-client") => return pingpong::client(&args[1..]),
        Some("__tcp-probe") => return pingpong::probe(&args[1..]),
        Some("__dns-paced") => return dns::paced_main(&args[1..]),
        _ => {}
    }
    let sections = sections(&args)?;
    if Path::new("/proc/self").exists() && unsafe_geteuid() != 0 {
        bail!("twill-bench must run as root");
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    if sections.contains(&"resolver") {
        eprintln!("twill-bench: policy resolution, in-process");
        resolver::run(&mut rows)?;
    }
    if sections.contains(&"ui") {
        eprintln!("twill-bench: twill ui in headless Chromium, flows from an in-process Observer server");
        ui::run(&mut rows)?;
    }
    if sections.contains(&"observer") {
        eprintln!("twill-bench: observer ingest, filter and memory, in-process");
        let r = observer::run();
        rows.push(Row {
            metric: "observer ingest (decode + store), 1 core".into(),
            twill: format!("{} flows/s", thousands(r.ingest_per_second as u64)),
            reference: String::new(),
            ratio: String::new(),
        });
        rows.push(Row {
            metric: "observer filter (label + verdict) over the ring, 1 core".into(),
            twill: format!("{} flows/s", thousands(r.filter_per_second as u64)),
            reference: String::new(),
            ratio: String::new(),
        });
        rows.push(Row {
            metric: "memory per stored flow (RSS, 100,000 flows)".into(),
            twill: format!("{:.0} bytes", r.bytes_per_flow),
            reference: String::new(),
            ratio: String::new(),
        });
    }
    if sections.iter().any(|s| {
        ["endpoints", "cni", "datapath", "egress", "services", "flows", "debug", "l7", "dns"].contains(s)
    }) {
        #[allow(unused_mut)]
        let mut bench = Bench::start()?;
        if sections.contains(&"endpoints") {
            eprintln!("twill-bench: endpoint create/delete and agent memory");
            endpoints(&bench, &mut rows)?;
        }
        if sections.contains(&"cni") {
            eprintln!("twill-bench: CNI ADD/DEL latency, twill-cni against bridge + host-local");
            let dir = bench.dir.clone();
            cni::run(&mut bench, &dir, &mut rows)?;
        }
        if sections.contains(&"datapath") {
            eprintln!("twill-bench: same-host datapath: bare veth, iptables, Twill without and with policy");
            datapath::run(&bench, &mut rows)?;
        }
        if sections.contains(&"egress") {
            eprintln!("twill-bench: endpoint to outside the node: bare veth, routed namespace, Twill both host routings");
            egress::run(&mut bench, &mut rows)?;
        }
        if sections.contains(&"services") {
            eprintln!(
                "twill-bench: services: socket LB against kube-proxy's iptables rules, 10 to 30,000 services"
            );
            services::run(&bench, &mut rows)?;
        }
        if sections.contains(&"flows") {
            eprintln!(
                "twill-bench: flows: default aggregation, syn,fin,rst and off, each next to a bare veth pair"
            );
            datapath::flows_overhead(&mut bench, &mut rows)?;
        }
        if sections.contains(&"debug") {
            eprintln!("twill-bench: datapath debug messages on against off, one agent, switched at runtime");
            datapath::debug_overhead(&bench, &mut rows)?;
        }
        if sections.contains(&"dns") {
            eprintln!("twill-bench: DNS lookups between endpoints, through the agent's DNS proxy and direct");
            dns::through_agent(&bench, &mut rows)?;
        }
        if sections.contains(&"l7") {
            eprintln!("twill-bench: HTTP through the L7 proxy, L3/L4 policy only, and no policy (wrk)");
            l7::run(&bench, &mut rows)?;
        }
    }
    if sections.contains(&"cross-node") {
        eprintln!("twill-bench: cross-node: bare underlay, Twill tunnel and native routing on 2 nodes");
        cross_node::run(&mut rows)?;
    }
    if sections.contains(&"cluster") {
        cluster::run(&mut rows)?;
    }
    if sections.contains(&"dns") {
        eprintln!(
            "twill-bench: DNS proxy latency at 1,000 queries/s against dnsmasq, direct and through the proxy"
        );
        dns::run(&mut rows)?;
    }
    if sections.contains(&"relay") {
        eprintln!("twill-bench: relay throughput, follow latency and memory over in-process fake nodes");
        relay::run(&mut rows)?;
    }
    print_table(&rows);
    println!(
        "(values are medians; ±: half the range over the rounds; ratio: Twill / reference; sections: {}; \
         {:.0} s)",
        sections.join(", "),
        started.elapsed().as_secs_f64()
    );
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
