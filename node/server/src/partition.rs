//! A partition on its shard: the log (inside the shard's `ShardLogs`), its `DmaStorage`, the
//! produce requests waiting for their acknowledgement, the fetches parked on its high
//! watermark, and the driver task that moves requests and completions between log and disk.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use spate_core::{LogEvent, PartitionKey, Storage};
use spate_format::Offset;
use spate_proto::{DeleteRecordsResponse, ErrorCode, ErrorResponse, ProduceResponse};

use crate::shard::{now, Shard};
use crate::storage::{DmaStorage, WriteBuffers};

/// The answer a producer waits for.
pub type ProduceResult = Result<ProduceResponse, ErrorResponse>;

/// The answer a DeleteRecords waits for.
pub type DeleteRecordsResult = Result<DeleteRecordsResponse, ErrorResponse>;

#[derive(Debug)]
pub struct PendingAck {
    pub next: Offset,
    pub response: ProduceResponse,
    pub reply: LocalSender<ProduceResult>,
}

#[derive(Debug)]
pub struct Partition {
    pub key: PartitionKey,
    pub storage: RefCell<DmaStorage>,
    pub doorbell: Rc<LocalSender<()>>,
    /// `write` acknowledgements in offset order.
    pub write_acks: RefCell<VecDeque<PendingAck>>,
    /// `fsync` acknowledgements in offset order.
    pub fsync_acks: RefCell<VecDeque<PendingAck>>,
    /// DeleteRecords waiting for their log start to be durable: the offset each asked for.
    /// Bounded like produces: by the connections and their frames in flight.
    pub start_waiters: RefCell<Vec<(Offset, LocalSender<DeleteRecordsResult>)>>,
    /// Parked long-poll fetches, woken when the high watermark moves.
    pub waiters: RefCell<Vec<LocalSender<()>>>,
    /// Set to stop the driver once the log is idle (shutdown, deletion).
    pub closing: Cell<bool>,
    /// Produces waiting for room in the write buffer pass one at a time, first come first
    /// served, so no connection is starved by others that keep finding room.
    pub room_gate: Rc<glommio::sync::Semaphore>,
}

impl Partition {
    pub fn new(
        key: PartitionKey,
        storage_dir: std::path::PathBuf,
        write_buffers: Rc<WriteBuffers>,
    ) -> (Rc<Partition>, LocalReceiver<()>) {
        let (doorbell, bell) = local_channel::new_bounded(1);
        let doorbell = Rc::new(doorbell);
        let storage = DmaStorage::new(storage_dir, doorbell.clone(), write_buffers);
        let partition = Partition {
            key,
            storage: RefCell::new(storage),
            doorbell,
            write_acks: RefCell::new(VecDeque::new()),
            fsync_acks: RefCell::new(VecDeque::new()),
            start_waiters: RefCell::new(Vec::new()),
            waiters: RefCell::new(Vec::new()),
            closing: Cell::new(false),
            room_gate: Rc::new(glommio::sync::Semaphore::new(1)),
        };
        (Rc::new(partition), bell)
    }

    /// Wakes the driver (an append happened, time passed, shutdown).
    pub fn ring(&self) {
        let _ = self.doorbell.try_send(());
    }

    fn wake_waiters(&self) {
        for waiter in self.waiters.borrow_mut().drain(..) {
            let _ = waiter.try_send(());
        }
    }

    fn resolve(queue: &RefCell<VecDeque<PendingAck>>, up_to: Offset) {
        loop {
            let ack = {
                let mut queue = queue.borrow_mut();
                match queue.front() {
                    Some(ack) if ack.next <= up_to => queue.pop_front(),
                    _ => None,
                }
            };
            let Some(ack) = ack else { break };
            let _ = ack.reply.try_send(Ok(ack.response));
        }
    }

    fn fail_all(&self, error: &ErrorResponse) {
        for queue in [&self.write_acks, &self.fsync_acks] {
            for ack in queue.borrow_mut().drain(..) {
                let _ = ack.reply.try_send(Err(error.clone()));
            }
        }
        for (_, reply) in self.start_waiters.borrow_mut().drain(..) {
            let _ = reply.try_send(Err(error.clone()));
        }
    }

    fn handle_event(&self, shard: &Shard, event: LogEvent) {
        match event {
            LogEvent::Written { up_to } => {
                Self::resolve(&self.write_acks, up_to);
                // Written bytes left the partition's write buffer: room for waiting produces.
                shard.wake_budget_waiters();
            }
            LogEvent::Durable { up_to } => {
                Self::resolve(&self.write_acks, up_to);
                Self::resolve(&self.fsync_acks, up_to);
                self.wake_waiters();
                shard.wake_budget_waiters();
            }
            LogEvent::Fenced { durable, reason } => {
                tracing::error!(
                    topic = %self.key.topic,
                    partition = self.key.partition,
                    durable = durable.0,
                    "partition fenced: {reason}; writes are refused until its recovery runs again (by itself after ENOSPC once space is free, on SIGHUP, or at a restart)"
                );
                let error = ErrorResponse::new(
                    ErrorCode::PartitionFenced,
                    format!(
                        "partition {}-{} is fenced: {reason}",
                        self.key.topic, self.key.partition
                    ),
                );
                self.fail_all(&error);
                self.wake_waiters();
                shard.wake_budget_waiters();
            }
            LogEvent::SegmentRolled { base } => {
                tracing::debug!(topic = %self.key.topic, partition = self.key.partition, base = base.0, "segment rolled");
            }
            LogEvent::LogStartMoved { log_start } => {
                let current = shard
                    .with_log(&self.key, |log| log.log_start())
                    .unwrap_or(log_start);
                self.start_waiters.borrow_mut().retain(|(asked, reply)| {
                    if *asked > log_start {
                        return true;
                    }
                    let response = DeleteRecordsResponse {
                        log_start_offset: current.0,
                    };
                    let _ = reply.try_send(Ok(response));
                    false
                });
                tracing::info!(
                    topic = %self.key.topic,
                    partition = self.key.partition,
                    log_start = log_start.0,
                    "log start moved (DeleteRecords)"
                );
                // The segments wholly below the new start go now, not at the next retention
                // check.
                shard.with_log(&self.key, |log| log.handle_retention(now()));
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

    /// Moves requests to the disk and completions and events back until nothing moves.
    fn pump(&self, shard: &Shard) {
        loop {
            let mut moved = false;
            loop {
                let done = self.storage.borrow_mut().poll_done();
                let Some(done) = done else { break };
                shard.with_log(&self.key, |log| log.handle_io_done(now(), done));
                moved = true;
            }
            while let Some(request) = shard.with_log(&self.key, |log| log.poll_io()).flatten() {
                self.storage.borrow_mut().submit(request);
                moved = true;
            }
            while let Some(event) = shard.with_log(&self.key, |log| log.poll_event()).flatten() {
                self.handle_event(shard, event);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    /// The driver: runs until the partition is closing and its log is idle.
    pub async fn drive(self: Rc<Self>, shard: Rc<Shard>, bell: LocalReceiver<()>) {
        loop {
            self.pump(&shard);
            let settled = shard
                .with_log(&self.key, |log| {
                    log.is_idle()
                        && (log.high_watermark() == log.next_offset() || log.fenced().is_some())
                })
                .unwrap_or(true);
            if self.closing.get() && settled {
                break;
            }
            let wait = shard
                .with_log(&self.key, |log| log.poll_timeout())
                .flatten()
                .map_or(Duration::from_millis(500), |at| {
                    // At least a millisecond, so the driver always yields to the reactor.
                    Duration::from_millis(u64::try_from((at.0 - now().0).max(1)).unwrap_or(1))
                });
            let rang = future::or(async { bell.recv().await.is_some() }, async {
                glommio::timer::sleep(wait).await;
                true
            })
            .await;
            if !rang {
                break;
            }
            shard.with_log(&self.key, |log| log.handle_tick(now()));
        }
        // Anything still waiting will never be acknowledged by this process.
        let error = ErrorResponse::new(ErrorCode::ShuttingDown, "the partition is closing");
        self.fail_all(&error);
        self.wake_waiters();
        let reader = self.storage.borrow().reader();
        reader.close().await;
    }
}
