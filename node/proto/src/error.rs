//! Typed errors of the wire protocol and the stable numeric error codes sent to clients.

use thiserror::Error;

/// A frame's length is unusable: the byte stream cannot be resynchronised and the connection
/// (or QUIC stream) must be closed after an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: u64, max: u32 },
    #[error("frame length {length} is shorter than the frame header")]
    TooShort { length: u32 },
}

/// A complete frame whose header or body is invalid. The stream stays usable: the receiver
/// answers with an error frame carrying the frame's correlation id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    #[error("unknown api key {0}")]
    UnknownApi(u16),
    #[error("unsupported version {found} of {api}; this peer speaks version {supported}")]
    UnsupportedVersion {
        api: &'static str,
        found: u8,
        supported: u8,
    },
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    #[error("expected a {expected}, got a {found}")]
    Direction {
        expected: &'static str,
        found: &'static str,
    },
    #[error("frame body ends inside {field}")]
    Truncated { field: &'static str },
    #[error("{count} bytes follow the last field of the body")]
    TrailingBytes { count: u64 },
    #[error("{field} has length {length}, over the limit of {max}")]
    Length {
        field: &'static str,
        length: u64,
        max: u64,
    },
    #[error("{field} is not UTF-8")]
    Utf8 { field: &'static str },
    #[error("invalid value {value} for {field}")]
    Value { field: &'static str, value: u64 },
    #[error("invalid topic name: {0}")]
    TopicName(#[from] spate_format::TopicNameError),
}

/// Stable numeric error codes. Numbers are never reused; a code this version does not know
/// decodes as [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A bug or an unexpected condition on the server.
    Internal,
    /// The frame could not be decoded.
    Malformed,
    UnsupportedVersion,
    UnknownApi,
    FrameTooLarge,
    /// A request field is outside its valid range.
    InvalidRequest,
    UnknownTopic,
    UnknownPartition,
    TopicAlreadyExists,
    InvalidTopicName,
    InvalidPartitionCount,
    InvalidConfig,
    /// A replication factor the cluster cannot meet (0, or more than its live members).
    InvalidReplicationFactor,
    /// The partition belongs to another shard; the detail names it.
    NotOwner,
    /// The offset is outside `[log start, high watermark]`; the detail carries the range.
    OffsetOutOfRange,
    /// The batch failed validation (CRC, header, records).
    InvalidBatch,
    BatchTooLarge,
    /// An idempotent producer's batch does not follow its last one (a gap: an earlier batch
    /// was not stored); the producer must not go on as if it had been.
    OutOfOrderSequence,
    /// An idempotent producer's epoch is older than the partition's: a newer instance of the
    /// producer took over.
    InvalidProducerEpoch,
    /// The partition is fenced after a storage error or corruption; writes are refused.
    PartitionFenced,
    /// A storage operation failed.
    Storage,
    /// A limit was reached (connections, in-flight requests, waiters); retry later.
    Busy,
    Timeout,
    ShuttingDown,
    /// The node is not reachable from the gateway: the request was not delivered (safe to
    /// send again).
    Unavailable,
    /// The gateway forwarded the request, then lost the connection to the shard before its
    /// answer came: it may or may not have been carried out. Retriable for an idempotent
    /// producer (a resend is recognised) and for reads.
    OutcomeUnknown,
    MemberIdRequired,
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    GroupMaxSizeReached,
    InvalidSessionTimeout,
    FencedInstanceId,
    CoordinatorLoadInProgress,
    NonEmptyGroup,
    GroupIdNotFound,
    InvalidGroupId,
    /// This node does not lead the partition (or no longer does): ask the one that does.
    NotLeaderOrFollower,
    /// A replica request names a leader epoch older than the partition's: the sender was
    /// deposed or has not seen the newer epoch.
    FencedLeaderEpoch,
    /// A replica request names a leader epoch newer than this node knows: it has not yet seen
    /// the change.
    UnknownLeaderEpoch,
    /// The replica is not assigned to the partition (or the partition is not replicated).
    ReplicaNotAvailable,
    /// An `fsync` produce refused before it was appended: fewer replicas are in sync than
    /// the topic's `min.insync.replicas`.
    NotEnoughReplicas,
    /// An `fsync` produce was appended and reached every in-sync replica, but the ISR had
    /// shrunk below `min.insync.replicas` by then: the records are stored and will be read;
    /// sending them again duplicates them unless the producer is idempotent.
    NotEnoughReplicasAfterAppend,
    /// A reassignment's target is not a valid replica set: empty, a node twice, too many, a
    /// node that is not a member or is decommissioned.
    InvalidReplicaAssignment,
    /// A cancellation names a partition that is not being reassigned.
    NoReassignmentInProgress,
    /// A preferred-leader election names a partition its preferred replica leads already.
    ElectionNotNeeded,
    /// A preferred-leader election names a partition whose preferred replica is not alive
    /// and in sync.
    PreferredLeaderNotAvailable,
    Other(u16),
}

impl ErrorCode {
    /// The code's name as metrics label it (`NotOwner`; `code_N` for a code this version
    /// does not know).
    pub fn label(self) -> String {
        match self {
            ErrorCode::Other(raw) => format!("code_{raw}"),
            known => format!("{known:?}"),
        }
    }

    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Internal => 1,
            ErrorCode::Malformed => 2,
            ErrorCode::UnsupportedVersion => 3,
            ErrorCode::UnknownApi => 4,
            ErrorCode::FrameTooLarge => 5,
            ErrorCode::InvalidRequest => 6,
            ErrorCode::UnknownTopic => 10,
            ErrorCode::UnknownPartition => 11,
            ErrorCode::TopicAlreadyExists => 12,
            ErrorCode::InvalidTopicName => 13,
            ErrorCode::InvalidPartitionCount => 14,
            ErrorCode::InvalidConfig => 15,
            ErrorCode::InvalidReplicationFactor => 16,
            ErrorCode::NotOwner => 20,
            ErrorCode::OffsetOutOfRange => 21,
            ErrorCode::InvalidBatch => 30,
            ErrorCode::BatchTooLarge => 31,
            ErrorCode::OutOfOrderSequence => 32,
            ErrorCode::InvalidProducerEpoch => 33,
            ErrorCode::PartitionFenced => 40,
            ErrorCode::Storage => 41,
            ErrorCode::Busy => 50,
            ErrorCode::Timeout => 51,
            ErrorCode::ShuttingDown => 52,
            ErrorCode::Unavailable => 53,
            ErrorCode::OutcomeUnknown => 54,
            ErrorCode::MemberIdRequired => 60,
            ErrorCode::UnknownMemberId => 61,
            ErrorCode::IllegalGeneration => 62,
            ErrorCode::RebalanceInProgress => 63,
            ErrorCode::InconsistentGroupProtocol => 64,
            ErrorCode::GroupMaxSizeReached => 65,
            ErrorCode::InvalidSessionTimeout => 66,
            ErrorCode::FencedInstanceId => 67,
            ErrorCode::CoordinatorLoadInProgress => 68,
            ErrorCode::NonEmptyGroup => 69,
            ErrorCode::GroupIdNotFound => 70,
            ErrorCode::InvalidGroupId => 71,
            ErrorCode::NotLeaderOrFollower => 80,
            ErrorCode::FencedLeaderEpoch => 81,
            ErrorCode::UnknownLeaderEpoch => 82,
            ErrorCode::ReplicaNotAvailable => 83,
            ErrorCode::NotEnoughReplicas => 84,
            ErrorCode::NotEnoughReplicasAfterAppend => 85,
            ErrorCode::InvalidReplicaAssignment => 90,
            ErrorCode::NoReassignmentInProgress => 91,
            ErrorCode::ElectionNotNeeded => 92,
            ErrorCode::PreferredLeaderNotAvailable => 93,
            ErrorCode::Other(code) => code,
        }
    }

    pub fn from_u16(code: u16) -> Self {
        match code {
            1 => ErrorCode::Internal,
            2 => ErrorCode::Malformed,
            3 => ErrorCode::UnsupportedVersion,
            4 => ErrorCode::UnknownApi,
            5 => ErrorCode::FrameTooLarge,
            6 => ErrorCode::InvalidRequest,
            10 => ErrorCode::UnknownTopic,
            11 => ErrorCode::UnknownPartition,
            12 => ErrorCode::TopicAlreadyExists,
            13 => ErrorCode::InvalidTopicName,
            14 => ErrorCode::InvalidPartitionCount,
            15 => ErrorCode::InvalidConfig,
            16 => ErrorCode::InvalidReplicationFactor,
            20 => ErrorCode::NotOwner,
            21 => ErrorCode::OffsetOutOfRange,
            30 => ErrorCode::InvalidBatch,
            31 => ErrorCode::BatchTooLarge,
            32 => ErrorCode::OutOfOrderSequence,
            33 => ErrorCode::InvalidProducerEpoch,
            40 => ErrorCode::PartitionFenced,
            41 => ErrorCode::Storage,
            50 => ErrorCode::Busy,
            51 => ErrorCode::Timeout,
            52 => ErrorCode::ShuttingDown,
            53 => ErrorCode::Unavailable,
            54 => ErrorCode::OutcomeUnknown,
            60 => ErrorCode::MemberIdRequired,
            61 => ErrorCode::UnknownMemberId,
            62 => ErrorCode::IllegalGeneration,
            63 => ErrorCode::RebalanceInProgress,
            64 => ErrorCode::InconsistentGroupProtocol,
            65 => ErrorCode::GroupMaxSizeReached,
            66 => ErrorCode::InvalidSessionTimeout,
            67 => ErrorCode::FencedInstanceId,
            68 => ErrorCode::CoordinatorLoadInProgress,
            69 => ErrorCode::NonEmptyGroup,
            70 => ErrorCode::GroupIdNotFound,
            71 => ErrorCode::InvalidGroupId,
            80 => ErrorCode::NotLeaderOrFollower,
            81 => ErrorCode::FencedLeaderEpoch,
            82 => ErrorCode::UnknownLeaderEpoch,
            83 => ErrorCode::ReplicaNotAvailable,
            84 => ErrorCode::NotEnoughReplicas,
            85 => ErrorCode::NotEnoughReplicasAfterAppend,
            90 => ErrorCode::InvalidReplicaAssignment,
            91 => ErrorCode::NoReassignmentInProgress,
            92 => ErrorCode::ElectionNotNeeded,
            93 => ErrorCode::PreferredLeaderNotAvailable,
            other => ErrorCode::Other(other),
        }
    }

    /// Whether retrying the same request later can succeed without the client changing it.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotOwner
                | ErrorCode::Busy
                | ErrorCode::Timeout
                | ErrorCode::ShuttingDown
                | ErrorCode::Unavailable
                | ErrorCode::OutcomeUnknown
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::NotLeaderOrFollower
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::NotEnoughReplicas
        )
    }
}

impl From<&ProtoError> for ErrorCode {
    fn from(error: &ProtoError) -> Self {
        match error {
            ProtoError::UnknownApi(_) => ErrorCode::UnknownApi,
            ProtoError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtoError::TopicName(_) => ErrorCode::InvalidTopicName,
            ProtoError::Value { .. } => ErrorCode::InvalidRequest,
            _ => ErrorCode::Malformed,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Other(code) => write!(f, "error code {code}"),
            known => write!(f, "{known:?}"),
        }
    }
}
