//! A shaped endpoint (ENDPOINT_F_SHAPED: a chained plugin's shaper on its
//! host device) gets no eBPF host routing: from_endpoint hands traffic
//! between it and another local endpoint to the host stack ("next"), so
//! the shapers see it, where unshaped endpoints are delivered straight
//! into the peer's namespace. Crafted packets under BPF_PROG_TEST_RUN.

use std::{net::Ipv4Addr, path::PathBuf};

use twill_abi::{DatapathConfig, EndpointInfo, ENDPOINT_F_SHAPED};
use twill_datapath::{Datapath, IpcacheEntry, PolicyEntry};

/// TCX_NEXT / TC_ACT_UNSPEC: on to the host stack, past later hooks.
const TC_ACT_UNSPEC: u32 = u32::MAX;
/// bpf_redirect_peer's verdict.
const TC_ACT_REDIRECT: u32 = 7;
/// BPF_PROG_TEST_RUN runs tc programs on the loopback device.
const LOOPBACK_IFINDEX: u32 = 1;

struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    p.extend([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend([0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
    p
}

fn endpoint(id: u32, flags: u32) -> EndpointInfo {
    EndpointInfo {
        ifindex: LOOPBACK_IFINDEX,
        endpoint_id: id,
        identity: 1000 + id,
        flags,
        mac: [2, 0xbb, 0, 0, 0, id as u8],
        host_mac: [2, 0xaa, 0, 0, 0, id as u8],
    }
}

#[test]
fn traffic_to_or_from_a_shaped_endpoint_goes_to_the_stack_not_the_peer() {
    let root = Root(PathBuf::from(format!("/sys/fs/bpf/twill-shaped-{}", std::process::id())));
    let mut dp = Datapath::load(&root.0).unwrap();
    dp.set_config(DatapathConfig {
        allow_localhost: 1,
        maglev_table_size: twill_abi::LB_MAGLEV_DEFAULT_SIZE,
        ..Default::default()
    })
    .unwrap();
    let (a, b) = (Ipv4Addr::new(10, 211, 0, 2), Ipv4Addr::new(10, 211, 0, 3));
    for (ip, id) in [(a, 1), (b, 2)] {
        dp.upsert_ipcache(&IpcacheEntry::local(ip, 32, 1000 + id)).unwrap();
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
