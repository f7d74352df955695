//! Loading the endpoint programs with their pinned maps, attaching them to
//! devices (tcx links on endpoint devices, cls_bpf filters elsewhere or
//! where the kernel has no tcx), and typed access to the maps.
//!
//! Nothing the kernel needs to keep forwarding belongs to the agent
//! process: maps are pinned by name under the agent's bpf root, the
//! endpoint devices' tcx links are pinned there too, and cls_bpf filters
//! belong to the devices' qdiscs. The agent can exit or crash at
//! any moment and traffic keeps flowing; the next agent reloads the
//! programs, reuses the pinned maps and swaps its fresh programs into the
//! existing filters atomically. A pinned map whose shape an upgrade
//! changed is replaced (with a warning) rather than reused: see
//! [`replace_incompatible_pins`].

use std::{
    collections::BTreeSet,
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        links::{FdLink, LinkOrder, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
        ProgramError, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use twill_abi::{CtEntry, CtKey, DatapathConfig, EndpointInfo, Lb4NatEntry, MetricsValue};

use crate::lb::{LbPrograms, NETDEV_HOOKS};
use crate::maps::{
    map_err, EndpointMap, IpcacheEntry, IpcacheMap, KernelEndpointMap, KernelIpcacheMap, KernelPolicyMap,
    LbMaps, NetnsMap, PolicyAction, PolicyEntry, PolicyMap,
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
    #[error("eBPF link of {name}: {source}")]
    Link { name: &'static str, source: aya::programs::links::LinkError },
    #[error("pinning {path}: {source}")]
    Pin { path: String, source: aya::pin::PinError },
    #[error("socket load balancing on cgroup {cgroup}: {step}: {source}")]
    Cgroup { cgroup: String, step: &'static str, source: io::Error },
    #[error("Maglev table of frontend {index} has {len} entries; it needs the configured table size (> 0)")]
    MaglevSize { index: u32, len: usize },
}

/// A tc program: its name, hook and the hook's name in errors.
pub(crate) type TcHook = (&'static str, TcAttachType, &'static str);

/// The two hooks on every endpoint's host-side veth.
const HOOKS: [TcHook; 2] =
    [("from_endpoint", TcAttachType::Ingress, "ingress"), ("to_endpoint", TcAttachType::Egress, "egress")];

/// The hook on the tunnel device: what it decapsulated. What leaves
/// through it was encapsulated by from_endpoint already.
const OVERLAY_HOOKS: [TcHook; 1] = [("from_overlay", TcAttachType::Ingress, "ingress")];

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
    /// The service programs and maps (socket LB, NodePort).
    lb: LbPrograms,
    /// The tunnel device's program (bpf/overlay.c).
    overlay: Ebpf,
    /// How the endpoint programs are attached, probed once at load.
    endpoint_attach: EndpointAttach,
}

/// How the endpoint programs sit on the host-side veth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointAttach {
    /// tcx links (kernel 6.6 and later), pinned under the bpf root. They
    /// leave the device's `ingress`/`clsact` qdisc slot free, so a chained
    /// CNI plugin (the reference `bandwidth`, for egressRate) can add its
    /// own `ingress` qdisc and filters, which run after from_endpoint
    /// passes a packet on (TCX_NEXT).
    Tcx,
    /// cls_bpf filters on a clsact qdisc, where tcx is unavailable.
    ClsBpf,
}

impl EndpointAttach {
    /// tcx arrived in Linux 6.6. The kernel version is the probe: trying an
    /// attach would put a program on some live device.
    pub fn probe() -> Self {
        match aya::util::KernelVersion::current() {
            Ok(v) if v >= aya::util::KernelVersion::new(6, 6, 0) => Self::Tcx,
            _ => Self::ClsBpf,
        }
    }
}

/// Where the endpoint filters sit on each hook (Cilium uses the same).
const FILTER_PRIORITY: u16 = 1;
/// Where the NodePort filters sit on a node device.
const NETDEV_FILTER_PRIORITY: u16 = 2;

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
        replace_incompatible_pins(
            root,
            &[crate::LXC_OBJECT, crate::SOCK_OBJECT, crate::NETDEV_OBJECT, crate::OVERLAY_OBJECT],
        )?;
        let mut ebpf = EbpfLoader::new().default_map_pin_directory(root).load(crate::LXC_OBJECT)?;
        load_programs(&mut ebpf, &HOOKS)?;
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
        let lb = LbPrograms::load(root)?;
        let mut overlay = EbpfLoader::new().default_map_pin_directory(root).load(crate::OVERLAY_OBJECT)?;
        load_programs(&mut overlay, &OVERLAY_HOOKS)?;
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
            lb,
            overlay,
            endpoint_attach: EndpointAttach::probe(),
        })
    }

    /// How this agent attaches the endpoint programs.
    pub fn endpoint_attach(&self) -> EndpointAttach {
        self.endpoint_attach
    }

    /// Chooses how the endpoint programs are attached from now on (the
    /// default is [`EndpointAttach::probe`]). Devices attached the other
    /// way move over on their next [`Datapath::attach`].
    pub fn set_endpoint_attach(&mut self, how: EndpointAttach) {
        self.endpoint_attach = how;
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Attaches both endpoint programs to `device`: as pinned tcx links
    /// (see [`attach_tcx`]) or, without tcx, as direct-action cls_bpf
    /// filters at a fixed priority and handle (see [`attach_tc`]). If a
    /// previous agent already attached them, the program in each link or
    /// filter is replaced atomically: no packet sees a gap. A device an
    /// older agent gave cls_bpf filters gets its tcx links first and loses
    /// the clsact qdisc after, so no packet passes unprocessed.
    pub fn attach(&mut self, device: &str) -> Result<(), DatapathError> {
        // Here rather than at plumbing, so endpoints an older agent made
        // get it on restore too.
        crate::netdev::enable_forwarding(device)
            .map_err(|e| attach_error(device, "forwarding", e.to_string()))?;
        match self.endpoint_attach {
            EndpointAttach::Tcx => {
                attach_tcx(&mut self.ebpf, &HOOKS, &self.root, device)?;
                crate::netdev::remove_clsact(device)
                    .map_err(|e| attach_error(device, "clsact", e.to_string()))?;
            }
            EndpointAttach::ClsBpf => {
                attach_tc(&mut self.ebpf, &HOOKS, device, FILTER_PRIORITY)?;
                // Back from tcx: the filters run first, then the links go.
                detach_tcx(&HOOKS, &self.root, device)?;
            }
        }
        self.attached.insert(device.to_string());
        Ok(())
    }

    /// Removes `device`'s links or filters. A missing device, link or
    /// filter is not an error: detaching is idempotent.
    pub fn detach(&mut self, device: &str) -> Result<(), DatapathError> {
        self.attached.remove(device);
        detach_tcx(&HOOKS, &self.root, device)?;
        match self.endpoint_attach {
            EndpointAttach::Tcx => crate::netdev::remove_clsact(device)
                .map_err(|e| attach_error(device, "clsact", e.to_string())),
            EndpointAttach::ClsBpf => detach_tc(&HOOKS, device),
        }
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

    /// Attaches the NodePort programs to a node device (its uplink, say):
    /// cls_bpf filters like the endpoint programs', at their own priority
    /// so they never replace an endpoint filter. Idempotent, and swaps the
    /// programs in atomically after a restart.
    pub fn attach_netdev(&mut self, device: &str) -> Result<(), DatapathError> {
        attach_tc(&mut self.lb.netdev, &NETDEV_HOOKS, device, NETDEV_FILTER_PRIORITY)
    }

    /// Removes the NodePort filters from `device`. Idempotent.
    pub fn detach_netdev(&mut self, device: &str) -> Result<(), DatapathError> {
        detach_tc(&NETDEV_HOOKS, device)
    }

    /// Attaches the overlay program to the tunnel device's tc ingress (see
    /// [`crate::netdev::ensure_vxlan_device`]); like the endpoint
    /// programs, idempotent and swapped in atomically after a restart.
    /// Packets go out through the device only once
    /// [`DatapathConfig::tunnel_ifindex`] names it.
    pub fn attach_overlay(&mut self, device: &str) -> Result<(), DatapathError> {
        attach_tc(&mut self.overlay, &OVERLAY_HOOKS, device, FILTER_PRIORITY)
    }

    /// Removes the overlay program from `device`. Idempotent.
    pub fn detach_overlay(&mut self, device: &str) -> Result<(), DatapathError> {
        detach_tc(&OVERLAY_HOOKS, device)
    }

    /// Attaches socket load balancing (connect4, sendmsg4, recvmsg4,
    /// getpeername4) to the cgroup v2 directory `cgroup`, usually the
    /// agent's `--cgroup-root` (for everything on the machine, the root of
    /// [`crate::cgroup2_mount`]). The links are pinned under the bpf root
    /// (`<root>/sock/`), so they outlive the agent; on the next call,
    /// pinned links on the same cgroup get the new programs atomically
    /// (BPF_LINK_UPDATE). Only sockets of namespaces in
    /// [`Datapath::netns_map`] are translated.
    pub fn attach_sock(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        self.lb.attach_sock(&self.root, cgroup)
    }

    /// Unpins the socket links, which detaches the hooks (uninstall).
    /// Idempotent.
    pub fn detach_sock(&mut self) -> Result<(), DatapathError> {
        crate::lb::detach_sock(&self.root)
    }

    /// The service maps, for the one owner that writes them.
    pub fn lb_maps(&mut self) -> &mut dyn LbMaps {
        &mut self.lb.maps
    }

    /// The namespaces socket load balancing serves, for the one owner that
    /// writes them.
    pub fn netns_map(&mut self) -> &mut dyn NetnsMap {
        &mut self.lb.netns
    }

    /// NodePort translations in `twill_lb4_nat`, for inspection.
    pub fn lb_nat_entries(&self) -> Result<Vec<(CtKey, Lb4NatEntry)>, DatapathError> {
        self.lb.nat.iter().collect::<Result<_, _>>().map_err(map_err("twill_lb4_nat"))
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

    pub fn upsert_ipcache(&mut self, entry: &IpcacheEntry) -> Result<(), DatapathError> {
        self.ipcache.upsert(entry)
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
    /// An allow (`deny` false) or a deny, without a proxy redirect.
    pub fn upsert_policy(&mut self, entry: PolicyEntry, deny: bool) -> Result<(), DatapathError> {
        self.policy.upsert(entry, if deny { PolicyAction::DENY } else { PolicyAction::ALLOW })
    }

    pub fn upsert_policy_action(
        &mut self,
        entry: PolicyEntry,
        action: PolicyAction,
    ) -> Result<(), DatapathError> {
        self.policy.upsert(entry, action)
    }

    pub fn remove_policy(&mut self, entry: PolicyEntry) -> Result<(), DatapathError> {
        self.policy.remove(entry)
    }

    pub fn policy_entries(&self) -> Result<Vec<(PolicyEntry, PolicyAction)>, DatapathError> {
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

    /// Runs one of the endpoint or node-device programs once on `packet` (an Ethernet
    /// frame) in the kernel, without attaching it anywhere
    /// (BPF_PROG_TEST_RUN), and returns its verdict (TC_ACT_*). For
    /// testing the datapath with crafted packets.
    pub fn test_run(&self, program: &str, packet: &[u8]) -> Result<u32, DatapathError> {
        use aya::programs::{TestRun, TestRunOptions};
        let name: &'static str = HOOKS
            .iter()
            .chain(&NETDEV_HOOKS)
            .chain(&OVERLAY_HOOKS)
            .map(|(n, _, _)| *n)
            .find(|n| *n == program)
            .unwrap_or("unknown");
        let object = if NETDEV_HOOKS.iter().any(|(n, _, _)| *n == program) {
            &self.lb.netdev
        } else if OVERLAY_HOOKS.iter().any(|(n, _, _)| *n == program) {
            &self.overlay
        } else {
            &self.ebpf
        };
        let prog: &SchedClassifier = object
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

/// A pinned map that no longer fits the object's definition of it (a key or
/// value that grew in an upgrade, say) cannot be reused: the programs would
/// fail verification against it, or user space would misread it. Such pins
/// are removed, so the load creates and pins the map afresh; the agent then
/// refills it by diff like any empty map. Programs still attached keep the
/// old map until they are swapped out.
pub(crate) fn replace_incompatible_pins(root: &Path, objects: &[&[u8]]) -> Result<(), DatapathError> {
    let mut checked = BTreeSet::new();
    for bytes in objects {
        let object =
            aya_obj::Object::parse(bytes).map_err(|e| DatapathError::Load(EbpfError::ParseError(e)))?;
        for (name, map) in &object.maps {
            if !matches!(map.pinning(), aya_obj::maps::PinningType::ByName) || !checked.insert(name.clone()) {
                continue;
            }
            let pin = root.join(name);
            let Ok(info) = aya::maps::MapInfo::from_pin(&pin) else { continue };
            let pinned = (
                info.map_type().map_or(u32::MAX, |t| t as u32),
                info.key_size(),
                info.value_size(),
                info.max_entries(),
            );
            let wanted = (map.map_type(), map.key_size(), map.value_size(), map.max_entries());
            if pinned == wanted {
                continue;
            }
            tracing::warn!(
                map = %name,
                pin = %pin.display(),
                "pinned map has (type, key size, value size, max entries) {pinned:?}, this build wants {wanted:?}: replacing it, its entries are lost"
            );
            std::fs::remove_file(&pin)
                .map_err(|source| DatapathError::Bpffs { path: pin.display().to_string(), source })?;
        }
    }
    Ok(())
}

pub(crate) fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DatapathError> {
    ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))
}

/// Loads the tc programs `hooks` of `ebpf` into the kernel.
pub(crate) fn load_programs(ebpf: &mut Ebpf, hooks: &[TcHook]) -> Result<(), DatapathError> {
    for &(name, _, _) in hooks {
        let program: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or(DatapathError::Program { name, source: ProgramError::NotLoaded })?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        program.load().map_err(|source| DatapathError::Program { name, source })?;
    }
    Ok(())
}

/// Attaches the (loaded) programs `hooks` of `ebpf` to `device` as
/// direct-action cls_bpf filters at `priority`, or swaps them into the
/// filters already there, atomically: no packet sees a gap.
///
/// Why cls_bpf and not tcx links: attaching a tcx link waits for an RCU
/// grace period (about 10 ms here, twice per device), a cls_bpf filter
/// takes about 0.2 ms; and the filter belongs to the device's qdisc, so it
/// keeps running without any pin when the agent exits.
pub(crate) fn attach_tc(
    ebpf: &mut Ebpf,
    hooks: &[TcHook],
    device: &str,
    priority: u16,
) -> Result<(), DatapathError> {
    match tc::qdisc_add_clsact(device) {
        Ok(()) => {}
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(attach_error(device, "clsact", e.to_string())),
    }
    for &(name, attach_type, direction) in hooks {
        let program: &mut SchedClassifier = ebpf
            .program_mut(name)
            .expect("program presence checked at load")
            .try_into()
            .expect("program type checked at load");
        let options = NlOptions { priority, handle: filter_handle(), classid: None };
        let link_id =
            match program.attach_with_options(device, attach_type, TcAttachOptions::Netlink(options)) {
                Ok(id) => id,
                // Already attached (by us, before a restart): swap the program in place.
                Err(ProgramError::TcError(TcError::NetlinkError(e)))
                    if e.raw_os_error() == Some(libc::EEXIST) =>
                {
                    let existing =
                        SchedClassifierLink::attached(device, attach_type, priority, filter_handle(), None)
                            .map_err(|e| attach_error(device, direction, e.to_string()))?;
                    program
                        .attach_to_link(existing)
                        .map_err(|e| attach_error(device, direction, e.to_string()))?
                }
                Err(e) => return Err(attach_error(device, direction, format!("{e} ({})", source_chain(&e)))),
            };
        let link = program.take_link(link_id).map_err(|e| attach_error(device, direction, e.to_string()))?;
        // Dropping the link would delete the filter; the filter must
        // outlive this process, so ownership passes to the kernel.
        std::mem::forget(link);
    }
    Ok(())
}

/// Where the tcx link of `direction` on `device` is pinned.
fn tcx_pin(root: &Path, device: &str, direction: &str) -> PathBuf {
    root.join("tcx").join(device).join(direction)
}

/// Attaches the (loaded) programs `hooks` of `ebpf` to `device` as tcx
/// links, first in each hook's chain, pinned under `root` so they outlive
/// this process. A link pinned by an earlier agent gets the new program
/// atomically (BPF_LINK_UPDATE); a pin whose device is gone (a reused
/// name) is replaced by a fresh link.
///
/// Each attach waits for an RCU grace period in the kernel, under the
/// rtnl lock, so attaching the two hooks from two threads gains nothing.
pub(crate) fn attach_tcx(
    ebpf: &mut Ebpf,
    hooks: &[TcHook],
    root: &Path,
    device: &str,
) -> Result<(), DatapathError> {
    let dir = root.join("tcx").join(device);
    std::fs::create_dir_all(&dir)
        .map_err(|source| DatapathError::Bpffs { path: dir.display().to_string(), source })?;
    for &(name, attach_type, direction) in hooks {
        let program: &mut SchedClassifier = ebpf
            .program_mut(name)
            .expect("program presence checked at load")
            .try_into()
            .expect("program type checked at load");
        let pin = tcx_pin(root, device, direction);
        if let Ok(pinned) = PinnedLink::from_pin(&pin) {
            let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                .map_err(|e| attach_error(device, direction, e.to_string()))?;
            match program.attach_to_link(link) {
                Ok(id) => {
                    // The pin keeps the link; this process's handle may go.
                    let link =
                        program.take_link(id).map_err(|e| attach_error(device, direction, e.to_string()))?;
                    std::mem::forget(link);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(device, direction, error = %e, "pinned tcx link unusable, replacing it");
                    std::fs::remove_file(&pin)
                        .map_err(|source| DatapathError::Bpffs { path: pin.display().to_string(), source })?;
                }
            }
        }
        let id = program
            .attach_with_options(device, attach_type, TcAttachOptions::TcxOrder(LinkOrder::first()))
            .map_err(|e| attach_error(device, direction, format!("{e} ({})", source_chain(&e))))?;
        let link = program.take_link(id).map_err(|e| attach_error(device, direction, e.to_string()))?;
        let link = FdLink::try_from(link).map_err(|e| attach_error(device, direction, e.to_string()))?;
        link.pin(&pin).map_err(|source| DatapathError::Pin { path: pin.display().to_string(), source })?;
    }
    Ok(())
}

/// Unpins (and so detaches) `device`'s tcx links. Idempotent.
pub(crate) fn detach_tcx(hooks: &[TcHook], root: &Path, device: &str) -> Result<(), DatapathError> {
    for &(_, _, direction) in hooks {
        let pin = tcx_pin(root, device, direction);
        match std::fs::remove_file(&pin) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(DatapathError::Bpffs { path: pin.display().to_string(), source }),
        }
    }
    let dir = root.join("tcx").join(device);
    let _ = std::fs::remove_dir(&dir);
    Ok(())
}

/// Removes the filters of `hooks` from `device`. A missing device or
/// filter is not an error: detaching is idempotent.
pub(crate) fn detach_tc(hooks: &[TcHook], device: &str) -> Result<(), DatapathError> {
    if crate::netdev::ifindex(device).is_none() {
        return Ok(());
    }
    for &(name, attach_type, direction) in hooks {
        match tc::qdisc_detach_program(device, attach_type, name) {
            Ok(()) => {}
            Err(TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(attach_error(device, direction, e.to_string())),
        }
    }
    Ok(())
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
