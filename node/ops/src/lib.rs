//! `spate-ops`: what Spate's server processes share to be operated: the cells metrics are
//! counted in (written by one shard's thread without locks or shared atomics, read by
//! scrapes), the Prometheus exposition and the `/healthz` and `/readyz` endpoints on a thread
//! of their own, the logging setup (`--log-format`, `--log-level`, `RUST_LOG`) and systemd
//! notification. A shell crate: it runs a thread and does I/O; the pure crates never use it.

pub mod cells;
pub mod endpoint;
pub mod expose;
pub mod logging;
pub mod notify;
pub mod process;

pub use cells::{Count, Histogram, HistogramSnapshot, Level};
pub use endpoint::{serve, EndpointError, MetricsListener};
pub use expose::{counter, gauge, histogram, Exposition, Labels, Readiness};
pub use logging::LogFormat;

/// The value of `--metrics-listen` that turns metrics off (nothing counted, nothing served).
pub const METRICS_OFF: &str = "none";

/// Prints one of the lines scripts wait for on stdout (`shard 0 listening on …`) and flushes
/// it. A closed stdout (a supervisor that read the first line and went away) is ignored: a
/// server never stops because nobody reads what it announces.
pub fn announce(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
