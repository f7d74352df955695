//! Checks a rendered registry with Prometheus' own linter, `promtool check
//! metrics` (Debian/Ubuntu package `prometheus`). Set `PROMTOOL` to use a
//! promtool that is not on `PATH`. A missing promtool fails the test.

use std::{
    fs,
    io::ErrorKind,
    process::{Command, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use twill_metrics::{
    flow::{
        layer4::Protocol, layer7::Record, CiliumEventType, DropReason, Endpoint, Flow, Http, IcmPv4, Ip,
        IpVersion, Layer4, Layer7, LostEvent, LostEventSource, Tcp, TcpFlags, TraceObservationPoint,
        TrafficDirection, Verdict,
    },
    HubbleMetrics, Registry, DEFAULT_BUCKETS, LOST_OBSERVER_EVENTS_QUEUE,
};
use twill_numbers::{
    MESSAGE_TYPE_ACCESS_LOG, MESSAGE_TYPE_DROP, MESSAGE_TYPE_POLICY_VERDICT, MESSAGE_TYPE_TRACE,
};

/// A registry with samples in every Hubble family plus one gauge, one
/// histogram and hostile label values.
fn populated_registry() -> Registry {
    let registry = Registry::new();
    let hubble = HubbleMetrics::new(&registry);
    let ev = |ty| Some(CiliumEventType { r#type: ty, sub_type: 0 });
    let l4 = |p| Some(Layer4 { protocol: Some(p) });
    let syn = TcpFlags { syn: true, ..TcpFlags::default() };
    let base = Flow {
        ip: Some(Ip { ip_version: IpVersion::IPv4 as i32, ..Ip::default() }),
        is_reply: Some(false),
        source: Some(Endpoint { identity: 1234, ..Endpoint::default() }),
        ..Flow::default()
    };
    let forwarded_syn = Flow {
        verdict: Verdict::Forwarded as i32,
        event_type: ev(MESSAGE_TYPE_TRACE),
        trace_observation_point: TraceObservationPoint::ToEndpoint as i32,
        l4: l4(Protocol::Tcp(Tcp { source_port: 40000, destination_port: 80, flags: Some(syn) })),
        ..base.clone()
    };
    let dropped_ping = Flow {
        verdict: Verdict::Dropped as i32,
        drop_reason_desc: DropReason::PolicyDenied as i32,
        event_type: ev(MESSAGE_TYPE_DROP),
        l4: l4(Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 })),
        ..base.clone()
    };
    let policy_verdict = Flow {
        verdict: Verdict::Forwarded as i32,
        event_type: ev(MESSAGE_TYPE_POLICY_VERDICT),
        traffic_direction: TrafficDirection::Ingress as i32,
        policy_match_type: 2,
        l4: forwarded_syn.l4.clone(),
        ..base.clone()
    };
    let l7 = Flow {
        verdict: Verdict::Forwarded as i32,
        event_type: ev(MESSAGE_TYPE_ACCESS_LOG),
        l7: Some(Layer7 { record: Some(Record::Http(Http::default())), ..Layer7::default() }),
        ..base.clone()
    };
    for flow in [&forwarded_syn, &dropped_ping, &policy_verdict, &l7] {
        hubble.observe(flow);
    }
    hubble.lost(LOST_OBSERVER_EVENTS_QUEUE, 4);
    hubble.lost_event(&LostEvent {
        source: LostEventSource::PerfEventRingBuffer as i32,
        num_events_lost: 2,
        ..LostEvent::default()
    });

    let endpoints = registry.gauge("twill_endpoints", "Local endpoints by state", &["state"]);
    endpoints.set(&["ready"], 3.0);
    endpoints.set(&["odd \"state\"\\with\nnewline"], 1.0);
    let latency = registry.histogram(
        "twill_policy_compile_duration_seconds",
        "Time to compile\na policy (with \\ in help)",
        &["kind"],
        DEFAULT_BUCKETS,
    );
    latency.observe(&["l3"], 0.003);
    latency.observe(&["l3"], 0.2);
    latency.observe(&["l4"], 20.0);
    registry.counter("twill_never_used_total", "A family without samples", &["x"]);
    registry
}

#[test]
fn promtool_check_metrics_is_clean() {
    let text = populated_registry().render();
    for family in [
        "hubble_flows_processed_total{",
        "hubble_drop_total{",
        "hubble_tcp_flags_total{",
        "hubble_port_distribution_total{",
        "hubble_icmp_total{",
        "hubble_policy_verdicts_total{",
        "hubble_lost_events_total{",
        "twill_endpoints{",
        "twill_policy_compile_duration_seconds_bucket{",
    ] {
        assert!(text.contains(family), "no {family}...}} sample in:\n{text}");
    }

    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let path = std::env::temp_dir().join(format!("twill-metrics-{}-{nanos}.prom", std::process::id()));
    fs::write(&path, &text).unwrap();

    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let output = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(fs::File::open(&path).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let _ = fs::remove_file(&path);
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{promtool}` not found: this test needs Prometheus' promtool. Install the Debian/Ubuntu \
             package `prometheus` (apt-get install -y prometheus; scripts/setup.sh should list it), \
             or set PROMTOOL=/path/to/promtool"
        ),
        Err(e) => panic!("cannot run `{promtool}`: {e}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "promtool check metrics failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\ninput:\n{text}",
        output.status
    );
}
