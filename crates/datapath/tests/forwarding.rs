//! Two endpoints wired by hand through the datapath crate alone, inside a
//! private network namespace: the eBPF programs must forward between them,
//! drop spoofed sources and count what they did.

use std::{net::Ipv4Addr, process::Command};

use twill_abi::{metrics_index, EndpointInfo, METRIC_DIR_EGRESS};
use twill_datapath::{netdev, Datapath, PolicyEntry};

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

fn allow_all(endpoint_id: u16, direction: u8) -> PolicyEntry {
    PolicyEntry { endpoint_id, direction, identity: 0, protocol: 0, port: 0, l4_prefix: 0 }
}

fn drop_count(datapath: &Datapath, direction: u32, reason: u32) -> u64 {
    datapath
        .metrics()
        .unwrap()
        .iter()
        .filter(|m| m.direction == direction && m.reason == reason)
        .map(|m| m.packets)
        .sum()
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
            datapath.upsert_ipcache(ip, 32, 256).unwrap();
            // No policy: allow everything both ways (identity 0, any L4).
            for direction in [0, 1] {
                datapath.upsert_policy(allow_all(n as u16, direction), false).unwrap();
            }
            ips.push(ip);
        }
        datapath
            .set_config(twill_abi::DatapathConfig {
                allow_localhost: 1,
                aggregation: 0,
                events: 0,
                reserved: 0,
            })
            .unwrap();
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

        // Ingress policy of endpoint 2: only TCP/80 from identity 256. A
        // new ping is dropped by default deny (133).
        datapath.remove_policy(allow_all(2, 0)).unwrap();
        let tcp80 = PolicyEntry { identity: 256, protocol: 6, port: 80, l4_prefix: 24, ..allow_all(2, 0) };
        datapath.upsert_policy(tcp80, false).unwrap();
        assert!(!ping(&sandbox.endpoint_netns(1), ips[1]), "ICMP is not allowed into endpoint 2");
        assert!(drop_count(&datapath, 0, 133) >= 1, "counted as 'Policy denied'");

        // Allow ICMP echo from anyone, but deny it from identity 256: the deny wins (181).
        let echo = PolicyEntry { protocol: 1, port: 8, l4_prefix: 24, ..allow_all(2, 0) };
        datapath.upsert_policy(echo, false).unwrap();
        assert!(ping(&sandbox.endpoint_netns(1), ips[1]), "ICMP echo allowed by the any-peer entry");
        datapath.upsert_policy(PolicyEntry { identity: 256, ..echo }, true).unwrap();
        assert!(!ping(&sandbox.endpoint_netns(1), ips[1]), "a deny for the peer's identity wins");
        assert!(drop_count(&datapath, 0, 181) >= 1, "counted as 'Policy denied by denylist'");
    };
    std::thread::scope(|s| s.spawn(body).join()).unwrap();
}
