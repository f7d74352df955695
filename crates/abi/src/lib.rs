//! `#[repr(C)]` mirrors of every map key, value and event record in
//! `bpf/include/twill.h`. The test in `tests/btf_layout.rs` compares each
//! against the BTF of the compiled objects, so a change on one side only
//! fails the build's tests rather than corrupting maps at run time.

/// Key of `twill_endpoints`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// IPv4 address in network byte order.
    pub ip: u32,
}

/// Value of `twill_endpoints`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointInfo {
    pub ifindex: u32,
    pub endpoint_id: u32,
    pub identity: u32,
    pub flags: u32,
    pub mac: [u8; 6],
    pub host_mac: [u8; 6],
}

/// Key of `twill_ipcache` (an LPM trie).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpcacheKey {
    pub prefixlen: u32,
    /// IPv4 address in network byte order.
    pub ip: u32,
}

/// Value of `twill_ipcache`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcacheValue {
    pub identity: u32,
    pub flags: u32,
}

/// Per-CPU value of `twill_metrics`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}

// SAFETY: all of these are plain `#[repr(C)]` integers and byte arrays with
// no padding the kernel could leave uninitialised in a way Rust cares about.
unsafe impl aya::Pod for EndpointKey {}
unsafe impl aya::Pod for EndpointInfo {}
unsafe impl aya::Pod for IpcacheKey {}
unsafe impl aya::Pod for IpcacheValue {}
unsafe impl aya::Pod for MetricsValue {}

/// Metrics directions, as seen from the endpoint.
pub const METRIC_DIR_INGRESS: u32 = 0;
pub const METRIC_DIR_EGRESS: u32 = 1;
pub const METRICS_ENTRIES: u32 = 512;

/// Index into `twill_metrics` for a direction and reason (0 = forwarded).
pub fn metrics_index(direction: u32, reason: u32) -> u32 {
    (direction << 8) | reason
}

/// Drop reasons the datapath emits, with Cilium's codes and texts.
pub const DROP_REASONS: &[(u32, &str)] =
    &[(132, "Invalid source ip"), (134, "Invalid packet"), (139, "Unsupported L3 protocol")];

pub fn drop_reason_text(code: u32) -> &'static str {
    DROP_REASONS.iter().find(|(c, _)| *c == code).map(|(_, t)| *t).unwrap_or("Unknown reason")
}
