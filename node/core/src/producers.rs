//! Idempotent producers: per partition, per producer id, the epoch and the last
//! [`BATCHES_PER_PRODUCER`] batches (sequences and offsets), so that a batch a producer sends
//! again after a lost answer is recognised and answered with the offsets it already has,
//! and a gap in the sequences is refused. Kafka's rules (`ProducerStateManager`,
//! `ProducerAppendInfo`):
//!
//! - A batch without a producer id (-1) is not checked.
//! - A producer is remembered while the log holds one of its batches (at or above the log
//!   start) and it appended within the expiry time.
//! - A batch from an older epoch than the producer's is refused (`InvalidEpoch`).
//! - A batch of the producer's epoch whose first and last sequence equal one of its last five
//!   batches is a duplicate: not stored again, answered with that batch's offsets.
//! - Otherwise, in the producer's epoch, the first sequence must follow the last one
//!   (wrapping from `i32::MAX` to 0); in a newer epoch it must be 0; a producer this
//!   partition does not know (new, expired, or forgotten at the limit) may start anywhere.
//!
//! Invariants: at most [`PRODUCERS_PER_PARTITION_MAX`] producers (the one idle longest is
//! forgotten at the limit); each holds 1 to 5 batches in offset order; only accepted appends
//! and batches read back from the log change the state, so after a crash the state is
//! rebuilt exactly from what the log holds (a snapshot at the last sealed segment, plus the
//! batches after it).

use std::collections::{HashMap, VecDeque};

use spate_format::producers::{
    decode_snapshot, encode_snapshot, SnapshotBatch, SnapshotEntry, SnapshotError,
};
pub use spate_format::producers::{BATCHES_PER_PRODUCER, PRODUCERS_PER_PARTITION_MAX};
use spate_format::{Offset, ProducerFields};
use thiserror::Error;
use zerocopy::little_endian::{I16, I32, I64, U32, U64};
use zerocopy::FromZeros;

use crate::Millis;

/// Why an idempotent producer's batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProducerError {
    #[error(
        "producer {producer_id}: sequence {found} does not follow the last batch (expected \
         {expected})"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        found: i32,
    },
    #[error("producer {producer_id}: epoch {found} is older than the current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        current: i16,
        found: i16,
    },
    #[error(
        "producer id {producer_id} with epoch {epoch} and sequence {sequence}: an idempotent \
         batch needs all three non-negative"
    )]
    InvalidFields {
        producer_id: i64,
        epoch: i16,
        sequence: i32,
    },
}

/// One batch a producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducedBatch {
    pub base_offset: Offset,
    pub append_time: Millis,
    pub base_sequence: i32,
    pub record_count: u32,
}

impl ProducedBatch {
    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset.0 + u64::from(self.record_count) - 1)
    }

    pub fn last_sequence(&self) -> i32 {
        sequence_after(self.base_sequence, self.record_count - 1)
    }
}

/// `sequence` advanced by `by`, wrapping from `i32::MAX` to 0 as Kafka's sequences do.
pub fn sequence_after(sequence: i32, by: u32) -> i32 {
    let wrapped = (i64::from(sequence) + i64::from(by)) % (i64::from(i32::MAX) + 1);
    i32::try_from(wrapped).expect("below i32::MAX + 1")
}

/// What an idempotent batch is, before it is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent (no producer id), or idempotent and next in sequence: append it.
    Append,
    /// Already in the log: answer with these offsets, store nothing.
    Duplicate(ProducedBatch),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    /// Oldest first; 1 to `BATCHES_PER_PRODUCER`.
    batches: VecDeque<ProducedBatch>,
}

impl Producer {
    fn last(&self) -> &ProducedBatch {
        self.batches.back().expect("a producer has a batch")
    }
}

/// The idempotent producers of one partition (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides what to do with a batch of `record_count` records from `producer`; changes
    /// nothing (see [`ProducerStates::record`]).
    pub fn check(
        &self,
        producer: ProducerFields,
        record_count: u32,
    ) -> Result<Check, ProducerError> {
        let ProducerFields {
            producer_id,
            producer_epoch: epoch,
            base_sequence: sequence,
        } = producer;
        if producer_id == spate_format::batch::NO_PRODUCER_ID {
            return Ok(Check::Append);
        }
        if producer_id < 0 || epoch < 0 || sequence < 0 {
            return Err(ProducerError::InvalidFields {
                producer_id,
                epoch,
                sequence,
            });
        }
        let Some(known) = self.producers.get(&producer_id) else {
            return Ok(Check::Append);
        };
        if epoch < known.epoch {
            return Err(ProducerError::InvalidEpoch {
                producer_id,
                current: known.epoch,
                found: epoch,
            });
        }
        let expected = if epoch > known.epoch {
            0
        } else {
            let last = sequence_after(sequence, record_count.saturating_sub(1));
            if let Some(batch) = known
                .batches
                .iter()
                .find(|batch| batch.base_sequence == sequence && batch.last_sequence() == last)
            {
                return Ok(Check::Duplicate(*batch));
            }
            sequence_after(known.last().last_sequence(), 1)
        };
        if sequence != expected {
            return Err(ProducerError::OutOfOrderSequence {
                producer_id,
                expected,
                found: sequence,
            });
        }
        Ok(Check::Append)
    }

    /// Records an appended batch of `producer` (one [`ProducerStates::check`] let through).
    /// `expiry_ms`: producers idle longer than this are forgotten when a new one arrives.
    pub fn record(&mut self, producer: ProducerFields, batch: ProducedBatch, expiry_ms: i64) {
        if producer.producer_id < 0 {
            return;
        }
        if !self.producers.contains_key(&producer.producer_id) {
            self.expire(batch.append_time, expiry_ms);
            if self.producers.len() >= PRODUCERS_PER_PARTITION_MAX {
                self.forget_idlest();
            }
        }
        let known = self
            .producers
            .entry(producer.producer_id)
            .or_insert_with(|| Producer {
                epoch: producer.producer_epoch,
                batches: VecDeque::with_capacity(BATCHES_PER_PRODUCER),
            });
        if known.epoch != producer.producer_epoch {
            known.epoch = producer.producer_epoch;
            known.batches.clear();
        }
        if known.batches.len() == BATCHES_PER_PRODUCER {
            known.batches.pop_front();
        }
        known.batches.push_back(batch);
    }

    /// Takes in a batch read back from the log (recovery). The log is the truth: nothing is
    /// checked; a batch at or below what a producer's state already covers (the snapshot
    /// recovery started from overlaps the segments it scans) is skipped.
    pub fn replay(&mut self, producer: ProducerFields, batch: ProducedBatch, expiry_ms: i64) {
        if producer.producer_id < 0 || producer.producer_epoch < 0 || producer.base_sequence < 0 {
            return;
        }
        if self
            .producers
            .get(&producer.producer_id)
            .is_some_and(|known| known.last().last_offset() >= batch.base_offset)
        {
            return;
        }
        self.record(producer, batch, expiry_ms);
    }

    /// Forgets the producers whose last batch lies below `log_start` (retention or
    /// DeleteRecords removed it), as Kafka does: a producer is remembered while the log
    /// holds one of its batches.
    pub fn forget_below(&mut self, log_start: Offset) {
        self.producers
            .retain(|_, known| known.last().last_offset() >= log_start);
    }

    /// Whether the partition remembers `producer_id`.
    pub fn knows(&self, producer_id: i64) -> bool {
        self.producers.contains_key(&producer_id)
    }

    /// Forgets the producers whose last batch was appended `expiry_ms` or longer before `now`.
    pub fn expire(&mut self, now: Millis, expiry_ms: i64) {
        self.producers
            .retain(|_, known| now.0.saturating_sub(known.last().append_time.0) < expiry_ms);
    }

    fn forget_idlest(&mut self) {
        let idlest = self
            .producers
            .iter()
            .min_by_key(|(id, known)| (known.last().append_time, **id))
            .map(|(id, _)| *id);
        if let Some(id) = idlest {
            self.producers.remove(&id);
        }
    }

    /// The state as a snapshot file (`docs/format/producer-snapshot.md`), producers in id
    /// order so equal states give equal files.
    pub fn encode(&self) -> Vec<u8> {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let entries: Vec<SnapshotEntry> = ids
            .iter()
            .map(|id| {
                let known = &self.producers[id];
                let mut entry = SnapshotEntry::new_zeroed();
                entry.producer_id = I64::new(*id);
                entry.producer_epoch = I16::new(known.epoch);
                entry.batch_count = u8::try_from(known.batches.len()).expect("at most 5");
                for (slot, batch) in entry.batches.iter_mut().zip(&known.batches) {
                    *slot = SnapshotBatch {
                        base_offset: U64::new(batch.base_offset.0),
                        append_time: I64::new(batch.append_time.0),
                        base_sequence: I32::new(batch.base_sequence),
                        record_count: U32::new(batch.record_count),
                    };
                }
                entry
            })
            .collect();
        encode_snapshot(&entries)
    }

    /// The state a snapshot file holds.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let entries = decode_snapshot(bytes)?;
        let producers = entries
            .iter()
            .map(|entry| {
                let used = usize::from(entry.batch_count);
                let batches = entry.batches[..used]
                    .iter()
                    .map(|batch| ProducedBatch {
                        base_offset: Offset(batch.base_offset.get()),
                        append_time: Millis(batch.append_time.get()),
                        base_sequence: batch.base_sequence.get(),
                        record_count: batch.record_count.get(),
                    })
                    .collect();
                let producer = Producer {
                    epoch: entry.producer_epoch.get(),
                    batches,
                };
                (entry.producer_id.get(), producer)
            })
            .collect();
        Ok(ProducerStates { producers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;

    fn fields(id: i64, epoch: i16, sequence: i32) -> ProducerFields {
        ProducerFields {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: sequence,
        }
    }

    fn batch(base: u64, sequence: i32, count: u32, at: i64) -> ProducedBatch {
        ProducedBatch {
            base_offset: Offset(base),
            append_time: Millis(at),
            base_sequence: sequence,
            record_count: count,
        }
    }

    #[test]
    fn resends_of_the_last_five_batches_are_duplicates_and_gaps_are_refused() {
        let mut states = ProducerStates::default();
        let mut next = 0u64;
        for n in 0..7 {
            let sequence = n * 10;
            assert_eq!(states.check(fields(1, 0, sequence), 10), Ok(Check::Append));
            states.record(fields(1, 0, sequence), batch(next, sequence, 10, 5), DAY);
            next += 10;
        }
        // Batches 2..7 are remembered (the last five), 0 and 1 no longer.
        assert_eq!(
            states.check(fields(1, 0, 30), 10),
            Ok(Check::Duplicate(batch(30, 30, 10, 5)))
        );
        assert_eq!(
            states.check(fields(1, 0, 10), 10),
            Err(ProducerError::OutOfOrderSequence {
                producer_id: 1,
                expected: 70,
                found: 10
            })
        );
        // The same first sequence with another length is not the same batch.
        assert!(states.check(fields(1, 0, 60), 3).is_err());
        assert!(states.check(fields(1, 0, 71), 1).is_err());
        assert_eq!(states.check(fields(1, 0, 70), 1), Ok(Check::Append));
        // Older epochs are fenced; a newer one starts at 0.
        assert!(matches!(
            states.check(fields(1, -1, 70), 1),
            Err(ProducerError::InvalidFields { .. })
        ));
        states.record(fields(1, 2, 0), batch(70, 0, 1, 6), DAY);
        assert_eq!(
            states.check(fields(1, 1, 1), 1),
            Err(ProducerError::InvalidEpoch {
                producer_id: 1,
                current: 2,
                found: 1
            })
        );
        assert!(states.check(fields(1, 3, 5), 1).is_err());
        assert_eq!(states.check(fields(1, 3, 0), 1), Ok(Check::Append));
        // Unknown producers and batches without a producer start anywhere.
        assert_eq!(states.check(fields(2, 0, 500), 1), Ok(Check::Append));
        assert_eq!(states.check(fields(-1, -1, -1), 1), Ok(Check::Append));
    }

    #[test]
    fn sequences_wrap_from_the_largest_to_zero() {
        assert_eq!(sequence_after(i32::MAX, 1), 0);
        assert_eq!(sequence_after(i32::MAX - 1, 3), 1);
        let mut states = ProducerStates::default();
        states.record(
            fields(4, 0, i32::MAX - 1),
            batch(0, i32::MAX - 1, 2, 0),
            DAY,
        );
        assert_eq!(states.check(fields(4, 0, 0), 5), Ok(Check::Append));
        assert_eq!(
            states.check(fields(4, 0, i32::MAX - 1), 2),
            Ok(Check::Duplicate(batch(0, i32::MAX - 1, 2, 0)))
        );
    }

    #[test]
    fn producers_expire_and_stay_within_the_limit() {
        let mut states = ProducerStates::default();
        states.record(fields(1, 0, 0), batch(0, 0, 1, 0), DAY);
        states.record(fields(2, 0, 0), batch(1, 0, 1, DAY / 2), DAY);
        // A new producer a day later: producer 1 expired, 2 not yet.
        states.record(fields(3, 0, 0), batch(2, 0, 1, DAY), DAY);
        assert_eq!(states.len(), 2);
        assert_eq!(states.check(fields(1, 0, 9), 1), Ok(Check::Append));
        let mut states = ProducerStates::default();
        for id in 0..=PRODUCERS_PER_PARTITION_MAX as i64 {
            let at = 1_000 + id;
            states.record(fields(id, 0, 0), batch(id as u64, 0, 1, at), DAY);
        }
        assert_eq!(states.len(), PRODUCERS_PER_PARTITION_MAX);
        // The one idle longest (id 0) made room.
        assert_eq!(states.check(fields(0, 0, 7), 1), Ok(Check::Append));
        assert!(states.check(fields(1, 0, 7), 1).is_err());
    }

    #[test]
    fn snapshots_hold_the_state_and_replay_skips_what_they_cover() {
        let mut states = ProducerStates::default();
        states.record(fields(9, 1, 0), batch(0, 0, 3, 10), DAY);
        states.record(fields(9, 1, 3), batch(5, 3, 2, 11), DAY);
        states.record(fields(2, 0, 8), batch(3, 8, 2, 12), DAY);
        let decoded = ProducerStates::decode(&states.encode()).expect("valid");
        assert_eq!(decoded, states);
        let mut replayed = decoded;
        replayed.replay(fields(9, 1, 3), batch(5, 3, 2, 11), DAY);
        replayed.replay(fields(-1, -1, -1), batch(7, 0, 1, 11), DAY);
        assert_eq!(replayed, states, "covered batches are skipped");
        replayed.replay(fields(9, 1, 5), batch(7, 5, 1, 13), DAY);
        assert_eq!(
            replayed.check(fields(9, 1, 5), 1),
            Ok(Check::Duplicate(batch(7, 5, 1, 13)))
        );
    }

    /// Mutation testing found these rules unpinned.
    #[test]
    fn replay_and_record_take_only_real_producers_and_forgetting_follows_the_log_start() {
        let mut states = ProducerStates::default();
        // Producer id 0, epoch 0, sequence 0 are real values.
        states.replay(fields(0, 0, 0), batch(0, 0, 1, 0), DAY);
        assert!(states.knows(0));
        states.record(fields(0, 0, 1), batch(1, 1, 1, 0), DAY);
        assert_eq!(states.len(), 1);
        // Any negative field: not an idempotent producer's batch.
        for not_idempotent in [fields(-1, 0, 0), fields(7, -1, 0), fields(8, 0, -1)] {
            states.replay(not_idempotent, batch(2, 0, 1, 0), DAY);
        }
        states.record(fields(-1, 0, 0), batch(3, 0, 1, 0), DAY);
        assert_eq!(states.len(), 1);
        assert!(!states.knows(7) && !states.knows(8) && !states.knows(-1));
        // Forgotten once the log start passes its last batch (offset 1), not before.
        states.forget_below(Offset(1));
        assert!(states.knows(0));
        states.forget_below(Offset(2));
        assert!(!states.knows(0));
        assert!(states.is_empty());
    }
}
