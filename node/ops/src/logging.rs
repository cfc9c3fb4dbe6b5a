//! Logging setup of every Spate binary: `tracing` to stderr as text (colours only on a
//! terminal) or as JSON lines, at `--log-level`, where `RUST_LOG` (an `EnvFilter` directive
//! list) wins when set.

use std::str::FromStr;

use thiserror::Error;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for journald's or a shipper's parsing).
    Json,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown log format {0:?}: text or json")]
pub struct UnknownLogFormat(String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[derive(Debug, Error)]
#[error("invalid log level {level:?}: {reason} (a level such as info or debug, or directives such as `info,spate_node=debug`)")]
pub struct InvalidLogLevel {
    level: String,
    reason: String,
}

/// Checks a `--log-level` value (a level or an `EnvFilter` directive list).
pub fn check_level(level: &str) -> Result<(), InvalidLogLevel> {
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(|_| ())
        .map_err(|error| InvalidLogLevel {
            level: level.to_owned(),
            reason: error.to_string(),
        })
}

/// Installs the global subscriber. `level` applies when `RUST_LOG` is not set; an invalid
/// `level` falls back to `info` (configurations check it first with [`check_level`]). A
/// second call (several nodes in one process) keeps the first subscriber.
pub fn init(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    });
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_levels_are_checked() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert!("yaml".parse::<LogFormat>().is_err());
        assert!(check_level("info").is_ok());
        assert!(check_level("warn,spate_node=debug").is_ok());
        assert!(check_level("info,spate_node=loud").is_err());
    }
}
