use std::path::PathBuf;

use twill_ipam::Cidr;

/// Everything an agent instance is told at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub api_socket: PathBuf,
    pub bpf_root: PathBuf,
    pub pod_cidr: Cidr,
    pub node_name: String,
    /// Trace event aggregation level (twill_abi::AGGREGATION_*).
    pub aggregation: u32,
    /// Whether the datapath emits events (drops, traces, verdicts) at all.
    pub flows: bool,
    /// The observer API socket, removed by `twill uninstall`.
    pub hubble_socket: Option<PathBuf>,
}
