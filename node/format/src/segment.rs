//! Segment files: their names and the scanner that finds the valid prefix of a segment's
//! bytes, the heart of recovery.
//!
//! Invariants of the scanner: it never panics and allocates at most one small record per
//! valid batch; every batch it returns passed `BatchRef::parse` (both CRCs) and continues the
//! offsets of the one before it; `ScanEnd::position` is the first byte not covered by a valid
//! batch. Deciding whether an invalid end is a torn tail or corruption is recovery's job
//! (`spate-core`), because only it knows where the last durable point was. Specified in
//! `docs/format/segment.md`.

use crate::batch::{BatchRef, ProducerFields};
use crate::error::{BatchError, FileNameError};
use crate::limits::BATCH_HEADER_SIZE;
use crate::Offset;

/// Extension of segment (log) files.
pub const LOG_EXTENSION: &str = "log";
/// Extension of offset-index files.
pub const OFFSET_INDEX_EXTENSION: &str = "index";
/// Extension of time-index files.
pub const TIME_INDEX_EXTENSION: &str = "timeindex";
/// Extension of log-start markers: an empty file whose name is the partition's log start
/// (moved forward by DeleteRecords); the name is the whole content, so creating it is atomic.
pub const LOG_START_EXTENSION: &str = "start";
/// Extension of producer snapshots: the idempotent producers' state as of the end of the
/// segment with the same base offset (`docs/format/producer-snapshot.md`).
pub const PRODUCERS_EXTENSION: &str = "producers";

/// Number of digits of the base offset in a segment file name.
pub const FILE_NAME_DIGITS: usize = 20;

/// The kind of a file in a partition directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentFileKind {
    Log,
    OffsetIndex,
    TimeIndex,
    /// A log-start marker: its "base" is the log start it records.
    LogStart,
    /// A producer snapshot, named by the segment whose end it describes.
    Producers,
}

impl SegmentFileKind {
    pub fn extension(self) -> &'static str {
        match self {
            SegmentFileKind::Log => LOG_EXTENSION,
            SegmentFileKind::OffsetIndex => OFFSET_INDEX_EXTENSION,
            SegmentFileKind::TimeIndex => TIME_INDEX_EXTENSION,
            SegmentFileKind::LogStart => LOG_START_EXTENSION,
            SegmentFileKind::Producers => PRODUCERS_EXTENSION,
        }
    }
}

/// The file name of a segment's file: the base offset in 20 decimal digits, zero-padded, so
/// that names sort like offsets.
pub fn segment_file_name(base_offset: Offset, kind: SegmentFileKind) -> String {
    format!("{:020}.{}", base_offset.0, kind.extension())
}

/// Parses a name made by [`segment_file_name`].
pub fn parse_segment_file_name(name: &str) -> Result<(Offset, SegmentFileKind), FileNameError> {
    let unrecognised = || FileNameError::Unrecognised(name.to_owned());
    let (digits, extension) = name.split_once('.').ok_or_else(unrecognised)?;
    if digits.len() != FILE_NAME_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(unrecognised());
    }
    let kind = match extension {
        LOG_EXTENSION => SegmentFileKind::Log,
        OFFSET_INDEX_EXTENSION => SegmentFileKind::OffsetIndex,
        TIME_INDEX_EXTENSION => SegmentFileKind::TimeIndex,
        LOG_START_EXTENSION => SegmentFileKind::LogStart,
        PRODUCERS_EXTENSION => SegmentFileKind::Producers,
        _ => return Err(unrecognised()),
    };
    let base: u64 = digits.parse().map_err(|_| unrecognised())?;
    if base > crate::limits::OFFSET_MAX {
        return Err(unrecognised());
    }
    Ok((Offset(base), kind))
}

/// What the scanner learned about one valid batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// File position of the batch's first byte.
    pub position: u64,
    pub length: u32,
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub record_count: u32,
    pub max_timestamp: i64,
    pub append_time: i64,
    /// The idempotent producer's fields as the producer wrote them.
    pub producer: ProducerFields,
}

impl BatchInfo {
    pub fn end_position(&self) -> u64 {
        self.position + u64::from(self.length)
    }

    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset.0 + 1)
    }
}

/// Why the valid prefix ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The bytes ended exactly after a valid batch (or were empty).
    Clean,
    /// Everything from the end position on is zero: preallocated space never written.
    ZeroPadding,
    /// The bytes at the end position are not a valid batch: torn or corrupt. A
    /// [`BatchError::Truncated`] means the bytes ran out inside a batch whose header is valid
    /// (or inside a header that is not all zero).
    InvalidBatch(BatchError),
    /// A valid batch whose base offset does not continue the offsets before it.
    OffsetMismatch { expected: Offset, found: Offset },
}

/// Where and why the valid prefix of a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// File position of the first byte after the valid prefix.
    pub position: u64,
    pub reason: EndReason,
}

/// Scans segment bytes batch by batch. As an iterator it yields every valid batch; once it
/// returns `None`, [`SegmentScanner::end`] says where and why the valid prefix ended.
#[derive(Debug, Clone)]
pub struct SegmentScanner<'a> {
    bytes: &'a [u8],
    start_position: u64,
    cursor: usize,
    next_offset: Option<Offset>,
    end: Option<ScanEnd>,
}

impl<'a> SegmentScanner<'a> {
    /// `bytes` starts at a batch boundary at file position `start_position`. When
    /// `expected_offset` is given, the first batch must start at that offset (the segment's
    /// base offset, or the offset an index entry promised); every later batch must continue
    /// the one before it either way.
    pub fn new(bytes: &'a [u8], start_position: u64, expected_offset: Option<Offset>) -> Self {
        SegmentScanner {
            bytes,
            start_position,
            cursor: 0,
            next_offset: expected_offset,
            end: None,
        }
    }

    /// Where and why the scan ended, once the iterator is exhausted.
    pub fn end(&self) -> Option<ScanEnd> {
        self.end
    }

    /// The offset the next batch would have, if any batch was valid or one was expected.
    pub fn next_offset(&self) -> Option<Offset> {
        self.next_offset
    }

    /// Runs the scan to its end and returns every valid batch and the end.
    pub fn scan(mut self) -> (Vec<BatchInfo>, ScanEnd) {
        let batches: Vec<BatchInfo> = self.by_ref().collect();
        let end = self.end.unwrap_or(ScanEnd {
            position: self.file_position(),
            reason: EndReason::Clean,
        });
        (batches, end)
    }

    fn file_position(&self) -> u64 {
        self.start_position + u64::try_from(self.cursor).unwrap_or(u64::MAX)
    }

    fn stop(&mut self, reason: EndReason) -> Option<BatchInfo> {
        self.end = Some(ScanEnd {
            position: self.file_position(),
            reason,
        });
        None
    }
}

impl Iterator for SegmentScanner<'_> {
    type Item = BatchInfo;

    fn next(&mut self) -> Option<BatchInfo> {
        if self.end.is_some() {
            return None;
        }
        let rest = &self.bytes[self.cursor..];
        if rest.is_empty() {
            return self.stop(EndReason::Clean);
        }
        // A zero header is never valid (its magic is 0). If everything after it is zero too,
        // this is space that was preallocated but never written.
        let header_zero = rest
            .iter()
            .take(BATCH_HEADER_SIZE as usize)
            .all(|&byte| byte == 0);
        if header_zero && rest.iter().all(|&byte| byte == 0) {
            return self.stop(EndReason::ZeroPadding);
        }
        let batch = match BatchRef::parse_prefix(rest) {
            Ok(batch) => batch,
            Err(error) => return self.stop(EndReason::InvalidBatch(error)),
        };
        if let Some(expected) = self.next_offset {
            if batch.base_offset() != expected {
                let found = batch.base_offset();
                return self.stop(EndReason::OffsetMismatch { expected, found });
            }
        }
        let info = BatchInfo {
            position: self.file_position(),
            length: batch.len(),
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
            record_count: batch.record_count(),
            max_timestamp: batch.max_timestamp(),
            append_time: batch.append_time(),
            producer: batch.producer(),
        };
        self.cursor += batch.len() as usize;
        self.next_offset = Some(info.next_offset());
        Some(info)
    }
}

/// Scans `bytes` (starting at a batch boundary at `start_position`) and returns the valid
/// batches and where and why the valid prefix ended.
pub fn scan_segment(
    bytes: &[u8],
    start_position: u64,
    expected_offset: Option<Offset>,
) -> (Vec<BatchInfo>, ScanEnd) {
    SegmentScanner::new(bytes, start_position, expected_offset).scan()
}
