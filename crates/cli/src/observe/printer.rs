//! Hubble's flow printer (`hubble/pkg/printer`): compact, dict, table and
//! JSON output of GetFlowsResponse items, with Cilium's names for event
//! types, trace observation points, drop reasons and reserved identities.

#![allow(deprecated)] // Flow.Summary and Layer7.kafka are deprecated but printed, as Hubble does.

use std::io::{self, Write};

use twill_observe_proto::{
    flow::{self, layer4::Protocol, layer7::Record},
    observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
    relay,
};

use super::{json, timefmt};

/// Cilium monitor message types (`pkg/monitor/api`), as found in
/// `Flow.event_type.type` and `EventTypeFilter.type`.
pub const MESSAGE_TYPE_DROP: i32 = 1;
pub const MESSAGE_TYPE_DEBUG: i32 = 2;
pub const MESSAGE_TYPE_CAPTURE: i32 = 3;
pub const MESSAGE_TYPE_TRACE: i32 = 4;
pub const MESSAGE_TYPE_POLICY_VERDICT: i32 = 5;
pub const MESSAGE_TYPE_RECORDER: i32 = 6;
pub const MESSAGE_TYPE_TRACE_SOCK: i32 = 7;
pub const MESSAGE_TYPE_L7: i32 = 129;
pub const MESSAGE_TYPE_AGENT: i32 = 130;

/// `monitorAPI.MessageTypeNames`: the names `--type` accepts.
pub const MESSAGE_TYPE_NAMES: &[(&str, i32)] = &[
    ("drop", MESSAGE_TYPE_DROP),
    ("debug", MESSAGE_TYPE_DEBUG),
    ("capture", MESSAGE_TYPE_CAPTURE),
    ("trace", MESSAGE_TYPE_TRACE),
    ("policy-verdict", MESSAGE_TYPE_POLICY_VERDICT),
    ("recorder", MESSAGE_TYPE_RECORDER),
    ("trace-sock", MESSAGE_TYPE_TRACE_SOCK),
    ("l7", MESSAGE_TYPE_L7),
    ("agent", MESSAGE_TYPE_AGENT),
];

/// `monitorAPI.TraceObservationPoints`: trace event sub types (the
/// datapath's TRACE_* numbers, which is what `event_type.sub_type` holds).
pub const TRACE_OBSERVATION_POINTS: &[(i32, &str)] = &[
    (0, "to-endpoint"),
    (1, "to-proxy"),
    (2, "to-host"),
    (3, "to-stack"),
    (4, "to-overlay"),
    (5, "from-endpoint"),
    (6, "from-proxy"),
    (7, "from-host"),
    (8, "from-stack"),
    (9, "from-overlay"),
    (10, "from-network"),
    (11, "to-network"),
    (12, "from-crypto"),
    (13, "to-crypto"),
];

/// Agent event sub types `--type agent:...` accepts (Hubble's
/// `agentEventSubtypes`).
pub const AGENT_EVENT_SUBTYPES: &[(&str, i32)] = &[
    ("unspecified", 0),
    ("message", 1),
    ("agent-started", 2),
    ("endpoint-regenerate-success", 3),
    ("endpoint-regenerate-failure", 4),
    ("policy-updated", 5),
    ("policy-deleted", 6),
    ("endpoint-created", 7),
    ("endpoint-deleted", 8),
    ("ipcache-upserted", 9),
    ("ipcache-deleted", 10),
];

/// Cilium's drop reason texts (`pkg/monitor/api/drop.go`).
const DROP_REASONS: &[(u8, &str)] = &[
    (0, "Success"),
    (2, "Invalid packet"),
    (3, "Interface"),
    (4, "Interface Decrypted"),
    (5, "LB, sock cgroup: No backend slot entry found"),
    (6, "LB, sock cgroup: No backend entry found"),
    (7, "LB, sock cgroup: Reverse entry update failed"),
    (8, "LB, sock cgroup: Reverse entry stale"),
    (9, "Fragmented packet"),
    (10, "Fragmented packet entry update failed"),
    (11, "Missed tail call to custom program"),
    (130, "Invalid source mac"),
    (131, "Invalid destination mac"),
    (132, "Invalid source ip"),
    (133, "Policy denied"),
    (134, "Invalid packet"),
    (135, "CT: Truncated or invalid header"),
    (136, "Fragmentation needed"),
    (137, "CT: Unknown L4 protocol"),
    (138, "CT: Can't create entry from packet"),
    (139, "Unsupported L3 protocol"),
    (140, "Missed tail call"),
    (141, "Error writing to packet"),
    (142, "Unknown L4 protocol"),
    (143, "Unknown ICMPv4 code"),
    (144, "Unknown ICMPv4 type"),
    (145, "Unknown ICMPv6 code"),
    (146, "Unknown ICMPv6 type"),
    (147, "Error retrieving tunnel key"),
    (148, "Error retrieving tunnel options"),
    (149, "Invalid Geneve option"),
    (150, "Unknown L3 target address"),
    (151, "Stale or unroutable IP"),
    (152, "No matching local container found"),
    (153, "Error while correcting L3 checksum"),
    (154, "Error while correcting L4 checksum"),
    (155, "CT: Map insertion failed"),
    (156, "Invalid IPv6 extension header"),
    (157, "IP fragmentation not supported"),
    (158, "Service backend not found"),
    (160, "No tunnel/encapsulation endpoint (datapath BUG!)"),
    (161, "NAT 46/64 not enabled"),
    (162, "Reached EDT rate-limiting drop horizon"),
    (163, "Unknown connection tracking state"),
    (164, "Local host is unreachable"),
    (165, "No configuration available to perform policy decision"),
    (166, "Unsupported L2 protocol"),
    (167, "No mapping for NAT masquerade"),
    (168, "Unsupported protocol for NAT masquerade"),
    (169, "FIB lookup failed"),
    (170, "Encapsulation traffic is prohibited"),
    (171, "Invalid identity"),
    (172, "Unknown sender"),
    (173, "NAT not needed"),
    (174, "Is a ClusterIP"),
    (175, "First logical datagram fragment not found"),
    (176, "Forbidden ICMPv6 message"),
    (177, "Denied by LB src range check"),
    (178, "Socket lookup failed"),
    (179, "Socket assign failed"),
    (180, "Proxy redirection not supported for protocol"),
    (181, "Policy denied by denylist"),
    (182, "VLAN traffic disallowed by VLAN filter"),
    (183, "Incorrect VNI from VTEP"),
    (184, "Failed to update or lookup TC buffer"),
    (185, "No SID was found for the IP address"),
    (186, "SRv6 state was removed during tail call"),
    (187, "L3 translation from IPv4 to IPv6 failed (NAT46)"),
    (188, "L3 translation from IPv6 to IPv4 failed (NAT64)"),
    (189, "Authentication required"),
    (190, "No conntrack map found"),
    (191, "No nat map found"),
    (192, "Invalid ClusterID"),
    (193, "Unsupported packet protocol for DSR encapsulation"),
    (194, "No egress gateway found"),
    (195, "Traffic is unencrypted"),
    (196, "TTL exceeded"),
    (197, "No node ID found"),
    (198, "Rate limited"),
    (199, "IGMP handled"),
    (200, "IGMP subscribed"),
    (201, "Multicast handled"),
    (202, "Host datapath not ready"),
    (203, "Endpoint policy program not available"),
    (204, "No Egress IP configured"),
    (205, "Punt to proxy"),
];

/// Cilium's reserved security identities (`pkg/identity`).
pub const RESERVED_IDENTITIES: &[(u32, &str)] = &[
    (0, "unknown"),
    (1, "host"),
    (2, "world"),
    (3, "unmanaged"),
    (4, "health"),
    (5, "init"),
    (6, "remote-node"),
    (7, "kube-apiserver"),
    (8, "ingress"),
    (9, "world-ipv4"),
    (10, "world-ipv6"),
    (11, "encrypted-overlay"),
];

/// `monitorAPI.DropReason`: the text of a drop code, `"<code>, 0"` when
/// unknown.
pub fn drop_reason_text(code: u8) -> String {
    match DROP_REASONS.iter().find(|(c, _)| *c == code) {
        Some((_, text)) => (*text).to_string(),
        None => format!("{code}, 0"),
    }
}

fn trace_observation_point(point: u8) -> String {
    match TRACE_OBSERVATION_POINTS.iter().find(|(p, _)| *p == i32::from(point)) {
        Some((_, name)) => (*name).to_string(),
        None => point.to_string(),
    }
}

fn policy_match_type(m: u32) -> &'static str {
    match m {
        0 => "none",
        1 => "L3-Only",
        2 => "L3-L4",
        3 => "L4-Only",
        4 => "all",
        5 => "L3-Proto",
        6 => "Proto-Only",
        _ => "unknown",
    }
}

macro_rules! enum_str {
    ($ty:ty, $v:expr) => {
        match <$ty>::try_from($v) {
            Ok(e) => e.as_str_name().to_string(),
            Err(_) => $v.to_string(),
        }
    };
}

/// `printer.GetFlowType`: the TYPE column.
pub fn flow_type(f: &flow::Flow) -> String {
    if let Some(l7) = &f.l7 {
        let mut l7_type = enum_str!(flow::L7FlowType, l7.r#type).to_lowercase();
        let protocol = match &l7.record {
            Some(Record::Http(_)) => "http",
            Some(Record::Dns(d)) => {
                l7_type = format!("{l7_type} {}", d.observation_source);
                "dns"
            }
            Some(Record::Kafka(_)) => "kafka",
            None => "l7",
        };
        return format!("{protocol}-{l7_type}");
    }
    let (event_type, sub_type) = f.event_type.as_ref().map_or((0, 0), |e| (e.r#type, e.sub_type));
    match event_type {
        MESSAGE_TYPE_TRACE => trace_observation_point(sub_type as u8),
        MESSAGE_TYPE_DROP => drop_reason_text(sub_type as u8),
        MESSAGE_TYPE_POLICY_VERDICT => format!(
            "policy-verdict:{} {}",
            policy_match_type(f.policy_match_type),
            enum_str!(flow::TrafficDirection, f.traffic_direction)
        ),
        MESSAGE_TYPE_CAPTURE => enum_str!(flow::DebugCapturePoint, f.debug_capture_point),
        MESSAGE_TYPE_TRACE_SOCK => match flow::SocketTranslationPoint::try_from(f.sock_xlate_point) {
            Ok(flow::SocketTranslationPoint::SockXlatePointPostDirectionFwd) => "post-xlate-fwd".into(),
            Ok(flow::SocketTranslationPoint::SockXlatePointPostDirectionRev) => "post-xlate-rev".into(),
            Ok(flow::SocketTranslationPoint::SockXlatePointPreDirectionFwd) => "pre-xlate-fwd".into(),
            Ok(flow::SocketTranslationPoint::SockXlatePointPreDirectionRev) => "pre-xlate-rev".into(),
            _ => enum_str!(flow::SocketTranslationPoint, f.sock_xlate_point),
        },
        _ => "UNKNOWN".into(),
    }
}

/// The VERDICT column; policy verdict events say ALLOWED/DENIED/AUDITED.
fn verdict(f: &flow::Flow) -> String {
    let policy_verdict = f.event_type.as_ref().is_some_and(|e| e.r#type == MESSAGE_TYPE_POLICY_VERDICT);
    match flow::Verdict::try_from(f.verdict) {
        Ok(flow::Verdict::Forwarded | flow::Verdict::Redirected) if policy_verdict => "ALLOWED".into(),
        Ok(flow::Verdict::Dropped | flow::Verdict::Error) if policy_verdict => "DENIED".into(),
        Ok(flow::Verdict::Audit) if policy_verdict => "AUDITED".into(),
        _ => enum_str!(flow::Verdict, f.verdict),
    }
}

/// The SUMMARY column: the server's summary, plus the trace id and the
/// authentication type when set.
fn summary(f: &flow::Flow) -> String {
    let mut s = String::new();
    if let Some(t) = f.ip_trace_id.as_ref().filter(|t| t.trace_id > 0) {
        s.push_str(&format!("IP Trace ID: {}; ", t.trace_id));
    }
    s.push_str(&f.summary);
    if f.auth_type != flow::AuthType::Disabled as i32 {
        s.push_str("; ");
        s.push_str(&enum_str!(flow::AuthType, f.auth_type));
    }
    s
}

fn identity(id: u32) -> String {
    match RESERVED_IDENTITIES.iter().find(|(n, _)| *n == id) {
        Some((_, name)) => format!("({name})"),
        None => format!("(ID:{id})"),
    }
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn ports(f: &flow::Flow) -> (String, String) {
    match f.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => (t.source_port.to_string(), t.destination_port.to_string()),
        Some(Protocol::Udp(u)) => (u.source_port.to_string(), u.destination_port.to_string()),
        Some(Protocol::Sctp(s)) => (s.source_port.to_string(), s.destination_port.to_string()),
        _ => (String::new(), String::new()),
    }
}

/// How output is printed: the `-o` format and the formatting flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Compact,
    Dict,
    Json,
    Table,
}

#[derive(Debug, Clone, Copy)]
pub struct PrintOptions {
    pub format: Format,
    pub node_name: bool,
    pub ip_translation: bool,
    /// Also show informational node status events (Hubble's `--debug`).
    pub debug: bool,
}

/// Writes GetFlowsResponse items the way `hubble observe` does: flows and
/// lost events to `out`, node status events to `err`.
pub struct Printer<W: Write, E: Write> {
    opts: PrintOptions,
    out: W,
    err: E,
    line: usize,
    /// Table rows, aligned and written by `finish` (Go's tabwriter).
    rows: Vec<Vec<String>>,
}

impl<W: Write, E: Write> Printer<W, E> {
    pub fn new(opts: PrintOptions, out: W, err: E) -> Self {
        Printer { opts, out, err, line: 0, rows: Vec::new() }
    }

    /// `printer.Hostname`: pod, service or DNS names instead of the address
    /// when known, with the port when there is one.
    fn hostname(&self, ip: &str, port: &str, ns: &str, pod: &str, svc: &str, names: &[String]) -> String {
        let mut host = ip.to_string();
        if self.opts.ip_translation {
            let join = |name: &str| if ns.is_empty() { name.to_string() } else { format!("{ns}/{name}") };
            if !pod.is_empty() {
                host = join(pod);
            } else if !svc.is_empty() {
                host = join(svc);
            } else if !names.is_empty() {
                host = names.join(",");
            }
        }
        if !port.is_empty() && port != "0" {
            join_host_port(&host, port)
        } else {
            host
        }
    }

    /// `printer.GetHostNames`: the SOURCE and DESTINATION columns.
    pub fn host_names(&self, f: &flow::Flow) -> (String, String) {
        let Some(ip) = &f.ip else {
            return match &f.ethernet {
                Some(eth) => (eth.source.clone(), eth.destination.clone()),
                None => (String::new(), String::new()),
            };
        };
        let side = |ep: Option<&flow::Endpoint>, svc: Option<&flow::Service>| {
            let (mut ns, pod) =
                ep.map_or((String::new(), String::new()), |e| (e.namespace.clone(), e.pod_name.clone()));
            let mut svc_name = String::new();
            if let Some(s) = svc {
                ns = s.namespace.clone();
                svc_name = s.name.clone();
            }
            (ns, pod, svc_name)
        };
        let (src_ns, src_pod, src_svc) = side(f.source.as_ref(), f.source_service.as_ref());
        let (dst_ns, dst_pod, dst_svc) = side(f.destination.as_ref(), f.destination_service.as_ref());
        let (src_port, dst_port) = ports(f);
        (
            self.hostname(&ip.source, &src_port, &src_ns, &src_pod, &src_svc, &f.source_names),
            self.hostname(&ip.destination, &dst_port, &dst_ns, &dst_pod, &dst_svc, &f.destination_names),
        )
    }

    /// One compact line, without the newline.
    pub fn compact_line(&self, f: &flow::Flow) -> String {
        let (mut src, mut dst) = self.host_names(f);
        let mut src_id = identity(f.source.as_ref().map_or(0, |e| e.identity));
        let mut dst_id = identity(f.destination.as_ref().map_or(0, |e| e.identity));
        let arrow = match f.is_reply {
            None => "<>",
            Some(true) => {
                std::mem::swap(&mut src, &mut dst);
                std::mem::swap(&mut src_id, &mut dst_id);
                "<-"
            }
            Some(false) => "->",
        };
        let node = if self.opts.node_name { format!(" [{}]", f.node_name) } else { String::new() };
        format!(
            "{}{node}: {src} {src_id} {arrow} {dst} {dst_id} {} {} ({})",
            timefmt::stamp_milli(f.time.as_ref()),
            flow_type(f),
            verdict(f),
            summary(f)
        )
    }

    pub fn write(&mut self, r: &GetFlowsResponse) -> io::Result<()> {
        match &r.response_types {
            Some(ResponseTypes::Flow(f)) => self.write_flow(r, f),
            Some(ResponseTypes::NodeStatus(s)) => self.write_node_status(r, s),
            Some(ResponseTypes::LostEvents(l)) => self.write_lost_event(r, l),
            None => Ok(()),
        }
    }

    fn write_flow(&mut self, r: &GetFlowsResponse, f: &flow::Flow) -> io::Result<()> {
        match self.opts.format {
            Format::Json => {
                writeln!(self.out, "{}", json::get_flows_response(r))?;
                return Ok(());
            }
            Format::Compact => {
                let line = self.compact_line(f);
                writeln!(self.out, "{line}")?;
            }
            Format::Dict => {
                let (src, dst) = self.host_names(f);
                if self.line != 0 {
                    writeln!(self.out, "------------")?;
                }
                writeln!(self.out, "  TIMESTAMP: {}", timefmt::stamp_milli(f.time.as_ref()))?;
                if self.opts.node_name {
                    writeln!(self.out, "       NODE: {}", f.node_name)?;
                }
                writeln!(self.out, "     SOURCE: {src}")?;
                writeln!(self.out, "DESTINATION: {dst}")?;
                writeln!(self.out, "       TYPE: {}", flow_type(f))?;
                writeln!(self.out, "    VERDICT: {}", verdict(f))?;
                writeln!(self.out, "    SUMMARY: {}", summary(f))?;
            }
            Format::Table => {
                self.table_header();
                let (src, dst) = self.host_names(f);
                let mut row = vec![timefmt::stamp_milli(f.time.as_ref())];
                if self.opts.node_name {
                    row.push(f.node_name.clone());
                }
                row.extend([src, dst, flow_type(f), verdict(f), summary(f)]);
                self.rows.push(row);
            }
        }
        self.line += 1;
        Ok(())
    }

    fn table_header(&mut self) {
        if self.line == 0 {
            let mut header = vec!["TIMESTAMP".to_string()];
            if self.opts.node_name {
                header.push("NODE".into());
            }
            header.extend(["SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"].map(String::from));
            self.rows.push(header);
        }
    }

    fn write_lost_event(&mut self, r: &GetFlowsResponse, l: &flow::LostEvent) -> io::Result<()> {
        let source = enum_str!(flow::LostEventSource, l.source);
        let cpu = l.cpu.unwrap_or(0);
        match self.opts.format {
            Format::Json => {
                writeln!(self.out, "{}", json::get_flows_response(r))?;
                return Ok(());
            }
            Format::Compact => writeln!(self.out, "EVENTS LOST: {source} CPU({cpu}) {}", l.num_events_lost)?,
            Format::Dict => {
                if self.line != 0 {
                    writeln!(self.out, "------------")?;
                }
                writeln!(self.out, "  TIMESTAMP: ")?;
                if self.opts.node_name {
                    writeln!(self.out, "       NODE: ")?;
                }
                writeln!(self.out, "     SOURCE: {source}")?;
                writeln!(self.out, "       TYPE: EVENTS LOST")?;
                writeln!(self.out, "    VERDICT: ")?;
                writeln!(self.out, "    SUMMARY: CPU({cpu}) - {}", l.num_events_lost)?;
            }
            Format::Table => {
                self.table_header();
                let mut row = vec![String::new()];
                if self.opts.node_name {
                    row.push(String::new());
                }
                row.extend([
                    source,
                    String::new(),
                    "EVENTS LOST".into(),
                    String::new(),
                    format!("CPU({cpu}) - {}", l.num_events_lost),
                ]);
                self.rows.push(row);
            }
        }
        self.line += 1;
        Ok(())
    }

    /// Node status events (from a relay) go to stderr; without `debug` only
    /// errors and unavailable nodes are shown.
    fn write_node_status(&mut self, r: &GetFlowsResponse, s: &relay::NodeStatusEvent) -> io::Result<()> {
        let state = relay::NodeState::try_from(s.state_change);
        if !self.opts.debug
            && !matches!(state, Ok(relay::NodeState::NodeError | relay::NodeState::NodeUnavailable))
        {
            return Ok(());
        }
        let names = join_with_cut_off(&s.node_names, ", ", 50);
        let ts = timefmt::stamp_milli(r.time.as_ref());
        match self.opts.format {
            Format::Json => writeln!(self.err, "{}", json::get_flows_response(r))?,
            Format::Dict => {
                if self.line != 0 {
                    writeln!(self.err, "------------")?;
                } else {
                    self.line += 1;
                }
                let message = if s.message.is_empty() { "N/A".into() } else { format!("{:?}", s.message) };
                writeln!(self.err, "  TIMESTAMP: {ts}")?;
                writeln!(self.err, "      STATE: {}", enum_str!(relay::NodeState, s.state_change))?;
                writeln!(self.err, "      NODES: {names}")?;
                writeln!(self.err, "    MESSAGE: {message}")?;
            }
            Format::Compact | Format::Table => {
                let n = s.node_names.len();
                let prefix = format!("{ts} [{}]", r.node_name);
                let msg = match state {
                    Ok(relay::NodeState::NodeConnected) => {
                        format!("{prefix}: Receiving flows from {n} nodes: {names}")
                    }
                    Ok(relay::NodeState::NodeUnavailable) => {
                        format!("{prefix}: {n} nodes are unavailable: {names}")
                    }
                    Ok(relay::NodeState::NodeGone) => {
                        format!("{prefix}: {n} nodes removed from cluster: {names}")
                    }
                    Ok(relay::NodeState::NodeError) => {
                        format!("{prefix}: Error {:?} on {n} nodes: {names}", s.message)
                    }
                    _ => format!("{prefix}: unknown node status event: {s:?}"),
                };
                writeln!(self.err, "{msg}")?;
            }
        }
        Ok(())
    }

    /// Writes what is still pending (the aligned table) and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.rows.is_empty() {
            let text = tabwrite(&self.rows);
            self.rows.clear();
            self.out.write_all(text.as_bytes())?;
        }
        self.out.flush()
    }

    /// Flushes what has been written (not pending table rows).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    #[cfg(test)]
    pub fn into_inner(self) -> (W, E) {
        (self.out, self.err)
    }
}

/// Go's `tabwriter.NewWriter(w, 2, 0, 3, ' ', 0)` over rows whose cells are
/// tab-terminated except the last: every column but the last is padded to
/// its widest cell plus 3 spaces (at least 2).
pub fn tabwrite(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![2usize; columns.saturating_sub(1)];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count() + 3);
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                out.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

/// Hubble's `joinWithCutOff`: joins names until about `target` characters,
/// then says how many were left out.
fn join_with_cut_off(elems: &[String], sep: &str, target: usize) -> String {
    let mut len = 0;
    let mut end = elems.len();
    for (i, e) in elems.iter().enumerate() {
        len += e.len() + sep.len();
        if len > target && i > 0 {
            end = i;
            break;
        }
    }
    let joined = elems[..end].join(sep);
    if end == elems.len() {
        joined
    } else {
        format!("{joined} (and {} more)", elems.len() - end)
    }
}
