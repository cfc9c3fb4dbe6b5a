//! A shard: one glommio executor owning a disjoint set of partitions, its TCP listener, its
//! connections, and its copy of the node's metadata.
//!
//! Invariants: nothing on the data path crosses shards or takes a lock — a request for a
//! partition of another shard is answered `NotOwner` with that shard's endpoint; appends from
//! one connection are applied in the order their frames arrived (the append happens before
//! the next frame is read); no `RefCell` borrow is held across an await; every queue is
//! bounded (frames in flight per connection, waiters per partition, connections per shard)
//! and reading stops while the shard's unsynced bytes exceed its budget.

use std::cell::RefCell;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{future, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use spate_core::recovery::Recovery;
use spate_core::{
    DeleteRecordsError, FetchError, FetchPlan, FetchWaitError, PartitionKey, PartitionLog, Storage,
};
use spate_format::{batches, Offset};
use spate_proto::{
    DeleteRecordsRequest, DeleteRecordsResponse, ErrorCode, ErrorDetail, ErrorResponse,
    FetchRequest, FetchResponse, FindRecordRequest, FindRecordResponse, Frame, FrameDecoder,
    ListOffsetsRequest, ListOffsetsResponse, MetadataResponse, OffsetSpec, PartitionId,
    PartitionMetadata, ProduceRequest, ProduceResponse, RecordTarget, Request, Response, Setting,
    ShardId, ShardInfo, TopicMetadata, DELETE_RECORDS_TO_HIGH_WATERMARK,
};

use crate::config::NodeConfig;
use crate::connections::{Connections, Registration};
use crate::coordinator::{AdminClient, Update};
use crate::inbound::Inbound;
use crate::metadata::{Metadata, Topic};
use crate::ownership::PartitionTable;
use crate::partition::{now, Budget, DeleteRecordsResult, Partition, ProduceResult};
use crate::storage::{list_dir, DmaStorage};

/// Partitions one shard recovers at a time (at startup and when metadata changes). Each reads
/// at most `RECOVERY_READ_BYTES` (4 MiB) at once, so recovery holds at most 64 MiB of reads.
const RECOVERY_CONCURRENCY: u64 = 16;

/// A closing partition's in-flight writes and syncs get up to 500 × 10 ms = 5 s to finish
/// before its files close (what is not durable by then is not acknowledged).
const CLOSE_SETTLE_CHECKS: u32 = 500;
const CLOSE_SETTLE_CHECK: Duration = Duration::from_millis(10);

/// The directory of a partition.
pub fn partition_dir(data_dir: &std::path::Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join("topics").join(format!("{topic}-{partition}"))
}

type Pending = Pin<Box<dyn Future<Output = Response>>>;

/// Longest a connection waits for bytes before it checks its timeouts again (requests that
/// finish while it waits make it idle).
const TIMEOUT_CHECK: Duration = Duration::from_secs(1);

/// Free space in the data directory before a partition fenced by ENOSPC is recovered by
/// itself: room for several preallocation steps, so it does not fence again at once.
pub const RECOVERY_FREE_BYTES_MIN: u64 = 4 << 20;

/// How often each shard looks for fenced partitions to recover.
pub const FENCE_CHECK: Duration = Duration::from_secs(2);

/// What ended a connection's wait for bytes.
enum Wake {
    Read(std::io::Result<usize>),
    Evicted,
    Timer,
}

/// A decoded request, with the partition it names when it names one (resolved once, at
/// arrival, and carried to the answer).
enum Resolved {
    Partition(Rc<Partition>, Request),
    Shard(Request),
}

/// What dispatching a frame produced: an answer now, or one to wait for.
enum Dispatched {
    Now(Response),
    Later(Pending),
}

/// An answer that comes from `answer` (an async operation of the shard).
fn later<T: 'static>(
    api_key: u16,
    answer: impl Future<Output = Result<T, ErrorResponse>> + 'static,
    wrap: fn(T) -> Response,
) -> Dispatched {
    Dispatched::Later(Box::pin(async move {
        match answer.await {
            Ok(response) => wrap(response),
            Err(error) => Response::Error { api_key, error },
        }
    }))
}

/// An answer now, or one a partition sends once an acknowledgement is due (produce,
/// DeleteRecords); a closed channel means the partition closed.
#[allow(clippy::type_complexity)]
fn now_or_waited<T: 'static>(
    api_key: u16,
    outcome: Result<
        Result<T, local_channel::LocalReceiver<Result<T, ErrorResponse>>>,
        ErrorResponse,
    >,
    wrap: fn(T) -> Response,
) -> Dispatched {
    match outcome {
        Ok(Ok(response)) => Dispatched::Now(wrap(response)),
        Ok(Err(receiver)) => later(
            api_key,
            async move {
                receiver
                    .recv()
                    .await
                    .unwrap_or_else(|| Err(error(ErrorCode::ShuttingDown, "the partition closed")))
            },
            wrap,
        ),
        Err(error) => Dispatched::Now(Response::Error { api_key, error }),
    }
}

#[derive(Debug)]
pub struct Shard {
    pub id: ShardId,
    pub config: Rc<NodeConfig>,
    pub endpoints: Vec<String>,
    metadata: RefCell<Rc<Metadata>>,
    /// The unsynced bytes of the shard's partitions against `unflushed_bytes`.
    budget: Rc<Budget>,
    partitions: RefCell<PartitionTable>,
    /// Partitions being opened (recovering) right now.
    opening: RefCell<std::collections::HashSet<PartitionKey>>,
    connections: Rc<Connections>,
    pub shutdown: Arc<AtomicBool>,
    admin: AdminClient,
    /// The device buffers every partition's writes are copied into.
    write_buffers: Rc<crate::storage::WriteBuffers>,
}

/// Fetched records at least this long are written to the connection as they are, after the
/// answer's header (a second write); shorter ones are copied behind it (one write).
const SHARED_ANSWER_BYTES_MIN: usize = 16 << 10;

/// An answer's frame as the connection's writer sends it: a head and the records after it.
fn answer_frame(response: &Response, correlation: u64) -> (Bytes, Bytes) {
    match response {
        Response::Fetch(fetch) if fetch.records.len() >= SHARED_ANSWER_BYTES_MIN => {
            response.to_frame_parts(correlation)
        }
        _ => (response.to_frame(correlation), Bytes::new()),
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(code, message)
}

fn effective(setting: Setting, default: Option<u64>) -> Option<u64> {
    match setting {
        Setting::Default => default,
        Setting::Unlimited => None,
        Setting::Value(value) => Some(value),
    }
}

impl Shard {
    pub fn new(
        id: ShardId,
        config: Rc<NodeConfig>,
        endpoints: Vec<String>,
        metadata: Metadata,
        shutdown: Arc<AtomicBool>,
        admin: AdminClient,
    ) -> Self {
        let budget = config.unflushed_bytes;
        Shard {
            id,
            config,
            endpoints,
            metadata: RefCell::new(Rc::new(metadata)),
            budget: Rc::new(Budget::new(budget)),
            partitions: RefCell::new(PartitionTable::default()),
            opening: RefCell::new(std::collections::HashSet::new()),
            connections: Rc::new(Connections::default()),
            shutdown,
            admin,
            write_buffers: Rc::default(),
        }
    }

    /// Runs `f` on a partition's log (never across an await), if the partition is open.
    pub fn with_log<R>(
        &self,
        key: &PartitionKey,
        f: impl FnOnce(&mut PartitionLog) -> R,
    ) -> Option<R> {
        let partition = self
            .partitions
            .borrow()
            .get(&key.topic, key.partition)
            .cloned()?;
        Some(partition.with_log(f))
    }

    pub fn metadata(&self) -> Rc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// Waits until the shard's unsynced bytes are within its budget (back-pressure).
    pub(crate) async fn within_budget(&self) {
        self.budget.within().await;
    }

    /// Waits while `len` more bytes would not fit in the partition's write buffer
    /// (`PARTITION_BUFFER_BYTES_MAX`, the log's `has_room`): the connection stops reading
    /// (back-pressure) instead of the producer getting `Busy`. Waiters queue in arrival
    /// order (the partition's room gate); the caller appends before awaiting anything else,
    /// so the room found is still there.
    pub(crate) async fn within_room(&self, partition: &Partition, len: u64) {
        let Ok(_turn) = partition.room_gate.clone().acquire_static_permit(1).await else {
            return;
        };
        while !partition.log().has_room(len) && !partition.is_stopped() {
            self.budget.wait_for_progress().await;
        }
    }

    /// The log settings of a partition of `topic`, when the shard owns `owned` partitions
    /// (they share the shard's tail cache).
    fn log_config(&self, topic: &Topic, owned: usize) -> spate_core::LogConfig {
        let segment_bytes = match topic.segment_bytes {
            Setting::Value(value) => u32::try_from(value).unwrap_or(self.config.segment_bytes),
            _ => self.config.segment_bytes,
        };
        let mut config = self.config.log_config(
            effective(topic.retention_ms, self.config.retention_ms),
            effective(topic.retention_bytes, self.config.retention_bytes),
            segment_bytes,
        );
        config.tail_cache_bytes = self.config.tail_cache_bytes / owned.max(1) as u64;
        config
    }

    /// Opens (recovering from disk) every partition this shard owns and does not have open,
    /// and closes those it no longer owns. Called at startup and on every metadata update.
    pub async fn apply_metadata(self: &Rc<Self>, metadata: Metadata) {
        let metadata = Rc::new(metadata);
        *self.metadata.borrow_mut() = metadata.clone();
        let owned = metadata
            .topics
            .values()
            .map(|topic| {
                topic
                    .shards
                    .iter()
                    .filter(|shard| **shard == self.id)
                    .count()
            })
            .sum::<usize>();
        let mut wanted = Vec::new();
        for (name, topic) in &metadata.topics {
            for (partition, shard) in topic.shards.iter().enumerate() {
                if *shard == self.id {
                    let key = PartitionKey {
                        topic: name.clone(),
                        partition: u32::try_from(partition).unwrap_or(0),
                    };
                    wanted.push((key, self.log_config(topic, owned)));
                }
            }
        }
        let open: Vec<PartitionKey> = self.partitions.borrow().keys();
        for key in open {
            let still = wanted.iter().any(|(wanted, _)| *wanted == key);
            if !still {
                self.close_partition(&key, metadata.topics.contains_key(&key.topic))
                    .await;
            }
        }
        // Partitions recover concurrently, a bounded number at a time: a restart with many
        // partitions waits for the disk's queue, not for each partition's round trips, and
        // the memory recovery reads into stays bounded.
        let permits = Rc::new(Semaphore::new(RECOVERY_CONCURRENCY));
        let mut opening = Vec::new();
        for (key, config) in wanted {
            let present = self.partitions.borrow().contains(&key);
            if present {
                self.with_log(&key, |log| log.set_config(config.clone()));
                continue;
            }
            let Ok(permit) = permits.clone().acquire_static_permit(1).await else {
                break;
            };
            let shard = self.clone();
            opening.push(glommio::spawn_local(async move {
                shard.open_partition(key, config).await;
                drop(permit);
            }));
        }
        for task in opening {
            task.await;
        }
    }

    async fn close_partition(&self, key: &PartitionKey, keep_files: bool) {
        let partition = self.partitions.borrow_mut().remove(key);
        if let Some(partition) = partition {
            // Make everything appended durable before the files close.
            partition.with_log(|log| log.handle_flush(now()));
            partition.close();
            // Give in-flight syncs a moment to finish before the files go.
            for _ in 0..CLOSE_SETTLE_CHECKS {
                if partition.settled() {
                    break;
                }
                glommio::timer::sleep(CLOSE_SETTLE_CHECK).await;
            }
            partition.release_budget();
            let reader = partition.storage.borrow().reader();
            reader.close().await;
        }
        if !keep_files {
            let dir = partition_dir(&self.config.data_dir, &key.topic, key.partition);
            let shown = dir.display().to_string();
            let removed = glommio::executor()
                .spawn_blocking(move || std::fs::remove_dir_all(&dir))
                .await;
            match removed {
                Ok(()) => tracing::info!(dir = %shown, "deleted partition directory"),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::error!(dir = %shown, "cannot delete partition directory: {error}");
                }
            }
        }
    }

    /// Opens a partition unless it is being opened already (a metadata update and a retried
    /// recovery may both want it; two drivers on one directory would corrupt it).
    async fn open_partition(self: &Rc<Self>, key: PartitionKey, config: spate_core::LogConfig) {
        if !self.opening.borrow_mut().insert(key.clone()) {
            return;
        }
        self.open_partition_once(key.clone(), config).await;
        self.opening.borrow_mut().remove(&key);
    }

    async fn open_partition_once(
        self: &Rc<Self>,
        key: PartitionKey,
        config: spate_core::LogConfig,
    ) {
        if self.partitions.borrow().contains(&key) {
            return;
        }
        let dir = partition_dir(&self.config.data_dir, &key.topic, key.partition);
        if let Err(error) = std::fs::create_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), "cannot create partition directory: {error}");
            return;
        }
        let (doorbell, bell) = local_channel::new_bounded(1);
        let doorbell = Rc::new(doorbell);
        let mut storage =
            DmaStorage::new(dir.clone(), doorbell.clone(), self.write_buffers.clone());
        let listing = match list_dir(&dir) {
            Ok(listing) => listing,
            Err(error) => {
                tracing::error!(dir = %dir.display(), "cannot list partition directory: {error}");
                return;
            }
        };
        tracing::debug!(topic = %key.topic, partition = key.partition, files = listing.len(), "recovering");
        let mut recovery = Recovery::new(config, &listing);
        let result = loop {
            while let Some(request) = recovery.poll_io() {
                storage.submit(request);
            }
            if let Some(result) = recovery.poll_done() {
                break result;
            }
            tracing::trace!(topic = %key.topic, partition = key.partition, "recovery waits for storage");
            if bell.recv().await.is_none() {
                return;
            }
            while let Some(done) = storage.poll_done() {
                recovery.handle_io_done(done);
            }
        };
        let recovered = match result {
            Ok(recovered) => recovered,
            Err(error) => {
                tracing::error!(topic = %key.topic, partition = key.partition, "recovery failed, partition not served: {error}");
                return;
            }
        };
        let report = &recovered.report;
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(
                topic = %key.topic,
                partition = key.partition,
                segment = torn.segment.0,
                position = torn.position,
                discarded = torn.bytes_discarded,
                "truncated a torn tail (never acknowledged): {}",
                torn.reason
            );
        }
        if let Some(corruption) = &report.corruption {
            tracing::error!(
                topic = %key.topic,
                partition = key.partition,
                "corruption of acknowledged data, partition fenced (reads below it still served): {corruption}"
            );
            self.persist_fence(&key, corruption).await;
        }
        for base in &report.rebuilt_indexes {
            tracing::info!(topic = %key.topic, partition = key.partition, segment = base.0, "rebuilt segment indexes");
        }
        tracing::debug!(
            topic = %key.topic,
            partition = key.partition,
            segments = report.segments,
            high_watermark = recovered.log.high_watermark().0,
            "partition open"
        );
        let mut recovered = recovered;
        if recovered.log.fenced().is_none() {
            if let Some(reason) = crate::fence::load(&dir) {
                tracing::error!(
                    topic = %key.topic,
                    partition = key.partition,
                    "partition fenced: {reason}"
                );
                recovered.log.handle_corruption(reason);
            }
        }
        let partition = Partition::new(
            key.clone(),
            recovered.log,
            storage,
            doorbell,
            self.budget.clone(),
        );
        self.partitions.borrow_mut().insert(partition.clone());
        glommio::spawn_local(partition.drive(bell)).detach();
    }

    /// Re-runs recovery, from what is on the media, for fenced partitions: all of them when
    /// `requested` (the operator's SIGHUP), otherwise those fenced by ENOSPC once the data
    /// directory has `RECOVERY_FREE_BYTES_MIN` free. A failed `fdatasync` is never retried:
    /// the partition's files are closed and everything is read back from the disk, as at a
    /// start. A recorded corruption fence (`FENCED`) is found again by the new recovery.
    pub async fn retry_fenced(self: &Rc<Self>, requested: bool) {
        let fenced: Vec<(PartitionKey, spate_core::FenceReason)> = {
            let keys: Vec<PartitionKey> = self.partitions.borrow().keys();
            keys.into_iter()
                .filter_map(|key| {
                    let reason = self.with_log(&key, |log| log.fenced().cloned()).flatten()?;
                    Some((key, reason))
                })
                .collect()
        };
        if fenced.is_empty() {
            return;
        }
        let free = crate::storage::free_bytes(&self.config.data_dir);
        let mut closed = 0;
        for (key, reason) in fenced {
            let no_space = matches!(&reason, spate_core::FenceReason::Storage(error)
                if error.errno == Some(libc::ENOSPC));
            let retry = requested || (no_space && free >= RECOVERY_FREE_BYTES_MIN);
            if !retry {
                continue;
            }
            tracing::warn!(
                topic = %key.topic,
                partition = key.partition,
                free_bytes = free,
                "re-running recovery of a fenced partition ({reason})"
            );
            self.close_partition(&key, true).await;
            closed += 1;
        }
        if closed > 0 {
            let metadata = (*self.metadata()).clone();
            self.apply_metadata(metadata).await;
        }
    }

    /// Fences a partition for damage found in acknowledged data (a fetch or the background
    /// verification met it), recording the fence first so a restart keeps it.
    pub(crate) async fn fence_corrupt(
        &self,
        partition: &Partition,
        reason: spate_core::FenceReason,
    ) {
        self.persist_fence(&partition.key, &reason).await;
        partition.with_log(|log| log.handle_corruption(reason));
        partition.ring();
    }

    /// The partitions open on this shard now.
    pub(crate) fn partition_list(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().partitions().cloned().collect()
    }

    /// Whether `partition` is still open (not closed, deleted or re-opened since).
    pub(crate) fn is_current(&self, partition: &Rc<Partition>) -> bool {
        self.partitions
            .borrow()
            .get(&partition.key.topic, partition.key.partition)
            .is_some_and(|open| Rc::ptr_eq(open, partition))
    }

    /// Records a corruption fence in the partition's directory so a restart keeps it.
    async fn persist_fence(&self, key: &PartitionKey, reason: &spate_core::FenceReason) {
        let dir = partition_dir(&self.config.data_dir, &key.topic, key.partition);
        let reason = reason.clone();
        let shown = dir.display().to_string();
        let stored = glommio::executor()
            .spawn_blocking(move || crate::fence::persist(&dir, &reason))
            .await;
        if let Err(error) = stored {
            tracing::error!(dir = %shown, "cannot record the fence (a restart would lift it): {error}");
        }
    }

    /// Closes every partition after letting in-flight syncs finish.
    pub async fn close_all(&self) {
        let keys: Vec<PartitionKey> = self.partitions.borrow().keys();
        for key in keys {
            self.close_partition(&key, true).await;
        }
    }

    /// Applies retention to every partition.
    pub fn retention(&self) {
        let time = now();
        let partitions: Vec<Rc<Partition>> =
            self.partitions.borrow().partitions().cloned().collect();
        for partition in partitions {
            let deleted = partition.with_log(|log| log.handle_retention(time));
            if deleted > 0 {
                partition.ring();
            }
        }
    }

    // ---- Connections ----

    /// Accepts connections until shutdown.
    pub async fn accept(self: Rc<Self>, listener: TcpListener) {
        loop {
            let accepted = future::or(async { Some(listener.accept().await) }, async {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                None
            })
            .await;
            if self.shutdown.load(Ordering::Relaxed) {
                return;
            }
            let stream = match accepted {
                None => continue,
                Some(Ok(stream)) => stream,
                Some(Err(error)) => {
                    tracing::warn!("accept failed: {error}");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let max = self.config.max_connections as usize;
            // At the limit, the connection silent longest makes room (silent ones cannot
            // hold the port forever, and a reconnecting gateway always gets in).
            if self.connections.len() >= max && !self.connections.evict_longest_silent() {
                let refused = self.connections.refused();
                if refused > 0 {
                    tracing::warn!(
                        max = self.config.max_connections,
                        refused,
                        "connection limit reached and every connection is active; refusing connections"
                    );
                }
                let mut stream = stream;
                let refusal =
                    Response::error(0, ErrorCode::Busy, "connection limit reached").to_frame(0);
                let _ = stream.write_all(&refusal).await;
                continue;
            }
            let _ = stream.set_nodelay(true);
            let registration = self.connections.register();
            let shard = self.clone();
            glommio::spawn_local(async move {
                let peer = stream
                    .peer_addr()
                    .map(|addr| addr.to_string())
                    .unwrap_or_default();
                if let Err(error) = shard.clone().serve(stream, &registration).await {
                    tracing::debug!(peer = %peer, "connection closed: {error}");
                }
                drop(registration);
            })
            .detach();
        }
    }

    async fn serve(
        self: Rc<Self>,
        stream: TcpStream,
        registration: &Registration,
    ) -> std::io::Result<()> {
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let in_flight = self.config.frames_in_flight as usize;
        let (responses, outgoing) = local_channel::new_bounded::<(Bytes, Bytes)>(in_flight);
        let responses = Rc::new(responses);
        let writer_task = glommio::spawn_local(async move {
            while let Some((head, rest)) = outgoing.recv().await {
                if writer.write_all(&head).await.is_err() || writer.write_all(&rest).await.is_err()
                {
                    break;
                }
            }
            let _ = writer.close().await;
        });
        let permits = Rc::new(Semaphore::new(u64::from(self.config.frames_in_flight)));
        let decoder = FrameDecoder::new(self.config.frame_size_max);
        let mut inbound = Inbound::default();
        let mut last_read = Instant::now();
        let result = 'connection: loop {
            loop {
                let frame = match inbound.next_frame(&decoder) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(frame_error) => {
                        // The stream cannot be resynchronised: answer and close.
                        let answer = Response::frame_error(inbound.buffered(), &frame_error);
                        let _ = responses.send((answer, Bytes::new())).await;
                        break 'connection Ok(());
                    }
                };
                self.within_budget().await;
                let Ok(permit) = permits.clone().acquire_static_permit(1).await else {
                    break 'connection Ok(());
                };
                let correlation = frame.head.correlation_id;
                let resolved = self.resolve(&frame);
                if let Ok(Resolved::Partition(partition, Request::Produce(produce))) = &resolved {
                    // Nothing awaits between this and the append below, so the room it found
                    // is still there.
                    self.within_room(partition, produce.batch.len() as u64)
                        .await;
                }
                match self.dispatch(frame.head.api_key, resolved) {
                    Dispatched::Now(response) => {
                        drop(permit);
                        if responses
                            .send(answer_frame(&response, correlation))
                            .await
                            .is_err()
                        {
                            break 'connection Ok(());
                        }
                    }
                    Dispatched::Later(pending) => {
                        let responses = responses.clone();
                        glommio::spawn_local(async move {
                            let response = pending.await;
                            let _ = responses.send(answer_frame(&response, correlation)).await;
                            drop(permit);
                        })
                        .detach();
                    }
                }
            }
            if self.shutdown.load(Ordering::Relaxed) {
                break Ok(());
            }
            let in_flight = self.config.frames_in_flight
                - u32::try_from(permits.available()).unwrap_or(self.config.frames_in_flight);
            registration.in_flight.set(in_flight);
            let silent = last_read.elapsed();
            let frame_timeout = Duration::from_millis(self.config.frame_timeout_ms);
            let idle_timeout = Duration::from_millis(self.config.idle_timeout_ms);
            // A started frame must keep arriving; a connection with nothing to do goes away.
            let (limit, why) = if inbound.is_empty() {
                (idle_timeout, "idle")
            } else {
                (frame_timeout, "a started frame stalled")
            };
            if silent >= limit && (in_flight == 0 || !inbound.is_empty()) {
                tracing::debug!(
                    silent_ms = silent.as_millis(),
                    "closing a connection: {why}"
                );
                break Ok(());
            }
            let wait = limit
                .saturating_sub(silent)
                .clamp(Duration::from_millis(1), TIMEOUT_CHECK);
            let woke = future::or(
                async { Wake::Read(inbound.read(&mut reader, &decoder).await) },
                future::or(
                    async {
                        let _ = registration.closed.recv().await;
                        Wake::Evicted
                    },
                    async {
                        glommio::timer::sleep(wait).await;
                        Wake::Timer
                    },
                ),
            )
            .await;
            match woke {
                Wake::Read(Ok(0)) => break Ok(()),
                Wake::Read(Ok(_)) => {}
                Wake::Read(Err(error)) => break Err(error),
                Wake::Evicted => {
                    tracing::debug!("closing the connection silent longest to make room");
                    break Ok(());
                }
                Wake::Timer => continue,
            }
            last_read = Instant::now();
            registration.touch();
        };
        // Let the answers already on their way go out, then close.
        let _ = permits
            .acquire(u64::from(self.config.frames_in_flight))
            .await;
        drop(responses);
        writer_task.await;
        result
    }

    /// Decodes a frame (once) and finds the partition it names (once); the error to answer
    /// with otherwise.
    fn resolve(&self, frame: &Frame) -> Result<Resolved, ErrorResponse> {
        let request = Request::decode(frame)
            .map_err(|problem| error(ErrorCode::from(&problem), problem.to_string()))?;
        let (topic, partition) = match &request {
            Request::Produce(request) => (&request.topic, request.partition),
            Request::Fetch(request) => (&request.topic, request.partition),
            Request::ListOffsets(request) => (&request.topic, request.partition),
            Request::FindRecord(request) => (&request.topic, request.partition),
            Request::DeleteRecords(request) => (&request.topic, request.partition),
            Request::Metadata(_)
            | Request::CreateTopic(_)
            | Request::DeleteTopic(_)
            | Request::AllocateProducerIds(_)
            | Request::AutoCreateTopic(_)
            | Request::AlterTopic(_) => return Ok(Resolved::Shard(request)),
        };
        let partition = self.owned(topic, partition)?;
        Ok(Resolved::Partition(partition, request))
    }

    fn dispatch(
        self: &Rc<Self>,
        api_key: u16,
        resolved: Result<Resolved, ErrorResponse>,
    ) -> Dispatched {
        let resolved = match resolved {
            Ok(resolved) => resolved,
            Err(error) => return Dispatched::Now(Response::Error { api_key, error }),
        };
        let fail = move |error: ErrorResponse| Response::Error { api_key, error };
        match resolved {
            Resolved::Shard(Request::Metadata(request)) => {
                Dispatched::Now(match self.describe(&request.topics) {
                    Ok(response) => Response::Metadata(response),
                    Err(error) => fail(error),
                })
            }
            Resolved::Shard(
                request @ (Request::CreateTopic(_)
                | Request::DeleteTopic(_)
                | Request::AllocateProducerIds(_)
                | Request::AutoCreateTopic(_)
                | Request::AlterTopic(_)),
            ) => {
                let admin = self.admin.clone();
                Dispatched::Later(Box::pin(async move { admin.call(request, api_key).await }))
            }
            Resolved::Partition(partition, Request::Produce(request)) => now_or_waited(
                api_key,
                self.produce(&partition, &request),
                Response::Produce,
            ),
            Resolved::Partition(partition, Request::Fetch(request)) => {
                let shard = self.clone();
                later(
                    api_key,
                    async move { shard.fetch(&partition, &request).await },
                    Response::Fetch,
                )
            }
            Resolved::Partition(partition, Request::ListOffsets(request)) => {
                let shard = self.clone();
                later(
                    api_key,
                    async move { shard.list_offsets(&partition, request).await },
                    Response::ListOffsets,
                )
            }
            Resolved::Partition(partition, Request::FindRecord(request)) => {
                let shard = self.clone();
                later(
                    api_key,
                    async move { shard.find_record(&partition, request).await },
                    Response::FindRecord,
                )
            }
            Resolved::Partition(partition, Request::DeleteRecords(request)) => now_or_waited(
                api_key,
                self.delete_records(&partition, &request),
                Response::DeleteRecords,
            ),
            // `resolve` never pairs these.
            Resolved::Shard(_) | Resolved::Partition(..) => Dispatched::Now(fail(error(
                ErrorCode::Internal,
                "request routed to the wrong handler",
            ))),
        }
    }

    fn describe(&self, names: &[String]) -> Result<MetadataResponse, ErrorResponse> {
        let metadata = self.metadata();
        let shards = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| ShardInfo {
                shard: ShardId(u16::try_from(index).unwrap_or(u16::MAX)),
                endpoint: endpoint.clone(),
            })
            .collect();
        let selected: Vec<&String> = if names.is_empty() {
            metadata.topics.keys().collect()
        } else {
            names.iter().collect()
        };
        let mut topics = Vec::with_capacity(selected.len());
        for name in selected {
            let topic = metadata
                .topics
                .get(name)
                .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("unknown topic {name:?}")))?;
            let resolve = |setting, default: Option<u64>| match effective(setting, default) {
                Some(value) => Setting::Value(value),
                None => Setting::Unlimited,
            };
            topics.push(TopicMetadata {
                name: name.clone(),
                retention_ms: resolve(topic.retention_ms, self.config.retention_ms),
                retention_bytes: resolve(topic.retention_bytes, self.config.retention_bytes),
                segment_bytes: resolve(
                    topic.segment_bytes,
                    Some(u64::from(self.config.segment_bytes)),
                ),
                partitions: topic
                    .shards
                    .iter()
                    .enumerate()
                    .map(|(partition, shard)| PartitionMetadata {
                        partition: PartitionId(u32::try_from(partition).unwrap_or(u32::MAX)),
                        shard: *shard,
                    })
                    .collect(),
            });
        }
        Ok(MetadataResponse { shards, topics })
    }

    /// The partition, if this shard owns it; otherwise the error to answer with.
    pub(crate) fn owned(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<Rc<Partition>, ErrorResponse> {
        let metadata = self.metadata();
        let owner = metadata
            .topics
            .get(topic)
            .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("unknown topic {topic:?}")))?
            .shards
            .get(partition.0 as usize)
            .copied()
            .ok_or_else(|| {
                error(
                    ErrorCode::UnknownPartition,
                    format!("topic {topic:?} has no partition {partition}"),
                )
            })?;
        if owner != self.id {
            let endpoint = self
                .endpoints
                .get(usize::from(owner.0))
                .cloned()
                .unwrap_or_default();
            return Err(error(
                ErrorCode::NotOwner,
                format!("partition {topic}-{partition} is on shard {owner} at {endpoint}"),
            )
            .with_detail(ErrorDetail::NotOwner {
                shard: owner,
                endpoint,
            }));
        }
        self.partitions
            .borrow()
            .get(topic, partition.0)
            .cloned()
            .ok_or_else(|| {
                error(
                    ErrorCode::Storage,
                    format!(
                    "partition {topic}-{partition} could not be opened on this node; see its log"
                ),
                )
            })
    }

    /// Appends now (so frames of one connection keep their order); the answer is immediate
    /// for `none`, or comes when the watermark of the requested level passes the batch.
    #[allow(clippy::type_complexity)]
    pub(crate) fn produce(
        &self,
        partition: &Partition,
        request: &ProduceRequest,
    ) -> Result<Result<ProduceResponse, local_channel::LocalReceiver<ProduceResult>>, ErrorResponse>
    {
        let key = &partition.key;
        if partition.is_closing() {
            // Closed (deleted, moved, shutting down) while this request waited for room.
            return Err(error(ErrorCode::ShuttingDown, "the partition closed"));
        }
        let appended = partition.with_log(|log| {
            let ticket = log.handle_append(now(), &request.batch, request.durability)?;
            Ok::<_, spate_core::AppendError>((ticket, log.log_start()))
        });
        let (ticket, log_start) = appended.map_err(|append| match append {
            spate_core::AppendError::InvalidBatch(batch) => {
                let code = match batch {
                    spate_format::BatchError::Length { length, max, .. } if length > max => {
                        ErrorCode::BatchTooLarge
                    }
                    _ => ErrorCode::InvalidBatch,
                };
                error(code, format!("invalid batch: {batch}"))
            }
            spate_core::AppendError::Fenced(reason) => error(
                ErrorCode::PartitionFenced,
                format!(
                    "partition {}-{} is fenced: {reason}",
                    key.topic, key.partition
                ),
            ),
            spate_core::AppendError::BufferFull { .. } => {
                error(ErrorCode::Busy, append.to_string())
            }
        })?;
        let response = ProduceResponse {
            base_offset: ticket.base_offset.0,
            append_time: ticket.append_time.0,
            log_start_offset: log_start.0,
        };
        partition.ring();
        match ticket.waiter {
            None => Ok(Ok(response)),
            Some(waiter) => Ok(Err(partition.wait_ack(waiter, response))),
        }
    }

    /// Moves the log start (DeleteRecords). The answer is immediate if the log already starts
    /// there, or comes once the move is durable (the partition's `LogStartMoved`).
    #[allow(clippy::type_complexity)]
    pub(crate) fn delete_records(
        &self,
        partition: &Partition,
        request: &DeleteRecordsRequest,
    ) -> Result<
        Result<DeleteRecordsResponse, local_channel::LocalReceiver<DeleteRecordsResult>>,
        ErrorResponse,
    > {
        let key = &partition.key;
        let moved = partition.with_log(|log| {
            let offset = if request.offset == DELETE_RECORDS_TO_HIGH_WATERMARK {
                log.high_watermark()
            } else {
                Offset(request.offset)
            };
            log.handle_delete_records(offset)
                .map(|waiter| (waiter, log.log_start()))
        });
        let (waiter, log_start) = moved.map_err(|refused| match refused {
            DeleteRecordsError::AboveHighWatermark { high_watermark, .. } => error(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "cannot delete the records of {}-{} before {}: {refused}",
                    key.topic, key.partition, request.offset
                ),
            )
            .with_detail(ErrorDetail::OffsetRange {
                log_start_offset: partition.log().log_start().0,
                high_watermark: high_watermark.0,
            }),
            DeleteRecordsError::Fenced(reason) => error(
                ErrorCode::PartitionFenced,
                format!(
                    "partition {}-{} is fenced: {reason}",
                    key.topic, key.partition
                ),
            ),
        })?;
        let Some(waiter) = waiter else {
            return Ok(Ok(DeleteRecordsResponse {
                log_start_offset: log_start.0,
            }));
        };
        partition.ring();
        Ok(Err(partition.wait_start(waiter)))
    }

    async fn fetch(
        &self,
        partition: &Rc<Partition>,
        request: &FetchRequest,
    ) -> Result<FetchResponse, ErrorResponse> {
        let started = Instant::now();
        let max_wait = Duration::from_millis(u64::from(request.max_wait_ms));
        loop {
            if partition.is_stopped() {
                return Err(error(ErrorCode::ShuttingDown, "the partition closed"));
            }
            let plan = {
                let log = partition.log();
                log.handle_fetch(Offset(request.offset), request.max_bytes)
                    .map(|plan| (plan, log.high_watermark(), log.log_start()))
            };
            let (plan, high_watermark, log_start) = plan.map_err(|fetch| match fetch {
                FetchError::OutOfRange {
                    log_start,
                    high_watermark,
                    ..
                } => error(ErrorCode::OffsetOutOfRange, fetch.to_string()).with_detail(
                    ErrorDetail::OffsetRange {
                        log_start_offset: log_start.0,
                        high_watermark: high_watermark.0,
                    },
                ),
                FetchError::Corrupt { .. } => error(ErrorCode::Storage, fetch.to_string()),
            })?;
            let records = match plan {
                FetchPlan::AtEnd => Bytes::new(),
                FetchPlan::Ready(bytes) => bytes,
                FetchPlan::Read(read) => {
                    let reader = partition.storage.borrow().reader();
                    let data = reader
                        .read(read.file, read.position, read.len)
                        .await
                        .map_err(|storage| error(ErrorCode::Storage, storage.to_string()))?;
                    match read.complete(&data) {
                        Ok(bytes) => bytes,
                        Err(fetch) => {
                            if let FetchError::Corrupt {
                                segment,
                                position,
                                detail,
                            } = &fetch
                            {
                                let reason = spate_core::FenceReason::Corruption {
                                    segment: segment.clone(),
                                    position: *position,
                                    detail: detail.clone(),
                                };
                                self.fence_corrupt(partition, reason).await;
                            }
                            return Err(error(ErrorCode::Storage, fetch.to_string()));
                        }
                    }
                }
            };
            let waited = started.elapsed();
            if records.len() >= request.min_bytes.max(1) as usize
                || waited >= max_wait
                || self.shutdown.load(Ordering::Relaxed)
            {
                return Ok(FetchResponse {
                    high_watermark: high_watermark.0,
                    log_start_offset: log_start.0,
                    records,
                });
            }
            // Park until the high watermark moves or the wait is over (the log decides).
            let remaining = u32::try_from(max_wait.saturating_sub(waited).as_millis())
                .unwrap_or(u32::MAX)
                .max(1);
            let ticket = partition
                .with_log(|log| {
                    log.handle_fetch_wait(now(), Offset(request.offset), high_watermark, remaining)
                })
                .map_err(|FetchWaitError::TooMany { parked }| {
                    error(
                        ErrorCode::Busy,
                        format!("{parked} fetches are waiting on this partition (the limit)"),
                    )
                })?;
            let _ = partition.wait_fetch(ticket).recv().await;
        }
    }

    async fn list_offsets(
        &self,
        partition: &Rc<Partition>,
        request: ListOffsetsRequest,
    ) -> Result<ListOffsetsResponse, ErrorResponse> {
        let (log_start, high_watermark, scan_from) = {
            let log = partition.log();
            let start = match request.spec {
                OffsetSpec::Timestamp(timestamp) => log.timestamp_scan_start(timestamp),
                _ => None,
            };
            (log.log_start(), log.high_watermark(), start)
        };
        let offset = match request.spec {
            OffsetSpec::Earliest => log_start,
            OffsetSpec::Latest => high_watermark,
            OffsetSpec::Timestamp(timestamp) => match scan_from {
                None => high_watermark,
                Some(from) => self
                    .first_record_at_or_after(
                        partition,
                        &request.topic,
                        request.partition,
                        from,
                        timestamp,
                        high_watermark,
                    )
                    .await?
                    .map_or(high_watermark, |(offset, _)| offset),
            },
        };
        Ok(ListOffsetsResponse {
            offset: offset.0,
            log_start_offset: log_start.0,
            high_watermark: high_watermark.0,
        })
    }

    /// The first durable record at or after `from` whose timestamp is at least `timestamp`,
    /// with its timestamp, scanning batches up to the high watermark; `None` if there is none.
    async fn first_record_at_or_after(
        &self,
        target: &Rc<Partition>,
        topic: &str,
        partition: PartitionId,
        from: Offset,
        timestamp: i64,
        high_watermark: Offset,
    ) -> Result<Option<(Offset, i64)>, ErrorResponse> {
        let mut offset = from;
        loop {
            if offset >= high_watermark {
                return Ok(None);
            }
            let before = offset;
            let request = FetchRequest {
                topic: topic.to_owned(),
                partition,
                offset: offset.0,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                min_bytes: 0,
            };
            let fetched = match self.fetch(target, &request).await {
                Ok(fetched) => fetched,
                // The log start moved past the scan meanwhile (retention, DeleteRecords): go
                // on from it.
                Err(ErrorResponse {
                    code: ErrorCode::OffsetOutOfRange,
                    detail:
                        ErrorDetail::OffsetRange {
                            log_start_offset, ..
                        },
                    ..
                }) if log_start_offset > offset.0 => {
                    offset = Offset(log_start_offset);
                    continue;
                }
                Err(error) => return Err(error),
            };
            for batch in batches(&fetched.records) {
                let Ok(batch) = batch else { break };
                if batch.max_timestamp() >= timestamp && batch.last_offset() >= offset {
                    // The first record of the batch at or after the asked time (a compressed
                    // batch is decompressed, bounded, to find it; it was validated when
                    // produced, so this does not fail, and if it did the batch's start and
                    // newest timestamp are the answer).
                    let Ok(section) = batch.records_section() else {
                        return Ok(Some((
                            batch.base_offset().max(offset),
                            batch.max_timestamp(),
                        )));
                    };
                    let found = batch
                        .records_in(&section)
                        .flatten()
                        .map(|record| {
                            (
                                Offset(batch.base_offset().0 + u64::from(record.offset_delta)),
                                record.timestamp,
                            )
                        })
                        .find(|(at, time)| *time >= timestamp && *at >= offset);
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                offset = batch.next_offset();
            }
            if offset == before {
                // Nothing more to read (or nothing readable): never loop without progress.
                return Ok(None);
            }
        }
    }

    /// A record by timestamp with its offset and time (Kafka's ListOffsets by time and by
    /// newest time): the log says where to start (and, for the newest, which time); the scan
    /// finds the first record.
    async fn find_record(
        &self,
        partition: &Rc<Partition>,
        request: FindRecordRequest,
    ) -> Result<FindRecordResponse, ErrorResponse> {
        let (log_start, high_watermark, target) = {
            let log = partition.log();
            let target = match request.target {
                RecordTarget::Newest => log.max_timestamp_scan_start(),
                RecordTarget::AtOrAfter(timestamp) => log
                    .timestamp_scan_start(timestamp)
                    .map(|from| (timestamp, from)),
            };
            (log.log_start(), log.high_watermark(), target)
        };
        let found = match target {
            None => None,
            Some((timestamp, from)) => {
                self.first_record_at_or_after(
                    partition,
                    &request.topic,
                    request.partition,
                    from,
                    timestamp,
                    high_watermark,
                )
                .await?
            }
        };
        let (offset, timestamp) = found.map_or((high_watermark.0, -1), |(offset, timestamp)| {
            (offset.0, timestamp)
        });
        Ok(FindRecordResponse {
            offset,
            timestamp,
            log_start_offset: log_start.0,
            high_watermark: high_watermark.0,
        })
    }

    /// Applies a metadata update from the coordinator.
    pub async fn on_update(self: &Rc<Self>, update: Update) {
        self.apply_metadata(update.metadata).await;
    }
}
