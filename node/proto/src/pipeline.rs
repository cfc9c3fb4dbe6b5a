//! `Pipeline`: the requests in flight on one pipelined connection, by correlation id — the
//! one implementation behind the SDK's QUIC session and the gateway's link to each shard.
//! Ids are handed out in order and never reused on a pipeline; answers come back in any
//! order and are matched to their waiter; once the connection breaks, `close` drops every
//! waiter (which fails its caller) and every later `register` is refused, so no caller can
//! wait on a connection that will never answer.
//!
//! Bounded by the caller: each waiter is registered for a request the caller is about to
//! queue on a bounded queue (frames in flight), and removed when its answer arrives, its
//! caller gives up (`cancel`), or the connection closes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// The waiters of one pipelined connection (`W`: whatever delivers an answer, typically the
/// sending half of a one-shot channel).
#[derive(Debug)]
pub struct Pipeline<W> {
    state: Mutex<State<W>>,
}

#[derive(Debug)]
struct State<W> {
    next_id: u64,
    waiters: HashMap<u64, W>,
    closed: bool,
}

impl<W> Default for Pipeline<W> {
    fn default() -> Self {
        Pipeline {
            state: Mutex::new(State {
                next_id: 1,
                waiters: HashMap::new(),
                closed: false,
            }),
        }
    }
}

impl<W> Pipeline<W> {
    /// A poisoned lock means a thread panicked holding it; the map itself is still
    /// consistent (every operation is a single insert or remove), so it is used as it is.
    fn state(&self) -> MutexGuard<'_, State<W>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `waiter` under a new correlation id; `None` once the connection closed.
    pub fn register(&self, waiter: W) -> Option<u64> {
        let mut state = self.state();
        if state.closed {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.waiters.insert(id, waiter);
        Some(id)
    }

    /// The waiter of the answer with this correlation id (`None` for an unknown id, or one
    /// whose caller gave up).
    pub fn take(&self, id: u64) -> Option<W> {
        self.state().waiters.remove(&id)
    }

    /// Forgets a waiter whose caller gave up (timed out, or its request could not be queued).
    pub fn cancel(&self, id: u64) {
        self.state().waiters.remove(&id);
    }

    /// The connection broke: drops every waiter and refuses new ones.
    pub fn close(&self) {
        let waiters = {
            let mut state = self.state();
            state.closed = true;
            std::mem::take(&mut state.waiters)
        };
        // Dropped outside the lock: a dropped waiter may wake its caller.
        drop(waiters);
    }

    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Requests waiting for their answer.
    pub fn in_flight(&self) -> usize {
        self.state().waiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_handed_out_in_order_answers_match_in_any_order_and_close_refuses() {
        let pipeline: Pipeline<&str> = Pipeline::default();
        let a = pipeline.register("a").unwrap();
        let b = pipeline.register("b").unwrap();
        let c = pipeline.register("c").unwrap();
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(pipeline.take(b), Some("b"));
        assert_eq!(pipeline.take(b), None, "an answer is delivered once");
        pipeline.cancel(a);
        assert_eq!(pipeline.take(a), None);
        assert_eq!(pipeline.in_flight(), 1);
        pipeline.close();
        assert!(pipeline.is_closed());
        assert_eq!(pipeline.in_flight(), 0);
        assert_eq!(pipeline.take(c), None);
        assert_eq!(pipeline.register("d"), None, "no waiter after the close");
    }
}
