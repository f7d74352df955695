//! Conntrack against the kernel: a connection between two local endpoints
//! that both admitted it has one entry for both ends (CT_PAIR), which
//! packets in both directions find, so a reply passes an ingress that
//! allows nothing while a new connection the other way does not; one the
//! receiver refused leaves the sender's entry alone.

mod common;

use std::net::Ipv4Addr;

use common::{allow_all_datapath, allow_any, test_endpoint, udp_frame_ports, BpfRoot, TC_ACT_REDIRECT};
use twill_abi::{CT_ORIGIN_A, CT_ORIGIN_B, CT_PAIR, CT_SIDE_B, DIR_EGRESS};
use twill_datapath::IpcacheEntry;

const TC_ACT_SHOT: u32 = 2;

/// A datagram from `src:sport` to `dst:dport`.
fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    udp_frame_ports(src, dst, sport, dport)
}

#[test]
fn one_entry_serves_both_ends_and_both_directions() {
    let root = BpfRoot::new("conntrack");
    // b (the higher address and port end) allows everything; a may only
    // send: nothing is allowed into it.
    let (a, b) = (Ipv4Addr::new(10, 213, 0, 2), Ipv4Addr::new(10, 213, 0, 3));
    let mut dp = allow_all_datapath(&root, &[(b, 2)]);
    dp.upsert_ipcache(&IpcacheEntry::local(a, 32, 1001)).unwrap();
    dp.upsert_policy(allow_any(1, DIR_EGRESS), false).unwrap();
    for (ip, id) in [(a, 1), (b, 2)] {
        dp.upsert_endpoint(ip, test_endpoint(id, 0)).unwrap();
    }

    // A new connection from b is refused by a's ingress: the control.
    assert_eq!(dp.test_run("from_endpoint", &udp(b, 7000, a, 7001)).unwrap(), TC_ACT_SHOT);

    // a opens; b answers twice, through a's ingress, as replies.
    assert_eq!(dp.test_run("from_endpoint", &udp(a, 40000, b, 53)).unwrap(), TC_ACT_REDIRECT);
    for _ in 0..2 {
        assert_eq!(dp.test_run("from_endpoint", &udp(b, 53, a, 40000)).unwrap(), TC_ACT_REDIRECT);
    }
    // And the opener's own next packet.
    assert_eq!(dp.test_run("from_endpoint", &udp(a, 40000, b, 53)).unwrap(), TC_ACT_REDIRECT);

    let be = |ip: Ipv4Addr| u32::from(ip).to_be();
    let entries: Vec<_> = dp
        .ct_entries()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.protocol == 17 && (k.sport, k.dport) == (40000, 53))
        .collect();
    assert_eq!(entries.len(), 1, "one entry for a and b: {entries:?}");
    let (key, entry) = entries[0];
    // a:40000 is the lower end, so it is the key's first, whichever way a
    // packet went; the opening packet went from it.
    assert_eq!((key.saddr, key.daddr, key.scope), (be(a), be(b), CT_PAIR));
    assert_eq!(entry.origin, CT_ORIGIN_A);
    assert_eq!(entry.packets, 4, "both directions counted on one entry: {entry:?}");

    // A connection b opens: a's address is the lower, so a is end A
    // again and the opening packet goes from end B. a's ingress refuses
    // it, so only b's entry exists, recording that origin.
    assert_eq!(dp.test_run("from_endpoint", &udp(b, 53, a, 40001)).unwrap(), TC_ACT_SHOT);
    let opened_by_b: Vec<_> =
        dp.ct_entries().unwrap().into_iter().filter(|(k, _)| (k.sport, k.dport) == (40001, 53)).collect();
    assert_eq!(opened_by_b.len(), 1, "only b's entry: a refused it: {opened_by_b:?}");
    assert_eq!((opened_by_b[0].0.scope, opened_by_b[0].1.origin), (CT_SIDE_B, CT_ORIGIN_B));
}
