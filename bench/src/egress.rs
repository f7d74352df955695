//! Leaving the node: TCP stream, request/response and connection rates
//! from a Twill endpoint to a server outside the node (a namespace on a
//! veth pair from the node's namespace, the path a pod's traffic to
//! another machine takes, without the wire), five ways in interleaved
//! rounds of one run:
//!
//! * bare veth: client and server namespaces on one veth pair, the kernel
//!   with nothing in between;
//! * routed: client and server each on a veth pair to a router namespace
//!   that forwards, the kernel's own forwarding over the same two veth
//!   crossings Twill's path has (what a plain routed CNI, the ptp plugin
//!   say, gives);
//! * Twill with `--devices` naming the outside device, eBPF host routing:
//!   `from_endpoint` looks the route up in the FIB and redirects to the
//!   device, whose `from_netdev` delivers the replies straight into the
//!   endpoint;
//! * Twill without `--devices` (the default): the node's stack forwards
//!   both ways;
//! * Twill with `--devices` and `--enable-host-legacy-routing`: the stack
//!   again, with the device programs attached.

use std::collections::BTreeMap;

use crate::{
    datapath::{measure, veth_pair, Netns, Pair, Workload, LAST_PORT, WORKLOADS},
    median, sh, veth_into, Bench, Row, NODE_NETNS,
};

const OUTSIDE: &str = "twbench-out";
const OUTSIDE_DEV: &str = "twb-out";
const ROUTER: &str = "twbench-rt";
const ROUTED_A: &str = "twbench-rt-a";
const ROUTED_B: &str = "twbench-rt-b";
const ROUNDS: usize = 3;

/// The outside machine, joined to the node: 10.253.0.2, its gateway the
/// node at 10.253.0.1, the pod CIDR routed back through it.
fn outside() -> anyhow::Result<Netns> {
    sh(&["ip", "netns", "add", OUTSIDE])?;
    let guard = Netns(vec![OUTSIDE.into()]);
    veth_into(NODE_NETNS, OUTSIDE_DEV, OUTSIDE)?;
    for cmd in [
        &["ip", "-n", NODE_NETNS, "addr", "add", "10.253.0.1/24", "dev", OUTSIDE_DEV][..],
        &["ip", "-n", NODE_NETNS, "link", "set", OUTSIDE_DEV, "up"],
        &["ip", "netns", "exec", NODE_NETNS, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        &["ip", "-n", OUTSIDE, "addr", "add", "10.253.0.2/24", "dev", "eth0"],
        &["ip", "-n", OUTSIDE, "link", "set", "eth0", "up"],
        &["ip", "-n", OUTSIDE, "link", "set", "lo", "up"],
        &["ip", "-n", OUTSIDE, "route", "add", "10.210.0.0/24", "via", "10.253.0.1"],
    ] {
        sh(cmd)?;
    }
    Ok(guard)
}

/// Two namespaces behind a forwarding router namespace: 10.254.1.2 and
/// 10.254.2.2, gateways .1 of each.
fn routed() -> anyhow::Result<(Netns, Pair)> {
    let mut guard = Netns(Vec::new());
    for ns in [ROUTER, ROUTED_A, ROUTED_B] {
        sh(&["ip", "netns", "add", ns])?;
        guard.0.push(ns.into());
    }
    sh(&["ip", "netns", "exec", ROUTER, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    sh(&["ip", "-n", ROUTER, "link", "set", "lo", "up"])?;
    for (ns, net, dev) in [(ROUTED_A, "10.254.1", "rt-a"), (ROUTED_B, "10.254.2", "rt-b")] {
        veth_into(ROUTER, dev, ns)?;
        sh(&["ip", "-n", ROUTER, "addr", "add", &format!("{net}.1/24"), "dev", dev])?;
        sh(&["ip", "-n", ROUTER, "link", "set", dev, "up"])?;
        sh(&["ip", "-n", ns, "addr", "add", &format!("{net}.2/24"), "dev", "eth0"])?;
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        sh(&["ip", "-n", ns, "route", "add", "default", "via", &format!("{net}.1")])?;
    }
    let pair =
        Pair { client_ns: ROUTED_A.into(), server_ns: ROUTED_B.into(), server_ip: "10.254.2.2".into() };
    Ok((guard, pair))
}

/// The Twill settings compared: label, agent flags.
const MODES: [(&str, &[&str]); 3] = [
    ("eBPF host routing (--devices: FIB + redirect out, from_netdev back)", &["--devices", OUTSIDE_DEV]),
    ("host stack (no --devices, the default)", &[]),
    ("--enable-host-legacy-routing --devices", &["--enable-host-legacy-routing", "--devices", OUTSIDE_DEV]),
];
/// The mode the others are compared with: Twill's default.
const STACK: usize = 1;

pub fn run(bench: &mut Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let _outside = outside()?;
    let (_bare_ns, bare) = veth_pair("twbench-eg-a", "twbench-eg-b", "10.252.9")?;
    let (_routed_ns, routed) = routed()?;
    let client = bench.create("eg-client", "app=egress-client")?;
    let twill =
        Pair { client_ns: client.netns.clone(), server_ns: OUTSIDE.into(), server_ip: "10.253.0.2".into() };
    // (workload, reference or mode) -> values; references are 0 bare,
    // 1 routed, modes 2 + index.
    let mut results: BTreeMap<(Workload, usize), Vec<f64>> = BTreeMap::new();
    let mut port = LAST_PORT + 2_000;
    for round in 0..ROUNDS {
        for k in 0..MODES.len() {
            let mode = (k + round) % MODES.len();
            bench.restart_agent(MODES[mode].1)?;
            for workload in WORKLOADS {
                let mut runs = vec![(2 + mode, &twill)];
                // The references once a round, next to alternating modes.
                if k == workload as usize % MODES.len() {
                    runs.extend([(0, &bare), (1, &routed)]);
                }
                for (key, pair) in runs {
                    port += 1;
                    results.entry((workload, key)).or_default().push(measure(pair, workload, port)?);
                }
            }
        }
    }
    bench.restart_agent(&[])?;
    bench.delete("eg-client")?;
    for workload in WORKLOADS {
        let (name, fmt) = workload.label();
        let bare = median(results[&(workload, 0)].clone());
        let routed = median(results[&(workload, 1)].clone());
        let stack = median(results[&(workload, 2 + STACK)].clone());
        for (mode, (label, _)) in MODES.iter().enumerate() {
            let twill = median(results[&(workload, 2 + mode)].clone());
            let against_stack =
                if mode == STACK { String::new() } else { format!("; {:.3} of the stack", twill / stack) };
            rows.push(Row {
                metric: format!("{name} endpoint -> outside, {label}, median of {ROUNDS}"),
                twill: fmt(twill),
                reference: format!("bare veth {}, routed by a namespace {}", fmt(bare), fmt(routed)),
                ratio: format!(
                    "{:.3} of bare ({:.2}x); {:.3} of routed{against_stack}",
                    twill / bare,
                    bare / twill,
                    twill / routed
                ),
            });
        }
    }
    Ok(())
}
