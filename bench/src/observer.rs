//! Observer throughput and memory, in process: decoding datapath events
//! into flows and storing them (ingest), filtering the ring as GetFlows
//! does, and the memory one stored flow costs.

use std::{net::Ipv4Addr, time::Instant};

use twill_abi::FlowEvent;
use twill_observe::{
    decode, proto::flow, proto::observer::GetFlowsRequest, Clock, Directory, EndpointMeta, FlowRing,
};

pub struct ObserverResults {
    pub ingest_per_second: f64,
    pub filter_per_second: f64,
    pub bytes_per_flow: f64,
}

pub(crate) fn directory(endpoints: u32) -> Directory {
    let mut dir = Directory::new("bench");
    for id in 1..=endpoints {
        let identity = 256 + id % 20;
        dir.identities.insert(
            identity,
            vec![format!("k8s:app=app{}", id % 20), "k8s:io.kubernetes.pod.namespace=default".into()],
        );
        dir.add_endpoint(EndpointMeta {
            id,
            name: format!("pod-{id}"),
            namespace: "default".into(),
            ip: Ipv4Addr::new(10, 210, (id >> 8) as u8, id as u8),
            identity,
            host_device: format!("twep{id}"),
            ifindex: 100 + id,
        });
    }
    dir
}

pub(crate) fn event(i: u32) -> FlowEvent {
    let src = 1 + i % 100;
    let dst = 1 + (i / 7) % 100;
    FlowEvent {
        timestamp: i as u64 * 1000,
        kind: if i.is_multiple_of(10) { twill_abi::EVENT_DROP } else { twill_abi::EVENT_TRACE },
        reason: if i.is_multiple_of(10) { 133 } else { twill_abi::TRACE_TO_ENDPOINT },
        direction: twill_abi::DIR_INGRESS,
        ct_state: (i % 3) as u8,
        endpoint_id: dst,
        src_identity: 256 + src % 20,
        dst_identity: 256 + dst % 20,
        saddr: u32::from(Ipv4Addr::new(10, 210, 0, src as u8)).to_be(),
        daddr: u32::from(Ipv4Addr::new(10, 210, 0, dst as u8)).to_be(),
        sport: 30000 + (i % 1000) as u16,
        dport: 80 + (i % 3) as u16,
        protocol: 6,
        tcp_flags: 0x10,
        icmp_type: 0,
        icmp_code: 0,
        ifindex: 100 + dst,
        length: 1500,
        policy_match: 0,
        src_mac: [2, 0x74, 10, 210, 0, src as u8],
        dst_mac: [2, 0x77, 10, 210, 0, dst as u8],
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

pub fn run() -> ObserverResults {
    let dir = directory(100);
    let clock = Clock::now();

    // Ingest: decode and store, on this one thread.
    let ring = FlowRing::new(twill_observe::DEFAULT_CAPACITY);
    let n = 500_000u32;
    let start = Instant::now();
    for i in 0..n {
        ring.push(decode(&event(i), &dir, &clock));
    }
    let ingest_per_second = n as f64 / start.elapsed().as_secs_f64();

    // Filter: what a `--from-label app=app1 --verdict DROPPED` query costs,
    // in flows scanned per second over a full ring.
    let req = GetFlowsRequest {
        number: u64::MAX,
        whitelist: vec![flow::FlowFilter {
            source_label: vec!["app=app1".into()],
            verdict: vec![flow::Verdict::Dropped as i32],
            ..Default::default()
        }],
        ..Default::default()
    };
    let history = ring.snapshot();
    let rounds = 200;
    let start = Instant::now();
    let mut matched = 0;
    for _ in 0..rounds {
        matched += twill_observe::server::select_history(&history, &req).len();
    }
    let filter_per_second = (history.len() * rounds) as f64 / start.elapsed().as_secs_f64();
    assert!(matched > 0, "the benchmark filter should match something");

    // Memory: a ring of 100,000 flows, measured by resident memory.
    let flows = 100_000u32;
    let before = rss_bytes();
    let big = FlowRing::new(flows as usize);
    for i in 0..flows {
        big.push(decode(&event(i), &dir, &clock));
    }
    let bytes_per_flow = (rss_bytes().saturating_sub(before)) as f64 / flows as f64;
    drop(big);

    ObserverResults { ingest_per_second, filter_per_second, bytes_per_flow }
}
