//! Logs: `tracing` to stderr, filtered by `MICRO_LOG` (default `info`).

use microplane_runtime::{Format, Logging, Output};

/// The log filter, in `tracing-subscriber`'s `EnvFilter` syntax (`info`, `debug,h2=info`, …).
pub const ENV_LOG: &str = "MICRO_LOG";
/// `json` writes one JSON object per line; anything else, human-readable lines.
pub const ENV_LOG_FORMAT: &str = "MICRO_LOG_FORMAT";
/// The filter when `MICRO_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber. Calling it again (or after another subscriber was installed,
/// as in tests) does nothing. An invalid `MICRO_LOG` falls back to `info` and says so.
pub fn init() {
    let format = Format::from_name(std::env::var(ENV_LOG_FORMAT).ok().as_deref());
    Logging::new(ENV_LOG, DEFAULT_FILTER)
        .format(format)
        .output(Output::Stderr)
        .init();
}
