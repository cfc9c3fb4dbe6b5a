//! The scenarios that go through the whole system (SDK → QUIC → gateway → TCP → node):
//! `produce` (closed loop, or open loop at `--rate`), `consume` (catch-up reads of a
//! backlog) and `e2e` (publish-to-consume latency while producing).
//!
//! Latency is measured per record. Closed loop: from the `send` call to the moment its
//! acknowledgement arrives (each is observed as it completes, whatever the order of the
//! others; before 2026-12-06 they were awaited in send order, so a record of a partition
//! whose round ended early was observed only with the slower ones before it). Open loop: from the
//! record's *intended* send time when the generator is behind schedule, so a stall that
//! delays sending is counted in full (coordinated omission); when it is on time, from the
//! moment its timer fires (tokio's timers fire up to 1 ms late: the generator's lateness, not
//! the system's). End to end: from the time stamped into the record's value just
//! before `send` to the moment the consumer yields it.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use spate_client::{
    Consumer, ConsumerConfig, Delivery, Durability, Producer, ProducerConfig, ProducerRecord,
    StartPosition,
};
use tokio::sync::mpsc;

use crate::cluster::Target;
use crate::cpu::CpuTime;
use crate::report::{histogram, micros, params, Latency, Meter, Run};

/// Acknowledgements awaited per producer before it stops sending (bounded; the producer's
/// own buffer bounds bytes).
const DELIVERIES_PENDING_MAX: usize = 1 << 16;

/// Sampling interval of the throughput timeline.
pub const TIMELINE_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    Fsync,
    Write,
    None,
}

impl DurabilityArg {
    pub fn level(self) -> Durability {
        match self {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::Write => Durability::Write,
            DurabilityArg::None => Durability::None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DurabilityArg::Fsync => "fsync",
            DurabilityArg::Write => "write",
            DurabilityArg::None => "none",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// Producers, each with its own QUIC connection.
    #[arg(long, default_value = "1")]
    pub producers: u32,
    #[arg(long, default_value = "4")]
    pub partitions: u32,
    /// Value bytes per record.
    #[arg(long, default_value = "1024")]
    pub message_size: usize,
    /// A partition's batch is sent at this many bytes.
    #[arg(long, default_value = "262144")]
    pub batch_bytes: u32,
    #[arg(long, default_value = "5")]
    pub linger_ms: u64,
    #[arg(long, value_enum, default_value = "fsync")]
    pub durability: DurabilityArg,
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
    /// Latency is not recorded for records sent in this first part of the run (connections,
    /// the topic's first segments); the throughput timeline still shows it.
    #[arg(long, default_value = "1")]
    pub warmup_seconds: f64,
    /// Bytes each producer holds unacknowledged before `send` waits. In a closed loop the
    /// acknowledgement latency is about this divided by the throughput (queueing).
    #[arg(long, default_value = "8388608")]
    pub buffer_bytes: u32,
}

impl ProduceArgs {
    pub fn params(&self) -> std::collections::BTreeMap<String, String> {
        params([
            ("producers", self.producers.to_string()),
            ("partitions", self.partitions.to_string()),
            ("message_size", self.message_size.to_string()),
            ("batch_bytes", self.batch_bytes.to_string()),
            ("linger_ms", self.linger_ms.to_string()),
            ("durability", self.durability.name().to_owned()),
            ("buffer_bytes", self.buffer_bytes.to_string()),
            ("warmup_seconds", self.warmup_seconds.to_string()),
            ("seconds", self.seconds.to_string()),
            (
                "rate",
                self.rate
                    .map_or_else(|| "closed loop".to_owned(), |r| r.to_string()),
            ),
        ])
    }

    fn config(&self) -> ProducerConfig {
        ProducerConfig {
            durability: self.durability.level(),
            batch_bytes: self.batch_bytes,
            linger: Duration::from_millis(self.linger_ms),
            buffer_bytes: self.buffer_bytes,
            ..ProducerConfig::default()
        }
    }
}

/// What one producer task did.
struct Produced {
    latency: Histogram<u64>,
    sent: u64,
    errors: u64,
    /// From the run's start until its QUIC connection and producer were ready.
    setup: Duration,
    /// From the run's start until its first acknowledgement, if any came.
    first_ack: Option<Duration>,
}

/// A record value of `size` bytes whose first 8 bytes (if it has them) carry `stamp`.
fn value(template: &Bytes, stamp: Option<u64>) -> Bytes {
    match stamp {
        Some(stamp) if template.len() >= 8 => {
            let mut value = BytesMut::from(&template[..]);
            value[..8].copy_from_slice(&stamp.to_le_bytes());
            value.freeze()
        }
        _ => template.clone(),
    }
}

/// One producer: sends until the deadline (or its share of `count`), at `rate` if given.
async fn produce_one(
    target: Target,
    topic: String,
    args: ProduceArgs,
    share: (Option<u64>, Option<f64>),
    meter: Meter,
    (epoch, stamped): (Instant, Stamped),
) -> Result<Produced, String> {
    let client = target.client().await?;
    let producer = Producer::new(&client, &topic, args.config())
        .await
        .map_err(|error| error.to_string())?;
    let setup = epoch.elapsed();
    let (pending, mut acknowledged) = mpsc::channel::<(Instant, Delivery)>(DELIVERIES_PENDING_MAX);
    let size = args.message_size as u64;
    let measured_from = epoch + Duration::from_secs_f64(args.warmup_seconds);
    let collector = tokio::spawn(async move {
        let mut latency = histogram();
        let mut errors = 0;
        let mut first_ack = None;
        // Each acknowledgement is observed when it completes, at most
        // `DELIVERIES_PENDING_MAX` at once (the channel holds the rest).
        let mut waiting = FuturesUnordered::new();
        let mut sending = true;
        loop {
            tokio::select! {
                next = acknowledged.recv(), if sending && waiting.len() < DELIVERIES_PENDING_MAX => {
                    match next {
                        Some((start, delivery)) => waiting.push(async move {
                            let outcome: Result<_, _> = delivery.await;
                            (start, outcome.is_ok())
                        }),
                        None => sending = false,
                    }
                }
                Some((start, acknowledged)) = waiting.next(), if !waiting.is_empty() => {
                    if acknowledged {
                        first_ack.get_or_insert_with(|| epoch.elapsed());
                        if start >= measured_from {
                            let _ = latency.record(micros(start.elapsed()));
                        }
                        meter.add(1, size);
                    } else {
                        errors += 1;
                    }
                }
                else => break,
            }
        }
        (latency, errors, first_ack)
    });
    let template = Bytes::from(vec![b'x'; args.message_size]);
    let (count, rate) = share;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let mut sent = 0u64;
    // When the generator's timer last fired: records due before it were held by the timer's
    // resolution, not by the system.
    let mut woke = started;
    loop {
        if count.map_or(Instant::now() >= deadline, |count| sent >= count) {
            break;
        }
        let start = match rate {
            Some(rate) => {
                let intended = started + Duration::from_secs_f64(sent as f64 / rate);
                if intended >= deadline && count.is_none() {
                    break;
                }
                let now = Instant::now();
                if now < intended {
                    // On time: the record's latency starts when the timer fires. tokio's
                    // timers fire up to 1 ms late (their resolution); that lateness is the
                    // load generator's, not the system's. (A generator paced by a thread of
                    // its own, sleeping precisely, made the runs pause for 100-400 ms at
                    // random, so it is not used.)
                    tokio::time::sleep_until(intended.into()).await;
                    woke = Instant::now();
                    woke
                } else {
                    // Behind schedule: counted from the intended time, so a stall (the
                    // previous sends waited for the producer's buffer) is counted in full,
                    // but not before the timer last fired: the records due while it slept
                    // (up to its 1 ms resolution, about 20 at 20,000/s) go out in a burst
                    // when it fires, late by the generator, not by the system.
                    intended.max(woke)
                }
            }
            None => Instant::now(),
        };
        let value = match stamped {
            // Copied to carry its send time (e2e).
            Stamped::Yes => {
                let stamp = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                value(&template, Some(stamp))
            }
            // Shared: the benchmark's own work per record stays small.
            Stamped::No => template.clone(),
        };
        let record = ProducerRecord {
            value: Some(value),
            ..ProducerRecord::default()
        };
        let delivery = producer
            .send(record)
            .await
            .map_err(|error| error.to_string())?;
        if pending.send((start, delivery)).await.is_err() {
            break;
        }
        sent += 1;
    }
    producer.close().await.map_err(|error| error.to_string())?;
    drop(pending);
    let (latency, errors, first_ack) = collector
        .await
        .map_err(|error| format!("collector failed: {error}"))?;
    Ok(Produced {
        latency,
        sent,
        errors,
        setup,
        first_ack,
    })
}

/// When the producers of a run were ready and first acknowledged, the slowest of them.
#[derive(Debug, Clone, Copy, Default)]
struct Startup {
    setup: Duration,
    first_ack: Duration,
}

impl Startup {
    /// Adds the figures that tell a slow start's place: connecting and describing the topic
    /// (`setup`), or the first acknowledgement after it.
    fn record(self, run: &mut Run) {
        run.figures
            .insert("setup_seconds_max".into(), self.setup.as_secs_f64());
        run.figures
            .insert("first_ack_seconds_max".into(), self.first_ack.as_secs_f64());
    }
}

/// Whether each record's value carries its send time (its first 8 bytes, nanoseconds since
/// the run's epoch), for a consumer to measure publish-to-consume; otherwise every record
/// shares one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamped {
    Yes,
    No,
}

/// Runs the producers and merges what they measured into `run`.
async fn run_producers(
    target: &Target,
    topic: &str,
    args: &ProduceArgs,
    meter: &Meter,
    (epoch, stamped): (Instant, Stamped),
) -> Result<(Histogram<u64>, u64, u64, Startup), String> {
    let producers = u64::from(args.producers.max(1));
    let mut tasks = Vec::new();
    for index in 0..producers {
        let count = args
            .count
            .map(|count| count / producers + u64::from(index < count % producers));
        let rate = args.rate.map(|rate| rate / producers as f64);
        tasks.push(tokio::spawn(produce_one(
            target.clone(),
            topic.to_owned(),
            args.clone(),
            (count, rate),
            meter.clone(),
            (epoch, stamped),
        )));
    }
    let mut latency = histogram();
    let mut sent = 0;
    let mut errors = 0;
    let mut startup = Startup::default();
    for task in tasks {
        let produced = task
            .await
            .map_err(|error| format!("producer task failed: {error}"))??;
        latency
            .add(&produced.latency)
            .map_err(|error| error.to_string())?;
        sent += produced.sent;
        errors += produced.errors;
        startup.setup = startup.setup.max(produced.setup);
        if let Some(first_ack) = produced.first_ack {
            startup.first_ack = startup.first_ack.max(first_ack);
        }
    }
    Ok((latency, sent, errors, startup))
}

/// `produce`: throughput and acknowledgement latency.
pub async fn produce(target: &Target, name: &str, args: &ProduceArgs) -> Result<Run, String> {
    produce_metered(target, name, args, Meter::start(TIMELINE_INTERVAL)).await
}

/// [`produce`], counting the acknowledged records on `meter` (which someone else may read
/// meanwhile: `metrics_cost` reads it at each switch of counting).
pub async fn produce_metered(
    target: &Target,
    name: &str,
    args: &ProduceArgs,
    meter: Meter,
) -> Result<Run, String> {
    let topic = "bench-produce";
    target.fresh_topic(topic, args.partitions).await?;
    let mut run = Run::new(name, "spate", "produce", args.params());
    let cpu = CpuTime::now();
    let started = Instant::now();
    let (latency, _, errors, startup) =
        run_producers(target, topic, args, &meter, (started, Stamped::No)).await?;
    let elapsed = started.elapsed();
    let (operations, bytes, timeline) = meter.stop();
    run.finish(elapsed, operations, bytes);
    CpuTime::since(cpu).record(&mut run);
    startup.record(&mut run);
    run.errors = errors;
    run.timeline = timeline;
    let what = if args.rate.is_some() {
        "ack (from intended send time)"
    } else {
        "ack"
    };
    run.latency.push(Latency::from_histogram(what, &latency));
    Ok(run)
}

#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    #[arg(long, default_value = "4")]
    pub partitions: u32,
    #[arg(long, default_value = "1024")]
    pub message_size: usize,
    /// Bytes of record values produced before the timed read.
    #[arg(long, default_value = "256000000")]
    pub backlog_bytes: u64,
    /// Soft limit of one fetch answer.
    #[arg(long, default_value = "1048576")]
    pub fetch_bytes: u32,
}

/// `consume`: catch-up read of a backlog from the earliest offset to the high watermark.
pub async fn consume(target: &Target, name: &str, args: &ConsumeArgs) -> Result<Run, String> {
    let topic = "bench-consume";
    target.fresh_topic(topic, args.partitions).await?;
    let records = args.backlog_bytes / args.message_size.max(1) as u64;
    let backlog = ProduceArgs {
        producers: 1,
        partitions: args.partitions,
        message_size: args.message_size,
        batch_bytes: 1 << 20,
        linger_ms: 5,
        // Durable before the timed read: the consumer reads up to the high watermark.
        durability: DurabilityArg::Fsync,
        seconds: 3600.0,
        count: Some(records),
        rate: None,
        buffer_bytes: 64 << 20,
        warmup_seconds: 0.0,
    };
    let quiet = Meter::start(Duration::from_secs(1));
    let (_, _, errors, _) = run_producers(
        target,
        topic,
        &backlog,
        &quiet,
        (Instant::now(), Stamped::No),
    )
    .await?;
    quiet.stop();
    if errors > 0 {
        return Err(format!("{errors} backlog records were not acknowledged"));
    }
    let mut run = Run::new(
        name,
        "spate",
        "consume",
        params([
            ("partitions", args.partitions.to_string()),
            ("message_size", args.message_size.to_string()),
            ("backlog_bytes", args.backlog_bytes.to_string()),
            ("fetch_bytes", args.fetch_bytes.to_string()),
        ]),
    );
    let client = target.client().await?;
    let config = ConsumerConfig {
        start: StartPosition::Earliest,
        max_bytes: args.fetch_bytes,
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let meter = Meter::start(TIMELINE_INTERVAL);
    let cpu = CpuTime::now();
    let started = Instant::now();
    let mut consumer = Consumer::new(&client, topic, None, config)
        .await
        .map_err(|error| error.to_string())?;
    while let Some(record) = consumer.next().await.map_err(|error| error.to_string())? {
        meter.add(1, record.value.map_or(0, |value| value.len() as u64));
    }
    let elapsed = started.elapsed();
    let (operations, bytes, timeline) = meter.stop();
    if operations != records {
        return Err(format!("read {operations} records, produced {records}"));
    }
    run.finish(elapsed, operations, bytes);
    CpuTime::since(cpu).record(&mut run);
    run.timeline = timeline;
    Ok(run)
}

/// `e2e`: producers (closed loop, or open loop at `--rate`) and a consumer following all
/// partitions; publish-to-consume latency of every record.
pub async fn e2e(target: &Target, name: &str, args: &ProduceArgs) -> Result<Run, String> {
    if args.message_size < 8 {
        return Err("e2e needs --message-size of at least 8 (the send time is stamped in)".into());
    }
    let topic = "bench-e2e";
    target.fresh_topic(topic, args.partitions).await?;
    let mut parameters = args.params();
    parameters.insert("consumers".into(), "1".into());
    let mut run = Run::new(name, "spate", "e2e", parameters);
    let epoch = Instant::now();
    let client = target.client().await?;
    let config = ConsumerConfig {
        start: StartPosition::Offset(0),
        max_wait: Duration::from_millis(500),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(&client, topic, None, config)
        .await
        .map_err(|error| error.to_string())?;
    let (total, mut total_known) = tokio::sync::watch::channel(None::<u64>);
    let meter = Meter::start(TIMELINE_INTERVAL);
    let consumer_meter = meter.clone();
    let warmup_nanos =
        u64::try_from(Duration::from_secs_f64(args.warmup_seconds).as_nanos()).unwrap_or(u64::MAX);
    let consuming = tokio::spawn(async move {
        let mut latency = histogram();
        let mut received = 0u64;
        loop {
            if total_known.borrow().is_some_and(|total| received >= total) {
                break;
            }
            let next = tokio::select! {
                next = consumer.next() => next,
                changed = total_known.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let Some(record) = next.map_err(|error| error.to_string())? else {
                break;
            };
            let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let value = record.value.unwrap_or_default();
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&value[..8]);
            let sent = u64::from_le_bytes(stamp);
            if sent >= warmup_nanos {
                let _ = latency.record((now.saturating_sub(sent) / 1000).max(1));
            }
            consumer_meter.add(1, value.len() as u64);
            received += 1;
        }
        Ok::<_, String>((latency, received))
    });
    let quiet = Meter::start(Duration::from_secs(1));
    let cpu = CpuTime::now();
    let started = Instant::now();
    let (ack_latency, _, errors, _) =
        run_producers(target, topic, args, &quiet, (epoch, Stamped::Yes)).await?;
    let (acked, produced_bytes, _) = quiet.stop();
    let _ = total.send(Some(acked));
    let consumed = tokio::time::timeout(Duration::from_secs(60), consuming)
        .await
        .map_err(|_| "the consumer did not catch up within 60 s".to_owned())?
        .map_err(|error| format!("consumer task failed: {error}"))??;
    let elapsed = started.elapsed();
    let (operations, bytes, timeline) = meter.stop();
    let (latency, received) = consumed;
    if received < acked {
        return Err(format!(
            "consumed {received} records of {acked} acknowledged"
        ));
    }
    run.finish(elapsed, operations, bytes);
    CpuTime::since(cpu).record(&mut run);
    run.errors = errors;
    run.timeline = timeline;
    run.latency
        .push(Latency::from_histogram("publish-to-consume", &latency));
    run.latency
        .push(Latency::from_histogram("ack", &ack_latency));
    run.params
        .insert("produced_bytes".into(), produced_bytes.to_string());
    Ok(run)
}
