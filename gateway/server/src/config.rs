//! Gateway configuration: command-line flags (`clap`) and an optional TOML file with the same
//! settings; a flag wins over the file, the file over the default.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use spate_proto::limits::REQUEST_SIZE_MAX;
use thiserror::Error;

use crate::budget::BUDGET_RESERVE_DIVISOR;

pub const LISTEN_DEFAULT: &str = "127.0.0.1:7447";
pub const NODE_DEFAULT: &str = "127.0.0.1:7460";
pub const DEV_CERT_DIR_DEFAULT: &str = "./spate-data/tls";

/// Receive window per stream: 2 MiB carries about 1 GB/s at a 2 ms round trip (a data
/// centre), and is what one stream can make QUIC hold unread.
pub const STREAM_WINDOW_DEFAULT: u32 = 2 << 20;
/// Receive window per connection: the produce stream and a few small ones at full speed.
/// It is what a client can make QUIC hold unread while the gateway does not read, so the
/// worst case over all connections is `max_connections` times this.
pub const CONNECTION_WINDOW_DEFAULT: u32 = 4 << 20;
/// Partially received frames over all connections: a fixed, modest share of a gateway host's
/// memory that still lets about 60 connections fill their own budget at once.
pub const BUFFER_BUDGET_DEFAULT: u64 = 512 << 20;
/// Partially received frames of one connection: seven largest frames, far more than a
/// client writing one frame at a time per stream needs to reach full speed.
pub const CONNECTION_BUFFER_BUDGET_DEFAULT: u64 = 8 << 20;
/// Kafka requests in flight per connection: deep enough for librdkafka's pipelining of
/// produce requests to many partitions, small enough to bound what one client holds.
pub const KAFKA_IN_FLIGHT_DEFAULT: u32 = 64;
pub const KAFKA_MAX_CONNECTIONS_DEFAULT: u32 = 1024;
/// Kafka request bytes held over all connections: with the 100 MiB request limit, its last
/// quarter still holds one largest request.
pub const KAFKA_BUFFER_BUDGET_DEFAULT: u64 = 512 << 20;
/// A started frame with no new bytes for this long belongs to a dead or abusive client: a
/// healthy one sends a whole frame in milliseconds, and QUIC retransmits within a second.
pub const FRAME_STALL_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// `spate-gateway`: the Spate gateway. Terminates QUIC (TLS 1.3, ALPN `spate/1`), learns which
/// node shard owns each partition, and forwards every frame to it without decoding batches.
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "spate-gateway", version, about, long_about = None)]
pub struct Flags {
    /// UDP address to listen on for QUIC. [default: 127.0.0.1:7447]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address of any shard of the node. [default: 127.0.0.1:7460]
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
    /// Receive window per stream, in bytes. [default: 2 MiB]
    #[arg(long, value_name = "BYTES")]
    pub stream_window: Option<u32>,
    /// Receive window per connection, in bytes: what a client can make QUIC hold unread.
    /// [default: 4 MiB]
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
    /// Bytes of partially received request frames the gateway holds over all connections;
    /// when spent, streams stop reading until frames complete. [default: 512 MiB]
    #[arg(long, value_name = "BYTES")]
    pub buffer_budget: Option<u64>,
    /// Bytes of partially received request frames one connection may hold.
    /// [default: 8 MiB]
    #[arg(long, value_name = "BYTES")]
    pub connection_buffer_budget: Option<u64>,
    /// A started frame whose bytes stop arriving for this long is dropped and its stream
    /// reset, freeing its budget, in ms. [default: 10000]
    #[arg(long, value_name = "MS")]
    pub frame_stall_timeout_ms: Option<u64>,
    /// TCP address for Kafka clients (the Kafka wire protocol, docs/kafka.md). [default: no
    /// Kafka listener]
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_listen: Option<String>,
    /// The address Kafka clients are told to connect to (Metadata answers), when it differs
    /// from --kafka-listen (containers, NAT). [default: the listen address]
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_advertise: Option<String>,
    /// Largest Kafka request in bytes (Kafka's socket.request.max.bytes), checked before
    /// anything is allocated. [default: 104857600 (100 MiB)]
    #[arg(long, value_name = "BYTES")]
    pub kafka_request_bytes_max: Option<u32>,
    /// Kafka requests one connection may have in flight; beyond it the gateway stops reading
    /// the connection until answers go out. [default: 64]
    #[arg(long, value_name = "N")]
    pub kafka_in_flight: Option<u32>,
    /// Kafka connections accepted at once. [default: 1024]
    #[arg(long, value_name = "N")]
    pub kafka_max_connections: Option<u32>,
    /// Bytes of Kafka requests being received or waiting to be forwarded, over all Kafka
    /// connections; when spent, connections stop reading. At least 4 × the largest request.
    /// [default: 512 MiB]
    #[arg(long, value_name = "BYTES")]
    pub kafka_buffer_budget: Option<u64>,
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
    pub buffer_budget: Option<u64>,
    pub connection_buffer_budget: Option<u64>,
    pub frame_stall_timeout_ms: Option<u64>,
    pub kafka_listen: Option<String>,
    pub kafka_advertise: Option<String>,
    pub kafka_request_bytes_max: Option<u32>,
    pub kafka_in_flight: Option<u32>,
    pub kafka_max_connections: Option<u32>,
    pub kafka_buffer_budget: Option<u64>,
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
    pub buffer_budget: u64,
    pub connection_buffer_budget: u64,
    pub frame_stall_timeout: Duration,
    /// The Kafka listener, if one is configured.
    pub kafka: Option<KafkaConfig>,
}

/// The Kafka listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub listen: String,
    /// What Metadata answers name as the broker's address; `None`: the bound address.
    pub advertise: Option<String>,
    pub request_bytes_max: u32,
    pub in_flight: u32,
    pub max_connections: u32,
    pub buffer_budget: u64,
}

impl KafkaConfig {
    /// The budget limits of Kafka requests: one connection holds at most one largest request.
    pub fn budget_limits(&self) -> crate::budget::Limits {
        crate::budget::Limits {
            global: self.buffer_budget,
            connection: u64::from(self.request_bytes_max),
            frame: u64::from(self.request_bytes_max),
        }
    }
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
        let config = GatewayConfig {
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
                    .unwrap_or(STREAM_WINDOW_DEFAULT),
            )?,
            connection_window: positive(
                "connection_window",
                flags
                    .connection_window
                    .or(file.connection_window)
                    .unwrap_or(CONNECTION_WINDOW_DEFAULT),
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
            buffer_budget: positive(
                "buffer_budget",
                flags
                    .buffer_budget
                    .or(file.buffer_budget)
                    .unwrap_or(BUFFER_BUDGET_DEFAULT),
            )?,
            connection_buffer_budget: positive(
                "connection_buffer_budget",
                flags
                    .connection_buffer_budget
                    .or(file.connection_buffer_budget)
                    .unwrap_or(CONNECTION_BUFFER_BUDGET_DEFAULT),
            )?,
            frame_stall_timeout: Duration::from_millis(positive(
                "frame_stall_timeout_ms",
                flags
                    .frame_stall_timeout_ms
                    .or(file.frame_stall_timeout_ms)
                    .unwrap_or(FRAME_STALL_TIMEOUT_MS_DEFAULT),
            )?),
            kafka: match flags.kafka_listen.or(file.kafka_listen) {
                None => None,
                Some(listen) => Some(KafkaConfig {
                    advertise: flags.kafka_advertise.or(file.kafka_advertise),
                    listen,
                    request_bytes_max: positive(
                        "kafka_request_bytes_max",
                        flags
                            .kafka_request_bytes_max
                            .or(file.kafka_request_bytes_max)
                            .unwrap_or(spate_kafka::limits::REQUEST_SIZE_MAX_DEFAULT),
                    )?,
                    in_flight: positive(
                        "kafka_in_flight",
                        flags
                            .kafka_in_flight
                            .or(file.kafka_in_flight)
                            .unwrap_or(KAFKA_IN_FLIGHT_DEFAULT),
                    )?,
                    max_connections: positive(
                        "kafka_max_connections",
                        flags
                            .kafka_max_connections
                            .or(file.kafka_max_connections)
                            .unwrap_or(KAFKA_MAX_CONNECTIONS_DEFAULT),
                    )?,
                    buffer_budget: positive(
                        "kafka_buffer_budget",
                        flags
                            .kafka_buffer_budget
                            .or(file.kafka_buffer_budget)
                            .unwrap_or(KAFKA_BUFFER_BUDGET_DEFAULT),
                    )?,
                }),
            },
        };
        config.check_related_limits()?;
        Ok(config)
    }

    /// Limits that depend on each other. Each failure names the setting to change.
    fn check_related_limits(&self) -> Result<(), ConfigError> {
        let invalid =
            |field: &'static str, message: String| Err(ConfigError::Invalid { field, message });
        let frame = u64::from(self.frame_size_max);
        if self.stream_window > self.connection_window {
            return invalid(
                "stream_window",
                format!(
                    "{} is above connection_window {}: one stream could never use it",
                    self.stream_window, self.connection_window
                ),
            );
        }
        // A frame is read only once all of it is reserved, so the largest one must fit in a
        // connection's budget, or a client sending it would wait forever.
        if frame > self.connection_buffer_budget {
            return invalid(
                "connection_buffer_budget",
                format!(
                    "{} is below frame_size_max {frame}: the largest frame could never be read",
                    self.connection_buffer_budget
                ),
            );
        }
        if self.connection_buffer_budget > self.buffer_budget {
            return invalid(
                "connection_buffer_budget",
                format!(
                    "{} is above buffer_budget {}",
                    self.connection_buffer_budget, self.buffer_budget
                ),
            );
        }
        // The reserve (the budget's last quarter, kept for connections holding at most one
        // frame) must hold a largest frame, so such a connection always makes progress.
        if frame > self.buffer_budget / BUDGET_RESERVE_DIVISOR {
            return invalid(
                "buffer_budget",
                format!(
                    "{} is below {BUDGET_RESERVE_DIVISOR} × frame_size_max ({frame})",
                    self.buffer_budget
                ),
            );
        }
        if let Some(kafka) = &self.kafka {
            // As for QUIC frames: a request is read once all of it is reserved, and the
            // budget's reserve must hold the largest one.
            let request = u64::from(kafka.request_bytes_max);
            if request > kafka.buffer_budget / BUDGET_RESERVE_DIVISOR {
                return invalid(
                    "kafka_buffer_budget",
                    format!(
                        "{} is below {BUDGET_RESERVE_DIVISOR} × kafka_request_bytes_max ({request})",
                        kafka.buffer_budget
                    ),
                );
            }
        }
        if self.frames_per_stream > self.frames_per_connection {
            return invalid(
                "frames_per_stream",
                format!(
                    "{} is above frames_per_connection {}",
                    self.frames_per_stream, self.frames_per_connection
                ),
            );
        }
        Ok(())
    }

    /// The budget limits this configuration sets.
    pub fn budget_limits(&self) -> crate::budget::Limits {
        crate::budget::Limits {
            global: self.buffer_budget,
            connection: self.connection_buffer_budget,
            frame: u64::from(self.frame_size_max),
        }
    }

    /// The most client request bytes the gateway can be made to hold: partial frames up to
    /// the buffer budget, plus each connection's QUIC receive window unread.
    pub fn client_bytes_max(&self) -> u64 {
        self.buffer_budget.saturating_add(
            u64::from(self.max_connections).saturating_mul(u64::from(self.connection_window)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(flags: Flags) -> &'static str {
        match GatewayConfig::resolve(flags) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_agree_with_each_other() {
        let config = GatewayConfig::resolve(Flags::default()).unwrap();
        assert_eq!(config.buffer_budget, BUFFER_BUDGET_DEFAULT);
        assert!(u64::from(config.frame_size_max) <= config.connection_buffer_budget);
    }

    #[test]
    fn limits_that_depend_on_each_other_are_checked() {
        let frame = u64::from(REQUEST_SIZE_MAX);
        assert_eq!(
            field_of(Flags {
                connection_buffer_budget: Some(frame - 1),
                ..Flags::default()
            }),
            "connection_buffer_budget"
        );
        assert_eq!(
            field_of(Flags {
                buffer_budget: Some(4 << 20),
                connection_buffer_budget: Some(8 << 20),
                ..Flags::default()
            }),
            "connection_buffer_budget"
        );
        assert_eq!(
            field_of(Flags {
                buffer_budget: Some(4 * frame - 1),
                connection_buffer_budget: Some(frame),
                ..Flags::default()
            }),
            "buffer_budget"
        );
        assert_eq!(
            field_of(Flags {
                stream_window: Some(8 << 20),
                ..Flags::default()
            }),
            "stream_window"
        );
        assert_eq!(
            field_of(Flags {
                frames_per_stream: Some(2048),
                ..Flags::default()
            }),
            "frames_per_stream"
        );
    }
}
