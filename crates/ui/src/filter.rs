//! The table's filters, mirroring `twill observe`'s flags, parsed from the
//! API's query string and applied to rows.

use thiserror::Error;

use crate::row::{Row, Side};

#[derive(Debug, Error, PartialEq)]
pub enum FilterError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: &str, reason: impl Into<String>) -> FilterError {
    FilterError::Invalid { field: field.into(), reason: reason.into() }
}

/// Every field is optional; a row must match all that are set.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Filter {
    pub verdict: Option<String>,
    pub namespace: Option<String>,
    pub label: Option<String>,
    pub port: Option<u32>,
    pub protocol: Option<String>,
    pub drop_reason: Option<String>,
    /// A map node id: the row has it on either side.
    pub node: Option<String>,
    /// A map edge id.
    pub edge: Option<String>,
    /// Only rows newer than this sequence number (live polling).
    pub after: u64,
    /// Newest rows returned at most.
    pub limit: usize,
}

pub const VERDICTS: &[&str] =
    &["FORWARDED", "DROPPED", "ERROR", "AUDIT", "REDIRECTED", "TRACED", "TRANSLATED"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP", "ICMPV4", "ICMPV6", "ICMP"];

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

impl Filter {
    /// Parses `verdict=DROPPED&port=80&...`; empty values mean "unset".
    pub fn parse(query: &str, max: usize) -> Result<Filter, FilterError> {
        let mut f = Filter { limit: max, ..Default::default() };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k), decode(v));
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "verdict" => {
                    let up = v.to_ascii_uppercase();
                    if !VERDICTS.contains(&up.as_str()) {
                        return Err(invalid(
                            "verdict",
                            format!("{v:?} is not one of {}", VERDICTS.join(", ")),
                        ));
                    }
                    f.verdict = Some(up);
                }
                "namespace" => f.namespace = Some(v),
                "label" => f.label = Some(v),
                "port" => {
                    let p: u32 =
                        v.parse().map_err(|_| invalid("port", format!("{v:?} is not a port number")))?;
                    if p > 65535 {
                        return Err(invalid("port", format!("{p} is above 65535")));
                    }
                    f.port = Some(p);
                }
                "protocol" => {
                    let up = v.to_ascii_uppercase();
                    if !PROTOCOLS.contains(&up.as_str()) {
                        return Err(invalid(
                            "protocol",
                            format!("{v:?} is not one of tcp, udp, sctp, icmp, icmpv4, icmpv6"),
                        ));
                    }
                    f.protocol = Some(up);
                }
                "drop_reason" => f.drop_reason = Some(v.to_ascii_uppercase()),
                "node" => f.node = Some(v),
                "edge" => f.edge = Some(v),
                "after" => {
                    f.after =
                        v.parse().map_err(|_| invalid("after", format!("{v:?} is not a sequence number")))?
                }
                "limit" => {
                    let n: usize =
                        v.parse().map_err(|_| invalid("limit", format!("{v:?} is not a count")))?;
                    f.limit = n.min(max);
                }
                other => return Err(invalid(other, "unknown filter")),
            }
        }
        Ok(f)
    }

    fn label_on(side: &Side, want: &str) -> bool {
        side.labels.iter().any(|l| l == want || l.split_once(':').is_some_and(|(_, bare)| bare == want))
    }

    pub fn matches(&self, r: &Row) -> bool {
        let either = |p: &dyn Fn(&Side) -> bool| p(&r.source) || p(&r.destination);
        r.seq > self.after
            && self.verdict.as_deref().is_none_or(|v| r.verdict == v)
            && self.namespace.as_deref().is_none_or(|ns| either(&|s| s.namespace == ns))
            && self.label.as_deref().is_none_or(|l| either(&|s| Self::label_on(s, l)))
            && self.port.is_none_or(|p| either(&|s| s.port == p))
            && self.protocol.as_deref().is_none_or(|p| {
                r.protocol.eq_ignore_ascii_case(p) || (p == "ICMP" && r.protocol.starts_with("ICMP"))
            })
            && self.drop_reason.as_deref().is_none_or(|d| r.drop_reason == d)
            && self.node.as_deref().is_none_or(|n| either(&|s| s.node == n))
            && self.edge.as_deref().is_none_or(|e| r.edge == e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(ns: &str, node: &str, port: u32, labels: &[&str]) -> Side {
        Side {
            namespace: ns.into(),
            pod: String::new(),
            ip: String::new(),
            port,
            identity: 300,
            node: node.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn row(verdict: &'static str, dport: u32) -> Row {
        Row {
            seq: 5,
            time_ms: 0,
            node_name: String::new(),
            source: side("prod", "prod/a", 40000, &["k8s:app=a"]),
            destination: side("prod", "prod/b", dport, &["k8s:app=b"]),
            protocol: "TCP",
            port: dport,
            edge: format!("prod/a>prod/b:{dport}/TCP"),
            verdict,
            drop_reason: if verdict == "DROPPED" { "POLICY_DENIED".into() } else { String::new() },
            tcp_flags: "SYN".into(),
            l7: String::new(),
            is_reply: false,
        }
    }

    #[test]
    fn each_filter_narrows() {
        let fwd = row("FORWARDED", 80);
        let drop = row("DROPPED", 81);
        let f = |q: &str| Filter::parse(q, 100).unwrap();
        assert!(f("verdict=dropped").matches(&drop) && !f("verdict=dropped").matches(&fwd));
        assert!(f("port=80").matches(&fwd) && !f("port=80").matches(&drop));
        assert!(f("label=app%3Db").matches(&fwd) && !f("label=app=c").matches(&fwd));
        assert!(f("label=k8s:app=a").matches(&fwd));
        assert!(f("namespace=prod").matches(&fwd) && !f("namespace=dev").matches(&fwd));
        assert!(f("protocol=tcp").matches(&fwd) && !f("protocol=udp").matches(&fwd));
        assert!(
            f("drop_reason=policy_denied").matches(&drop) && !f("drop_reason=policy_denied").matches(&fwd)
        );
        assert!(f("node=prod%2Fb").matches(&fwd) && !f("node=prod/c").matches(&fwd));
        assert!(
            f("edge=prod/a>prod/b:81/TCP").matches(&drop) && !f("edge=prod/a>prod/b:81/TCP").matches(&fwd)
        );
        assert!(!f("after=5").matches(&fwd) && f("after=4").matches(&fwd));
        assert!(f("verdict=&port=").matches(&fwd));
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = |q: &str| Filter::parse(q, 10).unwrap_err().to_string();
        assert_eq!(e("port=http"), "port: \"http\" is not a port number");
        assert_eq!(e("port=70000"), "port: 70000 is above 65535");
        assert!(e("verdict=maybe").starts_with("verdict: \"maybe\" is not one of FORWARDED"));
        assert_eq!(e("colour=red"), "colour: unknown filter");
        assert_eq!(Filter::parse("limit=50", 10).unwrap().limit, 10);
    }
}
