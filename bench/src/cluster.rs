//! Cluster mode's control plane (issue 11): how fast an endpoint's address
//! reaches every other node's ipcache, identity allocation with many nodes
//! racing, one etcd under 1,000 simulated nodes, and what a remote endpoint
//! costs an agent in memory.
//!
//! Real agents run in namespaces on the e2e harness's fabric, with etcd in
//! a namespace of its own; the store-only measurements use a private etcd
//! on 127.0.0.1 with its own data dir. Everything goes on drop, also when
//! a measurement fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Barrier,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Map, MapData,
};
use twill_abi::IpcacheValue;
use twill_agent::cluster::{
    keys::{self, IpRecord, NodeRecord},
    mirror::{self, Health, Kind, Update},
    STORE_PREFIX,
};
use twill_api::{Client, Endpoint, Request};
use twill_e2e::cluster::{Cluster, ClusterNode};
use twill_identity::{IdentityAllocator, LabelSet};
use twill_store::{EtcdOptions, EtcdStore, Session, Store};

use crate::{percentile, rss_kib, thousands, Row};

const CLUSTER: &str = "default";
const NODES: usize = 16;
const CREATES: usize = 100;
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(10);
const ALLOCATIONS: usize = 200;
const ENDPOINTS_PER_NODE: usize = 30;
/// Store connections the simulated nodes share: one per node would be a
/// thousand sockets and two thousand runtime threads in this process.
const WRITERS: usize = 50;
/// Agents watching during the load, each with its own connection and the
/// agent's mirror, as many as two cores keep up with next to etcd.
const OBSERVERS: usize = 50;
const REMOTE_ENDPOINTS: usize = 10_000;
const REMOTE_WRITERS: usize = 32;

pub fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("twill-bench: cluster: ipcache propagation across {NODES} agents");
    propagation(rows)?;
    eprintln!("twill-bench: cluster: identity allocation, {NODES} nodes at once");
    identities(rows)?;
    eprintln!("twill-bench: cluster: one etcd under 250 and 1,000 simulated nodes");
    let small = scale(250)?;
    let large = scale(1000)?;
    scale_rows(&small, &large, rows);
    eprintln!("twill-bench: cluster: agent memory per remote endpoint");
    remote_memory(rows)
}

fn ms(d: Duration) -> String {
    crate::fmt_duration(d)
}

/// Joins the next harness node in tunnel mode at 192.168.k.(10+i).
fn join(cluster: &mut Cluster) -> &mut ClusterNode {
    let node_ip = format!("192.168.{}.{}", cluster.fabric.subnet(), 10 + cluster.nodes.len());
    cluster.add_node(&["--kvstore-endpoints", "{etcd}", "--node-ip", &node_ip, "--routing-mode", "tunnel"])
}

/// A node's pinned ipcache, opened from bpffs as any reader could.
fn open_ipcache(node: &ClusterNode) -> anyhow::Result<LpmTrie<MapData, u32, IpcacheValue>> {
    let pin = node.bpf_root.join("twill_ipcache");
    let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
    Ok(LpmTrie::try_from(Map::LpmTrie(data))?)
}

/// Whether the trie maps `ip` (as a /32) to `identity` behind `tunnel`.
/// The lookup is longest-prefix, so the value is checked, not just found.
fn holds(trie: &LpmTrie<MapData, u32, IpcacheValue>, ip: Ipv4Addr, identity: u32, tunnel: Ipv4Addr) -> bool {
    trie.get(&Key::new(32, u32::from(ip).to_be()), 0)
        .is_ok_and(|v| v.identity == identity && v.tunnel_endpoint == u32::from(tunnel).to_be())
}

/// Whether `ip` is in the map as another node's address (whatever the
/// node's identity: remote-node, or its node-label identity).
fn knows_node(trie: &LpmTrie<MapData, u32, IpcacheValue>, ip: Ipv4Addr) -> bool {
    trie.get(&Key::new(32, u32::from(ip).to_be()), 0).is_ok_and(|v| v.flags & twill_abi::IPCACHE_F_NODE != 0)
}

fn entry_count(trie: &LpmTrie<MapData, u32, IpcacheValue>) -> usize {
    trie.keys().filter(Result::is_ok).count()
}

fn ep_ip(ep: &Endpoint) -> anyhow::Result<Ipv4Addr> {
    let ip = ep.ipv4.split('/').next().unwrap_or_default();
    ip.parse().with_context(|| format!("endpoint {} has address {:?}", ep.name, ep.ipv4))
}

fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(start.elapsed())
}

/// 16 agents; each create on one node (in turn), timed until the address
/// is in the pinned ipcache of all 15 others.
fn propagation(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut cluster = Cluster::new("bcpprop");
    for _ in 0..NODES {
        join(&mut cluster);
    }
    let tries = cluster.nodes.iter().map(open_ipcache).collect::<anyhow::Result<Vec<_>>>()?;
    let node_ips: Vec<Ipv4Addr> =
        cluster.nodes.iter().map(|n| n.node_ip().parse()).collect::<Result<_, _>>()?;
    // Every node knows every other before the clock starts, so what is
    // timed is one endpoint's way through etcd, not the cluster forming.
    let formed = wait_for(Duration::from_secs(60), "every node sees every other", || {
        tries
            .iter()
            .enumerate()
            .all(|(i, t)| node_ips.iter().enumerate().all(|(j, ip)| i == j || knows_node(t, *ip)))
    });
    if let Err(e) = formed {
        bail!("{e}; node 0's log:\n{}", cluster.nodes[0].agent_log());
    }

    let clients: Vec<Client> = cluster.nodes.iter().map(|n| Client::new(&n.socket)).collect();
    let mut after_return = Vec::with_capacity(CREATES);
    let mut from_start = Vec::with_capacity(CREATES);
    let mut missed = 0;
    for i in 0..CREATES {
        let origin = i % NODES;
        let start = Instant::now();
        let ep: Endpoint = clients[origin].call(&Request::EndpointCreate {
            name: format!("prop{i}"),
            namespace: "default".into(),
            labels: vec![format!("app=prop{}", i % 10)],
            ports: vec![],
        })?;
        let returned = Instant::now();
        let ip = ep_ip(&ep)?;
        let mut pending: Vec<usize> = (0..NODES).filter(|n| *n != origin).collect();
        let deadline = returned + PROPAGATION_DEADLINE;
        // A 1 ms nap between rounds: a spinning reader would take a core
        // from the agents and etcd it is timing, on a 2-core machine.
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|n| !holds(&tries[*n], ip, ep.identity, node_ips[origin]));
            if !pending.is_empty() {
                thread::sleep(Duration::from_millis(1));
            }
        }
        if pending.is_empty() {
            let seen = Instant::now();
            after_return.push(seen - returned);
            from_start.push(seen - start);
        } else {
            missed += 1;
            eprintln!("twill-bench: prop{i} ({ip}) missing on {} nodes after 10 s", pending.len());
        }
    }
    for i in 0..CREATES {
        clients[i % NODES]
            .call_value(&Request::EndpointDelete { name: format!("prop{i}"), namespace: "default".into() })?;
    }
    if after_return.is_empty() {
        bail!("no endpoint reached every node within {PROPAGATION_DEADLINE:?}");
    }
    after_return.sort();
    from_start.sort();
    let p99 = percentile(&after_return, 0.99);
    rows.push(Row::new(
        format!("ipcache propagation to {} nodes, p50 / p99 after create returned", NODES - 1),
        format!("{} / {}", ms(percentile(&after_return, 0.5)), ms(p99)),
        "goal p99 <= 1 s",
        format!("{:.2}", p99.as_secs_f64()),
    ));
    rows.push(Row::new(
        "ipcache propagation, p50 / p99 from create call start",
        format!("{} / {}", ms(percentile(&from_start, 0.5)), ms(percentile(&from_start, 0.99))),
        format!("{CREATES} creates rotating over {NODES} nodes; {missed} missed 10 s"),
        "",
    ));
    Ok(())
}

/// etcd on 127.0.0.1 with its own data dir, killed and removed on drop.
struct LocalEtcd {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl LocalEtcd {
    fn start(port: u16) -> anyhow::Result<LocalEtcd> {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            bail!("127.0.0.1:{port} is taken; the bench's private etcd needs it");
        }
        let dir = std::env::temp_dir().join(format!("twill-bench-etcd-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", port + 1);
        let log = std::fs::File::create(dir.with_extension("log"))?;
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(&dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("bench={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting etcd (scripts/setup.sh installs it)")?;
        let etcd = LocalEtcd { child: Some(child), dir, port };
        wait_for(Duration::from_secs(30), "private etcd answers", || etcd.connect().is_ok())?;
        Ok(etcd)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connect(&self) -> anyhow::Result<Arc<EtcdStore>> {
        Ok(Arc::new(EtcdStore::connect(EtcdOptions {
            endpoints: vec![self.endpoint()],
            prefix: STORE_PREFIX.into(),
            timeout: Duration::from_secs(10),
            ..EtcdOptions::default()
        })?))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn db_bytes(&self) -> u64 {
        std::fs::metadata(self.dir.join("member/snap/db")).map_or(0, |m| m.len())
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("log"));
    }
}

struct Allocations {
    wall: Duration,
    latencies: Vec<Duration>,
    /// (node, labels, number) for every allocation that succeeded.
    got: Vec<(usize, String, u32)>,
    failed: Vec<String>,
}

/// `nodes` simulated agents, each with its own connection, session and
/// allocator, allocating ALLOCATIONS new label sets at once; every other
/// one is the same on all nodes, in the same order, so they race.
fn allocate(etcd: &LocalEtcd, run: &str, nodes: usize) -> anyhow::Result<Allocations> {
    let stores = (0..nodes).map(|_| etcd.connect()).collect::<anyhow::Result<Vec<_>>>()?;
    let start = Arc::new(Barrier::new(nodes + 1));
    let handles: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(node, store)| {
            let start = start.clone();
            let run = run.to_string();
            thread::spawn(move || -> anyhow::Result<_> {
                let store: Arc<dyn Store> = store;
                let session = Session::start(store.clone(), Duration::from_secs(30))?;
                let allocator = IdentityAllocator::with_session(store.clone(), session.clone());
                let mut latencies = Vec::new();
                let mut got = Vec::new();
                let mut failed = Vec::new();
                start.wait();
                for j in 0..ALLOCATIONS {
                    let labels = if j % 2 == 0 {
                        format!("bench={run},shared={j}")
                    } else {
                        format!("bench={run},node=n{node},own={j}")
                    };
                    let set = LabelSet::parse_list([labels.as_str()])?;
                    let begun = Instant::now();
                    match allocator.acquire(&set, &format!("n{node}/ep{j}")) {
                        Ok(identity) => {
                            latencies.push(begun.elapsed());
                            got.push((node, labels, identity.id));
                        }
                        Err(e) => failed.push(format!("{labels}: {e}")),
                    }
                }
                session.close();
                drop(allocator);
                Ok((latencies, got, failed))
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut out =
        Allocations { wall: Duration::ZERO, latencies: Vec::new(), got: Vec::new(), failed: Vec::new() };
    for h in handles {
        let (latencies, got, failed) =
            h.join().map_err(|_| anyhow::anyhow!("allocator thread panicked"))??;
        out.latencies.extend(latencies);
        out.got.extend(got);
        out.failed.extend(failed);
    }
    out.wall = began.elapsed();
    out.latencies.sort();
    Ok(out)
}

/// Same labels, same number on every node; different labels, different numbers.
fn check_consistent(a: &Allocations) -> anyhow::Result<()> {
    let mut by_labels: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for (_, labels, id) in &a.got {
        by_labels.entry(labels).or_default().insert(*id);
    }
    let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
    for (labels, ids) in &by_labels {
        if ids.len() != 1 {
            bail!("labels {labels} got different numbers on different nodes: {ids:?}");
        }
        let id = *ids.iter().next().unwrap();
        if let Some(other) = owner.insert(id, labels) {
            bail!("identity {id} was given to both {other} and {labels}");
        }
    }
    Ok(())
}

fn identities(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let etcd = LocalEtcd::start(23790)?;
    let single = allocate(&etcd, "single", 1)?;
    let many = allocate(&etcd, "many", NODES)?;
    check_consistent(&single)?;
    check_consistent(&many)?;
    let rate = |a: &Allocations| a.got.len() as f64 / a.wall.as_secs_f64();
    let p99 =
        |a: &Allocations| a.latencies.first().map_or(Duration::ZERO, |_| percentile(&a.latencies, 0.99));
    for f in many.failed.iter().chain(&single.failed).take(3) {
        eprintln!("twill-bench: allocation failed: {f}");
    }
    rows.push(Row::new(
        format!("identity allocations, {NODES} nodes x {ALLOCATIONS} at once (half shared)"),
        format!("{:.0}/s", rate(&many)),
        format!("1 node: {:.0}/s", rate(&single)),
        format!("{:.2}", rate(&many) / rate(&single)),
    ));
    rows.push(Row::new(
        "identity allocation p99 latency",
        ms(p99(&many)),
        format!("1 node: {}", ms(p99(&single))),
        format!("{:.1}", p99(&many).as_secs_f64() / p99(&single).as_secs_f64()),
    ));
    rows.push(Row::new(
        "identity allocations that gave up (Contended/errors)",
        format!("{} of {}", many.failed.len(), NODES * ALLOCATIONS),
        format!("1 node: {} of {ALLOCATIONS}; numbers consistent across nodes", single.failed.len()),
        "",
    ));
    Ok(())
}

/// What one observer's mirrors have seen.
#[derive(Default)]
struct Seen {
    ips: AtomicU64,
    events: AtomicU64,
}

struct Scale {
    nodes: usize,
    writes: u64,
    load: Duration,
    convergence: Duration,
    events_per_watcher: u64,
    etcd_rss_kib: u64,
    db_bytes: u64,
}

/// `nodes` simulated nodes, each a lease, a node record and
/// ENDPOINTS_PER_NODE IP records as agents write them, against one etcd
/// that OBSERVERS agents' mirrors watch.
fn scale(nodes: usize) -> anyhow::Result<Scale> {
    // A port per size: the mirrors of a finished size live on and retry
    // their etcd, and must not find the next one.
    let etcd = LocalEtcd::start(if nodes == 1000 { 23794 } else { 23792 })?;
    let total_ips = (nodes * ENDPOINTS_PER_NODE) as u64;
    let health = Arc::new(Health::default());
    let mut seen = Vec::new();
    for _ in 0..OBSERVERS {
        let store: Arc<dyn Store> = etcd.connect()?;
        let s = Arc::new(Seen::default());
        for (kind, prefix) in
            [(Kind::Ips, keys::ips_prefix(CLUSTER)), (Kind::Nodes, keys::nodes_prefix(CLUSTER))]
        {
            let s = s.clone();
            mirror::spawn(store.clone(), kind, prefix, health.clone(), move |batch| {
                let (count, events) = match &batch.update {
                    Update::Resync(all) => (Some(all.len() as u64), all.len() as u64),
                    Update::Changes(changes) => (None, changes.len() as u64),
                };
                s.events.fetch_add(events, Ordering::Relaxed);
                if kind != Kind::Ips {
                    return;
                }
                // Each key is written once during the load, so a count of
                // puts is the number of distinct addresses seen.
                match (count, &batch.update) {
                    (Some(n), _) => s.ips.store(n, Ordering::Relaxed),
                    (None, Update::Changes(changes)) => {
                        let puts = changes.iter().filter(|(_, v)| v.is_some()).count() as u64;
                        let deletes = changes.len() as u64 - puts;
                        s.ips.fetch_add(puts, Ordering::Relaxed);
                        s.ips.fetch_sub(deletes, Ordering::Relaxed);
                    }
                    _ => {}
                }
            })?;
        }
        seen.push(s);
    }
    // The mirrors have listed (and are watching) before any write.
    wait_for(Duration::from_secs(30), "observers listed", || health.revision() > 0)?;
    thread::sleep(Duration::from_millis(200));
    for s in &seen {
        s.events.store(0, Ordering::Relaxed);
    }

    let writers = (0..WRITERS).map(|_| etcd.connect()).collect::<anyhow::Result<Vec<_>>>()?;
    let writes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, store)| {
            let writes = writes.clone();
            thread::spawn(move || -> anyhow::Result<()> {
                for n in (w..nodes).step_by(WRITERS) {
                    simulate_node(store.as_ref(), n, &writes)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    let load = start.elapsed();
    let converged = wait_for(Duration::from_secs(120), "every observer saw every address", || {
        seen.iter().all(|s| s.ips.load(Ordering::Relaxed) >= total_ips)
    });
    let convergence = start.elapsed();
    if let Err(e) = converged {
        let least = seen.iter().map(|s| s.ips.load(Ordering::Relaxed)).min().unwrap_or(0);
        bail!("{e} (the slowest saw {least} of {total_ips})");
    }
    // Node records may trail the last address by a moment; events are
    // counted once both prefixes are quiet.
    thread::sleep(Duration::from_millis(300));
    let events: u64 = seen.iter().map(|s| s.events.load(Ordering::Relaxed)).sum();
    Ok(Scale {
        nodes,
        writes: writes.load(Ordering::Relaxed),
        load,
        convergence,
        events_per_watcher: events / OBSERVERS as u64,
        etcd_rss_kib: rss_kib(etcd.pid()),
        db_bytes: etcd.db_bytes(),
    })
}

/// Node `n`: 172.16.x.y on 10.(64+x).y.0/24, as a joining agent writes it.
fn simulate_node(store: &dyn Store, n: usize, writes: &AtomicU64) -> anyhow::Result<()> {
    let (hi, lo) = ((n / 256) as u8, (n % 256) as u8);
    let name = format!("sim{n}");
    let node_ip = Ipv4Addr::new(172, 16, hi, lo);
    // Long enough to outlast the run without keep-alives; etcd goes after.
    let lease = store.grant_lease(Duration::from_secs(600))?;
    let record = NodeRecord {
        name: name.clone(),
        cluster: CLUSTER.into(),
        node_ip,
        pod_cidr: format!("10.{}.{lo}.0/24", 64 + hi),
        routing_mode: "tunnel".into(),
        labels: BTreeMap::new(),
        heartbeat: 0,
        lease_ttl: 600,
        hubble_address: String::new(),
        hubble_tls: false,
        identity: 0,
    };
    store.put_leased(&keys::node_key(CLUSTER, &name), &serde_json::to_string(&record)?, lease)?;
    writes.fetch_add(1, Ordering::Relaxed);
    for e in 0..ENDPOINTS_PER_NODE {
        let ip = Ipv4Addr::new(10, 64 + hi, lo, 2 + e as u8);
        let record = IpRecord {
            ip,
            identity: 256 + (e % 10) as u32,
            node: name.clone(),
            node_ip,
            name: format!("pod{e}"),
            namespace: "default".into(),
            labels: BTreeMap::from([("app".to_string(), format!("app{}", e % 10))]),
            named_ports: BTreeMap::new(),
        };
        store.put_leased(&keys::ip_key(CLUSTER, ip), &serde_json::to_string(&record)?, lease)?;
        writes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn scale_rows(small: &Scale, large: &Scale, rows: &mut Vec<Row>) {
    for s in [small, large] {
        let n = thousands(s.nodes as u64);
        rows.push(Row::new(
            format!("{n} sim. nodes x {ENDPOINTS_PER_NODE} endpoints: etcd writes/s ({WRITERS} clients)"),
            format!("{:.0}/s", s.writes as f64 / s.load.as_secs_f64()),
            format!("{} writes in {:.2} s", thousands(s.writes), s.load.as_secs_f64()),
            "",
        ));
        rows.push(Row::new(
            format!("{n} sim. nodes: all {OBSERVERS} watchers have every IP"),
            format!("{:.2} s", s.convergence.as_secs_f64()),
            format!("{} watch events per watcher", thousands(s.events_per_watcher)),
            "",
        ));
        rows.push(Row::new(
            format!("{n} sim. nodes: etcd RSS / db file"),
            format!("{:.1} MiB / {:.1} MiB", s.etcd_rss_kib as f64 / 1024.0, s.db_bytes as f64 / 1048576.0),
            "",
            "",
        ));
    }
    let growth = |f: &dyn Fn(&Scale) -> f64| (f(large) - f(small)) / (large.nodes - small.nodes) as f64;
    rows.push(Row::new(
        "etcd growth per simulated node (250 -> 1,000): RSS / db",
        format!(
            "{:.1} KiB / {:.1} KiB",
            growth(&|s| s.etcd_rss_kib as f64),
            growth(&|s| s.db_bytes as f64 / 1024.0)
        ),
        format!("{OBSERVERS} watchers, each sees every write"),
        "",
    ));
}

/// Runs `f` on a thread inside the named network namespace; sockets and
/// threads made there (an EtcdStore's runtime) keep that namespace.
pub(crate) fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{netns}");
    thread::spawn(move || {
        let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns(2) on this thread only, with a namespace fd we hold.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {netns} panicked"))?
}

/// The pid of the agent serving `socket` (nsenter execs it, so it is the
/// harness's child, which the harness keeps to itself).
fn agent_pid(socket: &Path) -> anyhow::Result<u32> {
    let wanted = socket.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let mut args = cmdline.split(|b| *b == 0);
        let is_agent = args.next().is_some_and(|a| a.ends_with(b"twill-agent"));
        if is_agent && cmdline.split(|b| *b == 0).any(|a| a == wanted) {
            return Ok(pid);
        }
    }
    bail!("no twill-agent serving {}", socket.display())
}

/// One real agent; 10,000 IP records of a fake remote node written into
/// etcd directly; RSS before and once its ipcache holds them all; then
/// the remote node's lease revoked and the ipcache checked empty again.
fn remote_memory(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut cluster = Cluster::new("bcpmem");
    join(&mut cluster);
    let node = &cluster.nodes[0];
    let pid = agent_pid(&node.socket)?;
    let trie = open_ipcache(node)?;
    let endpoint = cluster.etcd.endpoint();
    let store: Arc<EtcdStore> = in_netns(cluster.etcd.netns(), move || {
        Ok(Arc::new(EtcdStore::connect(EtcdOptions {
            endpoints: vec![endpoint],
            prefix: STORE_PREFIX.into(),
            timeout: Duration::from_secs(10),
            ..EtcdOptions::default()
        })?))
    })?;
    thread::sleep(Duration::from_millis(500));
    let baseline = entry_count(&trie);
    let before = rss_kib(pid);

    let remote_ip = Ipv4Addr::new(192, 168, cluster.fabric.subnet(), 250);
    let lease = store.grant_lease(Duration::from_secs(600))?;
    let record = NodeRecord {
        name: "bench-remote".into(),
        cluster: CLUSTER.into(),
        node_ip: remote_ip,
        pod_cidr: "10.240.0.0/16".into(),
        routing_mode: "tunnel".into(),
        labels: BTreeMap::new(),
        heartbeat: 0,
        lease_ttl: 600,
        hubble_address: String::new(),
        hubble_tls: false,
        identity: 0,
    };
    store.put_leased(&keys::node_key(CLUSTER, "bench-remote"), &serde_json::to_string(&record)?, lease)?;
    let start = Instant::now();
    // Many requests in flight: etcd commits them in shared fsyncs.
    let handles: Vec<_> = (0..REMOTE_WRITERS)
        .map(|w| {
            let store = store.clone();
            thread::spawn(move || -> anyhow::Result<()> {
                for e in (w..REMOTE_ENDPOINTS).step_by(REMOTE_WRITERS) {
                    let ip = Ipv4Addr::new(10, 240, (e / 250) as u8, 2 + (e % 250) as u8);
                    let record = IpRecord {
                        ip,
                        identity: 256 + (e % 50) as u32,
                        node: "bench-remote".into(),
                        node_ip: remote_ip,
                        name: format!("pod{e}"),
                        namespace: "default".into(),
                        labels: BTreeMap::from([("app".to_string(), format!("app{}", e % 50))]),
                        named_ports: BTreeMap::new(),
                    };
                    store.put_leased(&keys::ip_key(CLUSTER, ip), &serde_json::to_string(&record)?, lease)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    let written = start.elapsed();
    // The remote node brings its own address and router as well.
    let full = baseline + REMOTE_ENDPOINTS + 2;
    wait_for(Duration::from_secs(60), "the agent's ipcache holds every remote endpoint", || {
        entry_count(&trie) >= full
    })?;
    let filled = start.elapsed();
    thread::sleep(Duration::from_millis(300));
    let after = rss_kib(pid);

    store.revoke_lease(lease)?;
    let emptied = wait_for(Duration::from_secs(30), "the ipcache is back to its own entries", || {
        entry_count(&trie) <= baseline
    })?;
    let per = (after as f64 - before as f64) * 1024.0 / REMOTE_ENDPOINTS as f64;
    rows.push(Row::new(
        format!("agent RSS per remote endpoint ({} via etcd)", thousands(REMOTE_ENDPOINTS as u64)),
        format!("{per:.0} bytes"),
        format!("{:.1} -> {:.1} MiB", before as f64 / 1024.0, after as f64 / 1024.0),
        "",
    ));
    rows.push(Row::new(
        format!(
            "{} remote endpoints: written / in the ipcache / gone after lease revoke",
            thousands(REMOTE_ENDPOINTS as u64)
        ),
        format!(
            "{:.2} s / {:.2} s / {:.2} s",
            written.as_secs_f64(),
            filled.as_secs_f64(),
            emptied.as_secs_f64()
        ),
        format!("ipcache {baseline} -> {full} -> {} entries", entry_count(&trie)),
        "",
    ));
    // The store's runtime threads are in etcd's namespace; it goes first.
    drop(store);
    Ok(())
}
