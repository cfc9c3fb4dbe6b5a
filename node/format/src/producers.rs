//! Producer snapshots: the idempotent-producer state of a partition as of the end of one
//! segment, written when the segment is sealed (`<base>.producers`, next to its indexes) so
//! recovery replays only the segments after it. Fixed-size little-endian records, decoded in
//! place.
//!
//! Invariants of a decoded snapshot: its CRC covers every byte after the CRC field; it holds
//! at most [`PRODUCERS_PER_PARTITION_MAX`] entries with distinct, non-negative producer ids;
//! each entry has 1 to [`BATCHES_PER_PRODUCER`] batches, oldest first, with non-negative
//! sequences, at least one record each, and increasing offsets. Decoding never panics and
//! never allocates in proportion to a length it read. Specified in
//! `docs/format/producer-snapshot.md`.

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{I16, I32, I64, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::entry_file::{decode_entries, encode_entries, EntryFileError, ENTRY_FILE_HEADER_SIZE};
use crate::limits::OFFSET_MAX;

/// Batches remembered per producer: Kafka's rule (a producer has at most five requests in
/// flight per partition when idempotent, so a resend is one of its last five batches).
pub const BATCHES_PER_PRODUCER: usize = 5;

/// Producers whose state a partition keeps at once. At the limit, the producer idle longest
/// is forgotten to make room (its later resends are then taken as new batches). 1,024 ×
/// 136 bytes is 136 KiB per partition at most, in memory and in each snapshot.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 1024;

/// `b"SPPS"`: a producer snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"SPPS";
/// The snapshot format version this code writes and reads.
pub const SNAPSHOT_VERSION: u16 = 1;

/// One batch a producer wrote.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SnapshotBatch {
    pub base_offset: U64,
    /// The node's append time (ms since the Unix epoch), as stamped in the batch.
    pub append_time: I64,
    pub base_sequence: I32,
    pub record_count: U32,
}

/// One producer: its epoch and its last batches, oldest first (unused slots are zero).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SnapshotEntry {
    pub producer_id: I64,
    pub producer_epoch: I16,
    /// Batches used, 1 to [`BATCHES_PER_PRODUCER`].
    pub batch_count: u8,
    /// Must be 0.
    pub reserved0: u8,
    /// Must be 0.
    pub reserved1: U32,
    pub batches: [SnapshotBatch; BATCHES_PER_PRODUCER],
}

/// Bytes of the snapshot header.
pub const SNAPSHOT_HEADER_SIZE: usize = ENTRY_FILE_HEADER_SIZE;
/// Bytes of one entry.
pub const SNAPSHOT_ENTRY_SIZE: usize = 136;

const _: () = assert!(size_of::<SnapshotBatch>() == 24);
const _: () = assert!(size_of::<SnapshotEntry>() == SNAPSHOT_ENTRY_SIZE);
const _: () = assert!(offset_of!(SnapshotEntry, batches) == 16);
const _: () = assert!(BATCHES_PER_PRODUCER <= u8::MAX as usize);

/// Why a snapshot file cannot be used (recovery then replays more of the log instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is {len} bytes, not a header and whole entries")]
    Length { len: u64 },
    #[error("snapshot CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("not a producer snapshot (magic {found:?})")]
    Magic { found: [u8; 4] },
    #[error("snapshot version {found} is not known (this code reads {SNAPSHOT_VERSION})")]
    Version { found: u16 },
    #[error("snapshot holds {found} entries, the limit is {PRODUCERS_PER_PARTITION_MAX}")]
    TooManyEntries { found: u64 },
    #[error("snapshot entry {entry} is invalid: {detail}")]
    Entry { entry: u32, detail: &'static str },
}

impl From<EntryFileError> for SnapshotError {
    fn from(error: EntryFileError) -> Self {
        match error {
            EntryFileError::Length { len } => SnapshotError::Length { len },
            EntryFileError::Crc { stored, computed } => SnapshotError::Crc { stored, computed },
            EntryFileError::Magic { found } => SnapshotError::Magic { found },
            EntryFileError::Version { found } => SnapshotError::Version { found },
            EntryFileError::TooManyEntries { found } => SnapshotError::TooManyEntries { found },
        }
    }
}

/// The entries of a valid snapshot file.
pub fn decode_snapshot(bytes: &[u8]) -> Result<&[SnapshotEntry], SnapshotError> {
    let entries: &[SnapshotEntry] = decode_entries(
        bytes,
        SNAPSHOT_MAGIC,
        SNAPSHOT_VERSION,
        PRODUCERS_PER_PARTITION_MAX,
    )?;
    let mut ids: Vec<i64> = Vec::with_capacity(entries.len());
    for (number, entry) in entries.iter().enumerate() {
        let invalid = |detail| SnapshotError::Entry {
            entry: u32::try_from(number).unwrap_or(u32::MAX),
            detail,
        };
        validate_entry(entry).map_err(invalid)?;
        ids.push(entry.producer_id.get());
    }
    ids.sort_unstable();
    if ids.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(SnapshotError::Entry {
            entry: 0,
            detail: "a producer id appears twice",
        });
    }
    Ok(entries)
}

fn validate_entry(entry: &SnapshotEntry) -> Result<(), &'static str> {
    if entry.producer_id.get() < 0 || entry.producer_epoch.get() < 0 {
        return Err("negative producer id or epoch");
    }
    if entry.reserved0 != 0 || entry.reserved1.get() != 0 {
        return Err("reserved bytes are not zero");
    }
    let used = usize::from(entry.batch_count);
    if !(1..=BATCHES_PER_PRODUCER).contains(&used) {
        return Err("batch count outside 1..=5");
    }
    let mut next_free = 0u64;
    for batch in &entry.batches[..used] {
        let count = u64::from(batch.record_count.get());
        let base = batch.base_offset.get();
        if batch.base_sequence.get() < 0 || count == 0 {
            return Err("a batch has a negative sequence or no records");
        }
        if base < next_free || base > OFFSET_MAX || count - 1 > OFFSET_MAX - base {
            return Err("batch offsets do not increase or overflow");
        }
        next_free = base + count;
    }
    if entry.batches[used..]
        .iter()
        .any(|batch| batch.as_bytes().iter().any(|&byte| byte != 0))
    {
        return Err("an unused batch slot is not zero");
    }
    Ok(())
}

/// A snapshot file holding `entries` (valid ones: see the module invariants).
pub fn encode_snapshot(entries: &[SnapshotEntry]) -> Vec<u8> {
    encode_entries(
        entries,
        SNAPSHOT_MAGIC,
        SNAPSHOT_VERSION,
        PRODUCERS_PER_PARTITION_MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    fn entry(id: i64, batches: &[(u64, i32, u32)]) -> SnapshotEntry {
        let mut entry = SnapshotEntry::new_zeroed();
        entry.producer_id = I64::new(id);
        entry.producer_epoch = I16::new(3);
        entry.batch_count = u8::try_from(batches.len()).expect("few");
        for (slot, &(base, sequence, count)) in entry.batches.iter_mut().zip(batches) {
            *slot = SnapshotBatch {
                base_offset: U64::new(base),
                append_time: I64::new(1_700_000_000_000),
                base_sequence: I32::new(sequence),
                record_count: U32::new(count),
            };
        }
        entry
    }

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let entries = [entry(7, &[(0, 0, 2), (2, 2, 1)]), entry(9, &[(3, 40, 5)])];
        let bytes = encode_snapshot(&entries);
        assert_eq!(bytes.len(), 16 + 2 * 136);
        assert_eq!(decode_snapshot(&bytes), Ok(&entries[..]));
        assert_eq!(decode_snapshot(&encode_snapshot(&[])), Ok(&[][..]));
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x10;
            assert!(decode_snapshot(&damaged).is_err(), "flip at {position}");
        }
        assert!(decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_snapshot(&[]).is_err());
        let twice = encode_snapshot(&[entries[0], entries[0]]);
        assert!(decode_snapshot(&twice).is_err());
        let backwards = encode_snapshot(&[entry(7, &[(5, 0, 2), (2, 2, 1)])]);
        assert!(decode_snapshot(&backwards).is_err());
    }
}
