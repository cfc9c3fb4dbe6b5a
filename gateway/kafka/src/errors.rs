//! Spate's error codes as Kafka error codes (issue 11, item 6). The message of Spate's error
//! goes into the response's error-message field where the version has one.

use kafka_protocol::ResponseError;
use spate_proto::ErrorCode;

/// The Kafka error for a Spate error code.
pub fn kafka_error(code: ErrorCode) -> ResponseError {
    match code {
        ErrorCode::UnknownTopic | ErrorCode::UnknownPartition => {
            ResponseError::UnknownTopicOrPartition
        }
        ErrorCode::TopicAlreadyExists => ResponseError::TopicAlreadyExists,
        ErrorCode::InvalidTopicName => ResponseError::InvalidTopicException,
        ErrorCode::InvalidPartitionCount => ResponseError::InvalidPartitions,
        ErrorCode::InvalidConfig => ResponseError::InvalidConfig,
        ErrorCode::InvalidReplicationFactor => ResponseError::InvalidReplicationFactor,
        // The partition map changed: the client refreshes its metadata and retries.
        ErrorCode::NotOwner | ErrorCode::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
        ErrorCode::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch,
        ErrorCode::ReplicaNotAvailable => ResponseError::ReplicaNotAvailable,
        ErrorCode::NotEnoughReplicas => ResponseError::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend => ResponseError::NotEnoughReplicasAfterAppend,
        ErrorCode::InvalidReplicaAssignment => ResponseError::InvalidReplicaAssignment,
        ErrorCode::NoReassignmentInProgress => ResponseError::NoReassignmentInProgress,
        ErrorCode::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        ErrorCode::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        // The shard (or the node) cannot be reached, or is stopping: retriable.
        ErrorCode::Unavailable | ErrorCode::ShuttingDown => ResponseError::LeaderNotAvailable,
        ErrorCode::OffsetOutOfRange => ResponseError::OffsetOutOfRange,
        ErrorCode::InvalidBatch => ResponseError::CorruptMessage,
        ErrorCode::BatchTooLarge | ErrorCode::FrameTooLarge => ResponseError::MessageTooLarge,
        ErrorCode::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
        ErrorCode::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        ErrorCode::PartitionFenced | ErrorCode::Storage => ResponseError::KafkaStorageError,
        // A limit was reached (retry later) or the node did not answer in time: retriable.
        // A limit was reached (retry later), or the outcome is not known (Kafka's answer for
        // a write that may have happened): retriable.
        ErrorCode::Busy | ErrorCode::Timeout | ErrorCode::OutcomeUnknown => {
            ResponseError::RequestTimedOut
        }
        ErrorCode::UnsupportedVersion => ResponseError::UnsupportedVersion,
        ErrorCode::Malformed | ErrorCode::InvalidRequest | ErrorCode::UnknownApi => {
            ResponseError::InvalidRequest
        }
        ErrorCode::MemberIdRequired => ResponseError::MemberIdRequired,
        ErrorCode::UnknownMemberId => ResponseError::UnknownMemberId,
        ErrorCode::IllegalGeneration => ResponseError::IllegalGeneration,
        ErrorCode::RebalanceInProgress => ResponseError::RebalanceInProgress,
        ErrorCode::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        ErrorCode::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        ErrorCode::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        ErrorCode::FencedInstanceId => ResponseError::FencedInstanceId,
        ErrorCode::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        ErrorCode::NonEmptyGroup => ResponseError::NonEmptyGroup,
        ErrorCode::GroupIdNotFound => ResponseError::GroupIdNotFound,
        ErrorCode::InvalidGroupId => ResponseError::InvalidGroupId,
        ErrorCode::Internal | ErrorCode::Other(_) => ResponseError::UnknownServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_spate_errors_stay_retriable_for_kafka_clients() {
        for code in [
            ErrorCode::NotOwner,
            ErrorCode::Unavailable,
            ErrorCode::OutcomeUnknown,
            ErrorCode::ShuttingDown,
            ErrorCode::Busy,
            ErrorCode::Timeout,
            ErrorCode::UnknownTopic,
            ErrorCode::Storage,
            ErrorCode::PartitionFenced,
        ] {
            assert!(kafka_error(code).is_retriable(), "{code:?}");
        }
        // Kafka retries CORRUPT_MESSAGE (the bytes may have been damaged on the way).
        assert_eq!(kafka_error(ErrorCode::InvalidBatch).code(), 2);
        for code in [
            ErrorCode::BatchTooLarge,
            ErrorCode::TopicAlreadyExists,
            ErrorCode::InvalidConfig,
            ErrorCode::InvalidRequest,
        ] {
            assert!(!kafka_error(code).is_retriable(), "{code:?}");
        }
        assert_eq!(kafka_error(ErrorCode::UnknownPartition).code(), 3);
        assert_eq!(kafka_error(ErrorCode::PartitionFenced).code(), 56);
    }
}
