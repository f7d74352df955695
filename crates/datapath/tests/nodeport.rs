//! Per-packet NodePort on a node device, on a real kernel: a client in
//! netns "outside" reaches node-address:nodePort across a veth into netns
//! "node" (the programs sit on its end of that veth), which forwards to a
//! server in netns "backend" behind a second veth.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
};

use common::*;
use twill_abi::{
    DROP_NO_SERVICE, IDENTITY_HOST, LB_F_NODEPORT, LB_NAT_FORWARD, LB_NAT_REVERSE, METRIC_DIR_INGRESS,
};
use twill_datapath::Datapath;

const NODE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);

struct Fixture {
    dp: Datapath,
    root: PathBuf,
    outside: String,
    node: String,
    _servers: Servers,
    _netns: Netns,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // The filters go with the node namespace's devices.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn fixture(tag: &str) -> Fixture {
    let name = format!("twnp-{tag}-{}", std::process::id());
    let mut netns = Netns(Vec::new());
    let outside = netns.add(&format!("{name}-out"));
    let node = netns.add(&format!("{name}-node"));
    let be = netns.add(&format!("{name}-be"));
    ip(&["-n", &node, "link", "add", "n0", "type", "veth", "peer", "name", "o0", "netns", &outside]);
    ip(&["-n", &node, "link", "add", "n1", "type", "veth", "peer", "name", "b0", "netns", &be]);
    for (ns, dev, addr) in [
        (&node, "n0", "10.77.0.1/24"),
        (&outside, "o0", "10.77.0.2/24"),
        (&node, "n1", "10.78.0.1/24"),
        (&be, "b0", "10.78.0.2/24"),
    ] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    ip(&["-n", &be, "route", "add", "default", "via", "10.78.0.1"]);
    in_netns(&node, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap());
    let mut servers = Servers::default();
    servers.tcp(&be, SocketAddrV4::new(BACKEND, 8080), "np-tcp");
    servers.udp(&be, SocketAddrV4::new(BACKEND, 8053), "np-udp");

    let root = PathBuf::from(format!("/sys/fs/bpf/{name}"));
    let mut dp = Datapath::load(&root).unwrap();
    dp.upsert_ipcache(&twill_datapath::IpcacheEntry::local(NODE, 32, IDENTITY_HOST)).unwrap();
    in_netns(&node, || dp.attach_netdev("n0").unwrap());
    // Attaching again (a restarted agent) swaps the programs in place.
    in_netns(&node, || dp.attach_netdev("n0").unwrap());
    let maps = dp.lb_maps();
    maps.upsert_backend(1, backend(BACKEND, 8080, TCP)).unwrap();
    maps.upsert_backend(2, backend(BACKEND, 8053, UDP)).unwrap();
    write_service(maps, frontend(Ipv4Addr::UNSPECIFIED, 30080, TCP, 0), 1, &[1], 0, LB_F_NODEPORT);
    write_service(maps, frontend(Ipv4Addr::UNSPECIFIED, 30053, UDP, 0), 2, &[2], 0, LB_F_NODEPORT);
    write_service(maps, frontend(Ipv4Addr::UNSPECIFIED, 30099, TCP, 0), 3, &[], 0, LB_F_NODEPORT);
    Fixture { dp, root, outside, node, _servers: servers, _netns: netns }
}

#[test]
fn nodeport_reaches_the_backend_and_replies_from_the_node() {
    let f = fixture("ok");
    let lines = client(&f.outside, None, "tcp", SocketAddrV4::new(NODE, 30080), 5, 5.0);
    assert_eq!(lines, vec!["np-tcp 10.77.0.1:30080"; 5]);
    let lines = client(&f.outside, None, "udp", SocketAddrV4::new(NODE, 30053), 5, 5.0);
    assert_eq!(lines, vec!["np-udp 10.77.0.1:30053"; 5], "UDP replies must come from the NodePort");

    let entries = f.dp.lb_nat_entries().unwrap();
    let ifindex = in_netns(&f.node, || twill_datapath::netdev::ifindex("n0").unwrap());
    let forward: Vec<_> = entries.iter().filter(|(k, _)| k.scope == LB_NAT_FORWARD).collect();
    let reverse: Vec<_> = entries.iter().filter(|(k, _)| k.scope == LB_NAT_REVERSE).collect();
    assert_eq!((forward.len(), reverse.len()), (10, 10), "{entries:?}");
    for (k, e) in &forward {
        assert_eq!((k.daddr, e.address, e.ifindex), (be32(NODE), be32(BACKEND), ifindex), "{k:?} {e:?}");
    }
    for (k, e) in &reverse {
        assert_eq!((k.saddr, e.address), (be32(BACKEND), be32(NODE)), "{k:?} {e:?}");
    }

    // The node itself is not behind the device: a port with no NodePort
    // passes untouched (refused by the node's stack).
    let lines = client(&f.outside, None, "tcp", SocketAddrV4::new(NODE, 30081), 1, 5.0);
    assert_eq!(lines, vec!["err 111"]);
}

#[test]
fn nodeport_without_backends_drops() {
    let f = fixture("nobe");
    let lines = client(&f.outside, None, "tcp", SocketAddrV4::new(NODE, 30099), 1, 1.0);
    assert_eq!(lines, vec!["err timeout"], "the SYN must be dropped, not refused by the node");
    let dropped =
        f.dp.metrics()
            .unwrap()
            .into_iter()
            .find(|m| m.direction == METRIC_DIR_INGRESS && m.reason == DROP_NO_SERVICE)
            .map(|m| m.packets)
            .unwrap_or(0);
    assert!(dropped >= 1, "DROP_NO_SERVICE not counted");
}
