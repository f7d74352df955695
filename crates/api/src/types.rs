use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    EndpointCreate { name: String, namespace: String, labels: Vec<String> },
    EndpointList { namespace: Option<String> },
    EndpointGet { name: String, namespace: String },
    EndpointDelete { name: String, namespace: String },
    EndpointLabel { name: String, namespace: String, set: Vec<String>, remove: Vec<String> },
    IdentityList,
    IdentityGet { id: u32 },
    NamespaceCreate { name: String, labels: Vec<String> },
    NamespaceList,
    NamespaceGet { name: String },
    NamespaceLabel { name: String, set: Vec<String>, remove: Vec<String> },
    NamespaceDelete { name: String },
    BpfIpcacheList,
    BpfEndpointList,
    BpfMetricsList,
    Uninstall,
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: u64,
    pub mode: String,
    pub node_name: String,
    pub pod_cidr: String,
    pub router_ipv4: String,
    pub state_dir: String,
    pub bpf_root: String,
    pub kernel: serde_json::Value,
    pub endpoints: usize,
    pub identities: usize,
    pub programs: Vec<AttachedProgram>,
    pub health: Vec<SubsystemHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Uninstalled {
    pub endpoints: usize,
    pub removed: Vec<String>,
}
