use twill_api::ApiError;

/// Errors of agent operations, classed the way API clients need them.
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
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    pub fn to_api(&self) -> ApiError {
        let kind = match self {
            AgentError::NotFound(_) => "not-found",
            AgentError::AlreadyExists(_) => "already-exists",
            AgentError::Invalid(_) => "invalid",
            AgentError::Exhausted(_) => "exhausted",
            AgentError::Internal(_) => "internal",
        };
        ApiError { kind: kind.into(), message: self.to_string() }
    }
}

macro_rules! internal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for AgentError {
            fn from(e: $t) -> Self {
                AgentError::Internal(e.to_string())
            }
        }
    )*};
}

internal_from!(twill_store::StoreError, twill_datapath::DatapathError, twill_datapath::netdev::NetdevError);

impl From<twill_identity::AllocatorError> for AgentError {
    fn from(e: twill_identity::AllocatorError) -> Self {
        match e {
            twill_identity::AllocatorError::Exhausted => AgentError::Exhausted(e.to_string()),
            other => AgentError::Internal(other.to_string()),
        }
    }
}

impl From<twill_ipam::IpamError> for AgentError {
    fn from(e: twill_ipam::IpamError) -> Self {
        match e {
            twill_ipam::IpamError::Exhausted { .. } => AgentError::Exhausted(e.to_string()),
            other => AgentError::Internal(other.to_string()),
        }
    }
}

impl From<twill_identity::LabelError> for AgentError {
    fn from(e: twill_identity::LabelError) -> Self {
        AgentError::Invalid(e.to_string())
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
