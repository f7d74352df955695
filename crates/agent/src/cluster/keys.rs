//! Cluster mode's key layout in etcd and the records stored under it.
//! Every key sits under the store's prefix (`twill/`); the layout follows
//! Cilium's (`cilium/state/nodes/v1/<cluster>/<node>`,
//! `cilium/state/ip/v1/<cluster>/<ip>`) so operators find their way:
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `nodes/v1/<cluster>/<node>` | [`NodeRecord`] | the node's |
//! | `podcidrs/v1/<cluster>/<a.b.c.d>_<len>` | owning node name | none: kept across restarts |
//! | `ip/v1/<cluster>/<ip>` | [`IpRecord`] | the hosting node's |
//! | `policyrev/v1/<cluster>/<node>` | policy revision the node enforces | the node's |
//! | `policy-revision` | the cluster's policy revision | none |
//! | `identities/id/<N>` | label set of N | none (collected when unreferenced) |
//! | `identities/labels/<labels>` | N | none |
//! | `identities/refs/<N>/<node>/<endpoint>` | "" | the referencing node's |
//! | `identities/refs/<N>/<node>/node` | "" (the node's own identity) | the node's |
//! | `namespaces/<name>`, `policies/...`, `services/<ns>/<name>` | as in standalone mode | none |

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};
use twill_ipam::Cidr;

pub fn nodes_prefix(cluster: &str) -> String {
    format!("nodes/v1/{cluster}/")
}

pub fn node_key(cluster: &str, node: &str) -> String {
    format!("{}{node}", nodes_prefix(cluster))
}

pub fn pod_cidrs_prefix(cluster: &str) -> String {
    format!("podcidrs/v1/{cluster}/")
}

/// Slash-free, so a CIDR is one key segment.
pub fn pod_cidr_key(cluster: &str, cidr: &Cidr) -> String {
    format!("{}{}_{}", pod_cidrs_prefix(cluster), cidr.network, cidr.prefix_len)
}

pub fn parse_pod_cidr_key(cluster: &str, key: &str) -> Option<Cidr> {
    let (ip, len) = key.strip_prefix(&pod_cidrs_prefix(cluster))?.split_once('_')?;
    format!("{ip}/{len}").parse().ok()
}

/// The policy revision each node enforces, for `policy wait --all-nodes`.
pub fn policy_revisions_prefix(cluster: &str) -> String {
    format!("policyrev/v1/{cluster}/")
}

pub fn ips_prefix(cluster: &str) -> String {
    format!("ip/v1/{cluster}/")
}

pub fn ip_key(cluster: &str, ip: Ipv4Addr) -> String {
    format!("{}{ip}", ips_prefix(cluster))
}

pub const IDENTITIES_PREFIX: &str = "identities/id/";
pub const NAMESPACES_PREFIX: &str = "namespaces/";
pub const POLICIES_PREFIX: &str = "policies/";
pub const SERVICES_PREFIX: &str = "services/";

/// A node as every other node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub cluster: String,
    pub node_ip: Ipv4Addr,
    pub pod_cidr: String,
    pub routing_mode: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Unix seconds of the last heartbeat the node wrote.
    pub heartbeat: u64,
    /// Seconds the node's lease outlives its last renewal.
    pub lease_ttl: u64,
    /// host:port of the node's Hubble API ("" without a TCP listener),
    /// for Hubble's peer service and relay.
    #[serde(default)]
    pub hubble_address: String,
    /// Whether that listener speaks TLS only.
    #[serde(default)]
    pub hubble_tls: bool,
    /// The node's identity (its labels' number): what its own traffic is
    /// on other nodes. 0 from agents that predate node identities, whose
    /// traffic is remote-node.
    #[serde(default)]
    pub identity: u32,
}

impl NodeRecord {
    /// The identity the node's addresses carry elsewhere.
    pub fn identity_or_remote_node(&self) -> u32 {
        match self.identity {
            0 => twill_identity::REMOTE_NODE,
            id => id,
        }
    }
}

/// An endpoint address, published by the node that hosts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRecord {
    pub ip: Ipv4Addr,
    pub identity: u32,
    pub node: String,
    pub node_ip: Ipv4Addr,
    pub name: String,
    pub namespace: String,
    /// The endpoint's own labels, `key=value` as users wrote them: what
    /// service selectors on every node pick backends by.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Named container ports, for services' named target ports.
    #[serde(default)]
    pub named_ports: BTreeMap<String, (u16, twill_service::Protocol)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_from_an_agent_without_node_identities_is_remote_node() {
        let old = r#"{"name":"n1","cluster":"default","node_ip":"192.168.0.2","pod_cidr":"10.8.1.0/24",
                      "routing_mode":"tunnel","heartbeat":1,"lease_ttl":3}"#;
        let record: NodeRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.identity, 0);
        assert_eq!(record.identity_or_remote_node(), twill_identity::REMOTE_NODE);
        let new = NodeRecord { identity: 300, ..record };
        assert_eq!(new.identity_or_remote_node(), 300);
    }

    #[test]
    fn pod_cidr_keys_round_trip() {
        let cidr: Cidr = "10.8.3.0/24".parse().unwrap();
        let key = pod_cidr_key("default", &cidr);
        assert_eq!(key, "podcidrs/v1/default/10.8.3.0_24");
        assert_eq!(parse_pod_cidr_key("default", &key), Some(cidr));
        assert_eq!(parse_pod_cidr_key("other", &key), None);
    }
}
