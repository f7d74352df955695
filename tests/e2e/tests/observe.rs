//! `twill observe` against a real agent: Hubble's filter flags narrow the
//! flows correctly, JSON has Hubble's field names, follow mode streams.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use twill_e2e::{wait_until, Node, Value};

fn observe(node: &Node, args: &[&str]) -> Vec<Value> {
    node.observe(args)
}

fn pod(ep: &Value) -> String {
    format!("{}/{}", ep["namespace"].as_str().unwrap_or(""), ep["pod_name"].as_str().unwrap_or(""))
}

fn dport(f: &Value) -> Option<u64> {
    f["l4"]["TCP"]["destination_port"].as_u64().or(f["l4"]["UDP"]["destination_port"].as_u64())
}

/// Setup shared by the filter checks: a -> b allowed (TCP 80, ICMP),
/// a -> prod/c denied.
fn traffic_node() -> (Node, String, String) {
    let node = Node::start("observe");
    node.twill_ok(&["namespace", "create", "prod"]);
    node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    let c = node.endpoint("c", "prod", "app=c");
    let (b_ip, c_ip) = (b["ipv4"].as_str().unwrap().to_string(), c["ipv4"].as_str().unwrap().to_string());
    let policy = node.state_dir.parent().unwrap().join("deny-c.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: deny-c, namespace: prod}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n",
    )
    .unwrap();
    node.twill_ok(&["policy", "import", policy.to_str().unwrap()]);
    let _srv = node.spawn_in("b", "default", &["socat", "TCP-LISTEN:80,reuseaddr,fork", "SYSTEM:echo ok"]);
    let target = format!("TCP:{b_ip}:80");
    assert!(wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&node.exec("a", "default", &["socat", "-T1", "-", &target]).stdout)
            .contains("ok")
    }));
    assert!(node.ping("a", "default", &b_ip));
    assert!(!node.ping("a", "default", &c_ip));
    // Traffic that does not involve a: b to the node itself.
    assert!(node.ping("b", "default", "10.200.0.1"));
    // Flows reach the ring asynchronously (the reader drains the kernel
    // ring in batches): wait for the last traffic's flows.
    assert!(wait_until(Duration::from_secs(10), || {
        !observe(&node, &["--verdict", "DROPPED"]).is_empty()
            && !observe(&node, &["--from-pod", "default/b", "--to-ip", "10.200.0.1"]).is_empty()
    }));
    (node, b_ip, c_ip)
}

#[test]
fn filters_narrow_results_and_json_matches_hubble() {
    let (node, b_ip, c_ip) = traffic_node();
    let all = observe(&node, &["--all"]);
    assert!(all.len() >= 6, "{} flows", all.len());

    // Hubble's JSON shape.
    let syn = all
        .iter()
        .find(|f| f["l4"]["TCP"]["flags"]["SYN"] == true && f["l4"]["TCP"]["flags"].get("ACK").is_none())
        .expect("a SYN flow");
    for key in [
        "time",
        "verdict",
        "IP",
        "l4",
        "source",
        "destination",
        "Type",
        "node_name",
        "event_type",
        "traffic_direction",
        "Summary",
    ] {
        assert!(syn.get(key).is_some(), "missing {key} in {syn}");
    }
    assert_eq!(syn["Type"], "L3_L4");
    assert_eq!(syn["IP"]["ipVersion"], "IPv4");
    assert_eq!(syn["source"]["pod_name"], "a");
    assert!(syn["source"]["labels"].as_array().unwrap().iter().any(|l| l == "k8s:app=a"));
    assert!(syn["time"].as_str().unwrap().ends_with('Z'));

    type Check = Box<dyn Fn(&Value) -> bool>;
    let cases: Vec<(Vec<&str>, Check)> = vec![
        (
            vec!["--pod", "default/a"],
            Box::new(|f| pod(&f["source"]) == "default/a" || pod(&f["destination"]) == "default/a"),
        ),
        (vec!["--from-pod", "default/a"], Box::new(|f| pod(&f["source"]) == "default/a")),
        (vec!["--to-pod", "default/b"], Box::new(|f| pod(&f["destination"]) == "default/b")),
        (
            vec!["--namespace", "prod"],
            Box::new(|f| f["source"]["namespace"] == "prod" || f["destination"]["namespace"] == "prod"),
        ),
        (vec!["--to-namespace", "prod"], Box::new(|f| f["destination"]["namespace"] == "prod")),
        (
            vec!["--label", "app=b"],
            Box::new(|f| {
                [&f["source"], &f["destination"]]
                    .iter()
                    .any(|e| e["labels"].as_array().is_some_and(|l| l.iter().any(|x| x == "k8s:app=b")))
            }),
        ),
        (
            vec!["--from-label", "app=a"],
            Box::new(|f| f["source"]["labels"].as_array().unwrap().iter().any(|x| x == "k8s:app=a")),
        ),
        (
            vec!["--to-ip", &c_ip],
            Box::new({
                let c = c_ip.clone();
                move |f| f["IP"]["destination"] == c.as_str()
            }),
        ),
        (
            vec!["--ip", &b_ip],
            Box::new({
                let b = b_ip.clone();
                move |f| f["IP"]["source"] == b.as_str() || f["IP"]["destination"] == b.as_str()
            }),
        ),
        (vec!["--to-port", "80"], Box::new(|f| dport(f) == Some(80))),
        (vec!["--port", "80"], Box::new(|f| dport(f) == Some(80) || f["l4"]["TCP"]["source_port"] == 80)),
        (vec!["--protocol", "icmp"], Box::new(|f| f["l4"].get("ICMPv4").is_some())),
        (vec!["--verdict", "DROPPED"], Box::new(|f| f["verdict"] == "DROPPED")),
        (vec!["--type", "drop"], Box::new(|f| f["event_type"]["type"] == 1)),
        (vec!["--type", "trace"], Box::new(|f| f["event_type"]["type"] == 4)),
        (vec!["--type", "policy-verdict"], Box::new(|f| f["event_type"]["type"] == 5)),
        (vec!["--tcp-flags", "SYN"], Box::new(|f| f["l4"]["TCP"]["flags"]["SYN"] == true)),
        (vec!["--drop-reason-desc", "POLICY_DENIED"], Box::new(|f| f["drop_reason_desc"] == "POLICY_DENIED")),
        (vec!["--traffic-direction", "ingress"], Box::new(|f| f["traffic_direction"] == "INGRESS")),
        (vec!["--not", "--verdict", "DROPPED"], Box::new(|f| f["verdict"] != "DROPPED")),
        (vec!["--node-name", &node.name], Box::new(|_| true)),
    ];
    for (args, check) in &cases {
        let mut full = vec!["--all"];
        full.extend(args.iter().copied());
        let got = observe(&node, &full);
        assert!(!got.is_empty(), "{args:?} matched nothing");
        if let Some(bad) = got.iter().find(|f| !check(f)) {
            panic!("{args:?} let through {bad}");
        }
        if !args.contains(&"--node-name") {
            assert!(got.len() < all.len(), "{args:?} did not narrow anything");
        }
    }
    // Identities, by number.
    let a_identity = syn["source"]["identity"].as_u64().unwrap().to_string();
    let got = observe(&node, &["--all", "--from-identity", &a_identity]);
    assert!(
        !got.is_empty()
            && got.iter().all(|f| f["source"]["identity"].as_u64().unwrap().to_string() == a_identity)
    );
    assert!(observe(&node, &["--all", "--node-name", "elsewhere"]).is_empty());

    // Selection: --first, --last, default 20.
    let first = observe(&node, &["--first", "2"]);
    assert_eq!(first, all[..2].to_vec());
    let last = observe(&node, &["--last", "3"]);
    assert_eq!(last, all[all.len() - 3..].to_vec());
    assert_eq!(observe(&node, &[]).len(), all.len().min(20));
    assert!(observe(&node, &["--since", "1h"]).len() >= all.len(), "everything happened in the last hour");
    assert!(observe(&node, &["--until", "2020-01-01T00:00:00Z"]).is_empty(), "nothing before 2020");

    // The compact line names both ends and the verdict.
    let out = Command::new(twill_e2e::bin_dir().join("twill"))
        .args(["observe", "--server"])
        .arg(format!("unix://{}", node.hubble_socket().display()))
        .args(["--verdict", "DROPPED", "--last", "1"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(line.contains("default/a") && line.contains("prod/c") && line.contains("DROPPED"), "{line}");
}

#[test]
fn follow_streams_new_flows_as_they_happen() {
    let node = Node::start("observe-follow");
    node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    let b_ip = b["ipv4"].as_str().unwrap().to_string();
    let mut follower = Command::new(twill_e2e::bin_dir().join("twill"))
        .args(["observe", "-f", "--protocol", "icmp", "--server"])
        .arg(format!("unix://{}", node.hubble_socket().display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Keep pinging until the follower shows the traffic (the stream may
    // start a moment after the command does).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        assert!(node.ping("a", "default", &b_ip));
        seen = rx.recv_timeout(Duration::from_millis(500)).ok();
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let line = seen.expect("a followed flow");
    assert!(line.contains("default/a") && line.contains("default/b") && line.contains("ICMPv4"), "{line}");
}

#[test]
fn monitor_streams_drops_with_cilium_reasons() {
    let node = Node::start("monitor");
    node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    let b_ip = b["ipv4"].as_str().unwrap().to_string();
    let policy = node.state_dir.parent().unwrap().join("deny.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: deny-b}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress: [{}]\n",
    )
    .unwrap();
    node.twill_ok(&["policy", "import", policy.to_str().unwrap()]);
    let spawn = |args: &[&str]| {
        let mut child = Command::new(twill_e2e::bin_dir().join("twill"))
            .arg("--socket")
            .arg(&node.socket)
            .arg("monitor")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        (child, rx)
    };
    let (mut json_child, json) = spawn(&["--type", "drop", "-o", "json"]);
    let (mut text_child, text) = spawn(&["--type", "drop"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut event, mut line) = (None, None);
    while (event.is_none() || line.is_none()) && Instant::now() < deadline {
        assert!(!node.ping("a", "default", &b_ip), "b denies all ingress");
        event = event.or_else(|| json.recv_timeout(Duration::from_millis(300)).ok());
        line = line.or_else(|| text.recv_timeout(Duration::from_millis(300)).ok());
    }
    for child in [&mut json_child, &mut text_child] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let event: Value = serde_json::from_str(&event.expect("a drop event")).unwrap();
    assert_eq!(event["type"], "drop");
    assert_eq!(event["reason"], 133);
    assert_eq!(event["description"], "Policy denied");
    assert_eq!(event["direction"], "ingress");
    assert_eq!(event["destination"], b_ip.as_str());
    let line = line.expect("a drop line");
    assert!(line.starts_with("xx drop (Policy denied)") && line.contains(&b_ip), "{line}");
}

/// Without --server, `twill observe` reads the flows of the agent that
/// --socket names, not a fixed path: two agents on one machine are each
/// observed through their own Hubble socket.
#[test]
fn observe_without_server_follows_the_agents_socket() {
    let nodes = [Node::start("obs-one"), Node::start("obs-two")];
    for node in &nodes {
        node.endpoint("a", "default", "app=a");
        let b = node.endpoint("b", "default", "app=b");
        assert!(wait_until(Duration::from_secs(5), || node.ping(
            "a",
            "default",
            b["ipv4"].as_str().unwrap()
        )));
    }
    for node in &nodes {
        let flows = || -> Vec<Value> {
            let out = node.twill(&["observe", "--all", "-o", "json"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| v.get("flow").cloned())
                .collect()
        };
        assert!(wait_until(Duration::from_secs(5), || !flows().is_empty()), "flows of {}", node.name);
        let names: std::collections::BTreeSet<String> =
            flows().iter().map(|f| f["node_name"].as_str().unwrap_or("").to_string()).collect();
        assert_eq!(names, [node.name.clone()].into(), "only {}'s flows", node.name);
    }
}
