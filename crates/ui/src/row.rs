//! One flow as a row of the page's table: only what the table shows.

use serde::Serialize;
use twill_observe_proto::flow::{self, layer4::Protocol, layer7::Record, Endpoint, Flow};

use crate::map::{node_of, port_protocol, verdict_name};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Side {
    pub namespace: String,
    pub pod: String,
    pub ip: String,
    pub port: u32,
    pub identity: u32,
    /// The map node this side belongs to, so a click on a node filters rows.
    pub node: String,
    /// For the label filter only; the table does not show them.
    #[serde(skip)]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    pub node_name: String,
    pub source: Side,
    pub destination: Side,
    pub protocol: &'static str,
    pub port: u32,
    /// The map edge (request direction) this flow counts towards.
    pub edge: String,
    pub verdict: &'static str,
    pub drop_reason: String,
    pub tcp_flags: String,
    pub l7: String,
    pub is_reply: bool,
}

fn side(ep: Option<&Endpoint>, ip: String, port: u32) -> Side {
    let ep = ep.cloned().unwrap_or_default();
    Side {
        node: node_of(&ep).map(|n| n.id).unwrap_or_default(),
        namespace: ep.namespace,
        pod: ep.pod_name,
        ip,
        port,
        identity: ep.identity,
        labels: ep.labels,
    }
}

fn tcp_flags(f: &flow::TcpFlags) -> String {
    let names = [
        (f.syn, "SYN"),
        (f.ack, "ACK"),
        (f.fin, "FIN"),
        (f.rst, "RST"),
        (f.psh, "PSH"),
        (f.urg, "URG"),
        (f.ece, "ECE"),
        (f.cwr, "CWR"),
        (f.ns, "NS"),
    ];
    names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect::<Vec<_>>().join(",")
}

fn l7(f: &Flow) -> String {
    match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
        Some(Record::Http(h)) => {
            let code = if h.code != 0 { format!(" {}", h.code) } else { String::new() };
            format!("HTTP {} {}{}", h.method, h.url, code).trim_end().to_string()
        }
        Some(Record::Dns(d)) => format!("DNS {} {}", d.query, d.ips.join(",")).trim_end().to_string(),
        _ => String::new(),
    }
}

impl Row {
    pub fn new(seq: u64, f: &Flow) -> Row {
        let (sport, dport, flags) = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
            Some(Protocol::Tcp(t)) => {
                (t.source_port, t.destination_port, t.flags.as_ref().map(tcp_flags).unwrap_or_default())
            }
            Some(Protocol::Udp(u)) => (u.source_port, u.destination_port, String::new()),
            Some(Protocol::Sctp(s)) => (s.source_port, s.destination_port, String::new()),
            _ => (0, 0, String::new()),
        };
        let (port, protocol) = port_protocol(f);
        let ip = f.ip.clone().unwrap_or_default();
        let source = side(f.source.as_ref(), ip.source, sport);
        let destination = side(f.destination.as_ref(), ip.destination, dport);
        let reply = f.is_reply.unwrap_or(false);
        let (from, to, svc_port) = if reply {
            (&destination.node, &source.node, sport)
        } else {
            (&source.node, &destination.node, port)
        };
        let drop_reason = if f.drop_reason_desc != 0 {
            flow::DropReason::try_from(f.drop_reason_desc)
                .map(|d| d.as_str_name().to_string())
                .unwrap_or_else(|_| f.drop_reason_desc.to_string())
        } else {
            String::new()
        };
        Row {
            seq,
            time_ms: f.time.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000).unwrap_or(0),
            node_name: f.node_name.clone(),
            edge: format!("{from}>{to}:{svc_port}/{protocol}"),
            source,
            destination,
            protocol,
            port,
            verdict: verdict_name(f.verdict),
            drop_reason,
            tcp_flags: flags,
            l7: l7(f),
            is_reply: reply,
        }
    }
}
