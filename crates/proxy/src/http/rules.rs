//! The compiled rules of one redirect, and the decision for one request:
//! which peer entries apply, and whether any allows. Pure.

use twill_policy::l7::{HttpDecision, HttpMatcher, HttpRequestView, L7Rules};

use crate::{config::Redirect, ProxyError};

pub struct CompiledRedirect {
    pub redirect: Redirect,
    peers: Vec<(u32, HttpMatcher)>,
}

impl CompiledRedirect {
    pub fn new(redirect: Redirect) -> Result<CompiledRedirect, ProxyError> {
        let mut peers = Vec::with_capacity(redirect.peers.len());
        for p in &redirect.peers {
            let L7Rules::Http(rules) = &p.rules else {
                // DNS rules are the agent's DNS proxy's; a redirect the agent
                // sends here holds HTTP rules only.
                return Err(ProxyError::Parser { proxy_port: redirect.proxy_port, parser: p.rules.parser() });
            };
            let matcher = HttpMatcher::new(rules).map_err(|(rule, field, source)| ProxyError::Rule {
                proxy_port: redirect.proxy_port,
                rule,
                field,
                source,
            })?;
            peers.push((p.identity, matcher));
        }
        Ok(CompiledRedirect { redirect, peers })
    }

    /// The decision for a request from (ingress) or to (egress) `peer`:
    /// the first allowing entry of the peer or of "any peer" decides; none
    /// allowing denies.
    pub fn decide(&self, peer: u32, req: &HttpRequestView) -> HttpDecision {
        self.peers
            .iter()
            .filter(|(id, _)| *id == 0 || *id == peer)
            .map(|(_, m)| m.decide(req))
            .find(HttpDecision::allowed)
            .unwrap_or(HttpDecision::Deny)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;
    use twill_policy::l7::HttpRule;

    use super::*;
    use crate::config::PeerRules;

    fn redirect(peers: Vec<PeerRules>) -> CompiledRedirect {
        CompiledRedirect::new(Redirect {
            proxy_port: 10001,
            endpoint_id: 1,
            endpoint_ip: Ipv4Addr::new(10, 0, 0, 1),
            endpoint_identity: 300,
            ingress: true,
            protocol: 6,
            port: 80,
            port_prefix: 16,
            peers,
        })
        .unwrap()
    }

    fn get(path: &str) -> HttpRule {
        HttpRule { method: Some("GET".into()), path: Some(path.into()), ..Default::default() }
    }

    fn view(method: &'static str, path: &'static str) -> HttpRequestView<'static> {
        HttpRequestView { method, path, host: "h", headers: vec![] }
    }

    #[test]
    fn rules_apply_to_their_peer_and_any_peer_rules_to_all() {
        let r = redirect(vec![
            PeerRules { identity: 256, rules: L7Rules::Http(vec![get("/a")]) },
            PeerRules { identity: 0, rules: L7Rules::Http(vec![get("/any")]) },
        ]);
        assert!(r.decide(256, &view("GET", "/a")).allowed());
        assert!(!r.decide(257, &view("GET", "/a")).allowed(), "256's rule is not 257's");
        assert!(r.decide(257, &view("GET", "/any")).allowed());
        assert!(r.decide(256, &view("GET", "/any")).allowed());
        assert!(!r.decide(256, &view("POST", "/a")).allowed());
    }

    proptest! {
        // Whatever the rules, a peer no entry names (and no any-peer entry)
        // is always denied.
        #[test]
        fn unnamed_peers_are_denied(paths in proptest::collection::vec("/[a-z]{1,5}", 0..5), p in "/[a-z]{1,5}") {
            let rules = paths.iter().map(|x| get(x)).collect();
            let r = redirect(vec![PeerRules { identity: 256, rules: L7Rules::Http(rules) }]);
            let path: &'static str = Box::leak(p.clone().into_boxed_str());
            prop_assert!(!r.decide(999, &view("GET", path)).allowed());
            prop_assert_eq!(r.decide(256, &view("GET", path)).allowed(), paths.contains(&p));
        }
    }
}
