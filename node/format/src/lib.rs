//! `spate-format`: Spate's storage formats — record batches, segment scanning, index entries
//! and every format limit.
//!
//! This crate is pure: no I/O, no clock, no async runtime. Every decoder takes untrusted bytes
//! and returns a typed error instead of panicking, and never allocates in proportion to a
//! length it read. The byte-level specification lives in `docs/format/`; golden-bytes tests tie
//! it to this code.

pub mod batch;
pub mod compression;
pub mod entry_file;
pub mod epochs;
pub mod error;
pub mod identity;
pub mod index;
pub mod limits;
pub mod producers;
pub mod segment;
pub mod varint;

pub use batch::{
    batch_headers, batches, stamp, BatchBuilder, BatchHeader, BatchRef, Header, HeaderRef, Headers,
    ProducerFields, Record, RecordRef, TimestampType,
};
pub use compression::{Compression, DecompressError};
pub use error::{BatchError, BuildError, FileNameError, IndexError, RecordError, TopicNameError};
pub use index::{OffsetIndexEntry, TimeIndexEntry};
pub use segment::{BatchInfo, EndReason, ScanEnd, SegmentFileKind, SegmentScanner};

use limits::{TOPIC_NAME_LENGTH_MAX, TOPIC_NAME_LENGTH_MIN};

/// A record's position in its partition. Dense per partition, assigned once by the owning
/// shard, never above [`limits::OFFSET_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Checks a topic name: 1 to 249 characters of `[A-Za-z0-9._-]`, and not `.` or `..` (topic
/// names become directory names).
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    let length = u64::try_from(name.len()).unwrap_or(u64::MAX);
    if length < u64::from(TOPIC_NAME_LENGTH_MIN) || length > u64::from(TOPIC_NAME_LENGTH_MAX) {
        return Err(TopicNameError::Length {
            length,
            min: TOPIC_NAME_LENGTH_MIN,
            max: TOPIC_NAME_LENGTH_MAX,
        });
    }
    for (position, character) in name.char_indices() {
        if !(character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-')) {
            // Positions are below TOPIC_NAME_LENGTH_MAX here.
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            return Err(TopicNameError::Character {
                position,
                found: character,
            });
        }
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Reserved);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_rules() {
        assert!(validate_topic_name("clicks").is_ok());
        assert!(validate_topic_name("a.b_c-D9").is_ok());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        assert!(matches!(
            validate_topic_name(""),
            Err(TopicNameError::Length { .. })
        ));
        assert!(matches!(
            validate_topic_name(&"x".repeat(250)),
            Err(TopicNameError::Length { .. })
        ));
        assert_eq!(
            validate_topic_name("a/b"),
            Err(TopicNameError::Character {
                position: 1,
                found: '/'
            })
        );
        assert!(validate_topic_name("é").is_err());
        assert_eq!(validate_topic_name(".."), Err(TopicNameError::Reserved));
        assert_eq!(validate_topic_name("."), Err(TopicNameError::Reserved));
    }
}
