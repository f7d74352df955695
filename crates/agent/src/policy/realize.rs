//! Realizing resolved policy in the kernel's policy map, by diff.
//!
//! Updates keep connections that are allowed before and after alive: new
//! and changed entries are written first, stale ones removed last, so
//! every intermediate map state is the union of old and new, which denies
//! nothing both allow (a deny entry present in either means the
//! connection was not allowed by that version). Established connections
//! never consult the policy map at all: conntrack lets them through, so a
//! new deny stops new connections at once and leaves established ones
//! until they close or their conntrack entry expires — as Cilium does,
//! because dropping mid-stream would break applications in ways that
//! refusing a connection does not.

use std::collections::BTreeMap;

use tracing::debug;
use twill_datapath::{PolicyAction, PolicyEntry, PolicyMap};
use twill_policy::{
    model::Direction,
    resolve::{EndpointPolicy, MapKey},
};

use crate::error::Result;

pub fn to_entry(endpoint_id: u16, key: &MapKey) -> PolicyEntry {
    PolicyEntry {
        endpoint_id,
        direction: match key.direction {
            Direction::Ingress => twill_abi::DIR_INGRESS,
            Direction::Egress => twill_abi::DIR_EGRESS,
        },
        identity: key.identity,
        protocol: key.protocol,
        port: key.port,
        l4_prefix: key.l4_prefix_len(),
    }
}

/// What each endpoint's slice of the policy map holds right now, which
/// revision it reflects and which directions it enforces.
#[derive(Default)]
pub struct PolicyRealizer {
    /// Per endpoint ID: the entries in the kernel map and what each decides.
    realized: BTreeMap<u16, BTreeMap<PolicyEntry, PolicyAction>>,
    revision: BTreeMap<u16, u64>,
    enforced: BTreeMap<u16, (bool, bool)>,
}

impl PolicyRealizer {
    /// Starts from what the kernel holds (after a restart: the previous
    /// agent's entries), so the first diff changes only what differs.
    pub fn from_map(map: &dyn PolicyMap) -> Result<Self> {
        let mut realizer = Self::default();
        for (entry, action) in map.entries()? {
            realizer.realized.entry(entry.endpoint_id).or_default().insert(entry, action);
        }
        Ok(realizer)
    }

    /// Writes one endpoint's resolved policy by diff; returns the number
    /// of map writes. On a failed write the bookkeeping keeps the union of
    /// old and new, so the next attempt rewrites whatever may be missing
    /// and removes whatever may be stale. `proxy_port` gives the proxy
    /// listener of an entry with L7 rules (0: none allocated).
    pub fn realize(
        &mut self,
        map: &mut dyn PolicyMap,
        endpoint_id: u16,
        resolved: &EndpointPolicy,
        revision: u64,
        proxy_port: &dyn Fn(&MapKey) -> u16,
    ) -> Result<usize> {
        let desired: BTreeMap<PolicyEntry, PolicyAction> = resolved
            .entries
            .iter()
            .map(|(k, e)| {
                let action = match (e.deny, &e.l7) {
                    (true, _) => PolicyAction::DENY,
                    (false, None) => PolicyAction::ALLOW,
                    (false, Some(_)) => PolicyAction::redirect(proxy_port(k)),
                };
                (to_entry(endpoint_id, k), action)
            })
            .collect();
        let current = self.realized.entry(endpoint_id).or_default();
        let mut writes = 0;
        for (entry, action) in &desired {
            if current.get(entry) != Some(action) {
                map.upsert(*entry, *action)?;
                current.insert(*entry, *action);
                writes += 1;
            }
        }
        let stale: Vec<PolicyEntry> = current.keys().filter(|e| !desired.contains_key(e)).copied().collect();
        for entry in stale {
            map.remove(entry)?;
            current.remove(&entry);
            writes += 1;
        }
        if writes > 0 {
            debug!(endpoint_id, writes, total = desired.len(), "policy map updated");
        }
        self.revision.insert(endpoint_id, revision);
        self.enforced.insert(endpoint_id, (resolved.ingress_enforced, resolved.egress_enforced));
        Ok(writes)
    }

    /// Removes every entry of an endpoint that is gone.
    pub fn forget(&mut self, map: &mut dyn PolicyMap, endpoint_id: u16) -> Result<()> {
        if let Some(entries) = self.realized.get_mut(&endpoint_id) {
            while let Some((entry, action)) = entries.pop_first() {
                if let Err(e) = map.remove(entry) {
                    entries.insert(entry, action);
                    return Err(e.into());
                }
            }
        }
        self.realized.remove(&endpoint_id);
        self.revision.remove(&endpoint_id);
        self.enforced.remove(&endpoint_id);
        Ok(())
    }

    /// Endpoint IDs that have entries or bookkeeping here.
    pub fn endpoints(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.realized.keys().chain(self.revision.keys()).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The revision endpoint `id`'s map reflects (0: none yet).
    pub fn revision(&self, id: u16) -> u64 {
        self.revision.get(&id).copied().unwrap_or(0)
    }

    /// (ingress, egress) enforcement of endpoint `id`.
    pub fn enforced(&self, id: u16) -> (bool, bool) {
        self.enforced.get(&id).copied().unwrap_or_default()
    }

    /// Entries that redirect to the L7 proxy, with their ports.
    pub fn proxy_ports(&self) -> Vec<(PolicyEntry, u16)> {
        self.realized
            .values()
            .flatten()
            .filter(|(_, a)| !a.deny && a.proxy_port != 0)
            .map(|(e, a)| (*e, a.proxy_port))
            .collect()
    }

    /// Entries in the kernel map, over all endpoints.
    pub fn entry_count(&self) -> usize {
        self.realized.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use twill_datapath::maps::fake::FakePolicyMap;
    use twill_policy::resolve::MapEntry;

    use super::*;

    fn key(identity: u32, port: u16) -> MapKey {
        MapKey { direction: Direction::Ingress, identity, protocol: 6, port, port_prefix: 16 }
    }

    fn policy(entries: &[(u32, u16, bool)]) -> EndpointPolicy {
        EndpointPolicy {
            entries: entries
                .iter()
                .map(|(id, port, deny)| {
                    (key(*id, *port), MapEntry { deny: *deny, origins: Default::default(), l7: None })
                })
                .collect(),
            ingress_enforced: true,
            egress_enforced: false,
        }
    }

    #[test]
    fn diff_writes_only_changes_and_old_and_new_coexist_in_between() {
        let mut map = FakePolicyMap::default();
        let mut r = PolicyRealizer::default();
        let v1 = policy(&[(256, 80, false), (257, 80, false), (258, 80, true)]);
        assert_eq!(r.realize(&mut map, 7, &v1, 1, &|_| 0).unwrap(), 3);
        assert_eq!(r.realize(&mut map, 7, &v1, 2, &|_| 0).unwrap(), 0, "same policy, no writes");
        assert_eq!(r.revision(7), 2);
        assert_eq!(r.enforced(7), (true, false));

        // v2 drops 257, flips 258 to allow, adds 259. Fail after the
        // first two writes: the upserts land, the removal does not.
        let v2 = policy(&[(256, 80, false), (258, 80, false), (259, 80, false)]);
        map.fail_after(2);
        assert!(r.realize(&mut map, 7, &v2, 3, &|_| 0).is_err());
        let allow = |map: &FakePolicyMap, id| map.get(&to_entry(7, &key(id, 80))).map(|a| a.deny);
        assert_eq!(allow(&map, 258), Some(false), "new entries are written first");
        assert_eq!(allow(&map, 259), Some(false));
        assert_eq!(allow(&map, 257), Some(false), "stale entries go last: still there");

        // The retry finishes the job with exactly the missing write.
        let mut map2 = map;
        map2.fail_after(usize::MAX / 2);
        let before = map2.writes();
        assert_eq!(r.realize(&mut map2, 7, &v2, 3, &|_| 0).unwrap(), 1);
        assert_eq!(map2.writes() - before, 1);
        assert_eq!(allow(&map2, 257), None);
        assert_eq!(r.entry_count(), 3);
    }

    #[test]
    fn restart_starts_from_the_kernel_and_forget_clears_an_endpoint() {
        let entries = [
            (to_entry(3, &key(256, 80)), PolicyAction::ALLOW),
            (to_entry(4, &key(256, 81)), PolicyAction::DENY),
        ];
        let mut map = FakePolicyMap::with_entries(entries);
        let mut r = PolicyRealizer::from_map(&map).unwrap();
        assert_eq!(r.endpoints(), vec![3, 4]);
        // Same content as in the kernel: a restarted agent writes nothing.
        assert_eq!(r.realize(&mut map, 3, &policy(&[(256, 80, false)]), 5, &|_| 0).unwrap(), 0);
        r.forget(&mut map, 4).unwrap();
        assert_eq!(map.len(), 1);
        assert_eq!(r.endpoints(), vec![3]);
        assert_eq!(r.enforced(4), (false, false));
    }

    #[test]
    fn entries_with_l7_rules_redirect_to_their_proxy_port_and_follow_it() {
        use twill_policy::l7::{HttpRule, L7Rules};
        let mut map = FakePolicyMap::default();
        let mut r = PolicyRealizer::default();
        let mut p = policy(&[(256, 80, false), (257, 80, false)]);
        p.entries.get_mut(&key(257, 80)).unwrap().l7 = Some(L7Rules::Http(vec![HttpRule::default()]));
        assert_eq!(r.realize(&mut map, 7, &p, 1, &|k| if k.identity == 257 { 15001 } else { 0 }).unwrap(), 2);
        assert_eq!(map.get(&to_entry(7, &key(257, 80))), Some(PolicyAction::redirect(15001)));
        assert_eq!(map.get(&to_entry(7, &key(256, 80))), Some(PolicyAction::ALLOW));
        // A new port for the same entry is one write.
        assert_eq!(r.realize(&mut map, 7, &p, 2, &|_| 15002).unwrap(), 1);
        assert_eq!(map.get(&to_entry(7, &key(257, 80))), Some(PolicyAction::redirect(15002)));
    }
}
