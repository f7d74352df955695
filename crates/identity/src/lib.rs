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

/// Cilium's reserved identities: numbers users read in flow logs.
pub const RESERVED: &[(u32, &str)] = &[
    (1, "host"),
    (2, "world"),
    (3, "unmanaged"),
    (4, "health"),
    (5, "init"),
    (6, "remote-node"),
    (7, "kube-apiserver"),
    (8, "ingress"),
    (9, "world-ipv4"),
    (10, "world-ipv6"),
];

pub const HOST: u32 = 1;
pub const WORLD: u32 = 2;

/// The labels of a reserved identity (`reserved:NAME`), if `id` is one.
pub fn reserved_labels(id: u32) -> Option<LabelSet> {
    RESERVED
        .iter()
        .find(|(n, _)| *n == id)
        .map(|(_, name)| LabelSet::from_labels([Label::new("reserved", name, "")]))
}
