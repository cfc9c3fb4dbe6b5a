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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::FenceReason;
    use spate_format::Offset;

    /// Every refusal of the core maps to the code the docs give it (docs/protocol.md); a batch
    /// over the size limit is `BatchTooLarge`, one under the minimum merely invalid.
    #[test]
    fn each_refusal_has_its_code() {
        let fence = || FenceReason::Corruption {
            segment: "0".into(),
            position: 0,
            detail: "x".into(),
        };
        let length = |length| {
            AppendError::InvalidBatch(BatchError::Length {
                length,
                min: 61,
                max: 1 << 20,
            })
        };
        let appends = [
            (length((1 << 20) + 1), ErrorCode::BatchTooLarge),
            (length(1 << 20), ErrorCode::InvalidBatch),
            (length(60), ErrorCode::InvalidBatch),
            (AppendError::Fenced(fence()), ErrorCode::PartitionFenced),
            (
                AppendError::BufferFull {
                    buffered: 2,
                    max: 1,
                },
                ErrorCode::Busy,
            ),
            (
                AppendError::Producer(ProducerError::OutOfOrderSequence {
                    producer_id: 1,
                    expected: 2,
                    found: 3,
                }),
                ErrorCode::OutOfOrderSequence,
            ),
            (
                AppendError::Producer(ProducerError::InvalidEpoch {
                    producer_id: 1,
                    current: 2,
                    found: 1,
                }),
                ErrorCode::InvalidProducerEpoch,
            ),
            (
                AppendError::Producer(ProducerError::InvalidFields {
                    producer_id: -1,
                    epoch: 0,
                    sequence: 0,
                }),
                ErrorCode::InvalidBatch,
            ),
            (
                AppendError::NotContinuing {
                    base_offset: Offset(5),
                    next_offset: Offset(4),
                },
                ErrorCode::OffsetOutOfRange,
            ),
        ];
        for (refusal, code) in appends {
            assert_eq!(ErrorCode::from(&refusal), code, "{refusal}");
        }
        let above = DeleteRecordsError::AboveHighWatermark {
            offset: Offset(9),
            high_watermark: Offset(8),
        };
        assert_eq!(ErrorCode::from(&above), ErrorCode::OffsetOutOfRange);
        let fenced = DeleteRecordsError::Fenced(fence());
        assert_eq!(ErrorCode::from(&fenced), ErrorCode::PartitionFenced);
        let out = FetchError::OutOfRange {
            offset: Offset(9),
            log_start: Offset(0),
            high_watermark: Offset(8),
        };
        assert_eq!(ErrorCode::from(&out), ErrorCode::OffsetOutOfRange);
        let corrupt = FetchError::Corrupt {
            segment: "0".into(),
            position: 0,
            detail: "x".into(),
        };
        assert_eq!(ErrorCode::from(&corrupt), ErrorCode::Storage);
        let many = FetchWaitError::TooMany { parked: 1 };
        assert_eq!(ErrorCode::from(&many), ErrorCode::Busy);
        assert_eq!(
            ErrorCode::from(&FetchWaitError::Fenced),
            ErrorCode::PartitionFenced
        );
    }
}
