//! `ShardLogs`: the partitions one shard owns, with one byte budget for data appended but not
//! yet durable, shared by all of them.
//!
//! Invariants: the accounted bytes of each partition are refreshed after every call that can
//! change them (all access to a log goes through [`ShardLogs::with_partition`]), so the
//! shard's total is exact without scanning its partitions; when the total exceeds the budget
//! the shard reports back-pressure and the shell stops reading from its connections until the
//! disk catches up (durable data leaves the budget).

use std::collections::{BTreeSet, HashMap};

use crate::partition::{LogEvent, PartitionLog};
use crate::storage::IoRequest;
use crate::Millis;

/// Names a partition within a shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic: String,
    pub partition: u32,
}

#[derive(Debug)]
struct Entry {
    log: PartitionLog,
    /// Unsynced bytes of this log as last accounted.
    accounted: u64,
}

/// The partitions of one shard and their shared budget.
#[derive(Debug)]
pub struct ShardLogs {
    budget: u64,
    unsynced: u64,
    partitions: HashMap<PartitionKey, Entry>,
    /// Partitions that may have requests or events to hand out.
    touched: BTreeSet<PartitionKey>,
}

impl ShardLogs {
    /// `budget`: bytes appended but not yet durable, across all partitions, before the shard
    /// pushes back.
    pub fn new(budget: u64) -> Self {
        ShardLogs {
            budget,
            unsynced: 0,
            partitions: HashMap::new(),
            touched: BTreeSet::new(),
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

    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    pub fn contains(&self, key: &PartitionKey) -> bool {
        self.partitions.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &PartitionKey> {
        self.partitions.keys()
    }

    /// Adds a partition (new or recovered). Returns the one it replaced, if any.
    pub fn insert(&mut self, key: PartitionKey, log: PartitionLog) -> Option<PartitionLog> {
        let accounted = log.unsynced_bytes();
        self.unsynced += accounted;
        self.touched.insert(key.clone());
        let old = self.partitions.insert(key, Entry { log, accounted })?;
        self.unsynced -= old.accounted;
        Some(old.log)
    }

    /// Removes a partition (topic deleted); its unsynced bytes leave the budget.
    pub fn remove(&mut self, key: &PartitionKey) -> Option<PartitionLog> {
        let entry = self.partitions.remove(key)?;
        self.unsynced -= entry.accounted;
        self.touched.remove(key);
        Some(entry.log)
    }

    /// Read-only access to a partition.
    pub fn get(&self, key: &PartitionKey) -> Option<&PartitionLog> {
        self.partitions.get(key).map(|entry| &entry.log)
    }

    /// Runs `f` on a partition and refreshes the shard's accounting afterwards.
    pub fn with_partition<R>(
        &mut self,
        key: &PartitionKey,
        f: impl FnOnce(&mut PartitionLog) -> R,
    ) -> Option<R> {
        let entry = self.partitions.get_mut(key)?;
        let result = f(&mut entry.log);
        let now = entry.log.unsynced_bytes();
        self.unsynced = self.unsynced - entry.accounted + now;
        entry.accounted = now;
        self.touched.insert(key.clone());
        Some(result)
    }

    /// The next storage request of any touched partition.
    pub fn poll_io(&mut self) -> Option<(PartitionKey, IoRequest)> {
        let keys: Vec<PartitionKey> = self.touched.iter().cloned().collect();
        for key in keys {
            let Some(entry) = self.partitions.get_mut(&key) else {
                self.touched.remove(&key);
                continue;
            };
            if let Some(request) = entry.log.poll_io() {
                return Some((key, request));
            }
            if !entry.log.has_output() {
                self.touched.remove(&key);
            }
        }
        None
    }

    /// The next event of any touched partition.
    pub fn poll_event(&mut self) -> Option<(PartitionKey, LogEvent)> {
        let keys: Vec<PartitionKey> = self.touched.iter().cloned().collect();
        for key in keys {
            if let Some(event) = self
                .partitions
                .get_mut(&key)
                .and_then(|e| e.log.poll_event())
            {
                return Some((key, event));
            }
        }
        None
    }

    /// The earliest time any partition needs a tick.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.partitions
            .values()
            .filter_map(|entry| entry.log.poll_timeout())
            .min()
    }

    /// Ticks every partition whose timeout has come.
    pub fn handle_tick(&mut self, now: Millis) {
        let due: Vec<PartitionKey> = self
            .partitions
            .iter()
            .filter(|(_, entry)| entry.log.poll_timeout().is_some_and(|at| at <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.with_partition(&key, |log| log.handle_tick(now));
        }
    }

    /// Applies retention to every partition; returns the segments deleted.
    pub fn handle_retention(&mut self, now: Millis) -> u32 {
        let keys: Vec<PartitionKey> = self.partitions.keys().cloned().collect();
        keys.iter()
            .map(|key| {
                self.with_partition(key, |log| log.handle_retention(now))
                    .unwrap_or(0)
            })
            .sum()
    }
}
