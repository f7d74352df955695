//! The embedded backend: the whole key space in memory, persisted to one
//! JSON file that is replaced atomically (write, fsync, rename) on every
//! change. State is small (endpoints, identities, IPs on one host), so a
//! full rewrite per change costs well under a millisecond and a crash can
//! only ever leave the previous or the next complete state on disk.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use crate::{Entry, Store, StoreError};

const DATA_FILE: &str = "store.json";
const LOCK_FILE: &str = "store.lock";

#[derive(Default, Serialize, Deserialize)]
struct Snapshot {
    revision: u64,
    entries: BTreeMap<String, StoredEntry>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredEntry {
    value: String,
    mod_revision: u64,
}

pub struct FileStore {
    path: PathBuf,
    state: Mutex<Snapshot>,
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
        let snapshot = match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(io(&path, e)),
        };
        Ok(Self { path, state: Mutex::new(snapshot), _lock: lock })
    }

    /// Runs `change` on the state; persists and commits it only if it
    /// reports a modification and the write succeeds.
    fn mutate<T>(&self, change: impl FnOnce(&mut Snapshot) -> (bool, T)) -> Result<T, StoreError> {
        let mut guard = self.state.lock().expect("store mutex poisoned");
        let mut next = Snapshot { revision: guard.revision, entries: guard.entries.clone() };
        let (modified, result) = change(&mut next);
        if modified {
            self.persist(&next)?;
            *guard = next;
        }
        Ok(result)
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

fn write_entry(snapshot: &mut Snapshot, key: &str, value: &str) -> u64 {
    snapshot.revision += 1;
    let revision = snapshot.revision;
    snapshot
        .entries
        .insert(key.to_string(), StoredEntry { value: value.to_string(), mod_revision: revision });
    revision
}

impl Store for FileStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let guard = self.state.lock().expect("store mutex poisoned");
        Ok(guard.entries.get(key).map(|e| Entry { value: e.value.clone(), mod_revision: e.mod_revision }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError> {
        let guard = self.state.lock().expect("store mutex poisoned");
        Ok(guard
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), Entry { value: e.value.clone(), mod_revision: e.mod_revision }))
            .collect())
    }

    fn put(&self, key: &str, value: &str) -> Result<u64, StoreError> {
        self.mutate(|s| (true, write_entry(s, key, value)))
    }

    fn create(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        self.mutate(|s| {
            if s.entries.contains_key(key) {
                (false, false)
            } else {
                write_entry(s, key, value);
                (true, true)
            }
        })
    }

    fn compare_and_swap(&self, key: &str, expected: u64, value: &str) -> Result<bool, StoreError> {
        self.mutate(|s| match s.entries.get(key) {
            Some(e) if e.mod_revision == expected => {
                write_entry(s, key, value);
                (true, true)
            }
            _ => (false, false),
        })
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.mutate(|s| {
            let existed = s.entries.remove(key).is_some();
            (existed, existed)
        })
    }

    fn compare_and_delete(&self, key: &str, expected: u64) -> Result<bool, StoreError> {
        self.mutate(|s| match s.entries.get(key) {
            Some(e) if e.mod_revision == expected => {
                s.entries.remove(key);
                (true, true)
            }
            _ => (false, false),
        })
    }

    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        self.mutate(|s| {
            let keys: Vec<String> = s.entries.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
            for key in &keys {
                s.entries.remove(key);
            }
            (!keys.is_empty(), keys.len())
        })
    }

    fn write_batch(&self, puts: &[(String, String)], deletes: &[String]) -> Result<u64, StoreError> {
        self.mutate(|s| {
            let mut modified = !puts.is_empty();
            for key in deletes {
                modified |= s.entries.remove(key).is_some();
            }
            // One revision for the whole batch, as etcd gives a transaction.
            if modified {
                s.revision += 1;
            }
            let revision = s.revision;
            for (key, value) in puts {
                s.entries.insert(key.clone(), StoredEntry { value: value.clone(), mod_revision: revision });
            }
            (modified, revision)
        })
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
}
