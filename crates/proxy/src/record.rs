//! What the proxy reports for each request and response: the facts of an
//! L7 flow (Hubble's `Type: L7`, Cilium's access log records), which the
//! agent turns into flows with endpoint names.

use std::{
    net::SocketAddrV4,
    sync::atomic::{AtomicU64, Ordering},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordVerdict {
    Forwarded,
    Denied,
    /// The request could not be parsed or forwarded.
    Error,
}

/// One L7 access record. `client` and `server` are the connection's ends
/// as the client opened it (a response goes server to client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7Record {
    pub time: SystemTime,
    pub kind: RecordKind,
    pub verdict: RecordVerdict,
    pub endpoint_id: u16,
    /// The redirect is the endpoint's ingress (else its egress).
    pub ingress: bool,
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    pub client_identity: u32,
    pub server_identity: u32,
    pub http: HttpInfo,
    /// Responses: from the request's arrival to the response's headers.
    pub latency_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpInfo {
    pub code: u32,
    pub method: String,
    pub url: String,
    pub protocol: String,
    pub headers: Vec<(String, String)>,
}

/// Where records go. Must not block: the proxy calls it per request.
pub trait RecordSink: Send + Sync + 'static {
    fn record(&self, record: L7Record);
}

/// Counters a user can read to see the proxy at work (and a test to see
/// that a port without L7 rules never reached it).
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub denied: AtomicU64,
    pub upstream_errors: AtomicU64,
}

impl ProxyStats {
    pub fn snapshot(&self) -> [u64; 4] {
        [&self.connections, &self.requests, &self.denied, &self.upstream_errors]
            .map(|c| c.load(Ordering::Relaxed))
    }
}
