//! The Hubble TCP listener's TLS: the files of `--hubble-tls-*`, read and
//! checked at start so that a wrong one stops the agent with the flag's
//! name instead of failing every client's handshake later.

use twill_observe::proto::{
    tls,
    tonic::transport::{self, Server, ServerTlsConfig},
};

use crate::config::HubbleTls;

/// TLS flags whose files are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsFlagError {
    #[error("--{flag}")]
    File {
        flag: &'static str,
        #[source]
        source: tls::PemError,
    },
    #[error("--hubble-tls-cert and --hubble-tls-key: not a usable certificate and key")]
    Unusable(#[source] transport::Error),
}

/// The name clients check the server certificate of `node` against, as
/// Cilium names it (`<node>.<cluster>.hubble-grpc.cilium.io`) so that
/// certificates made for Cilium's Hubble work here. Standalone nodes are in
/// Cilium's default cluster.
pub fn server_name(node: &str) -> String {
    format!("{node}.default.hubble-grpc.cilium.io")
}

pub fn server_config(files: &HubbleTls) -> Result<ServerTlsConfig, TlsFlagError> {
    let identity = tls::identity(&files.cert, &files.key).map_err(|source| TlsFlagError::File {
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
        let ca = tls::certificates(ca)
            .map_err(|source| TlsFlagError::File { flag: "hubble-tls-client-ca", source })?;
        config = config.client_ca_root(ca);
    }
    // Building the acceptor is where rustls checks that the key is the
    // certificate's; done here so a mismatch stops the start early too.
    Server::builder().tls_config(config.clone()).map_err(TlsFlagError::Unusable)?;
    Ok(config)
}
