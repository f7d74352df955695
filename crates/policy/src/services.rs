//! What policy knows of services, for `toServices`: a catalog the agent
//! builds from its services and hands to resolution with the identities
//! (see [`crate::resolve::Universe::with_services`]). Pure: the catalog is
//! a value, so a rule's meaning is a function of the services given.
//!
//! Cilium's semantics: a `toServices` entry allows egress to the current
//! backends of the services it names. A service with a selector stands
//! for the endpoints its selector picks in its namespace (Cilium
//! translates it to the service's endpoint selector); a service without
//! one stands for its backend addresses, each a /32 CIDR (Cilium
//! translates it to `toCIDR`). A service that does not exist allows
//! nothing, until it does.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};
use twill_identity::{Label, LabelSet};

use crate::{
    model::{Peer, Prefix, Rule, ServiceMatch, ServicePeer},
    selector::{Operator, Requirement, Selector},
};

/// One service as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogService {
    pub namespace: String,
    pub name: String,
    /// The service's own labels (`k8s:` source, as Cilium reads them), what
    /// `k8sServiceSelector` matches.
    pub labels: LabelSet,
    pub backends: ServiceBackends,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceBackends {
    /// The endpoints the service's selector picks, as an endpoint selector.
    Selected(Selector),
    /// A service without a selector: its backend addresses.
    Addresses(Vec<BackendAddress>),
}

/// A selector-less service's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackendAddress {
    pub address: Ipv4Addr,
    /// The identity of the endpoint at this address, when one is there: the
    /// ipcache gives an endpoint's address the endpoint's identity, not the
    /// CIDR one, so that is what the datapath sees for packets to it.
    pub endpoint_identity: Option<u32>,
}

impl BackendAddress {
    pub fn prefix(&self) -> Prefix {
        Prefix::new(u32::from(self.address), 32)
    }
}

impl CatalogService {
    /// A service from what the agent stores: its labels, its selector (as
    /// `key=value` pairs; an empty one selects nothing, as in Kubernetes)
    /// and, for a service without a selector, its backend addresses.
    pub fn new(
        namespace: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        selector: Option<&BTreeMap<String, String>>,
        addresses: Vec<BackendAddress>,
    ) -> Self {
        let backends = match selector {
            Some(pairs) if pairs.is_empty() => ServiceBackends::Addresses(Vec::new()),
            Some(pairs) => {
                // Any source, as service backend selection matches labels
                // whatever their source; the namespace is the service's.
                let requirements = pairs
                    .iter()
                    .map(|(k, v)| Requirement {
                        source: None,
                        key: k.clone(),
                        operator: Operator::In(vec![v.clone()]),
                    })
                    .collect();
                ServiceBackends::Selected(Selector { requirements }.scoped_to(namespace))
            }
            None => {
                let mut addresses = addresses;
                addresses.sort();
                addresses.dedup();
                ServiceBackends::Addresses(addresses)
            }
        };
        Self {
            namespace: namespace.into(),
            name: name.into(),
            labels: LabelSet::from_labels(labels.iter().map(|(k, v)| Label::new("k8s", k, v))),
            backends,
        }
    }

    /// Whether a `toServices` entry names this service.
    pub fn matches(&self, peer: &ServicePeer) -> bool {
        if peer.namespace.as_ref().is_some_and(|ns| *ns != self.namespace) {
            return false;
        }
        match &peer.select {
            ServiceMatch::Name(name) => *name == self.name,
            ServiceMatch::Labels(selector) => selector.matches(&self.labels),
        }
    }
}

/// Every service policy can name, sorted by namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCatalog(Vec<CatalogService>);

impl ServiceCatalog {
    pub fn new(services: impl IntoIterator<Item = CatalogService>) -> Self {
        let mut all: Vec<CatalogService> = services.into_iter().collect();
        all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Self(all)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The services one `toServices` entry names.
    pub fn matching<'a>(&'a self, peer: &'a ServicePeer) -> impl Iterator<Item = &'a CatalogService> + 'a {
        self.0.iter().filter(move |s| s.matches(peer))
    }

    /// The /32 of every backend of a selector-less service some rule
    /// names: each needs a CIDR identity and an ipcache entry, as the
    /// prefixes of `toCIDR` do.
    pub fn backend_prefixes(&self, rules: &[Rule]) -> BTreeSet<Prefix> {
        let mut out = BTreeSet::new();
        for peer in service_peers(rules) {
            for service in self.matching(peer) {
                if let ServiceBackends::Addresses(addresses) = &service.backends {
                    out.extend(addresses.iter().map(BackendAddress::prefix));
                }
            }
        }
        out
    }
}

/// Every `toServices` entry of `rules`.
pub fn service_peers(rules: &[Rule]) -> impl Iterator<Item = &ServicePeer> {
    rules
        .iter()
        .flat_map(|r| [&r.ingress, &r.egress])
        .flat_map(|d| d.allow.iter().chain(&d.deny))
        .flat_map(|pr| &pr.peers)
        .filter_map(|p| match p {
            Peer::Service(s) => Some(s),
            _ => None,
        })
}

/// Whether any rule names services: only then do services and their
/// backends change what policy resolves to.
pub fn uses_services(rules: &[Rule]) -> bool {
    service_peers(rules).next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn entries_match_by_name_or_labels_within_their_namespace() {
        let web = CatalogService::new(
            "default",
            "web",
            &pairs(&[("team", "a")]),
            Some(&pairs(&[("app", "web")])),
            vec![],
        );
        let named = |ns: Option<&str>, name: &str| ServicePeer {
            namespace: ns.map(str::to_string),
            select: ServiceMatch::Name(name.into()),
        };
        assert!(web.matches(&named(Some("default"), "web")));
        assert!(!web.matches(&named(Some("prod"), "web")), "another namespace's web");
        assert!(!web.matches(&named(Some("default"), "db")));
        assert!(web.matches(&named(None, "web")), "no namespace: any namespace");
        let labelled = |key: &str, value: &str| ServicePeer {
            namespace: Some("default".into()),
            select: ServiceMatch::Labels(Selector {
                requirements: vec![Requirement {
                    source: Some("k8s".into()),
                    key: key.into(),
                    operator: Operator::In(vec![value.into()]),
                }],
            }),
        };
        assert!(web.matches(&labelled("team", "a")));
        assert!(!web.matches(&labelled("team", "b")));
        assert!(!web.matches(&labelled("app", "web")), "the selector is not the service's labels");
    }

    #[test]
    fn an_empty_selector_selects_nothing_and_no_selector_means_addresses() {
        let empty = CatalogService::new("default", "e", &BTreeMap::new(), Some(&BTreeMap::new()), vec![]);
        assert_eq!(empty.backends, ServiceBackends::Addresses(vec![]));
        let b = |a: [u8; 4]| BackendAddress { address: Ipv4Addr::from(a), endpoint_identity: None };
        let ext = CatalogService::new(
            "default",
            "x",
            &BTreeMap::new(),
            None,
            vec![b([10, 0, 0, 2]), b([10, 0, 0, 1]), b([10, 0, 0, 2])],
        );
        assert_eq!(ext.backends, ServiceBackends::Addresses(vec![b([10, 0, 0, 1]), b([10, 0, 0, 2])]));
    }
}
