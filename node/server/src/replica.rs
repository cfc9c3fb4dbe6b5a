//! A replicated partition's leader on its shard (docs/cluster.md, "Roles" and "ReplicaFetch
//! and ReplicaProgress"): the partition's `leader-epochs` file, written durably before the
//! leader of a new epoch takes a record; the pure `spate_core::replica::Leader` beside the
//! log, fed with the log's ends and the followers' fetches and progress reports, whose high
//! watermark (the smallest durable end over the in-sync replicas) is the log's visible end;
//! and the answers to `ReplicaFetch` and `ReplicaProgress`. The rules are the core's; this
//! module moves bytes and files.

use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use spate_core::replica::{
    check_agreement, Agreement, IsrMember, Leader, LeaderConfig, LeaderEpoch, LeaderEpochs,
    ReplicaError, ReplicaId, StorageId,
};
use spate_core::{FetchError, FetchWaitError, PartitionLog};
use spate_format::Offset;
use spate_proto::limits::REPLICA_FETCH_EPOCHS_MAX;
use spate_proto::{
    DivergingEpoch, EpochBoundary, ErrorCode, ErrorDetail, ErrorResponse, ReadEpochs,
    ReplicaFetchRequest, ReplicaFetchResponse, ReplicaProgressRequest,
};

use crate::metadata::Leads;
use crate::partition::{now, Partition};
use crate::shard::Shard;

/// The name of a replica's leader-epoch chain in its directory (docs/format/leader-epochs.md).
pub const LEADER_EPOCHS_FILE: &str = "leader-epochs";

/// How long past its own wait a follower's parked fetch is held (its deadline follows the
/// wall clock; this one does not).
const FETCH_DEADLINE_GRACE: Duration = Duration::from_millis(100);

/// What a partition's leader holds beside its log.
#[derive(Debug)]
pub struct Leading {
    /// The topic's id: a fetch for another topic of the same name is refused.
    pub topic_id: u128,
    pub core: Leader,
    /// The partition's epoch chain, as its file holds it.
    pub epochs: LeaderEpochs,
    /// The revision of the partition key the core's ISR came from (an ISR change compares
    /// it).
    pub revision: i64,
    /// An ISR change is on its way to etcd.
    pub proposing: bool,
    /// Which of the partition's leaderships this is (`Partition::leaderships`).
    pub instance: u64,
}

impl Leading {
    pub fn epoch(&self) -> u32 {
        self.core.epoch().0
    }
}

/// The chain in `dir`'s `leader-epochs` file; empty when there is none.
pub fn load_epochs(dir: &Path) -> Result<LeaderEpochs, String> {
    let path = dir.join(LEADER_EPOCHS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            LeaderEpochs::from_file(&bytes).map_err(|error| format!("{}: {error}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(LeaderEpochs::new()),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Replaces `dir`'s `leader-epochs` file with `epochs`, durably.
fn store_epochs(dir: &Path, epochs: &LeaderEpochs) -> Result<(), String> {
    crate::durable::replace(dir, LEADER_EPOCHS_FILE, &epochs.to_file()).map_err(|error| {
        format!(
            "cannot write {}: {error}",
            dir.join(LEADER_EPOCHS_FILE).display()
        )
    })
}

fn hex_id(id: &str) -> Option<u128> {
    u128::from_str_radix(id, 16).ok()
}

fn refused(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(code, message)
}

impl Partition {
    /// The epoch this partition leads, once its leadership is taken.
    pub fn leading_epoch(&self) -> Option<u32> {
        self.leading.borrow().as_ref().map(Leading::epoch)
    }

    /// Whether consumers may read: not while this node leads an epoch whose high watermark
    /// has not reached the epoch's start (it would show them an end below what an earlier
    /// leader showed).
    pub fn reads_ready(&self) -> bool {
        self.leading
            .borrow()
            .as_ref()
            .is_none_or(|leading| leading.core.is_ready())
    }

    /// Kafka's check of a reader's leader epoch (KIP-320) against the epoch this node leads:
    /// an older one is fenced (the reader's map is stale), a newer one unknown (this node has
    /// not taken it yet). A single node has no epochs and checks nothing.
    pub fn check_read_epoch(&self, epochs: ReadEpochs) -> Result<(), ErrorResponse> {
        let (Some(current), Some(leading)) = (epochs.current, self.leading_epoch()) else {
            return Ok(());
        };
        let name = format!("partition {}-{}", self.key.topic, self.key.partition);
        match current.cmp(&leading) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(refused(
                ErrorCode::FencedLeaderEpoch,
                format!("{name}: leader epoch {current} is over, this node leads epoch {leading}"),
            )),
            std::cmp::Ordering::Greater => Err(refused(
                ErrorCode::UnknownLeaderEpoch,
                format!("{name}: this node leads epoch {leading}, not yet {current}"),
            )),
        }
    }

    /// A consumer's fetch answer from `from` on with the epoch boundaries of its records
    /// (`FetchResponse::epochs`), when the reader asked and this node leads with epochs;
    /// otherwise the records as they are and no boundaries.
    pub fn read_boundaries(
        &self,
        epochs: ReadEpochs,
        records: Bytes,
        from: Offset,
    ) -> (Bytes, Vec<EpochBoundary>) {
        let leading = self.leading.borrow();
        match leading.as_ref() {
            Some(leading) if epochs.answer && !records.is_empty() => {
                with_boundaries(records, from, &leading.epochs)
            }
            _ => (records, Vec::new()),
        }
    }

    /// The epoch a `ListOffsets` answer names for `offset`: the latest (the one this node
    /// leads) for the high watermark, as Kafka answers the latest offset, else the epoch of
    /// the record there; `None` without epochs (a single node).
    pub fn epoch_of(&self, offset: Offset, high_watermark: Offset) -> Option<u32> {
        let leading = self.leading.borrow();
        let chain = &leading.as_ref()?.epochs;
        let epoch = if offset >= high_watermark {
            chain.latest_epoch()
        } else {
            chain.epoch_at(offset).or_else(|| chain.latest_epoch())
        };
        epoch.map(|epoch| epoch.0)
    }

    /// Where the records of `epoch` end in this leader's log (Kafka's OffsetForLeaderEpoch):
    /// the end and the epoch the answer names, `None` when there is none to give (an epoch
    /// above the chain's latest, or no chain).
    pub fn epoch_end(&self, epoch: u32) -> Option<(u64, u32)> {
        let leading = self.leading.borrow();
        let chain = &leading.as_ref()?.epochs;
        if epoch > chain.latest_epoch()?.0 {
            return None;
        }
        let log_end = self.with_log(|log| log.next_offset());
        let end = chain.end_for(LeaderEpoch(epoch), log_end)?;
        Some((end.end.0, end.epoch.map_or(epoch, |found| found.0)))
    }

    /// Feeds the log's ends to the leader and the leader's high watermark to the log (after
    /// every step of either); `true` if the log's visible end moved (it then has
    /// acknowledgements and wake-ups for the driver to deliver).
    pub fn sync_replication(&self) -> bool {
        let mut leading = self.leading.borrow_mut();
        let Some(leading) = leading.as_mut() else {
            return false;
        };
        self.with_log(|log| {
            let before = log.high_watermark();
            leading.core.handle_appended(log.next_offset());
            leading.core.handle_durable(log.durable_end());
            log.handle_replicated_high_watermark(leading.core.high_watermark());
            log.high_watermark() != before
        })
    }
}

impl Shard {
    /// Makes `partition` (in directory `dir`, of topic `topic_id`) the leader `leads` names,
    /// or keeps it leading with the newer in-sync set: a new epoch is entered in the
    /// partition's `leader-epochs` file, durably, before the leader takes anything; `None`
    /// ends its leadership.
    pub(crate) async fn lead(
        &self,
        partition: &Rc<Partition>,
        dir: &Path,
        topic_id: &str,
        leads: Option<&Leads>,
    ) {
        // The replica's fetcher (stopped by now) finishes what it was taking first.
        let Ok(_turn) = partition
            .replica_turn
            .clone()
            .acquire_static_permit(1)
            .await
        else {
            return;
        };
        if partition.is_closing() {
            // Closed meanwhile (a reopen, a deletion): its successor takes the role.
            return;
        }
        let Some(leads) = leads else {
            if partition.leading.borrow_mut().take().is_some() {
                tracing::info!(topic = %partition.key.topic, partition = partition.key.partition, "no longer leads");
                partition.with_log(PartitionLog::handle_deposed);
                partition.ring();
            }
            return;
        };
        let current = partition.leading_epoch();
        if current == Some(leads.epoch) {
            // The same epoch, a newer state (the controller removed a member, or the map shows
            // this leader's own change): any change in flight fails on the revision.
            let mut leading = partition.leading.borrow_mut();
            if let Some(leading) = leading.as_mut() {
                if leads.revision > leading.revision {
                    leading.revision = leads.revision;
                    leading.core.handle_isr_changed(leads.isr.clone());
                }
                // A move added or removed replicas (the topic key changed, not necessarily
                // the partition key).
                let replicas: Vec<ReplicaId> =
                    leads.replicas.iter().copied().map(ReplicaId).collect();
                if leading.core.replicas() != replicas.as_slice() {
                    tracing::info!(topic = %partition.key.topic, partition = partition.key.partition, replicas = ?leads.replicas, "the partition's replicas changed");
                    leading.core.handle_replicas_changed(now(), replicas);
                }
            }
            drop(leading);
            if partition.sync_replication() {
                partition.ring();
            }
            return;
        }
        if partition.leading.borrow_mut().take().is_some() {
            // Another epoch: what waited for the old one's high watermark is not its to
            // acknowledge.
            partition.with_log(PartitionLog::handle_deposed);
            partition.ring();
        }
        let Some(topic_id) = hex_id(topic_id) else {
            tracing::error!(topic = %partition.key.topic, partition = partition.key.partition, topic_id, "not led: the topic id is not 32 hex digits");
            return;
        };
        let shown = dir.display().to_string();
        let loaded = {
            let dir = dir.to_owned();
            glommio::executor()
                .spawn_blocking(move || load_epochs(&dir))
                .await
        };
        let mut epochs = match loaded {
            Ok(epochs) => epochs,
            Err(problem) => {
                tracing::error!(dir = %shown, "not led: {problem}");
                return;
            }
        };
        // The chain describes the log as it is: entries past its end (a crash cut the log
        // after the file was written) go.
        // The high watermark this replica learned (as a follower, or as an earlier leader);
        // after a restart none: what it holds above its log start may never have been
        // committed, and becomes visible only as the ISR holds it.
        let (log_start, log_end, durable_end, high_watermark) = {
            let log = partition.log();
            (
                log.log_start(),
                log.next_offset(),
                log.durable_end(),
                log.replicated_high_watermark()
                    .unwrap_or(log.log_start())
                    .min(log.next_offset()),
            )
        };
        epochs.truncate_from_end(Offset(log_end.0.saturating_add(1)));
        epochs.truncate_from_start(log_start);
        let epoch = LeaderEpoch(leads.epoch);
        if let Err(problem) = epochs.assign(epoch, log_end) {
            tracing::error!(dir = %shown, epoch = leads.epoch, "not led: {problem}");
            return;
        }
        let stored = {
            let dir = dir.to_owned();
            let epochs = epochs.clone();
            glommio::executor()
                .spawn_blocking(move || store_epochs(&dir, &epochs))
                .await
        };
        if let Err(problem) = stored {
            tracing::error!(dir = %shown, epoch = leads.epoch, "not led: {problem}");
            return;
        }
        let me = IsrMember {
            replica: ReplicaId(self.config.node_id.unwrap_or(0)),
            storage: StorageId(self.cluster.storage_id()),
        };
        // The ISR this node wrote for the epoch, if the map has not shown it yet.
        let (isr, revision) = match partition.isr_written.borrow().as_ref() {
            Some((written_epoch, written_revision, written))
                if *written_epoch == leads.epoch && *written_revision > leads.revision =>
            {
                (written.clone(), *written_revision)
            }
            _ => (leads.isr.clone(), leads.revision),
        };
        let core = Leader::new(
            now(),
            me,
            epoch,
            leads.replicas.iter().copied().map(ReplicaId).collect(),
            isr,
            log_end,
            durable_end,
            high_watermark,
            LeaderConfig::default(),
        );
        tracing::info!(
            topic = %partition.key.topic,
            partition = partition.key.partition,
            epoch = leads.epoch,
            start = log_end.0,
            "leads a new epoch"
        );
        let instance = partition.leaderships.get() + 1;
        partition.leaderships.set(instance);
        *partition.leading.borrow_mut() = Some(Leading {
            topic_id,
            core,
            epochs,
            revision,
            proposing: false,
            instance,
        });
        partition.sync_replication();
        partition.ring();
    }

    /// A follower's `ReplicaFetch` (docs/cluster.md, the checks in order). Records are read
    /// only with a slot of `answers` (the connection's answers holding records), which comes
    /// back with the answer and is held until it is queued.
    pub(crate) async fn replica_fetch(
        &self,
        partition: &Rc<Partition>,
        request: &ReplicaFetchRequest,
        link: u128,
        answers: &Rc<glommio::sync::Semaphore>,
    ) -> Result<(ReplicaFetchResponse, Option<glommio::sync::StaticPermit>), ErrorResponse> {
        let started = Instant::now();
        let max_wait = Duration::from_millis(u64::from(request.max_wait_ms));
        let offset = Offset(request.fetch_offset);
        let name = format!("{}-{}", partition.key.topic, partition.key.partition);
        loop {
            // Taken before anything is checked or read (nothing else awaits until the read),
            // given back before the fetch parks.
            let Ok(slot) = answers.clone().acquire_static_permit(1).await else {
                return Err(refused(ErrorCode::ShuttingDown, "the connection closed"));
            };
            if partition.is_stopped() {
                return Err(refused(ErrorCode::ShuttingDown, "the partition closed"));
            }
            // Checked again after every wait: the epoch may have changed meanwhile.
            let checked = {
                let mut guard = partition.leading.borrow_mut();
                let leading = check_sender(
                    &mut guard,
                    &name,
                    request.topic_id,
                    request.replica,
                    request.leader_epoch,
                )?;
                let log = partition.log();
                let (log_start, log_end) = (log.log_start(), log.next_offset());
                drop(log);
                leading.epochs.truncate_from_start(log_start);
                let last = request.last_fetched_epoch.map(LeaderEpoch);
                match check_agreement(&leading.epochs, log_end, offset, last) {
                    Agreement::Diverging(end) => {
                        let answer = ReplicaFetchResponse {
                            high_watermark: leading.core.high_watermark().0,
                            log_start_offset: log_start.0,
                            diverging: Some(DivergingEpoch {
                                epoch: end.epoch.map_or(0, |epoch| epoch.0),
                                end_offset: end.end.0,
                            }),
                            epochs: Vec::new(),
                            records: Bytes::new(),
                        };
                        return Ok((answer, None));
                    }
                    Agreement::StartOver => {
                        return Err(out_of_range(&name, offset, log_start, log_end));
                    }
                    Agreement::Agrees if offset < log_start => {
                        return Err(out_of_range(&name, offset, log_start, log_end));
                    }
                    Agreement::Agrees => {}
                }
                let durable = Offset(request.durable_end.min(request.fetch_offset));
                let storage = StorageId(request.storage_id);
                match leading.core.handle_fetch(
                    now(),
                    ReplicaId(request.replica),
                    storage,
                    link,
                    offset,
                    durable,
                ) {
                    Ok(_) => {}
                    Err(ReplicaError::AboveLogEnd { log_end, .. }) => {
                        return Err(out_of_range(&name, offset, log_start, log_end));
                    }
                    Err(problem) => return Err(replica_error(&name, &problem)),
                }
                (log_start, leading.epochs.clone())
            };
            let (log_start, epochs) = checked;
            if partition.sync_replication() {
                partition.ring();
            }
            let plan = partition
                .with_log(|log| log.handle_fetch_replica(offset, request.max_bytes))
                .map_err(|problem| match problem {
                    FetchError::OutOfRange {
                        log_start,
                        high_watermark,
                        ..
                    } => out_of_range(&name, offset, log_start, high_watermark),
                    corrupt @ FetchError::Corrupt { .. } => {
                        refused(ErrorCode::from(&corrupt), corrupt.to_string())
                    }
                })?;
            let records = self.fetch_records(partition, plan).await?;
            let waited = started.elapsed();
            if !records.is_empty() || waited >= max_wait || self.shutdown.load(Ordering::Relaxed) {
                let high_watermark = partition
                    .leading
                    .borrow()
                    .as_ref()
                    .map_or(0, |leading| leading.core.high_watermark().0);
                let (records, epochs) = with_boundaries(records, offset, &epochs);
                let slot = (!records.is_empty()).then_some(slot);
                let answer = ReplicaFetchResponse {
                    high_watermark,
                    log_start_offset: log_start.0,
                    diverging: None,
                    epochs,
                    records,
                };
                return Ok((answer, slot));
            }
            drop(slot);
            // Nothing past the follower's end: parked until the written end moves.
            let remaining = max_wait.saturating_sub(waited);
            let remaining_ms = u32::try_from(remaining.as_millis())
                .unwrap_or(u32::MAX)
                .max(1);
            let parked = partition.with_log(|log| {
                let seen = log.written_end();
                log.handle_fetch_wait_replica(now(), offset, seen, remaining_ms)
            });
            let ticket = match parked {
                Ok(ticket) => ticket,
                Err(FetchWaitError::Fenced) => {
                    return Err(refused(
                        ErrorCode::PartitionFenced,
                        format!("{name} is fenced"),
                    ))
                }
                Err(problem) => {
                    return Err(refused(
                        ErrorCode::from(&problem),
                        format!("{name}: {problem}"),
                    ))
                }
            };
            let woken = partition.wait_fetch(ticket);
            let in_time = future::or(async { woken.recv().await.is_some() }, async {
                glommio::timer::sleep(remaining + FETCH_DEADLINE_GRACE).await;
                false
            })
            .await;
            if !in_time {
                partition.cancel_fetch(ticket);
            }
        }
    }

    /// A follower's `ReplicaProgress`: its log and durable ends count at once.
    pub(crate) fn replica_progress(
        &self,
        partition: &Rc<Partition>,
        request: &ReplicaProgressRequest,
        link: u128,
    ) -> Result<(), ErrorResponse> {
        let name = format!("{}-{}", partition.key.topic, partition.key.partition);
        {
            let mut guard = partition.leading.borrow_mut();
            let leading = check_sender(
                &mut guard,
                &name,
                request.topic_id,
                request.replica,
                request.leader_epoch,
            )?;
            leading
                .core
                .handle_progress(
                    ReplicaId(request.replica),
                    StorageId(request.storage_id),
                    link,
                    Offset(request.log_end),
                    Offset(request.durable_end.min(request.log_end)),
                )
                .map_err(|problem| replica_error(&name, &problem))?;
        }
        if partition.sync_replication() {
            partition.ring();
        }
        Ok(())
    }
}

/// How often a shard's leaders look whether their ISR should change.
#[cfg(feature = "cluster")]
const ISR_CHECK: Duration = Duration::from_millis(250);

/// A shard's leaders propose their ISR changes (a follower caught up joins, one that fell
/// behind for `replica.lag.time.max` leaves, a member whose data directory changed leaves at
/// once — the core decides) to etcd by compare-and-swap on the partition key's revision,
/// one change in flight per partition; a change that fails (the key moved on) is dropped and
/// the leader works from the newer state the map brings.
#[cfg(feature = "cluster")]
pub async fn propose_isr_changes(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(ISR_CHECK).await;
        if shard.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let Some(query) = shard.cluster.query().cloned() else {
            continue;
        };
        for partition in shard.partition_list() {
            let proposal = {
                let mut leading = partition.leading.borrow_mut();
                let Some(leading) = leading.as_mut().filter(|leading| !leading.proposing) else {
                    continue;
                };
                let Some(isr) = leading.core.poll_isr_change(now()) else {
                    continue;
                };
                leading.proposing = true;
                (leading.instance, leading.epoch(), leading.revision, isr)
            };
            let query = query.clone();
            glommio::spawn_local(propose(query, partition, proposal)).detach();
        }
    }
}

/// Writes one ISR change and tells the leader how it went.
#[cfg(feature = "cluster")]
async fn propose(
    query: crate::cluster::ClusterQuery,
    partition: Rc<Partition>,
    (instance, epoch, revision, isr): (u64, u32, i64, Vec<IsrMember>),
) {
    let key = &partition.key;
    let nodes: Vec<u32> = isr.iter().map(|member| member.replica.0).collect();
    let written = query
        .change_isr(key.topic.clone(), key.partition, revision, isr.clone())
        .await;
    {
        let mut leading = partition.leading.borrow_mut();
        let Some(leading) = leading
            .as_mut()
            .filter(|leading| leading.instance == instance)
        else {
            if let Ok(revision) = written {
                // Written, but this leadership ended: a later one of the epoch starts from it
                // (or takes it now, if it began from an older state).
                if let Some(later) = leading
                    .as_mut()
                    .filter(|later| later.epoch() == epoch && later.revision < revision)
                {
                    later.revision = revision;
                    later.core.handle_isr_changed(isr.clone());
                }
                *partition.isr_written.borrow_mut() = Some((epoch, revision, isr));
            }
            return;
        };
        leading.proposing = false;
        match written {
            Ok(revision) => {
                *partition.isr_written.borrow_mut() = Some((epoch, revision, isr.clone()));
                tracing::info!(topic = %key.topic, partition = key.partition, epoch, isr = ?nodes, "changed the in-sync replicas");
                leading.revision = leading.revision.max(revision);
                leading.core.handle_isr_changed(isr);
            }
            Err((_, problem)) => {
                tracing::info!(topic = %key.topic, partition = key.partition, epoch, isr = ?nodes, "in-sync replicas not changed: {problem}");
                leading.core.handle_isr_change_failed();
            }
        }
    }
    if partition.sync_replication() {
        partition.ring();
    }
}

/// The checks every replica request passes first: this node leads, the topic, the epoch,
/// the replica; the leader's state if they pass.
fn check_sender<'a>(
    leading: &'a mut Option<Leading>,
    name: &str,
    topic_id: u128,
    replica: u32,
    epoch: u32,
) -> Result<&'a mut Leading, ErrorResponse> {
    let Some(leading) = leading.as_mut() else {
        return Err(refused(
            ErrorCode::NotLeaderOrFollower,
            format!("{name}: this node does not lead it"),
        ));
    };
    if topic_id != leading.topic_id {
        return Err(refused(
            ErrorCode::NotLeaderOrFollower,
            format!(
                "{name}: topic id {topic_id:032x} is not this partition's ({:032x}): the topic was deleted and created again",
                leading.topic_id
            ),
        ));
    }
    leading
        .core
        .check_epoch(LeaderEpoch(epoch))
        .map_err(|problem| replica_error(name, &problem))?;
    if !leading.core.replicas().contains(&ReplicaId(replica)) {
        return Err(replica_error(
            name,
            &ReplicaError::NotAssigned {
                replica: ReplicaId(replica),
            },
        ));
    }
    Ok(leading)
}

fn replica_error(name: &str, problem: &ReplicaError) -> ErrorResponse {
    let code = match problem {
        ReplicaError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
        ReplicaError::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
        ReplicaError::NotAssigned { .. } => ErrorCode::ReplicaNotAvailable,
        ReplicaError::AboveLogEnd { .. } => ErrorCode::OffsetOutOfRange,
    };
    refused(code, format!("{name}: {problem}"))
}

/// The follower starts over at the leader's log start (or asked past the leader's end).
fn out_of_range(name: &str, offset: Offset, log_start: Offset, log_end: Offset) -> ErrorResponse {
    refused(
        ErrorCode::OffsetOutOfRange,
        format!(
            "{name}: offset {offset} is outside the leader's log ({log_start} to {log_end}); start over at {log_start}"
        ),
    )
    .with_detail(ErrorDetail::OffsetRange {
        log_start_offset: log_start.0,
        high_watermark: log_end.0,
    })
}

/// The records of an answer from `from` on and the epoch boundaries inside them: at most
/// `REPLICA_FETCH_EPOCHS_MAX` boundaries, the records cut at the first that does not fit.
fn with_boundaries(
    records: Bytes,
    from: Offset,
    epochs: &LeaderEpochs,
) -> (Bytes, Vec<EpochBoundary>) {
    // The records are the log's own, checked when read: their headers give the bounds (no
    // second pass over the bytes for their CRCs).
    let next_of = |header: &spate_format::BatchHeader| {
        header
            .base_offset
            .get()
            .saturating_add(u64::from(header.last_offset_delta.get()))
            .saturating_add(1)
    };
    let end = spate_format::batch_headers(&records)
        .last()
        .map_or(from, |(_, header)| Offset(next_of(header)));
    let mut boundaries = epochs.boundaries(from, end.max(Offset(from.0 + 1)));
    let limit = REPLICA_FETCH_EPOCHS_MAX as usize;
    let mut records = records;
    if boundaries.len() > limit {
        let cut_at = boundaries[limit].start;
        boundaries.truncate(limit);
        let keep = spate_format::batch_headers(&records)
            .take_while(|(_, header)| header.base_offset.get() < cut_at.0)
            .last()
            .map_or(0, |(start, header)| {
                start + header.batch_length.get() as usize
            });
        records = records.slice(..keep);
    }
    let boundaries = boundaries
        .into_iter()
        .map(|entry| EpochBoundary {
            epoch: entry.epoch.0,
            start_offset: entry.start.0,
        })
        .collect();
    (records, boundaries)
}
