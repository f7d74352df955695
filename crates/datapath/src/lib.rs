//! The kernel side of Twill, seen from user space: loading and pinning the
//! eBPF programs and maps, attaching them to endpoint devices, and the
//! network plumbing (namespaces, veth pairs, routes) around them.

mod bpf_sys;
mod bpffs;
pub mod ctgc;
mod features;
mod lb;
mod lb_maps;
mod loader;
pub mod maps;
pub mod netdev;
mod netdev_error;
mod netlink;
mod netns;
pub mod proxy_routing;

pub use bpffs::ensure_bpffs;
pub use features::{probe_features, KernelFeatures};
pub use lb::cgroup2_mount;
pub use loader::{Datapath, DatapathError, EndpointAttach, MetricsEntry};
pub use maps::{
    EndpointMap, IpcacheEntry, IpcacheMap, LbMaps, NetnsMap, PolicyAction, PolicyEntry, PolicyMap,
};
pub use netns::{current_netns_cookie, netns_cookie};

/// The clock bpf_ktime_get_ns() reads: CLOCK_MONOTONIC, in ns. Expiry
/// times in the maps are on it.
pub fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime writes into a zeroed timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The compiled endpoint programs (bpf/lxc.c).
pub static LXC_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lxc.o"));

/// The socket load-balancing programs (bpf/sock.c).
pub static SOCK_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock.o"));

/// The NodePort programs for the node's devices (bpf/netdev.c).
pub static NETDEV_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netdev.o"));

/// The program of the VXLAN tunnel device (bpf/overlay.c).
pub static OVERLAY_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay.o"));
