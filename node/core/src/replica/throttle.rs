//! A byte-rate limit on a replica that is catching up while its partition moves (a
//! reassignment's or a decommission's `--throttle`, docs/cluster.md "Moving partitions"):
//! the follower's fetcher takes the bytes each answer brought and waits as long as the rate
//! says before it fetches again. Idle time earns no credit, so a throttled replica never
//! bursts above its rate for longer than one answer.

use crate::Millis;

/// The pace of one replica's fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Bytes per second (at least 1).
    rate: u64,
    /// When the bytes taken so far are paid for.
    paid_until: Millis,
}

impl Throttle {
    /// A limit of `rate` bytes per second (0 is taken as 1).
    pub fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            paid_until: Millis(i64::MIN),
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Takes `bytes` fetched at `now`: how many milliseconds to wait before the next fetch.
    pub fn take(&mut self, now: Millis, bytes: u64) -> u64 {
        let start = self.paid_until.0.max(now.0);
        let cost = bytes.saturating_mul(1_000).div_ceil(self.rate);
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        self.paid_until = Millis(start.saturating_add(cost));
        u64::try_from(self.paid_until.0.saturating_sub(now.0)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_wait_as_long_as_their_bytes_take_at_the_rate() {
        let mut throttle = Throttle::new(1_000_000);
        // 1 MB at 1 MB/s: a second.
        assert_eq!(throttle.take(Millis(0), 1_000_000), 1_000);
        // Fetched again at once (no wait kept): the debt adds up.
        assert_eq!(throttle.take(Millis(0), 500_000), 1_500);
        // After the wait, the next answer costs only itself.
        assert_eq!(throttle.take(Millis(1_500), 1_000), 1);
        // Idle time earns no credit: no burst after a pause.
        assert_eq!(throttle.take(Millis(60_000), 2_000_000), 2_000);
        // Nothing fetched, nothing to wait; a zero rate is one byte per second.
        assert_eq!(Throttle::new(5).take(Millis(0), 0), 0);
        assert_eq!(Throttle::new(0).take(Millis(0), 1), 1_000);
        // Huge answers and times saturate rather than wrap.
        assert_eq!(Throttle::new(1).take(Millis(i64::MAX - 1), u64::MAX), 1);
        assert_eq!(
            Throttle::new(1).take(Millis(0), u64::MAX),
            i64::MAX.unsigned_abs()
        );
    }
}
