//! Recovery: rebuilding a partition's log from the files on disk, as a sans-IO state machine.
//!
//! Rules (specified case by case in `docs/format/segment.md`):
//! - Every segment but the last was fully written and synced before the next one got data,
//!   so its index files are validated (entries decode and increase, the batches at the last
//!   entry and after it are valid and reach the next segment's base offset) and rebuilt by a
//!   full scan on any mismatch. A segment that does not scan clean to the next base offset is
//!   corruption.
//! - The last (active) segment is scanned from its first byte. An invalid end is a **torn
//!   tail** only if it looks like unwritten sectors (a sector of the damaged batch reads as
//!   zeros, or the file ends inside it) and no non-zero byte lies further than
//!   `TORN_WINDOW_BYTES` past the sector holding it: then it was never acknowledged, and it is
//!   truncated. Anything else is **corruption**: nothing is truncated, the partition is fenced,
//!   reads below the damage are served.
//! - The recovered prefix is synced (file and directory) before the log is handed out, so the
//!   high watermark never covers unsynced data; the next offset is the end of that prefix.

use std::collections::VecDeque;

use bytes::Bytes;
use spate_format::index::{decode_offset_index, decode_time_index};
use spate_format::limits::{BATCH_HEADER_SIZE, BATCH_SIZE_MAX, BATCH_SIZE_MIN, SECTOR_SIZE};
use spate_format::segment::{parse_segment_file_name, EndReason, SegmentFileKind, SegmentScanner};
use spate_format::{Offset, OffsetIndexEntry, TimeIndexEntry};
use thiserror::Error;

use crate::config::{LogConfig, RECOVERY_READ_BYTES, TORN_WINDOW_BYTES};
use crate::partition::{add_index_entries, FenceReason, PartitionLog, RecoveredSegment, Segment};
use crate::producers::{ProducedBatch, ProducerStates};
use crate::storage::{
    align_down, align_up, FileRef, IoDone, IoId, IoOutcome, IoRequest, ListedFile, StorageError,
};
use crate::Millis;

/// Why a partition could not be opened at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecoveryError {
    #[error("storage error during recovery: {0}")]
    Storage(#[from] StorageError),
    #[error("recovery got an unexpected completion {0:?}")]
    Unexpected(IoId),
    #[error("cannot cut the log at {to}: it starts at {log_start}")]
    CutBelowStart { to: Offset, log_start: Offset },
}

/// A torn tail that recovery truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: Offset,
    pub position: u64,
    /// Bytes between the cut and the last non-zero byte of the file.
    pub bytes_discarded: u64,
    pub reason: String,
}

/// What recovery found and did, for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    pub segments: u32,
    pub torn_tail: Option<TornTail>,
    /// Corruption of acknowledged data: the partition is fenced at this point.
    pub corruption: Option<FenceReason>,
    pub rebuilt_indexes: Vec<Offset>,
    pub removed_files: Vec<String>,
    pub ignored_files: Vec<String>,
    /// The producer snapshot the idempotent producers' state started from (named by its
    /// segment), if any; the batches of every later segment were replayed into it.
    pub producer_snapshot: Option<Offset>,
    /// Producer snapshots that could not be used, and why (an older one, or the whole log,
    /// was replayed instead).
    pub invalid_snapshots: Vec<String>,
    /// A cut asked for ([`Recovery::truncating`]): where the log was cut, and the bytes of
    /// records dropped from the segment holding the cut (whole segments after it are in
    /// `removed_files`).
    pub cut: Option<(Offset, u64)>,
}

/// A recovered partition: its log and what recovery did.
#[derive(Debug)]
pub struct Recovered {
    pub log: PartitionLog,
    pub report: RecoveryReport,
}

#[derive(Debug, Clone, Copy, Default)]
struct SegmentFiles {
    base: Offset,
    log_len: Option<u64>,
    /// Where the log file's data ends; zeros after it (see `ListedFile::data_end`).
    log_data_end: u64,
    has_offset_index: bool,
    has_time_index: bool,
    has_producers: bool,
}

impl SegmentFiles {
    /// The files of this segment that exist: the log first, then its index files and its
    /// producer snapshot.
    fn present(&self) -> impl Iterator<Item = FileRef> {
        [
            (self.log_len.is_some(), FileRef::log(self.base)),
            (self.has_offset_index, FileRef::offset_index(self.base)),
            (self.has_time_index, FileRef::time_index(self.base)),
            (self.has_producers, FileRef::producers(self.base)),
        ]
        .into_iter()
        .filter_map(|(present, file)| present.then_some(file))
    }
}

/// The removal of `file`, with the next request id, noted in the report.
fn removal(next_id: &mut u64, report: &mut RecoveryReport, file: FileRef) -> IoRequest {
    *next_id += 1;
    report.removed_files.push(file.file_name());
    IoRequest::Remove {
        id: IoId(*next_id),
        file,
    }
}

/// A chunked scan of one segment file.
#[derive(Debug)]
struct Scan {
    index: usize,
    file: FileRef,
    file_len: u64,
    /// Scanning stops here: the rest of the file reads as zeros (never written), which is
    /// what reading it would find, so the outcome is the same without the reads.
    scan_end: u64,
    active: bool,
    /// The next batch boundary to scan from.
    batch_pos: u64,
    expected: Offset,
    offset_index: Vec<OffsetIndexEntry>,
    time_index: Vec<TimeIndexEntry>,
    last_index_position: u64,
    max_timestamp: i64,
    last_batch_base: Offset,
    /// Set once the valid prefix ended.
    end: Option<(u64, EndReason)>,
    torn_signature: bool,
    /// Whether a valid batch starts somewhere after the damage, up to `searched_to`.
    valid_after: bool,
    searched_to: u64,
    tail_sector: Vec<u8>,
    /// End of the last non-zero byte seen after the valid prefix.
    nonzero_end: u64,
    /// Where to read next while looking for non-zero bytes after the end.
    probe_pos: u64,
    /// The scan stopped at the batch where a cut was asked for ([`Recovery::truncating`]).
    cut: bool,
}

impl Scan {
    /// The scan of segment `index` (based at `base`) from its first byte: its file is
    /// `file_len` bytes, zeros from `scan_end` on; `active` if it is the last segment.
    fn new(index: usize, base: Offset, file_len: u64, scan_end: u64, active: bool) -> Scan {
        Scan {
            index,
            file: FileRef::log(base),
            file_len,
            scan_end,
            active,
            batch_pos: 0,
            expected: base,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            last_index_position: 0,
            max_timestamp: i64::MIN,
            last_batch_base: base,
            end: None,
            torn_signature: false,
            valid_after: false,
            searched_to: 0,
            tail_sector: Vec::new(),
            nonzero_end: 0,
            probe_pos: 0,
            cut: false,
        }
    }
}

#[derive(Debug)]
enum Step {
    /// Waiting for a producer snapshot (the newest not yet tried).
    Snapshot {
        index: usize,
    },
    /// Waiting for the segment's offset index.
    OffsetIndex {
        index: usize,
    },
    /// Waiting for the segment's time index.
    TimeIndex {
        index: usize,
        offset_index: Vec<OffsetIndexEntry>,
    },
    /// Waiting for the bytes after the last offset-index entry.
    Tail {
        index: usize,
        offset_index: Vec<OffsetIndexEntry>,
        time_index: Vec<TimeIndexEntry>,
        from: u64,
    },
    Scan(Box<Scan>),
    /// Running the final requests (truncate, index writes, removals, syncs), one at a time.
    Finish,
    Done,
}

/// Recovers one partition. Drive it like the log: hand out `poll_io` requests, feed their
/// completions to `handle_io_done`, until `poll_done` returns the result.
#[derive(Debug)]
pub struct Recovery {
    config: LogConfig,
    files: Vec<SegmentFiles>,
    step: Step,
    request: Option<IoRequest>,
    waiting: Option<IoId>,
    next_id: u64,
    segments: VecDeque<Segment>,
    /// Tail bytes of the last recovered segment, for its write buffer.
    tail_sector: Option<Vec<u8>>,
    finish: VecDeque<IoRequest>,
    report: RecoveryReport,
    fenced: Option<FenceReason>,
    /// Log-start markers found in the directory (DeleteRecords).
    start_markers: Vec<Offset>,
    /// Segments with a producer snapshot not yet tried, oldest first (tried newest first).
    snapshots: Vec<usize>,
    /// The idempotent producers: from the snapshot, then the batches of the segments from
    /// `replay_from` on, each scanned in full.
    producers: ProducerStates,
    replay_from: usize,
    result: Option<Result<Recovered, RecoveryError>>,
    /// The offset to cut the log at ([`Recovery::truncating`]).
    cut: Option<Offset>,
    /// The removals of the segments at and after the cut, then a directory sync: run first,
    /// before the segment holding the cut is truncated, so a crash in between leaves a log
    /// that is whole (only longer than asked).
    cut_removals: Vec<IoRequest>,
}

impl Recovery {
    /// Starts recovering from the listed files of the partition directory.
    pub fn new(config: LogConfig, listing: &[ListedFile]) -> Self {
        Self::start(config, listing, None)
    }

    /// Recovers the partition with its log cut at `to` (a follower's truncation after its
    /// log diverged from the leader's, `docs/cluster.md`): the segments at and after the cut
    /// are removed, the segment holding it loses its index files and producer snapshot (it is
    /// the active segment again) and is truncated at the batch starting at `to`, which must
    /// be a batch boundary (else the partition is fenced: the point came from damaged
    /// data). A cut at or above the log's end changes nothing. The producers' state is
    /// rebuilt as of the cut. Every change is durable when the result comes; a crash in
    /// between leaves a whole log, at most as long as before.
    pub fn truncating(config: LogConfig, listing: &[ListedFile], to: Offset) -> Self {
        Self::start(config, listing, Some(to))
    }

    /// Empties the partition and starts it at `start`: what a follower does when its leader
    /// no longer has the follower's position (retention moved the leader's log start past
    /// the follower's end, `docs/cluster.md`). Nothing is read: a log-start marker at `start`
    /// is made durable first, then every segment goes, newest first, each removal made
    /// durable before the next (a crash in between leaves the marker, which already hides
    /// what remains below it), then the older markers. The caller knows the partition holds
    /// nothing at or above `start`.
    pub fn resetting(config: LogConfig, listing: &[ListedFile], start: Offset) -> Self {
        let mut report = RecoveryReport::default();
        let mut next_id = 0;
        let mut finish = VecDeque::new();
        let mut bases: Vec<Offset> = Vec::new();
        let mut markers: Vec<Offset> = Vec::new();
        let mut others = Vec::new();
        for listed in listing {
            match parse_segment_file_name(&listed.name) {
                Ok((base, SegmentFileKind::LogStart)) => markers.push(base),
                Ok((base, kind)) => {
                    bases.push(base);
                    others.push(FileRef { base, kind });
                }
                Err(_) => report.ignored_files.push(listed.name.clone()),
            }
        }
        if !markers.contains(&start) {
            next_id += 1;
            finish.push_back(IoRequest::Create {
                id: IoId(next_id),
                file: FileRef::log_start(start),
                allocate: 0,
            });
            next_id += 1;
            finish.push_back(IoRequest::SyncDir { id: IoId(next_id) });
        }
        bases.sort_unstable();
        bases.dedup();
        for base in bases.into_iter().rev() {
            // The log file first: index files without a log are removed by any recovery.
            let mut files: Vec<FileRef> = others
                .iter()
                .filter(|file| file.base == base)
                .copied()
                .collect();
            files.sort_by_key(|file| file.kind != SegmentFileKind::Log);
            for file in files {
                finish.push_back(removal(&mut next_id, &mut report, file));
            }
            next_id += 1;
            finish.push_back(IoRequest::SyncDir { id: IoId(next_id) });
        }
        for marker in markers.into_iter().filter(|marker| *marker != start) {
            finish.push_back(removal(
                &mut next_id,
                &mut report,
                FileRef::log_start(marker),
            ));
        }
        next_id += 1;
        finish.push_back(IoRequest::SyncDir { id: IoId(next_id) });
        // `next_finish` issues the plan's first request (its step: `Finish`).
        let mut recovery = Recovery {
            start_markers: vec![start],
            ..Recovery::planned(config, next_id, finish, report)
        };
        recovery.next_finish();
        recovery
    }

    /// A recovery that has read nothing yet, with the requests planned so far (`finish`, the
    /// last id handed out `next_id`) and what the listing told (`report`).
    fn planned(
        config: LogConfig,
        next_id: u64,
        finish: VecDeque<IoRequest>,
        report: RecoveryReport,
    ) -> Self {
        Recovery {
            config,
            files: Vec::new(),
            step: Step::Done,
            request: None,
            waiting: None,
            next_id,
            segments: VecDeque::new(),
            tail_sector: None,
            finish,
            report,
            fenced: None,
            start_markers: Vec::new(),
            snapshots: Vec::new(),
            producers: ProducerStates::default(),
            replay_from: 0,
            result: None,
            cut: None,
            cut_removals: Vec::new(),
        }
    }

    fn start(config: LogConfig, listing: &[ListedFile], cut: Option<Offset>) -> Self {
        let mut report = RecoveryReport::default();
        let mut files: Vec<SegmentFiles> = Vec::new();
        let mut start_markers = Vec::new();
        for listed in listing {
            let Ok((base, kind)) = parse_segment_file_name(&listed.name) else {
                report.ignored_files.push(listed.name.clone());
                continue;
            };
            if kind == SegmentFileKind::LogStart {
                start_markers.push(base);
                continue;
            }
            let position = match files.iter().position(|files| files.base == base) {
                Some(position) => position,
                None => {
                    files.push(SegmentFiles {
                        base,
                        ..SegmentFiles::default()
                    });
                    files.len() - 1
                }
            };
            let entry = &mut files[position];
            match kind {
                SegmentFileKind::Log => {
                    entry.log_len = Some(listed.len);
                    entry.log_data_end = listed.data_end.min(listed.len);
                }
                SegmentFileKind::OffsetIndex => entry.has_offset_index = true,
                SegmentFileKind::TimeIndex => entry.has_time_index = true,
                SegmentFileKind::Producers => entry.has_producers = true,
                SegmentFileKind::LogStart => {}
            }
        }
        files.sort_by_key(|files| files.base);
        let mut finish = VecDeque::new();
        let mut next_id = 0;
        // Index files without a log are leftovers of a deletion that did not finish.
        files.retain(|entry| {
            if entry.log_len.is_some() {
                return true;
            }
            for file in entry.present() {
                finish.push_back(removal(&mut next_id, &mut report, file));
            }
            false
        });
        let mut cut_removals = Vec::new();
        let mut cut_below_start = None;
        if let (Some(to), Some(first)) = (cut, files.first().map(|files| files.base)) {
            if to < first {
                cut_below_start = Some(RecoveryError::CutBelowStart {
                    to,
                    log_start: first,
                });
            } else {
                // Segments from the cut on go, newest first, each made durable (a directory
                // sync) before the next, so a crash leaves older ones whole and contiguous;
                // each log file before its index files (index files without a log are
                // removed by the next recovery); the first segment always stays.
                let keep = files.partition_point(|files| files.base < to).max(1);
                for removed in files.drain(keep..).rev() {
                    for file in removed.present() {
                        cut_removals.push(removal(&mut next_id, &mut report, file));
                    }
                    next_id += 1;
                    cut_removals.push(IoRequest::SyncDir { id: IoId(next_id) });
                }
                // The segment holding the cut takes data again: its index files describe
                // records that may go, and its snapshot their end.
                if let Some(last) = files.last_mut() {
                    let indexes = SegmentFiles {
                        log_len: None,
                        has_producers: false,
                        ..*last
                    };
                    for file in indexes.present() {
                        cut_removals.push(removal(&mut next_id, &mut report, file));
                    }
                    last.has_offset_index = false;
                    last.has_time_index = false;
                }
            }
        }
        report.segments = u32::try_from(files.len()).unwrap_or(u32::MAX);
        // A snapshot describes its segment's end, so it is valid once the segment is complete:
        // every segment but the last, and the last if sealed. The snapshot of an unsealed
        // last segment is stale (a roll's seal that a crash interrupted; the segment takes
        // data again): removed.
        let count = files.len();
        let mut snapshots = Vec::new();
        for (index, entry) in files.iter().enumerate() {
            if !entry.has_producers {
                continue;
            }
            let sealed = entry.has_offset_index && entry.has_time_index;
            if index + 1 < count || sealed {
                snapshots.push(index);
            } else {
                let remove = removal(&mut next_id, &mut report, FileRef::producers(entry.base));
                // A cut's changes wait for the scan (a fence keeps every file as it was).
                if cut.is_some() {
                    cut_removals.push(remove);
                } else {
                    finish.push_back(remove);
                }
            }
        }
        if cut.is_some() && !cut_removals.is_empty() {
            next_id += 1;
            cut_removals.push(IoRequest::SyncDir { id: IoId(next_id) });
        }
        let mut recovery = Recovery {
            files,
            start_markers,
            snapshots,
            cut,
            cut_removals,
            ..Recovery::planned(config, next_id, finish, report)
        };
        if let Some(error) = cut_below_start {
            recovery.fail(error);
            return recovery;
        }
        recovery.start_markers.sort_unstable();
        recovery.next_snapshot();
        recovery
    }

    /// Reads the newest producer snapshot not yet tried; without one, the whole log is
    /// replayed.
    fn next_snapshot(&mut self) {
        match self.snapshots.pop() {
            Some(index) => {
                self.step = Step::Snapshot { index };
                let id = self.io_id();
                self.issue(IoRequest::ReadFile {
                    id,
                    file: FileRef::producers(self.files[index].base),
                });
            }
            None => {
                self.replay_from = 0;
                self.begin_segment(0);
            }
        }
    }

    fn on_snapshot(&mut self, index: usize, data: &[u8]) {
        match ProducerStates::decode(data) {
            Ok(producers) => {
                self.producers = producers;
                self.replay_from = index + 1;
                self.report.producer_snapshot = Some(self.files[index].base);
                self.begin_segment(0);
            }
            Err(error) => {
                let file = FileRef::producers(self.files[index].base);
                self.report
                    .invalid_snapshots
                    .push(format!("{file}: {error}"));
                self.next_snapshot();
            }
        }
    }

    pub fn poll_io(&mut self) -> Option<IoRequest> {
        let request = self.request.take()?;
        self.waiting = Some(request.id());
        Some(request)
    }

    /// The result, once recovery is over.
    pub fn poll_done(&mut self) -> Option<Result<Recovered, RecoveryError>> {
        self.result.take()
    }

    fn io_id(&mut self) -> IoId {
        self.next_id += 1;
        IoId(self.next_id)
    }

    fn issue(&mut self, request: IoRequest) {
        assert!(
            self.request.is_none() && self.waiting.is_none(),
            "one request at a time"
        );
        self.request = Some(request);
    }

    fn fail(&mut self, error: RecoveryError) {
        self.step = Step::Done;
        self.request = None;
        self.result = Some(Err(error));
    }

    pub fn handle_io_done(&mut self, done: IoDone) {
        if self.waiting != Some(done.id) {
            self.fail(RecoveryError::Unexpected(done.id));
            return;
        }
        self.waiting = None;
        let outcome = match done.result {
            Ok(outcome) => outcome,
            Err(error) => {
                self.fail(RecoveryError::Storage(error));
                return;
            }
        };
        let data = match outcome {
            IoOutcome::Read { data } => Some(data),
            IoOutcome::Done | IoOutcome::Written { .. } => None,
        };
        match std::mem::replace(&mut self.step, Step::Done) {
            Step::Snapshot { index } => self.on_snapshot(index, &data.unwrap_or_default()),
            Step::OffsetIndex { index } => self.on_offset_index(index, &data.unwrap_or_default()),
            Step::TimeIndex {
                index,
                offset_index,
            } => {
                self.on_time_index(index, offset_index, &data.unwrap_or_default());
            }
            Step::Tail {
                index,
                offset_index,
                time_index,
                from,
            } => {
                self.on_tail(
                    index,
                    offset_index,
                    time_index,
                    from,
                    &data.unwrap_or_default(),
                );
            }
            Step::Scan(scan) => self.on_scan(*scan, &data.unwrap_or_default()),
            Step::Finish => self.next_finish(),
            Step::Done => self.fail(RecoveryError::Unexpected(done.id)),
        }
    }

    fn next_base(&self, index: usize) -> Option<Offset> {
        self.files.get(index + 1).map(|files| files.base)
    }

    fn begin_segment(&mut self, index: usize) {
        let Some(files) = self.files.get(index).copied() else {
            self.begin_finish();
            return;
        };
        let last = index + 1 == self.files.len();
        if last {
            // A last segment with both index files was sealed: completely written and synced
            // before its indexes were made durable, so nothing in it can be torn. Without
            // them it may have been in flight; a single leftover index file is stale.
            let sealed = files.has_offset_index && files.has_time_index;
            if !sealed {
                for (present, file) in [
                    (files.has_offset_index, FileRef::offset_index(files.base)),
                    (files.has_time_index, FileRef::time_index(files.base)),
                ] {
                    if present {
                        let id = self.io_id();
                        self.report.removed_files.push(file.file_name());
                        self.finish.push_back(IoRequest::Remove { id, file });
                    }
                }
            }
            self.begin_scan(index);
        } else if !(files.has_offset_index && files.has_time_index) {
            self.rebuild(index);
        } else if index >= self.replay_from {
            // After the producer snapshot: its batches are replayed, so it is read in full
            // (and validated as it is read, its index files are not needed).
            self.begin_scan(index);
        } else {
            self.step = Step::OffsetIndex { index };
            let id = self.io_id();
            self.issue(IoRequest::ReadFile {
                id,
                file: FileRef::offset_index(files.base),
            });
        }
    }

    fn rebuild(&mut self, index: usize) {
        self.report.rebuilt_indexes.push(self.files[index].base);
        self.begin_scan(index);
    }

    /// Offsets a rolled segment holds: from its base to the next segment's.
    fn span(&self, index: usize) -> u64 {
        self.next_base(index)
            .map_or(0, |next| next.0 - self.files[index].base.0)
    }

    fn on_offset_index(&mut self, index: usize, data: &[u8]) {
        let files = self.files[index];
        let log_len = files.log_len.unwrap_or(0);
        let span = self.span(index);
        let valid = decode_offset_index(data)
            .ok()
            .filter(|entries| offset_index_fits(entries, log_len, span));
        match valid {
            Some(entries) => {
                let offset_index = entries.to_vec();
                self.step = Step::TimeIndex {
                    index,
                    offset_index,
                };
                let id = self.io_id();
                self.issue(IoRequest::ReadFile {
                    id,
                    file: FileRef::time_index(files.base),
                });
            }
            None => self.rebuild(index),
        }
    }

    fn on_time_index(&mut self, index: usize, offset_index: Vec<OffsetIndexEntry>, data: &[u8]) {
        let files = self.files[index];
        let span = self.span(index);
        let valid = decode_time_index(data)
            .ok()
            .filter(|entries| time_index_fits(entries, span));
        let Some(time_index) = valid.map(<[TimeIndexEntry]>::to_vec) else {
            self.rebuild(index);
            return;
        };
        let from = offset_index
            .last()
            .map_or(0, |entry| u64::from(entry.position.get()));
        let log_len = files.log_len.unwrap_or(0);
        let position = align_down(from);
        let len = (align_up(log_len) - position).min(RECOVERY_READ_BYTES);
        self.step = Step::Tail {
            index,
            offset_index,
            time_index,
            from,
        };
        let id = self.io_id();
        self.issue(IoRequest::Read {
            id,
            file: FileRef::log(files.base),
            position,
            len,
        });
    }

    /// Checks the batches after the last index entry: they must be valid, start at the
    /// entry's offset and reach the next segment's base offset exactly.
    fn on_tail(
        &mut self,
        index: usize,
        offset_index: Vec<OffsetIndexEntry>,
        time_index: Vec<TimeIndexEntry>,
        from: u64,
        data: &[u8],
    ) {
        let files = self.files[index];
        let next_base = self
            .next_base(index)
            .expect("only rolled segments have index files");
        let expected = match offset_index.last() {
            Some(entry) => Offset(files.base.0 + u64::from(entry.relative_offset.get())),
            None => files.base,
        };
        let position = align_down(from);
        let skip = usize::try_from(from - position).unwrap_or(usize::MAX);
        let Some(bytes) = data.get(skip..) else {
            self.rebuild(index);
            return;
        };
        let mut scanner = SegmentScanner::new(bytes, from, Some(expected));
        let mut max_timestamp = time_index
            .last()
            .map_or(i64::MIN, |entry| entry.timestamp.get());
        let mut last_batch_base = expected;
        let mut end_position = from;
        for batch in scanner.by_ref() {
            max_timestamp = max_timestamp.max(batch.max_timestamp);
            last_batch_base = batch.base_offset;
            end_position = batch.end_position();
        }
        let clean = matches!(
            scanner.end().map(|end| end.reason),
            Some(EndReason::Clean | EndReason::ZeroPadding)
        );
        if !clean || scanner.next_offset() != Some(next_base) || end_position == from && from > 0 {
            self.rebuild(index);
            return;
        }
        let recovered = RecoveredSegment {
            base: files.base,
            size: end_position,
            file_len: files.log_len.unwrap_or(0),
            next_offset: next_base,
            last_batch_base,
            max_timestamp,
            offset_index,
            time_index,
        };
        self.segments.push_back(Segment::recovered(recovered, None));
        self.begin_segment(index + 1);
    }

    fn begin_scan(&mut self, index: usize) {
        let files = self.files[index];
        let file_len = files.log_len.unwrap_or(0);
        let scan = Scan::new(
            index,
            files.base,
            file_len,
            align_up(files.log_data_end).min(file_len),
            index + 1 == self.files.len(),
        );
        self.read_scan(scan);
    }

    fn read_scan(&mut self, scan: Scan) {
        let position = match scan.end {
            None => align_down(scan.batch_pos),
            Some(_) => scan.probe_pos,
        };
        if position >= scan.file_len {
            self.end_scan(scan);
            return;
        }
        if position >= scan.scan_end {
            if scan.end.is_some() {
                // Looking for non-zero bytes after the end: the rest reads as zeros.
                self.end_scan(scan);
            } else {
                // A batch would start in space never written: zeros, as a read would return
                // (`zero_filled` supplies them).
                self.on_scan(scan, &Bytes::new());
            }
            return;
        }
        let len = (align_up(scan.scan_end) - position).min(RECOVERY_READ_BYTES);
        let file = scan.file;
        self.step = Step::Scan(Box::new(scan));
        let id = self.io_id();
        self.issue(IoRequest::Read {
            id,
            file,
            position,
            len,
        });
    }

    fn on_scan(&mut self, mut scan: Scan, data: &Bytes) {
        let read_at = match scan.end {
            None => align_down(scan.batch_pos),
            Some(_) => scan.probe_pos,
        };
        let data = zero_filled(&scan, read_at, data);
        // A file is never longer than listed; a short read ends it.
        let chunk_end = (read_at + data.len() as u64).min(scan.file_len);
        let data = data.slice(..usize::try_from(chunk_end - read_at).unwrap_or(0));
        let at_eof = chunk_end >= scan.file_len || data.is_empty();
        if scan.end.is_some() {
            // Looking for non-zero bytes after the end of the valid prefix.
            if let Some(last) = data.iter().rposition(|&byte| byte != 0) {
                scan.nonzero_end = read_at + last as u64 + 1;
            }
            scan.probe_pos = chunk_end;
            let beyond_window =
                scan.nonzero_end > align_down(scan.end.map_or(0, |end| end.0)) + TORN_WINDOW_BYTES;
            if at_eof || beyond_window {
                self.end_scan(scan);
            } else {
                self.read_scan(scan);
            }
            return;
        }
        let skip = usize::try_from(scan.batch_pos - read_at).unwrap_or(usize::MAX);
        let bytes = data.get(skip..).unwrap_or_default();
        let mut scanner = SegmentScanner::new(bytes, scan.batch_pos, Some(scan.expected));
        let cut = self.cut.filter(|_| scan.active);
        let mut cut_at = None;
        for batch in scanner.by_ref() {
            if let Some(cut) = cut {
                if batch.base_offset >= cut {
                    cut_at = Some(batch.position);
                    break;
                }
                if batch.next_offset() > cut {
                    // The cut falls inside a batch: not a point any replica's log has.
                    let detail = format!(
                        "a cut at offset {cut} falls inside the batch at offset {}",
                        batch.base_offset
                    );
                    self.fence_at(self.files[scan.index].base, batch.position, detail);
                    cut_at = Some(batch.position);
                    break;
                }
            }
            scan.max_timestamp = scan.max_timestamp.max(batch.max_timestamp);
            let relative = u32::try_from(batch.base_offset.0 - self.files[scan.index].base.0)
                .unwrap_or(u32::MAX);
            add_index_entries(
                &mut scan.offset_index,
                &mut scan.time_index,
                &mut scan.last_index_position,
                batch.position,
                relative,
                scan.max_timestamp,
            );
            scan.last_batch_base = batch.base_offset;
            scan.expected = batch.next_offset();
            if scan.index >= self.replay_from {
                let replayed = ProducedBatch {
                    base_offset: batch.base_offset,
                    append_time: Millis(batch.append_time),
                    base_sequence: batch.producer.base_sequence,
                    record_count: batch.record_count,
                };
                self.producers
                    .replay(batch.producer, replayed, self.config.producer_expiry_ms);
            }
        }
        if let Some(p) = cut_at {
            scan.batch_pos = p;
            scan.end = Some((p, EndReason::Clean));
            scan.cut = true;
            let local = |position: u64| usize::try_from(position - read_at).unwrap_or(usize::MAX);
            scan.tail_sector = data
                .get(local(align_down(p))..local(p))
                .unwrap_or_default()
                .to_vec();
            self.end_scan(scan);
            return;
        }
        let end = scanner.end().expect("an exhausted scanner has an end");
        scan.batch_pos = end.position;
        // Reading on only helps if the next read starts further in (a short read that ends
        // inside a batch would otherwise be read again and again).
        let advances = align_down(end.position) > read_at;
        let continues = !at_eof
            && advances
            && matches!(
                end.reason,
                EndReason::Clean
                    | EndReason::InvalidBatch(spate_format::BatchError::Truncated { .. })
            );
        if continues {
            self.read_scan(scan);
            return;
        }
        let p = end.position;
        scan.end = Some((p, end.reason));
        let local = |position: u64| usize::try_from(position - read_at).unwrap_or(usize::MAX);
        scan.tail_sector = data
            .get(local(align_down(p))..local(p))
            .unwrap_or_default()
            .to_vec();
        if let Some(last) = data
            .get(local(p)..)
            .and_then(|rest| rest.iter().rposition(|&b| b != 0))
        {
            scan.nonzero_end = p + last as u64 + 1;
        }
        scan.torn_signature = looks_torn(&data, read_at, p, at_eof);
        if scan.active && !matches!(end.reason, EndReason::Clean | EndReason::ZeroPadding) {
            scan.valid_after = valid_batch_after(&data, read_at, p);
            scan.searched_to = chunk_end;
        }
        scan.probe_pos = chunk_end;
        if scan.active && !at_eof && !matches!(end.reason, EndReason::Clean) {
            self.read_scan(scan);
        } else {
            self.end_scan(scan);
        }
    }

    fn end_scan(&mut self, scan: Scan) {
        let base = self.files[scan.index].base;
        let (p, reason) = scan.end.unwrap_or((scan.batch_pos, EndReason::Clean));
        let window_end = align_down(p) + TORN_WINDOW_BYTES;
        let damaged = match reason {
            EndReason::Clean => false,
            EndReason::ZeroPadding => scan.nonzero_end > p,
            EndReason::InvalidBatch(_) | EndReason::OffsetMismatch { .. } => true,
        };
        let next_base = self.next_base(scan.index);
        let recovered = RecoveredSegment {
            base,
            size: p,
            file_len: scan.file_len,
            next_offset: scan.expected,
            last_batch_base: scan.last_batch_base,
            max_timestamp: scan.max_timestamp,
            offset_index: scan.offset_index,
            time_index: scan.time_index,
        };
        let describe = |reason: &EndReason| match reason {
            EndReason::ZeroPadding => {
                "zeros where a batch should start, data after them".to_owned()
            }
            EndReason::InvalidBatch(error) => error.to_string(),
            EndReason::OffsetMismatch { expected, found } => {
                format!("batch starts at offset {found}, expected {expected}")
            }
            EndReason::Clean => "clean".to_owned(),
        };
        let files = self.files[scan.index];
        let sealed = files.has_offset_index && files.has_time_index;
        if scan.active && sealed {
            // The last segment was sealed: any damage is corruption; it takes no more data
            // (the next append rolls), and its indexes are written again from the scan.
            if damaged {
                self.fence_at(base, p, describe(&reason));
                self.tail_sector = Some(scan.tail_sector.clone());
                self.segments
                    .push_back(Segment::recovered(recovered, Some(&scan.tail_sector)));
            } else {
                let mut segment = Segment::recovered(recovered, None);
                segment.seal_time_index();
                // The producers as of its end: the snapshot plus every later batch replayed.
                segment.producer_snapshot = Some(Bytes::from(self.producers.encode()));
                for (file, data) in segment.index_files() {
                    let id = self.io_id();
                    self.finish
                        .push_back(IoRequest::WriteFile { id, file, data });
                }
                self.segments.push_back(segment);
            }
            self.begin_finish();
            return;
        }
        // A truncating recovery ends here, unless damage ended the scan before the cut (a
        // torn tail or corruption is then handled as in any recovery, and nothing is cut).
        if scan.active && self.cut.is_some() && (scan.cut || !damaged) {
            self.end_cut(
                scan.index,
                scan.file_len,
                scan.cut,
                scan.tail_sector,
                recovered,
            );
            return;
        }
        if scan.active {
            // Missing sectors look like zeros inside the batch; a garbage tail has no valid
            // batch after it. Damage followed by valid data, without missing sectors, is not
            // a torn write.
            let torn = damaged
                && !matches!(reason, EndReason::OffsetMismatch { .. })
                && (scan.torn_signature
                    || matches!(reason, EndReason::ZeroPadding)
                    || !(scan.valid_after || scan.nonzero_end > scan.searched_to))
                && scan.nonzero_end <= window_end;
            // Spate leaves an unsealed segment's file at a multiple of the sector size (writes
            // are whole sectors into preallocated space), except where it cut a torn tail or
            // trimmed a rolled segment, and those end at a batch boundary. A file that ends
            // inside a batch at any other length was cut by something else, possibly through
            // acknowledged records: their offsets must not be issued again, so fence.
            let cut_outside = matches!(
                reason,
                EndReason::InvalidBatch(spate_format::BatchError::Truncated { .. })
            ) && !scan.file_len.is_multiple_of(u64::from(SECTOR_SIZE));
            if cut_outside {
                self.fence_at(
                    base,
                    p,
                    format!(
                        "possibly acknowledged records lost: the file is {} bytes, a length \
                         Spate never leaves, and ends inside the batch at {p} (truncated \
                         outside Spate?)",
                        scan.file_len
                    ),
                );
            } else if damaged && !torn {
                self.fence_at(base, p, describe(&reason));
            } else if torn {
                self.report.torn_tail = Some(TornTail {
                    segment: base,
                    position: p,
                    bytes_discarded: scan.nonzero_end.saturating_sub(p),
                    reason: describe(&reason),
                });
                let id = self.io_id();
                let file = FileRef::log(base);
                self.finish
                    .push_front(IoRequest::Truncate { id, file, len: p });
            }
            let mut recovered = recovered;
            if torn && !cut_outside {
                recovered.file_len = p;
            }
            // The segment takes data again: give its file a whole number of sectors (a cut
            // torn tail or a trimmed rolled segment that is last again end anywhere), so a
            // file that ends off a sector boundary always means a cut from outside.
            let fenced = cut_outside || (damaged && !torn);
            if !fenced && !recovered.file_len.is_multiple_of(u64::from(SECTOR_SIZE)) {
                let len = align_up(recovered.file_len);
                let id = self.io_id();
                self.finish.push_back(IoRequest::Allocate {
                    id,
                    file: FileRef::log(base),
                    len,
                });
                recovered.file_len = len;
            }
            self.tail_sector = Some(scan.tail_sector);
            self.segments
                .push_back(Segment::recovered(recovered, self.tail_sector.as_deref()));
            self.begin_finish();
            return;
        }
        // A rolled segment must scan clean up to the next segment's base offset.
        if damaged || Some(recovered.next_offset) != next_base {
            let detail = if damaged {
                describe(&reason)
            } else {
                format!(
                    "segment ends at offset {}, the next segment starts at {}",
                    recovered.next_offset,
                    next_base.map_or(0, |next| next.0)
                )
            };
            let mut recovered = recovered;
            let tail = scan.tail_sector;
            recovered.file_len = scan.file_len;
            self.segments
                .push_back(Segment::recovered(recovered, Some(&tail)));
            self.tail_sector = Some(tail);
            self.fence_at(base, p, detail);
            self.begin_finish();
            return;
        }
        let mut segment = Segment::recovered(recovered, None);
        segment.seal_time_index();
        if self.report.rebuilt_indexes.contains(&base) {
            for (file, data) in segment.index_files() {
                let id = self.io_id();
                self.finish
                    .push_back(IoRequest::WriteFile { id, file, data });
            }
        }
        self.segments.push_back(segment);
        self.begin_segment(scan.index + 1);
    }

    /// The end of a truncating recovery's scan of the segment holding the cut: later
    /// segments removed (and the directory synced), then this file truncated at the cut and
    /// given a whole number of sectors again, then synced (`begin_sync_and_done`).
    fn end_cut(
        &mut self,
        index: usize,
        file_len: u64,
        cut: bool,
        tail_sector: Vec<u8>,
        mut recovered: RecoveredSegment,
    ) {
        let base = self.files[index].base;
        let p = recovered.size;
        let mut requests = std::mem::take(&mut self.cut_removals);
        if self.fenced.is_none() {
            let dropped = if cut {
                file_len
                    .min(align_up(self.files[index].log_data_end))
                    .saturating_sub(p)
            } else {
                0
            };
            self.report.cut = Some((recovered.next_offset, dropped));
            if cut {
                let id = self.io_id();
                requests.push(IoRequest::Truncate {
                    id,
                    file: FileRef::log(base),
                    len: p,
                });
                recovered.file_len = p;
            }
            // The segment takes data again: a whole number of sectors (as after a torn tail).
            let len = align_up(recovered.file_len);
            if len != recovered.file_len {
                let id = self.io_id();
                requests.push(IoRequest::Allocate {
                    id,
                    file: FileRef::log(base),
                    len,
                });
                recovered.file_len = len;
            }
        } else {
            // Fenced: nothing is cut or removed; the damage stays for the operator.
            for request in requests.drain(..) {
                if let IoRequest::Remove { file, .. } = request {
                    let name = file.file_name();
                    self.report.removed_files.retain(|removed| *removed != name);
                }
            }
            recovered.file_len = file_len;
        }
        for request in requests.into_iter().rev() {
            self.finish.push_front(request);
        }
        self.tail_sector = Some(tail_sector);
        self.segments
            .push_back(Segment::recovered(recovered, self.tail_sector.as_deref()));
        self.begin_finish();
    }

    fn fence_at(&mut self, base: Offset, position: u64, detail: String) {
        let reason = FenceReason::Corruption {
            segment: FileRef::log(base).file_name(),
            position,
            detail,
        };
        self.report.corruption = Some(reason.clone());
        self.fenced = Some(reason);
    }

    fn begin_finish(&mut self) {
        // The highest log-start marker holds; the others go. One above the recovered end
        // means durable records were lost after the log start was moved past them (damage:
        // a corruption cut the log short): the log then starts at its end, recorded by a
        // marker of its own first, so the records deleted never come back and no stale
        // marker above the end remains to swallow records appended later.
        let end = self.segments.back().map(|segment| segment.next_offset);
        let highest = self.start_markers.iter().copied().max();
        if self.fenced.is_some() {
            // Damage cut the log short: the segments after it stay on disk for a repair, so
            // the end is not the log's. The markers stay as they are; the log start is only
            // clamped in memory (`next_finish`).
            self.begin_sync_and_done();
            return;
        }
        let kept = match (highest, end) {
            (Some(highest), Some(end)) if highest > end => {
                if !self.start_markers.contains(&end) {
                    let id = self.io_id();
                    self.finish.push_back(IoRequest::Create {
                        id,
                        file: FileRef::log_start(end),
                        allocate: 0,
                    });
                    // Durable before the marker above it goes.
                    let id = self.io_id();
                    self.finish.push_back(IoRequest::SyncDir { id });
                }
                Some(end)
            }
            (highest, _) => highest,
        };
        for marker in std::mem::take(&mut self.start_markers) {
            if Some(marker) == kept {
                continue;
            }
            let file = FileRef::log_start(marker);
            self.report.removed_files.push(file.file_name());
            let id = self.io_id();
            self.finish.push_back(IoRequest::Remove { id, file });
        }
        self.start_markers.extend(kept);
        self.begin_sync_and_done();
    }

    /// The last segment synced, then the directory; then the result.
    fn begin_sync_and_done(&mut self) {
        if let Some(last) = self.segments.back() {
            let file = FileRef::log(last.base);
            let id = self.io_id();
            self.finish.push_back(IoRequest::Sync { id, file });
        }
        let id = self.io_id();
        self.finish.push_back(IoRequest::SyncDir { id });
        self.step = Step::Finish;
        self.next_finish();
    }

    fn next_finish(&mut self) {
        if let Some(request) = self.finish.pop_front() {
            self.step = Step::Finish;
            self.issue(request);
            return;
        }
        self.step = Step::Done;
        let config = self.config.clone();
        let segments = std::mem::take(&mut self.segments);
        let markers = std::mem::take(&mut self.start_markers);
        let marked = markers.iter().copied().max();
        let log = match segments.back() {
            // No segment (a new partition, or one whose files are all gone): the marker
            // still says which offsets were given out.
            None => PartitionLog::starting_at(config, marked.unwrap_or(Offset(0)), markers),
            Some(last) => {
                let end = last.next_offset;
                let log_start = marked.map_or(segments[0].base, |marked| {
                    marked.max(segments[0].base).min(end)
                });
                PartitionLog::assemble(
                    config,
                    segments,
                    log_start,
                    markers,
                    self.fenced.clone(),
                    std::mem::take(&mut self.producers),
                )
            }
        };
        let report = std::mem::take(&mut self.report);
        self.result = Some(Ok(Recovered { log, report }));
    }
}

/// Whether a sealed segment's offset index fits its files: every entry points inside its log
/// file (`log_len` bytes) and at one of its offsets (`span` of them). A later check (the scan
/// from the last entry) rejects much of the same damage; this one rejects it first.
fn offset_index_fits(entries: &[OffsetIndexEntry], log_len: u64, span: u64) -> bool {
    entries.iter().all(|entry| {
        u64::from(entry.position.get()) < log_len && u64::from(entry.relative_offset.get()) < span
    })
}

/// Whether a sealed segment's time index names only its own offsets (`span` of them).
fn time_index_fits(entries: &[TimeIndexEntry], span: u64) -> bool {
    entries
        .iter()
        .all(|entry| u64::from(entry.relative_offset.get()) < span)
}

/// Zeros recovery supplies after `scan_end` instead of reading them: enough to finish any
/// batch that started before it (a batch's last sectors may hold zeros) and to see a zero
/// header after it.
const ZERO_FILL_BYTES: u64 = BATCH_SIZE_MAX as u64 + SECTOR_SIZE as u64;

/// `data` read at `read_at`, with the space from `scan_end` on (never written, so zeros) filled
/// in with zeros up to `ZERO_FILL_BYTES` past it, when the read reached it. The scan then sees
/// what reading those zeros would show, without the reads.
fn zero_filled(scan: &Scan, read_at: u64, data: &Bytes) -> Bytes {
    let read_end = read_at + data.len() as u64;
    if scan.scan_end >= scan.file_len || read_end < scan.scan_end {
        return data.clone();
    }
    let real = usize::try_from(scan.scan_end.saturating_sub(read_at))
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = (read_at.max(scan.scan_end) + ZERO_FILL_BYTES).min(scan.file_len);
    let Ok(len) = usize::try_from(end.saturating_sub(read_at)) else {
        return data.clone();
    };
    let mut filled = bytes::BytesMut::with_capacity(len.max(real));
    filled.extend_from_slice(&data[..real]);
    filled.resize(len.max(real), 0);
    filled.freeze()
}

/// Whether a valid batch starts anywhere after file position `p` in `data` (which holds the
/// file's bytes from `read_at`): a sign that the damage at `p` is not the end of what was
/// written.
pub fn valid_batch_after(data: &[u8], read_at: u64, p: u64) -> bool {
    let Ok(from) = usize::try_from(p - read_at) else {
        return false;
    };
    let magic_at = 28;
    (from + 1..data.len().saturating_sub(BATCH_HEADER_SIZE as usize))
        .filter(|&at| spate_format::batch::is_known_magic(data[at + magic_at]))
        .any(|at| spate_format::BatchRef::parse_prefix(&data[at..]).is_ok())
}

/// Whether the invalid batch at file position `p` looks like sectors that never reached the
/// disk: a sector piece of it reads as zeros to the end of its sector, or the data ends inside
/// it. `data` holds the file's bytes from `read_at`.
pub fn looks_torn(data: &[u8], read_at: u64, p: u64, at_eof: bool) -> bool {
    let chunk_end = read_at + data.len() as u64;
    let Some(rest) = usize::try_from(p - read_at)
        .ok()
        .and_then(|from| data.get(from..))
    else {
        return true;
    };
    let header_len = u64::from(BATCH_HEADER_SIZE);
    // The declared length only counts if the header's own CRC holds.
    let declared = spate_format::batch::header_with_valid_crc(rest)
        .map(|header| u64::from(header.batch_length.get()))
        .filter(|&len| (u64::from(BATCH_SIZE_MIN)..=u64::from(BATCH_SIZE_MAX)).contains(&len));
    let end = p + declared.unwrap_or(header_len);
    if end > chunk_end {
        return at_eof;
    }
    let mut sector = align_down(p);
    while sector < end {
        let from = sector.max(p);
        let to = (sector + u64::from(SECTOR_SIZE)).min(chunk_end);
        let local = |position: u64| usize::try_from(position - read_at).unwrap_or(usize::MAX);
        if data
            .get(local(from)..local(to))
            .is_some_and(|piece| piece.iter().all(|&b| b == 0))
        {
            return true;
        }
        sector += u64::from(SECTOR_SIZE);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::little_endian::{I64, U32};

    fn entry(relative_offset: u32, position: u32) -> OffsetIndexEntry {
        OffsetIndexEntry {
            relative_offset: U32::new(relative_offset),
            position: U32::new(position),
        }
    }

    /// The zeros recovery supplies instead of reading never-written space reach
    /// `ZERO_FILL_BYTES` past the written data, not the end of a large preallocated file (a
    /// segment file can be a GiB of zeros; mutation testing found the bound unpinned).
    #[test]
    fn zero_fill_is_bounded_past_the_written_data() {
        let scan = |scan_end: u64, file_len: u64| Scan::new(0, Offset(0), file_len, scan_end, true);
        let written = Bytes::from(vec![7u8; 8192]);
        // A read at 4 KiB that reached the written data's end (8 KiB) in a 1 GiB file.
        let filled = zero_filled(&scan(8192, 1 << 30), 4096, &written.slice(..4096));
        assert_eq!(filled.len() as u64, 4096 + ZERO_FILL_BYTES);
        assert!(filled[..4096].iter().all(|&byte| byte == 7));
        assert!(filled[4096..].iter().all(|&byte| byte == 0));
        // Never past the file's end; untouched before the written data's end.
        let filled = zero_filled(&scan(8192, 12_288), 0, &written);
        assert_eq!(filled.len(), 12_288);
        let filled = zero_filled(&scan(1 << 20, 1 << 30), 0, &written);
        assert_eq!(filled, written);
    }

    #[test]
    fn index_entries_must_point_inside_their_segment() {
        let entries = [entry(0, 0), entry(49, 999)];
        assert!(offset_index_fits(&entries, 1_000, 50));
        assert!(
            !offset_index_fits(&entries, 999, 50),
            "position at the file's end"
        );
        assert!(
            !offset_index_fits(&entries, 1_000, 49),
            "offset past the segment"
        );
        assert!(!offset_index_fits(&[entry(50, 0)], 1_000, 50));
        let time = |relative: u32| TimeIndexEntry {
            timestamp: I64::new(1),
            relative_offset: U32::new(relative),
        };
        assert!(time_index_fits(&[time(0), time(49)], 50));
        assert!(!time_index_fits(&[time(50)], 50));
    }

    #[test]
    fn a_segment_spans_up_to_the_next_ones_base() {
        let listing: Vec<ListedFile> = [100u64, 150]
            .iter()
            .map(|&base| ListedFile {
                name: FileRef::log(Offset(base)).file_name(),
                len: 4_096,
                data_end: 4_096,
            })
            .collect();
        let recovery = Recovery::new(LogConfig::default(), &listing);
        assert_eq!(recovery.span(0), 50);
        assert_eq!(recovery.span(1), 0, "the last segment has no next");
    }
}
