//! The agent: every concern's owner, and the one entry point through
//! which every change, from any source (the API today; CNI, etcd and
//! Kubernetes next), is applied together with everything that follows
//! from it: policy regeneration, the ipcache, the flow directory.
//!
//! Owners do not know each other; this module sequences them. Each
//! change either completes or leaves nothing that the next start would
//! not collect.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
    sync::{Arc, RwLock},
    time::Instant,
};

use tracing::{debug, info, warn};
use twill_abi::EndpointInfo;
use twill_api as api;
use twill_datapath::{netdev, Datapath, KernelFeatures, PolicyEntry};
use twill_identity::LabelSet;
use twill_policy::{resolve::Universe, services::ServiceCatalog};
use twill_store::{FileStore, Store, StoreExt};

use crate::{
    cluster::{self, mirror, Cluster},
    config::{Config, RoutingMode},
    directory::{self, FlowDirectory},
    dns::{DnsTables, DnsView},
    endpoints::{named_ports_by_identity, Endpoints},
    error::{AgentError, Result},
    fqdn::Fqdn,
    identities::Identities,
    inspect,
    ipcache::{self, DesiredIpcache},
    lb, names,
    namespaces::Namespaces,
    policy::{
        ports::{format_named_port, parse_dport},
        realize::{to_entry, PolicyRealizer},
        redirects::{RedirectKey, Redirects},
        resolve_for,
        services::catalog,
        trace::{trace, Party},
        PolicyRepository, PolicySelection,
    },
    proxy::ProxyControl,
    records::*,
    restore::{self, Observed},
    services::{self, Services},
};

/// The node store's key of the FQDN cache.
const FQDN_CACHE_KEY: &str = "fqdn-cache";

/// A change to desired state, from whatever source.
#[derive(Debug, Clone)]
pub enum Change {
    EndpointCreate {
        name: String,
        namespace: String,
        labels: Vec<String>,
        ports: Vec<String>,
    },
    EndpointDelete {
        name: String,
        namespace: String,
    },
    EndpointLabel {
        name: String,
        namespace: String,
        set: Vec<String>,
        remove: Vec<String>,
    },
    NamespaceCreate {
        name: String,
        labels: Vec<String>,
    },
    NamespaceLabel {
        name: String,
        set: Vec<String>,
        remove: Vec<String>,
    },
    NamespaceDelete {
        name: String,
    },
    PolicyImport {
        files: Vec<api::PolicyFile>,
    },
    PolicyDelete {
        name: Option<String>,
        namespace: Option<String>,
        kind: Option<String>,
        labels: Vec<String>,
        all: bool,
    },
    /// A container runtime attaches a container (CNI ADD): the same
    /// endpoint as `EndpointCreate`, inside the runtime's namespace.
    CniAdd(api::CniAdd),
    /// CNI DEL: nothing attached is success.
    CniDel(api::CniAttachmentRef),
    /// CNI GC: this network's attachments the runtime no longer lists go.
    CniGc(api::CniGc),
    /// One service from command-line terms, created or replaced.
    ServiceCreate(api::ServiceCreate),
    /// Kubernetes Service and EndpointSlice documents, all or none.
    ServiceImport {
        files: Vec<api::PolicyFile>,
    },
    /// One service, or with `all` every service of the namespace.
    ServiceDelete {
        name: String,
        namespace: String,
        all: bool,
    },
    /// Cluster mode: what other nodes changed in the shared store.
    Cluster(mirror::Batch),
    /// The qdiscs of a device changed (`None`: of any device): whether
    /// an endpoint's host device is shaped is read from the kernel again.
    Shaping {
        device: Option<String>,
    },
    /// Runtime settings (`twill config set`), already checked.
    Settings(crate::settings::SettingsChange),
    /// One endpoint's runtime settings (`twill endpoint config`).
    EndpointSettings {
        name: String,
        namespace: String,
        change: crate::settings::EndpointSettingsChange,
    },
    /// The DNS proxy relayed answers to an endpoint: their addresses are
    /// allowed wherever a toFQDNs selector matches their names.
    DnsAnswers {
        endpoint: u64,
        answers: Vec<twill_policy::fqdn::Answer>,
    },
    /// Addresses learned from DNS whose time is up are no longer allowed.
    FqdnExpire,
}

/// The event kinds the datapath emits: none without flows; debug messages
/// only when asked for, on top of the rest.
fn datapath_events(flows: bool, debug: bool) -> u32 {
    match (flows, debug) {
        (false, _) => 0,
        (true, false) => twill_abi::EVENTS_DROP | twill_abi::EVENTS_POLICY | twill_abi::EVENTS_TRACE,
        (true, true) => datapath_events(true, false) | twill_abi::EVENTS_DEBUG,
    }
}

impl Change {
    /// What the change is, if it cannot be made without the shared store
    /// (cluster mode): it then fails at once while the store is down.
    fn needs_store(&self) -> Option<&'static str> {
        Some(match self {
            Change::EndpointCreate { .. } | Change::CniAdd(_) => "creating an endpoint",
            Change::EndpointLabel { .. } => "relabeling an endpoint",
            Change::NamespaceCreate { .. }
            | Change::NamespaceLabel { .. }
            | Change::NamespaceDelete { .. } => "changing a namespace",
            Change::PolicyImport { .. } | Change::PolicyDelete { .. } => "changing policy",
            _ => return None,
        })
    }

    /// Whether the change can add, remove or relabel endpoints, which
    /// selector services and the socket hooks' namespaces follow.
    fn touches_endpoints(&self) -> bool {
        matches!(
            self,
            Change::EndpointCreate { .. }
                | Change::EndpointDelete { .. }
                | Change::EndpointLabel { .. }
                | Change::CniAdd(_)
                | Change::CniDel(_)
                | Change::CniGc(_)
        )
    }
}

/// What a change produced, for the caller to report.
#[derive(Debug, Clone)]
pub enum Outcome {
    Endpoint(Box<api::Endpoint>),
    Namespace(api::NamespaceInfo),
    Policy(api::PolicyImported),
    CniAttached(Box<api::CniAttached>),
    CniRemoved(api::CniRemoved),
    Service(Box<api::ServiceInfo>),
    ServicesImported(api::ServicesImported),
    /// A change from the store was applied.
    Synced,
    Settings(api::AgentSettings),
    EndpointSettings(api::EndpointSettings),
}

/// What follows from a change beyond the change itself.
#[derive(Debug, Default, Clone, Copy)]
struct Effects {
    /// Identities, policies or their inputs changed: every endpoint's
    /// policy and the ipcache must be recomputed.
    regenerate: bool,
    /// Endpoints came, went or changed labels: selector services and the
    /// socket hooks' namespaces follow.
    endpoints: bool,
    /// Remote nodes or endpoints changed (cluster mode): the ipcache.
    ipcache: bool,
    /// Remote nodes' pod CIDRs or addresses changed: native routes.
    routes: bool,
}

pub struct Agent {
    config: Config,
    /// Set in cluster mode.
    cluster: Option<Cluster>,
    store: Arc<dyn Store>,
    datapath: Datapath,
    features: KernelFeatures,
    namespaces: Namespaces,
    endpoints: Endpoints,
    identities: Identities,
    policies: PolicyRepository,
    services: Services,
    realizer: PolicyRealizer,
    /// The services policy was last resolved against. `toServices` rules
    /// follow services and their backends: when what they see changes,
    /// every endpoint's policy is regenerated.
    service_catalog: ServiceCatalog,
    directory: FlowDirectory,
    started: Instant,
    /// Network namespace cookies of endpoints, by endpoint id, so the
    /// socket hooks' namespace map is kept without entering namespaces
    /// on every change.
    netns_cookies: BTreeMap<u32, u64>,
    /// The node list Hubble's peer service reports (cluster mode: every
    /// node's Hubble server).
    peers: Option<twill_observe::Peers>,
    /// Where agent events go, for Hubble's GetAgentEvents.
    agent_events: Option<Arc<twill_observe::AgentEvents>>,
    /// What the socket hooks' namespace map holds, as last written (read
    /// from the kernel once, at the first sync).
    netns_written: Option<BTreeMap<u64, twill_abi::LbNetnsValue>>,
    /// Host devices of endpoints that a chained plugin shapes (see
    /// [`twill_datapath::netdev::device_shaped`]); their endpoint map
    /// entries carry `ENDPOINT_F_SHAPED`.
    shaped: BTreeSet<String>,
    /// Policy map entries with L7 rules and their proxy listeners.
    redirects: Redirects,
    /// The L7 proxy, once started (see [`Agent::set_proxy`]).
    proxy: Option<Arc<dyn ProxyControl>>,
    /// What DNS answers taught each endpoint, for toFQDNs.
    fqdn: Fqdn,
    /// What the DNS proxy judges lookups by, once it runs.
    dns_tables: Option<Arc<DnsTables>>,
    /// Endpoints whose steps the datapath reports as debug messages
    /// whatever the node's setting (`ENDPOINT_F_DEBUG`). Not kept across
    /// a restart, like the node's setting.
    debug_endpoints: BTreeSet<u32>,
}

impl Agent {
    /// Opens the store, loads the datapath and brings kernel state in line
    /// with the store: restored endpoints keep their IPs, identities and
    /// devices; leftovers of interrupted operations are removed.
    pub fn start(mut config: Config) -> Result<Self> {
        names::check_node_name(&config.node_name)?;
        // Node-local state (this node's endpoints, addresses, CNI
        // attachments) stays in the embedded store in every mode; what the
        // cluster shares (identities, namespaces, policies) goes where
        // every node reads it.
        let store: Arc<dyn Store> = Arc::new(FileStore::open(&config.state_dir)?);
        let mut cluster = match config.cluster {
            Some(_) => Some(Cluster::join(&mut config)?),
            None => None,
        };
        let shared = cluster.as_ref().map(|c| c.store()).unwrap_or_else(|| store.clone());
        check_pod_cidr(store.as_ref(), &config)?;
        let features = twill_datapath::probe_features();
        let mut datapath = Datapath::load(&config.bpf_root)?;
        datapath.set_endpoint_attach(config.endpoint_attach);
        netdev::ensure_host_device(config.pod_cidr.router())?;
        let events = datapath_events(config.flows, config.debug_datapath);
        let tunnel_ifindex = match &mut cluster {
            Some(c) => c.prepare_datapath(&mut datapath)?,
            None => 0,
        };
        // Traffic leaves by a device without the host stack only where
        // from_netdev brings the replies back the same way.
        let mut fib_devices = [0; twill_abi::FIB_DEVICES_MAX];
        let managed = config.devices.iter().filter_map(|d| netdev::ifindex(d));
        for (slot, ifindex) in fib_devices.iter_mut().zip(managed) {
            *slot = ifindex;
        }
        if config.devices.len() > twill_abi::FIB_DEVICES_MAX {
            tracing::warn!(
                "eBPF host routing out of the first {} of --devices only; the rest go through the host stack",
                twill_abi::FIB_DEVICES_MAX
            );
        }
        datapath.set_config(twill_abi::DatapathConfig {
            allow_localhost: 1,
            aggregation: config.aggregation,
            events,
            maglev_table_size: config.maglev_table_size,
            tunnel_ifindex,
            report_flags: config.report_flags,
            legacy_host_routing: u32::from(config.legacy_host_routing),
            fib_devices,
        })?;
        let realizer = PolicyRealizer::from_map(datapath.policy_map())?;
        // Listeners keep their ports across restarts: the pinned entries
        // name them.
        let mut redirects = Redirects::new(config.dns.port);
        for (entry, port) in realizer.proxy_ports() {
            redirects.adopt(RedirectKey::from_entry(&entry), port);
        }
        twill_datapath::proxy_routing::install_proxy_routing()?;
        // Standalone, services have a file of their own: 30,000 of them
        // must not make every endpoint change rewrite them.
        let service_store: Arc<dyn Store> = match &cluster {
            Some(c) => c.store(),
            None => Arc::new(FileStore::open(&config.state_dir.join("services"))?),
        };
        let services = Services::load(
            service_store,
            config.service_cidr,
            config.node_port_range.clone(),
            config.maglev_table_size,
            datapath.lb_maps(),
        )?;
        let mut services = services;
        if cluster.is_some() {
            services.share_claims();
        }
        lb::attach(&mut datapath, &config)?;
        let fqdn = Fqdn::new(config.dns.min_ttl, config.dns.max_ips_per_name);
        let mut agent = Self {
            services,
            namespaces: Namespaces::new(shared.clone()),
            endpoints: Endpoints::new(store.clone(), &config.node_name, config.pod_cidr),
            identities: Identities::new(shared.clone(), cluster.as_ref().map(|c| c.session())),
            policies: PolicyRepository::load(shared.clone())?,
            cluster,
            realizer,
            service_catalog: ServiceCatalog::default(),
            directory: FlowDirectory::new(&config.node_name),
            store,
            datapath,
            features,
            config,
            started: Instant::now(),
            netns_cookies: BTreeMap::new(),
            peers: None,
            agent_events: None,
            netns_written: None,
            shaped: BTreeSet::new(),
            redirects,
            proxy: None,
            fqdn,
            dns_tables: None,
            debug_endpoints: BTreeSet::new(),
        };
        agent.namespaces.ensure_default()?;
        if let Some(cluster) = &agent.cluster {
            agent.endpoints.set_mtu(cluster.endpoint_mtu()?);
        }
        agent.cluster_initial_sync()?;
        agent.restore()?;
        agent.follow_up(Effects { regenerate: true, endpoints: true, ipcache: true, routes: true })?;
        let garbage = agent.services.collect_garbage(agent.datapath.lb_maps())?;
        if garbage > 0 {
            info!(writes = garbage, "removed service map entries no service wants");
        }
        agent.drain_cni_queue();
        Ok(agent)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The flow directory, for the event reader and the observer.
    pub fn directory(&self) -> Arc<RwLock<twill_observe::Directory>> {
        self.directory.handle()
    }

    /// The event ring buffer, for its one reader.
    pub fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.datapath.take_events()
    }

    // ---- the entry point -------------------------------------------------

    /// Applies one change and everything that follows from it. A change
    /// that fails midway still gets its follow-up, so whatever part of it
    /// took effect is reflected everywhere.
    pub fn apply(&mut self, change: Change) -> Result<Outcome> {
        // Refused before anything is touched, so there is nothing to
        // follow up either (which would wait on the store too).
        if let (Some(cluster), Some(what)) = (&self.cluster, change.needs_store()) {
            cluster.check_reachable(what)?;
        }
        // Most answers repeat what the cache holds: those change nothing
        // else, and must not cost a follow-up each.
        let names_before = self.fqdn.names_generation();
        let fqdn_changed = match &change {
            Change::DnsAnswers { endpoint, answers } => Some(self.fqdn.observe(*endpoint, answers)),
            Change::FqdnExpire => Some(self.fqdn.expire()),
            _ => None,
        };
        if let Some(changed) = fqdn_changed {
            // Rebuilt only when a name or address came or went, not for
            // every repeated answer.
            if self.fqdn.names_generation() != names_before {
                self.directory.set_dns_names(self.fqdn.names());
            }
            if changed {
                self.save_fqdn()?;
                self.follow_up(Effects { regenerate: true, ..Effects::default() })?;
            }
            return Ok(Outcome::Synced);
        }
        let started = Instant::now();
        let mut effects = Effects { endpoints: change.touches_endpoints(), ..Effects::default() };
        let result = self.change(change, &mut effects);
        if result.is_err() {
            effects.regenerate = true;
            effects.endpoints = true;
        }
        let follow_up = self.follow_up(effects);
        debug!(elapsed = ?started.elapsed(), regenerate = effects.regenerate, "change applied");
        match (result, follow_up) {
            (Err(e), Err(f)) => {
                warn!("after a failed change, bringing the datapath in line failed too: {}", f.chain());
                Err(e)
            }
            (Err(e), Ok(())) => Err(e),
            (Ok(_), Err(f)) => Err(f),
            (Ok(outcome), Ok(())) => Ok(outcome),
        }
    }

    fn change(&mut self, change: Change, effects: &mut Effects) -> Result<Outcome> {
        Ok(match change {
            Change::Cluster(batch) => {
                self.cluster_sync(batch, effects)?;
                Outcome::Synced
            }
            Change::Shaping { device } => {
                self.sync_shaping(device.as_deref())?;
                Outcome::Synced
            }
            Change::Settings(change) => Outcome::Settings(self.change_settings(change)?),
            Change::EndpointSettings { name, namespace, change } => {
                Outcome::EndpointSettings(self.change_endpoint_settings(&name, &namespace, change)?)
            }
            Change::EndpointCreate { name, namespace, labels, ports } => Outcome::Endpoint(Box::new(
                self.endpoint_create(&name, &namespace, &labels, &ports, None, effects)?,
            )),
            Change::CniAdd(add) => Outcome::CniAttached(Box::new(self.cni_add(add, effects)?)),
            Change::CniDel(target) => Outcome::CniRemoved(self.cni_del(&target, effects)?),
            Change::CniGc(gc) => Outcome::CniRemoved(self.cni_gc(&gc, effects)?),
            Change::EndpointDelete { name, namespace } => {
                Outcome::Endpoint(Box::new(self.endpoint_delete(&name, &namespace, effects)?))
            }
            Change::EndpointLabel { name, namespace, set, remove } => {
                Outcome::Endpoint(Box::new(self.endpoint_label(&name, &namespace, &set, &remove, effects)?))
            }
            Change::NamespaceCreate { name, labels } => {
                self.namespaces.create(&name, &labels)?;
                Outcome::Namespace(self.namespace_get(&name)?)
            }
            Change::NamespaceLabel { name, set, remove } => {
                let record = self.namespaces.relabel(&name, &set, &remove)?;
                // Namespace labels are part of every member's identity.
                for endpoint in self.endpoints.records()?.into_iter().filter(|r| r.namespace == name) {
                    self.apply_identity(endpoint, &record, effects)?;
                }
                Outcome::Namespace(self.namespace_get(&name)?)
            }
            Change::NamespaceDelete { name } => {
                let info = self.namespace_get(&name)?;
                self.namespaces.delete(&name, info.endpoints)?;
                Outcome::Namespace(info)
            }
            Change::PolicyImport { files } => {
                let (revision, policies) = self.policies.import(&files)?;
                effects.regenerate = true;
                self.notify(|| {
                    twill_observe::agent_events::policy_updated(
                        policy_labels(&policies),
                        revision,
                        self.policies.rules().len(),
                    )
                });
                Outcome::Policy(api::PolicyImported { revision, policies })
            }
            Change::PolicyDelete { name, namespace, kind, labels, all } => {
                let selection = PolicySelection {
                    name: name.as_deref(),
                    namespace: namespace.as_deref(),
                    kind: kind.as_deref(),
                    labels: &labels,
                    all,
                };
                let before = self.policies.revision();
                let (revision, policies) = self.policies.delete(&selection)?;
                effects.regenerate = revision != before;
                if revision != before {
                    self.notify(|| {
                        twill_observe::agent_events::policy_deleted(
                            policy_labels(&policies),
                            revision,
                            self.policies.rules().len(),
                        )
                    });
                }
                Outcome::Policy(api::PolicyImported { revision, policies })
            }
            Change::ServiceCreate(req) => {
                let spec = services::request::from_request(&req)?;
                let key = spec.key.clone();
                self.check_service_namespace(&key.namespace)?;
                self.services.upsert(vec![spec], |_| format!("service {key}: "))?;
                self.sync_services(false)?;
                Outcome::Service(Box::new(self.services.to_api(self.services.get(&key)?)))
            }
            Change::ServiceImport { files } => {
                let keys = self.service_import(&files)?;
                Outcome::ServicesImported(api::ServicesImported {
                    services: keys.iter().map(|k| k.to_string()).collect(),
                })
            }
            Change::ServiceDelete { namespace, all: true, .. } => {
                self.check_service_namespace(&namespace)?;
                let keys: Vec<twill_service::ServiceKey> = self
                    .services
                    .specs()
                    .filter(|s| s.key.namespace == namespace)
                    .map(|s| s.key.clone())
                    .collect();
                self.services.delete(&keys)?;
                Outcome::ServicesImported(api::ServicesImported {
                    services: keys.iter().map(|k| k.to_string()).collect(),
                })
            }
            Change::ServiceDelete { name, namespace, all: false } => {
                let key = twill_service::ServiceKey::new(namespace, name);
                let info = self.services.to_api(self.services.get(&key)?);
                self.services.delete(std::slice::from_ref(&key))?;
                Outcome::Service(Box::new(info))
            }
            // Applied in `apply`, before any follow-up.
            Change::DnsAnswers { .. } | Change::FqdnExpire => Outcome::Synced,
        })
    }

    fn follow_up(&mut self, mut effects: Effects) -> Result<()> {
        // Services created, changed or deleted, and endpoints at a
        // selector-less service's backend address, change what toServices
        // allows; nothing does when no rule names services.
        if !effects.regenerate && self.policy_services()? != self.service_catalog {
            effects.regenerate = true;
        }
        if effects.regenerate {
            self.regenerate_all()?;
        }
        if effects.endpoints {
            self.sync_socket_namespaces()?;
        }
        // Remote endpoints are backends of selector services too.
        self.sync_services(effects.endpoints || effects.ipcache)?;
        if let Some(cluster) = &mut self.cluster {
            let records = self.endpoints.records()?;
            let published: Vec<(EndpointRecord, twill_service::resolve::EndpointView)> = records
                .into_iter()
                .map(|r| {
                    let view = endpoint_view(&r);
                    (r, view)
                })
                .collect();
            cluster.publish(&published);
        }
        if self.cluster.is_some() {
            let realized = self.policy_realized_revision()?;
            if let Some(cluster) = &mut self.cluster {
                cluster.publish_policy_revision(realized);
            }
        }
        if effects.ipcache && !effects.regenerate {
            let records = self.endpoints.records()?;
            self.sync_ipcache(&records)?;
        }
        if effects.routes {
            self.sync_routes()?;
            self.update_peers();
        }
        self.rebuild_directory()
    }

    // ---- cluster ---------------------------------------------------------

    /// A batch of other nodes' changes from the store.
    fn cluster_sync(&mut self, batch: mirror::Batch, effects: &mut Effects) -> Result<()> {
        if batch.kind == mirror::Kind::Services {
            let (resync, entries) = match batch.update {
                mirror::Update::Resync(all) => (true, all.into_iter().map(|(k, v)| (k, Some(v))).collect()),
                mirror::Update::Changes(changes) => (false, changes),
            };
            self.services.apply_stored(resync, &entries)?;
            return Ok(());
        }
        let Some(cluster) = &mut self.cluster else { return Ok(()) };
        let watched_ips = batch.kind == mirror::Kind::Ips && self.agent_events.is_some();
        let before: BTreeMap<Ipv4Addr, cluster::keys::IpRecord> = if watched_ips {
            cluster.remote_ips().map(|r| (r.ip, r.clone())).collect()
        } else {
            BTreeMap::new()
        };
        let delta = cluster.apply(batch);
        if watched_ips {
            let after: BTreeMap<Ipv4Addr, cluster::keys::IpRecord> =
                cluster.remote_ips().map(|r| (r.ip, r.clone())).collect();
            self.notify_ipcache(&before, &after);
        }
        effects.ipcache |= delta.ipcache;
        effects.routes |= delta.routes;
        effects.regenerate |= delta.identities;
        if delta.policies && self.policies.reload()? {
            effects.regenerate = true;
        }
        if delta.namespaces {
            // Namespace labels are part of every member's identity.
            for record in self.endpoints.records()? {
                let ns = self.namespaces.get_or_default(&record.namespace)?;
                let before = record.identity;
                let after = self.apply_identity(record, &ns, effects)?;
                if after.identity != before {
                    effects.endpoints = true;
                }
            }
        }
        Ok(())
    }

    /// Agent events for remote endpoints the ipcache learned or forgot.
    fn notify_ipcache(
        &self,
        before: &BTreeMap<Ipv4Addr, cluster::keys::IpRecord>,
        after: &BTreeMap<Ipv4Addr, cluster::keys::IpRecord>,
    ) {
        use twill_observe::agent_events::{ipcache_deleted, ipcache_upserted};
        for (ip, r) in after {
            let old = before.get(ip);
            if old == Some(r) {
                continue;
            }
            self.notify(|| {
                ipcache_upserted(
                    format!("{ip}/32"),
                    r.identity,
                    old.map(|o| o.identity),
                    r.node_ip.to_string(),
                    &r.namespace,
                    &r.name,
                )
            });
        }
        for (ip, r) in before.iter().filter(|(ip, _)| !after.contains_key(ip)) {
            self.notify(|| {
                ipcache_deleted(format!("{ip}/32"), r.identity, r.node_ip.to_string(), &r.namespace, &r.name)
            });
        }
    }

    /// A route to each other node's pod CIDR: native routing, via the
    /// node's address; tunnel mode, through the tunnel device to the node
    /// (for what the node itself sends; endpoints' traffic is
    /// encapsulated by the datapath). Only routes Twill made are touched.
    fn sync_routes(&mut self) -> Result<()> {
        let Some(cluster) = &self.cluster else { return Ok(()) };
        // The VNI of tunnel routes is this node's identity: a route with
        // another (a restart that got a new number) is rewritten.
        let vni = match cluster.routing() {
            RoutingMode::Native => 0,
            RoutingMode::Tunnel => cluster.identity(),
        };
        let wanted: BTreeMap<(Ipv4Addr, u8), (Ipv4Addr, u32)> = cluster
            .routes()
            .into_iter()
            .map(|(cidr, via)| ((cidr.network, cidr.prefix_len), (via, vni)))
            .collect();
        let native = || -> Result<Vec<(Ipv4Addr, u8, Ipv4Addr, u32)>> {
            Ok(netdev::list_routes_by_protocol()?
                .into_iter()
                .map(|(dst, len, via)| (dst, len, via, 0))
                .collect())
        };
        let (current, stale_kind) = match cluster.routing() {
            RoutingMode::Native => (native()?, netdev::list_tunnel_routes()?),
            RoutingMode::Tunnel => (netdev::list_tunnel_routes()?, native()?),
        };
        let current: BTreeMap<(Ipv4Addr, u8), (Ipv4Addr, u32)> =
            current.into_iter().map(|(dst, len, via, vni)| ((dst, len), (via, vni))).collect();
        // A route of the other mode's kind is a leftover of a restart with
        // another --routing-mode.
        for (dst, len, ..) in stale_kind {
            if !current.contains_key(&(dst, len)) {
                netdev::delete_route(dst, len)?;
            }
        }
        for key in current.keys().filter(|k| !wanted.contains_key(k)) {
            netdev::delete_route(key.0, key.1)?;
        }
        let router = self.config.pod_cidr.router();
        for (key, value) in &wanted {
            if current.get(key) == Some(value) {
                continue;
            }
            let (via, vni) = *value;
            match cluster.routing() {
                RoutingMode::Native => netdev::replace_route(key.0, key.1, via)?,
                RoutingMode::Tunnel => {
                    netdev::replace_tunnel_route(key.0, key.1, via, router, vni, netdev::TUNNEL_DEVICE)?
                }
            }
        }
        Ok(())
    }

    /// Loads what other nodes already published, so the first ipcache
    /// sync after a restart keeps their entries instead of dropping them
    /// until the mirrors catch up.
    fn cluster_initial_sync(&mut self) -> Result<()> {
        let Some(cluster) = &mut self.cluster else { return Ok(()) };
        let store = cluster.store();
        for (kind, prefix) in cluster.mirrored() {
            if !matches!(kind, mirror::Kind::Nodes | mirror::Kind::Ips) {
                continue;
            }
            let (entries, revision) = store.list_at(&prefix)?;
            cluster.apply(mirror::Batch {
                kind,
                update: mirror::Update::Resync(entries.into_iter().map(|(k, e)| (k, e.value)).collect()),
                revision,
            });
        }
        Ok(())
    }

    /// Cluster mode: the part of the cluster the mirrors keep, the
    /// heartbeat, and what the API's node listing needs.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    pub fn node_list(&self) -> Result<Vec<api::NodeInfo>> {
        match &self.cluster {
            Some(cluster) => Ok(cluster.node_list()),
            None => Err(AgentError::Invalid(
                "this agent runs standalone: nodes exist in cluster mode (--kvstore-endpoints)".into(),
            )),
        }
    }

    /// Hands the agent the ring its agent events go to.
    pub fn set_agent_events(&mut self, events: Arc<twill_observe::AgentEvents>) {
        events.push(twill_observe::agent_events::agent_started());
        self.agent_events = Some(events);
    }

    fn notify(&self, event: impl FnOnce() -> twill_observe::proto::flow::AgentEvent) {
        if let Some(events) = &self.agent_events {
            events.push(event());
        }
    }

    /// Hands the agent the peer service's node list to keep.
    pub fn set_peers(&mut self, peers: twill_observe::Peers) {
        self.peers = Some(peers);
        self.update_peers();
    }

    fn update_peers(&self) {
        if let (Some(peers), Some(cluster)) = (&self.peers, &self.cluster) {
            peers.set(cluster.peers());
        }
    }

    /// Cluster mode: the policy revision each node enforces.
    pub fn cluster_policy_revisions(&self) -> Result<BTreeMap<String, u64>> {
        match &self.cluster {
            Some(cluster) => cluster.policy_revisions(),
            None => Err(AgentError::Invalid("--all-nodes is for cluster mode (--kvstore-endpoints)".into())),
        }
    }

    pub fn node_get(&self, name: &str) -> Result<api::NodeInfo> {
        self.node_list()?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| AgentError::NotFound(format!("node {name:?} is not in the cluster")))
    }

    // ---- endpoints -------------------------------------------------------

    fn endpoint_create(
        &mut self,
        name: &str,
        namespace: &str,
        labels: &[String],
        ports: &[String],
        attached: Option<(Attachment, String)>,
        effects: &mut Effects,
    ) -> Result<api::Endpoint> {
        let ns = self.namespaces.get(namespace)?;
        let mut record = self.endpoints.prepare(name, namespace, labels, ports, attached)?;
        match self.bring_up(&mut record, &ns, effects) {
            Ok(()) => {
                info!(endpoint = %format!("{namespace}/{name}"), id = record.id, ip = %record.ip, identity = record.identity, "endpoint created");
                let api = self.to_api(&record);
                self.notify(|| {
                    twill_observe::agent_events::endpoint_created(
                        record.id as u64,
                        api.security_labels.clone(),
                        namespace,
                        name,
                    )
                });
                Ok(api)
            }
            Err(e) => {
                warn!("creating endpoint {namespace}/{name} failed, rolling back: {}", e.chain());
                self.tear_down(&record);
                let _ = self.endpoints.release_address(record.ip);
                Err(e)
            }
        }
    }

    /// Identity, devices, programs, maps, then the record: the record is
    /// written last, so a crash midway leaves only garbage that the next
    /// start collects.
    fn bring_up(
        &mut self,
        record: &mut EndpointRecord,
        ns: &NamespaceRecord,
        effects: &mut Effects,
    ) -> Result<()> {
        let started = Instant::now();
        let owner = record.owner(self.endpoints.node());
        record.identity =
            self.identities.acquire(&security_labels(&record.labels, &record.namespace, ns), &owner)?;
        let identity_done = started.elapsed();
        self.datapath.detach(&record.host_device)?;
        self.endpoints.plumb(record)?;
        let plumbing_done = started.elapsed();
        self.datapath.attach(&record.host_device)?;
        let attach_done = started.elapsed();
        // Policy before the endpoint map entry: the endpoint is reachable
        // only once its policy is in place.
        self.regenerate_endpoint(record)?;
        self.program_maps(record)?;
        self.endpoints.save(record)?;
        if self.identities.owners(record.identity)?.len() == 1 {
            // A new identity: other endpoints' policies may select it.
            effects.regenerate = true;
        }
        debug!(
            identity = ?identity_done,
            plumbing = ?(plumbing_done - identity_done),
            attach = ?(attach_done - plumbing_done),
            maps_and_record = ?(started.elapsed() - attach_done),
            "endpoint bring-up timings"
        );
        Ok(())
    }

    fn program_maps(&mut self, r: &EndpointRecord) -> Result<()> {
        self.write_endpoint_entry(r)?;
        self.datapath.ipcache_map().upsert(&twill_datapath::IpcacheEntry::local(r.ip, 32, r.identity))?;
        Ok(())
    }

    /// Whether the agent last found `device` (an endpoint's host device)
    /// shaped: for the qdisc watcher, which asks for a [`Change::Shaping`]
    /// only when the kernel now says otherwise.
    pub fn is_shaped(&self, device: &str) -> bool {
        self.shaped.contains(device)
    }

    /// Reads whether `device` (every endpoint's, for `None`) is shaped and
    /// rewrites the endpoint map entries whose flag changes. Local
    /// traffic to and from a shaped endpoint then goes through the host
    /// stack and its shapers (ENDPOINT_F_SHAPED in bpf/lxc.c).
    fn sync_shaping(&mut self, device: Option<&str>) -> Result<()> {
        let records = self.endpoints.records()?;
        for r in records.iter().filter(|r| device.is_none_or(|d| d == r.host_device)) {
            let shaped = twill_datapath::netdev::device_shaped(&r.host_device)?;
            if shaped == self.shaped.contains(&r.host_device) {
                continue;
            }
            info!(endpoint = %format!("{}/{}", r.namespace, r.name), device = %r.host_device, shaped, "endpoint shaping changed");
            if shaped {
                self.shaped.insert(r.host_device.clone());
            } else {
                self.shaped.remove(&r.host_device);
            }
            self.write_endpoint_entry(r)?;
        }
        Ok(())
    }

    /// The endpoint map entry: where to deliver, and which directions
    /// enforce policy (the datapath reports allowed verdicts only there).
    fn write_endpoint_entry(&mut self, r: &EndpointRecord) -> Result<()> {
        let (ingress, egress) = self.realizer.enforced(r.id as u16);
        let flags = if ingress { twill_abi::ENDPOINT_F_INGRESS_ENFORCED } else { 0 }
            | if egress { twill_abi::ENDPOINT_F_EGRESS_ENFORCED } else { 0 }
            | if self.shaped.contains(&r.host_device) { twill_abi::ENDPOINT_F_SHAPED } else { 0 }
            | if self.debug_endpoints.contains(&r.id) { twill_abi::ENDPOINT_F_DEBUG } else { 0 };
        let info = EndpointInfo {
            ifindex: self.endpoints.ifindex(r)?,
            endpoint_id: r.id,
            identity: r.identity,
            flags,
            mac: r.mac,
            host_mac: r.host_mac,
        };
        self.datapath.endpoint_map().upsert(r.ip, info)?;
        Ok(())
    }

    /// Removes everything an endpoint has in the kernel and its identity
    /// reference. Idempotent; errors are logged, not returned, because it
    /// runs on paths that are already failing or must finish.
    fn tear_down(&mut self, r: &EndpointRecord) {
        // Its id may be given to another endpoint later.
        self.debug_endpoints.remove(&r.id);
        let what = format!("{}/{}", r.namespace, r.name);
        let log = |step: &str, e: AgentError| warn!("{what}: {step}: {}", e.chain());
        if let Err(e) = self.datapath.endpoint_map().remove(r.ip) {
            log("removing endpoint map entry", e.into());
        }
        if let Err(e) = self.datapath.ipcache_map().remove(r.ip, 32) {
            log("removing ipcache entry", e.into());
        }
        // Devices first: a tcx link detached from a live device waits for
        // an RCU grace period under the rtnl lock; one whose device is
        // gone is only unpinned.
        if let Err(e) = self.endpoints.unplumb(r) {
            log("removing devices", e);
        }
        if let Err(e) = self.datapath.detach(&r.host_device) {
            log("detaching programs", e.into());
        }
        self.shaped.remove(&r.host_device);
        if let Err(e) = self.realizer.forget(self.datapath.policy_map(), r.id as u16) {
            log("removing policy map entries", e);
        }
        self.redirects.forget_endpoint(r.id as u16);
        self.push_proxy();
        if r.identity != 0 {
            if let Err(e) = self.identities.release(r.identity, &r.owner(self.endpoints.node())) {
                log("releasing identity", e);
            }
        }
    }

    // ---- CNI attachments ---------------------------------------------------

    fn cni_add(&mut self, add: api::CniAdd, effects: &mut Effects) -> Result<api::CniAttached> {
        if !add.netns.starts_with('/') {
            return Err(AgentError::Invalid(format!("CNI_NETNS {:?} must be an absolute path", add.netns)));
        }
        if !Path::new(&add.netns).exists() {
            return Err(AgentError::Invalid(format!("CNI_NETNS {} does not exist", add.netns)));
        }
        if let Some(r) = self.endpoints.find_attached(&add.container_id, &add.ifname)? {
            return Err(AgentError::AlreadyExists(format!(
                "container {} interface {} is already attached as endpoint {}/{}; DEL it first",
                add.container_id, add.ifname, r.namespace, r.name
            )));
        }
        // Orchestrators do not ask Twill to create their namespaces; a
        // namespace made here goes again if the ADD fails.
        let made_namespace = match self.namespaces.get(&add.namespace) {
            Ok(_) => false,
            Err(AgentError::NotFound(_)) => {
                self.namespaces.create(&add.namespace, &[])?;
                true
            }
            Err(e) => return Err(e),
        };
        let attachment = Attachment {
            network: add.network.clone(),
            container_id: add.container_id.clone(),
            ifname: add.ifname.clone(),
        };
        let created = self.endpoint_create(
            &add.name,
            &add.namespace,
            &add.labels,
            &[],
            Some((attachment, add.netns)),
            effects,
        );
        match created {
            Ok(endpoint) => Ok(api::CniAttached {
                endpoint,
                ifname: add.ifname,
                prefix_len: 32,
                gateway: self.endpoints.router().to_string(),
            }),
            Err(e) => {
                if made_namespace {
                    let _ = self.namespaces.delete(&add.namespace, 0);
                }
                Err(e)
            }
        }
    }

    fn cni_del(&mut self, target: &api::CniAttachmentRef, effects: &mut Effects) -> Result<api::CniRemoved> {
        let Some(r) = self.endpoints.find_attached(&target.container_id, &target.ifname)? else {
            return Ok(api::CniRemoved::default());
        };
        self.endpoint_delete(&r.name, &r.namespace, effects)?;
        Ok(api::CniRemoved { removed: vec![format!("{}/{}", r.namespace, r.name)] })
    }

    fn cni_gc(&mut self, gc: &api::CniGc, effects: &mut Effects) -> Result<api::CniRemoved> {
        let valid: BTreeSet<(&str, &str)> =
            gc.valid.iter().map(|a| (a.container_id.as_str(), a.ifname.as_str())).collect();
        let mut removed = Vec::new();
        for r in self.endpoints.records()? {
            let Some(a) = &r.attachment else { continue };
            if a.network != gc.network || valid.contains(&(a.container_id.as_str(), a.ifname.as_str())) {
                continue;
            }
            info!(container = %a.container_id, ifname = %a.ifname, "GC: attachment no longer valid");
            self.endpoint_delete(&r.name, &r.namespace, effects)?;
            removed.push(format!("{}/{}", r.namespace, r.name));
        }
        Ok(api::CniRemoved { removed })
    }

    /// CNI CHECK: what is wrong with an attachment; empty when nothing.
    pub fn cni_check(&self, check: &api::CniCheck) -> Result<api::CniChecked> {
        let r = self.endpoints.find_attached(&check.container_id, &check.ifname)?.ok_or_else(|| {
            AgentError::NotFound(format!(
                "container {} has no interface {} attached by Twill",
                check.container_id, check.ifname
            ))
        })?;
        let mut problems = self.endpoints.check_attached(&r, &check.netns)?;
        let own = format!("{}/32", r.ip);
        for address in &check.addresses {
            if *address != own {
                problems.push(format!("prevResult address {address} is not the endpoint's address {own}"));
            }
        }
        if self.datapath.endpoint_entries()?.iter().all(|(ip, _)| *ip != r.ip) {
            problems.push(format!("the datapath does not know endpoint address {}", r.ip));
        }
        Ok(api::CniChecked { problems })
    }

    /// Applies what twill-cni queued while the agent was down, oldest
    /// first. An entry that fails stays for the next start; one that cannot
    /// be read is set aside (renamed `.bad`) so it does not block the rest.
    pub fn drain_cni_queue(&mut self) {
        let dir = self.config.cni_queue_dir.clone();
        let mut files: Vec<std::path::PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(_) => return,
        };
        files.sort();
        for file in files {
            let entry = std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<api::CniQueued>(&b).map_err(|e| e.to_string()));
            let change = match entry {
                Ok(api::CniQueued::Del(target)) => Change::CniDel(target),
                Ok(api::CniQueued::Gc(gc)) => Change::CniGc(gc),
                Err(e) => {
                    warn!("CNI queue entry {}: {e}; set aside", file.display());
                    let _ = std::fs::rename(&file, file.with_extension("bad"));
                    continue;
                }
            };
            match self.apply(change.clone()) {
                Ok(_) => {
                    info!(?change, "applied a CNI request queued while the agent was down");
                    let _ = std::fs::remove_file(&file);
                }
                Err(e) => warn!("CNI queue entry {}: {}; kept for the next start", file.display(), e.chain()),
            }
        }
    }

    fn endpoint_delete(
        &mut self,
        name: &str,
        namespace: &str,
        effects: &mut Effects,
    ) -> Result<api::Endpoint> {
        let record = self.endpoints.get(namespace, name)?;
        self.endpoints.forget(&record)?;
        self.tear_down(&record);
        self.endpoints.release_address(record.ip)?;
        // Its identity is gone: drop it from other endpoints' maps. What
        // its lookups allowed others goes with it.
        effects.regenerate = !self.identities.exists(record.identity)?;
        if self.fqdn.remove_endpoint(record.id as u64) {
            self.directory.set_dns_names(self.fqdn.names());
            effects.regenerate = true;
            self.save_fqdn()?;
        }
        info!(endpoint = %format!("{namespace}/{name}"), "endpoint deleted");
        let mut out = self.to_api(&record);
        out.state = "deleted".into();
        self.notify(|| {
            twill_observe::agent_events::endpoint_deleted(
                record.id as u64,
                out.security_labels.clone(),
                namespace,
                name,
            )
        });
        Ok(out)
    }

    fn endpoint_label(
        &mut self,
        name: &str,
        namespace: &str,
        set: &[String],
        remove: &[String],
        effects: &mut Effects,
    ) -> Result<api::Endpoint> {
        let mut record = self.endpoints.get(namespace, name)?;
        let additions = LabelSet::parse_list(set.iter().map(String::as_str))?;
        for key in remove {
            if record.labels.get(key).is_none() {
                return Err(AgentError::Invalid(format!(
                    "endpoint {namespace}/{name} has no label {key:?} to remove"
                )));
            }
        }
        for key in remove {
            record.labels.remove(key);
        }
        record.labels.extend(&additions);
        let ns = self.namespaces.get(namespace)?;
        let record = self.apply_identity(record, &ns, effects)?;
        Ok(self.to_api(&record))
    }

    /// Moves an endpoint to the identity its (possibly changed) labels
    /// imply: new identity first, then the maps, then release the old one,
    /// so the endpoint is never without a valid identity.
    fn apply_identity(
        &mut self,
        mut record: EndpointRecord,
        ns: &NamespaceRecord,
        effects: &mut Effects,
    ) -> Result<EndpointRecord> {
        let owner = record.owner(self.endpoints.node());
        let old = record.identity;
        let new = self.identities.acquire(&security_labels(&record.labels, &record.namespace, ns), &owner)?;
        record.identity = new;
        if let Err(e) = self.program_maps(&record) {
            if new != old {
                let _ = self.identities.release(new, &owner);
            }
            return Err(e);
        }
        self.endpoints.save(&record)?;
        if new != old {
            self.identities.release(old, &owner)?;
            info!(endpoint = %format!("{}/{}", record.namespace, record.name), old, new, "identity changed");
            effects.regenerate = true;
        }
        Ok(record)
    }

    fn to_api(&self, r: &EndpointRecord) -> api::Endpoint {
        let security = self.identities.labels(r.identity).map(|l| l.to_strings()).unwrap_or_default();
        let state = if self.endpoints.present(r) { "ready" } else { "not-ready" };
        let id = r.id as u16;
        let (ingress_enforced, egress_enforced) = self.realizer.enforced(id);
        api::Endpoint {
            id: r.id,
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            ipv4: r.ip.to_string(),
            identity: r.identity,
            labels: plain(&r.labels),
            security_labels: security,
            ports: r.ports.iter().map(format_named_port).collect(),
            policy_revision: self.realizer.revision(id),
            ingress_enforced,
            egress_enforced,
            shaped: self.shaped.contains(&r.host_device),
            netns: r.netns.clone(),
            host_device: r.host_device.clone(),
            mac: netdev::format_mac(&r.mac),
            host_mac: netdev::format_mac(&r.host_mac),
            state: state.into(),
        }
    }

    pub fn endpoint_get(&self, name: &str, namespace: &str) -> Result<api::Endpoint> {
        Ok(self.to_api(&self.endpoints.get(namespace, name)?))
    }

    pub fn endpoint_list(&self, namespace: Option<&str>) -> Result<Vec<api::Endpoint>> {
        if let Some(ns) = namespace {
            self.namespaces.get(ns)?;
        }
        let mut out: Vec<api::Endpoint> = self
            .endpoints
            .records()?
            .iter()
            .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
            .map(|r| self.to_api(r))
            .collect();
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    // ---- namespaces ------------------------------------------------------

    pub fn namespace_get(&self, name: &str) -> Result<api::NamespaceInfo> {
        let record = self.namespaces.get(name)?;
        let endpoints = self.endpoints.records()?.iter().filter(|r| r.namespace == name).count();
        Ok(api::NamespaceInfo { name: name.into(), labels: plain(&record.labels), endpoints })
    }

    pub fn namespace_list(&self) -> Result<Vec<api::NamespaceInfo>> {
        self.namespaces.names()?.iter().map(|n| self.namespace_get(n)).collect()
    }

    // ---- identities ------------------------------------------------------

    pub fn identity_list(&self) -> Result<Vec<api::IdentityInfo>> {
        let mut users: BTreeMap<u32, usize> = BTreeMap::new();
        for r in self.endpoints.records()? {
            *users.entry(r.identity).or_insert(0) += 1;
        }
        let mut out: Vec<api::IdentityInfo> = twill_identity::RESERVED
            .iter()
            .map(|(id, name)| api::IdentityInfo {
                id: *id,
                labels: vec![format!("reserved:{name}")],
                reserved: true,
                endpoints: 0,
            })
            .collect();
        for identity in self.identities.allocated()? {
            out.push(api::IdentityInfo {
                id: identity.id,
                labels: identity.labels.to_strings(),
                reserved: false,
                endpoints: users.get(&identity.id).copied().unwrap_or(0),
            });
        }
        Ok(out)
    }

    pub fn identity_get(&self, id: u32) -> Result<api::IdentityInfo> {
        self.identity_list()?
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| AgentError::NotFound(format!("identity {id} does not exist")))
    }

    // ---- services --------------------------------------------------------

    fn check_service_namespace(&self, namespace: &str) -> Result<()> {
        match self.namespaces.get(namespace) {
            Ok(_) => Ok(()),
            Err(AgentError::NotFound(_)) => Err(AgentError::NotFound(format!(
                "namespace {namespace} does not exist; create it with `twill namespace create {namespace}`"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Kubernetes Service and EndpointSlice documents: every file parsed
    /// and every service checked before anything is applied.
    /// Kubernetes Service and EndpointSlice documents: every file parsed
    /// and every service checked before anything is applied.
    fn service_import(&mut self, files: &[api::PolicyFile]) -> Result<Vec<twill_service::ServiceKey>> {
        use twill_service::k8s;
        let mut problems = Vec::new();
        let mut incoming = Vec::new();
        let mut slices = Vec::new();
        for file in files {
            match k8s::parse_services_with(&file.name, &file.content, self.config.node_port_range.clone()) {
                Ok(set) => {
                    incoming.extend(set.services);
                    slices.extend(set.endpoint_slices);
                }
                Err(errors) => problems.extend(errors.iter().map(|e| e.to_string())),
            }
        }
        if !problems.is_empty() {
            return Err(AgentError::Invalid(problems.join("\n")));
        }
        // Slices of services in other files of this import, then slices of
        // services the agent already has: those services take the slices'
        // endpoints as their backends.
        let leftover = k8s::merge(&mut incoming, &slices);
        let mut by_service: BTreeMap<twill_service::ServiceKey, Vec<&k8s::EndpointSlice>> = BTreeMap::new();
        for slice in leftover {
            by_service
                .entry(twill_service::ServiceKey::new(slice.namespace.clone(), slice.service.clone()))
                .or_default()
                .push(slice);
        }
        for (key, group) in by_service {
            let names: Vec<String> =
                group.iter().map(|s| format!("EndpointSlice {}/{}", s.namespace, s.name)).collect();
            match self.services.get(&key) {
                Ok(known) if known.selector.is_none() => {
                    let mut updated = known.clone();
                    updated.backends = k8s::backends_of(&group);
                    incoming.push(updated);
                }
                Ok(_) => problems.push(format!(
                    "{}: metadata.labels.{}: service {key} has a selector; its backends are its endpoints",
                    names.join(", "),
                    k8s::SERVICE_NAME_LABEL
                )),
                Err(_) => problems.push(format!(
                    "{}: metadata.labels.{}: service {key} does not exist",
                    names.join(", "),
                    k8s::SERVICE_NAME_LABEL
                )),
            }
        }
        if !problems.is_empty() {
            return Err(AgentError::Invalid(problems.join("\n")));
        }
        for ns in incoming.iter().map(|s| s.key.namespace.clone()).collect::<BTreeSet<String>>() {
            self.check_service_namespace(&ns)?;
        }
        let keys: Vec<String> = incoming.iter().map(|s| format!("Service {}: ", s.key)).collect();
        self.services.upsert(incoming, |i| keys[i].clone())
    }

    /// Brings the kernel's service maps in line with services and endpoints.
    fn sync_services(&mut self, endpoints_changed: bool) -> Result<()> {
        // Without endpoint changes the services keep the endpoints they saw.
        let views: Vec<twill_service::resolve::EndpointView> = if endpoints_changed {
            let mut views: Vec<_> = self.endpoints.records()?.iter().map(endpoint_view).collect();
            views.extend(self.cluster.iter().flat_map(|c| c.remote_views()));
            views
        } else {
            Vec::new()
        };
        self.services.sync(self.datapath.lb_maps(), &views, endpoints_changed)?;
        Ok(())
    }

    /// The namespaces whose sockets the socket hooks translate: the node's
    /// own and every endpoint's.
    fn sync_socket_namespaces(&mut self) -> Result<()> {
        let records = self.endpoints.records()?;
        let mut desired: BTreeMap<u64, twill_abi::LbNetnsValue> = BTreeMap::new();
        let node = twill_datapath::current_netns_cookie().map_err(|source| AgentError::Io {
            what: "reading the node's network namespace cookie".into(),
            source,
        })?;
        desired.insert(node, twill_abi::LbNetnsValue { endpoint_id: 0, identity: twill_abi::IDENTITY_HOST });
        let live: BTreeSet<u32> = records.iter().map(|r| r.id).collect();
        self.netns_cookies.retain(|id, _| live.contains(id));
        for r in &records {
            let cookie = match self.netns_cookies.get(&r.id) {
                Some(c) => *c,
                None => match twill_datapath::netns_cookie(&self.endpoints.netns_path(r)) {
                    Ok(c) => {
                        self.netns_cookies.insert(r.id, c);
                        c
                    }
                    Err(e) => {
                        warn!(
                            "{}/{}: no network namespace cookie, services unavailable to it: {e}",
                            r.namespace, r.name
                        );
                        continue;
                    }
                },
            };
            desired.insert(cookie, twill_abi::LbNetnsValue { endpoint_id: r.id, identity: r.identity });
        }
        let map = self.datapath.netns_map();
        let current = match self.netns_written.take() {
            Some(written) => written,
            None => map.entries()?.into_iter().collect(),
        };
        for cookie in current.keys().filter(|c| !desired.contains_key(c)) {
            map.remove(*cookie)?;
        }
        for (cookie, value) in &desired {
            if current.get(cookie) != Some(value) {
                map.upsert(*cookie, *value)?;
            }
        }
        // Only once every write succeeded: a failure reads the map again.
        self.netns_written = Some(desired);
        Ok(())
    }

    pub fn service_get(&self, name: &str, namespace: &str) -> Result<api::ServiceInfo> {
        let key = twill_service::ServiceKey::new(namespace, name);
        Ok(self.services.to_api(self.services.get(&key)?))
    }

    pub fn service_list(&self, namespace: Option<&str>) -> Result<Vec<api::ServiceInfo>> {
        if let Some(ns) = namespace {
            self.namespaces.get(ns)?;
        }
        Ok(self
            .services
            .specs()
            .filter(|s| namespace.is_none_or(|ns| s.key.namespace == ns))
            .map(|s| self.services.to_api(s))
            .collect())
    }

    pub fn bpf_lb_list(&mut self) -> Result<Vec<api::BpfLbFrontend>> {
        inspect::load_balancer(self.datapath.lb_maps())
    }

    // ---- policy ----------------------------------------------------------

    /// Resolves and realizes the policy of one endpoint that may not be in
    /// the store yet (during creation).
    fn regenerate_endpoint(&mut self, record: &EndpointRecord) -> Result<()> {
        let universe = self.universe()?;
        let mut peer_ports = named_ports_by_identity(&self.endpoints.records()?);
        peer_ports.entry(record.identity).or_default().extend(record.ports.iter().cloned());
        let labels = self.identities.labels(record.identity)?;
        let resolved = resolve_for(&labels, &record.ports, &universe, self.policies.rules(), &peer_ports);
        let ports = self.redirects.sync_endpoint(record.id as u16, record.ip, record.identity, &resolved);
        self.realizer.realize(
            self.datapath.policy_map(),
            record.id as u16,
            &resolved,
            self.policies.revision(),
            &|k| ports.get(k).copied().unwrap_or(0),
        )?;
        self.push_proxy();
        Ok(())
    }

    /// Recomputes every local endpoint's policy and the ipcache, and
    /// removes map state of endpoints that are gone.
    fn regenerate_all(&mut self) -> Result<()> {
        let started = Instant::now();
        let services = self.policy_services()?;
        // Selector-less services' backends are CIDRs too (Cilium turns them
        // into toCIDR /32s): they get identities and ipcache entries.
        let mut prefixes = self.policies.cidr_prefixes();
        prefixes.extend(services.backend_prefixes(self.policies.rules()));
        // Every address a toFQDNs selector selects gets a /32 identity, as
        // Cilium gives each learned IP one.
        self.fqdn.set_selectors(self.policies.fqdn_selectors());
        prefixes.extend(self.fqdn.prefixes());
        self.identities.sync_cidrs(prefixes);
        let universe = self.universe_with(services.clone())?;
        let records = self.endpoints.records()?;
        let peer_ports = named_ports_by_identity(&records);
        let mut by_identity: BTreeMap<u32, LabelSet> = BTreeMap::new();
        for r in &records {
            if let std::collections::btree_map::Entry::Vacant(slot) = by_identity.entry(r.identity) {
                slot.insert(self.identities.labels(r.identity)?);
            }
        }
        let revision = self.policies.revision();
        for r in &records {
            let resolved = resolve_for(
                &by_identity[&r.identity],
                &r.ports,
                &universe,
                self.policies.rules(),
                &peer_ports,
            );
            let before = self.realizer.enforced(r.id as u16);
            let ports = self.redirects.sync_endpoint(r.id as u16, r.ip, r.identity, &resolved);
            let realized =
                self.realizer.realize(self.datapath.policy_map(), r.id as u16, &resolved, revision, &|k| {
                    ports.get(k).copied().unwrap_or(0)
                });
            self.notify(|| {
                let labels = by_identity[&r.identity].to_strings();
                let error = realized.as_ref().err().map(|e| e.to_string());
                twill_observe::agent_events::endpoint_regenerated(r.id as u64, labels, error)
            });
            realized?;
            if self.realizer.enforced(r.id as u16) != before {
                self.write_endpoint_entry(r)?;
            }
        }
        let live: BTreeSet<u16> = records.iter().map(|r| r.id as u16).collect();
        for id in self.realizer.endpoints().into_iter().filter(|id| !live.contains(id)) {
            self.realizer.forget(self.datapath.policy_map(), id)?;
            self.redirects.forget_endpoint(id);
        }
        self.sync_ipcache(&records)?;
        self.push_proxy();
        // Only once realized: a failure midway is retried by the next change.
        self.service_catalog = services;
        debug!(endpoints = records.len(), elapsed = ?started.elapsed(), "policy regenerated");
        Ok(())
    }

    /// The services toServices rules resolve against; none when no rule
    /// names services, so that 30,000 services cost nothing then.
    fn policy_services(&self) -> Result<ServiceCatalog> {
        if !self.policies.uses_services() {
            return Ok(ServiceCatalog::default());
        }
        Ok(catalog(self.services.specs(), &self.endpoints.records()?))
    }

    /// Every identity policy can refer to, and the services it can name.
    fn universe(&self) -> Result<Universe> {
        self.universe_with(self.policy_services()?)
    }

    fn universe_with(&self, services: ServiceCatalog) -> Result<Universe> {
        let local_node = self.cluster.as_ref().map(|c| c.node_identity_labels());
        Ok(self
            .identities
            .universe(local_node)?
            .with_services(services)
            .with_fqdn_selections(self.fqdn.selections()))
    }

    /// Keeps the FQDN cache in the node's store, so a restarted agent
    /// allows what this one did without waiting for new lookups.
    fn save_fqdn(&self) -> Result<()> {
        let ids: Vec<u64> = self.endpoints.records()?.iter().map(|r| r.id as u64).collect();
        self.store.put_json(FQDN_CACHE_KEY, &self.fqdn.stored(ids))?;
        Ok(())
    }

    /// Whether some DNS-learned address has lapsed ([`Change::FqdnExpire`]).
    pub fn fqdn_due(&self) -> bool {
        self.fqdn.due()
    }

    /// Hands the DNS proxy's tables to the agent, which keeps them current.
    pub fn set_dns_tables(&mut self, tables: Arc<DnsTables>) {
        self.dns_tables = Some(tables);
        self.push_proxy();
    }

    fn sync_ipcache(&mut self, records: &[EndpointRecord]) -> Result<()> {
        let cidrs: Vec<(Ipv4Addr, u8, u32)> =
            self.identities.cidr_entries().map(|(p, id)| (Ipv4Addr::from(p.addr), p.len, id)).collect();
        let mut desired = DesiredIpcache::new(
            host_addresses(self.config.pod_cidr.router()),
            cidrs,
            records.iter().map(|r| (r.ip, r.identity)),
        );
        if let Some(cluster) = &self.cluster {
            for entry in cluster.remote_ipcache() {
                desired.insert_remote(entry.ip, 32, entry.identity, entry.tunnel_endpoint, entry.node);
            }
        }
        ipcache::sync(self.datapath.ipcache_map(), &desired)?;
        Ok(())
    }

    /// Hands the proxy to the agent and gives it the redirects there are.
    pub fn set_proxy(&mut self, proxy: Arc<dyn ProxyControl>) {
        self.proxy = Some(proxy);
        self.push_proxy();
    }

    /// (connections, requests) the L7 proxy handled; zeros without one.
    pub fn proxy_counters(&self) -> (u64, u64) {
        self.proxy.as_ref().map_or((0, 0), |p| p.counters())
    }

    /// Gives the proxy every redirect and the ipcache to name peers by. A
    /// failure is logged: the datapath drops what the proxy cannot take,
    /// and the next change tries again.
    fn push_proxy(&mut self) {
        let Some(proxy) = &self.proxy else { return };
        let ipcache = match self.datapath.ipcache_map().entries() {
            Ok(entries) => entries
                .into_iter()
                .map(|e| twill_proxy::config::IpcacheEntry {
                    ip: e.ip,
                    prefix_len: e.prefix_len,
                    identity: e.identity,
                })
                .collect::<Vec<_>>(),
            Err(e) => {
                warn!("reading the ipcache for the proxy: {e}");
                return;
            }
        };
        if let Some(tables) = &self.dns_tables {
            let endpoints = match self.endpoints.records() {
                Ok(records) => records.iter().map(|r| (r.ip, (r.id as u64, r.identity))).collect(),
                Err(e) => {
                    warn!("reading endpoints for the DNS proxy: {}", e.chain());
                    return;
                }
            };
            let rules = self.redirects.dns().iter().map(|(id, r)| (*id as u64, r.clone())).collect();
            tables.replace(DnsView { endpoints, rules, ipcache: ipcache.clone() });
        }
        let config = twill_proxy::config::ProxyConfig { redirects: self.redirects.all(), ipcache };
        if let Err(e) = proxy.apply(config) {
            warn!("configuring the L7 proxy: {e}");
        }
    }

    pub fn policy_get(&self) -> api::PolicyList {
        self.policies.list()
    }

    pub fn policy_revision(&self) -> u64 {
        self.policies.revision()
    }

    /// The oldest revision any endpoint enforces (the current one if there
    /// are no endpoints).
    pub fn policy_realized_revision(&self) -> Result<u64> {
        Ok(self
            .endpoints
            .records()?
            .iter()
            .map(|r| self.realizer.revision(r.id as u16))
            .min()
            .unwrap_or(self.policies.revision()))
    }

    fn trace_party(
        &self,
        endpoint: &Option<String>,
        namespace: &Option<String>,
        labels: &[String],
        side: &str,
    ) -> Result<Party> {
        match (endpoint, labels.is_empty()) {
            (Some(name), true) => {
                let ns = namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.into());
                let r = self.endpoints.get(&ns, name)?;
                Ok(Party {
                    identity: r.identity,
                    labels: self.identities.labels(r.identity)?,
                    ports: r.ports.clone(),
                    name: format!("endpoint {ns}/{name}"),
                })
            }
            (None, false) => {
                let mut set = LabelSet::parse_list(labels.iter().map(String::as_str))?;
                if let Some(ns) = namespace {
                    set = security_labels(&set, ns, &self.namespaces.get(ns)?);
                }
                // Labels nobody holds get a number no identity has.
                let identity = self.identities.lookup(&set)?.unwrap_or(u32::MAX - 1);
                Ok(Party {
                    identity,
                    labels: set,
                    ports: vec![],
                    name: format!("labels {}", labels.join(",")),
                })
            }
            _ => Err(AgentError::Invalid(format!("give either --{side}-endpoint or --{side}-labels"))),
        }
    }

    pub fn policy_trace(&self, req: &api::TraceRequest) -> Result<api::TraceResult> {
        let (protocol, port) = parse_dport(&req.dport)?;
        let src = self.trace_party(&req.src_endpoint, &req.src_namespace, &req.src_labels, "src")?;
        let dst = self.trace_party(&req.dst_endpoint, &req.dst_namespace, &req.dst_labels, "dst")?;
        let peer_ports = named_ports_by_identity(&self.endpoints.records()?);
        Ok(trace(&self.universe()?, self.policies.rules(), peer_ports, &src, &dst, protocol, port))
    }

    // ---- datapath views --------------------------------------------------

    pub fn bpf_ipcache(&self) -> Result<Vec<api::IpcacheEntry>> {
        inspect::ipcache(&self.datapath)
    }

    pub fn bpf_endpoints(&self) -> Result<Vec<api::BpfEndpoint>> {
        inspect::endpoints(&self.datapath)
    }

    pub fn bpf_metrics(&self) -> Result<Vec<api::MetricsRow>> {
        inspect::metrics(&self.datapath)
    }

    pub fn bpf_ct_list(&self) -> Result<Vec<api::CtRow>> {
        inspect::conntrack(&self.datapath)
    }

    pub fn bpf_policy_get(&self, name: &str, namespace: &str) -> Result<api::BpfPolicy> {
        let r = self.endpoints.get(namespace, name)?;
        let id = r.id as u16;
        // Provenance comes from the resolver; verdicts from the kernel map.
        let universe = self.universe()?;
        let labels = self.identities.labels(r.identity)?;
        let peer_ports = named_ports_by_identity(&self.endpoints.records()?);
        let resolved = resolve_for(&labels, &r.ports, &universe, self.policies.rules(), &peer_ports);
        let origins: BTreeMap<PolicyEntry, Vec<String>> = resolved
            .entries
            .iter()
            .map(|(k, e)| (to_entry(id, k), e.origins.iter().map(|o| o.to_string()).collect()))
            .collect();
        let (ingress_enforced, egress_enforced) = self.realizer.enforced(id);
        Ok(api::BpfPolicy {
            endpoint_id: r.id,
            identity: r.identity,
            revision: self.realizer.revision(id),
            ingress_enforced,
            egress_enforced,
            entries: inspect::policy_entries(&self.datapath, id, &universe, &origins)?,
        })
    }

    // ---- status and metrics ---------------------------------------------

    fn change_endpoint_settings(
        &mut self,
        name: &str,
        namespace: &str,
        change: crate::settings::EndpointSettingsChange,
    ) -> Result<api::EndpointSettings> {
        let r = self.endpoints.get(namespace, name)?;
        if let Some(on) = change.debug {
            if on != self.debug_endpoints.contains(&r.id) {
                if on {
                    self.debug_endpoints.insert(r.id);
                } else {
                    self.debug_endpoints.remove(&r.id);
                }
                self.write_endpoint_entry(&r)?;
                info!(endpoint = %format!("{namespace}/{name}"), enabled = on, "endpoint debug messages");
            }
        }
        Ok(api::EndpointSettings { debug: self.debug_endpoints.contains(&r.id) })
    }

    /// The runtime settings as the agent runs with them.
    pub fn settings(&self) -> api::AgentSettings {
        api::AgentSettings { debug_datapath: self.config.debug_datapath }
    }

    fn change_settings(&mut self, change: crate::settings::SettingsChange) -> Result<api::AgentSettings> {
        if let Some(on) = change.debug_datapath {
            if on && !self.config.flows {
                return Err(AgentError::Invalid(
                    "setting debug-datapath: the agent runs with --disable-flows, so no datapath events are read"
                        .into(),
                ));
            }
            // One word of the config the programs read anyway: the next
            // packet sees it, nothing is reloaded.
            let mut config = self.datapath.config()?;
            config.events = datapath_events(self.config.flows, on);
            self.datapath.set_config(config)?;
            self.config.debug_datapath = on;
            info!(enabled = on, "datapath debug messages");
        }
        Ok(self.settings())
    }

    pub fn status(&self) -> Result<api::Status> {
        let mut health = Vec::new();
        let store_check = self.store.get(&namespace_key(DEFAULT_NAMESPACE));
        health.push(api::SubsystemHealth {
            name: "store".into(),
            ok: store_check.is_ok(),
            message: match &store_check {
                Ok(_) => format!("embedded file store at {}", self.config.state_dir.display()),
                Err(e) => e.to_string(),
            },
        });
        if let Some(cluster) = &self.cluster {
            let kv = cluster.status();
            health.push(api::SubsystemHealth {
                name: "kvstore".into(),
                ok: kv.reachable,
                message: if kv.reachable {
                    format!("etcd at {}, revision {}", kv.endpoints.join(","), kv.last_sync_revision)
                } else {
                    format!("etcd at {} unreachable: {}", kv.endpoints.join(","), kv.message)
                },
            });
        }
        let maps = self.datapath.ipcache_entries();
        health.push(api::SubsystemHealth {
            name: "datapath".into(),
            ok: maps.is_ok(),
            message: match &maps {
                Ok(_) => format!("programs loaded, maps pinned under {}", self.config.bpf_root.display()),
                Err(e) => e.to_string(),
            },
        });
        let records = self.endpoints.records()?;
        let not_ready: Vec<String> = records
            .iter()
            .filter(|r| !self.endpoints.present(r))
            .map(|r| format!("{}/{}", r.namespace, r.name))
            .collect();
        health.push(api::SubsystemHealth {
            name: "endpoints".into(),
            ok: not_ready.is_empty(),
            message: if not_ready.is_empty() {
                format!("{} ready", records.len())
            } else {
                format!("not ready: {}", not_ready.join(", "))
            },
        });
        health.push(api::SubsystemHealth {
            name: "api".into(),
            ok: true,
            message: format!("serving on {}", self.config.api_socket.display()),
        });
        let programs = self
            .datapath
            .attached_devices()
            .into_iter()
            .map(|(device, hook)| api::AttachedProgram { device, hook })
            .collect();
        Ok(api::Status {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.started.elapsed().as_secs(),
            mode: if self.cluster.is_some() { "cluster" } else { "standalone" }.into(),
            node_name: self.config.node_name.clone(),
            pod_cidr: self.config.pod_cidr.to_string(),
            router_ipv4: self.config.pod_cidr.router().to_string(),
            state_dir: self.config.state_dir.display().to_string(),
            cni_queue_dir: self.config.cni_queue_dir.display().to_string(),
            bpf_root: self.config.bpf_root.display().to_string(),
            hubble_socket: self.config.hubble_socket.as_ref().map(|p| p.display().to_string()),
            hubble_listen: self.config.hubble_listen.map(|a| a.to_string()),
            hubble_tls: match &self.config.hubble_tls {
                None => api::HubbleTls::Off,
                Some(tls) if tls.client_ca.is_some() => api::HubbleTls::Mutual,
                Some(_) => api::HubbleTls::On,
            },
            kernel: serde_json::to_value(&self.features).unwrap_or_default(),
            endpoints: records.len(),
            identities: self.identities.allocated().map(|a| a.len()).unwrap_or(0),
            policy_revision: self.policies.revision(),
            policies: self.policies.len(),
            programs,
            health,
            kvstore: self.cluster.as_ref().map(|c| c.status()),
            nodes: self.cluster.as_ref().map(|c| c.node_count()).unwrap_or(0),
            proxy: {
                let (connections, requests) = self.proxy_counters();
                api::ProxyStatus { connections, requests }
            },
        })
    }

    pub fn metrics_sample(&self) -> Result<crate::metrics::Sample> {
        Ok(crate::metrics::Sample {
            endpoints: self.endpoints.records()?.len(),
            identities: self.identities.allocated()?.len(),
            policies: self.policies.len(),
            policy_revision: self.policies.revision(),
            maps: vec![
                ("twill_endpoints", self.datapath.endpoint_entries()?.len(), twill_abi::MAX_ENDPOINTS),
                ("twill_ipcache", self.datapath.ipcache_entries()?.len(), twill_abi::MAX_IPCACHE_ENTRIES),
                ("twill_policy", self.realizer.entry_count(), twill_abi::MAX_POLICY_ENTRIES),
                ("twill_ct", self.datapath.ct_entries()?.len(), twill_abi::MAX_CT_ENTRIES),
            ],
            datapath: self.datapath.metrics()?,
            lost_events: self.datapath.lost_events()?,
        })
    }

    fn rebuild_directory(&mut self) -> Result<()> {
        let universe = self.identities.universe(None)?;
        let endpoints: Vec<(EndpointRecord, u32)> = self
            .endpoints
            .records()?
            .into_iter()
            .map(|r| {
                let ifindex = self.endpoints.ifindex(&r).unwrap_or(0);
                (r, ifindex)
            })
            .collect();
        self.directory.rebuild(directory::Sources {
            universe: &universe,
            endpoints: &endpoints,
            namespaces: self.namespaces.names().unwrap_or_default(),
            remote: self
                .cluster
                .iter()
                .flat_map(|c| c.remote_ips())
                .map(|r| twill_observe::RemoteEndpointMeta {
                    name: r.name.clone(),
                    namespace: r.namespace.clone(),
                    ip: r.ip,
                    identity: r.identity,
                    node: r.node.clone(),
                })
                .collect(),
            services: self.services.resolved(),
        });
        Ok(())
    }

    // ---- restore, garbage, uninstall ---------------------------------------

    /// Brings every stored endpoint back: same IP, same identity, same
    /// devices. Existing devices and filters are reused; the freshly
    /// loaded programs are swapped into them atomically.
    fn restore(&mut self) -> Result<()> {
        let node = self.endpoints.node().to_string();
        let mut restored = Vec::new();
        for mut record in self.endpoints.records()? {
            let what = format!("{}/{}", record.namespace, record.name);
            self.endpoints.keep_address(&record);
            let ns = self.namespaces.get_or_default(&record.namespace)?;
            let identity = self
                .identities
                .acquire(&security_labels(&record.labels, &record.namespace, &ns), &record.owner(&node))?;
            if identity != record.identity {
                warn!(
                    "{what}: identity {} -> {identity} (store changed while the agent was down)",
                    record.identity
                );
                record.identity = identity;
                self.endpoints.save(&record)?;
            }
            if !self.endpoints.present(&record)
                && record.attachment.is_some()
                && !Path::new(&record.netns).exists()
            {
                // The runtime's namespace went while the agent was down:
                // nothing to plumb into. The address stays reserved until
                // the runtime's DEL or GC says the container is gone.
                warn!("{what}: namespace {} is gone; waiting for the runtime's DEL or GC", record.netns);
                restored.push(record);
                continue;
            }
            if !self.endpoints.present(&record) {
                info!("{what}: devices missing, recreating them");
                self.endpoints.unplumb(&record)?;
                self.datapath.detach(&record.host_device)?;
                self.endpoints.plumb(&record)?;
            }
            self.datapath.attach(&record.host_device)?;
            self.program_maps(&record)?;
            restored.push(record);
        }
        self.collect_garbage(&restored)?;
        if let Some((entries, _)) = self.store.get_json::<Vec<crate::fqdn::StoredEntry>>(FQDN_CACHE_KEY)? {
            let ids: BTreeSet<u64> = restored.iter().map(|r| r.id as u64).collect();
            self.fqdn.restore(&entries, |id| ids.contains(&id));
            self.directory.set_dns_names(self.fqdn.names());
        }
        info!(endpoints = restored.len(), "state restored");
        Ok(())
    }

    /// Removes kernel objects, addresses and identity references of this
    /// node that no endpoint in `keep` accounts for.
    fn collect_garbage(&mut self, keep: &[EndpointRecord]) -> Result<()> {
        let mut identity_refs = Vec::new();
        for identity in self.identities.allocated()? {
            for owner in self.identities.owners(identity.id)? {
                identity_refs.push((identity.id, owner));
            }
        }
        let observed = Observed {
            netns: netdev::list_netns(),
            devices: netdev::list_devices()?,
            attached: self
                .datapath
                .attached_devices()
                .into_iter()
                .map(|(d, _)| d)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            endpoint_map: self.datapath.endpoint_entries()?.into_iter().map(|(ip, _)| ip).collect(),
            addresses: self.endpoints.allocations()?,
            identity_refs,
        };
        let garbage = restore::garbage(self.endpoints.node(), keep, &observed);
        for ns in &garbage.netns {
            info!("removing leftover namespace {ns}");
            netdev::delete_netns(ns)?;
        }
        for device in &garbage.devices {
            info!("removing leftover device {device}");
            netdev::delete_link(device)?;
        }
        for device in &garbage.detach {
            self.datapath.detach(device)?;
        }
        for ip in &garbage.endpoint_map {
            self.datapath.endpoint_map().remove(*ip)?;
        }
        for (ip, owner) in &garbage.addresses {
            info!("releasing leftover address {ip} of {owner}");
            self.endpoints.release_address(*ip)?;
        }
        for (identity, owner) in &garbage.identity_refs {
            info!("releasing leftover reference of {owner} to identity {identity}");
            self.identities.release(*identity, owner)?;
        }
        Ok(())
    }

    /// Removes every endpoint and everything Twill made on this node:
    /// devices, namespaces, pinned programs and maps, state and sockets.
    pub fn uninstall(&mut self) -> Result<api::Uninstalled> {
        let records = self.endpoints.records()?;
        for r in &records {
            self.tear_down(r);
        }
        let mut removed = Vec::new();
        if let Some(cluster) = &self.cluster {
            removed.extend(cluster.leave(&mut self.datapath)?);
        }
        removed.extend(lb::detach(&mut self.datapath, &self.config)?);
        netdev::remove_host_device()?;
        removed.push(format!("device {}", netdev::HOST_DEVICE));
        twill_datapath::proxy_routing::remove_proxy_routing()?;
        removed.push(format!("proxy rule and route table {}", twill_abi::PROXY_ROUTE_TABLE));
        // The proxy exits once its control socket is gone.
        if let Some(proxy) = &self.proxy {
            proxy.shutdown();
        }
        if let Some(dir) = self.config.api_socket.parent() {
            if std::fs::remove_file(twill_proxy::control::socket_path(dir)).is_ok() {
                removed.push("twill-proxy".into());
            }
        }
        // Catch anything the records missed (e.g. from a lost state dir).
        self.collect_garbage(&[])?;
        for path in [&self.config.bpf_root, &self.config.state_dir] {
            match std::fs::remove_dir_all(path) {
                Ok(()) => removed.push(path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(AgentError::Io { what: format!("removing {}", path.display()), source })
                }
            }
        }
        for socket in std::iter::once(&self.config.api_socket).chain(self.config.hubble_socket.as_ref()) {
            if std::fs::remove_file(socket).is_ok() {
                removed.push(socket.display().to_string());
            }
        }
        Ok(api::Uninstalled { endpoints: records.len(), removed })
    }
}

fn check_pod_cidr(store: &dyn Store, config: &Config) -> Result<()> {
    let key = pod_cidr_key(&config.node_name);
    let wanted = config.pod_cidr.to_string();
    if let Some(entry) = store.get(&key)? {
        if entry.value != wanted {
            let in_use = store.list(&endpoints_prefix(&config.node_name))?.len();
            if in_use > 0 {
                return Err(AgentError::Invalid(format!(
                    "--pod-cidr {wanted} differs from {} used by {in_use} existing endpoint(s); start with --pod-cidr {} or delete them first",
                    entry.value, entry.value
                )));
            }
        }
    }
    store.put(&key, &wanted)?;
    Ok(())
}

/// What service resolution needs of an endpoint.
fn endpoint_view(r: &EndpointRecord) -> twill_service::resolve::EndpointView {
    twill_service::resolve::EndpointView {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        address: r.ip,
        labels: plain(&r.labels),
        named_ports: r
            .ports
            .iter()
            .filter_map(|p| {
                twill_service::Protocol::from_number(p.protocol)
                    .map(|proto| (p.name.clone(), (p.port, proto)))
            })
            .collect(),
    }
}

/// Cilium's labels of a policy, `k8s:io.cilium.k8s.policy.*`, from the
/// names an import or delete reports ("KIND NAMESPACE/NAME").
fn policy_labels(names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        let (kind, rest) = name.split_once(' ').unwrap_or(("", name));
        out.push(format!("k8s:io.cilium.k8s.policy.derived-from={kind}"));
        match rest.split_once('/') {
            Some((ns, n)) => {
                out.push(format!("k8s:io.cilium.k8s.policy.name={n}"));
                out.push(format!("k8s:io.cilium.k8s.policy.namespace={ns}"));
            }
            None => out.push(format!("k8s:io.cilium.k8s.policy.name={rest}")),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Host addresses that belong in the ipcache as the host identity.
fn host_addresses(router: Ipv4Addr) -> Vec<Ipv4Addr> {
    let mut out = netdev::local_ipv4_addresses().unwrap_or_default();
    if !out.contains(&router) {
        out.push(router);
    }
    out
}
