//! The state store behind every Twill mode.
//!
//! The trait is shaped after etcd v3 so the embedded backend (standalone
//! mode) and a shared backend (cluster mode) are interchangeable: every key
//! carries a modification revision, and writes that must not race are
//! compare-and-swap operations on that revision. Callers that allocate
//! shared numbers (identities, IPs) use `create` and `compare_and_*`, never
//! read-then-write.
//!
//! Keys a node owns only while it is alive are written under a lease
//! (see [`Session`]); other nodes follow changes with [`Store::list_at`]
//! followed by [`Store::watch`] from the revision after the listing.
//!
//! The trait is synchronous on purpose: the agent calls it from plain
//! threads, and the etcd backend hides its own runtime.

mod etcd;
mod file;
mod session;

pub use etcd::{EtcdOptions, EtcdStore};
pub use file::FileStore;
pub use session::{Session, SessionStatus};

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
        Arc, Mutex,
    },
    time::Duration,
};

use serde::{de::DeserializeOwned, Serialize};

/// A lease, as etcd numbers them.
pub type LeaseId = i64;

/// How many undelivered events a watch holds before it is ended (file
/// store) or before the etcd stream stops being read (etcd store).
pub(crate) const WATCH_CAPACITY: usize = 16 * 1024;

/// A stored value and the store revision at which it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub mod_revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state store file {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("state directory {path} is in use by another agent (pid {pid})")]
    Locked { path: String, pid: String },
    #[error("value under {key} is not valid JSON for its type: {reason}")]
    Decode { key: String, reason: String },
    /// etcd did not answer: connection refused, no leader, or no reply
    /// within the operation timeout.
    #[error(
        "the kvstore at {endpoints} is unreachable ({reason}); the change was not made: \
         check that etcd is running and reachable, then retry"
    )]
    Unavailable { endpoints: String, reason: String },
    /// etcd answered with an error other than unavailability.
    #[error("etcd {op} failed: {source}")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    /// The history a watch asked for is gone.
    #[error("store revision {revision} is compacted: list again and watch from the listed revision + 1")]
    Compacted { revision: u64 },
    #[error("lease {0:x} does not exist (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// A watch stopped for a reason other than compaction or an
    /// unreachable store; the caller lists again and watches anew.
    #[error("the watch on {prefix:?} ended: {reason}")]
    WatchEnded { prefix: String, reason: String },
    #[error("etcd TLS file {path}: {source}")]
    TlsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd TLS file {path} is not valid: {reason}")]
    TlsInvalid { path: String, reason: String },
    #[error("etcd options are not valid: {0}")]
    Config(String),
    #[error("could not start the etcd client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the store session was closed")]
    SessionClosed,
}

/// One change under a watched prefix. `mod_revision` of a delete is the
/// revision of the deletion, as in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put { key: String, value: String, mod_revision: u64 },
    Delete { key: String, mod_revision: u64 },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put { key, .. } | WatchEvent::Delete { key, .. } => key,
        }
    }

    pub fn mod_revision(&self) -> u64 {
        match self {
            WatchEvent::Put { mod_revision, .. } | WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Changes under one prefix, in revision order. Dropping it cancels the watch.
pub struct Watch {
    prefix: String,
    // In a mutex only so that a Watch is Sync and can sit in shared state.
    events: Mutex<Receiver<Result<WatchEvent, StoreError>>>,
    // Set by a producer that gave up on a full channel, so the end of the
    // channel can say why.
    overflowed: Arc<AtomicBool>,
    // Whatever keeps the producer running; dropped with the watch.
    _cancel: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Watch {
    pub(crate) fn new(
        prefix: &str,
        events: Receiver<Result<WatchEvent, StoreError>>,
        overflowed: Arc<AtomicBool>,
        cancel: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Self { prefix: prefix.to_string(), events: Mutex::new(events), overflowed, _cancel: cancel }
    }

    /// The prefix this watch follows.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Ok(Some(ev)): next event. Ok(None): nothing within `timeout`.
    /// Err(_): the watch is over (connection lost, revision compacted, store closed);
    /// the caller re-lists and watches again.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<WatchEvent>, StoreError> {
        let events = self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match events.recv_timeout(timeout) {
            Ok(Ok(event)) => Ok(Some(event)),
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                let reason = if self.overflowed.load(Ordering::Acquire) {
                    format!("more than {WATCH_CAPACITY} events were not read in time")
                } else {
                    "the store was closed".to_string()
                };
                Err(StoreError::WatchEnded { prefix: self.prefix.clone(), reason })
            }
        }
    }
}

/// A key-value store with etcd's consistency primitives.
pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;
    /// All entries whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError>;
    /// Writes unconditionally; returns the new revision.
    fn put(&self, key: &str, value: &str) -> Result<u64, StoreError>;
    /// Writes only if the key does not exist. Returns false if it does.
    fn create(&self, key: &str, value: &str) -> Result<bool, StoreError>;
    /// Writes only if the key's current revision is `expected`.
    fn compare_and_swap(&self, key: &str, expected: u64, value: &str) -> Result<bool, StoreError>;
    /// Deletes unconditionally; returns whether the key existed.
    fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Deletes only if the key's current revision is `expected`.
    fn compare_and_delete(&self, key: &str, expected: u64) -> Result<bool, StoreError>;
    /// Deletes every key under `prefix`; returns how many.
    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError>;
    /// Writes `puts` and deletes `deletes` as one atomic step (an etcd
    /// transaction without conditions): a reader sees all of them or none.
    /// Returns the new revision.
    fn write_batch(&self, puts: &[(String, String)], deletes: &[String]) -> Result<u64, StoreError>;

    /// Entries under `prefix` and the store revision they were read at,
    /// so `watch(prefix, revision + 1)` misses nothing and repeats nothing.
    fn list_at(&self, prefix: &str) -> Result<(Vec<(String, Entry)>, u64), StoreError>;
    /// Events under `prefix` from `from_revision` on (0: from now).
    fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError>;
    /// Grants a lease that lives `ttl` unless renewed. etcd rounds the TTL
    /// up to whole seconds (and to its own minimum, 3 s by default).
    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Renews once; Ok(false) if the lease no longer exists (expired or revoked).
    fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError>;
    /// Revokes; every key attached to it is deleted. `LeaseNotFound` if it
    /// was already gone.
    fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// `put` bound to a lease: the key goes when the lease does.
    /// `LeaseNotFound` if the lease is gone.
    fn put_leased(&self, key: &str, value: &str, lease: LeaseId) -> Result<u64, StoreError>;
    /// create (only if absent) bound to a lease.
    fn create_leased(&self, key: &str, value: &str, lease: LeaseId) -> Result<bool, StoreError>;
    /// One line for `twill status`: "file /var/lib/twill/state" or "etcd http://a:2379,...".
    fn describe(&self) -> String;
}

/// Typed helpers over any store, for values stored as JSON.
pub trait StoreExt: Store {
    fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, StoreError> {
        match self.get(key)? {
            None => Ok(None),
            Some(entry) => Ok(Some((decode(key, &entry.value)?, entry.mod_revision))),
        }
    }

    fn list_json<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        self.list(prefix)?
            .into_iter()
            .map(|(key, entry)| {
                let value = decode(&key, &entry.value)?;
                Ok((key, value))
            })
            .collect()
    }

    fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<u64, StoreError> {
        self.put(key, &encode(value))
    }

    fn create_json<T: Serialize>(&self, key: &str, value: &T) -> Result<bool, StoreError> {
        self.create(key, &encode(value))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

fn decode<T: DeserializeOwned>(key: &str, value: &str) -> Result<T, StoreError> {
    serde_json::from_str(value)
        .map_err(|e| StoreError::Decode { key: key.to_string(), reason: e.to_string() })
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("store values are plain data and always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_watches_and_sessions_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Watch>();
        shared::<Session>();
        shared::<FileStore>();
        shared::<EtcdStore>();
        shared::<StoreError>();
    }
}
