//! The cluster backend: etcd v3, through etcd-client.
//!
//! Callers are plain threads, so the store owns a small tokio runtime and
//! each call blocks on one etcd request under the operation timeout. An
//! unanswered request becomes `StoreError::Unavailable`; the client's
//! channel reconnects by itself once etcd is back, so the next call can
//! succeed without building a new store.
//!
//! Every key lives under `EtcdOptions::prefix` in etcd; callers never see
//! the prefix. Keys and values are UTF-8 (Twill writes nothing else); a
//! foreign non-UTF-8 byte reads back as U+FFFD.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    path::{Path, PathBuf},
    sync::{
        atomic::AtomicBool,
        mpsc::{sync_channel, SyncSender, TrySendError},
        Arc,
    },
    time::Duration,
};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, KeyValue,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::runtime::Runtime;

use crate::{Entry, LeaseId, Store, StoreError, Watch, WatchEvent, WATCH_CAPACITY};

/// HTTP/2 pings on open streams (watches, keep-alives), so a silently
/// dead etcd ends a watch instead of leaving it waiting forever. Not
/// shorter: etcd answers pings more often than every 5 s with GOAWAY.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Keys per range request when listing, well below the 4 MiB a gRPC
/// message may carry; pages are read at one revision.
const LIST_PAGE: i64 = 1000;
/// etcd's default --max-txn-ops: the most operations one transaction may hold.
const MAX_TXN_OPS: usize = 128;

/// How long a watch waits before retrying delivery to a full channel. The
/// reader is slow; the stream from etcd just stops being read meanwhile.
const DELIVERY_RETRY: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `http://host:port` or `https://host:port`; a bare `host:port` gets
    /// the scheme that matches the TLS settings.
    pub endpoints: Vec<String>,
    /// Every key is stored under it, e.g. "twill/"; callers see keys without it.
    pub prefix: String,
    /// CA bundle (PEM) that signs etcd's server certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for etcd's --client-cert-auth.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// Per operation.
    pub timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            prefix: "twill/".to_string(),
            ca: None,
            cert: None,
            key: None,
            timeout: Duration::from_secs(3),
        }
    }
}

/// The etcd backend. Call it and drop it from plain threads, never from
/// inside a tokio runtime: it blocks on a runtime of its own.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    endpoints: String,
    timeout: Duration,
    // Last: the client's tasks run on it and go down with it.
    runtime: Runtime,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers within the timeout, so a
    /// wrong address or a stopped etcd shows at start as `Unavailable`.
    pub fn connect(opts: EtcdOptions) -> Result<EtcdStore, StoreError> {
        if opts.endpoints.is_empty() {
            return Err(StoreError::Config("no etcd endpoint given".to_string()));
        }
        if opts.timeout.is_zero() {
            return Err(StoreError::Config("the etcd operation timeout must be above zero".to_string()));
        }
        let tls = tls_options(&opts)?;
        if tls.is_some() {
            if let Some(plain) = opts.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(StoreError::Config(format!(
                    "endpoint {plain} is plain http but etcd TLS files were given: use https://"
                )));
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("twill-etcd")
            .enable_all()
            .build()
            .map_err(StoreError::Runtime)?;
        let endpoints = opts.endpoints.join(",");
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(opts.timeout)
            .with_keep_alive(PING_INTERVAL, opts.timeout);
        if let Some(tls) = tls {
            connect = connect.with_tls(tls);
        }
        let timeout = opts.timeout;
        let client = runtime
            .block_on(async {
                tokio::time::timeout(timeout, Client::connect(&opts.endpoints, Some(connect))).await
            })
            .map_err(|_| unavailable(&endpoints, format!("no connection within {timeout:?}")))?
            .map_err(|e| classify(&endpoints, "connect", e))?;
        let store = EtcdStore { client, prefix: opts.prefix, endpoints, timeout, runtime };
        let probe = store.full("");
        store.run("connect", move |mut c| async move {
            c.get(probe, Some(GetOptions::new().with_prefix().with_count_only())).await
        })?;
        Ok(store)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn strip(&self, key: &[u8]) -> String {
        let key = key.strip_prefix(self.prefix.as_bytes()).unwrap_or(key);
        String::from_utf8_lossy(key).into_owned()
    }

    fn entry(&self, kv: &KeyValue) -> (String, Entry) {
        (
            self.strip(kv.key()),
            Entry {
                value: String::from_utf8_lossy(kv.value()).into_owned(),
                mod_revision: kv.mod_revision() as u64,
            },
        )
    }

    /// One request under the operation timeout.
    fn run<T, F, Fut>(&self, op: &'static str, request: F) -> Result<T, StoreError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client.clone();
        let timeout = self.timeout;
        match self.runtime.block_on(async move { tokio::time::timeout(timeout, request(client)).await }) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(&self.endpoints, op, e)),
            Err(_) => Err(unavailable(&self.endpoints, format!("no answer to {op} within {timeout:?}"))),
        }
    }

    fn txn(&self, op: &'static str, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        self.run(op, move |mut c| async move { c.txn(txn).await })
    }
}

fn unavailable(endpoints: &str, reason: String) -> StoreError {
    StoreError::Unavailable { endpoints: endpoints.to_string(), reason }
}

/// Unreachable etcd (no connection, no leader, timed out) is told apart
/// from etcd refusing the request, because callers retry the first and
/// report the second.
fn classify(endpoints: &str, op: &'static str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let down = match &e {
        E::TransportError(_) | E::IoError(_) => true,
        // An answer from etcd is a bare status; a status carrying a source
        // is tonic reporting the connection (an h2 or I/O error mid-stream).
        E::GRpcStatus(status) => {
            matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
                || std::error::Error::source(status).is_some()
        }
        _ => false,
    };
    if down {
        unavailable(endpoints, format!("{op}: {e}"))
    } else {
        StoreError::Etcd { op, source: e }
    }
}

/// etcd names a missing lease with NOT_FOUND ("requested lease not found").
fn lease_error(lease: LeaseId, e: StoreError) -> StoreError {
    match &e {
        StoreError::Etcd { source: etcd_client::Error::GRpcStatus(status), .. }
            if status.code() == tonic::Code::NotFound =>
        {
            StoreError::LeaseNotFound(lease)
        }
        _ => e,
    }
}

fn revision(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map(|h| h.revision()).unwrap_or(0) as u64
}

/// The first key after every key that starts with `prefix` (etcd's range
/// end for a prefix); `\0` means "to the end of the key space".
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn tls_options(opts: &EtcdOptions) -> Result<Option<TlsOptions>, StoreError> {
    if opts.ca.is_none() && opts.cert.is_none() && opts.key.is_none() {
        return Ok(None);
    }
    let mut tls = TlsOptions::new();
    if let Some(ca) = &opts.ca {
        tls = tls.ca_certificate(Certificate::from_pem(read_certificates(ca)?));
    }
    match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert)?;
            let pem = read_tls_file(key)?;
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| StoreError::TlsInvalid {
                path: key.display().to_string(),
                reason: format!("no usable private key: {e}"),
            })?;
            tls = tls.identity(Identity::from_pem(chain, pem));
        }
        (None, None) => {}
        (Some(cert), None) => {
            return Err(StoreError::Config(format!(
                "etcd client certificate {} given without its key",
                cert.display()
            )))
        }
        (None, Some(key)) => {
            return Err(StoreError::Config(format!(
                "etcd client key {} given without its certificate",
                key.display()
            )))
        }
    }
    Ok(Some(tls))
}

fn read_tls_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::TlsFile { path: path.display().to_string(), source })
}

/// Reads a PEM file that must hold at least one certificate and nothing
/// malformed; tonic would only find out at the first handshake.
fn read_certificates(path: &Path) -> Result<Vec<u8>, StoreError> {
    let pem = read_tls_file(path)?;
    let invalid = |reason: String| StoreError::TlsInvalid { path: path.display().to_string(), reason };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| invalid(format!("bad PEM certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid("no PEM certificate in it".to_string()));
    }
    Ok(pem)
}

/// Aborts the watch's forwarding task when the `Watch` goes; the task's
/// stream then closes and etcd drops the watcher.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type WatchItem = Result<WatchEvent, StoreError>;

/// Hands one item to the reader, waiting while its channel is full. False
/// if the reader is gone.
async fn deliver(tx: &SyncSender<WatchItem>, mut item: WatchItem) -> bool {
    loop {
        match tx.try_send(item) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                item = back;
                tokio::time::sleep(DELIVERY_RETRY).await;
            }
        }
    }
}

struct Forwarder {
    stream: WatchStream,
    tx: SyncSender<WatchItem>,
    key_prefix: String,
    watched: String,
    endpoints: String,
}

impl Forwarder {
    fn event(&self, event: &etcd_client::Event) -> Option<WatchEvent> {
        let kv = event.kv()?;
        let key = kv.key().strip_prefix(self.key_prefix.as_bytes()).unwrap_or(kv.key());
        let key = String::from_utf8_lossy(key).into_owned();
        let mod_revision = kv.mod_revision() as u64;
        Some(match event.event_type() {
            EventType::Put => {
                WatchEvent::Put { key, value: String::from_utf8_lossy(kv.value()).into_owned(), mod_revision }
            }
            EventType::Delete => WatchEvent::Delete { key, mod_revision },
        })
    }

    fn ended(&self, resp: &etcd_client::WatchResponse) -> StoreError {
        if resp.compact_revision() > 0 {
            StoreError::Compacted { revision: resp.compact_revision() as u64 }
        } else {
            StoreError::WatchEnded {
                prefix: self.watched.clone(),
                reason: format!("etcd canceled it: {}", resp.cancel_reason()),
            }
        }
    }

    /// Forwards events until the stream ends, then sends why it ended.
    /// Returns early if the reader is gone.
    async fn run(mut self, mut pending: Vec<WatchEvent>) {
        for event in pending.drain(..) {
            if !deliver(&self.tx, Ok(event)).await {
                return;
            }
        }
        let end = loop {
            match self.stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        break self.ended(&resp);
                    }
                    let events: Vec<WatchEvent> =
                        resp.events().iter().filter_map(|e| self.event(e)).collect();
                    for event in events {
                        if !deliver(&self.tx, Ok(event)).await {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    break StoreError::WatchEnded {
                        prefix: self.watched.clone(),
                        reason: "etcd closed the watch stream".to_string(),
                    }
                }
                Err(e) => break classify(&self.endpoints, "watch", e),
            }
        };
        deliver(&self.tx, Err(end)).await;
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let full = self.full(key);
        let resp = self.run("get", move |mut c| async move { c.get(full, None).await })?;
        Ok(resp.kvs().first().map(|kv| self.entry(kv).1))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError> {
        Ok(self.list_at(prefix)?.0)
    }

    fn put(&self, key: &str, value: &str) -> Result<u64, StoreError> {
        let (full, value) = (self.full(key), value.to_string());
        let resp = self.run("put", move |mut c| async move { c.put(full, value, None).await })?;
        Ok(revision(resp.header()))
    }

    fn create(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value, None)]);
        Ok(self.txn("create", txn)?.succeeded())
    }

    fn compare_and_swap(&self, key: &str, expected: u64, value: &str) -> Result<bool, StoreError> {
        let full = self.full(key);
        // A missing key has mod_revision 0 in a compare; requiring it to
        // exist keeps `expected == 0` from creating it, as in the file store.
        let txn = Txn::new()
            .when([
                Compare::create_revision(full.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected as i64),
            ])
            .and_then([TxnOp::put(full, value, None)]);
        Ok(self.txn("compare-and-swap", txn)?.succeeded())
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let full = self.full(key);
        let resp = self.run("delete", move |mut c| async move { c.delete(full, None).await })?;
        Ok(resp.deleted() > 0)
    }

    fn compare_and_delete(&self, key: &str, expected: u64) -> Result<bool, StoreError> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([
                Compare::create_revision(full.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected as i64),
            ])
            .and_then([TxnOp::delete(full, None)]);
        Ok(self.txn("compare-and-delete", txn)?.succeeded())
    }

    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let full = self.full(prefix);
        let resp = self.run("delete-prefix", move |mut c| async move {
            c.delete(full, Some(etcd_client::DeleteOptions::new().with_prefix())).await
        })?;
        Ok(resp.deleted() as usize)
    }

    /// One transaction. etcd caps a transaction at `--max-txn-ops`
    /// operations (128 by default); a larger batch is refused whole.
    fn write_batch(&self, puts: &[(String, String)], deletes: &[String]) -> Result<u64, StoreError> {
        // etcd refuses a transaction that names a key twice: the last put
        // of a key wins, and a key that is also put is not deleted.
        let puts: BTreeMap<&str, &str> = puts.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let deletes: BTreeSet<&str> =
            deletes.iter().map(String::as_str).filter(|k| !puts.contains_key(k)).collect();
        let mut ops: Vec<TxnOp> = deletes.iter().map(|k| TxnOp::delete(self.full(k), None)).collect();
        ops.extend(puts.iter().map(|(k, v)| TxnOp::put(self.full(k), *v, None)));
        // etcd refuses transactions of more than --max-txn-ops (128 by
        // default): larger batches go in transactions of that size, each
        // atomic, the whole not (callers validate everything before
        // writing, so only an outage midway leaves part of a batch).
        let mut last = 0;
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let chunk: Vec<TxnOp> = ops.by_ref().take(MAX_TXN_OPS).collect();
            let resp = self.txn("write-batch", Txn::new().and_then(chunk))?;
            last = revision(resp.header());
        }
        if last == 0 {
            // Nothing to write: an empty transaction still says the revision.
            last = revision(self.txn("write-batch", Txn::new())?.header());
        }
        Ok(last)
    }

    fn list_at(&self, prefix: &str) -> Result<(Vec<(String, Entry)>, u64), StoreError> {
        let full = self.full(prefix);
        let end = if full.is_empty() { vec![0] } else { prefix_end(full.as_bytes()) };
        let mut start = if full.is_empty() { vec![0] } else { full.into_bytes() };
        let mut at: Option<i64> = None;
        let mut entries = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE);
            if let Some(rev) = at {
                options = options.with_revision(rev);
            }
            let key = start.clone();
            let resp = self.run("list", move |mut c| async move { c.get(key, Some(options)).await })?;
            let rev = *at.get_or_insert(revision(resp.header()) as i64);
            debug_assert!(rev > 0);
            entries.extend(resp.kvs().iter().map(|kv| self.entry(kv)));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok((entries, at.unwrap_or(0) as u64))
    }

    fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError> {
        let full = self.full(prefix);
        let mut options = WatchOptions::new().with_prefix();
        if from_revision > 0 {
            options = options.with_start_revision(from_revision as i64);
        }
        // Waiting for etcd to confirm the watch means a change made after
        // watch() returns is seen even when watching "from now".
        let (stream, first) = self.run("watch", move |mut c| async move {
            let mut stream = c.watch(full, Some(options)).await?;
            let first = stream.message().await?;
            Ok((stream, first))
        })?;
        let (tx, rx) = sync_channel(WATCH_CAPACITY);
        let forwarder = Forwarder {
            stream,
            tx,
            key_prefix: self.prefix.clone(),
            watched: prefix.to_string(),
            endpoints: self.endpoints.clone(),
        };
        let pending = match first {
            None => {
                return Err(unavailable(
                    &self.endpoints,
                    "etcd closed the watch before it started".to_string(),
                ))
            }
            Some(resp) if resp.canceled() => return Err(forwarder.ended(&resp)),
            Some(resp) => resp.events().iter().filter_map(|e| forwarder.event(e)).collect(),
        };
        let task = self.runtime.spawn(forwarder.run(pending));
        Ok(Watch::new(
            prefix,
            rx,
            Arc::new(AtomicBool::new(false)),
            Some(Box::new(AbortOnDrop(task.abort_handle()))),
        ))
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let seconds = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1) as i64;
        let resp = self.run("lease grant", move |mut c| async move { c.lease_grant(seconds, None).await })?;
        Ok(resp.id())
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError> {
        self.run("lease keep-alive", move |mut c| async move {
            // etcd-client sends one request and reads one answer; a TTL of 0
            // in it, etcd's "no such lease", comes back as this error.
            match c.lease_keep_alive(lease).await {
                Ok(_) => Ok(true),
                Err(etcd_client::Error::LeaseKeepAliveError(reason)) if reason == "lease not found" => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })
    }

    fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.run("lease revoke", move |mut c| async move { c.lease_revoke(lease).await })
            .map(|_| ())
            .map_err(|e| lease_error(lease, e))
    }

    fn put_leased(&self, key: &str, value: &str, lease: LeaseId) -> Result<u64, StoreError> {
        let (full, value) = (self.full(key), value.to_string());
        let resp = self
            .run("put", move |mut c| async move {
                c.put(full, value, Some(PutOptions::new().with_lease(lease))).await
            })
            .map_err(|e| lease_error(lease, e))?;
        Ok(revision(resp.header()))
    }

    fn create_leased(&self, key: &str, value: &str, lease: LeaseId) -> Result<bool, StoreError> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value, Some(PutOptions::new().with_lease(lease)))]);
        Ok(self.txn("create", txn).map_err(|e| lease_error(lease, e))?.succeeded())
    }

    fn describe(&self) -> String {
        format!("etcd {}", self.endpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"twill/"), b"twill0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn bad_tls_files_are_named() {
        let dir = std::env::temp_dir().join(format!("twill-etcd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("ca.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let missing = dir.join("missing.pem");
        let opts = |ca: &Path| EtcdOptions { ca: Some(ca.to_path_buf()), ..EtcdOptions::default() };

        let e = EtcdStore::connect(opts(&garbage)).unwrap_err();
        assert!(matches!(e, StoreError::TlsInvalid { .. }), "{e:?}");
        assert!(e.to_string().contains(&garbage.display().to_string()), "{e}");

        let e = EtcdStore::connect(opts(&missing)).unwrap_err();
        assert!(matches!(e, StoreError::TlsFile { .. }), "{e:?}");
        assert!(e.to_string().contains(&missing.display().to_string()), "{e}");

        let e = EtcdStore::connect(EtcdOptions { cert: Some(garbage.clone()), ..EtcdOptions::default() })
            .unwrap_err();
        assert!(matches!(e, StoreError::Config(_)), "{e:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn nothing_listening_is_unavailable_within_the_timeout() {
        // A port from the ephemeral range that nothing listens on: bind, then close.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let start = std::time::Instant::now();
        let e = EtcdStore::connect(EtcdOptions {
            endpoints: vec![format!("http://127.0.0.1:{port}")],
            timeout: Duration::from_millis(500),
            ..EtcdOptions::default()
        })
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("127.0.0.1:{port}")) && text.contains("the change was not made"),
            "{text}"
        );
    }
}
