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
    let (src, src_id, dst, dst_id) = if e.response {
        (e.server, e.server_identity, e.client, e.client_identity)
    } else {
        (e.client, e.client_identity, e.server, e.server_identity)
    };
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
    let kind = if e.response { flow::L7FlowType::Response } else { flow::L7FlowType::Request };
    let verdict = match e.verdict {
        L7Verdict::Forwarded => flow::Verdict::Forwarded,
        L7Verdict::Dropped => flow::Verdict::Dropped,
        L7Verdict::Error => flow::Verdict::Error,
    };
    let summary = if e.response {
        format!("{} {} {} {}", e.protocol, e.code, e.method, e.url)
    } else {
        format!("{} {} {}", e.protocol, e.method, e.url)
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
        l4: Some(flow::Layer4 {
            protocol: Some(flow::layer4::Protocol::Tcp(flow::Tcp {
                source_port: src.port() as u32,
                destination_port: dst.port() as u32,
                flags: None,
            })),
        }),
        source: Some(dir.flow_endpoint(*src.ip(), src_id)),
        destination: Some(dir.flow_endpoint(*dst.ip(), dst_id)),
        r#type: flow::FlowType::L7 as i32,
        node_name: dir.node_name.clone(),
        l7: Some(flow::Layer7 {
            r#type: kind as i32,
            latency_ns: e.latency_ns,
            record: Some(flow::layer7::Record::Http(http)),
        }),
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
