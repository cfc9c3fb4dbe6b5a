//! The connections of one shard: when each last received bytes, whether it has requests in
//! flight, and a way to close it from outside. Used so that silent connections cannot hold the
//! connection limit forever: when the limit is reached, the connection that has been silent
//! longest (with nothing in flight) is closed to make room, so a reconnecting gateway always
//! gets in (until the link is authenticated, anyone who reaches the port can connect). Refusals
//! are logged at most once per `REFUSAL_LOG_INTERVAL` with their count.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

/// A connection silent for less than this is never closed to make room: a burst of new
/// connections cannot push out connections that are in use.
pub const EVICTION_SILENCE_MIN: Duration = Duration::from_secs(1);

/// Refused connections are logged at most this often (with how many there were).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Entry {
    last_read: Instant,
    in_flight: Rc<Cell<u32>>,
    close: LocalSender<()>,
}

#[derive(Debug, Default)]
pub struct Connections {
    next_id: Cell<u64>,
    open: RefCell<BTreeMap<u64, Entry>>,
    refused_since_log: Cell<u64>,
    last_refusal_log: Cell<Option<Instant>>,
}

/// A registered connection; unregisters itself when dropped.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    connections: Rc<Connections>,
    /// Requests of this connection being served.
    pub in_flight: Rc<Cell<u32>>,
    /// Receives once when the shard closes this connection to make room.
    pub closed: LocalReceiver<()>,
}

impl Registration {
    /// The connection's number on its shard, in the order the shard accepted connections
    /// (a replica's fetches over an older connection than its newest are stale).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records that bytes arrived.
    pub fn touch(&self) {
        if let Some(entry) = self.connections.open.borrow_mut().get_mut(&self.id) {
            entry.last_read = Instant::now();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.open.borrow_mut().remove(&self.id);
    }
}

impl Connections {
    pub fn len(&self) -> usize {
        self.open.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn register(self: &Rc<Self>) -> Registration {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (close, closed) = local_channel::new_bounded(1);
        let in_flight = Rc::new(Cell::new(0));
        self.open.borrow_mut().insert(
            id,
            Entry {
                last_read: Instant::now(),
                in_flight: in_flight.clone(),
                close,
            },
        );
        Registration {
            id,
            connections: self.clone(),
            in_flight,
            closed,
        }
    }

    /// Closes the connection silent longest (at least `EVICTION_SILENCE_MIN`, nothing in
    /// flight); returns whether one was found. It unregisters when its task ends.
    pub fn evict_longest_silent(&self) -> bool {
        let mut open = self.open.borrow_mut();
        let now = Instant::now();
        let victim = open
            .iter()
            .filter(|(_, entry)| {
                entry.in_flight.get() == 0
                    && now.duration_since(entry.last_read) >= EVICTION_SILENCE_MIN
            })
            .min_by_key(|(_, entry)| entry.last_read)
            .map(|(id, _)| *id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(entry) => {
                let _ = entry.close.try_send(());
                true
            }
            None => false,
        }
    }

    /// Closes every connection (the shard is stopping); each unregisters when its task ends.
    pub fn close_all(&self) {
        for entry in self.open.borrow().values() {
            let _ = entry.close.try_send(());
        }
    }

    /// Counts a refused connection; returns how many to log now (0: stay quiet).
    pub fn refused(&self) -> u64 {
        let count = self.refused_since_log.get() + 1;
        let now = Instant::now();
        let due = self
            .last_refusal_log
            .get()
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_INTERVAL);
        if due {
            self.refused_since_log.set(0);
            self.last_refusal_log.set(Some(now));
            count
        } else {
            self.refused_since_log.set(count);
            0
        }
    }
}
