//! Consumer groups for the native SDK: [`GroupConsumer`] reads one topic as a member of a
//! group, with the group's partitions split among its members, and commits how far it got;
//! plus the admin calls on groups ([`Client::list_groups`], [`Client::describe_group`],
//! [`Client::committed_offsets`], [`Client::commit_offsets`], [`Client::delete_group`]).
//!
//! The group protocol is Kafka's classic one (the node's `spate_core::group`): members join
//! with protocol type `spate`, and the coordinator itself assigns the partitions of such a
//! group (ranges of partitions over the members sorted by id, `spate_core::coordinator::
//! range_assignment`), so the application writes no assignor; every member gets its share at
//! the sync.
//!
//! Invariants:
//! - at-least-once: a record counts as processed once the application asks for the next one
//!   (or commits, or closes the consumer); only processed records are committed, so after a
//!   crash a record is read again only if it was handed out after the last commit;
//! - before a member gives up its partitions (a rebalance, `close`) it commits what it
//!   processed, so a graceful rebalance repeats nothing;
//! - a member never reads a partition outside the assignment of its current generation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use spate_proto::group::{decode_assignment, encode_assignment, PROTOCOL, PROTOCOL_TYPE};
use spate_proto::group::{CommitOffset, FetchedOffset, GroupInfo, JoinOp, MemberRef};
use spate_proto::{
    ErrorCode, ErrorDetail, GroupOp, GroupRequest, GroupResponse, OffsetSpec, OFFSETS_PARTITIONS,
    OFFSETS_TOPIC,
};
use tokio::sync::Notify;

use crate::client::{Client, ClientError};
use crate::consumer::{ConsumedRecord, Consumer, ConsumerConfig, OffsetReset, StartPosition};

/// Longest a SyncGroup may wait for the leader's assignment.
pub const SYNC_WAIT_MAX: Duration =
    Duration::from_millis(spate_proto::limits::GROUP_SYNC_WAIT_MS_MAX as u64);
/// Pause before retrying a group request refused for a passing reason, doubling up to
/// `GROUP_RETRY_MAX`.
pub const GROUP_RETRY_MIN: Duration = Duration::from_millis(50);
pub const GROUP_RETRY_MAX: Duration = Duration::from_secs(2);
/// Joins attempted in a row without getting an assignment before giving up.
pub const JOIN_ATTEMPTS_MAX: u32 = 100;

/// Settings of a [`GroupConsumer`].
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Removed from the group if not heard from this long (6 s to 30 min). [default: 10 s]
    pub session_timeout: Duration,
    /// How long a rebalance waits for members to rejoin. [default: 60 s]
    pub rebalance_timeout: Duration,
    /// How often the member tells the coordinator it is alive. [default: 1 s]
    pub heartbeat_interval: Duration,
    /// Commit what was processed this often; `None`: only on `commit`, rebalances and
    /// `close`. [default: 5 s]
    pub auto_commit_interval: Option<Duration>,
    /// Where a partition without a committed offset starts. [default: earliest]
    pub start: StartPosition,
    /// A committed offset outside the partition's records (retention removed them).
    /// [default: earliest]
    pub offset_reset: OffsetReset,
    /// How long a fetch waits for records. [default: 500 ms]
    pub max_wait: Duration,
    /// Kafka's `group.instance.id`: a static member keeps its partitions across restarts
    /// within the session timeout. [default: none]
    pub instance_id: Option<String>,
    /// Names the member in `spate group describe`. [default: `spate`]
    pub client_id: String,
    /// The application says which records are processed (`mark_processed`) instead of a
    /// record counting as processed when the next is asked for. [default: false]
    pub manual_processing: bool,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(1),
            auto_commit_interval: Some(Duration::from_secs(5)),
            start: StartPosition::Earliest,
            offset_reset: OffsetReset::Earliest,
            max_wait: Duration::from_millis(500),
            instance_id: None,
            client_id: "spate".into(),
            manual_processing: false,
        }
    }
}

/// What a rebalance did to this member's partitions, as `on_rebalance` hears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalance {
    /// These partitions are no longer this member's (their processed records are committed).
    Revoked(Vec<u32>),
    /// These partitions are this member's now.
    Assigned(Vec<u32>),
}

/// One partition of a group as `describe_group_offsets` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will read; `None` if it committed none.
    pub committed: Option<u64>,
    pub high_watermark: u64,
    /// High watermark minus the commit (`None` without a commit).
    pub lag: Option<u64>,
    /// The member the partition is assigned to, if any.
    pub member: Option<String>,
}

fn code(error: &ClientError) -> Option<ErrorCode> {
    error.code()
}

/// Retries a group request while it fails for a passing reason.
async fn retrying(
    client: &Client,
    request: impl Fn() -> GroupRequest,
) -> Result<GroupResponse, ClientError> {
    crate::client::retry_passing(
        "group request",
        JOIN_ATTEMPTS_MAX,
        GROUP_RETRY_MIN,
        GROUP_RETRY_MAX,
        || client.group(request()),
    )
    .await
}

fn unexpected(answer: &GroupResponse) -> ClientError {
    ClientError::Server(spate_proto::ErrorResponse::new(
        ErrorCode::Internal,
        format!("unexpected answer from the coordinator: {answer:?}"),
    ))
}

impl Client {
    /// Every consumer group (with members or committed offsets), sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>, ClientError> {
        let mut groups = Vec::new();
        for partition in 0..OFFSETS_PARTITIONS {
            let request = || GroupRequest {
                topic: OFFSETS_TOPIC.to_owned(),
                partition: spate_proto::PartitionId(partition),
                group: String::new(),
                op: GroupOp::List,
            };
            match retrying(self, request).await? {
                GroupResponse::Groups(found) => groups.extend(found),
                other => return Err(unexpected(&other)),
            }
        }
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(groups)
    }

    /// A group's state, protocol and members (state `Dead` if the group is unknown).
    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        match retrying(self, || GroupRequest::new(group, GroupOp::Describe)).await? {
            GroupResponse::Groups(mut found) if found.len() == 1 => Ok(found.remove(0)),
            other => Err(unexpected(&other)),
        }
    }

    /// The offsets `group` committed (all of them when `partitions` is `None`).
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<(String, u32)>>,
    ) -> Result<Vec<FetchedOffset>, ClientError> {
        match retrying(self, || {
            GroupRequest::new(group, GroupOp::FetchOffsets(partitions.clone()))
        })
        .await?
        {
            GroupResponse::Offsets(offsets) => Ok(offsets),
            other => Err(unexpected(&other)),
        }
    }

    /// Commits offsets for a group without members (an administrator's reset; a group with
    /// members refuses with `UnknownMemberId`). Answered once durable.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, u32, u64)>,
    ) -> Result<(), ClientError> {
        let offsets: Vec<CommitOffset> = offsets
            .into_iter()
            .map(|(topic, partition, offset)| CommitOffset {
                topic,
                partition,
                offset: i64::try_from(offset).unwrap_or(i64::MAX),
                leader_epoch: -1,
                metadata: String::new(),
            })
            .collect();
        let request = GroupRequest::new(
            group,
            GroupOp::Commit {
                member: MemberRef {
                    member_id: String::new(),
                    instance_id: None,
                    generation: -1,
                },
                offsets,
            },
        );
        // Not retried: a lost answer is reported (committing again is harmless, the caller
        // decides).
        match self.group(request).await? {
            GroupResponse::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a group's committed offsets; refused (`NonEmptyGroup`) while it has members.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        match retrying(self, || GroupRequest::new(group, GroupOp::Delete)).await? {
            GroupResponse::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Each committed partition of `group` (and every partition of the topics it commits
    /// for, or is assigned) with its high watermark and lag.
    pub async fn describe_group_offsets(
        &self,
        group: &str,
    ) -> Result<(GroupInfo, Vec<PartitionLag>), ClientError> {
        let info = self.describe_group(group).await?;
        let committed = self.committed_offsets(group, None).await?;
        let mut owners: BTreeMap<(String, u32), String> = BTreeMap::new();
        for member in &info.members {
            if let Some((topic, partitions)) = decode_assignment(&member.assignment) {
                for partition in partitions {
                    owners.insert((topic.clone(), partition), member.member_id.clone());
                }
            }
        }
        let mut topics: Vec<String> = committed.iter().map(|c| c.topic.clone()).collect();
        topics.extend(owners.keys().map(|(topic, _)| topic.clone()));
        topics.sort();
        topics.dedup();
        let mut rows = Vec::new();
        for topic in topics {
            let Ok(metadata) = self.topic(&topic).await else {
                continue;
            };
            for partition in 0..u32::try_from(metadata.partitions.len()).unwrap_or(0) {
                let high_watermark = self
                    .list_offsets(&topic, partition, OffsetSpec::Latest)
                    .await?
                    .offset;
                let offset = committed
                    .iter()
                    .find(|c| c.topic == topic && c.partition == partition)
                    .and_then(|c| u64::try_from(c.offset).ok());
                rows.push(PartitionLag {
                    member: owners.get(&(topic.clone(), partition)).cloned(),
                    topic: topic.clone(),
                    partition,
                    committed: offset,
                    high_watermark,
                    lag: offset.map(|offset| high_watermark.saturating_sub(offset)),
                });
            }
        }
        Ok((info, rows))
    }
}

/// What `on_rebalance` calls.
type Listener = Box<dyn FnMut(Rebalance) + Send>;

/// A member of a consumer group reading one topic (see the module documentation).
pub struct GroupConsumer {
    client: Client,
    group: String,
    topic: String,
    config: GroupConfig,
    member_id: String,
    generation: i32,
    assigned: Vec<u32>,
    consumer: Option<Consumer>,
    /// The next offset of each assigned partition whose records before it were processed.
    processed: BTreeMap<u32, u64>,
    /// What was last committed, per partition.
    committed: BTreeMap<u32, u64>,
    /// The record handed out last: processed once the application asks for the next.
    handed: Option<(u32, u64)>,
    last_commit: Instant,
    /// Set by the heartbeat task when the group rebalances (or dropped this member).
    rejoin: Arc<AtomicBool>,
    wake: Arc<Notify>,
    heartbeat: Option<tokio::task::AbortHandle>,
    /// In a mutex only so the consumer's futures are `Send` (it is never contended).
    on_rebalance: Option<std::sync::Mutex<Listener>>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.group)
            .field("topic", &self.topic)
            .field("member_id", &self.member_id)
            .field("generation", &self.generation)
            .field("assigned", &self.assigned)
            .finish_non_exhaustive()
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
    }
}

impl GroupConsumer {
    /// Joins `group` to read `topic`; returns once this member has its first assignment.
    pub async fn join(
        client: &Client,
        group: &str,
        topic: &str,
        config: GroupConfig,
    ) -> Result<GroupConsumer, ClientError> {
        // The topic must exist (its partition count is what the leader assigns).
        client.topic(topic).await?;
        let mut consumer = GroupConsumer {
            client: client.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            config,
            member_id: String::new(),
            generation: -1,
            assigned: Vec::new(),
            consumer: None,
            processed: BTreeMap::new(),
            committed: BTreeMap::new(),
            handed: None,
            last_commit: Instant::now(),
            rejoin: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(Notify::new()),
            heartbeat: None,
            on_rebalance: None,
        };
        consumer.rebalance().await?;
        Ok(consumer)
    }

    /// Calls `listener` after partitions are revoked and after new ones are assigned.
    pub fn on_rebalance(&mut self, listener: impl FnMut(Rebalance) + Send + 'static) {
        self.on_rebalance = Some(std::sync::Mutex::new(Box::new(listener)));
    }

    /// Records fetched and ready to be returned by `next` without waiting.
    pub fn buffered(&self) -> usize {
        self.consumer.as_ref().map_or(0, Consumer::buffered)
    }

    /// This member's partitions in the current generation.
    pub fn assignment(&self) -> &[u32] {
        &self.assigned
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    fn member(&self) -> MemberRef {
        MemberRef {
            member_id: self.member_id.clone(),
            instance_id: self.config.instance_id.clone(),
            generation: self.generation,
        }
    }

    fn tell(&mut self, change: Rebalance) {
        if let Some(listener) = self.on_rebalance.as_mut() {
            let listener = listener
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            listener(change);
        }
    }

    fn settle_handed(&mut self) {
        if let Some((partition, offset)) = self.handed.take() {
            if !self.config.manual_processing {
                self.processed.insert(partition, offset + 1);
            }
        }
    }

    /// With `manual_processing`: the records of `partition` up to `offset` are processed
    /// (the next commit covers them). A partition no longer assigned is ignored.
    pub fn mark_processed(&mut self, partition: u32, offset: u64) {
        if self.assigned.contains(&partition) {
            let next = self.processed.entry(partition).or_insert(0);
            *next = (*next).max(offset + 1);
        }
    }

    /// The next record of this member's partitions, waiting for one. Asking for it marks the
    /// record returned before as processed. Rebalances happen inside (committing first).
    pub async fn next(&mut self) -> Result<ConsumedRecord, ClientError> {
        loop {
            if let Some(record) = self.poll(Duration::from_secs(3600)).await? {
                return Ok(record);
            }
        }
    }

    /// Like [`GroupConsumer::next`], but gives up waiting for a record after `timeout`
    /// (`Ok(None)`). A rebalance that started is finished first, whatever the timeout.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Option<ConsumedRecord>, ClientError> {
        self.settle_handed();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(every) = self.config.auto_commit_interval {
                if self.last_commit.elapsed() >= every {
                    if let Err(error) = self.commit().await {
                        tracing::warn!(group = %self.group, "automatic commit failed: {error}");
                    }
                }
            }
            if self.rejoin.load(Ordering::Relaxed) {
                self.rebalance().await?;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let tick = deadline.min(now + Duration::from_secs(1));
            let wake = self.wake.clone();
            let Some(consumer) = self.consumer.as_mut() else {
                // No partitions in this generation: wait for the next rebalance.
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep_until(tick) => {}
                }
                continue;
            };
            // Waiting for records is the only step given up on: `Consumer::next` loses
            // nothing when dropped.
            tokio::select! {
                next = consumer.next() => match next.inspect_err(|_| {
                    // A partition's reader stopped: read the assignment again from the
                    // commits (after the error reached the application).
                    self.rejoin.store(true, Ordering::Relaxed);
                })? {
                    Some(record) => {
                        self.handed = Some((record.partition, record.offset));
                        return Ok(Some(record));
                    }
                    None => self.consumer = None,
                },
                () = wake.notified() => {}
                () = tokio::time::sleep_until(tick) => {}
            }
        }
    }

    /// Commits the processed records of this member's partitions (answered once durable).
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        self.last_commit = Instant::now();
        let offsets: Vec<CommitOffset> = self
            .processed
            .iter()
            .filter(|(partition, offset)| {
                self.assigned.contains(partition) && self.committed.get(partition) != Some(offset)
            })
            .map(|(partition, offset)| CommitOffset {
                topic: self.topic.clone(),
                partition: *partition,
                offset: i64::try_from(*offset).unwrap_or(i64::MAX),
                leader_epoch: -1,
                metadata: String::new(),
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        let request = GroupRequest::new(
            &self.group,
            GroupOp::Commit {
                member: self.member(),
                offsets: offsets.clone(),
            },
        );
        match self.client.group(request).await {
            Ok(_) => {
                for offset in offsets {
                    self.committed
                        .insert(offset.partition, u64::try_from(offset.offset).unwrap_or(0));
                }
                Ok(())
            }
            Err(error) => {
                if matches!(
                    code(&error),
                    Some(
                        ErrorCode::RebalanceInProgress
                            | ErrorCode::IllegalGeneration
                            | ErrorCode::UnknownMemberId
                    )
                ) {
                    self.rejoin.store(true, Ordering::Relaxed);
                }
                Err(error)
            }
        }
    }

    /// Commits what was processed (the record handed out last included) and leaves the
    /// group, so its partitions move to the other members at once.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.settle_handed();
        let committed = self.commit().await;
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        self.consumer = None;
        let leave = GroupRequest::new(
            &self.group,
            GroupOp::Leave(vec![(
                self.member_id.clone(),
                self.config.instance_id.clone(),
            )]),
        );
        let left = self.client.group(leave).await.map(|_| ());
        committed.and(left)
    }

    /// Gives up the current partitions (committing first), joins again and starts reading
    /// the new assignment from the committed offsets.
    async fn rebalance(&mut self) -> Result<(), ClientError> {
        if !self.assigned.is_empty() {
            if let Err(error) = self.commit().await {
                tracing::debug!(group = %self.group, "commit before rebalancing failed: {error}");
            }
            let revoked = std::mem::take(&mut self.assigned);
            self.tell(Rebalance::Revoked(revoked));
        }
        self.consumer = None;
        self.processed.clear();
        self.committed.clear();
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        // The flag stays set until this rebalance is done: one that is given up half-way
        // (an error, a dropped future) is started again by the next `poll`.
        self.rejoin.store(true, Ordering::Relaxed);
        let partitions = self.join_and_sync().await?;
        self.assigned = partitions.clone();
        let committed = if partitions.is_empty() {
            Vec::new()
        } else {
            let wanted = partitions
                .iter()
                .map(|partition| (self.topic.clone(), *partition))
                .collect();
            self.client
                .committed_offsets(&self.group, Some(wanted))
                .await?
        };
        let starts: Vec<(u32, StartPosition)> = partitions
            .iter()
            .map(|partition| {
                let found = committed
                    .iter()
                    .find(|c| c.partition == *partition)
                    .and_then(|c| u64::try_from(c.offset).ok());
                match found {
                    Some(offset) => {
                        self.committed.insert(*partition, offset);
                        (*partition, StartPosition::Offset(offset))
                    }
                    None => (*partition, self.config.start),
                }
            })
            .collect();
        if !starts.is_empty() {
            let config = ConsumerConfig {
                start: self.config.start,
                max_wait: self.config.max_wait,
                offset_reset: self.config.offset_reset,
                ..ConsumerConfig::default()
            };
            self.consumer =
                Some(Consumer::starting_at(&self.client, &self.topic, Some(starts), config).await?);
        }
        self.rejoin.store(false, Ordering::Relaxed);
        self.start_heartbeat();
        self.tell(Rebalance::Assigned(partitions));
        Ok(())
    }

    fn join_request(&self) -> GroupRequest {
        let millis = |duration: Duration| i32::try_from(duration.as_millis()).unwrap_or(i32::MAX);
        GroupRequest::new(
            &self.group,
            GroupOp::Join(JoinOp {
                member_id: self.member_id.clone(),
                instance_id: self.config.instance_id.clone(),
                client_id: self.config.client_id.clone(),
                session_timeout_ms: millis(self.config.session_timeout),
                rebalance_timeout_ms: millis(self.config.rebalance_timeout),
                protocol_type: PROTOCOL_TYPE.into(),
                protocols: vec![(PROTOCOL.into(), Bytes::from(self.topic.clone()))],
                require_known_member_id: true,
            }),
        )
    }

    /// Joins and syncs until this member has the assignment of a generation.
    async fn join_and_sync(&mut self) -> Result<Vec<u32>, ClientError> {
        let mut pause = GROUP_RETRY_MIN;
        for _ in 0..JOIN_ATTEMPTS_MAX {
            let (members, leader) = match self.client.group(self.join_request()).await {
                Ok(GroupResponse::Joined {
                    generation,
                    leader,
                    member_id,
                    members,
                    ..
                }) => {
                    self.generation = generation;
                    self.member_id = member_id;
                    (members, leader)
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(ClientError::Server(answer)) if answer.code == ErrorCode::MemberIdRequired => {
                    if let ErrorDetail::MemberId { member_id } = answer.detail {
                        self.member_id = member_id;
                    }
                    continue;
                }
                Err(error) => {
                    self.join_failed(error, &mut pause).await?;
                    continue;
                }
            };
            // The coordinator assigns the partitions of Spate's own groups (the leader's
            // SyncGroup carries nothing).
            let _ = (members, leader);
            let assignments = Vec::new();
            let sync = GroupRequest::new(
                &self.group,
                GroupOp::Sync {
                    member: self.member(),
                    assignments,
                },
            );
            match self.client.group(sync).await {
                Ok(GroupResponse::Synced { assignment, .. }) => {
                    return Ok(match decode_assignment(&assignment) {
                        Some((topic, partitions)) if topic == self.topic => partitions,
                        _ => Vec::new(),
                    });
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(error) => self.join_failed(error, &mut pause).await?,
            }
        }
        Err(ClientError::Server(spate_proto::ErrorResponse::new(
            ErrorCode::RebalanceInProgress,
            format!(
                "group {}: no assignment after {JOIN_ATTEMPTS_MAX} attempts to join",
                self.group
            ),
        )))
    }

    /// After a refused join or sync: whether to try again (after a pause) or give up.
    async fn join_failed(
        &mut self,
        error: ClientError,
        pause: &mut Duration,
    ) -> Result<(), ClientError> {
        match code(&error) {
            Some(ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration) => Ok(()),
            Some(ErrorCode::UnknownMemberId) => {
                self.member_id.clear();
                Ok(())
            }
            _ if error.is_retriable() => {
                tokio::time::sleep(*pause).await;
                *pause = (*pause * 2).min(GROUP_RETRY_MAX);
                Ok(())
            }
            _ => Err(error),
        }
    }

    fn start_heartbeat(&mut self) {
        let client = self.client.clone();
        let request = GroupRequest::new(&self.group, GroupOp::Heartbeat(self.member()));
        let rejoin = self.rejoin.clone();
        let wake = self.wake.clone();
        let interval = self.config.heartbeat_interval;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match client.group(request.clone()).await {
                    Ok(_) => {}
                    // The group rebalances: rejoin at the next poll, and keep the session
                    // alive until then (the rebalance timeout, not the session, bounds it).
                    Err(error) if code(&error) == Some(ErrorCode::RebalanceInProgress) => {
                        rejoin.store(true, Ordering::Relaxed);
                        wake.notify_one();
                    }
                    Err(error) if error.is_retriable() => {
                        tracing::debug!("heartbeat failed, retrying: {error}");
                    }
                    Err(error) => {
                        tracing::debug!("heartbeat: rejoining: {error}");
                        rejoin.store(true, Ordering::Relaxed);
                        wake.notify_one();
                        return;
                    }
                }
            }
        });
        self.heartbeat = Some(task.abort_handle());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_round_trip() {
        let bytes = encode_assignment("t", &[3, 4]);
        assert_eq!(
            decode_assignment(&bytes),
            Some(("t".to_owned(), vec![3, 4]))
        );
        assert_eq!(decode_assignment(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_assignment(&[]), None);
    }
}
