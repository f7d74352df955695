//! Conntrack garbage collection: removes entries whose lifetime has
//! passed from `twill_ct` and `twill_lb4_nat`.
//!
//! The programs already treat an expired entry as absent, so removing one
//! changes no verdict. What it changes is the cost of the next connection:
//! both maps are LRU hashes, and once one is full every new connection
//! makes the kernel evict under the LRU's global lock from the packet path.
//! Cilium's agent collects for the same reason.
//!
//! The sweeper opens the pinned maps itself, so a sweep of a quarter of a
//! million entries runs on its own thread without holding the agent.

use std::path::Path;

use aya::maps::{HashMap, Map, MapData, MapError};
use twill_abi::{CtEntry, CtKey, Lb4NatEntry};

use crate::loader::DatapathError;

/// What one sweep found, per map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub ct_alive: u64,
    pub ct_deleted: u64,
    pub nat_alive: u64,
    pub nat_deleted: u64,
}

impl SweepStats {
    pub fn alive(&self) -> u64 {
        self.ct_alive + self.nat_alive
    }

    pub fn deleted(&self) -> u64 {
        self.ct_deleted + self.nat_deleted
    }
}

/// Entries whose `expires` field says when they lapse.
trait Expiring {
    fn expires(&self) -> u64;
}

impl Expiring for CtEntry {
    fn expires(&self) -> u64 {
        self.expires
    }
}

impl Expiring for Lb4NatEntry {
    fn expires(&self) -> u64 {
        self.expires
    }
}

pub struct ConntrackSweeper {
    ct: HashMap<MapData, CtKey, CtEntry>,
    /// Absent on datapaths loaded before NodePort existed.
    nat: Option<HashMap<MapData, CtKey, Lb4NatEntry>>,
}

fn open_pinned<V: aya::Pod>(
    root: &Path,
    name: &'static str,
) -> Result<HashMap<MapData, CtKey, V>, DatapathError> {
    let wrap = |source: MapError| DatapathError::Map { name, source };
    let data = MapData::from_pin(root.join(name)).map_err(wrap)?;
    let map = Map::from_map_data(data).map_err(wrap)?;
    HashMap::try_from(map).map_err(wrap)
}

impl ConntrackSweeper {
    /// Opens the maps pinned in `root` by a loaded datapath.
    pub fn open(root: &Path) -> Result<Self, DatapathError> {
        let ct = open_pinned(root, "twill_ct")?;
        let nat = if root.join("twill_lb4_nat").exists() {
            Some(open_pinned(root, "twill_lb4_nat")?)
        } else {
            None
        };
        Ok(Self { ct, nat })
    }

    /// Removes every entry that lapsed before `now` (CLOCK_MONOTONIC ns,
    /// the programs' `bpf_ktime_get_ns`).
    pub fn sweep(&mut self, now: u64) -> Result<SweepStats, DatapathError> {
        let mut stats = SweepStats::default();
        (stats.ct_alive, stats.ct_deleted) = sweep_map(&mut self.ct, now, "twill_ct")?;
        if let Some(nat) = &mut self.nat {
            (stats.nat_alive, stats.nat_deleted) = sweep_map(nat, now, "twill_lb4_nat")?;
        }
        Ok(stats)
    }
}

/// Collects the lapsed keys first and deletes after: deleting the key an
/// iteration stands on makes the kernel's next-key walk start over.
fn sweep_map<V: aya::Pod + Expiring>(
    map: &mut HashMap<MapData, CtKey, V>,
    now: u64,
    name: &'static str,
) -> Result<(u64, u64), DatapathError> {
    let mut lapsed = Vec::new();
    let mut alive = 0u64;
    for item in map.iter() {
        match item {
            Ok((key, value)) if value.expires() < now => lapsed.push(key),
            Ok(_) => alive += 1,
            // Evicted or deleted by the programs between the walk's steps.
            Err(MapError::KeyNotFound) => continue,
            Err(source) => return Err(DatapathError::Map { name, source }),
        }
    }
    let mut deleted = 0u64;
    for key in &lapsed {
        // Re-read: a packet may have renewed the entry since the walk.
        match map.get(key, 0) {
            Ok(value) if value.expires() < now => {}
            Ok(_) => {
                alive += 1;
                continue;
            }
            Err(_) => continue,
        }
        match map.remove(key) {
            Ok(()) => deleted += 1,
            Err(MapError::KeyNotFound) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(source) => return Err(DatapathError::Map { name, source }),
        }
    }
    Ok((alive, deleted))
}
