//! Byte budgets for request frames being received: a global one for the whole gateway and
//! one per connection. A stream reserves the bytes of the frame it is about to read (its
//! 16-byte header first, then the whole frame once the header says how long it is) before
//! it reads them from QUIC, so the bytes the gateway buffers never exceed what is reserved;
//! while a reservation cannot be granted the stream does not read, its data stays in QUIC's
//! receive window and flow control pushes back on the client.
//!
//! Invariants: the sum of all `Charge`s is the global `used`, and the sum of a connection's
//! `Charge`s is its `held`; both only change under the one budget lock, and a `Charge`
//! gives its bytes back when dropped (stream or connection ended, frame forwarded).
//!
//! The admission rule is pure ([`admit`]); the async waiting around it is a thin shell.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The last `1 / BUDGET_RESERVE_DIVISOR` of the global budget is granted only to connections
/// that hold at most one frame's worth: when stalled frames of other connections hold the
/// rest, a client whose frames complete is still served (one frame at a time) instead of
/// waiting for the stall timeout to free memory.
pub const BUDGET_RESERVE_DIVISOR: u64 = 4;

/// At most one "budget spent" warning per this interval: an attack must not flood the log.
pub const EXHAUSTED_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The limits one budget enforces, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// All partially received frames of all connections.
    pub global: u64,
    /// All partially received frames of one connection.
    pub connection: u64,
    /// The largest frame: what a connection may hold when it draws on the reserve.
    pub frame: u64,
}

impl Limits {
    /// The part of the global budget kept for connections holding at most one frame.
    pub fn reserve(&self) -> u64 {
        self.global / BUDGET_RESERVE_DIVISOR
    }
}

/// Why a reservation cannot be granted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The connection's own budget is spent: wait until one of its frames is released.
    Connection,
    /// The global budget (or, for a connection holding more than one frame, its shared
    /// part) is spent: wait until any frame is released.
    Global,
}

/// Whether a connection holding `held` bytes may reserve `bytes` more while the gateway
/// holds `used` in all. Pure: the whole admission policy is here.
pub fn admit(limits: &Limits, used: u64, held: u64, bytes: u64) -> Result<(), Wait> {
    let held_after = held.saturating_add(bytes);
    let used_after = used.saturating_add(bytes);
    if held_after > limits.connection {
        return Err(Wait::Connection);
    }
    if used_after > limits.global {
        return Err(Wait::Global);
    }
    let shared = limits.global - limits.reserve();
    if used_after > shared && held_after > limits.frame {
        return Err(Wait::Global);
    }
    Ok(())
}

#[derive(Debug)]
struct Counts {
    used: u64,
}

/// The gateway-wide budget.
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    counts: Mutex<Counts>,
    /// Woken when bytes are given back anywhere.
    released: Notify,
    started: Instant,
    /// Milliseconds since `started` of the last "budget spent" warning, plus one (0: none).
    warned_at: AtomicU64,
}

impl Budget {
    pub fn new(limits: Limits) -> Arc<Budget> {
        assert!(limits.frame <= limits.connection && limits.connection <= limits.global);
        assert!(limits.frame <= limits.reserve());
        Arc::new(Budget {
            limits,
            counts: Mutex::new(Counts { used: 0 }),
            released: Notify::new(),
            started: Instant::now(),
            warned_at: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes reserved by all connections now.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // The lock guards plain integers that are always consistent between statements, so
        // a poisoned lock (impossible with panic = "abort") holds valid counts.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A budget for one new connection.
    pub fn connection(self: &Arc<Self>) -> Arc<ConnectionBudget> {
        Arc::new(ConnectionBudget {
            global: self.clone(),
            held: AtomicU64::new(0),
            released: Notify::new(),
            turn: tokio::sync::Mutex::new(()),
        })
    }

    fn warn_exhausted(&self, used: u64) {
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.warned_at.load(Ordering::Relaxed);
        let interval = u64::try_from(EXHAUSTED_WARNING_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < interval {
            return;
        }
        if self
            .warned_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                used,
                budget = self.limits.global,
                "buffer budget spent: partially received frames hold {used} of {} bytes; \
                 streams wait before reading more (the last {} bytes serve only connections \
                 holding at most one frame; stalled frames are reset after the frame stall \
                 timeout)",
                self.limits.global,
                self.limits.reserve()
            );
        }
    }
}

/// One connection's budget, drawing on the global one.
#[derive(Debug)]
pub struct ConnectionBudget {
    global: Arc<Budget>,
    /// Changed only under the global lock.
    held: AtomicU64,
    /// Woken when this connection gives bytes back.
    released: Notify,
    /// One stream of a connection waits for budget at a time (in arrival order), so a
    /// release wakes at most one waiter per connection, not every stalled stream.
    turn: tokio::sync::Mutex<()>,
}

impl ConnectionBudget {
    /// Bytes this connection holds now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// An empty charge for one stream.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            connection: self.clone(),
            bytes: 0,
        }
    }

    fn try_grant(&self, bytes: u64) -> Result<(), Wait> {
        let mut counts = self.global.lock();
        let held = self.held.load(Ordering::Relaxed);
        admit(&self.global.limits, counts.used, held, bytes)?;
        counts.used += bytes;
        self.held.store(held + bytes, Ordering::Relaxed);
        Ok(())
    }

    fn give_back(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        {
            let mut counts = self.global.lock();
            let held = self.held.load(Ordering::Relaxed);
            assert!(
                held >= bytes && counts.used >= bytes,
                "budget released twice"
            );
            counts.used -= bytes;
            self.held.store(held - bytes, Ordering::Relaxed);
        }
        self.released.notify_waiters();
        self.global.released.notify_waiters();
    }
}

/// Bytes reserved by one stream; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    connection: Arc<ConnectionBudget>,
    bytes: u64,
}

impl Charge {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows the reservation to `total` bytes, waiting until the budgets allow it.
    /// Cancel-safe: dropping the future reserves nothing.
    pub async fn grow_to(&mut self, total: u64) {
        let Some(more) = total.checked_sub(self.bytes).filter(|more| *more > 0) else {
            return;
        };
        let connection = &self.connection;
        let _turn = connection.turn.lock().await;
        loop {
            // Registered before the check, so a release between the check and the wait is
            // not missed.
            let mut own = pin!(connection.released.notified());
            let mut any = pin!(connection.global.released.notified());
            own.as_mut().enable();
            any.as_mut().enable();
            match connection.try_grant(more) {
                Ok(()) => {
                    self.bytes = total;
                    return;
                }
                Err(Wait::Connection) => own.await,
                Err(Wait::Global) => {
                    connection.global.warn_exhausted(connection.global.used());
                    any.await;
                }
            }
        }
    }

    /// Gives back `bytes` of the reservation (a frame was forwarded).
    pub fn release(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.connection.give_back(bytes);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let bytes = self.bytes;
        self.bytes = 0;
        self.connection.give_back(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        global: 400,
        connection: 200,
        frame: 100,
    };

    #[test]
    fn a_connection_never_exceeds_its_own_budget() {
        assert_eq!(admit(&LIMITS, 0, 150, 50), Ok(()));
        assert_eq!(admit(&LIMITS, 0, 150, 51), Err(Wait::Connection));
    }

    #[test]
    fn the_reserve_serves_only_connections_holding_one_frame_at_most() {
        // Shared part: 300. A big holder stops there; a small one may go on to 400.
        assert_eq!(admit(&LIMITS, 250, 150, 50), Ok(()));
        assert_eq!(admit(&LIMITS, 300, 150, 10), Err(Wait::Global));
        assert_eq!(admit(&LIMITS, 300, 0, 100), Ok(()));
        assert_eq!(admit(&LIMITS, 300, 40, 60), Ok(()));
        assert_eq!(admit(&LIMITS, 300, 40, 61), Err(Wait::Global));
        assert_eq!(admit(&LIMITS, 350, 0, 51), Err(Wait::Global));
    }

    #[test]
    fn a_largest_frame_always_fits_an_idle_connection_in_an_idle_gateway() {
        assert_eq!(admit(&LIMITS, 0, 0, LIMITS.frame), Ok(()));
        assert!(LIMITS.frame <= LIMITS.reserve());
    }

    #[tokio::test]
    async fn charges_are_given_back_when_dropped_and_waiters_wake() {
        let budget = Budget::new(LIMITS);
        let first = budget.connection();
        let second = budget.connection();
        let mut a = first.charge();
        a.grow_to(200).await;
        let mut b = second.charge();
        b.grow_to(100).await;
        assert_eq!(budget.used(), 300);
        // The first connection is at its own limit: a second stream of it waits.
        let mut c = first.charge();
        let waiting = tokio::spawn(async move {
            c.grow_to(50).await;
            c
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        a.release(100);
        let c = waiting.await.unwrap();
        assert_eq!(c.bytes(), 50);
        assert_eq!(first.held(), 150);
        drop((a, b, c));
        assert_eq!(budget.used(), 0);
        assert_eq!(first.held(), 0);
        assert_eq!(second.held(), 0);
    }
}
