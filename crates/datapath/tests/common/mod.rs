//! Fixtures shared by the service tests: named namespaces made with `ip`,
//! small TCP/UDP servers inside them, and the service map entries.
#![allow(dead_code)]

use std::{
    fs::File,
    io::Write,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use twill_abi::{Lb4Backend, Lb4Key, Lb4Service};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Named network namespaces, deleted on drop.
pub struct Netns(pub Vec<String>);

impl Netns {
    pub fn add(&mut self, name: &str) -> String {
        ip(&["netns", "add", name]);
        self.0.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"]);
        name.to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// Runs `f` on a thread inside the named namespace.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(format!("/run/netns/{netns}")).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns for this short-lived thread only.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            f()
        })
        .join()
        .unwrap()
    })
}

/// TCP servers that answer every connection with their name, and UDP
/// servers that answer every datagram with it; stopped on drop.
#[derive(Default)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn tcp(&mut self, netns: &str, addr: SocketAddrV4, name: &'static str) {
        let listener = in_netns(netns, || TcpListener::bind(addr).unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(name.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
    }

    pub fn udp(&mut self, netns: &str, addr: SocketAddrV4, name: &'static str) {
        let socket = in_netns(netns, || UdpSocket::bind(addr).unwrap());
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(name.as_bytes(), from);
                }
            }
        }));
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub fn be32(ip: Ipv4Addr) -> u32 {
    u32::from(ip).to_be()
}

pub fn frontend(address: Ipv4Addr, port: u16, proto: u8, slot: u16) -> Lb4Key {
    Lb4Key { address: be32(address), dport: port.to_be(), backend_slot: slot, proto, pad: [0; 3] }
}

pub fn backend(address: Ipv4Addr, port: u16, proto: u8) -> Lb4Backend {
    Lb4Backend { address: be32(address), port: port.to_be(), proto, flags: 0 }
}

/// Writes a frontend with `backend_ids` in slots 1.., master last (as the
/// agent orders it: a master never names slots not yet written).
pub fn write_service(
    maps: &mut dyn twill_datapath::LbMaps,
    key: Lb4Key,
    rev_nat_index: u32,
    backend_ids: &[u32],
    affinity_timeout: u32,
    flags: u8,
) {
    for (i, id) in backend_ids.iter().enumerate() {
        let slot = Lb4Key { backend_slot: i as u16 + 1, ..key };
        let value = Lb4Service { backend_id: *id, rev_nat_index, ..Default::default() };
        maps.upsert_service(slot, value).unwrap();
    }
    let master = Lb4Service {
        backend_id: 0,
        affinity_timeout,
        rev_nat_index,
        count: backend_ids.len() as u16,
        flags,
        pad: 0,
    };
    maps.upsert_service(key, master).unwrap();
}

/// The test client: `count` TCP connections (`mode` "tcp") or UDP requests
/// ("udp") to `addr`, each printing what the server said and the peer
/// address the socket reported, or `err ERRNO`.
const CLIENT: &str = r#"
import socket, sys
mode, host, port, n, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
for _ in range(n):
    try:
        if mode == "tcp":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect((host, port))
            peer = s.getpeername()
            data = s.recv(64)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.sendto(b"ping", (host, port))
            data, peer = s.recvfrom(64)
        print(data.decode(), "%s:%d" % peer)
        s.close()
    except socket.timeout:
        print("err timeout")
    except OSError as e:
        print("err", e.errno)
"#;

/// Runs the client (python3) inside `netns`, first moved into the cgroup
/// whose `cgroup.procs` is given, if any.
pub fn client(
    netns: &str,
    cgroup_procs: Option<&std::path::Path>,
    mode: &str,
    addr: SocketAddrV4,
    count: usize,
    timeout_seconds: f64,
) -> Vec<String> {
    use std::os::unix::process::CommandExt;
    let procs = cgroup_procs.map(|p| std::fs::OpenOptions::new().write(true).open(p).unwrap());
    let ns = File::open(format!("/run/netns/{netns}")).unwrap();
    let mut command = Command::new("python3");
    command.args([
        "-c",
        CLIENT,
        mode,
        &addr.ip().to_string(),
        &addr.port().to_string(),
        &count.to_string(),
        &timeout_seconds.to_string(),
    ]);
    // SAFETY: only write(2) and setns(2), async-signal-safe, between fork
    // and exec; "0" moves the writing process into the cgroup.
    unsafe {
        command.pre_exec(move || {
            if let Some(procs) = &procs {
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().expect("running python3");
    assert!(out.status.success(), "client failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect()
}

/// A bpffs directory for one test's datapath, removed on drop.
pub struct BpfRoot(pub std::path::PathBuf);

impl BpfRoot {
    pub fn new(tag: &str) -> Self {
        Self(std::path::PathBuf::from(format!("/sys/fs/bpf/twill-{tag}-{}", std::process::id())))
    }
}

impl Drop for BpfRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// BPF_PROG_TEST_RUN runs tc programs on the loopback device.
pub const LOOPBACK_IFINDEX: u32 = 1;
/// bpf_redirect_peer's verdict.
pub const TC_ACT_REDIRECT: u32 = 7;

/// An Ethernet frame with a UDP datagram from `src:sport` to `dst:53`.
pub fn udp_frame_from(src: Ipv4Addr, dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    udp_frame_ports(src, dst, sport, 53)
}

/// An Ethernet frame with a UDP datagram from `src:sport` to `dst:dport`.
pub fn udp_frame_ports(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    p.extend([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend([0, 8, 0, 0]);
    p
}

/// An Ethernet frame with a TCP segment (no payload, no options) from
/// `src:sport` to `dst:dport` with TCP header flags `flags`.
pub fn tcp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    p.extend([0x45, 0, 0, 40, 0, 0, 0, 0, 64, TCP, 0, 0]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    p
}

/// Endpoint `id` with identity 1000 + id, on the loopback device.
pub fn test_endpoint(id: u32, flags: u32) -> twill_abi::EndpointInfo {
    twill_abi::EndpointInfo {
        ifindex: LOOPBACK_IFINDEX,
        endpoint_id: id,
        identity: 1000 + id,
        flags,
        mac: [2, 0xbb, 0, 0, 0, id as u8],
        host_mac: [2, 0xaa, 0, 0, 0, id as u8],
    }
}

/// Endpoint `endpoint_id` allows every peer, protocol and port in
/// `direction`.
pub fn allow_any(endpoint_id: u16, direction: u8) -> twill_datapath::PolicyEntry {
    twill_datapath::PolicyEntry { endpoint_id, direction, identity: 0, protocol: 0, port: 0, l4_prefix: 0 }
}

/// A datapath in `root` where endpoints `(address, id)` (identity 1000 +
/// id) allow everything in both directions.
pub fn allow_all_datapath(root: &BpfRoot, endpoints: &[(Ipv4Addr, u32)]) -> twill_datapath::Datapath {
    use twill_datapath::IpcacheEntry;
    let mut dp = twill_datapath::Datapath::load(&root.0).unwrap();
    dp.set_config(twill_abi::DatapathConfig {
        allow_localhost: 1,
        maglev_table_size: twill_abi::LB_MAGLEV_DEFAULT_SIZE,
        ..Default::default()
    })
    .unwrap();
    for &(ip, id) in endpoints {
        dp.upsert_ipcache(&IpcacheEntry::local(ip, 32, 1000 + id)).unwrap();
        for direction in [0, 1] {
            dp.upsert_policy(allow_any(id as u16, direction), false).unwrap();
        }
    }
    dp
}
