//! A service and what the agent knows (its ClusterIP and node ports, the
//! local endpoints) to the frontends and backends the datapath serves.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::model::*;

/// A local endpoint as resolution sees it. Every endpoint the agent hands
/// in is on this node, which is what `Local` traffic policies keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub name: String,
    pub namespace: String,
    pub address: Ipv4Addr,
    /// Plain `key=value` labels, as users wrote them.
    pub labels: BTreeMap<String, String>,
    /// Container ports by name, what a named targetPort refers to.
    pub named_ports: BTreeMap<String, (u16, Protocol)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedService {
    pub key: ServiceKey,
    pub frontends: Vec<ResolvedFrontend>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedFrontend {
    /// 0.0.0.0 for a NodePort frontend: every address of the node.
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub node_port: bool,
    pub port_name: Option<String>,
    /// Sorted, without duplicates.
    pub backends: Vec<(Ipv4Addr, u16)>,
    pub algorithm: Algorithm,
    /// Seconds; 0 for no affinity.
    pub affinity_timeout: u32,
}

impl fmt::Display for ResolvedFrontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.address, self.port, self.protocol)
    }
}

/// Whether the endpoint's labels include every pair of the selector. An
/// empty selector selects nothing (see [`Service::selector`]).
pub fn selects(selector: &BTreeMap<String, String>, endpoint: &EndpointView) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| endpoint.labels.get(k) == Some(v))
}

/// The frontends of `service` at `cluster_ip`, one per port, and for a
/// NodePort service one more per port at the node port `node_port_of`
/// gives: the one the service asked for or the one the agent allocated
/// (`|p| p.node_port` when only explicit ones are known). A port without a
/// node port gets no NodePort frontend.
///
/// Backends come from the `endpoints` a selector picks, or from the
/// service's explicit backends. A named targetPort is looked up in each
/// endpoint; an endpoint without it serves nothing on that port, as in
/// Kubernetes. Explicit backends are matched by port name and protocol
/// (see [`Backend::ports`]), and are never local, so a `Local` traffic
/// policy leaves them out.
pub fn resolve(
    service: &Service,
    cluster_ip: Ipv4Addr,
    node_port_of: impl Fn(&ServicePort) -> Option<u16>,
    endpoints: &[EndpointView],
) -> ResolvedService {
    let selected: Vec<&EndpointView> = match &service.selector {
        Some(sel) => {
            endpoints.iter().filter(|e| e.namespace == service.key.namespace && selects(sel, e)).collect()
        }
        None => Vec::new(),
    };
    let mut frontends = Vec::new();
    for port in &service.ports {
        let (all, local) = backends_for(service, port, &selected);
        let frontend = |address, port_number, node_port, policy| ResolvedFrontend {
            address,
            port: port_number,
            protocol: port.protocol,
            node_port,
            port_name: port.name.clone(),
            backends: if policy == TrafficPolicy::Local { local.clone() } else { all.clone() },
            algorithm: service.algorithm,
            affinity_timeout: service.affinity_timeout.unwrap_or(0),
        };
        frontends.push(frontend(cluster_ip, port.port, false, service.internal_traffic_policy));
        if service.service_type == ServiceType::NodePort {
            if let Some(np) = node_port_of(port) {
                frontends.push(frontend(Ipv4Addr::UNSPECIFIED, np, true, service.external_traffic_policy));
            }
        }
    }
    ResolvedService { key: service.key.clone(), frontends }
}

type Addr = (Ipv4Addr, u16);

/// (all backends, node-local backends) of one service port.
fn backends_for(service: &Service, port: &ServicePort, selected: &[&EndpointView]) -> (Vec<Addr>, Vec<Addr>) {
    let mut local: Vec<Addr> = selected
        .iter()
        .filter_map(|e| match &port.target_port {
            TargetPort::Number(n) => Some((e.address, *n)),
            TargetPort::Name(name) => match e.named_ports.get(name) {
                Some(&(n, proto)) if proto == port.protocol => Some((e.address, n)),
                _ => None,
            },
        })
        .collect();
    let mut all = local.clone();
    if service.selector.is_none() {
        all.extend(service.backends.iter().filter_map(|b| {
            if b.ports.is_empty() {
                match port.target_port {
                    TargetPort::Number(n) => Some((b.address, n)),
                    TargetPort::Name(_) => None,
                }
            } else {
                b.ports
                    .iter()
                    .find(|bp| bp.name == port.name && bp.protocol == port.protocol)
                    .map(|bp| (b.address, bp.port))
            }
        }));
    }
    for list in [&mut local, &mut all] {
        list.sort();
        list.dedup();
    }
    (all, local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn endpoint(last: u8, ns: &str, pairs: &[(&str, &str)]) -> EndpointView {
        EndpointView {
            name: format!("ep{last}"),
            namespace: ns.into(),
            address: ip(last),
            labels: labels(pairs),
            named_ports: BTreeMap::new(),
        }
    }

    fn port(name: Option<&str>, protocol: Protocol, port: u16, target: TargetPort) -> ServicePort {
        ServicePort { name: name.map(Into::into), protocol, port, target_port: target, node_port: None }
    }

    fn web() -> Service {
        let mut s = Service::new(ServiceKey::new("default", "web"));
        s.selector = Some(labels(&[("app", "web")]));
        s.ports.push(port(None, Protocol::Tcp, 80, TargetPort::Number(8080)));
        s
    }

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

    #[test]
    fn selector_picks_its_namespace_and_every_label() {
        let eps = [
            endpoint(3, "default", &[("app", "web"), ("tier", "front")]),
            endpoint(1, "default", &[("app", "web")]),
            endpoint(2, "other", &[("app", "web")]),
            endpoint(4, "default", &[("app", "db")]),
            endpoint(5, "default", &[]),
        ];
        let r = resolve(&web(), VIP, |_| None, &eps);
        assert_eq!(r.frontends.len(), 1);
        let f = &r.frontends[0];
        assert_eq!((f.address, f.port, f.protocol, f.node_port), (VIP, 80, Protocol::Tcp, false));
        assert_eq!(f.backends, [(ip(1), 8080), (ip(3), 8080)]);
        let mut s = web();
        s.selector = Some(labels(&[("app", "web"), ("tier", "front")]));
        assert_eq!(resolve(&s, VIP, |_| None, &eps).frontends[0].backends, [(ip(3), 8080)]);
        s.selector = Some(BTreeMap::new());
        assert!(resolve(&s, VIP, |_| None, &eps).frontends[0].backends.is_empty());
    }

    #[test]
    fn named_target_ports_resolve_per_endpoint() {
        let mut s = web();
        s.ports = vec![
            port(Some("http"), Protocol::Tcp, 80, TargetPort::Name("web".into())),
            port(Some("dns"), Protocol::Udp, 53, TargetPort::Name("dns".into())),
        ];
        let mut a = endpoint(1, "default", &[("app", "web")]);
        a.named_ports.insert("web".into(), (8080, Protocol::Tcp));
        a.named_ports.insert("dns".into(), (5353, Protocol::Udp));
        let mut b = endpoint(2, "default", &[("app", "web")]);
        b.named_ports.insert("web".into(), (9090, Protocol::Tcp));
        // Same name, wrong protocol: not a match.
        b.named_ports.insert("dns".into(), (53, Protocol::Tcp));
        let c = endpoint(3, "default", &[("app", "web")]);
        let r = resolve(&s, VIP, |_| None, &[a, b, c]);
        assert_eq!(r.frontends[0].backends, [(ip(1), 8080), (ip(2), 9090)]);
        assert_eq!(r.frontends[0].port_name.as_deref(), Some("http"));
        assert_eq!((r.frontends[1].port, r.frontends[1].protocol), (53, Protocol::Udp));
        assert_eq!(r.frontends[1].backends, [(ip(1), 5353)]);
    }

    #[test]
    fn node_port_frontends_and_traffic_policies() {
        let mut s = web();
        s.service_type = ServiceType::NodePort;
        s.ports.push(port(Some("b"), Protocol::Udp, 81, TargetPort::Number(81)));
        s.ports[0].name = Some("a".into());
        s.ports[0].node_port = Some(30080);
        s.algorithm = Algorithm::Maglev;
        s.affinity_timeout = Some(60);
        let eps = [endpoint(1, "default", &[("app", "web")])];
        let r = resolve(&s, VIP, |p| p.node_port, &eps);
        let shape: Vec<(Ipv4Addr, u16, bool)> =
            r.frontends.iter().map(|f| (f.address, f.port, f.node_port)).collect();
        assert_eq!(shape, [(VIP, 80, false), (Ipv4Addr::UNSPECIFIED, 30080, true), (VIP, 81, false)]);
        assert!(r.frontends.iter().all(|f| f.algorithm == Algorithm::Maglev && f.affinity_timeout == 60));
        // Local policies keep node-local endpoints, which all of these are.
        s.external_traffic_policy = TrafficPolicy::Local;
        s.internal_traffic_policy = TrafficPolicy::Local;
        assert_eq!(resolve(&s, VIP, |p| p.node_port, &eps), r);

        // Explicit backends are remote: Local leaves them out, and only
        // on the frontend the policy is for.
        let mut s = s.clone();
        s.selector = None;
        s.backends = vec![Backend { address: ip(9), ports: vec![] }];
        s.internal_traffic_policy = TrafficPolicy::Cluster;
        let r = resolve(&s, VIP, |p| p.node_port, &eps);
        assert_eq!(r.frontends[0].backends, [(ip(9), 8080)]);
        assert_eq!(r.frontends[1].backends, []);
        s.internal_traffic_policy = TrafficPolicy::Local;
        s.external_traffic_policy = TrafficPolicy::Cluster;
        let r = resolve(&s, VIP, |p| p.node_port, &eps);
        assert_eq!((r.frontends[0].backends.len(), r.frontends[1].backends.len()), (0, 1));
    }

    #[test]
    fn explicit_backends_match_ports_by_name_and_protocol() {
        let mut s = web();
        s.selector = None;
        s.ports = vec![
            port(Some("http"), Protocol::Tcp, 80, TargetPort::Number(8080)),
            port(Some("dns"), Protocol::Udp, 53, TargetPort::Name("dns".into())),
        ];
        let bp = |name: &str, port, protocol| BackendPort { name: Some(name.into()), port, protocol };
        s.backends = vec![
            Backend {
                address: ip(2),
                ports: vec![bp("http", 9000, Protocol::Tcp), bp("dns", 5353, Protocol::Udp)],
            },
            Backend { address: ip(1), ports: vec![bp("dns", 53, Protocol::Tcp)] },
            // No ports: the targetPort, when it is a number.
            Backend { address: ip(3), ports: vec![] },
            Backend { address: ip(3), ports: vec![] },
        ];
        let r = resolve(&s, VIP, |_| None, &[endpoint(4, "default", &[("app", "web")])]);
        assert_eq!(r.frontends[0].backends, [(ip(2), 9000), (ip(3), 8080)]);
        assert_eq!(r.frontends[1].backends, [(ip(2), 5353)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Backends are exactly the selected endpoints, however they are
        /// added, removed or relabelled.
        #[test]
        fn selector_follows_endpoints(eps in prop::collection::vec((1u8..30, 0u8..3, 0u8..3), 0..20)) {
            let apps = ["web", "db", "cache"];
            let namespaces = ["default", "other", "default"];
            let views: Vec<EndpointView> = eps
                .iter()
                .map(|&(last, app, ns)| endpoint(last, namespaces[ns as usize], &[("app", apps[app as usize])]))
                .collect();
            let got = resolve(&web(), VIP, |_| None, &views).frontends[0].backends.clone();
            let mut want: Vec<(Ipv4Addr, u16)> = eps
                .iter()
                .filter(|&&(_, app, ns)| app == 0 && ns != 1)
                .map(|&(last, _, _)| (ip(last), 8080))
                .collect();
            want.sort();
            want.dedup();
            prop_assert_eq!(got, want);
        }
    }
}
