//! What a shard's partitions share: one byte budget for data appended but not yet durable,
//! and one bound on the bytes their fetches' reads keep for the next fetch (read-ahead).
//!
//! Each partition's driver owns its `PartitionLog`; after every call that can change the
//! log's unsynced bytes it reports the change ([`ShardBudget::update`]), so the shard's total
//! is exact without scanning its partitions. When the total exceeds the budget the shard
//! reports back-pressure and the shell stops reading from its connections until the disk
//! catches up (durable data leaves the budget).

/// Names a partition within a shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic: String,
    pub partition: u32,
}

/// Bytes of read-ahead (see `PartitionLog::handle_read`) a shard keeps over all its
/// partitions: 64 fetches of a megabyte in flight, and no more however many partitions.
pub const READ_AHEAD_SHARD_BYTES_MAX: u64 = 64 << 20;

/// The unsynced bytes of a shard's partitions against the shard's budget, and their kept
/// read-ahead against [`READ_AHEAD_SHARD_BYTES_MAX`].
#[derive(Debug)]
pub struct ShardBudget {
    budget: u64,
    unsynced: u64,
    read_ahead: u64,
}

impl ShardBudget {
    /// `budget`: bytes appended but not yet durable, across all partitions, before the shard
    /// pushes back.
    pub fn new(budget: u64) -> Self {
        ShardBudget {
            budget,
            unsynced: 0,
            read_ahead: 0,
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes appended but not yet durable, across the shard.
    pub fn unsynced_bytes(&self) -> u64 {
        self.unsynced
    }

    /// Whether the shard must stop reading new requests until the disk catches up.
    pub fn over_budget(&self) -> bool {
        self.unsynced > self.budget
    }

    /// One partition's unsynced bytes went from `before` (as last reported; 0 for a
    /// partition just opened) to `after` (0 for a partition closed).
    pub fn update(&mut self, before: u64, after: u64) {
        debug_assert!(before <= self.unsynced, "a partition reports what it added");
        self.unsynced = self.unsynced - before.min(self.unsynced) + after;
    }

    /// Read-ahead kept across the shard.
    pub fn read_ahead_bytes(&self) -> u64 {
        self.read_ahead
    }

    /// One partition's kept read-ahead went from `before` to `after` (as with `update`).
    pub fn update_read_ahead(&mut self, before: u64, after: u64) {
        debug_assert!(
            before <= self.read_ahead,
            "a partition reports what it kept"
        );
        self.read_ahead = self.read_ahead - before.min(self.read_ahead) + after;
    }

    /// How much read-ahead a partition that keeps `own` now may keep (its own is replaced).
    pub fn read_ahead_room(&self, own: u64) -> u64 {
        READ_AHEAD_SHARD_BYTES_MAX.saturating_sub(self.read_ahead.saturating_sub(own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mutation testing found these unpinned.
    #[test]
    fn the_budget_is_over_only_past_its_limit_and_read_ahead_is_counted() {
        let mut shard = ShardBudget::new(100);
        assert_eq!(shard.budget(), 100);
        shard.update(0, 100);
        assert!(!shard.over_budget(), "at the limit is not over it");
        shard.update(100, 101);
        assert!(shard.over_budget());
        assert_eq!(shard.unsynced_bytes(), 101);
        shard.update_read_ahead(0, 7);
        shard.update_read_ahead(0, 5);
        assert_eq!(shard.read_ahead_bytes(), 12);
        assert_eq!(shard.read_ahead_room(7), READ_AHEAD_SHARD_BYTES_MAX - 5);
    }
}
