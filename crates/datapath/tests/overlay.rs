//! Cluster mode's datapath: encapsulation towards another node's endpoints
//! and decapsulation from it, first with crafted packets under
//! BPF_PROG_TEST_RUN, then with real traffic between two "nodes" (network
//! namespaces joined by a veth pair), each with its own datapath, tunnel
//! device and endpoint. Also the plumbing around it: the VXLAN device,
//! native routes, and pinned maps from an older layout.

mod common;

use std::{net::Ipv4Addr, path::PathBuf, process::Command};

use common::{in_netns, ip, Netns};
use twill_abi::{
    DatapathConfig, EndpointInfo, FlowEvent, DROP_NO_TUNNEL_KEY, EVENTS_TRACE, EVENT_TRACE,
    IDENTITY_REMOTE_NODE, IPCACHE_F_NODE, METRIC_DIR_EGRESS, METRIC_DIR_INGRESS, TRACE_FROM_ENDPOINT,
    TRACE_TO_OVERLAY, TRACE_TO_STACK,
};
use twill_datapath::{netdev, Datapath, IpcacheEntry, PolicyEntry};

/// What from_endpoint returns for the host stack: TCX_NEXT (-1).
const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
/// BPF_PROG_TEST_RUN runs tc programs on the loopback device.
const LOOPBACK_IFINDEX: u32 = 1;

/// A bpf root of the test's own, removed on drop.
struct Root(PathBuf);

impl Root {
    fn new(tag: &str) -> Self {
        Root(PathBuf::from(format!("/sys/fs/bpf/twill-overlay-{tag}-{}", std::process::id())))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn allow_all(endpoint_id: u16, direction: u8) -> PolicyEntry {
    PolicyEntry { endpoint_id, direction, identity: 0, protocol: 0, port: 0, l4_prefix: 0 }
}

fn count(dp: &Datapath, direction: u32, reason: u32) -> u64 {
    dp.metrics()
        .unwrap()
        .iter()
        .filter(|m| m.direction == direction && m.reason == reason)
        .map(|m| m.packets)
        .sum()
}

/// An Ethernet frame with an IPv4/UDP packet from `src` to `dst`.
fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
    ip.extend(src.octets());
    ip.extend(dst.octets());
    p.extend(ip);
    p.extend([0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
    p
}

#[test]
fn from_endpoint_encapsulates_to_a_remote_node_only_with_a_tunnel_device() {
    let root = Root::new("encap");
    let mut dp = Datapath::load(&root.0).unwrap();
    let local = Ipv4Addr::new(10, 210, 1, 2);
    let remote = Ipv4Addr::new(10, 210, 2, 2);
    let elsewhere = Ipv4Addr::new(10, 99, 0, 1);
    let info = EndpointInfo {
        ifindex: LOOPBACK_IFINDEX,
        endpoint_id: 1,
        identity: 1000,
        flags: 0,
        mac: [2, 0xbb, 0, 0, 0, 1],
        host_mac: [2, 0xaa, 0, 0, 0, 1],
    };
    dp.upsert_endpoint(local, info).unwrap();
    dp.upsert_ipcache(&IpcacheEntry::local(local, 32, 1000)).unwrap();
    let node = Ipv4Addr::new(192, 168, 50, 2);
    let behind_node = IpcacheEntry { tunnel_endpoint: Some(node), ..IpcacheEntry::local(remote, 32, 2000) };
    dp.upsert_ipcache(&behind_node).unwrap();
    dp.upsert_ipcache(&IpcacheEntry::local(elsewhere, 32, 3000)).unwrap();
    dp.upsert_policy(allow_all(1, 1), false).unwrap();
    assert!(dp.ipcache_entries().unwrap().contains(&behind_node), "the tunnel endpoint reads back");

    let config = |tunnel_ifindex| DatapathConfig {
        allow_localhost: 1,
        aggregation: twill_abi::AGGREGATION_NONE,
        events: EVENTS_TRACE,
        maglev_table_size: twill_abi::LB_MAGLEV_DEFAULT_SIZE,
        tunnel_ifindex,
        report_flags: 0,
        legacy_host_routing: 0,
        fib_devices: [0; twill_abi::FIB_DEVICES_MAX],
    };
    let mut events = dp.take_events().unwrap();

    // No tunnel device: native routing, the host stack routes.
    dp.set_config(config(0)).unwrap();
    assert_eq!(dp.test_run("from_endpoint", &udp_frame(local, remote)).unwrap(), TC_ACT_UNSPEC);

    dp.set_config(config(LOOPBACK_IFINDEX)).unwrap();
    let forwarded = count(&dp, METRIC_DIR_EGRESS, 0);
    assert_eq!(dp.test_run("from_endpoint", &udp_frame(local, remote)).unwrap(), TC_ACT_REDIRECT);
    assert_eq!(count(&dp, METRIC_DIR_EGRESS, 0), forwarded + 1, "counted as forwarded");
    // An address behind no node still goes to the stack.
    assert_eq!(dp.test_run("from_endpoint", &udp_frame(local, elsewhere)).unwrap(), TC_ACT_UNSPEC);

    let mut points = Vec::new();
    while let Some(record) = events.next() {
        let event = FlowEvent::from_bytes(&record).unwrap();
        if event.kind == EVENT_TRACE {
            points.push((event.reason, Ipv4Addr::from(u32::from_be(event.daddr))));
        }
    }
    assert_eq!(
        points,
        [
            (TRACE_FROM_ENDPOINT, remote),
            (TRACE_TO_STACK, remote),
            (TRACE_FROM_ENDPOINT, remote),
            (TRACE_TO_OVERLAY, remote),
            (TRACE_FROM_ENDPOINT, elsewhere),
            (TRACE_TO_STACK, elsewhere),
        ]
    );
}

#[test]
fn from_overlay_drops_what_carries_no_tunnel_key() {
    let root = Root::new("nokey");
    let mut dp = Datapath::load(&root.0).unwrap();
    let local = Ipv4Addr::new(10, 210, 1, 2);
    let info = EndpointInfo {
        ifindex: LOOPBACK_IFINDEX,
        endpoint_id: 1,
        identity: 1000,
        flags: 0,
        mac: [2, 0xbb, 0, 0, 0, 1],
        host_mac: [2, 0xaa, 0, 0, 0, 1],
    };
    dp.upsert_endpoint(local, info).unwrap();
    dp.upsert_policy(allow_all(1, 0), false).unwrap();
    let frame = udp_frame(Ipv4Addr::new(10, 210, 2, 2), local);
    assert_eq!(dp.test_run("from_overlay", &frame).unwrap(), TC_ACT_SHOT);
    assert_eq!(dp.test_run("from_overlay", &frame).unwrap(), TC_ACT_SHOT);
    assert_eq!(
        count(&dp, METRIC_DIR_INGRESS, DROP_NO_TUNNEL_KEY),
        2,
        "counted as 'Error retrieving tunnel key'"
    );
    assert_eq!(count(&dp, METRIC_DIR_INGRESS, 0), 0, "nothing delivered");
}

/// `bpf(2)`: creates an array map pinned at `path`, as an older agent
/// with a smaller struct would have left it.
fn pin_array_map(path: &std::path::Path, value_size: u32) {
    use std::os::unix::ffi::OsStrExt;
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let mut attr = [0u32; 32];
    attr[0] = BPF_MAP_TYPE_ARRAY;
    attr[1] = 4;
    attr[2] = value_size;
    attr[3] = 1;
    // SAFETY: the attribute buffer is larger than the kernel reads for
    // these commands and outlives the calls.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_ptr(), 128) };
    assert!(fd >= 0, "BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    let pathname = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut attr = [0u64; 16];
    attr[0] = pathname.as_ptr() as u64;
    attr[1] = fd as u64;
    // SAFETY: as above; the path outlives the call.
    let pinned = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, attr.as_ptr(), 128) };
    assert_eq!(pinned, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: the fd is ours; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

#[test]
fn a_pinned_map_of_an_older_layout_is_replaced() {
    let root = Root::new("upgrade");
    twill_datapath::ensure_bpffs(&root.0).unwrap();
    // datapath_config before tunnel_ifindex: four u32.
    let pin = root.0.join("twill_config");
    pin_array_map(&pin, 16);
    let mut dp = Datapath::load(&root.0).expect("an older pin is replaced, not a failure");
    let info = aya::maps::MapInfo::from_pin(&pin).unwrap();
    assert_eq!(info.value_size() as usize, std::mem::size_of::<DatapathConfig>());
    dp.set_config(DatapathConfig { tunnel_ifindex: 7, ..Default::default() }).unwrap();
    assert_eq!(dp.config().unwrap().tunnel_ifindex, 7);
    drop(dp);
    // A pin that fits is kept, with its contents.
    let dp = Datapath::load(&root.0).unwrap();
    assert_eq!(dp.config().unwrap().tunnel_ifindex, 7);
}

fn command_output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn vxlan_device_native_routes_and_overlay_attach() {
    let name = format!("twov-dev-{}", std::process::id());
    let mut netns = Netns(Vec::new());
    let node = netns.add(&name);
    ip(&["-n", &node, "link", "add", "u0", "mtu", "9000", "type", "veth", "peer", "name", "u1"]);
    ip(&["-n", &node, "addr", "add", "10.200.0.1/24", "dev", "u0"]);
    ip(&["-n", &node, "link", "set", "u0", "up"]);
    ip(&["-n", &node, "link", "set", "u1", "up"]);
    // Something else under the tunnel's name (left by hand, or an older
    // setup) is replaced.
    ip(&["-n", &node, "link", "add", netdev::TUNNEL_DEVICE, "type", "veth", "peer", "name", "u2"]);
    let root = Root::new("dev");
    in_netns(&node, || {
        let index =
            netdev::ensure_vxlan_device(netdev::TUNNEL_DEVICE, netdev::VXLAN_PORT, Some("u0")).unwrap();
        assert_eq!(netdev::ifindex(netdev::TUNNEL_DEVICE), Some(index));
        let again =
            netdev::ensure_vxlan_device(netdev::TUNNEL_DEVICE, netdev::VXLAN_PORT, Some("u0")).unwrap();
        assert_eq!(again, index, "idempotent: the same device");
        // Forked from this thread, so `ip` sees this thread's namespace.
        let details = command_output("ip", &["-d", "link", "show", netdev::TUNNEL_DEVICE]);
        for want in ["NOARP", "mtu 8950", "state UNKNOWN", "external", "dstport 8472", "nolearning"] {
            assert!(details.contains(want), "{want:?} missing from {details}");
        }

        let pods = Ipv4Addr::new(10, 244, 1, 0);
        let via = Ipv4Addr::new(10, 200, 0, 2);
        netdev::replace_route(pods, 24, via).unwrap();
        netdev::replace_route(pods, 24, via).unwrap();
        netdev::replace_route(Ipv4Addr::new(10, 244, 2, 0), 24, via).unwrap();
        assert_eq!(
            netdev::list_routes_by_protocol().unwrap(),
            [(pods, 24, via), (Ipv4Addr::new(10, 244, 2, 0), 24, via)]
        );
        let routes = command_output("ip", &["route", "show", "proto", "116"]);
        assert!(routes.contains("10.244.1.0/24 via 10.200.0.2 dev u0"), "{routes}");
        netdev::delete_route(pods, 24).unwrap();
        netdev::delete_route(pods, 24).unwrap();
        assert_eq!(netdev::list_routes_by_protocol().unwrap(), [(Ipv4Addr::new(10, 244, 2, 0), 24, via)]);
        // The kernel's own connected route is not Twill's to list or delete.
        netdev::delete_route(Ipv4Addr::new(10, 200, 0, 0), 24).unwrap();
        assert!(command_output("ip", &["route"]).contains("10.200.0.0/24 dev u0"));

        let mut dp = Datapath::load(&root.0).unwrap();
        dp.attach_overlay(netdev::TUNNEL_DEVICE).unwrap();
        dp.attach_overlay(netdev::TUNNEL_DEVICE).unwrap();
        let filters = command_output("tc", &["filter", "show", "dev", netdev::TUNNEL_DEVICE, "ingress"]);
        assert!(filters.contains("from_overlay"), "{filters}");
        dp.detach_overlay(netdev::TUNNEL_DEVICE).unwrap();
        let filters = command_output("tc", &["filter", "show", "dev", netdev::TUNNEL_DEVICE, "ingress"]);
        assert!(!filters.contains("from_overlay"), "{filters}");

        netdev::delete_vxlan_device(netdev::TUNNEL_DEVICE).unwrap();
        netdev::delete_vxlan_device(netdev::TUNNEL_DEVICE).unwrap();
        assert_eq!(netdev::ifindex(netdev::TUNNEL_DEVICE), None);
    });
}

/// One node of the two-node test: its namespace, pod CIDR router, endpoint
/// and underlay address.
struct NodeSpec {
    netns: String,
    underlay: Ipv4Addr,
    router: Ipv4Addr,
    endpoint_netns: String,
    endpoint: Ipv4Addr,
    identity: u32,
    /// What the node's own traffic carries, as a node identity would.
    node_identity: u32,
}

/// Removes the endpoints' namespaces, also when an assertion fails (the
/// nodes' go with [`Netns`]).
struct EndpointNetns(Vec<String>);

impl Drop for EndpointNetns {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = netdev::delete_netns(name);
        }
    }
}

/// Brings up a node's datapath the way an agent in cluster mode would: on
/// a thread inside the node's namespace (loading, attaching and plumbing
/// all act on the calling thread's namespace), returning the datapath,
/// whose maps work from any thread.
fn bring_up(node: &NodeSpec, peer: &NodeSpec, root: &std::path::Path, tunnel: bool) -> Datapath {
    in_netns(&node.netns, || {
        netdev::ensure_host_device(node.router).unwrap();
        let mut dp = Datapath::load(root).unwrap();
        let device = "twov-lxc";
        let plumbing = netdev::EndpointPlumbing {
            netns: &node.endpoint_netns,
            host_device: device,
            host_mac: [2, 0xaa, 0, 0, 0, 1],
            endpoint_mac: [2, 0xbb, 0, 0, 0, 1],
            ip: node.endpoint,
            router: node.router,
            mtu: None,
        };
        netdev::create_endpoint(&plumbing).unwrap();
        dp.attach(device).unwrap();
        let info = EndpointInfo {
            ifindex: netdev::ifindex(device).unwrap(),
            endpoint_id: 1,
            identity: node.identity,
            flags: 0,
            mac: plumbing.endpoint_mac,
            host_mac: plumbing.host_mac,
        };
        dp.upsert_endpoint(node.endpoint, info).unwrap();
        for direction in [0, 1] {
            dp.upsert_policy(allow_all(1, direction), false).unwrap();
        }
        dp.upsert_ipcache(&IpcacheEntry::local(node.endpoint, 32, node.identity)).unwrap();
        let peer_node = IpcacheEntry {
            flags: IPCACHE_F_NODE,
            ..IpcacheEntry::local(peer.underlay, 32, peer.node_identity)
        };
        dp.upsert_ipcache(&peer_node).unwrap();
        let tunnel_endpoint = tunnel.then_some(peer.underlay);
        let remote =
            IpcacheEntry { tunnel_endpoint, ..IpcacheEntry::local(peer.endpoint, 32, peer.identity) };
        dp.upsert_ipcache(&remote).unwrap();
        let tunnel_ifindex = if tunnel {
            let index =
                netdev::ensure_vxlan_device(netdev::TUNNEL_DEVICE, netdev::VXLAN_PORT, Some("u0")).unwrap();
            dp.attach_overlay(netdev::TUNNEL_DEVICE).unwrap();
            // The peer node itself, reached through the tunnel too.
            let peer_router = IpcacheEntry {
                tunnel_endpoint: Some(peer.underlay),
                flags: IPCACHE_F_NODE,
                ..IpcacheEntry::local(peer.router, 32, peer.node_identity)
            };
            dp.upsert_ipcache(&peer_router).unwrap();
            let pods = Ipv4Addr::from(u32::from(peer.endpoint) & 0xffff_ff00);
            netdev::replace_tunnel_route(
                pods,
                24,
                peer.underlay,
                node.router,
                node.node_identity,
                netdev::TUNNEL_DEVICE,
            )
            .unwrap();
            assert_eq!(
                netdev::list_tunnel_routes().unwrap(),
                [(pods, 24, peer.underlay, node.node_identity)]
            );
            assert_eq!(netdev::list_routes_by_protocol().unwrap(), []);
            index
        } else {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
            let pods = Ipv4Addr::from(u32::from(peer.endpoint) & 0xffff_ff00);
            netdev::replace_route(pods, 24, peer.underlay).unwrap();
            0
        };
        dp.set_config(DatapathConfig {
            allow_localhost: 1,
            aggregation: twill_abi::AGGREGATION_NONE,
            events: 0,
            maglev_table_size: twill_abi::LB_MAGLEV_DEFAULT_SIZE,
            tunnel_ifindex,
            report_flags: 0,
            legacy_host_routing: 0,
            fib_devices: [0; twill_abi::FIB_DEVICES_MAX],
        })
        .unwrap();
        dp
    })
}

fn ping(netns: &str, dst: Ipv4Addr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", netns, "ping", "-c", "1", "-W", "2", &dst.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Two nodes joined by a veth pair (10.200.0.1 and .2), an endpoint on
/// each: `tunnel` picks VXLAN or native routing between them.
fn two_nodes(tag: &str, tunnel: bool) -> (Netns, EndpointNetns, Root, Root, [NodeSpec; 2], [Datapath; 2]) {
    let name = format!("twov-{tag}-{}", std::process::id());
    let mut netns = Netns(Vec::new());
    let a = netns.add(&format!("{name}-a"));
    let b = netns.add(&format!("{name}-b"));
    ip(&["-n", &a, "link", "add", "u0", "type", "veth", "peer", "name", "u0", "netns", &b]);
    for (ns, addr) in [(&a, "10.200.0.1/24"), (&b, "10.200.0.2/24")] {
        ip(&["-n", ns, "addr", "add", addr, "dev", "u0"]);
        ip(&["-n", ns, "link", "set", "u0", "up"]);
    }
    let nodes = [
        NodeSpec {
            netns: a,
            underlay: Ipv4Addr::new(10, 200, 0, 1),
            router: Ipv4Addr::new(10, 210, 1, 1),
            endpoint_netns: format!("{name}-a-ep"),
            endpoint: Ipv4Addr::new(10, 210, 1, 2),
            identity: 1000,
            node_identity: 3000,
        },
        NodeSpec {
            netns: b,
            underlay: Ipv4Addr::new(10, 200, 0, 2),
            router: Ipv4Addr::new(10, 210, 2, 1),
            endpoint_netns: format!("{name}-b-ep"),
            endpoint: Ipv4Addr::new(10, 210, 2, 2),
            identity: 2000,
            node_identity: 4000,
        },
    ];
    let endpoints = EndpointNetns(nodes.iter().map(|n| n.endpoint_netns.clone()).collect());
    let roots = (Root::new(&format!("{tag}-a")), Root::new(&format!("{tag}-b")));
    let dps = [
        bring_up(&nodes[0], &nodes[1], &roots.0 .0, tunnel),
        bring_up(&nodes[1], &nodes[0], &roots.1 .0, tunnel),
    ];
    (netns, endpoints, roots.0, roots.1, nodes, dps)
}

#[test]
fn endpoints_on_two_nodes_reach_each_other_through_the_tunnel() {
    let (_netns, _endpoints, _ra, _rb, nodes, mut dps) = two_nodes("vxlan", true);
    assert!(ping(&nodes[0].endpoint_netns, nodes[1].endpoint), "a -> b through the tunnel");
    // Both ways went through the overlay program: delivered from it on each
    // node (ingress) and encapsulated (egress).
    for dp in &dps {
        assert!(count(dp, METRIC_DIR_INGRESS, 0) >= 1);
        assert!(count(dp, METRIC_DIR_EGRESS, 0) >= 1);
    }

    // The nodes themselves: a's host to b's endpoint (by the tunnel route,
    // as remote-node), a's endpoint to b's host (by the ipcache's tunnel
    // endpoint for b's router address).
    assert!(ping(&nodes[0].netns, nodes[1].endpoint), "node a -> b's endpoint");
    assert!(ping(&nodes[0].endpoint_netns, nodes[1].router), "a's endpoint -> node b");

    // The receiver's ingress policy sees the sender's identity from the
    // VNI: allowing only identity 1000 keeps a -> b working.
    dps[1].remove_policy(allow_all(1, 0)).unwrap();
    let from_a = PolicyEntry { identity: nodes[0].identity, ..allow_all(1, 0) };
    dps[1].upsert_policy(from_a, false).unwrap();
    assert!(ping(&nodes[0].endpoint_netns, nodes[1].endpoint), "identity 1000 is allowed into b");
    dps[1].remove_policy(from_a).unwrap();
    dps[1].upsert_policy(PolicyEntry { identity: 1001, ..allow_all(1, 0) }, false).unwrap();
    let denied = count(&dps[1], METRIC_DIR_INGRESS, twill_abi::DROP_POLICY);
    assert!(!ping(&nodes[0].endpoint_netns, nodes[1].endpoint), "only identity 1001 is allowed into b");
    assert!(
        count(&dps[1], METRIC_DIR_INGRESS, twill_abi::DROP_POLICY) > denied,
        "counted as 'Policy denied'"
    );

    // Replies come back through conntrack, without a's ingress policy: with
    // nothing allowed into a, a -> b still works and b -> a does not.
    dps[1].upsert_policy(allow_all(1, 0), false).unwrap();
    dps[0].remove_policy(allow_all(1, 0)).unwrap();
    assert!(ping(&nodes[0].endpoint_netns, nodes[1].endpoint), "the reply to a is conntrack's, not policy's");
    assert!(!ping(&nodes[1].endpoint_netns, nodes[0].endpoint), "nothing is allowed into a");
    dps[0].upsert_policy(allow_all(1, 0), false).unwrap();
    assert!(ping(&nodes[1].endpoint_netns, nodes[0].endpoint), "b -> a once allowed");

    // The node's own traffic carries its node identity in the VNI (the
    // tunnel route's): allowing only that identity lets node a in.
    dps[1].remove_policy(allow_all(1, 0)).unwrap();
    let from_node_a = PolicyEntry { identity: nodes[0].node_identity, ..allow_all(1, 0) };
    dps[1].upsert_policy(from_node_a, false).unwrap();
    assert!(ping(&nodes[0].netns, nodes[1].endpoint), "node a's identity is allowed into b");
    assert!(!ping(&nodes[0].endpoint_netns, nodes[1].endpoint), "a's endpoint is not node a");
    dps[1].remove_policy(from_node_a).unwrap();
    dps[1].upsert_policy(allow_all(1, 0), false).unwrap();

    // What makes a sender known is the node flag, not identity remote-node.
    dps[1].upsert_ipcache(&IpcacheEntry::local(nodes[0].underlay, 32, IDENTITY_REMOTE_NODE)).unwrap();
    let unknown = count(&dps[1], METRIC_DIR_INGRESS, twill_abi::DROP_UNKNOWN_SENDER);
    assert!(!ping(&nodes[0].endpoint_netns, nodes[1].endpoint), "remote-node without the flag is no node");
    assert!(count(&dps[1], METRIC_DIR_INGRESS, twill_abi::DROP_UNKNOWN_SENDER) > unknown);

    // A sender that is not a known node is dropped, whatever its VNI says.
    dps[1].remove_ipcache(nodes[0].underlay, 32).unwrap();
    let unknown = count(&dps[1], METRIC_DIR_INGRESS, twill_abi::DROP_UNKNOWN_SENDER);
    assert!(!ping(&nodes[0].endpoint_netns, nodes[1].endpoint), "a is no longer a known node on b");
    assert!(count(&dps[1], METRIC_DIR_INGRESS, twill_abi::DROP_UNKNOWN_SENDER) > unknown);
}

#[test]
fn endpoints_on_two_nodes_reach_each_other_by_native_routing() {
    let (_netns, _endpoints, _ra, _rb, nodes, dps) = two_nodes("native", false);
    for dp in &dps {
        assert_eq!(count(dp, METRIC_DIR_INGRESS, 0), 0);
    }
    assert!(ping(&nodes[0].endpoint_netns, nodes[1].endpoint), "a -> b through the nodes' routes");
    assert!(ping(&nodes[1].endpoint_netns, nodes[0].endpoint), "b -> a");
}
