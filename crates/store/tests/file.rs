//! The shared behaviour (tests/common) against the file store.

mod common;

use std::{path::PathBuf, sync::Arc, time::Duration};

use twill_store::{FileStore, Store};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("twill-store-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn file_crud_and_cas() {
    let dir = TempDir::new("crud");
    common::crud_and_cas(&FileStore::open(&dir.0).unwrap());
}

#[test]
fn file_racing_create_has_one_winner() {
    let dir = TempDir::new("race");
    common::racing_create(Arc::new(FileStore::open(&dir.0).unwrap()));
}

#[test]
fn file_list_then_watch() {
    let dir = TempDir::new("watch");
    common::list_then_watch(&FileStore::open(&dir.0).unwrap());
}

#[test]
fn file_lease_expiry() {
    let dir = TempDir::new("lease");
    let store: Arc<dyn Store> = Arc::new(FileStore::open(&dir.0).unwrap());
    common::lease_expiry(store.as_ref(), Duration::from_secs(1));
}
