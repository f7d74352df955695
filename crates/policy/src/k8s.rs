//! The wire shapes of the policy kinds Twill reads, field for field as
//! the Kubernetes API serves them. Unknown fields are rejected; fields
//! Cilium has but Twill does not support yet are accepted here only to be
//! reported by name in `convert`.

use std::collections::BTreeMap;

use std::fmt;

use serde::{de, Deserialize, Serialize};
use serde_json::Value;

/// `port: 80` and `port: "80"` (and named ports) are all valid; a
/// boolean or a fraction is not (kubectl refuses them too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(i))
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<IntOrString, E> {
                i64::try_from(u)
                    .map(IntOrString::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(u), &self))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A Cilium rule label, `{key, value, source}` as `cilium-dbg policy get`
/// prints them, or the `source:key=value` string Cilium also reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleLabel {
    pub key: String,
    pub value: String,
    pub source: String,
}

/// Cilium's source for labels written without one.
pub const LABEL_SOURCE_UNSPEC: &str = "unspec";

impl RuleLabel {
    /// `[source:]key[=value]`, as Cilium parses a label string.
    pub fn parse(text: &str) -> RuleLabel {
        let (key, value) = text.split_once('=').unwrap_or((text, ""));
        let (source, key) = match key.split_once(':') {
            Some((source, key)) if !source.is_empty() => (source, key),
            _ => (LABEL_SOURCE_UNSPEC, key),
        };
        RuleLabel { key: key.into(), value: value.into(), source: source.into() }
    }
}

// By source first, as the labels print (`source:key=value`).
impl Ord for RuleLabel {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.source, &self.key, &self.value).cmp(&(&other.source, &other.key, &other.value))
    }
}

impl PartialOrd for RuleLabel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RuleLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.key)?;
        if !self.value.is_empty() {
            write!(f, "={}", self.value)?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for RuleLabel {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            key: String,
            value: Option<String>,
            source: Option<String>,
        }
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RuleLabel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a label: {key, value, source} or \"source:key=value\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RuleLabel, E> {
                Ok(RuleLabel::parse(s))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RuleLabel, A::Error> {
                let f = Fields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let source = f.source.filter(|s| !s.is_empty()).unwrap_or_else(|| LABEL_SOURCE_UNSPEC.into());
                Ok(RuleLabel { key: f.key, value: f.value.unwrap_or_default(), source })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    // Set by the API server; present in exported YAML, meaningless here.
    pub uid: Option<Value>,
    pub resource_version: Option<Value>,
    pub generation: Option<Value>,
    pub creation_timestamp: Option<Value>,
    pub managed_fields: Option<Value>,
    pub generate_name: Option<Value>,
    pub owner_references: Option<Value>,
    pub finalizers: Option<Value>,
    pub self_link: Option<Value>,
    pub deletion_timestamp: Option<Value>,
    pub deletion_grace_period_seconds: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    pub match_labels: Option<BTreeMap<String, String>>,
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    pub values: Option<Vec<String>>,
}

// ---- CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy ---------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: Option<CiliumRule>,
    pub specs: Option<Vec<CiliumRule>>,
    pub status: Option<Value>,
    // Beside `spec` rather than in it in some of Cilium's own examples
    // (the Star Wars demo's sw_l3_l4_policy.yaml): the API server keeps
    // such files working, so Twill reads them too.
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumRule {
    pub endpoint_selector: Option<LabelSelector>,
    pub node_selector: Option<Value>,
    pub ingress: Option<Vec<IngressRule>>,
    pub ingress_deny: Option<Vec<IngressRule>>,
    pub egress: Option<Vec<EgressRule>>,
    pub egress_deny: Option<Vec<EgressRule>>,
    pub labels: Option<Vec<RuleLabel>>,
    pub description: Option<String>,
    pub enable_default_deny: Option<DefaultDeny>,
    // Not supported yet: reported by name.
    pub log: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultDeny {
    pub ingress: Option<bool>,
    pub egress: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    pub from_endpoints: Option<Vec<LabelSelector>>,
    pub from_requires: Option<Vec<LabelSelector>>,
    pub from_entities: Option<Vec<String>>,
    #[serde(rename = "fromCIDR")]
    pub from_cidr: Option<Vec<String>>,
    #[serde(rename = "fromCIDRSet")]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    pub to_ports: Option<Vec<PortRule>>,
    pub icmps: Option<Vec<IcmpRule>>,
    pub from_nodes: Option<Vec<LabelSelector>>,
    // Not supported yet: reported by name.
    pub from_groups: Option<Value>,
    pub authentication: Option<Value>,
    /// Cilium 1.13's name for `authentication`.
    pub auth: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    pub to_endpoints: Option<Vec<LabelSelector>>,
    pub to_requires: Option<Vec<LabelSelector>>,
    pub to_entities: Option<Vec<String>>,
    #[serde(rename = "toCIDR")]
    pub to_cidr: Option<Vec<String>>,
    #[serde(rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    pub to_ports: Option<Vec<PortRule>>,
    pub icmps: Option<Vec<IcmpRule>>,
    pub to_services: Option<Vec<ServiceRule>>,
    // Not supported yet: reported by name.
    #[serde(rename = "toFQDNs")]
    pub to_fqdns: Option<Value>,
    pub to_nodes: Option<Vec<LabelSelector>>,
    pub to_groups: Option<Value>,
    pub authentication: Option<Value>,
    /// Cilium 1.13's name for `authentication`.
    pub auth: Option<Value>,
}

/// One `toServices` entry: Cilium's `Service`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRule {
    pub k8s_service: Option<K8sService>,
    pub k8s_service_selector: Option<K8sServiceSelector>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sService {
    pub service_name: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sServiceSelector {
    pub selector: Option<LabelSelector>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrRule {
    pub cidr: Option<String>,
    pub except: Option<Vec<String>>,
    pub cidr_group_ref: Option<Value>,
    pub cidr_group_selector: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRule {
    pub ports: Option<Vec<PortProtocol>>,
    pub rules: Option<L7RulesSpec>,
    // TLS: not supported yet, reported by name.
    #[serde(rename = "originatingTLS")]
    pub originating_tls: Option<Value>,
    #[serde(rename = "terminatingTLS")]
    pub terminating_tls: Option<Value>,
    pub server_names: Option<Value>,
    pub listener: Option<Value>,
}

/// `toPorts[].rules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L7RulesSpec {
    pub http: Option<Vec<HttpRuleSpec>>,
    // Not supported yet, reported by name.
    pub dns: Option<Value>,
    pub kafka: Option<Value>,
    pub l7proto: Option<Value>,
    pub l7: Option<Value>,
}

/// `rules.http[]`: Cilium's PortRuleHTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRuleSpec {
    pub path: Option<String>,
    pub method: Option<String>,
    pub host: Option<String>,
    pub headers: Option<Vec<String>>,
    pub header_matches: Option<Vec<HeaderMatchSpec>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatchSpec {
    pub name: Option<String>,
    pub value: Option<String>,
    pub mismatch: Option<String>,
    pub secret: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortProtocol {
    /// A string in Cilium's schema: `port: 80` is read as "80".
    pub port: Option<String>,
    pub end_port: Option<i64>,
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpRule {
    pub fields: Option<Vec<IcmpField>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpField {
    #[serde(rename = "type")]
    pub icmp_type: Option<IntOrString>,
    pub family: Option<String>,
}

// ---- networking.k8s.io/v1 NetworkPolicy --------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: Option<NetworkPolicySpec>,
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    pub pod_selector: Option<LabelSelector>,
    pub policy_types: Option<Vec<String>>,
    pub ingress: Option<Vec<NetworkPolicyIngressRule>>,
    pub egress: Option<Vec<NetworkPolicyEgressRule>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyIngressRule {
    pub from: Option<Vec<NetworkPolicyPeer>>,
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyEgressRule {
    pub to: Option<Vec<NetworkPolicyPeer>>,
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPeer {
    pub pod_selector: Option<LabelSelector>,
    pub namespace_selector: Option<LabelSelector>,
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    pub cidr: String,
    pub except: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    pub protocol: Option<String>,
    pub port: Option<IntOrString>,
    pub end_port: Option<i64>,
}
