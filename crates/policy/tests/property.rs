//! Property test: the policy resolver (`resolve()` + `EndpointPolicy::lookup()`)
//! agrees with a plainly written reference evaluator on random policy sets
//! and random connection tuples.
//!
//! The resolver compiles rules into LPM map keys (identity, protocol, port
//! prefixes) and settles deny precedence; the reference below never builds
//! keys or prefixes: it reads the rules directly for one tuple at a time.
//!
//! The generators draw from deliberately tiny vocabularies (three label
//! keys with three values, two namespaces, a handful of prefixes and ports
//! around 80) so that selectors, ranges and prefixes collide often.

use std::{
    collections::BTreeMap,
    fmt::{self, Write as _},
    sync::atomic::{AtomicUsize, Ordering},
};

use proptest::{
    collection::vec,
    prelude::*,
    sample::{select, subsequence, Index},
    test_runner::{Config, TestCaseError, TestError, TestRunner},
};
use twill_identity::{Label, LabelSet};
use twill_policy::{
    model::*,
    resolve::{resolve, EndpointPolicy, IdentityKind, KnownIdentity, NamedPort, Subject, Universe},
    selector::{Operator, Requirement, Selector},
};

/// Policy sets generated per `cargo test` run.
const CASES: u32 = 1500;
/// Tuples checked per policy set (so at least CASES * MIN_PROBES comparisons).
const MIN_PROBES: usize = 40;
const MAX_PROBES: usize = 60;
/// The brief: at least this many (policy set, tuple) comparisons per run.
const MIN_COMPARISONS: usize = 10_000;

const FIRST_ENDPOINT_ID: u32 = 256;
const FIRST_CIDR_ID: u32 = 16_777_216;
/// Node identities come from the same allocator as endpoints' in the
/// agent; here they get a range of their own to keep the cases readable.
const FIRST_NODE_ID: u32 = 200;

// ---------------------------------------------------------------------------
// Test universe
// ---------------------------------------------------------------------------

/// One identity of the random universe, with the named ports the resolver
/// learns through `Subject::named_ports` / the `peer_ports` callback.
#[derive(Debug, Clone)]
struct Ident {
    id: u32,
    labels: LabelSet,
    kind: IdentityKind,
    named_ports: Vec<NamedPort>,
}

/// A tuple to check: `subject` indexes the endpoint identities, `peer` all
/// identities (so both shrink along with the universe).
#[derive(Debug, Clone)]
struct Probe {
    direction: Direction,
    subject: Index,
    peer: Index,
    protocol: u8,
    port: u16,
}

/// One generated policy set with its universe and the tuples to check.
#[derive(Clone)]
struct Case {
    identities: Vec<Ident>,
    rules: Vec<Rule>,
    probes: Vec<Probe>,
}

impl Case {
    fn endpoints(&self) -> Vec<&Ident> {
        self.identities.iter().filter(|i| i.kind == IdentityKind::Endpoint).collect()
    }

    /// (subject, peer) of a probe. Identity 0 is never in the universe.
    fn probe_idents(&self, p: &Probe) -> (&Ident, &Ident) {
        let endpoints = self.endpoints();
        let subject = endpoints[p.subject.index(endpoints.len())];
        let peer = &self.identities[p.peer.index(self.identities.len())];
        (subject, peer)
    }

    fn universe(&self) -> Universe {
        Universe::new(self.identities.iter().map(|i| KnownIdentity {
            id: i.id,
            labels: i.labels.clone(),
            kind: i.kind.clone(),
        }))
    }

    fn named_ports_of(&self, id: u32) -> Vec<NamedPort> {
        self.identities.iter().find(|i| i.id == id).map(|i| i.named_ports.clone()).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Reference evaluator
// ---------------------------------------------------------------------------

/// The policy semantics, written out directly: for one tuple, walk the
/// rules and ask "does this rule say anything about this peer, protocol
/// and port?". No map keys, no port prefixes, no resolver code.
mod reference {
    use super::*;

    /// What the reference decided, and because of which rule.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum RefVerdict {
        /// A deny peer rule matched: (rule position in the slice, deny index).
        Denied { rule: usize, deny: usize },
        /// No relevant rule sets default deny in this direction.
        NotEnforced,
        /// An allow peer rule matched: (rule position, allow index).
        Allowed { rule: usize, allow: usize },
        /// Enforced, and nothing allows it.
        DefaultDenied,
    }

    impl RefVerdict {
        pub fn allowed(&self) -> bool {
            matches!(self, RefVerdict::NotEnforced | RefVerdict::Allowed { .. })
        }
    }

    /// Values of the labels a requirement looks at: same key, and same
    /// source unless the requirement leaves the source open.
    fn values<'a>(req: &'a Requirement, labels: &'a LabelSet) -> Vec<&'a str> {
        let mut out = Vec::new();
        for label in labels.iter() {
            if label.key != req.key {
                continue;
            }
            if let Some(source) = &req.source {
                if *source != label.source {
                    continue;
                }
            }
            out.push(label.value.as_str());
        }
        out
    }

    /// Kubernetes selector semantics: every requirement must hold.
    /// NotIn and DoesNotExist hold for absent keys.
    pub fn selector_matches(selector: &Selector, labels: &LabelSet) -> bool {
        for req in &selector.requirements {
            let vals = values(req, labels);
            let ok = match &req.operator {
                Operator::In(set) => vals.iter().any(|v| set.iter().any(|s| s == v)),
                Operator::NotIn(set) => !vals.iter().any(|v| set.iter().any(|s| s == v)),
                Operator::Exists => !vals.is_empty(),
                Operator::DoesNotExist => vals.is_empty(),
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Whether every address of `inner` is inside `outer`: `inner` is at
    /// least as long, and the first `outer.len` bits agree (bit by bit).
    pub fn prefix_contains(outer: &Prefix, inner: &Prefix) -> bool {
        if inner.len < outer.len {
            return false;
        }
        for bit in 0..outer.len as u32 {
            let shift = 31 - bit;
            if (outer.addr >> shift) & 1 != (inner.addr >> shift) & 1 {
                return false;
            }
        }
        true
    }

    /// Which identity numbers / kinds an entity stands for.
    pub fn entity_matches(entity: Entity, peer: &Ident) -> bool {
        let id = peer.id;
        match entity {
            Entity::All => true,
            Entity::World | Entity::WorldIpv4 => {
                id == 2 || id == 9 || matches!(peer.kind, IdentityKind::Cidr(_))
            }
            Entity::WorldIpv6 => id == 10,
            Entity::Cluster => {
                [1, 3, 4, 5, 6, 7, 8].contains(&id)
                    || peer.kind == IdentityKind::Endpoint
                    || peer.kind == IdentityKind::Node
            }
            Entity::Host => id == 1,
            Entity::RemoteNode => id == 6 || peer.kind == IdentityKind::Node,
            Entity::Health => id == 4,
            Entity::Init => id == 5,
            Entity::Unmanaged => id == 3,
            Entity::KubeApiserver => id == 7,
            Entity::Ingress => id == 8,
        }
    }

    /// Whether one peer of a peer rule covers the peer identity.
    /// `requires` only restrict `Peer::Endpoints`.
    pub fn peer_matches(peer: &Peer, ident: &Ident, requires: &[&Selector]) -> bool {
        match peer {
            Peer::Any => true,
            Peer::Endpoints(selector) => {
                let kind_ok = match ident.kind {
                    IdentityKind::Endpoint => true,
                    // Reserved identities only through an explicit reserved: label.
                    IdentityKind::Reserved => {
                        selector.requirements.iter().any(|r| r.source.as_deref() == Some("reserved"))
                    }
                    IdentityKind::Cidr(_) | IdentityKind::Node => false,
                };
                kind_ok
                    && selector_matches(selector, &ident.labels)
                    && requires.iter().all(|r| selector_matches(r, &ident.labels))
            }
            Peer::Entity(entity) => entity_matches(*entity, ident),
            // The generated universes have no local node, so no host.
            Peer::Nodes(selector) => match ident.kind {
                IdentityKind::Node => selector_matches(selector, &ident.labels),
                _ if ident.id == 6 => selector_matches(
                    selector,
                    &LabelSet::from_labels([Label::new("reserved", "remote-node", "")]),
                ),
                _ => false,
            },
            // The generated policies name no services: their resolution is
            // tested on hand-checked catalogs in the crate.
            Peer::Service(_) => unreachable!("no toServices peers are generated"),
            Peer::Fqdn(_) => unreachable!("no toFQDNs peers are generated"),
            Peer::Cidr(cidr) => {
                let by_prefix = match &ident.kind {
                    IdentityKind::Cidr(p) => {
                        prefix_contains(&cidr.cidr, p) && !cidr.except.iter().any(|e| prefix_contains(e, p))
                    }
                    _ => false,
                };
                let world = cidr.cidr.len == 0 && (ident.id == 2 || ident.id == 9);
                by_prefix || world
            }
        }
    }

    /// Whether one L4 condition covers (protocol, port). `named` are the
    /// named ports that apply (the subject's on ingress, the peer's on egress).
    pub fn l4_matches(l4: &L4, protocol: u8, port: u16, named: &[NamedPort]) -> bool {
        match &l4.ports {
            PortMatch::Range(lo, hi) => {
                let in_range = *lo <= port && port <= *hi;
                if l4.protocol == PROTO_ANY {
                    if *lo == 0 && *hi == u16::MAX {
                        // ANY protocol, all ports: everything, ICMP and GRE too.
                        true
                    } else {
                        // A port range without protocol means the port protocols.
                        [PROTO_TCP, PROTO_UDP, PROTO_SCTP].contains(&protocol) && in_range
                    }
                } else {
                    protocol == l4.protocol && in_range
                }
            }
            PortMatch::Named(name) => named.iter().any(|np| {
                np.name == *name
                    && np.port == port
                    && np.protocol == protocol
                    && (l4.protocol == PROTO_ANY || l4.protocol == np.protocol)
            }),
        }
    }

    pub fn peer_rule_matches(
        rule: &PeerRule,
        peer: &Ident,
        protocol: u8,
        port: u16,
        named: &[NamedPort],
        requires: &[&Selector],
    ) -> bool {
        let peer_ok = rule.peers.iter().any(|p| peer_matches(p, peer, requires));
        let l4_ok = rule.l4.is_empty() || rule.l4.iter().any(|l| l4_matches(l, protocol, port, named));
        peer_ok && l4_ok
    }

    /// The verdict for a connection of `subject` in `direction` with `peer`.
    pub fn evaluate(
        rules: &[Rule],
        subject: &Ident,
        direction: Direction,
        peer: &Ident,
        protocol: u8,
        port: u16,
    ) -> RefVerdict {
        // Rules that select the subject and say something about this direction.
        let relevant: Vec<(usize, &Rule)> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| selector_matches(&r.subject, &subject.labels))
            .filter(|(_, r)| r.direction(direction).present || r.direction(direction).default_deny)
            .collect();
        let enforced = relevant.iter().any(|(_, r)| r.direction(direction).default_deny);
        let requires: Vec<&Selector> =
            relevant.iter().flat_map(|(_, r)| r.direction(direction).requires.iter()).collect();
        // Named ports: the receiving side's.
        let named: &[NamedPort] = match direction {
            Direction::Ingress => &subject.named_ports,
            Direction::Egress => &peer.named_ports,
        };

        // 1. Any deny wins.
        for (i, rule) in &relevant {
            for (j, deny) in rule.direction(direction).deny.iter().enumerate() {
                if peer_rule_matches(deny, peer, protocol, port, named, &requires) {
                    return RefVerdict::Denied { rule: *i, deny: j };
                }
            }
        }
        // 2. Nothing enforces the direction: allowed.
        if !enforced {
            return RefVerdict::NotEnforced;
        }
        // 3. Some allow.
        for (i, rule) in &relevant {
            for (j, allow) in rule.direction(direction).allow.iter().enumerate() {
                if peer_rule_matches(allow, peer, protocol, port, named, &requires) {
                    return RefVerdict::Allowed { rule: *i, allow: j };
                }
            }
        }
        // 4. Default deny.
        RefVerdict::DefaultDenied
    }
}

// ---------------------------------------------------------------------------
// Readable output (failure messages and shrunk counterexamples)
// ---------------------------------------------------------------------------

fn show_labels(labels: &LabelSet) -> String {
    labels.to_strings().join(",")
}

fn show_ports(ports: &[NamedPort]) -> String {
    ports
        .iter()
        .map(|p| format!("{}={}/{}", p.name, p.port, protocol_name(p.protocol)))
        .collect::<Vec<_>>()
        .join(",")
}

fn show_ident(i: &Ident) -> String {
    let kind = match &i.kind {
        IdentityKind::Reserved => "reserved".to_string(),
        IdentityKind::Endpoint => "endpoint".to_string(),
        IdentityKind::Cidr(p) => format!("cidr {p}"),
        IdentityKind::Node => "node".to_string(),
    };
    let mut s = format!("id {} ({kind}) [{}]", i.id, show_labels(&i.labels));
    if !i.named_ports.is_empty() {
        let _ = write!(s, " ports [{}]", show_ports(&i.named_ports));
    }
    s
}

fn show_peer(p: &Peer) -> String {
    match p {
        Peer::Any => "any".into(),
        Peer::Endpoints(sel) => format!("endpoints{{{sel}}}").replace("{{}}", "{}"),
        Peer::Entity(e) => format!("entity:{}", e.name()),
        Peer::Service(svc) => format!("service:{svc}"),
        Peer::Nodes(sel) => format!("nodes{{{sel}}}").replace("{{}}", "{}"),
        Peer::Fqdn(m) => format!("fqdn:{m}"),
        Peer::Cidr(c) if c.except.is_empty() => format!("cidr:{}", c.cidr),
        Peer::Cidr(c) => format!(
            "cidr:{} except {}",
            c.cidr,
            c.except.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(",")
        ),
    }
}

fn show_l4(l: &L4) -> String {
    let ports = match &l.ports {
        PortMatch::Range(lo, hi) if lo == hi => lo.to_string(),
        PortMatch::Range(lo, hi) => format!("{lo}-{hi}"),
        PortMatch::Named(n) => format!("named:{n}"),
    };
    format!("{}/{ports}", protocol_name(l.protocol))
}

fn show_peer_rule(r: &PeerRule) -> String {
    let peers: Vec<String> = r.peers.iter().map(show_peer).collect();
    let l4: Vec<String> = r.l4.iter().map(show_l4).collect();
    format!("peers [{}] l4 [{}]", peers.join(", "), l4.join(", "))
}

fn show_rule(pos: usize, r: &Rule) -> String {
    let mut s = format!("rule[{pos}] subject {}\n", r.subject);
    for d in [Direction::Ingress, Direction::Egress] {
        let dr = r.direction(d);
        if !dr.present
            && !dr.default_deny
            && dr.allow.is_empty()
            && dr.deny.is_empty()
            && dr.requires.is_empty()
        {
            continue;
        }
        let _ = write!(s, "  {}: present={} default_deny={}", d.as_str(), dr.present, dr.default_deny);
        if !dr.requires.is_empty() {
            let req: Vec<String> = dr.requires.iter().map(|r| r.to_string()).collect();
            let _ = write!(s, " requires [{}]", req.join("; "));
        }
        s.push('\n');
        for a in &dr.allow {
            let _ = writeln!(s, "    allow {}", show_peer_rule(a));
        }
        for a in &dr.deny {
            let _ = writeln!(s, "    deny  {}", show_peer_rule(a));
        }
    }
    s
}

fn show_rules(rules: &[Rule]) -> String {
    rules.iter().enumerate().map(|(i, r)| show_rule(i, r)).collect()
}

fn show_entries(policy: &EndpointPolicy, direction: Direction, peer: u32) -> String {
    let mut s = format!(
        "  ingress_enforced={} egress_enforced={}\n",
        policy.ingress_enforced, policy.egress_enforced
    );
    for (k, e) in policy.entries.iter().filter(|(k, _)| k.direction == direction) {
        let mark = if k.identity == peer || k.identity == 0 { "*" } else { " " };
        let origins: Vec<String> = e.origins.iter().map(|o| o.to_string()).collect();
        let _ = writeln!(
            s,
            " {mark} id {} {}/{}/{} -> {} ({})",
            k.identity,
            protocol_name(k.protocol),
            k.port,
            k.port_prefix,
            if e.deny { "DENY" } else { "allow" },
            origins.join("; ")
        );
    }
    s
}

impl fmt::Debug for Case {
    /// The shrunk counterexample proptest prints: compact, not derive(Debug).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nidentities (reserved 1..=10 omitted):")?;
        for i in self.identities.iter().filter(|i| i.kind != IdentityKind::Reserved) {
            writeln!(f, "  {}", show_ident(i))?;
        }
        writeln!(f, "rules:\n{}", show_rules(&self.rules))?;
        writeln!(f, "probes:")?;
        for p in &self.probes {
            let (s, peer) = self.probe_idents(p);
            writeln!(
                f,
                "  {} subject {} peer {} {}/{}",
                p.direction.as_str(),
                s.id,
                peer.id,
                protocol_name(p.protocol),
                p.port
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

const KEYS: [&str; 3] = ["app", "tier", "env"];
const VALUES: [&str; 3] = ["a", "b", "c"];
const NS_KEY: &str = "io.kubernetes.pod.namespace";
const NAMESPACES: [&str; 2] = ["x", "y"];

fn prefix(a: u8, b: u8, c: u8, d: u8, len: u8) -> Prefix {
    Prefix::new(u32::from_be_bytes([a, b, c, d]), len)
}

/// Prefixes CIDR identities stand for.
fn identity_prefixes() -> Vec<Prefix> {
    vec![
        prefix(10, 0, 0, 0, 8),
        prefix(10, 1, 0, 0, 16),
        prefix(10, 1, 2, 0, 24),
        prefix(10, 1, 2, 3, 32),
        prefix(192, 168, 0, 0, 16),
        prefix(172, 16, 0, 0, 12),
    ]
}

/// Prefixes CIDR rules and their exceptions name.
fn rule_prefixes() -> Vec<Prefix> {
    vec![
        prefix(0, 0, 0, 0, 0),
        prefix(10, 0, 0, 0, 8),
        prefix(10, 1, 0, 0, 16),
        prefix(10, 1, 2, 0, 24),
        prefix(10, 1, 2, 3, 32),
        prefix(192, 168, 0, 0, 16),
        prefix(192, 168, 1, 0, 24),
    ]
}

fn named_port_options() -> Vec<NamedPort> {
    let np = |name: &str, port, protocol| NamedPort { name: name.into(), port, protocol };
    vec![
        np("http", 80, PROTO_TCP),
        np("http", 8080, PROTO_TCP),
        np("dns", 53, PROTO_UDP),
        np("dns", 53, PROTO_TCP),
    ]
}

fn endpoint_labels() -> impl Strategy<Value = LabelSet> {
    (
        vec(proptest::option::of(select(VALUES.to_vec())), KEYS.len()),
        select(NAMESPACES.to_vec()),
        // Now and then a label of another source, so `k8s:` vs any-source
        // requirements differ.
        proptest::option::weighted(0.15, (select(KEYS.to_vec()), select(VALUES.to_vec()))),
    )
        .prop_map(|(values, ns, extra)| {
            let mut labels: Vec<Label> =
                KEYS.iter().zip(values).filter_map(|(k, v)| v.map(|v| Label::new("k8s", k, v))).collect();
            labels.push(Label::new("k8s", NS_KEY, ns));
            if let Some((k, v)) = extra {
                labels.push(Label::new("container", k, v));
            }
            LabelSet::from_labels(labels)
        })
}

fn universe_strategy() -> impl Strategy<Value = Vec<Ident>> {
    let endpoint = (endpoint_labels(), subsequence(named_port_options(), 0..=2));
    // Nodes carry the same keys and values as endpoints, under their own
    // source: selectors without a source must still tell them apart.
    let node = vec((select(KEYS.to_vec()), select(VALUES.to_vec())), 0..=2);
    (vec(endpoint, 3..=8), vec(select(identity_prefixes()), 0..=3), vec(node, 0..=2)).prop_map(
        |(endpoints, cidrs, nodes)| {
            let mut out: Vec<Ident> = twill_identity::RESERVED
                .iter()
                .map(|(id, name)| Ident {
                    id: *id,
                    labels: LabelSet::from_labels([Label::new("reserved", name, "")]),
                    kind: IdentityKind::Reserved,
                    named_ports: vec![],
                })
                .collect();
            for (i, (labels, named_ports)) in endpoints.into_iter().enumerate() {
                out.push(Ident {
                    id: FIRST_ENDPOINT_ID + i as u32,
                    labels,
                    kind: IdentityKind::Endpoint,
                    named_ports,
                });
            }
            for (i, p) in cidrs.into_iter().enumerate() {
                out.push(Ident {
                    id: FIRST_CIDR_ID + i as u32,
                    labels: LabelSet::from_labels([Label::new("cidr", &p.to_string(), "")]),
                    kind: IdentityKind::Cidr(p),
                    named_ports: vec![],
                });
            }
            for (i, labels) in nodes.into_iter().enumerate() {
                let labels = labels.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                out.push(Ident {
                    id: FIRST_NODE_ID + i as u32,
                    labels: twill_policy::resolve::node_labels(&labels),
                    kind: IdentityKind::Node,
                    named_ports: vec![],
                });
            }
            out
        },
    )
}

fn values_for(key: &str) -> Vec<String> {
    let pool: &[&str] = if key == NS_KEY { &NAMESPACES } else { &VALUES };
    pool.iter().map(|s| s.to_string()).collect()
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let keys: Vec<&'static str> = KEYS.iter().copied().chain([NS_KEY]).collect();
    let label_req = (
        select(keys),
        prop_oneof![4 => Just(None), 4 => Just(Some("k8s".to_string())), 1 => Just(Some("container".to_string()))],
        0..4u8,
        any::<Index>(),
        any::<bool>(),
    )
        .prop_map(|(key, source, op, v, two)| {
            let pool = values_for(key);
            let first = v.index(pool.len());
            let mut vals = vec![pool[first].clone()];
            if two {
                vals.push(pool[(first + 1) % pool.len()].clone());
            }
            let operator = match op {
                0 => Operator::In(vals),
                1 => Operator::NotIn(vals),
                2 => Operator::Exists,
                _ => Operator::DoesNotExist,
            };
            Requirement { source, key: key.to_string(), operator }
        });
    let reserved_names: Vec<&'static str> = twill_identity::RESERVED.iter().map(|(_, n)| *n).collect();
    let reserved_req = select(reserved_names).prop_map(|name| Requirement {
        source: Some("reserved".into()),
        key: name.into(),
        operator: Operator::In(vec![String::new()]),
    });
    prop_oneof![9 => label_req, 1 => reserved_req]
}

fn selector() -> impl Strategy<Value = Selector> {
    vec(requirement(), 0..=2).prop_map(|requirements| Selector { requirements })
}

fn peer() -> impl Strategy<Value = Peer> {
    let entities: Vec<Entity> = Entity::NAMES.iter().map(|(_, e)| *e).collect();
    let cidr = (select(rule_prefixes()), vec(select(rule_prefixes()), 0..=1))
        .prop_map(|(cidr, except)| Peer::Cidr(CidrPeer { cidr, except }));
    prop_oneof![
        2 => Just(Peer::Any),
        4 => selector().prop_map(Peer::Endpoints),
        3 => select(entities).prop_map(Peer::Entity),
        2 => cidr,
        1 => selector().prop_map(Peer::Nodes),
    ]
}

fn port_range() -> impl Strategy<Value = (u16, u16)> {
    prop_oneof![
        (75..=90u16).prop_map(|p| (p, p)),
        (75..=90u16, 75..=90u16).prop_map(|(a, b)| (a.min(b), a.max(b))),
        // Ranges that cross power-of-two boundaries, and a few classics.
        select(vec![
            (79, 81),
            (60, 70),
            (64, 127),
            (63, 64),
            (76, 95),
            (0, 79),
            (81, 65535),
            (0, 65535),
            (53, 53),
            (8080, 8080),
        ]),
    ]
}

fn l4() -> impl Strategy<Value = L4> {
    let protocols = vec![PROTO_TCP, PROTO_UDP, PROTO_SCTP];
    prop_oneof![
        2 => Just(L4::any()),
        2 => select(vec![(79u16, 81u16), (75, 90), (60, 70), (80, 80), (0, 79), (3, 8)])
            .prop_map(|(lo, hi)| L4 { protocol: PROTO_ANY, ports: PortMatch::Range(lo, hi), l7: None }),
        6 => (select(protocols), port_range()).prop_map(|(protocol, (lo, hi))| L4 { protocol, ports: PortMatch::Range(lo, hi), l7: None }),
        2 => select(vec![(0u16, 0u16), (8, 8), (3, 3), (0, 8)])
            .prop_map(|(lo, hi)| L4 { protocol: PROTO_ICMP, ports: PortMatch::Range(lo, hi), l7: None }),
        2 => (select(vec![PROTO_ANY, PROTO_TCP, PROTO_UDP]), select(vec!["http", "dns"]))
            .prop_map(|(protocol, name)| L4 { protocol, ports: PortMatch::Named(name.into()), l7: None }),
    ]
}

fn peer_rule() -> impl Strategy<Value = PeerRule> {
    (prop_oneof![1 => Just(vec![]), 12 => vec(peer(), 1..=2)], vec(l4(), 0..=2))
        .prop_map(|(peers, l4)| PeerRule { peers, l4, dns: vec![] })
}

fn direction_rules() -> impl Strategy<Value = DirectionRules> {
    (
        // Biased towards sections that are there and enforce, so fewer
        // tuples end up "not enforced" (allowed without looking at rules).
        proptest::bool::weighted(0.6),
        proptest::bool::weighted(0.65),
        vec(peer_rule(), 0..=2),
        prop_oneof![3 => Just(vec![]), 2 => vec(peer_rule(), 1..=2)],
        prop_oneof![4 => Just(vec![]), 1 => vec(selector(), 1..=1)],
    )
        .prop_map(|(present, default_deny, allow, deny, requires)| DirectionRules {
            present,
            default_deny,
            allow,
            deny,
            requires,
        })
}

fn rules_strategy() -> impl Strategy<Value = Vec<Rule>> {
    vec((selector(), direction_rules(), direction_rules()), 1..=4).prop_map(|rules| {
        rules
            .into_iter()
            .enumerate()
            .map(|(i, (subject, ingress, egress))| Rule {
                policy: PolicyKey {
                    kind: "CiliumNetworkPolicy".into(),
                    namespace: Some("x".into()),
                    name: format!("p{i}"),
                },
                index: 0,
                subject,
                ingress,
                egress,
            })
            .collect()
    })
}

/// Probe protocols: mostly TCP, since most rules are about it; 47 (GRE)
/// only ever matches "any protocol" rules.
fn probe_protocol() -> impl Strategy<Value = u8> {
    prop_oneof![
        1 => Just(PROTO_ICMP),
        4 => Just(PROTO_TCP),
        2 => Just(PROTO_UDP),
        1 => Just(PROTO_SCTP),
        1 => Just(47u8),
    ]
}

/// Probe ports: mostly around the rules' ranges (75..=90), the named
/// ports' numbers (53, 80, 8080), and a few edges.
fn probe_port() -> impl Strategy<Value = u16> {
    prop_oneof![
        6 => 75..=90u16,
        3 => select(vec![53u16, 80, 8080]),
        1 => select(vec![0u16, 65535, 64, 70]),
    ]
}

fn probe() -> impl Strategy<Value = Probe> {
    let icmp_type = select(vec![0u16, 3, 8, 11]);
    (any::<bool>(), any::<Index>(), any::<Index>(), probe_protocol(), probe_port(), icmp_type).prop_map(
        |(ingress, subject, peer, protocol, port, icmp_type)| Probe {
            direction: if ingress { Direction::Ingress } else { Direction::Egress },
            subject,
            peer,
            protocol,
            // For ICMP the "port" is the ICMP type.
            port: if protocol == PROTO_ICMP { icmp_type } else { port },
        },
    )
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (universe_strategy(), rules_strategy(), vec(probe(), MIN_PROBES..=MAX_PROBES))
        .prop_map(|(identities, rules, probes)| Case { identities, rules, probes })
}

// ---------------------------------------------------------------------------
// The property
// ---------------------------------------------------------------------------

/// Checks every probe of one case; the first disagreement fails the case
/// with the rules, the tuple, both verdicts and the resolver's entries.
fn check_case(case: &Case, stats: &Stats) -> Result<(), TestCaseError> {
    let universe = case.universe();
    let peer_ports = |id: u32| case.named_ports_of(id);
    // One resolution per subject endpoint.
    let mut policies: BTreeMap<u32, EndpointPolicy> = BTreeMap::new();
    for probe in &case.probes {
        let (subject, peer) = case.probe_idents(probe);
        let policy = policies.entry(subject.id).or_insert_with(|| {
            let s = Subject { labels: &subject.labels, named_ports: &subject.named_ports };
            resolve(&case.rules, &universe, &s, &peer_ports)
        });
        let got = policy.lookup(probe.direction, peer.id, probe.protocol, probe.port);
        let want =
            reference::evaluate(&case.rules, subject, probe.direction, peer, probe.protocol, probe.port);
        stats.record(&want);
        if got.allowed() != want.allowed() {
            return Err(TestCaseError::fail(format!(
                "resolver and reference disagree\n\
                 tuple: {} subject {} peer {} {}/{}\n\
                 subject: {}\npeer: {}\n\
                 resolver: {:?}\nreference: {:?}\n\
                 rules:\n{}\
                 resolver entries ({}; * = looked up):\n{}",
                probe.direction.as_str(),
                subject.id,
                peer.id,
                protocol_name(probe.protocol),
                probe.port,
                show_ident(subject),
                show_ident(peer),
                got,
                want,
                show_rules(&case.rules),
                probe.direction.as_str(),
                show_entries(policy, probe.direction, peer.id),
            )));
        }
    }
    Ok(())
}

/// The case with only the probes on which resolver and reference
/// disagree, for a short counterexample.
fn only_failing_probes(case: &Case) -> Case {
    let probes = case
        .probes
        .iter()
        .filter(|p| {
            let single = Case { probes: vec![(*p).clone()], ..case.clone() };
            check_case(&single, &Stats::default()).is_err()
        })
        .cloned()
        .collect();
    Case { probes, ..case.clone() }
}

/// How many comparisons ran, and which branch of the reference decided
/// them (printed with TWILL_PROPERTY_STATS=1, to check the generators
/// exercise every branch).
#[derive(Default)]
struct Stats {
    comparisons: AtomicUsize,
    denied: AtomicUsize,
    not_enforced: AtomicUsize,
    allowed: AtomicUsize,
    default_denied: AtomicUsize,
}

impl Stats {
    fn record(&self, v: &reference::RefVerdict) {
        use reference::RefVerdict::*;
        self.comparisons.fetch_add(1, Ordering::Relaxed);
        let counter = match v {
            Denied { .. } => &self.denied,
            NotEnforced => &self.not_enforced,
            Allowed { .. } => &self.allowed,
            DefaultDenied => &self.default_denied,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn resolver_matches_reference() {
    // PROPTEST_CASES overrides the number of policy sets, for longer runs.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(CASES);
    let config = Config {
        cases,
        // Don't write regression files next to the sources.
        failure_persistence: None,
        ..Config::default()
    };
    let stats = Stats::default();
    let mut runner = TestRunner::new(config);
    match runner.run(&case_strategy(), |case| check_case(&case, &stats)) {
        Ok(()) => {}
        Err(TestError::Fail(reason, minimal)) => {
            panic!(
                "{reason}\n\nminimal failing case (disagreeing probes only):{:?}",
                only_failing_probes(&minimal)
            )
        }
        Err(e) => panic!("{e}"),
    }
    let n = stats.comparisons.load(Ordering::Relaxed);
    assert!(n >= MIN_COMPARISONS.min(cases as usize * MIN_PROBES), "only {n} comparisons ran");
    if std::env::var_os("TWILL_PROPERTY_STATS").is_some() {
        let get = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        eprintln!(
            "{n} comparisons: denied by rule {}, not enforced {}, allowed by rule {}, default denied {}",
            get(&stats.denied),
            get(&stats.not_enforced),
            get(&stats.allowed),
            get(&stats.default_denied)
        );
    }
}

// ---------------------------------------------------------------------------
// Sanity checks of the reference itself (so a wrong reference can't hide
// behind a wrong resolver making the same mistake).
// ---------------------------------------------------------------------------

#[test]
fn reference_prefix_and_l4_basics() {
    use reference::*;
    assert!(prefix_contains(&prefix(10, 0, 0, 0, 8), &prefix(10, 1, 2, 0, 24)));
    assert!(!prefix_contains(&prefix(10, 1, 2, 0, 24), &prefix(10, 0, 0, 0, 8)));
    assert!(prefix_contains(&prefix(0, 0, 0, 0, 0), &prefix(192, 168, 0, 0, 16)));
    assert!(!prefix_contains(&prefix(10, 1, 0, 0, 16), &prefix(192, 168, 0, 0, 16)));

    let any_range = L4 { protocol: PROTO_ANY, ports: PortMatch::Range(79, 81), l7: None };
    assert!(l4_matches(&any_range, PROTO_SCTP, 80, &[]));
    assert!(!l4_matches(&any_range, PROTO_ICMP, 80, &[]));
    assert!(l4_matches(&L4::any(), 47, 0, &[]));
    let http = L4 { protocol: PROTO_ANY, ports: PortMatch::Named("http".into()), l7: None };
    let ports = named_port_options();
    assert!(l4_matches(&http, PROTO_TCP, 8080, &ports));
    assert!(!l4_matches(&http, PROTO_UDP, 80, &ports));
    let dns_udp = L4 { protocol: PROTO_UDP, ports: PortMatch::Named("dns".into()), l7: None };
    assert!(l4_matches(&dns_udp, PROTO_UDP, 53, &ports));
    assert!(!l4_matches(&dns_udp, PROTO_TCP, 53, &ports));
}

/// The smallest disagreement the property found, kept as a fixed case:
/// an egress rule to any peer (`Peer::Any`, and `entity: all`, which is
/// the same key) on a *named* port. The reference matches it against the
/// peer's named ports; the resolver writes it for identity 0, whose named
/// ports are empty, so it allows (or denies) nothing.
#[test]
fn egress_named_port_towards_any_peer() {
    let endpoint = |id: u32, tier: &str, named_ports: Vec<NamedPort>| Ident {
        id,
        labels: LabelSet::from_labels([Label::new("k8s", NS_KEY, "x"), Label::new("k8s", "tier", tier)]),
        kind: IdentityKind::Endpoint,
        named_ports,
    };
    let dns = NamedPort { name: "dns".into(), port: 53, protocol: PROTO_UDP };
    let server = endpoint(256, "a", vec![dns]);
    let client = endpoint(257, "b", vec![]);
    let world = Ident {
        id: 2,
        labels: LabelSet::from_labels([Label::new("reserved", "world", "")]),
        kind: IdentityKind::Reserved,
        named_ports: vec![],
    };
    let named_dns = L4 { protocol: PROTO_UDP, ports: PortMatch::Named("dns".into()), l7: None };
    for (verb, any_peer) in [("allow", Peer::Any), ("allow", Peer::Entity(Entity::All)), ("deny", Peer::Any)]
    {
        let peer_rule = PeerRule { peers: vec![any_peer.clone()], l4: vec![named_dns.clone()], dns: vec![] };
        let mut egress = DirectionRules { present: true, default_deny: true, ..Default::default() };
        if verb == "allow" {
            egress.allow.push(peer_rule);
        } else {
            // Everything allowed, except the named port.
            egress.allow.push(PeerRule { peers: vec![Peer::Any], l4: vec![], dns: vec![] });
            egress.deny.push(peer_rule);
        }
        let rules = vec![Rule {
            policy: PolicyKey {
                kind: "CiliumNetworkPolicy".into(),
                namespace: Some("x".into()),
                name: "p".into(),
            },
            index: 0,
            subject: Selector::default(),
            ingress: DirectionRules::default(),
            egress,
        }];
        let case =
            Case { identities: vec![world.clone(), server.clone(), client.clone()], rules, probes: vec![] };
        let universe = case.universe();
        let peer_ports = |id: u32| case.named_ports_of(id);
        let subject = Subject { labels: &client.labels, named_ports: &client.named_ports };
        let policy = resolve(&case.rules, &universe, &subject, &peer_ports);
        for peer in [&server, &client, &world] {
            let want = reference::evaluate(&case.rules, &client, Direction::Egress, peer, PROTO_UDP, 53);
            let got = policy.lookup(Direction::Egress, peer.id, PROTO_UDP, 53);
            assert_eq!(
                got.allowed(),
                want.allowed(),
                "{verb} egress to {} UDP/named:dns, client 257 -> peer {} UDP/53\n\
                 resolver: {got:?}\nreference: {want:?}\nresolver entries:\n{}",
                show_peer(&any_peer),
                peer.id,
                show_entries(&policy, Direction::Egress, peer.id)
            );
        }
    }
}
