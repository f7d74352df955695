//! TCP flags: header bits and the names Hubble gives them.

pub const TCP_FIN: u16 = 0x01;
pub const TCP_SYN: u16 = 0x02;
pub const TCP_RST: u16 = 0x04;
pub const TCP_PSH: u16 = 0x08;
pub const TCP_ACK: u16 = 0x10;
pub const TCP_URG: u16 = 0x20;
pub const TCP_ECE: u16 = 0x40;
pub const TCP_CWR: u16 = 0x80;
/// The ninth flag bit (RFC 3540), outside the byte the other eight share;
/// Twill's datapath records only that byte, so it never reports NS.
pub const TCP_NS: u16 = 0x100;

/// Every flag in bit order (the field order of Hubble's `TCPFlags`), with
/// Hubble's name for it.
pub const TCP_FLAGS: &[(u16, &str)] = &[
    (TCP_FIN, "FIN"),
    (TCP_SYN, "SYN"),
    (TCP_RST, "RST"),
    (TCP_PSH, "PSH"),
    (TCP_ACK, "ACK"),
    (TCP_URG, "URG"),
    (TCP_ECE, "ECE"),
    (TCP_CWR, "CWR"),
    (TCP_NS, "NS"),
];

/// The order Hubble lists set flags in a flow's summary
/// (`TCP Flags: SYN, ACK`), which is not bit order.
const SUMMARY_ORDER: [u16; 9] =
    [TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST, TCP_PSH, TCP_URG, TCP_ECE, TCP_CWR, TCP_NS];

/// The name of one flag bit.
pub fn tcp_flag_name(bit: u16) -> Option<&'static str> {
    TCP_FLAGS.iter().find(|(b, _)| *b == bit).map(|(_, n)| *n)
}

/// The bit of the flag called `name` (Hubble's upper-case spelling).
pub fn tcp_flag_by_name(name: &str) -> Option<u16> {
    TCP_FLAGS.iter().find(|(_, n)| *n == name).map(|(b, _)| *b)
}

/// The names of the flags set in `bits`, in Hubble's summary order.
pub fn tcp_flag_names(bits: u16) -> impl Iterator<Item = &'static str> + Clone {
    SUMMARY_ORDER.into_iter().filter(move |bit| bits & bit != 0).filter_map(tcp_flag_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_unique;

    fn names(bits: u16) -> Vec<&'static str> {
        tcp_flag_names(bits).collect()
    }

    #[test]
    fn names_in_hubble_s_summary_order() {
        assert_eq!(names(TCP_SYN), ["SYN"]);
        assert_eq!(names(TCP_SYN | TCP_ACK), ["SYN", "ACK"]);
        assert_eq!(names(TCP_FIN | TCP_ACK), ["ACK", "FIN"]);
        assert_eq!(names(TCP_PSH | TCP_ACK), ["ACK", "PSH"]);
        assert_eq!(names(0x1ff), ["SYN", "ACK", "FIN", "RST", "PSH", "URG", "ECE", "CWR", "NS"]);
        assert!(names(0).is_empty());
        // Bits above the nine flags name nothing.
        assert!(names(0xfe00).is_empty());
    }

    #[test]
    fn bits_are_the_tcp_header_s() {
        // A SYN-ACK byte as captured off the wire.
        assert_eq!(names(0x12), ["SYN", "ACK"]);
        assert_eq!(tcp_flag_by_name("RST"), Some(0x04));
        assert_eq!(tcp_flag_by_name("CWR"), Some(0x80));
        assert_eq!(tcp_flag_by_name("NS"), Some(0x100));
        assert_eq!(tcp_flag_by_name("syn"), None);
        assert_eq!(tcp_flag_name(TCP_URG), Some("URG"));
        assert_eq!(tcp_flag_name(TCP_SYN | TCP_ACK), None);
    }

    #[test]
    fn one_bit_per_flag_and_the_summary_lists_them_all() {
        assert!(TCP_FLAGS.iter().all(|(bit, _)| bit.count_ones() == 1));
        assert_unique("tcp flag bit", TCP_FLAGS.iter().map(|(b, _)| *b));
        assert_unique("tcp flag name", TCP_FLAGS.iter().map(|(_, n)| *n));
        let mut summary = SUMMARY_ORDER.to_vec();
        summary.sort();
        assert_eq!(summary, TCP_FLAGS.iter().map(|(b, _)| *b).collect::<Vec<_>>());
    }
}
