//! What can go wrong while setting up or running a service.

use std::io;

use crate::config::ConfigError;

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An environment variable of the contract has a value the SDK cannot use.
    #[error("{var}: {reason}")]
    Env {
        /// The variable, e.g. `MICRO_SERVICE_ADDRESS`.
        var: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address as configured.
        address: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] io::Error),
    /// A registered file descriptor set is not a valid encoded `FileDescriptorSet`.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The configuration could not be loaded at startup.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Error {
    /// A bounded name of the kind of error, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Env { .. } => "env",
            Self::Bind { .. } => "bind",
            Self::Signal(_) => "signal",
            Self::Reflection(_) => "reflection",
            Self::Transport(_) => "transport",
            Self::Config(_) => "config",
        }
    }
}
