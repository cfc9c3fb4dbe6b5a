//! Node configuration: command-line flags (`clap`) and an optional TOML file with the same
//! settings. A flag given on the command line wins over the file; every setting has a default.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde::Deserialize;
use spate_core::config::PREALLOCATE_BYTES_DEFAULT;
use spate_core::LogConfig;
use spate_format::limits::{
    PARTITIONS_PER_TOPIC_MAX, SEGMENT_SIZE_DEFAULT, SEGMENT_SIZE_MAX, SEGMENT_SIZE_MIN,
};
use spate_proto::limits::{REQUEST_SIZE_MAX, SHARDS_MAX};
use thiserror::Error;

/// Default data directory.
pub const DATA_DIR_DEFAULT: &str = "./spate-data";
/// Default listen address of shard 0 (shard i listens on port + i).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7460";
/// Connections one shard accepts at once.
pub const CONNECTIONS_MAX_DEFAULT: u32 = 1024;
/// Requests one connection may have in flight (pipelining depth).
pub const FRAMES_IN_FLIGHT_DEFAULT: u32 = 256;
/// Bytes appended but not yet durable, per shard, before it stops reading its connections.
pub const UNFLUSHED_BYTES_DEFAULT: u64 = 128 << 20;
/// Long-poll fetches parked on one partition at once.
pub const FETCH_WAITERS_DEFAULT: u32 = spate_core::FETCH_WAITERS_DEFAULT;
/// Default topic retention: 7 days.
pub const RETENTION_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;
/// How often each shard applies retention.
pub const RETENTION_CHECK_MS_DEFAULT: u64 = 60_000;
/// Recently written bytes each shard keeps in memory to serve consumers at the tail, shared
/// by its partitions.
pub const TAIL_CACHE_BYTES_DEFAULT: u64 = 64 << 20;
/// A started request frame whose bytes stop arriving for this long closes its connection:
/// a frame of 1 MiB takes milliseconds on any working link.
pub const FRAME_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// A connection with nothing in flight that stays silent this long is closed; gateways keep
/// their links busy or reconnect.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 600_000;
/// Background verification reads at most this many bytes per second per shard: a 1 TiB
/// shard is verified in about 18 hours, at under 1 % of a 2 GB/s disk.
pub const VERIFY_BYTES_PER_SECOND_DEFAULT: u64 = 16 << 20;
/// A background verification pass starts at most once a day (and after every start).
pub const VERIFY_INTERVAL_MS_DEFAULT: u64 = 24 * 3600 * 1000;
/// Memory each shard registers with io_uring for I/O buffers. Small, so several shards run
/// under the default locked-memory limit (`ulimit -l`, often 8 MiB or less).
pub const IO_MEMORY_DEFAULT: usize = 512 << 10;

/// `spate-node`: the Spate storage node. Thread-per-core shards, each owning its partitions
/// and writing them with O_DIRECT io_uring I/O; clients (and the gateway) speak Spate frames
/// over TCP to the shard that owns a partition.
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "spate-node", version, about, long_about = None)]
pub struct Flags {
    #[command(subcommand)]
    pub command: Option<NodeCommand>,
    /// Data directory (topics, segments, metadata). Must be on a filesystem with O_DIRECT.
    /// [default: ./spate-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of shard 0; shard i listens on port + i (port 0: every shard picks a free
    /// port). [default: 127.0.0.1:7460]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Number of shards (executor threads). [default: one per available core]
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Pin shard i to the i-th CPU of this comma-separated list (e.g. `0,2,4-7`).
    /// [default: not pinned]
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// TOML file with any of these settings (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run even where O_DIRECT is unavailable (tmpfs silently disables it): writes then go
    /// through the page cache. For experiments only.
    #[arg(long)]
    pub allow_buffered_io: bool,
    /// Connections each shard accepts at once. [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
    /// Requests one connection may have in flight. [default: 256]
    #[arg(long, value_name = "N")]
    pub frames_in_flight: Option<u32>,
    /// Largest request frame in bytes. [default: 1 MiB + 64 KiB]
    #[arg(long, value_name = "BYTES")]
    pub frame_size_max: Option<u32>,
    /// Bytes appended but not yet durable per shard before it stops reading from its
    /// connections (back-pressure). [default: 128 MiB]
    #[arg(long, value_name = "BYTES")]
    pub unflushed_bytes: Option<u64>,
    /// Long-poll fetches parked on one partition at once. [default: 1024]
    #[arg(long, value_name = "N")]
    pub fetch_waiters: Option<u32>,
    /// Default retention of a topic by time, in ms. [default: 604800000 (7 days)]
    #[arg(long, value_name = "MS")]
    pub retention_ms: Option<u64>,
    /// Default retention of a topic by size, in bytes per partition. [default: unlimited]
    #[arg(long, value_name = "BYTES")]
    pub retention_bytes: Option<u64>,
    /// Default segment size in bytes. [default: 1 GiB]
    #[arg(long, value_name = "BYTES")]
    pub segment_bytes: Option<u32>,
    /// Data acknowledged with `none` or `write` is synced within this many ms. [default: 10]
    #[arg(long, value_name = "MS")]
    pub flush_interval_ms: Option<i64>,
    /// How often each shard applies retention, in ms. [default: 60000]
    #[arg(long, value_name = "MS")]
    pub retention_check_ms: Option<u64>,
    /// Memory per shard registered with io_uring, in bytes. [default: 512 KiB]
    #[arg(long, value_name = "BYTES")]
    pub io_memory: Option<usize>,
    /// Recently written bytes each shard keeps in memory for consumers at the tail, shared by
    /// its partitions. [default: 64 MiB]
    #[arg(long, value_name = "BYTES")]
    pub tail_cache_bytes: Option<u64>,
    /// First preallocation of a segment file in bytes (a multiple of 4096); each extension
    /// doubles the file, up to the segment size. [default: 65536]
    #[arg(long, value_name = "BYTES")]
    pub preallocate_bytes: Option<u64>,
    /// A connection whose started request frame stops arriving for this many ms is closed.
    /// [default: 10000]
    #[arg(long, value_name = "MS")]
    pub frame_timeout_ms: Option<u64>,
    /// A connection with no request in flight that sends nothing for this many ms is closed
    /// (the gateway reconnects when it needs the shard again). [default: 600000]
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Bytes per second each shard reads to verify the checksums of its sealed segments in
    /// the background (after every start, then every --verify-interval-ms); 0 turns it off.
    /// [default: 16777216 (16 MiB/s)]
    #[arg(long, value_name = "BYTES")]
    pub verify_bytes_per_second: Option<u64>,
    /// Time from the start of one background verification pass to the start of the next, in
    /// ms (a pass that takes longer is followed at once by the next). [default: 86400000 (1 day)]
    #[arg(long, value_name = "MS")]
    pub verify_interval_ms: Option<u64>,
    /// Create a topic that a client names but that does not exist (a Kafka client's
    /// metadata request allowing it), with --auto-create-partitions partitions and the
    /// default settings. Off unless given (`spate up` turns it on).
    #[arg(long)]
    pub auto_create_topics: bool,
    /// Partitions of an automatically created topic. [default: 1]
    #[arg(long, value_name = "N")]
    pub auto_create_partitions: Option<u32>,
}

/// Commands other than running the node.
#[derive(Debug, Clone, Subcommand)]
pub enum NodeCommand {
    /// Inspects a data directory offline and changes nothing: every partition, its segments
    /// and offsets, what the next start would repair (torn tails, indexes) and any damage to
    /// acknowledged data (every batch checksum of every segment is checked). Exit status 0:
    /// no damage; 1: damage found; 2: the check could not run (a node uses the directory,
    /// unreadable metadata).
    Check {
        /// The data directory. [default: ./spate-data]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// The same settings as the flags, read from a TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub shards: Option<u32>,
    pub cpus: Option<String>,
    pub allow_buffered_io: Option<bool>,
    pub max_connections: Option<u32>,
    pub frames_in_flight: Option<u32>,
    pub frame_size_max: Option<u32>,
    pub unflushed_bytes: Option<u64>,
    pub fetch_waiters: Option<u32>,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: Option<u32>,
    pub flush_interval_ms: Option<i64>,
    pub retention_check_ms: Option<u64>,
    pub io_memory: Option<usize>,
    pub tail_cache_bytes: Option<u64>,
    pub preallocate_bytes: Option<u64>,
    pub frame_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub verify_bytes_per_second: Option<u64>,
    pub verify_interval_ms: Option<u64>,
    pub auto_create_topics: Option<bool>,
    pub auto_create_partitions: Option<u32>,
}

/// The resolved configuration of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    pub shards: u32,
    pub cpus: Option<Vec<usize>>,
    pub allow_buffered_io: bool,
    pub max_connections: u32,
    pub frames_in_flight: u32,
    pub frame_size_max: u32,
    pub unflushed_bytes: u64,
    pub fetch_waiters: u32,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u32,
    pub flush_interval_ms: i64,
    pub retention_check_ms: u64,
    pub io_memory: usize,
    pub tail_cache_bytes: u64,
    pub preallocate_bytes: u64,
    pub frame_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// 0: background verification off.
    pub verify_bytes_per_second: u64,
    pub verify_interval_ms: u64,
    pub auto_create_topics: bool,
    pub auto_create_partitions: u32,
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

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

/// Parses a CPU list such as `0,2,4-7`.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, ConfigError> {
    let mut cpus = Vec::new();
    for part in list
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let bad = || invalid("cpus", format!("{part:?} is not a CPU number or range"));
        match part.split_once('-') {
            Some((low, high)) => {
                let low: usize = low.trim().parse().map_err(|_| bad())?;
                let high: usize = high.trim().parse().map_err(|_| bad())?;
                if low > high {
                    return Err(bad());
                }
                cpus.extend(low..=high);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err(invalid("cpus", "the list is empty"));
    }
    Ok(cpus)
}

impl NodeConfig {
    /// Resolves flags over the file (if any) over defaults, and checks every setting.
    pub fn resolve(flags: Flags) -> Result<NodeConfig, ConfigError> {
        let file = match &flags.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let available = std::thread::available_parallelism().map_or(1, usize::from);
        let shards = flags
            .shards
            .or(file.shards)
            .unwrap_or_else(|| u32::try_from(available).unwrap_or(1));
        if shards == 0 || shards > SHARDS_MAX {
            return Err(invalid(
                "shards",
                format!("{shards} (valid: 1 to {SHARDS_MAX})"),
            ));
        }
        let cpus = match flags.cpus.or(file.cpus) {
            Some(list) => {
                let cpus = parse_cpu_list(&list)?;
                if cpus.len() < shards as usize {
                    return Err(invalid(
                        "cpus",
                        format!("{} CPUs listed for {shards} shards", cpus.len()),
                    ));
                }
                Some(cpus)
            }
            None => None,
        };
        let frame_size_max = flags
            .frame_size_max
            .or(file.frame_size_max)
            .unwrap_or(REQUEST_SIZE_MAX);
        if !(4096..=REQUEST_SIZE_MAX).contains(&frame_size_max) {
            return Err(invalid(
                "frame_size_max",
                format!("{frame_size_max} (valid: 4096 to {REQUEST_SIZE_MAX})"),
            ));
        }
        let segment_bytes = flags
            .segment_bytes
            .or(file.segment_bytes)
            .unwrap_or(SEGMENT_SIZE_DEFAULT);
        if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX).contains(&segment_bytes) {
            return Err(invalid(
                "segment_bytes",
                format!("{segment_bytes} (valid: 64 KiB to 2 GiB)"),
            ));
        }
        let preallocate_bytes = flags
            .preallocate_bytes
            .or(file.preallocate_bytes)
            .unwrap_or(PREALLOCATE_BYTES_DEFAULT);
        if !(4096..=u64::from(SEGMENT_SIZE_MAX)).contains(&preallocate_bytes)
            || !preallocate_bytes.is_multiple_of(4096)
        {
            return Err(invalid(
                "preallocate_bytes",
                format!("{preallocate_bytes} (valid: a multiple of 4096 up to 2 GiB)"),
            ));
        }
        let positive = |field: &'static str, value: u64| {
            if value == 0 {
                Err(invalid(field, "must be positive"))
            } else {
                Ok(value)
            }
        };
        let config = NodeConfig {
            data_dir: flags
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| DATA_DIR_DEFAULT.into()),
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| LISTEN_DEFAULT.into()),
            shards,
            cpus,
            allow_buffered_io: flags.allow_buffered_io || file.allow_buffered_io.unwrap_or(false),
            max_connections: u32::try_from(positive(
                "max_connections",
                flags
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(CONNECTIONS_MAX_DEFAULT)
                    .into(),
            )?)
            .unwrap_or(u32::MAX),
            frames_in_flight: u32::try_from(positive(
                "frames_in_flight",
                flags
                    .frames_in_flight
                    .or(file.frames_in_flight)
                    .unwrap_or(FRAMES_IN_FLIGHT_DEFAULT)
                    .into(),
            )?)
            .unwrap_or(u32::MAX),
            frame_size_max,
            unflushed_bytes: positive(
                "unflushed_bytes",
                flags
                    .unflushed_bytes
                    .or(file.unflushed_bytes)
                    .unwrap_or(UNFLUSHED_BYTES_DEFAULT),
            )?,
            fetch_waiters: u32::try_from(positive(
                "fetch_waiters",
                flags
                    .fetch_waiters
                    .or(file.fetch_waiters)
                    .unwrap_or(FETCH_WAITERS_DEFAULT)
                    .into(),
            )?)
            .unwrap_or(u32::MAX),
            retention_ms: Some(positive(
                "retention_ms",
                flags
                    .retention_ms
                    .or(file.retention_ms)
                    .unwrap_or(RETENTION_MS_DEFAULT),
            )?),
            retention_bytes: flags.retention_bytes.or(file.retention_bytes),
            segment_bytes,
            flush_interval_ms: flags
                .flush_interval_ms
                .or(file.flush_interval_ms)
                .unwrap_or(10),
            retention_check_ms: positive(
                "retention_check_ms",
                flags
                    .retention_check_ms
                    .or(file.retention_check_ms)
                    .unwrap_or(RETENTION_CHECK_MS_DEFAULT),
            )?,
            io_memory: flags
                .io_memory
                .or(file.io_memory)
                .unwrap_or(IO_MEMORY_DEFAULT),
            tail_cache_bytes: flags
                .tail_cache_bytes
                .or(file.tail_cache_bytes)
                .unwrap_or(TAIL_CACHE_BYTES_DEFAULT),
            preallocate_bytes,
            frame_timeout_ms: positive(
                "frame_timeout_ms",
                flags
                    .frame_timeout_ms
                    .or(file.frame_timeout_ms)
                    .unwrap_or(FRAME_TIMEOUT_MS_DEFAULT),
            )?,
            idle_timeout_ms: positive(
                "idle_timeout_ms",
                flags
                    .idle_timeout_ms
                    .or(file.idle_timeout_ms)
                    .unwrap_or(IDLE_TIMEOUT_MS_DEFAULT),
            )?,
            verify_bytes_per_second: flags
                .verify_bytes_per_second
                .or(file.verify_bytes_per_second)
                .unwrap_or(VERIFY_BYTES_PER_SECOND_DEFAULT),
            verify_interval_ms: positive(
                "verify_interval_ms",
                flags
                    .verify_interval_ms
                    .or(file.verify_interval_ms)
                    .unwrap_or(VERIFY_INTERVAL_MS_DEFAULT),
            )?,
            auto_create_topics: flags.auto_create_topics
                || file.auto_create_topics.unwrap_or(false),
            auto_create_partitions: u32::try_from(positive(
                "auto_create_partitions",
                flags
                    .auto_create_partitions
                    .or(file.auto_create_partitions)
                    .unwrap_or(1)
                    .into(),
            )?)
            .unwrap_or(1),
        };
        if config.auto_create_partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(invalid(
                "auto_create_partitions",
                format!(
                    "{} (valid: 1 to {PARTITIONS_PER_TOPIC_MAX})",
                    config.auto_create_partitions
                ),
            ));
        }
        if config.flush_interval_ms <= 0 {
            return Err(invalid("flush_interval_ms", "must be positive"));
        }
        Ok(config)
    }

    /// The log settings of a partition of a topic with these (resolved) settings.
    pub fn log_config(
        &self,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        segment_bytes: u32,
    ) -> LogConfig {
        LogConfig {
            segment_bytes,
            retention_ms: retention_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            retention_bytes,
            flush_interval_ms: self.flush_interval_ms,
            preallocate_bytes: self.preallocate_bytes,
            fetch_waiters_max: self.fetch_waiters,
            ..LogConfig::default()
        }
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0,2,4-6").unwrap(), vec![0, 2, 4, 5, 6]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("spate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "shards = 3\nlisten = \"127.0.0.1:7000\"\nfetch_waiters = 9\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(file.clone()),
            shards: Some(2),
            ..Flags::default()
        };
        let config = NodeConfig::resolve(flags).unwrap();
        assert_eq!(config.shards, 2);
        assert_eq!(config.listen, "127.0.0.1:7000");
        assert_eq!(config.fetch_waiters, 9);
        assert_eq!(config.frames_in_flight, FRAMES_IN_FLIGHT_DEFAULT);
        std::fs::write(&file, "sharks = 3\n").unwrap();
        let flags = Flags {
            config: Some(file),
            ..Flags::default()
        };
        assert!(matches!(
            NodeConfig::resolve(flags),
            Err(ConfigError::Parse { .. })
        ));
        let flags = Flags {
            shards: Some(0),
            ..Flags::default()
        };
        assert!(NodeConfig::resolve(flags).is_err());
    }
}
