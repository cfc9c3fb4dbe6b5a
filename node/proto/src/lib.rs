//! `spate-proto`: the frames spoken client → gateway → node.
//!
//! Pure: no I/O, no clock, no runtime. Every frame is a 16-byte header (length, api key,
//! version, flags, correlation id) and a body. Decoding is incremental (a partial frame is
//! "need more", never an error), every length is checked against a named limit before anything
//! is allocated, and the routing fields of partition-scoped requests are readable without
//! decoding the rest of the body. Specified in `docs/protocol.md`.

pub mod codec;
pub mod error;
pub mod frame;
pub mod group;
pub mod limits;
pub mod messages;
pub mod moves;
pub mod pipeline;
pub mod replica;
pub mod settings;

pub use error::{ErrorCode, FrameError, ProtoError};
pub use frame::{peek_frame, route, Frame, FrameDecoder, FrameHead, Peek, Route, VERSION};
pub use group::{GroupOp, GroupRequest, GroupResponse, OFFSETS_PARTITIONS, OFFSETS_TOPIC};
pub use messages::*;
pub use moves::{
    MovePartitionsRequest, MovePartitionsResponse, MoveResult, MovesStatus, MovingPartition,
    PartitionMove,
};
pub use pipeline::Pipeline;
pub use replica::{
    DivergingEpoch, EpochBoundary, ReplicaFetchRequest, ReplicaFetchResponse,
    ReplicaProgressRequest,
};

/// The ALPN protocol of Spate over QUIC, offered by the SDK and required by the gateway.
pub const ALPN: &[u8] = b"spate/1";

/// A partition's number within its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartitionId(pub u32);

/// A shard (one core's executor) of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShardId(pub u16);

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The requests of the protocol. Numbers are stable and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiKey {
    CreateTopic,
    DeleteTopic,
    Metadata,
    Produce,
    Fetch,
    ListOffsets,
    AllocateProducerIds,
    AutoCreateTopic,
    AlterTopic,
    DeleteRecords,
    FindRecord,
    Group,
    DescribePartition,
    /// What the node knows of its cluster: its members and its controller.
    DescribeCluster,
    /// Node link only: a follower fetching from its partition's leader.
    ReplicaFetch,
    /// Node link only: a follower reporting its log end and durable end.
    ReplicaProgress,
    /// Moving partitions between nodes: reassignment, preferred leaders, decommission.
    MovePartitions,
}

impl ApiKey {
    pub const ALL: [ApiKey; 17] = [
        ApiKey::CreateTopic,
        ApiKey::DeleteTopic,
        ApiKey::Metadata,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::AllocateProducerIds,
        ApiKey::AutoCreateTopic,
        ApiKey::AlterTopic,
        ApiKey::DeleteRecords,
        ApiKey::FindRecord,
        ApiKey::Group,
        ApiKey::DescribePartition,
        ApiKey::DescribeCluster,
        ApiKey::ReplicaFetch,
        ApiKey::ReplicaProgress,
        ApiKey::MovePartitions,
    ];

    pub fn to_u16(self) -> u16 {
        match self {
            ApiKey::CreateTopic => 1,
            ApiKey::DeleteTopic => 2,
            ApiKey::Metadata => 3,
            ApiKey::Produce => 4,
            ApiKey::Fetch => 5,
            ApiKey::ListOffsets => 6,
            ApiKey::AllocateProducerIds => 7,
            ApiKey::AutoCreateTopic => 8,
            ApiKey::AlterTopic => 9,
            ApiKey::DeleteRecords => 10,
            ApiKey::FindRecord => 11,
            ApiKey::Group => 12,
            ApiKey::DescribePartition => 13,
            ApiKey::ReplicaFetch => 14,
            ApiKey::ReplicaProgress => 15,
            ApiKey::DescribeCluster => 16,
            ApiKey::MovePartitions => 17,
        }
    }

    pub fn from_u16(value: u16) -> Option<ApiKey> {
        ApiKey::ALL.into_iter().find(|api| api.to_u16() == value)
    }

    /// The name of raw api key `value` as metrics label it (`unknown` for one this version
    /// does not know).
    pub fn label_of(value: u16) -> &'static str {
        ApiKey::from_u16(value).map_or("unknown", ApiKey::name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ApiKey::CreateTopic => "CreateTopic",
            ApiKey::DeleteTopic => "DeleteTopic",
            ApiKey::Metadata => "Metadata",
            ApiKey::Produce => "Produce",
            ApiKey::Fetch => "Fetch",
            ApiKey::ListOffsets => "ListOffsets",
            ApiKey::AllocateProducerIds => "AllocateProducerIds",
            ApiKey::AutoCreateTopic => "AutoCreateTopic",
            ApiKey::AlterTopic => "AlterTopic",
            ApiKey::DeleteRecords => "DeleteRecords",
            ApiKey::FindRecord => "FindRecord",
            ApiKey::Group => "Group",
            ApiKey::DescribePartition => "DescribePartition",
            ApiKey::DescribeCluster => "DescribeCluster",
            ApiKey::ReplicaFetch => "ReplicaFetch",
            ApiKey::ReplicaProgress => "ReplicaProgress",
            ApiKey::MovePartitions => "MovePartitions",
        }
    }

    /// Whether the request names one partition and must reach the shard that owns it.
    pub fn is_partition_scoped(self) -> bool {
        matches!(
            self,
            ApiKey::Produce
                | ApiKey::Fetch
                | ApiKey::ListOffsets
                | ApiKey::DeleteRecords
                | ApiKey::FindRecord
                | ApiKey::Group
                | ApiKey::DescribePartition
                | ApiKey::ReplicaFetch
                | ApiKey::ReplicaProgress
        )
    }

    /// Whether the request changes the node's topics or counters (the coordinator answers it,
    /// in a cluster through etcd and the controller).
    pub fn is_admin(self) -> bool {
        matches!(
            self,
            ApiKey::CreateTopic
                | ApiKey::DeleteTopic
                | ApiKey::AlterTopic
                | ApiKey::AutoCreateTopic
                | ApiKey::AllocateProducerIds
                | ApiKey::MovePartitions
        )
    }

    /// Whether only nodes speak the request to each other (replication): a gateway refuses
    /// it from clients rather than forward it.
    pub fn is_node_link_only(self) -> bool {
        matches!(self, ApiKey::ReplicaFetch | ApiKey::ReplicaProgress)
    }
}
