//! The flow directory: the snapshot of endpoints, identities, namespaces
//! and services that datapath events are decoded with, shared with the
//! event reader and the observer. The agent's entry point rebuilds it after
//! every change, whatever its source, so flows never name a stale view.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    sync::{Arc, RwLock},
};

use twill_observe::{Directory, EndpointMeta, RemoteEndpointMeta, ServiceIndex};
use twill_policy::resolve::Universe;
use twill_service::{ResolvedService, ServiceKey};

use crate::records::EndpointRecord;

pub struct FlowDirectory {
    node: String,
    shared: Arc<RwLock<Directory>>,
    /// The services' index and the revision of the services it was built
    /// from: most changes are not to services, and 30,000 of them are
    /// not re-indexed for an endpoint's.
    services: Option<(u64, Arc<ServiceIndex>)>,
    /// What DNS answers named each address; kept across rebuilds.
    dns_names: Arc<HashMap<Ipv4Addr, Vec<String>>>,
}

/// What the directory is rebuilt from.
pub struct Sources<'a> {
    pub universe: &'a Universe,
    pub endpoints: &'a [(EndpointRecord, u32)],
    pub namespaces: Vec<String>,
    /// Cluster mode: endpoints other nodes host.
    pub remote: Vec<RemoteEndpointMeta>,
    /// `Services::resolved`: its revision and the resolved services.
    pub services: (u64, &'a BTreeMap<ServiceKey, ResolvedService>),
}

impl FlowDirectory {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.into(),
            shared: Arc::new(RwLock::new(Directory::new(node))),
            services: None,
            dns_names: Arc::default(),
        }
    }

    /// For readers: the event reader and the observer service.
    pub fn handle(&self) -> Arc<RwLock<Directory>> {
        self.shared.clone()
    }

    pub fn rebuild(&mut self, from: Sources<'_>) {
        let mut dir = Directory::new(&self.node);
        for known in from.universe.iter() {
            let mut labels = known.labels.to_strings();
            labels.sort();
            dir.identities.insert(known.id, labels);
        }
        for (r, ifindex) in from.endpoints {
            dir.add_endpoint(EndpointMeta {
                id: r.id,
                name: r.name.clone(),
                namespace: r.namespace.clone(),
                ip: r.ip,
                identity: r.identity,
                host_device: r.host_device.clone(),
                ifindex: *ifindex,
            });
        }
        dir.namespaces.extend(from.namespaces);
        dir.remote = from.remote.into_iter().map(|r| (r.ip, r)).collect();
        let (revision, resolved) = from.services;
        dir.services = match &self.services {
            Some((built, index)) if *built == revision => index.clone(),
            _ => {
                let index = Arc::new(service_index(resolved));
                self.services = Some((revision, index.clone()));
                index
            }
        };
        dir.dns_names = self.dns_names.clone();
        *self.shared.write().unwrap_or_else(|p| p.into_inner()) = dir;
    }

    /// New names from DNS answers, without a rebuild (answers come far more
    /// often than anything else changes).
    pub fn set_dns_names(&mut self, names: HashMap<Ipv4Addr, Vec<String>>) {
        if *self.dns_names == names {
            return;
        }
        self.dns_names = Arc::new(names);
        self.shared.write().unwrap_or_else(|p| p.into_inner()).dns_names = self.dns_names.clone();
    }
}

/// Every service's frontends and backends. `resolved` is ordered by
/// namespace, then name: a backend that serves several services names the
/// first of them in flows, the same one every time.
fn service_index(resolved: &BTreeMap<ServiceKey, ResolvedService>) -> ServiceIndex {
    let mut index = ServiceIndex::new();
    for (key, service) in resolved {
        let id = index.add_service(&key.namespace, &key.name);
        for f in &service.frontends {
            let protocol = f.protocol.number();
            if f.node_port {
                index.add_node_port(id, f.port, protocol);
            } else {
                index.add_frontend(id, f.address, f.port, protocol);
            }
            for &(address, port) in &f.backends {
                index.add_backend(id, address, port, protocol);
            }
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use twill_service::{Algorithm, Protocol, ResolvedFrontend};

    use super::*;

    fn frontend(
        address: [u8; 4],
        port: u16,
        node_port: bool,
        backends: &[([u8; 4], u16)],
    ) -> ResolvedFrontend {
        ResolvedFrontend {
            address: Ipv4Addr::from(address),
            port,
            protocol: Protocol::Tcp,
            node_port,
            port_name: None,
            backends: backends.iter().map(|&(a, p)| (Ipv4Addr::from(a), p)).collect(),
            algorithm: Algorithm::Random,
            affinity_timeout: 0,
        }
    }

    fn services(list: &[(&str, &str, Vec<ResolvedFrontend>)]) -> BTreeMap<ServiceKey, ResolvedService> {
        list.iter()
            .map(|(ns, name, frontends)| {
                let key = ServiceKey::new(*ns, *name);
                (key.clone(), ResolvedService { key, frontends: frontends.clone() })
            })
            .collect()
    }

    fn named(index: &ServiceIndex, ip: [u8; 4], port: u16, identity: u32) -> Option<String> {
        index.lookup(Ipv4Addr::from(ip), port, 6, identity).map(|s| format!("{}/{}", s.namespace, s.name))
    }

    #[test]
    fn frontends_node_ports_and_backends_are_indexed_and_a_shared_backend_names_the_first_service() {
        let backend = ([10, 200, 0, 5], 8080);
        let resolved = services(&[
            // Given out of order: the map orders them.
            ("prod", "web", vec![frontend([10, 96, 0, 20], 80, false, &[backend])]),
            (
                "default",
                "web",
                vec![
                    frontend([10, 96, 0, 10], 80, false, &[backend]),
                    frontend([0, 0, 0, 0], 30080, true, &[backend]),
                ],
            ),
        ]);
        let index = service_index(&resolved);
        assert_eq!(named(&index, [10, 96, 0, 20], 80, 256).as_deref(), Some("prod/web"));
        assert_eq!(named(&index, [10, 96, 0, 10], 80, 256).as_deref(), Some("default/web"));
        assert_eq!(
            named(&index, [192, 168, 1, 2], 30080, twill_abi::IDENTITY_HOST).as_deref(),
            Some("default/web")
        );
        assert_eq!(
            named(&index, [10, 200, 0, 5], 8080, 256).as_deref(),
            Some("default/web"),
            "default < prod"
        );
    }

    #[test]
    fn services_are_reindexed_only_when_their_revision_changes() {
        let mut dir = FlowDirectory::new("node");
        let universe = Universe::new([]);
        let one = services(&[("default", "web", vec![frontend([10, 96, 0, 10], 80, false, &[])])]);
        let none = BTreeMap::new();
        let mut rebuild = |revision, resolved| {
            dir.rebuild(Sources {
                universe: &universe,
                endpoints: &[],
                namespaces: vec![],
                remote: vec![],
                services: (revision, resolved),
            });
            let handle = dir.handle();
            let snapshot = handle.read().unwrap();
            named(&snapshot.services, [10, 96, 0, 10], 80, 256)
        };
        assert_eq!(rebuild(1, &one).as_deref(), Some("default/web"));
        assert_eq!(rebuild(1, &none).as_deref(), Some("default/web"), "same revision: the index is kept");
        assert_eq!(rebuild(2, &none), None, "a new revision is re-indexed");
    }
}
