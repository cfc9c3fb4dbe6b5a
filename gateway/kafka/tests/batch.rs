//! Tests of `spate_kafka::batch` against real client batches (`testdata/`), against the
//! `kafka-protocol` crate's encoder and decoder, and against spate-format's validation.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType as KafkaTimestampType,
};
use proptest::prelude::*;
use spate_format::batch::{BatchHeader, HEADER_CRC_START, PRODUCER_CRC_START};
use spate_format::compression::{compress, decompress};
use spate_format::error::RecordError;
use spate_format::limits::{BATCH_HEADER_SIZE, RECORDS_PER_BATCH_MAX};
use spate_format::Compression as SpateCodec;
use spate_format::{
    stamp, BatchBuilder, BatchError, BatchRef, Offset, ProducerFields, Record, TimestampType,
};
use spate_kafka::batch::{
    kafka_error_code, kafka_offset, kafka_to_spate, spate_to_kafka, spate_to_kafka_with_epochs,
    KafkaBatchError, SpateBatchError, KAFKA_BATCH_SIZE_MAX,
};

const KEYS_HEADERS: &[u8] = include_bytes!("../testdata/kcat-keys-headers.bin");
const TWELVE: &[u8] = include_bytes!("../testdata/kcat-twelve-records.bin");
const NO_KEY: &[u8] = include_bytes!("../testdata/kcat-no-key.bin");
const RDKAFKA_OUT_OF_ORDER: &[u8] = include_bytes!("../testdata/librdkafka-2.0.2-out-of-order.bin");
const CONFLUENT_OUT_OF_ORDER: &[u8] = include_bytes!("../testdata/confluent-out-of-order.bin");
const CONFLUENT_GZIP: &[u8] = include_bytes!("../testdata/confluent-gzip.bin");

const GOLDEN: [&[u8]; 5] = [
    KEYS_HEADERS,
    TWELVE,
    NO_KEY,
    RDKAFKA_OUT_OF_ORDER,
    CONFLUENT_OUT_OF_ORDER,
];

/// A record as both sides read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plain {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn spate_records(bytes: &[u8]) -> Vec<Plain> {
    let batch = BatchRef::parse_validated(bytes).expect("the node accepts the batch");
    let section = batch.records_section().expect("records decompress");
    batch
        .records_in(&section)
        .map(|record| {
            let record = record.expect("validated");
            Plain {
                offset: (batch.base_offset().0 + u64::from(record.offset_delta)) as i64,
                timestamp: record.timestamp,
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.map(<[u8]>::to_vec),
                headers: record
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect(),
            }
        })
        .collect()
}

/// Spate's codec for kafka-protocol's.
fn spate_codec(codec: Compression) -> SpateCodec {
    match codec {
        Compression::None => SpateCodec::None,
        Compression::Gzip => SpateCodec::Gzip,
        Compression::Snappy => SpateCodec::Snappy,
        Compression::Lz4 => SpateCodec::Lz4,
        Compression::Zstd => SpateCodec::Zstd,
    }
}

/// Decodes Kafka batches with kafka-protocol's decoder, decompressing with spate-format.
fn decode_kafka(bytes: &[u8]) -> Vec<KafkaRecord> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let mut records = Vec::new();
    while !buf.is_empty() {
        let set = RecordBatchDecoder::decode_with_custom_compression(
            &mut buf,
            Some(|bytes: &mut Bytes, codec: Compression| {
                let plain = decompress(spate_codec(codec), bytes)?;
                Ok(Bytes::from(plain))
            }),
        )
        .expect("kafka-protocol decodes the batch");
        records.extend(set.records);
    }
    records
}

fn kafka_plain(record: &KafkaRecord) -> Plain {
    Plain {
        offset: record.offset,
        timestamp: record.timestamp,
        key: record.key.as_ref().map(|k| k.to_vec()),
        value: record.value.as_ref().map(|v| v.to_vec()),
        headers: record
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_ref().map(|v| v.to_vec())))
            .collect(),
    }
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Rewrites the Kafka CRC-32C of the batch at the start of `bytes` (declared length).
fn fix_kafka_crc(bytes: &mut [u8]) {
    let length = i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize + 12;
    let crc = crc32c::crc32c(&bytes[kafka_offset::ATTRIBUTES..length]);
    bytes[kafka_offset::CRC..kafka_offset::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

fn patched(golden: &[u8], patch: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut bytes = golden.to_vec();
    patch(&mut bytes);
    fix_kafka_crc(&mut bytes);
    Bytes::from(bytes)
}

fn convert(bytes: &[u8]) -> Result<Vec<u8>, KafkaBatchError> {
    Ok(kafka_to_spate(&Bytes::copy_from_slice(bytes))?
        .to_contiguous()
        .to_vec())
}

fn plain(
    offset: i64,
    timestamp: i64,
    key: Option<&str>,
    value: Option<&str>,
    headers: &[(&str, Option<&str>)],
) -> Plain {
    Plain {
        offset,
        timestamp,
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.map(|v| v.as_bytes().to_vec()),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.map(|v| v.as_bytes().to_vec())))
            .collect(),
    }
}

// ---------------------------------------------------------------- golden: real clients

#[test]
fn golden_kcat_keys_and_headers_convert_to_a_batch_the_node_accepts() {
    let input = Bytes::from_static(KEYS_HEADERS);
    let batch = kafka_to_spate(&input).unwrap();
    assert_eq!(batch.len() as usize, KEYS_HEADERS.len() + 11);
    assert_eq!(batch.record_count(), 2);
    // The records section is the input's, not a copy.
    assert_eq!(batch.records().as_ptr(), input[61..].as_ptr());
    let spate = batch.to_contiguous();
    let base = be_i64(KEYS_HEADERS, kafka_offset::BASE_TIMESTAMP);
    let headers = [("h1", Some("x")), ("trace", Some("abc"))];
    assert_eq!(
        spate_records(&spate),
        vec![
            plain(0, base, Some("k1"), Some("v1"), &headers),
            plain(1, base, Some("k2"), Some("v2"), &headers),
        ]
    );
    let parsed = BatchRef::parse(&spate).unwrap();
    assert_eq!(parsed.producer(), ProducerFields::default());
    assert_eq!(parsed.timestamp_type(), TimestampType::CreateTime);
    assert_eq!(parsed.base_offset(), Offset(0));
    assert_eq!(parsed.append_time(), 0);
}

#[test]
fn golden_kcat_twelve_records() {
    let spate = convert(TWELVE).unwrap();
    let records = spate_records(&spate);
    assert_eq!(records.len(), 12);
    for (index, record) in records.iter().enumerate() {
        let n = index + 1;
        let key = format!("key-{n}");
        let value = format!("value number {n}");
        assert_eq!(record.offset, index as i64);
        assert_eq!(record.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(record.value.as_deref(), Some(value.as_bytes()));
        assert_eq!(
            record.headers,
            vec![("app".to_string(), Some(b"demo".to_vec()))]
        );
    }
}

#[test]
fn golden_kcat_null_key() {
    let spate = convert(NO_KEY).unwrap();
    let base = be_i64(NO_KEY, kafka_offset::BASE_TIMESTAMP);
    assert_eq!(
        spate_records(&spate),
        vec![plain(0, base, None, Some("onlyvalue"), &[])]
    );
}

#[test]
fn golden_librdkafka_2_0_2_out_of_order_timestamps() {
    let spate = convert(RDKAFKA_OUT_OF_ORDER).unwrap();
    let headers = [("h", Some("x"))];
    assert_eq!(
        spate_records(&spate),
        vec![
            plain(0, 1767225600500, Some("k"), Some("b"), &headers),
            plain(1, 1767225600300, Some("k"), Some("c"), &headers),
        ]
    );
    let batch = BatchRef::parse(&spate).unwrap();
    assert_eq!(batch.first_timestamp(), 1767225600500);
    assert_eq!(batch.max_timestamp(), 1767225600500);
}

#[test]
fn golden_confluent_out_of_order_timestamps_and_nulls() {
    let spate = convert(CONFLUENT_OUT_OF_ORDER).unwrap();
    assert_eq!(
        spate_records(&spate),
        vec![
            plain(
                0,
                1767225600500,
                Some("a"),
                Some("first"),
                &[("h", Some("1"))]
            ),
            plain(1, 1767225600100, Some("b"), Some("earlier"), &[]),
            plain(2, 1767225600300, None, None, &[("n", None)]),
        ]
    );
}

#[test]
fn golden_confluent_gzip_is_stored_compressed_as_sent() {
    let spate = convert(CONFLUENT_GZIP).unwrap();
    let batch = BatchRef::parse_validated(&spate).unwrap();
    assert_eq!(batch.compression(), SpateCodec::Gzip);
    // The records section is the producer's gzip stream, byte for byte.
    assert_eq!(
        batch.raw_records(),
        &CONFLUENT_GZIP[kafka_offset::RECORDS..]
    );
    let records = spate_records(&spate);
    assert_eq!(records.len(), 3);
    let value = "a".repeat(500);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.offset, index as i64);
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.value.as_deref(), Some(value.as_bytes()));
    }
    // And it comes back from a fetch as the producer sent it.
    let mut stamped = spate.clone();
    stamp(&mut stamped, Offset(0), 1).unwrap();
    let back = spate_to_kafka(&Bytes::from(stamped))
        .unwrap()
        .to_contiguous();
    assert_eq!(&back[16..], &CONFLUENT_GZIP[16..]);
    assert_eq!(decode_kafka(&back).len(), 3);
}

/// Kafka → Spate → stamped by the node → Kafka gives the producer's bytes back, with the
/// node's base offset and no leader epoch; the CRC-32C is the producer's, since it covers
/// only bytes that did not change.
#[test]
fn golden_round_trip_gives_the_producers_bytes_back() {
    for golden in GOLDEN {
        let mut spate = convert(golden).unwrap();
        stamp(&mut spate, Offset(1_000_000), 1767225601234).unwrap();
        let kafka = spate_to_kafka(&Bytes::from(spate.clone()))
            .unwrap()
            .to_contiguous();
        assert_eq!(kafka.len(), golden.len());
        assert_eq!(be_i64(&kafka, 0), 1_000_000);
        assert_eq!(&kafka[8..12], &golden[8..12], "batchLength");
        assert_eq!(&kafka[12..16], &(-1i32).to_be_bytes(), "leader epoch");
        assert_eq!(&kafka[16..], &golden[16..], "magic, CRC and the rest");
        let decoded: Vec<Plain> = decode_kafka(&kafka).iter().map(kafka_plain).collect();
        let mut expected = spate_records(&spate);
        assert_eq!(expected[0].offset, 1_000_000);
        expected.iter_mut().for_each(|r| r.headers.sort());
        let mut decoded = decoded;
        decoded.iter_mut().for_each(|r| r.headers.sort());
        assert_eq!(decoded, expected);
    }
}

/// A producer's maxTimestamp that is not the records' maximum is replaced by it, as a Kafka
/// broker does; the fetched batch then carries the corrected value and a fresh CRC-32C.
#[test]
fn a_wrong_max_timestamp_is_corrected() {
    let input = patched(KEYS_HEADERS, |b| {
        b[kafka_offset::MAX_TIMESTAMP..][..8].copy_from_slice(&7i64.to_be_bytes());
    });
    let mut spate = kafka_to_spate(&input).unwrap().to_contiguous().to_vec();
    let base = be_i64(KEYS_HEADERS, kafka_offset::BASE_TIMESTAMP);
    assert_eq!(
        BatchRef::parse_validated(&spate).unwrap().max_timestamp(),
        base
    );
    stamp(&mut spate, Offset(5), 9).unwrap();
    let kafka = spate_to_kafka(&Bytes::from(spate)).unwrap().to_contiguous();
    assert_eq!(be_i64(&kafka, kafka_offset::MAX_TIMESTAMP), base);
    assert_eq!(decode_kafka(&kafka).len(), 2);
}

#[test]
fn log_append_time_batches_carry_the_append_time_in_max_timestamp() {
    let mut builder = BatchBuilder::new().timestamp_type(TimestampType::LogAppendTime);
    builder
        .push(&Record {
            timestamp: 100,
            key: None,
            value: Some(b"v"),
            headers: &[],
        })
        .unwrap();
    let mut spate = builder.finish().unwrap();
    stamp(&mut spate, Offset(3), 1767225609999).unwrap();
    let kafka = spate_to_kafka(&Bytes::from(spate)).unwrap().to_contiguous();
    assert_eq!(be_i64(&kafka, kafka_offset::MAX_TIMESTAMP), 1767225609999);
    assert_eq!(be_i64(&kafka, kafka_offset::BASE_TIMESTAMP), 100);
    let record = &decode_kafka(&kafka)[0];
    assert_eq!(record.timestamp_type, KafkaTimestampType::LogAppend);
    assert_eq!(record.offset, 3);
}

#[test]
fn a_producers_log_append_time_bit_is_kept() {
    let input = patched(NO_KEY, |b| b[kafka_offset::ATTRIBUTES + 1] |= 0b1000);
    let spate = kafka_to_spate(&input).unwrap().to_contiguous();
    let batch = BatchRef::parse_validated(&spate).unwrap();
    assert_eq!(batch.timestamp_type(), TimestampType::LogAppendTime);
}

#[test]
fn several_batches_of_a_fetch_answer_convert_in_order() {
    let mut answer = Vec::new();
    let mut next = 40u64;
    for golden in GOLDEN {
        let mut spate = convert(golden).unwrap();
        stamp(&mut spate, Offset(next), 1).unwrap();
        next = BatchRef::parse(&spate).unwrap().next_offset().0;
        answer.extend_from_slice(&spate);
    }
    let converted = spate_to_kafka(&Bytes::from(answer)).unwrap();
    assert_eq!(converted.parts().len(), 2 * GOLDEN.len());
    let expected: usize = GOLDEN.iter().map(|g| g.len()).sum();
    assert_eq!(converted.len(), expected);
    let records = decode_kafka(&converted.to_contiguous());
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (40..next as i64).collect::<Vec<_>>());
}

#[test]
fn each_batch_carries_the_leader_epoch_that_appended_it() {
    // Four batches of the golden ones, stamped from offset 0 on; the fetch asked for an
    // offset inside the second, where the first boundary starts (epoch 3), and epoch 5
    // starts with the fourth. The first batch is wholly below the first boundary.
    let mut answer = Vec::new();
    let mut bases = Vec::new();
    let mut next = 0u64;
    for golden in GOLDEN.iter().cycle().take(4) {
        let mut spate = convert(golden).unwrap();
        stamp(&mut spate, Offset(next), 1).unwrap();
        bases.push(next);
        next = BatchRef::parse(&spate).unwrap().next_offset().0;
        answer.extend_from_slice(&spate);
    }
    let boundary = |epoch, start_offset| spate_proto::EpochBoundary {
        epoch,
        start_offset,
    };
    let epochs = [boundary(3, bases[2] - 1), boundary(5, bases[3])];
    let converted = spate_to_kafka_with_epochs(&Bytes::from(answer.clone()), &epochs)
        .unwrap()
        .to_contiguous();
    let mut stamped = Vec::new();
    let mut at = 0usize;
    while at < converted.len() {
        let epoch = &converted[at + kafka_offset::PARTITION_LEADER_EPOCH..][..4];
        stamped.push(i32::from_be_bytes(epoch.try_into().unwrap()));
        let length = &converted[at + 8..at + 12];
        at += 12 + usize::try_from(i32::from_be_bytes(length.try_into().unwrap())).unwrap();
    }
    assert_eq!(stamped, vec![-1, 3, 3, 5]);
    // The records still read back (the epoch is outside the CRC).
    assert_eq!(decode_kafka(&converted).len() as u64, next);
    // Without boundaries (a single node): -1 everywhere.
    let plain = spate_to_kafka(&Bytes::from(answer))
        .unwrap()
        .to_contiguous();
    assert_eq!(
        plain[kafka_offset::PARTITION_LEADER_EPOCH..][..4],
        (-1i32).to_be_bytes()
    );
}

#[test]
fn an_empty_fetch_answer_is_empty() {
    let converted = spate_to_kafka(&Bytes::new()).unwrap();
    assert!(converted.is_empty());
    assert!(converted.to_contiguous().is_empty());
}

// ---------------------------------------------------------------- produce errors

fn error_of(bytes: &[u8]) -> KafkaBatchError {
    convert(bytes).unwrap_err()
}

#[test]
fn truncated_input_is_refused() {
    assert_eq!(
        error_of(&[]),
        KafkaBatchError::Truncated {
            needed: 17,
            available: 0
        }
    );
    assert!(matches!(
        error_of(&KEYS_HEADERS[..16]),
        KafkaBatchError::Truncated { needed: 17, .. }
    ));
    let cut = &KEYS_HEADERS[..KEYS_HEADERS.len() - 1];
    let error = error_of(cut);
    assert_eq!(
        error,
        KafkaBatchError::Truncated {
            needed: KEYS_HEADERS.len() as u64,
            available: cut.len() as u64
        }
    );
    assert_eq!(error.kafka_error_code(), kafka_error_code::CORRUPT_MESSAGE);
}

#[test]
fn legacy_message_sets_are_refused() {
    for magic in [0u8, 1] {
        // A v1 message set: offset, size, crc, magic, attributes, timestamp, key, value.
        let mut v1 = vec![0u8; 8];
        v1.extend_from_slice(&22i32.to_be_bytes());
        v1.extend_from_slice(&0u32.to_be_bytes());
        v1.push(magic);
        v1.extend_from_slice(&[0; 17]);
        let error = error_of(&v1);
        assert_eq!(error, KafkaBatchError::LegacyMagic { found: magic as i8 });
        assert_eq!(
            error.kafka_error_code(),
            kafka_error_code::UNSUPPORTED_FOR_MESSAGE_FORMAT
        );
    }
}

#[test]
fn unknown_magic_is_refused() {
    for magic in [3u8, 0xff] {
        let mut bytes = KEYS_HEADERS.to_vec();
        bytes[kafka_offset::MAGIC] = magic;
        assert_eq!(
            error_of(&bytes),
            KafkaBatchError::Magic { found: magic as i8 }
        );
    }
}

#[test]
fn bad_batch_lengths_are_refused() {
    for length in [-1i32, 0, 48, 55] {
        let mut bytes = KEYS_HEADERS.to_vec();
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        assert_eq!(
            error_of(&bytes),
            KafkaBatchError::Length { length, min: 56 }
        );
    }
    let mut bytes = KEYS_HEADERS.to_vec();
    let length = KAFKA_BATCH_SIZE_MAX as i32 - 12 + 1;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    let error = error_of(&bytes);
    assert_eq!(
        error,
        KafkaBatchError::TooLarge {
            size: u64::from(KAFKA_BATCH_SIZE_MAX) + 1,
            max: KAFKA_BATCH_SIZE_MAX
        }
    );
    assert_eq!(
        error.kafka_error_code(),
        kafka_error_code::MESSAGE_TOO_LARGE
    );
}

#[test]
fn a_bad_crc_is_refused() {
    for position in [kafka_offset::ATTRIBUTES, 30, KEYS_HEADERS.len() - 1] {
        let mut bytes = KEYS_HEADERS.to_vec();
        bytes[position] ^= 0x40;
        let error = error_of(&bytes);
        assert!(matches!(error, KafkaBatchError::Crc { .. }), "{error}");
        assert_eq!(error.kafka_error_code(), kafka_error_code::CORRUPT_MESSAGE);
    }
}

#[test]
fn two_batches_and_trailing_bytes_are_refused() {
    let two = [KEYS_HEADERS, NO_KEY].concat();
    let error = error_of(&two);
    assert_eq!(
        error,
        KafkaBatchError::SecondBatch {
            count: NO_KEY.len() as u64
        }
    );
    assert_eq!(error.kafka_error_code(), kafka_error_code::INVALID_RECORD);
    let trailing = [KEYS_HEADERS, &[0xff, 0xff, 0xff]].concat();
    assert_eq!(
        error_of(&trailing),
        KafkaBatchError::TrailingBytes { count: 3 }
    );
}

fn with_attributes(attributes: u16) -> Bytes {
    patched(KEYS_HEADERS, |b| {
        b[kafka_offset::ATTRIBUTES..][..2].copy_from_slice(&attributes.to_be_bytes());
    })
}

#[test]
fn codec_bits_on_plain_records_transactional_and_control_batches_are_refused() {
    for codec in &SpateCodec::ALL[1..] {
        let error = kafka_to_spate(&with_attributes(codec.bits())).unwrap_err();
        assert!(
            matches!(
                error,
                KafkaBatchError::Records(RecordError::Decompress(
                    spate_format::DecompressError::Corrupt { .. }
                ))
            ),
            "{codec}: {error:?}"
        );
        assert_eq!(error.kafka_error_code(), kafka_error_code::CORRUPT_MESSAGE);
    }
    let error = kafka_to_spate(&with_attributes(1 << 4)).unwrap_err();
    assert_eq!(error, KafkaBatchError::Transactional { attributes: 1 << 4 });
    assert_eq!(error.kafka_error_code(), kafka_error_code::INVALID_RECORD);
    // A transaction marker is transactional and control; control is the reason.
    let error = kafka_to_spate(&with_attributes(0b11 << 4)).unwrap_err();
    assert_eq!(
        error,
        KafkaBatchError::Control {
            attributes: 0b11 << 4
        }
    );
    assert_eq!(error.kafka_error_code(), kafka_error_code::INVALID_RECORD);
    for attributes in [5u16, 7, 1 << 6, 1 << 15] {
        let error = kafka_to_spate(&with_attributes(attributes)).unwrap_err();
        assert_eq!(error, KafkaBatchError::Attributes { found: attributes });
        assert_eq!(error.kafka_error_code(), kafka_error_code::CORRUPT_MESSAGE);
    }
}

fn with_count(count: i32, last_offset_delta: i32) -> Bytes {
    patched(KEYS_HEADERS, |b| {
        b[kafka_offset::RECORDS_COUNT..][..4].copy_from_slice(&count.to_be_bytes());
        b[kafka_offset::LAST_OFFSET_DELTA..][..4].copy_from_slice(&last_offset_delta.to_be_bytes());
    })
}

#[test]
fn bad_record_counts_are_refused() {
    for count in [0, -1, i32::MIN] {
        let error = kafka_to_spate(&with_count(count, 1)).unwrap_err();
        assert_eq!(error, KafkaBatchError::RecordCount { count });
        assert_eq!(error.kafka_error_code(), kafka_error_code::CORRUPT_MESSAGE);
    }
    let over = RECORDS_PER_BATCH_MAX as i32 + 1;
    let error = kafka_to_spate(&with_count(over, over - 1)).unwrap_err();
    assert_eq!(
        error,
        KafkaBatchError::TooManyRecords {
            count: over,
            max: RECORDS_PER_BATCH_MAX
        }
    );
    assert_eq!(
        error.kafka_error_code(),
        kafka_error_code::RECORD_LIST_TOO_LARGE
    );
    let error = kafka_to_spate(&with_count(2, 5)).unwrap_err();
    assert_eq!(
        error,
        KafkaBatchError::LastOffsetDelta {
            expected: 1,
            found: 5
        }
    );
    assert_eq!(error.kafka_error_code(), kafka_error_code::INVALID_RECORD);
    // A count that disagrees with the records is a record error.
    let error = kafka_to_spate(&with_count(3, 2)).unwrap_err();
    assert_eq!(error, KafkaBatchError::Records(RecordError::UnexpectedEnd));
    let error = kafka_to_spate(&with_count(1, 0)).unwrap_err();
    assert!(matches!(
        error,
        KafkaBatchError::Records(RecordError::TrailingBytes { .. })
    ));
}

fn kafka_record(offset: i64, timestamp: i64, value: &'static [u8]) -> KafkaRecord {
    // kafka-protocol's encoder starts a new batch where offset − sequence changes.
    KafkaRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: KafkaTimestampType::Creation,
        offset,
        sequence: i32::try_from(offset).unwrap() - 1,
        timestamp,
        key: None,
        value: Some(Bytes::from_static(value)),
        headers: IndexMap::new(),
    }
}

fn encode(records: &[KafkaRecord]) -> Bytes {
    encode_with(records, Compression::None)
}

/// kafka-protocol's encoder, compressing with spate-format's encoders (the Java client's
/// stream formats).
fn encode_with(records: &[KafkaRecord], codec: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
        Some(
            |plain: &mut BytesMut, out: &mut BytesMut, codec: Compression| {
                let compressed = compress(spate_codec(codec), plain).expect("in-memory codec");
                out.extend_from_slice(&compressed);
                Ok(())
            },
        ),
    )
    .unwrap();
    buf.freeze()
}

/// Producers that set baseTimestamp to the smallest timestamp (kafka-protocol's encoder,
/// kafkajs) send a non-zero first timestamp delta when the first record is not the oldest.
/// Spate format version 1 refused that; version 2, which the listener writes, takes it.
#[test]
fn a_first_record_that_is_not_the_oldest_from_a_min_base_producer_is_accepted() {
    let input = encode(&[kafka_record(0, 200, b"a"), kafka_record(1, 100, b"b")]);
    assert_eq!(be_i64(&input, kafka_offset::BASE_TIMESTAMP), 100);
    let spate = kafka_to_spate(&input).unwrap().to_contiguous();
    let timestamps: Vec<i64> = spate_records(&spate).iter().map(|r| r.timestamp).collect();
    assert_eq!(timestamps, vec![200, 100]);
    assert_eq!(BatchRef::parse(&spate).unwrap().first_timestamp(), 100);
}

/// Every codec, as kafka-protocol's encoder frames it: stored as sent, read back equal,
/// fetched back as the producer's bytes.
#[test]
fn compressed_batches_of_every_codec_convert_both_ways() {
    let records: Vec<KafkaRecord> = (0..50)
        .map(|i| {
            kafka_record(
                i,
                1_767_225_600_000 + i,
                b"a reading of 21.5 C from sensor 7",
            )
        })
        .collect();
    let plain = encode(&records);
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let input = encode_with(&records, codec);
        assert!(input.len() < plain.len() / 2, "{codec:?}: {}", input.len());
        let spate = kafka_to_spate(&input).unwrap().to_contiguous();
        let batch = BatchRef::parse_validated(&spate).unwrap();
        assert_eq!(batch.compression(), spate_codec(codec));
        assert_eq!(batch.raw_records(), &input[kafka_offset::RECORDS..]);
        let expected: Vec<Plain> = records.iter().map(kafka_plain).collect();
        assert_eq!(spate_records(&spate), expected);
        let mut stamped = spate.to_vec();
        stamp(&mut stamped, Offset(0), 1).unwrap();
        let back = spate_to_kafka(&Bytes::from(stamped))
            .unwrap()
            .to_contiguous();
        assert_eq!(&back[16..], &input[16..], "{codec:?}");
        assert_eq!(decode_kafka(&back).len(), records.len());
    }
}

/// A compressed batch that expands past Spate's limit is refused before the node sees it.
#[test]
fn a_compressed_batch_that_expands_too_far_is_refused() {
    let big: &'static [u8] = Vec::leak(vec![b'x'; 1_000_000]);
    let records: Vec<KafkaRecord> = (0..40).map(|i| kafka_record(i, 1, big)).collect();
    let input = encode_with(&records, Compression::Zstd);
    assert!(input.len() < 100_000, "{}", input.len());
    let error = kafka_to_spate(&input).unwrap_err();
    assert!(
        matches!(
            error,
            KafkaBatchError::Records(RecordError::Decompress(
                spate_format::DecompressError::TooLarge { .. }
            ))
        ),
        "{error:?}"
    );
    assert_eq!(
        error.kafka_error_code(),
        kafka_error_code::MESSAGE_TOO_LARGE
    );
}

#[test]
fn record_rules_are_spate_formats() {
    // Record 0's attributes byte: after the length varint (1 byte) at the records start.
    let input = patched(KEYS_HEADERS, |b| b[kafka_offset::RECORDS + 1] = 1);
    assert_eq!(
        kafka_to_spate(&input).unwrap_err(),
        KafkaBatchError::Records(RecordError::RecordAttributes { index: 0, found: 1 })
    );
    // Record 0's offset delta (after attributes and timestamp delta).
    let input = patched(KEYS_HEADERS, |b| b[kafka_offset::RECORDS + 3] = 2);
    assert_eq!(
        kafka_to_spate(&input).unwrap_err(),
        KafkaBatchError::Records(RecordError::OffsetDelta { index: 0, found: 1 })
    );
}

// ---------------------------------------------------------------- fetch errors

#[test]
fn damaged_fetch_answers_are_errors() {
    let mut spate = convert(KEYS_HEADERS).unwrap();
    stamp(&mut spate, Offset(7), 1).unwrap();
    let two = [spate.clone(), spate.clone()].concat();
    // A partial batch at the end.
    let cut = Bytes::copy_from_slice(&two[..two.len() - 1]);
    assert_eq!(
        spate_to_kafka(&cut).unwrap_err(),
        SpateBatchError::Batch {
            index: 1,
            position: spate.len() as u64,
            error: BatchError::Truncated {
                needed: spate.len() as u64,
                available: spate.len() as u64 - 1
            }
        }
    );
    // A flipped bit in a record.
    let mut flipped = two;
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(
        spate_to_kafka(&Bytes::from(flipped)).unwrap_err(),
        SpateBatchError::Batch {
            index: 1,
            error: BatchError::ProducerCrc { .. },
            ..
        }
    ));
    // A Kafka batch where a Spate batch belongs.
    assert!(matches!(
        spate_to_kafka(&Bytes::from_static(KEYS_HEADERS)).unwrap_err(),
        SpateBatchError::Batch {
            index: 0,
            position: 0,
            error: BatchError::HeaderCrc { .. }
        }
    ));
}

// ---------------------------------------------------------------- properties

/// The Spate batch spate-format would see for `kafka` if the gateway only rebuilt the
/// header, with `max_timestamp` taken from spate-format's own record decoding: the reference
/// the gateway's record walk is compared with.
fn reference_spate(kafka: &[u8]) -> Option<Result<Vec<u8>, BatchError>> {
    use core::mem::offset_of;
    let total = i32::from_be_bytes(kafka.get(8..12)?.try_into().ok()?) as usize + 12;
    let section = kafka.get(61..total)?;
    let mut bytes = vec![0u8; BATCH_HEADER_SIZE as usize];
    let put = |bytes: &mut Vec<u8>, at: usize, value: &[u8]| {
        bytes[at..at + value.len()].copy_from_slice(value);
    };
    let length = u32::try_from(BATCH_HEADER_SIZE as usize + section.len()).unwrap();
    put(
        &mut bytes,
        offset_of!(BatchHeader, batch_length),
        &length.to_le_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(BatchHeader, magic),
        &[spate_format::batch::MAGIC],
    );
    let attributes = u16::from_be_bytes(kafka[21..23].try_into().ok()?);
    put(
        &mut bytes,
        offset_of!(BatchHeader, attributes),
        &attributes.to_le_bytes(),
    );
    let count = i32::from_be_bytes(kafka[57..61].try_into().ok()?) as u32;
    put(
        &mut bytes,
        offset_of!(BatchHeader, record_count),
        &count.to_le_bytes(),
    );
    let delta = i32::from_be_bytes(kafka[23..27].try_into().ok()?) as u32;
    put(
        &mut bytes,
        offset_of!(BatchHeader, last_offset_delta),
        &delta.to_le_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(BatchHeader, first_timestamp),
        &be_i64(kafka, 27).to_le_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(BatchHeader, producer_id),
        &be_i64(kafka, 43).to_le_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(BatchHeader, producer_epoch),
        &kafka[51..53].iter().rev().copied().collect::<Vec<_>>(),
    );
    put(
        &mut bytes,
        offset_of!(BatchHeader, base_sequence),
        &i32::from_be_bytes(kafka[53..57].try_into().ok()?).to_le_bytes(),
    );
    bytes.extend_from_slice(section);
    let fix = |bytes: &mut Vec<u8>| {
        let crc = crc32fast::hash(&bytes[PRODUCER_CRC_START..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        let crc = crc32fast::hash(&bytes[HEADER_CRC_START..72]);
        bytes[0..4].copy_from_slice(&crc.to_le_bytes());
    };
    fix(&mut bytes);
    let max = match BatchRef::parse(&bytes) {
        Err(error) => return Some(Err(error)),
        Ok(batch) => {
            let mut max = i64::MIN;
            for record in batch.records() {
                match record {
                    Ok(record) => max = max.max(record.timestamp),
                    Err(error) => return Some(Err(error.into())),
                }
            }
            max
        }
    };
    put(
        &mut bytes,
        offset_of!(BatchHeader, max_timestamp),
        &max.to_le_bytes(),
    );
    fix(&mut bytes);
    Some(BatchRef::parse_validated(&bytes).map(|_| bytes.clone()))
}

/// Timestamp delta, key, value, headers.
type Generated = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn arbitrary_record() -> impl Strategy<Value = Generated> {
    (
        -5_000i64..5_000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            (
                "[a-z\u{e9}]{0,8}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            ),
            0..4,
        ),
    )
}

fn to_kafka_records(
    records: &[Generated],
    base_timestamp: i64,
    producer: (i64, i16, i32),
) -> Vec<KafkaRecord> {
    records
        .iter()
        .enumerate()
        .map(|(index, (delta, key, value, headers))| {
            let mut map = IndexMap::new();
            for (name, value) in headers {
                map.insert(
                    StrBytes::from_string(name.clone()),
                    value.clone().map(Bytes::from),
                );
            }
            KafkaRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: producer.0,
                producer_epoch: producer.1,
                timestamp_type: KafkaTimestampType::Creation,
                offset: index as i64,
                // kafka-protocol's encoder starts a new batch where offset − sequence changes.
                sequence: producer.2.wrapping_add(i32::try_from(index).unwrap()),
                timestamp: base_timestamp + delta,
                key: key.clone().map(Bytes::from),
                value: value.clone().map(Bytes::from),
                headers: map,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Records from kafka-protocol's encoder convert, pass the node's validation, read back
    /// equal, and come back from a fetch equal with the node's offsets.
    #[test]
    fn encoder_batches_round_trip(
        records in proptest::collection::vec(arbitrary_record(), 1..20),
        base_timestamp in 1_600_000_000_000i64..1_900_000_000_000,
        producer in prop_oneof![
            Just((-1i64, -1i16, -1i32)),
            (0i64..i64::MAX, 0i16..i16::MAX, 0i32..1_000_000),
        ],
        base_offset in 0u64..(1 << 62),
        codec in prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Snappy),
            Just(Compression::Lz4),
            Just(Compression::Zstd),
        ],
    ) {
        let kafka = to_kafka_records(&records, base_timestamp, producer);
        let input = encode_with(&kafka, codec);
        let batch = kafka_to_spate(&input).unwrap();
        let mut spate = batch.to_contiguous().to_vec();
        let (head, body) = batch.into_parts();
        prop_assert_eq!([&head[..], &body[..]].concat(), spate.clone());
        let parsed = BatchRef::parse_validated(&spate).unwrap();
        prop_assert_eq!(
            parsed.producer(),
            ProducerFields { producer_id: producer.0, producer_epoch: producer.1, base_sequence: producer.2 }
        );
        let expected: Vec<Plain> = kafka.iter().map(kafka_plain).collect();
        prop_assert_eq!(spate_records(&spate), expected);
        stamp(&mut spate, Offset(base_offset), 42).unwrap();
        let back = spate_to_kafka(&Bytes::from(spate)).unwrap().to_contiguous();
        prop_assert_eq!(&back[16..], &input[16..]);
        let decoded = decode_kafka(&back);
        prop_assert_eq!(decoded.len(), kafka.len());
        for (decoded, original) in decoded.iter().zip(&kafka) {
            let mut want = original.clone();
            want.offset += base_offset as i64;
            want.partition_leader_epoch = -1;
            prop_assert_eq!(decoded, &want);
        }
    }

    /// Arbitrary bytes never panic either direction, and whatever converts is accepted by the
    /// node.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let input = Bytes::from(bytes);
        if let Ok(batch) = kafka_to_spate(&input) {
            BatchRef::parse_validated(&batch.to_contiguous()).unwrap();
        }
        let _ = spate_to_kafka(&input);
    }

    /// Golden batches with bytes changed and the CRC-32C fixed: the gateway's record walk
    /// agrees with spate-format's validation on every one.
    #[test]
    fn mutated_batches_agree_with_spate_format(
        golden in 0..GOLDEN.len(),
        changes in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = GOLDEN[golden].to_vec();
        for (position, value) in changes {
            let position = kafka_offset::RECORDS + position % (bytes.len() - kafka_offset::RECORDS);
            bytes[position] = value;
        }
        fix_kafka_crc(&mut bytes);
        let ours = convert(&bytes);
        let reference = reference_spate(&bytes).unwrap();
        match (&ours, &reference) {
            (Ok(ours), Ok(reference)) => prop_assert_eq!(ours, reference),
            (Err(KafkaBatchError::Records(ours)), Err(BatchError::Records(reference))) => {
                prop_assert_eq!(ours, reference);
            }
            _ => prop_assert!(false, "gateway {ours:?}, spate-format {reference:?}"),
        }
    }
}
