//! twill-agent: the per-host daemon.

mod agent;
mod config;
mod error;
mod events;
mod hubble;
mod metrics;
mod names;
mod policy;
mod records;
mod restore;
mod server;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use clap::Parser;
use tracing::{error, info};

use crate::{agent::Agent, config::Config};

#[derive(Parser, Debug)]
#[command(
    name = "twill-agent",
    version,
    about = "Twill host agent: eBPF networking, policy and observability"
)]
struct Args {
    /// Directory of the embedded state store.
    #[arg(long, default_value = "/var/lib/twill")]
    state_dir: PathBuf,
    /// Unix socket of the agent API (root only).
    #[arg(long, default_value = twill_api::DEFAULT_SOCKET)]
    api_socket: PathBuf,
    /// bpffs directory for pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/twill")]
    bpf_root: PathBuf,
    /// IPv4 CIDR endpoints on this node get addresses from.
    #[arg(long, default_value = "10.200.0.0/24")]
    pod_cidr: String,
    /// Name of this node (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// How many trace events the datapath emits: none (every packet at
    /// every point), low (every packet once), medium (per connection: new,
    /// TCP flag changes, every 5 s) or maximum (new, SYN/FIN/RST only).
    #[arg(long, default_value = "medium", value_parser = ["none", "low", "medium", "maximum"])]
    monitor_aggregation: String,
    /// Turn datapath events off entirely (no flows, no monitor output).
    #[arg(long)]
    disable_flows: bool,
    /// Unix socket of the Hubble-compatible observer API ("" to disable).
    #[arg(long, default_value = "/run/twill/hubble.sock")]
    hubble_socket: String,
    /// TCP address of the observer API ("" to disable). Only loopback
    /// unless you ask otherwise.
    #[arg(long, default_value = "127.0.0.1:4244")]
    hubble_listen: String,
    /// Address of the Prometheus metrics endpoint ("" to disable).
    #[arg(long, default_value = "127.0.0.1:9962")]
    prometheus_listen: String,
    /// Flows kept in memory for `twill observe` and Hubble clients.
    #[arg(long, default_value_t = twill_observe::DEFAULT_CAPACITY)]
    flow_buffer_size: usize,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Blocks SIGTERM and SIGINT in every thread and waits for them in one:
/// on either, the agent exits and leaves the datapath running (programs
/// and maps are pinned), as an upgrade or restart needs.
fn spawn_signal_thread(sockets: Vec<PathBuf>) {
    // SAFETY: plain sigset manipulation before any other thread exists.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: sigwait on the set blocked above.
        unsafe { libc::sigwait(&set, &mut signal) };
        info!(signal, "stopping; the datapath keeps forwarding until the next agent takes over");
        for socket in &sockets {
            let _ = std::fs::remove_file(socket);
        }
        std::process::exit(0);
    });
}

fn main() {
    let args = Args::parse();
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(args.log_level)
        .init();
    if let Err(e) = run(args) {
        error!("{e:#}");
        eprintln!("twill-agent: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let pod_cidr = args.pod_cidr.parse().map_err(|e| anyhow::anyhow!("--pod-cidr: {e}"))?;
    let config = Config {
        state_dir: args.state_dir,
        api_socket: args.api_socket,
        bpf_root: args.bpf_root,
        pod_cidr,
        node_name: args.node_name.unwrap_or_else(hostname),
        aggregation: match args.monitor_aggregation.as_str() {
            "none" => twill_abi::AGGREGATION_NONE,
            "low" => twill_abi::AGGREGATION_LOW,
            "maximum" => twill_abi::AGGREGATION_MAXIMUM,
            _ => twill_abi::AGGREGATION_MEDIUM,
        },
        flows: !args.disable_flows,
        hubble_socket: (!args.hubble_socket.is_empty()).then(|| PathBuf::from(&args.hubble_socket)),
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("twill-agent must run as root (it loads eBPF programs and creates network namespaces)");
    }
    spawn_signal_thread(
        std::iter::once(config.api_socket.clone()).chain(config.hubble_socket.clone()).collect(),
    );
    let listener = server::bind(&config.api_socket)?;
    let hubble_listen = match args.hubble_listen.as_str() {
        "" => None,
        addr => Some(addr.parse().map_err(|e| anyhow::anyhow!("--hubble-listen {addr:?}: {e}"))?),
    };
    if args.flow_buffer_size == 0 {
        anyhow::bail!("--flow-buffer-size must be at least 1");
    }
    let prometheus_listen: Option<std::net::SocketAddr> = match args.prometheus_listen.as_str() {
        "" => None,
        addr => Some(addr.parse().map_err(|e| anyhow::anyhow!("--prometheus-listen {addr:?}: {e}"))?),
    };
    let mut agent = Agent::start(config.clone())?;
    let agent_metrics = metrics::AgentMetrics::new();
    let hub = Arc::new(events::EventHub::default());
    let ring = Arc::new(twill_observe::FlowRing::new(args.flow_buffer_size));
    let directory = Arc::new(std::sync::RwLock::new(agent.directory()?));
    if let Some(events) = agent.datapath.take_events() {
        let sink = events::FlowSink {
            ring: ring.clone(),
            directory: directory.clone(),
            clock: twill_observe::Clock::now(),
            metrics: agent_metrics.hubble.clone(),
        };
        events::spawn_reader(events, hub.clone(), sink);
    }
    let hubble_socket = config.hubble_socket.clone();
    hubble::spawn(
        hubble::HubbleConfig { socket: hubble_socket, listen: hubble_listen },
        ring.clone(),
        directory.clone(),
    )?;
    let agent = Arc::new(Mutex::new(agent));
    // Kept alive for the agent's lifetime: dropping it stops the server.
    let _metrics_server = match prometheus_listen {
        Some(addr) => Some(
            metrics::serve(addr, &agent_metrics, agent.clone(), hub.clone(), ring)
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
    server::serve(listener, agent, hub, directory, agent_metrics.api.clone());
    Ok(())
}
