//! The shell of a group coordinator: one per partition of the offsets topic, set up at the
//! first group request to it. It replays the partition's log into a
//! [`GroupCoordinator`] (answering `CoordinatorLoadInProgress` until done), answers group
//! requests from it, appends the offset records it makes to the partition with `fsync` and
//! tells it when they are acknowledged, parks JoinGroup and SyncGroup answers until the state
//! machine gives them, and drives its timers. The behaviour is in `spate_core::coordinator`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use spate_core::coordinator::{
    range_assignment, snapshot_due, AppendId, CoordinatorError, DescribedGroup, GroupCoordinator,
};
use spate_core::group::{GroupConfig, GroupError, GroupOutput, JoinRequest, Reply, Ticket};
use spate_core::offsets::OffsetRecord;
use spate_format::batch::{BatchBuilder, Record};
use spate_format::Offset;
use spate_proto::group::{
    encode_assignment, group_partition, FetchedOffset, GroupInfo, JoinedMember, MemberInfo,
    OFFSETS_TOPIC, PROTOCOL_TYPE,
};
use spate_proto::{
    ApiKey, AutoCreateTopicRequest, Durability, ErrorCode, ErrorDetail, ErrorResponse, GroupOp,
    GroupRequest, GroupResponse, ProduceRequest, Request, Response,
};

use super::{error, Shard};
use crate::partition::{now, Partition};

/// Segment size of the offsets topic's partitions: small, so that snapshots let old
/// segments go soon.
pub(crate) const OFFSETS_SEGMENT_BYTES: u64 = 16 << 20;
/// How often a coordinator lets time pass for its groups (sessions are seconds long).
const TICK: Duration = Duration::from_millis(100);
/// Bytes of offset records per appended batch (a batch is at most 1 MiB).
const BATCH_BYTES: usize = 256 << 10;
/// How often a coordinator of a new leader looks whether its partition's records are
/// committed (its high watermark reached the epoch's start).
const READY_CHECK: Duration = Duration::from_millis(20);
/// Pause before a failed load of the offsets is tried again.
const LOAD_RETRY: Duration = Duration::from_secs(1);
/// Parked JoinGroup and SyncGroup answers per coordinator (more: Busy). They hold no
/// connection's in-flight slot, so this bounds them instead.
pub(super) const PARKED_MAX: usize = 10_000;
/// Largest group answer: a larger one (a leader's JoinGroup answer of many members with large
/// metadata, an OffsetFetch of a huge group) is refused rather than sent, as it would not
/// fit a response frame.
const ANSWER_BYTES_MAX: usize = spate_proto::limits::RESPONSE_SIZE_MAX as usize - (64 << 10);
/// Bytes a replay reads per step.
const REPLAY_STEP_BYTES: u32 = 1 << 20;

type Answer = Result<GroupResponse, ErrorResponse>;

enum Load {
    Loading,
    Ready(GroupCoordinator),
    Failed(String),
    /// Its partition closed or its leadership moved: the groups are another coordinator's.
    Moved,
}

/// One partition's groups (see the module documentation).
pub struct Coordinator {
    /// The leadership of its partition it serves (`Shard::term`): a coordinator stops when
    /// its node no longer leads that leadership, and the next leadership loads anew.
    term: u64,
    state: RefCell<Load>,
    /// Parked JoinGroup and SyncGroup requests.
    waiting: RefCell<HashMap<Ticket, LocalSender<Answer>>>,
    next_ticket: Cell<u64>,
    /// The log offset where the live offsets were last written out whole (a snapshot).
    snapshot_at: Cell<u64>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Adds the groups this coordinator serves to `out` (metrics); nothing while it loads.
    pub fn sample(&self, out: &mut Vec<crate::metrics::GroupSample>) {
        let state = self.state.borrow();
        let Load::Ready(coordinator) = &*state else {
            return;
        };
        for (group, members, generation) in coordinator.group_summaries() {
            out.push(crate::metrics::GroupSample {
                group: group.to_owned(),
                members: members as u64,
                generation: i64::from(generation),
                committed: coordinator
                    .offsets()
                    .committed(group)
                    .map(|(topic, partition, committed)| {
                        (topic.to_owned(), partition, committed.offset)
                    })
                    .collect(),
            });
        }
    }
}

fn refusal(refused: CoordinatorError) -> ErrorResponse {
    let message = refused.to_string();
    let code = match refused {
        CoordinatorError::Group(group) => match group {
            GroupError::MemberIdRequired { member_id } => {
                return error(ErrorCode::MemberIdRequired, message)
                    .with_detail(ErrorDetail::MemberId { member_id })
            }
            GroupError::UnknownMemberId { .. } => ErrorCode::UnknownMemberId,
            GroupError::IllegalGeneration { .. } => ErrorCode::IllegalGeneration,
            GroupError::RebalanceInProgress => ErrorCode::RebalanceInProgress,
            GroupError::InconsistentGroupProtocol => ErrorCode::InconsistentGroupProtocol,
            GroupError::GroupMaxSizeReached { .. } => ErrorCode::GroupMaxSizeReached,
            GroupError::InvalidSessionTimeout { .. } => ErrorCode::InvalidSessionTimeout,
            GroupError::FencedInstanceId { .. } => ErrorCode::FencedInstanceId,
            GroupError::InvalidRequest(_) => ErrorCode::InvalidRequest,
        },
        CoordinatorError::Commit(_) => ErrorCode::InvalidRequest,
        CoordinatorError::InvalidGroupId(_) => ErrorCode::InvalidGroupId,
        CoordinatorError::TooManyGroups | CoordinatorError::Busy => ErrorCode::Busy,
        CoordinatorError::GroupIdNotFound(_) => ErrorCode::GroupIdNotFound,
        CoordinatorError::NonEmptyGroup(_) => ErrorCode::NonEmptyGroup,
    };
    error(code, message)
}

fn group_info(described: DescribedGroup, with_members: bool) -> GroupInfo {
    GroupInfo {
        group: described.group,
        state: described.state.to_owned(),
        protocol_type: described.protocol_type,
        protocol: described.protocol,
        members: if with_members {
            described
                .members
                .into_iter()
                .map(|member| MemberInfo {
                    member_id: member.member_id,
                    instance_id: member.group_instance_id,
                    client_id: member.client_id,
                    metadata: member.metadata,
                    assignment: member.assignment,
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn answer_of(output: GroupOutput) -> (Ticket, Answer) {
    match output {
        GroupOutput::Join { ticket, answer } => (
            ticket,
            answer
                .map(|joined| GroupResponse::Joined {
                    generation: joined.generation,
                    protocol_type: joined.protocol_type,
                    protocol: joined.protocol,
                    leader: joined.leader,
                    member_id: joined.member_id,
                    members: joined
                        .members
                        .into_iter()
                        .map(|member| JoinedMember {
                            member_id: member.member_id,
                            instance_id: member.group_instance_id,
                            metadata: member.metadata,
                        })
                        .collect(),
                })
                .map_err(|refused| refusal(refused.into())),
        ),
        GroupOutput::Sync { ticket, answer } => (
            ticket,
            answer
                .map(|synced| GroupResponse::Synced {
                    protocol_type: synced.protocol_type,
                    protocol: synced.protocol,
                    assignment: synced.assignment,
                })
                .map_err(|refused| refusal(refused.into())),
        ),
    }
}

/// The assignment of a group of Spate's own consumers (protocol type `spate`), made when its
/// leader syncs: per topic its members read (their metadata), ranges of its partitions over
/// them (`range_assignment`); a member reading an unknown topic gets nothing. `None` for
/// other groups (their leader's assignment stands) and for followers.
fn spate_assignments(
    group: &spate_core::group::Group,
    member_id: &str,
    metadata: &crate::metadata::Metadata,
) -> Option<Vec<(String, Bytes)>> {
    if group.protocol_type() != Some(PROTOCOL_TYPE) || group.leader() != Some(member_id) {
        return None;
    }
    let mut readers: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for member in group.describe() {
        let topic = String::from_utf8_lossy(&member.metadata).into_owned();
        readers.entry(topic).or_default().push(member.member_id);
    }
    let mut assignments = Vec::new();
    for (topic, members) in readers {
        let partitions = metadata
            .topics
            .get(&topic)
            .map_or(0, |known| u32::try_from(known.shards.len()).unwrap_or(0));
        for (member, share) in range_assignment(&members, partitions) {
            assignments.push((member, encode_assignment(&topic, &share)));
        }
    }
    Some(assignments)
}

/// Offset records as record batches of at most about `BATCH_BYTES` each.
fn batches_of(records: &[OffsetRecord], timestamp: i64) -> Result<Vec<Bytes>, ErrorResponse> {
    let mut batches = Vec::new();
    let mut builder = BatchBuilder::new();
    let mut bytes = 0;
    for record in records {
        if bytes >= BATCH_BYTES {
            let full = std::mem::replace(&mut builder, BatchBuilder::new());
            batches.push(Bytes::from(full.finish().map_err(|problem| {
                error(ErrorCode::Internal, format!("offset batch: {problem}"))
            })?));
            bytes = 0;
        }
        builder
            .push(&Record {
                timestamp,
                key: Some(&record.key),
                value: record.value.as_deref(),
                headers: &[],
            })
            .map_err(|problem| {
                error(
                    ErrorCode::InvalidRequest,
                    format!("offset record: {problem}"),
                )
            })?;
        bytes += record.key.len() + record.value.as_ref().map_or(0, Bytes::len) + 16;
    }
    if !builder.is_empty() {
        batches.push(Bytes::from(builder.finish().map_err(|problem| {
            error(ErrorCode::Internal, format!("offset batch: {problem}"))
        })?));
    }
    Ok(batches)
}

impl Coordinator {
    fn ticket(&self) -> Ticket {
        let next = self.next_ticket.get() + 1;
        self.next_ticket.set(next);
        Ticket(next)
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut GroupCoordinator) -> Result<R, ErrorResponse>,
    ) -> Result<R, ErrorResponse> {
        match &mut *self.state.borrow_mut() {
            Load::Ready(coordinator) => f(coordinator),
            Load::Loading => Err(error(
                ErrorCode::CoordinatorLoadInProgress,
                "the group coordinator is loading its offsets; retry",
            )),
            Load::Failed(why) => Err(error(
                ErrorCode::Storage,
                format!("the group coordinator could not load its offsets: {why}"),
            )),
            Load::Moved => Err(error(
                ErrorCode::NotLeaderOrFollower,
                "the group coordinator moved (its partition closed or is led elsewhere)",
            )),
        }
    }

    /// Sends the answers the state machine has ready to their parked requests.
    fn deliver(&self) {
        let outputs: Vec<GroupOutput> = match &mut *self.state.borrow_mut() {
            Load::Ready(coordinator) => std::iter::from_fn(|| coordinator.poll_output()).collect(),
            _ => return,
        };
        for output in outputs {
            let (ticket, answer) = answer_of(output);
            if let Some(reply) = self.waiting.borrow_mut().remove(&ticket) {
                let _ = reply.try_send(answer);
            }
        }
    }

    fn park(&self, ticket: Ticket) -> LocalReceiver<Answer> {
        let (reply, receiver) = local_channel::new_bounded(1);
        self.waiting.borrow_mut().insert(ticket, reply);
        receiver
    }

    /// Whether another request may park.
    fn may_park(&self) -> Result<(), ErrorResponse> {
        if self.waiting.borrow().len() >= PARKED_MAX {
            return Err(error(
                ErrorCode::Busy,
                format!("{PARKED_MAX} group requests wait at this coordinator; retry"),
            ));
        }
        Ok(())
    }

    fn settle(&self, id: AppendId, acknowledged: bool) {
        if let Load::Ready(coordinator) = &mut *self.state.borrow_mut() {
            coordinator.appended(id, acknowledged);
        }
    }
}

/// A shard's request for its cluster's offsets topic, made at the first group request that
/// finds no such topic.
#[derive(Debug, Default)]
pub(crate) struct OffsetsCreation {
    in_flight: bool,
    /// Why the last request failed, told to clients until one succeeds.
    refused: Option<String>,
}

/// What a group request gets: its answer now, or a wait for it.
pub(super) enum GroupAnswer {
    Now(Answer),
    Parked(LocalReceiver<Answer>),
    Appending(std::pin::Pin<Box<dyn std::future::Future<Output = Answer>>>),
}

impl Shard {
    /// The answer to a group request in a cluster whose offsets topic this node does not
    /// know yet: the topic is created through the controller (by this node's coordinator;
    /// one request per shard at a time) and the client told to retry meanwhile
    /// (`CoordinatorLoadInProgress`, with the last failure if there was one).
    pub(super) fn offsets_topic_missing(self: &Rc<Self>) -> ErrorResponse {
        let refused = {
            let mut creation = self.offsets_creation.borrow_mut();
            if !creation.in_flight {
                creation.in_flight = true;
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let request = Request::AutoCreateTopic(AutoCreateTopicRequest {
                        topic: OFFSETS_TOPIC.to_owned(),
                    });
                    let answer = shard
                        .admin
                        .call(request, ApiKey::AutoCreateTopic.to_u16())
                        .await;
                    let refused = match answer {
                        Response::AutoCreateTopic(_) => None,
                        Response::Error { error, .. } => {
                            tracing::warn!("cannot create the offsets topic: {}", error.message);
                            Some(error.message)
                        }
                        other => Some(format!("unexpected answer {other:?}")),
                    };
                    let mut creation = shard.offsets_creation.borrow_mut();
                    creation.in_flight = false;
                    creation.refused = refused;
                })
                .detach();
            }
            creation.refused.clone()
        };
        let message = match refused {
            None => format!("the {OFFSETS_TOPIC} topic is being created through the controller; retry"),
            Some(why) => format!(
                "the {OFFSETS_TOPIC} topic is being created through the controller (the last try failed: {why}); retry"
            ),
        };
        error(ErrorCode::CoordinatorLoadInProgress, message)
    }

    /// Which leadership of `partition` this node holds: on a single node always `Some(0)`;
    /// in a cluster the leadership's instance while this node leads it, else `None`.
    fn term(&self, partition: &Partition) -> Option<u64> {
        if self.metadata().cluster.is_none() {
            return Some(0);
        }
        partition
            .leading
            .borrow()
            .as_ref()
            .map(|leading| leading.instance)
    }

    /// Whether `coordinator` still serves `partition`: it is open and this node holds the
    /// leadership the coordinator was made for.
    fn serves(&self, partition: &Rc<Partition>, coordinator: &Coordinator) -> bool {
        self.is_current(partition)
            && !partition.is_stopped()
            && self.term(partition) == Some(coordinator.term)
    }

    /// The coordinator of an offsets partition, set up (and its replay started) if new or if
    /// the one there served an earlier leadership.
    fn coordinator(
        self: &Rc<Self>,
        partition: &Rc<Partition>,
    ) -> Result<Rc<Coordinator>, ErrorResponse> {
        let Some(term) = self.term(partition) else {
            return Err(error(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "this node does not lead {}-{} (its group coordinator moved)",
                    partition.key.topic, partition.key.partition
                ),
            ));
        };
        if let Some(existing) = partition.groups.borrow().as_ref() {
            if existing.term == term {
                return Ok(existing.clone());
            }
        }
        let coordinator = Rc::new(Coordinator {
            term,
            state: RefCell::new(Load::Loading),
            waiting: RefCell::new(HashMap::new()),
            next_ticket: Cell::new(0),
            snapshot_at: Cell::new(0),
        });
        *partition.groups.borrow_mut() = Some(coordinator.clone());
        let shard = self.clone();
        let partition = partition.clone();
        let driven = coordinator.clone();
        glommio::spawn_local(async move { shard.drive_coordinator(partition, driven).await })
            .detach();
        Ok(coordinator)
    }

    /// Replays the partition's log, then lets time pass for the groups until the partition
    /// closes.
    async fn drive_coordinator(
        self: Rc<Self>,
        partition: Rc<Partition>,
        coordinator: Rc<Coordinator>,
    ) {
        let config = GroupConfig {
            initial_rebalance_delay_ms: i64::try_from(self.config.group_initial_rebalance_delay_ms)
                .unwrap_or(i64::MAX),
            ..GroupConfig::default()
        };
        let nonce = rand_nonce();
        // A load that fails (a read error, a record batch that does not read) is tried again
        // while the partition is open; clients meanwhile hear COORDINATOR_LOAD_IN_PROGRESS.
        let ready = loop {
            if !self.serves(&partition, &coordinator) {
                break Load::Moved;
            }
            if !partition.reads_ready() {
                // A new leader: what it holds becomes committed (its high watermark reaches
                // the epoch's start) once its in-sync followers have it, or they leave the
                // ISR. Nothing is appended meanwhile (the coordinator appends only once
                // loaded), so a replay to the high watermark then reads every commit an
                // earlier leader acknowledged.
                glommio::timer::sleep(READY_CHECK).await;
                continue;
            }
            match self.replay_offsets(&partition, config, nonce).await {
                Ok((loaded, records)) => {
                    tracing::info!(
                        topic = %partition.key.topic,
                        partition = partition.key.partition,
                        records,
                        offsets = loaded.offsets().len(),
                        "group coordinator loaded"
                    );
                    break Load::Ready(loaded);
                }
                Err(why) => {
                    tracing::error!(topic = %partition.key.topic, partition = partition.key.partition, "group coordinator cannot load its offsets (trying again in {} s): {why}", LOAD_RETRY.as_secs());
                    if !self.serves(&partition, &coordinator) {
                        break Load::Failed(why);
                    }
                    glommio::timer::sleep(LOAD_RETRY).await;
                }
            }
        };
        *coordinator.state.borrow_mut() = ready;
        coordinator.snapshot_at.set(partition.log().log_start().0);
        let retention_ms = i64::try_from(self.config.offsets_retention_ms).unwrap_or(i64::MAX);
        let maintenance = Duration::from_millis(self.config.retention_check_ms);
        let mut since_maintenance = Duration::ZERO;
        while self.serves(&partition, &coordinator) {
            glommio::timer::sleep(TICK).await;
            if !self.serves(&partition, &coordinator) {
                break;
            }
            since_maintenance += TICK;
            if let Load::Ready(groups) = &mut *coordinator.state.borrow_mut() {
                groups.tick(now());
            }
            coordinator.deliver();
            if since_maintenance >= maintenance {
                since_maintenance = Duration::ZERO;
                let expired = match &mut *coordinator.state.borrow_mut() {
                    Load::Ready(groups) => groups.expire(now(), retention_ms),
                    _ => None,
                };
                if let Some((id, records)) = expired {
                    tracing::info!(
                        offsets = records.len(),
                        "expiring committed offsets of groups without members"
                    );
                    let _ = self
                        .append_offsets(&partition, &coordinator, id, &records)
                        .await;
                }
                self.compact_offsets(&partition, &coordinator).await;
            }
        }
        // The partition closed or its leadership moved: parked requests are answered (their
        // senders dropped), and requests still holding this coordinator are refused.
        *coordinator.state.borrow_mut() = Load::Moved;
        coordinator.waiting.borrow_mut().clear();
    }

    /// Reads the partition's log from its start to its high watermark into a new
    /// coordinator: (the coordinator, records replayed).
    async fn replay_offsets(
        &self,
        partition: &Rc<Partition>,
        config: GroupConfig,
        nonce: u64,
    ) -> Result<(GroupCoordinator, u64), String> {
        let mut coordinator = GroupCoordinator::new(config, nonce);
        let mut offset = partition.log().log_start();
        let mut records = 0u64;
        loop {
            let (plan, high_watermark) = {
                let high_watermark = partition.log().high_watermark();
                if offset >= high_watermark {
                    break;
                }
                (
                    partition
                        .with_log(|log| log.handle_fetch(offset, REPLAY_STEP_BYTES))
                        .map_err(|refused| refused.to_string())?,
                    high_watermark,
                )
            };
            let bytes = self
                .fetch_records(partition, plan)
                .await
                .map_err(|refused| refused.message)?;
            if bytes.is_empty() {
                return Err(format!(
                    "no records at offset {} below the high watermark {}",
                    offset.0, high_watermark.0
                ));
            }
            for batch in spate_format::batch::batches(&bytes) {
                let batch = batch.map_err(|problem| problem.to_string())?;
                let base = batch.base_offset();
                for record in batch.records() {
                    let record = record.map_err(|problem| problem.to_string())?;
                    if base.0 + u64::from(record.offset_delta) < offset.0 {
                        continue;
                    }
                    let record = OffsetRecord {
                        key: Bytes::copy_from_slice(record.key.unwrap_or_default()),
                        value: record.value.map(Bytes::copy_from_slice),
                    };
                    records += 1;
                    if let Err(problem) = coordinator.replay(&record) {
                        tracing::warn!(
                            offset = base.0,
                            "skipped an unreadable offset record: {problem}"
                        );
                    }
                }
                offset = Offset(offset.0.max(batch.next_offset().0));
            }
        }
        Ok((coordinator, records))
    }

    /// Appends offset records with `fsync` at once, with no await between the coordinator
    /// making them and the log taking them, so the log holds the appends in the order the
    /// coordinator made them (and applies them): a replay gives what the coordinator shows.
    /// The returned future tells the coordinator the outcome (the records take effect when
    /// acknowledged) and is the answer. Should a later batch of a large append be refused
    /// (a full write buffer), the append fails, its earlier batches may survive a restart
    /// (as any unacknowledged commit may).
    fn append_offsets(
        &self,
        partition: &Rc<Partition>,
        coordinator: &Rc<Coordinator>,
        id: AppendId,
        records: &[OffsetRecord],
    ) -> impl std::future::Future<Output = Answer> + 'static {
        let submitted = self.submit_offsets(partition, coordinator, records);
        let coordinator = coordinator.clone();
        async move {
            let outcome = match submitted {
                Ok(waits) => {
                    let mut outcome = Ok(());
                    for wait in waits {
                        let acknowledged = wait.recv().await.unwrap_or_else(|| {
                            Err(error(ErrorCode::ShuttingDown, "the partition closed"))
                        });
                        if let Err(refused) = acknowledged {
                            outcome = Err(refused);
                        }
                    }
                    outcome
                }
                Err(refused) => Err(refused),
            };
            coordinator.settle(id, outcome.is_ok());
            outcome.map(|()| GroupResponse::Done)
        }
    }

    #[allow(clippy::type_complexity)]
    fn submit_offsets(
        &self,
        partition: &Rc<Partition>,
        coordinator: &Coordinator,
        records: &[OffsetRecord],
    ) -> Result<Vec<LocalReceiver<crate::partition::ProduceResult>>, ErrorResponse> {
        // Only the coordinator of the leadership this node holds appends: one of an earlier
        // leadership (its timer woke after the node led the partition again) would write
        // records the current coordinator did not make.
        if self.term(partition) != Some(coordinator.term) {
            return Err(error(
                ErrorCode::NotLeaderOrFollower,
                "the group coordinator moved (its partition is led anew)",
            ));
        }
        let batches = batches_of(records, now().0)?;
        // All or nothing: a commit is never half in the log.
        let total: u64 = batches.iter().map(|batch| batch.len() as u64).sum();
        if !partition.log().has_room(total) {
            return Err(error(
                ErrorCode::Busy,
                "the offsets partition's write buffer is full; retry",
            ));
        }
        let mut waits = Vec::with_capacity(batches.len());
        for batch in batches {
            let request = ProduceRequest {
                topic: partition.key.topic.clone(),
                partition: spate_proto::PartitionId(partition.key.partition),
                durability: Durability::Fsync,
                batch,
            };
            match self.produce(partition, &request)? {
                Ok(_) => {}
                Err(receiver) => waits.push(receiver),
            }
        }
        Ok(waits)
    }

    /// Keeps the offsets log within about twice its live state: when more than that was
    /// appended since the last snapshot, every live offset is appended again (a snapshot)
    /// and the log start moved to it.
    async fn compact_offsets(&self, partition: &Rc<Partition>, coordinator: &Rc<Coordinator>) {
        let (log_start, end) = {
            let log = partition.log();
            (log.log_start().0, log.high_watermark().0)
        };
        let live = match &*coordinator.state.borrow() {
            Load::Ready(groups) => groups.offsets().len() as u64,
            _ => return,
        };
        let appended_since = end.saturating_sub(coordinator.snapshot_at.get().max(log_start));
        if !snapshot_due(live, appended_since, self.config.offsets_snapshot_records) {
            return;
        }
        let snapshot = match &mut *coordinator.state.borrow_mut() {
            Load::Ready(groups) => groups.snapshot(),
            _ => None,
        };
        let Some((id, records)) = snapshot else {
            return;
        };
        let first = partition.log().next_offset();
        if self
            .append_offsets(partition, coordinator, id, &records)
            .await
            .is_err()
        {
            return;
        }
        if !self.serves(partition, coordinator) {
            // Led anew meanwhile: the log start is the new coordinator's to move.
            return;
        }
        coordinator.snapshot_at.set(first.0);
        let moved = partition.with_log(|log| log.handle_delete_records(first));
        match moved {
            Ok(Some(_)) => partition.ring(),
            Ok(None) => {}
            Err(refused) => tracing::warn!("cannot move the offsets log start: {refused}"),
        }
        tracing::info!(
            topic = %partition.key.topic,
            partition = partition.key.partition,
            live = records.len(),
            log_start = first.0,
            "offsets log compacted by a snapshot"
        );
    }

    /// A group request on the offsets partition it was routed to.
    pub(super) fn group(
        self: &Rc<Self>,
        partition: &Rc<Partition>,
        request: GroupRequest,
    ) -> GroupAnswer {
        if partition.key.topic != OFFSETS_TOPIC {
            return GroupAnswer::Now(Err(error(
                ErrorCode::InvalidRequest,
                format!("group requests go to the {OFFSETS_TOPIC} topic"),
            )));
        }
        if request.op != GroupOp::List
            && group_partition(&request.group).0 != partition.key.partition
        {
            return GroupAnswer::Now(Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "group {:?} belongs to partition {} of {OFFSETS_TOPIC}, not {}",
                    request.group,
                    group_partition(&request.group),
                    partition.key.partition
                ),
            )));
        }
        let coordinator = match self.coordinator(partition) {
            Ok(coordinator) => coordinator,
            Err(moved) => return GroupAnswer::Now(Err(moved)),
        };
        let answer = self.group_op(partition, &coordinator, request);
        coordinator.deliver();
        answer
    }

    fn group_op(
        self: &Rc<Self>,
        partition: &Rc<Partition>,
        coordinator: &Rc<Coordinator>,
        request: GroupRequest,
    ) -> GroupAnswer {
        let group = request.group;
        let time = now();
        let append =
            |coordinator: &Rc<Coordinator>,
             made: Result<(AppendId, Vec<OffsetRecord>), ErrorResponse>| {
                let (id, records) = match made {
                    Ok(made) => made,
                    Err(refused) => return GroupAnswer::Now(Err(refused)),
                };
                GroupAnswer::Appending(Box::pin(self.append_offsets(
                    partition,
                    coordinator,
                    id,
                    &records,
                )))
            };
        match request.op {
            GroupOp::Join(join) => {
                if let Err(busy) = coordinator.may_park() {
                    return GroupAnswer::Now(Err(busy));
                }
                let ticket = coordinator.ticket();
                let request = JoinRequest {
                    member_id: join.member_id,
                    group_instance_id: join.instance_id,
                    client_id: join.client_id,
                    session_timeout_ms: join.session_timeout_ms,
                    rebalance_timeout_ms: join.rebalance_timeout_ms,
                    protocol_type: join.protocol_type,
                    protocols: join.protocols,
                    require_known_member_id: join.require_known_member_id,
                };
                let reply = coordinator
                    .with(|groups| groups.join(time, &group, ticket, request).map_err(refusal));
                match reply {
                    Err(refused) => GroupAnswer::Now(Err(refused)),
                    Ok(Reply::Later) => GroupAnswer::Parked(coordinator.park(ticket)),
                    Ok(Reply::Now(answer)) => {
                        GroupAnswer::Now(answer_of(GroupOutput::Join { ticket, answer }).1)
                    }
                }
            }
            GroupOp::Sync {
                member,
                assignments,
            } => {
                if let Err(busy) = coordinator.may_park() {
                    return GroupAnswer::Now(Err(busy));
                }
                let ticket = coordinator.ticket();
                let metadata = self.metadata();
                let reply = coordinator.with(|groups| {
                    // Spate's own groups are assigned here, at the leader's SyncGroup.
                    let assignments = match groups.group(&group) {
                        Some(found) => spate_assignments(found, &member.member_id, &metadata)
                            .unwrap_or(assignments),
                        None => assignments,
                    };
                    groups
                        .sync(
                            time,
                            &group,
                            ticket,
                            &member.member_id,
                            member.instance_id.as_deref(),
                            member.generation,
                            assignments,
                        )
                        .map_err(refusal)
                });
                match reply {
                    Err(refused) => GroupAnswer::Now(Err(refused)),
                    Ok(Reply::Later) => GroupAnswer::Parked(coordinator.park(ticket)),
                    Ok(Reply::Now(answer)) => {
                        GroupAnswer::Now(answer_of(GroupOutput::Sync { ticket, answer }).1)
                    }
                }
            }
            GroupOp::Heartbeat(member) => GroupAnswer::Now(coordinator.with(|groups| {
                groups
                    .heartbeat(
                        time,
                        &group,
                        &member.member_id,
                        member.instance_id.as_deref(),
                        member.generation,
                    )
                    .map(|()| GroupResponse::Done)
                    .map_err(refusal)
            })),
            GroupOp::Leave(members) => GroupAnswer::Now(coordinator.with(|groups| {
                let results = groups
                    .leave(time, &group, &members)
                    .into_iter()
                    .map(|result| match result {
                        Ok(()) => (0, String::new()),
                        Err(refused) => {
                            let refused = refusal(refused);
                            (refused.code.to_u16(), refused.message)
                        }
                    })
                    .collect();
                Ok(GroupResponse::Left(results))
            })),
            GroupOp::Commit { member, offsets } => {
                let offsets: Vec<(String, u32, i64, i32, String)> = offsets
                    .into_iter()
                    .map(|o| (o.topic, o.partition, o.offset, o.leader_epoch, o.metadata))
                    .collect();
                let made = coordinator.with(|groups| {
                    groups
                        .commit(
                            time,
                            &group,
                            &member.member_id,
                            member.instance_id.as_deref(),
                            member.generation,
                            &offsets,
                        )
                        .map_err(refusal)
                });
                append(coordinator, made)
            }
            GroupOp::FetchOffsets(partitions) => GroupAnswer::Now(coordinator.with(|groups| {
                let fetched = groups
                    .fetch(&group, partitions.as_deref())
                    .into_iter()
                    .map(|((topic, partition), committed)| match committed {
                        Some(committed) => FetchedOffset {
                            topic,
                            partition,
                            offset: committed.offset,
                            leader_epoch: committed.leader_epoch,
                            metadata: committed.metadata,
                        },
                        None => FetchedOffset {
                            topic,
                            partition,
                            offset: -1,
                            leader_epoch: -1,
                            metadata: String::new(),
                        },
                    })
                    .collect();
                Ok(GroupResponse::Offsets(fetched))
            })),
            GroupOp::List => GroupAnswer::Now(coordinator.with(|groups| {
                Ok(GroupResponse::Groups(
                    groups
                        .list()
                        .into_iter()
                        .map(|described| group_info(described, false))
                        .collect(),
                ))
            })),
            GroupOp::Describe => GroupAnswer::Now(coordinator.with(|groups| {
                Ok(GroupResponse::Groups(vec![group_info(
                    groups.describe(&group),
                    true,
                )]))
            })),
            GroupOp::Delete => {
                let made = coordinator.with(|groups| groups.delete(&group).map_err(refusal));
                append(coordinator, made)
            }
            GroupOp::DeleteOffsets(partitions) => {
                let made = coordinator
                    .with(|groups| groups.delete_offsets(&group, &partitions).map_err(refusal));
                append(coordinator, made)
            }
        }
    }
}

/// A random number per coordinator start (member ids never repeat those handed out before
/// a restart): std's hasher keys come from the operating system's random source.
fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

/// The node's answer to a group request; one too large for a response frame is refused.
pub(super) fn wrap(answer: Answer, api_key: u16) -> Response {
    match answer {
        Ok(response) => {
            // Only answers that list members or offsets can grow large; the others (a
            // heartbeat's, a commit's: the most frequent) are not encoded twice.
            let may_be_large = matches!(
                response,
                GroupResponse::Joined { .. } | GroupResponse::Offsets(_) | GroupResponse::Groups(_)
            );
            let answer = Response::Group(response);
            let size = if may_be_large {
                answer.to_frame(0).len()
            } else {
                0
            };
            if size > ANSWER_BYTES_MAX {
                return Response::Error {
                    api_key,
                    error: error(
                        ErrorCode::InvalidRequest,
                        format!("the answer would be {size} bytes, over the limit of {ANSWER_BYTES_MAX}: ask for fewer offsets, or use smaller member metadata"),
                    ),
                };
            }
            answer
        }
        Err(error) => Response::Error { api_key, error },
    }
}
