//! Leader-epoch files (`leader-epochs`, one per replicated partition): the chain of leader
//! epochs of a replica's log — for each epoch the offset of its first record — replaced whole
//! (temporary file, sync, rename, directory sync) each time it changes. Fixed-size
//! little-endian records, decoded in place.
//!
//! Invariants of a decoded file: its CRC covers every byte after the CRC field; it holds at
//! most [`LEADER_EPOCHS_MAX`] entries whose epochs and start offsets both strictly increase,
//! starts at most [`OFFSET_MAX`]. Decoding never panics and never allocates. Specified in
//! `docs/format/leader-epochs.md`.

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::entry_file::{decode_entries, encode_entries, EntryFileError, ENTRY_FILE_HEADER_SIZE};
use crate::limits::OFFSET_MAX;

/// Entries one file (and one replica's chain) holds at most: a leader change per entry, and
/// entries below the log start are dropped with it, so a chain this long means about a
/// million leader changes within a partition's retention. 16 MiB at most per file.
pub const LEADER_EPOCHS_MAX: usize = 1 << 20;

/// `b"SPLE"`: a leader-epoch file.
pub const EPOCHS_MAGIC: [u8; 4] = *b"SPLE";
/// The format version this code writes and reads.
pub const EPOCHS_VERSION: u16 = 1;

/// One link of the chain: the records from `start` on were appended by the leader of
/// `epoch` (up to the next entry's start).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct EpochsEntry {
    pub epoch: U32,
    /// Must be 0.
    pub reserved: U32,
    pub start: U64,
}

/// Bytes of the header.
pub const EPOCHS_HEADER_SIZE: usize = ENTRY_FILE_HEADER_SIZE;
/// Bytes of one entry.
pub const EPOCHS_ENTRY_SIZE: usize = 16;

const _: () = assert!(size_of::<EpochsEntry>() == EPOCHS_ENTRY_SIZE);
const _: () = assert!(offset_of!(EpochsEntry, start) == 8);

/// Why a leader-epoch file cannot be used (the replica's chain is then damaged: the
/// partition is fenced, as for a corrupt segment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochsError {
    #[error("leader-epoch file is {len} bytes, not a header and whole entries")]
    Length { len: u64 },
    #[error("leader-epoch file CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("not a leader-epoch file (magic {found:?})")]
    Magic { found: [u8; 4] },
    #[error("leader-epoch file version {found} is not known (this code reads {EPOCHS_VERSION})")]
    Version { found: u16 },
    #[error("leader-epoch file holds {found} entries, the limit is {LEADER_EPOCHS_MAX}")]
    TooManyEntries { found: u64 },
    #[error("leader-epoch entry {entry} is invalid: {detail}")]
    Entry { entry: u32, detail: &'static str },
}

impl From<EntryFileError> for EpochsError {
    fn from(error: EntryFileError) -> Self {
        match error {
            EntryFileError::Length { len } => EpochsError::Length { len },
            EntryFileError::Crc { stored, computed } => EpochsError::Crc { stored, computed },
            EntryFileError::Magic { found } => EpochsError::Magic { found },
            EntryFileError::Version { found } => EpochsError::Version { found },
            EntryFileError::TooManyEntries { found } => EpochsError::TooManyEntries { found },
        }
    }
}

/// The entries of a valid leader-epoch file.
pub fn decode_epochs(bytes: &[u8]) -> Result<&[EpochsEntry], EpochsError> {
    let entries: &[EpochsEntry] =
        decode_entries(bytes, EPOCHS_MAGIC, EPOCHS_VERSION, LEADER_EPOCHS_MAX)?;
    let mut previous: Option<&EpochsEntry> = None;
    for (number, entry) in entries.iter().enumerate() {
        let invalid = |detail| EpochsError::Entry {
            entry: u32::try_from(number).unwrap_or(u32::MAX),
            detail,
        };
        if entry.reserved.get() != 0 {
            return Err(invalid("reserved bytes are not zero"));
        }
        if entry.start.get() > OFFSET_MAX {
            return Err(invalid("start offset above OFFSET_MAX"));
        }
        if let Some(previous) = previous {
            if entry.epoch.get() <= previous.epoch.get() {
                return Err(invalid("epochs do not increase"));
            }
            if entry.start.get() <= previous.start.get() {
                return Err(invalid("start offsets do not increase"));
            }
        }
        previous = Some(entry);
    }
    Ok(entries)
}

/// A leader-epoch file holding `entries` (valid ones: see the module invariants).
pub fn encode_epochs(entries: &[EpochsEntry]) -> Vec<u8> {
    encode_entries(entries, EPOCHS_MAGIC, EPOCHS_VERSION, LEADER_EPOCHS_MAX)
}

/// An entry from its fields.
pub fn epochs_entry(epoch: u32, start: u64) -> EpochsEntry {
    EpochsEntry {
        epoch: U32::new(epoch),
        reserved: U32::new(0),
        start: U64::new(start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_damage_is_named() {
        let entries = [epochs_entry(1, 0), epochs_entry(3, 10), epochs_entry(7, 30)];
        let bytes = encode_epochs(&entries);
        assert_eq!(bytes.len(), EPOCHS_HEADER_SIZE + 3 * EPOCHS_ENTRY_SIZE);
        assert_eq!(decode_epochs(&bytes), Ok(&entries[..]));
        assert_eq!(decode_epochs(&encode_epochs(&[])), Ok(&[][..]));

        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            decode_epochs(&flipped),
            Err(EpochsError::Crc { .. })
        ));
        assert!(matches!(
            decode_epochs(&bytes[..bytes.len() - 1]),
            Err(EpochsError::Crc { .. } | EpochsError::Length { .. })
        ));
        assert!(matches!(
            decode_epochs(&bytes[..3]),
            Err(EpochsError::Length { .. })
        ));
        for bad in [
            [epochs_entry(3, 0), epochs_entry(3, 10)],
            [epochs_entry(3, 10), epochs_entry(4, 10)],
            [epochs_entry(3, 0), epochs_entry(4, OFFSET_MAX + 1)],
        ] {
            assert!(
                matches!(
                    decode_epochs(&encode_epochs(&bad)),
                    Err(EpochsError::Entry { entry: 1, .. })
                ),
                "{bad:?}"
            );
        }
        let mut reserved = [epochs_entry(1, 0)];
        reserved[0].reserved = U32::new(1);
        assert!(matches!(
            decode_epochs(&encode_epochs(&reserved)),
            Err(EpochsError::Entry { entry: 0, .. })
        ));
    }
}
