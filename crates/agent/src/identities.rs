//! Identities on this node: label-derived ones through the store-backed
//! allocator, Cilium's reserved ones, and the node-local identities that
//! CIDRs named in policy get. This module owns the CIDR assignments and
//! builds the identity universe policy resolution and flows work from.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use twill_identity::{Identity, IdentityAllocator, Label, LabelSet};
use twill_policy::{
    model::Prefix,
    resolve::{IdentityKind, KnownIdentity, Universe},
};
use twill_store::{Session, Store};

use crate::error::Result;

/// Node-local identities for CIDRs start here (Cilium's local scope).
pub const FIRST_CIDR_IDENTITY: u32 = 1 << 24;

pub struct Identities {
    allocator: IdentityAllocator,
    cidrs: CidrIdentities,
    /// The last identity list read: while a shared store is unreachable,
    /// flows and policy keep the identities known until then.
    last_known: std::sync::Mutex<Option<Vec<Identity>>>,
    /// When a read last failed: for a while after, the last list is used
    /// without asking, so one change does not wait out the store's
    /// timeout once per identity.
    failed_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long a failed read keeps later reads on the last known list.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

impl Identities {
    /// With a session (cluster mode), this node's references to
    /// identities are bound to its lease.
    pub fn new(store: Arc<dyn Store>, session: Option<Arc<Session>>) -> Self {
        let allocator = match session {
            Some(session) => IdentityAllocator::with_session(store, session),
            None => IdentityAllocator::new(store),
        };
        Self {
            allocator,
            cidrs: CidrIdentities::default(),
            last_known: Default::default(),
            failed_at: Default::default(),
        }
    }

    pub fn acquire(&self, labels: &LabelSet, owner: &str) -> Result<u32> {
        let identity = self.allocator.acquire(labels, owner)?;
        // A freed number may come back with other labels: the list read
        // before must not answer for it.
        if let Some(list) = self.last_known.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            list.retain(|i| i.id != identity.id);
            list.push(identity.clone());
        }
        Ok(identity.id)
    }

    pub fn release(&self, id: u32, owner: &str) -> Result<()> {
        self.allocator.release(id, owner)?;
        Ok(())
    }

    /// Whether `id` is still allocated (a release may have freed it).
    pub fn exists(&self, id: u32) -> Result<bool> {
        Ok(self.allocator.get(id)?.is_some())
    }

    pub fn labels(&self, id: u32) -> Result<LabelSet> {
        // A number's labels never change while it is allocated.
        if let Some(known) = self.known(id) {
            return Ok(known);
        }
        Ok(self.allocator.get(id)?.map(|i| i.labels).unwrap_or_default())
    }

    pub fn lookup(&self, labels: &LabelSet) -> Result<Option<u32>> {
        Ok(self.allocator.lookup(labels)?)
    }

    pub fn owners(&self, id: u32) -> Result<Vec<String>> {
        Ok(self.allocator.owners(id)?)
    }

    pub fn allocated(&self) -> Result<Vec<Identity>> {
        let mut last = self.last_known.lock().unwrap_or_else(|p| p.into_inner());
        let mut failed_at = self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(list), Some(at)) = (&*last, *failed_at) {
            if at.elapsed() < RETRY_AFTER {
                return Ok(list.clone());
            }
        }
        match self.allocator.identities() {
            Ok(list) => {
                *last = Some(list.clone());
                *failed_at = None;
                Ok(list)
            }
            Err(e) => match {
                *failed_at = Some(std::time::Instant::now());
                &*last
            } {
                Some(list) => {
                    tracing::debug!("identities from the last read: {e}");
                    Ok(list.clone())
                }
                None => Err(e.into()),
            },
        }
    }

    /// Makes the CIDR identities exactly those for `prefixes`; returns
    /// whether anything changed.
    pub fn sync_cidrs(&mut self, prefixes: impl IntoIterator<Item = Prefix>) -> bool {
        self.cidrs.sync(prefixes)
    }

    /// (prefix, identity) of every CIDR identity, for the ipcache.
    pub fn cidr_entries(&self) -> impl Iterator<Item = (Prefix, u32)> + '_ {
        self.cidrs.0.iter().map(|(p, id)| (*p, *id))
    }

    fn known(&self, id: u32) -> Option<LabelSet> {
        let last = self.last_known.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()?.iter().find(|i| i.id == id).map(|i| i.labels.clone())
    }

    /// Every identity policy can refer to; with the local node's labels
    /// (cluster mode), node selectors that match them pick `host`.
    pub fn universe(&self, local_node: Option<LabelSet>) -> Result<Universe> {
        let mut all: Vec<KnownIdentity> = twill_identity::RESERVED
            .iter()
            .map(|(id, _)| KnownIdentity {
                id: *id,
                labels: twill_identity::reserved_labels(*id).unwrap_or_default(),
                kind: IdentityKind::Reserved,
            })
            .collect();
        let remote_node = Label::new("reserved", "remote-node", "");
        for identity in self.allocated()? {
            // Nodes' identities come from the same allocator; only they
            // carry a reserved label.
            let kind = if identity.labels.iter().any(|l| *l == remote_node) {
                IdentityKind::Node
            } else {
                IdentityKind::Endpoint
            };
            all.push(KnownIdentity { id: identity.id, labels: identity.labels, kind });
        }
        all.extend(self.cidrs.known());
        let universe = Universe::new(all);
        Ok(match local_node {
            Some(labels) => universe.with_local_node(labels),
            None => universe,
        })
    }
}

/// CIDR prefix -> node-local identity. Numbers are kept for as long as a
/// policy names the prefix, so unrelated policy changes do not renumber.
#[derive(Default, Debug)]
struct CidrIdentities(BTreeMap<Prefix, u32>);

impl CidrIdentities {
    fn sync(&mut self, prefixes: impl IntoIterator<Item = Prefix>) -> bool {
        // /0 is "world", a reserved identity, not a CIDR one.
        let wanted: BTreeSet<Prefix> = prefixes.into_iter().filter(|p| p.len > 0).collect();
        let before = self.0.len();
        self.0.retain(|p, _| wanted.contains(p));
        let mut changed = self.0.len() != before;
        for prefix in wanted {
            if !self.0.contains_key(&prefix) {
                let used: BTreeSet<u32> = self.0.values().copied().collect();
                let id = (FIRST_CIDR_IDENTITY + 1..).find(|n| !used.contains(n)).expect("identity space");
                self.0.insert(prefix, id);
                changed = true;
            }
        }
        changed
    }

    fn known(&self) -> impl Iterator<Item = KnownIdentity> + '_ {
        self.0.iter().map(|(prefix, id)| KnownIdentity {
            id: *id,
            labels: LabelSet::from_labels([
                Label::new("cidr", &prefix.to_string(), ""),
                Label::new("reserved", "world", ""),
            ]),
            kind: IdentityKind::Cidr(*prefix),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> Prefix {
        let (addr, len) = s.split_once('/').unwrap();
        Prefix::new(u32::from(addr.parse::<std::net::Ipv4Addr>().unwrap()), len.parse().unwrap())
    }

    #[test]
    fn cidr_identities_are_stable_and_forgotten_when_unused() {
        let mut c = CidrIdentities::default();
        assert!(c.sync([prefix("10.0.0.0/8"), prefix("0.0.0.0/0"), prefix("192.168.1.0/24")]));
        assert_eq!(c.0.len(), 2, "/0 is world, not a CIDR identity");
        let ten = c.0[&prefix("10.0.0.0/8")];
        assert!(ten > FIRST_CIDR_IDENTITY);
        assert!(!c.sync([prefix("10.0.0.0/8"), prefix("192.168.1.0/24")]), "same set: no change");
        assert!(c.sync([prefix("10.0.0.0/8"), prefix("172.16.0.0/12")]));
        assert_eq!(c.0[&prefix("10.0.0.0/8")], ten, "kept its number");
        assert!(!c.0.contains_key(&prefix("192.168.1.0/24")));
        let labels = c.known().map(|k| k.labels.to_strings()).collect::<Vec<_>>();
        assert!(labels.iter().any(|l| l.contains(&"cidr:10.0.0.0/8".to_string())), "{labels:?}");
    }
}
