//! Record-batch tests: the golden bytes of `docs/format/record-batch.md`, round trips of any
//! batch, and damage (flipped bytes, truncation) that must always be detected.

use proptest::prelude::*;
use spate_format::compression::{compress, decompress_limited};
use spate_format::limits::{
    BATCH_HEADER_SIZE, BATCH_SIZE_MAX, DECOMPRESSED_SIZE_MAX, RECORDS_PER_BATCH_MAX,
};
use spate_format::{
    batch_headers, batches, stamp, BatchBuilder, BatchError, BatchRef, BuildError, Compression,
    DecompressError, Header, Offset, Record, RecordError,
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
    build_with(records, Compression::None)
}

fn build_with(records: &[Owned], codec: Compression) -> Vec<u8> {
    fill(BatchBuilder::new().compression(codec), records)
        .finish()
        .expect("batch is not empty")
}

fn fill(mut builder: BatchBuilder, records: &[Owned]) -> BatchBuilder {
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
    builder
}

fn read_back(bytes: &[u8]) -> Vec<Owned> {
    let batch = BatchRef::parse_validated(bytes).expect("valid batch");
    let section = batch.records_section().expect("records decompress");
    batch
        .records_in(&section)
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

/// Rewrites both CRCs of the batch in `bytes` after a test changed it.
fn fix_crcs(bytes: &mut [u8]) {
    let producer = crc32fast::hash(&bytes[24..]);
    bytes[4..8].copy_from_slice(&producer.to_le_bytes());
    let header = crc32fast::hash(&bytes[4..BATCH_HEADER_SIZE as usize]);
    bytes[..4].copy_from_slice(&header.to_le_bytes());
}

fn unhex(lines: &[&str]) -> Vec<u8> {
    let text: String = lines
        .iter()
        .flat_map(|line| line.split_whitespace())
        .collect();
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
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
    "3dcbdb73",         // header_crc
    "837436c6",         // producer_crc
    "2a00000000000000", // base_offset = 42
    "0aa8da769b010000", // append_time = 1767225600010
    "6a000000",         // batch_length = 106
    "02",               // magic
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
fn batch_headers_walk_whole_batches_without_their_crcs() {
    let mut joined = Vec::new();
    for base in [0u64, 2, 4] {
        let mut bytes = build(&golden_records());
        stamp(&mut bytes, Offset(base), 0).unwrap();
        joined.extend_from_slice(&bytes);
    }
    let len = joined.len() / 3;
    let walked: Vec<(usize, u64)> = batch_headers(&joined)
        .map(|(at, header)| (at, header.base_offset.get()))
        .collect();
    assert_eq!(walked, vec![(0, 0), (len, 2), (2 * len, 4)]);
    // A record byte flipped: the headers still walk (no CRC is read)…
    joined[len + BATCH_HEADER_SIZE as usize] ^= 1;
    assert_eq!(batch_headers(&joined).count(), 3);
    // …a batch running past the end, or a zero length, ends the walk.
    assert_eq!(batch_headers(&joined[..joined.len() - 1]).count(), 2);
    joined[len + 24..len + 28].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(batch_headers(&joined).count(), 1);
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
    fn any_compressed_batch_reads_back_identical(
        records in proptest::collection::vec(owned_record(), 1..20),
        codec in 1usize..5,
    ) {
        let codec = Compression::ALL[codec];
        let bytes = build_with(&records, codec);
        prop_assert_eq!(read_back(&bytes), records);
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

/// The same example in format version 1 (magic 1, so other CRCs), as data directories and
/// producers of that version hold it: still accepted and read.
const GOLDEN_V1: &[&str] = &[
    "fde541a8 ad48a21b 2a00000000000000 0aa8da769b010000 6a000000 01 00 0000 02000000",
    "01000000 00a8da769b010000 05a8da769b010000 ffffffffffffffff ffff 0000 ffffffff",
    "1a 00 00 00 04 6b31 0a 68656c6c6f 00",
    "26 00 0a 02 01 0a 776f726c64 02 0a 7472616365 02 37",
];

#[test]
fn version_1_batches_are_still_read() {
    let bytes = unhex(GOLDEN_V1);
    let batch = BatchRef::parse_validated(&bytes).unwrap();
    assert_eq!(batch.magic(), 1);
    assert_eq!(batch.base_offset(), Offset(42));
    assert_eq!(read_back(&bytes), golden_records());
    // Version 1 has no codecs: a codec bit is refused even with valid CRCs.
    let mut coded = bytes.clone();
    coded[30] = 1;
    fix_crcs(&mut coded);
    assert_eq!(
        BatchRef::parse(&coded).unwrap_err(),
        BatchError::Attributes { found: 1 }
    );
}

/// Shifts the golden batch's `first_timestamp` down by one and every record's timestamp delta
/// up by one: the same records, with a first delta of 1.
fn with_first_delta_one(mut bytes: Vec<u8>) -> Vec<u8> {
    let first = i64::from_le_bytes(bytes[40..48].try_into().unwrap());
    bytes[40..48].copy_from_slice(&(first - 1).to_le_bytes());
    // Record 0's delta (varint 0 -> 1: 0x00 -> 0x02) and record 1's (5 -> 6: 0x0a -> 0x0c).
    let (record0, record1) = (72 + 2, 72 + 14 + 2);
    assert_eq!((bytes[record0], bytes[record1]), (0x00, 0x0a));
    bytes[record0] = 0x02;
    bytes[record1] = 0x0c;
    fix_crcs(&mut bytes);
    bytes
}

#[test]
fn a_first_record_that_is_not_at_the_base_timestamp_is_valid_from_version_2() {
    // Kafka clients that take the smallest timestamp as the base (kafkajs) send such batches.
    let v2 = with_first_delta_one(build(&golden_records()));
    assert_eq!(read_back(&v2), golden_records());
    let v1 = with_first_delta_one(unhex(GOLDEN_V1));
    assert_eq!(
        BatchRef::parse_validated(&v1).unwrap_err(),
        BatchError::Records(RecordError::FirstTimestampDelta { found: 1 })
    );
}

#[test]
fn unknown_codecs_are_refused() {
    for codec in 5..8u8 {
        let mut bytes = build(&golden_records());
        bytes[30] = codec;
        fix_crcs(&mut bytes);
        assert_eq!(
            BatchRef::parse(&bytes).unwrap_err(),
            BatchError::Attributes {
                found: u16::from(codec)
            }
        );
    }
}

/// The golden records compressed with each codec as this version's builder wrote them
/// (`compressed_batch_hex` prints them): stored batches that every later version must read.
const GOLDEN_COMPRESSED: &[(Compression, &[&str])] = &[
    (Compression::Gzip, GOLDEN_GZIP),
    (Compression::Snappy, GOLDEN_SNAPPY),
    (Compression::Lz4, GOLDEN_LZ4),
    (Compression::Zstd, GOLDEN_ZSTD),
];

/// Records that compress: the golden ones, then 40 alike.
fn compressible_records() -> Vec<Owned> {
    let mut records = golden_records();
    for index in 0..40 {
        records.push(Owned {
            timestamp: 1_767_225_600_010 + index,
            key: Some(format!("sensor-{}", index % 4).into_bytes()),
            value: Some(format!("{{\"temperature\": 21.{index}, \"unit\": \"C\"}}").into_bytes()),
            headers: vec![("trace".to_owned(), Some(b"7".to_vec()))],
        });
    }
    records
}

#[test]
fn compressed_golden_batches_are_read() {
    for (codec, lines) in GOLDEN_COMPRESSED {
        let bytes = unhex(lines);
        let batch = BatchRef::parse_validated(&bytes).unwrap();
        assert_eq!(batch.compression(), *codec);
        assert_eq!(batch.magic(), 2);
        assert_eq!(read_back(&bytes), compressible_records(), "{codec}");
        // The raw records iterator does not pretend to decode compressed bytes.
        assert_eq!(
            batch.records().next(),
            Some(Err(RecordError::Compressed { codec: *codec }))
        );
        assert_eq!(batch.records().count(), 1);
    }
}

/// Prints the hex of `GOLDEN_COMPRESSED` (run with `--ignored --nocapture` after a deliberate
/// format change).
#[test]
#[ignore]
#[allow(clippy::print_stdout)]
fn compressed_batch_hex() {
    for codec in &Compression::ALL[1..] {
        let mut bytes = build_with(&compressible_records(), *codec);
        stamp(&mut bytes, Offset(42), 1_767_225_600_010).unwrap();
        println!("{codec}: {}", hex(&bytes));
    }
}

#[test]
fn every_codec_round_trips_and_is_smaller_when_records_compress() {
    let records = compressible_records();
    let plain = build(&records);
    for codec in Compression::ALL {
        let bytes = build_with(&records, codec);
        let batch = BatchRef::parse_validated(&bytes).unwrap();
        assert_eq!(batch.compression(), codec);
        if codec != Compression::None {
            assert!(bytes.len() < plain.len(), "{codec}: {} bytes", bytes.len());
        }
        assert_eq!(read_back(&bytes), records, "{codec}");
    }
    // Records that do not compress are kept uncompressed.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..2000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect();
    let noise = vec![Owned {
        timestamp: 1,
        key: None,
        value: Some(random),
        headers: vec![],
    }];
    for codec in Compression::ALL {
        let bytes = build_with(&noise, codec);
        assert_eq!(
            BatchRef::parse(&bytes).unwrap().compression(),
            Compression::None
        );
    }
}

/// `template`'s header with the records section `section`, marked with `codec` and holding
/// `record_count` records, with valid CRCs.
fn batch_with_section(
    template: &[u8],
    codec: Compression,
    section: &[u8],
    record_count: u32,
) -> Vec<u8> {
    let mut bytes = template[..BATCH_HEADER_SIZE as usize].to_vec();
    bytes.extend_from_slice(section);
    let length = u32::try_from(bytes.len()).unwrap();
    bytes[24..28].copy_from_slice(&length.to_le_bytes());
    bytes[30] = u8::try_from(codec.bits()).unwrap();
    bytes[32..36].copy_from_slice(&record_count.to_le_bytes());
    bytes[36..40].copy_from_slice(&(record_count - 1).to_le_bytes());
    fix_crcs(&mut bytes);
    bytes
}

#[test]
fn decompression_is_bounded() {
    // 33 MiB of zeros compress to little with every codec; the batches stay under 1 MiB.
    // Snappy expands at most about 21 times, so a 1 MiB batch cannot reach the limit with
    // real data; its block header can claim any length, though, and that claim is refused
    // before anything is allocated.
    let zeros = vec![0u8; DECOMPRESSED_SIZE_MAX as usize + (1 << 20)];
    let template = build(&golden_records());
    for codec in &Compression::ALL[1..] {
        let bomb = match codec {
            Compression::Snappy => vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0, 0],
            _ => compress(*codec, &zeros).unwrap(),
        };
        assert!(
            bomb.len() < BATCH_SIZE_MAX as usize / 2,
            "{codec}: {}",
            bomb.len()
        );
        let bytes = batch_with_section(&template, *codec, &bomb, 1);
        let batch = BatchRef::parse(&bytes).unwrap();
        assert_eq!(
            batch.validate_records(),
            Err(RecordError::Decompress(DecompressError::TooLarge {
                codec: *codec,
                max: DECOMPRESSED_SIZE_MAX
            })),
            "{codec}"
        );
        // At the limit exactly it decompresses; one byte more is refused.
        let section = compress(*codec, &zeros[..1000]).unwrap();
        assert_eq!(
            decompress_limited(*codec, &section, 1000).unwrap().len(),
            1000
        );
        assert_eq!(
            decompress_limited(*codec, &section, 999),
            Err(DecompressError::TooLarge {
                codec: *codec,
                max: 999
            })
        );
    }
}

#[test]
fn damaged_compressed_records_are_refused_with_a_typed_error() {
    let records = compressible_records();
    for codec in &Compression::ALL[1..] {
        let good = build_with(&records, *codec);
        let section = &good[BATCH_HEADER_SIZE as usize..];
        // Cut short, and garbage in the middle (the CRCs are made valid again: this is damage
        // the producer itself made).
        let mut damaged = vec![section[..section.len() / 2].to_vec(), section.to_vec()];
        let middle = damaged[1].len() / 2;
        for byte in &mut damaged[1][middle..middle + 8] {
            *byte ^= 0x5a;
        }
        for section in damaged {
            let bytes = batch_with_section(&good, *codec, &section, 42);
            let error = BatchRef::parse_validated(&bytes).unwrap_err();
            assert!(
                matches!(error, BatchError::Records(_)),
                "{codec}: {error:?}"
            );
        }
    }
}

#[test]
fn snappy_is_read_raw_and_in_xerial_framing() {
    let records = compressible_records();
    let plain = build(&records);
    let section = &plain[BATCH_HEADER_SIZE as usize..];
    let raw = snap::raw::Encoder::new().compress_vec(section).unwrap();
    let framed = compress(Compression::Snappy, section).unwrap();
    assert!(framed.starts_with(b"\x82SNAPPY\0"));
    for compressed in [raw, framed] {
        let bytes = batch_with_section(&plain, Compression::Snappy, &compressed, 42);
        assert_eq!(read_back(&bytes), records);
    }
}
const GOLDEN_GZIP: &[&str] = &[
    "ac7e9d86c47ce6a02a000000000000000aa8da769b010000bd010000020001002a00000029000000",
    "00a8da769b01000031a8da769b010000ffffffffffffffffffff0000ffffffff1f8b080000000000",
    "00ff7dd2514bc25000c5f19b48c488901011111917111193edde3997888889888888444444643528",
    "329539e921faeef5b2e1c33de7f13cfc1f7e704a4288eca76bbd87ebf556d4849539b1beb7d1fa2d",
    "63c5d1ea35cc7476229fcdedc3cd7e1b5d39a31f19875fbb305ac58728945d5bb92da769cbc3e623",
    "fe5ff246fe1e8585d324744da10bc3e259122a53a86058b292509b420dc3f239357a30ac5c50631b",
    "86768e1a7d18ca4b6aecc0b09aa7c60086b502355e833012f5626a1c9b0ee0c0b2514a91c6d28565",
    "b39c2a8da58265ab92328da586a56373a7074b25b9b30d4bafca9d3e2cfd1a77766019d4b9338065",
    "b7c19df843bd26752afca17e8b3a15fed0c0a14e853f3454d4a9f087461e77e20f8d7deec41f9a04",
    "dc893f34ed7227fed0acc79df843f33e77e20f2d06d4a9f1879643ead4f843b723ead4f8437763ea",
    "d4f843f713eec41f7a987227fed0e38c3bf1879ee6dc893ff4bce04efca1972577a20ffd018630fb",
    "a028090000",
];
const GOLDEN_SNAPPY: &[&str] = &[
    "e21f4c2060cc10632a000000000000000aa8da769b010000ad020000020002002a00000029000000",
    "00a8da769b01000031a8da769b010000ffffffffffffffffffff0000ffffffff82534e4150505900",
    "000000010000000100000251a812f0521a000000046b310a68656c6c6f0026000a02010a776f726c",
    "64020a74726163650237700014041073656e736f722d30447b2274656d7065726174757265223a20",
    "32312e302c2022756e6974223a202243227d021939081606100d3900314e39000031623900041808",
    "113900324e39000032623900041a0a113900334e39000033623900041c0c113900304e3900003462",
    "3900041e0e113952e4000035623900042010113952e4000036623900042212113952e40000376239",
    "00042414113952e4000038623900042616113952e40000395a39000c7200281811390832467b463a",
    "02043130623a00042a1a113a0033523a005e3c020c72002c1c113a0030523a005e3d020c72002e1e",
    "113a0031523a005e3e020c72003020113a56e8005e3f020c72003222113a56e8005e40020c720034",
    "24113a56e8005e41020c72003626113a56e8005e42020c72003828113a56e8005e43020c72003a2a",
    "113a56e800664402043c2c113a52e8000032664402043e2e113a52e8000032664402044030113a52",
    "e8000032664402044232113a52e8000032664402044434113a56e800664402044636113a56e80066",
    "4402044838113a56e800664402044a3a113a56e800664402044c3c113a56e800664402044e3e113a",
    "56e800664402045040113a52e8000033664402045242113a52e8000033664402045444113a52e800",
    "0033664402045646113a52e800043333623605045848113a56e800664402045a4a113a56e8006644",
    "02045c4c113a56e800664402045e4e113a56e800664402046050113a56e800664402046252113a56",
    "e8005e4402",
];
const GOLDEN_LZ4: &[&str] = &[
    "5793ede0ec62d9c62a000000000000000aa8da769b010000dd020000020003002a00000029000000",
    "00a8da769b01000031a8da769b010000ffffffffffffffffffff0000ffffffff04224d1860408286",
    "020000f7431a000000046b310a68656c6c6f0026000a02010a776f726c64020a7472616365023770",
    "0014041073656e736f722d30447b2274656d7065726174757265223a2032312e302c2022756e6974",
    "223a202243227d390024160639001f313900011f3139000624180839001f323900011f3239000624",
    "1a0a39001f333900011f33390006241c0c39001f303900011f34390006241e0e39000fe400021f35",
    "39000624201039000fe400021f3639000624221239000fe400021f3739000624241439000fe40002",
    "1f3839000624261639000fe400021f39390004447200281839002f32463a02001f313b0205447200",
    "2a1a3a001f333a00020f3c02054472002c1c3a001f303a00020f3d02054472002e1e3a001f313a00",
    "020f3e020544720030203a000fe800030f3f020544720032223a000fe800030f4002054472003424",
    "3a000fe800030f41020544720036263a000fe800030f42020544720038283a000fe800030f430205",
    "4472003a2a3a000fe800030f440207243c2c3a000fe800021f32440207243e2e3a000fe800021f32",
    "4402072440303a000fe800021f324402072442323a000fe800021f324402072444343a000fe80003",
    "0f4402072446363a000fe800030f4402072448383a000fe800030f440207244a3a3a000fe800030f",
    "440207244c3c3a000fe800030f440207244e3e3a000fe800030f4402072450403a000fe800021f33",
    "4402072452423a000fe800021f334402072454443a000fe800021f334402072456463a000fe80002",
    "1f334402072458483a000fe800030f440207245a4a3a000fe800030f440207245c4c3a000fe80003",
    "0f440207245e4e3a000fe800030f4402072460503a000fe800030f4402072462523a000fe800030e",
    "44026072616365023700000000",
];
const GOLDEN_ZSTD: &[&str] = &[
    "ed0d49f75dc7f6a62a000000000000000aa8da769b0100007d010000020004002a00000029000000",
    "00a8da769b01000031a8da769b010000ffffffffffffffffffff0000ffffffff28b52ffd6028085d",
    "090092ce3428e0eeba0170c03740a14c9c3f1ce4f17028d479d023faf2fdbdb36636143d1e6d0e9d",
    "d4862f5b9d021cc8c17e1a360f43ed2c681c05ba4998f322fcf40e7c6a4072663e1cc6632f9dade3",
    "54bbd1eaa5d49bff9a7f99f1cf30f2b10b67e96cc56e57ad14aac5a796ececd7275967bf528275be",
    "b3b274f6fb914a67ce2197950fca3609627d87a5f9c0844a01c99c54f51f107107805c4483687531",
    "941095a285c9ccdfea22cea53094f1880287d1c2930519248930c9d178f4689bf0432887d404f165",
    "b082624c545f0d7e1f8ea07ca2d1dd555da8216c7bb8ff6fe0358631119c1212e119282004c9427b",
    "24ddb7547d91e4f3b9b4bc8fc97b783e3e978bf7b1cc275b072e1a44dac70344b28847fd107a6c7c",
    "1c1102b2b8f1076ffcc1197f70a39f22d0121f7615",
];

#[test]
fn a_batch_built_behind_headroom_is_the_same_batch() {
    let records = golden_records();
    for codec in Compression::ALL {
        let plain = build_with(&records, codec);
        for (headroom, capacity) in [(0, 0), (37, 16), (40, 1 << 20)] {
            let builder = fill(
                BatchBuilder::with_headroom(headroom, capacity).compression(codec),
                &records,
            );
            if codec == Compression::None {
                assert_eq!(
                    builder.len() as usize,
                    plain.len(),
                    "len counts the batch only"
                );
            }
            let (buffer, start) = builder.finish_with_headroom().unwrap();
            assert_eq!(start, headroom);
            assert!(buffer[..headroom].iter().all(|&byte| byte == 0));
            assert_eq!(
                &buffer[start..],
                &plain[..],
                "{codec:?} behind {headroom} bytes"
            );
        }
    }
}
