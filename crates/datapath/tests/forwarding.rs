//! Two endpoints wired by hand through the datapath crate alone, inside a
//! private network namespace: the eBPF programs must forward between them,
//! drop spoofed sources and count what they did.

use std::{net::Ipv4Addr, process::Command};

use twill_abi::{metrics_index, EndpointInfo, METRIC_DIR_EGRESS};
use twill_datapath::{netdev, Datapath};

/// Runs the test body in a thread that has moved into a fresh network
/// namespace, so devices never touch the host's; cleans up on drop.
struct Sandbox {
    name: String,
    bpf_root: std::path::PathBuf,
}

impl Sandbox {
    fn new(tag: &str) -> Self {
        let name = format!("twdp-{tag}-{}", std::process::id());
        let bpf_root = std::path::PathBuf::from(format!("/sys/fs/bpf/{name}"));
        let status = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(status.success());
        Self { name, bpf_root }
    }

    fn enter(&self) {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace fd for this thread only.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    }

    fn endpoint_netns(&self, n: u32) -> String {
        format!("{}-ep{n}", self.name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for n in 0..4 {
            let _ = Command::new("ip").args(["netns", "del", &self.endpoint_netns(n)]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::fs::remove_dir_all(&self.bpf_root);
    }
}

fn ping(netns: &str, dst: Ipv4Addr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", netns, "ping", "-c", "1", "-W", "1", &dst.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn endpoints_reach_each_other_through_ebpf_and_spoofing_is_dropped() {
    let sandbox = Sandbox::new("fwd");
    let body = || {
        sandbox.enter();
        let router = Ipv4Addr::new(10, 77, 0, 1);
        netdev::ensure_host_device(router).unwrap();
        let mut datapath = Datapath::load(&sandbox.bpf_root).unwrap();
        let mut ips = Vec::new();
        for n in 1..=2u32 {
            let ip = Ipv4Addr::new(10, 77, 0, 1 + n as u8);
            let netns = sandbox.endpoint_netns(n);
            let dev = format!("twtest{n}");
            let plumbing = netdev::EndpointPlumbing {
                netns: &netns,
                host_device: &dev,
                host_mac: [2, 0xaa, 0, 0, 0, n as u8],
                endpoint_mac: [2, 0xbb, 0, 0, 0, n as u8],
                ip,
                router,
            };
            netdev::create_endpoint(&plumbing).unwrap();
            datapath.attach(&dev).unwrap();
            let info = EndpointInfo {
                ifindex: netdev::ifindex(&dev).unwrap(),
                endpoint_id: n,
                identity: 256,
                flags: 0,
                mac: plumbing.endpoint_mac,
                host_mac: plumbing.host_mac,
            };
            datapath.upsert_endpoint(ip, info).unwrap();
            ips.push(ip);
        }
        assert!(ping(&sandbox.endpoint_netns(1), ips[1]), "endpoint 1 -> endpoint 2");
        assert!(ping(&sandbox.endpoint_netns(2), router), "endpoint 2 -> host");

        // Forwarding was done by the eBPF program (counted as forwarded
        // in the egress direction of the sending endpoint).
        let metrics = datapath.metrics().unwrap();
        assert!(metrics.iter().any(|m| m.direction == METRIC_DIR_EGRESS && m.reason == 0 && m.packets >= 2));

        // An address the endpoint does not own is dropped as spoofed (132).
        let status = Command::new("ip")
            .args(["-n", &sandbox.endpoint_netns(1), "addr", "add", "10.77.0.99/32", "dev", "eth0"])
            .status()
            .unwrap();
        assert!(status.success());
        let spoofed = Command::new("ip")
            .args([
                "netns",
                "exec",
                &sandbox.endpoint_netns(1),
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-I",
                "10.77.0.99",
                "10.77.0.3",
            ])
            .output()
            .unwrap();
        assert!(!spoofed.status.success());
        let drops: u64 = datapath
            .metrics()
            .unwrap()
            .iter()
            .filter(|m| metrics_index(m.direction, m.reason) == metrics_index(METRIC_DIR_EGRESS, 132))
            .map(|m| m.packets)
            .sum();
        assert!(drops >= 1, "spoofed packet counted as 'Invalid source ip'");
    };
    std::thread::scope(|s| s.spawn(body).join()).unwrap();
}
