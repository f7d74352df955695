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

/// The proxy as its own process (`twill-proxy`, next to the agent's
/// binary), reached over a unix socket in the agent's run directory. The
/// agent starts it when nothing answers there, detached into its own
/// session so it survives the agent; a restarted agent finds it and hands
/// it the configuration again, and connections it proxies never notice.
pub struct External {
    socket: std::path::PathBuf,
    binary: std::path::PathBuf,
    log: std::path::PathBuf,
    conn: std::sync::Mutex<Option<std::os::unix::net::UnixStream>>,
    records: Arc<FlowRecords>,
    counters: Arc<[std::sync::atomic::AtomicU64; 2]>,
}

impl External {
    pub fn start(
        run_dir: &std::path::Path,
        binary: std::path::PathBuf,
        records: Arc<FlowRecords>,
    ) -> std::io::Result<External> {
        let external = External {
            socket: twill_proxy::control::socket_path(run_dir),
            log: run_dir.join("proxy.log"),
            binary,
            conn: std::sync::Mutex::new(None),
            records,
            counters: Arc::default(),
        };
        let stream = external.connect()?;
        *external.conn.lock().expect("proxy connection lock") = Some(stream);
        Ok(external)
    }

    /// Connects to the running proxy, or starts one and waits (bounded)
    /// for its socket.
    fn connect(&self) -> std::io::Result<std::os::unix::net::UnixStream> {
        use std::os::unix::{net::UnixStream, process::CommandExt};
        let stream = match UnixStream::connect(&self.socket) {
            Ok(s) => s,
            Err(_) => {
                let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
                let mut cmd = std::process::Command::new(&self.binary);
                cmd.arg("--socket")
                    .arg(&self.socket)
                    .stdin(std::process::Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log);
                // SAFETY: setsid is async-signal-safe and touches nothing
                // of the parent's; its own session keeps the proxy out of
                // the agent's process group and its signals.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::setsid();
                        Ok(())
                    });
                }
                let mut child = cmd.spawn()?;
                // Reaped if it exits while this agent runs; a later agent
                // is not its parent and need not.
                std::thread::Builder::new().name("proxy-reaper".into()).spawn(move || {
                    let _ = child.wait();
                })?;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    match UnixStream::connect(&self.socket) {
                        Ok(s) => break s,
                        Err(e) if std::time::Instant::now() > deadline => return Err(e),
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                    }
                }
            }
        };
        let reader = stream.try_clone()?;
        let records = self.records.clone();
        let counters = self.counters.clone();
        std::thread::Builder::new().name("proxy-records".into()).spawn(move || {
            use std::io::BufRead;
            use twill_proxy::control::FromProxy;
            for line in std::io::BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<FromProxy>(&line) {
                    Ok(FromProxy::Record(r)) => records.record(r),
                    Ok(FromProxy::Applied(Some(e))) => tracing::warn!("L7 proxy: {e}"),
                    Ok(FromProxy::Applied(None)) => {}
                    Ok(FromProxy::Counters { connections, requests }) => {
                        counters[0].store(connections, std::sync::atomic::Ordering::Relaxed);
                        counters[1].store(requests, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!("L7 proxy sent a bad message: {e}"),
                }
            }
        })?;
        Ok(stream)
    }

    fn send(&self, line: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let mut conn = self.conn.lock().expect("proxy connection lock");
        if let Some(stream) = conn.as_mut() {
            if stream.write_all(line).is_ok() {
                return Ok(());
            }
        }
        // The proxy went away: start (or find) it again and resend.
        let mut stream = self.connect()?;
        stream.write_all(line)?;
        *conn = Some(stream);
        Ok(())
    }
}

impl ProxyControl for External {
    fn apply(&self, config: ProxyConfig) -> Result<(), String> {
        let mut line =
            serde_json::to_vec(&twill_proxy::control::ToProxy::Config(config)).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.send(&line).map_err(|e| format!("control socket {}: {e}", self.socket.display()))
    }

    fn counters(&self) -> (u64, u64) {
        let c = &self.counters;
        (c[0].load(std::sync::atomic::Ordering::Relaxed), c[1].load(std::sync::atomic::Ordering::Relaxed))
    }
}
