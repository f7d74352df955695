//! The embedded backend: the whole key space in memory, persisted to one
//! JSON file that is replaced atomically (write, fsync, rename) on every
//! change. State is small (endpoints, identities, IPs on one host), so a
//! full rewrite per change costs well under a millisecond and a crash can
//! only ever leave the previous or the next complete state on disk.
//!
//! Watches and leases live in memory only. Watchers are fed after a change
//! is on disk, so a watcher never sees a change a crash could undo. There is
//! no history: a watch can start now or at the next revision, never in the
//! past. A lease belongs to this process, as an etcd lease belongs to a live
//! client, so keys written under a lease are dropped when the store is
//! opened again.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{sync_channel, SyncSender, TrySendError},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{Entry, LeaseId, Store, StoreError, Watch, WatchEvent, WATCH_CAPACITY};

const DATA_FILE: &str = "store.json";
const LOCK_FILE: &str = "store.lock";

#[derive(Default, Clone, Serialize, Deserialize)]
struct Snapshot {
    revision: u64,
    entries: BTreeMap<String, StoredEntry>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredEntry {
    value: String,
    mod_revision: u64,
    // Recorded so that a reopened store can drop what a dead process held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseId>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
}

struct Subscriber {
    prefix: String,
    from_revision: u64,
    events: SyncSender<Result<WatchEvent, StoreError>>,
    overflowed: Arc<AtomicBool>,
}

struct State {
    snapshot: Snapshot,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease: LeaseId,
    subscribers: Vec<Subscriber>,
}

/// A change being prepared on a copy of the snapshot. The revision is
/// taken on the first write, so one call (a batch, a prefix delete, a lease
/// expiry) is one revision, as one etcd transaction is.
struct Pending {
    snapshot: Snapshot,
    events: Vec<WatchEvent>,
    written: bool,
}

impl Pending {
    fn new(snapshot: &Snapshot) -> Self {
        Self { snapshot: snapshot.clone(), events: Vec::new(), written: false }
    }

    fn revision(&mut self) -> u64 {
        if !self.written {
            self.snapshot.revision += 1;
            self.written = true;
        }
        self.snapshot.revision
    }

    fn put(&mut self, key: &str, value: &str, lease: Option<LeaseId>) -> u64 {
        let revision = self.revision();
        self.snapshot
            .entries
            .insert(key.to_string(), StoredEntry { value: value.to_string(), mod_revision: revision, lease });
        self.events.push(WatchEvent::Put {
            key: key.to_string(),
            value: value.to_string(),
            mod_revision: revision,
        });
        revision
    }

    fn remove(&mut self, key: &str) -> bool {
        if !self.snapshot.entries.contains_key(key) {
            return false;
        }
        let revision = self.revision();
        self.snapshot.entries.remove(key);
        self.events.push(WatchEvent::Delete { key: key.to_string(), mod_revision: revision });
        true
    }

    fn get(&self, key: &str) -> Option<&StoredEntry> {
        self.snapshot.entries.get(key)
    }
}

pub struct FileStore {
    dir: PathBuf,
    path: PathBuf,
    state: Mutex<State>,
    // Held for the store's lifetime: the kernel drops the flock with it.
    _lock: File,
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`. Fails if another
    /// process holds the directory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(&lock_path, e))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let pid = fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(StoreError::Locked { path: dir.display().to_string(), pid: pid.trim().to_string() });
        }
        lock.set_len(0).map_err(|e| io(&lock_path, e))?;
        write!(lock, "{}", std::process::id()).map_err(|e| io(&lock_path, e))?;

        let path = dir.join(DATA_FILE);
        let snapshot: Snapshot = match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(io(&path, e)),
        };
        let store = Self {
            dir: dir.to_path_buf(),
            path,
            state: Mutex::new(State {
                snapshot,
                leases: BTreeMap::new(),
                next_lease: 1,
                subscribers: Vec::new(),
            }),
            _lock: lock,
        };
        // The leases of the process that wrote these keys died with it.
        {
            let mut state = store.lock_raw();
            let mut pending = Pending::new(&state.snapshot);
            let leased: Vec<String> = state
                .snapshot
                .entries
                .iter()
                .filter(|(_, e)| e.lease.is_some())
                .map(|(k, _)| k.clone())
                .collect();
            for key in &leased {
                pending.remove(key);
            }
            store.commit(&mut state, pending)?;
        }
        Ok(store)
    }

    fn lock_raw(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("store mutex poisoned")
    }

    /// The state, after expiring every lease whose deadline has passed:
    /// there is no timer thread, so every call does it first.
    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let mut state = self.lock_raw();
        let now = Instant::now();
        let expired: Vec<LeaseId> =
            state.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            state.leases.remove(&id);
            self.drop_lease_keys(&mut state, id)?;
        }
        Ok(state)
    }

    fn drop_lease_keys(&self, state: &mut State, lease: LeaseId) -> Result<(), StoreError> {
        let mut pending = Pending::new(&state.snapshot);
        let keys: Vec<String> = state
            .snapshot
            .entries
            .iter()
            .filter(|(_, e)| e.lease == Some(lease))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            pending.remove(key);
        }
        self.commit(state, pending)
    }

    /// Runs `change` on a copy of the state; persists and commits it only if
    /// it wrote something and the write to disk succeeds.
    fn mutate<T>(
        &self,
        change: impl FnOnce(&mut Pending, &BTreeMap<LeaseId, Lease>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.lock()?;
        let mut pending = Pending::new(&state.snapshot);
        let result = change(&mut pending, &state.leases)?;
        self.commit(&mut state, pending)?;
        Ok(result)
    }

    fn commit(&self, state: &mut State, pending: Pending) -> Result<(), StoreError> {
        if !pending.written {
            return Ok(());
        }
        self.persist(&pending.snapshot)?;
        state.snapshot = pending.snapshot;
        // Sent under the lock, so every watcher sees changes in revision order.
        state.subscribers.retain(|sub| {
            for event in pending.events.iter().filter(|e| e.key().starts_with(&sub.prefix)) {
                if event.mod_revision() < sub.from_revision {
                    continue;
                }
                match sub.events.try_send(Ok(event.clone())) {
                    Ok(()) => {}
                    Err(TrySendError::Disconnected(_)) => return false,
                    // Blocking here would stall every writer behind one slow
                    // reader; ending its watch makes it re-list instead.
                    Err(TrySendError::Full(_)) => {
                        sub.overflowed.store(true, Ordering::Release);
                        return false;
                    }
                }
            }
            true
        });
        Ok(())
    }

    fn persist(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec(snapshot).expect("snapshot serializes");
        let mut file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        file.write_all(&text).map_err(|e| io(&tmp, e))?;
        file.sync_all().map_err(|e| io(&tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))?;
        Ok(())
    }
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

fn entry(e: &StoredEntry) -> Entry {
    Entry { value: e.value.clone(), mod_revision: e.mod_revision }
}

fn check_lease(leases: &BTreeMap<LeaseId, Lease>, lease: LeaseId) -> Result<(), StoreError> {
    if leases.contains_key(&lease) {
        Ok(())
    } else {
        Err(StoreError::LeaseNotFound(lease))
    }
}

impl Store for FileStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let state = self.lock()?;
        Ok(state.snapshot.entries.get(key).map(entry))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError> {
        Ok(self.list_at(prefix)?.0)
    }

    fn put(&self, key: &str, value: &str) -> Result<u64, StoreError> {
        self.mutate(|p, _| Ok(p.put(key, value, None)))
    }

    fn create(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        self.mutate(|p, _| {
            if p.get(key).is_some() {
                return Ok(false);
            }
            p.put(key, value, None);
            Ok(true)
        })
    }

    fn compare_and_swap(&self, key: &str, expected: u64, value: &str) -> Result<bool, StoreError> {
        self.mutate(|p, _| match p.get(key) {
            Some(e) if e.mod_revision == expected => {
                // Like an etcd put without a lease, a swap detaches the key
                // from the lease it had.
                p.put(key, value, None);
                Ok(true)
            }
            _ => Ok(false),
        })
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.mutate(|p, _| Ok(p.remove(key)))
    }

    fn compare_and_delete(&self, key: &str, expected: u64) -> Result<bool, StoreError> {
        self.mutate(|p, _| match p.get(key) {
            Some(e) if e.mod_revision == expected => Ok(p.remove(key)),
            _ => Ok(false),
        })
    }

    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        self.mutate(|p, _| {
            let keys: Vec<String> = p
                .snapshot
                .entries
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for key in &keys {
                p.remove(key);
            }
            Ok(keys.len())
        })
    }

    fn write_batch(&self, puts: &[(String, String)], deletes: &[String]) -> Result<u64, StoreError> {
        self.mutate(|p, _| {
            for key in deletes {
                // A key both deleted and written ends up written. etcd refuses
                // a transaction naming a key twice; the etcd backend drops
                // such deletes the same way.
                if !puts.iter().any(|(k, _)| k == key) {
                    p.remove(key);
                }
            }
            for (key, value) in puts {
                p.put(key, value, None);
            }
            Ok(p.snapshot.revision)
        })
    }

    fn list_at(&self, prefix: &str) -> Result<(Vec<(String, Entry)>, u64), StoreError> {
        let state = self.lock()?;
        let entries = state
            .snapshot
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), entry(e)))
            .collect();
        Ok((entries, state.snapshot.revision))
    }

    fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError> {
        let mut state = self.lock()?;
        let next = state.snapshot.revision + 1;
        // No history is kept: only "from now" can be served, and a start in
        // the future is served by skipping events until then.
        if from_revision != 0 && from_revision < next {
            return Err(StoreError::Compacted { revision: state.snapshot.revision });
        }
        let (tx, rx) = sync_channel(WATCH_CAPACITY);
        let overflowed = Arc::new(AtomicBool::new(false));
        state.subscribers.push(Subscriber {
            prefix: prefix.to_string(),
            from_revision: from_revision.max(next),
            events: tx,
            overflowed: overflowed.clone(),
        });
        Ok(Watch::new(prefix, rx, overflowed, None))
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let mut state = self.lock()?;
        let id = state.next_lease;
        state.next_lease += 1;
        state.leases.insert(id, Lease { ttl, deadline: Instant::now() + ttl });
        Ok(id)
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        match state.leases.get_mut(&lease) {
            Some(l) => {
                l.deadline = Instant::now() + l.ttl;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if state.leases.remove(&lease).is_none() {
            return Err(StoreError::LeaseNotFound(lease));
        }
        self.drop_lease_keys(&mut state, lease)
    }

    fn put_leased(&self, key: &str, value: &str, lease: LeaseId) -> Result<u64, StoreError> {
        self.mutate(|p, leases| {
            check_lease(leases, lease)?;
            Ok(p.put(key, value, Some(lease)))
        })
    }

    fn create_leased(&self, key: &str, value: &str, lease: LeaseId) -> Result<bool, StoreError> {
        self.mutate(|p, leases| {
            // Existence first, as etcd's transaction compares before it
            // looks at the lease of the put it would run.
            if p.get(key).is_some() {
                return Ok(false);
            }
            check_lease(leases, lease)?;
            p.put(key, value, Some(lease));
            Ok(true)
        })
    }

    fn describe(&self) -> String {
        format!("file {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("twill-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_batch_is_one_revision_and_survives_reopen() {
        let dir = temp_dir("batch");
        {
            let store = FileStore::open(&dir).unwrap();
            store.put("s/gone", "x").unwrap();
            let puts: Vec<(String, String)> = (0..3).map(|i| (format!("s/{i}"), i.to_string())).collect();
            let revision = store.write_batch(&puts, &["s/gone".to_string()]).unwrap();
            assert_eq!(revision, 2);
            assert!(store.list("s/").unwrap().iter().all(|(_, e)| e.mod_revision == 2));
        }
        let store = FileStore::open(&dir).unwrap();
        let keys: Vec<String> = store.list("s/").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["s/0", "s/1", "s/2"]);
        assert_eq!(store.write_batch(&[], &["s/absent".into()]).unwrap(), 2, "nothing changed");
    }

    #[test]
    fn values_survive_reopen() {
        let dir = temp_dir("reopen");
        {
            let store = FileStore::open(&dir).unwrap();
            store.put("a/1", "one").unwrap();
            store.put("a/2", "two").unwrap();
            store.put("b/1", "other").unwrap();
        }
        let store = FileStore::open(&dir).unwrap();
        let listed: Vec<String> = store.list("a/").unwrap().into_iter().map(|(_, e)| e.value).collect();
        assert_eq!(listed, vec!["one", "two"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn create_refuses_existing_keys_and_cas_checks_revision() {
        let dir = temp_dir("cas");
        let store = FileStore::open(&dir).unwrap();
        assert!(store.create("k", "v1").unwrap());
        assert!(!store.create("k", "v2").unwrap());
        let rev = store.get("k").unwrap().unwrap().mod_revision;
        assert!(!store.compare_and_swap("k", rev + 7, "v3").unwrap());
        assert!(store.compare_and_swap("k", rev, "v3").unwrap());
        assert_eq!(store.get("k").unwrap().unwrap().value, "v3");
        assert!(!store.compare_and_delete("k", rev).unwrap());
        let rev = store.get("k").unwrap().unwrap().mod_revision;
        assert!(store.compare_and_delete("k", rev).unwrap());
        assert!(store.get("k").unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = temp_dir("lock");
        let _first = FileStore::open(&dir).unwrap();
        match FileStore::open(&dir) {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_reported_not_replaced() {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(DATA_FILE), "{not json").unwrap();
        assert!(matches!(FileStore::open(&dir), Err(StoreError::Corrupt { .. })));
        assert_eq!(fs::read_to_string(dir.join(DATA_FILE)).unwrap(), "{not json");
        fs::remove_dir_all(&dir).unwrap();
    }

    const SOON: Duration = Duration::from_secs(2);

    fn next(watch: &Watch) -> WatchEvent {
        watch.recv_timeout(SOON).unwrap().expect("an event within 2 s")
    }

    #[test]
    fn watch_sees_puts_and_deletes_in_order_under_its_prefix() {
        let dir = temp_dir("watch");
        let store = FileStore::open(&dir).unwrap();
        let watch = store.watch("w/", 0).unwrap();
        let r1 = store.put("w/a", "1").unwrap();
        store.put("other/x", "ignored").unwrap();
        let r2 = store.put("w/b", "2").unwrap();
        assert!(store.delete("w/a").unwrap());
        let r4 = store.get("w/b").unwrap().unwrap().mod_revision + 2;
        let puts = vec![("w/c".to_string(), "3".to_string())];
        let rb = store.write_batch(&puts, &["w/b".to_string()]).unwrap();
        assert_eq!(rb, r4);
        assert_eq!(next(&watch), WatchEvent::Put { key: "w/a".into(), value: "1".into(), mod_revision: r1 });
        assert_eq!(next(&watch), WatchEvent::Put { key: "w/b".into(), value: "2".into(), mod_revision: r2 });
        assert_eq!(next(&watch), WatchEvent::Delete { key: "w/a".into(), mod_revision: r2 + 1 });
        assert_eq!(next(&watch), WatchEvent::Delete { key: "w/b".into(), mod_revision: rb });
        assert_eq!(next(&watch), WatchEvent::Put { key: "w/c".into(), value: "3".into(), mod_revision: rb });
        assert_eq!(watch.recv_timeout(Duration::from_millis(20)).unwrap(), None);
        assert_eq!(store.delete_prefix("w/").unwrap(), 1);
        assert_eq!(next(&watch), WatchEvent::Delete { key: "w/c".into(), mod_revision: rb + 1 });
        drop(store);
        assert!(matches!(watch.recv_timeout(SOON), Err(StoreError::WatchEnded { .. })), "store closed");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn list_at_then_watch_from_the_next_revision_misses_nothing() {
        let dir = temp_dir("gapless");
        let store = FileStore::open(&dir).unwrap();
        store.put("g/1", "a").unwrap();
        store.put("g/2", "b").unwrap();
        let (listed, revision) = store.list_at("g/").unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(revision, 2);
        let watch = store.watch("g/", revision + 1).unwrap();
        store.put("g/3", "c").unwrap();
        assert_eq!(next(&watch), WatchEvent::Put { key: "g/3".into(), value: "c".into(), mod_revision: 3 });
        // The file store keeps no history: an older start is compacted away.
        assert!(matches!(store.watch("g/", revision), Err(StoreError::Compacted { revision: 3 })));
        // A start in the future waits for it.
        let later = store.watch("g/", 5).unwrap();
        store.put("g/4", "d").unwrap();
        store.put("g/5", "e").unwrap();
        assert_eq!(next(&later).mod_revision(), 5);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reader_that_falls_behind_loses_its_watch_not_the_writers() {
        let dir = temp_dir("overflow");
        let store = FileStore::open(&dir).unwrap();
        let watch = store.watch("o/", 0).unwrap();
        let puts: Vec<(String, String)> =
            (0..WATCH_CAPACITY + 1).map(|i| (format!("o/{i:06}"), "x".into())).collect();
        store.write_batch(&puts, &[]).unwrap();
        for _ in 0..WATCH_CAPACITY {
            next(&watch);
        }
        let e = watch.recv_timeout(SOON).unwrap_err();
        assert!(e.to_string().contains("not read in time"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_expired_lease_deletes_its_keys_and_emits_deletes() {
        let dir = temp_dir("expiry");
        let store = FileStore::open(&dir).unwrap();
        // Long enough for the writes below on a loaded machine (each one fsyncs).
        let lease = store.grant_lease(Duration::from_secs(1)).unwrap();
        assert!(store.put_leased("l/a", "1", lease).unwrap() > 0);
        assert!(store.create_leased("l/b", "2", lease).unwrap());
        assert!(!store.create_leased("l/b", "3", lease).unwrap());
        store.put("l/plain", "stays").unwrap();
        // Overwritten without the lease: no longer bound to it.
        store.put_leased("l/c", "4", lease).unwrap();
        store.put("l/c", "5").unwrap();
        let watch = store.watch("l/", 0).unwrap();
        assert!(store.keep_alive(lease).unwrap());
        let start = Instant::now();
        while store.get("l/a").unwrap().is_some() {
            assert!(start.elapsed() < Duration::from_secs(10), "lease did not expire");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(start.elapsed() >= Duration::from_millis(900), "renewed by keep_alive");
        let keys: Vec<String> = store.list("l/").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["l/c", "l/plain"]);
        let (a, b) = (next(&watch), next(&watch));
        assert!(matches!(&a, WatchEvent::Delete { key, .. } if key == "l/a"), "{a:?}");
        assert!(matches!(&b, WatchEvent::Delete { key, .. } if key == "l/b"), "{b:?}");
        assert_eq!(a.mod_revision(), b.mod_revision(), "one expiry, one revision");
        assert!(!store.keep_alive(lease).unwrap());
        assert!(
            matches!(store.put_leased("l/d", "x", lease), Err(StoreError::LeaseNotFound(l)) if l == lease)
        );
        assert!(matches!(store.revoke_lease(lease), Err(StoreError::LeaseNotFound(_))));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn revoking_a_lease_deletes_its_keys() {
        let dir = temp_dir("revoke");
        let store = FileStore::open(&dir).unwrap();
        let lease = store.grant_lease(Duration::from_secs(60)).unwrap();
        let other = store.grant_lease(Duration::from_secs(60)).unwrap();
        assert_ne!(lease, other);
        store.put_leased("r/a", "1", lease).unwrap();
        store.put_leased("r/b", "2", other).unwrap();
        store.revoke_lease(lease).unwrap();
        assert!(store.get("r/a").unwrap().is_none());
        assert!(store.get("r/b").unwrap().is_some());
        assert!(store.keep_alive(other).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leased_keys_are_gone_after_reopen() {
        let dir = temp_dir("leased-reopen");
        {
            let store = FileStore::open(&dir).unwrap();
            let lease = store.grant_lease(Duration::from_secs(60)).unwrap();
            store.put_leased("n/node-a", "up", lease).unwrap();
            store.put("n/config", "kept").unwrap();
        }
        let store = FileStore::open(&dir).unwrap();
        let keys: Vec<String> = store.list("n/").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["n/config"]);
        let (_, revision) = store.list_at("").unwrap();
        assert_eq!(revision, 3, "the drop at open is a revision of its own");
        drop(store);
        // Nothing leased is left on disk either.
        let store = FileStore::open(&dir).unwrap();
        assert_eq!(store.list_at("").unwrap().1, 3);
        assert_eq!(store.describe(), format!("file {}", dir.display()));
        fs::remove_dir_all(&dir).unwrap();
    }
}
