//! The flow directory: the snapshot of endpoints, identities and
//! namespaces that datapath events are decoded with, shared with the event
//! reader and the observer. The agent's entry point rebuilds it after
//! every change, whatever its source, so flows never name a stale view.

use std::sync::{Arc, RwLock};

use twill_observe::{Directory, EndpointMeta};
use twill_policy::resolve::Universe;

use crate::records::EndpointRecord;

pub struct FlowDirectory {
    node: String,
    shared: Arc<RwLock<Directory>>,
}

impl FlowDirectory {
    pub fn new(node: &str) -> Self {
        Self { node: node.into(), shared: Arc::new(RwLock::new(Directory::new(node))) }
    }

    /// For readers: the event reader and the observer service.
    pub fn handle(&self) -> Arc<RwLock<Directory>> {
        self.shared.clone()
    }

    pub fn rebuild(&self, universe: &Universe, endpoints: &[(EndpointRecord, u32)], namespaces: Vec<String>) {
        let mut dir = Directory::new(&self.node);
        for known in universe.iter() {
            let mut labels = known.labels.to_strings();
            labels.sort();
            dir.identities.insert(known.id, labels);
        }
        for (r, ifindex) in endpoints {
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
        dir.namespaces.extend(namespaces);
        *self.shared.write().unwrap_or_else(|p| p.into_inner()) = dir;
    }
}
