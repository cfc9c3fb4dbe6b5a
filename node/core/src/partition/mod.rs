//! `PartitionLog`: the sans-IO state machine of one partition — appends, group commit,
//! durability levels, segment rolling, indexes, retention and fetch planning.
//!
//! Inputs are `handle_*` calls with `now` passed in; outputs are polled: `poll_io` hands out
//! storage requests, `poll_event` reports watermark moves (which are the acknowledgements).
//!
//! Invariants:
//! - Offsets are dense and assigned once, in append order.
//! - One write round is in flight at a time. A round runs in phases (prepare, write, trim,
//!   sync, indexes); a phase is handed out only after the previous one completed, so a sync
//!   never overtakes the writes it must cover (io_uring does not order them).
//! - `written` and `durable` (the high watermark) only move forward; `durable` moves only
//!   after an `fdatasync` (and a directory sync for a new file) covering the data returned.
//! - A round writes at most `ROUND_BYTES_MAX` bytes, from the sector holding the durable end:
//!   this bounds what a crash can tear (recovery's window).
//! - Segments are written oldest first: a newer segment gets data on disk only after every
//!   older one is fully written, synced, trimmed and indexed.
//! - Any storage error fences the partition: no acknowledgement for anything not already
//!   durable, no retry, every later append refused.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use spate_format::{stamp, BatchError, BatchRef, Offset};
use spate_proto::Durability;
use thiserror::Error;

use crate::config::{LogConfig, PARTITION_BUFFER_BYTES_MAX};
use crate::producers::{Check, ProducedBatch, ProducerError, ProducerStates};
use crate::storage::{align_down, IoDone, IoId, IoOutcome, IoRequest, StorageError};
use crate::tail::{CachedBatch, TailCache};
use crate::waiters::{FetchWaitError, Ticket, Waiters};
use crate::Millis;

mod fetch;
mod retention;
mod round;
mod segment;

use fetch::ReadAhead;
pub use fetch::{FetchError, FetchPlan, ReadDone, ReadPlan, READ_AHEAD_KEEP_MS};
use round::Round;
pub use segment::SHARED_BATCH_BYTES_MIN;
pub(crate) use segment::{add_index_entries, RecoveredSegment, Segment};
use segment::{take_round, FileState, Mark, PendingBatch, Raise, WriteBuffer, HEADER_SIZE};

/// Why a partition stopped accepting writes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FenceReason {
    #[error("storage error: {0}")]
    Storage(StorageError),
    #[error("a write to {file} at position {position} made no progress")]
    WriteNoProgress { file: String, position: u64 },
    #[error("corruption in segment {segment} at position {position}: {detail}")]
    Corruption {
        segment: String,
        position: u64,
        detail: String,
    },
}

/// Something the shell must know: acknowledgements are watermark moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// Every offset below `up_to` is written to the segment file (acknowledges `write`).
    Written { up_to: Offset },
    /// Every offset below `up_to` is durable: the high watermark moved (acknowledges `fsync`).
    Durable { up_to: Offset },
    /// The partition is fenced: nothing at or above `durable` will ever be acknowledged.
    Fenced {
        durable: Offset,
        reason: FenceReason,
    },
    /// A new segment starts at `base`.
    SegmentRolled { base: Offset },
    /// Retention deleted `segments` whole segments; the log now starts at `log_start`.
    SegmentsDeleted { segments: u32, log_start: Offset },
    /// The log start moved to `log_start` (DeleteRecords), durably (its marker is): this
    /// acknowledges every [`PartitionLog::handle_delete_records`] up to it. The log may start
    /// further on, where retention deleted more.
    LogStartMoved { log_start: Offset },
    /// A waiting request is answered: a produce's durability level covers its batch (emitted
    /// right after the `Written` or `Durable` that covers it, in offset order per level), or
    /// a DeleteRecords' log start is durable (right after `LogStartMoved`).
    Acked { ticket: Ticket },
    /// A waiting produce or DeleteRecords will never be acknowledged: the log is fenced
    /// (right after `Fenced`; its reason is [`PartitionLog::fenced`]).
    Refused { ticket: Ticket },
    /// A waiting `fsync` produce will not be acknowledged by this replica: it no longer leads
    /// the partition (right after [`PartitionLog::handle_deposed`]). Its batch may or may not
    /// survive under the new leader (Kafka answers NOT_LEADER_OR_FOLLOWER; an idempotent
    /// producer's resend is deduplicated).
    Deposed { ticket: Ticket },
    /// A parked fetch should look again: the high watermark or the log start passed its
    /// offset, the log was fenced, or its deadline came.
    FetchReady { ticket: Ticket },
}

/// Why the log start cannot move where asked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeleteRecordsError {
    #[error("offset {offset} is above the high watermark {high_watermark}")]
    AboveHighWatermark {
        offset: Offset,
        high_watermark: Offset,
    },
    #[error("partition is fenced: {0}")]
    Fenced(FenceReason),
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AppendError {
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("partition is fenced: {0}")]
    Fenced(FenceReason),
    #[error("{buffered} bytes are waiting to be written, the limit is {max}; retry later")]
    BufferFull { buffered: u64, max: u64 },
    #[error("{0}")]
    Producer(#[from] ProducerError),
    /// A replicated batch that does not continue the log (a follower's append).
    #[error(
        "a batch at offset {base_offset} does not continue the log, which ends at {next_offset}"
    )]
    NotContinuing {
        base_offset: Offset,
        next_offset: Offset,
    },
}

/// What an accepted append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendTicket {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub append_time: Millis,
    pub durability: Durability,
    /// For `write` and `fsync`: the acknowledgement to wait for ([`LogEvent::Acked`] or
    /// [`LogEvent::Refused`]). `none` is acknowledged by the append itself, and so is a
    /// duplicate whose first batch already reached the level.
    pub waiter: Option<Ticket>,
    /// The batch is an idempotent producer's resend of one the log holds: nothing was
    /// appended, the offsets and append time are the first one's.
    pub duplicate: bool,
}

impl AppendTicket {
    /// The offset after the batch: the ticket is acknowledged once the watermark of its
    /// durability level reaches this.
    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset.0 + 1)
    }
}

/// Why a fetch cannot be answered.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Round,
    Maintenance,
}

/// One step of the maintenance queue, run in order, each after the one before completed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Maintenance {
    /// Requests that may complete in any order.
    Io(Vec<IoRequest>),
    /// The log-start marker for this offset is durable: move the log start.
    MoveStart(Offset),
    /// Retention's removal of the segments below this offset is durable: forget the
    /// producers whose last batch lies below it (before, a crash could bring the segments
    /// back while a newer producer snapshot lacks those producers).
    ForgetProducersBelow(Offset),
}

/// The state machine of one partition's log.
#[derive(Debug)]
pub struct PartitionLog {
    config: LogConfig,
    segments: VecDeque<Segment>,
    log_start: Offset,
    next_offset: Offset,
    written: Offset,
    durable: Offset,
    /// A replicated partition's high watermark from the replication protocol (the smallest
    /// durable end over the ISR, `docs/cluster.md`); `None` on a single node. The visible
    /// end is the smaller of it and `durable`.
    replicated_end: Option<Offset>,
    write_wanted: Offset,
    fsync_wanted: Offset,
    /// When the oldest byte not yet durable was appended.
    unsynced_since: Option<Millis>,
    /// A flush was asked for (shutdown): sync everything now, whatever the interval says.
    flush_requested: bool,
    fenced: Option<FenceReason>,
    round: Option<Round>,
    maintenance: VecDeque<Maintenance>,
    maintenance_outstanding: usize,
    /// The log-start markers in the directory (normally one), oldest first.
    start_markers: Vec<Offset>,
    /// The highest log start asked for (equal to `durable_start` when no move is pending).
    start_target: Offset,
    /// The log start that a crash cannot take back: recovery's, or the newest marker made
    /// durable since. Retention's deletions raise `log_start` before their removals are
    /// synced, so `log_start` may be above it.
    durable_start: Offset,
    requests: VecDeque<IoRequest>,
    outstanding: HashMap<IoId, (Owner, IoRequest)>,
    next_io_id: u64,
    events: VecDeque<LogEvent>,
    tail: TailCache,
    /// What the last fetch's read brought in beyond its answer, for the next fetch.
    read_ahead: Option<ReadAhead>,
    /// Appends since the last `schedule`, at this time: the next `poll_io` schedules.
    deferred_schedule: Option<Millis>,
    /// Acknowledgements and parked fetches waiting on the watermarks.
    waiters: Waiters,
    /// The idempotent producers' last batches (appended, maybe not yet durable).
    producers: ProducerStates,
}

impl PartitionLog {
    /// A new, empty partition whose first offset is `start`. Its first segment file is
    /// created by the first write round.
    pub fn new(config: LogConfig, start: Offset) -> Self {
        Self::starting_at(config, start, Vec::new())
    }

    /// A new, empty partition at `start` whose directory holds these log-start markers.
    pub(crate) fn starting_at(
        config: LogConfig,
        start: Offset,
        start_markers: Vec<Offset>,
    ) -> Self {
        let mut segments = VecDeque::new();
        let mut first = Segment::new(start);
        first.finalized = false;
        segments.push_back(first);
        Self::assemble(
            config,
            segments,
            start,
            start_markers,
            None,
            ProducerStates::default(),
        )
    }

    pub(crate) fn assemble(
        config: LogConfig,
        segments: VecDeque<Segment>,
        log_start: Offset,
        start_markers: Vec<Offset>,
        fenced: Option<FenceReason>,
        mut producers: ProducerStates,
    ) -> Self {
        assert!(!segments.is_empty(), "a log has at least one segment");
        producers.forget_below(log_start);
        let next_offset = segments
            .back()
            .map_or(log_start, |segment| segment.next_offset);
        let tail = TailCache::new(config.tail_cache_bytes);
        PartitionLog {
            config,
            segments,
            log_start,
            next_offset,
            written: next_offset,
            durable: next_offset,
            replicated_end: None,
            write_wanted: next_offset,
            fsync_wanted: next_offset,
            unsynced_since: None,
            flush_requested: false,
            fenced,
            round: None,
            maintenance: VecDeque::new(),
            maintenance_outstanding: 0,
            start_markers,
            start_target: log_start,
            durable_start: log_start,
            requests: VecDeque::new(),
            outstanding: HashMap::new(),
            next_io_id: 0,
            events: VecDeque::new(),
            tail,
            read_ahead: None,
            deferred_schedule: None,
            waiters: Waiters::default(),
            producers,
        }
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the settings (topic configuration changed). Takes effect for later appends,
    /// rolls and retention runs.
    pub fn set_config(&mut self, config: LogConfig) {
        self.tail = TailCache::new(config.tail_cache_bytes);
        self.config = config;
    }

    pub fn log_start(&self) -> Offset {
        self.log_start
    }

    /// The high watermark: every offset below it is durable and visible — on a single node the
    /// durable end; on a replicated partition also at most the replicated high watermark
    /// ([`PartitionLog::handle_replicated_high_watermark`]). Consumers' fetches, list-offsets,
    /// DeleteRecords, parked fetches and `fsync` acknowledgements follow it.
    pub fn high_watermark(&self) -> Offset {
        match self.replicated_end {
            None => self.durable,
            Some(replicated) => replicated.min(self.durable),
        }
    }

    /// Every offset below this is durable in this replica's own files (what a follower
    /// reports to its leader; on a single node, the high watermark).
    pub fn durable_end(&self) -> Offset {
        self.durable
    }

    /// The partition is replicated and its high watermark, from the replication protocol, is
    /// `high_watermark` (it only grows; a lower value changes nothing). The first call turns
    /// the replicated mode on. What the visible end passes is acknowledged (`fsync`) and wakes
    /// parked fetches, as a durable end does on a single node.
    pub fn handle_replicated_high_watermark(&mut self, high_watermark: Offset) {
        let before = self.high_watermark();
        let replicated = self
            .replicated_end
            .map_or(high_watermark, |known| known.max(high_watermark));
        self.replicated_end = Some(replicated);
        self.settle_visible(before);
    }

    /// This replica stopped leading its partition's epoch: every `fsync` produce still
    /// waiting for the replicated high watermark gets [`LogEvent::Deposed`] (in offset order).
    /// `write` acknowledgements and DeleteRecords are local and stay.
    pub fn handle_deposed(&mut self) {
        self.waiters.deposed(&mut self.events);
    }

    /// Answers what the visible end passed since it was `before`.
    pub(super) fn settle_visible(&mut self, before: Offset) {
        let visible = self.high_watermark();
        if visible > before {
            self.waiters.durable(visible, &mut self.events);
        }
    }

    /// The high watermark the replication protocol gave this log, if it is replicated
    /// ([`PartitionLog::handle_replicated_high_watermark`]).
    pub fn replicated_high_watermark(&self) -> Option<Offset> {
        self.replicated_end
    }

    /// Every offset below this is written (maybe not yet durable).
    pub fn written_end(&self) -> Offset {
        self.written
    }

    /// The offset the next appended record gets.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    pub fn fenced(&self) -> Option<&FenceReason> {
        self.fenced.as_ref()
    }

    /// Bytes appended but not yet written (counted against the partition's write buffer).
    /// None on a fenced log: it writes nothing more, and dropped what it held.
    pub fn unwritten_bytes(&self) -> u64 {
        if self.fenced.is_some() {
            return 0;
        }
        self.segments
            .iter()
            .map(|segment| segment.size - segment.written_pos)
            .sum()
    }

    /// Bytes appended but not yet durable (counted against the shard's budget). None on a
    /// fenced log: it syncs nothing more, so they would hold the shard's budget, and with
    /// it every producer of the shard, until the partition's recovery runs again.
    pub fn unsynced_bytes(&self) -> u64 {
        if self.fenced.is_some() {
            return 0;
        }
        self.segments
            .iter()
            .map(|segment| segment.size - segment.durable_pos)
            .sum()
    }

    /// Bytes of all segments' data.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.segments.iter().map(|segment| segment.base).collect()
    }

    /// The segments no longer written to, fully durable and finalized after their roll (the
    /// active segment and one still being finalized are not included).
    pub fn sealed_segments(&self) -> Vec<crate::verify::SealedSegment> {
        self.segments
            .iter()
            .zip(self.segments.iter().skip(1))
            .filter(|(segment, _)| segment.finalized && segment.durable_pos >= segment.size)
            .map(|(segment, next)| crate::verify::SealedSegment {
                base: segment.base,
                next: next.base,
                size: segment.size,
            })
            .collect()
    }

    /// Whether requests are in flight or waiting to be handed out.
    pub fn is_idle(&self) -> bool {
        self.outstanding.is_empty() && self.requests.is_empty() && self.deferred_schedule.is_none()
    }

    /// Whether requests or events are waiting to be polled.
    pub fn has_output(&self) -> bool {
        !self.requests.is_empty() || !self.events.is_empty() || self.deferred_schedule.is_some()
    }

    /// When the shell must call [`PartitionLog::handle_tick`] next, if ever.
    /// While a round is in flight there is none: its completions drive what comes next.
    /// A parked fetch's deadline counts too.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let fetch = self.waiters.next_deadline();
        if self.fenced.is_some() || self.round.is_some() {
            return fetch;
        }
        let flush = self
            .unsynced_since
            .map(|since| Millis(since.0.saturating_add(self.config.flush_interval_ms)));
        match (flush, fetch) {
            (Some(flush), Some(fetch)) => Some(flush.min(fetch)),
            (flush, fetch) => flush.or(fetch),
        }
    }

    /// The idempotent producers this partition remembers.
    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    /// Produce acknowledgements and DeleteRecords waiting on this log.
    pub fn acks_waiting(&self) -> usize {
        self.waiters.acks_waiting()
    }

    /// Fetches parked on this log.
    pub fn fetches_parked(&self) -> usize {
        self.waiters.fetches_parked()
    }

    /// Whether an append of `len` bytes fits in the write buffer now (at most
    /// `PARTITION_BUFFER_BYTES_MAX` bytes wait to be written); a fenced log has room (its
    /// appends fail at once).
    pub fn has_room(&self, len: u64) -> bool {
        self.fenced.is_some() || self.unwritten_bytes() + len <= PARTITION_BUFFER_BYTES_MAX
    }

    /// Parks a fetch from `offset` that found too little to answer with the high watermark
    /// at `seen`, for at most `max_wait_ms`: [`LogEvent::FetchReady`] follows once the high
    /// watermark passes `seen` or the log start passes `offset`, the log is fenced, or the
    /// wait is over — at once, without parking, if one of these happened already. At most
    /// `LogConfig::fetch_waiters_max` fetches are parked at once. A fenced log parks none
    /// (`FetchWaitError::Fenced`: nothing more will become visible; answer now).
    pub fn handle_fetch_wait(
        &mut self,
        now: Millis,
        offset: Offset,
        seen: Offset,
        max_wait_ms: u32,
    ) -> Result<Ticket, FetchWaitError> {
        let end = self.high_watermark();
        self.park(now, offset, seen, end, max_wait_ms, false)
    }

    /// Parks a follower's fetch (`docs/cluster.md`) from `offset` that found nothing new with
    /// the written end at `seen`, for at most `max_wait_ms`: like
    /// [`PartitionLog::handle_fetch_wait`], but woken when the *written* end passes `seen`
    /// (followers read up to it, [`PartitionLog::handle_fetch_replica`]). Followers' parked
    /// fetches count against the same `LogConfig::fetch_waiters_max`.
    pub fn handle_fetch_wait_replica(
        &mut self,
        now: Millis,
        offset: Offset,
        seen: Offset,
        max_wait_ms: u32,
    ) -> Result<Ticket, FetchWaitError> {
        let end = self.written;
        self.park(now, offset, seen, end, max_wait_ms, true)
    }

    /// Parks a fetch that saw `seen` of an end that is `end` now.
    fn park(
        &mut self,
        now: Millis,
        offset: Offset,
        seen: Offset,
        end: Offset,
        max_wait_ms: u32,
        replica: bool,
    ) -> Result<Ticket, FetchWaitError> {
        if self.fenced.is_some() {
            return Err(FetchWaitError::Fenced);
        }
        let deadline = Millis(now.0.saturating_add(i64::from(max_wait_ms)));
        if offset < self.log_start || seen < end || deadline <= now {
            // Ready already (something moved since the caller looked, or no wait): it looks
            // again at once.
            return Ok(self.waiters.ready_now(&mut self.events));
        }
        self.waiters.park_fetch(
            offset,
            seen,
            deadline,
            self.config.fetch_waiters_max,
            replica,
        )
    }

    /// Withdraws a parked fetch whose requester gave up; no event follows for it.
    pub fn cancel_fetch_wait(&mut self, ticket: Ticket) {
        self.waiters.cancel_fetch(ticket);
    }

    /// The next storage request. A write round that appends made due starts here (see
    /// [`PartitionLog::handle_append`]).
    pub fn poll_io(&mut self) -> Option<IoRequest> {
        if self.requests.is_empty() {
            if let Some(now) = self.deferred_schedule.take() {
                self.schedule(now);
            }
        }
        self.requests.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LogEvent> {
        self.events.pop_front()
    }

    fn io_id(&mut self) -> IoId {
        self.next_io_id += 1;
        IoId(self.next_io_id)
    }

    /// Validates, stamps and buffers one batch; the write round that takes it starts at the
    /// shell's next [`PartitionLog::poll_io`].
    ///
    /// A batch of at least [`SHARED_BATCH_BYTES_MIN`] is kept as it is (shared with the
    /// caller's buffer) until written, only its header copied to be stamped; a smaller one is
    /// copied whole into an allocation of its own (see the constant).
    pub fn handle_append(
        &mut self,
        now: Millis,
        batch: &Bytes,
        durability: Durability,
    ) -> Result<AppendTicket, AppendError> {
        if let Some(reason) = &self.fenced {
            return Err(AppendError::Fenced(reason.clone()));
        }
        let parsed = BatchRef::parse_validated(batch)?;
        let record_count = parsed.record_count();
        let producer = parsed.producer();
        if let Check::Duplicate(original) = self.producers.check(producer, record_count)? {
            return Ok(self.duplicate(now, original, durability));
        }
        let max_timestamp = parsed.max_timestamp();
        let base_offset = self.next_offset;
        self.check_fits(u64::from(parsed.len()), base_offset, record_count)?;
        let last_offset = Offset(base_offset.0 + u64::from(record_count) - 1);
        let shared = batch.len() >= SHARED_BATCH_BYTES_MIN;
        let mut header = if shared {
            BytesMut::from(&batch[..HEADER_SIZE])
        } else {
            BytesMut::from(&batch[..])
        };
        let stamped = stamp(&mut header, base_offset, now.0);
        // The batch was validated above and its offsets checked: stamping cannot fail.
        assert!(
            stamped.is_ok(),
            "stamping a validated batch failed: {stamped:?}"
        );
        self.buffer_batch(
            now,
            batch,
            header.freeze(),
            base_offset,
            last_offset,
            max_timestamp,
        );
        let appended = ProducedBatch {
            base_offset,
            append_time: now,
            base_sequence: producer.base_sequence,
            record_count,
        };
        self.producers
            .record(producer, appended, self.config.producer_expiry_ms);
        let waiter = match durability {
            Durability::None => None,
            Durability::Write => {
                self.write_wanted = self.next_offset;
                Some(self.waiters.wait_written(self.next_offset))
            }
            Durability::Fsync => {
                self.fsync_wanted = self.next_offset;
                Some(self.waiters.wait_durable(self.next_offset))
            }
        };
        self.unsynced_since.get_or_insert(now);
        // The round starts when the shell next polls for requests, not now: appends that
        // arrive together (the frames of one read, producers woken by one acknowledgement)
        // then share it instead of the first going out alone.
        self.deferred_schedule = Some(now);
        Ok(AppendTicket {
            base_offset,
            last_offset,
            append_time: now,
            durability,
            waiter,
            duplicate: false,
        })
    }

    /// A follower's append: one batch of the leader's log, stamped there (base offset, append
    /// time, header CRC), that continues this log exactly — its base offset is this log's next
    /// offset. It is kept byte for byte (replicas hold the same bytes at the same offsets),
    /// goes through the same write rounds and group commit as any append, and its producer
    /// fields join the idempotent-producer state as recovery's replay takes them (the leader
    /// checked them). Nothing waits on it here: the follower reports its durable end to the
    /// leader as [`LogEvent::Durable`] moves. Returns the log's next offset.
    pub fn handle_replicate(&mut self, now: Millis, batch: &Bytes) -> Result<Offset, AppendError> {
        if let Some(reason) = &self.fenced {
            return Err(AppendError::Fenced(reason.clone()));
        }
        let parsed = BatchRef::parse_validated(batch)?;
        let base_offset = parsed.base_offset();
        if base_offset != self.next_offset
            && !(base_offset < self.next_offset
                && parsed.last_offset() >= self.next_offset
                && self.rebase_empty(base_offset))
        {
            return Err(AppendError::NotContinuing {
                base_offset,
                next_offset: self.next_offset,
            });
        }
        let record_count = parsed.record_count();
        self.check_fits(u64::from(parsed.len()), base_offset, record_count)?;
        let last_offset = parsed.last_offset();
        let header = if batch.len() >= SHARED_BATCH_BYTES_MIN {
            batch.slice(..HEADER_SIZE)
        } else {
            Bytes::copy_from_slice(batch)
        };
        let producer = parsed.producer();
        let appended = ProducedBatch {
            base_offset,
            append_time: Millis(parsed.append_time()),
            base_sequence: producer.base_sequence,
            record_count,
        };
        self.buffer_batch(
            now,
            batch,
            header,
            base_offset,
            last_offset,
            parsed.max_timestamp(),
        );
        self.producers
            .replay(producer, appended, self.config.producer_expiry_ms);
        // Synced as soon as a round can take it: the leader's `fsync` acknowledgements wait
        // for this replica's durable end.
        self.fsync_wanted = self.next_offset;
        self.unsynced_since.get_or_insert(now);
        self.deferred_schedule = Some(now);
        Ok(self.next_offset)
    }

    /// A replica that holds no record (it started over at its leader's log start) and
    /// must take a first batch beginning below that start — the leader's log start lies
    /// inside the batch (DeleteRecords at a mid-batch offset) and batches are kept whole:
    /// its one segment, empty and not yet created on disk, begins at the batch's base
    /// instead, and its log start stays (the records below it are not read, as on the
    /// leader). False, changing nothing, for a log that holds or wrote anything. Called only
    /// with the batch appended right after.
    fn rebase_empty(&mut self, base: Offset) -> bool {
        let untouched = self.next_offset == self.log_start
            && self.written == self.next_offset
            && self.durable == self.next_offset
            && self.round.is_none()
            && self.segments.len() == 1
            && self.segments.front().is_some_and(|segment| {
                segment.size == 0 && matches!(segment.file, FileState::Missing)
            });
        if !untouched || base >= self.next_offset {
            return false;
        }
        if let Some(segment) = self.segments.front_mut() {
            segment.base = base;
            segment.next_offset = base;
            segment.last_batch_base = base;
        }
        // The written and durable ends stay at the log start: nothing below it is read, and
        // the batch appended next carries them past it.
        self.next_offset = base;
        true
    }

    /// Whether a batch of `len` bytes and `record_count` records at `base_offset` fits: the
    /// write buffer has room (back-pressure otherwise) and its offsets stay within
    /// `OFFSET_MAX`. Checked before anything changes.
    fn check_fits(
        &self,
        len: u64,
        base_offset: Offset,
        record_count: u32,
    ) -> Result<(), AppendError> {
        let buffered = self.unwritten_bytes();
        if buffered + len > PARTITION_BUFFER_BYTES_MAX {
            return Err(AppendError::BufferFull {
                buffered,
                max: PARTITION_BUFFER_BYTES_MAX,
            });
        }
        if base_offset.0 > spate_format::limits::OFFSET_MAX - u64::from(record_count - 1) {
            return Err(AppendError::InvalidBatch(BatchError::OffsetOverflow {
                base_offset: base_offset.0,
                record_count,
            }));
        }
        Ok(())
    }

    /// Buffers one validated batch at `base_offset` whose (stamped) header, or whole bytes
    /// when it is small, are `header`: the segment's marks, indexes and write buffer, and the
    /// log's next offset. Shared by producers' appends and followers' appends.
    fn buffer_batch(
        &mut self,
        now: Millis,
        batch: &Bytes,
        header: Bytes,
        base_offset: Offset,
        last_offset: Offset,
        max_timestamp: i64,
    ) {
        let len = batch.len() as u64;
        if self.must_roll(now, len, last_offset) {
            self.roll(now);
        }
        let segment = self
            .segments
            .back_mut()
            .expect("a log has at least one segment");
        let position = segment.size;
        // A batch kept as it is was given with its header alone; a small one whole.
        let shared = header.len() == HEADER_SIZE && batch.len() > HEADER_SIZE;
        assert_eq!(
            segment.buffer.end(),
            position,
            "the write buffer ends at the data end"
        );
        segment.size += len;
        segment.next_offset = Offset(last_offset.0 + 1);
        segment.last_batch_base = base_offset;
        segment.created_at.get_or_insert(now);
        if max_timestamp > segment.max_timestamp {
            segment.raises.push_back(Raise {
                base: base_offset,
                next: segment.next_offset,
                timestamp: max_timestamp,
            });
        }
        segment.max_timestamp = segment.max_timestamp.max(max_timestamp);
        let relative = segment.relative(base_offset);
        add_index_entries(
            &mut segment.offset_index,
            &mut segment.time_index,
            &mut segment.last_index_position,
            position,
            relative,
            segment.max_timestamp,
        );
        segment.marks.push_back(Mark {
            end: segment.size,
            next: segment.next_offset,
        });
        segment.buffer.batches.push_back(PendingBatch {
            cached: CachedBatch {
                segment: segment.base,
                base_offset,
                next_offset: Offset(last_offset.0 + 1),
                position,
                // Validated above: a batch is at most BATCH_SIZE_MAX (1 MiB).
                len: u32::try_from(len).expect("batch length fits u32"),
            },
            header,
            rest: if shared {
                batch.slice(HEADER_SIZE..)
            } else {
                Bytes::new()
            },
        });
        segment.buffer.batch_bytes += len;
        self.next_offset = Offset(last_offset.0 + 1);
    }

    /// The answer to an idempotent producer's resend of `original`: its offsets, acknowledged
    /// once `original` reaches the durability asked for (at once if it has).
    fn duplicate(
        &mut self,
        now: Millis,
        original: ProducedBatch,
        durability: Durability,
    ) -> AppendTicket {
        let next = Offset(original.last_offset().0 + 1);
        let waiter = match durability {
            Durability::None => None,
            Durability::Write if self.written >= next => None,
            Durability::Fsync if self.high_watermark() >= next => None,
            Durability::Write => {
                self.write_wanted = self.write_wanted.max(next);
                Some(self.waiters.wait_written(next))
            }
            Durability::Fsync => {
                self.fsync_wanted = self.fsync_wanted.max(next);
                Some(self.waiters.wait_durable(next))
            }
        };
        if waiter.is_some() {
            self.deferred_schedule = Some(now);
        }
        AppendTicket {
            base_offset: original.base_offset,
            last_offset: original.last_offset(),
            append_time: original.append_time,
            durability,
            waiter,
            duplicate: true,
        }
    }

    fn must_roll(&self, now: Millis, len: u64, last_offset: Offset) -> bool {
        let active = self
            .segments
            .back()
            .expect("a log has at least one segment");
        // A sealed segment (recovered with its index files) takes no more data.
        if active.finalized {
            return true;
        }
        if active.size == 0 {
            return false;
        }
        let too_big = active.size + len > u64::from(self.config.segment_bytes);
        let too_old = active
            .created_at
            .is_some_and(|created| now.0.saturating_sub(created.0) >= self.config.segment_ms);
        let relative_overflow = last_offset.0 - active.base.0 > u64::from(u32::MAX);
        too_big || too_old || relative_overflow
    }

    fn roll(&mut self, now: Millis) {
        let base = self.next_offset;
        self.producers.expire(now, self.config.producer_expiry_ms);
        let sealed_already = self.segments.back().is_some_and(|active| active.finalized);
        let snapshot = (!sealed_already).then(|| Bytes::from(self.producers.encode()));
        if let Some(active) = self.segments.back_mut() {
            active.seal_time_index();
            // The producers as of the end of the segment: written with its indexes when it is
            // sealed, so recovery replays only the segments after it. A segment recovered
            // sealed has its snapshot on disk already (recovery wrote it).
            if snapshot.is_some() {
                active.producer_snapshot = snapshot;
            }
        }
        self.segments.push_back(Segment::new(base));
        self.events.push_back(LogEvent::SegmentRolled { base });
    }

    /// Makes everything appended so far durable as soon as possible, without waiting for the
    /// flush interval (a graceful shutdown asks for this).
    pub fn handle_flush(&mut self, now: Millis) {
        // With everything durable already, `schedule` finds no work and lifts the request
        // at once.
        self.flush_requested = true;
        self.schedule(now);
    }

    /// Lets time-based work happen: flushing `none`/`write` data after the flush interval,
    /// waking parked fetches whose wait is over, dropping read-ahead kept too long.
    pub fn handle_tick(&mut self, now: Millis) {
        if self
            .read_ahead
            .as_ref()
            .is_some_and(|ahead| ahead.is_stale(now))
        {
            self.read_ahead = None;
        }
        self.waiters.tick(now, &mut self.events);
        self.schedule(now);
    }

    /// Consumes the completion of a request this log handed out.
    pub fn handle_io_done(&mut self, now: Millis, done: IoDone) {
        let Some((owner, request)) = self.outstanding.remove(&done.id) else {
            // Not ours (or already forgotten after a fence): nothing to do.
            return;
        };
        if self.fenced.is_some() {
            return;
        }
        let outcome = match done.result {
            Ok(outcome) => outcome,
            Err(error) => {
                self.fence(FenceReason::Storage(error));
                return;
            }
        };
        if let (
            IoRequest::Write {
                file,
                position,
                data,
                ..
            },
            IoOutcome::Written { bytes },
        ) = (&request, &outcome)
        {
            if *bytes < data.len() {
                // A short write: write the rest, from the sector boundary it reached.
                let done_aligned = align_down(*bytes);
                if done_aligned == 0 {
                    let reason = FenceReason::WriteNoProgress {
                        file: file.file_name(),
                        position: *position,
                    };
                    self.fence(reason);
                    return;
                }
                let id = self.io_id();
                let rest = IoRequest::Write {
                    id,
                    file: *file,
                    position: position + done_aligned,
                    data: data.skip(done_aligned),
                };
                self.outstanding.insert(id, (owner, rest.clone()));
                self.requests.push_back(rest);
                return;
            }
        }
        match owner {
            Owner::Round => {
                let round = self
                    .round
                    .as_mut()
                    .expect("round requests belong to a round");
                round.outstanding -= 1;
                if round.outstanding == 0 {
                    self.finish_phase(now);
                }
            }
            Owner::Maintenance => {
                self.maintenance_outstanding -= 1;
                self.start_maintenance();
            }
        }
        self.schedule(now);
    }

    /// Fences the partition because damaged data was found outside recovery (a fetch read a
    /// corrupt batch): writes stop, reads below the damage go on. Does nothing if fenced.
    pub fn handle_corruption(&mut self, reason: FenceReason) {
        if self.fenced.is_none() {
            self.fence(reason);
        }
    }

    fn fence(&mut self, reason: FenceReason) {
        self.fenced = Some(reason.clone());
        self.round = None;
        self.requests.clear();
        self.maintenance.clear();
        self.tail.clear();
        // Nothing more is written: the batches waiting for a round (shared with producers'
        // frames, up to `PARTITION_BUFFER_BYTES_MAX`) are let go.
        for segment in &mut self.segments {
            segment.buffer = WriteBuffer::at(segment.written_pos, &[]);
        }
        self.events.push_back(LogEvent::Fenced {
            durable: self.durable,
            reason,
        });
        self.waiters.fence(&mut self.events);
    }
}
