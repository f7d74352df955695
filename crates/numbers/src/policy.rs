//! Cilium's policy match types (`monitorAPI.PolicyMatchType`): how the
//! entry that allowed a packet matched, as policy verdict events report.

pub const POLICY_MATCH_NONE: u32 = 0;
pub const POLICY_MATCH_L3_ONLY: u32 = 1;
pub const POLICY_MATCH_L3_L4: u32 = 2;
pub const POLICY_MATCH_L4_ONLY: u32 = 3;
pub const POLICY_MATCH_ALL: u32 = 4;
pub const POLICY_MATCH_L3_PROTO: u32 = 5;
pub const POLICY_MATCH_PROTO_ONLY: u32 = 6;

/// Names as Hubble's printer writes them (`policy-verdict:L3-Only`);
/// Hubble's metrics use the same names in lower case.
pub const POLICY_MATCH_TYPES: &[(u32, &str)] = &[
    (POLICY_MATCH_NONE, "none"),
    (POLICY_MATCH_L3_ONLY, "L3-Only"),
    (POLICY_MATCH_L3_L4, "L3-L4"),
    (POLICY_MATCH_L4_ONLY, "L4-Only"),
    (POLICY_MATCH_ALL, "all"),
    (POLICY_MATCH_L3_PROTO, "L3-Proto"),
    (POLICY_MATCH_PROTO_ONLY, "Proto-Only"),
];

/// The name of a match type; `None` for numbers Cilium does not define
/// (which Cilium prints as `unknown`).
pub fn policy_match_name(match_type: u32) -> Option<&'static str> {
    POLICY_MATCH_TYPES.iter().find(|(m, _)| *m == match_type).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_unique;

    #[test]
    fn names() {
        assert_eq!(policy_match_name(POLICY_MATCH_NONE), Some("none"));
        assert_eq!(policy_match_name(POLICY_MATCH_L3_ONLY), Some("L3-Only"));
        assert_eq!(policy_match_name(POLICY_MATCH_L3_L4), Some("L3-L4"));
        assert_eq!(policy_match_name(POLICY_MATCH_PROTO_ONLY), Some("Proto-Only"));
        assert_eq!(policy_match_name(7), None);
    }

    #[test]
    fn unique() {
        assert_unique("policy match type", POLICY_MATCH_TYPES.iter().map(|(m, _)| *m));
        assert_unique("policy match name", POLICY_MATCH_TYPES.iter().map(|(_, n)| n.to_lowercase()));
    }
}
