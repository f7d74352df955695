//! twill-relay: the Hubble observer API of a whole cluster, served from
//! one address.
//!
//! The relay learns the cluster's nodes from any agent's peer service
//! (`peer.Peer/Notify`), keeps a connection to each node's Hubble server,
//! and answers `observer.Observer` calls by asking every connected node:
//! flows merged in time order ([`sort`]), statuses summed, namespaces
//! united. A node that cannot be reached is reported, never fatal.

pub mod config;
pub mod observer;
pub mod pool;
pub mod sort;

use std::time::Instant;

use tonic_health::ServingStatus;
use tracing::info;
use twill_observe_proto::{
    observer::observer_server::ObserverServer,
    tonic::transport::{server::TcpIncoming, Server},
};

pub use config::{Args, Config};

/// The observer's name in the health service, as Hubble checks it.
pub const OBSERVER_HEALTH_NAME: &str = "hubble.server.Observer";

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("binding --listen-address {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS of the listener")]
    Tls(#[source] twill_observe_proto::tonic::transport::Error),
    #[error("serving the observer API")]
    Serve(#[source] twill_observe_proto::tonic::transport::Error),
}

/// Runs the relay until its server stops.
pub async fn run(config: Config) -> Result<(), RelayError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RelayError::Bind { addr: config.listen, source })?;
    serve(config, listener).await
}

/// [`run`] on a listener already bound (`config.listen` is not used).
pub async fn serve(config: Config, listener: tokio::net::TcpListener) -> Result<(), RelayError> {
    let pool = pool::Pool::new(pool::Dialer { timeout: config.dial_timeout, tls: config.peer_tls.clone() });
    tokio::spawn(pool::follow_peers(pool.clone(), config.peer_service.clone()));
    let service = observer::RelayService {
        pool,
        version: format!("twill-relay {}", env!("CARGO_PKG_VERSION")),
        started: Instant::now(),
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_service_status(OBSERVER_HEALTH_NAME, ServingStatus::Serving).await;
    health_reporter.set_serving::<ObserverServer<observer::RelayService>>().await;

    let tls_on = config.server_tls.is_some();
    let mut server = Server::builder();
    if let Some(tls) = config.server_tls {
        server = server.tls_config(tls).map_err(RelayError::Tls)?;
    }
    info!(listen = ?listener.local_addr().ok(), tls = tls_on, peer_service = %config.peer_service, "relay serving");
    let result = server
        .add_service(health)
        .add_service(ObserverServer::new(service))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
        .map_err(RelayError::Serve);
    // Held to here: dropping the reporter ends health Watch streams.
    drop(health_reporter);
    result
}
