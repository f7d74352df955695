//! Flows name the service they belong to. A client's connect() to a
//! ClusterIP is rewritten to a backend at the socket, so its packets carry
//! the backend: the service is found by the backend, and `twill observe`
//! and the upstream hubble CLI filter on it with `--to-service` and
//! `--from-service`.

use std::{process::Command, time::Duration};

use twill_e2e::{cluster_ip, hubble_cli, ip_of, wait_until, Node, Value};

/// `hubble observe ARGS -o json` against the node's socket: the flows.
fn hubble_observe(node: &Node, args: &[&str]) -> Vec<Value> {
    node.observe_with(&hubble_cli(), args)
}

fn service(node: &Node, name: &str, selector: &str) -> String {
    cluster_ip(&node.service_create(&[name, "--port", "80", "--target-port", "8080", "--selector", selector]))
}

/// What identifies one flow across two readers of the ring.
fn key(f: &Value) -> (String, String, String) {
    (f["time"].to_string(), f["IP"].to_string(), f["l4"].to_string())
}

#[test]
fn flows_through_a_cluster_ip_name_the_service_both_ways() {
    let node = Node::start("svcflow");
    node.endpoint("client", "default", "app=client");
    let web1 = node.endpoint("web1", "default", "app=web");
    node.endpoint("db1", "default", "app=db");
    let _web = node.tcp_server("web1", 8080);
    let _db = node.tcp_server("db1", 8080);
    let vip = service(&node, "web", "app=web");
    service(&node, "other", "app=db");
    let target = format!("{vip}:80");
    assert!(
        wait_until(Duration::from_secs(10), || node.tcp_request("client", &target).as_deref() == Ok("web1"))
    );
    // Traffic that is no service's: ICMP to the backend.
    assert!(node.ping("client", "default", &ip_of(&web1)));

    let web = serde_json::json!({"name": "web", "namespace": "default"});
    let backend = ip_of(&web1);
    let mut requests = Vec::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            requests = node.observe(&["--all", "--to-service", "default/web"]);
            requests
                .iter()
                .any(|f| f["source"]["pod_name"] == "client" && f["l4"]["TCP"]["flags"]["SYN"] == true)
        }),
        "no SYN from the client to the service: {requests:?}"
    );
    for f in &requests {
        assert_eq!(f["destination_service"], web, "{f}");
        assert_eq!(f["IP"]["destination"], backend.as_str(), "the packets carry the backend: {f}");
        assert_eq!(f["l4"]["TCP"]["destination_port"], 8080, "{f}");
        assert_eq!(f["destination"]["pod_name"], "web1", "{f}");
    }
    // A bare name is a prefix in namespace "default", as in Hubble.
    let bare = node.observe(&["--all", "--to-service", "we"]);
    assert!(bare.len() >= requests.len() && bare.iter().all(|f| f["destination_service"] == web));

    let replies = node.observe(&["--all", "--from-service", "default/web"]);
    assert!(!replies.is_empty(), "no replies from the service");
    for f in &replies {
        assert_eq!(f["source_service"], web, "{f}");
        assert_eq!(f["IP"]["source"], backend.as_str(), "{f}");
        assert_eq!(f["l4"]["TCP"]["source_port"], 8080, "{f}");
        assert_eq!(f["destination"]["pod_name"], "client", "{f}");
        assert_eq!(f["is_reply"], true, "{f}");
        assert!(f.get("destination_service").is_none(), "a reply goes to no service: {f}");
    }

    // Other services, other namespaces, and traffic of no service: nothing.
    assert!(node.observe(&["--all", "--to-service", "default/other"]).is_empty());
    assert!(node.observe(&["--all", "--to-service", "prod/web"]).is_empty());
    // The ping's flow is read from the ring asynchronously, like any flow.
    let mut icmp = Vec::new();
    wait_until(Duration::from_secs(5), || {
        icmp = node.observe(&["--all", "--protocol", "icmp", "--to-ip", &backend]);
        !icmp.is_empty()
    });
    assert!(!icmp.is_empty() && icmp.iter().all(|f| f.get("destination_service").is_none()), "{icmp:?}");

    // The upstream CLI reads the same flows, with the field set. Flows
    // stored after twill's query only add to the end.
    let upstream = hubble_observe(&node, &["--all", "--to-service", "default/web"]);
    assert!(upstream.len() >= requests.len(), "hubble saw {} of {} flows", upstream.len(), requests.len());
    let ours: Vec<_> = requests.iter().map(key).collect();
    let theirs: Vec<_> = upstream.iter().take(requests.len()).map(key).collect();
    assert_eq!(theirs, ours);
    assert!(upstream.iter().all(|f| f["destination_service"] == web), "{upstream:?}");
    assert!(hubble_observe(&node, &["--all", "--to-service", "default/other"]).is_empty());
    let upstream_replies = hubble_observe(&node, &["--all", "--from-service", "default/web"]);
    assert!(
        upstream_replies.len() >= replies.len()
            && upstream_replies.iter().all(|f| f["source_service"] == web)
    );
}

#[test]
fn a_service_without_backends_is_named_in_the_refused_connect_s_drop() {
    let node = Node::start("svcflow-empty");
    node.endpoint("client", "default", "app=client");
    let vip = service(&node, "empty", "app=nothing");
    let err =
        node.tcp_request("client", &format!("{vip}:80")).expect_err("a service without backends answered");
    assert!(err.contains("refused"), "{err}");

    let empty = serde_json::json!({"name": "empty", "namespace": "default"});
    let mut drops = Vec::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            drops = node.observe(&["--all", "--to-service", "default/empty"]);
            !drops.is_empty()
        }),
        "no flow to the service"
    );
    for f in &drops {
        assert_eq!(f["verdict"], "DROPPED", "{f}");
        assert_eq!(f["drop_reason_desc"], "SERVICE_BACKEND_NOT_FOUND", "{f}");
        assert_eq!(f["destination_service"], empty, "{f}");
        assert_eq!(f["IP"]["destination"], vip.as_str(), "the refused connect carries the frontend: {f}");
    }
    let upstream = hubble_observe(&node, &["--all", "--to-service", "default/empty"]);
    assert!(
        !upstream.is_empty() && upstream.iter().all(|f| f["destination_service"] == empty),
        "{upstream:?}"
    );

    // The compact line names the service where no pod is, as Hubble's does.
    let out = Command::new(hubble_cli())
        .args(["observe", "--server"])
        .arg(format!("unix://{}", node.hubble_socket().display()))
        .args(["--all", "--to-service", "default/empty"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("default/empty:80"), "{text}");
}
