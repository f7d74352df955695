//! Keys a node owns while it is alive, bound to one lease that a thread
//! keeps renewed (the idea of etcd's concurrency.Session).
//!
//! If the lease is lost anyway (etcd was out of reach for longer than the
//! TTL, or someone revoked it), the session grants a new one and writes
//! every key it remembers again: a node re-registers after an outage
//! without a restart.

use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex, MutexGuard, Weak},
    thread::{self, JoinHandle},
    time::{Duration, SystemTime},
};

use crate::{LeaseId, Store, StoreError};

/// What `twill status` shows about the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub lease: LeaseId,
    /// The last keep-alive (or grant) succeeded.
    pub alive: bool,
    /// When the lease was last granted or renewed.
    pub last_renewal: Option<SystemTime>,
    /// How many times the lease was lost and granted again.
    pub regrants: u64,
}

struct State {
    lease: LeaseId,
    alive: bool,
    last_renewal: Option<SystemTime>,
    regrants: u64,
    // Keys to write again under a new lease; empty-handed after close.
    keys: BTreeMap<String, String>,
    // A new lease was granted but not every key is back under it yet.
    republish: bool,
    closed: bool,
}

/// Tells the keep-alive thread to stop; shared with it apart from the
/// session so that dropping the session can reach it.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    fn stop(&self) {
        *self.stopped.lock().expect("session stop mutex poisoned") = true;
        self.wake.notify_all();
    }

    /// Waits `period` or until stopped; true if stopped.
    fn wait(&self, period: Duration) -> bool {
        let guard = self.stopped.lock().expect("session stop mutex poisoned");
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, period, |stopped| !*stopped)
            .expect("session stop mutex poisoned");
        *guard
    }
}

pub struct Session {
    store: Arc<dyn Store>,
    ttl: Duration,
    state: Mutex<State>,
    // Serializes the store writes of put, delete and re-grant, so a re-grant
    // cannot interleave with a put and lose it. Kept apart from `state` so
    // that status() never waits for the store.
    writes: Mutex<()>,
    stop: Arc<Stop>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("ttl", &self.ttl).field("status", &self.status()).finish()
    }
}

impl Session {
    /// Grants a lease of `ttl` and starts a keep-alive thread (renew every ttl/3).
    pub fn start(store: Arc<dyn Store>, ttl: Duration) -> Result<Arc<Session>, StoreError> {
        let lease = store.grant_lease(ttl)?;
        let session = Arc::new(Session {
            store,
            ttl,
            state: Mutex::new(State {
                lease,
                alive: true,
                last_renewal: Some(SystemTime::now()),
                regrants: 0,
                keys: BTreeMap::new(),
                republish: false,
                closed: false,
            }),
            writes: Mutex::new(()),
            stop: Arc::new(Stop::default()),
            thread: Mutex::new(None),
        });
        let weak = Arc::downgrade(&session);
        let stop = session.stop.clone();
        let period = (ttl / 3).max(Duration::from_millis(10));
        let handle = thread::Builder::new()
            .name("twill-session".into())
            .spawn(move || keep_alive_loop(weak, stop, period))
            .map_err(|e| StoreError::Io { path: "session keep-alive thread".into(), source: e })?;
        *session.thread.lock().expect("session thread mutex poisoned") = Some(handle);
        Ok(session)
    }

    pub fn lease(&self) -> LeaseId {
        self.state().lease
    }

    /// Writes key=value under the lease and remembers it.
    pub fn put(&self, key: &str, value: &str) -> Result<u64, StoreError> {
        let _writes = self.writes();
        let (lease, previous) = {
            let state = self.state();
            if state.closed {
                return Err(StoreError::SessionClosed);
            }
            (state.lease, state.keys.get(key).cloned())
        };
        let result = match self.store.put_leased(key, value, lease) {
            Err(StoreError::LeaseNotFound(_)) => {
                // Lost between two keep-alives: re-grant now rather than
                // fail a write the next renewal would have repaired anyway.
                self.state().keys.insert(key.to_string(), value.to_string());
                self.regrant_locked();
                let lease = self.state().lease;
                self.store.put_leased(key, value, lease)
            }
            other => other,
        };
        let mut state = self.state();
        match &result {
            Ok(_) => {
                state.keys.insert(key.to_string(), value.to_string());
            }
            // The store still holds what it held; so should our memory of it,
            // or a re-grant would write a value the caller saw fail.
            Err(_) => match previous {
                Some(value) => {
                    state.keys.insert(key.to_string(), value);
                }
                None => {
                    state.keys.remove(key);
                }
            },
        }
        result
    }

    /// Forgets and deletes the key.
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let _writes = self.writes();
        let previous = self.state().keys.remove(key);
        let result = self.store.delete(key);
        if result.is_err() {
            // Still in the store under our lease: keep it remembered so a
            // retry (or a re-grant) sees the truth.
            if let Some(value) = previous {
                self.state().keys.insert(key.to_string(), value);
            }
        }
        result
    }

    /// Is the lease known to be alive (last keep-alive succeeded)?
    pub fn alive(&self) -> bool {
        self.state().alive
    }

    pub fn status(&self) -> SessionStatus {
        let state = self.state();
        SessionStatus {
            lease: state.lease,
            alive: state.alive,
            last_renewal: state.last_renewal,
            regrants: state.regrants,
        }
    }

    /// Stops keep-alive and revokes the lease (orderly shutdown).
    pub fn close(&self) {
        self.stop.stop();
        let handle = self.thread.lock().expect("session thread mutex poisoned").take();
        if let Some(handle) = handle {
            if handle.thread().id() != thread::current().id() {
                let _ = handle.join();
            }
        }
        let _writes = self.writes();
        let lease = {
            let mut state = self.state();
            if state.closed {
                return;
            }
            state.closed = true;
            state.alive = false;
            state.keys.clear();
            state.lease
        };
        match self.store.revoke_lease(lease) {
            Ok(()) | Err(StoreError::LeaseNotFound(_)) => {}
            // The keys then go when the lease expires, one TTL later.
            Err(e) => {
                tracing::warn!(lease = format!("{lease:x}"), error = %e, "could not revoke the session lease")
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("session state mutex poisoned")
    }

    fn writes(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().expect("session write mutex poisoned")
    }

    /// One round of the keep-alive thread.
    fn renew(&self) {
        let _writes = self.writes();
        let (lease, closed) = {
            let state = self.state();
            (state.lease, state.closed)
        };
        if closed {
            return;
        }
        match self.store.keep_alive(lease) {
            Ok(true) => {
                {
                    let mut state = self.state();
                    state.alive = true;
                    state.last_renewal = Some(SystemTime::now());
                }
                if self.state().republish {
                    self.republish_locked();
                }
            }
            Ok(false) => {
                tracing::warn!(
                    lease = format!("{lease:x}"),
                    "store session lease is gone; granting a new one"
                );
                self.regrant_locked();
            }
            Err(e) => {
                let mut state = self.state();
                if state.alive {
                    tracing::warn!(lease = format!("{lease:x}"), error = %e, "store session keep-alive failed");
                }
                state.alive = false;
            }
        }
    }

    /// Grants a new lease and writes every remembered key under it. Called
    /// with `writes` held. On failure the session stays not alive and the
    /// next round tries again.
    fn regrant_locked(&self) {
        match self.store.grant_lease(self.ttl) {
            Ok(lease) => {
                let mut state = self.state();
                state.lease = lease;
                state.regrants += 1;
                state.republish = true;
                state.alive = true;
                state.last_renewal = Some(SystemTime::now());
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not grant a new store session lease");
                self.state().alive = false;
                return;
            }
        }
        self.republish_locked();
    }

    fn republish_locked(&self) {
        let (lease, keys) = {
            let state = self.state();
            (state.lease, state.keys.clone())
        };
        for (key, value) in &keys {
            if let Err(e) = self.store.put_leased(key, value, lease) {
                tracing::warn!(key, error = %e, "could not write a session key again under the new lease");
                // A lost lease again is found by the next keep-alive.
                self.state().alive = !matches!(e, StoreError::Unavailable { .. });
                return;
            }
        }
        self.state().republish = false;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Not joined: the last Arc may be the keep-alive thread's own.
        self.stop.stop();
    }
}

fn keep_alive_loop(session: Weak<Session>, stop: Arc<Stop>, period: Duration) {
    loop {
        if stop.wait(period) {
            return;
        }
        let Some(session) = session.upgrade() else { return };
        session.renew();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileStore;
    use std::time::Instant;

    fn store(name: &str) -> (Arc<dyn Store>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("twill-session-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Arc::new(FileStore::open(&dir).unwrap()), dir)
    }

    fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
        let end = Instant::now() + deadline;
        while !check() {
            assert!(Instant::now() < end, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn session_keys_outlive_the_ttl_while_renewed() {
        let (store, dir) = store("renew");
        let session = Session::start(store.clone(), Duration::from_secs(1)).unwrap();
        session.put("nodes/a", "1").unwrap();
        let first = session.status().last_renewal.unwrap();
        wait_until("renewed twice", Duration::from_secs(5), || {
            session.status().last_renewal.unwrap() > first
        });
        thread::sleep(Duration::from_millis(1200));
        assert_eq!(store.get("nodes/a").unwrap().unwrap().value, "1");
        assert!(session.alive());
        assert_eq!(session.status().regrants, 0);
        drop(session);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn session_regrants_and_rewrites_keys_when_its_lease_is_revoked() {
        let (store, dir) = store("regrant");
        let session = Session::start(store.clone(), Duration::from_secs(1)).unwrap();
        session.put("nodes/a", "1").unwrap();
        session.put("ips/10.0.0.1", "a").unwrap();
        session.put("ips/10.0.0.2", "a").unwrap();
        assert!(session.delete("ips/10.0.0.2").unwrap());
        let old = session.lease();
        store.revoke_lease(old).unwrap();
        assert!(store.get("nodes/a").unwrap().is_none());
        wait_until("keys are back", Duration::from_secs(5), || store.get("nodes/a").unwrap().is_some());
        wait_until("both keys are back", Duration::from_secs(5), || {
            store.get("ips/10.0.0.1").unwrap().is_some()
        });
        assert!(store.get("ips/10.0.0.2").unwrap().is_none(), "a deleted key stays forgotten");
        let status = session.status();
        assert_ne!(status.lease, old);
        assert_eq!(status.regrants, 1);
        assert!(status.alive);
        // The new keys are bound to the new lease.
        store.revoke_lease(status.lease).unwrap();
        assert!(store.get("nodes/a").unwrap().is_none());
        wait_until("keys are back again", Duration::from_secs(5), || store.get("nodes/a").unwrap().is_some());
        assert_eq!(session.status().regrants, 2);
        session.close();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_put_on_a_lost_lease_regrants_at_once() {
        let (store, dir) = store("put-lost");
        let session = Session::start(store.clone(), Duration::from_secs(30)).unwrap();
        session.put("nodes/a", "1").unwrap();
        store.revoke_lease(session.lease()).unwrap();
        session.put("nodes/b", "2").unwrap();
        assert_eq!(store.get("nodes/a").unwrap().unwrap().value, "1");
        assert_eq!(store.get("nodes/b").unwrap().unwrap().value, "2");
        assert_eq!(session.status().regrants, 1);
        session.close();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn close_revokes_and_later_puts_fail() {
        let (store, dir) = store("close");
        let session = Session::start(store.clone(), Duration::from_secs(30)).unwrap();
        session.put("nodes/a", "1").unwrap();
        let lease = session.lease();
        session.close();
        assert!(store.get("nodes/a").unwrap().is_none());
        assert!(!store.keep_alive(lease).unwrap());
        assert!(!session.alive());
        assert!(matches!(session.put("nodes/a", "1"), Err(StoreError::SessionClosed)));
        session.close();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dropping_the_last_arc_stops_renewing() {
        let (store, dir) = store("drop");
        let session = Session::start(store.clone(), Duration::from_millis(150)).unwrap();
        session.put("nodes/a", "1").unwrap();
        let lease = session.lease();
        drop(session);
        // Nobody renews any more, so the lease and its key expire.
        wait_until("key expired", Duration::from_secs(5), || store.get("nodes/a").unwrap().is_none());
        assert!(!store.keep_alive(lease).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
