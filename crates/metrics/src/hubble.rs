//! Hubble's flow metrics, with Hubble's metric names, label names and label
//! values, computed from one [`Flow`] at a time.
//!
//! Semantics follow Cilium's handlers in `pkg/hubble/metrics/*` (without
//! Hubble's optional context labels such as `source`/`destination`):
//!
//! | metric | labels | counted for |
//! |---|---|---|
//! | `hubble_flows_processed_total` | `type`, `subtype`, `verdict` | every flow |
//! | `hubble_drop_total` | `reason`, `protocol` | verdict `DROPPED` |
//! | `hubble_tcp_flags_total` | `flag`, `family` | `FORWARDED`/`REDIRECTED` TCP flows with IP and flags |
//! | `hubble_port_distribution_total` | `protocol`, `port` | `FORWARDED`/`REDIRECTED` L4 flows known not to be replies |
//! | `hubble_icmp_total` | `family`, `type` | every ICMPv4/ICMPv6 flow |
//! | `hubble_policy_verdicts_total` | `direction`, `match`, `action` | policy verdict events not from the host |
//! | `hubble_lost_events_total` | `source` | [`HubbleMetrics::lost`] |
//! | `hubble_http_requests_total` | `method`, `protocol`, `reporter` | HTTP request flows (L7) |
//! | `hubble_http_responses_total` | `method`, `protocol`, `status`, `reporter` | HTTP response flows (L7) |
//! | `hubble_http_request_duration_seconds` | `method`, `reporter` | HTTP response flows (L7), their `latency_ns` |
//! | `hubble_dns_queries_total` | `rcode`, `qtypes`, `ips_returned` | DNS query flows (L7; `rcode` and `ips_returned` empty) |
//! | `hubble_dns_responses_total` | `rcode`, `qtypes`, `ips_returned` | DNS answer flows (L7) |
//! | `hubble_dns_response_types_total` | `type`, `qtypes` | each record type in a DNS answer |
//!
//! `reporter` is Hubble's: `client` for a proxy on the sender's egress,
//! `server` for one on the receiver's ingress.

use twill_numbers::{
    policy_match_name, trace_sub_type, HUBBLE_TO_ENDPOINT, IDENTITY_HOST, MESSAGE_TYPE_ACCESS_LOG,
    MESSAGE_TYPE_CAPTURE, MESSAGE_TYPE_DROP, MESSAGE_TYPE_POLICY_VERDICT, MESSAGE_TYPE_TRACE,
};
use twill_observe_proto::flow::{
    self, layer4::Protocol as L4, layer7::Record as L7, DropReason, Flow, IpVersion, TrafficDirection,
    Verdict,
};

use crate::registry::{Counter, Histogram, Registry, DEFAULT_BUCKETS};

/// `source` values of `hubble_lost_events_total` (Hubble's
/// `LostEventSource` names in lower case).
pub const LOST_PERF_EVENT_RING_BUFFER: &str = "perf_event_ring_buffer";
pub const LOST_OBSERVER_EVENTS_QUEUE: &str = "observer_events_queue";
pub const LOST_HUBBLE_RING_BUFFER: &str = "hubble_ring_buffer";

/// Hubble's flow metric families, registered in one [`Registry`].
#[derive(Clone)]
pub struct HubbleMetrics {
    flows: Counter,
    drops: Counter,
    tcp_flags: Counter,
    ports: Counter,
    icmp: Counter,
    policy: Counter,
    lost: Counter,
    http_requests: Counter,
    http_responses: Counter,
    http_duration: Histogram,
    dns_queries: Counter,
    dns_responses: Counter,
    dns_response_types: Counter,
}

impl HubbleMetrics {
    /// Registers the Hubble families in `registry`. The three lost-event
    /// sources start at 0 so that alerts on them work from the beginning.
    ///
    /// # Panics
    /// If the registry already holds one of the Hubble metric names.
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            flows: registry.counter(
                "hubble_flows_processed_total",
                "Total number of flows processed",
                &["type", "subtype", "verdict"],
            ),
            drops: registry.counter("hubble_drop_total", "Number of drops", &["reason", "protocol"]),
            tcp_flags: registry.counter(
                "hubble_tcp_flags_total",
                "TCP flag occurrences",
                &["flag", "family"],
            ),
            ports: registry.counter(
                "hubble_port_distribution_total",
                "Numbers of packets distributed by destination port",
                &["protocol", "port"],
            ),
            icmp: registry.counter("hubble_icmp_total", "Number of ICMP messages", &["family", "type"]),
            policy: registry.counter(
                "hubble_policy_verdicts_total",
                "Total number of Cilium network policy verdicts",
                &["direction", "match", "action"],
            ),
            lost: registry.counter("hubble_lost_events_total", "Number of lost events", &["source"]),
            http_requests: registry.counter(
                "hubble_http_requests_total",
                "Count of HTTP requests",
                &["method", "protocol", "reporter"],
            ),
            http_responses: registry.counter(
                "hubble_http_responses_total",
                "Count of HTTP responses",
                &["method", "protocol", "status", "reporter"],
            ),
            // Hubble's buckets are the Prometheus client's defaults.
            http_duration: registry.histogram(
                "hubble_http_request_duration_seconds",
                "Histogram of HTTP request duration in seconds",
                &["method", "reporter"],
                DEFAULT_BUCKETS,
            ),
            dns_queries: registry.counter(
                "hubble_dns_queries_total",
                "Number of DNS queries observed",
                &["rcode", "qtypes", "ips_returned"],
            ),
            dns_responses: registry.counter(
                "hubble_dns_responses_total",
                "Number of DNS responses observed",
                &["rcode", "qtypes", "ips_returned"],
            ),
            dns_response_types: registry.counter(
                "hubble_dns_response_types_total",
                "Number of DNS response types",
                &["type", "qtypes"],
            ),
        };
        for source in [LOST_PERF_EVENT_RING_BUFFER, LOST_OBSERVER_EVENTS_QUEUE, LOST_HUBBLE_RING_BUFFER] {
            m.lost.inc_by(&[source], 0.0);
        }
        m
    }

    /// Counts `n` events lost at `source` (one of the `LOST_*` constants).
    pub fn lost(&self, source: &str, n: u64) {
        self.lost.inc_by(&[source], n as f64);
    }

    /// Counts a [`flow::LostEvent`] by its source and number of events.
    pub fn lost_event(&self, event: &flow::LostEvent) {
        let source = name_of(event.source, flow::LostEventSource::as_str_name).to_lowercase();
        self.lost(&source, event.num_events_lost);
    }

    /// Updates every family for one flow.
    pub fn observe(&self, flow: &Flow) {
        self.observe_flow(flow);
        self.observe_drop(flow);
        self.observe_tcp(flow);
        self.observe_port(flow);
        self.observe_icmp(flow);
        self.observe_policy(flow);
        self.observe_http(flow);
        self.observe_dns(flow);
    }

    fn observe_dns(&self, flow: &Flow) {
        let Some(l7) = &flow.l7 else { return };
        let Some(L7::Dns(dns)) = &l7.record else { return };
        let qtypes = dns.qtypes.join(",");
        if flow.is_reply != Some(true) {
            self.dns_queries.inc(&["", &qtypes, ""]);
            return;
        }
        let rcode = twill_numbers::dns_rcode_name(dns.rcode);
        self.dns_responses.inc(&[&rcode, &qtypes, &dns.ips.len().to_string()]);
        for ty in &dns.rrtypes {
            self.dns_response_types.inc(&[ty, &qtypes]);
        }
    }

    fn observe_http(&self, flow: &Flow) {
        let Some(l7) = &flow.l7 else { return };
        let Some(L7::Http(http)) = &l7.record else { return };
        let reporter =
            if flow.traffic_direction == TrafficDirection::Egress as i32 { "client" } else { "server" };
        if l7.r#type == flow::L7FlowType::Request as i32 {
            self.http_requests.inc(&[&http.method, &http.protocol, reporter]);
        } else if l7.r#type == flow::L7FlowType::Response as i32 {
            self.http_responses.inc(&[&http.method, &http.protocol, &http.code.to_string(), reporter]);
            // The response carries the request's round trip as seen by the proxy.
            self.http_duration.observe(&[&http.method, reporter], l7.latency_ns as f64 / 1e9);
        }
    }

    fn observe_flow(&self, flow: &Flow) {
        let (ty, sub) = event_type(flow);
        let (type_name, subtype) = match ty {
            MESSAGE_TYPE_ACCESS_LOG => ("L7", l7_name(flow).unwrap_or("").to_owned()),
            MESSAGE_TYPE_DROP => ("Drop", String::new()),
            MESSAGE_TYPE_CAPTURE => ("Capture", String::new()),
            MESSAGE_TYPE_TRACE => ("Trace", trace_point_name(flow.trace_observation_point, sub).to_owned()),
            MESSAGE_TYPE_POLICY_VERDICT => ("PolicyVerdict", String::new()),
            other => ("Unknown", other.to_string()),
        };
        let verdict = name_of(flow.verdict, Verdict::as_str_name);
        self.flows.inc(&[type_name, &subtype, &verdict]);
    }

    fn observe_drop(&self, flow: &Flow) {
        if flow.verdict != Verdict::Dropped as i32 {
            return;
        }
        let reason = name_of(flow.drop_reason_desc, DropReason::as_str_name);
        self.drops.inc(&[&reason, flow_protocol(flow)]);
    }

    fn observe_tcp(&self, flow: &Flow) {
        if !forwarded_or_redirected(flow) {
            return;
        }
        let (Some(ip), Some(L4::Tcp(tcp))) = (&flow.ip, l4(flow)) else {
            return;
        };
        let Some(flags) = tcp.flags else { return };
        let family = name_of(ip.ip_version, IpVersion::as_str_name);
        let syn = match (flags.syn, flags.ack) {
            (true, true) => Some("SYN-ACK"),
            (true, false) => Some("SYN"),
            _ => None,
        };
        let set = [flags.fin.then_some("FIN"), syn, flags.rst.then_some("RST")];
        for flag in set.into_iter().flatten() {
            self.tcp_flags.inc(&[flag, &family]);
        }
    }

    fn observe_port(&self, flow: &Flow) {
        // Replies and flows whose direction is unknown say nothing about the
        // port a service listens on.
        if !forwarded_or_redirected(flow) || flow.is_reply != Some(false) {
            return;
        }
        let (protocol, port) = match l4(flow) {
            Some(L4::Tcp(p)) => ("TCP", p.destination_port),
            Some(L4::Udp(p)) => ("UDP", p.destination_port),
            Some(L4::Sctp(p)) => ("SCTP", p.destination_port),
            Some(L4::IcmPv4(_)) => ("ICMPv4", 0),
            Some(L4::IcmPv6(_)) => ("ICMPv6", 0),
            Some(L4::Vrrp(_)) => ("VRRP", 0),
            Some(L4::Igmp(_)) => ("IGMP", 0),
            None => return,
        };
        self.ports.inc(&[protocol, &port.to_string()]);
    }

    fn observe_icmp(&self, flow: &Flow) {
        let (family, name) = match l4(flow) {
            Some(L4::IcmPv4(i)) => ("IPv4", icmp_name(false, i.r#type, i.code)),
            Some(L4::IcmPv6(i)) => ("IPv6", icmp_name(true, i.r#type, i.code)),
            _ => return,
        };
        self.icmp.inc(&[family, &name]);
    }

    fn observe_policy(&self, flow: &Flow) {
        // Hubble leaves the host's own verdicts out.
        if event_type(flow).0 != MESSAGE_TYPE_POLICY_VERDICT
            || flow.source.as_ref().is_some_and(|s| s.identity == IDENTITY_HOST)
        {
            return;
        }
        let direction = name_of(flow.traffic_direction, TrafficDirection::as_str_name).to_lowercase();
        let action = name_of(flow.verdict, Verdict::as_str_name).to_lowercase();
        let match_type = policy_match_name(flow.policy_match_type).unwrap_or("unknown").to_lowercase();
        self.policy.inc(&[&direction, &match_type, &action]);
    }
}

/// `(type, sub_type)` of the Cilium monitor event; `(0, 0)` when absent.
fn event_type(flow: &Flow) -> (i32, i32) {
    flow.event_type.as_ref().map_or((0, 0), |e| (e.r#type, e.sub_type))
}

fn l4(flow: &Flow) -> Option<&L4> {
    flow.l4.as_ref()?.protocol.as_ref()
}

fn forwarded_or_redirected(flow: &Flow) -> bool {
    flow.verdict == Verdict::Forwarded as i32 || flow.verdict == Verdict::Redirected as i32
}

/// Protobuf name of an enum value, or the number for values this build does
/// not know (as Go's `String()` does).
fn name_of<E: TryFrom<i32>>(raw: i32, as_str_name: fn(&E) -> &'static str) -> String {
    E::try_from(raw).map_or_else(|_| raw.to_string(), |e| as_str_name(&e).to_owned())
}

#[allow(deprecated)] // Kafka records are deprecated but still named.
fn l7_name(flow: &Flow) -> Option<&'static str> {
    match flow.l7.as_ref()?.record.as_ref()? {
        L7::Dns(_) => Some("DNS"),
        L7::Http(_) => Some("HTTP"),
        L7::Kafka(_) => Some("Kafka"),
    }
}

/// Hubble's `FlowProtocol`: the L7 protocol for access logs, the L4
/// protocol for drop, trace, policy verdict and capture events.
fn flow_protocol(flow: &Flow) -> &'static str {
    match event_type(flow).0 {
        MESSAGE_TYPE_ACCESS_LOG => l7_name(flow).unwrap_or("Unknown L7"),
        MESSAGE_TYPE_DROP | MESSAGE_TYPE_TRACE | MESSAGE_TYPE_POLICY_VERDICT | MESSAGE_TYPE_CAPTURE => {
            match l4(flow) {
                Some(L4::Tcp(_)) => "TCP",
                Some(L4::Udp(_)) => "UDP",
                Some(L4::IcmPv4(_)) => "ICMPv4",
                Some(L4::IcmPv6(_)) => "ICMPv6",
                Some(L4::Sctp(_)) => "SCTP",
                Some(L4::Vrrp(_)) => "VRRP",
                Some(L4::Igmp(_)) => "IGMP",
                None => "Unknown L4",
            }
        }
        _ => "Unknown flow",
    }
}

/// Kebab-case observation point of a trace event (Cilium's
/// `TraceObservationPoints`). Uses `trace_observation_point`; when that is
/// unset, falls back to the monitor sub type, where 0 means to-endpoint.
fn trace_point_name(point: i32, sub_type: i32) -> &'static str {
    let point = match (point, sub_type) {
        (0, 0) => i32::from(HUBBLE_TO_ENDPOINT),
        (0, sub) => sub,
        (p, _) => p,
    };
    u8::try_from(point).ok().and_then(trace_sub_type).and_then(twill_numbers::trace_point_name).unwrap_or("")
}

/// ICMP type and code as gopacket's `ICMPv4TypeCode.String()` /
/// `ICMPv6TypeCode.String()` write them, which is what Hubble exports:
/// `EchoRequest`, `DestinationUnreachable(Port)`, `EchoReply(Code: 3)`,
/// `42(0)` for unknown types.
fn icmp_name(v6: bool, ty: u32, code: u32) -> String {
    // Like Hubble, only the low byte counts (the fields are u8 on the wire).
    let (ty, code) = (ty as u8, code as u8);
    let Some((name, codes)) = (if v6 { icmpv6_type(ty) } else { icmpv4_type(ty) }) else {
        return format!("{ty}({code})");
    };
    match codes.get(usize::from(code)) {
        _ if codes.is_empty() && code == 0 => name.to_owned(),
        Some(code_name) => format!("{name}({code_name})"),
        None => format!("{name}(Code: {code})"),
    }
}

/// ICMPv4 type name and code names (indexed by code).
fn icmpv4_type(ty: u8) -> Option<(&'static str, &'static [&'static str])> {
    Some(match ty {
        0 => ("EchoReply", &[]),
        3 => (
            "DestinationUnreachable",
            &[
                "Net",
                "Host",
                "Protocol",
                "Port",
                "FragmentationNeeded",
                "SourceRoutingFailed",
                "NetUnknown",
                "HostUnknown",
                "SourceIsolated",
                "NetAdminProhibited",
                "HostAdminProhibited",
                "NetTOS",
                "HostTOS",
                "CommAdminProhibited",
                "HostPrecedence",
                "PrecedenceCutoff",
            ],
        ),
        4 => ("SourceQuench", &[]),
        5 => ("Redirect", &["Net", "Host", "TOS+Net", "TOS+Host"]),
        8 => ("EchoRequest", &[]),
        9 => ("RouterAdvertisement", &[]),
        10 => ("RouterSolicitation", &[]),
        11 => ("TimeExceeded", &["TTLExceeded", "FragmentReassemblyTimeExceeded"]),
        12 => ("ParameterProblem", &["PointerIndicatesError", "MissingOption", "BadLength"]),
        13 => ("TimestampRequest", &[]),
        14 => ("TimestampReply", &[]),
        15 => ("InfoRequest", &[]),
        16 => ("InfoReply", &[]),
        17 => ("AddressMaskRequest", &[]),
        18 => ("AddressMaskReply", &[]),
        _ => return None,
    })
}

/// ICMPv6 type name and code names (indexed by code).
fn icmpv6_type(ty: u8) -> Option<(&'static str, &'static [&'static str])> {
    Some(match ty {
        1 => (
            "DestinationUnreachable",
            &[
                "NoRouteToDst",
                "AdminProhibited",
                "BeyondScopeOfSrc",
                "AddressUnreachable",
                "PortUnreachable",
                "SrcAddressFailedPolicy",
                "RejectRouteToDst",
            ],
        ),
        2 => ("PacketTooBig", &[]),
        3 => ("TimeExceeded", &["HopLimitExceeded", "FragmentReassemblyTimeExceeded"]),
        4 => (
            "ParameterProblem",
            &["ErroneousHeaderField", "UnrecognizedNextHeader", "UnrecognizedIPv6Option"],
        ),
        128 => ("EchoRequest", &[]),
        129 => ("EchoReply", &[]),
        133 => ("RouterSolicitation", &[]),
        134 => ("RouterAdvertisement", &[]),
        135 => ("NeighborSolicitation", &[]),
        136 => ("NeighborAdvertisement", &[]),
        137 => ("Redirect", &[]),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use twill_observe_proto::flow::{
        layer4, CiliumEventType, Dns, Endpoint, IcmPv4, IcmPv6, Ip, Layer4, Layer7, Sctp, Tcp, TcpFlags,
        TraceObservationPoint as Point, Udp,
    };

    fn ev(ty: i32, sub_type: i32) -> Option<CiliumEventType> {
        Some(CiliumEventType { r#type: ty, sub_type })
    }

    fn ipv(version: IpVersion) -> Option<Ip> {
        Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ip_version: version as i32,
            ..Ip::default()
        })
    }

    fn tcp(dport: u32, flags: TcpFlags) -> Option<Layer4> {
        Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 40000,
                destination_port: dport,
                flags: Some(flags),
            })),
        })
    }

    fn udp(dport: u32) -> Option<Layer4> {
        Some(Layer4 {
            protocol: Some(layer4::Protocol::Udp(Udp { source_port: 40000, destination_port: dport })),
        })
    }

    fn icmp4(ty: u32, code: u32) -> Option<Layer4> {
        Some(Layer4 { protocol: Some(layer4::Protocol::IcmPv4(IcmPv4 { r#type: ty, code })) })
    }

    /// A forwarded IPv4 trace flow at to-endpoint, not a reply.
    fn trace(l4: Option<Layer4>) -> Flow {
        Flow {
            verdict: Verdict::Forwarded as i32,
            event_type: ev(MESSAGE_TYPE_TRACE, 0),
            trace_observation_point: Point::ToEndpoint as i32,
            ip: ipv(IpVersion::IPv4),
            l4,
            is_reply: Some(false),
            ..Flow::default()
        }
    }

    fn dropped(reason: DropReason, l4: Option<Layer4>) -> Flow {
        Flow {
            verdict: Verdict::Dropped as i32,
            drop_reason_desc: reason as i32,
            event_type: ev(MESSAGE_TYPE_DROP, reason as i32),
            ip: ipv(IpVersion::IPv4),
            l4,
            ..Flow::default()
        }
    }

    /// The samples of one family, as rendered.
    fn samples(r: &Registry, name: &str) -> Vec<String> {
        let prefix = format!("{name}{{");
        r.render().lines().filter(|l| l.starts_with(&prefix)).map(str::to_owned).collect()
    }

    fn setup() -> (Registry, HubbleMetrics) {
        let r = Registry::new();
        let m = HubbleMetrics::new(&r);
        (r, m)
    }

    #[test]
    fn http_requests_and_responses_by_method_status_and_reporter() {
        let (r, m) = setup();
        let l7 = |kind: flow::L7FlowType, code: u32, dir: TrafficDirection| Flow {
            event_type: ev(MESSAGE_TYPE_ACCESS_LOG, 0),
            traffic_direction: dir as i32,
            l7: Some(flow::Layer7 {
                r#type: kind as i32,
                latency_ns: 30_000_000,
                record: Some(L7::Http(flow::Http {
                    code,
                    method: "GET".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        m.observe(&l7(flow::L7FlowType::Request, 0, TrafficDirection::Ingress));
        m.observe(&l7(flow::L7FlowType::Request, 0, TrafficDirection::Ingress));
        m.observe(&l7(flow::L7FlowType::Response, 200, TrafficDirection::Egress));
        m.observe(&trace(udp(53)));
        assert_eq!(
            samples(&r, "hubble_http_requests_total"),
            [r#"hubble_http_requests_total{method="GET",protocol="HTTP/1.1",reporter="server"} 2"#]
        );
        assert_eq!(
            samples(&r, "hubble_http_responses_total"),
            [
                r#"hubble_http_responses_total{method="GET",protocol="HTTP/1.1",status="200",reporter="client"} 1"#
            ]
        );
        // 30 ms lands in the 0.05 bucket and every one above it, not in 0.025.
        let text = r.render();
        for line in [
            r#"hubble_http_request_duration_seconds_bucket{method="GET",reporter="client",le="0.025"} 0"#,
            r#"hubble_http_request_duration_seconds_bucket{method="GET",reporter="client",le="0.05"} 1"#,
            r#"hubble_http_request_duration_seconds_sum{method="GET",reporter="client"} 0.03"#,
            r#"hubble_http_request_duration_seconds_count{method="GET",reporter="client"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn flows_processed_by_type_subtype_verdict() {
        let (r, m) = setup();
        m.observe(&trace(udp(53)));
        m.observe(&trace(udp(53)));
        let mut to_stack = trace(udp(53));
        to_stack.trace_observation_point = Point::ToStack as i32;
        m.observe(&to_stack);
        // No observation point: the monitor sub type decides (5 = from-endpoint).
        let mut from_ep = trace(udp(53));
        from_ep.trace_observation_point = 0;
        from_ep.event_type = ev(MESSAGE_TYPE_TRACE, 5);
        m.observe(&from_ep);
        m.observe(&dropped(DropReason::PolicyDenied, udp(53)));
        m.observe(&Flow {
            verdict: Verdict::Forwarded as i32,
            event_type: ev(MESSAGE_TYPE_ACCESS_LOG, 0),
            l7: Some(Layer7 { record: Some(L7::Dns(Dns::default())), ..Layer7::default() }),
            ..Flow::default()
        });
        m.observe(&Flow {
            verdict: Verdict::Dropped as i32,
            event_type: ev(MESSAGE_TYPE_POLICY_VERDICT, 0),
            ..Flow::default()
        });
        m.observe(&Flow { event_type: ev(7, 0), ..Flow::default() });
        m.observe(&Flow::default());

        assert_eq!(
            samples(&r, "hubble_flows_processed_total"),
            [
                r#"hubble_flows_processed_total{type="Drop",subtype="",verdict="DROPPED"} 1"#,
                r#"hubble_flows_processed_total{type="L7",subtype="DNS",verdict="FORWARDED"} 1"#,
                r#"hubble_flows_processed_total{type="PolicyVerdict",subtype="",verdict="DROPPED"} 1"#,
                r#"hubble_flows_processed_total{type="Trace",subtype="from-endpoint",verdict="FORWARDED"} 1"#,
                r#"hubble_flows_processed_total{type="Trace",subtype="to-endpoint",verdict="FORWARDED"} 2"#,
                r#"hubble_flows_processed_total{type="Trace",subtype="to-stack",verdict="FORWARDED"} 1"#,
                r#"hubble_flows_processed_total{type="Unknown",subtype="0",verdict="VERDICT_UNKNOWN"} 1"#,
                r#"hubble_flows_processed_total{type="Unknown",subtype="7",verdict="VERDICT_UNKNOWN"} 1"#,
            ]
        );
    }

    #[test]
    fn drops_by_reason_and_protocol() {
        let (r, m) = setup();
        m.observe(&dropped(DropReason::PolicyDenied, tcp(80, TcpFlags { syn: true, ..TcpFlags::default() })));
        m.observe(&dropped(DropReason::PolicyDenied, tcp(80, TcpFlags::default())));
        m.observe(&dropped(DropReason::PolicyDeny, udp(53)));
        m.observe(&dropped(DropReason::PolicyDeny, icmp4(8, 0)));
        m.observe(&dropped(DropReason::CtMapInsertionFailed, None));
        let mut sctp = dropped(DropReason::PolicyDeny, None);
        sctp.l4 = Some(Layer4 { protocol: Some(layer4::Protocol::Sctp(Sctp::default())) });
        m.observe(&sctp);
        let mut no_event = dropped(DropReason::PolicyDeny, udp(53));
        no_event.event_type = None;
        m.observe(&no_event);
        let mut unknown_reason = dropped(DropReason::PolicyDeny, udp(53));
        unknown_reason.drop_reason_desc = 206;
        m.observe(&unknown_reason);
        m.observe(&trace(udp(53))); // forwarded: not a drop

        assert_eq!(
            samples(&r, "hubble_drop_total"),
            [
                r#"hubble_drop_total{reason="206",protocol="UDP"} 1"#,
                r#"hubble_drop_total{reason="CT_MAP_INSERTION_FAILED",protocol="Unknown L4"} 1"#,
                r#"hubble_drop_total{reason="POLICY_DENIED",protocol="TCP"} 2"#,
                r#"hubble_drop_total{reason="POLICY_DENY",protocol="ICMPv4"} 1"#,
                r#"hubble_drop_total{reason="POLICY_DENY",protocol="SCTP"} 1"#,
                r#"hubble_drop_total{reason="POLICY_DENY",protocol="UDP"} 1"#,
                r#"hubble_drop_total{reason="POLICY_DENY",protocol="Unknown flow"} 1"#,
            ]
        );
    }

    #[test]
    fn tcp_flags_as_hubble_counts_them() {
        let (r, m) = setup();
        let f = |syn, ack, fin, rst, psh| TcpFlags { syn, ack, fin, rst, psh, ..TcpFlags::default() };
        m.observe(&trace(tcp(80, f(true, false, false, false, false)))); // SYN
        m.observe(&trace(tcp(80, f(true, true, false, false, false)))); // SYN-ACK
        m.observe(&trace(tcp(80, f(false, true, true, false, false)))); // FIN (ACK alone is not counted)
        m.observe(&trace(tcp(80, f(false, true, false, false, true)))); // ACK+PSH: nothing
        m.observe(&trace(tcp(80, f(false, false, true, true, false)))); // FIN and RST
        let mut v6 = trace(tcp(80, f(true, false, false, false, false)));
        v6.ip = ipv(IpVersion::IPv6);
        m.observe(&v6);
        let mut redirected = trace(tcp(80, f(false, false, false, true, false)));
        redirected.verdict = Verdict::Redirected as i32;
        m.observe(&redirected);
        // Ignored: dropped, no IP header, no flags.
        m.observe(&dropped(DropReason::PolicyDenied, tcp(80, f(true, false, false, false, false))));
        let mut no_ip = trace(tcp(80, f(true, false, false, false, false)));
        no_ip.ip = None;
        m.observe(&no_ip);
        let mut no_flags = trace(tcp(80, TcpFlags::default()));
        if let Some(L4::Tcp(t)) = no_flags.l4.as_mut().and_then(|l| l.protocol.as_mut()) {
            t.flags = None;
        }
        m.observe(&no_flags);

        assert_eq!(
            samples(&r, "hubble_tcp_flags_total"),
            [
                r#"hubble_tcp_flags_total{flag="FIN",family="IPv4"} 2"#,
                r#"hubble_tcp_flags_total{flag="RST",family="IPv4"} 2"#,
                r#"hubble_tcp_flags_total{flag="SYN",family="IPv4"} 1"#,
                r#"hubble_tcp_flags_total{flag="SYN",family="IPv6"} 1"#,
                r#"hubble_tcp_flags_total{flag="SYN-ACK",family="IPv4"} 1"#,
            ]
        );
    }

    #[test]
    fn port_distribution_counts_forwarded_requests() {
        let (r, m) = setup();
        m.observe(&trace(tcp(80, TcpFlags::default())));
        m.observe(&trace(tcp(80, TcpFlags::default())));
        m.observe(&trace(udp(53)));
        m.observe(&trace(icmp4(8, 0)));
        let mut redirected = trace(tcp(8080, TcpFlags::default()));
        redirected.verdict = Verdict::Redirected as i32;
        m.observe(&redirected);
        // Ignored: replies, unknown direction, drops, no L4.
        let mut reply = trace(tcp(40000, TcpFlags::default()));
        reply.is_reply = Some(true);
        m.observe(&reply);
        let mut unknown = trace(tcp(443, TcpFlags::default()));
        unknown.is_reply = None;
        m.observe(&unknown);
        m.observe(&dropped(DropReason::PolicyDenied, tcp(22, TcpFlags::default())));
        m.observe(&trace(None));

        assert_eq!(
            samples(&r, "hubble_port_distribution_total"),
            [
                r#"hubble_port_distribution_total{protocol="ICMPv4",port="0"} 1"#,
                r#"hubble_port_distribution_total{protocol="TCP",port="80"} 2"#,
                r#"hubble_port_distribution_total{protocol="TCP",port="8080"} 1"#,
                r#"hubble_port_distribution_total{protocol="UDP",port="53"} 1"#,
            ]
        );
    }

    #[test]
    fn icmp_by_family_and_type() {
        let (r, m) = setup();
        m.observe(&trace(icmp4(8, 0)));
        m.observe(&trace(icmp4(0, 0)));
        m.observe(&trace(icmp4(0, 0)));
        m.observe(&dropped(DropReason::PolicyDenied, icmp4(3, 3))); // any verdict counts
        m.observe(&trace(icmp4(11, 0)));
        m.observe(&trace(icmp4(8, 7)));
        m.observe(&trace(icmp4(42, 1)));
        let mut v6 = trace(None);
        v6.l4 = Some(Layer4 { protocol: Some(layer4::Protocol::IcmPv6(IcmPv6 { r#type: 128, code: 0 })) });
        m.observe(&v6);
        m.observe(&trace(udp(53)));

        assert_eq!(
            samples(&r, "hubble_icmp_total"),
            [
                r#"hubble_icmp_total{family="IPv4",type="42(1)"} 1"#,
                r#"hubble_icmp_total{family="IPv4",type="DestinationUnreachable(Port)"} 1"#,
                r#"hubble_icmp_total{family="IPv4",type="EchoReply"} 2"#,
                r#"hubble_icmp_total{family="IPv4",type="EchoRequest"} 1"#,
                r#"hubble_icmp_total{family="IPv4",type="EchoRequest(Code: 7)"} 1"#,
                r#"hubble_icmp_total{family="IPv4",type="TimeExceeded(TTLExceeded)"} 1"#,
                r#"hubble_icmp_total{family="IPv6",type="EchoRequest"} 1"#,
            ]
        );
    }

    #[test]
    fn policy_verdicts_by_direction_match_action() {
        let (r, m) = setup();
        let verdict = |dir: TrafficDirection, match_type, verdict: Verdict, src_identity| Flow {
            verdict: verdict as i32,
            event_type: ev(MESSAGE_TYPE_POLICY_VERDICT, 0),
            traffic_direction: dir as i32,
            policy_match_type: match_type,
            source: Some(Endpoint { identity: src_identity, ..Endpoint::default() }),
            ..Flow::default()
        };
        m.observe(&verdict(TrafficDirection::Ingress, 2, Verdict::Forwarded, 1000));
        m.observe(&verdict(TrafficDirection::Ingress, 2, Verdict::Forwarded, 1000));
        m.observe(&verdict(TrafficDirection::Egress, 1, Verdict::Forwarded, 1000));
        m.observe(&verdict(TrafficDirection::Egress, 0, Verdict::Dropped, 1000));
        m.observe(&verdict(TrafficDirection::Ingress, 4, Verdict::Audit, 2));
        m.observe(&verdict(TrafficDirection::Ingress, 3, Verdict::Forwarded, 3));
        m.observe(&verdict(TrafficDirection::Egress, 5, Verdict::Forwarded, 3));
        m.observe(&verdict(TrafficDirection::Egress, 6, Verdict::Forwarded, 3));
        m.observe(&verdict(TrafficDirection::Egress, 99, Verdict::Forwarded, 3));
        // Ignored: from the host identity, and not a policy verdict event.
        m.observe(&verdict(TrafficDirection::Ingress, 2, Verdict::Forwarded, IDENTITY_HOST));
        m.observe(&trace(udp(53)));

        assert_eq!(
            samples(&r, "hubble_policy_verdicts_total"),
            [
                r#"hubble_policy_verdicts_total{direction="egress",match="l3-only",action="forwarded"} 1"#,
                r#"hubble_policy_verdicts_total{direction="egress",match="l3-proto",action="forwarded"} 1"#,
                r#"hubble_policy_verdicts_total{direction="egress",match="none",action="dropped"} 1"#,
                r#"hubble_policy_verdicts_total{direction="egress",match="proto-only",action="forwarded"} 1"#,
                r#"hubble_policy_verdicts_total{direction="egress",match="unknown",action="forwarded"} 1"#,
                r#"hubble_policy_verdicts_total{direction="ingress",match="all",action="audit"} 1"#,
                r#"hubble_policy_verdicts_total{direction="ingress",match="l3-l4",action="forwarded"} 2"#,
                r#"hubble_policy_verdicts_total{direction="ingress",match="l4-only",action="forwarded"} 1"#,
            ]
        );
    }

    #[test]
    fn lost_events_by_source() {
        let (r, m) = setup();
        assert_eq!(
            samples(&r, "hubble_lost_events_total"),
            [
                r#"hubble_lost_events_total{source="hubble_ring_buffer"} 0"#,
                r#"hubble_lost_events_total{source="observer_events_queue"} 0"#,
                r#"hubble_lost_events_total{source="perf_event_ring_buffer"} 0"#,
            ]
        );
        m.lost(LOST_PERF_EVENT_RING_BUFFER, 5);
        m.lost(LOST_PERF_EVENT_RING_BUFFER, 2);
        m.lost_event(&flow::LostEvent {
            source: flow::LostEventSource::HubbleRingBuffer as i32,
            num_events_lost: 3,
            ..flow::LostEvent::default()
        });
        assert_eq!(
            samples(&r, "hubble_lost_events_total"),
            [
                r#"hubble_lost_events_total{source="hubble_ring_buffer"} 3"#,
                r#"hubble_lost_events_total{source="observer_events_queue"} 0"#,
                r#"hubble_lost_events_total{source="perf_event_ring_buffer"} 7"#,
            ]
        );
    }

    #[test]
    fn icmp_names_match_gopacket() {
        assert_eq!(icmp_name(false, 5, 3), "Redirect(TOS+Host)");
        assert_eq!(icmp_name(false, 12, 9), "ParameterProblem(Code: 9)");
        assert_eq!(icmp_name(true, 1, 4), "DestinationUnreachable(PortUnreachable)");
        assert_eq!(icmp_name(true, 2, 0), "PacketTooBig");
        assert_eq!(icmp_name(true, 135, 0), "NeighborSolicitation");
        assert_eq!(icmp_name(true, 200, 0), "200(0)");
    }
}
