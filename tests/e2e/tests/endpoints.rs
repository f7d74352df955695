//! Endpoints: lifecycle, addressing, connectivity through the eBPF
//! datapath, and `endpoint exec`.

use std::{collections::BTreeSet, io::Write, process::Stdio, time::Duration};

use twill_e2e::{wait_until, Node};

fn ip_of(endpoint: &twill_e2e::Value) -> String {
    endpoint["ipv4"].as_str().unwrap().to_string()
}

#[test]
fn lifecycle_allocates_and_releases_addresses() {
    let node = Node::start("lifecycle");
    let a = node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    assert_eq!(ip_of(&a), "10.200.0.2", "first address after the router");
    assert_eq!(ip_of(&b), "10.200.0.3");
    assert_eq!(a["state"], "ready");
    assert_eq!(a["labels"]["app"], "a");

    let list = node.twill_json(&["endpoint", "list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["a", "b"]);
    let got = node.twill_json(&["endpoint", "get", "b"]);
    assert_eq!(got, b);
    // Human output names the endpoint, its address and identity.
    let text = node.twill_ok(&["endpoint", "list"]);
    assert!(text.contains("10.200.0.3") && text.contains("app=b"), "{text}");

    assert_eq!(node.endpoint_netns().len(), 2);
    node.twill_ok(&["endpoint", "delete", "a"]);
    assert_eq!(node.endpoint_netns().len(), 1, "the namespace of a is gone");
    let c = node.endpoint("c", "default", "");
    assert_eq!(ip_of(&c), "10.200.0.2", "a's address was released and reused");
    let ips: BTreeSet<String> =
        node.twill_json(&["endpoint", "list"]).as_array().unwrap().iter().map(ip_of).collect();
    assert_eq!(ips.len(), 2, "no duplicate addresses");
}

#[test]
fn traffic_between_endpoints_and_host_goes_through_ebpf() {
    let node = Node::start("traffic");
    node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    let b_ip = ip_of(&b);

    // ICMP endpoint to endpoint; the TTL drops by one: the datapath routes.
    let out = node.exec("a", "default", &["ping", "-c", "3", "-i", "0.2", "-W", "1", &b_ip]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping a -> b failed:\n{text}");
    assert!(text.contains("ttl=63"), "{text}");

    // TCP and UDP.
    let _tcp =
        node.spawn_in("b", "default", &["socat", "TCP-LISTEN:8080,reuseaddr,fork", "SYSTEM:echo tcp-ok"]);
    let _udp = node.spawn_in("b", "default", &["socat", "UDP-RECVFROM:8081,fork", "SYSTEM:echo udp-ok"]);
    let tcp_target = format!("TCP:{b_ip}:8080");
    let tcp_ok = wait_until(Duration::from_secs(10), || {
        let out = node.exec("a", "default", &["socat", "-T2", "-", &tcp_target]);
        String::from_utf8_lossy(&out.stdout).contains("tcp-ok")
    });
    assert!(tcp_ok, "TCP a -> b:8080");
    let udp_target = format!("UDP:{b_ip}:8081");
    let udp_ok = wait_until(Duration::from_secs(10), || {
        let out = node.exec("a", "default", &["sh", "-c", &format!("echo hi | socat -T1 - {udp_target}")]);
        String::from_utf8_lossy(&out.stdout).contains("udp-ok")
    });
    assert!(udp_ok, "UDP a -> b:8081");

    // Endpoint to host (the router address) and host to endpoint.
    assert!(node.ping("a", "default", "10.200.0.1"), "a -> host");
    let out = node.host_cmd(&["ping", "-c", "1", "-W", "1", &b_ip]);
    assert!(out.status.success(), "host -> b: {}", String::from_utf8_lossy(&out.stdout));

    // The eBPF programs counted what they forwarded, and no bridge or
    // iptables rule is involved.
    let metrics = node.twill_json(&["bpf", "metrics", "list"]);
    let forwarded: u64 = metrics
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reason"] == 0 && m["direction"] == "egress")
        .map(|m| m["packets"].as_u64().unwrap())
        .sum();
    assert!(forwarded >= 6, "datapath forwarded {forwarded} packets");
    let links = String::from_utf8_lossy(&node.host_cmd(&["ip", "-d", "link", "show"]).stdout).to_string();
    assert!(!links.contains("bridge"), "no bridge on the node:\n{links}");
    let status = node.twill_json(&["status"]);
    let hooks: BTreeSet<String> = status["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}/{}", p["device"].as_str().unwrap(), p["hook"].as_str().unwrap()))
        .collect();
    let a = node.twill_json(&["endpoint", "get", "a"]);
    let dev = a["host_device"].as_str().unwrap();
    assert!(
        hooks.contains(&format!("{dev}/ingress")) && hooks.contains(&format!("{dev}/egress")),
        "{hooks:?}"
    );
}

#[test]
fn spoofed_source_addresses_are_dropped_and_counted() {
    let node = Node::start("spoof");
    node.endpoint("a", "default", "");
    let b = node.endpoint("b", "default", "");
    let a = node.twill_json(&["endpoint", "get", "a"]);
    let netns = a["netns"].as_str().unwrap();
    twill_e2e::run_ok(std::process::Command::new("ip").args([
        "-n",
        netns,
        "addr",
        "add",
        "10.200.0.99/32",
        "dev",
        "eth0",
    ]));
    let out =
        node.exec("a", "default", &["ping", "-c", "1", "-W", "1", "-I", "10.200.0.99", ip_of(&b).as_str()]);
    assert!(!out.status.success(), "a packet from an address a does not own must not arrive");
    let metrics = node.twill_json(&["bpf", "metrics", "list"]);
    let drop =
        metrics.as_array().unwrap().iter().find(|m| m["reason"] == 132).expect("drop reason 132 counted");
    assert_eq!(drop["description"], "Invalid source ip");
}

#[test]
fn exec_passes_stdio_and_exit_code_through() {
    let node = Node::start("exec");
    node.endpoint("a", "default", "");
    let out = node.exec("a", "default", &["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let mut child = std::process::Command::new(twill_e2e::bin_dir().join("twill"))
        .arg("--socket")
        .arg(&node.socket)
        .args(["endpoint", "exec", "a", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"from stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from stdin\n");

    // It really runs inside the endpoint: eth0 has the endpoint's address.
    let out = node.exec("a", "default", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.200.0.2/32"));
}

#[test]
fn ipcache_holds_endpoints_and_host() {
    let node = Node::start("ipcache");
    let a = node.endpoint("a", "default", "app=a");
    let entries = node.twill_json(&["bpf", "ipcache", "list"]);
    let find = |cidr: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["cidr"] == cidr)
            .map(|e| e["identity"].as_u64().unwrap())
    };
    assert_eq!(find(&format!("{}/32", ip_of(&a))), a["identity"].as_u64());
    assert_eq!(find("10.200.0.1/32"), Some(1), "the router address is the host identity");
    node.twill_ok(&["endpoint", "delete", "a"]);
    let entries = node.twill_json(&["bpf", "ipcache", "list"]);
    assert!(entries.as_array().unwrap().iter().all(|e| e["cidr"] != format!("{}/32", ip_of(&a))));
}

#[test]
fn two_agents_run_side_by_side() {
    let one = Node::start_with_cidr("side1", "10.201.0.0/24");
    let two = Node::start_with_cidr("side2", "10.202.0.0/24");
    let a = one.endpoint("a", "default", "app=x");
    let b = two.endpoint("a", "default", "app=x");
    assert_eq!(ip_of(&a), "10.201.0.2");
    assert_eq!(ip_of(&b), "10.202.0.2");
    assert!(one.ping("a", "default", "10.201.0.1"));
    assert!(two.ping("a", "default", "10.202.0.1"));
    assert_eq!(one.twill_json(&["endpoint", "list"]).as_array().unwrap().len(), 1);
    assert_eq!(two.twill_json(&["endpoint", "list"]).as_array().unwrap().len(), 1);
    assert_ne!(one.endpoint_netns(), two.endpoint_netns());
}
