//! Files of fixed-size little-endian entries behind one 16-byte header — producer snapshots
//! (`producers.rs`) and leader-epoch files (`epochs.rs`): a CRC of everything after it, a
//! magic, a version, and the entry count; decoded in place.
//!
//! Invariants: a decoded file is exactly a header and `entry_count` entries, at most the
//! caller's limit; its CRC holds, its magic and version are the caller's, its reserved field
//! is zero. Decoding never panics and never allocates.

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The header of a file of entries.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct EntryFileHeader {
    /// CRC-32 (ISO-HDLC, as `crc32fast`) of every byte after this field.
    pub crc: U32,
    pub magic: [u8; 4],
    pub version: U16,
    /// Must be 0.
    pub reserved: U16,
    /// Number of entries after the header.
    pub entry_count: U32,
}

/// Bytes of the header.
pub const ENTRY_FILE_HEADER_SIZE: usize = 16;

const _: () = assert!(size_of::<EntryFileHeader>() == ENTRY_FILE_HEADER_SIZE);
const _: () = assert!(offset_of!(EntryFileHeader, magic) == 4);
const _: () = assert!(offset_of!(EntryFileHeader, entry_count) == 12);

/// Why a file's header or length does not hold (each format names these its own way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryFileError {
    Length { len: u64 },
    Crc { stored: u32, computed: u32 },
    Magic { found: [u8; 4] },
    Version { found: u16 },
    TooManyEntries { found: u64 },
}

/// The entries of a file whose header holds (see the module invariants).
pub fn decode_entries<E>(
    bytes: &[u8],
    magic: [u8; 4],
    version: u16,
    max: usize,
) -> Result<&[E], EntryFileError>
where
    E: FromBytes + KnownLayout + Immutable + Unaligned,
{
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let (header, rest) =
        EntryFileHeader::ref_from_prefix(bytes).map_err(|_| EntryFileError::Length { len })?;
    let computed = crc32fast::hash(&bytes[4..]);
    if header.crc.get() != computed {
        return Err(EntryFileError::Crc {
            stored: header.crc.get(),
            computed,
        });
    }
    if header.magic != magic {
        return Err(EntryFileError::Magic {
            found: header.magic,
        });
    }
    if header.version.get() != version || header.reserved.get() != 0 {
        return Err(EntryFileError::Version {
            found: header.version.get(),
        });
    }
    let count = u64::from(header.entry_count.get());
    if count > max as u64 {
        return Err(EntryFileError::TooManyEntries { found: count });
    }
    let entries = <[E]>::ref_from_bytes(rest).map_err(|_| EntryFileError::Length { len })?;
    if entries.len() as u64 != count {
        return Err(EntryFileError::Length { len });
    }
    Ok(entries)
}

/// A file holding `entries` (at most `max`, which the caller checked).
pub fn encode_entries<E>(entries: &[E], magic: [u8; 4], version: u16, max: usize) -> Vec<u8>
where
    E: IntoBytes + Immutable,
{
    assert!(entries.len() <= max);
    let mut bytes = Vec::with_capacity(ENTRY_FILE_HEADER_SIZE + size_of_val(entries));
    let header = EntryFileHeader {
        crc: U32::new(0),
        magic,
        version: U16::new(version),
        reserved: U16::new(0),
        // Every caller's `max` (1,024 producers, 2^20 epochs) is far below u32::MAX, and the
        // assertion above holds the count to it.
        entry_count: U32::new(u32::try_from(entries.len()).expect("bounded above")),
    };
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(entries.as_bytes());
    let crc = crc32fast::hash(&bytes[4..]);
    bytes[..4].copy_from_slice(&crc.to_le_bytes());
    bytes
}
