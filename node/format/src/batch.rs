//! Record batches: the fixed 72-byte header, the Kafka-v2-style records after it, the
//! producer-side builder, the zero-copy reader and the node's in-place stamping.
//!
//! Invariants: every batch that `BatchRef::parse` accepts has a header CRC that covers the
//! whole header, a producer CRC that covers everything the producer wrote, and a length inside
//! the limits; `BatchRef::validate_records` additionally proves the records section decodes to
//! exactly `record_count` records with dense offset deltas. Nothing here panics or allocates in
//! proportion to a length read from the input. Specified in `docs/format/record-batch.md`.

use std::borrow::Cow;

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{I16, I32, I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::compression::{compress, decompress, Compression};
use crate::error::{BatchError, BuildError, Field, RecordError};
use crate::limits::{
    BATCH_HEADER_SIZE, BATCH_SIZE_MAX, BATCH_SIZE_MIN, HEADERS_PER_RECORD_MAX,
    HEADER_NAME_SIZE_MAX, HEADER_VALUE_SIZE_MAX, KEY_SIZE_MAX, OFFSET_MAX, RECORDS_PER_BATCH_MAX,
    VALUE_SIZE_MAX,
};
use crate::varint::{varint_size, varlong_size, write_varint, write_varlong, Cursor};
use crate::Offset;

/// The value of the `magic` byte of the format version written now (2: compressed records
/// allowed, any first timestamp delta).
pub const MAGIC: u8 = 2;

/// Format version 1 (no compression; the first record's timestamp delta is 0). Still read and
/// accepted: data directories and producers of version 1 stay valid.
pub const MAGIC_V1: u8 = 1;

/// Whether `magic` is a format version this code reads.
pub fn is_known_magic(magic: u8) -> bool {
    magic == MAGIC || magic == MAGIC_V1
}

/// First header byte covered by the header CRC (everything after the CRC itself).
pub const HEADER_CRC_START: usize = offset_of!(BatchHeader, producer_crc);

/// First byte covered by the producer CRC: the batch length and everything after it, so the
/// node-assigned fields (base offset, append time) can be stamped without touching it.
pub const PRODUCER_CRC_START: usize = offset_of!(BatchHeader, batch_length);

/// Attribute bits 0-2: compression codec ([`Compression`]; only `None` in format version 1).
pub const ATTRIBUTE_COMPRESSION_MASK: u16 = 0b0111;
/// Attribute bit 3: timestamp type (0 = create time set by the producer, 1 = log append time).
pub const ATTRIBUTE_TIMESTAMP_TYPE: u16 = 0b1000;
/// Attribute bits this version understands; every other bit must be 0.
pub const ATTRIBUTES_KNOWN: u16 = ATTRIBUTE_COMPRESSION_MASK | ATTRIBUTE_TIMESTAMP_TYPE;

/// The producer id, epoch and base sequence of a batch without an idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;

/// The fixed header at the start of every record batch. All integers are little-endian; the
/// struct has alignment 1, so it can be read in place from any byte offset.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BatchHeader {
    /// CRC-32 (ISO-HDLC, as `crc32fast`) of header bytes `[4, 72)`.
    pub header_crc: U32,
    /// CRC-32 of batch bytes `[24, batch_length)`: everything the producer wrote.
    pub producer_crc: U32,
    /// Offset of the first record; assigned by the node (0 until then).
    pub base_offset: U64,
    /// Time the node appended the batch, ms since the Unix epoch; 0 until then.
    pub append_time: I64,
    /// Total bytes of the batch, this header included.
    pub batch_length: U32,
    /// Format version: [`MAGIC`] or [`MAGIC_V1`].
    pub magic: u8,
    /// Must be 0.
    pub reserved0: u8,
    /// Compression codec and timestamp type; see `ATTRIBUTE_*`.
    pub attributes: U16,
    /// Number of records, at least 1.
    pub record_count: U32,
    /// Offset delta of the last record: `record_count - 1` in this version.
    pub last_offset_delta: U32,
    /// Timestamp the records' timestamp deltas are relative to (the first record's in version
    /// 1; any in version 2, as Kafka's `baseTimestamp`).
    pub first_timestamp: I64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: I64,
    /// Idempotent producer id, or -1.
    pub producer_id: I64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: I16,
    /// Must be 0.
    pub reserved1: U16,
    /// Sequence number of the first record for the idempotent producer, or -1.
    pub base_sequence: I32,
}

const _: () = assert!(size_of::<BatchHeader>() == BATCH_HEADER_SIZE as usize);
const _: () = assert!(offset_of!(BatchHeader, header_crc) == 0);
const _: () = assert!(offset_of!(BatchHeader, producer_crc) == 4);
const _: () = assert!(offset_of!(BatchHeader, base_offset) == 8);
const _: () = assert!(offset_of!(BatchHeader, append_time) == 16);
const _: () = assert!(offset_of!(BatchHeader, batch_length) == 24);
const _: () = assert!(offset_of!(BatchHeader, magic) == 28);
const _: () = assert!(offset_of!(BatchHeader, reserved0) == 29);
const _: () = assert!(offset_of!(BatchHeader, attributes) == 30);
const _: () = assert!(offset_of!(BatchHeader, record_count) == 32);
const _: () = assert!(offset_of!(BatchHeader, last_offset_delta) == 36);
const _: () = assert!(offset_of!(BatchHeader, first_timestamp) == 40);
const _: () = assert!(offset_of!(BatchHeader, max_timestamp) == 48);
const _: () = assert!(offset_of!(BatchHeader, producer_id) == 56);
const _: () = assert!(offset_of!(BatchHeader, producer_epoch) == 64);
const _: () = assert!(offset_of!(BatchHeader, reserved1) == 66);
const _: () = assert!(offset_of!(BatchHeader, base_sequence) == 68);
const _: () = assert!(PRODUCER_CRC_START > offset_of!(BatchHeader, append_time));

/// What a batch's record timestamps mean (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Set by the producer when the record was created.
    #[default]
    CreateTime,
    /// The node's append time (the header's `append_time`) replaces the record timestamps.
    LogAppendTime,
}

/// Idempotent-producer fields, reserved in this version (the node stores them unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Default for ProducerFields {
    fn default() -> Self {
        ProducerFields {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
        }
    }
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn header_crc_of(header_bytes: &[u8]) -> u32 {
    crc(&header_bytes[HEADER_CRC_START..BATCH_HEADER_SIZE as usize])
}

/// Converts a length that is bounded by `BATCH_SIZE_MAX` (so by `u32`) for error values.
fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// The header at the start of `bytes` if it is complete and its header CRC holds, whatever
/// else is wrong with the batch (recovery uses it to tell a torn batch from a garbage one).
pub fn header_with_valid_crc(bytes: &[u8]) -> Option<&BatchHeader> {
    let (header, _) = BatchHeader::ref_from_prefix(bytes).ok()?;
    (header.header_crc.get() == header_crc_of(header.as_bytes())).then_some(header)
}

/// A record batch validated in place: the header and both CRCs are checked, the records are
/// decoded lazily by [`BatchRef::records`].
#[derive(Debug, Clone, Copy)]
pub struct BatchRef<'a> {
    bytes: &'a [u8],
    header: &'a BatchHeader,
}

impl<'a> BatchRef<'a> {
    /// Parses the batch at the start of `bytes`; bytes after it are ignored (use
    /// [`BatchRef::len`] to find them). Checks, in order: enough bytes for a header, the header
    /// CRC, the magic, the length bounds, reserved fields and attributes, record count and last
    /// offset delta, enough bytes for the whole batch, the producer CRC.
    pub fn parse_prefix(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let Ok((header, _)) = BatchHeader::ref_from_prefix(bytes) else {
            return Err(BatchError::Truncated {
                needed: u64::from(BATCH_HEADER_SIZE),
                available: len_u64(bytes.len()),
            });
        };
        let stored = header.header_crc.get();
        let computed = header_crc_of(header.as_bytes());
        if stored != computed {
            return Err(BatchError::HeaderCrc { stored, computed });
        }
        if !is_known_magic(header.magic) {
            return Err(BatchError::Magic {
                expected: MAGIC,
                found: header.magic,
            });
        }
        let length = header.batch_length.get();
        if !(BATCH_SIZE_MIN..=BATCH_SIZE_MAX).contains(&length) {
            return Err(BatchError::Length {
                length,
                min: BATCH_SIZE_MIN,
                max: BATCH_SIZE_MAX,
            });
        }
        if header.reserved0 != 0 {
            return Err(BatchError::Reserved {
                field: "reserved0",
                found: header.reserved0.into(),
            });
        }
        if header.reserved1.get() != 0 {
            return Err(BatchError::Reserved {
                field: "reserved1",
                found: header.reserved1.get(),
            });
        }
        let attributes = header.attributes.get();
        let codec = attributes & ATTRIBUTE_COMPRESSION_MASK;
        if attributes & !ATTRIBUTES_KNOWN != 0
            || Compression::from_bits(codec).is_none()
            || (header.magic == MAGIC_V1 && codec != 0)
        {
            return Err(BatchError::Attributes { found: attributes });
        }
        let count = header.record_count.get();
        if count == 0 || count > RECORDS_PER_BATCH_MAX {
            return Err(BatchError::RecordCount {
                count,
                max: RECORDS_PER_BATCH_MAX,
            });
        }
        if header.last_offset_delta.get() != count - 1 {
            return Err(BatchError::LastOffsetDelta {
                expected: count - 1,
                found: header.last_offset_delta.get(),
            });
        }
        let base_offset = header.base_offset.get();
        if base_offset > OFFSET_MAX - u64::from(count - 1) {
            return Err(BatchError::OffsetOverflow {
                base_offset,
                record_count: count,
            });
        }
        let Some(bytes) = bytes.get(..length as usize) else {
            return Err(BatchError::Truncated {
                needed: u64::from(length),
                available: len_u64(bytes.len()),
            });
        };
        let stored = header.producer_crc.get();
        let computed = crc(&bytes[PRODUCER_CRC_START..]);
        if stored != computed {
            return Err(BatchError::ProducerCrc { stored, computed });
        }
        Ok(BatchRef { bytes, header })
    }

    /// Parses `bytes` as exactly one batch.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let batch = Self::parse_prefix(bytes)?;
        if batch.bytes.len() != bytes.len() {
            return Err(BatchError::Records(RecordError::TrailingBytes {
                count: u32::try_from(bytes.len() - batch.bytes.len()).unwrap_or(u32::MAX),
            }));
        }
        Ok(batch)
    }

    /// Parses exactly one batch and validates all of its records: what a node does before it
    /// accepts a batch from a producer.
    pub fn parse_validated(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let batch = Self::parse(bytes)?;
        batch.validate_records()?;
        Ok(batch)
    }

    /// Decodes every record and checks the count, the offset deltas, that the records end
    /// exactly at the batch's end, and that the header's max timestamp is their maximum. A
    /// compressed batch is decompressed first (bounded by `DECOMPRESSED_SIZE_MAX`).
    pub fn validate_records(&self) -> Result<(), RecordError> {
        let section = self.records_section()?;
        let max_timestamp = validate_records_section(
            &section,
            self.record_count(),
            self.first_timestamp(),
            self.header.magic,
        )?;
        let declared = self.header.max_timestamp.get();
        if declared != max_timestamp {
            return Err(RecordError::MaxTimestamp {
                declared,
                computed: max_timestamp,
            });
        }
        Ok(())
    }

    /// The batch's bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Length of the batch in bytes.
    pub fn len(&self) -> u32 {
        self.header.batch_length.get()
    }

    /// Always false: a batch holds at least its header and one record.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn header(&self) -> &'a BatchHeader {
        self.header
    }

    pub fn base_offset(&self) -> Offset {
        Offset(self.header.base_offset.get())
    }

    /// Offset of the last record: `base_offset + record_count - 1`, checked at parse.
    pub fn last_offset(&self) -> Offset {
        Offset(self.header.base_offset.get() + u64::from(self.header.last_offset_delta.get()))
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset().0 + 1)
    }

    pub fn record_count(&self) -> u32 {
        self.header.record_count.get()
    }

    pub fn append_time(&self) -> i64 {
        self.header.append_time.get()
    }

    pub fn first_timestamp(&self) -> i64 {
        self.header.first_timestamp.get()
    }

    pub fn max_timestamp(&self) -> i64 {
        self.header.max_timestamp.get()
    }

    pub fn compression(&self) -> Compression {
        // Checked by `parse_prefix`.
        Compression::from_bits(self.header.attributes.get() & ATTRIBUTE_COMPRESSION_MASK)
            .unwrap_or(Compression::None)
    }

    /// Format version of the batch ([`MAGIC`] or [`MAGIC_V1`]).
    pub fn magic(&self) -> u8 {
        self.header.magic
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.header.attributes.get() & ATTRIBUTE_TIMESTAMP_TYPE == 0 {
            TimestampType::CreateTime
        } else {
            TimestampType::LogAppendTime
        }
    }

    pub fn producer(&self) -> ProducerFields {
        ProducerFields {
            producer_id: self.header.producer_id.get(),
            producer_epoch: self.header.producer_epoch.get(),
            base_sequence: self.header.base_sequence.get(),
        }
    }

    /// The bytes after the header as stored: the records, or their compressed form.
    pub fn raw_records(&self) -> &'a [u8] {
        &self.bytes[BATCH_HEADER_SIZE as usize..]
    }

    /// The records section to decode with [`BatchRef::records_in`]: borrowed from the batch
    /// when it is not compressed, decompressed (at most `DECOMPRESSED_SIZE_MAX` bytes)
    /// otherwise.
    pub fn records_section(&self) -> Result<Cow<'a, [u8]>, RecordError> {
        match self.compression() {
            Compression::None => Ok(Cow::Borrowed(self.raw_records())),
            codec => Ok(Cow::Owned(decompress(codec, self.raw_records())?)),
        }
    }

    /// Iterates the records of `section` (what [`BatchRef::records_section`] gave for this
    /// batch) without allocating. After the first error the iterator yields that error once
    /// and then ends.
    pub fn records_in<'s>(&self, section: &'s [u8]) -> Records<'s> {
        Records {
            cursor: Cursor::new(section),
            index: 0,
            count: self.record_count(),
            first_timestamp: self.first_timestamp(),
            first_delta_zero: self.header.magic == MAGIC_V1,
            failure: None,
            pending: false,
        }
    }

    /// Iterates the records of a batch that is not compressed, without allocating. A
    /// compressed batch yields `RecordError::Compressed` (use [`BatchRef::records_section`]).
    pub fn records(&self) -> Records<'a> {
        let mut records = self.records_in(self.raw_records());
        let codec = self.compression();
        if codec != Compression::None {
            records.failure = Some(RecordError::Compressed { codec });
            records.pending = true;
        }
        records
    }
}

/// Decodes the `count` records of an uncompressed records section (`section`, of a batch of
/// format version `magic` whose first timestamp is `first_timestamp`) by the rules of
/// `docs/format/record-batch.md`: exactly `count` records, nothing after them. Returns the
/// records' largest timestamp. [`BatchRef::validate_records`] uses it, and so does a front
/// that builds a batch's header from another format's (the Kafka listener) and must not copy
/// the records into a contiguous batch first.
pub fn validate_records_section(
    section: &[u8],
    count: u32,
    first_timestamp: i64,
    magic: u8,
) -> Result<i64, RecordError> {
    let mut records = Records {
        cursor: Cursor::new(section),
        index: 0,
        count,
        first_timestamp,
        first_delta_zero: magic == MAGIC_V1,
        failure: None,
        pending: false,
    };
    let mut found: u32 = 0;
    let mut max_timestamp = i64::MIN;
    for record in &mut records {
        let record = record?;
        max_timestamp = max_timestamp.max(record.timestamp);
        found += 1;
    }
    if let Some(error) = records.failure {
        return Err(error);
    }
    if found != count {
        return Err(RecordError::RecordCount {
            declared: count,
            found,
        });
    }
    if records.cursor.remaining() != 0 {
        let count = u32::try_from(records.cursor.remaining()).unwrap_or(u32::MAX);
        return Err(RecordError::TrailingBytes { count });
    }
    Ok(max_timestamp)
}

/// The headers of batches back to back in `bytes`, each with the offset it starts at, read
/// without checking either CRC: for bytes already checked (a log's own reads and answers),
/// where only the batches' bounds and offsets are wanted. It stops at a header that does not
/// fit, a zero length, or a batch that runs past the end.
pub fn batch_headers(bytes: &[u8]) -> impl Iterator<Item = (usize, &BatchHeader)> {
    let mut at = 0usize;
    core::iter::from_fn(move || {
        let (header, _) = BatchHeader::ref_from_prefix(bytes.get(at..)?).ok()?;
        let len = header.batch_length.get() as usize;
        let end = at
            .checked_add(len)
            .filter(|end| len > 0 && *end <= bytes.len())?;
        let start = at;
        at = end;
        Some((start, header))
    })
}

/// Iterator over concatenated whole batches, as in a fetch response or a segment. It stops at
/// the first invalid batch and yields that error.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    bytes: &'a [u8],
    failed: bool,
}

/// Iterates the batches in `bytes`, which must hold whole batches back to back.
pub fn batches(bytes: &[u8]) -> Batches<'_> {
    Batches {
        bytes,
        failed: false,
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<BatchRef<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() || self.failed {
            return None;
        }
        match BatchRef::parse_prefix(self.bytes) {
            Ok(batch) => {
                self.bytes = &self.bytes[batch.as_bytes().len()..];
                Some(Ok(batch))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// One decoded record, borrowing from the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Position of the record in its batch: its offset is the batch's base offset plus this.
    pub offset_delta: u32,
    /// Producer timestamp, ms since the epoch (see [`BatchRef::timestamp_type`]).
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// The headers of a record, validated when the record was decoded and iterated in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    bytes: &'a [u8],
    count: u32,
}

impl<'a> Headers<'a> {
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            cursor: Cursor::new(self.bytes),
            left: self.count,
        }
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = HeaderRef<'a>;
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// One record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    pub name: &'a str,
    pub value: Option<&'a [u8]>,
}

/// Iterator over a record's headers.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    cursor: Cursor<'a>,
    left: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = HeaderRef<'a>;

    fn next(&mut self) -> Option<HeaderRef<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The bytes were fully validated by `read_header` when the record was decoded, so this
        // cannot fail; if it somehow did, ending the iteration is the safe answer.
        match read_header(&mut self.cursor, 0) {
            Ok(header) => Some(header),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }
}

/// Iterator over the records of a batch.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    cursor: Cursor<'a>,
    index: u32,
    count: u32,
    first_timestamp: i64,
    /// Format version 1: the first record's timestamp delta must be 0.
    first_delta_zero: bool,
    failure: Option<RecordError>,
    /// `failure` is set but not yielded yet.
    pending: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pending {
            self.pending = false;
            return self.failure.map(Err);
        }
        if self.index >= self.count || self.failure.is_some() {
            return None;
        }
        match read_record(
            &mut self.cursor,
            self.index,
            self.first_timestamp,
            self.first_delta_zero,
        ) {
            Ok(record) => {
                self.index += 1;
                Some(Ok(record))
            }
            Err(error) => {
                self.failure = Some(error);
                Some(Err(error))
            }
        }
    }
}

fn read_length(
    cursor: &mut Cursor<'_>,
    index: u32,
    field: Field,
    max: u32,
    nullable: bool,
) -> Result<Option<usize>, RecordError> {
    let length = cursor.read_varint()?;
    if length == -1 && nullable {
        return Ok(None);
    }
    match u32::try_from(length) {
        Ok(size) if size <= max => Ok(Some(size as usize)),
        _ => Err(RecordError::FieldLength {
            index,
            field,
            length,
            max,
        }),
    }
}

fn read_nullable<'a>(
    cursor: &mut Cursor<'a>,
    index: u32,
    field: Field,
    max: u32,
) -> Result<Option<&'a [u8]>, RecordError> {
    match read_length(cursor, index, field, max, true)? {
        None => Ok(None),
        Some(size) => cursor.read_slice(size).map(Some),
    }
}

fn read_header<'a>(cursor: &mut Cursor<'a>, index: u32) -> Result<HeaderRef<'a>, RecordError> {
    let name_size = read_length(
        cursor,
        index,
        Field::HeaderName,
        HEADER_NAME_SIZE_MAX,
        false,
    )?
    .unwrap_or(0);
    let name = core::str::from_utf8(cursor.read_slice(name_size)?)
        .map_err(|_| RecordError::HeaderNameUtf8 { index })?;
    let value = read_nullable(cursor, index, Field::HeaderValue, HEADER_VALUE_SIZE_MAX)?;
    Ok(HeaderRef { name, value })
}

fn read_record<'a>(
    cursor: &mut Cursor<'a>,
    index: u32,
    first_timestamp: i64,
    first_delta_zero: bool,
) -> Result<RecordRef<'a>, RecordError> {
    let length = cursor.read_varint()?;
    let declared = match u32::try_from(length) {
        Ok(declared) if declared as usize <= cursor.remaining() => declared,
        _ => return Err(RecordError::BadRecordLength { index, length }),
    };
    let mut body = Cursor::new(cursor.read_slice(declared as usize)?);
    let attributes = body.read_u8()?;
    if attributes != 0 {
        return Err(RecordError::RecordAttributes {
            index,
            found: attributes,
        });
    }
    let timestamp_delta = body.read_varlong()?;
    // Version 1: the header's first timestamp is the first record's, its delta is 0.
    if first_delta_zero && index == 0 && timestamp_delta != 0 {
        return Err(RecordError::FirstTimestampDelta {
            found: timestamp_delta,
        });
    }
    let timestamp = first_timestamp
        .checked_add(timestamp_delta)
        .ok_or(RecordError::TimestampOverflow { index })?;
    let offset_delta = body.read_varint()?;
    if u32::try_from(offset_delta) != Ok(index) {
        return Err(RecordError::OffsetDelta {
            index,
            found: offset_delta,
        });
    }
    let key = read_nullable(&mut body, index, Field::Key, KEY_SIZE_MAX)?;
    let value = read_nullable(&mut body, index, Field::Value, VALUE_SIZE_MAX)?;
    let header_count = body.read_varint()?;
    let count = match u32::try_from(header_count) {
        Ok(count) if count <= HEADERS_PER_RECORD_MAX => count,
        _ => {
            return Err(RecordError::HeaderCount {
                index,
                count: header_count,
                max: HEADERS_PER_RECORD_MAX,
            })
        }
    };
    let headers_start = body.position();
    for _ in 0..count {
        read_header(&mut body, index)?;
    }
    let headers_end = body.position();
    if body.remaining() != 0 {
        return Err(RecordError::RecordLengthMismatch {
            index,
            declared,
            used: u32::try_from(headers_end).unwrap_or(u32::MAX),
        });
    }
    // The headers are kept as their validated bytes and decoded again when iterated.
    let headers = Headers {
        bytes: &body.bytes()[headers_start..headers_end],
        count,
    };
    Ok(RecordRef {
        offset_delta: index,
        timestamp,
        key,
        value,
        headers,
    })
}

/// A record to append with [`BatchBuilder::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record<'a> {
    /// ms since the epoch.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
}

/// A record header to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: Option<&'a [u8]>,
}

/// Builds one record batch, as a producer does. The header is written by [`finish`], with
/// base offset and append time 0 (the node stamps them).
///
/// [`finish`]: BatchBuilder::finish
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    /// `headroom` bytes left for the caller, then the batch.
    buffer: Vec<u8>,
    headroom: usize,
    record_count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    timestamp_type: TimestampType,
    producer: ProducerFields,
    compression: Compression,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn nullable_size(field: Option<usize>) -> usize {
    match field {
        None => 1,
        // Lengths are bounded by the field limits (all below i32::MAX) before this is called.
        Some(size) => varint_size(i32::try_from(size).unwrap_or(i32::MAX)) + size,
    }
}

fn write_nullable(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => write_varint(out, -1),
        Some(bytes) => {
            write_varint(out, i32::try_from(bytes.len()).unwrap_or(i32::MAX));
            out.extend_from_slice(bytes);
        }
    }
}

fn check_size(field: Field, size: usize, max: u32) -> Result<(), BuildError> {
    if size > max as usize {
        return Err(BuildError::FieldTooLarge {
            field,
            size: len_u64(size),
            max,
        });
    }
    Ok(())
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::with_headroom(0, 4096)
    }

    /// A builder whose buffer starts with `headroom` bytes for the caller (a request frame's
    /// header and fields, written around the batch without copying it: see
    /// [`BatchBuilder::finish_with_headroom`]) and has room for a batch of `capacity` bytes,
    /// so a batch of up to that size is never moved as it grows.
    pub fn with_headroom(headroom: usize, capacity: usize) -> Self {
        let mut buffer = Vec::with_capacity(headroom + capacity.max(BATCH_HEADER_SIZE as usize));
        buffer.resize(headroom + BATCH_HEADER_SIZE as usize, 0);
        BatchBuilder {
            buffer,
            headroom,
            record_count: 0,
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            timestamp_type: TimestampType::CreateTime,
            producer: ProducerFields::default(),
            compression: Compression::None,
        }
    }

    /// Compresses the records with `codec` when the batch is finished (kept uncompressed if
    /// that would not make it smaller). The size limits apply to the uncompressed records.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    pub fn timestamp_type(mut self, timestamp_type: TimestampType) -> Self {
        self.timestamp_type = timestamp_type;
        self
    }

    pub fn producer(mut self, producer: ProducerFields) -> Self {
        self.producer = producer;
        self
    }

    /// Bytes the batch would have if finished now without compression.
    pub fn len(&self) -> u32 {
        // The batch never grows past BATCH_SIZE_MAX, which fits u32.
        u32::try_from(self.buffer.len() - self.headroom).unwrap_or(u32::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Encoded size of `record` if it were pushed next, or why it cannot be pushed at all.
    pub fn encoded_size(&self, record: &Record<'_>) -> Result<u32, BuildError> {
        let (_, size) = self.record_body_size(record)?;
        Ok(u32::try_from(size).unwrap_or(u32::MAX))
    }

    fn record_body_size(&self, record: &Record<'_>) -> Result<(usize, usize), BuildError> {
        if self.record_count >= RECORDS_PER_BATCH_MAX {
            return Err(BuildError::TooManyRecords {
                max: RECORDS_PER_BATCH_MAX,
            });
        }
        let key = record.key.map(<[u8]>::len);
        let value = record.value.map(<[u8]>::len);
        check_size(Field::Key, key.unwrap_or(0), KEY_SIZE_MAX)?;
        check_size(Field::Value, value.unwrap_or(0), VALUE_SIZE_MAX)?;
        if record.headers.len() > HEADERS_PER_RECORD_MAX as usize {
            return Err(BuildError::TooManyHeaders {
                count: len_u64(record.headers.len()),
                max: HEADERS_PER_RECORD_MAX,
            });
        }
        let first = if self.record_count == 0 {
            record.timestamp
        } else {
            self.first_timestamp
        };
        let delta = record
            .timestamp
            .checked_sub(first)
            .ok_or(BuildError::TimestampRange {
                timestamp: record.timestamp,
                first,
            })?;
        // Offset deltas are below RECORDS_PER_BATCH_MAX, far inside i32.
        let offset_delta = i32::try_from(self.record_count).unwrap_or(i32::MAX);
        let mut body = 1 + varlong_size(delta) + varint_size(offset_delta);
        body += nullable_size(key) + nullable_size(value);
        body += varint_size(i32::try_from(record.headers.len()).unwrap_or(i32::MAX));
        for header in record.headers {
            check_size(Field::HeaderName, header.name.len(), HEADER_NAME_SIZE_MAX)?;
            check_size(
                Field::HeaderValue,
                header.value.map_or(0, <[u8]>::len),
                HEADER_VALUE_SIZE_MAX,
            )?;
            body += nullable_size(Some(header.name.len()));
            body += nullable_size(header.value.map(<[u8]>::len));
        }
        // Every field is bounded above, so the body is far below i32::MAX.
        let total = varint_size(i32::try_from(body).unwrap_or(i32::MAX)) + body;
        let size = self.buffer.len() - self.headroom + total;
        if size > BATCH_SIZE_MAX as usize {
            return Err(BuildError::BatchFull {
                size: len_u64(size),
                max: BATCH_SIZE_MAX,
            });
        }
        Ok((body, total))
    }

    /// Appends a record. On error the builder is unchanged, so a full batch can be finished
    /// and the record pushed into the next one.
    pub fn push(&mut self, record: &Record<'_>) -> Result<(), BuildError> {
        let (body, _) = self.record_body_size(record)?;
        if self.record_count == 0 {
            self.first_timestamp = record.timestamp;
        }
        let out = &mut self.buffer;
        write_varint(out, i32::try_from(body).unwrap_or(i32::MAX));
        out.push(0);
        write_varlong(out, record.timestamp - self.first_timestamp);
        write_varint(out, i32::try_from(self.record_count).unwrap_or(i32::MAX));
        write_nullable(out, record.key);
        write_nullable(out, record.value);
        write_varint(out, i32::try_from(record.headers.len()).unwrap_or(i32::MAX));
        for header in record.headers {
            write_nullable(out, Some(header.name.as_bytes()));
            write_nullable(out, header.value);
        }
        self.record_count += 1;
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        Ok(())
    }

    /// Compresses the records if asked, writes the header and both CRCs and returns the
    /// batch's bytes.
    pub fn finish(self) -> Result<Vec<u8>, BuildError> {
        let (mut buffer, headroom) = self.finish_with_headroom()?;
        buffer.drain(..headroom);
        Ok(buffer)
    }

    /// As [`BatchBuilder::finish`], returning the whole buffer: the headroom the builder was
    /// made with (its bytes as the caller left them), then the batch from that index on.
    pub fn finish_with_headroom(mut self) -> Result<(Vec<u8>, usize), BuildError> {
        if self.record_count == 0 {
            return Err(BuildError::Empty);
        }
        let mut attributes = match self.timestamp_type {
            TimestampType::CreateTime => 0,
            TimestampType::LogAppendTime => ATTRIBUTE_TIMESTAMP_TYPE,
        };
        let codec = self.compression;
        let start = self.headroom;
        if codec != Compression::None {
            let records = &self.buffer[start + BATCH_HEADER_SIZE as usize..];
            let compressed = compress(codec, records).ok_or(BuildError::Compress { codec })?;
            if compressed.len() < records.len() {
                self.buffer.truncate(start + BATCH_HEADER_SIZE as usize);
                self.buffer.extend_from_slice(&compressed);
                attributes |= codec.bits();
            }
        }
        let header = BatchHeader {
            header_crc: U32::new(0),
            producer_crc: U32::new(0),
            base_offset: U64::new(0),
            append_time: I64::new(0),
            batch_length: U32::new(self.len()),
            magic: MAGIC,
            reserved0: 0,
            attributes: U16::new(attributes),
            record_count: U32::new(self.record_count),
            last_offset_delta: U32::new(self.record_count - 1),
            first_timestamp: I64::new(self.first_timestamp),
            max_timestamp: I64::new(self.max_timestamp),
            producer_id: I64::new(self.producer.producer_id),
            producer_epoch: I16::new(self.producer.producer_epoch),
            reserved1: U16::new(0),
            base_sequence: I32::new(self.producer.base_sequence),
        };
        let batch = &mut self.buffer[start..];
        batch[..BATCH_HEADER_SIZE as usize].copy_from_slice(header.as_bytes());
        let producer_crc = crc(&batch[PRODUCER_CRC_START..]);
        batch[offset_of!(BatchHeader, producer_crc)..][..4]
            .copy_from_slice(&producer_crc.to_le_bytes());
        let header_crc = header_crc_of(batch);
        batch[..4].copy_from_slice(&header_crc.to_le_bytes());
        Ok((self.buffer, start))
    }
}

/// Sets the node-assigned fields of a batch in place and refreshes the header CRC; the
/// producer CRC is untouched because it does not cover these fields.
///
/// `batch` must be a batch accepted by [`BatchRef::parse`] (a programmer error otherwise).
pub fn stamp(batch: &mut [u8], base_offset: Offset, append_time: i64) -> Result<(), BatchError> {
    let Ok((header, _)) = BatchHeader::mut_from_prefix(batch) else {
        panic!("stamp: {} bytes cannot hold a batch header", batch.len());
    };
    let record_count = header.record_count.get();
    if base_offset.0 > OFFSET_MAX.saturating_sub(u64::from(header.last_offset_delta.get())) {
        return Err(BatchError::OffsetOverflow {
            base_offset: base_offset.0,
            record_count,
        });
    }
    header.base_offset = U64::new(base_offset.0);
    header.append_time = I64::new(append_time);
    let header_crc = header_crc_of(header.as_bytes());
    header.header_crc = U32::new(header_crc);
    Ok(())
}
