//! Record batches between Kafka's v2 format and Spate's: the headers are rebuilt, the records
//! section is carried over as a zero-copy slice and never re-encoded.
//!
//! Invariants: [`kafka_to_spate`] returns only batches that `spate_format::BatchRef::
//! parse_validated` accepts (it checks the records with spate-format's own
//! `validate_records_section`, decompressed when the batch is compressed, and the fuzz target
//! `kafka_batch` asserts it on every input), and [`spate_to_kafka`] returns only
//! batches whose CRC-32C holds over exactly the bytes it checked Spate's CRCs on. Neither
//! panics or allocates in proportion to a length read from its input. Specified in
//! `docs/format/kafka-batch.md`.

use core::mem::offset_of;

use bytes::{BufMut, Bytes, BytesMut};
use spate_format::batch::{
    validate_records_section, BatchHeader, ATTRIBUTE_COMPRESSION_MASK, ATTRIBUTE_TIMESTAMP_TYPE,
    HEADER_CRC_START, MAGIC, PRODUCER_CRC_START,
};
use spate_format::compression::decompress;
use spate_format::error::RecordError;
use spate_format::limits::{
    BATCH_HEADER_SIZE, BATCH_SIZE_MAX, BATCH_SIZE_MIN, RECORDS_PER_BATCH_MAX,
};
use spate_format::{
    BatchError, BatchRef, Compression, DecompressError, ProducerFields, TimestampType,
};
use thiserror::Error;

// ------------------------------------------------------------------------------------------
// Kafka's v2 batch header (`DefaultRecordBatch`), big-endian, 61 bytes.
// ------------------------------------------------------------------------------------------

/// Offsets of the fields of a Kafka v2 batch header.
pub mod kafka_offset {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORDS_COUNT: usize = 57;
    /// Where the records start; the size of the header.
    pub const RECORDS: usize = 61;
}

/// Size of a Kafka v2 batch header.
pub const KAFKA_HEADER_SIZE: u32 = 61;

/// Bytes before `batchLength` counts: `baseOffset` and `batchLength` itself (Kafka's
/// `LOG_OVERHEAD`).
pub const KAFKA_LOG_OVERHEAD: u32 = 12;

/// Bytes needed to read the magic byte, at the same place in every Kafka message format.
const KAFKA_MAGIC_PREFIX: usize = kafka_offset::MAGIC + 1;

/// The magic byte of a Kafka v2 batch.
pub const KAFKA_MAGIC: i8 = 2;

/// Kafka attribute bit 4: the batch belongs to a transaction.
pub const KAFKA_ATTRIBUTE_TRANSACTIONAL: u16 = 1 << 4;
/// Kafka attribute bit 5: the batch holds control records (transaction markers).
pub const KAFKA_ATTRIBUTE_CONTROL: u16 = 1 << 5;
/// Kafka attribute bit 6: the log cleaner set a delete horizon (never set by producers).
pub const KAFKA_ATTRIBUTE_DELETE_HORIZON: u16 = 1 << 6;

/// Kafka's `partitionLeaderEpoch` when there is none: a single node has no leader epochs
/// (its Metadata answers -1 too, so clients skip epoch validation).
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// Bytes a Spate batch has more than the Kafka batch with the same records.
pub const HEADER_SIZE_DIFFERENCE: u32 = BATCH_HEADER_SIZE - KAFKA_HEADER_SIZE;

/// Largest Kafka batch that converts: the one whose Spate batch is `BATCH_SIZE_MAX`.
pub const KAFKA_BATCH_SIZE_MAX: u32 = BATCH_SIZE_MAX - HEADER_SIZE_DIFFERENCE;

/// Smallest Kafka batch that converts: a header and one minimal record.
pub const KAFKA_BATCH_SIZE_MIN: u32 = BATCH_SIZE_MIN - HEADER_SIZE_DIFFERENCE;

// Attribute bits 0-3 mean the same in both formats, so they are copied as they are.
const _: () = assert!(ATTRIBUTE_COMPRESSION_MASK == 0b0111 && ATTRIBUTE_TIMESTAMP_TYPE == 0b1000);
const _: () = assert!(KAFKA_HEADER_SIZE as usize == kafka_offset::RECORDS);
const _: () = assert!(KAFKA_LOG_OVERHEAD as usize == kafka_offset::PARTITION_LEADER_EPOCH);
const _: () = assert!(BATCH_HEADER_SIZE == 72);
const _: () = assert!(HEADER_SIZE_DIFFERENCE == 11);
const _: () = assert!(KAFKA_BATCH_SIZE_MAX == 1_048_565);
// The `batchLength` of the largest batch fits Kafka's i32.
const _: () = assert!(KAFKA_BATCH_SIZE_MAX as u64 <= i32::MAX as u64);
// Record counts and offset deltas fit Kafka's i32.
const _: () = assert!(RECORDS_PER_BATCH_MAX as u64 <= i32::MAX as u64);

/// Kafka error codes this module's errors map to (from Kafka's `Errors.java`).
pub mod kafka_error_code {
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const INVALID_RECORD: i16 = 87;
}

/// Why the `records` of a Kafka Produce partition entry cannot become a Spate batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KafkaBatchError {
    #[error("Kafka batch needs {needed} bytes, only {available} available")]
    Truncated { needed: u64, available: u64 },
    #[error("magic {found} is a v0/v1 message set; only v2 record batches are accepted")]
    LegacyMagic { found: i8 },
    #[error("unknown magic {found}; expected 2")]
    Magic { found: i8 },
    #[error("Kafka batchLength {length} is below the smallest batch ({min})")]
    Length { length: i32, min: u32 },
    #[error("Kafka batch of {size} bytes is over the limit of {max}")]
    TooLarge { size: u64, max: u32 },
    #[error("Kafka batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("a second record batch follows the first ({count} bytes); send one per partition")]
    SecondBatch { count: u64 },
    #[error("{count} bytes follow the record batch")]
    TrailingBytes { count: u64 },
    #[error("transactional batches are not supported (attributes {attributes:#06x})")]
    Transactional { attributes: u16 },
    #[error("control batches cannot be produced (attributes {attributes:#06x})")]
    Control { attributes: u16 },
    #[error("unsupported attributes {found:#06x}")]
    Attributes { found: u16 },
    #[error("record count {count} is below 1")]
    RecordCount { count: i32 },
    #[error("{count} records in one batch, over the limit of {max}")]
    TooManyRecords { count: i32, max: u32 },
    #[error("lastOffsetDelta {found}, expected {expected} (record count - 1)")]
    LastOffsetDelta { expected: i32, found: i32 },
    #[error("invalid records: {0}")]
    Records(#[from] RecordError),
}

impl KafkaBatchError {
    /// The Kafka error code a Produce answer carries for this partition.
    pub fn kafka_error_code(&self) -> i16 {
        use kafka_error_code::*;
        match self {
            KafkaBatchError::Truncated { .. }
            | KafkaBatchError::Magic { .. }
            | KafkaBatchError::Length { .. }
            | KafkaBatchError::Crc { .. }
            | KafkaBatchError::Attributes { .. }
            | KafkaBatchError::RecordCount { .. } => CORRUPT_MESSAGE,
            KafkaBatchError::LegacyMagic { .. } => UNSUPPORTED_FOR_MESSAGE_FORMAT,
            KafkaBatchError::TooLarge { .. } => MESSAGE_TOO_LARGE,
            KafkaBatchError::TooManyRecords { .. } => RECORD_LIST_TOO_LARGE,
            // Kafka's own answers: one batch per partition entry, no control batches from
            // clients, and record rules are INVALID_RECORD (`InvalidRecordException`).
            KafkaBatchError::SecondBatch { .. }
            | KafkaBatchError::TrailingBytes { .. }
            | KafkaBatchError::Transactional { .. }
            | KafkaBatchError::Control { .. }
            | KafkaBatchError::LastOffsetDelta { .. } => INVALID_RECORD,
            KafkaBatchError::Records(error) => match error {
                // Record structure: Kafka's `CorruptRecordException`.
                RecordError::UnexpectedEnd
                | RecordError::VarintOverflow
                | RecordError::VarintNotMinimal
                | RecordError::BadRecordLength { .. }
                | RecordError::RecordLengthMismatch { .. }
                | RecordError::RecordCount { .. }
                | RecordError::TrailingBytes { .. }
                | RecordError::Compressed { .. }
                | RecordError::Decompress(DecompressError::Corrupt { .. }) => CORRUPT_MESSAGE,
                // A batch that decompresses past Spate's limit ("zip bomb").
                RecordError::Decompress(DecompressError::TooLarge { .. }) => MESSAGE_TOO_LARGE,
                // Rules about the content, which Kafka reports as INVALID_RECORD; some are
                // Spate's own (limits, UTF-8 header names; the first timestamp delta 0 only
                // in format version 1, which the listener does not write).
                RecordError::RecordAttributes { .. }
                | RecordError::OffsetDelta { .. }
                | RecordError::FirstTimestampDelta { .. }
                | RecordError::TimestampOverflow { .. }
                | RecordError::FieldLength { .. }
                | RecordError::HeaderCount { .. }
                | RecordError::HeaderNameUtf8 { .. }
                | RecordError::MaxTimestamp { .. } => INVALID_RECORD,
            },
        }
    }
}

/// A Spate batch converted from a Kafka batch: a freshly built 72-byte header and the Kafka
/// batch's records section, shared with the input (no copy).
///
/// Its base offset and append time are 0: the node stamps them as for any produced batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpateBatch {
    header: [u8; BATCH_HEADER_SIZE as usize],
    records: Bytes,
}

impl SpateBatch {
    /// The Spate header, both CRCs included.
    pub fn header(&self) -> &[u8; BATCH_HEADER_SIZE as usize] {
        &self.header
    }

    /// The records section: a slice of the Kafka input.
    pub fn records(&self) -> &Bytes {
        &self.records
    }

    /// Total bytes of the batch.
    pub fn len(&self) -> u32 {
        // Bounded by BATCH_SIZE_MAX at conversion.
        BATCH_HEADER_SIZE + u32::try_from(self.records.len()).unwrap_or(u32::MAX)
    }

    /// Always false: a batch holds a header and at least one record.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn record_count(&self) -> u32 {
        read_le_u32(&self.header, offset_of!(BatchHeader, record_count))
    }

    /// The header and the records as two buffers, for a writer that sends them back to back
    /// (no copy of the records).
    pub fn into_parts(self) -> (Bytes, Bytes) {
        (Bytes::copy_from_slice(&self.header), self.records)
    }

    /// Appends the whole batch to `out`: one copy of the records, into a buffer the caller
    /// was going to write anyway (a node Produce frame).
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.len() as usize);
        out.put_slice(&self.header);
        out.put_slice(&self.records);
    }

    /// The whole batch as one buffer, as the node's Produce frame carries it: one copy of the
    /// records.
    pub fn to_contiguous(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len() as usize);
        self.write_to(&mut out);
        out.freeze()
    }
}

fn read_be_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn read_be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_be_i32(bytes: &[u8], at: usize) -> i32 {
    read_be_u32(bytes, at) as i32
}

fn read_be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}

fn read_le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn put_bytes(into: &mut [u8], at: usize, bytes: &[u8]) {
    into[at..at + bytes.len()].copy_from_slice(bytes);
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Converts the `records` of one Kafka Produce partition entry, which must hold exactly one
/// v2 record batch, into a Spate batch (format version 2) the node accepts.
///
/// Checks, in this order (the first failure is returned): enough bytes for the magic; magic
/// 2 (0/1 are [`KafkaBatchError::LegacyMagic`]); `batchLength` at least a minimal batch and
/// the batch within Spate's size limit; the whole batch present; the CRC-32C; nothing after
/// the batch; the attributes (a known codec and the timestamp type; no transactional,
/// control or other bits); the record count and `lastOffsetDelta`; then every record, by
/// spate-format's rules, after a bounded decompression if the batch is compressed (the
/// compressed bytes are what is stored; the decompressed ones are dropped).
///
/// The Spate header's `max_timestamp` is the records' maximum, computed here, as a Kafka
/// broker rewrites `maxTimestamp` when it validates a batch; a producer's wrong value is
/// therefore corrected, not refused. `baseOffset` and `partitionLeaderEpoch` are ignored.
pub fn kafka_to_spate(records: &Bytes) -> Result<SpateBatch, KafkaBatchError> {
    let input: &[u8] = records;
    if input.len() < KAFKA_MAGIC_PREFIX {
        return Err(KafkaBatchError::Truncated {
            needed: KAFKA_MAGIC_PREFIX as u64,
            available: len_u64(input.len()),
        });
    }
    let magic = input[kafka_offset::MAGIC] as i8;
    match magic {
        KAFKA_MAGIC => {}
        0 | 1 => return Err(KafkaBatchError::LegacyMagic { found: magic }),
        _ => return Err(KafkaBatchError::Magic { found: magic }),
    }
    let length = read_be_i32(input, kafka_offset::BATCH_LENGTH);
    let min_length = KAFKA_BATCH_SIZE_MIN - KAFKA_LOG_OVERHEAD;
    let size = match u32::try_from(length) {
        // length ≤ i32::MAX, so adding the 12 bytes before it cannot overflow u32.
        Ok(length) if length >= min_length => length + KAFKA_LOG_OVERHEAD,
        _ => {
            return Err(KafkaBatchError::Length {
                length,
                min: min_length,
            })
        }
    };
    if size > KAFKA_BATCH_SIZE_MAX {
        return Err(KafkaBatchError::TooLarge {
            size: u64::from(size),
            max: KAFKA_BATCH_SIZE_MAX,
        });
    }
    let size = size as usize;
    let Some(batch) = input.get(..size) else {
        return Err(KafkaBatchError::Truncated {
            needed: len_u64(size),
            available: len_u64(input.len()),
        });
    };
    let stored = read_be_u32(batch, kafka_offset::CRC);
    let computed = crc32c::crc32c(&batch[kafka_offset::ATTRIBUTES..]);
    if stored != computed {
        return Err(KafkaBatchError::Crc { stored, computed });
    }
    let rest = &input[size..];
    if !rest.is_empty() {
        let count = len_u64(rest.len());
        // A second batch (any magic) is what a client that packs several batches into one
        // partition entry sends; anything else after the batch is garbage. Both are refused.
        let second = rest.len() >= KAFKA_MAGIC_PREFIX
            && matches!(rest[kafka_offset::MAGIC] as i8, 0..=KAFKA_MAGIC);
        return Err(if second {
            KafkaBatchError::SecondBatch { count }
        } else {
            KafkaBatchError::TrailingBytes { count }
        });
    }
    let attributes = read_be_u16(batch, kafka_offset::ATTRIBUTES);
    if attributes & KAFKA_ATTRIBUTE_CONTROL != 0 {
        return Err(KafkaBatchError::Control { attributes });
    }
    if attributes & KAFKA_ATTRIBUTE_TRANSACTIONAL != 0 {
        return Err(KafkaBatchError::Transactional { attributes });
    }
    let codec = Compression::from_bits(attributes & ATTRIBUTE_COMPRESSION_MASK);
    let known = ATTRIBUTE_COMPRESSION_MASK | ATTRIBUTE_TIMESTAMP_TYPE;
    let Some(codec) = codec.filter(|_| attributes & !known == 0) else {
        return Err(KafkaBatchError::Attributes { found: attributes });
    };
    let count = read_be_i32(batch, kafka_offset::RECORDS_COUNT);
    let record_count = match u32::try_from(count) {
        Ok(0) | Err(_) => return Err(KafkaBatchError::RecordCount { count }),
        Ok(n) if n > RECORDS_PER_BATCH_MAX => {
            return Err(KafkaBatchError::TooManyRecords {
                count,
                max: RECORDS_PER_BATCH_MAX,
            })
        }
        Ok(n) => n,
    };
    let last_offset_delta = read_be_i32(batch, kafka_offset::LAST_OFFSET_DELTA);
    if last_offset_delta != count - 1 {
        return Err(KafkaBatchError::LastOffsetDelta {
            expected: count - 1,
            found: last_offset_delta,
        });
    }
    let first_timestamp = read_be_i64(batch, kafka_offset::BASE_TIMESTAMP);
    let section = &batch[kafka_offset::RECORDS..];
    let max_timestamp = match codec {
        Compression::None => {
            validate_records_section(section, record_count, first_timestamp, MAGIC)?
        }
        codec => {
            let plain = decompress(codec, section).map_err(RecordError::from)?;
            validate_records_section(&plain, record_count, first_timestamp, MAGIC)?
        }
    };
    let producer = ProducerFields {
        producer_id: read_be_i64(batch, kafka_offset::PRODUCER_ID),
        producer_epoch: read_be_u16(batch, kafka_offset::PRODUCER_EPOCH) as i16,
        base_sequence: read_be_i32(batch, kafka_offset::BASE_SEQUENCE),
    };
    let records = records.slice(kafka_offset::RECORDS..size);
    let header = spate_header(&SpateHeaderFields {
        records: &records,
        attributes,
        record_count,
        first_timestamp,
        max_timestamp,
        producer,
    });
    Ok(SpateBatch { header, records })
}

struct SpateHeaderFields<'a> {
    records: &'a [u8],
    attributes: u16,
    record_count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer: ProducerFields,
}

/// Builds an unstamped Spate header (base offset and append time 0) for `fields.records`,
/// with both CRCs.
fn spate_header(fields: &SpateHeaderFields<'_>) -> [u8; BATCH_HEADER_SIZE as usize] {
    let mut header = [0u8; BATCH_HEADER_SIZE as usize];
    let length = u32::try_from(BATCH_HEADER_SIZE as usize + fields.records.len())
        .ok()
        .filter(|length| *length <= BATCH_SIZE_MAX)
        .expect("the caller checked the batch size");
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, batch_length),
        &length.to_le_bytes(),
    );
    put_bytes(&mut header, offset_of!(BatchHeader, magic), &[MAGIC]);
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, attributes),
        &fields.attributes.to_le_bytes(),
    );
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, record_count),
        &fields.record_count.to_le_bytes(),
    );
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, last_offset_delta),
        &(fields.record_count - 1).to_le_bytes(),
    );
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, first_timestamp),
        &fields.first_timestamp.to_le_bytes(),
    );
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, max_timestamp),
        &fields.max_timestamp.to_le_bytes(),
    );
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, producer_id),
        &fields.producer.producer_id.to_le_bytes(),
    );
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, producer_epoch),
        &fields.producer.producer_epoch.to_le_bytes(),
    );
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, base_sequence),
        &fields.producer.base_sequence.to_le_bytes(),
    );
    let mut producer_crc = crc32fast::Hasher::new();
    producer_crc.update(&header[PRODUCER_CRC_START..]);
    producer_crc.update(fields.records);
    let producer_crc = producer_crc.finalize();
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, producer_crc),
        &producer_crc.to_le_bytes(),
    );
    let header_crc = crc32fast::hash(&header[HEADER_CRC_START..]);
    put_bytes(
        &mut header,
        offset_of!(BatchHeader, header_crc),
        &header_crc.to_le_bytes(),
    );
    header
}

// ------------------------------------------------------------------------------------------
// Fetch: Spate batches → Kafka v2 batches.
// ------------------------------------------------------------------------------------------

/// Why a node's Fetch answer could not be converted. The node sends only whole, checked
/// batches, so any of these is a node bug or damage on the way: the caller answers the
/// partition with CORRUPT_MESSAGE (or KAFKA_STORAGE_ERROR) and logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SpateBatchError {
    #[error("batch {index} at byte {position} of the fetch answer: {error}")]
    Batch {
        index: u32,
        position: u64,
        error: BatchError,
    },
}

/// Kafka record batches built from a node Fetch answer: for each batch a 61-byte Kafka header
/// followed by the Spate batch's records section (a slice of the node's answer, no copy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaRecords {
    parts: Vec<Bytes>,
    len: usize,
}

impl KafkaRecords {
    /// Bytes that already are Kafka record batches, as one part.
    pub fn from_kafka_bytes(bytes: Bytes) -> KafkaRecords {
        let len = bytes.len();
        let parts = if bytes.is_empty() {
            Vec::new()
        } else {
            vec![bytes]
        };
        KafkaRecords { parts, len }
    }

    /// Header, records, header, records…: written back to back they are the Kafka
    /// `records` field (with `write_vectored`, no copy at all).
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// Total bytes of all parts.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends every part to `out`: one copy of the records.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.len);
        for part in &self.parts {
            out.put_slice(part);
        }
    }

    /// All parts in one buffer, as `kafka_protocol`'s `PartitionData::records` takes it: one
    /// copy of the records (and none when the answer is empty).
    pub fn to_contiguous(&self) -> Bytes {
        if self.parts.is_empty() {
            return Bytes::new();
        }
        let mut out = BytesMut::with_capacity(self.len);
        self.write_to(&mut out);
        out.freeze()
    }
}

/// Converts a node Fetch answer's `records` (whole Spate batches back to back, as
/// `spate_proto::FetchResponse::records` promises) into Kafka v2 record batches.
///
/// Each batch's header and both of its CRCs are checked (`BatchRef::parse_prefix`) before its
/// Kafka CRC-32C is computed: the new CRC would otherwise vouch for damaged bytes, and a Kafka
/// consumer could not tell. The records themselves are not decoded again: the node validated
/// them when the batch was produced. A partial batch at the end is an error, since the node
/// never sends one. The attributes are copied as they are: a compressed batch (format v2) has
/// the same layout in both formats, its records section compressed as a whole.
pub fn spate_to_kafka(records: &Bytes) -> Result<KafkaRecords, SpateBatchError> {
    spate_to_kafka_with_epochs(records, &[])
}

/// [`spate_to_kafka`], each batch's `partitionLeaderEpoch` taken from the epoch boundaries
/// of the node's answer (`spate_proto::FetchResponse::epochs`): the last boundary at or
/// below the batch's base offset, or the first one for a batch that starts below it and
/// holds its start (the answer's first batch holds the fetched offset, where the first
/// boundary starts); -1 for a batch wholly below the first boundary (records older than the
/// leader's chain) and without boundaries (KIP-320: clients validate positions with the
/// epochs of the records they consumed).
pub fn spate_to_kafka_with_epochs(
    records: &Bytes,
    epochs: &[spate_proto::EpochBoundary],
) -> Result<KafkaRecords, SpateBatchError> {
    let mut out = KafkaRecords::default();
    let mut position = 0usize;
    let mut index = 0u32;
    let mut boundary = 0usize;
    while position < records.len() {
        let batch = BatchRef::parse_prefix(&records[position..]).map_err(|error| {
            SpateBatchError::Batch {
                index,
                position: len_u64(position),
                error,
            }
        })?;
        let length = batch.as_bytes().len();
        let section = records.slice(position + BATCH_HEADER_SIZE as usize..position + length);
        let mut kafka_header = kafka_header(&batch, &section);
        while epochs
            .get(boundary + 1)
            .is_some_and(|next| next.start_offset <= batch.base_offset().0)
        {
            boundary += 1;
        }
        let last = batch
            .base_offset()
            .0
            .saturating_add(u64::from(batch.header().last_offset_delta.get()));
        if let Some(epoch) = epochs
            .get(boundary)
            .filter(|epoch| epoch.start_offset <= last)
        {
            // Outside the bytes the CRC covers. An epoch beyond Kafka's range is not given.
            let epoch = i32::try_from(epoch.epoch).unwrap_or(NO_PARTITION_LEADER_EPOCH);
            put_bytes(
                &mut kafka_header,
                kafka_offset::PARTITION_LEADER_EPOCH,
                &epoch.to_be_bytes(),
            );
        }
        out.len += kafka_header.len() + section.len();
        out.parts.push(Bytes::copy_from_slice(&kafka_header));
        out.parts.push(section);
        position += length;
        index = index.saturating_add(1);
    }
    Ok(out)
}

/// Builds the Kafka v2 header of `batch`, whose records section is `section`.
fn kafka_header(batch: &BatchRef<'_>, section: &[u8]) -> [u8; KAFKA_HEADER_SIZE as usize] {
    use kafka_offset::*;
    let mut header = [0u8; KAFKA_HEADER_SIZE as usize];
    // Spate offsets are at most OFFSET_MAX = i64::MAX and batches at most BATCH_SIZE_MAX, so
    // every conversion below is exact.
    let base_offset = batch.base_offset().0 as i64;
    let batch_length = (batch.len() - HEADER_SIZE_DIFFERENCE - KAFKA_LOG_OVERHEAD) as i32;
    let attributes = batch.header().attributes.get();
    // Kafka readers take a log-append-time batch's record timestamps from maxTimestamp.
    let max_timestamp = match batch.timestamp_type() {
        TimestampType::CreateTime => batch.max_timestamp(),
        TimestampType::LogAppendTime => batch.append_time(),
    };
    let producer = batch.producer();
    put_bytes(&mut header, BASE_OFFSET, &base_offset.to_be_bytes());
    put_bytes(&mut header, BATCH_LENGTH, &batch_length.to_be_bytes());
    put_bytes(
        &mut header,
        PARTITION_LEADER_EPOCH,
        &NO_PARTITION_LEADER_EPOCH.to_be_bytes(),
    );
    put_bytes(&mut header, MAGIC, &[KAFKA_MAGIC as u8]);
    put_bytes(&mut header, ATTRIBUTES, &attributes.to_be_bytes());
    put_bytes(
        &mut header,
        LAST_OFFSET_DELTA,
        &(batch.header().last_offset_delta.get() as i32).to_be_bytes(),
    );
    put_bytes(
        &mut header,
        BASE_TIMESTAMP,
        &batch.first_timestamp().to_be_bytes(),
    );
    put_bytes(&mut header, MAX_TIMESTAMP, &max_timestamp.to_be_bytes());
    put_bytes(
        &mut header,
        PRODUCER_ID,
        &producer.producer_id.to_be_bytes(),
    );
    put_bytes(
        &mut header,
        PRODUCER_EPOCH,
        &producer.producer_epoch.to_be_bytes(),
    );
    put_bytes(
        &mut header,
        BASE_SEQUENCE,
        &producer.base_sequence.to_be_bytes(),
    );
    put_bytes(
        &mut header,
        RECORDS_COUNT,
        &(batch.record_count() as i32).to_be_bytes(),
    );
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[ATTRIBUTES..]), section);
    put_bytes(&mut header, CRC, &crc.to_be_bytes());
    header
}
