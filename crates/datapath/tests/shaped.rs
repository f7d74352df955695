//! A shaped endpoint (ENDPOINT_F_SHAPED: a chained plugin's shaper on its
//! host device) gets no eBPF host routing: from_endpoint hands traffic
//! between it and another local endpoint to the host stack ("next"), so
//! the shapers see it, where unshaped endpoints are delivered straight
//! into the peer's namespace. Crafted packets under BPF_PROG_TEST_RUN.

mod common;

use std::net::Ipv4Addr;

use common::{allow_all_datapath, test_endpoint as endpoint, udp_frame_from, BpfRoot, TC_ACT_REDIRECT};
use twill_abi::ENDPOINT_F_SHAPED;
use twill_datapath::{Datapath, PolicyEntry};

/// TCX_NEXT / TC_ACT_UNSPEC: on to the host stack, past later hooks.
const TC_ACT_UNSPEC: u32 = u32::MAX;

fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    udp_frame_from(src, dst, 12345)
}

#[test]
fn traffic_to_or_from_a_shaped_endpoint_goes_to_the_stack_not_the_peer() {
    let root = BpfRoot::new("shaped");
    let (a, b) = (Ipv4Addr::new(10, 211, 0, 2), Ipv4Addr::new(10, 211, 0, 3));
    let mut dp = allow_all_datapath(&root, &[(a, 1), (b, 2)]);
    let verdict = |dp: &mut Datapath, a_flags, b_flags| {
        dp.upsert_endpoint(a, endpoint(1, a_flags)).unwrap();
        dp.upsert_endpoint(b, endpoint(2, b_flags)).unwrap();
        dp.test_run("from_endpoint", &udp_frame(a, b)).unwrap()
    };
    assert_eq!(verdict(&mut dp, 0, 0), TC_ACT_REDIRECT, "unshaped: straight into the peer");
    assert_eq!(verdict(&mut dp, ENDPOINT_F_SHAPED, 0), TC_ACT_UNSPEC, "shaped sender: its egress shaper");
    assert_eq!(verdict(&mut dp, 0, ENDPOINT_F_SHAPED), TC_ACT_UNSPEC, "shaped receiver: its ingress shaper");
    // Policy still comes first: without the sender's egress allow entry,
    // the shaped path drops like the direct one.
    let all = PolicyEntry { endpoint_id: 1, direction: 1, identity: 0, protocol: 0, port: 0, l4_prefix: 0 };
    dp.remove_policy(all).unwrap();
    // A new connection (another source port): the ones above are tracked.
    let mut new_connection = udp_frame(a, b);
    new_connection[34..36].copy_from_slice(&40000u16.to_be_bytes());
    let enforced = twill_abi::ENDPOINT_F_EGRESS_ENFORCED | ENDPOINT_F_SHAPED;
    dp.upsert_endpoint(a, endpoint(1, enforced)).unwrap();
    assert_eq!(dp.test_run("from_endpoint", &new_connection).unwrap(), 2, "TC_ACT_SHOT");
}
