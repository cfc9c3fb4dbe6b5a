//! The node's metadata: topics, their settings and the partition → shard assignment, stored in
//! one CRC-checked file replaced atomically (write a temporary file, fsync it, rename it over
//! the old one, fsync the directory).
//!
//! File layout (little-endian): magic `SPMD`, version u16 (2), reserved u16 (0), body length
//! u32, CRC-32 of the body u32, then the body: topic count u32, and per topic its name
//! (u16 length + UTF-8), partition count u32, retention_ms, retention_bytes and segment_bytes
//! (each u8 tag + u64 as in the protocol's `setting`), and one u16 shard id per partition;
//! then (version 2) the next producer id never handed out, u64; then (version 3) per topic, in
//! the same order, its `min_insync_replicas` (a setting). Version 1 files (without the
//! counter) are read as next producer id 0, version 1 and 2 files with every topic's
//! `min_insync_replicas` at the default; either is written back as version 3 at the next
//! change.
//! The assignment is stored, not computed, so a restart with another shard count reassigns
//! only what it must, deterministically.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use spate_format::limits::{PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_LENGTH_MAX};
use spate_proto::codec::{Reader, Writer};
use spate_proto::limits::TOPICS_PER_RESPONSE_MAX;
use spate_proto::{Setting, ShardId};
use thiserror::Error;

const MAGIC: &[u8; 4] = b"SPMD";
const VERSION: u16 = 3;
/// The first version, without the producer id counter: still read.
const VERSION_1: u16 = 1;
/// The second version, without `min_insync_replicas`: still read.
const VERSION_2: u16 = 2;
const HEADER_SIZE: usize = 16;
/// The metadata file's name in the data directory.
pub const FILE_NAME: &str = "metadata";

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub retention_ms: Setting,
    pub retention_bytes: Setting,
    pub segment_bytes: Setting,
    /// `min.insync.replicas` (`Default`: 1).
    pub min_insync_replicas: Setting,
    /// The shard of each partition, by partition number.
    pub shards: Vec<ShardId>,
}

impl Topic {
    /// `min.insync.replicas` in effect: an `fsync` produce is refused while fewer replicas
    /// are in sync.
    pub fn min_insync(&self) -> u32 {
        match self.min_insync_replicas {
            Setting::Value(count) => u32::try_from(count).unwrap_or(u32::MAX),
            Setting::Default | Setting::Unlimited => 1,
        }
    }
}

/// All topics of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pub topics: BTreeMap<String, Topic>,
    /// Producer ids below this were handed out (AllocateProducerIds) and are never handed
    /// out again.
    pub next_producer_id: u64,
    /// In a cluster (`--etcd`): where every partition lives across the nodes, and this
    /// node's replicas (never stored: the cluster's keys in etcd are the truth). Then each
    /// topic's `shards` are indexes into [`ClusterRoutes::shards`], the leader's shard.
    pub cluster: Option<Arc<ClusterRoutes>>,
}

/// A cluster's partitions as one node sees them (docs/cluster.md, "Roles").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterRoutes {
    /// Every member's shard endpoints, members in node order, each's shards in order; a
    /// topic's `shards` index this list.
    pub shards: Vec<String>,
    /// Where this node's shards start in `shards` (they follow each other), if it is a
    /// registered member.
    pub first_local: Option<u16>,
    /// The replicas this node holds, by topic then partition (looked up without building a
    /// key: `replica`).
    pub local: HashMap<String, HashMap<u32, LocalReplica>>,
    /// Whether the topics were all read and readable: only then are the directories of
    /// partitions this node no longer holds removed.
    pub complete: bool,
    /// The cluster's id (`/spate/NAME/cluster-id`): replica directories name it, so those of
    /// another cluster (etcd replaced or emptied) are never taken or removed.
    pub cluster_id: String,
}

/// A replica of a partition on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReplica {
    /// The shard that holds it.
    pub shard: ShardId,
    /// The id of the topic it belongs to (32 hex digits), kept in its directory so a replica
    /// of an older topic of the same name is never taken for it.
    pub topic_id: String,
    /// Whether it serves clients, and why not.
    pub serving: Serving,
    /// What it leads, when this node leads the partition's current epoch under its live
    /// session (it then answers its followers' `ReplicaFetch`, whether or not it serves
    /// clients yet).
    pub leads: Option<Leads>,
    /// Whom it follows, when another member leads the partition's current epoch.
    pub follows: Option<Follows>,
    /// The byte rate it catches up at while its partition moves (docs/cluster.md, "Moving
    /// partitions"); `None`: unlimited.
    pub throttle: Option<u64>,
}

/// The leader a replica fetches from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follows {
    pub leader: u32,
    pub epoch: u32,
    /// The leader's shard for the partition (an endpoint of `ClusterRoutes::shards`).
    pub endpoint: String,
}

/// A partition's current epoch as its leader (this node) holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leads {
    pub epoch: u32,
    /// Every replica, the leader included, in preference order.
    pub replicas: Vec<u32>,
    /// The in-sync replicas the control plane holds.
    pub isr: Vec<spate_core::replica::IsrMember>,
    /// The revision of the partition key that holds them.
    pub revision: i64,
}

/// Whether a replica on this node serves produce and fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serving {
    /// It leads the partition's current epoch.
    Leader { epoch: u32 },
    /// It does not: the reason, for the client's error (NOT_LEADER_OR_FOLLOWER).
    NotLeader(String),
}

impl ClusterRoutes {
    /// This node's replica of partition `partition` of `topic`, if it holds one.
    pub fn replica(&self, topic: &str, partition: u32) -> Option<&LocalReplica> {
        self.local.get(topic)?.get(&partition)
    }

    /// The index in `shards` of this node's shard `shard`.
    pub fn global(&self, shard: ShardId) -> Option<ShardId> {
        Some(ShardId(self.first_local?.checked_add(shard.0)?))
    }
}

impl Metadata {
    /// The partitions shard `shard` holds, each with its topic.
    pub fn local_partitions(&self, shard: ShardId) -> Vec<(String, u32, &Topic)> {
        let mut out = Vec::new();
        match &self.cluster {
            None => {
                for (name, topic) in &self.topics {
                    for (partition, owner) in (0u32..).zip(&topic.shards) {
                        if *owner == shard {
                            out.push((name.clone(), partition, topic));
                        }
                    }
                }
            }
            Some(routes) => {
                for (name, replicas) in &routes.local {
                    let Some(topic) = self.topics.get(name) else {
                        continue;
                    };
                    for (partition, replica) in replicas {
                        if replica.shard == shard {
                            out.push((name.clone(), *partition, topic));
                        }
                    }
                }
                out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            }
        }
        out
    }
}

#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("cannot read or write the metadata file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the metadata file {path} is damaged: {detail}")]
    Corrupt { path: String, detail: String },
}

/// The shard a partition goes to: spread from a hash of the topic name, so the partitions of
/// many topics do not all start on shard 0.
pub fn assign(topic: &str, partition: u32, shards: u32) -> ShardId {
    let hash = crc32fast::hash(topic.as_bytes());
    let shard = (u64::from(hash) + u64::from(partition)) % u64::from(shards.max(1));
    ShardId(u16::try_from(shard).unwrap_or(0))
}

impl Metadata {
    pub fn encode(&self) -> Bytes {
        let mut body = BytesMut::new();
        let mut writer = Writer::new(&mut body);
        writer.u32(u32::try_from(self.topics.len()).expect("topic count fits u32"));
        for (name, topic) in &self.topics {
            writer.str16(name);
            writer.u32(u32::try_from(topic.shards.len()).expect("partition count fits u32"));
            writer.setting(topic.retention_ms);
            writer.setting(topic.retention_bytes);
            writer.setting(topic.segment_bytes);
            for shard in &topic.shards {
                writer.u16(shard.0);
            }
        }
        writer.u64(self.next_producer_id);
        for topic in self.topics.values() {
            writer.setting(topic.min_insync_replicas);
        }
        let mut out = BytesMut::with_capacity(HEADER_SIZE + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(body.len())
                .expect("metadata fits u32")
                .to_le_bytes(),
        );
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Metadata, String> {
        let header = bytes.get(..HEADER_SIZE).ok_or("shorter than its header")?;
        if &header[..4] != MAGIC {
            return Err("bad magic".into());
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if ![VERSION, VERSION_1, VERSION_2].contains(&version) {
            return Err(format!("unsupported version {version}"));
        }
        if header[6] != 0 || header[7] != 0 {
            return Err("reserved header bytes are not zero".into());
        }
        let length = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let stored = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        let body = bytes.get(HEADER_SIZE..).ok_or("no body")?;
        if body.len() != length {
            return Err(format!(
                "body is {} bytes, header says {length}",
                body.len()
            ));
        }
        let computed = crc32fast::hash(body);
        if computed != stored {
            return Err(format!(
                "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let mut reader = Reader::new(Bytes::copy_from_slice(body));
        let count = reader
            .count("topics", TOPICS_PER_RESPONSE_MAX, 3)
            .map_err(|e| e.to_string())?;
        let mut topics = BTreeMap::new();
        for _ in 0..count {
            let name = reader
                .string16("topic", TOPIC_NAME_LENGTH_MAX)
                .map_err(|e| e.to_string())?;
            spate_format::validate_topic_name(&name).map_err(|e| e.to_string())?;
            let partitions = reader
                .count("partitions", PARTITIONS_PER_TOPIC_MAX, 0)
                .map_err(|e| e.to_string())?;
            let retention_ms = reader.setting("retention_ms").map_err(|e| e.to_string())?;
            let retention_bytes = reader
                .setting("retention_bytes")
                .map_err(|e| e.to_string())?;
            let segment_bytes = reader.setting("segment_bytes").map_err(|e| e.to_string())?;
            let mut shards = Vec::with_capacity(partitions.min(PARTITIONS_PER_TOPIC_MAX as usize));
            for _ in 0..partitions {
                shards.push(ShardId(reader.u16("shard").map_err(|e| e.to_string())?));
            }
            topics.insert(
                name,
                Topic {
                    retention_ms,
                    retention_bytes,
                    segment_bytes,
                    min_insync_replicas: Setting::Default,
                    shards,
                },
            );
        }
        let next_producer_id = if version == VERSION_1 {
            0
        } else {
            reader.u64("next_producer_id").map_err(|e| e.to_string())?
        };
        if version == VERSION {
            for topic in topics.values_mut() {
                topic.min_insync_replicas = reader
                    .setting("min_insync_replicas")
                    .map_err(|e| e.to_string())?;
            }
        }
        reader.finish().map_err(|e| e.to_string())?;
        Ok(Metadata {
            topics,
            next_producer_id,
            cluster: None,
        })
    }

    /// Loads the metadata of a data directory; a missing file is an empty node.
    pub fn load(dir: &Path) -> Result<Metadata, MetadataError> {
        let path = dir.join(FILE_NAME);
        let display = path.display().to_string();
        match fs::read(&path) {
            Ok(bytes) => Metadata::decode(&bytes).map_err(|detail| MetadataError::Corrupt {
                path: display,
                detail,
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Metadata::default()),
            Err(source) => Err(MetadataError::Io {
                path: display,
                source,
            }),
        }
    }

    /// Stores the metadata atomically: temporary file, fsync, rename, fsync of the directory.
    pub fn store(&self, dir: &Path) -> Result<(), MetadataError> {
        crate::durable::replace(dir, FILE_NAME, &self.encode()).map_err(|source| {
            MetadataError::Io {
                path: dir.join(FILE_NAME).display().to_string(),
                source,
            }
        })
    }

    /// Moves every partition whose shard no longer exists to `assign`'s choice for the new
    /// shard count. Returns how many moved.
    pub fn reassign(&mut self, shards: u32) -> u32 {
        let mut moved = 0;
        for (name, topic) in &mut self.topics {
            for (partition, shard) in topic.shards.iter_mut().enumerate() {
                if u32::from(shard.0) >= shards {
                    *shard = assign(name, u32::try_from(partition).unwrap_or(0), shards);
                    moved += 1;
                }
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        let mut metadata = Metadata::default();
        metadata.topics.insert(
            "clicks".into(),
            Topic {
                retention_ms: Setting::Value(1000),
                retention_bytes: Setting::Unlimited,
                segment_bytes: Setting::Default,
                min_insync_replicas: Setting::Value(2),
                shards: vec![ShardId(0), ShardId(3), ShardId(1)],
            },
        );
        metadata
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let metadata = sample();
        let bytes = metadata.encode();
        assert_eq!(Metadata::decode(&bytes).unwrap(), metadata);
        for position in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[position] ^= 0x10;
            assert!(
                Metadata::decode(&damaged).is_err(),
                "flip at {position} undetected"
            );
        }
        assert!(Metadata::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A file of an older `version` with `body`.
    fn old_file(version: u16, mut body: Vec<u8>) -> Vec<u8> {
        let mut old = Vec::new();
        old.extend_from_slice(MAGIC);
        old.extend_from_slice(&version.to_le_bytes());
        old.extend_from_slice(&0u16.to_le_bytes());
        old.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
        old.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        old.append(&mut body);
        old
    }

    #[test]
    fn older_files_are_read_with_what_they_did_not_hold_at_its_default() {
        let mut metadata = sample();
        metadata.next_producer_id = 7000;
        let bytes = metadata.encode();
        assert_eq!(Metadata::decode(&bytes).unwrap(), metadata);
        let mut defaults = metadata.topics.clone();
        for topic in defaults.values_mut() {
            topic.min_insync_replicas = Setting::Default;
        }
        // The same topics as written by version 2: no min_insync_replicas after the counter
        // (one setting of 9 bytes per topic).
        let settings = 9 * metadata.topics.len();
        let version_2 = old_file(
            VERSION_2,
            bytes[HEADER_SIZE..bytes.len() - settings].to_vec(),
        );
        let read = Metadata::decode(&version_2).unwrap();
        assert_eq!(read.topics, defaults);
        assert_eq!(read.next_producer_id, 7000);
        // …and by version 1: no counter either.
        let version_1 = old_file(
            VERSION_1,
            bytes[HEADER_SIZE..bytes.len() - settings - 8].to_vec(),
        );
        let read = Metadata::decode(&version_1).unwrap();
        assert_eq!(read.topics, defaults);
        assert_eq!(read.next_producer_id, 0);
    }

    #[test]
    fn reassignment_moves_only_missing_shards() {
        let mut metadata = sample();
        assert_eq!(metadata.reassign(2), 1);
        let shards = &metadata.topics["clicks"].shards;
        assert_eq!(shards[0], ShardId(0));
        assert_eq!(shards[2], ShardId(1));
        assert!(shards[1].0 < 2);
        let mut again = sample();
        again.reassign(2);
        assert_eq!(again, metadata, "deterministic");
    }
}
