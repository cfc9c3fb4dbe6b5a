//! `LeaderEpochs`: a replica's chain of leader epochs — for each epoch the offset its first
//! record has (or would have had) — and the rules that make replicas agree after leader
//! changes (Kafka's KIP-101 and KIP-279; Kafka's `LeaderEpochFileCache`).
//!
//! Invariants:
//! - epochs strictly increase along the chain, and so do start offsets: an epoch that got no
//!   record is replaced by the next one starting at the same offset (it can never be asked
//!   about with an answer that differs);
//! - the chain describes the log: after the log is cut at `end`, every entry starting at or
//!   above `end` goes ([`LeaderEpochs::truncate_from_end`]); after the log start moves, the
//!   entry covering it starts there ([`LeaderEpochs::truncate_from_start`]).

use spate_format::epochs::{
    decode_epochs, encode_epochs, epochs_entry, EpochsError, LEADER_EPOCHS_MAX,
};
use spate_format::Offset;
use thiserror::Error;

/// A partition's leader epoch, handed out by the control plane; it only grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub u32);

impl std::fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One link of the chain: the records from `start` up to the next entry's start (or the log
/// end) were appended by the leader of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    pub epoch: LeaderEpoch,
    pub start: Offset,
}

/// Where the records of an epoch end, as one replica knows it (Kafka's
/// `OffsetsForLeaderEpoch` answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    /// The largest epoch of the chain at or below the one asked about; `None` when the chain
    /// has no such epoch (the one asked about precedes the whole chain).
    pub epoch: Option<LeaderEpoch>,
    /// The offset after that epoch's last record: the next epoch's start, or the log end for
    /// the latest epoch. With `epoch: None`, the chain's first start.
    pub end: Offset,
}

/// Why an entry cannot join the chain (a bug in the caller, or a control plane going
/// backwards; never silently accepted).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EpochError {
    #[error("epoch {epoch} is not above the chain's latest epoch {latest}")]
    NotNewer {
        epoch: LeaderEpoch,
        latest: LeaderEpoch,
    },
    #[error("epoch {epoch} would start at {start}, below the latest start {latest_start}")]
    StartBackwards {
        epoch: LeaderEpoch,
        start: Offset,
        latest_start: Offset,
    },
    #[error("the chain holds {LEADER_EPOCHS_MAX} epochs, the limit")]
    TooMany,
    #[error(transparent)]
    File(#[from] EpochsError),
}

/// A replica's leader-epoch chain (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<EpochStart>,
}

impl LeaderEpochs {
    pub fn new() -> Self {
        Self::default()
    }

    /// A chain from stored entries, checked link by link.
    pub fn from_entries(entries: &[EpochStart]) -> Result<Self, EpochError> {
        let mut chain = Self::new();
        for entry in entries {
            chain.assign(entry.epoch, entry.start)?;
        }
        Ok(chain)
    }

    pub fn entries(&self) -> &[EpochStart] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochStart> {
        self.entries.last().copied()
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.latest().map(|entry| entry.epoch)
    }

    /// Records that `epoch`'s records start at `start`. The same latest epoch again is a no-op
    /// (a leader re-announcing itself, a follower told twice); an entry of a previous epoch
    /// starting at the same offset got no record and is replaced.
    pub fn assign(&mut self, epoch: LeaderEpoch, start: Offset) -> Result<(), EpochError> {
        if let Some(latest) = self.latest() {
            if epoch == latest.epoch && start >= latest.start {
                return Ok(());
            }
            if epoch <= latest.epoch {
                return Err(EpochError::NotNewer {
                    epoch,
                    latest: latest.epoch,
                });
            }
            if start < latest.start {
                return Err(EpochError::StartBackwards {
                    epoch,
                    start,
                    latest_start: latest.start,
                });
            }
            if start == latest.start {
                self.entries.pop();
            }
        }
        if self.entries.len() >= LEADER_EPOCHS_MAX {
            return Err(EpochError::TooMany);
        }
        self.entries.push(EpochStart { epoch, start });
        Ok(())
    }

    /// The chain as a `leader-epochs` file (`docs/format/leader-epochs.md`).
    pub fn to_file(&self) -> Vec<u8> {
        let entries: Vec<_> = self
            .entries
            .iter()
            .map(|entry| epochs_entry(entry.epoch.0, entry.start.0))
            .collect();
        encode_epochs(&entries)
    }

    /// The chain a `leader-epochs` file holds.
    pub fn from_file(bytes: &[u8]) -> Result<Self, EpochError> {
        let mut chain = Self::new();
        for entry in decode_epochs(bytes)? {
            chain.assign(LeaderEpoch(entry.epoch.get()), Offset(entry.start.get()))?;
        }
        Ok(chain)
    }

    /// The epoch covering `offset` (the entry with the largest start at or below it).
    pub fn epoch_at(&self, offset: Offset) -> Option<LeaderEpoch> {
        let after = self.entries.partition_point(|entry| entry.start <= offset);
        after.checked_sub(1).map(|index| self.entries[index].epoch)
    }

    /// Where `epoch`'s records end in this replica's log, whose end is `log_end` (see
    /// [`EpochEnd`]); `None` for an empty chain.
    pub fn end_for(&self, epoch: LeaderEpoch, log_end: Offset) -> Option<EpochEnd> {
        let first = self.entries.first()?;
        let after = self.entries.partition_point(|entry| entry.epoch <= epoch);
        if after == 0 {
            return Some(EpochEnd {
                epoch: None,
                end: first.start,
            });
        }
        let end = self
            .entries
            .get(after)
            .map_or(log_end, |next| next.start.min(log_end));
        Some(EpochEnd {
            epoch: Some(self.entries[after - 1].epoch),
            end,
        })
    }

    /// The log was cut at `end`: entries starting at or above it go.
    pub fn truncate_from_end(&mut self, end: Offset) {
        let keep = self.entries.partition_point(|entry| entry.start < end);
        self.entries.truncate(keep);
    }

    /// The log now starts at `log_start`: entries wholly below it go, and the one covering it
    /// starts there.
    pub fn truncate_from_start(&mut self, log_start: Offset) {
        let covering = self
            .entries
            .partition_point(|entry| entry.start <= log_start);
        if covering == 0 {
            return;
        }
        self.entries.drain(..covering - 1);
        self.entries[0].start = log_start;
    }

    /// The chain's entries that describe the records from `from` to `to` (exclusive): the one
    /// covering `from` (starting at `from`) and those starting inside. A leader sends these
    /// with the records a follower fetched.
    pub fn boundaries(&self, from: Offset, to: Offset) -> Vec<EpochStart> {
        let mut out = Vec::new();
        if let Some(epoch) = self.epoch_at(from) {
            out.push(EpochStart { epoch, start: from });
        }
        out.extend(
            self.entries
                .iter()
                .filter(|entry| entry.start > from && entry.start < to)
                .copied(),
        );
        out
    }
}

/// What a leader answers about a follower's log: does it agree with the leader's up to the
/// follower's fetch offset?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// The follower's log is a prefix of the leader's: fetch on.
    Agrees,
    /// The follower's log differs at or after `end`: it must truncate (see
    /// [`truncation_point`]) and ask again.
    Diverging(EpochEnd),
    /// The follower's last epoch precedes the leader's whole chain (retention or a reset cut
    /// the leader's log, and its chain with it): the follower's records cannot be checked
    /// against the leader's, so it starts over at the leader's log start.
    StartOver,
}

/// The leader's check of a follower that has `fetch_offset` records' worth of log ending
/// with an entry of `last_fetched_epoch` (`None`: the follower's chain is empty, so is its
/// log above its start). `leader` is the leader's chain and `leader_log_end` its log end.
pub fn check_agreement(
    leader: &LeaderEpochs,
    leader_log_end: Offset,
    fetch_offset: Offset,
    last_fetched_epoch: Option<LeaderEpoch>,
) -> Agreement {
    let Some(last_fetched_epoch) = last_fetched_epoch else {
        return Agreement::Agrees;
    };
    let Some(end) = leader.end_for(last_fetched_epoch, leader_log_end) else {
        // A leader without a chain has no records of any epoch: everything the follower
        // holds above the start diverges.
        return Agreement::Diverging(EpochEnd {
            epoch: None,
            end: leader_log_end.min(fetch_offset),
        });
    };
    match end.epoch {
        // Nothing tells whether the follower's last records are the leader's: even those
        // just below the chain's first start may belong to an epoch the chain no longer
        // shows (the simulation found a follower keeping such a record when this was taken
        // as agreement).
        None => Agreement::StartOver,
        Some(epoch) if epoch == last_fetched_epoch && end.end >= fetch_offset => Agreement::Agrees,
        Some(_) => Agreement::Diverging(end),
    }
}

/// Where a follower cuts its log after a diverging answer, and whether that settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// The new log end.
    pub to: Offset,
    /// The follower's log now agrees with the leader's (no further round needed). When not,
    /// the follower asks again with its new last epoch, which is lower: the rounds end.
    pub settled: bool,
}

/// The follower's side of KIP-279: given the leader's `diverging` answer, its own chain and
/// log end, where to cut.
pub fn truncation_point(
    own: &LeaderEpochs,
    own_log_end: Offset,
    diverging: EpochEnd,
) -> Truncation {
    let Some(leader_epoch) = diverging.epoch else {
        return Truncation {
            to: diverging.end.min(own_log_end),
            settled: true,
        };
    };
    match own.end_for(leader_epoch, own_log_end) {
        None => Truncation {
            to: diverging.end.min(own_log_end),
            settled: true,
        },
        Some(own_end) => Truncation {
            to: diverging.end.min(own_end.end).min(own_log_end),
            settled: own_end.epoch == Some(leader_epoch),
        },
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_epoch_shows_as_its_number() {
        assert_eq!(LeaderEpoch(7).to_string(), "7");
    }

    use super::*;

    fn chain(entries: &[(u32, u64)]) -> LeaderEpochs {
        let entries: Vec<EpochStart> = entries
            .iter()
            .map(|&(epoch, start)| EpochStart {
                epoch: LeaderEpoch(epoch),
                start: Offset(start),
            })
            .collect();
        LeaderEpochs::from_entries(&entries).expect("a valid chain")
    }

    fn end(epoch: Option<u32>, end: u64) -> EpochEnd {
        EpochEnd {
            epoch: epoch.map(LeaderEpoch),
            end: Offset(end),
        }
    }

    #[test]
    fn assign_keeps_the_chain_increasing_and_replaces_empty_epochs() {
        let mut epochs = chain(&[(1, 0), (3, 10)]);
        assert_eq!(
            epochs.assign(LeaderEpoch(2), Offset(20)),
            Err(EpochError::NotNewer {
                epoch: LeaderEpoch(2),
                latest: LeaderEpoch(3)
            })
        );
        assert_eq!(
            epochs.assign(LeaderEpoch(4), Offset(9)),
            Err(EpochError::StartBackwards {
                epoch: LeaderEpoch(4),
                start: Offset(9),
                latest_start: Offset(10)
            })
        );
        // The latest epoch again: nothing changes.
        epochs.assign(LeaderEpoch(3), Offset(15)).unwrap();
        assert_eq!(epochs, chain(&[(1, 0), (3, 10)]));
        // Epoch 3 got no record before epoch 4 started at the same offset: it goes.
        epochs.assign(LeaderEpoch(4), Offset(10)).unwrap();
        assert_eq!(epochs, chain(&[(1, 0), (4, 10)]));
    }

    #[test]
    fn the_chain_survives_its_file() {
        let epochs = chain(&[(2, 5), (4, 10), (7, 30)]);
        assert_eq!(LeaderEpochs::from_file(&epochs.to_file()), Ok(epochs));
        let mut damaged = chain(&[(2, 5)]).to_file();
        damaged[16] ^= 0x80;
        assert!(matches!(
            LeaderEpochs::from_file(&damaged),
            Err(EpochError::File(EpochsError::Crc { .. }))
        ));
    }

    #[test]
    fn end_for_answers_like_offsets_for_leader_epoch() {
        let epochs = chain(&[(2, 5), (4, 10), (7, 30)]);
        let log_end = Offset(42);
        assert_eq!(epochs.end_for(LeaderEpoch(1), log_end), Some(end(None, 5)));
        assert_eq!(
            epochs.end_for(LeaderEpoch(2), log_end),
            Some(end(Some(2), 10))
        );
        assert_eq!(
            epochs.end_for(LeaderEpoch(3), log_end),
            Some(end(Some(2), 10))
        );
        assert_eq!(
            epochs.end_for(LeaderEpoch(4), log_end),
            Some(end(Some(4), 30))
        );
        assert_eq!(
            epochs.end_for(LeaderEpoch(7), log_end),
            Some(end(Some(7), 42))
        );
        assert_eq!(
            epochs.end_for(LeaderEpoch(9), log_end),
            Some(end(Some(7), 42))
        );
        assert_eq!(LeaderEpochs::new().end_for(LeaderEpoch(1), log_end), None);
    }

    #[test]
    fn truncation_from_either_side_keeps_the_chain_describing_the_log() {
        let mut epochs = chain(&[(2, 5), (4, 10), (7, 30)]);
        epochs.truncate_from_end(Offset(30));
        assert_eq!(epochs, chain(&[(2, 5), (4, 10)]));
        epochs.truncate_from_start(Offset(12));
        assert_eq!(epochs, chain(&[(4, 12)]));
        epochs.truncate_from_start(Offset(3));
        assert_eq!(epochs, chain(&[(4, 12)]));
        assert_eq!(epochs.epoch_at(Offset(11)), None);
        assert_eq!(epochs.epoch_at(Offset(12)), Some(LeaderEpoch(4)));
    }

    #[test]
    fn boundaries_describe_a_fetched_range() {
        let epochs = chain(&[(2, 5), (4, 10), (7, 30)]);
        let starts = |from, to| {
            epochs
                .boundaries(Offset(from), Offset(to))
                .iter()
                .map(|entry| (entry.epoch.0, entry.start.0))
                .collect::<Vec<_>>()
        };
        assert_eq!(starts(8, 40), vec![(2, 8), (4, 10), (7, 30)]);
        assert_eq!(starts(10, 30), vec![(4, 10)]);
        assert_eq!(starts(0, 6), vec![(2, 5)]);
    }

    /// KIP-101's first scenario: the follower has a record the new leader never got.
    #[test]
    fn a_follower_drops_what_the_new_leader_never_had() {
        // Both had epoch 1 up to offset 10; the old leader (now follower) wrote 10 and 11
        // in epoch 1; the new leader took epoch 2 at 10.
        let leader = chain(&[(1, 0), (2, 10)]);
        let follower = chain(&[(1, 0)]);
        let answer = check_agreement(&leader, Offset(15), Offset(12), Some(LeaderEpoch(1)));
        let Agreement::Diverging(diverging) = answer else {
            panic!("expected divergence, got {answer:?}");
        };
        assert_eq!(diverging, end(Some(1), 10));
        let cut = truncation_point(&follower, Offset(12), diverging);
        assert_eq!(
            cut,
            Truncation {
                to: Offset(10),
                settled: true
            }
        );
    }

    /// KIP-279: logs that diverged over several leader changes need more than one round.
    #[test]
    fn divergence_over_several_epochs_is_settled_in_rounds() {
        // Both wrote epoch 0 up to 3. The follower then led epoch 2 (unknown to the leader)
        // from 3 to 8; the leader had led epoch 1 from 3 and leads epoch 3 from 6.
        let leader = chain(&[(0, 0), (1, 3), (3, 6)]);
        let mut follower = chain(&[(0, 0), (2, 3)]);
        let mut follower_end = Offset(8);
        let mut cuts = Vec::new();
        loop {
            assert!(cuts.len() < 5, "the rounds must end");
            match check_agreement(&leader, Offset(9), follower_end, follower.latest_epoch()) {
                Agreement::Agrees => break,
                Agreement::Diverging(diverging) => {
                    let cut = truncation_point(&follower, follower_end, diverging);
                    cuts.push(cut);
                    follower_end = cut.to;
                    follower.truncate_from_end(cut.to);
                }
                Agreement::StartOver => panic!("the chains share epoch 0"),
            }
        }
        // The leader's epoch 1 is unknown to the follower: the first cut goes to where the
        // follower's own epoch 0 ended, unsettled; the next question (epoch 0) agrees.
        assert_eq!(
            cuts,
            vec![Truncation {
                to: Offset(3),
                settled: false
            }]
        );
        assert_eq!(follower, chain(&[(0, 0)]));
    }

    #[test]
    fn a_follower_whose_epoch_precedes_the_leaders_chain() {
        // Retention left the leader with epoch 5 from 100; the follower's last epoch is 3:
        // whatever its position, its records cannot be checked, it starts over.
        let leader = chain(&[(5, 100)]);
        for fetch_offset in [90, 100, 120] {
            assert_eq!(
                check_agreement(
                    &leader,
                    Offset(150),
                    Offset(fetch_offset),
                    Some(LeaderEpoch(3))
                ),
                Agreement::StartOver
            );
        }
        let follower = chain(&[(3, 0)]);
        assert_eq!(
            truncation_point(&follower, Offset(120), end(None, 100)),
            Truncation {
                to: Offset(100),
                settled: true
            }
        );
        // A follower with an empty chain holds nothing above its start.
        assert_eq!(
            check_agreement(&leader, Offset(150), Offset(100), None),
            Agreement::Agrees
        );
    }
}
