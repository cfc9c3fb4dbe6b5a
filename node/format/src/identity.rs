//! The identity file of a data directory (`identity`, beside `metadata`): the directory's
//! storage id, random and made when the directory is first used, the node id it is served
//! under once one was given, and the etcd lease of its node's last session in a cluster (so a
//! restart revokes it at once). Replaced whole (temporary file, sync, rename, directory sync).
//!
//! Invariants of a decoded file: its CRC covers every byte after the CRC field; it holds
//! exactly one entry; the storage id is not 0; the flags hold no bit but
//! [`IDENTITY_HAS_NODE_ID`], and a node id without that bit is 0. Decoding never panics and
//! never allocates. Specified in `docs/format/identity.md`.

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::entry_file::{decode_entries, encode_entries, EntryFileError};

/// `b"SPID"`: an identity file.
pub const IDENTITY_MAGIC: [u8; 4] = *b"SPID";
/// The format version this code writes and reads.
pub const IDENTITY_VERSION: u16 = 1;
/// The flag saying the node id is set.
pub const IDENTITY_HAS_NODE_ID: u32 = 1;

/// The one entry of an identity file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IdentityEntry {
    pub storage_id: U64,
    pub node_id: U32,
    pub flags: U32,
    /// The etcd lease of the node's last session (0: none).
    pub lease_id: U64,
}

/// Bytes of the entry.
pub const IDENTITY_ENTRY_SIZE: usize = 24;

const _: () = assert!(size_of::<IdentityEntry>() == IDENTITY_ENTRY_SIZE);
const _: () = assert!(offset_of!(IdentityEntry, node_id) == 8);
const _: () = assert!(offset_of!(IdentityEntry, lease_id) == 16);

/// A data directory's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Random, never 0; a new data directory (a replaced disk) has a new one.
    pub storage_id: u64,
    /// The node id the directory is served under, once one was given.
    pub node_id: Option<u32>,
    /// The etcd lease of the node's last session in a cluster, if it had one (revoked at the
    /// next start, so the old registration goes at once).
    pub lease_id: Option<i64>,
}

/// Why an identity file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity file is {len} bytes, not a header and one entry")]
    Length { len: u64 },
    #[error("identity file CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("not an identity file (magic {found:?})")]
    Magic { found: [u8; 4] },
    #[error("identity file version {found} is not known (this code reads {IDENTITY_VERSION})")]
    Version { found: u16 },
    #[error("identity file holds {found} entries, not one")]
    Entries { found: u64 },
    #[error("identity entry is invalid: {0}")]
    Entry(&'static str),
}

impl From<EntryFileError> for IdentityError {
    fn from(error: EntryFileError) -> Self {
        match error {
            EntryFileError::Length { len } => IdentityError::Length { len },
            EntryFileError::Crc { stored, computed } => IdentityError::Crc { stored, computed },
            EntryFileError::Magic { found } => IdentityError::Magic { found },
            EntryFileError::Version { found } => IdentityError::Version { found },
            EntryFileError::TooManyEntries { found } => IdentityError::Entries { found },
        }
    }
}

/// The identity a valid file holds.
pub fn decode_identity(bytes: &[u8]) -> Result<Identity, IdentityError> {
    let entries: &[IdentityEntry] = decode_entries(bytes, IDENTITY_MAGIC, IDENTITY_VERSION, 1)?;
    let [entry] = entries else {
        return Err(IdentityError::Entries {
            found: entries.len() as u64,
        });
    };
    let flags = entry.flags.get();
    if flags & !IDENTITY_HAS_NODE_ID != 0 {
        return Err(IdentityError::Entry("unknown flags"));
    }
    if entry.storage_id.get() == 0 {
        return Err(IdentityError::Entry("storage id 0"));
    }
    // etcd's lease ids are positive i64s.
    let lease_id = match i64::try_from(entry.lease_id.get()) {
        Ok(0) => None,
        Ok(id) => Some(id),
        Err(_) => return Err(IdentityError::Entry("a lease id above i64::MAX")),
    };
    let node_id = if flags & IDENTITY_HAS_NODE_ID != 0 {
        Some(entry.node_id.get())
    } else if entry.node_id.get() != 0 {
        return Err(IdentityError::Entry("a node id without its flag"));
    } else {
        None
    };
    Ok(Identity {
        storage_id: entry.storage_id.get(),
        node_id,
        lease_id,
    })
}

/// The file holding `identity` (a storage id of 0, or a lease id that is not positive, is the
/// caller's bug: refused by decoding).
pub fn encode_identity(identity: Identity) -> Vec<u8> {
    let entry = IdentityEntry {
        storage_id: U64::new(identity.storage_id),
        node_id: U32::new(identity.node_id.unwrap_or(0)),
        flags: U32::new(if identity.node_id.is_some() {
            IDENTITY_HAS_NODE_ID
        } else {
            0
        }),
        lease_id: U64::new(identity.lease_id.map_or(0, i64::unsigned_abs)),
    };
    encode_entries(&[entry], IDENTITY_MAGIC, IDENTITY_VERSION, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of docs/format/identity.md's example.
    const GOLDEN: [u8; 40] = [
        0xa8, 0xa2, 0x65, 0xdd, b'S', b'P', b'I', b'D', 1, 0, 0, 0, 1, 0, 0, 0, // header
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // storage id
        3, 0, 0, 0, // node id
        1, 0, 0, 0, // flags: node id set
        0x0b, 0x0a, 0, 0, 0, 0, 0, 0x07, // lease id 0x070000000000_0a0b
    ];

    #[test]
    fn golden_bytes_and_round_trips() {
        let identity = Identity {
            storage_id: 0x1122_3344_5566_7788,
            node_id: Some(3),
            lease_id: Some(0x0700_0000_0000_0a0b),
        };
        let bytes = encode_identity(identity);
        assert_eq!(bytes, GOLDEN);
        assert_eq!(decode_identity(&bytes), Ok(identity));
        let anonymous = Identity {
            storage_id: 9,
            node_id: None,
            lease_id: None,
        };
        assert_eq!(decode_identity(&encode_identity(anonymous)), Ok(anonymous));
        let zero = Identity {
            storage_id: 7,
            node_id: Some(0),
            lease_id: None,
        };
        assert_eq!(decode_identity(&encode_identity(zero)), Ok(zero));
    }

    #[test]
    fn damage_and_invalid_entries_are_refused() {
        let good = encode_identity(Identity {
            storage_id: 5,
            node_id: Some(3),
            lease_id: Some(8),
        });
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(decode_identity(&bad).is_err(), "flip at {at}");
        }
        assert!(decode_identity(&good[..good.len() - 1]).is_err());
        assert!(decode_identity(&[]).is_err());
        let reseal =
            |entry: IdentityEntry| encode_entries(&[entry], IDENTITY_MAGIC, IDENTITY_VERSION, 1);
        let entry = |storage_id, node_id, flags| IdentityEntry {
            storage_id: U64::new(storage_id),
            node_id: U32::new(node_id),
            flags: U32::new(flags),
            lease_id: U64::new(0),
        };
        assert_eq!(
            decode_identity(&reseal(entry(0, 0, 0))),
            Err(IdentityError::Entry("storage id 0"))
        );
        assert_eq!(
            decode_identity(&reseal(entry(1, 0, 2))),
            Err(IdentityError::Entry("unknown flags"))
        );
        assert_eq!(
            decode_identity(&reseal(entry(1, 4, 0))),
            Err(IdentityError::Entry("a node id without its flag"))
        );
        let mut negative = entry(1, 0, 0);
        negative.lease_id = U64::new(1 << 63);
        assert_eq!(
            decode_identity(&reseal(negative)),
            Err(IdentityError::Entry("a lease id above i64::MAX"))
        );
        let none: Vec<u8> =
            encode_entries::<IdentityEntry>(&[], IDENTITY_MAGIC, IDENTITY_VERSION, 1);
        assert_eq!(
            decode_identity(&none),
            Err(IdentityError::Entries { found: 0 })
        );
    }
}
