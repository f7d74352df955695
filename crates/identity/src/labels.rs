//! Labels in Cilium's form, `source:key=value`, with Kubernetes' syntax
//! rules for keys and values.

use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};

/// Source used when a label is given without one: endpoint and namespace
/// labels behave like Kubernetes pod labels, so policies written for
/// Kubernetes (`k8s:` or no prefix) select them.
pub const DEFAULT_SOURCE: &str = "k8s";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Label {
    pub source: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label {input:?}: expected KEY=VALUE")]
    MissingEquals { input: String },
    #[error("label {input:?}: key {key:?} {reason}")]
    BadKey { input: String, key: String, reason: String },
    #[error("label {input:?}: value {value:?} {reason}")]
    BadValue { input: String, value: String, reason: String },
    #[error("label key {key:?} is given twice")]
    Duplicate { key: String },
}

impl Label {
    pub fn new(source: &str, key: &str, value: &str) -> Self {
        Self { source: source.into(), key: key.into(), value: value.into() }
    }

    /// Parses `[source:]key=value` as a user would type it, applying
    /// Kubernetes' rules for label keys and values.
    pub fn parse(input: &str) -> Result<Self, LabelError> {
        let (lhs, value) =
            input.split_once('=').ok_or_else(|| LabelError::MissingEquals { input: input.into() })?;
        let (source, key) = match lhs.split_once(':') {
            Some((source, key)) => (source, key),
            None => (DEFAULT_SOURCE, lhs),
        };
        if let Err(reason) = check_key(key) {
            return Err(LabelError::BadKey { input: input.into(), key: key.into(), reason });
        }
        if let Err(reason) = check_value(value) {
            return Err(LabelError::BadValue { input: input.into(), value: value.into(), reason });
        }
        if source.is_empty() || !source.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(LabelError::BadKey {
                input: input.into(),
                key: lhs.into(),
                reason: "has an invalid source prefix".into(),
            });
        }
        Ok(Self::new(source, key, value))
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.key)?;
        if !self.value.is_empty() {
            write!(f, "={}", self.value)?;
        }
        Ok(())
    }
}

/// Kubernetes label keys: an optional DNS-subdomain prefix and '/', then a
/// name of at most 63 characters.
fn check_key(key: &str) -> Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err("has a prefix that is empty or longer than 253 characters".into());
            }
            let valid = prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
            if !valid {
                return Err("has a prefix that is not a lowercase DNS subdomain".into());
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("is empty".into());
    }
    check_name_chars(name, "name")
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_chars(value, "value")
}

fn check_name_chars(text: &str, what: &str) -> Result<(), String> {
    if text.len() > 63 {
        return Err(format!("is longer than 63 characters ({} {what})", text.len()));
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if !text.starts_with(alnum) || !text.ends_with(alnum) {
        return Err("must start and end with a letter or digit".into());
    }
    if let Some(c) = text.chars().find(|&c| !(alnum(c) || c == '-' || c == '_' || c == '.')) {
        return Err(format!("contains {c:?}; only letters, digits, '-', '_' and '.' are allowed"));
    }
    Ok(())
}

/// An ordered set of labels; one key appears at most once per source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LabelSet(BTreeSet<Label>);

impl LabelSet {
    pub fn from_labels(labels: impl IntoIterator<Item = Label>) -> Self {
        Self(labels.into_iter().collect())
    }

    /// Parses user input such as `app=web,tier=db` (also accepting a list
    /// of single labels). A key given twice is an error.
    pub fn parse_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, LabelError> {
        let mut set = Self::default();
        for item in items {
            for part in item.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let label = Label::parse(part)?;
                if set.get(&label.key).is_some() {
                    return Err(LabelError::Duplicate { key: label.key });
                }
                set.0.insert(label);
            }
        }
        Ok(set)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Label> {
        self.0.iter().find(|l| l.key == key)
    }

    /// Sets a label, replacing any label with the same key.
    pub fn set(&mut self, label: Label) {
        self.0.retain(|l| l.key != label.key);
        self.0.insert(label);
    }

    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|l| l.key != key);
        before != self.0.len()
    }

    pub fn extend(&mut self, other: &LabelSet) {
        for label in other.iter() {
            self.set(label.clone());
        }
    }

    /// A stable text form: equal sets give equal strings.
    pub fn canonical(&self) -> String {
        self.0.iter().map(|l| format!("{}:{}={}", l.source, l.key, l.value)).collect::<Vec<_>>().join(";")
    }

    /// `source:key=value` strings, sorted, as Cilium prints them.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|l| l.to_string()).collect()
    }

    /// `key=value` pairs without the source, for user-facing maps.
    pub fn to_plain(&self) -> std::collections::BTreeMap<String, String> {
        self.0.iter().map(|l| (l.key.clone(), l.value.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_prefixed_and_sourced_labels() {
        assert_eq!(Label::parse("app=web").unwrap(), Label::new("k8s", "app", "web"));
        assert_eq!(Label::parse("example.com/tier=db").unwrap(), Label::new("k8s", "example.com/tier", "db"));
        assert_eq!(Label::parse("container:app=x").unwrap(), Label::new("container", "app", "x"));
        assert_eq!(Label::parse("flag=").unwrap(), Label::new("k8s", "flag", ""));
    }

    #[test]
    fn rejects_bad_syntax_with_a_reason() {
        assert!(matches!(Label::parse("app"), Err(LabelError::MissingEquals { .. })));
        assert!(matches!(Label::parse("=x"), Err(LabelError::BadKey { .. })));
        assert!(matches!(Label::parse("-app=x"), Err(LabelError::BadKey { .. })));
        assert!(matches!(Label::parse("app=a b"), Err(LabelError::BadValue { .. })));
        assert!(matches!(Label::parse(&format!("app={}", "v".repeat(64))), Err(LabelError::BadValue { .. })));
        assert!(matches!(Label::parse("Bad_Prefix/app=x"), Err(LabelError::BadKey { .. })));
        let err = Label::parse("app=a b").unwrap_err().to_string();
        assert!(err.contains("app=a b") && err.contains("' '"), "{err}");
    }

    #[test]
    fn canonical_form_ignores_input_order() {
        let a = LabelSet::parse_list(["b=2,a=1"]).unwrap();
        let b = LabelSet::parse_list(["a=1", "b=2"]).unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.to_strings(), vec!["k8s:a=1", "k8s:b=2"]);
    }

    #[test]
    fn duplicate_keys_are_refused_and_set_replaces() {
        assert!(matches!(LabelSet::parse_list(["a=1,a=2"]), Err(LabelError::Duplicate { .. })));
        let mut set = LabelSet::parse_list(["a=1"]).unwrap();
        set.set(Label::new("k8s", "a", "2"));
        assert_eq!(set.to_strings(), vec!["k8s:a=2"]);
        assert!(set.remove("a"));
        assert!(set.is_empty());
    }
}
