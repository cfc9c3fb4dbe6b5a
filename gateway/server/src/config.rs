//! Gateway configuration: command-line flags (`clap`) and an optional TOML file with the same
//! settings; a flag wins over the file, the file over the default.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use spate_proto::limits::REQUEST_SIZE_MAX;
use thiserror::Error;

use crate::budget::BUDGET_RESERVE_DIVISOR;

pub const LISTEN_DEFAULT: &str = "127.0.0.1:7447";
/// Default address of the metrics listener.
pub const METRICS_LISTEN_DEFAULT: &str = "127.0.0.1:9645";
pub const NODE_DEFAULT: &str = "127.0.0.1:7460";
pub const DEV_CERT_DIR_DEFAULT: &str = "./spate-data/tls";
/// QUIC connections accepted at once: with the default windows, at most 16 GiB of unread
/// client bytes in the worst case (`client_bytes_max`).
pub const MAX_CONNECTIONS_DEFAULT: u32 = 4096;
/// Concurrent bidirectional streams per connection: one per partition a client writes or
/// reads at once, for clients that give each partition its own stream.
pub const MAX_STREAMS_DEFAULT: u32 = 256;
/// A QUIC connection with no packet for this long is closed; clients keep theirs alive.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Requests one stream may have in flight: enough to keep one partition's pipeline full.
pub const FRAMES_PER_STREAM_DEFAULT: u32 = 64;
/// Requests one connection may have in flight over all its streams.
pub const FRAMES_PER_CONNECTION_DEFAULT: u32 = 1024;
/// How often the partition map is refreshed from the node (it is also refreshed at once when
/// a shard answers that it does not own a partition).
pub const METADATA_REFRESH_MS_DEFAULT: u64 = 10_000;

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
/// How long a shard may take to answer beyond the request's own wait: the SDK's request
/// timeout (30 s) less a margin, so an SDK client gets the gateway's answer first.
pub const SHARD_ANSWER_TIMEOUT_MS_DEFAULT: u64 = 25_000;

spate_proto::settings! {
    /// `spate-gateway`: the Spate gateway. Terminates QUIC (TLS 1.3, ALPN `spate/1`), learns
    /// which node shard owns each partition, and forwards every frame to it without decoding
    /// batches.
    #[derive(Parser)]
    #[command(name = "spate-gateway", version, about, long_about = None)]
    pub struct Flags {
        /// TOML file with any of these settings (flags override it).
        #[arg(long, value_name = "FILE")]
        pub config: Option<PathBuf>,
    }
    /// The resolved configuration of a gateway: every setting, with its default where none
    /// was given.
    pub struct GatewayConfig {
        /// Where the gateway serves Prometheus metrics (`/metrics`), `/healthz` and
        /// `/readyz` over HTTP (docs/operations.md, "Metrics"); `none` turns metrics off
        /// (nothing is counted). [default: 127.0.0.1:9645]
        #[arg(long, value_name = "HOST:PORT|none")]
        metrics_listen: String = METRICS_LISTEN_DEFAULT.into(),
        /// How log lines are written: `text` or `json` (one object per line). [default: text]
        #[arg(long, value_name = "FORMAT")]
        log_format: String = "text".into(),
        /// What is logged: a level (`error`, `warn`, `info`, `debug`, `trace`) or `tracing`
        /// directives (`info,spate_gateway::kafka=debug`); `RUST_LOG` wins when set.
        /// [default: info]
        #[arg(long, value_name = "LEVEL")]
        log_level: String = "info".into(),
        /// UDP address to listen on for QUIC. [default: 127.0.0.1:7447]
        #[arg(long, value_name = "HOST:PORT")]
        listen: String = LISTEN_DEFAULT.into(),
        /// Address of any shard of the node; several, comma-separated, for a cluster (any one
        /// that answers tells the gateway every member's shards, and the gateway asks the
        /// others when one is gone). [default: 127.0.0.1:7460]
        #[arg(long, value_name = "HOST:PORT")]
        node: String = NODE_DEFAULT.into(),
        /// TLS certificate chain (PEM). Without it, a development certificate is used.
        #[arg(long, value_name = "FILE")]
        tls_cert: PathBuf,
        /// TLS private key (PEM), with --tls-cert.
        #[arg(long, value_name = "FILE")]
        tls_key: PathBuf,
        /// CA certificates (PEM) whose client certificates the QUIC listener accepts: mutual
        /// TLS, each client's principal taken from its certificate (docs/security.md).
        /// [default: no client certificates]
        #[arg(long, value_name = "FILE")]
        client_ca: PathBuf,
        /// Whether QUIC clients must present a certificate signed by --client-ca: `required`,
        /// `optional` (a client without one connects anonymously), or `none`. [default:
        /// required with --client-ca, none without]
        #[arg(long, value_name = "MODE")]
        client_auth: String,
        /// Certificate revocation lists (PEM) of the --client-ca CAs: a revoked client
        /// certificate fails the handshake. Reloaded with the certificate on SIGHUP.
        #[arg(long, value_name = "FILE")]
        client_crl: PathBuf,
        /// Where the development certificate for localhost/127.0.0.1 is kept (created on first
        /// start when no --tls-cert is given). [default: ./spate-data/tls]
        #[arg(long, value_name = "DIR")]
        dev_cert_dir: PathBuf = DEV_CERT_DIR_DEFAULT.into(),
        /// QUIC connections accepted at once. [default: 4096]
        #[arg(long, value_name = "N")]
        max_connections: u32 = MAX_CONNECTIONS_DEFAULT,
        /// Concurrent bidirectional streams per connection. [default: 256]
        #[arg(long, value_name = "N")]
        max_streams: u32 = MAX_STREAMS_DEFAULT,
        /// Receive window per stream, in bytes. [default: 2 MiB]
        #[arg(long, value_name = "BYTES")]
        stream_window: u32 = STREAM_WINDOW_DEFAULT,
        /// Receive window per connection, in bytes: what a client can make QUIC hold unread.
        /// [default: 4 MiB]
        #[arg(long, value_name = "BYTES")]
        connection_window: u32 = CONNECTION_WINDOW_DEFAULT,
        /// Close a connection idle for this long, in ms. [default: 30000]
        #[arg(long, value_name = "MS")]
        idle_timeout_ms: u64 = IDLE_TIMEOUT_MS_DEFAULT,
        /// Requests one stream may have in flight. [default: 64]
        #[arg(long, value_name = "N")]
        frames_per_stream: u32 = FRAMES_PER_STREAM_DEFAULT,
        /// Requests one connection may have in flight over all its streams. [default: 1024]
        #[arg(long, value_name = "N")]
        frames_per_connection: u32 = FRAMES_PER_CONNECTION_DEFAULT,
        /// Largest request frame in bytes. [default: 1 MiB + 64 KiB]
        #[arg(long, value_name = "BYTES")]
        frame_size_max: u32 = REQUEST_SIZE_MAX,
        /// How often to refresh the partition map from the node, in ms. [default: 10000]
        #[arg(long, value_name = "MS")]
        metadata_refresh_ms: u64 = METADATA_REFRESH_MS_DEFAULT,
        /// Bytes of partially received request frames the gateway holds over all connections;
        /// when spent, streams stop reading until frames complete. [default: 512 MiB]
        #[arg(long, value_name = "BYTES")]
        buffer_budget: u64 = BUFFER_BUDGET_DEFAULT,
        /// Bytes of partially received request frames one connection may hold.
        /// [default: 8 MiB]
        #[arg(long, value_name = "BYTES")]
        connection_buffer_budget: u64 = CONNECTION_BUFFER_BUDGET_DEFAULT,
        /// A started frame whose bytes stop arriving for this long is dropped and its stream
        /// reset, freeing its budget, in ms. [default: 10000]
        #[arg(long, value_name = "MS")]
        frame_stall_timeout_ms: u64 = FRAME_STALL_TIMEOUT_MS_DEFAULT,
        /// A request forwarded to a shard is answered `Timeout` (Kafka: REQUEST_TIMED_OUT)
        /// when the shard has not answered this long after its own wait (a fetch's
        /// max_wait_ms, a group's rebalance), and the link to the shard is reconnected, in
        /// ms. [default: 25000]
        #[arg(long, value_name = "MS")]
        shard_answer_timeout_ms: u64 = SHARD_ANSWER_TIMEOUT_MS_DEFAULT,
        /// TCP address for Kafka clients (the Kafka wire protocol, docs/kafka.md). [default: no
        /// Kafka listener]
        #[arg(long, value_name = "HOST:PORT")]
        kafka_listen: String,
        /// The address Kafka clients are told to connect to (Metadata answers), when it differs
        /// from --kafka-listen (containers, NAT). [default: the listen address]
        #[arg(long, value_name = "HOST:PORT")]
        kafka_advertise: String,
        /// TLS certificate chain (PEM) of the Kafka listener: with it (and --kafka-tls-key),
        /// Kafka clients connect with `security.protocol=SSL`. [default: plaintext]
        #[arg(long, value_name = "FILE")]
        kafka_tls_cert: PathBuf,
        /// TLS private key (PEM) of the Kafka listener, with --kafka-tls-cert.
        #[arg(long, value_name = "FILE")]
        kafka_tls_key: PathBuf,
        /// CA certificates (PEM) whose client certificates the Kafka listener accepts (Kafka's
        /// `ssl.client.auth`), with --kafka-tls-cert. [default: no client certificates]
        #[arg(long, value_name = "FILE")]
        kafka_client_ca: PathBuf,
        /// Whether Kafka clients must present a certificate signed by --kafka-client-ca:
        /// `required`, `optional` or `none`. [default: required with --kafka-client-ca, none
        /// without]
        #[arg(long, value_name = "MODE")]
        kafka_client_auth: String,
        /// Certificate revocation lists (PEM) of the --kafka-client-ca CAs.
        #[arg(long, value_name = "FILE")]
        kafka_client_crl: PathBuf,
        /// Largest Kafka request in bytes (Kafka's socket.request.max.bytes), checked before
        /// anything is allocated. [default: 104857600 (100 MiB)]
        #[arg(long, value_name = "BYTES")]
        kafka_request_bytes_max: u32 = spate_kafka::limits::REQUEST_SIZE_MAX_DEFAULT,
        /// Kafka requests one connection may have in flight; beyond it the gateway stops reading
        /// the connection until answers go out. [default: 64]
        #[arg(long, value_name = "N")]
        kafka_in_flight: u32 = KAFKA_IN_FLIGHT_DEFAULT,
        /// Kafka connections accepted at once. [default: 1024]
        #[arg(long, value_name = "N")]
        kafka_max_connections: u32 = KAFKA_MAX_CONNECTIONS_DEFAULT,
        /// Bytes of Kafka requests being received or waiting to be forwarded, over all Kafka
        /// connections; when spent, connections stop reading. At least 4 × the largest request.
        /// [default: 512 MiB]
        #[arg(long, value_name = "BYTES")]
        kafka_buffer_budget: u64 = KAFKA_BUFFER_BUDGET_DEFAULT,
    }
}

/// The client certificate checks that `ca`, `crl` and `auth` (`none|optional|required`,
/// `required` by default with a CA) describe; an error names what is wrong.
fn client_trust(
    ca: Option<&PathBuf>,
    crl: Option<&PathBuf>,
    auth: Option<&str>,
) -> Result<Option<crate::tls::ClientTrust>, String> {
    use crate::tls::ClientAuth;
    let auth = match auth {
        Some(auth) => auth.parse::<ClientAuth>()?,
        None if ca.is_some() => ClientAuth::Required,
        None => ClientAuth::None,
    };
    match (ca, auth) {
        (_, ClientAuth::None) if crl.is_some() => Err(
            "a revocation list needs client certificates (a CA and an auth mode other than none)"
                .into(),
        ),
        (_, ClientAuth::None) => Ok(None),
        (None, _) => {
            Err("optional or required client certificates need the CAs that issue them".into())
        }
        (Some(ca), auth) => Ok(Some(crate::tls::ClientTrust {
            ca: ca.clone(),
            crl: crl.cloned(),
            auth,
        })),
    }
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
    /// TLS on the listener: (certificate chain, key) files, and how client certificates are
    /// checked.
    pub tls: Option<KafkaTls>,
}

/// TLS on the Kafka listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: Option<crate::tls::ClientTrust>,
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

impl GatewayConfig {
    /// Whether the gateway counts and serves metrics (`--metrics-listen` is not `none`).
    pub fn metrics_on(&self) -> bool {
        self.metrics_listen != spate_ops::METRICS_OFF
    }

    /// Installs logging as configured (`--log-format`, `--log-level`, `RUST_LOG`).
    pub fn init_logging(&self) {
        spate_ops::logging::init(self.log_format.parse().unwrap_or_default(), &self.log_level);
    }

    /// Resolves flags over the file (if any) over defaults, and checks every setting.
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
            None => Flags::default(),
        };
        let config = flags.or(file).with_defaults();
        config.check()?;
        config.check_related_limits()?;
        Ok(config)
    }

    /// Checks each setting against its valid range. Each failure names the setting.
    fn check(&self) -> Result<(), ConfigError> {
        if let Err(error) = self.log_format.parse::<spate_ops::LogFormat>() {
            return Err(ConfigError::Invalid {
                field: "log_format",
                message: error.to_string(),
            });
        }
        if let Err(error) = spate_ops::logging::check_level(&self.log_level) {
            return Err(ConfigError::Invalid {
                field: "log_level",
                message: error.to_string(),
            });
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                field: "tls_cert",
                message: "--tls-cert and --tls-key go together".into(),
            });
        }
        if let Err(message) = client_trust(
            self.client_ca.as_ref(),
            self.client_crl.as_ref(),
            self.client_auth.as_deref(),
        ) {
            return Err(ConfigError::Invalid {
                field: "client_auth",
                message,
            });
        }
        if self.kafka_tls_cert.is_some() != self.kafka_tls_key.is_some() {
            return Err(ConfigError::Invalid {
                field: "kafka_tls_cert",
                message: "--kafka-tls-cert and --kafka-tls-key go together".into(),
            });
        }
        let kafka_client = (
            self.kafka_client_ca.as_ref(),
            self.kafka_client_crl.as_ref(),
            self.kafka_client_auth.as_deref(),
        );
        if let Err(message) = client_trust(kafka_client.0, kafka_client.1, kafka_client.2) {
            return Err(ConfigError::Invalid {
                field: "kafka_client_auth",
                message,
            });
        }
        let kafka_client_given =
            kafka_client.0.is_some() || kafka_client.1.is_some() || kafka_client.2.is_some();
        if kafka_client_given && self.kafka_tls_cert.is_none() {
            return Err(ConfigError::Invalid {
                field: "kafka_client_ca",
                message: "client certificates on the Kafka listener need TLS there \
                          (--kafka-tls-cert and --kafka-tls-key)"
                    .into(),
            });
        }
        if self.kafka_tls_cert.is_some() && self.kafka_listen.is_none() {
            return Err(ConfigError::Invalid {
                field: "kafka_tls_cert",
                message: "TLS for Kafka needs a Kafka listener (--kafka-listen)".into(),
            });
        }
        if !(4096..=REQUEST_SIZE_MAX).contains(&self.frame_size_max) {
            return Err(ConfigError::Invalid {
                field: "frame_size_max",
                message: format!(
                    "{} (valid: 4096 to {REQUEST_SIZE_MAX})",
                    self.frame_size_max
                ),
            });
        }
        let positive = [
            ("max_connections", u64::from(self.max_connections)),
            ("max_streams", u64::from(self.max_streams)),
            ("stream_window", u64::from(self.stream_window)),
            ("connection_window", u64::from(self.connection_window)),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("frames_per_stream", u64::from(self.frames_per_stream)),
            (
                "frames_per_connection",
                u64::from(self.frames_per_connection),
            ),
            ("metadata_refresh_ms", self.metadata_refresh_ms),
            ("buffer_budget", self.buffer_budget),
            ("connection_buffer_budget", self.connection_buffer_budget),
            ("frame_stall_timeout_ms", self.frame_stall_timeout_ms),
            ("shard_answer_timeout_ms", self.shard_answer_timeout_ms),
            (
                "kafka_request_bytes_max",
                u64::from(self.kafka_request_bytes_max),
            ),
            ("kafka_in_flight", u64::from(self.kafka_in_flight)),
            (
                "kafka_max_connections",
                u64::from(self.kafka_max_connections),
            ),
            ("kafka_buffer_budget", self.kafka_buffer_budget),
        ];
        match positive.iter().find(|(_, value)| *value == 0) {
            Some((field, value)) => Err(ConfigError::Invalid {
                field,
                message: format!("{value} must be positive"),
            }),
            None => Ok(()),
        }
    }

    /// The Kafka listener, if one is configured.
    pub fn kafka(&self) -> Option<KafkaConfig> {
        let listen = self.kafka_listen.clone()?;
        Some(KafkaConfig {
            listen,
            advertise: self.kafka_advertise.clone(),
            request_bytes_max: self.kafka_request_bytes_max,
            in_flight: self.kafka_in_flight,
            max_connections: self.kafka_max_connections,
            buffer_budget: self.kafka_buffer_budget,
            tls: match (&self.kafka_tls_cert, &self.kafka_tls_key) {
                (Some(cert), Some(key)) => Some(KafkaTls {
                    cert: cert.clone(),
                    key: key.clone(),
                    client: client_trust(
                        self.kafka_client_ca.as_ref(),
                        self.kafka_client_crl.as_ref(),
                        self.kafka_client_auth.as_deref(),
                    )
                    .ok()
                    .flatten(),
                }),
                _ => None,
            },
        })
    }

    /// How the QUIC listener checks client certificates (`None`: it asks for none).
    pub fn client_trust(&self) -> Option<crate::tls::ClientTrust> {
        client_trust(
            self.client_ca.as_ref(),
            self.client_crl.as_ref(),
            self.client_auth.as_deref(),
        )
        .ok()
        .flatten()
    }

    /// A QUIC connection with no packet for this long is closed.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// How often the partition map is refreshed from the node.
    pub fn metadata_refresh(&self) -> Duration {
        Duration::from_millis(self.metadata_refresh_ms)
    }

    /// How long a shard may take to answer beyond the request's own wait.
    pub fn shard_answer_timeout(&self) -> Duration {
        Duration::from_millis(self.shard_answer_timeout_ms)
    }

    /// A started frame with no new bytes for this long is dropped.
    pub fn frame_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_stall_timeout_ms)
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
        if let Some(kafka) = self.kafka() {
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
    fn client_certificate_settings_are_checked() {
        // Required client certificates need the CAs that issue them.
        assert_eq!(
            field_of(Flags {
                client_auth: Some("required".into()),
                ..Flags::default()
            }),
            "client_auth"
        );
        assert_eq!(
            field_of(Flags {
                client_ca: Some("ca.pem".into()),
                client_auth: Some("sometimes".into()),
                ..Flags::default()
            }),
            "client_auth"
        );
        // A CA alone means required.
        let config = GatewayConfig::resolve(Flags {
            client_ca: Some("ca.pem".into()),
            ..Flags::default()
        })
        .unwrap();
        assert_eq!(
            config.client_trust().map(|trust| trust.auth),
            Some(crate::tls::ClientAuth::Required)
        );
        // Kafka client certificates need TLS on a Kafka listener.
        assert_eq!(
            field_of(Flags {
                kafka_listen: Some("127.0.0.1:0".into()),
                kafka_client_ca: Some("ca.pem".into()),
                ..Flags::default()
            }),
            "kafka_client_ca"
        );
        assert_eq!(
            field_of(Flags {
                kafka_tls_cert: Some("cert.pem".into()),
                kafka_tls_key: Some("key.pem".into()),
                ..Flags::default()
            }),
            "kafka_tls_cert"
        );
        let config = GatewayConfig::resolve(Flags {
            kafka_listen: Some("127.0.0.1:0".into()),
            kafka_tls_cert: Some("cert.pem".into()),
            kafka_tls_key: Some("key.pem".into()),
            kafka_client_ca: Some("ca.pem".into()),
            kafka_client_auth: Some("optional".into()),
            ..Flags::default()
        })
        .unwrap();
        let tls = config.kafka().and_then(|kafka| kafka.tls).unwrap();
        assert_eq!(
            tls.client.map(|trust| trust.auth),
            Some(crate::tls::ClientAuth::Optional)
        );
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
