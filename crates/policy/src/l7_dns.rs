//! DNS names in policy: `toPorts[].rules.dns[]` (which names an endpoint
//! may look up through the DNS proxy) and `toFQDNs[]` (which looked-up
//! names' addresses it may then connect to). Both use Cilium's selector,
//! `matchName` or `matchPattern`.
//!
//! Names are compared in one canonical form: lowercase, with the trailing
//! root dot (`www.example.com.`), so `WWW.Example.com` and
//! `www.example.com.` in a policy or a query are the same name.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::L4;

/// The longest name DNS carries (RFC 1035, in presentation form).
pub const MAX_NAME_LEN: usize = 255;

/// One `matchName` / `matchPattern`, already checked and canonical.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DnsMatch {
    /// Exactly this name.
    Name(String),
    /// Cilium's wildcard: `*` stands for any run of name characters within
    /// one label (so `*.cilium.io` matches `sub.cilium.io` but neither
    /// `cilium.io` nor `a.b.cilium.io`); the pattern `*` alone matches
    /// every name, the root `.` included.
    Pattern(String),
}

impl fmt::Display for DnsMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsMatch::Name(n) => write!(f, "matchName {n}"),
            DnsMatch::Pattern(p) => write!(f, "matchPattern {p}"),
        }
    }
}

/// The canonical form of a name as a query or an answer carries it.
pub fn canonical(name: &str) -> String {
    let mut s = name.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Checks a `matchName` value and returns its canonical form.
pub fn parse_match_name(text: &str) -> Result<String, String> {
    check_text(text, false)?;
    Ok(canonical(text))
}

/// Checks a `matchPattern` value and returns its canonical form.
pub fn parse_match_pattern(text: &str) -> Result<String, String> {
    if text.trim() == "*" {
        return Ok("*".into());
    }
    check_text(text, true)?;
    Ok(canonical(text))
}

fn check_text(text: &str, wildcard: bool) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.len() > MAX_NAME_LEN {
        return Err(format!("is {} characters long; a DNS name has at most {MAX_NAME_LEN}", text.len()));
    }
    if let Some(bad) = text.chars().find(|c| !(name_char(*c) || *c == '.' || (wildcard && *c == '*'))) {
        let allowed = if wildcard {
            "letters, digits, '-', '_', '.' and '*'"
        } else {
            "letters, digits, '-', '_' and '.'"
        };
        return Err(format!("{text:?} contains {bad:?}; only {allowed} are allowed"));
    }
    let body = text.strip_suffix('.').unwrap_or(text);
    if body.split('.').any(str::is_empty) {
        return Err(format!("{text:?} has an empty label (two dots in a row, or a leading dot)"));
    }
    if let Some(label) = body.split('.').find(|l| l.len() > 63) {
        return Err(format!("label {label:?} is longer than 63 characters"));
    }
    Ok(())
}

impl DnsMatch {
    /// Whether `name` (in canonical form, see [`canonical`]) is selected.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            DnsMatch::Name(n) => n == name,
            DnsMatch::Pattern(p) if p == "*" => name == "." || name.chars().all(|c| name_char(c) || c == '.'),
            DnsMatch::Pattern(p) => glob(p.as_bytes(), name.as_bytes()),
        }
    }
}

/// `*` matches any run (possibly empty) of name characters, never a dot.
/// Iterative with one backtrack point per star, so linear-ish and never
/// exponential, whatever a policy writes.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star.filter(|&(_, sn)| name_char(name[sn] as char)) {
            // Let the last star swallow one more character, if it may.
            star = Some((sp, sn + 1));
            p = sp + 1;
            n = sn + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The DNS rules of one `toPorts` entry: lookups through the proxy on
/// these ports are allowed for names any of `names` matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsPortRule {
    /// The entry's ports (empty: every port).
    pub l4: Vec<L4>,
    pub names: Vec<DnsMatch>,
}

impl DnsPortRule {
    pub fn allows(&self, name: &str) -> bool {
        self.names.iter().any(|m| m.matches(name))
    }
}

/// Parses one FQDN selector (a `toFQDNs` entry or a `rules.dns` entry),
/// reporting problems as (path, reason).
pub fn parse_selector(value: &Value, path: &str, problems: &mut Vec<(String, String)>) -> Option<DnsMatch> {
    let Some(obj) = value.as_object() else {
        problems.push((path.into(), "expected a mapping with matchName or matchPattern".into()));
        return None;
    };
    for key in obj.keys().filter(|k| *k != "matchName" && *k != "matchPattern") {
        problems.push((format!("{path}.{key}"), "unknown field; expected matchName or matchPattern".into()));
    }
    let text = |key: &str, problems: &mut Vec<(String, String)>| match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push((format!("{path}.{key}"), "expected a string".into()));
            None
        }
    };
    let (name, pattern) = (text("matchName", problems), text("matchPattern", problems));
    let mut checked = |key: &str, r: Result<String, String>, f: fn(String) -> DnsMatch| match r {
        Ok(s) => Some(f(s)),
        Err(reason) => {
            problems.push((format!("{path}.{key}"), reason));
            None
        }
    };
    match (name, pattern) {
        (Some(_), Some(_)) => {
            problems.push((path.into(), "set one of matchName and matchPattern, not both".into()));
            None
        }
        (Some(n), None) => checked("matchName", parse_match_name(&n), DnsMatch::Name),
        (None, Some(p)) => checked("matchPattern", parse_match_pattern(&p), DnsMatch::Pattern),
        (None, None) => {
            if obj.get("matchName").is_none() && obj.get("matchPattern").is_none() {
                problems.push((path.into(), "set matchName or matchPattern".into()));
            }
            None
        }
    }
}

/// Parses `toPorts[i].rules.dns` at `path`: its name selectors.
pub fn parse_dns_rules(
    value: &Value,
    path: &str,
    problems: &mut Vec<(String, String)>,
) -> Option<Vec<DnsMatch>> {
    let Some(list) = value.as_array() else {
        problems.push((path.into(), "expected a list of matchName/matchPattern entries".into()));
        return None;
    };
    Some(
        list.iter()
            .enumerate()
            .filter_map(|(i, e)| parse_selector(e, &format!("{path}[{i}]"), problems))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pat(p: &str) -> DnsMatch {
        DnsMatch::Pattern(parse_match_pattern(p).unwrap())
    }

    #[test]
    fn names_are_case_insensitive_and_the_root_dot_optional() {
        let m = DnsMatch::Name(parse_match_name("WWW.Cilium.io").unwrap());
        assert!(m.matches(&canonical("www.cilium.io")));
        assert!(m.matches(&canonical("www.CILIUM.io.")));
        assert!(!m.matches(&canonical("cilium.io")));
        assert!(!m.matches(&canonical("wwwxcilium.io")), "a dot in a name is not a wildcard");
    }

    #[test]
    fn star_alone_matches_everything() {
        for n in [".", "a.", "x.test.", "a-b_c.d.e.f."] {
            assert!(pat("*").matches(n), "{n}");
        }
    }

    #[test]
    fn star_label_matches_one_level_of_subdomains_only() {
        let p = pat("*.cilium.io");
        assert!(p.matches("sub.cilium.io."));
        assert!(p.matches("sub-2_x.cilium.io."));
        assert!(!p.matches("cilium.io."));
        assert!(!p.matches("a.b.cilium.io."));
        assert!(!p.matches("sub.cilium.io.evil."));
    }

    #[test]
    fn star_inside_a_label() {
        let p = pat("api-*.example.com");
        assert!(p.matches("api-1.example.com."));
        assert!(p.matches("api-.example.com."));
        assert!(!p.matches("api.example.com."));
        let p = pat("*cilium*.io");
        assert!(p.matches("cilium.io."));
        assert!(p.matches("xciliumy.io."));
        assert!(!p.matches("x.cilium.io."));
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        assert!(parse_match_name("").unwrap_err().contains("empty"));
        assert!(parse_match_name("a..b").unwrap_err().contains("empty label"));
        assert!(parse_match_name("a*.b").unwrap_err().contains("'*'"));
        assert!(parse_match_name("exa mple.com").unwrap_err().contains("' '"));
        assert!(parse_match_name(&"a".repeat(64)).unwrap_err().contains("63"));
        assert!(parse_match_name(&"a.".repeat(130)).unwrap_err().contains("255"));
        assert!(parse_match_pattern("*.ex/ample").unwrap_err().contains("'/'"));
    }

    #[test]
    fn selectors_from_documents() {
        let mut problems = vec![];
        let v: Value = serde_json::json!({"matchName": "a.b", "matchPattern": "*"});
        assert!(parse_selector(&v, "x", &mut problems).is_none());
        assert_eq!(problems[0].0, "x");
        problems.clear();
        let v: Value = serde_json::json!({"matchPatern": "*"});
        parse_selector(&v, "x", &mut problems);
        assert_eq!(problems[0].0, "x.matchPatern");
        problems.clear();
        let v: Value = serde_json::json!([{"matchName": "ok.test"}]);
        assert_eq!(parse_dns_rules(&v, "r", &mut problems).unwrap(), vec![DnsMatch::Name("ok.test.".into())]);
        assert!(parse_dns_rules(&serde_json::json!({"matchName": "x"}), "r", &mut problems).is_none());
        assert_eq!(problems[0].0, "r");
    }

    /// A regular-expression-free reference: split into labels and match a
    /// star label by label.
    fn reference(pattern: &str, name: &str) -> bool {
        fn label(p: &[u8], n: &[u8]) -> bool {
            match p.split_first() {
                None => n.is_empty(),
                Some((b'*', rest)) => (0..=n.len()).any(|k| label(rest, &n[k..])),
                Some((c, rest)) => n.first() == Some(c) && label(rest, &n[1..]),
            }
        }
        let (pl, nl): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), name.split('.').collect());
        pl.len() == nl.len() && pl.iter().zip(&nl).all(|(p, n)| label(p.as_bytes(), n.as_bytes()))
    }

    proptest! {
        #[test]
        fn glob_agrees_with_the_label_reference(
            p in "[ab*]{0,3}(\\.[ab*]{1,3}){0,2}",
            n in "[ab]{0,3}(\\.[ab]{1,3}){0,2}",
        ) {
            let (p, n) = (format!("{p}."), format!("{n}."));
            prop_assume!(p != "*.");
            prop_assert_eq!(glob(p.as_bytes(), n.as_bytes()), reference(&p, &n), "{} vs {}", p, n);
        }

        #[test]
        fn matching_ignores_case(n in "[a-zA-Z]{1,5}\\.[a-zA-Z]{1,5}") {
            let m = DnsMatch::Name(parse_match_name(&n).unwrap());
            prop_assert!(m.matches(&canonical(&n.to_uppercase())));
            let dotted = n.to_lowercase() + ".";
            prop_assert!(m.matches(&canonical(&dotted)));
        }
    }
}

#[cfg(test)]
mod conversion_tests {
    use super::*;
    use crate::model::{Peer, PROTO_UDP};

    fn convert(yaml: &str) -> Result<Vec<crate::Policy>, Vec<String>> {
        crate::parse_policies("dns.yaml", yaml).map_err(|e| e.iter().map(|e| e.to_string()).collect())
    }

    const DNS_AND_FQDN: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: fqdn, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {k8s-app: kube-dns}}]
    toPorts:
    - ports: [{port: "53", protocol: UDP}]
      rules:
        dns:
        - matchName: Allowed.X.test
        - matchPattern: "*.pattern.test"
    - ports: [{port: "5353", protocol: UDP}]
  - toFQDNs:
    - matchName: allowed.x.test.
    - matchPattern: "*"
"#;

    #[test]
    fn dns_rules_and_to_fqdns_reach_the_model() {
        let p = convert(DNS_AND_FQDN).unwrap();
        assert!(p[0].has_dns_parts());
        let egress = &p[0].rules[0].egress;
        let dns = &egress.allow[0].dns;
        assert_eq!(dns.len(), 1, "only the toPorts entry with rules has DNS rules");
        assert_eq!(dns[0].l4.len(), 1);
        assert_eq!(dns[0].l4[0].protocol, PROTO_UDP);
        assert!(dns[0].allows("allowed.x.test."));
        assert!(dns[0].allows("a.pattern.test."));
        assert!(!dns[0].allows("pattern.test."));
        assert_eq!(egress.allow[0].l4.len(), 2, "both port entries still allow L4");
        assert_eq!(
            egress.allow[1].peers,
            vec![
                Peer::Fqdn(DnsMatch::Name("allowed.x.test.".into())),
                Peer::Fqdn(DnsMatch::Pattern("*".into()))
            ]
        );
    }

    #[test]
    fn policies_without_them_say_so() {
        let p = convert(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: plain}\nspec:\n  endpointSelector: {}\n  egress:\n  - toPorts: [{ports: [{port: \"53\"}]}]\n",
        )
        .unwrap();
        assert!(!p[0].has_dns_parts());
    }

    fn one_error(yaml_tail: &str) -> String {
        let doc = format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: bad}}\nspec:\n  endpointSelector: {{}}\n{yaml_tail}"
        );
        let errs = convert(&doc).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs[0].clone()
    }

    #[test]
    fn errors_name_the_field() {
        let e = one_error("  egress:\n  - toFQDNs: [{matchName: ok.test}, {matchPattern: \"a/b\"}]\n");
        assert!(e.contains("spec.egress[0].toFQDNs[1].matchPattern: \"a/b\" contains '/'"), "{e}");
        let e = one_error("  egress:\n  - toFQDNs: [{}]\n");
        assert!(e.contains("spec.egress[0].toFQDNs[0]: set matchName or matchPattern"), "{e}");
        let e = one_error("  egress:\n  - toFQDNs: [{matchName: a.test}]\n    toCIDR: [10.0.0.0/8]\n");
        assert!(e.contains("spec.egress[0].toFQDNs: cannot be combined"), "{e}");
        let both = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: bad}\nspec:\n  endpointSelector: {}\n  egress:\n  - toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchName: a.test}], http: [{method: GET}]}}]\n";
        let errs = convert(both).unwrap_err();
        assert!(
            errs.iter().any(|e| e.contains("spec.egress[0].toPorts[0].rules: holds dns and http")),
            "{errs:?}"
        );
        let e = one_error(
            "  egress:\n  - toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchName: \"a..b\"}]}}]\n",
        );
        assert!(e.contains("spec.egress[0].toPorts[0].rules.dns[0].matchName"), "{e}");
        let e = one_error(
            "  ingress:\n  - toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchName: a.test}]}}]\n",
        );
        assert!(e.contains("spec.ingress[0].toPorts: rules.dns is allowed in egress rules only"), "{e}");
        let e =
            one_error("  egress:\n  - toPorts: [{ports: [{port: \"80\"}], rules: {kafka: [{topic: t}]}}]\n");
        assert!(e.contains("spec.egress[0].toPorts[0].rules.kafka: is not supported by Twill yet"), "{e}");
    }
}
