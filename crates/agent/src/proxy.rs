//! The agent's side of the L7 proxy: the control interface the agent
//! pushes redirects through, and the sink turning the proxy's records into
//! flows in the agent's flow ring.
//!
//! The proxy runs in the agent's process, on its own runtime, behind
//! [`ProxyControl`]: the agent only ever hands it a whole configuration,
//! so moving it to its own process means implementing this trait over a
//! socket, and nothing else in the agent changes.

use std::sync::{Arc, RwLock};

use twill_observe::l7::{l7_flow, L7Event, L7Verdict};
use twill_proxy::{
    config::ProxyConfig,
    record::{L7Record, RecordKind, RecordSink, RecordVerdict},
};

pub trait ProxyControl: Send + Sync {
    /// Makes `config` the proxy's configuration. Errors are the proxy's
    /// own (a listener that cannot open); the datapath then drops what it
    /// would have redirected to it, so nothing gets past the rules.
    fn apply(&self, config: ProxyConfig) -> Result<(), String>;
    /// Connections accepted and requests handled since start.
    fn counters(&self) -> (u64, u64);
}

/// The proxy in this process.
pub struct InProcess {
    pub proxy: twill_proxy::Proxy,
    /// Kept for the proxy's tasks.
    pub _runtime: tokio::runtime::Runtime,
}

impl ProxyControl for InProcess {
    fn apply(&self, config: ProxyConfig) -> Result<(), String> {
        self.proxy.apply(config).map_err(|e| e.to_string())
    }

    fn counters(&self) -> (u64, u64) {
        let [connections, requests, ..] = self.proxy.stats().snapshot();
        (connections, requests)
    }
}

/// Starts the in-process proxy with two worker threads (the machine's
/// agents share two cores), reporting into `sink`.
pub fn start_in_process(sink: Arc<dyn RecordSink>) -> std::io::Result<InProcess> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("proxy")
        .enable_all()
        .build()?;
    let proxy = twill_proxy::Proxy::new(runtime.handle().clone(), sink);
    Ok(InProcess { proxy, _runtime: runtime })
}

/// Proxy records into the flow ring, named like datapath flows.
pub struct FlowRecords {
    pub ring: Arc<twill_observe::FlowRing>,
    pub directory: Arc<RwLock<twill_observe::Directory>>,
    pub metrics: twill_metrics::HubbleMetrics,
}

pub fn to_event(r: &L7Record) -> L7Event {
    L7Event {
        time: r.time,
        response: r.kind == RecordKind::Response,
        verdict: match r.verdict {
            RecordVerdict::Forwarded => L7Verdict::Forwarded,
            RecordVerdict::Denied => L7Verdict::Dropped,
            RecordVerdict::Error => L7Verdict::Error,
        },
        ingress: r.ingress,
        client: r.client,
        server: r.server,
        client_identity: r.client_identity,
        server_identity: r.server_identity,
        code: r.http.code,
        method: r.http.method.clone(),
        url: r.http.url.clone(),
        protocol: r.http.protocol.clone(),
        headers: r.http.headers.clone(),
        latency_ns: r.latency_ns,
    }
}

impl RecordSink for FlowRecords {
    fn record(&self, record: L7Record) {
        let flow = {
            let dir = self.directory.read().expect("directory lock");
            l7_flow(&to_event(&record), &dir)
        };
        self.metrics.observe(&flow);
        self.ring.push(flow);
    }
}
