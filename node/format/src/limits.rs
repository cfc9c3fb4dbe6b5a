//! Every limit of Spate's storage formats, as a named constant with the reason for its value.
//!
//! Related limits are checked against each other at compile time at the bottom of this file,
//! so changing one that would break another is a build error, not a production incident.

/// Unit of O_DIRECT I/O and of the crash model: writes are 4 KiB-aligned and 4 KiB-sized,
/// and a crash may keep any subset of the unsynced sectors.
pub const SECTOR_SIZE: u32 = 4096;

/// Size of the fixed record-batch header (see `docs/format/record-batch.md`).
pub const BATCH_HEADER_SIZE: u32 = 72;

/// Smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
pub const RECORD_SIZE_MIN: u32 = 7;

/// Smallest valid batch: a header and one minimal record.
pub const BATCH_SIZE_MIN: u32 = BATCH_HEADER_SIZE + RECORD_SIZE_MIN;

/// Largest batch a producer may send and a shard stores: 1 MiB, Kafka's default
/// `message.max.bytes`. It bounds the memory one produce request can pin.
pub const BATCH_SIZE_MAX: u32 = 1 << 20;

/// Most records in one batch. Bounds per-batch work (validation, iteration) independently of
/// the byte size, and keeps offset deltas far inside `u32`.
pub const RECORDS_PER_BATCH_MAX: u32 = 1 << 16;

/// Largest records section a compressed batch may decompress to (32 MiB: 32 times the largest
/// batch). Bounds the memory of validating or reading one batch; a batch that expands beyond
/// it is refused ("zip bomb").
pub const DECOMPRESSED_SIZE_MAX: u32 = 32 << 20;

/// Largest record key. Keys are hashed for partitioning and will be held in memory by log
/// compaction, so they are kept small.
pub const KEY_SIZE_MAX: u32 = 64 * 1024;

/// Largest record value: whatever fits in the largest batch next to the header.
pub const VALUE_SIZE_MAX: u32 = BATCH_SIZE_MAX - BATCH_HEADER_SIZE - RECORD_SIZE_MIN;

/// Most headers on one record. Headers are metadata (trace ids, content types), not payload.
pub const HEADERS_PER_RECORD_MAX: u32 = 256;

/// Largest header name in bytes (UTF-8).
pub const HEADER_NAME_SIZE_MAX: u32 = 1024;

/// Largest header value in bytes.
pub const HEADER_VALUE_SIZE_MAX: u32 = 64 * 1024;

/// Shortest topic name.
pub const TOPIC_NAME_LENGTH_MIN: u32 = 1;

/// Longest topic name: 249 characters, as in Kafka, so that a topic directory name
/// (`NAME-PARTITION`) stays under the 255-byte file-name limit of Linux filesystems.
pub const TOPIC_NAME_LENGTH_MAX: u32 = 249;

/// Most partitions in one topic. Each partition holds open files and memory on its shard.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;

/// Smallest segment size a topic may configure. Small segments are useful in tests; a segment
/// always takes at least one batch, so it may exceed its configured size by one batch.
pub const SEGMENT_SIZE_MIN: u32 = 64 * 1024;

/// Largest segment size a topic may configure: 2 GiB. File positions in the offset index are
/// `u32`, so a segment plus one overflowing batch must stay below 4 GiB.
pub const SEGMENT_SIZE_MAX: u32 = 1 << 31;

/// Default segment size: 1 GiB, as Kafka's `log.segment.bytes`.
pub const SEGMENT_SIZE_DEFAULT: u32 = 1 << 30;

/// One offset-index entry per this many bytes of log (the index is sparse): a lookup then
/// scans at most this many bytes plus one batch.
pub const INDEX_INTERVAL_BYTES: u32 = 4096;

/// Size of one offset-index entry: relative offset (u32) and file position (u32).
pub const OFFSET_INDEX_ENTRY_SIZE: u32 = 8;

/// Size of one time-index entry: timestamp (i64) and relative offset (u32).
pub const TIME_INDEX_ENTRY_SIZE: u32 = 12;

/// Most entries in one index file: one per interval of the largest segment plus its
/// overflowing batch, plus one. Bounds the allocation when an index file is read.
pub const INDEX_ENTRIES_MAX: u32 =
    (SEGMENT_SIZE_MAX / INDEX_INTERVAL_BYTES) + (BATCH_SIZE_MAX / INDEX_INTERVAL_BYTES) + 1;

/// Largest offset: offsets stay below `i64::MAX` so that they translate to Kafka's signed
/// 64-bit offsets unchanged.
pub const OFFSET_MAX: u64 = i64::MAX as u64;

const _: () = assert!(SECTOR_SIZE.is_power_of_two());
const _: () = assert!(BATCH_HEADER_SIZE.is_multiple_of(8));
const _: () = assert!(BATCH_SIZE_MIN <= BATCH_SIZE_MAX);
const _: () = assert!(KEY_SIZE_MAX <= VALUE_SIZE_MAX);
const _: () = assert!(HEADER_VALUE_SIZE_MAX <= VALUE_SIZE_MAX);
// A full batch of minimal records must be representable.
const _: () =
    assert!(RECORDS_PER_BATCH_MAX as u64 * RECORD_SIZE_MIN as u64 <= BATCH_SIZE_MAX as u64);
// A segment never has to split a batch: the smallest segment holds the largest batch.
const _: () = assert!(SEGMENT_SIZE_MIN >= 2 * SECTOR_SIZE);
const _: () = assert!(SEGMENT_SIZE_MIN <= SEGMENT_SIZE_DEFAULT);
const _: () = assert!(SEGMENT_SIZE_DEFAULT <= SEGMENT_SIZE_MAX);
const _: () = assert!(
    SEGMENT_SIZE_MIN.is_multiple_of(SECTOR_SIZE) && SEGMENT_SIZE_MAX.is_multiple_of(SECTOR_SIZE)
);
// Positions inside a segment fit the index's u32 even with one batch past the roll point.
const _: () = assert!(SEGMENT_SIZE_MAX as u64 + BATCH_SIZE_MAX as u64 <= u32::MAX as u64);
// Relative offsets inside a segment fit the index's u32: every record takes at least
// RECORD_SIZE_MIN bytes.
const _: () = assert!(
    (SEGMENT_SIZE_MAX as u64 + BATCH_SIZE_MAX as u64) / RECORD_SIZE_MIN as u64 <= u32::MAX as u64
);
const _: () = assert!(INDEX_INTERVAL_BYTES >= SECTOR_SIZE);
// A partition directory `NAME-PARTITION` (partition below 10,000: four digits) fits the
// 255-byte file-name limit.
const _: () = assert!(PARTITIONS_PER_TOPIC_MAX <= 10_000);
const _: () = assert!(TOPIC_NAME_LENGTH_MAX + 1 + 4 <= 255);
