//! Conntrack garbage collection against the kernel: a sweep removes the
//! entries whose lifetime has passed, keeps the live ones, and traffic
//! whose entries were collected is tracked afresh.

mod common;

use std::{net::Ipv4Addr, path::PathBuf};

use aya::maps::{HashMap, Map, MapData};
use common::{allow_all_datapath, test_endpoint, udp_frame_from as udp_frame, BpfRoot, TC_ACT_REDIRECT};
use twill_abi::{CtEntry, CtKey};
use twill_datapath::{ctgc::ConntrackSweeper, monotonic_ns};

const SECOND: u64 = 1_000_000_000;

fn ct_map(root: &PathBuf) -> HashMap<MapData, CtKey, CtEntry> {
    let data = MapData::from_pin(root.join("twill_ct")).unwrap();
    HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap()
}

#[test]
fn a_sweep_removes_lapsed_entries_and_keeps_live_ones() {
    let root = BpfRoot::new("ctgc");
    let (a, b) = (Ipv4Addr::new(10, 212, 0, 2), Ipv4Addr::new(10, 212, 0, 3));
    let mut dp = allow_all_datapath(&root, &[(a, 1), (b, 2)]);
    for (ip, id) in [(a, 1), (b, 2)] {
        dp.upsert_endpoint(ip, test_endpoint(id, 0)).unwrap();
    }
    // A live connection, tracked by the program itself.
    assert_eq!(dp.test_run("from_endpoint", &udp_frame(a, b, 40000)).unwrap(), TC_ACT_REDIRECT);
    let live = dp.ct_entries().unwrap().len();
    assert!(live >= 1, "the program tracked the connection");

    // 100 entries that lapsed a second ago.
    let mut ct = ct_map(&root.0);
    let now = monotonic_ns();
    for port in 0..100u16 {
        let key = CtKey {
            saddr: u32::from(a).to_be(),
            daddr: u32::from(b).to_be(),
            sport: (20000 + port).to_be(),
            dport: 53u16.to_be(),
            protocol: 17,
            scope: twill_abi::CT_SIDE_A,
            pad: 0,
        };
        let entry = CtEntry {
            expires: now - SECOND,
            packets: 1,
            bytes: 28,
            tcp_flags: 0,
            flags: 0,
            reported_flags: [0; 2],
            last_report: [0; 2],
            proxy_port: 0,
            origin: twill_abi::CT_ORIGIN_A,
            pad: 0,
        };
        ct.insert(key, entry, 0).unwrap();
    }
    assert_eq!(dp.ct_entries().unwrap().len(), live + 100);

    let mut sweeper = ConntrackSweeper::open(&root.0).unwrap();
    let stats = sweeper.sweep(monotonic_ns()).unwrap();
    assert_eq!(stats.ct_deleted, 100);
    assert_eq!(stats.ct_alive, live as u64);
    assert_eq!(dp.ct_entries().unwrap().len(), live, "only the live connection is left");

    // Nothing lapsed: a second sweep deletes nothing.
    assert_eq!(sweeper.sweep(monotonic_ns()).unwrap().ct_deleted, 0);

    // Once the UDP lifetime (60 s) has passed, the live one goes too, and
    // its next packet is a new connection that policy allows again.
    let later = sweeper.sweep(monotonic_ns() + 61 * SECOND).unwrap();
    assert_eq!(later.ct_deleted, live as u64);
    assert!(dp.ct_entries().unwrap().is_empty());
    assert_eq!(dp.test_run("from_endpoint", &udp_frame(a, b, 40000)).unwrap(), TC_ACT_REDIRECT);
    assert_eq!(dp.ct_entries().unwrap().len(), live, "tracked afresh");
}
