//! The agent's flags and the configuration derived from them.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use twill_ipam::Cidr;

/// Where runtime files (sockets) go unless a flag names them. Every path
/// an agent serves on derives from its API socket's directory, so two
/// agents with different `--api-socket` never share a file.
pub const DEFAULT_RUN_DIR: &str = "/run/twill";

#[derive(Parser, Debug)]
#[command(
    name = "twill-agent",
    version,
    about = "Twill host agent: eBPF networking, policy and observability"
)]
pub struct Args {
    /// Directory of the embedded state store.
    #[arg(long, default_value = "/var/lib/twill")]
    pub state_dir: PathBuf,
    /// Unix socket of the agent API (root only). Its directory is the
    /// agent's run directory: other sockets default to it.
    #[arg(long, default_value = twill_api::DEFAULT_SOCKET)]
    pub api_socket: PathBuf,
    /// bpffs directory for pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/twill")]
    pub bpf_root: PathBuf,
    /// IPv4 CIDR endpoints on this node get addresses from (standalone
    /// default 10.200.0.0/24; in cluster mode, taken from --cluster-pool
    /// unless given).
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Name of this node (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// How many trace events the datapath emits: none (every packet at
    /// every point), low (every packet once), medium (per connection: new,
    /// TCP flag changes, every 5 s) or maximum (new, SYN/FIN/RST only).
    #[arg(long, default_value = "medium", value_parser = ["none", "low", "medium", "maximum"])]
    pub monitor_aggregation: String,
    /// TCP flags whose first sighting in each direction of a connection is
    /// reported at medium and maximum aggregation, comma-separated: syn,
    /// fin, rst, psh, ack, urg, ece, cwr, or all (Cilium's flag; `all` is
    /// what Cilium's Helm chart sets, `syn,fin,rst` the cilium-agent
    /// default, and halves the flows of a short connection).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub monitor_aggregation_flags: Vec<String>,
    /// Turn datapath events off entirely (no flows, no monitor output).
    #[arg(long)]
    pub disable_flows: bool,
    /// Subsystems to debug verbosely, comma-separated or repeated, as
    /// Cilium's flag: `datapath` makes the datapath send debug messages
    /// (`hubble observe debug-events`); `twill config set
    /// debug-datapath=true|false` changes it while the agent runs.
    #[arg(long, value_delimiter = ',', value_parser = ["datapath"])]
    pub debug_verbose: Vec<String>,
    /// How the endpoint programs sit on each endpoint's host device: tcx
    /// links (they leave the device's ingress qdisc slot to a chained
    /// shaper such as the reference `bandwidth` plugin's egressRate, but
    /// each attach and detach waits for an RCU grace period, about 30 ms
    /// more per endpoint), cls-bpf filters on a clsact qdisc (fast; a
    /// chained `bandwidth` with egressRate then fails), or auto: tcx where
    /// the kernel has it (6.6 and later). Changing it on a restart moves
    /// existing endpoints over without a gap.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tcx", "cls-bpf"])]
    pub endpoint_attach: String,
    /// Route endpoints' traffic through the host stack, as Cilium's flag
    /// does: between local endpoints, and out of the node, where the
    /// host's netfilter (FORWARD, POSTROUTING: an iptables SNAT rule for
    /// egress, say) then sees it. By default the endpoint programs route
    /// it themselves: into a local endpoint with bpf_redirect_peer, out of
    /// the node by the host's FIB with bpf_redirect_neigh.
    #[arg(long)]
    pub enable_host_legacy_routing: bool,
    /// Unix socket of the Hubble-compatible observer API ("" to disable;
    /// default: hubble.sock beside the API socket).
    #[arg(long)]
    pub hubble_socket: Option<String>,
    /// TCP address of the observer API ("" to disable). Only loopback
    /// unless you ask otherwise. (`--hubble-listen` is the older name.)
    #[arg(long, alias = "hubble-listen", default_value = "127.0.0.1:4244")]
    pub hubble_listen_address: String,
    /// PEM certificate (chain) of the TCP listener: with --hubble-tls-key,
    /// the listener speaks TLS only.
    #[arg(long)]
    pub hubble_tls_cert: Option<PathBuf>,
    /// PEM private key of --hubble-tls-cert.
    #[arg(long)]
    pub hubble_tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients of the TCP listener must present a
    /// certificate signed by one of them (mutual TLS).
    #[arg(long)]
    pub hubble_tls_client_ca: Option<PathBuf>,
    /// Address of the Prometheus metrics endpoint ("" to disable).
    #[arg(long, default_value = "127.0.0.1:9962")]
    pub prometheus_listen: String,
    /// Flows kept in memory for `twill observe` and Hubble clients.
    #[arg(long, default_value_t = twill_observe::DEFAULT_CAPACITY)]
    pub flow_buffer_size: usize,
    /// Where twill-cni queues DELs and GCs while the agent is down (its
    /// config's `queueDir`); drained at start. Default: cni-queue in the
    /// state directory.
    #[arg(long)]
    pub cni_queue_dir: Option<PathBuf>,
    /// IPv4 CIDR ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/16")]
    pub service_cidr: String,
    /// Range node ports are allocated from and must lie in, LOW-HIGH.
    #[arg(long, default_value = "30000-32767")]
    pub node_port_range: String,
    /// Entries of every Maglev table: one of Maglev's primes (251, 509,
    /// 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071).
    #[arg(long, default_value_t = twill_abi::LB_MAGLEV_DEFAULT_SIZE)]
    pub bpf_lb_maglev_table_size: u32,
    /// The node's devices facing the outside, comma-separated: NodePort
    /// clients arriving there are translated per packet.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// The cgroup v2 directory whose sockets get service translation
    /// (default: the cgroup v2 mount, so every process).
    #[arg(long)]
    pub cgroup_root: Option<PathBuf>,
    /// etcd v3 client URLs, comma-separated: cluster mode. Without them
    /// the agent runs standalone on its embedded store.
    #[arg(long, value_delimiter = ',')]
    pub kvstore_endpoints: Vec<String>,
    /// PEM CA certificates etcd's server certificate must chain to.
    #[arg(long)]
    pub kvstore_ca: Option<PathBuf>,
    /// PEM client certificate presented to etcd (with --kvstore-key).
    #[arg(long)]
    pub kvstore_cert: Option<PathBuf>,
    /// PEM private key of --kvstore-cert.
    #[arg(long)]
    pub kvstore_key: Option<PathBuf>,
    /// Seconds this node's keys outlive its last renewal: a node silent
    /// for that long leaves every other node's view.
    #[arg(long, default_value_t = 15)]
    pub kvstore_lease_ttl: u64,
    /// The node's underlay address, which other nodes tunnel or route to
    /// (default: the source address of the default route).
    #[arg(long)]
    pub node_ip: Option<String>,
    /// IPv4 CIDR the nodes' pod CIDRs are carved from.
    #[arg(long)]
    pub cluster_pool: Option<String>,
    /// Prefix length of each node's pod CIDR from --cluster-pool.
    #[arg(long, default_value_t = 24)]
    pub cluster_pool_mask_size: u8,
    /// How pod traffic crosses nodes: tunnel (VXLAN, UDP 8472, the
    /// sender's identity in the VNI) or native (routes to each node's pod
    /// CIDR via its node IP, on a shared L2).
    #[arg(long, default_value = "tunnel", value_parser = ["tunnel", "native"])]
    pub routing_mode: String,
    /// Name of the cluster this node joins.
    #[arg(long, default_value = "default")]
    pub cluster_name: String,
    /// Labels of this node, k=v comma-separated, for fromNodes/toNodes.
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// How often lapsed conntrack entries are removed from the maps: 0
    /// for a dynamic interval (from 10 s to --conntrack-gc-max-interval,
    /// shorter while many entries lapse, as Cilium's), or a fixed one
    /// such as 30s or 5m.
    #[arg(long, default_value = "0")]
    pub conntrack_gc_interval: String,
    /// The longest wait of the dynamic interval.
    #[arg(long, default_value = "30m")]
    pub conntrack_gc_max_interval: String,
    /// Seconds an address learned from a DNS answer stays allowed for
    /// toFQDNs at least, whatever the answer's TTL (Cilium's default:
    /// 3600; applications keep using addresses past their TTL).
    #[arg(long, default_value_t = 3600)]
    pub tofqdns_min_ttl: u32,
    /// Addresses kept per name and endpoint; past it, those expiring
    /// first go.
    #[arg(long, default_value_t = 50)]
    pub tofqdns_endpoint_max_ip_per_hostname: usize,
    /// What a lookup rules.dns deny gets: refused or nameError.
    #[arg(long, default_value = "refused", value_parser = ["refused", "nameError"])]
    pub tofqdns_dns_reject_response_code: String,
    /// Port of the transparent DNS proxy (UDP and TCP, on 127.0.0.1); it
    /// must lie outside the L7 proxy's range, 10000-20000.
    #[arg(long, default_value_t = 9053)]
    pub tofqdns_proxy_port: u16,
    /// The longest a DNS answer waits for policy to allow its addresses
    /// before the client gets it, e.g. 100ms.
    #[arg(long, default_value = "100ms")]
    pub tofqdns_proxy_response_max_delay: String,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    pub log_level: tracing::Level,
    /// Worker threads of the L7 proxy's runtime (twill-proxy's
    /// --threads); 1, the default, runs it on one thread.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub proxy_threads: Option<u16>,
}

/// The DNS proxy's and the FQDN cache's settings.
#[derive(Debug, Clone)]
pub struct DnsProxyConfig {
    pub port: u16,
    pub min_ttl: u32,
    pub max_ips_per_name: usize,
    /// NXDOMAIN instead of REFUSED for denied lookups.
    pub reject_name_error: bool,
    pub response_max_delay: std::time::Duration,
}

/// Everything an agent instance is told at start, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub api_socket: PathBuf,
    pub bpf_root: PathBuf,
    /// In cluster mode without --pod-cidr, replaced by the CIDR the node
    /// holds in the store before the agent starts.
    pub pod_cidr: Cidr,
    /// Whether --pod-cidr was given (cluster mode checks it against the
    /// other nodes' instead of taking one from the pool).
    pub pod_cidr_explicit: bool,
    /// Set: cluster mode.
    pub cluster: Option<ClusterConfig>,
    pub node_name: String,
    /// Trace event aggregation level (twill_abi::AGGREGATION_*).
    pub aggregation: u32,
    /// TCP flags that earn a trace when first seen (--monitor-aggregation-flags).
    pub report_flags: u32,
    /// How endpoint programs are attached (--endpoint-attach).
    pub endpoint_attach: twill_datapath::EndpointAttach,
    /// Whether endpoints' traffic goes through the host stack
    /// (--enable-host-legacy-routing).
    pub legacy_host_routing: bool,
    /// Whether the datapath emits events (drops, traces, verdicts) at all.
    pub flows: bool,
    /// Whether it also emits debug messages (--debug-verbose datapath).
    pub debug_datapath: bool,
    /// The observer API socket, removed by `twill uninstall`.
    pub hubble_socket: Option<PathBuf>,
    pub hubble_listen: Option<SocketAddr>,
    /// TLS of the TCP listener; the Unix socket is always plaintext.
    pub hubble_tls: Option<HubbleTls>,
    pub prometheus_listen: Option<SocketAddr>,
    pub flow_buffer_size: usize,
    pub cni_queue_dir: PathBuf,
    pub service_cidr: Cidr,
    pub node_port_range: std::ops::RangeInclusive<u16>,
    pub maglev_table_size: u32,
    pub devices: Vec<String>,
    pub cgroup_root: Option<PathBuf>,
    pub conntrack_gc: crate::ctgc::GcInterval,
    pub dns: DnsProxyConfig,
    pub proxy_threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingMode {
    Tunnel,
    Native,
}

impl RoutingMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            RoutingMode::Tunnel => "tunnel",
            RoutingMode::Native => "native",
        }
    }
}

/// Cluster mode: the shared store and this node's place in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub endpoints: Vec<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub lease_ttl: std::time::Duration,
    /// None: found from the default route when the agent starts.
    pub node_ip: Option<std::net::Ipv4Addr>,
    pub pool: Option<Cidr>,
    pub pool_mask_size: u8,
    pub routing: RoutingMode,
    pub name: String,
    pub node_labels: std::collections::BTreeMap<String, String>,
}

/// The files of the Hubble TCP listener's TLS, as given; read and checked
/// when the listener starts (see `hubble_tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubbleTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set: mutual TLS, client certificates must chain to these CAs.
    pub client_ca: Option<PathBuf>,
}

/// A flag whose value is wrong: names the flag, the value and the reason.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {value:?}: {reason}")]
pub struct FlagError {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

fn optional_addr(flag: &'static str, value: &str) -> Result<Option<SocketAddr>, FlagError> {
    match value {
        "" => Ok(None),
        addr => addr.parse().map(Some).map_err(|e: std::net::AddrParseError| FlagError {
            flag,
            value: addr.into(),
            reason: e.to_string(),
        }),
    }
}

/// --monitor-aggregation-flags: flag names (any case) or `all`, as bits.
fn report_flags(names: &[String]) -> Result<u32, FlagError> {
    names.iter().try_fold(0, |bits, name| {
        let bit = match name.trim().to_ascii_uppercase().as_str() {
            "ALL" => twill_abi::REPORT_FLAGS_ALL,
            upper => twill_numbers::tcp_flag_by_name(upper).map(u32::from).ok_or_else(|| FlagError {
                flag: "monitor-aggregation-flags",
                value: name.clone(),
                reason: "not a TCP flag (syn, fin, rst, psh, ack, urg, ece, cwr) or all".into(),
            })?,
        };
        Ok(bits | bit)
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn parse_cidr(flag: &'static str, text: &str) -> Result<Cidr, FlagError> {
    // CidrError's text already quotes the value.
    text.parse().map_err(|e: twill_ipam::CidrError| FlagError {
        flag,
        value: text.into(),
        reason: e.to_string().trim_start_matches(&format!("{text:?}: ")).to_string(),
    })
}

/// Cluster flags without --kvstore-endpoints would be silently ignored:
/// name the first one instead.
fn cluster_config(args: &Args) -> Result<Option<ClusterConfig>, FlagError> {
    let flag = |flag: &'static str, value: &str, reason: &str| FlagError {
        flag,
        value: value.into(),
        reason: reason.into(),
    };
    if args.kvstore_endpoints.is_empty() {
        let given = [
            ("kvstore-ca", args.kvstore_ca.as_ref().map(|p| p.display().to_string())),
            ("kvstore-cert", args.kvstore_cert.as_ref().map(|p| p.display().to_string())),
            ("kvstore-key", args.kvstore_key.as_ref().map(|p| p.display().to_string())),
            ("node-ip", args.node_ip.clone()),
            ("cluster-pool", args.cluster_pool.clone()),
            ("node-labels", (!args.node_labels.is_empty()).then(|| args.node_labels.join(","))),
        ];
        if let Some((name, Some(value))) = given.into_iter().find(|(_, v)| v.is_some()) {
            return Err(flag(name, &value, "is for cluster mode: give --kvstore-endpoints as well"));
        }
        return Ok(None);
    }
    for url in &args.kvstore_endpoints {
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
            return Err(flag("kvstore-endpoints", url, "must be an etcd client URL, http(s)://HOST:PORT"));
        }
    }
    match (&args.kvstore_cert, &args.kvstore_key) {
        (Some(c), None) => {
            return Err(flag("kvstore-cert", &c.display().to_string(), "needs --kvstore-key as well"))
        }
        (None, Some(k)) => {
            return Err(flag("kvstore-key", &k.display().to_string(), "needs --kvstore-cert as well"))
        }
        _ => {}
    }
    if args.kvstore_lease_ttl < 2 {
        return Err(flag(
            "kvstore-lease-ttl",
            &args.kvstore_lease_ttl.to_string(),
            "must be at least 2 seconds",
        ));
    }
    let node_ip = match &args.node_ip {
        None => None,
        Some(text) => match text.parse::<std::net::Ipv4Addr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() && !ip.is_multicast() => Some(ip),
            _ => return Err(flag("node-ip", text, "must be this node's unicast IPv4 underlay address")),
        },
    };
    let pool = args.cluster_pool.as_deref().map(|p| parse_cidr("cluster-pool", p)).transpose()?;
    let mask = args.cluster_pool_mask_size;
    if let Some(pool) = &pool {
        if mask < pool.prefix_len || mask > 30 {
            return Err(flag(
                "cluster-pool-mask-size",
                &mask.to_string(),
                &format!("must be between the pool's prefix length ({}) and 30", pool.prefix_len),
            ));
        }
    } else if args.pod_cidr.is_none() {
        return Err(flag(
            "cluster-pool",
            "",
            "cluster mode needs --cluster-pool (or this node's --pod-cidr)",
        ));
    }
    let name = &args.cluster_name;
    if name.is_empty()
        || name.len() > 32
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(flag("cluster-name", name, "1 to 32 characters of a-z, 0-9 and '-'"));
    }
    let mut node_labels = std::collections::BTreeMap::new();
    for label in &args.node_labels {
        match label.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) && !k.starts_with('/') => {
                node_labels.insert(k.to_string(), v.to_string());
            }
            _ => return Err(flag("node-labels", label, "each label is KEY=VALUE")),
        }
    }
    Ok(Some(ClusterConfig {
        endpoints: args.kvstore_endpoints.clone(),
        ca: args.kvstore_ca.clone(),
        cert: args.kvstore_cert.clone(),
        key: args.kvstore_key.clone(),
        lease_ttl: std::time::Duration::from_secs(args.kvstore_lease_ttl),
        node_ip,
        pool,
        pool_mask_size: mask,
        routing: if args.routing_mode == "native" { RoutingMode::Native } else { RoutingMode::Tunnel },
        name: name.clone(),
        node_labels,
    }))
}

impl Config {
    pub fn from_args(args: Args) -> Result<Self, FlagError> {
        let pod_cidr = parse_cidr("pod-cidr", args.pod_cidr.as_deref().unwrap_or("10.200.0.0/24"))?;
        let cluster = cluster_config(&args)?;
        let conntrack_gc = conntrack_gc(&args.conntrack_gc_interval, &args.conntrack_gc_max_interval)?;
        let dns = dns_proxy(&args)?;
        if args.flow_buffer_size == 0 {
            return Err(FlagError {
                flag: "flow-buffer-size",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let run_dir = args.api_socket.parent().map(PathBuf::from).unwrap_or_else(|| DEFAULT_RUN_DIR.into());
        let hubble_socket = match args.hubble_socket.as_deref() {
            Some("") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => Some(run_dir.join("hubble.sock")),
        };
        let cni_queue_dir = args.cni_queue_dir.unwrap_or_else(|| args.state_dir.join("cni-queue"));
        let service_cidr = parse_cidr("service-cidr", &args.service_cidr)?;
        let node_port_range = parse_port_range(&args.node_port_range)?;
        twill_service::maglev::check_size(args.bpf_lb_maglev_table_size).map_err(|reason| FlagError {
            flag: "bpf-lb-maglev-table-size",
            value: args.bpf_lb_maglev_table_size.to_string(),
            reason,
        })?;
        if let Some(device) = args.devices.iter().find(|d| d.is_empty() || d.len() > 15 || d.contains('/')) {
            return Err(FlagError {
                flag: "devices",
                value: device.clone(),
                reason: "not a network device name (1 to 15 characters, no '/')".into(),
            });
        }
        let report_flags = report_flags(&args.monitor_aggregation_flags)?;
        let hubble_listen = optional_addr("hubble-listen-address", &args.hubble_listen_address)?;
        let hubble_tls = hubble_tls(args.hubble_tls_cert, args.hubble_tls_key, args.hubble_tls_client_ca)?;
        if let (Some(tls), None) = (&hubble_tls, hubble_listen) {
            return Err(FlagError {
                flag: "hubble-tls-cert",
                value: tls.cert.display().to_string(),
                reason: "TLS is for the TCP listener, and --hubble-listen-address is empty".into(),
            });
        }
        Ok(Config {
            dns,
            service_cidr,
            node_port_range,
            maglev_table_size: args.bpf_lb_maglev_table_size,
            devices: args.devices,
            cgroup_root: args.cgroup_root,
            cni_queue_dir,
            state_dir: args.state_dir,
            api_socket: args.api_socket,
            bpf_root: args.bpf_root,
            pod_cidr,
            pod_cidr_explicit: args.pod_cidr.is_some(),
            cluster,
            node_name: args.node_name.unwrap_or_else(hostname),
            aggregation: match args.monitor_aggregation.as_str() {
                "none" => twill_abi::AGGREGATION_NONE,
                "low" => twill_abi::AGGREGATION_LOW,
                "maximum" => twill_abi::AGGREGATION_MAXIMUM,
                _ => twill_abi::AGGREGATION_MEDIUM,
            },
            report_flags,
            flows: !args.disable_flows,
            legacy_host_routing: args.enable_host_legacy_routing,
            debug_datapath: args.debug_verbose.iter().any(|s| s == "datapath"),
            endpoint_attach: match args.endpoint_attach.as_str() {
                "tcx" => twill_datapath::EndpointAttach::Tcx,
                "cls-bpf" => twill_datapath::EndpointAttach::ClsBpf,
                _ => twill_datapath::EndpointAttach::probe(),
            },
            hubble_socket,
            hubble_listen,
            hubble_tls,
            prometheus_listen: optional_addr("prometheus-listen", &args.prometheus_listen)?,
            flow_buffer_size: args.flow_buffer_size,
            proxy_threads: args.proxy_threads.map(usize::from),
            conntrack_gc,
        })
    }
}

fn dns_proxy(args: &Args) -> Result<DnsProxyConfig, FlagError> {
    let port = args.tofqdns_proxy_port;
    let proxy_range = crate::policy::redirects::PROXY_PORT_MIN..=crate::policy::redirects::PROXY_PORT_MAX;
    if port == 0 || proxy_range.contains(&port) {
        return Err(FlagError {
            flag: "tofqdns-proxy-port",
            value: port.to_string(),
            reason: format!(
                "must be a port outside the L7 proxy's range {}-{}",
                proxy_range.start(),
                proxy_range.end()
            ),
        });
    }
    if args.tofqdns_endpoint_max_ip_per_hostname == 0 {
        return Err(FlagError {
            flag: "tofqdns-endpoint-max-ip-per-hostname",
            value: "0".into(),
            reason: "must be at least 1".into(),
        });
    }
    let delay = &args.tofqdns_proxy_response_max_delay;
    let Some(response_max_delay) =
        crate::ctgc::parse_interval(delay).filter(|d| *d <= std::time::Duration::from_secs(10))
    else {
        return Err(FlagError {
            flag: "tofqdns-proxy-response-max-delay",
            value: delay.clone(),
            reason: "must be a duration of at most 10s, such as 100ms or 1s".into(),
        });
    };
    Ok(DnsProxyConfig {
        port,
        min_ttl: args.tofqdns_min_ttl,
        max_ips_per_name: args.tofqdns_endpoint_max_ip_per_hostname,
        reject_name_error: args.tofqdns_dns_reject_response_code == "nameError",
        response_max_delay,
    })
}

fn conntrack_gc(interval: &str, max: &str) -> Result<crate::ctgc::GcInterval, FlagError> {
    use crate::ctgc::{parse_interval, GcInterval};
    let flag = |flag: &'static str, value: &str, reason: &str| FlagError {
        flag,
        value: value.into(),
        reason: reason.into(),
    };
    let Some(max_d) = parse_interval(max).filter(|d| !d.is_zero()) else {
        return Err(flag("conntrack-gc-max-interval", max, "must be a duration such as 30m, 1h or 600s"));
    };
    match parse_interval(interval) {
        Some(d) if d.is_zero() => Ok(GcInterval::Dynamic { max: max_d }),
        Some(d) => Ok(GcInterval::Fixed(d)),
        None => Err(flag(
            "conntrack-gc-interval",
            interval,
            "must be 0 (dynamic) or a duration such as 30s or 5m",
        )),
    }
}

/// The TLS flags come as a set: a certificate needs its key and the other
/// way round, and client CAs mean nothing without a server certificate.
fn hubble_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<HubbleTls>, FlagError> {
    let missing = |flag: &'static str, value: &PathBuf, needs: &str| FlagError {
        flag,
        value: value.display().to_string(),
        reason: format!("needs --{needs} as well"),
    };
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(HubbleTls { cert, key, client_ca })),
        (Some(cert), None) => Err(missing("hubble-tls-cert", &cert, "hubble-tls-key")),
        (None, Some(key)) => Err(missing("hubble-tls-key", &key, "hubble-tls-cert")),
        (None, None) => match client_ca {
            Some(ca) => Err(missing("hubble-tls-client-ca", &ca, "hubble-tls-cert and --hubble-tls-key")),
            None => Ok(None),
        },
    }
}

/// LOW-HIGH, both ports, LOW <= HIGH.
fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, FlagError> {
    let err = |reason: &str| FlagError { flag: "node-port-range", value: text.into(), reason: reason.into() };
    let (low, high) = text.split_once('-').ok_or_else(|| err("must be LOW-HIGH, e.g. 30000-32767"))?;
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let (Some(low), Some(high)) = (port(low), port(high)) else {
        return Err(err("both ends must be ports, 1 to 65535"));
    };
    if low > high {
        return Err(err("the low end is above the high end"));
    }
    Ok(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(argv: &[&str]) -> Result<Config, FlagError> {
        Config::from_args(
            Args::try_parse_from(std::iter::once("twill-agent").chain(argv.iter().copied())).unwrap(),
        )
    }

    #[test]
    fn the_hubble_socket_follows_the_api_socket() {
        let c = config(&["--api-socket", "/run/node1/twill.sock"]).unwrap();
        assert_eq!(c.hubble_socket, Some(PathBuf::from("/run/node1/hubble.sock")));
        let c = config(&[]).unwrap();
        assert_eq!(c.hubble_socket, Some(PathBuf::from("/run/twill/hubble.sock")));
        let c = config(&["--hubble-socket", ""]).unwrap();
        assert_eq!(c.hubble_socket, None);
        let c = config(&["--api-socket", "/a/t.sock", "--hubble-socket", "/b/h.sock"]).unwrap();
        assert_eq!(c.hubble_socket, Some(PathBuf::from("/b/h.sock")));
    }

    #[test]
    fn aggregation_flags_are_cilium_s_names() {
        assert_eq!(config(&[]).unwrap().report_flags, 0xff, "all, as Cilium's Helm chart sets");
        let c = config(&["--monitor-aggregation-flags", "syn,FIN", "--monitor-aggregation-flags", "rst"]);
        assert_eq!(c.unwrap().report_flags, 0x07, "syn, fin, rst: the cilium-agent default");
        let c = config(&["--monitor-aggregation-flags", "ack,all"]);
        assert_eq!(c.unwrap().report_flags, 0xff);
    }

    #[test]
    fn bad_flags_are_named() {
        let e = config(&["--pod-cidr", "10.0.0.1/24"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--pod-cidr: \"10.0.0.1/24\": host bits are set; did you mean 10.0.0.0/24?"
        );
        let e = config(&["--hubble-listen", "nowhere"]).unwrap_err();
        assert!(e.to_string().starts_with("--hubble-listen-address: \"nowhere\": "), "{e}");
        let e = config(&["--monitor-aggregation-flags", "syn,fn"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--monitor-aggregation-flags: \"fn\": not a TCP flag (syn, fin, rst, psh, ack, urg, ece, cwr) or all"
        );
        let e = config(&["--flow-buffer-size", "0"]).unwrap_err();
        assert_eq!(e.flag, "flow-buffer-size");
        let e = config(&["--node-port-range", "32767-30000"]).unwrap_err();
        assert_eq!(e.to_string(), "--node-port-range: \"32767-30000\": the low end is above the high end");
        let e = config(&["--bpf-lb-maglev-table-size", "1000"]).unwrap_err();
        assert_eq!(e.flag, "bpf-lb-maglev-table-size");
        let e = config(&["--service-cidr", "10.96.0.1/16"]).unwrap_err();
        assert_eq!(e.flag, "service-cidr");
        let e = config(&["--hubble-tls-cert", "/c.pem"]).unwrap_err();
        assert_eq!(e.to_string(), "--hubble-tls-cert: \"/c.pem\": needs --hubble-tls-key as well");
        let e = config(&["--hubble-tls-key", "/k.pem"]).unwrap_err();
        assert_eq!(e.flag, "hubble-tls-key");
        let e = config(&["--hubble-tls-client-ca", "/ca.pem"]).unwrap_err();
        assert_eq!(e.flag, "hubble-tls-client-ca");
        let tls = ["--hubble-tls-cert", "/c.pem", "--hubble-tls-key", "/k.pem"];
        let e = config(&[&tls[..], &["--hubble-listen-address", ""]].concat()).unwrap_err();
        assert_eq!(e.flag, "hubble-tls-cert");
        let c = config(&tls).unwrap();
        assert_eq!(c.hubble_tls.map(|t| t.key), Some(PathBuf::from("/k.pem")));
        let c = config(&[]).unwrap();
        assert_eq!(c.hubble_listen, Some("127.0.0.1:4244".parse().unwrap()));
        assert_eq!(c.hubble_tls, None);
        assert_eq!(c.node_port_range, 30000..=32767);
        assert_eq!(c.maglev_table_size, 16381);
    }

    #[test]
    fn cluster_flags_are_checked() {
        let c = config(&[]).unwrap();
        assert!(c.cluster.is_none());
        let e = config(&["--cluster-pool", "10.0.0.0/16"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--cluster-pool: \"10.0.0.0/16\": is for cluster mode: give --kvstore-endpoints as well"
        );
        let kv = ["--kvstore-endpoints", "http://192.168.1.2:2379"];
        let e = config(&kv).unwrap_err();
        assert_eq!(e.flag, "cluster-pool");
        let e = config(&["--kvstore-endpoints", "192.168.1.2:2379", "--cluster-pool", "10.0.0.0/16"])
            .unwrap_err();
        assert_eq!(e.flag, "kvstore-endpoints");
        let pool = ["--cluster-pool", "10.0.0.0/16"];
        let e = config(&[&kv[..], &pool, &["--cluster-pool-mask-size", "12"]].concat()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--cluster-pool-mask-size: \"12\": must be between the pool's prefix length (16) and 30"
        );
        let e = config(&[&kv[..], &pool, &["--node-ip", "127.0.0.1"]].concat()).unwrap_err();
        assert_eq!(e.flag, "node-ip");
        let e = config(&[&kv[..], &pool, &["--node-labels", "zone"]].concat()).unwrap_err();
        assert_eq!(e.flag, "node-labels");
        let e = config(&[&kv[..], &pool, &["--cluster-name", "Prod"]].concat()).unwrap_err();
        assert_eq!(e.flag, "cluster-name");
        let c = config(
            &[&kv[..], &pool, &["--routing-mode", "native", "--node-labels", "zone=a,rack=r1"]].concat(),
        )
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.routing, RoutingMode::Native);
        assert_eq!(cluster.pool.unwrap().to_string(), "10.0.0.0/16");
        assert_eq!(cluster.pool_mask_size, 24);
        assert_eq!(cluster.node_labels.get("rack").map(String::as_str), Some("r1"));
        assert!(!c.pod_cidr_explicit);
        let c = config(&[&kv[..], &["--pod-cidr", "10.9.0.0/24"]].concat()).unwrap();
        assert!(c.pod_cidr_explicit && c.cluster.is_some());
    }
}
