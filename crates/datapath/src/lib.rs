//! The kernel side of Twill, seen from user space: loading and pinning the
//! eBPF programs and maps, attaching them to endpoint devices, and the
//! network plumbing (namespaces, veth pairs, routes) around them.

mod bpffs;
mod features;
mod loader;
pub mod maps;
pub mod netdev;
mod netdev_error;
mod netlink;
mod netns;

pub use bpffs::ensure_bpffs;
pub use features::{probe_features, KernelFeatures};
pub use loader::{Datapath, DatapathError, MetricsEntry};
pub use maps::{EndpointMap, IpcacheEntry, IpcacheMap, PolicyEntry, PolicyMap};

/// The compiled endpoint programs (bpf/lxc.c).
pub static LXC_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lxc.o"));
