//! Two endpoints wired by hand through the datapath crate alone, inside a
//! private network namespace: the eBPF programs must forward between them,
//! drop spoofed sources and count what they did.

use std::{
    fs::File,
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use twill_abi::{metrics_index, EndpointInfo, METRIC_DIR_EGRESS};
use twill_datapath::{netdev, Datapath, IpcacheEntry, PolicyEntry};

/// Runs the test body in a thread that has moved into a fresh network
/// namespace of its own (gone when the thread ends, with every device in
/// it), so devices never touch the host's; removes the endpoints'
/// namespaces and pins on drop.
struct Sandbox {
    name: String,
    bpf_root: std::path::PathBuf,
}

impl Sandbox {
    fn new(tag: &str) -> Self {
        let name = format!("twdp-{tag}-{}", std::process::id());
        let bpf_root = std::path::PathBuf::from(format!("/sys/fs/bpf/{name}"));
        Self { name, bpf_root }
    }

    fn enter(&self) {
        // SAFETY: unshare for this thread only.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "{}", std::io::Error::last_os_error());
    }

    fn endpoint_netns(&self, n: u32) -> String {
        format!("{}-ep{n}", self.name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for n in 0..4 {
            let _ = netdev::delete_netns(&self.endpoint_netns(n));
        }
        let _ = std::fs::remove_dir_all(&self.bpf_root);
    }
}

/// `command` run inside the named network namespace.
fn in_netns(netns: &str, program: &str, args: &[&str]) -> Command {
    let file = File::open(format!("/run/netns/{netns}")).unwrap();
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: only setns(2), async-signal-safe, between fork and exec; the
    // file stays open in the parent until the command has been spawned.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Sends one ICMP echo request from inside `netns` with a source address
/// the endpoint does not own, through a raw socket, as a spoofing workload
/// would: no address needs adding for it.
fn send_spoofed_echo(netns: &str, src: Ipv4Addr, dst: Ipv4Addr) {
    let netns = netns.to_string();
    std::thread::spawn(move || {
        let file = File::open(format!("/run/netns/{netns}")).unwrap();
        // SAFETY: setns and socket calls on this short-lived thread only,
        // with a buffer and address that outlive the call.
        unsafe {
            assert_eq!(libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET), 0);
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            let mut packet = [0u8; 28];
            packet[0] = 0x45; // IPv4, 20-byte header
            packet[8] = 64; // TTL
            packet[9] = 1; // ICMP
            packet[12..16].copy_from_slice(&src.octets());
            packet[16..20].copy_from_slice(&dst.octets());
            packet[20] = 8; // echo request
            let checksum = !packet[20..].chunks(2).fold(0u32, |sum, w| {
                let sum = sum + u32::from(u16::from_be_bytes([w[0], w[1]]));
                (sum & 0xffff) + (sum >> 16)
            }) as u16;
            packet[22..24].copy_from_slice(&checksum.to_be_bytes());
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst.octets()) },
                sin_zero: [0; 8],
            };
            // The kernel fills in the IP length and checksum (raw(7)).
            let sent = libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            assert_eq!(sent, packet.len() as isize, "{}", std::io::Error::last_os_error());
            libc::close(fd);
        }
    })
    .join()
    .unwrap();
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
    in_netns(netns, "ping", &["-c", "1", "-W", "1", &dst.to_string()])
        .status()
        .map(|s| s.success())
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
                mtu: None,
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
            datapath.upsert_ipcache(&IpcacheEntry::local(ip, 32, 256)).unwrap();
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
                maglev_table_size: twill_abi::LB_MAGLEV_DEFAULT_SIZE,
                tunnel_ifindex: 0,
                report_flags: 0,
                legacy_host_routing: 0,
                fib_devices: [0; twill_abi::FIB_DEVICES_MAX],
            })
            .unwrap();
        assert!(ping(&sandbox.endpoint_netns(1), ips[1]), "endpoint 1 -> endpoint 2");
        assert!(ping(&sandbox.endpoint_netns(2), router), "endpoint 2 -> host");

        // Forwarding was done by the eBPF program (counted as forwarded
        // in the egress direction of the sending endpoint).
        let metrics = datapath.metrics().unwrap();
        assert!(metrics.iter().any(|m| m.direction == METRIC_DIR_EGRESS && m.reason == 0 && m.packets >= 2));

        // An address the endpoint does not own is dropped as spoofed (132).
        let spoofed_drops = || {
            datapath
                .metrics()
                .unwrap()
                .iter()
                .filter(|m| metrics_index(m.direction, m.reason) == metrics_index(METRIC_DIR_EGRESS, 132))
                .map(|m| m.packets)
                .sum::<u64>()
        };
        assert_eq!(spoofed_drops(), 0);
        send_spoofed_echo(&sandbox.endpoint_netns(1), Ipv4Addr::new(10, 77, 0, 99), ips[1]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while spoofed_drops() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(spoofed_drops() >= 1, "spoofed packet counted as 'Invalid source ip'");

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
