//! What the agent knows about endpoints, identities and services, as
//! flows need it: a snapshot the agent replaces after every change, read
//! by the decoder.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::Arc,
};

use twill_observe_proto::flow;

use crate::ServiceIndex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointMeta {
    pub id: u32,
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub identity: u32,
    /// The host-side device, for the flow's interface.
    pub host_device: String,
    pub ifindex: u32,
}

/// An endpoint another node of the cluster hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpointMeta {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub identity: u32,
    pub node: String,
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Cluster mode: endpoints on other nodes, by address.
    pub remote: HashMap<Ipv4Addr, RemoteEndpointMeta>,
    pub node_name: String,
    pub endpoints: HashMap<u32, EndpointMeta>,
    by_ip: HashMap<Ipv4Addr, u32>,
    by_ifindex: HashMap<u32, u32>,
    /// Labels of every identity, `source:key=value`, sorted.
    pub identities: HashMap<u32, Vec<String>>,
    pub namespaces: BTreeSet<String>,
    /// Shared: services change far less often than endpoints, and a
    /// snapshot with 30,000 of them is not rebuilt for an endpoint change.
    pub services: Arc<ServiceIndex>,
    /// Names DNS answers gave each address (the FQDN cache), without the
    /// trailing dot: flows' `source_names` / `destination_names`.
    pub dns_names: Arc<HashMap<Ipv4Addr, Vec<String>>>,
}

impl Directory {
    pub fn new(node_name: &str) -> Self {
        Self { node_name: node_name.into(), ..Default::default() }
    }

    pub fn add_endpoint(&mut self, meta: EndpointMeta) {
        self.by_ip.insert(meta.ip, meta.id);
        if meta.ifindex != 0 {
            self.by_ifindex.insert(meta.ifindex, meta.id);
        }
        self.namespaces.insert(meta.namespace.clone());
        self.endpoints.insert(meta.id, meta);
    }

    pub fn endpoint_by_ip(&self, ip: Ipv4Addr) -> Option<&EndpointMeta> {
        self.by_ip.get(&ip).and_then(|id| self.endpoints.get(id))
    }

    pub fn interface(&self, ifindex: u32) -> Option<flow::NetworkInterface> {
        let ep = self.by_ifindex.get(&ifindex).and_then(|id| self.endpoints.get(id))?;
        Some(flow::NetworkInterface { index: ifindex, name: ep.host_device.clone() })
    }

    /// The names DNS gave `ip`, sorted (none for most addresses).
    pub fn names_of(&self, ip: Ipv4Addr) -> Vec<String> {
        self.dns_names.get(&ip).cloned().unwrap_or_default()
    }

    /// The flow endpoint for an address seen with `identity`: a local
    /// endpoint gets its ID, namespace and pod name; anything else its
    /// identity's labels.
    pub fn flow_endpoint(&self, ip: Ipv4Addr, identity: u32) -> flow::Endpoint {
        // The labels of the endpoint's own identity, else of the one the
        // datapath saw; cloned once, as every flow pays for it twice.
        let labels = |own: u32| {
            self.identities.get(&own).or_else(|| self.identities.get(&identity)).cloned().unwrap_or_default()
        };
        match self.endpoint_by_ip(ip) {
            Some(ep) => flow::Endpoint {
                id: ep.id,
                identity: ep.identity,
                namespace: ep.namespace.clone(),
                labels: labels(ep.identity),
                pod_name: ep.name.clone(),
                ..Default::default()
            },
            None => match self.remote.get(&ip) {
                // Hubble names a remote pod by namespace and name too; its
                // endpoint ID is the other node's, which flows leave out.
                Some(remote) => flow::Endpoint {
                    identity: remote.identity,
                    namespace: remote.namespace.clone(),
                    labels: labels(remote.identity),
                    pod_name: remote.name.clone(),
                    ..Default::default()
                },
                None => flow::Endpoint { identity, labels: labels(identity), ..Default::default() },
            },
        }
    }
}
