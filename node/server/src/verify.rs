//! Background verification of sealed segments (issue 17, defect 6). A start validates only
//! the ends of sealed segments, so damage inside one (a flipped bit on the media) would be
//! found only when a consumer reaches it, maybe months later, when the replica that could
//! repair it is gone. Each shard therefore reads every sealed segment of its partitions in
//! full after it starts, and again every `verify_interval_ms`, at no more than
//! `verify_bytes_per_second`, with one read of `VERIFY_READ_BYTES` in flight and one file open
//! at a time. What to check is `spate_core::verify` (pure); this module only reads and paces.
//!
//! Damage fences the partition exactly as a fetch that meets it would, recorded in its
//! `FENCED` marker so a restart keeps it (docs/reliability.md). A segment deleted by retention
//! while it is read, or a partition closed or deleted, is skipped.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spate_core::{FenceReason, SealedSegment, SegmentVerifier};

use crate::partition::Partition;
use crate::shard::Shard;

/// What one pass over a shard's partitions found.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassSummary {
    pub partitions: u64,
    pub segments: u64,
    pub bytes: u64,
    pub damaged: u64,
    /// Segments that could not be read (the error is logged).
    pub unreadable: u64,
}

/// Runs passes until shutdown; returns at once when verification is off (rate 0).
pub async fn run(shard: Rc<Shard>) {
    let rate = shard.config.verify_bytes_per_second;
    if rate == 0 {
        return;
    }
    let interval = Duration::from_millis(shard.config.verify_interval_ms);
    loop {
        let started = Instant::now();
        let summary = pass(&shard, rate).await;
        if stopping(&shard) {
            return;
        }
        let took = started.elapsed();
        if summary.damaged > 0 || summary.unreadable > 0 {
            tracing::error!(
                shard = shard.id.0,
                partitions = summary.partitions,
                segments = summary.segments,
                bytes = summary.bytes,
                damaged = summary.damaged,
                unreadable = summary.unreadable,
                seconds = took.as_secs_f64(),
                "verification of sealed segments found damage"
            );
        } else {
            tracing::info!(
                shard = shard.id.0,
                partitions = summary.partitions,
                segments = summary.segments,
                bytes = summary.bytes,
                seconds = took.as_secs_f64(),
                "sealed segments verified: no damage"
            );
        }
        glommio::timer::sleep(interval.saturating_sub(took)).await;
    }
}

fn stopping(shard: &Shard) -> bool {
    shard.shutdown.load(Ordering::Relaxed)
}

/// Time `bytes` take at `rate` bytes per second.
fn pace(bytes: u64, rate: u64) -> Duration {
    let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Verifies every sealed segment of every partition open on the shard now.
pub async fn pass(shard: &Rc<Shard>, rate: u64) -> PassSummary {
    let mut summary = PassSummary::default();
    for partition in shard.partition_list() {
        if stopping(shard) {
            break;
        }
        summary.partitions += 1;
        let segments = {
            let log = partition.log();
            if log.fenced().is_some() {
                Vec::new()
            } else {
                log.sealed_segments()
            }
        };
        for segment in segments {
            if stopping(shard) || !still_sealed(shard, &partition, segment) {
                break;
            }
            summary.segments += 1;
            match verify_segment(shard, &partition, segment, rate, &mut summary.bytes).await {
                Verified::Intact | Verified::Gone => {}
                Verified::Unreadable => summary.unreadable += 1,
                Verified::Damaged => {
                    summary.damaged += 1;
                    break;
                }
            }
        }
    }
    summary
}

enum Verified {
    Intact,
    Damaged,
    Unreadable,
    /// Deleted (retention, topic deletion) or its partition closed while it was read.
    Gone,
}

/// Whether the partition is still open, not fenced, and still holds `segment` as sealed.
fn still_sealed(shard: &Shard, partition: &Rc<Partition>, segment: SealedSegment) -> bool {
    shard.is_current(partition) && {
        let log = partition.log();
        log.fenced().is_none() && log.sealed_segments().contains(&segment)
    }
}

async fn verify_segment(
    shard: &Rc<Shard>,
    partition: &Rc<Partition>,
    segment: SealedSegment,
    rate: u64,
    bytes: &mut u64,
) -> Verified {
    let reader = partition.storage.borrow().reader();
    let file = match reader.open_for_pass(segment.file()).await {
        Ok(file) => file,
        Err(error) => {
            if !still_sealed(shard, partition, segment) {
                return Verified::Gone;
            }
            tracing::error!(
                topic = %partition.key.topic,
                partition = partition.key.partition,
                "cannot verify a sealed segment: {error}"
            );
            return Verified::Unreadable;
        }
    };
    let mut verifier = SegmentVerifier::new(segment);
    let mut outcome = Verified::Intact;
    while let Some(read) = verifier.next_read() {
        if stopping(shard) || !still_sealed(shard, partition, segment) {
            outcome = Verified::Gone;
            break;
        }
        let started = Instant::now();
        match file.read(read.position, read.len).await {
            Ok(data) => {
                *bytes += data.len() as u64;
                verifier.handle_read(read, &data);
            }
            Err(error) => {
                outcome = if still_sealed(shard, partition, segment) {
                    tracing::error!(
                        topic = %partition.key.topic,
                        partition = partition.key.partition,
                        "cannot verify a sealed segment: {error}"
                    );
                    Verified::Unreadable
                } else {
                    Verified::Gone
                };
                break;
            }
        }
        glommio::timer::sleep(pace(read.len, rate).saturating_sub(started.elapsed())).await;
    }
    file.close().await;
    if let Some(Err(damage)) = verifier.outcome() {
        if !still_sealed(shard, partition, segment) {
            return Verified::Gone;
        }
        tracing::error!(
            topic = %partition.key.topic,
            partition = partition.key.partition,
            "damage in a sealed segment, found by background verification: {damage}; \
             the partition is fenced (docs/reliability.md)"
        );
        let reason = FenceReason::Corruption {
            segment: damage.segment.clone(),
            position: damage.position,
            detail: format!("found by background verification: {}", damage.detail),
        };
        shard.fence_corrupt(partition, reason).await;
        return Verified::Damaged;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_follows_the_rate() {
        assert_eq!(pace(2 << 20, 2 << 20), Duration::from_secs(1));
        assert_eq!(
            pace(1 << 20, 16 << 20),
            Duration::from_millis(62_500) / 1000
        );
        assert_eq!(pace(0, 1), Duration::ZERO);
        // Never a division by zero.
        assert_eq!(pace(1, 0), Duration::from_secs(1));
    }
}
