//! Hubble's flow printer (`hubble/pkg/printer`): compact, dict, table and
//! JSON output of GetFlowsResponse items, with Cilium's names for event
//! types, trace observation points, drop reasons and reserved identities.

#![allow(deprecated)] // Flow.Summary and Layer7.kafka are deprecated but printed, as Hubble does.

use std::io::{self, Write};

use twill_numbers::{
    policy_match_name, reserved_identity_name, trace_point_name, MESSAGE_TYPE_CAPTURE, MESSAGE_TYPE_DROP,
    MESSAGE_TYPE_POLICY_VERDICT, MESSAGE_TYPE_TRACE, MESSAGE_TYPE_TRACE_SOCK,
};
use twill_observe_proto::{
    flow::{self, layer4::Protocol, layer7::Record},
    observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
    relay,
};

use super::{json, timefmt};

/// `monitorAPI.DropReason`: the text of a drop code, `"<code>, 0"` when
/// unknown.
pub fn drop_reason_text(code: u8) -> String {
    twill_numbers::drop_reason_text(code).map_or_else(|| format!("{code}, 0"), str::to_string)
}

fn trace_observation_point(point: u8) -> String {
    trace_point_name(point).map_or_else(|| point.to_string(), str::to_string)
}

fn policy_match_type(m: u32) -> &'static str {
    policy_match_name(m).unwrap_or("unknown")
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
    match reserved_identity_name(id) {
        Some(name) => format!("({name})"),
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
