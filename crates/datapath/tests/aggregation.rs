//! Trace aggregation under BPF_PROG_TEST_RUN: at medium, which packets of
//! a TCP connection earn a trace depends on the configured report flags
//! (Cilium's --monitor-aggregation-flags): with all of them, every newly
//! seen flag of a direction; with SYN, FIN and RST, the opening and the
//! close only. Maximum keeps only SYN, FIN and RST of the configured set.

mod common;

use std::net::Ipv4Addr;

use aya::maps::{MapData, RingBuf};
use common::{allow_any, tcp_frame, test_endpoint, BpfRoot};
use twill_abi::{
    DatapathConfig, RingRecord, AGGREGATION_MAXIMUM, AGGREGATION_MEDIUM, DIR_EGRESS, EVENTS_TRACE,
    EVENT_TRACE, REPORT_FLAGS_ALL,
};
use twill_datapath::{Datapath, IpcacheEntry};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 212, 0, 2);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
// TCP header flag bits.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// The TCP flags of every trace in the ring, in order.
fn traced_flags(ring: &mut RingBuf<MapData>) -> Vec<u8> {
    let mut flags = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(RingRecord::Flow(e)) = RingRecord::from_bytes(&item) {
            if e.kind == EVENT_TRACE {
                flags.push(e.tcp_flags);
            }
        }
    }
    flags
}

/// The client's half of a short connection to `OUTSIDE`, from `sport`,
/// through from_endpoint: the flags of the traces it earned.
fn client_side(
    dp: &mut Datapath,
    ring: &mut RingBuf<MapData>,
    sport: u16,
    aggregation: u32,
    report: u32,
) -> Vec<u8> {
    dp.set_config(DatapathConfig {
        allow_localhost: 1,
        aggregation,
        events: EVENTS_TRACE,
        maglev_table_size: twill_abi::LB_MAGLEV_DEFAULT_SIZE,
        tunnel_ifindex: 0,
        report_flags: report,
        legacy_host_routing: 0,
        fib_devices: [0; twill_abi::FIB_DEVICES_MAX],
    })
    .unwrap();
    for flags in [SYN, ACK, PSH | ACK, ACK, PSH | ACK, FIN | ACK, RST] {
        dp.test_run("from_endpoint", &tcp_frame(CLIENT, OUTSIDE, sport, 80, flags)).unwrap();
    }
    traced_flags(ring)
}

#[test]
fn report_flags_decide_which_packets_of_a_connection_are_traced() {
    let root = BpfRoot::new("aggregation");
    let mut dp = Datapath::load(&root.0).unwrap();
    dp.upsert_endpoint(CLIENT, test_endpoint(4, 0)).unwrap();
    dp.upsert_ipcache(&IpcacheEntry::local(CLIENT, 32, 1004)).unwrap();
    dp.upsert_policy(allow_any(4, DIR_EGRESS), false).unwrap();
    let mut ring = dp.take_events().unwrap();

    // All flags (the default): the opening, the first ACK, the first
    // data, the FIN and the reset; the repeated ACK and data are not.
    let all = client_side(&mut dp, &mut ring, 41000, AGGREGATION_MEDIUM, REPORT_FLAGS_ALL);
    assert_eq!(all, [SYN, ACK, PSH | ACK, FIN | ACK, RST], "medium, all flags");

    // SYN, FIN and RST: what changes the connection's state, nothing else.
    let few = client_side(&mut dp, &mut ring, 41001, AGGREGATION_MEDIUM, (SYN | FIN | RST).into());
    assert_eq!(few, [SYN, FIN | ACK, RST], "medium, syn,fin,rst");

    // Only the first packet when no flag is reported.
    assert_eq!(client_side(&mut dp, &mut ring, 41002, AGGREGATION_MEDIUM, 0), [SYN], "medium, no flags");

    // Maximum keeps SYN, FIN and RST of the set, and no more.
    let max = client_side(&mut dp, &mut ring, 41003, AGGREGATION_MAXIMUM, REPORT_FLAGS_ALL);
    assert_eq!(max, [SYN, FIN | ACK, RST], "maximum, all flags");
    let fin_only = client_side(&mut dp, &mut ring, 41004, AGGREGATION_MAXIMUM, FIN.into());
    assert_eq!(fin_only, [SYN, FIN | ACK], "maximum, fin");
}
