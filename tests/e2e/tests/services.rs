//! Services without kube-proxy: a virtual address is a backend inside the
//! kernel, chosen at the socket for endpoints, per packet for NodePort
//! clients outside the node. Real servers in endpoints, real clients.

use std::{collections::BTreeMap, process::Command, time::Duration};

use twill_e2e::{cluster_ip, ip_of, run_ok, wait_until, Node};

/// The backends of the service's ClusterIP frontend, as `twill service get` shows them.
fn backends(node: &Node, name: &str) -> Vec<String> {
    let svc = node.twill_json(&["service", "get", name]);
    let frontend = svc["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["node_port"] == false)
        .cloned()
        .expect("a ClusterIP frontend");
    let mut out: Vec<String> =
        frontend["backends"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_string()).collect();
    out.sort();
    out
}

fn tally(node: &Node, client: &str, target: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let answer = node.tcp_request(client, target).unwrap_or_else(|e| panic!("{client} -> {target}: {e}"));
        *seen.entry(answer).or_insert(0) += 1;
    }
    seen
}

fn no_service_drops(node: &Node) -> u64 {
    let rows = node.twill_json(&["bpf", "metrics", "list"]);
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"] == 158)
        .map(|r| r["packets"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_cluster_ip_reaches_every_backend_of_its_selector() {
    let node = Node::start("svc-basic");
    node.endpoint("client", "default", "app=client");
    node.endpoint("web1", "default", "app=web");
    node.endpoint("web2", "default", "app=web");
    let _s1 = node.tcp_server("web1", 8080);
    let _s2 = node.tcp_server("web2", 8080);
    let svc = node.service_create(&["web", "--port", "80", "--target-port", "8080", "--selector", "app=web"]);
    let vip = cluster_ip(&svc);
    assert!(vip.starts_with("10.96."), "allocated from the default service CIDR: {vip}");
    let target = format!("{vip}:80");
    assert!(wait_until(Duration::from_secs(5), || node.tcp_request("client", &target).is_ok()));

    let seen = tally(&node, "client", &target, 30);
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), vec!["web1", "web2"], "{seen:?}");

    // The kernel's view: one frontend, two backends by slot.
    let lb = node.twill_json(&["bpf", "lb", "list"]);
    let f =
        lb.as_array().unwrap().iter().find(|f| f["frontend"] == format!("{target}/TCP")).expect("frontend");
    assert_eq!(f["backends"].as_array().unwrap().len(), 2, "{f}");
    assert_eq!(f["algorithm"], "random");

    // Deleting the service: the address stops answering.
    node.twill_ok(&["service", "delete", "web"]);
    assert!(node.twill_json(&["service", "list"]).as_array().unwrap().is_empty());
    assert!(node.tcp_request("client", &target).is_err(), "a deleted service still answers");
}

#[test]
fn selector_services_follow_endpoint_churn_and_refuse_without_backends() {
    let node = Node::start("svc-churn");
    node.endpoint("client", "default", "app=client");
    let w1 = node.endpoint("web1", "default", "app=web");
    let _s1 = node.tcp_server("web1", 8080);
    let svc = node.service_create(&["web", "--port", "80", "--target-port", "8080", "--selector", "app=web"]);
    let target = format!("{}:80", cluster_ip(&svc));
    assert_eq!(backends(&node, "web"), vec![format!("{}:8080", ip_of(&w1))]);

    // A new endpoint with the labels joins.
    let w2 = node.endpoint("web2", "default", "app=web");
    let _s2 = node.tcp_server("web2", 8080);
    let mut both = vec![format!("{}:8080", ip_of(&w1)), format!("{}:8080", ip_of(&w2))];
    both.sort();
    assert_eq!(backends(&node, "web"), both);
    assert!(
        wait_until(Duration::from_secs(10), || node.tcp_request("client", &target).as_deref() == Ok("web2"))
    );

    // Relabelled away, it leaves; the other keeps answering.
    node.twill_ok(&["endpoint", "label", "web1", "app=old"]);
    assert_eq!(backends(&node, "web"), vec![format!("{}:8080", ip_of(&w2))]);
    assert_eq!(tally(&node, "client", &target, 10).keys().cloned().collect::<Vec<_>>(), vec!["web2"]);

    // Deleted, it leaves too: no backends. The connect is refused at the
    // socket and counted as "Service backend not found" (158).
    node.twill_ok(&["endpoint", "delete", "web2"]);
    assert!(backends(&node, "web").is_empty());
    let before = no_service_drops(&node);
    let err = node.tcp_request("client", &target).expect_err("a service without backends answered");
    assert!(err.contains("refused"), "{err}");
    assert!(wait_until(Duration::from_secs(5), || no_service_drops(&node) > before));

    // A service from another namespace's endpoints does not pick them up.
    node.twill_ok(&["namespace", "create", "other"]);
    node.twill_json(&["endpoint", "create", "web9", "--namespace", "other", "--labels", "app=web"]);
    assert!(backends(&node, "web").is_empty());
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_backend() {
    let node = Node::start("svc-affinity");
    node.endpoint("client", "default", "app=client");
    let mut servers = Vec::new();
    for name in ["web1", "web2", "web3"] {
        node.endpoint(name, "default", "app=web");
        servers.push(node.tcp_server(name, 8080));
    }
    let svc = node.service_create(&[
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--selector",
        "app=web",
        "--affinity",
        "client-ip",
    ]);
    assert_eq!(svc["affinity_timeout"], 10800, "Kubernetes' default timeout");
    let target = format!("{}:80", cluster_ip(&svc));
    assert!(wait_until(Duration::from_secs(5), || node.tcp_request("client", &target).is_ok()));
    let seen = tally(&node, "client", &target, 15);
    assert_eq!(seen.len(), 1, "one client, one backend: {seen:?}");

    // Without affinity the same client spreads.
    let plain =
        node.service_create(&["plain", "--port", "81", "--target-port", "8080", "--selector", "app=web"]);
    let seen = tally(&node, "client", &format!("{}:81", cluster_ip(&plain)), 30);
    assert!(seen.len() >= 2, "random choice over three backends: {seen:?}");

    // Affinity ends with its timeout: a client idle for longer is placed
    // afresh (all ten on one of three backends by chance: 1 in 19,683).
    let short = node.service_create(&[
        "short",
        "--port",
        "82",
        "--target-port",
        "8080",
        "--selector",
        "app=web",
        "--affinity",
        "client-ip",
        "--affinity-timeout",
        "1s",
    ]);
    assert_eq!(short["affinity_timeout"], 1);
    let target = format!("{}:82", cluster_ip(&short));
    let mut seen = BTreeMap::new();
    for _ in 0..10 {
        let answer = node.tcp_request("client", &target).expect("short-affinity service answers");
        *seen.entry(answer).or_insert(0) += 1;
        std::thread::sleep(Duration::from_millis(1300));
    }
    assert!(seen.len() >= 2, "affinity outlived its timeout: {seen:?}");
}

#[test]
fn udp_and_explicit_backends_and_maglev() {
    let node = Node::start("svc-udp");
    node.endpoint("client", "default", "app=client");
    let d1 = node.endpoint("dns1", "default", "app=dns");
    let d2 = node.endpoint("dns2", "default", "app=dns");
    let _u1 = node.udp_server("dns1", 5353);
    let _u2 = node.udp_server("dns2", 5353);
    let svc = node.service_create(&[
        "dns",
        "--frontend",
        "10.96.53.53:53/udp",
        "--backend",
        &format!("{}:5353", ip_of(&d1)),
        "--backend",
        &format!("{}:5353", ip_of(&d2)),
        "--algorithm",
        "maglev",
    ]);
    assert_eq!(cluster_ip(&svc), "10.96.53.53");
    let ask = || {
        let out = node.exec("client", "default", &["sh", "-c", "echo q | socat -d -T2 - UDP:10.96.53.53:53"]);
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(wait_until(Duration::from_secs(5), || !ask().0.is_empty()));
    let mut seen = BTreeMap::new();
    for _ in 0..20 {
        let (answer, err) = ask();
        assert!(answer == "dns1" || answer == "dns2", "a UDP answer from a backend: {answer:?} {err}");
        *seen.entry(answer).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "maglev over sockets spreads: {seen:?}");
    let lb = node.twill_json(&["bpf", "lb", "list"]);
    let f = lb.as_array().unwrap().iter().find(|f| f["frontend"] == "10.96.53.53:53/UDP").expect("frontend");
    assert_eq!(f["algorithm"], "maglev");
    assert_eq!(f["maglev_table_size"], 16381);
}

#[test]
fn policy_applies_to_the_backend_behind_the_virtual_address() {
    let node = Node::start("svc-policy");
    node.endpoint("good", "default", "app=good");
    node.endpoint("bad", "default", "app=bad");
    node.endpoint("web1", "default", "app=web");
    let _s = node.tcp_server("web1", 8080);
    let svc = node.service_create(&["web", "--port", "80", "--target-port", "8080", "--selector", "app=web"]);
    let target = format!("{}:80", cluster_ip(&svc));
    let policy = node.state_dir.parent().unwrap().join("web-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: web}\nspec:\n  \
         endpointSelector: {matchLabels: {app: web}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: good}}]\n    \
         toPorts: [{ports: [{port: \"8080\", protocol: TCP}]}]\n",
    )
    .unwrap();
    node.twill_ok(&["policy", "import", policy.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(5), || node.tcp_request("good", &target).as_deref() == Ok("web1")));
    assert!(node.tcp_request("bad", &target).is_err(), "policy must deny bad -> web behind the service");
}

#[test]
fn import_of_kubernetes_services_is_all_or_nothing() {
    let node = Node::start("svc-import");
    node.endpoint("client", "default", "app=client");
    node.twill_json(&["endpoint", "create", "web1", "--labels", "app=web", "--port", "http=8080/tcp"]);
    let _s = node.tcp_server("web1", 8080);
    let dir = node.state_dir.parent().unwrap().to_path_buf();
    let good = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  \
                selector: {app: web}\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n";
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec:\n  ports:\n  - port: 80\n    \
               targetPort: 70000\n";
    let file = dir.join("services.yaml");
    std::fs::write(&file, format!("{good}---\n{bad}")).unwrap();
    let err = node.twill_err(&["service", "import", file.to_str().unwrap()]);
    assert!(
        err.contains("document 2 (Service default/broken): spec.ports[0].targetPort"),
        "the error names the file, document, object and field: {err}"
    );
    assert!(node.twill_json(&["service", "list"]).as_array().unwrap().is_empty(), "nothing was applied");

    std::fs::write(&file, good).unwrap();
    node.twill_ok(&["service", "import", file.to_str().unwrap()]);
    let list = node.twill_json(&["service", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let target = format!("{}:80", cluster_ip(&list[0]));
    assert!(
        wait_until(Duration::from_secs(5), || node.tcp_request("client", &target).as_deref() == Ok("web1"))
    );
}

#[test]
fn backends_churn_under_load_without_failed_requests() {
    let node = Node::start("svc-load");
    node.endpoint("client", "default", "app=client");
    let mut servers = Vec::new();
    for name in ["web1", "web2", "web3"] {
        node.endpoint(name, "default", "app=web");
        servers.push(node.tcp_server(name, 8080));
    }
    let svc = node.service_create(&["web", "--port", "80", "--target-port", "8080", "--selector", "app=web"]);
    let target = format!("{}:80", cluster_ip(&svc));
    assert!(wait_until(Duration::from_secs(5), || node.tcp_request("client", &target).is_ok()));

    // 200 sequential requests from a shell loop inside the client while
    // web3 leaves and rejoins the service; every request must succeed.
    let script = format!(
        "fails=0; for i in $(seq 200); do socat -T2 - TCP:{target},connect-timeout=2 >/dev/null 2>&1 || \
         fails=$((fails+1)); done; echo $fails"
    );
    let load = node.spawn_in("client", "default", &["sh", "-c", &script]);
    for round in 0..6 {
        let label = if round % 2 == 0 { "app=away" } else { "app=web" };
        node.twill_ok(&["endpoint", "label", "web3", label]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = load.wait_with_output();
    let fails = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(fails, "0", "failed requests while backends churned");
}

#[test]
fn node_port_answers_clients_outside_the_node() {
    let mut node = Node::prepare("svc-nodeport", "10.200.0.0/24");
    // An outside machine: a namespace joined to the node by a veth pair.
    let outside = format!("{}-out", node.netns);
    let (out_dev, in_dev) =
        (format!("vo{}", std::process::id() % 100000), format!("vi{}", std::process::id() % 100000));
    run_ok(Command::new("ip").args(["netns", "add", &outside]));
    let _cleanup = NetnsGuard(outside.clone());
    run_ok(Command::new("ip").args([
        "-n",
        &outside,
        "link",
        "add",
        &out_dev,
        "type",
        "veth",
        "peer",
        "name",
        &in_dev,
        "netns",
        &node.netns,
    ]));
    run_ok(Command::new("ip").args(["-n", &outside, "addr", "add", "192.168.77.1/24", "dev", &out_dev]));
    run_ok(Command::new("ip").args(["-n", &outside, "link", "set", &out_dev, "up"]));
    run_ok(Command::new("ip").args(["-n", &node.netns, "addr", "add", "192.168.77.2/24", "dev", &in_dev]));
    run_ok(Command::new("ip").args(["-n", &node.netns, "link", "set", &in_dev, "up"]));
    node.agent_args = vec!["--devices".into(), in_dev.clone()];
    node.start_agent();

    node.endpoint("web1", "default", "app=web");
    let _s = node.tcp_server("web1", 8080);
    let svc = node.service_create(&[
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--selector",
        "app=web",
        "--type",
        "NodePort",
        "--node-port",
        "30080",
    ]);
    assert_eq!(svc["ports"][0]["node_port"], 30080);
    let from_outside = |target: &str| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &outside,
                "socat",
                "-T2",
                "-",
                &format!("TCP:{target},connect-timeout=2"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        wait_until(Duration::from_secs(5), || from_outside("192.168.77.2:30080") == "web1"),
        "NodePort from outside; agent log:\n{}",
        node.agent_log()
    );

    // From inside the node the socket hooks translate a node address and
    // the node port: from an endpoint to the node's router address, and
    // from the node's own namespace to its outside address.
    node.endpoint("client", "default", "app=client");
    assert_eq!(node.tcp_request("client", "10.200.0.1:30080").as_deref(), Ok("web1"));
    let out = node.host_cmd(&["socat", "-T2", "-", "TCP:192.168.77.2:30080,connect-timeout=2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web1", "the node itself to its node port");

    // Without backends the node drops it as "Service backend not found".
    node.twill_ok(&["endpoint", "label", "web1", "app=none"]);
    let before = no_service_drops(&node);
    assert_eq!(from_outside("192.168.77.2:30080"), "");
    assert!(wait_until(Duration::from_secs(5), || no_service_drops(&node) > before));
}

struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn services_keep_working_while_the_agent_is_down_and_after_it_returns() {
    let mut node = Node::start("svc-restart");
    node.endpoint("client", "default", "app=client");
    node.endpoint("web1", "default", "app=web");
    let _s = node.tcp_server("web1", 8080);
    let svc = node.service_create(&["web", "--port", "80", "--target-port", "8080", "--selector", "app=web"]);
    let target = format!("{}:80", cluster_ip(&svc));
    assert!(
        wait_until(Duration::from_secs(5), || node.tcp_request("client", &target).as_deref() == Ok("web1"))
    );
    let lb_before = node.twill_json(&["bpf", "lb", "list"]);

    // kill -9: the pinned socket hooks and maps keep translating.
    node.stop_agent(libc::SIGKILL);
    let netns = node.endpoint_netns().into_iter().find(|n| n.ends_with("client")).expect("client netns");
    let out = Command::new("ip")
        .args(["netns", "exec", &netns, "socat", "-T2", "-", &format!("TCP:{target},connect-timeout=2")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "web1",
        "the service answers with the agent down"
    );

    // Back up: the same service, the same address, the same kernel entries.
    node.start_agent();
    let again = node.twill_json(&["service", "get", "web"]);
    assert_eq!(cluster_ip(&again), cluster_ip(&svc));
    assert_eq!(node.twill_json(&["bpf", "lb", "list"]), lb_before, "a restart rewrites no frontend or id");
    assert_eq!(node.tcp_request("client", &target).as_deref(), Ok("web1"));
}
