//! Filter flags to FlowFilters, as `hubble observe` builds them
//! (`hubble/cmd/observe/flows_filter.go`).
//!
//! Flags are applied in command-line order. Each filter list (whitelist,
//! or blacklist for a flag preceded by `--not`) is tracked as two
//! FlowFilters, `left` and `right`, that are OR-ed: an "either" flag
//! (`--pod`, `--ip`, `--label`, `--port`, `--identity`, `--fqdn`,
//! `--service`, `--workload`, `--cluster`, `--namespace`) puts its source_*
//! form in `left` and its destination_* form in `right`; every other flag
//! goes into both. Different fields of one FlowFilter are AND-ed, repeated
//! values of one field OR-ed. When `left` and `right` end up equal only one
//! is sent.

use twill_observe_proto::flow::{
    self, flow_filter::Experimental, EventTypeFilter, FlowFilter, HttpHeader, NetworkInterface, TcpFlags,
    Workload,
};

use twill_numbers::{
    agent_event_subtype_by_name, message_type_by_name, reserved_identity_by_name, tcp_flag_by_name,
    trace_point_by_name, IDENTITY_NAMES, MESSAGE_TYPE_AGENT, MESSAGE_TYPE_TRACE, TCP_ACK, TCP_CWR, TCP_ECE,
    TCP_FIN, TCP_NS, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG,
};

/// A filter flag: its long name, short name, whether it takes no value
/// (`--not`, `-A`, `-4`), and its help.
pub struct FilterFlag {
    pub name: &'static str,
    pub short: Option<char>,
    pub no_value: bool,
    pub help: &'static str,
}

const fn flag(name: &'static str, help: &'static str) -> FilterFlag {
    FilterFlag { name, short: None, no_value: false, help }
}

const fn short(name: &'static str, short: char, help: &'static str) -> FilterFlag {
    FilterFlag { name, short: Some(short), no_value: false, help }
}

const fn switch(name: &'static str, short: Option<char>, help: &'static str) -> FilterFlag {
    FilterFlag { name, short, no_value: true, help }
}

/// Every filter flag, in `hubble observe --help` order.
pub const FILTER_FLAGS: &[FilterFlag] = &[
    switch("not", None, "Reverses the next filter to be blacklist i.e. --not --from-ip 2.2.2.2"),
    flag("uuid", "Show the only flow matching this unique flow identifier, if any"),
    flag("node-name", "Show all flows which match the given node names (e.g. \"k8s*\", \"test-cluster/*.company.com\")"),
    flag("node-label", "Show only flows observed on nodes matching the given label filter (e.g. \"key1=value1\")"),
    flag("from-cluster", "Show all flows originating from endpoints known to be in the given cluster name"),
    flag("cluster", "Show all flows which match the cluster names (e.g. \"test-cluster\", \"prod-*\")"),
    flag("to-cluster", "Show all flows destined to endpoints known to be in the given cluster name"),
    flag("protocol", "Show only flows which match the given L4/L7 flow protocol (e.g. \"udp\", \"http\")"),
    flag("tcp-flags", "Show only flows which match the given TCP flags (e.g. \"syn\", \"ack\", \"fin\")"),
    short(
        "type",
        't',
        "Filter by event types TYPE[:SUBTYPE]: capture, drop, l7, policy-verdict, trace-sock, trace \
         (subtypes from-endpoint, from-host, from-network, from-overlay, from-proxy, from-stack, \
         from-crypto, to-endpoint, to-host, to-network, to-overlay, to-proxy, to-stack, to-crypto)",
    ),
    flag(
        "verdict",
        "Show only flows with this verdict [FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED]",
    ),
    flag(
        "drop-reason-desc",
        "Show only flows which match this drop reason describe (e.g. \"POLICY_DENIED\", \"UNSUPPORTED_L3_PROTOCOL\")",
    ),
    flag("http-status", "Show only flows which match this HTTP status code prefix (e.g. \"404\", \"5+\")"),
    flag("http-method", "Show only flows which match this HTTP method (e.g. \"get\", \"post\")"),
    flag("http-path", "Show only flows which match this HTTP path regular expressions (e.g. \"/page/\\\\d+\")"),
    flag("http-url", "Show only flows which match this HTTP URL regular expressions"),
    flag("http-header", "Show only flows which match this HTTP header key:value pairs (e.g. \"foo:bar\")"),
    flag("trace-id", "Show only flows which match this trace ID"),
    flag("ip-trace-id", "Show only flows which match this IP trace ID"),
    flag("from-fqdn", "Show all flows originating at the given fully qualified domain name (e.g. \"*.cilium.io\")."),
    flag("fqdn", "Show all flows related to the given fully qualified domain name (e.g. \"*.cilium.io\")."),
    flag("to-fqdn", "Show all flows terminating at the given fully qualified domain name (e.g. \"*.cilium.io\")."),
    flag("from-ip", "Show all flows originating at the given IP address (exact, e.g. 1.1.1.1, or CIDR, e.g. 1.1.1.0/24)"),
    flag("snat-ip", "Show all flows SNATed with the given IP address (exact or CIDR)"),
    flag("ip", "Show all flows originating or terminating at the given IP address (exact or CIDR)"),
    flag("to-ip", "Show all flows terminating at the given IP address (exact or CIDR)"),
    switch("ipv4", Some('4'), "Show only IPv4 flows"),
    switch("ipv6", Some('6'), "Show only IPv6 flows"),
    flag("ip-version", "Show only IPv4, IPv6 flows or non IP flows (e.g. ARP packets) (ie: \"none\", \"v4\", \"v6\")"),
    flag(
        "from-pod",
        "Show all flows originating in the given pod name prefix ([namespace/]<pod-name>). If namespace is not provided, 'default' is used",
    ),
    flag(
        "pod",
        "Show all flows related to the given pod name prefix ([namespace/]<pod-name>). If namespace is not provided, 'default' is used",
    ),
    flag(
        "to-pod",
        "Show all flows terminating in the given pod name prefix ([namespace/]<pod-name>). If namespace is not provided, 'default' is used",
    ),
    flag("from-namespace", "Show all flows originating in the given Kubernetes namespace."),
    short("namespace", 'n', "Show all flows related to the given Kubernetes namespace."),
    flag("to-namespace", "Show all flows terminating in the given Kubernetes namespace."),
    switch("from-all-namespaces", None, "Show flows originating in any Kubernetes namespace."),
    switch("all-namespaces", Some('A'), "Show all flows in any Kubernetes namespace."),
    switch("to-all-namespaces", None, "Show flows terminating in any Kubernetes namespace."),
    flag(
        "from-label",
        "Show only flows originating in an endpoint with the given labels (e.g. \"key1=value1\", \"reserved:world\")",
    ),
    short(
        "label",
        'l',
        "Show only flows related to an endpoint with the given labels (e.g. \"key1=value1\", \"reserved:world\")",
    ),
    flag(
        "to-label",
        "Show only flows terminating in an endpoint with given labels (e.g. \"key1=value1\", \"reserved:world\")",
    ),
    flag("from-service", "Shows flows where the source IP address matches the ClusterIP address of the given service name prefix ([namespace/]<svc-name>)"),
    flag("service", "Shows flows where either the source or destination IP address matches the ClusterIP address of the given service name prefix ([namespace/]<svc-name>)"),
    flag("to-service", "Shows flows where the destination IP address matches the ClusterIP address of the given service name prefix ([namespace/]<svc-name>)"),
    flag("from-port", "Show only flows with the given source port (e.g. 8080)"),
    flag("port", "Show only flows with given port in either source or destination (e.g. 8080)"),
    flag("to-port", "Show only flows with the given destination port (e.g. 8080)"),
    flag("from-workload", "Show all flows originating at an endpoint with the given workload ([kind/]name)"),
    flag("workload", "Show all flows related to an endpoint with the given workload ([kind/]name)"),
    flag("to-workload", "Show all flows terminating at an endpoint with the given workload ([kind/]name)"),
    flag("from-identity", "Show all flows originating at an endpoint with the given security identity"),
    flag("identity", "Show all flows related to an endpoint with the given security identity"),
    flag("to-identity", "Show all flows terminating at an endpoint with the given security identity"),
    flag("traffic-direction", "Show all flows in the given traffic direction (either ingress or egress)"),
    flag("cel-expression", "Filter flows using the given CEL expression"),
    flag("interface", "Show all flows observed at the given interface name (e.g. eth0)"),
];

/// Flags that cannot be used together in one filter list (Hubble's
/// conflict groups).
const CONFLICTS: &[&[&str]] = &[
    &[
        "from-fqdn",
        "from-ip",
        "ip",
        "fqdn",
        "from-namespace",
        "namespace",
        "from-all-namespaces",
        "all-namespaces",
    ],
    &["from-fqdn", "from-ip", "ip", "fqdn", "from-pod", "pod"],
    &["to-fqdn", "to-ip", "ip", "fqdn", "to-namespace", "namespace", "to-all-namespaces", "all-namespaces"],
    &["to-fqdn", "to-ip", "ip", "fqdn", "to-pod", "pod"],
    &["to-pod", "namespace", "all-namespaces"],
    &["from-pod", "namespace", "all-namespaces"],
    &["to-service", "namespace", "all-namespaces"],
    &["from-service", "namespace", "all-namespaces"],
    &["label", "from-label"],
    &["label", "to-label"],
    &["service", "from-service"],
    &["service", "to-service"],
    &["port", "to-port"],
    &["port", "from-port"],
    &["identity", "to-identity"],
    &["identity", "from-identity"],
    &["workload", "to-workload"],
    &["workload", "from-workload"],
];

/// One filter list under construction: `left OR right`, plus the
/// namespaces that are folded into the pod/service filters at the end.
#[derive(Default)]
struct Tracker {
    left: Option<FlowFilter>,
    right: Option<FlowFilter>,
    ns: Vec<String>,
    src_ns: Vec<String>,
    dst_ns: Vec<String>,
    changed: Vec<&'static str>,
}

impl Tracker {
    fn apply(&mut self, update: impl Fn(&mut FlowFilter)) {
        update(self.left.get_or_insert_with(FlowFilter::default));
        update(self.right.get_or_insert_with(FlowFilter::default));
    }

    fn apply_left(&mut self, update: impl FnOnce(&mut FlowFilter)) {
        update(self.left.get_or_insert_with(FlowFilter::default));
    }

    fn apply_right(&mut self, update: impl FnOnce(&mut FlowFilter)) {
        update(self.right.get_or_insert_with(FlowFilter::default));
    }

    fn check_conflict(&self) -> Result<(), String> {
        for group in CONFLICTS {
            for flag in group.iter().filter(|f| self.changed.contains(f)) {
                if let Some(other) = group.iter().find(|c| *c != flag && self.changed.contains(c)) {
                    return Err(format!("filters --{flag} and --{other} cannot be combined"));
                }
            }
        }
        Ok(())
    }

    fn check_namespace_conflicts(&self, ff: Option<&FlowFilter>) -> Result<(), String> {
        let Some(ff) = ff else { return Ok(()) };
        let checks: [(&[String], &[String]); 8] = [
            (&self.ns, &ff.source_pod),
            (&self.ns, &ff.source_service),
            (&self.ns, &ff.destination_pod),
            (&self.ns, &ff.destination_service),
            (&self.src_ns, &ff.source_pod),
            (&self.src_ns, &ff.source_service),
            (&self.dst_ns, &ff.destination_pod),
            (&self.dst_ns, &ff.destination_service),
        ];
        let mut errors = Vec::new();
        for (namespaces, names) in checks {
            if let Some(e) = namespace_conflict(namespaces, names) {
                errors.push(e);
            }
        }
        for (pods, services) in
            [(&ff.source_pod, &ff.source_service), (&ff.destination_pod, &ff.destination_service)]
        {
            if let Some(e) = inconsistent_namespaces(pods, services) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }

    /// The FlowFilters of this list: `[left, right]`, or one when equal.
    fn flow_filters(mut self) -> Vec<FlowFilter> {
        if self.left.is_none()
            && self.right.is_none()
            && self.ns.is_empty()
            && self.src_ns.is_empty()
            && self.dst_ns.is_empty()
        {
            return Vec::new();
        }
        let mut left = self.left.take().unwrap_or_default();
        let mut right = self.right.take().unwrap_or_default();
        if !self.dst_ns.is_empty() {
            apply_dest_namespaces(&self.dst_ns, &mut left);
            apply_dest_namespaces(&self.dst_ns, &mut right);
        }
        if !self.src_ns.is_empty() {
            apply_source_namespaces(&self.src_ns, &mut left);
            apply_source_namespaces(&self.src_ns, &mut right);
        }
        if !self.ns.is_empty() {
            apply_source_namespaces(&self.ns, &mut left);
            apply_dest_namespaces(&self.ns, &mut right);
        }
        if left == right {
            vec![left]
        } else {
            vec![left, right]
        }
    }
}

fn namespace_of(name: &str) -> &str {
    match name.split_once('/') {
        Some((ns, _)) => ns,
        None => "",
    }
}

fn namespace_conflict(namespaces: &[String], names: &[String]) -> Option<String> {
    for ns in namespaces {
        for name in names {
            let nn = namespace_of(name);
            if !nn.is_empty() && nn != ns {
                return Some(format!("namespace conflict: {ns:?} does not contain {name:?}"));
            }
        }
    }
    None
}

fn inconsistent_namespaces(pods: &[String], services: &[String]) -> Option<String> {
    for pod in pods {
        let pod_ns = namespace_of(pod);
        if pod_ns.is_empty() {
            continue;
        }
        for svc in services {
            if namespace_of(svc) != pod_ns {
                return Some(format!("namespace of service {svc:?} conflict with pod {pod_ns:?}"));
            }
        }
    }
    None
}

/// Prefixes names without a namespace with each namespace (`ns/name`).
fn add_namespaces(names: &[String], namespaces: &[String]) -> Vec<String> {
    if namespaces.is_empty() || names.is_empty() {
        return names.to_vec();
    }
    let mut out = Vec::new();
    for name in names {
        if name.contains('/') {
            out.push(name.clone());
            continue;
        }
        for ns in namespaces {
            out.push(format!("{ns}/{name}"));
        }
    }
    out
}

fn apply_source_namespaces(namespaces: &[String], ff: &mut FlowFilter) {
    if ff.source_pod.is_empty() && ff.source_service.is_empty() {
        ff.source_pod = vec![String::new()];
    }
    ff.source_pod = add_namespaces(&ff.source_pod, namespaces);
    ff.source_service = add_namespaces(&ff.source_service, namespaces);
}

fn apply_dest_namespaces(namespaces: &[String], ff: &mut FlowFilter) {
    if ff.destination_pod.is_empty() && ff.destination_service.is_empty() {
        ff.destination_pod = vec![String::new()];
    }
    ff.destination_pod = add_namespaces(&ff.destination_pod, namespaces);
    ff.destination_service = add_namespaces(&ff.destination_service, namespaces);
}

/// `--tcp-flags SYN,ACK`.
pub fn parse_tcp_flags(value: &str) -> Result<TcpFlags, String> {
    let mut flags = TcpFlags::default();
    for f in value.split(',') {
        let field = match tcp_flag_by_name(&f.to_uppercase()) {
            Some(TCP_SYN) => &mut flags.syn,
            Some(TCP_FIN) => &mut flags.fin,
            Some(TCP_RST) => &mut flags.rst,
            Some(TCP_PSH) => &mut flags.psh,
            Some(TCP_ACK) => &mut flags.ack,
            Some(TCP_URG) => &mut flags.urg,
            Some(TCP_ECE) => &mut flags.ece,
            Some(TCP_CWR) => &mut flags.cwr,
            Some(TCP_NS) => &mut flags.ns,
            _ => return Err(format!("unknown tcp flag: {f}")),
        };
        *field = true;
    }
    Ok(flags)
}

/// `--type TYPE[:SUBTYPE]`: a Cilium monitor message type by name or
/// number, and optionally a sub type (trace observation point, agent event
/// name, or number).
pub fn parse_event_type(value: &str) -> Result<EventTypeFilter, String> {
    let (type_part, sub_part) = match value.split_once(':') {
        Some((t, s)) => (t, Some(s)),
        None => (value, None),
    };
    let known = message_type_by_name(type_part);
    let r#type = match known {
        Some(t) => t,
        None => type_part.parse::<u32>().map(|t| t as i32).map_err(|e| {
            format!(
                "unable to parse type '{type_part}', not a known type name and unable to parse as numeric value: {}",
                go_parse_error(type_part, &e)
            )
        })?,
    };
    let mut filter = EventTypeFilter { r#type, match_sub_type: false, sub_type: 0 };
    if let Some(sub) = sub_part {
        let named = match known {
            Some(MESSAGE_TYPE_TRACE) => trace_point_by_name(sub).map(i32::from),
            Some(MESSAGE_TYPE_AGENT) => agent_event_subtype_by_name(sub),
            _ => None,
        };
        filter.match_sub_type = true;
        filter.sub_type = match named {
            Some(s) => s,
            None => sub.parse::<u32>().map(|s| s as i32).map_err(|e| {
                format!(
                    "unable to parse event sub-type '{sub}', not a known sub-type name and unable to parse as numeric value: {}",
                    go_parse_error(sub, &e)
                )
            })?,
        };
    }
    Ok(filter)
}

/// Go's `strconv.ParseUint` error text.
fn go_parse_error(value: &str, e: &std::num::ParseIntError) -> String {
    let why = match e.kind() {
        std::num::IntErrorKind::PosOverflow => "value out of range",
        _ => "invalid syntax",
    };
    format!("strconv.ParseUint: parsing {value:?}: {why}")
}

/// A security identity: a reserved identity name (`world`, `host`...) or a
/// number (decimal, or `0x`/`0o`/`0b`/leading-zero forms as Go's base 0).
pub fn parse_identity(value: &str) -> Result<u32, String> {
    let err = || {
        let names: Vec<&str> = IDENTITY_NAMES.iter().map(|(_, n)| *n).collect();
        format!("invalid security identity, expected one of [{}] or a numeric value", names.join(" "))
    };
    if let Some(id) = reserved_identity_by_name(value) {
        return Ok(id);
    }
    let digits = value.replace('_', "");
    let lower = digits.to_ascii_lowercase();
    let parsed = if let Some(hex) = lower.strip_prefix("0x") {
        u32::from_str_radix(hex, 16)
    } else if let Some(bin) = lower.strip_prefix("0b") {
        u32::from_str_radix(bin, 2)
    } else if let Some(oct) = lower.strip_prefix("0o") {
        u32::from_str_radix(oct, 8)
    } else if lower.len() > 1 && lower.starts_with('0') {
        u32::from_str_radix(&lower[1..], 8)
    } else {
        lower.parse()
    };
    parsed.map_err(|_| err())
}

fn parse_workload(value: &str) -> Workload {
    match value.split_once('/') {
        None => Workload { name: value.to_string(), kind: String::new() },
        Some((kind, name)) => Workload { name: name.to_string(), kind: kind.to_string() },
    }
}

fn ip_version(value: &str) -> i32 {
    match value.to_lowercase().as_str() {
        "4" | "v4" | "ipv4" | "ip4" => flow::IpVersion::IPv4 as i32,
        "6" | "v6" | "ipv6" | "ip6" => flow::IpVersion::IPv6 as i32,
        _ => flow::IpVersion::IpNotUsed as i32,
    }
}

/// Turns filter flags, in command-line order, into the request's
/// whitelist and blacklist.
#[derive(Default)]
pub struct FilterBuilder {
    whitelist: Option<Tracker>,
    blacklist: Option<Tracker>,
    /// The next filter goes to the blacklist (a `--not` was just seen).
    blacklisting: bool,
}

impl FilterBuilder {
    /// Applies one flag occurrence (`name` without dashes).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        if name == "not" {
            if self.blacklisting {
                return Err("consecutive --not statements".into());
            }
            self.blacklisting = true;
            return Ok(());
        }
        let tracker = if std::mem::take(&mut self.blacklisting) {
            self.blacklist.get_or_insert_with(Tracker::default)
        } else {
            self.whitelist.get_or_insert_with(Tracker::default)
        };
        set(tracker, name, value)
    }

    /// The whitelist and blacklist; fails on a trailing `--not`.
    pub fn finish(self) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), String> {
        if self.blacklisting {
            return Err("trailing --not found in the arguments".into());
        }
        Ok((
            self.whitelist.map(Tracker::flow_filters).unwrap_or_default(),
            self.blacklist.map(Tracker::flow_filters).unwrap_or_default(),
        ))
    }
}

fn set(f: &mut Tracker, name: &str, val: &str) -> Result<(), String> {
    let Some(known) = FILTER_FLAGS.iter().find(|fl| fl.name == name) else {
        return Err(format!("unknown filter flag --{name}"));
    };
    if !f.changed.contains(&known.name) {
        f.changed.push(known.name);
    }
    f.check_conflict()?;

    let v = val.to_string();
    match name {
        "uuid" => f.apply(|ff| ff.uuid.push(v.clone())),
        "fqdn" => {
            f.apply_left(|ff| ff.source_fqdn.push(v.clone()));
            f.apply_right(|ff| ff.destination_fqdn.push(v.clone()));
        }
        "from-fqdn" => f.apply(|ff| ff.source_fqdn.push(v.clone())),
        "to-fqdn" => f.apply(|ff| ff.destination_fqdn.push(v.clone())),
        "pod" => {
            f.apply_left(|ff| ff.source_pod.push(v.clone()));
            f.apply_right(|ff| ff.destination_pod.push(v.clone()));
        }
        "from-pod" => f.apply(|ff| ff.source_pod.push(v.clone())),
        "to-pod" => f.apply(|ff| ff.destination_pod.push(v.clone())),
        "ip" => {
            f.apply_left(|ff| ff.source_ip.push(v.clone()));
            f.apply_right(|ff| ff.destination_ip.push(v.clone()));
        }
        "from-ip" => f.apply(|ff| ff.source_ip.push(v.clone())),
        "snat-ip" => f.apply(|ff| ff.source_ip_xlated.push(v.clone())),
        "to-ip" => f.apply(|ff| ff.destination_ip.push(v.clone())),
        "ipv4" => f.apply(|ff| ff.ip_version.push(flow::IpVersion::IPv4 as i32)),
        "ipv6" => f.apply(|ff| ff.ip_version.push(flow::IpVersion::IPv6 as i32)),
        "ip-version" => f.apply(|ff| ff.ip_version.push(ip_version(val))),
        "label" => {
            f.apply_left(|ff| ff.source_label.push(v.clone()));
            f.apply_right(|ff| ff.destination_label.push(v.clone()));
        }
        "from-label" => f.apply(|ff| ff.source_label.push(v.clone())),
        "to-label" => f.apply(|ff| ff.destination_label.push(v.clone())),
        "namespace" => f.ns.push(v),
        "from-namespace" => f.src_ns.push(v),
        "to-namespace" => f.dst_ns.push(v),
        "all-namespaces" => f.ns.push(String::new()),
        "from-all-namespaces" => f.src_ns.push(String::new()),
        "to-all-namespaces" => f.dst_ns.push(String::new()),
        "service" => {
            f.apply_left(|ff| ff.source_service.push(v.clone()));
            f.apply_right(|ff| ff.destination_service.push(v.clone()));
        }
        "from-service" => f.apply(|ff| ff.source_service.push(v.clone())),
        "to-service" => f.apply(|ff| ff.destination_service.push(v.clone())),
        "port" => {
            f.apply_left(|ff| ff.source_port.push(v.clone()));
            f.apply_right(|ff| ff.destination_port.push(v.clone()));
        }
        "from-port" => f.apply(|ff| ff.source_port.push(v.clone())),
        "to-port" => f.apply(|ff| ff.destination_port.push(v.clone())),
        "trace-id" => f.apply(|ff| ff.trace_id.push(v.clone())),
        "ip-trace-id" => {
            if val == "0" {
                return Err("invalid --ip-trace-id value; must be greater than 0".into());
            }
            let id: u64 = val
                .parse()
                .map_err(|e| format!("invalid --ip-trace-id value: {}", go_parse_error(val, &e)))?;
            f.apply(|ff| ff.ip_trace_id.push(id));
        }
        "verdict" => {
            let verdict =
                flow::Verdict::from_str_name(val).ok_or_else(|| format!("invalid --verdict value: {val}"))?;
            f.apply(|ff| ff.verdict.push(verdict as i32));
        }
        "drop-reason-desc" => {
            if val.is_empty() {
                return Err("empty --drop-reason-desc value".into());
            }
            let reason = flow::DropReason::from_str_name(val)
                .ok_or_else(|| format!("invalid --drop-reason-desc value: {val}"))?;
            f.apply(|ff| ff.drop_reason_desc.push(reason as i32));
        }
        "http-status" => f.apply(|ff| ff.http_status_code.push(v.clone())),
        "http-method" => f.apply(|ff| ff.http_method.push(v.clone())),
        "http-path" => f.apply(|ff| ff.http_path.push(v.clone())),
        "http-url" => f.apply(|ff| ff.http_url.push(v.clone())),
        "http-header" => {
            let (key, value) = val
                .split_once(':')
                .ok_or_else(|| format!("invalid http-header value {val:?}, expected name:value"))?;
            let header = HttpHeader { key: key.into(), value: value.into() };
            f.apply(|ff| ff.http_header.push(header.clone()));
        }
        "type" => {
            let event_type = parse_event_type(val)?;
            f.apply(|ff| ff.event_type.push(event_type));
        }
        "protocol" => f.apply(|ff| ff.protocol.push(v.clone())),
        "workload" => {
            let w = parse_workload(val);
            f.apply_left(|ff| ff.source_workload.push(w.clone()));
            f.apply_right(|ff| ff.destination_workload.push(w.clone()));
        }
        "from-workload" => f.apply(|ff| ff.source_workload.push(parse_workload(val))),
        "to-workload" => f.apply(|ff| ff.destination_workload.push(parse_workload(val))),
        "identity" => {
            let id = parse_identity(val)?;
            f.apply_left(|ff| ff.source_identity.push(id));
            f.apply_right(|ff| ff.destination_identity.push(id));
        }
        "from-identity" => {
            let id = parse_identity(val)?;
            f.apply(|ff| ff.source_identity.push(id));
        }
        "to-identity" => {
            let id = parse_identity(val)?;
            f.apply(|ff| ff.destination_identity.push(id));
        }
        "node-name" => f.apply(|ff| ff.node_name.push(v.clone())),
        "node-label" => f.apply(|ff| ff.node_labels.push(v.clone())),
        "cluster" => {
            f.apply_left(|ff| ff.source_cluster_name.push(v.clone()));
            f.apply_right(|ff| ff.destination_cluster_name.push(v.clone()));
        }
        "from-cluster" => f.apply(|ff| ff.source_cluster_name.push(v.clone())),
        "to-cluster" => f.apply(|ff| ff.destination_cluster_name.push(v.clone())),
        "tcp-flags" => {
            let flags = parse_tcp_flags(val)?;
            f.apply(|ff| ff.tcp_flags.push(flags));
        }
        "traffic-direction" => {
            let direction = match val.to_lowercase().as_str() {
                "ingress" => flow::TrafficDirection::Ingress,
                "egress" => flow::TrafficDirection::Egress,
                other => {
                    return Err(format!("{other}: invalid traffic direction, expected ingress or egress"))
                }
            };
            f.apply(|ff| ff.traffic_direction.push(direction as i32));
        }
        "cel-expression" => f.apply(|ff| {
            ff.experimental.get_or_insert_with(Experimental::default).cel_expression.push(v.clone())
        }),
        "interface" => {
            f.apply(|ff| ff.interface.push(NetworkInterface { index: 0, name: v.clone() }));
        }
        _ => return Err(format!("unknown filter flag --{name}")),
    }

    f.check_namespace_conflicts(f.left.as_ref())?;
    f.check_namespace_conflicts(f.right.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(flags: &[(&str, &str)]) -> (Vec<FlowFilter>, Vec<FlowFilter>) {
        let mut b = FilterBuilder::default();
        for (name, value) in flags {
            b.set(name, value).unwrap_or_else(|e| panic!("--{name} {value}: {e}"));
        }
        b.finish().unwrap()
    }

    fn build_err(flags: &[(&str, &str)]) -> String {
        let mut b = FilterBuilder::default();
        for (name, value) in flags {
            if let Err(e) = b.set(name, value) {
                return e;
            }
        }
        match b.finish() {
            Err(e) => e,
            Ok(r) => panic!("expected an error, got {r:?}"),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_flags_no_filters() {
        assert_eq!(build(&[]), (vec![], vec![]));
    }

    #[test]
    fn either_flags_make_two_ored_filters() {
        let (wl, bl) = build(&[("pod", "default/a")]);
        assert!(bl.is_empty());
        assert_eq!(
            wl,
            vec![
                FlowFilter { source_pod: strings(&["default/a"]), ..Default::default() },
                FlowFilter { destination_pod: strings(&["default/a"]), ..Default::default() },
            ]
        );
        for (flag, value, left, right) in [
            ("ip", "10.0.0.0/24", &|f: &FlowFilter| f.source_ip.clone(), &|f: &FlowFilter| {
                f.destination_ip.clone()
            }),
            ("label", "app in (a,b)", &|f: &FlowFilter| f.source_label.clone(), &|f: &FlowFilter| {
                f.destination_label.clone()
            }),
            ("port", "80", &|f: &FlowFilter| f.source_port.clone(), &|f: &FlowFilter| {
                f.destination_port.clone()
            }),
        ]
            as [(&str, &str, &dyn Fn(&FlowFilter) -> Vec<String>, &dyn Fn(&FlowFilter) -> Vec<String>); 3]
        {
            let (wl, _) = build(&[(flag, value)]);
            assert_eq!(wl.len(), 2, "--{flag}");
            assert_eq!(left(&wl[0]), vec![value.to_string()], "--{flag} left");
            assert!(right(&wl[0]).is_empty(), "--{flag} left");
            assert_eq!(right(&wl[1]), vec![value.to_string()], "--{flag} right");
            assert!(left(&wl[1]).is_empty(), "--{flag} right");
        }
        let (wl, _) = build(&[("identity", "world"), ("identity", "256")]);
        assert_eq!(
            wl,
            vec![
                FlowFilter { source_identity: vec![2, 256], ..Default::default() },
                FlowFilter { destination_identity: vec![2, 256], ..Default::default() },
            ]
        );
    }

    #[test]
    fn namespace_flag_becomes_pod_prefixes() {
        let (wl, _) = build(&[("namespace", "kube-system")]);
        assert_eq!(
            wl,
            vec![
                FlowFilter { source_pod: strings(&["kube-system/"]), ..Default::default() },
                FlowFilter { destination_pod: strings(&["kube-system/"]), ..Default::default() },
            ]
        );
        // --pod without a namespace takes the --namespace one.
        let (wl, _) = build(&[("pod", "web"), ("namespace", "shop")]);
        assert_eq!(wl[0].source_pod, strings(&["shop/web"]));
        assert_eq!(wl[1].destination_pod, strings(&["shop/web"]));
        // A bare --pod is sent as given; the server reads it as a pod name
        // prefix in namespace "default".
        let (wl, _) = build(&[("pod", "web")]);
        assert_eq!(wl[0].source_pod, strings(&["web"]));
        // --to-namespace applies to both sides, which then coincide.
        let (wl, _) = build(&[("to-namespace", "a"), ("to-namespace", "b")]);
        assert_eq!(wl, vec![FlowFilter { destination_pod: strings(&["a/", "b/"]), ..Default::default() }]);
        let (wl, _) = build(&[("all-namespaces", "true")]);
        assert_eq!(wl[0].source_pod, strings(&["/"]));
        assert_eq!(
            build_err(&[("namespace", "a"), ("pod", "b/web")]),
            "namespace conflict: \"a\" does not contain \"b/web\""
        );
        assert_eq!(
            build_err(&[("from-pod", "web"), ("namespace", "a")]),
            "filters --from-pod and --namespace cannot be combined"
        );
    }

    #[test]
    fn from_to_flags_share_one_filter_and_and() {
        let (wl, bl) = build(&[
            ("from-pod", "default/a"),
            ("to-pod", "default/b"),
            ("to-port", "80"),
            ("protocol", "tcp"),
            ("verdict", "FORWARDED"),
        ]);
        assert!(bl.is_empty());
        assert_eq!(
            wl,
            vec![FlowFilter {
                source_pod: strings(&["default/a"]),
                destination_pod: strings(&["default/b"]),
                destination_port: strings(&["80"]),
                protocol: strings(&["tcp"]),
                verdict: vec![flow::Verdict::Forwarded as i32],
                ..Default::default()
            }]
        );
        // An either flag with a both-sides flag: each side gets both.
        let (wl, _) = build(&[("ip", "10.0.0.1"), ("verdict", "DROPPED")]);
        assert_eq!(
            wl,
            vec![
                FlowFilter {
                    source_ip: strings(&["10.0.0.1"]),
                    verdict: vec![flow::Verdict::Dropped as i32],
                    ..Default::default()
                },
                FlowFilter {
                    destination_ip: strings(&["10.0.0.1"]),
                    verdict: vec![flow::Verdict::Dropped as i32],
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn repeated_flags_or_within_a_field() {
        let (wl, _) = build(&[
            ("verdict", "DROPPED"),
            ("verdict", "AUDIT"),
            ("from-ip", "10.0.0.1"),
            ("from-ip", "10.1.0.0/16"),
        ]);
        assert_eq!(
            wl,
            vec![FlowFilter {
                source_ip: strings(&["10.0.0.1", "10.1.0.0/16"]),
                verdict: vec![flow::Verdict::Dropped as i32, flow::Verdict::Audit as i32],
                ..Default::default()
            }]
        );
    }

    #[test]
    fn not_puts_the_next_filter_in_the_blacklist() {
        let (wl, bl) = build(&[("not", "true"), ("verdict", "DROPPED"), ("to-port", "53")]);
        assert_eq!(wl, vec![FlowFilter { destination_port: strings(&["53"]), ..Default::default() }]);
        assert_eq!(
            bl,
            vec![FlowFilter { verdict: vec![flow::Verdict::Dropped as i32], ..Default::default() }]
        );

        let (wl, bl) =
            build(&[("not", "true"), ("pod", "kube-system/"), ("not", "true"), ("protocol", "udp")]);
        assert!(wl.is_empty());
        assert_eq!(
            bl,
            vec![
                FlowFilter {
                    source_pod: strings(&["kube-system/"]),
                    protocol: strings(&["udp"]),
                    ..Default::default()
                },
                FlowFilter {
                    destination_pod: strings(&["kube-system/"]),
                    protocol: strings(&["udp"]),
                    ..Default::default()
                },
            ]
        );
        assert_eq!(build_err(&[("not", "true"), ("not", "true")]), "consecutive --not statements");
        assert_eq!(build_err(&[("pod", "a"), ("not", "true")]), "trailing --not found in the arguments");
    }

    #[test]
    fn event_types_and_subtypes() {
        let t = |v: &str| parse_event_type(v).unwrap();
        let etf = |r#type, match_sub_type, sub_type| EventTypeFilter { r#type, match_sub_type, sub_type };
        assert_eq!(t("drop"), etf(1, false, 0));
        assert_eq!(t("trace"), etf(4, false, 0));
        assert_eq!(t("policy-verdict"), etf(5, false, 0));
        assert_eq!(t("l7"), etf(129, false, 0));
        assert_eq!(t("capture"), etf(3, false, 0));
        assert_eq!(t("trace-sock"), etf(7, false, 0));
        assert_eq!(t("trace:to-endpoint"), etf(4, true, 0));
        assert_eq!(t("trace:from-endpoint"), etf(4, true, 5));
        assert_eq!(t("trace:to-stack"), etf(4, true, 3));
        assert_eq!(t("drop:133"), etf(1, true, 133));
        assert_eq!(t("agent:policy-updated"), etf(130, true, 5));
        assert_eq!(t("42"), etf(42, false, 0));
        assert!(parse_event_type("bogus").unwrap_err().starts_with("unable to parse type 'bogus'"));
        assert!(parse_event_type("trace:nowhere")
            .unwrap_err()
            .starts_with("unable to parse event sub-type 'nowhere'"));

        let (wl, _) = build(&[("type", "drop"), ("type", "trace:to-endpoint")]);
        assert_eq!(
            wl,
            vec![FlowFilter { event_type: vec![etf(1, false, 0), etf(4, true, 0)], ..Default::default() }]
        );
    }

    #[test]
    fn tcp_flags_and_enums() {
        assert_eq!(parse_tcp_flags("SYN").unwrap(), TcpFlags { syn: true, ..Default::default() });
        assert_eq!(
            parse_tcp_flags("syn,ack").unwrap(),
            TcpFlags { syn: true, ack: true, ..Default::default() }
        );
        assert_eq!(parse_tcp_flags("FIN").unwrap(), TcpFlags { fin: true, ..Default::default() });
        assert_eq!(parse_tcp_flags("SYN,BOGUS").unwrap_err(), "unknown tcp flag: BOGUS");
        let (wl, _) = build(&[("tcp-flags", "SYN"), ("tcp-flags", "SYN,ACK")]);
        assert_eq!(
            wl[0].tcp_flags,
            vec![
                TcpFlags { syn: true, ..Default::default() },
                TcpFlags { syn: true, ack: true, ..Default::default() }
            ]
        );

        let (wl, _) = build(&[
            ("drop-reason-desc", "POLICY_DENIED"),
            ("traffic-direction", "Ingress"),
            ("node-name", "n1"),
            ("to-identity", "0x100"),
            ("ipv4", "true"),
        ]);
        assert_eq!(
            wl,
            vec![FlowFilter {
                drop_reason_desc: vec![flow::DropReason::PolicyDenied as i32],
                traffic_direction: vec![flow::TrafficDirection::Ingress as i32],
                node_name: strings(&["n1"]),
                destination_identity: vec![256],
                ip_version: vec![flow::IpVersion::IPv4 as i32],
                ..Default::default()
            }]
        );
        assert_eq!(build_err(&[("verdict", "forwarded")]), "invalid --verdict value: forwarded");
        assert_eq!(build_err(&[("drop-reason-desc", "NOPE")]), "invalid --drop-reason-desc value: NOPE");
        assert_eq!(
            build_err(&[("traffic-direction", "sideways")]),
            "sideways: invalid traffic direction, expected ingress or egress"
        );
        assert!(build_err(&[("identity", "nobody")])
            .starts_with("invalid security identity, expected one of [unknown host world"));
        assert_eq!(
            build_err(&[("port", "80"), ("to-port", "81")]),
            "filters --port and --to-port cannot be combined"
        );
    }
}
