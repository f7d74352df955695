//! Loading the endpoint programs with their pinned maps, attaching them to
//! devices as cls_bpf filters, and typed access to the maps.
//!
//! Nothing the kernel needs to keep forwarding belongs to the agent
//! process: maps are pinned by name under the agent's bpf root, and the
//! filters belong to the devices' qdiscs. The agent can exit or crash at
//! any moment and traffic keeps flowing; the next agent reloads the
//! programs, reuses the pinned maps and swaps its fresh programs into the
//! existing filters atomically.

use std::{
    collections::BTreeSet,
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
        ProgramError, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use twill_abi::{CtEntry, CtKey, DatapathConfig, EndpointInfo, MetricsValue};

use crate::maps::{
    map_err, EndpointMap, IpcacheEntry, IpcacheMap, KernelEndpointMap, KernelIpcacheMap, KernelPolicyMap,
    PolicyEntry, PolicyMap,
};

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
pub struct MetricsEntry {
    pub direction: u32,
    pub reason: u32,
    pub packets: u64,
    pub bytes: u64,
}

pub struct Datapath {
    ebpf: Ebpf,
    root: PathBuf,
    endpoints: KernelEndpointMap,
    ipcache: KernelIpcacheMap,
    metrics: PerCpuArray<MapData, MetricsValue>,
    policy: KernelPolicyMap,
    ct: HashMap<MapData, CtKey, CtEntry>,
    config: Array<MapData, DatapathConfig>,
    event_stats: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    /// Devices attached by this process (or re-attached on restore).
    attached: BTreeSet<String>,
}

/// Where the endpoint filters sit on each hook (Cilium uses the same).
const FILTER_PRIORITY: u16 = 1;

fn filter_handle() -> TcHandle {
    TcHandle::new(0, 1)
}

fn attach_error(device: &str, direction: &'static str, reason: String) -> DatapathError {
    DatapathError::Attach { device: device.into(), direction, reason }
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
        let policy =
            LpmTrie::try_from(take_map(&mut ebpf, "twill_policy")?).map_err(map_err("twill_policy"))?;
        let ct = HashMap::try_from(take_map(&mut ebpf, "twill_ct")?).map_err(map_err("twill_ct"))?;
        let config =
            Array::try_from(take_map(&mut ebpf, "twill_config")?).map_err(map_err("twill_config"))?;
        let event_stats = PerCpuArray::try_from(take_map(&mut ebpf, "twill_event_stats")?)
            .map_err(map_err("twill_event_stats"))?;
        let events =
            RingBuf::try_from(take_map(&mut ebpf, "twill_events")?).map_err(map_err("twill_events"))?;
        Ok(Self {
            ebpf,
            root: root.to_path_buf(),
            endpoints: KernelEndpointMap(endpoints),
            ipcache: KernelIpcacheMap(ipcache),
            metrics,
            policy: KernelPolicyMap(policy),
            ct,
            config,
            event_stats,
            events: Some(events),
            attached: BTreeSet::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Attaches both endpoint programs to `device` as direct-action cls_bpf
    /// filters at a fixed priority and handle. If a previous agent already
    /// attached them, the program in each filter is replaced atomically:
    /// no packet sees a gap.
    ///
    /// Why cls_bpf and not tcx links: attaching a tcx link waits for an RCU
    /// grace period (about 10 ms here, twice per endpoint), a cls_bpf
    /// filter takes about 0.2 ms; and the filter belongs to the device's
    /// qdisc, so it keeps running without any pin when the agent exits.
    pub fn attach(&mut self, device: &str) -> Result<(), DatapathError> {
        match tc::qdisc_add_clsact(device) {
            Ok(()) => {}
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(attach_error(device, "clsact", e.to_string())),
        }
        for (name, attach_type, direction) in HOOKS {
            let program: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .expect("program presence checked at load")
                .try_into()
                .expect("program type checked at load");
            let options = NlOptions { priority: FILTER_PRIORITY, handle: filter_handle(), classid: None };
            let link_id =
                match program.attach_with_options(device, attach_type, TcAttachOptions::Netlink(options)) {
                    Ok(id) => id,
                    // Already attached (by us, before a restart): swap the program in place.
                    Err(ProgramError::TcError(TcError::NetlinkError(e)))
                        if e.raw_os_error() == Some(libc::EEXIST) =>
                    {
                        let existing = SchedClassifierLink::attached(
                            device,
                            attach_type,
                            FILTER_PRIORITY,
                            filter_handle(),
                            None,
                        )
                        .map_err(|e| attach_error(device, direction, e.to_string()))?;
                        program
                            .attach_to_link(existing)
                            .map_err(|e| attach_error(device, direction, e.to_string()))?
                    }
                    Err(e) => {
                        return Err(attach_error(device, direction, format!("{e} ({})", source_chain(&e))))
                    }
                };
            let link =
                program.take_link(link_id).map_err(|e| attach_error(device, direction, e.to_string()))?;
            // Dropping the link would delete the filter; the filter must
            // outlive this process, so ownership passes to the kernel.
            std::mem::forget(link);
        }
        self.attached.insert(device.to_string());
        Ok(())
    }

    /// Removes `device`'s filters. A missing device or filter is not an
    /// error: detaching is idempotent.
    pub fn detach(&mut self, device: &str) -> Result<(), DatapathError> {
        self.attached.remove(device);
        if crate::netdev::ifindex(device).is_none() {
            return Ok(());
        }
        for (name, attach_type, direction) in HOOKS {
            match tc::qdisc_detach_program(device, attach_type, name) {
                Ok(()) => {}
                Err(TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(attach_error(device, direction, e.to_string())),
            }
        }
        Ok(())
    }

    /// Devices this agent has attached the endpoint programs to, with the hooks.
    pub fn attached_devices(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .attached
            .iter()
            .flat_map(|d| HOOKS.iter().map(move |(_, _, dir)| (d.clone(), dir.to_string())))
            .collect();
        out.sort();
        out
    }

    /// The endpoint map, for the one owner that writes it.
    pub fn endpoint_map(&mut self) -> &mut dyn EndpointMap {
        &mut self.endpoints
    }

    /// The ipcache, for the one owner that writes it.
    pub fn ipcache_map(&mut self) -> &mut dyn IpcacheMap {
        &mut self.ipcache
    }

    /// The policy map, for the one owner that writes it.
    pub fn policy_map(&mut self) -> &mut dyn PolicyMap {
        &mut self.policy
    }

    pub fn upsert_endpoint(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError> {
        self.endpoints.upsert(ip, info)
    }

    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        self.endpoints.remove(ip)
    }

    pub fn endpoint_entries(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DatapathError> {
        self.endpoints.entries()
    }

    pub fn upsert_ipcache(
        &mut self,
        ip: Ipv4Addr,
        prefix_len: u8,
        identity: u32,
    ) -> Result<(), DatapathError> {
        self.ipcache.upsert(ip, prefix_len, identity)
    }

    pub fn remove_ipcache(&mut self, ip: Ipv4Addr, prefix_len: u8) -> Result<(), DatapathError> {
        self.ipcache.remove(ip, prefix_len)
    }

    pub fn ipcache_entries(&self) -> Result<Vec<IpcacheEntry>, DatapathError> {
        self.ipcache.entries()
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

impl Datapath {
    pub fn upsert_policy(&mut self, entry: PolicyEntry, deny: bool) -> Result<(), DatapathError> {
        self.policy.upsert(entry, deny)
    }

    pub fn remove_policy(&mut self, entry: PolicyEntry) -> Result<(), DatapathError> {
        self.policy.remove(entry)
    }

    pub fn policy_entries(&self) -> Result<Vec<(PolicyEntry, bool)>, DatapathError> {
        self.policy.entries()
    }

    pub fn ct_entries(&self) -> Result<Vec<(CtKey, CtEntry)>, DatapathError> {
        self.ct.iter().collect::<Result<_, _>>().map_err(map_err("twill_ct"))
    }

    pub fn set_config(&mut self, config: DatapathConfig) -> Result<(), DatapathError> {
        self.config.set(0, config, 0).map_err(map_err("twill_config"))
    }

    pub fn config(&self) -> Result<DatapathConfig, DatapathError> {
        self.config.get(&0, 0).map_err(map_err("twill_config"))
    }

    /// Events lost because the ring buffer was full, summed over CPUs.
    pub fn lost_events(&self) -> Result<u64, DatapathError> {
        let values = self.event_stats.get(&0, 0).map_err(map_err("twill_event_stats"))?;
        Ok(values.iter().sum())
    }

    /// Runs one of the endpoint programs once on `packet` (an Ethernet
    /// frame) in the kernel, without attaching it anywhere
    /// (BPF_PROG_TEST_RUN), and returns its verdict (TC_ACT_*). For
    /// testing the datapath with crafted packets.
    pub fn test_run(&self, program: &str, packet: &[u8]) -> Result<u32, DatapathError> {
        use aya::programs::{TestRun, TestRunOptions};
        let name: &'static str =
            HOOKS.iter().map(|(n, _, _)| *n).find(|n| *n == program).unwrap_or("unknown");
        let prog: &SchedClassifier = self
            .ebpf
            .program(program)
            .ok_or(DatapathError::Program { name, source: ProgramError::NotLoaded })?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        let opts = TestRunOptions { data_in: Some(packet), repeat: 1, ..Default::default() };
        let result = prog.test_run(opts).map_err(|source| DatapathError::Program { name, source })?;
        Ok(result.return_value)
    }

    /// The event ring buffer, for the one reader that consumes it.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }
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
