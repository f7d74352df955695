//! Datapath events to Hubble flows.

use std::{net::Ipv4Addr, time::SystemTime};

use twill_abi::{FlowEvent, CT_REPLY, DIR_INGRESS, EVENT_DROP, EVENT_POLICY_VERDICT, EVENT_TRACE};
use twill_observe_proto::{flow, prost_types::Timestamp};

use crate::Directory;

/// Cilium's monitor message types, as Hubble reports them in
/// `event_type.type`.
pub const MESSAGE_TYPE_DROP: i32 = 1;
pub const MESSAGE_TYPE_TRACE: i32 = 4;
pub const MESSAGE_TYPE_POLICY_VERDICT: i32 = 5;
pub const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;

/// Cilium's trace sub-types (`event_type.sub_type` of traces).
pub const TRACE_TO_LXC: i32 = 0;
pub const TRACE_TO_STACK: i32 = 3;
pub const TRACE_FROM_LXC: i32 = 5;

/// Converts the kernel's monotonic clock (what bpf_ktime_get_ns reads)
/// to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let wall =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
        Self { offset_ns: wall - monotonic_ns() as i128 }
    }

    pub fn wall_ns(&self, monotonic: u64) -> i128 {
        monotonic as i128 + self.offset_ns
    }

    pub fn timestamp(&self, monotonic: u64) -> Timestamp {
        let ns = self.wall_ns(monotonic);
        Timestamp { seconds: (ns / 1_000_000_000) as i64, nanos: (ns % 1_000_000_000) as i32 }
    }
}

/// The clock bpf_ktime_get_ns() reads.
pub fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime into a zeroed timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn mac(bytes: &[u8; 6]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn tcp_flags(bits: u8) -> flow::TcpFlags {
    flow::TcpFlags {
        fin: bits & 0x01 != 0,
        syn: bits & 0x02 != 0,
        rst: bits & 0x04 != 0,
        psh: bits & 0x08 != 0,
        ack: bits & 0x10 != 0,
        urg: bits & 0x20 != 0,
        ece: bits & 0x40 != 0,
        cwr: bits & 0x80 != 0,
        ns: false,
    }
}

/// ICMPv4 type names, as Hubble prints them.
pub fn icmpv4_type_name(t: u32) -> Option<&'static str> {
    Some(match t {
        0 => "EchoReply",
        3 => "DestinationUnreachable",
        4 => "SourceQuench",
        5 => "Redirect",
        8 => "EchoRequest",
        9 => "RouterAdvertisement",
        10 => "RouterSolicitation",
        11 => "TimeExceeded",
        12 => "ParameterProblem",
        13 => "Timestamp",
        14 => "TimestampReply",
        _ => return None,
    })
}

fn summary(l4: &Option<flow::Layer4>) -> String {
    let Some(flow::Layer4 { protocol: Some(p) }) = l4 else { return "IPv4".into() };
    match p {
        flow::layer4::Protocol::Tcp(tcp) => {
            let f = tcp.flags.unwrap_or_default();
            let names: Vec<&str> = [
                (f.syn, "SYN"),
                (f.ack, "ACK"),
                (f.fin, "FIN"),
                (f.rst, "RST"),
                (f.psh, "PSH"),
                (f.urg, "URG"),
                (f.ece, "ECE"),
                (f.cwr, "CWR"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
            format!("TCP Flags: {}", names.join(", "))
        }
        flow::layer4::Protocol::Udp(_) => "UDP".into(),
        flow::layer4::Protocol::Sctp(_) => "SCTP".into(),
        flow::layer4::Protocol::IcmPv4(i) => match icmpv4_type_name(i.r#type) {
            Some(name) => format!("ICMPv4 {name}"),
            None => format!("ICMPv4 type {} code {}", i.r#type, i.code),
        },
        _ => "IPv4".into(),
    }
}

fn layer4(e: &FlowEvent) -> Option<flow::Layer4> {
    use flow::layer4::Protocol;
    let protocol = match e.protocol {
        6 => Protocol::Tcp(flow::Tcp {
            source_port: e.sport as u32,
            destination_port: e.dport as u32,
            flags: Some(tcp_flags(e.tcp_flags)),
        }),
        17 => Protocol::Udp(flow::Udp { source_port: e.sport as u32, destination_port: e.dport as u32 }),
        132 => Protocol::Sctp(flow::Sctp {
            source_port: e.sport as u32,
            destination_port: e.dport as u32,
            ..Default::default()
        }),
        1 => Protocol::IcmPv4(flow::IcmPv4 { r#type: e.icmp_type as u32, code: e.icmp_code as u32 }),
        _ => return None,
    };
    Some(flow::Layer4 { protocol: Some(protocol) })
}

/// Decodes one datapath event into a flow, naming its endpoints from the
/// directory.
pub fn decode(e: &FlowEvent, dir: &Directory, clock: &Clock) -> flow::Flow {
    let src_ip = Ipv4Addr::from(u32::from_be(e.saddr));
    let dst_ip = Ipv4Addr::from(u32::from_be(e.daddr));
    let l4 = layer4(e);
    let is_reply = e.ct_state == CT_REPLY;
    // `Summary` is deprecated in Hubble's API but still printed by its
    // JSON output; fill it like Hubble does.
    #[allow(deprecated)]
    let mut f = flow::Flow {
        time: Some(clock.timestamp(e.timestamp)),
        ethernet: (e.src_mac != [0; 6])
            .then(|| flow::Ethernet { source: mac(&e.src_mac), destination: mac(&e.dst_mac) }),
        ip: Some(flow::Ip {
            source: src_ip.to_string(),
            destination: dst_ip.to_string(),
            ip_version: flow::IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        source: Some(dir.flow_endpoint(src_ip, e.src_identity)),
        destination: Some(dir.flow_endpoint(dst_ip, e.dst_identity)),
        r#type: flow::FlowType::L3L4 as i32,
        node_name: dir.node_name.clone(),
        interface: dir.interface(e.ifindex),
        summary: summary(&l4),
        l4,
        ..Default::default()
    };
    let policy_direction = if e.direction == DIR_INGRESS {
        flow::TrafficDirection::Ingress
    } else {
        flow::TrafficDirection::Egress
    };
    match e.kind {
        EVENT_DROP => {
            f.verdict = flow::Verdict::Dropped as i32;
            #[allow(deprecated)]
            {
                f.drop_reason = e.reason as u32;
            }
            f.drop_reason_desc = e.reason as i32;
            f.event_type =
                Some(flow::CiliumEventType { r#type: MESSAGE_TYPE_DROP, sub_type: e.reason as i32 });
            f.traffic_direction = policy_direction as i32;
            f.is_reply = Some(false);
        }
        EVENT_POLICY_VERDICT => {
            let allowed = e.reason == 0;
            f.verdict = if allowed { flow::Verdict::Forwarded } else { flow::Verdict::Dropped } as i32;
            if !allowed {
                f.drop_reason_desc = e.reason as i32;
            }
            f.event_type = Some(flow::CiliumEventType { r#type: MESSAGE_TYPE_POLICY_VERDICT, sub_type: 0 });
            f.traffic_direction = policy_direction as i32;
            f.policy_match_type = e.policy_match;
            f.is_reply = Some(false);
        }
        EVENT_TRACE => {
            f.verdict = flow::Verdict::Forwarded as i32;
            let (point, sub_type, base) = match e.reason {
                twill_abi::TRACE_TO_ENDPOINT => {
                    (flow::TraceObservationPoint::ToEndpoint, TRACE_TO_LXC, flow::TrafficDirection::Ingress)
                }
                twill_abi::TRACE_TO_STACK => {
                    (flow::TraceObservationPoint::ToStack, TRACE_TO_STACK, flow::TrafficDirection::Egress)
                }
                _ => (
                    flow::TraceObservationPoint::FromEndpoint,
                    TRACE_FROM_LXC,
                    flow::TrafficDirection::Egress,
                ),
            };
            f.trace_observation_point = point as i32;
            f.event_type = Some(flow::CiliumEventType { r#type: MESSAGE_TYPE_TRACE, sub_type });
            // Direction is the connection's, as Hubble reports it: a reply
            // arriving at its initiator belongs to an egress connection.
            let direction = match (base, is_reply) {
                (flow::TrafficDirection::Ingress, true) => flow::TrafficDirection::Egress,
                (flow::TrafficDirection::Egress, true) => flow::TrafficDirection::Ingress,
                (d, _) => d,
            };
            f.traffic_direction = direction as i32;
            f.is_reply = Some(is_reply);
        }
        _ => {}
    }
    f
}
