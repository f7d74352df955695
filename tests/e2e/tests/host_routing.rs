//! eBPF host routing: traffic between two endpoints of a node is delivered
//! by the sender's program straight into the receiver's namespace, with
//! the receiver's ingress policy applied there, and reported as Hubble
//! reports it; allowed verdicts only where policy is enforced.

use std::{process::Command, time::Duration};

use twill_e2e::{wait_until, Node, Outside, Value};

fn observe(node: &Node, args: &[&str]) -> Vec<Value> {
    node.observe(&[args, &["--all"]].concat())
}

fn tx_packets(node: &Node, device: &str) -> u64 {
    let out = node.host_cmd(&["cat", &format!("/sys/class/net/{device}/statistics/tx_packets")]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("tx_packets of {device}"))
}

fn import(node: &Node, name: &str, yaml: &str) {
    let path = node.state_dir.parent().unwrap().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    node.twill_ok(&["policy", "import", path.to_str().unwrap()]);
}

#[test]
fn endpoint_to_endpoint_skips_the_receivers_host_device() {
    let node = Node::start("hostroute");
    node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    let b_ip = b["ipv4"].as_str().unwrap().to_string();
    let b_dev = b["host_device"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(5), || node.ping("a", "default", &b_ip)));

    // Through the host, the receiver's host-side veth transmits...
    let before = tx_packets(&node, &b_dev);
    let out = node.host_cmd(&["ping", "-c", "5", "-i", "0.05", "-W", "1", &b_ip]);
    assert!(out.status.success(), "host -> b");
    assert!(tx_packets(&node, &b_dev) >= before + 5, "host traffic crosses {b_dev}");

    // ...from another endpoint it does not: one veth crossing, into b.
    let before = tx_packets(&node, &b_dev);
    let out = node.exec("a", "default", &["ping", "-c", "20", "-i", "0.02", "-W", "1", &b_ip]);
    assert!(out.status.success(), "a -> b: {}", String::from_utf8_lossy(&out.stderr));
    let crossed = tx_packets(&node, &b_dev) - before;
    assert!(crossed < 5, "{crossed} of 20 echo requests went through {b_dev}");
    // Routed, as by a router one hop away: the replies' TTL is one less
    // than the 64 b sent them with (and their rewritten checksum is right,
    // or a's stack would have dropped them).
    let replies = String::from_utf8_lossy(&out.stdout);
    assert!(replies.contains("ttl=63") && !replies.contains("ttl=64"), "a -> b: {replies}");

    // The delivery is b's to-endpoint, at b's device, with the MACs b got.
    assert!(wait_until(Duration::from_secs(5), || {
        observe(&node, &["--to-pod", "default/b", "--type", "trace:to-endpoint", "--protocol", "icmp"])
            .iter()
            .any(|f| f["interface"]["name"] == b_dev.as_str())
    }));
    let flows =
        observe(&node, &["--to-pod", "default/b", "--type", "trace:to-endpoint", "--protocol", "icmp"]);
    let f = flows.iter().find(|f| f["interface"]["name"] == b_dev.as_str()).unwrap();
    assert_eq!(f["source"]["pod_name"], "a");
    assert_eq!(f["traffic_direction"], "INGRESS");
    assert_eq!(f["ethernet"]["destination"].as_str().unwrap(), b["mac"].as_str().unwrap());
}

#[test]
fn receivers_ingress_policy_is_enforced_at_the_sender_and_verdicts_follow_enforcement() {
    let node = Node::start("hrpolicy");
    node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    let c = node.endpoint("c", "default", "app=c");
    let (b_ip, c_ip) = (b["ipv4"].as_str().unwrap().to_string(), c["ipv4"].as_str().unwrap().to_string());
    let b_dev = b["host_device"].as_str().unwrap().to_string();

    // No policy anywhere: connections pass and no verdict is reported
    // (nothing is enforced, so a verdict would say nothing).
    assert!(wait_until(Duration::from_secs(5), || node.ping("a", "default", &b_ip)));
    assert!(node.ping("a", "default", &c_ip));
    assert!(wait_until(Duration::from_secs(5), || {
        !observe(&node, &["--from-pod", "default/a", "--type", "trace"]).is_empty()
    }));
    let verdicts = observe(&node, &["--from-pod", "default/a", "--type", "policy-verdict"]);
    assert!(verdicts.is_empty(), "verdicts without any policy: {verdicts:?}");

    // b accepts only c. a's pings to b are dropped by b's ingress policy,
    // reported at b's device as b's ingress.
    import(
        &node,
        "b-from-c",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: b-from-c}\nspec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress: [{fromEndpoints: [{matchLabels: {app: c}}]}]\n",
    );
    assert!(wait_until(Duration::from_secs(5), || !node.ping("a", "default", &b_ip)));
    assert!(node.ping("c", "default", &b_ip), "c is allowed");
    assert!(wait_until(Duration::from_secs(5), || {
        observe(&node, &["--from-pod", "default/a", "--to-pod", "default/b", "--verdict", "DROPPED"])
            .iter()
            .any(|f| f["drop_reason_desc"] == "POLICY_DENIED" && f["interface"]["name"] == b_dev.as_str())
    }));
    // Ingress is enforced on b: c's allowed connection has its verdict,
    // and a's egress (not enforced) still has none.
    assert!(
        wait_until(Duration::from_secs(5), || {
            observe(&node, &["--from-pod", "default/c", "--type", "policy-verdict", "--verdict", "FORWARDED"])
                .iter()
                .any(|f| f["traffic_direction"] == "INGRESS" && f["destination"]["pod_name"] == "b")
        }),
        "an allowed ingress verdict for c -> b: {:?}",
        observe(&node, &["--from-pod", "default/c"])
    );
    let egress: Vec<Value> = observe(&node, &["--from-pod", "default/a", "--type", "policy-verdict"])
        .into_iter()
        .filter(|f| f["traffic_direction"] == "EGRESS")
        .collect();
    assert!(egress.is_empty(), "egress verdicts for an endpoint without egress policy: {egress:?}");
}

/// Datagrams the node's stack has forwarded (`Ip: ForwDatagrams`).
fn forwarded_by_stack(node: &Node) -> u64 {
    let out = node.host_cmd(&["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let at = names.split_whitespace().position(|n| n == "ForwDatagrams").unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

const OUT_GW: &str = "198.51.100.1";
const OUT_IP: &str = "198.51.100.2";

/// Runs a ping from endpoint `a` and returns how many datagrams the
/// node's stack forwarded meanwhile.
fn stack_forwarded_for_pings(node: &Node, dst: &str) -> u64 {
    let before = forwarded_by_stack(node);
    let out = node.exec("a", "default", &["ping", "-c", "20", "-i", "0.02", "-W", "1", dst]);
    assert!(out.status.success(), "a -> {dst}: {}", String::from_utf8_lossy(&out.stdout));
    forwarded_by_stack(node) - before
}

fn restart(node: &mut Node, args: &[&str]) {
    node.stop_agent(libc::SIGTERM);
    node.agent_args = args.iter().map(|a| a.to_string()).collect();
    node.start_agent();
}

#[test]
fn traffic_to_and_from_outside_the_node_is_routed_past_the_host_stack() {
    let mut node = Node::start("hrout");
    let outside = Outside::attach(&node, "twhr-out", OUT_GW, &[OUT_IP]);
    let _web = outside.spawn(&["socat", "TCP-LISTEN:8080,reuseaddr,fork", "SYSTEM:echo outside"]);
    let a = node.endpoint("a", "default", "app=a");
    let (a_ip, a_dev) =
        (a["ipv4"].as_str().unwrap().to_string(), a["host_device"].as_str().unwrap().to_string());
    let web = format!("{OUT_IP}:8080");
    // What kube-proxy and Docker put in FORWARD: a connection half of
    // whose packets skip netfilter looks INVALID to its conntrack.
    let out = node.host_cmd(&[
        "iptables",
        "-A",
        "FORWARD",
        "-m",
        "conntrack",
        "--ctstate",
        "INVALID",
        "-j",
        "DROP",
    ]);
    assert!(out.status.success(), "iptables: {}", String::from_utf8_lossy(&out.stderr));

    // Out of a device Twill does not manage, the stack routes both ways.
    assert_eq!(node.tcp_request("a", &web).as_deref(), Ok("outside"));
    let forwarded = stack_forwarded_for_pings(&node, OUT_IP);
    assert!(forwarded >= 40, "without --devices the stack forwarded {forwarded} datagrams of 20 echoes");

    // On a --devices device, eBPF host routing: out by the FIB and
    // bpf_redirect(_neigh), back by from_netdev straight into the
    // endpoint; the stack forwards neither way, and its INVALID rule
    // never sees a packet of the connection.
    restart(&mut node, &["--devices", "twhr-out"]);
    // No neighbour entry for the next hop yet: the first packet resolves
    // it through bpf_redirect_neigh, as the stack would have.
    node.host_cmd(&["ip", "neigh", "flush", "dev", "twhr-out"]);
    let out = node.exec("a", "default", &["ping", "-c", "1", "-W", "2", OUT_IP]);
    assert!(out.status.success(), "a -> outside, first packet: {}", String::from_utf8_lossy(&out.stdout));
    let neigh = node.host_cmd(&["ip", "neigh", "show", "dev", "twhr-out"]);
    assert!(String::from_utf8_lossy(&neigh.stdout).contains(OUT_IP), "the next hop was resolved");
    let forwarded = stack_forwarded_for_pings(&node, OUT_IP);
    assert!(forwarded < 5, "--devices: the stack forwarded {forwarded} datagrams of 20 echoes");
    assert_eq!(node.tcp_request("a", &web).as_deref(), Ok("outside"));

    // Reported where it left the node, as Cilium's host routing reports it.
    assert!(
        wait_until(Duration::from_secs(5), || {
            observe(&node, &["--from-pod", "default/a", "--type", "trace:to-network", "--protocol", "tcp"])
                .iter()
                .any(|f| f["interface"]["name"] == "twhr-out" && f["traffic_direction"] == "EGRESS")
        }),
        "{:?}",
        observe(&node, &["--from-pod", "default/a", "--type", "trace"])
    );
    let to_stack = observe(&node, &["--from-pod", "default/a", "--type", "trace:to-stack"]);
    assert!(to_stack.is_empty(), "nothing went to the stack: {to_stack:?}");

    // What the FIB lookup cannot decide stays the stack's: a packet over
    // the route's MTU with DF set gets the stack's ICMP answer.
    node.host_cmd(&["ip", "link", "set", "twhr-out", "mtu", "1280"]);
    let out = node.exec("a", "default", &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1400", OUT_IP]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("Frag needed") && said.contains("1280"), "ping -M do over the MTU: {said}");
    node.host_cmd(&["ip", "link", "set", "twhr-out", "mtu", "1500"]);

    // Egress policy still decides first.
    import(
        &node,
        "a-no-world",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a-no-world}\nspec:\n  endpointSelector: {matchLabels: {app: a}}\n  egressDeny: [{toEntities: [world]}]\n  egress: [{toEntities: [all]}]\n",
    );
    assert!(wait_until(Duration::from_secs(5), || node.tcp_request("a", &web).is_err()));
    node.twill_ok(&["policy", "delete", "--all"]);
    assert!(wait_until(Duration::from_secs(5), || node.tcp_request("a", &web).is_ok()));

    // A connection from outside is the receiver's ingress, at its device.
    let from_outside = |n: &str| {
        Command::new("ip")
            .args(["netns", "exec", &outside.netns, "ping", "-c", n, "-i", "0.05", "-W", "1", &a_ip])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(from_outside("3"), "outside -> a");
    assert!(wait_until(Duration::from_secs(5), || {
        observe(&node, &["--to-pod", "default/a", "--type", "trace:to-endpoint", "--protocol", "icmp"])
            .iter()
            .any(|f| f["interface"]["name"] == a_dev.as_str() && f["source"]["identity"] == 2)
    }));
    // a refuses the world: outside's pings are dropped at a's device, and
    // the replies of a's own connections still come in.
    import(
        &node,
        "a-not-from-world",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a-not-from-world}\nspec:\n  endpointSelector: {matchLabels: {app: a}}\n  ingressDeny: [{fromEntities: [world]}]\n  ingress: [{fromEntities: [all]}]\n",
    );
    assert!(wait_until(Duration::from_secs(5), || !from_outside("1")));
    assert!(wait_until(Duration::from_secs(5), || {
        observe(&node, &["--to-pod", "default/a", "--verdict", "DROPPED", "--protocol", "icmp"])
            .iter()
            .any(|f| f["drop_reason_desc"] == "POLICY_DENY" && f["interface"]["name"] == a_dev.as_str())
    }));
    assert_eq!(node.tcp_request("a", &web).as_deref(), Ok("outside"), "replies pass by conntrack");
    node.twill_ok(&["policy", "delete", "--all"]);

    // Legacy host routing: the stack forwards both ways, reported as
    // to-stack, with or without the device program.
    restart(&mut node, &["--enable-host-legacy-routing", "--devices", "twhr-out"]);
    let forwarded = stack_forwarded_for_pings(&node, OUT_IP);
    assert!(forwarded >= 40, "legacy routing: the stack forwarded {forwarded} datagrams of 20 echoes");
    assert_eq!(node.tcp_request("a", &web).as_deref(), Ok("outside"));
    assert!(wait_until(Duration::from_secs(5), || {
        !observe(&node, &["--from-pod", "default/a", "--type", "trace:to-stack", "--protocol", "tcp"])
            .is_empty()
    }));

    // Dropped from --devices, the device loses the earlier run's filters.
    restart(&mut node, &[]);
    let filters = node.host_cmd(&["tc", "filter", "show", "dev", "twhr-out", "ingress"]);
    let filters = String::from_utf8_lossy(&filters.stdout).to_string();
    assert!(!filters.contains("from_netdev"), "filters left on twhr-out: {filters}");
    let forwarded = stack_forwarded_for_pings(&node, OUT_IP);
    assert!(forwarded >= 40, "the stack's both ways again: {forwarded} of 20 echoes");
}
