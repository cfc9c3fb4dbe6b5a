//! The consumer groups of one coordinator: one partition of the internal offsets topic, with
//! the groups that hash to it (their membership, [`Group`]) and their committed offsets
//! ([`OffsetStore`]). Pure: the shard that owns the partition appends the records this
//! returns to the partition's log (durably) and says when each append was acknowledged; the
//! offsets change only then, in append order. At recovery the shard replays the partition's
//! log into [`GroupCoordinator::replay`].
//!
//! Invariants:
//! - an append's records take effect (are fetched) only after the append was acknowledged
//!   and every append before it was settled, so the offsets seen are those of a prefix of the
//!   log, as a replay after `kill -9` would give;
//! - a group is kept in memory while it has members or committed offsets; an empty group
//!   without offsets is forgotten at the next tick;
//! - at most [`GROUPS_IN_MEMORY_MAX`] groups with members, and the offset limits of
//!   [`OffsetStore`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use thiserror::Error;

use crate::group::{
    DescribedMember, Group, GroupConfig, GroupError, GroupOutput, GroupState, JoinRequest, Joined,
    Reply, Synced, Ticket,
};
use crate::offsets::{
    CommitError, Committed, OffsetKey, OffsetRecord, OffsetStore, GROUP_ID_BYTES_MAX,
};
use crate::Millis;

/// Groups with members one coordinator keeps in memory.
pub const GROUPS_IN_MEMORY_MAX: usize = 10_000;
/// Appends of offset records waiting for their acknowledgement, per coordinator: a bound on
/// the records held before they take effect (commits beyond wait at the client: Busy).
pub const PENDING_APPENDS_MAX: usize = 1_024;

/// An offsets log is compacted only once it holds more than twice this many records beyond
/// its last snapshot (unless configured otherwise).
pub const SNAPSHOT_RECORDS_MIN_DEFAULT: u64 = 10_000;

/// Whether an offsets log that had `appended_since` records appended since its last snapshot
/// (or its start) should get a new one, with `live` offsets kept: when more than twice
/// max(live, `min`) were appended. The log then holds at most about three times that.
pub fn snapshot_due(live: u64, appended_since: u64, min: u64) -> bool {
    appended_since > 2 * live.max(min)
}

/// The range assignment: members sorted by id, each gets a contiguous run of partitions, the
/// first ones one more when they do not divide evenly.
pub fn range_assignment(members: &[String], partitions: u32) -> Vec<(String, Vec<u32>)> {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    let count = u32::try_from(sorted.len()).unwrap_or(u32::MAX).max(1);
    let (each, extra) = (partitions / count, partitions % count);
    let mut next = 0;
    sorted
        .into_iter()
        .enumerate()
        .map(|(index, member)| {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let take = each + u32::from(index < extra);
            let share = (next..next + take).collect();
            next += take;
            (member.clone(), share)
        })
        .collect()
}

/// Why a group request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("invalid group id: {0}")]
    InvalidGroupId(&'static str),
    #[error("this coordinator has {GROUPS_IN_MEMORY_MAX} groups with members, the limit")]
    TooManyGroups,
    #[error("group {0} does not exist")]
    GroupIdNotFound(String),
    #[error("group {0} has members; stop them first")]
    NonEmptyGroup(String),
    #[error("{PENDING_APPENDS_MAX} offset commits wait for the disk; retry")]
    Busy,
}

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    pub group: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`, or `Dead` for a group
    /// the coordinator does not know.
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

/// Kafka's name of a group state.
pub fn state_name(state: GroupState) -> &'static str {
    match state {
        GroupState::Empty => "Empty",
        GroupState::PreparingRebalance => "PreparingRebalance",
        GroupState::CompletingRebalance => "CompletingRebalance",
        GroupState::Stable => "Stable",
    }
}

/// An append of offset records, named by the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppendId(pub u64);

#[derive(Debug)]
struct Pending {
    id: AppendId,
    records: Vec<OffsetRecord>,
    /// `Some(true)` once acknowledged, `Some(false)` once failed.
    settled: Option<bool>,
}

/// The groups of one coordinator (see the module documentation).
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    nonce: u64,
    groups: BTreeMap<String, Group>,
    offsets: OffsetStore,
    pending: VecDeque<Pending>,
    next_append: u64,
    /// Groups created so far: each gets its own nonce (a group forgotten and created again
    /// never hands out a member id it handed out before).
    groups_created: u64,
    /// Answers taken out of groups about to be forgotten.
    outputs: VecDeque<GroupOutput>,
}

fn check_group_id(group: &str) -> Result<(), CoordinatorError> {
    if group.is_empty() {
        return Err(CoordinatorError::InvalidGroupId("empty"));
    }
    if group.len() > GROUP_ID_BYTES_MAX {
        return Err(CoordinatorError::InvalidGroupId("longer than 255 bytes"));
    }
    Ok(())
}

impl GroupCoordinator {
    /// `nonce` is random per start (member ids never repeat those handed out before).
    pub fn new(config: GroupConfig, nonce: u64) -> GroupCoordinator {
        GroupCoordinator {
            config,
            nonce,
            groups: BTreeMap::new(),
            offsets: OffsetStore::default(),
            pending: VecDeque::new(),
            next_append: 0,
            groups_created: 0,
            outputs: VecDeque::new(),
        }
    }

    /// Takes in one record of the log at recovery (in log order). A record that cannot be
    /// read is reported and skipped.
    pub fn replay(
        &mut self,
        record: &OffsetRecord,
    ) -> Result<(), crate::offsets::OffsetRecordError> {
        self.offsets.apply(record)
    }

    pub fn offsets(&self) -> &OffsetStore {
        &self.offsets
    }

    /// A group this coordinator has in memory.
    pub fn group(&self, group: &str) -> Option<&Group> {
        self.groups.get(group)
    }

    fn group_mut(&mut self, group: &str) -> Result<&mut Group, CoordinatorError> {
        check_group_id(group)?;
        if !self.groups.contains_key(group) {
            let with_members = self.groups.values().filter(|g| g.has_members()).count();
            if with_members >= GROUPS_IN_MEMORY_MAX {
                return Err(CoordinatorError::TooManyGroups);
            }
            // Member ids differ between groups, between lives of one group, and between
            // restarts.
            self.groups_created += 1;
            let nonce = self.nonce ^ self.groups_created.rotate_left(32);
            self.groups
                .insert(group.to_owned(), Group::new(group, self.config, nonce));
        }
        self.groups
            .get_mut(group)
            .ok_or(CoordinatorError::InvalidGroupId("vanished"))
    }

    fn unknown_member(member_id: &str) -> CoordinatorError {
        CoordinatorError::Group(GroupError::UnknownMemberId {
            member_id: member_id.to_owned(),
        })
    }

    /// A JoinGroup (the group is created by its first join).
    pub fn join(
        &mut self,
        now: Millis,
        group: &str,
        ticket: Ticket,
        request: JoinRequest,
    ) -> Result<Reply<Joined>, CoordinatorError> {
        Ok(self.group_mut(group)?.handle_join(now, ticket, request))
    }

    /// A SyncGroup.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        now: Millis,
        group: &str,
        ticket: Ticket,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Reply<Synced>, CoordinatorError> {
        let found = self
            .groups
            .get_mut(group)
            .ok_or_else(|| Self::unknown_member(member_id))?;
        Ok(found.handle_sync(now, ticket, member_id, instance_id, generation, assignments))
    }

    pub fn heartbeat(
        &mut self,
        now: Millis,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), CoordinatorError> {
        let found = self
            .groups
            .get_mut(group)
            .ok_or_else(|| Self::unknown_member(member_id))?;
        Ok(found.handle_heartbeat(now, member_id, instance_id, generation)?)
    }

    /// A LeaveGroup: one answer per leaving member.
    pub fn leave(
        &mut self,
        now: Millis,
        group: &str,
        leaving: &[(String, Option<String>)],
    ) -> Vec<Result<(), CoordinatorError>> {
        match self.groups.get_mut(group) {
            Some(found) => found
                .handle_leave(now, leaving)
                .into_iter()
                .map(|answer| answer.map_err(CoordinatorError::from))
                .collect(),
            None => leaving
                .iter()
                .map(|(member_id, _)| Err(Self::unknown_member(member_id)))
                .collect(),
        }
    }

    fn start_append(&mut self, records: Vec<OffsetRecord>) -> Result<AppendId, CoordinatorError> {
        if self.pending.len() >= PENDING_APPENDS_MAX {
            return Err(CoordinatorError::Busy);
        }
        self.next_append += 1;
        let id = AppendId(self.next_append);
        self.pending.push_back(Pending {
            id,
            records,
            settled: None,
        });
        Ok(id)
    }

    /// An OffsetCommit: the records to append (durably), or why not. The commit takes effect
    /// when [`GroupCoordinator::appended`] says the append was acknowledged.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &mut self,
        now: Millis,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        offsets: &[(String, u32, i64, i32, String)],
    ) -> Result<(AppendId, Vec<OffsetRecord>), CoordinatorError> {
        check_group_id(group)?;
        match self.groups.get_mut(group) {
            Some(found) => found.check_commit(now, member_id, instance_id, generation)?,
            // A group nobody has joined takes commits at generation -1 without a member id
            // (consumers that assign partitions themselves, admin tools).
            None if generation < 0 => {}
            None => {
                return Err(CoordinatorError::Group(GroupError::IllegalGeneration {
                    current: 0,
                    found: generation,
                }))
            }
        }
        let records = self.offsets.commit_records(group, offsets, now)?;
        let id = self.start_append(records.clone())?;
        Ok((id, records))
    }

    /// Says how an append ended; the records of every settled append at the front of the
    /// queue take effect (acknowledged ones) or are dropped (failed ones), in append order.
    pub fn appended(&mut self, id: AppendId, acknowledged: bool) {
        if let Some(pending) = self.pending.iter_mut().find(|pending| pending.id == id) {
            pending.settled = Some(acknowledged);
        }
        while let Some(front) = self.pending.front() {
            let Some(acknowledged) = front.settled else {
                break;
            };
            let Some(done) = self.pending.pop_front() else {
                break;
            };
            if acknowledged {
                for record in &done.records {
                    // The records were made by this store: they always read back.
                    let _ = self.offsets.apply(record);
                }
            }
        }
    }

    /// Whether an unsettled append holds records of `group`.
    fn pending_for(&self, group: &str) -> bool {
        self.pending.iter().any(|pending| {
            pending.settled.is_none()
                && pending.records.iter().any(|record| {
                    OffsetKey::decode(&record.key).is_ok_and(|key| key.group == group)
                })
        })
    }

    /// Appends not yet settled.
    pub fn pending_appends(&self) -> usize {
        self.pending.len()
    }

    /// An OffsetFetch: the committed offset of each partition (all of the group's when
    /// `partitions` is `None`).
    pub fn fetch(
        &self,
        group: &str,
        partitions: Option<&[(String, u32)]>,
    ) -> Vec<((String, u32), Option<Committed>)> {
        self.offsets.fetch(group, partitions)
    }

    /// The names of every group this coordinator knows: with members, or with committed
    /// offsets.
    fn group_names(&self) -> BTreeSet<&str> {
        self.groups
            .keys()
            .map(String::as_str)
            .chain(self.offsets.groups())
            .collect()
    }

    /// Every group this coordinator knows: with members, or with committed offsets.
    pub fn list(&self) -> Vec<DescribedGroup> {
        self.group_names()
            .into_iter()
            .map(|name| self.describe(name))
            .collect()
    }

    /// Every group this coordinator knows (with members, or with committed offsets), with
    /// its members' count and generation (0 without members in memory).
    pub fn group_summaries(&self) -> Vec<(&str, usize, i32)> {
        self.group_names()
            .into_iter()
            .map(|name| match self.groups.get(name) {
                Some(group) => (name, group.members().count(), group.generation()),
                None => (name, 0, 0),
            })
            .collect()
    }

    /// A DescribeGroups of one group (`Dead` when unknown).
    pub fn describe(&self, group: &str) -> DescribedGroup {
        match self.groups.get(group) {
            Some(found) => DescribedGroup {
                group: group.to_owned(),
                state: state_name(found.state()),
                protocol_type: found.protocol_type().unwrap_or_default().to_owned(),
                protocol: found.protocol().unwrap_or_default().to_owned(),
                members: found.describe(),
            },
            None => DescribedGroup {
                group: group.to_owned(),
                state: if !self.offsets.has_group(group) {
                    "Dead"
                } else {
                    "Empty"
                },
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
        }
    }

    fn has_members(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(Group::has_members)
    }

    /// Whether `group`'s offsets may be deleted now: not while it has members, nor while a
    /// commit of it is on its way (tombstones are made from the offsets in effect: the
    /// commit would outlive them); an unknown group is `GroupIdNotFound`.
    fn check_deletable(&self, group: &str) -> Result<(), CoordinatorError> {
        check_group_id(group)?;
        if self.has_members(group) {
            return Err(CoordinatorError::NonEmptyGroup(group.to_owned()));
        }
        if self.pending_for(group) {
            return Err(CoordinatorError::Busy);
        }
        if !self.groups.contains_key(group) && !self.offsets.has_group(group) {
            return Err(CoordinatorError::GroupIdNotFound(group.to_owned()));
        }
        Ok(())
    }

    /// DeleteGroups of one group: the tombstones of all its offsets to append; refused while
    /// it has members.
    pub fn delete(
        &mut self,
        group: &str,
    ) -> Result<(AppendId, Vec<OffsetRecord>), CoordinatorError> {
        self.check_deletable(group)?;
        let records = self.offsets.delete_records(group, None);
        let id = self.start_append(records.clone())?;
        self.groups.remove(group);
        Ok((id, records))
    }

    /// OffsetDelete (and offset resets' first step): tombstones of these partitions'
    /// offsets; refused while the group has members.
    pub fn delete_offsets(
        &mut self,
        group: &str,
        partitions: &[(String, u32)],
    ) -> Result<(AppendId, Vec<OffsetRecord>), CoordinatorError> {
        self.check_deletable(group)?;
        let records = self.offsets.delete_records(group, Some(partitions));
        let id = self.start_append(records.clone())?;
        Ok((id, records))
    }

    /// Offsets of groups without members committed `retention_ms` before `now` or longer:
    /// tombstones to append (none when there is nothing to expire, or appends are queued).
    pub fn expire(
        &mut self,
        now: Millis,
        retention_ms: i64,
    ) -> Option<(AppendId, Vec<OffsetRecord>)> {
        // Tombstones are made from the offsets in effect: wait until no commit is on its way
        // (one could be for an expiring key).
        if !self.pending.is_empty() {
            return None;
        }
        let groups = &self.groups;
        let records = self.offsets.expired_records(now, retention_ms, |group| {
            groups.get(group).is_some_and(Group::has_members)
        });
        if records.is_empty() {
            return None;
        }
        let id = self.start_append(records.clone()).ok()?;
        Some((id, records))
    }

    /// Every live offset as records, to append as a snapshot (see `OffsetStore`): the
    /// offsets in effect with every unsettled append applied after them, in order — what a
    /// replay of the log up to the snapshot gives (an unsettled append is in the log already;
    /// should it fail, the partition is fenced and everything after it fails too).
    pub fn snapshot(&mut self) -> Option<(AppendId, Vec<OffsetRecord>)> {
        let records = if self.pending.is_empty() {
            self.offsets.snapshot_records()
        } else {
            let mut ahead = self.offsets.clone();
            for pending in &self.pending {
                if pending.settled != Some(false) {
                    for record in &pending.records {
                        let _ = ahead.apply(record);
                    }
                }
            }
            ahead.snapshot_records()
        };
        let id = self.start_append(records.clone()).ok()?;
        Some((id, records))
    }

    /// Lets time pass for every group; forgets empty groups without offsets.
    pub fn tick(&mut self, now: Millis) {
        for group in self.groups.values_mut() {
            group.handle_tick(now);
            while let Some(output) = group.poll_output() {
                self.outputs.push_back(output);
            }
        }
        // An empty group is kept while it has offsets (DescribeGroups still shows its
        // protocol type, as Kafka does), and forgotten with them.
        let offsets = &self.offsets;
        self.groups.retain(|id, group| {
            group.has_members() || group.state() != GroupState::Empty || offsets.has_group(id)
        });
    }

    /// When [`GroupCoordinator::tick`] must run next, if ever.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.groups.values().filter_map(Group::poll_timeout).min()
    }

    /// The next answer to a JoinGroup or SyncGroup that waited.
    pub fn poll_output(&mut self) -> Option<GroupOutput> {
        if let Some(output) = self.outputs.pop_front() {
            return Some(output);
        }
        self.groups.values_mut().find_map(Group::poll_output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::SESSION_TIMEOUT_MS_MAX;

    fn join(member_id: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_owned(),
            group_instance_id: None,
            client_id: "c".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    fn offsets(offset: i64) -> Vec<(String, u32, i64, i32, String)> {
        vec![("t".into(), 0, offset, -1, String::new())]
    }

    #[test]
    fn ranges_cover_every_partition_once_in_member_order() {
        let members = vec!["b".to_owned(), "a".to_owned(), "c".to_owned()];
        assert_eq!(
            range_assignment(&members, 8),
            vec![
                ("a".to_owned(), vec![0, 1, 2]),
                ("b".to_owned(), vec![3, 4, 5]),
                ("c".to_owned(), vec![6, 7]),
            ]
        );
        assert_eq!(range_assignment(&members, 1)[2].1, Vec::<u32>::new());
        assert!(range_assignment(&[], 4).is_empty());
    }

    #[test]
    fn snapshots_are_due_past_twice_the_live_state() {
        assert!(!snapshot_due(10, 200, 100));
        assert!(snapshot_due(10, 201, 100));
        assert!(!snapshot_due(1_000, 2_000, 100));
        assert!(snapshot_due(1_000, 2_001, 100));
    }

    #[test]
    fn a_commit_takes_effect_when_acknowledged_in_append_order() {
        let mut coordinator = GroupCoordinator::new(GroupConfig::default(), 7);
        let (first, _) = coordinator
            .commit(Millis(1), "g", "", None, -1, &offsets(10))
            .unwrap();
        let (second, _) = coordinator
            .commit(Millis(2), "g", "", None, -1, &offsets(20))
            .unwrap();
        assert_eq!(coordinator.fetch("g", None), vec![]);
        coordinator.appended(second, true);
        // The second waits for the first.
        assert_eq!(coordinator.fetch("g", None), vec![]);
        coordinator.appended(first, true);
        let fetched = coordinator.fetch("g", None);
        assert_eq!(fetched[0].1.as_ref().unwrap().offset, 20);
        // A failed append changes nothing.
        let (third, _) = coordinator
            .commit(Millis(3), "g", "", None, -1, &offsets(30))
            .unwrap();
        coordinator.appended(third, false);
        assert_eq!(
            coordinator.fetch("g", None)[0].1.as_ref().unwrap().offset,
            20
        );
        assert_eq!(coordinator.pending_appends(), 0);
    }

    #[test]
    fn members_commit_by_generation_and_groups_with_members_cannot_be_deleted() {
        let mut coordinator = GroupCoordinator::new(GroupConfig::default(), 7);
        let Ok(Reply::Now(Err(GroupError::MemberIdRequired { member_id }))) =
            coordinator.join(Millis(0), "g", Ticket(1), join(""))
        else {
            panic!("member id required first");
        };
        assert!(matches!(
            coordinator.join(Millis(0), "g", Ticket(2), join(&member_id)),
            Ok(Reply::Later)
        ));
        coordinator.tick(Millis(3_000));
        let Some(GroupOutput::Join {
            answer: Ok(joined), ..
        }) = coordinator.poll_output()
        else {
            panic!("the join phase ended");
        };
        assert_eq!(joined.generation, 1);
        assert!(matches!(
            coordinator.commit(Millis(3_001), "g", &member_id, None, 0, &offsets(1)),
            Err(CoordinatorError::Group(
                GroupError::IllegalGeneration { .. }
            ))
        ));
        // While the leader's assignment is awaited, commits wait too.
        assert_eq!(coordinator.describe("g").state, "CompletingRebalance");
        assert!(matches!(
            coordinator.commit(Millis(3_001), "g", &member_id, None, 1, &offsets(1)),
            Err(CoordinatorError::Group(GroupError::RebalanceInProgress))
        ));
        let assignment = vec![(member_id.clone(), Bytes::from_static(b"a"))];
        let synced = coordinator.sync(
            Millis(3_001),
            "g",
            Ticket(3),
            &member_id,
            None,
            1,
            assignment,
        );
        match synced {
            Ok(Reply::Now(Ok(_))) => {}
            Ok(Reply::Later) => assert!(matches!(
                coordinator.poll_output(),
                Some(GroupOutput::Sync { answer: Ok(_), .. })
            )),
            other => panic!("sync refused: {other:?}"),
        }
        assert!(coordinator
            .commit(Millis(3_001), "g", &member_id, None, 1, &offsets(1))
            .is_ok());
        assert!(matches!(
            coordinator.delete("g"),
            Err(CoordinatorError::NonEmptyGroup(_))
        ));
        assert_eq!(
            coordinator.describe("g").members[0].assignment,
            Bytes::from_static(b"a")
        );
        assert_eq!(coordinator.list().len(), 1);
        assert_eq!(coordinator.describe("other").state, "Dead");
        // Leaving empties the group; the tick forgets it, its offsets stay.
        let left = coordinator.leave(Millis(3_002), "g", &[(member_id, None)]);
        assert!(left[0].is_ok());
        coordinator.appended(AppendId(1), true);
        coordinator.tick(Millis(3_003));
        assert_eq!(coordinator.describe("g").state, "Empty");
        let (_, tombstones) = coordinator.delete("g").unwrap();
        assert_eq!(tombstones.len(), 1);
        assert!(matches!(
            coordinator.delete(""),
            Err(CoordinatorError::InvalidGroupId(_))
        ));
    }

    fn member_id_required(coordinator: &mut GroupCoordinator, group: &str) -> String {
        match coordinator.join(Millis(0), group, Ticket(1), join("")) {
            Ok(Reply::Now(Err(GroupError::MemberIdRequired { member_id }))) => member_id,
            other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
        }
    }

    /// Mutation testing found these rules unpinned (docs/reliability.md).
    #[test]
    fn ranges_give_the_remainder_to_the_first_members() {
        let members = vec!["b".to_owned(), "a".to_owned()];
        assert_eq!(
            range_assignment(&members, 5),
            vec![
                ("a".to_owned(), vec![0, 1, 2]),
                ("b".to_owned(), vec![3, 4])
            ]
        );
    }

    #[test]
    fn group_ids_are_one_to_255_bytes() {
        let mut coordinator = GroupCoordinator::new(GroupConfig::default(), 7);
        let longest = "g".repeat(GROUP_ID_BYTES_MAX);
        member_id_required(&mut coordinator, &longest);
        assert_eq!(
            coordinator.group(&longest).map(Group::id),
            Some(longest.as_str())
        );
        let too_long = "g".repeat(GROUP_ID_BYTES_MAX + 1);
        assert!(matches!(
            coordinator.join(Millis(0), &too_long, Ticket(2), join("")),
            Err(CoordinatorError::InvalidGroupId(_))
        ));
        assert!(matches!(
            coordinator.commit(Millis(0), &too_long, "", None, -1, &offsets(1)),
            Err(CoordinatorError::InvalidGroupId(_))
        ));
    }

    /// Member ids differ between groups (and lives of one group) whatever bits the
    /// coordinator's nonce has.
    #[test]
    fn member_ids_differ_between_groups() {
        for nonce in [7, 0xffff_ffff, u64::MAX, 1 << 40] {
            let mut coordinator = GroupCoordinator::new(GroupConfig::default(), nonce);
            let first = member_id_required(&mut coordinator, "g");
            let second = member_id_required(&mut coordinator, "h");
            let third = member_id_required(&mut coordinator, "i");
            assert_ne!(first, second, "nonce {nonce:#x}");
            assert_ne!(second, third, "nonce {nonce:#x}");
            assert_ne!(first, third, "nonce {nonce:#x}");
        }
    }

    #[test]
    fn session_timeouts_up_to_thirty_minutes_are_taken() {
        let mut coordinator = GroupCoordinator::new(GroupConfig::default(), 7);
        let member_id = member_id_required(&mut coordinator, "g");
        let mut request = join(&member_id);
        request.session_timeout_ms = SESSION_TIMEOUT_MS_MAX + 1;
        assert!(matches!(
            coordinator.join(Millis(0), "g", Ticket(2), request.clone()),
            Ok(Reply::Now(Err(GroupError::InvalidSessionTimeout { .. })))
        ));
        request.session_timeout_ms = 30 * 60 * 1000;
        assert!(matches!(
            coordinator.join(Millis(0), "g", Ticket(3), request),
            Ok(Reply::Later)
        ));
        // The join phase ends after the initial delay: the coordinator asks for a tick then.
        let due = coordinator.poll_timeout().expect("a deadline");
        assert!(due > Millis(0) && due <= Millis(3_000), "{due:?}");
    }

    #[test]
    fn heartbeats_and_commits_need_a_known_group_or_generation_minus_one() {
        let mut coordinator = GroupCoordinator::new(GroupConfig::default(), 7);
        assert!(matches!(
            coordinator.heartbeat(Millis(0), "g", "m", None, 1),
            Err(CoordinatorError::Group(GroupError::UnknownMemberId { .. }))
        ));
        assert!(matches!(
            coordinator.commit(Millis(0), "g", "m", None, 0, &offsets(1)),
            Err(CoordinatorError::Group(
                GroupError::IllegalGeneration { .. }
            ))
        ));
        assert!(coordinator
            .commit(Millis(0), "g", "", None, -1, &offsets(1))
            .is_ok());
        assert_eq!(coordinator.pending_appends(), 1);
    }

    #[test]
    fn offsets_are_deletable_unless_a_commit_of_the_group_is_on_its_way() {
        let mut coordinator = GroupCoordinator::new(GroupConfig::default(), 7);
        let (id, _) = coordinator
            .commit(Millis(1), "g", "", None, -1, &offsets(10))
            .unwrap();
        assert!(matches!(
            coordinator.delete("g"),
            Err(CoordinatorError::Busy)
        ));
        coordinator.appended(id, true);
        assert!(coordinator.offsets().has_group("g"));
        // A commit of another group on its way does not hold "g" back.
        let (other, _) = coordinator
            .commit(Millis(2), "x", "", None, -1, &offsets(5))
            .unwrap();
        let (_, tombstones) = coordinator.delete_offsets("g", &[("t".into(), 0)]).unwrap();
        assert_eq!(tombstones.len(), 1);
        coordinator.appended(other, true);
        // A group known only by its offsets can be deleted; one known nowhere cannot.
        assert!(coordinator.group("x").is_none());
        assert!(coordinator.delete("x").is_ok());
        assert!(matches!(
            coordinator.delete("nowhere"),
            Err(CoordinatorError::GroupIdNotFound(_))
        ));
    }

    #[test]
    fn offsets_expire_once_nothing_is_on_its_way() {
        let mut coordinator = GroupCoordinator::new(GroupConfig::default(), 7);
        let (id, _) = coordinator
            .commit(Millis(1), "g", "", None, -1, &offsets(10))
            .unwrap();
        assert_eq!(coordinator.expire(Millis(10_000), 100), None, "on its way");
        coordinator.appended(id, true);
        assert_eq!(coordinator.expire(Millis(50), 100), None, "not old enough");
        let (_, tombstones) = coordinator.expire(Millis(10_000), 100).expect("expired");
        assert_eq!(tombstones.len(), 1);
    }

    #[test]
    fn a_tick_forgets_only_empty_groups_without_offsets() {
        let mut coordinator = GroupCoordinator::new(GroupConfig::default(), 7);
        // "pending" has a member id handed out, nobody joined with it: it is forgotten once
        // that member id lapses.
        member_id_required(&mut coordinator, "pending");
        // "joined" has a member in its join phase.
        let member_id = member_id_required(&mut coordinator, "joined");
        assert!(matches!(
            coordinator.join(Millis(0), "joined", Ticket(2), join(&member_id)),
            Ok(Reply::Later)
        ));
        // "committed" has offsets and no members.
        let (id, _) = coordinator
            .commit(Millis(0), "committed", "", None, -1, &offsets(3))
            .unwrap();
        coordinator.appended(id, true);
        member_id_required(&mut coordinator, "committed");
        // A member id handed out keeps its group until it lapses.
        coordinator.tick(Millis(1_000));
        assert!(coordinator.group("pending").is_some());
        coordinator.tick(Millis(5_000));
        while coordinator.poll_output().is_some() {}
        coordinator.tick(Millis(9_000));
        assert!(coordinator.group("joined").is_some());
        assert!(coordinator.group("committed").is_some());
        coordinator.tick(Millis(60_000));
        assert!(coordinator.group("pending").is_none());
        assert!(coordinator.group("committed").is_some());
    }
}
