//! `Leader`: a partition leader's view of its replicas — how far each follower's log and
//! durable end are, which followers are in sync, the high watermark over the in-sync set,
//! the ISR changes to propose to the control plane, and `min.insync.replicas`.
//!
//! Invariants:
//! - the high watermark is the smallest durable end over the *maximal* ISR (the committed ISR
//!   plus any member a proposal in flight adds; a member a proposal removes still counts
//!   until the removal is committed — Kafka's KIP-497), and never moves backwards;
//! - a follower's progress counts only for the data directory (`StorageId`) it reported: an
//!   ISR member whose directory changed (a replaced disk) holds nothing it promised and is
//!   proposed for removal at once (Kafka's KIP-903);
//! - one ISR change is in flight at a time; the leader is always in its own ISR;
//! - the leader is *ready* for consumers once its high watermark reached the start of its
//!   epoch, which is at or above every high watermark an earlier leader reported.

use std::collections::BTreeMap;

use spate_format::Offset;
use thiserror::Error;

use super::{IsrMember, LeaderEpoch, ReplicaId, StorageId};
use crate::Millis;

/// Settings of a replicated partition that the leader applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderConfig {
    /// Fewest in-sync replicas (the leader included) for an `fsync` (`acks=all`) produce.
    pub min_insync: u32,
    /// How long a follower may go without catching up before it leaves the ISR.
    pub lag_max_ms: i64,
}

/// Kafka's `replica.lag.time.max.ms` is 30 s; Spate's followers fsync before they report,
/// and a slow follower holds every `acks=all` produce back, so it is dropped sooner.
pub const REPLICA_LAG_MAX_MS_DEFAULT: i64 = 10_000;

impl Default for LeaderConfig {
    fn default() -> Self {
        Self {
            min_insync: 1,
            lag_max_ms: REPLICA_LAG_MAX_MS_DEFAULT,
        }
    }
}

/// Why a replica's request to the leader is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplicaError {
    #[error("leader epoch {request} is older than the current epoch {current}")]
    FencedLeaderEpoch {
        request: LeaderEpoch,
        current: LeaderEpoch,
    },
    #[error("leader epoch {request} is newer than this leader's epoch {current}")]
    UnknownLeaderEpoch {
        request: LeaderEpoch,
        current: LeaderEpoch,
    },
    #[error("replica {replica} is not assigned to this partition")]
    NotAssigned { replica: ReplicaId },
    #[error("offset {offset} is above the leader's log end {log_end}")]
    AboveLogEnd { offset: Offset, log_end: Offset },
}

/// Why an `fsync` (`acks=all`) produce cannot be taken or acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{in_sync} replicas are in sync, min.insync.replicas is {min_insync}")]
pub struct NotEnoughReplicas {
    pub in_sync: u32,
    pub min_insync: u32,
}

/// Where an `fsync` produce ending at some offset stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckState {
    /// The high watermark has not reached it yet.
    Waiting,
    /// Every in-sync replica has it on disk, and there are enough of them.
    Acked,
    /// The high watermark passed it, but the ISR had shrunk below `min.insync.replicas`
    /// (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND: the batch is stored, the producer is told
    /// it has fewer copies than it asked for).
    NotEnoughReplicas(NotEnoughReplicas),
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The data directory the follower reported; `None` until its first fetch.
    pub storage: Option<StorageId>,
    /// The follower's log end (its last fetch offset).
    pub log_end: Offset,
    /// The follower's durable end, at most its log end.
    pub durable_end: Offset,
    /// The last time the follower was caught up (see [`Leader::handle_fetch`]).
    pub last_caught_up: Millis,
    last_fetch: Millis,
    /// The leader's log end when the follower's previous fetch was answered.
    leader_end_at_last_fetch: Offset,
    /// The newest fetch session the follower's fetches came in: what came in an older one
    /// is from before the follower last opened its log (a truncation, a start over) or
    /// lost its link, and no longer says what it holds.
    pub link: u128,
}

/// A partition leader's replica state (see the module documentation).
#[derive(Debug, Clone)]
pub struct Leader {
    me: IsrMember,
    epoch: LeaderEpoch,
    epoch_start: Offset,
    replicas: Vec<ReplicaId>,
    isr: Vec<IsrMember>,
    pending: Option<Vec<IsrMember>>,
    followers: BTreeMap<ReplicaId, Progress>,
    log_end: Offset,
    durable_end: Offset,
    high_watermark: Offset,
    config: LeaderConfig,
}

impl Leader {
    /// The leader of `epoch`, which starts at `log_end` (its log end when it took the epoch).
    /// `isr` and `replicas` are the control plane's; `high_watermark` is what this replica
    /// knew as a follower. Followers get `lag_max_ms` from `now` to show up.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Millis,
        me: IsrMember,
        epoch: LeaderEpoch,
        replicas: Vec<ReplicaId>,
        isr: Vec<IsrMember>,
        log_end: Offset,
        durable_end: Offset,
        high_watermark: Offset,
        config: LeaderConfig,
    ) -> Self {
        assert!(durable_end <= log_end, "durable end above the log end");
        let followers = replicas
            .iter()
            .filter(|&&replica| replica != me.replica)
            .map(|&replica| {
                let progress = Progress {
                    storage: None,
                    log_end: Offset(0),
                    durable_end: Offset(0),
                    last_caught_up: now,
                    last_fetch: now,
                    leader_end_at_last_fetch: log_end,
                    link: 0,
                };
                (replica, progress)
            })
            .collect();
        let mut leader = Self {
            me,
            epoch,
            epoch_start: log_end,
            replicas,
            isr,
            pending: None,
            followers,
            log_end,
            durable_end,
            high_watermark: high_watermark.min(durable_end),
            config,
        };
        leader.keep_self_in_isr();
        leader.update_high_watermark();
        leader
    }

    pub fn epoch(&self) -> LeaderEpoch {
        self.epoch
    }

    /// The offset this leader's epoch starts at.
    pub fn epoch_start(&self) -> Offset {
        self.epoch_start
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// Consumers may be answered: the high watermark reached the start of this epoch.
    pub fn is_ready(&self) -> bool {
        self.high_watermark >= self.epoch_start
    }

    /// The assigned replicas, in preference order.
    pub fn replicas(&self) -> &[ReplicaId] {
        &self.replicas
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[IsrMember] {
        &self.isr
    }

    /// The ISR change proposed and not yet answered.
    pub fn pending_isr(&self) -> Option<&[IsrMember]> {
        self.pending.as_deref()
    }

    pub fn progress(&self, replica: ReplicaId) -> Option<&Progress> {
        self.followers.get(&replica)
    }

    pub fn config(&self) -> LeaderConfig {
        self.config
    }

    /// A request carrying `epoch` is for this leader.
    pub fn check_epoch(&self, epoch: LeaderEpoch) -> Result<(), ReplicaError> {
        if epoch < self.epoch {
            return Err(ReplicaError::FencedLeaderEpoch {
                request: epoch,
                current: self.epoch,
            });
        }
        if epoch > self.epoch {
            return Err(ReplicaError::UnknownLeaderEpoch {
                request: epoch,
                current: self.epoch,
            });
        }
        Ok(())
    }

    /// The leader's own log grew to `log_end`.
    pub fn handle_appended(&mut self, log_end: Offset) {
        assert!(log_end >= self.log_end, "the leader's log end went back");
        self.log_end = log_end;
    }

    /// The leader's own durable end moved; returns whether the high watermark moved.
    pub fn handle_durable(&mut self, durable_end: Offset) -> bool {
        assert!(durable_end >= self.durable_end, "the durable end went back");
        assert!(durable_end <= self.log_end, "durable end above the log end");
        self.durable_end = durable_end;
        self.update_high_watermark()
    }

    /// A follower's fetch, after its log was found to agree with the leader's up to
    /// `fetch_offset` ([`super::check_agreement`]): records its progress. The follower is
    /// caught up if it asked for the leader's log end, or for at least what the leader's log
    /// end was when its previous fetch was answered (Kafka's rule: a write arriving just after
    /// a fetch does not count against the follower). `link` numbers the fetch session it
    /// came in, in order: a follower starts a new session whenever it opens its log again or
    /// loses its link (the node orders sessions by the number of the connection the leader
    /// accepted, then by the follower's own session number). A fetch in an older session
    /// than the follower's newest is stale and changes nothing; one in a newer session starts
    /// the follower's durable end over (its log may have been cut or emptied since).
    /// Returns whether the high watermark moved.
    pub fn handle_fetch(
        &mut self,
        now: Millis,
        replica: ReplicaId,
        storage: StorageId,
        link: u128,
        fetch_offset: Offset,
        durable_end: Offset,
    ) -> Result<bool, ReplicaError> {
        if fetch_offset > self.log_end {
            return Err(ReplicaError::AboveLogEnd {
                offset: fetch_offset,
                log_end: self.log_end,
            });
        }
        let log_end = self.log_end;
        let progress = self
            .followers
            .get_mut(&replica)
            .ok_or(ReplicaError::NotAssigned { replica })?;
        if link < progress.link {
            return Ok(false);
        }
        if progress.storage != Some(storage) || link > progress.link {
            // A first fetch, a new data directory, or a new link: nothing reported before
            // counts.
            progress.storage = Some(storage);
            progress.link = link;
            progress.durable_end = Offset(0);
        }
        if fetch_offset >= log_end {
            progress.last_caught_up = progress.last_caught_up.max(now);
        } else if fetch_offset >= progress.leader_end_at_last_fetch {
            progress.last_caught_up = progress.last_caught_up.max(progress.last_fetch);
        }
        progress.last_fetch = now;
        progress.leader_end_at_last_fetch = log_end;
        progress.log_end = fetch_offset;
        // Durable ends only grow for one data directory (a crash keeps what was synced); an
        // older report arriving late changes nothing.
        progress.durable_end = progress.durable_end.max(durable_end.min(fetch_offset));
        Ok(self.update_high_watermark())
    }

    /// A follower's durable end moved between fetches (`ReplicaProgress`), in session
    /// `link`: it counts only in the session of the follower's last fetch. Returns whether
    /// the high watermark moved.
    pub fn handle_progress(
        &mut self,
        replica: ReplicaId,
        storage: StorageId,
        link: u128,
        log_end: Offset,
        durable_end: Offset,
    ) -> Result<bool, ReplicaError> {
        if log_end > self.log_end {
            return Err(ReplicaError::AboveLogEnd {
                offset: log_end,
                log_end: self.log_end,
            });
        }
        let progress = self
            .followers
            .get_mut(&replica)
            .ok_or(ReplicaError::NotAssigned { replica })?;
        if progress.storage != Some(storage) || progress.link != link {
            // Progress counts only after a fetch checked this directory's log over this link.
            return Ok(false);
        }
        progress.durable_end = progress.durable_end.max(durable_end.min(log_end));
        Ok(self.update_high_watermark())
    }

    /// The control plane's ISR for this epoch (a proposal committed, or another writer's
    /// change seen through the watch): any proposal in flight is settled. Returns whether the
    /// high watermark moved.
    pub fn handle_isr_changed(&mut self, isr: Vec<IsrMember>) -> bool {
        self.isr = isr;
        self.pending = None;
        self.keep_self_in_isr();
        self.update_high_watermark()
    }

    /// The proposal in flight failed (the compare-and-swap lost): the current state will come
    /// through [`Leader::handle_isr_changed`].
    pub fn handle_isr_change_failed(&mut self) {
        self.pending = None;
    }

    /// The control plane's replicas for this epoch changed (a reassignment added or removed
    /// some): a new follower gets `lag_max_ms` from `now` to show up and joins the ISR once
    /// caught up; a removed one is no longer served, never joins, and leaves the ISR with the
    /// next proposal (an ISR member without a follower entry counts as lagging).
    pub fn handle_replicas_changed(&mut self, now: Millis, replicas: Vec<ReplicaId>) {
        self.followers
            .retain(|replica, _| replicas.contains(replica));
        for &replica in &replicas {
            if replica == self.me.replica || self.followers.contains_key(&replica) {
                continue;
            }
            self.followers.insert(
                replica,
                Progress {
                    storage: None,
                    log_end: Offset(0),
                    durable_end: Offset(0),
                    last_caught_up: now,
                    last_fetch: now,
                    leader_end_at_last_fetch: self.log_end,
                    link: 0,
                },
            );
        }
        self.replicas = replicas;
    }

    /// The ISR change to propose now, if any and none is in flight: first the removal of
    /// followers that lag (not caught up for `lag_max_ms`) or whose data directory changed,
    /// else the addition of one follower that has caught up (its durable end at or above the
    /// high watermark and the start of this epoch, caught up within `lag_max_ms`).
    pub fn poll_isr_change(&mut self, now: Millis) -> Option<Vec<IsrMember>> {
        if self.pending.is_some() {
            return None;
        }
        let lagging = |member: &IsrMember| -> bool {
            if member.replica == self.me.replica {
                return false;
            }
            match self.followers.get(&member.replica) {
                None => true,
                Some(progress) => {
                    progress
                        .storage
                        .is_some_and(|storage| storage != member.storage)
                        || now.0.saturating_sub(progress.last_caught_up.0) > self.config.lag_max_ms
                }
            }
        };
        let mut proposal: Vec<IsrMember> = self
            .isr
            .iter()
            .filter(|member| !lagging(member))
            .copied()
            .collect();
        if proposal.len() == self.isr.len() {
            let floor = self.high_watermark.max(self.epoch_start);
            let joining = self.followers.iter().find_map(|(&replica, progress)| {
                let storage = progress.storage?;
                let in_sync = self.isr.iter().any(|member| member.replica == replica);
                // Durable up to the floor, not only written: an ISR member may be elected
                // after a crash, and then must still hold everything any leader reported.
                let caught_up = progress.durable_end >= floor
                    && now.0.saturating_sub(progress.last_caught_up.0) <= self.config.lag_max_ms;
                (!in_sync && caught_up).then_some(IsrMember { replica, storage })
            })?;
            proposal.push(joining);
        }
        self.pending = Some(proposal.clone());
        Some(proposal)
    }

    /// Takes the topic's `min.insync.replicas` as it is now (a change applies to the next
    /// produce and the next acknowledgement).
    pub fn set_min_insync(&mut self, min_insync: u32) {
        self.config.min_insync = min_insync;
    }

    /// An `fsync` produce may be appended: enough replicas are in sync.
    pub fn check_min_insync(&self) -> Result<(), NotEnoughReplicas> {
        let in_sync = self.effective_isr_len();
        if in_sync < self.config.min_insync {
            return Err(NotEnoughReplicas {
                in_sync,
                min_insync: self.config.min_insync,
            });
        }
        Ok(())
    }

    /// Where an `fsync` produce whose records end before `end` stands.
    pub fn ack_state(&self, end: Offset) -> AckState {
        if self.high_watermark < end {
            return AckState::Waiting;
        }
        match self.check_min_insync() {
            Ok(()) => AckState::Acked,
            Err(not_enough) => AckState::NotEnoughReplicas(not_enough),
        }
    }

    /// The ISR that counts for `min.insync.replicas`: the smaller of the committed one and a
    /// proposal in flight (a removal is taken as done, an addition not yet).
    fn effective_isr_len(&self) -> u32 {
        let committed = self.isr.len();
        let len = self
            .pending
            .as_ref()
            .map_or(committed, |pending| pending.len().min(committed));
        u32::try_from(len).unwrap_or(u32::MAX)
    }

    fn keep_self_in_isr(&mut self) {
        if !self
            .isr
            .iter()
            .any(|member| member.replica == self.me.replica)
        {
            self.isr.push(self.me);
        }
    }

    /// The durable end that `member` has shown for its current data directory.
    fn durable_end_of(&self, member: &IsrMember) -> Offset {
        if member.replica == self.me.replica {
            return self.durable_end;
        }
        match self.followers.get(&member.replica) {
            Some(progress) if progress.storage == Some(member.storage) => progress.durable_end,
            _ => Offset(0),
        }
    }

    fn update_high_watermark(&mut self) -> bool {
        let pending = self.pending.iter().flatten();
        let lowest = self
            .isr
            .iter()
            .chain(pending)
            .map(|member| self.durable_end_of(member))
            .min()
            .unwrap_or(self.durable_end);
        if lowest > self.high_watermark {
            self.high_watermark = lowest;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: ReplicaId = ReplicaId(1);

    fn member(replica: u32) -> IsrMember {
        IsrMember {
            replica: ReplicaId(replica),
            storage: StorageId(u64::from(replica) * 100),
        }
    }

    fn leader(isr: &[u32], log_end: u64, high_watermark: u64) -> Leader {
        Leader::new(
            Millis(0),
            member(1),
            LeaderEpoch(3),
            vec![ReplicaId(1), ReplicaId(2), ReplicaId(3)],
            isr.iter().map(|&replica| member(replica)).collect(),
            Offset(log_end),
            Offset(log_end),
            Offset(high_watermark),
            LeaderConfig {
                min_insync: 2,
                lag_max_ms: 1_000,
            },
        )
    }

    fn fetch(leader: &mut Leader, now: i64, replica: u32, offset: u64, durable: u64) -> bool {
        leader
            .handle_fetch(
                Millis(now),
                ReplicaId(replica),
                member(replica).storage,
                1,
                Offset(offset),
                Offset(durable),
            )
            .expect("a valid fetch")
    }

    /// What a leader tells about itself is what it was made with and what it learned
    /// (mutation testing found the accessors unpinned).
    #[test]
    fn a_leader_tells_its_epoch_start_replicas_isr_progress_and_settings() {
        let mut leader = leader(&[1, 2], 10, 4);
        assert_eq!(leader.epoch_start(), Offset(10));
        assert_eq!(
            leader.replicas(),
            [ReplicaId(1), ReplicaId(2), ReplicaId(3)]
        );
        assert_eq!(leader.isr(), [member(1), member(2)]);
        assert_eq!(
            leader.config(),
            LeaderConfig {
                min_insync: 2,
                lag_max_ms: 1_000,
            }
        );
        assert_eq!(leader.progress(ReplicaId(3)).map(|p| p.storage), Some(None));
        assert!(leader.progress(ReplicaId(9)).is_none(), "not a replica");
        assert!(leader.pending_isr().is_none());
        // Replica 3 catches up: its progress is known, and its addition is proposed.
        leader.handle_appended(Offset(10));
        leader.handle_durable(Offset(10));
        fetch(&mut leader, 5, 3, 10, 10);
        let progress = leader.progress(ReplicaId(3)).expect("reported");
        assert_eq!(progress.log_end, Offset(10));
        assert_eq!(progress.durable_end, Offset(10));
        assert_eq!(progress.storage, Some(member(3).storage));
        let proposed = leader.poll_isr_change(Millis(5)).expect("an addition");
        assert_eq!(leader.pending_isr(), Some(&proposed[..]));
        assert!(proposed.contains(&member(3)));
    }

    /// A follower that always fetches from where the leader's log ended at its previous fetch
    /// is caught up as of that fetch (Kafka's rule), so it stays in the ISR however busy the
    /// leader is; a follower that stops fetching leaves it once `lag_max_ms` passed.
    #[test]
    fn a_follower_one_fetch_behind_a_busy_leader_stays_in_sync() {
        let mut leader = leader(&[1, 2, 3], 10, 10);
        leader.handle_durable(Offset(10));
        fetch(&mut leader, 0, 3, 10, 10);
        fetch(&mut leader, 0, 2, 10, 10);
        let mut end = 10;
        for now in [600, 1_200, 1_800] {
            end += 10;
            leader.handle_appended(Offset(end));
            leader.handle_durable(Offset(end));
            // Replica 2 fetches where the leader ended at its previous fetch.
            fetch(&mut leader, now, 2, end - 10, end - 10);
        }
        let proposed = leader
            .poll_isr_change(Millis(1_800))
            .expect("replica 3 lags");
        assert!(
            proposed.contains(&member(2)),
            "replica 2 kept up: {proposed:?}"
        );
        assert!(
            !proposed.contains(&member(3)),
            "replica 3 stopped: {proposed:?}"
        );
        // The proposal failed (another writer won): none is in flight, so it is proposed
        // again; a committed ISR without the leader still holds the leader.
        assert!(
            leader.poll_isr_change(Millis(1_800)).is_none(),
            "one at a time"
        );
        leader.handle_isr_change_failed();
        assert_eq!(leader.poll_isr_change(Millis(1_800)), Some(proposed));
        leader.handle_isr_changed(vec![member(2)]);
        assert!(leader.isr().contains(&member(1)), "{:?}", leader.isr());
        assert!(leader.pending_isr().is_none());
    }

    /// Progress reports count only for the data directory a fetch checked, never past the
    /// leader's log end; an ISR member whose follower now reports another data directory (a
    /// replaced disk) holds the high watermark where it was.
    #[test]
    fn progress_counts_only_for_the_checked_data_directory() {
        let mut leader = leader(&[1, 2, 3], 20, 4);
        leader.handle_durable(Offset(20));
        fetch(&mut leader, 1, 3, 20, 20);
        assert_eq!(
            leader.handle_progress(ReplicaId(2), member(2).storage, 1, Offset(30), Offset(30)),
            Err(ReplicaError::AboveLogEnd {
                offset: Offset(30),
                log_end: Offset(20)
            })
        );
        // Not fetched yet: a report changes nothing.
        assert_eq!(
            leader.handle_progress(ReplicaId(2), member(2).storage, 1, Offset(20), Offset(20)),
            Ok(false)
        );
        // Replica 2 comes back with a new disk: its fetch checks that directory, but the
        // ISR names the old one, so its durable end does not count.
        let moved = leader
            .handle_fetch(
                Millis(2),
                ReplicaId(2),
                StorageId(999),
                1,
                Offset(20),
                Offset(20),
            )
            .unwrap();
        assert!(!moved);
        assert_eq!(leader.high_watermark(), Offset(4));
        assert_eq!(
            leader.handle_progress(ReplicaId(2), StorageId(999), 1, Offset(15), Offset(15)),
            Ok(false),
            "below the leader's end, taken, but still not counted"
        );
        // With the old directory (as in the ISR), it counts.
        fetch(&mut leader, 3, 2, 20, 20);
        assert_eq!(leader.high_watermark(), Offset(20));
    }

    #[test]
    fn the_high_watermark_is_the_lowest_durable_end_of_the_isr() {
        let mut leader = leader(&[1, 2, 3], 10, 4);
        assert_eq!(leader.high_watermark(), Offset(4));
        assert!(!leader.is_ready(), "the new epoch starts at 10");
        leader.handle_appended(Offset(20));
        leader.handle_durable(Offset(20));
        assert!(
            !fetch(&mut leader, 1, 2, 15, 12),
            "replica 3 has not reported"
        );
        assert!(fetch(&mut leader, 2, 3, 20, 11));
        assert_eq!(leader.high_watermark(), Offset(11));
        assert!(leader.is_ready());
        // Durability is what counts, not the fetch offset.
        assert!(!fetch(&mut leader, 3, 3, 20, 11));
        assert!(leader
            .handle_progress(ReplicaId(3), member(3).storage, 1, Offset(20), Offset(20))
            .unwrap());
        assert_eq!(leader.high_watermark(), Offset(12));
        // A late, older report does not move it back.
        assert!(!fetch(&mut leader, 4, 2, 15, 5));
        assert_eq!(leader.high_watermark(), Offset(12));
        assert_eq!(leader.ack_state(Offset(12)), AckState::Acked);
        assert_eq!(leader.ack_state(Offset(13)), AckState::Waiting);
    }

    #[test]
    fn a_follower_outside_the_isr_does_not_hold_the_high_watermark() {
        let mut leader = leader(&[1, 2], 10, 10);
        leader.handle_appended(Offset(30));
        leader.handle_durable(Offset(30));
        fetch(&mut leader, 1, 2, 30, 30);
        assert_eq!(leader.high_watermark(), Offset(30));
        fetch(&mut leader, 1, 3, 0, 0);
        assert_eq!(leader.high_watermark(), Offset(30));
    }

    #[test]
    fn lagging_followers_are_proposed_for_removal_and_count_until_it_commits() {
        let mut leader = leader(&[1, 2, 3], 10, 10);
        leader.handle_appended(Offset(20));
        leader.handle_durable(Offset(20));
        fetch(&mut leader, 100, 2, 20, 20);
        fetch(&mut leader, 100, 3, 12, 12);
        assert_eq!(leader.high_watermark(), Offset(12));
        // Replica 3 asked for less than the leader's end at its previous answer (20).
        fetch(&mut leader, 900, 2, 20, 20);
        fetch(&mut leader, 900, 3, 14, 14);
        assert_eq!(
            leader.poll_isr_change(Millis(1_000)),
            None,
            "within the lag limit"
        );
        leader.handle_isr_change_failed();
        let proposal = leader.poll_isr_change(Millis(1_101)).expect("a removal");
        assert_eq!(proposal, vec![member(1), member(2)]);
        assert_eq!(
            leader.poll_isr_change(Millis(1_200)),
            None,
            "one change in flight"
        );
        // Until the removal commits, replica 3 still holds the high watermark…
        leader
            .handle_progress(ReplicaId(2), member(2).storage, 1, Offset(20), Offset(20))
            .unwrap();
        assert_eq!(leader.high_watermark(), Offset(14));
        // …but it no longer counts for min.insync.replicas.
        assert_eq!(leader.check_min_insync(), Ok(()));
        assert!(leader.handle_isr_changed(proposal));
        assert_eq!(leader.high_watermark(), Offset(20));
    }

    #[test]
    fn a_caught_up_follower_is_proposed_for_addition_and_counts_at_once() {
        let mut leader = leader(&[1, 2], 10, 10);
        leader.handle_appended(Offset(20));
        leader.handle_durable(Offset(20));
        fetch(&mut leader, 1, 2, 20, 20);
        assert_eq!(leader.high_watermark(), Offset(20));
        fetch(&mut leader, 2, 3, 15, 15);
        assert_eq!(
            leader.poll_isr_change(Millis(3)),
            None,
            "replica 3 is behind"
        );
        fetch(&mut leader, 4, 3, 20, 19);
        assert_eq!(
            leader.poll_isr_change(Millis(5)),
            None,
            "not yet durable to the HW"
        );
        fetch(&mut leader, 6, 3, 20, 20);
        let proposal = leader.poll_isr_change(Millis(7)).expect("an addition");
        assert_eq!(proposal, vec![member(1), member(2), member(3)]);
        // While the addition is in flight, replica 3 holds the high watermark back already.
        leader.handle_appended(Offset(30));
        leader.handle_durable(Offset(30));
        fetch(&mut leader, 8, 2, 30, 30);
        assert_eq!(leader.high_watermark(), Offset(20));
    }

    /// A reassignment changes the replicas within an epoch: an added replica is served and
    /// joins once caught up; a removed one is refused, leaves the ISR at the next proposal
    /// and never joins again.
    #[test]
    fn replicas_added_and_removed_within_an_epoch() {
        let mut leader = leader(&[1, 2, 3], 10, 10);
        leader.handle_replicas_changed(
            Millis(5),
            vec![ReplicaId(1), ReplicaId(2), ReplicaId(3), ReplicaId(4)],
        );
        assert_eq!(leader.replicas().len(), 4);
        assert!(leader.progress(ReplicaId(4)).is_some());
        fetch(&mut leader, 6, 2, 10, 10);
        fetch(&mut leader, 6, 3, 10, 10);
        fetch(&mut leader, 6, 4, 10, 10);
        let proposal = leader.poll_isr_change(Millis(7)).expect("an addition");
        assert_eq!(proposal, vec![member(1), member(2), member(3), member(4)]);
        leader.handle_isr_changed(proposal);
        // Replica 3 removed: refused, and proposed out of the ISR at once.
        leader.handle_replicas_changed(Millis(8), vec![ReplicaId(1), ReplicaId(2), ReplicaId(4)]);
        assert!(leader
            .handle_fetch(
                Millis(9),
                ReplicaId(3),
                member(3).storage,
                1,
                Offset(10),
                Offset(10)
            )
            .is_err());
        let proposal = leader.poll_isr_change(Millis(9)).expect("a removal");
        assert_eq!(proposal, vec![member(1), member(2), member(4)]);
        leader.handle_isr_changed(proposal);
        assert_eq!(leader.poll_isr_change(Millis(10)), None);
    }

    /// A follower whose log was cut or emptied fetches over a new link: what it reported over
    /// the old one (its durable end, a progress report arriving late) no longer counts, so
    /// it cannot hold up, or be counted for, records it no longer has (found by the
    /// simulator: a report from before a start-over let the high watermark pass it).
    #[test]
    fn reports_over_an_older_link_count_for_nothing() {
        // Replica 3 (in the ISR, silent) keeps the high watermark where it is.
        let mut leader = leader(&[1, 2, 3], 10, 10);
        leader.handle_appended(Offset(20));
        leader.handle_durable(Offset(20));
        let storage = member(2).storage;
        let fetch = |leader: &mut Leader, link, offset, durable| {
            leader
                .handle_fetch(
                    Millis(1),
                    ReplicaId(2),
                    storage,
                    link,
                    Offset(offset),
                    Offset(durable),
                )
                .unwrap()
        };
        fetch(&mut leader, 5, 15, 15);
        // The follower starts over (its log emptied) and fetches over link 6.
        fetch(&mut leader, 6, 10, 10);
        assert_eq!(
            leader.progress(ReplicaId(2)).unwrap().durable_end,
            Offset(10)
        );
        // A report and a fetch from link 5, arriving late: nothing.
        assert_eq!(
            leader.handle_progress(ReplicaId(2), storage, 5, Offset(20), Offset(20)),
            Ok(false)
        );
        assert!(!fetch(&mut leader, 5, 20, 20));
        assert_eq!(
            leader.progress(ReplicaId(2)).unwrap().durable_end,
            Offset(10)
        );
        assert_eq!(leader.high_watermark(), Offset(10));
        // Over link 6 it counts.
        leader
            .handle_progress(ReplicaId(2), storage, 6, Offset(20), Offset(20))
            .unwrap();
        assert_eq!(
            leader.progress(ReplicaId(2)).unwrap().durable_end,
            Offset(20)
        );
    }

    #[test]
    fn a_replaced_data_directory_leaves_the_isr_at_once() {
        let mut leader = leader(&[1, 2, 3], 10, 10);
        let wiped = StorageId(7);
        leader
            .handle_fetch(Millis(1), ReplicaId(3), wiped, 1, Offset(0), Offset(0))
            .unwrap();
        // Its empty log must not hold the high watermark as if it were the old directory.
        fetch(&mut leader, 1, 2, 10, 10);
        assert_eq!(leader.high_watermark(), Offset(10));
        assert_eq!(
            leader.poll_isr_change(Millis(2)),
            Some(vec![member(1), member(2)])
        );
    }

    #[test]
    fn min_insync_refuses_before_the_append_and_reports_after_it() {
        let mut leader = leader(&[1], 10, 10);
        assert_eq!(
            leader.check_min_insync(),
            Err(NotEnoughReplicas {
                in_sync: 1,
                min_insync: 2
            })
        );
        leader.handle_appended(Offset(11));
        leader.handle_durable(Offset(11));
        assert_eq!(
            leader.ack_state(Offset(11)),
            AckState::NotEnoughReplicas(NotEnoughReplicas {
                in_sync: 1,
                min_insync: 2
            })
        );
    }

    #[test]
    fn requests_of_other_epochs_and_strangers_are_refused() {
        let mut leader = leader(&[1, 2, 3], 10, 10);
        assert!(matches!(
            leader.check_epoch(LeaderEpoch(2)),
            Err(ReplicaError::FencedLeaderEpoch { .. })
        ));
        assert!(matches!(
            leader.check_epoch(LeaderEpoch(4)),
            Err(ReplicaError::UnknownLeaderEpoch { .. })
        ));
        assert_eq!(leader.check_epoch(LeaderEpoch(3)), Ok(()));
        assert_eq!(
            leader.handle_fetch(
                Millis(1),
                ReplicaId(9),
                StorageId(9),
                1,
                Offset(0),
                Offset(0)
            ),
            Err(ReplicaError::NotAssigned {
                replica: ReplicaId(9)
            })
        );
        assert_eq!(
            leader.handle_fetch(
                Millis(1),
                ReplicaId(2),
                StorageId(200),
                1,
                Offset(11),
                Offset(0)
            ),
            Err(ReplicaError::AboveLogEnd {
                offset: Offset(11),
                log_end: Offset(10)
            })
        );
        assert_eq!(ME, member(1).replica);
        // Errors name the replica (the operator reads them).
        assert_eq!(
            ReplicaError::NotAssigned {
                replica: ReplicaId(9)
            }
            .to_string(),
            "replica 9 is not assigned to this partition"
        );
    }
}
