//! The engine: one query in, a verdict, and (when allowed) the real
//! server's answer out. It holds no lock on the query path: the rules are
//! an immutable snapshot swapped whole, counters are atomics, the bound on
//! queries in flight is a semaphore, and each forwarded query has its own
//! upstream socket (so answers need no demultiplexing table, and the
//! random source port each one gets is the spoofing defence resolvers
//! rely on).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use twill_policy::fqdn::{Answer, EndpointId};
use twill_policy::l7_dns::DnsMatch;

use crate::message::{self, ParsedQuery};

/// Who sent a query: the endpoint the agent knows by the source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub endpoint: EndpointId,
    pub identity: u32,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Which names an endpoint may look up at a server. The agent implements
/// it from the resolved policy (the identity of `server` via the ipcache,
/// the port, the endpoint's `rules.dns`); [`RuleTable`] is a ready one.
pub trait DnsPolicy: Send + Sync + 'static {
    fn allows(&self, client: &Client, server: SocketAddr, name: &str) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forwarded,
    Denied,
}

/// One finished lookup, for the FQDN cache and the DNS flow.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub client: Client,
    pub server: SocketAddr,
    pub transport: Transport,
    pub id: u16,
    pub name: String,
    pub qtype: RecordType,
    pub verdict: Verdict,
    /// The rcode the client got (REFUSED when denied).
    pub rcode: u16,
    /// Addresses per name (empty when denied).
    pub answers: Vec<Answer>,
    pub cnames: Vec<String>,
    /// From the query's arrival to the answer being ready.
    pub latency: Duration,
}

/// Told about every exchange, on the query path: keep it quick (push to a
/// bounded channel, update a cache under a short lock).
pub trait DnsObserver: Send + Sync + 'static {
    fn exchange(&self, exchange: &Exchange);

    /// Told instead of [`DnsObserver::exchange`] about a forwarded answer,
    /// before the client gets it; the answer waits (at most the engine's
    /// `answer_delay`) for what this returns. The agent uses it to let
    /// policy allow the answer's addresses first, as Cilium's proxy does,
    /// so the client's very next connection is not dropped.
    fn answered(&self, exchange: &Exchange) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.exchange(exchange);
        None
    }
}

impl<F: Fn(&Exchange) + Send + Sync + 'static> DnsObserver for F {
    fn exchange(&self, exchange: &Exchange) {
        self(exchange)
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long to wait for the server. Stub resolvers retry after about
    /// 5 s (glibc's default), so waiting longer only holds a slot.
    pub upstream_timeout: Duration,
    /// Queries being forwarded at once; past it, queries get SERVFAIL
    /// at once rather than queueing behind a slow server.
    pub max_in_flight: usize,
    /// The rcode for denied queries (Cilium's
    /// `--tofqdns-dns-reject-response-code`, default refused).
    pub reject_rcode: ResponseCode,
    /// The longest an answer waits for [`DnsObserver::answered`] (Cilium's
    /// `--tofqdns-proxy-response-max-delay`, default 100 ms).
    pub answer_delay: Duration,
    /// The SO_MARK of upstream sockets for a client identity, so the
    /// server's side of the datapath judges the query as the client's.
    pub upstream_mark: Option<fn(u32) -> u32>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            upstream_timeout: Duration::from_secs(2),
            max_in_flight: 1024,
            reject_rcode: ResponseCode::Refused,
            answer_delay: Duration::from_millis(100),
            upstream_mark: None,
        }
    }
}

/// Counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub forwarded: AtomicU64,
    pub denied: AtomicU64,
    /// Not a query (unparseable, a response, not one question): dropped.
    pub malformed: AtomicU64,
    /// The server's reply did not parse or did not match: dropped.
    pub bad_upstream: AtomicU64,
    pub timeouts: AtomicU64,
    pub overloaded: AtomicU64,
    pub upstream_errors: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub forwarded: u64,
    pub denied: u64,
    pub malformed: u64,
    pub bad_upstream: u64,
    pub timeouts: u64,
    pub overloaded: u64,
    pub upstream_errors: u64,
}

pub struct Engine {
    config: EngineConfig,
    policy: Arc<dyn DnsPolicy>,
    observer: Arc<dyn DnsObserver>,
    in_flight: Semaphore,
    stats: Stats,
}

/// What to send back to the client, if anything.
pub type Reply = Option<Vec<u8>>;

impl Engine {
    pub fn new(config: EngineConfig, policy: Arc<dyn DnsPolicy>, observer: Arc<dyn DnsObserver>) -> Self {
        let in_flight = Semaphore::new(config.max_in_flight);
        Engine { config, policy, observer, in_flight, stats: Stats::default() }
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            forwarded: l(&s.forwarded),
            denied: l(&s.denied),
            malformed: l(&s.malformed),
            bad_upstream: l(&s.bad_upstream),
            timeouts: l(&s.timeouts),
            overloaded: l(&s.overloaded),
            upstream_errors: l(&s.upstream_errors),
        }
    }

    fn count(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Judges one UDP query from `client` that was sent to `server`, and
    /// returns the datagram to answer with (None: send nothing).
    pub async fn handle_udp(&self, client: Client, server: SocketAddr, request: &[u8]) -> Reply {
        self.handle(client, server, Transport::Udp, request, &mut None).await
    }

    /// Serves one DNS-over-TCP connection from `client` to `server`
    /// (RFC 7766 framing), query by query, over one upstream connection
    /// opened on the first allowed query. Ends when the client closes,
    /// is idle for `idle`, or sends something that is not DNS.
    pub async fn serve_tcp(&self, client: Client, server: SocketAddr, mut stream: TcpStream, idle: Duration) {
        let mut upstream: Option<TcpStream> = None;
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
            if stream.read_exact(&mut query).await.is_err() {
                return;
            }
            let Some(reply) = self.handle(client, server, Transport::Tcp, &query, &mut upstream).await else {
                // A malformed frame leaves the stream's framing in doubt.
                return;
            };
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }

    async fn handle(
        &self,
        client: Client,
        server: SocketAddr,
        transport: Transport,
        request: &[u8],
        tcp: &mut Option<TcpStream>,
    ) -> Reply {
        let start = Instant::now();
        let query = match message::parse_query(request) {
            Ok(q) => q,
            Err(e) => {
                Self::count(&self.stats.malformed);
                tracing::debug!(client = %client.addr, error = %e, "dropped a malformed DNS query");
                return None;
            }
        };
        if !self.policy.allows(&client, server, &query.name) {
            Self::count(&self.stats.denied);
            let reply = message::error_response(&query, self.config.reject_rcode);
            let ex = self.exchange(&client, server, transport, &query, Verdict::Denied, start);
            self.observer.exchange(&Exchange { rcode: u16::from(self.config.reject_rcode), ..ex });
            return Some(reply);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            Self::count(&self.stats.overloaded);
            return Some(message::error_response(&query, ResponseCode::ServFail));
        };
        let mark = self.config.upstream_mark.map(|f| f(client.identity));
        let forwarded = match transport {
            Transport::Udp => {
                tokio::time::timeout(
                    self.config.upstream_timeout,
                    forward_udp(server, request, query.id, mark),
                )
                .await
            }
            Transport::Tcp => {
                tokio::time::timeout(self.config.upstream_timeout, forward_tcp(server, request, tcp, mark))
                    .await
            }
        };
        let response = match forwarded {
            Err(_) => {
                Self::count(&self.stats.timeouts);
                *tcp = None;
                return None;
            }
            Ok(Err(e)) => {
                Self::count(&self.stats.upstream_errors);
                tracing::debug!(%server, error = %e, "DNS server unreachable");
                *tcp = None;
                return Some(message::error_response(&query, ResponseCode::ServFail));
            }
            Ok(Ok(r)) => r,
        };
        let info = match message::parse_response(&response) {
            Ok(info) if info.id == query.id => info,
            _ => {
                // Relaying what we cannot read would let addresses past
                // the FQDN cache; the client retries.
                Self::count(&self.stats.bad_upstream);
                return None;
            }
        };
        Self::count(&self.stats.forwarded);
        let ex = self.exchange(&client, server, transport, &query, Verdict::Forwarded, start);
        let settled = self.observer.answered(&Exchange {
            rcode: info.rcode,
            answers: info.answers,
            cnames: info.cnames,
            ..ex
        });
        if let Some(settled) = settled {
            // Past the delay the client gets its answer anyway: a late
            // policy update costs a retried connection, a withheld answer
            // a failed lookup.
            let _ = tokio::time::timeout(self.config.answer_delay, settled).await;
        }
        Some(response)
    }

    fn exchange(
        &self,
        client: &Client,
        server: SocketAddr,
        transport: Transport,
        q: &ParsedQuery,
        verdict: Verdict,
        start: Instant,
    ) -> Exchange {
        Exchange {
            client: *client,
            server,
            transport,
            id: q.id,
            name: q.name.clone(),
            qtype: q.qtype,
            verdict,
            rcode: 0,
            answers: vec![],
            cnames: vec![],
            latency: start.elapsed(),
        }
    }
}

fn set_mark(fd: std::os::fd::RawFd, mark: Option<u32>) -> std::io::Result<()> {
    let Some(mark) = mark else { return Ok(()) };
    // SAFETY: a valid fd and a pointer to a u32 of the stated size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            &mark as *const u32 as *const libc::c_void,
            std::mem::size_of::<u32>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn forward_udp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    mark: Option<u32>,
) -> std::io::Result<Vec<u8>> {
    let any: IpAddr =
        if server.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let sock = UdpSocket::bind((any, 0)).await?;
    set_mark(std::os::fd::AsRawFd::as_raw_fd(&sock), mark)?;
    sock.connect(server).await?;
    sock.send(request).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // A connected socket hears only the server; still, a stray
        // datagram with another id is not this query's answer.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(
    server: SocketAddr,
    request: &[u8],
    conn: &mut Option<TcpStream>,
    mark: Option<u32>,
) -> std::io::Result<Vec<u8>> {
    if conn.is_none() {
        let socket = if server.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        set_mark(std::os::fd::AsRawFd::as_raw_fd(&socket), mark)?;
        *conn = Some(socket.connect(server).await?);
    }
    let stream = conn.as_mut().expect("just set");
    let mut framed = (request.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut response = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut response).await?;
    Ok(response)
}

/// One endpoint's DNS rules, as the agent resolves them: lookups to these
/// servers (None: any) on this port may ask for names these selectors
/// match.
#[derive(Debug, Clone)]
pub struct EndpointDnsRule {
    pub servers: Option<Vec<IpAddr>>,
    /// None: any port.
    pub port: Option<u16>,
    pub names: Vec<DnsMatch>,
}

/// A [`DnsPolicy`] from per-endpoint rules, replaced whole on each policy
/// change; queries read an `Arc` snapshot (the read lock is held only to
/// clone it).
#[derive(Default)]
pub struct RuleTable {
    rules: RwLock<Arc<std::collections::HashMap<EndpointId, Vec<EndpointDnsRule>>>>,
}

impl RuleTable {
    pub fn replace(&self, rules: std::collections::HashMap<EndpointId, Vec<EndpointDnsRule>>) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
    }
}

impl DnsPolicy for RuleTable {
    fn allows(&self, client: &Client, server: SocketAddr, name: &str) -> bool {
        let snapshot = self.rules.read().unwrap_or_else(|e| e.into_inner()).clone();
        snapshot.get(&client.endpoint).into_iter().flatten().any(|r| {
            r.servers.as_ref().is_none_or(|s| s.contains(&server.ip()))
                && r.port.is_none_or(|p| p == server.port())
                && r.names.iter().any(|m| m.matches(name))
        })
    }
}
