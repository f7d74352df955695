//! The ipcache: every address Twill knows, mapped to its identity. Policy
//! is evaluated on the identities this map yields, so it must hold exactly
//! the host's addresses, the endpoints and the CIDRs policy names.

use std::{collections::BTreeMap, net::Ipv4Addr};

use twill_datapath::{IpcacheEntry, IpcacheMap};

use crate::error::Result;

/// What the ipcache should hold: (address, prefix length) -> identity and
/// the node the prefix is behind (`None` when it is not behind another
/// node).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DesiredIpcache(BTreeMap<(Ipv4Addr, u8), Value>);

/// An entry's identity, the node it is behind and its `IPCACHE_F_*` flags.
type Value = (u32, Option<Ipv4Addr>, u32);

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
            desired.insert((ip, 32), (twill_identity::HOST, None, 0));
        }
        for (ip, len, identity) in cidrs {
            desired.insert((ip, len), (identity, None, 0));
        }
        for (ip, identity) in endpoints {
            desired.insert((ip, 32), (identity, None, 0));
        }
        Self(desired)
    }

    /// A prefix of another node (one of its endpoints, its pod CIDR, the
    /// node's own addresses with its identity), replacing what was there.
    /// With `tunnel_endpoint`, the datapath encapsulates traffic to it to
    /// that underlay address; without, the host stack routes it. `node`
    /// marks the node's own addresses, whose tunnel packets are believed.
    pub fn insert_remote(
        &mut self,
        ip: Ipv4Addr,
        prefix_len: u8,
        identity: u32,
        tunnel_endpoint: Option<Ipv4Addr>,
        node: bool,
    ) {
        let flags = if node { twill_abi::IPCACHE_F_NODE } else { 0 };
        self.0.insert((ip, prefix_len), (identity, tunnel_endpoint, flags));
    }
}

/// Brings `map` to `desired`, touching only entries that differ. Removes
/// first: a stale entry never shadows a fresh one because keys are exact.
/// Returns the number of writes.
pub fn sync(map: &mut dyn IpcacheMap, desired: &DesiredIpcache) -> Result<usize> {
    let current: BTreeMap<(Ipv4Addr, u8), Value> = map
        .entries()?
        .into_iter()
        .map(|e| ((e.ip, e.prefix_len), (e.identity, e.tunnel_endpoint, e.flags)))
        .collect();
    let mut writes = 0;
    for key in current.keys() {
        if !desired.0.contains_key(key) {
            map.remove(key.0, key.1)?;
            writes += 1;
        }
    }
    for (&(ip, prefix_len), &(identity, tunnel_endpoint, flags)) in &desired.0 {
        if current.get(&(ip, prefix_len)) != Some(&(identity, tunnel_endpoint, flags)) {
            map.upsert(&IpcacheEntry { ip, prefix_len, identity, tunnel_endpoint, flags })?;
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
        assert_eq!(d.0.get(&(ip("10.0.0.5"), 32)), Some(&(300, None, 0)));
    }

    #[test]
    fn a_remote_entry_is_rewritten_when_only_its_node_changes() {
        let mut map = FakeIpcacheMap::default();
        let mut desired = DesiredIpcache::new([ip("10.0.0.1")], [], []);
        desired.insert_remote(ip("10.1.0.0"), 24, 6, Some(ip("192.168.0.2")), false);
        assert_eq!(sync(&mut map, &desired).unwrap(), 2);
        desired.insert_remote(ip("10.1.0.0"), 24, 6, Some(ip("192.168.0.3")), false);
        assert_eq!(sync(&mut map, &desired).unwrap(), 1, "the moved prefix is written again");
        let remote = map.entries().unwrap().into_iter().find(|e| e.prefix_len == 24).unwrap();
        assert_eq!(remote.tunnel_endpoint, Some(ip("192.168.0.3")));
        // A node's own address gets the node flag; only the flag changing
        // is a change too.
        desired.insert_remote(ip("192.168.0.3"), 32, 300, None, false);
        assert_eq!(sync(&mut map, &desired).unwrap(), 1);
        desired.insert_remote(ip("192.168.0.3"), 32, 300, None, true);
        assert_eq!(sync(&mut map, &desired).unwrap(), 1, "the flag alone is written");
        let node = map.entries().unwrap().into_iter().find(|e| e.ip == ip("192.168.0.3")).unwrap();
        assert_eq!(node.flags, twill_abi::IPCACHE_F_NODE);
    }
}
