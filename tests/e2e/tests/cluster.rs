//! Cluster mode: agents in separate node namespaces share one etcd,
//! started by the test on the fabric. Real pods on different nodes talk
//! through the VXLAN tunnel or by native routes, under one identity space
//! and policies imported on any node.

use std::{process::Command, time::Duration};

use serde_json::Value;
use twill_e2e::{
    cluster::{Cluster, ClusterNode},
    ip_of, wait_until,
};

/// A short lease, so a node that vanishes leaves the others' view within
/// seconds.
const LEASE_TTL: &str = "3";

/// Starts the next node in cluster mode with `mode` routing, on the pod
/// CIDR the harness picks for it.
fn join<'a>(cluster: &'a mut Cluster, mode: &str, extra: &[&str]) -> &'a mut ClusterNode {
    let mut flags = vec!["--kvstore-lease-ttl", LEASE_TTL];
    flags.extend_from_slice(extra);
    cluster.join(mode, &flags)
}

fn ipcache(node: &ClusterNode) -> Vec<Value> {
    node.twill_json(&["bpf", "ipcache", "list"]).as_array().cloned().unwrap_or_default()
}

fn ipcache_entry(node: &ClusterNode, ip: &str) -> Option<Value> {
    ipcache(node).into_iter().find(|e| e["cidr"] == format!("{ip}/32"))
}

fn wait_for_ipcache(node: &ClusterNode, ip: &str) -> Value {
    let mut found = None;
    wait_until(Duration::from_secs(15), || {
        found = ipcache_entry(node, ip);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("{ip} never reached {}'s ipcache: {:?}", node.name, ipcache(node)))
}

fn nodes(node: &ClusterNode) -> Vec<Value> {
    node.twill_json(&["node", "list"]).as_array().cloned().unwrap()
}

fn identity(ep: &Value) -> u64 {
    ep["identity"].as_u64().unwrap()
}

/// Pings, a TCP request and a UDP exchange from `a` on `na` to `b` on `nb`.
fn assert_connected(na: &ClusterNode, a: &str, nb: &ClusterNode, b: &str) {
    let b_ip = ip_of(&nb.twill_json(&["endpoint", "get", b]));
    assert!(wait_until(Duration::from_secs(10), || na.ping(a, "default", &b_ip)), "ping {a} -> {b} ({b_ip})");
    let _tcp = nb.tcp_server(b, 8080);
    assert_eq!(na.tcp_request(a, &format!("{b_ip}:8080")).as_deref(), Ok(b), "TCP {a} -> {b}");
    let _udp = nb.udp_server(b, 5353);
    let out = na.exec(a, "default", &["sh", "-c", &format!("echo q | socat -T2 - UDP:{b_ip}:5353")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), b, "UDP {a} -> {b}");
}

#[test]
fn pods_on_two_nodes_talk_through_the_tunnel_with_one_identity_space() {
    let mut cluster = Cluster::new("cltun");
    join(&mut cluster, "tunnel", &[]);
    join(&mut cluster, "tunnel", &[]);
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);

    let status = n0.twill_json(&["status"]);
    assert_eq!(status["mode"], "cluster");
    assert_eq!(status["kvstore"]["reachable"], true, "{status}");
    assert_eq!(status["kvstore"]["routing_mode"], "tunnel");
    // Both listed and alive: a heartbeat can lag its 3 s lease on a busy
    // machine for a moment, which the node list reports as it should.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let all = nodes(n0);
            all.len() == 2 && all.iter().all(|n| n["state"] == "alive")
        }),
        "{:?}",
        nodes(n0)
    );
    for node in nodes(n0) {
        let peer = if node["name"] == n0.name.as_str() { n0 } else { n1 };
        assert_eq!(node["node_ip"], peer.node_ip());
        assert_eq!(node["pod_cidr"], peer.twill_json(&["status"])["pod_cidr"]);
    }

    let a = n0.endpoint("a", "default", "app=web");
    let b = n1.endpoint("b", "default", "app=db");
    let c = n1.endpoint("c", "default", "app=web");
    assert_eq!(identity(&a), identity(&c), "same labels, same number on every node");
    assert_ne!(identity(&a), identity(&b));

    // n0 knows b as b's identity behind n1, and n1 itself by n1's node
    // identity (tests/cluster_nodes.rs covers what policy makes of it).
    let entry = wait_for_ipcache(n0, &ip_of(&b));
    assert_eq!(entry["identity"].as_u64(), Some(identity(&b)));
    assert_eq!(entry["tunnel_endpoint"], n1.node_ip());
    let node_entry = ipcache_entry(n0, n1.node_ip()).expect("n1's address in n0's ipcache");
    assert!(node_entry["identity"].as_u64() > Some(255), "other nodes have node identities: {node_entry}");
    wait_for_ipcache(n1, &ip_of(&a));

    let link = String::from_utf8(n0.net().cmd(&["ip", "-d", "link", "show", "twill_vxlan"]).stdout).unwrap();
    assert!(
        link.contains("external") && link.contains("dstport 8472"),
        "collect-metadata VXLAN on 8472: {link}"
    );

    assert_connected(n0, "a", n1, "b");
    assert_connected(n1, "c", n0, "a");
    // The node itself reaches pods elsewhere too (through the kernel's
    // tunnel route, as remote-node).
    assert!(n0.net().ping(&ip_of(&b)), "n0 itself -> b");

    // n1 names the remote sender by its pod and labels.
    let flows = n1.observe(&["--last", "200", "--to-pod", "default/b"]);
    let from_a = flows
        .iter()
        .find(|f| f["source"]["pod_name"] == "a")
        .unwrap_or_else(|| panic!("no flow from a at n1: {flows:?}"));
    assert_eq!(from_a["source"]["namespace"], "default");
    assert_eq!(from_a["source"]["identity"].as_u64(), Some(identity(&a)));
    assert!(from_a["source"]["labels"].as_array().unwrap().iter().any(|l| l == "k8s:app=web"), "{from_a}");
}

#[test]
fn native_routing_reaches_other_nodes_pods_by_routes_without_a_tunnel() {
    let mut cluster = Cluster::new("clnat");
    join(&mut cluster, "native", &[]);
    join(&mut cluster, "native", &[]);
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    let a = n0.endpoint("a", "default", "app=web");
    let b = n1.endpoint("b", "default", "app=db");
    wait_for_ipcache(n0, &ip_of(&b));
    wait_for_ipcache(n1, &ip_of(&a));

    let n1_cidr = n1.twill_json(&["status"])["pod_cidr"].as_str().unwrap().to_string();
    let routes =
        String::from_utf8(n0.net().cmd(&["ip", "-4", "route", "show", "proto", "116"]).stdout).unwrap();
    assert!(
        routes.contains(&format!("{n1_cidr} via {}", n1.node_ip())),
        "n0 routes n1's pod CIDR via n1: {routes}"
    );
    let tunnel = n0.net().cmd(&["ip", "link", "show", "twill_vxlan"]);
    assert!(!tunnel.status.success(), "native routing has no tunnel device");

    assert_connected(n0, "a", n1, "b");
    assert_connected(n1, "b", n0, "a");
    assert!(n0.net().ping(&ip_of(&b)), "n0 itself -> b");
    let flows = n1.observe(&["--last", "200", "--to-pod", "default/b"]);
    assert!(
        flows.iter().any(|f| f["source"]["identity"].as_u64() == Some(identity(&a))),
        "the receiver knows the sender's identity from the ipcache: {flows:?}"
    );
}

const DB_FROM_WEB: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: db-from-web
spec:
  endpointSelector:
    matchLabels:
      app: db
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: web
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
"#;

#[test]
fn a_policy_imported_on_one_node_is_enforced_on_every_node_with_remote_identities() {
    let mut cluster = Cluster::new("clpol");
    join(&mut cluster, "tunnel", &[]);
    join(&mut cluster, "tunnel", &[]);
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    n0.endpoint("web", "default", "app=web");
    n0.endpoint("other", "default", "app=other");
    let db = n1.endpoint("db", "default", "app=db");
    let db_ip = ip_of(&db);
    wait_for_ipcache(n0, &db_ip);
    let _server = n1.tcp_server("db", 8080);
    let target = format!("{db_ip}:8080");
    assert!(wait_until(Duration::from_secs(10), || n0.tcp_request("other", &target).is_ok()), "open before");

    let file = std::env::temp_dir().join(format!("twill-clpol-{}.yaml", std::process::id()));
    std::fs::write(&file, DB_FROM_WEB).unwrap();
    n0.twill_ok(&["policy", "import", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let revision = n0.twill_json(&["policy", "get"])["revision"].as_u64().unwrap().to_string();
    // Returns once every node enforces it: n1 denies at once after.
    n0.twill_ok(&["policy", "wait", &revision, "--all-nodes", "--timeout", "10"]);
    assert!(n0.tcp_request("other", &target).is_err(), "enforced on n1 when the wait returns");

    // n1 gets it from the store and enforces it on its endpoint, against
    // identities allocated on n0.
    assert!(
        wait_until(Duration::from_secs(10), || n1.twill_json(&["policy", "get"])["policies"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "db-from-web"))),
        "the policy reached n1: {}",
        n1.twill_json(&["policy", "get"])
    );
    assert!(
        wait_until(Duration::from_secs(10), || n0.tcp_request("other", &target).is_err()),
        "app=other is denied by n1"
    );
    assert_eq!(n0.tcp_request("web", &target).as_deref(), Ok("db"), "app=web is allowed");
    let drops = n1.observe(&["--last", "500", "--verdict", "DROPPED", "--to-pod", "default/db"]);
    assert!(
        drops.iter().any(|f| f["source"]["pod_name"] == "other" && f["drop_reason_desc"] == "POLICY_DENIED"),
        "n1 reports the remote sender's drop by name: {drops:?}"
    );

    // Deleted on n1, gone on n0's view and open again.
    n1.twill_ok(&["policy", "delete", "--all"]);
    assert!(
        wait_until(Duration::from_secs(10), || n0.twill_json(&["policy", "get"])["policies"]
            .as_array()
            .is_some_and(|p| p.is_empty())),
        "the delete reached n0"
    );
    assert!(wait_until(Duration::from_secs(10), || n0.tcp_request("other", &target).is_ok()), "open after");
}

#[test]
fn nodes_allocating_the_same_new_labels_at_once_agree_on_the_numbers() {
    let mut cluster = Cluster::new("clid");
    for _ in 0..4 {
        join(&mut cluster, "tunnel", &[]);
    }
    let nodes = &cluster.nodes;
    let created: Vec<Vec<(String, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                s.spawn(move || {
                    (0..3)
                        .map(|i| {
                            let labels = format!("app=burst{i}");
                            let ep = node.endpoint(&format!("e{i}"), "default", &labels);
                            (labels, identity(&ep))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for i in 0..3 {
        let numbers: Vec<u64> = created.iter().map(|per_node| per_node[i].1).collect();
        assert!(numbers.iter().all(|n| *n == numbers[0]), "app=burst{i} got {numbers:?} on the four nodes");
    }
    let distinct: std::collections::BTreeSet<u64> = created[0].iter().map(|(_, id)| *id).collect();
    assert_eq!(distinct.len(), 3, "different labels never share a number: {:?}", created[0]);
    // Every node lists the same identities.
    let listed = |node: &ClusterNode| -> Vec<u64> {
        let mut ids: Vec<u64> = node
            .twill_json(&["identity", "list"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["reserved"] == false)
            .map(|i| i["id"].as_u64().unwrap())
            .collect();
        ids.sort();
        ids
    };
    let first = listed(&nodes[0]);
    assert!(nodes.iter().all(|n| listed(n) == first), "identity lists differ");
}

#[test]
fn a_node_that_goes_away_leaves_every_other_nodes_view() {
    let mut cluster = Cluster::new("clgone");
    join(&mut cluster, "tunnel", &[]);
    join(&mut cluster, "tunnel", &[]);
    let b = cluster.nodes[1].endpoint("b", "default", "app=db");
    let n1_ip = cluster.nodes[1].node_ip().to_string();
    let n1_name = cluster.nodes[1].name.clone();
    wait_for_ipcache(&cluster.nodes[0], &ip_of(&b));
    assert!(ipcache_entry(&cluster.nodes[0], &n1_ip).is_some());

    // No goodbye: the lease lapses.
    cluster.nodes[1].stop_agent(libc::SIGKILL);
    let n0 = &cluster.nodes[0];
    assert!(
        wait_until(Duration::from_secs(20), || !nodes(n0).iter().any(|n| n["name"] == n1_name.as_str())),
        "n1 is still listed: {:?}",
        nodes(n0)
    );
    assert!(
        wait_until(Duration::from_secs(5), || ipcache_entry(n0, &ip_of(&b)).is_none()
            && ipcache_entry(n0, &n1_ip).is_none()),
        "n1's endpoint and address left n0's ipcache: {:?}",
        ipcache(n0)
    );
    // Nobody references app=db any more: its number is collected.
    let listed = || -> Vec<u64> {
        n0.twill_json(&["identity", "list"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["id"].as_u64())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(15), || !listed().contains(&identity(&b))),
        "identity {} of the gone node's endpoint is still allocated: {:?}",
        identity(&b),
        listed()
    );
}

#[test]
fn traffic_flows_while_etcd_is_paused_and_changes_fail_fast_then_resume() {
    let mut cluster = Cluster::new("cletcd");
    join(&mut cluster, "tunnel", &[]);
    join(&mut cluster, "tunnel", &[]);
    let a = cluster.nodes[0].endpoint("a", "default", "app=web");
    let b = cluster.nodes[1].endpoint("b", "default", "app=db");
    wait_for_ipcache(&cluster.nodes[0], &ip_of(&b));
    wait_for_ipcache(&cluster.nodes[1], &ip_of(&a));

    cluster.etcd.pause();
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert!(
        wait_until(Duration::from_secs(15), || n0.twill_json(&["status"])["kvstore"]["reachable"] == false),
        "status says the kvstore is down: {}",
        n0.twill_json(&["status"])
    );
    assert_connected(n0, "a", n1, "b");
    let started = std::time::Instant::now();
    let err = n0.twill_err(&["endpoint", "create", "late", "--labels", "app=late"]);
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast, took {:?}", started.elapsed());
    assert!(err.contains("kvstore") && err.contains("unreachable"), "{err}");
    assert!(n0.twill(&["endpoint", "get", "late"]).status.code() != Some(0), "nothing was created");

    cluster.etcd.resume();
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert!(
        wait_until(Duration::from_secs(20), || n0.twill_json(&["status"])["kvstore"]["reachable"] == true),
        "the agent reconnects by itself: {}",
        n0.twill_json(&["status"])
    );
    let late = n0.endpoint("late", "default", "app=late");
    wait_for_ipcache(n1, &ip_of(&late));
    // Whatever lapsed during the pause was put back.
    wait_for_ipcache(n1, &ip_of(&a));
    assert!(wait_until(Duration::from_secs(10), || nodes(n1).len() == 2));
}

#[test]
fn killing_an_agent_under_a_cross_node_stream_loses_nothing() {
    let mut cluster = Cluster::new("clkill");
    join(&mut cluster, "tunnel", &[]);
    join(&mut cluster, "tunnel", &[]);
    let a = cluster.nodes[0].endpoint("a", "default", "app=web");
    let b = cluster.nodes[1].endpoint("b", "default", "app=db");
    let b_ip = ip_of(&b);
    wait_for_ipcache(&cluster.nodes[0], &b_ip);
    let before = cluster.nodes[0].twill_json(&["status"]);
    let identities_before = cluster.nodes[0].twill_json(&["identity", "list"]);

    let _server = cluster.nodes[1].spawn_in("b", "default", &["iperf3", "-s", "-1", "-p", "5201"]);
    assert!(wait_until(Duration::from_secs(10), || {
        let netns = b["netns"].as_str().unwrap();
        Command::new("ip")
            .args(["netns", "exec", netns, "ss", "-H", "-tln", "sport = :5201"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    }));
    let client =
        cluster.nodes[0].spawn_in("a", "default", &["iperf3", "-c", &b_ip, "-p", "5201", "-t", "6", "-J"]);
    std::thread::sleep(Duration::from_secs(2));
    cluster.nodes[0].stop_agent(libc::SIGKILL);
    std::thread::sleep(Duration::from_secs(1));
    cluster.nodes[0].start_agent();
    let out = client.wait_with_output();
    assert!(out.status.success(), "the stream survived: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let intervals = report["intervals"].as_array().unwrap();
    let stalled = intervals.iter().filter(|i| i["sum"]["bytes"].as_u64() == Some(0)).count();
    assert_eq!(stalled, 0, "no second without data: {intervals:?}");

    let n0 = &cluster.nodes[0];
    let after = n0.twill_json(&["status"]);
    assert_eq!(after["pod_cidr"], before["pod_cidr"], "same pod CIDR after the restart");
    let a_after = n0.twill_json(&["endpoint", "get", "a"]);
    assert_eq!(ip_of(&a_after), ip_of(&a));
    assert_eq!(identity(&a_after), identity(&a));
    assert_eq!(n0.twill_json(&["identity", "list"]), identities_before, "identity numbers unchanged");
    wait_for_ipcache(&cluster.nodes[1], &ip_of(&a));
}

#[test]
fn a_service_defined_on_one_node_balances_over_backends_on_every_node() {
    let mut cluster = Cluster::new("clsvc");
    join(&mut cluster, "tunnel", &[]);
    join(&mut cluster, "tunnel", &[]);
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    let w0 = n0.endpoint("web0", "default", "app=web");
    let w1 = n1.endpoint("web1", "default", "app=web");
    n1.endpoint("client", "default", "app=client");
    let _s0 = n0.tcp_server("web0", 8080);
    let _s1 = n1.tcp_server("web1", 8080);
    wait_for_ipcache(n0, &ip_of(&w1));
    wait_for_ipcache(n1, &ip_of(&w0));

    let svc = n0.service_create(&["web", "--port", "80", "--target-port", "8080", "--selector", "app=web"]);
    let vip = twill_e2e::cluster_ip(&svc);
    // n1 has it from the store, with both nodes' endpoints as backends.
    let backends = |node: &ClusterNode| -> Vec<String> {
        let Ok(svc) = serde_json::from_str::<Value>(&String::from_utf8_lossy(
            &node.twill(&["service", "get", "web", "-o", "json"]).stdout,
        )) else {
            return Vec::new();
        };
        let mut out: Vec<String> = svc["frontends"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| f["backends"].as_array().cloned().unwrap_or_default())
            .filter_map(|b| b.as_str().map(String::from))
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let mut want = vec![format!("{}:8080", ip_of(&w0)), format!("{}:8080", ip_of(&w1))];
    want.sort();
    assert!(
        wait_until(Duration::from_secs(10), || backends(n1) == want),
        "n1's backends: {:?}",
        backends(n1)
    );
    assert_eq!(backends(n0), want, "n0's backends");
    assert_eq!(
        n1.twill_json(&["service", "get", "web"])["cluster_ip"],
        svc["cluster_ip"],
        "one ClusterIP across the cluster"
    );

    // A client on n1 reaches both, the remote one through the tunnel.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        if let Ok(who) = n1.tcp_request("client", &format!("{vip}:80")) {
            seen.insert(who);
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, ["web0".to_string(), "web1".to_string()].into(), "both nodes' backends answer");

    // Both nodes creating services at the same instant never share an
    // address: each is claimed in the store.
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = [n0, n1]
            .into_iter()
            .enumerate()
            .map(|(i, node)| {
                s.spawn(move || {
                    (0..6)
                        .map(|j| {
                            twill_e2e::cluster_ip(&node.service_create(&[
                                &format!("race{i}x{j}"),
                                "--port",
                                "80",
                            ]))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let distinct: std::collections::BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), ips.len(), "ClusterIPs handed out twice: {ips:?}");

    // Deleted on n1, gone from n0.
    n1.twill_ok(&["service", "delete", "web"]);
    assert!(
        wait_until(Duration::from_secs(10), || !n0.twill(&["service", "get", "web"]).status.success()),
        "the delete reached n0"
    );
}

#[test]
fn hubble_peers_are_the_clusters_nodes() {
    use twill_observe_proto::{
        peer::{peer_client::PeerClient, NotifyRequest},
        tonic::transport::Endpoint,
    };
    let mut cluster = Cluster::new("clpeer");
    let wildcard = ["--hubble-listen-address", "0.0.0.0:4244"];
    join(&mut cluster, "tunnel", &wildcard);
    join(&mut cluster, "tunnel", &wildcard);
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert!(wait_until(Duration::from_secs(10), || nodes(n0).len() == 2));
    // What Hubble's peer service tells a client (a relay, `hubble list
    // nodes` through one): every node, at its node address.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let announced: Vec<(String, String)> = rt.block_on(async {
        let channel = Endpoint::from_shared(format!("unix:{}", n0.hubble_socket().display()))
            .unwrap()
            .connect()
            .await
            .expect("connect to n0's Hubble socket");
        let mut stream =
            PeerClient::new(channel).notify(NotifyRequest {}).await.expect("Notify").into_inner();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                Ok(Ok(Some(n))) => seen.push((n.name, n.address)),
                _ => break,
            }
        }
        seen.sort();
        seen
    });
    let mut want: Vec<(String, String)> =
        [n0, n1].iter().map(|n| (n.name.clone(), format!("{}:4244", n.node_ip()))).collect();
    want.sort();
    assert_eq!(announced, want);
    // And each of those addresses serves Hubble over the fabric (from
    // n0's namespace: the fabric is not reachable from the machine's).
    let out = n0.net().cmd(&[
        twill_e2e::hubble_cli().to_str().unwrap(),
        "status",
        "--server",
        &format!("{}:4244", n1.node_ip()),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Healthcheck"),
        "n1's Hubble answers at its advertised address: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nodes_join_over_tls_and_take_distinct_pod_cidrs_from_the_pool_for_good() {
    let fabric = twill_e2e::cluster::Fabric::new("cltls");
    let etcd = fabric.start_etcd_tls();
    let mut cluster = Cluster { nodes: Vec::new(), etcd, fabric };
    let pki = cluster.etcd.pki().unwrap();
    let (ca, cert, key) = (pki.path("ca.pem"), pki.path("client.pem"), pki.path("client.key"));
    let pool = format!("10.{}.0.0/16", cluster.fabric.subnet());
    for i in 0..2u8 {
        let mut node = ClusterNode::prepare(cluster.fabric.add_node(i));
        node.pod_cidr = String::new();
        let node_ip = node.node_ip().to_string();
        node.agent_args.extend(
            [
                "--kvstore-endpoints",
                &cluster.etcd.endpoint(),
                "--kvstore-ca",
                &ca,
                "--kvstore-cert",
                &cert,
                "--kvstore-key",
                &key,
                "--node-ip",
                &node_ip,
                "--cluster-pool",
                &pool,
                "--kvstore-lease-ttl",
                LEASE_TTL,
            ]
            .map(String::from),
        );
        node.start_agent();
        cluster.nodes.push(node);
    }
    let cidr = |n: &ClusterNode| n.twill_json(&["status"])["pod_cidr"].as_str().unwrap().to_string();
    let (c0, c1) = (cidr(&cluster.nodes[0]), cidr(&cluster.nodes[1]));
    assert_ne!(c0, c1, "pod CIDRs are never shared");
    let prefix = format!("10.{}.", cluster.fabric.subnet());
    for c in [&c0, &c1] {
        assert!(c.starts_with(&prefix) && c.ends_with("/24"), "{c} is a /24 of {pool}");
    }
    assert_eq!(cluster.nodes[0].twill_json(&["status"])["kvstore"]["reachable"], true);
    let a = cluster.nodes[0].endpoint("a", "default", "app=web");
    wait_for_ipcache(&cluster.nodes[1], &ip_of(&a));

    // A restart keeps the CIDR (and the endpoint its address).
    cluster.nodes[0].stop_agent(libc::SIGTERM);
    cluster.nodes[0].start_agent();
    assert_eq!(cidr(&cluster.nodes[0]), c0);
    assert_eq!(ip_of(&cluster.nodes[0].twill_json(&["endpoint", "get", "a"])), ip_of(&a));

    // A third node asking for n1's CIDR is refused, naming the flag.
    let mut third = ClusterNode::prepare(cluster.fabric.add_node(2));
    third.pod_cidr = String::new();
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", third.netns()))
        .arg(ClusterNode::agent_binary())
        .args(third.agent_command())
        .args(["--kvstore-endpoints", &cluster.etcd.endpoint(), "--kvstore-ca", &ca])
        .args(["--kvstore-cert", &cert, "--kvstore-key", &key, "--node-ip", third.node_ip()])
        .args(["--cluster-pool", &pool, "--pod-cidr", &c1])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the agent must not start: {stderr}");
    assert!(stderr.contains("--pod-cidr") && stderr.contains(&c1), "{stderr}");
}

#[test]
fn agents_ride_out_an_etcd_restart_without_restarting() {
    let mut cluster = Cluster::new("clrest");
    join(&mut cluster, "tunnel", &[]);
    join(&mut cluster, "tunnel", &[]);
    let a = cluster.nodes[0].endpoint("a", "default", "app=web");
    wait_for_ipcache(&cluster.nodes[1], &ip_of(&a));

    cluster.etcd.stop();
    assert!(
        wait_until(Duration::from_secs(15), || cluster.nodes[0].twill_json(&["status"])["kvstore"]
            ["reachable"]
            == false),
        "status says the kvstore is down"
    );
    cluster.etcd.start();
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert!(
        wait_until(Duration::from_secs(20), || n1.twill_json(&["status"])["kvstore"]["reachable"] == true),
        "reconnected: {}",
        n1.twill_json(&["status"])
    );
    // The mirrors listed again and watch again: new state flows both ways.
    let b = n1.endpoint("b", "default", "app=db");
    wait_for_ipcache(n0, &ip_of(&b));
    wait_for_ipcache(n1, &ip_of(&a));
    assert!(n0.ping("a", "default", &ip_of(&b)), "a -> b after the restart");
}

#[test]
fn namespaces_are_cluster_wide_and_their_labels_follow_into_identities_everywhere() {
    let mut cluster = Cluster::new("clns");
    join(&mut cluster, "tunnel", &[]);
    join(&mut cluster, "tunnel", &[]);
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    n0.twill_ok(&["namespace", "create", "prod", "--labels", "env=prod"]);
    assert!(
        wait_until(Duration::from_secs(10), || n1.twill(&["namespace", "get", "prod"]).status.success()),
        "n1 knows the namespace n0 created"
    );
    let ep = n1.endpoint("api", "prod", "app=api");
    let before = identity(&ep);
    wait_for_ipcache(n0, &ip_of(&ep));

    // Relabelled on n0: the endpoint on n1 gets the identity of its new
    // labels, and n0 learns it.
    n0.twill_ok(&["namespace", "label", "prod", "tier=gold"]);
    let mut after = before;
    assert!(
        wait_until(Duration::from_secs(10), || {
            after = identity(&n1.twill_json(&["endpoint", "get", "api", "--namespace", "prod"]));
            after != before
        }),
        "the endpoint's identity follows its namespace's labels"
    );
    let labels = n1.twill_json(&["identity", "get", &after.to_string()])["labels"].to_string();
    assert!(labels.contains("tier=gold"), "{labels}");
    assert!(
        wait_until(Duration::from_secs(10), || ipcache_entry(n0, &ip_of(&ep))
            .is_some_and(|e| e["identity"].as_u64() == Some(after))),
        "n0's ipcache has the new identity"
    );
}
