//! Focused tests of the partition log over simulated storage: group commit, acknowledgement
//! order, torn tails, corruption, fencing on storage errors, retention and fetches.

use bytes::Bytes;
use spate_core::recovery::{Recovered, Recovery};
use spate_core::storage::FileRef;
use spate_core::{
    AppendError, DeleteRecordsError, FenceReason, FetchError, FetchPlan, IoRequest, LogConfig,
    LogEvent, Millis, PartitionLog, ReadDone, ReadPlan, Storage,
};
use spate_format::limits::SECTOR_SIZE;
use spate_format::segment::SegmentFileKind;
use spate_format::{batches, BatchBuilder, Offset, Record};
use spate_proto::Durability;
use spate_sim::{Fault, SimStorage};

const T0: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        segment_ms: 1_000_000,
        retention_ms: None,
        retention_bytes: None,
        flush_interval_ms: 10,
        flush_bytes: 1 << 20,
        preallocate_bytes: 16 << 10,
        tail_cache_bytes: 1 << 20,
        fetch_read_bytes: spate_core::config::FETCH_READ_BYTES_DEFAULT,
        fetch_waiters_max: 2,
        producer_expiry_ms: spate_core::config::PRODUCER_EXPIRY_MS_DEFAULT,
    }
}

/// A log whose fetches are answered by reads of its file (no tail cache), with segments
/// large enough to hold megabytes.
fn reads_from_disk() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 20,
        tail_cache_bytes: 0,
        ..config()
    }
}

fn batch(value_size: usize, records: u32, timestamp: i64) -> Vec<u8> {
    let value = vec![0x5a; value_size];
    let mut builder = BatchBuilder::new();
    for _ in 0..records {
        builder
            .push(&Record {
                timestamp,
                value: Some(&value),
                ..Record::default()
            })
            .unwrap();
    }
    builder.finish().unwrap()
}

struct Harness {
    log: PartitionLog,
    storage: SimStorage,
    now: Millis,
    /// Every request the log handed out, in order.
    requests: Vec<IoRequest>,
    events: Vec<LogEvent>,
}

impl Harness {
    /// A harness over a recovered `log` and the storage it was recovered from, at `now`.
    fn reopened(log: PartitionLog, storage: SimStorage, now: i64) -> Self {
        Harness {
            log,
            storage,
            now: Millis(now),
            requests: Vec::new(),
            events: Vec::new(),
        }
    }

    fn new(config: LogConfig) -> Self {
        Harness::reopened(PartitionLog::new(config, Offset(0)), SimStorage::new(7), T0)
    }

    fn append(&mut self, bytes: &[u8], durability: Durability) -> Offset {
        let ticket = self
            .log
            .handle_append(self.now, &Bytes::copy_from_slice(bytes), durability)
            .unwrap();
        self.transfer();
        ticket.next_offset()
    }

    fn transfer(&mut self) {
        while let Some(request) = self.log.poll_io() {
            self.requests.push(request.clone());
            self.storage.submit(request);
        }
        while let Some(event) = self.log.poll_event() {
            self.events.push(event);
        }
    }

    /// Completes one in-flight request (random order) and delivers what completed.
    fn step(&mut self) -> bool {
        let progressed = self.storage.complete_one();
        while let Some(done) = self.storage.poll_done() {
            self.log.handle_io_done(self.now, done);
        }
        self.transfer();
        progressed
    }

    fn settle(&mut self) {
        while self.step() {}
    }

    fn count(&self, predicate: impl Fn(&IoRequest) -> bool) -> usize {
        self.requests
            .iter()
            .filter(|request| predicate(request))
            .count()
    }

    /// Completes a fetch's read as the node does: reads what the plan names and passes it to
    /// the log, following a read that ended inside a batch; keeps at most `keep_max` bytes of
    /// read-ahead.
    fn read(&mut self, mut plan: ReadPlan, keep_max: u64) -> Result<Bytes, FetchError> {
        loop {
            let data = self
                .storage
                .read_now(&plan.file, plan.position, plan.len)
                .unwrap();
            match self.log.handle_read(self.now, &plan, &data, keep_max)? {
                ReadDone::Answer(bytes) => return Ok(bytes),
                ReadDone::More(more) => plan = more,
            }
        }
    }

    /// A fetch answered as the node answers it (read-ahead kept without a bound).
    fn fetch(&mut self, offset: Offset, max_bytes: u32) -> Bytes {
        match self.log.handle_fetch(offset, max_bytes).unwrap() {
            FetchPlan::Ready(bytes) => bytes,
            FetchPlan::Read(plan) => self.read(plan, u64::MAX).unwrap(),
            FetchPlan::AtEnd => panic!("at end below the high watermark"),
        }
    }

    fn fetch_all(&mut self) -> Vec<Offset> {
        let mut bases = Vec::new();
        let mut offset = self.log.log_start();
        while offset < self.log.high_watermark() {
            let bytes = self.fetch(offset, 1 << 20);
            let before = offset;
            for batch in batches(&bytes) {
                let batch = batch.unwrap();
                bases.push(batch.base_offset());
                offset = batch.next_offset();
            }
            // An answer without a batch would loop forever (a mutant would time out).
            assert!(offset > before, "a fetch at {before} returned no batch");
        }
        bases
    }
}

fn is_sync(request: &IoRequest) -> bool {
    matches!(request, IoRequest::Sync { .. })
}

fn is_write(request: &IoRequest) -> bool {
    matches!(request, IoRequest::Write { .. })
}

fn recover(storage: &mut SimStorage, config: LogConfig) -> Recovered {
    recover_logged(storage, config).0
}

/// Recovers as [`recover`] does, and returns every request recovery made, in order; the
/// requests' ids are distinct (completions are matched by them).
fn recover_logged(storage: &mut SimStorage, config: LogConfig) -> (Recovered, Vec<IoRequest>) {
    recover_reading(storage, config, u64::MAX)
}

/// Recovers as [`recover_logged`] does over a storage whose reads return at most
/// `read_max` bytes each (short reads); fails, rather than hangs, when recovery makes more
/// requests than any recovery of a test's log needs.
fn recover_reading(
    storage: &mut SimStorage,
    config: LogConfig,
    read_max: u64,
) -> (Recovered, Vec<IoRequest>) {
    let listing = storage.list().unwrap();
    let mut recovery = Recovery::new(config, &listing);
    let mut requests: Vec<IoRequest> = Vec::new();
    loop {
        while let Some(request) = recovery.poll_io() {
            assert!(
                requests.iter().all(|earlier| earlier.id() != request.id()),
                "request ids repeat"
            );
            assert!(requests.len() < 10_000, "recovery asks without end");
            requests.push(request.clone());
            storage.submit(request);
        }
        if let Some(result) = recovery.poll_done() {
            return (result.unwrap(), requests);
        }
        assert!(storage.complete_one(), "recovery stuck");
        while let Some(mut done) = storage.poll_done() {
            if let Ok(spate_core::storage::IoOutcome::Read { data }) = &mut done.result {
                let len = data
                    .len()
                    .min(usize::try_from(read_max).unwrap_or(usize::MAX));
                data.truncate(len);
            }
            recovery.handle_io_done(done);
        }
    }
}

/// The reads recovery made of `file`, as (position, length).
fn reads_of(requests: &[IoRequest], file: FileRef) -> Vec<(u64, u64)> {
    requests
        .iter()
        .filter_map(|request| match request {
            IoRequest::Read {
                file: read,
                position,
                len,
                ..
            } if *read == file => Some((*position, *len)),
            _ => None,
        })
        .collect()
}

#[test]
fn group_commit_coalesces_appends_into_one_sync_per_round() {
    let mut harness = Harness::new(config());
    let first = harness.append(&batch(100, 1, T0), Durability::Fsync);
    // The first round is in flight; 50 more producers append meanwhile.
    let mut last = first;
    for _ in 0..50 {
        last = harness.append(&batch(100, 1, T0), Durability::Fsync);
    }
    assert_eq!(
        harness.count(is_sync),
        0,
        "no sync before the round's write completed"
    );
    harness.settle();
    // Round 1: the first batch. Round 2: all 50 others, one write and one sync.
    assert_eq!(harness.count(is_write), 2);
    assert_eq!(harness.count(is_sync), 2);
    assert_eq!(harness.log.high_watermark(), last);
    let durable: Vec<Offset> = harness
        .events
        .iter()
        .filter_map(|event| match event {
            LogEvent::Durable { up_to } => Some(*up_to),
            _ => None,
        })
        .collect();
    assert_eq!(durable, vec![first, last]);
}

#[test]
fn acknowledgements_never_precede_the_sync_that_covers_them() {
    let mut harness = Harness::new(config());
    let up_to = harness.append(&batch(5000, 3, T0), Durability::Fsync);
    // Complete requests one at a time and watch for the first Durable event.
    let mut synced = false;
    loop {
        let before = harness.requests.len();
        let pending_sync_ids: Vec<_> = harness
            .requests
            .iter()
            .filter(|r| is_sync(r))
            .map(IoRequest::id)
            .collect();
        if !harness.step() {
            break;
        }
        let _ = before;
        if !pending_sync_ids.is_empty() {
            synced = true;
        }
        let durable = harness
            .events
            .iter()
            .any(|event| matches!(event, LogEvent::Durable { .. }));
        assert!(
            !durable || synced,
            "durable before any sync was even handed out"
        );
    }
    assert_eq!(harness.log.high_watermark(), up_to);
    // The synced image holds the batch: a crash now keeps it.
    let mut image = harness.storage.crash(1);
    let recovered = recover(&mut image, config());
    assert_eq!(recovered.log.high_watermark(), up_to);
}

#[test]
fn none_and_write_acks_become_durable_by_the_flush_interval() {
    let mut harness = Harness::new(config());
    let up_to = harness.append(&batch(10, 1, T0), Durability::None);
    harness.settle();
    assert_eq!(
        harness.count(is_write),
        0,
        "`none` waits for the flush interval"
    );
    assert_eq!(harness.log.poll_timeout(), Some(Millis(T0 + 10)));
    harness.now = Millis(T0 + 10);
    harness.log.handle_tick(harness.now);
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.high_watermark(), up_to);

    let up_to = harness.append(&batch(10, 1, T0), Durability::Write);
    harness.settle();
    assert_eq!(
        harness.log.written_end(),
        up_to,
        "`write` is written at once"
    );
    assert!(
        harness.log.high_watermark() < up_to,
        "but not synced before the interval"
    );
}

/// What counts towards `flush_bytes` is what is not written yet, not what the segment holds:
/// after a written batch, a small `none` append waits for the flush interval.
#[test]
fn the_flush_policy_counts_unwritten_bytes_only() {
    let mut harness = Harness::new(LogConfig {
        flush_bytes: 8 << 10,
        ..config()
    });
    harness.append(&batch(9_000, 1, T0), Durability::Fsync);
    harness.settle();
    let writes = harness.count(is_write);
    assert!(writes > 0);
    harness.append(&batch(10, 1, T0), Durability::None);
    harness.settle();
    assert_eq!(
        harness.count(is_write),
        writes,
        "80 bytes unwritten are below flush_bytes"
    );
    // Past flush_bytes, a write starts without waiting for the interval.
    harness.append(&batch(9_000, 1, T0), Durability::None);
    harness.settle();
    assert!(harness.count(is_write) > writes);
}

/// The active segment's file is preallocated from `preallocate_bytes`, doubling, and grown
/// only when a write needs more than it has (mutation testing found this unpinned).
#[test]
fn preallocation_grows_only_when_a_write_needs_more() {
    let mut harness = Harness::new(config());
    let allocations = |harness: &Harness| -> Vec<u64> {
        harness
            .requests
            .iter()
            .filter_map(|request| match request {
                IoRequest::Create { allocate, .. } => Some(*allocate),
                IoRequest::Allocate { len, .. } => Some(*len),
                _ => None,
            })
            .collect()
    };
    let mut written = 0;
    for _ in 0..4 {
        let bytes = batch(10_000, 1, T0);
        written += bytes.len() as u64;
        harness.append(&bytes, Durability::Fsync);
        harness.settle();
        let allocated = allocations(&harness);
        let last = *allocated.last().unwrap();
        assert!(last >= written, "{written} bytes in {last}");
        assert!(
            last / 2 < written.max(16 << 10),
            "{written} bytes in {last}: grown early"
        );
    }
    // 16 KiB at creation, 32 KiB for the second batch, none for the third, 64 KiB for the
    // fourth.
    assert_eq!(allocations(&harness), [16 << 10, 32 << 10, 64 << 10]);
}

/// A wall clock stepped back does not hold `none`/`write` data unsynced until it catches up:
/// a tick earlier than the oldest unsynced append flushes at once.
#[test]
fn a_clock_stepped_back_flushes_at_once() {
    let mut harness = Harness::new(config());
    let up_to = harness.append(&batch(10, 1, T0), Durability::None);
    harness.settle();
    assert!(harness.log.high_watermark() < up_to, "not due yet");
    harness.now = Millis(T0 - 3_600_000);
    harness.log.handle_tick(harness.now);
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.high_watermark(), up_to);
}

#[test]
fn a_sync_error_fences_the_partition() {
    let mut harness = Harness::new(config());
    let durable = harness.append(&batch(10, 1, T0), Durability::Fsync);
    harness.settle();
    harness.storage.inject(Fault::SyncError);
    harness.append(&batch(10, 1, T0), Durability::Fsync);
    harness.settle();
    assert_eq!(
        harness.log.high_watermark(),
        durable,
        "nothing acknowledged after the error"
    );
    // A fenced log syncs nothing more: its bytes leave the shard's budget and its write
    // buffer.
    assert_eq!(harness.log.unsynced_bytes(), 0);
    assert_eq!(harness.log.unwritten_bytes(), 0);
    // The fence, then the refusal of the acknowledgement that was waiting.
    let n = harness.events.len();
    assert!(matches!(
        &harness.events[n - 2..],
        [
            LogEvent::Fenced { durable: at, reason: FenceReason::Storage(_) },
            LogEvent::Refused { .. }
        ] if *at == durable
    ));
    let syncs = harness.count(is_sync);
    assert!(matches!(
        harness.log.handle_append(
            harness.now,
            &Bytes::from(batch(10, 1, T0)),
            Durability::Fsync
        ),
        Err(AppendError::Fenced(_))
    ));
    harness.settle();
    assert_eq!(
        harness.count(is_sync),
        syncs,
        "a failed sync is never retried"
    );
    // Reads below the fence still work.
    assert_eq!(harness.fetch_all(), vec![Offset(0)]);
}

#[test]
fn a_write_error_fences_and_a_short_write_is_completed() {
    let mut harness = Harness::new(config());
    harness.storage.inject(Fault::ShortWrite);
    let up_to = harness.append(&batch(9000, 2, T0), Durability::Fsync);
    harness.settle();
    assert_eq!(
        harness.log.high_watermark(),
        up_to,
        "the rest of a short write is written"
    );
    assert!(harness.log.fenced().is_none());
    harness.storage.inject(Fault::WriteError);
    harness.append(&batch(10, 1, T0), Durability::Fsync);
    harness.settle();
    assert_eq!(harness.log.high_watermark(), up_to);
    assert!(harness.log.fenced().is_some());
}

#[test]
fn a_torn_tail_is_truncated_at_the_last_whole_batch() {
    let mut harness = Harness::new(config());
    let durable = harness.append(&batch(3000, 2, T0), Durability::Fsync);
    harness.settle();
    // A large batch whose write is in flight at the crash: a crash image keeps any subset of
    // its sectors.
    let end = harness.append(&batch(9000, 3, T0), Durability::Fsync);
    while !harness.storage.in_flight_requests().iter().any(is_write) {
        assert!(harness.step(), "the write never went out");
    }
    let (mut torn, mut whole) = (0, 0);
    for seed in 0..64 {
        let mut image = harness.storage.crash(seed);
        let recovered = recover(&mut image, config());
        assert!(
            recovered.report.corruption.is_none(),
            "a crash alone is not corruption"
        );
        let high = recovered.log.high_watermark();
        assert!(high == durable || high == end, "recovered to {high}");
        if let Some(tail) = &recovered.report.torn_tail {
            torn += 1;
            assert_eq!(high, durable, "the torn batch is gone");
            assert!(tail.bytes_discarded > 0);
            // Cut at the last whole batch, then given back whole sectors of zeros (so only a
            // cut from outside leaves a file off a sector boundary).
            let file = image.contents(&FileRef::log(Offset(0))).unwrap();
            assert_eq!(
                file.len() as u64,
                spate_core::storage::align_up(tail.position),
                "the file was cut at the last whole batch and realigned"
            );
            let cut = usize::try_from(tail.position).unwrap();
            assert!(
                file[cut..].iter().all(|&byte| byte == 0),
                "nothing of the torn batch is left after the cut"
            );
        } else if high == end {
            whole += 1;
        }
    }
    // Each of the batch's sectors survives with probability 1/2: most images tear it, a few
    // lose it whole (zeros: a clean end), hardly any keep all of it.
    assert!(torn > 32, "{torn} torn and {whole} whole images out of 64");
}

#[test]
fn corruption_of_acknowledged_data_fences_instead_of_truncating() {
    let mut config = config();
    config.segment_bytes = 64 << 10;
    let mut harness = Harness::new(config.clone());
    for _ in 0..40 {
        harness.append(&batch(4000, 1, T0), Durability::Fsync);
        harness.settle();
    }
    let end = harness.log.high_watermark();
    let bases = harness.log.segment_bases();
    assert!(bases.len() >= 2, "the log rolled");
    // Flip a byte in the middle of the first, rolled segment and remove its indexes, so
    // recovery must scan it.
    let first = FileRef::log(bases[0]);
    harness.storage.flip_bit(&first, 10_000, 3);
    let mut image = harness.storage.crash(3);
    remove_indexes(&mut image, bases[0]);
    let recovered = recover(&mut image, config);
    let corruption = recovered
        .report
        .corruption
        .clone()
        .expect("corruption reported");
    let FenceReason::Corruption {
        segment, position, ..
    } = &corruption
    else {
        panic!("{corruption:?}")
    };
    assert_eq!(segment, &first.file_name());
    assert!(*position <= 10_000);
    assert!(
        recovered.report.torn_tail.is_none(),
        "acknowledged data is never truncated"
    );
    let mut log = recovered.log;
    assert!(log.fenced().is_some());
    assert!(log.high_watermark() < end);
    assert!(matches!(
        log.handle_append(Millis(T0), &Bytes::from(batch(1, 1, T0)), Durability::Fsync),
        Err(AppendError::Fenced(_))
    ));
    // Nothing on disk was cut.
    assert_eq!(
        image.contents(&first).unwrap().len() as u64,
        harness.storage.contents(&first).unwrap().len() as u64
    );
}

/// A replicated log's retention deletes only segments wholly below its high watermark.
#[test]
fn a_replicated_logs_retention_stops_at_the_high_watermark() {
    let mut config = config();
    config.retention_bytes = Some(1);
    let mut harness = Harness::new(config);
    harness.log.handle_replicated_high_watermark(Offset(0));
    for _ in 0..60 {
        harness.append(&batch(4000, 1, T0), Durability::Write);
        harness.settle();
    }
    let bases = harness.log.segment_bases();
    assert!(bases.len() > 3, "{bases:?}");
    assert_eq!(harness.log.handle_retention(harness.now), 0);
    // The replicas hold everything up to the third segment's base: the first two may go.
    harness.log.handle_replicated_high_watermark(bases[2]);
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.handle_retention(harness.now), 2);
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.log_start(), bases[2]);
}

#[test]
fn retention_deletes_whole_old_segments_only() {
    let mut config = config();
    config.retention_bytes = Some(150 << 10);
    let mut harness = Harness::new(config);
    for _ in 0..100 {
        harness.append(&batch(4000, 1, T0), Durability::Fsync);
        harness.settle();
    }
    let bases_before = harness.log.segment_bases();
    let size_before = harness.log.size_bytes();
    let deleted = harness.log.handle_retention(harness.now);
    harness.transfer();
    harness.settle();
    assert!(deleted > 0);
    let bases_after = harness.log.segment_bases();
    assert_eq!(
        &bases_before[deleted as usize..],
        &bases_after[..],
        "oldest segments go first"
    );
    assert_eq!(
        harness.log.log_start(),
        bases_after[0],
        "the log starts at a segment base"
    );
    assert!(harness.log.size_bytes() >= 150 << 10 || bases_after.len() == 1);
    assert!(harness.log.size_bytes() < size_before);
    for base in &bases_before[..deleted as usize] {
        assert!(
            harness.storage.contents(&FileRef::log(*base)).is_none(),
            "deleted segment file remains"
        );
    }
    // Offsets below the log start are out of range; everything above is readable.
    assert!(harness.log.handle_fetch(Offset(0), 100).is_err());
    let fetched = harness.fetch_all();
    assert_eq!(fetched.first(), Some(&bases_after[0]));

    // By time: everything older than the retention goes, never the active segment.
    let mut config = self::config();
    config.retention_ms = Some(1000);
    let mut harness = Harness::new(config);
    for _ in 0..40 {
        harness.append(&batch(4000, 1, T0), Durability::Fsync);
        harness.settle();
    }
    harness.now = Millis(T0 + 5000);
    harness.log.handle_retention(harness.now);
    harness.transfer();
    harness.settle();
    assert_eq!(
        harness.log.segment_count(),
        1,
        "only the active segment is kept"
    );
}

#[test]
fn fetches_come_from_the_tail_cache_or_aligned_reads() {
    let mut config = config();
    config.tail_cache_bytes = 8 << 10;
    let mut harness = Harness::new(config);
    for _ in 0..30 {
        harness.append(&batch(1000, 2, T0), Durability::Fsync);
        harness.settle();
    }
    let high = harness.log.high_watermark();
    assert!(matches!(
        harness.log.handle_fetch(Offset(high.0 - 1), 100),
        Ok(FetchPlan::Ready(_))
    ));
    // Consumers fetch at batch boundaries: the last batches' base offsets are cache hits too.
    for back in [2, 4] {
        assert!(matches!(
            harness.log.handle_fetch(Offset(high.0 - back), 100),
            Ok(FetchPlan::Ready(_))
        ));
    }
    match harness.log.handle_fetch(Offset(1), 100) {
        Ok(FetchPlan::Read(plan)) => {
            assert_eq!(plan.position % u64::from(SECTOR_SIZE), 0);
            assert_eq!(plan.len % u64::from(SECTOR_SIZE), 0);
            let bytes = harness.read(plan, u64::MAX).unwrap();
            let first = batches(&bytes).next().unwrap().unwrap();
            assert_eq!(first.base_offset(), Offset(0), "the batch holding offset 1");
        }
        other => panic!("expected a read plan, got {other:?}"),
    }
    assert!(matches!(
        harness.log.handle_fetch(high, 100),
        Ok(FetchPlan::AtEnd)
    ));
    assert!(harness.log.handle_fetch(Offset(high.0 + 1), 100).is_err());
    assert_eq!(harness.fetch_all().len(), 30);
}

#[test]
fn a_shard_shares_one_budget_for_unsynced_bytes() {
    use spate_core::{IoDone, ShardBudget};

    let mut budget = ShardBudget::new(12 << 10);
    let mut logs: Vec<(PartitionLog, SimStorage, u64)> = (0..2)
        .map(|_| {
            (
                PartitionLog::new(config(), Offset(0)),
                SimStorage::new(1),
                0,
            )
        })
        .collect();
    // What a shard's driver does after every call on a log: report its unsynced bytes.
    let report = |budget: &mut ShardBudget, log: &PartitionLog, accounted: &mut u64| {
        let now = log.unsynced_bytes();
        budget.update(*accounted, now);
        *accounted = now;
    };
    let now = Millis(T0);
    for (log, _, accounted) in &mut logs {
        log.handle_append(now, &Bytes::from(batch(7000, 1, T0)), Durability::Fsync)
            .unwrap();
        report(&mut budget, log, accounted);
    }
    assert!(budget.unsynced_bytes() > 14_000);
    assert!(
        budget.over_budget(),
        "two partitions together exceed the shard's budget"
    );
    // Run the storage until everything is durable; the budget frees up.
    let mut durable = 0;
    loop {
        let mut progressed = false;
        for (log, storage, accounted) in &mut logs {
            while let Some(request) = log.poll_io() {
                storage.submit(request);
            }
            progressed |= storage.complete_one();
            let done: Vec<IoDone> = std::iter::from_fn(|| storage.poll_done()).collect();
            for done in done {
                log.handle_io_done(now, done);
            }
            while let Some(event) = log.poll_event() {
                durable += usize::from(matches!(event, LogEvent::Durable { .. }));
            }
            report(&mut budget, log, accounted);
        }
        if !progressed {
            break;
        }
    }
    assert_eq!(budget.unsynced_bytes(), 0);
    assert!(!budget.over_budget());
    assert_eq!(durable, 2);
    // A partition closed with unsynced bytes takes them out of the budget.
    let (log, _, accounted) = &mut logs[0];
    log.handle_append(now, &Bytes::from(batch(7000, 1, T0)), Durability::None)
        .unwrap();
    report(&mut budget, log, accounted);
    assert!(budget.unsynced_bytes() > 7000);
    budget.update(*accounted, 0);
    assert_eq!(budget.unsynced_bytes(), 0);
}

/// Acknowledgements come from the log, by ticket: `write` ones right after the `Written`
/// that covers them, `fsync` ones right after `Durable`, in offset order per level; `none`
/// gets no ticket.
#[test]
fn acknowledgements_follow_the_watermark_of_their_level_in_order() {
    let mut harness = Harness::new(config());
    let append = |harness: &mut Harness, durability| {
        harness
            .log
            .handle_append(harness.now, &Bytes::from(batch(100, 1, T0)), durability)
            .unwrap()
            .waiter
    };
    let a = append(&mut harness, Durability::Fsync).unwrap();
    let b = append(&mut harness, Durability::Write).unwrap();
    assert_eq!(append(&mut harness, Durability::None), None);
    let c = append(&mut harness, Durability::Fsync).unwrap();
    assert_eq!(harness.log.acks_waiting(), 3);
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.acks_waiting(), 0);
    let acked: Vec<&LogEvent> = harness
        .events
        .iter()
        .filter(|event| {
            matches!(
                event,
                LogEvent::Acked { .. } | LogEvent::Written { .. } | LogEvent::Durable { .. }
            )
        })
        .collect();
    assert_eq!(
        acked,
        [
            &LogEvent::Written { up_to: Offset(4) },
            &LogEvent::Acked { ticket: b },
            &LogEvent::Durable { up_to: Offset(4) },
            &LogEvent::Acked { ticket: a },
            &LogEvent::Acked { ticket: c },
        ]
    );
}

/// A parked fetch is woken when the high watermark passes what it saw or its deadline
/// comes (the log's timeout covers the deadline), at most `fetch_waiters_max` are parked,
/// and a withdrawn one is never woken.
#[test]
fn parked_fetches_wake_on_progress_or_deadline_within_their_limit() {
    use spate_core::FetchWaitError;

    let mut harness = Harness::new(config());
    harness.append(&batch(100, 1, T0), Durability::Fsync);
    harness.settle();
    let high = harness.log.high_watermark();
    let now = harness.now;
    let soon = harness.log.handle_fetch_wait(now, high, high, 30).unwrap();
    let later = harness
        .log
        .handle_fetch_wait(now, high, high, 1000)
        .unwrap();
    assert_eq!(
        harness.log.handle_fetch_wait(now, high, high, 1000),
        Err(FetchWaitError::TooMany { parked: 2 })
    );
    assert_eq!(harness.log.poll_timeout(), Some(Millis(now.0 + 30)));
    // The deadline of the first comes.
    harness.now = Millis(now.0 + 30);
    harness.log.handle_tick(harness.now);
    harness.transfer();
    assert_eq!(
        harness.events.last(),
        Some(&LogEvent::FetchReady { ticket: soon })
    );
    // Progress wakes the second; a withdrawn third never wakes.
    let withdrawn = harness
        .log
        .handle_fetch_wait(now, high, high, 1000)
        .unwrap();
    harness.log.cancel_fetch_wait(withdrawn);
    harness.append(&batch(100, 1, T0), Durability::Fsync);
    harness.settle();
    let woken: Vec<&LogEvent> = harness
        .events
        .iter()
        .filter(|event| matches!(event, LogEvent::FetchReady { .. }))
        .collect();
    assert_eq!(
        woken,
        [
            &LogEvent::FetchReady { ticket: soon },
            &LogEvent::FetchReady { ticket: later }
        ]
    );
    assert_eq!(harness.log.fetches_parked(), 0);
    // A fetch that saw an older high watermark is ready at once.
    let stale = harness
        .log
        .handle_fetch_wait(harness.now, high, high, 1000)
        .unwrap();
    harness.transfer();
    assert_eq!(
        harness.events.last(),
        Some(&LogEvent::FetchReady { ticket: stale })
    );
    assert_eq!(harness.log.fetches_parked(), 0);
}

/// A bit flip in an acknowledged batch in the middle of the active (unsealed) segment, with
/// acknowledged batches after it, is corruption: fenced and reported at the damaged batch,
/// never truncated as if it were a torn tail.
#[test]
fn a_flip_inside_the_active_segment_is_fenced_not_truncated() {
    let mut harness = Harness::new(config());
    for _ in 0..6 {
        harness.append(&batch(1000, 2, T0), Durability::Fsync);
        harness.settle();
    }
    let end = harness.log.high_watermark();
    assert_eq!(harness.log.segment_count(), 1, "one active segment");
    let file = FileRef::log(Offset(0));
    let (found, _) = spate_format::segment::scan_segment(
        harness.storage.durable_contents(&file).unwrap(),
        0,
        Some(Offset(0)),
    );
    assert_eq!(found.len(), 6);
    let damaged = found[2];
    harness
        .storage
        .flip_bit(&file, damaged.position + u64::from(damaged.length) / 2, 5);
    let mut image = harness.storage.crash(11);
    let file_len = image.contents(&file).unwrap().len();
    let recovered = recover(&mut image, config());
    assert!(
        recovered.report.torn_tail.is_none(),
        "acknowledged data in the middle of the active segment was truncated: {:?}",
        recovered.report.torn_tail
    );
    match &recovered.report.corruption {
        Some(FenceReason::Corruption {
            segment, position, ..
        }) => {
            assert_eq!(segment, &file.file_name());
            assert_eq!(*position, damaged.position, "fenced at the damaged batch");
        }
        other => panic!("corruption not reported: {other:?}"),
    }
    assert!(recovered.log.fenced().is_some());
    assert_eq!(recovered.log.high_watermark(), damaged.base_offset);
    assert!(recovered.log.high_watermark() < end);
    assert_eq!(
        image.contents(&file).unwrap().len(),
        file_len,
        "nothing on disk was cut"
    );
}

/// Retention never deletes the newest segment, even when all its records are past
/// `retention_ms`: the log keeps its base, its records, and its offsets across a crash.
#[test]
fn retention_never_deletes_the_newest_segment() {
    let mut config = config();
    config.retention_ms = Some(1000);
    let mut harness = Harness::new(config.clone());
    for _ in 0..40 {
        harness.append(&batch(4000, 1, T0), Durability::Fsync);
        harness.settle();
    }
    let end = harness.log.high_watermark();
    let bases = harness.log.segment_bases();
    let newest = *bases.last().unwrap();
    assert!(bases.len() >= 2, "the log rolled");
    harness.now = Millis(T0 + 5000);
    let deleted = harness.log.handle_retention(harness.now);
    harness.transfer();
    harness.settle();
    assert_eq!(deleted as usize, bases.len() - 1);
    assert_eq!(
        harness.log.segment_bases(),
        vec![newest],
        "the newest segment stays"
    );
    assert_eq!(harness.log.log_start(), newest);
    assert_eq!(harness.log.high_watermark(), end);
    let fetched = harness.fetch_all();
    assert_eq!(
        fetched.first(),
        Some(&newest),
        "its records are still served"
    );
    assert!(harness.storage.contents(&FileRef::log(newest)).is_some());
    let mut image = harness.storage.crash(5);
    let recovered = recover(&mut image, config);
    assert_eq!(recovered.log.log_start(), newest);
    assert_eq!(
        recovered.log.high_watermark(),
        end,
        "no offset lost or reused"
    );
}

/// Retention by time deletes a segment only once its newest record is older than
/// `retention_ms`: segments holding newer records stay, whatever their first record's age.
#[test]
fn retention_by_time_keeps_segments_with_recent_records() {
    let mut config = config();
    config.retention_ms = Some(2000);
    let mut harness = Harness::new(config);
    // Old records fill the first segments; the segment holding the switch gets a recent one.
    for index in 0..40 {
        let timestamp = if index < 24 { T0 } else { T0 + 4000 };
        harness.append(&batch(4000, 1, timestamp), Durability::Fsync);
        harness.settle();
    }
    let bases = harness.log.segment_bases();
    assert!(bases.len() >= 3, "{bases:?}");
    // The first segments hold only T0 records; from offset 24 on records are recent.
    let keep: Vec<Offset> = bases
        .iter()
        .enumerate()
        .filter(|(index, _)| bases.get(index + 1).is_none_or(|next| next.0 > 24))
        .map(|(_, base)| *base)
        .collect();
    // Exactly `retention_ms` old, a segment stays; one millisecond more, and it goes.
    harness.now = Millis(T0 + 2000);
    assert_eq!(harness.log.handle_retention(harness.now), 0);
    assert_eq!(harness.log.segment_bases(), bases);
    harness.now = Millis(T0 + 2001);
    harness.log.handle_retention(harness.now);
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.segment_bases(), keep);
    assert!(keep.len() < bases.len(), "the old segments went");
}

/// A fetch returns only durable batches: data written (or only appended) above the high
/// watermark is not served, from the tail cache or from disk.
#[test]
fn fetches_never_return_data_above_the_high_watermark() {
    let mut harness = Harness::new(config());
    let durable = harness.append(&batch(500, 2, T0), Durability::Fsync);
    harness.settle();
    let written = harness.append(&batch(500, 2, T0), Durability::Write);
    harness.settle();
    harness.append(&batch(500, 2, T0), Durability::None);
    assert_eq!(harness.log.high_watermark(), durable);
    assert_eq!(harness.log.written_end(), written, "written, not durable");
    match harness.log.handle_fetch(Offset(0), 1 << 20).unwrap() {
        FetchPlan::Ready(bytes) => {
            let bases: Vec<Offset> = batches(&bytes).map(|b| b.unwrap().base_offset()).collect();
            assert_eq!(bases, vec![Offset(0)], "only the durable batch");
        }
        FetchPlan::Read(plan) => {
            let bytes = harness.read(plan, u64::MAX).unwrap();
            let bases: Vec<Offset> = batches(&bytes).map(|b| b.unwrap().base_offset()).collect();
            assert_eq!(bases, vec![Offset(0)], "only the durable batch");
        }
        FetchPlan::AtEnd => panic!("at end below the high watermark"),
    }
    assert!(matches!(
        harness.log.handle_fetch(durable, 1 << 20),
        Ok(FetchPlan::AtEnd)
    ));
    assert!(harness.log.handle_fetch(written, 1 << 20).is_err());
    // Without the tail cache the answer comes from disk, with the same bound.
    let mut config = config();
    config.tail_cache_bytes = 0;
    let mut harness = Harness::new(config);
    let durable = harness.append(&batch(500, 2, T0), Durability::Fsync);
    harness.settle();
    harness.append(&batch(500, 2, T0), Durability::Write);
    harness.settle();
    assert_eq!(harness.fetch_all(), vec![Offset(0)]);
    assert_eq!(harness.log.high_watermark(), durable);
}

/// A read that returns fewer bytes than planned (a file shorter than the log believes) is
/// answered with whole batches that were read, or reported as corruption: never a panic,
/// never a partial batch.
#[test]
fn a_short_read_is_reported_never_a_panic() {
    let mut config = config();
    config.tail_cache_bytes = 0;
    let mut harness = Harness::new(config);
    for _ in 0..12 {
        harness.append(&batch(1000, 2, T0), Durability::Fsync);
        harness.settle();
    }
    let high = harness.log.high_watermark();
    for offset in 0..high.0 {
        let FetchPlan::Read(plan) = harness.log.handle_fetch(Offset(offset), 1 << 20).unwrap()
        else {
            panic!("expected a disk read without a tail cache");
        };
        let data = harness
            .storage
            .read_now(&plan.file, plan.position, plan.len)
            .unwrap();
        for cut in [0, 1, 100, 4096, data.len() / 2] {
            let short = data.slice(..cut.min(data.len()));
            // The file ends here: a continued read finds it as short.
            let file_end = plan.position + short.len() as u64;
            let mut answer = harness.log.handle_read(harness.now, &plan, &short, 0);
            if let Ok(ReadDone::More(more)) = &answer {
                let again = harness
                    .storage
                    .read_now(&more.file, more.position, more.len)
                    .unwrap()
                    .slice(..usize::try_from(file_end.saturating_sub(more.position)).unwrap());
                answer = harness.log.handle_read(harness.now, more, &again, 0);
                assert!(
                    !matches!(answer, Ok(ReadDone::More(_))),
                    "a continued read is not continued again"
                );
            }
            match answer {
                Ok(ReadDone::Answer(bytes)) => {
                    let first = batches(&bytes).next().unwrap().unwrap();
                    assert!(first.base_offset().0 <= offset && offset <= first.last_offset().0);
                    for batch in batches(&bytes) {
                        batch.unwrap();
                    }
                }
                Ok(ReadDone::More(_)) => unreachable!("checked above"),
                Err(FetchError::Corrupt { .. }) => {}
                Err(other) => panic!("a short read answered {other:?}"),
            }
        }
    }
}

/// A fetch returns every whole batch that fits `max_bytes`, inclusive: an answer of exactly
/// `max_bytes` keeps its last batch, from the tail cache and from disk.
#[test]
fn a_fetch_fills_max_bytes_exactly() {
    for tail_cache_bytes in [1 << 20, 0] {
        let mut config = config();
        config.tail_cache_bytes = tail_cache_bytes;
        let mut harness = Harness::new(config);
        for _ in 0..6 {
            harness.append(&batch(1000, 2, T0), Durability::Fsync);
            harness.settle();
        }
        let one = harness.fetch(Offset(2), 1).len();
        for (offset, count) in [(2u64, 3usize), (0, 2), (4, 1)] {
            let max_bytes = u32::try_from(one * count).unwrap();
            let bytes = harness.fetch(Offset(offset), max_bytes);
            assert_eq!(
                bytes.len(),
                one * count,
                "cache {tail_cache_bytes}, offset {offset}"
            );
            assert_eq!(
                harness.fetch(Offset(offset), max_bytes - 1).len(),
                one * count.saturating_sub(1).max(1),
                "one byte less leaves the last batch out"
            );
        }
    }
}

/// Retention does not wait for the active segment: old sealed segments past their limit are
/// deleted while a write round of the active segment is in flight.
#[test]
fn retention_runs_while_the_active_segment_is_being_written() {
    let mut config = config();
    config.retention_ms = Some(1000);
    let mut harness = Harness::new(config);
    for _ in 0..40 {
        harness.append(&batch(4000, 1, T0), Durability::Fsync);
        harness.settle();
    }
    let bases = harness.log.segment_bases();
    assert!(bases.len() >= 3, "{bases:?}");
    harness.now = Millis(T0 + 5000);
    // A round of the active segment is in flight (not settled).
    harness.append(&batch(100, 1, T0 + 5000), Durability::Fsync);
    assert!(!harness.log.is_idle(), "a round is in flight");
    assert_eq!(harness.log.segment_bases(), bases, "no roll");
    let deleted = harness.log.handle_retention(harness.now);
    assert_eq!(
        deleted as usize,
        bases.len() - 1,
        "every sealed segment went"
    );
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.segment_bases(), vec![*bases.last().unwrap()]);
}

/// A fetch from disk reads a bounded number of bytes however large the segment: from the
/// sector holding the offset's index entry, at most one index interval and `max_bytes` (or
/// `fetch_read_bytes`, if more), sector-aligned. The answer is still complete.
#[test]
fn a_fetch_reads_a_bounded_number_of_bytes() {
    use spate_format::limits::INDEX_INTERVAL_BYTES;
    let mut harness = Harness::new(reads_from_disk());
    // About 6 MiB in one segment: far more than one read may take.
    for _ in 0..60 {
        harness.append(&batch(50_000, 2, T0), Durability::Fsync);
        harness.settle();
    }
    assert_eq!(harness.log.segment_count(), 1);
    let high = harness.log.high_watermark();
    let sector = u64::from(SECTOR_SIZE);
    for offset in [0, 1, 2, 9, 40, high.0 - 1] {
        for max_bytes in [1u32, 300_000, 3 << 20] {
            let FetchPlan::Read(plan) =
                harness.log.handle_fetch(Offset(offset), max_bytes).unwrap()
            else {
                panic!("expected a disk read");
            };
            let bound = u64::from(INDEX_INTERVAL_BYTES)
                + u64::from(max_bytes.max(harness.log.config().fetch_read_bytes))
                + 2 * sector;
            assert!(
                plan.len <= bound,
                "fetch at {offset} (max {max_bytes}) reads {} bytes, more than {bound}",
                plan.len
            );
            // Nothing is kept for the next fetch: every fetch of this test reads.
            let bytes = harness.read(plan, 0).unwrap();
            let first = batches(&bytes).next().unwrap().unwrap();
            assert!(first.base_offset().0 <= offset && offset <= first.last_offset().0);
            let batch_len = first.as_bytes().len();
            let expected = (max_bytes as usize / batch_len).max(1) * batch_len;
            let left = usize::try_from(high.0 - first.base_offset().0).unwrap() / 2 * batch_len;
            assert_eq!(
                bytes.len(),
                expected.min(left),
                "fetch at {offset}, max {max_bytes}"
            );
        }
    }
}

/// A single index file left next to the last segment (a crash in the middle of sealing it)
/// is stale: recovery removes it and the segment stays active, taking the next appends.
#[test]
fn a_lone_index_file_of_the_last_segment_is_removed() {
    let mut harness = Harness::new(config());
    for _ in 0..4 {
        harness.append(&batch(1000, 2, T0), Durability::Fsync);
        harness.settle();
    }
    let end = harness.log.high_watermark();
    let mut image = harness.storage.crash(2);
    let index = FileRef::offset_index(Offset(0));
    image.submit(IoRequest::WriteFile {
        id: spate_core::IoId(u64::MAX),
        file: index,
        data: Bytes::from_static(&[]),
    });
    image.complete_all();
    while image.poll_done().is_some() {}
    let recovered = recover(&mut image, config());
    assert_eq!(recovered.report.removed_files, vec![index.file_name()]);
    assert!(recovered.report.corruption.is_none());
    assert!(
        image.contents(&index).is_none(),
        "the stale index file is gone"
    );
    let mut log = recovered.log;
    assert_eq!(log.high_watermark(), end);
    log.handle_append(
        Millis(T0),
        &Bytes::from(batch(10, 1, T0)),
        Durability::Fsync,
    )
    .unwrap();
    assert_eq!(log.segment_count(), 1, "the segment was not sealed");
}

/// A rolled segment whose full scan does not end clean is corruption, even when every offset
/// up to the next segment is there: non-zero bytes after its end fence the partition.
#[test]
fn trailing_bytes_after_a_rolled_segment_are_corruption() {
    let mut harness = Harness::new(config());
    for _ in 0..40 {
        harness.append(&batch(4000, 1, T0), Durability::Fsync);
        harness.settle();
    }
    let bases = harness.log.segment_bases();
    assert!(bases.len() >= 3, "{bases:?}");
    let first = FileRef::log(bases[0]);
    let len = harness.storage.contents(&first).unwrap().len() as u64;
    let mut image = harness.storage.crash(4);
    // Garbage a sector past the end of the first segment, and its indexes gone so recovery
    // scans it in full.
    let sector = u64::from(SECTOR_SIZE);
    let position = len.div_ceil(sector) * sector + sector;
    image.submit(IoRequest::Write {
        id: spate_core::IoId(u64::MAX - 2),
        file: first,
        position,
        data: spate_core::WriteData::contiguous(Bytes::from(vec![0xa5; SECTOR_SIZE as usize])),
    });
    remove_indexes(&mut image, bases[0]);
    let recovered = recover(&mut image, config());
    match &recovered.report.corruption {
        Some(FenceReason::Corruption {
            segment, position, ..
        }) => {
            assert_eq!(segment, &first.file_name());
            assert_eq!(*position, len, "at the end of the segment's data");
        }
        other => panic!("corruption not reported: {other:?}"),
    }
    assert!(recovered.log.fenced().is_some());
    assert_eq!(recovered.log.high_watermark(), bases[1]);
}

/// A batch with one byte of its records flipped: its header (and declared length) is intact,
/// its producer CRC fails, and none of its bytes are zero.
fn damaged_batch(value_size: usize) -> Vec<u8> {
    let mut bytes = batch(value_size, 1, T0);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    assert!(spate_format::BatchRef::parse_prefix(&bytes).is_err());
    bytes
}

/// The torn-write signature, case by case, on the pure functions recovery uses: a damaged
/// batch is torn only if a sector piece of it reads as zeros to its sector's end or the file
/// ends inside it; the chunk may start anywhere in the file.
#[test]
fn looks_torn_only_for_missing_sectors_or_a_cut_file() {
    use spate_core::recovery::looks_torn;
    let sector = SECTOR_SIZE as usize;
    let damaged = damaged_batch(3000);
    // Whole and damaged, every byte present, in a chunk read from 8 KiB on: not torn.
    let read_at = 2 * sector as u64;
    let mut data = vec![0x11; 100];
    data.extend_from_slice(&damaged);
    data.extend_from_slice(&[0x11; 10]);
    assert!(!looks_torn(&data, read_at, read_at + 100, false));
    // Ending exactly at the end of the file is not the file ending inside it.
    let exact = &data[..100 + damaged.len()];
    assert!(!looks_torn(exact, read_at, read_at + 100, true));
    // The file ends inside it: torn (only if this is the end of the file).
    let cut = &data[..100 + damaged.len() / 2];
    assert!(looks_torn(cut, read_at, read_at + 100, true));
    assert!(!looks_torn(cut, read_at, read_at + 100, false));
    // Ending exactly at a sector boundary with zeros after it: the zeros are not its own.
    let p = 2 * sector - damaged.len();
    let mut data = vec![0x11; p];
    data.extend_from_slice(&damaged);
    data.extend_from_slice(&vec![0; sector]);
    assert!(!looks_torn(&data, 0, p as u64, false));
    // A sector piece of it reads as zeros to the sector's end: torn.
    let mut missing = data.clone();
    missing[sector..2 * sector].fill(0);
    assert!(looks_torn(&missing, 0, p as u64, false));
    // The same, in a chunk read from 32 KiB on.
    let read_at = 8 * sector as u64;
    assert!(looks_torn(&missing, read_at, read_at + p as u64, false));
    assert!(!looks_torn(&data, read_at, read_at + p as u64, false));
}

/// `valid_batch_after` finds a valid batch that starts after the damage, not at it, in a
/// chunk read from anywhere in the file.
#[test]
fn a_valid_batch_after_the_damage_is_found_after_it_only() {
    use spate_core::recovery::valid_batch_after;
    let good = batch(200, 1, T0);
    let mut data = vec![0x11; 300];
    data.extend_from_slice(&good);
    data.extend_from_slice(&[0; 100]);
    let read_at = 3 * u64::from(SECTOR_SIZE);
    assert!(valid_batch_after(&data, read_at, read_at + 10));
    assert!(valid_batch_after(&data, read_at, read_at + 299));
    assert!(
        !valid_batch_after(&data, read_at, read_at + 300),
        "at the damage is not after it"
    );
    assert!(!valid_batch_after(&data, read_at, read_at + 301));
}

/// The configuration contract the log relies on, checked here so that the mutation oracle
/// (spate-sim's tests) sees it: every field outside its range is refused, every boundary
/// value inside it is accepted, and preallocation grows geometrically from its first chunk
/// to the segment size.
#[test]
fn configurations_outside_their_ranges_are_refused_and_preallocation_doubles() {
    use spate_core::config::{PREALLOCATE_BYTES_DEFAULT, ROUND_BYTES_MAX, TORN_WINDOW_BYTES};
    use spate_format::limits::{SEGMENT_SIZE_MAX, SEGMENT_SIZE_MIN};

    assert_eq!(LogConfig::default().validate(), Ok(()));
    // Idle idempotent producers are remembered for 7 days by default (docs/kafka.md).
    assert_eq!(LogConfig::default().producer_expiry_ms, 604_800_000);
    assert_eq!(PREALLOCATE_BYTES_DEFAULT, 64 << 10);
    assert_eq!(
        TORN_WINDOW_BYTES,
        u64::from(ROUND_BYTES_MAX) + u64::from(SECTOR_SIZE)
    );
    let base = config();
    assert_eq!(base.validate(), Ok(()));
    let with = |change: &dyn Fn(&mut LogConfig)| {
        let mut config = config();
        change(&mut config);
        config
    };
    let valid = [
        with(&|c| c.segment_bytes = SEGMENT_SIZE_MIN),
        with(&|c| c.segment_bytes = SEGMENT_SIZE_MAX),
        with(&|c| c.segment_ms = 1),
        with(&|c| c.retention_ms = Some(1)),
        with(&|c| c.flush_interval_ms = 1),
        with(&|c| c.flush_bytes = 1),
        with(&|c| c.preallocate_bytes = u64::from(SECTOR_SIZE)),
    ];
    for config in valid {
        assert_eq!(config.validate(), Ok(()), "{config:?}");
    }
    let invalid = [
        (
            "segment_bytes",
            with(&|c| c.segment_bytes = SEGMENT_SIZE_MIN - 1),
        ),
        (
            "segment_bytes",
            with(&|c| c.segment_bytes = SEGMENT_SIZE_MAX + 1),
        ),
        ("segment_ms", with(&|c| c.segment_ms = 0)),
        ("retention_ms", with(&|c| c.retention_ms = Some(0))),
        ("flush_interval_ms", with(&|c| c.flush_interval_ms = 0)),
        ("flush_bytes", with(&|c| c.flush_bytes = 0)),
        ("preallocate_bytes", with(&|c| c.preallocate_bytes = 0)),
        (
            "preallocate_bytes",
            with(&|c| c.preallocate_bytes = u64::from(SECTOR_SIZE) - 1),
        ),
        (
            "preallocate_bytes",
            with(&|c| c.preallocate_bytes = u64::from(SECTOR_SIZE) + 1),
        ),
    ];
    for (field, config) in invalid {
        let error = config.validate().expect_err(field);
        assert_eq!(error.field, field, "{config:?}");
    }

    let growing = LogConfig {
        segment_bytes: 1 << 20,
        preallocate_bytes: 64 << 10,
        ..base
    };
    assert_eq!(growing.allocation_for(0, 100), 64 << 10);
    assert_eq!(growing.allocation_for(64 << 10, 65 << 10), 128 << 10);
    assert_eq!(growing.allocation_for(512 << 10, 513 << 10), 1 << 20);
    assert_eq!(
        growing.allocation_for(1 << 20, (1 << 20) + 1),
        (1 << 20) + 4096
    );
}

#[test]
fn delete_records_moves_the_log_start_durably_and_retention_frees_the_segments_below() {
    let config = config();
    let mut harness = Harness::new(config.clone());
    // 40 batches of one 4000-byte record: several 64 KiB segments.
    for _ in 0..40 {
        harness.append(&batch(4000, 1, T0), Durability::Fsync);
        harness.settle();
    }
    let bases = harness.log.segment_bases();
    assert!(bases.len() >= 3, "{bases:?}");
    let high = harness.log.high_watermark();

    // Past the high watermark: refused, nothing written.
    assert!(matches!(
        harness.log.handle_delete_records(Offset(high.0 + 1)),
        Err(DeleteRecordsError::AboveHighWatermark { .. })
    ));
    // Inside the second segment: under way until its marker is durable.
    let target = Offset(bases[1].0 + 1);
    let first = harness.log.handle_delete_records(target).unwrap().unwrap();
    harness.transfer();
    assert_eq!(harness.log.log_start(), Offset(0), "visible before durable");
    // A smaller move is covered by the one under way.
    let smaller = harness
        .log
        .handle_delete_records(Offset(1))
        .unwrap()
        .unwrap();
    assert_ne!(first, smaller);
    harness.settle();
    assert_eq!(harness.log.log_start(), target);
    // Both are answered right after the move is reported.
    let moved = harness
        .events
        .iter()
        .position(|event| *event == LogEvent::LogStartMoved { log_start: target })
        .unwrap();
    let answered: Vec<&LogEvent> = harness.events[moved + 1..]
        .iter()
        .filter(|event| matches!(event, LogEvent::Acked { .. }))
        .collect();
    assert_eq!(
        answered,
        [
            &LogEvent::Acked { ticket: first },
            &LogEvent::Acked { ticket: smaller }
        ]
    );
    let marker = FileRef::log_start(target);
    assert!(harness.storage.is_dir_durable(&marker));
    // Already there: answered at once.
    assert_eq!(harness.log.handle_delete_records(Offset(1)), Ok(None));
    assert_eq!(harness.log.handle_delete_records(target), Ok(None));

    // Below the log start is out of range; reads start at the batch holding it.
    assert!(harness.log.handle_fetch(bases[1], 100).is_err());
    assert_eq!(harness.fetch_all().first(), Some(&target));

    // Retention (without limits) deletes the first segment only: the second holds records
    // at and above the log start.
    assert_eq!(harness.log.handle_retention(harness.now), 1);
    harness.transfer();
    harness.settle();
    assert_eq!(&harness.log.segment_bases()[..], &bases[1..]);
    assert_eq!(harness.log.log_start(), target, "still mid-segment");

    // A crash keeps the move; recovery starts the log there.
    let mut image = harness.storage.crash(3);
    let Recovered { log, .. } = recover(&mut image, config.clone());
    assert_eq!(log.log_start(), target);
    assert_eq!(log.high_watermark(), high);

    // A second move removes the first marker; recovery honours the highest marker and
    // removes any other.
    let second = Offset(bases[2].0);
    assert!(harness.log.handle_delete_records(second).unwrap().is_some());
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.log_start(), second);
    assert!(
        harness.storage.contents(&marker).is_none(),
        "old marker left"
    );
    assert_eq!(harness.log.handle_retention(harness.now), 1);
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.segment_bases()[0], second);
    let mut image = harness.storage.crash(4);
    image.submit(IoRequest::Create {
        id: spate_core::IoId(u64::MAX),
        file: FileRef::log_start(Offset(2)),
        allocate: 0,
    });
    image.complete_all();
    while image.poll_done().is_some() {}
    let Recovered { log, report } = recover(&mut image, config.clone());
    assert_eq!(log.log_start(), second);
    assert_eq!(
        report.removed_files,
        vec![FileRef::log_start(Offset(2)).file_name()]
    );
    assert!(image.contents(&FileRef::log_start(Offset(2))).is_none());

    // A marker above the end (durable records lost after the move): the log starts at its
    // end, recorded by a marker of its own, and the stale one goes.
    let above = Offset(high.0 + 100);
    image.submit(IoRequest::Create {
        id: spate_core::IoId(u64::MAX - 1),
        file: FileRef::log_start(above),
        allocate: 0,
    });
    image.complete_all();
    while image.poll_done().is_some() {}
    let Recovered { log, .. } = recover(&mut image, config);
    assert_eq!(log.log_start(), high);
    assert_eq!(log.next_offset(), high);
    assert!(image.contents(&FileRef::log_start(above)).is_none());
    assert!(image.contents(&FileRef::log_start(high)).is_some());

    // A third move removes the second marker; each marker is removed once, not again at
    // every later move.
    let third = Offset(second.0 + 1);
    assert!(harness.log.handle_delete_records(third).unwrap().is_some());
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.log_start(), third);
    for (marker, removed) in [(target, 1), (second, 1), (third, 0)] {
        let removals = harness.count(|request| {
            matches!(request, IoRequest::Remove { file, .. } if *file == FileRef::log_start(marker))
        });
        assert_eq!(removals, removed, "marker {marker}");
    }
}

#[test]
fn a_round_writes_the_appended_bytes_without_copying_them() {
    let mut harness = Harness::new(config());
    // Two batches large enough to be shared, and a small one, copied whole.
    let first = Bytes::from(batch(10000, 2, T0));
    let second = Bytes::from(batch(17000, 1, T0));
    let third = Bytes::from(batch(2000, 2, T0));
    let shared_min = spate_core::partition::SHARED_BATCH_BYTES_MIN;
    assert!(first.len() >= shared_min && second.len() >= shared_min);
    assert!(third.len() < shared_min);
    // Appended before the shell polls: one round takes both.
    for bytes in [&first, &second] {
        harness
            .log
            .handle_append(harness.now, bytes, Durability::Fsync)
            .unwrap();
    }
    harness.transfer();
    harness.settle();
    harness
        .log
        .handle_append(harness.now, &third, Durability::Fsync)
        .unwrap();
    harness.transfer();
    harness.settle();
    let writes: Vec<spate_core::WriteData> = harness
        .requests
        .iter()
        .filter_map(|request| match request {
            IoRequest::Write { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect();
    // Each batch is its stamped header (a copy) and the rest of the producer's buffer, the
    // same memory, not a copy of it.
    let header = spate_format::limits::BATCH_HEADER_SIZE as usize;
    for bytes in [&first, &second] {
        let rest = &bytes[header..];
        assert!(
            writes
                .iter()
                .flat_map(|data| data.pieces())
                .any(|piece| { piece.as_ptr() == rest.as_ptr() && piece.len() == rest.len() }),
            "a round shares the batch's bytes"
        );
    }
    // The small batch is one piece of its own: the whole batch, stamped.
    assert!(writes[1].pieces().iter().any(|piece| {
        piece.len() == third.len()
            && piece.as_ptr() != third.as_ptr()
            && piece[header..] == third[header..]
    }));
    // The first round writes the first two batches; the second rewrites their unfinished
    // sector (copied, fewer than 4096 bytes) and adds the third.
    assert_eq!(writes.len(), 2);
    let two = (first.len() + second.len()) as u64;
    assert_eq!(writes[0].filled(), two);
    assert_eq!(writes[1].filled(), two % 4096 + third.len() as u64);
    for data in &writes {
        assert_eq!(
            data.len(),
            data.filled().div_ceil(4096) * 4096,
            "padded to a sector"
        );
    }
    // What reached the disk and what the tail cache answers are the stamped batches.
    assert_eq!(harness.fetch_all(), vec![Offset(0), Offset(2), Offset(3)]);
    let FetchPlan::Ready(cached) = harness.log.handle_fetch(Offset(0), 1 << 20).unwrap() else {
        panic!("the tail cache holds the batches");
    };
    let stored = harness
        .storage
        .read_now(&FileRef::log(Offset(0)), 0, 64 << 10)
        .unwrap();
    assert_eq!(&stored[..cached.len()], &cached[..]);
    assert_eq!(&cached[header..first.len()], &first[header..]);
    let bases: Vec<Offset> = batches(&cached)
        .map(|batch| batch.unwrap().base_offset())
        .collect();
    assert_eq!(bases, vec![Offset(0), Offset(2), Offset(3)]);
}

#[test]
fn rounds_take_whole_batches_up_to_the_round_limit_and_rewrite_the_unfinished_sector() {
    let mut config = config();
    config.segment_bytes = 64 << 20;
    config.flush_bytes = 32 << 20;
    config.tail_cache_bytes = 0;
    let mut harness = Harness::new(config.clone());
    // 40 batches of about 300 KiB at `none`: more than one round's limit before anything
    // is due, so the flush takes several rounds.
    let one = batch(300 << 10, 1, T0);
    for _ in 0..40 {
        harness
            .log
            .handle_append(harness.now, &Bytes::from(one.clone()), Durability::None)
            .unwrap();
    }
    harness.log.handle_flush(harness.now);
    harness.transfer();
    harness.settle();
    let writes: Vec<(u64, u64, u64)> = harness
        .requests
        .iter()
        .filter_map(|request| match request {
            IoRequest::Write { position, data, .. } => Some((*position, data.len(), data.filled())),
            _ => None,
        })
        .collect();
    assert!(writes.len() >= 2, "several rounds: {writes:?}");
    let limit = u64::from(spate_core::ROUND_BYTES_MAX);
    let mut end = 0;
    for &(position, len, filled) in &writes {
        assert!(len <= limit, "a round of {len} bytes");
        assert_eq!(position % 4096, 0);
        // Each round starts at the sector where the one before ended, rewriting it.
        assert_eq!(position, end / 4096 * 4096);
        let data_end = position + filled;
        let carried = end - position;
        assert_eq!(
            (data_end - position - carried) % one.len() as u64,
            0,
            "whole batches after the carried sector"
        );
        end = data_end;
    }
    assert_eq!(end, 40 * one.len() as u64);
    // Every round but the last is as full as the limit allows: another batch would not fit.
    for &(_, _, filled) in &writes[..writes.len() - 1] {
        assert!(
            filled + one.len() as u64 > limit,
            "a round with room for another batch: {writes:?}"
        );
    }
    assert_eq!(harness.fetch_all().len(), 40);

    // Batches of exactly 1 MiB fill a round of exactly `ROUND_BYTES_MAX`.
    let mut harness = Harness::new(config);
    let value = (1 << 20) - 200;
    let value = (value..value + 200)
        .find(|&size| batch(size, 1, T0).len() == 1 << 20)
        .expect("a batch of exactly 1 MiB");
    let exact = Bytes::from(batch(value, 1, T0));
    for _ in 0..9 {
        harness
            .log
            .handle_append(harness.now, &exact, Durability::None)
            .unwrap();
    }
    harness.log.handle_flush(harness.now);
    harness.transfer();
    harness.settle();
    let first = harness.requests.iter().find_map(|request| match request {
        IoRequest::Write { data, .. } => Some(data.filled()),
        _ => None,
    });
    assert_eq!(
        first,
        Some(limit),
        "eight batches of 1 MiB in the first round"
    );
}

/// A catch-up reader touches the file about once: a read covers the batch holding the offset
/// and `max_bytes` after it (at least `fetch_read_bytes`), and what it brought in beyond its
/// answer answers the next fetch without a read when it holds as much as a read would.
#[test]
fn a_catch_up_reader_takes_what_a_read_brought_in_beyond_its_answer() {
    use spate_format::limits::INDEX_INTERVAL_BYTES;
    let mut harness = Harness::new(reads_from_disk());
    // Big batches, each followed by a small one: a fetch that fits one big batch leaves the
    // small one to the next, which its read already brought in.
    let big = batch(300_000, 1, T0);
    let small = batch(1_000, 1, T0);
    for _ in 0..10 {
        harness.append(&big, Durability::Fsync);
        harness.append(&small, Durability::Fsync);
        harness.settle();
    }
    let max_bytes = u32::try_from(big.len() + small.len() - 1).unwrap();
    let window = u64::from(INDEX_INTERVAL_BYTES)
        + u64::from(max_bytes.max(harness.log.config().fetch_read_bytes))
        + 2 * u64::from(SECTOR_SIZE);
    let (mut reads, mut from_read_ahead) = (0, 0);
    let mut offset = Offset(0);
    let mut lengths = Vec::new();
    while offset < harness.log.high_watermark() {
        let bytes = match harness.log.handle_fetch(offset, max_bytes).unwrap() {
            FetchPlan::Ready(bytes) => {
                from_read_ahead += 1;
                bytes
            }
            FetchPlan::Read(plan) => {
                assert!(plan.len <= window, "a read of {} bytes", plan.len);
                reads += 1;
                harness.read(plan, u64::MAX).unwrap()
            }
            FetchPlan::AtEnd => panic!("at end below the high watermark"),
        };
        for batch in batches(&bytes) {
            let batch = batch.unwrap();
            assert_eq!(batch.base_offset(), offset, "in order, nothing skipped");
            lengths.push(batch.as_bytes().len());
            offset = batch.next_offset();
        }
    }
    let expected: Vec<usize> = (0..10).flat_map(|_| [big.len(), small.len()]).collect();
    assert_eq!(lengths, expected, "every batch once, one answer each");
    assert_eq!(
        (reads, from_read_ahead),
        (10, 10),
        "each small batch without a read"
    );
    assert_eq!(
        harness.log.read_ahead_bytes(),
        0,
        "nothing left past the end"
    );
}

/// A read that ends inside the batch holding the offset (a batch larger than the read) is
/// followed by one read that covers the batch; the answer is that whole batch.
#[test]
fn a_batch_larger_than_the_read_is_completed_by_one_more_read() {
    let mut config = reads_from_disk();
    config.fetch_read_bytes = 0;
    let mut harness = Harness::new(config);
    // The big batch starts past the first sector, so the continued read starts inside.
    let small = batch(5_000, 1, T0);
    let big = batch(100_000, 2, T0);
    harness.append(&small, Durability::Fsync);
    harness.append(&big, Durability::Fsync);
    harness.settle();
    let FetchPlan::Read(plan) = harness.log.handle_fetch(Offset(2), 1).unwrap() else {
        panic!("expected a read");
    };
    assert!(
        plan.len < big.len() as u64,
        "the read is smaller than the batch"
    );
    let data = harness
        .storage
        .read_now(&plan.file, plan.position, plan.len)
        .unwrap();
    let ReadDone::More(more) = harness
        .log
        .handle_read(harness.now, &plan, &data, 0)
        .unwrap()
    else {
        panic!("expected a continued read");
    };
    assert!(more.position <= small.len() as u64 && more.position % 4096 == 0);
    assert!(more.position > 0);
    let end = (small.len() + big.len()) as u64;
    assert!(
        more.position + more.len <= end.div_ceil(4096) * 4096,
        "the continued read stays within the written data: {}+{} for {end}",
        more.position,
        more.len
    );
    let data = harness
        .storage
        .read_now(&more.file, more.position, more.len)
        .unwrap();
    let ReadDone::Answer(bytes) = harness
        .log
        .handle_read(harness.now, &more, &data, 0)
        .unwrap()
    else {
        panic!("a continued read is answered");
    };
    let got = batches(&bytes)
        .map(|b| b.unwrap().base_offset())
        .collect::<Vec<_>>();
    assert_eq!(got, vec![Offset(1)], "the whole batch holding offset 2");
    assert_eq!(bytes.len(), big.len());
}

/// Read-ahead is kept only within the caller's bound and only for `READ_AHEAD_KEEP_MS`; a
/// fetch elsewhere drops it.
#[test]
fn read_ahead_is_bounded_and_dropped_after_its_time_or_a_jump() {
    use spate_core::READ_AHEAD_KEEP_MS;
    let mut harness = Harness::new(reads_from_disk());
    for _ in 0..20 {
        harness.append(&batch(10_000, 1, T0), Durability::Fsync);
        harness.settle();
    }
    let read = |harness: &mut Harness, offset: u64, keep_max: u64| {
        let FetchPlan::Read(plan) = harness.log.handle_fetch(Offset(offset), 10_100).unwrap()
        else {
            panic!("expected a read at {offset}");
        };
        harness.read(plan, keep_max).unwrap()
    };
    read(&mut harness, 0, 1000);
    assert_eq!(
        harness.log.read_ahead_bytes(),
        0,
        "more than the bound is not kept"
    );
    read(&mut harness, 0, u64::MAX);
    let kept = harness.log.read_ahead_bytes();
    assert!(kept > 100_000, "the rest of the read is kept: {kept}");
    assert!(matches!(
        harness.log.handle_fetch(Offset(1), 10_100),
        Ok(FetchPlan::Ready(_))
    ));
    assert!(
        harness.log.read_ahead_bytes() < kept,
        "what was answered left it"
    );
    harness
        .log
        .handle_tick(Millis(harness.now.0 + READ_AHEAD_KEEP_MS - 1));
    assert!(harness.log.read_ahead_bytes() > 0);
    harness
        .log
        .handle_tick(Millis(harness.now.0 + READ_AHEAD_KEEP_MS));
    assert_eq!(harness.log.read_ahead_bytes(), 0, "dropped after its time");
    read(&mut harness, 0, u64::MAX);
    // A fetch further on, within what was read, is answered from it ...
    assert!(matches!(
        harness.log.handle_fetch(Offset(19), 10_100),
        Ok(FetchPlan::Ready(_))
    ));
    assert_eq!(
        harness.log.read_ahead_bytes(),
        0,
        "nothing after the last batch"
    );
    read(&mut harness, 0, u64::MAX);
    assert!(matches!(
        harness.log.handle_fetch(Offset(5), 10_100),
        Ok(FetchPlan::Ready(_))
    ));
    // ... and one behind it (a reader that went back) reads from the file.
    read(&mut harness, 2, u64::MAX);
}

/// The read-ahead a shard's partitions keep is bounded over all of them: a partition may keep
/// what the others leave of `READ_AHEAD_SHARD_BYTES_MAX` (its own is replaced, not added).
#[test]
fn a_shard_bounds_the_read_ahead_of_all_its_partitions() {
    use spate_core::{ShardBudget, READ_AHEAD_SHARD_BYTES_MAX as MAX};
    let mut budget = ShardBudget::new(1 << 20);
    assert_eq!(budget.read_ahead_room(0), MAX);
    budget.update_read_ahead(0, MAX - 10);
    assert_eq!(budget.read_ahead_room(0), 10, "another partition");
    assert_eq!(budget.read_ahead_room(MAX - 10), MAX, "the one keeping it");
    budget.update_read_ahead(0, 10);
    assert_eq!(budget.read_ahead_room(0), 0);
    budget.update_read_ahead(MAX - 10, 0);
    budget.update_read_ahead(10, 0);
    assert_eq!(budget.read_ahead_bytes(), 0);
}

/// Read-ahead holds only what was durable when it was read: a fetch answered from it never
/// returns a batch above the high watermark, though the read brought in written bytes after.
#[test]
fn read_ahead_never_answers_above_the_high_watermark() {
    let mut config = config();
    config.tail_cache_bytes = 0;
    let mut harness = Harness::new(config);
    let small = batch(500, 1, T0);
    harness.append(&small, Durability::Fsync);
    let durable = harness.append(&small, Durability::Fsync);
    harness.settle();
    harness.append(&small, Durability::Write);
    harness.append(&batch(5000, 1, T0), Durability::Write);
    harness.settle();
    assert_eq!(harness.log.high_watermark(), durable);
    assert!(
        harness.log.written_end() > durable,
        "batches written, not durable"
    );
    // The first fetch takes one batch; its read brought in the rest of the file.
    let FetchPlan::Read(plan) = harness
        .log
        .handle_fetch(Offset(0), u32::try_from(small.len()).unwrap())
        .unwrap()
    else {
        panic!("expected a read");
    };
    harness.read(plan, u64::MAX).unwrap();
    // Room for two small batches, not for the large one after them.
    let bytes = harness.fetch(Offset(1), u32::try_from(2 * small.len() + 100).unwrap());
    let bases: Vec<Offset> = batches(&bytes).map(|b| b.unwrap().base_offset()).collect();
    assert_eq!(bases, vec![Offset(1)], "only the durable batch");
}

/// A follower's log (`PartitionLog::handle_replicate`) holds the leader's batches byte for
/// byte at the same offsets, syncs them without waiting for the flush interval, knows the
/// leader's idempotent producers (a resend is recognised), and refuses a batch that does not
/// continue it or whose stamped header is damaged (issue 14, docs/cluster.md).
#[test]
fn a_follower_keeps_the_leaders_batches_byte_for_byte() {
    use spate_core::partition::SHARED_BATCH_BYTES_MIN;
    use spate_format::ProducerFields;

    let mut leader = Harness::new(config());
    let producer = ProducerFields {
        producer_id: 42,
        producer_epoch: 0,
        base_sequence: 0,
    };
    let idempotent = {
        let mut builder = BatchBuilder::new().producer(producer);
        builder
            .push(&Record {
                timestamp: T0,
                value: Some(b"once"),
                ..Record::default()
            })
            .unwrap();
        builder.finish().unwrap()
    };
    leader.append(&batch(100, 3, T0), Durability::Fsync);
    leader.append(&idempotent, Durability::Fsync);
    leader.append(&batch(SHARED_BATCH_BYTES_MIN, 1, T0 + 1), Durability::Write);
    leader.append(&batch(10, 1, T0 + 2), Durability::None);
    leader.settle();
    let end = leader.log.next_offset();
    leader.log.handle_flush(leader.now);
    leader.transfer();
    leader.settle();
    assert_eq!(leader.log.high_watermark(), end);
    let stamped: Vec<Bytes> = all_batches(&mut leader)
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    assert_eq!(stamped.len(), 4);

    let mut follower = Harness::new(config());
    // A batch that does not start at the follower's end is refused.
    assert!(matches!(
        follower.log.handle_replicate(follower.now, &stamped[1]),
        Err(AppendError::NotContinuing { .. })
    ));
    // So is one whose stamped header no longer matches its CRC.
    let mut damaged = stamped[0].to_vec();
    damaged[16] ^= 1;
    assert!(matches!(
        follower
            .log
            .handle_replicate(follower.now, &Bytes::from(damaged)),
        Err(AppendError::InvalidBatch(_))
    ));
    for batch in &stamped {
        follower.log.handle_replicate(follower.now, batch).unwrap();
        follower.transfer();
    }
    assert!(matches!(
        follower.log.handle_replicate(follower.now, &stamped[3]),
        Err(AppendError::NotContinuing { .. })
    ));
    // Synced at once: the clock never moved past the flush interval.
    follower.settle();
    assert_eq!(follower.log.high_watermark(), end);
    assert!(follower.events.contains(&LogEvent::Durable { up_to: end }));
    let copied: Vec<Bytes> = all_batches(&mut follower)
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    assert_eq!(copied, stamped, "the same bytes at the same offsets");
    // The leader's producer is known: its resend to this replica (were it the leader) is a
    // duplicate with the first offsets.
    let resend = follower
        .log
        .handle_append(
            follower.now,
            &Bytes::from(idempotent.clone()),
            Durability::Fsync,
        )
        .unwrap();
    assert!(resend.duplicate);
    assert_eq!(resend.base_offset, Offset(3));
    // And so after a restart.
    let mut image = follower.storage.crash(3);
    let recovered = recover(&mut image, config());
    assert_eq!(recovered.log.next_offset(), end);
    assert!(recovered.log.producers().knows(42));
}

/// Recovers the partition in `storage` with its log cut at `to` (`Recovery::truncating`).
fn recover_cut(
    storage: &mut SimStorage,
    config: LogConfig,
    to: Offset,
) -> Result<Recovered, spate_core::RecoveryError> {
    let listing = storage.list().unwrap();
    let mut recovery = Recovery::truncating(config, &listing, to);
    loop {
        while let Some(request) = recovery.poll_io() {
            storage.submit(request);
        }
        if let Some(result) = recovery.poll_done() {
            return result;
        }
        assert!(storage.complete_one(), "recovery stuck");
        while let Some(done) = storage.poll_done() {
            recovery.handle_io_done(done);
        }
    }
}

/// A log of several segments (the third batch has three records, the 41st is an idempotent
/// producer's), all durable; returns it and every batch's base offset and bytes.
fn several_segments() -> (Harness, Vec<(Offset, Bytes)>) {
    use spate_format::ProducerFields;
    let mut harness = Harness::new(config());
    for n in 0..60i64 {
        let bytes = match n {
            2 => batch(100, 3, T0 + n),
            40 => {
                let producer = ProducerFields {
                    producer_id: 42,
                    producer_epoch: 0,
                    base_sequence: 0,
                };
                let mut builder = BatchBuilder::new().producer(producer);
                builder
                    .push(&Record {
                        timestamp: T0 + n,
                        value: Some(&[7; 3_000]),
                        ..Record::default()
                    })
                    .unwrap();
                builder.finish().unwrap()
            }
            _ => batch(3_000, 1, T0 + n),
        };
        harness.append(&bytes, Durability::Fsync);
        harness.settle();
    }
    assert!(harness.log.segment_count() >= 3, "several segments");
    let all = all_batches(&mut harness);
    (harness, all)
}

/// Every batch of `harness`'s log, from its start, with its bytes.
fn all_batches(harness: &mut Harness) -> Vec<(Offset, Bytes)> {
    let mut all = Vec::new();
    let mut offset = harness.log.log_start();
    while offset < harness.log.high_watermark() {
        for batch in batches(&harness.fetch(offset, 1 << 20)) {
            let batch = batch.unwrap();
            offset = batch.next_offset();
            all.push((
                batch.base_offset(),
                Bytes::copy_from_slice(batch.as_bytes()),
            ));
        }
    }
    all
}

/// A follower's truncation (`Recovery::truncating`, issue 14): the log is cut at a batch
/// boundary anywhere — inside the active segment, inside a sealed one, at a segment's base,
/// at the log's start or end — and holds exactly the batches below the cut, with the
/// producers' state as of the cut; it then takes appends at the cut, and a later recovery
/// finds the same. A cut inside a batch fences instead.
#[test]
fn a_truncating_recovery_cuts_the_log_at_a_batch_boundary() {
    let (harness, all) = several_segments();
    let end = harness.log.high_watermark();
    let bases = harness.log.segment_bases();
    let producer_at = all[40].0;
    let mut cuts = vec![
        Offset(0),
        all[1].0,
        all[3].0,
        bases[1],
        all[all.len() - 2].0,
        end,
    ];
    cuts.extend(bases.iter().skip(1).map(|base| Offset(base.0 + 2)));
    cuts.push(Offset(producer_at.0 + 1));
    for to in cuts {
        let mut image = harness.storage.crash(1);
        let recovered = recover_cut(&mut image, config(), to).unwrap();
        assert_eq!(recovered.report.corruption, None, "cut at {to}");
        assert_eq!(recovered.report.cut.map(|(at, _)| at), Some(to));
        assert_eq!(recovered.log.next_offset(), to);
        assert_eq!(recovered.log.high_watermark(), to);
        assert_eq!(
            recovered.log.producers().knows(42),
            producer_at < to,
            "cut at {to}"
        );
        for listed in image.list().unwrap() {
            if let Ok((base, _)) = spate_format::segment::parse_segment_file_name(&listed.name) {
                assert!(
                    base < to || base == Offset(0),
                    "{} left after a cut at {to}",
                    listed.name
                );
            }
        }
        let mut follower = Harness::reopened(recovered.log, image, T0 + 1_000);
        let kept: Vec<_> = all.iter().filter(|(base, _)| *base < to).cloned().collect();
        assert_eq!(all_batches(&mut follower), kept, "cut at {to}");
        // Appends continue at the cut; a later recovery finds the same log.
        for n in 0..3 {
            follower.append(&batch(500, 1, T0 + 100 + n), Durability::Fsync);
            follower.settle();
        }
        let expected = all_batches(&mut follower);
        assert_eq!(expected.len(), kept.len() + 3);
        let mut image = follower.storage.crash(2);
        let again = recover(&mut image, config());
        assert_eq!(again.report.corruption, None);
        assert_eq!(again.report.torn_tail, None);
        let mut reopened = Harness::reopened(again.log, image, T0 + 2_000);
        assert_eq!(
            all_batches(&mut reopened),
            expected,
            "cut at {to}, reopened"
        );
    }
    // Inside the batch of three records: not a boundary, fenced, nothing removed.
    let mut image = harness.storage.crash(1);
    let files_before = image.list().unwrap().len();
    let recovered = recover_cut(&mut image, config(), Offset(all[2].0 .0 + 1)).unwrap();
    assert!(recovered.report.corruption.is_some());
    assert!(recovered.log.fenced().is_some());
    assert_eq!(image.list().unwrap().len(), files_before);
    assert!(recovered.report.removed_files.is_empty());
    assert_eq!(recovered.report.cut, None);
}

/// A crash anywhere in a truncating recovery leaves a log that an ordinary recovery opens
/// unfenced, holding a prefix of the batches it had, at least up to the cut.
#[test]
fn a_crash_during_a_truncating_recovery_leaves_a_whole_log() {
    let (harness, all) = several_segments();
    let bases = harness.log.segment_bases();
    for to in [bases[1], all[3].0, Offset(bases[1].0 + 2)] {
        for crash_after in 0.. {
            let mut storage = harness.storage.crash(1);
            let listing = storage.list().unwrap();
            let mut recovery = Recovery::truncating(config(), &listing, to);
            let mut completed = 0;
            let mut finished = false;
            while completed < crash_after {
                while let Some(request) = recovery.poll_io() {
                    storage.submit(request);
                }
                if recovery.poll_done().is_some() {
                    finished = true;
                    break;
                }
                assert!(storage.complete_one(), "recovery stuck");
                completed += 1;
                while let Some(done) = storage.poll_done() {
                    recovery.handle_io_done(done);
                }
            }
            while let Some(request) = recovery.poll_io() {
                storage.submit(request);
            }
            for seed in 0..4 {
                let mut image = storage.crash(seed);
                let recovered = recover(&mut image, config());
                assert_eq!(
                    recovered.report.corruption, None,
                    "cut at {to}, crash after {crash_after} requests (seed {seed})"
                );
                let end = recovered.log.next_offset();
                assert!(end >= to, "cut at {to}: the log ends at {end}");
                let mut reopened = Harness::reopened(recovered.log, image, T0 + 1_000);
                let found = all_batches(&mut reopened);
                assert_eq!(found[..], all[..found.len()], "a prefix of the log");
            }
            if finished {
                break;
            }
        }
    }
}

/// A replicated leader's log (`handle_replicated_high_watermark`, issue 14): consumers see,
/// and `fsync` producers are acknowledged, only up to the smaller of the local durable end
/// and the replicated high watermark — a fetch's answer is cut there even when the tail cache
/// or a read holds more — while followers read up to the written end.
#[test]
fn a_replicated_leader_shows_only_what_its_replicas_hold() {
    for config in [config(), reads_from_disk()] {
        let mut leader = Harness::new(config);
        leader.log.handle_replicated_high_watermark(Offset(0));
        let mut tickets = Vec::new();
        for n in 0..3 {
            let ticket = leader
                .log
                .handle_append(
                    leader.now,
                    &Bytes::from(batch(1_000, 2, T0 + n)),
                    Durability::Fsync,
                )
                .unwrap();
            tickets.push(ticket);
            leader.transfer();
        }
        leader.settle();
        let end = Offset(6);
        assert_eq!(leader.log.durable_end(), end);
        assert_eq!(leader.log.high_watermark(), Offset(0));
        let acked = |events: &[LogEvent]| {
            events
                .iter()
                .filter(|event| matches!(event, LogEvent::Acked { .. }))
                .count()
        };
        assert_eq!(acked(&leader.events), 0, "durable here is not enough");
        assert!(matches!(
            leader.log.handle_fetch(Offset(0), 1 << 20),
            Ok(FetchPlan::AtEnd)
        ));
        // A follower reads everything written.
        let replica = match leader.log.handle_fetch_replica(Offset(0), 1 << 20).unwrap() {
            FetchPlan::Ready(bytes) => bytes,
            FetchPlan::Read(plan) => leader.read(plan, 0).unwrap(),
            FetchPlan::AtEnd => panic!("the follower is behind"),
        };
        assert_eq!(batches(&replica).count(), 3);
        let parked = leader
            .log
            .handle_fetch_wait(leader.now, Offset(0), Offset(0), 1_000)
            .unwrap();
        // The replicas hold the first batch: it is visible and acknowledged, alone.
        leader.log.handle_replicated_high_watermark(Offset(2));
        leader.transfer();
        assert_eq!(leader.log.high_watermark(), Offset(2));
        assert_eq!(acked(&leader.events), 1);
        assert!(leader.events.contains(&LogEvent::Acked {
            ticket: tickets[0].waiter.unwrap()
        }));
        assert!(leader
            .events
            .contains(&LogEvent::FetchReady { ticket: parked }));
        let answer = leader.fetch(Offset(0), 1 << 20);
        let bases: Vec<Offset> = batches(&answer).map(|b| b.unwrap().base_offset()).collect();
        assert_eq!(bases, vec![Offset(0)], "cut at the visible end");
        assert!(matches!(
            leader.log.handle_delete_records(Offset(4)),
            Err(DeleteRecordsError::AboveHighWatermark { .. })
        ));
        // It never goes back; above the local durable end it is capped by it.
        leader.log.handle_replicated_high_watermark(Offset(0));
        assert_eq!(leader.log.high_watermark(), Offset(2));
        leader.log.handle_replicated_high_watermark(Offset(100));
        leader.transfer();
        assert_eq!(leader.log.high_watermark(), end);
        assert_eq!(acked(&leader.events), 3);
        assert_eq!(leader.fetch_all(), vec![Offset(0), Offset(2), Offset(4)]);
    }
}

/// A leader that is deposed (`handle_deposed`): its `fsync` produces still waiting for the
/// replicated high watermark are answered `Deposed`, in offset order, at once; a `write`
/// acknowledgement, local, still comes from the write; what was acknowledged stays so.
#[test]
fn a_deposed_leader_answers_its_waiting_fsync_produces() {
    let mut leader = Harness::new(config());
    leader.log.handle_replicated_high_watermark(Offset(0));
    let append = |leader: &mut Harness, n: i64, durability| {
        let ticket = leader
            .log
            .handle_append(leader.now, &Bytes::from(batch(100, 1, T0 + n)), durability)
            .unwrap()
            .waiter
            .unwrap();
        leader.transfer();
        ticket
    };
    let first = append(&mut leader, 0, Durability::Fsync);
    let second = append(&mut leader, 1, Durability::Fsync);
    let third = append(&mut leader, 2, Durability::Fsync);
    leader.log.handle_replicated_high_watermark(Offset(1));
    leader.settle();
    assert!(leader.events.contains(&LogEvent::Acked { ticket: first }));
    let written = leader
        .log
        .handle_append(
            leader.now,
            &Bytes::from(batch(100, 1, T0 + 3)),
            Durability::Write,
        )
        .unwrap()
        .waiter;
    let before = leader.events.len();
    leader.log.handle_deposed();
    leader.transfer();
    let deposed: Vec<&LogEvent> = leader.events[before..]
        .iter()
        .filter(|event| matches!(event, LogEvent::Deposed { .. }))
        .collect();
    assert_eq!(
        deposed,
        vec![
            &LogEvent::Deposed { ticket: second },
            &LogEvent::Deposed { ticket: third }
        ]
    );
    leader.settle();
    if let Some(written) = written {
        assert!(leader.events.contains(&LogEvent::Acked { ticket: written }));
    }
    assert!(!leader.events.contains(&LogEvent::Acked { ticket: second }));
    assert_eq!(leader.log.high_watermark(), Offset(1));
}

/// What the shell asks of a log between calls — idle, output waiting, when to tick, bytes
/// unwritten and unsynced, room in the write buffer, its settings, its sealed segments —
/// follows the log's state (mutation testing found these unpinned).
#[test]
fn what_the_shell_asks_of_a_log_follows_its_state() {
    use spate_core::config::PARTITION_BUFFER_BYTES_MAX;
    let mut harness = Harness::new(config());
    assert!(harness.log.is_idle() && !harness.log.has_output());
    assert_eq!(harness.log.poll_timeout(), None);
    assert_eq!(harness.log.config(), &config());
    let bytes = Bytes::from(batch(1_000, 1, T0));
    let len = bytes.len() as u64;
    harness
        .log
        .handle_append(harness.now, &bytes, Durability::Write)
        .unwrap();
    assert!(harness.log.has_output() && !harness.log.is_idle());
    assert_eq!(harness.log.unwritten_bytes(), len);
    assert_eq!(harness.log.unsynced_bytes(), len);
    assert!(harness.log.has_room(PARTITION_BUFFER_BYTES_MAX - len));
    assert!(!harness.log.has_room(PARTITION_BUFFER_BYTES_MAX - len + 1));
    harness.transfer();
    // A round in flight drives what comes next: no tick is asked for.
    assert!(!harness.log.has_output() && !harness.log.is_idle());
    assert_eq!(harness.log.poll_timeout(), None);
    // The round completes (its requests handed out as they come): the acknowledgement
    // alone is output still.
    loop {
        while harness.storage.complete_one() {}
        while let Some(done) = harness.storage.poll_done() {
            harness.log.handle_io_done(harness.now, done);
        }
        let mut issued = false;
        while let Some(request) = harness.log.poll_io() {
            harness.requests.push(request.clone());
            harness.storage.submit(request);
            issued = true;
        }
        if !issued {
            break;
        }
    }
    assert!(harness.log.has_output(), "an acknowledgement waits");
    harness.settle();
    assert!(harness.log.is_idle() && !harness.log.has_output());
    assert_eq!(harness.log.unwritten_bytes(), 0);
    assert_eq!(
        harness.log.unsynced_bytes(),
        len,
        "`write` waits for the flush interval"
    );
    assert!(harness.log.has_room(PARTITION_BUFFER_BYTES_MAX));
    assert!(!harness.log.has_room(PARTITION_BUFFER_BYTES_MAX + 1));
    assert_eq!(harness.log.poll_timeout(), Some(Millis(T0 + 10)));
    harness.now = Millis(T0 + 10);
    harness.log.handle_tick(harness.now);
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.unsynced_bytes(), 0);
    assert_eq!(harness.log.poll_timeout(), None);
    // New settings take effect: segments now roll after a millisecond.
    let mut quick = config();
    quick.segment_ms = 1;
    harness.log.set_config(quick.clone());
    assert_eq!(harness.log.config(), &quick);
    harness.now = Millis(T0 + 20);
    harness
        .log
        .handle_append(harness.now, &bytes, Durability::Fsync)
        .unwrap();
    assert_eq!(harness.log.segment_count(), 2);
    // The rolled segment is durable but not yet sealed (its indexes are written next).
    assert!(harness.log.sealed_segments().is_empty());
    harness.transfer();
    harness.settle();
    assert_eq!(harness.log.sealed_segments().len(), 1);
}

/// Successive small fetches are answered from what one read brought in, each taking the
/// next batches of the read-ahead (mutation testing found the read-ahead's position unpinned).
#[test]
fn one_read_answers_a_run_of_small_fetches() {
    let mut harness = Harness::new(reads_from_disk());
    for n in 0..40 {
        harness.append(&batch(1_000, 1, T0 + n), Durability::Fsync);
    }
    harness.settle();
    let small = u32::try_from(batch(1_000, 1, T0).len()).unwrap();
    let (mut reads, mut ready) = (0, 0);
    let mut offset = Offset(0);
    while offset < harness.log.high_watermark() {
        let bytes = match harness.log.handle_fetch(offset, small).unwrap() {
            FetchPlan::Ready(bytes) => {
                ready += 1;
                bytes
            }
            FetchPlan::Read(plan) => {
                reads += 1;
                harness.read(plan, u64::MAX).unwrap()
            }
            FetchPlan::AtEnd => panic!("at end below the high watermark"),
        };
        let batches: Vec<_> = batches(&bytes).map(Result::unwrap).collect();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].base_offset(), offset);
        offset = batches[0].next_offset();
    }
    assert_eq!((reads, ready), (1, 39));
}

/// The write buffer takes appends up to exactly its limit, and offsets up to exactly
/// `OFFSET_MAX` (mutation testing found both boundaries unpinned).
#[test]
fn the_write_buffer_and_the_offsets_are_taken_up_to_their_limits() {
    use spate_core::config::PARTITION_BUFFER_BYTES_MAX;
    use spate_format::limits::OFFSET_MAX;
    let mut harness = Harness::new(reads_from_disk());
    let big = Bytes::from(batch(1_000_000, 1, T0));
    let overhead = big.len() - 1_000_000;
    let mut buffered = 0u64;
    while buffered + big.len() as u64 <= PARTITION_BUFFER_BYTES_MAX {
        harness
            .log
            .handle_append(harness.now, &big, Durability::None)
            .unwrap();
        buffered += big.len() as u64;
    }
    let rest = usize::try_from(PARTITION_BUFFER_BYTES_MAX - buffered).unwrap();
    let last = Bytes::from(batch(rest - overhead - 1, 1, T0));
    assert_eq!(harness.log.unwritten_bytes(), buffered);
    if last.len() == rest {
        harness
            .log
            .handle_append(harness.now, &last, Durability::None)
            .unwrap();
    } else {
        // A record's length is a varint: one byte less of value may be two bytes less.
        let last = Bytes::from(batch(rest - overhead, 1, T0));
        assert_eq!(last.len(), rest);
        harness
            .log
            .handle_append(harness.now, &last, Durability::None)
            .unwrap();
    }
    assert_eq!(harness.log.unwritten_bytes(), PARTITION_BUFFER_BYTES_MAX);
    assert!(matches!(
        harness
            .log
            .handle_append(harness.now, &Bytes::from(batch(1, 1, T0)), Durability::None),
        Err(AppendError::BufferFull { .. })
    ));

    let mut near_end = PartitionLog::new(config(), Offset(OFFSET_MAX - 1));
    assert!(matches!(
        near_end.handle_append(Millis(T0), &Bytes::from(batch(1, 3, T0)), Durability::None),
        Err(AppendError::InvalidBatch(_))
    ));
    let ticket = near_end
        .handle_append(Millis(T0), &Bytes::from(batch(1, 2, T0)), Durability::None)
        .unwrap();
    assert_eq!(ticket.last_offset, Offset(OFFSET_MAX));
}

/// A segment takes batches up to exactly its size, and offsets far from zero do not make it
/// roll (mutation testing found both unpinned).
#[test]
fn a_segment_fills_to_exactly_its_size() {
    let mut harness = Harness::new(config());
    let size = u64::from(config().segment_bytes);
    let unit = batch(1_000, 1, T0);
    let overhead = unit.len() - 1_000;
    let mut used = 0u64;
    while used + 2 * unit.len() as u64 <= size {
        harness.append(&unit, Durability::None);
        used += unit.len() as u64;
    }
    let rest = usize::try_from(size - used).unwrap();
    let mut last = batch(rest - overhead, 1, T0);
    if last.len() != rest {
        // A record's length is a varint: one byte less of value may be two bytes less.
        last = batch(rest - overhead - 1, 1, T0);
    }
    assert_eq!(last.len(), rest);
    harness.append(&last, Durability::None);
    assert_eq!(harness.log.size_bytes(), size);
    assert_eq!(harness.log.segment_count(), 1, "exactly full is not over");
    harness.append(&unit, Durability::None);
    assert_eq!(harness.log.segment_count(), 2);

    let mut far = PartitionLog::new(config(), Offset(1 << 40));
    for _ in 0..3 {
        far.handle_append(Millis(T0), &Bytes::from(batch(10, 2, T0)), Durability::None)
            .unwrap();
    }
    assert_eq!(far.segment_count(), 1);
}

/// A flush with nothing to flush leaves the flush interval as it was; a corruption the
/// shell found (background verification) fences the log; a rolled segment's producer
/// snapshot is what recovery starts from (mutation testing found these unpinned).
#[test]
fn flushes_corruption_reports_and_snapshots_do_what_they_say() {
    let mut harness = Harness::new(config());
    harness.append(&batch(100, 1, T0), Durability::Fsync);
    harness.settle();
    harness.log.handle_flush(harness.now);
    harness.transfer();
    harness.settle();
    let bytes = batch(100, 1, T0);
    harness.append(&bytes, Durability::None);
    harness.settle();
    assert_eq!(
        harness.log.unsynced_bytes(),
        bytes.len() as u64,
        "an empty flush does not make the next append sync at once"
    );
    assert!(harness.log.producers().is_empty());

    let (harness, _) = several_segments();
    let mut image = harness.storage.crash(1);
    let recovered = recover(&mut image, config());
    assert!(recovered.report.producer_snapshot.is_some());
    assert!(!recovered.log.producers().is_empty());

    let mut fenced = Harness::new(config());
    fenced.append(&batch(100, 1, T0), Durability::Fsync);
    fenced.settle();
    let reason = FenceReason::Corruption {
        segment: "00000000000000000000.log".to_owned(),
        position: 0,
        detail: "found by verification".to_owned(),
    };
    fenced.log.handle_corruption(reason.clone());
    assert_eq!(fenced.log.fenced(), Some(&reason));
    assert!(matches!(
        fenced
            .log
            .handle_append(fenced.now, &Bytes::from(batch(1, 1, T0)), Durability::None),
        Err(AppendError::Fenced(_))
    ));
}

/// A follower's parked fetch wakes when the leader's written end passes what it saw, while a
/// consumer's waits for the (replicated) high watermark (issue 14).
#[test]
fn a_followers_parked_fetch_wakes_on_writes_a_consumers_on_the_high_watermark() {
    let mut leader = Harness::new(config());
    leader.log.handle_replicated_high_watermark(Offset(0));
    leader.append(&batch(100, 1, T0), Durability::Fsync);
    leader.settle();
    let written = leader.log.written_end();
    assert_eq!(written, Offset(1));
    // Nothing new past what each saw: both park.
    let follower = leader
        .log
        .handle_fetch_wait_replica(leader.now, written, written, 1_000)
        .unwrap();
    let consumer = leader
        .log
        .handle_fetch_wait(leader.now, Offset(0), Offset(0), 1_000)
        .unwrap();
    assert_eq!(leader.log.fetches_parked(), 2);
    // A follower that saw less than the written end is answered at once.
    let behind = leader
        .log
        .handle_fetch_wait_replica(leader.now, Offset(0), Offset(0), 1_000)
        .unwrap();
    leader.transfer();
    assert!(leader
        .events
        .contains(&LogEvent::FetchReady { ticket: behind }));
    leader.append(&batch(100, 1, T0), Durability::Fsync);
    leader.settle();
    assert!(leader
        .events
        .contains(&LogEvent::FetchReady { ticket: follower }));
    assert!(!leader
        .events
        .contains(&LogEvent::FetchReady { ticket: consumer }));
    leader.log.handle_replicated_high_watermark(Offset(1));
    leader.transfer();
    assert!(leader
        .events
        .contains(&LogEvent::FetchReady { ticket: consumer }));
    assert_eq!(leader.log.fetches_parked(), 0);
}

/// Replaces `file`'s contents in `storage` (a test's damage).
/// Removes the offset and time index files of the segment at `base` (so recovery scans it).
fn remove_indexes(storage: &mut SimStorage, base: Offset) {
    for kind in [SegmentFileKind::OffsetIndex, SegmentFileKind::TimeIndex] {
        storage.submit(IoRequest::Remove {
            id: spate_core::IoId(u64::MAX),
            file: FileRef { base, kind },
        });
    }
    storage.complete_all();
    while storage.poll_done().is_some() {}
}

fn overwrite(storage: &mut SimStorage, file: FileRef, data: Vec<u8>) {
    storage.submit(IoRequest::WriteFile {
        id: spate_core::IoId(u64::MAX - 1),
        file,
        data: Bytes::from(data),
    });
    storage.complete_all();
    while storage.poll_done().is_some() {}
}

/// A clean restart takes sealed segments' index files as they are (no rebuild); damage in a
/// sealed segment's tail, or a damaged index file, makes recovery scan the segment instead,
/// which finds the damage or rebuilds the same log (mutation testing found the index checks
/// unpinned).
#[test]
fn a_restart_trusts_sound_index_files_and_scans_past_damaged_ones() {
    use spate_format::limits::OFFSET_INDEX_ENTRY_SIZE;
    let (harness, all) = several_segments();
    let bases = harness.log.segment_bases();
    let reopen = |mut image: SimStorage| {
        let recovered = recover(&mut image, config());
        let report = recovered.report.clone();
        let mut reopened = Harness::reopened(recovered.log, image, T0 + 1_000);
        let found = if report.corruption.is_none() {
            all_batches(&mut reopened)
        } else {
            Vec::new()
        };
        (report, found)
    };
    let (report, found) = reopen(harness.storage.crash(1));
    assert_eq!(
        report.rebuilt_indexes,
        Vec::<Offset>::new(),
        "sound indexes are used"
    );
    assert_eq!(report.corruption, None);
    assert_eq!(found, all);
    // Sealed segments up to the producer snapshot are read from their last index entry on,
    // never from their start.
    let (recovered, requests) = recover_logged(&mut harness.storage.crash(1), config());
    let snapshot = recovered
        .report
        .producer_snapshot
        .expect("a producer snapshot");
    for base in bases.iter().filter(|base| **base <= snapshot) {
        assert!(
            !requests.iter().any(|request| matches!(
                request,
                IoRequest::Read { file, position: 0, .. } if *file == FileRef::log(*base)
            )),
            "segment {base} read from its start"
        );
    }

    // Index files of the second segment (base above zero) that do not hold: rebuilt.
    let second = bases[1];
    let good = harness
        .storage
        .contents(&FileRef::offset_index(second))
        .unwrap()
        .to_vec();
    assert!(
        good.len() >= 2 * OFFSET_INDEX_ENTRY_SIZE as usize,
        "entries to damage"
    );
    let log_len = u32::try_from(
        harness
            .storage
            .contents(&FileRef::log(second))
            .unwrap()
            .len(),
    )
    .unwrap();
    let span = u32::try_from(bases[2].0 - second.0).unwrap();
    let last = good.len() - OFFSET_INDEX_ENTRY_SIZE as usize;
    let mut damaged_indexes = Vec::new();
    let mut odd = good.clone();
    odd.pop();
    damaged_indexes.push((FileRef::offset_index(second), odd));
    let mut past_log = good.clone();
    past_log[last + 4..last + 8].copy_from_slice(&log_len.to_le_bytes());
    damaged_indexes.push((FileRef::offset_index(second), past_log));
    let mut past_span = good;
    past_span[last..last + 4].copy_from_slice(&span.to_le_bytes());
    damaged_indexes.push((FileRef::offset_index(second), past_span));
    let time = harness
        .storage
        .contents(&FileRef::time_index(second))
        .unwrap()
        .to_vec();
    let time_last = time.len() - 12;
    let mut time_past_span = time;
    time_past_span[time_last + 8..time_last + 12].copy_from_slice(&span.to_le_bytes());
    damaged_indexes.push((FileRef::time_index(second), time_past_span));
    for (n, (file, data)) in damaged_indexes.into_iter().enumerate() {
        let mut image = harness.storage.crash(1);
        overwrite(&mut image, file, data);
        let (report, found) = reopen(image);
        assert_eq!(report.rebuilt_indexes, vec![second], "damage {n}");
        assert_eq!(report.corruption, None, "damage {n}");
        assert_eq!(found, all, "damage {n}");
    }

    // A flipped bit in the last batch of a sealed segment (after its last index entry): the
    // tail check fails, the scan finds the damage, the partition is fenced.
    let mut image = harness.storage.crash(1);
    let file = FileRef::log(second);
    let (found, _) = spate_format::segment::scan_segment(
        harness.storage.durable_contents(&file).unwrap(),
        0,
        Some(second),
    );
    let last_batch = found.last().unwrap();
    image.flip_bit(
        &file,
        last_batch.position + u64::from(last_batch.length) / 2,
        3,
    );
    let (report, _) = reopen(image);
    assert!(report.corruption.is_some(), "{report:?}");
}

/// Recovery scans a segment in reads of `RECOVERY_READ_BYTES`: a segment of several of them,
/// with a torn tail after the last synced batch, recovers every durable batch and cuts only
/// what was never synced, whatever the crash image (the simulation's segments fit one read;
/// mutation testing found the chunked scan unpinned).
#[test]
fn a_segment_of_several_reads_recovers_across_them() {
    use spate_core::config::RECOVERY_READ_BYTES;
    let config = LogConfig {
        segment_bytes: 32 << 20,
        ..reads_from_disk()
    };
    let mut harness = Harness::new(config.clone());
    let big = batch(700_000, 1, T0);
    let small = batch(3_000, 2, T0);
    let mut appended = 0u64;
    while appended < 2 * RECOVERY_READ_BYTES + 300_000 {
        harness.append(&big, Durability::Fsync);
        harness.append(&small, Durability::Fsync);
        harness.settle();
        appended += (big.len() + small.len()) as u64;
    }
    let durable = harness.log.high_watermark();
    // More appended, written in part, never synced.
    for _ in 0..3 {
        harness.append(&small, Durability::None);
        harness.append(&big, Durability::None);
    }
    harness.log.handle_tick(Millis(T0 + 1));
    harness.transfer();
    for _ in 0..6 {
        harness.step();
    }
    let expected = all_batches(&mut Harness::reopened(
        recover(&mut harness.storage.crash(0), config.clone()).log,
        harness.storage.crash(0),
        T0 + 1_000,
    ));
    assert!(expected.len() >= 2, "a log to compare with");
    for seed in 0..24 {
        let mut image = harness.storage.crash(seed);
        let recovered = recover(&mut image, config.clone());
        assert_eq!(recovered.report.corruption, None, "seed {seed}");
        let end = recovered.log.next_offset();
        assert!(
            end >= durable,
            "seed {seed}: {end} below the durable {durable}"
        );
        let mut reopened = Harness::reopened(recovered.log, image, T0 + 1_000);
        let found = all_batches(&mut reopened);
        let prefix = found.len().min(expected.len());
        let durable_batches = expected.iter().filter(|(base, _)| *base < durable).count();
        assert!(found.len() >= durable_batches, "seed {seed}");
        assert_eq!(
            found[..durable_batches],
            expected[..durable_batches],
            "seed {seed}"
        );
        assert!(prefix > 0);
    }
}

/// A log in one large segment whose batches (all durable) end exactly at file position `p`.
fn log_ending_at(p: usize) -> Harness {
    let config = LogConfig {
        segment_bytes: 64 << 20,
        ..reads_from_disk()
    };
    let mut harness = Harness::new(config);
    let big = batch(1_000_000, 1, T0);
    let mut written = 0;
    while p - written > big.len() + 100_000 {
        harness.append(&big, Durability::Fsync);
        written += big.len();
    }
    let rest = p - written;
    let value_len = (0..rest)
        .find(|&len| batch(len, 1, T0).len() == rest)
        .expect("a batch of the remaining length");
    harness.append(&batch(value_len, 1, T0), Durability::Fsync);
    harness.settle();
    let file = FileRef::log(Offset(0));
    let contents = harness.storage.contents(&file).unwrap();
    assert!(contents[..p].iter().any(|&byte| byte != 0) && contents[p..].iter().all(|&b| b == 0));
    harness
}

/// A crash image of `harness` whose first segment file is `len` bytes long, holding non-zero
/// bytes at each `(position, count)` of `written` after the batches.
fn with_bytes_after(harness: &Harness, len: usize, written: &[(u64, usize)]) -> SimStorage {
    let mut image = harness.storage.crash(0);
    let file = FileRef::log(Offset(0));
    let mut data = image.contents(&file).unwrap().to_vec();
    data.resize(len, 0);
    for &(at, count) in written {
        let at = usize::try_from(at).unwrap();
        data[at..at + count].fill(0xa5);
    }
    overwrite(&mut image, file, data);
    image
}

/// After the last whole batch of the active segment, recovery looks for written bytes read by
/// read (4 MiB each) up to the torn window (one round and a sector past the sector of the
/// end): written bytes inside it are a torn round, cut with their exact extent reported;
/// one byte past it is damage (fenced, nothing cut), and the reads stop at the read that
/// showed it. No read goes past the file's written data (mutation testing found the probe
/// across reads unpinned).
#[test]
fn the_bytes_after_the_end_are_probed_read_by_read_up_to_the_torn_window() {
    use spate_core::config::RECOVERY_READ_BYTES as READ;
    use spate_core::storage::{align_down, align_up};
    use spate_core::TORN_WINDOW_BYTES;
    const MIB: u64 = 1 << 20;
    let p = 10_000u64;
    let harness = log_ending_at(10_000);
    let config = harness.log.config().clone();
    let end = harness.log.high_watermark();
    let file = FileRef::log(Offset(0));
    let window_end = align_down(p) + TORN_WINDOW_BYTES;
    // Torn rounds: written bytes in the same read as the end, in a later read, and ending
    // exactly at the window's end.
    let cases = [
        (p + 10_000, 100, vec![(0, align_up(p + 10_100))]),
        (5 * MIB, 100, vec![(0, READ), (READ, MIB + 4096)]),
        (
            window_end - 100,
            100,
            vec![(0, READ), (READ, READ), (2 * READ, window_end - 2 * READ)],
        ),
    ];
    for (at, count, reads) in cases {
        let mut image = with_bytes_after(&harness, 24 << 20, &[(at, count)]);
        let (recovered, requests) = recover_logged(&mut image, config.clone());
        assert_eq!(recovered.report.corruption, None, "bytes at {at}");
        let torn = recovered.report.torn_tail.clone().expect("a torn tail");
        assert_eq!(
            (torn.segment, torn.position, torn.bytes_discarded),
            (Offset(0), p, at + count as u64 - p),
            "bytes at {at}"
        );
        assert_eq!(recovered.log.high_watermark(), end);
        assert!(recovered.log.fenced().is_none());
        assert_eq!(reads_of(&requests, file), reads, "bytes at {at}");
        let after = image.contents(&file).unwrap();
        assert_eq!(after.len() as u64, align_up(p), "cut and realigned");
    }
    // One byte past the window: damage, though more is written much further on (never read).
    let mut image = with_bytes_after(
        &harness,
        24 << 20,
        &[(window_end - 100, 101), (20 * MIB, 100)],
    );
    let (recovered, requests) = recover_logged(&mut image, config);
    assert_eq!(recovered.report.torn_tail, None);
    let Some(FenceReason::Corruption { position, .. }) = recovered.report.corruption else {
        panic!("{:?}", recovered.report.corruption)
    };
    assert_eq!(position, p);
    assert!(recovered.log.fenced().is_some());
    assert_eq!(
        reads_of(&requests, file),
        vec![(0, READ), (READ, READ), (2 * READ, READ)]
    );
    assert_eq!(
        image.contents(&file).unwrap().len(),
        24 << 20,
        "nothing cut"
    );
}

/// The window's end falling exactly on a read's end: written bytes up to it are not yet past
/// it, so recovery reads on and finds the byte beyond it in the next read.
#[test]
fn written_bytes_up_to_a_reads_end_at_the_window_are_followed_into_the_next_read() {
    use spate_core::config::RECOVERY_READ_BYTES as READ;
    use spate_core::storage::align_down;
    use spate_core::TORN_WINDOW_BYTES;
    // The end in the first read's last sector puts the window's end at the third read's end.
    let p = READ - 2048;
    let harness = log_ending_at(usize::try_from(p).unwrap());
    let config = harness.log.config().clone();
    let file = FileRef::log(Offset(0));
    let window_end = align_down(p) + TORN_WINDOW_BYTES;
    assert_eq!(window_end, 3 * READ);
    let mut image = with_bytes_after(&harness, 16 << 20, &[(window_end - 100, 100)]);
    let recovered = recover(&mut image, config.clone());
    assert_eq!(
        recovered.report.torn_tail.map(|torn| torn.bytes_discarded),
        Some(window_end - p)
    );
    let mut image = with_bytes_after(
        &harness,
        16 << 20,
        &[(window_end - 100, 100), (window_end + 4096, 10)],
    );
    let (recovered, requests) = recover_logged(&mut image, config);
    assert_eq!(recovered.report.torn_tail, None);
    assert!(matches!(
        recovered.report.corruption,
        Some(FenceReason::Corruption { position, .. }) if position == p
    ));
    assert_eq!(
        reads_of(&requests, file),
        vec![(0, READ), (READ, READ), (2 * READ, READ), (3 * READ, 8192)]
    );
}

/// A segment file cut inside its last batch: at a sector boundary (where a crash can leave
/// it) the batch is a torn tail, cut from one read of the file; at any other length the file
/// was cut from outside and the partition is fenced, nothing cut.
#[test]
fn a_file_cut_inside_its_last_batch_is_read_once() {
    let harness = log_ending_at(1_700_000);
    let config = harness.log.config().clone();
    let file = FileRef::log(Offset(0));
    let full = harness.storage.contents(&file).unwrap()[..1_700_000].to_vec();
    let bases = all_batches(&mut Harness::reopened(
        recover(&mut harness.storage.crash(0), config.clone()).log,
        harness.storage.crash(0),
        T0,
    ));
    let (last_base, last) = bases.last().cloned().unwrap();
    let start = 1_700_000 - last.len() as u64;
    assert!(start > 4096, "the last batch starts past the first sector");
    for cut in [spate_core::storage::align_up(start + 1_000), start + 1_000] {
        let mut image = harness.storage.crash(0);
        overwrite(
            &mut image,
            file,
            full[..usize::try_from(cut).unwrap()].to_vec(),
        );
        let (recovered, requests) = recover_logged(&mut image, config.clone());
        assert_eq!(reads_of(&requests, file).len(), 1, "cut at {cut}");
        assert_eq!(recovered.log.next_offset(), last_base, "cut at {cut}");
        let truncated = requests
            .iter()
            .any(|request| matches!(request, IoRequest::Truncate { .. }));
        if cut.is_multiple_of(u64::from(SECTOR_SIZE)) {
            let torn = recovered.report.torn_tail.expect("torn");
            assert_eq!((torn.position, torn.bytes_discarded), (start, cut - start));
            assert!(truncated && recovered.log.fenced().is_none());
        } else {
            assert!(!truncated, "cut at {cut}");
            let corruption = recovered.report.corruption.expect("fenced");
            assert!(
                corruption
                    .to_string()
                    .contains("possibly acknowledged records lost"),
                "{corruption}"
            );
        }
    }
}

/// Damage in a rolled segment larger than one read (its index files gone, so it is scanned)
/// fences the partition at the damage, and the file is read no further than the read that
/// found it: what follows damage in a rolled segment changes nothing.
#[test]
fn a_rolled_segment_is_read_no_further_than_its_damage() {
    use spate_core::config::RECOVERY_READ_BYTES as READ;
    let config = LogConfig {
        segment_bytes: 6 << 20,
        ..reads_from_disk()
    };
    let mut harness = Harness::new(config.clone());
    while harness.log.segment_bases().len() < 2 {
        harness.append(&batch(1_000_000, 1, T0), Durability::Fsync);
        harness.settle();
    }
    let first = FileRef::log(Offset(0));
    assert!(harness.storage.contents(&first).unwrap().len() as u64 > READ);
    harness.storage.flip_bit(&first, 100_000, 2);
    let mut image = harness.storage.crash(0);
    remove_indexes(&mut image, Offset(0));
    let (recovered, requests) = recover_logged(&mut image, config);
    assert!(matches!(
        recovered.report.corruption,
        Some(FenceReason::Corruption { position: 0, .. })
    ));
    assert_eq!(reads_of(&requests, first), vec![(0, READ)]);
}

/// A storage whose reads come back short (64 KiB at most, far less than asked) never makes
/// recovery read the same bytes without end or cut anything: a batch larger than what a
/// read returns can't be told from damage, so the partition is fenced, nothing lost.
#[test]
fn short_reads_never_loop_or_cut() {
    let mut harness = Harness::new(reads_from_disk());
    harness.append(&batch(3_000, 2, T0), Durability::Fsync);
    harness.append(&batch(300_000, 1, T0), Durability::Fsync);
    harness.settle();
    let config = harness.log.config().clone();
    let mut image = harness.storage.crash(0);
    let (recovered, requests) = recover_reading(&mut image, config, 64 << 10);
    assert!(requests
        .iter()
        .all(|request| !matches!(request, IoRequest::Truncate { .. })));
    assert_eq!(recovered.report.torn_tail, None);
    assert!(recovered.log.fenced().is_some());
}

/// A truncating recovery whose cut lies in a later read of the segment, off a sector
/// boundary: the sector before the cut keeps the batch bytes in it when the log is written
/// again (the next round rewrites that sector).
#[test]
fn a_cut_in_a_later_read_keeps_the_sector_before_it() {
    let config = LogConfig {
        segment_bytes: 64 << 20,
        ..reads_from_disk()
    };
    let mut harness = Harness::new(config.clone());
    for n in 0..12 {
        harness.append(&batch(500_000 + n * 7, 1, T0), Durability::Fsync);
        harness.settle();
    }
    let mut image = harness.storage.crash(0);
    let all = all_batches(&mut Harness::reopened(
        recover(&mut image.crash(0), config.clone()).log,
        image.crash(0),
        T0,
    ));
    // The batch starting past the first 4 MiB read.
    let mut position = 0u64;
    let (index, _) = all
        .iter()
        .enumerate()
        .find(|(_, (_, bytes))| {
            let start = position;
            position += bytes.len() as u64;
            start > spate_core::config::RECOVERY_READ_BYTES
        })
        .unwrap();
    let to = all[index].0;
    let recovered = recover_cut(&mut image, config.clone(), to).unwrap();
    assert_eq!(recovered.log.next_offset(), to);
    let mut follower = Harness::reopened(recovered.log, image, T0 + 1_000);
    follower.append(&batch(500, 1, T0 + 100), Durability::Fsync);
    follower.settle();
    let found = all_batches(&mut follower);
    assert_eq!(found.len(), index + 1);
    assert_eq!(found[..index], all[..index]);
    let again = recover(&mut follower.storage.crash(1), config);
    assert_eq!(again.report.corruption, None);
    assert_eq!(again.log.next_offset(), Offset(to.0 + 1));
}

/// A follower whose leader no longer has its position starts over at the leader's log start
/// (`Recovery::resetting`, issue 14): no segment is left, the log starts (durably) at the new
/// offset and takes appends there; a crash at any point leaves either that or the old log,
/// which an ordinary recovery opens unfenced (the follower then resets again).
#[test]
fn a_reset_starts_the_log_over_at_the_leaders_log_start() {
    let (harness, all) = several_segments();
    let end = harness.log.next_offset();
    let start = Offset(end.0 + 1_000);
    let mut image = harness.storage.crash(1);
    let listing = image.list().unwrap();
    let recovered = {
        let mut recovery = Recovery::resetting(config(), &listing, start);
        loop {
            while let Some(request) = recovery.poll_io() {
                image.submit(request);
            }
            if let Some(result) = recovery.poll_done() {
                break result.unwrap();
            }
            assert!(image.complete_one(), "reset stuck");
            while let Some(done) = image.poll_done() {
                recovery.handle_io_done(done);
            }
        }
    };
    assert_eq!(recovered.log.log_start(), start);
    assert_eq!(recovered.log.next_offset(), start);
    assert_eq!(recovered.log.high_watermark(), start);
    let names: Vec<String> = image.list().unwrap().into_iter().map(|f| f.name).collect();
    assert_eq!(names, vec![FileRef::log_start(start).file_name()]);
    let mut follower = Harness::reopened(recovered.log, image, T0 + 1_000);
    follower.append(&batch(100, 1, T0), Durability::Fsync);
    follower.settle();
    let mut image = follower.storage.crash(2);
    let again = recover(&mut image, config());
    assert_eq!(again.log.log_start(), start);
    assert_eq!(again.log.next_offset(), Offset(start.0 + 1));

    for crash_after in 0..64 {
        let mut storage = harness.storage.crash(1);
        let listing = storage.list().unwrap();
        let mut recovery = Recovery::resetting(config(), &listing, start);
        let mut finished = false;
        for _ in 0..crash_after {
            while let Some(request) = recovery.poll_io() {
                storage.submit(request);
            }
            if recovery.poll_done().is_some() {
                finished = true;
                break;
            }
            assert!(storage.complete_one());
            while let Some(done) = storage.poll_done() {
                recovery.handle_io_done(done);
            }
        }
        for seed in 0..3 {
            let mut image = storage.crash(seed);
            let recovered = recover(&mut image, config());
            assert_eq!(
                recovered.report.corruption, None,
                "crash after {crash_after}"
            );
            let next = recovered.log.next_offset();
            if next == start {
                assert_eq!(recovered.log.log_start(), start);
            } else {
                assert!(
                    next <= end,
                    "crash after {crash_after}: the log ends at {next}"
                );
                let mut reopened = Harness::reopened(recovered.log, image, T0 + 1_000);
                let found = all_batches(&mut reopened);
                let skipped = all.len() - found.len();
                assert_eq!(
                    found[..],
                    all[skipped..],
                    "what is left is the old log's end"
                );
            }
        }
        if finished {
            break;
        }
    }
}

/// A replica that started over at its leader's log start inside a batch (the leader's
/// DeleteRecords at a mid-batch offset): its empty log takes that whole batch, which begins
/// below its start, byte for byte at its offsets; the log start stays, and holds after a
/// crash. A log that holds anything still refuses a batch that does not continue it.
#[test]
fn a_replica_started_over_inside_a_batch_takes_that_batch_whole() {
    let mut leader = Harness::new(config());
    leader.append(&batch(100, 3, T0), Durability::Fsync);
    leader.append(&batch(100, 2, T0 + 1), Durability::Fsync);
    leader.settle();
    let end = leader.log.next_offset();
    assert_eq!(end, Offset(5));
    let stamped: Vec<Bytes> = all_batches(&mut leader)
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    // The follower starts over at 1, inside the leader's first batch (0..3).
    let start = Offset(1);
    let mut image = Harness::new(config()).storage.crash(0);
    let listing = image.list().unwrap();
    let mut recovery = Recovery::resetting(config(), &listing, start);
    let recovered = loop {
        while let Some(request) = recovery.poll_io() {
            image.submit(request);
        }
        if let Some(result) = recovery.poll_done() {
            break result.unwrap();
        }
        assert!(image.complete_one(), "reset stuck");
        while let Some(done) = image.poll_done() {
            recovery.handle_io_done(done);
        }
    };
    let mut follower = Harness::reopened(recovered.log, image, T0 + 1_000);
    // A batch wholly below the start (0..1, of another leader's log) is not taken.
    let mut other = Harness::new(config());
    other.append(&batch(100, 1, T0), Durability::Fsync);
    other.settle();
    let below = all_batches(&mut other).remove(0).1;
    assert!(matches!(
        follower.log.handle_replicate(follower.now, &below),
        Err(AppendError::NotContinuing { .. })
    ));
    for batch in &stamped {
        follower.log.handle_replicate(follower.now, batch).unwrap();
        follower.transfer();
    }
    // Taken once: the same batch again does not continue the log.
    assert!(matches!(
        follower.log.handle_replicate(follower.now, &stamped[0]),
        Err(AppendError::NotContinuing { .. })
    ));
    follower.settle();
    assert_eq!(follower.log.log_start(), start);
    assert_eq!(follower.log.next_offset(), end);
    assert_eq!(follower.log.durable_end(), end);
    let copied: Vec<Bytes> = all_batches(&mut follower)
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    assert_eq!(copied, stamped, "the same bytes at the same offsets");
    let mut image = follower.storage.crash(1);
    let again = recover(&mut image, config());
    assert_eq!(again.report.corruption, None);
    assert_eq!(again.log.log_start(), start);
    assert_eq!(again.log.next_offset(), end);
}
