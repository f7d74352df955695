//! twill-agent as a library: one module per concern, each owning its
//! state behind its methods, wired together by [`agent::Agent`], whose
//! `apply` is the one entry point for changes from any source. The
//! `twill-agent` binary is a thin `main` over [`run`].

pub mod agent;
pub mod cluster;
pub mod config;
mod ctgc;
mod directory;
mod dns;
mod endpoints;
pub mod error;
mod events;
mod fqdn;
mod hubble;
mod hubble_tls;
mod identities;
mod inspect;
mod ipcache;
mod lb;
mod lifecycle;
mod metrics;
mod names;
mod namespaces;
mod policy;
mod proxy;
mod records;
mod restore;
mod server;
mod services;
mod settings;

use std::sync::{mpsc, Arc, Mutex};

use tracing::info;

use crate::lifecycle::spawn_signal_thread;
pub use crate::{
    agent::{Agent, Change, Outcome},
    config::{Args, Config},
    error::AgentError,
    lifecycle::Shutdown,
};

/// Reads the agent's metrics sample under its lock, for each scrape.
fn sampler(agent: Arc<Mutex<Agent>>) -> impl Fn() -> Option<metrics::Sample> + Send + Sync + 'static {
    move || agent.lock().unwrap_or_else(|p| p.into_inner()).metrics_sample().ok()
}

/// Cluster mode: one mirror per shared prefix, feeding the entry point,
/// and the heartbeat beside them.
fn start_cluster_threads(agent: &Arc<Mutex<Agent>>) -> anyhow::Result<()> {
    let guard = agent.lock().unwrap_or_else(|p| p.into_inner());
    let Some(cluster) = guard.cluster() else { return Ok(()) };
    for (kind, prefix) in cluster.mirrored() {
        let agent = agent.clone();
        cluster::mirror::spawn(cluster.store(), kind, prefix, cluster.health(), move |batch| {
            let mut agent = agent.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = agent.apply(Change::Cluster(batch)) {
                tracing::warn!("applying a change from the kvstore: {}", e.chain());
            }
        })?;
    }
    let mut housekeeping = cluster.housekeeping();
    let interval = cluster.housekeeping_interval();
    std::thread::Builder::new().name("cluster-housekeeping".into()).spawn(move || loop {
        std::thread::sleep(interval);
        housekeeping();
    })?;
    Ok(())
}

/// Follows qdisc changes (a chained bandwidth plugin adding its shaper
/// after twill-cni's ADD, say) into [`Change::Shaping`], and looks at every
/// endpoint once, for what changed while no agent was watching.
fn start_shaping_watch(agent: &Arc<Mutex<Agent>>) -> anyhow::Result<()> {
    let watched = agent.clone();
    twill_datapath::netdev::watch_qdiscs(move |index| {
        let device = match index {
            Some(index) => match twill_datapath::netdev::device_name(index) {
                Some(name) => Some(name),
                // Gone already: its endpoint's teardown forgets it.
                None => return,
            },
            None => None,
        };
        // Read without the agent's lock; most changes (a new veth's
        // noqueue, say) change nothing and need no Change.
        if let Some(name) = &device {
            let shaped = twill_datapath::netdev::device_shaped(name).unwrap_or(true);
            if shaped == watched.lock().unwrap_or_else(|p| p.into_inner()).is_shaped(name) {
                return;
            }
        }
        let mut agent = watched.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = agent.apply(Change::Shaping { device }) {
            tracing::warn!("following a qdisc change: {}", e.chain());
        }
    })?;
    let mut agent = agent.lock().unwrap_or_else(|p| p.into_inner());
    agent.apply(Change::Shaping { device: None }).map_err(|e| anyhow::anyhow!("{}", e.chain()))?;
    Ok(())
}

/// Runs the agent until a signal or `twill uninstall`; returns why it
/// stopped. Errors at start name the flag or subsystem that failed.
pub fn run(config: Config) -> anyhow::Result<Shutdown> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("twill-agent must run as root (it loads eBPF programs and creates network namespaces)");
    }
    // Read before anything is set up, so a bad file stops the start with
    // nothing to undo.
    let hubble_tls = config.hubble_tls.as_ref().map(hubble_tls::server_config).transpose()?;
    let (shutdown_tx, shutdown_rx) = mpsc::channel();
    spawn_signal_thread(shutdown_tx.clone())?;
    let listener = server::bind(&config.api_socket)?;
    let mut agent = Agent::start(config.clone()).map_err(|e| anyhow::anyhow!("{}", e.chain()))?;
    // Cluster mode may have taken the pod CIDR from the pool.
    let config = agent.config().clone();
    let agent_metrics = metrics::AgentMetrics::new();
    let hub = Arc::new(events::EventHub::default());
    let ring = Arc::new(twill_observe::FlowRing::new(config.flow_buffer_size));
    let agent_events = Arc::new(twill_observe::AgentEvents::default());
    let debug_events = Arc::new(twill_observe::DebugEvents::default());
    let directory = agent.directory();
    if let Some(events) = agent.take_events() {
        let sink = events::FlowSink {
            ring: ring.clone(),
            debug: debug_events.clone(),
            directory: directory.clone(),
            clock: twill_observe::Clock::now(),
            metrics: agent_metrics.hubble.clone(),
            links: events::LinkNames::default(),
        };
        events::spawn_reader(events, hub.clone(), sink);
    }
    // The L7 proxy, for policy entries with L7 rules; its records are
    // flows in the same ring.
    let records = Arc::new(proxy::FlowRecords {
        ring: ring.clone(),
        directory: directory.clone(),
        metrics: agent_metrics.hubble.clone(),
    });
    // Its own process when its binary is installed next to the agent's,
    // so restarting the agent never cuts proxied connections; else in
    // this process.
    let binary = std::env::current_exe()?.with_file_name("twill-proxy");
    let run_dir =
        config.api_socket.parent().map(std::path::Path::to_path_buf).unwrap_or_else(|| "/run/twill".into());
    let dns_records = records.clone();
    let control: Arc<dyn proxy::ProxyControl> = match binary.exists() {
        true => match proxy::External::start(&run_dir, binary, records.clone(), config.proxy_threads) {
            Ok(external) => Arc::new(external),
            Err(e) => {
                tracing::warn!("starting twill-proxy: {e}; running the L7 proxy in the agent");
                Arc::new(proxy::start_in_process(records)?)
            }
        },
        false => Arc::new(proxy::start_in_process(records)?),
    };
    agent.set_proxy(control);
    // Standalone, the peer service's node list stays this node alone; in
    // cluster mode the agent keeps it to the cluster's nodes.
    let peers = hubble::spawn(
        hubble::HubbleConfig {
            node_name: config.node_name.clone(),
            socket: config.hubble_socket.clone(),
            listen: config.hubble_listen,
            tls: hubble_tls,
        },
        ring.clone(),
        directory,
        agent_events.clone(),
        debug_events.clone(),
    )?;
    let debug_ring = debug_events;
    agent.set_peers(peers);
    agent.set_agent_events(agent_events);
    let agent = Arc::new(Mutex::new(agent));
    // The DNS proxy, for policy entries with rules.dns; kept for the
    // agent's lifetime.
    let dns_tables = Arc::new(dns::DnsTables::default());
    let _dns_proxy = dns::start(&config.dns, dns_tables.clone(), agent.clone(), dns_records)?;
    agent.lock().unwrap_or_else(|p| p.into_inner()).set_dns_tables(dns_tables);
    start_cluster_threads(&agent)?;
    start_shaping_watch(&agent)?;
    let sweeper = twill_datapath::ctgc::ConntrackSweeper::open(&config.bpf_root)
        .map_err(|e| anyhow::anyhow!("conntrack garbage collection: {e}"))?;
    ctgc::spawn(
        sweeper,
        config.conntrack_gc,
        // twill_lb4_nat has the same capacity.
        twill_abi::MAX_CT_ENTRIES as u64,
        ctgc::GcMetrics::new(&agent_metrics.registry),
    )?;
    // Kept alive for the agent's lifetime: dropping it stops the server.
    let _metrics_server = match config.prometheus_listen {
        Some(addr) => Some(
            metrics::serve(addr, &agent_metrics, sampler(agent.clone()), hub.clone(), ring, debug_ring)
                .map_err(|e| anyhow::anyhow!("binding --prometheus-listen {addr}: {e}"))?,
        ),
        None => None,
    };
    info!(
        node = %config.node_name,
        pod_cidr = %config.pod_cidr,
        socket = %config.api_socket.display(),
        "twill-agent ready"
    );
    let context = server::Context { agent, hub, metrics: agent_metrics.api.clone(), shutdown: shutdown_tx };
    std::thread::Builder::new().name("api".into()).spawn(move || server::serve(listener, context))?;
    let reason = shutdown_rx.recv().unwrap_or(Shutdown::Signal(0));
    if let Shutdown::Signal(signal) = reason {
        info!(signal, "stopping; the datapath keeps forwarding until the next agent takes over");
        for socket in std::iter::once(&config.api_socket).chain(config.hubble_socket.as_ref()) {
            let _ = std::fs::remove_file(socket);
        }
    }
    Ok(reason)
}
