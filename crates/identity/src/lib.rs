//! Security identities: a number for a set of security-relevant labels.
//!
//! Equal label sets get equal numbers on every node sharing a store;
//! numbers below [`FIRST_ALLOCATED`] are Cilium's reserved identities.

mod allocator;
mod labels;

pub use allocator::{AllocatorError, Identity, IdentityAllocator};
pub use labels::{Label, LabelError, LabelSet};

/// The first number handed out for label-derived identities (Cilium's
/// cluster-local range starts here too).
pub const FIRST_ALLOCATED: u32 = 256;
/// The last number this allocator hands out.
pub const LAST_ALLOCATED: u32 = 65535;

/// Cilium's reserved identities Twill keeps, `(number, name)`: numbers
/// users read in flow logs.
pub use twill_numbers::RESERVED_IDENTITIES as RESERVED;
pub use twill_numbers::{
    IDENTITY_HOST as HOST, IDENTITY_REMOTE_NODE as REMOTE_NODE, IDENTITY_WORLD as WORLD,
};

/// The labels of a reserved identity (`reserved:NAME`), if `id` is one.
pub fn reserved_labels(id: u32) -> Option<LabelSet> {
    RESERVED
        .iter()
        .find(|(n, _)| *n == id)
        .map(|(_, name)| LabelSet::from_labels([Label::new("reserved", name, "")]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_identities_carry_cilium_s_reserved_labels() {
        assert_eq!(reserved_labels(HOST).unwrap().to_strings(), ["reserved:host"]);
        assert_eq!(reserved_labels(WORLD).unwrap().to_strings(), ["reserved:world"]);
        assert_eq!(reserved_labels(6).unwrap().to_strings(), ["reserved:remote-node"]);
        assert_eq!(reserved_labels(10).unwrap().to_strings(), ["reserved:world-ipv6"]);
        // Neither "no identity" nor the numbers Twill does not keep, nor
        // allocated ones, have reserved labels.
        for id in [0, 11, FIRST_ALLOCATED] {
            assert!(reserved_labels(id).is_none(), "{id}");
        }
    }
}
