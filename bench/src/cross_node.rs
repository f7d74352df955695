//! Cross-node datapath (issue 11: eBPF direct routing versus
//! encapsulation): TCP stream, request/response and connection rates
//! between pods on two nodes, against the same traffic between the two
//! nodes themselves, in one run.
//!
//! Two small clusters, built as the e2e harness builds them: a fabric
//! namespace with a bridge, two node namespaces on it (192.168.S.10 and
//! .11) and etcd in a namespace of its own. One cluster's agents route
//! through the VXLAN tunnel, the other's natively, so both run side by
//! side and their rounds interleave without agent restarts.
//!
//! The reference is the bare underlay: client in node 0's namespace,
//! server in node 1's, over the tunnel cluster's fabric. It is measured
//! before any agent starts and again, interleaved, while they run. No
//! Twill program sits on that path: the agents attach tc programs only to
//! their endpoints' devices and the tunnel device, never to a node's eth0
//! (no `--devices`), and add routes only for pod CIDRs. What they do add
//! machine-wide is their cgroup socket hooks at the cgroup v2 root, so
//! every connect() on the machine, the underlay's too, runs each agent's
//! sock_connect4; that is on the CRR path of every row alike, and the
//! "agents running vs not started" row shows what it and the agents'
//! background work cost the underlay.
//!
//! The request/response client and server run pinned to one CPU, as in
//! the datapath section. Each measurement uses a fresh server port, all
//! within the range the 1,000-entry policy admits from the client.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use twill_api::{BpfPolicy, Client, Endpoint, IpcacheEntry, NodeInfo, PolicyFile, PolicyImported, Request};

use crate::{
    datapath::{self, gbps, rate, Netns, Pair, Running},
    median, sh, thousands, veth_into, Row, OWN_NETNS_PREFIX,
};

const ROUNDS: usize = 3;
const IPERF_SECONDS: u64 = 3;
const RR_SECONDS: f64 = 2.0;
const RR_MAX: u64 = 2_000_000;
const CRR_SECONDS: f64 = 2.0;
/// Below the 32,256 ports one server port can see without reusing a
/// 4-tuple (see pingpong.rs).
const CRR_MAX: u64 = 30_000;
/// Agents leave every other node's view this long after they stop.
const LEASE_TTL: &str = "10";
const POLICY_NAME: &str = "bench-cross-1k";
/// 3 + 40 x 5 + 8 x 100 = 1,003 entries in the policed server's map.
const POLICY_PEERS: usize = 5;
const POLICY_CIDRS: usize = 100;
const BPF_ROOT_PREFIX: &str = "/sys/fs/bpf/twill-bench-x";
const AGENT_READY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Config {
    /// The underlay before any agent started.
    Before,
    Underlay,
    Tunnel,
    Native,
    TunnelPolicy,
    NativePolicy,
}

/// The rotation of the interleaved rounds.
const RUNNING: [Config; 5] =
    [Config::Underlay, Config::Tunnel, Config::Native, Config::TunnelPolicy, Config::NativePolicy];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Metric {
    Stream,
    Retransmits,
    Rr,
    RrP50,
    RrP99,
    Crr,
}

type Results = BTreeMap<(Config, Metric), Vec<f64>>;
/// ns per run of a program, per configuration and workload, over both
/// nodes' programs.
type Costs = BTreeMap<(Config, Metric, &'static str), Vec<f64>>;

/// A directory removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn netns_list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// An agent in a node's namespace. Dropping it uninstalls what it made
/// (endpoints, pins, cgroup links, the tunnel device, its node's keys in
/// etcd, which must still be up), stops it, and removes whatever an
/// uninstall that failed left behind.
struct Agent {
    node: String,
    bpf_root: PathBuf,
    client: Client,
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn client(&self) -> &Client {
        &self.client
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn create(&self, name: &str, labels: &str) -> anyhow::Result<Endpoint> {
        self.client
            .call(&Request::EndpointCreate {
                name: name.into(),
                namespace: "default".into(),
                labels: vec![labels.into()],
                ports: vec![],
            })
            .with_context(|| format!("creating endpoint {name} on {}", self.node))
    }

    fn knows(&self, ip: &str) -> bool {
        let cidr = format!("{ip}/32");
        self.client
            .call::<Vec<IpcacheEntry>>(&Request::BpfIpcacheList)
            .is_ok_and(|entries| entries.iter().any(|e| e.cidr == cidr))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.client.call_value(&Request::Uninstall);
        if let Some(mut child) = self.child.take() {
            // SIGTERM first: a cluster-mode agent gives up its lease.
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let prefix = format!("twill_{}_", self.node);
        for ns in netns_list().into_iter().filter(|n| n.starts_with(&prefix)) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.bpf_root);
    }
}

/// A fabric, etcd and two node namespaces; agents once started. Fields
/// drop in the order cleanup needs: agents (while etcd still answers),
/// etcd, then the namespaces.
struct Cluster {
    agents: Vec<Agent>,
    _etcd: Running,
    _netns: Netns,
    tag: &'static str,
    subnet: u8,
    mode: &'static str,
    dir: PathBuf,
}

impl Cluster {
    fn node_netns(&self, i: usize) -> String {
        format!("{OWN_NETNS_PREFIX}{}-n{i}", self.tag)
    }

    fn node_ip(&self, i: usize) -> String {
        format!("192.168.{}.{}", self.subnet, 10 + i)
    }

    fn etcd_url(&self) -> String {
        format!("http://192.168.{}.2:2379", self.subnet)
    }

    /// The fabric, two nodes and etcd, healthy; no agents yet.
    fn new(tag: &'static str, subnet: u8, mode: &'static str, dir: &Path) -> anyhow::Result<Cluster> {
        let dir = dir.join(tag);
        std::fs::create_dir_all(&dir)?;
        let mut netns = Netns(Vec::new());
        let fabric = format!("{OWN_NETNS_PREFIX}{tag}-fab");
        sh(&["ip", "netns", "add", &fabric])?;
        netns.0.push(fabric.clone());
        sh(&["ip", "-n", &fabric, "link", "set", "lo", "up"])?;
        sh(&["ip", "-n", &fabric, "link", "add", "br0", "type", "bridge"])?;
        sh(&["ip", "-n", &fabric, "link", "set", "br0", "up"])?;
        let attach = |netns: &mut Netns, name: String, fabric_side: &str, host: u8| -> anyhow::Result<()> {
            sh(&["ip", "netns", "add", &name])?;
            netns.0.push(name.clone());
            // Made inside the fabric, the peer sent straight to the node:
            // the machine's own namespace never holds either end.
            veth_into(&fabric, fabric_side, &name)?;
            sh(&["ip", "-n", &fabric, "link", "set", fabric_side, "master", "br0", "up"])?;
            sh(&["ip", "-n", &name, "addr", "add", &format!("192.168.{subnet}.{host}/24"), "dev", "eth0"])?;
            sh(&["ip", "-n", &name, "link", "set", "eth0", "up"])?;
            sh(&["ip", "-n", &name, "link", "set", "lo", "up"])?;
            sh(&["ip", "netns", "exec", &name, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            Ok(())
        };
        let etcd_ns = format!("{OWN_NETNS_PREFIX}{tag}-e");
        attach(&mut netns, etcd_ns.clone(), "ve", 2)?;
        for i in 0..2u8 {
            attach(&mut netns, format!("{OWN_NETNS_PREFIX}{tag}-n{i}"), &format!("v{i}"), 10 + i)?;
        }
        let ip = format!("192.168.{subnet}.2");
        let (client_url, peer_url) = (format!("http://{ip}:2379"), format!("http://{ip}:2380"));
        let name = format!("twbench-{tag}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let etcd = Running(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{etcd_ns}"))
                .arg("etcd")
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join("etcd"))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("{name}={peer_url}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting etcd (Debian package etcd-server)")?,
        );
        let cluster = Cluster { agents: Vec::new(), _etcd: etcd, _netns: netns, tag, subnet, mode, dir };
        let health = format!("{client_url}/health");
        let deadline = Instant::now() + AGENT_READY;
        loop {
            // From node 0, over the fabric, as the agents will reach it.
            let out = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", cluster.node_netns(0)))
                .args(["curl", "-sf", "--max-time", "1", &health])
                .output()?;
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("true") {
                break;
            }
            if Instant::now() > deadline {
                bail!("etcd at {client_url} not healthy; see {}", cluster.dir.join("etcd.log").display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    fn start_agents(&mut self) -> anyhow::Result<()> {
        for i in 0..2 {
            let node = format!("b{}{i}", self.tag);
            let dir = self.dir.join(&node);
            std::fs::create_dir_all(&dir)?;
            let bpf_root = PathBuf::from(format!("{BPF_ROOT_PREFIX}{}{i}", &self.tag[1..]));
            let socket = dir.join("twill.sock");
            let log = dir.join("agent.log");
            let bin = std::env::current_exe()?.with_file_name("twill-agent");
            let child = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", self.node_netns(i)))
                .arg(bin)
                .arg("--state-dir")
                .arg(dir.join("state"))
                .arg("--api-socket")
                .arg(&socket)
                .arg("--hubble-socket")
                .arg(dir.join("hubble.sock"))
                .arg("--bpf-root")
                .arg(&bpf_root)
                .args(["--node-name", &node, "--node-ip", &self.node_ip(i)])
                .args(["--pod-cidr", &format!("10.{}.{i}.0/24", self.subnet)])
                .args(["--kvstore-endpoints", &self.etcd_url(), "--kvstore-lease-ttl", LEASE_TTL])
                .args(["--routing-mode", self.mode])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("starting twill-agent")?;
            let mut agent = Agent { node, bpf_root, client: Client::new(&socket), child: Some(child), log };
            let deadline = Instant::now() + AGENT_READY;
            while agent.client.call_value(&Request::Status).is_err() {
                let exited = agent.child.as_mut().map(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited == Some(true) || Instant::now() > deadline {
                    let tail = agent.log_tail();
                    bail!("agent {} did not start:\n{tail}", agent.node);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.agents.push(agent);
        }
        let deadline = Instant::now() + CONVERGE;
        for agent in &self.agents {
            loop {
                let nodes: Vec<NodeInfo> = agent.client().call(&Request::NodeList).unwrap_or_default();
                if nodes.iter().filter(|n| n.state == "alive").count() == 2 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} sees {} of 2 nodes alive", agent.node, nodes.len());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The endpoints and policy: a client on node 0; on node 1 a server
    /// no policy selects, one the policy does, and the peers whose
    /// identities the policy names. Returns (plain, policed) pairs once
    /// each node's ipcache knows the other's endpoints and the policy is
    /// in force.
    fn endpoints(&self) -> anyhow::Result<(Pair, Pair)> {
        let (n0, n1) = (&self.agents[0], &self.agents[1]);
        let client = n0.create("client", "app=bench-client")?;
        let plain = n1.create("server", "app=cross-server")?;
        let policed = n1.create("server-pol", "app=bench-server")?;
        for i in 0..POLICY_PEERS {
            n1.create(&format!("peer-{i}"), &format!("app=peer-{i}"))?;
        }
        let content = datapath::policy_yaml_sized(POLICY_NAME, POLICY_PEERS, POLICY_CIDRS);
        let _: PolicyImported = n1.client().call(&Request::PolicyImport {
            files: vec![PolicyFile { name: format!("{POLICY_NAME}.yaml"), content }],
        })?;
        let deadline = Instant::now() + CONVERGE;
        loop {
            let known = n0.knows(&plain.ipv4) && n0.knows(&policed.ipv4) && n1.knows(&client.ipv4);
            let map: Option<BpfPolicy> = n1
                .client()
                .call(&Request::BpfPolicyGet { name: "server-pol".into(), namespace: "default".into() })
                .ok();
            let entries = map.as_ref().map_or(0, |m| m.entries.len());
            if known && map.as_ref().is_some_and(|m| m.ingress_enforced) && entries >= 1_000 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} cluster did not converge: ipcache complete {known}, {entries} policy entries",
                    self.mode
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let pair = |server: &Endpoint| Pair {
            client_ns: client.netns.clone(),
            server_ns: server.netns.clone(),
            server_ip: server.ipv4.clone(),
        };
        let (plain, policed) = (pair(&plain), pair(&policed));
        if !datapath::opens(&plain)? || datapath::opens(&policed)? {
            bail!("{}: port {} should open to the plain server only", self.mode, datapath::DENIED_PORT);
        }
        Ok((plain, policed))
    }

    fn policy_entries(&self) -> anyhow::Result<usize> {
        let map: BpfPolicy = self.agents[1]
            .client()
            .call(&Request::BpfPolicyGet { name: "server-pol".into(), namespace: "default".into() })?;
        Ok(map.entries.len())
    }
}

/// Removes what an interrupted run left: namespaces and pins (its agents
/// and etcd died with it or are no longer reachable through them).
fn cleanup_leftovers() {
    for ns in netns_list() {
        let ours = ["xt-", "xn-"].iter().any(|t| ns.starts_with(&format!("{OWN_NETNS_PREFIX}{t}")));
        let endpoint = ["twill_bxt", "twill_bxn"].iter().any(|p| ns.starts_with(p));
        if ours || endpoint {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
    for i in 0..2 {
        for t in ["t", "n"] {
            let _ = std::fs::remove_dir_all(format!("{BPF_ROOT_PREFIX}{t}{i}"));
        }
    }
}

struct Ports(u16);

impl Ports {
    fn next(&mut self) -> anyhow::Result<u16> {
        if self.0 > datapath::LAST_PORT {
            bail!("out of test ports");
        }
        self.0 += 1;
        Ok(self.0 - 1)
    }
}

/// Both nodes' program run times, summed per program.
fn snapshot(roots: &[PathBuf]) -> anyhow::Result<crate::bpfstats::Snapshot> {
    let mut total = crate::bpfstats::Snapshot::new();
    for root in roots {
        for (name, (ns, runs)) in crate::bpfstats::snapshot(root)? {
            let entry = total.entry(name).or_default();
            entry.0 += ns;
            entry.1 += runs;
        }
    }
    Ok(total)
}

fn measure(
    pair: &Pair,
    config: Config,
    roots: &[PathBuf],
    ports: &mut Ports,
    results: &mut Results,
    costs: &mut Costs,
) -> anyhow::Result<()> {
    for metric in [Metric::Stream, Metric::Rr, Metric::Crr] {
        let before = if roots.is_empty() { None } else { Some(snapshot(roots)?) };
        let port = ports.next()?;
        let mut push = |metric, v: f64| results.entry((config, metric)).or_default().push(v);
        match metric {
            Metric::Stream => {
                let stream = datapath::stream_for(pair, port, IPERF_SECONDS)?;
                push(Metric::Stream, stream.gbps);
                push(Metric::Retransmits, stream.retransmits as f64);
            }
            Metric::Rr => {
                let rr = datapath::pingpong_for(pair, port, "rr", RR_SECONDS, RR_MAX)?;
                push(Metric::Rr, rr.rate);
                for (metric, us) in [(Metric::RrP50, rr.p50_us), (Metric::RrP99, rr.p99_us)] {
                    push(metric, us.context("the rr client reported no round trips")?);
                }
            }
            _ => push(Metric::Crr, datapath::pingpong_for(pair, port, "crr", CRR_SECONDS, CRR_MAX)?.rate),
        }
        if let Some(before) = before {
            let after = snapshot(roots)?;
            for (program, ns) in crate::bpfstats::per_packet(&before, &after) {
                if let Some(ns) = ns {
                    costs.entry((config, metric, program)).or_default().push(ns);
                }
            }
        }
    }
    Ok(())
}

/// `ip -j link show` of one device in a namespace.
fn link(netns: &str, dev: &str) -> anyhow::Result<serde_json::Value> {
    let out = sh(&["ip", "-n", netns, "-j", "-s", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link")?;
    Ok(v[0].clone())
}

pub fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    cleanup_leftovers();
    let dir = Dir(std::env::temp_dir().join("twill-bench-cross-node"));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0)?;
    let mut tunnel = Cluster::new("xt", 91, "tunnel", &dir.0)?;
    let mut native = Cluster::new("xn", 92, "native", &dir.0)?;
    let underlay = Pair {
        client_ns: tunnel.node_netns(0),
        server_ns: tunnel.node_netns(1),
        server_ip: tunnel.node_ip(1),
    };

    let mut results = Results::new();
    let mut ports = Ports(datapath::FIRST_PORT);
    let mut costs = Costs::new();
    for _ in 0..ROUNDS {
        measure(&underlay, Config::Before, &[], &mut ports, &mut results, &mut costs)?;
    }
    tunnel.start_agents()?;
    native.start_agents()?;
    let (tunnel_plain, tunnel_policed) = tunnel.endpoints()?;
    let (native_plain, native_policed) = native.endpoints()?;
    let entries = tunnel.policy_entries()?;
    let native_entries = native.policy_entries()?;
    if native.agents[0].client().call_value(&Request::Status)?["kvstore"]["routing_mode"] != "native"
        || Command::new("ip")
            .args(["-n", &native.node_netns(0), "link", "show", "twill_vxlan"])
            .output()?
            .status
            .success()
    {
        bail!("the native cluster has a tunnel device or is not in native mode");
    }
    let vxlan_tx = || -> anyhow::Result<u64> {
        link(&tunnel.node_netns(0), "twill_vxlan")?["stats64"]["tx"]["bytes"].as_u64().context("tx bytes")
    };
    let mut vxlan_bytes = 0;
    let roots = |c: &Cluster| c.agents.iter().map(|a| a.bpf_root.clone()).collect::<Vec<_>>();
    let (tunnel_roots, native_roots) = (roots(&tunnel), roots(&native));
    let _stats = crate::bpfstats::enable()?;

    for round in 0..ROUNDS {
        for k in 0..RUNNING.len() {
            let config = RUNNING[(k + round) % RUNNING.len()];
            let pair = match config {
                Config::Before | Config::Underlay => &underlay,
                Config::Tunnel => &tunnel_plain,
                Config::TunnelPolicy => &tunnel_policed,
                Config::Native => &native_plain,
                Config::NativePolicy => &native_policed,
            };
            let roots: &[PathBuf] = match config {
                Config::Tunnel | Config::TunnelPolicy => &tunnel_roots,
                Config::Native | Config::NativePolicy => &native_roots,
                Config::Before | Config::Underlay => &[],
            };
            let before = vxlan_tx()?;
            measure(pair, config, roots, &mut ports, &mut results, &mut costs)?;
            if config == Config::Tunnel {
                vxlan_bytes += vxlan_tx()? - before;
            }
        }
    }

    let mtu = |ns: &str| link(ns, "eth0").map(|l| l["mtu"].as_u64().unwrap_or(0));
    let mtus = format!(
        "endpoint eth0 MTU: tunnel {}, native {}; node eth0 {}",
        mtu(&tunnel_plain.client_ns)?,
        mtu(&native_plain.client_ns)?,
        mtu(&underlay.client_ns)?
    );
    push_rows(rows, &results, entries.min(native_entries), vxlan_bytes, &mtus);
    for (config, what) in [(Config::Tunnel, "tunnel"), (Config::Native, "native")] {
        let cell = |metric, program| {
            costs
                .get(&(config, metric, program))
                .map(|v| format!("{:.0}", median(v.clone())))
                .unwrap_or_else(|| "-".into())
        };
        let programs = crate::bpfstats::PROGRAMS;
        rows.push(Row::new(
            format!("cross-node ns/packet, Twill {what}: {} (stream / RR / CRR)", programs.join(", ")),
            programs
                .iter()
                .map(|p| [Metric::Stream, Metric::Rr, Metric::Crr].map(|m| cell(m, *p)).join(" / "))
                .collect::<Vec<_>>()
                .join("; "),
            "kernel.bpf_stats, both nodes, median of rounds",
            "",
        ));
    }
    // Drop order: the native cluster, then the tunnel cluster, then the
    // directory holding their logs.
    drop(native);
    drop(tunnel);
    Ok(())
}

fn push_rows(rows: &mut Vec<Row>, results: &Results, entries: usize, vxlan_bytes: u64, mtus: &str) {
    let empty = Vec::new();
    let values = |c: Config, m: Metric| results.get(&(c, m)).unwrap_or(&empty);
    let get = |c: Config, m: Metric| {
        let v = values(c, m);
        if v.is_empty() {
            f64::NAN
        } else {
            median(v.clone())
        }
    };
    let cell = |c: Config, m: Metric, fmt: fn(f64) -> String| {
        let v = values(c, m);
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{} ±{:.0}%", fmt(get(c, m)), (hi - lo) / 2.0 / get(c, m) * 100.0)
    };
    let ratio = |a: f64, b: f64| format!("{:.3}", a / b);
    let policy = format!("{} policy entries", thousands(entries as u64));
    for (metric, name, fmt) in [
        (
            Metric::Stream,
            format!("TCP stream (iperf3 {IPERF_SECONDS}s x{ROUNDS})"),
            gbps as fn(f64) -> String,
        ),
        (
            Metric::Rr,
            format!("TCP_RR {}B, 1 conn, 1 CPU ({RR_SECONDS}s x{ROUNDS})", crate::pingpong::MSG_BYTES),
            rate,
        ),
        (
            Metric::Crr,
            format!(
                "TCP_CRR {}B, 1 CPU ({CRR_SECONDS}s or {} conns x{ROUNDS})",
                crate::pingpong::MSG_BYTES,
                thousands(CRR_MAX)
            ),
            rate,
        ),
    ] {
        let under = format!("bare underlay {}", cell(Config::Underlay, metric, fmt));
        let u = get(Config::Underlay, metric);
        rows.push(Row::new(
            format!("cross-node {name}, Twill tunnel (VXLAN)"),
            cell(Config::Tunnel, metric, fmt),
            under.clone(),
            ratio(get(Config::Tunnel, metric), u),
        ));
        rows.push(Row::new(
            "  Twill native routing",
            cell(Config::Native, metric, fmt),
            under.clone(),
            ratio(get(Config::Native, metric), u),
        ));
        rows.push(Row::new(
            "  tunnel vs native routing",
            "",
            format!("native {}", cell(Config::Native, metric, fmt)),
            ratio(get(Config::Tunnel, metric), get(Config::Native, metric)),
        ));
        for (with, without, mode) in [
            (Config::TunnelPolicy, Config::Tunnel, "tunnel"),
            (Config::NativePolicy, Config::Native, "native"),
        ] {
            rows.push(Row::new(
                format!("  Twill {mode} + {policy} on the server"),
                cell(with, metric, fmt),
                format!(
                    "{mode} no policy {}; vs underlay {}",
                    cell(without, metric, fmt),
                    ratio(get(with, metric), u)
                ),
                ratio(get(with, metric), get(without, metric)),
            ));
        }
        rows.push(Row::new(
            "  bare underlay, agents running",
            cell(Config::Underlay, metric, fmt),
            format!("before the agents started {}", cell(Config::Before, metric, fmt)),
            ratio(u, get(Config::Before, metric)),
        ));
    }
    let us = |c: Config| format!("{:.1} / {:.1} µs", get(c, Metric::RrP50), get(c, Metric::RrP99));
    for (config, what) in [
        (Config::Tunnel, "tunnel"),
        (Config::Native, "native"),
        (Config::TunnelPolicy, "tunnel + policy"),
        (Config::NativePolicy, "native + policy"),
    ] {
        rows.push(Row::new(
            format!("cross-node TCP_RR round trip p50 / p99, Twill {what}"),
            us(config),
            format!("bare underlay {}", us(Config::Underlay)),
            format!(
                "{} / {}",
                ratio(get(config, Metric::RrP50), get(Config::Underlay, Metric::RrP50)),
                ratio(get(config, Metric::RrP99), get(Config::Underlay, Metric::RrP99))
            ),
        ));
    }
    let retrans = |c: Config| format!("{:.0}", get(c, Metric::Retransmits));
    rows.push(Row::new(
        "cross-node iperf3 retransmits per run, tunnel / native",
        format!("{} / {}", retrans(Config::Tunnel), retrans(Config::Native)),
        format!("bare underlay {}", retrans(Config::Underlay)),
        "",
    ));
    rows.push(Row::new(
        "cross-node VXLAN bytes sent by node 0, tunnel rows",
        format!("{:.1} GB", vxlan_bytes as f64 / 1e9),
        mtus,
        "",
    ));
}
