//! EtcdStore against a real etcd (Debian's etcd-server), one per test, on
//! 127.0.0.1 with free ports and a data directory of its own; it is killed
//! and its directory removed on drop, also when the test fails.

mod common;

use std::{
    fs,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{next, wait_until, SOON};
use twill_store::{EtcdOptions, EtcdStore, Session, Store, StoreError, WatchEvent};

const PREFIX: &str = "twill-test/";

struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Etcd {
    fn start(name: &str) -> Etcd {
        let dir = std::env::temp_dir().join(format!("twill-etcd-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut etcd = Etcd { child: None, dir, client_port: free_port(), peer_port: free_port() };
        etcd.run();
        etcd
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts etcd (again, on the same ports and data) and waits until it answers.
    fn run(&mut self) {
        assert!(self.child.is_none());
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "default", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd not found: install Debian's etcd-server (scripts/setup.sh does)");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let answered = EtcdStore::connect(self.options(Duration::from_millis(500)))
                .and_then(|s| s.get("ready"))
                .is_ok();
            if answered {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                panic!("etcd exited with {status}:\n{log}");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "etcd did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn options(&self, timeout: Duration) -> EtcdOptions {
        EtcdOptions { endpoints: vec![self.url()], prefix: PREFIX.into(), timeout, ..EtcdOptions::default() }
    }

    fn store(&self) -> EtcdStore {
        EtcdStore::connect(self.options(Duration::from_secs(3))).unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn etcd_crud_and_cas_match_the_file_store() {
    let etcd = Etcd::start("crud");
    let store = etcd.store();
    common::crud_and_cas(&store);
    // Keys live under the prefix in etcd, and callers never see it.
    let raw =
        EtcdStore::connect(EtcdOptions { prefix: String::new(), ..etcd.options(Duration::from_secs(3)) })
            .unwrap();
    let names: Vec<String> = raw.list("").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["twill-test/c/b/1", "twill-test/c/b/2", "twill-test/c/q"]);
    assert_eq!(store.describe(), format!("etcd {}", etcd.url()));
}

#[test]
fn etcd_list_pages_at_one_revision() {
    let etcd = Etcd::start("pages");
    let store = etcd.store();
    // More keys than one range page (1000), in batches under etcd's 128-op limit.
    for chunk in 0..20 {
        let puts: Vec<(String, String)> =
            (0..120).map(|i| (format!("p/{:05}", chunk * 120 + i), "v".to_string())).collect();
        store.write_batch(&puts, &[]).unwrap();
    }
    store.put("p0", "outside").unwrap();
    let (listed, at) = store.list_at("p/").unwrap();
    assert_eq!(listed.len(), 2400);
    assert!(listed.windows(2).all(|w| w[0].0 < w[1].0), "in key order");
    assert_eq!(at, store.put("later", "x").unwrap() - 1);
}

#[test]
fn etcd_racing_create_has_one_winner() {
    let etcd = Etcd::start("race");
    common::racing_create(Arc::new(etcd.store()));
}

#[test]
fn etcd_watch_from_revision() {
    let etcd = Etcd::start("watch");
    let store = etcd.store();
    common::list_then_watch(&store);
    // etcd keeps history: a watch from an old revision replays it.
    let r1 = store.put("h/a", "1").unwrap();
    let r2 = store.put("h/a", "2").unwrap();
    let replay = store.watch("h/", r1).unwrap();
    assert_eq!(next(&replay), WatchEvent::Put { key: "h/a".into(), value: "1".into(), mod_revision: r1 });
    assert_eq!(next(&replay), WatchEvent::Put { key: "h/a".into(), value: "2".into(), mod_revision: r2 });
    drop(replay);

    // Once compacted, that history is gone and the watch says so.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.url()], None).await.unwrap();
        client.compact(r2 as i64, None).await.unwrap();
    });
    let result = store.watch("h/", r1).and_then(|w| w.recv_timeout(SOON));
    assert!(matches!(result, Err(StoreError::Compacted { revision }) if revision == r2), "{result:?}");
}

#[test]
fn etcd_lease_expiry_deletes_keys() {
    let etcd = Etcd::start("lease");
    common::lease_expiry(&etcd.store(), Duration::from_secs(1));
}

#[test]
fn etcd_session_reregisters_after_its_lease_is_revoked_elsewhere() {
    let etcd = Etcd::start("session");
    let store: Arc<dyn Store> = Arc::new(etcd.store());
    let session = Session::start(store.clone(), Duration::from_secs(3)).unwrap();
    session.put("nodes/a", "node-a").unwrap();
    session.put("ips/10.0.0.1", "a").unwrap();
    let old = session.lease();
    let other = etcd.store();
    other.revoke_lease(old).unwrap();
    assert!(other.get("nodes/a").unwrap().is_none());
    wait_until("the session wrote its keys again", Duration::from_secs(10), || {
        other.get("nodes/a").unwrap().is_some() && other.get("ips/10.0.0.1").unwrap().is_some()
    });
    let status = session.status();
    assert_ne!(status.lease, old);
    assert_eq!(status.regrants, 1);
    assert!(status.alive);
    session.close();
    assert!(other.get("nodes/a").unwrap().is_none(), "close revokes");
}

#[test]
fn etcd_unavailable_within_the_timeout_then_reconnects_after_restart() {
    let mut etcd = Etcd::start("restart");
    let timeout = Duration::from_secs(1);
    let store = EtcdStore::connect(etcd.options(timeout)).unwrap();
    store.put("k", "before").unwrap();
    etcd.stop();

    let start = Instant::now();
    let e = store.put("k", "during").unwrap_err();
    assert!(start.elapsed() < timeout + Duration::from_millis(500), "took {:?}", start.elapsed());
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains(&etcd.url()), "{e}");
    assert!(matches!(store.get("k"), Err(StoreError::Unavailable { .. })));

    etcd.run();
    wait_until("the store reconnected", Duration::from_secs(20), || store.get("k").is_ok());
    assert_eq!(store.get("k").unwrap().unwrap().value, "before");
    store.put("k", "after").unwrap();
    assert_eq!(store.get("k").unwrap().unwrap().value, "after");
}

#[test]
fn etcd_watch_ends_with_an_error_when_etcd_stops() {
    let mut etcd = Etcd::start("watch-stop");
    let store = etcd.store();
    let watch = store.watch("w/", 0).unwrap();
    store.put("w/a", "1").unwrap();
    assert!(matches!(next(&watch), WatchEvent::Put { .. }));
    etcd.stop();
    let start = Instant::now();
    let result = loop {
        match watch.recv_timeout(Duration::from_millis(200)) {
            Ok(None) if start.elapsed() < Duration::from_secs(30) => continue,
            other => break other,
        }
    };
    assert!(matches!(result, Err(StoreError::Unavailable { .. })), "{result:?}");
}

#[test]
fn etcd_session_is_not_alive_during_an_outage_and_recovers_after() {
    let mut etcd = Etcd::start("session-outage");
    let store: Arc<dyn Store> = Arc::new(EtcdStore::connect(etcd.options(Duration::from_secs(1))).unwrap());
    let session = Session::start(store.clone(), Duration::from_secs(3)).unwrap();
    session.put("nodes/a", "node-a").unwrap();
    etcd.stop();
    wait_until("the session noticed the outage", Duration::from_secs(10), || !session.alive());
    assert!(matches!(session.put("nodes/b", "x"), Err(StoreError::Unavailable { .. })));
    etcd.run();
    wait_until("the session is alive again", Duration::from_secs(20), || session.alive());
    // Same lease or a new one, the node's key is there once alive.
    wait_until(
        "the node key is back",
        Duration::from_secs(10),
        || matches!(store.get("nodes/a"), Ok(Some(e)) if e.value == "node-a"),
    );
    assert!(store.get("nodes/b").unwrap().is_none(), "a failed put is not replayed");
    session.close();
}
