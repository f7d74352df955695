//! The Hubble TCP listener's TLS: the files of `--hubble-tls-*`, read and
//! checked at start so that a wrong one stops the agent with the flag's
//! name instead of failing every client's handshake later.

use twill_observe::proto::{tls, tonic::transport::ServerTlsConfig};

use crate::config::HubbleTls;

/// A TLS flag whose file is unusable.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}")]
pub struct TlsFlagError {
    pub flag: &'static str,
    #[source]
    pub source: tls::PemError,
}

/// The name clients check the server certificate of `node` against, as
/// Cilium names it (`<node>.<cluster>.hubble-grpc.cilium.io`) so that
/// certificates made for Cilium's Hubble work here. Standalone nodes are in
/// Cilium's default cluster.
pub fn server_name(node: &str) -> String {
    format!("{node}.default.hubble-grpc.cilium.io")
}

pub fn server_config(files: &HubbleTls) -> Result<ServerTlsConfig, TlsFlagError> {
    let identity = tls::identity(&files.cert, &files.key).map_err(|source| TlsFlagError {
        // The key's own errors name the key; the rest are the certificate's.
        flag: match &source {
            tls::PemError::Key { .. } => "hubble-tls-key",
            tls::PemError::Read { path, .. } if *path == files.key => "hubble-tls-key",
            _ => "hubble-tls-cert",
        },
        source,
    })?;
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &files.client_ca {
        // A client CA makes client certificates required (tonic's default
        // once a client CA root is set) and checked against it.
        let ca =
            tls::certificates(ca).map_err(|source| TlsFlagError { flag: "hubble-tls-client-ca", source })?;
        config = config.client_ca_root(ca);
    }
    Ok(config)
}
