//! Flows to a service map: one node per workload identity, one edge per
//! (source, destination, port, protocol), as Hubble UI draws it.

use std::collections::BTreeMap;

use serde::Serialize;
use twill_observe_proto::flow::{self, layer4::Protocol, Endpoint, Flow, Verdict};

/// Label keys that name a service, in Hubble UI's order of preference.
const NAME_KEYS: &[&str] = &["app", "k8s-app", "app.kubernetes.io/name", "name"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapNode {
    /// Stable key: `namespace/name`, or `reserved:NAME` for reserved identities.
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub identity: u32,
    /// `workload` or `reserved` (world, host, remote-node, ...).
    pub kind: &'static str,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapEdge {
    pub id: String,
    pub source: String,
    pub destination: String,
    pub port: u32,
    pub protocol: &'static str,
    pub flows: u64,
    pub forwarded: u64,
    pub dropped: u64,
    /// `forwarded`, `dropped` or `mixed`.
    pub verdict: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceMap {
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
}

/// The value of label `key` whatever its source prefix (`k8s:app=x`, `app=x`).
fn label_value<'a>(labels: &'a [String], key: &str) -> Option<&'a str> {
    labels.iter().find_map(|l| {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        let bare = k.split_once(':').map_or(k, |(_, b)| b);
        (bare == key).then_some(v)
    })
}

/// The map node an endpoint belongs to, or None for a flow side that has
/// no endpoint at all.
pub fn node_of(ep: &Endpoint) -> Option<MapNode> {
    let reserved =
        ep.labels.iter().find_map(|l| l.strip_prefix("reserved:")).map(|r| r.split('=').next().unwrap_or(r));
    // Only identities in the reserved range are reserved nodes: an endpoint
    // labelled `reserved:init` while waiting for its labels still shows as
    // `init`, which is what Hubble UI does too.
    let reserved_name = match reserved {
        Some(r) => Some(r.to_string()),
        None if ep.identity != 0
            && ep.identity <= twill_numbers::MAX_RESERVED_IDENTITY
            && ep.namespace.is_empty() =>
        {
            twill_numbers::reserved_identity_name(ep.identity).map(str::to_string)
        }
        None => None,
    };
    if let Some(name) = reserved_name {
        return Some(MapNode {
            id: format!("reserved:{name}"),
            name,
            namespace: String::new(),
            identity: ep.identity,
            kind: "reserved",
            labels: ep.labels.clone(),
        });
    }
    let name = NAME_KEYS
        .iter()
        .find_map(|k| label_value(&ep.labels, k))
        .map(str::to_string)
        .or_else(|| ep.workloads.first().map(|w| w.name.clone()))
        .filter(|n| !n.is_empty())
        .or_else(|| (!ep.pod_name.is_empty()).then(|| ep.pod_name.clone()))
        .or_else(|| (ep.identity != 0).then(|| format!("identity {}", ep.identity)))?;
    Some(MapNode {
        id: format!("{}/{}", ep.namespace, name),
        name,
        namespace: ep.namespace.clone(),
        identity: ep.identity,
        kind: "workload",
        labels: ep.labels.clone(),
    })
}

/// Destination port and protocol name of a flow (0 for ICMP and friends).
pub fn port_protocol(f: &Flow) -> (u32, &'static str) {
    match f.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => (t.destination_port, "TCP"),
        Some(Protocol::Udp(u)) => (u.destination_port, "UDP"),
        Some(Protocol::Sctp(s)) => (s.destination_port, "SCTP"),
        Some(Protocol::IcmPv4(_)) => (0, "ICMPv4"),
        Some(Protocol::IcmPv6(_)) => (0, "ICMPv6"),
        Some(Protocol::Vrrp(_)) => (0, "VRRP"),
        Some(Protocol::Igmp(_)) => (0, "IGMP"),
        None => (0, "unknown"),
    }
}

/// (source, destination, port, protocol).
type EdgeKey = (String, String, u32, &'static str);

fn is_reply(f: &Flow) -> bool {
    f.is_reply.unwrap_or(false)
}

/// The map of `flows`, limited to those with an end in `namespace` when one
/// is given. Replies are folded into the request's edge direction, so a
/// connection is one edge as in Hubble UI.
pub fn build<'a>(flows: impl IntoIterator<Item = &'a Flow>, namespace: Option<&str>) -> ServiceMap {
    let mut nodes = BTreeMap::new();
    let mut edges: BTreeMap<EdgeKey, (u64, u64, u64)> = BTreeMap::new();
    for f in flows {
        let (Some(src), Some(dst)) =
            (f.source.as_ref().and_then(node_of), f.destination.as_ref().and_then(node_of))
        else {
            continue;
        };
        if let Some(ns) = namespace {
            if src.namespace != ns && dst.namespace != ns {
                continue;
            }
        }
        let (mut port, proto) = port_protocol(f);
        let (from, to) = if is_reply(f) {
            // The reply's source port is the service port of the request.
            if let Some(Protocol::Tcp(t)) = f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
                port = t.source_port;
            } else if let Some(Protocol::Udp(u)) = f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
                port = u.source_port;
            }
            (dst.id.clone(), src.id.clone())
        } else {
            (src.id.clone(), dst.id.clone())
        };
        let e = edges.entry((from, to, port, proto)).or_default();
        e.0 += 1;
        match Verdict::try_from(f.verdict) {
            Ok(Verdict::Dropped) | Ok(Verdict::Error) => e.2 += 1,
            Ok(Verdict::Forwarded) | Ok(Verdict::Redirected) | Ok(Verdict::Translated) => e.1 += 1,
            _ => {}
        }
        nodes.entry(src.id.clone()).or_insert(src);
        nodes.entry(dst.id.clone()).or_insert(dst);
    }
    ServiceMap {
        nodes: nodes.into_values().collect(),
        edges: edges
            .into_iter()
            .map(|((source, destination, port, protocol), (flows, forwarded, dropped))| MapEdge {
                id: format!("{source}>{destination}:{port}/{protocol}"),
                verdict: match (forwarded, dropped) {
                    (_, 0) => "forwarded",
                    (0, _) => "dropped",
                    _ => "mixed",
                },
                source,
                destination,
                port,
                protocol,
                flows,
                forwarded,
                dropped,
            })
            .collect(),
    }
}

/// Kept for callers that only need a verdict's display name.
pub fn verdict_name(v: i32) -> &'static str {
    flow::Verdict::try_from(v).map(|v| v.as_str_name()).unwrap_or("VERDICT_UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;
    use twill_observe_proto::flow::{Layer4, Tcp, Workload};

    fn ep(ns: &str, identity: u32, labels: &[&str]) -> Endpoint {
        Endpoint {
            identity,
            namespace: ns.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn tcp(src: Endpoint, dst: Endpoint, sport: u32, dport: u32, verdict: Verdict, reply: bool) -> Flow {
        Flow {
            source: Some(src),
            destination: Some(dst),
            verdict: verdict as i32,
            is_reply: Some(reply),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: sport,
                    destination_port: dport,
                    flags: None,
                })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn names_by_app_label_then_workload_then_pod() {
        assert_eq!(node_of(&ep("prod", 300, &["k8s:app=web", "k8s:tier=fe"])).unwrap().id, "prod/web");
        assert_eq!(node_of(&ep("prod", 300, &["app=api"])).unwrap().name, "api");
        assert_eq!(node_of(&ep("prod", 300, &["k8s:app.kubernetes.io/name=db"])).unwrap().name, "db");
        let mut w = ep("prod", 301, &["k8s:tier=x"]);
        w.workloads = vec![Workload { name: "cart".into(), kind: "Deployment".into() }];
        w.pod_name = "cart-123".into();
        assert_eq!(node_of(&w).unwrap().name, "cart");
        w.workloads.clear();
        assert_eq!(node_of(&w).unwrap().name, "cart-123");
        w.pod_name.clear();
        assert_eq!(node_of(&w).unwrap().name, "identity 301");
        assert_eq!(node_of(&ep("", 0, &[])), None);
    }

    #[test]
    fn reserved_identities_are_their_own_nodes() {
        let world = node_of(&ep("", 2, &["reserved:world"])).unwrap();
        assert_eq!((world.id.as_str(), world.kind), ("reserved:world", "reserved"));
        // No labels, only the number: named from Cilium's table.
        assert_eq!(node_of(&ep("", 6, &[])).unwrap().name, "remote-node");
        assert_eq!(node_of(&ep("", 1, &["reserved:host"])).unwrap().name, "host");
    }

    #[test]
    fn edges_count_verdicts_and_fold_replies() {
        let a = ep("prod", 300, &["k8s:app=a"]);
        let b = ep("prod", 301, &["k8s:app=b"]);
        let flows = vec![
            tcp(a.clone(), b.clone(), 40000, 80, Verdict::Forwarded, false),
            tcp(b.clone(), a.clone(), 80, 40000, Verdict::Forwarded, true),
            tcp(a.clone(), b.clone(), 40001, 81, Verdict::Dropped, false),
            tcp(a.clone(), b.clone(), 40002, 81, Verdict::Dropped, false),
            tcp(a.clone(), b.clone(), 40003, 82, Verdict::Forwarded, false),
            tcp(a.clone(), b.clone(), 40004, 82, Verdict::Dropped, false),
        ];
        let m = build(&flows, None);
        assert_eq!(m.nodes.len(), 2);
        let e: Vec<_> = m
            .edges
            .iter()
            .map(|e| (e.source.as_str(), e.destination.as_str(), e.port, e.flows, e.verdict))
            .collect();
        assert_eq!(
            e,
            vec![
                ("prod/a", "prod/b", 80, 2, "forwarded"),
                ("prod/a", "prod/b", 81, 2, "dropped"),
                ("prod/a", "prod/b", 82, 2, "mixed"),
            ]
        );
    }

    #[test]
    fn namespace_keeps_flows_with_either_end_in_it() {
        let a = ep("prod", 300, &["k8s:app=a"]);
        let b = ep("dev", 301, &["k8s:app=b"]);
        let c = ep("dev", 302, &["k8s:app=c"]);
        let world = ep("", 2, &["reserved:world"]);
        let flows = vec![
            tcp(a.clone(), b.clone(), 1, 80, Verdict::Forwarded, false),
            tcp(b.clone(), c.clone(), 1, 80, Verdict::Forwarded, false),
            tcp(a.clone(), world.clone(), 1, 443, Verdict::Dropped, false),
        ];
        let m = build(&flows, Some("prod"));
        let ids: Vec<_> = m.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, vec!["dev/b", "prod/a", "reserved:world"]);
        assert_eq!(m.edges.len(), 2);
        assert_eq!(build(&flows, Some("dev")).edges.len(), 2);
        assert_eq!(build(&flows, Some("none")), ServiceMap::default());
    }

    proptest::proptest! {
        /// Every flow with two known ends lands on exactly one edge, its
        /// verdict counted once, and the edge colour follows the counts.
        #[test]
        fn every_flow_counts_once(flows in proptest::collection::vec((0u32..4, 0u32..4, 0u32..3, proptest::bool::ANY, proptest::bool::ANY), 0..60)) {
            let eps: Vec<Endpoint> = (0..4).map(|i| ep(if i % 2 == 0 { "prod" } else { "dev" }, 300 + i, &[&format!("k8s:app=w{i}")])).collect();
            let flows: Vec<Flow> = flows.iter().map(|&(s, d, port, drop, reply)| {
                tcp(eps[s as usize].clone(), eps[d as usize].clone(), 30000 + port, 80 + port, if drop { Verdict::Dropped } else { Verdict::Forwarded }, reply)
            }).collect();
            let m = build(&flows, None);
            proptest::prop_assert_eq!(m.edges.iter().map(|e| e.flows).sum::<u64>(), flows.len() as u64);
            for e in &m.edges {
                proptest::prop_assert_eq!(e.forwarded + e.dropped, e.flows);
                let want = if e.dropped == 0 { "forwarded" } else if e.forwarded == 0 { "dropped" } else { "mixed" };
                proptest::prop_assert_eq!(e.verdict, want);
                proptest::prop_assert!(m.nodes.iter().any(|n| n.id == e.source) && m.nodes.iter().any(|n| n.id == e.destination));
            }
            let prod = build(&flows, Some("prod"));
            for e in &prod.edges {
                proptest::prop_assert!(e.source.starts_with("prod/") || e.destination.starts_with("prod/"));
            }
        }
    }
}
