//! What a service is, independent of where it came from (a Kubernetes
//! manifest, `twill service create`, the store). Field paths in
//! [`FieldError`] use the Kubernetes spelling (`ports[1].targetPort`) so
//! the same message reads right for a manifest and for the CLI.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, ops::RangeInclusive, str::FromStr};

use serde::{Deserialize, Serialize};

/// Kubernetes' default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;
/// Kubernetes' longest ClientIP affinity (`MaxClientIPServiceAffinitySeconds`).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;
/// Kubernetes' default ClientIP affinity, three hours.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number, as the datapath keys on it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("tcp") {
            Ok(Protocol::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Ok(Protocol::Udp)
        } else if s.eq_ignore_ascii_case("sctp") {
            Err("SCTP is not supported by Twill yet".into())
        } else {
            Err(format!("{s:?} is not a protocol; expected TCP or UDP"))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    NodePort,
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
        })
    }
}

/// How a frontend picks a backend for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Random,
    Maglev,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Random => "random",
            Algorithm::Maglev => "maglev",
        })
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(Algorithm::Random),
            "maglev" => Ok(Algorithm::Maglev),
            _ => Err(format!("{s:?} is not a load-balancing algorithm; expected random or maglev")),
        }
    }
}

/// A number, or the name of a port each backend declares.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl fmt::Display for TargetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPort::Number(n) => write!(f, "{n}"),
            TargetPort::Name(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: TargetPort,
    /// The node port asked for; None lets the agent allocate one (NodePort
    /// services only).
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

impl FromStr for TrafficPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Cluster" => Ok(TrafficPolicy::Cluster),
            "Local" => Ok(TrafficPolicy::Local),
            _ => Err(format!("{s:?} is not a traffic policy; expected Cluster or Local")),
        }
    }
}

/// A backend given by address rather than selected by labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub address: Ipv4Addr,
    /// Matched to service ports by name and protocol, as kube-proxy matches
    /// EndpointSlice ports; empty means "the service port's targetPort".
    pub ports: Vec<BackendPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackendPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub key: ServiceKey,
    pub labels: BTreeMap<String, String>,
    /// None: the agent allocates one from the service CIDR.
    pub cluster_ip: Option<Ipv4Addr>,
    pub service_type: ServiceType,
    pub ports: Vec<ServicePort>,
    /// Endpoints of the service's namespace whose labels include all of
    /// these. An empty selector selects nothing: Kubernetes treats
    /// `selector: {}` as no selector.
    pub selector: Option<BTreeMap<String, String>>,
    /// Used when there is no selector.
    pub backends: Vec<Backend>,
    pub algorithm: Algorithm,
    /// ClientIP session affinity, in seconds.
    pub affinity_timeout: Option<u32>,
    pub internal_traffic_policy: TrafficPolicy,
    pub external_traffic_policy: TrafficPolicy,
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError { path: path.into(), reason: reason.into() }
    }
}

/// A DNS-1035 label (`[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63), what
/// Kubernetes requires of a Service's name; with `letter_first` false, a
/// DNS-1123 label (namespaces, port names).
pub fn check_dns_label(s: &str, letter_first: bool) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.starts_with(|c: char| c.is_ascii_lowercase() || (!letter_first && c.is_ascii_digit()))
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        return Ok(());
    }
    let first = if letter_first { "start with a letter" } else { "start with a letter or digit" };
    Err(format!(
        "{s:?} is not a valid name: at most 63 lowercase letters, digits and '-', {first} and end with a letter or digit"
    ))
}

/// An IANA service name, what a named targetPort must be: at most 15
/// lowercase letters, digits and single '-', with at least one letter.
pub fn check_port_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid port name: at most 15 lowercase letters, digits and single '-', with at least one letter"
        ))
    }
}

/// Why an address cannot be a frontend or a backend.
fn unusable_address(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("0.0.0.0 cannot be a service address")
    } else if ip.is_broadcast() {
        Some("the broadcast address cannot be a service address")
    } else if ip.is_multicast() {
        Some("a multicast address cannot be a service address")
    } else if ip.is_loopback() {
        Some("a loopback address cannot be a service address")
    } else {
        None
    }
}

impl Service {
    /// A service with the Kubernetes defaults and no ports.
    pub fn new(key: ServiceKey) -> Self {
        Service {
            key,
            labels: BTreeMap::new(),
            cluster_ip: None,
            service_type: ServiceType::ClusterIp,
            ports: Vec::new(),
            selector: None,
            backends: Vec::new(),
            algorithm: Algorithm::Random,
            affinity_timeout: None,
            internal_traffic_policy: TrafficPolicy::Cluster,
            external_traffic_policy: TrafficPolicy::Cluster,
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        self.validate_with(DEFAULT_NODE_PORT_RANGE)
    }

    /// The first problem [`Service::problems`] finds.
    pub fn validate_with(&self, node_port_range: RangeInclusive<u16>) -> Result<(), FieldError> {
        match self.problems(node_port_range).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every problem, in field order.
    pub fn problems(&self, node_port_range: RangeInclusive<u16>) -> Vec<FieldError> {
        let mut out = Vec::new();
        let mut bad = |path: String, reason: String| out.push(FieldError { path, reason });
        if let Err(e) = check_dns_label(&self.key.namespace, false) {
            bad("namespace".into(), e);
        }
        if let Err(e) = check_dns_label(&self.key.name, true) {
            bad("name".into(), e);
        }
        if let Some(reason) = self.cluster_ip.and_then(unusable_address) {
            bad("clusterIP".into(), reason.into());
        }
        if self.ports.is_empty() {
            bad("ports".into(), "a service needs at least one port".into());
        }
        let node_port = self.service_type == ServiceType::NodePort;
        let (lo, hi) = (*node_port_range.start(), *node_port_range.end());
        for (i, p) in self.ports.iter().enumerate() {
            let at = |field: &str| format!("ports[{i}].{field}");
            match &p.name {
                None if self.ports.len() > 1 => {
                    bad(at("name"), "is required when a service has more than one port".into())
                }
                None => {}
                Some(name) => {
                    if let Err(e) = check_dns_label(name, false) {
                        bad(at("name"), e);
                    }
                    if self.ports[..i].iter().any(|q| q.name.as_deref() == Some(name)) {
                        bad(at("name"), format!("{name:?} is the name of an earlier port"));
                    }
                }
            }
            if p.port == 0 {
                bad(at("port"), "must be between 1 and 65535".into());
            }
            if self.ports[..i].iter().any(|q| (q.port, q.protocol) == (p.port, p.protocol)) {
                bad(at("port"), format!("{}/{} is already an earlier port", p.port, p.protocol));
            }
            match &p.target_port {
                TargetPort::Number(0) => bad(at("targetPort"), "must be between 1 and 65535".into()),
                TargetPort::Number(_) => {}
                TargetPort::Name(name) => {
                    if let Err(e) = check_port_name(name) {
                        bad(at("targetPort"), e);
                    }
                }
            }
            match p.node_port {
                Some(_) if !node_port => {
                    bad(at("nodePort"), format!("is only for NodePort services, not {}", self.service_type))
                }
                Some(n) if !(lo..=hi).contains(&n) => {
                    bad(at("nodePort"), format!("{n} is outside the node port range {lo}-{hi}"))
                }
                Some(n)
                    if self.ports[..i].iter().any(|q| (q.node_port, q.protocol) == (Some(n), p.protocol)) =>
                {
                    bad(at("nodePort"), format!("{n}/{} is already an earlier port's node port", p.protocol))
                }
                _ => {}
            }
        }
        if let Some(t) = self.affinity_timeout {
            if !(1..=MAX_AFFINITY_TIMEOUT).contains(&t) {
                bad(
                    "affinityTimeout".into(),
                    format!("{t} must be between 1 and {MAX_AFFINITY_TIMEOUT} seconds"),
                );
            }
        }
        if self.external_traffic_policy == TrafficPolicy::Local && !node_port {
            bad(
                "externalTrafficPolicy".into(),
                "Local applies to NodePort services only; a ClusterIP service has no external traffic".into(),
            );
        }
        if let Some(selector) = &self.selector {
            if !self.backends.is_empty() {
                bad(
                    "backends".into(),
                    "a service with a selector takes its backends from the endpoints it selects; give either a selector or backends".into(),
                );
            }
            if selector.keys().any(String::is_empty) {
                bad("selector".into(), "a label key cannot be empty".into());
            }
        }
        for (i, b) in self.backends.iter().enumerate() {
            if let Some(reason) = unusable_address(b.address) {
                bad(format!("backends[{i}].address"), reason.replace("service", "backend"));
            }
            for (j, p) in b.ports.iter().enumerate() {
                if p.port == 0 {
                    bad(format!("backends[{i}].ports[{j}].port"), "must be between 1 and 65535".into());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn web() -> Service {
        let mut s = Service::new(ServiceKey::new("default", "web"));
        s.ports.push(ServicePort {
            name: None,
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: None,
        });
        s
    }

    fn paths(s: &Service) -> Vec<String> {
        s.problems(DEFAULT_NODE_PORT_RANGE).into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_plain_service_is_valid() {
        assert_eq!(web().validate(), Ok(()));
    }

    #[test]
    fn protocol_parsing_and_numbers() {
        assert_eq!("tcp".parse::<Protocol>(), Ok(Protocol::Tcp));
        assert_eq!("UDP".parse::<Protocol>().map(Protocol::number), Ok(17));
        assert!("SCTP".parse::<Protocol>().unwrap_err().contains("not supported by Twill yet"));
        assert_eq!(Protocol::from_number(6), Some(Protocol::Tcp));
        assert_eq!(Protocol::from_number(1), None);
    }

    #[test]
    fn multi_port_services_need_unique_names_and_ports() {
        let mut s = web();
        let p = s.ports[0].clone();
        s.ports.push(p.clone());
        assert_eq!(
            paths(&s),
            [
                "ports[0].name: is required when a service has more than one port",
                "ports[1].name: is required when a service has more than one port",
                "ports[1].port: 80/TCP is already an earlier port",
            ]
        );
        s.ports[0].name = Some("http".into());
        s.ports[1].name = Some("http".into());
        s.ports[1].protocol = Protocol::Udp;
        assert_eq!(paths(&s), ["ports[1].name: \"http\" is the name of an earlier port"]);
        s.ports[1].name = Some("dns".into());
        assert_eq!(paths(&s), Vec::<String>::new());
    }

    #[test]
    fn ports_node_ports_and_affinity_are_range_checked() {
        let mut s = web();
        s.ports[0].port = 0;
        s.ports[0].target_port = TargetPort::Number(0);
        s.ports[0].node_port = Some(30080);
        s.affinity_timeout = Some(86401);
        let got = paths(&s);
        assert_eq!(got[0], "ports[0].port: must be between 1 and 65535");
        assert_eq!(got[1], "ports[0].targetPort: must be between 1 and 65535");
        assert_eq!(got[2], "ports[0].nodePort: is only for NodePort services, not ClusterIP");
        assert!(got[3].starts_with("affinityTimeout: 86401"), "{got:?}");
        let mut s = web();
        s.service_type = ServiceType::NodePort;
        s.ports[0].node_port = Some(8080);
        assert_eq!(paths(&s), ["ports[0].nodePort: 8080 is outside the node port range 30000-32767"]);
        assert_eq!(s.validate_with(8000..=9000), Ok(()));
        s.affinity_timeout = Some(0);
        assert!(s.validate_with(8000..=9000).is_err());
    }

    #[test]
    fn names_addresses_and_backends() {
        let mut s = web();
        s.key.name = "1web".into();
        s.cluster_ip = Some(Ipv4Addr::BROADCAST);
        s.selector = Some([("app".to_string(), "web".to_string())].into());
        s.backends.push(Backend { address: Ipv4Addr::UNSPECIFIED, ports: vec![] });
        s.ports[0].target_port = TargetPort::Name("8080".into());
        let got = paths(&s);
        assert!(got[0].starts_with("name: \"1web\" is not a valid name"), "{got:?}");
        assert!(got[1].starts_with("clusterIP: the broadcast address"), "{got:?}");
        assert!(got[2].starts_with("ports[0].targetPort: \"8080\" is not a valid port name"), "{got:?}");
        assert!(got[3].starts_with("backends: a service with a selector"), "{got:?}");
        assert!(got[4].starts_with("backends[0].address: 0.0.0.0 cannot be a backend"), "{got:?}");
        assert_eq!(got.len(), 5);
        assert!(check_dns_label("a-1", true).is_ok());
        assert!(check_dns_label("a-", true).is_err());
        assert!(check_dns_label("1a", false).is_ok());
        assert!(check_port_name("http-alt").is_ok());
        assert!(check_port_name("a--b").is_err());
    }

    #[test]
    fn serde_round_trip_keeps_everything() {
        let mut s = web();
        s.ports[0].target_port = TargetPort::Name("http".into());
        s.algorithm = Algorithm::Maglev;
        s.backends.push(Backend {
            address: Ipv4Addr::new(10, 0, 0, 5),
            ports: vec![BackendPort { name: None, port: 8080, protocol: Protocol::Udp }],
        });
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"target_port\":\"http\""), "{json}");
        assert!(json.contains("\"ClusterIP\"") && json.contains("\"UDP\""), "{json}");
        assert_eq!(serde_json::from_str::<Service>(&json).unwrap(), s);
    }
}
