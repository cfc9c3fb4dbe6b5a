//! Typed request and response bodies, their encoding into whole frames and their decoding
//! from frames. Byte strings (record batches) are shared with the frame, never copied on
//! decode.

use core::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Reader, Writer};
use crate::error::{ErrorCode, ProtoError};
use crate::frame::{Frame, FrameHead, FLAGS_KNOWN, FLAG_ERROR, FLAG_RESPONSE, VERSION};
use crate::group::{GroupOp, GroupRequest, GroupResponse};
use crate::limits::{
    ADMIN_WAIT_MS_MAX, CLUSTER_ID_SIZE_MAX, CLUSTER_MEMBERS_MAX, CLUSTER_NAME_SIZE_MAX,
    CLUSTER_PARTITIONS_LISTED_MAX, CLUSTER_PARTITION_REPLICAS_MAX, CLUSTER_SHARDS_MAX,
    ENDPOINT_SIZE_MAX, ERROR_MESSAGE_SIZE_MAX, FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX,
    FRAME_HEADER_SIZE, GROUP_SYNC_WAIT_MS_MAX, PRODUCER_IDS_PER_REQUEST_MAX, RACK_SIZE_MAX,
    RESPONSE_SIZE_MAX, SHARDS_MAX, TOPICS_PER_REQUEST_MAX, TOPICS_PER_RESPONSE_MAX,
};
use crate::replica::{
    decode_boundaries, encode_boundaries, EpochBoundary, ReplicaFetchRequest, ReplicaFetchResponse,
    ReplicaProgressRequest,
};
use crate::{ApiKey, PartitionId, ShardId};
use spate_format::limits::{BATCH_SIZE_MAX, PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_LENGTH_MAX};

/// When a produce request is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// When the shard accepted the batch (assigned offsets); lost if the node crashes first.
    None,
    /// When the batch's write to the segment file completed (in the device, not yet synced).
    Write,
    /// When `fdatasync` covering the batch returned: durable.
    #[default]
    Fsync,
}

impl Durability {
    pub fn to_u8(self) -> u8 {
        match self {
            Durability::None => 0,
            Durability::Write => 1,
            Durability::Fsync => 2,
        }
    }

    pub fn from_u8(value: u8) -> Option<Durability> {
        match value {
            0 => Some(Durability::None),
            1 => Some(Durability::Write),
            2 => Some(Durability::Fsync),
            _ => None,
        }
    }
}

/// A numeric topic setting: the node's default, unlimited, or a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Setting {
    #[default]
    Default,
    Unlimited,
    Value(u64),
}

/// Where `ListOffsets` looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (the offset the next durable record will get).
    Latest,
    /// The first offset whose record timestamp is at least this (ms since the epoch).
    Timestamp(i64),
    /// Where the records of this leader epoch end (Kafka's OffsetForLeaderEpoch, KIP-320):
    /// the next epoch's start in the leader's chain, or its log end for its latest epoch.
    /// The answer's `leader_epoch` is the largest epoch of the chain at or below this one
    /// (this one when it precedes the whole chain, whose start is then the offset); `None`
    /// when the node knows no such end (an epoch above its chain, a node without epochs).
    /// Sent with `ReadEpochs::answer`.
    EpochEnd(u32),
}

/// Kafka's leader epochs (KIP-320) in a partition read (`Fetch`, `ListOffsets`): whether the
/// answer names the leader epochs of what it returns, and the epoch the reader believes its
/// leader is in. A single node has no epochs: it answers without them and checks nothing.
/// Sent after the request's other fields only when set (a byte of flags, then `current`), so
/// older nodes take requests without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadEpochs {
    /// Answer with the epochs (`FetchResponse::epochs`, `ListOffsetsResponse::leader_epoch`).
    pub answer: bool,
    /// Refused unless the partition's leader is in this epoch: `FencedLeaderEpoch` when the
    /// leader's is newer (the reader's map is stale), `UnknownLeaderEpoch` when it is older
    /// (this node has not taken that epoch yet).
    pub current: Option<u32>,
}

/// `ReadEpochs` flag bits.
const READ_EPOCHS_ANSWER: u8 = 1;
const READ_EPOCHS_CURRENT: u8 = 2;

impl ReadEpochs {
    fn is_set(self) -> bool {
        self.answer || self.current.is_some()
    }

    fn encode(self, w: &mut Writer<'_, BytesMut>) {
        if !self.is_set() {
            return;
        }
        let mut flags = 0;
        if self.answer {
            flags |= READ_EPOCHS_ANSWER;
        }
        if self.current.is_some() {
            flags |= READ_EPOCHS_CURRENT;
        }
        w.u8(flags);
        if let Some(current) = self.current {
            w.u32(current);
        }
    }

    fn decode(reader: &mut Reader) -> Result<Self, ProtoError> {
        if reader.remaining() == 0 {
            return Ok(Self::default());
        }
        let flags = reader.u8("epochs")?;
        if flags == 0 || flags & !(READ_EPOCHS_ANSWER | READ_EPOCHS_CURRENT) != 0 {
            return Err(ProtoError::Value {
                field: "epochs",
                value: flags.into(),
            });
        }
        let current = if flags & READ_EPOCHS_CURRENT != 0 {
            Some(reader.u32("current_leader_epoch")?)
        } else {
            None
        };
        Ok(Self {
            answer: flags & READ_EPOCHS_ANSWER != 0,
            current,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    pub topic: String,
    pub partitions: u32,
    pub retention_ms: Setting,
    pub retention_bytes: Setting,
    pub segment_bytes: Setting,
    /// Copies of each partition, on distinct nodes; 0: the node's default (1). A single node
    /// holds one.
    pub replication_factor: u16,
    /// `min.insync.replicas`: an `fsync` produce is refused (`NotEnoughReplicas`) while
    /// fewer replicas are in sync. `Default` (1) is not sent, so older nodes take the request.
    pub min_insync_replicas: Setting,
    /// The request as a client from before replication sends it: it ends after
    /// `segment_bytes` (the factor is then the default and `min_insync_replicas` too). Set
    /// by the decoder so the request encodes back to its own bytes; new requests leave it
    /// false.
    pub legacy_layout: bool,
}

/// Changes a topic's settings; `None` keeps a setting as it is. A new segment size applies
/// from each partition's next roll (segments written before keep their size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterTopicRequest {
    pub topic: String,
    pub retention_ms: Option<Setting>,
    pub retention_bytes: Option<Setting>,
    pub segment_bytes: Option<Setting>,
    /// `min.insync.replicas`; sent only when set, so older nodes take the other changes.
    pub min_insync_replicas: Option<Setting>,
    /// Check and answer, change nothing.
    pub validate_only: bool,
}

/// A topic's settings after an `AlterTopic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterTopicResponse {
    pub topic: String,
    pub retention_ms: Setting,
    pub retention_bytes: Setting,
    pub segment_bytes: Setting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicResponse {
    pub topic: String,
    pub partitions: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicRequest {
    pub topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicResponse {
    pub topic: String,
}

/// Creates a topic a client asked for by name, with the node's defaults, if the node allows
/// automatic creation (`--auto-create-topics`); a topic that exists is answered as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoCreateTopicRequest {
    pub topic: String,
}

/// A block of producer ids for the gateway to hand to (idempotent) Kafka producers: never
/// handed out twice by a node, also across crashes (stored before the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocateProducerIdsRequest {
    /// 1 to `PRODUCER_IDS_PER_REQUEST_MAX`.
    pub count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocateProducerIdsResponse {
    /// The ids `first .. first + count` are the caller's.
    pub first: u64,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequest {
    /// Topics to describe; empty means all.
    pub topics: Vec<String>,
    /// Ask for the settings added after the first version (`min_insync_replicas`); sent only
    /// when set, and answered only when asked, so older peers keep working on either side.
    pub settings: bool,
    /// Ask also for where each partition's replicas are and the members' Kafka addresses
    /// (`MetadataResponse::members`, `TopicMetadata::replicas`). Sent after `settings`, so
    /// asking for it asks for the settings too.
    pub placement: bool,
    /// Ask also for the members' racks (`MemberAddress::rack`). Sent after `placement`, which
    /// it implies.
    pub racks: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard: ShardId,
    /// `host:port` of the shard's listener.
    pub endpoint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: PartitionId,
    pub shard: ShardId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// Effective settings (never `Setting::Default`).
    pub retention_ms: Setting,
    pub retention_bytes: Setting,
    pub segment_bytes: Setting,
    /// `Default` when the answer does not carry it (the request did not ask for settings).
    pub min_insync_replicas: Setting,
    pub partitions: Vec<PartitionMetadata>,
    /// Per partition (in `partitions` order), where its replicas are; empty when the answer
    /// does not carry placement (`MetadataResponse::members` is `None`).
    pub replicas: Vec<PartitionPlacement>,
}

/// Where a partition's replicas are, in a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionPlacement {
    /// The leader's node id; `None` while the partition has no leader (offline, or being
    /// created).
    pub leader: Option<u32>,
    /// The leader epoch (0 before the first leader).
    pub epoch: u32,
    /// The assigned replicas' node ids, in preference order (at most
    /// `CLUSTER_PARTITION_REPLICAS_MAX`).
    pub replicas: Vec<u32>,
    /// The in-sync replicas' node ids (at most `CLUSTER_PARTITION_REPLICAS_MAX`).
    pub isr: Vec<u32>,
}

/// A member of the cluster and the Kafka address it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddress {
    pub node: u32,
    /// `host:port` of the Kafka listener in front of it (`spate-node --kafka-address`);
    /// empty when it publishes none.
    pub kafka: String,
    /// Its rack (`spate-node --rack`); empty when it has none, or when the answer does not
    /// carry racks (`MetadataResponse::racks`).
    pub rack: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    pub shards: Vec<ShardInfo>,
    pub topics: Vec<TopicMetadata>,
    /// The answer carries the later settings (a `1`, then `min_insync_replicas` of each topic,
    /// after the topics): set when the request asked for them.
    pub settings: bool,
    /// The cluster's members and their Kafka addresses, when the request asked for placement
    /// and the node is in a cluster (after the settings: a `1`, the members, then each
    /// partition's placement); `None` otherwise (a single node answers without it). Carried
    /// only with `settings`.
    pub members: Option<Vec<MemberAddress>>,
    /// The answer carries the members' racks (after the placement: a `1`, then each member's
    /// rack, `str16`, in `members` order): set when the request asked for them and the
    /// answer has members.
    pub racks: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub topic: String,
    pub partition: PartitionId,
    pub durability: Durability,
    /// Exactly one record batch, as built by `spate_format::BatchBuilder`.
    pub batch: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceResponse {
    pub base_offset: u64,
    /// The node's append time stamped into the batch.
    pub append_time: i64,
    pub log_start_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub topic: String,
    pub partition: PartitionId,
    pub offset: u64,
    /// Soft limit on the returned bytes (at least the batch holding `offset` is returned).
    pub max_bytes: u32,
    /// How long to wait for `min_bytes` to be available.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub epochs: ReadEpochs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Whole record batches back to back; the first holds the requested offset.
    pub records: Bytes,
    /// When the request asked (`ReadEpochs::answer`) and the partition has leader epochs:
    /// the epoch of the requested offset (starting there), then every epoch starting inside
    /// the records, at most `REPLICA_FETCH_EPOCHS_MAX` (the records end before the boundary
    /// past the limit). A batch's epoch is that of the last boundary at or below its base
    /// offset (the first boundary for the first batch). After the records: a `1`, then the
    /// list; nothing when empty.
    pub epochs: Vec<EpochBoundary>,
}

impl FetchResponse {
    /// What follows the records: a `1` and the epochs, or nothing without them.
    fn encode_epochs(&self, w: &mut Writer<'_, BytesMut>) {
        if !self.epochs.is_empty() {
            w.u8(1);
            encode_boundaries(w, &self.epochs);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub topic: String,
    pub partition: PartitionId,
    pub spec: OffsetSpec,
    pub epochs: ReadEpochs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    /// The offset found; for a timestamp with no record at or after it, the high watermark.
    pub offset: u64,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    /// When the request asked (`ReadEpochs::answer`) and the partition has leader epochs: the
    /// epoch of the record at `offset` (the latest epoch for the high watermark; for
    /// `EpochEnd`, as that spec says). After the other fields: a `1`, then the epoch.
    pub leader_epoch: Option<u32>,
}

/// Moves a partition's log start forward to `offset` (Kafka's DeleteRecords): the records
/// below it are no longer readable and their segments are deleted. Answered once the move
/// is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRecordsRequest {
    pub topic: String,
    pub partition: PartitionId,
    /// The new log start; [`DELETE_RECORDS_TO_HIGH_WATERMARK`] for the high watermark.
    pub offset: u64,
}

/// `DeleteRecordsRequest::offset` meaning "up to the high watermark" (Kafka's -1).
pub const DELETE_RECORDS_TO_HIGH_WATERMARK: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteRecordsResponse {
    /// The partition's log start after the move (Kafka's low watermark).
    pub log_start_offset: u64,
}

/// A partition's facts on the node: offsets, bytes on disk, segments, fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribePartitionRequest {
    pub topic: String,
    pub partition: PartitionId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribePartitionResponse {
    pub log_start_offset: u64,
    pub high_watermark: u64,
    /// Bytes of its segment files (what is written, not what is preallocated).
    pub size_bytes: u64,
    pub segments: u32,
    /// Why writes are refused, if they are (empty: not fenced).
    pub fenced: String,
}

/// Asks what a node knows of its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DescribeClusterRequest {
    /// Ask for the partitions' health too (sent only when set: a `1`; older nodes take the
    /// request without it and answer without partitions).
    pub partitions: bool,
    /// Ask for the moves in progress too (a second `1`, after `partitions`, which it
    /// implies; an older node refuses it as `Malformed`).
    pub moves: bool,
    /// Ask for the members' racks too (a third `1`, after `moves`, which it implies).
    pub racks: bool,
}

/// The partitions of a cluster as the answering node's map shows them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionHealth {
    /// Every partition of every topic.
    pub total: u32,
    /// Those led, whose ISR is smaller than their replica set.
    pub under_replicated: u32,
    /// Those without a leader (none elected, or its member gone).
    pub offline: u32,
    /// The under-replicated partitions, then the offline ones, at most
    /// `CLUSTER_PARTITIONS_LISTED_MAX`.
    pub listed: Vec<PartitionStatus>,
}

/// One partition of [`PartitionHealth::listed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: u32,
    /// The leader's node id, if the partition has a live one.
    pub leader: Option<u32>,
    /// The assigned replicas' node ids, in preference order (at most
    /// `CLUSTER_PARTITION_REPLICAS_MAX`).
    pub replicas: Vec<u32>,
    /// The in-sync replicas' node ids (at most `CLUSTER_PARTITION_REPLICAS_MAX`).
    pub isr: Vec<u32>,
}

/// What a node knows of its cluster: the answer to `DescribeCluster`. A single node (no
/// `--etcd`) answers with an empty cluster name, no controller and itself as the one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeClusterResponse {
    /// The cluster's name (`--cluster-name`); empty for a single node.
    pub cluster: String,
    /// The answering node's id (`--node-id`), if it has one.
    pub node: Option<u32>,
    /// The elected controller's node id, if one is elected.
    pub controller: Option<u32>,
    /// The registered members, by node id.
    pub members: Vec<ClusterMember>,
    /// The partitions' health, when the request asked for it (after the members: a `1`,
    /// `total: u32`, `under_replicated: u32`, `offline: u32`, then the listed partitions).
    pub partitions: Option<PartitionHealth>,
    /// The moves in progress (after the partitions' health, which it needs: a `1`, then
    /// [`crate::MovesStatus`]); absent from older nodes.
    pub moves: Option<crate::MovesStatus>,
    /// The answer carries the members' racks (`ClusterMember::rack`; after the moves, which
    /// it needs: a `1`, then each member's rack, `str16`, in `members` order): set when the
    /// request asked for them and the answer has the moves.
    pub racks: bool,
}

/// One member of a cluster, as it registered (docs/cluster.md, "Membership").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    pub node: u32,
    /// The member's session (16 hex digits; empty for a single node, which has none).
    pub session: String,
    /// Its data directory's storage id (16 hex digits).
    pub storage: String,
    /// When its session began (Unix time, ms).
    pub since_ms: u64,
    /// The address of each of its shards, by shard id.
    pub shards: Vec<String>,
    /// Its rack (`spate-node --rack`); empty when it has none or the answer does not carry
    /// racks (`DescribeClusterResponse::racks`).
    pub rack: String,
}

impl DescribeClusterResponse {
    /// The answer cut to what a decoder takes (`CLUSTER_*` limits): strings shortened, members
    /// and shard addresses beyond the limits left out. A node builds it from etcd's records,
    /// which nothing else bounds.
    pub fn within_limits(mut self) -> Self {
        let clamp = |text: &mut String, max: u32| truncate_utf8(text, max as usize);
        clamp(&mut self.cluster, CLUSTER_NAME_SIZE_MAX);
        self.members.truncate(CLUSTER_MEMBERS_MAX as usize);
        let mut shards_left = CLUSTER_SHARDS_MAX as usize;
        for member in &mut self.members {
            clamp(&mut member.session, CLUSTER_ID_SIZE_MAX);
            clamp(&mut member.storage, CLUSTER_ID_SIZE_MAX);
            clamp(&mut member.rack, RACK_SIZE_MAX);
            member
                .shards
                .truncate((SHARDS_MAX as usize).min(shards_left));
            shards_left -= member.shards.len();
            for shard in &mut member.shards {
                clamp(shard, ENDPOINT_SIZE_MAX);
            }
        }
        if let Some(health) = &mut self.partitions {
            health
                .listed
                .truncate(CLUSTER_PARTITIONS_LISTED_MAX as usize);
            for status in &mut health.listed {
                let max = CLUSTER_PARTITION_REPLICAS_MAX as usize;
                status.replicas.truncate(max);
                status.isr.truncate(max);
            }
        }
        self
    }

    fn encode_body(&self, w: &mut Writer<'_, BytesMut>) {
        let optional = write_optional_id;
        // Whatever built it, only what a decoder takes goes out.
        let this = self.clone().within_limits();
        w.str16(&this.cluster);
        optional(w, this.node);
        optional(w, this.controller);
        w.u32(u32::try_from(this.members.len()).unwrap_or(u32::MAX));
        for member in &this.members {
            w.u32(member.node);
            w.str16(&member.session);
            w.str16(&member.storage);
            w.u64(member.since_ms);
            w.u32(u32::try_from(member.shards.len()).unwrap_or(u32::MAX));
            for shard in &member.shards {
                w.str16(shard);
            }
        }
        if let Some(health) = &this.partitions {
            w.u8(1);
            w.u32(health.total);
            w.u32(health.under_replicated);
            w.u32(health.offline);
            w.u32(u32::try_from(health.listed.len()).unwrap_or(u32::MAX));
            let ids = write_ids;
            for status in &health.listed {
                w.str16(&status.topic);
                w.u32(status.partition);
                optional(w, status.leader);
                ids(w, &status.replicas);
                ids(w, &status.isr);
            }
            if let Some(moves) = &this.moves {
                w.u8(1);
                moves.encode_body(w);
                if this.racks {
                    w.u8(1);
                    for member in &this.members {
                        w.str16(&member.rack);
                    }
                }
            }
        }
    }

    fn decode_body(reader: &mut Reader) -> Result<Self, ProtoError> {
        let optional = read_optional_id;
        let cluster = reader.string16("cluster", CLUSTER_NAME_SIZE_MAX)?;
        let node = optional(reader, "node")?;
        let controller = optional(reader, "controller")?;
        // A member takes at least its id, two empty ids, its start and a shard count.
        let count = reader.count("members", CLUSTER_MEMBERS_MAX, 4 + 2 + 2 + 8 + 4)?;
        let mut members = Vec::with_capacity(count);
        let mut shards_left = CLUSTER_SHARDS_MAX;
        for _ in 0..count {
            let node = reader.u32("member")?;
            let session = reader.string16("session", CLUSTER_ID_SIZE_MAX)?;
            let storage = reader.string16("storage", CLUSTER_ID_SIZE_MAX)?;
            let since_ms = reader.u64("since_ms")?;
            let shards = reader.count("shards", SHARDS_MAX.min(shards_left), 2)?;
            shards_left -= u32::try_from(shards).unwrap_or(u32::MAX).min(shards_left);
            let mut endpoints = Vec::with_capacity(shards);
            for _ in 0..shards {
                endpoints.push(reader.string16("shard", ENDPOINT_SIZE_MAX)?);
            }
            members.push(ClusterMember {
                node,
                session,
                storage,
                since_ms,
                shards: endpoints,
                rack: String::new(),
            });
        }
        // Present when the request asked for it.
        let partitions = if !trailing_flag(reader, "partitions")? {
            None
        } else {
            let total = reader.u32("total")?;
            let under_replicated = reader.u32("under_replicated")?;
            let offline = reader.u32("offline")?;
            // A listed partition takes at least its name, number, leader and two counts.
            let count = reader.count(
                "listed",
                CLUSTER_PARTITIONS_LISTED_MAX,
                TOPIC_SIZE_MIN + 4 + 1 + 4 + 4,
            )?;
            let ids = read_ids;
            let mut listed = Vec::with_capacity(count);
            for _ in 0..count {
                listed.push(PartitionStatus {
                    topic: read_topic(reader)?,
                    partition: reader.u32("partition")?,
                    leader: optional(reader, "leader")?,
                    replicas: ids(reader, "replicas")?,
                    isr: ids(reader, "isr")?,
                });
            }
            Some(PartitionHealth {
                total,
                under_replicated,
                offline,
                listed,
            })
        };
        let moves = if partitions.is_some() && trailing_flag(reader, "moves")? {
            Some(crate::MovesStatus::decode_body(reader)?)
        } else {
            None
        };
        let racks = moves.is_some() && trailing_flag(reader, "racks")?;
        if racks {
            for member in &mut members {
                member.rack = reader.string16("rack", RACK_SIZE_MAX)?;
            }
        }
        Ok(DescribeClusterResponse {
            cluster,
            node,
            controller,
            members,
            partitions,
            moves,
            racks,
        })
    }
}

/// Which record `FindRecord` looks for, by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTarget {
    /// The first record whose timestamp is at least this (tag 0).
    AtOrAfter(i64),
    /// The first record with the newest timestamp (tag 1; Kafka's ListOffsets -3).
    Newest,
}

/// Finds a record by its timestamp and says its offset and timestamp (Kafka's ListOffsets
/// by time and by newest time, which answer both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindRecordRequest {
    pub topic: String,
    pub partition: PartitionId,
    pub target: RecordTarget,
    pub epochs: ReadEpochs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FindRecordResponse {
    /// The record found, or the high watermark if there is none.
    pub offset: u64,
    /// Its timestamp; -1 if there is none.
    pub timestamp: i64,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    /// When the request asked (`ReadEpochs::answer`) and the partition has leader epochs: the
    /// epoch of the record found (the latest when there is none). After the other fields: a
    /// `1`, then the epoch.
    pub leader_epoch: Option<u32>,
}

/// Machine-readable facts attached to an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ErrorDetail {
    #[default]
    None,
    /// The shard that owns the partition.
    NotOwner { shard: ShardId, endpoint: String },
    /// The valid offset range of the partition.
    OffsetRange {
        log_start_offset: u64,
        high_watermark: u64,
    },
    /// The member id to join with (`MemberIdRequired`).
    MemberId { member_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub code: ErrorCode,
    pub message: String,
    pub detail: ErrorDetail,
}

impl ErrorResponse {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate_utf8(&mut message, ERROR_MESSAGE_SIZE_MAX as usize);
        ErrorResponse {
            code,
            message,
            detail: ErrorDetail::None,
        }
    }

    pub fn with_detail(mut self, detail: ErrorDetail) -> Self {
        self.detail = detail;
        self
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

pub(crate) fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    CreateTopic(CreateTopicRequest),
    DeleteTopic(DeleteTopicRequest),
    Metadata(MetadataRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    AllocateProducerIds(AllocateProducerIdsRequest),
    AutoCreateTopic(AutoCreateTopicRequest),
    AlterTopic(AlterTopicRequest),
    DeleteRecords(DeleteRecordsRequest),
    FindRecord(FindRecordRequest),
    Group(GroupRequest),
    DescribePartition(DescribePartitionRequest),
    DescribeCluster(DescribeClusterRequest),
    ReplicaFetch(ReplicaFetchRequest),
    ReplicaProgress(ReplicaProgressRequest),
    MovePartitions(crate::MovePartitionsRequest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    CreateTopic(CreateTopicResponse),
    DeleteTopic(DeleteTopicResponse),
    Metadata(MetadataResponse),
    Produce(ProduceResponse),
    Fetch(FetchResponse),
    ListOffsets(ListOffsetsResponse),
    AllocateProducerIds(AllocateProducerIdsResponse),
    /// The topic (created now or before) and its partition count.
    AutoCreateTopic(CreateTopicResponse),
    AlterTopic(AlterTopicResponse),
    DeleteRecords(DeleteRecordsResponse),
    FindRecord(FindRecordResponse),
    Group(GroupResponse),
    DescribePartition(DescribePartitionResponse),
    DescribeCluster(DescribeClusterResponse),
    ReplicaFetch(ReplicaFetchResponse),
    /// The leader took the report (an empty body).
    ReplicaProgress,
    MovePartitions(crate::MovePartitionsResponse),
    /// An error answering a request with the raw api key `api_key`.
    Error {
        api_key: u16,
        error: ErrorResponse,
    },
}

/// Writes a whole frame: header, then the body `write_body` appends.
fn encode_frame(
    out: &mut BytesMut,
    api_key: u16,
    flags: u8,
    correlation_id: u64,
    write_body: impl FnOnce(&mut Writer<'_, BytesMut>),
) {
    encode_frame_before(out, api_key, flags, correlation_id, 0, write_body);
}

/// Appends a frame's header and the start of its body, where `trailing` more body bytes
/// follow that the caller sends after it (or already holds behind it): the header's length
/// counts them.
fn encode_frame_before(
    out: &mut BytesMut,
    api_key: u16,
    flags: u8,
    correlation_id: u64,
    trailing: usize,
    write_body: impl FnOnce(&mut Writer<'_, BytesMut>),
) {
    let start = out.len();
    out.put_bytes(0, FRAME_HEADER_SIZE as usize);
    write_body(&mut Writer::new(out));
    let body_length = out.len() - start - FRAME_HEADER_SIZE as usize + trailing;
    let head = FrameHead {
        api_key,
        version: VERSION,
        flags,
        correlation_id,
        // Bodies are bounded by the frame limits (`REQUEST_SIZE_MAX`, `RESPONSE_SIZE_MAX`),
        // far below u32::MAX.
        body_length: u32::try_from(body_length).expect("frame body over 4 GiB"),
    };
    out[start..start + FRAME_HEADER_SIZE as usize].copy_from_slice(&head.encode());
}

/// The fields of a `Produce` request before its batch of `batch_len` bytes.
fn write_produce_fields(
    w: &mut Writer<'_, BytesMut>,
    topic: &str,
    partition: PartitionId,
    durability: Durability,
    batch_len: usize,
) {
    w.str16(topic);
    w.u32(partition.0);
    w.u8(durability.to_u8());
    // A batch is at most `BATCH_SIZE_MAX` (1 MiB): the gateway passes batches that
    // `kafka_to_spate` accepted and the SDK batches that `BatchBuilder` bounded, so this
    // cannot fail.
    w.u32(u32::try_from(batch_len).expect("a batch is at most 1 MiB"));
}

/// A `Produce` request frame whose batch is `parts` back to back (a batch header and its
/// records held apart, as the gateway's Kafka listener has them), written with one copy of
/// each part: the same bytes as `Request::Produce` with the parts joined, encoded by
/// [`Request::to_frame`]. The parts are one batch, at most `BATCH_SIZE_MAX` bytes (more
/// than 4 GiB panics).
pub fn produce_frame_from_parts(
    correlation_id: u64,
    topic: &str,
    partition: PartitionId,
    durability: Durability,
    parts: &[&[u8]],
) -> Bytes {
    let batch_len: usize = parts.iter().map(|part| part.len()).sum();
    let mut out =
        BytesMut::with_capacity(FRAME_HEADER_SIZE as usize + 2 + topic.len() + 9 + batch_len);
    encode_frame(&mut out, ApiKey::Produce.to_u16(), 0, correlation_id, |w| {
        write_produce_fields(w, topic, partition, durability, batch_len);
        for part in parts {
            w.raw(part);
        }
    });
    out.freeze()
}

/// Bytes before the batch in a `Produce` request frame for `topic`: the frame header, then
/// the topic, partition, durability and batch length.
pub fn produce_frame_headroom(topic: &str) -> usize {
    FRAME_HEADER_SIZE as usize + 2 + topic.len() + 4 + 1 + 4
}

/// A `Produce` request frame around a batch that was built in place behind
/// [`produce_frame_headroom`]`(topic)` bytes of `buffer` (with
/// `spate_format::BatchBuilder::with_headroom`): the frame's header and fields are written
/// into the headroom and the batch is not copied. The same bytes as [`Request::to_frame`] of
/// the equivalent request. The batch is at most `BATCH_SIZE_MAX` bytes (more than 4 GiB
/// panics).
pub fn produce_frame_in_place(
    mut buffer: Vec<u8>,
    correlation_id: u64,
    topic: &str,
    partition: PartitionId,
    durability: Durability,
) -> Bytes {
    let headroom = produce_frame_headroom(topic);
    assert!(buffer.len() >= headroom, "the buffer holds its headroom");
    let batch_len = buffer.len() - headroom;
    let mut prefix = BytesMut::with_capacity(headroom);
    encode_frame_before(
        &mut prefix,
        ApiKey::Produce.to_u16(),
        0,
        correlation_id,
        batch_len,
        |w| write_produce_fields(w, topic, partition, durability, batch_len),
    );
    assert_eq!(prefix.len(), headroom, "the prefix fills the headroom");
    buffer[..headroom].copy_from_slice(&prefix);
    Bytes::from(buffer)
}

pub(crate) fn read_topic(reader: &mut Reader) -> Result<String, ProtoError> {
    let topic = reader.str16("topic", TOPIC_NAME_LENGTH_MAX)?;
    spate_format::validate_topic_name(topic)?;
    Ok(topic.to_owned())
}

/// A presence byte (0 or 1), then the setting if present.
fn read_optional_setting(
    reader: &mut Reader,
    field: &'static str,
) -> Result<Option<Setting>, ProtoError> {
    match reader.u8(field)? {
        0 => Ok(None),
        1 => Ok(Some(reader.setting(field)?)),
        other => Err(ProtoError::Value {
            field,
            value: other.into(),
        }),
    }
}

/// A node id that may be absent: `0`, or `1` and the id.
fn write_optional_id(w: &mut Writer<'_, BytesMut>, value: Option<u32>) {
    match value {
        None => w.u8(0),
        Some(value) => {
            w.u8(1);
            w.u32(value);
        }
    }
}

fn read_optional_id(reader: &mut Reader, field: &'static str) -> Result<Option<u32>, ProtoError> {
    match reader.u8(field)? {
        0 => Ok(None),
        1 => Ok(Some(reader.u32(field)?)),
        other => Err(ProtoError::Value {
            field,
            value: other.into(),
        }),
    }
}

/// Node ids (a partition's replicas or ISR): a count, then each.
pub(crate) fn write_ids(w: &mut Writer<'_, BytesMut>, ids: &[u32]) {
    w.u32(u32::try_from(ids.len()).unwrap_or(u32::MAX));
    for id in ids {
        w.u32(*id);
    }
}

pub(crate) fn read_ids(reader: &mut Reader, field: &'static str) -> Result<Vec<u32>, ProtoError> {
    let count = reader.count(field, CLUSTER_PARTITION_REPLICAS_MAX, 4)?;
    (0..count).map(|_| reader.u32(field)).collect()
}

/// A part added at the end of a message after its first version, sent only when present and
/// then announced by a `1`: false when the body ended before it.
fn trailing_flag(reader: &mut Reader, field: &'static str) -> Result<bool, ProtoError> {
    if reader.remaining() == 0 {
        return Ok(false);
    }
    match reader.u8(field)? {
        1 => Ok(true),
        other => Err(ProtoError::Value {
            field,
            value: other.into(),
        }),
    }
}

/// Smallest encoded topic name: its length and one character.
const TOPIC_SIZE_MIN: usize = 3;

/// Room for a response's frame header and fields other than a fetch's records: every answer
/// but a metadata listing fits.
const RESPONSE_SIZE_SMALL: usize = 512;

/// [`Request::parked_wait`] of a request frame, reading only what it needs (a fetch's
/// `max_wait_ms`; a group request is decoded); zero for any other frame, and for one that
/// does not decode (the node refuses it at once).
pub fn parked_wait(frame: &Frame) -> Duration {
    match frame.head.api() {
        Ok(ApiKey::Fetch) => {
            // The routing fields, then offset u64 and max_bytes u32, then max_wait_ms.
            let body = frame.body();
            let wait = frame.route().ok().flatten().and_then(|route| {
                let at = 2 + route.topic.len() + 4 + 8 + 4;
                let field = body.get(at..at + 4)?;
                Some(u32::from_le_bytes(field.try_into().ok()?))
            });
            Duration::from_millis(u64::from(wait.unwrap_or(0).min(FETCH_WAIT_MS_MAX)))
        }
        Ok(ApiKey::Group) => Request::decode(frame).map_or(Duration::ZERO, |r| r.parked_wait()),
        Ok(api) if api.is_admin() => Duration::from_millis(u64::from(ADMIN_WAIT_MS_MAX)),
        _ => Duration::ZERO,
    }
}

impl Request {
    /// How long the node may hold this request before it answers, by the request's own terms:
    /// a fetch's (or a replica fetch's) `max_wait_ms`, a JoinGroup's rebalance timeout, a
    /// SyncGroup's wait for its leader (`GROUP_SYNC_WAIT_MS_MAX`), an admin request's
    /// `ADMIN_WAIT_MS_MAX`; zero for the others. A requester's deadline is its own allowance
    /// plus this.
    pub fn parked_wait(&self) -> Duration {
        let millis = match self {
            Request::Fetch(fetch) => fetch.max_wait_ms.min(FETCH_WAIT_MS_MAX),
            Request::ReplicaFetch(fetch) => fetch.max_wait_ms.min(FETCH_WAIT_MS_MAX),
            Request::Group(GroupRequest {
                op: GroupOp::Join(join),
                ..
            }) => u32::try_from(join.rebalance_timeout_ms).unwrap_or(0),
            Request::Group(GroupRequest {
                op: GroupOp::Sync { .. },
                ..
            }) => GROUP_SYNC_WAIT_MS_MAX,
            request if request.api_key().is_admin() => ADMIN_WAIT_MS_MAX,
            _ => 0,
        };
        Duration::from_millis(u64::from(millis))
    }

    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::CreateTopic(_) => ApiKey::CreateTopic,
            Request::DeleteTopic(_) => ApiKey::DeleteTopic,
            Request::Metadata(_) => ApiKey::Metadata,
            Request::Produce(_) => ApiKey::Produce,
            Request::Fetch(_) => ApiKey::Fetch,
            Request::ListOffsets(_) => ApiKey::ListOffsets,
            Request::AllocateProducerIds(_) => ApiKey::AllocateProducerIds,
            Request::AutoCreateTopic(_) => ApiKey::AutoCreateTopic,
            Request::AlterTopic(_) => ApiKey::AlterTopic,
            Request::DeleteRecords(_) => ApiKey::DeleteRecords,
            Request::FindRecord(_) => ApiKey::FindRecord,
            Request::Group(_) => ApiKey::Group,
            Request::DescribePartition(_) => ApiKey::DescribePartition,
            Request::DescribeCluster(_) => ApiKey::DescribeCluster,
            Request::ReplicaFetch(_) => ApiKey::ReplicaFetch,
            Request::ReplicaProgress(_) => ApiKey::ReplicaProgress,
            Request::MovePartitions(_) => ApiKey::MovePartitions,
        }
    }

    /// Appends the request as a whole frame.
    pub fn encode(&self, correlation_id: u64, out: &mut BytesMut) {
        encode_frame(
            out,
            self.api_key().to_u16(),
            0,
            correlation_id,
            |w| match self {
                Request::CreateTopic(request) => {
                    w.str16(&request.topic);
                    w.u32(request.partitions);
                    w.setting(request.retention_ms);
                    w.setting(request.retention_bytes);
                    w.setting(request.segment_bytes);
                    let legacy = request.legacy_layout
                        && request.replication_factor == 0
                        && request.min_insync_replicas == Setting::Default;
                    if !legacy {
                        w.u16(request.replication_factor);
                    }
                    if request.min_insync_replicas != Setting::Default {
                        w.setting(request.min_insync_replicas);
                    }
                }
                Request::DeleteTopic(request) => w.str16(&request.topic),
                Request::Metadata(request) => {
                    w.u32(u32::try_from(request.topics.len()).unwrap_or(u32::MAX));
                    for topic in &request.topics {
                        w.str16(topic);
                    }
                    if request.settings || request.placement || request.racks {
                        w.u8(1);
                    }
                    if request.placement || request.racks {
                        w.u8(1);
                    }
                    if request.racks {
                        w.u8(1);
                    }
                }
                Request::Produce(request) => {
                    w.str16(&request.topic);
                    w.u32(request.partition.0);
                    w.u8(request.durability.to_u8());
                    w.bytes32(&request.batch);
                }
                Request::Fetch(request) => {
                    w.str16(&request.topic);
                    w.u32(request.partition.0);
                    w.u64(request.offset);
                    w.u32(request.max_bytes);
                    w.u32(request.max_wait_ms);
                    w.u32(request.min_bytes);
                    request.epochs.encode(w);
                }
                Request::ListOffsets(request) => {
                    w.str16(&request.topic);
                    w.u32(request.partition.0);
                    let (tag, timestamp) = match request.spec {
                        OffsetSpec::Earliest => (0, 0),
                        OffsetSpec::Latest => (1, 0),
                        OffsetSpec::Timestamp(timestamp) => (2, timestamp),
                        OffsetSpec::EpochEnd(epoch) => (3, i64::from(epoch)),
                    };
                    w.u8(tag);
                    w.i64(timestamp);
                    request.epochs.encode(w);
                }
                Request::DeleteRecords(request) => {
                    w.str16(&request.topic);
                    w.u32(request.partition.0);
                    w.u64(request.offset);
                }
                Request::FindRecord(request) => {
                    w.str16(&request.topic);
                    w.u32(request.partition.0);
                    let (tag, timestamp) = match request.target {
                        RecordTarget::AtOrAfter(timestamp) => (0, timestamp),
                        RecordTarget::Newest => (1, 0),
                    };
                    w.u8(tag);
                    w.i64(timestamp);
                    request.epochs.encode(w);
                }
                Request::AllocateProducerIds(request) => w.u32(request.count),
                Request::Group(request) => request.encode_body(w),
                Request::DescribePartition(request) => {
                    w.str16(&request.topic);
                    w.u32(request.partition.0);
                }
                Request::DescribeCluster(request) => {
                    if request.partitions || request.moves || request.racks {
                        w.u8(1);
                    }
                    if request.moves || request.racks {
                        w.u8(1);
                    }
                    if request.racks {
                        w.u8(1);
                    }
                }
                Request::AutoCreateTopic(request) => w.str16(&request.topic),
                Request::ReplicaFetch(request) => request.encode_body(w),
                Request::ReplicaProgress(request) => request.encode_body(w),
                Request::MovePartitions(request) => request.encode_body(w),
                Request::AlterTopic(request) => {
                    w.str16(&request.topic);
                    w.u8(u8::from(request.validate_only));
                    for setting in [
                        request.retention_ms,
                        request.retention_bytes,
                        request.segment_bytes,
                    ] {
                        match setting {
                            None => w.u8(0),
                            Some(setting) => {
                                w.u8(1);
                                w.setting(setting);
                            }
                        }
                    }
                    if let Some(setting) = request.min_insync_replicas {
                        w.u8(1);
                        w.setting(setting);
                    }
                }
            },
        );
    }

    /// Encodes the request as a frame of its own.
    pub fn to_frame(&self, correlation_id: u64) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(correlation_id, &mut out);
        out.freeze()
    }

    /// Decodes a request frame, checking flags, version and every field.
    pub fn decode(frame: &Frame) -> Result<Request, ProtoError> {
        let api = frame.head.check_request()?;
        let mut reader = Reader::new(frame.body());
        let request = match api {
            ApiKey::CreateTopic => Request::CreateTopic(CreateTopicRequest {
                topic: read_topic(&mut reader)?,
                partitions: reader.u32("partitions")?,
                retention_ms: reader.setting("retention_ms")?,
                retention_bytes: reader.setting("retention_bytes")?,
                segment_bytes: reader.setting("segment_bytes")?,
                // Absent in requests of clients from before replication (their default).
                legacy_layout: reader.remaining() == 0,
                replication_factor: if reader.remaining() == 0 {
                    0
                } else {
                    reader.u16("replication_factor")?
                },
                // Sent only when not the default (an explicit default would not encode back to
                // the same bytes).
                min_insync_replicas: match reader.remaining() {
                    0 => Setting::Default,
                    _ => match reader.setting("min_insync_replicas")? {
                        Setting::Default => {
                            return Err(ProtoError::Value {
                                field: "min_insync_replicas",
                                value: 0,
                            })
                        }
                        setting => setting,
                    },
                },
            }),
            ApiKey::DeleteTopic => Request::DeleteTopic(DeleteTopicRequest {
                topic: read_topic(&mut reader)?,
            }),
            ApiKey::Metadata => {
                let count = reader.count("topics", TOPICS_PER_REQUEST_MAX, TOPIC_SIZE_MIN)?;
                let mut topics = Vec::with_capacity(count);
                for _ in 0..count {
                    topics.push(read_topic(&mut reader)?);
                }
                let settings = trailing_flag(&mut reader, "settings")?;
                let placement = settings && trailing_flag(&mut reader, "placement")?;
                let racks = placement && trailing_flag(&mut reader, "racks")?;
                Request::Metadata(MetadataRequest {
                    topics,
                    settings,
                    placement,
                    racks,
                })
            }
            ApiKey::Produce => {
                let topic = read_topic(&mut reader)?;
                let partition = PartitionId(reader.u32("partition")?);
                let durability = reader.u8("durability")?;
                let durability = Durability::from_u8(durability).ok_or(ProtoError::Value {
                    field: "durability",
                    value: durability.into(),
                })?;
                let batch = reader.bytes32("batch", BATCH_SIZE_MAX)?;
                Request::Produce(ProduceRequest {
                    topic,
                    partition,
                    durability,
                    batch,
                })
            }
            ApiKey::Fetch => {
                let request = FetchRequest {
                    topic: read_topic(&mut reader)?,
                    partition: PartitionId(reader.u32("partition")?),
                    offset: reader.u64("offset")?,
                    max_bytes: reader.u32("max_bytes")?,
                    max_wait_ms: reader.u32("max_wait_ms")?,
                    min_bytes: reader.u32("min_bytes")?,
                    epochs: ReadEpochs::decode(&mut reader)?,
                };
                if request.max_bytes == 0 || request.max_bytes > FETCH_BYTES_MAX {
                    let value = request.max_bytes.into();
                    return Err(ProtoError::Value {
                        field: "max_bytes",
                        value,
                    });
                }
                if request.max_wait_ms > FETCH_WAIT_MS_MAX {
                    let value = request.max_wait_ms.into();
                    return Err(ProtoError::Value {
                        field: "max_wait_ms",
                        value,
                    });
                }
                if request.min_bytes > request.max_bytes {
                    let value = request.min_bytes.into();
                    return Err(ProtoError::Value {
                        field: "min_bytes",
                        value,
                    });
                }
                Request::Fetch(request)
            }
            ApiKey::ListOffsets => {
                let topic = read_topic(&mut reader)?;
                let partition = PartitionId(reader.u32("partition")?);
                let tag = reader.u8("spec")?;
                let timestamp = reader.i64("timestamp")?;
                let spec = match (tag, timestamp) {
                    (0, 0) => OffsetSpec::Earliest,
                    (1, 0) => OffsetSpec::Latest,
                    (2, timestamp) => OffsetSpec::Timestamp(timestamp),
                    (3, epoch) => match u32::try_from(epoch) {
                        Ok(epoch) => OffsetSpec::EpochEnd(epoch),
                        Err(_) => {
                            return Err(ProtoError::Value {
                                field: "leader_epoch",
                                value: epoch.cast_unsigned(),
                            })
                        }
                    },
                    _ => {
                        return Err(ProtoError::Value {
                            field: "spec",
                            value: tag.into(),
                        })
                    }
                };
                let epochs = ReadEpochs::decode(&mut reader)?;
                if matches!(spec, OffsetSpec::EpochEnd(_)) && !epochs.answer {
                    // Its answer is an epoch: asking without epochs asks for nothing.
                    return Err(ProtoError::Value {
                        field: "epochs",
                        value: 0,
                    });
                }
                Request::ListOffsets(ListOffsetsRequest {
                    topic,
                    partition,
                    spec,
                    epochs,
                })
            }
            ApiKey::FindRecord => {
                let topic = read_topic(&mut reader)?;
                let partition = PartitionId(reader.u32("partition")?);
                let tag = reader.u8("target")?;
                let timestamp = reader.i64("timestamp")?;
                let target = match (tag, timestamp) {
                    (0, timestamp) => RecordTarget::AtOrAfter(timestamp),
                    (1, 0) => RecordTarget::Newest,
                    _ => {
                        return Err(ProtoError::Value {
                            field: "target",
                            value: tag.into(),
                        })
                    }
                };
                Request::FindRecord(FindRecordRequest {
                    topic,
                    partition,
                    target,
                    epochs: ReadEpochs::decode(&mut reader)?,
                })
            }
            ApiKey::DescribePartition => Request::DescribePartition(DescribePartitionRequest {
                topic: read_topic(&mut reader)?,
                partition: PartitionId(reader.u32("partition")?),
            }),
            ApiKey::DescribeCluster => {
                let partitions = trailing_flag(&mut reader, "partitions")?;
                let moves = partitions && trailing_flag(&mut reader, "moves")?;
                let racks = moves && trailing_flag(&mut reader, "racks")?;
                Request::DescribeCluster(DescribeClusterRequest {
                    partitions,
                    moves,
                    racks,
                })
            }
            ApiKey::MovePartitions => {
                Request::MovePartitions(crate::MovePartitionsRequest::decode_body(&mut reader)?)
            }
            ApiKey::Group => {
                let topic = read_topic(&mut reader)?;
                let partition = PartitionId(reader.u32("partition")?);
                Request::Group(GroupRequest::decode_rest(topic, partition, &mut reader)?)
            }
            ApiKey::ReplicaFetch => {
                let topic = read_topic(&mut reader)?;
                let partition = PartitionId(reader.u32("partition")?);
                Request::ReplicaFetch(ReplicaFetchRequest::decode_rest(
                    topic,
                    partition,
                    &mut reader,
                )?)
            }
            ApiKey::ReplicaProgress => {
                let topic = read_topic(&mut reader)?;
                let partition = PartitionId(reader.u32("partition")?);
                Request::ReplicaProgress(ReplicaProgressRequest::decode_rest(
                    topic,
                    partition,
                    &mut reader,
                )?)
            }
            ApiKey::DeleteRecords => Request::DeleteRecords(DeleteRecordsRequest {
                topic: read_topic(&mut reader)?,
                partition: PartitionId(reader.u32("partition")?),
                offset: reader.u64("offset")?,
            }),
            ApiKey::AllocateProducerIds => {
                let count = reader.u32("count")?;
                if count == 0 || count > PRODUCER_IDS_PER_REQUEST_MAX {
                    return Err(ProtoError::Value {
                        field: "count",
                        value: count.into(),
                    });
                }
                Request::AllocateProducerIds(AllocateProducerIdsRequest { count })
            }
            ApiKey::AutoCreateTopic => Request::AutoCreateTopic(AutoCreateTopicRequest {
                topic: read_topic(&mut reader)?,
            }),
            ApiKey::AlterTopic => Request::AlterTopic(AlterTopicRequest {
                topic: read_topic(&mut reader)?,
                validate_only: match reader.u8("validate_only")? {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(ProtoError::Value {
                            field: "validate_only",
                            value: other.into(),
                        })
                    }
                },
                retention_ms: read_optional_setting(&mut reader, "retention_ms")?,
                retention_bytes: read_optional_setting(&mut reader, "retention_bytes")?,
                segment_bytes: read_optional_setting(&mut reader, "segment_bytes")?,
                // Sent only when set: a `1` and the setting.
                min_insync_replicas: if trailing_flag(&mut reader, "min_insync_replicas")? {
                    Some(reader.setting("min_insync_replicas")?)
                } else {
                    None
                },
            }),
        };
        reader.finish()?;
        Ok(request)
    }
}

impl Response {
    /// The error frame answering a stream whose next frame has an unusable length (the
    /// stream cannot go on after it): it carries the api key and correlation id of that frame
    /// as far as its header arrived.
    pub fn frame_error(buffer: &[u8], error: &crate::FrameError) -> Bytes {
        let api_key = crate::frame::FrameHeader::api_key_of(buffer);
        let correlation = crate::frame::FrameHeader::correlation_id_of(buffer);
        let code = match error {
            crate::FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            crate::FrameError::TooShort { .. } => ErrorCode::Malformed,
        };
        Response::error(api_key, code, error.to_string()).to_frame(correlation)
    }

    /// The raw api key the response answers.
    pub fn api_key(&self) -> u16 {
        match self {
            Response::CreateTopic(_) => ApiKey::CreateTopic.to_u16(),
            Response::DeleteTopic(_) => ApiKey::DeleteTopic.to_u16(),
            Response::Metadata(_) => ApiKey::Metadata.to_u16(),
            Response::Produce(_) => ApiKey::Produce.to_u16(),
            Response::Fetch(_) => ApiKey::Fetch.to_u16(),
            Response::ListOffsets(_) => ApiKey::ListOffsets.to_u16(),
            Response::AllocateProducerIds(_) => ApiKey::AllocateProducerIds.to_u16(),
            Response::AutoCreateTopic(_) => ApiKey::AutoCreateTopic.to_u16(),
            Response::AlterTopic(_) => ApiKey::AlterTopic.to_u16(),
            Response::DeleteRecords(_) => ApiKey::DeleteRecords.to_u16(),
            Response::FindRecord(_) => ApiKey::FindRecord.to_u16(),
            Response::Group(_) => ApiKey::Group.to_u16(),
            Response::DescribePartition(_) => ApiKey::DescribePartition.to_u16(),
            Response::DescribeCluster(_) => ApiKey::DescribeCluster.to_u16(),
            Response::ReplicaFetch(_) => ApiKey::ReplicaFetch.to_u16(),
            Response::ReplicaProgress => ApiKey::ReplicaProgress.to_u16(),
            Response::MovePartitions(_) => ApiKey::MovePartitions.to_u16(),
            Response::Error { api_key, .. } => *api_key,
        }
    }

    /// An error answer to the request with `api_key`.
    pub fn error(api_key: u16, code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            api_key,
            error: ErrorResponse::new(code, message),
        }
    }

    /// Appends the response as a whole frame.
    pub fn encode(&self, correlation_id: u64, out: &mut BytesMut) {
        let flags = match self {
            Response::Error { .. } => FLAG_RESPONSE | FLAG_ERROR,
            _ => FLAG_RESPONSE,
        };
        encode_frame(out, self.api_key(), flags, correlation_id, |w| match self {
            Response::CreateTopic(response) => {
                w.str16(&response.topic);
                w.u32(response.partitions);
            }
            Response::DeleteTopic(response) => w.str16(&response.topic),
            Response::Metadata(response) => {
                w.u32(u32::try_from(response.shards.len()).unwrap_or(u32::MAX));
                for shard in &response.shards {
                    w.u16(shard.shard.0);
                    w.str16(&shard.endpoint);
                }
                w.u32(u32::try_from(response.topics.len()).unwrap_or(u32::MAX));
                for topic in &response.topics {
                    w.str16(&topic.name);
                    w.setting(topic.retention_ms);
                    w.setting(topic.retention_bytes);
                    w.setting(topic.segment_bytes);
                    w.u32(u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX));
                    for partition in &topic.partitions {
                        w.u32(partition.partition.0);
                        w.u16(partition.shard.0);
                    }
                }
                if response.settings {
                    w.u8(1);
                    for topic in &response.topics {
                        w.setting(topic.min_insync_replicas);
                    }
                    if let Some(members) = &response.members {
                        w.u8(1);
                        w.u32(u32::try_from(members.len()).unwrap_or(u32::MAX));
                        for member in members {
                            w.u32(member.node);
                            w.str16(&member.kafka);
                        }
                        let unplaced = PartitionPlacement::default();
                        for topic in &response.topics {
                            for index in 0..topic.partitions.len() {
                                let placed = topic.replicas.get(index).unwrap_or(&unplaced);
                                write_optional_id(w, placed.leader);
                                w.u32(placed.epoch);
                                write_ids(w, &placed.replicas);
                                write_ids(w, &placed.isr);
                            }
                        }
                        if response.racks {
                            w.u8(1);
                            for member in members {
                                let mut rack = member.rack.clone();
                                truncate_utf8(&mut rack, RACK_SIZE_MAX as usize);
                                w.str16(&rack);
                            }
                        }
                    }
                }
            }
            Response::Produce(response) => {
                w.u64(response.base_offset);
                w.i64(response.append_time);
                w.u64(response.log_start_offset);
            }
            Response::Fetch(response) => {
                w.u64(response.high_watermark);
                w.u64(response.log_start_offset);
                w.bytes32(&response.records);
                response.encode_epochs(w);
            }
            Response::ListOffsets(response) => {
                w.u64(response.offset);
                w.u64(response.log_start_offset);
                w.u64(response.high_watermark);
                if let Some(epoch) = response.leader_epoch {
                    w.u8(1);
                    w.u32(epoch);
                }
            }
            Response::DeleteRecords(response) => w.u64(response.log_start_offset),
            Response::ReplicaFetch(response) => {
                response.encode_head(w);
                w.raw(&response.records);
            }
            Response::ReplicaProgress => {}
            Response::Group(response) => response.encode_body(w),
            Response::DescribePartition(response) => {
                w.u64(response.log_start_offset);
                w.u64(response.high_watermark);
                w.u64(response.size_bytes);
                w.u32(response.segments);
                let mut fenced = response.fenced.clone();
                truncate_utf8(&mut fenced, ERROR_MESSAGE_SIZE_MAX as usize);
                w.str16(&fenced);
            }
            Response::DescribeCluster(response) => response.encode_body(w),
            Response::MovePartitions(response) => response.encode_body(w),
            Response::FindRecord(response) => {
                w.u64(response.offset);
                w.i64(response.timestamp);
                w.u64(response.log_start_offset);
                w.u64(response.high_watermark);
                if let Some(epoch) = response.leader_epoch {
                    w.u8(1);
                    w.u32(epoch);
                }
            }
            Response::AllocateProducerIds(response) => {
                w.u64(response.first);
                w.u32(response.count);
            }
            Response::AutoCreateTopic(response) => {
                w.str16(&response.topic);
                w.u32(response.partitions);
            }
            Response::AlterTopic(response) => {
                w.str16(&response.topic);
                w.setting(response.retention_ms);
                w.setting(response.retention_bytes);
                w.setting(response.segment_bytes);
            }
            Response::Error { error, .. } => {
                w.u16(error.code.to_u16());
                w.str16(&error.message);
                match &error.detail {
                    ErrorDetail::None => w.u8(0),
                    ErrorDetail::NotOwner { shard, endpoint } => {
                        w.u8(1);
                        w.u16(shard.0);
                        w.str16(endpoint);
                    }
                    ErrorDetail::OffsetRange {
                        log_start_offset,
                        high_watermark,
                    } => {
                        w.u8(2);
                        w.u64(*log_start_offset);
                        w.u64(*high_watermark);
                    }
                    ErrorDetail::MemberId { member_id } => {
                        w.u8(3);
                        w.str16(member_id);
                    }
                }
            }
        });
    }

    /// Encodes the response as a frame in three parts to be sent back to back: everything
    /// before a fetch's records, the records themselves, shared rather than copied, and what
    /// follows them (a fetch's epochs; for every other response the last two parts are
    /// empty). The parts joined are the bytes of [`Response::to_frame`].
    pub fn to_frame_parts(&self, correlation_id: u64) -> (Bytes, Bytes, Bytes) {
        let mut head = BytesMut::with_capacity(RESPONSE_SIZE_SMALL);
        let records = match self {
            Response::Fetch(fetch) => {
                let mut tail = BytesMut::new();
                fetch.encode_epochs(&mut Writer::new(&mut tail));
                encode_frame_before(
                    &mut head,
                    ApiKey::Fetch.to_u16(),
                    FLAG_RESPONSE,
                    correlation_id,
                    fetch.records.len() + tail.len(),
                    |w| {
                        w.u64(fetch.high_watermark);
                        w.u64(fetch.log_start_offset);
                        w.length32(&fetch.records);
                    },
                );
                return (head.freeze(), fetch.records.clone(), tail.freeze());
            }
            Response::ReplicaFetch(fetch) => {
                encode_frame_before(
                    &mut head,
                    ApiKey::ReplicaFetch.to_u16(),
                    FLAG_RESPONSE,
                    correlation_id,
                    fetch.records.len(),
                    |w| fetch.encode_head(w),
                );
                &fetch.records
            }
            _ => return (self.to_frame(correlation_id), Bytes::new(), Bytes::new()),
        };
        (head.freeze(), records.clone(), Bytes::new())
    }

    /// Encodes the response as a frame of its own, in a buffer sized for it up front (a
    /// fetch answer of a megabyte would otherwise be copied each time the buffer grows).
    pub fn to_frame(&self, correlation_id: u64) -> Bytes {
        // Everything but a fetch's records fits in a few hundred bytes; the encoder grows
        // the buffer if a metadata answer needs more.
        let records = match self {
            Response::Fetch(fetch) => fetch.records.len() + 12 * fetch.epochs.len(),
            Response::ReplicaFetch(fetch) => fetch.records.len() + 12 * fetch.epochs.len(),
            _ => 0,
        };
        let mut out = BytesMut::with_capacity(RESPONSE_SIZE_SMALL + records);
        self.encode(correlation_id, &mut out);
        out.freeze()
    }

    /// Decodes a response frame, checking flags, version and every field.
    pub fn decode(frame: &Frame) -> Result<Response, ProtoError> {
        let mut reader = Reader::new(frame.body());
        if frame.head.flags & !FLAGS_KNOWN != 0 {
            return Err(ProtoError::Flags(frame.head.flags));
        }
        if frame.head.is_error() && frame.head.is_response() {
            // An error may answer a request whose api key this peer does not know.
            let api_key = frame.head.api_key;
            let code = ErrorCode::from_u16(reader.u16("code")?);
            let message = reader.string16("message", ERROR_MESSAGE_SIZE_MAX)?;
            let detail = match reader.u8("detail")? {
                0 => ErrorDetail::None,
                1 => ErrorDetail::NotOwner {
                    shard: ShardId(reader.u16("shard")?),
                    endpoint: reader.string16("endpoint", ENDPOINT_SIZE_MAX)?,
                },
                2 => ErrorDetail::OffsetRange {
                    log_start_offset: reader.u64("log_start_offset")?,
                    high_watermark: reader.u64("high_watermark")?,
                },
                3 => ErrorDetail::MemberId {
                    member_id: reader.string16("member_id", crate::group::GROUP_NAME_BYTES_MAX)?,
                },
                other => {
                    return Err(ProtoError::Value {
                        field: "detail",
                        value: other.into(),
                    })
                }
            };
            if frame.head.version != VERSION {
                return Err(ProtoError::UnsupportedVersion {
                    api: "Error",
                    found: frame.head.version,
                    supported: VERSION,
                });
            }
            reader.finish()?;
            return Ok(Response::Error {
                api_key,
                error: ErrorResponse {
                    code,
                    message,
                    detail,
                },
            });
        }
        let api = frame.head.check_response()?;
        let response = match api {
            ApiKey::CreateTopic => Response::CreateTopic(CreateTopicResponse {
                topic: read_topic(&mut reader)?,
                partitions: reader.u32("partitions")?,
            }),
            ApiKey::DeleteTopic => Response::DeleteTopic(DeleteTopicResponse {
                topic: read_topic(&mut reader)?,
            }),
            ApiKey::Group => Response::Group(GroupResponse::decode_body(&mut reader)?),
            ApiKey::ReplicaFetch => {
                Response::ReplicaFetch(ReplicaFetchResponse::decode_body(&mut reader)?)
            }
            ApiKey::ReplicaProgress => Response::ReplicaProgress,
            ApiKey::MovePartitions => {
                Response::MovePartitions(crate::MovePartitionsResponse::decode_body(&mut reader)?)
            }
            ApiKey::DescribeCluster => {
                Response::DescribeCluster(DescribeClusterResponse::decode_body(&mut reader)?)
            }
            ApiKey::DescribePartition => Response::DescribePartition(DescribePartitionResponse {
                log_start_offset: reader.u64("log_start_offset")?,
                high_watermark: reader.u64("high_watermark")?,
                size_bytes: reader.u64("size_bytes")?,
                segments: reader.u32("segments")?,
                fenced: reader.string16("fenced", ERROR_MESSAGE_SIZE_MAX)?,
            }),
            ApiKey::DeleteRecords => Response::DeleteRecords(DeleteRecordsResponse {
                log_start_offset: reader.u64("log_start_offset")?,
            }),
            ApiKey::FindRecord => Response::FindRecord(FindRecordResponse {
                offset: reader.u64("offset")?,
                timestamp: reader.i64("timestamp")?,
                log_start_offset: reader.u64("log_start_offset")?,
                high_watermark: reader.u64("high_watermark")?,
                leader_epoch: if trailing_flag(&mut reader, "leader_epoch")? {
                    Some(reader.u32("leader_epoch")?)
                } else {
                    None
                },
            }),
            ApiKey::Metadata => {
                // A shard entry takes at least 4 bytes (id and an empty endpoint's length).
                let count = reader.count("shards", SHARDS_MAX, 4)?;
                let mut shards = Vec::with_capacity(count);
                for _ in 0..count {
                    shards.push(ShardInfo {
                        shard: ShardId(reader.u16("shard")?),
                        endpoint: reader.string16("endpoint", ENDPOINT_SIZE_MAX)?,
                    });
                }
                // A topic entry takes at least its name, three settings and a count.
                let count =
                    reader.count("topics", TOPICS_PER_RESPONSE_MAX, TOPIC_SIZE_MIN + 27 + 4)?;
                let mut topics = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = read_topic(&mut reader)?;
                    let retention_ms = reader.setting("retention_ms")?;
                    let retention_bytes = reader.setting("retention_bytes")?;
                    let segment_bytes = reader.setting("segment_bytes")?;
                    let count = reader.count("partitions", PARTITIONS_PER_TOPIC_MAX, 6)?;
                    let mut partitions = Vec::with_capacity(count);
                    for _ in 0..count {
                        partitions.push(PartitionMetadata {
                            partition: PartitionId(reader.u32("partition")?),
                            shard: ShardId(reader.u16("shard")?),
                        });
                    }
                    topics.push(TopicMetadata {
                        name,
                        retention_ms,
                        retention_bytes,
                        segment_bytes,
                        min_insync_replicas: Setting::Default,
                        partitions,
                        replicas: Vec::new(),
                    });
                }
                // Present when the request asked for it.
                let settings = trailing_flag(&mut reader, "settings")?;
                if settings {
                    for topic in &mut topics {
                        topic.min_insync_replicas = reader.setting("min_insync_replicas")?;
                    }
                }
                let mut members = None;
                if settings && trailing_flag(&mut reader, "placement")? {
                    // A member takes at least its id and an empty address.
                    let count = reader.count("members", CLUSTER_MEMBERS_MAX, 4 + 2)?;
                    let mut listed = Vec::with_capacity(count);
                    for _ in 0..count {
                        listed.push(MemberAddress {
                            node: reader.u32("member")?,
                            kafka: reader.string16("kafka", ENDPOINT_SIZE_MAX)?,
                            rack: String::new(),
                        });
                    }
                    members = Some(listed);
                    for topic in &mut topics {
                        let mut replicas = Vec::with_capacity(topic.partitions.len());
                        for _ in 0..topic.partitions.len() {
                            replicas.push(PartitionPlacement {
                                leader: read_optional_id(&mut reader, "leader")?,
                                epoch: reader.u32("epoch")?,
                                replicas: read_ids(&mut reader, "replicas")?,
                                isr: read_ids(&mut reader, "isr")?,
                            });
                        }
                        topic.replicas = replicas;
                    }
                }
                let mut racks = false;
                if let Some(listed) = members.as_mut() {
                    if trailing_flag(&mut reader, "racks")? {
                        racks = true;
                        for member in listed {
                            member.rack = reader.string16("rack", RACK_SIZE_MAX)?;
                        }
                    }
                }
                Response::Metadata(MetadataResponse {
                    shards,
                    topics,
                    settings,
                    members,
                    racks,
                })
            }
            ApiKey::Produce => Response::Produce(ProduceResponse {
                base_offset: reader.u64("base_offset")?,
                append_time: reader.i64("append_time")?,
                log_start_offset: reader.u64("log_start_offset")?,
            }),
            ApiKey::Fetch => {
                let high_watermark = reader.u64("high_watermark")?;
                let log_start_offset = reader.u64("log_start_offset")?;
                let records = reader.bytes32("records", RESPONSE_SIZE_MAX)?;
                let epochs = if trailing_flag(&mut reader, "epochs")? {
                    let epochs = decode_boundaries(&mut reader)?;
                    if epochs.is_empty() {
                        // An empty list is sent as nothing.
                        return Err(ProtoError::Value {
                            field: "epochs",
                            value: 0,
                        });
                    }
                    epochs
                } else {
                    Vec::new()
                };
                Response::Fetch(FetchResponse {
                    high_watermark,
                    log_start_offset,
                    records,
                    epochs,
                })
            }
            ApiKey::ListOffsets => Response::ListOffsets(ListOffsetsResponse {
                offset: reader.u64("offset")?,
                log_start_offset: reader.u64("log_start_offset")?,
                high_watermark: reader.u64("high_watermark")?,
                leader_epoch: if trailing_flag(&mut reader, "leader_epoch")? {
                    Some(reader.u32("leader_epoch")?)
                } else {
                    None
                },
            }),
            ApiKey::AllocateProducerIds => {
                Response::AllocateProducerIds(AllocateProducerIdsResponse {
                    first: reader.u64("first")?,
                    count: reader.u32("count")?,
                })
            }
            ApiKey::AutoCreateTopic => Response::AutoCreateTopic(CreateTopicResponse {
                topic: read_topic(&mut reader)?,
                partitions: reader.u32("partitions")?,
            }),
            ApiKey::AlterTopic => Response::AlterTopic(AlterTopicResponse {
                topic: read_topic(&mut reader)?,
                retention_ms: reader.setting("retention_ms")?,
                retention_bytes: reader.setting("retention_bytes")?,
                segment_bytes: reader.setting("segment_bytes")?,
            }),
        };
        reader.finish()?;
        Ok(response)
    }
}
