//! L7 rules attached to a `toPorts` entry (`rules:`), and the pure
//! matching engine the proxy runs for every request.
//!
//! The model keeps the rules as the user wrote them (patterns as text), so
//! it stays comparable, hashable and serializable like the rest of the
//! policy model; [`HttpMatcher`] is the compiled form. Patterns are
//! compiled once at parse time too, so a bad regex is refused with its
//! field path before anything is applied.

use regex::Regex;

/// The error of a pattern that does not compile.
pub use regex::Error as RegexError;
use serde::{Deserialize, Serialize};

use crate::l7_dns::DnsMatch;

/// The L7 rules of one port. Rules of one kind only: Cilium refuses a
/// port with rules of two protocols.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum L7Rules {
    Http(Vec<HttpRule>),
    /// `rules.dns`: the names lookups through the DNS proxy may ask for.
    Dns(Vec<DnsMatch>),
}

impl L7Rules {
    /// The parser a redirect for these rules needs.
    pub fn parser(&self) -> L7Parser {
        match self {
            L7Rules::Http(_) => L7Parser::Http,
            L7Rules::Dns(_) => L7Parser::Dns,
        }
    }

    /// The union of two rule sets on one key (Cilium merges the L7 rules of
    /// every rule allowing the same peer and port).
    pub fn union(&mut self, other: &L7Rules) {
        match (self, other) {
            (L7Rules::Http(a), L7Rules::Http(b)) => {
                for r in b {
                    if !a.contains(r) {
                        a.push(r.clone());
                    }
                }
                a.sort();
            }
            (L7Rules::Dns(a), L7Rules::Dns(b)) => {
                a.extend(b.iter().cloned());
                a.sort();
                a.dedup();
            }
            // Two kinds on one key: two rules, each with one kind, allow
            // the same peer and port. Cilium refuses the second; here the
            // first kind stays, so the port keeps one parser and nothing
            // the other rules allowed gets through unchecked.
            (_, _) => {}
        }
    }

    /// Rules that allow every request of this kind: what an L3/L4 allow
    /// on a port that also has L7 rules means.
    pub fn allow_all(parser: L7Parser) -> L7Rules {
        match parser {
            L7Parser::Http => L7Rules::Http(vec![HttpRule::default()]),
            L7Parser::Dns => L7Rules::Dns(vec![DnsMatch::Pattern("*".into())]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum L7Parser {
    Http,
    Dns,
}

impl L7Parser {
    pub fn as_str(self) -> &'static str {
        match self {
            L7Parser::Http => "http",
            L7Parser::Dns => "dns",
        }
    }
}

/// One `rules.http[]` entry. Every field given must match; an entry with
/// none matches every request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HttpRule {
    /// Regex over the whole method.
    pub method: Option<String>,
    /// Regex over the whole path of the request target (without the query).
    pub path: Option<String>,
    /// Regex over the whole host (the Host header, without the port).
    pub host: Option<String>,
    /// `headers` and `headerMatches`, in order.
    pub headers: Vec<HeaderMatch>,
}

/// What to do when a `headerMatches` entry does not match. None: deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MismatchAction {
    /// Allow the request, record the mismatch.
    Log,
    /// Add the header with the wanted value.
    Add,
    /// Remove the header.
    Delete,
    /// Set the header to the wanted value.
    Replace,
}

impl MismatchAction {
    pub fn parse(text: &str) -> Option<MismatchAction> {
        Some(match text {
            "LOG" => MismatchAction::Log,
            "ADD" => MismatchAction::Add,
            "DELETE" => MismatchAction::Delete,
            "REPLACE" => MismatchAction::Replace,
            _ => return None,
        })
    }
}

/// A header condition: the header is present (`value` None), or one of
/// its values equals `value` exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeaderMatch {
    pub name: String,
    pub value: Option<String>,
    pub mismatch: Option<MismatchAction>,
}

/// A regex matched against the whole value, as Cilium (Envoy's
/// safe_regex) does: `/public` does not match `/public/x`.
pub fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        // Bound what one policy can make the proxy compile.
        .size_limit(1 << 20)
        .build()
}

/// One request as the matcher sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    /// (name, value) pairs; names compare case-insensitively.
    pub headers: Vec<(&'a str, &'a str)>,
}

/// A change to the request a matching rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Set `name` to `value`, replacing any values it has.
    Set {
        name: String,
        value: String,
    },
    Remove {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpDecision {
    /// Allowed; apply `edits` before forwarding. `logged` names headers
    /// that mismatched under action LOG.
    Allow {
        edits: Vec<HeaderEdit>,
        logged: Vec<String>,
    },
    Deny,
}

impl HttpDecision {
    pub fn allowed(&self) -> bool {
        matches!(self, HttpDecision::Allow { .. })
    }
}

struct CompiledRule {
    method: Option<Regex>,
    path: Option<Regex>,
    host: Option<Regex>,
    headers: Vec<HeaderMatch>,
}

/// Compiled HTTP rules of one redirect and peer: a request is allowed when
/// any rule matches it.
pub struct HttpMatcher {
    rules: Vec<CompiledRule>,
}

impl HttpMatcher {
    /// Compiles `rules`; the error names the field (`method`, `path`, `host`)
    /// and the index of the rule.
    pub fn new(rules: &[HttpRule]) -> Result<HttpMatcher, (usize, &'static str, regex::Error)> {
        let compile = |i: usize, field: &'static str, p: &Option<String>| {
            p.as_deref().map(anchored).transpose().map_err(|e| (i, field, e))
        };
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            out.push(CompiledRule {
                method: compile(i, "method", &r.method)?,
                path: compile(i, "path", &r.path)?,
                host: compile(i, "host", &r.host)?,
                headers: r.headers.clone(),
            });
        }
        Ok(HttpMatcher { rules: out })
    }

    /// The decision for one request: the first rule that matches it wins
    /// (with its header edits); no rule matching denies.
    pub fn decide(&self, req: &HttpRequestView) -> HttpDecision {
        self.rules.iter().find_map(|r| r.decide(req)).unwrap_or(HttpDecision::Deny)
    }
}

impl CompiledRule {
    fn decide(&self, req: &HttpRequestView) -> Option<HttpDecision> {
        let ok = |re: &Option<Regex>, v: &str| re.as_ref().is_none_or(|re| re.is_match(v));
        if !ok(&self.method, req.method) || !ok(&self.path, req.path) || !ok(&self.host, req.host) {
            return None;
        }
        let mut edits = Vec::new();
        let mut logged = Vec::new();
        for h in &self.headers {
            let mut values =
                req.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(&h.name)).map(|(_, v)| *v);
            let matched = match &h.value {
                None => values.next().is_some(),
                Some(want) => values.any(|v| v == want),
            };
            if matched {
                continue;
            }
            match (h.mismatch, &h.value) {
                (None, _) => return None,
                (Some(MismatchAction::Log), _) => logged.push(h.name.clone()),
                (Some(MismatchAction::Delete), _) => edits.push(HeaderEdit::Remove { name: h.name.clone() }),
                (Some(MismatchAction::Add | MismatchAction::Replace), Some(v)) => {
                    edits.push(HeaderEdit::Set { name: h.name.clone(), value: v.clone() })
                }
                // Nothing to add without a value: only presence was asked.
                (Some(MismatchAction::Add | MismatchAction::Replace), None) => return None,
            }
        }
        Some(HttpDecision::Allow { edits, logged })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req<'a>(method: &'a str, path: &'a str) -> HttpRequestView<'a> {
        HttpRequestView { method, path, host: "svc", headers: vec![] }
    }

    fn rule(method: Option<&str>, path: Option<&str>) -> HttpRule {
        HttpRule { method: method.map(Into::into), path: path.map(Into::into), ..Default::default() }
    }

    #[test]
    fn path_matches_the_whole_value() {
        let m = HttpMatcher::new(&[rule(Some("GET"), Some("/public"))]).unwrap();
        assert!(m.decide(&req("GET", "/public")).allowed());
        assert!(!m.decide(&req("GET", "/public/x")).allowed());
        assert!(!m.decide(&req("GET", "/x/public")).allowed());
        assert!(!m.decide(&req("POST", "/public")).allowed());
        assert!(!m.decide(&req("GETX", "/public")).allowed());
        let m = HttpMatcher::new(&[rule(None, Some("/public/.*"))]).unwrap();
        assert!(m.decide(&req("PUT", "/public/a/b")).allowed());
        assert!(!m.decide(&req("PUT", "/publicx")).allowed());
    }

    #[test]
    fn alternation_is_anchored_as_a_whole() {
        // Without the group, `^a|b$` would accept "ax".
        let m = HttpMatcher::new(&[rule(Some("GET|HEAD"), None)]).unwrap();
        assert!(m.decide(&req("HEAD", "/")).allowed());
        assert!(!m.decide(&req("GETX", "/")).allowed());
        assert!(!m.decide(&req("XHEAD", "/")).allowed());
    }

    #[test]
    fn no_rules_deny_and_an_empty_rule_allows_all() {
        assert_eq!(HttpMatcher::new(&[]).unwrap().decide(&req("GET", "/")), HttpDecision::Deny);
        assert!(HttpMatcher::new(&[HttpRule::default()]).unwrap().decide(&req("DELETE", "/x")).allowed());
    }

    #[test]
    fn host_and_headers() {
        let r = HttpRule {
            host: Some("api\\.example\\.com".into()),
            headers: vec![
                HeaderMatch { name: "X-Token".into(), value: None, mismatch: None },
                HeaderMatch { name: "X-Env".into(), value: Some("prod".into()), mismatch: None },
            ],
            ..Default::default()
        };
        let m = HttpMatcher::new(&[r]).unwrap();
        let mut q = HttpRequestView {
            method: "GET",
            path: "/",
            host: "api.example.com",
            headers: vec![("x-token", "1"), ("x-env", "prod")],
        };
        assert!(m.decide(&q).allowed());
        q.headers = vec![("x-token", "1"), ("x-env", "dev")];
        assert!(!m.decide(&q).allowed());
        q.headers = vec![("x-env", "prod")];
        assert!(!m.decide(&q).allowed());
        q.headers = vec![("x-token", "1"), ("x-env", "prod")];
        q.host = "apixexample.com";
        assert!(!m.decide(&q).allowed(), "dots are escaped");
    }

    #[test]
    fn mismatch_actions() {
        let hm = |mismatch| HttpRule {
            headers: vec![HeaderMatch { name: "X-Env".into(), value: Some("prod".into()), mismatch }],
            ..Default::default()
        };
        let q = HttpRequestView { method: "GET", path: "/", host: "h", headers: vec![("x-env", "dev")] };
        let decide = |a| HttpMatcher::new(&[hm(a)]).unwrap().decide(&q);
        assert_eq!(decide(None), HttpDecision::Deny);
        assert_eq!(
            decide(Some(MismatchAction::Log)),
            HttpDecision::Allow { edits: vec![], logged: vec!["X-Env".into()] }
        );
        assert_eq!(
            decide(Some(MismatchAction::Replace)),
            HttpDecision::Allow {
                edits: vec![HeaderEdit::Set { name: "X-Env".into(), value: "prod".into() }],
                logged: vec![]
            }
        );
        assert_eq!(
            decide(Some(MismatchAction::Delete)),
            HttpDecision::Allow { edits: vec![HeaderEdit::Remove { name: "X-Env".into() }], logged: vec![] }
        );
    }

    #[test]
    fn bad_regex_names_the_rule_and_field() {
        let err = HttpMatcher::new(&[HttpRule::default(), rule(None, Some("(/a"))]).err().unwrap();
        assert_eq!((err.0, err.1), (1, "path"));
    }

    #[test]
    fn union_adds_without_repeats() {
        let mut a = L7Rules::Http(vec![rule(Some("GET"), None)]);
        a.union(&L7Rules::Http(vec![rule(Some("GET"), None), rule(Some("PUT"), None)]));
        assert_eq!(a, L7Rules::Http(vec![rule(Some("GET"), None), rule(Some("PUT"), None)]));
    }

    proptest! {
        // A literal path rule allows exactly that path.
        #[test]
        fn literal_path_allows_exactly_itself(p in "/[a-z0-9]{0,8}", q in "/[a-z0-9]{0,8}") {
            let m = HttpMatcher::new(&[rule(None, Some(&regex::escape(&p)))]).unwrap();
            prop_assert_eq!(m.decide(&req("GET", &q)).allowed(), p == q);
        }

        // Adding rules never turns an allowed request into a denied one.
        #[test]
        fn more_rules_never_allow_less(
            methods in proptest::collection::vec("(GET|PUT|POST|DELETE)", 0..4),
            method in "(GET|PUT|POST|DELETE)",
            extra in "(GET|PUT|POST|DELETE)",
        ) {
            let rules: Vec<HttpRule> = methods.iter().map(|m| rule(Some(m), None)).collect();
            let before = HttpMatcher::new(&rules).unwrap().decide(&req(&method, "/")).allowed();
            let mut more = rules.clone();
            more.push(rule(Some(&extra), None));
            let after = HttpMatcher::new(&more).unwrap().decide(&req(&method, "/")).allowed();
            prop_assert!(!before || after);
            prop_assert_eq!(after, methods.contains(&method) || extra == method);
        }
    }
}
