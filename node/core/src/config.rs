//! Per-partition settings of the log and the core's fixed limits.

use spate_format::limits::{BATCH_SIZE_MAX, SECTOR_SIZE, SEGMENT_SIZE_DEFAULT, SEGMENT_SIZE_MAX};

use crate::storage::align_up;

/// Most bytes one write round writes. Only one round is in flight per partition, so after a
/// crash everything that was written but not synced lies within this many bytes (plus the
/// rewritten partial sector) of the last durable point: recovery's torn-tail window. A
/// constant, not a setting, because recovery must know it whatever the configuration was.
pub const ROUND_BYTES_MAX: u32 = 8 << 20;

/// The torn-tail window: bytes after the start of the sector holding the damage within which
/// non-zero data may lie for the damage to count as a torn tail.
pub const TORN_WINDOW_BYTES: u64 = ROUND_BYTES_MAX as u64 + SECTOR_SIZE as u64;

/// Most bytes a partition buffers that are not yet written; appends beyond it are refused
/// with back-pressure, so a partition's memory is bounded whatever producers do.
pub const PARTITION_BUFFER_BYTES_MAX: u64 = 64 << 20;

/// Bytes recovery reads at a time when it scans a segment.
pub const RECOVERY_READ_BYTES: u64 = 4 << 20;

const _: () = assert!(ROUND_BYTES_MAX.is_multiple_of(SECTOR_SIZE));
const _: () = assert!(ROUND_BYTES_MAX >= 2 * BATCH_SIZE_MAX);
const _: () = assert!(PARTITION_BUFFER_BYTES_MAX >= ROUND_BYTES_MAX as u64);
const _: () = assert!(RECOVERY_READ_BYTES >= 2 * BATCH_SIZE_MAX as u64);
const _: () = assert!(RECOVERY_READ_BYTES.is_multiple_of(SECTOR_SIZE as u64));

/// First preallocation of a segment file. Small, so that many partitions with little data
/// take little disk (10,000 one-record partitions: 640 MiB) and recovery has little to read;
/// growth is geometric, so a busy partition still extends its file only a few times.
pub const PREALLOCATE_BYTES_DEFAULT: u64 = 64 << 10;

/// A fetch's disk read covers at least this much after the batch holding its offset (more
/// when the fetch asks for more), unless configured otherwise: a small fetch reads ahead for
/// the ones that follow (`PartitionLog::handle_read` keeps the rest).
pub const FETCH_READ_BYTES_DEFAULT: u32 = 512 << 10;

/// Long-poll fetches parked on one partition at once, unless configured otherwise.
pub const FETCH_WAITERS_DEFAULT: u32 = 1024;

/// How long an idle idempotent producer is remembered, unless configured otherwise: 7 days.
pub const PRODUCER_EXPIRY_MS_DEFAULT: i64 = 7 * 24 * 3600 * 1000;

/// How a partition's log behaves. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before one grows past this many bytes.
    pub segment_bytes: u32,
    /// Roll to a new segment once the active one is this old (ms) and not empty.
    pub segment_ms: i64,
    /// Delete whole segments whose newest record is older than this (ms); `None`: never.
    pub retention_ms: Option<i64>,
    /// Delete the oldest segments while the log is larger than this; `None`: never.
    pub retention_bytes: Option<u64>,
    /// Data acknowledged with `none` or `write` is synced within this many ms.
    pub flush_interval_ms: i64,
    /// ... or as soon as this many bytes are waiting for a sync.
    pub flush_bytes: u64,
    /// A new segment file is preallocated with this many bytes; each extension doubles the
    /// file up to the segment size (see [`LogConfig::allocation_for`]).
    pub preallocate_bytes: u64,
    /// Recently written bytes of the active segment kept in memory to serve fetches.
    pub tail_cache_bytes: u64,
    /// A fetch's disk read covers at least this much after the batch holding its offset.
    pub fetch_read_bytes: u32,
    /// Long-poll fetches parked on the log at once (each holds a reply channel in the shell).
    pub fetch_waiters_max: u32,
    /// An idempotent producer that appended nothing for this long (ms) is forgotten: its
    /// resends are no longer recognised (Kafka's `transactional.id.expiration.ms`, 7 days).
    pub producer_expiry_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_SIZE_DEFAULT,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            flush_interval_ms: 10,
            flush_bytes: 1 << 20,
            preallocate_bytes: PREALLOCATE_BYTES_DEFAULT,
            tail_cache_bytes: 4 << 20,
            fetch_read_bytes: FETCH_READ_BYTES_DEFAULT,
            fetch_waiters_max: FETCH_WAITERS_DEFAULT,
            producer_expiry_ms: PRODUCER_EXPIRY_MS_DEFAULT,
        }
    }
}

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {field}: {value} (valid: {valid})")]
pub struct ConfigError {
    pub field: &'static str,
    pub value: String,
    pub valid: &'static str,
}

impl LogConfig {
    /// The length to extend a segment file to (fallocate) when it has `allocated` bytes and
    /// must hold `needed`: double what it has, starting at `preallocate_bytes`, capped at the
    /// segment size (sector-aligned) unless more is needed. So the space allocated beyond the
    /// data is below the data itself plus `preallocate_bytes`, and a file is extended about
    /// log2(segment size / preallocation) times.
    pub fn allocation_for(&self, allocated: u64, needed: u64) -> u64 {
        let cap = align_up(u64::from(self.segment_bytes)).max(self.preallocate_bytes);
        // Aligned, also when recovery left the file at an unaligned length (a torn tail cut).
        let grown = align_up(allocated)
            .saturating_mul(2)
            .max(self.preallocate_bytes)
            .min(cap);
        grown.max(align_up(needed))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        use spate_format::limits::SEGMENT_SIZE_MIN;
        let error = |field, value: String, valid| {
            Err(ConfigError {
                field,
                value,
                valid,
            })
        };
        if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX).contains(&self.segment_bytes) {
            return error(
                "segment_bytes",
                self.segment_bytes.to_string(),
                "64 KiB to 2 GiB",
            );
        }
        if self.segment_ms <= 0 {
            return error("segment_ms", self.segment_ms.to_string(), "> 0");
        }
        if self.retention_ms.is_some_and(|ms| ms <= 0) {
            return error(
                "retention_ms",
                format!("{:?}", self.retention_ms),
                "> 0 or unlimited",
            );
        }
        if self.flush_interval_ms <= 0 {
            return error(
                "flush_interval_ms",
                self.flush_interval_ms.to_string(),
                "> 0",
            );
        }
        if self.producer_expiry_ms <= 0 {
            return error(
                "producer_expiry_ms",
                self.producer_expiry_ms.to_string(),
                "> 0",
            );
        }
        if self.flush_bytes == 0 {
            return error("flush_bytes", "0".into(), "> 0");
        }
        let sector = u64::from(SECTOR_SIZE);
        if self.preallocate_bytes < sector || !self.preallocate_bytes.is_multiple_of(sector) {
            return error(
                "preallocate_bytes",
                self.preallocate_bytes.to_string(),
                "a positive multiple of 4096",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocation_doubles_from_the_first_chunk_up_to_the_segment_size() {
        let config = LogConfig {
            segment_bytes: 1 << 20,
            preallocate_bytes: 64 << 10,
            ..LogConfig::default()
        };
        assert_eq!(config.allocation_for(0, 100), 64 << 10);
        assert_eq!(config.allocation_for(0, 100 << 10), 100 << 10);
        assert_eq!(config.allocation_for(64 << 10, 65 << 10), 128 << 10);
        assert_eq!(config.allocation_for(512 << 10, 513 << 10), 1 << 20);
        // Capped at the segment size, unless a batch past the limit needs more.
        assert_eq!(
            config.allocation_for(1 << 20, (1 << 20) + 1),
            (1 << 20) + 4096
        );
        let mut extensions = 0;
        let mut allocated = 0;
        while allocated < 1 << 20 {
            allocated = config.allocation_for(allocated, allocated + 1);
            extensions += 1;
        }
        assert_eq!(extensions, 5, "64 KiB, 128, 256, 512, 1024");
    }
}
