//! Loading the endpoint programs with their pinned maps, attaching them to
//! devices through pinned tcx links, and typed access to the maps.
//!
//! Everything the kernel needs to keep forwarding lives in bpffs under the
//! agent's root: maps pinned by name, and one link per device and
//! direction under `links/`. The agent can exit or crash at any moment and
//! traffic keeps flowing; the next agent reloads the programs, reuses the
//! pinned maps and swaps its fresh programs into the existing links
//! atomically.

use std::{
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{lpm_trie::Key as LpmKey, HashMap, LpmTrie, MapData, MapError, PerCpuArray},
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use twill_abi::{EndpointInfo, EndpointKey, IpcacheValue, MetricsValue};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("preparing bpffs at {path}: {source}")]
    Bpffs { path: String, source: io::Error },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program { name: &'static str, source: ProgramError },
    #[error("attaching to {device} ({direction}): {reason}")]
    Attach { device: String, direction: &'static str, reason: String },
    #[error("map {name}: {source}")]
    Map { name: &'static str, source: MapError },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
}

/// The two hooks on every endpoint's host-side veth.
const HOOKS: [(&str, TcAttachType, &str); 2] =
    [("from_endpoint", TcAttachType::Ingress, "ingress"), ("to_endpoint", TcAttachType::Egress, "egress")];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcacheEntry {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub identity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsEntry {
    pub direction: u32,
    pub reason: u32,
    pub packets: u64,
    pub bytes: u64,
}

pub struct Datapath {
    ebpf: Ebpf,
    root: PathBuf,
    endpoints: HashMap<MapData, EndpointKey, EndpointInfo>,
    ipcache: LpmTrie<MapData, u32, IpcacheValue>,
    metrics: PerCpuArray<MapData, MetricsValue>,
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

impl Datapath {
    /// Loads the programs, reusing (or creating and pinning) the maps in
    /// `root`, which must be on bpffs.
    pub fn load(root: &Path) -> Result<Self, DatapathError> {
        crate::ensure_bpffs(root)
            .map_err(|source| DatapathError::Bpffs { path: root.display().to_string(), source })?;
        let mut ebpf = EbpfLoader::new().default_map_pin_directory(root).load(crate::LXC_OBJECT)?;
        for (name, _, _) in HOOKS {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::Program { name: leak(name), source: ProgramError::NotLoaded })?
                .try_into()
                .map_err(|source| DatapathError::Program { name: leak(name), source })?;
            program.load().map_err(|source| DatapathError::Program { name: leak(name), source })?;
        }
        let endpoints = take_map(&mut ebpf, "twill_endpoints")?;
        let endpoints = HashMap::try_from(endpoints).map_err(map_err("twill_endpoints"))?;
        let ipcache = take_map(&mut ebpf, "twill_ipcache")?;
        let ipcache = LpmTrie::try_from(ipcache).map_err(map_err("twill_ipcache"))?;
        let metrics = take_map(&mut ebpf, "twill_metrics")?;
        let metrics = PerCpuArray::try_from(metrics).map_err(map_err("twill_metrics"))?;
        Ok(Self { ebpf, root: root.to_path_buf(), endpoints, ipcache, metrics })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn link_pin(&self, device: &str, direction: &str) -> PathBuf {
        self.root.join("links").join(format!("{device}_{direction}"))
    }

    /// Attaches both endpoint programs to `device`. If links for it are
    /// already pinned (a previous agent made them), the programs in those
    /// links are replaced atomically instead: no packet sees a gap.
    pub fn attach(&mut self, device: &str) -> Result<(), DatapathError> {
        for (name, attach_type, direction) in HOOKS {
            let pin = self.link_pin(device, direction);
            let attach_err =
                |reason: String| DatapathError::Attach { device: device.into(), direction, reason };
            let program: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .expect("program presence checked at load")
                .try_into()
                .expect("program type checked at load");
            let (link_id, already_pinned) = match PinnedLink::from_pin(&pin) {
                Ok(pinned) => {
                    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                        .map_err(|e| attach_err(e.to_string()))?;
                    (program.attach_to_link(link).map_err(|e| attach_err(e.to_string()))?, true)
                }
                Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {
                    let options = TcAttachOptions::TcxOrder(LinkOrder::default());
                    let id = program
                        .attach_with_options(device, attach_type, options)
                        .map_err(|e| attach_err(format!("{e} ({})", source_chain(&e))))?;
                    (id, false)
                }
                Err(e) => return Err(attach_err(e.to_string())),
            };
            let link = program.take_link(link_id).map_err(|e| attach_err(e.to_string()))?;
            let fd_link: FdLink = link.try_into().map_err(|e: LinkError| attach_err(e.to_string()))?;
            if !already_pinned {
                fd_link.pin(&pin).map_err(|e| attach_err(format!("pinning {}: {e}", pin.display())))?;
            }
        }
        Ok(())
    }

    /// Removes `device`'s links (and so detaches the programs). Missing
    /// links are not an error: detaching is idempotent.
    pub fn detach(&mut self, device: &str) -> Result<(), DatapathError> {
        for (_, _, direction) in HOOKS {
            let pin = self.link_pin(device, direction);
            match std::fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(DatapathError::Attach {
                        device: device.into(),
                        direction,
                        reason: format!("removing {}: {e}", pin.display()),
                    })
                }
            }
        }
        Ok(())
    }

    /// Devices with pinned links, from bpffs.
    pub fn attached_devices(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(self.root.join("links"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.rsplit_once('_').map(|(dev, dir)| (dev.to_string(), dir.to_string()))
            })
            .collect();
        out.sort();
        out
    }

    pub fn upsert_endpoint(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError> {
        self.endpoints.insert(key_of(ip), info, 0).map_err(map_err("twill_endpoints"))
    }

    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        match self.endpoints.remove(&key_of(ip)) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("twill_endpoints")(e)),
        }
    }

    pub fn endpoint_entries(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DatapathError> {
        self.endpoints
            .iter()
            .map(|r| r.map(|(k, v)| (Ipv4Addr::from(u32::from_be(k.ip)), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err("twill_endpoints"))
    }

    pub fn upsert_ipcache(
        &mut self,
        ip: Ipv4Addr,
        prefix_len: u8,
        identity: u32,
    ) -> Result<(), DatapathError> {
        let key = LpmKey::new(prefix_len as u32, u32::from(ip).to_be());
        self.ipcache.insert(&key, IpcacheValue { identity, flags: 0 }, 0).map_err(map_err("twill_ipcache"))
    }

    pub fn remove_ipcache(&mut self, ip: Ipv4Addr, prefix_len: u8) -> Result<(), DatapathError> {
        let key = LpmKey::new(prefix_len as u32, u32::from(ip).to_be());
        match self.ipcache.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("twill_ipcache")(e)),
        }
    }

    pub fn ipcache_entries(&self) -> Result<Vec<IpcacheEntry>, DatapathError> {
        let mut out = self
            .ipcache
            .iter()
            .map(|r| {
                r.map(|(k, v)| IpcacheEntry {
                    ip: Ipv4Addr::from(u32::from_be(k.data())),
                    prefix_len: k.prefix_len() as u8,
                    identity: v.identity,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("twill_ipcache"))?;
        out.sort_by_key(|e| (u32::from(e.ip), e.prefix_len));
        Ok(out)
    }

    /// Non-zero counters, summed over CPUs.
    pub fn metrics(&self) -> Result<Vec<MetricsEntry>, DatapathError> {
        let mut out = Vec::new();
        for index in 0..twill_abi::METRICS_ENTRIES {
            let values = self.metrics.get(&index, 0).map_err(map_err("twill_metrics"))?;
            let (packets, bytes) = values.iter().fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
            if packets > 0 {
                out.push(MetricsEntry { direction: index >> 8, reason: index & 0xff, packets, bytes });
            }
        }
        Ok(out)
    }
}

fn key_of(ip: Ipv4Addr) -> EndpointKey {
    EndpointKey { ip: u32::from(ip).to_be() }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DatapathError> {
    ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))
}

fn leak(name: &str) -> &'static str {
    HOOKS.iter().map(|(n, _, _)| *n).find(|n| *n == name).unwrap_or("unknown")
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut current = error.source();
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    parts.join(": ")
}
