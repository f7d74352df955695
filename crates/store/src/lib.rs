//! The state store behind every Twill mode.
//!
//! The trait is shaped after etcd v3 so the embedded backend (standalone
//! mode) and a shared backend (cluster mode) are interchangeable: every key
//! carries a modification revision, and writes that must not race are
//! compare-and-swap operations on that revision. Callers that allocate
//! shared numbers (identities, IPs) use `create` and `compare_and_*`, never
//! read-then-write.

mod file;

pub use file::FileStore;

use serde::{de::DeserializeOwned, Serialize};

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
