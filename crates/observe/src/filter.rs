//! Hubble's flow filters, evaluated in the server: a flow passes if it
//! matches any whitelist filter (or there are none) and no blacklist
//! filter. Within one filter every field that is set must match; within a
//! field, any of its values.

use std::net::Ipv4Addr;

use twill_observe_proto::flow::{self, layer4::Protocol, Flow, FlowFilter};

pub fn passes(flow: &Flow, whitelist: &[FlowFilter], blacklist: &[FlowFilter]) -> bool {
    (whitelist.is_empty() || whitelist.iter().any(|f| matches(flow, f)))
        && !blacklist.iter().any(|f| matches(flow, f))
}

/// Checks one field: unset (empty) matches everything.
fn any_of<T>(values: &[T], check: impl Fn(&T) -> bool) -> bool {
    values.is_empty() || values.iter().any(check)
}

/// Hubble's FQDN filter: a name, case-insensitive and with or without
/// the trailing dot, where `*` stands for any run of name characters
/// within one label: Cilium's matchPattern, so the policy's matcher.
fn fqdn_matches(pattern: &str, name: &str) -> bool {
    use twill_policy::l7_dns::{canonical, parse_match_pattern, DnsMatch};
    parse_match_pattern(pattern).is_ok_and(|p| DnsMatch::Pattern(p).matches(&canonical(name)))
}

pub fn matches(flow: &Flow, f: &FlowFilter) -> bool {
    let src = flow.source.clone().unwrap_or_default();
    let dst = flow.destination.clone().unwrap_or_default();
    let ip = flow.ip.clone().unwrap_or_default();
    let (sport, dport) = ports(flow);
    any_of(&f.uuid, |u| *u == flow.uuid)
        && any_of(&f.source_ip, |c| ip_matches(c, &ip.source))
        && any_of(&f.destination_ip, |c| ip_matches(c, &ip.destination))
        && any_of(&f.source_pod, |p| named_matches(p, &src.namespace, &src.pod_name))
        && any_of(&f.destination_pod, |p| named_matches(p, &dst.namespace, &dst.pod_name))
        && any_of(&f.source_label, |s| selector_matches(s, &src.labels))
        && any_of(&f.destination_label, |s| selector_matches(s, &dst.labels))
        && any_of(&f.source_identity, |i| *i == src.identity)
        && any_of(&f.destination_identity, |i| *i == dst.identity)
        && any_of(&f.source_service, |s| service_matches(s, flow.source_service.as_ref()))
        && any_of(&f.destination_service, |s| service_matches(s, flow.destination_service.as_ref()))
        && any_of(&f.source_fqdn, |p| flow.source_names.iter().any(|n| fqdn_matches(p, n)))
        && any_of(&f.destination_fqdn, |p| flow.destination_names.iter().any(|n| fqdn_matches(p, n)))
        // Twill has no workloads yet: such filters match nothing.
        && f.source_workload.is_empty()
        && f.destination_workload.is_empty()
        && any_of(&f.source_cluster_name, |c| *c == src.cluster_name)
        && any_of(&f.destination_cluster_name, |c| *c == dst.cluster_name)
        && any_of(&f.traffic_direction, |d| *d == flow.traffic_direction)
        && any_of(&f.verdict, |v| *v == flow.verdict)
        && any_of(&f.drop_reason_desc, |d| *d == flow.drop_reason_desc)
        && any_of(&f.event_type, |e| event_type_matches(e, flow))
        && any_of(&f.protocol, |p| protocol_matches(p, flow))
        && any_of(&f.source_port, |p| port_matches(p, sport))
        && any_of(&f.destination_port, |p| port_matches(p, dport))
        && any_of(&f.reply, |r| Some(*r) == flow.is_reply)
        && any_of(&f.tcp_flags, |t| tcp_flags_match(t, flow))
        && any_of(&f.node_name, |n| glob(n, &flow.node_name))
        && any_of(&f.ip_version, |v| *v == ip.ip_version)
        && any_of(&f.interface, |i| {
            let have = flow.interface.clone().unwrap_or_default();
            (i.index == 0 || i.index == have.index) && (i.name.is_empty() || i.name == have.name)
        })
        && any_of(&f.encrypted, |e| *e == ip.encrypted)
        // L7 filters, as Hubble's: only HTTP flows match them.
        && any_of(&f.http_status_code, |c| http(flow).is_some_and(|h| status_matches(c, h.code)))
        && any_of(&f.http_method, |m| http(flow).is_some_and(|h| h.method.eq_ignore_ascii_case(m)))
        && any_of(&f.http_path, |p| http(flow).is_some_and(|h| regex_matches(p, url_path(&h.url))))
        && any_of(&f.http_url, |u| http(flow).is_some_and(|h| regex_matches(u, &h.url)))
        && any_of(&f.http_header, |w| {
            http(flow).is_some_and(|h| h.headers.iter().any(|x| x.key.eq_ignore_ascii_case(&w.key) && x.value == w.value))
        })
        && f.dns_query.is_empty()
}

fn http(flow: &Flow) -> Option<&flow::Http> {
    match flow.l7.as_ref()?.record.as_ref()? {
        flow::layer7::Record::Http(h) => Some(h),
        _ => None,
    }
}

/// Hubble's status filter: "200" exactly, or "4+" for any 4xx. A flow
/// without a code (a request) matches neither.
fn status_matches(filter: &str, code: u32) -> bool {
    if code == 0 {
        return false;
    }
    match filter.strip_suffix('+') {
        Some(prefix) => code.to_string().starts_with(prefix),
        None => filter.parse::<u32>().ok() == Some(code),
    }
}

/// The path of an `http://host/path?query` URL.
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or(path)
}

/// Hubble's path and URL filters are regexes, unanchored. A bad one
/// matches nothing (the CLI checks them before sending).
fn regex_matches(pattern: &str, value: &str) -> bool {
    regex::Regex::new(pattern).is_ok_and(|re| re.is_match(value))
}

#[cfg(test)]
mod http_tests {
    use super::*;

    fn l7(code: u32, method: &str, url: &str) -> Flow {
        Flow {
            l7: Some(flow::Layer7 {
                record: Some(flow::layer7::Record::Http(flow::Http {
                    code,
                    method: method.into(),
                    url: url.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn http_filters_match_hubble_s_way() {
        let ok = l7(200, "GET", "http://web:8080/public/a?x=1");
        let denied = l7(0, "POST", "http://web:8080/private");
        let f = |set: &dyn Fn(&mut FlowFilter)| {
            let mut f = FlowFilter::default();
            set(&mut f);
            f
        };
        assert!(matches(&ok, &f(&|f| f.http_status_code = vec!["200".into()])));
        assert!(matches(&ok, &f(&|f| f.http_status_code = vec!["2+".into()])));
        assert!(!matches(&ok, &f(&|f| f.http_status_code = vec!["4+".into()])));
        assert!(!matches(&denied, &f(&|f| f.http_status_code = vec!["2+".into()])), "requests have no code");
        assert!(matches(&denied, &f(&|f| f.http_method = vec!["post".into()])));
        assert!(matches(&ok, &f(&|f| f.http_path = vec!["^/public/".into()])));
        assert!(!matches(&denied, &f(&|f| f.http_path = vec!["^/public/".into()])));
        assert!(
            !matches(&Flow::default(), &f(&|f| f.http_method = vec!["GET".into()])),
            "L3/L4 flows never match"
        );
        assert_eq!(url_path("http://h/a/b?q"), "/a/b");
        let mut tcp_l7 = ok.clone();
        tcp_l7.l4 = Some(flow::Layer4 { protocol: Some(Protocol::Tcp(flow::Tcp::default())) });
        assert!(matches(&tcp_l7, &f(&|f| f.protocol = vec!["http".into()])));
        assert!(matches(&tcp_l7, &f(&|f| f.protocol = vec!["tcp".into()])));
        let mut plain = tcp_l7.clone();
        plain.l7 = None;
        assert!(!matches(&plain, &f(&|f| f.protocol = vec!["http".into()])));
        assert!(!matches(&tcp_l7, &f(&|f| f.protocol = vec!["dns".into()])));
        let mut dns = plain.clone();
        dns.l7 = Some(flow::Layer7 {
            record: Some(flow::layer7::Record::Dns(flow::Dns::default())),
            ..Default::default()
        });
        assert!(matches(&dns, &f(&|f| f.protocol = vec!["DNS".into()])));
        assert!(!matches(&dns, &f(&|f| f.protocol = vec!["http".into()])));
    }
}

fn ports(flow: &Flow) -> (Option<u32>, Option<u32>) {
    match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => (Some(t.source_port), Some(t.destination_port)),
        Some(Protocol::Udp(u)) => (Some(u.source_port), Some(u.destination_port)),
        Some(Protocol::Sctp(s)) => (Some(s.source_port), Some(s.destination_port)),
        _ => (None, None),
    }
}

fn port_matches(filter: &str, port: Option<u32>) -> bool {
    port.is_some_and(|p| filter.parse::<u32>().ok() == Some(p))
}

/// An address or a CIDR.
fn ip_matches(filter: &str, ip: &str) -> bool {
    let Ok(ip) = ip.parse::<Ipv4Addr>() else { return false };
    match filter.split_once('/') {
        None => filter.parse::<Ipv4Addr>().ok() == Some(ip),
        Some((net, len)) => match (net.parse::<Ipv4Addr>(), len.parse::<u32>()) {
            (Ok(net), Ok(len)) if len <= 32 => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                u32::from(ip) & mask == u32::from(net) & mask
            }
            _ => false,
        },
    }
}

/// Rejects filters Hubble rejects before matching anything: an empty pod
/// or service name filter (it would otherwise mean all of "default").
pub fn validate(filters: &[FlowFilter]) -> Result<(), String> {
    for f in filters {
        let named = [&f.source_pod, &f.destination_pod, &f.source_service, &f.destination_service];
        if named.iter().any(|values| values.iter().any(String::is_empty)) {
            return Err("invalid filter, must be [namespace/][<name>], got \"\"".into());
        }
    }
    Ok(())
}

/// A pod or service filter, `[namespace/]name-prefix`, as Hubble reads
/// it: without a slash the namespace is "default"; an empty namespace
/// (`/web`) is any namespace; an empty name (`prod/`) any name. Something
/// without namespace and name (no pod, no service) matches none.
fn named_matches(filter: &str, namespace: &str, name: &str) -> bool {
    if namespace.is_empty() && name.is_empty() {
        return false;
    }
    let mut parts = filter.split('/');
    let first = parts.next().unwrap_or_default();
    let (ns, prefix) = match parts.next() {
        Some(rest) => (first, rest),
        None => ("default", first),
    };
    (ns.is_empty() || ns == namespace) && name.starts_with(prefix)
}

fn service_matches(filter: &str, service: Option<&flow::Service>) -> bool {
    service.is_some_and(|s| named_matches(filter, &s.namespace, &s.name))
}

fn event_type_matches(filter: &flow::EventTypeFilter, flow: &Flow) -> bool {
    let Some(e) = &flow.event_type else { return false };
    filter.r#type == e.r#type && (!filter.match_sub_type || filter.sub_type == e.sub_type)
}

fn protocol_matches(filter: &str, flow: &Flow) -> bool {
    let name = match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(_)) => "tcp",
        Some(Protocol::Udp(_)) => "udp",
        Some(Protocol::Sctp(_)) => "sctp",
        Some(Protocol::IcmPv4(_)) => "icmpv4",
        Some(Protocol::IcmPv6(_)) => "icmpv6",
        _ => return false,
    };
    let filter = filter.to_ascii_lowercase();
    // Hubble: an L7 flow also matches its application protocol.
    if filter == "http" {
        return http(flow).is_some();
    }
    if filter == "dns" {
        return matches!(
            flow.l7.as_ref().and_then(|l| l.record.as_ref()),
            Some(flow::layer7::Record::Dns(_))
        );
    }
    filter == name || (filter == "icmp" && name.starts_with("icmp"))
}

/// A flow matches a TCPFlags filter if it has every flag the filter sets.
fn tcp_flags_match(filter: &flow::TcpFlags, flow: &Flow) -> bool {
    let Some(Protocol::Tcp(tcp)) = flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) else { return false };
    let have = tcp.flags.unwrap_or_default();
    let pairs = [
        (filter.fin, have.fin),
        (filter.syn, have.syn),
        (filter.rst, have.rst),
        (filter.psh, have.psh),
        (filter.ack, have.ack),
        (filter.urg, have.urg),
        (filter.ece, have.ece),
        (filter.cwr, have.cwr),
        (filter.ns, have.ns),
    ];
    pairs.iter().all(|(want, has)| !want || *has)
}

/// `*` matches any run of characters; the rest literally.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            text.starts_with(head) && {
                let text = &text[head.len()..];
                (0..=text.len()).any(|i| text.is_char_boundary(i) && glob(rest, &text[i..]))
            }
        }
    }
}

/// A label selector as Hubble accepts it: comma-separated requirements,
/// each `key`, `!key`, `key=value`, `key==value`, `key!=value`,
/// `key in (a,b)` or `key notin (a,b)`; keys may carry a source prefix
/// (`k8s:app`), `any:` or none matches any source.
pub fn selector_matches(selector: &str, labels: &[String]) -> bool {
    let parsed: Vec<(&str, String, &str)> = labels
        .iter()
        .map(|l| {
            let (lhs, value) = l.split_once('=').unwrap_or((l.as_str(), ""));
            let (source, key) = lhs.split_once(':').unwrap_or(("", lhs));
            (source, key.to_string(), value)
        })
        .collect();
    split_requirements(selector).iter().all(|req| requirement_matches(req.trim(), &parsed))
}

fn split_requirements(selector: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&selector[start..]);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

fn requirement_matches(req: &str, labels: &[(&str, String, &str)]) -> bool {
    let values_of = |key: &str| -> Vec<&str> {
        let (source, key) = match key.split_once(':') {
            Some(("any", k)) => (None, k),
            Some((s, k)) => (Some(s), k),
            None => (None, key),
        };
        labels
            .iter()
            .filter(|(s, k, _)| k == key && source.is_none_or(|want| want == *s))
            .map(|(_, _, v)| *v)
            .collect()
    };
    let set = |list: &str| -> Vec<String> {
        list.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|v| v.trim().to_string())
            .collect()
    };
    if let Some(key) = req.strip_prefix('!') {
        return values_of(key.trim()).is_empty();
    }
    if let Some((key, value)) = req.split_once("!=") {
        return !values_of(key.trim()).contains(&value.trim());
    }
    if let Some((key, value)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return values_of(key.trim()).contains(&value.trim());
    }
    if let Some((key, list)) = req.split_once(" notin ") {
        let wanted = set(list);
        return !values_of(key.trim()).iter().any(|v| wanted.iter().any(|w| w == v));
    }
    if let Some((key, list)) = req.split_once(" in ") {
        let wanted = set(list);
        return values_of(key.trim()).iter().any(|v| wanted.iter().any(|w| w == v));
    }
    !values_of(req).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selectors() {
        let l = labels(&["k8s:app=web", "k8s:io.kubernetes.pod.namespace=prod", "reserved:host"]);
        for (sel, want) in [
            ("app=web", true),
            ("k8s:app=web", true),
            ("any:app=web", true),
            ("container:app=web", false),
            ("app!=web", false),
            ("app in (db, web)", true),
            ("app notin (db,web)", false),
            ("app", true),
            ("!app", false),
            ("!tier", true),
            ("app=web,io.kubernetes.pod.namespace=prod", true),
            ("app=web,io.kubernetes.pod.namespace=dev", false),
            ("reserved:host", true),
        ] {
            assert_eq!(selector_matches(sel, &l), want, "{sel}");
        }
    }

    #[test]
    fn globs_ips_and_pods() {
        assert!(glob("node-*", "node-1") && glob("*", "x") && !glob("node-*", "other"));
        assert!(ip_matches("10.0.0.0/8", "10.1.2.3") && !ip_matches("10.0.0.0/8", "11.1.2.3"));
        assert!(ip_matches("10.1.2.3", "10.1.2.3"));
        let pod = |filter| named_matches(filter, "prod", "web-1");
        assert!(pod("prod/web") && pod("prod/") && pod("/web"));
        assert!(!pod("dev/web") && !pod("web"), "bare names mean namespace default");
        assert!(!named_matches("/", "", ""), "no pod matches no filter");
    }

    fn to_service(namespace: &str, name: &str) -> Flow {
        Flow {
            destination_service: Some(flow::Service { name: name.into(), namespace: namespace.into() }),
            ..Default::default()
        }
    }

    #[test]
    fn service_filters_take_a_namespace_and_a_name_prefix() {
        let web = to_service("default", "web-frontend");
        let prod = to_service("prod", "web");
        let to = |v: &str| FlowFilter { destination_service: vec![v.into()], ..Default::default() };
        let from = |v: &str| FlowFilter { source_service: vec![v.into()], ..Default::default() };
        assert!(
            matches(&web, &to("default/web")) && matches(&web, &to("web")),
            "a name prefix, default namespace"
        );
        assert!(!matches(&web, &to("default/other")) && !matches(&web, &to("default/frontend")));
        assert!(!matches(&prod, &to("web")), "a bare name is in namespace default");
        assert!(matches(&prod, &to("prod/")) && matches(&prod, &to("/we")), "any name, any namespace");
        assert!(!matches(&web, &from("default/web")), "the source has no service");
        assert!(!matches(&Flow::default(), &to("/")), "a flow without service matches no service filter");
        let either =
            FlowFilter { destination_service: vec!["prod/x".into(), "prod/w".into()], ..Default::default() };
        assert!(matches(&prod, &either), "any of the values");
    }

    #[test]
    fn empty_names_are_rejected_as_hubble_does() {
        let named = Flow { destination_names: vec!["www.web.test".into()], ..Default::default() };
        let to = |v: &str| FlowFilter { destination_fqdn: vec![v.into()], ..Default::default() };
        assert!(matches(&named, &to("www.web.test")));
        assert!(matches(&named, &to("WWW.web.test.")));
        assert!(matches(&named, &to("*.web.test")));
        assert!(!matches(&named, &to("*.test")), "* stays within one label");
        assert!(!matches(&named, &to("web.test")));
        assert!(!matches(&Flow::default(), &to("*")), "a flow without names has no FQDN");
        let empty = FlowFilter { destination_service: vec![String::new()], ..Default::default() };
        assert!(validate(&[FlowFilter::default(), empty]).is_err());
        assert!(validate(&[FlowFilter { source_pod: vec!["/".into()], ..Default::default() }]).is_ok());
    }

    #[test]
    fn whitelist_ors_blacklist_excludes() {
        let flow = Flow {
            verdict: flow::Verdict::Dropped as i32,
            ip: Some(flow::Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let by_src = FlowFilter { source_ip: vec!["10.0.0.1".into()], ..Default::default() };
        let by_dst = FlowFilter { destination_ip: vec!["10.0.0.9".into()], ..Default::default() };
        let dropped = FlowFilter { verdict: vec![flow::Verdict::Dropped as i32], ..Default::default() };
        assert!(passes(&flow, &[by_dst.clone(), by_src.clone()], &[]));
        assert!(!passes(&flow, &[by_dst], &[]));
        assert!(!passes(&flow, &[by_src], &[dropped]));
        assert!(passes(&flow, &[], &[]));
    }
}
