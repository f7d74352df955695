//! Services: connection rate and first-packet latency (how long connect()
//! takes) through a virtual IP with 10, 1,000, 10,000 and 30,000 services,
//! each against connecting to the backend directly, and the same services
//! written as kube-proxy's iptables rules (KUBE-SERVICES, KUBE-SVC-*,
//! KUBE-SEP-*) on a bare veth pair, in the same run; import time for
//! 30,000 services against iptables-restore of the same rule set; agent
//! memory per service.
//!
//! Twill translates at connect(): the packet already carries the backend,
//! so the cost should not grow with the number of services. kube-proxy's
//! iptables mode walks KUBE-SERVICES rule by rule for a connection's first
//! packet, so its first-packet latency grows with the number of services.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use twill_api::{PolicyFile, Request, ServicesImported};

use crate::{
    datapath::{bench_cpu, exe, iptables_restore, start_server, veth_pair},
    fmt_duration, median, rss_kib, sh, thousands, Bench, Row,
};

const SIZES: [usize; 4] = [10, 1_000, 10_000, 30_000];
const ROUNDS: usize = 3;
const CRR_SECONDS: f64 = 2.0;
const CRR_MAX: u64 = 20_000;
const IPT_CLIENT: &str = "twbench-svc-a";
const IPT_SERVER: &str = "twbench-svc-b";
const IPT_NET: &str = "10.252.0";
/// The bare kernel: a veth pair without a rule.
const BARE_CLIENT: &str = "twbench-svc-c";
const BARE_SERVER: &str = "twbench-svc-d";
const BARE_NET: &str = "10.252.1";
/// The port every service answers on; each size step's services send to
/// their own backend port, so no measurement reuses another's 4-tuples.
const SERVICE_PORT: u16 = 80;
const FIRST_TARGET_PORT: u16 = 8100;
const FIRST_DIRECT_PORT: u16 = 8200;

/// The ClusterIP of service `i`: 10.96.0.0/16 holds 65,534 addresses.
fn cluster_ip(i: usize) -> String {
    let n = i + 10;
    format!("10.96.{}.{}", n / 256, n % 256)
}

fn services_yaml(range: std::ops::Range<usize>, target_port: u16) -> String {
    let mut out = String::with_capacity(range.len() * 220);
    for i in range {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: default\nspec:\n  \
             clusterIP: {}\n  selector:\n    app: svc-backend\n  ports:\n  - port: {SERVICE_PORT}\n    \
             targetPort: {target_port}\n    protocol: TCP\n",
            cluster_ip(i)
        );
    }
    out
}

/// kube-proxy's iptables mode for `count` services with one endpoint each
/// (chain names are 16 characters, as kube-proxy's hashes are).
fn kube_proxy_rules(count: usize, backend: &str, target_port: impl Fn(usize) -> u16) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    let _ = writeln!(chains, "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]");
    let _ = writeln!(chains, ":KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]");
    let _ =
        writeln!(rules, "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES");
    let _ = writeln!(rules, "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES");
    let _ = writeln!(
        rules,
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"
    );
    let _ = writeln!(rules, "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000");
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN");
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0");
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -j MASQUERADE --random-fully");
    for i in 0..count {
        let svc = format!("KUBE-SVC-{:016X}", 0x5356_0000_0000_0000u64 + i as u64);
        let sep = format!("KUBE-SEP-{:016X}", 0x5345_0000_0000_0000u64 + i as u64);
        let port = target_port(i);
        let _ = writeln!(chains, ":{svc} - [0:0]\n:{sep} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"default/svc-{i} cluster IP\" -m tcp --dport {SERVICE_PORT} -j {svc}",
            cluster_ip(i)
        );
        let _ =
            writeln!(rules, "-A {svc} -m comment --comment \"default/svc-{i} -> {backend}:{port}\" -j {sep}");
        let _ = writeln!(
            rules,
            "-A {sep} -s {backend}/32 -m comment --comment \"default/svc-{i}\" -j KUBE-MARK-MASQ"
        );
        let _ = writeln!(rules, "-A {sep} -p tcp -m comment --comment \"default/svc-{i}\" -m tcp -j DNAT --to-destination {backend}:{port}");
    }
    format!("{chains}{rules}COMMIT\n")
}

/// One TCP_CRR run: connections per second and connect() p50/p99 in µs.
struct Crr {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn crr(client_ns: &str, server_ns: &str, target: &str, server_port: u16) -> anyhow::Result<Crr> {
    let _server = start_server(server_ns, server_port)?;
    let out = Command::new("timeout")
        .args(["-k", "2", &format!("{}", CRR_SECONDS as u64 + 20)])
        .args(["ip", "netns", "exec", client_ns, &exe()?, "__tcp-client", target, "crr"])
        .args([&CRR_SECONDS.to_string(), &CRR_MAX.to_string(), &bench_cpu()])
        .output()?;
    if !out.status.success() {
        bail!("crr from {client_ns} to {target} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("client report")?;
    let count = report["count"].as_f64().context("count")?;
    let secs = report["seconds"].as_f64().context("seconds")?;
    Ok(Crr {
        rate: count / secs,
        p50_us: report["connect_p50_us"].as_f64().unwrap_or(0.0),
        p99_us: report["connect_p99_us"].as_f64().unwrap_or(0.0),
    })
}

#[derive(Default)]
struct Samples {
    rate: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Samples {
    fn push(&mut self, c: Crr) {
        self.rate.push(c.rate);
        self.p50.push(c.p50_us);
        self.p99.push(c.p99_us);
    }
}

fn import(bench: &Bench, name: &str, yaml: String) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let done: ServicesImported = bench
        .client()
        .call(&Request::ServiceImport { files: vec![PolicyFile { name: name.into(), content: yaml }] })?;
    if done.services.is_empty() {
        bail!("the import created no services");
    }
    Ok(start.elapsed())
}

pub fn run(bench: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // kube-proxy's rules on a veth pair, and the bare kernel: another pair
    // without any (kube-proxy's KUBE-SERVICES walk slows every new
    // connection of its node, direct ones too).
    let (_ipt_ns, ipt) = veth_pair(IPT_CLIENT, IPT_SERVER, IPT_NET)?;
    let (_bare_ns, bare) = veth_pair(BARE_CLIENT, BARE_SERVER, BARE_NET)?;
    let ipt_backend = ipt.server_ip.clone();
    let bare_backend = bare.server_ip.clone();
    // A virtual address needs a route before kube-proxy's OUTPUT rules see
    // it, as every node has.
    sh(&["ip", "-n", IPT_CLIENT, "route", "add", "default", "via", &ipt_backend])?;

    let backend = bench.create("svc-backend", "app=svc-backend")?;
    let client = bench.create("svc-client", "app=svc-client")?;
    let rss_before = rss_kib(bench.agent_pid());
    let mut imported = 0;
    let mut twill_import_steps = Vec::new();
    let mut results: BTreeMap<(usize, &'static str), Samples> = BTreeMap::new();
    for (step, &size) in SIZES.iter().enumerate() {
        let target_port = FIRST_TARGET_PORT + step as u16;
        let direct_port = FIRST_DIRECT_PORT + step as u16;
        eprintln!("twill-bench: services: {size}");
        twill_import_steps.push((
            size - imported,
            import(bench, "bench-services.yaml", services_yaml(imported..size, target_port))?,
        ));
        imported = size;
        // kube-proxy's whole rule set for this many services, each step's
        // services pointing at that step's port as Twill's do.
        let step_of = |i: usize| SIZES.iter().position(|s| i < *s).unwrap_or(0) as u16;
        iptables_restore(
            IPT_CLIENT,
            &kube_proxy_rules(size, &ipt_backend, |i| FIRST_TARGET_PORT + step_of(i)),
        )?;
        let vip = format!("{}:{SERVICE_PORT}", cluster_ip(size - 1));
        for round in 0..ROUNDS {
            let runs: [(&'static str, &str, &str, String, u16); 4] = [
                ("twill-vip", &client.netns, &backend.netns, vip.clone(), target_port),
                (
                    "twill-direct",
                    &client.netns,
                    &backend.netns,
                    format!("{}:{direct_port}", backend.ipv4),
                    direct_port,
                ),
                ("iptables-vip", IPT_CLIENT, IPT_SERVER, vip.clone(), target_port),
                (
                    "bare-direct",
                    BARE_CLIENT,
                    BARE_SERVER,
                    format!("{bare_backend}:{direct_port}"),
                    direct_port,
                ),
            ];
            for k in 0..runs.len() {
                let (name, c, s, target, port) = &runs[(k + round) % runs.len()];
                let result =
                    crr(c, s, target, *port).with_context(|| format!("{name} with {size} services"))?;
                results.entry((size, name)).or_default().push(result);
            }
        }
    }
    let rss_after = rss_kib(bench.agent_pid());

    let get = |size: usize, name: &'static str| &results[&(size, name)];
    for &size in &SIZES {
        let (tv, td, iv, bd) = (
            get(size, "twill-vip"),
            get(size, "twill-direct"),
            get(size, "iptables-vip"),
            get(size, "bare-direct"),
        );
        let (tv_rate, td_rate, iv_rate, bd_rate) = (
            median(tv.rate.clone()),
            median(td.rate.clone()),
            median(iv.rate.clone()),
            median(bd.rate.clone()),
        );
        rows.push(Row::new(
            format!(
                "TCP_CRR through a ClusterIP, {} services (ratio: to a bare veth pair)",
                thousands(size as u64)
            ),
            format!("{}/s ({:.2}x Twill direct)", thousands(tv_rate as u64), tv_rate / td_rate),
            format!(
                "kube-proxy iptables {}/s ({:.2}x bare); bare veth {}/s",
                thousands(iv_rate as u64),
                iv_rate / bd_rate,
                thousands(bd_rate as u64)
            ),
            format!("{:.2}", tv_rate / bd_rate),
        ));
        let us = |v: &Vec<f64>| median(v.clone());
        rows.push(Row::new(
            format!("connect() p50 / p99 through a ClusterIP, {} services", thousands(size as u64)),
            format!("{:.0} / {:.0} us", us(&tv.p50), us(&tv.p99)),
            format!(
                "iptables {:.0} / {:.0} us; bare direct {:.0} / {:.0} us",
                us(&iv.p50),
                us(&iv.p99),
                us(&bd.p50),
                us(&bd.p99)
            ),
            format!("{:.2}", us(&tv.p99) / us(&iv.p99)),
        ));
    }

    // Import time: 30,000 services in one file into an agent without
    // services, against iptables-restore of kube-proxy's rules for as many.
    let last = *SIZES.last().unwrap();
    let started = Instant::now();
    bench.client().call_value(&Request::ServiceDelete {
        name: String::new(),
        namespace: "default".into(),
        all: true,
    })?;
    let delete_all = started.elapsed();
    let twill_import = import(bench, "bench-services.yaml", services_yaml(0..last, FIRST_TARGET_PORT))?;
    sh(&["ip", "netns", "exec", IPT_CLIENT, "iptables", "-t", "nat", "-F"])?;
    let rules = kube_proxy_rules(last, &ipt_backend, |_| FIRST_TARGET_PORT);
    let ipt_import = iptables_restore(IPT_CLIENT, &rules)?;
    let ipt_rules = rules.lines().filter(|l| l.starts_with("-A ")).count();
    rows.push(Row::new(
        format!("import {} Services (one file, none before)", thousands(last as u64)),
        fmt_duration(twill_import),
        format!(
            "iptables-restore of the same ({} rules): {}",
            thousands(ipt_rules as u64),
            fmt_duration(ipt_import)
        ),
        format!("{:.2}", twill_import.as_secs_f64() / ipt_import.as_secs_f64()),
    ));
    let steps: Vec<String> = twill_import_steps
        .iter()
        .map(|(n, d)| format!("+{} in {}", thousands(*n as u64), fmt_duration(*d)))
        .collect();
    rows.push(Row::new(
        "service imports of the sweep",
        steps.join(", "),
        format!("delete all {}: {}", thousands(last as u64), fmt_duration(delete_all)),
        "",
    ));
    let per_service = (rss_after.saturating_sub(rss_before) as f64 * 1024.0) / last as f64;
    rows.push(Row::new(
        format!("agent memory per service (RSS, {} services)", thousands(last as u64)),
        format!("{per_service:.0} bytes"),
        format!(
            "agent RSS {:.1} MiB with them, {:.1} MiB before",
            rss_after as f64 / 1024.0,
            rss_before as f64 / 1024.0
        ),
        "",
    ));
    Ok(())
}
