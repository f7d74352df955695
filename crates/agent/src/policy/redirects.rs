//! Proxy redirects: which policy map entries send connections to the L7
//! proxy, on which listener port, with which rules. Pure bookkeeping; the
//! agent pushes the result to the proxy and writes the ports into the
//! policy map.
//!
//! One listener per endpoint, direction and L4 key (Cilium's model): the
//! port a connection arrives on then names whose rules apply, and the
//! proxy needs nothing from the packet but the peer's address. Ports stay
//! with their redirect while it exists, so a policy change never moves a
//! live connection's listener.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use twill_policy::{
    l7::L7Rules,
    l7_dns::DnsMatch,
    model::Direction,
    resolve::{EndpointPolicy, MapKey},
};
use twill_proxy::config::{PeerRules, Redirect};

/// Cilium's default proxy port range.
pub const PROXY_PORT_MIN: u16 = 10000;
pub const PROXY_PORT_MAX: u16 = 20000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RedirectKey {
    pub endpoint_id: u16,
    pub direction: Direction,
    pub protocol: u8,
    pub port: u16,
    pub port_prefix: u8,
}

impl RedirectKey {
    /// The key of a policy map entry as the kernel holds it.
    pub fn from_entry(e: &twill_datapath::PolicyEntry) -> RedirectKey {
        RedirectKey {
            endpoint_id: e.endpoint_id,
            direction: if e.direction == twill_abi::DIR_INGRESS {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            protocol: e.protocol,
            port: e.port,
            port_prefix: e.l4_prefix.saturating_sub(8),
        }
    }

    pub fn of(endpoint_id: u16, key: &MapKey) -> RedirectKey {
        RedirectKey {
            endpoint_id,
            direction: key.direction,
            protocol: key.protocol,
            port: key.port,
            port_prefix: key.port_prefix,
        }
    }
}

/// One policy map entry with `rules.dns`: lookups from the endpoint to
/// `identity` (0: any peer) on these ports may ask for `names`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRedirect {
    pub identity: u32,
    pub protocol: u8,
    pub port: u16,
    pub port_prefix: u8,
    pub names: Vec<DnsMatch>,
}

impl DnsRedirect {
    /// Whether a lookup to `identity` on `protocol`/`port` falls under it
    /// (`protocol` 0: whichever).
    pub fn covers(&self, identity: u32, protocol: u8, port: u16) -> bool {
        let mask = if self.port_prefix == 0 { 0 } else { u16::MAX << (16 - self.port_prefix.min(16)) };
        (self.identity == 0 || self.identity == identity)
            && (self.protocol == 0 || protocol == 0 || self.protocol == protocol)
            && (port & mask) == (self.port & mask)
    }
}

#[derive(Debug, Default)]
pub struct Redirects {
    ports: BTreeMap<RedirectKey, u16>,
    /// Per endpoint: its redirects as the proxy gets them.
    configs: BTreeMap<u16, Vec<Redirect>>,
    /// The DNS proxy's one port: every DNS redirect goes there, and the
    /// proxy tells endpoints apart by address.
    dns_port: u16,
    /// Per endpoint: its DNS redirects, for the DNS proxy.
    dns: BTreeMap<u16, Vec<DnsRedirect>>,
}

impl Redirects {
    pub fn new(dns_port: u16) -> Self {
        Redirects { dns_port, ..Default::default() }
    }

    /// Keeps ports found in the kernel's policy map (a restarted agent),
    /// so existing redirects keep their listeners.
    pub fn adopt(&mut self, key: RedirectKey, port: u16) {
        if port != 0 && port != self.dns_port && !self.ports.values().any(|p| *p == port) {
            self.ports.entry(key).or_insert(port);
        }
    }

    fn allocate(&mut self, key: RedirectKey) -> Option<u16> {
        if let Some(p) = self.ports.get(&key) {
            return Some(*p);
        }
        let used: BTreeSet<u16> = self.ports.values().copied().collect();
        let port = (PROXY_PORT_MIN..=PROXY_PORT_MAX).find(|p| !used.contains(p))?;
        self.ports.insert(key, port);
        Some(port)
    }

    /// Brings one endpoint's redirects in line with its resolved policy:
    /// allocates ports for new L7 keys, frees those of keys gone. Returns
    /// the port of each map key with L7 rules (0 when the range is
    /// exhausted: the entry then denies nothing but redirects nowhere, and
    /// the datapath drops for lack of a proxy, failing closed).
    pub fn sync_endpoint(
        &mut self,
        endpoint_id: u16,
        ip: Ipv4Addr,
        identity: u32,
        resolved: &EndpointPolicy,
    ) -> BTreeMap<MapKey, u16> {
        let mut grouped: BTreeMap<RedirectKey, Vec<PeerRules>> = BTreeMap::new();
        let mut dns = Vec::new();
        for (k, e) in &resolved.entries {
            if let (false, Some(L7Rules::Dns(names))) = (e.deny, &e.l7) {
                dns.push(DnsRedirect {
                    identity: k.identity,
                    protocol: k.protocol,
                    port: k.port,
                    port_prefix: k.port_prefix,
                    names: names.clone(),
                });
            } else if let (false, Some(rules)) = (e.deny, &e.l7) {
                grouped
                    .entry(RedirectKey::of(endpoint_id, k))
                    .or_default()
                    .push(PeerRules { identity: k.identity, rules: rules.clone() });
            }
        }
        self.ports.retain(|k, _| k.endpoint_id != endpoint_id || grouped.contains_key(k));
        let mut configs = Vec::new();
        let mut by_key = BTreeMap::new();
        for (key, peers) in grouped {
            let port = self.allocate(key).unwrap_or(0);
            if port != 0 {
                configs.push(Redirect {
                    proxy_port: port,
                    endpoint_id,
                    endpoint_ip: ip,
                    endpoint_identity: identity,
                    ingress: key.direction == Direction::Ingress,
                    protocol: key.protocol,
                    port: key.port,
                    port_prefix: key.port_prefix,
                    peers,
                });
            }
            by_key.insert(key, port);
        }
        self.configs.insert(endpoint_id, configs);
        self.dns.insert(endpoint_id, dns);
        let dns_port = self.dns_port;
        resolved
            .entries
            .iter()
            .filter_map(|(k, e)| match (e.deny, &e.l7) {
                (false, Some(L7Rules::Dns(_))) => Some((*k, dns_port)),
                (false, Some(_)) => {
                    Some((*k, by_key.get(&RedirectKey::of(endpoint_id, k)).copied().unwrap_or(0)))
                }
                _ => None,
            })
            .collect()
    }

    pub fn forget_endpoint(&mut self, endpoint_id: u16) {
        self.ports.retain(|k, _| k.endpoint_id != endpoint_id);
        self.configs.remove(&endpoint_id);
        self.dns.remove(&endpoint_id);
    }

    /// Every endpoint's DNS redirects, for the DNS proxy.
    pub fn dns(&self) -> &BTreeMap<u16, Vec<DnsRedirect>> {
        &self.dns
    }

    /// Every redirect, for the proxy.
    pub fn all(&self) -> Vec<Redirect> {
        self.configs.values().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use twill_policy::{l7::HttpRule, resolve::MapEntry};

    use super::*;

    fn policy(keys: &[(u32, u16, bool)]) -> EndpointPolicy {
        let mut p = EndpointPolicy::default();
        for (identity, port, l7) in keys {
            let key = MapKey {
                direction: Direction::Ingress,
                identity: *identity,
                protocol: 6,
                port: *port,
                port_prefix: 16,
            };
            let l7 = l7.then(|| L7Rules::Http(vec![HttpRule::default()]));
            p.entries.insert(key, MapEntry { deny: false, origins: Default::default(), l7 });
        }
        p
    }

    #[test]
    fn one_port_per_endpoint_direction_and_l4_key_with_rules_per_peer() {
        let mut r = Redirects::default();
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        let ports =
            r.sync_endpoint(3, ip, 300, &policy(&[(256, 80, true), (257, 80, true), (258, 81, false)]));
        assert_eq!(ports.len(), 2, "only entries with L7 rules redirect");
        assert!(ports.values().all(|p| *p == PROXY_PORT_MIN), "{ports:?}");
        let all = r.all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].peers.iter().map(|p| p.identity).collect::<Vec<_>>(), vec![256, 257]);
        // Another endpoint gets its own listener; ports are stable.
        let other = r.sync_endpoint(4, ip, 300, &policy(&[(256, 80, true)]));
        assert_eq!(other.values().copied().collect::<Vec<_>>(), vec![PROXY_PORT_MIN + 1]);
        let again = r.sync_endpoint(3, ip, 300, &policy(&[(256, 80, true)]));
        assert_eq!(again.values().copied().collect::<Vec<_>>(), vec![PROXY_PORT_MIN]);
        // Rules gone: the port is free again.
        r.sync_endpoint(3, ip, 300, &policy(&[(256, 80, false)]));
        assert_eq!(r.all().len(), 1);
        let reused = r.sync_endpoint(5, ip, 300, &policy(&[(256, 80, true)]));
        assert_eq!(reused.values().copied().collect::<Vec<_>>(), vec![PROXY_PORT_MIN]);
    }
}
