//! What Microplane's binaries (the operator, the gateway, services built with the SDK, the e2e node
//! agent) share around their work, so that none of them keeps its own copy:
//!
//! - [`shutdown_signal`]: a future completing on SIGTERM or SIGINT;
//! - [`Logging`]: `tracing` set up from an environment variable, as text or JSON lines;
//! - [`worker_threads`] and [`runtime`]: the tokio runtime sized from a flag, `TOKIO_WORKER_THREADS`,
//!   then the CPUs the process may use;
//! - [`Backoff`]: the capped exponential delay of every retry loop;
//! - [`admin::Admin`] (feature `admin`): the admin server, `/healthz`, `/readyz` and `/metrics`.
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     microplane_runtime::Logging::new("MICROPLANE_LOG", "info").init();
//!     microplane_runtime::runtime(None)?.block_on(async {
//!         let shutdown = microplane_runtime::shutdown_signal()?;
//!         // serve until `shutdown` completes
//!         shutdown.await;
//!         Ok(())
//!     })
//! }
//! ```

#[cfg(feature = "admin")]
pub mod admin;
mod backoff;
mod logging;
mod signal;
mod threads;

pub use backoff::Backoff;
pub use logging::{Format, Logging, Output};
pub use signal::shutdown_signal;
pub use threads::{ENV_WORKER_THREADS, available_cpus, build_runtime, runtime, worker_threads};
