//! `policy trace`: what the resolver decides for one connection, in both
//! directions, with the rules behind each verdict. Pure: the caller names
//! the two parties.

use std::collections::BTreeMap;

use twill_api as api;
use twill_identity::LabelSet;
use twill_policy::{
    model::{protocol_name, Direction, Peer},
    resolve::{IdentityKind, KnownIdentity, NamedPort, Origin, Universe, Verdict},
    Rule,
};

use super::resolve_for;

/// One side of a traced connection.
pub struct Party {
    pub identity: u32,
    pub labels: LabelSet,
    pub ports: Vec<NamedPort>,
    /// How the user named it, for the output.
    pub name: String,
}

pub fn trace(
    universe: &Universe,
    rules: &[Rule],
    mut peer_ports: BTreeMap<u32, Vec<NamedPort>>,
    src: &Party,
    dst: &Party,
    protocol: u8,
    port: u16,
) -> api::TraceResult {
    // Label sets nobody holds yet still get evaluated, as what-ifs.
    let mut known: Vec<KnownIdentity> = universe.iter().cloned().collect();
    for party in [src, dst] {
        if !known.iter().any(|k| k.id == party.identity) {
            known.push(KnownIdentity {
                id: party.identity,
                labels: party.labels.clone(),
                kind: IdentityKind::Endpoint,
            });
        }
    }
    let universe = Universe::new(known).with_services(universe.services().clone());
    peer_ports.entry(dst.identity).or_default().extend(dst.ports.iter().cloned());
    let mut steps = Vec::new();
    let mut allowed = true;
    for (direction, subject, peer) in
        [(Direction::Egress, src, dst.identity), (Direction::Ingress, dst, src.identity)]
    {
        let resolved = resolve_for(&subject.labels, &subject.ports, &universe, rules, &peer_ports);
        let verdict = resolved.lookup(direction, peer, protocol, port);
        let enforced = match direction {
            Direction::Ingress => resolved.ingress_enforced,
            Direction::Egress => resolved.egress_enforced,
        };
        let (text, reasons) = match &verdict {
            Verdict::Allowed(o) => {
                let mut reasons: Vec<String> =
                    o.iter().map(|o| explain(o, rules, &universe, direction, peer)).collect();
                if let Some(l7) = resolved.l7_rules(direction, peer, protocol, port) {
                    reasons.push(describe_l7(l7));
                }
                ("ALLOWED", reasons)
            }
            Verdict::Denied(o) => ("DENIED", o.iter().map(|o| o.to_string()).collect()),
            Verdict::DefaultDenied => ("DENIED", vec!["default deny: no rule allows it".to_string()]),
        };
        allowed &= verdict.allowed();
        steps.push(api::TraceDirection {
            direction: direction.as_str().into(),
            subject: subject.name.clone(),
            enforced,
            verdict: text.into(),
            reasons,
        });
    }
    api::TraceResult {
        src_identity: src.identity,
        dst_identity: dst.identity,
        src_labels: src.labels.to_strings(),
        dst_labels: dst.labels.to_strings(),
        protocol: protocol_name(protocol).into(),
        port,
        steps,
        verdict: if allowed { "ALLOWED" } else { "DENIED" }.into(),
    }
}

/// What the L7 proxy will check on a connection the trace allows.
fn describe_l7(l7: &twill_policy::l7::L7Rules) -> String {
    let rules = match l7 {
        twill_policy::l7::L7Rules::Http(rules) => rules,
        twill_policy::l7::L7Rules::Dns(names) => {
            let each: Vec<String> = names.iter().map(|m| m.to_string()).collect();
            return format!(
                "through the DNS proxy; lookups allowed only for names matching one of: {}",
                each.join("; ")
            );
        }
    };
    let each: Vec<String> = rules
        .iter()
        .map(|r| {
            let mut parts = Vec::new();
            parts.push(r.method.clone().unwrap_or_else(|| "any method".into()));
            parts.push(r.path.clone().unwrap_or_else(|| "any path".into()));
            if let Some(h) = &r.host {
                parts.push(format!("host {h}"));
            }
            for h in &r.headers {
                parts.push(match &h.value {
                    Some(v) => format!("header {}: {v}", h.name),
                    None => format!("header {}", h.name),
                });
            }
            parts.join(" ")
        })
        .collect();
    format!("through the L7 proxy; requests allowed only if they match one of: {}", each.join("; "))
}

/// An allow origin, and when its rule allows the peer through services,
/// which `toServices` entries and which of their services did: the rule
/// alone does not say, since services and their backends change.
fn explain(origin: &Origin, rules: &[Rule], universe: &Universe, direction: Direction, peer: u32) -> String {
    let text = origin.to_string();
    let Some(rule) =
        rules.iter().find(|r| Some(&r.policy) == origin.policy.as_ref() && r.index == origin.rule)
    else {
        return text;
    };
    let mut via = Vec::new();
    for peer_rule in &rule.direction(direction).allow {
        for p in &peer_rule.peers {
            let Peer::Service(service) = p else { continue };
            let names: Vec<String> = universe
                .services()
                .matching(service)
                .filter(|s| universe.backends(s, &[]).contains(&peer))
                .map(|s| format!("a backend of service {}/{}", s.namespace, s.name))
                .collect();
            if !names.is_empty() {
                via.push(format!("toServices {service}: {}", names.join(", ")));
            }
        }
    }
    if via.is_empty() {
        text
    } else {
        format!("{text}, via {}", via.join("; "))
    }
}
