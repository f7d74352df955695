//! One test per conversion rule: how each YAML construct becomes rules,
//! and how each mistake is reported.

use super::*;

fn parse(text: &str) -> Vec<Policy> {
    match parse_policies("p.yaml", text) {
        Ok(p) => p,
        Err(errors) => {
            panic!("unexpected errors: {:#?}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>())
        }
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse_policies("p.yaml", text) {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn ns_requirement(ns: &str) -> Requirement {
    Requirement {
        source: Some("k8s".into()),
        key: POD_NAMESPACE_KEY.into(),
        operator: Operator::In(vec![ns.into()]),
    }
}

const CNP: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web
  namespace: prod
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: client
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: other
        app: client
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      - port: 8080
        endPort: 8090
      - port: http
"#;

#[test]
fn cnp_rules_are_scoped_to_their_namespace() {
    let p = &parse(CNP)[0];
    assert_eq!(
        p.key,
        PolicyKey { kind: KIND_CNP.into(), namespace: Some("prod".into()), name: "web".into() }
    );
    let rule = &p.rules[0];
    assert!(rule.subject.requirements.contains(&ns_requirement("prod")), "subject limited to prod");
    let peers = &rule.ingress.allow[0].peers;
    let Peer::Endpoints(same_ns) = &peers[0] else { panic!() };
    assert!(same_ns.requirements.contains(&ns_requirement("prod")), "peer defaults to the policy namespace");
    let Peer::Endpoints(other_ns) = &peers[1] else { panic!() };
    assert!(other_ns.requirements.contains(&ns_requirement("other")));
    assert!(!other_ns.requirements.contains(&ns_requirement("prod")), "an explicit namespace is kept");
    assert!(rule.ingress.present && rule.ingress.default_deny);
    assert!(!rule.egress.present && !rule.egress.default_deny);
}

#[test]
fn ports_accept_numbers_strings_ranges_and_names() {
    let l4 = &parse(CNP)[0].rules[0].ingress.allow[0].l4;
    assert_eq!(
        l4,
        &vec![
            L4 { protocol: PROTO_TCP, ports: PortMatch::Range(80, 80) },
            L4 { protocol: PROTO_ANY, ports: PortMatch::Range(8080, 8090) },
            L4 { protocol: PROTO_ANY, ports: PortMatch::Named("http".into()) },
        ]
    );
}

#[test]
fn clusterwide_policies_are_not_scoped_and_specs_lists_give_several_rules() {
    let p = &parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: all
specs:
- endpointSelector: {}
  egress:
  - toEntities: [world, cluster]
- endpointSelector:
    matchExpressions:
    - {key: tier, operator: NotIn, values: [db]}
  ingressDeny:
  - fromCIDRSet:
    - cidr: 10.0.0.0/8
      except: [10.1.0.0/16]
"#,
    )[0];
    assert_eq!(p.key.namespace, None);
    assert_eq!(p.rules.len(), 2);
    assert!(p.rules[0].subject.is_empty(), "no namespace requirement added");
    assert_eq!(
        p.rules[0].egress.allow[0].peers,
        vec![Peer::Entity(Entity::World), Peer::Entity(Entity::Cluster)]
    );
    let deny = &p.rules[1].ingress.deny[0];
    assert_eq!(
        deny.peers,
        vec![Peer::Cidr(CidrPeer {
            cidr: Prefix::new(0x0a00_0000, 8),
            except: vec![Prefix::new(0x0a01_0000, 16)]
        })]
    );
    assert!(p.rules[1].ingress.present && p.rules[1].ingress.default_deny, "deny rules also select");
}

#[test]
fn default_deny_follows_sections_and_enable_default_deny() {
    let p = &parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: x}
specs:
- endpointSelector: {}
  ingress: []
  egress:
  - toPorts: [{ports: [{port: "53", protocol: UDP}]}]
  enableDefaultDeny: {egress: false}
- endpointSelector: {}
  ingress:
  - {}
"#,
    )[0];
    assert!(!p.rules[0].ingress.present, "an empty list is no section");
    assert!(p.rules[0].egress.present && !p.rules[0].egress.default_deny);
    assert_eq!(p.rules[0].egress.allow[0].peers, vec![Peer::Any], "ports without peers apply to all peers");
    assert!(p.rules[1].ingress.present && p.rules[1].ingress.default_deny);
    assert_eq!(p.rules[1].ingress.allow[0], PeerRule { peers: vec![], l4: vec![] }, "`{{}}` allows nothing");
}

#[test]
fn icmp_types_by_number_and_name() {
    let p = &parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: icmp}
spec:
  endpointSelector: {}
  ingress:
  - icmps:
    - fields:
      - {type: 8}
      - {type: EchoReply, family: IPv4}
      - {type: EchoRequest, family: IPv6}
"#,
    )[0];
    let l4 = &p.rules[0].ingress.allow[0].l4;
    assert_eq!(
        l4,
        &vec![
            L4 { protocol: PROTO_ICMP, ports: PortMatch::Range(8, 8) },
            L4 { protocol: PROTO_ICMP, ports: PortMatch::Range(0, 0) },
        ],
        "IPv6 types match nothing on this IPv4 datapath"
    );
}

#[test]
fn requires_are_collected_per_direction() {
    let p = &parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: req}
spec:
  endpointSelector: {}
  ingress:
  - fromRequires: [{matchLabels: {env: prod}}]
  - fromEndpoints: [{}]
"#,
    )[0];
    let ingress = &p.rules[0].ingress;
    assert_eq!(ingress.requires.len(), 1);
    assert_eq!(ingress.allow.len(), 1, "a requires-only rule allows nothing itself");
}

#[test]
fn network_policy_semantics() {
    let p = &parse(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - {}
  - from:
    - podSelector: {matchLabels: {pod: b}}
    - namespaceSelector: {matchLabels: {team: "y"}}
    - podSelector: {matchLabels: {pod: c}}
      namespaceSelector: {}
    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.2/32]}
    ports:
    - {port: 80, endPort: 81}
    - {protocol: UDP}
"#,
    )[0];
    let rule = &p.rules[0];
    assert!(rule.ingress.present && !rule.egress.present, "policyTypes defaults to Ingress only");
    assert_eq!(
        rule.ingress.allow[0],
        PeerRule { peers: vec![Peer::Any], l4: vec![] },
        "`{{}}` allows everything"
    );
    let r = &rule.ingress.allow[1];
    let Peer::Endpoints(pods) = &r.peers[0] else { panic!() };
    assert!(pods.requirements.contains(&ns_requirement("x")), "podSelector alone: own namespace");
    let Peer::Endpoints(namespaces) = &r.peers[1] else { panic!() };
    assert!(namespaces.requirements.iter().any(|q| q.key == "io.cilium.k8s.namespace.labels.team"));
    let Peer::Endpoints(both) = &r.peers[2] else { panic!() };
    assert!(both.requirements.iter().any(|q| q.key == "pod"));
    assert!(!both.requirements.contains(&ns_requirement("x")), "with a namespaceSelector, any namespace");
    assert!(matches!(r.peers[3], Peer::Cidr(_)));
    assert_eq!(
        r.l4,
        vec![
            L4 { protocol: PROTO_TCP, ports: PortMatch::Range(80, 81) },
            L4 { protocol: PROTO_UDP, ports: PortMatch::Range(0, u16::MAX) },
        ]
    );
}

#[test]
fn network_policy_egress_only_denies_all_egress() {
    let p = &parse(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np}
spec:
  podSelector: {}
  policyTypes: [Egress]
"#,
    )[0];
    assert_eq!(p.key.namespace.as_deref(), Some("default"));
    assert!(p.rules[0].egress.present && p.rules[0].egress.allow.is_empty());
    assert!(!p.rules[0].ingress.present);
}

#[test]
fn errors_name_file_document_policy_and_field() {
    let errs = errors(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: good}
spec: {endpointSelector: {}}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad, namespace: prod}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints:
    - matchLabelz: {app: x}
"#,
    );
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with(
            "p.yaml: document 2 (CiliumNetworkPolicy prod/bad): spec.ingress[0].fromEndpoints[0]"
        ),
        "{}",
        errs[0]
    );
    assert!(errs[0].contains("matchLabelz"), "{}", errs[0]);
}

#[test]
fn every_problem_is_reported() {
    let errs = errors(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: many}
spec:
  endpointSelector:
    matchExpressions:
    - {key: a, operator: Has}
  ingress:
  - fromEntities: [everyone]
    fromCIDRSet:
    - {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}
    toPorts:
    - ports:
      - {port: "99999"}
      - {port: "80", endPort: 70}
      - {port: "80", protocol: ICMP}
  egress:
  - toFQDNs: [{matchName: example.com}]
  - toCIDR: [fd00::/8, 10.0.0.0/33]
"#,
    );
    let expect = [
        "spec.endpointSelector.matchExpressions[0].operator",
        "spec.ingress[0].fromEntities[0]: unknown entity \"everyone\"",
        "spec.ingress[0].fromCIDRSet[0].except[0]: 11.0.0.0/8 is not inside 10.0.0.0/8",
        "spec.ingress[0].toPorts[0].ports[0].port: 99999 is out of range",
        "spec.ingress[0].toPorts[0].ports[1].endPort",
        "spec.ingress[0].toPorts[0].ports[2].protocol",
        "spec.egress[0].toFQDNs: is not supported by Twill yet",
        "spec.egress[1].toCIDR[0]: \"fd00::/8\": IPv6",
        "spec.egress[1].toCIDR[1]",
    ];
    for needle in expect {
        assert!(errs.iter().any(|e| e.contains(needle)), "missing {needle:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn kinds_versions_duplicates_and_syntax() {
    let errs = errors("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    assert!(errs[0].contains("kind: \"ConfigMap\" is not a policy kind"), "{errs:?}");
    let errs = errors("apiVersion: cilium.io/v1\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {endpointSelector: {}}\n");
    assert!(errs[0].contains("apiVersion: \"cilium.io/v1\" is not supported"), "{errs:?}");
    let doc = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {endpointSelector: {}}\n";
    let errs = errors(&format!("{doc}---\n{doc}"));
    assert!(errs[0].contains("document 2") && errs[0].contains("already defined by document 1"), "{errs:?}");
    let errs = errors("spec: [unclosed\n");
    assert!(errs[0].starts_with("p.yaml: not valid YAML"), "{errs:?}");
    let errs = errors("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\n");
    assert!(errs[0].contains("spec: spec or specs is required"), "{errs:?}");
}

#[test]
fn exported_metadata_is_accepted() {
    parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: exported
  namespace: default
  uid: 1234
  resourceVersion: "55"
  generation: 2
  creationTimestamp: "2026-01-01T00:00:00Z"
  annotations: {note: kept}
spec:
  endpointSelector: {}
status: {}
"#,
    );
}
