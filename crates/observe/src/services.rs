//! Which service an address of a flow belongs to, for the flow's
//! `source_service` and `destination_service`.
//!
//! Endpoints' connections to a ClusterIP are balanced at the socket, so
//! their packets carry the chosen backend, never the frontend: a flow is
//! matched to a service by its backends as well as by its frontends (what
//! flows that still carry the frontend show: NodePort traffic at a node
//! device, a connect refused for want of backends). A flow to a backend is
//! a request to its service (`destination_service`); a flow from one, its
//! reply (`source_service`), as Hubble reports them.
//!
//! Lookups are hash lookups keyed by (address, port, protocol): decoding
//! stays as fast with 30,000 services as with none.

use std::{collections::HashMap, net::Ipv4Addr};

use twill_abi::IDENTITY_HOST;
use twill_observe_proto::flow;

/// An address as services have them: IPv4 address, port, IP protocol number.
type Addr = (Ipv4Addr, u16, u8);

/// A service's position in [`ServiceIndex::services`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceId(u32);

#[derive(Debug, Clone, Default)]
pub struct ServiceIndex {
    services: Vec<flow::Service>,
    /// ClusterIP (or explicit) frontends; each belongs to one service.
    frontends: HashMap<Addr, ServiceId>,
    /// NodePort frontends, at every address of the node: (port, protocol).
    node_ports: HashMap<(u16, u8), ServiceId>,
    /// Backends; one serving several services names the first added.
    backends: HashMap<Addr, ServiceId>,
}

impl ServiceIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Adds a service, to give frontends and backends to. Add services in
    /// the order that decides a backend shared by several: the agent adds
    /// them by namespace, then name, so the first of those names it.
    pub fn add_service(&mut self, namespace: &str, name: &str) -> ServiceId {
        let id = ServiceId(self.services.len() as u32);
        self.services.push(flow::Service { name: name.into(), namespace: namespace.into() });
        id
    }

    pub fn add_frontend(&mut self, id: ServiceId, address: Ipv4Addr, port: u16, protocol: u8) {
        self.frontends.entry((address, port, protocol)).or_insert(id);
    }

    /// A NodePort frontend: the port at any of the node's addresses.
    pub fn add_node_port(&mut self, id: ServiceId, port: u16, protocol: u8) {
        self.node_ports.entry((port, protocol)).or_insert(id);
    }

    /// A backend; the first service given it keeps it.
    pub fn add_backend(&mut self, id: ServiceId, address: Ipv4Addr, port: u16, protocol: u8) {
        self.backends.entry((address, port, protocol)).or_insert(id);
    }

    /// The service at one end of a flow: the address `identity` was seen
    /// with. A frontend wins over a backend at the same address. Node
    /// ports count only at the node's own addresses (identity host), where
    /// the datapath serves them too.
    pub fn lookup(
        &self,
        address: Ipv4Addr,
        port: u16,
        protocol: u8,
        identity: u32,
    ) -> Option<&flow::Service> {
        let key = (address, port, protocol);
        let id = self
            .frontends
            .get(&key)
            .or_else(|| (identity == IDENTITY_HOST).then(|| self.node_ports.get(&(port, protocol))).flatten())
            .or_else(|| self.backends.get(&key))?;
        self.services.get(id.0 as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: u8 = 6;
    const UDP: u8 = 17;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn name(s: Option<&flow::Service>) -> Option<String> {
        s.map(|s| format!("{}/{}", s.namespace, s.name))
    }

    #[test]
    fn frontends_and_backends_name_their_service_by_port_and_protocol() {
        let mut index = ServiceIndex::new();
        let web = index.add_service("default", "web");
        index.add_frontend(web, ip("10.96.0.10"), 80, TCP);
        index.add_backend(web, ip("10.200.0.5"), 8080, TCP);
        let at = |a: &str, port, proto| name(index.lookup(ip(a), port, proto, 256));
        assert_eq!(at("10.96.0.10", 80, TCP).as_deref(), Some("default/web"));
        assert_eq!(at("10.200.0.5", 8080, TCP).as_deref(), Some("default/web"));
        assert_eq!(at("10.200.0.5", 8081, TCP), None, "another port of the backend");
        assert_eq!(at("10.200.0.5", 8080, UDP), None, "another protocol");
        assert_eq!(at("10.96.0.10", 8080, TCP), None);
    }

    #[test]
    fn a_shared_backend_names_the_first_service_and_frontends_win() {
        let mut index = ServiceIndex::new();
        let a = index.add_service("default", "a");
        let b = index.add_service("default", "b");
        index.add_backend(a, ip("10.200.0.5"), 8080, TCP);
        index.add_backend(b, ip("10.200.0.5"), 8080, TCP);
        index.add_backend(b, ip("10.96.0.11"), 80, TCP);
        index.add_frontend(a, ip("10.96.0.11"), 80, TCP);
        assert_eq!(name(index.lookup(ip("10.200.0.5"), 8080, TCP, 256)).as_deref(), Some("default/a"));
        assert_eq!(name(index.lookup(ip("10.96.0.11"), 80, TCP, 256)).as_deref(), Some("default/a"));
    }

    #[test]
    fn node_ports_count_at_the_node_s_addresses_only() {
        let mut index = ServiceIndex::new();
        let np = index.add_service("prod", "np");
        index.add_node_port(np, 30080, TCP);
        assert_eq!(
            name(index.lookup(ip("192.168.1.2"), 30080, TCP, IDENTITY_HOST)).as_deref(),
            Some("prod/np")
        );
        assert_eq!(index.lookup(ip("192.168.1.2"), 30080, UDP, IDENTITY_HOST), None);
        assert_eq!(index.lookup(ip("8.8.8.8"), 30080, TCP, twill_abi::IDENTITY_WORLD), None, "not the node");
    }
}
