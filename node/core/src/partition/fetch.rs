//! Fetch planning: where a fetch's answer comes from (the tail cache, the bytes an earlier
//! read brought in beyond its answer, or a segment file read) and how a read is cut to whole
//! batches (`PartitionLog::handle_read`); the timestamp searches of ListOffsets.
//!
//! A read covers the batch holding the offset and `max_bytes` after it (at least
//! `LogConfig::fetch_read_bytes`), not more: catch-up reads touch each byte of the file about once.
//! What a read brings in beyond its answer (whole batches that did not fit `max_bytes`, or a
//! small fetch's read-ahead) is kept for the partition's next fetch ([`ReadAhead`]), bounded
//! by the caller (`keep_max`) and dropped after `READ_AHEAD_KEEP_MS`.

use bytes::Bytes;
use spate_format::index::lookup_offset;
use spate_format::limits::{BATCH_HEADER_SIZE, BATCH_SIZE_MAX, INDEX_INTERVAL_BYTES};
use spate_format::segment::{EndReason, ScanEnd, SegmentScanner};
use spate_format::{BatchError, Offset};
use thiserror::Error;

use crate::storage::{align_down, align_up, FileRef};
use crate::Millis;

use super::PartitionLog;

/// How long the bytes a read brought in beyond its answer are kept for the next fetch.
pub const READ_AHEAD_KEEP_MS: i64 = 1_000;

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
    /// Whole batches from the tail cache or from an earlier read's read-ahead.
    Ready(Bytes),
    /// Read these bytes and pass them to [`PartitionLog::handle_read`].
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
    /// The answer holds no batch that ends after this offset (the visible end for a
    /// consumer, the written end for a replica).
    pub(super) end: Offset,
    /// This read continues one that ended inside the batch holding `offset`: it covers that
    /// whole batch, so another continuation means damage.
    pub(super) continued: bool,
}

/// What a completed read gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadDone {
    /// The fetch's answer: whole batches from the one holding its offset.
    Answer(Bytes),
    /// The batch holding the offset goes on past the bytes read: read this as well (at most
    /// once per fetch) and pass it to [`PartitionLog::handle_read`] again.
    More(ReadPlan),
}

/// Bytes of a segment file that a read brought in beyond its answer, kept for the next fetch:
/// they start at a batch boundary and lie below the segment's durable end as it was then
/// (which only grows), so they stay true while the segment exists.
#[derive(Debug, Clone)]
pub(super) struct ReadAhead {
    file: FileRef,
    /// File position of `data`'s first byte.
    position: u64,
    /// The offset of the batch at `position`.
    offset: Offset,
    data: Bytes,
    kept_at: Millis,
}

impl ReadAhead {
    pub(super) fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub(super) fn is_stale(&self, now: Millis) -> bool {
        // A wall clock stepped back drops it too: it is only a cache.
        now.0 < self.kept_at.0 || now.0 - self.kept_at.0 >= READ_AHEAD_KEEP_MS
    }
}

/// The whole batches an answer takes from a scan: from the one holding `offset`, within
/// `max_bytes` (at least one).
#[derive(Debug, Clone, Copy)]
struct Selected {
    start: u64,
    end: u64,
    /// The offset after the last batch taken.
    next: Offset,
    /// The scan showed that the batch after the last one taken does not fit `max_bytes` (it
    /// was read whole, or its header says its length).
    full: bool,
}

fn select(scanner: &mut SegmentScanner<'_>, offset: Offset, max_bytes: u32) -> Option<Selected> {
    let mut selected: Option<Selected> = None;
    for batch in scanner.by_ref() {
        if batch.last_offset < offset {
            continue;
        }
        match &mut selected {
            None => {
                selected = Some(Selected {
                    start: batch.position,
                    end: batch.end_position(),
                    next: batch.next_offset(),
                    full: false,
                });
            }
            Some(taken) => {
                if batch.end_position() - taken.start > u64::from(max_bytes) {
                    taken.full = true;
                    break;
                }
                taken.end = batch.end_position();
                taken.next = batch.next_offset();
            }
        }
    }
    let mut selected = selected?;
    if let Some(ScanEnd {
        reason: EndReason::InvalidBatch(BatchError::Truncated { needed, .. }),
        ..
    }) = scanner.end()
    {
        // The bytes ran out inside the next batch; its length (or the header's, a lower
        // bound) says whether it would have fit.
        selected.full |= selected.end - selected.start + needed > u64::from(max_bytes);
    }
    Some(selected)
}

/// A read cut into its answer and what is left over for the next fetch.
enum Cut {
    Answer {
        answer: Bytes,
        /// (position, offset, bytes) after the answer, within the durable end.
        rest: Option<(u64, Offset, Bytes)>,
    },
    More(ReadPlan),
}

impl ReadPlan {
    /// Cuts the answer out of the bytes read at `self.position`: whole batches from the one
    /// holding the offset, within `max_bytes` (at least one) and the durable end; or, when
    /// the read ended inside the batch holding the offset, the read that completes it.
    fn cut(&self, data: &Bytes) -> Result<Cut, FetchError> {
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
        // A damaged batch after some good ones ends the answer early; the next fetch starts
        // at it and reports it.
        let Some(selected) = select(&mut scanner, self.offset, self.max_bytes) else {
            let end = scanner.end();
            if let Some(end) = end.filter(|end| {
                matches!(
                    end.reason,
                    EndReason::InvalidBatch(BatchError::Truncated { .. })
                ) && !self.continued
                    && available < limit
            }) {
                // The read stopped inside a batch, below the durable end: read that batch.
                let position = align_down(end.position);
                let want = end.position + u64::from(BATCH_SIZE_MAX);
                return Ok(Cut::More(ReadPlan {
                    position,
                    len: align_up(want.min(self.limit)) - position,
                    scan_from: end.position,
                    scan_offset: scanner.next_offset().unwrap_or(self.scan_offset),
                    continued: true,
                    ..self.clone()
                }));
            }
            let detail = match end {
                Some(end) => format!("{:?}", end.reason),
                None => "no batch".into(),
            };
            return Err(corrupt(
                self.scan_from,
                format!("offset {} not found: {detail}", self.offset),
            ));
        };
        let at = |position: u64| usize::try_from(position - self.position).unwrap_or(usize::MAX);
        let answer = data.slice(at(selected.start)..at(selected.end));
        let rest = (available - at(selected.end) >= BATCH_HEADER_SIZE as usize).then(|| {
            (
                selected.end,
                selected.next,
                data.slice(at(selected.end)..available),
            )
        });
        Ok(Cut::Answer { answer, rest })
    }
}

impl PartitionLog {
    /// Decides how to answer a fetch from `offset` of at most `max_bytes` (at least one batch).
    /// Takes the answer from the read-ahead when it holds the batch at `offset`.
    pub fn handle_fetch(
        &mut self,
        offset: Offset,
        max_bytes: u32,
    ) -> Result<FetchPlan, FetchError> {
        let visible = self.high_watermark();
        self.plan_fetch(offset, max_bytes, visible, false)
    }

    /// A follower's fetch: like [`PartitionLog::handle_fetch`] but bounded by the *written*
    /// end, not the visible one (followers read past the high watermark: that is how it
    /// moves), and never from the consumers' read-ahead. Pass the read's bytes to
    /// [`PartitionLog::handle_read`] with `keep_max` 0.
    pub fn handle_fetch_replica(
        &mut self,
        offset: Offset,
        max_bytes: u32,
    ) -> Result<FetchPlan, FetchError> {
        let written = self.written;
        self.plan_fetch(offset, max_bytes, written, true)
    }

    fn plan_fetch(
        &mut self,
        offset: Offset,
        max_bytes: u32,
        end: Offset,
        replica: bool,
    ) -> Result<FetchPlan, FetchError> {
        if offset < self.log_start || offset > end {
            return Err(FetchError::OutOfRange {
                offset,
                log_start: self.log_start,
                high_watermark: end,
            });
        }
        if offset == end {
            return Ok(FetchPlan::AtEnd);
        }
        let index = self
            .segments
            .partition_point(|segment| segment.base <= offset)
            - 1;
        let segment = &self.segments[index];
        let limit = if replica {
            segment.written_pos
        } else {
            segment.durable_pos
        };
        if let Some(bytes) = self.tail.read(offset, limit, max_bytes) {
            return Ok(FetchPlan::Ready(cap_at(bytes, end)));
        }
        let file = FileRef::log(segment.base);
        let relative = segment.relative(offset);
        let (scan_from, scan_offset) = match lookup_offset(&segment.offset_index, relative) {
            Some(entry) => (
                u64::from(entry.position.get()),
                Offset(segment.base.0 + u64::from(entry.relative_offset.get())),
            ),
            None => (0, segment.base),
        };
        if !replica {
            if let Some(bytes) = self.take_read_ahead(&file, offset, max_bytes, limit) {
                return Ok(FetchPlan::Ready(cap_at(bytes, end)));
            }
        }
        // The batch holding `offset` starts less than an index interval after the entry
        // (the index has an entry once an interval passed), so this covers the answer.
        let position = align_down(scan_from);
        let want = scan_from
            + u64::from(INDEX_INTERVAL_BYTES)
            + u64::from(max_bytes.max(self.config.fetch_read_bytes));
        let read_end = align_up(want.min(limit));
        Ok(FetchPlan::Read(ReadPlan {
            file,
            position,
            len: read_end - position,
            scan_from,
            scan_offset,
            offset,
            max_bytes,
            limit,
            end,
            continued: false,
        }))
    }

    /// The answer to a fetch from the bytes an earlier read brought in beyond its answer, if
    /// they hold as much as a read would answer: whole batches from the one at `offset` up to
    /// one that does not fit `max_bytes`, or up to the segment's durable end `limit`. What
    /// stays is kept for the next fetch. Read-ahead that cannot answer is dropped (the reader
    /// moved elsewhere, or it holds too little).
    fn take_read_ahead(
        &mut self,
        file: &FileRef,
        offset: Offset,
        max_bytes: u32,
        limit: u64,
    ) -> Option<Bytes> {
        let ahead = self.read_ahead.take()?;
        if ahead.file != *file || offset < ahead.offset {
            return None;
        }
        let mut scanner = SegmentScanner::new(&ahead.data, ahead.position, Some(ahead.offset));
        let selected = select(&mut scanner, offset, max_bytes)
            .filter(|selected| selected.full || selected.end == limit)?;
        let at = |position: u64| usize::try_from(position - ahead.position).unwrap_or(usize::MAX);
        let answer = ahead.data.slice(at(selected.start)..at(selected.end));
        let rest = ahead.data.slice(at(selected.end)..);
        if rest.len() >= BATCH_HEADER_SIZE as usize {
            self.read_ahead = Some(ReadAhead {
                position: selected.end,
                offset: selected.next,
                data: rest,
                ..ahead
            });
        }
        Some(answer)
    }

    /// Completes a fetch's read (`data`, read as `plan` said): its answer, or the read that
    /// must follow. Bytes read beyond the answer are kept for the next fetch when there are
    /// at most `keep_max` of them (the shell's bound over all its partitions).
    pub fn handle_read(
        &mut self,
        now: Millis,
        plan: &ReadPlan,
        data: &Bytes,
        keep_max: u64,
    ) -> Result<ReadDone, FetchError> {
        match plan.cut(data)? {
            Cut::More(next) => Ok(ReadDone::More(next)),
            Cut::Answer { answer, rest } => {
                let answer = cap_at(answer, plan.end);
                self.read_ahead = rest
                    .filter(|(_, _, bytes)| bytes.len() as u64 <= keep_max)
                    .map(|(position, offset, data)| ReadAhead {
                        file: plan.file,
                        position,
                        offset,
                        data,
                        kept_at: now,
                    });
                Ok(ReadDone::Answer(answer))
            }
        }
    }

    /// Bytes kept from reads for the next fetch (the shell bounds their sum over a shard).
    pub fn read_ahead_bytes(&self) -> u64 {
        self.read_ahead.as_ref().map_or(0, ReadAhead::len)
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
            .take_while(|segment| segment.base < self.high_watermark())
            .filter(|segment| segment.next_offset > self.log_start)
        {
            let raised = segment
                .raises
                .front()
                .filter(|raise| raise.next <= self.high_watermark())
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
            .take_while(|segment| segment.base < self.high_watermark())
            .filter(|segment| segment.next_offset > self.log_start)
            .find(|segment| segment.max_timestamp >= timestamp)?;
        let start = spate_format::index::lookup_time(&segment.time_index, timestamp)
            .map_or(segment.base, |entry| {
                Offset(segment.base.0 + u64::from(entry.relative_offset.get()))
            });
        Some(start.max(self.log_start))
    }
}

/// The whole batches of `bytes` (back to back, from this log) that end at or before `end`.
/// A replicated leader's visible end can be below what a read or the tail cache holds; it is
/// always a batch boundary, so the batch holding a fetch's offset below it is kept whole.
fn cap_at(bytes: Bytes, end: Offset) -> Bytes {
    let mut at = 0usize;
    for (start, header) in spate_format::batch_headers(&bytes) {
        let next = header
            .base_offset
            .get()
            .saturating_add(u64::from(header.last_offset_delta.get()))
            .saturating_add(1);
        if next > end.0 {
            break;
        }
        at = start + header.batch_length.get() as usize;
    }
    if at == bytes.len() {
        bytes
    } else {
        bytes.slice(..at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_format::batch::stamp;
    use spate_format::{BatchBuilder, Record};

    /// A stamped batch of one record with `value_len` bytes at `offset`.
    fn stamped(offset: u64, value_len: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        let value = vec![7u8; value_len];
        builder
            .push(&Record {
                timestamp: 1,
                value: Some(&value),
                ..Record::default()
            })
            .unwrap();
        let mut bytes = builder.finish().unwrap();
        stamp(&mut bytes, Offset(offset), 1).unwrap();
        bytes
    }

    /// Read-ahead is kept from the moment it was read for `READ_AHEAD_KEEP_MS`; a clock that
    /// went back drops it (mutation testing found these bounds unpinned).
    #[test]
    fn read_ahead_goes_stale_after_its_time_or_when_the_clock_goes_back() {
        let kept = ReadAhead {
            file: FileRef::log(Offset(0)),
            position: 0,
            offset: Offset(0),
            data: Bytes::new(),
            kept_at: Millis(10_000),
        };
        assert!(!kept.is_stale(Millis(10_000)));
        assert!(!kept.is_stale(Millis(10_000 + READ_AHEAD_KEEP_MS - 1)));
        assert!(kept.is_stale(Millis(10_000 + READ_AHEAD_KEEP_MS)));
        assert!(kept.is_stale(Millis(9_999)));
    }

    /// When the bytes end inside the batch after the ones taken, that batch's length (from its
    /// header) says whether it would have fit `max_bytes`: `full` exactly when it would not.
    #[test]
    fn a_truncated_next_batch_counts_by_its_length() {
        let first = stamped(0, 100);
        let second = stamped(1, 300);
        let mut bytes = first.clone();
        bytes.extend_from_slice(&second[..second.len() - 10]);
        let both = u32::try_from(first.len() + second.len()).unwrap();
        for (max_bytes, full) in [(both, false), (both - 1, true), (both + 1, false)] {
            let mut scanner = SegmentScanner::new(&bytes, 0, Some(Offset(0)));
            let selected = select(&mut scanner, Offset(0), max_bytes).unwrap();
            assert_eq!(selected.end, first.len() as u64);
            assert_eq!(selected.next, Offset(1));
            assert_eq!(selected.full, full, "max_bytes {max_bytes}");
        }
        // A whole next batch that does not fit: full, and not taken.
        let mut whole = first.clone();
        whole.extend_from_slice(&second);
        let mut scanner = SegmentScanner::new(&whole, 0, Some(Offset(0)));
        let selected = select(&mut scanner, Offset(0), both - 1).unwrap();
        assert!(selected.full);
        assert_eq!(selected.end, first.len() as u64);
    }
}
