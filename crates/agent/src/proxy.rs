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
    /// The agent is uninstalling: the proxy is about to go, on purpose.
    fn shutdown(&self) {}
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

impl FlowRecords {
    /// One L7 flow into the metrics and the ring.
    pub fn push(&self, flow: &twill_observe::proto::flow::Flow) {
        self.metrics.observe(flow);
        self.ring.push(flow.clone());
    }
}

impl RecordSink for FlowRecords {
    fn record(&self, record: L7Record) {
        let flow = {
            let dir = self.directory.read().expect("directory lock");
            l7_flow(&to_event(&record), &dir)
        };
        self.push(&flow);
    }
}

/// The proxy as its own process (`twill-proxy`, next to the agent's
/// binary), reached over a unix socket in the agent's run directory. The
/// agent starts it when nothing answers there, detached into its own
/// session so it survives the agent; a restarted agent finds it and hands
/// it the configuration again, and connections it proxies never notice.
/// If the proxy dies, the agent starts a new one at once and hands it the
/// last configuration, as cilium-agent restarts Envoy: L7 ports are
/// dropped (never let through) for the moment in between.
pub struct External {
    inner: Arc<ExternalInner>,
}

struct ExternalInner {
    socket: std::path::PathBuf,
    binary: std::path::PathBuf,
    log: std::path::PathBuf,
    /// The live control connection and its generation: a reader that saw
    /// its own connection end revives the proxy only if nobody replaced
    /// that connection already.
    conn: std::sync::Mutex<(u64, Option<std::os::unix::net::UnixStream>)>,
    /// The last configuration line sent, for a new proxy.
    last: std::sync::Mutex<Option<Vec<u8>>>,
    /// Set by [`ProxyControl::shutdown`]: a proxy that goes away then is
    /// meant to.
    stopping: std::sync::atomic::AtomicBool,
    records: Arc<FlowRecords>,
    counters: [std::sync::atomic::AtomicU64; 2],
    /// `--threads` for the proxy's runtime (None: the proxy's default).
    threads: Option<usize>,
    /// How many configuration outcomes the proxy has sent, and the last
    /// one, for a caller waiting until its listeners are open.
    applied: std::sync::Mutex<(u64, Option<String>)>,
    applied_cv: std::sync::Condvar,
    /// The listener ports of the last configuration sent.
    ports: std::sync::Mutex<Vec<u16>>,
}

/// How long applying a configuration that opens or closes listeners waits
/// for the proxy to confirm: a request sent right after `policy import`
/// must find the listener open, not race it.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl External {
    pub fn start(
        run_dir: &std::path::Path,
        binary: std::path::PathBuf,
        records: Arc<FlowRecords>,
        threads: Option<usize>,
    ) -> std::io::Result<External> {
        let inner = Arc::new(ExternalInner {
            socket: twill_proxy::control::socket_path(run_dir),
            log: run_dir.join("proxy.log"),
            binary,
            conn: std::sync::Mutex::new((0, None)),
            last: std::sync::Mutex::new(None),
            stopping: Default::default(),
            records,
            counters: Default::default(),
            threads,
            applied: Default::default(),
            applied_cv: Default::default(),
            ports: Default::default(),
        });
        {
            let mut conn = inner.conn.lock().expect("proxy connection lock");
            let stream = ExternalInner::connect(&inner, 1)?;
            *conn = (1, Some(stream));
        }
        Ok(External { inner })
    }
}

impl ExternalInner {
    /// Connects to the running proxy, or starts one and waits (bounded)
    /// for its socket; a reader thread for generation `generation` takes
    /// the proxy's messages. Called with `conn` locked, so at most one
    /// proxy is ever being started.
    fn connect(this: &Arc<Self>, generation: u64) -> std::io::Result<std::os::unix::net::UnixStream> {
        use std::os::unix::{net::UnixStream, process::CommandExt};
        let stream = match UnixStream::connect(&this.socket) {
            Ok(s) => s,
            Err(_) => {
                // A dead proxy leaves its socket file behind.
                let _ = std::fs::remove_file(&this.socket);
                let log = std::fs::OpenOptions::new().create(true).append(true).open(&this.log)?;
                let mut cmd = std::process::Command::new(&this.binary);
                cmd.arg("--socket").arg(&this.socket);
                if let Some(n) = this.threads {
                    cmd.arg("--threads").arg(n.to_string());
                }
                cmd.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
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
                    match UnixStream::connect(&this.socket) {
                        Ok(s) => break s,
                        Err(e) if std::time::Instant::now() > deadline => return Err(e),
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                    }
                }
            }
        };
        let reader = stream.try_clone()?;
        let me = this.clone();
        std::thread::Builder::new().name("proxy-records".into()).spawn(move || {
            me.read(reader);
            me.revive(generation);
        })?;
        Ok(stream)
    }

    fn read(&self, reader: std::os::unix::net::UnixStream) {
        use std::io::BufRead;
        use twill_proxy::control::FromProxy;
        // Records come in batches of up to 256 lines: read them in one go.
        for line in std::io::BufReader::with_capacity(64 << 10, reader).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<FromProxy>(&line) {
                Ok(FromProxy::Record(r)) => self.records.record(r),
                Ok(FromProxy::Applied(outcome)) => {
                    if let Some(e) = &outcome {
                        tracing::warn!("L7 proxy: {e}");
                    }
                    let mut applied = self.applied.lock().expect("proxy applied lock");
                    *applied = (applied.0 + 1, outcome);
                    self.applied_cv.notify_all();
                }
                Ok(FromProxy::Counters { connections, requests }) => {
                    self.counters[0].store(connections, std::sync::atomic::Ordering::Relaxed);
                    self.counters[1].store(requests, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => tracing::warn!("L7 proxy sent a bad message: {e}"),
            }
        }
    }

    /// The connection of generation `dead` ended: start a new proxy with
    /// the last configuration, retrying with a bounded backoff, unless the
    /// agent is stopping or someone already did.
    fn revive(self: Arc<Self>, dead: u64) {
        let mut backoff = std::time::Duration::from_millis(50);
        loop {
            if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let mut conn = self.conn.lock().expect("proxy connection lock");
            if conn.0 != dead {
                return;
            }
            tracing::warn!("twill-proxy went away; starting it again");
            let generation = dead + 1;
            let last = self.last.lock().expect("proxy config lock").clone();
            let started = ExternalInner::connect(&self, generation).and_then(|mut stream| {
                use std::io::Write;
                if let Some(line) = last {
                    stream.write_all(&line)?;
                }
                Ok(stream)
            });
            match started {
                Ok(stream) => {
                    *conn = (generation, Some(stream));
                    return;
                }
                Err(e) => tracing::warn!("restarting twill-proxy: {e}"),
            }
            drop(conn);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
        }
    }

    fn send(this: &Arc<Self>, line: Vec<u8>) -> std::io::Result<()> {
        use std::io::Write;
        let mut conn = this.conn.lock().expect("proxy connection lock");
        *this.last.lock().expect("proxy config lock") = Some(line.clone());
        if let Some(stream) = conn.1.as_mut() {
            if stream.write_all(&line).is_ok() {
                return Ok(());
            }
        }
        // The proxy went away and its reader has not revived it yet: do it
        // here; the reader then sees a newer generation and leaves it.
        let generation = conn.0 + 1;
        let mut stream = ExternalInner::connect(this, generation)?;
        stream.write_all(&line)?;
        *conn = (generation, Some(stream));
        Ok(())
    }
}

impl ProxyControl for External {
    fn apply(&self, config: ProxyConfig) -> Result<(), String> {
        let mut ports: Vec<u16> = config.redirects.iter().map(|r| r.proxy_port).collect();
        ports.sort_unstable();
        let mut line =
            serde_json::to_vec(&twill_proxy::control::ToProxy::Config(config)).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let inner = &self.inner;
        let listeners_change = *inner.ports.lock().expect("proxy ports lock") != ports;
        let before = inner.applied.lock().expect("proxy applied lock").0;
        ExternalInner::send(inner, line)
            .map_err(|e| format!("control socket {}: {e}", inner.socket.display()))?;
        *inner.ports.lock().expect("proxy ports lock") = ports;
        if !listeners_change {
            return Ok(());
        }
        let applied = inner.applied.lock().expect("proxy applied lock");
        let (applied, timeout) = inner
            .applied_cv
            .wait_timeout_while(applied, APPLY_WAIT, |(count, _)| *count == before)
            .expect("proxy applied lock");
        if timeout.timed_out() {
            return Err(format!("twill-proxy did not confirm its listeners within {APPLY_WAIT:?}"));
        }
        applied.1.clone().map_or(Ok(()), Err)
    }

    fn counters(&self) -> (u64, u64) {
        let c = &self.inner.counters;
        (c[0].load(std::sync::atomic::Ordering::Relaxed), c[1].load(std::sync::atomic::Ordering::Relaxed))
    }

    fn shutdown(&self) {
        self.inner.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
