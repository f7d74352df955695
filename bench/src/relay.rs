//! twill-relay: flows per second merged from 3 and 16 nodes, the latency
//! the relay adds to a follow stream, and its memory.
//!
//! The nodes are in-process fake Observer servers (and a fake peer
//! service announcing them) that stream synthetic flows as fast as the
//! relay takes them: what is measured is the relay, not the agents'
//! rings. The relay is the real `twill-relay` binary, pinned to CPU 0 with
//! `taskset`; the fakes and the client run pinned to CPU 1. Everything is
//! on 127.0.0.1. The reference for each number is the same client reading
//! one fake node directly, in the same run.

use std::{
    net::SocketAddr,
    pin::Pin,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use tokio_stream::{Stream, StreamExt};
use twill_observe_proto::{
    flow::{Endpoint, Flow, Ip, Verdict},
    observer::{self, get_flows_response::ResponseTypes, observer_client::ObserverClient, observer_server},
    peer::{self, peer_server, ChangeNotification, ChangeNotificationType},
    prost_types::Timestamp,
    tonic::{self, transport::Server, Request, Response, Status},
};

use crate::{percentile, thousands, Row};

/// Flows each fake node sends in a throughput run (bounded load).
const FLOWS_PER_NODE_3: u64 = 200_000;
const FLOWS_PER_NODE_16: u64 = 40_000;
/// Follow-mode pacing for the latency run: one flow per node per interval.
const PACE: Duration = Duration::from_millis(1);
const LATENCY_FLOWS: u64 = 3_000;

type Items<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn ts(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn synthetic(node: &str, i: u64, time: Timestamp) -> observer::GetFlowsResponse {
    let flow = Flow {
        time: Some(time),
        node_name: node.to_string(),
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: format!("10.200.{}.{}", (i >> 8) & 0xff, i & 0xff),
            destination: "10.200.0.1".into(),
            ip_version: 1,
            ..Default::default()
        }),
        source: Some(Endpoint {
            id: 1 + (i % 100) as u32,
            identity: 256 + (i % 20) as u32,
            namespace: "default".into(),
            labels: vec![format!("k8s:app=app{}", i % 20)],
            pod_name: format!("pod-{}", i % 100),
            ..Default::default()
        }),
        ..Default::default()
    };
    observer::GetFlowsResponse {
        response_types: Some(ResponseTypes::Flow(flow)),
        node_name: node.into(),
        time: Some(time),
    }
}

struct FakeNode {
    name: String,
    count: u64,
}

#[tonic::async_trait]
impl observer_server::Observer for FakeNode {
    type GetFlowsStream = Items<observer::GetFlowsResponse>;
    type GetAgentEventsStream = Items<observer::GetAgentEventsResponse>;
    type GetDebugEventsStream = Items<observer::GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        request: Request<observer::GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let name = self.name.clone();
        let count = self.count;
        if request.into_inner().follow {
            // Paced, stamped when sent: the latency run.
            let stream = tokio_stream::iter(0..LATENCY_FLOWS)
                .throttle(PACE)
                .map(move |i| Ok(synthetic(&name, i, ts(SystemTime::now()))));
            return Ok(Response::new(Box::pin(stream)));
        }
        // Back to back, each node in its own time order.
        let base = ts(SystemTime::now());
        let stream = tokio_stream::iter(0..count).map(move |i| {
            let nanos = base.nanos as u64 + i * 1_000;
            let t = Timestamp {
                seconds: base.seconds + (nanos / 1_000_000_000) as i64,
                nanos: (nanos % 1_000_000_000) as i32,
            };
            Ok(synthetic(&name, i, t))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_agent_events(
        &self,
        _: Request<observer::GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented("fake node"))
    }

    async fn get_debug_events(
        &self,
        _: Request<observer::GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("fake node"))
    }

    async fn get_nodes(
        &self,
        _: Request<observer::GetNodesRequest>,
    ) -> Result<Response<observer::GetNodesResponse>, Status> {
        Err(Status::unimplemented("fake node"))
    }

    async fn get_namespaces(
        &self,
        _: Request<observer::GetNamespacesRequest>,
    ) -> Result<Response<observer::GetNamespacesResponse>, Status> {
        Ok(Response::new(observer::GetNamespacesResponse::default()))
    }

    async fn server_status(
        &self,
        _: Request<observer::ServerStatusRequest>,
    ) -> Result<Response<observer::ServerStatusResponse>, Status> {
        Ok(Response::new(observer::ServerStatusResponse { version: "fake".into(), ..Default::default() }))
    }
}

struct FakePeers(Vec<(String, SocketAddr)>);

#[tonic::async_trait]
impl peer_server::Peer for FakePeers {
    type NotifyStream = Items<ChangeNotification>;

    async fn notify(&self, _: Request<peer::NotifyRequest>) -> Result<Response<Self::NotifyStream>, Status> {
        let added: Vec<_> = self
            .0
            .iter()
            .map(|(name, addr)| {
                Ok(ChangeNotification {
                    name: name.clone(),
                    address: addr.to_string(),
                    r#type: ChangeNotificationType::PeerAdded as i32,
                    tls: None,
                })
            })
            .collect();
        // Held open: an ended stream would make the relay reconnect.
        Ok(Response::new(Box::pin(tokio_stream::iter(added).chain(tokio_stream::pending()))))
    }
}

async fn listener() -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// Starts `n` fake nodes and a peer service announcing them.
async fn fakes(n: usize, count: u64) -> anyhow::Result<(SocketAddr, Vec<SocketAddr>)> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let (l, addr) = listener().await?;
        let node = FakeNode { name: format!("bench-node-{i}"), count };
        tokio::spawn(
            Server::builder()
                .add_service(observer_server::ObserverServer::new(node))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        nodes.push((format!("bench-node-{i}"), addr));
    }
    let (l, peers) = listener().await?;
    let addrs = nodes.iter().map(|(_, a)| *a).collect();
    tokio::spawn(
        Server::builder()
            .add_service(peer_server::PeerServer::new(FakePeers(nodes)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    Ok((peers, addrs))
}

/// The relay binary pinned to CPU 0, killed on drop.
struct Relay {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    async fn start(peers: SocketAddr, nodes: usize) -> anyhow::Result<Relay> {
        let (l, addr) = listener().await?;
        drop(l);
        // The relay built with this benchmark (a release benchmark runs a
        // release relay), else the harness's binaries.
        let beside = std::env::current_exe()?.with_file_name("twill-relay");
        let bin = if beside.exists() { beside } else { twill_e2e::bin_dir().join("twill-relay") };
        let child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(&bin)
            .args(["--peer-service", &peers.to_string(), "--listen-address", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let relay = Relay { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = ObserverClient::connect(format!("http://{addr}")).await {
                if let Ok(s) = c.server_status(observer::ServerStatusRequest {}).await {
                    if s.into_inner().num_connected_nodes == Some(nodes as u32) {
                        return Ok(relay);
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("relay at {addr} did not connect to {nodes} fake nodes within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

fn rss_kib(pid: u32) -> u64 {
    // taskset execs the relay, so the pid is the relay's.
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

/// Reads a whole GetFlows answer from `addr`: flows received, time taken.
async fn drain(addr: SocketAddr) -> anyhow::Result<(u64, Duration)> {
    let mut c = ObserverClient::connect(format!("http://{addr}")).await?;
    let start = Instant::now();
    let mut stream = c.get_flows(observer::GetFlowsRequest::default()).await?.into_inner();
    let mut flows = 0u64;
    while let Some(r) = stream.message().await? {
        if matches!(r.response_types, Some(ResponseTypes::Flow(_))) {
            flows += 1;
        }
    }
    Ok((flows, start.elapsed()))
}

/// Follows `addr` until `want` flows arrived: each flow's delay from its
/// send stamp at the node to its arrival here, sorted, and the arrival
/// rate (flows per second).
async fn follow_latency(addr: SocketAddr, want: u64) -> anyhow::Result<(Vec<Duration>, f64)> {
    let mut c = ObserverClient::connect(format!("http://{addr}")).await?;
    let req = observer::GetFlowsRequest { follow: true, ..Default::default() };
    let mut stream = c.get_flows(req).await?.into_inner();
    let mut delays = Vec::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    while (delays.len() as u64) < want && Instant::now() < deadline {
        let Some(r) =
            tokio::time::timeout(Duration::from_secs(5), stream.message()).await.ok().transpose()?.flatten()
        else {
            break;
        };
        let Some(ResponseTypes::Flow(f)) = r.response_types else { continue };
        let t = f.time.context("flow without time")?;
        let sent = UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32);
        delays.push(SystemTime::now().duration_since(sent).unwrap_or_default());
    }
    delays.sort();
    if delays.is_empty() {
        bail!("no flows followed from {addr}");
    }
    let per_second = rate(delays.len() as u64, start.elapsed());
    Ok((delays, per_second))
}

fn pin_to_cpu(cpu: usize) {
    // The fakes and the client stay off the relay's core.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

pub fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    pin_to_cpu(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        for (nodes, per_node) in [(3usize, FLOWS_PER_NODE_3), (16, FLOWS_PER_NODE_16)] {
            let (peers, addrs) = fakes(nodes, per_node).await?;
            let relay = Relay::start(peers, nodes).await?;
            let idle = relay.rss_kib();
            let (direct_n, direct_t) = drain(addrs[0]).await?;
            let pid = relay.child.id();
            let sampler = std::thread::spawn(move || {
                let mut peak = 0;
                let stop = Instant::now() + Duration::from_secs(120);
                while Instant::now() < stop {
                    let r = rss_kib(pid);
                    if r == 0 {
                        break;
                    }
                    peak = peak.max(r);
                    if std::path::Path::new(&format!("/tmp/twill-bench-relay-done-{pid}")).exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            });
            let (relayed_n, relayed_t) = drain(relay.addr).await?;
            let marker = format!("/tmp/twill-bench-relay-done-{pid}");
            std::fs::write(&marker, b"")?;
            let peak = sampler.join().unwrap_or(0);
            let _ = std::fs::remove_file(&marker);
            if relayed_n != nodes as u64 * per_node {
                bail!("relay passed {relayed_n} of {} flows", nodes as u64 * per_node);
            }
            let through = rate(relayed_n, relayed_t);
            let direct = rate(direct_n, direct_t);
            rows.push(Row::new(
                format!("relay GetFlows merged from {nodes} fake nodes, relay on 1 core"),
                format!("{} flows/s", thousands(through as u64)),
                format!("{} flows/s one node direct", thousands(direct as u64)),
                format!("{:.2}x", through / direct),
            ));
            if nodes == 16 {
                rows.push(Row::new(
                    "relay RSS, 16 nodes connected, idle",
                    format!("{:.1} MiB", idle as f64 / 1024.0),
                    String::new(),
                    String::new(),
                ));
                rows.push(Row::new(
                    "relay RSS peak, 16 nodes streaming",
                    format!("{:.1} MiB", peak as f64 / 1024.0),
                    format!("{:.1} MiB idle", idle as f64 / 1024.0),
                    format!("{:.2}x", peak as f64 / idle.max(1) as f64),
                ));
            }
            if nodes == 3 {
                let (direct, _) = follow_latency(addrs[0], LATENCY_FLOWS / 2).await?;
                let (relayed, arriving) = follow_latency(relay.addr, LATENCY_FLOWS).await?;
                for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
                    let (r, d) = (percentile(&relayed, p), percentile(&direct, p));
                    rows.push(Row::new(
                        format!(
                            "follow latency node -> client {name}, 3 nodes paced 1 ms apart ({} flows/s)",
                            thousands(arriving as u64)
                        ),
                        format!("{:.2} ms via relay", r.as_secs_f64() * 1e3),
                        format!("{:.3} ms direct", d.as_secs_f64() * 1e3),
                        format!("{:.0}x", r.as_secs_f64() / d.as_secs_f64().max(1e-9)),
                    ));
                }
            }
        }
        Ok(())
    })
}
