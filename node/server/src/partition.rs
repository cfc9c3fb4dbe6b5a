//! A partition on its shard: the driver task owns the partition's `PartitionLog` and its
//! `DmaStorage`, moves requests and completions between them, and answers the requests
//! waiting on the log. Which request waits for what (acknowledgements by durability level,
//! DeleteRecords, parked fetches) is the log's business (`spate_core::waiters`, simulated);
//! here each of the log's tickets maps to the reply channel of its request.

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use spate_core::replica::NotEnoughReplicas;
use spate_core::{
    IoRequest, LogEvent, Millis, PartitionKey, PartitionLog, ShardBudget, Storage, Ticket,
};
use spate_format::Offset;
use spate_proto::{DeleteRecordsResponse, ErrorCode, ErrorResponse, ProduceResponse};

use crate::storage::DmaStorage;

/// The answer a producer waits for.
pub type ProduceResult = Result<ProduceResponse, ErrorResponse>;

/// The answer a DeleteRecords waits for.
pub type DeleteRecordsResult = Result<DeleteRecordsResponse, ErrorResponse>;

/// The wall clock, as the core takes it.
pub fn now() -> Millis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Millis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// The longest a driver sleeps without a reason (a safety net against a missed doorbell).
const DRIVER_IDLE_WAKE: Duration = Duration::from_millis(500);

/// Back-pressure waits look again at least this often (a safety net against a missed wake).
const PROGRESS_RECHECK: Duration = Duration::from_millis(50);

/// Senders kept for back-pressure waiters before all are woken (see `Budget::waiters`).
const BUDGET_WAITERS_MAX: usize = 4096;

/// Senders kept for a partition's durable-progress waiters (its fetcher's reporting; a
/// fetcher of an older generation on its way out) before all are woken.
const DURABLE_WAITERS_MAX: usize = 8;

/// A durable-progress wait looks again at least this often (a safety net against a missed
/// wake; the follower's next fetch reports its durable end anyway).
const DURABLE_RECHECK: Duration = Duration::from_millis(500);

/// Tasks waiting for something to happen, each woken once by the next `wake`, or by its own
/// recheck timer (a safety net against a missed wake). At most `max` senders are kept: a
/// waiter that gave up at its recheck leaves its sender behind until the next wake, and at
/// the limit all are woken, which empties the list (a live waiter woken early looks again and
/// waits anew).
#[derive(Debug)]
struct Wakers {
    senders: RefCell<Vec<LocalSender<()>>>,
    max: usize,
    recheck: Duration,
}

impl Wakers {
    fn new(max: usize, recheck: Duration) -> Self {
        Wakers {
            senders: RefCell::new(Vec::new()),
            max,
            recheck,
        }
    }

    fn wake(&self) {
        for waiter in self.senders.borrow_mut().drain(..) {
            let _ = waiter.try_send(());
        }
    }

    /// Registered before its first await: a caller that looked and found nothing new
    /// misses no wake.
    async fn wait(&self) {
        let (sender, receiver) = local_channel::new_bounded(1);
        if self.senders.borrow().len() >= self.max {
            self.wake();
        }
        self.senders.borrow_mut().push(sender);
        future::or(
            async { receiver.recv().await.map_or((), |_| ()) },
            glommio::timer::sleep(self.recheck),
        )
        .await;
    }
}

/// The shard's unsynced-bytes budget, shared by its partitions, and the connections waiting
/// for it (or for room in a partition's write buffer) to free up.
#[derive(Debug)]
pub struct Budget {
    bytes: RefCell<ShardBudget>,
    /// At most `BUDGET_WAITERS_MAX`, rechecking every `PROGRESS_RECHECK`.
    waiters: Wakers,
}

impl Budget {
    pub fn new(bytes: u64) -> Self {
        Budget {
            bytes: RefCell::new(ShardBudget::new(bytes)),
            waiters: Wakers::new(BUDGET_WAITERS_MAX, PROGRESS_RECHECK),
        }
    }

    pub fn over_budget(&self) -> bool {
        self.bytes.borrow().over_budget()
    }

    /// The shard's unsynced bytes and its budget for them.
    pub fn unsynced(&self) -> (u64, u64) {
        let bytes = self.bytes.borrow();
        (bytes.unsynced_bytes(), bytes.budget())
    }

    /// Wakes everyone waiting for progress (bytes were written or became durable).
    fn wake(&self) {
        self.waiters.wake();
    }

    /// Waits until the shard's unsynced bytes are within its budget (back-pressure).
    pub async fn within(&self) {
        if self.over_budget() {
            crate::metrics::with(|metrics| metrics.backpressure_waits.add(1));
        }
        while self.over_budget() {
            self.wait_for_progress().await;
        }
    }

    /// Waits for the next write or sync progress of any partition of the shard.
    pub async fn wait_for_progress(&self) {
        self.waiters.wait().await;
    }
}

/// A request waiting on the log, by the ticket the log gave it.
#[derive(Debug)]
enum Waiting {
    Produce {
        response: ProduceResponse,
        /// An `fsync` produce, whose acknowledgement checks `min.insync.replicas` again.
        fsync: bool,
        reply: LocalSender<ProduceResult>,
    },
    DeleteRecords {
        reply: LocalSender<DeleteRecordsResult>,
    },
    Fetch {
        reply: LocalSender<()>,
    },
}

#[derive(Debug)]
pub struct Partition {
    pub key: PartitionKey,
    log: RefCell<PartitionLog>,
    /// The log's unsynced bytes as last reported to the shard's budget.
    accounted: Cell<u64>,
    /// The log's kept read-ahead as last reported to the shard's budget.
    read_ahead_accounted: Cell<u64>,
    budget: Rc<Budget>,
    pub storage: RefCell<DmaStorage>,
    doorbell: Rc<LocalSender<()>>,
    /// Requests waiting on the log. Bounded by the connections and their frames in flight
    /// (acknowledgements) and by `fetch_waiters_max` (parked fetches, counted by the log).
    waiting: RefCell<HashMap<Ticket, Waiting>>,
    /// Set to stop the driver once the log is idle (shutdown, deletion).
    closing: Cell<bool>,
    /// Set to stop the driver at once, settled or not (its close waited long enough).
    abandoned: Cell<bool>,
    /// Set when the driver stopped: nothing waiting will be answered by the log any more.
    stopped: Cell<bool>,
    /// Set when the partition left its shard: its bytes no longer count against the budget.
    released: Cell<bool>,
    /// Produces waiting for room in the write buffer pass one at a time, first come first
    /// served, so no connection is starved by others that keep finding room.
    pub room_gate: Rc<glommio::sync::Semaphore>,
    /// The consumer groups this partition coordinates (partitions of the offsets topic
    /// only), set up at the first group request.
    pub groups: RefCell<Option<Rc<crate::shard::groups::Coordinator>>>,
    /// In a cluster, while this node leads the partition: the leader's replica state (its
    /// high watermark is the log's visible end).
    pub leading: RefCell<Option<crate::replica::Leading>>,
    /// In a cluster, while this node follows the partition: whom (its fetcher runs while
    /// this names its generation).
    pub following: RefCell<Option<crate::fetcher::Following>>,
    /// Held by whoever changes the replica's log or its `leader-epochs` file as a replica:
    /// its fetcher while it takes an answer, the shard while it makes it the leader of an
    /// epoch (so no follower's append lands after the new epoch's start was chosen).
    pub replica_turn: Rc<glommio::sync::Semaphore>,
    /// The last ISR change this node wrote for the partition (epoch, the key's revision, the
    /// ISR): a leader taking the epoch again starts from it when the map has not shown it
    /// yet (a replica knows what it wrote).
    pub isr_written: RefCell<Option<(u32, i64, Vec<spate_core::replica::IsrMember>)>>,
    /// Leaderships taken, to tell an ISR change's answer from a later leadership's.
    pub leaderships: Cell<u64>,
    /// Waiting for the log's durable end to move (a follower's fetcher, which reports it to
    /// the leader): woken by this partition's syncs only, not by every partition of the
    /// shard. At most `DURABLE_WAITERS_MAX`, rechecking every `DURABLE_RECHECK`.
    durable_waiters: Wakers,
    /// Records and bytes appended by produce requests since the partition opened (metrics).
    appended: Cell<(u64, u64)>,
    /// Record bytes answered to consumers' fetches since the partition opened (metrics).
    fetched: Cell<u64>,
    /// The write round under way (metrics): when its first write was submitted, its bytes,
    /// and the durable end it started from.
    round: Cell<Option<WriteRound>>,
}

/// A partition's writes up to the sync that makes them durable, as the metrics see it.
#[derive(Debug, Clone, Copy)]
struct WriteRound {
    started: Instant,
    bytes: u64,
    from: Offset,
}

impl Partition {
    /// A partition serving `log` (new or recovered) over `storage`, whose doorbell is
    /// `doorbell`; its unsynced bytes count against `budget`.
    pub fn new(
        key: PartitionKey,
        log: PartitionLog,
        storage: DmaStorage,
        doorbell: Rc<LocalSender<()>>,
        budget: Rc<Budget>,
    ) -> Rc<Partition> {
        let accounted = log.unsynced_bytes();
        budget.bytes.borrow_mut().update(0, accounted);
        Rc::new(Partition {
            key,
            log: RefCell::new(log),
            accounted: Cell::new(accounted),
            read_ahead_accounted: Cell::new(0),
            budget,
            storage: RefCell::new(storage),
            doorbell,
            waiting: RefCell::new(HashMap::new()),
            closing: Cell::new(false),
            abandoned: Cell::new(false),
            stopped: Cell::new(false),
            released: Cell::new(false),
            room_gate: Rc::new(glommio::sync::Semaphore::new(1)),
            groups: RefCell::new(None),
            leading: RefCell::new(None),
            following: RefCell::new(None),
            replica_turn: Rc::new(glommio::sync::Semaphore::new(1)),
            isr_written: RefCell::new(None),
            leaderships: Cell::new(0),
            durable_waiters: Wakers::new(DURABLE_WAITERS_MAX, DURABLE_RECHECK),
            appended: Cell::new((0, 0)),
            fetched: Cell::new(0),
            round: Cell::new(None),
        })
    }

    /// Runs `f` on the log (never across an await) and reports its unsynced bytes to the
    /// shard's budget afterwards.
    pub fn with_log<R>(&self, f: impl FnOnce(&mut PartitionLog) -> R) -> R {
        let (result, unsynced, read_ahead) = {
            let mut log = self.log.borrow_mut();
            let result = f(&mut log);
            (result, log.unsynced_bytes(), log.read_ahead_bytes())
        };
        if !self.released.get() {
            let before = self.accounted.replace(unsynced);
            let mut budget = self.budget.bytes.borrow_mut();
            budget.update(before, unsynced);
            let before = self.read_ahead_accounted.replace(read_ahead);
            budget.update_read_ahead(before, read_ahead);
        }
        result
    }

    /// How much read-ahead this partition may keep within the shard's bound.
    pub fn read_ahead_room(&self) -> u64 {
        if self.released.get() {
            return 0;
        }
        let own = self.read_ahead_accounted.get();
        self.budget.bytes.borrow().read_ahead_room(own)
    }

    /// The log, to read (never across an await).
    pub fn log(&self) -> Ref<'_, PartitionLog> {
        self.log.borrow()
    }

    /// Takes the partition's bytes out of the shard's budget (it was closed or deleted).
    pub fn release_budget(&self) {
        if !self.released.replace(true) {
            let before = self.accounted.replace(0);
            let mut budget = self.budget.bytes.borrow_mut();
            budget.update(before, 0);
            let before = self.read_ahead_accounted.replace(0);
            budget.update_read_ahead(before, 0);
            drop(budget);
            self.budget.wake();
        }
    }

    /// Waits until this partition's durable end may have moved (a sync completed, the log was
    /// fenced, the driver stopped), or `DURABLE_RECHECK` passed. Registered before its first
    /// await: a caller that looked at the durable end and found nothing new misses no wake.
    pub async fn wait_durable_progress(&self) {
        self.durable_waiters.wait().await;
    }

    fn wake_durable(&self) {
        self.durable_waiters.wake();
    }

    /// Wakes the driver (an append happened, time passed, shutdown).
    pub fn ring(&self) {
        let _ = self.doorbell.try_send(());
    }

    /// Whether the log is idle and everything appended is durable (or never will be).
    pub fn settled(&self) -> bool {
        let log = self.log.borrow();
        // The durable end, not the high watermark: a replicated log's waits on its
        // replicas, which a close does not wait for.
        log.is_idle() && (log.durable_end() == log.next_offset() || log.fenced().is_some())
    }

    /// Stops the driver once the log is settled.
    pub fn close(&self) {
        self.closing.set(true);
        self.ring();
    }

    /// Stops the driver now, whatever is still in flight (a close that waited long enough
    /// for it to settle): nothing more is submitted, and everything waiting is answered
    /// `ShuttingDown`.
    pub fn abandon(&self) {
        self.closing.set(true);
        self.abandoned.set(true);
        self.ring();
    }

    /// Whether the partition is closing or closed (no new appends belong in it).
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Whether the driver stopped (the partition was closed).
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// The produce with this ticket is answered with `response` once acknowledged.
    pub fn wait_ack(
        &self,
        ticket: Ticket,
        response: ProduceResponse,
        fsync: bool,
    ) -> LocalReceiver<ProduceResult> {
        let (reply, receiver) = local_channel::new_bounded(1);
        self.wait(
            ticket,
            Waiting::Produce {
                response,
                fsync,
                reply,
            },
        );
        receiver
    }

    /// The DeleteRecords with this ticket is answered once its log start is durable.
    pub fn wait_start(&self, ticket: Ticket) -> LocalReceiver<DeleteRecordsResult> {
        let (reply, receiver) = local_channel::new_bounded(1);
        self.wait(ticket, Waiting::DeleteRecords { reply });
        receiver
    }

    /// The parked fetch with this ticket is woken when the log says so (or the driver stops).
    pub fn wait_fetch(&self, ticket: Ticket) -> LocalReceiver<()> {
        let (reply, receiver) = local_channel::new_bounded(1);
        self.wait(ticket, Waiting::Fetch { reply });
        // The driver's next timeout is this fetch's deadline, if it is the earliest.
        self.ring();
        receiver
    }

    /// Withdraws a parked fetch whose requester stopped waiting.
    pub fn cancel_fetch(&self, ticket: Ticket) {
        self.with_log(|log| log.cancel_fetch_wait(ticket));
        self.waiting.borrow_mut().remove(&ticket);
    }

    fn wait(&self, ticket: Ticket, waiting: Waiting) {
        if self.stopped.get() {
            Self::answer_closed(waiting);
            return;
        }
        self.waiting.borrow_mut().insert(ticket, waiting);
    }

    fn answer_closed(waiting: Waiting) {
        let error = ErrorResponse::new(ErrorCode::ShuttingDown, "the partition is closing");
        match waiting {
            Waiting::Produce { reply, .. } => {
                let _ = reply.try_send(Err(error));
            }
            Waiting::DeleteRecords { reply } => {
                let _ = reply.try_send(Err(error));
            }
            Waiting::Fetch { reply } => {
                let _ = reply.try_send(());
            }
        }
    }

    fn fenced_error(&self) -> ErrorResponse {
        let reason = self
            .log
            .borrow()
            .fenced()
            .map_or_else(|| "unknown reason".to_owned(), ToString::to_string);
        ErrorResponse::new(
            ErrorCode::PartitionFenced,
            format!(
                "partition {}-{} is fenced: {reason}",
                self.key.topic, self.key.partition
            ),
        )
    }

    /// A leader's `fsync` produce reached every in-sync replica, but the ISR is smaller than
    /// `min.insync.replicas` by now: Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND (the records
    /// are kept).
    fn shrunk_below_min_insync(&self, fsync: bool) -> Option<ErrorResponse> {
        if !fsync {
            return None;
        }
        let leading = self.leading.borrow();
        let not_enough = leading.as_ref()?.core.check_min_insync().err()?;
        Some(ErrorResponse::new(
            ErrorCode::NotEnoughReplicasAfterAppend,
            format!(
                "partition {}-{}: the batch is stored on every in-sync replica, but {not_enough} \
                 by now; sending it again stores it twice unless the producer is idempotent",
                self.key.topic, self.key.partition
            ),
        ))
    }

    /// Whether an `fsync` produce may be appended under `min.insync.replicas` = `min_insync`:
    /// a leader counts its ISR (a removal in flight counted as done), a single node itself.
    pub fn check_min_insync(&self, min_insync: u32) -> Result<(), ErrorResponse> {
        let refused = match self.leading.borrow_mut().as_mut() {
            Some(leading) => {
                leading.core.set_min_insync(min_insync);
                leading.core.check_min_insync().err()
            }
            None => (min_insync > 1).then_some(NotEnoughReplicas {
                in_sync: 1,
                min_insync,
            }),
        };
        match refused {
            None => Ok(()),
            Some(not_enough) => Err(ErrorResponse::new(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "partition {}-{}: {not_enough}; the batch was not appended",
                    self.key.topic, self.key.partition
                ),
            )),
        }
    }

    fn handle_event(&self, event: LogEvent) {
        match event {
            LogEvent::Written { .. } => {
                // Bytes left the write buffer: room for waiting produces.
                self.budget.wake();
            }
            LogEvent::Durable { up_to } => {
                // Bytes left the unsynced budget: room for waiting produces; and a follower
                // has a new durable end to report.
                self.budget.wake();
                self.wake_durable();
                self.round_done(up_to);
            }
            LogEvent::Acked { ticket } => {
                let waiting = self.waiting.borrow_mut().remove(&ticket);
                match waiting {
                    Some(Waiting::Produce {
                        response,
                        fsync,
                        reply,
                    }) => {
                        let _ = reply.try_send(match self.shrunk_below_min_insync(fsync) {
                            None => Ok(response),
                            Some(error) => Err(error),
                        });
                    }
                    Some(Waiting::DeleteRecords { reply }) => {
                        let log_start_offset = self.log.borrow().log_start().0;
                        let _ = reply.try_send(Ok(DeleteRecordsResponse { log_start_offset }));
                    }
                    Some(Waiting::Fetch { reply }) => {
                        let _ = reply.try_send(());
                    }
                    None => {}
                }
            }
            LogEvent::Refused { ticket } => {
                let waiting = self.waiting.borrow_mut().remove(&ticket);
                match waiting {
                    Some(Waiting::Produce { reply, .. }) => {
                        let _ = reply.try_send(Err(self.fenced_error()));
                    }
                    Some(Waiting::DeleteRecords { reply }) => {
                        let _ = reply.try_send(Err(self.fenced_error()));
                    }
                    Some(Waiting::Fetch { reply }) => {
                        let _ = reply.try_send(());
                    }
                    None => {}
                }
            }
            LogEvent::Deposed { ticket } => {
                if let Some(Waiting::Produce { reply, .. }) =
                    self.waiting.borrow_mut().remove(&ticket)
                {
                    let _ = reply.try_send(Err(ErrorResponse::new(
                        ErrorCode::NotLeaderOrFollower,
                        format!(
                            "partition {}-{}: this node stopped leading it before the batch \
                             was replicated; it may or may not be kept (an idempotent \
                             producer's retry is deduplicated)",
                            self.key.topic, self.key.partition
                        ),
                    )));
                }
            }
            LogEvent::FetchReady { ticket } => {
                if let Some(Waiting::Fetch { reply }) = self.waiting.borrow_mut().remove(&ticket) {
                    let _ = reply.try_send(());
                }
            }
            LogEvent::Fenced { durable, reason } => {
                tracing::error!(
                    topic = %self.key.topic,
                    partition = self.key.partition,
                    durable = durable.0,
                    "partition fenced: {reason}; writes are refused until its recovery runs again (by itself after ENOSPC once space is free, on SIGHUP, or at a restart)"
                );
                self.budget.wake();
                self.wake_durable();
            }
            LogEvent::SegmentRolled { base } => {
                tracing::debug!(topic = %self.key.topic, partition = self.key.partition, base = base.0, "segment rolled");
            }
            LogEvent::LogStartMoved { log_start } => {
                tracing::info!(
                    topic = %self.key.topic,
                    partition = self.key.partition,
                    log_start = log_start.0,
                    "log start moved (DeleteRecords)"
                );
                // The segments wholly below the new start go now, not at the next retention
                // check.
                self.with_log(|log| log.handle_retention(now()));
            }
            LogEvent::SegmentsDeleted {
                segments,
                log_start,
            } => {
                tracing::info!(
                    topic = %self.key.topic,
                    partition = self.key.partition,
                    segments,
                    log_start = log_start.0,
                    "retention deleted segments"
                );
            }
        }
    }

    /// Counts a produce's appended batch (metrics).
    pub fn count_append(&self, records: u64, bytes: u64) {
        let (appended_records, appended_bytes) = self.appended.get();
        self.appended
            .set((appended_records + records, appended_bytes + bytes));
    }

    /// Counts the record bytes of a fetch's answer (metrics).
    pub fn count_fetch(&self, bytes: u64) {
        self.fetched.set(self.fetched.get() + bytes);
    }

    /// A write of `bytes` went to the device: it opens a write round or joins the open one.
    fn round_wrote(&self, bytes: u64) {
        if !crate::metrics::enabled() {
            return;
        }
        let round = match self.round.get() {
            Some(mut round) => {
                round.bytes += bytes;
                round
            }
            None => WriteRound {
                started: Instant::now(),
                bytes,
                from: self.log.borrow().durable_end(),
            },
        };
        self.round.set(Some(round));
    }

    /// The log is durable up to `up_to`: the open write round, if it made records durable,
    /// is done.
    fn round_done(&self, up_to: Offset) {
        let Some(round) = self.round.get() else {
            return;
        };
        let Some(records) = up_to
            .0
            .checked_sub(round.from.0)
            .filter(|&records| records > 0)
        else {
            return;
        };
        self.round.set(None);
        crate::metrics::with(|metrics| {
            #[allow(clippy::cast_precision_loss)]
            {
                metrics.write_round_bytes.observe(round.bytes as f64);
                metrics.write_round_records.observe(records as f64);
            }
            metrics
                .write_round_seconds
                .observe(round.started.elapsed().as_secs_f64());
        });
    }

    /// The partition's states for the metrics.
    pub fn sample(&self) -> crate::metrics::PartitionSample {
        let log = self.log.borrow();
        let (appended_records, appended_bytes) = self.appended.get();
        crate::metrics::PartitionSample {
            topic: self.key.topic.clone(),
            partition: self.key.partition,
            high_watermark: log.high_watermark().0,
            log_start: log.log_start().0,
            log_end: log.next_offset().0,
            size_bytes: log.size_bytes(),
            segments: log.segment_count() as u64,
            fenced: log.fenced().map(ToString::to_string),
            producers: log.producers().len() as u64,
            appended_records,
            appended_bytes,
            fetched_bytes: self.fetched.get(),
        }
    }

    /// Files of the partition open now.
    pub fn open_files(&self) -> usize {
        self.storage.borrow().open_files()
    }

    /// Parked long-poll fetches on this partition.
    pub fn fetches_parked(&self) -> usize {
        self.log.borrow().fetches_parked()
    }

    /// Moves requests to the disk and completions and events back until nothing moves.
    fn pump(&self) {
        loop {
            let mut moved = false;
            loop {
                let done = self.storage.borrow_mut().poll_done();
                let Some(done) = done else { break };
                self.with_log(|log| log.handle_io_done(now(), done));
                moved = true;
            }
            while let Some(request) = self.with_log(PartitionLog::poll_io) {
                if let IoRequest::Write { data, .. } = &request {
                    self.round_wrote(data.len());
                }
                self.storage.borrow_mut().submit(request);
                moved = true;
            }
            while let Some(event) = self.with_log(PartitionLog::poll_event) {
                self.handle_event(event);
                moved = true;
            }
            // The log's ends moved the leader's high watermark: the log acknowledges and
            // wakes what it passed.
            if self.sync_replication() {
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    /// The driver: runs until the partition is closing and its log is settled.
    pub async fn drive(self: Rc<Self>, bell: LocalReceiver<()>) {
        loop {
            if self.abandoned.get() {
                break;
            }
            self.pump();
            if self.closing.get() && self.settled() {
                break;
            }
            let wait = self
                .log
                .borrow()
                .poll_timeout()
                .map_or(DRIVER_IDLE_WAKE, |at| {
                    // At least a millisecond, so the driver always yields to the reactor; at
                    // most the idle wake, so a wall clock stepped back delays nothing long.
                    Duration::from_millis(u64::try_from((at.0 - now().0).max(1)).unwrap_or(1))
                        .min(DRIVER_IDLE_WAKE)
                });
            let rang = future::or(async { bell.recv().await.is_some() }, async {
                glommio::timer::sleep(wait).await;
                true
            })
            .await;
            if !rang {
                break;
            }
            self.with_log(|log| log.handle_tick(now()));
        }
        // Anything still waiting will never be answered by this process.
        self.stopped.set(true);
        let waiting: Vec<Waiting> = self.waiting.borrow_mut().drain().map(|(_, w)| w).collect();
        for waiting in waiting {
            Self::answer_closed(waiting);
        }
        self.budget.wake();
        self.wake_durable();
        let reader = self.storage.borrow().reader();
        reader.close().await;
    }
}
