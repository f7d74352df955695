//! The normalized policy model every input format is converted to, and
//! the resolver consumes. It is Cilium's rule model, with each rule
//! already scoped (namespaced policies) and validated.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::l7_dns::{DnsMatch, DnsPortRule};
use crate::{k8s::RuleLabel, l7::L7Rules, selector::Selector};

/// Which policy a rule came from, for `policy get`, `policy trace` and
/// provenance of map entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyKey {
    pub kind: String,
    /// None for cluster-wide policies.
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            // Cilium rules are named by their labels, and may have none.
            None if self.name.is_empty() => write!(f, "{} without labels", self.kind),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Cilium's entities: named groups of identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Entity {
    All,
    World,
    WorldIpv4,
    WorldIpv6,
    Cluster,
    Host,
    RemoteNode,
    Health,
    Init,
    Unmanaged,
    KubeApiserver,
    Ingress,
}

impl Entity {
    pub const NAMES: &'static [(&'static str, Entity)] = &[
        ("all", Entity::All),
        ("world", Entity::World),
        ("world-ipv4", Entity::WorldIpv4),
        ("world-ipv6", Entity::WorldIpv6),
        ("cluster", Entity::Cluster),
        ("host", Entity::Host),
        ("remote-node", Entity::RemoteNode),
        ("health", Entity::Health),
        ("init", Entity::Init),
        ("unmanaged", Entity::Unmanaged),
        ("kube-apiserver", Entity::KubeApiserver),
        ("ingress", Entity::Ingress),
    ];

    pub fn parse(name: &str) -> Option<Entity> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, e)| *e == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Prefix {
    pub addr: u32,
    pub len: u8,
}

impl Prefix {
    pub fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - len)
        }
    }

    pub fn new(addr: u32, len: u8) -> Self {
        Self { addr: addr & Self::mask(len), len }
    }

    /// Whether `self` contains all of `other`.
    pub fn contains(&self, other: &Prefix) -> bool {
        other.len >= self.len && other.addr & Self::mask(self.len) == self.addr
    }

    pub fn contains_addr(&self, addr: u32) -> bool {
        addr & Self::mask(self.len) == self.addr
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", std::net::Ipv4Addr::from(self.addr), self.len)
    }
}

/// A CIDR peer with exceptions (`fromCIDRSet`, `ipBlock`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CidrPeer {
    pub cidr: Prefix,
    pub except: Vec<Prefix>,
}

impl CidrPeer {
    /// Whether a CIDR identity for prefix `p` is selected.
    pub fn selects(&self, p: &Prefix) -> bool {
        self.cidr.contains(p) && !self.except.iter().any(|e| e.contains(p))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Peer {
    /// Any source or destination (no L3 restriction).
    Any,
    Endpoints(Selector),
    Entity(Entity),
    Cidr(CidrPeer),
    /// `toServices`: the current backends of the services it names.
    Service(ServicePeer),
    /// `fromNodes` / `toNodes`: the nodes whose labels the selector
    /// matches (the empty selector: every node), the local one included.
    Nodes(Selector),
    /// `toFQDNs`: the addresses DNS answers for matching names carried,
    /// as the FQDN cache holds them now (see [`crate::fqdn`]).
    Fqdn(DnsMatch),
}

/// Which services a `toServices` entry names. Resolution follows the
/// services as they are at the time (see [`crate::services`]), so a rule
/// keeps up with backends coming and going without being re-imported.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServicePeer {
    /// The services' namespace. None only in rules without a namespace
    /// (cluster-wide policies, Cilium rule lists) that name none: then
    /// services of every namespace match.
    pub namespace: Option<String>,
    pub select: ServiceMatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceMatch {
    /// `k8sService.serviceName`.
    Name(String),
    /// `k8sServiceSelector.selector`, over the services' own labels.
    Labels(Selector),
}

impl fmt::Display for ServicePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.namespace.as_deref().unwrap_or("*");
        match &self.select {
            ServiceMatch::Name(name) => write!(f, "k8sService {ns}/{name}"),
            ServiceMatch::Labels(sel) => write!(f, "k8sServiceSelector {ns}/{sel}"),
        }
    }
}

pub const PROTO_ANY: u8 = 0;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

pub fn protocol_name(p: u8) -> &'static str {
    match p {
        PROTO_ANY => "ANY",
        PROTO_ICMP => "ICMP",
        PROTO_TCP => "TCP",
        PROTO_UDP => "UDP",
        PROTO_SCTP => "SCTP",
        _ => "?",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PortMatch {
    /// Inclusive range; a single port is `lo == hi`; all ports is 0..=65535.
    Range(u16, u16),
    /// A named port, resolved against endpoints' declared ports.
    Named(String),
}

/// One L4 condition: a protocol (PROTO_ANY for any) and ports. For ICMP
/// the "port" is the ICMP type, as in Cilium's policy maps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct L4 {
    pub protocol: u8,
    pub ports: PortMatch,
    /// `toPorts[].rules`: requests on these ports go through the proxy,
    /// which allows those the rules match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7Rules>,
}

impl L4 {
    pub fn any() -> Self {
        L4 { protocol: PROTO_ANY, ports: PortMatch::Range(0, u16::MAX), l7: None }
    }
}

/// Peers and ports of one ingress/egress (deny) rule. The rule applies to
/// traffic from (to) any of `peers` on any of `l4` (an empty `l4` means
/// every protocol and port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRule {
    pub peers: Vec<Peer>,
    pub l4: Vec<L4>,
    /// `toPorts[].rules.dns`: lookups on those ports go through the DNS
    /// proxy, which allows only the names listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsPortRule>,
}

/// Everything one rule says about one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionRules {
    /// The rule has a section for this direction (even an empty one), so
    /// selected endpoints default to deny, unless `default_deny` is false.
    pub present: bool,
    pub default_deny: bool,
    pub allow: Vec<PeerRule>,
    pub deny: Vec<PeerRule>,
    /// fromRequires / toRequires: every endpoint peer must also match all.
    pub requires: Vec<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub policy: PolicyKey,
    /// Index of the rule within its policy (the `specs:` list position).
    pub index: usize,
    /// Endpoints the rule applies to (already scoped to the namespace).
    pub subject: Selector,
    pub ingress: DirectionRules,
    pub egress: DirectionRules,
}

impl Rule {
    pub fn direction(&self, d: Direction) -> &DirectionRules {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A validated policy document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub key: PolicyKey,
    pub rules: Vec<Rule>,
    /// The document as Twill read it, for `policy get`.
    pub document: serde_json::Value,
    /// The labels that identify the policy, as Cilium gives them: a Cilium
    /// rule's own `labels`, or for a Kubernetes object the
    /// `k8s:io.cilium.k8s.policy.*` labels derived from it (plus any rule
    /// labels in its spec). Sorted, without repeats.
    #[serde(default)]
    pub labels: Vec<RuleLabel>,
    /// The rules' `description`s, distinct ones joined by "; ".
    #[serde(default)]
    pub description: Option<String>,
}

impl Policy {
    /// Whether any rule has DNS rules or toFQDNs peers: parts that need
    /// the DNS proxy and the FQDN cache to be enforced.
    pub fn has_dns_parts(&self) -> bool {
        self.rules.iter().any(|r| {
            [&r.ingress, &r.egress]
                .into_iter()
                .flat_map(|d| d.allow.iter().chain(&d.deny))
                .any(|pr| !pr.dns.is_empty() || pr.peers.iter().any(|p| matches!(p, Peer::Fqdn(_))))
        })
    }

    /// Whether the policy carries every label in `wanted` (and `wanted` is
    /// not empty: no filter must never mean "everything").
    pub fn matches_labels(&self, wanted: &[LabelFilter]) -> bool {
        !wanted.is_empty() && wanted.iter().all(|w| self.labels.iter().any(|l| w.matches(l)))
    }
}

/// A label to look for, as `policy delete --label` takes it:
/// `[source:]key=value`. Without a source (or with `any:`) a label from
/// any source matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    pub source: Option<String>,
    pub key: String,
    pub value: String,
}

impl LabelFilter {
    pub fn parse(text: &str) -> Result<LabelFilter, String> {
        let (key, value) = text.split_once('=').unwrap_or((text, ""));
        let (source, key) = match key.split_once(':') {
            Some(("any", key)) => (None, key),
            Some((source, key)) if !source.is_empty() => (Some(source.to_string()), key),
            _ => (None, key),
        };
        if key.is_empty() {
            return Err(format!("label {text:?}: expected [SOURCE:]KEY=VALUE, e.g. unspec:name=rule1"));
        }
        Ok(LabelFilter { source, key: key.into(), value: value.into() })
    }

    pub fn parse_all(texts: &[String]) -> Result<Vec<LabelFilter>, String> {
        texts.iter().map(|t| LabelFilter::parse(t)).collect()
    }

    pub fn matches(&self, label: &RuleLabel) -> bool {
        label.key == self.key
            && label.value == self.value
            && self.source.as_ref().is_none_or(|s| *s == label.source)
    }
}
