//! `spate-bench`: Spate's throughput and latency benchmarks, each run beside the baselines it
//! is compared with (raw O_DIRECT disk writes with `tokio-uring`, raw QUIC with quinn, raw
//! TCP for the Kafka scenarios), measured in the same process on the same machine. Every command prints a summary table and
//! writes `report.json`, `throughput.svg` and `latency.svg` into the output directory.
//! Speed claims come from these ratios only.

mod abuse;
mod charts;
mod cluster;
mod cpu;
mod disk;
mod kafka;
mod quic;
mod replication;
mod report;
mod restart;
mod scenarios;
mod storage;
mod tcp;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::abuse::AbuseArgs;
use crate::cluster::{Local, Target};
use crate::disk::DiskArgs;
use crate::kafka::{Acks, Broker, Compression, KafkaConsumeArgs, KafkaProduceArgs};
use crate::quic::QuicArgs;
use crate::replication::{ConnectionsArgs, FailoverArgs, ReplicatedProduceArgs};
use crate::report::{pair_ratios, sides, switch_counting, Meter, Report, Run};
use crate::restart::RestartArgs;
use crate::scenarios::{ConsumeArgs, DurabilityArg, ProduceArgs};
use crate::storage::StorageArgs;
use crate::tcp::TcpArgs;

/// spate-bench: Spate benchmarks with same-run baselines, a JSON report and charts.
#[derive(Debug, Parser)]
#[command(name = "spate-bench", version, about, long_about = None)]
struct Cli {
    /// How log lines are written to stderr: `text` or `json`; given before the command.
    /// [default: text]
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: spate_ops::LogFormat,
    /// What the node and gateway under test log: a level or `tracing` directives; `RUST_LOG`
    /// wins when set. [default: warn]
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    log_level: String,
    /// Where report.json, throughput.svg and latency.svg go. [default:
    /// ./bench-results/UNIX_TIME]
    #[arg(long, global = true, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Data directory for the node, the storage engine and the disk baseline; must be on a
    /// real filesystem (O_DIRECT), and it is emptied.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "./target/bench-data"
    )]
    data_dir: PathBuf,
    /// Benchmark a running gateway (produce, consume, e2e) instead of starting a node and a
    /// gateway in this process.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    gateway: Option<SocketAddr>,
    /// CA certificate of `--gateway`. [default: ./spate-data/tls/cert.pem]
    #[arg(long, global = true, value_name = "PATH")]
    ca_cert: Option<PathBuf>,
    /// With `--gateway` or `--bootstrap`: keep the topics the benchmark made there (by
    /// default they are deleted when it ends).
    #[arg(long, global = true)]
    keep: bool,
    /// Run the Kafka scenarios against this Kafka-compatible broker (librdkafka's
    /// `bootstrap.servers`) instead of the Kafka listener of a Spate started in this process.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Producers through the gateway: MB/s, records/s, acknowledgement latency.
    Produce {
        #[command(flatten)]
        args: ProduceArgs,
        /// Also run the baselines it is compared with (raw QUIC; raw disk with fdatasync
        /// for fsync durability) and print the ratios.
        #[arg(long)]
        baseline: bool,
    },
    /// Catch-up read of a backlog from the earliest offset.
    Consume(ConsumeArgs),
    /// Produce and consume together: publish-to-consume latency.
    E2e(ProduceArgs),
    /// Kafka producers (librdkafka) through the gateway's Kafka listener, or to any broker
    /// given by `--bootstrap`: MB/s, records/s, acknowledgement latency. Needs the `kafka`
    /// feature.
    KafkaProduce {
        #[command(flatten)]
        args: KafkaProduceArgs,
        /// Also run the raw TCP baseline and print the ratio.
        #[arg(long)]
        baseline: bool,
    },
    /// Kafka (librdkafka, `assign()`) catch-up read of a backlog from the earliest offset.
    /// Needs the `kafka` feature.
    KafkaConsume {
        #[command(flatten)]
        args: KafkaConsumeArgs,
        /// Also run the raw TCP baseline and print the ratio.
        #[arg(long)]
        baseline: bool,
    },
    /// The storage engine alone (a glommio shard, real files, no network).
    Storage {
        #[command(flatten)]
        args: StorageArgs,
        /// Also run the raw disk baseline of the same block size and queue depth.
        #[arg(long)]
        baseline: bool,
    },
    /// A node with many one-record partitions killed with SIGKILL and restarted: time until
    /// it serves, its memory and the disk the partitions take.
    Restart(RestartArgs),
    /// A well-behaved producer alone, then beside attackers that hold partial frames on
    /// many streams, against a gateway process: throughput ratio, the gateway's memory
    /// against its budget, after the attack, and its exit time after SIGTERM.
    Abuse(AbuseArgs),
    /// A cluster of nodes on this machine (etcd and one process per node): produce at
    /// replication factor 1 and 3 in the same run, with the ratios. Needs the `cluster`
    /// feature and etcd.
    ReplicatedProduce(ReplicatedProduceArgs),
    /// A cluster of nodes with many replicated partitions; the controller's node killed with
    /// SIGKILL: the times until a new controller, until every partition is led again and
    /// until every partition took a write. Needs the `cluster` feature and etcd.
    Failover(FailoverArgs),
    /// Many producer connections through a gateway process per node of a cluster: memory
    /// per connection, handshake rate, acknowledgement latency. Needs the `cluster` feature
    /// and etcd.
    Connections(ConnectionsArgs),
    /// What counting metrics costs, as the suite measures it: storage engine runs and produce
    /// runs (through a node and a gateway) whose counting is switched on and off every
    /// second, with the ratios.
    MetricsCost {
        /// `2 × pairs` storage runs of `seconds` and `pairs` produce runs of `2 × seconds`
        /// (each switching its counting every second).
        #[arg(long, default_value = "4")]
        pairs: u32,
        #[arg(long, default_value = "10")]
        seconds: f64,
    },
    /// A baseline alone.
    #[command(subcommand)]
    Baseline(Baseline),
    /// Runs a node in this process until killed (the restart scenario's child process).
    #[command(hide = true)]
    Node(Box<spate_node::Flags>),
    /// The fixed, documented set of runs (about 5 minutes; `--quick`: about 1 minute),
    /// baselines alternating with Spate runs, with the ratios.
    Suite {
        #[arg(long)]
        quick: bool,
    },
    /// Runs a gateway in this process, exactly as `spate-gateway` does (for `abuse`, which
    /// then needs no separately built gateway binary).
    #[command(hide = true)]
    GatewayProcess(Box<spate_gateway::Flags>),
}

#[derive(Debug, Subcommand)]
enum Baseline {
    /// O_DIRECT sequential writes with tokio-uring, with or without fdatasync per round.
    Disk(DiskArgs),
    /// A quinn bulk transfer over loopback with the gateway's TLS and transport settings.
    Quic(QuicArgs),
    /// A plain TCP bulk transfer over loopback on one connection.
    Tcp(TcpArgs),
}

fn say(message: impl std::fmt::Display) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{message}");
    }
}

/// The Spate under test for scenarios that go through the gateway.
enum Under {
    Local(Box<Local>),
    Remote(Target),
}

impl Under {
    fn target(&self) -> &Target {
        match self {
            Under::Local(local) => &local.target,
            Under::Remote(target) => target,
        }
    }

    /// Stops a Spate this benchmark started; on a gateway the user gave, deletes the topics
    /// the benchmark made unless `keep`.
    async fn stop(self, keep: bool) {
        match self {
            Under::Local(local) => (*local).stop().await,
            Under::Remote(target) if !keep => {
                for left in target.clean_up().await {
                    say(format!("could not delete the benchmark's topic {left}"));
                }
            }
            Under::Remote(_) => {}
        }
    }
}

impl Cli {
    /// The broker of the Kafka scenarios: `--bootstrap`, or the local Spate's Kafka listener.
    fn broker(&self, under: Option<&Under>) -> Result<Broker, String> {
        if let Some(bootstrap) = &self.bootstrap {
            return Ok(Broker {
                bootstrap: bootstrap.clone(),
                local: false,
                keep: self.keep,
            });
        }
        match under {
            Some(Under::Local(local)) => local
                .kafka
                .map(|address| Broker {
                    bootstrap: address.to_string(),
                    local: true,
                    keep: true,
                })
                .ok_or_else(|| "the gateway started without its Kafka listener".to_owned()),
            Some(Under::Remote(_)) => Err(
                "--gateway names a QUIC address: give the Kafka runs theirs with --bootstrap"
                    .to_owned(),
            ),
            None => Err("no Kafka broker to benchmark".to_owned()),
        }
    }

    async fn under(&self) -> Result<Under, String> {
        match self.gateway {
            Some(address) => Ok(Under::Remote(Target {
                address,
                cert: self
                    .ca_cert
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("./spate-data/tls/cert.pem")),
                server_name: "localhost".into(),
                made: Default::default(),
                replication_factor: 0,
            })),
            None => Local::start(&self.data_dir, None, true)
                .await
                .map(|local| Under::Local(Box::new(local))),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))
}

/// One step of a suite.
enum Step {
    Disk(&'static str, DiskArgs),
    Storage(&'static str, StorageArgs),
    Quic(&'static str, QuicArgs),
    Produce(&'static str, ProduceArgs),
    /// What counting metrics costs: storage and produce runs alternating with metrics on and
    /// off (`pairs` of each), reported as two runs per kind, each the median of its side.
    MetricsCost {
        pairs: u32,
        seconds: f64,
    },
    E2e(&'static str, ProduceArgs),
    Consume(&'static str, ConsumeArgs),
    Tcp(&'static str, TcpArgs),
    KafkaProduce(&'static str, KafkaProduceArgs),
    KafkaConsume(&'static str, KafkaConsumeArgs),
    Restart(&'static str, RestartArgs),
    Abuse(AbuseArgs),
    ReplicatedProduce(ReplicatedProduceArgs),
    Failover(&'static str, FailoverArgs),
    Connections(&'static str, ConnectionsArgs),
}

impl Step {
    /// The run's name in reports (ratios refer to runs by name).
    fn name(&self) -> &'static str {
        match self {
            Step::Disk(name, _)
            | Step::Storage(name, _)
            | Step::Quic(name, _)
            | Step::Produce(name, _)
            | Step::E2e(name, _)
            | Step::Consume(name, _)
            | Step::Tcp(name, _)
            | Step::KafkaProduce(name, _)
            | Step::KafkaConsume(name, _)
            | Step::Restart(name, _)
            | Step::Failover(name, _)
            | Step::Connections(name, _) => name,
            Step::Abuse(_) => "abuse",
            Step::MetricsCost { .. } => "metrics-cost",
            Step::ReplicatedProduce(_) => "replicated-produce",
        }
    }
}

fn produce_args(seconds: f64, partitions: u32, durability: DurabilityArg) -> ProduceArgs {
    ProduceArgs {
        producers: 1,
        partitions,
        message_size: 1024,
        batch_bytes: 256 << 10,
        linger_ms: 5,
        durability,
        seconds,
        count: None,
        rate: None,
        buffer_bytes: 8 << 20,
        warmup_seconds: 1.0,
    }
}

fn storage_args(seconds: f64, durability: DurabilityArg) -> StorageArgs {
    StorageArgs {
        partitions: 1,
        batch_bytes: 256 << 10,
        message_size: 1024,
        in_flight: 8,
        durability,
        seconds,
        metrics: true,
    }
}

/// How long `kafka-consume --baseline` runs the raw TCP baseline (a quick suite's length;
/// the catch-up read itself has no duration to match).
const CONSUME_BASELINE_SECONDS: f64 = 4.0;

fn tcp_args(seconds: f64) -> TcpArgs {
    TcpArgs {
        message_size: 64 << 10,
        seconds,
    }
}

/// The Kafka produce runs of the suite: `produce_args`' shape (1 producer, 4 partitions,
/// 1 KiB records, 256 KiB batches, 5 ms linger, 8 MiB buffer).
fn kafka_produce_args(seconds: f64, acks: Acks) -> KafkaProduceArgs {
    KafkaProduceArgs {
        producers: 1,
        partitions: 4,
        message_size: 1024,
        batch_bytes: 256 << 10,
        linger_ms: 5,
        acks,
        compression: Compression::None,
        seconds,
        count: None,
        rate: None,
        warmup_seconds: 1.0,
        buffer_bytes: 8 << 20,
        replication_factor: -1,
    }
}

/// The name a Kafka produce run gets: the suite's when its shape is the suite's.
fn kafka_produce_name(args: &KafkaProduceArgs) -> &'static str {
    let suite_like = args.partitions == 4
        && args.producers == 1
        && args.compression == Compression::None
        && args.rate.is_none();
    match (suite_like, args.acks) {
        (false, _) => "kafka-produce",
        (true, Acks::All) => "kafka-produce-all-4p",
        (true, Acks::Leader) => "kafka-produce-acks1-4p",
        (true, Acks::NoAnswer) => "kafka-produce-acks0-4p",
    }
}

/// The name a disk baseline run gets in reports (ratios refer to runs by name).
fn disk_name(sync: bool) -> &'static str {
    if sync {
        "disk-odirect-fdatasync"
    } else {
        "disk-odirect"
    }
}

fn disk_args(seconds: f64, sync: bool) -> DiskArgs {
    DiskArgs {
        block_bytes: 256 << 10,
        queue_depth: 8,
        sync,
        seconds,
    }
}

/// The suite, in order: each Spate run right after the baseline it is compared with.
fn suite(quick: bool) -> Vec<Step> {
    let seconds = if quick { 4.0 } else { 15.0 };
    let backlog_bytes = if quick { 100_000_000 } else { 1_000_000_000 };
    let mut steps = vec![
        Step::Disk("disk-odirect-fdatasync", disk_args(seconds, true)),
        Step::Storage("storage-fsync", storage_args(seconds, DurabilityArg::Fsync)),
        Step::Disk("disk-odirect", disk_args(seconds, false)),
        Step::Storage("storage-none", storage_args(seconds, DurabilityArg::None)),
        Step::Quic(
            "quic-raw",
            QuicArgs {
                message_size: 64 << 10,
                streams: 1,
                seconds,
            },
        ),
        Step::Produce(
            "produce-none-4p",
            produce_args(seconds, 4, DurabilityArg::None),
        ),
        Step::Produce(
            "produce-fsync-4p",
            produce_args(seconds, 4, DurabilityArg::Fsync),
        ),
        Step::E2e(
            "e2e-fsync-20k-per-s",
            // Latency at a fixed rate: no linger (a batch goes out as soon as nothing more
            // is queued), so what is measured is the system's wait, not the producer's.
            ProduceArgs {
                rate: Some(20_000.0),
                linger_ms: 0,
                ..produce_args(seconds, 4, DurabilityArg::Fsync)
            },
        ),
        Step::Consume(
            "consume-catch-up",
            ConsumeArgs {
                partitions: 4,
                message_size: 1024,
                backlog_bytes,
                fetch_bytes: 1 << 20,
            },
        ),
    ];
    if kafka::ENABLED {
        steps.extend([
            Step::Tcp("tcp-raw", tcp_args(seconds)),
            Step::KafkaProduce(
                "kafka-produce-acks1-4p",
                kafka_produce_args(seconds, Acks::Leader),
            ),
            Step::KafkaProduce(
                "kafka-produce-all-4p",
                kafka_produce_args(seconds, Acks::All),
            ),
            Step::KafkaConsume(
                "kafka-consume-catch-up",
                KafkaConsumeArgs {
                    partitions: 4,
                    message_size: 1024,
                    backlog_bytes,
                    fetch_bytes: 1 << 20,
                    compression: Compression::None,
                    replication_factor: -1,
                },
            ),
        ]);
    }
    if !quick {
        steps.extend([
            Step::Storage("storage-write", storage_args(10.0, DurabilityArg::Write)),
            Step::Produce(
                "produce-fsync-16p",
                produce_args(10.0, 16, DurabilityArg::Fsync),
            ),
            Step::Produce(
                "produce-fsync-1000p",
                produce_args(10.0, 1000, DurabilityArg::Fsync),
            ),
            Step::Produce(
                "produce-fsync-4conn",
                ProduceArgs {
                    producers: 4,
                    ..produce_args(10.0, 16, DurabilityArg::Fsync)
                },
            ),
            // What metrics cost: storage and produce runs switching their counting every
            // second, since one pair of whole runs differs by more than the cost from run to
            // run.
            Step::MetricsCost {
                pairs: 4,
                seconds: 10.0,
            },
            // The first pair again: how much the same run varies.
            Step::Disk("disk-odirect-fdatasync-2", disk_args(seconds, true)),
            Step::Storage(
                "storage-fsync-2",
                storage_args(seconds, DurabilityArg::Fsync),
            ),
        ]);
    }
    steps
}

/// How long each slice of the alternating runs lasts (`metrics_cost`).
const SLICE: Duration = Duration::from_secs(1);

/// What a produce run of `metrics_cost` gets before its counting is first switched: the
/// producer's setup and its warm-up second.
const PRODUCE_SETTLE: Duration = Duration::from_secs(2);

/// What counting metrics costs, measured by switching it on and off every `SLICE`
/// within runs (whole runs, alternating, differ from one another by more than the cost):
/// - storage: `2 × pairs` engine runs (`fsync`, as `storage-fsync`) of `seconds` each after
///   the warm-up slice, the shard's counting paused and resumed (`storage::alternating`);
/// - produce: `pairs` produce runs (as `produce-fsync-4p`) of `2 × seconds` after
///   `PRODUCE_SETTLE`, each through a node and a gateway started for it in this process,
///   their counting paused and resumed (`spate_node::metrics::pause`,
///   `spate_gateway::metrics::pause`).
///
/// Reported as `storage-fsync-metrics-on`/`-off` and `produce-fsync-4p-metrics-on`/`-off`,
/// the totals of each side's slices; the `-on` runs carry the ratio of the pairs of adjacent
/// slices in their figures (`pair_ratio_median`, `pair_ratio_min`, `pair_ratio_max`,
/// `pairs`).
fn metrics_cost(
    runtime: &tokio::runtime::Runtime,
    data_dir: &Path,
    pairs: u32,
    seconds: f64,
) -> Result<Vec<Run>, String> {
    // Each side's totals; with the `-on` side, the pairs of slices.
    let shown = |metrics: bool, run: &Run| {
        let figure = |name: &str| run.figures.get(name).copied().unwrap_or(f64::NAN);
        say(format!(
            "      metrics {}: {:.1} MB/s, {:.3} CPU s/GB",
            if metrics { "on " } else { "off" },
            run.mb_per_s,
            figure("cpu_seconds_per_gb")
        ));
        if metrics {
            say(format!(
                "      {:.0} pairs of {} s slices: on ÷ off median {:.3} (min {:.3}, max {:.3})",
                figure("pairs"),
                SLICE.as_secs_f64(),
                figure("pair_ratio_median"),
                figure("pair_ratio_min"),
                figure("pair_ratio_max"),
            ));
        }
    };
    // Storage: engine runs whose counting is switched every second, so that each pair of
    // slices meets the same disk state (whole runs differ by more than the cost).
    // Runs of `seconds` (and the warm-up slice), twice as many: one run writes up to 2 GB/s
    // that stays on disk until it ends.
    let storage_seconds = seconds + SLICE.as_secs_f64();
    let (storage_on, storage_off) = storage::alternating(
        data_dir,
        "storage-fsync-metrics",
        &storage_args(storage_seconds, DurabilityArg::Fsync),
        SLICE,
        2 * pairs,
    )?;
    shown(true, &storage_on);
    shown(false, &storage_off);
    // Produce: runs through a node and a gateway (in this process) whose counting is paused
    // and resumed every `SLICE` (`spate_node::metrics::pause`,
    // `spate_gateway::metrics::pause`), each from a fresh node.
    let dir = data_dir.join("metrics-cost");
    let args = produce_args(
        2.0 * seconds + PRODUCE_SETTLE.as_secs_f64(),
        4,
        DurabilityArg::Fsync,
    );
    let mut slices = Vec::new();
    let mut ratios = Vec::new();
    for run in 0..pairs.max(1) {
        let phase = run % 2 == 1;
        let run = runtime.block_on(async {
            let local = Local::start(&dir, None, true).await?;
            let meter = Meter::start(scenarios::TIMELINE_INTERVAL);
            let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
            let switching = async {
                // The producer's setup and warm-up, counting.
                tokio::time::sleep(PRODUCE_SETTLE).await;
                switch_counting(
                    &meter,
                    SLICE,
                    deadline,
                    phase,
                    |counting| {
                        spate_node::metrics::pause(!counting);
                        spate_gateway::metrics::pause(!counting);
                    },
                    tokio::time::sleep,
                )
                .await
            };
            let (run, switched) = tokio::join!(
                scenarios::produce_metered(
                    &local.target,
                    "produce-fsync-4p-metrics",
                    &args,
                    meter.clone()
                ),
                switching
            );
            local.stop().await;
            run.map(|run| (run, switched))
        });
        let _ = std::fs::remove_dir_all(&dir);
        cluster::settle_filesystem();
        let (run, switched) = run?;
        ratios.extend(pair_ratios(&switched));
        slices.extend(switched);
        if run.errors > 0 {
            return Err(format!("the produce run met {} errors", run.errors));
        }
    }
    let mut params = args.params();
    params.insert("slice_seconds".to_owned(), SLICE.as_secs_f64().to_string());
    let (produce_on, produce_off) = sides(
        "produce-fsync-4p-metrics",
        "produce",
        &params,
        &slices,
        &ratios,
    );
    shown(true, &produce_on);
    shown(false, &produce_off);
    Ok(vec![storage_on, storage_off, produce_on, produce_off])
}

/// The ratios the suite reports (those whose runs are present).
fn ratios(report: &mut Report) {
    let mb = |run: &Run| Some(run.mb_per_s);
    // Replication: each factor's run against the factor-1 run of the same durability.
    let replicated: Vec<(String, String)> = report
        .runs
        .iter()
        .filter(|run| run.scenario == "replicated-produce" && !run.name.ends_with("-rf1"))
        .filter_map(|run| {
            let (base, _) = run.name.rsplit_once("-rf")?;
            Some((run.name.clone(), format!("{base}-rf1")))
        })
        .collect();
    let p99 = |run: &Run| run.latency.first().map(|latency| latency.p("p99") as f64);
    for (top, bottom) in replicated {
        report.ratio(
            &format!("{top} ÷ {bottom}"),
            &top,
            &bottom,
            mb,
            "produce throughput with replicas vs without, same cluster, same run",
        );
        report.ratio(
            &format!("{top} ack p99 ÷ {bottom} ack p99"),
            &top,
            &bottom,
            p99,
            "acknowledgement p99 with replicas vs without (above 1: slower)",
        );
    }
    report.ratio(
        "storage fsync with metrics ÷ without",
        "storage-fsync-metrics-on",
        "storage-fsync-metrics-off",
        mb,
        "what counting metrics costs durable appends: the two sides of engine runs whose counting is switched on and off every second (goal: at least 0.98)",
    );
    report.ratio(
        "produce fsync 4p with metrics ÷ without",
        "produce-fsync-4p-metrics-on",
        "produce-fsync-4p-metrics-off",
        mb,
        "what counting metrics costs durable produce through gateway and node: the two sides of runs whose counting is paused and resumed every second (goal: at least 0.98)",
    );
    report.ratio(
        "storage fsync ÷ raw O_DIRECT+fdatasync",
        "storage-fsync",
        "disk-odirect-fdatasync",
        mb,
        "throughput of durable appends vs the disk's own write+sync rounds",
    );
    report.ratio(
        "storage none ÷ raw O_DIRECT",
        "storage-none",
        "disk-odirect",
        mb,
        "throughput without waiting for syncs vs plain O_DIRECT writes",
    );
    report.ratio(
        "produce none ÷ raw QUIC",
        "produce-none-4p",
        "quic-raw",
        mb,
        "end-to-end produce throughput vs a bare QUIC transfer",
    );
    report.ratio(
        "produce fsync ÷ raw QUIC",
        "produce-fsync-4p",
        "quic-raw",
        mb,
        "end-to-end durable produce throughput vs a bare QUIC transfer",
    );
    report.ratio(
        "produce fsync ÷ raw O_DIRECT+fdatasync",
        "produce-fsync-4p",
        "disk-odirect-fdatasync",
        mb,
        "end-to-end durable produce throughput vs the disk",
    );
    // A latency percentile of the first of `names` the run has.
    let p99 = |names: [&'static str; 2]| {
        move |run: &Run| {
            names
                .iter()
                .find_map(|name| run.latency(name))
                .map(|latency| latency.p("p99") as f64)
        }
    };
    report.ratio(
        "storage batch-ack p99 ÷ raw write+fdatasync round p99",
        "storage-fsync",
        "disk-odirect-fdatasync",
        p99(["batch ack", "round"]),
        "a durable batch's wait vs one raw round of the same size and depth (lower is better)",
    );
    report.ratio(
        "produce ack p99 at 20k/s ÷ raw fdatasync p99",
        "e2e-fsync-20k-per-s",
        "disk-odirect-fdatasync",
        p99(["ack", "fdatasync"]),
        "end-to-end durable ack latency at a fixed rate vs one raw sync (lower is better)",
    );
    report.ratio(
        "publish-to-consume p99 at 20k/s ÷ raw fdatasync p99",
        "e2e-fsync-20k-per-s",
        "disk-odirect-fdatasync",
        p99(["publish-to-consume", "fdatasync"]),
        "from a record's send time to a following consumer's read vs one raw sync (lower is better)",
    );
    report.ratio(
        "producer under attack ÷ unloaded",
        "abuse-attacked",
        "abuse-unloaded",
        mb,
        "a well-behaved producer's throughput while attackers hold partial frames vs alone",
    );
    report.ratio(
        "consume catch-up ÷ raw QUIC",
        "consume-catch-up",
        "quic-raw",
        mb,
        "catch-up read throughput vs a bare QUIC transfer",
    );
    // The suite's acks=1 run, or the one Kafka produce run a `kafka-produce --baseline` made.
    if let Some(numerator) = [
        "kafka-produce-acks1-4p",
        "kafka-produce-all-4p",
        "kafka-produce-acks0-4p",
        "kafka-produce",
    ]
    .into_iter()
    .find(|name| report.run(name).is_some())
    {
        report.ratio(
            "kafka produce ÷ raw TCP",
            numerator,
            "tcp-raw",
            mb,
            "Kafka produce (librdkafka, acks as the run's name says) vs a bare TCP transfer",
        );
    }
    report.ratio(
        "kafka consume catch-up ÷ raw TCP",
        "kafka-consume-catch-up",
        "tcp-raw",
        mb,
        "Kafka catch-up read (librdkafka, assign()) vs a bare TCP transfer",
    );
    // Kafka against QUIC only when both ran against the same Spate (not --bootstrap).
    let spate = |run: &Run| (run.kind == "spate").then_some(run.mb_per_s);
    report.ratio(
        "kafka produce acks=all ÷ produce fsync (QUIC)",
        "kafka-produce-all-4p",
        "produce-fsync-4p",
        spate,
        "durable produce through the Kafka listener vs through QUIC and the SDK, same node and shape",
    );
    report.ratio(
        "kafka consume catch-up ÷ consume catch-up (QUIC)",
        "kafka-consume-catch-up",
        "consume-catch-up",
        spate,
        "catch-up read through the Kafka listener vs through QUIC and the SDK, same backlog",
    );
}

impl Cli {
    fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            Path::new("./bench-results").join(now.to_string())
        })
    }

    fn steps(&self) -> Vec<Step> {
        match &self.command {
            Command::Produce { args, baseline } => {
                let mut steps = Vec::new();
                if *baseline {
                    steps.push(Step::Quic(
                        "quic-raw",
                        QuicArgs {
                            message_size: 64 << 10,
                            streams: 1,
                            seconds: args.seconds,
                        },
                    ));
                    if args.durability == DurabilityArg::Fsync {
                        steps.push(Step::Disk(
                            "disk-odirect-fdatasync",
                            disk_args(args.seconds, true),
                        ));
                    }
                }
                let name = if args.durability == DurabilityArg::Fsync {
                    "produce-fsync-4p"
                } else {
                    "produce-none-4p"
                };
                // Named as in the suite only when the parameters are the suite's.
                let suite_like = args.partitions == 4 && args.producers == 1;
                steps.push(Step::Produce(
                    if suite_like { name } else { "produce" },
                    args.clone(),
                ));
                steps
            }
            Command::Consume(args) => vec![Step::Consume("consume-catch-up", args.clone())],
            Command::KafkaProduce { args, baseline } => {
                let mut steps = Vec::new();
                if *baseline {
                    steps.push(Step::Tcp("tcp-raw", tcp_args(args.seconds)));
                }
                steps.push(Step::KafkaProduce(kafka_produce_name(args), args.clone()));
                steps
            }
            Command::KafkaConsume { args, baseline } => {
                let mut steps = Vec::new();
                if *baseline {
                    steps.push(Step::Tcp("tcp-raw", tcp_args(CONSUME_BASELINE_SECONDS)));
                }
                steps.push(Step::KafkaConsume("kafka-consume-catch-up", args.clone()));
                steps
            }
            Command::E2e(args) => vec![Step::E2e("e2e", args.clone())],
            Command::Storage { args, baseline } => {
                let mut steps = Vec::new();
                let sync = args.durability != DurabilityArg::None;
                if *baseline {
                    let disk = DiskArgs {
                        block_bytes: args.batch_bytes as usize,
                        queue_depth: args.in_flight * args.partitions,
                        sync,
                        seconds: args.seconds,
                    };
                    steps.push(Step::Disk(disk_name(sync), disk));
                }
                let name = match args.durability {
                    DurabilityArg::Fsync => "storage-fsync",
                    DurabilityArg::Write => "storage-write",
                    DurabilityArg::None => "storage-none",
                };
                steps.push(Step::Storage(name, args.clone()));
                steps
            }
            Command::Baseline(Baseline::Disk(args)) => {
                vec![Step::Disk(disk_name(args.sync), args.clone())]
            }
            Command::Baseline(Baseline::Quic(args)) => vec![Step::Quic("quic-raw", args.clone())],
            Command::Baseline(Baseline::Tcp(args)) => vec![Step::Tcp("tcp-raw", args.clone())],
            Command::Suite { quick } => suite(*quick),
            Command::MetricsCost { pairs, seconds } => vec![Step::MetricsCost {
                pairs: *pairs,
                seconds: *seconds,
            }],
            Command::Restart(args) => vec![Step::Restart("restart", args.clone())],
            Command::Node(_) => Vec::new(),
            Command::Abuse(args) => vec![Step::Abuse(args.clone())],
            Command::ReplicatedProduce(args) => vec![Step::ReplicatedProduce(args.clone())],
            Command::Failover(args) => vec![Step::Failover("failover", args.clone())],
            Command::Connections(args) => vec![Step::Connections("connections", args.clone())],
            Command::GatewayProcess(_) => Vec::new(),
        }
    }
}

fn execute(cli: &Cli) -> Result<Report, String> {
    std::fs::create_dir_all(&cli.data_dir)
        .map_err(|error| format!("cannot create {}: {error}", cli.data_dir.display()))?;
    let command: Vec<String> = std::env::args().collect();
    let mut report = Report::new(command.join(" "), &cli.data_dir);
    let steps = cli.steps();
    let kafka_steps = steps
        .iter()
        .any(|step| matches!(step, Step::KafkaProduce(..) | Step::KafkaConsume(..)));
    if kafka_steps && !kafka::ENABLED {
        return Err(kafka::FEATURE_OFF.to_owned());
    }
    if matches!(cli.command, Command::Suite { .. }) && !kafka::ENABLED {
        let note = format!("the Kafka runs were skipped: {}", kafka::FEATURE_OFF);
        say(&note);
        report.notes.push(note);
    }
    let needs_cluster = steps.iter().any(|step| match step {
        Step::Produce(..) | Step::E2e(..) | Step::Consume(..) => true,
        Step::KafkaProduce(..) | Step::KafkaConsume(..) => cli.bootstrap.is_none(),
        _ => false,
    });
    let runtime = runtime()?;
    let under = if needs_cluster {
        Some(runtime.block_on(cli.under())?)
    } else {
        None
    };
    let total = steps.len();
    for (index, step) in steps.into_iter().enumerate() {
        say(format!("[{}/{total}] {} ...", index + 1, step.name()));
        let target = under.as_ref().map(Under::target);
        let no_target = || "no Spate to benchmark".to_owned();
        let broker = || cli.broker(under.as_ref());
        if let (Some(Under::Local(local)), Step::Disk(..) | Step::Storage(..)) = (&under, &step) {
            // The disk and storage runs write gigabytes into the data directory that the
            // Spate under test shares: the topics of the runs before them go first (a suite's
            // closing disk run would otherwise find the disk full of them).
            runtime.block_on(local.target.delete_bench_topics());
        }
        let runs = match step {
            // tokio-uring and glommio run their own runtimes on this thread / their own.
            Step::Disk(name, args) => vec![disk::run(&cli.data_dir, name, &args)?],
            Step::Storage(name, args) => vec![storage::run(&cli.data_dir, name, &args)?],
            Step::Quic(name, args) => {
                vec![runtime.block_on(quic::run(&cli.data_dir, name, &args))?]
            }
            Step::Produce(name, args) => vec![runtime.block_on(scenarios::produce(
                target.ok_or_else(no_target)?,
                name,
                &args,
            ))?],
            Step::MetricsCost { pairs, seconds } => {
                metrics_cost(&runtime, &cli.data_dir, pairs, seconds)?
            }
            Step::E2e(name, args) => vec![runtime.block_on(scenarios::e2e(
                target.ok_or_else(no_target)?,
                name,
                &args,
            ))?],
            Step::Consume(name, args) => vec![runtime.block_on(scenarios::consume(
                target.ok_or_else(no_target)?,
                name,
                &args,
            ))?],
            Step::Tcp(name, args) => vec![runtime.block_on(tcp::run(name, &args))?],
            // librdkafka's clients block: they run on this thread and threads of their own,
            // beside the runtime that serves the Spate under test.
            Step::KafkaProduce(name, args) => {
                vec![kafka::produce(&runtime, &broker()?, name, &args)?]
            }
            Step::KafkaConsume(name, args) => {
                vec![kafka::consume(&runtime, &broker()?, name, &args)?]
            }
            Step::Abuse(args) => abuse::run(&runtime, &cli.data_dir, &args)?,
            Step::Restart(name, args) => {
                vec![runtime.block_on(restart::run(&cli.data_dir, name, &args))?]
            }
            Step::ReplicatedProduce(args) => {
                runtime.block_on(replication::replicated_produce(&cli.data_dir, &args))?
            }
            Step::Failover(name, args) => {
                vec![runtime.block_on(replication::failover(&cli.data_dir, name, &args))?]
            }
            Step::Connections(name, args) => {
                vec![runtime.block_on(replication::connections(&cli.data_dir, name, &args))?]
            }
        };
        for mut run in runs {
            count_stalls(&mut run);
            say(format!(
                "      {}: {:.1} MB/s, {:.0} ops/s{}",
                run.name,
                run.mb_per_s,
                run.operations_per_s,
                run.latency
                    .first()
                    .map(|l| format!(", {} p99 {} µs", l.what, l.p("p99")))
                    .unwrap_or_default()
            ));
            for (figure, value) in &run.figures {
                say(format!("      {figure}: {value:.2}"));
            }
            report.runs.push(run);
        }
    }
    if let Some(under) = under {
        runtime.block_on(under.stop(cli.keep));
    }
    ratios(&mut report);
    Ok(report)
}

/// Adds to a Spate run's figures how many of its throughput intervals that start after the
/// first second moved nothing (the last, possibly cut short by the run's end, not counted):
/// stalls that a run's average hides. (A timeline entry is an interval's end; the interval
/// ending just after 1 s still belongs to the start-up, when clients connect and learn
/// metadata.)
fn count_stalls(run: &mut Run) {
    // Many small producers (`connections`) move too few bytes per interval for MB/s to show.
    if run.kind != "spate" || run.timeline.is_empty() || run.scenario == "connections" {
        return;
    }
    let intervals = &run.timeline[..run.timeline.len() - 1];
    let starts = std::iter::once(0.0).chain(intervals.iter().map(|(end, _)| *end));
    let stalls = starts
        .zip(intervals)
        .filter(|(start, (_, mb_per_s))| *start >= 1.0 && *mb_per_s == 0.0)
        .count();
    run.figures
        .insert("zero_throughput_intervals_after_1s".into(), stalls as f64);
}

/// `gateway-process`: the gateway exactly as the `spate-gateway` binary runs it.
fn gateway_process(flags: spate_gateway::Flags) -> ExitCode {
    let config = match spate_gateway::GatewayConfig::resolve(flags) {
        Ok(config) => config,
        Err(error) => {
            say(format!("spate-gateway: error: {error}"));
            return ExitCode::from(2);
        }
    };
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(spate_gateway::run(config)),
        Err(error) => {
            say(format!("cannot start the async runtime: {error}"));
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The node and the gateway under test log their warnings (RUST_LOG for more).
    if let Err(error) = spate_ops::logging::check_level(&cli.log_level) {
        say(format!("spate-bench: error: {error}"));
        return ExitCode::from(2);
    }
    spate_ops::logging::init(cli.log_format, &cli.log_level);
    if let Command::Node(flags) = cli.command {
        return match restart::serve(*flags) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                say(format!("spate-bench node: error: {message}"));
                ExitCode::FAILURE
            }
        };
    }
    if let Command::GatewayProcess(flags) = &cli.command {
        return gateway_process((**flags).clone());
    }
    let mut report = match execute(&cli) {
        Ok(report) => report,
        Err(message) => {
            say(format!("spate-bench: error: {message}"));
            return ExitCode::FAILURE;
        }
    };
    let out = cli.out_dir();
    let written = report.write(&out);
    #[allow(clippy::print_stdout)]
    {
        println!("{}", report.table());
        match written {
            Ok(path) => println!(
                "report: {} (charts: throughput.svg, latency.svg)",
                path.display()
            ),
            Err(error) => {
                say(format!(
                    "spate-bench: error: cannot write the report to {}: {error}",
                    out.display()
                ));
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_are_the_empty_intervals_that_start_after_the_first_second() {
        let mut run = Run::new(
            "produce",
            "spate",
            "produce",
            std::collections::BTreeMap::new(),
        );
        // Interval ends: start-up until just past 1 s, one empty interval at 1.25-1.5 s,
        // and an empty last one (cut by the run's end).
        run.timeline = vec![
            (0.25, 0.0),
            (0.5, 0.0),
            (0.75, 0.0),
            (1.0006, 0.0),
            (1.25, 5.0),
            (1.5, 0.0),
            (1.75, 5.0),
            (2.0, 0.0),
        ];
        count_stalls(&mut run);
        assert_eq!(run.figures["zero_throughput_intervals_after_1s"], 1.0);
    }

    #[test]
    fn the_suite_has_the_kafka_runs_right_after_their_baseline_only_with_the_feature() {
        for quick in [true, false] {
            let names: Vec<&str> = suite(quick).iter().map(Step::name).collect();
            let kafka_runs: Vec<&str> = names
                .iter()
                .copied()
                .skip_while(|name| *name != "tcp-raw")
                .take(4)
                .collect();
            if kafka::ENABLED {
                assert_eq!(
                    kafka_runs,
                    [
                        "tcp-raw",
                        "kafka-produce-acks1-4p",
                        "kafka-produce-all-4p",
                        "kafka-consume-catch-up"
                    ]
                );
            } else {
                assert!(kafka_runs.is_empty(), "{names:?}");
                assert!(!names.iter().any(|name| name.starts_with("kafka")));
            }
        }
    }

    #[test]
    fn kafka_produce_runs_are_named_as_in_the_suite_only_in_the_suite_shape() {
        let suite_shape = kafka_produce_args(1.0, Acks::Leader);
        assert_eq!(kafka_produce_name(&suite_shape), "kafka-produce-acks1-4p");
        let compressed = KafkaProduceArgs {
            compression: Compression::Zstd,
            ..suite_shape
        };
        assert_eq!(kafka_produce_name(&compressed), "kafka-produce");
        let wider = KafkaProduceArgs {
            partitions: 16,
            ..suite_shape
        };
        assert_eq!(kafka_produce_name(&wider), "kafka-produce");
    }
}
