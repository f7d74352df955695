//! Datapath events to Hubble flows.

use std::{net::Ipv4Addr, time::SystemTime};

use twill_abi::{FlowEvent, CT_REPLY, DIR_INGRESS, EVENT_DROP, EVENT_POLICY_VERDICT, EVENT_TRACE};
use twill_numbers::{
    hubble_observation_point, tcp_flag_names, trace_sub_type, MESSAGE_TYPE_DROP, MESSAGE_TYPE_POLICY_VERDICT,
    MESSAGE_TYPE_TRACE, TCP_ACK, TCP_CWR, TCP_ECE, TCP_FIN, TCP_NS, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG,
    TRACE_FROM_LXC, TRACE_FROM_OVERLAY, TRACE_TO_LXC, TRACE_TO_PROXY,
};
use twill_observe_proto::{flow, prost_types::Timestamp};

use crate::Directory;

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

/// `02:aa:00:00:00:05`, as Hubble prints a MAC. Every flow carries two,
/// so it is written in one allocation, not one per byte.
fn mac(bytes: &[u8; 6]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(17);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        text.push(char::from(HEX[usize::from(b >> 4)]));
        text.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    text
}

pub fn tcp_flags(bits: u8) -> flow::TcpFlags {
    let set = |flag: u16| u16::from(bits) & flag != 0;
    flow::TcpFlags {
        fin: set(TCP_FIN),
        syn: set(TCP_SYN),
        rst: set(TCP_RST),
        psh: set(TCP_PSH),
        ack: set(TCP_ACK),
        urg: set(TCP_URG),
        ece: set(TCP_ECE),
        cwr: set(TCP_CWR),
        // The datapath records the flags byte only.
        ns: false,
    }
}

/// The header bits of a flow's flags, the inverse of [`tcp_flags`].
fn tcp_flag_bits(f: &flow::TcpFlags) -> u16 {
    [
        (f.fin, TCP_FIN),
        (f.syn, TCP_SYN),
        (f.rst, TCP_RST),
        (f.psh, TCP_PSH),
        (f.ack, TCP_ACK),
        (f.urg, TCP_URG),
        (f.ece, TCP_ECE),
        (f.cwr, TCP_CWR),
        (f.ns, TCP_NS),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |bits, (_, bit)| bits | bit)
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
            let bits = tcp_flag_bits(&tcp.flags.unwrap_or_default());
            let mut text = String::with_capacity(32);
            text.push_str("TCP Flags: ");
            for (i, name) in tcp_flag_names(bits).enumerate() {
                if i > 0 {
                    text.push_str(", ");
                }
                text.push_str(name);
            }
            text
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
        source_names: dir.names_of(src_ip),
        destination_names: dir.names_of(dst_ip),
        r#type: flow::FlowType::L3L4 as i32,
        node_name: dir.node_name.clone(),
        interface: dir.interface(e.ifindex),
        summary: summary(&l4),
        l4,
        ..Default::default()
    };
    // Services have ports: ICMP and other protocols belong to none.
    if matches!(e.protocol, 6 | 17 | 132) {
        f.source_service = dir.services.lookup(src_ip, e.sport, e.protocol, e.src_identity).cloned();
        f.destination_service = dir.services.lookup(dst_ip, e.dport, e.protocol, e.dst_identity).cloned();
    }
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
            let sub_type = trace_sub_type(e.reason).unwrap_or(TRACE_FROM_LXC);
            // The direction the packet travels relative to the endpoint
            // the event is about: into it, or out of it.
            let base = match sub_type {
                TRACE_TO_LXC | TRACE_FROM_OVERLAY => flow::TrafficDirection::Ingress,
                TRACE_TO_PROXY => policy_direction,
                _ => flow::TrafficDirection::Egress,
            };
            f.trace_observation_point = i32::from(hubble_observation_point(sub_type));
            f.event_type =
                Some(flow::CiliumEventType { r#type: MESSAGE_TYPE_TRACE, sub_type: i32::from(sub_type) });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_lower_case_hex_pairs() {
        assert_eq!(mac(&[0x02, 0xaa, 0x0f, 0xf0, 0, 0xff]), "02:aa:0f:f0:00:ff");
    }

    fn event(kind: u8, reason: u8, tcp_flags: u8) -> FlowEvent {
        FlowEvent {
            timestamp: 1,
            kind,
            reason,
            direction: DIR_INGRESS,
            ct_state: twill_abi::CT_NEW,
            endpoint_id: 1,
            src_identity: 256,
            dst_identity: 257,
            saddr: u32::from(Ipv4Addr::new(10, 200, 0, 2)).to_be(),
            daddr: u32::from(Ipv4Addr::new(10, 200, 0, 3)).to_be(),
            sport: 40000,
            dport: 80,
            protocol: 6,
            tcp_flags,
            icmp_type: 0,
            icmp_code: 0,
            ifindex: 0,
            length: 60,
            policy_match: 0,
            src_mac: [0; 6],
            dst_mac: [0; 6],
        }
    }

    fn decoded(kind: u8, reason: u8, tcp_flags: u8) -> flow::Flow {
        decode(&event(kind, reason, tcp_flags), &Directory::new("node"), &Clock::now())
    }

    fn event_type(f: &flow::Flow) -> (i32, i32) {
        f.event_type.as_ref().map(|e| (e.r#type, e.sub_type)).unwrap()
    }

    #[test]
    #[allow(deprecated)]
    fn summary_lists_flags_in_hubble_s_order() {
        assert_eq!(decoded(EVENT_TRACE, twill_abi::TRACE_TO_ENDPOINT, 0x12).summary, "TCP Flags: SYN, ACK");
        assert_eq!(decoded(EVENT_TRACE, twill_abi::TRACE_TO_ENDPOINT, 0x11).summary, "TCP Flags: ACK, FIN");
        assert_eq!(
            decoded(EVENT_TRACE, twill_abi::TRACE_TO_ENDPOINT, 0xff).summary,
            "TCP Flags: SYN, ACK, FIN, RST, PSH, URG, ECE, CWR"
        );
    }

    #[test]
    fn tcp_flag_bits_become_hubble_s_flag_fields() {
        let f = tcp_flags(0x14);
        assert!(f.rst && f.ack);
        assert!(!(f.fin || f.syn || f.psh || f.urg || f.ece || f.cwr || f.ns));
        assert_eq!(tcp_flag_bits(&tcp_flags(0xff)), 0xff);
    }

    #[test]
    fn traces_carry_cilium_s_sub_type_and_hubble_s_point() {
        let to_endpoint = decoded(EVENT_TRACE, twill_abi::TRACE_TO_ENDPOINT, 0x02);
        assert_eq!(event_type(&to_endpoint), (4, 0));
        assert_eq!(to_endpoint.trace_observation_point(), flow::TraceObservationPoint::ToEndpoint);
        let to_stack = decoded(EVENT_TRACE, twill_abi::TRACE_TO_STACK, 0x02);
        assert_eq!(event_type(&to_stack), (4, 3));
        assert_eq!(to_stack.trace_observation_point(), flow::TraceObservationPoint::ToStack);
        let from_endpoint = decoded(EVENT_TRACE, twill_abi::TRACE_FROM_ENDPOINT, 0x02);
        assert_eq!(event_type(&from_endpoint), (4, 5));
        assert_eq!(from_endpoint.trace_observation_point(), flow::TraceObservationPoint::FromEndpoint);
        let to_network = decoded(EVENT_TRACE, twill_abi::TRACE_TO_NETWORK, 0x02);
        assert_eq!(event_type(&to_network), (4, 11));
        assert_eq!(to_network.trace_observation_point(), flow::TraceObservationPoint::ToNetwork);
        assert_eq!(to_network.traffic_direction(), flow::TrafficDirection::Egress);
        let to_overlay = decoded(EVENT_TRACE, twill_abi::TRACE_TO_OVERLAY, 0x02);
        assert_eq!(event_type(&to_overlay), (4, 4));
        assert_eq!(to_overlay.trace_observation_point(), flow::TraceObservationPoint::ToOverlay);
        let from_overlay = decoded(EVENT_TRACE, twill_abi::TRACE_FROM_OVERLAY, 0x02);
        assert_eq!(event_type(&from_overlay), (4, 9));
        assert_eq!(from_overlay.trace_observation_point(), flow::TraceObservationPoint::FromOverlay);
        assert_eq!(from_overlay.traffic_direction(), flow::TrafficDirection::Ingress);
    }

    #[test]
    fn drops_and_verdicts_carry_cilium_s_message_types() {
        let drop = decoded(EVENT_DROP, 133, 0x02);
        assert_eq!(event_type(&drop), (1, 133));
        assert_eq!(drop.drop_reason_desc(), flow::DropReason::PolicyDenied);
        let verdict = decoded(EVENT_POLICY_VERDICT, 0, 0x02);
        assert_eq!(event_type(&verdict), (5, 0));
        assert_eq!(verdict.verdict(), flow::Verdict::Forwarded);
    }

    fn service_directory() -> Directory {
        let mut services = crate::ServiceIndex::new();
        let web = services.add_service("default", "web");
        services.add_frontend(web, Ipv4Addr::new(10, 96, 0, 10), 80, 6);
        // The event's destination, 10.200.0.3:80, is a backend of web.
        services.add_backend(web, Ipv4Addr::new(10, 200, 0, 3), 80, 6);
        let mut dir = Directory::new("node");
        dir.services = std::sync::Arc::new(services);
        dir
    }

    fn service_name(s: &Option<flow::Service>) -> Option<(String, String)> {
        s.as_ref().map(|s| (s.namespace.clone(), s.name.clone()))
    }

    #[test]
    fn requests_to_a_backend_name_the_destination_service_and_replies_the_source() {
        let dir = service_directory();
        let web = Some(("default".to_string(), "web".to_string()));
        let request = decode(&event(EVENT_TRACE, twill_abi::TRACE_FROM_ENDPOINT, 0x02), &dir, &Clock::now());
        assert_eq!(service_name(&request.destination_service), web);
        assert_eq!(request.source_service, None);

        let mut e = event(EVENT_TRACE, twill_abi::TRACE_TO_ENDPOINT, 0x12);
        (e.saddr, e.daddr, e.sport, e.dport) = (e.daddr, e.saddr, e.dport, e.sport);
        e.ct_state = CT_REPLY;
        let reply = decode(&e, &dir, &Clock::now());
        assert_eq!(service_name(&reply.source_service), web);
        assert_eq!(reply.destination_service, None);

        let mut icmp = event(EVENT_TRACE, twill_abi::TRACE_FROM_ENDPOINT, 0);
        (icmp.protocol, icmp.dport) = (1, 80);
        assert_eq!(decode(&icmp, &dir, &Clock::now()).destination_service, None, "ICMP has no service");
    }

    #[test]
    fn a_refused_connect_to_a_frontend_names_its_service() {
        let dir = service_directory();
        let mut e = event(EVENT_DROP, 158, 0);
        e.saddr = 0;
        e.sport = 0;
        e.daddr = u32::from(Ipv4Addr::new(10, 96, 0, 10)).to_be();
        let drop = decode(&e, &dir, &Clock::now());
        assert_eq!(service_name(&drop.destination_service), Some(("default".into(), "web".into())));
        assert_eq!(drop.drop_reason_desc(), flow::DropReason::ServiceBackendNotFound);
    }
}
