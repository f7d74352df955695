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
    /// `IPCACHE_F_*`.
    pub flags: u32,
    /// Underlay IPv4 address (network byte order) of the node hosting the
    /// address; 0 for local addresses and those behind no node.
    pub tunnel_endpoint: u32,
}

/// Per-CPU value of `twill_metrics`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}

/// Key of `twill_policy` (an LPM trie), packed as in C. Multi-byte
/// fields are in network byte order.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    pub prefixlen: u32,
    pub endpoint_id: u16,
    pub direction: u8,
    pub pad: u8,
    pub identity: u32,
    pub protocol: u8,
    pub dport: u16,
}

/// The part of [`PolicyKey`] after the prefix length, as aya's
/// `lpm_trie::Key<K>` wants it.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyKeyData {
    pub endpoint_id: u16,
    pub direction: u8,
    pub pad: u8,
    pub identity: u32,
    pub protocol: u8,
    pub dport: u16,
}

/// Prefix bits that always match in full: endpoint, direction, identity.
pub const POLICY_FIXED_PREFIX: u32 = 64;
pub const POLICY_FLAG_DENY: u32 = 1;

/// Value of `twill_policy`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyValue {
    pub flags: u32,
    pub match_type: u32,
    /// The L7 proxy's listener port for an allow with L7 rules; 0: none.
    pub proxy_port: u16,
    pub pad: u16,
}

/// How an allowing entry matched (Cilium's policy match types).
pub use twill_numbers::{
    POLICY_MATCH_ALL, POLICY_MATCH_L3_L4, POLICY_MATCH_L3_ONLY, POLICY_MATCH_L3_PROTO, POLICY_MATCH_L4_ONLY,
    POLICY_MATCH_NONE, POLICY_MATCH_PROTO_ONLY,
};

/// Key of `twill_ct`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub scope: u8,
    pub pad: u16,
}

/// Value of `twill_ct`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEntry {
    pub expires: u64,
    pub packets: u64,
    pub bytes: u64,
    pub tcp_flags: u8,
    pub flags: u8,
    pub reported_flags: [u8; 2],
    pub last_report: [u16; 2],
    /// The proxy port the connection was redirected to; 0: not proxied.
    pub proxy_port: u16,
    /// [`CT_ORIGIN_A`] or [`CT_ORIGIN_B`]: which way the opening packet
    /// went between the key's two ends.
    pub origin: u8,
    pub pad: u8,
}

pub const CT_FLAG_CLOSING: u8 = 1;
/// `CtKey::scope` in `twill_ct`: the endpoint whose entry it is stands at
/// the key's saddr/sport end (A) or at its daddr/dport end (B). The key
/// holds the two ends in a fixed order, whichever way a packet travels.
pub const CT_SIDE_A: u8 = 2;
pub const CT_SIDE_B: u8 = 3;
/// `CtKey::scope` of one entry standing for both ends of a connection
/// between two local endpoints that host routing delivers (neither end
/// redirects it to the proxy).
pub const CT_PAIR: u8 = 4;
/// `CtEntry::origin`: the opening packet went from end A to end B, or back.
pub const CT_ORIGIN_A: u8 = 0;
pub const CT_ORIGIN_B: u8 = 1;

/// `skb->mark` layout shared with the programs (bpf/include/twill.h).
pub const MARK_MAGIC_MASK: u32 = 0x0F00;
pub const MARK_MAGIC_TO_PROXY: u32 = 0x0200;
pub const MARK_MAGIC_PROXY_IDENTITY: u32 = 0x0F00;
/// The routing table of the proxy's local route (Cilium's 2004).
pub const PROXY_ROUTE_TABLE: u32 = 2004;

/// The mark the proxy sets on its upstream sockets: the source identity
/// it acts for, as the programs decode it.
pub const fn proxy_identity_mark(identity: u32) -> u32 {
    ((identity & 0xFFFF) << 16) | ((identity >> 16) & 0xFF) | MARK_MAGIC_PROXY_IDENTITY
}

/// Trace aggregation levels (`DatapathConfig::aggregation`).
pub const AGGREGATION_NONE: u32 = 0;
pub const AGGREGATION_LOW: u32 = 1;
pub const AGGREGATION_MEDIUM: u32 = 2;
pub const AGGREGATION_MAXIMUM: u32 = 3;
/// `DatapathConfig::report_flags` for every TCP flag (Helm's
/// `bpf.monitorFlags: all`, the agent's default).
pub const REPORT_FLAGS_ALL: u32 = 0xff;

/// Observation points of trace events (`FlowEvent::reason`), in Hubble's
/// `TraceObservationPoint` numbering (to-endpoint is 101, not Cilium's 0).
pub const TRACE_TO_PROXY: u8 = twill_numbers::hubble_observation_point(twill_numbers::TRACE_TO_PROXY);
pub const TRACE_TO_STACK: u8 = twill_numbers::hubble_observation_point(twill_numbers::TRACE_TO_STACK);
pub const TRACE_FROM_ENDPOINT: u8 = twill_numbers::hubble_observation_point(twill_numbers::TRACE_FROM_LXC);
pub const TRACE_TO_ENDPOINT: u8 = twill_numbers::hubble_observation_point(twill_numbers::TRACE_TO_LXC);
pub const TRACE_TO_OVERLAY: u8 = twill_numbers::hubble_observation_point(twill_numbers::TRACE_TO_OVERLAY);
pub const TRACE_FROM_OVERLAY: u8 = twill_numbers::hubble_observation_point(twill_numbers::TRACE_FROM_OVERLAY);
pub const TRACE_TO_NETWORK: u8 = twill_numbers::hubble_observation_point(twill_numbers::TRACE_TO_NETWORK);

/// Index 0 of `twill_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatapathConfig {
    pub allow_localhost: u32,
    pub aggregation: u32,
    pub events: u32,
    /// Entries of every Maglev table (a prime).
    pub maglev_table_size: u32,
    /// The VXLAN device remote endpoints are reached through; 0 for none
    /// (native routing or standalone: the host stack routes).
    pub tunnel_ifindex: u32,
    /// TCP flags (bits as in the header) whose first sighting in a
    /// direction of a connection earns a trace at medium and maximum
    /// aggregation; 0 leaves the first packet and the periodic report.
    pub report_flags: u32,
    /// Nonzero: everything `from_endpoint` forwards goes through the host
    /// stack (Cilium's `--enable-host-legacy-routing`).
    pub legacy_host_routing: u32,
    /// Ifindexes of the `--devices` devices traffic may leave by without
    /// the host stack; 0 ends the list.
    pub fib_devices: [u32; FIB_DEVICES_MAX],
}

/// Entries of `DatapathConfig::fib_devices`.
pub const FIB_DEVICES_MAX: usize = 8;

pub const EVENTS_DROP: u32 = 1;
pub const EVENTS_TRACE: u32 = 2;
pub const EVENTS_POLICY: u32 = 4;
/// Datapath debug messages ([`DebugEvent`] records); off unless asked for.
pub const EVENTS_DEBUG: u32 = 8;

/// One record of the `twill_events` ring buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEvent {
    pub timestamp: u64,
    pub kind: u8,
    pub reason: u8,
    pub direction: u8,
    pub ct_state: u8,
    pub endpoint_id: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub ifindex: u32,
    pub length: u32,
    pub policy_match: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

pub const EVENT_DROP: u8 = 1;
pub const EVENT_TRACE: u8 = 2;
pub const EVENT_POLICY_VERDICT: u8 = 3;
/// A [`DebugEvent`], not a [`FlowEvent`].
pub const EVENT_DEBUG: u8 = 4;

/// A datapath debug message in the `twill_events` ring (Cilium's
/// `debug_msg`); `kind` is at the offset of [`FlowEvent::kind`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DebugEvent {
    pub timestamp: u64,
    pub kind: u8,
    /// `DBG_*`.
    pub subtype: u8,
    /// The endpoint the program ran for; 0 for none.
    pub source: u16,
    pub hash: u32,
    pub arg1: u32,
    pub arg2: u32,
    pub arg3: u32,
    pub cpu: u32,
}

impl DebugEvent {
    /// Decodes a ring buffer record; `None` if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: DebugEvent is plain integers; the length is checked and
        // read_unaligned copes with any alignment of the ring's memory.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Self) })
    }
}

/// One record of the `twill_events` ring: a flow event or a debug message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingRecord {
    Flow(FlowEvent),
    Debug(DebugEvent),
}

impl RingRecord {
    /// Tells the records apart by `kind`, at byte 8 of both; `None` for a
    /// record too short for its kind.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        match bytes.get(std::mem::offset_of!(FlowEvent, kind))? {
            &EVENT_DEBUG => DebugEvent::from_bytes(bytes).map(Self::Debug),
            _ => FlowEvent::from_bytes(bytes).map(Self::Flow),
        }
    }
}

/// Debug message subtypes the datapath emits (`DebugEvent::subtype`).
pub const DBG_LOCAL_DELIVERY: u8 = twill_numbers::DBG_LOCAL_DELIVERY;
pub const DBG_ENCAP: u8 = twill_numbers::DBG_ENCAP;
pub const DBG_LXC_FOUND: u8 = twill_numbers::DBG_LXC_FOUND;
pub const DBG_POLICY_DENIED: u8 = twill_numbers::DBG_POLICY_DENIED;
pub const DBG_CT_MATCH: u8 = twill_numbers::DBG_CT_MATCH;
pub const DBG_CT_VERDICT: u8 = twill_numbers::DBG_CT_VERDICT;
pub const DBG_DECAP: u8 = twill_numbers::DBG_DECAP;
pub const DBG_TO_STACK: u8 = twill_numbers::DBG_TO_STACK;
pub const DBG_LB4_LOOKUP_FRONTEND: u8 = twill_numbers::DBG_LB4_LOOKUP_FRONTEND;
pub const DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS: u8 = twill_numbers::DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS;
pub const DBG_CT_LOOKUP4_1: u8 = twill_numbers::DBG_CT_LOOKUP4_1;
pub const DBG_CT_LOOKUP4_2: u8 = twill_numbers::DBG_CT_LOOKUP4_2;
pub const DBG_CT_CREATED4: u8 = twill_numbers::DBG_CT_CREATED4;
pub const TUPLE_F_IN: u32 = twill_numbers::TUPLE_F_IN;
pub const TUPLE_F_OUT: u32 = twill_numbers::TUPLE_F_OUT;
pub const TUPLE_F_RELATED: u32 = twill_numbers::TUPLE_F_RELATED;

pub const CT_NEW: u8 = 0;
pub const CT_ESTABLISHED: u8 = 1;
pub const CT_REPLY: u8 = 2;
pub const CT_RELATED: u8 = 3;

pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

impl FlowEvent {
    /// Decodes a ring buffer record; `None` if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: FlowEvent is plain integers; the length is checked and
        // read_unaligned copes with any alignment of the ring's memory.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Self) })
    }
}

// SAFETY: all of these are plain `#[repr(C)]` integers and byte arrays with
// no padding the kernel could leave uninitialised in a way Rust cares about.
unsafe impl aya::Pod for EndpointKey {}
unsafe impl aya::Pod for EndpointInfo {}
unsafe impl aya::Pod for IpcacheKey {}
unsafe impl aya::Pod for IpcacheValue {}
unsafe impl aya::Pod for MetricsValue {}
unsafe impl aya::Pod for PolicyKeyData {}
unsafe impl aya::Pod for PolicyValue {}
unsafe impl aya::Pod for CtKey {}
unsafe impl aya::Pod for CtEntry {}
unsafe impl aya::Pod for DatapathConfig {}
unsafe impl aya::Pod for DebugEvent {}
unsafe impl aya::Pod for Lb4Key {}
unsafe impl aya::Pod for Lb4Service {}
unsafe impl aya::Pod for Lb4Backend {}
unsafe impl aya::Pod for Lb4ReverseNat {}
unsafe impl aya::Pod for LbAffinityKey {}
unsafe impl aya::Pod for LbAffinityValue {}
unsafe impl aya::Pod for Lb4SkKey {}
unsafe impl aya::Pod for Lb4SkValue {}
unsafe impl aya::Pod for Lb4NatEntry {}
unsafe impl aya::Pod for LbNetnsValue {}
unsafe impl aya::Pod for LbAffinityMatchKey {}

/// Map sizes, as declared in bpf/include/twill.h.
pub const MAX_ENDPOINTS: usize = 65536;
pub const MAX_IPCACHE_ENTRIES: usize = 512000;
pub const MAX_POLICY_ENTRIES: usize = 1048576;
pub const MAX_CT_ENTRIES: usize = 262144;

/// Metrics directions, as seen from the endpoint.
pub const METRIC_DIR_INGRESS: u32 = 0;
pub const METRIC_DIR_EGRESS: u32 = 1;
pub const METRICS_ENTRIES: u32 = 512;

/// Index into `twill_metrics` for a direction and reason (0 = forwarded).
pub fn metrics_index(direction: u32, reason: u32) -> u32 {
    (direction << 8) | reason
}

/// Drop reasons the datapath emits, with Cilium's codes and texts.
pub const DROP_REASONS: &[(u32, &str)] = &[
    emitted(twill_numbers::DROP_INVALID_SOURCE_IP),
    emitted(twill_numbers::DROP_POLICY),
    emitted(twill_numbers::DROP_INVALID_PACKET),
    emitted(twill_numbers::DROP_CT_INVALID_HDR),
    emitted(twill_numbers::DROP_UNSUPPORTED_L3),
    emitted(twill_numbers::DROP_WRITE_ERROR),
    emitted(twill_numbers::DROP_NO_TUNNEL_KEY),
    emitted(twill_numbers::DROP_NO_SERVICE),
    emitted(twill_numbers::DROP_UNKNOWN_SENDER),
    emitted(twill_numbers::DROP_POLICY_DENY),
    emitted(twill_numbers::DROP_PROXY_LOOKUP_FAILED),
    emitted(twill_numbers::DROP_PROXY_SET_FAILED),
];

/// An entry of [`DROP_REASONS`]; evaluated at compile time, so a code
/// Cilium has no text for fails the build instead of printing nothing.
const fn emitted(code: u8) -> (u32, &'static str) {
    match twill_numbers::drop_reason_text(code) {
        Some(text) => (code as u32, text),
        None => panic!("the datapath drops with a code Cilium does not name"),
    }
}

/// Cilium's text for a drop code, `Unknown reason` for codes it does not
/// name (metrics labels and monitor lines need some text).
pub fn drop_reason_text(code: u32) -> &'static str {
    u8::try_from(code).ok().and_then(twill_numbers::drop_reason_text).unwrap_or("Unknown reason")
}

// Mirrors of the remaining `#define`s in bpf/include/twill.h, with the C
// names; tests/defines.rs compares every one with the header.

/// Reserved identities the datapath itself relies on (Cilium's numbers,
/// defined in twill-numbers).
pub use twill_numbers::{IDENTITY_HOST, IDENTITY_REMOTE_NODE, IDENTITY_UNKNOWN, IDENTITY_WORLD};

/// Drop reasons the datapath emits (Cilium's codes, defined in
/// twill-numbers), as the u32 the metrics and event records carry.
pub const DROP_INVALID_SOURCE_IP: u32 = twill_numbers::DROP_INVALID_SOURCE_IP as u32;
pub const DROP_POLICY: u32 = twill_numbers::DROP_POLICY as u32;
pub const DROP_INVALID_PACKET: u32 = twill_numbers::DROP_INVALID_PACKET as u32;
pub const DROP_CT_INVALID_HDR: u32 = twill_numbers::DROP_CT_INVALID_HDR as u32;
pub const DROP_UNSUPPORTED_L3: u32 = twill_numbers::DROP_UNSUPPORTED_L3 as u32;
pub const DROP_NO_SERVICE: u32 = twill_numbers::DROP_NO_SERVICE as u32;
pub const DROP_WRITE_ERROR: u32 = twill_numbers::DROP_WRITE_ERROR as u32;
pub const DROP_NO_TUNNEL_KEY: u32 = twill_numbers::DROP_NO_TUNNEL_KEY as u32;
pub const DROP_UNKNOWN_SENDER: u32 = twill_numbers::DROP_UNKNOWN_SENDER as u32;
pub const DROP_POLICY_DENY: u32 = twill_numbers::DROP_POLICY_DENY as u32;
/// No proxy socket to assign a redirected packet to (the proxy is down).
pub const DROP_PROXY_LOOKUP_FAILED: u32 = twill_numbers::DROP_PROXY_LOOKUP_FAILED as u32;
pub const DROP_PROXY_SET_FAILED: u32 = twill_numbers::DROP_PROXY_SET_FAILED as u32;

/// The reason slot of forwarded packets in `twill_metrics`.
pub const METRIC_FORWARDED: u32 = 0;
/// [`metrics_index`] puts the direction above this many bits of reason.
pub const METRICS_DIR_SHIFT: u32 = 8;

/// Prefix bits of a [`PolicyKey`] that match protocol and port exactly.
pub const POLICY_FULL_PREFIX: u32 = 88;

/// Size of the `twill_events` ring buffer, in bytes.
pub const EVENTS_RING_BYTES: u32 = 1 << 22;
/// The datapath wakes the ring's reader once this much is queued.
pub const EVENTS_WAKEUP_BYTES: u32 = 1 << 16;

/// At medium aggregation, a busy connection is reported at most this often.
pub const AGGREGATION_INTERVAL_SECONDS: u32 = 5;

/// `EndpointInfo::flags`: policy is enforced on the endpoint's ingress;
/// allowed verdicts are reported only for enforced directions.
pub const ENDPOINT_F_INGRESS_ENFORCED: u32 = 1;
/// `EndpointInfo::flags`: policy is enforced on the endpoint's egress.
pub const ENDPOINT_F_EGRESS_ENFORCED: u32 = 2;
/// `EndpointInfo::flags`: the host device has a shaper (a chained
/// `bandwidth` plugin's qdiscs), so local endpoint-to-endpoint traffic to
/// or from it goes through the host stack and the shaper rather than
/// bpf_redirect_peer.
pub const ENDPOINT_F_SHAPED: u32 = 4;
/// `EndpointInfo::flags`: debug messages for this endpoint's steps.
pub const ENDPOINT_F_DEBUG: u32 = 8;

/// `IpcacheValue::flags`: the address is one of a node's own; the overlay
/// believes tunnel packets from it.
pub const IPCACHE_F_NODE: u32 = 1;

// Services (load balancing), IPv4: see the comments in twill.h.

/// Key of `twill_lb4_services`. `address` and `dport` in network byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lb4Key {
    pub address: u32,
    pub dport: u16,
    pub backend_slot: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// Value of `twill_lb4_services`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lb4Service {
    pub backend_id: u32,
    pub affinity_timeout: u32,
    pub rev_nat_index: u32,
    pub count: u16,
    pub flags: u8,
    pub pad: u8,
}

pub const LB_F_NODEPORT: u8 = 1;
pub const LB_F_MAGLEV: u8 = 2;

/// Value of `twill_lb4_backends` (keyed by a u32 backend id).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lb4Backend {
    pub address: u32,
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

/// Value of `twill_lb4_reverse_nat` (keyed by the u32 rev_nat_index).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lb4ReverseNat {
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

/// Key of `twill_lb_affinity`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LbAffinityKey {
    pub client: u64,
    pub rev_nat_index: u32,
    pub netns: u8,
    pub pad: [u8; 3],
}

/// Value of `twill_lb_affinity`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbAffinityValue {
    pub last_used: u64,
    pub backend_id: u32,
    pub pad: u32,
}

/// Key of `twill_lb_affinity_match`: a backend of a frontend (the u32
/// value counts the frontend's slots holding it).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbAffinityMatchKey {
    pub backend_id: u32,
    pub rev_nat_index: u32,
}

/// Key of `twill_lb4_sk`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lb4SkKey {
    pub cookie: u64,
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

/// Value of `twill_lb4_sk`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lb4SkValue {
    pub address: u32,
    pub port: u16,
    pub pad: u16,
    pub rev_nat_index: u32,
}

/// Value of `twill_lb4_nat` (keyed by [`CtKey`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lb4NatEntry {
    pub expires: u64,
    pub address: u32,
    pub port: u16,
    /// [`CT_FLAG_CLOSING`] once a FIN or RST was seen.
    pub flags: u16,
    pub rev_nat_index: u32,
    pub ifindex: u32,
}

pub const LB_NAT_FORWARD: u8 = 0;
pub const LB_NAT_REVERSE: u8 = 1;

/// Value of `twill_lb_netns` (keyed by a u64 network namespace cookie).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbNetnsValue {
    pub endpoint_id: u32,
    pub identity: u32,
}

pub const MAX_LB_SERVICE_ENTRIES: usize = 262144;
pub const MAX_LB_BACKENDS: usize = 262144;
pub const MAX_LB_FRONTENDS: usize = 131072;
pub const MAX_LB_AFFINITY: usize = 65536;
pub const MAX_LB_SOCK_ENTRIES: usize = 65536;
pub const MAX_LB_MAGLEV: usize = 16384;
pub const MAX_LB_NETNS: usize = 65536;
/// Maglev's default table size (Cilium's too); every table has the
/// size in [`DatapathConfig::maglev_table_size`].
pub const LB_MAGLEV_DEFAULT_SIZE: u32 = 16381;
