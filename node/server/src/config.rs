//! Node configuration: command-line flags (`clap`) and an optional TOML file with the same
//! settings. A flag given on the command line wins over the file; every setting has a default.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use spate_core::config::PREALLOCATE_BYTES_DEFAULT;
use spate_core::LogConfig;
use spate_format::limits::{
    PARTITIONS_PER_TOPIC_MAX, SEGMENT_SIZE_DEFAULT, SEGMENT_SIZE_MAX, SEGMENT_SIZE_MIN,
};
use spate_proto::limits::{REQUEST_SIZE_MAX, SHARDS_MAX};
use thiserror::Error;

/// Default data directory.
pub const DATA_DIR_DEFAULT: &str = "./spate-data";
/// Default address of the metrics listener.
pub const METRICS_LISTEN_DEFAULT: &str = "127.0.0.1:9644";
/// Default listen address of shard 0 (shard i listens on port + i).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7460";
/// Connections one shard accepts at once.
pub const CONNECTIONS_MAX_DEFAULT: u32 = 1024;
/// Requests one connection may have in flight (pipelining depth).
pub const FRAMES_IN_FLIGHT_DEFAULT: u32 = 256;
/// Bytes appended but not yet durable, per shard, before it stops reading its connections.
pub const UNFLUSHED_BYTES_DEFAULT: u64 = 128 << 20;
/// Data acknowledged with `none` or `write` is synced within this many ms.
pub const FLUSH_INTERVAL_MS_DEFAULT: i64 = 10;
/// Long-poll fetches parked on one partition at once.
pub const FETCH_WAITERS_DEFAULT: u32 = spate_core::FETCH_WAITERS_DEFAULT;
/// Default topic retention: 7 days.
pub const RETENTION_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;
/// How often each shard applies retention.
pub const RETENTION_CHECK_MS_DEFAULT: u64 = 60_000;
/// How long an idle idempotent producer is remembered per partition: 7 days (Kafka's
/// `transactional.id.expiration.ms`).
pub const PRODUCER_EXPIRY_MS_DEFAULT_U64: u64 =
    spate_core::config::PRODUCER_EXPIRY_MS_DEFAULT.unsigned_abs();
/// Committed offsets of groups without members are kept 7 days after their commit.
pub const OFFSETS_RETENTION_MS_DEFAULT: u64 =
    spate_core::offsets::OFFSETS_RETENTION_MS_DEFAULT.unsigned_abs();
/// Records of live offsets below which an offsets log is never compacted.
pub const OFFSETS_SNAPSHOT_RECORDS_DEFAULT: u64 =
    spate_core::coordinator::SNAPSHOT_RECORDS_MIN_DEFAULT;
/// An empty group's first rebalance waits 3 s for more members.
pub const GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT: u64 =
    spate_core::group::INITIAL_REBALANCE_DELAY_MS_DEFAULT.unsigned_abs();
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
/// The cluster name under which a node's keys live in etcd (`/spate/NAME/`).
pub const CLUSTER_NAME_DEFAULT: &str = "spate";
/// A node's etcd lease lives this long without renewal (Kafka's broker session timeout is
/// 9 s with KRaft, 18 s with ZooKeeper).
pub const SESSION_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest rack name (`--rack`).
pub const RACK_LENGTH_MAX: usize = 64;

/// Whether `rack` is a rack name a member record may carry: 1 to [`RACK_LENGTH_MAX`] bytes of
/// `[A-Za-z0-9._:/-]`.
pub fn valid_rack(rack: &str) -> bool {
    !rack.is_empty()
        && rack.len() <= RACK_LENGTH_MAX
        && rack
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._:/-".contains(&byte))
}

/// How often the controller checks the leaders' balance (Kafka's
/// `leader.imbalance.check.interval.seconds`, 300).
pub const LEADER_IMBALANCE_CHECK_MS_DEFAULT: u64 = 300_000;
/// The share of a node's preferred partitions led elsewhere that starts a rebalance (Kafka's
/// `leader.imbalance.per.broker.percentage`).
pub const LEADER_IMBALANCE_PERCENT_DEFAULT: u32 = 10;
/// Memory each shard registers with io_uring for I/O buffers. Small, so several shards run
/// under the default locked-memory limit (`ulimit -l`, often 8 MiB or less).
pub const IO_MEMORY_DEFAULT: usize = 512 << 10;

spate_proto::settings! {
    /// `spate-node`: the Spate storage node. Thread-per-core shards, each owning its partitions
    /// and writing them with O_DIRECT io_uring I/O; clients (and the gateway) speak Spate frames
    /// over TCP to the shard that owns a partition.
    #[derive(Parser)]
    #[command(name = "spate-node", version, about, long_about = None)]
    pub struct Flags {
        #[command(subcommand)]
        pub command: Option<NodeCommand>,
        /// TOML file with any of these settings (flags override it).
        #[arg(long, value_name = "FILE")]
        pub config: Option<PathBuf>,
    }
    /// The resolved configuration of a node: every setting, with its default where none was
    /// given.
    pub struct NodeConfig {
        /// Data directory (topics, segments, metadata). Must be on a filesystem with O_DIRECT.
        /// [default: ./spate-data]
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf = DATA_DIR_DEFAULT.into(),
        /// This node's id in a cluster (docs/cluster.md). Recorded in the data directory at
        /// the first start with one; a data directory is never served under another id.
        /// [default: none (a single node)]
        #[arg(long, value_name = "N")]
        node_id: u32,
        /// etcd endpoints of the cluster's control plane, comma-separated (e.g.
        /// `http://10.0.0.1:2379,http://10.0.0.2:2379`); with them the node registers as a
        /// member of the cluster (needs --node-id). [default: none (a single node, no etcd)]
        #[arg(long, value_name = "URLS")]
        etcd: String,
        /// In a cluster, the `host:port` of the Kafka listener (a gateway's) in front of this
        /// node: published in its member record and listed as its broker (broker id = node
        /// id) in every gateway's Kafka Metadata, so Kafka clients send each partition's
        /// requests through its leader's gateway. Only when every member has one; otherwise
        /// each gateway answers as the one broker. [default: none]
        #[arg(long, value_name = "HOST:PORT")]
        kafka_address: String,
        /// In a cluster, this node's rack (a failure domain: a rack, a room, an availability
        /// zone; 1 to 64 characters of [A-Za-z0-9._:/-]): when every member has one, the
        /// controller spreads each partition's replicas over racks (Kafka's `broker.rack`),
        /// and Kafka Metadata lists it with the node's broker. [default: none]
        #[arg(long, value_name = "NAME")]
        rack: String,
        /// The cluster's name: its keys in etcd live under `/spate/NAME/`. [default: spate]
        #[arg(long, value_name = "NAME")]
        cluster_name: String = CLUSTER_NAME_DEFAULT.into(),
        /// A node whose etcd lease is not renewed for this long is dead to the cluster; it is
        /// renewed every third of it. [default: 10000]
        #[arg(long, value_name = "MS")]
        session_timeout_ms: u64 = SESSION_TIMEOUT_MS_DEFAULT,
        /// In a cluster, the copies of each partition of a topic created without a replication
        /// factor (automatic creation, Kafka's -1; Kafka's default.replication.factor).
        /// [default: 1]
        #[arg(long, value_name = "N")]
        default_replication_factor: u16 = 1,
        /// In a cluster, the copies of each partition of the offsets topic (committed offsets
        /// of consumer groups), created at the first group request; 0: the smaller of 3 and
        /// the members registered then (Kafka's `offsets.topic.replication.factor`).
        /// [default: 0]
        #[arg(long, value_name = "N")]
        offsets_replication_factor: u16 = 0,
        /// In a cluster, the controller moves leaderships back to their preferred replicas
        /// (the first replica of each partition) when more than --leader-imbalance-percent
        /// of a node's preferred partitions are led by other nodes, checking every
        /// --leader-imbalance-check-ms (Kafka's `auto.leader.rebalance.enable`). [default: true]
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        auto_leader_rebalance: bool = true,
        /// How often (ms) the controller checks the leaders' balance (Kafka's
        /// `leader.imbalance.check.interval.seconds`); the first check comes one interval after
        /// a node becomes the controller. [default: 300000]
        #[arg(long, value_name = "MS")]
        leader_imbalance_check_ms: u64 = LEADER_IMBALANCE_CHECK_MS_DEFAULT,
        /// The share of a node's preferred partitions (in percent, 0 to 100) that may be led
        /// elsewhere before the controller moves them back (Kafka's
        /// `leader.imbalance.per.broker.percentage`). [default: 10]
        #[arg(long, value_name = "PERCENT")]
        leader_imbalance_percent: u32 = LEADER_IMBALANCE_PERCENT_DEFAULT,
        /// Where the node serves Prometheus metrics (`/metrics`), `/healthz` and `/readyz`
        /// over HTTP (docs/operations.md, "Metrics"); `none` turns metrics off (nothing is
        /// counted). [default: 127.0.0.1:9644]
        #[arg(long, value_name = "HOST:PORT|none")]
        metrics_listen: String = METRICS_LISTEN_DEFAULT.into(),
        /// Sum the partition metrics per topic instead of one series per partition (for
        /// nodes with many partitions; above 10,000 partitions they are summed anyway).
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        metrics_per_topic: bool = false,
        /// How log lines are written: `text` or `json` (one object per line). [default: text]
        #[arg(long, value_name = "FORMAT")]
        log_format: String = "text".into(),
        /// What is logged: a level (`error`, `warn`, `info`, `debug`, `trace`) or `tracing`
        /// directives (`info,spate_node::storage=debug`); `RUST_LOG` wins when set.
        /// [default: info]
        #[arg(long, value_name = "LEVEL")]
        log_level: String = "info".into(),
        /// Address of shard 0; shard i listens on port + i (port 0: every shard picks a free
        /// port). [default: 127.0.0.1:7460]
        #[arg(long, value_name = "HOST:PORT")]
        listen: String = LISTEN_DEFAULT.into(),
        /// Number of shards (executor threads). [default: one per available core]
        #[arg(long, value_name = "N")]
        shards: u32 = available_cores(),
        /// Pin shard i to the i-th CPU of this comma-separated list (e.g. `0,2,4-7`).
        /// [default: not pinned]
        #[arg(long, value_name = "LIST")]
        cpus: String,
        /// Run even where O_DIRECT is unavailable (tmpfs silently disables it): writes then go
        /// through the page cache. For experiments only.
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        allow_buffered_io: bool = false,
        /// Connections each shard accepts at once. [default: 1024]
        #[arg(long, value_name = "N")]
        max_connections: u32 = CONNECTIONS_MAX_DEFAULT,
        /// Requests one connection may have in flight. [default: 256]
        #[arg(long, value_name = "N")]
        frames_in_flight: u32 = FRAMES_IN_FLIGHT_DEFAULT,
        /// Largest request frame in bytes. [default: 1 MiB + 64 KiB]
        #[arg(long, value_name = "BYTES")]
        frame_size_max: u32 = REQUEST_SIZE_MAX,
        /// Bytes appended but not yet durable per shard before it stops reading from its
        /// connections (back-pressure). [default: 128 MiB]
        #[arg(long, value_name = "BYTES")]
        unflushed_bytes: u64 = UNFLUSHED_BYTES_DEFAULT,
        /// Long-poll fetches parked on one partition at once. [default: 1024]
        #[arg(long, value_name = "N")]
        fetch_waiters: u32 = FETCH_WAITERS_DEFAULT,
        /// Default retention of a topic by time, in ms. [default: 604800000 (7 days)]
        #[arg(long, value_name = "MS")]
        retention_ms: u64 = RETENTION_MS_DEFAULT,
        /// Default retention of a topic by size, in bytes per partition. [default: unlimited]
        #[arg(long, value_name = "BYTES")]
        retention_bytes: u64,
        /// Default segment size in bytes. [default: 1 GiB]
        #[arg(long, value_name = "BYTES")]
        segment_bytes: u32 = SEGMENT_SIZE_DEFAULT,
        /// Data acknowledged with `none` or `write` is synced within this many ms. [default: 10]
        #[arg(long, value_name = "MS")]
        flush_interval_ms: i64 = FLUSH_INTERVAL_MS_DEFAULT,
        /// An idempotent producer that sent nothing to a partition for this long (ms) is
        /// forgotten there: its resends are no longer recognised. [default: 604800000 (7 days)]
        #[arg(long, value_name = "MS")]
        producer_expiry_ms: u64 = PRODUCER_EXPIRY_MS_DEFAULT_U64,
        /// Committed offsets of a consumer group without members are deleted this long (ms)
        /// after their commit (Kafka's `offsets.retention.minutes`). [default: 604800000 (7 days)]
        #[arg(long, value_name = "MS")]
        offsets_retention_ms: u64 = OFFSETS_RETENTION_MS_DEFAULT,
        /// The offsets log of a group coordinator is compacted (all live offsets written
        /// again, everything before deleted) once more than twice max(live offsets, this)
        /// records were appended since the last compaction. Checked every
        /// --retention-check-ms. [default: 10000]
        #[arg(long, value_name = "N")]
        offsets_snapshot_records: u64 = OFFSETS_SNAPSHOT_RECORDS_DEFAULT,
        /// How long (ms) an empty consumer group waits for more members before its first
        /// rebalance ends (Kafka's `group.initial.rebalance.delay.ms`). [default: 3000]
        #[arg(long, value_name = "MS")]
        group_initial_rebalance_delay_ms: u64 = GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT,
        /// How often each shard applies retention, in ms. [default: 60000]
        #[arg(long, value_name = "MS")]
        retention_check_ms: u64 = RETENTION_CHECK_MS_DEFAULT,
        /// Memory per shard registered with io_uring, in bytes. [default: 512 KiB]
        #[arg(long, value_name = "BYTES")]
        io_memory: usize = IO_MEMORY_DEFAULT,
        /// Recently written bytes each shard keeps in memory for consumers at the tail, shared by
        /// its partitions. [default: 64 MiB]
        #[arg(long, value_name = "BYTES")]
        tail_cache_bytes: u64 = TAIL_CACHE_BYTES_DEFAULT,
        /// First preallocation of a segment file in bytes (a multiple of 4096); each extension
        /// doubles the file, up to the segment size. [default: 65536]
        #[arg(long, value_name = "BYTES")]
        preallocate_bytes: u64 = PREALLOCATE_BYTES_DEFAULT,
        /// A connection whose started request frame stops arriving for this many ms is closed.
        /// [default: 10000]
        #[arg(long, value_name = "MS")]
        frame_timeout_ms: u64 = FRAME_TIMEOUT_MS_DEFAULT,
        /// A connection with no request in flight that sends nothing for this many ms is closed
        /// (the gateway reconnects when it needs the shard again). [default: 600000]
        #[arg(long, value_name = "MS")]
        idle_timeout_ms: u64 = IDLE_TIMEOUT_MS_DEFAULT,
        /// Bytes per second each shard reads to verify the checksums of its sealed segments in
        /// the background (after every start, then every --verify-interval-ms); 0 turns it off.
        /// [default: 16777216 (16 MiB/s)]
        #[arg(long, value_name = "BYTES")]
        verify_bytes_per_second: u64 = VERIFY_BYTES_PER_SECOND_DEFAULT,
        /// Time from the start of one background verification pass to the start of the next, in
        /// ms (a pass that takes longer is followed at once by the next). [default: 86400000 (1 day)]
        #[arg(long, value_name = "MS")]
        verify_interval_ms: u64 = VERIFY_INTERVAL_MS_DEFAULT,
        /// Create a topic that a client names but that does not exist (a Kafka client's
        /// metadata request allowing it), with --auto-create-partitions partitions and the
        /// default settings. Off unless given (`spate up` turns it on).
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        auto_create_topics: bool = false,
        /// Partitions of an automatically created topic. [default: 1]
        #[arg(long, value_name = "N")]
        auto_create_partitions: u32 = 1,
    }
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

/// One shard per core this process may run on (at most [`SHARDS_MAX`]).
fn available_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |cores| {
        u32::try_from(usize::from(cores)).map_or(SHARDS_MAX, |cores| cores.min(SHARDS_MAX))
    })
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
    /// Whether the node counts and serves metrics (`--metrics-listen` is not `none`).
    pub fn metrics_on(&self) -> bool {
        self.metrics_listen != spate_ops::METRICS_OFF
    }

    /// Installs logging as configured (`--log-format`, `--log-level`, `RUST_LOG`).
    pub fn init_logging(&self) {
        spate_ops::logging::init(self.log_format.parse().unwrap_or_default(), &self.log_level);
    }

    /// Resolves flags over the file (if any) over defaults, and checks every setting.
    pub fn resolve(flags: Flags) -> Result<NodeConfig, ConfigError> {
        let file = match &flags.config {
            Some(path) => load_file(path)?,
            None => Flags::default(),
        };
        let config = flags.or(file).with_defaults();
        config.check()?;
        Ok(config)
    }

    /// Checks each setting against its valid range. Each failure names the setting.
    fn check(&self) -> Result<(), ConfigError> {
        if let Err(error) = self.log_format.parse::<spate_ops::LogFormat>() {
            return Err(invalid("log_format", error.to_string()));
        }
        if let Err(error) = spate_ops::logging::check_level(&self.log_level) {
            return Err(invalid("log_level", error.to_string()));
        }
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return Err(invalid(
                "shards",
                format!("{} (valid: 1 to {SHARDS_MAX})", self.shards),
            ));
        }
        if let Some(cpus) = self.cpu_list()? {
            if cpus.len() < self.shards as usize {
                return Err(invalid(
                    "cpus",
                    format!("{} CPUs listed for {} shards", cpus.len(), self.shards),
                ));
            }
        }
        if !(4096..=REQUEST_SIZE_MAX).contains(&self.frame_size_max) {
            return Err(invalid(
                "frame_size_max",
                format!(
                    "{} (valid: 4096 to {REQUEST_SIZE_MAX})",
                    self.frame_size_max
                ),
            ));
        }
        if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX).contains(&self.segment_bytes) {
            return Err(invalid(
                "segment_bytes",
                format!("{} (valid: 64 KiB to 2 GiB)", self.segment_bytes),
            ));
        }
        if !(4096..=u64::from(SEGMENT_SIZE_MAX)).contains(&self.preallocate_bytes)
            || !self.preallocate_bytes.is_multiple_of(4096)
        {
            return Err(invalid(
                "preallocate_bytes",
                format!(
                    "{} (valid: a multiple of 4096 up to 2 GiB)",
                    self.preallocate_bytes
                ),
            ));
        }
        #[cfg(not(feature = "cluster"))]
        if self.etcd.is_some() {
            return Err(invalid(
                "etcd",
                "this spate-node was built without cluster support: build it with \
                 `--features cluster` (which needs protoc, Debian's protobuf-compiler; \
                 docs/cluster.md)",
            ));
        }
        if self.default_replication_factor == 0
            || (self.default_replication_factor > 1 && self.etcd.is_none())
        {
            return Err(invalid(
                "default_replication_factor",
                format!(
                    "{} (valid: 1, or more in a cluster: --etcd)",
                    self.default_replication_factor
                ),
            ));
        }
        if self.offsets_replication_factor > 1 && self.etcd.is_none() {
            return Err(invalid(
                "offsets_replication_factor",
                format!(
                    "{} (valid: 0 or 1, or more in a cluster: --etcd)",
                    self.offsets_replication_factor
                ),
            ));
        }
        if let Some(address) = &self.kafka_address {
            let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
                !host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .is_empty()
                    && port.parse::<u16>().is_ok_and(|port| port != 0)
            }) && address.len() <= spate_proto::limits::ENDPOINT_SIZE_MAX as usize;
            if self.etcd.is_none() || !valid {
                return Err(invalid(
                    "kafka_address",
                    format!(
                        "{address:?} (valid: HOST:PORT with a port above 0, in a cluster: --etcd)"
                    ),
                ));
            }
        }
        if self.etcd.is_some() && self.node_id.is_none() {
            return Err(invalid(
                "etcd",
                "a node of a cluster needs its --node-id (node ids are how the cluster names \
                 its members)",
            ));
        }
        if self
            .etcd
            .as_deref()
            .is_some_and(|urls| urls.split(',').any(|url| url.trim().is_empty()))
        {
            return Err(invalid("etcd", "an empty endpoint in the list"));
        }
        if let Some(rack) = &self.rack {
            if !valid_rack(rack) {
                return Err(invalid(
                    "rack",
                    format!("{rack:?} (valid: 1 to 64 characters of [A-Za-z0-9._:/-])"),
                ));
            }
        }
        if !(1_000..=86_400_000).contains(&self.leader_imbalance_check_ms) {
            return Err(invalid(
                "leader_imbalance_check_ms",
                format!(
                    "{} (valid: 1000 to 86400000)",
                    self.leader_imbalance_check_ms
                ),
            ));
        }
        if self.leader_imbalance_percent > 100 {
            return Err(invalid(
                "leader_imbalance_percent",
                format!("{} (valid: 0 to 100)", self.leader_imbalance_percent),
            ));
        }
        if !(3_000..=300_000).contains(&self.session_timeout_ms) {
            return Err(invalid(
                "session_timeout_ms",
                format!("{} (valid: 3000 to 300000)", self.session_timeout_ms),
            ));
        }
        if self.cluster_name.is_empty()
            || self.cluster_name.len() > 64
            || !self
                .cluster_name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte))
        {
            return Err(invalid(
                "cluster_name",
                format!(
                    "{:?} (valid: 1 to 64 characters of [A-Za-z0-9._-])",
                    self.cluster_name
                ),
            ));
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&self.auto_create_partitions) {
            return Err(invalid(
                "auto_create_partitions",
                format!(
                    "{} (valid: 1 to {PARTITIONS_PER_TOPIC_MAX})",
                    self.auto_create_partitions
                ),
            ));
        }
        let positive = [
            ("max_connections", u64::from(self.max_connections)),
            ("frames_in_flight", u64::from(self.frames_in_flight)),
            ("unflushed_bytes", self.unflushed_bytes),
            ("fetch_waiters", u64::from(self.fetch_waiters)),
            ("retention_ms", self.retention_ms),
            ("producer_expiry_ms", self.producer_expiry_ms),
            ("retention_check_ms", self.retention_check_ms),
            ("frame_timeout_ms", self.frame_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("verify_interval_ms", self.verify_interval_ms),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(invalid(field, "must be positive"));
        }
        if self.flush_interval_ms <= 0 {
            return Err(invalid("flush_interval_ms", "must be positive"));
        }
        Ok(())
    }

    /// The CPUs the shards are pinned to, in shard order (`None`: not pinned).
    pub fn cpu_list(&self) -> Result<Option<Vec<usize>>, ConfigError> {
        self.cpus.as_deref().map(parse_cpu_list).transpose()
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
            producer_expiry_ms: i64::try_from(self.producer_expiry_ms).unwrap_or(i64::MAX),
            ..LogConfig::default()
        }
    }
}

fn load_file(path: &Path) -> Result<Flags, ConfigError> {
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
