//! Agent events through Hubble's GetAgentEvents: what the agent did,
//! read by `twill observe agent-events` and, unchanged, by the upstream
//! `hubble observe agent-events`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use twill_e2e::{bin_dir, cluster::Cluster, ip_of, wait_until, Node};

fn hubble_events(node: &Node, args: &[&str]) -> String {
    twill_e2e::hubble_observe_events(node, "agent-events", args)
}

const POLICY: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: from-host\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEntities: [host]}]\n";

#[test]
fn endpoint_and_policy_changes_are_agent_events_hubble_reads_unchanged() {
    let node = Node::start("agentev");
    node.endpoint("web", "default", "app=web");
    let file = node.state_dir.parent().unwrap().join("from-host.yaml");
    std::fs::write(&file, POLICY).unwrap();
    node.twill_ok(&["policy", "import", file.to_str().unwrap()]);
    node.twill_ok(&["endpoint", "delete", "web"]);

    let json = node.twill_ok(&["observe", "agent-events", "--last", "50", "-o", "json"]);
    let events: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["agent_event"]["type"].as_str()).collect();
    let position = |kind: &str| {
        kinds.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("no {kind} in {kinds:?}"))
    };
    assert_eq!(position("AGENT_STARTED"), 0, "{kinds:?}");
    assert!(position("ENDPOINT_CREATED") < position("POLICY_UPDATED"), "{kinds:?}");
    assert!(position("POLICY_UPDATED") < position("ENDPOINT_DELETED"), "{kinds:?}");
    assert!(kinds.contains(&"ENDPOINT_REGENERATE_SUCCESS"), "{kinds:?}");
    let created = &events[position("ENDPOINT_CREATED")]["agent_event"]["endpoint_update"];
    assert_eq!(created["pod_name"], "web");
    assert_eq!(created["namespace"], "default");
    assert!(created["labels"].as_array().unwrap().iter().any(|l| l == "k8s:app=web"), "{created}");
    let policy = &events[position("POLICY_UPDATED")]["agent_event"]["policy_update"];
    assert!(
        policy["labels"].as_array().unwrap().iter().any(|l| l == "k8s:io.cilium.k8s.policy.name=from-host"),
        "{policy}"
    );
    assert_eq!(policy["revision"], "1");
    assert!(events.iter().all(|e| e["node_name"] == node.name.as_str()));

    // The upstream client prints exactly what twill prints, both formats.
    assert_eq!(json, hubble_events(&node, &["--last", "50", "-o", "json"]));
    assert_eq!(
        node.twill_ok(&["observe", "agent-events", "--last", "50"]),
        hubble_events(&node, &["--last", "50"])
    );
}

#[test]
fn following_agent_events_shows_them_as_they_happen() {
    let node = Node::start("agentevf");
    let mut follower = Command::new(bin_dir().join("twill"))
        .args(["--socket", node.socket.to_str().unwrap(), "observe", "agent-events", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    // Follow sends only what comes after it started; retry the create
    // until the stream is up (a create before that is not shown).
    let mut seen = false;
    for i in 0..20 {
        node.endpoint(&format!("late{i}"), "default", "app=late");
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            if line.contains("ENDPOINT_CREATED") && line.contains(&format!("pod name: late{i}")) {
                seen = true;
                break;
            }
        }
        if seen {
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(seen, "a followed stream shows the endpoint created after it began");
}

#[test]
fn remote_endpoints_arrive_as_ipcache_events_in_cluster_mode() {
    let mut cluster = Cluster::new("clev");
    for i in 0..2 {
        let node_ip = format!("192.168.{}.{}", cluster.fabric.subnet(), 10 + i);
        cluster.add_node(&[
            "--kvstore-endpoints",
            "{etcd}",
            "--node-ip",
            &node_ip,
            "--kvstore-lease-ttl",
            "3",
        ]);
    }
    let b = cluster.nodes[1].endpoint("b", "default", "app=db");
    let n0 = &cluster.nodes[0];
    let mut found = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let out = n0.twill_ok(&["observe", "agent-events", "--all", "-o", "json"]);
            found = out
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|e| e["agent_event"]["ipcache_update"]["cidr"] == format!("{}/32", ip_of(&b)));
            found.is_some()
        }),
        "no IPCACHE_UPSERTED for b at n0"
    );
    let event = found.unwrap();
    assert_eq!(event["agent_event"]["type"], "IPCACHE_UPSERTED");
    let update = &event["agent_event"]["ipcache_update"];
    assert_eq!(update["identity"].as_u64(), b["identity"].as_u64());
    assert_eq!(update["host_ip"], cluster.nodes[1].node_ip());
    assert_eq!(update["pod_name"], "b");
}
