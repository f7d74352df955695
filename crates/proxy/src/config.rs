//! What the agent tells the proxy: the redirects (one listener each) with
//! the L7 rules per peer identity, and the ipcache to name peers by. Plain
//! data (serde), so it can cross a process boundary as it is.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use twill_policy::l7::L7Rules;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyConfig {
    pub redirects: Vec<Redirect>,
    pub ipcache: Vec<IpcacheEntry>,
}

/// One listener: the connections an endpoint's policy sends to the proxy
/// for one direction and L4 key. Keyed by the listener port, which the
/// policy map entries carry, so the proxy knows whose rules apply from the
/// port a connection arrived on; Cilium allocates per endpoint, direction
/// and port the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// The listener, on 127.0.0.1.
    pub proxy_port: u16,
    pub endpoint_id: u16,
    pub endpoint_ip: Ipv4Addr,
    pub endpoint_identity: u32,
    pub ingress: bool,
    pub protocol: u8,
    /// The L4 key: `port` with `port_prefix` leading bits significant.
    pub port: u16,
    pub port_prefix: u8,
    /// Rules per peer identity (0: any peer). A request is allowed when
    /// the rules of any entry naming its peer (or any) allow it.
    pub peers: Vec<PeerRules>,
}

impl Redirect {
    pub fn covers_port(&self, port: u16) -> bool {
        let mask = if self.port_prefix == 0 { 0 } else { u16::MAX << (16 - self.port_prefix.min(16)) };
        port & mask == self.port & mask
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRules {
    pub identity: u32,
    pub rules: L7Rules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcacheEntry {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub identity: u32,
}

/// Longest-prefix match over ipcache entries; the world when none covers
/// the address (as the datapath decides).
pub fn identity_of(entries: &[IpcacheEntry], ip: Ipv4Addr) -> u32 {
    let addr = u32::from(ip);
    entries
        .iter()
        .filter(|e| {
            let mask = if e.prefix_len == 0 { 0 } else { u32::MAX << (32 - e.prefix_len.min(32) as u32) };
            addr & mask == u32::from(e.ip) & mask
        })
        .max_by_key(|e| e.prefix_len)
        .map_or(twill_abi::IDENTITY_WORLD, |e| e.identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_names_the_peer() {
        let e =
            |ip: [u8; 4], prefix_len, identity| IpcacheEntry { ip: Ipv4Addr::from(ip), prefix_len, identity };
        let cache = [e([10, 0, 0, 0], 8, 16777217), e([10, 0, 0, 5], 32, 256)];
        assert_eq!(identity_of(&cache, Ipv4Addr::new(10, 0, 0, 5)), 256);
        assert_eq!(identity_of(&cache, Ipv4Addr::new(10, 0, 0, 6)), 16777217);
        assert_eq!(identity_of(&cache, Ipv4Addr::new(192, 0, 2, 1)), twill_abi::IDENTITY_WORLD);
    }

    #[test]
    fn port_prefixes_cover_their_ranges() {
        let r = Redirect {
            proxy_port: 1,
            endpoint_id: 1,
            endpoint_ip: Ipv4Addr::LOCALHOST,
            endpoint_identity: 1,
            ingress: true,
            protocol: 6,
            port: 8080,
            port_prefix: 14,
            peers: vec![],
        };
        assert!((8080..=8083).all(|p| r.covers_port(p)));
        assert!(!r.covers_port(8084) && !r.covers_port(80));
    }
}
