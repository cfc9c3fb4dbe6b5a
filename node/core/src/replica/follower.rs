//! `Follower`: a follower's side of fetching from its leader — settling where its log agrees
//! with the leader's (truncation rounds) and taking in what the leader sends.
//!
//! Invariants:
//! - a follower never cuts its log below the high watermark it learned: everything below it
//!   is in every in-sync replica's log; a leader asking for that is damage, reported, not
//!   obeyed;
//! - the epoch boundaries that come with records join the follower's chain before the records
//!   join its log, so the chain always describes the log;
//! - an answer is taken only if it continues the follower's log exactly where it ends (a
//!   late or repeated answer is refused, not applied twice).

use spate_format::Offset;
use thiserror::Error;

use super::epochs::{truncation_point, EpochEnd, EpochError, EpochStart, LeaderEpochs, Truncation};
use super::{LeaderEpoch, ReplicaId};

/// Why a follower refuses what its leader sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FollowerError {
    /// The leader would have the follower drop records below the high watermark: one of the
    /// two logs is damaged. The replica is fenced and the operator told.
    #[error("the leader's log diverges at {to}, below the high watermark {high_watermark}")]
    BelowHighWatermark { to: Offset, high_watermark: Offset },
    /// An answer for another position (late, repeated, or for a log that changed since).
    #[error("records from {from} do not continue the log, which ends at {log_end}")]
    NotContinuing { from: Offset, log_end: Offset },
    #[error("epoch boundaries {detail}")]
    Boundaries { detail: String },
    #[error(transparent)]
    Epoch(#[from] EpochError),
}

/// A follower's fetch state for one partition (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    leader: ReplicaId,
    epoch: LeaderEpoch,
    high_watermark: Offset,
}

impl Follower {
    /// A follower of `leader` in `epoch`, which knew the high watermark `high_watermark`.
    pub fn new(leader: ReplicaId, epoch: LeaderEpoch, high_watermark: Offset) -> Self {
        Self {
            leader,
            epoch,
            high_watermark,
        }
    }

    pub fn leader(&self) -> ReplicaId {
        self.leader
    }

    pub fn epoch(&self) -> LeaderEpoch {
        self.epoch
    }

    /// The leader's high watermark as last heard, capped by this replica's log end.
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// The leader answered that the logs diverge: where to cut (and whether another round
    /// follows). The caller cuts its log and its chain ([`LeaderEpochs::truncate_from_end`]).
    pub fn handle_diverging(
        &mut self,
        own: &LeaderEpochs,
        own_log_end: Offset,
        diverging: EpochEnd,
    ) -> Result<Truncation, FollowerError> {
        let truncation = truncation_point(own, own_log_end, diverging);
        if truncation.to < self.high_watermark {
            return Err(FollowerError::BelowHighWatermark {
                to: truncation.to,
                high_watermark: self.high_watermark,
            });
        }
        Ok(truncation)
    }

    /// The leader sent the records from `from` to `to` (exclusive) with their epoch
    /// `boundaries` and its high watermark: checks they continue the log, which ends at
    /// `own_log_end`, and adds the boundaries to `own`. The caller then appends the records.
    pub fn handle_records(
        &mut self,
        own: &mut LeaderEpochs,
        own_log_end: Offset,
        from: Offset,
        to: Offset,
        boundaries: &[EpochStart],
        leader_high_watermark: Offset,
    ) -> Result<(), FollowerError> {
        if from != own_log_end || to < from {
            return Err(FollowerError::NotContinuing {
                from,
                log_end: own_log_end,
            });
        }
        if from < to {
            check_boundaries(boundaries, from, to, self.epoch)?;
        }
        for boundary in boundaries {
            own.assign(boundary.epoch, boundary.start)?;
        }
        self.high_watermark = self.high_watermark.max(leader_high_watermark.min(to));
        Ok(())
    }

    /// The leader no longer has the follower's position (retention moved its log start past
    /// it): the follower empties its replica and starts at `log_start`. Refused when that
    /// would drop records below the high watermark that the leader should still have.
    pub fn handle_out_of_range(
        &mut self,
        own_log_end: Offset,
        log_start: Offset,
    ) -> Result<(), FollowerError> {
        if log_start < own_log_end && log_start < self.high_watermark {
            return Err(FollowerError::BelowHighWatermark {
                to: log_start,
                high_watermark: self.high_watermark,
            });
        }
        self.high_watermark = self.high_watermark.max(log_start);
        Ok(())
    }
}

/// Boundaries describe `from..to`: the first starts at `from`, starts and epochs increase,
/// all inside the range, none above the follower's view of the current epoch.
fn check_boundaries(
    boundaries: &[EpochStart],
    from: Offset,
    to: Offset,
    epoch: LeaderEpoch,
) -> Result<(), FollowerError> {
    let fail = |detail: String| Err(FollowerError::Boundaries { detail });
    let Some(first) = boundaries.first() else {
        return fail(format!("missing for records {from}..{to}"));
    };
    if first.start != from {
        return fail(format!("start at {}, the records at {from}", first.start));
    }
    for pair in boundaries.windows(2) {
        if pair[1].epoch <= pair[0].epoch || pair[1].start <= pair[0].start || pair[1].start >= to {
            return fail(format!("out of order: {:?} then {:?}", pair[0], pair[1]));
        }
    }
    if let Some(last) = boundaries.last() {
        if last.epoch > epoch {
            return fail(format!(
                "name epoch {}, above the current {epoch}",
                last.epoch
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(epoch: u32, start: u64) -> EpochStart {
        EpochStart {
            epoch: LeaderEpoch(epoch),
            start: Offset(start),
        }
    }

    #[test]
    fn records_continue_the_log_and_extend_the_chain() {
        let mut own = LeaderEpochs::from_entries(&[start(1, 0)]).unwrap();
        let mut follower = Follower::new(ReplicaId(2), LeaderEpoch(3), Offset(5));
        follower
            .handle_records(
                &mut own,
                Offset(8),
                Offset(8),
                Offset(12),
                &[start(1, 8), start(3, 10)],
                Offset(9),
            )
            .unwrap();
        assert_eq!(own.entries(), &[start(1, 0), start(3, 10)]);
        assert_eq!(follower.high_watermark(), Offset(9));
        // The same answer again does not continue the log (now 12 long).
        assert_eq!(
            follower.handle_records(
                &mut own,
                Offset(12),
                Offset(8),
                Offset(12),
                &[start(1, 8)],
                Offset(9)
            ),
            Err(FollowerError::NotContinuing {
                from: Offset(8),
                log_end: Offset(12)
            })
        );
        // An empty answer moves only the high watermark, capped by the log end.
        follower
            .handle_records(
                &mut own,
                Offset(12),
                Offset(12),
                Offset(12),
                &[],
                Offset(20),
            )
            .unwrap();
        assert_eq!(follower.high_watermark(), Offset(12));
    }

    #[test]
    fn bad_boundaries_are_refused() {
        let mut own = LeaderEpochs::new();
        let mut follower = Follower::new(ReplicaId(2), LeaderEpoch(3), Offset(0));
        for boundaries in [
            vec![],
            vec![start(1, 1)],
            vec![start(2, 0), start(1, 4)],
            vec![start(1, 0), start(2, 10)],
            vec![start(4, 0)],
        ] {
            assert!(
                matches!(
                    follower.handle_records(
                        &mut own,
                        Offset(0),
                        Offset(0),
                        Offset(10),
                        &boundaries,
                        Offset(0)
                    ),
                    Err(FollowerError::Boundaries { .. })
                ),
                "{boundaries:?}"
            );
        }
        assert!(own.entries().is_empty());
    }

    #[test]
    fn a_follower_never_cuts_below_its_high_watermark() {
        let own = LeaderEpochs::from_entries(&[start(1, 0), start(2, 10)]).unwrap();
        let mut follower = Follower::new(ReplicaId(2), LeaderEpoch(3), Offset(12));
        let diverging = EpochEnd {
            epoch: Some(LeaderEpoch(1)),
            end: Offset(10),
        };
        assert_eq!(
            follower.handle_diverging(&own, Offset(15), diverging),
            Err(FollowerError::BelowHighWatermark {
                to: Offset(10),
                high_watermark: Offset(12)
            })
        );
        let mut follower = Follower::new(ReplicaId(2), LeaderEpoch(3), Offset(10));
        assert_eq!(
            follower.handle_diverging(&own, Offset(15), diverging),
            Ok(Truncation {
                to: Offset(10),
                settled: true
            })
        );
        assert!(follower.handle_out_of_range(Offset(15), Offset(11)).is_ok());
        assert!(follower.handle_out_of_range(Offset(15), Offset(30)).is_ok());
        let mut follower = Follower::new(ReplicaId(2), LeaderEpoch(3), Offset(12));
        assert!(follower
            .handle_out_of_range(Offset(15), Offset(11))
            .is_err());
        // Exactly at the high watermark nothing committed is dropped.
        assert!(follower.handle_out_of_range(Offset(15), Offset(12)).is_ok());
    }
}
