//! Errors of the operator, with a bounded category for metrics and events.

/// An error of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be (de)serialized.
    #[error("serialization: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The object lacks something the API server always sets (name, namespace, uid).
    #[error("malformed object: {0}")]
    Malformed(&'static str),
    /// Key generation or encoding failed.
    #[error("keys: {0}")]
    Keys(String),
    /// This replica lost the leader Lease (or is shutting down): it must not write.
    #[error("not the leader")]
    NotLeader,
}

/// Result of the operator's fallible steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Self::Kube(kube::Error::Api(s)) if s.code == 404 => "not_found",
            Self::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Self::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid",
            Self::Kube(kube::Error::Api(_)) => "api",
            Self::Kube(_) => "transport",
            Self::Serialize(_) => "serialization",
            Self::Malformed(_) => "malformed",
            Self::Keys(_) => "keys",
            Self::NotLeader => "not_leader",
        }
    }
}
