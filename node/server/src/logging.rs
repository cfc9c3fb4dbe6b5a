//! Logging setup shared by the binaries that run a node (`spate-node`, `spate up`,
//! `spate-bench`): `tracing` to stderr, filtered by `RUST_LOG` or the given default, colours
//! only on a terminal.

/// Installs the global subscriber; `default_filter` applies when `RUST_LOG` is not set.
pub fn init(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
}
