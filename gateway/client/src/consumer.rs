//! [`Consumer`]: reads assigned partitions of a topic from a start position with long-poll
//! fetches, prefetching the next fetch of each partition while the application works.
//!
//! Invariants:
//! - Each partition is read by one task in offset order: every record is yielded once, in
//!   order, with no gap (the task asks for exactly the offset after the last record it
//!   yielded), and every batch's CRCs are checked before any of its records is yielded.
//! - Fetches only read, so a fetch that fails for a passing reason (connection, timeout, a
//!   restarting node) is sent again after a pause; errors that retrying cannot fix (the
//!   offset fell below the log start, an invalid batch) end the partition and reach the
//!   application.
//! - Memory is bounded: each partition has at most one fetch in flight, and the fetched
//!   chunks waiting for the application are bounded by `CHUNKS_BUFFERED_MAX`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use spate_format::TimestampType;
use spate_proto::{ErrorCode, FetchRequest, OffsetSpec, PartitionId};
use tokio::sync::mpsc;

use crate::client::{Client, ClientError, InvalidAnswer};

/// Fetched chunks (each at most about `max_bytes`) queued for the application before the
/// partition tasks wait.
pub const CHUNKS_BUFFERED_MAX: usize = 16;

/// Decompressed bytes one fetch's chunk may hold before the rest of the fetched batches is
/// left for the next fetch: a chunk holds at most this plus one batch (spate-format's
/// `DECOMPRESSED_SIZE_MAX`), however far the fetched batches expand.
pub const DECOMPRESSED_PER_CHUNK_MAX: usize = 32 << 20;

/// Pause before retrying a failed fetch, doubling up to `RETRY_BACKOFF_MAX`.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(20);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Where a consumer starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The log start offset (the oldest record retention kept).
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// This offset. An offset below the log start (removed by retention) is an error rather
    /// than a silent skip.
    Offset(u64),
    /// The first record whose timestamp is at least this (ms since the epoch).
    Timestamp(i64),
    /// This many records before the high watermark (the log start if fewer are kept).
    FromEnd(u64),
}

/// Where a consumer stops reading a partition (`ConsumerConfig::until`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPosition {
    /// Before this offset.
    Offset(u64),
    /// Before the first record whose timestamp is at least this (ms since the epoch).
    Timestamp(i64),
}

/// What a consumer does when its offset is outside the partition's `[log start, high
/// watermark]` (a start past the end, or records removed by retention while it lagged):
/// Kafka's `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// Go on from the log start.
    Earliest,
    /// Go on from the high watermark.
    Latest,
    /// Fail the partition with `OffsetOutOfRange` (the default: nothing is skipped silently).
    #[default]
    Error,
}

/// Settings of a [`Consumer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub start: StartPosition,
    /// How long a fetch waits at the shard for new records. [default: 500 ms]
    pub max_wait: Duration,
    /// Soft limit of one fetch answer, in bytes. [default: 1 MiB]
    pub max_bytes: u32,
    /// Stop each partition at the high watermark it had when the consumer started; `next`
    /// then returns `None` once every partition got there. [default: false (follow)]
    pub stop_at_end: bool,
    /// Stop each partition here (with `stop_at_end`, at whichever comes first).
    /// [default: none]
    pub until: Option<EndPosition>,
    /// An offset outside the partition's records. [default: `OffsetReset::Error`]
    pub offset_reset: OffsetReset,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            start: StartPosition::Earliest,
            max_wait: Duration::from_millis(500),
            max_bytes: 1 << 20,
            stop_at_end: false,
            until: None,
            offset_reset: OffsetReset::Error,
        }
    }
}

/// One consumed record. Key, value and header values share the fetched bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: u32,
    pub offset: u64,
    /// ms since the epoch (the producer's, or the node's append time for topics that use it).
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

enum Chunk {
    Records(Vec<ConsumedRecord>),
    /// The partition reached the end it was to stop at.
    End,
    Failed(u32, ClientError),
}

/// Reads partitions of one topic. Records of a partition come in offset order; partitions
/// interleave as their fetches complete.
#[derive(Debug)]
pub struct Consumer {
    chunks: mpsc::Receiver<Chunk>,
    ready: VecDeque<ConsumedRecord>,
    running: usize,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chunk::Records(records) => write!(f, "Records({})", records.len()),
            Chunk::End => write!(f, "End"),
            Chunk::Failed(partition, error) => write!(f, "Failed({partition}, {error})"),
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Consumer {
    /// Reads `partitions` of `topic` (all of them when `None`) from `config.start`.
    pub async fn new(
        client: &Client,
        topic: &str,
        partitions: Option<Vec<u32>>,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        let starts = partitions.map(|partitions| {
            partitions
                .into_iter()
                .map(|partition| (partition, config.start))
                .collect()
        });
        Consumer::starting_at(client, topic, starts, config).await
    }

    /// Reads each listed partition of `topic` from its own start (every partition from
    /// `config.start` when `None`).
    pub async fn starting_at(
        client: &Client,
        topic: &str,
        starts: Option<Vec<(u32, StartPosition)>>,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        let metadata = client.topic(topic).await?;
        let count = u32::try_from(metadata.partitions.len()).unwrap_or(u32::MAX);
        let starts = starts.unwrap_or_else(|| {
            (0..count)
                .map(|partition| (partition, config.start))
                .collect()
        });
        let partitions: Vec<u32> = starts.iter().map(|(partition, _)| *partition).collect();
        if let Some(missing) = partitions.iter().find(|partition| **partition >= count) {
            return Err(ClientError::NoSuchPartition {
                topic: topic.to_owned(),
                partition: *missing,
                partitions: count,
            });
        }
        let (sender, chunks) = mpsc::channel(CHUNKS_BUFFERED_MAX);
        let mut tasks = Vec::with_capacity(partitions.len());
        for (partition, start) in &starts {
            let reader = PartitionReader {
                client: client.clone(),
                topic: topic.to_owned(),
                partition: *partition,
                start: *start,
                config,
                sender: sender.clone(),
            };
            tasks.push(tokio::spawn(reader.run()).abort_handle());
        }
        Ok(Consumer {
            chunks,
            ready: VecDeque::new(),
            running: partitions.len(),
            tasks,
        })
    }

    /// Records fetched and ready to be returned by `next` without waiting.
    pub fn buffered(&self) -> usize {
        self.ready.len()
    }

    /// The next record, waiting for one; `None` once every partition reached its end (only
    /// with `stop_at_end`). An error ends its partition; the others go on.
    pub async fn next(&mut self) -> Result<Option<ConsumedRecord>, ClientError> {
        loop {
            if let Some(record) = self.ready.pop_front() {
                return Ok(Some(record));
            }
            if self.running == 0 {
                return Ok(None);
            }
            match self.chunks.recv().await {
                Some(Chunk::Records(records)) => self.ready.extend(records),
                Some(Chunk::End) => self.running -= 1,
                Some(Chunk::Failed(partition, error)) => {
                    self.running -= 1;
                    return Err(with_partition(partition, error));
                }
                None => return Ok(None),
            }
        }
    }
}

fn with_partition(partition: u32, error: ClientError) -> ClientError {
    match error {
        ClientError::Server(mut answer) => {
            answer.message = format!("partition {partition}: {}", answer.message);
            ClientError::Server(answer)
        }
        other => other,
    }
}

struct PartitionReader {
    client: Client,
    topic: String,
    partition: u32,
    start: StartPosition,
    config: ConsumerConfig,
    sender: mpsc::Sender<Chunk>,
}

impl PartitionReader {
    async fn run(self) {
        let outcome = self.read().await;
        let chunk = match outcome {
            Ok(()) => Chunk::End,
            // The topic existed when the consumer started: it was deleted since.
            Err(ClientError::Server(answer)) if answer.code == ErrorCode::UnknownTopic => {
                Chunk::Failed(
                    self.partition,
                    ClientError::TopicDeleted(self.topic.clone()),
                )
            }
            Err(error) => Chunk::Failed(self.partition, error),
        };
        let _ = self.sender.send(chunk).await;
    }

    /// Retries `attempt` while its error is retriable, with a growing pause.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            match attempt().await {
                Err(error) if error.is_retriable() => {
                    tracing::debug!(partition = self.partition, "retrying: {error}");
                    if self.sender.is_closed() {
                        return Err(error);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
                other => return other,
            }
        }
    }

    async fn list(&self, spec: OffsetSpec) -> Result<u64, ClientError> {
        self.retrying(|| self.client.list_offsets(&self.topic, self.partition, spec))
            .await
            .map(|listed| listed.offset)
    }

    /// Where `offset_reset` goes for an offset out of range, or the error.
    async fn reset(&self, offset: u64, error: ClientError) -> Result<u64, ClientError> {
        match self.config.offset_reset {
            OffsetReset::Earliest => self.list(OffsetSpec::Earliest).await,
            OffsetReset::Latest => self.list(OffsetSpec::Latest).await,
            OffsetReset::Error => {
                tracing::debug!(partition = self.partition, offset, "offset out of range");
                Err(error)
            }
        }
    }

    async fn read(&self) -> Result<(), ClientError> {
        let mut offset = match self.start {
            StartPosition::Earliest => self.list(OffsetSpec::Earliest).await?,
            StartPosition::Latest => self.list(OffsetSpec::Latest).await?,
            StartPosition::Offset(offset) => offset,
            StartPosition::Timestamp(timestamp) => {
                self.list(OffsetSpec::Timestamp(timestamp)).await?
            }
            StartPosition::FromEnd(count) => {
                let latest = self.list(OffsetSpec::Latest).await?;
                let earliest = self.list(OffsetSpec::Earliest).await?;
                latest.saturating_sub(count).max(earliest)
            }
        };
        // A start outside the records is treated the same with and without a stop at the
        // end: by `offset_reset`.
        if let StartPosition::Offset(start) = self.start {
            let earliest = self.list(OffsetSpec::Earliest).await?;
            let latest = self.list(OffsetSpec::Latest).await?;
            if start < earliest || start > latest {
                let error = ClientError::Server(spate_proto::ErrorResponse::new(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "offset {start} is outside the partition's records [{earliest}, {latest}]"
                    ),
                ));
                offset = self.reset(start, error).await?;
            }
        }
        let mut end = if self.config.stop_at_end {
            Some(self.list(OffsetSpec::Latest).await?)
        } else {
            None
        };
        // A time end is met at the first record at or after it (also one produced later).
        let mut until_time = None;
        match self.config.until {
            Some(EndPosition::Offset(until)) => {
                end = Some(end.map_or(until, |end| end.min(until)));
            }
            Some(EndPosition::Timestamp(until)) => until_time = Some(until),
            None => {}
        }
        let max_wait_ms = u32::try_from(self.config.max_wait.as_millis()).unwrap_or(u32::MAX);
        loop {
            if end.is_some_and(|end| offset >= end) {
                return Ok(());
            }
            let request = FetchRequest {
                topic: self.topic.clone(),
                partition: PartitionId(self.partition),
                offset,
                max_bytes: self.config.max_bytes,
                max_wait_ms,
                min_bytes: 1,
                epochs: spate_proto::ReadEpochs::default(),
            };
            // `spate_format::batches` below checks each batch's CRCs before its records are
            // used; a damaged batch ends the partition as `Client::fetch` would.
            let fetched = match self
                .retrying(|| self.client.fetch_unchecked(request.clone()))
                .await
            {
                Ok(fetched) => fetched,
                // Retention removed the records while this consumer lagged.
                Err(error) if error.code() == Some(ErrorCode::OffsetOutOfRange) => {
                    offset = self.reset(offset, error).await?;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let mut records = Vec::new();
            let mut decompressed = 0usize;
            for batch in spate_format::batches(&fetched.records) {
                if decompressed >= DECOMPRESSED_PER_CHUNK_MAX {
                    // The next fetch starts at `offset`, this batch's start at the latest.
                    break;
                }
                let batch = batch
                    .map_err(|error| ClientError::InvalidAnswer(InvalidAnswer::Batch(error)))?;
                let base = batch.base_offset().0;
                // Records are shared with the fetched bytes, or with the decompressed section
                // of a compressed batch (bounded by spate-format's DECOMPRESSED_SIZE_MAX).
                let section = match batch
                    .records_section()
                    .map_err(|error| ClientError::InvalidAnswer(InvalidAnswer::Records(error)))?
                {
                    Cow::Borrowed(section) => fetched.records.slice_ref(section),
                    Cow::Owned(section) => {
                        decompressed += section.len();
                        Bytes::from(section)
                    }
                };
                for record in batch.records_in(&section) {
                    let record = record.map_err(|error| {
                        ClientError::InvalidAnswer(InvalidAnswer::Records(error))
                    })?;
                    let record_offset = base + u64::from(record.offset_delta);
                    // The first batch may start before the asked offset; the end is where this
                    // consumer was told to stop.
                    if record_offset < offset || end.is_some_and(|end| record_offset >= end) {
                        continue;
                    }
                    let share = |bytes: &[u8]| section.slice_ref(bytes);
                    let timestamp = match batch.timestamp_type() {
                        TimestampType::CreateTime => record.timestamp,
                        TimestampType::LogAppendTime => batch.append_time(),
                    };
                    if until_time.is_some_and(|until| timestamp >= until) {
                        // The end: what came before goes out, then this partition is done.
                        if !records.is_empty() {
                            let _ = self.sender.send(Chunk::Records(records)).await;
                        }
                        return Ok(());
                    }
                    records.push(ConsumedRecord {
                        partition: self.partition,
                        offset: record_offset,
                        timestamp,
                        key: record.key.map(share),
                        value: record.value.map(share),
                        headers: record
                            .headers
                            .iter()
                            .map(|header| (header.name.to_owned(), header.value.map(share)))
                            .collect(),
                    });
                }
                offset = offset.max(batch.next_offset().0);
            }
            if !records.is_empty() && self.sender.send(Chunk::Records(records)).await.is_err() {
                return Ok(());
            }
        }
    }
}
