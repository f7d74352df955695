//! CNI conformance: twill-cni driven exactly as a runtime drives it, for
//! every command and every declared version, with bad input, the agent
//! stopped and restarted, and chained with the reference portmap and
//! bandwidth plugins.

use std::{path::Path, time::Duration};

use serde_json::json;
use twill_e2e::{
    cni::{config, env, invoke, invoke_raw, plugin, Sandbox, REFERENCE_PLUGINS},
    wait_until, Node, Value,
};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn endpoints(node: &Node) -> Vec<Value> {
    node.twill_json(&["endpoint", "list"]).as_array().unwrap().clone()
}

fn addresses_in(sandbox: &Sandbox) -> String {
    String::from_utf8_lossy(&sandbox.run(&["ip", "-4", "-o", "addr", "show"]).stdout).into_owned()
}

#[test]
fn add_check_del_in_every_version() {
    let node = Node::start("cniver");
    let db = node.endpoint("db", "default", "app=db");
    let db_ip = db["ipv4"].as_str().unwrap().to_string();
    let mut configs: Vec<(Value, &str)> = VERSIONS.iter().map(|v| (config(&node, v), *v)).collect();
    // A 1.1.0 config list offering several versions: the highest wins.
    let mut offered = config(&node, "1.1.0");
    offered.as_object_mut().unwrap().remove("cniVersion");
    offered["cniVersions"] = json!(["0.4.0", "1.0.0", "9.9.9"]);
    configs.push((offered, "1.0.0"));
    for (i, (conf, version)) in configs.iter().enumerate() {
        let sandbox = Sandbox::new("ver");
        let container = format!("ctr{i}");
        // Not always eth0.
        let ifname = format!("net{i}");
        let netns = sandbox.path();
        let result = invoke(&node, &plugin(), &env("ADD", &container, &netns, &ifname), conf);
        let result = result.ok();
        assert_eq!(result["cniVersion"], *version, "{result}");
        let ip = &result["ips"][0];
        assert_eq!(
            ip.get("version").is_some(),
            version.starts_with("0."),
            "ips carry version before 1.0.0: {result}"
        );
        assert_eq!(result["interfaces"][ip["interface"].as_u64().unwrap() as usize]["name"], ifname.as_str());
        assert_eq!(result["interfaces"][1]["sandbox"], netns.as_str());
        assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
        let address = ip["address"].as_str().unwrap();
        let bare = address.split('/').next().unwrap();
        assert!(
            addresses_in(&sandbox).contains(&format!("{ifname}    inet {address}")),
            "{}",
            addresses_in(&sandbox)
        );
        let listed = endpoints(&node);
        let ep = listed.iter().find(|e| e["ipv4"] == bare).expect("listed like any endpoint");
        assert_eq!(ep["name"], format!("{container}-{ifname}"));
        assert!(Node::ping_from_netns(&sandbox.name, &db_ip), "{version}: reaches a standalone endpoint");

        let mut check = conf.clone();
        check["prevResult"] = result.clone();
        let checked = invoke(&node, &plugin(), &env("CHECK", &container, &netns, &ifname), &check);
        if version.starts_with("0.3") {
            assert_eq!(checked.error_code(), 1, "CHECK is not in {version}: {}", checked.stdout);
        } else {
            checked.ok();
            // Break it: CHECK says what is wrong.
            sandbox.run(&["ip", "route", "del", "default"]);
            let broken = invoke(&node, &plugin(), &env("CHECK", &container, &netns, &ifname), &check);
            assert_eq!(broken.error_code(), 999);
            assert!(broken.msg().contains("no default route via"), "{}", broken.stdout);
        }

        for _ in 0..2 {
            // Repeated DEL succeeds.
            let del = invoke(&node, &plugin(), &env("DEL", &container, &netns, &ifname), conf);
            assert_eq!((del.code, del.stdout.as_str()), (0, ""), "{version}");
        }
        assert!(!addresses_in(&sandbox).contains(&ifname), "interface gone: {}", addresses_in(&sandbox));
        assert!(endpoints(&node).iter().all(|e| e["ipv4"] != bare), "endpoint gone");
    }
    // Every address went back: the next endpoint takes the first free one.
    let next = node.endpoint("next", "default", "");
    assert_eq!(next["ipv4"], "10.200.0.3", "{next}");
    let version = invoke(&node, &plugin(), &[("CNI_COMMAND", "VERSION")], &json!({"cniVersion": "0.4.0"}));
    assert_eq!(version.ok()["supportedVersions"], json!(VERSIONS));
    assert_eq!(version.ok()["cniVersion"], "0.4.0");
}

#[test]
fn bad_input_names_the_problem_and_changes_nothing() {
    let node = Node::start("cnibad");
    let sandbox = Sandbox::new("bad");
    let netns = sandbox.path();
    let good = config(&node, "1.0.0");
    let add = env("ADD", "c1", &netns, "eth0");
    for missing in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let vars: Vec<_> = add.iter().copied().filter(|(k, _)| *k != missing).collect();
        let a = invoke(&node, &plugin(), &vars, &good);
        assert_eq!(a.error_code(), 4, "{missing}: {}", a.stdout);
        assert!(a.msg().contains(missing), "{missing}: {}", a.stdout);
    }
    let with = |key: &str, value: &str| {
        let mut vars = add.clone();
        vars.retain(|(k, _)| *k != key);
        vars.push((key, value));
        vars.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>()
    };
    let cases: Vec<Case> = vec![
        (with("CNI_COMMAND", "UPDATE"), good.clone(), 4, "CNI_COMMAND"),
        (with("CNI_IFNAME", "much-too-long-name0"), good.clone(), 4, "CNI_IFNAME"),
        (with("CNI_ARGS", "K8S_POD_NAME"), good.clone(), 4, "CNI_ARGS"),
        (with("CNI_NETNS", "/run/netns/does-not-exist"), good.clone(), 7, "CNI_NETNS"),
        (add_owned(&add), json!({"cniVersion": "0.2.0", "name": "twill", "type": "twill-cni"}), 1, "0.2.0"),
        (add_owned(&add), json!({"cniVersion": "1.0.0", "type": "twill-cni"}), 7, "\"name\""),
        (
            add_owned(&add),
            json!({"cniVersion": "1.0.0", "name": "twill", "type": "twill-cni", "agentSocket": 7}),
            7,
            "agentSocket",
        ),
        (
            add_owned(&add),
            json!({"cniVersion": "1.0.0", "name": "twill", "type": "twill-cni", "ipam": {"type": "host-local"}}),
            2,
            "ipam",
        ),
    ];
    for (vars, conf, expected, needle) in cases {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let a = invoke(&node, &plugin(), &vars, &conf);
        assert_eq!(a.error_code(), expected, "{needle}: {}", a.stdout);
        assert!(a.msg().contains(needle), "{needle}: {}", a.stdout);
        assert!(a.json["cniVersion"].is_string(), "error objects carry cniVersion: {}", a.stdout);
    }
    let a = invoke_raw(&node, &plugin(), &add, b"{\"cniVersion\": ");
    assert_eq!(a.error_code(), 6, "{}", a.stdout);
    // An unknown version is answered in the latest version.
    let a = invoke(&node, &plugin(), &add, &json!({"cniVersion": "7.0.0", "name": "n", "type": "t"}));
    assert_eq!((a.error_code(), &a.json["cniVersion"]), (1, &json!("1.1.0")), "{}", a.stdout);
    // An error in a known version is answered in that version.
    let a = invoke(&node, &plugin(), &with_pairs(&add, "CNI_IFNAME", "a/b"), &config(&node, "0.3.1"));
    assert_eq!(a.json["cniVersion"], "0.3.1", "{}", a.stdout);

    assert!(endpoints(&node).is_empty(), "no endpoint half-created");
    assert!(
        !addresses_in(&sandbox).contains("inet 10."),
        "nothing in the sandbox: {}",
        addresses_in(&sandbox)
    );
    // A second ADD of the same attachment is refused and leaves the first.
    invoke(&node, &plugin(), &add, &good).ok();
    let again = invoke(&node, &plugin(), &add, &good);
    assert!(again.msg().contains("already attached"), "{}", again.stdout);
    assert_eq!(endpoints(&node).len(), 1);
    invoke(&node, &plugin(), &env("DEL", "c1", "", "eth0"), &good).ok();
}

/// Environment, config, expected code, text the message must contain.
type Case = (Vec<(String, String)>, Value, u64, &'static str);

fn add_owned(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn with_pairs<'a>(vars: &[(&'a str, &'a str)], key: &'a str, value: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<_> = vars.iter().copied().filter(|(k, _)| *k != key).collect();
    out.push((key, value));
    out
}

#[test]
fn kubelet_args_place_the_pod_and_policy_holds_before_add_returns() {
    let node = Node::start("cnik8s");
    let client = node.endpoint("client", "default", "app=client");
    let client_ip = client["ipv4"].as_str().unwrap().to_string();
    let policy = node.state_dir.parent().unwrap().join("deny.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: only-nobody\n  namespace: prod\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: nobody\n",
    )
    .unwrap();
    node.twill_ok(&["policy", "import", policy.to_str().unwrap()]);
    let sandbox = Sandbox::new("pod");
    let netns = sandbox.path();
    let mut vars = env("ADD", "0123456789abcdef", &netns, "eth0");
    vars.push(("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_UID=x"));
    let result = invoke(&node, &plugin(), &vars, &config(&node, "1.0.0"));
    let pod_ip = result.ok()["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    // No window: the very first packet after ADD meets the policy.
    let from_client = node.exec("client", "default", &["ping", "-c", "1", "-W", "1", &pod_ip]);
    assert!(!from_client.status.success(), "ingress to the new pod is denied at once");
    let pod = node.twill_json(&["endpoint", "get", "web-0", "--namespace", "prod"]);
    assert_eq!(pod["ingress_enforced"], true, "{pod}");
    assert!(
        pod["security_labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "k8s:io.kubernetes.pod.namespace=prod"),
        "{pod}"
    );
    assert!(Node::ping_from_netns(&sandbox.name, &client_ip), "egress is not restricted");
    let del = env("DEL", "0123456789abcdef", &netns, "eth0");
    invoke(&node, &plugin(), &del, &config(&node, "1.0.0")).ok();
    assert!(node.twill_err(&["endpoint", "get", "web-0", "--namespace", "prod"]).contains("does not exist"));
}

#[test]
fn del_and_gc_wait_for_a_stopped_agent_and_nothing_leaks() {
    let mut node = Node::start("cniqueue");
    let conf = config(&node, "1.1.0");
    let sandboxes: Vec<Sandbox> = (0..3).map(|_| Sandbox::new("q")).collect();
    let mut ips = Vec::new();
    for (i, s) in sandboxes.iter().enumerate() {
        let r = invoke(&node, &plugin(), &env("ADD", &format!("q{i}"), &s.path(), "eth0"), &conf);
        ips.push(r.ok()["ips"][0]["address"].as_str().unwrap().to_string());
    }
    node.stop_agent(libc::SIGTERM);
    let status = invoke(&node, &plugin(), &[("CNI_COMMAND", "STATUS")], &conf);
    assert_eq!(status.error_code(), 50, "{}", status.stdout);
    let late = Sandbox::new("late");
    let add = invoke(&node, &plugin(), &env("ADD", "late", &late.path(), "eth0"), &conf);
    assert_eq!(add.error_code(), 11, "{}", add.stdout);
    assert!(add.msg().contains(node.socket.to_str().unwrap()), "{}", add.stdout);
    // The runtime's DEL of q0 (its namespace already gone) and a GC that
    // keeps only q2 both succeed with the agent away.
    let gone = sandboxes[0].path();
    let del = invoke(&node, &plugin(), &env("DEL", "q0", &gone, "eth0"), &conf);
    assert_eq!((del.code, del.stdout.as_str()), (0, ""));
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "q2", "ifname": "eth0"}]);
    let collected = invoke(&node, &plugin(), &[("CNI_COMMAND", "GC"), ("CNI_PATH", REFERENCE_PLUGINS)], &gc);
    assert_eq!((collected.code, collected.stdout.as_str()), (0, ""));
    let queue = node.state_dir.join("cni-queue");
    assert_eq!(std::fs::read_dir(&queue).unwrap().count(), 2, "DEL and GC queued");

    node.start_agent();
    let left = endpoints(&node);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["name"], "q2");
    assert_eq!(std::fs::read_dir(&queue).unwrap().count(), 0, "queue drained");
    invoke(&node, &plugin(), &[("CNI_COMMAND", "STATUS")], &conf).ok();
    // q0's and q1's addresses are free again.
    let a = node.endpoint("a", "default", "");
    let b = node.endpoint("b", "default", "");
    let freed: Vec<String> = ips[..2].iter().map(|ip| ip.split('/').next().unwrap().to_string()).collect();
    assert_eq!(vec![a["ipv4"].as_str().unwrap(), b["ipv4"].as_str().unwrap()], freed);
}

#[test]
fn gc_keeps_listed_attachments_and_reads_the_older_key() {
    let node = Node::start("cnigc");
    let conf = config(&node, "1.1.0");
    let sandboxes: Vec<Sandbox> = (0..3).map(|_| Sandbox::new("gc")).collect();
    for (i, s) in sandboxes.iter().enumerate() {
        invoke(&node, &plugin(), &env("ADD", &format!("g{i}"), &s.path(), "eth0"), &conf).ok();
    }
    let standalone = node.endpoint("standalone", "default", "");
    let mut gc = conf.clone();
    gc["cni.dev/attachments"] =
        json!([{"containerID": "g1", "ifname": "eth0"}, {"containerID": "g2", "ifname": "eth0"}]);
    invoke(&node, &plugin(), &[("CNI_COMMAND", "GC")], &gc).ok();
    let mut names: Vec<String> =
        endpoints(&node).iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["g1", "g2", "standalone"], "GC leaves endpoints it did not attach: {standalone}");
    // Another network's GC does not touch this network's attachments.
    let mut other = gc.clone();
    other["name"] = "other".into();
    other["cni.dev/attachments"] = json!([]);
    invoke(&node, &plugin(), &[("CNI_COMMAND", "GC")], &other).ok();
    assert_eq!(endpoints(&node).len(), 3);
    let mut missing = conf.clone();
    missing["cniVersion"] = "1.1.0".into();
    let a = invoke(&node, &plugin(), &[("CNI_COMMAND", "GC")], &missing);
    assert_eq!(a.error_code(), 7, "{}", a.stdout);
    assert!(a.msg().contains("cni.dev/valid-attachments"), "{}", a.stdout);
}

fn iptables_nat(node: &Node) -> String {
    String::from_utf8_lossy(&node.host_cmd(&["iptables", "-t", "nat", "-S"]).stdout).into_owned()
}

/// The versions every plugin of twill-cni -> portmap -> bandwidth declares
/// (Debian's bandwidth stops at 1.0.0).
const CHAIN_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The reference bandwidth plugin's config: rates and bursts in bits.
fn bandwidth(ingress_rate: u64, egress_rate: u64) -> Value {
    json!({
        "type": "bandwidth",
        "ingressRate": ingress_rate, "ingressBurst": 400_000,
        "egressRate": egress_rate, "egressBurst": 400_000,
    })
}

/// The ifb devices in the node's namespace (bandwidth's, for egressRate).
fn ifb_devices(node: &Node) -> String {
    String::from_utf8_lossy(&node.host_cmd(&["ip", "-o", "link", "show", "type", "ifb"]).stdout).into_owned()
}

#[test]
fn chained_with_portmap_and_bandwidth() {
    let node = Node::start("cnichain");
    for version in CHAIN_VERSIONS {
        let sandbox = Sandbox::new("chain");
        let netns = sandbox.path();
        let container = format!("chain-{}", version.replace('.', ""));
        // A conflist as a runtime reads it; each plugin gets the list's
        // name and version and the previous plugin's result.
        let list = json!({
            "cniVersion": version, "name": "twill",
            "plugins": [
                config(&node, version),
                {"type": "portmap", "capabilities": {"portMappings": true}},
                bandwidth(8_000_000, 8_000_000),
            ],
        });
        let runtime_config =
            json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]});
        let mut prev = Value::Null;
        let plugins = list["plugins"].as_array().unwrap();
        for p in plugins {
            let conf = plugin_conf(&list, p, &prev, &runtime_config);
            let binary = plugin_binary(p);
            let answer = invoke(&node, &binary, &env("ADD", &container, &netns, "eth0"), &conf);
            prev = answer.ok().clone();
        }
        assert_eq!(prev["cniVersion"], version, "the chain's result is in {version}: {prev}");
        let host_device = prev["interfaces"][0]["name"].as_str().unwrap().to_string();
        assert!(iptables_nat(&node).contains("--dport 18080"), "portmap's DNAT: {}", iptables_nat(&node));
        // Traffic through the mapped port: the node's own address, port
        // 18080, reaches the container's port 80.
        let server = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &sandbox.name,
                "socat",
                "TCP-LISTEN:80,reuseaddr,fork",
                "SYSTEM:echo mapped",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let _server = twill_e2e::Background::from_child(server);
        let through_host_port = || {
            let out = node.host_cmd(&["socat", "-T2", "-", "TCP:10.200.0.1:18080,connect-timeout=2"]);
            String::from_utf8_lossy(&out.stdout).trim() == "mapped"
        };
        assert!(wait_until(Duration::from_secs(5), through_host_port), "hostPort 18080 -> container port 80");
        let qdisc = node.host_cmd(&["tc", "qdisc", "show", "dev", &host_device]);
        let qdisc = String::from_utf8_lossy(&qdisc.stdout);
        // ingressRate: tbf at the root; egressRate: an ingress qdisc whose
        // filter hands the container's packets to an ifb with its own tbf.
        assert!(qdisc.contains("qdisc tbf") && qdisc.contains("qdisc ingress"), "{host_device}: {qdisc}");
        assert!(!qdisc.contains("clsact"), "Twill's programs are tcx links: {qdisc}");
        assert_eq!(ifb_devices(&node).lines().count(), 1, "bandwidth's ifb: {}", ifb_devices(&node));
        // The whole chain's result checks out with twill-cni (CHECK came
        // with 0.4.0).
        if !version.starts_with("0.3") {
            let check = plugin_conf(&list, &plugins[0], &prev, &runtime_config);
            invoke(&node, &plugin(), &env("CHECK", &container, &netns, "eth0"), &check).ok();
        }
        // DEL in reverse order, as runtimes do.
        for p in plugins.iter().rev() {
            let conf = plugin_conf(&list, p, &Value::Null, &runtime_config);
            invoke(&node, &plugin_binary(p), &env("DEL", &container, &netns, "eth0"), &conf).ok();
        }
        assert!(!iptables_nat(&node).contains("--dport 18080"), "portmap's rules went");
        assert!(endpoints(&node).is_empty());
        assert_eq!(ifb_devices(&node), "", "bandwidth's ifb went with DEL");
        assert!(!node.bpf_root.join("tcx").join(&host_device).exists(), "the tcx pins went");
    }
}

/// Where an iperf3 measurement's server runs.
enum Server<'a> {
    /// The node's own namespace, at the router address.
    Node,
    /// A standalone endpoint (name, namespace, address).
    Endpoint(&'a str, &'a str, &'a str),
}

/// Mbit/s the receiver counted in a bounded iperf3 run from `sandbox` to
/// `server` (`reverse`: from `server` to `sandbox`), after a first second
/// of slow start left out. Each run has its own one-shot server on its
/// own port: a server that just finished a test can reset the next
/// client's connection.
fn iperf_mbits(node: &Node, sandbox: &Sandbox, server: Server, reverse: bool) -> f64 {
    static PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(5301);
    let port = PORT.fetch_add(1, std::sync::atomic::Ordering::SeqCst).to_string();
    let listening = format!("ss -ltn | grep -q :{port}");
    let (_server, address) = match server {
        Server::Node => {
            let child = std::process::Command::new("ip")
                .args(["netns", "exec", &node.netns, "iperf3", "-s", "-1", "-p", &port])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let server = twill_e2e::Background::from_child(child);
            let up = || node.host_cmd(&["sh", "-c", &listening]).status.success();
            assert!(wait_until(Duration::from_secs(10), up));
            (server, "10.200.0.1")
        }
        Server::Endpoint(name, namespace, address) => {
            let server = node.spawn_in(name, namespace, &["iperf3", "-s", "-1", "-p", &port]);
            let up = || node.exec(name, namespace, &["sh", "-c", &listening]).status.success();
            assert!(wait_until(Duration::from_secs(10), up));
            (server, address)
        }
    };
    // Four seconds after one omitted: over two, the shaper's burst
    // allowance alone once put a run 27% above its rate.
    let mut args =
        vec!["iperf3", "-c", address, "-p", &port, "-t", "4", "-O", "1", "-J", "--connect-timeout", "2000"];
    if reverse {
        args.push("-R");
    }
    let out = sandbox.run(&args);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let bits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no receiver rate: {report}"));
    bits / 1e6
}

fn tx_packets(node: &Node, device: &str) -> u64 {
    let out = node.host_cmd(&["cat", &format!("/sys/class/net/{device}/statistics/tx_packets")]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("tx_packets of {device}"))
}

fn assert_rate(what: &str, measured: f64, rate: f64) {
    eprintln!("{what}: {measured:.2} Mbit/s (rate {rate} Mbit/s)");
    assert!(
        (measured - rate).abs() <= rate * 0.25,
        "{what}: {measured:.2} Mbit/s, expected {rate} Mbit/s +-25%"
    );
}

#[test]
fn bandwidth_egress_and_ingress_rates_hold_with_policy_and_across_restarts() {
    let mut node = Node::prepare("cnishape", "10.200.0.0/24");
    // Every packet's trace, to count deliveries.
    node.agent_args = vec!["--monitor-aggregation".into(), "none".into()];
    node.start_agent();
    let db = node.endpoint("db", "default", "app=db");
    node.twill_ok(&["namespace", "create", "shaped"]);
    let peer = node.endpoint("peer", "shaped", "app=peer");
    let peer_ip = peer["ipv4"].as_str().unwrap().to_string();
    let peer_dev = peer["host_device"].as_str().unwrap().to_string();
    let db_ip = db["ipv4"].as_str().unwrap().to_string();
    let _db_server = node.tcp_server("db", 80);
    // The shaped pod may reach the node and its peer, nothing else.
    let policy = node.state_dir.parent().unwrap().join("host-only.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: host-only\n  namespace: shaped\nspec:\n  endpointSelector: {}\n  egress:\n  - toEntities:\n    - host\n  - toEndpoints:\n    - matchLabels:\n        app: peer\n",
    )
    .unwrap();
    node.twill_ok(&["policy", "import", policy.to_str().unwrap()]);

    let sandbox = Sandbox::new("shape");
    let netns = sandbox.path();
    let version = "1.0.0";
    let list = json!({
        "cniVersion": version, "name": "twill",
        "plugins": [config(&node, version), bandwidth(4_000_000, 8_000_000)],
    });
    let plugins = list["plugins"].as_array().unwrap();
    let mut vars = env("ADD", "shaped0", &netns, "eth0");
    vars.push(("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shaped;K8S_POD_NAME=web-0;K8S_POD_UID=x"));
    let mut prev = Value::Null;
    for p in plugins {
        prev =
            invoke(&node, &plugin_binary(p), &vars, &plugin_conf(&list, p, &prev, &Value::Null)).ok().clone();
    }
    let host_device = prev["interfaces"][0]["name"].as_str().unwrap().to_string();
    let shaped = || node.twill_json(&["endpoint", "get", "web-0", "--namespace", "shaped"])["shaped"] == true;
    assert!(wait_until(Duration::from_secs(5), shaped), "the agent saw bandwidth's qdiscs");
    let pins = node.bpf_root.join("tcx").join(&host_device);
    assert!(pins.join("ingress").exists() && pins.join("egress").exists(), "tcx links pinned in {pins:?}");

    // egressRate: what leaves the container; ingressRate: what reaches it.
    assert_rate("egress (container -> node)", iperf_mbits(&node, &sandbox, Server::Node, false), 8.0);
    assert_rate("ingress (node -> container)", iperf_mbits(&node, &sandbox, Server::Node, true), 4.0);
    // To and from another endpoint of the node too: the shaped pod's
    // traffic goes through the host stack and the shapers, not straight
    // into the peer's namespace.
    let peer_server = || Server::Endpoint("peer", "shaped", &peer_ip);
    assert_rate("egress (container -> peer)", iperf_mbits(&node, &sandbox, peer_server(), false), 8.0);
    assert_rate("ingress (peer -> container)", iperf_mbits(&node, &sandbox, peer_server(), true), 4.0);
    // Each packet to the peer is delivered once, and reported once.
    let before = tx_packets(&node, &peer_dev);
    let ping = sandbox.run(&["ping", "-c", "5", "-i", "0.05", "-W", "1", &peer_ip]);
    assert!(ping.status.success(), "shaped pod -> peer");
    assert!(tx_packets(&node, &peer_dev) >= before + 5, "through the stack, out of {peer_dev}");
    let deliveries = || {
        node.observe(&[
            "--all",
            "--to-pod",
            "shaped/peer",
            "--type",
            "trace:to-endpoint",
            "--protocol",
            "icmp",
        ])
        .into_iter()
        .filter(|f| f["source"]["pod_name"] == "web-0")
        .count()
    };
    assert!(wait_until(Duration::from_secs(5), || deliveries() >= 5), "{} deliveries", deliveries());
    assert_eq!(deliveries(), 5, "one to-endpoint per echo request");

    // Policy still holds for the shaped pod, and says so.
    let to_db = || {
        let target = format!("TCP:{db_ip}:80,connect-timeout=1");
        sandbox.run(&["socat", "-T1", "-", &target]).status.success()
    };
    assert!(!to_db(), "egress to db is denied");
    let drops = node.observe(&["--last", "200", "--verdict", "DROPPED", "--from-pod", "shaped/web-0"]);
    assert!(
        drops
            .iter()
            .any(|f| f["IP"]["destination"] == db_ip.as_str() && f["drop_reason_desc"] == "POLICY_DENIED"),
        "the denied connection is reported: {drops:?}"
    );

    // An agent killed and restarted keeps the links (same pins, new
    // programs) and the shaping.
    node.stop_agent(libc::SIGKILL);
    assert_rate("egress with no agent", iperf_mbits(&node, &sandbox, Server::Node, false), 8.0);
    node.start_agent();
    assert!(pins.join("ingress").exists() && pins.join("egress").exists());
    let qdisc = node.host_cmd(&["tc", "qdisc", "show", "dev", &host_device]);
    assert!(String::from_utf8_lossy(&qdisc.stdout).contains("qdisc ingress"), "bandwidth's qdisc stays");
    assert_rate("egress after a restart", iperf_mbits(&node, &sandbox, Server::Node, false), 8.0);
    assert_rate("ingress after a restart", iperf_mbits(&node, &sandbox, Server::Node, true), 4.0);
    // The restarted agent found the shaper again: still through the stack.
    assert_rate(
        "egress to the peer after a restart",
        iperf_mbits(&node, &sandbox, peer_server(), false),
        8.0,
    );
    assert!(!to_db(), "still denied after a restart");

    let check = plugin_conf(&list, &plugins[0], &prev, &Value::Null);
    invoke(&node, &plugin(), &env("CHECK", "shaped0", &netns, "eth0"), &check).ok();
    for p in plugins.iter().rev() {
        invoke(
            &node,
            &plugin_binary(p),
            &env("DEL", "shaped0", &netns, "eth0"),
            &plugin_conf(&list, p, &Value::Null, &Value::Null),
        )
        .ok();
    }
    assert_eq!(ifb_devices(&node), "", "bandwidth's ifb went with DEL");
    assert!(!pins.exists(), "the tcx pins went");
    assert!(endpoints(&node).iter().all(|e| e["name"] != "web-0"));
}

fn plugin_binary(p: &Value) -> std::path::PathBuf {
    match p["type"].as_str().unwrap() {
        "twill-cni" => plugin(),
        other => Path::new(REFERENCE_PLUGINS).join(other),
    }
}

/// What libcni pipes to one plugin of a list.
fn plugin_conf(list: &Value, p: &Value, prev: &Value, runtime_config: &Value) -> Value {
    let mut conf = p.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    if p.get("capabilities").is_some() {
        conf["runtimeConfig"] = runtime_config.clone();
    }
    if !prev.is_null() {
        conf["prevResult"] = prev.clone();
    }
    conf
}

#[test]
fn install_writes_plugin_and_conflist_and_uninstall_removes_them() {
    let node = Node::start("cniinstall");
    let base = node.state_dir.parent().unwrap().to_path_buf();
    let (bin, conf) = (base.join("bin"), base.join("net.d"));
    node.twill_ok(&[
        "install",
        "cni",
        "--bin-dir",
        bin.to_str().unwrap(),
        "--conf-dir",
        conf.to_str().unwrap(),
    ]);
    let installed = bin.join("twill-cni");
    assert!(installed.is_file());
    let list: Value =
        serde_json::from_slice(&std::fs::read(conf.join("10-twill.conflist")).unwrap()).unwrap();
    let p = &list["plugins"][0];
    assert_eq!(p["agentSocket"], node.socket.to_str().unwrap());
    assert_eq!(p["queueDir"], node.state_dir.join("cni-queue").to_str().unwrap());
    // The installed plugin with the installed config works.
    let sandbox = Sandbox::new("inst");
    let mut one = p.clone();
    one["name"] = list["name"].clone();
    one["cniVersion"] = list["cniVersion"].clone();
    invoke(&node, &installed, &env("ADD", "inst", &sandbox.path(), "eth0"), &one).ok();
    assert_eq!(endpoints(&node).len(), 1);
    let out = node.twill_ok(&[
        "uninstall",
        "--bin-dir",
        bin.to_str().unwrap(),
        "--conf-dir",
        conf.to_str().unwrap(),
    ]);
    assert!(out.contains("10-twill.conflist"), "{out}");
    assert!(!installed.exists() && !conf.join("10-twill.conflist").exists());
    assert!(addresses_in(&sandbox).lines().all(|l| !l.contains("eth0")), "Twill's side is gone");
    assert!(Path::new(&sandbox.path()).exists(), "the runtime's namespace is the runtime's");
    assert!(wait_until(Duration::from_secs(10), || !node.socket.exists()), "agent stopped");
}
