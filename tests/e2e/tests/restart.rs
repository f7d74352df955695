//! The datapath outlives the agent: kill -9, SIGTERM, restart, uninstall.

use std::{path::Path, time::Duration};

use twill_e2e::{wait_until, Node, Value};

/// Everything a restart must preserve, as the CLI shows it.
fn snapshot(node: &Node) -> (Value, Value, Value, Vec<String>) {
    (
        node.twill_json(&["endpoint", "list"]),
        node.twill_json(&["identity", "list"]),
        node.twill_json(&["bpf", "ipcache", "list"]),
        node.endpoint_netns(),
    )
}

fn host_devices(node: &Node) -> Vec<String> {
    let out = node.host_cmd(&["ip", "-o", "link", "show"]);
    let mut devices: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().split('@').next().unwrap().to_string()))
        .collect();
    devices.sort();
    devices
}

#[test]
fn kill_9_and_restart_keeps_traffic_and_state() {
    let mut node = Node::start("kill9");
    let a = node.endpoint("a", "default", "app=client");
    let b = node.endpoint("b", "default", "app=server");
    let b_ip = b["ipv4"].as_str().unwrap().to_string();
    let before = snapshot(&node);
    let devices_before = host_devices(&node);

    let _server = node.spawn_in("b", "default", &["iperf3", "-s", "-1"]);
    assert!(wait_until(Duration::from_secs(10), || {
        node.exec("b", "default", &["sh", "-c", "ss -ltn | grep -q :5201"]).status.success()
    }));
    let stream = node.spawn_in("a", "default", &["iperf3", "-c", &b_ip, "-t", "6", "-J"]);
    let ping = node.spawn_in("a", "default", &["ping", "-i", "0.05", "-c", "120", "-W", "1", &b_ip]);

    std::thread::sleep(Duration::from_millis(1000));
    node.stop_agent(libc::SIGKILL);
    // With no agent at all, the pinned programs keep forwarding.
    let a_netns = a["netns"].as_str().unwrap();
    assert!(Node::ping_from_netns(a_netns, &b_ip), "forwarding continues while the agent is down");
    node.start_agent();

    let stream = stream.wait_with_output();
    let report: Value = serde_json::from_slice(&stream.stdout).expect("iperf3 JSON");
    assert!(stream.status.success(), "TCP stream survived: {}", String::from_utf8_lossy(&stream.stderr));
    let sent = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(sent > 0, "stream carried data: {report}");
    let ping = ping.wait_with_output();
    let ping_text = String::from_utf8_lossy(&ping.stdout);
    assert!(ping_text.contains("120 received"), "ping lost packets across the restart:\n{ping_text}");

    assert_eq!(snapshot(&node), before, "endpoints, IPs, identities and ipcache come back unchanged");
    assert_eq!(host_devices(&node), devices_before, "no device duplicated or leaked");
    let log = node.agent_log();
    assert!(log.contains("state restored endpoints=2"), "{log}");
}

#[test]
fn sigterm_leaves_the_datapath_running_and_uninstall_removes_everything() {
    let mut node = Node::start("term");
    let a = node.endpoint("a", "default", "");
    let b = node.endpoint("b", "default", "");
    let b_ip = b["ipv4"].as_str().unwrap().to_string();
    node.stop_agent(libc::SIGTERM);
    assert!(!node.socket.exists(), "socket removed on clean stop");
    let a_netns = a["netns"].as_str().unwrap();
    assert!(Node::ping_from_netns(a_netns, &b_ip), "forwarding continues after SIGTERM");
    node.start_agent();
    assert!(node.ping("a", "default", &b_ip));

    let out = node.twill_ok(&["uninstall"]);
    assert!(out.contains("Removed 2 endpoint(s)"), "{out}");
    assert!(wait_until(Duration::from_secs(5), || !node.agent_running()), "agent exits after uninstall");
    assert!(node.endpoint_netns().is_empty(), "endpoint namespaces removed");
    assert!(!Path::new(&node.bpf_root).exists(), "pins removed");
    assert!(!node.state_dir.exists(), "state removed");
    assert!(!node.socket.exists(), "socket removed");
    assert!(!node.hubble_socket().exists(), "observer socket removed");
    let devices = host_devices(&node);
    assert_eq!(devices, vec!["lo".to_string()], "only loopback is left on the node");
}

#[test]
fn leftovers_of_an_interrupted_create_are_collected_on_start() {
    let mut node = Node::start("gc");
    node.endpoint("a", "default", "app=a");
    node.stop_agent(libc::SIGKILL);
    // What a crash between plumbing and the record would leave behind.
    let stray = format!("twill_{}_default_ghost", node.name);
    twill_e2e::run_ok(std::process::Command::new("ip").args(["netns", "add", &stray]));
    twill_e2e::run_ok(std::process::Command::new("ip").args([
        "-n",
        &node.netns,
        "link",
        "add",
        "twep99",
        "type",
        "veth",
        "peer",
        "name",
        "twepx99",
    ]));
    node.start_agent();
    assert_eq!(node.endpoint_netns().len(), 1, "stray namespace collected");
    assert!(!host_devices(&node).contains(&"twep99".to_string()), "stray device collected");
    assert_eq!(node.twill_json(&["endpoint", "list"]).as_array().unwrap().len(), 1);
}

fn qdiscs(node: &Node, device: &str) -> String {
    String::from_utf8_lossy(&node.host_cmd(&["tc", "qdisc", "show", "dev", device]).stdout).into_owned()
}

#[test]
fn cls_bpf_endpoints_move_to_tcx_links_without_a_gap_and_back() {
    let mut node = Node::prepare("tcxmove", "10.200.0.0/24");
    node.agent_args = vec!["--endpoint-attach".into(), "cls-bpf".into()];
    node.start_agent();
    node.endpoint("a", "default", "");
    let b = node.endpoint("b", "default", "");
    let b_ip = b["ipv4"].as_str().unwrap().to_string();
    let b_dev = b["host_device"].as_str().unwrap().to_string();
    let pins = node.bpf_root.join("tcx").join(&b_dev);
    assert!(qdiscs(&node, &b_dev).contains("clsact"), "an older agent's filters");
    assert!(!pins.exists());

    // Pings every 20 ms across the restart into tcx: none lost.
    let ping = node.spawn_in("a", "default", &["ping", "-i", "0.02", "-c", "100", "-W", "1", &b_ip]);
    std::thread::sleep(Duration::from_millis(300));
    node.stop_agent(libc::SIGTERM);
    node.agent_args.clear();
    node.start_agent();
    let ping = ping.wait_with_output();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(text.contains("100 received"), "lost packets moving to tcx:\n{text}");
    assert!(!qdiscs(&node, &b_dev).contains("clsact"), "the clsact qdisc went: {}", qdiscs(&node, &b_dev));
    assert!(pins.join("ingress").exists() && pins.join("egress").exists(), "tcx links pinned");
    assert!(node.ping("a", "default", &b_ip), "forwarding over tcx");

    // And back, as a user with no shaper to chain might.
    node.stop_agent(libc::SIGTERM);
    node.agent_args = vec!["--endpoint-attach".into(), "cls-bpf".into()];
    node.start_agent();
    assert!(qdiscs(&node, &b_dev).contains("clsact"));
    assert!(!pins.exists(), "the tcx links went after the filters came");
    assert!(node.ping("a", "default", &b_ip), "forwarding over cls_bpf");
}
