//! `toServices` in CiliumNetworkPolicy egress rules, as a user meets it:
//! a client allowed to name a service reaches that service's current
//! backends (through its ClusterIP or directly) and nothing else, and the
//! allow follows endpoints joining and leaving, services changing and
//! going away. Real servers in endpoints, real clients, the CLI.

use std::time::Duration;

use twill_e2e::{cluster_ip, ip_of, wait_until, Node};

const WAIT: Duration = Duration::from_secs(15);

/// Whether `client` reaches `target` and `server` answers, polled (policy
/// is applied when the CLI returns, servers start asynchronously).
fn reaches(node: &Node, client: &str, target: &str, server: &str) -> bool {
    wait_until(WAIT, || node.tcp_request(client, target).as_deref() == Ok(server))
}

/// Whether connections from `client` to `target` are dropped, polled: the
/// connect times out. A refused connect means the SYN got through (only
/// the server is missing), which policy did not stop.
fn denied(node: &Node, client: &str, target: &str) -> bool {
    wait_until(WAIT, || match node.tcp_request(client, target) {
        Ok(_) => false,
        Err(e) => !e.contains("refused"),
    })
}

/// Imports a policy from a file in the node's scratch directory (removed
/// with the node).
fn import(node: &Node, name: &str, yaml: &str) {
    let path = node.state_dir.parent().unwrap().join(name);
    std::fs::write(&path, yaml).unwrap();
    node.twill_ok(&["policy", "import", path.to_str().unwrap()]);
}

/// Egress of app=client limited to `to_services` (a YAML flow list).
fn client_policy(to_services: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: client-egress, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
  - toServices: {to_services}
"
    )
}

#[test]
fn a_named_service_allows_its_current_backends_and_nothing_else() {
    let node = Node::start("tosvc-named");
    node.endpoint("client", "default", "app=client");
    let web1 = node.endpoint("web1", "default", "app=web");
    let other = node.endpoint("other", "default", "app=other");
    let _s1 = node.tcp_server("web1", 8080);
    let _so = node.tcp_server("other", 8080);
    let svc = node.service_create(&["web", "--port", "80", "--target-port", "8080", "--selector", "app=web"]);
    let vip = format!("{}:80", cluster_ip(&svc));
    let other_addr = format!("{}:8080", ip_of(&other));
    assert!(reaches(&node, "client", &other_addr, "other"), "without policy everything is allowed");

    import(&node, "client.yaml", &client_policy("[{k8sService: {serviceName: web, namespace: default}}]"));
    assert!(reaches(&node, "client", &vip, "web1"), "through the ClusterIP to web's backend");
    let web1_addr = format!("{}:8080", ip_of(&web1));
    assert_eq!(node.tcp_request("client", &web1_addr).as_deref(), Ok("web1"), "the backend by its address");
    assert!(denied(&node, "client", &other_addr), "other is no backend of web");

    // `policy trace` says which service made the allow.
    let t = node.twill_json(&[
        "policy",
        "trace",
        "--src-endpoint",
        "client",
        "--dst-endpoint",
        "web1",
        "--dport",
        "8080/tcp",
    ]);
    let egress = &t["steps"][0];
    assert_eq!(egress["verdict"], "ALLOWED", "{t}");
    let reasons = egress["reasons"].to_string();
    assert!(
        reasons.contains("toServices k8sService default/web: a backend of service default/web"),
        "{reasons}"
    );

    // An endpoint joining the selector becomes reachable; relabelled out,
    // it is denied again.
    let web2 = node.endpoint("web2", "default", "app=web");
    let _s2 = node.tcp_server("web2", 8080);
    let web2_addr = format!("{}:8080", ip_of(&web2));
    assert!(reaches(&node, "client", &web2_addr, "web2"), "a new backend is allowed");
    node.twill_ok(&["endpoint", "label", "web2", "app=old"]);
    assert!(denied(&node, "client", &web2_addr), "a former backend is denied");
    assert!(node.tcp_request("client", &vip).as_deref() == Ok("web1"), "web1 still serves");

    // The service gone, its backends are no longer allowed; back, they are.
    node.twill_ok(&["service", "delete", "web"]);
    assert!(denied(&node, "client", &web1_addr), "a deleted service allows nothing");
    node.service_create(&["web", "--port", "80", "--target-port", "8080", "--selector", "app=web"]);
    assert!(reaches(&node, "client", &web1_addr, "web1"), "a recreated service allows again");
    assert!(denied(&node, "client", &other_addr));
}

#[test]
fn a_service_without_selector_allows_exactly_its_backend_addresses() {
    let node = Node::start("tosvc-backends");
    node.endpoint("client", "default", "app=client");
    let db = node.endpoint("db", "default", "app=db");
    let other = node.endpoint("other", "default", "app=other");
    let _sd = node.tcp_server("db", 8080);
    let _so = node.tcp_server("other", 8080);
    let (db_addr, other_addr) = (format!("{}:8080", ip_of(&db)), format!("{}:8080", ip_of(&other)));
    // The policy comes first: a service that does not exist allows nothing.
    import(&node, "client.yaml", &client_policy("[{k8sService: {serviceName: ext}}]"));
    assert!(denied(&node, "client", &db_addr), "no service yet: nothing allowed");

    // One backend is an endpoint, one an address outside the node.
    let svc = node.service_create(&[
        "ext",
        "--port",
        "5432",
        "--backend",
        &db_addr,
        "--backend",
        "192.0.2.10:8080",
    ]);
    let vip = format!("{}:5432", cluster_ip(&svc));
    assert!(reaches(&node, "client", &vip, "db"), "the endpoint backend through the ClusterIP");
    assert!(denied(&node, "client", &other_addr), "other is no backend");
    // The outside address got a CIDR identity in the ipcache, as toCIDR would.
    let ipcache = node.twill_json(&["bpf", "ipcache", "list"]);
    let entry = ipcache.as_array().unwrap().iter().find(|e| e["cidr"] == "192.0.2.10/32").cloned();
    let identity =
        entry.unwrap_or_else(|| panic!("no ipcache entry for the backend: {ipcache}"))["identity"].clone();
    assert!(identity.as_u64().unwrap() >= 1 << 24, "a CIDR identity: {identity}");

    // New backends replace the old: other allowed, db no longer.
    node.service_create(&["ext", "--port", "5432", "--backend", &other_addr]);
    assert!(reaches(&node, "client", &other_addr, "other"), "the new backend is allowed");
    assert!(denied(&node, "client", &db_addr), "the old backend is denied");
    let ipcache = node.twill_json(&["bpf", "ipcache", "list"]);
    assert!(
        !ipcache.as_array().unwrap().iter().any(|e| e["cidr"] == "192.0.2.10/32"),
        "a backend no service has keeps no CIDR identity: {ipcache}"
    );
}

#[test]
fn services_selected_by_their_labels_follow_label_changes() {
    let node = Node::start("tosvc-labels");
    node.endpoint("client", "default", "app=client");
    let web = node.endpoint("web", "default", "app=web");
    let db = node.endpoint("db", "default", "app=db");
    let _sw = node.tcp_server("web", 8080);
    let _sd = node.tcp_server("db", 8080);
    let (web_addr, db_addr) = (format!("{}:8080", ip_of(&web)), format!("{}:8080", ip_of(&db)));
    node.service_create(&[
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--selector",
        "app=web",
        "--labels",
        "team=a",
    ]);
    // The other service comes as Kubernetes YAML, labelled by metadata.labels.
    let db_yaml = |team: &str| {
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: db, namespace: default, labels: {{team: {team}}}}}
spec:
  selector: {{app: db}}
  ports: [{{port: 5432, targetPort: 8080}}]
"
        )
    };
    let file = node.state_dir.parent().unwrap().join("db.yaml");
    std::fs::write(&file, db_yaml("b")).unwrap();
    node.twill_ok(&["service", "import", file.to_str().unwrap()]);

    import(
        &node,
        "client.yaml",
        &client_policy("[{k8sServiceSelector: {selector: {matchLabels: {team: a}}}}]\n    toPorts: [{ports: [{port: '8080', protocol: TCP}]}]"),
    );
    assert!(reaches(&node, "client", &web_addr, "web"), "team=a's backend");
    assert!(denied(&node, "client", &db_addr), "team=b's backend is not selected");

    // db relabelled into team a: selected; web out of it: denied.
    std::fs::write(&file, db_yaml("a")).unwrap();
    node.twill_ok(&["service", "import", file.to_str().unwrap()]);
    assert!(reaches(&node, "client", &db_addr, "db"), "a service relabelled in is followed");
    node.service_create(&[
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--selector",
        "app=web",
        "--labels",
        "team=c",
    ]);
    assert!(denied(&node, "client", &web_addr), "a service relabelled out is followed");

    // toPorts alongside restricts the port: db on another port is denied.
    let _sd2 = node.tcp_server("db", 9090);
    assert!(denied(&node, "client", &format!("{}:9090", ip_of(&db))), "only 8080 is allowed");
}
