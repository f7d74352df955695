//! Namespaces: named groups of endpoints whose labels become part of
//! every member's identity. This module owns their records in the store.

use std::sync::Arc;

use twill_identity::{Label, LabelSet};
use twill_store::{Store, StoreExt};

use crate::{
    error::{AgentError, Result},
    names,
    records::{namespace_key, NamespaceRecord, DEFAULT_NAMESPACE, NAMESPACES_PREFIX, NAMESPACE_NAME_LABEL},
};

pub struct Namespaces {
    store: Arc<dyn Store>,
}

impl Namespaces {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// `default` always exists, as in Kubernetes.
    pub fn ensure_default(&self) -> Result<()> {
        if self.store.get(&namespace_key(DEFAULT_NAMESPACE))?.is_none() {
            self.create(DEFAULT_NAMESPACE, &[])?;
        }
        Ok(())
    }

    pub fn create(&self, name: &str, labels: &[String]) -> Result<NamespaceRecord> {
        names::check_dns_label("namespace", name)?;
        let mut set = LabelSet::parse_list(labels.iter().map(String::as_str))?;
        // As Kubernetes does, the name label always says the name.
        set.set(Label::new("k8s", NAMESPACE_NAME_LABEL, name));
        let record = NamespaceRecord { labels: set };
        if !self.store.create_json(&namespace_key(name), &record)? {
            return Err(AgentError::AlreadyExists(format!("namespace {name} already exists")));
        }
        Ok(record)
    }

    pub fn get(&self, name: &str) -> Result<NamespaceRecord> {
        self.store.get_json::<NamespaceRecord>(&namespace_key(name))?.map(|(r, _)| r).ok_or_else(|| {
            AgentError::NotFound(format!(
                "namespace {name} does not exist (create it with `twill namespace create {name}`)"
            ))
        })
    }

    /// For restoring endpoints whose namespace record was lost: their
    /// identity then derives from no namespace labels rather than failing.
    pub fn get_or_default(&self, name: &str) -> Result<NamespaceRecord> {
        Ok(self.store.get_json::<NamespaceRecord>(&namespace_key(name))?.map(|(r, _)| r).unwrap_or_default())
    }

    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .list(NAMESPACES_PREFIX)?
            .into_iter()
            .map(|(k, _)| k[NAMESPACES_PREFIX.len()..].to_string())
            .collect())
    }

    /// Validates and applies a label change; returns the new record.
    pub fn relabel(&self, name: &str, set: &[String], remove: &[String]) -> Result<NamespaceRecord> {
        let mut record = self.get(name)?;
        let additions = LabelSet::parse_list(set.iter().map(String::as_str))?;
        check_not_reserved(
            remove.iter().map(String::as_str).chain(additions.iter().map(|l| l.key.as_str())),
        )?;
        for key in remove {
            if record.labels.get(key).is_none() {
                return Err(AgentError::Invalid(format!("namespace {name} has no label {key:?} to remove")));
            }
        }
        for key in remove {
            record.labels.remove(key);
        }
        record.labels.extend(&additions);
        self.store.put_json(&namespace_key(name), &record)?;
        Ok(record)
    }

    /// Deletes an empty namespace; `members` is how many endpoints it has.
    pub fn delete(&self, name: &str, members: usize) -> Result<NamespaceRecord> {
        let record = self.get(name)?;
        if name == DEFAULT_NAMESPACE {
            return Err(AgentError::Invalid("namespace default always exists and cannot be deleted".into()));
        }
        if members > 0 {
            return Err(AgentError::Invalid(format!(
                "namespace {name} still has {members} endpoint(s); delete them first"
            )));
        }
        self.store.delete(&namespace_key(name))?;
        Ok(record)
    }
}

fn check_not_reserved<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<()> {
    for key in keys {
        if key == NAMESPACE_NAME_LABEL {
            return Err(AgentError::Invalid(format!(
                "label {NAMESPACE_NAME_LABEL} is set by Twill and cannot be changed"
            )));
        }
    }
    Ok(())
}
