//! Logs: `tracing` to stderr, filtered by `MICRO_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// The log filter, in `tracing-subscriber`'s `EnvFilter` syntax (`info`, `debug,h2=info`, …).
pub const ENV_LOG: &str = "MICRO_LOG";
/// `json` writes one JSON object per line; anything else, human-readable lines.
pub const ENV_LOG_FORMAT: &str = "MICRO_LOG_FORMAT";
/// The filter when `MICRO_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber. Calling it again (or after another subscriber was installed,
/// as in tests) does nothing. An invalid `MICRO_LOG` falls back to `info` and says so.
pub fn init() {
    let (filter, invalid) = match std::env::var(ENV_LOG) {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(err) => (EnvFilter::new(DEFAULT_FILTER), Some(err.to_string())),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let json = std::env::var(ENV_LOG_FORMAT).is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: logs kept in files stay readable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let installed = if json {
        builder.json().try_init().is_ok()
    } else {
        builder.try_init().is_ok()
    };
    if installed && let Some(err) = invalid {
        tracing::warn!(error = %err, "{ENV_LOG} is not a valid filter; logging at {DEFAULT_FILTER}");
    }
}
