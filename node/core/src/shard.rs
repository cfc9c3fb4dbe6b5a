//! What a shard's partitions share: one byte budget for data appended but not yet durable.
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

/// The unsynced bytes of a shard's partitions against the shard's budget.
#[derive(Debug)]
pub struct ShardBudget {
    budget: u64,
    unsynced: u64,
}

impl ShardBudget {
    /// `budget`: bytes appended but not yet durable, across all partitions, before the shard
    /// pushes back.
    pub fn new(budget: u64) -> Self {
        ShardBudget {
            budget,
            unsynced: 0,
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
}
