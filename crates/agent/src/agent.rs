//! The agent's core: endpoints, namespaces and identities on top of the
//! store and the datapath. Every public method is one API operation and
//! either completes or leaves nothing behind.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Arc,
    time::Instant,
};

use tracing::{debug, info, warn};
use twill_abi::EndpointInfo;
use twill_api as api;
use twill_datapath::{netdev, Datapath, KernelFeatures};
use twill_identity::{IdentityAllocator, LabelSet};
use twill_ipam::Ipam;
use twill_store::{FileStore, Store, StoreExt};

use crate::{
    config::Config,
    error::{AgentError, Result},
    names,
    records::*,
};

pub struct Agent {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) identities: IdentityAllocator,
    pub(crate) ipam: Ipam,
    pub(crate) datapath: Datapath,
    pub(crate) features: KernelFeatures,
    pub(crate) policy: crate::policy::PolicyState,
    started: Instant,
}

impl Agent {
    /// Opens the store, loads the datapath and brings kernel state in line
    /// with the store: restored endpoints keep their IPs, identities and
    /// devices; leftovers of interrupted operations are removed.
    pub fn start(config: Config) -> anyhow::Result<Self> {
        names::check_node_name(&config.node_name)?;
        let store: Arc<dyn Store> = Arc::new(FileStore::open(&config.state_dir)?);
        check_pod_cidr(store.as_ref(), &config)?;
        let features = twill_datapath::probe_features();
        let datapath = Datapath::load(&config.bpf_root)?;
        netdev::ensure_host_device(config.pod_cidr.router())?;
        let agent = Self {
            identities: IdentityAllocator::new(store.clone()),
            ipam: Ipam::new(store.clone(), &config.node_name, config.pod_cidr),
            store,
            datapath,
            features,
            config,
            policy: Default::default(),
            started: Instant::now(),
        };
        let mut agent = agent;
        let events = if agent.config.flows {
            twill_abi::EVENTS_DROP | twill_abi::EVENTS_POLICY | twill_abi::EVENTS_TRACE
        } else {
            0
        };
        agent.datapath.set_config(twill_abi::DatapathConfig {
            allow_localhost: 1,
            aggregation: agent.config.aggregation,
            events,
            reserved: 0,
        })?;
        agent.ensure_default_namespace()?;
        agent.load_policies()?;
        agent.restore()?;
        Ok(agent)
    }

    fn ensure_default_namespace(&mut self) -> Result<()> {
        if self.store.get(&namespace_key(DEFAULT_NAMESPACE))?.is_none() {
            self.namespace_create(DEFAULT_NAMESPACE, &[])?;
        }
        Ok(())
    }

    pub(crate) fn endpoint_records(&self) -> Result<Vec<EndpointRecord>> {
        Ok(self
            .store
            .list_json::<EndpointRecord>(&endpoints_prefix(&self.config.node_name))?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    pub(crate) fn endpoint_record(&self, namespace: &str, name: &str) -> Result<EndpointRecord> {
        self.store
            .get_json::<EndpointRecord>(&endpoint_key(&self.config.node_name, namespace, name))?
            .map(|(r, _)| r)
            .ok_or_else(|| AgentError::NotFound(format!("endpoint {namespace}/{name} does not exist")))
    }

    pub(crate) fn namespace_record(&self, name: &str) -> Result<NamespaceRecord> {
        self.store.get_json::<NamespaceRecord>(&namespace_key(name))?.map(|(r, _)| r).ok_or_else(|| {
            AgentError::NotFound(format!(
                "namespace {name} does not exist (create it with `twill namespace create {name}`)"
            ))
        })
    }

    // ---- endpoints -------------------------------------------------------

    pub fn endpoint_create(
        &mut self,
        name: &str,
        namespace: &str,
        labels: &[String],
        ports: &[String],
    ) -> Result<api::Endpoint> {
        names::check_dns_label("endpoint", name)?;
        names::check_dns_label("namespace", namespace)?;
        let labels = LabelSet::parse_list(labels.iter().map(String::as_str))?;
        let ports = ports.iter().map(|p| crate::policy::parse_named_port(p)).collect::<Result<Vec<_>>>()?;
        let mut names_seen = BTreeSet::new();
        for p in &ports {
            if !names_seen.insert(&p.name) {
                return Err(AgentError::Invalid(format!("port name {:?} is given twice", p.name)));
            }
        }
        let ns = self.namespace_record(namespace)?;
        let key = endpoint_key(&self.config.node_name, namespace, name);
        if self.store.get(&key)?.is_some() {
            return Err(AgentError::AlreadyExists(format!("endpoint {namespace}/{name} already exists")));
        }
        let id = self.free_endpoint_id()?;
        let ip = self.ipam.allocate(&format!("{}/{id}", self.config.node_name))?;
        let mut record = EndpointRecord {
            id,
            name: name.into(),
            namespace: namespace.into(),
            labels,
            ip,
            identity: 0,
            netns: names::netns_name(&self.config.node_name, namespace, name),
            host_device: names::host_device(id),
            mac: names::endpoint_mac(ip),
            host_mac: names::host_mac(ip),
            ports,
        };
        match self.bring_up(&mut record, &ns, &key) {
            Ok(()) => {
                info!(endpoint = %format!("{namespace}/{name}"), id, %ip, identity = record.identity, "endpoint created");
                Ok(self.to_api(&record))
            }
            Err(e) => {
                warn!("creating endpoint {namespace}/{name} failed, rolling back: {e}");
                self.tear_down(&record);
                let _ = self.ipam.release(ip);
                Err(e)
            }
        }
    }

    /// Identity, devices, programs, maps, then the record: the record is
    /// written last, so a crash midway leaves only garbage that the next
    /// start collects.
    fn bring_up(&mut self, record: &mut EndpointRecord, ns: &NamespaceRecord, key: &str) -> Result<()> {
        let started = Instant::now();
        let owner = record.owner(&self.config.node_name);
        let labels = security_labels(&record.labels, &record.namespace, ns);
        record.identity = self.identities.acquire(&labels, &owner)?.id;
        let identity_done = started.elapsed();
        self.datapath.detach(&record.host_device)?;
        netdev::create_endpoint(&self.plumbing(record))?;
        let plumbing_done = started.elapsed();
        self.datapath.attach(&record.host_device)?;
        let attach_done = started.elapsed();
        // Policy before the endpoint map entry: the endpoint is reachable
        // only once its policy is in place.
        self.regenerate_endpoint(record)?;
        self.program_maps(record)?;
        self.store.put_json(key, record)?;
        if self.identities.owners(record.identity)?.len() == 1 {
            // A new identity: other endpoints' policies may select it.
            self.regenerate_all()?;
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

    fn plumbing<'a>(&self, r: &'a EndpointRecord) -> netdev::EndpointPlumbing<'a> {
        netdev::EndpointPlumbing {
            netns: &r.netns,
            host_device: &r.host_device,
            host_mac: r.host_mac,
            endpoint_mac: r.mac,
            ip: r.ip,
            router: self.config.pod_cidr.router(),
        }
    }

    pub(crate) fn program_maps(&mut self, r: &EndpointRecord) -> Result<()> {
        let ifindex = netdev::ifindex(&r.host_device)
            .ok_or_else(|| AgentError::Internal(format!("device {} vanished", r.host_device)))?;
        let info = EndpointInfo {
            ifindex,
            endpoint_id: r.id,
            identity: r.identity,
            flags: 0,
            mac: r.mac,
            host_mac: r.host_mac,
        };
        self.datapath.upsert_endpoint(r.ip, info)?;
        self.datapath.upsert_ipcache(r.ip, 32, r.identity)?;
        Ok(())
    }

    /// Removes everything an endpoint has in the kernel and its identity
    /// reference. Idempotent; errors are logged, not returned, because it
    /// runs on paths that are already failing or must finish.
    fn tear_down(&mut self, r: &EndpointRecord) {
        let what = format!("{}/{}", r.namespace, r.name);
        if let Err(e) = self.datapath.remove_endpoint(r.ip) {
            warn!("{what}: removing endpoint map entry: {e}");
        }
        if let Err(e) = self.datapath.remove_ipcache(r.ip, 32) {
            warn!("{what}: removing ipcache entry: {e}");
        }
        if let Err(e) = self.datapath.detach(&r.host_device) {
            warn!("{what}: detaching programs: {e}");
        }
        if let Err(e) = netdev::delete_endpoint(&r.netns, &r.host_device) {
            warn!("{what}: removing devices: {e}");
        }
        if let Err(e) = self.forget_endpoint_policy(r.id as u16) {
            warn!("{what}: removing policy map entries: {e}");
        }
        if r.identity != 0 {
            if let Err(e) = self.identities.release(r.identity, &r.owner(&self.config.node_name)) {
                warn!("{what}: releasing identity {}: {e}", r.identity);
            }
        }
    }

    fn free_endpoint_id(&self) -> Result<u32> {
        let used: BTreeSet<u32> = self.endpoint_records()?.iter().map(|r| r.id).collect();
        (1..=65535u32)
            .find(|id| !used.contains(id))
            .ok_or_else(|| AgentError::Exhausted("all 65535 endpoint IDs are in use".into()))
    }

    pub fn endpoint_delete(&mut self, name: &str, namespace: &str) -> Result<api::Endpoint> {
        let record = self.endpoint_record(namespace, name)?;
        // Record first: if we crash below, the next start collects the
        // rest instead of resurrecting a deleted endpoint.
        self.store.delete(&endpoint_key(&self.config.node_name, namespace, name))?;
        self.tear_down(&record);
        self.ipam.release(record.ip)?;
        if self.identities.get(record.identity)?.is_none() {
            // Its identity is gone: drop it from other endpoints' maps.
            self.regenerate_all()?;
        }
        info!(endpoint = %format!("{namespace}/{name}"), "endpoint deleted");
        let mut out = self.to_api(&record);
        out.state = "deleted".into();
        Ok(out)
    }

    pub fn endpoint_get(&self, name: &str, namespace: &str) -> Result<api::Endpoint> {
        Ok(self.to_api(&self.endpoint_record(namespace, name)?))
    }

    pub fn endpoint_list(&self, namespace: Option<&str>) -> Result<Vec<api::Endpoint>> {
        if let Some(ns) = namespace {
            self.namespace_record(ns)?;
        }
        let mut out: Vec<api::Endpoint> = self
            .endpoint_records()?
            .iter()
            .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
            .map(|r| self.to_api(r))
            .collect();
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    pub fn endpoint_label(
        &mut self,
        name: &str,
        namespace: &str,
        set: &[String],
        remove: &[String],
    ) -> Result<api::Endpoint> {
        let mut record = self.endpoint_record(namespace, name)?;
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
        let ns = self.namespace_record(namespace)?;
        self.apply_identity(record, &ns).map(|r| self.to_api(&r))
    }

    /// Moves an endpoint to the identity its (possibly changed) labels
    /// imply: new identity first, then the maps, then release the old one,
    /// so the endpoint is never without a valid identity.
    fn apply_identity(&mut self, mut record: EndpointRecord, ns: &NamespaceRecord) -> Result<EndpointRecord> {
        let owner = record.owner(&self.config.node_name);
        let labels = security_labels(&record.labels, &record.namespace, ns);
        let old = record.identity;
        let new = self.identities.acquire(&labels, &owner)?.id;
        record.identity = new;
        if let Err(e) = self.program_maps(&record) {
            if new != old {
                let _ = self.identities.release(new, &owner);
            }
            return Err(e);
        }
        self.store
            .put_json(&endpoint_key(&self.config.node_name, &record.namespace, &record.name), &record)?;
        if new != old {
            self.identities.release(old, &owner)?;
            info!(endpoint = %format!("{}/{}", record.namespace, record.name), old, new, "identity changed");
            self.regenerate_all()?;
        }
        Ok(record)
    }

    pub(crate) fn to_api(&self, r: &EndpointRecord) -> api::Endpoint {
        let security =
            self.identities.get(r.identity).ok().flatten().map(|i| i.labels.to_strings()).unwrap_or_default();
        let state = if netdev::endpoint_present(&r.netns, &r.host_device) { "ready" } else { "not-ready" };
        let id = r.id as u16;
        let (ingress_enforced, egress_enforced) = self.policy.enforced.get(&id).copied().unwrap_or_default();
        api::Endpoint {
            id: r.id,
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            ipv4: r.ip.to_string(),
            identity: r.identity,
            labels: plain(&r.labels),
            security_labels: security,
            ports: r.ports.iter().map(crate::policy::format_named_port).collect(),
            policy_revision: self.policy.endpoint_revision.get(&id).copied().unwrap_or(0),
            ingress_enforced,
            egress_enforced,
            netns: r.netns.clone(),
            host_device: r.host_device.clone(),
            mac: netdev::format_mac(&r.mac),
            host_mac: netdev::format_mac(&r.host_mac),
            state: state.into(),
        }
    }

    // ---- namespaces ------------------------------------------------------

    pub fn namespace_create(&mut self, name: &str, labels: &[String]) -> Result<api::NamespaceInfo> {
        names::check_dns_label("namespace", name)?;
        let mut set = LabelSet::parse_list(labels.iter().map(String::as_str))?;
        set.set(twill_identity::Label::new("k8s", NAMESPACE_NAME_LABEL, name));
        if !self.store.create_json(&namespace_key(name), &NamespaceRecord { labels: set })? {
            return Err(AgentError::AlreadyExists(format!("namespace {name} already exists")));
        }
        self.namespace_get(name)
    }

    pub fn namespace_get(&self, name: &str) -> Result<api::NamespaceInfo> {
        let record = self.namespace_record(name)?;
        let endpoints = self.endpoint_records()?.iter().filter(|r| r.namespace == name).count();
        Ok(api::NamespaceInfo { name: name.into(), labels: plain(&record.labels), endpoints })
    }

    pub fn namespace_list(&self) -> Result<Vec<api::NamespaceInfo>> {
        let names: Vec<String> = self
            .store
            .list(NAMESPACES_PREFIX)?
            .into_iter()
            .map(|(k, _)| k[NAMESPACES_PREFIX.len()..].to_string())
            .collect();
        names.iter().map(|n| self.namespace_get(n)).collect()
    }

    pub fn namespace_label(
        &mut self,
        name: &str,
        set: &[String],
        remove: &[String],
    ) -> Result<api::NamespaceInfo> {
        let mut record = self.namespace_record(name)?;
        let additions = LabelSet::parse_list(set.iter().map(String::as_str))?;
        for key in remove.iter().chain(additions.iter().map(|l| &l.key)) {
            if key == NAMESPACE_NAME_LABEL {
                return Err(AgentError::Invalid(format!(
                    "label {NAMESPACE_NAME_LABEL} is set by Twill and cannot be changed"
                )));
            }
        }
        for key in remove {
            if !record.labels.remove(key) {
                return Err(AgentError::Invalid(format!("namespace {name} has no label {key:?} to remove")));
            }
        }
        record.labels.extend(&additions);
        self.store.put_json(&namespace_key(name), &record)?;
        // Namespace labels are part of every member's identity.
        for endpoint in self.endpoint_records()?.into_iter().filter(|r| r.namespace == name) {
            self.apply_identity(endpoint, &record)?;
        }
        self.namespace_get(name)
    }

    pub fn namespace_delete(&mut self, name: &str) -> Result<api::NamespaceInfo> {
        let info = self.namespace_get(name)?;
        if name == DEFAULT_NAMESPACE {
            return Err(AgentError::Invalid("namespace default always exists and cannot be deleted".into()));
        }
        if info.endpoints > 0 {
            return Err(AgentError::Invalid(format!(
                "namespace {name} still has {} endpoint(s); delete them first",
                info.endpoints
            )));
        }
        self.store.delete(&namespace_key(name))?;
        Ok(info)
    }

    // ---- identities ------------------------------------------------------

    fn local_users(&self) -> Result<BTreeMap<u32, usize>> {
        let mut users = BTreeMap::new();
        for r in self.endpoint_records()? {
            *users.entry(r.identity).or_insert(0) += 1;
        }
        Ok(users)
    }

    pub fn identity_list(&self) -> Result<Vec<api::IdentityInfo>> {
        let users = self.local_users()?;
        let mut out: Vec<api::IdentityInfo> = twill_identity::RESERVED
            .iter()
            .map(|(id, name)| api::IdentityInfo {
                id: *id,
                labels: vec![format!("reserved:{name}")],
                reserved: true,
                endpoints: 0,
            })
            .collect();
        for (identity, _) in self.identities.list()? {
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

    // ---- datapath views --------------------------------------------------

    pub fn bpf_ipcache(&self) -> Result<Vec<api::IpcacheEntry>> {
        Ok(self
            .datapath
            .ipcache_entries()?
            .into_iter()
            .map(|e| api::IpcacheEntry { cidr: format!("{}/{}", e.ip, e.prefix_len), identity: e.identity })
            .collect())
    }

    pub fn bpf_endpoints(&self) -> Result<Vec<api::BpfEndpoint>> {
        let mut out: Vec<api::BpfEndpoint> = self
            .datapath
            .endpoint_entries()?
            .into_iter()
            .map(|(ip, info)| api::BpfEndpoint {
                ipv4: ip.to_string(),
                endpoint_id: info.endpoint_id,
                identity: info.identity,
                ifindex: info.ifindex,
                mac: netdev::format_mac(&info.mac),
                host_mac: netdev::format_mac(&info.host_mac),
            })
            .collect();
        out.sort_by_key(|e| e.endpoint_id);
        Ok(out)
    }

    pub fn bpf_metrics(&self) -> Result<Vec<api::MetricsRow>> {
        Ok(self
            .datapath
            .metrics()?
            .into_iter()
            .map(|m| api::MetricsRow {
                direction: if m.direction == twill_abi::METRIC_DIR_INGRESS { "ingress" } else { "egress" }
                    .into(),
                reason: m.reason,
                description: if m.reason == 0 {
                    "Forwarded".into()
                } else {
                    twill_abi::drop_reason_text(m.reason).into()
                },
                packets: m.packets,
                bytes: m.bytes,
            })
            .collect())
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
        let maps = self.datapath.ipcache_entries();
        health.push(api::SubsystemHealth {
            name: "datapath".into(),
            ok: maps.is_ok(),
            message: match &maps {
                Ok(_) => format!("programs loaded, maps pinned under {}", self.config.bpf_root.display()),
                Err(e) => e.to_string(),
            },
        });
        let records = self.endpoint_records()?;
        let not_ready: Vec<String> = records
            .iter()
            .filter(|r| !netdev::endpoint_present(&r.netns, &r.host_device))
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
            mode: "standalone".into(),
            node_name: self.config.node_name.clone(),
            pod_cidr: self.config.pod_cidr.to_string(),
            router_ipv4: self.config.pod_cidr.router().to_string(),
            state_dir: self.config.state_dir.display().to_string(),
            bpf_root: self.config.bpf_root.display().to_string(),
            kernel: serde_json::to_value(&self.features).unwrap_or_default(),
            endpoints: records.len(),
            identities: self.identities.list()?.len(),
            policy_revision: self.policy.revision,
            policies: self.policy.policies.len(),
            programs,
            health,
        })
    }

    /// Removes every endpoint and everything Twill made on this node:
    /// devices, namespaces, pinned programs and maps, state and socket.
    pub fn uninstall(&mut self) -> Result<api::Uninstalled> {
        let records = self.endpoint_records()?;
        for r in &records {
            self.tear_down(r);
        }
        let mut removed = Vec::new();
        netdev::remove_host_device()?;
        removed.push(format!("device {}", netdev::HOST_DEVICE));
        // Catch anything the records missed (e.g. from a lost state dir).
        self.collect_garbage(&[])?;
        for path in [&self.config.bpf_root, &self.config.state_dir] {
            match std::fs::remove_dir_all(path) {
                Ok(()) => removed.push(path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(AgentError::Internal(format!("removing {}: {e}", path.display()))),
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

fn check_pod_cidr(store: &dyn Store, config: &Config) -> anyhow::Result<()> {
    let key = pod_cidr_key(&config.node_name);
    let wanted = config.pod_cidr.to_string();
    if let Some(entry) = store.get(&key)? {
        if entry.value != wanted {
            let in_use = store.list(&endpoints_prefix(&config.node_name))?.len();
            if in_use > 0 {
                anyhow::bail!(
                    "--pod-cidr {wanted} differs from {} used by {in_use} existing endpoint(s); start with --pod-cidr {} or delete them first",
                    entry.value,
                    entry.value
                );
            }
        }
    }
    store.put(&key, &wanted)?;
    Ok(())
}

/// Host addresses that belong in the ipcache as the host identity.
pub(crate) fn host_addresses(router: Ipv4Addr) -> Vec<Ipv4Addr> {
    let mut out = netdev::local_ipv4_addresses().unwrap_or_default();
    if !out.contains(&router) {
        out.push(router);
    }
    out
}
