//! The relay's flags, and the checked configuration they make: every file
//! read and every address parsed before anything starts, so a mistake
//! stops the relay naming its flag.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use twill_observe_proto::{
    tls,
    tonic::transport::{self, Certificate, Identity, Server, ServerTlsConfig},
};

#[derive(Debug, Parser)]
#[command(name = "twill-relay", version, about = "One Hubble observer API for every node of a Twill cluster")]
pub struct Args {
    /// Address the relay serves the observer API on.
    #[arg(long, default_value = "127.0.0.1:4245")]
    pub listen_address: String,
    /// Hubble address of any agent (host:port or unix:///path); its peer
    /// service tells the relay about every node.
    #[arg(long, default_value = "unix:///run/twill/hubble.sock")]
    pub peer_service: String,
    /// How long connecting to a node may take ("5s", "500ms", or seconds).
    #[arg(long, default_value = "5s")]
    pub dial_timeout: String,
    /// CA that nodes' Hubble certificates are checked against; TLS to the
    /// nodes is on when this is given.
    #[arg(long)]
    pub tls_peer_ca: Option<PathBuf>,
    /// Client certificate the relay presents to nodes (mutual TLS).
    #[arg(long, requires = "tls_peer_key")]
    pub tls_peer_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_peer_cert")]
    pub tls_peer_key: Option<PathBuf>,
    /// Certificate of the relay's own listener (TLS to clients).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA for client certificates: clients without one are refused.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}")]
    File {
        flag: &'static str,
        #[source]
        source: tls::PemError,
    },
    #[error("--listen-address {value:?}: expected IP:port")]
    Listen {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("--peer-service {value:?}: expected host:port or unix:///path")]
    PeerService { value: String },
    #[error("--dial-timeout {value:?}: expected a duration such as 5s or 500ms")]
    DialTimeout { value: String },
    #[error("--tls-cert and --tls-key: not a usable certificate and key")]
    Unusable(#[source] transport::Error),
    #[error("--tls-peer-cert/--tls-peer-key need --tls-peer-ca: mutual TLS to the nodes is TLS first")]
    PeerIdentityWithoutCa,
}

/// TLS the relay uses towards nodes.
#[derive(Clone)]
pub struct PeerTls {
    pub ca: Certificate,
    pub identity: Option<Identity>,
}

pub struct Config {
    pub listen: SocketAddr,
    pub peer_service: String,
    pub dial_timeout: Duration,
    pub peer_tls: Option<PeerTls>,
    pub server_tls: Option<ServerTlsConfig>,
}

/// "5s", "500ms", "2m" or a bare number of seconds.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let v = value.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs > 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
}

/// A Hubble address as a URI tonic dials: `unix:/path` or
/// `scheme://host:port`, where a bare host gets Hubble's port 4244.
pub fn peer_uri(address: &str, tls: bool) -> Option<String> {
    if let Some(path) = address.strip_prefix("unix://").or_else(|| address.strip_prefix("unix:")) {
        let path = path.trim_start_matches('/');
        return (!path.is_empty()).then(|| format!("unix:/{path}"));
    }
    if address.is_empty() || address.contains('/') {
        return None;
    }
    // host:port, [v6]:port or a v4 address with its port.
    let has_port = address.parse::<SocketAddr>().is_ok()
        || address
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && !h.contains(':') && p.parse::<u16>().is_ok());
    let with_port = if has_port {
        address.to_string()
    } else if address.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{address}]:4244")
    } else if address.contains(':') {
        return None;
    } else {
        format!("{address}:4244")
    };
    let uri = format!("{}://{with_port}", if tls { "https" } else { "http" });
    uri.parse::<twill_observe_proto::tonic::codegen::http::Uri>().ok().map(|_| uri)
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let listen = args
            .listen_address
            .parse()
            .map_err(|source| ConfigError::Listen { value: args.listen_address.clone(), source })?;
        let dial_timeout = parse_duration(&args.dial_timeout)
            .ok_or_else(|| ConfigError::DialTimeout { value: args.dial_timeout.clone() })?;
        if peer_uri(&args.peer_service, false).is_none() {
            return Err(ConfigError::PeerService { value: args.peer_service });
        }
        let peer_tls = match (&args.tls_peer_ca, &args.tls_peer_cert, &args.tls_peer_key) {
            (None, None, None) => None,
            (None, _, _) => return Err(ConfigError::PeerIdentityWithoutCa),
            (Some(ca), cert, key) => {
                let ca = tls::certificates(ca)
                    .map_err(|source| ConfigError::File { flag: "tls-peer-ca", source })?;
                let identity = match (cert, key) {
                    (Some(cert), Some(key)) => {
                        Some(tls::identity(cert, key).map_err(|source| ConfigError::File {
                            flag: key_or_cert(&source, key, "tls-peer-key", "tls-peer-cert"),
                            source,
                        })?)
                    }
                    _ => None,
                };
                Some(PeerTls { ca, identity })
            }
        };
        let server_tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let identity = tls::identity(cert, key).map_err(|source| ConfigError::File {
                    flag: key_or_cert(&source, key, "tls-key", "tls-cert"),
                    source,
                })?;
                let mut config = ServerTlsConfig::new().identity(identity);
                if let Some(ca) = &args.tls_client_ca {
                    let ca = tls::certificates(ca)
                        .map_err(|source| ConfigError::File { flag: "tls-client-ca", source })?;
                    config = config.client_ca_root(ca);
                }
                // rustls checks the key against the certificate only here.
                Server::builder().tls_config(config.clone()).map_err(ConfigError::Unusable)?;
                Some(config)
            }
            _ => None,
        };
        Ok(Config { listen, peer_service: args.peer_service, dial_timeout, peer_tls, server_tls })
    }
}

fn key_or_cert(
    err: &tls::PemError,
    key: &std::path::Path,
    key_flag: &'static str,
    cert_flag: &'static str,
) -> &'static str {
    match err {
        tls::PemError::Key { .. } => key_flag,
        tls::PemError::Read { path, .. } if path == key => key_flag,
        _ => cert_flag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("fast"), None);
        assert_eq!(parse_duration("0s"), None);
    }

    #[test]
    fn hubble_addresses_become_uris() {
        assert_eq!(peer_uri("127.0.0.1:4244", false).as_deref(), Some("http://127.0.0.1:4244"));
        assert_eq!(peer_uri("10.0.0.1", true).as_deref(), Some("https://10.0.0.1:4244"));
        assert_eq!(peer_uri("node-a:80", false).as_deref(), Some("http://node-a:80"));
        assert_eq!(
            peer_uri("unix:///run/twill/hubble.sock", false).as_deref(),
            Some("unix:/run/twill/hubble.sock")
        );
        assert_eq!(peer_uri("[fd00::1]:4244", false).as_deref(), Some("http://[fd00::1]:4244"));
        assert_eq!(peer_uri("", false), None);
        assert_eq!(peer_uri("unix://", false), None);
        assert_eq!(peer_uri("a:b:c", false), None);
    }

    #[test]
    fn bad_flags_are_named() {
        let args = |extra: &[&str]| {
            let mut v = vec!["twill-relay"];
            v.extend_from_slice(extra);
            Args::try_parse_from(v).unwrap()
        };
        let err = |a| Config::from_args(a).err().expect("refused").to_string();
        assert!(err(args(&["--listen-address", "nowhere"])).starts_with("--listen-address"));
        assert!(err(args(&["--peer-service", "a:b:c"])).starts_with("--peer-service"));
        assert!(err(args(&["--dial-timeout", "soon"])).starts_with("--dial-timeout"));
        assert_eq!(err(args(&["--tls-peer-ca", "/nonexistent/ca.pem"])), "--tls-peer-ca");
        let e =
            Config::from_args(args(&["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"]))
                .err()
                .unwrap();
        assert_eq!(e.to_string(), "--tls-cert");
        assert!(std::error::Error::source(&e).unwrap().to_string().contains("/nonexistent/c.pem"));
    }
}
