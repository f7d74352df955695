//! The DNS proxy, in the agent as in Cilium: the datapath steers lookups
//! that policy entries with `rules.dns` cover to one transparent port
//! (UDP and TCP on 127.0.0.1); the engine (`twill-dnsproxy`) checks each
//! name against the sender's rules, forwards allowed ones to the server
//! the client asked and answers REFUSED to the rest.
//!
//! Every lookup is reported to one reporter thread, which turns it into
//! flows and metrics and hands the answers' addresses to the agent's
//! entry point ([`Change::DnsAnswers`]). An answer waits (at most
//! `--tofqdns-proxy-response-max-delay`) until that change is applied, so
//! a client connecting to the address right after the answer finds it
//! allowed. The same thread expires lapsed addresses.

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{mpsc, Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use hickory_proto::op::ResponseCode;
use tokio::sync::oneshot;
use tracing::{info, warn};
use twill_dnsproxy::{
    transparent::{self, TransparentUdp},
    Client, DnsObserver, DnsPolicy, Engine, EngineConfig, Exchange, Transport, Verdict,
};
use twill_observe::l7::{dns_flow, DnsEvent, L7Verdict};
use twill_policy::fqdn::Answer;
use twill_proxy::config::{identity_of, IpcacheEntry};

use crate::{
    agent::{Agent, Change},
    config::DnsProxyConfig,
    policy::redirects::DnsRedirect,
    proxy::FlowRecords,
};

/// Reports waiting for the reporter; past it, lookups still work but go
/// unreported (and answers do not wait).
const REPORT_QUEUE: usize = 8192;
/// How long an idle DNS-over-TCP connection stays open.
const TCP_IDLE: Duration = Duration::from_secs(10);
const MAX_TCP_CONNECTIONS: usize = 1024;

/// What the proxy needs from the agent's state, replaced whole on every
/// policy or endpoint change; lookups read a snapshot.
#[derive(Default)]
pub struct DnsView {
    /// Endpoint address → (endpoint id, identity).
    pub endpoints: HashMap<Ipv4Addr, (u64, u32)>,
    /// Endpoint id → its DNS redirects.
    pub rules: BTreeMap<u64, Vec<DnsRedirect>>,
    pub ipcache: Vec<IpcacheEntry>,
}

#[derive(Default)]
pub struct DnsTables(RwLock<Arc<DnsView>>);

impl DnsTables {
    pub fn replace(&self, view: DnsView) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }

    fn snapshot(&self) -> Arc<DnsView> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn identity_of(&self, ip: Ipv4Addr) -> u32 {
        identity_of(&self.snapshot().ipcache, ip)
    }
}

impl DnsPolicy for DnsTables {
    /// The engine does not say which transport a lookup came over; the
    /// datapath redirected it only if an entry covers its protocol, so the
    /// port and the server's identity decide here.
    fn allows(&self, client: &Client, server: SocketAddr, name: &str) -> bool {
        let SocketAddr::V4(server) = server else { return false };
        let view = self.snapshot();
        let identity = identity_of(&view.ipcache, *server.ip());
        view.rules
            .get(&client.endpoint)
            .into_iter()
            .flatten()
            .any(|r| r.covers(identity, 0, server.port()) && r.names.iter().any(|m| m.matches(name)))
    }
}

struct Report {
    exchange: Exchange,
    /// Completed once the agent has applied the answer's addresses.
    applied: Option<oneshot::Sender<()>>,
}

/// The addresses the agent has taken in, per endpoint and name, with a
/// time until which they certainly stay allowed: an answer that brings
/// nothing new (most of them) is not held back.
#[derive(Default)]
struct Applied(Mutex<HashMap<(u64, String), HashMap<std::net::IpAddr, Instant>>>);

/// Entries past which the table forgets lapsed ones.
const APPLIED_BOUND: usize = 65_536;

impl Applied {
    fn covers(&self, endpoint: u64, answers: &[Answer]) -> bool {
        let margin = Instant::now() + Duration::from_secs(2);
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        answers.iter().all(|a| {
            known
                .get(&(endpoint, a.name.clone()))
                .is_some_and(|ips| a.ips.iter().all(|ip| ips.get(ip).is_some_and(|until| *until > margin)))
        })
    }

    fn record(&self, endpoint: u64, answers: &[Answer], min_ttl: u32) {
        let now = Instant::now();
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() > APPLIED_BOUND {
            known.retain(|_, ips| {
                ips.retain(|_, until| *until > now);
                !ips.is_empty()
            });
        }
        for a in answers {
            let until = now + Duration::from_secs(u64::from(a.ttl.max(min_ttl)));
            let ips = known.entry((endpoint, a.name.clone())).or_default();
            for ip in &a.ips {
                let slot = ips.entry(*ip).or_insert(until);
                *slot = (*slot).max(until);
            }
        }
    }
}

struct Reports {
    tx: mpsc::SyncSender<Report>,
    applied: Arc<Applied>,
}

impl DnsObserver for Reports {
    fn exchange(&self, exchange: &Exchange) {
        let _ = self.tx.try_send(Report { exchange: exchange.clone(), applied: None });
    }

    fn answered(&self, exchange: &Exchange) -> Option<oneshot::Receiver<()>> {
        if self.applied.covers(exchange.client.endpoint, &exchange.answers) {
            self.exchange(exchange);
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.tx.try_send(Report { exchange: exchange.clone(), applied: Some(tx) }).ok()?;
        Some(rx)
    }
}

/// The running proxy: its runtime (one worker thread) and listeners.
pub struct DnsProxy {
    _runtime: tokio::runtime::Runtime,
}

/// The mark the datapath reads as "the proxy, for this identity".
fn upstream_mark(identity: u32) -> u32 {
    twill_abi::proxy_identity_mark(identity)
}

/// Starts the proxy on `config.port` and the reporter thread. Lookups
/// are judged against `tables`, which the agent keeps current.
pub fn start(
    config: &DnsProxyConfig,
    tables: Arc<DnsTables>,
    agent: Arc<Mutex<Agent>>,
    records: Arc<FlowRecords>,
) -> anyhow::Result<DnsProxy> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("dns-proxy")
        .enable_all()
        .build()?;
    let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, config.port);
    let (udp, tcp) =
        runtime.block_on(async { (TransparentUdp::bind(listen), transparent::bind_tcp(listen)) });
    let udp = udp.map_err(|e| anyhow::anyhow!("--tofqdns-proxy-port {}: UDP: {e}", config.port))?;
    let tcp = tcp.map_err(|e| anyhow::anyhow!("--tofqdns-proxy-port {}: TCP: {e}", config.port))?;
    let (tx, rx) = mpsc::sync_channel(REPORT_QUEUE);
    let min_ttl = config.min_ttl;
    let engine_config = EngineConfig {
        reject_rcode: if config.reject_name_error { ResponseCode::NXDomain } else { ResponseCode::Refused },
        answer_delay: config.response_max_delay,
        upstream_mark: Some(upstream_mark),
        ..EngineConfig::default()
    };
    let applied = Arc::new(Applied::default());
    let reports = Reports { tx, applied: applied.clone() };
    let engine = Arc::new(Engine::new(engine_config, tables.clone(), Arc::new(reports)));
    let clients: Arc<dyn transparent::ClientLookup> = {
        let tables = tables.clone();
        Arc::new(move |addr: SocketAddrV4| tables.snapshot().endpoints.get(addr.ip()).copied())
    };
    runtime.spawn({
        let (engine, clients) = (engine.clone(), clients.clone());
        async move {
            if let Err(e) = transparent::serve(engine, udp, clients).await {
                warn!("the DNS proxy's UDP socket failed: {e}");
            }
        }
    });
    runtime.spawn(async move {
        if let Err(e) = transparent::serve_tcp(engine, tcp, clients, MAX_TCP_CONNECTIONS, TCP_IDLE).await {
            warn!("the DNS proxy's TCP listener failed: {e}");
        }
    });
    std::thread::Builder::new()
        .name("dns-reporter".into())
        .spawn(move || report(rx, tables, agent, records, applied, min_ttl))?;
    info!(port = config.port, "DNS proxy listening");
    Ok(DnsProxy { _runtime: runtime })
}

/// Turns reports into flows and answers into changes, in batches: one
/// change per endpoint for every report waiting, so a burst of lookups
/// costs one policy update, not one each.
fn report(
    rx: mpsc::Receiver<Report>,
    tables: Arc<DnsTables>,
    agent: Arc<Mutex<Agent>>,
    records: Arc<FlowRecords>,
    applied: Arc<Applied>,
    min_ttl: u32,
) {
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(r) => Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let batch: Vec<Report> = first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())).collect();
        let mut answers: BTreeMap<u64, Vec<Answer>> = BTreeMap::new();
        let mut waiting = Vec::new();
        for r in batch {
            for event in events(&r.exchange, &tables) {
                records.push(&dns_flow(&event, &records.directory.read().unwrap_or_else(|p| p.into_inner())));
            }
            let ex = r.exchange;
            if ex.verdict == Verdict::Forwarded && !ex.answers.is_empty() {
                answers.entry(ex.client.endpoint).or_default().extend(ex.answers);
            }
            waiting.extend(r.applied);
        }
        let mut agent = agent.lock().unwrap_or_else(|p| p.into_inner());
        for (endpoint, answers) in answers {
            match agent.apply(Change::DnsAnswers { endpoint, answers: answers.clone() }) {
                Ok(_) => applied.record(endpoint, &answers, min_ttl),
                Err(e) => warn!("allowing the addresses of a DNS answer: {}", e.chain()),
            }
        }
        if agent.fqdn_due() {
            if let Err(e) = agent.apply(Change::FqdnExpire) {
                warn!("expiring DNS-learned addresses: {}", e.chain());
            }
        }
        drop(agent);
        for w in waiting {
            let _ = w.send(());
        }
    }
}

/// The query's flow and, but for a server that never answered, the
/// answer's.
fn events(ex: &Exchange, tables: &DnsTables) -> Vec<DnsEvent> {
    let (SocketAddr::V4(client), SocketAddr::V4(server)) = (ex.client.addr, ex.server) else { return vec![] };
    let verdict = match ex.verdict {
        Verdict::Forwarded => L7Verdict::Forwarded,
        Verdict::Denied => L7Verdict::Dropped,
    };
    let ips: Vec<String> = ex.answers.iter().flat_map(|a| a.ips.iter().map(|ip| ip.to_string())).collect();
    let ttl = ex.answers.iter().map(|a| a.ttl).min().unwrap_or(0);
    let mut rrtypes = Vec::new();
    for a in &ex.answers {
        for ip in &a.ips {
            let t = if ip.is_ipv4() { "A" } else { "AAAA" };
            if !rrtypes.iter().any(|r| r == t) {
                rrtypes.push(t.to_string());
            }
        }
    }
    if !ex.cnames.is_empty() {
        rrtypes.push("CNAME".into());
    }
    let query = DnsEvent {
        time: SystemTime::now() - ex.latency,
        response: false,
        verdict,
        udp: ex.transport == Transport::Udp,
        client,
        server,
        client_identity: ex.client.identity,
        server_identity: tables.identity_of(*server.ip()),
        query: ex.name.clone(),
        qtypes: vec![ex.qtype.to_string()],
        rcode: 0,
        ips: vec![],
        ttl: 0,
        cnames: vec![],
        rrtypes: vec![],
        latency_ns: 0,
    };
    let answer = DnsEvent {
        time: SystemTime::now(),
        response: true,
        rcode: u32::from(ex.rcode),
        ips,
        ttl,
        cnames: ex.cnames.clone(),
        rrtypes,
        latency_ns: ex.latency.as_nanos() as u64,
        ..query.clone()
    };
    vec![query, answer]
}

#[cfg(test)]
mod tests {
    use twill_policy::l7_dns::DnsMatch;

    use super::*;

    #[test]
    fn only_answers_with_something_new_wait_for_the_agent() {
        let applied = Applied::default();
        let answer = |ip: &str, ttl| Answer { name: "web.test.".into(), ips: vec![ip.parse().unwrap()], ttl };
        assert!(!applied.covers(7, &[answer("192.0.2.2", 60)]), "never seen");
        applied.record(7, &[answer("192.0.2.2", 60)], 0);
        assert!(applied.covers(7, &[answer("192.0.2.2", 60)]));
        assert!(!applied.covers(8, &[answer("192.0.2.2", 60)]), "another endpoint");
        assert!(!applied.covers(7, &[answer("192.0.2.3", 60)]), "a new address");
        applied.record(9, &[answer("192.0.2.2", 1)], 0);
        assert!(!applied.covers(9, &[answer("192.0.2.2", 1)]), "about to lapse: the agent must see it");
        applied.record(10, &[answer("192.0.2.2", 1)], 3600);
        assert!(applied.covers(10, &[answer("192.0.2.2", 1)]), "the minimum TTL keeps it");
    }

    #[test]
    fn a_lookup_is_allowed_by_the_senders_rule_for_that_server_and_port_only() {
        let tables = DnsTables::default();
        let server = Ipv4Addr::new(10, 0, 0, 53);
        tables.replace(DnsView {
            endpoints: HashMap::from([(Ipv4Addr::new(10, 0, 0, 2), (7, 300))]),
            rules: BTreeMap::from([(
                7,
                vec![DnsRedirect {
                    identity: 400,
                    protocol: 17,
                    port: 53,
                    port_prefix: 16,
                    names: vec![DnsMatch::Name("web.test.".into()), DnsMatch::Pattern("*.api.test.".into())],
                }],
            )]),
            ipcache: vec![IpcacheEntry { ip: server, prefix_len: 32, identity: 400 }],
        });
        let client = |endpoint| Client { endpoint, identity: 300, addr: "10.0.0.2:40000".parse().unwrap() };
        let at = |ip: Ipv4Addr, port| SocketAddr::V4(SocketAddrV4::new(ip, port));
        assert!(tables.allows(&client(7), at(server, 53), "web.test."));
        assert!(tables.allows(&client(7), at(server, 53), "x.api.test."));
        assert!(!tables.allows(&client(7), at(server, 53), "a.b.api.test."), "one label per *");
        assert!(!tables.allows(&client(7), at(server, 53), "other.test."));
        assert!(!tables.allows(&client(7), at(server, 5353), "web.test."), "another port");
        assert!(
            !tables.allows(&client(7), at(Ipv4Addr::new(10, 0, 0, 99), 53), "web.test."),
            "another server"
        );
        assert!(!tables.allows(&client(8), at(server, 53), "web.test."), "another endpoint");
    }
}
