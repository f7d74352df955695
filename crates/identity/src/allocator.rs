//! Identity allocation over a shared store.
//!
//! Layout (all under `identities/`):
//!   id/{N}              -> the label set of identity N
//!   labels/{canonical}  -> N
//!   refs/{N}/{owner}    -> "" (one key per endpoint using N)
//!
//! Every write that could race with another node is a `create` or a
//! compare-and-swap, so two nodes allocating the same labels at once end
//! up with the same number, and two nodes allocating different labels
//! never share one.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use twill_store::{Session, Store, StoreError, StoreExt};

use crate::{LabelSet, FIRST_ALLOCATED, LAST_ALLOCATED};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: u32,
    pub labels: LabelSet,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("all identities from {FIRST_ALLOCATED} to {LAST_ALLOCATED} are in use")]
    Exhausted,
    #[error("identity allocation kept racing with other writers; giving up after {0} attempts")]
    Contended(usize),
}

const MAX_ATTEMPTS: usize = 64;
/// How many free numbers past the lowest a retry may pick from.
const SPREAD: u64 = 64;

/// FNV-1a over the canonical labels and the attempt: differs between
/// label sets, so racing nodes pick different numbers on their retry.
fn spread_hash(labels: &LabelSet, attempt: usize) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in labels.canonical().bytes().chain(attempt.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

pub struct IdentityAllocator {
    store: Arc<dyn Store>,
    /// Cluster mode: references are bound to the node's lease, so a node
    /// that dies drops them by itself, and numbers are freed only by
    /// [`IdentityAllocator::collect_unused`], never by a release, which
    /// could race with another node taking the same labels.
    session: Option<Arc<Session>>,
    /// Numbers found unreferenced by the last collection, with the
    /// revision of their key: freed only if still so at the next.
    candidates: std::sync::Mutex<std::collections::BTreeMap<u32, u64>>,
}

fn id_key(id: u32) -> String {
    format!("identities/id/{id}")
}
fn labels_key(labels: &LabelSet) -> String {
    format!("identities/labels/{}", labels.canonical())
}
fn refs_prefix(id: u32) -> String {
    format!("identities/refs/{id}/")
}

impl IdentityAllocator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, session: None, candidates: Default::default() }
    }

    /// An allocator whose references live and die with `session`.
    pub fn with_session(store: Arc<dyn Store>, session: Arc<Session>) -> Self {
        Self { store, session: Some(session), candidates: Default::default() }
    }

    fn put_ref(&self, key: &str) -> Result<(), StoreError> {
        match &self.session {
            Some(session) => session.put(key, "").map(|_| ()),
            None => self.store.put(key, "").map(|_| ()),
        }
    }

    fn delete_ref(&self, key: &str) -> Result<(), StoreError> {
        match &self.session {
            Some(session) => session.delete(key).map(|_| ()),
            None => self.store.delete(key).map(|_| ()),
        }
    }

    /// Returns the identity for `labels`, allocating it if needed, and
    /// records `owner` (e.g. `node/endpoint-id`) as one of its users.
    pub fn acquire(&self, labels: &LabelSet, owner: &str) -> Result<Identity, AllocatorError> {
        for attempt in 0..MAX_ATTEMPTS {
            let id = match self.lookup(labels)? {
                Some(id) => id,
                None => match self.try_allocate(labels, attempt)? {
                    Some(id) => id,
                    None => continue,
                },
            };
            self.put_ref(&format!("{}{owner}", refs_prefix(id)))?;
            // A concurrent release may have freed the number between the
            // lookup and our reference; only a still-mapped id is ours.
            if self.lookup(labels)? == Some(id) {
                return Ok(Identity { id, labels: labels.clone() });
            }
            self.delete_ref(&format!("{}{owner}", refs_prefix(id)))?;
        }
        Err(AllocatorError::Contended(MAX_ATTEMPTS))
    }

    /// Drops `owner`'s use of `id`; frees the number when nobody uses it.
    /// Returns whether the identity was freed.
    pub fn release(&self, id: u32, owner: &str) -> Result<bool, AllocatorError> {
        self.delete_ref(&format!("{}{owner}", refs_prefix(id)))?;
        if self.session.is_some() || !self.store.list(&refs_prefix(id))?.is_empty() {
            return Ok(false);
        }
        let Some((labels, id_rev)) = self.store.get_json::<LabelSet>(&id_key(id))? else {
            return Ok(false);
        };
        if let Some(entry) = self.store.get(&labels_key(&labels))? {
            if entry.value == id.to_string() {
                self.store.compare_and_delete(&labels_key(&labels), entry.mod_revision)?;
            }
        }
        Ok(self.store.compare_and_delete(&id_key(id), id_rev)?)
    }

    pub fn lookup(&self, labels: &LabelSet) -> Result<Option<u32>, AllocatorError> {
        Ok(self.store.get(&labels_key(labels))?.and_then(|e| e.value.parse().ok()))
    }

    pub fn get(&self, id: u32) -> Result<Option<Identity>, AllocatorError> {
        Ok(self.store.get_json::<LabelSet>(&id_key(id))?.map(|(labels, _)| Identity { id, labels }))
    }

    /// Every allocated identity, in numeric order, with its user count.
    pub fn list(&self) -> Result<Vec<(Identity, usize)>, AllocatorError> {
        let mut out = Vec::new();
        for (key, labels) in self.store.list_json::<LabelSet>("identities/id/")? {
            let Some(id) = key.rsplit('/').next().and_then(|n| n.parse().ok()) else { continue };
            let users = self.store.list(&refs_prefix(id))?.len();
            out.push((Identity { id, labels }, users));
        }
        out.sort_by_key(|(i, _)| i.id);
        Ok(out)
    }

    /// Every allocated identity, in numeric order, in one read (no user
    /// counts): what policy resolution needs, cheap against etcd.
    pub fn identities(&self) -> Result<Vec<Identity>, AllocatorError> {
        let mut out: Vec<Identity> = self
            .store
            .list_json::<LabelSet>("identities/id/")?
            .into_iter()
            .filter_map(|(key, labels)| Some(Identity { id: key.rsplit('/').next()?.parse().ok()?, labels }))
            .collect();
        out.sort_by_key(|i| i.id);
        Ok(out)
    }

    /// Frees numbers nobody references (their owners released them or
    /// their nodes' leases lapsed): as Cilium's allocator does, a number
    /// goes only when two collections in a row found it unreferenced and
    /// unchanged, so a node that took it between them keeps it. Returns
    /// the numbers freed.
    pub fn collect_unused(&self) -> Result<Vec<u32>, AllocatorError> {
        let referenced: std::collections::BTreeSet<u32> = self
            .store
            .list("identities/refs/")?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix("identities/refs/")?.split('/').next()?.parse().ok())
            .collect();
        let mut unused = std::collections::BTreeMap::new();
        for (key, entry) in self.store.list("identities/id/")? {
            let Some(id) = key.rsplit('/').next().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if !referenced.contains(&id) {
                unused.insert(id, (entry.mod_revision, entry.value));
            }
        }
        let mut candidates = self.candidates.lock().unwrap_or_else(|p| p.into_inner());
        let mut freed = Vec::new();
        for (id, (revision, value)) in &unused {
            // Looked at again just before: a reference taken since the
            // listing above keeps the number.
            if candidates.get(id) != Some(revision) || !self.store.list(&refs_prefix(*id))?.is_empty() {
                continue;
            }
            if let Ok(labels) = serde_json::from_str::<LabelSet>(value) {
                if let Some(entry) = self.store.get(&labels_key(&labels))? {
                    if entry.value == id.to_string() {
                        self.store.compare_and_delete(&labels_key(&labels), entry.mod_revision)?;
                    }
                }
            }
            if self.store.compare_and_delete(&id_key(*id), *revision)? {
                freed.push(*id);
            }
        }
        *candidates = unused.into_iter().map(|(id, (rev, _))| (id, rev)).collect();
        Ok(freed)
    }

    /// The owners recorded for `id`.
    pub fn owners(&self, id: u32) -> Result<Vec<String>, AllocatorError> {
        let prefix = refs_prefix(id);
        Ok(self.store.list(&prefix)?.into_iter().map(|(k, _)| k[prefix.len()..].to_string()).collect())
    }

    /// Claims a free number for `labels`: the lowest at the first attempt,
    /// so one node alone numbers 256, 257, ...; after a lost race, one of
    /// the next free numbers picked by the labels and the attempt, so
    /// nodes allocating at once spread out instead of all racing for the
    /// same lowest number again. `None` means another writer got there
    /// first and the caller should look again.
    fn try_allocate(&self, labels: &LabelSet, attempt: usize) -> Result<Option<u32>, AllocatorError> {
        let used: std::collections::BTreeSet<u32> = self
            .store
            .list("identities/id/")?
            .into_iter()
            .filter_map(|(k, _)| k.rsplit('/').next().and_then(|n| n.parse().ok()))
            .collect();
        let spread = if attempt == 0 { 0 } else { (spread_hash(labels, attempt) % SPREAD) as usize };
        let mut free = (FIRST_ALLOCATED..=LAST_ALLOCATED).filter(|n| !used.contains(n));
        let first = free.next().ok_or(AllocatorError::Exhausted)?;
        let id = free.take(spread).last().unwrap_or(first);
        if !self.store.create_json(&id_key(id), labels)? {
            return Ok(None);
        }
        if self.store.create(&labels_key(labels), &id.to_string())? {
            return Ok(Some(id));
        }
        // Someone mapped these labels meanwhile: give our number back.
        self.store.delete(&id_key(id))?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twill_store::FileStore;

    fn allocator(name: &str) -> (IdentityAllocator, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("twill-ident-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(FileStore::open(&dir).unwrap());
        (IdentityAllocator::new(store), dir)
    }

    fn labels(s: &str) -> LabelSet {
        LabelSet::parse_list([s]).unwrap()
    }

    #[test]
    fn equal_labels_share_a_number_starting_at_256() {
        let (alloc, dir) = allocator("share");
        let a = alloc.acquire(&labels("app=web"), "n/1").unwrap();
        let b = alloc.acquire(&labels("app=web"), "n/2").unwrap();
        let c = alloc.acquire(&labels("app=db"), "n/3").unwrap();
        assert_eq!(a.id, 256);
        assert_eq!(b.id, 256);
        assert_eq!(c.id, 257);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn released_only_when_the_last_user_goes_and_number_is_reused() {
        let (alloc, dir) = allocator("release");
        let web = alloc.acquire(&labels("app=web"), "n/1").unwrap();
        alloc.acquire(&labels("app=web"), "n/2").unwrap();
        assert!(!alloc.release(web.id, "n/1").unwrap());
        assert!(alloc.get(web.id).unwrap().is_some());
        assert!(alloc.release(web.id, "n/2").unwrap());
        assert!(alloc.get(web.id).unwrap().is_none());
        assert_eq!(alloc.lookup(&labels("app=web")).unwrap(), None);
        let db = alloc.acquire(&labels("app=db"), "n/3").unwrap();
        assert_eq!(db.id, 256, "the freed number is handed out again");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn list_reports_users() {
        let (alloc, dir) = allocator("list");
        alloc.acquire(&labels("app=web"), "n/1").unwrap();
        alloc.acquire(&labels("app=web"), "n/2").unwrap();
        alloc.acquire(&labels("app=db"), "n/3").unwrap();
        let listed: Vec<(u32, usize)> = alloc.list().unwrap().into_iter().map(|(i, n)| (i.id, n)).collect();
        assert_eq!(listed, vec![(256, 2), (257, 1)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_allocators_agree() {
        let (alloc, dir) = allocator("race");
        let alloc = Arc::new(alloc);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let alloc = alloc.clone();
                std::thread::spawn(move || {
                    let set = labels(&format!("app=a{}", i % 3));
                    (i % 3, alloc.acquire(&set, &format!("n/{i}")).unwrap().id)
                })
            })
            .collect();
        let mut by_labels = std::collections::HashMap::new();
        for h in handles {
            let (group, id) = h.join().unwrap();
            assert_eq!(*by_labels.entry(group).or_insert(id), id);
        }
        let distinct: std::collections::HashSet<u32> = by_labels.values().copied().collect();
        assert_eq!(distinct.len(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
