//! Cilium's reserved security identities (`pkg/identity`): numbers below
//! the allocated range that stand for the host, the world and so on.

pub const IDENTITY_UNKNOWN: u32 = 0;
pub const IDENTITY_HOST: u32 = 1;
pub const IDENTITY_WORLD: u32 = 2;
pub const IDENTITY_UNMANAGED: u32 = 3;
pub const IDENTITY_HEALTH: u32 = 4;
pub const IDENTITY_INIT: u32 = 5;
pub const IDENTITY_REMOTE_NODE: u32 = 6;
pub const IDENTITY_KUBE_APISERVER: u32 = 7;
pub const IDENTITY_INGRESS: u32 = 8;
pub const IDENTITY_WORLD_IPV4: u32 = 9;
pub const IDENTITY_WORLD_IPV6: u32 = 10;
pub const IDENTITY_ENCRYPTED_OVERLAY: u32 = 11;

/// The highest reserved identity Twill gives labels to, lists and lets
/// policy select; 0 and [`IDENTITY_ENCRYPTED_OVERLAY`] are only ever
/// printed.
pub const MAX_RESERVED_IDENTITY: u32 = IDENTITY_WORLD_IPV6;

/// Every number Cilium names, in order, with the name flows print
/// (`(world)`) and filters take (`--from-identity world`).
pub const IDENTITY_NAMES: &[(u32, &str)] = &[
    (IDENTITY_UNKNOWN, "unknown"),
    (IDENTITY_HOST, "host"),
    (IDENTITY_WORLD, "world"),
    (IDENTITY_UNMANAGED, "unmanaged"),
    (IDENTITY_HEALTH, "health"),
    (IDENTITY_INIT, "init"),
    (IDENTITY_REMOTE_NODE, "remote-node"),
    (IDENTITY_KUBE_APISERVER, "kube-apiserver"),
    (IDENTITY_INGRESS, "ingress"),
    (IDENTITY_WORLD_IPV4, "world-ipv4"),
    (IDENTITY_WORLD_IPV6, "world-ipv6"),
    (IDENTITY_ENCRYPTED_OVERLAY, "encrypted-overlay"),
];

/// The reserved identities Twill keeps, 1 to [`MAX_RESERVED_IDENTITY`]:
/// each has the labels `reserved:NAME`. A slice of [`IDENTITY_NAMES`], so
/// the two cannot disagree.
pub const RESERVED_IDENTITIES: &[(u32, &str)] =
    IDENTITY_NAMES.split_at(MAX_RESERVED_IDENTITY as usize + 1).0.split_at(IDENTITY_HOST as usize).1;

/// The name of any number Cilium names, `unknown` (0) included.
pub fn reserved_identity_name(id: u32) -> Option<&'static str> {
    IDENTITY_NAMES.iter().find(|(n, _)| *n == id).map(|(_, name)| *name)
}

/// The reserved identity called `name`. `unknown` is not one: it is the
/// absence of an identity, not something to match on.
pub fn reserved_identity_by_name(name: &str) -> Option<u32> {
    IDENTITY_NAMES.iter().find(|(id, n)| *id != IDENTITY_UNKNOWN && *n == name).map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_unique;

    #[test]
    fn names_as_cilium_prints_them() {
        assert_eq!(reserved_identity_name(0), Some("unknown"));
        assert_eq!(reserved_identity_name(IDENTITY_HOST), Some("host"));
        assert_eq!(reserved_identity_name(IDENTITY_WORLD), Some("world"));
        assert_eq!(reserved_identity_name(6), Some("remote-node"));
        assert_eq!(reserved_identity_name(7), Some("kube-apiserver"));
        assert_eq!(reserved_identity_name(10), Some("world-ipv6"));
        assert_eq!(reserved_identity_name(12), None);
        assert_eq!(reserved_identity_name(256), None);
    }

    #[test]
    fn by_name_finds_every_reserved_identity_but_unknown() {
        assert_eq!(reserved_identity_by_name("host"), Some(1));
        assert_eq!(reserved_identity_by_name("world-ipv4"), Some(9));
        assert_eq!(reserved_identity_by_name("encrypted-overlay"), Some(11));
        assert_eq!(reserved_identity_by_name("unknown"), None);
        assert_eq!(reserved_identity_by_name("Host"), None);
        assert_eq!(reserved_identity_by_name("reserved:host"), None);
    }

    #[test]
    fn twill_keeps_one_to_ten() {
        let ids: Vec<u32> = RESERVED_IDENTITIES.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        assert_eq!(RESERVED_IDENTITIES.first(), Some(&(1, "host")));
        assert_eq!(RESERVED_IDENTITIES.last(), Some(&(MAX_RESERVED_IDENTITY, "world-ipv6")));
    }

    #[test]
    fn numbers_are_consecutive_and_names_unique() {
        // The slice in RESERVED_IDENTITIES relies on number == index.
        for (index, (id, _)) in IDENTITY_NAMES.iter().enumerate() {
            assert_eq!(*id as usize, index);
        }
        assert_unique("identity name", IDENTITY_NAMES.iter().map(|(_, n)| *n));
    }
}
