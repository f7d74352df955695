//! Resolution: from rules and the identities that exist, to the policy
//! map entries of one endpoint.
//!
//! The map is an LPM trie per endpoint and direction, keyed by the peer
//! identity (0 = any peer), then protocol (0 = any), then destination port
//! (a range becomes a few port prefixes). The datapath does two longest-
//! prefix lookups per new connection, one with the peer's identity and one
//! with identity 0, and combines them: a deny from either wins, else an
//! allow from either allows, else the packet is dropped by default deny.
//! [`EndpointPolicy::lookup`] is that same procedure in user space.
//!
//! Deny precedence inside one identity key is settled here: an allow
//! entry covered by a less specific deny is written as a deny, so the
//! longest-prefix match is always the right answer.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use twill_identity::LabelSet;

use crate::l7::L7Rules;
use crate::l7_dns::DnsMatch;
use crate::model::*;
use crate::selector::Selector;
use crate::services::{CatalogService, ServiceBackends, ServiceCatalog};

/// What kind of identity a number stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKind {
    Reserved,
    Endpoint,
    /// A CIDR identity, for addresses outside the cluster within a prefix
    /// some policy mentions.
    Cidr(Prefix),
    /// A node's identity (`reserved:remote-node` plus its labels), which
    /// its addresses carry on every other node.
    Node,
}

#[derive(Debug, Clone)]
pub struct KnownIdentity {
    pub id: u32,
    pub labels: LabelSet,
    pub kind: IdentityKind,
}

/// Reserved identity numbers (Cilium's).
pub mod reserved {
    pub const HOST: u32 = 1;
    pub const WORLD: u32 = 2;
    pub const UNMANAGED: u32 = 3;
    pub const HEALTH: u32 = 4;
    pub const INIT: u32 = 5;
    pub const REMOTE_NODE: u32 = 6;
    pub const KUBE_APISERVER: u32 = 7;
    pub const INGRESS: u32 = 8;
    pub const WORLD_IPV4: u32 = 9;
    pub const WORLD_IPV6: u32 = 10;
}

/// The label source of node labels in node identities, Cilium's
/// `LabelSourceNode`.
pub const NODE_LABEL_SOURCE: &str = "node";

/// The labels of a node's identity, as Cilium gives them with
/// `--enable-node-selector-labels`: `reserved:remote-node` and each of the
/// node's labels under the `node:` source.
pub fn node_labels(labels: &std::collections::BTreeMap<String, String>) -> LabelSet {
    LabelSet::from_labels(
        std::iter::once(twill_identity::Label::new("reserved", "remote-node", ""))
            .chain(labels.iter().map(|(k, v)| twill_identity::Label::new(NODE_LABEL_SOURCE, k, v))),
    )
}

/// Every identity policy can refer to, with each selector's matches
/// cached: with a warm cache, resolving an endpoint costs a pass over the
/// rules, not over rules times identities.
pub struct Universe {
    identities: BTreeMap<u32, KnownIdentity>,
    /// Endpoint and reserved identities by the hash of one of their labels
    /// (key and value, any source), so a selector with an `In` requirement
    /// looks at a handful of candidates instead of every identity.
    by_label: HashMap<u64, Vec<u32>>,
    cache: std::sync::Mutex<HashMap<Selector, Arc<Vec<u32>>>>,
    /// The services `toServices` entries resolve against.
    services: ServiceCatalog,
    /// This node's labels as its node identity carries them elsewhere:
    /// a node selector that matches them selects `host` here.
    local_node: Option<LabelSet>,
    /// For each toFQDNs selector, the IPv4 addresses the FQDN cache has
    /// for it now (see [`crate::fqdn::FqdnCache::selections`]).
    fqdn: BTreeMap<DnsMatch, BTreeSet<u32>>,
}

fn label_hash(key: &str, value: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

impl Universe {
    pub fn new(identities: impl IntoIterator<Item = KnownIdentity>) -> Self {
        let identities: BTreeMap<u32, KnownIdentity> = identities.into_iter().map(|i| (i.id, i)).collect();
        let mut by_label: HashMap<u64, Vec<u32>> = HashMap::new();
        for i in identities.values().filter(|i| !matches!(i.kind, IdentityKind::Cidr(_))) {
            for label in i.labels.iter() {
                by_label.entry(label_hash(&label.key, &label.value)).or_default().push(i.id);
            }
        }
        Self {
            identities,
            by_label,
            cache: Default::default(),
            services: ServiceCatalog::default(),
            local_node: None,
            fqdn: BTreeMap::new(),
        }
    }

    /// The same identities, with the addresses toFQDNs selectors select.
    /// Each address needs a `/32` CIDR identity among the identities (as
    /// Cilium gives every learned IP one) for a rule to allow it.
    pub fn with_fqdn_selections(mut self, selections: BTreeMap<DnsMatch, BTreeSet<u32>>) -> Self {
        self.fqdn = selections;
        self
    }

    /// Identities of the addresses a toFQDNs selector selects now.
    pub fn fqdn(&self, selector: &DnsMatch) -> Vec<u32> {
        let Some(addrs) = self.fqdn.get(selector) else { return vec![] };
        self.cidr_ids().filter(|(_, p)| p.len == 32 && addrs.contains(&p.addr)).map(|(id, _)| id).collect()
    }

    /// The same identities, knowing the local node's labels (see
    /// [`node_labels`]), so that node selectors can pick `host`.
    pub fn with_local_node(mut self, labels: LabelSet) -> Self {
        self.local_node = Some(labels);
        self
    }

    /// The same identities, with the services `toServices` names.
    pub fn with_services(mut self, services: ServiceCatalog) -> Self {
        self.services = services;
        self
    }

    pub fn services(&self) -> &ServiceCatalog {
        &self.services
    }

    /// Identities that may match `selector`: those carrying the values of
    /// its most selective `In` requirement, or every identity if it has
    /// none. Hash collisions only add candidates; the full match decides.
    fn candidates(&self, selector: &Selector) -> Vec<u32> {
        let narrowest = selector
            .requirements
            .iter()
            .filter_map(|r| match &r.operator {
                crate::selector::Operator::In(values) => {
                    let lists: Vec<&Vec<u32>> =
                        values.iter().filter_map(|v| self.by_label.get(&label_hash(&r.key, v))).collect();
                    Some((lists.iter().map(|l| l.len()).sum::<usize>(), lists))
                }
                _ => None,
            })
            .min_by_key(|(n, _)| *n);
        match narrowest {
            Some((_, lists)) => {
                let mut ids: Vec<u32> = lists.into_iter().flatten().copied().collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            }
            None => self.identities.keys().copied().collect(),
        }
    }

    pub fn get(&self, id: u32) -> Option<&KnownIdentity> {
        self.identities.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &KnownIdentity> {
        self.identities.values()
    }

    /// Identities an endpoint selector picks. Reserved identities are only
    /// picked by selectors that name a `reserved:` label, CIDR identities
    /// never (Cilium reaches those through entities and CIDR rules).
    pub fn select(&self, selector: &Selector) -> Arc<Vec<u32>> {
        if let Some(hit) = self.cache.lock().expect("cache lock").get(selector) {
            return hit.clone();
        }
        let wants_reserved = selector.requirements.iter().any(|r| r.source.as_deref() == Some("reserved"));
        let ids: Vec<u32> = self
            .candidates(selector)
            .into_iter()
            .filter_map(|id| self.identities.get(&id))
            .filter(|i| match i.kind {
                IdentityKind::Endpoint => true,
                IdentityKind::Reserved => wants_reserved,
                // Node traffic is selected by node selectors only.
                IdentityKind::Cidr(_) | IdentityKind::Node => false,
            })
            .filter(|i| selector.matches(&i.labels))
            .map(|i| i.id)
            .collect();
        let ids = Arc::new(ids);
        self.cache.lock().expect("cache lock").insert(selector.clone(), ids.clone());
        ids
    }

    fn endpoint_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.identities.values().filter(|i| i.kind == IdentityKind::Endpoint).map(|i| i.id)
    }

    fn node_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.identities.values().filter(|i| i.kind == IdentityKind::Node).map(|i| i.id)
    }

    /// Identities a node selector picks: the nodes' identities it matches;
    /// remote-node (6), which nodes without an identity of their own (older
    /// agents) carry, when it matches a node without labels; and host when
    /// it matches this node.
    pub fn nodes(&self, selector: &Selector) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .candidates(selector)
            .into_iter()
            .filter_map(|id| self.identities.get(&id))
            .filter(|i| i.kind == IdentityKind::Node && selector.matches(&i.labels))
            .map(|i| i.id)
            .collect();
        if selector.matches(&node_labels(&std::collections::BTreeMap::new())) {
            ids.push(reserved::REMOTE_NODE);
        }
        if self.local_node.as_ref().is_some_and(|labels| selector.matches(labels)) {
            ids.push(reserved::HOST);
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn cidr_ids(&self) -> impl Iterator<Item = (u32, Prefix)> + '_ {
        self.identities.values().filter_map(|i| match i.kind {
            IdentityKind::Cidr(p) => Some((i.id, p)),
            _ => None,
        })
    }

    /// Identities an entity stands for; `None` means any peer.
    pub fn entity(&self, entity: Entity) -> Option<Vec<u32>> {
        use reserved::*;
        let world = || {
            let mut v = vec![WORLD, WORLD_IPV4];
            v.extend(self.cidr_ids().map(|(id, _)| id));
            v
        };
        Some(match entity {
            Entity::All => return None,
            Entity::World | Entity::WorldIpv4 => world(),
            Entity::WorldIpv6 => vec![WORLD_IPV6],
            Entity::Cluster => {
                let mut v = vec![HOST, UNMANAGED, HEALTH, INIT, REMOTE_NODE, KUBE_APISERVER, INGRESS];
                v.extend(self.endpoint_ids());
                v.extend(self.node_ids());
                v
            }
            Entity::Host => vec![HOST],
            Entity::RemoteNode => {
                let mut v = vec![REMOTE_NODE];
                v.extend(self.node_ids());
                v
            }
            Entity::Health => vec![HEALTH],
            Entity::Init => vec![INIT],
            Entity::Unmanaged => vec![UNMANAGED],
            Entity::KubeApiserver => vec![KUBE_APISERVER],
            Entity::Ingress => vec![INGRESS],
        })
    }

    /// Identities a CIDR peer selects: CIDR identities inside it (and not
    /// in an exception), plus the world identities if it covers everything.
    pub fn cidr(&self, peer: &CidrPeer) -> Vec<u32> {
        let mut v: Vec<u32> = self.cidr_ids().filter(|(_, p)| peer.selects(p)).map(|(id, _)| id).collect();
        if peer.cidr.len == 0 {
            v.extend([reserved::WORLD, reserved::WORLD_IPV4]);
        }
        v
    }

    /// Identities the current backends of the services a `toServices`
    /// entry names have: a selector service's endpoints (those that also
    /// meet `requires`, as for the endpoint selector Cilium translates it
    /// to), a selector-less service's backend addresses as the datapath
    /// sees them (the endpoint's identity where an endpoint has the
    /// address, and the address's /32 CIDR identity).
    pub fn service(&self, peer: &ServicePeer, requires: &[&Selector]) -> Vec<u32> {
        self.services.matching(peer).flat_map(|s| self.backends(s, requires)).collect()
    }

    /// Identities the current backends of one service have.
    pub fn backends(&self, service: &CatalogService, requires: &[&Selector]) -> Vec<u32> {
        match &service.backends {
            ServiceBackends::Selected(selector) => self.endpoints(selector, requires),
            ServiceBackends::Addresses(addresses) => addresses
                .iter()
                .flat_map(|a| {
                    let cidr = self.cidr(&CidrPeer { cidr: a.prefix(), except: vec![] });
                    a.endpoint_identity.into_iter().chain(cidr)
                })
                .collect(),
        }
    }

    /// Identities an endpoint selector picks that also meet every one of
    /// `requires` (fromRequires / toRequires).
    fn endpoints(&self, selector: &Selector, requires: &[&Selector]) -> Vec<u32> {
        self.select(selector)
            .iter()
            .copied()
            .filter(|id| {
                requires.is_empty()
                    || self.get(*id).is_some_and(|i| requires.iter().all(|r| r.matches(&i.labels)))
            })
            .collect()
    }

    /// Identities one peer of a rule stands for; 0 is any peer.
    pub fn peer(&self, peer: &Peer, requires: &[&Selector]) -> Vec<u32> {
        match peer {
            Peer::Any => vec![0],
            Peer::Endpoints(selector) => self.endpoints(selector, requires),
            Peer::Entity(entity) => self.entity(*entity).unwrap_or_else(|| vec![0]),
            Peer::Cidr(cidr) => self.cidr(cidr),
            Peer::Service(service) => self.service(service, requires),
            Peer::Nodes(selector) => self.nodes(selector),
            Peer::Fqdn(selector) => self.fqdn(selector),
        }
    }
}

/// A port an endpoint declares by name (`--port http=80/tcp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: u8,
}

/// The endpoint whose policy is being resolved.
pub struct Subject<'a> {
    pub labels: &'a LabelSet,
    pub named_ports: &'a [NamedPort],
}

/// One policy map key. `identity` 0 is any peer; `protocol` 0 is any
/// protocol (then the port is ignored); `port_prefix` is how many leading
/// bits of `port` matter (16: one port, 0: all ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MapKey {
    pub direction: Direction,
    pub identity: u32,
    pub protocol: u8,
    pub port: u16,
    pub port_prefix: u8,
}

impl MapKey {
    /// Prefix length over the (protocol, port) bits.
    pub fn l4_prefix_len(&self) -> u8 {
        if self.protocol == PROTO_ANY {
            0
        } else {
            8 + self.port_prefix
        }
    }

    fn l4_bits(&self) -> u32 {
        ((self.protocol as u32) << 16) | self.port as u32
    }

    /// Whether this key (same direction and identity) matches every
    /// packet `other` matches.
    pub fn covers(&self, other: &MapKey) -> bool {
        let (a, b) = (self.l4_prefix_len(), other.l4_prefix_len());
        if self.direction != other.direction || self.identity != other.identity || a > b {
            return false;
        }
        let mask = if a == 0 { 0 } else { u32::MAX << (24 - a as u32) } & 0x00ff_ffff;
        self.l4_bits() & mask == other.l4_bits() & mask
    }

    pub fn matches(&self, protocol: u8, port: u16) -> bool {
        let probe = MapKey { protocol, port, port_prefix: 16, ..*self };
        self.covers(&probe)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OriginKind {
    Allow,
    Deny,
    /// No rule enables default deny in this direction: all allowed.
    NotEnforced,
}

/// Why an entry exists: which rule of which policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub kind: OriginKind,
    pub policy: Option<PolicyKey>,
    pub rule: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.policy) {
            (OriginKind::NotEnforced, _) => write!(f, "no policy enforces this direction"),
            (kind, Some(p)) => {
                let verb = if *kind == OriginKind::Deny { "deny" } else { "allow" };
                write!(f, "{verb} rule {} of {p}", self.rule)
            }
            (_, None) => write!(f, "?"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MapEntry {
    pub deny: bool,
    pub origins: Origins,
    /// Allowed through the L7 proxy, which enforces these rules (the union
    /// of every rule allowing this key). Never set on a deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7Rules>,
}

/// The rules behind one entry, sorted, without duplicates: a set, kept in
/// a Vec. Nearly every entry has one or two origins; a BTreeSet allocates
/// a whole node (eleven Origins, about 1 KB) for the first, which made it
/// most of the memory of resolving a 10,000-entry policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "Vec<Origin>", into = "Vec<Origin>")]
pub struct Origins(Vec<Origin>);

impl Origins {
    /// Adds `origin` unless present; false if it was.
    pub fn insert(&mut self, origin: Origin) -> bool {
        match self.0.binary_search(&origin) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, origin);
                true
            }
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// In order.
    pub fn iter(&self) -> std::slice::Iter<'_, Origin> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<Origin>> for Origins {
    fn from(mut v: Vec<Origin>) -> Self {
        v.sort();
        v.dedup();
        Self(v)
    }
}

impl From<Origins> for Vec<Origin> {
    fn from(o: Origins) -> Self {
        o.0
    }
}

impl FromIterator<Origin> for Origins {
    fn from_iter<I: IntoIterator<Item = Origin>>(iter: I) -> Self {
        Vec::from_iter(iter).into()
    }
}

impl<'a> IntoIterator for &'a Origins {
    type Item = &'a Origin;
    type IntoIter = std::slice::Iter<'a, Origin>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Everything one endpoint's policy map holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndpointPolicy {
    pub entries: BTreeMap<MapKey, MapEntry>,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Allowed(BTreeSet<Origin>),
    /// Denied by a deny rule (Cilium drop reason 181).
    Denied(BTreeSet<Origin>),
    /// Denied because nothing allows it (Cilium drop reason 133).
    DefaultDenied,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        matches!(self, Verdict::Allowed(_))
    }
}

impl EndpointPolicy {
    /// The most specific entry for one identity key, as an LPM trie finds it.
    fn longest_match(
        &self,
        direction: Direction,
        identity: u32,
        protocol: u8,
        port: u16,
    ) -> Option<&MapEntry> {
        let mut candidates = Vec::with_capacity(18);
        for port_prefix in (0..=16u8).rev() {
            let mask = if port_prefix == 0 { 0 } else { u16::MAX << (16 - port_prefix) };
            candidates.push(MapKey { direction, identity, protocol, port: port & mask, port_prefix });
        }
        candidates.push(MapKey { direction, identity, protocol: PROTO_ANY, port: 0, port_prefix: 0 });
        candidates.into_iter().find_map(|k| self.entries.get(&k))
    }

    /// The verdict for a new connection, exactly as the datapath decides.
    pub fn lookup(&self, direction: Direction, peer: u32, protocol: u8, port: u16) -> Verdict {
        let specific = self.longest_match(direction, peer, protocol, port);
        let any = if peer == 0 { None } else { self.longest_match(direction, 0, protocol, port) };
        let hits: Vec<&MapEntry> = specific.into_iter().chain(any).collect();
        let collect = |deny: bool| -> BTreeSet<Origin> {
            hits.iter().filter(|e| e.deny == deny).flat_map(|e| e.origins.iter().cloned()).collect()
        };
        if hits.iter().any(|e| e.deny) {
            Verdict::Denied(collect(true))
        } else if !hits.is_empty() {
            Verdict::Allowed(collect(false))
        } else {
            Verdict::DefaultDenied
        }
    }

    /// The L7 rules a new allowed connection is proxied with, as the
    /// datapath picks them: the peer's own entry when it has one, else the
    /// "any peer" entry. None: not proxied (or not allowed).
    pub fn l7_rules(&self, direction: Direction, peer: u32, protocol: u8, port: u16) -> Option<&L7Rules> {
        if !self.lookup(direction, peer, protocol, port).allowed() {
            return None;
        }
        let specific = self.longest_match(direction, peer, protocol, port);
        let any = if peer == 0 { None } else { self.longest_match(direction, 0, protocol, port) };
        specific.or(any).and_then(|e| e.l7.as_ref())
    }

    fn insert(&mut self, key: MapKey, deny: bool, origin: Origin, l7: Option<&L7Rules>) {
        let entry = self.entries.entry(key).or_default();
        let fresh = entry.origins.is_empty();
        if deny && !entry.deny {
            // Deny wins over an allow with the same key, and never redirects.
            entry.deny = true;
            entry.origins.clear();
            entry.l7 = None;
        }
        if deny != entry.deny {
            return;
        }
        if !deny {
            // Cilium: L7 rules on one key are unioned; an allow without L7
            // rules on a key that has some allows every request, still
            // through the proxy so requests are visible.
            entry.l7 = match (fresh, entry.l7.take(), l7) {
                (true, _, given) => given.cloned(),
                (false, None, None) => None,
                (false, Some(mut have), Some(given)) => {
                    have.union(given);
                    Some(have)
                }
                (false, Some(mut rules), None) => {
                    rules.union(&L7Rules::allow_all(rules.parser()));
                    Some(rules)
                }
                (false, None, Some(given)) => {
                    let mut rules = given.clone();
                    rules.union(&L7Rules::allow_all(rules.parser()));
                    Some(rules)
                }
            };
        }
        entry.origins.insert(origin);
    }

    /// Rewrites allows covered by a less specific deny of the same
    /// identity into denies, so a longest-prefix match never lets a
    /// denied packet through.
    fn settle_denies(&mut self) {
        let denies: Vec<(MapKey, Origins)> =
            self.entries.iter().filter(|(_, e)| e.deny).map(|(k, e)| (*k, e.origins.clone())).collect();
        if denies.is_empty() {
            return;
        }
        for (key, entry) in self.entries.iter_mut().filter(|(_, e)| !e.deny) {
            if let Some((_, origins)) = denies.iter().find(|(d, _)| d.covers(key)) {
                entry.deny = true;
                entry.origins = origins.clone();
                entry.l7 = None;
            }
        }
    }
}

/// Splits an inclusive port range into aligned prefixes.
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (lo as u32, hi as u32);
    while lo <= hi {
        let mut size_bits = if lo == 0 { 16 } else { lo.trailing_zeros().min(16) };
        while lo + (1 << size_bits) - 1 > hi {
            size_bits -= 1;
        }
        out.push((lo as u16, 16 - size_bits as u8));
        lo += 1 << size_bits;
    }
    out
}

/// (protocol, port, prefix) triples for one L4 condition. `named` maps a
/// port name to the ports it stands for.
/// Ports a port name stands for, as (protocol, port) pairs.
type NamedPorts<'a> = dyn Fn(&str, u8) -> Vec<(u8, u16)> + 'a;

fn l4_keys(l4: &L4, named: &NamedPorts) -> Vec<(u8, u16, u8)> {
    let ranges: Vec<(u8, u16, u16)> = match &l4.ports {
        PortMatch::Range(0, u16::MAX) if l4.protocol == PROTO_ANY => return vec![(PROTO_ANY, 0, 0)],
        PortMatch::Range(lo, hi) => {
            let protocols = if l4.protocol == PROTO_ANY {
                vec![PROTO_TCP, PROTO_UDP, PROTO_SCTP]
            } else {
                vec![l4.protocol]
            };
            protocols.into_iter().map(|p| (p, *lo, *hi)).collect()
        }
        PortMatch::Named(name) => {
            named(name, l4.protocol).into_iter().map(|(p, port)| (p, port, port)).collect()
        }
    };
    ranges
        .into_iter()
        .flat_map(|(proto, lo, hi)| {
            port_prefixes(lo, hi).into_iter().map(move |(port, len)| (proto, port, len))
        })
        .collect()
}

fn named_lookup(ports: &[NamedPort], name: &str, protocol: u8) -> Vec<(u8, u16)> {
    ports
        .iter()
        .filter(|p| p.name == name && (protocol == PROTO_ANY || protocol == p.protocol))
        .map(|p| (p.protocol, p.port))
        .collect()
}

/// Resolves the policy of one endpoint. `peer_ports` gives the named
/// ports of peer identities, for egress rules that use port names.
pub fn resolve(
    rules: &[Rule],
    universe: &Universe,
    subject: &Subject,
    peer_ports: &dyn Fn(u32) -> Vec<NamedPort>,
) -> EndpointPolicy {
    let mut out = EndpointPolicy::default();
    let selecting: Vec<&Rule> = rules.iter().filter(|r| r.subject.matches(subject.labels)).collect();
    for direction in [Direction::Ingress, Direction::Egress] {
        let relevant: Vec<&Rule> = selecting
            .iter()
            .copied()
            .filter(|r| {
                let d = r.direction(direction);
                d.present || d.default_deny
            })
            .collect();
        let enforced = relevant.iter().any(|r| r.direction(direction).default_deny);
        match direction {
            Direction::Ingress => out.ingress_enforced = enforced,
            Direction::Egress => out.egress_enforced = enforced,
        }
        if !enforced {
            let origin = Origin { kind: OriginKind::NotEnforced, policy: None, rule: 0 };
            let key = MapKey { direction, identity: 0, protocol: PROTO_ANY, port: 0, port_prefix: 0 };
            out.insert(key, false, origin, None);
        }
        let requires: Vec<&Selector> =
            relevant.iter().flat_map(|r| r.direction(direction).requires.iter()).collect();
        for rule in &relevant {
            let d = rule.direction(direction);
            for (deny, peer_rules) in [(false, &d.allow), (true, &d.deny)] {
                let kind = if deny { OriginKind::Deny } else { OriginKind::Allow };
                let origin = Origin { kind, policy: Some(rule.policy.clone()), rule: rule.index };
                for peer_rule in peer_rules {
                    add_peer_rule(
                        &mut out, direction, peer_rule, deny, &origin, universe, subject, &requires,
                        peer_ports,
                    );
                }
            }
        }
    }
    out.settle_denies();
    out
}

#[allow(clippy::too_many_arguments)]
fn add_peer_rule(
    out: &mut EndpointPolicy,
    direction: Direction,
    rule: &PeerRule,
    deny: bool,
    origin: &Origin,
    universe: &Universe,
    subject: &Subject,
    requires: &[&Selector],
    peer_ports: &dyn Fn(u32) -> Vec<NamedPort>,
) {
    // Peer identities; 0 stands for "any peer".
    let peers: BTreeSet<u32> = rule.peers.iter().flat_map(|peer| universe.peer(peer, requires)).collect();
    let any_l4 = [L4::any()];
    let l4s: &[L4] = if rule.l4.is_empty() { &any_l4 } else { &rule.l4 };
    for peer in peers {
        for l4 in l4s {
            // Egress port names are the peer's. "Any peer" (identity 0) has
            // none, so a named port towards any peer is written per identity,
            // for every identity that declares the name.
            let identities: Vec<u32> =
                if direction == Direction::Egress && peer == 0 && matches!(l4.ports, PortMatch::Named(_)) {
                    universe.iter().map(|i| i.id).collect()
                } else {
                    vec![peer]
                };
            for identity in identities {
                // Ingress names the subject's ports; egress the peer's.
                let peer_named;
                let names: &[NamedPort] = match direction {
                    Direction::Ingress => subject.named_ports,
                    Direction::Egress => {
                        peer_named = if identity == 0 { Vec::new() } else { peer_ports(identity) };
                        &peer_named
                    }
                };
                let named = |name: &str, protocol: u8| named_lookup(names, name, protocol);
                for (protocol, port, port_prefix) in l4_keys(l4, &named) {
                    let key = MapKey { direction, identity, protocol, port, port_prefix };
                    out.insert(key, deny, origin.clone(), l4.l7.as_ref());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_become_aligned_prefixes() {
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(port_prefixes(8080, 8083), vec![(8080, 14)]);
        assert_eq!(port_prefixes(79, 81), vec![(79, 16), (80, 15)]);
        assert_eq!(port_prefixes(65535, 65535), vec![(65535, 16)]);
        // Every port in a range is covered exactly once.
        for (lo, hi) in [(1u16, 1000u16), (1023, 1025), (30000, 65535)] {
            let prefixes = port_prefixes(lo, hi);
            let covered: u32 = prefixes.iter().map(|(_, len)| 1u32 << (16 - len)).sum();
            assert_eq!(covered, (hi - lo) as u32 + 1);
        }
    }

    #[test]
    fn covers_follows_prefix_bits() {
        let any = MapKey { direction: Direction::Ingress, identity: 5, protocol: 0, port: 0, port_prefix: 0 };
        let tcp = MapKey { protocol: PROTO_TCP, ..any };
        let tcp80 = MapKey { port: 80, port_prefix: 16, ..tcp };
        let tcp_80_81 = MapKey { port: 80, port_prefix: 15, ..tcp };
        assert!(any.covers(&tcp80) && tcp.covers(&tcp80) && tcp_80_81.covers(&tcp80));
        assert!(!tcp80.covers(&tcp_80_81));
        assert!(!MapKey { protocol: PROTO_UDP, ..tcp }.covers(&tcp80));
        assert!(tcp80.matches(PROTO_TCP, 80) && !tcp80.matches(PROTO_TCP, 81));
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod behaviour_tests;
