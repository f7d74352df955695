//! Same-host datapath: TCP stream (iperf3), request/response rate and
//! connection rate between two namespaces, five ways, in interleaved
//! rounds of one run:
//!
//! * bare veth: a veth pair between two namespaces, nothing else;
//! * iptables: the same, with the policy below as an iptables-based CNI
//!   (Calico, kube-router style) writes it when it does not use ipsets:
//!   conntrack first, then a per-pod chain of one
//!   `-s CIDR -p tcp --dport N -j ACCEPT` line per (peer, port), the rule
//!   that admits the client last, then DROP; loaded with iptables-restore
//!   into the server's namespace (whichever backend `iptables` is here);
//! * Twill without policy: two Twill endpoints;
//! * Twill with policy: the same endpoints, with a CiliumNetworkPolicy
//!   that puts about 10,000 entries in the server's policy map (the
//!   client on the test ports, 50 other endpoint identities on 40 ports,
//!   1,000 CIDRs on 8 ports including a range);
//! * floor: the same endpoints with a program that only delivers
//!   (bench/bpf/floor.c) ahead of Twill's, so Twill's program never runs:
//!   what the hook and bpf_redirect_peer cost by themselves.
//!
//! Every measurement uses a fresh server port, so no connection ever
//! finds conntrack state from an earlier one. The request/response client
//! and server run pinned to the same CPU: the rates then measure the CPU
//! cost of a transaction through each datapath, not the cross-CPU wakeup
//! latency of the machine (on a VM, that latency is most of an unpinned
//! TCP_RR and varies from run to run with where the scheduler puts the two
//! processes). iperf3 runs unpinned.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use twill_api::{BpfPolicy, Endpoint, PolicyFile, PolicyImported, Request};

use crate::{median, rss_kib, sh, thousands, veth_into, Bench, Row, RssBreakdown, OWN_NETNS_PREFIX};

const ROUNDS: usize = 5;
const IPERF_SECONDS: u64 = 4;
const RR_SECONDS: f64 = 3.0;
const RR_MAX: u64 = 3_000_000;
const CRR_SECONDS: f64 = 3.0;
/// The per-program cost pass after each Twill measurement.
const COST_SECONDS: u64 = 1;
/// Below the 32,256 even ephemeral ports connect() takes first: no
/// 4-tuple is reused within a run (see pingpong.rs).
const CRR_MAX: u64 = 30_000;
/// Ports the policy and the iptables rules allow from the client.
pub(crate) const FIRST_PORT: u16 = 40_000;
pub(crate) const LAST_PORT: u16 = 40_127;
/// A port both deny; a server listens there to prove it.
pub(crate) const DENIED_PORT: u16 = 39_999;
/// Server processes exit by themselves after this long.
const SERVER_MAX_SECONDS: u64 = 60;

pub(crate) const PEERS: usize = 50;
const PEERS_PER_RULE: usize = 10;
const PEER_PORTS: usize = 40;
const CIDRS: usize = 1_000;
const CIDRS_PER_RULE: usize = 10;
/// Ports allowed from each CIDR; (lo, hi) with lo == hi for one port.
const CIDR_PORTS: [(u16, u16); 8] = [
    (80, 80),
    (443, 443),
    (8080, 8080),
    (8443, 8443),
    (9090, 9090),
    (5432, 5432),
    (6379, 6379),
    (8000, 8015),
];
const POLICY_NAME: &str = "bench-10k";

const BARE_A: &str = "twbench-bare-a";
const BARE_B: &str = "twbench-bare-b";
const IPT_A: &str = "twbench-ipt-a";
const IPT_B: &str = "twbench-ipt-b";
const IPT_CHAIN: &str = "twbench-pod-ingress";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Config {
    Bare,
    Iptables,
    TwillNoPolicy,
    TwillPolicy,
    /// Twill's endpoints with only a delivering program (crate::floor).
    Floor,
}

const CONFIGS: [Config; 5] =
    [Config::Bare, Config::Iptables, Config::TwillNoPolicy, Config::TwillPolicy, Config::Floor];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Workload {
    Stream,
    Rr,
    Crr,
}

pub(crate) const WORKLOADS: [Workload; 3] = [Workload::Stream, Workload::Rr, Workload::Crr];

impl Workload {
    /// The row name, and how its values print.
    pub(crate) fn label(self) -> (&'static str, fn(f64) -> String) {
        match self {
            Workload::Stream => ("TCP stream (iperf3)", gbps),
            Workload::Rr => ("TCP_RR 64B", rate),
            Workload::Crr => ("TCP_CRR 64B", rate),
        }
    }
}

/// One measurement of `workload` over `pair`: Gbit/s, transactions or
/// connections per second.
pub(crate) fn measure(pair: &Pair, workload: Workload, port: u16) -> anyhow::Result<f64> {
    Ok(match workload {
        Workload::Stream => stream(pair, port)?,
        Workload::Rr => pingpong(pair, port, "rr")?.0,
        Workload::Crr => pingpong(pair, port, "crr")?.0,
    })
}

/// Deletes namespaces the benchmark created, however it ends.
pub(crate) struct Netns(pub(crate) Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Kills a server process, however the benchmark ends.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) struct Pair {
    pub(crate) client_ns: String,
    pub(crate) server_ns: String,
    pub(crate) server_ip: String,
}

/// Two namespaces joined by a veth pair, client .1 and server .2 of `net`.
pub(crate) fn veth_pair(client_ns: &str, server_ns: &str, net: &str) -> anyhow::Result<(Netns, Pair)> {
    assert!(client_ns.starts_with(OWN_NETNS_PREFIX) && server_ns.starts_with(OWN_NETNS_PREFIX));
    let mut guard = Netns(Vec::new());
    for ns in [client_ns, server_ns] {
        sh(&["ip", "netns", "add", ns])?;
        guard.0.push(ns.to_string());
    }
    veth_into(client_ns, "eth0", server_ns)?;
    for (ns, host) in [(client_ns, 1), (server_ns, 2)] {
        sh(&["ip", "-n", ns, "addr", "add", &format!("{net}.{host}/24"), "dev", "eth0"])?;
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    let pair =
        Pair { client_ns: client_ns.into(), server_ns: server_ns.into(), server_ip: format!("{net}.2") };
    Ok((guard, pair))
}

fn cidr(i: usize) -> String {
    format!("172.{}.{}.0/24", 16 + i / 256, i % 256)
}

fn peer_port(j: usize) -> u16 {
    2_000 + 7 * j as u16
}

/// The CiliumNetworkPolicy for the server endpoint.
fn policy_yaml() -> String {
    policy_yaml_sized(POLICY_NAME, PEERS, CIDRS)
}

/// The same shape at another size: the client's port range (3 entries),
/// `peers` endpoint identities on PEER_PORTS ports and `cidrs` CIDRs on
/// CIDR_PORTS, so 3 + 40 x peers + 8 x cidrs entries in the server's map.
pub(crate) fn policy_yaml_sized(name: &str, peers: usize, cidrs: usize) -> String {
    let mut y = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: {name}\n  namespace: \
         default\nspec:\n  endpointSelector:\n    matchLabels:\n      app: bench-server\n  ingress:\n  - \
         fromEndpoints:\n    - matchLabels:\n        app: bench-client\n    toPorts:\n    - ports:\n      - \
         port: \"{FIRST_PORT}\"\n        endPort: {LAST_PORT}\n        protocol: TCP\n"
    );
    for group in (0..peers).step_by(PEERS_PER_RULE) {
        let names: Vec<String> =
            (group..peers.min(group + PEERS_PER_RULE)).map(|i| format!("peer-{i}")).collect();
        let _ = write!(
            y,
            "  - fromEndpoints:\n    - matchExpressions:\n      - key: app\n        operator: In\n        \
             values: [{}]\n    toPorts:\n    - ports:\n",
            names.join(", ")
        );
        for j in 0..PEER_PORTS {
            let _ = writeln!(y, "      - port: \"{}\"\n        protocol: TCP", peer_port(j));
        }
    }
    for group in (0..cidrs).step_by(CIDRS_PER_RULE) {
        y.push_str("  - fromCIDR:\n");
        for i in group..cidrs.min(group + CIDRS_PER_RULE) {
            let _ = writeln!(y, "    - {}", cidr(i));
        }
        y.push_str("    toPorts:\n    - ports:\n");
        for (lo, hi) in CIDR_PORTS {
            let _ = writeln!(y, "      - port: \"{lo}\"\n        protocol: TCP");
            if hi != lo {
                let _ = writeln!(y, "        endPort: {hi}");
            }
        }
    }
    y
}

/// The same policy as iptables-restore input for the server namespace.
/// Peer endpoints are /32 addresses, as a CNI without ipsets writes them.
fn iptables_rules(client_ip: &str) -> String {
    let mut r = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:{IPT_CHAIN} - [0:0]\n\
         -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -i eth0 -j {IPT_CHAIN}\n"
    );
    let dport = |lo: u16, hi: u16| if lo == hi { lo.to_string() } else { format!("{lo}:{hi}") };
    for i in 0..CIDRS {
        for (lo, hi) in CIDR_PORTS {
            let _ = writeln!(
                r,
                "-A {IPT_CHAIN} -s {} -p tcp -m tcp --dport {} -j ACCEPT",
                cidr(i),
                dport(lo, hi)
            );
        }
    }
    for p in 0..PEERS {
        for j in 0..PEER_PORTS {
            let _ = writeln!(
                r,
                "-A {IPT_CHAIN} -s 10.254.{}.{}/32 -p tcp -m tcp --dport {} -j ACCEPT",
                p / 200,
                1 + p % 200,
                peer_port(j)
            );
        }
    }
    let _ = writeln!(
        r,
        "-A {IPT_CHAIN} -s {client_ip}/32 -p tcp -m tcp --dport {} -j ACCEPT\n-A {IPT_CHAIN} -j DROP\nCOMMIT",
        dport(FIRST_PORT, LAST_PORT)
    );
    r
}

pub(crate) fn iptables_restore(ns: &str, rules: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "iptables-restore"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running iptables-restore (is iptables installed?)")?;
    child.stdin.take().context("stdin")?.write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("iptables-restore failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(start.elapsed())
}

/// Runs a command, killed after `limit` if it has not finished.
pub(crate) fn bounded(limit: Duration, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let secs = limit.as_secs().max(1).to_string();
    let out = Command::new("timeout")
        .args(["-k", "2", &secs])
        .args(args)
        .output()
        .with_context(|| format!("running {args:?}"))?;
    Ok(out)
}

pub(crate) fn exe() -> anyhow::Result<String> {
    Ok(std::env::current_exe()?.display().to_string())
}

/// The CPU request/response clients and servers run on, both of them:
/// the last one.
pub(crate) fn bench_cpu() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cpus - 1).to_string()
}

pub(crate) fn start_server(ns: &str, port: u16) -> anyhow::Result<Running> {
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            &exe()?,
            "__tcp-server",
            &port.to_string(),
            &SERVER_MAX_SECONDS.to_string(),
            &bench_cpu(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Running(child))
}

/// iperf3 TCP stream, Gbit/s received.
fn stream(pair: &Pair, port: u16) -> anyhow::Result<f64> {
    Ok(stream_for(pair, port, IPERF_SECONDS)?.gbps)
}

/// One iperf3 run: received throughput, and the sender's retransmits
/// (which say whether a slow path is lossy or just slow).
pub(crate) struct StreamReport {
    pub(crate) gbps: f64,
    pub(crate) retransmits: u64,
}

pub(crate) fn stream_for(pair: &Pair, port: u16, seconds: u64) -> anyhow::Result<StreamReport> {
    let port = port.to_string();
    let _server = Running(
        Command::new("ip")
            .args(["netns", "exec", &pair.server_ns, "iperf3", "-s", "-1", "-p", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    for attempt in 1.. {
        let out = bounded(
            Duration::from_secs(seconds + 10),
            &[
                "ip",
                "netns",
                "exec",
                &pair.client_ns,
                "iperf3",
                "-c",
                &pair.server_ip,
                "-p",
                &port,
                "-t",
                &seconds.to_string(),
                "--connect-timeout",
                "2000",
                "-J",
            ],
        )?;
        // iperf3 -J exits 0 even when it could not connect: read the report.
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let bps = report["end"]["sum_received"]["bits_per_second"].as_f64();
        match bps {
            Some(bps) if report["error"].is_null() => {
                let retransmits = report["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
                return Ok(StreamReport { gbps: bps / 1e9, retransmits });
            }
            _ if Instant::now() < deadline && attempt < 50 => std::thread::sleep(Duration::from_millis(100)),
            _ => bail!(
                "iperf3 from {} to {}:{port} did not complete: {}",
                pair.client_ns,
                pair.server_ip,
                report["error"].as_str().unwrap_or(&String::from_utf8_lossy(&out.stderr))
            ),
        }
    }
    unreachable!("the loop returns or fails")
}

/// Transactions (rr) or connections (crr) per second, and for `rr` the
/// p99 round trip in µs.
fn pingpong(pair: &Pair, port: u16, mode: &str) -> anyhow::Result<(f64, Option<f64>)> {
    let (seconds, max) = if mode == "rr" { (RR_SECONDS, RR_MAX) } else { (CRR_SECONDS, CRR_MAX) };
    let report = pingpong_for(pair, port, mode, seconds, max)?;
    Ok((report.rate, report.p99_us))
}

/// One ping-pong run: transactions (rr) or connections (crr) per second;
/// for `rr`, the round trip's p50 and p99 in µs.
pub(crate) struct PingPongReport {
    pub(crate) rate: f64,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
}

pub(crate) fn pingpong_for(
    pair: &Pair,
    port: u16,
    mode: &str,
    seconds: f64,
    max: u64,
) -> anyhow::Result<PingPongReport> {
    let _server = start_server(&pair.server_ns, port)?;
    let out = bounded(
        Duration::from_secs_f64(seconds + 20.0),
        &[
            "ip",
            "netns",
            "exec",
            &pair.client_ns,
            &exe()?,
            "__tcp-client",
            &format!("{}:{port}", pair.server_ip),
            mode,
            &seconds.to_string(),
            &max.to_string(),
            &bench_cpu(),
        ],
    )?;
    if !out.status.success() {
        bail!(
            "{mode} client in {} to {}:{port} failed: {}",
            pair.client_ns,
            pair.server_ip,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("client report")?;
    let count = report["count"].as_f64().context("count")?;
    let secs = report["seconds"].as_f64().context("seconds")?;
    Ok(PingPongReport {
        rate: count / secs,
        p50_us: report["p50_us"].as_f64(),
        p99_us: report["p99_us"].as_f64(),
    })
}

/// Whether a new connection to a listening server on DENIED_PORT opens.
pub(crate) fn opens(pair: &Pair) -> anyhow::Result<bool> {
    let _server = start_server(&pair.server_ns, DENIED_PORT)?;
    std::thread::sleep(Duration::from_millis(200));
    let out = bounded(
        Duration::from_secs(5),
        &[
            "ip",
            "netns",
            "exec",
            &pair.client_ns,
            &exe()?,
            "__tcp-probe",
            &format!("{}:{DENIED_PORT}", pair.server_ip),
            "700",
        ],
    )?;
    Ok(out.status.success())
}

struct Ports(u16);

impl Ports {
    fn next(&mut self) -> anyhow::Result<u16> {
        if self.0 > LAST_PORT {
            bail!("out of test ports");
        }
        self.0 += 1;
        Ok(self.0 - 1)
    }
}

pub(crate) fn gbps(v: f64) -> String {
    format!("{v:.2} Gbit/s")
}

pub(crate) fn rate(v: f64) -> String {
    format!("{}/s", thousands(v.round() as u64))
}

fn count(n: usize) -> String {
    thousands(n as u64)
}

/// The entry count as `twill bpf policy get ENDPOINT -o json` prints it.
fn cli_entry_count(bench: &Bench, endpoint: &str) -> anyhow::Result<usize> {
    let cli = std::env::current_exe()?.with_file_name("twill");
    let socket = bench.socket();
    let out = sh(&[
        &cli.display().to_string(),
        "--socket",
        &socket.display().to_string(),
        "bpf",
        "policy",
        "get",
        endpoint,
        "-o",
        "json",
    ])?;
    let report: serde_json::Value = serde_json::from_str(&out).context("twill bpf policy get -o json")?;
    report["entries"].as_array().map(Vec::len).context("no entries in twill bpf policy get output")
}

pub fn run(bench: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (_bare_ns, bare) = veth_pair(BARE_A, BARE_B, "10.251.0")?;
    let (_ipt_ns, ipt) = veth_pair(IPT_A, IPT_B, "10.253.0")?;
    let rules = iptables_rules("10.253.0.1");
    let restore_time = iptables_restore(IPT_B, &rules)?;
    let ipt_rules = sh(&["ip", "netns", "exec", IPT_B, "iptables-save"])?
        .lines()
        .filter(|l| l.starts_with("-A "))
        .count();
    let ipt_variant = sh(&["iptables", "-V"])?;
    let ipt_variant = if ipt_variant.contains("nf_tables") { "iptables-nft" } else { "iptables-legacy" };

    let (client, server) = create_policy_endpoints(bench)?;
    let twill = Pair {
        client_ns: client.netns.clone(),
        server_ns: server.netns.clone(),
        server_ip: server.ipv4.clone(),
    };
    let policy = policy_yaml();
    let import = || -> anyhow::Result<Duration> {
        let start = Instant::now();
        let _: PolicyImported = bench.client().call(&Request::PolicyImport {
            files: vec![PolicyFile { name: format!("{POLICY_NAME}.yaml"), content: policy.clone() }],
        })?;
        Ok(start.elapsed())
    };
    let remove = || -> anyhow::Result<()> {
        bench.client().call_value(&Request::PolicyDelete {
            name: Some(POLICY_NAME.into()),
            namespace: Some("default".into()),
            kind: None,
            all: false,
            labels: vec![],
        })?;
        Ok(())
    };
    let map = || -> anyhow::Result<BpfPolicy> {
        Ok(bench
            .client()
            .call(&Request::BpfPolicyGet { name: "tp-server".into(), namespace: "default".into() })?)
    };

    let mut results: BTreeMap<(Workload, Config), Vec<f64>> = BTreeMap::new();
    // ns per packet of each program, per Twill workload and configuration.
    let mut costs: BTreeMap<(Workload, Config, &'static str), Vec<f64>> = BTreeMap::new();
    let mut p99s: BTreeMap<Config, Vec<f64>> = BTreeMap::new();
    let bpf_root = std::path::Path::new(crate::BPF_ROOT);
    let mut import_times = Vec::new();
    let mut entries = 0;
    let mut ingress_entries = 0;
    let mut policy_rss = 0;
    let mut policy_breakdown = RssBreakdown::default();
    let mut ports = Ports(FIRST_PORT);
    for round in 0..ROUNDS {
        // Rotate the order, so no configuration always runs first.
        for k in 0..CONFIGS.len() {
            let config = CONFIGS[(k + round) % CONFIGS.len()];
            let pair = match config {
                Config::Bare => &bare,
                Config::Iptables => &ipt,
                Config::TwillNoPolicy | Config::TwillPolicy | Config::Floor => &twill,
            };
            let _floor = if config == Config::Floor {
                Some(crate::floor::Floor::attach(&client, &server)?)
            } else {
                None
            };
            if config == Config::TwillPolicy {
                import_times.push(import()?);
                let m = map()?;
                entries = m.entries.len();
                ingress_entries = m.entries.iter().filter(|e| e.direction == "ingress").count();
                if !m.ingress_enforced || ingress_entries < 10_000 {
                    bail!(
                        "policy not in force: ingress enforced {}, {ingress_entries} ingress entries",
                        m.ingress_enforced
                    );
                }
                policy_rss = rss_kib(bench.agent_pid());
                policy_breakdown = RssBreakdown::of(bench.agent_pid());
                if round == 0 && cli_entry_count(bench, "tp-server")? != entries {
                    bail!("twill bpf policy get disagrees with the API on the entry count");
                }
            }
            if round == 0 {
                // The rules must be in force where they should be, and only there.
                let denies = matches!(config, Config::Iptables | Config::TwillPolicy);
                if opens(pair)? == denies {
                    bail!(
                        "{config:?}: a connection to port {DENIED_PORT} {}",
                        if denies { "opened" } else { "did not open" }
                    );
                }
            }
            for workload in WORKLOADS {
                let port = ports.next()?;
                let value = match workload {
                    Workload::Stream => stream(pair, port)?,
                    Workload::Rr => {
                        let (rate, p99) = pingpong(pair, port, "rr")?;
                        p99s.entry(config).or_default().extend(p99);
                        rate
                    }
                    Workload::Crr => pingpong(pair, port, "crr")?.0,
                };
                results.entry((workload, config)).or_default().push(value);
                if matches!(config, Config::TwillNoPolicy | Config::TwillPolicy) {
                    // Run-time statistics put two clock reads around every
                    // program run, a cost only Twill's rows would carry: the
                    // rates above run without them, the per-program cost
                    // in a pass of its own.
                    let port = ports.next()?;
                    let _stats = crate::bpfstats::enable()?;
                    let before = crate::bpfstats::snapshot(bpf_root)?;
                    match workload {
                        Workload::Stream => drop(stream_for(pair, port, COST_SECONDS)?),
                        Workload::Rr => drop(pingpong_for(pair, port, "rr", COST_SECONDS as f64, RR_MAX)?),
                        Workload::Crr => drop(pingpong_for(pair, port, "crr", COST_SECONDS as f64, CRR_MAX)?),
                    }
                    let after = crate::bpfstats::snapshot(bpf_root)?;
                    for (program, ns) in crate::bpfstats::per_packet(&before, &after) {
                        if let Some(ns) = ns {
                            costs.entry((workload, config, program)).or_default().push(ns);
                        }
                    }
                }
            }
            if config == Config::TwillPolicy {
                remove()?;
            }
        }
    }

    let get = |w: Workload, c: Config| median(results[&(w, c)].clone());
    // Half the range of the rounds, relative to the median.
    let spread = |w: Workload, c: Config| {
        let v = &results[&(w, c)];
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("±{:.0}%", (hi - lo) / 2.0 / get(w, c) * 100.0)
    };
    let ratio = |a: f64, b: f64| format!("{:.3}", a / b);
    let policy_label = format!("{} policy entries", count(entries));
    let ipt_label = format!("{ipt_variant}, {} rules", count(ipt_rules));

    // The original throughput row: Twill endpoints vs a bare veth pair.
    let (t, b) = (get(Workload::Stream, Config::TwillNoPolicy), get(Workload::Stream, Config::Bare));
    rows.push(Row::new(
        format!("TCP throughput, iperf3 {IPERF_SECONDS}s x{ROUNDS}, median"),
        format!("{} {}", gbps(t), spread(Workload::Stream, Config::TwillNoPolicy)),
        format!("bare veth {} {}", gbps(b), spread(Workload::Stream, Config::Bare)),
        ratio(t, b),
    ));
    for workload in WORKLOADS {
        let (name, fmt): (String, fn(f64) -> String) = match workload {
            Workload::Stream => (format!("TCP stream (iperf3 {IPERF_SECONDS}s x{ROUNDS})"), gbps),
            Workload::Rr => (
                format!("TCP_RR {}B, 1 conn, 1 CPU ({RR_SECONDS}s x{ROUNDS})", crate::pingpong::MSG_BYTES),
                rate,
            ),
            Workload::Crr => (
                format!(
                    "TCP_CRR {}B, 1 CPU ({CRR_SECONDS}s or {} conns x{ROUNDS})",
                    crate::pingpong::MSG_BYTES,
                    count(CRR_MAX as usize)
                ),
                rate,
            ),
        };
        let v = |c| get(workload, c);
        let cell = |c| format!("{} {}", fmt(get(workload, c)), spread(workload, c));
        // One row: Twill's configuration `of` against the reference `to`;
        // `shown`: the row shows `of`'s own value (not when it continues the
        // row above).
        let mut push = |metric: String, shown: bool, of: Config, to: Config| {
            let label = match to {
                Config::Bare => "bare veth",
                Config::Iptables => ipt_label.as_str(),
                Config::TwillNoPolicy => "Twill no policy",
                Config::TwillPolicy => "Twill + policy",
                Config::Floor => "floor",
            };
            let twill = if shown { cell(of) } else { String::new() };
            rows.push(Row::new(metric, twill, format!("{label} {}", cell(to)), ratio(v(of), v(to))));
        };
        let floor_name = format!("{name}, floor: Twill's endpoints, a redirect-only program");
        if workload != Workload::Stream {
            push(format!("{name}, Twill no policy"), true, Config::TwillNoPolicy, Config::Bare);
        }
        push(format!("{name}, Twill + {policy_label}"), true, Config::TwillPolicy, Config::TwillNoPolicy);
        push("  same, vs bare veth".into(), false, Config::TwillPolicy, Config::Bare);
        push(
            "  same, vs iptables rule set in the server netns".into(),
            false,
            Config::TwillPolicy,
            Config::Iptables,
        );
        push(floor_name, true, Config::Floor, Config::Bare);
        push("  Twill no policy vs the floor".into(), false, Config::TwillNoPolicy, Config::Floor);
    }
    let p99 = |c: Config| p99s.get(&c).map(|v| median(v.clone())).unwrap_or(f64::NAN);
    for (config, what) in [(Config::TwillNoPolicy, "no policy"), (Config::TwillPolicy, "with policy")] {
        rows.push(Row::new(
            format!("TCP_RR p99 round trip, Twill {what}, median of rounds"),
            format!("{:.1} µs", p99(config)),
            format!("bare veth {:.1} µs", p99(Config::Bare)),
            ratio(p99(config), p99(Config::Bare)),
        ));
    }
    for workload in WORKLOADS {
        for config in [Config::TwillNoPolicy, Config::TwillPolicy] {
            let cell = |program| {
                costs
                    .get(&(workload, config, program))
                    .map(|v| format!("{:.0} ns", median(v.clone())))
                    .unwrap_or_else(|| "not run".into())
            };
            rows.push(Row::new(
                format!(
                    "ns/packet {:?} {}: from_endpoint / to_endpoint",
                    workload,
                    if config == Config::TwillPolicy { "with policy" } else { "no policy" }
                ),
                format!("{} / {}", cell("from_endpoint"), cell("to_endpoint")),
                "kernel.bpf_stats (BPF_ENABLE_STATS), own 1 s pass, median of rounds",
                "",
            ));
        }
    }
    import_times.sort();
    let import_median = import_times[import_times.len() / 2];
    rows.push(Row::new(
        format!(
            "policy import to {policy_label} in the map ({} ingress), median of {ROUNDS}",
            count(ingress_entries)
        ),
        crate::fmt_duration(import_median),
        format!("iptables-restore {} rules {}", count(ipt_rules), crate::fmt_duration(restore_time)),
        ratio(import_median.as_secs_f64(), restore_time.as_secs_f64()),
    ));
    rows.push(Row::new(
        format!("agent RSS with {} endpoints and the policy", PEERS + 2),
        format!("{:.1} MiB", policy_rss as f64 / 1024.0),
        format!("{} (after traffic)", policy_breakdown.describe()),
        "",
    ));
    delete_policy_endpoints(bench)
}

/// The PEERS peers, the client and the server the policy is about.
pub(crate) fn create_policy_endpoints(bench: &Bench) -> anyhow::Result<(Endpoint, Endpoint)> {
    for i in 0..PEERS {
        bench.create(&format!("peer-{i}"), &format!("app=peer-{i}"))?;
    }
    Ok((bench.create("tp-client", "app=bench-client")?, bench.create("tp-server", "app=bench-server")?))
}

pub(crate) fn delete_policy_endpoints(bench: &Bench) -> anyhow::Result<()> {
    for i in 0..PEERS {
        bench.delete(&format!("peer-{i}"))?;
    }
    bench.delete("tp-client")?;
    bench.delete("tp-server")
}

/// The agent settings the flows section compares: flow events as a user
/// gets them by default, as the cilium-agent default reports them (the
/// opening and close of a connection, not every new TCP flag), and off.
const FLOWS_SETTINGS: [(&str, &[&str]); 3] = [
    ("flows on (medium aggregation, all flags)", &[]),
    (
        "flows on (medium, --monitor-aggregation-flags syn,fin,rst)",
        &["--monitor-aggregation-flags", "syn,fin,rst"],
    ),
    ("flows off (--disable-flows)", &["--disable-flows"]),
];

/// The cost of flows: the same Twill endpoints under each of
/// FLOWS_SETTINGS (the agent restarted in between, settings rotated from
/// round to round), each measurement right after one of a bare veth pair,
/// so every setting gets its ratio to the bare kernel and to flows off.
pub fn flows_overhead(bench: &mut Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let client = bench.create("fl-client", "app=flows-client")?;
    let server = bench.create("fl-server", "app=flows-server")?;
    let pair = Pair {
        client_ns: client.netns.clone(),
        server_ns: server.netns.clone(),
        server_ip: server.ipv4.clone(),
    };
    let (_bare_ns, bare) = veth_pair(BARE_A, BARE_B, "10.251.0")?;
    let rounds = 3;
    // (workload, setting index, false: Twill / true: bare) -> values.
    let mut results: BTreeMap<(Workload, usize, bool), Vec<f64>> = BTreeMap::new();
    // Ports past the policy section's range, on a fresh server each time.
    let mut port = LAST_PORT + 100;
    for round in 0..rounds {
        for k in 0..FLOWS_SETTINGS.len() {
            let setting = (k + round) % FLOWS_SETTINGS.len();
            bench.restart_agent(FLOWS_SETTINGS[setting].1)?;
            for workload in WORKLOADS {
                for (on_bare, p) in [(true, &bare), (false, &pair)] {
                    port += 1;
                    results
                        .entry((workload, setting, on_bare))
                        .or_default()
                        .push(measure(p, workload, port)?);
                }
            }
        }
    }
    bench.restart_agent(&[])?;
    let off = FLOWS_SETTINGS.len() - 1;
    for workload in WORKLOADS {
        let (name, fmt) = workload.label();
        let twill_off = median(results[&(workload, off, false)].clone());
        for (setting, (label, _)) in FLOWS_SETTINGS.iter().enumerate() {
            let twill = median(results[&(workload, setting, false)].clone());
            let bare = median(results[&(workload, setting, true)].clone());
            let against_off =
                if setting == off { String::new() } else { format!(", flows off {}", fmt(twill_off)) };
            rows.push(Row {
                metric: format!("{name}, {label}, median of {rounds}"),
                twill: fmt(twill),
                reference: format!("bare veth {}{against_off}", fmt(bare)),
                ratio: if setting == off {
                    format!("{:.3} of bare", twill / bare)
                } else {
                    format!("{:.3} of bare; {:.3} of off", twill / bare, twill / twill_off)
                },
            });
        }
    }
    Ok(())
}

/// The cost of datapath debug messages (`twill config set
/// debug-datapath=true`): request/response and connection rates, and the
/// endpoint programs' own run time per packet (BPF_ENABLE_STATS), with
/// debug off and on, switched at runtime on one agent, in interleaved
/// rounds. Off is the default and should cost nothing measurable.
pub fn debug_overhead(bench: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let client = bench.create("dbg-client", "app=debug-client")?;
    let server = bench.create("dbg-server", "app=debug-server")?;
    let pair = Pair {
        client_ns: client.netns.clone(),
        server_ns: server.netns.clone(),
        server_ip: server.ipv4.clone(),
    };
    let bpf_root = std::path::Path::new(crate::BPF_ROOT);
    let _stats = crate::bpfstats::enable()?;
    let rounds = 3;
    let mut rates: BTreeMap<(Workload, bool), Vec<f64>> = BTreeMap::new();
    let mut costs: BTreeMap<(Workload, bool, &'static str), Vec<f64>> = BTreeMap::new();
    // Past the flows section's ports, a fresh server port every time.
    let mut port = LAST_PORT + 300;
    let set = |on: bool| -> anyhow::Result<()> {
        let setting = format!("debug-datapath={on}");
        let _: twill_api::AgentSettings =
            bench.client().call(&Request::ConfigSet { settings: vec![setting] })?;
        Ok(())
    };
    for round in 0..rounds {
        for k in 0..2 {
            let on = (k + round) % 2 == 0;
            set(on)?;
            for workload in [Workload::Rr, Workload::Crr] {
                port += 1;
                let before = crate::bpfstats::snapshot(bpf_root)?;
                let mode = if workload == Workload::Rr { "rr" } else { "crr" };
                let value = pingpong(&pair, port, mode)?.0;
                let after = crate::bpfstats::snapshot(bpf_root)?;
                rates.entry((workload, on)).or_default().push(value);
                for (program, ns) in crate::bpfstats::per_packet(&before, &after) {
                    if let Some(ns) = ns {
                        costs.entry((workload, on, program)).or_default().push(ns);
                    }
                }
            }
        }
    }
    set(false)?;
    for workload in [Workload::Rr, Workload::Crr] {
        let name = if workload == Workload::Rr { "TCP_RR 64B" } else { "TCP_CRR 64B" };
        let on = median(rates[&(workload, true)].clone());
        let off = median(rates[&(workload, false)].clone());
        rows.push(Row {
            metric: format!("{name}, datapath debug messages on, median of {rounds}"),
            twill: rate(on),
            reference: format!("debug off {}", rate(off)),
            ratio: format!("{:.3}", on / off),
        });
        let ns = |on: bool, program| {
            costs.get(&(workload, on, program)).map(|v| median(v.clone())).unwrap_or(f64::NAN)
        };
        // Between two local endpoints from_endpoint does both sides (the
        // receiver's ingress too) and delivers straight into the
        // receiver: to_endpoint never runs.
        rows.push(Row {
            metric: format!("  ns/packet from_endpoint (both sides), {name}, debug on (kernel.bpf_stats)"),
            twill: format!("{:.0} ns", ns(true, "from_endpoint")),
            reference: format!("debug off {:.0} ns", ns(false, "from_endpoint")),
            ratio: format!("{:.2}", ns(true, "from_endpoint") / ns(false, "from_endpoint")),
        });
    }
    bench.delete("dbg-client")?;
    bench.delete("dbg-server")
}
