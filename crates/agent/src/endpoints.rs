//! Endpoints on this node: their records in the store, their addresses
//! (IPAM), their IDs and their devices (namespace, veth pair, addresses,
//! routes). Programs, identities and policy are attached by the agent's
//! entry point, which sequences them around this module.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
    sync::Arc,
};

use tracing::warn;
use twill_datapath::netdev;
use twill_identity::LabelSet;
use twill_ipam::{Cidr, Ipam};
use twill_policy::resolve::NamedPort;
use twill_store::{Store, StoreExt};

use crate::{
    error::{AgentError, Result},
    names,
    policy::ports::parse_named_port,
    records::{endpoint_key, endpoints_prefix, Attachment, EndpointRecord},
};

pub struct Endpoints {
    store: Arc<dyn Store>,
    ipam: Ipam,
    node: String,
    router: Ipv4Addr,
    /// Endpoint devices' MTU (tunnel mode: room for the encapsulation).
    mtu: Option<u32>,
}

impl Endpoints {
    pub fn new(store: Arc<dyn Store>, node: &str, pod_cidr: Cidr) -> Self {
        Self {
            ipam: Ipam::new(store.clone(), node, pod_cidr),
            store,
            node: node.into(),
            router: pod_cidr.router(),
            mtu: None,
        }
    }

    /// New endpoints' devices get `mtu` (None: the kernel's default).
    pub fn set_mtu(&mut self, mtu: Option<u32>) {
        self.mtu = mtu;
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn records(&self) -> Result<Vec<EndpointRecord>> {
        Ok(self
            .store
            .list_json::<EndpointRecord>(&endpoints_prefix(&self.node))?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    pub fn get(&self, namespace: &str, name: &str) -> Result<EndpointRecord> {
        self.store
            .get_json::<EndpointRecord>(&endpoint_key(&self.node, namespace, name))?
            .map(|(r, _)| r)
            .ok_or_else(|| AgentError::NotFound(format!("endpoint {namespace}/{name} does not exist")))
    }

    /// Validates a new endpoint and reserves its ID and address. The
    /// record is not stored yet (identity 0): `save` does that last.
    pub fn prepare(
        &self,
        name: &str,
        namespace: &str,
        labels: &[String],
        ports: &[String],
        attached: Option<(Attachment, String)>,
    ) -> Result<EndpointRecord> {
        names::check_dns_label("endpoint", name)?;
        names::check_dns_label("namespace", namespace)?;
        let labels = LabelSet::parse_list(labels.iter().map(String::as_str))?;
        let ports = ports.iter().map(|p| parse_named_port(p)).collect::<Result<Vec<_>>>()?;
        let mut names_seen = BTreeSet::new();
        for p in &ports {
            if !names_seen.insert(&p.name) {
                return Err(AgentError::Invalid(format!("port name {:?} is given twice", p.name)));
            }
        }
        if self.store.get(&endpoint_key(&self.node, namespace, name))?.is_some() {
            return Err(AgentError::AlreadyExists(format!("endpoint {namespace}/{name} already exists")));
        }
        let (attachment, netns) = match attached {
            Some((a, path)) => (Some(a), path),
            None => (None, names::netns_name(&self.node, namespace, name)),
        };
        let id = self.free_id()?;
        let ip = self.ipam.allocate(&format!("{}/{id}", self.node))?;
        Ok(EndpointRecord {
            id,
            name: name.into(),
            namespace: namespace.into(),
            labels,
            ip,
            identity: 0,
            netns,
            host_device: names::host_device(id),
            mac: names::endpoint_mac(ip),
            host_mac: names::host_mac(ip),
            ports,
            attachment,
        })
    }

    /// The endpoint a CNI attachment made, if any.
    pub fn find_attached(&self, container_id: &str, ifname: &str) -> Result<Option<EndpointRecord>> {
        Ok(self.records()?.into_iter().find(|r| {
            r.attachment.as_ref().is_some_and(|a| a.container_id == container_id && a.ifname == ifname)
        }))
    }

    fn free_id(&self) -> Result<u32> {
        let used: BTreeSet<u32> = self.records()?.iter().map(|r| r.id).collect();
        (1..=65535u32)
            .find(|id| !used.contains(id))
            .ok_or_else(|| AgentError::Exhausted("all 65535 endpoint IDs are in use".into()))
    }

    pub fn save(&self, record: &EndpointRecord) -> Result<()> {
        self.store.put_json(&endpoint_key(&self.node, &record.namespace, &record.name), record)?;
        Ok(())
    }

    /// Deletes the record first: after a crash the next start collects
    /// the rest instead of resurrecting a deleted endpoint.
    pub fn forget(&self, record: &EndpointRecord) -> Result<()> {
        self.store.delete(&endpoint_key(&self.node, &record.namespace, &record.name))?;
        Ok(())
    }

    pub fn release_address(&self, ip: Ipv4Addr) -> Result<()> {
        self.ipam.release(ip)?;
        Ok(())
    }

    /// After a restart: claims the address the record says (logged, not
    /// fatal, if someone else holds it).
    pub fn keep_address(&self, record: &EndpointRecord) {
        if let Err(e) = self.ipam.allocate_specific(record.ip, &record.owner(&self.node)) {
            warn!("{}/{}: cannot keep address {}: {e}", record.namespace, record.name, record.ip);
        }
    }

    /// Address -> owner of every allocation on this node.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        Ok(self.ipam.allocations()?)
    }

    fn plumbing<'a>(&self, r: &'a EndpointRecord) -> netdev::EndpointPlumbing<'a> {
        netdev::EndpointPlumbing {
            netns: &r.netns,
            host_device: &r.host_device,
            host_mac: r.host_mac,
            endpoint_mac: r.mac,
            ip: r.ip,
            router: self.router,
            mtu: self.mtu,
        }
    }

    /// Namespace (unless the runtime brought one), veth pair, addresses,
    /// routes and neighbours.
    pub fn plumb(&self, record: &EndpointRecord) -> Result<()> {
        match &record.attachment {
            None => netdev::create_endpoint(&self.plumbing(record))?,
            Some(a) => netdev::attach_endpoint(&netdev::AttachedPlumbing {
                netns_path: Path::new(&record.netns),
                ifname: &a.ifname,
                host_device: &record.host_device,
                host_mac: record.host_mac,
                endpoint_mac: record.mac,
                ip: record.ip,
                router: self.router,
                mtu: self.mtu,
            })?,
        }
        Ok(())
    }

    /// Removes the devices, and the namespace if Twill made it;
    /// idempotent. Deleting the host end takes the inside end with it.
    pub fn unplumb(&self, record: &EndpointRecord) -> Result<()> {
        match &record.attachment {
            None => netdev::delete_endpoint(&record.netns, &record.host_device)?,
            Some(_) => netdev::delete_link(&record.host_device)?,
        }
        Ok(())
    }

    /// The endpoint's network namespace, as a path.
    pub fn netns_path(&self, record: &EndpointRecord) -> std::path::PathBuf {
        match &record.attachment {
            None => Path::new("/run/netns").join(&record.netns),
            Some(_) => record.netns.clone().into(),
        }
    }

    pub fn present(&self, record: &EndpointRecord) -> bool {
        match &record.attachment {
            None => netdev::endpoint_present(&record.netns, &record.host_device),
            Some(_) => netdev::ifindex(&record.host_device).is_some(),
        }
    }

    /// What CHECK finds wrong with an attached endpoint (empty: nothing).
    pub fn check_attached(&self, record: &EndpointRecord, netns: &str) -> Result<Vec<String>> {
        let Some(a) = &record.attachment else {
            return Ok(vec![format!(
                "endpoint {}/{} is not a CNI attachment",
                record.namespace, record.name
            )]);
        };
        let mut problems = Vec::new();
        if netns != record.netns {
            problems.push(format!("CNI_NETNS {netns} is not {} given at ADD", record.netns));
        }
        if netdev::ifindex(&record.host_device).is_none() {
            problems.push(format!("host interface {} does not exist", record.host_device));
        }
        if !Path::new(netns).exists() {
            problems.push(format!("CNI_NETNS {netns} does not exist"));
            return Ok(problems);
        }
        problems.extend(netdev::check_attached(Path::new(netns), &a.ifname, record.ip, self.router)?);
        Ok(problems)
    }

    pub fn router(&self) -> Ipv4Addr {
        self.router
    }

    pub fn ifindex(&self, record: &EndpointRecord) -> Result<u32> {
        netdev::ifindex(&record.host_device)
            .ok_or_else(|| AgentError::Internal(format!("device {} vanished", record.host_device)))
    }
}

/// Named ports per identity, for policies that name a peer's port.
pub fn named_ports_by_identity(records: &[EndpointRecord]) -> BTreeMap<u32, Vec<NamedPort>> {
    let mut out: BTreeMap<u32, Vec<NamedPort>> = BTreeMap::new();
    for r in records {
        out.entry(r.identity).or_default().extend(r.ports.iter().cloned());
    }
    out
}
