//! Cilium's drop reasons (`pkg/monitor/api/drop.go`): the code a drop
//! event carries as its sub type, and the text Cilium and Hubble print
//! for it.

/// Codes Twill's datapath drops with, named as in `bpf/include/twill.h`.
pub const DROP_INVALID_SOURCE_IP: u8 = 132;
pub const DROP_POLICY: u8 = 133;
pub const DROP_INVALID_PACKET: u8 = 134;
pub const DROP_CT_INVALID_HDR: u8 = 135;
pub const DROP_UNSUPPORTED_L3: u8 = 139;
pub const DROP_WRITE_ERROR: u8 = 141;
pub const DROP_NO_TUNNEL_KEY: u8 = 147;
pub const DROP_NO_SERVICE: u8 = 158;
pub const DROP_UNKNOWN_SENDER: u8 = 172;
pub const DROP_PROXY_LOOKUP_FAILED: u8 = 178;
pub const DROP_PROXY_SET_FAILED: u8 = 179;
pub const DROP_POLICY_DENY: u8 = 181;

/// Every code Cilium names, with its text. Flows from other agents (a
/// relay, an upstream Cilium) may carry any of them, so the table is
/// Cilium's whole list, not only the codes Twill emits.
pub const DROP_REASONS: &[(u8, &str)] = &[
    (0, "Success"),
    (2, "Invalid packet"),
    (3, "Interface"),
    (4, "Interface Decrypted"),
    (5, "LB, sock cgroup: No backend slot entry found"),
    (6, "LB, sock cgroup: No backend entry found"),
    (7, "LB, sock cgroup: Reverse entry update failed"),
    (8, "LB, sock cgroup: Reverse entry stale"),
    (9, "Fragmented packet"),
    (10, "Fragmented packet entry update failed"),
    (11, "Missed tail call to custom program"),
    (130, "Invalid source mac"),
    (131, "Invalid destination mac"),
    (132, "Invalid source ip"),
    (133, "Policy denied"),
    (134, "Invalid packet"),
    (135, "CT: Truncated or invalid header"),
    (136, "Fragmentation needed"),
    (137, "CT: Unknown L4 protocol"),
    (138, "CT: Can't create entry from packet"),
    (139, "Unsupported L3 protocol"),
    (140, "Missed tail call"),
    (141, "Error writing to packet"),
    (142, "Unknown L4 protocol"),
    (143, "Unknown ICMPv4 code"),
    (144, "Unknown ICMPv4 type"),
    (145, "Unknown ICMPv6 code"),
    (146, "Unknown ICMPv6 type"),
    (147, "Error retrieving tunnel key"),
    (148, "Error retrieving tunnel options"),
    (149, "Invalid Geneve option"),
    (150, "Unknown L3 target address"),
    (151, "Stale or unroutable IP"),
    (152, "No matching local container found"),
    (153, "Error while correcting L3 checksum"),
    (154, "Error while correcting L4 checksum"),
    (155, "CT: Map insertion failed"),
    (156, "Invalid IPv6 extension header"),
    (157, "IP fragmentation not supported"),
    (158, "Service backend not found"),
    (160, "No tunnel/encapsulation endpoint (datapath BUG!)"),
    (161, "NAT 46/64 not enabled"),
    (162, "Reached EDT rate-limiting drop horizon"),
    (163, "Unknown connection tracking state"),
    (164, "Local host is unreachable"),
    (165, "No configuration available to perform policy decision"),
    (166, "Unsupported L2 protocol"),
    (167, "No mapping for NAT masquerade"),
    (168, "Unsupported protocol for NAT masquerade"),
    (169, "FIB lookup failed"),
    (170, "Encapsulation traffic is prohibited"),
    (171, "Invalid identity"),
    (172, "Unknown sender"),
    (173, "NAT not needed"),
    (174, "Is a ClusterIP"),
    (175, "First logical datagram fragment not found"),
    (176, "Forbidden ICMPv6 message"),
    (177, "Denied by LB src range check"),
    (178, "Socket lookup failed"),
    (179, "Socket assign failed"),
    (180, "Proxy redirection not supported for protocol"),
    (181, "Policy denied by denylist"),
    (182, "VLAN traffic disallowed by VLAN filter"),
    (183, "Incorrect VNI from VTEP"),
    (184, "Failed to update or lookup TC buffer"),
    (185, "No SID was found for the IP address"),
    (186, "SRv6 state was removed during tail call"),
    (187, "L3 translation from IPv4 to IPv6 failed (NAT46)"),
    (188, "L3 translation from IPv6 to IPv4 failed (NAT64)"),
    (189, "Authentication required"),
    (190, "No conntrack map found"),
    (191, "No nat map found"),
    (192, "Invalid ClusterID"),
    (193, "Unsupported packet protocol for DSR encapsulation"),
    (194, "No egress gateway found"),
    (195, "Traffic is unencrypted"),
    (196, "TTL exceeded"),
    (197, "No node ID found"),
    (198, "Rate limited"),
    (199, "IGMP handled"),
    (200, "IGMP subscribed"),
    (201, "Multicast handled"),
    (202, "Host datapath not ready"),
    (203, "Endpoint policy program not available"),
    (204, "No Egress IP configured"),
    (205, "Punt to proxy"),
];

/// Cilium's text for a drop code; `None` for codes Cilium does not name
/// (callers print those their own way: Hubble writes `"<code>, 0"`).
pub const fn drop_reason_text(code: u8) -> Option<&'static str> {
    crate::find_u8(DROP_REASONS, code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_unique;

    #[test]
    fn texts_of_the_codes_twill_drops_with() {
        assert_eq!(drop_reason_text(DROP_INVALID_SOURCE_IP), Some("Invalid source ip"));
        assert_eq!(drop_reason_text(DROP_POLICY), Some("Policy denied"));
        assert_eq!(drop_reason_text(DROP_INVALID_PACKET), Some("Invalid packet"));
        assert_eq!(drop_reason_text(DROP_CT_INVALID_HDR), Some("CT: Truncated or invalid header"));
        assert_eq!(drop_reason_text(DROP_UNSUPPORTED_L3), Some("Unsupported L3 protocol"));
        assert_eq!(drop_reason_text(DROP_POLICY_DENY), Some("Policy denied by denylist"));
        assert_eq!(drop_reason_text(DROP_WRITE_ERROR), Some("Error writing to packet"));
        assert_eq!(drop_reason_text(DROP_NO_TUNNEL_KEY), Some("Error retrieving tunnel key"));
        assert_eq!(drop_reason_text(DROP_UNKNOWN_SENDER), Some("Unknown sender"));
    }

    #[test]
    fn other_cilium_codes_and_gaps() {
        assert_eq!(drop_reason_text(0), Some("Success"));
        assert_eq!(drop_reason_text(158), Some("Service backend not found"));
        assert_eq!(drop_reason_text(205), Some("Punt to proxy"));
        // Cilium leaves 1, 12-129 and 159 unnamed.
        for code in [1, 12, 129, 159, 206, 255] {
            assert_eq!(drop_reason_text(code), None, "{code}");
        }
    }

    #[test]
    fn codes_are_unique_and_in_order() {
        assert_unique("drop code", DROP_REASONS.iter().map(|(c, _)| *c));
        // Sorted, so that a new code is added where a reader looks for it.
        assert!(DROP_REASONS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(DROP_REASONS.iter().all(|(_, text)| !text.is_empty()));
    }
}
