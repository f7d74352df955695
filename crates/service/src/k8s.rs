//! Kubernetes `v1` Service and `discovery.k8s.io/v1` EndpointSlice
//! manifests to [`Service`]s, all or nothing, with errors that name the
//! file, document, object and field as policy import does.
//!
//! Fields that change where traffic goes and that Twill does not
//! implement yet are refused by name rather than ignored; fields the API
//! server sets or that only matter to other controllers are accepted.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
};

use serde::{de::IgnoredAny, Deserialize};
use twill_policy::{
    k8s::{IntOrString, ObjectMeta},
    yaml::{self, typed, Node},
    DocumentError,
};

use crate::model::*;

pub const KIND_SERVICE: &str = "Service";
pub const KIND_ENDPOINT_SLICE: &str = "EndpointSlice";
pub const SERVICE_API_VERSION: &str = "v1";
pub const ENDPOINT_SLICE_API_VERSION: &str = "discovery.k8s.io/v1";
/// Cilium's per-service choice of algorithm: `maglev` or `random`.
pub const LB_ALGORITHM_ANNOTATION: &str = "service.cilium.io/lb-algorithm";
/// The label by which an EndpointSlice names its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

const UNSUPPORTED: &str = "is not supported by Twill yet";

/// Documents one file may hold: a large cluster's Services and slices,
/// past the YAML reader's default of 1,024.
pub const MAX_DOCUMENTS: usize = 1 << 18;

/// Backends for a Service, by address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The Service it belongs to, in the same namespace.
    pub service: String,
    pub address_type: String,
    /// (address, ready). Kubernetes treats an endpoint's addresses as
    /// interchangeable; like kube-proxy, only the first is used.
    pub endpoints: Vec<(Ipv4Addr, bool)>,
    pub ports: Vec<BackendPort>,
}

/// What one file held. Services named by EndpointSlices in the same file
/// already carry those slices' backends; every slice is returned as well,
/// so that the agent can attach slices to services it already has and
/// redo the merge when either changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSet {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
}

/// Sets the backends of each selector-less service that any of `slices`
/// names to the ready endpoints of all of them (replacing what it had, so
/// merging again is harmless). Services with a selector and services no
/// slice names are left alone. Returns the slices that name none of
/// `services`.
pub fn merge<'a>(services: &mut [Service], slices: &'a [EndpointSlice]) -> Vec<&'a EndpointSlice> {
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        by_service.entry((s.namespace.as_str(), s.service.as_str())).or_default().push(s);
    }
    for service in services.iter_mut() {
        let named = by_service.remove(&(service.key.namespace.as_str(), service.key.name.as_str()));
        if let (Some(named), None) = (named, &service.selector) {
            service.backends = backends_of(&named);
        }
    }
    by_service.into_values().flatten().collect()
}

/// The ready endpoints of `slices`, one backend per address with the
/// ports of every slice it appears in.
pub fn backends_of(slices: &[&EndpointSlice]) -> Vec<Backend> {
    let mut ports: BTreeMap<Ipv4Addr, BTreeSet<BackendPort>> = BTreeMap::new();
    for slice in slices {
        for (address, _) in slice.endpoints.iter().filter(|(_, ready)| *ready) {
            ports.entry(*address).or_default().extend(slice.ports.iter().cloned());
        }
    }
    ports
        .into_iter()
        .map(|(address, ports)| Backend { address, ports: ports.into_iter().collect() })
        .collect()
}

pub fn parse_services(file: &str, text: &str) -> Result<ImportSet, Vec<DocumentError>> {
    parse_services_with(file, text, DEFAULT_NODE_PORT_RANGE)
}

/// Parses every document in `text` (YAML or JSON; `kind: List` documents
/// are read item by item). Either everything is valid and returned, or
/// every problem found is returned and nothing else.
pub fn parse_services_with(
    file: &str,
    text: &str,
    node_port_range: RangeInclusive<u16>,
) -> Result<ImportSet, Vec<DocumentError>> {
    let error = |document, path: &str, reason: String| DocumentError {
        file: file.into(),
        document,
        rule: None,
        kind: None,
        namespace: None,
        name: None,
        path: path.into(),
        reason,
    };
    let documents = yaml::parse_many_documents(text, MAX_DOCUMENTS)
        .map_err(|e| vec![error(0, "", format!("not valid YAML: {e}"))])?;
    let mut import = Import {
        range: node_port_range,
        services: Vec::new(),
        slices: Vec::new(),
        seen: BTreeMap::new(),
        seen_slices: BTreeMap::new(),
        errors: Vec::new(),
    };
    for (i, doc) in documents.iter().enumerate() {
        let number = i + 1;
        if doc.is_null() {
            continue;
        }
        let found = |ptr: &[&str]| ptr.iter().try_fold(doc, |n, k| n.get(k)).and_then(Node::text);
        if found(&["kind"]) == Some("List") {
            match doc.get("items") {
                Some(Node::Seq(items)) => {
                    for (j, item) in items.iter().enumerate() {
                        import.document(file, number, &format!("items[{j}]."), item);
                    }
                }
                Some(n) if n.is_null() => {}
                _ => import.errors.push(error(number, "items", "expected a list of objects".into())),
            }
        } else {
            import.document(file, number, "", doc);
        }
    }
    // A slice for a Service with a selector would be silently ignored.
    for (slice, error) in &import.slices {
        let key = ServiceKey::new(&slice.namespace, &slice.service);
        if let Some(i) = import.seen.get(&key) {
            if import.services[*i].0.selector.is_some() {
                import.errors.push(DocumentError {
                    path: format!("metadata.labels.{SERVICE_NAME_LABEL}"),
                    reason: format!(
                        "names Service {key}, which has a selector: its backends are the endpoints it selects"
                    ),
                    ..error.clone()
                });
            }
        }
    }
    if !import.errors.is_empty() {
        return Err(import.errors);
    }
    let mut services: Vec<Service> = import.services.into_iter().map(|(s, _)| s).collect();
    let endpoint_slices: Vec<EndpointSlice> = import.slices.into_iter().map(|(s, _)| s).collect();
    merge(&mut services, &endpoint_slices);
    Ok(ImportSet { services, endpoint_slices })
}

struct Import {
    range: RangeInclusive<u16>,
    /// Each with its document, for errors found once all are read.
    services: Vec<(Service, usize)>,
    slices: Vec<(EndpointSlice, DocumentError)>,
    seen: BTreeMap<ServiceKey, usize>,
    seen_slices: BTreeMap<(String, String), usize>,
    errors: Vec<DocumentError>,
}

impl Import {
    fn document(&mut self, file: &str, number: usize, prefix: &str, doc: &Node) {
        let text =
            |ptr: &[&str]| ptr.iter().try_fold(doc, |n, k| n.get(k)).and_then(Node::text).map(str::to_string);
        let kind = text(&["kind"]);
        let namespace = text(&["metadata", "namespace"]).or_else(|| Some("default".into()));
        let name = text(&["metadata", "name"]);
        let error = |path: &str, reason: String| DocumentError {
            file: file.into(),
            document: number,
            rule: None,
            kind: kind.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            path: format!("{prefix}{path}"),
            reason,
        };
        let api_version = text(&["apiVersion"]).unwrap_or_default();
        let expected = match kind.as_deref() {
            _ if !matches!(doc, Node::Map(_)) => {
                return self.errors.push(error("", "expected a mapping (a Kubernetes object)".into()))
            }
            Some(KIND_SERVICE) => SERVICE_API_VERSION,
            Some(KIND_ENDPOINT_SLICE) => ENDPOINT_SLICE_API_VERSION,
            None => return self.errors.push(error("kind", "is required".into())),
            Some(other) => {
                return self.errors.push(error(
                    "kind",
                    format!("{other:?} is not a kind Twill reads here; expected {KIND_SERVICE} or {KIND_ENDPOINT_SLICE}"),
                ))
            }
        };
        if api_version != expected {
            let reason = format!(
                "{api_version:?} is not supported for {}; expected {expected}",
                kind.as_deref().unwrap_or("")
            );
            return self.errors.push(error("apiVersion", reason));
        }
        let result = if expected == SERVICE_API_VERSION {
            typed::<ServiceDoc>(doc).and_then(|d| convert_service(d, self.range.clone())).map(|service| {
                if let Some(first) = self.seen.get(&service.key) {
                    let first = self.services[*first].1;
                    self.errors.push(error(
                        "metadata.name",
                        format!("the same Service is already defined by document {first}"),
                    ));
                } else {
                    self.seen.insert(service.key.clone(), self.services.len());
                    self.services.push((service, number));
                }
            })
        } else {
            typed::<SliceDoc>(doc).and_then(convert_slice).map(|slice| {
                let key = (slice.namespace.clone(), slice.name.clone());
                if let Some(first) = self.seen_slices.get(&key) {
                    self.errors.push(error(
                        "metadata.name",
                        format!("the same EndpointSlice is already defined by document {first}"),
                    ));
                } else {
                    self.seen_slices.insert(key, number);
                    self.slices.push((slice, error("", String::new())));
                }
            })
        };
        if let Err(problems) = result {
            self.errors.extend(problems.into_iter().map(|(path, reason)| error(&path, reason)));
        }
    }
}

type Problems = Vec<(String, String)>;

// ---- wire shapes, field for field as the API server serves them.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceDoc {
    #[serde(rename = "apiVersion")]
    _api_version: Option<IgnoredAny>,
    #[serde(rename = "kind")]
    _kind: Option<IgnoredAny>,
    metadata: Option<ObjectMeta>,
    spec: Option<ServiceSpec>,
    #[serde(rename = "status")]
    _status: Option<IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceSpec {
    #[serde(rename = "type")]
    service_type: Option<String>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Option<Vec<String>>,
    selector: Option<BTreeMap<String, String>>,
    ports: Option<Vec<PortDoc>>,
    session_affinity: Option<String>,
    session_affinity_config: Option<AffinityConfig>,
    internal_traffic_policy: Option<String>,
    external_traffic_policy: Option<String>,
    ip_families: Option<Vec<String>>,
    ip_family_policy: Option<String>,
    publish_not_ready_addresses: Option<bool>,
    // Change where traffic goes: refused when set.
    #[serde(rename = "externalIPs")]
    external_ips: Option<Vec<String>>,
    #[serde(rename = "loadBalancerIP")]
    load_balancer_ip: Option<String>,
    load_balancer_source_ranges: Option<Vec<String>>,
    load_balancer_class: Option<String>,
    external_name: Option<String>,
    // Only for other service types or other controllers.
    #[serde(rename = "allocateLoadBalancerNodePorts")]
    _allocate_load_balancer_node_ports: Option<IgnoredAny>,
    #[serde(rename = "healthCheckNodePort")]
    _health_check_node_port: Option<IgnoredAny>,
    #[serde(rename = "trafficDistribution")]
    _traffic_distribution: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PortDoc {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<i64>,
    target_port: Option<IntOrString>,
    node_port: Option<i64>,
    #[serde(rename = "appProtocol")]
    _app_protocol: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AffinityConfig {
    #[serde(rename = "clientIP")]
    client_ip: Option<ClientIpConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientIpConfig {
    timeout_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SliceDoc {
    #[serde(rename = "apiVersion")]
    _api_version: Option<IgnoredAny>,
    #[serde(rename = "kind")]
    _kind: Option<IgnoredAny>,
    metadata: Option<ObjectMeta>,
    address_type: Option<String>,
    endpoints: Option<Vec<SliceEndpoint>>,
    ports: Option<Vec<SlicePort>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SliceEndpoint {
    addresses: Vec<String>,
    conditions: Option<Conditions>,
    #[serde(rename = "hostname")]
    _hostname: Option<IgnoredAny>,
    #[serde(rename = "nodeName")]
    _node_name: Option<IgnoredAny>,
    #[serde(rename = "zone")]
    _zone: Option<IgnoredAny>,
    #[serde(rename = "hints")]
    _hints: Option<IgnoredAny>,
    #[serde(rename = "targetRef")]
    _target_ref: Option<IgnoredAny>,
    #[serde(rename = "deprecatedTopology")]
    _deprecated_topology: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conditions {
    ready: Option<bool>,
    #[serde(rename = "serving")]
    _serving: Option<IgnoredAny>,
    #[serde(rename = "terminating")]
    _terminating: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SlicePort {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<i64>,
    #[serde(rename = "appProtocol")]
    _app_protocol: Option<IgnoredAny>,
}

// ---- conversion.

fn port_number(value: Option<i64>, path: String, p: &mut Problems) -> u16 {
    match value {
        None => p.push((path, "is required".into())),
        Some(n) => match u16::try_from(n) {
            Ok(n) if n > 0 => return n,
            _ => p.push((path, format!("{n} is not a port number (1-65535)"))),
        },
    }
    0
}

fn protocol(value: Option<&str>, path: String, p: &mut Problems) -> Protocol {
    value.map_or(Ok(Protocol::Tcp), str::parse).unwrap_or_else(|e| {
        p.push((path, e));
        Protocol::Tcp
    })
}

fn name_and_namespace(meta: &Option<ObjectMeta>, p: &mut Problems) -> (String, String) {
    let name = meta.as_ref().and_then(|m| m.name.clone()).unwrap_or_default();
    if name.is_empty() {
        p.push(("metadata.name".into(), "is required".into()));
    }
    let namespace = meta.as_ref().and_then(|m| m.namespace.clone()).unwrap_or_else(|| "default".into());
    (name, namespace)
}

/// Where the model's field is in a manifest.
fn manifest_path(model_path: &str) -> String {
    match model_path {
        "name" | "namespace" => format!("metadata.{model_path}"),
        "affinityTimeout" => "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
        _ => format!("spec.{model_path}"),
    }
}

fn convert_service(doc: ServiceDoc, range: RangeInclusive<u16>) -> Result<Service, Problems> {
    let mut p = Problems::new();
    let (name, namespace) = name_and_namespace(&doc.metadata, &mut p);
    let mut service = Service::new(ServiceKey { namespace, name });
    if let Some(meta) = doc.metadata {
        service.labels = meta.labels;
        if let Some(a) = meta.annotations.get(LB_ALGORITHM_ANNOTATION) {
            match a.parse() {
                Ok(algorithm) => service.algorithm = algorithm,
                Err(e) => p.push((format!("metadata.annotations.{LB_ALGORITHM_ANNOTATION}"), e)),
            }
        }
    }
    let spec = doc.spec.unwrap_or_default();
    let mut unsupported = |field: &str, set: bool| {
        if set {
            p.push((format!("spec.{field}"), UNSUPPORTED.into()));
        }
    };
    unsupported("externalIPs", spec.external_ips.is_some_and(|v| !v.is_empty()));
    unsupported("loadBalancerIP", spec.load_balancer_ip.is_some_and(|v| !v.is_empty()));
    unsupported("loadBalancerSourceRanges", spec.load_balancer_source_ranges.is_some_and(|v| !v.is_empty()));
    unsupported("loadBalancerClass", spec.load_balancer_class.is_some());
    unsupported("externalName", spec.external_name.is_some_and(|v| !v.is_empty()));
    unsupported("publishNotReadyAddresses", spec.publish_not_ready_addresses == Some(true));
    unsupported("ipFamilyPolicy", spec.ip_family_policy.as_deref() == Some("RequireDualStack"));
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        match family.as_str() {
            "IPv4" => {}
            "IPv6" => p.push((format!("spec.ipFamilies[{i}]"), format!("IPv6 {UNSUPPORTED}"))),
            other => p.push((format!("spec.ipFamilies[{i}]"), format!("{other:?} is not IPv4 or IPv6"))),
        }
    }

    match spec.service_type.as_deref() {
        None | Some("ClusterIP") => {}
        Some("NodePort") => service.service_type = ServiceType::NodePort,
        Some(t @ ("LoadBalancer" | "ExternalName")) => {
            p.push(("spec.type".into(), format!("{t} {UNSUPPORTED}")))
        }
        Some(t) => p.push((
            "spec.type".into(),
            format!("{t:?} is not a service type; expected ClusterIP or NodePort"),
        )),
    }

    let ips = spec.cluster_ips.unwrap_or_default();
    let given = spec.cluster_ip.filter(|ip| !ip.is_empty());
    if let (Some(ip), Some(first)) = (&given, ips.first()) {
        if ip != first {
            p.push(("spec.clusterIPs[0]".into(), format!("{first:?} must be spec.clusterIP ({ip:?})")));
        }
    }
    for i in 1..ips.len() {
        p.push((format!("spec.clusterIPs[{i}]"), format!("a second ClusterIP (dual stack) {UNSUPPORTED}")));
    }
    let path = if given.is_some() { "spec.clusterIP" } else { "spec.clusterIPs[0]" };
    match given.or_else(|| ips.into_iter().next()).filter(|ip| !ip.is_empty()).as_deref() {
        None => {}
        Some("None") => p.push((path.into(), format!("None (a headless service) {UNSUPPORTED}"))),
        Some(ip) => match ip.parse::<Ipv4Addr>() {
            Ok(ip) => service.cluster_ip = Some(ip),
            Err(_) if ip.parse::<Ipv6Addr>().is_ok() => p.push((path.into(), format!("IPv6 {UNSUPPORTED}"))),
            Err(_) => p.push((path.into(), format!("{ip:?} is not an IPv4 address"))),
        },
    }

    service.selector = spec.selector.filter(|s| !s.is_empty());
    for (i, port) in spec.ports.into_iter().flatten().enumerate() {
        let at = |field: &str| format!("spec.ports[{i}].{field}");
        let number = port_number(port.port, at("port"), &mut p);
        // Kubernetes defaults an empty or zero targetPort to the port.
        let target_port = match port.target_port {
            None | Some(IntOrString::Int(0)) => TargetPort::Number(number),
            Some(IntOrString::String(s)) if s.is_empty() => TargetPort::Number(number),
            Some(IntOrString::Int(n)) => TargetPort::Number(port_number(Some(n), at("targetPort"), &mut p)),
            Some(IntOrString::String(s)) => TargetPort::Name(s),
        };
        let node_port = match port.node_port {
            None | Some(0) => None,
            n => Some(port_number(n, at("nodePort"), &mut p)),
        };
        service.ports.push(ServicePort {
            name: port.name.filter(|n| !n.is_empty()),
            protocol: protocol(port.protocol.as_deref(), at("protocol"), &mut p),
            port: number,
            target_port,
            node_port,
        });
    }

    let timeout = spec.session_affinity_config.and_then(|c| c.client_ip).and_then(|c| c.timeout_seconds);
    match spec.session_affinity.as_deref() {
        None | Some("None") if timeout.is_some() => {
            p.push(("spec.sessionAffinityConfig".into(), "is only for sessionAffinity: ClientIP".into()))
        }
        None | Some("None") => {}
        Some("ClientIP") => {
            let t = timeout.unwrap_or(i64::from(DEFAULT_AFFINITY_TIMEOUT));
            // The model's check reports the rest of the range.
            match u32::try_from(t) {
                Ok(t) => service.affinity_timeout = Some(t),
                Err(_) => p.push((
                    manifest_path("affinityTimeout"),
                    format!("{t} must be between 1 and {MAX_AFFINITY_TIMEOUT} seconds"),
                )),
            }
        }
        Some(a) => p.push(("spec.sessionAffinity".into(), format!("{a:?} is not None or ClientIP"))),
    }
    for (field, value, policy) in [
        ("internalTrafficPolicy", spec.internal_traffic_policy, &mut service.internal_traffic_policy),
        ("externalTrafficPolicy", spec.external_traffic_policy, &mut service.external_traffic_policy),
    ] {
        match value.as_deref().map(str::parse) {
            None => {}
            Some(Ok(v)) => *policy = v,
            Some(Err(e)) => p.push((format!("spec.{field}"), e)),
        }
    }
    // A field reported above (a port out of range) leaves its object
    // half-defaulted; the model's view of the same object would repeat it.
    let element =
        |path: &str| path.rsplit_once('.').map(|(parent, _)| parent.to_string()).filter(|p| p.ends_with(']'));
    for e in service.problems(range) {
        let path = manifest_path(&e.path);
        let seen = |q: &String| *q == path || (element(q).is_some() && element(q) == element(&path));
        if !p.iter().any(|(q, _)| seen(q)) {
            p.push((path, e.reason));
        }
    }
    if p.is_empty() {
        Ok(service)
    } else {
        Err(p)
    }
}

fn convert_slice(doc: SliceDoc) -> Result<EndpointSlice, Problems> {
    let mut p = Problems::new();
    let (name, namespace) = name_and_namespace(&doc.metadata, &mut p);
    let service = doc.metadata.as_ref().and_then(|m| m.labels.get(SERVICE_NAME_LABEL)).cloned();
    let service = match service {
        Some(s) => match check_dns_label(&s, true) {
            Ok(()) => s,
            Err(e) => {
                p.push((format!("metadata.labels.{SERVICE_NAME_LABEL}"), e));
                s
            }
        },
        None => {
            let reason = format!("needs the label {SERVICE_NAME_LABEL} naming the slice's Service");
            p.push(("metadata.labels".into(), reason));
            String::new()
        }
    };
    let address_type = doc.address_type.unwrap_or_default();
    match address_type.as_str() {
        "IPv4" => {}
        "" => p.push(("addressType".into(), "is required".into())),
        t @ ("IPv6" | "FQDN") => p.push(("addressType".into(), format!("{t} {UNSUPPORTED}"))),
        t => p.push(("addressType".into(), format!("{t:?} is not IPv4, IPv6 or FQDN"))),
    }
    let mut endpoints = Vec::new();
    for (i, e) in doc.endpoints.into_iter().flatten().enumerate() {
        let ready = e.conditions.and_then(|c| c.ready).unwrap_or(true);
        match e.addresses.first().map(|a| (a, a.parse::<Ipv4Addr>())) {
            Some((_, Ok(a))) => endpoints.push((a, ready)),
            Some((a, Err(_))) => {
                p.push((format!("endpoints[{i}].addresses[0]"), format!("{a:?} is not an IPv4 address")))
            }
            None => p.push((format!("endpoints[{i}].addresses"), "needs at least one address".into())),
        }
    }
    let mut ports = Vec::new();
    for (i, port) in doc.ports.into_iter().flatten().enumerate() {
        let number = match port.port {
            None => {
                p.push((
                    format!("ports[{i}].port"),
                    format!("is required (a slice for all ports {UNSUPPORTED})"),
                ));
                0
            }
            n => port_number(n, format!("ports[{i}].port"), &mut p),
        };
        ports.push(BackendPort {
            name: port.name.filter(|n| !n.is_empty()),
            port: number,
            protocol: protocol(port.protocol.as_deref(), format!("ports[{i}].protocol"), &mut p),
        });
    }
    if p.is_empty() {
        Ok(EndpointSlice { namespace, name, service, address_type, endpoints, ports })
    } else {
        Err(p)
    }
}

#[cfg(test)]
#[path = "k8s_tests.rs"]
mod tests;
