//! The requests waiting on one partition's log: produce acknowledgements by durability level,
//! DeleteRecords waiting for their log start to be durable, and long-poll fetches parked
//! until the high watermark moves. The log resolves them as its watermarks move and emits
//! one event per waiter ([`LogEvent::Acked`], [`LogEvent::Refused`],
//! [`LogEvent::FetchReady`]); the shell only maps each [`Ticket`] to its reply channel.
//!
//! Invariants:
//! - a waiter is resolved exactly once (acknowledged, refused or woken), except a parked fetch
//!   the shell withdrew ([`Waiters::cancel_fetch`]), which is never resolved;
//! - the acknowledgements of one durability level are emitted in offset order, in the same
//!   step as the watermark move that covers them (`write` at [`LogEvent::Written`] or
//!   [`LogEvent::Durable`], `fsync` at `Durable`), never before it;
//! - a fenced log refuses every waiting acknowledgement and DeleteRecords, and wakes every
//!   parked fetch; it takes no new waiters;
//! - at most [`crate::LogConfig::fetch_waiters_max`] fetches are parked at once; a parked
//!   fetch is woken at the latest at its deadline. The number of acknowledgements waiting is
//!   bounded by the shell (connections × frames in flight), not here.

use std::collections::VecDeque;

use spate_format::Offset;

use crate::partition::LogEvent;
use crate::Millis;

/// Names one waiting request of a partition. Tickets of one log are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Why a fetch cannot be parked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchWaitError {
    #[error("{parked} fetches are already waiting on this partition (the limit)")]
    TooMany { parked: usize },
    /// Nothing more will become visible until the partition's recovery runs again: answer
    /// with what was found.
    #[error("the partition is fenced: nothing more will become visible")]
    Fenced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ParkedFetch {
    ticket: Ticket,
    /// The offset the fetch reads from: it is ready once the log start passes it.
    offset: Offset,
    /// The high watermark the fetch saw (a follower's: the written end): it is ready once
    /// that passes it.
    seen: Offset,
    deadline: Millis,
    /// A follower's fetch, which reads up to the written end, not the high watermark.
    replica: bool,
}

/// The waiters of one log (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    next_ticket: u64,
    /// `write` acknowledgements: the offset after each batch, in offset order.
    write: VecDeque<(Offset, Ticket)>,
    /// `fsync` acknowledgements, likewise.
    fsync: VecDeque<(Offset, Ticket)>,
    /// DeleteRecords: the log start each asked for.
    starts: Vec<(Offset, Ticket)>,
    fetches: Vec<ParkedFetch>,
}

/// Appends come in offset order; an idempotent producer's resend waits for an earlier batch,
/// so it goes before the later ones (after those for the same offset).
fn insert_in_offset_order(queue: &mut VecDeque<(Offset, Ticket)>, next: Offset, ticket: Ticket) {
    let at = queue.partition_point(|(offset, _)| *offset <= next);
    queue.insert(at, (next, ticket));
}

impl Waiters {
    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    /// A `write` acknowledgement due once everything below `next` is written.
    pub(crate) fn wait_written(&mut self, next: Offset) -> Ticket {
        let ticket = self.ticket();
        insert_in_offset_order(&mut self.write, next, ticket);
        ticket
    }

    /// An `fsync` acknowledgement due once everything below `next` is durable.
    pub(crate) fn wait_durable(&mut self, next: Offset) -> Ticket {
        let ticket = self.ticket();
        insert_in_offset_order(&mut self.fsync, next, ticket);
        ticket
    }

    /// A DeleteRecords answered once the log start is durably at or above `offset`.
    pub(crate) fn wait_start(&mut self, offset: Offset) -> Ticket {
        let ticket = self.ticket();
        self.starts.push((offset, ticket));
        ticket
    }

    /// Parks a fetch from `offset` that saw the high watermark at `seen` until the high
    /// watermark passes `seen`, the log start passes `offset`, the log is fenced, or
    /// `deadline`.
    pub(crate) fn park_fetch(
        &mut self,
        offset: Offset,
        seen: Offset,
        deadline: Millis,
        max: u32,
        replica: bool,
    ) -> Result<Ticket, FetchWaitError> {
        if self.fetches.len() >= max as usize {
            return Err(FetchWaitError::TooMany {
                parked: self.fetches.len(),
            });
        }
        let ticket = self.ticket();
        self.fetches.push(ParkedFetch {
            ticket,
            offset,
            seen,
            deadline,
            replica,
        });
        Ok(ticket)
    }

    /// A fetch that need not park (something it waits for happened already): woken at once.
    pub(crate) fn ready_now(&mut self, out: &mut VecDeque<LogEvent>) -> Ticket {
        let ticket = self.ticket();
        out.push_back(LogEvent::FetchReady { ticket });
        ticket
    }

    /// Withdraws a parked fetch (its requester went away); no event follows for it.
    pub(crate) fn cancel_fetch(&mut self, ticket: Ticket) {
        self.fetches.retain(|fetch| fetch.ticket != ticket);
    }

    /// Acknowledgements (produce and DeleteRecords) not yet resolved.
    pub(crate) fn acks_waiting(&self) -> usize {
        self.write.len() + self.fsync.len() + self.starts.len()
    }

    pub(crate) fn fetches_parked(&self) -> usize {
        self.fetches.len()
    }

    /// The earliest deadline of a parked fetch.
    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.fetches.iter().map(|fetch| fetch.deadline).min()
    }

    fn resolve(
        queue: &mut VecDeque<(Offset, Ticket)>,
        up_to: Offset,
        out: &mut VecDeque<LogEvent>,
    ) {
        while let Some(&(next, ticket)) = queue.front() {
            if next > up_to {
                break;
            }
            queue.pop_front();
            out.push_back(LogEvent::Acked { ticket });
        }
    }

    fn wake_fetches(&mut self, out: &mut VecDeque<LogEvent>, ready: impl Fn(&ParkedFetch) -> bool) {
        self.fetches.retain(|fetch| {
            if ready(fetch) {
                out.push_back(LogEvent::FetchReady {
                    ticket: fetch.ticket,
                });
                false
            } else {
                true
            }
        });
    }

    /// Everything below `up_to` is written: followers' parked fetches that saw less look
    /// again.
    pub(crate) fn written(&mut self, up_to: Offset, out: &mut VecDeque<LogEvent>) {
        Self::resolve(&mut self.write, up_to, out);
        self.wake_fetches(out, |fetch| fetch.replica && fetch.seen < up_to);
    }

    /// Everything below `up_to` is durable and visible: the high watermark is `up_to`.
    pub(crate) fn durable(&mut self, up_to: Offset, out: &mut VecDeque<LogEvent>) {
        Self::resolve(&mut self.write, up_to, out);
        Self::resolve(&mut self.fsync, up_to, out);
        self.wake_fetches(out, |fetch| !fetch.replica && fetch.seen < up_to);
    }

    /// The log start is durably at `durable_start`: the DeleteRecords that asked for no
    /// more are answered.
    pub(crate) fn start_durable(&mut self, durable_start: Offset, out: &mut VecDeque<LogEvent>) {
        self.starts.retain(|&(asked, ticket)| {
            if asked <= durable_start {
                out.push_back(LogEvent::Acked { ticket });
                false
            } else {
                true
            }
        });
    }

    /// The log start is now `log_start`: fetches below it look again (they are out of range).
    pub(crate) fn start_moved(&mut self, log_start: Offset, out: &mut VecDeque<LogEvent>) {
        self.wake_fetches(out, |fetch| fetch.offset < log_start);
    }

    /// The log is fenced: no waiting acknowledgement will ever come.
    pub(crate) fn fence(&mut self, out: &mut VecDeque<LogEvent>) {
        let mut refused: Vec<Ticket> = self
            .write
            .drain(..)
            .chain(self.fsync.drain(..))
            .chain(self.starts.drain(..))
            .map(|(_, ticket)| ticket)
            .collect();
        refused.sort_unstable();
        out.extend(
            refused
                .into_iter()
                .map(|ticket| LogEvent::Refused { ticket }),
        );
        self.wake_fetches(out, |_| true);
    }

    /// This replica no longer leads: the `fsync` acknowledgements, which wait for the
    /// replicated high watermark, will not come from it.
    pub(crate) fn deposed(&mut self, out: &mut VecDeque<LogEvent>) {
        out.extend(
            self.fsync
                .drain(..)
                .map(|(_, ticket)| LogEvent::Deposed { ticket }),
        );
    }

    /// Wakes the parked fetches whose deadline has come.
    pub(crate) fn tick(&mut self, now: Millis, out: &mut VecDeque<LogEvent>) {
        self.wake_fetches(out, |fetch| fetch.deadline <= now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(out: &mut VecDeque<LogEvent>) -> Vec<LogEvent> {
        out.drain(..).collect()
    }

    fn acked(ticket: Ticket) -> LogEvent {
        LogEvent::Acked { ticket }
    }

    fn ready(ticket: Ticket) -> LogEvent {
        LogEvent::FetchReady { ticket }
    }

    /// Acknowledgements come at their level's watermark, in offset order, each once; a resend
    /// waiting for an earlier batch goes before the later ones.
    #[test]
    fn acknowledgements_resolve_at_their_watermark_in_offset_order() {
        let mut waiters = Waiters::default();
        let mut out = VecDeque::new();
        let w5 = waiters.wait_written(Offset(5));
        let f5 = waiters.wait_durable(Offset(5));
        let w9 = waiters.wait_written(Offset(9));
        let w3 = waiters.wait_written(Offset(3));
        let w5b = waiters.wait_written(Offset(5));
        assert_eq!(waiters.acks_waiting(), 5);
        waiters.written(Offset(4), &mut out);
        assert_eq!(drain(&mut out), [acked(w3)], "only what ends at or below 4");
        waiters.written(Offset(5), &mut out);
        assert_eq!(drain(&mut out), [acked(w5), acked(w5b)], "ends at 5: due");
        // `fsync` acknowledgements wait for durability; durability also covers `write`.
        assert_eq!(waiters.acks_waiting(), 2);
        waiters.durable(Offset(9), &mut out);
        assert_eq!(drain(&mut out), [acked(w9), acked(f5)]);
        assert_eq!(waiters.acks_waiting(), 0);
        waiters.durable(Offset(20), &mut out);
        assert!(out.is_empty(), "each once");
    }

    /// A consumer's parked fetch wakes when the high watermark passes what it saw, a
    /// follower's when the written end does; neither for the other's watermark, nor at the
    /// same offset; both when the log start passes their offset, at their deadline, or on a
    /// fence.
    #[test]
    fn parked_fetches_wake_on_their_own_watermark_passing_what_they_saw() {
        let mut waiters = Waiters::default();
        let mut out = VecDeque::new();
        let consumer = waiters
            .park_fetch(Offset(10), Offset(10), Millis(1_000), 8, false)
            .unwrap();
        let follower = waiters
            .park_fetch(Offset(10), Offset(10), Millis(2_000), 8, true)
            .unwrap();
        assert_eq!(waiters.fetches_parked(), 2);
        assert_eq!(waiters.next_deadline(), Some(Millis(1_000)));
        waiters.written(Offset(10), &mut out);
        waiters.durable(Offset(10), &mut out);
        assert!(out.is_empty(), "nothing past what they saw");
        waiters.durable(Offset(11), &mut out);
        assert_eq!(
            drain(&mut out),
            [ready(consumer)],
            "the follower waits on writes"
        );
        waiters.written(Offset(11), &mut out);
        assert_eq!(drain(&mut out), [ready(follower)]);

        let consumer = waiters
            .park_fetch(Offset(11), Offset(11), Millis(1_000), 8, false)
            .unwrap();
        waiters.written(Offset(12), &mut out);
        assert!(out.is_empty(), "a consumer waits on durability");
        waiters.start_moved(Offset(11), &mut out);
        assert!(
            out.is_empty(),
            "the log start reached its offset, not passed it"
        );
        waiters.start_moved(Offset(12), &mut out);
        assert_eq!(drain(&mut out), [ready(consumer)]);

        let first = waiters
            .park_fetch(Offset(12), Offset(12), Millis(1_000), 2, false)
            .unwrap();
        let second = waiters
            .park_fetch(Offset(12), Offset(12), Millis(1_500), 2, true)
            .unwrap();
        assert_eq!(
            waiters.park_fetch(Offset(12), Offset(12), Millis(1_000), 2, false),
            Err(FetchWaitError::TooMany { parked: 2 })
        );
        waiters.tick(Millis(999), &mut out);
        assert!(out.is_empty());
        waiters.tick(Millis(1_000), &mut out);
        assert_eq!(drain(&mut out), [ready(first)], "at its deadline");
        waiters.cancel_fetch(second);
        assert_eq!(waiters.fetches_parked(), 0);
        assert_eq!(waiters.next_deadline(), None);
        waiters.fence(&mut out);
        assert!(out.is_empty(), "a withdrawn fetch is never resolved");
    }

    /// DeleteRecords are answered once the durable log start reaches what they asked for;
    /// a fence refuses every waiting acknowledgement, in ticket order, and wakes every fetch.
    #[test]
    fn delete_records_wait_for_the_durable_start_and_a_fence_refuses_everything() {
        let mut waiters = Waiters::default();
        let mut out = VecDeque::new();
        let low = waiters.wait_start(Offset(5));
        let high = waiters.wait_start(Offset(8));
        waiters.start_durable(Offset(4), &mut out);
        assert!(out.is_empty());
        waiters.start_durable(Offset(5), &mut out);
        assert_eq!(drain(&mut out), [acked(low)]);
        let fsync = waiters.wait_durable(Offset(3));
        let write = waiters.wait_written(Offset(3));
        let fetch = waiters
            .park_fetch(Offset(0), Offset(0), Millis(9_000), 8, false)
            .unwrap();
        assert_eq!(waiters.acks_waiting(), 3);
        waiters.fence(&mut out);
        let refused = |ticket| LogEvent::Refused { ticket };
        assert_eq!(
            drain(&mut out),
            [refused(high), refused(fsync), refused(write), ready(fetch)]
        );
        assert_eq!(waiters.acks_waiting(), 0);
        // Tickets are never reused.
        let next = waiters.ready_now(&mut out);
        assert!(next > fetch);
        assert_eq!(drain(&mut out), [ready(next)]);
    }
}
