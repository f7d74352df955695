//! twill-relay over three cluster-mode nodes, driven by the upstream
//! hubble CLI from node 0's namespace: one status, one node list and one
//! time-ordered flow stream for the whole cluster, and a node that dies
//! reported Unavailable while the others keep serving.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;
use twill_e2e::{
    bin_dir,
    cluster::{Cluster, ClusterNode},
    hubble_cli, ip_of,
    pki::Pki,
    wait_until,
};

const RELAY: &str = "127.0.0.1:4245";
const TLS_RELAY: &str = "127.0.0.1:4246";

/// A cluster-mode node with its Hubble server on the fabric. The lease is
/// long so a killed agent stays a listed (unavailable) peer for the test's
/// length instead of leaving the cluster.
fn join(cluster: &mut Cluster) -> &mut ClusterNode {
    cluster.join("tunnel", &["--kvstore-lease-ttl", "120", "--hubble-listen-address", "0.0.0.0:4244"])
}

/// A process in a node's network namespace, killed on drop.
struct InNetns(Child);

impl InNetns {
    fn spawn(netns: &str, program: &Path, args: &[&str], stdout: Stdio) -> InNetns {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} in {netns}: {e}", program.display()));
        InNetns(child)
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hubble(node: &ClusterNode, args: &[&str]) -> Output {
    let cli = hubble_cli();
    let mut all = vec![cli.to_str().unwrap()];
    all.extend_from_slice(args);
    node.net().cmd(&all)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `hubble observe --server RELAY ARGS -o json`: every response line.
fn observe(node: &ClusterNode, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["observe", "--server", RELAY, "-o", "json"];
    all.extend_from_slice(args);
    let out = hubble(node, &all);
    assert!(out.status.success(), "hubble observe {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `hubble observe agent-events --server RELAY ARGS -o json`: every event.
fn agent_events(node: &ClusterNode, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["observe", "agent-events", "--server", RELAY, "-o", "json"];
    all.extend_from_slice(args);
    let out = hubble(node, &all);
    assert!(out.status.success(), "hubble observe agent-events {args:?}: {}", text(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.iter().all(|l| l.get("agent_event").is_some()), "{lines:?}");
    lines
}

fn flows(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l.get("flow").is_some()).collect()
}

/// RFC 3339 with 0-9 fraction digits, as protobuf JSON writes it, made
/// comparable: seconds part and nanoseconds.
fn time_key(t: &str) -> (String, u32) {
    let t = t.trim_end_matches('Z');
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    let nanos = format!("{frac:0<9}").parse().unwrap_or_else(|e| panic!("{e}: {t}"));
    (secs.to_string(), nanos)
}

/// The node names in `hubble list nodes` whose line says `state`.
fn nodes_in(node: &ClusterNode, state: &str) -> Vec<String> {
    let out = hubble(node, &["list", "nodes", "--server", RELAY]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some(state))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn the_relay_serves_every_nodes_flows_in_one_ordered_stream_and_survives_a_dead_node() {
    let mut cluster = Cluster::new("rly");
    for _ in 0..3 {
        join(&mut cluster);
    }
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let n0 = &cluster.nodes[0];
    assert!(
        wait_until(Duration::from_secs(15), || n0.twill_json(&["node", "list"]).as_array().map(Vec::len)
            == Some(3)),
        "three nodes in the cluster"
    );

    let a = cluster.nodes[0].endpoint("a", "default", "app=a");
    let b = cluster.nodes[1].endpoint("b", "default", "app=b");
    let c = cluster.nodes[2].endpoint("c", "default", "app=c");
    let pairs = [(0, "a", &b), (1, "b", &c), (2, "c", &a)];
    for (i, from, to) in pairs {
        let node = &cluster.nodes[i];
        assert!(
            wait_until(Duration::from_secs(15), || node.ping(from, "default", &ip_of(to))),
            "ping {from} -> {}",
            ip_of(to)
        );
    }

    let n0 = &cluster.nodes[0];
    let relay_bin = bin_dir().join("twill-relay");
    let _relay = InNetns::spawn(
        n0.netns(),
        &relay_bin,
        &["--peer-service", "127.0.0.1:4244", "--listen-address", RELAY],
        Stdio::null(),
    );

    // Status: every node connected.
    let mut last = String::new();
    let all_up = wait_until(Duration::from_secs(20), || {
        last = text(&hubble(n0, &["status", "--server", RELAY]));
        last.contains("Connected Nodes: 3/3")
    });
    assert!(all_up, "hubble status through the relay: {last}");
    assert!(last.contains("Healthcheck"), "{last}");

    let mut connected = nodes_in(n0, "Connected");
    connected.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(
        connected,
        want,
        "hubble list nodes: {}",
        text(&hubble(n0, &["list", "nodes", "--server", RELAY]))
    );

    // Flows from several nodes, each with its node's name, in time order.
    let lines = observe(n0, &["--last", "100"]);
    let got = flows(&lines);
    assert!(!got.is_empty(), "flows through the relay: {} lines", lines.len());
    assert!(got.len() <= 100, "--last 100 across the cluster, not per node: {}", got.len());
    let mut from_nodes: Vec<&str> = got.iter().filter_map(|l| l["node_name"].as_str()).collect();
    for l in &got {
        assert_eq!(l["node_name"], l["flow"]["node_name"], "{l}");
    }
    from_nodes.sort();
    from_nodes.dedup();
    assert!(from_nodes.len() >= 2, "flows from at least two nodes: {from_nodes:?}");
    let times: Vec<(String, u32)> =
        got.iter().map(|l| time_key(l["flow"]["time"].as_str().unwrap())).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "flows in time order: {times:?}");

    // A node-name filter reaches the nodes.
    let only = observe(n0, &["--last", "100", "--node-name", &names[1]]);
    let only = flows(&only);
    assert!(!only.is_empty(), "flows of {}", names[1]);
    assert!(only.iter().all(|l| l["node_name"] == names[1].as_str()), "{only:?}");

    // Follow: a new flow arrives while the stream is open.
    let cli = hubble_cli();
    let mut follow = InNetns::spawn(
        n0.netns(),
        &cli,
        &["observe", "--server", RELAY, "-o", "json", "-f", "--to-pod", "default/b"],
        Stdio::piped(),
    );
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = follow.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    let mut followed = None;
    let arrived = wait_until(Duration::from_secs(15), || {
        n0.ping("a", "default", &ip_of(&b));
        while let Ok(v) = rx.try_recv() {
            if v.get("flow").is_some() {
                followed = Some(v);
            }
        }
        followed.is_some()
    });
    assert!(arrived, "a live flow to b through the relay's follow stream");
    drop(follow);

    // Agent events of every node, each with its node's name, in time order.
    let events = agent_events(n0, &["--last", "100"]);
    let mut event_nodes: Vec<&str> = events.iter().filter_map(|e| e["node_name"].as_str()).collect();
    event_nodes.sort();
    event_nodes.dedup();
    assert_eq!(
        event_nodes,
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "agent events from every node"
    );
    for name in &names {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e["node_name"] == name.as_str())
            .filter_map(|e| e["agent_event"]["type"].as_str())
            .collect();
        assert!(kinds.contains(&"AGENT_STARTED"), "{name}: {kinds:?}");
        assert!(kinds.contains(&"ENDPOINT_CREATED"), "{name}: {kinds:?}");
    }
    let times: Vec<(String, u32)> = events.iter().map(|e| time_key(e["time"].as_str().unwrap())).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "agent events in time order: {times:?}");
    let few = agent_events(n0, &["--last", "2"]);
    assert_eq!(few.len(), 2, "--last 2 across the cluster, not per node: {few:?}");
    assert_eq!(few[..], events[events.len() - 2..], "the cluster's two newest");
    let compact = text(&hubble(
        n0,
        &["observe", "agent-events", "--server", RELAY, "--last", "100", "--print-node-name"],
    ));
    for name in &names {
        assert!(compact.contains(name.as_str()), "{name} in the compact output: {compact}");
    }

    // Follow: an endpoint created on node 1 shows up, named by node 1.
    let mut follow = InNetns::spawn(
        n0.netns(),
        &cli,
        &["observe", "agent-events", "--server", RELAY, "-o", "json", "-f"],
        Stdio::piped(),
    );
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = follow.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    // The history arrives first; the new endpoint comes after it.
    std::thread::sleep(Duration::from_secs(2));
    let _d = cluster.nodes[1].endpoint("d", "default", "app=d");
    let n0 = &cluster.nodes[0];
    let mut seen = None;
    let arrived = wait_until(Duration::from_secs(15), || {
        while let Ok(v) = rx.try_recv() {
            if v["agent_event"]["endpoint_update"]["pod_name"] == "d" {
                seen = Some(v);
            }
        }
        seen.is_some()
    });
    assert!(arrived, "the new endpoint's agent event through the relay's follow stream");
    assert_eq!(seen.unwrap()["node_name"], names[1].as_str());
    drop(follow);

    // Mutual TLS to clients: a second relay, certificates from a test CA.
    let tls_dir = std::env::temp_dir().join(format!("twill-relay-tls-{}", std::process::id()));
    let pki = Pki::new(&tls_dir, "relay.twill.test", "DNS:relay.twill.test");
    let _tls_relay = InNetns::spawn(
        n0.netns(),
        &relay_bin,
        &[
            "--peer-service",
            "127.0.0.1:4244",
            "--listen-address",
            TLS_RELAY,
            "--tls-cert",
            &pki.path("server.pem"),
            "--tls-key",
            &pki.path("server.key"),
            "--tls-client-ca",
            &pki.path("ca.pem"),
        ],
        Stdio::null(),
    );
    let ca = pki.path("ca.pem");
    let with_ca = ["--tls", "--tls-ca-cert-files", &ca, "--tls-server-name", "relay.twill.test"];
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let mut mutual: Vec<&str> = vec!["status", "--server", TLS_RELAY];
    mutual.extend_from_slice(&with_ca);
    mutual.extend_from_slice(&["--tls-client-cert-file", &cert, "--tls-client-key-file", &key]);
    let mut last = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            last = text(&hubble(n0, &mutual));
            last.contains("Connected Nodes: 3/3")
        }),
        "hubble status over mutual TLS: {last}"
    );
    let mut no_cert: Vec<&str> = vec!["status", "--server", TLS_RELAY];
    no_cert.extend_from_slice(&with_ca);
    let refused = hubble(n0, &no_cert);
    assert!(
        !refused.status.success() && !text(&refused).contains("Connected Nodes"),
        "a client without a certificate is refused: {}",
        text(&refused)
    );
    drop(pki);
    let _ = std::fs::remove_dir_all(&tls_dir);

    // Node 2's agent dies: reported Unavailable, the others still serve.
    cluster.nodes[2].stop_agent(libc::SIGKILL);
    let n0 = &cluster.nodes[0];
    assert!(
        wait_until(Duration::from_secs(15), || nodes_in(n0, "Unavailable") == vec![names[2].clone()]),
        "{} unavailable: {}",
        names[2],
        text(&hubble(n0, &["list", "nodes", "--server", RELAY]))
    );
    assert_eq!(nodes_in(n0, "Connected").len(), 2);
    let status = text(&hubble(n0, &["status", "--server", RELAY]));
    assert!(status.contains("Connected Nodes: 2/3"), "{status}");
    n0.ping("a", "default", &ip_of(&b));
    let lines = observe(n0, &["--last", "100"]);
    let got = flows(&lines);
    assert!(!got.is_empty(), "flows from the nodes still up: {} lines", lines.len());
    assert!(got.iter().all(|l| l["node_name"] != names[2].as_str()), "nothing from the dead node");
    let events = agent_events(n0, &["--last", "100"]);
    assert!(!events.is_empty(), "agent events from the nodes still up");
    assert!(events.iter().all(|e| e["node_name"] != names[2].as_str()), "nothing from the dead node");
}

#[test]
fn the_relay_reaches_nodes_over_mutual_tls_by_their_announced_server_names() {
    let mut cluster = Cluster::new("rlytls");
    let tls_dir = std::env::temp_dir().join(format!("twill-relay-peer-tls-{}", std::process::id()));
    // One certificate for every node: Cilium's per-node names under one
    // wildcard, and the loopback address the relay dials the peer service at.
    let pki = Pki::new(&tls_dir, "hubble", "DNS:*.default.hubble-grpc.cilium.io,IP:127.0.0.1");
    let (cert, key, ca) = (pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem"));
    for _ in 0..2 {
        cluster.join(
            "tunnel",
            &[
                "--hubble-listen-address",
                "0.0.0.0:4244",
                "--hubble-tls-cert",
                &cert,
                "--hubble-tls-key",
                &key,
                "--hubble-tls-client-ca",
                &ca,
            ],
        );
    }
    let n0 = &cluster.nodes[0];
    assert!(
        wait_until(Duration::from_secs(15), || n0.twill_json(&["node", "list"]).as_array().map(Vec::len)
            == Some(2)),
        "two nodes in the cluster"
    );
    let _relay = InNetns::spawn(
        n0.netns(),
        &bin_dir().join("twill-relay"),
        &[
            "--peer-service",
            "127.0.0.1:4244",
            "--listen-address",
            RELAY,
            "--tls-peer-ca",
            &ca,
            "--tls-peer-cert",
            &pki.path("client.pem"),
            "--tls-peer-key",
            &pki.path("client.key"),
        ],
        Stdio::null(),
    );
    let mut last = String::new();
    let up = wait_until(Duration::from_secs(20), || {
        last = text(&hubble(n0, &["status", "--server", RELAY]));
        last.contains("Connected Nodes: 2/2")
    });
    assert!(up, "both nodes through mutual TLS: {last}");
    drop(pki);
    let _ = std::fs::remove_dir_all(&tls_dir);
}
