//! Policy in the agent: storing imported policies, resolving them for
//! every local endpoint, and bringing the kernel's policy map in line by
//! diff.
//!
//! Updates keep connections that are allowed before and after alive: new
//! and changed entries are written first, stale ones removed last, so
//! every intermediate map state is the union of old and new, which denies
//! nothing both allow (a deny entry present in either means the
//! connection was not allowed by that version). Established connections
//! never consult the policy map at all: conntrack lets them through, so a
//! new deny stops new connections at once and leaves established ones
//! until they close or their conntrack entry expires — as Cilium does,
//! because dropping mid-stream would break applications in ways that
//! refusing a connection does not.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use tracing::{debug, info};
use twill_api as api;
use twill_datapath::PolicyEntry;
use twill_identity::{Label, LabelSet};
use twill_policy::{
    model::{
        protocol_name, Direction, Peer, Policy, PolicyKey, Prefix, PROTO_ICMP, PROTO_SCTP, PROTO_TCP,
        PROTO_UDP,
    },
    resolve::{
        resolve, EndpointPolicy, IdentityKind, KnownIdentity, MapKey, NamedPort, Subject, Universe, Verdict,
    },
};
use twill_store::StoreExt;

use crate::{
    agent::Agent,
    error::{AgentError, Result},
    records::*,
};

/// Node-local identities for CIDRs start here (Cilium's local scope).
pub const FIRST_CIDR_IDENTITY: u32 = 1 << 24;

const POLICIES_PREFIX: &str = "policies/";
const REVISION_KEY: &str = "policy-revision";

fn policy_store_key(key: &PolicyKey) -> String {
    format!("{POLICIES_PREFIX}{}/{}/{}", key.kind, key.namespace.as_deref().unwrap_or("_"), key.name)
}

/// The in-memory side of policy: what is imported and what each
/// endpoint's map holds right now.
#[derive(Default)]
pub struct PolicyState {
    pub policies: Vec<Policy>,
    pub revision: u64,
    /// Per endpoint ID: the entries in the kernel map and whether each denies.
    pub realized: BTreeMap<u16, BTreeMap<PolicyEntry, bool>>,
    /// Per endpoint ID: the revision its map reflects.
    pub endpoint_revision: BTreeMap<u16, u64>,
    pub enforced: BTreeMap<u16, (bool, bool)>,
    pub cidr_identities: BTreeMap<Prefix, u32>,
}

fn to_entry(endpoint_id: u16, key: &MapKey) -> PolicyEntry {
    PolicyEntry {
        endpoint_id,
        direction: match key.direction {
            Direction::Ingress => twill_abi::DIR_INGRESS,
            Direction::Egress => twill_abi::DIR_EGRESS,
        },
        identity: key.identity,
        protocol: key.protocol,
        port: key.port,
        l4_prefix: key.l4_prefix_len(),
    }
}

/// Parses NAME=PORT/PROTOCOL.
pub fn parse_named_port(text: &str) -> Result<NamedPort> {
    let bad = |why: &str| {
        AgentError::Invalid(format!("port {text:?}: {why} (expected NAME=PORT/PROTOCOL, e.g. http=80/tcp)"))
    };
    let (name, rest) = text.split_once('=').ok_or_else(|| bad("missing '='"))?;
    if !twill_policy::convert::is_port_name(name) {
        return Err(bad("the name must be 1-15 lowercase letters, digits or '-' with at least one letter"));
    }
    let (port, protocol) = rest.split_once('/').unwrap_or((rest, "tcp"));
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port must be 1-65535"))?;
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "sctp" => PROTO_SCTP,
        _ => return Err(bad("the protocol must be tcp, udp or sctp")),
    };
    Ok(NamedPort { name: name.into(), port, protocol })
}

pub fn format_named_port(p: &NamedPort) -> String {
    format!("{}={}/{}", p.name, p.port, protocol_name(p.protocol).to_ascii_lowercase())
}

/// Parses PORT/PROTOCOL for `policy trace` (ICMP: TYPE/icmp).
fn parse_dport(text: &str) -> Result<(u8, u16)> {
    let bad = || {
        AgentError::Invalid(format!("--dport {text:?}: expected PORT/PROTOCOL such as 80/tcp, or TYPE/icmp"))
    };
    let (port, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let port: u16 = port.parse().map_err(|_| bad())?;
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "sctp" => PROTO_SCTP,
        "icmp" if port <= 255 => PROTO_ICMP,
        _ => return Err(bad()),
    };
    Ok((protocol, port))
}

impl Agent {
    pub(crate) fn load_policies(&mut self) -> Result<()> {
        self.policy.policies =
            self.store.list_json::<Policy>(POLICIES_PREFIX)?.into_iter().map(|(_, p)| p).collect();
        self.policy.revision = self.store.get(REVISION_KEY)?.and_then(|e| e.value.parse().ok()).unwrap_or(0);
        // What the kernel holds now: the starting point of every diff.
        for (entry, deny) in self.datapath.policy_entries()? {
            self.policy.realized.entry(entry.endpoint_id).or_default().insert(entry, deny);
        }
        Ok(())
    }

    fn bump_revision(&mut self) -> Result<u64> {
        self.policy.revision += 1;
        self.store.put(REVISION_KEY, &self.policy.revision.to_string())?;
        Ok(self.policy.revision)
    }

    /// Gives every CIDR that policies mention a node-local identity, and
    /// forgets those no policy mentions any more.
    fn sync_cidr_identities(&mut self) {
        let mut wanted = BTreeSet::new();
        for policy in &self.policy.policies {
            for rule in &policy.rules {
                for d in [&rule.ingress, &rule.egress] {
                    for peer_rule in d.allow.iter().chain(&d.deny) {
                        for peer in &peer_rule.peers {
                            if let Peer::Cidr(c) = peer {
                                wanted.extend(std::iter::once(c.cidr).chain(c.except.iter().copied()));
                            }
                        }
                    }
                }
            }
        }
        wanted.retain(|p| p.len > 0);
        self.policy.cidr_identities.retain(|p, _| wanted.contains(p));
        for prefix in wanted {
            if !self.policy.cidr_identities.contains_key(&prefix) {
                let used: BTreeSet<u32> = self.policy.cidr_identities.values().copied().collect();
                let id = (FIRST_CIDR_IDENTITY + 1..).find(|n| !used.contains(n)).expect("identity space");
                self.policy.cidr_identities.insert(prefix, id);
            }
        }
    }

    /// Every identity policy can refer to.
    pub(crate) fn universe(&self) -> Result<Universe> {
        let mut all: Vec<KnownIdentity> = twill_identity::RESERVED
            .iter()
            .map(|(id, name)| KnownIdentity {
                id: *id,
                labels: LabelSet::from_labels([Label::new("reserved", name, "")]),
                kind: IdentityKind::Reserved,
            })
            .collect();
        for (identity, _) in self.identities.list()? {
            all.push(KnownIdentity {
                id: identity.id,
                labels: identity.labels,
                kind: IdentityKind::Endpoint,
            });
        }
        for (prefix, id) in &self.policy.cidr_identities {
            all.push(KnownIdentity {
                id: *id,
                labels: LabelSet::from_labels([
                    Label::new("cidr", &prefix.to_string(), ""),
                    Label::new("reserved", "world", ""),
                ]),
                kind: IdentityKind::Cidr(*prefix),
            });
        }
        Ok(Universe::new(all))
    }

    fn rules(&self) -> Vec<twill_policy::Rule> {
        self.policy.policies.iter().flat_map(|p| p.rules.iter().cloned()).collect()
    }

    fn named_ports_by_identity(&self) -> Result<BTreeMap<u32, Vec<NamedPort>>> {
        let mut out: BTreeMap<u32, Vec<NamedPort>> = BTreeMap::new();
        for r in self.endpoint_records()? {
            out.entry(r.identity).or_default().extend(r.ports.iter().cloned());
        }
        Ok(out)
    }

    fn resolve_for(
        &self,
        labels: &LabelSet,
        ports: &[NamedPort],
        universe: &Universe,
        rules: &[twill_policy::Rule],
        peer_ports: &BTreeMap<u32, Vec<NamedPort>>,
    ) -> EndpointPolicy {
        let subject = Subject { labels, named_ports: ports };
        resolve(rules, universe, &subject, &|id| peer_ports.get(&id).cloned().unwrap_or_default())
    }

    /// Writes one endpoint's resolved policy into the kernel by diff.
    fn realize(&mut self, endpoint_id: u16, resolved: &EndpointPolicy) -> Result<()> {
        let desired: BTreeMap<PolicyEntry, bool> =
            resolved.entries.iter().map(|(k, e)| (to_entry(endpoint_id, k), e.deny)).collect();
        let current = self.policy.realized.remove(&endpoint_id).unwrap_or_default();
        let mut changed = 0;
        for (entry, deny) in &desired {
            if current.get(entry) != Some(deny) {
                self.datapath.upsert_policy(*entry, *deny)?;
                changed += 1;
            }
        }
        for entry in current.keys() {
            if !desired.contains_key(entry) {
                self.datapath.remove_policy(*entry)?;
                changed += 1;
            }
        }
        if changed > 0 {
            debug!(endpoint_id, changed, total = desired.len(), "policy map updated");
        }
        self.policy.realized.insert(endpoint_id, desired);
        self.policy.endpoint_revision.insert(endpoint_id, self.policy.revision);
        self.policy.enforced.insert(endpoint_id, (resolved.ingress_enforced, resolved.egress_enforced));
        Ok(())
    }

    /// Resolves and realizes the policy of one endpoint that may not be in
    /// the store yet (during creation).
    pub(crate) fn regenerate_endpoint(&mut self, record: &EndpointRecord) -> Result<()> {
        let universe = self.universe()?;
        let rules = self.rules();
        let mut peer_ports = self.named_ports_by_identity()?;
        peer_ports.entry(record.identity).or_default().extend(record.ports.iter().cloned());
        let labels = self.identities.get(record.identity)?.map(|i| i.labels).unwrap_or_default();
        let resolved = self.resolve_for(&labels, &record.ports, &universe, &rules, &peer_ports);
        self.realize(record.id as u16, &resolved)
    }

    /// Recomputes every local endpoint's policy (after a policy, identity
    /// or label change) and removes map state of endpoints that are gone.
    pub(crate) fn regenerate_all(&mut self) -> Result<()> {
        let started = Instant::now();
        self.sync_cidr_identities();
        let universe = self.universe()?;
        let rules = self.rules();
        let peer_ports = self.named_ports_by_identity()?;
        let records = self.endpoint_records()?;
        let mut by_identity: BTreeMap<u32, LabelSet> = BTreeMap::new();
        for r in &records {
            if let std::collections::btree_map::Entry::Vacant(slot) = by_identity.entry(r.identity) {
                slot.insert(self.identities.get(r.identity)?.map(|i| i.labels).unwrap_or_default());
            }
        }
        for r in &records {
            let resolved =
                self.resolve_for(&by_identity[&r.identity], &r.ports, &universe, &rules, &peer_ports);
            self.realize(r.id as u16, &resolved)?;
        }
        let live: BTreeSet<u16> = records.iter().map(|r| r.id as u16).collect();
        let gone: Vec<u16> = self.policy.realized.keys().copied().filter(|id| !live.contains(id)).collect();
        for id in gone {
            self.forget_endpoint_policy(id)?;
        }
        self.sync_ipcache_all()?;
        debug!(endpoints = records.len(), elapsed = ?started.elapsed(), "policy regenerated");
        Ok(())
    }

    pub(crate) fn forget_endpoint_policy(&mut self, endpoint_id: u16) -> Result<()> {
        for entry in self.policy.realized.remove(&endpoint_id).unwrap_or_default().keys() {
            self.datapath.remove_policy(*entry)?;
        }
        self.policy.endpoint_revision.remove(&endpoint_id);
        self.policy.enforced.remove(&endpoint_id);
        Ok(())
    }

    pub(crate) fn sync_ipcache_all(&mut self) -> Result<()> {
        let records = self.endpoint_records()?;
        let cidrs: Vec<(Ipv4Addr, u8, u32)> =
            self.policy.cidr_identities.iter().map(|(p, id)| (Ipv4Addr::from(p.addr), p.len, *id)).collect();
        self.sync_ipcache(&records, &cidrs)
    }

    // ---- API operations -------------------------------------------------

    pub fn policy_import(&mut self, files: &[api::PolicyFile]) -> Result<api::PolicyImported> {
        let mut parsed = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            match twill_policy::parse_policies(&file.name, &file.content) {
                Ok(p) => parsed.extend(p),
                Err(e) => errors.extend(e.into_iter().map(|e| e.to_string())),
            }
        }
        // The same policy in two files is as ambiguous as in one.
        let mut seen = BTreeSet::new();
        for p in &parsed {
            if !seen.insert(p.key.clone()) {
                errors.push(format!("{}: defined more than once in this import", p.key));
            }
        }
        if !errors.is_empty() {
            return Err(AgentError::Invalid(format!(
                "no policy applied; fix these and import again:\n{}",
                errors.join("\n")
            )));
        }
        if parsed.is_empty() {
            return Err(AgentError::Invalid("no policy documents found in the input".into()));
        }
        for p in &parsed {
            self.store.put_json(&policy_store_key(&p.key), p)?;
            self.policy.policies.retain(|existing| existing.key != p.key);
            self.policy.policies.push(p.clone());
        }
        self.policy.policies.sort_by(|a, b| a.key.cmp(&b.key));
        let revision = self.bump_revision()?;
        self.regenerate_all()?;
        let names: Vec<String> = parsed.iter().map(|p| p.key.to_string()).collect();
        info!(revision, policies = ?names, "policies imported");
        Ok(api::PolicyImported { revision, policies: names })
    }

    pub fn policy_get(&self) -> api::PolicyList {
        api::PolicyList {
            revision: self.policy.revision,
            policies: self
                .policy
                .policies
                .iter()
                .map(|p| api::PolicyInfo {
                    kind: p.key.kind.clone(),
                    namespace: p.key.namespace.clone(),
                    name: p.key.name.clone(),
                    rules: p.rules.len(),
                    document: p.document.clone(),
                    labels: p.labels.iter().map(ToString::to_string).collect(),
                    description: p.description.clone(),
                })
                .collect(),
        }
    }

    pub fn policy_delete(
        &mut self,
        name: Option<&str>,
        namespace: Option<&str>,
        kind: Option<&str>,
        all: bool,
        labels: &[String],
    ) -> Result<api::PolicyImported> {
        let filters = twill_policy::LabelFilter::parse_all(labels).map_err(AgentError::Invalid)?;
        let named = |p: &Policy| {
            all || (Some(p.key.name.as_str()) == name
                && kind.is_none_or(|k| k == p.key.kind)
                && match (namespace, &p.key.namespace) {
                    (Some(ns), Some(pns)) => ns == pns,
                    (None, None) => true,
                    // Without --namespace, a namespaced policy in "default" matches.
                    (None, Some(pns)) => pns == "default",
                    (Some(_), None) => false,
                })
        };
        let matches =
            |p: &Policy| named(p) || (p.matches_labels(&filters) && kind.is_none_or(|k| k == p.key.kind));
        if !all && name.is_none() && filters.is_empty() {
            return Err(AgentError::Invalid("give a policy name, --label or --all".into()));
        }
        let doomed: Vec<PolicyKey> =
            self.policy.policies.iter().filter(|p| matches(p)).map(|p| p.key.clone()).collect();
        if doomed.is_empty() && all {
            // Nothing to delete is not an error for --all: the goal holds.
            return Ok(api::PolicyImported { revision: self.policy.revision, policies: vec![] });
        }
        if doomed.is_empty() && !filters.is_empty() {
            return Err(AgentError::NotFound(format!(
                "no policy carries all of the labels {}",
                labels.join(", ")
            )));
        }
        if doomed.is_empty() {
            return Err(AgentError::NotFound(format!(
                "no policy named {} in namespace {}",
                name.unwrap_or("?"),
                namespace.unwrap_or("default")
            )));
        }
        for key in &doomed {
            self.store.delete(&policy_store_key(key))?;
        }
        self.policy.policies.retain(|p| !doomed.contains(&p.key));
        let revision = self.bump_revision()?;
        self.regenerate_all()?;
        Ok(api::PolicyImported { revision, policies: doomed.iter().map(|k| k.to_string()).collect() })
    }

    pub fn policy_realized_revision(&self) -> Result<u64> {
        let records = self.endpoint_records()?;
        Ok(records
            .iter()
            .map(|r| self.policy.endpoint_revision.get(&(r.id as u16)).copied().unwrap_or(0))
            .min()
            .unwrap_or(self.policy.revision))
    }

    // ---- trace ----------------------------------------------------------

    fn trace_party(
        &self,
        endpoint: &Option<String>,
        namespace: &Option<String>,
        labels: &[String],
        side: &str,
    ) -> Result<(u32, LabelSet, Vec<NamedPort>, String)> {
        match (endpoint, labels.is_empty()) {
            (Some(name), true) => {
                let ns = namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.into());
                let r = self.endpoint_record(&ns, name)?;
                let labels = self.identities.get(r.identity)?.map(|i| i.labels).unwrap_or_default();
                Ok((r.identity, labels, r.ports.clone(), format!("endpoint {ns}/{name}")))
            }
            (None, false) => {
                let mut set = LabelSet::parse_list(labels.iter().map(String::as_str))?;
                if let Some(ns) = namespace {
                    let ns_record = self.namespace_record(ns)?;
                    set = security_labels(&set, ns, &ns_record);
                }
                let id = self.identities.lookup(&set)?.unwrap_or(u32::MAX - 1);
                Ok((id, set, vec![], format!("labels {}", labels.join(","))))
            }
            _ => Err(AgentError::Invalid(format!("give either --{side}-endpoint or --{side}-labels"))),
        }
    }

    pub fn policy_trace(&self, req: &api::TraceRequest) -> Result<api::TraceResult> {
        let (protocol, port) = parse_dport(&req.dport)?;
        let (src_id, src_labels, src_ports, src_name) =
            self.trace_party(&req.src_endpoint, &req.src_namespace, &req.src_labels, "src")?;
        let (dst_id, dst_labels, dst_ports, dst_name) =
            self.trace_party(&req.dst_endpoint, &req.dst_namespace, &req.dst_labels, "dst")?;
        let mut universe_ids: Vec<KnownIdentity> = self.universe()?.iter().cloned().collect();
        for (id, labels) in [(src_id, &src_labels), (dst_id, &dst_labels)] {
            if !universe_ids.iter().any(|k| k.id == id) {
                universe_ids.push(KnownIdentity { id, labels: labels.clone(), kind: IdentityKind::Endpoint });
            }
        }
        let universe = Universe::new(universe_ids);
        let rules = self.rules();
        let mut peer_ports = self.named_ports_by_identity()?;
        peer_ports.entry(dst_id).or_default().extend(dst_ports.iter().cloned());
        let mut steps = Vec::new();
        let mut allowed = true;
        for (direction, subject_labels, subject_ports, peer, name) in [
            (Direction::Egress, &src_labels, &src_ports, dst_id, &src_name),
            (Direction::Ingress, &dst_labels, &dst_ports, src_id, &dst_name),
        ] {
            let resolved = self.resolve_for(subject_labels, subject_ports, &universe, &rules, &peer_ports);
            let verdict = resolved.lookup(direction, peer, protocol, port);
            let enforced = match direction {
                Direction::Ingress => resolved.ingress_enforced,
                Direction::Egress => resolved.egress_enforced,
            };
            let (text, reasons) = match &verdict {
                Verdict::Allowed(o) => ("ALLOWED", o.iter().map(|o| o.to_string()).collect()),
                Verdict::Denied(o) => ("DENIED", o.iter().map(|o| o.to_string()).collect()),
                Verdict::DefaultDenied => ("DENIED", vec!["default deny: no rule allows it".to_string()]),
            };
            allowed &= verdict.allowed();
            steps.push(api::TraceDirection {
                direction: direction.as_str().into(),
                subject: name.clone(),
                enforced,
                verdict: text.into(),
                reasons,
            });
        }
        Ok(api::TraceResult {
            src_identity: src_id,
            dst_identity: dst_id,
            src_labels: src_labels.to_strings(),
            dst_labels: dst_labels.to_strings(),
            protocol: protocol_name(protocol).into(),
            port,
            steps,
            verdict: if allowed { "ALLOWED" } else { "DENIED" }.into(),
        })
    }

    // ---- datapath views -------------------------------------------------

    pub fn bpf_policy_get(&self, name: &str, namespace: &str) -> Result<api::BpfPolicy> {
        let r = self.endpoint_record(namespace, name)?;
        let id = r.id as u16;
        // Provenance comes from the resolver; verdicts from the kernel map.
        let universe = self.universe()?;
        let labels = self.identities.get(r.identity)?.map(|i| i.labels).unwrap_or_default();
        let resolved =
            self.resolve_for(&labels, &r.ports, &universe, &self.rules(), &self.named_ports_by_identity()?);
        let origins: BTreeMap<PolicyEntry, Vec<String>> = resolved
            .entries
            .iter()
            .map(|(k, e)| (to_entry(id, k), e.origins.iter().map(|o| o.to_string()).collect()))
            .collect();
        let mut entries = Vec::new();
        for (entry, deny) in self.datapath.policy_entries()?.into_iter().filter(|(e, _)| e.endpoint_id == id)
        {
            let labels = match entry.identity {
                0 => vec!["(any)".to_string()],
                n => {
                    universe.get(n).map(|k| k.labels.to_strings()).unwrap_or_else(|| vec!["(unknown)".into()])
                }
            };
            let port = if entry.l4_prefix <= 8 {
                "ANY".to_string()
            } else {
                let width = 1u32 << (24 - entry.l4_prefix as u32);
                let hi = entry.port as u32 + width - 1;
                if width == 1 {
                    entry.port.to_string()
                } else {
                    format!("{}-{hi}", entry.port)
                }
            };
            entries.push(api::BpfPolicyEntry {
                direction: if entry.direction == twill_abi::DIR_INGRESS { "ingress" } else { "egress" }
                    .into(),
                identity: entry.identity,
                labels,
                protocol: protocol_name(entry.protocol).into(),
                port,
                verdict: if deny { "deny" } else { "allow" }.into(),
                rules: origins.get(&entry).cloned().unwrap_or_default(),
            });
        }
        let (ingress_enforced, egress_enforced) = self.policy.enforced.get(&id).copied().unwrap_or_default();
        Ok(api::BpfPolicy {
            endpoint_id: r.id,
            identity: r.identity,
            revision: self.policy.endpoint_revision.get(&id).copied().unwrap_or(0),
            ingress_enforced,
            egress_enforced,
            entries,
        })
    }

    pub fn bpf_ct_list(&self) -> Result<Vec<api::CtRow>> {
        let now = monotonic_ns();
        let mut rows: Vec<api::CtRow> = self
            .datapath
            .ct_entries()?
            .into_iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(k, e)| {
                let addr = |a: u32| Ipv4Addr::from(u32::from_be(a));
                let flags: String = [(0x02, 'S'), (0x10, 'A'), (0x01, 'F'), (0x04, 'R'), (0x08, 'P')]
                    .iter()
                    .filter(|(bit, _)| e.tcp_flags & bit != 0)
                    .map(|(_, c)| *c)
                    .collect();
                api::CtRow {
                    protocol: protocol_name(k.protocol).into(),
                    source: format!("{}:{}", addr(k.saddr), k.sport),
                    destination: format!("{}:{}", addr(k.daddr), k.dport),
                    scope: if k.scope == twill_abi::DIR_INGRESS { "ingress" } else { "egress" }.into(),
                    packets: e.packets,
                    bytes: e.bytes,
                    tcp_flags: flags,
                    closing: e.flags & twill_abi::CT_FLAG_CLOSING != 0,
                    expires_in_seconds: (e.expires - now) / 1_000_000_000,
                }
            })
            .collect();
        rows.sort_by(|a, b| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)));
        Ok(rows)
    }
}

/// The clock bpf_ktime_get_ns() reads.
fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime into a zeroed timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Waits (polling, with a deadline) until every endpoint enforces
/// `revision`; used by `policy wait`.
pub fn wait_deadline(timeout_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(timeout_ms)
}

impl Agent {
    /// The snapshot flows are decoded with: endpoints, identity labels,
    /// namespaces.
    pub fn directory(&self) -> Result<twill_observe::Directory> {
        let mut dir = twill_observe::Directory::new(&self.config.node_name);
        for known in self.universe()?.iter() {
            let mut labels = known.labels.to_strings();
            labels.sort();
            dir.identities.insert(known.id, labels);
        }
        for r in self.endpoint_records()? {
            dir.add_endpoint(twill_observe::EndpointMeta {
                id: r.id,
                name: r.name.clone(),
                namespace: r.namespace.clone(),
                ip: r.ip,
                identity: r.identity,
                host_device: r.host_device.clone(),
                ifindex: twill_datapath::netdev::ifindex(&r.host_device).unwrap_or(0),
            });
        }
        for ns in self.namespace_list()? {
            dir.namespaces.insert(ns.name);
        }
        Ok(dir)
    }
}
