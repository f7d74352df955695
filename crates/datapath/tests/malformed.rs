//! Malformed packets, run through the endpoint programs in the kernel with
//! BPF_PROG_TEST_RUN: every one is dropped and counted under Cilium's
//! reason codes, and nothing else happens.

use twill_datapath::Datapath;

const TC_ACT_SHOT: u32 = 2;

struct Root(std::path::PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    p.extend(ethertype.to_be_bytes());
    p
}

/// An IPv4 header (no options unless `ihl` > 5) carrying `proto`.
fn ipv4(ihl: u8, proto: u8, total_len: u16) -> Vec<u8> {
    let mut h = vec![0x40 | ihl, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 10, 200, 0, 2, 10, 200, 0, 3];
    h[2..4].copy_from_slice(&total_len.to_be_bytes());
    h.resize(20.max(ihl as usize * 4), 0);
    h
}

fn drops(dp: &Datapath, reason: u32) -> u64 {
    dp.metrics().unwrap().iter().filter(|m| m.reason == reason).map(|m| m.packets).sum()
}

#[test]
fn malformed_packets_are_dropped_and_counted() {
    let root = Root(std::path::PathBuf::from(format!("/sys/fs/bpf/twill-malformed-{}", std::process::id())));
    let dp = Datapath::load(&root.0).unwrap();

    // BPF_PROG_TEST_RUN itself refuses IPv4 frames shorter than an IPv4
    // header (EINVAL), so the shortest cases start there.
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "IPv4 version 6 in an IPv4 frame",
            [eth(0x0800), {
                let mut h = ipv4(5, 6, 20);
                h[0] = 0x65;
                h
            }]
            .concat(),
            134,
        ),
        ("IHL below 5", [eth(0x0800), ipv4(4, 6, 20)].concat(), 134),
        ("IHL beyond the packet", [eth(0x0800), ipv4(15, 6, 60)[..24].to_vec()].concat(), 135),
        ("TCP header missing", [eth(0x0800), ipv4(5, 6, 20)].concat(), 135),
        ("UDP ports cut short", [eth(0x0800), ipv4(5, 17, 22), vec![0x12, 0x34]].concat(), 135),
        (
            "ICMP error with its inner header cut short",
            [eth(0x0800), ipv4(5, 1, 36), vec![3, 3, 0, 0, 0, 0, 0, 0], vec![0x45, 0, 0]].concat(),
            135,
        ),
        ("IPv6 is not routed", [eth(0x86dd), vec![0x60; 40]].concat(), 139),
    ];
    for program in ["from_endpoint", "to_endpoint"] {
        for (what, packet, reason) in &cases {
            let before = drops(&dp, *reason);
            let verdict = dp.test_run(program, packet).unwrap_or_else(|e| panic!("{program}: {what}: {e:?}"));
            assert_eq!(verdict, TC_ACT_SHOT, "{program}: {what} must be dropped");
            assert_eq!(drops(&dp, *reason), before + 1, "{program}: {what} counted under reason {reason}");
        }
    }

    // Random bytes behind a valid IPv4 ethertype: always a verdict, never
    // an error from the kernel, and every drop counted.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let total_before: u64 = dp.metrics().unwrap().iter().filter(|m| m.reason != 0).map(|m| m.packets).sum();
    let mut shot = 0;
    for _ in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 34 + (seed % 120) as usize;
        let mut packet: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8).collect();
        packet[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        if dp.test_run("from_endpoint", &packet).unwrap() == TC_ACT_SHOT {
            shot += 1;
        }
    }
    let total_after: u64 = dp.metrics().unwrap().iter().filter(|m| m.reason != 0).map(|m| m.packets).sum();
    assert_eq!(total_after - total_before, shot, "every dropped packet is counted once");
    assert_eq!(shot, 2000, "random bytes never pass: malformed, or from no known endpoint");
}
