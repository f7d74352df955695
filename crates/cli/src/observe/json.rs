//! `hubble observe -o json` output: each GetFlowsResponse as the proto3 JSON
//! mapping with the original proto field names, byte for byte as Hubble
//! prints it.
//!
//! Hubble marshals with Go's `protojson` (`UseProtoNames: true`, no
//! defaults) and writes the result through `encoding/json`'s `Encoder`. So:
//! fields appear in `.proto` declaration order under their names as written
//! there (`IP`, `l4`, `TCP`, `ipVersion`, `ID`, `pod_name`, `Type`,
//! `Summary`); proto3 scalars equal to their default and empty repeated
//! fields are left out, while set message fields and oneof members are
//! always written (an empty one as `{}`); enums are written by name (a
//! number not in the enum as a number); 64-bit integers are strings, 32-bit
//! ones numbers; Timestamps are RFC 3339 in UTC with 0, 3, 6 or 9 fractional
//! digits; wrapper messages (`is_reply`, `cpu`) are their plain value; and
//! strings escape `<`, `>`, `&`, U+2028 and U+2029 as `\u003c`... the way
//! `encoding/json` does.

#![allow(deprecated)] // Flow.drop_reason, Flow.reply, Flow.Summary, Layer7.kafka are deprecated but printed.

use std::fmt::Write as _;

use twill_observe_proto::{
    flow::{self, layer4::Protocol, layer7::Record},
    observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
    prost_types::{Any, Timestamp},
    relay,
};

use super::timefmt;

/// Appends `s` as a JSON string literal, escaped as protojson and then
/// `encoding/json` (HTML-safe) escape it.
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One JSON object under construction; each method writes its field only
/// when protojson would.
struct Obj {
    out: String,
}

impl Obj {
    fn new() -> Self {
        Obj { out: String::from("{") }
    }

    fn key(&mut self, name: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_string(&mut self.out, name);
        self.out.push(':');
    }

    fn raw(&mut self, name: &str, json: &str) {
        self.key(name);
        self.out.push_str(json);
    }

    fn string(&mut self, name: &str, v: &str) {
        if !v.is_empty() {
            self.key(name);
            push_string(&mut self.out, v);
        }
    }

    fn u32(&mut self, name: &str, v: u32) {
        if v != 0 {
            self.raw(name, &v.to_string());
        }
    }

    fn i32(&mut self, name: &str, v: i32) {
        if v != 0 {
            self.raw(name, &v.to_string());
        }
    }

    fn u64(&mut self, name: &str, v: u64) {
        if v != 0 {
            self.key(name);
            push_string(&mut self.out, &v.to_string());
        }
    }

    /// A 32-bit wrapper (`google.protobuf.UInt32Value`, `Int32Value`):
    /// written whenever it is set, zero too, as a bare number.
    fn wrapped32(&mut self, name: &str, v: Option<impl ToString>) {
        if let Some(v) = v {
            self.raw(name, &v.to_string());
        }
    }

    fn bool(&mut self, name: &str, v: bool) {
        if v {
            self.raw(name, "true");
        }
    }

    /// An enum field: its value name, or the number when it has none.
    fn enumeration(&mut self, name: &str, v: i32, value_name: Option<&str>) {
        if v != 0 {
            match value_name {
                Some(n) => {
                    self.key(name);
                    push_string(&mut self.out, n);
                }
                None => self.raw(name, &v.to_string()),
            }
        }
    }

    fn message<T>(&mut self, name: &str, v: Option<&T>, encode: fn(&T) -> String) {
        if let Some(v) = v {
            self.raw(name, &encode(v));
        }
    }

    fn strings(&mut self, name: &str, v: &[String]) {
        if !v.is_empty() {
            self.key(name);
            self.out.push('[');
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                push_string(&mut self.out, s);
            }
            self.out.push(']');
        }
    }

    fn messages<T>(&mut self, name: &str, v: &[T], encode: fn(&T) -> String) {
        if !v.is_empty() {
            let items: Vec<String> = v.iter().map(encode).collect();
            self.raw(name, &format!("[{}]", items.join(",")));
        }
    }

    fn timestamp(&mut self, name: &str, v: Option<&Timestamp>) {
        if let Some(ts) = v {
            self.key(name);
            push_string(&mut self.out, &timefmt::rfc3339_proto(ts));
        }
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

macro_rules! enum_name {
    ($ty:ty, $v:expr) => {
        <$ty>::try_from($v).ok().map(|e| e.as_str_name())
    };
}

/// One line of `hubble observe -o json` (without the newline).
pub fn get_flows_response(r: &GetFlowsResponse) -> String {
    let mut o = Obj::new();
    match &r.response_types {
        Some(ResponseTypes::Flow(f)) => o.raw("flow", &flow(f)),
        Some(ResponseTypes::NodeStatus(s)) => o.raw("node_status", &node_status_event(s)),
        Some(ResponseTypes::LostEvents(l)) => o.raw("lost_events", &lost_event(l)),
        None => {}
    }
    o.string("node_name", &r.node_name);
    o.timestamp("time", r.time.as_ref());
    o.finish()
}

/// One line of `hubble observe agent-events -o json`.
pub fn get_agent_events_response(r: &twill_observe_proto::observer::GetAgentEventsResponse) -> String {
    let mut o = Obj::new();
    o.message("agent_event", r.agent_event.as_ref(), agent_event);
    o.string("node_name", &r.node_name);
    o.timestamp("time", r.time.as_ref());
    o.finish()
}

/// One line of `hubble observe debug-events -o json`.
pub fn get_debug_events_response(r: &twill_observe_proto::observer::GetDebugEventsResponse) -> String {
    let mut o = Obj::new();
    o.message("debug_event", r.debug_event.as_ref(), debug_event);
    o.string("node_name", &r.node_name);
    o.timestamp("time", r.time.as_ref());
    o.finish()
}

fn debug_event(e: &flow::DebugEvent) -> String {
    let mut o = Obj::new();
    o.enumeration("type", e.r#type, enum_name!(flow::DebugEventType, e.r#type));
    o.message("source", e.source.as_ref(), endpoint);
    o.wrapped32("hash", e.hash);
    o.wrapped32("arg1", e.arg1);
    o.wrapped32("arg2", e.arg2);
    o.wrapped32("arg3", e.arg3);
    o.string("message", &e.message);
    o.wrapped32("cpu", e.cpu);
    o.finish()
}

fn agent_event(e: &flow::AgentEvent) -> String {
    use flow::agent_event::Notification;
    let mut o = Obj::new();
    o.enumeration("type", e.r#type, enum_name!(flow::AgentEventType, e.r#type));
    match &e.notification {
        Some(Notification::Unknown(u)) => o.message("unknown", Some(u), |u| {
            let mut o = Obj::new();
            o.string("type", &u.r#type);
            o.string("notification", &u.notification);
            o.finish()
        }),
        Some(Notification::AgentStart(t)) => o.message("agent_start", Some(t), |t| {
            let mut o = Obj::new();
            o.timestamp("time", t.time.as_ref());
            o.finish()
        }),
        Some(Notification::PolicyUpdate(p)) => o.message("policy_update", Some(p), |p| {
            let mut o = Obj::new();
            o.strings("labels", &p.labels);
            o.u64("revision", p.revision);
            if p.rule_count != 0 {
                o.key("rule_count");
                push_string(&mut o.out, &p.rule_count.to_string());
            }
            o.finish()
        }),
        Some(Notification::EndpointRegenerate(r)) => o.message("endpoint_regenerate", Some(r), |r| {
            let mut o = Obj::new();
            o.u64("id", r.id);
            o.strings("labels", &r.labels);
            o.string("error", &r.error);
            o.finish()
        }),
        Some(Notification::EndpointUpdate(u)) => o.message("endpoint_update", Some(u), |u| {
            let mut o = Obj::new();
            o.u64("id", u.id);
            o.strings("labels", &u.labels);
            o.string("error", &u.error);
            o.string("pod_name", &u.pod_name);
            o.string("namespace", &u.namespace);
            o.finish()
        }),
        Some(Notification::IpcacheUpdate(i)) => o.message("ipcache_update", Some(i), |i| {
            let mut o = Obj::new();
            o.string("cidr", &i.cidr);
            o.u32("identity", i.identity);
            // A wrapper: present means set, zero included.
            if let Some(old) = i.old_identity {
                o.raw("old_identity", &old.to_string());
            }
            o.string("host_ip", &i.host_ip);
            o.string("old_host_ip", &i.old_host_ip);
            o.u32("encrypt_key", i.encrypt_key);
            o.string("namespace", &i.namespace);
            o.string("pod_name", &i.pod_name);
            o.finish()
        }),
        _ => {}
    }
    o.finish()
}

pub fn flow(f: &flow::Flow) -> String {
    let mut o = Obj::new();
    o.timestamp("time", f.time.as_ref());
    o.string("uuid", &f.uuid);
    o.message("emitter", f.emitter.as_ref(), emitter);
    o.enumeration("verdict", f.verdict, enum_name!(flow::Verdict, f.verdict));
    o.u32("drop_reason", f.drop_reason);
    o.enumeration("auth_type", f.auth_type, enum_name!(flow::AuthType, f.auth_type));
    o.message("ethernet", f.ethernet.as_ref(), ethernet);
    o.message("IP", f.ip.as_ref(), ip);
    o.message("l4", f.l4.as_ref(), layer4);
    o.message("tunnel", f.tunnel.as_ref(), tunnel);
    o.message("source", f.source.as_ref(), endpoint);
    o.message("destination", f.destination.as_ref(), endpoint);
    o.enumeration("Type", f.r#type, enum_name!(flow::FlowType, f.r#type));
    o.string("node_name", &f.node_name);
    o.strings("node_labels", &f.node_labels);
    o.strings("source_names", &f.source_names);
    o.strings("destination_names", &f.destination_names);
    o.message("l7", f.l7.as_ref(), layer7);
    o.bool("reply", f.reply);
    o.message("event_type", f.event_type.as_ref(), cilium_event_type);
    o.message("source_service", f.source_service.as_ref(), service);
    o.message("destination_service", f.destination_service.as_ref(), service);
    o.enumeration(
        "traffic_direction",
        f.traffic_direction,
        enum_name!(flow::TrafficDirection, f.traffic_direction),
    );
    o.u32("policy_match_type", f.policy_match_type);
    o.enumeration(
        "trace_observation_point",
        f.trace_observation_point,
        enum_name!(flow::TraceObservationPoint, f.trace_observation_point),
    );
    o.enumeration("trace_reason", f.trace_reason, enum_name!(flow::TraceReason, f.trace_reason));
    o.message("file", f.file.as_ref(), file_info);
    o.message("ip_trace_id", f.ip_trace_id.as_ref(), ip_trace_id);
    o.enumeration("drop_reason_desc", f.drop_reason_desc, enum_name!(flow::DropReason, f.drop_reason_desc));
    if let Some(v) = f.is_reply {
        o.raw("is_reply", if v { "true" } else { "false" });
    }
    o.enumeration(
        "debug_capture_point",
        f.debug_capture_point,
        enum_name!(flow::DebugCapturePoint, f.debug_capture_point),
    );
    o.message("interface", f.interface.as_ref(), network_interface);
    o.u32("proxy_port", f.proxy_port);
    o.message("trace_context", f.trace_context.as_ref(), trace_context);
    o.enumeration(
        "sock_xlate_point",
        f.sock_xlate_point,
        enum_name!(flow::SocketTranslationPoint, f.sock_xlate_point),
    );
    o.u64("socket_cookie", f.socket_cookie);
    o.u64("cgroup_id", f.cgroup_id);
    o.string("Summary", &f.summary);
    o.message("extensions", f.extensions.as_ref(), any);
    o.messages("egress_allowed_by", &f.egress_allowed_by, policy);
    o.messages("ingress_allowed_by", &f.ingress_allowed_by, policy);
    o.messages("egress_denied_by", &f.egress_denied_by, policy);
    o.messages("ingress_denied_by", &f.ingress_denied_by, policy);
    o.strings("policy_log", &f.policy_log);
    o.message("aggregate", f.aggregate.as_ref(), aggregate);
    o.finish()
}

fn emitter(e: &flow::Emitter) -> String {
    let mut o = Obj::new();
    o.string("name", &e.name);
    o.string("version", &e.version);
    o.finish()
}

fn file_info(f: &flow::FileInfo) -> String {
    let mut o = Obj::new();
    o.string("name", &f.name);
    o.u32("line", f.line);
    o.finish()
}

fn ethernet(e: &flow::Ethernet) -> String {
    let mut o = Obj::new();
    o.string("source", &e.source);
    o.string("destination", &e.destination);
    o.finish()
}

fn ip(i: &flow::Ip) -> String {
    let mut o = Obj::new();
    o.string("source", &i.source);
    o.string("source_xlated", &i.source_xlated);
    o.string("destination", &i.destination);
    o.enumeration("ipVersion", i.ip_version, enum_name!(flow::IpVersion, i.ip_version));
    o.bool("encrypted", i.encrypted);
    o.finish()
}

fn layer4(l: &flow::Layer4) -> String {
    let mut o = Obj::new();
    match &l.protocol {
        Some(Protocol::Tcp(t)) => o.raw("TCP", &tcp(t)),
        Some(Protocol::Udp(u)) => o.raw("UDP", &ports(u.source_port, u.destination_port).finish()),
        Some(Protocol::IcmPv4(i)) => o.raw("ICMPv4", &icmp(i.r#type, i.code)),
        Some(Protocol::IcmPv6(i)) => o.raw("ICMPv6", &icmp(i.r#type, i.code)),
        Some(Protocol::Sctp(s)) => {
            let mut p = ports(s.source_port, s.destination_port);
            p.enumeration("chunk_type", s.chunk_type, enum_name!(flow::SctpChunkType, s.chunk_type));
            o.raw("SCTP", &p.finish());
        }
        Some(Protocol::Vrrp(v)) => {
            let mut p = Obj::new();
            p.u32("type", v.r#type);
            p.u32("vrid", v.vrid);
            p.u32("priority", v.priority);
            o.raw("VRRP", &p.finish());
        }
        Some(Protocol::Igmp(g)) => {
            let mut p = Obj::new();
            p.u32("type", g.r#type);
            p.string("group_address", &g.group_address);
            o.raw("IGMP", &p.finish());
        }
        None => {}
    }
    o.finish()
}

fn ports(source: u32, destination: u32) -> Obj {
    let mut o = Obj::new();
    o.u32("source_port", source);
    o.u32("destination_port", destination);
    o
}

fn tcp(t: &flow::Tcp) -> String {
    let mut o = ports(t.source_port, t.destination_port);
    o.message("flags", t.flags.as_ref(), tcp_flags);
    o.finish()
}

pub fn tcp_flags(f: &flow::TcpFlags) -> String {
    let mut o = Obj::new();
    o.bool("FIN", f.fin);
    o.bool("SYN", f.syn);
    o.bool("RST", f.rst);
    o.bool("PSH", f.psh);
    o.bool("ACK", f.ack);
    o.bool("URG", f.urg);
    o.bool("ECE", f.ece);
    o.bool("CWR", f.cwr);
    o.bool("NS", f.ns);
    o.finish()
}

fn icmp(r#type: u32, code: u32) -> String {
    let mut o = Obj::new();
    o.u32("type", r#type);
    o.u32("code", code);
    o.finish()
}

fn tunnel(t: &flow::Tunnel) -> String {
    let mut o = Obj::new();
    o.enumeration("protocol", t.protocol, enum_name!(flow::tunnel::Protocol, t.protocol));
    o.message("IP", t.ip.as_ref(), ip);
    o.message("l4", t.l4.as_ref(), layer4);
    o.u32("vni", t.vni);
    o.finish()
}

fn endpoint(e: &flow::Endpoint) -> String {
    let mut o = Obj::new();
    o.u32("ID", e.id);
    o.u32("identity", e.identity);
    o.string("cluster_name", &e.cluster_name);
    o.string("namespace", &e.namespace);
    o.strings("labels", &e.labels);
    o.string("pod_name", &e.pod_name);
    o.messages("workloads", &e.workloads, workload);
    o.finish()
}

fn workload(w: &flow::Workload) -> String {
    let mut o = Obj::new();
    o.string("name", &w.name);
    o.string("kind", &w.kind);
    o.finish()
}

fn layer7(l: &flow::Layer7) -> String {
    let mut o = Obj::new();
    o.enumeration("type", l.r#type, enum_name!(flow::L7FlowType, l.r#type));
    o.u64("latency_ns", l.latency_ns);
    match &l.record {
        Some(Record::Dns(d)) => o.raw("dns", &dns(d)),
        Some(Record::Http(h)) => o.raw("http", &http(h)),
        Some(Record::Kafka(k)) => o.raw("kafka", &kafka(k)),
        None => {}
    }
    o.finish()
}

fn dns(d: &flow::Dns) -> String {
    let mut o = Obj::new();
    o.string("query", &d.query);
    o.strings("ips", &d.ips);
    o.u32("ttl", d.ttl);
    o.strings("cnames", &d.cnames);
    o.string("observation_source", &d.observation_source);
    o.u32("rcode", d.rcode);
    o.strings("qtypes", &d.qtypes);
    o.strings("rrtypes", &d.rrtypes);
    o.finish()
}

fn http(h: &flow::Http) -> String {
    let mut o = Obj::new();
    o.u32("code", h.code);
    o.string("method", &h.method);
    o.string("url", &h.url);
    o.string("protocol", &h.protocol);
    o.messages("headers", &h.headers, http_header);
    o.finish()
}

fn http_header(h: &flow::HttpHeader) -> String {
    let mut o = Obj::new();
    o.string("key", &h.key);
    o.string("value", &h.value);
    o.finish()
}

fn kafka(k: &flow::Kafka) -> String {
    let mut o = Obj::new();
    o.i32("error_code", k.error_code);
    o.i32("api_version", k.api_version);
    o.string("api_key", &k.api_key);
    o.i32("correlation_id", k.correlation_id);
    o.string("topic", &k.topic);
    o.finish()
}

fn cilium_event_type(e: &flow::CiliumEventType) -> String {
    let mut o = Obj::new();
    o.i32("type", e.r#type);
    o.i32("sub_type", e.sub_type);
    o.finish()
}

fn service(s: &flow::Service) -> String {
    let mut o = Obj::new();
    o.string("name", &s.name);
    o.string("namespace", &s.namespace);
    o.finish()
}

fn ip_trace_id(t: &flow::IpTraceId) -> String {
    let mut o = Obj::new();
    o.u64("trace_id", t.trace_id);
    o.u32("ip_option_type", t.ip_option_type);
    o.finish()
}

fn network_interface(i: &flow::NetworkInterface) -> String {
    let mut o = Obj::new();
    o.u32("index", i.index);
    o.string("name", &i.name);
    o.finish()
}

fn trace_context(t: &flow::TraceContext) -> String {
    let mut o = Obj::new();
    o.message("parent", t.parent.as_ref(), |p: &flow::TraceParent| {
        let mut o = Obj::new();
        o.string("trace_id", &p.trace_id);
        o.finish()
    });
    o.finish()
}

fn policy(p: &flow::Policy) -> String {
    let mut o = Obj::new();
    o.string("name", &p.name);
    o.string("namespace", &p.namespace);
    o.strings("labels", &p.labels);
    o.u64("revision", p.revision);
    o.string("kind", &p.kind);
    o.finish()
}

fn aggregate(a: &flow::Aggregate) -> String {
    let mut o = Obj::new();
    o.u32("ingress_flow_count", a.ingress_flow_count);
    o.u32("egress_flow_count", a.egress_flow_count);
    o.u32("unknown_direction_flow_count", a.unknown_direction_flow_count);
    o.finish()
}

/// `google.protobuf.Any`: protojson inlines the packed message's fields
/// next to `@type`, which needs the message type. Twill puts nothing here;
/// for a foreign payload only its type URL is written.
fn any(a: &Any) -> String {
    let mut o = Obj::new();
    o.key("@type");
    push_string(&mut o.out, &a.type_url);
    o.finish()
}

fn lost_event(l: &flow::LostEvent) -> String {
    let mut o = Obj::new();
    o.enumeration("source", l.source, enum_name!(flow::LostEventSource, l.source));
    o.u64("num_events_lost", l.num_events_lost);
    if let Some(cpu) = l.cpu {
        o.raw("cpu", &cpu.to_string());
    }
    o.timestamp("first", l.first.as_ref());
    o.timestamp("last", l.last.as_ref());
    o.finish()
}

fn node_status_event(s: &relay::NodeStatusEvent) -> String {
    let mut o = Obj::new();
    o.enumeration("state_change", s.state_change, enum_name!(relay::NodeState, s.state_change));
    o.strings("node_names", &s.node_names);
    o.string("message", &s.message);
    o.finish()
}
