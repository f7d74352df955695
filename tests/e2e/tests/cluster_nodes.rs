//! Node selectors in cluster mode: each node has an identity for its
//! labels, which its own traffic carries on the other nodes, so that
//! `fromNodes` picks nodes by label and `remote-node` covers them all,
//! while endpoints on those nodes stay endpoints.

use std::time::Duration;

use twill_e2e::{
    cluster::{Cluster, ClusterNode},
    ip_of, wait_until,
};

const LEASE_TTL: &str = "3";

fn join<'a>(cluster: &'a mut Cluster, mode: &str, labels: &str) -> &'a mut ClusterNode {
    cluster.join(mode, &["--kvstore-lease-ttl", LEASE_TTL, "--node-labels", labels])
}

fn node_identity(observer: &ClusterNode, name: &str) -> Option<u64> {
    let nodes = observer.twill_json(&["node", "list"]);
    nodes.as_array()?.iter().find(|n| n["name"] == name)?["identity"].as_u64()
}

fn ipcache_identity(node: &ClusterNode, ip: &str) -> Option<u64> {
    let entries = node.twill_json(&["bpf", "ipcache", "list"]);
    entries.as_array()?.iter().find(|e| e["cidr"] == format!("{ip}/32"))?["identity"].as_u64()
}

/// A TCP request from the node's own namespace (not from an endpoint).
fn host_request(node: &ClusterNode, target: &str) -> Result<String, String> {
    let connect = format!("TCP:{target},connect-timeout=2");
    let out = node.net().cmd(&["socat", "-t2", "-T3", "-", &connect]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn import(node: &ClusterNode, tag: &str, yaml: &str) {
    let file = std::env::temp_dir().join(format!("twill-{tag}-{}.yaml", std::process::id()));
    std::fs::write(&file, yaml).unwrap();
    node.twill_ok(&["policy", "import", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
}

const FROM_ZONE_A: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: db-from-zone-a
spec:
  endpointSelector:
    matchLabels:
      app: db
  ingress:
  - fromNodes:
    - matchLabels:
        zone: a
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
"#;

const FROM_REMOTE_NODES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: db-from-remote-nodes
spec:
  endpointSelector:
    matchLabels:
      app: db
  ingress:
  - fromEntities: [remote-node]
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
"#;

fn policy_names(node: &ClusterNode) -> Vec<String> {
    node.twill_json(&["policy", "get"])["policies"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["name"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn nodes_are_selected_by_their_labels(tag: &str, mode: &str) {
    let mut cluster = Cluster::new(tag);
    join(&mut cluster, mode, "zone=a");
    join(&mut cluster, mode, "zone=a");
    join(&mut cluster, mode, "zone=b");
    let (n0, n1, n2) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);

    // Every node knows every node's identity; the same labels make the
    // same number, and none is plain remote-node.
    let mut ids = Vec::new();
    for node in [n0, n1, n2] {
        let mut id = None;
        wait_until(Duration::from_secs(15), || {
            id = node_identity(n0, &node.name);
            id.is_some()
        });
        let id = id.unwrap_or_else(|| panic!("{} never listed on {}", node.name, n0.name));
        assert!(id > 255, "{} has a node identity of its own: {id}", node.name);
        ids.push(id);
    }
    assert_eq!(ids[0], ids[1], "zone=a on both nodes: one identity");
    assert_ne!(ids[1], ids[2], "zone=b is another identity");
    let identity = n0.twill_json(&["identity", "get", &ids[2].to_string()]);
    let labels = identity.to_string();
    assert!(
        labels.contains("reserved:remote-node") && labels.contains("node:zone=b"),
        "node identity labels: {identity}"
    );
    for (node, id) in [(n1, ids[1]), (n2, ids[2])] {
        assert!(
            wait_until(Duration::from_secs(15), || ipcache_identity(n0, node.node_ip()) == Some(id)),
            "{}'s address is its identity {id} in n0's ipcache: {:?}",
            node.name,
            ipcache_identity(n0, node.node_ip())
        );
    }

    let db = n0.endpoint("db", "default", "app=db");
    n1.endpoint("client", "default", "app=client");
    let target = format!("{}:8080", ip_of(&db));
    let _server = n0.tcp_server("db", 8080);
    assert!(
        wait_until(Duration::from_secs(15), || n1.tcp_request("client", &target).is_ok()),
        "client reaches db before any policy: {:?}",
        n1.tcp_request("client", &target)
    );
    for node in [n1, n2] {
        assert!(
            wait_until(Duration::from_secs(15), || host_request(node, &target).is_ok()),
            "{} reaches db before any policy: {:?}",
            node.name,
            host_request(node, &target)
        );
    }

    import(n0, tag, FROM_ZONE_A);
    assert!(
        wait_until(Duration::from_secs(15), || host_request(n2, &target).is_err()),
        "zone=b is not let in: {:?}",
        host_request(n2, &target)
    );
    assert_eq!(
        host_request(n1, &target).as_deref(),
        Ok("db"),
        "zone=a is let in; n0 enforces {}",
        n0.twill_ok(&["bpf", "policy", "get", "db"]),
    );
    assert!(n1.tcp_request("client", &target).is_err(), "an endpoint on a zone=a node is not the node");
    let drops = n0.observe(&["--last", "1000", "--verdict", "DROPPED", "--to-pod", "default/db"]);
    assert!(
        drops
            .iter()
            .any(|f| f["source"]["identity"].as_u64() == Some(ids[2])
                && f["drop_reason_desc"] == "POLICY_DENIED"),
        "n0 reports n2's drop with n2's identity {}: {drops:#?}",
        ids[2]
    );

    n0.twill_ok(&["policy", "delete", "--all"]);
    import(n0, tag, FROM_REMOTE_NODES);
    assert!(
        wait_until(Duration::from_secs(15), || policy_names(n0) == ["db-from-remote-nodes"]),
        "{:?}",
        policy_names(n0)
    );
    for node in [n1, n2] {
        assert!(
            wait_until(Duration::from_secs(15), || host_request(node, &target).as_deref() == Ok("db")),
            "remote-node lets {} in: {:?}",
            node.name,
            host_request(node, &target)
        );
    }
    assert!(n1.tcp_request("client", &target).is_err(), "remote-node is no endpoint");
}

#[test]
fn from_nodes_selects_nodes_by_label_through_the_tunnel() {
    nodes_are_selected_by_their_labels("clnodt", "tunnel");
}

#[test]
fn from_nodes_selects_nodes_by_label_with_native_routing() {
    nodes_are_selected_by_their_labels("clnodn", "native");
}
