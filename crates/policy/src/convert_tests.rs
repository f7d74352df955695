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
            L4 { protocol: PROTO_TCP, ports: PortMatch::Range(80, 80), l7: None },
            L4 { protocol: PROTO_ANY, ports: PortMatch::Range(8080, 8090), l7: None },
            L4 { protocol: PROTO_ANY, ports: PortMatch::Named("http".into()), l7: None },
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
    assert_eq!(
        p.rules[1].ingress.allow[0],
        PeerRule { peers: vec![], l4: vec![], dns: vec![] },
        "`{{}}` allows nothing"
    );
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
            L4 { protocol: PROTO_ICMP, ports: PortMatch::Range(8, 8), l7: None },
            L4 { protocol: PROTO_ICMP, ports: PortMatch::Range(0, 0), l7: None },
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
        PeerRule { peers: vec![Peer::Any], l4: vec![], dns: vec![] },
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
            L4 { protocol: PROTO_TCP, ports: PortMatch::Range(80, 81), l7: None },
            L4 { protocol: PROTO_UDP, ports: PortMatch::Range(0, u16::MAX), l7: None },
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
  - toFQDNs: [{matchName: example.com}, {matchPattern: "ex ample.*"}]
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
        "spec.egress[0].toFQDNs[1].matchPattern: \"ex ample.*\" contains ' '",
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

// ---- issue 7: what a new user's files met -----------------------------

fn values_of(selector: &Selector, key: &str) -> Vec<String> {
    selector
        .requirements
        .iter()
        .filter(|r| r.key == key)
        .flat_map(|r| match &r.operator {
            Operator::In(v) | Operator::NotIn(v) => v.clone(),
            _ => vec![],
        })
        .collect()
}

#[test]
fn plain_scalars_are_read_as_their_text_where_a_string_is_expected() {
    let p = &parse(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: 123
  namespace: on
spec:
  podSelector:
    matchLabels: {ns: y, tier: on, version: 1.10, app: 123, quoted: "1.10", hex: 0x1F}
    matchExpressions:
    - {key: release, operator: In, values: [yes, 2.0, "3"]}
  ingress:
  - ports:
    - port: http
    - port: 80
"#,
    )[0];
    assert_eq!(p.key.name, "123");
    assert_eq!(p.key.namespace.as_deref(), Some("on"));
    let subject = &p.rules[0].subject;
    for (key, want) in [
        ("ns", "y"),
        ("tier", "on"),
        ("version", "1.10"),
        ("app", "123"),
        ("quoted", "1.10"),
        ("hex", "0x1F"),
    ] {
        assert_eq!(values_of(subject, key), [want], "{key}");
    }
    assert_eq!(values_of(subject, "release"), ["yes", "2.0", "3"]);
    assert_eq!(
        p.rules[0].ingress.allow[0].l4,
        vec![
            L4 { protocol: PROTO_TCP, ports: PortMatch::Named("http".into()), l7: None },
            L4 { protocol: PROTO_TCP, ports: PortMatch::Range(80, 80), l7: None },
        ]
    );
    // `policy get` shows what was understood: strings, with the text kept.
    let labels = &p.document["spec"]["podSelector"]["matchLabels"];
    assert_eq!(labels["version"], "1.10");
    assert_eq!(labels["ns"], "y");
    assert_eq!(p.document["metadata"]["name"], "123");
}

#[test]
fn plain_scalars_in_cilium_fields_too() {
    let p = &parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: scalars}
spec:
  endpointSelector:
    matchLabels: {k8s:version: 1.10}
  ingress:
  - fromEndpoints:
    - matchLabels: {enabled: true}
    toPorts:
    - ports:
      - {port: 8080, endPort: 8090, protocol: TCP}
"#,
    )[0];
    assert_eq!(values_of(&p.rules[0].subject, "version"), ["1.10"]);
    let Peer::Endpoints(peer) = &p.rules[0].ingress.allow[0].peers[0] else { panic!() };
    assert_eq!(values_of(peer, "enabled"), ["true"]);
    assert_eq!(p.rules[0].ingress.allow[0].l4[0].ports, PortMatch::Range(8080, 8090));
    assert_eq!(p.document["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"], "8080");
}

#[test]
fn real_type_errors_are_still_refused_with_their_path() {
    let errs = errors(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: types}
spec:
  endpointSelector:
    matchLabels:
      app: {nested: map}
"#,
    );
    assert_eq!(
        errs,
        ["p.yaml: document 1 (CiliumNetworkPolicy default/types): spec.endpointSelector.matchLabels.app: invalid type: map, expected a string"]
    );
    let errs = errors(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: types}
spec:
  endpointSelector: {matchExpressions: [{key: a, operator: In, values: [[x]]}]}
"#,
    );
    assert!(
        errs[0].contains(
            "spec.endpointSelector.matchExpressions[0].values[0]: invalid type: sequence, expected a string"
        ),
        "{errs:?}"
    );
    let errs = errors(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: types}
spec:
  endpointSelector: {}
  ingress:
  - toPorts:
    - ports: [{port: "80", endPort: "90"}]
"#,
    );
    assert!(
        errs[0].contains(
            "spec.ingress[0].toPorts[0].ports[0].endPort: invalid type: string \"90\", expected i64"
        ),
        "a string where a number belongs: {errs:?}"
    );
    let errs = errors(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: types}
spec:
  podSelector: {matchLabels: {env: null}}
  ingress: [{ports: [{port: on}]}]
"#,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("spec.podSelector.matchLabels.env: expected a string, got null"), "{errs:?}");
    let errs = errors(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: types}
spec:
  podSelector: {}
  ingress: [{ports: [{port: on}]}]
"#,
    );
    assert!(
        errs[0].contains(
            "spec.ingress[0].ports[0].port: invalid type: boolean `true`, expected an integer or a string"
        ),
        "an IntOrString field is not a string field, as in kubectl: {errs:?}"
    );
}

const RULES_JSON: &str = r#"[{
    "endpointSelector": {"matchLabels": {"role": "backend"}},
    "ingress": [{
        "fromEndpoints": [{"matchLabels": {"role": "frontend"}}],
        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]
    }],
    "egress": [{"toEndpoints": [{"matchLabels": {"role": "db"}}]}],
    "labels": [{"key": "name", "value": "rule1", "source": "unspec"}],
    "description": "backend: frontend in on 80, out to the db"
}, {
    "endpointSelector": {"matchLabels": {"role": "db"}},
    "ingress": [{"fromEndpoints": [{"matchLabels": {"role": "backend"}}]}],
    "labels": ["unspec:name=rule1"]
}, {
    "endpointSelector": {},
    "ingressDeny": [{"fromEntities": ["world"]}],
    "labels": [{"key": "name", "value": "deny-world"}, {"key": "team", "value": "infra", "source": "k8s"}]
}]"#;

#[test]
fn a_list_of_cilium_rules_is_read_as_rule_sets_named_by_labels() {
    let sets = parse_policies("rules.json", RULES_JSON).unwrap();
    assert_eq!(sets.len(), 2, "rules with the same labels form one set: {sets:#?}");
    let first = &sets[0];
    assert_eq!(
        first.key,
        PolicyKey { kind: KIND_RULES.into(), namespace: None, name: "unspec:name=rule1".into() }
    );
    assert_eq!(first.key.to_string(), "CiliumRules unspec:name=rule1");
    assert_eq!(
        first.labels,
        [RuleLabel { key: "name".into(), value: "rule1".into(), source: "unspec".into() }]
    );
    assert_eq!(first.rules.len(), 2);
    assert_eq!((first.rules[0].index, first.rules[1].index), (0, 1));
    assert_eq!(first.description.as_deref(), Some("backend: frontend in on 80, out to the db"));
    // No namespace: selectors are not limited to one, as in Cilium.
    let rule = &first.rules[0];
    assert_eq!(rule.subject.requirements.len(), 1, "{:?}", rule.subject);
    let Peer::Endpoints(peer) = &rule.ingress.allow[0].peers[0] else { panic!() };
    assert!(!peer.requirements.iter().any(|r| r.key == POD_NAMESPACE_KEY), "{peer:?}");
    assert_eq!(
        rule.ingress.allow[0].l4,
        vec![L4 { protocol: PROTO_TCP, ports: PortMatch::Range(80, 80), l7: None }]
    );
    assert!(rule.ingress.default_deny && rule.egress.default_deny);
    assert_eq!(first.document.as_array().map(Vec::len), Some(2), "both rules shown: {}", first.document);

    let second = &sets[1];
    assert_eq!(
        second.key.name, "k8s:team=infra,unspec:name=deny-world",
        "labels sorted, default source unspec"
    );
    assert_eq!(second.rules[0].ingress.deny[0].peers, vec![Peer::Entity(Entity::World)]);
    assert_eq!(second.description, None);
}

#[test]
fn a_bad_rule_is_reported_by_position_labels_and_path_and_nothing_is_returned() {
    let errs = match parse_policies(
        "rules.json",
        r#"[
  {"endpointSelector": {}, "labels": [{"key": "name", "value": "ok"}]},
  {"endpointSelector": {"matchLabels": {"role": "db"}},
   "ingress": [{"fromEndpoints": [{"matchLabelz": {"role": "x"}}]}],
   "labels": [{"key": "name", "value": "typo"}]},
  {"endpointSelector": {}, "egress": [{"toCIDR": ["10.0.0.300/8"]}]},
  "not a rule"
]"#,
    ) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "rules.json: rule 2 (labels unspec:name=typo): ingress[0].fromEndpoints[0].matchLabelz: unknown field"
        ),
        "{errs:#?}"
    );
    assert_eq!(
        errs[1],
        "rules.json: rule 3 (no labels): egress[0].toCIDR[0]: \"10.0.0.300/8\" is not a CIDR such as 10.0.0.0/8"
    );
    assert_eq!(errs[2], "rules.json: rule 4 (no labels): expected a mapping (a Cilium rule)");
}

#[test]
fn rule_lists_in_yaml_and_their_mistakes() {
    let sets = parse_policies(
        "rules.yaml",
        "- endpointSelector: {matchLabels: {role: on}}\n  ingress: [{fromEntities: [host]}]\n",
    )
    .unwrap();
    assert_eq!(sets[0].key.to_string(), "CiliumRules without labels");
    assert_eq!(values_of(&sets[0].rules[0].subject, "role"), ["on"]);
    let errs = errors("[]");
    assert_eq!(errs, ["p.yaml: document 1 (unknown kind <no name>): an empty list of rules"]);
    let errs = errors(r#"{"endpointSelector": {}, "ingress": [{}]}"#);
    assert!(
        errs[0].contains("kind: is required; a Cilium rule on its own must be inside a list"),
        "{errs:?}"
    );
    let errs = errors("- apiVersion: cilium.io/v2\n  kind: CiliumNetworkPolicy\n");
    assert!(
        errs[0].contains("rule 1 (no labels): a list holds Cilium rules, not Kubernetes objects"),
        "{errs:?}"
    );
    let errs = errors("- {endpointSelector: {}, labels: [{key: name, value: a}]}\n---\n- {endpointSelector: {}, labels: [name=a]}\n");
    assert!(
        errs[0].starts_with("p.yaml: document 2, rule 1 (labels unspec:name=a): labels: the same policy is already defined by document 1"),
        "{errs:?}"
    );
    let errs = errors("- {endpointSelector: {}, labels: [{key: name, valu: a}]}\n");
    assert!(errs[0].contains("rule 1 (no labels): labels[0].valu: unknown field `valu`"), "{errs:?}");
}

#[test]
fn policies_are_found_by_labels() {
    let sets = parse_policies("rules.json", RULES_JSON).unwrap();
    let filters = |texts: &[&str]| {
        LabelFilter::parse_all(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>()).unwrap()
    };
    assert!(sets[0].matches_labels(&filters(&["name=rule1"])), "no source: any source");
    assert!(sets[0].matches_labels(&filters(&["unspec:name=rule1"])));
    assert!(sets[0].matches_labels(&filters(&["any:name=rule1"])));
    assert!(!sets[0].matches_labels(&filters(&["k8s:name=rule1"])), "a given source must match");
    assert!(!sets[0].matches_labels(&filters(&[])), "no labels selects nothing");
    assert!(sets[1].matches_labels(&filters(&["name=deny-world", "k8s:team=infra"])));
    assert!(
        !sets[1].matches_labels(&filters(&["name=deny-world", "team=other"])),
        "all labels must be carried"
    );
    assert!(LabelFilter::parse("=x").is_err());

    // Kubernetes objects carry the labels Cilium derives for them.
    let cnp = &parse(CNP)[0];
    assert!(cnp.matches_labels(&filters(&[
        "k8s:io.cilium.k8s.policy.name=web",
        "io.cilium.k8s.policy.namespace=prod",
        "io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
    ])));
}

#[test]
fn real_cilium_fields_not_implemented_are_named_not_unknown() {
    let errs = errors(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: unsupported}
spec:
  endpointSelector: {}
  log: {value: audit}
  ingress:
  - fromEndpoints: [{}]
    auth: {type: spire}
  - fromEndpoints: [{}]
    authentication: {mode: required}
  - fromGroups: [{aws: {}}]
  egress:
  - toEndpoints: [{}]
    auth: {type: spire}
  - toGroups: [{aws: {}}]
  - toPorts:
    - ports: [{port: "443"}]
      terminatingTLS: {secret: {name: a}}
      originatingTLS: {secret: {name: b}}
      serverNames: [example.com]
      listener: {envoyConfig: {kind: CiliumEnvoyConfig, name: x}, name: l}
"#,
    );
    let expect = [
        "spec.log",
        "spec.ingress[0].auth",
        "spec.ingress[1].authentication",
        "spec.ingress[2].fromGroups",
        "spec.egress[0].auth",
        "spec.egress[1].toGroups",
        "spec.egress[2].toPorts[0].terminatingTLS",
        "spec.egress[2].toPorts[0].originatingTLS",
        "spec.egress[2].toPorts[0].serverNames",
        "spec.egress[2].toPorts[0].listener",
    ];
    for needle in expect {
        let line = format!("{needle}: is not supported by Twill yet");
        assert!(errs.iter().any(|e| e.contains(&line)), "missing {line:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    // Implemented ones are accepted: fromRequires, icmps, enableDefaultDeny, toServices.
    parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: supported}
spec:
  endpointSelector: {}
  enableDefaultDeny: {ingress: false, egress: true}
  ingress:
  - fromRequires: [{matchLabels: {env: prod}}]
  - icmps: [{fields: [{type: 8, family: IPv4}]}]
  egress:
  - toRequires: [{matchLabels: {env: prod}}]
  - toServices: [{k8sService: {serviceName: x}}]
"#,
    );
}

fn egress_peers(p: &Policy) -> Vec<Peer> {
    p.rules[0].egress.allow.iter().flat_map(|r| r.peers.clone()).collect()
}

fn named(namespace: Option<&str>, name: &str) -> Peer {
    Peer::Service(ServicePeer {
        namespace: namespace.map(str::to_string),
        select: ServiceMatch::Name(name.into()),
    })
}

#[test]
fn to_services_names_services_in_the_policy_namespace_unless_told() {
    let p = &parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toServices:
    - k8sService: {serviceName: web}
    - k8sService: {serviceName: db, namespace: data}
    - k8sServiceSelector:
        selector:
          matchLabels: {team: a}
          matchExpressions: [{key: tier, operator: NotIn, values: [test]}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#,
    )[0];
    let peers = egress_peers(p);
    assert_eq!(peers[0], named(Some("prod"), "web"), "defaults to the policy's namespace");
    assert_eq!(peers[1], named(Some("data"), "db"));
    let Peer::Service(ServicePeer { namespace, select: ServiceMatch::Labels(sel) }) = &peers[2] else {
        panic!("{peers:?}");
    };
    assert_eq!(namespace.as_deref(), Some("prod"));
    // Over the service's labels: not scoped to a pod namespace.
    assert_eq!(sel.requirements.len(), 2, "{sel}");
    assert!(!sel.mentions(POD_NAMESPACE_KEY));
    // toPorts alongside restricts ports, and no "any peer" appears.
    let rule = &p.rules[0].egress.allow[0];
    assert_eq!(rule.l4, vec![L4 { protocol: PROTO_TCP, ports: PortMatch::Range(8080, 8080), l7: None }]);
    assert!(!peers.contains(&Peer::Any));
    assert_eq!(p.document["spec"]["egress"][0]["toServices"][0]["k8sService"]["serviceName"], "web");
}

#[test]
fn to_services_without_a_namespace_in_cluster_wide_rules_names_any_namespace() {
    let p = &parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: everyone}
spec:
  endpointSelector: {}
  egress:
  - toServices: [{k8sService: {serviceName: dns}}, {k8sService: {serviceName: web, namespace: default}}]
"#,
    )[0];
    assert_eq!(egress_peers(p), vec![named(None, "dns"), named(Some("default"), "web")]);
    let list = &parse(
        r#"[{"endpointSelector": {}, "egressDeny": [{"toServices": [{"k8sService": {"serviceName": "web"}}]}]}]"#,
    )[0];
    let deny: Vec<Peer> = list.rules[0].egress.deny.iter().flat_map(|r| r.peers.clone()).collect();
    assert_eq!(deny, vec![named(None, "web")], "deny rules name services too");
}

#[test]
fn bad_to_services_entries_are_named_by_field() {
    let errs = errors(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad}
spec:
  endpointSelector: {}
  egress:
  - toServices:
    - k8sService: {namespace: default}
    - k8sService: {serviceName: Web_1}
    - k8sServiceSelector: {namespace: default}
    - {}
    - k8sServiceSelector: {selector: {matchLabels: {"": x}}, namespace: "-x"}
"#,
    );
    let expect = [
        "spec.egress[0].toServices[0].k8sService.serviceName: is required",
        r#"spec.egress[0].toServices[1].k8sService.serviceName: "Web_1" is not a service name"#,
        "spec.egress[0].toServices[2].k8sServiceSelector.selector: is required",
        "spec.egress[0].toServices[3]: one of k8sService or k8sServiceSelector is required",
        r#"spec.egress[0].toServices[4].k8sServiceSelector.namespace: "-x" is not a namespace name"#,
        "spec.egress[0].toServices[4].k8sServiceSelector.selector.matchLabels: label keys must not be empty",
    ];
    for needle in expect {
        assert!(errs.iter().any(|e| e.contains(needle)), "missing {needle:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    let typo = errors(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: typo}
spec:
  endpointSelector: {}
  egress: [{toServices: [{k8sService: {name: web}}]}]
"#,
    );
    assert!(typo[0].contains("spec.egress[0].toServices[0].k8sService.name: unknown field"), "{typo:#?}");
}

#[test]
fn descriptions_are_kept() {
    let p = &parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: described}
specs:
- endpointSelector: {}
  description: "Allow DNS to kube-dns"
  egress: [{toEntities: [cluster]}]
- endpointSelector: {}
  description: Keep the world out
  labels: [{key: team, value: net}]
"#,
    )[0];
    assert_eq!(p.description.as_deref(), Some("Allow DNS to kube-dns; Keep the world out"));
    assert_eq!(p.document["specs"][1]["description"], "Keep the world out");
    assert!(p.matches_labels(&LabelFilter::parse_all(&["team=net".into()]).unwrap()), "spec labels count");
}

mod plain_scalar_property {
    use proptest::{prelude::*, sample::select, test_runner::Config};

    use super::*;

    /// Plain scalars YAML could resolve to a boolean or a number, and
    /// ordinary words; never a null spelling (refused on purpose).
    fn token() -> impl Strategy<Value = String> {
        let tricky = select(vec![
            "y", "Y", "n", "yes", "No", "on", "OFF", "true", "False", "1.10", "1.0", "0x1F", "0o17", "1e3",
            ".5", "+1", "007", ".inf", "1_000", "123", "2.0.1",
        ])
        .prop_map(str::to_string);
        let words = "[a-z0-9][a-z0-9._]{0,10}".prop_filter("null is refused", |t| t != "null");
        prop_oneof![tricky, words]
    }

    proptest! {
        #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]
        #[test]
        fn a_plain_label_value_is_its_text_in_yaml_and_json(value in token()) {
            let yaml = format!(
                "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p}}\nspec:\n  endpointSelector:\n    matchLabels: {{app: {value}}}\n"
            );
            let p = parse_policies("p.yaml", &yaml).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(values_of(&p[0].rules[0].subject, "app"), vec![value.clone()]);
            prop_assert_eq!(&p[0].document["spec"]["endpointSelector"]["matchLabels"]["app"], &Value::from(value.clone()));
            let json = format!(r#"[{{"endpointSelector": {{"matchLabels": {{"app": "{value}"}}}}}}]"#);
            let p = parse_policies("p.json", &json).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(values_of(&p[0].rules[0].subject, "app"), vec![value]);
        }
    }
}

#[test]
fn node_selectors_become_node_peers_about_node_labels() {
    let p = &parse(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: nodes, namespace: prod}
spec:
  endpointSelector: {}
  ingress:
  - fromNodes:
    - matchLabels: {zone: a}
    - matchExpressions: [{key: k8s:tier, operator: Exists}]
    - {}
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  egress:
  - toNodes: [{matchLabels: {zone: b}}]
"#,
    )[0];
    let rule = &p.rules[0];
    let peers = &rule.ingress.allow[0].peers;
    let zone = |v: &str| Requirement {
        source: Some("node".into()),
        key: "zone".into(),
        operator: Operator::In(vec![v.into()]),
    };
    // Not scoped to the policy's namespace: nodes have none.
    assert_eq!(peers[0], Peer::Nodes(Selector { requirements: vec![zone("a")] }));
    let explicit = Requirement { source: Some("k8s".into()), key: "tier".into(), operator: Operator::Exists };
    assert_eq!(peers[1], Peer::Nodes(Selector { requirements: vec![explicit] }), "an explicit source stays");
    assert_eq!(peers[2], Peer::Nodes(Selector::default()));
    assert_eq!(peers.len(), 3, "node peers are not 'any peer' next to the ports");
    assert_eq!(rule.egress.allow[0].peers, vec![Peer::Nodes(Selector { requirements: vec![zone("b")] })]);
}

#[test]
fn a_bad_node_selector_names_its_field() {
    let errs = errors(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: nodes}
spec:
  endpointSelector: {}
  ingress:
  - fromNodes: [{matchExpressions: [{key: zone, operator: Near, values: [a]}]}]
  egress:
  - toNodes: [{matchExpressions: [{key: zone, operator: In}]}]
"#,
    );
    assert!(
        errs.iter().any(|e| e.contains("spec.ingress[0].fromNodes[0].matchExpressions[0].operator")
            && e.contains("\"Near\" is not an operator")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("spec.egress[0].toNodes[0].matchExpressions[0].values")
            && e.contains("must not be empty")),
        "{errs:#?}"
    );
    let errs = errors(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: nodes}
spec:
  endpointSelector: {}
  ingress:
  - fromNodes: [{matchLabel: {zone: a}}]
"#,
    );
    assert!(errs.iter().any(|e| e.contains("matchLabel")), "a misspelt field is named: {errs:#?}");
}

const L7: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l7, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80"}]
      rules:
        http:
        - method: GET
          path: "/public/.*"
        - method: POST
          host: "api\\.example\\.com"
          headers: ["X-Token", "X-Env: prod"]
          headerMatches:
          - {name: X-Team, value: blue, mismatch: REPLACE}
          - {name: X-Trace}
"#;

#[test]
fn http_rules_are_parsed_onto_their_ports() {
    let p = &parse(L7)[0];
    let l4 = &p.rules[0].ingress.allow[0].l4;
    // Without a protocol, HTTP rules mean TCP.
    assert_eq!(l4.len(), 1);
    assert_eq!((l4[0].protocol, &l4[0].ports), (PROTO_TCP, &PortMatch::Range(80, 80)));
    let Some(L7Rules::Http(rules)) = &l4[0].l7 else { panic!("no http rules: {l4:?}") };
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].method.as_deref(), Some("GET"));
    assert_eq!(rules[0].path.as_deref(), Some("/public/.*"));
    assert_eq!(rules[1].host.as_deref(), Some("api\\.example\\.com"));
    assert_eq!(
        rules[1].headers,
        vec![
            HeaderMatch { name: "X-Token".into(), value: None, mismatch: None },
            HeaderMatch { name: "X-Env".into(), value: Some("prod".into()), mismatch: None },
            HeaderMatch {
                name: "X-Team".into(),
                value: Some("blue".into()),
                mismatch: Some(MismatchAction::Replace)
            },
            HeaderMatch { name: "X-Trace".into(), value: None, mismatch: None },
        ]
    );
}

#[test]
fn bad_http_rules_name_the_field() {
    let bad = L7
        .replace("path: \"/public/.*\"", "path: \"/public/(.*\"")
        .replace("mismatch: REPLACE", "mismatch: SHOUT")
        .replace("\"X-Token\"", "\"X Token\"");
    let errs = errors(&bad);
    let want = [
        "spec.ingress[0].toPorts[0].rules.http[0].path: \"/public/(.*\" is not a valid regular expression",
        "spec.ingress[0].toPorts[0].rules.http[1].headerMatches[0].mismatch: \"SHOUT\" is not an action",
        "spec.ingress[0].toPorts[0].rules.http[1].headers[0]: \"X Token\"",
    ];
    for w in want {
        assert!(errs.iter().any(|e| e.contains(w)), "missing {w:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    // The second rule's method, in its own document.
    let errs = errors(&L7.replace("method: POST", "method: \"[\""));
    assert!(errs[0].contains("rules.http[1].method: \"[\" is not a valid regular expression"), "{errs:?}");
}

#[test]
fn http_rules_need_tcp_ports_and_allow_rules() {
    let udp = L7.replace("ports: [{port: \"80\"}]", "ports: [{port: \"80\", protocol: UDP}]");
    assert!(errors(&udp)[0].contains("toPorts[0].ports[0].protocol: HTTP rules need TCP, not UDP"));
    let no_ports = L7.replace("    - ports: [{port: \"80\"}]\n      rules:", "    - rules:");
    assert!(
        errors(&no_ports)[0].contains("toPorts[0].ports: is required with rules"),
        "{:?}",
        errors(&no_ports)
    );
    let deny = L7.replace("  ingress:\n", "  ingressDeny:\n");
    let errs = errors(&deny);
    assert!(
        errs.iter()
            .any(|e| e
                .contains("spec.ingressDeny[0].toPorts[0].rules: L7 rules are not allowed in deny rules")),
        "{errs:?}"
    );
    let dns = L7.replace("        http:\n", "        dns: [{matchName: x}]\n        http:\n");
    assert!(
        errors(&dns)[0].contains("toPorts[0].rules: holds dns and http kinds of L7 rules"),
        "{:?}",
        errors(&dns)
    );
}

/// Cilium's Star Wars demo files, as the demo and its e2e test apply them:
/// they must read unchanged, quirks included (the L3/L4 file keeps its
/// description beside `spec`).
#[test]
fn the_star_wars_policies_read_unchanged() {
    let l4 = &parse(include_str!("../../../examples/starwars/sw_l3_l4_policy.yaml"))[0];
    let l7 = &parse(include_str!("../../../examples/starwars/sw_l3_l4_l7_policy.yaml"))[0];
    for p in [l4, l7] {
        assert_eq!((p.key.namespace.as_deref(), p.key.name.as_str()), (Some("default"), "rule1"));
        let allow = &p.rules[0].ingress.allow[0].l4;
        assert_eq!((allow[0].protocol, &allow[0].ports), (PROTO_TCP, &PortMatch::Range(80, 80)));
    }
    assert_eq!(
        l4.description.as_deref(),
        Some("L3-L4 policy to restrict deathstar access to empire ships only")
    );
    assert!(l4.rules[0].ingress.allow[0].l4[0].l7.is_none());
    let Some(L7Rules::Http(http)) = &l7.rules[0].ingress.allow[0].l4[0].l7 else { panic!("{l7:?}") };
    assert_eq!(http.len(), 1);
    assert_eq!(
        (http[0].method.as_deref(), http[0].path.as_deref()),
        (Some("POST"), Some("/v1/request-landing"))
    );
    // Both are the same policy: importing the second replaces the first.
    assert_eq!(l4.key, l7.key);
}
