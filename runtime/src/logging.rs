//! Logging: `tracing` filtered by an environment variable, as text or JSON lines.

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines, coloured when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// [`Format::Json`] when `json`, else [`Format::Text`] (a `--log-json` flag).
    pub fn json_if(json: bool) -> Self {
        if json { Self::Json } else { Self::Text }
    }

    /// [`Format::Json`] for the value `json` in any case, else [`Format::Text`] (a variable such as
    /// `MICRO_LOG_FORMAT`).
    pub fn from_name(name: Option<&str>) -> Self {
        Self::json_if(name.is_some_and(|f| f.eq_ignore_ascii_case("json")))
    }
}

/// Where log lines go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Standard output (the operator, the gateway, the node agent).
    #[default]
    Stdout,
    /// Standard error (services built with the SDK).
    Stderr,
}

/// The global `tracing` subscriber of a binary: its filter read from an environment variable in
/// `tracing-subscriber`'s `EnvFilter` syntax (`info`, `debug,h2=info`, …) with a default, its
/// [`Format`] and its [`Output`].
///
/// ```no_run
/// use microplane_runtime::{Format, Logging, Output};
/// // The SDK's services:
/// Logging::new("MICRO_LOG", "info")
///     .format(Format::from_name(std::env::var("MICRO_LOG_FORMAT").ok().as_deref()))
///     .output(Output::Stderr)
///     .init();
/// ```
#[derive(Clone, Debug)]
pub struct Logging {
    filter_var: &'static str,
    default_filter: &'static str,
    format: Format,
    output: Output,
}

impl Logging {
    /// Logging filtered by the variable `filter_var`, or by `default_filter` when it is unset, empty
    /// or not a valid filter; as text, on standard output.
    pub fn new(filter_var: &'static str, default_filter: &'static str) -> Self {
        Self {
            filter_var,
            default_filter,
            format: Format::Text,
            output: Output::Stdout,
        }
    }

    /// The format of the lines.
    #[must_use]
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Where the lines go.
    #[must_use]
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// Installs the global subscriber and returns whether it did: calling it again (or after
    /// another subscriber was installed, as in tests) does nothing. An invalid filter falls back to
    /// the default and says so in a warning.
    pub fn init(self) -> bool {
        let value = std::env::var(self.filter_var).ok();
        let (filter, invalid) = filter(value.as_deref(), self.default_filter);
        // Colours only on a terminal: logs kept in files stay readable. (JSON lines have none.)
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
        let installed = match (self.format, self.output) {
            (Format::Text, Output::Stdout) => builder.try_init().is_ok(),
            (Format::Text, Output::Stderr) => builder.with_writer(std::io::stderr).try_init().is_ok(),
            (Format::Json, Output::Stdout) => builder.json().try_init().is_ok(),
            (Format::Json, Output::Stderr) => builder.json().with_writer(std::io::stderr).try_init().is_ok(),
        };
        if installed && let Some(err) = invalid {
            tracing::warn!(
                error = %err,
                "{} is not a valid filter; logging at {}",
                self.filter_var,
                self.default_filter
            );
        }
        installed
    }
}

/// The filter for the variable's `value`, and why it was not used when invalid.
fn filter(value: Option<&str>, default: &str) -> (EnvFilter, Option<String>) {
    match value {
        Some(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(spec) {
            Ok(filter) => (filter, None),
            Err(err) => (EnvFilter::new(default), Some(err.to_string())),
        },
        _ => (EnvFilter::new(default), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_wins_unless_unset_empty_or_invalid() {
        let default = "info,h2=warn";
        let (f, invalid) = filter(Some("debug,hyper=info"), default);
        assert_eq!(
            (f.to_string(), invalid),
            (EnvFilter::new("debug,hyper=info").to_string(), None)
        );
        for value in [None, Some(""), Some("  ")] {
            let (f, invalid) = filter(value, default);
            assert_eq!(
                (f.to_string(), invalid),
                (EnvFilter::new(default).to_string(), None),
                "{value:?}"
            );
        }
        let (f, invalid) = filter(Some("info,[{"), default);
        assert_eq!(f.to_string(), EnvFilter::new(default).to_string());
        assert!(invalid.is_some());
    }

    #[test]
    fn formats() {
        assert_eq!(Format::from_name(Some("json")), Format::Json);
        assert_eq!(Format::from_name(Some("JSON")), Format::Json);
        assert_eq!(Format::from_name(Some("text")), Format::Text);
        assert_eq!(Format::from_name(None), Format::Text);
        assert_eq!(Format::json_if(true), Format::Json);
        assert_eq!(Format::json_if(false), Format::Text);
        assert_eq!(Format::default(), Format::Text);
        assert_eq!(Output::default(), Output::Stdout);
    }
}
