//! One segment as the log keeps it in memory: its write buffer (shared batches and the carried
//! partial sector), the marks and timestamp raises of what is not durable yet, its sparse
//! indexes, and what a write round takes from it (`take_round`).

use std::collections::VecDeque;

use bytes::Bytes;
use spate_format::index::{OffsetIndexEntry, TimeIndexEntry};
use spate_format::limits::{BATCH_HEADER_SIZE, INDEX_INTERVAL_BYTES, SECTOR_SIZE};
use spate_format::Offset;

use crate::config::ROUND_BYTES_MAX;
use crate::storage::WriteData;
use crate::storage::{align_down, align_up, FileRef};
use crate::tail::{CachedBatch, TailBatch, TailCache};
use crate::Millis;

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
pub(super) struct Mark {
    pub(super) end: u64,
    pub(super) next: Offset,
}

/// A batch that raised its segment's newest timestamp: its first offset, the offset after
/// it, and the timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Raise {
    pub(super) base: Offset,
    pub(super) next: Offset,
    pub(super) timestamp: i64,
}

/// Bytes of a segment not yet handed to a write round: the file's bytes from `start`
/// (sector-aligned) on, as the valid bytes of the unfinished sector at `start` (rewritten with
/// the next round) followed by whole batches. The batches are the producers' bytes, shared,
/// never copied here: each is its stamped header (a copy of 72 bytes) and the rest of the
/// frame it came in (small batches are copied whole: [`SHARED_BATCH_BYTES_MIN`]).
#[derive(Debug)]
pub(super) struct WriteBuffer {
    pub(super) start: u64,
    /// Shorter than a sector; its own small allocation, so an idle partition keeps no
    /// producer's buffer alive.
    pub(super) carry: Bytes,
    pub(super) batches: VecDeque<PendingBatch>,
    /// Bytes of `batches` together.
    pub(super) batch_bytes: u64,
}

pub(super) const HEADER_SIZE: usize = BATCH_HEADER_SIZE as usize;

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
pub(super) fn take_round(buffer: &mut WriteBuffer, tail: &mut TailCache) -> (WriteData, u64) {
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
pub(super) struct PendingBatch {
    pub(super) cached: CachedBatch,
    pub(super) header: Bytes,
    pub(super) rest: Bytes,
}

impl WriteBuffer {
    /// An empty buffer at `start` whose unfinished sector holds `carry` (`start` is
    /// sector-aligned except in a sealed segment, which is never written again).
    pub(super) fn at(start: u64, carry: &[u8]) -> Self {
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
    pub(super) fn end(&self) -> u64 {
        self.start + self.carry.len() as u64 + self.batch_bytes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileState {
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
    pub(super) file: FileState,
    /// Bytes preallocated in the file.
    pub(super) allocated: u64,
    pub(super) written_pos: u64,
    pub(super) durable_pos: u64,
    /// Whether the segment was trimmed, synced and indexed after its roll (or is active).
    pub(super) finalized: bool,
    pub(super) buffer: WriteBuffer,
    pub(super) marks: VecDeque<Mark>,
    /// The newest timestamp of what recovery found (all durable); `i64::MIN` for a segment
    /// created since.
    pub(super) recovered_max_timestamp: i64,
    /// Batches appended since that raised the newest timestamp, oldest first; all but the
    /// last durable one are dropped as the high watermark passes them, so this holds the
    /// durable maximum and the raises still in flight (bounded by the unsynced bytes).
    pub(super) raises: VecDeque<Raise>,
    /// The producer snapshot as of the segment's end, taken at its roll and written with its
    /// index files when it is sealed (`None` for the active segment, and for a sealed one
    /// whose snapshot is on disk already).
    pub(crate) producer_snapshot: Option<Bytes>,
}

impl Segment {
    pub(super) fn new(base: Offset) -> Self {
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
            producer_snapshot: None,
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
            producer_snapshot: None,
        }
    }

    pub(super) fn relative(&self, offset: Offset) -> u32 {
        // Segments roll before relative offsets could leave u32 (checked on append).
        u32::try_from(offset.0 - self.base.0).expect("relative offset fits u32")
    }

    pub(super) fn has_work(&self, active: bool) -> bool {
        self.size > self.durable_pos || (!active && !self.finalized)
    }

    /// The segment's index files (and its producer snapshot, when it has one to write) and
    /// their contents, as written when it is sealed (and by recovery when it rebuilds them).
    pub(crate) fn index_files(&self) -> Vec<(FileRef, Bytes)> {
        use spate_format::index::encode_index;
        let snapshot = self
            .producer_snapshot
            .clone()
            .map(|data| (FileRef::producers(self.base), data));
        let mut files = vec![
            (
                FileRef::offset_index(self.base),
                Bytes::copy_from_slice(encode_index(&self.offset_index)),
            ),
            (
                FileRef::time_index(self.base),
                Bytes::copy_from_slice(encode_index(&self.time_index)),
            ),
        ];
        files.extend(snapshot);
        files
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(index: &[TimeIndexEntry]) -> Vec<(i64, u32)> {
        index
            .iter()
            .map(|entry| (entry.timestamp.get(), entry.relative_offset.get()))
            .collect()
    }

    /// A segment at base 100 of `size` bytes whose last batch starts at relative offset
    /// `last_relative`, with the largest timestamp `max` and the time index `time_index`.
    fn sealed(size: u64, last_relative: u64, max: i64, time_index: &[(i64, u32)]) -> Segment {
        Segment::recovered(
            RecoveredSegment {
                base: Offset(100),
                size,
                file_len: size,
                next_offset: Offset(100 + last_relative + 1),
                last_batch_base: Offset(100 + last_relative),
                max_timestamp: max,
                offset_index: Vec::new(),
                time_index: time_index
                    .iter()
                    .map(|&(timestamp, relative)| TimeIndexEntry::new(timestamp, relative))
                    .collect(),
            },
            None,
        )
    }

    /// Sealing ends a segment's time index with its largest timestamp at its last batch,
    /// unless the last entry already holds it (or already is the last batch's): both fields
    /// keep increasing strictly (docs/format/index.md; mutation testing found it unpinned).
    #[test]
    fn sealing_ends_the_time_index_with_the_segments_maximum() {
        let seal = |mut segment: Segment| {
            segment.seal_time_index();
            entries(&segment.time_index)
        };
        assert_eq!(
            seal(sealed(0, 0, i64::MIN, &[])),
            vec![],
            "an empty segment"
        );
        assert_eq!(seal(sealed(500, 7, 9, &[])), vec![(9, 7)]);
        assert_eq!(seal(sealed(500, 7, 9, &[(5, 3)])), vec![(5, 3), (9, 7)]);
        assert_eq!(
            seal(sealed(500, 7, 9, &[(9, 3)])),
            vec![(9, 3)],
            "maximum held"
        );
        assert_eq!(
            seal(sealed(500, 7, 9, &[(5, 7)])),
            vec![(5, 7)],
            "the last batch has its entry"
        );
    }

    /// The sparse entries: none for the first batch; an offset-index entry for the first
    /// batch at least `INDEX_INTERVAL_BYTES` after the previous entry (exactly there
    /// included), with a time-index entry only if the running maximum grew.
    #[test]
    fn index_entries_come_every_interval_and_time_entries_when_the_maximum_grows() {
        let interval = u64::from(INDEX_INTERVAL_BYTES);
        let mut offsets = Vec::new();
        let mut times = Vec::new();
        let mut last = 0;
        let mut add = |position: u64, relative: u32, max: i64| {
            add_index_entries(&mut offsets, &mut times, &mut last, position, relative, max);
            (
                offsets
                    .iter()
                    .map(|entry: &OffsetIndexEntry| {
                        (entry.relative_offset.get(), entry.position.get())
                    })
                    .collect::<Vec<_>>(),
                entries(&times),
            )
        };
        assert_eq!(add(0, 0, 10), (vec![], vec![]), "the first batch");
        assert_eq!(add(100, 1, 11), (vec![], vec![]), "within the interval");
        assert_eq!(
            add(interval - 1, 2, 11),
            (vec![], vec![]),
            "one byte short of the interval"
        );
        let at = u32::try_from(interval).unwrap();
        assert_eq!(add(interval, 3, 12), (vec![(3, at)], vec![(12, 3)]));
        assert_eq!(
            add(2 * interval, 4, 12),
            (vec![(3, at), (4, 2 * at)], vec![(12, 3)]),
            "the maximum did not grow"
        );
        assert_eq!(
            add(3 * interval + 1, 5, 13),
            (
                vec![(3, at), (4, 2 * at), (5, 3 * at + 1)],
                vec![(12, 3), (13, 5)]
            )
        );
    }
}
