//! The small SDK Microplane services share.
//!
//! A service built with it speaks the platform's contract (docs/api.md, docs/gateway.md, docs/gateway.md#errors):
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

/// The runtime a service runs on: `TOKIO_WORKER_THREADS` worker threads, or one per CPU the process
/// may use (a pod's CPU limit counts). With one, a current-thread runtime: everything is served from
/// that thread without cross-thread wake-ups, which costs noticeably less per call on a one-CPU pod.
///
/// ```no_run
/// fn main() -> std::io::Result<()> {
///     microplane_sdk::runtime()?.block_on(async { /* Service::new(..)?.run().await */ });
///     Ok(())
/// }
/// ```
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    microplane_runtime::runtime(None)
}

/// Worker threads for `TOKIO_WORKER_THREADS` = `env` (ignored unless a positive number) on `cpus` CPUs.
#[cfg(test)]
fn worker_threads(env: Option<&str>, cpus: usize) -> usize {
    microplane_runtime::worker_threads(None, env, cpus)
}

/// The health types a service may use to report its own status (see [`Service::health_reporter`]).
pub use tonic_health::{ServingStatus, server::HealthReporter};

#[cfg(test)]
mod tests {
    use super::worker_threads;

    #[test]
    fn worker_threads_follow_the_environment_then_the_cpus() {
        assert_eq!(worker_threads(None, 4), 4);
        assert_eq!(worker_threads(Some("1"), 4), 1);
        assert_eq!(worker_threads(Some(" 3 "), 1), 3);
        assert_eq!(worker_threads(Some("0"), 2), 2);
        assert_eq!(worker_threads(Some("many"), 2), 2);
        assert_eq!(worker_threads(None, 0), 1);
    }
}
