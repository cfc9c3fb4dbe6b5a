//! The Kafka scenarios on librdkafka (the `rdkafka` crate, linked to the system's library).
//! Producers and the consumer are librdkafka's blocking clients, each on a thread of its own,
//! so they never hold up the async runtime that a Spate under test runs on.
//!
//! Bounds: a producer holds at most `--buffer-bytes` unacknowledged (librdkafka's
//! `queue.buffering.max.kbytes`) and gives every record an outcome within
//! [`DELIVERY_TIMEOUT`]; the consumer prefetches at most [`CONSUMER_QUEUE_BYTES_MAX`]; every
//! wait on the broker has a named timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use tokio::runtime::Runtime;

use super::{Acks, Broker, Compression, KafkaConsumeArgs, KafkaProduceArgs};
use crate::cluster::settle_filesystem;
use crate::cpu::CpuTime;
use crate::report::{histogram, params, Latency, Meter, Run};
use crate::say;
use crate::scenarios::TIMELINE_INTERVAL;

/// librdkafka's `client.id` of every client the scenarios create.
const CLIENT_ID: &str = "spate-bench";

/// How long deleting the old topic, creating the new one and every partition getting a
/// leader may take together (Kafka deletes topics asynchronously).
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two checks of a topic that is not ready yet (nothing to wait on: the state
/// is the broker's).
const TOPIC_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// Bound of one admin, metadata or offsets request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// librdkafka's `message.timeout.ms`: a record not acknowledged within it is reported failed
/// (retries included), so every record has an outcome.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the end of a run waits for outstanding acknowledgements: past
/// [`DELIVERY_TIMEOUT`] every record has one.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// A producer whose queue is full waits at most this long for a delivery report before it
/// tries again (it tries again as soon as one is served).
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(100);

/// Records sent between two polls that serve delivery reports without waiting.
const SENDS_PER_POLL: u64 = 64;

/// librdkafka's own maximum of `queue.buffering.max.messages` (1.9 and 2.0), which is set to
/// `--buffer-bytes` ÷ `--message-size` so that the bytes bind, not the count.
const QUEUE_MESSAGES_MAX: u64 = 10_000_000;

/// The consumer's prefetch (`queued.max.messages.kbytes`): bytes fetched and not yet
/// consumed, at most; librdkafka's default, stated.
const CONSUMER_QUEUE_BYTES_MAX: u32 = 64 << 20;

/// One fetch answer at most (`fetch.max.bytes`): librdkafka's default, stated. It is below
/// [`CONSUMER_QUEUE_BYTES_MAX`], so librdkafka does not lower it.
const FETCH_BYTES_MAX: u32 = 50 << 20;
const _: () = assert!(FETCH_BYTES_MAX <= CONSUMER_QUEUE_BYTES_MAX);

/// A catch-up read that receives nothing for this long fails.
const CONSUME_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One consumer poll waits at most this long (then the stall timeout is checked).
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Batches of the backlog: librdkafka's default `batch.size` and `message.max.bytes` (Spate
/// takes Kafka batches up to 1048565 bytes).
const BACKLOG_BATCH_BYTES: u32 = 1_000_000;

/// Unacknowledged bytes of the backlog's producer (as the `consume` scenario's).
const BACKLOG_BUFFER_BYTES: u32 = 64 << 20;

/// Linger of the backlog's producer (as the `consume` scenario's).
const BACKLOG_LINGER_MS: u64 = 5;

/// Bytes of text the producers cut their record values from: every value of a batch differs,
/// so a codec compresses them as it would text, not as one value repeated.
const VALUE_POOL_BYTES: usize = 8 << 20;

/// Words of that text (2 to 9 random letters each).
const VOCABULARY_WORDS: u64 = 512;

/// What librdkafka logs when it sends a batch uncompressed despite `compression.type`
/// (`rdkafka_msgset_writer.c`, librdkafka 1.x and 2.x).
const UNCOMPRESSED_SAID: &str = "not compressing batch";

/// Client errors printed per client; the rest are counted only.
const ERRORS_SHOWN_MAX: u64 = 5;

/// librdkafka keeps `assign()`ed offsets in a group handle, so a consumer needs a group id
/// even without joining a group; nothing is committed under it.
const CONSUMER_GROUP: &str = "spate-bench";

impl Broker {
    /// The run's `kind` in the report.
    fn kind(&self) -> &'static str {
        if self.local {
            "spate"
        } else {
            "broker"
        }
    }

    /// What the report's parameters say about the broker.
    fn description(&self) -> String {
        if self.local {
            format!("spate started by spate-bench ({})", self.bootstrap)
        } else {
            format!("--bootstrap {}", self.bootstrap)
        }
    }
}

impl Acks {
    /// The value of librdkafka's `acks` setting.
    fn setting(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::NoAnswer => "0",
        }
    }
}

impl Compression {
    fn setting(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// The librdkafka the benchmark runs with (it is linked dynamically: the system's).
fn client_version() -> String {
    format!("librdkafka {}", rdkafka::util::get_rdkafka_version().1)
}

fn nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// Text-like bytes, at least [`VALUE_POOL_BYTES`] and twice `value_size`: words of a fixed
/// vocabulary in random order, separated by spaces, from a fixed seed (every run sends the
/// same values).
fn value_pool(value_size: usize) -> Vec<u8> {
    const LETTERS: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |below: u64| {
        // xorshift64: enough for text nobody reads.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % below).unwrap_or(0)
    };
    let vocabulary: Vec<Vec<u8>> = (0..VOCABULARY_WORDS)
        .map(|_| {
            let letters = 2 + next(8);
            (0..letters).map(|_| LETTERS[next(26)]).collect()
        })
        .collect();
    let bytes = VALUE_POOL_BYTES.max(2 * value_size);
    let mut pool = Vec::with_capacity(bytes + 10);
    while pool.len() < bytes {
        pool.extend_from_slice(&vocabulary[next(VOCABULARY_WORDS)]);
        pool.push(b' ');
    }
    pool.truncate(bytes);
    pool
}

fn client_config(broker: &Broker) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.bootstrap)
        .set("client.id", CLIENT_ID);
    config
}

/// What a producer sends and how.
#[derive(Debug, Clone)]
struct Settings<'a> {
    topic: &'a str,
    acks: Acks,
    compression: Compression,
    batch_bytes: u32,
    linger_ms: u64,
    buffer_bytes: u32,
    message_size: usize,
}

impl Settings<'_> {
    fn config(&self, broker: &Broker) -> ClientConfig {
        let queue_kib = u64::from(self.buffer_bytes).div_ceil(1024).max(1);
        let queue_messages = (u64::from(self.buffer_bytes) / self.message_size.max(1) as u64)
            .clamp(1, QUEUE_MESSAGES_MAX);
        let mut config = client_config(broker);
        if self.compression != Compression::None {
            // librdkafka says only in its debug log (`msg`: a few lines per batch) when it
            // sends a batch uncompressed; `Deliveries::log` watches for it.
            config
                .set("debug", "msg")
                .set_log_level(RDKafkaLogLevel::Debug);
        }
        config
            .set("acks", self.acks.setting())
            .set("compression.type", self.compression.setting())
            .set("batch.size", self.batch_bytes.to_string())
            .set("linger.ms", self.linger_ms.to_string())
            .set("queue.buffering.max.kbytes", queue_kib.to_string())
            .set("queue.buffering.max.messages", queue_messages.to_string())
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        config
    }
}

/// Where a producer stops.
#[derive(Debug, Clone, Copy)]
enum Stop {
    At(Instant),
    After(u64),
}

/// A producer's delivery reports, served on its own thread by `poll`: acknowledged records
/// are counted into the meter as they arrive and their latency recorded.
struct Deliveries {
    epoch: Instant,
    /// Records stamped (since `epoch`) before this are not timed (warm-up).
    measured_from_nanos: u64,
    meter: Meter,
    latency: Mutex<Histogram<u64>>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// What librdkafka said when it decided to send batches uncompressed.
    uncompressed: Mutex<Option<String>>,
    /// librdkafka warnings and errors printed so far.
    shown: AtomicU64,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // librdkafka falls back to uncompressed batches when it believes the broker cannot
        // take the codec, and says so only in its log: at notice level at most once a day
        // (measured from boot), else at debug level.
        if message.contains(UNCOMPRESSED_SAID) {
            if let Ok(mut uncompressed) = self.uncompressed.lock() {
                uncompressed.get_or_insert_with(|| message.to_owned());
            }
        }
        if (level as i32) <= RDKafkaLogLevel::Warning as i32
            && self.shown.fetch_add(1, Ordering::Relaxed) < ERRORS_SHOWN_MAX
        {
            say(format!("      librdkafka: {facility}: {message}"));
        }
    }
}

impl ProducerContext for Deliveries {
    /// When the record was sent (or, open loop, meant to be), in ns since `epoch`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, stamp: usize) {
        match result {
            Ok(message) => {
                let sent = u64::try_from(stamp).unwrap_or(u64::MAX);
                if sent >= self.measured_from_nanos {
                    let micros = (nanos(self.epoch.elapsed()).saturating_sub(sent) / 1000).max(1);
                    if let Ok(mut latency) = self.latency.lock() {
                        let _ = latency.record(micros);
                    }
                }
                self.meter.add(1, message.payload_len() as u64);
            }
            Err((error, _)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| error.to_string());
                }
            }
        }
    }
}

/// What producers did together.
struct Produced {
    latency: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    /// librdkafka's words when it sent batches uncompressed despite `--compression`.
    uncompressed: Option<String>,
}

/// One producer: sends until `stop`, at `rate` records/s if given, then waits for every
/// outcome.
fn produce_one(
    broker: &Broker,
    settings: &Settings<'_>,
    values: &[u8],
    stop: Stop,
    rate: Option<f64>,
    deliveries: Deliveries,
) -> Result<Produced, String> {
    let epoch = deliveries.epoch;
    let producer: BaseProducer<Deliveries> = settings
        .config(broker)
        .create_with_context(deliveries)
        .map_err(|error| format!("cannot create a Kafka producer: {error}"))?;
    let size = settings.message_size;
    // Where a value may start: `value_pool` holds at least two values.
    let starts = (values.len() - size) as u64;
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        match stop {
            Stop::At(deadline) if Instant::now() >= deadline => break,
            Stop::After(count) if sent >= count => break,
            _ => {}
        }
        let start = match rate {
            Some(rate) => {
                let intended = started + Duration::from_secs_f64(sent as f64 / rate);
                if matches!(stop, Stop::At(deadline) if intended >= deadline) {
                    break;
                }
                // Delivery reports are served while waiting for the intended send time.
                loop {
                    let now = Instant::now();
                    if now >= intended {
                        break;
                    }
                    producer.poll(intended - now);
                }
                intended
            }
            None => Instant::now(),
        };
        let stamp =
            usize::try_from(nanos(start.saturating_duration_since(epoch))).unwrap_or(usize::MAX);
        // Consecutive records take consecutive slices of the pool.
        let offset = usize::try_from(sent.wrapping_mul(size as u64) % starts).unwrap_or(0);
        let value = &values[offset..offset + size];
        let mut record =
            BaseRecord::<[u8], [u8], usize>::with_opaque_to(settings.topic, stamp).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                // `queue.buffering.max.kbytes` reached: back-pressure, as the SDK's buffer.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    producer.poll(QUEUE_FULL_WAIT);
                }
                Err((error, _)) => {
                    return Err(format!("the Kafka producer refused a record: {error}"))
                }
            }
        }
        sent += 1;
        if sent.is_multiple_of(SENDS_PER_POLL) {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(FLUSH_TIMEOUT).map_err(|error| {
        format!("records still unacknowledged {FLUSH_TIMEOUT:?} after sending stopped: {error}")
    })?;
    let deliveries = producer.context();
    let latency = deliveries
        .latency
        .lock()
        .map(|latency| latency.clone())
        .map_err(|_| "a delivery report panicked".to_owned())?;
    let first_error = deliveries
        .first_error
        .lock()
        .map(|first| first.clone())
        .map_err(|_| "a delivery report panicked".to_owned())?;
    let uncompressed = deliveries
        .uncompressed
        .lock()
        .map(|said| said.clone())
        .map_err(|_| "a log callback panicked".to_owned())?;
    Ok(Produced {
        latency,
        errors: deliveries.errors.load(Ordering::Relaxed),
        first_error,
        uncompressed,
    })
}

/// How many producers run, for how long or how many records, at what rate in total.
#[derive(Debug, Clone, Copy)]
struct Plan {
    producers: u32,
    /// How long to send, unless `count` is given.
    duration: Duration,
    count: Option<u64>,
    /// Records per second in total (positive and finite).
    rate: Option<f64>,
    warmup: Duration,
}

/// Runs `plan.producers` producers on threads of their own and merges what they measured.
fn run_producers(
    broker: &Broker,
    settings: &Settings<'_>,
    plan: Plan,
    meter: &Meter,
) -> Result<Produced, String> {
    let producers = u64::from(plan.producers.max(1));
    let values = value_pool(settings.message_size);
    let values = values.as_slice();
    let epoch = Instant::now();
    let measured_from_nanos = nanos(plan.warmup);
    // A duration too long to add is a run without an end but its count.
    let deadline = epoch.checked_add(plan.duration);
    let outcomes: Vec<Result<Produced, String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..producers)
            .map(|index| {
                let stop = match plan.count {
                    Some(count) => {
                        Stop::After(count / producers + u64::from(index < count % producers))
                    }
                    None => deadline.map_or(Stop::After(u64::MAX), Stop::At),
                };
                let rate = plan.rate.map(|rate| rate / producers as f64);
                let deliveries = Deliveries {
                    epoch,
                    measured_from_nanos,
                    meter: meter.clone(),
                    latency: Mutex::new(histogram()),
                    errors: AtomicU64::new(0),
                    first_error: Mutex::new(None),
                    uncompressed: Mutex::new(None),
                    shown: AtomicU64::new(0),
                };
                scope.spawn(move || produce_one(broker, settings, values, stop, rate, deliveries))
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err("a producer thread panicked".to_owned()))
            })
            .collect()
    });
    let mut merged = Produced {
        latency: histogram(),
        errors: 0,
        first_error: None,
        uncompressed: None,
    };
    for outcome in outcomes {
        let produced = outcome?;
        merged
            .latency
            .add(&produced.latency)
            .map_err(|error| error.to_string())?;
        merged.errors += produced.errors;
        merged.first_error = merged.first_error.or(produced.first_error);
        merged.uncompressed = merged.uncompressed.or(produced.uncompressed);
    }
    if let Some(said) = &merged.uncompressed {
        // The run would measure uncompressed batches under a codec's name.
        return Err(format!(
            "librdkafka sent uncompressed batches instead of {}: \"{said}\". librdkafka \
             (issue #4956) compresses gzip, snappy and lz4 only for a broker that lists Produce \
             v0 in ApiVersions (Apache Kafka 4.0 lists it for this reason, KAFKA-18659)",
            settings.compression.setting()
        ));
    }
    Ok(merged)
}

/// Deletes a topic a run made on a broker the user gave, unless `--keep` (a failure is only
/// reported: the run's figures stand).
fn clean_up(runtime: &Runtime, broker: &Broker, topic: &str) {
    if broker.local || broker.keep {
        return;
    }
    let deleted = client_config(broker)
        .create::<AdminClient<DefaultClientContext>>()
        .map_err(|error| error.to_string())
        .and_then(|admin| {
            let options = AdminOptions::new()
                .request_timeout(Some(REQUEST_TIMEOUT))
                .operation_timeout(Some(REQUEST_TIMEOUT));
            runtime
                .block_on(admin.delete_topics(&[topic], &options))
                .map_err(|error| error.to_string())
        });
    if let Err(error) = deleted {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("could not delete the benchmark's topic {topic}: {error}");
        }
    }
}

/// Deletes `topic` if it exists, creates it with `partitions` partitions and waits until
/// every partition has a leader.
fn fresh_topic(
    runtime: &Runtime,
    broker: &Broker,
    topic: &str,
    partitions: u32,
    replication_factor: i32,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client_config(broker)
        .create()
        .map_err(|error| format!("cannot create a Kafka admin client: {error}"))?;
    let options = AdminOptions::new()
        .request_timeout(Some(REQUEST_TIMEOUT))
        .operation_timeout(Some(REQUEST_TIMEOUT));
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    let deleted = runtime
        .block_on(admin.delete_topics(&[topic], &options))
        .map_err(|error| format!("cannot delete topic {topic}: {error}"))?;
    for result in deleted {
        match result {
            // The files of the old topic: see `settle_filesystem` (a broker elsewhere does
            // not mind the extra sync here).
            Ok(_) => settle_filesystem(),
            Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => return Err(format!("cannot delete topic {name}: {code}")),
        }
    }
    let count = i32::try_from(partitions)
        .map_err(|_| format!("--partitions {partitions} is more than Kafka allows"))?;
    let new_topic = NewTopic::new(topic, count, TopicReplication::Fixed(replication_factor));
    loop {
        let created = runtime
            .block_on(admin.create_topics([&new_topic], &options))
            .map_err(|error| format!("cannot create topic {topic}: {error}"))?;
        match created.into_iter().next() {
            Some(Ok(_)) => break,
            // Kafka deletes topics asynchronously: the old one may still be there.
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) if Instant::now() < deadline => {
                std::thread::sleep(TOPIC_RETRY_INTERVAL);
            }
            Some(Err((name, code))) => return Err(format!("cannot create topic {name}: {code}")),
            None => return Err(format!("the broker did not answer for topic {topic}")),
        }
    }
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|error| format!("cannot read the metadata of topic {topic}: {error}"))?;
        let ready = metadata.topics().iter().any(|entry| {
            entry.name() == topic
                && entry.error().is_none()
                && entry.partitions().len() == partitions as usize
                && entry
                    .partitions()
                    .iter()
                    .all(|partition| partition.error().is_none() && partition.leader() >= 0)
        });
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "topic {topic} has no leader for every partition after {TOPIC_READY_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(TOPIC_RETRY_INTERVAL);
    }
}

fn check_args(partitions: u32, message_size: usize) -> Result<(), String> {
    if partitions == 0 {
        return Err("--partitions must be at least 1".into());
    }
    if message_size == 0 {
        return Err("--message-size must be at least 1".into());
    }
    Ok(())
}

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{flag} must be a number of seconds, not {value}"))
}

/// `kafka-produce`: throughput and acknowledgement latency of librdkafka producers.
pub fn produce(
    runtime: &Runtime,
    broker: &Broker,
    name: &str,
    args: &KafkaProduceArgs,
) -> Result<Run, String> {
    check_args(args.partitions, args.message_size)?;
    let topic = "bench-kafka-produce";
    fresh_topic(
        runtime,
        broker,
        topic,
        args.partitions,
        args.replication_factor,
    )?;
    let settings = Settings {
        topic,
        acks: args.acks,
        compression: args.compression,
        batch_bytes: args.batch_bytes,
        linger_ms: args.linger_ms,
        buffer_bytes: args.buffer_bytes,
        message_size: args.message_size,
    };
    if args
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
    {
        return Err("--rate must be a positive number of records per second".into());
    }
    let plan = Plan {
        producers: args.producers,
        duration: seconds("--seconds", args.seconds)?,
        count: args.count,
        rate: args.rate,
        warmup: seconds("--warmup-seconds", args.warmup_seconds)?,
    };
    let mut run = Run::new(
        name,
        broker.kind(),
        "kafka-produce",
        params([
            ("producers", args.producers.to_string()),
            ("partitions", args.partitions.to_string()),
            ("message_size", args.message_size.to_string()),
            ("batch_bytes", args.batch_bytes.to_string()),
            ("linger_ms", args.linger_ms.to_string()),
            ("acks", args.acks.setting().to_owned()),
            ("compression", args.compression.setting().to_owned()),
            ("buffer_bytes", args.buffer_bytes.to_string()),
            ("warmup_seconds", args.warmup_seconds.to_string()),
            ("seconds", args.seconds.to_string()),
            (
                "rate",
                args.rate
                    .map_or_else(|| "closed loop".to_owned(), |rate| rate.to_string()),
            ),
            ("client", client_version()),
            ("broker", broker.description()),
        ]),
    );
    let meter = Meter::start(TIMELINE_INTERVAL);
    let cpu = CpuTime::now();
    let started = Instant::now();
    let produced = run_producers(broker, &settings, plan, &meter);
    let elapsed = started.elapsed();
    let (operations, bytes, timeline) = meter.stop();
    let produced = produced?;
    if produced.errors > 0 {
        let first = produced.first_error.unwrap_or_default();
        if operations == 0 {
            return Err(format!(
                "the broker acknowledged none of the records ({} failed; the first: {first})",
                produced.errors
            ));
        }
        say(format!(
            "      {} records failed; the first: {first}",
            produced.errors
        ));
    }
    run.finish(elapsed, operations, bytes);
    CpuTime::since(cpu).record(&mut run);
    run.errors = produced.errors;
    run.timeline = timeline;
    let what = if args.rate.is_some() {
        "ack (from intended send time)"
    } else {
        "ack"
    };
    run.latency
        .push(Latency::from_histogram(what, &produced.latency));
    clean_up(runtime, broker, topic);
    Ok(run)
}

/// The consumer's client errors: shown up to [`ERRORS_SHOWN_MAX`], counted (a group
/// authorization refusal, which brokers with ACLs give to `assign()` consumers' group
/// lookups, is only noted).
struct ConsumerEvents {
    errors: AtomicU64,
    shown: AtomicU64,
}

impl ConsumerEvents {
    fn report(&self, error: &KafkaError, reason: Option<&str>) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed) {
            // `assign()` does not need the group (a broker with ACLs may refuse it).
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.shown.fetch_add(1, Ordering::Relaxed) < ERRORS_SHOWN_MAX {
            match reason {
                Some(reason) => say(format!("      kafka consumer: {error}: {reason}")),
                None => say(format!("      kafka consumer: {error}")),
            }
        }
    }
}

impl ClientContext for ConsumerEvents {
    fn error(&self, error: KafkaError, reason: &str) {
        self.report(&error, Some(reason));
    }
}

impl ConsumerContext for ConsumerEvents {}

/// `kafka-consume`: catch-up read with `assign()` of a backlog from the earliest offset to the
/// end every partition had when the read started.
pub fn consume(
    runtime: &Runtime,
    broker: &Broker,
    name: &str,
    args: &KafkaConsumeArgs,
) -> Result<Run, String> {
    check_args(args.partitions, args.message_size)?;
    let topic = "bench-kafka-consume";
    fresh_topic(
        runtime,
        broker,
        topic,
        args.partitions,
        args.replication_factor,
    )?;
    let records = args.backlog_bytes / args.message_size as u64;
    let backlog = Settings {
        topic,
        // Durable before the timed read: Spate's consumers read up to the durable end.
        acks: Acks::All,
        compression: args.compression,
        batch_bytes: BACKLOG_BATCH_BYTES,
        linger_ms: BACKLOG_LINGER_MS,
        buffer_bytes: BACKLOG_BUFFER_BYTES,
        message_size: args.message_size,
    };
    let plan = Plan {
        producers: 1,
        duration: Duration::MAX,
        count: Some(records),
        rate: None,
        warmup: Duration::ZERO,
    };
    let quiet = Meter::start(Duration::from_secs(1));
    let produced = run_producers(broker, &backlog, plan, &quiet);
    quiet.stop();
    let produced = produced?;
    if produced.errors > 0 {
        return Err(format!(
            "{} backlog records were not acknowledged; the first error: {}",
            produced.errors,
            produced.first_error.unwrap_or_default()
        ));
    }

    let events = ConsumerEvents {
        errors: AtomicU64::new(0),
        shown: AtomicU64::new(0),
    };
    let consumer: BaseConsumer<ConsumerEvents> = client_config(broker)
        .set("group.id", CONSUMER_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.max.bytes", FETCH_BYTES_MAX.to_string())
        .set("max.partition.fetch.bytes", args.fetch_bytes.to_string())
        .set(
            "queued.max.messages.kbytes",
            (CONSUMER_QUEUE_BYTES_MAX / 1024).to_string(),
        )
        .create_with_context(events)
        .map_err(|error| format!("cannot create a Kafka consumer: {error}"))?;
    // Where every partition starts and ends, read before the clock starts (this connects).
    let mut ends = Vec::new();
    let mut span = 0u64;
    for partition in 0..args.partitions {
        let index = i32::try_from(partition).map_err(|error| error.to_string())?;
        let (low, high) = consumer
            .fetch_watermarks(topic, index, REQUEST_TIMEOUT)
            .map_err(|error| {
                format!("cannot read the offsets of {topic} partition {partition}: {error}")
            })?;
        span += u64::try_from(high - low).unwrap_or(0);
        ends.push((low, high));
    }
    if span < records {
        return Err(format!(
            "the topic holds {span} records of the {records} acknowledged"
        ));
    }
    let mut run = Run::new(
        name,
        broker.kind(),
        "kafka-consume",
        params([
            ("partitions", args.partitions.to_string()),
            ("message_size", args.message_size.to_string()),
            ("backlog_bytes", args.backlog_bytes.to_string()),
            ("fetch_bytes", args.fetch_bytes.to_string()),
            ("fetch_max_bytes", FETCH_BYTES_MAX.to_string()),
            ("compression", args.compression.setting().to_owned()),
            ("client", client_version()),
            ("broker", broker.description()),
        ]),
    );
    let meter = Meter::start(TIMELINE_INTERVAL);
    let cpu = CpuTime::now();
    let read = read_to_ends(&consumer, topic, &ends, &meter);
    let (operations, bytes, timeline) = meter.stop();
    let elapsed = read?;
    if operations != span {
        return Err(format!(
            "read {operations} records, the partitions held {span}"
        ));
    }
    run.finish(elapsed, operations, bytes);
    CpuTime::since(cpu).record(&mut run);
    run.errors = consumer.context().errors.load(Ordering::Relaxed);
    run.timeline = timeline;
    clean_up(runtime, broker, topic);
    Ok(run)
}

/// Assigns every partition from its earliest offset and reads until each has reached its
/// `(low, high)` end; checks offsets only increase. Returns the time it took.
fn read_to_ends(
    consumer: &BaseConsumer<ConsumerEvents>,
    topic: &str,
    ends: &[(i64, i64)],
    meter: &Meter,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut assignment = TopicPartitionList::with_capacity(ends.len());
    for (partition, &(low, _)) in ends.iter().enumerate() {
        let index = i32::try_from(partition).map_err(|error| error.to_string())?;
        assignment
            .add_partition_offset(topic, index, Offset::Offset(low))
            .map_err(|error| error.to_string())?;
    }
    consumer
        .assign(&assignment)
        .map_err(|error| format!("cannot assign the partitions of {topic}: {error}"))?;
    // The next offset expected per partition; a partition is done at its high watermark.
    let mut next: Vec<i64> = ends.iter().map(|&(low, _)| low).collect();
    let mut unfinished = ends.iter().filter(|&&(low, high)| low < high).count();
    let mut last_progress = Instant::now();
    while unfinished > 0 {
        let message = match consumer.poll(POLL_TIMEOUT) {
            None => {
                if last_progress.elapsed() >= CONSUME_STALL_TIMEOUT {
                    let read: i64 = next
                        .iter()
                        .zip(ends)
                        .map(|(next, (low, _))| next - low)
                        .sum();
                    return Err(format!(
                        "no record for {CONSUME_STALL_TIMEOUT:?} after {read} records"
                    ));
                }
                continue;
            }
            Some(Err(error)) => {
                consumer.context().report(&error, None);
                continue;
            }
            Some(Ok(message)) => message,
        };
        let partition = message.partition();
        let Some((&(_, high), expected)) = usize::try_from(partition)
            .ok()
            .and_then(|index| Some((ends.get(index)?, next.get_mut(index)?)))
        else {
            return Err(format!(
                "a record of partition {partition}, which was not assigned"
            ));
        };
        let offset = message.offset();
        if offset < *expected {
            return Err(format!(
                "partition {partition}: offset {offset} after offset {}",
                *expected - 1
            ));
        }
        if offset >= high {
            // Written after the read started (by someone else): not part of the backlog.
            continue;
        }
        *expected = offset + 1;
        if *expected == high {
            unfinished -= 1;
        }
        meter.add(1, message.payload_len() as u64);
        last_progress = Instant::now();
    }
    Ok(started.elapsed())
}
