//! Serving the Hubble-compatible observer API, on a Unix socket and on a
//! TCP address (loopback by default), from a small tokio runtime of its
//! own so the rest of the agent stays synchronous.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Instant,
};

use tracing::{error, info};
use twill_observe::{
    proto::{
        observer::observer_server::ObserverServer,
        tonic::transport::{server::TcpIncoming, Server},
    },
    Directory, FlowRing, ObserverService,
};

pub struct HubbleConfig {
    pub socket: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

pub fn spawn(
    config: HubbleConfig,
    ring: Arc<FlowRing>,
    directory: Arc<RwLock<Directory>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let address = config.listen.map(|a| a.to_string()).unwrap_or_default();
    let service = || ObserverService {
        ring: ring.clone(),
        directory: directory.clone(),
        version: format!("twill {}", env!("CARGO_PKG_VERSION")),
        started: Instant::now(),
        address: address.clone(),
    };
    // Bind before returning, so a bad address fails the agent's start.
    let unix = match &config.socket {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let _ = std::fs::remove_file(path);
            let listener = runtime
                .block_on(async { tokio::net::UnixListener::bind(path) })
                .map_err(|e| anyhow::anyhow!("binding Hubble socket {}: {e}", path.display()))?;
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
                .map_err(|e| anyhow::anyhow!("binding Hubble address {addr}: {e}"))?,
        ),
        None => None,
    };
    let (unix_service, tcp_service) = (service(), service());
    std::thread::Builder::new().name("hubble".into()).spawn(move || {
        runtime.block_on(async move {
            let mut tasks = Vec::new();
            if let Some(listener) = unix {
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                tasks.push(tokio::spawn(
                    Server::builder()
                        .add_service(ObserverServer::new(unix_service))
                        .serve_with_incoming(incoming),
                ));
            }
            if let Some(listener) = tcp {
                tasks.push(tokio::spawn(
                    Server::builder()
                        .add_service(ObserverServer::new(tcp_service))
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
    info!(socket = ?config.socket, listen = ?config.listen, "Hubble observer API serving");
    Ok(())
}
