//! Keeps a prefix of the shared store mirrored into the agent: list it,
//! watch from the revision after the list, hand over batches; when the
//! watch ends (etcd restarted, connection lost, history compacted), list
//! again. A re-list is a full resync, so nothing missed while the store
//! was away is lost, and nothing is applied twice by revision.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use tracing::{debug, warn};
use twill_store::{Store, WatchEvent};

/// Which part of the cluster state a batch is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nodes,
    Ips,
    Identities,
    Namespaces,
    Policies,
    Services,
}

#[derive(Debug, Clone)]
pub enum Update {
    /// Everything under the prefix now: replaces what was mirrored.
    Resync(Vec<(String, String)>),
    /// Puts (Some) and deletes (None), in revision order.
    Changes(Vec<(String, Option<String>)>),
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub kind: Kind,
    pub update: Update,
    pub revision: u64,
}

/// Whether the store answered lately, shared by every mirror and read by
/// `twill status`.
#[derive(Debug, Default)]
pub struct Health {
    reachable: AtomicBool,
    revision: AtomicU64,
    last_error: Mutex<String>,
}

impl Health {
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> String {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn up(&self, revision: u64) {
        self.reachable.store(true, Ordering::Relaxed);
        self.revision.fetch_max(revision, Ordering::Relaxed);
    }

    pub fn down(&self, error: String) {
        if self.reachable.swap(false, Ordering::Relaxed) {
            warn!("kvstore unreachable: {error}");
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }
}

/// Events taken in one batch at most: a burst (a node's endpoints at its
/// start) is applied in a few passes, not one per key.
const BATCH: usize = 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// Starts mirroring `prefix`; `sink` gets every batch, on the mirror's own
/// thread. Runs for the life of the process.
pub fn spawn(
    store: Arc<dyn Store>,
    kind: Kind,
    prefix: String,
    health: Arc<Health>,
    sink: impl Fn(Batch) + Send + 'static,
) -> std::io::Result<()> {
    thread::Builder::new().name(format!("mirror-{kind:?}").to_lowercase()).spawn(move || {
        let mut backoff = Duration::from_millis(200);
        loop {
            if let Err(e) = mirror_once(store.as_ref(), kind, &prefix, &health, &sink) {
                health.down(e);
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            } else {
                backoff = Duration::from_millis(200);
            }
        }
    })?;
    Ok(())
}

/// One list and the watch after it; returns why the watch ended.
fn mirror_once(
    store: &dyn Store,
    kind: Kind,
    prefix: &str,
    health: &Health,
    sink: &impl Fn(Batch),
) -> Result<(), String> {
    let (entries, revision) = store.list_at(prefix).map_err(|e| e.to_string())?;
    health.up(revision);
    debug!(?kind, entries = entries.len(), revision, "mirror listed");
    let watch = store.watch(prefix, revision + 1).map_err(|e| e.to_string())?;
    sink(Batch {
        kind,
        update: Update::Resync(entries.into_iter().map(|(k, e)| (k, e.value)).collect()),
        revision,
    });
    loop {
        let first = match watch.recv_timeout(Duration::from_secs(1)) {
            Ok(None) => continue,
            Ok(Some(event)) => event,
            Err(e) => return Err(e.to_string()),
        };
        let mut changes = Vec::new();
        let mut last = push(&mut changes, first);
        let mut ended = None;
        while changes.len() < BATCH {
            match watch.recv_timeout(Duration::ZERO) {
                Ok(Some(event)) => last = push(&mut changes, event),
                Ok(None) => break,
                Err(e) => {
                    ended = Some(e.to_string());
                    break;
                }
            }
        }
        health.up(last);
        sink(Batch { kind, update: Update::Changes(changes), revision: last });
        if let Some(e) = ended {
            return Err(e);
        }
    }
}

fn push(changes: &mut Vec<(String, Option<String>)>, event: WatchEvent) -> u64 {
    match event {
        WatchEvent::Put { key, value, mod_revision } => {
            changes.push((key, Some(value)));
            mod_revision
        }
        WatchEvent::Delete { key, mod_revision } => {
            changes.push((key, None));
            mod_revision
        }
    }
}
