//! What the agent keeps in the store, and under which keys.

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};
use twill_identity::{Label, LabelSet};

pub const DEFAULT_NAMESPACE: &str = "default";
/// Label every namespace carries, as Kubernetes sets it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Cilium's label for a pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Cilium's prefix for namespace labels copied onto pods.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointRecord {
    pub id: u32,
    pub name: String,
    pub namespace: String,
    pub labels: LabelSet,
    pub ip: Ipv4Addr,
    pub identity: u32,
    pub netns: String,
    pub host_device: String,
    pub mac: [u8; 6],
    pub host_mac: [u8; 6],
    /// Named ports the endpoint declares, for policies that use port names.
    #[serde(default)]
    pub ports: Vec<twill_policy::resolve::NamedPort>,
    /// Set for endpoints a container runtime attached through CNI: their
    /// namespace (`netns`, then a path) is the runtime's, never Twill's to
    /// create or remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
}

/// Which CNI attachment an endpoint is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    /// The network's name in the CNI config, for GC.
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl EndpointRecord {
    /// The owner string used for IPAM and identity references.
    pub fn owner(&self, node: &str) -> String {
        format!("{node}/{}", self.id)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NamespaceRecord {
    pub labels: LabelSet,
}

pub fn endpoints_prefix(node: &str) -> String {
    format!("endpoints/{node}/")
}

pub fn endpoint_key(node: &str, namespace: &str, name: &str) -> String {
    format!("endpoints/{node}/{namespace}/{name}")
}

pub const NAMESPACES_PREFIX: &str = "namespaces/";

pub fn namespace_key(name: &str) -> String {
    format!("{NAMESPACES_PREFIX}{name}")
}

pub fn pod_cidr_key(node: &str) -> String {
    format!("nodes/{node}/pod-cidr")
}

/// The labels an endpoint's identity derives from: its own labels, its
/// namespace's name, and its namespace's labels, in Cilium's spelling.
pub fn security_labels(endpoint_labels: &LabelSet, namespace: &str, ns: &NamespaceRecord) -> LabelSet {
    let mut labels = endpoint_labels.clone();
    labels.set(Label::new("k8s", POD_NAMESPACE_LABEL, namespace));
    for label in ns.labels.iter() {
        labels.set(Label::new("k8s", &format!("{NAMESPACE_LABELS_PREFIX}{}", label.key), &label.value));
    }
    labels
}

pub fn plain(labels: &LabelSet) -> BTreeMap<String, String> {
    labels.to_plain()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_labels_include_namespace_facts() {
        let ep = LabelSet::parse_list(["app=web"]).unwrap();
        let ns = NamespaceRecord {
            labels: LabelSet::parse_list(["kubernetes.io/metadata.name=prod,team=a"]).unwrap(),
        };
        let labels = security_labels(&ep, "prod", &ns).to_strings();
        assert_eq!(
            labels,
            vec![
                "k8s:app=web",
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=prod",
                "k8s:io.cilium.k8s.namespace.labels.team=a",
                "k8s:io.kubernetes.pod.namespace=prod",
            ]
        );
    }
}
