//! [`Producer`]: batches records per partition by size and linger time and pipelines the
//! batches to the gateway, many in flight per partition, in order.
//!
//! Invariants:
//! - One task owns the batches and sends them, so the batches of a partition go out in the
//!   order their records were sent, on one lane of one connection; the gateway and the shard
//!   keep that order. Acknowledged records of a partition therefore have increasing offsets in
//!   the order `send` was called.
//! - Idempotent (the default): the producer has a producer id from the node and numbers each
//!   partition's records (Kafka's sequences). A batch whose answer is lost or says "retry"
//!   (the connection broke, the gateway or the node restarted, a deadline passed, the shard
//!   was busy) is sent again, with the batches after it, in order, with the same numbers, until
//!   it is answered or `delivery_timeout` passes; the node stores what it lacks and answers the
//!   rest with the offsets they already have, so nothing is stored twice or out of order.
//!   At most `IN_FLIGHT_MAX` batches per partition are in flight (the node remembers a
//!   producer's last five), and only one until the partition acknowledged a batch of the
//!   current producer id and epoch (a partition takes an unknown producer's first batch at
//!   any sequence, so a second one must not overtake it). When a batch fails for good, the
//!   batches of its partition sent or built after it fail with it (the node refused them as
//!   out of order: nothing is stored after a failed batch), and the partition goes on under
//!   the next epoch of the producer id, from sequence 0: the node then refuses the old
//!   epoch's batches still on their way, so none is stored behind the new ones.
//! - Not idempotent (`idempotent: false`): a batch is never sent twice. A batch whose answer
//!   is lost may or may not be stored; its records fail with the error.
//! - Records accepted but not yet answered are bounded by `buffer_bytes`: `send` waits for
//!   room (back-pressure) instead of growing.
//! - A batch whose linger ended is held open while its partition already has
//!   `IN_FLIGHT_MAX` batches sealed and unanswered (Kafka's accumulator does the same): it
//!   could not be sent sooner, and records arriving meanwhile join it instead of queueing as
//!   batches of their own. It is sealed as soon as one of them is answered (or when it is
//!   full, or at a flush).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use spate_format::limits::{BATCH_HEADER_SIZE, BATCH_SIZE_MAX};
use spate_format::{BatchBuilder, BuildError, Compression, Header, ProducerFields, Record};
use spate_proto::{Durability, PartitionId, Response};
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::client::{unexpected, Client, ClientError, Submitted};
use crate::consumer::{RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN};

/// Batches of one partition in flight at once: Kafka's limit for idempotent producers, since
/// the node remembers a producer's last five batches per partition (a resend must be one of
/// them to be recognised).
pub const IN_FLIGHT_MAX: usize = spate_format::producers::BATCHES_PER_PRODUCER;

/// Batches handed from the batcher to a partition's sender and not yet sent (the byte budget
/// bounds them too).
const SEALED_QUEUE_MAX: usize = 64;

/// Commands queued from `send` to the producer task before `send` waits.
pub const COMMAND_QUEUE_MAX: usize = 1024;

/// Room a new batch's buffer has beyond its partition's last batch (at most `batch_bytes`),
/// for the record that crosses the batch size (a larger one moves the buffer once).
const BATCH_GROWTH_BYTES: usize = 16 << 10;

/// What a partition's first batch is reserved for.
const BATCH_RESERVE_FIRST: usize = 4 << 10;

/// The capacity of a new batch's buffer after one of `last` bytes, with batches sent at
/// `batch_bytes`.
fn reserve_for(last: usize, batch_bytes: u32) -> usize {
    last.min(batch_bytes as usize) + BATCH_GROWTH_BYTES
}

/// Settings of a [`Producer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerConfig {
    /// When the node acknowledges a batch. [default: fsync]
    pub durability: Durability,
    /// A partition's batch is sent once it holds this many bytes (at most `BATCH_SIZE_MAX`).
    /// [default: 256 KiB]
    pub batch_bytes: u32,
    /// A partition's batch is sent at the latest this long after its first record.
    /// [default: 5 ms]
    pub linger: Duration,
    /// Bytes of records accepted by `send` and not yet answered; `send` waits beyond.
    /// [default: 64 MiB]
    pub buffer_bytes: u32,
    /// Codec each batch is compressed with when it is sent (`batch_bytes` counts the records
    /// before compression; a batch that would not shrink is sent uncompressed). Consumers of
    /// every kind decompress. [default: none]
    pub compression: Compression,
    /// Idempotent: batches whose answer is lost are sent again and stored once (see the
    /// module documentation). [default: true]
    pub idempotent: bool,
    /// An idempotent producer gives up on a batch this long after it was sealed (Kafka's
    /// `delivery.timeout.ms`). [default: 120 s]
    pub delivery_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            durability: Durability::Fsync,
            batch_bytes: 256 << 10,
            linger: Duration::from_millis(5),
            buffer_bytes: 64 << 20,
            compression: Compression::None,
            idempotent: true,
            delivery_timeout: Duration::from_secs(120),
        }
    }
}

/// A record to send. Without a partition, a keyed record goes to the partition its key hashes
/// to and an unkeyed one to the partition currently filling a batch (switching after each
/// batch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// ms since the epoch; the time of `send` when not given.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), Some(value.into())));
        self
    }

    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Bytes the record holds, for the buffer budget.
    fn size(&self) -> usize {
        let field = |bytes: &Option<Bytes>| bytes.as_ref().map_or(0, Bytes::len);
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + field(value) + 8)
            .sum();
        field(&self.key) + field(&self.value) + headers + 32
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: u64,
    pub timestamp: i64,
}

/// Resolves when the record's batch is answered: to its partition and offset, or the error.
#[derive(Debug)]
pub struct Delivery(oneshot::Receiver<Result<RecordMetadata, ClientError>>);

impl Future for Delivery {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(context)
            .map(|result| result.unwrap_or(Err(ClientError::Closed)))
    }
}

/// Kafka's murmur2 hash (the same partition for the same key as Kafka's default partitioner).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    // Keys are at most 64 KiB; Kafka hashes the length as a 32-bit int.
    let mut h = SEED ^ u32::try_from(data.len()).unwrap_or(u32::MAX);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if !tail.is_empty() {
        for (index, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * index);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a key among `partitions` (Kafka's rule: positive murmur2 modulo count).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

struct Pending {
    partition: Option<u32>,
    record: ProducerRecord,
    timestamp: i64,
    permit: OwnedSemaphorePermit,
    reply: oneshot::Sender<Result<RecordMetadata, ClientError>>,
}

enum Command {
    Send(Box<Pending>),
    /// Send every open batch now; answer with a receiver that ends when every batch sent so
    /// far is answered.
    Flush(oneshot::Sender<mpsc::Receiver<()>>),
}

/// Sends records to one topic. Cheap to share by reference; `send` may be called from many
/// tasks at once (records of one task keep their order).
#[derive(Debug)]
pub struct Producer {
    topic: String,
    partitions: u32,
    commands: mpsc::Sender<Command>,
    budget: Arc<Semaphore>,
    budget_max: u32,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    /// A producer for `topic` (which must exist: its partition count is looked up now).
    pub async fn new(
        client: &Client,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        if config.batch_bytes == 0 || config.batch_bytes > BATCH_SIZE_MAX {
            return Err(ClientError::InvalidSetting {
                field: "batch_bytes",
                value: u64::from(config.batch_bytes),
                valid: format!("1 to {BATCH_SIZE_MAX}"),
            });
        }
        let metadata = client.topic(topic).await?;
        let partitions = u32::try_from(metadata.partitions.len()).unwrap_or(u32::MAX);
        let producer_id = if config.idempotent {
            allocate_producer_id(client).await?
        } else {
            spate_format::batch::NO_PRODUCER_ID
        };
        let answered = Arc::new(Notify::new());
        let senders = (0..partitions)
            .map(|partition| {
                let (queue, sealed) = mpsc::channel(SEALED_QUEUE_MAX);
                let unanswered = Arc::new(AtomicUsize::new(0));
                let reset = Arc::new(AtomicBool::new(false));
                let sender = PartitionSender {
                    client: client.clone(),
                    partition,
                    config,
                    reset: reset.clone(),
                    failed: None,
                    confirmed: None,
                };
                tokio::spawn(sender.run(sealed));
                Lane {
                    queue,
                    reset,
                    unanswered,
                    producer_id,
                    epoch: 0,
                    next_sequence: 0,
                }
            })
            .collect();
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE_MAX);
        let budget_max = config.buffer_bytes.max(BATCH_SIZE_MAX);
        let task = Batcher {
            client: client.clone(),
            topic: topic.to_owned(),
            config,
            open: (0..partitions).map(|_| None).collect(),
            lanes: senders,
            held: Vec::new(),
            answered,
            last_batch_bytes: vec![BATCH_RESERVE_FIRST; partitions as usize],
            deadlines: VecDeque::new(),
            // A random first partition: producers that send a few records each (one CLI run
            // per line, short-lived jobs) would otherwise all fill partition 0.
            sticky: fastrand::u32(0..partitions.max(1)),
            epoch: mpsc::channel(1),
        };
        let task = tokio::spawn(task.run(queue));
        Ok(Producer {
            topic: topic.to_owned(),
            partitions,
            commands,
            budget: Arc::new(Semaphore::new(budget_max as usize)),
            budget_max,
            task,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Queues a record, waiting while the buffer is full; the returned [`Delivery`] resolves
    /// once its batch is answered.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery, ClientError> {
        let partition = match (record.partition, &record.key) {
            (Some(partition), _) if partition >= self.partitions => {
                return Err(ClientError::NoSuchPartition {
                    topic: self.topic.clone(),
                    partition,
                    partitions: self.partitions,
                })
            }
            (Some(partition), _) => Some(partition),
            (None, Some(key)) => Some(partition_for_key(key, self.partitions)),
            (None, None) => None,
        };
        let size = u32::try_from(record.size())
            .unwrap_or(u32::MAX)
            .min(self.budget_max);
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(size)
            .await
            .map_err(|_| ClientError::Closed)?;
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let (reply, delivery) = oneshot::channel();
        let pending = Pending {
            partition,
            record,
            timestamp,
            permit,
            reply,
        };
        self.commands
            .send(Command::Send(Box::new(pending)))
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(Delivery(delivery))
    }

    /// Sends every open batch now and waits until every record sent before is answered.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (reply, drained) = oneshot::channel();
        self.commands
            .send(Command::Flush(reply))
            .await
            .map_err(|_| ClientError::Closed)?;
        let mut drained = drained.await.map_err(|_| ClientError::Closed)?;
        while drained.recv().await.is_some() {}
        Ok(())
    }

    /// Flushes and stops the producer.
    pub async fn close(self) -> Result<(), ClientError> {
        self.flush().await?;
        drop(self.commands);
        let _ = self.task.await;
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A partition's batch being filled.
struct Open {
    builder: BatchBuilder,
    replies: Vec<(oneshot::Sender<Result<RecordMetadata, ClientError>>, i64)>,
    permits: Option<OwnedSemaphorePermit>,
    generation: u64,
    /// Its linger ended while the partition was busy: it is in `Batcher::held`.
    held: bool,
}

/// The producer task: owns the open batches and sends them in order.
struct Batcher {
    client: Client,
    topic: String,
    config: ProducerConfig,
    open: Vec<Option<Open>>,
    /// Per partition, the size of its last batch: a new batch's buffer is reserved for that
    /// much (see `BATCH_GROWTH_BYTES`).
    last_batch_bytes: Vec<usize>,
    /// (deadline, partition, generation) in creation order; linger is constant, so the
    /// deadlines are in order too.
    deadlines: VecDeque<(Instant, u32, u64)>,
    sticky: u32,
    /// Every batch in flight holds a clone of the sender; a flush swaps the pair and waits for
    /// the old receiver to end.
    epoch: (mpsc::Sender<()>, mpsc::Receiver<()>),
    /// Per partition, where its sealed batches go and the producer id and sequence of its next
    /// batch.
    lanes: Vec<Lane>,
    /// Partitions whose linger ended while they had `IN_FLIGHT_MAX` batches unanswered:
    /// their open batch is sealed once one is answered.
    held: Vec<u32>,
    /// Signalled whenever a sealed batch of any partition is answered (or dropped).
    answered: Arc<Notify>,
}

/// The batcher's side of a partition's sender.
struct Lane {
    queue: mpsc::Sender<Sealed>,
    /// Set by the sender when a batch failed for good: the next batch starts a new producer
    /// id at sequence 0.
    reset: Arc<AtomicBool>,
    /// Batches sealed and not yet answered (queued, waiting or in flight): each `Sealed`
    /// holds one (`Unanswered`).
    unanswered: Arc<AtomicUsize>,
    producer_id: i64,
    epoch: i16,
    next_sequence: i32,
}

/// A batch ready to go, with what its answer resolves.
struct Sealed {
    /// The whole produce frame (its correlation id is rewritten for each send).
    frame: Bytes,
    /// Producer id and epoch (-1, -1 when not idempotent).
    producer: (i64, i16),
    replies: Vec<(oneshot::Sender<Result<RecordMetadata, ClientError>>, i64)>,
    permits: Option<OwnedSemaphorePermit>,
    epoch: mpsc::Sender<()>,
    sealed_at: Instant,
    /// An attempt's answer was lost: if the batch fails, it may be stored.
    maybe_stored: bool,
    /// Counts the batch as unanswered in its lane until it is dropped (answered or failed).
    _unanswered: Unanswered,
}

/// One sealed batch in its lane's count of unanswered batches; dropping it takes the batch
/// out and tells the batcher (which may hold a batch for that).
struct Unanswered {
    count: Arc<AtomicUsize>,
    answered: Arc<Notify>,
}

impl Unanswered {
    fn new(count: &Arc<AtomicUsize>, answered: &Arc<Notify>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Unanswered {
            count: count.clone(),
            answered: answered.clone(),
        }
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.answered.notify_one();
    }
}

/// A producer id of its own from the node (`AllocateProducerIds`, one id).
/// Tries of a producer id allocation that failed for a passing reason (a leader moving, an
/// answer lost); an id whose answer was lost is never handed out again, so a retry is safe.
const ALLOCATE_ATTEMPTS_MAX: u32 = 10;

async fn allocate_producer_id(client: &Client) -> Result<i64, ClientError> {
    let request =
        spate_proto::Request::AllocateProducerIds(spate_proto::AllocateProducerIdsRequest {
            count: 1,
        });
    let answer = crate::client::retry_passing(
        "producer id allocation",
        ALLOCATE_ATTEMPTS_MAX - 1,
        Duration::from_millis(100),
        Duration::from_secs(2),
        || client.request(&request),
    )
    .await?;
    match answer {
        Response::AllocateProducerIds(block) if block.count >= 1 => i64::try_from(block.first)
            .map_err(|_| {
                ClientError::InvalidAnswer(crate::client::InvalidAnswer::WrongKind {
                    api_key: spate_proto::ApiKey::AllocateProducerIds.to_u16(),
                })
            }),
        other => Err(unexpected(&other)),
    }
}

impl Batcher {
    async fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut generation = 0u64;
        loop {
            let deadline = self.deadlines.front().map(|(deadline, _, _)| *deadline);
            let answered = self.answered.clone();
            let command = tokio::select! {
                biased;
                command = queue.recv() => command,
                () = sleep_until(deadline) => {
                    self.send_expired().await;
                    continue;
                }
                () = answered.notified(), if !self.held.is_empty() => {
                    self.send_held().await;
                    continue;
                }
            };
            match command {
                None => break,
                Some(Command::Send(pending)) => {
                    generation += 1;
                    self.append(*pending, generation).await;
                }
                Some(Command::Flush(reply)) => {
                    self.send_all().await;
                    let old = std::mem::replace(&mut self.epoch, mpsc::channel(1));
                    let _ = reply.send(old.1);
                }
            }
        }
        self.send_all().await;
    }

    async fn send_expired(&mut self) {
        let now = Instant::now();
        while let Some(&(deadline, partition, generation)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let current = self.open[partition as usize]
                .as_ref()
                .map(|open| open.generation);
            if current == Some(generation) {
                if self.is_busy(partition) {
                    self.hold(partition);
                } else {
                    self.send_batch(partition).await;
                }
            }
        }
    }

    /// Whether a partition has `IN_FLIGHT_MAX` batches sealed and unanswered: a batch sealed
    /// now would wait behind them.
    fn is_busy(&self, partition: u32) -> bool {
        self.lanes[partition as usize]
            .unanswered
            .load(Ordering::Acquire)
            >= IN_FLIGHT_MAX
    }

    /// Keeps a partition's open batch open until the partition has room (once in `held`).
    fn hold(&mut self, partition: u32) {
        if let Some(open) = self.open[partition as usize].as_mut() {
            if !open.held {
                open.held = true;
                self.held.push(partition);
            }
        }
    }

    /// Seals the held batches whose partitions have room again. A held batch sealed since
    /// (it filled up) is gone from `open`, and so is its entry here.
    async fn send_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        for partition in held {
            let still_held = self.open[partition as usize]
                .as_ref()
                .is_some_and(|open| open.held);
            if !still_held {
                continue;
            }
            if self.is_busy(partition) {
                self.held.push(partition);
            } else {
                self.send_batch(partition).await;
            }
        }
    }

    async fn send_all(&mut self) {
        for partition in 0..self.open.len() {
            // `open` has one entry per partition, a u32 count.
            self.send_batch(u32::try_from(partition).unwrap_or(u32::MAX))
                .await;
        }
        self.deadlines.clear();
        self.held.clear();
    }

    async fn append(&mut self, pending: Pending, generation: u64) {
        let partition = pending.partition.unwrap_or(self.sticky);
        let Pending {
            record,
            timestamp,
            permit,
            reply,
            ..
        } = pending;
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|(name, value)| Header {
                name,
                value: value.as_deref(),
            })
            .collect();
        let encoded = Record {
            timestamp,
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers,
        };
        for attempt in 0..2 {
            let slot = &mut self.open[partition as usize];
            let open = slot.get_or_insert_with(|| Open {
                // Built behind room for the frame's header, so it is not copied into a frame,
                // and as big as this partition's last batch, so a busy partition's batch is
                // not moved as it grows while a quiet one's does not hold a full batch's
                // memory in flight.
                builder: BatchBuilder::with_headroom(
                    spate_proto::produce_frame_headroom(&self.topic),
                    reserve_for(
                        self.last_batch_bytes[partition as usize],
                        self.config.batch_bytes,
                    ),
                )
                .compression(self.config.compression),
                replies: Vec::new(),
                permits: None,
                generation,
                held: false,
            });
            if open.replies.is_empty() {
                open.generation = generation;
                self.deadlines.push_back((
                    Instant::now() + self.config.linger,
                    partition,
                    generation,
                ));
            }
            match open.builder.push(&encoded) {
                Ok(()) => {
                    open.replies.push((reply, timestamp));
                    match open.permits.as_mut() {
                        Some(permits) => permits.merge(permit),
                        None => open.permits = Some(permit),
                    }
                    if open.builder.len() >= self.config.batch_bytes {
                        self.send_batch(partition).await;
                    }
                    return;
                }
                Err(BuildError::BatchFull { .. } | BuildError::TooManyRecords { .. })
                    if attempt == 0 && !open.replies.is_empty() =>
                {
                    self.send_batch(partition).await;
                }
                Err(error) => {
                    let error = match error {
                        BuildError::BatchFull { size, .. } => ClientError::RecordTooLarge {
                            size: size.saturating_sub(u64::from(BATCH_HEADER_SIZE)),
                        },
                        other => ClientError::InvalidRecord(other),
                    };
                    let _ = reply.send(Err(error));
                    return;
                }
            }
        }
    }

    /// Seals a partition's open batch, if any, and hands it to the partition's sender. Waits
    /// while the sender's queue is full.
    async fn send_batch(&mut self, partition: u32) {
        let Some(open) = self.open[partition as usize].take() else {
            return;
        };
        if open.replies.is_empty() {
            return;
        }
        if partition == self.sticky {
            self.sticky = (self.sticky + 1) % u32::try_from(self.open.len()).unwrap_or(1).max(1);
        }
        let Open {
            builder,
            replies,
            permits,
            ..
        } = open;
        self.last_batch_bytes[partition as usize] = builder.len() as usize;
        let record_count = builder.record_count();
        let lane = &mut self.lanes[partition as usize];
        if self.config.idempotent && lane.reset.swap(false, Ordering::AcqRel) {
            // A batch failed for good: the node refused everything after it. The partition
            // goes on under the next epoch (which fences the old one's batches still on their
            // way), or a new producer id once the epochs are used up.
            if lane.epoch < i16::MAX {
                lane.epoch += 1;
            } else {
                match allocate_producer_id(&self.client).await {
                    Ok(id) => {
                        lane.producer_id = id;
                        lane.epoch = 0;
                    }
                    Err(error) => {
                        lane.reset.store(true, Ordering::Release);
                        fail(replies, &error);
                        return;
                    }
                }
            }
            lane.next_sequence = 0;
        }
        let producer = if self.config.idempotent {
            ProducerFields {
                producer_id: lane.producer_id,
                producer_epoch: lane.epoch,
                base_sequence: lane.next_sequence,
            }
        } else {
            ProducerFields::default()
        };
        let batch = match builder.producer(producer).finish_with_headroom() {
            Ok(batch) => batch,
            Err(error) => {
                fail(replies, &ClientError::InvalidRecord(error));
                return;
            }
        };
        lane.next_sequence = sequence_after(lane.next_sequence, record_count);
        let (buffer, start) = batch;
        assert_eq!(
            start,
            spate_proto::produce_frame_headroom(&self.topic),
            "the batch was built behind a produce frame's headroom"
        );
        // The correlation id is set when the frame is sent.
        let frame = spate_proto::produce_frame_in_place(
            buffer,
            0,
            &self.topic,
            PartitionId(partition),
            self.config.durability,
        );
        let sealed = Sealed {
            frame,
            producer: (producer.producer_id, producer.producer_epoch),
            replies,
            permits,
            epoch: self.epoch.0.clone(),
            sealed_at: Instant::now(),
            maybe_stored: false,
            _unanswered: Unanswered::new(&lane.unanswered, &self.answered),
        };
        if let Err(refused) = lane.queue.send(sealed).await {
            fail(refused.0.replies, &ClientError::Closed);
        }
    }
}

/// `sequence` advanced by `by`, wrapping from `i32::MAX` to 0 (Kafka's sequences).
fn sequence_after(sequence: i32, by: u32) -> i32 {
    let wrapped = (i64::from(sequence) + i64::from(by)) % (i64::from(i32::MAX) + 1);
    i32::try_from(wrapped).unwrap_or(0)
}

/// A sealed batch sent and waiting for its answer.
struct Flight {
    sealed: Sealed,
    submitted: Submitted,
}

/// Sends one partition's batches in order, at most `IN_FLIGHT_MAX` in flight, and resolves
/// their records; an idempotent producer's batches are sent again after a lost answer (see
/// the module documentation).
struct PartitionSender {
    client: Client,
    partition: u32,
    config: ProducerConfig,
    reset: Arc<AtomicBool>,
    /// A producer id and epoch whose batch failed for good, and why: its later batches fail
    /// too.
    failed: Option<((i64, i16), ClientError)>,
    /// The producer id and epoch of which this partition acknowledged a batch: until then
    /// one batch is in flight at a time.
    confirmed: Option<(i64, i16)>,
}

impl PartitionSender {
    async fn run(mut self, mut sealed: mpsc::Receiver<Sealed>) {
        let mut waiting: VecDeque<Sealed> = VecDeque::new();
        let mut in_flight: VecDeque<Flight> = VecDeque::new();
        let mut backoff = RETRY_BACKOFF_MIN;
        let mut open = true;
        loop {
            // Send what waits, up to the limit, in order.
            while in_flight.len() < self.window(&in_flight, &waiting) {
                let Some(next) = waiting.pop_front() else {
                    break;
                };
                if let Some(mut next) = self.refuse_after_failure(next) {
                    match self.submit(&mut next).await {
                        Ok(submitted) => in_flight.push_back(Flight {
                            sealed: next,
                            submitted,
                        }),
                        Err(error) if !self.config.idempotent => {
                            // Never sent: it fails alone, surely not stored.
                            fail_sealed(next, &error);
                        }
                        Err(error) => {
                            waiting.push_front(next);
                            self.retry_or_fail(error, &mut waiting, &mut in_flight, &mut backoff)
                                .await;
                            break;
                        }
                    }
                }
            }
            let room =
                open && waiting.is_empty() && in_flight.len() < self.window(&in_flight, &waiting);
            let Some(front) = in_flight.front_mut() else {
                if !waiting.is_empty() {
                    continue;
                }
                if !open {
                    return;
                }
                match sealed.recv().await {
                    Some(next) => waiting.push_back(next),
                    None => open = false,
                }
                continue;
            };
            let answer = tokio::select! {
                biased;
                answer = front.submitted.answer_ref() => answer,
                next = sealed.recv(), if room => {
                    match next {
                        Some(next) => waiting.push_back(next),
                        None => open = false,
                    }
                    continue;
                }
            };
            let flight = in_flight.pop_front().expect("the front answered");
            match answer {
                Ok(Response::Produce(produced)) => {
                    backoff = RETRY_BACKOFF_MIN;
                    self.confirmed = Some(flight.sealed.producer);
                    let Sealed {
                        replies,
                        permits,
                        epoch,
                        ..
                    } = flight.sealed;
                    for (index, (reply, timestamp)) in replies.into_iter().enumerate() {
                        let _ = reply.send(Ok(RecordMetadata {
                            partition: self.partition,
                            offset: produced.base_offset + index as u64,
                            timestamp,
                        }));
                    }
                    drop((permits, epoch));
                }
                Ok(other) => {
                    let error = unexpected(&other);
                    in_flight.push_front(flight);
                    self.fail_all(&error, &mut waiting, &mut in_flight);
                }
                Err(error) => {
                    in_flight.push_front(flight);
                    self.retry_or_fail(error, &mut waiting, &mut in_flight, &mut backoff)
                        .await;
                }
            }
        }
    }

    /// How many batches may be in flight: `IN_FLIGHT_MAX`, or one while the next batch's
    /// producer id and epoch have no acknowledged batch in this partition.
    fn window(&self, in_flight: &VecDeque<Flight>, waiting: &VecDeque<Sealed>) -> usize {
        let next = in_flight
            .front()
            .map(|flight| flight.sealed.producer)
            .or_else(|| waiting.front().map(|sealed| sealed.producer));
        match next {
            Some(producer) if self.config.idempotent && self.confirmed != Some(producer) => 1,
            _ => IN_FLIGHT_MAX,
        }
    }

    /// Sends a sealed batch's frame under a fresh correlation id; gives up when the batch's
    /// delivery timeout passes while the lane is full (a gateway that stopped reading).
    async fn submit(&self, sealed: &mut Sealed) -> Result<Submitted, ClientError> {
        let deadline = sealed.sealed_at + self.config.delivery_timeout;
        match tokio::time::timeout_at(
            deadline,
            self.client.submit_produce_frame(&mut sealed.frame),
        )
        .await
        {
            Ok(submitted) => submitted,
            Err(_) => Err(ClientError::Timeout(self.config.delivery_timeout)),
        }
    }

    /// A batch of a producer id whose earlier batch failed for good fails with it.
    fn refuse_after_failure(&self, sealed: Sealed) -> Option<Sealed> {
        match &self.failed {
            Some((producer, error)) if *producer == sealed.producer && producer.0 >= 0 => {
                fail(sealed.replies, error);
                None
            }
            _ => Some(sealed),
        }
    }

    /// The front batch met `error`: an idempotent producer sends it and everything after it
    /// again (after a pause) while the error is one a resend can cure and the delivery
    /// timeout allows; otherwise they fail.
    async fn retry_or_fail(
        &mut self,
        error: ClientError,
        waiting: &mut VecDeque<Sealed>,
        in_flight: &mut VecDeque<Flight>,
        backoff: &mut Duration,
    ) {
        // OutOfOrderSequence is not curable: only the front's answer is looked at, and every
        // batch before it was acknowledged, so the gap is real (records acknowledged at
        // `none` lost in a crash) and a resend would meet it again.
        let curable = error.is_retriable();
        if error.outcome_unknown() {
            // The front's answer was lost; so may the answers of those sent after it be.
            for flight in in_flight.iter_mut() {
                flight.sealed.maybe_stored = true;
            }
        }
        let oldest = in_flight
            .front()
            .map(|flight| flight.sealed.sealed_at)
            .or_else(|| waiting.front().map(|sealed| sealed.sealed_at));
        let in_time =
            oldest.is_some_and(|sealed_at| sealed_at.elapsed() < self.config.delivery_timeout);
        if !self.config.idempotent {
            // Never sent twice: the front fails alone (the others get their own answers).
            if let Some(flight) = in_flight.pop_front() {
                fail_sealed(flight.sealed, &error);
            } else if let Some(sealed) = waiting.pop_front() {
                fail_sealed(sealed, &error);
            }
            return;
        }
        if !(curable && in_time) {
            self.fail_all(&error, waiting, in_flight);
            return;
        }
        // Everything in flight goes back in front of what waits, in order; answers still on
        // their way are not needed (a resend of a stored batch is answered with its offsets).
        while let Some(flight) = in_flight.pop_back() {
            waiting.push_front(flight.sealed);
        }
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(RETRY_BACKOFF_MAX);
    }

    /// Fails every batch in flight and waiting with `error`; later batches of the same producer
    /// id fail too, and the batcher starts a new one.
    fn fail_all(
        &mut self,
        error: &ClientError,
        waiting: &mut VecDeque<Sealed>,
        in_flight: &mut VecDeque<Flight>,
    ) {
        let producer = in_flight
            .front()
            .map(|flight| flight.sealed.producer)
            .or_else(|| waiting.front().map(|sealed| sealed.producer));
        for flight in in_flight.drain(..) {
            fail_sealed(flight.sealed, error);
        }
        for sealed in waiting.drain(..) {
            fail_sealed(sealed, error);
        }
        if let Some(producer) = producer.filter(|producer| producer.0 >= 0) {
            self.failed = Some((producer, error.clone()));
            self.reset.store(true, Ordering::Release);
        }
    }
}

/// Fails a sealed batch's records with `error`, as `MaybeStored` if one of its attempts'
/// answers was lost.
fn fail_sealed(sealed: Sealed, error: &ClientError) {
    let error = if sealed.maybe_stored && !matches!(error, ClientError::MaybeStored(_)) {
        ClientError::MaybeStored(Box::new(error.clone()))
    } else {
        error.clone()
    };
    fail(sealed.replies, &error);
}

fn fail(
    replies: Vec<(oneshot::Sender<Result<RecordMetadata, ClientError>>, i64)>,
    error: &ClientError,
) {
    for (reply, _) in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

/// Waits until `deadline` (forever for `None`). A deadline already passed is ready at once:
/// tokio's timer would round it up to its next 1 ms tick, so a zero `linger` would still wait
/// up to a millisecond. With the batcher's `biased` select this makes a zero linger send a
/// partition's batch as soon as no more records are queued (as Kafka's `linger.ms=0` does).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) if deadline <= Instant::now() => {}
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values Kafka's own tests expect of murmur2 (as Java ints).
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key).to_le_bytes(),
                expected.to_le_bytes(),
                "{key:?}"
            );
        }
    }

    #[test]
    fn keys_spread_over_partitions_and_stay_put() {
        let mut seen = [0u32; 8];
        for index in 0..8000u32 {
            let key = format!("user-{index}");
            let partition = partition_for_key(key.as_bytes(), 8);
            assert_eq!(partition, partition_for_key(key.as_bytes(), 8));
            seen[partition as usize] += 1;
        }
        assert!(
            seen.iter().all(|count| (800..1200).contains(count)),
            "{seen:?}"
        );
    }
}
