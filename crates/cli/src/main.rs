//! twill: the command-line client of the Twill agent.

mod exec;
mod install;
mod observe;
mod service;
mod table;
mod ui;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use twill_api::{
    AgentSettings, BpfEndpoint, BpfPolicy, Client, CtRow, Endpoint, EndpointSettings, IdentityInfo,
    IpcacheEntry, MetricsRow, MonitorEvent, NamespaceInfo, NodeInfo, PolicyFile, PolicyImported, PolicyList,
    Request, Status, TraceRequest, TraceResult, Uninstalled,
};

use crate::table::Table;

#[derive(Parser)]
#[command(name = "twill", version, about = "Twill: eBPF networking, security and flow observability")]
struct Cli {
    /// Agent API socket (default: $TWILL_SOCKET, else /run/twill/twill.sock).
    #[arg(long, global = true, env = twill_api::SOCKET_ENV, default_value = twill_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
enum Output {
    #[default]
    Table,
    Json,
}

#[derive(clap::Args, Clone, Copy)]
struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Subcommand)]
enum Commands {
    /// Show the agent's state and health.
    Status {
        #[command(flatten)]
        out: OutputArg,
    },
    /// Manage endpoints (workloads in their own network namespace).
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Inspect security identities.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// Cluster mode: the nodes of the cluster.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manage namespaces.
    #[command(subcommand)]
    Namespace(NamespaceCmd),
    /// Import, inspect, trace and delete network policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Services: virtual addresses balanced over backends in the kernel.
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Inspect the eBPF maps.
    #[command(subcommand)]
    Bpf(BpfCmd),
    /// Stream datapath events live, one line each (cilium monitor style).
    Monitor {
        /// Event types to show (default: all).
        #[arg(short = 't', long = "type", value_parser = ["drop", "trace", "policy-verdict"])]
        types: Vec<String>,
        /// Output format: text lines or one JSON object per line.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Observe flows from the agent's Hubble-compatible API (like `hubble
    /// observe`); `twill observe agent-events` for the agent's own events.
    Observe(observe::ObserveArgs),
    /// The agent's events: `twill observe agent-events` (as `hubble
    /// observe agent-events`).
    #[command(name = "observe-agent-events", hide = true)]
    ObserveAgentEvents(observe::events::EventsArgs),
    /// The datapath's debug messages: `twill observe debug-events` (as
    /// `hubble observe debug-events`).
    #[command(name = "observe-debug-events", hide = true)]
    ObserveDebugEvents(observe::events::EventsArgs),
    /// Runtime settings of the agent.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Serve the web UI (service map and live flow table) for the agent's
    /// or a relay's Hubble API, on loopback, and print its URL.
    Ui(ui::UiArgs),
    /// Install Twill's integrations on this node.
    #[command(subcommand)]
    Install(InstallCmd),
    /// Remove everything Twill created on this node (also the CNI plugin
    /// and conflist `install cni` wrote) and stop the agent.
    Uninstall {
        #[command(flatten)]
        cni: install::CniDirs,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Show the settings that can change while the agent runs.
    Get {
        #[command(flatten)]
        out: OutputArg,
    },
    /// Change settings, KEY=VALUE each: debug-datapath=true|false turns
    /// the datapath's debug messages on or off (`observe debug-events`).
    Set {
        #[arg(required = true)]
        settings: Vec<String>,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Subcommand)]
enum InstallCmd {
    /// Write the twill-cni plugin and a conflist for this agent.
    Cni(install::InstallCni),
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// Create an endpoint: a network namespace wired to Twill's datapath.
    Create {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Labels, KEY=VALUE, comma-separated or repeated.
        #[arg(short, long, allow_hyphen_values = true)]
        labels: Vec<String>,
        /// Named ports, NAME=PORT/PROTOCOL (e.g. http=80/tcp), repeated.
        #[arg(short, long = "port")]
        ports: Vec<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// List endpoints (all namespaces unless --namespace is given).
    List {
        #[arg(short, long)]
        namespace: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Show one endpoint.
    Get {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Delete an endpoint and everything it had.
    Delete {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Set or remove an endpoint's labels; its identity follows.
    Label {
        name: String,
        /// Labels to set, KEY=VALUE.
        labels: Vec<String>,
        /// Label keys to remove.
        #[arg(long)]
        remove: Vec<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Show or change an endpoint's runtime settings, KEY=VALUE each:
    /// debug=true|false reports its datapath steps as debug messages
    /// (`observe debug-events`) whatever the node's debug-datapath.
    Config {
        name: String,
        /// Settings to change; none shows them.
        settings: Vec<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Run a command inside an endpoint's network namespace.
    Exec {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum IdentityCmd {
    /// List identities, reserved ones included.
    List {
        #[command(flatten)]
        out: OutputArg,
    },
    /// Show one identity.
    Get {
        id: u32,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// List the cluster's nodes, this one included.
    List {
        #[command(flatten)]
        out: OutputArg,
    },
    /// Show one node.
    Get {
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Subcommand)]
enum NamespaceCmd {
    Create {
        name: String,
        /// Labels, KEY=VALUE, comma-separated or repeated.
        #[arg(short, long, allow_hyphen_values = true)]
        labels: Vec<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    List {
        #[command(flatten)]
        out: OutputArg,
    },
    Get {
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Set or remove a namespace's labels; its endpoints' identities follow.
    Label {
        name: String,
        labels: Vec<String>,
        #[arg(long)]
        remove: Vec<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Import CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and
    /// NetworkPolicy YAML, or a JSON list of Cilium rules as `cilium-dbg
    /// policy import` reads ("-" reads stdin). All documents apply, or none.
    Import {
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Show imported policies and the policy revision.
    Get {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = PolicyOutput::Table)]
        output: PolicyOutput,
    },
    /// Delete a policy by name, the policies carrying given labels, or all.
    Delete {
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Only this kind (CiliumNetworkPolicy, NetworkPolicy, CiliumRules, ...).
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, conflicts_with_all = ["name", "labels"])]
        all: bool,
        /// Delete the policies that carry this label, [SOURCE:]KEY=VALUE
        /// (repeat: all must be carried). Without a source, any source.
        #[arg(long = "label", value_name = "[SOURCE:]KEY=VALUE", conflicts_with = "name")]
        labels: Vec<String>,
    },
    /// Wait until every endpoint enforces REVISION.
    Wait {
        revision: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Cluster mode: wait until every node enforces it.
        #[arg(long)]
        all_nodes: bool,
    },
    /// Compute the verdict for traffic between two parties, and why.
    Trace {
        #[arg(long)]
        src_endpoint: Option<String>,
        #[arg(long)]
        src_namespace: Option<String>,
        /// Labels of a hypothetical source, KEY=VALUE,...
        #[arg(long)]
        src_labels: Vec<String>,
        #[arg(long)]
        dst_endpoint: Option<String>,
        #[arg(long)]
        dst_namespace: Option<String>,
        #[arg(long)]
        dst_labels: Vec<String>,
        /// PORT/PROTOCOL, e.g. 80/tcp, or TYPE/icmp.
        #[arg(long)]
        dport: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum PolicyOutput {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum BpfCmd {
    /// The IP-to-identity map the datapath uses.
    #[command(subcommand)]
    Ipcache(ListOnly),
    /// The local endpoint map.
    #[command(subcommand)]
    Endpoint(ListOnly),
    /// Datapath packet counters (forwarded and drops by reason).
    #[command(subcommand)]
    Metrics(ListOnly),
    /// An endpoint's policy map.
    #[command(subcommand)]
    Policy(BpfPolicyCmd),
    /// Connection tracking entries.
    #[command(subcommand)]
    Ct(ListOnly),
    /// The service maps: frontends, backends by slot, Maglev tables.
    #[command(subcommand)]
    Lb(ListOnly),
}

#[derive(Subcommand)]
enum BpfPolicyCmd {
    Get {
        endpoint: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Subcommand)]
enum ListOnly {
    List {
        #[command(flatten)]
        out: OutputArg,
    },
}

fn main() {
    // `observe agent-events` and `observe debug-events` are hubble's
    // spellings; `observe` itself takes free-form filter flags, so each
    // pair is routed to its own command.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(i) = argv.iter().position(|a| a == "observe") {
        match argv.get(i + 1).and_then(|a| a.to_str()) {
            Some("agent-events") => {
                argv.splice(i..i + 2, [std::ffi::OsString::from("observe-agent-events")]);
            }
            Some("debug-events") => {
                argv.splice(i..i + 2, [std::ffi::OsString::from("observe-debug-events")]);
            }
            _ => {}
        }
    }
    let cli = Cli::parse_from(argv);
    if let Err(e) = run(cli) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn print_json<T: Serialize>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).expect("serializes"));
}

/// Prints `value` as JSON when asked, else through `table`.
fn show<T: Serialize>(out: OutputArg, value: &T, table: impl FnOnce(&T)) {
    match out.output {
        Output::Json => print_json(value),
        Output::Table => table(value),
    }
}

fn labels_cell(labels: &[String]) -> String {
    if labels.is_empty() {
        "-".into()
    } else {
        labels.join("\n")
    }
}

fn endpoints_table(endpoints: &[Endpoint]) {
    let mut t = Table::new(&["ID", "NAMESPACE", "NAME", "IPV4", "IDENTITY", "LABELS", "STATE"]);
    for e in endpoints {
        let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![
            e.id.to_string(),
            e.namespace.clone(),
            e.name.clone(),
            e.ipv4.clone(),
            e.identity.to_string(),
            labels_cell(&labels),
            e.state.clone(),
        ]);
    }
    t.print();
}

fn endpoint_detail(e: &Endpoint) {
    println!("ID:               {}", e.id);
    println!("Name:             {}/{}", e.namespace, e.name);
    println!("IPv4:             {}", e.ipv4);
    println!("Identity:         {}", e.identity);
    println!(
        "Labels:           {}",
        e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    );
    println!("Security labels:  {}", e.security_labels.join(", "));
    println!("Ports:            {}", if e.ports.is_empty() { "-".into() } else { e.ports.join(", ") });
    println!(
        "Policy:           revision {}, ingress {}, egress {}",
        e.policy_revision,
        if e.ingress_enforced { "enforced" } else { "not enforced" },
        if e.egress_enforced { "enforced" } else { "not enforced" }
    );
    println!("Network ns:       {}", e.netns);
    println!(
        "Host device:      {} ({}){}",
        e.host_device,
        e.host_mac,
        if e.shaped { ", shaped: local traffic through the host stack" } else { "" }
    );
    println!("MAC:              {}", e.mac);
    println!("State:            {}", e.state);
}

fn identities_table(identities: &[IdentityInfo]) {
    let mut t = Table::new(&["ID", "LABELS", "ENDPOINTS"]);
    for i in identities {
        t.row(vec![i.id.to_string(), labels_cell(&i.labels), i.endpoints.to_string()]);
    }
    t.print();
}

fn nodes_table(nodes: &[NodeInfo]) {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut t = Table::new(&[
        "NAME",
        "NODE IP",
        "POD CIDR",
        "ROUTING",
        "IDENTITY",
        "STATE",
        "HEARTBEAT",
        "ENDPOINTS",
        "LABELS",
    ]);
    for n in nodes {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let name = if n.local { format!("{} (local)", n.name) } else { n.name.clone() };
        t.row(vec![
            name,
            n.node_ip.clone(),
            n.pod_cidr.clone(),
            n.routing_mode.clone(),
            n.identity.to_string(),
            n.state.clone(),
            format!("{}s ago", now.saturating_sub(n.last_heartbeat)),
            n.endpoints.to_string(),
            labels_cell(&labels),
        ]);
    }
    t.print();
}

fn namespaces_table(namespaces: &[NamespaceInfo]) {
    let mut t = Table::new(&["NAME", "LABELS", "ENDPOINTS"]);
    for n in namespaces {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![n.name.clone(), labels_cell(&labels), n.endpoints.to_string()]);
    }
    t.print();
}

fn settings_text(s: &AgentSettings) {
    let onoff = |b: bool| if b { "true" } else { "false" };
    println!("debug-datapath   {}", onoff(s.debug_datapath));
}

fn status_text(s: &Status) {
    let uptime = format!(
        "{}h{:02}m{:02}s",
        s.uptime_seconds / 3600,
        s.uptime_seconds / 60 % 60,
        s.uptime_seconds % 60
    );
    println!("Version:      twill {}", s.version);
    println!("Uptime:       {uptime}");
    println!("Mode:         {}", s.mode);
    println!("Node:         {}", s.node_name);
    println!("Pod CIDR:     {} (router {})", s.pod_cidr, s.router_ipv4);
    println!("State dir:    {}", s.state_dir);
    println!("BPF root:     {}", s.bpf_root);
    if let Some(k) = s.kernel.as_object() {
        let release = k.get("kernel_release").and_then(|v| v.as_str()).unwrap_or("?");
        let flags: Vec<String> = k
            .iter()
            .filter(|(name, _)| name.as_str() != "kernel_release")
            .map(|(name, v)| format!("{name}={}", if v.as_bool() == Some(true) { "yes" } else { "no" }))
            .collect();
        println!("Kernel:       {release} ({})", flags.join(", "));
    }
    println!("Hubble:       {}", hubble_listeners(s));
    if let Some(kv) = &s.kvstore {
        println!(
            "Cluster:      {} ({} routing, node IP {}), {} nodes",
            kv.cluster_name, kv.routing_mode, kv.node_ip, s.nodes
        );
        let state =
            if kv.reachable { "reachable".to_string() } else { format!("UNREACHABLE: {}", kv.message) };
        println!(
            "KVStore:      etcd {} {state}, lease {} {}, last sync revision {}",
            kv.endpoints.join(","),
            kv.lease,
            if kv.lease_alive { "alive" } else { "lapsed" },
            kv.last_sync_revision
        );
    }
    println!("Endpoints:    {}", s.endpoints);
    println!("Policy:       revision {}, {} policies", s.policy_revision, s.policies);
    println!(
        "Identities:   {} allocated (+{} reserved)",
        s.identities,
        twill_numbers::RESERVED_IDENTITIES.len()
    );
    let devices: std::collections::BTreeSet<&str> = s.programs.iter().map(|p| p.device.as_str()).collect();
    println!("Programs:     {} attachments on {} devices", s.programs.len(), devices.len());
    println!("Health:");
    for h in &s.health {
        println!("  {:<10} {:<4} {}", h.name, if h.ok { "ok" } else { "FAIL" }, h.message);
    }
}

/// Where the agent serves the Hubble API: "unix:///run/twill/hubble.sock,
/// 127.0.0.1:4244 (TLS)".
fn hubble_listeners(s: &Status) -> String {
    let tcp = s.hubble_listen.as_ref().map(|addr| match s.hubble_tls {
        twill_api::HubbleTls::Off => format!("{addr} (no TLS)"),
        twill_api::HubbleTls::On => format!("{addr} (TLS)"),
        twill_api::HubbleTls::Mutual => format!("{addr} (mutual TLS)"),
    });
    let listeners: Vec<String> = s.hubble_socket.iter().map(|p| format!("unix://{p}")).chain(tcp).collect();
    if listeners.is_empty() {
        "off".into()
    } else {
        listeners.join(", ")
    }
}

/// The Hubble server of the agent at `socket`: the socket it says it
/// serves on, else (agent unreachable, so the dial error says where we
/// looked) hubble.sock beside its API socket, where agents put it.
fn hubble_server(client: &Client, socket: &std::path::Path) -> String {
    match client.call::<Status>(&Request::Status) {
        Ok(Status { hubble_socket: Some(path), .. }) => format!("unix://{path}"),
        Ok(Status { hubble_listen: Some(addr), .. }) => addr,
        _ => {
            let dir = socket.parent().unwrap_or(std::path::Path::new("/run/twill"));
            format!("unix://{}", dir.join("hubble.sock").display())
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Commands::Observe(mut args) => {
            if args.opts.server.is_none() {
                args.opts.server = Some(hubble_server(&client, &cli.socket));
            }
            observe::run(args)?
        }
        Commands::Ui(mut args) => {
            if args.server.is_none() {
                args.server = Some(hubble_server(&client, &cli.socket));
            }
            ui::run(args)?
        }
        Commands::ObserveAgentEvents(mut args) => {
            if args.server.is_none() {
                args.server = Some(hubble_server(&client, &cli.socket));
            }
            observe::agent_events::run(args)?
        }
        Commands::ObserveDebugEvents(mut args) => {
            if args.server.is_none() {
                args.server = Some(hubble_server(&client, &cli.socket));
            }
            observe::debug_events::run(args)?
        }
        Commands::Config(ConfigCmd::Get { out }) => {
            let settings: AgentSettings = client.call(&Request::ConfigGet)?;
            show(out, &settings, settings_text);
        }
        Commands::Config(ConfigCmd::Set { settings, out }) => {
            let settings: AgentSettings = client.call(&Request::ConfigSet { settings })?;
            show(out, &settings, settings_text);
        }
        Commands::Status { out } => {
            let status: Status = client.call(&Request::Status)?;
            show(out, &status, status_text);
        }
        Commands::Endpoint(cmd) => endpoint(&client, &cli.socket, cmd)?,
        Commands::Identity(IdentityCmd::List { out }) => {
            let list: Vec<IdentityInfo> = client.call(&Request::IdentityList)?;
            show(out, &list, |l| identities_table(l));
        }
        Commands::Identity(IdentityCmd::Get { id, out }) => {
            let identity: IdentityInfo = client.call(&Request::IdentityGet { id })?;
            show(out, &identity, |i| identities_table(std::slice::from_ref(i)));
        }
        Commands::Node(NodeCmd::List { out }) => {
            let list: Vec<NodeInfo> = client.call(&Request::NodeList)?;
            show(out, &list, |l| nodes_table(l));
        }
        Commands::Node(NodeCmd::Get { name, out }) => {
            let node: NodeInfo = client.call(&Request::NodeGet { name })?;
            show(out, &node, |n| nodes_table(std::slice::from_ref(n)));
        }
        Commands::Namespace(cmd) => namespace(&client, cmd)?,
        Commands::Bpf(BpfCmd::Ipcache(ListOnly::List { out })) => {
            let entries: Vec<IpcacheEntry> = client.call(&Request::BpfIpcacheList)?;
            show(out, &entries, |entries| {
                let mut t = Table::new(&["PREFIX", "IDENTITY", "TUNNEL ENDPOINT"]);
                for e in entries {
                    t.row(vec![
                        e.cidr.clone(),
                        e.identity.to_string(),
                        e.tunnel_endpoint.clone().unwrap_or_default(),
                    ]);
                }
                t.print();
            });
        }
        Commands::Bpf(BpfCmd::Endpoint(ListOnly::List { out })) => {
            let entries: Vec<BpfEndpoint> = client.call(&Request::BpfEndpointList)?;
            show(out, &entries, |entries| {
                let mut t = Table::new(&["IPV4", "ENDPOINT", "IDENTITY", "IFINDEX", "MAC", "HOST MAC"]);
                for e in entries {
                    t.row(vec![
                        e.ipv4.clone(),
                        e.endpoint_id.to_string(),
                        e.identity.to_string(),
                        e.ifindex.to_string(),
                        e.mac.clone(),
                        e.host_mac.clone(),
                    ]);
                }
                t.print();
            });
        }
        Commands::Bpf(BpfCmd::Metrics(ListOnly::List { out })) => {
            let rows: Vec<MetricsRow> = client.call(&Request::BpfMetricsList)?;
            show(out, &rows, |rows| {
                let mut t = Table::new(&["DIRECTION", "REASON", "DESCRIPTION", "PACKETS", "BYTES"]);
                for r in rows {
                    t.row(vec![
                        r.direction.clone(),
                        r.reason.to_string(),
                        r.description.clone(),
                        r.packets.to_string(),
                        r.bytes.to_string(),
                    ]);
                }
                t.print();
            });
        }
        Commands::Policy(cmd) => policy(&client, cmd)?,
        Commands::Service(cmd) => service::run(&client, cmd)?,
        Commands::Bpf(BpfCmd::Lb(ListOnly::List { out })) => service::bpf_lb_list(&client, out)?,
        Commands::Bpf(BpfCmd::Policy(BpfPolicyCmd::Get { endpoint, namespace, out })) => {
            let p: BpfPolicy = client.call(&Request::BpfPolicyGet { name: endpoint, namespace })?;
            show(out, &p, |p| {
                println!(
                    "Endpoint {} (identity {}), policy revision {}; ingress {}, egress {}",
                    p.endpoint_id,
                    p.identity,
                    p.revision,
                    if p.ingress_enforced { "enforced" } else { "not enforced" },
                    if p.egress_enforced { "enforced" } else { "not enforced" }
                );
                let mut t =
                    Table::new(&["DIRECTION", "IDENTITY", "LABELS", "PROTOCOL", "PORT", "VERDICT", "RULES"]);
                for e in &p.entries {
                    t.row(vec![
                        e.direction.clone(),
                        e.identity.to_string(),
                        labels_cell(&e.labels),
                        e.protocol.clone(),
                        e.port.clone(),
                        // Cilium shows the proxy port of a redirect with the verdict.
                        if e.proxy_port != 0 {
                            format!("{} (proxy {})", e.verdict, e.proxy_port)
                        } else {
                            e.verdict.clone()
                        },
                        labels_cell(&e.rules),
                    ]);
                }
                t.print();
            });
        }
        Commands::Bpf(BpfCmd::Ct(ListOnly::List { out })) => {
            let rows: Vec<CtRow> = client.call(&Request::BpfCtList)?;
            show(out, &rows, |rows| {
                let mut t = Table::new(&[
                    "PROTO",
                    "SOURCE",
                    "DESTINATION",
                    "SCOPE",
                    "PACKETS",
                    "BYTES",
                    "FLAGS",
                    "EXPIRES",
                ]);
                for r in rows {
                    t.row(vec![
                        r.protocol.clone(),
                        r.source.clone(),
                        r.destination.clone(),
                        r.scope.clone(),
                        r.packets.to_string(),
                        r.bytes.to_string(),
                        format!("{}{}", r.tcp_flags, if r.closing { " closing" } else { "" }),
                        format!("{}s", r.expires_in_seconds),
                    ]);
                }
                t.print();
            });
        }
        Commands::Monitor { types, output } => {
            if output == Output::Table {
                eprintln!("Listening for events (Ctrl-C to stop)...");
            }
            client.stream(&Request::Monitor { types }, |e: MonitorEvent| {
                let line = match output {
                    Output::Json => serde_json::to_string(&e).expect("serializes"),
                    Output::Table => monitor_line(&e),
                };
                use std::io::Write;
                // A closed pipe (e.g. `| head`) ends the stream quietly.
                writeln!(std::io::stdout(), "{line}").is_ok() && std::io::stdout().flush().is_ok()
            })?;
        }
        Commands::Install(InstallCmd::Cni(args)) => install::install(&cli.socket, args)?,
        Commands::Uninstall { cni } => {
            // The plugin first: no runtime starts a new ADD against an
            // agent that is going away.
            let cni_removed = install::uninstall(&cli.socket, &cni)?;
            let done: Uninstalled = client.call(&Request::Uninstall)?;
            println!("Removed {} endpoint(s) and:", done.endpoints);
            for item in cni_removed.into_iter().chain(done.removed) {
                println!("  {item}");
            }
        }
    }
    Ok(())
}

fn endpoint(client: &Client, socket: &Path, cmd: EndpointCmd) -> anyhow::Result<()> {
    match cmd {
        EndpointCmd::Create { name, namespace, labels, ports, out } => {
            let e: Endpoint = client.call(&Request::EndpointCreate { name, namespace, labels, ports })?;
            show(out, &e, |e| {
                println!(
                    "Endpoint {}/{} created: ID {}, IPv4 {}, identity {}",
                    e.namespace, e.name, e.id, e.ipv4, e.identity
                )
            });
        }
        EndpointCmd::List { namespace, out } => {
            let list: Vec<Endpoint> = client.call(&Request::EndpointList { namespace })?;
            show(out, &list, |l| endpoints_table(l));
        }
        EndpointCmd::Get { name, namespace, out } => {
            let e: Endpoint = client.call(&Request::EndpointGet { name, namespace })?;
            show(out, &e, endpoint_detail);
        }
        EndpointCmd::Config { name, settings, namespace, out } => {
            let s: EndpointSettings = client.call(&Request::EndpointConfig { name, namespace, settings })?;
            show(out, &s, |s| println!("debug   {}", s.debug));
        }
        EndpointCmd::Delete { name, namespace } => {
            let e: Endpoint = client.call(&Request::EndpointDelete { name, namespace })?;
            println!("Endpoint {}/{} deleted (ID {}, IPv4 {} released)", e.namespace, e.name, e.id, e.ipv4);
        }
        EndpointCmd::Label { name, labels, remove, namespace, out } => {
            if labels.is_empty() && remove.is_empty() {
                anyhow::bail!("give labels to set (KEY=VALUE) or --remove KEY");
            }
            let e: Endpoint =
                client.call(&Request::EndpointLabel { name, namespace, set: labels, remove })?;
            show(out, &e, |e| {
                println!("Endpoint {}/{} now has identity {}", e.namespace, e.name, e.identity)
            });
        }
        EndpointCmd::Exec { name, namespace, command } => {
            let e: Endpoint = client.call(&Request::EndpointGet { name, namespace })?;
            return Err(exec::exec_in(socket, &e.netns, &command));
        }
    }
    Ok(())
}

/// One event in the shape `cilium monitor` prints.
fn monitor_line(e: &MonitorEvent) -> String {
    let l4 = match e.protocol.as_str() {
        "TCP" => format!("tcp {}", e.tcp_flags.replace(',', ", ")),
        "UDP" => "udp".into(),
        "ICMP" => format!("icmp type {} code {}", e.icmp_type, e.icmp_code),
        other => other.to_ascii_lowercase(),
    };
    let tuple = format!("{} -> {} {}", e.source, e.destination, l4.trim_end());
    match e.kind.as_str() {
        "drop" => format!(
            "xx drop ({}) {} endpoint {}, ifindex {}, identity {}->{}: {tuple}",
            e.description,
            if e.direction == "ingress" { "to" } else { "from" },
            e.endpoint_id,
            e.ifindex,
            e.src_identity,
            e.dst_identity
        ),
        "policy-verdict" => {
            let remote = if e.direction == "ingress" { e.src_identity } else { e.dst_identity };
            format!(
                "Policy verdict log: local EP ID {}, remote ID {remote}, proto {}, {}, action {}: {tuple}",
                e.endpoint_id, e.protocol, e.direction, e.description
            )
        }
        _ => format!(
            "-> {} endpoint {} state {} identity {}->{}: {tuple}",
            if e.direction == "ingress" { "to" } else { "from" },
            e.endpoint_id,
            e.ct_state,
            e.src_identity,
            e.dst_identity
        ),
    }
}

fn read_input(path: &str) -> anyhow::Result<String> {
    if path == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))
    }
}

fn policy(client: &Client, cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Import { files } => {
            let files = files
                .iter()
                .map(|f| Ok(PolicyFile { name: f.clone(), content: read_input(f)? }))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let done: PolicyImported = client.call(&Request::PolicyImport { files })?;
            for p in &done.policies {
                println!("Imported {p}");
            }
            println!("Revision: {}", done.revision);
        }
        PolicyCmd::Get { output } => {
            let list: PolicyList = client.call(&Request::PolicyGet)?;
            match output {
                PolicyOutput::Json => print_json(&list),
                PolicyOutput::Yaml => {
                    for p in &list.policies {
                        println!("---");
                        print!("{}", serde_saphyr::to_string(&p.document)?);
                    }
                }
                PolicyOutput::Table => {
                    println!("Revision: {}", list.revision);
                    let mut t = Table::new(&["KIND", "NAMESPACE", "NAME", "RULES", "DESCRIPTION"]);
                    for p in &list.policies {
                        // Cilium rules are named by their labels, and may have none.
                        let name = if p.name.is_empty() { "(no labels)".to_string() } else { p.name.clone() };
                        t.row(vec![
                            p.kind.clone(),
                            p.namespace.clone().unwrap_or_else(|| "-".into()),
                            name,
                            p.rules.to_string(),
                            p.description.clone().unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    t.print();
                }
            }
        }
        PolicyCmd::Delete { name, namespace, kind, all, labels } => {
            if name.is_none() && !all && labels.is_empty() {
                anyhow::bail!("give a policy NAME, --label [SOURCE:]KEY=VALUE or --all");
            }
            let done: PolicyImported =
                client.call(&Request::PolicyDelete { name, namespace, kind, all, labels })?;
            for p in &done.policies {
                println!("Deleted {p}");
            }
            println!("Revision: {}", done.revision);
        }
        PolicyCmd::Wait { revision, timeout, all_nodes } => {
            let _: serde_json::Value = client.call(&Request::PolicyWait {
                revision,
                timeout_ms: timeout.saturating_mul(1000),
                all_nodes,
            })?;
            let scope = if all_nodes { " on every node" } else { "" };
            println!("All endpoints enforce revision {revision} or later{scope}");
        }
        PolicyCmd::Trace {
            src_endpoint,
            src_namespace,
            src_labels,
            dst_endpoint,
            dst_namespace,
            dst_labels,
            dport,
            out,
        } => {
            let req = TraceRequest {
                src_endpoint,
                src_namespace,
                src_labels,
                dst_endpoint,
                dst_namespace,
                dst_labels,
                dport,
            };
            let r: TraceResult = client.call(&Request::PolicyTrace(req))?;
            show(out, &r, |r| {
                println!("Source:      identity {} [{}]", r.src_identity, r.src_labels.join(", "));
                println!("Destination: identity {} [{}]", r.dst_identity, r.dst_labels.join(", "));
                println!("Traffic:     {}/{}", r.port, r.protocol);
                for step in &r.steps {
                    println!(
                        "{} of {} ({}): {}",
                        step.direction,
                        step.subject,
                        if step.enforced { "enforced" } else { "not enforced" },
                        step.verdict
                    );
                    for reason in &step.reasons {
                        println!("    {reason}");
                    }
                }
                println!("Final verdict: {}", r.verdict);
            });
        }
    }
    Ok(())
}

fn namespace(client: &Client, cmd: NamespaceCmd) -> anyhow::Result<()> {
    match cmd {
        NamespaceCmd::Create { name, labels, out } => {
            let n: NamespaceInfo = client.call(&Request::NamespaceCreate { name, labels })?;
            show(out, &n, |n| println!("Namespace {} created", n.name));
        }
        NamespaceCmd::List { out } => {
            let list: Vec<NamespaceInfo> = client.call(&Request::NamespaceList)?;
            show(out, &list, |l| namespaces_table(l));
        }
        NamespaceCmd::Get { name, out } => {
            let n: NamespaceInfo = client.call(&Request::NamespaceGet { name })?;
            show(out, &n, |n| namespaces_table(std::slice::from_ref(n)));
        }
        NamespaceCmd::Label { name, labels, remove, out } => {
            if labels.is_empty() && remove.is_empty() {
                anyhow::bail!("give labels to set (KEY=VALUE) or --remove KEY");
            }
            let n: NamespaceInfo = client.call(&Request::NamespaceLabel { name, set: labels, remove })?;
            show(out, &n, |n| namespaces_table(std::slice::from_ref(n)));
        }
        NamespaceCmd::Delete { name } => {
            let n: NamespaceInfo = client.call(&Request::NamespaceDelete { name })?;
            println!("Namespace {} deleted", n.name);
        }
    }
    Ok(())
}
