//! Cluster mode: this node's membership in a cluster that shares state
//! through etcd. The module owns the node's session (the lease its keys
//! are bound to), its pod CIDR claim, what it publishes (its node record,
//! its endpoints' addresses) and the mirror of what the other nodes
//! publish. The agent's entry point feeds it the mirrors' batches and asks
//! it what the ipcache, the routes and the flow directory should hold.

pub mod keys;
pub mod mirror;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing::{debug, info, warn};
use twill_api as api;
use twill_datapath::{netdev, Datapath};
use twill_identity::IdentityAllocator;
use twill_ipam::Cidr;
use twill_service::resolve::EndpointView;
use twill_store::{EtcdOptions, EtcdStore, Session, Store};

use self::{
    keys::{IpRecord, NodeRecord},
    mirror::{Batch, Health, Kind, Update},
};
use crate::{
    config::{ClusterConfig, Config, RoutingMode},
    error::{AgentError, Result},
    records::EndpointRecord,
};

/// VXLAN's port, as Cilium uses it.
pub const TUNNEL_PORT: u16 = 8472;

/// Every key of the cluster lives under this prefix in etcd.
pub const STORE_PREFIX: &str = "twill/";
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a batch from the store changed, for the entry point to follow up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delta {
    /// Remote nodes or endpoints came, went or moved: ipcache, directory.
    pub ipcache: bool,
    /// Remote nodes' CIDRs or addresses changed: native routes.
    pub routes: bool,
    /// Identities were allocated or freed: policy resolution.
    pub identities: bool,
    pub policies: bool,
    pub namespaces: bool,
    pub services: bool,
}

/// A remote address and what the ipcache says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteEntry {
    pub ip: Ipv4Addr,
    pub identity: u32,
    /// The node to tunnel to; None for the nodes' own addresses.
    pub tunnel_endpoint: Option<Ipv4Addr>,
    /// One of a node's own addresses, which tunnel packets may come from.
    pub node: bool,
}

/// Who holds this node's reference to its own identity: not an endpoint,
/// so restore's garbage collection must leave it alone.
pub fn node_identity_owner(node: &str) -> String {
    format!("{node}/node")
}

pub struct Cluster {
    config: ClusterConfig,
    node: String,
    node_ip: Ipv4Addr,
    pod_cidr: Cidr,
    store: Arc<dyn Store>,
    session: Arc<Session>,
    health: Arc<Health>,
    nodes: BTreeMap<String, NodeRecord>,
    /// Every node's published endpoint addresses, this node's included.
    ips: BTreeMap<Ipv4Addr, IpRecord>,
    /// What this node has written under its lease.
    published: BTreeMap<Ipv4Addr, IpRecord>,
    published_revision: Option<u64>,
    /// What the node record advertises of this node's Hubble listener.
    hubble_address: String,
    hubble_tls: bool,
    /// This node's identity: `reserved:remote-node` and its labels.
    identity: u32,
}

impl Cluster {
    /// Connects to the store, takes this node's lease and pod CIDR and
    /// registers the node. Sets `config.pod_cidr` to the CIDR held.
    pub fn join(config: &mut Config) -> Result<Cluster> {
        let cluster = config.cluster.clone().expect("cluster mode");
        let store: Arc<dyn Store> = Arc::new(
            EtcdStore::connect(EtcdOptions {
                endpoints: cluster.endpoints.clone(),
                prefix: STORE_PREFIX.into(),
                ca: cluster.ca.clone(),
                cert: cluster.cert.clone(),
                key: cluster.key.clone(),
                timeout: STORE_TIMEOUT,
            })
            .map_err(|e| {
                AgentError::Invalid(format!(
                    "joining the cluster through --kvstore-endpoints {}: {e}",
                    cluster.endpoints.join(",")
                ))
            })?,
        );
        let node_ip = match cluster.node_ip {
            Some(ip) => ip,
            None => default_route_source()?,
        };
        let session = Session::start(store.clone(), cluster.lease_ttl)?;
        let pod_cidr = claim_pod_cidr(store.as_ref(), &cluster, &config.node_name, config)?;
        config.pod_cidr = pod_cidr;
        // Referenced under the session: the number is freed once the node
        // is gone for good, as its endpoints' are.
        let labels = twill_policy::resolve::node_labels(&cluster.node_labels);
        let identity = IdentityAllocator::with_session(store.clone(), session.clone())
            .acquire(&labels, &node_identity_owner(&config.node_name))
            .map_err(|e| {
                AgentError::Unavailable(format!(
                    "allocating the identity of node {} (labels {}) in the kvstore: {e}",
                    config.node_name,
                    labels.to_strings().join(",")
                ))
            })?
            .id;
        let mut me = Cluster {
            node: config.node_name.clone(),
            node_ip,
            pod_cidr,
            store,
            session,
            health: Arc::new(Health::default()),
            nodes: BTreeMap::new(),
            ips: BTreeMap::new(),
            published: BTreeMap::new(),
            published_revision: None,
            // A wildcard listener is reached at the node's address.
            hubble_address: match config.hubble_listen {
                Some(addr) if addr.ip().is_unspecified() => {
                    std::net::SocketAddr::new(node_ip.into(), addr.port()).to_string()
                }
                Some(addr) => addr.to_string(),
                None => String::new(),
            },
            hubble_tls: config.hubble_tls.is_some(),
            identity,
            config: cluster,
        };
        me.heartbeat()?;
        info!(node = %me.node, node_ip = %node_ip, pod_cidr = %pod_cidr, cluster = %me.config.name,
              routing = me.config.routing.as_str(), identity, "joined the cluster");
        Ok(me)
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn session(&self) -> Arc<Session> {
        self.session.clone()
    }

    pub fn routing(&self) -> RoutingMode {
        self.config.routing
    }

    pub fn node_ip(&self) -> Ipv4Addr {
        self.node_ip
    }

    /// This node's identity, which its own traffic carries to other nodes.
    pub fn identity(&self) -> u32 {
        self.identity
    }

    /// The labels of this node's identity, for node selectors that pick
    /// `host` here.
    pub fn node_identity_labels(&self) -> twill_identity::LabelSet {
        twill_policy::resolve::node_labels(&self.config.node_labels)
    }

    fn record(&self) -> NodeRecord {
        NodeRecord {
            name: self.node.clone(),
            cluster: self.config.name.clone(),
            node_ip: self.node_ip,
            pod_cidr: self.pod_cidr.to_string(),
            routing_mode: self.config.routing.as_str().into(),
            labels: self.config.node_labels.clone(),
            heartbeat: unix_now(),
            lease_ttl: self.config.lease_ttl.as_secs(),
            hubble_address: self.hubble_address.clone(),
            hubble_tls: self.hubble_tls,
            identity: self.identity,
        }
    }

    /// Every node's Hubble server, for the peer service: what `hubble
    /// list nodes` and a relay connect to.
    pub fn peers(&self) -> Vec<twill_observe::PeerInfo> {
        self.nodes
            .values()
            .map(|n| twill_observe::PeerInfo {
                name: n.name.clone(),
                address: n.hubble_address.clone(),
                tls_server_name: n.hubble_tls.then(|| crate::hubble_tls::server_name(&n.name)),
            })
            .collect()
    }

    /// Writes the node record with a fresh heartbeat.
    fn heartbeat(&mut self) -> Result<()> {
        let record = self.record();
        self.session.put(&keys::node_key(&self.config.name, &self.node), &json(&record))?;
        self.nodes.insert(self.node.clone(), record);
        Ok(())
    }

    /// The prefixes other nodes' state arrives under, for the mirrors.
    pub fn mirrored(&self) -> Vec<(Kind, String)> {
        vec![
            (Kind::Nodes, keys::nodes_prefix(&self.config.name)),
            (Kind::Ips, keys::ips_prefix(&self.config.name)),
            (Kind::Identities, keys::IDENTITIES_PREFIX.into()),
            (Kind::Namespaces, keys::NAMESPACES_PREFIX.into()),
            (Kind::Policies, keys::POLICIES_PREFIX.into()),
            (Kind::Policies, crate::policy::REVISION_KEY.into()),
            (Kind::Services, keys::SERVICES_PREFIX.into()),
        ]
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// What runs beside the agent, off its lock: the heartbeat and the
    /// collection of identities nobody references, every third of the
    /// lease TTL.
    pub fn housekeeping(&self) -> impl FnMut() + Send + 'static {
        let session = self.session.clone();
        let key = keys::node_key(&self.config.name, &self.node);
        let mut record = self.record();
        let allocator = IdentityAllocator::new(self.store.clone());
        move || {
            record.heartbeat = unix_now();
            if let Err(e) = session.put(&key, &json(&record)) {
                debug!("heartbeat not written: {e}");
            }
            match allocator.collect_unused() {
                Ok(freed) if !freed.is_empty() => info!(?freed, "freed identities no node references"),
                Ok(_) => {}
                Err(e) => debug!("identity collection skipped: {e}"),
            }
        }
    }

    pub fn housekeeping_interval(&self) -> Duration {
        self.config.lease_ttl / 3
    }

    /// Applies one mirrored batch; says what follows from it.
    pub fn apply(&mut self, batch: Batch) -> Delta {
        let mut delta = Delta::default();
        match batch.kind {
            Kind::Nodes => {
                let before = self.remote_nodes_view();
                let mut nodes = match &batch.update {
                    Update::Resync(_) => BTreeMap::new(),
                    Update::Changes(_) => std::mem::take(&mut self.nodes),
                };
                for (key, value) in entries(&batch.update) {
                    let Some(name) = key.rsplit('/').next() else { continue };
                    match value.map(serde_json::from_str::<NodeRecord>) {
                        Some(Ok(record)) => {
                            nodes.insert(name.to_string(), record);
                        }
                        Some(Err(e)) => warn!(key, "ignoring a node record that does not decode: {e}"),
                        None => {
                            nodes.remove(name);
                        }
                    }
                }
                // This node is in the cluster while it runs, whatever
                // the store said during an outage.
                nodes.insert(self.node.clone(), self.record_or_current(&nodes));
                self.nodes = nodes;
                if self.remote_nodes_view() != before {
                    delta.ipcache = true;
                    delta.routes = true;
                }
            }
            Kind::Ips => {
                let before = self.remote_ips_view();
                if matches!(batch.update, Update::Resync(_)) {
                    self.ips.clear();
                }
                for (key, value) in entries(&batch.update) {
                    let Some(ip) = key.rsplit('/').next().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else {
                        continue;
                    };
                    match value.map(serde_json::from_str::<IpRecord>) {
                        Some(Ok(record)) => {
                            self.ips.insert(ip, record);
                        }
                        Some(Err(e)) => warn!(key, "ignoring an IP record that does not decode: {e}"),
                        None => {
                            self.ips.remove(&ip);
                        }
                    }
                }
                // After an outage the store may have dropped what this
                // node wrote (its lease lapsed); the session puts it
                // back, but until then the mirror must not forget it.
                delta.ipcache = self.remote_ips_view() != before;
            }
            Kind::Identities => delta.identities = true,
            Kind::Namespaces => delta.namespaces = true,
            Kind::Policies => delta.policies = true,
            Kind::Services => delta.services = true,
        }
        delta
    }

    fn record_or_current(&self, nodes: &BTreeMap<String, NodeRecord>) -> NodeRecord {
        nodes.get(&self.node).cloned().unwrap_or_else(|| self.record())
    }

    fn remote_nodes_view(&self) -> Vec<(String, Ipv4Addr, String, u32)> {
        self.remote_nodes().map(|n| (n.name.clone(), n.node_ip, n.pod_cidr.clone(), n.identity)).collect()
    }

    fn remote_ips_view(&self) -> Vec<IpRecord> {
        self.remote_ips().cloned().collect()
    }

    fn remote_nodes(&self) -> impl Iterator<Item = &NodeRecord> + '_ {
        self.nodes.values().filter(|n| n.name != self.node)
    }

    /// Endpoint addresses other nodes publish.
    pub fn remote_ips(&self) -> impl Iterator<Item = &IpRecord> + '_ {
        self.ips.values().filter(|r| r.node != self.node)
    }

    /// What the ipcache holds beyond this node: every other node's
    /// addresses with that node's identity, every remote endpoint with the
    /// node that hosts it.
    pub fn remote_ipcache(&self) -> Vec<RemoteEntry> {
        let mut out: Vec<RemoteEntry> = Vec::new();
        for n in self.remote_nodes().filter(|n| n.node_ip != self.node_ip) {
            let identity = n.identity_or_remote_node();
            out.push(RemoteEntry { ip: n.node_ip, identity, tunnel_endpoint: None, node: true });
            // What a node sends itself to a pod elsewhere comes from its
            // router address: replies to it go back to that node.
            if let Ok(cidr) = n.pod_cidr.parse::<Cidr>() {
                out.push(RemoteEntry {
                    ip: cidr.router(),
                    identity,
                    tunnel_endpoint: Some(n.node_ip),
                    node: true,
                });
            }
        }
        out.extend(self.remote_ips().map(|r| RemoteEntry {
            ip: r.ip,
            identity: r.identity,
            tunnel_endpoint: Some(r.node_ip),
            node: false,
        }));
        out
    }

    /// Other nodes' endpoints as service resolution sees endpoints, so
    /// selectors pick backends on every node.
    pub fn remote_views(&self) -> impl Iterator<Item = EndpointView> + '_ {
        self.remote_ips().map(|r| EndpointView {
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            address: r.ip,
            labels: r.labels.clone(),
            named_ports: r.named_ports.clone(),
        })
    }

    /// Each other node's pod CIDR and its address.
    pub fn routes(&self) -> Vec<(Cidr, Ipv4Addr)> {
        self.remote_nodes()
            .filter_map(|n| Some((n.pod_cidr.parse::<Cidr>().ok()?, n.node_ip)))
            .filter(|(cidr, _)| *cidr != self.pod_cidr)
            .collect()
    }

    /// Publishes this node's endpoints, writing only what changed. A
    /// store that is down is not an error here: what could not be
    /// written is tried again at the next change, and the session puts
    /// back whatever the store lost once it returns.
    pub fn publish(&mut self, records: &[(EndpointRecord, EndpointView)]) {
        let wanted: BTreeMap<Ipv4Addr, IpRecord> = records
            .iter()
            .map(|(r, view)| {
                (
                    r.ip,
                    IpRecord {
                        ip: r.ip,
                        identity: r.identity,
                        node: self.node.clone(),
                        node_ip: self.node_ip,
                        name: r.name.clone(),
                        namespace: r.namespace.clone(),
                        labels: view.labels.clone(),
                        named_ports: view.named_ports.clone(),
                    },
                )
            })
            .collect();
        let gone: Vec<Ipv4Addr> =
            self.published.keys().filter(|ip| !wanted.contains_key(ip)).copied().collect();
        for ip in gone {
            match self.session.delete(&keys::ip_key(&self.config.name, ip)) {
                Ok(_) => {
                    self.published.remove(&ip);
                }
                Err(e) => warn!(%ip, "withdrawing the endpoint address from the cluster failed: {e}"),
            }
        }
        for (ip, record) in wanted {
            if self.published.get(&ip) == Some(&record) {
                continue;
            }
            match self.session.put(&keys::ip_key(&self.config.name, ip), &json(&record)) {
                Ok(_) => {
                    self.published.insert(ip, record);
                }
                Err(e) => warn!(%ip, "publishing the endpoint address to the cluster failed: {e}"),
            }
        }
    }

    /// Tells the cluster which policy revision this node enforces, when
    /// that changed.
    pub fn publish_policy_revision(&mut self, revision: u64) {
        if self.published_revision == Some(revision) {
            return;
        }
        let key = format!("{}{}", keys::policy_revisions_prefix(&self.config.name), self.node);
        match self.session.put(&key, &revision.to_string()) {
            Ok(_) => self.published_revision = Some(revision),
            Err(e) => debug!("policy revision not published: {e}"),
        }
    }

    /// The policy revision every node in the cluster enforces, by node
    /// (0: a node that published none yet).
    pub fn policy_revisions(&self) -> Result<BTreeMap<String, u64>> {
        let prefix = keys::policy_revisions_prefix(&self.config.name);
        let published: BTreeMap<String, u64> = self
            .store
            .list(&prefix)?
            .into_iter()
            .filter_map(|(k, e)| Some((k.strip_prefix(&prefix)?.to_string(), e.value.parse().ok()?)))
            .collect();
        Ok(self.nodes.keys().map(|n| (n.clone(), published.get(n).copied().unwrap_or(0))).collect())
    }

    pub fn node_list(&self) -> Vec<api::NodeInfo> {
        let now = unix_now();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in self.ips.values() {
            *counts.entry(r.node.as_str()).or_default() += 1;
        }
        self.nodes
            .values()
            .map(|n| {
                let local = n.name == self.node;
                let fresh = now.saturating_sub(n.heartbeat) <= n.lease_ttl.max(1);
                api::NodeInfo {
                    name: n.name.clone(),
                    cluster: n.cluster.clone(),
                    node_ip: n.node_ip.to_string(),
                    pod_cidr: n.pod_cidr.clone(),
                    routing_mode: n.routing_mode.clone(),
                    labels: n.labels.clone(),
                    identity: n.identity_or_remote_node(),
                    state: if fresh || (local && self.session.alive()) { "alive" } else { "unreachable" }
                        .into(),
                    last_heartbeat: n.heartbeat,
                    local,
                    endpoints: if local {
                        self.published.len()
                    } else {
                        counts.get(n.name.as_str()).copied().unwrap_or(0)
                    },
                }
            })
            .collect()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn status(&self) -> api::KvstoreStatus {
        let session = self.session.status();
        let reachable = self.health.reachable() && session.alive;
        let message = match (reachable, self.health.last_error()) {
            (true, _) => String::new(),
            (false, e) if !e.is_empty() && !self.health.reachable() => e,
            (false, _) => "the lease could not be renewed".into(),
        };
        api::KvstoreStatus {
            endpoints: self.config.endpoints.clone(),
            reachable,
            lease: format!("{:x}", session.lease),
            lease_alive: session.alive,
            last_sync_revision: self.health.revision(),
            cluster_name: self.config.name.clone(),
            routing_mode: self.config.routing.as_str().into(),
            node_ip: self.node_ip.to_string(),
            message,
        }
    }

    /// A change that must be in the store fails now, with the reason,
    /// rather than after the store's timeout for each of its writes.
    pub fn check_reachable(&self, what: &str) -> Result<()> {
        if self.reachable() {
            return Ok(());
        }
        let reason = match self.health.last_error() {
            e if e.is_empty() => "its lease could not be renewed".to_string(),
            e => e,
        };
        Err(AgentError::Unavailable(format!(
            "{what} needs the kvstore at {}, which is unreachable ({reason}); nothing was changed",
            self.config.endpoints.join(","),
        )))
    }

    /// The store answered the mirrors and renewed the lease lately (a
    /// paused etcd leaves watches open but silent; only renewals tell).
    fn reachable(&self) -> bool {
        self.health.reachable() && self.session.alive()
    }

    /// Sets up what the routing mode needs in the datapath; returns the
    /// tunnel device's ifindex for the programs (0: no tunnel).
    pub fn prepare_datapath(&mut self, datapath: &mut Datapath) -> Result<u32> {
        // Native routing hands pod traffic to the stack, which forwards it
        // between the underlay device and the endpoints.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|source| AgentError::Io { what: "enabling IPv4 forwarding".into(), source })?;
        match self.config.routing {
            RoutingMode::Tunnel => {
                let underlay = netdev::device_of_address(self.node_ip)?.map(|(name, _)| name);
                let ifindex =
                    netdev::ensure_vxlan_device(netdev::TUNNEL_DEVICE, TUNNEL_PORT, underlay.as_deref())?;
                datapath.attach_overlay(netdev::TUNNEL_DEVICE)?;
                Ok(ifindex)
            }
            RoutingMode::Native => {
                if netdev::ifindex(netdev::TUNNEL_DEVICE).is_some() {
                    datapath.detach_overlay(netdev::TUNNEL_DEVICE)?;
                    netdev::delete_vxlan_device(netdev::TUNNEL_DEVICE)?;
                }
                Ok(0)
            }
        }
    }

    /// The MTU endpoints need so that their packets still fit the
    /// underlay once encapsulated (Cilium's tunnel MTU); None in native
    /// routing, where packets cross unchanged.
    pub fn endpoint_mtu(&self) -> Result<Option<u32>> {
        if self.config.routing == RoutingMode::Native {
            return Ok(None);
        }
        let underlay = netdev::device_of_address(self.node_ip)?.map(|(_, mtu)| mtu).unwrap_or(1500);
        Ok(Some(underlay.saturating_sub(netdev::VXLAN_OVERHEAD)))
    }

    /// Orderly departure (uninstall): the node's keys go now instead of
    /// when its lease lapses, and the tunnel device and routes with them.
    pub fn leave(&self, datapath: &mut Datapath) -> Result<Vec<String>> {
        self.session.close();
        let mut removed = vec![format!("node {} from the cluster {}", self.node, self.config.name)];
        if netdev::ifindex(netdev::TUNNEL_DEVICE).is_some() {
            datapath.detach_overlay(netdev::TUNNEL_DEVICE)?;
            netdev::delete_vxlan_device(netdev::TUNNEL_DEVICE)?;
            removed.push(format!("device {}", netdev::TUNNEL_DEVICE));
        }
        for (dst, len, _) in netdev::list_routes_by_protocol()? {
            netdev::delete_route(dst, len)?;
            removed.push(format!("route {dst}/{len}"));
        }
        Ok(removed)
    }
}

fn entries(update: &Update) -> Vec<(&str, Option<&str>)> {
    match update {
        Update::Resync(all) => all.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))).collect(),
        Update::Changes(changes) => changes.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect(),
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialize")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The address the kernel would send from towards the default route: a
/// route lookup by connecting a UDP socket, which sends nothing.
fn default_route_source() -> Result<Ipv4Addr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| {
            AgentError::Invalid(format!(
                "--node-ip not given and no default route to take it from ({e}); pass --node-ip"
            ))
        })?;
    match socket.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Ok(ip),
        other => Err(AgentError::Invalid(format!(
            "--node-ip not given and the default route's address {other} is not usable; pass --node-ip"
        ))),
    }
}

/// This node's pod CIDR: the one it already holds (restarts keep it),
/// else --pod-cidr if no other node holds an overlapping one, else the
/// lowest free one of the pool. Claims are create-only keys, so two
/// nodes starting at once never get the same CIDR.
fn claim_pod_cidr(store: &dyn Store, cluster: &ClusterConfig, node: &str, config: &Config) -> Result<Cidr> {
    for _ in 0..64 {
        let claims: BTreeMap<Cidr, String> = store
            .list(&keys::pod_cidrs_prefix(&cluster.name))?
            .into_iter()
            .filter_map(|(k, e)| Some((keys::parse_pod_cidr_key(&cluster.name, &k)?, e.value)))
            .collect();
        let mine: Vec<Cidr> = claims.iter().filter(|(_, owner)| *owner == node).map(|(c, _)| *c).collect();
        let wanted = if config.pod_cidr_explicit {
            let wanted = config.pod_cidr;
            if let Some((cidr, owner)) =
                claims.iter().find(|(c, owner)| *owner != node && c.overlaps(&wanted))
            {
                return Err(AgentError::Invalid(format!(
                    "--pod-cidr {wanted} overlaps {cidr}, which node {owner} holds; pick another or leave --pod-cidr out to take one from --cluster-pool"
                )));
            }
            wanted
        } else if let Some(held) = mine.first() {
            *held
        } else {
            let pool = cluster.pool.expect("checked with the flags");
            let taken: BTreeSet<Cidr> = claims.keys().copied().collect();
            twill_ipam::first_free_subnet(&pool, cluster.pool_mask_size, &taken).ok_or_else(|| {
                AgentError::Exhausted(format!(
                    "--cluster-pool {pool} has no free /{} left: {} nodes hold CIDRs from it",
                    cluster.pool_mask_size,
                    claims.len()
                ))
            })?
        };
        let key = keys::pod_cidr_key(&cluster.name, &wanted);
        if mine.contains(&wanted) || store.create(&key, node)? {
            for stale in mine.iter().filter(|c| **c != wanted) {
                store.delete(&keys::pod_cidr_key(&cluster.name, stale))?;
            }
            return Ok(wanted);
        }
        // Another node claimed it between our read and our create.
    }
    Err(AgentError::Internal("pod CIDR claims kept racing with other nodes; try again".into()))
}
