//! The `spate-node` process: flags in, a node serving until a signal stops it.

use std::process::ExitCode;

use crate::{Flags, NodeCommand, NodeConfig};

/// What the `spate-node` binary does with its parsed flags (also `spate node`, which `spate up
/// --nodes N` runs as its members): `check`, or start the node, print every shard's address
/// once it serves (`shard N listening on HOST:PORT`, one line each, on stdout), re-run the
/// recovery of fenced partitions on SIGHUP, and shut down gracefully on SIGTERM or Ctrl-C.
pub fn run(flags: Flags) -> ExitCode {
    if let Some(NodeCommand::Check { data_dir }) = &flags.command {
        crate::logging::init("info");
        let dir = data_dir
            .clone()
            .unwrap_or_else(|| crate::config::DATA_DIR_DEFAULT.into());
        return match crate::check::check(&dir, &mut std::io::stdout().lock()) {
            Ok(summary) => {
                tracing::info!(
                    partitions = summary.partitions,
                    damaged = summary.damaged,
                    identity_damaged = summary.identity_damaged,
                    "check finished"
                );
                if summary.is_damaged() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(error) => {
                tracing::error!("{error}");
                ExitCode::from(2)
            }
        };
    }
    let config = match NodeConfig::resolve(flags) {
        Ok(config) => config,
        Err(error) => {
            crate::logging::init("info");
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    config.init_logging();
    // SIGTERM and SIGINT start a graceful shutdown instead of killing the process mid-sync.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!("cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The metrics listener starts first: `/readyz` answers 503 while the shards recover.
    let (metrics, listener) = match crate::metrics::serve(&config) {
        Ok(Some((metrics, listener))) => (Some(metrics), Some(listener)),
        Ok(None) => (None, None),
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let node = match crate::start_observed(config.clone(), metrics) {
        Ok(node) => node,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    for (shard, endpoint) in node.endpoints.iter().enumerate() {
        // The contract scripts and tests rely on: one line per shard on stdout.
        spate_ops::announce(&format!("shard {shard} listening on {endpoint}"));
    }
    if let Some(listener) = &listener {
        // After the shard lines, which scripts read by count.
        spate_ops::announce(&format!("metrics listening on {}", listener.address));
    }
    tracing::info!(shards = node.endpoints.len(), data_dir = %config.data_dir.display(), "spate-node ready");
    spate_ops::notify::ready();
    // SIGHUP: re-run recovery of fenced partitions (the operator fixed the disk).
    let mut signal = 0;
    for received in signals.forever() {
        if received == signal_hook::consts::SIGHUP {
            tracing::info!("SIGHUP: re-running recovery of fenced partitions");
            node.retry_fenced();
            continue;
        }
        signal = received;
        break;
    }
    tracing::info!(signal, "shutting down: finishing in-flight syncs");
    spate_ops::notify::stopping();
    node.shutdown();
    drop(listener);
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
