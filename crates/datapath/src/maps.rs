//! One typed handle per map the agent writes, each behind a small trait so
//! the diff-and-apply logic above it runs against an in-memory fake in unit
//! tests (the shape of Cilium's `pkg/maps/policymap` and its `fake`).

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::maps::{lpm_trie::Key as LpmKey, HashMap, LpmTrie, MapData, MapError};
use twill_abi::{
    EndpointInfo, EndpointKey, IpcacheValue, PolicyKeyData, PolicyValue, POLICY_FIXED_PREFIX,
    POLICY_FLAG_DENY,
};

pub use crate::lb_maps::{KernelLbMaps, KernelNetnsMap, LbMaps, NetnsMap};
use crate::DatapathError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcacheEntry {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub identity: u32,
    /// The underlay address of the node hosting the prefix, for traffic
    /// the datapath encapsulates to it; `None` for local addresses and
    /// those behind no node.
    pub tunnel_endpoint: Option<Ipv4Addr>,
    /// `twill_abi::IPCACHE_F_*`.
    pub flags: u32,
}

impl IpcacheEntry {
    /// A prefix that is not behind another node.
    pub fn local(ip: Ipv4Addr, prefix_len: u8, identity: u32) -> Self {
        Self { ip, prefix_len, identity, tunnel_endpoint: None, flags: 0 }
    }

    fn value(&self) -> IpcacheValue {
        IpcacheValue {
            identity: self.identity,
            flags: self.flags,
            tunnel_endpoint: self.tunnel_endpoint.map_or(0, |a| u32::from(a).to_be()),
        }
    }
}

/// One policy map entry, in host terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyEntry {
    pub endpoint_id: u16,
    /// 0 ingress, 1 egress.
    pub direction: u8,
    /// 0 = any peer.
    pub identity: u32,
    /// 0 = any protocol.
    pub protocol: u8,
    pub port: u16,
    /// Prefix bits over (protocol, port): 0 = anything, 8 = the protocol
    /// with any port, 8 + n = the protocol and the first n port bits.
    pub l4_prefix: u8,
}

impl PolicyEntry {
    /// Cilium's name for what this entry matches on, reported with
    /// policy verdicts.
    pub fn match_type(&self) -> u32 {
        use twill_abi::*;
        match (self.identity != 0, self.l4_prefix) {
            (true, 0) => POLICY_MATCH_L3_ONLY,
            (true, 8) => POLICY_MATCH_L3_PROTO,
            (true, _) => POLICY_MATCH_L3_L4,
            (false, 0) => POLICY_MATCH_ALL,
            (false, 8) => POLICY_MATCH_PROTO_ONLY,
            (false, _) => POLICY_MATCH_L4_ONLY,
        }
    }

    fn to_key(self) -> LpmKey<PolicyKeyData> {
        let data = PolicyKeyData {
            endpoint_id: self.endpoint_id.to_be(),
            direction: self.direction,
            pad: 0,
            identity: self.identity.to_be(),
            protocol: self.protocol,
            dport: self.port.to_be(),
        };
        LpmKey::new(POLICY_FIXED_PREFIX + self.l4_prefix as u32, data)
    }

    fn from_key(key: &LpmKey<PolicyKeyData>) -> Self {
        let data = key.data();
        PolicyEntry {
            endpoint_id: u16::from_be(data.endpoint_id),
            direction: data.direction,
            identity: u32::from_be(data.identity),
            protocol: data.protocol,
            port: u16::from_be(data.dport),
            l4_prefix: (key.prefix_len() - POLICY_FIXED_PREFIX) as u8,
        }
    }
}

/// What a policy map entry decides: deny, allow, or allow through the L7
/// proxy listening on `proxy_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PolicyAction {
    pub deny: bool,
    /// 0: no redirect. Never set with `deny`.
    pub proxy_port: u16,
}

impl PolicyAction {
    pub const ALLOW: PolicyAction = PolicyAction { deny: false, proxy_port: 0 };
    pub const DENY: PolicyAction = PolicyAction { deny: true, proxy_port: 0 };

    pub fn redirect(proxy_port: u16) -> PolicyAction {
        PolicyAction { deny: false, proxy_port }
    }
}

/// The policy map (`twill_policy`): per endpoint, direction, peer identity
/// and L4 prefix, allow, deny, or allow through the proxy.
pub trait PolicyMap: Send {
    fn upsert(&mut self, entry: PolicyEntry, action: PolicyAction) -> Result<(), DatapathError>;
    /// Removing an absent entry is not an error.
    fn remove(&mut self, entry: PolicyEntry) -> Result<(), DatapathError>;
    /// Every entry with what it decides. Walks the whole map: for
    /// start-up and inspection, not per change.
    fn entries(&self) -> Result<Vec<(PolicyEntry, PolicyAction)>, DatapathError>;
}

/// The ipcache (`twill_ipcache`): address prefix to identity.
pub trait IpcacheMap: Send {
    /// Inserts or replaces the entry of `entry.ip/entry.prefix_len`.
    fn upsert(&mut self, entry: &IpcacheEntry) -> Result<(), DatapathError>;
    /// Removing an absent entry is not an error.
    fn remove(&mut self, ip: Ipv4Addr, prefix_len: u8) -> Result<(), DatapathError>;
    /// Sorted by address, then prefix length.
    fn entries(&self) -> Result<Vec<IpcacheEntry>, DatapathError>;
}

/// The endpoint map (`twill_endpoints`): local endpoint address to where
/// and how to deliver.
pub trait EndpointMap: Send {
    fn upsert(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError>;
    /// Removing an absent entry is not an error.
    fn remove(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError>;
    fn entries(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DatapathError>;
}

pub(crate) fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

pub(crate) fn absent_ok(name: &'static str, result: Result<(), MapError>) -> Result<(), DatapathError> {
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        // Some aya removals report an absent key as the syscall's ENOENT.
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}

pub struct KernelPolicyMap(pub(crate) LpmTrie<MapData, PolicyKeyData, PolicyValue>);

impl PolicyMap for KernelPolicyMap {
    fn upsert(&mut self, entry: PolicyEntry, action: PolicyAction) -> Result<(), DatapathError> {
        let value = PolicyValue {
            flags: if action.deny { POLICY_FLAG_DENY } else { 0 },
            match_type: entry.match_type(),
            proxy_port: if action.deny { 0 } else { action.proxy_port },
            pad: 0,
        };
        self.0.insert(&entry.to_key(), value, 0).map_err(map_err("twill_policy"))
    }

    fn remove(&mut self, entry: PolicyEntry) -> Result<(), DatapathError> {
        absent_ok("twill_policy", self.0.remove(&entry.to_key()))
    }

    fn entries(&self) -> Result<Vec<(PolicyEntry, PolicyAction)>, DatapathError> {
        self.0
            .iter()
            .map(|r| {
                r.map(|(k, v)| {
                    let action =
                        PolicyAction { deny: v.flags & POLICY_FLAG_DENY != 0, proxy_port: v.proxy_port };
                    (PolicyEntry::from_key(&k), action)
                })
            })
            .collect::<Result<_, _>>()
            .map_err(map_err("twill_policy"))
    }
}

pub struct KernelIpcacheMap(pub(crate) LpmTrie<MapData, u32, IpcacheValue>);

impl IpcacheMap for KernelIpcacheMap {
    fn upsert(&mut self, entry: &IpcacheEntry) -> Result<(), DatapathError> {
        let key = LpmKey::new(entry.prefix_len as u32, u32::from(entry.ip).to_be());
        self.0.insert(&key, entry.value(), 0).map_err(map_err("twill_ipcache"))
    }

    fn remove(&mut self, ip: Ipv4Addr, prefix_len: u8) -> Result<(), DatapathError> {
        let key = LpmKey::new(prefix_len as u32, u32::from(ip).to_be());
        absent_ok("twill_ipcache", self.0.remove(&key))
    }

    fn entries(&self) -> Result<Vec<IpcacheEntry>, DatapathError> {
        let mut out = self
            .0
            .iter()
            .map(|r| {
                r.map(|(k, v)| IpcacheEntry {
                    ip: Ipv4Addr::from(u32::from_be(k.data())),
                    prefix_len: k.prefix_len() as u8,
                    identity: v.identity,
                    tunnel_endpoint: (v.tunnel_endpoint != 0)
                        .then(|| Ipv4Addr::from(u32::from_be(v.tunnel_endpoint))),
                    flags: v.flags,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("twill_ipcache"))?;
        out.sort_by_key(|e| (u32::from(e.ip), e.prefix_len));
        Ok(out)
    }
}

pub struct KernelEndpointMap(pub(crate) HashMap<MapData, EndpointKey, EndpointInfo>);

fn endpoint_key(ip: Ipv4Addr) -> EndpointKey {
    EndpointKey { ip: u32::from(ip).to_be() }
}

impl EndpointMap for KernelEndpointMap {
    fn upsert(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError> {
        self.0.insert(endpoint_key(ip), info, 0).map_err(map_err("twill_endpoints"))
    }

    fn remove(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        absent_ok("twill_endpoints", self.0.remove(&endpoint_key(ip)))
    }

    fn entries(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DatapathError> {
        self.0
            .iter()
            .map(|r| r.map(|(k, v)| (Ipv4Addr::from(u32::from_be(k.ip)), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err("twill_endpoints"))
    }
}

/// In-memory maps with the kernel maps' semantics, for unit tests of the
/// logic that writes them. Each counts its writes, so a test can check
/// that a diff touched only what changed.
pub mod fake {
    use super::*;

    pub use crate::lb_maps::fake::{FakeLbMaps, FakeNetnsMap};

    #[derive(Debug, Default)]
    pub struct FakePolicyMap {
        entries: BTreeMap<PolicyEntry, PolicyAction>,
        writes: usize,
        /// Fail every write once this many have succeeded (None: never).
        fail_after: Option<usize>,
    }

    impl FakePolicyMap {
        pub fn with_entries(entries: impl IntoIterator<Item = (PolicyEntry, PolicyAction)>) -> Self {
            Self { entries: entries.into_iter().collect(), ..Default::default() }
        }
        pub fn fail_after(&mut self, writes: usize) {
            self.fail_after = Some(self.writes + writes);
        }
        pub fn writes(&self) -> usize {
            self.writes
        }
        pub fn get(&self, entry: &PolicyEntry) -> Option<PolicyAction> {
            self.entries.get(entry).copied()
        }
        pub fn len(&self) -> usize {
            self.entries.len()
        }
        pub fn is_empty(&self) -> bool {
            self.entries.is_empty()
        }
        fn write(&mut self) -> Result<(), DatapathError> {
            if self.fail_after.is_some_and(|n| self.writes >= n) {
                // What a full kernel map answers.
                let io_error = std::io::Error::from_raw_os_error(libc::E2BIG);
                let source =
                    MapError::SyscallError(aya::sys::SyscallError { call: "bpf_map_update_elem", io_error });
                return Err(DatapathError::Map { name: "twill_policy", source });
            }
            self.writes += 1;
            Ok(())
        }
    }

    impl PolicyMap for FakePolicyMap {
        fn upsert(&mut self, entry: PolicyEntry, action: PolicyAction) -> Result<(), DatapathError> {
            self.write()?;
            self.entries.insert(entry, action);
            Ok(())
        }
        fn remove(&mut self, entry: PolicyEntry) -> Result<(), DatapathError> {
            self.write()?;
            self.entries.remove(&entry);
            Ok(())
        }
        fn entries(&self) -> Result<Vec<(PolicyEntry, PolicyAction)>, DatapathError> {
            Ok(self.entries.iter().map(|(e, d)| (*e, *d)).collect())
        }
    }

    #[derive(Debug, Default, Clone)]
    pub struct FakeIpcacheMap {
        entries: BTreeMap<(u32, u8), (u32, Option<Ipv4Addr>, u32)>,
        writes: usize,
    }

    impl FakeIpcacheMap {
        pub fn writes(&self) -> usize {
            self.writes
        }
    }

    impl IpcacheMap for FakeIpcacheMap {
        fn upsert(&mut self, entry: &IpcacheEntry) -> Result<(), DatapathError> {
            self.writes += 1;
            self.entries.insert(
                (u32::from(entry.ip), entry.prefix_len),
                (entry.identity, entry.tunnel_endpoint, entry.flags),
            );
            Ok(())
        }
        fn remove(&mut self, ip: Ipv4Addr, prefix_len: u8) -> Result<(), DatapathError> {
            self.writes += 1;
            self.entries.remove(&(u32::from(ip), prefix_len));
            Ok(())
        }
        fn entries(&self) -> Result<Vec<IpcacheEntry>, DatapathError> {
            Ok(self
                .entries
                .iter()
                .map(|((ip, len), (id, tunnel, flags))| IpcacheEntry {
                    ip: Ipv4Addr::from(*ip),
                    prefix_len: *len,
                    identity: *id,
                    tunnel_endpoint: *tunnel,
                    flags: *flags,
                })
                .collect())
        }
    }

    #[derive(Debug, Default, Clone)]
    pub struct FakeEndpointMap {
        entries: BTreeMap<Ipv4Addr, EndpointInfo>,
    }

    impl EndpointMap for FakeEndpointMap {
        fn upsert(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError> {
            self.entries.insert(ip, info);
            Ok(())
        }
        fn remove(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
            self.entries.remove(&ip);
            Ok(())
        }
        fn entries(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DatapathError> {
            Ok(self.entries.iter().map(|(ip, i)| (*ip, *i)).collect())
        }
    }
}
