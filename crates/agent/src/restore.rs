//! Start-up reconciliation: make the kernel match the store without
//! interrupting traffic, and collect what interrupted operations left.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use tracing::{info, warn};
use twill_datapath::netdev;
use twill_identity::HOST;

use crate::{agent::Agent, error::Result, names, records::*};

impl Agent {
    /// Brings every stored endpoint back: same IP, same identity, same
    /// devices. Existing devices and links are reused; the freshly loaded
    /// programs are swapped into the pinned links atomically.
    pub(crate) fn restore(&mut self) -> Result<()> {
        let records = self.endpoint_records()?;
        let node = self.config.node_name.clone();
        let mut restored = Vec::new();
        for mut record in records {
            let what = format!("{}/{}", record.namespace, record.name);
            let owner = record.owner(&node);
            if let Err(e) = self.ipam.allocate_specific(record.ip, &owner) {
                warn!("{what}: cannot keep address {}: {e}", record.ip);
            }
            let ns = self.namespace_record_or_default(&record.namespace)?;
            let labels = security_labels(&record.labels, &record.namespace, &ns);
            let identity = self.identities.acquire(&labels, &owner)?.id;
            if identity != record.identity {
                warn!(
                    "{what}: identity {} -> {identity} (store changed while the agent was down)",
                    record.identity
                );
                record.identity = identity;
                self.store_record(&record)?;
            }
            if !netdev::endpoint_present(&record.netns, &record.host_device) {
                info!("{what}: devices missing, recreating them");
                netdev::delete_endpoint(&record.netns, &record.host_device)?;
                self.datapath.detach(&record.host_device)?;
                netdev::create_endpoint(&netdev::EndpointPlumbing {
                    netns: &record.netns,
                    host_device: &record.host_device,
                    host_mac: record.host_mac,
                    endpoint_mac: record.mac,
                    ip: record.ip,
                    router: self.config.pod_cidr.router(),
                })?;
            }
            self.datapath.attach(&record.host_device)?;
            self.program_maps(&record)?;
            restored.push(record);
        }
        self.collect_garbage(&restored)?;
        self.regenerate_all()?;
        info!(endpoints = restored.len(), "state restored");
        Ok(())
    }

    fn namespace_record_or_default(&mut self, name: &str) -> Result<NamespaceRecord> {
        use twill_store::StoreExt;
        Ok(self.store.get_json::<NamespaceRecord>(&namespace_key(name))?.map(|(r, _)| r).unwrap_or_default())
    }

    fn store_record(&self, record: &EndpointRecord) -> Result<()> {
        use twill_store::StoreExt;
        self.store
            .put_json(&endpoint_key(&self.config.node_name, &record.namespace, &record.name), record)?;
        Ok(())
    }

    /// Removes kernel objects, addresses and identity references of this
    /// node that no endpoint in `keep` accounts for.
    pub(crate) fn collect_garbage(&mut self, keep: &[EndpointRecord]) -> Result<()> {
        let node = self.config.node_name.clone();
        let netns: BTreeSet<&str> = keep.iter().map(|r| r.netns.as_str()).collect();
        let devices: BTreeSet<&str> = keep.iter().map(|r| r.host_device.as_str()).collect();
        let ips: BTreeSet<Ipv4Addr> = keep.iter().map(|r| r.ip).collect();
        let owners: BTreeSet<String> = keep.iter().map(|r| r.owner(&node)).collect();

        let prefix = names::netns_prefix(&node);
        for ns in netns::list_netns_with_prefix(&prefix) {
            if !netns.contains(ns.as_str()) {
                info!("removing leftover namespace {ns}");
                netdev::delete_netns(&ns)?;
            }
        }
        for device in netdev::list_devices()? {
            let ours =
                device.strip_prefix(names::HOST_DEVICE_PREFIX).is_some_and(|n| n.parse::<u32>().is_ok());
            if ours && !devices.contains(device.as_str()) {
                info!("removing leftover device {device}");
                netdev::delete_link(&device)?;
            }
        }
        for (device, _) in self.datapath.attached_devices() {
            if !devices.contains(device.as_str()) {
                self.datapath.detach(&device)?;
            }
        }
        for (ip, _) in self.datapath.endpoint_entries()? {
            if !ips.contains(&ip) {
                self.datapath.remove_endpoint(ip)?;
            }
        }
        for (ip, owner) in self.ipam.allocations()? {
            if !owners.contains(&owner) {
                info!("releasing leftover address {ip} of {owner}");
                self.ipam.release(ip)?;
            }
        }
        let node_prefix = format!("{node}/");
        for (identity, _) in self.identities.list()? {
            for owner in self.identities.owners(identity.id)? {
                let full = format!("{node_prefix}{}", owner.strip_prefix(&node_prefix).unwrap_or(""));
                if owner.starts_with(&node_prefix) && !owners.contains(&full) {
                    info!("releasing leftover reference of {owner} to identity {}", identity.id);
                    self.identities.release(identity.id, &owner)?;
                }
            }
        }
        Ok(())
    }

    /// Makes the ipcache hold exactly the endpoints and host addresses,
    /// touching only entries that differ.
    pub(crate) fn sync_ipcache(
        &mut self,
        endpoints: &[EndpointRecord],
        cidrs: &[(Ipv4Addr, u8, u32)],
    ) -> Result<()> {
        let mut desired: BTreeMap<(Ipv4Addr, u8), u32> = BTreeMap::new();
        for ip in crate::agent::host_addresses(self.config.pod_cidr.router()) {
            desired.insert((ip, 32), HOST);
        }
        for (ip, len, identity) in cidrs {
            desired.insert((*ip, *len), *identity);
        }
        for r in endpoints {
            desired.insert((r.ip, 32), r.identity);
        }
        let current: BTreeMap<(Ipv4Addr, u8), u32> = self
            .datapath
            .ipcache_entries()?
            .into_iter()
            .map(|e| ((e.ip, e.prefix_len), e.identity))
            .collect();
        for key in current.keys() {
            if !desired.contains_key(key) {
                self.datapath.remove_ipcache(key.0, key.1)?;
            }
        }
        for (key, identity) in &desired {
            if current.get(key) != Some(identity) {
                self.datapath.upsert_ipcache(key.0, key.1, *identity)?;
            }
        }
        Ok(())
    }
}

mod netns {
    pub fn list_netns_with_prefix(prefix: &str) -> Vec<String> {
        twill_datapath::netdev::list_netns().into_iter().filter(|n| n.starts_with(prefix)).collect()
    }
}
