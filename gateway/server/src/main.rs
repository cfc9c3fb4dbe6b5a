//! The `spate-gateway` binary: parses flags, starts the QUIC endpoint, prints its address and
//! the certificate clients must trust, and closes gracefully on SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use spate_gateway::{Flags, GatewayConfig};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match GatewayConfig::resolve(Flags::parse()) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let gateway = match spate_gateway::start(config).await {
        Ok(gateway) => gateway,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    // The contract scripts rely on: one line on stdout once the gateway serves.
    #[allow(clippy::print_stdout)]
    {
        println!(
            "gateway listening on {} (certificate {})",
            gateway.local_addr,
            gateway.cert_path.display()
        );
    }
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!("cannot install a SIGTERM handler: {error}");
                return ExitCode::FAILURE;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    gateway.shutdown().await;
    ExitCode::SUCCESS
}
