//! The standard `process_*` metrics of a Prometheus client (open and allowed file
//! descriptors, resident memory, CPU time, start time), read from `/proc` and `getrusage` at
//! each scrape, on the metrics thread.

use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::DescriptorEncoder;

use crate::expose::gauge;

/// When the process started serving metrics (its first moments: each binary starts its
/// listener right after parsing its configuration).
static STARTED: OnceLock<f64> = OnceLock::new();

/// Records the process' start time (the first call wins).
pub fn mark_start() {
    STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64())
    });
}

fn open_fds() -> Option<f64> {
    let count = std::fs::read_dir("/proc/self/fd").ok()?.count();
    // The directory handle `read_dir` holds is one of them.
    #[allow(clippy::cast_precision_loss)]
    Some(count.saturating_sub(1) as f64)
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    // "Max open files            1024                 1048576              files"
    line.split_whitespace().nth(3)?.parse().ok()
}

fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

fn cpu_seconds() -> Option<f64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |time: nix::sys::time::TimeVal| {
        #[allow(clippy::cast_precision_loss)]
        let value = time.tv_sec() as f64 + time.tv_usec() as f64 / 1e6;
        value
    };
    Some(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// Writes the `process_*` families (a value the system does not give is left out).
pub fn encode(encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let one = |value: Option<f64>| {
        value
            .map(|value| (Vec::new(), value))
            .into_iter()
            .collect::<Vec<_>>()
    };
    gauge(
        encoder,
        "process_open_fds",
        "Open file descriptors.",
        &one(open_fds()),
    )?;
    gauge(
        encoder,
        "process_max_fds",
        "The open-file limit (RLIMIT_NOFILE).",
        &one(max_fds()),
    )?;
    gauge(
        encoder,
        "process_resident_memory_bytes",
        "Resident memory.",
        &one(resident_bytes()),
    )?;
    gauge(
        encoder,
        "process_start_time_seconds",
        "Start time of the process, in seconds since the Unix epoch.",
        &one(STARTED.get().copied()),
    )?;
    // CPU time: a counter of fractional seconds.
    let mut family = encoder.encode_descriptor(
        "process_cpu_seconds",
        "User and system CPU time spent.",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    if let Some(cpu) = cpu_seconds() {
        family.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&cpu, None)?;
    }
    Ok(())
}
