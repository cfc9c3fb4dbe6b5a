//! The tail cache: recently written batches of a partition kept in memory, so consumers at
//! the tail are served without disk reads.
//!
//! Invariants: the cache holds at most its byte budget plus one batch; batches are in offset
//! order, each segment's batches in position order and back to back; a batch enters when the
//! write round that writes it is built, never before (its bytes are final then).
//!
//! A batch is kept as the pieces the log appended (its stamped header and the rest, shared
//! with the producer's frame; a small batch whole, in an allocation of its own: see
//! `partition::SHARED_BATCH_BYTES_MIN`), not copied into a buffer of the cache.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use spate_format::Offset;

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

/// A batch and its bytes: the stamped header, then the rest.
#[derive(Debug, Clone)]
pub struct TailBatch {
    pub batch: CachedBatch,
    pub header: Bytes,
    pub rest: Bytes,
}

impl TailBatch {
    fn bytes(&self) -> u64 {
        u64::from(self.batch.len)
    }
}

#[derive(Debug)]
pub struct TailCache {
    budget: u64,
    batches: VecDeque<TailBatch>,
    bytes: u64,
}

impl TailCache {
    pub fn new(budget: u64) -> Self {
        TailCache {
            budget,
            batches: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Adds a batch a write round is about to write, and evicts the oldest beyond the budget.
    pub fn push(&mut self, batch: TailBatch) {
        if self.budget == 0 {
            return;
        }
        assert_eq!(
            batch.header.len() + batch.rest.len(),
            batch.batch.len as usize,
            "a cached batch's pieces make up the batch"
        );
        self.bytes += batch.bytes();
        self.batches.push_back(batch);
        while self.bytes > self.budget && self.batches.len() > 1 {
            if let Some(evicted) = self.batches.pop_front() {
                self.bytes -= evicted.bytes();
            }
        }
    }

    /// Forgets everything of the segments below `log_start` (deleted by retention).
    pub fn drop_segments_below(&mut self, log_start: Offset) {
        while self
            .batches
            .front()
            .is_some_and(|cached| cached.batch.segment < log_start)
        {
            if let Some(evicted) = self.batches.pop_front() {
                self.bytes -= evicted.bytes();
            }
        }
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// The cached batches from the one holding `offset` on, as long as they are in the same
    /// segment, end at or before `limit`, and fit `max_bytes` (the first always counts),
    /// joined into one buffer.
    pub fn read(&self, offset: Offset, limit: u64, max_bytes: u32) -> Option<Bytes> {
        let first = self
            .batches
            .partition_point(|cached| cached.batch.next_offset <= offset);
        let head = self.batches.get(first)?.batch;
        if head.base_offset > offset || head.end() > limit {
            return None;
        }
        let mut count = 1;
        let mut end = head.end();
        for cached in self.batches.range(first + 1..) {
            let batch = cached.batch;
            if batch.segment != head.segment
                || batch.end() > limit
                || batch.end() - head.position > u64::from(max_bytes)
            {
                break;
            }
            assert_eq!(batch.position, end, "cached batches lie back to back");
            end = batch.end();
            count += 1;
        }
        if count == 1 && self.batches[first].rest.is_empty() {
            // A small batch is one piece already.
            return Some(self.batches[first].header.clone());
        }
        let mut joined = BytesMut::with_capacity(usize::try_from(end - head.position).ok()?);
        for cached in self.batches.range(first..first + count) {
            joined.extend_from_slice(&cached.header);
            joined.extend_from_slice(&cached.rest);
        }
        Some(joined.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 100-byte batch of one record at `offset` in `segment`, at `position`.
    fn batch(segment: u64, offset: u64, position: u64) -> TailBatch {
        TailBatch {
            batch: CachedBatch {
                segment: Offset(segment),
                base_offset: Offset(offset),
                next_offset: Offset(offset + 1),
                position,
                len: 100,
            },
            header: Bytes::from(vec![0x5a; 100]),
            rest: Bytes::new(),
        }
    }

    /// Mutation testing found these unpinned.
    #[test]
    fn the_cache_keeps_up_to_its_budget_and_forgets_deleted_segments() {
        let mut cache = TailCache::new(300);
        for offset in 0..3 {
            cache.push(batch(0, offset, offset * 100));
        }
        assert!(
            cache.read(Offset(0), 300, 100).is_some(),
            "exactly the budget is kept"
        );
        cache.push(batch(3, 3, 0));
        assert!(
            cache.read(Offset(0), 300, 100).is_none(),
            "over it, the oldest goes"
        );
        assert!(cache.read(Offset(1), 300, 100).is_some());
        // A budget below one batch still keeps the newest.
        let mut small = TailCache::new(10);
        small.push(batch(0, 0, 0));
        small.push(batch(0, 1, 100));
        assert!(small.read(Offset(0), 200, 100).is_none());
        assert!(small.read(Offset(1), 200, 100).is_some());
        // Retention deleted segment 0: its batches go, segment 3's stay.
        cache.drop_segments_below(Offset(3));
        assert!(cache.read(Offset(1), 300, 100).is_none());
        assert!(cache.read(Offset(2), 300, 100).is_none());
        assert!(cache.read(Offset(3), 100, 100).is_some());
        cache.drop_segments_below(Offset(3));
        assert!(cache.read(Offset(3), 100, 100).is_some(), "not below: kept");
        // What was dropped no longer counts: the budget holds three batches again.
        cache.push(batch(3, 4, 100));
        cache.push(batch(3, 5, 200));
        assert!(cache.read(Offset(3), 300, 100).is_some());
        // A fourth batch is over the budget: the oldest kept one goes.
        cache.push(batch(3, 6, 300));
        assert!(cache.read(Offset(3), 400, 100).is_none());
        assert!(cache.read(Offset(4), 400, 100).is_some());
        cache.clear();
        assert!(cache.read(Offset(5), 300, 100).is_none());
    }
}
