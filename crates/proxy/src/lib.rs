//! Twill's L7 proxy. The datapath steers connections whose policy entry
//! has L7 rules to a transparent listener here (one per redirect, see
//! [`config::Redirect`]); the proxy enforces the rules per request and
//! reports every request and response as an [`record::L7Record`].
//!
//! The proxy runs on a tokio runtime it is given; [`Proxy::apply`] takes
//! a whole [`config::ProxyConfig`] and opens and closes listeners to
//! match. Connections already accepted are left alone by a change and
//! follow the new rules from their next request.

pub mod config;
pub mod control;
pub mod http;
pub mod record;
mod socket;

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    sync::{Arc, Mutex, RwLock},
};

use tokio::{runtime::Handle, task::JoinHandle};
use tracing::{debug, warn};

use crate::{
    config::{identity_of, IpcacheEntry, ProxyConfig},
    http::rules::CompiledRedirect,
    record::{ProxyStats, RecordSink},
};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy port {proxy_port}: rule {rule}: {field}: {source}")]
    Rule { proxy_port: u16, rule: usize, field: &'static str, source: regex_error::Error },
    #[error("proxy port {proxy_port}: cannot listen on 127.0.0.1:{proxy_port} (transparent): {source}")]
    Listen { proxy_port: u16, source: std::io::Error },
    #[error("proxy port {proxy_port}: twill-proxy parses HTTP, not {}", parser.as_str())]
    Parser { proxy_port: u16, parser: twill_policy::l7::L7Parser },
    #[error("proxy port {proxy_port} is given to two redirects")]
    DuplicatePort { proxy_port: u16 },
}

/// The regex crate's error, as the policy crate's matcher reports it.
pub mod regex_error {
    pub type Error = twill_policy::l7::RegexError;
}

/// The configuration in force, compiled.
#[derive(Default)]
pub struct State {
    redirects: HashMap<u16, Arc<CompiledRedirect>>,
    ipcache: Vec<IpcacheEntry>,
}

impl State {
    pub fn identity_of(&self, ip: Ipv4Addr) -> u32 {
        identity_of(&self.ipcache, ip)
    }

    /// The ingress redirect of the local endpoint at `ip` covering `port`.
    pub fn ingress_redirect(&self, ip: Ipv4Addr, port: u16) -> Option<&CompiledRedirect> {
        self.redirects
            .values()
            .map(|r| r.as_ref())
            .find(|r| r.redirect.ingress && r.redirect.endpoint_ip == ip && r.redirect.covers_port(port))
    }
}

/// What every connection task shares.
pub struct Shared {
    pub state: RwLock<State>,
    pub sink: Arc<dyn RecordSink>,
    pub stats: ProxyStats,
}

pub struct Proxy {
    runtime: Handle,
    shared: Arc<Shared>,
    listeners: Mutex<BTreeMap<u16, JoinHandle<()>>>,
}

impl Proxy {
    pub fn new(runtime: Handle, sink: Arc<dyn RecordSink>) -> Proxy {
        Proxy {
            runtime,
            shared: Arc::new(Shared { state: RwLock::default(), sink, stats: ProxyStats::default() }),
            listeners: Mutex::default(),
        }
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// Ports listened on now.
    pub fn ports(&self) -> Vec<u16> {
        self.listeners.lock().expect("listeners lock").keys().copied().collect()
    }

    /// Makes `config` the configuration in force: compiles every rule
    /// first (a bad one changes nothing), then opens the listeners it
    /// adds and closes those it drops. A listener that cannot be opened
    /// is reported; the rest of the configuration still applies.
    pub fn apply(&self, config: ProxyConfig) -> Result<(), ProxyError> {
        let mut compiled = HashMap::new();
        for r in config.redirects {
            let port = r.proxy_port;
            if compiled.insert(port, Arc::new(CompiledRedirect::new(r)?)).is_some() {
                return Err(ProxyError::DuplicatePort { proxy_port: port });
            }
        }
        let wanted: Vec<u16> = compiled.keys().copied().collect();
        *self.shared.state.write().expect("proxy state lock") =
            State { redirects: compiled, ipcache: config.ipcache };
        let mut listeners = self.listeners.lock().expect("listeners lock");
        let stale: Vec<u16> = listeners.keys().filter(|p| !wanted.contains(p)).copied().collect();
        for port in stale {
            if let Some(task) = listeners.remove(&port) {
                task.abort();
                debug!(port, "proxy listener closed");
            }
        }
        let mut first_error = None;
        for port in wanted {
            if listeners.contains_key(&port) {
                continue;
            }
            let listener = {
                let _guard = self.runtime.enter();
                socket::transparent_listener(port)
            };
            match listener {
                Ok(listener) => {
                    let shared = self.shared.clone();
                    let task = self.runtime.spawn(async move {
                        loop {
                            match listener.accept().await {
                                Ok((stream, _)) => {
                                    let _ = stream.set_nodelay(true);
                                    tokio::spawn(http::serve(stream, port, shared.clone()));
                                }
                                Err(e) => {
                                    warn!(port, error = %e, "proxy accept failed");
                                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                }
                            }
                        }
                    });
                    listeners.insert(port, task);
                    debug!(port, "proxy listener open");
                }
                Err(source) => {
                    warn!(port, error = %source, "cannot open proxy listener");
                    first_error.get_or_insert(ProxyError::Listen { proxy_port: port, source });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for (_, task) in std::mem::take(&mut *self.listeners.lock().expect("listeners lock")) {
            task.abort();
        }
    }
}
