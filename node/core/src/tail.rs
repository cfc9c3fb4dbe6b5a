//! The tail cache: recently written bytes of a partition kept in memory, so consumers at the
//! tail are served without disk reads.
//!
//! Invariants: the cache holds at most its byte budget plus one write round; chunks of one
//! segment are in position order and each next chunk starts at or before the end of the one
//! before (write rounds rewrite the unfinished last sector), so any covered range is found by
//! walking chunks forward; a batch is listed in `batches` only while its bytes are cached.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use spate_format::Offset;

/// Bytes of one write round: the segment's bytes `[start, end)` are `data[..end - start]`.
#[derive(Debug, Clone)]
struct Chunk {
    segment: Offset,
    start: u64,
    end: u64,
    data: Bytes,
}

/// Where a cached batch lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedBatch {
    pub segment: Offset,
    pub base_offset: Offset,
    /// Offset after the batch's last record.
    pub next_offset: Offset,
    pub position: u64,
    pub len: u32,
}

impl CachedBatch {
    pub fn end(&self) -> u64 {
        self.position + u64::from(self.len)
    }
}

#[derive(Debug)]
pub struct TailCache {
    budget: u64,
    chunks: VecDeque<Chunk>,
    chunk_bytes: u64,
    batches: VecDeque<CachedBatch>,
}

impl TailCache {
    pub fn new(budget: u64) -> Self {
        TailCache {
            budget,
            chunks: VecDeque::new(),
            chunk_bytes: 0,
            batches: VecDeque::new(),
        }
    }

    /// Records a batch appended at `position` of `segment`; its bytes arrive with the round
    /// that writes them.
    pub fn push_batch(&mut self, batch: CachedBatch) {
        if self.budget > 0 {
            self.batches.push_back(batch);
        }
    }

    /// Adds the bytes of a write round and evicts the oldest chunks beyond the budget.
    pub fn push_chunk(&mut self, segment: Offset, start: u64, end: u64, data: Bytes) {
        if self.budget == 0 {
            return;
        }
        self.chunk_bytes += data.len() as u64;
        self.chunks.push_back(Chunk {
            segment,
            start,
            end,
            data,
        });
        while self.chunk_bytes > self.budget && self.chunks.len() > 1 {
            if let Some(chunk) = self.chunks.pop_front() {
                self.chunk_bytes -= chunk.data.len() as u64;
            }
        }
        self.drop_uncovered();
    }

    /// Forgets everything of the segments below `log_start` (deleted by retention).
    pub fn drop_segments_below(&mut self, log_start: Offset) {
        while self
            .chunks
            .front()
            .is_some_and(|chunk| chunk.segment < log_start)
        {
            if let Some(chunk) = self.chunks.pop_front() {
                self.chunk_bytes -= chunk.data.len() as u64;
            }
        }
        while self
            .batches
            .front()
            .is_some_and(|batch| batch.segment < log_start)
        {
            self.batches.pop_front();
        }
        self.drop_uncovered();
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.chunk_bytes = 0;
        self.batches.clear();
    }

    /// Drops batch entries whose first byte is no longer cached: everything before the oldest
    /// chunk (chunks cover each segment contiguously from their first one on).
    fn drop_uncovered(&mut self) {
        let Some(oldest) = self.chunks.front() else {
            return;
        };
        let (segment, start) = (oldest.segment, oldest.start);
        while self.batches.front().is_some_and(|batch| {
            batch.segment < segment || (batch.segment == segment && batch.position < start)
        }) {
            self.batches.pop_front();
        }
    }

    /// The cached batches from the one holding `offset` on, as long as they are in the same
    /// segment, end at or before `limit`, and fit `max_bytes` (the first always counts).
    pub fn read(&self, offset: Offset, limit: u64, max_bytes: u32) -> Option<Bytes> {
        let first = self
            .batches
            .partition_point(|batch| batch.next_offset <= offset);
        let head = self.batches.get(first)?;
        if head.base_offset > offset || head.end() > limit {
            return None;
        }
        let mut end = head.end();
        for batch in self.batches.range(first + 1..) {
            if batch.segment != head.segment
                || batch.end() > limit
                || batch.end() - head.position > u64::from(max_bytes)
            {
                break;
            }
            end = batch.end();
        }
        self.bytes(head.segment, head.position, end)
    }

    /// The segment's bytes `[start, end)`, if all are cached.
    fn bytes(&self, segment: Offset, start: u64, end: u64) -> Option<Bytes> {
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut cursor = start;
        // The latest chunk that starts at or before the cursor has the newest copy of it.
        while cursor < end {
            let chunk = self.chunks.iter().rev().find(|chunk| {
                chunk.segment == segment && chunk.start <= cursor && cursor < chunk.end
            })?;
            let piece_end = end.min(chunk.end);
            let from = usize::try_from(cursor - chunk.start).ok()?;
            let to = usize::try_from(piece_end - chunk.start).ok()?;
            pieces.push(chunk.data.slice(from..to));
            cursor = piece_end;
        }
        match pieces.len() {
            0 => None,
            1 => pieces.pop(),
            _ => {
                let mut joined = BytesMut::with_capacity(usize::try_from(end - start).ok()?);
                for piece in pieces {
                    joined.extend_from_slice(&piece);
                }
                Some(joined.freeze())
            }
        }
    }
}
