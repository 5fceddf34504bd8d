//! The helloworld binary: set up logging, then serve until SIGTERM (see the library for the logic).

use std::process::ExitCode;

fn main() -> ExitCode {
    microplane_sdk::logging::init();
    // One worker (a one-CPU pod, or TOKIO_WORKER_THREADS=1): a current-thread runtime.
    let runtime = match microplane_sdk::runtime() {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(error = %err, "starting the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(helloworld::run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, category = err.category(), "helloworld failed");
            ExitCode::FAILURE
        }
    }
}
