//! The cluster's nodes as the relay sees them: followed from an agent's
//! peer service, each with a connection kept up by its own task.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};
use twill_observe_proto::{
    observer::{observer_client::ObserverClient, ServerStatusRequest},
    peer::{peer_client::PeerClient, ChangeNotificationType, NotifyRequest},
    relay::NodeState,
    tonic::transport::{Channel, ClientTlsConfig, Endpoint},
};

use crate::config::{peer_uri, PeerTls};

/// First wait after a failure; doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often a connected node is asked whether it is still there, so that
/// `list nodes` turns Unavailable soon after a node dies, not only when a
/// stream notices.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{address:?} is not a Hubble address")]
    Address { address: String },
    #[error("TLS setup for {address}")]
    Tls {
        address: String,
        #[source]
        source: twill_observe_proto::tonic::transport::Error,
    },
    #[error("connecting to {address}")]
    Connect {
        address: String,
        #[source]
        source: twill_observe_proto::tonic::transport::Error,
    },
    #[error("connecting to {address}: no answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
}

/// How the relay dials: shared by the peer service and every node.
#[derive(Clone)]
pub struct Dialer {
    pub timeout: Duration,
    pub tls: Option<PeerTls>,
}

impl Dialer {
    pub async fn dial(&self, address: &str, server_name: Option<&str>) -> Result<Channel, DialError> {
        let tls = self.tls.as_ref().filter(|_| !address.starts_with("unix:"));
        let uri =
            peer_uri(address, tls.is_some()).ok_or_else(|| DialError::Address { address: address.into() })?;
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|_| DialError::Address { address: address.into() })?
            .connect_timeout(self.timeout)
            // Streams are long: keepalives find a dead peer on an idle one.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(self.timeout);
        if let Some(tls) = tls {
            let mut config = ClientTlsConfig::new().ca_certificate(tls.ca.clone());
            if let Some(identity) = &tls.identity {
                config = config.identity(identity.clone());
            }
            if let Some(name) = server_name.filter(|n| !n.is_empty()) {
                config = config.domain_name(name);
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|source| DialError::Tls { address: address.into(), source })?;
        }
        // connect_timeout covers TCP only; the TLS and HTTP/2 handshakes
        // need the bound too.
        match tokio::time::timeout(self.timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(source)) => Err(DialError::Connect { address: address.into(), source }),
            Err(_) => Err(DialError::Timeout { address: address.into(), timeout: self.timeout }),
        }
    }
}

/// One node as the relay knows it right now.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub name: String,
    pub address: String,
    pub tls_server_name: Option<String>,
    pub state: NodeState,
    pub channel: Option<Channel>,
    /// Why the node is unavailable, when it is.
    pub error: Option<String>,
}

struct Slot {
    view: NodeView,
    task: JoinHandle<()>,
}

struct Inner {
    nodes: Mutex<BTreeMap<String, Slot>>,
    // Bumped on every change, so open streams can pick up nodes that
    // connect after they started.
    generation: watch::Sender<u64>,
    dialer: Dialer,
    tls_enabled: bool,
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

fn bump(generation: &watch::Sender<u64>) {
    generation.send_modify(|g| *g += 1);
}

impl Pool {
    pub fn new(dialer: Dialer) -> Pool {
        let tls_enabled = dialer.tls.is_some();
        Pool {
            inner: Arc::new(Inner {
                nodes: Mutex::new(BTreeMap::new()),
                generation: watch::channel(0).0,
                dialer,
                tls_enabled,
            }),
        }
    }

    pub fn tls_enabled(&self) -> bool {
        self.inner.tls_enabled
    }

    pub fn nodes(&self) -> Vec<NodeView> {
        self.inner.nodes.lock().expect("pool lock").values().map(|s| s.view.clone()).collect()
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Adds or updates a node; a changed address or TLS name redials.
    pub fn upsert(&self, name: &str, address: &str, tls_server_name: Option<String>) {
        let mut nodes = self.inner.nodes.lock().expect("pool lock");
        if let Some(slot) = nodes.get(name) {
            if slot.view.address == address && slot.view.tls_server_name == tls_server_name {
                return;
            }
            slot.task.abort();
        }
        info!(node = name, address, "node added");
        let view = NodeView {
            name: name.into(),
            address: address.into(),
            tls_server_name,
            state: NodeState::NodeUnavailable,
            channel: None,
            error: Some("not connected yet".into()),
        };
        let task = tokio::spawn(keep_connected(self.clone(), view.clone()));
        nodes.insert(name.into(), Slot { view, task });
        drop(nodes);
        bump(&self.inner.generation);
    }

    pub fn remove(&self, name: &str) {
        if let Some(slot) = self.inner.nodes.lock().expect("pool lock").remove(name) {
            info!(node = name, "node deleted");
            slot.task.abort();
            bump(&self.inner.generation);
        }
    }

    fn set(
        &self,
        name: &str,
        address: &str,
        state: NodeState,
        channel: Option<Channel>,
        error: Option<String>,
    ) {
        let mut nodes = self.inner.nodes.lock().expect("pool lock");
        // A stale task (its node re-added elsewhere) must not overwrite.
        let Some(slot) = nodes.get_mut(name).filter(|s| s.view.address == address) else { return };
        let changed = slot.view.state != state;
        slot.view.state = state;
        slot.view.channel = channel;
        slot.view.error = error;
        drop(nodes);
        if changed {
            bump(&self.inner.generation);
        }
    }
}

/// Dials a node, watches it while connected, redials with backoff when it
/// goes away. Runs until the node is removed.
async fn keep_connected(pool: Pool, node: NodeView) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match pool.inner.dialer.dial(&node.address, node.tls_server_name.as_deref()).await {
            Ok(channel) => {
                info!(node = %node.name, address = %node.address, "node connected");
                backoff = BACKOFF_MIN;
                pool.set(&node.name, &node.address, NodeState::NodeConnected, Some(channel.clone()), None);
                let reason = loop {
                    tokio::time::sleep(PROBE_INTERVAL).await;
                    let mut client = ObserverClient::new(channel.clone());
                    let probe = tokio::time::timeout(
                        pool.inner.dialer.timeout,
                        client.server_status(ServerStatusRequest {}),
                    );
                    match probe.await {
                        Ok(Ok(_)) => continue,
                        Ok(Err(status)) => break format!("{}: {}", status.code(), status.message()),
                        Err(_) => break "no answer to ServerStatus".to_string(),
                    }
                };
                warn!(node = %node.name, reason, "node unavailable");
                pool.set(&node.name, &node.address, NodeState::NodeUnavailable, None, Some(reason));
            }
            Err(e) => {
                let reason = error_chain(&e);
                debug!(node = %node.name, reason, "dial failed");
                pool.set(&node.name, &node.address, NodeState::NodeUnavailable, None, Some(reason));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Follows `peer.Peer/Notify` at `address` into `pool`, reconnecting with
/// backoff whenever the stream cannot be opened or ends.
pub async fn follow_peers(pool: Pool, address: String) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match notify_once(&pool, &address, &mut backoff).await {
            Ok(()) => warn!(peer_service = %address, "peer service stream ended"),
            Err(reason) => warn!(peer_service = %address, reason, "peer service unavailable"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn notify_once(pool: &Pool, address: &str, backoff: &mut Duration) -> Result<(), String> {
    let channel = pool.inner.dialer.dial(address, None).await.map_err(|e| error_chain(&e))?;
    let mut stream = PeerClient::new(channel)
        .notify(NotifyRequest {})
        .await
        .map_err(|s| format!("Notify: {}: {}", s.code(), s.message()))?
        .into_inner();
    *backoff = BACKOFF_MIN;
    loop {
        let Some(change) =
            stream.message().await.map_err(|s| format!("Notify: {}: {}", s.code(), s.message()))?
        else {
            return Ok(());
        };
        let server_name = change.tls.as_ref().map(|t| t.server_name.clone()).filter(|n| !n.is_empty());
        match change.r#type() {
            ChangeNotificationType::PeerAdded | ChangeNotificationType::PeerUpdated => {
                // A node without a TCP listener announces no address: the
                // peer service's own address is then the way to it.
                let to = if change.address.is_empty() { address } else { change.address.as_str() };
                pool.upsert(&change.name, to, server_name)
            }
            ChangeNotificationType::PeerDeleted => pool.remove(&change.name),
            ChangeNotificationType::Unknown => debug!(node = %change.name, "peer change of unknown type"),
        }
    }
}
