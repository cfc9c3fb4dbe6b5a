//! Write rounds: when one is due (`schedule`), what it holds (`build_round`: prepare, write,
//! trim, sync, index and seal phases), and what each completed phase moves (`finish_phase`:
//! the written and durable watermarks and the acknowledgements behind them).

use std::collections::VecDeque;

use spate_format::Offset;

use crate::storage::{FileRef, IoId, IoRequest};
use crate::Millis;

use super::{take_round, FileState, LogEvent, Owner, PartitionLog, WriteBuffer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PhaseKind {
    Prepare,
    Write,
    Trim,
    Sync,
    Index,
    /// A directory sync making the index files durable: the segment is then sealed.
    Seal,
}

#[derive(Debug)]
pub(super) struct Phase {
    pub(super) kind: PhaseKind,
    pub(super) requests: Vec<IoRequest>,
}

/// The write round in flight.
#[derive(Debug)]
pub(super) struct Round {
    pub(super) segment: Offset,
    pub(super) phases: VecDeque<Phase>,
    pub(super) current: Option<PhaseKind>,
    pub(super) outstanding: usize,
    /// Data end the write phase covers.
    pub(super) write_end: u64,
    /// Data end the sync phase covers.
    pub(super) sync_end: u64,
    pub(super) syncs_dir: bool,
}

impl PartitionLog {
    /// Starts the next write round if none is in flight and one is due.
    pub(super) fn schedule(&mut self, now: Millis) {
        // Whatever an append deferred is decided now.
        self.deferred_schedule = None;
        if self.fenced.is_some() || self.round.is_some() {
            return;
        }
        let count = self.segments.len();
        let Some(index) = self
            .segments
            .iter()
            .enumerate()
            .position(|(i, s)| s.has_work(i + 1 == count))
        else {
            if self.durable == self.next_offset {
                self.unsynced_since = None;
                self.flush_requested = false;
            }
            return;
        };
        let active = index + 1 == count;
        // A wall clock stepped back (`now` before `since`) makes the flush due at once: an
        // early sync is harmless, one held back until the clock catches up is not.
        let flush_due = self.unsynced_since.is_some_and(|since| {
            now < since || now.0.saturating_sub(since.0) >= self.config.flush_interval_ms
        });
        let want_sync = !active
            || self.flush_requested
            || self.fsync_wanted > self.durable
            || self.unsynced_bytes() >= self.config.flush_bytes
            || flush_due;
        let segment = &self.segments[index];
        let unwritten = segment.size - segment.written_pos;
        let want_write = unwritten > 0
            && (want_sync
                || self.write_wanted > self.written
                || unwritten >= self.config.flush_bytes);
        if !want_sync && !want_write {
            return;
        }
        let round = self.build_round(index, want_write, want_sync);
        self.round = Some(round);
        self.start_phase();
    }

    pub(super) fn build_round(&mut self, index: usize, want_write: bool, want_sync: bool) -> Round {
        let active = index + 1 == self.segments.len();
        // Ids are taken from a copy of the counter while the segment is borrowed.
        let mut last_id = self.next_io_id;
        let mut next_id = || {
            last_id += 1;
            IoId(last_id)
        };
        let segment = &mut self.segments[index];
        let file = FileRef::log(segment.base);
        let mut phases = VecDeque::new();
        let mut write_end = segment.written_pos;
        if want_write && segment.size > segment.written_pos {
            let start = segment.buffer.start;
            let (data, end) = take_round(&mut segment.buffer, &mut self.tail);
            write_end = end;
            let needed = start + data.len();
            match segment.file {
                FileState::Missing => {
                    let allocate = self.config.allocation_for(0, needed);
                    segment.allocated = allocate;
                    segment.file = FileState::Created { dir_synced: false };
                    phases.push_back(Phase {
                        kind: PhaseKind::Prepare,
                        requests: vec![IoRequest::Create {
                            id: next_id(),
                            file,
                            allocate,
                        }],
                    });
                }
                FileState::Created { .. } if needed > segment.allocated => {
                    let len = self.config.allocation_for(segment.allocated, needed);
                    segment.allocated = len;
                    phases.push_back(Phase {
                        kind: PhaseKind::Prepare,
                        requests: vec![IoRequest::Allocate {
                            id: next_id(),
                            file,
                            len,
                        }],
                    });
                }
                FileState::Created { .. } => {}
            }
            phases.push_back(Phase {
                kind: PhaseKind::Write,
                requests: vec![IoRequest::Write {
                    id: next_id(),
                    file,
                    position: start,
                    data,
                }],
            });
        }
        let finishes = !active && write_end == segment.size;
        let mut sync_end = segment.durable_pos;
        let mut syncs_dir = false;
        if want_sync {
            if finishes {
                // A rolled segment loses its preallocated tail so its length is its data.
                phases.push_back(Phase {
                    kind: PhaseKind::Trim,
                    requests: vec![IoRequest::Truncate {
                        id: next_id(),
                        file,
                        len: segment.size,
                    }],
                });
                segment.allocated = segment.size;
            }
            let mut requests = vec![IoRequest::Sync {
                id: next_id(),
                file,
            }];
            if segment.file == (FileState::Created { dir_synced: false }) {
                requests.push(IoRequest::SyncDir { id: next_id() });
                syncs_dir = true;
            }
            phases.push_back(Phase {
                kind: PhaseKind::Sync,
                requests,
            });
            sync_end = write_end;
            if finishes {
                let requests = segment
                    .index_files()
                    .into_iter()
                    .map(|(file, data)| IoRequest::WriteFile {
                        id: next_id(),
                        file,
                        data,
                    })
                    .collect();
                phases.push_back(Phase {
                    kind: PhaseKind::Index,
                    requests,
                });
                phases.push_back(Phase {
                    kind: PhaseKind::Seal,
                    requests: vec![IoRequest::SyncDir { id: next_id() }],
                });
            }
        }
        let segment_base = segment.base;
        self.next_io_id = last_id;
        Round {
            segment: segment_base,
            phases,
            current: None,
            outstanding: 0,
            write_end,
            sync_end,
            syncs_dir,
        }
    }

    pub(super) fn start_phase(&mut self) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        let Some(phase) = round.phases.pop_front() else {
            self.round = None;
            return;
        };
        round.current = Some(phase.kind);
        round.outstanding = phase.requests.len();
        for request in phase.requests {
            self.outstanding
                .insert(request.id(), (Owner::Round, request.clone()));
            self.requests.push_back(request);
        }
    }

    pub(super) fn finish_phase(&mut self, now: Millis) {
        let round = self.round.as_ref().expect("a phase belongs to a round");
        let kind = round.current.expect("a started round has a phase");
        let (segment_base, write_end, sync_end, syncs_dir) = (
            round.segment,
            round.write_end,
            round.sync_end,
            round.syncs_dir,
        );
        let index = self
            .segments
            .iter()
            .position(|segment| segment.base == segment_base)
            .expect("a round's segment stays until the round ends");
        match kind {
            PhaseKind::Prepare | PhaseKind::Trim => {}
            PhaseKind::Write => {
                let segment = &mut self.segments[index];
                segment.written_pos = segment.written_pos.max(write_end);
                let reached = segment
                    .marks
                    .partition_point(|mark| mark.end <= segment.written_pos);
                if let Some(mark) = reached.checked_sub(1).map(|i| segment.marks[i]) {
                    if mark.next > self.written {
                        self.written = mark.next;
                        self.events
                            .push_back(LogEvent::Written { up_to: mark.next });
                        self.waiters.written(mark.next, &mut self.events);
                    }
                }
            }
            PhaseKind::Sync => {
                let segment = &mut self.segments[index];
                assert!(
                    sync_end <= segment.written_pos,
                    "a sync covers only written data"
                );
                segment.durable_pos = segment.durable_pos.max(sync_end);
                if syncs_dir {
                    segment.file = FileState::Created { dir_synced: true };
                }
                let mut durable = None;
                while segment
                    .marks
                    .front()
                    .is_some_and(|mark| mark.end <= segment.durable_pos)
                {
                    durable = segment.marks.pop_front().map(|mark| mark.next);
                }
                if let Some(up_to) = durable {
                    assert!(up_to <= self.written, "durable never passes written");
                    if up_to > self.durable {
                        let before = self.high_watermark();
                        self.durable = up_to;
                        self.events.push_back(LogEvent::Durable { up_to });
                        self.settle_visible(before);
                    }
                }
                let durable = self.durable;
                let raises = &mut self.segments[index].raises;
                while raises.get(1).is_some_and(|raise| raise.next <= durable) {
                    raises.pop_front();
                }
                if self.durable == self.next_offset {
                    self.unsynced_since = None;
                } else if self.unsynced_since.is_some() {
                    // Data appended during the round waits at most one more interval.
                    self.unsynced_since = Some(now);
                }
            }
            PhaseKind::Index => {}
            PhaseKind::Seal => {
                let segment = &mut self.segments[index];
                segment.finalized = true;
                // Written with the index files: memory is not held for every sealed segment.
                segment.producer_snapshot = None;
                segment.buffer = WriteBuffer::at(segment.size, &[]);
            }
        }
        self.start_phase();
    }
}
