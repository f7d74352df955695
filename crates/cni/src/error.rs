//! CNI error objects: the spec's codes, a message that names the field or
//! variable at fault, and the JSON a runtime reads on stdout.

use serde_json::json;

use crate::version::Version;

/// The spec's well-known error codes (1-99 are reserved to it).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Plugin-specific: the agent refused or failed an operation, or CHECK
    /// found the attachment broken.
    pub const AGENT: u32 = 999;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn invalid_config(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(code::INVALID_CONFIG, format!("network config field {field:?}: {reason}"))
    }

    pub fn invalid_env(variable: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(code::INVALID_ENVIRONMENT, format!("{variable}: {reason}"))
    }

    /// The error object, in the version in force (or the latest when the
    /// version itself was the problem).
    pub fn to_json(&self, version: Option<Version>) -> serde_json::Value {
        let mut out = json!({
            "cniVersion": version.unwrap_or(Version::LATEST).as_str(),
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            out["details"] = self.details.clone().into();
        }
        out
    }
}
