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

use crate::{percentile, Bench, Row};

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
    let sock = Arc::new(UdpSocket::bind("0.0.0.0:0")?);
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

/// `__dns-paced ADDR:PORT`: [`paced`] from the namespace it runs in (an
/// endpoint's); prints "p50_ns p99_ns lost".
pub fn paced_main(args: &[String]) -> anyhow::Result<()> {
    let target: SocketAddr = args.first().context("usage: __dns-paced ADDR:PORT")?.parse()?;
    let r = paced(target)?;
    println!("{} {} {}", r.p50.as_nanos(), r.p99.as_nanos(), r.lost);
    Ok(())
}

fn paced_from(netns: &str, target: SocketAddr) -> anyhow::Result<Run> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(std::env::current_exe()?)
        .args(["__dns-paced", &target.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    anyhow::ensure!(
        v.len() == 3,
        "paced lookups to {target}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Run { p50: Duration::from_nanos(v[0]), p99: Duration::from_nanos(v[1]), lost: v[2] as usize })
}

const AGENT_POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bench-dns}
spec:
  endpointSelector: {matchLabels: {app: dns-client}}
  egress:
  - toEndpoints: [{matchLabels: {app: dns-server}}]
    toPorts:
    - ports: [{port: \"53\", protocol: ANY}]
      rules:
        dns: [{matchPattern: \"*.test\"}]
";

/// What a user measures: lookups from one endpoint to dnsmasq in another
/// at RATE/s, with no policy (the datapath alone) and with a rules.dns
/// policy (every query steered to the agent's DNS proxy, checked,
/// forwarded, its answer reported and its addresses handed to policy),
/// in alternating rounds of one run.
pub fn through_agent(bench: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    use twill_api::{PolicyFile, PolicyImported, Request};
    let server = bench.create("dns-server", "app=dns-server")?;
    let client = bench.create("dns-client", "app=dns-client")?;
    let mut dnsmasq = std::process::Command::new("ip")
        .args(["netns", "exec", &server.netns, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts"])
        .args(["--conf-file=/dev/null", "--port=53", "--bind-interfaces", "--pid-file=", "--cache-size=0"])
        .arg(format!("--listen-address={}", server.ipv4))
        .args(["--local-ttl=60", "--address=/x.test/10.1.2.3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("dnsmasq (scripts/setup.sh installs it)")?;
    let target = SocketAddr::new(server.ipv4.parse::<std::net::IpAddr>()?, 53);
    let result = (|| -> anyhow::Result<()> {
        let set = |proxied: bool| -> anyhow::Result<()> {
            let _ = bench.client().call_value(&Request::PolicyDelete {
                name: Some("bench-dns".into()),
                namespace: Some("default".into()),
                kind: None,
                all: false,
                labels: vec![],
            });
            if proxied {
                let _: PolicyImported = bench.client().call(&Request::PolicyImport {
                    files: vec![PolicyFile { name: "dns.yaml".into(), content: AGENT_POLICY.into() }],
                })?;
            }
            Ok(())
        };
        // dnsmasq answering before the first round.
        let deadline = Instant::now() + Duration::from_secs(10);
        while paced_probe(&client.netns, target).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "dnsmasq at {target} does not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        let (mut direct, mut proxied) = (vec![], vec![]);
        for _ in 0..ROUNDS {
            set(false)?;
            direct.push(paced_from(&client.netns, target)?);
            set(true)?;
            proxied.push(paced_from(&client.netns, target)?);
        }
        set(false)?;
        let p = |runs: &[Run], f: fn(&Run) -> Duration| median(runs.iter().map(f).collect());
        let lost = |runs: &[Run]| runs.iter().map(|r| r.lost).sum::<usize>();
        let (dp50, dp99, pp50, pp99) =
            (p(&direct, |r| r.p50), p(&direct, |r| r.p99), p(&proxied, |r| r.p50), p(&proxied, |r| r.p99));
        rows.push(Row::new(
            format!("DNS lookup p50 / p99 at {RATE}/s, endpoint to endpoint: rules.dns through the agent's proxy vs no policy"),
            format!("{} / {}", us(pp50), us(pp99)),
            format!("{} / {}", us(dp50), us(dp99)),
            format!("p50 +{}, p99 +{}", us(pp50.saturating_sub(dp50)), us(pp99.saturating_sub(dp99))),
        ));
        rows.push(Row::new(
            format!("DNS lookups lost of {} ({ROUNDS} rounds), through the agent's proxy", QUERIES * ROUNDS),
            lost(&proxied).to_string(),
            format!("{} direct", lost(&direct)),
            "",
        ));
        Ok(())
    })();
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    let _ = bench.delete("dns-server");
    let _ = bench.delete("dns-client");
    result
}

/// One lookup from `netns`, answered or not.
fn paced_probe(netns: &str, target: SocketAddr) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "dig",
            &format!("@{}", target.ip()),
            "x.test",
            "+tries=1",
            "+time=1",
            "+short",
        ])
        .output()?;
    anyhow::ensure!(String::from_utf8_lossy(&out.stdout).trim() == "10.1.2.3", "no answer");
    Ok(())
}
