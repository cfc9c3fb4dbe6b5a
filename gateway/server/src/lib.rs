//! `spate-gateway`: the stateless QUIC front. It terminates QUIC and TLS 1.3 (ALPN
//! `spate/1`), learns the partition → shard map from the node, and forwards every frame to
//! the owning shard over pooled, pipelined TCP links, rewriting only the frame header's
//! correlation id. Record batches are never decoded on the QUIC path; the Kafka listener
//! (`kafka`) swaps batch headers between Kafka's format and Spate's (`spate_kafka`).

pub mod budget;
pub mod config;
pub mod kafka;
pub mod kafka_admin;
pub mod kafka_groups;
pub mod link;
pub mod metrics;
pub mod router;
pub mod server;
pub mod tls;

pub use config::{Flags, GatewayConfig};
pub use server::{start, Gateway, GatewayError};

use std::process::ExitCode;

/// What the `spate-gateway` binary does once configured: starts the gateway, prints its
/// address and the certificate clients must trust, reloads its certificate on SIGHUP, and
/// closes gracefully on SIGTERM or Ctrl-C. (A library function so that tools can run the same gateway in a process of
/// their own.)
pub async fn run(config: GatewayConfig) -> ExitCode {
    let metrics_listen = config.metrics_listen.clone();
    let gateway = match start(config).await {
        Ok(gateway) => gateway,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match &gateway.metrics {
        None => None,
        Some(metrics) => match spate_ops::serve(&metrics_listen, metrics.clone()) {
            Ok(listener) => {
                tracing::info!(address = %listener.address, "serving metrics, /healthz and /readyz");
                Some(listener)
            }
            Err(error) => {
                tracing::error!("{error} (--metrics-listen; `none` turns metrics off)");
                gateway.shutdown().await;
                return ExitCode::FAILURE;
            }
        },
    };
    // The contract scripts rely on: one line on stdout once the gateway serves.
    spate_ops::announce(&format!(
        "gateway listening on {} (certificate {})",
        gateway.local_addr,
        gateway.cert_path.display()
    ));
    if let Some(kafka) = &gateway.kafka {
        spate_ops::announce(&format!(
            "kafka listening on {} (advertised as {})",
            kafka.local_addr, kafka.advertised
        ));
        if kafka.tls() {
            tracing::info!("the Kafka listener takes TLS clients only (security.protocol=SSL)");
        }
    }
    if let Some(listener) = &listener {
        spate_ops::announce(&format!("metrics listening on {}", listener.address));
    }
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!("cannot install a SIGTERM handler: {error}");
                return ExitCode::FAILURE;
            }
        };
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!("cannot install a SIGHUP handler: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Ready only now: a SIGTERM right after READY=1 finds its handler.
    spate_ops::notify::ready();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => match gateway.reload_tls() {
                Ok(()) => tracing::info!(
                    cert = %gateway.cert_path.display(),
                    "reloaded the TLS certificate and key (new connections use them)"
                ),
                Err(error) => tracing::error!(
                    "cannot reload the TLS certificate, the one in use stays: {error}"
                ),
            },
        }
    }
    tracing::info!("shutting down");
    spate_ops::notify::stopping();
    gateway.shutdown().await;
    drop(listener);
    ExitCode::SUCCESS
}
