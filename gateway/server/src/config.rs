//! Gateway configuration: command-line flags (`clap`) and an optional TOML file with the same
//! settings; a flag wins over the file, the file over the default.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use spate_proto::limits::REQUEST_SIZE_MAX;
use thiserror::Error;

pub const LISTEN_DEFAULT: &str = "127.0.0.1:7447";
pub const NODE_DEFAULT: &str = "127.0.0.1:9092";
pub const DEV_CERT_DIR_DEFAULT: &str = "./spate-data/tls";

/// `spate-gateway`: the Spate gateway. Terminates QUIC (TLS 1.3, ALPN `spate/1`), learns which
/// node shard owns each partition, and forwards every frame to it without decoding batches.
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "spate-gateway", version, about, long_about = None)]
pub struct Flags {
    /// UDP address to listen on for QUIC. [default: 127.0.0.1:7447]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address of any shard of the node. [default: 127.0.0.1:9092]
    #[arg(long, value_name = "HOST:PORT")]
    pub node: Option<String>,
    /// TOML file with any of these settings (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TLS certificate chain (PEM). Without it, a development certificate is used.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), with --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Where the development certificate for localhost/127.0.0.1 is kept (created on first
    /// start when no --tls-cert is given). [default: ./spate-data/tls]
    #[arg(long, value_name = "DIR")]
    pub dev_cert_dir: Option<PathBuf>,
    /// QUIC connections accepted at once. [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
    /// Concurrent bidirectional streams per connection. [default: 256]
    #[arg(long, value_name = "N")]
    pub max_streams: Option<u32>,
    /// Receive window per stream, in bytes. [default: 8 MiB]
    #[arg(long, value_name = "BYTES")]
    pub stream_window: Option<u32>,
    /// Receive window per connection, in bytes. [default: 32 MiB]
    #[arg(long, value_name = "BYTES")]
    pub connection_window: Option<u32>,
    /// Close a connection idle for this long, in ms. [default: 30000]
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Requests one stream may have in flight. [default: 64]
    #[arg(long, value_name = "N")]
    pub frames_per_stream: Option<u32>,
    /// Requests one connection may have in flight over all its streams. [default: 1024]
    #[arg(long, value_name = "N")]
    pub frames_per_connection: Option<u32>,
    /// Largest request frame in bytes. [default: 1 MiB + 64 KiB]
    #[arg(long, value_name = "BYTES")]
    pub frame_size_max: Option<u32>,
    /// How often to refresh the partition map from the node, in ms. [default: 10000]
    #[arg(long, value_name = "MS")]
    pub metadata_refresh_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub node: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub dev_cert_dir: Option<PathBuf>,
    pub max_connections: Option<u32>,
    pub max_streams: Option<u32>,
    pub stream_window: Option<u32>,
    pub connection_window: Option<u32>,
    pub idle_timeout_ms: Option<u64>,
    pub frames_per_stream: Option<u32>,
    pub frames_per_connection: Option<u32>,
    pub frame_size_max: Option<u32>,
    pub metadata_refresh_ms: Option<u64>,
}

/// The resolved configuration of a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub listen: String,
    pub node: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub dev_cert_dir: PathBuf,
    pub max_connections: u32,
    pub max_streams: u32,
    pub stream_window: u32,
    pub connection_window: u32,
    pub idle_timeout: Duration,
    pub frames_per_stream: u32,
    pub frames_per_connection: u32,
    pub frame_size_max: u32,
    pub metadata_refresh: Duration,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn positive<T: PartialOrd + Default + std::fmt::Display>(
    field: &'static str,
    value: T,
) -> Result<T, ConfigError> {
    if value > T::default() {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            field,
            message: format!("{value} must be positive"),
        })
    }
}

impl GatewayConfig {
    pub fn resolve(flags: Flags) -> Result<GatewayConfig, ConfigError> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let tls_cert = flags.tls_cert.or(file.tls_cert);
        let tls_key = flags.tls_key.or(file.tls_key);
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(ConfigError::Invalid {
                field: "tls_cert",
                message: "--tls-cert and --tls-key go together".into(),
            });
        }
        let frame_size_max = flags
            .frame_size_max
            .or(file.frame_size_max)
            .unwrap_or(REQUEST_SIZE_MAX);
        if !(4096..=REQUEST_SIZE_MAX).contains(&frame_size_max) {
            return Err(ConfigError::Invalid {
                field: "frame_size_max",
                message: format!("{frame_size_max} (valid: 4096 to {REQUEST_SIZE_MAX})"),
            });
        }
        Ok(GatewayConfig {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| LISTEN_DEFAULT.into()),
            node: flags
                .node
                .or(file.node)
                .unwrap_or_else(|| NODE_DEFAULT.into()),
            tls_cert,
            tls_key,
            dev_cert_dir: flags
                .dev_cert_dir
                .or(file.dev_cert_dir)
                .unwrap_or_else(|| DEV_CERT_DIR_DEFAULT.into()),
            max_connections: positive(
                "max_connections",
                flags
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(4096),
            )?,
            max_streams: positive(
                "max_streams",
                flags.max_streams.or(file.max_streams).unwrap_or(256),
            )?,
            stream_window: positive(
                "stream_window",
                flags
                    .stream_window
                    .or(file.stream_window)
                    .unwrap_or(8 << 20),
            )?,
            connection_window: positive(
                "connection_window",
                flags
                    .connection_window
                    .or(file.connection_window)
                    .unwrap_or(32 << 20),
            )?,
            idle_timeout: Duration::from_millis(positive(
                "idle_timeout_ms",
                flags
                    .idle_timeout_ms
                    .or(file.idle_timeout_ms)
                    .unwrap_or(30_000),
            )?),
            frames_per_stream: positive(
                "frames_per_stream",
                flags
                    .frames_per_stream
                    .or(file.frames_per_stream)
                    .unwrap_or(64),
            )?,
            frames_per_connection: positive(
                "frames_per_connection",
                flags
                    .frames_per_connection
                    .or(file.frames_per_connection)
                    .unwrap_or(1024),
            )?,
            frame_size_max,
            metadata_refresh: Duration::from_millis(positive(
                "metadata_refresh_ms",
                flags
                    .metadata_refresh_ms
                    .or(file.metadata_refresh_ms)
                    .unwrap_or(10_000),
            )?),
        })
    }
}
