//! Services: their specs (stored), ClusterIP and node port allocation,
//! resolution against the node's endpoints, and the kernel's service maps,
//! written by difference. Specs live in a store of their own: 30,000
//! services must not make every endpoint change rewrite them.

pub mod request;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    ops::RangeInclusive,
    sync::Arc,
};

use tracing::{debug, info};
use twill_api as api;
use twill_datapath::LbMaps;
use twill_service::{
    alloc::{ClusterIpAllocator, NodePortAllocator},
    resolve::{resolve, EndpointView, ResolvedService},
    state::{Desired, LbState, Op},
    Service, ServiceKey, ServiceType,
};
use twill_store::{Store, StoreExt};

use crate::error::{AgentError, Result};

const PREFIX: &str = "services/";
/// Cluster mode: who holds each ClusterIP and node port.
const CLAIMS_PREFIX: &str = "service-claims/";

/// An address or port one service holds, claimed in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    Ip(Ipv4Addr),
    Port(u16),
}

impl Claim {
    fn key(self) -> String {
        match self {
            Claim::Ip(ip) => format!("{CLAIMS_PREFIX}ip/{ip}"),
            Claim::Port(port) => format!("{CLAIMS_PREFIX}port/{port}"),
        }
    }
}

fn store_key(key: &ServiceKey) -> String {
    format!("{PREFIX}{}/{}", key.namespace, key.name)
}

pub struct Services {
    store: Arc<dyn Store>,
    node_port_range: RangeInclusive<u16>,
    /// Every service, with its ClusterIP and node ports allocated.
    specs: BTreeMap<ServiceKey, Service>,
    cluster_ips: ClusterIpAllocator,
    node_ports: NodePortAllocator,
    /// Stable ids and the desired kernel state, per frontend.
    lb: LbState,
    /// What each service resolved to when the maps were last written.
    resolved: BTreeMap<ServiceKey, ResolvedService>,
    /// Counts changes of `resolved`, so readers (the flow directory)
    /// rebuild what they derive from it only when it changed.
    resolved_revision: u64,
    /// Services whose spec changed since the maps were last written.
    dirty: BTreeSet<ServiceKey>,
    /// Cluster mode: ClusterIPs and node ports are also claimed with
    /// create-only keys, so two nodes creating services at the same
    /// instant never hand out the same one.
    claims: bool,
    /// The endpoints of each namespace at the last sync: only selector
    /// services of namespaces whose endpoints changed are resolved again,
    /// so an endpoint change costs its namespace's services, not all.
    views: BTreeMap<String, Vec<EndpointView>>,
}

impl Services {
    /// Loads the stored services and adopts the ids the kernel's maps
    /// already use, so a restarted agent rewrites nothing that is right.
    pub fn load(
        store: Arc<dyn Store>,
        service_cidr: twill_ipam::Cidr,
        node_port_range: RangeInclusive<u16>,
        maglev_size: u32,
        kernel: &dyn LbMaps,
    ) -> Result<Self> {
        let cluster_ips = ClusterIpAllocator::new(service_cidr.network, service_cidr.prefix_len)
            .map_err(|e| AgentError::Invalid(format!("--service-cidr: {e}")))?;
        let current = Desired {
            services: kernel.services()?.into_iter().collect(),
            backends: kernel.backends()?.into_iter().collect(),
            reverse_nat: kernel.reverse_nat()?.into_iter().collect(),
            maglev: kernel.maglev()?.into_iter().collect(),
        };
        let mut services = Self {
            node_ports: NodePortAllocator::new(node_port_range.clone()),
            node_port_range,
            specs: BTreeMap::new(),
            cluster_ips,
            lb: LbState::restore(maglev_size, current),
            resolved: BTreeMap::new(),
            resolved_revision: 0,
            dirty: BTreeSet::new(),
            views: BTreeMap::new(),
            claims: false,
            store,
        };
        for (_, spec) in services.store.list_json::<Service>(PREFIX)? {
            services.reserve(&spec)?;
            services.dirty.insert(spec.key.clone());
            services.specs.insert(spec.key.clone(), spec);
        }
        Ok(services)
    }

    /// Holds what a stored or accepted spec already uses.
    fn reserve(&mut self, spec: &Service) -> Result<()> {
        if let Some(ip) = spec.cluster_ip {
            let _ = self.cluster_ips.reserve(ip);
        }
        for port in spec.ports.iter().filter_map(|p| p.node_port) {
            let _ = self.node_ports.reserve(port);
        }
        Ok(())
    }

    fn release(&mut self, spec: &Service) {
        if let Some(ip) = spec.cluster_ip {
            self.cluster_ips.release(ip);
        }
        for port in spec.ports.iter().filter_map(|p| p.node_port) {
            self.node_ports.release(port);
        }
    }

    /// Claims addresses and ports in the store as well (cluster mode).
    pub fn share_claims(&mut self) {
        self.claims = true;
    }

    /// Creates or replaces services: all are checked, addresses and node
    /// ports allocated, and stored in one step, or nothing changes.
    /// `describe` names a service in errors (its file and document).
    pub fn upsert(
        &mut self,
        incoming: Vec<Service>,
        describe: impl Fn(usize) -> String,
    ) -> Result<Vec<ServiceKey>> {
        // Another node may take an address between our allocation and our
        // claim: it is then someone else's, and allocation runs again.
        for _ in 0..8 {
            match self.upsert_once(incoming.clone(), &describe)? {
                Ok(keys) => return Ok(keys),
                Err(taken) => {
                    for claim in taken {
                        match claim {
                            Claim::Ip(ip) => {
                                let _ = self.cluster_ips.reserve(ip);
                            }
                            Claim::Port(port) => {
                                let _ = self.node_ports.reserve(port);
                            }
                        }
                    }
                }
            }
        }
        Err(AgentError::Internal(
            "ClusterIP and node port claims kept racing with other nodes; try again".into(),
        ))
    }

    fn upsert_once(
        &mut self,
        incoming: Vec<Service>,
        describe: &impl Fn(usize) -> String,
    ) -> Result<std::result::Result<Vec<ServiceKey>, Vec<Claim>>> {
        let explicit: BTreeSet<ServiceKey> =
            incoming.iter().filter(|s| s.cluster_ip.is_some()).map(|s| s.key.clone()).collect();
        let mut problems = Vec::new();
        for (i, spec) in incoming.iter().enumerate() {
            for p in spec.problems(self.node_port_range.clone()) {
                problems.push(format!("{}{p}", describe(i)));
            }
        }
        if !problems.is_empty() {
            return Err(AgentError::Invalid(problems.join("\n")));
        }
        // Allocate against a copy: a failure midway leaves nothing taken.
        let mut cluster_ips = self.cluster_ips.clone();
        let mut node_ports = self.node_ports.clone();
        let mut claimed_ips: BTreeMap<Ipv4Addr, ServiceKey> = BTreeMap::new();
        let mut claimed_ports: BTreeMap<u16, ServiceKey> = BTreeMap::new();
        let replaced: BTreeSet<&ServiceKey> = incoming.iter().map(|s| &s.key).collect();
        for spec in self.specs.values() {
            if !replaced.contains(&spec.key) {
                if let Some(ip) = spec.cluster_ip {
                    claimed_ips.insert(ip, spec.key.clone());
                }
                for port in spec.ports.iter().filter_map(|p| p.node_port) {
                    claimed_ports.insert(port, spec.key.clone());
                }
            } else {
                // Replaced: what it held is free for its new version.
                if let Some(ip) = spec.cluster_ip {
                    cluster_ips.release(ip);
                }
                for port in spec.ports.iter().filter_map(|p| p.node_port) {
                    node_ports.release(port);
                }
            }
        }
        let mut accepted = Vec::with_capacity(incoming.len());
        for (i, mut spec) in incoming.into_iter().enumerate() {
            let old = self.specs.get(&spec.key);
            let ip = match spec.cluster_ip {
                Some(ip) => ip,
                // A replaced service keeps the address it had.
                None => match old.and_then(|o| o.cluster_ip).filter(|ip| !claimed_ips.contains_key(ip)) {
                    Some(ip) => ip,
                    None => cluster_ips.allocate().ok_or_else(|| {
                        AgentError::Exhausted(format!("{}no ClusterIP left in --service-cidr", describe(i)))
                    })?,
                },
            };
            if let Some(other) = claimed_ips.get(&ip) {
                return Err(AgentError::AlreadyExists(format!(
                    "{}spec.clusterIP: {ip} is already the address of service {other}",
                    describe(i)
                )));
            }
            let _ = cluster_ips.reserve(ip);
            claimed_ips.insert(ip, spec.key.clone());
            spec.cluster_ip = Some(ip);
            if spec.service_type == ServiceType::NodePort {
                for (j, port) in spec.ports.iter_mut().enumerate() {
                    let wanted = port.node_port.or_else(|| {
                        old.and_then(|o| {
                            o.ports.iter().find(|p| p.port == port.port && p.protocol == port.protocol)
                        })
                        .and_then(|p| p.node_port)
                        .filter(|n| !claimed_ports.contains_key(n))
                    });
                    let n = match wanted {
                        Some(n) => n,
                        None => node_ports.allocate().ok_or_else(|| {
                            AgentError::Exhausted(format!(
                                "{}no node port left in --node-port-range",
                                describe(i)
                            ))
                        })?,
                    };
                    if let Some(other) = claimed_ports.get(&n) {
                        return Err(AgentError::AlreadyExists(format!(
                            "{}spec.ports[{j}].nodePort: {n} is already used by service {other}",
                            describe(i)
                        )));
                    }
                    let _ = node_ports.reserve(n);
                    claimed_ports.insert(n, spec.key.clone());
                    port.node_port = Some(n);
                }
            }
            accepted.push(spec);
        }
        if self.claims {
            let taken = self.claim(&accepted)?;
            if let Some((key, Claim::Ip(ip))) =
                taken.iter().find(|(k, c)| matches!(c, Claim::Ip(_)) && explicit.contains(k))
            {
                return Err(AgentError::AlreadyExists(format!(
                    "service {key}: spec.clusterIP: {ip} was just taken by another node's service"
                )));
            }
            if !taken.is_empty() {
                return Ok(Err(taken.into_iter().map(|(_, c)| c).collect()));
            }
        }
        let puts: Vec<(String, String)> = accepted
            .iter()
            .map(|s| (store_key(&s.key), serde_json::to_string(s).expect("a service serializes")))
            .collect();
        // A replaced service's old address or ports are free again.
        let released: Vec<String> = accepted
            .iter()
            .filter_map(|s| self.specs.get(&s.key).map(|old| self.unclaim(old, Some(s))))
            .flatten()
            .collect();
        self.store.write_batch(&puts, &released)?;
        self.cluster_ips = cluster_ips;
        self.node_ports = node_ports;
        let keys: Vec<ServiceKey> = accepted.iter().map(|s| s.key.clone()).collect();
        for spec in accepted {
            self.dirty.insert(spec.key.clone());
            self.specs.insert(spec.key.clone(), spec);
        }
        info!(services = keys.len(), "services applied");
        Ok(Ok(keys))
    }

    /// Claims what `accepted` newly holds; returns what other services
    /// hold already (after giving back this call's claims, all or none).
    fn claim(&self, accepted: &[Service]) -> Result<Vec<(ServiceKey, Claim)>> {
        let mut made = Vec::new();
        let mut taken = Vec::new();
        for spec in accepted {
            let old = self.specs.get(&spec.key);
            let mut wanted: Vec<Claim> = Vec::new();
            if let Some(ip) = spec.cluster_ip.filter(|ip| old.and_then(|o| o.cluster_ip) != Some(*ip)) {
                wanted.push(Claim::Ip(ip));
            }
            let held: BTreeSet<u16> =
                old.into_iter().flat_map(|o| o.ports.iter().filter_map(|p| p.node_port)).collect();
            wanted.extend(
                spec.ports.iter().filter_map(|p| p.node_port).filter(|n| !held.contains(n)).map(Claim::Port),
            );
            let owner = spec.key.to_string();
            for claim in wanted {
                let key = claim.key();
                if self.store.create(&key, &owner)? {
                    made.push(key);
                } else if self.store.get(&key)?.is_none_or(|e| e.value != owner) {
                    taken.push((spec.key.clone(), claim));
                }
            }
        }
        if !taken.is_empty() {
            self.store.write_batch(&[], &made)?;
        }
        Ok(taken)
    }

    /// Gives back what `spec` claimed and `replacement` (if any) no
    /// longer holds.
    fn unclaim(&self, spec: &Service, replacement: Option<&Service>) -> Vec<String> {
        if !self.claims {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some(ip) = spec.cluster_ip.filter(|ip| replacement.and_then(|r| r.cluster_ip) != Some(*ip)) {
            out.push(Claim::Ip(ip).key());
        }
        let kept: BTreeSet<u16> =
            replacement.into_iter().flat_map(|r| r.ports.iter().filter_map(|p| p.node_port)).collect();
        out.extend(
            spec.ports
                .iter()
                .filter_map(|p| p.node_port)
                .filter(|n| !kept.contains(n))
                .map(|n| Claim::Port(n).key()),
        );
        out
    }

    /// Takes in what another node wrote to the shared store (cluster
    /// mode): puts and deletes by key, or with `resync` the whole set.
    /// Services that differ are marked for the next sync; this node's own
    /// writes come back equal and change nothing.
    pub fn apply_stored(&mut self, resync: bool, entries: &[(String, Option<String>)]) -> Result<usize> {
        let mut incoming: BTreeMap<ServiceKey, Option<Service>> = BTreeMap::new();
        for (key, value) in entries {
            let Some((namespace, name)) = key.strip_prefix(PREFIX).and_then(|k| k.split_once('/')) else {
                continue;
            };
            let spec = match value {
                Some(text) => match serde_json::from_str::<Service>(text) {
                    Ok(spec) => Some(spec),
                    Err(e) => {
                        tracing::warn!(key, "ignoring a stored service that does not decode: {e}");
                        continue;
                    }
                },
                None => None,
            };
            incoming.insert(ServiceKey::new(namespace.to_string(), name.to_string()), spec);
        }
        if resync {
            for key in self.specs.keys() {
                incoming.entry(key.clone()).or_insert(None);
            }
        }
        let mut changed = 0;
        for (key, spec) in incoming {
            if self.specs.get(&key) == spec.as_ref() {
                continue;
            }
            if let Some(old) = self.specs.remove(&key) {
                self.release(&old);
            }
            if let Some(spec) = spec {
                self.reserve(&spec)?;
                self.specs.insert(key.clone(), spec);
            }
            self.dirty.insert(key);
            changed += 1;
        }
        if changed > 0 {
            info!(services = changed, "services changed by another node");
        }
        Ok(changed)
    }

    /// Deletes services, in one store write; all must exist.
    pub fn delete(&mut self, keys: &[ServiceKey]) -> Result<()> {
        if let Some(key) = keys.iter().find(|k| !self.specs.contains_key(k)) {
            return Err(AgentError::NotFound(format!("service {key} does not exist")));
        }
        let mut stored: Vec<String> = keys.iter().map(store_key).collect();
        for key in keys {
            stored.extend(self.unclaim(&self.specs[key], None));
        }
        self.store.write_batch(&[], &stored)?;
        for key in keys {
            if let Some(spec) = self.specs.remove(key) {
                self.release(&spec);
            }
            self.dirty.insert(key.clone());
        }
        info!(services = keys.len(), "services deleted");
        Ok(())
    }

    pub fn get(&self, key: &ServiceKey) -> Result<&Service> {
        self.specs.get(key).ok_or_else(|| AgentError::NotFound(format!("service {key} does not exist")))
    }

    pub fn specs(&self) -> impl Iterator<Item = &Service> {
        self.specs.values()
    }

    /// What every service resolved to, as the kernel's maps have it, by
    /// namespace then name; with the revision of that state (see
    /// `resolved_revision`).
    pub fn resolved(&self) -> (u64, &BTreeMap<ServiceKey, ResolvedService>) {
        (self.resolved_revision, &self.resolved)
    }

    /// Brings the kernel's service maps in line: services whose spec
    /// changed, and, when `endpoints_changed`, the selector services of
    /// every namespace whose endpoints differ from the last sync. Returns
    /// the number of map writes.
    pub fn sync(
        &mut self,
        maps: &mut dyn LbMaps,
        endpoints: &[EndpointView],
        endpoints_changed: bool,
    ) -> Result<usize> {
        let mut todo: BTreeSet<ServiceKey> = std::mem::take(&mut self.dirty);
        if endpoints_changed {
            let mut views: BTreeMap<String, Vec<EndpointView>> = BTreeMap::new();
            for e in endpoints {
                views.entry(e.namespace.clone()).or_default().push(e.clone());
            }
            for group in views.values_mut() {
                group.sort_by(|a, b| a.name.cmp(&b.name));
            }
            let changed: BTreeSet<String> = views
                .keys()
                .chain(self.views.keys())
                .filter(|ns| views.get(*ns) != self.views.get(*ns))
                .cloned()
                .collect();
            for ns in &changed {
                let first = ServiceKey::new(ns.clone(), String::new());
                todo.extend(
                    self.specs
                        .range(first..)
                        .take_while(|(k, _)| &k.namespace == ns)
                        .filter(|(_, s)| s.selector.is_some())
                        .map(|(k, _)| k.clone()),
                );
            }
            self.views = views;
        }
        let mut writes = 0;
        let none = Vec::new();
        for key in &todo {
            let ops = match self.specs.get(key) {
                Some(spec) => {
                    // Selectors pick endpoints of the service's own namespace.
                    let candidates = self.views.get(&key.namespace).unwrap_or(&none);
                    let resolved = resolve_spec(spec, candidates);
                    if self.resolved.get(key) == Some(&resolved) {
                        continue;
                    }
                    let ops = self
                        .lb
                        .upsert(&resolved)
                        .map_err(|e| AgentError::Invalid(format!("service {key}: {e}")))?;
                    self.resolved.insert(key.clone(), resolved);
                    self.resolved_revision += 1;
                    ops
                }
                None => {
                    self.resolved.remove(key);
                    self.resolved_revision += 1;
                    self.lb.remove(key)
                }
            };
            writes += ops.len();
            if let Err(e) = apply(maps, &ops) {
                // Try again at the next sync rather than believe the maps.
                self.dirty.insert(key.clone());
                self.resolved.remove(key);
                self.resolved_revision += 1;
                return Err(e);
            }
        }
        if writes > 0 {
            debug!(services = todo.len(), writes, "service maps synced");
        }
        Ok(writes)
    }

    /// Removes what the kernel maps hold but no service wants (a service
    /// deleted while the agent was down). After the first sync.
    pub fn collect_garbage(&mut self, maps: &mut dyn LbMaps) -> Result<usize> {
        let ops = self.lb.prune();
        apply(maps, &ops)?;
        Ok(ops.len())
    }

    pub fn to_api(&self, spec: &Service) -> api::ServiceInfo {
        let frontends = self
            .resolved
            .get(&spec.key)
            .map(|r| {
                r.frontends
                    .iter()
                    .map(|f| api::FrontendInfo {
                        address: format!("{}:{}/{}", f.address, f.port, f.protocol),
                        node_port: f.node_port,
                        backends: f.backends.iter().map(|(ip, port)| format!("{ip}:{port}")).collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        api::ServiceInfo {
            namespace: spec.key.namespace.clone(),
            name: spec.key.name.clone(),
            service_type: spec.service_type.to_string(),
            cluster_ip: spec.cluster_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            ports: spec
                .ports
                .iter()
                .map(|p| api::ServicePortInfo {
                    name: p.name.clone(),
                    protocol: p.protocol.to_string(),
                    port: p.port,
                    target_port: p.target_port.to_string(),
                    node_port: p.node_port,
                })
                .collect(),
            selector: spec.selector.clone().unwrap_or_default(),
            labels: spec.labels.clone(),
            algorithm: spec.algorithm.to_string(),
            affinity_timeout: spec.affinity_timeout.unwrap_or(0),
            internal_traffic_policy: format!("{:?}", spec.internal_traffic_policy),
            external_traffic_policy: format!("{:?}", spec.external_traffic_policy),
            frontends,
        }
    }
}

fn resolve_spec(spec: &Service, endpoints: &[EndpointView]) -> ResolvedService {
    let cluster_ip = spec.cluster_ip.expect("accepted services have a ClusterIP");
    resolve(spec, cluster_ip, |p| p.node_port, endpoints)
}

/// Applies planned writes in their order (the order keeps every frontend
/// consistent for the datapath at every step).
fn apply(maps: &mut dyn LbMaps, ops: &[Op]) -> Result<()> {
    for op in ops {
        match op {
            Op::UpsertBackend(id, b) => maps.upsert_backend(*id, *b)?,
            Op::UpsertReverseNat(id, v) => maps.upsert_reverse_nat(*id, *v)?,
            Op::SetMaglev(id, table) => maps.set_maglev(*id, table)?,
            Op::UpsertService(key, v) => maps.upsert_service(*key, *v)?,
            Op::RemoveService(key) => maps.remove_service(*key)?,
            Op::RemoveMaglev(id) => maps.remove_maglev(*id)?,
            Op::RemoveReverseNat(id) => maps.remove_reverse_nat(*id)?,
            Op::RemoveBackend(id) => maps.remove_backend(*id)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use twill_datapath::maps::fake::FakeLbMaps;
    use twill_service::{ServicePort, TargetPort};
    use twill_store::FileStore;

    use super::*;

    fn store(name: &str) -> Arc<dyn Store> {
        let dir = std::env::temp_dir().join(format!("twill-services-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Arc::new(FileStore::open(&dir).unwrap())
    }

    fn services(name: &str) -> (Services, FakeLbMaps) {
        let maps = FakeLbMaps::default();
        let s =
            Services::load(store(name), "10.96.0.0/16".parse().unwrap(), 30000..=32767, 251, &maps).unwrap();
        (s, maps)
    }

    fn web(namespace: &str, name: &str) -> Service {
        let mut s = Service::new(ServiceKey::new(namespace, name));
        s.selector = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
        s.ports.push(ServicePort {
            name: None,
            protocol: twill_service::Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: None,
        });
        s
    }

    fn endpoint(namespace: &str, name: &str, ip: &str, app: &str) -> EndpointView {
        EndpointView {
            name: name.into(),
            namespace: namespace.into(),
            address: ip.parse().unwrap(),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            named_ports: BTreeMap::new(),
        }
    }

    fn backends(s: &Services, namespace: &str, name: &str) -> Vec<String> {
        let spec = s.get(&ServiceKey::new(namespace, name)).unwrap();
        s.to_api(spec).frontends.into_iter().flat_map(|f| f.backends).collect()
    }

    #[test]
    fn an_endpoint_change_resolves_only_its_namespace_again() {
        let (mut s, mut maps) = services("namespaces");
        s.upsert(vec![web("a", "web"), web("b", "web")], |_| String::new()).unwrap();
        let mut eps =
            vec![endpoint("a", "a1", "10.200.0.2", "web"), endpoint("b", "b1", "10.200.0.3", "web")];
        s.sync(&mut maps, &eps, true).unwrap();
        assert_eq!(backends(&s, "a", "web"), ["10.200.0.2:8080"]);
        assert_eq!(backends(&s, "b", "web"), ["10.200.0.3:8080"]);

        // Nothing changed: nothing written.
        let before = maps.writes();
        assert_eq!(s.sync(&mut maps, &eps, true).unwrap(), 0);
        assert_eq!(maps.writes(), before);

        // An endpoint of another app joins namespace a: a is resolved again
        // (nothing to write), b is not touched.
        eps.push(endpoint("a", "a2", "10.200.0.4", "db"));
        assert_eq!(s.sync(&mut maps, &eps, true).unwrap(), 0);
        eps.push(endpoint("a", "a3", "10.200.0.5", "web"));
        assert!(s.sync(&mut maps, &eps, true).unwrap() > 0);
        assert_eq!(backends(&s, "a", "web"), ["10.200.0.2:8080", "10.200.0.5:8080"]);
        assert_eq!(backends(&s, "b", "web"), ["10.200.0.3:8080"]);
    }

    #[test]
    fn upserts_are_all_or_nothing_and_addresses_are_unique() {
        let (mut s, mut maps) = services("atomic");
        let mut taken = web("default", "one");
        taken.cluster_ip = Some("10.96.7.7".parse().unwrap());
        s.upsert(vec![taken.clone()], |_| String::new()).unwrap();

        // A second service on the same address is refused, and so is the
        // valid service beside it.
        let mut clash = web("default", "two");
        clash.cluster_ip = Some("10.96.7.7".parse().unwrap());
        let e = s.upsert(vec![web("default", "fine"), clash], |i| format!("#{i}: ")).unwrap_err().to_string();
        assert!(
            e.contains("#1: spec.clusterIP: 10.96.7.7 is already the address of service default/one"),
            "{e}"
        );
        assert!(s.get(&ServiceKey::new("default", "fine")).is_err(), "nothing of a refused upsert is kept");

        // Replacing a service keeps its allocated address.
        let plain = s.upsert(vec![web("default", "three")], |_| String::new()).unwrap();
        let ip = s.get(&plain[0]).unwrap().cluster_ip;
        s.upsert(vec![web("default", "three")], |_| String::new()).unwrap();
        assert_eq!(s.get(&plain[0]).unwrap().cluster_ip, ip);

        // Deleting frees the address; the kernel entries go at the next sync.
        s.sync(&mut maps, &[], true).unwrap();
        assert!(!maps.services().unwrap().is_empty());
        s.delete(&[ServiceKey::new("default", "one"), plain[0].clone()]).unwrap();
        s.sync(&mut maps, &[], false).unwrap();
        assert!(maps.services().unwrap().is_empty(), "{:?}", maps.services().unwrap());
        s.upsert(vec![taken], |_| String::new()).unwrap();
    }

    #[test]
    fn a_restarted_owner_rewrites_nothing() {
        let dir = std::env::temp_dir().join(format!("twill-services-restart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut maps = FakeLbMaps::default();
        let eps = vec![endpoint("default", "w1", "10.200.0.2", "web")];
        {
            let store: Arc<dyn Store> = Arc::new(FileStore::open(&dir).unwrap());
            let mut s =
                Services::load(store, "10.96.0.0/16".parse().unwrap(), 30000..=32767, 251, &maps).unwrap();
            s.upsert(vec![web("default", "web")], |_| String::new()).unwrap();
            s.sync(&mut maps, &eps, true).unwrap();
        }
        let before = maps.writes();
        let store: Arc<dyn Store> = Arc::new(FileStore::open(&dir).unwrap());
        let mut s =
            Services::load(store, "10.96.0.0/16".parse().unwrap(), 30000..=32767, 251, &maps).unwrap();
        assert_eq!(s.sync(&mut maps, &eps, true).unwrap(), 0);
        assert_eq!(s.collect_garbage(&mut maps).unwrap(), 0);
        assert_eq!(maps.writes(), before, "the same services after a restart write nothing");
    }
}
