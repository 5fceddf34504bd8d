//! The helloworld binary: set up logging, then serve until SIGTERM (see the library for the logic).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    microplane_sdk::logging::init();
    match helloworld::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, category = err.category(), "helloworld failed");
            ExitCode::FAILURE
        }
    }
}
