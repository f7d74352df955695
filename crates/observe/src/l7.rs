//! L7 proxy records to Hubble flows (`Type: L7`, event type 129, Cilium's
//! access log message), the way Hubble's L7 parser fills them: a request
//! goes client to server, a response server to client with `is_reply`.

use std::{net::SocketAddrV4, time::SystemTime};

use twill_numbers::MESSAGE_TYPE_ACCESS_LOG;
use twill_observe_proto::{flow, prost_types::Timestamp};

use crate::Directory;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7Verdict {
    Forwarded,
    Dropped,
    Error,
}

/// One request or response, as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Event {
    pub time: SystemTime,
    pub response: bool,
    pub verdict: L7Verdict,
    /// The endpoint's ingress rules applied (else its egress).
    pub ingress: bool,
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    pub client_identity: u32,
    pub server_identity: u32,
    pub code: u32,
    pub method: String,
    pub url: String,
    pub protocol: String,
    pub headers: Vec<(String, String)>,
    pub latency_ns: u64,
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

pub fn l7_flow(e: &L7Event, dir: &Directory) -> flow::Flow {
    let http = flow::Http {
        code: e.code,
        method: e.method.clone(),
        url: e.url.clone(),
        protocol: e.protocol.clone(),
        headers: e
            .headers
            .iter()
            .map(|(k, v)| flow::HttpHeader { key: k.clone(), value: v.clone() })
            .collect(),
    };
    let summary = if e.response {
        format!("{} {} {} {}", e.protocol, e.code, e.method, e.url)
    } else {
        format!("{} {} {}", e.protocol, e.method, e.url)
    };
    let parties = Parties {
        time: e.time,
        response: e.response,
        verdict: e.verdict,
        ingress: e.ingress,
        udp: false,
        client: e.client,
        server: e.server,
        client_identity: e.client_identity,
        server_identity: e.server_identity,
        latency_ns: e.latency_ns,
    };
    access_log_flow(&parties, flow::layer7::Record::Http(http), summary, dir)
}

/// One DNS query or answer, as the DNS proxy saw it (always on the
/// client's egress: `rules.dns` are egress rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEvent {
    pub time: SystemTime,
    pub response: bool,
    pub verdict: L7Verdict,
    pub udp: bool,
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    pub client_identity: u32,
    pub server_identity: u32,
    /// The name asked, canonical (`www.example.com.`).
    pub query: String,
    pub qtypes: Vec<String>,
    pub rcode: u32,
    pub ips: Vec<String>,
    /// The lowest TTL of the answer's address records.
    pub ttl: u32,
    pub cnames: Vec<String>,
    pub rrtypes: Vec<String>,
    pub latency_ns: u64,
}

pub fn dns_flow(e: &DnsEvent, dir: &Directory) -> flow::Flow {
    let qtypes = e.qtypes.join(",");
    let summary = match (e.response, e.rcode) {
        (false, _) => format!("DNS Query {} {qtypes}", e.query),
        (true, 0) => {
            format!("DNS Answer \"{}\" TTL: {} (Proxy {} {qtypes})", e.ips.join(","), e.ttl, e.query)
        }
        (true, rcode) => {
            format!("DNS Answer RCode: {} (Proxy {} {qtypes})", twill_numbers::dns_rcode_name(rcode), e.query)
        }
    };
    let dns = flow::Dns {
        query: e.query.clone(),
        ips: if e.response { e.ips.clone() } else { vec![] },
        ttl: if e.response { e.ttl } else { 0 },
        cnames: if e.response { e.cnames.clone() } else { vec![] },
        observation_source: "proxy".into(),
        rcode: if e.response { e.rcode } else { 0 },
        qtypes: e.qtypes.clone(),
        rrtypes: if e.response { e.rrtypes.clone() } else { vec![] },
    };
    let parties = Parties {
        time: e.time,
        response: e.response,
        verdict: e.verdict,
        ingress: false,
        udp: e.udp,
        client: e.client,
        server: e.server,
        client_identity: e.client_identity,
        server_identity: e.server_identity,
        latency_ns: e.latency_ns,
    };
    access_log_flow(&parties, flow::layer7::Record::Dns(dns), summary, dir)
}

/// Who talked to whom, for any access log record.
struct Parties {
    time: SystemTime,
    response: bool,
    verdict: L7Verdict,
    ingress: bool,
    udp: bool,
    client: SocketAddrV4,
    server: SocketAddrV4,
    client_identity: u32,
    server_identity: u32,
    latency_ns: u64,
}

fn access_log_flow(
    e: &Parties,
    record: flow::layer7::Record,
    summary: String,
    dir: &Directory,
) -> flow::Flow {
    let (src, src_id, dst, dst_id) = if e.response {
        (e.server, e.server_identity, e.client, e.client_identity)
    } else {
        (e.client, e.client_identity, e.server, e.server_identity)
    };
    let kind = if e.response { flow::L7FlowType::Response } else { flow::L7FlowType::Request };
    let verdict = match e.verdict {
        L7Verdict::Forwarded => flow::Verdict::Forwarded,
        L7Verdict::Dropped => flow::Verdict::Dropped,
        L7Verdict::Error => flow::Verdict::Error,
    };
    let (source_port, destination_port) = (src.port() as u32, dst.port() as u32);
    let protocol = if e.udp {
        flow::layer4::Protocol::Udp(flow::Udp { source_port, destination_port })
    } else {
        flow::layer4::Protocol::Tcp(flow::Tcp { source_port, destination_port, flags: None })
    };
    #[allow(deprecated)]
    flow::Flow {
        time: Some(timestamp(e.time)),
        verdict: verdict as i32,
        ip: Some(flow::Ip {
            source: src.ip().to_string(),
            destination: dst.ip().to_string(),
            ip_version: flow::IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(flow::Layer4 { protocol: Some(protocol) }),
        source: Some(dir.flow_endpoint(*src.ip(), src_id)),
        destination: Some(dir.flow_endpoint(*dst.ip(), dst_id)),
        source_names: dir.names_of(*src.ip()),
        destination_names: dir.names_of(*dst.ip()),
        r#type: flow::FlowType::L7 as i32,
        node_name: dir.node_name.clone(),
        l7: Some(flow::Layer7 { r#type: kind as i32, latency_ns: e.latency_ns, record: Some(record) }),
        event_type: Some(flow::CiliumEventType { r#type: MESSAGE_TYPE_ACCESS_LOG, sub_type: 0 }),
        traffic_direction: if e.ingress {
            flow::TrafficDirection::Ingress
        } else {
            flow::TrafficDirection::Egress
        } as i32,
        is_reply: Some(e.response),
        summary,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn event(response: bool) -> L7Event {
        L7Event {
            time: SystemTime::now(),
            response,
            verdict: L7Verdict::Forwarded,
            ingress: true,
            client: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000),
            server: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 80),
            client_identity: 256,
            server_identity: 257,
            code: if response { 200 } else { 0 },
            method: "GET".into(),
            url: "http://web/public".into(),
            protocol: "HTTP/1.1".into(),
            headers: vec![("user-agent".into(), "curl".into())],
            latency_ns: 5,
        }
    }

    #[test]
    fn requests_go_client_to_server_and_responses_back_as_replies() {
        let dir = Directory::new("node");
        let req = l7_flow(&event(false), &dir);
        assert_eq!(req.r#type(), flow::FlowType::L7);
        assert_eq!(req.event_type.as_ref().map(|t| t.r#type), Some(129));
        assert_eq!(req.ip.as_ref().unwrap().source, "10.0.0.2");
        assert_eq!(req.source.as_ref().unwrap().identity, 256);
        assert_eq!(req.is_reply, Some(false));
        assert_eq!(req.l7.as_ref().unwrap().r#type(), flow::L7FlowType::Request);
        let resp = l7_flow(&event(true), &dir);
        assert_eq!(resp.ip.as_ref().unwrap().source, "10.0.0.3");
        assert_eq!(resp.destination.as_ref().unwrap().identity, 256);
        assert_eq!(resp.is_reply, Some(true));
        let l7 = resp.l7.as_ref().unwrap();
        assert_eq!(l7.latency_ns, 5);
        let Some(flow::layer7::Record::Http(http)) = &l7.record else { panic!() };
        assert_eq!((http.code, http.method.as_str(), http.url.as_str()), (200, "GET", "http://web/public"));
        assert_eq!(http.headers[0].key, "user-agent");
    }
}
