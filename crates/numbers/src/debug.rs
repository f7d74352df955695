//! Cilium's datapath debug message subtypes (`bpf/lib/dbg.h`, the
//! `DBG_*` enum), which Hubble's `DebugEventType` numbers follow, and the
//! words Cilium's monitor renders their arguments with.

pub const DBG_GENERIC: u8 = 1;
pub const DBG_LOCAL_DELIVERY: u8 = 2;
pub const DBG_ENCAP: u8 = 3;
pub const DBG_LXC_FOUND: u8 = 4;
pub const DBG_POLICY_DENIED: u8 = 5;
pub const DBG_CT_MATCH: u8 = 8;
pub const DBG_CT_VERDICT: u8 = 15;
pub const DBG_DECAP: u8 = 16;
pub const DBG_TO_STACK: u8 = 20;
pub const DBG_LB4_LOOKUP_FRONTEND: u8 = 30;
pub const DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS: u8 = 33;
pub const DBG_CT_LOOKUP4_1: u8 = 48;
pub const DBG_CT_LOOKUP4_2: u8 = 49;
pub const DBG_CT_CREATED4: u8 = 50;

/// Conntrack tuple flags of `DBG_CT_LOOKUP4_2` (Cilium's `TUPLE_F_*`).
pub const TUPLE_F_IN: u32 = 0;
pub const TUPLE_F_OUT: u32 = 1;
pub const TUPLE_F_RELATED: u32 = 2;

/// Conntrack lookup results as `DBG_CT_VERDICT` names them (Cilium's
/// `ctStateText`; the numbers are `CT_NEW`.. `CT_RELATED`).
pub const CT_STATE_TEXT: &[(u32, &str)] = &[(0, "New"), (1, "Established"), (2, "Reply"), (3, "Related")];

pub fn ct_state_text(state: u32) -> Option<&'static str> {
    CT_STATE_TEXT.iter().find(|(s, _)| *s == state).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_unique;

    #[test]
    fn subtypes_are_cilium_s() {
        assert_eq!(DBG_LOCAL_DELIVERY, 2);
        assert_eq!(DBG_POLICY_DENIED, 5);
        assert_eq!(DBG_CT_VERDICT, 15);
        assert_eq!(DBG_CT_LOOKUP4_1, 48);
        assert_eq!(DBG_CT_CREATED4, 50);
    }

    #[test]
    fn ct_states_read_as_cilium_s() {
        assert_eq!(ct_state_text(0), Some("New"));
        assert_eq!(ct_state_text(2), Some("Reply"));
        assert_eq!(ct_state_text(4), None);
        assert_unique("ct state", CT_STATE_TEXT.iter().map(|(s, _)| *s));
    }
}
