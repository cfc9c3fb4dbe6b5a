//! The Kafka scenarios: a real Kafka client (librdkafka, through the `rdkafka` crate, behind
//! the `kafka` cargo feature) producing to and catching up from a Kafka-compatible broker
//! over TCP: by default the Spate this benchmark starts (node + gateway with its Kafka
//! listener, as `spate up`), or any broker given by `--bootstrap`.
//!
//! `kafka-produce` measures what `produce` measures (record value bytes acknowledged per
//! second, per-record acknowledgement latency, closed loop or open loop at `--rate`);
//! `kafka-consume` what `consume` measures (value bytes per second of a catch-up read of a
//! backlog produced first, untimed), reading with `assign()` from the earliest offset: Spate
//! has no consumer groups yet. Every queue the client keeps is bounded by a named setting.
//!
//! The arguments are here whether or not the feature is on, so the commands exist in every
//! build and say how to get them when it is off.

use clap::{Args, ValueEnum};

#[cfg(feature = "kafka")]
mod librdkafka;
#[cfg(feature = "kafka")]
pub use librdkafka::{consume, produce};

/// Whether this build can run the Kafka scenarios.
pub const ENABLED: bool = cfg!(feature = "kafka");

/// Why the Kafka scenarios cannot run in this build.
pub const FEATURE_OFF: &str = "spate-bench was built without the `kafka` feature (it links \
    the system's librdkafka: apt-get install librdkafka-dev, then cargo build --release -p \
    spate-bench --features kafka)";

/// The broker a Kafka scenario talks to.
#[derive(Debug, Clone)]
// Read by the Kafka scenarios only.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub struct Broker {
    /// librdkafka's `bootstrap.servers`.
    pub bootstrap: String,
    /// Started by this benchmark (a Spate in this process), rather than given by the user.
    pub local: bool,
    /// Keep the topics a run makes (`--keep`; always for a local broker, which goes away).
    pub keep: bool,
}

/// Kafka's `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    /// Every in-sync replica has the batch (Spate: `fsync`, after `fdatasync`).
    All,
    /// The leader wrote it (Spate: `write`, not yet synced).
    #[value(name = "1")]
    Leader,
    /// No answer at all (Spate: `none`); librdkafka counts a record delivered once sent.
    #[value(name = "0")]
    NoAnswer,
}

/// librdkafka's `compression.type`. librdkafka before 2.11.1 compresses gzip, snappy and lz4
/// only for a broker that lists Produce v0 (Spate does, for this reason) and otherwise sends
/// them uncompressed, which the run detects and stops on, saying why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Args)]
pub struct KafkaProduceArgs {
    /// Producers, each its own librdkafka client (own connections and I/O threads).
    #[arg(long, default_value = "1")]
    pub producers: u32,
    #[arg(long, default_value = "4")]
    pub partitions: u32,
    /// Value bytes per record (records have no key; librdkafka's default partitioner then
    /// fills one partition at a time, switching every `sticky.partitioning.linger.ms`).
    #[arg(long, default_value = "1024")]
    pub message_size: usize,
    /// librdkafka's `batch.size`: a partition's batch is sent at this many bytes.
    #[arg(long, default_value = "262144")]
    pub batch_bytes: u32,
    /// librdkafka's `linger.ms`.
    #[arg(long, default_value = "5")]
    pub linger_ms: u64,
    #[arg(long, value_enum, default_value = "all")]
    pub acks: Acks,
    /// librdkafka's `compression.type` (see docs/benchmarks.md).
    #[arg(long, value_enum, default_value = "none")]
    pub compression: Compression,
    /// How long to send.
    #[arg(long, default_value = "10")]
    pub seconds: f64,
    /// Stop after this many records in total (instead of at `--seconds`).
    #[arg(long)]
    pub count: Option<u64>,
    /// Open loop: send this many records per second in total, latency from each record's
    /// intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Latency is not recorded for records sent in this first part of the run.
    #[arg(long, default_value = "1")]
    pub warmup_seconds: f64,
    /// Bytes each producer holds unacknowledged before sending waits (librdkafka's
    /// `queue.buffering.max.kbytes`, rounded up to KiB).
    #[arg(long, default_value = "8388608")]
    pub buffer_bytes: u32,
    /// Replication factor of the topic the scenario creates (-1: the broker's default).
    #[arg(long, default_value = "-1", allow_negative_numbers = true)]
    pub replication_factor: i32,
}

#[derive(Debug, Clone, Args)]
pub struct KafkaConsumeArgs {
    #[arg(long, default_value = "4")]
    pub partitions: u32,
    #[arg(long, default_value = "1024")]
    pub message_size: usize,
    /// Bytes of record values produced (acks=all, untimed) before the timed read.
    #[arg(long, default_value = "256000000")]
    pub backlog_bytes: u64,
    /// librdkafka's `max.partition.fetch.bytes`: the soft limit of one partition in one fetch
    /// answer, as `consume`'s per-partition fetches (a whole answer holds at most
    /// `fetch.max.bytes`, librdkafka's default of 50 MiB).
    #[arg(long, default_value = "1048576")]
    pub fetch_bytes: u32,
    /// Compression of the backlog's batches (librdkafka's `compression.type`).
    #[arg(long, value_enum, default_value = "none")]
    pub compression: Compression,
    /// Replication factor of the topic the scenario creates (-1: the broker's default).
    #[arg(long, default_value = "-1", allow_negative_numbers = true)]
    pub replication_factor: i32,
}

#[cfg(not(feature = "kafka"))]
pub fn produce(
    _runtime: &tokio::runtime::Runtime,
    _broker: &Broker,
    _name: &str,
    _args: &KafkaProduceArgs,
) -> Result<crate::report::Run, String> {
    Err(FEATURE_OFF.to_owned())
}

#[cfg(not(feature = "kafka"))]
pub fn consume(
    _runtime: &tokio::runtime::Runtime,
    _broker: &Broker,
    _name: &str,
    _args: &KafkaConsumeArgs,
) -> Result<crate::report::Run, String> {
    Err(FEATURE_OFF.to_owned())
}
