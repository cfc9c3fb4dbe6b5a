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
use spate_format::index::{lookup_offset, OffsetIndexEntry, TimeIndexEntry};
use spate_format::limits::{BATCH_HEADER_SIZE, BATCH_SIZE_MAX, INDEX_INTERVAL_BYTES, SECTOR_SIZE};
use spate_format::segment::SegmentScanner;
use spate_format::{stamp, BatchError, BatchRef, Offset};
use spate_proto::Durability;
use thiserror::Error;

use crate::config::{LogConfig, PARTITION_BUFFER_BYTES_MAX, ROUND_BYTES_MAX};
use crate::storage::WriteData;
use crate::storage::{
    align_down, align_up, FileRef, IoDone, IoId, IoOutcome, IoRequest, StorageError,
};
use crate::tail::{CachedBatch, TailBatch, TailCache};
use crate::waiters::{FetchWaitError, Ticket, Waiters};
use crate::Millis;

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
}

/// What an accepted append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendTicket {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub append_time: Millis,
    pub durability: Durability,
    /// For `write` and `fsync`: the acknowledgement to wait for ([`LogEvent::Acked`] or
    /// [`LogEvent::Refused`]). `none` is acknowledged by the append itself.
    pub waiter: Option<Ticket>,
}

impl AppendTicket {
    /// The offset after the batch: the ticket is acknowledged once the watermark of its
    /// durability level reaches this.
    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset.0 + 1)
    }
}

/// Why a fetch cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FetchError {
    #[error("offset {offset} is outside [{log_start}, {high_watermark}]")]
    OutOfRange {
        offset: Offset,
        log_start: Offset,
        high_watermark: Offset,
    },
    #[error("segment {segment} at position {position}: {detail}")]
    Corrupt {
        segment: String,
        position: u64,
        detail: String,
    },
}

/// How to answer a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchPlan {
    /// The offset is the high watermark: nothing to return yet (a long poll parks here).
    AtEnd,
    /// Whole batches from the tail cache.
    Ready(Bytes),
    /// Read these bytes and pass them to [`ReadPlan::complete`].
    Read(ReadPlan),
}

/// A disk read that answers a fetch. Position and length are sector-aligned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    pub file: FileRef,
    pub position: u64,
    pub len: u64,
    /// A batch boundary at or before the batch holding `offset`, and the offset it starts with.
    scan_from: u64,
    scan_offset: Offset,
    offset: Offset,
    max_bytes: u32,
    /// Batches must end at or before this position (the segment's durable end).
    limit: u64,
}

impl ReadPlan {
    /// Cuts the answer out of the bytes read at `self.position`: whole batches from the one
    /// holding the offset, within `max_bytes` (at least one) and the durable end.
    pub fn complete(&self, data: &Bytes) -> Result<Bytes, FetchError> {
        let corrupt = |position, detail: String| FetchError::Corrupt {
            segment: self.file.file_name(),
            position,
            detail,
        };
        let skip = usize::try_from(self.scan_from - self.position).unwrap_or(usize::MAX);
        let limit = usize::try_from(self.limit - self.position).unwrap_or(usize::MAX);
        let available = data.len().min(limit);
        if skip > available {
            return Err(corrupt(self.scan_from, "short read".into()));
        }
        let mut scanner = SegmentScanner::new(
            &data[skip..available],
            self.scan_from,
            Some(self.scan_offset),
        );
        let mut first: Option<u64> = None;
        let mut end = 0;
        for batch in scanner.by_ref() {
            if batch.last_offset < self.offset {
                continue;
            }
            let start = *first.get_or_insert(batch.position);
            if batch.end_position() - start > u64::from(self.max_bytes) && end > start {
                break;
            }
            end = batch.end_position();
        }
        // A damaged batch after some good ones ends the answer early; the next fetch starts
        // at it and reports it.
        let Some(start) = first else {
            let detail = match scanner.end() {
                Some(end) => format!("{:?}", end.reason),
                None => "no batch".into(),
            };
            return Err(corrupt(
                self.scan_from,
                format!("offset {} not found: {detail}", self.offset),
            ));
        };
        let from = usize::try_from(start - self.position).unwrap_or(usize::MAX);
        let to = usize::try_from(end - self.position).unwrap_or(usize::MAX);
        Ok(data.slice(from..to))
    }
}

/// What recovery learned about one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecoveredSegment {
    pub(crate) base: Offset,
    pub(crate) size: u64,
    pub(crate) file_len: u64,
    pub(crate) next_offset: Offset,
    pub(crate) last_batch_base: Offset,
    pub(crate) max_timestamp: i64,
    pub(crate) offset_index: Vec<OffsetIndexEntry>,
    pub(crate) time_index: Vec<TimeIndexEntry>,
}

/// A batch appended but not yet durable: where it ends and the offset after it.
#[derive(Debug, Clone, Copy)]
struct Mark {
    end: u64,
    next: Offset,
}

/// A batch that raised its segment's newest timestamp: its first offset, the offset after
/// it, and the timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Raise {
    base: Offset,
    next: Offset,
    timestamp: i64,
}

/// Bytes of a segment not yet handed to a write round: the file's bytes from `start`
/// (sector-aligned) on, as the valid bytes of the unfinished sector at `start` (rewritten with
/// the next round) followed by whole batches. The batches are the producers' bytes, shared,
/// never copied here: each is its stamped header (a copy of 72 bytes) and the rest of the
/// frame it came in (small batches are copied whole: [`SHARED_BATCH_BYTES_MIN`]).
#[derive(Debug)]
struct WriteBuffer {
    start: u64,
    /// Shorter than a sector; its own small allocation, so an idle partition keeps no
    /// producer's buffer alive.
    carry: Bytes,
    batches: VecDeque<PendingBatch>,
    /// Bytes of `batches` together.
    batch_bytes: u64,
}

const HEADER_SIZE: usize = BATCH_HEADER_SIZE as usize;

/// Batches at least this long are kept as shared slices of the frame they arrived in until
/// they are written (and in the tail cache after); shorter ones are copied whole into their
/// own allocation. A small slice would keep its whole read buffer alive (a connection reads
/// small frames into shared 64 KiB buffers, and one slow partition's batch would pin the
/// others' bytes, uncounted by any budget), and copying a few kilobytes costs less than that.
/// A shared slice keeps at most its frame's buffer alive: its own exact buffer for a frame
/// read straight in, or a shared read buffer of at most about 192 KiB.
pub const SHARED_BATCH_BYTES_MIN: usize = 16 << 10;

/// Takes the next write round's bytes out of `buffer`: the carried partial sector, then
/// whole batches, as many as fit in [`ROUND_BYTES_MAX`] (at least one: a batch and a carry
/// always fit), padded with zeros to a whole sector. The batches enter the tail cache as they
/// are handed to the round. Returns the write's data and the data end it reaches; the buffer
/// then starts at that end's sector, whose valid bytes (fewer than a sector, copied) are the
/// new carry, rewritten with the next round.
fn take_round(buffer: &mut WriteBuffer, tail: &mut TailCache) -> (WriteData, u64) {
    let start = buffer.start;
    assert_eq!(start, align_down(start), "a round starts on a sector");
    assert!(
        !buffer.batches.is_empty(),
        "a round writes at least one batch"
    );
    let mut pieces = Vec::new();
    if !buffer.carry.is_empty() {
        pieces.push(buffer.carry.clone());
    }
    let mut end = start + buffer.carry.len() as u64;
    let mut taken = 0usize;
    while let Some(next) = buffer.batches.front() {
        let len = u64::from(next.cached.len);
        if taken > 0 && end + len - start > u64::from(ROUND_BYTES_MAX) {
            break;
        }
        let Some(batch) = buffer.batches.pop_front() else {
            break;
        };
        assert_eq!(batch.cached.position, end, "batches lie back to back");
        pieces.push(batch.header.clone());
        if !batch.rest.is_empty() {
            pieces.push(batch.rest.clone());
        }
        tail.push(TailBatch {
            batch: batch.cached,
            header: batch.header,
            rest: batch.rest,
        });
        buffer.batch_bytes -= len;
        end += len;
        taken += 1;
    }
    let data = WriteData::new(pieces, align_up(end) - start);
    assert!(
        data.len() <= u64::from(ROUND_BYTES_MAX),
        "a round writes at most ROUND_BYTES_MAX"
    );
    let carry_from = align_down(end);
    // `carry_from` is `end` rounded down to a sector: the difference is below 4096.
    let mut carry = vec![0; usize::try_from(end - carry_from).expect("less than a sector")];
    data.copy_to(carry_from - start, &mut carry);
    buffer.start = carry_from;
    buffer.carry = Bytes::from(carry);
    (data, end)
}

/// A batch appended and not yet part of a write round.
#[derive(Debug)]
struct PendingBatch {
    cached: CachedBatch,
    header: Bytes,
    rest: Bytes,
}

impl WriteBuffer {
    /// An empty buffer at `start` whose unfinished sector holds `carry` (`start` is
    /// sector-aligned except in a sealed segment, which is never written again).
    fn at(start: u64, carry: &[u8]) -> Self {
        assert!(
            carry.len() < SECTOR_SIZE as usize,
            "the carry is a partial sector"
        );
        WriteBuffer {
            start,
            carry: Bytes::copy_from_slice(carry),
            batches: VecDeque::new(),
            batch_bytes: 0,
        }
    }

    /// The file position after the buffer's last byte.
    fn end(&self) -> u64 {
        self.start + self.carry.len() as u64 + self.batch_bytes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    /// Not created yet.
    Missing,
    /// Created; `dir_synced` once a directory sync after the creation returned.
    Created { dir_synced: bool },
}

/// One segment as the log keeps it in memory.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: Offset,
    /// Bytes of batches (the logical end of the data).
    pub(crate) size: u64,
    /// Offset after the segment's last record.
    pub(crate) next_offset: Offset,
    /// Base offset of the last batch, for the final time-index entry.
    pub(crate) last_batch_base: Offset,
    /// When the first batch was appended (for rolling by age).
    pub(crate) created_at: Option<Millis>,
    /// Largest record timestamp (for retention by time); `i64::MIN` if empty.
    pub(crate) max_timestamp: i64,
    pub(crate) offset_index: Vec<OffsetIndexEntry>,
    pub(crate) time_index: Vec<TimeIndexEntry>,
    pub(crate) last_index_position: u64,
    file: FileState,
    /// Bytes preallocated in the file.
    allocated: u64,
    written_pos: u64,
    durable_pos: u64,
    /// Whether the segment was trimmed, synced and indexed after its roll (or is active).
    finalized: bool,
    buffer: WriteBuffer,
    marks: VecDeque<Mark>,
    /// The newest timestamp of what recovery found (all durable); `i64::MIN` for a segment
    /// created since.
    recovered_max_timestamp: i64,
    /// Batches appended since that raised the newest timestamp, oldest first; all but the
    /// last durable one are dropped as the high watermark passes them, so this holds the
    /// durable maximum and the raises still in flight (bounded by the unsynced bytes).
    raises: VecDeque<Raise>,
}

impl Segment {
    fn new(base: Offset) -> Self {
        Segment {
            base,
            size: 0,
            next_offset: base,
            last_batch_base: base,
            created_at: None,
            max_timestamp: i64::MIN,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            last_index_position: 0,
            file: FileState::Missing,
            allocated: 0,
            written_pos: 0,
            durable_pos: 0,
            finalized: false,
            buffer: WriteBuffer::at(0, &[]),
            marks: VecDeque::new(),
            recovered_max_timestamp: i64::MIN,
            raises: VecDeque::new(),
        }
    }

    /// A segment recovered from disk: every byte up to `size` is durable. `tail_sector` is
    /// the bytes of the unfinished last sector (`[align_down(size), size)`) for the segment
    /// that will be written to again; `None` for a segment that is complete.
    pub(crate) fn recovered(recovered: RecoveredSegment, tail_sector: Option<&[u8]>) -> Self {
        let RecoveredSegment {
            base,
            size,
            file_len,
            next_offset,
            last_batch_base,
            max_timestamp,
            offset_index,
            time_index,
        } = recovered;
        let last_index_position = offset_index
            .last()
            .map_or(0, |entry| u64::from(entry.position.get()));
        let (buffer, finalized) = match tail_sector {
            Some(tail) => {
                assert_eq!(
                    align_down(size) + tail.len() as u64,
                    size,
                    "tail sector ends at the data end"
                );
                // Only the tail sector: a partition that is never written again holds no more
                // (10,000 recovered partitions with a batch-sized buffer each cost gigabytes).
                (WriteBuffer::at(align_down(size), tail), false)
            }
            None => (WriteBuffer::at(size, &[]), true),
        };
        Segment {
            base,
            size,
            next_offset,
            last_batch_base,
            created_at: None,
            max_timestamp,
            offset_index,
            time_index,
            last_index_position,
            file: FileState::Created { dir_synced: true },
            allocated: file_len,
            written_pos: size,
            durable_pos: size,
            finalized,
            buffer,
            marks: VecDeque::new(),
            recovered_max_timestamp: max_timestamp,
            raises: VecDeque::new(),
        }
    }

    fn relative(&self, offset: Offset) -> u32 {
        // Segments roll before relative offsets could leave u32 (checked on append).
        u32::try_from(offset.0 - self.base.0).expect("relative offset fits u32")
    }

    fn has_work(&self, active: bool) -> bool {
        self.size > self.durable_pos || (!active && !self.finalized)
    }

    /// The segment's index files and their contents, as written when it is sealed (and by
    /// recovery when it rebuilds them).
    pub(crate) fn index_files(&self) -> [(FileRef, Bytes); 2] {
        use spate_format::index::encode_index;
        [
            (
                FileRef::offset_index(self.base),
                Bytes::copy_from_slice(encode_index(&self.offset_index)),
            ),
            (
                FileRef::time_index(self.base),
                Bytes::copy_from_slice(encode_index(&self.time_index)),
            ),
        ]
    }

    /// Adds the final time-index entry so the last entry carries the segment's maximum.
    pub(crate) fn seal_time_index(&mut self) {
        if self.size == 0 {
            return;
        }
        let relative = self.relative(self.last_batch_base);
        match self.time_index.last() {
            Some(last) if last.timestamp.get() >= self.max_timestamp => {}
            Some(last) if last.relative_offset.get() >= relative => {}
            _ => self
                .time_index
                .push(TimeIndexEntry::new(self.max_timestamp, relative)),
        }
    }
}

/// Adds the sparse index entries for a batch at `position` whose first offset is `relative`
/// in its segment, where `running_max` is the segment's largest timestamp including it: an
/// offset-index entry once `INDEX_INTERVAL_BYTES` passed since the last one, and with it a
/// time-index entry if the running maximum grew. Appends and recovery share this rule, so a
/// rebuilt index equals the one written at roll.
pub(crate) fn add_index_entries(
    offset_index: &mut Vec<OffsetIndexEntry>,
    time_index: &mut Vec<TimeIndexEntry>,
    last_index_position: &mut u64,
    position: u64,
    relative: u32,
    running_max: i64,
) {
    if position == 0 || position < *last_index_position + u64::from(INDEX_INTERVAL_BYTES) {
        return;
    }
    let position_u32 = u32::try_from(position).expect("segment positions fit u32");
    offset_index.push(OffsetIndexEntry::new(relative, position_u32));
    *last_index_position = position;
    if time_index
        .last()
        .is_none_or(|last| last.timestamp.get() < running_max)
    {
        time_index.push(TimeIndexEntry::new(running_max, relative));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhaseKind {
    Prepare,
    Write,
    Trim,
    Sync,
    Index,
    /// A directory sync making the index files durable: the segment is then sealed.
    Seal,
}

#[derive(Debug)]
struct Phase {
    kind: PhaseKind,
    requests: Vec<IoRequest>,
}

/// The write round in flight.
#[derive(Debug)]
struct Round {
    segment: Offset,
    phases: VecDeque<Phase>,
    current: Option<PhaseKind>,
    outstanding: usize,
    /// Data end the write phase covers.
    write_end: u64,
    /// Data end the sync phase covers.
    sync_end: u64,
    syncs_dir: bool,
}

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
    /// Appends since the last `schedule`, at this time: the next `poll_io` schedules.
    deferred_schedule: Option<Millis>,
    /// Acknowledgements and parked fetches waiting on the watermarks.
    waiters: Waiters,
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
        Self::assemble(config, segments, start, start_markers, None)
    }

    pub(crate) fn assemble(
        config: LogConfig,
        segments: VecDeque<Segment>,
        log_start: Offset,
        start_markers: Vec<Offset>,
        fenced: Option<FenceReason>,
    ) -> Self {
        assert!(!segments.is_empty(), "a log has at least one segment");
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
            deferred_schedule: None,
            waiters: Waiters::default(),
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

    /// The high watermark: every offset below it is durable and visible.
    pub fn high_watermark(&self) -> Offset {
        self.durable
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

    /// Bytes appended but not yet written (counted against the shard's budget).
    pub fn unwritten_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|segment| segment.size - segment.written_pos)
            .sum()
    }

    /// Bytes appended but not yet durable.
    pub fn unsynced_bytes(&self) -> u64 {
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
    /// wait is over (at once if one of these happened already). At most
    /// `LogConfig::fetch_waiters_max` fetches are parked at once.
    pub fn handle_fetch_wait(
        &mut self,
        now: Millis,
        offset: Offset,
        seen: Offset,
        max_wait_ms: u32,
    ) -> Result<Ticket, FetchWaitError> {
        let deadline = Millis(now.0.saturating_add(i64::from(max_wait_ms)));
        let ticket =
            self.waiters
                .park_fetch(offset, seen, deadline, self.config.fetch_waiters_max)?;
        if self.fenced.is_some() || offset < self.log_start || seen < self.durable {
            // Ready already (something moved since the caller looked): it looks again.
            self.waiters.cancel_fetch(ticket);
            self.events.push_back(LogEvent::FetchReady { ticket });
        }
        Ok(ticket)
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
        let max_timestamp = parsed.max_timestamp();
        let len = u64::from(parsed.len());
        let buffered = self.unwritten_bytes();
        if buffered + len > PARTITION_BUFFER_BYTES_MAX {
            return Err(AppendError::BufferFull {
                buffered,
                max: PARTITION_BUFFER_BYTES_MAX,
            });
        }
        let base_offset = self.next_offset;
        let last_offset = Offset(base_offset.0 + u64::from(record_count) - 1);
        // Checks the offset range before anything changes.
        if base_offset.0 > spate_format::limits::OFFSET_MAX - u64::from(record_count - 1) {
            return Err(AppendError::InvalidBatch(BatchError::OffsetOverflow {
                base_offset: base_offset.0,
                record_count,
            }));
        }
        if self.must_roll(now, len, last_offset) {
            self.roll();
        }
        let segment = self
            .segments
            .back_mut()
            .expect("a log has at least one segment");
        let position = segment.size;
        assert_eq!(
            segment.buffer.end(),
            position,
            "the write buffer ends at the data end"
        );
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
            header: header.freeze(),
            rest: if shared {
                batch.slice(HEADER_SIZE..)
            } else {
                Bytes::new()
            },
        });
        segment.buffer.batch_bytes += len;
        self.next_offset = Offset(last_offset.0 + 1);
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
        })
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

    fn roll(&mut self) {
        let base = self.next_offset;
        if let Some(active) = self.segments.back_mut() {
            active.seal_time_index();
        }
        self.segments.push_back(Segment::new(base));
        self.events.push_back(LogEvent::SegmentRolled { base });
    }

    /// Makes everything appended so far durable as soon as possible, without waiting for the
    /// flush interval (a graceful shutdown asks for this).
    pub fn handle_flush(&mut self, now: Millis) {
        if self.durable < self.next_offset {
            self.flush_requested = true;
        }
        self.schedule(now);
    }

    /// Lets time-based work happen: flushing `none`/`write` data after the flush interval,
    /// waking parked fetches whose wait is over.
    pub fn handle_tick(&mut self, now: Millis) {
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
        self.events.push_back(LogEvent::Fenced {
            durable: self.durable,
            reason,
        });
        self.waiters.fence(&mut self.events);
    }

    /// Starts the next write round if none is in flight and one is due.
    fn schedule(&mut self, now: Millis) {
        // Whatever an append deferred is decided now.
        self.deferred_schedule = None;
        if self.fenced.is_some() || self.round.is_some() {
            return;
        }
        let count = self.segments.len();
        let Some(index) = self
            .segments
            .iter()
            .enumerate()
            .position(|(i, s)| s.has_work(i + 1 == count))
        else {
            if self.durable == self.next_offset {
                self.unsynced_since = None;
                self.flush_requested = false;
            }
            return;
        };
        let active = index + 1 == count;
        let flush_due = self
            .unsynced_since
            .is_some_and(|since| now.0.saturating_sub(since.0) >= self.config.flush_interval_ms);
        let want_sync = !active
            || self.flush_requested
            || self.fsync_wanted > self.durable
            || self.unsynced_bytes() >= self.config.flush_bytes
            || flush_due;
        let segment = &self.segments[index];
        let unwritten = segment.size - segment.written_pos;
        let want_write = unwritten > 0
            && (want_sync
                || self.write_wanted > self.written
                || unwritten >= self.config.flush_bytes);
        if !want_sync && !want_write {
            return;
        }
        let round = self.build_round(index, want_write, want_sync);
        self.round = Some(round);
        self.start_phase();
    }

    fn build_round(&mut self, index: usize, want_write: bool, want_sync: bool) -> Round {
        let active = index + 1 == self.segments.len();
        // Ids are taken from a copy of the counter while the segment is borrowed.
        let mut last_id = self.next_io_id;
        let mut next_id = || {
            last_id += 1;
            IoId(last_id)
        };
        let segment = &mut self.segments[index];
        let file = FileRef::log(segment.base);
        let mut phases = VecDeque::new();
        let mut write_end = segment.written_pos;
        if want_write && segment.size > segment.written_pos {
            let start = segment.buffer.start;
            let (data, end) = take_round(&mut segment.buffer, &mut self.tail);
            write_end = end;
            let needed = start + data.len();
            match segment.file {
                FileState::Missing => {
                    let allocate = self.config.allocation_for(0, needed);
                    segment.allocated = allocate;
                    segment.file = FileState::Created { dir_synced: false };
                    phases.push_back(Phase {
                        kind: PhaseKind::Prepare,
                        requests: vec![IoRequest::Create {
                            id: next_id(),
                            file,
                            allocate,
                        }],
                    });
                }
                FileState::Created { .. } if needed > segment.allocated => {
                    let len = self.config.allocation_for(segment.allocated, needed);
                    segment.allocated = len;
                    phases.push_back(Phase {
                        kind: PhaseKind::Prepare,
                        requests: vec![IoRequest::Allocate {
                            id: next_id(),
                            file,
                            len,
                        }],
                    });
                }
                FileState::Created { .. } => {}
            }
            phases.push_back(Phase {
                kind: PhaseKind::Write,
                requests: vec![IoRequest::Write {
                    id: next_id(),
                    file,
                    position: start,
                    data,
                }],
            });
        }
        let finishes = !active && write_end == segment.size;
        let mut sync_end = segment.durable_pos;
        let mut syncs_dir = false;
        if want_sync {
            if finishes {
                // A rolled segment loses its preallocated tail so its length is its data.
                phases.push_back(Phase {
                    kind: PhaseKind::Trim,
                    requests: vec![IoRequest::Truncate {
                        id: next_id(),
                        file,
                        len: segment.size,
                    }],
                });
                segment.allocated = segment.size;
            }
            let mut requests = vec![IoRequest::Sync {
                id: next_id(),
                file,
            }];
            if segment.file == (FileState::Created { dir_synced: false }) {
                requests.push(IoRequest::SyncDir { id: next_id() });
                syncs_dir = true;
            }
            phases.push_back(Phase {
                kind: PhaseKind::Sync,
                requests,
            });
            sync_end = write_end;
            if finishes {
                let requests = segment
                    .index_files()
                    .into_iter()
                    .map(|(file, data)| IoRequest::WriteFile {
                        id: next_id(),
                        file,
                        data,
                    })
                    .collect();
                phases.push_back(Phase {
                    kind: PhaseKind::Index,
                    requests,
                });
                phases.push_back(Phase {
                    kind: PhaseKind::Seal,
                    requests: vec![IoRequest::SyncDir { id: next_id() }],
                });
            }
        }
        let segment_base = segment.base;
        self.next_io_id = last_id;
        Round {
            segment: segment_base,
            phases,
            current: None,
            outstanding: 0,
            write_end,
            sync_end,
            syncs_dir,
        }
    }

    fn start_phase(&mut self) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        let Some(phase) = round.phases.pop_front() else {
            self.round = None;
            return;
        };
        round.current = Some(phase.kind);
        round.outstanding = phase.requests.len();
        for request in phase.requests {
            self.outstanding
                .insert(request.id(), (Owner::Round, request.clone()));
            self.requests.push_back(request);
        }
    }

    fn finish_phase(&mut self, now: Millis) {
        let round = self.round.as_ref().expect("a phase belongs to a round");
        let kind = round.current.expect("a started round has a phase");
        let (segment_base, write_end, sync_end, syncs_dir) = (
            round.segment,
            round.write_end,
            round.sync_end,
            round.syncs_dir,
        );
        let index = self
            .segments
            .iter()
            .position(|segment| segment.base == segment_base)
            .expect("a round's segment stays until the round ends");
        match kind {
            PhaseKind::Prepare | PhaseKind::Trim => {}
            PhaseKind::Write => {
                let segment = &mut self.segments[index];
                segment.written_pos = segment.written_pos.max(write_end);
                let reached = segment
                    .marks
                    .partition_point(|mark| mark.end <= segment.written_pos);
                if let Some(mark) = reached.checked_sub(1).map(|i| segment.marks[i]) {
                    if mark.next > self.written {
                        self.written = mark.next;
                        self.events
                            .push_back(LogEvent::Written { up_to: mark.next });
                        self.waiters.written(mark.next, &mut self.events);
                    }
                }
            }
            PhaseKind::Sync => {
                let segment = &mut self.segments[index];
                assert!(
                    sync_end <= segment.written_pos,
                    "a sync covers only written data"
                );
                segment.durable_pos = segment.durable_pos.max(sync_end);
                if syncs_dir {
                    segment.file = FileState::Created { dir_synced: true };
                }
                let mut durable = None;
                while segment
                    .marks
                    .front()
                    .is_some_and(|mark| mark.end <= segment.durable_pos)
                {
                    durable = segment.marks.pop_front().map(|mark| mark.next);
                }
                if let Some(up_to) = durable {
                    assert!(up_to <= self.written, "durable never passes written");
                    if up_to > self.durable {
                        self.durable = up_to;
                        self.events.push_back(LogEvent::Durable { up_to });
                        self.waiters.durable(up_to, &mut self.events);
                    }
                }
                let durable = self.durable;
                let raises = &mut self.segments[index].raises;
                while raises.get(1).is_some_and(|raise| raise.next <= durable) {
                    raises.pop_front();
                }
                if self.durable == self.next_offset {
                    self.unsynced_since = None;
                } else if self.unsynced_since.is_some() {
                    // Data appended during the round waits at most one more interval.
                    self.unsynced_since = Some(now);
                }
            }
            PhaseKind::Index => {}
            PhaseKind::Seal => {
                let segment = &mut self.segments[index];
                segment.finalized = true;
                segment.buffer = WriteBuffer::at(segment.size, &[]);
            }
        }
        self.start_phase();
    }

    /// Deletes whole segments beyond the retention limits, oldest first; never the active
    /// segment, never one with writes still pending. Returns how many were deleted.
    pub fn handle_retention(&mut self, now: Millis) -> u32 {
        if self.fenced.is_some() {
            return 0;
        }
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            if oldest.has_work(false)
                || self
                    .round
                    .as_ref()
                    .is_some_and(|r| r.segment == oldest.base)
            {
                break;
            }
            // The next segment's file name must be durable first: it carries the offsets on
            // after a crash, when the deleted segment no longer can.
            if self.segments[1].file != (FileState::Created { dir_synced: true }) {
                break;
            }
            // Every record of the segment lies below the log start (DeleteRecords).
            let below_start = self.segments[1].base <= self.log_start;
            let expired = self.config.retention_ms.is_some_and(|ms| {
                oldest.max_timestamp != i64::MIN && oldest.max_timestamp < now.0.saturating_sub(ms)
            });
            let total = self.size_bytes();
            let oversized = self
                .config
                .retention_bytes
                .is_some_and(|limit| total - oldest.size >= limit);
            if !expired && !oversized && !below_start {
                break;
            }
            let base = oldest.base;
            self.segments.pop_front();
            // One segment at a time, each removal made durable before the next: a crash can
            // then bring back only the oldest segments, never leave a gap in the offsets.
            let removes = [
                FileRef::log(base),
                FileRef::offset_index(base),
                FileRef::time_index(base),
            ]
            .map(|file| IoRequest::Remove {
                id: self.io_id(),
                file,
            });
            self.maintenance
                .push_back(Maintenance::Io(removes.to_vec()));
            let sync = IoRequest::SyncDir { id: self.io_id() };
            self.maintenance.push_back(Maintenance::Io(vec![sync]));
            deleted += 1;
        }
        if deleted > 0 {
            self.log_start = self.log_start.max(self.segments[0].base);
            self.tail.drop_segments_below(self.segments[0].base);
            self.start_maintenance();
            self.events.push_back(LogEvent::SegmentsDeleted {
                segments: deleted,
                log_start: self.log_start,
            });
            self.waiters.start_moved(self.log_start, &mut self.events);
        }
        deleted
    }

    /// Moves the log start forward to `offset` (Kafka's DeleteRecords): the records below it
    /// are no longer readable, and the segments wholly below it are deleted by the next
    /// [`PartitionLog::handle_retention`]. The move is durable before it is visible: a
    /// marker file named by the offset is created and the directory synced first; then
    /// [`LogEvent::LogStartMoved`] reports it. Returns `Ok(None)` if the log already starts
    /// at or above `offset` durably (nothing to wait for), or the ticket of the answer if the
    /// move is under way ([`LogEvent::Acked`] follows the `LogStartMoved` at or above
    /// `offset`, or [`LogEvent::Refused`] a fence); a start that retention raised but whose
    /// deletion is not yet synced gets a marker too.
    pub fn handle_delete_records(
        &mut self,
        offset: Offset,
    ) -> Result<Option<Ticket>, DeleteRecordsError> {
        if let Some(reason) = &self.fenced {
            return Err(DeleteRecordsError::Fenced(reason.clone()));
        }
        if offset > self.durable {
            return Err(DeleteRecordsError::AboveHighWatermark {
                offset,
                high_watermark: self.durable,
            });
        }
        if offset <= self.durable_start {
            return Ok(None);
        }
        let ticket = self.waiters.wait_start(offset);
        if offset <= self.start_target {
            // A move at least this far is under way.
            return Ok(Some(ticket));
        }
        self.start_target = offset;
        let create = IoRequest::Create {
            id: self.io_id(),
            file: FileRef::log_start(offset),
            allocate: 0,
        };
        let sync = IoRequest::SyncDir { id: self.io_id() };
        self.maintenance.push_back(Maintenance::Io(vec![create]));
        self.maintenance.push_back(Maintenance::Io(vec![sync]));
        self.maintenance.push_back(Maintenance::MoveStart(offset));
        self.start_maintenance();
        Ok(Some(ticket))
    }

    /// The marker for `offset` is durable: the log starts there now, and older markers go
    /// (their removal need not be durable: recovery takes the highest marker).
    fn move_start(&mut self, offset: Offset) {
        let stale: Vec<Offset> = self
            .start_markers
            .iter()
            .copied()
            .filter(|&marker| marker < offset)
            .collect();
        self.start_markers.retain(|&marker| marker >= offset);
        self.start_markers.push(offset);
        if !stale.is_empty() {
            let removes = stale
                .into_iter()
                .map(|marker| IoRequest::Remove {
                    id: self.io_id(),
                    file: FileRef::log_start(marker),
                })
                .collect();
            self.maintenance.push_front(Maintenance::Io(removes));
        }
        // Retention may have moved the log start further meanwhile.
        self.log_start = self.log_start.max(offset);
        self.durable_start = self.durable_start.max(offset);
        self.events
            .push_back(LogEvent::LogStartMoved { log_start: offset });
        self.waiters
            .start_durable(self.durable_start, &mut self.events);
        self.waiters.start_moved(self.log_start, &mut self.events);
    }

    fn start_maintenance(&mut self) {
        while self.maintenance_outstanding == 0 {
            let requests = match self.maintenance.pop_front() {
                None => return,
                Some(Maintenance::MoveStart(offset)) => {
                    self.move_start(offset);
                    continue;
                }
                Some(Maintenance::Io(requests)) => requests,
            };
            self.maintenance_outstanding = requests.len();
            for request in requests {
                self.outstanding
                    .insert(request.id(), (Owner::Maintenance, request.clone()));
                self.requests.push_back(request);
            }
        }
    }

    /// Decides how to answer a fetch from `offset` of at most `max_bytes` (at least one batch).
    pub fn handle_fetch(&self, offset: Offset, max_bytes: u32) -> Result<FetchPlan, FetchError> {
        if offset < self.log_start || offset > self.durable {
            return Err(FetchError::OutOfRange {
                offset,
                log_start: self.log_start,
                high_watermark: self.durable,
            });
        }
        if offset == self.durable {
            return Ok(FetchPlan::AtEnd);
        }
        let index = self
            .segments
            .partition_point(|segment| segment.base <= offset)
            - 1;
        let segment = &self.segments[index];
        let limit = segment.durable_pos;
        if let Some(bytes) = self.tail.read(offset, limit, max_bytes) {
            return Ok(FetchPlan::Ready(bytes));
        }
        let relative = segment.relative(offset);
        let (scan_from, scan_offset) = match lookup_offset(&segment.offset_index, relative) {
            Some(entry) => (
                u64::from(entry.position.get()),
                Offset(segment.base.0 + u64::from(entry.relative_offset.get())),
            ),
            None => (0, segment.base),
        };
        let position = align_down(scan_from);
        let want = scan_from
            + u64::from(INDEX_INTERVAL_BYTES)
            + u64::from(max_bytes.max(BATCH_SIZE_MAX))
            + u64::from(BATCH_SIZE_MAX);
        let end = align_up(want.min(limit));
        Ok(FetchPlan::Read(ReadPlan {
            file: FileRef::log(segment.base),
            position,
            len: end - position,
            scan_from,
            scan_offset,
            offset,
            max_bytes,
            limit,
        }))
    }

    /// The newest timestamp among the durable records and where to start scanning for the
    /// first record that has it (every batch before the returned offset has only older
    /// records); `None` if no durable record has a timestamp. The start is at least the log
    /// start: if the newest record lies below it (DeleteRecords), a scan from there does not
    /// find it.
    pub fn max_timestamp_scan_start(&self) -> Option<(i64, Offset)> {
        let mut best: Option<(i64, Offset)> = None;
        // Segments wholly below the log start (not deleted yet) are not readable.
        for segment in self
            .segments
            .iter()
            .take_while(|segment| segment.base < self.durable)
            .filter(|segment| segment.next_offset > self.log_start)
        {
            let raised = segment
                .raises
                .front()
                .filter(|raise| raise.next <= self.durable)
                .map(|raise| (raise.timestamp, raise.base));
            let recovered = (segment.recovered_max_timestamp != i64::MIN).then(|| {
                let timestamp = segment.recovered_max_timestamp;
                let start = spate_format::index::lookup_time(&segment.time_index, timestamp)
                    .map_or(segment.base, |entry| {
                        Offset(segment.base.0 + u64::from(entry.relative_offset.get()))
                    });
                (timestamp, start)
            });
            // Raises come after what recovery found, so they win only when newer.
            let candidate = match (recovered, raised) {
                (Some(recovered), Some(raised)) if raised.0 > recovered.0 => Some(raised),
                (Some(recovered), _) => Some(recovered),
                (None, raised) => raised,
            };
            if let Some(candidate) = candidate {
                if best.is_none_or(|best| candidate.0 > best.0) {
                    best = Some(candidate);
                }
            }
        }
        best.map(|(timestamp, start)| (timestamp, start.max(self.log_start)))
    }

    /// Where to start scanning for the first record with timestamp at least `timestamp`:
    /// the first offset of the first durable segment whose newest record reaches it, moved
    /// forward by the segment's time index. `None` if no durable record reaches it. Every
    /// batch before the returned offset has only older records; the caller scans batches
    /// from it for the first whose max timestamp reaches `timestamp`.
    pub fn timestamp_scan_start(&self, timestamp: i64) -> Option<Offset> {
        let segment = self
            .segments
            .iter()
            .take_while(|segment| segment.base < self.durable)
            .filter(|segment| segment.next_offset > self.log_start)
            .find(|segment| segment.max_timestamp >= timestamp)?;
        let start = spate_format::index::lookup_time(&segment.time_index, timestamp)
            .map_or(segment.base, |entry| {
                Offset(segment.base.0 + u64::from(entry.relative_offset.get()))
            });
        Some(start.max(self.log_start))
    }
}
