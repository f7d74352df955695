//! Label selectors, as in Kubernetes and Cilium: `matchLabels` and
//! `matchExpressions` over `source:key=value` labels.

use std::fmt;

use serde::{Deserialize, Serialize};
use twill_identity::LabelSet;

/// Cilium's label for an endpoint's namespace.
pub const POD_NAMESPACE_KEY: &str = "io.kubernetes.pod.namespace";
/// Cilium's prefix for an endpoint's namespace labels.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// One condition on one label key. `source: None` matches any source
/// (`any:` or no prefix); `Some("k8s")` only labels from that source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirement {
    pub source: Option<String>,
    pub key: String,
    pub operator: Operator,
}

impl Requirement {
    /// Splits `source:key` as Cilium writes selector keys.
    pub fn parse_key(full: &str) -> (Option<String>, String) {
        match full.split_once(':') {
            Some(("any", key)) => (None, key.to_string()),
            Some((source, key)) => (Some(source.to_string()), key.to_string()),
            None => (None, full.to_string()),
        }
    }

    fn values_of<'a>(&'a self, labels: &'a LabelSet) -> impl Iterator<Item = &'a str> + 'a {
        labels
            .iter()
            .filter(move |l| l.key == self.key && self.source.as_ref().is_none_or(|s| *s == l.source))
            .map(|l| l.value.as_str())
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        match &self.operator {
            Operator::In(values) => self.values_of(labels).any(|v| values.iter().any(|x| x == v)),
            Operator::NotIn(values) => !self.values_of(labels).any(|v| values.iter().any(|x| x == v)),
            Operator::Exists => self.values_of(labels).next().is_some(),
            Operator::DoesNotExist => self.values_of(labels).next().is_none(),
        }
    }
}

/// A conjunction of requirements. The empty selector selects every
/// endpoint (but no reserved or CIDR identity: those are reached through
/// entities and CIDR rules, as in Cilium).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether any requirement is about `key` (any source).
    pub fn mentions(&self, key: &str) -> bool {
        self.requirements.iter().any(|r| r.key == key)
    }

    /// Restricts the selector to one namespace, as Cilium does for
    /// namespaced policies, unless it already says which namespace.
    pub fn scoped_to(mut self, namespace: &str) -> Self {
        if !self.mentions(POD_NAMESPACE_KEY) {
            self.requirements.push(Requirement {
                source: Some("k8s".into()),
                key: POD_NAMESPACE_KEY.into(),
                operator: Operator::In(vec![namespace.into()]),
            });
        }
        self.requirements.sort();
        self.requirements.dedup();
        self
    }

    pub fn and(mut self, other: &Selector) -> Self {
        self.requirements.extend(other.requirements.iter().cloned());
        self.requirements.sort();
        self.requirements.dedup();
        self
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return write!(f, "{{}}");
        }
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| {
                let key = match &r.source {
                    Some(s) => format!("{s}:{}", r.key),
                    None => r.key.clone(),
                };
                match &r.operator {
                    Operator::In(v) if v.len() == 1 => format!("{key}={}", v[0]),
                    Operator::In(v) => format!("{key} in ({})", v.join(",")),
                    Operator::NotIn(v) => format!("{key} notin ({})", v.join(",")),
                    Operator::Exists => key,
                    Operator::DoesNotExist => format!("!{key}"),
                }
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twill_identity::Label;

    fn labels(items: &[(&str, &str, &str)]) -> LabelSet {
        LabelSet::from_labels(items.iter().map(|(s, k, v)| Label::new(s, k, v)))
    }

    fn req(key: &str, operator: Operator) -> Requirement {
        let (source, key) = Requirement::parse_key(key);
        Requirement { source, key, operator }
    }

    #[test]
    fn operators() {
        let l = labels(&[("k8s", "app", "web"), ("k8s", "tier", "front")]);
        assert!(req("app", Operator::In(vec!["web".into(), "db".into()])).matches(&l));
        assert!(!req("app", Operator::In(vec!["db".into()])).matches(&l));
        assert!(req("app", Operator::NotIn(vec!["db".into()])).matches(&l));
        assert!(req("missing", Operator::NotIn(vec!["x".into()])).matches(&l), "NotIn matches absent keys");
        assert!(req("tier", Operator::Exists).matches(&l));
        assert!(req("missing", Operator::DoesNotExist).matches(&l));
        assert!(!req("tier", Operator::DoesNotExist).matches(&l));
    }

    #[test]
    fn sources() {
        let l = labels(&[("k8s", "app", "web"), ("reserved", "host", "")]);
        assert!(req("k8s:app", Operator::In(vec!["web".into()])).matches(&l));
        assert!(req("any:app", Operator::In(vec!["web".into()])).matches(&l));
        assert!(!req("container:app", Operator::In(vec!["web".into()])).matches(&l));
        assert!(req("reserved:host", Operator::In(vec!["".into()])).matches(&l));
    }

    #[test]
    fn scoping_adds_namespace_unless_given() {
        let s = Selector::default().scoped_to("prod");
        assert!(s.matches(&labels(&[("k8s", POD_NAMESPACE_KEY, "prod")])));
        assert!(!s.matches(&labels(&[("k8s", POD_NAMESPACE_KEY, "dev")])));
        let explicit = Selector {
            requirements: vec![req("k8s:io.kubernetes.pod.namespace", Operator::In(vec!["dev".into()]))],
        }
        .scoped_to("prod");
        assert!(explicit.matches(&labels(&[("k8s", POD_NAMESPACE_KEY, "dev")])));
    }
}
