//! The seeded workload: random appends, I/O completions in random order, time passing,
//! fetches, retention, crashes (restart from a crash image), faults and bit flips, applied
//! to a `PartitionLog` over `SimStorage`, with the invariants checked after every step.
//!
//! Invariants checked:
//! - every offset below the highest high watermark ever reported survives every crash, at
//!   its offset, with its bytes; fetches return exactly the appended bytes;
//! - offsets are dense, assigned in order and never reused; the high watermark never moves
//!   backwards and never covers data that is not synced (checked against the synced image);
//! - acknowledgements never precede the event that covers them; a fenced partition never
//!   acknowledges again and refuses appends;
//! - the log's waiters (`spate_core::waiters`): every `write`/`fsync` append gets a ticket,
//!   acknowledged exactly once (`Acked`), in offset order per level, right after the watermark
//!   move that covers it (a covered ticket never stays waiting), or refused (`Refused`) only
//!   when the log is fenced; DeleteRecords tickets likewise, once their start is durable;
//!   a parked fetch is woken (`FetchReady`) exactly once and only when the high watermark
//!   passed what it saw, the log start passed its offset, the log was fenced or its deadline
//!   came, never later than its deadline (the log's timeout covers it), and a withdrawn one
//!   never; at most `fetch_waiters_max` fetches are parked; an idle log leaves nothing waiting;
//! - back-pressure: the bytes waiting to be written never exceed
//!   `PARTITION_BUFFER_BYTES_MAX`, and an append is refused as `BufferFull` exactly when it
//!   would not fit (`has_room`);
//! - fetches return only durable data: every fetched batch ends at or below the high
//!   watermark, a fetch at the high watermark is at its end, and offsets outside
//!   `[log start, high watermark]` are out of range;
//! - recovery truncates only what a crash could have torn: never a byte of a segment below
//!   its synced data end (the torn-tail window starts there), with one documented exception
//!   after a bit flip (the last synced batch of the active segment, damaged, cannot be told
//!   from a garbage tail);
//! - after a bit flip every acknowledged offset before the damaged batch survives, the
//!   damage is fenced at the damaged batch and reported (at recovery or, in a rolled
//!   segment, by the fetch that reads it), and a sealed segment is never truncated;
//! - retention deletes only whole segments, oldest first, each past its limit when deleted
//!   (by time: its newest record older than `now - retention_ms`; by size: the log without
//!   it still at least `retention_bytes`), never the newest segment, and, on an idle and
//!   fully durable log, leaves no oldest segment past its limit behind;
//! - DeleteRecords moves the log start only forward, never past the high watermark, and
//!   reports a move only once its marker is durable: every reported log start survives
//!   every crash (the recovered log starts at or above it), and a move that was refused or
//!   is still under way changes nothing visible; segments wholly below the log start are
//!   deleted by retention like expired ones;
//! - idempotent producers (`spate_core::producers`): a producer's resend of any of its last
//!   five batches that the log still holds (at or above the log start) is answered as a
//!   duplicate with the first batch's offsets and stores nothing, also after any number of
//!   crashes (the state is rebuilt from the producer snapshot and the log); a sequence gap
//!   from a producer the log holds is refused as out of order, an older epoch as such, and
//!   nothing refused is stored; after every crash each producer's last surviving batch is
//!   resent and must be recognised;
//! - background verification of every sealed segment (over its synced contents, after each
//!   recovery and at the end) finds nothing on a log that met no bit flip, and after a flip
//!   at most the flipped batch.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use spate_core::config::{PARTITION_BUFFER_BYTES_MAX, PRODUCER_EXPIRY_MS_DEFAULT};
use spate_core::producers::{sequence_after, ProducerError};
use spate_core::recovery::{Recovered, Recovery, RecoveryError, RecoveryReport};
use spate_core::storage::FileRef;
use spate_core::verify::VERIFY_READ_BYTES;
use spate_core::{
    AppendError, DeleteRecordsError, FenceReason, FetchError, FetchPlan, FetchWaitError, IoRequest,
    LogConfig, LogEvent, Millis, PartitionLog, ReadDone, ReadPlan, SegmentVerifier, Storage,
    Ticket, TORN_WINDOW_BYTES,
};
use spate_format::limits::SECTOR_SIZE;
use spate_format::segment::{scan_segment, SegmentFileKind};
use spate_format::{batches, BatchBuilder, Offset, ProducerFields, Record};
use spate_proto::Durability;

use crate::rng::Rng;
use crate::storage::{Fault, SimStorage};

/// Steps between checks that every sealed segment verifies (also after every recovery and
/// at the end of a run).
const SEALED_CHECK_EVERY: u32 = 25;

/// What kinds of trouble a run may meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub steps: u32,
    pub crashes: bool,
    pub faults: bool,
    pub bit_flips: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            steps: 600,
            crashes: true,
            faults: true,
            bit_flips: true,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    pub appends: u64,
    pub records: u64,
    pub crashes: u64,
    pub torn_tails: u64,
    pub fences: u64,
    pub corruptions_detected: u64,
    pub fetches: u64,
    pub segments_deleted: u64,
    /// Log-start moves (DeleteRecords) reported durable.
    pub log_start_moves: u64,
    /// Acknowledgements (produce and DeleteRecords) the log emitted.
    pub acks: u64,
    /// Parked fetches the log woke.
    pub fetches_woken: u64,
    /// Fetches answered from an earlier read's read-ahead.
    pub read_ahead_hits: u64,
    /// Fetch reads that ended inside the batch holding the offset and were continued.
    pub reads_continued: u64,
    pub rolls: u64,
    pub durable_events: u64,
    pub high_watermark: u64,
    /// Bit flips in the last synced batch of the active segment that recovery truncated as a
    /// garbage tail (the documented limit of telling damage from a torn write).
    pub flips_truncated: u64,
    /// Bit flips in a sealed segment found by verifying it in full after the recovery.
    pub flips_found_by_verification: u64,
    /// Idempotent producers' resends answered as duplicates.
    pub duplicates: u64,
    /// Idempotent producers' batches refused for a sequence gap or an old epoch.
    pub sequence_refusals: u64,
}

impl RunReport {
    /// Adds another run's counts to these.
    pub fn add(&mut self, other: &RunReport) {
        self.appends += other.appends;
        self.records += other.records;
        self.crashes += other.crashes;
        self.torn_tails += other.torn_tails;
        self.fences += other.fences;
        self.corruptions_detected += other.corruptions_detected;
        self.fetches += other.fetches;
        self.segments_deleted += other.segments_deleted;
        self.log_start_moves += other.log_start_moves;
        self.acks += other.acks;
        self.fetches_woken += other.fetches_woken;
        self.read_ahead_hits += other.read_ahead_hits;
        self.reads_continued += other.reads_continued;
        self.rolls += other.rolls;
        self.durable_events += other.durable_events;
        self.flips_truncated += other.flips_truncated;
        self.flips_found_by_verification += other.flips_found_by_verification;
        self.duplicates += other.duplicates;
        self.sequence_refusals += other.sequence_refusals;
        self.high_watermark = self.high_watermark.max(other.high_watermark);
    }
}

/// A violated invariant, with the seed and step that replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub seed: u64,
    pub step: u32,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {} (replay: SPATE_SIM_SEED={} cargo test -p spate-sim replay -- --ignored)",
            self.seed, self.step, self.message, self.seed
        )
    }
}

#[derive(Debug, Clone)]
struct ModelBatch {
    next: Offset,
    /// The producer's bytes (unstamped); bytes `[24..]` must match what is stored.
    bytes: Vec<u8>,
    /// The batch's newest record timestamp (for the retention model).
    max_timestamp: i64,
}

/// A segment as the model sees it: its base offset, bytes and newest record timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelSegment {
    base: Offset,
    size: u64,
    /// `None` for a segment without records (never expires by time).
    max_timestamp: Option<i64>,
}

/// The batch a bit flip damaged, located in the synced contents before the flip.
#[derive(Debug, Clone, Copy)]
struct Flip {
    segment: Offset,
    /// The flipped byte's file position.
    position: u64,
    batch_start: u64,
    batch_base: Offset,
    /// Whether the damaged batch was the last one in the segment's synced contents.
    last_synced: bool,
    /// Whether the segment's index files were durable (sealed: never truncated).
    sealed: bool,
}

/// A produce waiting for its acknowledgement.
#[derive(Debug, Clone, Copy)]
struct AckWait {
    next: Offset,
    durability: Durability,
    /// A resend answered as a duplicate: it waits for an earlier batch, so its
    /// acknowledgement may follow later batches' of its level.
    duplicate: bool,
}

/// Idempotent producers the workload runs.
const MODEL_PRODUCERS: usize = 3;

/// A batch an idempotent producer got stored.
#[derive(Debug, Clone)]
struct SentBatch {
    epoch: i16,
    sequence: i32,
    records: u32,
    base: Offset,
    bytes: Vec<u8>,
}

/// An idempotent producer as the model sees it.
#[derive(Debug, Clone, Default)]
struct ModelProducer {
    /// Its stored batches that no crash took back, in offset order.
    stored: Vec<SentBatch>,
    /// `stored[..forgotten]` were stored before the log last forgot the producer (the log
    /// start passed its last batch): a recovery may or may not bring them back into the
    /// producer's state (the snapshot it starts from may be older or newer than the
    /// forgetting), so they are never resent.
    forgotten: usize,
    epoch: i16,
    next_sequence: i32,
}

/// How an idempotent producer's next batch is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    Next,
    /// A new epoch, from sequence 0.
    NewEpoch,
    /// A sequence past the next one.
    Gap,
    /// The epoch before the current one.
    OldEpoch,
}

/// A fetch parked on the log.
#[derive(Debug, Clone, Copy)]
struct ParkedFetch {
    offset: Offset,
    seen: Offset,
    deadline: Millis,
}

#[derive(Debug)]
struct Run {
    step: u32,
    options: Options,
    rng: Rng,
    config: LogConfig,
    storage: SimStorage,
    log: PartitionLog,
    now: Millis,
    batches: BTreeMap<u64, ModelBatch>,
    /// Produces waiting for their acknowledgement, by the log's ticket.
    tickets: BTreeMap<Ticket, AckWait>,
    /// The offset after the last acknowledged batch, per level (`write`, `fsync`): each
    /// acknowledgement of a level must come after it (offset order).
    last_acked: [Offset; 2],
    /// Fetches parked on the log.
    parked: BTreeMap<Ticket, ParkedFetch>,
    /// The highest high watermark reported: everything below must survive.
    promised: Offset,
    written_seen: Offset,
    fenced: bool,
    /// The highest log start reported moved (DeleteRecords): every recovery must keep it.
    start_promised: Offset,
    /// DeleteRecords waiting for their `LogStartMoved`: the offset each asked for.
    start_asked: BTreeMap<Ticket, Offset>,
    producers: Vec<ModelProducer>,
    report: RunReport,
}

type Checked<T = ()> = Result<T, String>;

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Checked {
    if condition {
        Ok(())
    } else {
        Err(message())
    }
}

/// Runs one seed; `Err` names the first violated invariant.
pub fn run_seed(seed: u64, options: Options) -> Result<RunReport, Failure> {
    let mut run = Run::new(seed, options);
    let outcome = run.execute();
    match outcome {
        Ok(()) => {
            run.report.high_watermark = run.log.high_watermark().0;
            Ok(run.report)
        }
        Err(message) => Err(Failure {
            seed,
            step: run.step,
            message,
        }),
    }
}

/// One step of a simulation, as the seeded driver or a fuzzer chooses it. Batch contents,
/// completion order and crash images come from the run's seeded generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Append a random batch with this durability (half of them from an idempotent producer).
    Append(Durability),
    /// An idempotent producer resends one of its last batches.
    Resend,
    /// Hand requests to the storage and complete a few, in random order.
    Pump,
    /// Let time pass: up to 20 ms, or (one tick in 16) a pause of up to 6 s.
    Tick,
    /// Fetch from a random offset and compare with what was appended.
    Fetch,
    /// Apply retention.
    Retention,
    /// Move the log start (DeleteRecords) to a random offset, sometimes past the end.
    DeleteRecords,
    /// Crash (power loss) and recover from a crash image.
    Crash,
    /// Arm a storage fault.
    Fault(Fault),
}

impl Op {
    /// Maps a byte to an operation (for fuzzers).
    pub fn from_byte(byte: u8) -> Op {
        match byte % 16 {
            0 => Op::Append(Durability::None),
            1 => Op::Append(Durability::Write),
            2 | 3 => Op::Append(Durability::Fsync),
            4 => Op::Resend,
            5..=8 => Op::Pump,
            9 => Op::Tick,
            10 | 11 => Op::Fetch,
            12 if byte & 0x80 == 0 => Op::Retention,
            12 => Op::DeleteRecords,
            13 => Op::Crash,
            14 => Op::Fault(Fault::WriteError),
            _ => Op::Fault(if byte & 0x80 == 0 {
                Fault::SyncError
            } else {
                Fault::ShortWrite
            }),
        }
    }
}

/// A simulation driven operation by operation (the fuzzer's entry point).
#[derive(Debug)]
pub struct Simulation {
    run: Box<Run>,
}

impl Simulation {
    pub fn new(seed: u64) -> Self {
        Simulation {
            run: Box::new(Run::new(seed, Options::default())),
        }
    }

    /// Applies one operation and checks every invariant; `Err` names the violated one.
    pub fn apply(&mut self, op: Op) -> Result<(), String> {
        self.run.apply(op)
    }

    /// Lets all work finish and checks liveness and the whole log.
    pub fn finish(mut self) -> Result<RunReport, String> {
        self.run.finish()?;
        Ok(self.run.report)
    }
}

fn random_config(rng: &mut Rng) -> LogConfig {
    LogConfig {
        segment_bytes: [64 << 10, 96 << 10, 256 << 10][rng.index(3)],
        segment_ms: [50, 500, 1_000_000][rng.index(3)],
        retention_ms: [None, Some(200), Some(5_000)][rng.index(3)],
        retention_bytes: [None, Some(200 << 10), Some(1 << 20)][rng.index(3)],
        flush_interval_ms: [1, 5, 50][rng.index(3)],
        flush_bytes: [16 << 10, 1 << 20][rng.index(2)],
        preallocate_bytes: [4096, 16 << 10, 64 << 10][rng.index(3)],
        tail_cache_bytes: [0, 16 << 10, 1 << 20][rng.index(3)],
        // Small reads end inside batches (continued reads); large ones read ahead.
        fetch_read_bytes: [0, 4096, 512 << 10][rng.index(3)],
        fetch_waiters_max: [1, 3, 1024][rng.index(3)],
        producer_expiry_ms: PRODUCER_EXPIRY_MS_DEFAULT,
    }
}

impl Run {
    fn new(seed: u64, options: Options) -> Self {
        let mut rng = Rng::new(seed);
        let config = random_config(&mut rng);
        let storage = SimStorage::new(rng.next_u64());
        let log = PartitionLog::new(config.clone(), Offset(0));
        Run {
            step: 0,
            options,
            rng,
            config,
            storage,
            log,
            now: Millis(1_700_000_000_000),
            batches: BTreeMap::new(),
            tickets: BTreeMap::new(),
            last_acked: [Offset(0); 2],
            parked: BTreeMap::new(),
            promised: Offset(0),
            written_seen: Offset(0),
            fenced: false,
            start_promised: Offset(0),
            start_asked: BTreeMap::new(),
            producers: vec![ModelProducer::default(); MODEL_PRODUCERS],
            report: RunReport::default(),
        }
    }

    fn execute(&mut self) -> Checked {
        // One seed in four meets one bit flip of synced data, late enough to have a log.
        let flip_at = (self.options.bit_flips && self.options.crashes && self.rng.chance(1, 4))
            .then(|| {
                let last = u64::from(self.options.steps.max(101));
                u32::try_from(self.rng.range(100, last)).unwrap_or(u32::MAX)
            });
        while self.step < self.options.steps {
            let op = self.choose();
            self.apply(op)?;
            if Some(self.step) == flip_at {
                // Ends the run: after corruption the partition is fenced or cut short.
                if self.flip_and_recover()? {
                    return Ok(());
                }
            }
        }
        self.finish()
    }

    fn choose(&mut self) -> Op {
        match self.rng.below(100) {
            0..=37 => {
                let durability = [Durability::None, Durability::Write, Durability::Fsync];
                Op::Append(durability[self.rng.index(3)])
            }
            38..=41 => Op::Resend,
            68..=77 => Op::Tick,
            78..=87 => Op::Fetch,
            88..=90 => Op::Retention,
            91 | 92 => Op::DeleteRecords,
            93..=95 if self.options.crashes => Op::Crash,
            96 if self.options.faults => Op::Fault(
                [Fault::WriteError, Fault::SyncError, Fault::ShortWrite][self.rng.index(3)],
            ),
            _ => Op::Pump,
        }
    }

    fn apply(&mut self, op: Op) -> Checked {
        self.step += 1;
        self.trace(format_args!(
            "step {} {op:?} now {:?} hwm {} next {}",
            self.step,
            self.now,
            self.log.high_watermark(),
            self.log.next_offset()
        ));
        match op {
            Op::Append(durability) => self.append(durability)?,
            Op::Resend => self.resend()?,
            Op::Pump => self.pump()?,
            Op::Tick => self.tick()?,
            Op::Fetch => self.fetch_random()?,
            Op::Retention => self.retention()?,
            Op::DeleteRecords => self.delete_records()?,
            Op::Crash => {
                let synced = self.synced_ends();
                self.crash_and_recover(&synced, None)?;
            }
            Op::Fault(fault) => self.storage.inject(fault),
        }
        self.update_forgotten();
        if self.step.is_multiple_of(SEALED_CHECK_EVERY) {
            self.check_sealed_verification(None)?;
        }
        self.check_watermarks()
    }

    /// Lets everything finish, then checks liveness and the whole log once more.
    fn finish(&mut self) -> Checked {
        // Time passes beyond every parked fetch's deadline.
        if let Some(last) = self.parked.values().map(|parked| parked.deadline).max() {
            self.now = self.now.max(last);
            self.log.handle_tick(self.now);
            self.transfer();
            self.drain_events()?;
        }
        for _ in 0..1000 {
            let settled = self.fenced || self.log.high_watermark() == self.log.next_offset();
            if settled && self.log.is_idle() && self.storage.in_flight() == 0 {
                break;
            }
            self.now = Millis(self.now.0 + 50);
            self.log.handle_tick(self.now);
            self.pump_all()?;
        }
        let (start, end) = (self.log.log_start(), self.log.high_watermark());
        if !self.fenced {
            // Liveness: once idle, everything appended is durable and acknowledged.
            ensure(self.start_asked.is_empty(), || {
                format!(
                    "idle log left log-start moves to {:?} unreported; it starts at {start}",
                    self.start_asked.values()
                )
            })?;
            ensure(
                end == self.log.next_offset()
                    && self.tickets.is_empty()
                    && self.log.acks_waiting() == 0,
                || {
                    format!(
                        "idle log left {} tickets ({} in the log); hwm {end}, next {}",
                        self.tickets.len(),
                        self.log.acks_waiting(),
                        self.log.next_offset()
                    )
                },
            )?;
        }
        // Every parked fetch was woken by its deadline at the latest.
        ensure(
            self.parked.is_empty() && self.log.fetches_parked() == 0,
            || {
                format!(
                    "{} fetches still parked at the end ({} in the log)",
                    self.parked.len(),
                    self.log.fetches_parked()
                )
            },
        )?;
        self.verify_range(start, end, false)?;
        self.check_sealed_verification(None)
    }

    #[allow(clippy::print_stderr)]
    fn trace(&self, message: fmt::Arguments<'_>) {
        if std::env::var_os("SPATE_SIM_TRACE").is_some() {
            eprintln!("{message}");
        }
    }

    fn random_batch(&mut self, producer: ProducerFields) -> Vec<u8> {
        let mut builder = BatchBuilder::new().producer(producer);
        let records = self.rng.range(1, 12);
        let big = self.rng.chance(1, 20);
        // One batch in 8 comes from a late producer: its records are up to 6 s old, so a
        // segment's newest record and its age differ (retention goes by the newest record).
        let late = if self.rng.chance(1, 8) {
            i64::try_from(self.rng.below(6_000)).expect("fits")
        } else {
            0
        };
        for _ in 0..records {
            let size = if big {
                self.rng.range(4000, 40_000)
            } else {
                self.rng.range(0, 600)
            };
            let mut value = vec![0u8; usize::try_from(size).expect("fits")];
            self.rng.fill(&mut value);
            let key = self.rng.next_u64().to_le_bytes();
            let timestamp = self.now.0 - late + i64::try_from(self.rng.below(10)).expect("fits");
            let record = Record {
                timestamp,
                key: self.rng.chance(1, 2).then_some(&key[..]),
                value: Some(&value),
                headers: &[],
            };
            if builder.push(&record).is_err() {
                break;
            }
        }
        builder.finish().expect("at least one record")
    }

    fn append(&mut self, durability: Durability) -> Checked {
        if self.rng.chance(1, 2) {
            return self.idempotent_append(durability);
        }
        let bytes = self.random_batch(ProducerFields::default());
        self.append_bytes(bytes, durability).map(|_| ())
    }

    /// Appends `bytes` that must be stored (no duplicate, no producer error): checks the
    /// ticket and the model; the offset they got, if accepted.
    fn append_bytes(&mut self, bytes: Vec<u8>, durability: Durability) -> Checked<Option<Offset>> {
        let expected = self.log.next_offset();
        let mut stored = None;
        let room = self.log.has_room(bytes.len() as u64);
        match self
            .log
            .handle_append(self.now, &Bytes::from(bytes.clone()), durability)
        {
            Ok(ticket) => {
                ensure(!self.fenced, || {
                    "a fenced partition accepted an append".into()
                })?;
                ensure(ticket.base_offset == expected && !ticket.duplicate, || {
                    format!(
                        "append got offset {} (duplicate: {}), expected {expected}",
                        ticket.base_offset, ticket.duplicate
                    )
                })?;
                stored = Some(ticket.base_offset);
                ensure(!self.batches.contains_key(&ticket.base_offset.0), || {
                    format!("offset {} assigned twice", ticket.base_offset)
                })?;
                let max_timestamp = spate_format::BatchRef::parse(&bytes)
                    .map_err(|error| format!("the workload built an invalid batch: {error}"))?
                    .max_timestamp();
                self.batches.insert(
                    ticket.base_offset.0,
                    ModelBatch {
                        next: ticket.next_offset(),
                        bytes,
                        max_timestamp,
                    },
                );
                ensure(room, || {
                    "an append was accepted where the log said there was no room".into()
                })?;
                match (durability, ticket.waiter) {
                    (Durability::None, None) => {}
                    (Durability::Write | Durability::Fsync, Some(waiter)) => {
                        let wait = AckWait {
                            next: ticket.next_offset(),
                            durability,
                            duplicate: false,
                        };
                        ensure(self.tickets.insert(waiter, wait).is_none(), || {
                            format!("ticket {waiter:?} given twice")
                        })?;
                    }
                    (durability, waiter) => {
                        return Err(format!(
                            "an append at {durability:?} got the waiter {waiter:?}"
                        ))
                    }
                }
                self.report.appends += 1;
                self.report.records += ticket.next_offset().0 - ticket.base_offset.0;
            }
            Err(AppendError::Fenced(_)) => {
                ensure(self.fenced, || {
                    "append refused as fenced, but no fence was reported".into()
                })?;
            }
            Err(AppendError::BufferFull { buffered, max }) => {
                ensure(
                    !room
                        && buffered + bytes.len() as u64 > max
                        && max == PARTITION_BUFFER_BYTES_MAX,
                    || {
                        format!(
                            "an append of {} bytes was refused with {buffered} of {max} buffered",
                            bytes.len()
                        )
                    },
                )?;
                self.pump()?;
            }
            Err(error) => return Err(format!("valid batch refused: {error}")),
        }
        self.drain_events()?;
        Ok(stored)
    }

    /// Whether the log surely remembers producer `index`: it stored a batch since it was
    /// last forgotten, and the log still holds it.
    fn producer_known(&self, index: usize) -> bool {
        let model = &self.producers[index];
        model.stored.len() > model.forgotten
            && model
                .stored
                .last()
                .is_some_and(|last| last.base >= self.log.log_start())
    }

    /// Notes the producers the log forgot: the log start passed their last batch.
    fn update_forgotten(&mut self) {
        let start = self.log.log_start();
        for model in &mut self.producers {
            model.forgotten = model.forgotten.min(model.stored.len());
            if model.stored.last().is_some_and(|last| last.base < start) {
                model.forgotten = model.stored.len();
            }
        }
    }

    fn producer_id(index: usize) -> i64 {
        1000 + i64::try_from(index).expect("few producers")
    }

    /// A batch from an idempotent producer: the next in sequence, or (rarely) a new epoch, a
    /// gap or an old epoch, each with the answer the rules give.
    fn idempotent_append(&mut self, durability: Durability) -> Checked {
        self.update_forgotten();
        let index = self.rng.index(MODEL_PRODUCERS);
        let known = self.producer_known(index);
        let send = match self.rng.below(40) {
            0 | 1 => Send::NewEpoch,
            2 if known => Send::Gap,
            3 if known && self.producers[index].epoch > 0 => Send::OldEpoch,
            _ => Send::Next,
        };
        let model = &self.producers[index];
        let (epoch, sequence) = match send {
            Send::Next => (model.epoch, model.next_sequence),
            Send::NewEpoch => (model.epoch + 1, 0),
            Send::Gap => (
                model.epoch,
                sequence_after(
                    model.next_sequence,
                    u32::try_from(self.rng.range(1, 6)).expect("small"),
                ),
            ),
            Send::OldEpoch => (model.epoch - 1, model.next_sequence),
        };
        let fields = ProducerFields {
            producer_id: Self::producer_id(index),
            producer_epoch: epoch,
            base_sequence: sequence,
        };
        let bytes = self.random_batch(fields);
        let records = spate_format::BatchRef::parse(&bytes)
            .map_err(|error| format!("the workload built an invalid batch: {error}"))?
            .record_count();
        if matches!(send, Send::Gap | Send::OldEpoch) && !self.fenced {
            let next = self.log.next_offset();
            let refused = self
                .log
                .handle_append(self.now, &Bytes::from(bytes), durability);
            let expected_refusal = matches!(
                (send, &refused),
                (
                    Send::Gap,
                    Err(AppendError::Producer(
                        ProducerError::OutOfOrderSequence { .. }
                    )),
                ) | (
                    Send::OldEpoch,
                    Err(AppendError::Producer(ProducerError::InvalidEpoch { .. })),
                )
            );
            ensure(expected_refusal && self.log.next_offset() == next, || {
                format!("producer {index} sent {send:?} (epoch {epoch}, sequence {sequence}): {refused:?}")
            })?;
            self.report.sequence_refusals += 1;
            return self.drain_events();
        }
        let Some(base) = self.append_bytes(bytes.clone(), durability)? else {
            return Ok(());
        };
        let model = &mut self.producers[index];
        if epoch != model.epoch {
            model.epoch = epoch;
        }
        model.next_sequence = sequence_after(sequence, records);
        model.stored.push(SentBatch {
            epoch,
            sequence,
            records,
            base,
            bytes,
        });
        Ok(())
    }

    /// A producer resends one of its last five batches of its epoch that the log holds: a
    /// duplicate, answered with the first batch's offsets, storing nothing.
    fn resend(&mut self) -> Checked {
        self.update_forgotten();
        let index = self.rng.index(MODEL_PRODUCERS);
        if self.fenced || !self.producer_known(index) {
            return Ok(());
        }
        let model = &self.producers[index];
        let candidates: Vec<&SentBatch> = model.stored[model.forgotten..]
            .iter()
            .rev()
            .take_while(|batch| batch.epoch == model.epoch)
            .take(spate_core::producers::BATCHES_PER_PRODUCER)
            .filter(|batch| batch.base >= self.log.log_start())
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let batch = candidates[self.rng.index(candidates.len())].clone();
        let durability =
            [Durability::None, Durability::Write, Durability::Fsync][self.rng.index(3)];
        self.resend_batch(index, &batch, durability)
    }

    fn resend_batch(&mut self, index: usize, batch: &SentBatch, durability: Durability) -> Checked {
        let next = self.log.next_offset();
        let answer =
            self.log
                .handle_append(self.now, &Bytes::from(batch.bytes.clone()), durability);
        let ticket = answer.map_err(|error| {
            format!(
                "producer {index}'s resend of its batch at {} (epoch {}, sequence {}) was refused: {error}",
                batch.base, batch.epoch, batch.sequence
            )
        })?;
        ensure(
            ticket.duplicate
                && ticket.base_offset == batch.base
                && ticket.next_offset() == Offset(batch.base.0 + u64::from(batch.records))
                && self.log.next_offset() == next,
            || {
                format!(
                    "producer {index}'s resend of its batch at {} was not a duplicate: {ticket:?}",
                    batch.base
                )
            },
        )?;
        let covered = match durability {
            Durability::None => true,
            Durability::Write => self.written_seen >= ticket.next_offset(),
            Durability::Fsync => self.promised >= ticket.next_offset(),
        };
        match ticket.waiter {
            None => {
                ensure(covered, || {
                    format!("a duplicate at {durability:?} was answered at once before its batch got there")
                })?;
            }
            Some(waiter) => {
                ensure(!covered, || "a covered duplicate got a waiter".into())?;
                let wait = AckWait {
                    next: ticket.next_offset(),
                    durability,
                    duplicate: true,
                };
                ensure(self.tickets.insert(waiter, wait).is_none(), || {
                    format!("ticket {waiter:?} given twice")
                })?;
            }
        }
        self.report.duplicates += 1;
        self.drain_events()
    }

    /// After a crash: the producers' batches the crash took back are gone (each producer
    /// goes on after its last surviving batch, as a real one resending would), and each
    /// producer's last surviving batch, resent, is recognised.
    fn check_producers_after_recovery(&mut self) -> Checked {
        let high = self.log.high_watermark();
        for model in &mut self.producers {
            model.stored.retain(|batch| batch.base < high);
            if let Some(last) = model.stored.last() {
                model.epoch = last.epoch;
                model.next_sequence = sequence_after(last.sequence, last.records);
            }
        }
        self.update_forgotten();
        if self.fenced {
            return Ok(());
        }
        for index in 0..MODEL_PRODUCERS {
            if !self.producer_known(index) {
                continue;
            }
            let last = self.producers[index].stored.last().cloned().expect("known");
            self.resend_batch(index, &last, Durability::Fsync)?;
        }
        Ok(())
    }

    fn transfer(&mut self) {
        while let Some(request) = self.log.poll_io() {
            self.trace(format_args!("  io {}", describe(&request)));
            self.storage.submit(request);
        }
    }

    fn deliver(&mut self) -> Checked {
        while let Some(done) = self.storage.poll_done() {
            self.log.handle_io_done(self.now, done);
            self.transfer();
        }
        self.drain_events()
    }

    fn pump(&mut self) -> Checked {
        self.transfer();
        let count = self.rng.range(1, 6);
        for _ in 0..count {
            if !self.storage.complete_one() {
                break;
            }
        }
        self.deliver()
    }

    fn pump_all(&mut self) -> Checked {
        loop {
            self.transfer();
            if !self.storage.complete_one() {
                return self.deliver();
            }
            self.deliver()?;
        }
    }

    fn tick(&mut self) -> Checked {
        // Mostly a few ms; one tick in 16 is a pause long enough to cross the retention and
        // roll limits (the configurations use 50 ms to 5 s), so segments expire mid-run.
        let elapsed = if self.rng.chance(1, 16) {
            self.rng.range(100, 6_000)
        } else {
            self.rng.below(20)
        };
        self.now = Millis(self.now.0 + i64::try_from(elapsed).expect("fits"));
        self.log.handle_tick(self.now);
        self.transfer();
        self.drain_events()?;
        // A tick wakes every parked fetch whose deadline came.
        for (ticket, parked) in &self.parked {
            ensure(parked.deadline > self.now, || {
                format!(
                    "fetch {ticket:?} ({parked:?}) still parked after a tick at {:?}",
                    self.now
                )
            })?;
        }
        Ok(())
    }

    fn drain_events(&mut self) -> Checked {
        while let Some(event) = self.log.poll_event() {
            self.trace(format_args!("  event {event:?}"));
            match event {
                LogEvent::Written { up_to } => {
                    ensure(!self.fenced, || {
                        "a fenced partition reported a write".into()
                    })?;
                    ensure(up_to > self.written_seen, || {
                        format!("written moved back to {up_to}")
                    })?;
                    ensure(up_to <= self.log.next_offset(), || {
                        format!("written {up_to} past the end")
                    })?;
                    self.written_seen = up_to;
                }
                LogEvent::Durable { up_to } => {
                    ensure(!self.fenced, || "a fenced partition acknowledged".into())?;
                    ensure(up_to > self.promised, || {
                        format!("high watermark moved back to {up_to}")
                    })?;
                    ensure(up_to <= self.written_seen, || {
                        format!("durable {up_to} passed written {}", self.written_seen)
                    })?;
                    let synced = self.synced_end()?;
                    ensure(synced >= up_to, || {
                        format!("high watermark {up_to} covers unsynced data (synced image ends at {synced})")
                    })?;
                    self.promised = up_to;
                    self.report.durable_events += 1;
                }
                LogEvent::Fenced { durable, .. } => {
                    ensure(durable == self.promised, || {
                        format!(
                            "fenced at {durable}, but the high watermark is {}",
                            self.promised
                        )
                    })?;
                    self.fenced = true;
                    self.report.fences += 1;
                }
                LogEvent::SegmentRolled { .. } => self.report.rolls += 1,
                LogEvent::SegmentsDeleted {
                    segments,
                    log_start,
                } => {
                    self.report.segments_deleted += u64::from(segments);
                    ensure(segments > 0 && log_start == self.log.log_start(), || {
                        format!(
                            "retention reported {segments} deletions up to {log_start}, the log \
                             starts at {}",
                            self.log.log_start()
                        )
                    })?;
                    ensure(log_start <= self.log.high_watermark(), || {
                        format!("log start {log_start} passed the high watermark")
                    })?;
                }
                LogEvent::LogStartMoved { log_start } => {
                    ensure(!self.fenced, || {
                        "a fenced partition moved its log start".into()
                    })?;
                    ensure(log_start >= self.start_promised, || {
                        format!(
                            "log start reported moved to {log_start}, below {}",
                            self.start_promised
                        )
                    })?;
                    ensure(
                        log_start <= self.log.log_start() && log_start <= self.log.high_watermark(),
                        || {
                            format!(
                                "log start reported at {log_start}; the log starts at {} and \
                                 its high watermark is {}",
                                self.log.log_start(),
                                self.log.high_watermark()
                            )
                        },
                    )?;
                    let marker = FileRef::log_start(log_start);
                    ensure(
                        self.storage.durable_contents(&marker).is_some()
                            && self.storage.is_dir_durable(&marker),
                        || format!("log start reported at {log_start} before {marker} is durable"),
                    )?;
                    self.start_promised = log_start;
                    self.report.log_start_moves += 1;
                }
                LogEvent::Acked { ticket } => self.acked(ticket)?,
                LogEvent::Refused { ticket } => {
                    ensure(self.fenced, || {
                        format!("ticket {ticket:?} refused, but the log is not fenced")
                    })?;
                    let known = self.tickets.remove(&ticket).is_some()
                        || self.start_asked.remove(&ticket).is_some();
                    ensure(known, || {
                        format!("refused ticket {ticket:?} is not waiting")
                    })?;
                }
                LogEvent::Deposed { ticket } => {
                    return Err(format!(
                        "ticket {ticket:?} deposed, but this log is never led by a replica"
                    ));
                }
                LogEvent::FetchReady { ticket } => {
                    self.report.fetches_woken += 1;
                    let parked = self.parked.remove(&ticket).ok_or_else(|| {
                        format!("woken fetch {ticket:?} is not parked (or was withdrawn)")
                    })?;
                    let (start, high) = (self.log.log_start(), self.log.high_watermark());
                    ensure(
                        self.fenced
                            || high > parked.seen
                            || start > parked.offset
                            || self.now >= parked.deadline,
                        || {
                            format!(
                                "fetch {ticket:?} woken for nothing: {parked:?}, log [{start}, \
                                 {high}], now {:?}",
                                self.now
                            )
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Where the offsets that the synced image holds end: scanning the synced contents of
    /// every log file whose directory entry is durable, from the log start.
    fn synced_end(&self) -> Checked<Offset> {
        let mut end = self.log.log_start();
        let mut logs: Vec<FileRef> = self
            .storage
            .file_refs()
            .into_iter()
            .filter(|file| file.kind == SegmentFileKind::Log && self.storage.is_dir_durable(file))
            .collect();
        logs.sort();
        for file in logs {
            if file.base > end {
                break;
            }
            let data = self.storage.durable_contents(&file).unwrap_or_default();
            let (found, _) = scan_segment(data, 0, Some(file.base));
            if let Some(last) = found.last() {
                end = end.max(last.next_offset());
            }
        }
        Ok(end)
    }

    fn check_watermarks(&self) -> Checked {
        let log = &self.log;
        ensure(log.high_watermark() == self.promised, || {
            format!(
                "high watermark {} but last reported {}",
                log.high_watermark(),
                self.promised
            )
        })?;
        ensure(log.log_start() <= log.high_watermark(), || {
            "log start above high watermark".into()
        })?;
        ensure(log.high_watermark() <= log.written_end(), || {
            "durable above written".into()
        })?;
        ensure(log.written_end() <= log.next_offset(), || {
            "written above next offset".into()
        })?;
        if !self.fenced {
            // A ticket still waiting is above the watermark of its level.
            for (ticket, wait) in &self.tickets {
                let watermark = match wait.durability {
                    Durability::Write => self.written_seen,
                    _ => self.promised,
                };
                ensure(wait.next > watermark, || {
                    format!("covered ticket {ticket:?} ({wait:?}) was not acknowledged")
                })?;
            }
            for (ticket, asked) in &self.start_asked {
                ensure(*asked > self.start_promised, || {
                    format!("DeleteRecords {ticket:?} to {asked} was not answered")
                })?;
            }
        } else {
            ensure(
                self.tickets.is_empty() && self.start_asked.is_empty(),
                || "a fenced log kept acknowledgements waiting".into(),
            )?;
        }
        ensure(
            self.log.acks_waiting() == self.tickets.len() + self.start_asked.len(),
            || {
                format!(
                    "the log has {} acknowledgements waiting, the model {}",
                    self.log.acks_waiting(),
                    self.tickets.len() + self.start_asked.len()
                )
            },
        )?;
        // Parked fetches: within the limit, none left that should have been woken, and the
        // log's timeout no later than the earliest deadline.
        ensure(
            self.log.fetches_parked() == self.parked.len()
                && self.parked.len() <= self.config.fetch_waiters_max as usize,
            || {
                format!(
                    "{} fetches parked in the log, {} in the model, limit {}",
                    self.log.fetches_parked(),
                    self.parked.len(),
                    self.config.fetch_waiters_max
                )
            },
        )?;
        for (ticket, parked) in &self.parked {
            ensure(
                !self.fenced
                    && log.high_watermark() <= parked.seen
                    && log.log_start() <= parked.offset,
                || format!("fetch {ticket:?} ({parked:?}) should have been woken"),
            )?;
            ensure(
                log.poll_timeout().is_some_and(|at| at <= parked.deadline),
                || {
                    format!(
                        "fetch {ticket:?} waits until {:?}, the log's timeout is {:?}",
                        parked.deadline,
                        log.poll_timeout()
                    )
                },
            )?;
        }
        ensure(log.unwritten_bytes() <= PARTITION_BUFFER_BYTES_MAX, || {
            format!("{} bytes wait to be written", log.unwritten_bytes())
        })?;
        Ok(())
    }

    /// A produce or DeleteRecords acknowledged: exactly once, covered, in offset order.
    fn acked(&mut self, ticket: Ticket) -> Checked {
        ensure(!self.fenced, || {
            format!("a fenced log acknowledged {ticket:?}")
        })?;
        self.report.acks += 1;
        if let Some(asked) = self.start_asked.remove(&ticket) {
            return ensure(asked <= self.start_promised, || {
                format!(
                    "DeleteRecords to {asked} answered with the log start durable at {}",
                    self.start_promised
                )
            });
        }
        let wait = self
            .tickets
            .remove(&ticket)
            .ok_or_else(|| format!("acknowledged ticket {ticket:?} is not waiting"))?;
        let (watermark, level) = match wait.durability {
            Durability::Write => (self.written_seen, 0),
            _ => (self.promised, 1),
        };
        ensure(wait.next <= watermark, || {
            format!("{ticket:?} ({wait:?}) acknowledged before its watermark ({watermark})")
        })?;
        if wait.duplicate {
            return Ok(());
        }
        ensure(wait.next > self.last_acked[level], || {
            format!(
                "{ticket:?} ({wait:?}) acknowledged after a later batch of its level ({})",
                self.last_acked[level]
            )
        })?;
        self.last_acked[level] = wait.next;
        Ok(())
    }

    /// Parks a fetch (a long poll that found too little), or withdraws a parked one.
    fn park_fetch(&mut self) -> Checked {
        if !self.parked.is_empty() && self.rng.chance(1, 4) {
            let tickets: Vec<Ticket> = self.parked.keys().copied().collect();
            let ticket = tickets[self.rng.index(tickets.len())];
            self.log.cancel_fetch_wait(ticket);
            self.parked.remove(&ticket);
            return Ok(());
        }
        // Mostly a fetch that saw the current high watermark; sometimes one that looked before
        // the log moved on (an older high watermark, an offset the log start has passed), as
        // a fetch that read from disk meanwhile does.
        let (start, end) = (self.log.log_start(), self.log.high_watermark());
        let (offset, seen) = if self.rng.chance(1, 4) {
            let seen = Offset(self.rng.range(start.0.saturating_sub(3), end.0));
            (
                Offset(self.rng.range(seen.0.saturating_sub(3), seen.0)),
                seen,
            )
        } else {
            (Offset(self.rng.range(start.0, end.0)), end)
        };
        let max_wait_ms = [0u32, 1, 30, 500][self.rng.index(4)];
        let deadline = Millis(self.now.0 + i64::from(max_wait_ms));
        let ready_now = offset < start || seen < end || deadline <= self.now;
        match self
            .log
            .handle_fetch_wait(self.now, offset, seen, max_wait_ms)
        {
            Ok(ticket) => {
                ensure(!self.fenced, || "a fenced log parked a fetch".into())?;
                let parked = ParkedFetch {
                    offset,
                    seen,
                    deadline,
                };
                ensure(self.parked.insert(ticket, parked).is_none(), || {
                    format!("ticket {ticket:?} given twice")
                })?;
                if ready_now {
                    // Woken at once, without parking: the event is already out.
                    let woken = self.log.poll_event();
                    ensure(woken == Some(LogEvent::FetchReady { ticket }), || {
                        format!("fetch {parked:?} was ready at once, but the log said {woken:?}")
                    })?;
                    self.report.fetches_woken += 1;
                    self.parked.remove(&ticket);
                }
            }
            Err(FetchWaitError::TooMany { parked }) => {
                ensure(
                    !self.fenced
                        && !ready_now
                        && parked == self.parked.len()
                        && parked >= self.config.fetch_waiters_max as usize,
                    || {
                        format!(
                            "fetch refused with {parked} parked ({} in the model, limit {}, \
                             ready at once {ready_now})",
                            self.parked.len(),
                            self.config.fetch_waiters_max
                        )
                    },
                )?;
            }
            Err(FetchWaitError::Fenced) => ensure(self.fenced, || {
                "a fetch was refused as fenced, but no fence was reported".into()
            })?,
        }
        self.drain_events()
    }

    fn fetch_random(&mut self) -> Checked {
        if self.rng.chance(1, 3) {
            return self.park_fetch();
        }
        let (start, end) = (self.log.log_start(), self.log.high_watermark());
        self.check_fetch_bounds()?;
        self.check_max_timestamp()?;
        self.check_timestamp_scan()?;
        if start >= end {
            return Ok(());
        }
        let offset = Offset(self.rng.range(start.0, end.0 - 1));
        let max_bytes = [1u32, 4096, 100_000][self.rng.index(3)];
        let bytes = self.fetch(offset, max_bytes)?;
        let next = self.check_fetched(offset, &bytes)?;
        // As much as fits: the batch after the answer, if it is visible and in the same
        // segment, would have taken the answer past `max_bytes`.
        let segment_end = self
            .log
            .segment_bases()
            .into_iter()
            .find(|&base| base > offset);
        if next < end && segment_end.is_none_or(|segment_end| next < segment_end) {
            let following = self
                .batches
                .get(&next.0)
                .map_or(0, |batch| batch.bytes.len());
            ensure(bytes.len() + following > max_bytes as usize, || {
                format!(
                    "fetch at {offset} of at most {max_bytes} bytes returned {} and left out \
                     the next batch ({following} bytes), which fits",
                    bytes.len()
                )
            })?;
        }
        // At most `max_bytes`, unless the first batch alone is larger (a fetch always makes
        // progress).
        let first = batches(&bytes)
            .next()
            .and_then(Result::ok)
            .map_or(0, |batch| batch.as_bytes().len());
        ensure(bytes.len() <= first.max(max_bytes as usize), || {
            format!(
                "fetch at {offset} of at most {max_bytes} bytes returned {}",
                bytes.len()
            )
        })
    }

    /// Reads what a fetch plan names and completes it as the node does, following a read
    /// that ended inside a batch with the one the log asks for (at most one). The bound on
    /// kept read-ahead varies: none, a little, or any. A file missing is a failed check when
    /// `must_exist`, otherwise an empty read.
    fn read(&mut self, mut plan: ReadPlan, must_exist: bool) -> Checked<Result<Bytes, FetchError>> {
        let keep_max = [0, 4096, u64::MAX][self.rng.index(3)];
        for _ in 0..2 {
            let data = match self.storage.read_now(&plan.file, plan.position, plan.len) {
                Some(data) => data,
                None if must_exist => return Err(format!("fetch read of missing {}", plan.file)),
                None => Bytes::new(),
            };
            match self.log.handle_read(self.now, &plan, &data, keep_max) {
                Ok(ReadDone::Answer(bytes)) => return Ok(Ok(bytes)),
                Ok(ReadDone::More(more)) => {
                    self.report.reads_continued += 1;
                    plan = more;
                }
                Err(error) => return Ok(Err(error)),
            }
        }
        Err(format!(
            "a fetch's read was continued twice (at {})",
            plan.position
        ))
    }

    fn fetch(&mut self, offset: Offset, max_bytes: u32) -> Checked<Bytes> {
        self.report.fetches += 1;
        let kept = self.log.read_ahead_bytes();
        match self.log.handle_fetch(offset, max_bytes) {
            Ok(FetchPlan::Ready(bytes)) => {
                if kept > 0 && self.log.read_ahead_bytes() != kept {
                    self.report.read_ahead_hits += 1;
                }
                Ok(bytes)
            }
            Ok(FetchPlan::Read(plan)) => self
                .read(plan, true)?
                .map_err(|error| format!("fetch at {offset}: {error}")),
            Ok(FetchPlan::AtEnd) => Err(format!(
                "fetch at {offset} below the high watermark said at end"
            )),
            Err(error) => Err(format!("fetch at {offset}: {error}")),
        }
    }

    /// The log start, the base of the segment holding it (segments wholly below it are not
    /// readable), and the model's batches from that segment on that are durable (below the
    /// high watermark), by base offset.
    fn durable_batches(&self) -> (Offset, Offset, Vec<(&u64, &ModelBatch)>) {
        let (start, end) = (self.log.log_start(), self.log.high_watermark());
        let bases = self.log.segment_bases();
        let next = self.log.next_offset();
        let first = bases
            .iter()
            .enumerate()
            .find(|(index, _)| bases.get(index + 1).copied().unwrap_or(next) > start)
            .map_or(start, |(_, base)| *base);
        let durable = self
            .batches
            .range(first.0..end.0)
            .filter(|(_, batch)| batch.next <= end)
            .collect();
        (start, first, durable)
    }

    /// The newest durable timestamp and where a scan for it starts (ListOffsets -3), against
    /// the model: the newest timestamp of the batches in the log below the high watermark,
    /// and a start at or before the first batch that has it (or at the log start, if that
    /// batch lies below it), with only older batches in between. Uses no randomness.
    fn check_max_timestamp(&self) -> Checked {
        let (start, _, durable) = self.durable_batches();
        let newest = durable.iter().map(|(_, batch)| batch.max_timestamp).max();
        let found = self.log.max_timestamp_scan_start();
        let Some(newest) = newest else {
            return ensure(found.is_none(), || {
                format!("newest timestamp {found:?} on a log without durable records")
            });
        };
        let Some((timestamp, scan_from)) = found else {
            return Err(format!(
                "no newest timestamp found; the model's is {newest}"
            ));
        };
        ensure(timestamp == newest, || {
            format!("newest timestamp {timestamp}, the model's is {newest}")
        })?;
        let holder = durable
            .iter()
            .find(|(_, batch)| batch.max_timestamp == newest)
            .map_or(0, |(base, _)| **base);
        ensure(scan_from >= start, || {
            format!("newest-timestamp scan starts at {scan_from}, below the log start {start}")
        })?;
        if holder >= start.0 {
            ensure(scan_from.0 <= holder, || {
                format!("newest-timestamp scan starts at {scan_from}, after its batch {holder}")
            })?;
            let earlier_newest = durable
                .iter()
                .filter(|(base, batch)| **base < holder && batch.next > scan_from)
                .any(|(_, batch)| batch.max_timestamp >= newest);
            ensure(!earlier_newest, || {
                "a batch before the newest one already has its timestamp".into()
            })?;
        }
        Ok(())
    }

    /// Where a scan for the first record at or after a timestamp starts (ListOffsets by
    /// time, FindRecord), against the model, for the oldest, a middle and the newest durable
    /// batch's timestamp and one past the newest: at or after the log start, at or before the
    /// first durable batch reaching the timestamp (unless that lies below the log start), with
    /// only older batches in between; none when no batch of the log reaches it (a segment
    /// whose newest record is not durable yet may still give a start: the scan from it finds
    /// nothing below the high watermark). Uses no randomness.
    fn check_timestamp_scan(&self) -> Checked {
        let (start, first, durable) = self.durable_batches();
        let mut probes: Vec<i64> = durable
            .iter()
            .map(|(_, batch)| batch.max_timestamp)
            .collect();
        probes.sort_unstable();
        let Some(&newest) = probes.last() else {
            return Ok(());
        };
        let probes = [
            probes[0],
            probes[probes.len() / 2],
            newest,
            newest.saturating_add(1),
        ];
        for timestamp in probes {
            let found = self.log.timestamp_scan_start(timestamp);
            let holder = durable
                .iter()
                .find(|(_, batch)| batch.max_timestamp >= timestamp)
                .map(|(base, _)| **base);
            let Some(holder) = holder else {
                let appended = self
                    .batches
                    .range(first.0..)
                    .any(|(_, batch)| batch.max_timestamp >= timestamp);
                ensure(found.is_none() || appended, || {
                    format!("a scan for {timestamp} starts at {found:?}; no record reaches it")
                })?;
                continue;
            };
            let Some(scan_from) = found else {
                return Err(format!(
                    "no scan start for {timestamp}; the durable batch at {holder} reaches it"
                ));
            };
            ensure(scan_from >= start, || {
                format!("a scan for {timestamp} starts at {scan_from}, below the log start {start}")
            })?;
            if holder >= start.0 {
                ensure(scan_from.0 <= holder, || {
                    format!(
                        "a scan for {timestamp} starts at {scan_from}, after its batch {holder}"
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Fetches at the edges of the visible range: the high watermark is the end (nothing to
    /// return yet, even if later offsets are written), and offsets above it or below the log
    /// start are out of range. Uses no randomness, so it changes no seed's course.
    fn check_fetch_bounds(&mut self) -> Checked {
        let (start, end) = (self.log.log_start(), self.log.high_watermark());
        match self.log.handle_fetch(end, 1 << 20) {
            Ok(FetchPlan::AtEnd) => {}
            other => {
                return Err(format!(
                    "fetch at the high watermark {end} returned {other:?}, not its end"
                ))
            }
        }
        let mut outside = vec![Offset(end.0 + 1), self.log.next_offset()];
        if start.0 > 0 {
            outside.push(Offset(start.0 - 1));
        }
        for offset in outside {
            if offset == end {
                continue;
            }
            ensure(
                matches!(
                    self.log.handle_fetch(offset, 1 << 20),
                    Err(FetchError::OutOfRange { .. })
                ),
                || format!("fetch at {offset} outside [{start}, {end}] was not out of range"),
            )?;
        }
        Ok(())
    }

    /// Checks fetched bytes against the model; returns the offset after the last batch.
    /// Every batch must end at or below the high watermark: consumers never see what a
    /// crash could take back.
    fn check_fetched(&self, offset: Offset, bytes: &[u8]) -> Checked<Offset> {
        let mut next = None;
        let high = self.log.high_watermark();
        for batch in batches(bytes) {
            let batch = batch.map_err(|error| format!("fetched an invalid batch: {error}"))?;
            let base = batch.base_offset();
            ensure(batch.next_offset() <= high, || {
                format!(
                    "fetch at {offset} returned batch {base}..{} above the high watermark {high}",
                    batch.last_offset()
                )
            })?;
            match next {
                None => ensure(base <= offset && offset <= batch.last_offset(), || {
                    format!(
                        "fetch at {offset} started with batch {base}..{}",
                        batch.last_offset()
                    )
                })?,
                Some(expected) => ensure(base == expected, || {
                    format!("fetched batches not contiguous: {base} after {expected}")
                })?,
            }
            let model = self
                .batches
                .get(&base.0)
                .ok_or_else(|| format!("fetched batch at {base}, which was never assigned"))?;
            ensure(model.next == batch.next_offset(), || {
                format!("batch {base} has the wrong length")
            })?;
            ensure(batch.as_bytes()[24..] == model.bytes[24..], || {
                format!("batch {base} bytes differ from what was appended")
            })?;
            next = Some(batch.next_offset());
        }
        next.ok_or_else(|| format!("fetch at {offset} returned no batch"))
    }

    /// Fetches every offset in `[start, end)` and compares with the model. With
    /// `corruption_possible` (after a bit flip), a fetch may instead report the damage (a
    /// rolled segment is only fully checked when read), which ends the check; wrong bytes are
    /// never allowed.
    fn verify_range(&mut self, start: Offset, end: Offset, corruption_possible: bool) -> Checked {
        let mut offset = start;
        while offset < end {
            let bytes = match self.log.handle_fetch(offset, 1 << 20) {
                Ok(FetchPlan::Read(plan)) if corruption_possible => {
                    match self.read(plan, false)? {
                        Ok(bytes) => bytes,
                        Err(FetchError::Corrupt { .. }) => {
                            self.report.corruptions_detected += 1;
                            return Ok(());
                        }
                        Err(error) => return Err(format!("fetch at {offset}: {error}")),
                    }
                }
                _ => self.fetch(offset, 1 << 20)?,
            };
            let next = self.check_fetched(offset, &bytes)?;
            ensure(next > offset, || {
                format!("fetch at {offset} made no progress")
            })?;
            offset = next;
        }
        Ok(())
    }

    /// The log's segments as the model sees them: the appended batches between each
    /// segment's base and the next one's (the last ends at the next offset).
    fn model_segments(&self) -> Vec<ModelSegment> {
        let bases = self.log.segment_bases();
        let mut segments = Vec::with_capacity(bases.len());
        for (index, &base) in bases.iter().enumerate() {
            let end = bases
                .get(index + 1)
                .copied()
                .unwrap_or(self.log.next_offset());
            let mut segment = ModelSegment {
                base,
                size: 0,
                max_timestamp: None,
            };
            for batch in self.batches.range(base.0..end.0).map(|(_, batch)| batch) {
                segment.size += batch.bytes.len() as u64;
                segment.max_timestamp = segment.max_timestamp.max(Some(batch.max_timestamp));
            }
            segments.push(segment);
        }
        segments
    }

    /// Whether retention may delete `segment` (the oldest left) when the log's segments
    /// together hold `total` bytes: by time, its newest record is older than
    /// `now - retention_ms`; by size, the log without it still holds `retention_bytes`.
    /// `log_start` is the log start before the retention run being judged: the run itself
    /// raises the start to the first segment it keeps, after which every deleted segment
    /// would look wholly below it (that hid early deletions from this check).
    fn past_retention(
        &self,
        segment: &ModelSegment,
        total: u64,
        next_base: Offset,
        log_start: Offset,
    ) -> bool {
        if next_base <= log_start {
            // Wholly below the log start (DeleteRecords).
            return true;
        }
        let expired = self.config.retention_ms.is_some_and(|ms| {
            segment
                .max_timestamp
                .is_some_and(|newest| newest < self.now.0.saturating_sub(ms))
        });
        let oversized = self
            .config
            .retention_bytes
            .is_some_and(|limit| total - segment.size >= limit);
        expired || oversized
    }

    /// Applies retention and checks it against the model: only whole segments, oldest first,
    /// each past its limit, never the newest; on an idle, fully durable log nothing past its
    /// limit is left behind (but the newest segment).
    fn retention(&mut self) -> Checked {
        let before = self.log.log_start();
        let segments = self.model_segments();
        let total: u64 = segments.iter().map(|segment| segment.size).sum();
        ensure(total == self.log.size_bytes(), || {
            format!(
                "the log holds {} bytes, the model {total}",
                self.log.size_bytes()
            )
        })?;
        let busy = self.fenced
            || !self.log.is_idle()
            || self.log.high_watermark() != self.log.next_offset();
        let deleted = self.log.handle_retention(self.now);
        let after = self.log.log_start();
        ensure(after >= before, || "log start moved back".into())?;
        ensure(
            after == before || self.log.segment_bases().first() == Some(&after),
            || "log start is not a segment base: retention deleted part of a segment".into(),
        )?;
        ensure(self.log.segment_count() >= 1, || {
            "retention deleted the active segment".into()
        })?;
        let bases: Vec<Offset> = segments.iter().map(|segment| segment.base).collect();
        let deleted = usize::try_from(deleted).expect("fits");
        ensure(
            deleted < bases.len() && self.log.segment_bases() == bases[deleted..],
            || {
                format!(
                    "retention reported {deleted} deletions of {bases:?}, leaving {:?}: \
                     not the oldest whole segments, or the newest one",
                    self.log.segment_bases()
                )
            },
        )?;
        let mut remaining = total;
        for (index, segment) in segments[..deleted].iter().enumerate() {
            let next_base = segments[index + 1].base;
            ensure(
                self.past_retention(segment, remaining, next_base, before),
                || {
                    format!(
                    "retention at {:?} deleted segment {} ({} bytes, newest record {:?}) \
                     within its limits (retention_ms {:?}, retention_bytes {:?}, log {remaining} bytes)",
                    self.now,
                    segment.base,
                    segment.size,
                    segment.max_timestamp,
                    self.config.retention_ms,
                    self.config.retention_bytes
                )
                },
            )?;
            remaining -= segment.size;
        }
        if !busy && segments.len() - deleted > 1 {
            // Idle and durable: nothing holds the oldest segment back (no writes pending, the
            // next segment's name is durable), so it must be within its limits now.
            let oldest = &segments[deleted];
            let next_base = segments[deleted + 1].base;
            ensure(
                !self.past_retention(oldest, remaining, next_base, before),
                || {
                    format!(
                    "retention at {:?} kept segment {} ({} bytes, newest record {:?}) past its \
                     limits (retention_ms {:?}, retention_bytes {:?}, log {remaining} bytes)",
                    self.now,
                    oldest.base,
                    oldest.size,
                    oldest.max_timestamp,
                    self.config.retention_ms,
                    self.config.retention_bytes
                )
                },
            )?;
        }
        self.transfer();
        let reported = self.report.segments_deleted;
        self.drain_events()?;
        ensure(
            self.report.segments_deleted - reported == deleted as u64,
            || {
                format!(
                    "retention deleted {deleted} segments but reported {}",
                    self.report.segments_deleted - reported
                )
            },
        )
    }

    /// Moves the log start (DeleteRecords) and checks the answer: done at once only if the
    /// log already starts there, refused past the high watermark or when fenced, otherwise
    /// under way (nothing visible changes until its event).
    fn delete_records(&mut self) -> Checked {
        let (start, end) = (self.log.log_start(), self.log.high_watermark());
        let offset = if self.rng.chance(1, 8) {
            Offset(end.0 + self.rng.range(1, 3))
        } else if self.rng.chance(1, 8) || start == end {
            Offset(self.rng.range(start.0.saturating_sub(2), end.0))
        } else {
            // Mostly a short way forward, so the log keeps records to read.
            Offset(
                self.rng
                    .range(start.0, start.0 + (end.0 - start.0).div_ceil(4)),
            )
        };
        match self.log.handle_delete_records(offset) {
            Ok(None) => {
                ensure(offset <= start, || {
                    format!(
                        "log start move to {offset} answered at once; the log starts at {start}"
                    )
                })?;
                // Answered at once only where the start is durable: a crash keeps it.
                self.start_promised = self.start_promised.max(offset);
            }
            Ok(Some(ticket)) => {
                // Also at or below a start that retention raised but has not synced yet.
                ensure(offset <= end && !self.fenced, || {
                    format!(
                        "log start move to {offset} accepted with the log at [{start}, {end}], \
                         fenced {}",
                        self.fenced
                    )
                })?;
                ensure(self.start_asked.insert(ticket, offset).is_none(), || {
                    format!("ticket {ticket:?} given twice")
                })?;
            }
            Err(DeleteRecordsError::AboveHighWatermark { .. }) => ensure(offset > end, || {
                format!("log start move to {offset} refused, below the high watermark {end}")
            })?,
            Err(DeleteRecordsError::Fenced(_)) => ensure(self.fenced, || {
                "log start move refused as fenced, but no fence was reported".into()
            })?,
        }
        ensure(self.log.log_start() == start, || {
            "DeleteRecords moved the log start before its marker was durable".into()
        })?;
        self.transfer();
        self.drain_events()
    }

    fn recover(&mut self, mut storage: SimStorage) -> Checked<(SimStorage, Recovered)> {
        for attempt in 0..3 {
            if attempt == 0 && self.options.faults && self.rng.chance(1, 10) {
                storage.inject(Fault::ReadError);
            }
            let listing = storage.list().map_err(|error| error.to_string())?;
            let mut recovery = Recovery::new(self.config.clone(), &listing);
            let result = loop {
                while let Some(request) = recovery.poll_io() {
                    storage.submit(request);
                }
                if let Some(result) = recovery.poll_done() {
                    break result;
                }
                if !storage.complete_one() {
                    return Err("recovery is stuck: no request in flight and no result".into());
                }
                while let Some(done) = storage.poll_done() {
                    recovery.handle_io_done(done);
                }
            };
            match result {
                Ok(recovered) => return Ok((storage, recovered)),
                Err(RecoveryError::Storage(_)) => {
                    // A failed read stops recovery; the node retries (a restart).
                    storage.clear_faults();
                    storage.complete_all();
                    while storage.poll_done().is_some() {}
                }
                Err(error) => return Err(format!("recovery failed: {error}")),
            }
        }
        Err("recovery failed three times".into())
    }

    /// Where each log file's synced batches end (a crash keeps at least these bytes): the
    /// torn-tail window of a segment starts there.
    fn synced_ends(&self) -> BTreeMap<Offset, u64> {
        self.storage
            .file_refs()
            .into_iter()
            .filter(|file| file.kind == SegmentFileKind::Log)
            .map(|file| {
                let data = self.storage.durable_contents(&file).unwrap_or_default();
                let (found, _) = scan_segment(data, 0, Some(file.base));
                (
                    file.base,
                    found.last().map_or(0, |batch| batch.end_position()),
                )
            })
            .collect()
    }

    /// Crashes and recovers. `synced` holds the synced data ends taken before any bit flip;
    /// `flip` says which batch a flip damaged, if any.
    fn crash_and_recover(
        &mut self,
        synced: &BTreeMap<Offset, u64>,
        flip: Option<&Flip>,
    ) -> Checked<RecoveryReport> {
        self.storage.clear_faults();
        let image = self.storage.crash(self.rng.next_u64());
        let (storage, Recovered { log, report }) = self.recover(image)?;
        self.report.crashes += 1;
        if report.torn_tail.is_some() {
            self.report.torn_tails += 1;
        }
        let high = log.high_watermark();
        self.trace(format_args!(
            "  recovered to {high}: torn {:?}, corruption {:?}, synced ends {synced:?}",
            report.torn_tail, report.corruption
        ));
        match flip {
            None => {
                ensure(report.corruption.is_none(), || {
                    format!(
                        "a crash alone was reported as corruption: {:?}",
                        report.corruption
                    )
                })?;
                ensure(high >= self.promised, || {
                    format!(
                        "recovered high watermark {high} is below the promised {}",
                        self.promised
                    )
                })?;
            }
            Some(flip) => self.check_flip_recovery(flip, &report, high)?,
        }
        if let Some(torn) = &report.torn_tail {
            // Only bytes a crash could have torn may go: those after the segment's synced
            // data end. The one exception: a flip in the last synced batch of the active
            // segment looks like a garbage tail (the documented limit).
            let synced_end = synced.get(&torn.segment).copied().ok_or_else(|| {
                format!("torn tail in segment {}, which had no file", torn.segment)
            })?;
            let flipped_last = flip.filter(|flip| flip.segment == torn.segment && flip.last_synced);
            let allowed = flipped_last.map_or(synced_end, |flip| flip.batch_start);
            ensure(torn.position >= allowed, || {
                format!(
                    "recovery truncated segment {} at {}, below its synced data end {synced_end}: \
                     acknowledged data silently cut ({})",
                    torn.segment, torn.position, torn.reason
                )
            })?;
            // Everything discarded lies in the window a crash can tear (one round, from the
            // sector holding the durable end).
            let window_end = (allowed & !(u64::from(SECTOR_SIZE) - 1)) + TORN_WINDOW_BYTES;
            ensure(torn.position + torn.bytes_discarded <= window_end, || {
                format!(
                    "recovery discarded {} bytes from {} in segment {}, beyond the torn-tail \
                     window ending at {window_end}",
                    torn.bytes_discarded, torn.position, torn.segment
                )
            })?;
            ensure(torn.bytes_discarded > 0, || {
                format!(
                    "recovery reported a torn tail in segment {} at {} that discarded nothing",
                    torn.segment, torn.position
                )
            })?;
            if flipped_last.is_some() && torn.position < synced_end {
                self.report.flips_truncated += 1;
            }
        }
        ensure(
            log.next_offset() == high && log.written_end() == high,
            || "after recovery everything present must be durable".into(),
        )?;
        // (After a bit flip the log may end below a reported log start: it then starts at
        // its end.)
        ensure(log.log_start() >= self.start_promised.min(high), || {
            format!(
                "recovered log start {} is below the reported move to {}",
                log.log_start(),
                self.start_promised
            )
        })?;
        self.storage = storage;
        self.log = log;
        // Moves under way are lost or done; the recovered log start says which.
        self.start_asked.clear();
        self.parked.clear();
        self.last_acked = [Offset(0); 2];
        // Offsets at and above the recovered end were never durable: they may be assigned again.
        self.batches.retain(|&base, _| base < high.0);
        self.tickets.clear();
        self.promised = high;
        self.written_seen = high;
        self.fenced = self.log.fenced().is_some();
        let start = self.log.log_start();
        self.verify_range(start, high, flip.is_some())?;
        if !self.fenced {
            self.check_no_stale_bytes()?;
        }
        self.check_sealed_verification(flip)?;
        self.check_producers_after_recovery()?;
        Ok(report)
    }

    /// Background verification (`spate_core::verify`) of every sealed segment, over its
    /// synced contents: a log that met no bit flip verifies intact (no false alarm, and
    /// every sealed segment is durable in full); after a flip, the only damage it may find is
    /// the flipped batch.
    fn check_sealed_verification(&mut self, flip: Option<&Flip>) -> Checked {
        let sealed = self.log.sealed_segments();
        let mut flip_found = false;
        for segment in sealed.iter().copied() {
            let file = segment.file();
            let contents = self.storage.durable_contents(&file).unwrap_or(&[]);
            let mut verifier = SegmentVerifier::new(segment);
            while let Some(read) = verifier.next_read() {
                ensure(
                    read.len <= VERIFY_READ_BYTES + u64::from(SECTOR_SIZE),
                    || format!("the verifier asked for a read of {} bytes", read.len),
                )?;
                let start = usize::try_from(read.position)
                    .unwrap_or(usize::MAX)
                    .min(contents.len());
                let end = usize::try_from(read.position + read.len)
                    .unwrap_or(usize::MAX)
                    .min(contents.len());
                verifier.handle_read(read, &contents[start..end]);
            }
            match verifier.outcome() {
                Some(Ok(())) => {}
                Some(Err(damage))
                    if flip.is_some_and(|flip| {
                        flip.segment == segment.base && flip.batch_start == damage.position
                    }) =>
                {
                    self.report.flips_found_by_verification += 1;
                    flip_found = true;
                }
                Some(Err(damage)) => {
                    return Err(format!(
                        "verification of sealed segment {} ({} bytes, offsets up to {}) found \
                         damage that no flip made: {damage}",
                        segment.base, segment.size, segment.next
                    ));
                }
                None => return Err("the verifier stopped without an outcome".into()),
            }
        }
        // Verification covers every segment the log no longer writes: after a recovery or
        // at the end of a run, all but the last (everything present is durable then).
        let bases = self.log.segment_bases();
        if !self.fenced && self.log.is_idle() && self.storage.in_flight() == 0 {
            ensure(sealed.len() + 1 >= bases.len(), || {
                format!(
                    "{} segments, but only {} are verified as sealed",
                    bases.len(),
                    sealed.len()
                )
            })?;
        }
        // A flip in a sealed segment that recovery did not fence is found by verification.
        if let Some(flip) = flip {
            let covered = sealed
                .iter()
                .any(|segment| segment.base == flip.segment && flip.batch_start < segment.size);
            ensure(!covered || self.fenced || flip_found, || {
                format!(
                    "a bit flip in sealed segment {} at {} was not found by verification",
                    flip.segment, flip.position
                )
            })?;
        }
        Ok(())
    }

    /// After a recovery that did not fence, nothing but zeros lies past the end of the last
    /// segment's data: a torn or garbage tail was cut, so no stale bytes of a write that
    /// never completed remain to be mistaken for data (or damage) later.
    fn check_no_stale_bytes(&self) -> Checked {
        let Some(last) = self.model_segments().pop() else {
            return Ok(());
        };
        let file = FileRef::log(last.base);
        let Some(contents) = self.storage.contents(&file) else {
            return Ok(());
        };
        let end = usize::try_from(last.size).expect("fits");
        let stale = contents
            .get(end..)
            .and_then(|rest| rest.iter().position(|&byte| byte != 0));
        ensure(stale.is_none(), || {
            format!(
                "after recovery, {file} holds non-zero bytes at {} past its data end {end}",
                end + stale.unwrap_or(0)
            )
        })
    }

    /// After a bit flip: every acknowledged offset before the damaged batch survives; the
    /// damage, if recovery found it, is fenced exactly at the damaged batch; a sealed segment
    /// is never truncated, and a truncation never starts after the damage.
    fn check_flip_recovery(&self, flip: &Flip, report: &RecoveryReport, high: Offset) -> Checked {
        let kept = self.promised.min(flip.batch_base);
        ensure(high >= kept, || {
            format!(
                "after a flip at {} in segment {}, the recovered high watermark {high} lost \
                 acknowledged offsets before the damaged batch (at {}, promised {})",
                flip.position, flip.segment, flip.batch_base, self.promised
            )
        })?;
        if let Some(corruption) = &report.corruption {
            let at = (
                FileRef::log(flip.segment).file_name(),
                flip.batch_start,
                flip.batch_base,
            );
            let reported = match corruption {
                FenceReason::Corruption {
                    segment, position, ..
                } => Some((segment.clone(), *position, high)),
                _ => None,
            };
            ensure(reported.as_ref() == Some(&at), || {
                format!(
                    "a flip at {} damaged the batch at {} (offset {}) of {}, but recovery \
                     reported {corruption:?} and recovered to {high}",
                    flip.position, flip.batch_start, flip.batch_base, at.0
                )
            })?;
        }
        if let Some(torn) = report.torn_tail.as_ref() {
            if torn.segment == flip.segment {
                ensure(!flip.sealed, || {
                    "a flip in a sealed segment was truncated".into()
                })?;
                ensure(torn.position <= flip.position, || {
                    format!(
                        "recovery truncated at {} after the flip at {} and did not report it",
                        torn.position, flip.position
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Flips a bit of synced data, then crashes and recovers: the damage must be reported
    /// (fenced), or, only for the last synced batch of the active segment, truncated.
    /// Returns true to end the run.
    fn flip_and_recover(&mut self) -> Checked<bool> {
        let mut logs: Vec<FileRef> = self
            .storage
            .file_refs()
            .into_iter()
            .filter(|file| file.kind == SegmentFileKind::Log)
            .collect();
        logs.retain(|file| {
            let data = self.storage.durable_contents(file).unwrap_or_default();
            !scan_segment(data, 0, Some(file.base)).0.is_empty()
        });
        if logs.is_empty() {
            return Ok(false);
        }
        let synced = self.synced_ends();
        let file = logs[self.rng.index(logs.len())];
        let data = self.storage.durable_contents(&file).unwrap_or_default();
        let (found, _) = scan_segment(data, 0, Some(file.base));
        // Media damage below any write still in flight to the file: a write over the damaged
        // sector would heal it in the crash image, and the flip would not be there to find.
        let in_flight_from = self
            .storage
            .in_flight_requests()
            .iter()
            .filter_map(|request| match request {
                IoRequest::Write {
                    file: written,
                    position,
                    ..
                } if *written == file => Some(*position),
                _ => None,
            })
            .min();
        let end = found
            .last()
            .map_or(0, |batch| batch.end_position())
            .min(in_flight_from.unwrap_or(u64::MAX));
        if end == 0 {
            return Ok(false);
        }
        let position = self.rng.below(end);
        let bit = u8::try_from(self.rng.below(8)).expect("fits");
        let damaged = found
            .iter()
            .position(|batch| batch.position <= position && position < batch.end_position())
            .expect("the synced batches tile the synced data");
        // A segment whose index files are durable is sealed: recovery may never truncate it.
        let sealed = [
            FileRef::offset_index(file.base),
            FileRef::time_index(file.base),
        ]
        .iter()
        .all(|index| self.storage.is_dir_durable(index));
        let flip = Flip {
            segment: file.base,
            position,
            batch_start: found[damaged].position,
            batch_base: found[damaged].base_offset,
            last_synced: damaged + 1 == found.len(),
            sealed,
        };
        self.storage.flip_bit(&file, position, bit);
        let report = self.crash_and_recover(&synced, Some(&flip))?;
        self.report.corruptions_detected += u64::from(report.corruption.is_some());
        Ok(true)
    }
}

fn describe(request: &IoRequest) -> String {
    match request {
        IoRequest::Write {
            file,
            position,
            data,
            ..
        } => format!("write {file} at {position} len {}", data.len()),
        IoRequest::WriteFile { file, data, .. } => format!("write-file {file} len {}", data.len()),
        IoRequest::Create { file, allocate, .. } => format!("create {file} allocate {allocate}"),
        other => format!("{other:?}"),
    }
}

/// Runs `count` seeds from `first`; returns the reports or the first failure.
pub fn run_seeds(first: u64, count: u64, options: Options) -> Result<RunReport, Failure> {
    let mut total = RunReport::default();
    for seed in first..first + count {
        total.add(&run_seed(seed, options)?);
    }
    Ok(total)
}
