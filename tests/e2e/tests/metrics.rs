//! The Prometheus endpoint: Hubble's flow metrics and Twill's own move
//! with real traffic, and promtool accepts the output.

use std::{io::Write, process::Stdio, time::Duration};

use twill_e2e::{metric_value, wait_until, Node};

#[test]
fn metrics_move_with_traffic_and_pass_promtool() {
    let node = Node::start("metrics");
    node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    let b_ip = b["ipv4"].as_str().unwrap().to_string();
    let before = node.metrics();
    assert_eq!(metric_value(&before, "twill_endpoints "), 2.0);

    // Allowed traffic, then a drop by policy.
    assert!(node.ping("a", "default", &b_ip));
    let policy = node.state_dir.parent().unwrap().join("deny.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: deny-b}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress: [{}]\n",
    )
    .unwrap();
    node.twill_ok(&["policy", "import", policy.to_str().unwrap()]);
    assert!(!node.ping("a", "default", &b_ip));

    let moved = wait_until(Duration::from_secs(10), || {
        let now = node.metrics();
        metric_value(&now, "hubble_drop_total{reason=\"POLICY_DENIED\",protocol=\"ICMPv4\"}") >= 1.0
            && metric_value(&now, "hubble_icmp_total{family=\"IPv4\",type=\"EchoRequest\"}") >= 1.0
    });
    let after = node.metrics();
    assert!(moved, "hubble metrics did not move:\n{after}");
    assert!(
        metric_value(
            &after,
            "hubble_flows_processed_total{type=\"Trace\",subtype=\"to-endpoint\",verdict=\"FORWARDED\"}"
        ) >= 1.0,
        "{after}"
    );
    assert!(
        metric_value(&after, "twill_drop_count_total{reason=\"Policy denied\",direction=\"ingress\"}") >= 1.0,
        "{after}"
    );
    assert!(metric_value(&after, "twill_forward_count_total{direction=\"egress\"}") >= 1.0);
    assert_eq!(metric_value(&after, "twill_policy_revision "), 1.0);
    assert!(metric_value(&after, "twill_bpf_map_entries{map=\"twill_policy\"}") >= 1.0);
    assert!(
        after.contains("twill_api_request_duration_seconds_bucket{operation=\"policy-import\""),
        "{after}"
    );
    for family in [
        "hubble_flows_processed_total",
        "hubble_drop_total",
        "hubble_tcp_flags_total",
        "hubble_port_distribution_total",
        "hubble_icmp_total",
        "hubble_policy_verdicts_total",
        "hubble_lost_events_total",
    ] {
        assert!(after.contains(&format!("# TYPE {family} counter")), "{family} missing");
    }

    // promtool (Debian's prometheus package) must accept it as is.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/setup.sh (package prometheus)");
    promtool.stdin.take().unwrap().write_all(after.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool: {report}");
}

/// Closed connections' conntrack entries lapse 10 s after the FIN; the
/// agent's sweep then removes them from the map (which is an LRU: left
/// there, they would make every new connection evict under the kernel's
/// lock once it filled), and its metrics say how many it removed.
#[test]
fn closed_connections_are_collected_from_conntrack() {
    let mut node = Node::prepare("ctgc", "10.200.0.0/24");
    node.agent_args = vec!["--conntrack-gc-interval".into(), "2s".into()];
    node.start_agent();
    node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    let target = format!("{}:7070", twill_e2e::ip_of(&b));
    let _server = node.tcp_server("b", 7070);
    for _ in 0..10 {
        assert_eq!(node.tcp_request("a", &target).as_deref(), Ok("b"));
    }
    let entries = |text: &str| metric_value(text, "twill_bpf_map_entries{map=\"twill_ct\"}");
    let before = node.metrics();
    assert!(entries(&before) >= 10.0, "the connections are tracked:\n{before}");
    assert!(metric_value(&before, "twill_datapath_conntrack_gc_runs_total{status=\"completed\"}") >= 0.0);

    // Closing entries live 10 s, a sweep runs every 2 s.
    let collected = wait_until(Duration::from_secs(40), || {
        let now = node.metrics();
        entries(&now) == 0.0
            && metric_value(
                &now,
                "twill_datapath_conntrack_gc_entries_total{map=\"twill_ct\",status=\"deleted\"}",
            ) >= 10.0
    });
    let after = node.metrics();
    assert!(collected, "lapsed entries were not collected:\n{after}");
    assert!(metric_value(&after, "twill_datapath_conntrack_gc_runs_total{status=\"completed\"}") >= 2.0);
    // Traffic after the sweep is tracked afresh.
    assert_eq!(node.tcp_request("a", &target).as_deref(), Ok("b"));

    // A bad interval is refused by name before anything starts.
    let out = std::process::Command::new(twill_e2e::bin_dir().join("twill-agent"))
        .args(["--conntrack-gc-interval", "soon", "--state-dir", "/nonexistent-twill-ctgc"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--conntrack-gc-interval"), "{stderr}");
}
