//! Record-batch tests: the golden bytes of `docs/format/record-batch.md`, round trips of any
//! batch, and damage (flipped bytes, truncation) that must always be detected.

use proptest::prelude::*;
use spate_format::limits::{BATCH_HEADER_SIZE, BATCH_SIZE_MAX, RECORDS_PER_BATCH_MAX};
use spate_format::{
    batches, stamp, BatchBuilder, BatchError, BatchRef, BuildError, Header, Offset, Record,
    RecordError,
};

/// An owned record, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn build(records: &[Owned]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for record in records {
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|(name, value)| Header {
                name,
                value: value.as_deref(),
            })
            .collect();
        builder
            .push(&Record {
                timestamp: record.timestamp,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers: &headers,
            })
            .expect("record fits");
    }
    builder.finish().expect("batch is not empty")
}

fn read_back(bytes: &[u8]) -> Vec<Owned> {
    let batch = BatchRef::parse_validated(bytes).expect("valid batch");
    batch
        .records()
        .map(|record| {
            let record = record.expect("valid record");
            Owned {
                timestamp: record.timestamp,
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.map(<[u8]>::to_vec),
                headers: record
                    .headers
                    .iter()
                    .map(|header| (header.name.to_owned(), header.value.map(<[u8]>::to_vec)))
                    .collect(),
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn golden_records() -> Vec<Owned> {
    vec![
        Owned {
            timestamp: 1_767_225_600_000,
            key: Some(b"k1".to_vec()),
            value: Some(b"hello".to_vec()),
            headers: vec![],
        },
        Owned {
            timestamp: 1_767_225_600_005,
            key: None,
            value: Some(b"world".to_vec()),
            headers: vec![("trace".to_owned(), Some(b"7".to_vec()))],
        },
    ]
}

#[test]
fn golden_bytes_match_the_doc() {
    let mut bytes = build(&golden_records());
    stamp(&mut bytes, Offset(42), 1_767_225_600_010).unwrap();
    let expected: String = GOLDEN_LINES
        .iter()
        .map(|line| line.split_whitespace().collect::<String>())
        .collect();
    assert_eq!(
        hex(&bytes),
        expected,
        "update docs/format/record-batch.md if the format changed"
    );
    let batch = BatchRef::parse_validated(&bytes).unwrap();
    assert_eq!(batch.base_offset(), Offset(42));
    assert_eq!(batch.last_offset(), Offset(43));
    assert_eq!(batch.append_time(), 1_767_225_600_010);
    assert_eq!(batch.max_timestamp(), 1_767_225_600_005);
    assert_eq!(read_back(&bytes), golden_records());
}

/// The example batch of `docs/format/record-batch.md`, as the node stores it: base offset 42,
/// appended at 2026-01-01T00:00:00.010Z. One line per field, as in the doc's table.
const GOLDEN_LINES: &[&str] = &[
    "fde541a8",         // header_crc
    "ad48a21b",         // producer_crc
    "2a00000000000000", // base_offset = 42
    "0aa8da769b010000", // append_time = 1767225600010
    "6a000000",         // batch_length = 106
    "01",               // magic
    "00",               // reserved0
    "0000",             // attributes: no compression, create time
    "02000000",         // record_count = 2
    "01000000",         // last_offset_delta = 1
    "00a8da769b010000", // first_timestamp = 1767225600000
    "05a8da769b010000", // max_timestamp = 1767225600005
    "ffffffffffffffff", // producer_id = -1
    "ffff",             // producer_epoch = -1
    "0000",             // reserved1
    "ffffffff",         // base_sequence = -1
    // record 0: length 13, attributes 0, timestamp delta 0, offset delta 0,
    // key "k1", value "hello", 0 headers
    "1a 00 00 00 04 6b31 0a 68656c6c6f 00",
    // record 1: length 19, attributes 0, timestamp delta 5, offset delta 1,
    // key null, value "world", 1 header: "trace" = "7"
    "26 00 0a 02 01 0a 776f726c64 02 0a 7472616365 02 37",
];

#[test]
fn builder_refuses_what_would_break_limits() {
    let mut builder = BatchBuilder::new();
    assert_eq!(builder.clone().finish(), Err(BuildError::Empty));
    let big = vec![7u8; (BATCH_SIZE_MAX - BATCH_HEADER_SIZE - 16) as usize];
    builder
        .push(&Record {
            timestamp: 1,
            value: Some(&big),
            ..Record::default()
        })
        .unwrap();
    let before = builder.len();
    let error = builder.push(&Record {
        timestamp: 1,
        value: Some(&[0; 64]),
        ..Record::default()
    });
    assert!(
        matches!(error, Err(BuildError::BatchFull { .. })),
        "{error:?}"
    );
    assert_eq!(
        builder.len(),
        before,
        "a refused push leaves the builder unchanged"
    );
    let bytes = builder.finish().unwrap();
    assert!(bytes.len() <= BATCH_SIZE_MAX as usize);
    BatchRef::parse_validated(&bytes).unwrap();

    let mut builder = BatchBuilder::new();
    for _ in 0..RECORDS_PER_BATCH_MAX {
        builder.push(&Record::default()).unwrap();
    }
    assert_eq!(
        builder.push(&Record::default()),
        Err(BuildError::TooManyRecords {
            max: RECORDS_PER_BATCH_MAX
        })
    );
    let bytes = builder.finish().unwrap();
    assert_eq!(
        BatchRef::parse_validated(&bytes).unwrap().record_count(),
        RECORDS_PER_BATCH_MAX
    );

    let mut builder = BatchBuilder::new();
    builder
        .push(&Record {
            timestamp: i64::MIN,
            ..Record::default()
        })
        .unwrap();
    assert!(matches!(
        builder.push(&Record {
            timestamp: i64::MAX,
            ..Record::default()
        }),
        Err(BuildError::TimestampRange { .. })
    ));
}

#[test]
fn stamping_keeps_the_producer_crc_and_refreshes_the_header_crc() {
    let mut bytes = build(&golden_records());
    let producer_crc_before = bytes[4..8].to_vec();
    stamp(&mut bytes, Offset(1_000_000), 99).unwrap();
    assert_eq!(&bytes[4..8], &producer_crc_before[..]);
    let batch = BatchRef::parse_validated(&bytes).unwrap();
    assert_eq!(batch.base_offset(), Offset(1_000_000));
    assert_eq!(batch.append_time(), 99);
    // Changing a node field without stamping is caught by the header CRC.
    bytes[8] ^= 1;
    assert!(matches!(
        BatchRef::parse(&bytes),
        Err(BatchError::HeaderCrc { .. })
    ));
    // An offset that would overflow is refused.
    assert!(matches!(
        stamp(&mut bytes, Offset(i64::MAX as u64), 0),
        Err(BatchError::OffsetOverflow { .. })
    ));
}

#[test]
fn batches_iterates_concatenated_batches_and_stops_at_damage() {
    let mut joined = Vec::new();
    for base in [0u64, 2, 4] {
        let mut bytes = build(&golden_records());
        stamp(&mut bytes, Offset(base), 0).unwrap();
        joined.extend_from_slice(&bytes);
    }
    let bases: Vec<u64> = batches(&joined)
        .map(|batch| batch.unwrap().base_offset().0)
        .collect();
    assert_eq!(bases, vec![0, 2, 4]);
    let cut = joined.len() - 3;
    let results: Vec<_> = batches(&joined[..cut]).collect();
    assert_eq!(results.len(), 3);
    assert!(matches!(results[2], Err(BatchError::Truncated { .. })));
}

#[test]
fn trailing_bytes_after_one_batch_are_refused() {
    let mut bytes = build(&golden_records());
    bytes.push(0);
    assert!(matches!(
        BatchRef::parse(&bytes),
        Err(BatchError::Records(RecordError::TrailingBytes { count: 1 }))
    ));
    assert!(BatchRef::parse_prefix(&bytes).is_ok());
}

fn owned_record() -> impl Strategy<Value = Owned> {
    let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
    let header = ("[a-zA-Z0-9é-]{0,12}", bytes());
    (
        -1_000_000i64..1_000_000,
        bytes(),
        bytes(),
        proptest::collection::vec(header, 0..4),
    )
        .prop_map(|(delta, key, value, headers)| Owned {
            timestamp: 1_700_000_000_000 + delta,
            key,
            value,
            headers,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_built_batch_reads_back_identical(
        records in proptest::collection::vec(owned_record(), 1..20),
        base in 0u64..(1 << 62),
        append_time in any::<i64>(),
    ) {
        let mut bytes = build(&records);
        stamp(&mut bytes, Offset(base), append_time).unwrap();
        let batch = BatchRef::parse(&bytes).unwrap();
        prop_assert_eq!(batch.base_offset(), Offset(base));
        prop_assert_eq!(batch.record_count() as usize, records.len());
        prop_assert_eq!(read_back(&bytes), records);
        // Rebuilding what was read gives the same producer bytes: the format is canonical.
        let mut rebuilt = build(&read_back(&bytes));
        stamp(&mut rebuilt, Offset(base), append_time).unwrap();
        prop_assert_eq!(rebuilt, bytes);
    }

    #[test]
    fn flipping_any_bit_is_detected(
        records in proptest::collection::vec(owned_record(), 1..6),
        position_seed in any::<usize>(),
        bit in 0u8..8,
    ) {
        let mut bytes = build(&records);
        stamp(&mut bytes, Offset(7), 7).unwrap();
        let position = position_seed % bytes.len();
        bytes[position] ^= 1 << bit;
        prop_assert!(BatchRef::parse_validated(&bytes).is_err(), "flip at {} undetected", position);
    }

    #[test]
    fn truncating_anywhere_is_detected(
        records in proptest::collection::vec(owned_record(), 1..6),
        cut_seed in any::<usize>(),
    ) {
        let bytes = build(&records);
        let cut = cut_seed % bytes.len();
        let error = BatchRef::parse_prefix(&bytes[..cut]).unwrap_err();
        let is_truncated = matches!(error, BatchError::Truncated { .. });
        prop_assert!(is_truncated, "cut at {} gave {:?}", cut, error);
    }

    #[test]
    fn parsing_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(batch) = BatchRef::parse_prefix(&bytes) {
            let _ = batch.validate_records();
            for record in batch.records().flatten() {
                for header in record.headers {
                    let _ = header.name.len();
                }
            }
        }
    }
}
