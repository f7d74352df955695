//! Conntrack garbage collection against the kernel: a sweep removes the
//! entries whose lifetime has passed, keeps the live ones, and traffic
//! whose entries were collected is tracked afresh.

use std::{net::Ipv4Addr, path::PathBuf};

use aya::maps::{HashMap, Map, MapData};
use twill_abi::{CtEntry, CtKey, DatapathConfig, EndpointInfo};
use twill_datapath::{ctgc::ConntrackSweeper, monotonic_ns, Datapath, IpcacheEntry, PolicyEntry};

const TC_ACT_REDIRECT: u32 = 7;
const LOOPBACK_IFINDEX: u32 = 1;
const SECOND: u64 = 1_000_000_000;

struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    p.extend([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(sport.to_be_bytes());
    p.extend([0x00, 0x35, 0, 8, 0, 0]);
    p
}

fn endpoint(id: u32) -> EndpointInfo {
    EndpointInfo {
        ifindex: LOOPBACK_IFINDEX,
        endpoint_id: id,
        identity: 1000 + id,
        flags: 0,
        mac: [2, 0xbb, 0, 0, 0, id as u8],
        host_mac: [2, 0xaa, 0, 0, 0, id as u8],
    }
}

fn ct_map(root: &PathBuf) -> HashMap<MapData, CtKey, CtEntry> {
    let data = MapData::from_pin(root.join("twill_ct")).unwrap();
    HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap()
}

#[test]
fn a_sweep_removes_lapsed_entries_and_keeps_live_ones() {
    let root = Root(PathBuf::from(format!("/sys/fs/bpf/twill-ctgc-{}", std::process::id())));
    let mut dp = Datapath::load(&root.0).unwrap();
    dp.set_config(DatapathConfig {
        allow_localhost: 1,
        maglev_table_size: twill_abi::LB_MAGLEV_DEFAULT_SIZE,
        ..Default::default()
    })
    .unwrap();
    let (a, b) = (Ipv4Addr::new(10, 212, 0, 2), Ipv4Addr::new(10, 212, 0, 3));
    for (ip, id) in [(a, 1), (b, 2)] {
        dp.upsert_ipcache(&IpcacheEntry::local(ip, 32, 1000 + id)).unwrap();
        dp.upsert_endpoint(ip, endpoint(id)).unwrap();
        for direction in [0, 1] {
            let all = PolicyEntry {
                endpoint_id: id as u16,
                direction,
                identity: 0,
                protocol: 0,
                port: 0,
                l4_prefix: 0,
            };
            dp.upsert_policy(all, false).unwrap();
        }
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
            scope: 1,
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
