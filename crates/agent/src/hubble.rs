//! Serving the Hubble API: the observer, the gRPC health service (the
//! hubble CLI asks it first) and the peer service, on a Unix socket and on
//! a TCP address (loopback by default, TLS when configured), from a small
//! tokio runtime of its own so the rest of the agent stays synchronous.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Instant,
};

use anyhow::Context as _;
use tracing::{error, info, warn};
use twill_observe::{
    proto::{
        observer::observer_server::ObserverServer,
        peer::peer_server::PeerServer,
        tonic::transport::{server::TcpIncoming, Server, ServerTlsConfig},
    },
    Directory, FlowRing, ObserverService, PeerInfo, PeerService, Peers,
};

use tonic_health::ServingStatus;

use crate::hubble_tls;

/// The observer's name in the health service, as Hubble defines it.
const OBSERVER_HEALTH_NAME: &str = "hubble.server.Observer";

pub struct HubbleConfig {
    pub node_name: String,
    pub socket: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    /// TLS of the TCP listener, its files already read.
    pub tls: Option<ServerTlsConfig>,
}

/// Starts the Hubble servers. Returns the node list the peer service
/// reports: this node alone, until something that knows the cluster
/// replaces it.
pub fn spawn(
    config: HubbleConfig,
    ring: Arc<FlowRing>,
    directory: Arc<RwLock<Directory>>,
    agent_events: Arc<twill_observe::AgentEvents>,
    debug_events: Arc<twill_observe::DebugEvents>,
) -> anyhow::Result<Peers> {
    let tls_on = config.tls.is_some();
    if let Some(addr) = config.listen.filter(|a| !a.ip().is_loopback() && !tls_on) {
        // Flows name every workload and address: worth a line in the log.
        warn!(%addr, "Hubble API on a non-loopback address without TLS (see --hubble-tls-cert)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let address = config.listen.map(|a| a.to_string()).unwrap_or_default();
    let peers = Peers::new(vec![PeerInfo {
        name: config.node_name.clone(),
        address: address.clone(),
        tls_server_name: tls_on.then(|| hubble_tls::server_name(&config.node_name)),
    }]);
    let observer = ObserverServer::new(ObserverService {
        ring,
        directory,
        version: format!("twill {}", env!("CARGO_PKG_VERSION")),
        started: Instant::now(),
        address,
        agent_events,
        debug_events,
    });
    let peer = PeerServer::new(PeerService { peers: peers.clone() });
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // "" (the whole server) is SERVING from the start. The observer is
    // SERVING under the name Hubble checks it by (`hubble status` asks for
    // it and fails on NotFound) and under its gRPC service name.
    runtime.block_on(async {
        health_reporter.set_service_status(OBSERVER_HEALTH_NAME, ServingStatus::Serving).await;
        health_reporter.set_serving::<ObserverServer<ObserverService>>().await;
    });
    let mut tcp_server = Server::builder();
    if let Some(tls) = config.tls {
        // Checked by hubble_tls::server_config already.
        tcp_server = tcp_server.tls_config(tls).context("Hubble TLS")?;
    }

    // Bind before returning, so a bad address fails the agent's start.
    let unix = match &config.socket {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let _ = std::fs::remove_file(path);
            let listener = runtime
                .block_on(async { tokio::net::UnixListener::bind(path) })
                .with_context(|| format!("binding Hubble socket {}", path.display()))?;
            // Plaintext, so only root may connect (as Cilium's socket).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            Some(listener)
        }
        None => None,
    };
    let tcp = match config.listen {
        Some(addr) => Some(
            runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("binding Hubble address {addr}"))?,
        ),
        None => None,
    };
    std::thread::Builder::new().name("hubble".into()).spawn(move || {
        // Kept alive with the servers: dropping it ends Watch streams.
        let _health_reporter = health_reporter;
        runtime.block_on(async move {
            let mut tasks = Vec::new();
            if let Some(listener) = unix {
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                tasks.push(tokio::spawn(
                    Server::builder()
                        .add_service(health.clone())
                        .add_service(observer.clone())
                        .add_service(peer.clone())
                        .serve_with_incoming(incoming),
                ));
            }
            if let Some(listener) = tcp {
                tasks.push(tokio::spawn(
                    tcp_server
                        .add_service(health)
                        .add_service(observer)
                        .add_service(peer)
                        .serve_with_incoming(TcpIncoming::from(listener)),
                ));
            }
            for task in tasks {
                match task.await {
                    Ok(Err(e)) => error!("Hubble server stopped: {e}"),
                    Err(e) => error!("Hubble server task failed: {e}"),
                    Ok(Ok(())) => {}
                }
            }
        })
    })?;
    info!(socket = ?config.socket, listen = ?config.listen, tls = tls_on, "Hubble API serving");
    Ok(peers)
}
