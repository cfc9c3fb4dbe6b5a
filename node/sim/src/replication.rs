//! The seeded simulation of replication (`spate_core::replica`): one partition with three to
//! five replicas, a model of etcd (the partition state changed only by compare-and-swap on
//! its revision, member keys kept alive by leases, the controller electing leaders from the
//! ISR), and links between the replicas that lose, duplicate, reorder and delay messages.
//! Replicas crash (keeping what they synced and any prefix of the rest), restart, sometimes
//! with a replaced disk (an empty log and a new storage id), and are cut from etcd for a
//! while. The controller is the real one (`spate_core::replica::reconcile`). Producers write to
//! whichever replica acts as leader; consumers read from any that
//! is ready, fencing older epochs as Kafka clients do (KIP-320).
//!
//! Each replica's log is a real `PartitionLog` on its own `SimStorage`: leaders append
//! (`handle_append`) and serve followers up to their written end (`handle_fetch_replica`),
//! followers append the leader's stamped batches (`handle_replicate`) and cut their logs
//! with `Recovery::truncating`, a leader's visible end follows the replicated high watermark
//! (`handle_replicated_high_watermark`), the disk completes requests in a random order, and a
//! crash is the storage model's crash image (torn writes included) recovered by `Recovery`.
//! Beside each log the run keeps its model (per offset, the epoch that wrote it and the
//! write's id, which the record's timestamp carries), checked against the log's actual
//! batches after every crash, truncation and transfer. Invariants checked after every step:
//! - every write acknowledged at the `fsync` level is at its offset in the *committed* log
//!   (the longest prefix any leader reported as below its high watermark), and that log
//!   never changes: every leader's records below its high watermark agree with it;
//! - every member of the ISR in etcd (with the data directory it joined with) holds the
//!   whole committed log, durably;
//! - no two replicas lead the same epoch, and the epoch in etcd only grows;
//! - each replica's epoch chain describes its log (the epoch of every record is the chain's
//!   epoch at its offset);
//! - a consumer never sees the high watermark go back, nor a record change.

use std::collections::BTreeMap;

use bytes::Bytes;
use spate_core::recovery::{Recovered, Recovery};
use spate_core::replica::{
    check_agreement, reconcile, AckState, Action, Agreement, ClusterRead, EpochEnd, EpochStart,
    Follower, IsrMember, Leader, LeaderConfig, LeaderEpoch, LeaderEpochs, LiveMember,
    Member as ClusterMember, PartitionEntry, PartitionState as ControlState, Placement,
    ReplicaError, ReplicaId, SessionId, StorageId, TopicAssignment, TopicId,
};
use spate_core::{FetchPlan, LogConfig, Millis, PartitionLog, ReadDone, Storage};
use spate_format::{batches, BatchBuilder, Offset, Record};
use spate_proto::Durability;

use crate::rng::Rng;
use crate::storage::SimStorage;

/// A member key lives this long after its last renewal.
const LEASE_TTL_MS: i64 = 1_000;
/// A replica stops acting as leader this long before its lease could expire.
const LEASE_MARGIN_MS: i64 = 200;
/// A follower resends a fetch that got no answer after this long.
const FETCH_RESEND_MS: i64 = 150;
/// Bytes per fetch answer (at least one batch).
const FETCH_BYTES_MAX: u32 = 2_048;
/// A record's timestamp is this plus its write's id.
const WRITE_TIME_BASE: i64 = 1_700_000_000_000;
const LAG_MAX_MS: i64 = 400;

/// What a replication run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicationReport {
    pub writes: u64,
    pub acknowledged: u64,
    pub refused_min_insync: u64,
    pub elections: u64,
    pub isr_shrinks: u64,
    pub isr_expansions: u64,
    pub truncations: u64,
    pub crashes: u64,
    pub disks_replaced: u64,
    pub etcd_cuts: u64,
    pub reads: u64,
    pub committed: u64,
    pub log_start_moves: u64,
    pub resets: u64,
    /// Reassignments started (a target set), and those whose target was reached.
    pub moves: u64,
    pub moves_done: u64,
    /// Replicas removed from their node (their log deleted).
    pub replicas_removed: u64,
    /// Nodes decommissioned or taken back.
    pub decommissions: u64,
}

impl ReplicationReport {
    pub fn add(&mut self, other: &ReplicationReport) {
        self.writes += other.writes;
        self.acknowledged += other.acknowledged;
        self.refused_min_insync += other.refused_min_insync;
        self.elections += other.elections;
        self.isr_shrinks += other.isr_shrinks;
        self.isr_expansions += other.isr_expansions;
        self.truncations += other.truncations;
        self.crashes += other.crashes;
        self.disks_replaced += other.disks_replaced;
        self.etcd_cuts += other.etcd_cuts;
        self.reads += other.reads;
        self.committed += other.committed;
        self.log_start_moves += other.log_start_moves;
        self.resets += other.resets;
        self.moves += other.moves;
        self.moves_done += other.moves_done;
        self.replicas_removed += other.replicas_removed;
        self.decommissions += other.decommissions;
    }
}

/// The index of `offset` in a simulated log (which starts at offset 0).
fn at(offset: Offset) -> usize {
    // A seed writes a few thousand records: offsets stay far below usize::MAX.
    usize::try_from(offset.0).expect("a simulated log fits in memory")
}

/// A small random number from the seed's generator, as a count.
fn small(value: u64) -> u32 {
    // Only called with ranges of a few units (replica counts, min.insync.replicas).
    u32::try_from(value).expect("a small range")
}

/// The model's entry for an offset below a replica's log start (deleted, or never fetched
/// after a reset): it matches anything.
const GONE: u64 = u64::MAX;

/// One record of a replica's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    epoch: LeaderEpoch,
    write: u64,
}

/// The log settings of every replica: small segments (rolls and cuts across segments), a
/// short flush interval.
fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        segment_ms: 1_000_000,
        retention_ms: None,
        retention_bytes: None,
        flush_interval_ms: 5,
        flush_bytes: 16 << 10,
        preallocate_bytes: 16 << 10,
        tail_cache_bytes: 16 << 10,
        fetch_read_bytes: 4 << 10,
        fetch_waiters_max: 16,
        producer_expiry_ms: spate_core::config::PRODUCER_EXPIRY_MS_DEFAULT,
    }
}

/// A replica's disk and the log on it: what survives a crash is what the storage model keeps
/// and recovery finds; a replacement starts empty.
struct Disk {
    storage: StorageId,
    files: SimStorage,
    plog: PartitionLog,
    /// The model: per offset, the epoch and the write.
    log: Vec<Entry>,
    /// Stored whole and synced at each change (the design's `leader-epochs` file).
    epochs: LeaderEpochs,
}

/// Drives `recovery` on `files` to its end.
fn drive(files: &mut SimStorage, mut recovery: Recovery) -> Result<Recovered, String> {
    loop {
        while let Some(request) = recovery.poll_io() {
            files.submit(request);
        }
        if let Some(result) = recovery.poll_done() {
            return result.map_err(|error| format!("recovery failed: {error}"));
        }
        if !files.complete_one() {
            return Err("recovery stuck".to_owned());
        }
        while let Some(done) = files.poll_done() {
            recovery.handle_io_done(done);
        }
    }
}

impl Disk {
    fn new(storage: StorageId, seed: u64) -> Self {
        Self {
            storage,
            files: SimStorage::new(seed),
            plog: PartitionLog::new(log_config(), Offset(0)),
            log: Vec::new(),
            epochs: LeaderEpochs::new(),
        }
    }

    fn end(&self) -> Offset {
        self.plog.next_offset()
    }

    fn durable(&self) -> Offset {
        self.plog.durable_end()
    }

    /// Records durable (the model's count).
    fn synced(&self) -> usize {
        at(self.durable())
    }

    /// The log start: offsets below it are gone (DeleteRecords, or a reset).
    fn start(&self) -> Offset {
        self.plog.log_start()
    }

    /// A follower behind its leader's log start starts over there: the partition closes (its
    /// requests complete) and is reset by `Recovery::resetting`.
    fn reset(&mut self, now: Millis, start: Offset) -> Result<(), String> {
        self.settle(now);
        let listing = self.files.list().map_err(|error| error.to_string())?;
        let recovered = drive(
            &mut self.files,
            Recovery::resetting(log_config(), &listing, start),
        )?;
        self.plog = recovered.log;
        self.log = vec![
            Entry {
                epoch: LeaderEpoch(0),
                write: GONE,
            };
            at(start)
        ];
        self.epochs = LeaderEpochs::new();
        self.check_contents(now)
    }

    /// Hands the log's requests to the disk and up to `completions` completions back.
    fn run(&mut self, now: Millis, completions: u64) {
        self.plog.handle_tick(now);
        for _ in 0..=completions {
            while let Some(request) = self.plog.poll_io() {
                self.files.submit(request);
            }
            while self.plog.poll_event().is_some() {}
            if !self.files.complete_one() {
                break;
            }
            while let Some(done) = self.files.poll_done() {
                self.plog.handle_io_done(now, done);
            }
        }
        while let Some(request) = self.plog.poll_io() {
            self.files.submit(request);
        }
        while self.plog.poll_event().is_some() {}
    }

    /// Every request completed (a partition closing waits for this).
    fn settle(&mut self, now: Millis) {
        loop {
            self.run(now, 64);
            if self.files.in_flight() == 0 && self.plog.is_idle() {
                return;
            }
        }
    }

    /// A leader's append of `write` in `epoch`; false when the log refuses it (back-pressure).
    fn append(&mut self, now: Millis, epoch: LeaderEpoch, write: u64, value_len: usize) -> bool {
        let mut builder = BatchBuilder::new();
        let value = vec![0x5a; value_len];
        let pushed = builder.push(&Record {
            timestamp: WRITE_TIME_BASE + i64::try_from(write).unwrap_or(i64::MAX),
            value: Some(&value),
            ..Record::default()
        });
        let Ok(built) = pushed.and_then(|()| builder.finish()) else {
            return false;
        };
        match self
            .plog
            .handle_append(now, &Bytes::from(built), Durability::Fsync)
        {
            Ok(ticket) => {
                assert_eq!(
                    at(ticket.base_offset),
                    self.log.len(),
                    "the model keeps pace"
                );
                self.log.push(Entry { epoch, write });
                true
            }
            Err(_) => false,
        }
    }

    /// What a leader sends a follower fetching from `from`: whole batches up to its written
    /// end, at most `FETCH_BYTES_MAX`.
    fn read_for_replica(&mut self, now: Millis, from: Offset) -> Result<Vec<Bytes>, String> {
        let bytes = match self.plog.handle_fetch_replica(from, FETCH_BYTES_MAX) {
            Ok(FetchPlan::Ready(bytes)) => bytes,
            Ok(FetchPlan::AtEnd) => Bytes::new(),
            Ok(FetchPlan::Read(mut plan)) => loop {
                let data = self
                    .files
                    .read_now(&plan.file, plan.position, plan.len)
                    .ok_or("a read of a missing file")?;
                match self.plog.handle_read(now, &plan, &data, 0) {
                    Ok(ReadDone::Answer(bytes)) => break bytes,
                    Ok(ReadDone::More(more)) => plan = more,
                    Err(error) => return Err(format!("a replica read failed: {error}")),
                }
            },
            Err(error) => return Err(format!("a replica fetch at {from} failed: {error}")),
        };
        let mut out = Vec::new();
        for batch in batches(&bytes) {
            let batch = batch.map_err(|error| format!("a fetched batch is damaged: {error}"))?;
            out.push(bytes.slice_ref(batch.as_bytes()));
        }
        Ok(out)
    }

    /// A follower's append of the leader's batches (their model entries alongside).
    fn replicate(
        &mut self,
        now: Millis,
        batches: &[Bytes],
        entries: &[Entry],
    ) -> Result<(), String> {
        for (batch, entry) in batches.iter().zip(entries) {
            let parsed = spate_format::BatchRef::parse(batch)
                .map_err(|error| format!("a replicated batch is damaged: {error}"))?;
            if write_of(&parsed) != entry.write {
                return Err(format!(
                    "the leader sent write {} for the model's {}",
                    write_of(&parsed),
                    entry.write
                ));
            }
            self.plog
                .handle_replicate(now, batch)
                .map_err(|error| format!("a follower refused a continuing batch: {error}"))?;
            self.log.push(*entry);
        }
        Ok(())
    }

    /// A follower's truncation: the partition closes (its requests complete), is recovered
    /// cut at `to`, and opens again.
    fn truncate(&mut self, now: Millis, to: Offset) -> Result<(), String> {
        self.settle(now);
        let listing = self.files.list().map_err(|error| error.to_string())?;
        let recovered = drive(
            &mut self.files,
            Recovery::truncating(log_config(), &listing, to),
        )?;
        if let Some(damage) = recovered.report.corruption {
            return Err(format!("a truncation at {to} found damage: {damage}"));
        }
        self.plog = recovered.log;
        self.log.truncate(at(to));
        self.epochs.truncate_from_end(to);
        self.check_contents(now)
    }

    /// A crash: what the disk keeps (the storage model's image), recovered.
    fn crash(&mut self, now: Millis, seed: u64) -> Result<(), String> {
        let durable = self.durable();
        self.files = self.files.crash(seed);
        let listing = self.files.list().map_err(|error| error.to_string())?;
        let recovered = drive(&mut self.files, Recovery::new(log_config(), &listing))?;
        if let Some(damage) = recovered.report.corruption {
            return Err(format!("recovery after a crash found damage: {damage}"));
        }
        let end = recovered.log.next_offset();
        if end < durable {
            return Err(format!(
                "a crash lost durable records: {end} survived of {durable}"
            ));
        }
        self.plog = recovered.log;
        self.log.truncate(at(end));
        self.epochs.truncate_from_end(end);
        self.check_contents(now)
    }

    /// The log's actual batches are the model's writes at the model's offsets.
    fn check_contents(&mut self, now: Millis) -> Result<(), String> {
        let mut offset = self.plog.log_start();
        while offset < self.end() {
            let fetched = self.read_for_replica(now, offset)?;
            if fetched.is_empty() {
                return Err(format!(
                    "nothing to read at {offset} below the end {}",
                    self.end()
                ));
            }
            for batch in fetched {
                let parsed = spate_format::BatchRef::parse(&batch)
                    .map_err(|error| format!("a batch is damaged: {error}"))?;
                let expected = self
                    .log
                    .get(at(parsed.base_offset()))
                    .map(|entry| entry.write);
                if parsed.base_offset() != offset
                    || (expected != Some(write_of(&parsed)) && expected != Some(GONE))
                {
                    return Err(format!(
                        "the log holds write {} at {}, the model {expected:?} at {offset}",
                        write_of(&parsed),
                        parsed.base_offset()
                    ));
                }
                offset = parsed.next_offset();
            }
        }
        Ok(())
    }
}

/// The write a batch carries (its timestamp).
fn write_of(batch: &spate_format::BatchRef<'_>) -> u64 {
    u64::try_from(batch.first_timestamp() - WRITE_TIME_BASE).unwrap_or(u64::MAX)
}

/// The partition's state in etcd, with its assignment (the topic key's part of it: its
/// replicas change by the controller's move steps, without the partition key's revision).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionState {
    leader: Option<(ReplicaId, u64)>,
    epoch: LeaderEpoch,
    isr: Vec<IsrMember>,
    /// The partition key's revision (what a leader's ISR change compares).
    revision: u64,
    /// The assigned replicas, in preference order.
    replicas: Vec<ReplicaId>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    session: u64,
    storage: StorageId,
    expires: Millis,
}

struct Etcd {
    partition: PartitionState,
    members: BTreeMap<ReplicaId, Member>,
    /// A reassignment in progress: its target and the replicas before it.
    target: Option<(Vec<ReplicaId>, Vec<ReplicaId>)>,
    /// A decommissioned node (its replica moves to another node).
    decommissioned: Option<ReplicaId>,
}

enum Role {
    None,
    Leader {
        core: Leader,
        /// `fsync` writes waiting: the offset after each, its offset and write id.
        acks: Vec<(Offset, Offset, u64)>,
        /// The revision of the partition state the leader's ISR comes from.
        revision: u64,
        /// An ISR change sent to etcd: the proposal, the revision it compares (the one the
        /// proposal was made from), and when it reaches etcd.
        cas: Option<(Vec<IsrMember>, u64, Millis)>,
    },
    Follower {
        core: Follower,
        /// The fetch in flight: sent at, its offset and last epoch.
        fetch: Option<(Millis, Offset, Option<LeaderEpoch>)>,
        durable_sent: Offset,
        /// The link its messages go over: a new one whenever its log was opened again (a
        /// cut, a start over), numbered in order. On the node this is the fetch session:
        /// the follower starts a new one (a new fetcher, over the shared connection to the
        /// leader's shard or a new one), ordered by the connection's number, then by the
        /// follower's session number.
        link: u64,
    },
}

struct Node {
    id: ReplicaId,
    disk: Disk,
    up: bool,
    down_until: Millis,
    session: u64,
    renewed: Option<Millis>,
    etcd_cut_until: Millis,
    view: Option<PartitionState>,
    role: Role,
    /// The high watermark this replica knew last (kept across roles, not across crashes).
    high_watermark: Offset,
}

#[derive(Debug, Clone)]
enum Message {
    Fetch {
        epoch: LeaderEpoch,
        storage: StorageId,
        link: u64,
        fetch_offset: Offset,
        last_epoch: Option<LeaderEpoch>,
        durable_end: Offset,
    },
    Progress {
        epoch: LeaderEpoch,
        storage: StorageId,
        link: u64,
        log_end: Offset,
        durable_end: Offset,
    },
    Records {
        epoch: LeaderEpoch,
        from: Offset,
        batches: Vec<Bytes>,
        entries: Vec<Entry>,
        boundaries: Vec<EpochStart>,
        high_watermark: Offset,
    },
    Diverging {
        epoch: LeaderEpoch,
        fetch_offset: Offset,
        last_epoch: Option<LeaderEpoch>,
        end: EpochEnd,
    },
    OutOfRange {
        epoch: LeaderEpoch,
        fetch_offset: Offset,
        log_start: Offset,
    },
    Refused,
}

impl Message {
    /// The follower's link a fetch or a report goes over (0 for the leader's answers, which
    /// travel on their fetch's).
    fn link(&self) -> u64 {
        match self {
            Message::Fetch { link, .. } | Message::Progress { link, .. } => *link,
            _ => 0,
        }
    }
}

struct Envelope {
    at: Millis,
    from: ReplicaId,
    to: ReplicaId,
    /// The follower's link the message travels on: its own for a fetch or a report, the
    /// fetch's for an answer. As on the node, where an answer comes back to the fetcher
    /// that sent its fetch (by correlation id) and a follower that cut or reset its log
    /// fetches anew in a new session, a follower takes answers of its current link only.
    link: u64,
    message: Message,
}

struct Consumer {
    epoch: LeaderEpoch,
    high_watermark: Offset,
}

struct Run {
    rng: Rng,
    now: Millis,
    etcd: Etcd,
    nodes: Vec<Node>,
    /// The replication factor the topic was created with (a move may change the count).
    factor: usize,
    config: LeaderConfig,
    links: Vec<Envelope>,
    committed: Vec<u64>,
    leaders_by_epoch: BTreeMap<LeaderEpoch, ReplicaId>,
    consumers: Vec<Consumer>,
    next_write: u64,
    next_session: u64,
    next_storage: u64,
    /// The next link a follower's messages go over (links are numbered in order).
    next_link: u64,
    report: ReplicationReport,
}

/// Runs one seed for `steps` steps; an invariant broken is an error naming the seed.
pub fn run_replication_seed(seed: u64, steps: u32) -> Result<ReplicationReport, String> {
    let mut run = Run::new(seed);
    for step in 0..steps {
        run.step()
            .and_then(|()| run.check())
            .map_err(|problem| format!("replication seed {seed}, step {step}: {problem}"))?;
    }
    run.report.committed = run.committed.len() as u64;
    Ok(run.report)
}

pub fn run_replication_seeds(
    first: u64,
    count: u64,
    steps: u32,
) -> Result<ReplicationReport, String> {
    let mut total = ReplicationReport::default();
    for seed in first..first + count {
        total.add(&run_replication_seed(seed, steps)?);
    }
    Ok(total)
}

impl Run {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5eed_0f2e_911c_a7e0);
        let count = small(rng.range(3, 5));
        let replicas: Vec<ReplicaId> = (1..=count).map(ReplicaId).collect();
        let min_insync = small(rng.range(1, u64::from(count.min(3))));
        // One node more than the partition's replicas: a move has somewhere to go.
        let nodes = (1..=count + 1)
            .map(ReplicaId)
            .collect::<Vec<_>>()
            .iter()
            .map(|&id| Node {
                id,
                disk: Disk::new(StorageId(u64::from(id.0)), seed ^ u64::from(id.0)),
                up: true,
                down_until: Millis(0),
                session: 0,
                renewed: None,
                etcd_cut_until: Millis(0),
                view: None,
                role: Role::None,
                high_watermark: Offset(0),
            })
            .collect();
        let isr = replicas
            .iter()
            .map(|&replica| IsrMember {
                replica,
                storage: StorageId(u64::from(replica.0)),
            })
            .collect();
        Self {
            rng,
            now: Millis(0),
            etcd: Etcd {
                partition: PartitionState {
                    leader: None,
                    epoch: LeaderEpoch(0),
                    isr,
                    revision: 1,
                    replicas: replicas.clone(),
                },
                members: BTreeMap::new(),
                target: None,
                decommissioned: None,
            },
            nodes,
            factor: replicas.len(),
            config: LeaderConfig {
                min_insync,
                lag_max_ms: LAG_MAX_MS,
            },
            links: Vec::new(),
            committed: Vec::new(),
            leaders_by_epoch: BTreeMap::new(),
            consumers: (0..2)
                .map(|_| Consumer {
                    epoch: LeaderEpoch(0),
                    high_watermark: Offset(0),
                })
                .collect(),
            next_write: 0,
            next_session: 1,
            next_storage: 1_000,
            next_link: 1,
            report: ReplicationReport::default(),
        }
    }

    fn step(&mut self) -> Result<(), String> {
        self.now = Millis(self.now.0 + self.rng.range(1, 20) as i64);
        self.faults()?;
        self.etcd_tick();
        if self.rng.chance(1, 300) {
            self.operator();
        }
        if self.rng.chance(1, 3) {
            self.controller();
        }
        for index in 0..self.nodes.len() {
            self.node_tick(index)?;
        }
        self.deliver()?;
        if self.rng.chance(1, 2) {
            self.produce()?;
        }
        if self.rng.chance(1, 4) {
            self.consume()?;
        }
        Ok(())
    }

    fn faults(&mut self) -> Result<(), String> {
        let index = self.rng.index(self.nodes.len());
        let now = self.now;
        if self.nodes[index].up && self.rng.chance(1, 400) {
            self.crash(index)?;
        } else if !self.nodes[index].up && now >= self.nodes[index].down_until {
            self.restart(index);
        }
        if self.rng.chance(1, 500) {
            let index = self.rng.index(self.nodes.len());
            self.nodes[index].etcd_cut_until = Millis(now.0 + self.rng.range(100, 2_500) as i64);
            self.report.etcd_cuts += 1;
        }
        Ok(())
    }

    /// A crash: the disk keeps what the storage model's crash image keeps, recovered (the
    /// chain describes the surviving log).
    fn crash(&mut self, index: usize) -> Result<(), String> {
        let now = self.now;
        let seed = self.rng.next_u64();
        let down_for = self.rng.range(50, 2_000) as i64;
        let node = &mut self.nodes[index];
        node.disk
            .crash(now, seed)
            .map_err(|problem| format!("replica {}: {problem}", node.id))?;
        node.up = false;
        node.down_until = Millis(now.0 + down_for);
        node.role = Role::None;
        node.view = None;
        node.renewed = None;
        node.high_watermark = Offset(0);
        self.links
            .retain(|envelope| envelope.to != node.id && envelope.from != node.id);
        self.report.crashes += 1;
        Ok(())
    }

    /// A restarted replica revokes its previous lease (its id is stored in the data
    /// directory) and registers a new session. Sometimes its disk was replaced: allowed only
    /// while another ISR member holds the committed log on a disk of its own.
    fn restart(&mut self, index: usize) {
        let id = self.nodes[index].id;
        let others_in_sync = self
            .etcd
            .partition
            .isr
            .iter()
            .filter(|member| member.replica != id)
            .filter(|member| {
                self.nodes
                    .iter()
                    .any(|node| node.id == member.replica && node.disk.storage == member.storage)
            })
            .count();
        if others_in_sync >= 1 && self.rng.chance(1, 8) {
            self.next_storage += 1;
            let seed = self.rng.next_u64();
            self.nodes[index].disk = Disk::new(StorageId(self.next_storage), seed);
            self.report.disks_replaced += 1;
        }
        self.etcd.members.remove(&id);
        let node = &mut self.nodes[index];
        node.up = true;
        node.session = self.next_session;
        self.next_session += 1;
    }

    /// Leases expire by etcd's clock; reachable replicas renew theirs, or register with a new
    /// lease once theirs is gone (a new session: leader entries naming the old one are dead,
    /// to the controller and to the replica itself).
    fn etcd_tick(&mut self) {
        let now = self.now;
        self.etcd.members.retain(|_, member| member.expires > now);
        for node in &mut self.nodes {
            if !node.up || now < node.etcd_cut_until {
                continue;
            }
            match self.etcd.members.get_mut(&node.id) {
                Some(member) if member.session == node.session => {
                    member.expires = Millis(now.0 + LEASE_TTL_MS);
                    node.renewed = Some(now);
                }
                Some(_) => {}
                None => {
                    if node.renewed.is_some() {
                        node.session = self.next_session;
                        self.next_session += 1;
                    }
                    self.etcd.members.insert(
                        node.id,
                        Member {
                            session: node.session,
                            storage: node.disk.storage,
                            expires: Millis(now.0 + LEASE_TTL_MS),
                        },
                    );
                    node.renewed = Some(now);
                }
            }
            // The watch delivers the current state, sometimes late (never an older one).
            if self.rng.chance(2, 3) {
                node.view = Some(self.etcd.partition.clone());
            }
        }
    }

    /// An operator moves the partition (a reassignment to 1 to `factor` nodes in a random
    /// order), or cancels the move in progress (back to the replicas before it).
    fn operator(&mut self) {
        let nodes: Vec<ReplicaId> = self.nodes.iter().map(|node| node.id).collect();
        // Now and then a node is decommissioned (or taken back): its replica moves to the
        // node that has none, keeping the replication factor.
        if self.rng.chance(1, 4) {
            self.etcd.decommissioned = match self.etcd.decommissioned {
                Some(_) => None,
                None => Some(nodes[self.rng.index(nodes.len())]),
            };
            self.report.decommissions += 1;
            return;
        }
        match &mut self.etcd.target {
            Some((target, original)) => {
                if self.rng.chance(1, 3) {
                    *target = original.clone();
                }
            }
            None => {
                let mut pool = nodes;
                let mut target = Vec::new();
                let factor = u64::try_from(self.factor).unwrap_or(1);
                let size = usize::try_from(self.rng.range(1, factor)).unwrap_or(1);
                while target.len() < size && !pool.is_empty() {
                    target.push(pool.swap_remove(self.rng.index(pool.len())));
                }
                let original = self.etcd.partition.replicas.clone();
                self.etcd.target = Some((target, original));
                self.report.moves += 1;
            }
        }
    }

    /// The controller (`spate_core::replica::reconcile`, over a read of the one topic and
    /// its partition, applied atomically: the model's controller reads and writes at one
    /// revision): elects a leader from the live ISR when the leader's session is gone,
    /// removes dead members (keeping the last one), and moves the partition a step towards a
    /// reassignment's target.
    fn controller(&mut self) {
        let state = &self.etcd.partition;
        let current = ControlState {
            leader: state
                .leader
                .map(|(leader, session)| (leader, SessionId(session))),
            epoch: state.epoch,
            isr: state.isr.clone(),
        };
        let members = self
            .etcd
            .members
            .iter()
            .map(|(&replica, member)| {
                let live = LiveMember {
                    session: SessionId(member.session),
                    storage: member.storage,
                };
                (replica, ClusterMember { live, shards: 1 })
            })
            .collect();
        let topic = TopicAssignment {
            id: TopicId(1),
            replicas: vec![state
                .replicas
                .iter()
                .map(|&node| Placement { node, shard: 0 })
                .collect()],
            factor: u32::try_from(self.factor).unwrap_or(u32::MAX),
            targets: self
                .etcd
                .target
                .iter()
                .map(|(target, _)| (0, target.clone()))
                .collect(),
        };
        let name = || String::from("t");
        let read = ClusterRead {
            members,
            topics: [(name(), Some(topic))].into(),
            topics_complete: true,
            partitions_complete: true,
            partitions: [(
                (name(), 0),
                Some(PartitionEntry {
                    topic_id: TopicId(1),
                    state: current.clone(),
                }),
            )]
            .into(),
            excluded: self.etcd.decommissioned.into_iter().collect(),
            ..ClusterRead::default()
        };
        for action in reconcile(&read) {
            let (next, replicas, finished) = match action {
                Action::Change { state, .. } => (Some(state), None, false),
                Action::Reassign {
                    replicas,
                    state,
                    finished,
                    ..
                } => (state, Some(replicas), finished),
                other => panic!("the controller of one existing partition did {other:?}"),
            };
            if let Some(next) = next {
                if next.epoch > current.epoch {
                    self.report.elections += 1;
                }
                let partition = &mut self.etcd.partition;
                partition.leader = next.leader.map(|(leader, session)| (leader, session.0));
                partition.epoch = next.epoch;
                partition.isr = next.isr;
                partition.revision += 1;
            }
            if let Some(replicas) = replicas {
                self.etcd.partition.replicas = replicas.iter().map(|at| at.node).collect();
            }
            if finished {
                self.etcd.target = None;
                self.report.moves_done += 1;
            }
        }
    }

    fn node_tick(&mut self, index: usize) -> Result<(), String> {
        if !self.nodes[index].up {
            return Ok(());
        }
        self.adopt_view(index)?;
        let now = self.now;
        // The disk completes some of its requests.
        let completions = self.rng.below(4);
        self.nodes[index].disk.run(now, completions);
        let cas_delay = Millis(now.0 + self.rng.range(1, 50) as i64);
        let delete_to = self.rng.chance(1, 150).then(|| self.rng.next_u64());
        let reachable = now >= self.nodes[index].etcd_cut_until;
        let node = &mut self.nodes[index];
        let storage = node.disk.storage;
        let id = node.id;
        let durable = node.disk.durable();
        let log_end = node.disk.end();
        let last_epoch = node.disk.epochs.latest_epoch();
        let mut outgoing = Vec::new();
        let mut wrote = None;
        match &mut node.role {
            Role::None => {}
            Role::Leader {
                core,
                cas,
                revision,
                ..
            } => {
                core.handle_appended(log_end);
                core.handle_durable(durable);
                // Now and then records are deleted below the high watermark (DeleteRecords):
                // followers behind the new log start must start over.
                if let Some(choice) = delete_to {
                    let (start, high) = (node.disk.start(), core.high_watermark());
                    if high > start {
                        let to = Offset(start.0 + 1 + choice % (high.0 - start.0));
                        if node.disk.plog.handle_delete_records(to).is_ok() {
                            self.report.log_start_moves += 1;
                        }
                    }
                }
                node.disk
                    .plog
                    .handle_replicated_high_watermark(core.high_watermark());
                let visible = node.disk.plog.high_watermark();
                if visible != core.high_watermark().min(durable) {
                    return Err(format!(
                        "leader {id}'s log shows {visible}, its high watermark is {} and its durable end {durable}",
                        core.high_watermark()
                    ));
                }
                match cas.take() {
                    None => {
                        *cas = core
                            .poll_isr_change(now)
                            .map(|proposal| (proposal, *revision, cas_delay));
                    }
                    Some((proposal, compare, at)) if now >= at => {
                        // The compare-and-swap reaches etcd only if the replica does, and
                        // succeeds only on the revision the leader's ISR came from.
                        let state = &mut self.etcd.partition;
                        if reachable && state.revision == compare {
                            if proposal.len() < state.isr.len() {
                                self.report.isr_shrinks += 1;
                            } else {
                                self.report.isr_expansions += 1;
                            }
                            state.isr = proposal.clone();
                            state.revision += 1;
                            *revision = state.revision;
                            core.handle_isr_changed(proposal);
                            wrote = Some(state.clone());
                        } else {
                            core.handle_isr_change_failed();
                        }
                    }
                    in_flight => *cas = in_flight,
                }
            }
            Role::Follower {
                core,
                fetch,
                durable_sent,
                link,
            } => {
                let link = *link;
                let leader = core.leader();
                let epoch = core.epoch();
                let resend = fetch.is_none_or(|(sent, ..)| now.0 - sent.0 >= FETCH_RESEND_MS);
                if resend {
                    *fetch = Some((now, log_end, last_epoch));
                    *durable_sent = durable;
                    outgoing.push((
                        leader,
                        Message::Fetch {
                            epoch,
                            storage,
                            link,
                            fetch_offset: log_end,
                            last_epoch,
                            durable_end: durable,
                        },
                    ));
                } else if durable > *durable_sent {
                    *durable_sent = durable;
                    outgoing.push((
                        leader,
                        Message::Progress {
                            epoch,
                            storage,
                            link,
                            log_end,
                            durable_end: durable,
                        },
                    ));
                }
            }
        }
        // A replica knows what it wrote: its view includes its own compare-and-swap (were it
        // to step down and lead again before the watch delivers it, it must not lead with an
        // older ISR).
        if let Some(state) = wrote {
            let node = &mut self.nodes[index];
            if node
                .view
                .as_ref()
                .is_none_or(|view| view.revision < state.revision)
            {
                node.view = Some(state);
            }
        }
        for (to, message) in outgoing {
            self.send(id, to, message.link(), &message);
        }
        self.settle_acks(index)
    }

    /// A replica acts on the newest partition state it saw: it leads an epoch it was given
    /// (with the session it has now, while its lease holds), follows the leader otherwise.
    fn adopt_view(&mut self, index: usize) -> Result<(), String> {
        let now = self.now;
        let node = &self.nodes[index];
        let lease_holds = node
            .renewed
            .is_some_and(|renewed| now.0 < renewed.0 + LEASE_TTL_MS - LEASE_MARGIN_MS);
        let Some(view) = node.view.clone() else {
            return Ok(());
        };
        let current_epoch = match &node.role {
            Role::None => None,
            Role::Leader { core, .. } => Some(core.epoch()),
            Role::Follower { core, .. } => Some(core.epoch()),
        };
        let leads = matches!(node.role, Role::Leader { .. });
        if leads && !lease_holds {
            // Its lease may be gone: stop leading before etcd can have given the partition
            // to another replica.
            self.step_down(index);
            return Ok(());
        }
        if !view.replicas.contains(&node.id) {
            // No longer a replica (a move removed it): it stops, and its log is deleted.
            self.step_down(index);
            let seed = self.rng.next_u64();
            let node = &mut self.nodes[index];
            if node.disk.end() > Offset(0) || node.disk.start() > Offset(0) {
                node.disk = Disk::new(node.disk.storage, seed);
                node.high_watermark = Offset(0);
                self.report.replicas_removed += 1;
            }
            return Ok(());
        }
        if current_epoch.is_some_and(|epoch| epoch > view.epoch) {
            return Ok(());
        }
        match view.leader {
            Some((leader, session)) if leader == node.id => {
                if session != node.session || !lease_holds {
                    return Ok(());
                }
                if current_epoch == Some(view.epoch) && leads {
                    // A newer state of this epoch (the controller removed a dead member):
                    // any change in flight will fail on the revision.
                    if let Role::Leader { core, revision, .. } = &mut self.nodes[index].role {
                        if view.revision > *revision {
                            *revision = view.revision;
                            core.handle_isr_changed(view.isr.clone());
                        }
                        // A move added or removed replicas within the epoch.
                        if core.replicas() != view.replicas.as_slice() {
                            core.handle_replicas_changed(now, view.replicas.clone());
                        }
                    }
                    return Ok(());
                }
                if current_epoch == Some(view.epoch) {
                    return Ok(());
                }
                self.become_leader(index, &view)
            }
            Some((leader, _)) => {
                if current_epoch == Some(view.epoch) && !leads {
                    return Ok(());
                }
                self.step_down(index);
                let link = self.next_link;
                self.next_link += 1;
                let node = &mut self.nodes[index];
                node.role = Role::Follower {
                    core: Follower::new(leader, view.epoch, node.high_watermark),
                    fetch: None,
                    durable_sent: Offset(0),
                    link,
                };
                Ok(())
            }
            None => {
                self.step_down(index);
                Ok(())
            }
        }
    }

    fn become_leader(&mut self, index: usize, view: &PartitionState) -> Result<(), String> {
        self.step_down(index);
        let now = self.now;
        let config = self.config;
        let replicas = view.replicas.clone();
        let node = &mut self.nodes[index];
        if let Some(&other) = self.leaders_by_epoch.get(&view.epoch) {
            if other != node.id {
                return Err(format!(
                    "replicas {other} and {} both lead epoch {}",
                    node.id, view.epoch
                ));
            }
        }
        self.leaders_by_epoch.insert(view.epoch, node.id);
        let log_end = node.disk.end();
        node.disk
            .epochs
            .assign(view.epoch, log_end)
            .map_err(|error| format!("replica {} taking epoch {}: {error}", node.id, view.epoch))?;
        node.disk
            .plog
            .handle_replicated_high_watermark(node.high_watermark);
        let me = IsrMember {
            replica: node.id,
            storage: node.disk.storage,
        };
        let core = Leader::new(
            now,
            me,
            view.epoch,
            replicas,
            view.isr.clone(),
            log_end,
            node.disk.durable(),
            node.high_watermark,
            config,
        );
        node.role = Role::Leader {
            core,
            acks: Vec::new(),
            revision: view.revision,
            cas: None,
        };
        Ok(())
    }

    fn step_down(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.high_watermark = match &node.role {
            Role::None => node.high_watermark,
            Role::Leader { core, .. } => core.high_watermark(),
            Role::Follower { core, .. } => core.high_watermark(),
        };
        // Waiting acknowledgements are answered NOT_LEADER: their writes may or may not last.
        node.role = Role::None;
    }

    fn send(&mut self, from: ReplicaId, to: ReplicaId, link: u64, message: &Message) {
        if self.rng.chance(1, 20) {
            return;
        }
        let copies = if self.rng.chance(1, 30) { 2 } else { 1 };
        for _ in 0..copies {
            let at = Millis(self.now.0 + self.rng.range(1, 60) as i64);
            self.links.push(Envelope {
                at,
                from,
                to,
                link,
                message: message.clone(),
            });
        }
    }

    fn deliver(&mut self) -> Result<(), String> {
        let now = self.now;
        let mut due = Vec::new();
        let mut index = 0;
        while index < self.links.len() {
            if self.links[index].at <= now {
                due.push(self.links.swap_remove(index));
            } else {
                index += 1;
            }
        }
        // swap_remove and the random delays already mix the order.
        for envelope in due {
            let Some(to) = self.nodes.iter().position(|node| node.id == envelope.to) else {
                continue;
            };
            if !self.nodes[to].up {
                continue;
            }
            match envelope.message {
                Message::Fetch { .. } | Message::Progress { .. } => {
                    self.leader_receives(to, envelope.from, &envelope.message)?;
                }
                _ => self.follower_receives(to, envelope.from, envelope.link, envelope.message)?,
            }
        }
        Ok(())
    }

    fn leader_receives(
        &mut self,
        index: usize,
        from: ReplicaId,
        message: &Message,
    ) -> Result<(), String> {
        let now = self.now;
        let node = &mut self.nodes[index];
        let id = node.id;
        let Role::Leader { core, .. } = &mut node.role else {
            if matches!(message, Message::Fetch { .. }) {
                self.send(id, from, message.link(), &Message::Refused);
            }
            return Ok(());
        };
        let answer = match *message {
            Message::Fetch {
                epoch,
                storage,
                link,
                fetch_offset,
                last_epoch,
                durable_end,
            } => {
                if core.check_epoch(epoch).is_err() {
                    Some(Message::Refused)
                } else {
                    let log_end = node.disk.end();
                    let log_start = node.disk.start();
                    node.disk.epochs.truncate_from_start(log_start);
                    match check_agreement(&node.disk.epochs, log_end, fetch_offset, last_epoch) {
                        Agreement::Diverging(end) => Some(Message::Diverging {
                            epoch,
                            fetch_offset,
                            last_epoch,
                            end,
                        }),
                        Agreement::StartOver => Some(Message::OutOfRange {
                            epoch,
                            fetch_offset,
                            log_start: node.disk.start(),
                        }),
                        Agreement::Agrees if fetch_offset < node.disk.start() => {
                            Some(Message::OutOfRange {
                                epoch,
                                fetch_offset,
                                log_start: node.disk.start(),
                            })
                        }
                        Agreement::Agrees => {
                            match core.handle_fetch(
                                now,
                                from,
                                storage,
                                u128::from(link),
                                fetch_offset,
                                durable_end,
                            ) {
                                Err(
                                    ReplicaError::AboveLogEnd { .. }
                                    | ReplicaError::NotAssigned { .. },
                                ) => Some(Message::Refused),
                                Err(error) => return Err(format!("leader {id}: {error}")),
                                // Past the leader's written end (a new leader whose last
                                // records from its own leader are not written yet): the node
                                // answers OffsetOutOfRange and the follower asks again.
                                Ok(_) if fetch_offset > node.disk.plog.written_end() => {
                                    Some(Message::Refused)
                                }
                                Ok(_) => {
                                    let batches = node.disk.read_for_replica(now, fetch_offset)?;
                                    let to = Offset(fetch_offset.0 + batches.len() as u64);
                                    let entries = node.disk.log[at(fetch_offset)..at(to)].to_vec();
                                    Some(Message::Records {
                                        epoch,
                                        from: fetch_offset,
                                        batches,
                                        entries,
                                        boundaries: node.disk.epochs.boundaries(fetch_offset, to),
                                        high_watermark: core.high_watermark(),
                                    })
                                }
                            }
                        }
                    }
                }
            }
            Message::Progress {
                epoch,
                storage,
                link,
                log_end,
                durable_end,
            } => {
                if core.check_epoch(epoch).is_ok() {
                    // A report from before a crash may name more than the log now holds.
                    let _ =
                        core.handle_progress(from, storage, u128::from(link), log_end, durable_end);
                }
                None
            }
            _ => None,
        };
        if let Some(answer) = answer {
            self.send(id, from, message.link(), &answer);
        }
        self.settle_acks(index)
    }

    fn follower_receives(
        &mut self,
        index: usize,
        from: ReplicaId,
        over: u64,
        message: Message,
    ) -> Result<(), String> {
        let now = self.now;
        let fresh_link = self.next_link;
        let node = &mut self.nodes[index];
        let Role::Follower {
            core, fetch, link, ..
        } = &mut node.role
        else {
            return Ok(());
        };
        if core.leader() != from || over != *link {
            return Ok(());
        }
        match message {
            Message::Records {
                epoch,
                from: first,
                batches,
                entries,
                boundaries,
                high_watermark,
            } => {
                if epoch != core.epoch() {
                    return Ok(());
                }
                let to = Offset(first.0 + entries.len() as u64);
                let log_end = node.disk.end();
                if core
                    .handle_records(
                        &mut node.disk.epochs,
                        log_end,
                        first,
                        to,
                        &boundaries,
                        high_watermark,
                    )
                    .is_err()
                {
                    // Not for this log any more (late, repeated): dropped.
                    return Ok(());
                }
                node.disk
                    .replicate(now, &batches, &entries)
                    .map_err(|problem| format!("follower {}: {problem}", node.id))?;
                *fetch = None;
            }
            Message::Diverging {
                epoch,
                fetch_offset,
                last_epoch,
                end,
            } => {
                let current = (node.disk.end(), node.disk.epochs.latest_epoch());
                if epoch != core.epoch() || current != (fetch_offset, last_epoch) {
                    return Ok(());
                }
                let truncation = core
                    .handle_diverging(&node.disk.epochs, fetch_offset, end)
                    .map_err(|error| format!("follower {}: {error}", node.id))?;
                node.disk
                    .truncate(now, truncation.to)
                    .map_err(|problem| format!("follower {}: {problem}", node.id))?;
                self.report.truncations += 1;
                *fetch = None;
                *link = fresh_link;
                self.next_link += 1;
            }
            Message::OutOfRange {
                epoch,
                fetch_offset,
                log_start,
            } => {
                if epoch != core.epoch() || node.disk.end() != fetch_offset {
                    return Ok(());
                }
                core.handle_out_of_range(fetch_offset, log_start)
                    .map_err(|error| format!("follower {}: {error}", node.id))?;
                node.disk
                    .reset(now, log_start)
                    .map_err(|problem| format!("follower {}: {problem}", node.id))?;
                self.report.resets += 1;
                *fetch = None;
                *link = fresh_link;
                self.next_link += 1;
            }
            _ => {
                *fetch = None;
            }
        }
        Ok(())
    }

    /// A leader answers its waiting `fsync` writes the high watermark covers.
    fn settle_acks(&mut self, index: usize) -> Result<(), String> {
        let node = &mut self.nodes[index];
        let Role::Leader { core, acks, .. } = &mut node.role else {
            return Ok(());
        };
        let high_watermark = core.high_watermark();
        // The log's visible end follows the replicated high watermark (as the node's shell
        // will do after every step of the leader's state).
        node.disk
            .plog
            .handle_replicated_high_watermark(high_watermark);
        let log = &node.disk.log;
        // The committed log grows with what this leader reports, and must agree with it.
        for (offset, entry) in log.iter().enumerate().take(at(high_watermark)) {
            match self.committed.get(offset) {
                Some(&write) if write != entry.write && entry.write != GONE && write != GONE => {
                    return Err(format!(
                        "replica {} reports offset {offset} committed with write {}, the committed log has {write}",
                        node.id, entry.write
                    ));
                }
                Some(_) => {}
                None => self.committed.push(entry.write),
            }
        }
        let mut settled = Vec::new();
        acks.retain(|&(end, offset, write)| match core.ack_state(end) {
            AckState::Waiting => true,
            AckState::Acked => {
                settled.push((offset, write));
                false
            }
            AckState::NotEnoughReplicas(_) => false,
        });
        for (offset, write) in settled {
            if self.committed.get(at(offset)) != Some(&write) {
                return Err(format!(
                    "write {write} acknowledged at offset {offset} is not in the committed log"
                ));
            }
            self.report.acknowledged += 1;
        }
        Ok(())
    }

    fn produce(&mut self) -> Result<(), String> {
        let index = self.rng.index(self.nodes.len());
        let node = &mut self.nodes[index];
        if !node.up {
            return Ok(());
        }
        let Role::Leader { core, acks, .. } = &mut node.role else {
            return Ok(());
        };
        if core.check_min_insync().is_err() {
            self.report.refused_min_insync += 1;
            return Ok(());
        }
        let write = self.next_write;
        let offset = node.disk.end();
        let value_len = usize::try_from(self.rng.range(1, 600)).unwrap_or(1);
        if !node.disk.append(self.now, core.epoch(), write, value_len) {
            return Ok(());
        }
        self.next_write += 1;
        core.handle_appended(node.disk.end());
        acks.push((node.disk.end(), offset, write));
        self.report.writes += 1;
        Ok(())
    }

    /// A consumer reads what a ready leader shows, refusing leaders of older epochs than it
    /// has seen (its fetches carry the epoch, KIP-320).
    fn consume(&mut self) -> Result<(), String> {
        let index = self.rng.index(self.nodes.len());
        let which = self.rng.index(self.consumers.len());
        let from = self.rng.next_u64();
        let now = self.now;
        let node = &mut self.nodes[index];
        let Role::Leader { core, .. } = &node.role else {
            return Ok(());
        };
        if !node.up || !core.is_ready() {
            return Ok(());
        }
        let consumer = &mut self.consumers[which];
        if core.epoch() < consumer.epoch {
            return Ok(());
        }
        let high_watermark = core.high_watermark();
        if high_watermark < consumer.high_watermark {
            return Err(format!(
                "a consumer saw the high watermark {} and then {high_watermark} from replica {} (epoch {})",
                consumer.high_watermark, node.id, core.epoch()
            ));
        }
        for (offset, entry) in node.disk.log.iter().enumerate().take(at(high_watermark)) {
            let committed = self.committed.get(offset);
            if entry.write != GONE && committed != Some(&entry.write) && committed != Some(&GONE) {
                return Err(format!(
                    "a consumer read offset {offset} from replica {} with a write not committed",
                    node.id
                ));
            }
        }
        // A real fetch from the leader's log, from somewhere below the high watermark: whole
        // batches, none past it, each the committed write.
        let start = node.disk.start();
        if high_watermark > start {
            let offset = Offset(start.0 + from % (high_watermark.0 - start.0));
            let bytes = match node.disk.plog.handle_fetch(offset, FETCH_BYTES_MAX) {
                Ok(FetchPlan::Ready(bytes)) => bytes,
                Ok(FetchPlan::Read(mut plan)) => loop {
                    let data = node
                        .disk
                        .files
                        .read_now(&plan.file, plan.position, plan.len)
                        .ok_or("a read of a missing file")?;
                    match node.disk.plog.handle_read(now, &plan, &data, 1 << 20) {
                        Ok(ReadDone::Answer(bytes)) => break bytes,
                        Ok(ReadDone::More(more)) => plan = more,
                        Err(error) => return Err(format!("a consumer's read failed: {error}")),
                    }
                },
                other => {
                    return Err(format!(
                        "a consumer's fetch at {offset} below the high watermark {high_watermark}: {other:?}"
                    ))
                }
            };
            for batch in batches(&bytes) {
                let batch = batch.map_err(|error| format!("a consumer got damage: {error}"))?;
                let committed = self.committed.get(at(batch.base_offset()));
                if batch.next_offset() > high_watermark
                    || (committed != Some(&write_of(&batch)) && committed != Some(&GONE))
                {
                    return Err(format!(
                        "a consumer got write {} at {} from replica {} (high watermark {high_watermark})",
                        write_of(&batch),
                        batch.base_offset(),
                        node.id
                    ));
                }
            }
        }
        consumer.epoch = core.epoch();
        consumer.high_watermark = high_watermark;
        self.report.reads += 1;
        Ok(())
    }

    /// The state of every replica and of etcd, for a failure's message.
    fn describe(&self) -> String {
        let mut out = format!(
            "\netcd: {:?}, members {:?}, moving to {:?}",
            self.etcd.partition, self.etcd.members, self.etcd.target
        );
        for node in &self.nodes {
            let role = match &node.role {
                Role::None => "none".to_string(),
                Role::Leader { core, revision, cas, .. } => format!(
                    "leader of {} (revision {revision}, HW {}, ISR {:?}, pending {:?}, cas {cas:?}, progress {:?})",
                    core.epoch(),
                    core.high_watermark(),
                    core.isr(),
                    core.pending_isr(),
                    core.replicas().iter().map(|r| core.progress(*r).map(|p| (r.0, p.log_end.0, p.durable_end.0))).collect::<Vec<_>>()
                ),
                Role::Follower { core, .. } => format!("follower of {} in {}, HW {}", core.leader(), core.epoch(), core.high_watermark()),
            };
            out.push_str(&format!(
                "\nreplica {} up {} session {} storage {:?} log {} synced {} chain {:?}: {role}",
                node.id,
                node.up,
                node.session,
                node.disk.storage,
                node.disk.log.len(),
                node.disk.synced(),
                node.disk.epochs.entries()
            ));
        }
        out
    }

    fn check(&self) -> Result<(), String> {
        let state = &self.etcd.partition;
        for member in &state.isr {
            let Some(node) = self
                .nodes
                .iter()
                .find(|node| node.id == member.replica && node.disk.storage == member.storage)
            else {
                continue;
            };
            if node.disk.synced() < self.committed.len() {
                return Err(format!(
                    "ISR member {} has {} records durable, the committed log {}{}",
                    node.id,
                    node.disk.synced(),
                    self.committed.len(),
                    self.describe()
                ));
            }
            for (offset, &write) in self.committed.iter().enumerate() {
                let held = node.disk.log[offset].write;
                if held != write && held != GONE && write != GONE {
                    return Err(format!(
                        "ISR member {} holds write {} at committed offset {offset} (committed: {write}){}",
                        node.id,
                        node.disk.log[offset].write,
                        self.describe()
                    ));
                }
            }
        }
        for node in &self.nodes {
            let epochs = &node.disk.epochs;
            let start = at(node.disk.start());
            for (offset, entry) in node.disk.log.iter().enumerate().skip(start) {
                if entry.write != GONE
                    && epochs.epoch_at(Offset(offset as u64)) != Some(entry.epoch)
                {
                    return Err(format!(
                        "replica {}'s chain {:?} says epoch {:?} at {offset}, the record has {}",
                        node.id,
                        epochs.entries(),
                        epochs.epoch_at(Offset(offset as u64)),
                        entry.epoch
                    ));
                }
            }
        }
        Ok(())
    }
}
