//! Behaviour both backends must share, run against each of them by
//! tests/file.rs and tests/etcd.rs.
#![allow(dead_code)]

use std::{
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use twill_store::{Store, StoreError, WatchEvent};

pub const SOON: Duration = Duration::from_secs(5);

pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !check() {
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn next(watch: &twill_store::Watch) -> WatchEvent {
    watch.recv_timeout(SOON).unwrap().expect("an event in time")
}

fn keys(store: &dyn Store, prefix: &str) -> Vec<String> {
    store.list(prefix).unwrap().into_iter().map(|(k, _)| k).collect()
}

/// get, list, put, create, compare-and-*, delete, delete_prefix, write_batch.
pub fn crud_and_cas(store: &dyn Store) {
    assert_eq!(store.get("c/a").unwrap(), None);
    let r1 = store.put("c/a", "1").unwrap();
    let got = store.get("c/a").unwrap().unwrap();
    assert_eq!((got.value.as_str(), got.mod_revision), ("1", r1));
    let r2 = store.put("c/a", "2").unwrap();
    assert!(r2 > r1);

    assert!(store.create("c/b", "b").unwrap());
    assert!(!store.create("c/b", "other").unwrap());
    assert_eq!(store.get("c/b").unwrap().unwrap().value, "b");

    let rev = store.get("c/a").unwrap().unwrap().mod_revision;
    assert!(!store.compare_and_swap("c/a", rev + 100, "x").unwrap());
    assert!(!store.compare_and_swap("c/missing", 0, "x").unwrap(), "expected 0 never creates");
    assert!(store.get("c/missing").unwrap().is_none());
    assert!(store.compare_and_swap("c/a", rev, "3").unwrap());
    assert_eq!(store.get("c/a").unwrap().unwrap().value, "3");
    assert!(!store.compare_and_delete("c/a", rev).unwrap());
    let rev = store.get("c/a").unwrap().unwrap().mod_revision;
    assert!(!store.compare_and_delete("c/missing", 0).unwrap());
    assert!(store.compare_and_delete("c/a", rev).unwrap());
    assert!(store.get("c/a").unwrap().is_none());

    assert!(store.delete("c/b").unwrap());
    assert!(!store.delete("c/b").unwrap());

    store.put("c/p/1", "1").unwrap();
    store.put("c/p/2", "2").unwrap();
    store.put("c/q", "q").unwrap();
    store.put("c/p0", "outside").unwrap();
    assert_eq!(keys(store, "c/p/"), ["c/p/1", "c/p/2"]);
    assert_eq!(store.delete_prefix("c/p/").unwrap(), 2);
    assert_eq!(store.delete_prefix("c/p/").unwrap(), 0);
    assert_eq!(keys(store, "c/"), ["c/p0", "c/q"]);

    // One revision for the whole batch; a key both put and deleted ends up put.
    let puts: Vec<(String, String)> =
        vec![("c/b/2".into(), "two".into()), ("c/b/1".into(), "one".into()), ("c/q".into(), "new".into())];
    let rb = store.write_batch(&puts, &["c/p0".into(), "c/q".into(), "c/absent".into()]).unwrap();
    let listed = store.list("c/").unwrap();
    let names: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["c/b/1", "c/b/2", "c/q"], "in key order");
    assert!(listed.iter().all(|(_, e)| e.mod_revision == rb));
    assert_eq!(store.get("c/q").unwrap().unwrap().value, "new");
    let (_, at) = store.list_at("c/").unwrap();
    assert_eq!(at, rb);
    assert_eq!(store.write_batch(&[], &["c/absent".into()]).unwrap(), rb, "nothing changed, no new revision");
}

/// Eight threads race `create` on one key: exactly one wins.
pub fn racing_create(store: Arc<dyn Store>) {
    let start = Arc::new(Barrier::new(8));
    let winners: Vec<bool> = (0..8)
        .map(|i| {
            let (store, start) = (store.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                store.create("race/key", &format!("thread-{i}")).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    let winner = winners.iter().position(|w| *w).unwrap();
    assert_eq!(store.get("race/key").unwrap().unwrap().value, format!("thread-{winner}"));
}

/// list_at, then watch from the revision after: every later change, in
/// order, nothing from before.
pub fn list_then_watch(store: &dyn Store) {
    store.put("w/1", "a").unwrap();
    let (listed, at) = store.list_at("w/").unwrap();
    assert_eq!(listed.len(), 1);
    let watch = store.watch("w/", at + 1).unwrap();
    let r2 = store.put("w/2", "b").unwrap();
    store.put("elsewhere", "x").unwrap();
    assert!(store.delete("w/1").unwrap());
    assert_eq!(next(&watch), WatchEvent::Put { key: "w/2".into(), value: "b".into(), mod_revision: r2 });
    match next(&watch) {
        WatchEvent::Delete { key, mod_revision } => {
            assert_eq!(key, "w/1");
            assert!(mod_revision > r2 + 1);
        }
        other => panic!("expected the delete, got {other:?}"),
    }
    assert_eq!(watch.recv_timeout(Duration::from_millis(100)).unwrap(), None);

    // "From now" sees changes made once watch() has returned.
    let now = store.watch("w/", 0).unwrap();
    let r = store.put("w/3", "c").unwrap();
    assert_eq!(next(&now), WatchEvent::Put { key: "w/3".into(), value: "c".into(), mod_revision: r });
}

/// Keys under a lease that is not renewed go, with Delete events.
pub fn lease_expiry(store: &dyn Store, ttl: Duration) {
    let lease = store.grant_lease(ttl).unwrap();
    store.put_leased("l/a", "1", lease).unwrap();
    assert!(store.create_leased("l/b", "2", lease).unwrap());
    assert!(!store.create_leased("l/b", "3", lease).unwrap());
    store.put("l/plain", "stays").unwrap();
    let watch = store.watch("l/", 0).unwrap();
    assert!(store.keep_alive(lease).unwrap());
    wait_until("the lease expired", ttl * 4 + SOON, || store.get("l/a").unwrap().is_none());
    assert_eq!(keys(store, "l/"), ["l/plain"]);
    let mut deleted: Vec<String> = (0..2)
        .map(|_| match next(&watch) {
            WatchEvent::Delete { key, .. } => key,
            other => panic!("expected a delete, got {other:?}"),
        })
        .collect();
    deleted.sort();
    assert_eq!(deleted, ["l/a", "l/b"]);
    assert!(!store.keep_alive(lease).unwrap());
    assert!(matches!(store.put_leased("l/c", "x", lease), Err(StoreError::LeaseNotFound(l)) if l == lease));
    assert!(matches!(store.create_leased("l/c", "x", lease), Err(StoreError::LeaseNotFound(_))));
    assert!(matches!(store.revoke_lease(lease), Err(StoreError::LeaseNotFound(_))));

    let lease = store.grant_lease(ttl).unwrap();
    store.put_leased("l/d", "1", lease).unwrap();
    store.revoke_lease(lease).unwrap();
    assert!(store.get("l/d").unwrap().is_none());
}
