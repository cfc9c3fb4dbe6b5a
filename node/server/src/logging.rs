//! Logging setup of the binaries that run a node without a node configuration of their own
//! (`spate-bench`, `spate up` before its flags are read): text to stderr, filtered by
//! `RUST_LOG` or the given default (`spate_ops::logging`).

/// Installs the global subscriber; `default_filter` applies when `RUST_LOG` is not set.
pub fn init(default_filter: &str) {
    spate_ops::logging::init(spate_ops::LogFormat::Text, default_filter);
}
