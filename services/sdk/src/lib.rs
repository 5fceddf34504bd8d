//! The small SDK Microplane services share.
//!
//! A service built with it speaks the platform's contract (SPEC §2, §4, §6, §7):
//!
//! - [`Service`] reads `MICRO_SERVICE_NAME`, `MICRO_SERVICE_VERSION`, `MICRO_NAMESPACE`,
//!   `MICRO_SERVICE_ADDRESS` and `MICRO_CONFIG_DIR` ([`Options`]), serves tonic services together with
//!   gRPC health (`grpc.health.v1`, what the pod's probes ask) and server reflection (v1 and v1alpha,
//!   what the gateway reads endpoints and descriptors from), and shuts down gracefully on SIGTERM or
//!   SIGINT, reporting `NOT_SERVING` while it drains.
//! - [`config::Config`] is the service's view of the `Config` objects delivered to the pod, with
//!   dot-path lookups and live reload.
//! - [`identity::Identity`] is the caller the gateway verified, read from request metadata.
//! - [`errors`] builds Micro-style errors (`{"id","code","detail","status"}`) the gateway relays.
//! - [`logging::init`] sets up `tracing` from `MICRO_LOG`.
//!
//! ```no_run
//! # async fn run() -> Result<(), microplane_sdk::Error> {
//! let service = microplane_sdk::Service::new("helloworld")?;
//! // .file_descriptor_set(pb::FILE_DESCRIPTOR_SET).add_service(pb::helloworld_server::HelloworldServer::new(handler))
//! service.run().await
//! # }
//! ```

pub mod config;
mod error;
pub mod errors;
pub mod identity;
pub mod logging;
mod options;
mod service;

pub use error::Error;
pub use identity::Identity;
pub use options::{Address, Options};
pub use service::{DEFAULT_SHUTDOWN_TIMEOUT, Service, shutdown_signal};

/// The health types a service may use to report its own status (see [`Service::health_reporter`]).
pub use tonic_health::{ServingStatus, server::HealthReporter};
