//! CNI ADD and DEL latency: twill-cni against Debian's reference bridge +
//! host-local plugins, each driven as a runtime drives it (a process per
//! call, CNI_* variables, config on stdin) in the same run, one at a time
//! and 20 in parallel, into namespaces the benchmark makes and removes;
//! twill-cni with the agent's default tcx links and with cls_bpf filters.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::{fmt_duration, percentile, sh, Bench, Row, NODE_NETNS};

const SEQUENTIAL: usize = 30;
const PARALLEL: usize = 20;
const PARALLEL_ROUNDS: usize = 2;
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

struct Plugin {
    binary: PathBuf,
    config: Value,
}

/// One plugin call, timed from spawn to exit.
fn call(plugin: &Plugin, command: &str, container: &str, netns: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{NODE_NETNS}"))
        .arg(&plugin.binary)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_PLUGINS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", plugin.binary.display()))?;
    child.stdin.take().unwrap().write_all(plugin.config.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!("{} {command} {container}: {}", plugin.binary.display(), String::from_utf8_lossy(&out.stdout));
    }
    Ok(elapsed)
}

fn netns_name(tag: &str, i: usize) -> String {
    format!("twbench-cni-{tag}-{i}")
}

/// ADD latencies one at a time, then DEL latencies, then ADD latencies of
/// `PARALLEL` at once (each DELed after the round).
fn measure(plugin: &Plugin, tag: &str) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, Vec<Duration>)> {
    let total = SEQUENTIAL.max(PARALLEL);
    for i in 0..total {
        sh(&["ip", "netns", "add", &netns_name(tag, i)])?;
    }
    let result = (|| {
        // One command for every container, one at a time.
        let sequential = |command: &str| -> anyhow::Result<Vec<Duration>> {
            (0..SEQUENTIAL)
                .map(|i| {
                    call(plugin, command, &format!("{tag}{i}"), &format!("/run/netns/{}", netns_name(tag, i)))
                })
                .collect()
        };
        let adds = sequential("ADD")?;
        let dels = sequential("DEL")?;
        let mut parallel = Vec::new();
        for round in 0..PARALLEL_ROUNDS {
            let ids: Vec<(String, String)> = (0..PARALLEL)
                .map(|i| (format!("{tag}p{round}-{i}"), format!("/run/netns/{}", netns_name(tag, i))))
                .collect();
            let times: Vec<anyhow::Result<Duration>> = std::thread::scope(|s| {
                let handles: Vec<_> =
                    ids.iter().map(|(id, ns)| s.spawn(move || call(plugin, "ADD", id, ns))).collect();
                handles.into_iter().map(|h| h.join().expect("ADD thread")).collect()
            });
            for t in times {
                parallel.push(t?);
            }
            for (id, ns) in &ids {
                call(plugin, "DEL", id, ns)?;
            }
        }
        Ok((adds, dels, parallel))
    })();
    for i in 0..total {
        let _ = sh(&["ip", "netns", "del", &netns_name(tag, i)]);
    }
    result
}

fn p50_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn pair(v: Vec<Duration>) -> (String, f64) {
    let (p50, p99) = p50_p99(v);
    (format!("{} / {}", fmt_duration(p50), fmt_duration(p99)), p50.as_secs_f64())
}

pub fn run(bench: &mut Bench, dir: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let twill = Plugin {
        binary: std::env::current_exe()?.with_file_name("twill-cni"),
        config: json!({
            "cniVersion": "1.0.0", "name": "twill-bench", "type": "twill-cni",
            "agentSocket": bench.socket(), "queueDir": dir.join("cni-queue"),
        }),
    };
    if !twill.binary.exists() {
        bail!("{} is missing: cargo build --release --bins", twill.binary.display());
    }
    let reference = Plugin {
        binary: Path::new(REFERENCE_PLUGINS).join("bridge"),
        config: json!({
            "cniVersion": "1.0.0", "name": "bench-bridge", "type": "bridge",
            "bridge": "twbenchbr0", "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "subnet": "10.211.0.0/24", "dataDir": dir.join("host-local")},
        }),
    };
    if !reference.binary.exists() {
        bail!("{} is missing: apt-get install containernetworking-plugins", reference.binary.display());
    }
    let (t_add, t_del, t_par) = measure(&twill, "tw")?;
    // The agent's default attaches tcx links, whose grace periods are most
    // of ADD's and DEL's time; the same calls with cls_bpf filters show
    // what that costs.
    bench.restart_agent(&["--endpoint-attach", "cls-bpf"])?;
    let cls = measure(&twill, "tc");
    bench.restart_agent(&[])?;
    let (c_add, c_del, c_par) = cls?;
    let (r_add, r_del, r_par) = measure(&reference, "br")?;
    let _ = sh(&["ip", "-n", NODE_NETNS, "link", "del", "twbenchbr0"]);
    let reference_name = "bridge + host-local (Debian), same run";
    let cls_bpf = "--endpoint-attach cls-bpf";
    for (metric, t, r) in [
        (format!("CNI ADD p50 / p99, one at a time ({SEQUENTIAL})"), t_add, r_add.clone()),
        (format!("CNI ADD p50 / p99, {PARALLEL} in parallel (x{PARALLEL_ROUNDS})"), t_par, r_par.clone()),
        (format!("CNI DEL p50 / p99, one at a time ({SEQUENTIAL})"), t_del, r_del.clone()),
        (format!("CNI ADD p50 / p99, one at a time ({SEQUENTIAL}), {cls_bpf}"), c_add, r_add),
        (format!("CNI ADD p50 / p99, {PARALLEL} in parallel (x{PARALLEL_ROUNDS}), {cls_bpf}"), c_par, r_par),
        (format!("CNI DEL p50 / p99, one at a time ({SEQUENTIAL}), {cls_bpf}"), c_del, r_del),
    ] {
        let (twill, t50) = pair(t);
        let (reference, r50) = pair(r);
        rows.push(Row::new(
            metric,
            twill,
            format!("{reference} ({reference_name})"),
            format!("{:.2}", t50 / r50),
        ));
    }
    Ok(())
}
