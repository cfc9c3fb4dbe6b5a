//! The `spate-gateway` binary: parses flags and runs the gateway until SIGTERM or Ctrl-C
//! ([`spate_gateway::run`]).

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
    spate_gateway::run(config).await
}
