//! Typed handles on the service maps (`twill_lb4_*`, `twill_lb_affinity_match`)
//! and the socket-LB namespace map (`twill_lb_netns`), each behind a trait
//! with an in-memory fake (re-exported from `maps::fake`).

use std::{collections::BTreeMap, os::fd::AsFd};

use aya::maps::{of_maps::HashOfMaps, HashMap, MapData, MapError, MapKeys};
use twill_abi::{Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service, LbAffinityMatchKey, LbNetnsValue};

use crate::{
    bpf_sys,
    maps::{absent_ok, map_err},
    DatapathError,
};

/// The service maps of IPv4 load balancing, as the kernel reads them (see
/// the Services section of `bpf/include/twill.h`). Removing an absent entry
/// is not an error. The listings walk whole maps: for start-up and
/// inspection, not per change.
pub trait LbMaps: Send {
    /// Slot 0 (the service) or a backend slot of a frontend.
    fn upsert_service(&mut self, key: Lb4Key, value: Lb4Service) -> Result<(), DatapathError>;
    fn remove_service(&mut self, key: Lb4Key) -> Result<(), DatapathError>;
    fn upsert_backend(&mut self, id: u32, backend: Lb4Backend) -> Result<(), DatapathError>;
    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError>;
    fn upsert_reverse_nat(&mut self, index: u32, value: Lb4ReverseNat) -> Result<(), DatapathError>;
    fn remove_reverse_nat(&mut self, index: u32) -> Result<(), DatapathError>;
    /// Replaces the Maglev table of frontend `index` as a whole: readers
    /// see the old table or the new one. Its length must be the configured
    /// `maglev_table_size`.
    fn set_maglev(&mut self, index: u32, table: &[u32]) -> Result<(), DatapathError>;
    fn remove_maglev(&mut self, index: u32) -> Result<(), DatapathError>;
    fn services(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, DatapathError>;
    fn backends(&self) -> Result<Vec<(u32, Lb4Backend)>, DatapathError>;
    fn reverse_nat(&self) -> Result<Vec<(u32, Lb4ReverseNat)>, DatapathError>;
    fn maglev(&self) -> Result<Vec<(u32, Vec<u32>)>, DatapathError>;
}

/// The namespaces whose sockets this node's socket hooks translate, by
/// network namespace cookie (see [`crate::netns_cookie`]).
pub trait NetnsMap: Send {
    fn upsert(&mut self, cookie: u64, value: LbNetnsValue) -> Result<(), DatapathError>;
    /// Removing an absent entry is not an error.
    fn remove(&mut self, cookie: u64) -> Result<(), DatapathError>;
    fn entries(&self) -> Result<Vec<(u64, LbNetnsValue)>, DatapathError>;
}

const SERVICES: &str = "twill_lb4_services";
const BACKENDS: &str = "twill_lb4_backends";
const REVERSE_NAT: &str = "twill_lb4_reverse_nat";
const MAGLEV: &str = "twill_lb4_maglev";
const AFFINITY_MATCH: &str = "twill_lb_affinity_match";
const NETNS: &str = "twill_lb_netns";

pub struct KernelLbMaps {
    pub(crate) services: HashMap<MapData, Lb4Key, Lb4Service>,
    pub(crate) backends: HashMap<MapData, u32, Lb4Backend>,
    pub(crate) reverse_nat: HashMap<MapData, u32, Lb4ReverseNat>,
    pub(crate) maglev: HashOfMaps<MapData, u32, MapData>,
    pub(crate) affinity_match: HashMap<MapData, LbAffinityMatchKey, u32>,
}

fn walk<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    map: &HashMap<MapData, K, V>,
) -> Result<Vec<(K, V)>, DatapathError> {
    map.iter().collect::<Result<_, _>>().map_err(map_err(name))
}

fn get<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    map: &HashMap<MapData, K, V>,
    key: &K,
) -> Result<Option<V>, DatapathError> {
    match map.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(map_err(name)(e)),
    }
}

impl KernelLbMaps {
    /// Keeps `twill_lb_affinity_match` in step with the slots: the count
    /// of slots of frontend `rev_nat_index` holding `backend_id` moves by
    /// `delta`; at 0 the entry goes, and affinity to it stops.
    fn adjust_match(&mut self, backend_id: u32, rev_nat_index: u32, delta: i64) -> Result<(), DatapathError> {
        let key = LbAffinityMatchKey { backend_id, rev_nat_index };
        let count = get(AFFINITY_MATCH, &self.affinity_match, &key)?.unwrap_or(0) as i64 + delta;
        if count > 0 {
            self.affinity_match.insert(key, count as u32, 0).map_err(map_err(AFFINITY_MATCH))
        } else {
            absent_ok(AFFINITY_MATCH, self.affinity_match.remove(&key))
        }
    }
}

impl LbMaps for KernelLbMaps {
    fn upsert_service(&mut self, key: Lb4Key, value: Lb4Service) -> Result<(), DatapathError> {
        let old = if key.backend_slot > 0 { get(SERVICES, &self.services, &key)? } else { None };
        self.services.insert(key, value, 0).map_err(map_err(SERVICES))?;
        if key.backend_slot > 0 && old != Some(value) {
            self.adjust_match(value.backend_id, value.rev_nat_index, 1)?;
            if let Some(old) = old {
                self.adjust_match(old.backend_id, old.rev_nat_index, -1)?;
            }
        }
        Ok(())
    }

    fn remove_service(&mut self, key: Lb4Key) -> Result<(), DatapathError> {
        let old = if key.backend_slot > 0 { get(SERVICES, &self.services, &key)? } else { None };
        absent_ok(SERVICES, self.services.remove(&key))?;
        if let Some(old) = old {
            self.adjust_match(old.backend_id, old.rev_nat_index, -1)?;
        }
        Ok(())
    }

    fn upsert_backend(&mut self, id: u32, backend: Lb4Backend) -> Result<(), DatapathError> {
        self.backends.insert(id, backend, 0).map_err(map_err(BACKENDS))
    }

    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        absent_ok(BACKENDS, self.backends.remove(&id))
    }

    fn upsert_reverse_nat(&mut self, index: u32, value: Lb4ReverseNat) -> Result<(), DatapathError> {
        self.reverse_nat.insert(index, value, 0).map_err(map_err(REVERSE_NAT))
    }

    fn remove_reverse_nat(&mut self, index: u32) -> Result<(), DatapathError> {
        absent_ok(REVERSE_NAT, self.reverse_nat.remove(&index))
    }

    /// Written through mmap in one pass: one syscall per entry costs about
    /// 5 ms per 16381-entry table. A table of the same size already there
    /// is rewritten in place (each 4-byte entry changes atomically; a
    /// lookup during the copy gets the old or the new backend of its
    /// entry); otherwise a new table is filled and then swapped in with one
    /// update of the outer map, which waits for an RCU grace period
    /// (synchronize_rcu in the kernel, 4 to 16 ms here).
    fn set_maglev(&mut self, index: u32, table: &[u32]) -> Result<(), DatapathError> {
        let syscall = |call: &'static str| {
            move |io_error| DatapathError::Map {
                name: MAGLEV,
                source: MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
            }
        };
        let entries = u32::try_from(table.len())
            .ok()
            .filter(|n| *n > 0)
            .ok_or(DatapathError::MaglevSize { index, len: table.len() })?;
        match self.maglev.get(&index, 0) {
            Ok(inner) => {
                let inner: MapData = inner;
                if inner.info().map_err(map_err(MAGLEV))?.max_entries() == entries {
                    bpf_sys::MappedU32Array::map(inner.fd().as_fd(), table.len(), true)
                        .map_err(syscall("mmap"))?
                        .write(table);
                    return Ok(());
                }
            }
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(MAGLEV)(e)),
        }
        let fd = bpf_sys::create_mmapable_u32_array("twill_maglev", entries, bpf_sys::BPF_F_INNER_MAP)
            .map_err(syscall("bpf_map_create"))?;
        bpf_sys::MappedU32Array::map(fd.as_fd(), table.len(), true).map_err(syscall("mmap"))?.write(table);
        let inner = MapData::from_fd(fd).map_err(map_err(MAGLEV))?;
        self.maglev.insert(index, &inner, 0).map_err(map_err(MAGLEV))
    }

    fn remove_maglev(&mut self, index: u32) -> Result<(), DatapathError> {
        absent_ok(MAGLEV, self.maglev.remove(&index))
    }

    fn services(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, DatapathError> {
        let mut out = walk(SERVICES, &self.services)?;
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    fn backends(&self) -> Result<Vec<(u32, Lb4Backend)>, DatapathError> {
        let mut out = walk(BACKENDS, &self.backends)?;
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    fn reverse_nat(&self) -> Result<Vec<(u32, Lb4ReverseNat)>, DatapathError> {
        let mut out = walk(REVERSE_NAT, &self.reverse_nat)?;
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    fn maglev(&self) -> Result<Vec<(u32, Vec<u32>)>, DatapathError> {
        let keys: MapKeys<'_, u32> = self.maglev.keys();
        let mut out = Vec::new();
        for key in keys {
            let key = key.map_err(map_err(MAGLEV))?;
            let inner: MapData = self.maglev.get(&key, 0).map_err(map_err(MAGLEV))?;
            let entries = inner.info().map_err(map_err(MAGLEV))?.max_entries() as usize;
            let mapped =
                bpf_sys::MappedU32Array::map(inner.fd().as_fd(), entries, false).map_err(|io_error| {
                    DatapathError::Map {
                        name: MAGLEV,
                        source: MapError::SyscallError(aya::sys::SyscallError { call: "mmap", io_error }),
                    }
                })?;
            out.push((key, mapped.read()));
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }
}

pub struct KernelNetnsMap(pub(crate) HashMap<MapData, u64, LbNetnsValue>);

impl NetnsMap for KernelNetnsMap {
    fn upsert(&mut self, cookie: u64, value: LbNetnsValue) -> Result<(), DatapathError> {
        self.0.insert(cookie, value, 0).map_err(map_err(NETNS))
    }

    fn remove(&mut self, cookie: u64) -> Result<(), DatapathError> {
        absent_ok(NETNS, self.0.remove(&cookie))
    }

    fn entries(&self) -> Result<Vec<(u64, LbNetnsValue)>, DatapathError> {
        let mut out = walk(NETNS, &self.0)?;
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }
}

/// In-memory service maps with the kernel maps' semantics; each counts its
/// writes, so a test can check that a diff touched only what changed.
pub mod fake {
    use super::*;

    #[derive(Debug, Default, Clone)]
    pub struct FakeLbMaps {
        pub services: BTreeMap<Lb4Key, Lb4Service>,
        pub backends: BTreeMap<u32, Lb4Backend>,
        pub reverse_nat: BTreeMap<u32, Lb4ReverseNat>,
        pub maglev: BTreeMap<u32, Vec<u32>>,
        writes: usize,
    }

    impl FakeLbMaps {
        pub fn writes(&self) -> usize {
            self.writes
        }
    }

    impl LbMaps for FakeLbMaps {
        fn upsert_service(&mut self, key: Lb4Key, value: Lb4Service) -> Result<(), DatapathError> {
            self.writes += 1;
            self.services.insert(key, value);
            Ok(())
        }
        fn remove_service(&mut self, key: Lb4Key) -> Result<(), DatapathError> {
            self.writes += 1;
            self.services.remove(&key);
            Ok(())
        }
        fn upsert_backend(&mut self, id: u32, backend: Lb4Backend) -> Result<(), DatapathError> {
            self.writes += 1;
            self.backends.insert(id, backend);
            Ok(())
        }
        fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
            self.writes += 1;
            self.backends.remove(&id);
            Ok(())
        }
        fn upsert_reverse_nat(&mut self, index: u32, value: Lb4ReverseNat) -> Result<(), DatapathError> {
            self.writes += 1;
            self.reverse_nat.insert(index, value);
            Ok(())
        }
        fn remove_reverse_nat(&mut self, index: u32) -> Result<(), DatapathError> {
            self.writes += 1;
            self.reverse_nat.remove(&index);
            Ok(())
        }
        fn set_maglev(&mut self, index: u32, table: &[u32]) -> Result<(), DatapathError> {
            if table.is_empty() {
                return Err(DatapathError::MaglevSize { index, len: 0 });
            }
            self.writes += 1;
            self.maglev.insert(index, table.to_vec());
            Ok(())
        }
        fn remove_maglev(&mut self, index: u32) -> Result<(), DatapathError> {
            self.writes += 1;
            self.maglev.remove(&index);
            Ok(())
        }
        fn services(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, DatapathError> {
            Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn backends(&self) -> Result<Vec<(u32, Lb4Backend)>, DatapathError> {
            Ok(self.backends.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn reverse_nat(&self) -> Result<Vec<(u32, Lb4ReverseNat)>, DatapathError> {
            Ok(self.reverse_nat.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn maglev(&self) -> Result<Vec<(u32, Vec<u32>)>, DatapathError> {
            Ok(self.maglev.iter().map(|(k, v)| (*k, v.clone())).collect())
        }
    }

    #[derive(Debug, Default, Clone)]
    pub struct FakeNetnsMap {
        pub entries: BTreeMap<u64, LbNetnsValue>,
        writes: usize,
    }

    impl FakeNetnsMap {
        pub fn writes(&self) -> usize {
            self.writes
        }
    }

    impl NetnsMap for FakeNetnsMap {
        fn upsert(&mut self, cookie: u64, value: LbNetnsValue) -> Result<(), DatapathError> {
            self.writes += 1;
            self.entries.insert(cookie, value);
            Ok(())
        }
        fn remove(&mut self, cookie: u64) -> Result<(), DatapathError> {
            self.writes += 1;
            self.entries.remove(&cookie);
            Ok(())
        }
        fn entries(&self) -> Result<Vec<(u64, LbNetnsValue)>, DatapathError> {
            Ok(self.entries.iter().map(|(k, v)| (*k, *v)).collect())
        }
    }
}
