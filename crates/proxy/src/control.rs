//! The control socket between the agent and a proxy running as its own
//! process: newline-delimited JSON, one message a line. The agent sends
//! whole configurations; the proxy sends records and counters back. The
//! proxy outlives the agent (a restart or crash of the agent must not cut
//! proxied connections): it keeps its last configuration and serves the
//! next agent that connects.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
    sync::mpsc,
};
use tracing::{info, warn};

use crate::{
    config::ProxyConfig,
    record::{L7Record, RecordSink},
    Proxy,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToProxy {
    Config(ProxyConfig),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromProxy {
    Record(L7Record),
    /// The outcome of the last configuration: None when it applied.
    Applied(Option<String>),
    Counters {
        connections: u64,
        requests: u64,
    },
}

/// Records bound for the attached agent; lost (and counted) while none is.
#[derive(Default)]
pub struct AgentSink {
    tx: Mutex<Option<mpsc::Sender<FromProxy>>>,
    pub lost: AtomicU64,
}

impl RecordSink for AgentSink {
    fn record(&self, record: L7Record) {
        let sent = match &*self.tx.lock().expect("sink lock") {
            Some(tx) => tx.try_send(FromProxy::Record(record)).is_ok(),
            None => false,
        };
        if !sent {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Serves the control socket at `path` until the file is removed (the
/// agent's run directory going away is the proxy's cue to exit).
pub async fn serve(path: PathBuf, proxy: Arc<Proxy>, sink: Arc<AgentSink>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    info!(socket = %path.display(), "twill-proxy ready");
    let watched = path.clone();
    let gone = async move {
        while watched.exists() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::pin!(gone);
    loop {
        tokio::select! {
            _ = &mut gone => {
                info!("control socket removed; exiting");
                return Ok(());
            }
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                info!("agent attached");
                let (tx, mut rx) = mpsc::channel::<FromProxy>(4096);
                // The newest agent gets the records.
                *sink.tx.lock().expect("sink lock") = Some(tx.clone());
                let (read, mut write) = stream.into_split();
                tokio::spawn(async move {
                    let mut batch = Vec::with_capacity(64 << 10);
                    while let Some(m) = rx.recv().await {
                        if write_batch(m, &mut rx, &mut batch, &mut write).await.is_err() {
                            break;
                        }
                    }
                });
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(read).lines();
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    let mut last = (u64::MAX, u64::MAX);
                    loop {
                        tokio::select! {
                            line = lines.next_line() => {
                                let Ok(Some(line)) = line else { break };
                                match serde_json::from_str::<ToProxy>(&line) {
                                    Ok(ToProxy::Config(c)) => {
                                        let outcome = proxy.apply(c).err().map(|e| e.to_string());
                                        if let Some(e) = &outcome {
                                            warn!("applying configuration: {e}");
                                        }
                                        let _ = tx.send(FromProxy::Applied(outcome)).await;
                                    }
                                    Err(e) => warn!("bad control message: {e}"),
                                }
                            }
                            _ = tick.tick() => {
                                let [connections, requests, ..] = proxy.stats().snapshot();
                                if (connections, requests) != last {
                                    last = (connections, requests);
                                    let _ = tx.try_send(FromProxy::Counters { connections, requests });
                                }
                            }
                        }
                    }
                    info!("agent detached; keeping the configuration");
                });
            }
        }
    }
}

/// Most records one write carries.
const BATCH_RECORDS: usize = 256;
/// How long the first record of a batch waits for company: a write (and
/// the agent's wakeup to read it) per request cost more than the request
/// itself under load, and a flow 2 ms late is not noticed.
const BATCH_DELAY: Duration = Duration::from_millis(2);

/// Encodes `first` and what follows it within [`BATCH_DELAY`] (up to
/// [`BATCH_RECORDS`]) into one buffer and writes it at once. Anything but
/// a record (the outcome of a configuration, which the agent may be
/// waiting for) goes out without waiting.
async fn write_batch<W: tokio::io::AsyncWrite + Unpin>(
    first: FromProxy,
    rx: &mut mpsc::Receiver<FromProxy>,
    buf: &mut Vec<u8>,
    write: &mut W,
) -> std::io::Result<()> {
    buf.clear();
    let deadline = tokio::time::Instant::now() + BATCH_DELAY;
    let mut next = Some(first);
    let mut count = 0;
    while let Some(m) = next.take() {
        let urgent = !matches!(m, FromProxy::Record(_));
        if serde_json::to_writer(&mut *buf, &m).is_ok() {
            buf.push(b'\n');
            count += 1;
        }
        if urgent || count >= BATCH_RECORDS {
            break;
        }
        next = match rx.try_recv() {
            Ok(m) => Some(m),
            Err(mpsc::error::TryRecvError::Empty) => {
                tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
    }
    write.write_all(buf).await
}

/// The control socket's place in the agent's run directory.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("proxy.sock")
}
