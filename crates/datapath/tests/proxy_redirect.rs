//! The redirect verdict, decided in the kernel (BPF_PROG_TEST_RUN): a new
//! connection whose policy entry carries a proxy port is steered to the
//! proxy's socket, and with no proxy listening it is dropped (reason 178,
//! never delivered around the proxy); a port without L7 rules is not
//! touched. The steering into a live proxy is covered end to end by
//! tests/e2e/tests/l7_http.rs.

use std::net::Ipv4Addr;

use twill_abi::EndpointInfo;
use twill_datapath::{Datapath, IpcacheEntry, PolicyAction, PolicyEntry};

const TC_ACT_SHOT: u32 = 2;
const TO_STACK: u32 = u32::MAX; // TC_ACT_UNSPEC
const DROP_PROXY_LOOKUP_FAILED: u32 = 178;

struct Root(std::path::PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend(src.octets());
    ip.extend(dst.octets());
    let mut tcp = Vec::new();
    tcp.extend(sport.to_be_bytes());
    tcp.extend(dport.to_be_bytes());
    tcp.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend(ip);
    p.extend(tcp);
    p
}

fn drops(dp: &Datapath, reason: u32) -> u64 {
    dp.metrics().unwrap().iter().filter(|m| m.reason == reason).map(|m| m.packets).sum()
}

#[test]
fn entries_with_a_proxy_port_redirect_and_fail_closed_without_a_proxy() {
    let root = Root(std::path::PathBuf::from(format!("/sys/fs/bpf/twill-proxyredir-{}", std::process::id())));
    let mut dp = Datapath::load(&root.0).unwrap();
    let client = Ipv4Addr::new(10, 77, 0, 2);
    let server = Ipv4Addr::new(192, 0, 2, 80);
    // BPF_PROG_TEST_RUN runs the packet as arriving on loopback.
    let info =
        EndpointInfo { ifindex: 1, endpoint_id: 7, identity: 256, flags: 0, mac: [2; 6], host_mac: [4; 6] };
    dp.upsert_endpoint(client, info).unwrap();
    dp.upsert_ipcache(&IpcacheEntry::local(client, 32, 256)).unwrap();
    let egress =
        |port| PolicyEntry { endpoint_id: 7, direction: 1, identity: 0, protocol: 6, port, l4_prefix: 24 };
    // Port 80: allowed through a proxy on a port nothing listens on (a
    // loopback port below the ephemeral range, unused on test machines).
    dp.upsert_policy_action(egress(80), PolicyAction::redirect(1)).unwrap();
    dp.upsert_policy_action(egress(81), PolicyAction::ALLOW).unwrap();
    let entries = dp.policy_entries().unwrap();
    assert!(entries.contains(&(egress(80), PolicyAction::redirect(1))), "{entries:?}");

    let before = drops(&dp, DROP_PROXY_LOOKUP_FAILED);
    let verdict = dp.test_run("from_endpoint", &syn(client, server, 40000, 80)).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT, "an L7 port with no proxy must not be forwarded");
    assert_eq!(drops(&dp, DROP_PROXY_LOOKUP_FAILED), before + 1);

    let verdict = dp.test_run("from_endpoint", &syn(client, server, 40001, 81)).unwrap();
    assert_eq!(verdict, TO_STACK, "a port without L7 rules goes on as before");
    assert_eq!(drops(&dp, DROP_PROXY_LOOKUP_FAILED), before + 1, "and never looks for a proxy");
}
