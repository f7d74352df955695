//! An agent started with `ip netns exec NODE twill-agent ...` runs in a
//! private mount namespace: the namespace bind mounts it makes under
//! /run/netns are invisible to everyone else. `twill endpoint exec` must
//! still enter the endpoint, through the agent's own view of /run/netns.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use twill_e2e::{bin_dir, wait_until, Node};

/// The agent started under `ip netns exec`; killed on drop, before the
/// node's own cleanup runs.
struct PrivateMountAgent(Child);

impl PrivateMountAgent {
    fn start(node: &Node) -> Self {
        let log = node.state_dir.parent().unwrap().join("agent-ip-netns-exec.log");
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &node.netns])
            .arg(bin_dir().join("twill-agent"))
            .args(node.agent_flags())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning twill-agent under ip netns exec");
        Self(child)
    }
}

impl Drop for PrivateMountAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn endpoint_exec_works_when_the_agent_has_a_private_mount_namespace() {
    let mut node = Node::start("privmnt");
    // The harness starts agents with nsenter (shared mount namespace);
    // this test needs the `ip netns exec` kind instead.
    node.stop_agent(libc::SIGTERM);
    let _agent = PrivateMountAgent::start(&node);
    let log = node.state_dir.parent().unwrap().join("agent-ip-netns-exec.log");
    let ready =
        wait_until(Duration::from_secs(30), || node.twill(&["status", "-o", "json"]).status.success());
    assert!(ready, "agent did not become ready; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());

    let ep = node.endpoint("web", "default", "app=web");
    let netns = ep["netns"].as_str().unwrap();
    let ipv4 = ep["ipv4"].as_str().unwrap();

    // The condition under test holds: the agent's bind mount is not ours,
    // so /run/netns/NAME here is at most the empty file it was mounted on.
    let ours = Path::new("/run/netns").join(netns);
    let entered = Command::new("nsenter")
        .arg(format!("--net={}", ours.display()))
        .arg("true")
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        !entered,
        "{} is usable from outside the agent: the agent is not in a private mount namespace",
        ours.display()
    );

    let out = node.exec("web", "default", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        out.status.success(),
        "twill endpoint exec failed: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("inet {ipv4}/32")), "eth0 inside the endpoint has {ipv4}: {stdout}");

    // As with `ip netns exec`, /sys shows the endpoint's own devices.
    let mac = node.exec("web", "default", &["cat", "/sys/class/net/eth0/address"]);
    assert_eq!(
        String::from_utf8_lossy(&mac.stdout).trim(),
        ep["mac"].as_str().unwrap(),
        "eth0's MAC from sysfs"
    );

    // The command's exit status is its own, and traffic leaves the
    // endpoint: the node's router answers.
    let router = node.pod_cidr.trim_end_matches("0/24").to_string() + "1";
    assert!(node.ping("web", "default", &router), "endpoint pings the router {router}");
    assert_eq!(node.exec("web", "default", &["sh", "-c", "exit 7"]).status.code(), Some(7));

    node.twill_ok(&["endpoint", "delete", "web"]);
}
