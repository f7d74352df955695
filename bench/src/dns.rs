//! DNS proxy latency: queries paced at 1,000 per second to dnsmasq
//! directly, and to dnsmasq through the DNS proxy engine on its
//! transparent socket (recvmsg with the original destination, policy
//! check, forward, reply from a transparent socket), in the same run, in
//! a namespace of the benchmark's own. Rounds alternate direct and proxy.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use twill_dnsproxy::harness::{query_bytes, DnsNamespace};
use twill_dnsproxy::transparent::{serve_to, TransparentUdp};
use twill_dnsproxy::{EndpointDnsRule, Engine, EngineConfig, Exchange, RuleTable};
use twill_policy::l7_dns::{parse_match_pattern, DnsMatch};

use crate::{percentile, Row};

const RATE: u64 = 1000;
const QUERIES: usize = 3000;
const ROUNDS: usize = 3;
const PROXY_PORT: u16 = 5354;

struct Run {
    p50: Duration,
    p99: Duration,
    lost: usize,
}

/// Sends QUERIES queries to `target` at RATE per second from one socket
/// and times each answer by its id; a query not answered 1 s after the
/// last send counts as lost.
fn paced(target: SocketAddr) -> anyhow::Result<Run> {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
    sock.connect(target)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let start = Instant::now();
    let receiver = {
        let sock = sock.clone();
        std::thread::spawn(move || {
            let mut got: HashMap<u16, Instant> = HashMap::new();
            let mut buf = [0u8; 1500];
            let end = start + Duration::from_millis(QUERIES as u64 * 1000 / RATE) + Duration::from_secs(1);
            while got.len() < QUERIES && Instant::now() < end {
                if let Ok(n) = sock.recv(&mut buf) {
                    if n >= 2 {
                        got.entry(u16::from_be_bytes([buf[0], buf[1]])).or_insert_with(Instant::now);
                    }
                }
            }
            got
        })
    };
    let queries: Vec<Vec<u8>> = (0..QUERIES).map(|i| query_bytes("x.test.", i as u16)).collect();
    let mut sent = Vec::with_capacity(QUERIES);
    for (i, q) in queries.iter().enumerate() {
        let due = start + Duration::from_micros(i as u64 * 1_000_000 / RATE);
        while Instant::now() < due {
            let left = due - Instant::now();
            if left > Duration::from_micros(200) {
                std::thread::sleep(left - Duration::from_micros(100));
            } else {
                std::hint::spin_loop();
            }
        }
        sent.push(Instant::now());
        sock.send(q)?;
    }
    let got = receiver.join().map_err(|_| anyhow::anyhow!("the receiver panicked"))?;
    let mut lat: Vec<Duration> = sent
        .iter()
        .enumerate()
        .filter_map(|(i, t)| got.get(&(i as u16)).map(|r| r.duration_since(*t)))
        .collect();
    lat.sort();
    anyhow::ensure!(!lat.is_empty(), "no query to {target} was answered");
    Ok(Run { p50: percentile(&lat, 0.5), p99: percentile(&lat, 0.99), lost: QUERIES - lat.len() })
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let mut ns = DnsNamespace::new().map_err(anyhow::Error::msg)?;
    let server = ns.start_dnsmasq(&[("x.test", "10.1.2.3")], 60).map_err(anyhow::Error::msg)?;
    let (direct, proxied, (stats, inside)) = ns.enter(move || -> anyhow::Result<_> {
        // The proxy as the agent would run it: a multi-threaded runtime
        // (threads made here stay in this namespace).
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let table = RuleTable::default();
        let rule = EndpointDnsRule {
            servers: Some(vec![server.ip()]),
            port: Some(53),
            names: vec![DnsMatch::Pattern(parse_match_pattern("*.test").expect("valid"))],
        };
        table.replace(HashMap::from([(1, vec![rule])]));
        // The engine's own time per query (parse, policy, upstream round
        // trip, answer parse), to tell it apart from the hops around it.
        let inside: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
        let record = inside.clone();
        let observer = move |e: &Exchange| record.lock().expect("not poisoned").push(e.latency);
        let engine = Arc::new(Engine::new(EngineConfig::default(), Arc::new(table), Arc::new(observer)));
        let listener = rt
            .block_on(async {
                TransparentUdp::bind(format!("0.0.0.0:{PROXY_PORT}").parse().expect("literal"))
            })
            .context("the transparent listener")?;
        let clients = |_: std::net::SocketAddrV4| Some((1u64, 1000u32));
        rt.spawn(serve_to(engine.clone(), listener, Arc::new(clients), Some(server)));
        let proxy: SocketAddr = format!("127.0.0.1:{PROXY_PORT}").parse().expect("literal");
        let (mut direct, mut proxied) = (vec![], vec![]);
        for _ in 0..ROUNDS {
            direct.push(paced(server)?);
            proxied.push(paced(proxy)?);
        }
        let mut inside = std::mem::take(&mut *inside.lock().expect("not poisoned"));
        inside.sort();
        Ok((direct, proxied, (engine.stats(), inside)))
    })?;
    let p = |runs: &[Run], f: fn(&Run) -> Duration| median(runs.iter().map(f).collect());
    let lost = |runs: &[Run]| runs.iter().map(|r| r.lost).sum::<usize>();
    let (dp50, dp99, pp50, pp99) =
        (p(&direct, |r| r.p50), p(&direct, |r| r.p99), p(&proxied, |r| r.p50), p(&proxied, |r| r.p99));
    rows.push(Row::new(
        format!("DNS query p50 / p99 at {RATE}/s through the proxy (vs dnsmasq direct)"),
        format!("{} / {}", us(pp50), us(pp99)),
        format!("{} / {}", us(dp50), us(dp99)),
        format!("p99 +{}", us(pp99.saturating_sub(dp99))),
    ));
    anyhow::ensure!(!inside.is_empty(), "the engine saw no query");
    rows.push(Row::new(
        "DNS proxy: engine time per query incl. the dnsmasq round trip, p50 / p99",
        format!("{} / {}", us(percentile(&inside, 0.5)), us(percentile(&inside, 0.99))),
        "",
        "",
    ));
    rows.push(Row::new(
        format!("DNS queries lost of {} ({ROUNDS} rounds)", QUERIES * ROUNDS),
        format!("{} (engine: {} forwarded, {} timeouts)", lost(&proxied), stats.forwarded, stats.timeouts),
        format!("{} direct", lost(&direct)),
        "",
    ));
    Ok(())
}
