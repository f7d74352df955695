//! eBPF host routing: traffic between two endpoints of a node is delivered
//! by the sender's program straight into the receiver's namespace, with
//! the receiver's ingress policy applied there, and reported as Hubble
//! reports it; allowed verdicts only where policy is enforced.

use std::time::Duration;

use twill_e2e::{wait_until, Node, Value};

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
