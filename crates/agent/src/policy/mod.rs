//! Policy in the agent: the repository of imported policies (this module),
//! realizing resolved policy in the kernel by diff (`realize`), what-if
//! evaluation (`trace`), the port syntax users type (`ports`) and the
//! services `toServices` rules resolve against (`services`).
//!
//! Resolution itself is pure and lives in `twill_policy`; which endpoints
//! to resolve for, and when, is decided by the agent's one entry point.

pub mod ports;
pub mod realize;
pub mod redirects;
pub mod services;
pub mod trace;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tracing::info;
use twill_api as api;
use twill_identity::LabelSet;
use twill_policy::{
    model::{Peer, Policy, PolicyKey, Prefix},
    resolve::{resolve, EndpointPolicy, NamedPort, Subject, Universe},
    Rule,
};
use twill_store::{Store, StoreExt};

use crate::error::{AgentError, Result};

const POLICIES_PREFIX: &str = "policies/";
/// Where the policy revision is stored (mirrored in cluster mode).
pub const REVISION_KEY: &str = "policy-revision";

fn policy_store_key(key: &PolicyKey) -> String {
    format!("{POLICIES_PREFIX}{}/{}/{}", key.kind, key.namespace.as_deref().unwrap_or("_"), key.name)
}

/// Which policies a delete names.
#[derive(Debug, Clone, Default)]
pub struct PolicySelection<'a> {
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub kind: Option<&'a str>,
    /// `[source:]key=value`: policies carrying all of them (Cilium rule
    /// sets are named by their labels).
    pub labels: &'a [String],
    pub all: bool,
}

/// The imported policies and the revision counter, kept in the store.
pub struct PolicyRepository {
    store: Arc<dyn Store>,
    policies: Vec<Policy>,
    /// Every rule of every policy, in policy order: what resolution reads.
    rules: Vec<Rule>,
    revision: u64,
}

impl PolicyRepository {
    pub fn load(store: Arc<dyn Store>) -> Result<Self> {
        let policies: Vec<Policy> =
            store.list_json::<Policy>(POLICIES_PREFIX)?.into_iter().map(|(_, p)| p).collect();
        let revision = store.get(REVISION_KEY)?.and_then(|e| e.value.parse().ok()).unwrap_or(0);
        let mut repo = Self { store, policies, rules: Vec::new(), revision };
        repo.reindex();
        Ok(repo)
    }

    /// Reads the policies again: in cluster mode another node changed
    /// them. Returns whether anything differs.
    pub fn reload(&mut self) -> Result<bool> {
        let fresh = Self::load(self.store.clone())?;
        if fresh.revision == self.revision && fresh.policies == self.policies {
            return Ok(false);
        }
        *self = fresh;
        Ok(true)
    }

    fn reindex(&mut self) {
        self.policies.sort_by(|a, b| a.key.cmp(&b.key));
        self.rules = self.policies.iter().flat_map(|p| p.rules.iter().cloned()).collect();
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether any rule names services (`toServices`): only then do
    /// services and their backends change what policy resolves to.
    pub fn uses_services(&self) -> bool {
        twill_policy::services::uses_services(&self.rules)
    }

    /// The next revision, by compare-and-swap: in cluster mode several
    /// nodes may import at once, and each import must get its own number.
    fn bump_revision(&mut self) -> Result<u64> {
        for _ in 0..64 {
            let current = self.store.get(REVISION_KEY)?;
            let stored = current.as_ref().and_then(|e| e.value.parse::<u64>().ok()).unwrap_or(0);
            let next = stored.max(self.revision) + 1;
            let written = match &current {
                None => self.store.create(REVISION_KEY, &next.to_string())?,
                Some(e) => self.store.compare_and_swap(REVISION_KEY, e.mod_revision, &next.to_string())?,
            };
            if written {
                self.revision = next;
                return Ok(next);
            }
        }
        Err(AgentError::Internal(
            "the policy revision kept changing under concurrent imports; try again".into(),
        ))
    }

    /// Parses and validates every file, then stores all policies or none.
    /// Returns the new revision and the names of what was imported.
    pub fn import(&mut self, files: &[api::PolicyFile]) -> Result<(u64, Vec<String>)> {
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
        }
        for p in &parsed {
            self.policies.retain(|existing| existing.key != p.key);
        }
        let names: Vec<String> = parsed.iter().map(|p| p.key.to_string()).collect();
        self.policies.extend(parsed);
        self.reindex();
        let revision = self.bump_revision()?;
        info!(revision, policies = ?names, "policies imported");
        Ok((revision, names))
    }

    /// Deletes the selected policies; returns the revision and their names
    /// (none, and the unchanged revision, for `--all` on an empty set).
    pub fn delete(&mut self, selection: &PolicySelection) -> Result<(u64, Vec<String>)> {
        let PolicySelection { name, namespace, kind, labels, all } = *selection;
        let filters = twill_policy::LabelFilter::parse_all(labels).map_err(AgentError::Invalid)?;
        if !all && name.is_none() && filters.is_empty() {
            return Err(AgentError::Invalid("give a policy name, --label or --all".into()));
        }
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
        let doomed: Vec<PolicyKey> =
            self.policies.iter().filter(|p| matches(p)).map(|p| p.key.clone()).collect();
        if doomed.is_empty() {
            if all {
                // Nothing to delete is not an error for --all: the goal holds.
                return Ok((self.revision, vec![]));
            }
            if !filters.is_empty() {
                return Err(AgentError::NotFound(format!(
                    "no policy carries all of the labels {}",
                    labels.join(", ")
                )));
            }
            return Err(AgentError::NotFound(format!(
                "no policy named {} in namespace {}",
                name.unwrap_or("?"),
                namespace.unwrap_or("default")
            )));
        }
        for key in &doomed {
            self.store.delete(&policy_store_key(key))?;
        }
        self.policies.retain(|p| !doomed.contains(&p.key));
        self.reindex();
        let revision = self.bump_revision()?;
        Ok((revision, doomed.iter().map(|k| k.to_string()).collect()))
    }

    pub fn list(&self) -> api::PolicyList {
        api::PolicyList {
            revision: self.revision,
            policies: self
                .policies
                .iter()
                .map(|p| api::PolicyInfo {
                    kind: p.key.kind.clone(),
                    namespace: p.key.namespace.clone(),
                    name: p.key.name.clone(),
                    rules: p.rules.len(),
                    labels: p.labels.iter().map(ToString::to_string).collect(),
                    description: p.description.clone(),
                    document: p.document.clone(),
                })
                .collect(),
        }
    }

    /// Every peer of every rule in force.
    fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.rules
            .iter()
            .flat_map(|rule| [&rule.ingress, &rule.egress])
            .flat_map(|d| d.allow.iter().chain(&d.deny))
            .flat_map(|peer_rule| &peer_rule.peers)
    }

    /// Every toFQDNs selector of the rules in force.
    pub fn fqdn_selectors(&self) -> BTreeSet<twill_policy::l7_dns::DnsMatch> {
        self.peers()
            .filter_map(|p| match p {
                Peer::Fqdn(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every CIDR (and exception) the policies name: each needs an identity.
    pub fn cidr_prefixes(&self) -> BTreeSet<Prefix> {
        let mut out = BTreeSet::new();
        for peer in self.peers() {
            if let Peer::Cidr(c) = peer {
                out.extend(std::iter::once(c.cidr).chain(c.except.iter().copied()));
            }
        }
        out
    }
}

/// Resolves the policy of one subject (an endpoint's labels and named
/// ports) against `rules`; `peer_ports` gives other identities' named ports.
pub fn resolve_for(
    labels: &LabelSet,
    ports: &[NamedPort],
    universe: &Universe,
    rules: &[Rule],
    peer_ports: &BTreeMap<u32, Vec<NamedPort>>,
) -> EndpointPolicy {
    let subject = Subject { labels, named_ports: ports };
    resolve(rules, universe, &subject, &|id| peer_ports.get(&id).cloned().unwrap_or_default())
}
