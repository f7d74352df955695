//! Datapath debug messages under BPF_PROG_TEST_RUN: none unless the
//! configuration asks for them; with it, the steps Cilium reports (the
//! conntrack lookup and its verdict, the entry created, the policy denial,
//! the local endpoint found and the delivery to it, the way to the stack)
//! with the arguments Cilium's monitor renders; at a node device, the
//! NodePort frontend and the backend it chose.

mod common;

use std::net::Ipv4Addr;

use aya::maps::{MapData, RingBuf};
use common::udp_frame_ports;
use twill_abi::{
    DatapathConfig, DebugEvent, EndpointInfo, RingRecord, CT_ESTABLISHED, CT_NEW, DBG_CT_CREATED4,
    DBG_CT_LOOKUP4_1, DBG_CT_LOOKUP4_2, DBG_CT_MATCH, DBG_CT_VERDICT, DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS,
    DBG_LB4_LOOKUP_FRONTEND, DBG_LOCAL_DELIVERY, DBG_LXC_FOUND, DBG_POLICY_DENIED, DBG_TO_STACK,
    ENDPOINT_F_DEBUG, EVENTS_DEBUG, EVENTS_DROP, EVENT_DROP, TUPLE_F_IN, TUPLE_F_OUT,
};
use twill_datapath::{Datapath, IpcacheEntry, PolicyEntry};

const LOOPBACK_IFINDEX: u32 = 1;

struct Root(std::path::PathBuf);

impl Root {
    fn new(tag: &str) -> Self {
        Root(format!("/sys/fs/bpf/twill-debug-{tag}-{}", std::process::id()).into())
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(events: u32) -> DatapathConfig {
    DatapathConfig {
        allow_localhost: 1,
        aggregation: twill_abi::AGGREGATION_MEDIUM,
        events,
        maglev_table_size: twill_abi::LB_MAGLEV_DEFAULT_SIZE,
        tunnel_ifindex: 0,
        report_flags: twill_abi::REPORT_FLAGS_ALL,
        legacy_host_routing: 0,
        fib_devices: [0; twill_abi::FIB_DEVICES_MAX],
    }
}

/// Every record in the ring: debug messages, and how many drops.
fn drain(ring: &mut RingBuf<MapData>) -> (Vec<DebugEvent>, usize) {
    let (mut debug, mut drops) = (Vec::new(), 0);
    while let Some(item) = ring.next() {
        match RingRecord::from_bytes(&item).expect("a whole record") {
            RingRecord::Debug(d) => debug.push(d),
            RingRecord::Flow(f) if f.kind == EVENT_DROP => drops += 1,
            RingRecord::Flow(_) => {}
        }
    }
    (debug, drops)
}

fn subtypes(events: &[DebugEvent]) -> Vec<u8> {
    events.iter().map(|e| e.subtype).collect()
}

fn allow(endpoint_id: u16, direction: u8) -> PolicyEntry {
    PolicyEntry { endpoint_id, direction, identity: 0, protocol: 0, port: 0, l4_prefix: 0 }
}

#[test]
fn debug_messages_appear_only_when_enabled_with_cilium_s_arguments() {
    let root = Root::new("steps");
    let mut dp = Datapath::load(&root.0).unwrap();
    let client = Ipv4Addr::new(10, 211, 0, 2);
    let outside = Ipv4Addr::new(10, 99, 0, 1);
    let ep = |endpoint_id, identity| EndpointInfo {
        ifindex: LOOPBACK_IFINDEX,
        endpoint_id,
        identity,
        flags: 0,
        mac: [2, 0xbb, 0, 0, 0, endpoint_id as u8],
        host_mac: [2, 0xaa, 0, 0, 0, endpoint_id as u8],
    };
    dp.upsert_endpoint(client, ep(4, 1004)).unwrap();
    dp.upsert_ipcache(&IpcacheEntry::local(client, 32, 1004)).unwrap();
    dp.upsert_policy(allow(4, twill_abi::DIR_EGRESS), false).unwrap();
    let mut ring = dp.take_events().unwrap();
    let frame = udp_frame_ports(client, outside, 40000, 53);

    // Off (every other event kind on): no debug message at all.
    dp.set_config(config(EVENTS_DROP | twill_abi::EVENTS_TRACE | twill_abi::EVENTS_POLICY)).unwrap();
    dp.test_run("from_endpoint", &frame).unwrap();
    let (debug, _) = drain(&mut ring);
    assert!(debug.is_empty(), "debug off, yet {debug:?}");

    // On: a new connection to the stack, step by step.
    dp.set_config(config(EVENTS_DEBUG)).unwrap();
    let other = udp_frame_ports(client, outside, 40001, 53);
    dp.test_run("from_endpoint", &other).unwrap();
    let (debug, _) = drain(&mut ring);
    assert_eq!(
        subtypes(&debug),
        [DBG_CT_LOOKUP4_1, DBG_CT_LOOKUP4_2, DBG_CT_VERDICT, DBG_CT_CREATED4, DBG_TO_STACK],
        "{debug:?}"
    );
    assert!(debug.iter().all(|e| e.source == 4 && e.kind == twill_abi::EVENT_DEBUG), "{debug:?}");
    let lookup = debug[0];
    assert_eq!(lookup.arg1, u32::from_ne_bytes(client.octets()), "address as it travels");
    assert_eq!(lookup.arg2, u32::from_ne_bytes(outside.octets()));
    assert_eq!(lookup.arg3, (53 << 16) | 40001, "source port in the low half");
    assert_eq!(debug[1].arg1, (17 << 8) | TUPLE_F_OUT);
    assert_eq!(debug[2].arg1, u32::from(CT_NEW));
    assert_eq!(debug[3].arg2, 1004, "the source identity");

    // The same connection again: the entry is found, with its lifetime.
    dp.test_run("from_endpoint", &other).unwrap();
    let (debug, _) = drain(&mut ring);
    assert_eq!(
        subtypes(&debug),
        [DBG_CT_LOOKUP4_1, DBG_CT_LOOKUP4_2, DBG_CT_MATCH, DBG_CT_VERDICT, DBG_TO_STACK]
    );
    assert!((55..=60).contains(&debug[2].arg1), "UDP lives 60 s: {}", debug[2].arg1);
    assert_eq!(debug[3].arg1, u32::from(CT_ESTABLISHED));

    // Denied by policy: the identities, then the drop as before.
    dp.remove_policy(allow(4, twill_abi::DIR_EGRESS)).unwrap();
    dp.set_config(config(EVENTS_DEBUG | EVENTS_DROP)).unwrap();
    dp.test_run("from_endpoint", &udp_frame_ports(client, outside, 40002, 53)).unwrap();
    let (debug, drops) = drain(&mut ring);
    assert_eq!(subtypes(&debug), [DBG_CT_LOOKUP4_1, DBG_CT_LOOKUP4_2, DBG_CT_VERDICT, DBG_POLICY_DENIED]);
    assert_eq!((debug[3].arg1, debug[3].arg2), (1004, twill_abi::IDENTITY_WORLD));
    assert_eq!(drops, 1);
}

#[test]
fn local_delivery_names_the_receiver() {
    let root = Root::new("local");
    let mut dp = Datapath::load(&root.0).unwrap();
    let (a, b) = (Ipv4Addr::new(10, 211, 1, 2), Ipv4Addr::new(10, 211, 1, 3));
    let ep = |endpoint_id: u32, identity, ifindex| EndpointInfo {
        ifindex,
        endpoint_id,
        identity,
        flags: 0,
        mac: [2, 0xbb, 0, 0, 0, endpoint_id as u8],
        host_mac: [2, 0xaa, 0, 0, 0, endpoint_id as u8],
    };
    dp.upsert_endpoint(a, ep(5, 1005, LOOPBACK_IFINDEX)).unwrap();
    dp.upsert_endpoint(b, ep(6, 1006, 77)).unwrap();
    dp.upsert_ipcache(&IpcacheEntry::local(a, 32, 1005)).unwrap();
    dp.upsert_ipcache(&IpcacheEntry::local(b, 32, 1006)).unwrap();
    dp.upsert_policy(allow(5, twill_abi::DIR_EGRESS), false).unwrap();
    dp.upsert_policy(allow(6, twill_abi::DIR_INGRESS), false).unwrap();
    let mut ring = dp.take_events().unwrap();
    dp.set_config(config(EVENTS_DEBUG)).unwrap();
    dp.test_run("from_endpoint", &udp_frame_ports(a, b, 40000, 80)).unwrap();
    let (debug, _) = drain(&mut ring);
    let steps: Vec<(u8, u16)> = debug.iter().map(|e| (e.subtype, e.source)).collect();
    assert_eq!(
        steps,
        [
            (DBG_CT_LOOKUP4_1, 5),
            (DBG_CT_LOOKUP4_2, 5),
            (DBG_CT_VERDICT, 5),
            (DBG_LXC_FOUND, 5),
            // The receiver's ingress runs in the sender's program, for
            // the receiver.
            (DBG_CT_LOOKUP4_1, 6),
            (DBG_CT_LOOKUP4_2, 6),
            (DBG_CT_VERDICT, 6),
            // Both admitted it: one entry for both, once.
            (DBG_CT_CREATED4, 5),
            (DBG_LOCAL_DELIVERY, 5),
        ]
    );
    let found = debug[3];
    assert_eq!((found.arg1, u16::from_be(found.arg2 as u16)), (77, 1006), "device and identity");
    assert_eq!(debug[5].arg1 & 0xff, TUPLE_F_IN);
    assert_eq!((debug[8].arg1, debug[8].arg2), (6, 1005), "receiver's id, sender's identity");

    // The next packet finds that entry: one lookup, no policy.
    dp.test_run("from_endpoint", &udp_frame_ports(a, b, 40000, 80)).unwrap();
    let (debug, _) = drain(&mut ring);
    assert_eq!(
        subtypes(&debug),
        [DBG_CT_LOOKUP4_1, DBG_CT_LOOKUP4_2, DBG_CT_MATCH, DBG_CT_VERDICT, DBG_LXC_FOUND, DBG_LOCAL_DELIVERY]
    );
    assert_eq!(debug[3].arg1, u32::from(CT_ESTABLISHED));
}

/// A TCP SYN, as a client outside sends it to a NodePort.
fn syn_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    p.extend([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    p
}

#[test]
fn a_nodeport_connection_names_its_frontend_and_backend() {
    let root = Root::new("lb");
    let mut dp = Datapath::load(&root.0).unwrap();
    let (node, backend, client) =
        (Ipv4Addr::new(10, 213, 0, 1), Ipv4Addr::new(10, 214, 0, 2), Ipv4Addr::new(10, 213, 0, 9));
    dp.upsert_ipcache(&IpcacheEntry::local(node, 32, twill_abi::IDENTITY_HOST)).unwrap();
    let maps = dp.lb_maps();
    maps.upsert_backend(1, common::backend(backend, 8080, common::TCP)).unwrap();
    let frontend = common::frontend(Ipv4Addr::UNSPECIFIED, 30080, common::TCP, 0);
    common::write_service(maps, frontend, 1, &[1], 0, twill_abi::LB_F_NODEPORT);
    let mut ring = dp.take_events().unwrap();

    dp.set_config(config(EVENTS_DROP)).unwrap();
    dp.test_run("from_netdev", &syn_frame(client, node, 40000, 30080)).unwrap();
    assert!(drain(&mut ring).0.is_empty(), "debug off");

    dp.set_config(config(EVENTS_DEBUG)).unwrap();
    dp.test_run("from_netdev", &syn_frame(client, node, 40001, 30080)).unwrap();
    // Traffic to no NodePort reads no configuration and says nothing.
    dp.test_run("from_netdev", &syn_frame(client, node, 40002, 22)).unwrap();
    let (debug, _) = drain(&mut ring);
    assert_eq!(subtypes(&debug), [DBG_LB4_LOOKUP_FRONTEND, DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS], "{debug:?}");
    assert_eq!(
        (debug[0].arg1, debug[0].arg2),
        (u32::from_ne_bytes(node.octets()), u32::from(30080u16.to_be()))
    );
    assert_eq!(
        (debug[1].arg1, debug[1].arg2),
        (u32::from_ne_bytes(backend.octets()), u32::from(8080u16.to_be()))
    );
    assert!(debug.iter().all(|e| e.source == 0), "no endpoint at a node device");
}

#[test]
fn an_endpoint_flag_turns_on_that_endpoint_s_steps_only() {
    let root = Root::new("epflag");
    let mut dp = Datapath::load(&root.0).unwrap();
    let (a, b) = (Ipv4Addr::new(10, 211, 2, 2), Ipv4Addr::new(10, 211, 2, 3));
    let ep = |endpoint_id: u32, identity, ifindex, flags| EndpointInfo {
        ifindex,
        endpoint_id,
        identity,
        flags,
        mac: [2, 0xbb, 0, 0, 0, endpoint_id as u8],
        host_mac: [2, 0xaa, 0, 0, 0, endpoint_id as u8],
    };
    dp.upsert_endpoint(a, ep(7, 1007, LOOPBACK_IFINDEX, ENDPOINT_F_DEBUG)).unwrap();
    dp.upsert_endpoint(b, ep(8, 1008, 78, 0)).unwrap();
    dp.upsert_ipcache(&IpcacheEntry::local(a, 32, 1007)).unwrap();
    dp.upsert_ipcache(&IpcacheEntry::local(b, 32, 1008)).unwrap();
    dp.upsert_policy(allow(7, twill_abi::DIR_EGRESS), false).unwrap();
    dp.upsert_policy(allow(8, twill_abi::DIR_INGRESS), false).unwrap();
    let mut ring = dp.take_events().unwrap();
    // Off for the node: only the flagged sender's steps are reported, not
    // the receiver's ingress that runs in the same program.
    dp.set_config(config(EVENTS_DROP)).unwrap();
    dp.test_run("from_endpoint", &udp_frame_ports(a, b, 40000, 80)).unwrap();
    let (debug, _) = drain(&mut ring);
    let steps: Vec<(u8, u16)> = debug.iter().map(|e| (e.subtype, e.source)).collect();
    assert_eq!(
        steps,
        [
            (DBG_CT_LOOKUP4_1, 7),
            (DBG_CT_LOOKUP4_2, 7),
            (DBG_CT_VERDICT, 7),
            (DBG_LXC_FOUND, 7),
            (DBG_CT_CREATED4, 7),
            (DBG_LOCAL_DELIVERY, 7),
        ]
    );
    // Without the flag, nothing.
    dp.upsert_endpoint(a, ep(7, 1007, LOOPBACK_IFINDEX, 0)).unwrap();
    dp.test_run("from_endpoint", &udp_frame_ports(a, b, 40001, 80)).unwrap();
    assert!(drain(&mut ring).0.is_empty());
}
