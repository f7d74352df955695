//! Resolver behaviour on small, hand-checked universes.

use super::*;
use crate::convert::parse_policies;
use twill_identity::Label;

const NS: &str = "io.kubernetes.pod.namespace";

fn endpoint(id: u32, app: &str) -> KnownIdentity {
    KnownIdentity {
        id,
        labels: LabelSet::from_labels([Label::new("k8s", "app", app), Label::new("k8s", NS, "default")]),
        kind: IdentityKind::Endpoint,
    }
}

fn universe() -> Universe {
    let mut all = vec![endpoint(256, "web"), endpoint(257, "client"), endpoint(258, "db")];
    for (id, name) in [(1, "host"), (2, "world"), (9, "world-ipv4")] {
        all.push(KnownIdentity {
            id,
            labels: LabelSet::from_labels([Label::new("reserved", name, "")]),
            kind: IdentityKind::Reserved,
        });
    }
    all.push(KnownIdentity {
        id: 16777217,
        labels: LabelSet::from_labels([Label::new("cidr", "192.0.2.0/24", "")]),
        kind: IdentityKind::Cidr(Prefix::new(0xc000_0200, 24)),
    });
    all.push(KnownIdentity {
        id: 16777218,
        labels: LabelSet::from_labels([Label::new("cidr", "192.0.2.2/32", "")]),
        kind: IdentityKind::Cidr(Prefix::new(0xc000_0202, 32)),
    });
    Universe::new(all)
}

fn rules(yaml: &str) -> Vec<Rule> {
    parse_policies("t.yaml", yaml).expect("valid").into_iter().flat_map(|p| p.rules).collect()
}

fn resolve_web(yaml: &str, ports: &[NamedPort]) -> EndpointPolicy {
    let u = universe();
    let labels = u.get(256).unwrap().labels.clone();
    resolve(&rules(yaml), &u, &Subject { labels: &labels, named_ports: ports }, &|_| vec![])
}

const HEADER: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: t}\n";

#[test]
fn no_policy_allows_everything_with_one_entry_per_direction() {
    let p = resolve_web(
        &format!("{HEADER}spec:\n  endpointSelector: {{matchLabels: {{app: db}}}}\n  ingress: [{{}}]\n"),
        &[],
    );
    assert_eq!(p.entries.len(), 2);
    assert!(!p.ingress_enforced && !p.egress_enforced);
    assert!(p.lookup(Direction::Ingress, 257, PROTO_TCP, 5).allowed());
    assert!(p.lookup(Direction::Egress, 2, PROTO_UDP, 53).allowed());
}

#[test]
fn a_broad_deny_beats_a_narrow_allow() {
    let yaml = format!(
        "{HEADER}spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: client}}}}]
    toPorts: [{{ports: [{{port: '80', protocol: TCP}}]}}]
  ingressDeny:
  - fromEndpoints: [{{matchLabels: {{app: client}}}}]
"
    );
    let p = resolve_web(&yaml, &[]);
    assert!(p.ingress_enforced);
    assert!(matches!(p.lookup(Direction::Ingress, 257, PROTO_TCP, 80), Verdict::Denied(_)));
    // The allow entry itself was rewritten to deny, so an LPM lookup that
    // finds it (the most specific) still drops.
    let allow_key = MapKey {
        direction: Direction::Ingress,
        identity: 257,
        protocol: PROTO_TCP,
        port: 80,
        port_prefix: 16,
    };
    assert!(p.entries[&allow_key].deny);
    assert!(matches!(p.lookup(Direction::Ingress, 258, PROTO_TCP, 80), Verdict::DefaultDenied));
}

#[test]
fn a_narrow_deny_inside_a_broad_allow() {
    let yaml = format!(
        "{HEADER}spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - toPorts: [{{ports: [{{port: '80', endPort: 90, protocol: TCP}}]}}]
  ingressDeny:
  - fromEndpoints: [{{matchLabels: {{app: db}}}}]
    toPorts: [{{ports: [{{port: '85', protocol: TCP}}]}}]
"
    );
    let p = resolve_web(&yaml, &[]);
    assert!(p.lookup(Direction::Ingress, 258, PROTO_TCP, 84).allowed());
    assert!(matches!(p.lookup(Direction::Ingress, 258, PROTO_TCP, 85), Verdict::Denied(_)));
    assert!(p.lookup(Direction::Ingress, 257, PROTO_TCP, 85).allowed());
    assert!(matches!(p.lookup(Direction::Ingress, 257, PROTO_TCP, 91), Verdict::DefaultDenied));
}

#[test]
fn requires_narrow_every_endpoint_peer() {
    let yaml = format!(
        "{HEADER}specs:
- endpointSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - fromEndpoints: [{{}}]
- endpointSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - fromRequires: [{{matchLabels: {{app: client}}}}]
"
    );
    let p = resolve_web(&yaml, &[]);
    assert!(p.lookup(Direction::Ingress, 257, PROTO_TCP, 1).allowed());
    assert!(!p.lookup(Direction::Ingress, 258, PROTO_TCP, 1).allowed());
}

#[test]
fn cidr_rules_select_cidr_identities_and_honour_exceptions() {
    let yaml = format!(
        "{HEADER}spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - fromCIDRSet: [{{cidr: 192.0.2.0/24, except: [192.0.2.2/32]}}]
  egress:
  - toEntities: [world]
"
    );
    let p = resolve_web(&yaml, &[]);
    assert!(p.lookup(Direction::Ingress, 16777217, PROTO_TCP, 1).allowed());
    assert!(!p.lookup(Direction::Ingress, 16777218, PROTO_TCP, 1).allowed(), "the exception");
    assert!(!p.lookup(Direction::Ingress, 2, PROTO_TCP, 1).allowed(), "other world addresses");
    for world in [2, 9, 16777217, 16777218] {
        assert!(p.lookup(Direction::Egress, world, PROTO_UDP, 53).allowed(), "world includes {world}");
    }
    assert!(!p.lookup(Direction::Egress, 257, PROTO_UDP, 53).allowed(), "endpoints are not world");
}

#[test]
fn named_ports_resolve_against_the_subject_on_ingress() {
    let yaml = format!(
        "{HEADER}spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - toPorts: [{{ports: [{{port: http}}]}}]
"
    );
    let ports = [NamedPort { name: "http".into(), port: 8080, protocol: PROTO_TCP }];
    let p = resolve_web(&yaml, &ports);
    assert!(p.lookup(Direction::Ingress, 257, PROTO_TCP, 8080).allowed());
    assert!(!p.lookup(Direction::Ingress, 257, PROTO_UDP, 8080).allowed());
    let unnamed = resolve_web(&yaml, &[]);
    assert!(
        !unnamed.lookup(Direction::Ingress, 257, PROTO_TCP, 8080).allowed(),
        "unknown names allow nothing"
    );
}

#[test]
fn any_protocol_with_ports_means_tcp_udp_and_sctp() {
    let yaml = format!(
        "{HEADER}spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - toPorts: [{{ports: [{{port: '53'}}]}}]
"
    );
    let p = resolve_web(&yaml, &[]);
    for proto in [PROTO_TCP, PROTO_UDP, PROTO_SCTP] {
        assert!(p.lookup(Direction::Ingress, 257, proto, 53).allowed());
    }
    assert!(!p.lookup(Direction::Ingress, 257, PROTO_ICMP, 53).allowed());
}

mod to_services {
    use std::{collections::BTreeMap, net::Ipv4Addr};

    use super::*;
    use crate::services::{BackendAddress, CatalogService, ServiceCatalog};

    fn pairs(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// web selects app=web (identity 256); "external" has no selector and
    /// two backends: 192.0.2.2 (which has a /32 CIDR identity) and an
    /// endpoint's address (identity 258, db).
    fn catalog() -> ServiceCatalog {
        ServiceCatalog::new([
            CatalogService::new(
                "default",
                "web",
                &pairs(&[("team", "a")]),
                Some(&pairs(&[("app", "web")])),
                vec![],
            ),
            CatalogService::new(
                "default",
                "external",
                &pairs(&[("team", "b")]),
                None,
                vec![
                    BackendAddress { address: Ipv4Addr::new(192, 0, 2, 2), endpoint_identity: None },
                    BackendAddress { address: Ipv4Addr::new(10, 0, 0, 9), endpoint_identity: Some(258) },
                ],
            ),
            CatalogService::new(
                "prod",
                "web",
                &pairs(&[("team", "a")]),
                Some(&pairs(&[("app", "client")])),
                vec![],
            ),
        ])
    }

    fn client_egress(to: &str, services: ServiceCatalog) -> EndpointPolicy {
        let yaml = format!(
            "{HEADER}spec:\n  endpointSelector: {{matchLabels: {{app: client}}}}\n  egress:\n  - toServices: [{to}]\n    toPorts: [{{ports: [{{port: '8080', protocol: TCP}}]}}]\n"
        );
        let u = universe().with_services(services);
        let labels = u.get(257).unwrap().labels.clone();
        resolve(&rules(&yaml), &u, &Subject { labels: &labels, named_ports: &[] }, &|_| vec![])
    }

    fn allows(p: &EndpointPolicy, id: u32) -> bool {
        p.lookup(Direction::Egress, id, PROTO_TCP, 8080).allowed()
    }

    #[test]
    fn a_selector_service_allows_the_endpoints_it_selects_in_its_namespace() {
        let p = client_egress("{k8sService: {serviceName: web}}", catalog());
        assert!(p.egress_enforced);
        assert!(allows(&p, 256), "web's endpoints");
        assert!(!allows(&p, 258) && !allows(&p, 257), "others are not backends");
        // prod/web selects app=client, but in prod: no default endpoint.
        assert!(!p.lookup(Direction::Egress, 256, PROTO_TCP, 9090).allowed(), "toPorts restricts");
    }

    #[test]
    fn a_selector_less_service_allows_its_backend_addresses_identities() {
        let p = client_egress("{k8sService: {serviceName: external, namespace: default}}", catalog());
        assert!(allows(&p, 16777218), "the /32 CIDR identity of 192.0.2.2");
        assert!(allows(&p, 258), "the endpoint at a backend address");
        assert!(!allows(&p, 16777217), "the /24 is not a backend");
        assert!(!allows(&p, 256));
    }

    #[test]
    fn service_labels_select_services_and_a_missing_service_allows_nothing() {
        let p = client_egress("{k8sServiceSelector: {selector: {matchLabels: {team: a}}}}", catalog());
        assert!(allows(&p, 256) && !allows(&p, 258), "web only (prod/web is another namespace)");
        let p = client_egress("{k8sServiceSelector: {selector: {matchLabels: {team: b}}}}", catalog());
        assert!(allows(&p, 258) && !allows(&p, 256));
        let p = client_egress("{k8sService: {serviceName: web}}", ServiceCatalog::default());
        assert!(p.egress_enforced, "{p:?}");
        assert!(!p.entries.keys().any(|k| k.direction == Direction::Egress), "nothing allowed: {p:?}");
    }

    #[test]
    fn selector_less_backends_named_by_rules_need_cidr_identities() {
        let yaml = format!(
            "{HEADER}spec:\n  endpointSelector: {{}}\n  egress: [{{toServices: [{{k8sServiceSelector: {{selector: {{}}}}}}]}}]\n"
        );
        let prefixes: Vec<String> =
            catalog().backend_prefixes(&rules(&yaml)).iter().map(|p| p.to_string()).collect();
        assert_eq!(prefixes, vec!["10.0.0.9/32", "192.0.2.2/32"]);
        let none = rules(&format!(
            "{HEADER}spec:\n  endpointSelector: {{}}\n  egress: [{{toCIDR: [10.0.0.0/8]}}]\n"
        ));
        assert!(catalog().backend_prefixes(&none).is_empty());
        assert!(!crate::services::uses_services(&none));
    }
}

fn node(id: u32, zone: &str) -> KnownIdentity {
    KnownIdentity {
        id,
        labels: node_labels(&[("zone".to_string(), zone.to_string())].into()),
        kind: IdentityKind::Node,
    }
}

/// The default universe, two nodes (zone a and b) and remote-node.
fn universe_with_nodes(local_zone: &str) -> Universe {
    let mut all: Vec<KnownIdentity> = universe().iter().cloned().collect();
    all.push(KnownIdentity {
        id: reserved::REMOTE_NODE,
        labels: LabelSet::from_labels([Label::new("reserved", "remote-node", "")]),
        kind: IdentityKind::Reserved,
    });
    all.extend([node(300, "a"), node(301, "b")]);
    Universe::new(all).with_local_node(node_labels(&[("zone".to_string(), local_zone.to_string())].into()))
}

fn node_selector(yaml_selector: &str) -> Selector {
    let yaml =
        format!("{HEADER}spec:\n  endpointSelector: {{}}\n  ingress:\n  - fromNodes: [{yaml_selector}]\n");
    match &rules(&yaml)[0].ingress.allow[0].peers[0] {
        Peer::Nodes(s) => s.clone(),
        other => panic!("expected a node peer, got {other:?}"),
    }
}

#[test]
fn node_selectors_pick_nodes_and_the_local_one_as_host() {
    let u = universe_with_nodes("a");
    assert_eq!(
        u.nodes(&node_selector("{matchLabels: {zone: a}}")),
        vec![1, 300],
        "zone a: node 300 and host"
    );
    assert_eq!(u.nodes(&node_selector("{matchLabels: {zone: b}}")), vec![301]);
    // Every node: the ones with identities, those without (remote-node)
    // and this one.
    assert_eq!(u.nodes(&node_selector("{}")), vec![1, 6, 300, 301]);
    assert_eq!(
        u.nodes(&node_selector("{matchExpressions: [{key: zone, operator: NotIn, values: [a]}]}")),
        vec![6, 301]
    );
    // Endpoint labels are not node labels, even with the same key.
    assert_eq!(u.nodes(&node_selector("{matchLabels: {app: web}}")), Vec::<u32>::new());
    // Without the local node's labels, host is never picked.
    let bare = Universe::new(universe_with_nodes("a").iter().cloned());
    assert_eq!(bare.nodes(&node_selector("{matchLabels: {zone: a}}")), vec![300]);
}

#[test]
fn endpoint_selectors_never_pick_nodes() {
    let u = universe_with_nodes("a");
    let any = Selector::default();
    assert!(!u.select(&any).iter().any(|id| [300, 301].contains(id)), "{:?}", u.select(&any));
    let by_zone = Selector {
        requirements: vec![crate::selector::Requirement {
            source: None,
            key: "zone".into(),
            operator: crate::selector::Operator::In(vec!["a".into()]),
        }],
    };
    assert!(u.select(&by_zone).is_empty());
}

#[test]
fn node_entities_cover_node_identities() {
    let u = universe_with_nodes("a");
    assert_eq!(u.entity(Entity::RemoteNode), Some(vec![6, 300, 301]));
    assert_eq!(u.entity(Entity::Host), Some(vec![1]));
    let cluster = u.entity(Entity::Cluster).unwrap();
    assert!([1, 6, 256, 300, 301].iter().all(|id| cluster.contains(id)), "{cluster:?}");
    assert!(!cluster.contains(&2), "world is not in the cluster");
}

#[test]
fn a_from_nodes_rule_allows_the_nodes_it_selects_and_no_endpoint() {
    let yaml = format!(
        "{HEADER}spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - fromNodes: [{{matchLabels: {{zone: a}}}}]
    toPorts: [{{ports: [{{port: '8080', protocol: TCP}}]}}]
"
    );
    let u = universe_with_nodes("b");
    let labels = u.get(256).unwrap().labels.clone();
    let p = resolve(&rules(&yaml), &u, &Subject { labels: &labels, named_ports: &[] }, &|_| vec![]);
    assert!(p.lookup(Direction::Ingress, 300, PROTO_TCP, 8080).allowed(), "node in zone a");
    assert!(!p.lookup(Direction::Ingress, 300, PROTO_TCP, 80).allowed(), "only 8080");
    assert!(!p.lookup(Direction::Ingress, 301, PROTO_TCP, 8080).allowed(), "node in zone b");
    assert!(!p.lookup(Direction::Ingress, 1, PROTO_TCP, 8080).allowed(), "the local node is in zone b");
    assert!(!p.lookup(Direction::Ingress, 257, PROTO_TCP, 8080).allowed(), "an endpoint is no node");
}

fn http(rules: &[(&str, &str)]) -> String {
    let mut out = String::from("      rules:\n        http:\n");
    for (m, p) in rules {
        out += &format!("        - {{method: {m}, path: \"{p}\"}}\n");
    }
    out
}

fn l7_policy(name: &str, peer: &str, port: &str, l7: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: {peer}}}}}]\n    toPorts:\n    - ports: [{{port: \"{port}\", protocol: TCP}}]\n{l7}"
    )
}

fn l7_at(p: &EndpointPolicy, identity: u32, port: u16) -> Option<&L7Rules> {
    let key = MapKey { direction: Direction::Ingress, identity, protocol: PROTO_TCP, port, port_prefix: 16 };
    p.entries.get(&key).and_then(|e| e.l7.as_ref())
}

#[test]
fn l7_rules_of_several_rules_on_one_key_are_unioned() {
    let yaml = format!(
        "{}\n---\n{}",
        l7_policy("a", "client", "80", &http(&[("GET", "/a")])),
        l7_policy("b", "client", "80", &http(&[("PUT", "/b"), ("GET", "/a")]))
    );
    let p = resolve_web(&yaml, &[]);
    let Some(L7Rules::Http(rules)) = l7_at(&p, 257, 80) else { panic!("no redirect: {p:#?}") };
    let methods: Vec<_> = rules.iter().map(|r| r.method.as_deref().unwrap()).collect();
    assert_eq!(methods, vec!["GET", "PUT"]);
    assert_eq!(p.entries.values().filter(|e| e.l7.is_some()).count(), 1);
}

#[test]
fn an_l4_allow_on_an_l7_port_allows_every_request_through_the_proxy() {
    let yaml = format!(
        "{}\n---\n{}",
        l7_policy("a", "client", "80", &http(&[("GET", "/a")])),
        l7_policy("b", "client", "80", "")
    );
    let p = resolve_web(&yaml, &[]);
    let Some(L7Rules::Http(rules)) = l7_at(&p, 257, 80) else { panic!("no redirect: {p:#?}") };
    assert!(rules.contains(&crate::l7::HttpRule::default()), "{rules:?}");
    // Order of the documents does not matter.
    let yaml = format!(
        "{}\n---\n{}",
        l7_policy("b", "client", "80", ""),
        l7_policy("a", "client", "80", &http(&[("GET", "/a")]))
    );
    assert_eq!(l7_at(&resolve_web(&yaml, &[]), 257, 80), Some(&L7Rules::Http(rules.clone())));
    // A port with only L4 rules never redirects.
    assert_eq!(l7_at(&resolve_web(&l7_policy("b", "client", "80", ""), &[]), 257, 80), None);
}

#[test]
fn deny_wins_over_l7_and_never_redirects() {
    let deny = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: d}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n";
    let yaml = format!("{}\n---\n{deny}", l7_policy("a", "client", "80", &http(&[("GET", "/a")])));
    let p = resolve_web(&yaml, &[]);
    assert!(!p.lookup(Direction::Ingress, 257, PROTO_TCP, 80).allowed());
    assert!(p.entries.values().all(|e| e.l7.is_none()), "{p:#?}");
}

#[test]
fn l7_rules_are_those_the_datapath_would_redirect_with() {
    let p = resolve_web(&l7_policy("a", "client", "80", &http(&[("GET", "/a")])), &[]);
    let Some(L7Rules::Http(rules)) = p.l7_rules(Direction::Ingress, 257, PROTO_TCP, 80) else {
        panic!("{p:#?}")
    };
    assert_eq!(rules[0].path.as_deref(), Some("/a"));
    assert_eq!(p.l7_rules(Direction::Ingress, 257, PROTO_TCP, 81), None, "not allowed: not proxied");
    assert_eq!(p.l7_rules(Direction::Ingress, 258, PROTO_TCP, 80), None, "another peer is not allowed");
}
