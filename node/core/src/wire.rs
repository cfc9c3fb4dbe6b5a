//! The wire's error code for each refusal of the core: one mapping, used by every front that
//! answers for a partition log (the node's handlers add the partition to the message; the
//! Kafka listener maps these codes on to Kafka's).

use spate_format::BatchError;
use spate_proto::ErrorCode;

use crate::partition::{AppendError, DeleteRecordsError, FetchError};
use crate::producers::ProducerError;
use crate::waiters::FetchWaitError;

impl From<&AppendError> for ErrorCode {
    fn from(refused: &AppendError) -> ErrorCode {
        match refused {
            AppendError::InvalidBatch(BatchError::Length { length, max, .. }) if length > max => {
                ErrorCode::BatchTooLarge
            }
            AppendError::InvalidBatch(_) => ErrorCode::InvalidBatch,
            AppendError::Fenced(_) => ErrorCode::PartitionFenced,
            AppendError::BufferFull { .. } => ErrorCode::Busy,
            AppendError::Producer(ProducerError::OutOfOrderSequence { .. }) => {
                ErrorCode::OutOfOrderSequence
            }
            AppendError::Producer(ProducerError::InvalidEpoch { .. }) => {
                ErrorCode::InvalidProducerEpoch
            }
            AppendError::Producer(ProducerError::InvalidFields { .. }) => ErrorCode::InvalidBatch,
            AppendError::NotContinuing { .. } => ErrorCode::OffsetOutOfRange,
        }
    }
}

impl From<&DeleteRecordsError> for ErrorCode {
    fn from(refused: &DeleteRecordsError) -> ErrorCode {
        match refused {
            DeleteRecordsError::AboveHighWatermark { .. } => ErrorCode::OffsetOutOfRange,
            DeleteRecordsError::Fenced(_) => ErrorCode::PartitionFenced,
        }
    }
}

impl From<&FetchError> for ErrorCode {
    fn from(refused: &FetchError) -> ErrorCode {
        match refused {
            FetchError::OutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            FetchError::Corrupt { .. } => ErrorCode::Storage,
        }
    }
}

impl From<&FetchWaitError> for ErrorCode {
    fn from(refused: &FetchWaitError) -> ErrorCode {
        match refused {
            FetchWaitError::TooMany { .. } => ErrorCode::Busy,
            FetchWaitError::Fenced => ErrorCode::PartitionFenced,
        }
    }
}
