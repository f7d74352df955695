//! Errors of agent operations: the class an API client needs (not found,
//! invalid, ...) plus, for failures below the agent, the error that caused
//! them, kept as a source so the whole chain reaches the log and the user.

use twill_api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("invalid labels")]
    Labels(#[from] twill_identity::LabelError),
    #[error("state store")]
    Store(#[from] twill_store::StoreError),
    #[error("datapath")]
    Datapath(#[from] twill_datapath::DatapathError),
    #[error("network devices")]
    Netdev(#[from] twill_datapath::netdev::NetdevError),
    #[error("identity allocation")]
    Identity(#[from] twill_identity::AllocatorError),
    #[error("address allocation")]
    Ipam(#[from] twill_ipam::IpamError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
    /// Cluster mode, the kvstore is down: the change was not made.
    #[error("{0}")]
    Unavailable(String),
}

impl AgentError {
    /// The class API clients see in `ApiError.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::NotFound(_) => "not-found",
            AgentError::AlreadyExists(_) => "already-exists",
            AgentError::Invalid(_) | AgentError::Labels(_) => "invalid",
            AgentError::Exhausted(_) => "exhausted",
            AgentError::Identity(twill_identity::AllocatorError::Exhausted) => "exhausted",
            AgentError::Ipam(twill_ipam::IpamError::Exhausted { .. }) => "exhausted",
            AgentError::Unavailable(_) => "unavailable",
            AgentError::Store(twill_store::StoreError::Unavailable { .. }) => "unavailable",
            AgentError::Identity(twill_identity::AllocatorError::Store(
                twill_store::StoreError::Unavailable { .. },
            )) => "unavailable",
            _ => "internal",
        }
    }

    /// This error and every source below it, joined as `a: b: c`.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            let part = e.to_string();
            // Wrappers that already print their source would repeat it.
            if !text.ends_with(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = e.source();
        }
        text
    }

    pub fn to_api(&self) -> ApiError {
        ApiError { kind: self.kind().into(), message: self.chain() }
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_layer_errors_keep_their_source_and_class() {
        let e = AgentError::from(twill_ipam::IpamError::InUse {
            ip: "10.0.0.2".parse().unwrap(),
            owner: "node/3".into(),
        });
        assert!(std::error::Error::source(&e).is_some(), "source kept");
        let api = e.to_api();
        assert_eq!(api.kind, "internal");
        assert!(api.message.starts_with("address allocation: "), "{}", api.message);
        assert!(api.message.contains("10.0.0.2"), "{}", api.message);

        let labels = twill_identity::LabelSet::parse_list(["app"]).unwrap_err();
        let api = AgentError::from(labels).to_api();
        assert_eq!(api.kind, "invalid");
        assert!(api.message.contains("app"), "{}", api.message);
    }
}
