//! Sparse offset-index and time-index entries of a segment: fixed-size little-endian records,
//! decoded in place, with binary-search lookups.
//!
//! Invariants of a decoded index: its length is a whole number of entries, at most
//! `INDEX_ENTRIES_MAX`; offset-index entries strictly increase in relative offset and in
//! position; time-index entries strictly increase in timestamp and in relative offset.
//! Indexes are caches of the log: recovery validates them against the segment and rebuilds
//! them on any mismatch. Specified in `docs/format/index.md`.

use core::mem::size_of;

use zerocopy::little_endian::{I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::IndexError;
use crate::limits::{INDEX_ENTRIES_MAX, OFFSET_INDEX_ENTRY_SIZE, TIME_INDEX_ENTRY_SIZE};

/// One offset-index entry: the batch whose first record has offset
/// `segment base + relative_offset` starts at byte `position` of the segment file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct OffsetIndexEntry {
    pub relative_offset: U32,
    pub position: U32,
}

/// One time-index entry: `timestamp` is the largest record timestamp of the segment up to and
/// including the batch whose first record has offset `segment base + relative_offset`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TimeIndexEntry {
    pub timestamp: I64,
    pub relative_offset: U32,
}

const _: () = assert!(size_of::<OffsetIndexEntry>() == OFFSET_INDEX_ENTRY_SIZE as usize);
const _: () = assert!(size_of::<TimeIndexEntry>() == TIME_INDEX_ENTRY_SIZE as usize);

impl OffsetIndexEntry {
    pub fn new(relative_offset: u32, position: u32) -> Self {
        OffsetIndexEntry {
            relative_offset: U32::new(relative_offset),
            position: U32::new(position),
        }
    }
}

impl TimeIndexEntry {
    pub fn new(timestamp: i64, relative_offset: u32) -> Self {
        TimeIndexEntry {
            timestamp: I64::new(timestamp),
            relative_offset: U32::new(relative_offset),
        }
    }
}

fn check_length(length: usize, entry_size: u32) -> Result<(), IndexError> {
    let length_u64 = u64::try_from(length).unwrap_or(u64::MAX);
    if !length.is_multiple_of(entry_size as usize) {
        return Err(IndexError::PartialEntry {
            length: length_u64,
            entry_size,
        });
    }
    let count = length_u64 / u64::from(entry_size);
    if count > u64::from(INDEX_ENTRIES_MAX) {
        return Err(IndexError::TooManyEntries {
            count,
            max: INDEX_ENTRIES_MAX,
        });
    }
    Ok(())
}

fn entry_number(index: usize) -> u32 {
    // Bounded by INDEX_ENTRIES_MAX, which is a u32.
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// Decodes an offset index in place, checking its length and that entries strictly increase.
pub fn decode_offset_index(bytes: &[u8]) -> Result<&[OffsetIndexEntry], IndexError> {
    check_length(bytes.len(), OFFSET_INDEX_ENTRY_SIZE)?;
    let Ok(entries) = <[OffsetIndexEntry]>::ref_from_bytes(bytes) else {
        // The length is a whole number of entries and the alignment is 1: cannot happen.
        return Err(IndexError::PartialEntry {
            length: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            entry_size: OFFSET_INDEX_ENTRY_SIZE,
        });
    };
    for (index, pair) in entries.windows(2).enumerate() {
        let (previous, next) = (&pair[0], &pair[1]);
        if next.relative_offset.get() <= previous.relative_offset.get() {
            return Err(IndexError::NotIncreasing {
                index: entry_number(index + 1),
                previous: previous.relative_offset.get().into(),
                found: next.relative_offset.get().into(),
            });
        }
        if next.position.get() <= previous.position.get() {
            return Err(IndexError::NotIncreasing {
                index: entry_number(index + 1),
                previous: previous.position.get().into(),
                found: next.position.get().into(),
            });
        }
    }
    Ok(entries)
}

/// Decodes a time index in place, checking its length and that entries strictly increase.
pub fn decode_time_index(bytes: &[u8]) -> Result<&[TimeIndexEntry], IndexError> {
    check_length(bytes.len(), TIME_INDEX_ENTRY_SIZE)?;
    let Ok(entries) = <[TimeIndexEntry]>::ref_from_bytes(bytes) else {
        return Err(IndexError::PartialEntry {
            length: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            entry_size: TIME_INDEX_ENTRY_SIZE,
        });
    };
    for (index, pair) in entries.windows(2).enumerate() {
        let (previous, next) = (&pair[0], &pair[1]);
        if next.timestamp.get() <= previous.timestamp.get() {
            return Err(IndexError::NotIncreasing {
                index: entry_number(index + 1),
                previous: previous.timestamp.get(),
                found: next.timestamp.get(),
            });
        }
        if next.relative_offset.get() <= previous.relative_offset.get() {
            return Err(IndexError::NotIncreasing {
                index: entry_number(index + 1),
                previous: previous.relative_offset.get().into(),
                found: next.relative_offset.get().into(),
            });
        }
    }
    Ok(entries)
}

/// Encodes entries for an index file (the file is exactly the entries back to back).
pub fn encode_index<T: IntoBytes + Immutable>(entries: &[T]) -> &[u8] {
    entries.as_bytes()
}

/// The entry to start a scan from for `relative_offset`: the last entry whose relative offset
/// is at most it, or `None` when the scan starts at the segment's first byte.
pub fn lookup_offset(
    entries: &[OffsetIndexEntry],
    relative_offset: u32,
) -> Option<&OffsetIndexEntry> {
    let after = entries.partition_point(|entry| entry.relative_offset.get() <= relative_offset);
    after.checked_sub(1).map(|index| &entries[index])
}

/// The entry to start a scan from for the first record with timestamp at least `timestamp`:
/// the last entry whose timestamp is below it (no batch before that entry can match), or
/// `None` when the scan starts at the segment's first byte.
pub fn lookup_time(entries: &[TimeIndexEntry], timestamp: i64) -> Option<&TimeIndexEntry> {
    let after = entries.partition_point(|entry| entry.timestamp.get() < timestamp);
    after.checked_sub(1).map(|index| &entries[index])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_offset_index_bytes_match_the_doc() {
        // The example in docs/format/index.md.
        let entries = [OffsetIndexEntry::new(0, 0), OffsetIndexEntry::new(57, 4168)];
        let bytes = encode_index(&entries);
        assert_eq!(hex(bytes), "00000000 00000000 39000000 48100000");
        assert_eq!(decode_offset_index(bytes).unwrap(), &entries);
    }

    #[test]
    fn golden_time_index_bytes_match_the_doc() {
        let entries = [TimeIndexEntry::new(1_767_225_600_000, 0)];
        let bytes = encode_index(&entries);
        assert_eq!(hex(bytes), "00a8da76 9b010000 00000000");
        assert_eq!(decode_time_index(bytes).unwrap(), &entries);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes
            .chunks(4)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn rejects_partial_and_non_increasing_entries() {
        assert_eq!(
            decode_offset_index(&[0; 9]),
            Err(IndexError::PartialEntry {
                length: 9,
                entry_size: 8
            })
        );
        let entries = [OffsetIndexEntry::new(5, 100), OffsetIndexEntry::new(5, 200)];
        assert_eq!(
            decode_offset_index(encode_index(&entries)),
            Err(IndexError::NotIncreasing {
                index: 1,
                previous: 5,
                found: 5
            })
        );
        let entries = [OffsetIndexEntry::new(5, 100), OffsetIndexEntry::new(6, 100)];
        assert!(decode_offset_index(encode_index(&entries)).is_err());
        let entries = [TimeIndexEntry::new(10, 1), TimeIndexEntry::new(9, 2)];
        assert_eq!(
            decode_time_index(encode_index(&entries)),
            Err(IndexError::NotIncreasing {
                index: 1,
                previous: 10,
                found: 9
            })
        );
        assert!(decode_time_index(&[0; 13]).is_err());
    }

    #[test]
    fn lookups_find_the_scan_start() {
        let entries = [
            OffsetIndexEntry::new(10, 4096),
            OffsetIndexEntry::new(20, 8192),
            OffsetIndexEntry::new(30, 12288),
        ];
        assert_eq!(lookup_offset(&entries, 0), None);
        assert_eq!(lookup_offset(&entries, 9), None);
        assert_eq!(lookup_offset(&entries, 10), Some(&entries[0]));
        assert_eq!(lookup_offset(&entries, 29), Some(&entries[1]));
        assert_eq!(lookup_offset(&entries, u32::MAX), Some(&entries[2]));
        assert_eq!(lookup_offset(&[], 5), None);

        let times = [TimeIndexEntry::new(100, 0), TimeIndexEntry::new(200, 10)];
        assert_eq!(lookup_time(&times, 50), None);
        assert_eq!(lookup_time(&times, 100), None);
        assert_eq!(lookup_time(&times, 101), Some(&times[0]));
        assert_eq!(lookup_time(&times, 200), Some(&times[0]));
        assert_eq!(lookup_time(&times, 201), Some(&times[1]));
    }

    proptest! {
        #[test]
        fn increasing_offset_indexes_round_trip(
            steps in proptest::collection::vec((1u32..1000, 1u32..100_000), 0..200)
        ) {
            let mut entries = Vec::new();
            let (mut offset, mut position) = (0u32, 0u32);
            for (offset_step, position_step) in steps {
                offset += offset_step;
                position += position_step;
                entries.push(OffsetIndexEntry::new(offset, position));
            }
            let decoded = decode_offset_index(encode_index(&entries)).unwrap();
            prop_assert_eq!(decoded, &entries[..]);
            for probe in [0, offset / 2, offset, offset.saturating_add(1)] {
                let expected = entries.iter().rev().find(|e| e.relative_offset.get() <= probe);
                prop_assert_eq!(lookup_offset(decoded, probe), expected);
            }
        }

        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_offset_index(&bytes);
            let _ = decode_time_index(&bytes);
        }
    }
}
