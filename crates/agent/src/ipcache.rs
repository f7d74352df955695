//! The ipcache: every address Twill knows, mapped to its identity. Policy
//! is evaluated on the identities this map yields, so it must hold exactly
//! the host's addresses, the endpoints and the CIDRs policy names.

use std::{collections::BTreeMap, net::Ipv4Addr};

use twill_datapath::IpcacheMap;

use crate::error::Result;

/// What the ipcache should hold: (address, prefix length) -> identity.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DesiredIpcache(BTreeMap<(Ipv4Addr, u8), u32>);

impl DesiredIpcache {
    /// Later insertions win: endpoints over CIDRs over host addresses, so
    /// an endpoint address inside a policy CIDR keeps the endpoint's
    /// identity (the most specific fact about it).
    pub fn new(
        host_addresses: impl IntoIterator<Item = Ipv4Addr>,
        cidrs: impl IntoIterator<Item = (Ipv4Addr, u8, u32)>,
        endpoints: impl IntoIterator<Item = (Ipv4Addr, u32)>,
    ) -> Self {
        let mut desired = BTreeMap::new();
        for ip in host_addresses {
            desired.insert((ip, 32), twill_identity::HOST);
        }
        for (ip, len, identity) in cidrs {
            desired.insert((ip, len), identity);
        }
        for (ip, identity) in endpoints {
            desired.insert((ip, 32), identity);
        }
        Self(desired)
    }
}

/// Brings `map` to `desired`, touching only entries that differ. Removes
/// first: a stale entry never shadows a fresh one because keys are exact.
/// Returns the number of writes.
pub fn sync(map: &mut dyn IpcacheMap, desired: &DesiredIpcache) -> Result<usize> {
    let current: BTreeMap<(Ipv4Addr, u8), u32> =
        map.entries()?.into_iter().map(|e| ((e.ip, e.prefix_len), e.identity)).collect();
    let mut writes = 0;
    for key in current.keys() {
        if !desired.0.contains_key(key) {
            map.remove(key.0, key.1)?;
            writes += 1;
        }
    }
    for (key, identity) in &desired.0 {
        if current.get(key) != Some(identity) {
            map.upsert(key.0, key.1, *identity)?;
            writes += 1;
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use twill_datapath::maps::fake::FakeIpcacheMap;

    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn sync_writes_only_the_difference() {
        let mut map = FakeIpcacheMap::default();
        let desired =
            DesiredIpcache::new([ip("10.0.0.1")], [(ip("10.9.0.0"), 16, 16777217)], [(ip("10.0.0.2"), 256)]);
        assert_eq!(sync(&mut map, &desired).unwrap(), 3);
        assert_eq!(sync(&mut map, &desired).unwrap(), 0, "nothing changed, nothing written");

        // One endpoint changes identity, one goes away, one arrives.
        let desired =
            DesiredIpcache::new([ip("10.0.0.1")], [], [(ip("10.0.0.2"), 257), (ip("10.0.0.3"), 256)]);
        let before = map.writes();
        assert_eq!(sync(&mut map, &desired).unwrap(), 3);
        assert_eq!(map.writes() - before, 3);
        let entries: Vec<(String, u8, u32)> = map
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| (e.ip.to_string(), e.prefix_len, e.identity))
            .collect();
        assert_eq!(
            entries,
            vec![("10.0.0.1".into(), 32, 1), ("10.0.0.2".into(), 32, 257), ("10.0.0.3".into(), 32, 256)]
        );
    }

    #[test]
    fn an_endpoint_address_keeps_its_identity_over_host_and_cidr() {
        let d =
            DesiredIpcache::new([ip("10.0.0.5")], [(ip("10.0.0.5"), 32, 16777217)], [(ip("10.0.0.5"), 300)]);
        assert_eq!(d.0.get(&(ip("10.0.0.5"), 32)), Some(&300));
    }
}
