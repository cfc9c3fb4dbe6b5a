//! A follower's fetcher (docs/cluster.md, "Roles" and "Truncation"): for each replica this
//! node follows, a task on the replica's shard fetches from the leader's shard over the node
//! link (TCP, the frames of docs/protocol.md; one connection per leader shard, shared by the
//! replicas this shard follows there: `crate::links`), checks each answer with the pure
//! `spate_core::replica::Follower`, enters new epoch boundaries in the replica's
//! `leader-epochs` file (durably) before the records that carry them, and appends the
//! leader's batches byte for byte through the log's group commit (`handle_replicate`). While
//! its fetch is parked at the leader, it reports its durable end as it moves
//! (`ReplicaProgress`, woken by the replica's own syncs), so an `acks=all` produce waits for
//! the follower's `fdatasync`, not for its next fetch. A diverging answer cuts the log
//! (`Recovery::truncating`) and an answer that the leader no longer has the follower's
//! position starts it over there (`Recovery::resetting`): both close the partition and open
//! it again, and a new fetcher takes over. The task ends when the replica's role changes.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::future;
use spate_core::replica::{
    EpochEnd, EpochStart, Follower, LeaderEpoch, LeaderEpochs, ReplicaId, Throttle,
};
use spate_core::{AppendError, PartitionLog};
use spate_format::Offset;
use spate_proto::{
    ErrorCode, ErrorDetail, ReplicaFetchRequest, ReplicaFetchResponse, ReplicaProgressRequest,
    Request, Response,
};

use crate::links::{Link, Session};
use crate::partition::{now, Partition};
use crate::replica::load_epochs;
use crate::shard::{partition_dir, Shard};

/// The most a follower asks for in one fetch.
pub const REPLICA_FETCH_BYTES: u32 = 1 << 20;

/// How long the leader may park a follower's fetch.
const REPLICA_FETCH_WAIT_MS: u32 = 500;

/// How long past its wait a fetch's answer may take while nothing at all comes over the link
/// before the link is dropped and made again (answers of other replicas coming in keep it:
/// this one may be queued behind them).
const ANSWER_GRACE: Duration = Duration::from_secs(5);

/// How often a waiting fetch looks at its link.
const ANSWER_CHECK: Duration = Duration::from_secs(1);

/// The longest a fetch waits for its answer over a link that still delivers others; then it
/// is given up (its answer dropped when it comes) and asked again in a new session.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(60);

/// How long a follower waits before it connects again, at first and at most.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// The longest a throttled fetcher sleeps before it looks whether it still follows.
const PACE_SLICE: Duration = Duration::from_millis(100);

/// How long a follower waits after the leader refused it for an epoch or a role (the map
/// will bring the change).
const REFUSED_WAIT: Duration = Duration::from_millis(100);

/// Whom a replica follows (set by the shard from the cluster's map; a new value ends the
/// fetcher of the old one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Following {
    pub leader: u32,
    pub epoch: u32,
    /// The leader's shard serving the partition.
    pub endpoint: String,
    pub topic_id: u128,
    /// Told apart from an earlier fetcher of the same replica.
    pub generation: u64,
}

/// How a replica's log must be opened again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reopen {
    /// Cut at this offset (a diverging answer).
    Truncate(Offset),
    /// Emptied and started at this offset (the leader's log start passed the follower's end).
    Reset(Offset),
}

/// Why a fetcher stops.
enum Stop {
    /// The role changed or the partition closed.
    Done,
    /// The log must be opened again so.
    Reopen(Reopen),
}

/// Whether `generation` still follows on `partition`.
fn current(shard: &Shard, partition: &Partition, generation: u64) -> Option<Following> {
    if partition.is_closing() || shard.shutdown.load(Ordering::Relaxed) {
        return None;
    }
    partition
        .following
        .borrow()
        .as_ref()
        .filter(|following| following.generation == generation)
        .cloned()
}

/// The follower's chain as it describes its log: entries past the log's end (a crash cut the
/// log after the file was written, or a truncation) go; an empty log has none.
fn chain_of(mut epochs: LeaderEpochs, log: &PartitionLog) -> LeaderEpochs {
    let (start, end) = (log.log_start(), log.next_offset());
    if start >= end {
        return LeaderEpochs::new();
    }
    epochs.truncate_from_end(end);
    epochs.truncate_from_start(start);
    epochs
}

/// Runs the fetcher of `partition` for `generation` (see the module documentation).
pub async fn run(shard: Rc<Shard>, partition: Rc<Partition>, generation: u64) {
    let key = partition.key.clone();
    let dir = partition_dir(&shard.config.data_dir, &key.topic, key.partition);
    let loaded = {
        let dir = dir.clone();
        glommio::executor()
            .spawn_blocking(move || load_epochs(&dir))
            .await
    };
    let epochs = match loaded {
        Ok(epochs) => epochs,
        Err(problem) => {
            tracing::error!(topic = %key.topic, partition = key.partition, "not following: {problem}");
            return;
        }
    };
    let Some(following) = current(&shard, &partition, generation) else {
        return;
    };
    let (epochs, high_watermark) = {
        let log = partition.log();
        let known = log.replicated_high_watermark().unwrap_or(log.log_start());
        (chain_of(epochs, &log), known)
    };
    let mut fetcher = Fetcher {
        shard: shard.clone(),
        partition: partition.clone(),
        generation,
        core: Follower::new(
            ReplicaId(following.leader),
            LeaderEpoch(following.epoch),
            high_watermark,
        ),
        epochs,
        stored: None,
        dir,
        throttle: None,
    };
    tracing::info!(topic = %key.topic, partition = key.partition, leader = following.leader, epoch = following.epoch, "following");
    let mut backoff = RECONNECT_FIRST;
    let stop = loop {
        let Some(following) = current(&shard, &partition, generation) else {
            break Stop::Done;
        };
        let link = match following.endpoint.parse::<SocketAddr>() {
            Ok(address) => shard.links.get(address).await,
            Err(_) => Err(format!("the map names no address: {}", following.endpoint)),
        };
        let link = match link {
            Ok(link) => link,
            Err(problem) => {
                tracing::debug!(topic = %key.topic, partition = key.partition, "no link to the leader: {problem}");
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        backoff = RECONNECT_FIRST;
        // A new session on every start over: what an earlier one reported no longer counts.
        let session = shard.links.new_session(shard.cluster.incarnation());
        match fetcher.fetch_over(&link, session, &following).await {
            Ok(stop) => break stop,
            Err(problem) => {
                tracing::debug!(topic = %key.topic, partition = key.partition, "fetching from the leader failed: {problem}");
                glommio::timer::sleep(backoff).await;
            }
        }
    };
    if let Stop::Reopen(how) = stop {
        shard.reopen(&partition, how, generation).await;
    }
}

struct Fetcher {
    shard: Rc<Shard>,
    partition: Rc<Partition>,
    generation: u64,
    core: Follower,
    epochs: LeaderEpochs,
    /// The chain as its file last held it (`None`: not written by this fetcher yet).
    stored: Option<LeaderEpochs>,
    dir: std::path::PathBuf,
    /// The pace of its fetches while its partition moves with a throttle.
    throttle: Option<Throttle>,
}

impl Fetcher {
    /// Fetches over `link` in fetch session `session` until the role changes (`Ok`) or the
    /// session fails (`Err`: the link failed, the leader did not answer in time — the link
    /// is then closed for all its fetchers —, or the answer could not be taken).
    async fn fetch_over(
        &mut self,
        link: &Link,
        session: Session,
        following: &Following,
    ) -> Result<Stop, String> {
        let storage_id = self.shard.cluster.storage_id();
        let me = self.shard.config.node_id.unwrap_or(0);
        let key = self.partition.key.clone();
        loop {
            if current(&self.shard, &self.partition, self.generation).as_ref() != Some(following) {
                return Ok(Stop::Done);
            }
            let (fetch_offset, durable_end) = {
                let log = self.partition.log();
                (log.next_offset(), log.durable_end())
            };
            let request = Request::ReplicaFetch(ReplicaFetchRequest {
                topic: key.topic.clone(),
                partition: spate_proto::PartitionId(key.partition),
                topic_id: following.topic_id,
                replica: me,
                storage_id,
                leader_epoch: following.epoch,
                session: session.number,
                incarnation: session.incarnation,
                fetch_offset: fetch_offset.0,
                last_fetched_epoch: self.epochs.latest_epoch().map(|epoch| epoch.0),
                durable_end: durable_end.0,
                // Throttled, an answer holds about a second's worth (at least one batch).
                max_bytes: self.throttle_rate().map_or(REPLICA_FETCH_BYTES, |rate| {
                    u32::try_from(rate.clamp(1, u64::from(REPLICA_FETCH_BYTES))).unwrap_or(1)
                }),
                max_wait_ms: REPLICA_FETCH_WAIT_MS,
            });
            let mut reported = durable_end;
            // While the fetch is parked, the durable end is reported as it moves.
            let answer = {
                let reporting = async {
                    loop {
                        let (log_end, durable) = {
                            let log = self.partition.log();
                            (log.next_offset(), log.durable_end())
                        };
                        if durable <= reported {
                            // Woken by this partition's syncs, not by the whole shard's.
                            self.partition.wait_durable_progress().await;
                            continue;
                        }
                        reported = durable;
                        let progress = Request::ReplicaProgress(ReplicaProgressRequest {
                            topic: key.topic.clone(),
                            partition: spate_proto::PartitionId(key.partition),
                            topic_id: following.topic_id,
                            replica: me,
                            storage_id,
                            leader_epoch: following.epoch,
                            session: session.number,
                            incarnation: session.incarnation,
                            log_end: log_end.0,
                            durable_end: durable.0,
                        });
                        link.send(&progress).await?;
                    }
                };
                let deadline = async {
                    let asked = std::time::Instant::now();
                    let due =
                        Duration::from_millis(u64::from(REPLICA_FETCH_WAIT_MS)) + ANSWER_GRACE;
                    loop {
                        glommio::timer::sleep(ANSWER_CHECK).await;
                        let waited = asked.elapsed();
                        if waited >= due && link.silent_for() >= ANSWER_GRACE {
                            // Half open or the leader stopped: every fetcher on it connects
                            // again.
                            link.close();
                            return Err("the link to the leader went silent".to_owned());
                        }
                        if waited >= ANSWER_WAIT_MAX {
                            return Err("the leader did not answer a fetch in time".to_owned());
                        }
                    }
                };
                future::or(link.call(&request), future::or(reporting, deadline)).await?
            };
            match answer {
                Response::ReplicaFetch(answer) => {
                    let bytes = u64::try_from(answer.records.len()).unwrap_or(u64::MAX);
                    if let Some(stop) = self.take(fetch_offset, answer).await? {
                        return Ok(stop);
                    }
                    if !self.pace(bytes, following).await {
                        return Ok(Stop::Done);
                    }
                }
                Response::Error { error, .. } => match error.code {
                    ErrorCode::OffsetOutOfRange => {
                        let ErrorDetail::OffsetRange {
                            log_start_offset, ..
                        } = error.detail
                        else {
                            return Err(format!("the leader refused: {error}"));
                        };
                        if let Some(stop) = self
                            .out_of_range(fetch_offset, Offset(log_start_offset))
                            .await
                        {
                            return Ok(stop);
                        }
                        glommio::timer::sleep(REFUSED_WAIT).await;
                    }
                    ErrorCode::FencedLeaderEpoch
                    | ErrorCode::UnknownLeaderEpoch
                    | ErrorCode::NotLeaderOrFollower
                    | ErrorCode::ReplicaNotAvailable
                    | ErrorCode::UnknownTopic
                    | ErrorCode::NotOwner => {
                        // The map will bring the change (or the leader will see it).
                        glommio::timer::sleep(REFUSED_WAIT).await;
                    }
                    _ => return Err(format!("the leader refused: {error}")),
                },
                other => {
                    return Err(format!(
                        "the leader answered a fetch with {:?}",
                        other.api_key()
                    ))
                }
            }
        }
    }

    /// The byte rate this replica catches up at now, as the map says.
    fn throttle_rate(&self) -> Option<u64> {
        let key = &self.partition.key;
        self.shard
            .metadata()
            .cluster
            .as_ref()
            .and_then(|routes| routes.replica(&key.topic, key.partition))
            .and_then(|local| local.throttle)
    }

    /// Waits as the partition's move throttle says after an answer of `bytes` bytes (the
    /// rate is read from the map each time: it ends when the replica is in sync or the move
    /// is done); `false` if the role changed meanwhile.
    async fn pace(&mut self, bytes: u64, following: &Following) -> bool {
        let Some(rate) = self.throttle_rate() else {
            self.throttle = None;
            return true;
        };
        let throttle = match &mut self.throttle {
            Some(throttle) if throttle.rate() == rate => throttle,
            slot => slot.insert(Throttle::new(rate)),
        };
        let mut wait = Duration::from_millis(throttle.take(now(), bytes));
        // In slices, so a role change, the end of the move or a new rate is not waited out.
        while !wait.is_zero() {
            if current(&self.shard, &self.partition, self.generation).as_ref() != Some(following) {
                return false;
            }
            if self.throttle_rate() != Some(rate) {
                return true;
            }
            let slice = wait.min(PACE_SLICE);
            glommio::timer::sleep(slice).await;
            wait -= slice;
        }
        true
    }

    /// The leader does not have this replica's position, `fetch_offset`: if its log starts
    /// past it (retention, DeleteRecords), this replica starts over there — decided under the
    /// replica's turn, while this fetcher is current and its log still ends where it asked.
    /// Anything else (the leader's log ends below it) is waited out.
    async fn out_of_range(&mut self, fetch_offset: Offset, start: Offset) -> Option<Stop> {
        let key = self.partition.key.clone();
        let Ok(_turn) = self
            .partition
            .replica_turn
            .clone()
            .acquire_static_permit(1)
            .await
        else {
            return Some(Stop::Done);
        };
        if current(&self.shard, &self.partition, self.generation).is_none() {
            return Some(Stop::Done);
        }
        if self.partition.log().next_offset() != fetch_offset || start <= fetch_offset {
            tracing::debug!(topic = %key.topic, partition = key.partition, fetch_offset = fetch_offset.0, leader_start = start.0, "the leader refused this replica's offset; asking again");
            return None;
        }
        if let Err(problem) = self.core.handle_out_of_range(fetch_offset, start) {
            self.fence(&problem.to_string()).await;
            return Some(Stop::Done);
        }
        tracing::warn!(topic = %key.topic, partition = key.partition, from = fetch_offset.0, to = start.0, "the leader no longer has this replica's position: starting over at its log start");
        Some(Stop::Reopen(Reopen::Reset(start)))
    }

    /// Takes an answer to a fetch from `from`: a divergence stops the fetcher for a cut,
    /// records are appended (their boundaries entered first).
    async fn take(
        &mut self,
        from: Offset,
        answer: ReplicaFetchResponse,
    ) -> Result<Option<Stop>, String> {
        let key = self.partition.key.clone();
        let Ok(_turn) = self
            .partition
            .replica_turn
            .clone()
            .acquire_static_permit(1)
            .await
        else {
            return Ok(Some(Stop::Done));
        };
        if current(&self.shard, &self.partition, self.generation).is_none() {
            return Ok(Some(Stop::Done));
        }
        let log_end = self.partition.log().next_offset();
        if log_end != from {
            return Ok(None); // the log moved meanwhile: ask again
        }
        if let Some(diverging) = answer.diverging {
            // Epochs start at 1: 0 says the leader's chain has none at or below ours.
            let end = EpochEnd {
                epoch: (diverging.epoch > 0).then_some(LeaderEpoch(diverging.epoch)),
                end: Offset(diverging.end_offset),
            };
            return match self.core.handle_diverging(&self.epochs, log_end, end) {
                Ok(truncation) => {
                    tracing::warn!(topic = %key.topic, partition = key.partition, log_end = log_end.0, to = truncation.to.0, "this replica's log diverges from the leader's: cutting it");
                    Ok(Some(Stop::Reopen(Reopen::Truncate(truncation.to))))
                }
                Err(problem) => {
                    self.fence(&problem.to_string()).await;
                    Ok(Some(Stop::Done))
                }
            };
        }
        let mut to = from;
        let mut batches = Vec::new();
        for batch in spate_format::batches(&answer.records) {
            let batch = batch.map_err(|error| format!("a batch from the leader: {error}"))?;
            to = batch.next_offset();
            let bytes = answer.records.slice_ref(batch.as_bytes());
            batches.push(bytes);
        }
        let boundaries: Vec<EpochStart> = answer
            .epochs
            .iter()
            .map(|boundary| EpochStart {
                epoch: LeaderEpoch(boundary.epoch),
                start: Offset(boundary.start_offset),
            })
            .collect();
        let mut chain = self.epochs.clone();
        if let Err(problem) = self.core.handle_records(
            &mut chain,
            log_end,
            from,
            to,
            &boundaries,
            Offset(answer.high_watermark),
        ) {
            tracing::warn!(topic = %key.topic, partition = key.partition, "an answer from the leader not taken: {problem}");
            return Ok(None);
        }
        // The chain describes the log: the boundaries are durable before their records (and
        // the file no longer names epochs past a cut, once this fetcher wrote it).
        if self.stored.as_ref() != Some(&chain) {
            let dir = self.dir.clone();
            let bytes = chain.to_file();
            let written = glommio::executor()
                .spawn_blocking(move || {
                    crate::durable::replace(&dir, crate::replica::LEADER_EPOCHS_FILE, &bytes)
                })
                .await;
            if let Err(error) = written {
                return Err(format!("cannot write the leader-epochs file: {error}"));
            }
            self.stored = Some(chain.clone());
        }
        self.epochs = chain;
        for batch in batches {
            let len = batch.len() as u64;
            loop {
                self.shard.within_budget().await;
                self.shard.within_room(&self.partition, len).await;
                // Checked with nothing awaited before the append: a role change in between
                // would otherwise let a follower's append land in a leader's epoch.
                if current(&self.shard, &self.partition, self.generation).is_none() {
                    return Ok(Some(Stop::Done));
                }
                let appended = self
                    .partition
                    .with_log(|log| log.handle_replicate(now(), &batch));
                match appended {
                    Ok(_) => break,
                    Err(AppendError::BufferFull { .. }) => continue,
                    Err(AppendError::Fenced(_)) => return Ok(Some(Stop::Done)),
                    Err(problem) => {
                        // The chain describes the log as it is, and the file is written
                        // again before the next records.
                        let log = self.partition.log();
                        self.epochs = chain_of(self.epochs.clone(), &log);
                        self.stored = None;
                        return Err(format!("a batch from the leader not appended: {problem}"));
                    }
                }
            }
            self.partition.ring();
        }
        let high_watermark = self.core.high_watermark();
        self.partition
            .with_log(|log| log.handle_replicated_high_watermark(high_watermark));
        self.follow_log_start(Offset(answer.log_start_offset));
        Ok(None)
    }

    /// Moves this replica's log start to the leader's (its DeleteRecords, its retention), as
    /// far as this replica holds committed records, so a record deleted on the leader is not
    /// served again once this replica leads (Kafka's followers do the same with the
    /// leader's log start offset). Durable as any DeleteRecords: the marker file first.
    fn follow_log_start(&self, leader_start: Offset) {
        let moved = self.partition.with_log(|log| {
            let target = leader_start.min(log.high_watermark());
            if target <= log.log_start() {
                return Ok(false);
            }
            log.handle_delete_records(target).map(|_| true)
        });
        match moved {
            Ok(true) => self.partition.ring(),
            Ok(false) => {}
            Err(refused) => {
                let key = &self.partition.key;
                tracing::warn!(topic = %key.topic, partition = key.partition, leader_start = leader_start.0, "the leader's log start not taken: {refused}");
            }
        }
    }

    /// The leader would have this replica drop what it must keep: one of the logs is damaged.
    async fn fence(&self, problem: &str) {
        let key = &self.partition.key;
        tracing::error!(topic = %key.topic, partition = key.partition, "replica fenced: {problem}");
        let reason = spate_core::FenceReason::Corruption {
            segment: "replication".into(),
            position: 0,
            detail: problem.to_owned(),
        };
        self.shard.fence_corrupt(&self.partition, reason).await;
    }
}
