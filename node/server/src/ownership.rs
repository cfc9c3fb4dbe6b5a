//! `PartitionTable`: the partitions open on a shard, found by topic name and partition number
//! without building a key (one hash of the topic name per request, no allocation); each
//! request resolves its partition once and carries the `Rc<Partition>` from then on.

use std::collections::HashMap;
use std::rc::Rc;

use spate_core::PartitionKey;

use crate::partition::Partition;

/// The open partitions of one shard: per topic, a slot per partition number.
#[derive(Debug, Default)]
pub struct PartitionTable {
    topics: HashMap<String, Vec<Option<Rc<Partition>>>>,
    len: usize,
}

impl PartitionTable {
    pub fn get(&self, topic: &str, partition: u32) -> Option<&Rc<Partition>> {
        self.topics
            .get(topic)?
            .get(usize::try_from(partition).ok()?)?
            .as_ref()
    }

    pub fn contains(&self, key: &PartitionKey) -> bool {
        self.get(&key.topic, key.partition).is_some()
    }

    /// Adds an open partition under its key; returns the one it replaced, if any.
    pub fn insert(&mut self, partition: Rc<Partition>) -> Option<Rc<Partition>> {
        let key = &partition.key;
        let index = usize::try_from(key.partition).unwrap_or(usize::MAX);
        let slots = self.topics.entry(key.topic.clone()).or_default();
        if slots.len() <= index {
            // Partition numbers are dense (0..count): the slots cost no more than the
            // topic's entry in the metadata, which has one per partition.
            slots.resize(index + 1, None);
        }
        let old = slots[index].replace(partition);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, key: &PartitionKey) -> Option<Rc<Partition>> {
        let slots = self.topics.get_mut(&key.topic)?;
        let removed = slots
            .get_mut(usize::try_from(key.partition).ok()?)?
            .take()?;
        self.len -= 1;
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        if slots.is_empty() {
            self.topics.remove(&key.topic);
        }
        Some(removed)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every open partition (in no particular order).
    pub fn partitions(&self) -> impl Iterator<Item = &Rc<Partition>> {
        self.topics.values().flatten().flatten()
    }

    /// The keys of every open partition.
    pub fn keys(&self) -> Vec<PartitionKey> {
        self.partitions()
            .map(|partition| partition.key.clone())
            .collect()
    }
}
