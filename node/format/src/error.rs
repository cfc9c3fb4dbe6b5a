//! Typed errors of the storage formats. Every variant names what was expected and what was
//! found, so a log line or an error frame alone tells an operator what is wrong.

use thiserror::Error;

use crate::compression::{Compression, DecompressError};

/// Why the records section of a batch could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("record data ends early")]
    UnexpectedEnd,
    #[error("varint does not fit its type")]
    VarintOverflow,
    #[error("varint is not minimally encoded")]
    VarintNotMinimal,
    #[error("record {index}: length {length} is negative or larger than the batch")]
    BadRecordLength { index: u32, length: i32 },
    #[error("record {index}: declared length {declared} but its fields take {used} bytes")]
    RecordLengthMismatch {
        index: u32,
        declared: u32,
        used: u32,
    },
    #[error("record {index}: attributes must be 0, found {found:#04x}")]
    RecordAttributes { index: u32, found: u8 },
    #[error("record {index}: offset delta {found}, expected {index}")]
    OffsetDelta { index: u32, found: i32 },
    #[error("first record has timestamp delta {found}; it must be 0 in format version 1")]
    FirstTimestampDelta { found: i64 },
    #[error("record {index}: timestamp overflows i64")]
    TimestampOverflow { index: u32 },
    #[error("record {index}: {field} length {length} is invalid (limit {max})")]
    FieldLength {
        index: u32,
        field: Field,
        length: i32,
        max: u32,
    },
    #[error("record {index}: header count {count} is invalid (limit {max})")]
    HeaderCount { index: u32, count: i32, max: u32 },
    #[error("record {index}: header name is not UTF-8")]
    HeaderNameUtf8 { index: u32 },
    #[error("batch declares {declared} records but holds {found}")]
    RecordCount { declared: u32, found: u32 },
    #[error("{count} bytes follow the last record")]
    TrailingBytes { count: u32 },
    #[error("batch declares max timestamp {declared} but its records' maximum is {computed}")]
    MaxTimestamp { declared: i64, computed: i64 },
    #[error(
        "the records are {codec}-compressed: decompress them first (BatchRef::records_section)"
    )]
    Compressed { codec: Compression },
    #[error(transparent)]
    Decompress(#[from] DecompressError),
}

/// A length-prefixed field of a record, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Key,
    Value,
    HeaderName,
    HeaderValue,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Key => "key",
            Field::Value => "value",
            Field::HeaderName => "header name",
            Field::HeaderValue => "header value",
        })
    }
}

/// Why bytes are not a valid record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("batch needs {needed} bytes, only {available} available")]
    Truncated { needed: u64, available: u64 },
    #[error("header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc { stored: u32, computed: u32 },
    #[error("bad magic: expected {expected}, found {found}")]
    Magic { expected: u8, found: u8 },
    #[error("batch length {length} outside [{min}, {max}]")]
    Length { length: u32, min: u32, max: u32 },
    #[error("producer CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ProducerCrc { stored: u32, computed: u32 },
    #[error("unsupported attributes {found:#06x}")]
    Attributes { found: u16 },
    #[error("reserved header field {field} must be 0, found {found}")]
    Reserved { field: &'static str, found: u16 },
    #[error("record count {count} outside [1, {max}]")]
    RecordCount { count: u32, max: u32 },
    #[error("last offset delta {found}, expected {expected} (record count - 1)")]
    LastOffsetDelta { expected: u32, found: u32 },
    #[error("base offset {base_offset} plus {record_count} records exceeds the largest offset")]
    OffsetOverflow { base_offset: u64, record_count: u32 },
    #[error("invalid records: {0}")]
    Records(#[from] RecordError),
}

/// Why a batch could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BuildError {
    #[error("the record would make the batch {size} bytes, over the limit of {max}")]
    BatchFull { size: u64, max: u32 },
    #[error("the batch already holds the most records allowed ({max})")]
    TooManyRecords { max: u32 },
    #[error("{field} is {size} bytes, over the limit of {max}")]
    FieldTooLarge { field: Field, size: u64, max: u32 },
    #[error("the record has {count} headers, over the limit of {max}")]
    TooManyHeaders { count: u64, max: u32 },
    #[error("timestamp {timestamp} is too far from the batch's first timestamp {first}")]
    TimestampRange { timestamp: i64, first: i64 },
    #[error("a batch needs at least one record")]
    Empty,
    #[error("the {codec} codec failed")]
    Compress { codec: Compression },
}

/// Why bytes are not a valid index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IndexError {
    #[error("index length {length} is not a multiple of the entry size {entry_size}")]
    PartialEntry { length: u64, entry_size: u32 },
    #[error("index holds {count} entries, over the limit of {max}")]
    TooManyEntries { count: u64, max: u32 },
    #[error("index entry {index} does not increase: previous {previous}, found {found}")]
    NotIncreasing {
        index: u32,
        previous: i64,
        found: i64,
    },
}

/// Why a segment or index file name is not Spate's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FileNameError {
    #[error("file name {0:?} is not a 20-digit base offset with a known extension")]
    Unrecognised(String),
}

/// Why a topic name is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicNameError {
    #[error("topic name length {length} outside [{min}, {max}]")]
    Length { length: u64, min: u32, max: u32 },
    #[error(
        "topic name has the character {found:?} at byte {position}; allowed are A-Z a-z 0-9 . _ -"
    )]
    Character { position: u32, found: char },
    #[error("topic name may not be \".\" or \"..\"")]
    Reserved,
}
