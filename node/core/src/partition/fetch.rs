//! Fetch planning: where a fetch's answer comes from (the tail cache or a segment file read)
//! and how a read is cut to whole batches (`ReadPlan::complete`); the timestamp searches of
//! ListOffsets.

use bytes::Bytes;
use spate_format::index::lookup_offset;
use spate_format::limits::{BATCH_SIZE_MAX, INDEX_INTERVAL_BYTES};
use spate_format::segment::SegmentScanner;
use spate_format::Offset;
use thiserror::Error;

use crate::storage::{align_down, align_up, FileRef};

use super::PartitionLog;

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
    pub(super) scan_from: u64,
    pub(super) scan_offset: Offset,
    pub(super) offset: Offset,
    pub(super) max_bytes: u32,
    /// Batches must end at or before this position (the segment's durable end).
    pub(super) limit: u64,
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

impl PartitionLog {
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
