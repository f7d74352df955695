use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    EndpointCreate {
        name: String,
        namespace: String,
        labels: Vec<String>,
        /// Named ports, NAME=PORT/PROTOCOL (e.g. http=80/tcp).
        #[serde(default)]
        ports: Vec<String>,
    },
    EndpointList {
        namespace: Option<String>,
    },
    EndpointGet {
        name: String,
        namespace: String,
    },
    EndpointDelete {
        name: String,
        namespace: String,
    },
    EndpointLabel {
        name: String,
        namespace: String,
        set: Vec<String>,
        remove: Vec<String>,
    },
    IdentityList,
    IdentityGet {
        id: u32,
    },
    NamespaceCreate {
        name: String,
        labels: Vec<String>,
    },
    NamespaceList,
    NamespaceGet {
        name: String,
    },
    NamespaceLabel {
        name: String,
        set: Vec<String>,
        remove: Vec<String>,
    },
    NamespaceDelete {
        name: String,
    },
    BpfIpcacheList,
    BpfEndpointList,
    BpfMetricsList,
    /// Validate every document, then apply all of them, or none.
    PolicyImport {
        files: Vec<PolicyFile>,
    },
    PolicyGet,
    PolicyDelete {
        name: Option<String>,
        namespace: Option<String>,
        kind: Option<String>,
        all: bool,
        /// Delete the policies carrying all of these `[source:]key=value`
        /// labels (Cilium rules are named by their labels).
        #[serde(default)]
        labels: Vec<String>,
    },
    PolicyWait {
        revision: u64,
        timeout_ms: u64,
        /// Cluster mode: until every node enforces it.
        #[serde(default)]
        all_nodes: bool,
    },
    PolicyTrace(TraceRequest),
    BpfPolicyGet {
        name: String,
        namespace: String,
    },
    BpfCtList,
    /// Streams datapath events, one JSON [`MonitorEvent`] per line, until
    /// the client disconnects. Empty `types` means every type.
    Monitor {
        types: Vec<String>,
    },
    Uninstall,
    /// A CNI ADD: an endpoint in the runtime's namespace, enforced by
    /// policy before the answer.
    CniAdd(CniAdd),
    /// A CNI DEL; succeeds when nothing is attached.
    CniDel(CniAttachmentRef),
    /// A CNI CHECK: what is wrong with an attachment (empty when nothing).
    CniCheck(CniCheck),
    /// A CNI GC: removes this network's attachments not listed.
    CniGc(CniGc),
    /// Creates or replaces one service from command-line terms.
    ServiceCreate(ServiceCreate),
    /// Kubernetes `v1` Service and `discovery.k8s.io/v1` EndpointSlice
    /// documents: all applied, or none.
    ServiceImport {
        files: Vec<PolicyFile>,
    },
    ServiceList {
        namespace: Option<String>,
    },
    ServiceGet {
        name: String,
        namespace: String,
    },
    /// One service, or with `all` every service of the namespace.
    ServiceDelete {
        name: String,
        namespace: String,
        #[serde(default)]
        all: bool,
    },
    BpfLbList,
    /// The agent settings that can change at runtime.
    ConfigGet,
    /// Changes runtime settings, `KEY=VALUE` each (`debug-datapath=true`):
    /// every one is checked before any is applied.
    ConfigSet {
        settings: Vec<String>,
    },
    /// One endpoint's runtime settings, `KEY=VALUE` each (`debug=true`);
    /// empty `settings` only reads them.
    EndpointConfig {
        name: String,
        namespace: String,
        settings: Vec<String>,
    },
    /// Cluster mode: every node the store knows.
    NodeList,
    NodeGet {
        name: String,
    },
}

/// `twill service create`, as typed: every field is checked by the agent
/// and named in its errors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ServiceCreate {
    pub name: String,
    pub namespace: String,
    /// IP:PORT[/tcp|/udp]; without it a ClusterIP is allocated.
    pub frontend: Option<String>,
    /// PORT[/tcp|/udp] of an allocated ClusterIP (when no frontend).
    pub port: Option<String>,
    /// The backends' port, a number or a named port of the endpoints
    /// (selector services); defaults to the frontend's port.
    pub target_port: Option<String>,
    /// IP:PORT, one per backend.
    pub backends: Vec<String>,
    /// k=v pairs; the backends are the namespace's matching endpoints.
    pub selector: Vec<String>,
    /// ClusterIP or NodePort.
    pub service_type: Option<String>,
    pub node_port: Option<u16>,
    /// random or maglev.
    pub algorithm: Option<String>,
    /// client-ip.
    pub affinity: Option<String>,
    /// A duration (10800, 3h, 90s); only with affinity.
    pub affinity_timeout: Option<String>,
    /// k=v labels of the service itself (for toServices selectors).
    #[serde(default)]
    pub labels: Vec<String>,
}

/// A service as the agent holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
    pub cluster_ip: String,
    pub ports: Vec<ServicePortInfo>,
    /// k=v; empty for services with explicit backends.
    pub selector: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub algorithm: String,
    /// Seconds of ClientIP affinity, 0 for none.
    pub affinity_timeout: u32,
    pub internal_traffic_policy: String,
    pub external_traffic_policy: String,
    /// What the datapath serves: one per frontend.
    pub frontends: Vec<FrontendInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub name: Option<String>,
    pub protocol: String,
    pub port: u16,
    pub target_port: String,
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FrontendInfo {
    /// IP:PORT/PROTOCOL; NodePort frontends show 0.0.0.0.
    pub address: String,
    pub node_port: bool,
    /// IP:PORT of each backend.
    pub backends: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServicesImported {
    /// namespace/name of every service created or replaced.
    pub services: Vec<String>,
}

/// One frontend of the kernel's service maps, as `twill bpf lb list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BpfLbFrontend {
    /// IP:PORT/PROTOCOL.
    pub frontend: String,
    pub rev_nat_index: u32,
    /// random or maglev.
    pub algorithm: String,
    pub node_port: bool,
    pub affinity_timeout: u32,
    /// Backends by slot: "ID IP:PORT".
    pub backends: Vec<String>,
    /// Entries of its Maglev table, 0 for random choice.
    pub maglev_table_size: usize,
}

/// Identifies a CNI attachment, as the runtime does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct CniAttachmentRef {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniAdd {
    /// The network's name (its config's `name`), for GC.
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// CNI_NETNS: the runtime's namespace, by path.
    pub netns: String,
    /// Twill namespace and endpoint name.
    pub namespace: String,
    pub name: String,
    /// KEY=VALUE labels from the orchestrator or the container runtime.
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniCheck {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    /// Addresses (ADDRESS/PREFIX) the previous result promised.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniGc {
    pub network: String,
    pub valid: Vec<CniAttachmentRef>,
}

/// What ADD made: the endpoint and the attachment's addressing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniAttached {
    pub endpoint: Endpoint,
    pub ifname: String,
    /// The endpoint's address and prefix length inside the namespace.
    pub prefix_len: u8,
    /// The node's router: the endpoint's gateway.
    pub gateway: String,
}

/// The answer to DEL and GC: the endpoints removed (namespace/name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CniRemoved {
    pub removed: Vec<String>,
}

/// The answer to CHECK: every problem found, empty when all is well.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CniChecked {
    pub problems: Vec<String>,
}

/// A DEL or GC the plugin could not deliver (the agent was down), kept as
/// one JSON file in the agent's CNI queue directory and applied, in file
/// name order, when the agent starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum CniQueued {
    Del(CniAttachmentRef),
    Gc(CniGc),
}

/// One datapath event as `twill monitor` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MonitorEvent {
    /// Nanoseconds since boot (the kernel's monotonic clock).
    pub timestamp_ns: u64,
    /// drop, trace or policy-verdict.
    #[serde(rename = "type")]
    pub kind: String,
    /// Drop reason code (Cilium's numbering), 0 otherwise.
    pub reason: u32,
    pub description: String,
    /// ingress or egress, from the endpoint's point of view.
    pub direction: String,
    pub ct_state: String,
    pub endpoint_id: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub source: String,
    pub destination: String,
    pub protocol: String,
    pub tcp_flags: String,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub ifindex: u32,
    pub length: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyFile {
    /// How errors name the input (a path, or "-" for stdin).
    pub name: String,
    pub content: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TraceRequest {
    pub src_endpoint: Option<String>,
    pub src_namespace: Option<String>,
    pub src_labels: Vec<String>,
    pub dst_endpoint: Option<String>,
    pub dst_namespace: Option<String>,
    pub dst_labels: Vec<String>,
    /// PORT/PROTOCOL, e.g. 80/tcp; ICMP as TYPE/icmp.
    pub dport: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyImported {
    pub revision: u64,
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyInfo {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub rules: usize,
    pub document: serde_json::Value,
    /// `source:key=value`: a Cilium rule set's own labels, or those Cilium
    /// derives for a Kubernetes object.
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyList {
    pub revision: u64,
    pub policies: Vec<PolicyInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceDirection {
    pub direction: String,
    /// The endpoint whose policy decides this direction.
    pub subject: String,
    pub enforced: bool,
    pub verdict: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceResult {
    pub src_identity: u32,
    pub dst_identity: u32,
    pub src_labels: Vec<String>,
    pub dst_labels: Vec<String>,
    pub protocol: String,
    pub port: u16,
    pub steps: Vec<TraceDirection>,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BpfPolicyEntry {
    pub direction: String,
    pub identity: u32,
    pub labels: Vec<String>,
    pub protocol: String,
    /// A port, a range "lo-hi", or "ANY".
    pub port: String,
    pub verdict: String,
    pub rules: Vec<String>,
    /// The L7 proxy port an allow with L7 rules redirects to (Cilium's
    /// "proxy port" column); 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub proxy_port: u16,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BpfPolicy {
    pub endpoint_id: u32,
    pub identity: u32,
    pub revision: u64,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    pub entries: Vec<BpfPolicyEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CtRow {
    pub protocol: String,
    pub source: String,
    pub destination: String,
    pub scope: String,
    pub packets: u64,
    pub bytes: u64,
    pub tcp_flags: String,
    pub closing: bool,
    pub expires_in_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Ok(serde_json::Value),
    Error(ApiError),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// Machine-readable class: not-found, already-exists, invalid, exhausted, internal.
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub id: u32,
    pub name: String,
    pub namespace: String,
    pub ipv4: String,
    pub identity: u32,
    /// The endpoint's own labels, as given (`key: value`).
    pub labels: BTreeMap<String, String>,
    /// Every label its identity derives from, `source:key=value`.
    pub security_labels: Vec<String>,
    /// Named ports, NAME=PORT/PROTOCOL.
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub policy_revision: u64,
    #[serde(default)]
    pub ingress_enforced: bool,
    #[serde(default)]
    pub egress_enforced: bool,
    /// A chained plugin shapes the host device (bandwidth's qdiscs): local
    /// traffic to and from the endpoint goes through the host stack.
    #[serde(default)]
    pub shaped: bool,
    pub netns: String,
    pub host_device: String,
    pub mac: String,
    pub host_mac: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityInfo {
    pub id: u32,
    pub labels: Vec<String>,
    pub reserved: bool,
    /// Local endpoints using this identity.
    pub endpoints: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub endpoints: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpcacheEntry {
    pub cidr: String,
    pub identity: u32,
    /// Cluster mode: the node that hosts the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_endpoint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BpfEndpoint {
    pub ipv4: String,
    pub endpoint_id: u32,
    pub identity: u32,
    pub ifindex: u32,
    pub mac: String,
    pub host_mac: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetricsRow {
    pub direction: String,
    pub reason: u32,
    pub description: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachedProgram {
    pub device: String,
    pub hook: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubsystemHealth {
    pub name: String,
    pub ok: bool,
    pub message: String,
}

/// TLS of the Hubble TCP listener.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HubbleTls {
    #[default]
    Off,
    /// Server certificate only.
    On,
    /// Clients must present a certificate from the configured CA.
    Mutual,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: u64,
    pub mode: String,
    pub node_name: String,
    pub pod_cidr: String,
    pub router_ipv4: String,
    pub state_dir: String,
    /// Where twill-cni queues DEL and GC while the agent is down.
    #[serde(default)]
    pub cni_queue_dir: String,
    pub bpf_root: String,
    /// The agent's Hubble observer socket, for clients that read flows.
    #[serde(default)]
    pub hubble_socket: Option<String>,
    /// The agent's Hubble observer TCP address.
    #[serde(default)]
    pub hubble_listen: Option<String>,
    /// Whether the TCP address speaks TLS (the Unix socket never does).
    #[serde(default)]
    pub hubble_tls: HubbleTls,
    pub kernel: serde_json::Value,
    pub endpoints: usize,
    pub identities: usize,
    #[serde(default)]
    pub policy_revision: u64,
    #[serde(default)]
    pub policies: usize,
    pub programs: Vec<AttachedProgram>,
    pub health: Vec<SubsystemHealth>,
    /// Cluster mode: the shared store as this agent sees it.
    #[serde(default)]
    pub kvstore: Option<KvstoreStatus>,
    /// Cluster mode: nodes in the store, this one included.
    #[serde(default)]
    pub nodes: usize,
    /// The L7 proxy: connections it accepted and requests it handled.
    #[serde(default)]
    pub proxy: ProxyStatus,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProxyStatus {
    pub connections: u64,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KvstoreStatus {
    pub endpoints: Vec<String>,
    pub reachable: bool,
    /// The lease this node's keys are bound to, as etcd prints it (hex).
    pub lease: String,
    pub lease_alive: bool,
    /// Highest store revision this agent has applied.
    pub last_sync_revision: u64,
    pub cluster_name: String,
    pub routing_mode: String,
    pub node_ip: String,
    /// Why the store is unreachable, when it is.
    #[serde(default)]
    pub message: String,
}

/// One node of the cluster, as `twill node list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub cluster: String,
    pub node_ip: String,
    pub pod_cidr: String,
    pub routing_mode: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The node's identity, which its own traffic carries on other nodes
    /// (remote-node, 6, for agents that predate node identities).
    #[serde(default)]
    pub identity: u32,
    /// alive: its lease holds and it renewed recently; unreachable: its
    /// heartbeat is older than its lease TTL.
    pub state: String,
    /// Unix seconds of the node's last heartbeat in the store.
    pub last_heartbeat: u64,
    /// This agent's own node.
    pub local: bool,
    /// Endpoints the node publishes.
    pub endpoints: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Uninstalled {
    pub endpoints: usize,
    pub removed: Vec<String>,
}

/// `twill config`: the agent settings that can change while it runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub struct AgentSettings {
    /// Datapath debug messages, for `hubble observe debug-events`
    /// (Cilium's `--debug-verbose=datapath`).
    pub debug_datapath: bool,
}

/// `twill endpoint config`: one endpoint's settings that change while it
/// runs (Cilium's per-endpoint options).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct EndpointSettings {
    /// Datapath debug messages for this endpoint's steps, whatever the
    /// node's `debug-datapath` (Cilium's endpoint option `Debug`).
    pub debug: bool,
}
