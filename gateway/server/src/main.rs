//! The `spate-gateway` binary: parses flags and runs the gateway until SIGTERM or Ctrl-C
//! ([`spate_gateway::run`]), on jemalloc with a background thread that gives freed memory
//! back to the system.

use std::process::ExitCode;

use clap::Parser;
use spate_gateway::{Flags, GatewayConfig};

/// jemalloc, not the system allocator. Under a partial-frame attack the gateway holds about a
/// gigabyte by default (partial frames, and unread data in the datagrams quinn received, at
/// most 16 KiB each), freed when the attackers close. glibc kept it free in its per-thread
/// arenas (RSS 0.87–1.06 GiB with 0.7 MiB in use, 13 MiB after a `malloc_trim(0)`), as it
/// returns an arena's memory only from its top. jemalloc returns freed pages within its dirty decay time (10 s),
/// from a background thread even when the gateway is idle, without unsafe code here.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc purges freed pages only on allocator calls unless a background thread does it;
/// an idle gateway after an attack makes few calls. One thread is enough for one process.
#[cfg(not(target_env = "msvc"))]
fn return_freed_memory_in_background() -> Result<(), tikv_jemalloc_ctl::Error> {
    tikv_jemalloc_ctl::max_background_threads::write(1)?;
    tikv_jemalloc_ctl::background_thread::write(true)
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match GatewayConfig::resolve(Flags::parse()) {
        Ok(config) => config,
        Err(error) => {
            spate_ops::logging::init(spate_ops::LogFormat::Text, "info");
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    config.init_logging();
    #[cfg(not(target_env = "msvc"))]
    if let Err(error) = return_freed_memory_in_background() {
        tracing::warn!(
            "cannot start jemalloc's background thread: {error}; freed memory is returned to \
             the system only while the gateway allocates"
        );
    }
    spate_gateway::run(config).await
}
