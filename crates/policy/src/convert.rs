//! YAML documents to validated [`Policy`] values, all or nothing: every
//! problem in every document is reported, by file, document number,
//! policy (or rule) and field path.

use std::{fmt, net::Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    k8s::{self, IntOrString, RuleLabel},
    l7::{self, HeaderMatch, HttpRule, L7Rules, MismatchAction},
    l7_dns::{self, DnsPortRule},
    model::*,
    selector::{Operator, Requirement, Selector, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_KEY},
    yaml::{self, typed, Node},
};

pub const CILIUM_API_VERSION: &str = "cilium.io/v2";
pub const NETWORKING_API_VERSION: &str = "networking.k8s.io/v1";
pub const KIND_CNP: &str = "CiliumNetworkPolicy";
pub const KIND_CCNP: &str = "CiliumClusterwideNetworkPolicy";
pub const KIND_NP: &str = "NetworkPolicy";

/// How a rule in a list of Cilium rules is named in errors and listings.
pub const KIND_RULES: &str = "CiliumRules";

/// One problem in one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    pub file: String,
    /// 1-based; 0 when the file as a whole could not be read.
    pub document: usize,
    /// 1-based position in a list of Cilium rules (the form `cilium-dbg
    /// policy import` reads); None for Kubernetes objects.
    pub rule: Option<usize>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    /// For a rule, its labels (`source:key=value,...`).
    pub name: Option<String>,
    pub path: String,
    pub reason: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            return write!(f, "{}: {}", self.file, self.reason);
        }
        if let Some(rule) = self.rule {
            let labels = match self.name.as_deref() {
                Some(l) if !l.is_empty() => format!("labels {l}"),
                _ => "no labels".into(),
            };
            // Most rule files hold one list: the document number is noise there.
            let document =
                if self.document > 1 { format!("document {}, ", self.document) } else { String::new() };
            write!(f, "{}: {document}rule {rule} ({labels}): ", self.file)?;
        } else {
            let kind = self.kind.as_deref().unwrap_or("unknown kind");
            let name = self.name.as_deref().unwrap_or("<no name>");
            let who = match &self.namespace {
                Some(ns) => format!("{kind} {ns}/{name}"),
                None => format!("{kind} {name}"),
            };
            write!(f, "{}: document {} ({who}): ", self.file, self.document)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.reason)
    }
}

/// `parent.field`, or `field` at the top of a rule that is itself the
/// document's element.
fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// Collects (path, reason) pairs while converting one document.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push((path.into(), reason.into()));
    }

    fn unsupported(&mut self, path: &str, field: &str, present: bool) {
        if present {
            self.add(join(path, field), "is not supported by Twill yet");
        }
    }
}

/// Parses every document in `text`: Kubernetes objects, or lists of Cilium
/// rules (the JSON `cilium-dbg policy import` reads). Either all are valid
/// and returned, or every problem found is returned and nothing else.
pub fn parse_policies(file: &str, text: &str) -> Result<Vec<Policy>, Vec<DocumentError>> {
    let documents = match yaml::parse_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            return Err(vec![DocumentError {
                file: file.into(),
                document: 0,
                rule: None,
                kind: None,
                namespace: None,
                name: None,
                path: String::new(),
                reason: format!("not valid YAML: {e}"),
            }])
        }
    };
    let mut policies: Vec<Policy> = Vec::new();
    let mut errors = Vec::new();
    let mut seen: Vec<(PolicyKey, usize)> = Vec::new();
    let mut keep = |policy: Policy, number: usize, errors: &mut Vec<DocumentError>, error: DocumentError| {
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == policy.key) {
            errors.push(DocumentError {
                reason: format!("the same policy is already defined by document {first}"),
                ..error
            });
        } else {
            seen.push((policy.key.clone(), number));
            policies.push(policy);
        }
    };
    for (i, doc) in documents.iter().enumerate() {
        let number = i + 1;
        if doc.is_null() {
            continue;
        }
        if let Node::Seq(items) = doc {
            match convert_rule_list(file, number, items) {
                Ok(sets) => {
                    for (first_rule, set) in sets {
                        let error = DocumentError {
                            file: file.into(),
                            document: number,
                            rule: Some(first_rule),
                            kind: Some(KIND_RULES.into()),
                            namespace: None,
                            name: Some(set.key.name.clone()),
                            path: "labels".into(),
                            reason: String::new(),
                        };
                        keep(set, number, &mut errors, error);
                    }
                }
                Err(e) => errors.extend(e),
            }
            continue;
        }
        let text_of = |ptr: &[&str]| {
            ptr.iter().try_fold(doc, |node, key| node.get(key)).and_then(Node::text).map(str::to_string)
        };
        let kind = text_of(&["kind"]);
        let name = text_of(&["metadata", "name"]);
        let mut namespace = text_of(&["metadata", "namespace"]);
        if namespace.is_none() && matches!(kind.as_deref(), Some(KIND_CNP) | Some(KIND_NP)) {
            namespace = Some("default".into());
        }
        let error = |path: String, reason: String| DocumentError {
            file: file.into(),
            document: number,
            rule: None,
            kind: kind.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            path,
            reason,
        };
        match convert_document(doc) {
            Ok(policy) => keep(policy, number, &mut errors, error("metadata.name".into(), String::new())),
            Err(problems) => errors.extend(problems.into_iter().map(|(p, r)| error(p, r))),
        }
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors)
    }
}

/// The document as Twill read it, for `policy get`: strings are strings
/// (`1.10` stays "1.10") and absent fields are left out.
fn document_of<T: Serialize>(typed: &T) -> Value {
    fn strip_nulls(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(strip_nulls);
            }
            Value::Array(items) => items.iter_mut().for_each(strip_nulls),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(typed).unwrap_or(Value::Null);
    strip_nulls(&mut v);
    v
}

/// The labels that name a policy from Kubernetes, as Cilium derives them.
fn derived_labels(key: &PolicyKey) -> Vec<RuleLabel> {
    let k8s =
        |key: &str, value: &str| RuleLabel { key: key.into(), value: value.into(), source: "k8s".into() };
    let mut labels = vec![
        k8s("io.cilium.k8s.policy.derived-from", &key.kind),
        k8s("io.cilium.k8s.policy.name", &key.name),
    ];
    if let Some(ns) = &key.namespace {
        labels.push(k8s("io.cilium.k8s.policy.namespace", ns));
    }
    labels
}

/// Distinct non-empty descriptions, in order, as one line.
fn describe<'a>(descriptions: impl Iterator<Item = Option<&'a String>>) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for d in descriptions.flatten().map(|d| d.trim()) {
        if !d.is_empty() && !out.contains(&d) {
            out.push(d);
        }
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// A list of Cilium rules. Rules carrying the same labels form one rule
/// set, named by those labels, the unit that is replaced on import and
/// deleted by label. Returns each set with the position of its first rule.
fn convert_rule_list(
    file: &str,
    number: usize,
    items: &[Node],
) -> Result<Vec<(usize, Policy)>, Vec<DocumentError>> {
    let mut errors = Vec::new();
    let mut sets: Vec<(usize, Policy, Vec<Option<String>>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        // The labels name the rule in errors even when the rest is wrong.
        let labels = item
            .get("labels")
            .and_then(|n| Option::<Vec<RuleLabel>>::deserialize(n).ok().flatten())
            .map(|l| canonical_labels(&l))
            .unwrap_or_default();
        let name = labels_name(&labels);
        let error = |path: String, reason: String| DocumentError {
            file: file.into(),
            document: number,
            rule: Some(i + 1),
            kind: Some(KIND_RULES.into()),
            namespace: None,
            name: Some(name.clone()),
            path,
            reason,
        };
        if !matches!(item, Node::Map(_)) {
            errors.push(error(String::new(), "expected a mapping (a Cilium rule)".into()));
            continue;
        }
        if item.get("apiVersion").is_some() || item.get("kind").is_some() {
            errors.push(error(
                String::new(),
                "a list holds Cilium rules, not Kubernetes objects; write objects as YAML documents separated by ---"
                    .into(),
            ));
            continue;
        }
        let rule: k8s::CiliumRule = match typed(item) {
            Ok(r) => r,
            Err(problems) => {
                errors.extend(problems.into_iter().map(|(p, r)| error(p, r)));
                continue;
            }
        };
        let document = document_of(&rule);
        let description = rule.description.clone();
        let position = sets.iter().position(|(_, set, _)| set.labels == labels);
        let index = position.map_or(0, |s| sets[s].1.rules.len());
        let key = PolicyKey { kind: KIND_RULES.into(), namespace: None, name: name.clone() };
        let mut p = Problems::default();
        // Rules imported this way have no namespace, as in Cilium: they
        // select and allow across namespaces unless a selector says otherwise.
        let converted = convert_cilium_rule(&key, index, "", rule, None, &mut p);
        if !p.0.is_empty() {
            errors.extend(p.0.into_iter().map(|(p, r)| error(p, r)));
            continue;
        }
        match position {
            Some(s) => {
                let (_, set, descriptions) = &mut sets[s];
                set.rules.push(converted);
                if let Value::Array(docs) = &mut set.document {
                    docs.push(document);
                }
                descriptions.push(description);
            }
            None => sets.push((
                i + 1,
                Policy {
                    key,
                    rules: vec![converted],
                    document: Value::Array(vec![document]),
                    labels,
                    description: None,
                },
                vec![description],
            )),
        }
    }
    if items.is_empty() {
        errors.push(DocumentError {
            file: file.into(),
            document: number,
            rule: None,
            kind: None,
            namespace: None,
            name: None,
            path: String::new(),
            reason: "an empty list of rules".into(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(sets
        .into_iter()
        .map(|(first, mut set, descriptions)| {
            set.description = describe(descriptions.iter().map(Option::as_ref));
            (first, set)
        })
        .collect())
}

fn convert_document(doc: &Node) -> Result<Policy, Vec<(String, String)>> {
    if !matches!(doc, Node::Map(_)) {
        return Err(vec![(
            String::new(),
            "expected a mapping (a Kubernetes object) or a list of Cilium rules".into(),
        )]);
    }
    let kind = doc.get("kind").and_then(Node::text).unwrap_or_default().to_string();
    let api_version = doc.get("apiVersion").and_then(Node::text).unwrap_or_default().to_string();
    let expected_version = match kind.as_str() {
        KIND_CNP | KIND_CCNP => CILIUM_API_VERSION,
        KIND_NP => NETWORKING_API_VERSION,
        "" if doc.get("endpointSelector").is_some() => {
            return Err(vec![(
                "kind".into(),
                "is required; a Cilium rule on its own must be inside a list ([{...}]), as cilium-dbg policy import reads it"
                    .into(),
            )])
        }
        "" => return Err(vec![("kind".into(), "is required".into())]),
        other => {
            return Err(vec![(
                "kind".into(),
                format!(
                "{other:?} is not a policy kind Twill reads; expected {KIND_CNP}, {KIND_CCNP} or {KIND_NP}"
            ),
            )])
        }
    };
    if api_version != expected_version {
        return Err(vec![(
            "apiVersion".into(),
            format!("{api_version:?} is not supported for {kind}; expected {expected_version}"),
        )]);
    }
    let mut problems = Problems::default();
    let policy = match kind.as_str() {
        KIND_NP => {
            let np: k8s::NetworkPolicy = typed(doc)?;
            let document = document_of(&np);
            convert_network_policy(np, &mut problems, document)
        }
        _ => {
            let cnp: k8s::CiliumPolicy = typed(doc)?;
            let document = document_of(&cnp);
            convert_cilium_policy(cnp, &mut problems, document)
        }
    };
    if problems.0.is_empty() {
        Ok(policy)
    } else {
        Err(problems.0)
    }
}

fn check_name(meta: &k8s::ObjectMeta, p: &mut Problems) -> String {
    let Some(name) = meta.name.clone() else {
        p.add("metadata.name", "is required");
        return String::new();
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        p.add("metadata.name", format!("{name:?} is not a valid name (lowercase letters, digits, '-', '.')"));
    }
    name
}

fn convert_cilium_policy(cnp: k8s::CiliumPolicy, p: &mut Problems, document: Value) -> Policy {
    let clusterwide = cnp.kind == KIND_CCNP;
    let name = check_name(&cnp.metadata, p);
    let namespace = if clusterwide {
        if cnp.metadata.namespace.is_some() {
            p.add("metadata.namespace", "cluster-wide policies have no namespace");
        }
        None
    } else {
        Some(cnp.metadata.namespace.clone().unwrap_or_else(|| "default".into()))
    };
    let key = PolicyKey { kind: cnp.kind.clone(), namespace: namespace.clone(), name };
    let mut specs: Vec<(String, k8s::CiliumRule)> = Vec::new();
    if let Some(spec) = cnp.spec {
        specs.push(("spec".into(), spec));
    }
    for (i, spec) in cnp.specs.into_iter().flatten().enumerate() {
        specs.push((format!("specs[{i}]"), spec));
    }
    if specs.is_empty() {
        p.add("spec", "spec or specs is required");
    }
    let description = describe(
        std::iter::once(cnp.description.as_ref()).chain(specs.iter().map(|(_, r)| r.description.as_ref())),
    );
    let mut labels = derived_labels(&key);
    labels.extend(specs.iter().flat_map(|(_, r)| r.labels.iter().flatten().cloned()));
    let labels = canonical_labels(&labels);
    let rules = specs
        .into_iter()
        .enumerate()
        .map(|(index, (path, rule))| convert_cilium_rule(&key, index, &path, rule, namespace.as_deref(), p))
        .collect();
    Policy { key, rules, document, labels, description }
}

/// Sorted and without repeats: the same labels in any order name the same
/// rule set.
fn canonical_labels(labels: &[RuleLabel]) -> Vec<RuleLabel> {
    let mut out = labels.to_vec();
    out.sort();
    out.dedup();
    out
}

/// A rule set's name: its labels, `source:key=value,...`.
fn labels_name(labels: &[RuleLabel]) -> String {
    labels.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn convert_cilium_rule(
    key: &PolicyKey,
    index: usize,
    path: &str,
    rule: k8s::CiliumRule,
    namespace: Option<&str>,
    p: &mut Problems,
) -> Rule {
    p.unsupported(path, "nodeSelector", rule.node_selector.is_some());
    p.unsupported(path, "log", rule.log.is_some());
    for (i, label) in rule.labels.iter().flatten().enumerate() {
        if label.key.is_empty() {
            p.add(format!("{}[{i}].key", join(path, "labels")), "must not be empty");
        }
    }
    let subject = match &rule.endpoint_selector {
        Some(sel) => selector(sel, &join(path, "endpointSelector"), p),
        None => {
            p.add(join(path, "endpointSelector"), "is required");
            Selector::default()
        }
    };
    let subject = match namespace {
        Some(ns) => subject.scoped_to(ns),
        None => subject,
    };
    let scope = |s: Selector| match namespace {
        Some(ns) => s.scoped_to(ns),
        None => s,
    };
    let defaults = rule.enable_default_deny.clone();
    let mut ingress = DirectionRules::default();
    let mut egress = DirectionRules::default();
    for (i, r) in rule.ingress.iter().flatten().enumerate() {
        let path = format!("{}[{i}]", join(path, "ingress"));
        let (peer_rule, requires) = ingress_rule(r, &path, &scope, p);
        if peer_rule.as_ref().is_some_and(|r| !r.dns.is_empty()) {
            p.add(
                format!("{path}.toPorts"),
                "rules.dns is allowed in egress rules only (it filters lookups an endpoint makes)",
            );
        }
        ingress.allow.extend(peer_rule);
        ingress.requires.extend(requires);
    }
    for (i, r) in rule.ingress_deny.iter().flatten().enumerate() {
        let path = format!("{}[{i}]", join(path, "ingressDeny"));
        for (j, port_rule) in r.to_ports.iter().flatten().enumerate() {
            if port_rule.rules.is_some() {
                p.add(format!("{path}.toPorts[{j}].rules"), "L7 rules are not allowed in deny rules");
            }
        }
        if r.from_requires.is_some() {
            p.add(format!("{path}.fromRequires"), "is not allowed in deny rules");
        }
        let (peer_rule, _) = ingress_rule(r, &path, &scope, p);
        refuse_dns_in_deny(peer_rule.as_ref(), &path, p);
        ingress.deny.extend(peer_rule);
    }
    for (i, r) in rule.egress.iter().flatten().enumerate() {
        let path = format!("{}[{i}]", join(path, "egress"));
        let (peer_rule, requires) = egress_rule(r, &path, namespace, &scope, p);
        egress.allow.extend(peer_rule);
        egress.requires.extend(requires);
    }
    for (i, r) in rule.egress_deny.iter().flatten().enumerate() {
        let path = format!("{}[{i}]", join(path, "egressDeny"));
        for (j, port_rule) in r.to_ports.iter().flatten().enumerate() {
            if port_rule.rules.is_some() {
                p.add(format!("{path}.toPorts[{j}].rules"), "L7 rules are not allowed in deny rules");
            }
        }
        if r.to_requires.is_some() {
            p.add(format!("{path}.toRequires"), "is not allowed in deny rules");
        }
        let (peer_rule, _) = egress_rule(r, &path, namespace, &scope, p);
        refuse_dns_in_deny(peer_rule.as_ref(), &path, p);
        egress.deny.extend(peer_rule);
    }
    // Cilium: a direction is covered when the rule has (non-empty) allow or
    // deny rules for it; default deny follows unless disabled.
    ingress.present = rule.ingress.as_ref().is_some_and(|v| !v.is_empty())
        || rule.ingress_deny.as_ref().is_some_and(|v| !v.is_empty());
    egress.present = rule.egress.as_ref().is_some_and(|v| !v.is_empty())
        || rule.egress_deny.as_ref().is_some_and(|v| !v.is_empty());
    ingress.default_deny = defaults.as_ref().and_then(|d| d.ingress).unwrap_or(ingress.present);
    egress.default_deny = defaults.as_ref().and_then(|d| d.egress).unwrap_or(egress.present);
    Rule { policy: key.clone(), index, subject, ingress, egress }
}

/// Cilium's deny rules have neither L7 rules nor toFQDNs.
fn refuse_dns_in_deny(rule: Option<&PeerRule>, path: &str, p: &mut Problems) {
    let Some(rule) = rule else { return };
    if !rule.dns.is_empty() {
        p.add(format!("{path}.toPorts"), "L7 rules (rules.dns) are not allowed in deny rules");
    }
    if rule.peers.iter().any(|peer| matches!(peer, Peer::Fqdn(_))) {
        p.add(format!("{path}.toFQDNs"), "is not allowed in deny rules");
    }
}

struct PeerFields<'a> {
    endpoints: &'a Option<Vec<k8s::LabelSelector>>,
    requires: &'a Option<Vec<k8s::LabelSelector>>,
    entities: &'a Option<Vec<String>>,
    nodes: &'a Option<Vec<k8s::LabelSelector>>,
    cidr: &'a Option<Vec<String>>,
    cidr_set: &'a Option<Vec<k8s::CidrRule>>,
    to_ports: &'a Option<Vec<k8s::PortRule>>,
    icmps: &'a Option<Vec<k8s::IcmpRule>>,
    /// `toServices`, already converted (egress only); None when absent.
    services: Option<Vec<Peer>>,
    /// `toFQDNs`, already converted (egress only); None when absent.
    fqdns: Option<Vec<Peer>>,
    /// "from" or "to", for field names in errors.
    prefix: &'static str,
}

fn ingress_rule(
    r: &k8s::IngressRule,
    path: &str,
    scope: &dyn Fn(Selector) -> Selector,
    p: &mut Problems,
) -> (Option<PeerRule>, Vec<Selector>) {
    p.unsupported(path, "fromGroups", r.from_groups.is_some());
    p.unsupported(path, "authentication", r.authentication.is_some());
    p.unsupported(path, "auth", r.auth.is_some());
    peer_rule(
        PeerFields {
            endpoints: &r.from_endpoints,
            requires: &r.from_requires,
            entities: &r.from_entities,
            nodes: &r.from_nodes,
            cidr: &r.from_cidr,
            cidr_set: &r.from_cidr_set,
            to_ports: &r.to_ports,
            icmps: &r.icmps,
            services: None,
            fqdns: None,
            prefix: "from",
        },
        path,
        scope,
        p,
    )
}

fn egress_rule(
    r: &k8s::EgressRule,
    path: &str,
    namespace: Option<&str>,
    scope: &dyn Fn(Selector) -> Selector,
    p: &mut Problems,
) -> (Option<PeerRule>, Vec<Selector>) {
    let fqdns = r.to_fqdns.as_ref().map(|v| to_fqdns(v, &format!("{path}.toFQDNs"), p));
    let services = r.to_services.as_ref().map(|list| {
        list.iter()
            .enumerate()
            .flat_map(|(i, s)| service_peers(s, &format!("{path}.toServices[{i}]"), namespace, p))
            .collect()
    });
    p.unsupported(path, "toGroups", r.to_groups.is_some());
    p.unsupported(path, "authentication", r.authentication.is_some());
    p.unsupported(path, "auth", r.auth.is_some());
    peer_rule(
        PeerFields {
            endpoints: &r.to_endpoints,
            requires: &r.to_requires,
            entities: &r.to_entities,
            nodes: &r.to_nodes,
            cidr: &r.to_cidr,
            cidr_set: &r.to_cidr_set,
            to_ports: &r.to_ports,
            icmps: &r.icmps,
            services,
            fqdns,
            prefix: "to",
        },
        path,
        scope,
        p,
    )
}

fn peer_rule(
    f: PeerFields,
    path: &str,
    scope: &dyn Fn(Selector) -> Selector,
    p: &mut Problems,
) -> (Option<PeerRule>, Vec<Selector>) {
    let pre = f.prefix;
    let mut peers = Vec::new();
    for (i, sel) in f.endpoints.iter().flatten().enumerate() {
        let s = selector(sel, &format!("{path}.{pre}Endpoints[{i}]"), p);
        peers.push(Peer::Endpoints(scope(s)));
    }
    let requires: Vec<Selector> = f
        .requires
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, sel)| scope(selector(sel, &format!("{path}.{pre}Requires[{i}]"), p)))
        .collect();
    for (i, name) in f.entities.iter().flatten().enumerate() {
        match Entity::parse(name) {
            Some(e) => peers.push(Peer::Entity(e)),
            None => {
                let known: Vec<&str> = Entity::NAMES.iter().map(|(n, _)| *n).collect();
                p.add(
                    format!("{path}.{pre}Entities[{i}]"),
                    format!("unknown entity {name:?}; expected one of {}", known.join(", ")),
                )
            }
        }
    }
    for (i, sel) in f.nodes.iter().flatten().enumerate() {
        let s = node_selector(sel, &format!("{path}.{pre}Nodes[{i}]"), p);
        peers.push(Peer::Nodes(s));
    }
    for (i, cidr) in f.cidr.iter().flatten().enumerate() {
        if let Some(prefix) = parse_prefix(cidr, &format!("{path}.{pre}CIDR[{i}]"), p) {
            peers.push(Peer::Cidr(CidrPeer { cidr: prefix, except: vec![] }));
        }
    }
    for (i, rule) in f.cidr_set.iter().flatten().enumerate() {
        let rpath = format!("{path}.{pre}CIDRSet[{i}]");
        p.unsupported(&rpath, "cidrGroupRef", rule.cidr_group_ref.is_some());
        p.unsupported(&rpath, "cidrGroupSelector", rule.cidr_group_selector.is_some());
        let Some(cidr) = &rule.cidr else {
            p.add(format!("{rpath}.cidr"), "is required");
            continue;
        };
        if let Some(peer) = cidr_peer(cidr, rule.except.as_deref().unwrap_or(&[]), &rpath, p) {
            peers.push(Peer::Cidr(peer));
        }
    }
    let services_given = f.services.is_some();
    peers.extend(f.services.into_iter().flatten());
    let fqdns_given = f.fqdns.is_some();
    if fqdns_given && !peers.is_empty() {
        // As in Cilium: a toFQDNs rule selects only by name.
        p.add(
            format!("{path}.toFQDNs"),
            "cannot be combined with other to* peers in one rule; write two rules",
        );
    }
    peers.extend(f.fqdns.into_iter().flatten());
    let has_ports = f.to_ports.as_ref().is_some_and(|v| !v.is_empty());
    let has_icmps = f.icmps.as_ref().is_some_and(|v| !v.is_empty());
    if has_ports && has_icmps {
        p.add(format!("{path}.icmps"), "toPorts and icmps cannot be combined in one rule; write two rules");
    }
    let mut l4 = Vec::new();
    let mut dns = Vec::new();
    for (i, port_rule) in f.to_ports.iter().flatten().enumerate() {
        let ppath = format!("{path}.toPorts[{i}]");
        let rpath = format!("{ppath}.rules");
        let http = port_rule.rules.as_ref().and_then(|r| l7_rules(r, &rpath, p));
        let dns_names = port_rule
            .rules
            .as_ref()
            .and_then(|r| r.dns.as_ref())
            .and_then(|v| l7_dns::parse_dns_rules(v, &format!("{rpath}.dns"), &mut p.0));
        // DNS rules redirect like HTTP rules do, to the DNS proxy; over
        // UDP and TCP both, as the protocol the rule gives says.
        let l7 = http.clone().or_else(|| dns_names.clone().map(L7Rules::Dns));
        if (l7.is_some() || dns_names.is_some()) && port_rule.ports.as_ref().is_none_or(|v| v.is_empty()) {
            p.add(format!("{ppath}.ports"), "is required with rules: L7 rules apply to given ports");
        }
        let first_l4 = l4.len();
        p.unsupported(&ppath, "originatingTLS", port_rule.originating_tls.is_some());
        p.unsupported(&ppath, "terminatingTLS", port_rule.terminating_tls.is_some());
        p.unsupported(&ppath, "serverNames", port_rule.server_names.is_some());
        p.unsupported(&ppath, "listener", port_rule.listener.is_some());
        match &port_rule.ports {
            None => l4.push(L4::any()),
            Some(ports) => {
                for (j, port) in ports.iter().enumerate() {
                    let path = format!("{ppath}.ports[{j}]");
                    let mut protocol =
                        cilium_protocol(port.protocol.as_deref(), &format!("{path}.protocol"), p);
                    if http.is_some() {
                        // HTTP runs over TCP only: "ANY" with HTTP rules is TCP.
                        match protocol {
                            PROTO_ANY => protocol = PROTO_TCP,
                            PROTO_TCP => {}
                            _ => p.add(
                                format!("{path}.protocol"),
                                format!("HTTP rules need TCP, not {}", protocol_name(protocol)),
                            ),
                        }
                    }
                    let number = port.port.clone().map(IntOrString::String);
                    if let Some(m) = port_match(number.as_ref(), port.end_port, &path, p) {
                        l4.push(L4 { protocol, ports: m, l7: l7.clone() });
                    }
                }
            }
        }
        if let Some(names) = dns_names {
            dns.push(DnsPortRule { l4: l4[first_l4..].to_vec(), names });
        }
    }
    for (i, icmp) in f.icmps.iter().flatten().enumerate() {
        for (j, field) in icmp.fields.iter().flatten().enumerate() {
            let path = format!("{path}.icmps[{i}].fields[{j}]");
            if let Some(entry) = icmp_l4(field, &path, p) {
                l4.push(entry);
            }
        }
    }
    let selects_peers = f.endpoints.is_some()
        || f.entities.is_some()
        || f.nodes.is_some()
        || f.cidr.is_some()
        || f.cidr_set.is_some()
        || services_given
        || fqdns_given;
    if !selects_peers && (has_ports || has_icmps) {
        // Only L4 given: the rule applies to every peer.
        peers.push(Peer::Any);
    }
    if !selects_peers && !has_ports && !has_icmps && !requires.is_empty() {
        // A rule holding only requirements allows nothing by itself.
        return (None, requires);
    }
    let ports_given = has_ports || has_icmps;
    if ports_given && l4.is_empty() {
        // e.g. only IPv6 ICMP types: nothing this IPv4 datapath can match.
        return (None, requires);
    }
    (Some(PeerRule { peers, l4, dns }), requires)
}

/// `toFQDNs`: a list of name selectors, each a peer of its own.
fn to_fqdns(value: &Value, path: &str, p: &mut Problems) -> Vec<Peer> {
    let Some(list) = value.as_array() else {
        p.add(path, "expected a list of matchName/matchPattern entries");
        return vec![];
    };
    list.iter()
        .enumerate()
        .filter_map(|(i, v)| l7_dns::parse_selector(v, &format!("{path}[{i}]"), &mut p.0))
        .map(Peer::Fqdn)
        .collect()
}

/// `toPorts[].rules`: the HTTP rules, validated (every regex compiles).
fn l7_rules(r: &k8s::L7RulesSpec, path: &str, p: &mut Problems) -> Option<L7Rules> {
    let kinds: Vec<&str> = [
        ("dns", r.dns.is_some()),
        ("http", r.http.is_some()),
        ("kafka", r.kafka.is_some()),
        ("l7proto", r.l7proto.is_some()),
        ("l7", r.l7.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, given)| given.then_some(k))
    .collect();
    if kinds.len() > 1 {
        // As Cilium: one kind of L7 rule per port rule.
        p.add(
            path,
            format!(
                "holds {} kinds of L7 rules; one port rule takes one kind: write one toPorts entry each",
                kinds.join(" and ")
            ),
        );
    }
    p.unsupported(path, "kafka", r.kafka.is_some());
    p.unsupported(path, "l7proto", r.l7proto.is_some());
    p.unsupported(path, "l7", r.l7.is_some());
    let http = r.http.as_ref()?;
    let before = p.0.len();
    let mut rules = Vec::with_capacity(http.len());
    for (i, h) in http.iter().enumerate() {
        let hpath = format!("{path}.http[{i}]");
        let pattern = |field: &str, v: &Option<String>, p: &mut Problems| match v.as_deref() {
            // Cilium treats an empty pattern as "not given".
            None | Some("") => None,
            Some(text) => match l7::anchored(text) {
                Ok(_) => Some(text.to_string()),
                Err(e) => {
                    p.add(
                        format!("{hpath}.{field}"),
                        format!("{text:?} is not a valid regular expression: {e}"),
                    );
                    None
                }
            },
        };
        let mut rule = HttpRule {
            method: pattern("method", &h.method, p),
            path: pattern("path", &h.path, p),
            host: pattern("host", &h.host, p),
            headers: Vec::new(),
        };
        for (j, text) in h.headers.iter().flatten().enumerate() {
            // "Name" (present) or "Name: value" (exact value), as Cilium.
            let (name, value) = match text.split_once(':') {
                Some((n, v)) => (n.trim(), Some(v.trim().to_string())),
                None => (text.trim(), None),
            };
            match check_header_name(name) {
                Ok(()) => rule.headers.push(HeaderMatch { name: name.into(), value, mismatch: None }),
                Err(reason) => p.add(format!("{hpath}.headers[{j}]"), format!("{text:?}: {reason}")),
            }
        }
        for (j, m) in h.header_matches.iter().flatten().enumerate() {
            let mpath = format!("{hpath}.headerMatches[{j}]");
            p.unsupported(&mpath, "secret", m.secret.is_some());
            let name = m.name.as_deref().unwrap_or("");
            if name.is_empty() {
                p.add(format!("{mpath}.name"), "is required");
                continue;
            }
            if let Err(reason) = check_header_name(name) {
                p.add(format!("{mpath}.name"), format!("{name:?}: {reason}"));
                continue;
            }
            let mismatch = match m.mismatch.as_deref() {
                None | Some("") => None,
                Some(text) => match MismatchAction::parse(text) {
                    Some(a) => Some(a),
                    None => {
                        p.add(
                            format!("{mpath}.mismatch"),
                            format!("{text:?} is not an action; expected LOG, ADD, DELETE or REPLACE"),
                        );
                        continue;
                    }
                },
            };
            let value = m.value.clone().filter(|v| !v.is_empty());
            if value.is_none() && matches!(mismatch, Some(MismatchAction::Add | MismatchAction::Replace)) {
                p.add(format!("{mpath}.value"), "is required for mismatch ADD and REPLACE");
                continue;
            }
            rule.headers.push(HeaderMatch { name: name.into(), value, mismatch });
        }
        rules.push(rule);
    }
    (p.0.len() == before).then_some(L7Rules::Http(rules))
}

/// An HTTP header name is an RFC 9110 token.
fn check_header_name(name: &str) -> Result<(), &'static str> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        Err("the header name is empty")
    } else if !name.chars().all(tchar) {
        Err("the header name has characters HTTP does not allow in one")
    } else {
        Ok(())
    }
}

/// One `toServices` entry. As in Cilium, a namespaced policy's entry
/// without a namespace names services of the policy's own namespace; a
/// rule without a namespace (cluster-wide) names services of any. An
/// entry may hold both forms; each selects services on its own.
fn service_peers(s: &k8s::ServiceRule, path: &str, namespace: Option<&str>, p: &mut Problems) -> Vec<Peer> {
    let mut out = Vec::new();
    if s.k8s_service.is_none() && s.k8s_service_selector.is_none() {
        p.add(path, "one of k8sService or k8sServiceSelector is required");
        return out;
    }
    let namespace_of = |given: &Option<String>, path: String, p: &mut Problems| match given {
        Some(ns) => match check_dns_label(ns) {
            Ok(()) => Some(Some(ns.clone())),
            Err(reason) => {
                p.add(path, format!("{ns:?} is not a namespace name: {reason}"));
                None
            }
        },
        None => Some(namespace.map(str::to_string)),
    };
    if let Some(svc) = &s.k8s_service {
        let spath = format!("{path}.k8sService");
        let ns = namespace_of(&svc.namespace, format!("{spath}.namespace"), p);
        let name = match svc.service_name.as_deref() {
            None | Some("") => {
                p.add(format!("{spath}.serviceName"), "is required");
                None
            }
            Some(name) => match check_dns_label(name) {
                Ok(()) => Some(name.to_string()),
                Err(reason) => {
                    p.add(
                        format!("{spath}.serviceName"),
                        format!("{name:?} is not a service name: {reason}"),
                    );
                    None
                }
            },
        };
        if let (Some(namespace), Some(name)) = (ns, name) {
            out.push(Peer::Service(ServicePeer { namespace, select: ServiceMatch::Name(name) }));
        }
    }
    if let Some(svc) = &s.k8s_service_selector {
        let spath = format!("{path}.k8sServiceSelector");
        let ns = namespace_of(&svc.namespace, format!("{spath}.namespace"), p);
        let sel = match &svc.selector {
            Some(sel) => Some(selector(sel, &format!("{spath}.selector"), p)),
            None => {
                p.add(format!("{spath}.selector"), "is required (use {} to select every service)");
                None
            }
        };
        if let (Some(namespace), Some(sel)) = (ns, sel) {
            out.push(Peer::Service(ServicePeer { namespace, select: ServiceMatch::Labels(sel) }));
        }
    }
    out
}

/// A DNS label as Kubernetes names services and namespaces: at most 63
/// lowercase letters, digits and '-', starting and ending alphanumeric.
fn check_dns_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1-63 characters");
    }
    if !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err("only lowercase letters, digits and '-' are allowed");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

fn selector(sel: &k8s::LabelSelector, path: &str, p: &mut Problems) -> Selector {
    let mut requirements = Vec::new();
    for (key, value) in sel.match_labels.iter().flatten() {
        if key.is_empty() {
            p.add(format!("{path}.matchLabels"), "label keys must not be empty");
            continue;
        }
        let (source, key) = Requirement::parse_key(key);
        requirements.push(Requirement { source, key, operator: Operator::In(vec![value.clone()]) });
    }
    for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
        let epath = format!("{path}.matchExpressions[{i}]");
        let values = expr.values.clone().unwrap_or_default();
        let operator = match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                p.add(format!("{epath}.values"), format!("must not be empty for operator {}", expr.operator));
                continue;
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                p.add(format!("{epath}.values"), format!("must be empty for operator {}", expr.operator));
                continue;
            }
            "In" => Operator::In(values),
            "NotIn" => Operator::NotIn(values),
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                p.add(
                    format!("{epath}.operator"),
                    format!("{other:?} is not an operator; expected In, NotIn, Exists or DoesNotExist"),
                );
                continue;
            }
        };
        if expr.key.is_empty() {
            p.add(format!("{epath}.key"), "must not be empty");
            continue;
        }
        let (source, key) = Requirement::parse_key(&expr.key);
        requirements.push(Requirement { source, key, operator });
    }
    requirements.sort();
    requirements.dedup();
    Selector { requirements }
}

/// A `fromNodes`/`toNodes` selector. As in Cilium, a key without a source
/// is about the nodes' own labels (`node:`), never an endpoint's; nor is a
/// node selector namespaced.
fn node_selector(sel: &k8s::LabelSelector, path: &str, p: &mut Problems) -> Selector {
    let mut s = selector(sel, path, p);
    for r in &mut s.requirements {
        r.source.get_or_insert_with(|| crate::resolve::NODE_LABEL_SOURCE.to_string());
    }
    s.requirements.sort();
    s.requirements.dedup();
    s
}

fn parse_prefix(text: &str, path: &str, p: &mut Problems) -> Option<Prefix> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok().filter(|l| *l <= 32)),
        None => (text, Some(32)),
    };
    if addr.contains(':') {
        p.add(path, format!("{text:?}: IPv6 is not supported by Twill yet"));
        return None;
    }
    match (addr.parse::<Ipv4Addr>(), len) {
        (Ok(a), Some(len)) => Some(Prefix::new(u32::from(a), len)),
        _ => {
            p.add(path, format!("{text:?} is not a CIDR such as 10.0.0.0/8"));
            None
        }
    }
}

fn cidr_peer(cidr: &str, except: &[String], path: &str, p: &mut Problems) -> Option<CidrPeer> {
    let prefix = parse_prefix(cidr, &format!("{path}.cidr"), p)?;
    let mut out = Vec::new();
    for (i, e) in except.iter().enumerate() {
        let epath = format!("{path}.except[{i}]");
        if let Some(ep) = parse_prefix(e, &epath, p) {
            if !prefix.contains(&ep) {
                p.add(epath, format!("{ep} is not inside {prefix}"));
            } else {
                out.push(ep);
            }
        }
    }
    Some(CidrPeer { cidr: prefix, except: out })
}

fn cilium_protocol(protocol: Option<&str>, path: &str, p: &mut Problems) -> u8 {
    match protocol.unwrap_or("ANY") {
        "TCP" => PROTO_TCP,
        "UDP" => PROTO_UDP,
        "SCTP" => PROTO_SCTP,
        "ANY" => PROTO_ANY,
        other => {
            p.add(path, format!("{other:?} is not a protocol; expected TCP, UDP, SCTP or ANY"));
            PROTO_ANY
        }
    }
}

/// IANA service names: at most 15 lowercase letters, digits and '-', at
/// least one letter, as Kubernetes requires of named ports.
pub fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn port_match(
    port: Option<&IntOrString>,
    end_port: Option<i64>,
    path: &str,
    p: &mut Problems,
) -> Option<PortMatch> {
    let number = match port {
        None => None,
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(s)) => match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                if end_port.is_some() {
                    p.add(format!("{path}.endPort"), "cannot be used with a named port");
                    return None;
                }
                if !is_port_name(s) {
                    p.add(
                        format!("{path}.port"),
                        format!("{s:?} is neither a port number nor a valid port name"),
                    );
                    return None;
                }
                return Some(PortMatch::Named(s.clone()));
            }
        },
    };
    let lo = match number {
        None | Some(0) => {
            if end_port.is_some() {
                p.add(format!("{path}.endPort"), "requires a numeric port");
                return None;
            }
            return Some(PortMatch::Range(0, u16::MAX));
        }
        Some(n) if (1..=65535).contains(&n) => n as u16,
        Some(n) => {
            p.add(format!("{path}.port"), format!("{n} is out of range 1-65535"));
            return None;
        }
    };
    let hi = match end_port {
        None => lo,
        Some(e) if (lo as i64..=65535).contains(&e) => e as u16,
        Some(e) => {
            p.add(format!("{path}.endPort"), format!("{e} must be between port ({lo}) and 65535"));
            return None;
        }
    };
    Some(PortMatch::Range(lo, hi))
}

/// ICMPv4 message type names Cilium accepts.
const ICMPV4_TYPES: &[(&str, u8)] = &[
    ("EchoReply", 0),
    ("DestinationUnreachable", 3),
    ("Redirect", 5),
    ("Echo", 8),
    ("EchoRequest", 8),
    ("RouterAdvertisement", 9),
    ("RouterSelection", 10),
    ("TimeExceeded", 11),
    ("ParameterProblem", 12),
    ("Timestamp", 13),
    ("TimestampReply", 14),
    ("Photuris", 40),
    ("ExtendedEchoRequest", 42),
    ("ExtendedEchoReply", 43),
];

fn icmp_l4(field: &k8s::IcmpField, path: &str, p: &mut Problems) -> Option<L4> {
    let family = field.family.as_deref().unwrap_or("IPv4");
    if family != "IPv4" && family != "IPv6" {
        p.add(format!("{path}.family"), format!("{family:?} must be IPv4 or IPv6"));
        return None;
    }
    let icmp_type = match &field.icmp_type {
        None => {
            p.add(format!("{path}.type"), "is required");
            return None;
        }
        Some(IntOrString::Int(n)) if (0..=255).contains(n) => *n as u8,
        Some(IntOrString::Int(n)) => {
            p.add(format!("{path}.type"), format!("{n} is out of range 0-255"));
            return None;
        }
        Some(IntOrString::String(s)) => match s.parse::<u8>() {
            Ok(n) => n,
            Err(_) if family == "IPv6" => 0,
            Err(_) => match ICMPV4_TYPES.iter().find(|(n, _)| n == s) {
                Some((_, t)) => *t,
                None => {
                    p.add(format!("{path}.type"), format!("{s:?} is not an ICMPv4 type name or number"));
                    return None;
                }
            },
        },
    };
    // The datapath is IPv4 only: an IPv6 type is valid input that matches
    // nothing here.
    (family == "IPv4").then_some(L4 {
        protocol: PROTO_ICMP,
        ports: PortMatch::Range(icmp_type as u16, icmp_type as u16),
        l7: None,
    })
}

// ---- NetworkPolicy ----------------------------------------------------

fn convert_network_policy(np: k8s::NetworkPolicy, p: &mut Problems, document: Value) -> Policy {
    let name = check_name(&np.metadata, p);
    let namespace = np.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let key = PolicyKey { kind: KIND_NP.into(), namespace: Some(namespace.clone()), name };
    let Some(spec) = np.spec else {
        p.add("spec", "is required");
        let labels = derived_labels(&key);
        return Policy { key, rules: vec![], document, labels, description: None };
    };
    let subject = match &spec.pod_selector {
        Some(sel) => selector(sel, "spec.podSelector", p).scoped_to(&namespace),
        None => {
            p.add("spec.podSelector", "is required (use {} to select every pod in the namespace)");
            Selector::default()
        }
    };
    // Kubernetes' defaults: Ingress always, Egress when egress rules exist.
    let types: Vec<String> = match &spec.policy_types {
        Some(t) => t.clone(),
        None => {
            let mut t = vec!["Ingress".to_string()];
            if spec.egress.is_some() {
                t.push("Egress".into());
            }
            t
        }
    };
    for (i, t) in types.iter().enumerate() {
        if t != "Ingress" && t != "Egress" {
            p.add(format!("spec.policyTypes[{i}]"), format!("{t:?} must be Ingress or Egress"));
        }
    }
    let mut ingress = DirectionRules::default();
    let mut egress = DirectionRules::default();
    if types.iter().any(|t| t == "Ingress") {
        ingress.present = true;
        ingress.default_deny = true;
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let path = format!("spec.ingress[{i}]");
            ingress.allow.push(np_rule(r.from.as_deref(), r.ports.as_deref(), &path, "from", &namespace, p));
        }
    }
    if types.iter().any(|t| t == "Egress") {
        egress.present = true;
        egress.default_deny = true;
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let path = format!("spec.egress[{i}]");
            egress.allow.push(np_rule(r.to.as_deref(), r.ports.as_deref(), &path, "to", &namespace, p));
        }
    }
    let rules = vec![Rule { policy: key.clone(), index: 0, subject, ingress, egress }];
    let labels = derived_labels(&key);
    Policy { key, rules, document, labels, description: None }
}

/// A namespaceSelector becomes a selector on the namespace labels Twill
/// (like Cilium) copies onto every endpoint's identity.
fn namespace_selector(sel: &k8s::LabelSelector, path: &str, p: &mut Problems) -> Selector {
    let mut s = selector(sel, path, p);
    for r in &mut s.requirements {
        r.key = format!("{NAMESPACE_LABELS_PREFIX}{}", r.key);
        r.source = Some("k8s".into());
    }
    s.requirements.push(Requirement {
        source: Some("k8s".into()),
        key: POD_NAMESPACE_KEY.into(),
        operator: Operator::Exists,
    });
    s
}

fn np_rule(
    peers: Option<&[k8s::NetworkPolicyPeer]>,
    ports: Option<&[k8s::NetworkPolicyPort]>,
    path: &str,
    field: &str,
    namespace: &str,
    p: &mut Problems,
) -> PeerRule {
    let mut out_peers = Vec::new();
    match peers {
        None | Some([]) => out_peers.push(Peer::Any),
        Some(list) => {
            for (i, peer) in list.iter().enumerate() {
                let ppath = format!("{path}.{field}[{i}]");
                let given =
                    [peer.pod_selector.is_some(), peer.namespace_selector.is_some(), peer.ip_block.is_some()];
                if given.iter().all(|g| !g) {
                    p.add(&ppath, "one of podSelector, namespaceSelector or ipBlock is required");
                    continue;
                }
                if peer.ip_block.is_some() && (given[0] || given[1]) {
                    p.add(
                        format!("{ppath}.ipBlock"),
                        "cannot be combined with podSelector or namespaceSelector",
                    );
                    continue;
                }
                if let Some(block) = &peer.ip_block {
                    let except = block.except.clone().unwrap_or_default();
                    if let Some(c) = cidr_peer(&block.cidr, &except, &format!("{ppath}.ipBlock"), p) {
                        out_peers.push(Peer::Cidr(c));
                    }
                    continue;
                }
                let pods =
                    peer.pod_selector.as_ref().map(|s| selector(s, &format!("{ppath}.podSelector"), p));
                let namespaces = peer
                    .namespace_selector
                    .as_ref()
                    .map(|s| namespace_selector(s, &format!("{ppath}.namespaceSelector"), p));
                let sel = match (pods, namespaces) {
                    (Some(pods), Some(ns)) => pods.and(&ns),
                    (Some(pods), None) => pods.scoped_to(namespace),
                    (None, Some(ns)) => ns,
                    (None, None) => unreachable!("checked above"),
                };
                out_peers.push(Peer::Endpoints(sel));
            }
        }
    }
    let mut l4 = Vec::new();
    for (i, port) in ports.unwrap_or_default().iter().enumerate() {
        let ppath = format!("{path}.ports[{i}]");
        let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => PROTO_TCP,
            "UDP" => PROTO_UDP,
            "SCTP" => PROTO_SCTP,
            other => {
                p.add(
                    format!("{ppath}.protocol"),
                    format!("{other:?} is not a protocol; expected TCP, UDP or SCTP"),
                );
                continue;
            }
        };
        if let Some(m) = port_match(port.port.as_ref(), port.end_port, &ppath, p) {
            l4.push(L4 { protocol, ports: m, l7: None });
        }
    }
    PeerRule { peers: out_peers, l4, dns: vec![] }
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
