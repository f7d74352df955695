//! The multi-node harness itself: node namespaces on a fabric reach each
//! other and etcd, agents run in them as on a host of their own, several
//! at once, and dropping a cluster leaves nothing behind. Cluster mode is
//! built on these holding.

use std::{process::Command, time::Duration};

use twill_e2e::{
    cluster::{Cluster, ClusterNode, Fabric},
    cluster_ip, ip_of, wait_until,
};

#[test]
fn nodes_reach_each_other_and_etcd_over_the_fabric() {
    let fabric = Fabric::new("hfab");
    let etcd = fabric.start_etcd();
    let a = fabric.add_node(0);
    let b = fabric.add_node(1);
    let k = fabric.subnet();
    assert_eq!(a.ip(), format!("192.168.{k}.10"));
    assert_eq!(b.ip(), format!("192.168.{k}.11"));

    assert!(wait_until(Duration::from_secs(5), || a.ping(b.ip())), "n0 -> n1");
    assert!(b.ping(a.ip()), "n1 -> n0");
    assert!(a.ping(etcd.ip()), "n0 -> etcd");
    assert!(etcd.healthy_from(a.netns()), "etcd healthy from n0");
    assert!(etcd.healthy_from(b.netns()), "etcd healthy from n1");

    // The fabric is the only way out: nothing leaves for the machine.
    let routes = String::from_utf8(a.cmd(&["ip", "-4", "route", "show"]).stdout).unwrap();
    assert!(!routes.contains("default"), "no default route in a node: {routes}");
    let forward = String::from_utf8(a.cmd(&["sysctl", "-n", "net.ipv4.ip_forward"]).stdout).unwrap();
    assert_eq!(forward.trim(), "1");
}

#[test]
fn etcd_pauses_stops_and_restarts_on_its_data() {
    let fabric = Fabric::new("hetcd");
    let mut etcd = fabric.start_etcd();
    let node = fabric.add_node(0);
    let put = |key: &str, value: &str| {
        // The v3 gRPC gateway (base64 keys and values) with curl, as
        // etcdctl is not installed.
        let body = format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64(value));
        node.cmd(&[
            "curl",
            "-sf",
            "--max-time",
            "2",
            "-XPOST",
            &format!("{}/v3/kv/put", etcd.endpoint()),
            "-d",
            &body,
        ])
    };
    assert!(put("twill/probe", "1").status.success());

    etcd.pause();
    assert!(!etcd.healthy_from(node.netns()), "a paused etcd does not answer");
    etcd.resume();
    assert!(wait_until(Duration::from_secs(10), || etcd.healthy_from(node.netns())));

    etcd.stop();
    assert!(!etcd.healthy_from(node.netns()));
    etcd.start();
    let url = format!("{}/v3/kv/range", etcd.endpoint());
    let body = format!(r#"{{"key":"{}"}}"#, b64("twill/probe"));
    let got = node.cmd(&["curl", "-sf", "--max-time", "2", "-XPOST", &url, "-d", &body]);
    let got = String::from_utf8_lossy(&got.stdout);
    assert!(got.contains(&b64("1")), "the key survived the restart: {got}");
}

fn b64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Two endpoints on `node` that ping each other and carry a TCP request.
fn two_working_endpoints(node: &ClusterNode) {
    node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    let b_ip = ip_of(&b);
    let pod_cidr_prefix = node.pod_cidr.trim_end_matches("0/24");
    assert!(b_ip.starts_with(pod_cidr_prefix), "{b_ip} in {}", node.pod_cidr);
    assert!(wait_until(Duration::from_secs(5), || node.ping("a", "default", &b_ip)), "{}: a -> b", node.name);
    let _server = node.tcp_server("b", 8080);
    assert_eq!(
        node.tcp_request("a", &format!("{b_ip}:8080")),
        Ok("b".to_string()),
        "{}: tcp a -> b",
        node.name
    );
}

#[test]
fn a_standalone_agent_runs_in_a_node_namespace() {
    let fabric = Fabric::new("hsolo");
    let node = ClusterNode::start(fabric.add_node(0), &[]);
    let status = node.twill_json(&["status"]);
    assert!(status.is_object(), "{status}");
    two_working_endpoints(&node);
    // The agent's devices are in the node's namespace, not the machine's.
    let links = String::from_utf8(node.net().cmd(&["ip", "-o", "link"]).stdout).unwrap();
    assert!(links.contains("twill_host"), "{links}");
}

#[test]
fn two_agents_in_two_node_namespaces_do_not_collide() {
    let mut cluster = Cluster::new("hpair");
    cluster.add_node(&[]);
    cluster.add_node(&[]);
    for node in &cluster.nodes {
        two_working_endpoints(node);
    }
    // Each still works after the other's endpoints came up.
    for node in &cluster.nodes {
        let b = node.twill_json(&["endpoint", "get", "b", "--namespace", "default"]);
        assert!(node.ping("a", "default", &ip_of(&b)), "{} after both", node.name);
        node.twill_ok(&["status"]);
    }
    // And the nodes still reach each other over the fabric.
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert!(n0.net().ping(n1.node_ip()), "n0 -> n1 with agents");

    // Both agents hook sockets on the same cgroup: each must translate
    // only its own node's clients. Two fresh agents give their first
    // service the same ClusterIP; it selects b on n0 and a on n1.
    let _server_b = n0.tcp_server("b", 8080);
    let _server_a = n1.tcp_server("a", 8080);
    let vip0 = cluster_ip(&n0.service_create(&[
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--selector",
        "app=b",
    ]));
    let vip1 = cluster_ip(&n1.service_create(&[
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--selector",
        "app=a",
    ]));
    assert_eq!(vip0, vip1, "the test needs one address meaning two services");
    for _ in 0..5 {
        assert_eq!(n0.tcp_request("a", &format!("{vip0}:80")), Ok("b".to_string()), "n0's service");
        assert_eq!(n1.tcp_request("b", &format!("{vip1}:80")), Ok("a".to_string()), "n1's service");
    }
}

fn leftovers(tag: &str) -> Vec<String> {
    let prefix = format!("tw{tag}");
    let mut found: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) || n.starts_with(&format!("twill_{prefix}")))
        .map(|n| format!("netns {n}"))
        .collect();
    let links = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        if let Some(name) = line.split(": ").nth(1) {
            if name.starts_with(&prefix) {
                found.push(format!("link {name}"));
            }
        }
    }
    found
}

#[test]
fn dropping_a_cluster_removes_everything() {
    let tag = "hdrop";
    let (etcd_pid, etcd_dir, bpf_roots, state_dirs) = {
        let mut cluster = Cluster::new(tag);
        cluster.add_node(&[]);
        cluster.add_node(&[]);
        for node in &cluster.nodes {
            node.endpoint("a", "default", "");
        }
        assert!(cluster.nodes.iter().all(|n| n.endpoint_netns().len() == 1));
        assert!(!leftovers(tag).is_empty(), "the probe sees a live cluster");
        (
            cluster.etcd.pid().unwrap(),
            cluster.etcd.data_dir().to_path_buf(),
            cluster.nodes.iter().map(|n| n.bpf_root.clone()).collect::<Vec<_>>(),
            cluster.nodes.iter().map(|n| n.state_dir.clone()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(leftovers(tag), Vec::<String>::new());
    // SAFETY: kill(2) with signal 0 only checks that the pid exists.
    assert!(unsafe { libc::kill(etcd_pid as i32, 0) } != 0, "etcd {etcd_pid} is gone");
    assert!(!etcd_dir.exists(), "{}", etcd_dir.display());
    for dir in bpf_roots.iter().chain(&state_dirs) {
        assert!(!dir.exists(), "{}", dir.display());
    }
}

#[test]
fn a_fabric_clears_what_a_crashed_run_left() {
    let tag = "hstale";
    for name in [format!("tw{tag}fab"), format!("tw{tag}n3")] {
        let _ = Command::new("ip").args(["netns", "add", &name]).status();
    }
    {
        let fabric = Fabric::new(tag);
        let node = fabric.add_node(3);
        assert_eq!(fabric.leftovers(), vec![format!("tw{tag}fab"), format!("tw{tag}n3")]);
        drop(node);
    }
    assert_eq!(leftovers(tag), Vec::<String>::new());
}

#[test]
fn a_failing_test_still_removes_its_cluster() {
    let tag = "hpanic";
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cluster = Cluster::new(tag);
        cluster.add_node(&[]).endpoint("a", "default", "");
        panic!("the test fails with a cluster up");
    }));
    assert!(failed.is_err());
    assert_eq!(leftovers(tag), Vec::<String>::new());
}
