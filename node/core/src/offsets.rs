//! Committed offsets of consumer groups: the records a coordinator shard appends to its
//! internal offsets log (one record per committed partition, a tombstone for a deleted or
//! expired one), and [`OffsetStore`], the state they replay to. Pure: the shard appends the
//! records (durably, `fsync`) and applies them once acknowledged, and replays the whole log
//! at recovery. Specified in `docs/format/offsets.md`.
//!
//! Invariants:
//! - a commit is visible (`fetch`) only after `apply`, which the shard calls once the
//!   records are durable: an acknowledged commit survives `kill -9`, an unacknowledged one
//!   may or may not;
//! - replaying the log from its start gives the same state as applying the records as they
//!   were appended (records are self-contained: the last record of a key wins, a tombstone
//!   removes it);
//! - at most [`GROUPS_MAX`] groups and [`OFFSETS_PER_GROUP_MAX`] partitions per group
//!   (commits beyond are refused), so the state and a snapshot of it are bounded;
//! - decoding never panics on any bytes (the log comes from disk).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::Millis;

/// Groups one coordinator shard keeps committed offsets for.
pub const GROUPS_MAX: usize = 10_000;
/// Partitions one group commits offsets for.
pub const OFFSETS_PER_GROUP_MAX: usize = 10_000;
/// Bytes of a commit's metadata string (Kafka's `offset.metadata.max.bytes` is 4096).
pub const METADATA_BYTES_MAX: usize = 4096;
/// Bytes of a group id and of a topic name in a key.
pub const GROUP_ID_BYTES_MAX: usize = 255;
pub const TOPIC_BYTES_MAX: usize = 249;
/// Offsets of a group without members are kept this long after their commit, unless
/// configured otherwise (Kafka's `offsets.retention.minutes`: 7 days).
pub const OFFSETS_RETENTION_MS_DEFAULT: i64 = 7 * 24 * 3600 * 1000;

/// The first byte of a key: what the record is about.
const KEY_OFFSET: u8 = 1;
/// The first byte of a value: its format version.
const VALUE_VERSION: u8 = 1;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The next offset the group will read.
    pub offset: i64,
    /// Kafka's committed leader epoch, or -1.
    pub leader_epoch: i32,
    pub metadata: String,
    /// When it was committed (ms since the Unix epoch; retention counts from it).
    pub commit_time: Millis,
}

/// Why a record of the offsets log cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OffsetRecordError {
    #[error("the record has no key")]
    NoKey,
    #[error("unknown key kind {0}")]
    KeyKind(u8),
    #[error("unknown value version {0}")]
    ValueVersion(u8),
    #[error("the {field} field is cut short")]
    Truncated { field: &'static str },
    #[error("the {field} field is {length} bytes, at most {max}")]
    TooLong {
        field: &'static str,
        length: usize,
        max: usize,
    },
    #[error("the {field} field is not UTF-8")]
    Utf8 { field: &'static str },
    #[error("{0} bytes follow the record's fields")]
    Trailing(usize),
}

/// Why a commit is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommitError {
    #[error("this coordinator keeps offsets for {GROUPS_MAX} groups, the limit")]
    TooManyGroups,
    #[error("group {group} has offsets for {OFFSETS_PER_GROUP_MAX} partitions, the limit")]
    TooManyOffsets { group: String },
    #[error("invalid commit: {0}")]
    Invalid(#[from] OffsetRecordError),
}

/// The key of a group's offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

fn put_str(out: &mut BytesMut, value: &str) {
    // Every caller checked the length with `check_len` against a limit (at most 4096) far
    // below u16::MAX, so the conversion cannot fail.
    out.put_u16_le(u16::try_from(value.len()).expect("bounded length"));
    out.put_slice(value.as_bytes());
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), OffsetRecordError> {
    if value.len() > max {
        return Err(OffsetRecordError::TooLong {
            field,
            length: value.len(),
            max,
        });
    }
    Ok(())
}

/// The encoded key of `group`'s offset of `topic`/`partition`.
fn key_bytes(group: &str, topic: &str, partition: u32) -> Result<Bytes, OffsetRecordError> {
    OffsetKey {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    }
    .encode()
}

impl OffsetKey {
    pub fn encode(&self) -> Result<Bytes, OffsetRecordError> {
        check_len("group", &self.group, GROUP_ID_BYTES_MAX)?;
        check_len("topic", &self.topic, TOPIC_BYTES_MAX)?;
        let mut out = BytesMut::with_capacity(9 + self.group.len() + self.topic.len());
        out.put_u8(KEY_OFFSET);
        put_str(&mut out, &self.group);
        put_str(&mut out, &self.topic);
        out.put_u32_le(self.partition);
        Ok(out.freeze())
    }

    pub fn decode(bytes: &[u8]) -> Result<OffsetKey, OffsetRecordError> {
        let mut reader = Reader(bytes);
        let kind = reader.u8("kind")?;
        if kind != KEY_OFFSET {
            return Err(OffsetRecordError::KeyKind(kind));
        }
        let group = reader.str("group", GROUP_ID_BYTES_MAX)?;
        let topic = reader.str("topic", TOPIC_BYTES_MAX)?;
        let partition = reader.u32("partition")?;
        reader.end()?;
        Ok(OffsetKey {
            group,
            topic,
            partition,
        })
    }
}

impl Committed {
    pub fn encode(&self) -> Result<Bytes, OffsetRecordError> {
        check_len("metadata", &self.metadata, METADATA_BYTES_MAX)?;
        let mut out = BytesMut::with_capacity(23 + self.metadata.len());
        out.put_u8(VALUE_VERSION);
        out.put_i64_le(self.offset);
        out.put_i32_le(self.leader_epoch);
        out.put_i64_le(self.commit_time.0);
        put_str(&mut out, &self.metadata);
        Ok(out.freeze())
    }

    pub fn decode(bytes: &[u8]) -> Result<Committed, OffsetRecordError> {
        let mut reader = Reader(bytes);
        let version = reader.u8("version")?;
        if version != VALUE_VERSION {
            return Err(OffsetRecordError::ValueVersion(version));
        }
        let offset = reader.i64("offset")?;
        let leader_epoch = reader.i32("leader_epoch")?;
        let commit_time = Millis(reader.i64("commit_time")?);
        let metadata = reader.str("metadata", METADATA_BYTES_MAX)?;
        reader.end()?;
        Ok(Committed {
            offset,
            leader_epoch,
            metadata,
            commit_time,
        })
    }
}

/// Reads little-endian fields off untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], OffsetRecordError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(OffsetRecordError::Truncated { field })?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, OffsetRecordError> {
        Ok(self.take::<1>(field)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, OffsetRecordError> {
        Ok(u32::from_le_bytes(self.take(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, OffsetRecordError> {
        Ok(i32::from_le_bytes(self.take(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, OffsetRecordError> {
        Ok(i64::from_le_bytes(self.take(field)?))
    }

    fn str(&mut self, field: &'static str, max: usize) -> Result<String, OffsetRecordError> {
        let length = usize::from(u16::from_le_bytes(self.take(field)?));
        if length > max {
            return Err(OffsetRecordError::TooLong { field, length, max });
        }
        if self.0.len() < length {
            return Err(OffsetRecordError::Truncated { field });
        }
        let (value, rest) = self.0.split_at(length);
        self.0 = rest;
        String::from_utf8(value.to_vec()).map_err(|_| OffsetRecordError::Utf8 { field })
    }

    fn end(&self) -> Result<(), OffsetRecordError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(OffsetRecordError::Trailing(self.0.len()))
        }
    }
}

/// A record of the offsets log: a commit, or a tombstone (`value: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRecord {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// The committed offsets of the groups a coordinator shard owns (see the module
/// documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetStore {
    groups: BTreeMap<String, BTreeMap<(String, u32), Committed>>,
}

impl OffsetStore {
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    /// The committed offsets of `group`: (topic, partition, offset).
    pub fn committed(&self, group: &str) -> impl Iterator<Item = (&str, u32, &Committed)> {
        self.groups
            .get(group)
            .into_iter()
            .flatten()
            .map(|((topic, partition), committed)| (topic.as_str(), *partition, committed))
    }

    /// Whether `group` has committed offsets.
    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Committed offsets in the store.
    pub fn len(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The records that commit `offsets` of `group` at `now`, or why not; nothing changes
    /// until [`OffsetStore::apply`] takes them (once durable).
    pub fn commit_records(
        &self,
        group: &str,
        offsets: &[(String, u32, i64, i32, String)],
        now: Millis,
    ) -> Result<Vec<OffsetRecord>, CommitError> {
        let known = self.groups.get(group);
        if known.is_none() && self.groups.len() >= GROUPS_MAX {
            return Err(CommitError::TooManyGroups);
        }
        let present = known.map_or(0, BTreeMap::len);
        let new = offsets
            .iter()
            .filter(|(topic, partition, ..)| {
                known.is_none_or(|known| !known.contains_key(&(topic.clone(), *partition)))
            })
            .count();
        if present + new > OFFSETS_PER_GROUP_MAX {
            return Err(CommitError::TooManyOffsets {
                group: group.to_owned(),
            });
        }
        offsets
            .iter()
            .map(|(topic, partition, offset, leader_epoch, metadata)| {
                let key = key_bytes(group, topic, *partition)?;
                let value = Committed {
                    offset: *offset,
                    leader_epoch: *leader_epoch,
                    metadata: metadata.clone(),
                    commit_time: now,
                }
                .encode()?;
                Ok(OffsetRecord {
                    key,
                    value: Some(value),
                })
            })
            .collect()
    }

    /// Takes in one record of the offsets log (after its append was acknowledged, or at
    /// replay). A record that cannot be read is reported and changes nothing.
    pub fn apply(&mut self, record: &OffsetRecord) -> Result<(), OffsetRecordError> {
        let key = OffsetKey::decode(&record.key)?;
        match &record.value {
            None => {
                if let Some(group) = self.groups.get_mut(&key.group) {
                    group.remove(&(key.topic, key.partition));
                    if group.is_empty() {
                        self.groups.remove(&key.group);
                    }
                }
            }
            Some(value) => {
                let committed = Committed::decode(value)?;
                self.groups
                    .entry(key.group)
                    .or_default()
                    .insert((key.topic, key.partition), committed);
            }
        }
        Ok(())
    }

    /// The committed offset of each of `partitions` of `group` (all the group has, when
    /// `partitions` is `None`).
    pub fn fetch(
        &self,
        group: &str,
        partitions: Option<&[(String, u32)]>,
    ) -> Vec<((String, u32), Option<Committed>)> {
        let known = self.groups.get(group);
        match partitions {
            Some(partitions) => partitions
                .iter()
                .map(|key| (key.clone(), known.and_then(|known| known.get(key)).cloned()))
                .collect(),
            None => known
                .map(|known| {
                    known
                        .iter()
                        .map(|(key, committed)| (key.clone(), Some(committed.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Tombstones for `group`'s offsets (`None`: all of them), to delete them (DeleteGroups,
    /// OffsetDelete, a reset).
    pub fn delete_records(
        &self,
        group: &str,
        partitions: Option<&[(String, u32)]>,
    ) -> Vec<OffsetRecord> {
        self.fetch(group, partitions)
            .into_iter()
            .filter(|(_, committed)| committed.is_some())
            .filter_map(|((topic, partition), _)| {
                let key = key_bytes(group, &topic, partition).ok()?;
                Some(OffsetRecord { key, value: None })
            })
            .collect()
    }

    /// Tombstones for the offsets of groups without members (`has_members` says which have)
    /// committed `retention_ms` or longer before `now`.
    pub fn expired_records(
        &self,
        now: Millis,
        retention_ms: i64,
        has_members: impl Fn(&str) -> bool,
    ) -> Vec<OffsetRecord> {
        let mut records = Vec::new();
        for (group, offsets) in &self.groups {
            if has_members(group) {
                continue;
            }
            for ((topic, partition), committed) in offsets {
                if now.0.saturating_sub(committed.commit_time.0) >= retention_ms {
                    if let Ok(key) = key_bytes(group, topic, *partition) {
                        records.push(OffsetRecord { key, value: None });
                    }
                }
            }
        }
        records
    }

    /// Every live offset as a record: what a snapshot of the log holds. Appended at the end
    /// of the log, it lets everything before it be deleted (DeleteRecords to its first
    /// offset) without changing what a replay gives; this keeps the log within about twice
    /// the live state.
    pub fn snapshot_records(&self) -> Vec<OffsetRecord> {
        let mut records = Vec::with_capacity(self.len());
        for (group, offsets) in &self.groups {
            for ((topic, partition), committed) in offsets {
                let key = key_bytes(group, topic, *partition);
                if let (Ok(key), Ok(value)) = (key, committed.encode()) {
                    records.push(OffsetRecord {
                        key,
                        value: Some(value),
                    });
                }
            }
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(list: &[(&str, u32, i64)]) -> Vec<(String, u32, i64, i32, String)> {
        list.iter()
            .map(|(topic, partition, offset)| {
                ((*topic).to_owned(), *partition, *offset, -1, String::new())
            })
            .collect()
    }

    #[test]
    fn commits_are_visible_once_applied_and_replay_gives_the_same_state() {
        let mut store = OffsetStore::default();
        let mut log = Vec::new();
        let records = store
            .commit_records("g", &offsets(&[("t", 0, 10), ("t", 1, 20)]), Millis(5))
            .unwrap();
        assert_eq!(store.fetch("g", None), Vec::new(), "not before apply");
        for record in &records {
            store.apply(record).unwrap();
        }
        log.extend(records);
        let records = store
            .commit_records("g", &offsets(&[("t", 0, 15)]), Millis(6))
            .unwrap();
        for record in &records {
            store.apply(record).unwrap();
        }
        log.extend(records);
        let fetched = store.fetch("g", Some(&[("t".to_owned(), 0), ("u".to_owned(), 3)]));
        assert_eq!(fetched[0].1.as_ref().map(|c| c.offset), Some(15));
        assert_eq!(fetched[1].1, None);
        let tombstones = store.delete_records("g", Some(&[("t".to_owned(), 1)]));
        assert_eq!(tombstones.len(), 1);
        for record in &tombstones {
            store.apply(record).unwrap();
        }
        log.extend(tombstones);
        let mut replayed = OffsetStore::default();
        for record in &log {
            replayed.apply(record).unwrap();
        }
        assert_eq!(replayed, store);
        // A snapshot alone replays to the same state too.
        let mut from_snapshot = OffsetStore::default();
        for record in store.snapshot_records() {
            from_snapshot.apply(&record).unwrap();
        }
        assert_eq!(from_snapshot, store);
    }

    #[test]
    fn offsets_of_empty_groups_expire_and_limits_hold() {
        // Kafka's offsets.retention.minutes: 7 days (docs/groups.md).
        assert_eq!(OFFSETS_RETENTION_MS_DEFAULT, 604_800_000);
        let mut store = OffsetStore::default();
        for (group, at) in [("old", 0), ("new", 1_000), ("busy", 0)] {
            for record in store
                .commit_records(group, &offsets(&[("t", 0, 1)]), Millis(at))
                .unwrap()
            {
                store.apply(&record).unwrap();
            }
        }
        let expired = store.expired_records(Millis(1_000), 1_000, |group| group == "busy");
        assert_eq!(expired.len(), 1);
        assert_eq!(OffsetKey::decode(&expired[0].key).unwrap().group, "old");
        let many: Vec<_> = (0..=u32::try_from(OFFSETS_PER_GROUP_MAX).unwrap())
            .map(|p| ("t".to_owned(), p, 0, -1, String::new()))
            .collect();
        assert!(matches!(
            store.commit_records("g2", &many, Millis(0)),
            Err(CommitError::TooManyOffsets { .. })
        ));
        // Exactly the limit is taken, and committing those partitions again adds nothing.
        let most = &many[..OFFSETS_PER_GROUP_MAX];
        let mut full = OffsetStore::default();
        for record in full.commit_records("g3", most, Millis(0)).unwrap() {
            full.apply(&record).unwrap();
        }
        assert!(full.commit_records("g3", most, Millis(1)).is_ok());
        assert!(full.commit_records("g3", &many[1..], Millis(1)).is_err());
        let long = "x".repeat(METADATA_BYTES_MAX + 1);
        assert!(store
            .commit_records("g2", &[("t".to_owned(), 0, 0, -1, long)], Millis(0))
            .is_err());
        // Each limit itself is allowed, written and read back.
        assert!(OffsetStore::default().is_empty());
        let before = store.len();
        assert_eq!(before, 3);
        let longest = "x".repeat(METADATA_BYTES_MAX);
        let group = "g".repeat(GROUP_ID_BYTES_MAX);
        let topic = "t".repeat(TOPIC_BYTES_MAX);
        for record in store
            .commit_records(&group, &[(topic, 0, 0, -1, longest)], Millis(0))
            .unwrap()
        {
            store.apply(&record).unwrap();
        }
        assert!(store.has_group(&group));
        assert_eq!(store.len(), before + 1);
        assert!(!store.is_empty());
        let groups: Vec<&str> = store.groups().collect();
        assert_eq!(groups, vec!["busy", group.as_str(), "new", "old"]);
    }

    #[test]
    fn damaged_records_are_refused_without_a_panic() {
        let key = OffsetKey {
            group: "g".to_owned(),
            topic: "t".to_owned(),
            partition: 7,
        }
        .encode()
        .unwrap();
        let value = Committed {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".to_owned(),
            commit_time: Millis(9),
        }
        .encode()
        .unwrap();
        assert_eq!(OffsetKey::decode(&key).unwrap().partition, 7);
        assert_eq!(Committed::decode(&value).unwrap().offset, 42);
        for cut in 0..key.len() {
            assert!(OffsetKey::decode(&key[..cut]).is_err());
        }
        for cut in 0..value.len() {
            assert!(Committed::decode(&value[..cut]).is_err());
        }
        let mut longer = value.to_vec();
        longer.push(0);
        assert_eq!(
            Committed::decode(&longer),
            Err(OffsetRecordError::Trailing(1))
        );
        let mut store = OffsetStore::default();
        let bad = OffsetRecord {
            key: Bytes::from_static(&[9]),
            value: None,
        };
        assert_eq!(store.apply(&bad), Err(OffsetRecordError::KeyKind(9)));
        assert!(store.is_empty());
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    /// The bytes of `docs/format/offsets.md`.
    #[test]
    fn offset_records_match_the_golden_bytes_of_the_format_doc() {
        let key = OffsetKey {
            group: "billing".to_owned(),
            topic: "orders".to_owned(),
            partition: 3,
        }
        .encode()
        .unwrap();
        let value = Committed {
            offset: 1234,
            leader_epoch: -1,
            metadata: "ok".to_owned(),
            commit_time: Millis(1_700_000_000_000),
        }
        .encode()
        .unwrap();
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(&key), "01070062696c6c696e6706006f726465727303000000");
        assert_eq!(
            hex(&value),
            "01d204000000000000ffffffff0068e5cf8b01000002006f6b"
        );
    }
}
