//! Retention (whole segments past their limits, oldest first) and the log start
//! (DeleteRecords: a durable marker first, then the move), both run as the maintenance
//! queue: requests in order, each step after the one before completed.

use spate_format::Offset;

use crate::storage::{FileRef, IoRequest};
use crate::waiters::Ticket;
use crate::Millis;

use super::{DeleteRecordsError, FileState, LogEvent, Maintenance, Owner, PartitionLog};

impl PartitionLog {
    /// Deletes whole segments beyond the retention limits, oldest first; never the active
    /// segment, never one with writes still pending. Returns how many were deleted.
    pub fn handle_retention(&mut self, now: Millis) -> u32 {
        if self.fenced.is_some() {
            return 0;
        }
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            if oldest.has_work(false)
                || self
                    .round
                    .as_ref()
                    .is_some_and(|r| r.segment == oldest.base)
            {
                break;
            }
            // The next segment's file name must be durable first: it carries the offsets on
            // after a crash, when the deleted segment no longer can.
            if self.segments[1].file != (FileState::Created { dir_synced: true }) {
                break;
            }
            // A replicated log keeps what its replicas may not hold yet: a segment goes only
            // once it lies wholly below the high watermark (else a follower sent back to the
            // new log start would report holding what no replica holds).
            if self.replicated_end.is_some() && self.segments[1].base > self.high_watermark() {
                break;
            }
            // Every record of the segment lies below the log start (DeleteRecords).
            let below_start = self.segments[1].base <= self.log_start;
            let expired = self.config.retention_ms.is_some_and(|ms| {
                oldest.max_timestamp != i64::MIN && oldest.max_timestamp < now.0.saturating_sub(ms)
            });
            let total = self.size_bytes();
            let oversized = self
                .config
                .retention_bytes
                .is_some_and(|limit| total - oldest.size >= limit);
            if !expired && !oversized && !below_start {
                break;
            }
            let base = oldest.base;
            self.segments.pop_front();
            // One segment at a time, each removal made durable before the next: a crash can
            // then bring back only the oldest segments, never leave a gap in the offsets.
            let removes = [
                FileRef::log(base),
                FileRef::offset_index(base),
                FileRef::time_index(base),
                FileRef::producers(base),
            ]
            .map(|file| IoRequest::Remove {
                id: self.io_id(),
                file,
            });
            self.maintenance
                .push_back(Maintenance::Io(removes.to_vec()));
            let sync = IoRequest::SyncDir { id: self.io_id() };
            self.maintenance.push_back(Maintenance::Io(vec![sync]));
            let next = self.segments[0].base;
            self.maintenance
                .push_back(Maintenance::ForgetProducersBelow(next));
            deleted += 1;
        }
        if deleted > 0 {
            self.log_start = self.log_start.max(self.segments[0].base);
            self.tail.drop_segments_below(self.segments[0].base);
            self.start_maintenance();
            self.events.push_back(LogEvent::SegmentsDeleted {
                segments: deleted,
                log_start: self.log_start,
            });
            self.waiters.start_moved(self.log_start, &mut self.events);
        }
        deleted
    }

    /// Moves the log start forward to `offset` (Kafka's DeleteRecords): the records below it
    /// are no longer readable, and the segments wholly below it are deleted by the next
    /// [`PartitionLog::handle_retention`]. The move is durable before it is visible: a
    /// marker file named by the offset is created and the directory synced first; then
    /// [`LogEvent::LogStartMoved`] reports it. Returns `Ok(None)` if the log already starts
    /// at or above `offset` durably (nothing to wait for), or the ticket of the answer if the
    /// move is under way ([`LogEvent::Acked`] follows the `LogStartMoved` at or above
    /// `offset`, or [`LogEvent::Refused`] a fence); a start that retention raised but whose
    /// deletion is not yet synced gets a marker too.
    pub fn handle_delete_records(
        &mut self,
        offset: Offset,
    ) -> Result<Option<Ticket>, DeleteRecordsError> {
        if let Some(reason) = &self.fenced {
            return Err(DeleteRecordsError::Fenced(reason.clone()));
        }
        if offset > self.high_watermark() {
            return Err(DeleteRecordsError::AboveHighWatermark {
                offset,
                high_watermark: self.high_watermark(),
            });
        }
        if offset <= self.durable_start {
            return Ok(None);
        }
        let ticket = self.waiters.wait_start(offset);
        if offset <= self.start_target {
            // A move at least this far is under way.
            return Ok(Some(ticket));
        }
        self.start_target = offset;
        let create = IoRequest::Create {
            id: self.io_id(),
            file: FileRef::log_start(offset),
            allocate: 0,
        };
        let sync = IoRequest::SyncDir { id: self.io_id() };
        self.maintenance.push_back(Maintenance::Io(vec![create]));
        self.maintenance.push_back(Maintenance::Io(vec![sync]));
        self.maintenance.push_back(Maintenance::MoveStart(offset));
        self.start_maintenance();
        Ok(Some(ticket))
    }

    /// The marker for `offset` is durable: the log starts there now, and older markers go
    /// (their removal need not be durable: recovery takes the highest marker).
    pub(super) fn move_start(&mut self, offset: Offset) {
        let stale: Vec<Offset> = self
            .start_markers
            .iter()
            .copied()
            .filter(|&marker| marker < offset)
            .collect();
        self.start_markers.retain(|&marker| marker >= offset);
        self.start_markers.push(offset);
        if !stale.is_empty() {
            let removes = stale
                .into_iter()
                .map(|marker| IoRequest::Remove {
                    id: self.io_id(),
                    file: FileRef::log_start(marker),
                })
                .collect();
            self.maintenance.push_front(Maintenance::Io(removes));
        }
        // Retention may have moved the log start further meanwhile.
        self.log_start = self.log_start.max(offset);
        self.producers.forget_below(self.log_start);
        self.durable_start = self.durable_start.max(offset);
        self.events
            .push_back(LogEvent::LogStartMoved { log_start: offset });
        self.waiters
            .start_durable(self.durable_start, &mut self.events);
        self.waiters.start_moved(self.log_start, &mut self.events);
    }

    pub(super) fn start_maintenance(&mut self) {
        while self.maintenance_outstanding == 0 {
            let requests = match self.maintenance.pop_front() {
                None => return,
                Some(Maintenance::MoveStart(offset)) => {
                    self.move_start(offset);
                    continue;
                }
                Some(Maintenance::ForgetProducersBelow(offset)) => {
                    self.producers.forget_below(offset);
                    continue;
                }
                Some(Maintenance::Io(requests)) => requests,
            };
            self.maintenance_outstanding = requests.len();
            for request in requests {
                self.outstanding
                    .insert(request.id(), (Owner::Maintenance, request.clone()));
                self.requests.push_back(request);
            }
        }
    }
}
