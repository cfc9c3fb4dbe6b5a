//! Fuzz target: Kafka ↔ Spate batch conversion (`spate_kafka::batch`) never panics, in either
//! direction. Produce: every Kafka batch that converts is one the node accepts, its records are
//! the input's, and it converts back to the producer's bytes (but the max timestamp, which is
//! recomputed). Fetch: every Spate batch that converts gets a valid CRC-32C, and when its
//! records are valid it converts back to itself.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spate_format::limits::BATCH_HEADER_SIZE;
use spate_format::{stamp, BatchRef};
use spate_kafka::batch::{kafka_offset, kafka_to_spate, spate_to_kafka};

const KAFKA_HEADER: usize = kafka_offset::RECORDS;

/// Rewrites the CRC-32C of the Kafka batch at the start of `bytes`, by its declared length
/// clamped to the bytes there.
fn fix_kafka_crc(bytes: &mut [u8]) {
    if bytes.len() < KAFKA_HEADER {
        return;
    }
    let declared = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let end = usize::try_from(declared)
        .unwrap_or(0)
        .saturating_add(12)
        .clamp(kafka_offset::ATTRIBUTES, bytes.len());
    let crc = crc32c::crc32c(&bytes[kafka_offset::ATTRIBUTES..end]);
    bytes[kafka_offset::CRC..kafka_offset::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

fn produce(input: Bytes) {
    let Ok(batch) = kafka_to_spate(&input) else {
        return;
    };
    let size = input.len();
    assert_eq!(batch.len() as usize, size + 11);
    assert_eq!(&batch.records()[..], &input[KAFKA_HEADER..]);
    let spate = batch.to_contiguous();
    let parsed = BatchRef::parse_validated(&spate).expect("the node accepts what converts");
    assert_eq!(parsed.record_count(), batch.record_count());
    // Back to Kafka as the node would serve it: the producer's bytes, with the offset and
    // epoch the node decides and the true max timestamp.
    let mut stamped = spate.to_vec();
    stamp(&mut stamped, spate_format::Offset(0), 0).expect("offset 0 fits");
    let back = spate_to_kafka(&Bytes::from(stamped))
        .expect("a stamped valid batch converts")
        .to_contiguous();
    assert_eq!(back.len(), size);
    assert_eq!(&back[8..12], &input[8..12]);
    assert_eq!(back[16], 2);
    assert_eq!(
        &back[kafka_offset::ATTRIBUTES..kafka_offset::MAX_TIMESTAMP],
        &input[kafka_offset::ATTRIBUTES..kafka_offset::MAX_TIMESTAMP]
    );
    assert_eq!(
        &back[kafka_offset::PRODUCER_ID..],
        &input[kafka_offset::PRODUCER_ID..]
    );
    let crc = u32::from_be_bytes(back[17..21].try_into().expect("4 bytes"));
    assert_eq!(crc, crc32c::crc32c(&back[kafka_offset::ATTRIBUTES..]));
}

fn fetch(input: Bytes) {
    let Ok(converted) = spate_to_kafka(&input) else {
        return;
    };
    let kafka = converted.to_contiguous();
    assert_eq!(kafka.len(), converted.len());
    // Every Spate batch became a Kafka batch 11 bytes shorter, in order.
    assert_eq!(
        input.len() - kafka.len(),
        11 * converted.parts().len() / 2,
        "one header and one records part per batch"
    );
    let mut spate_position = 0;
    let mut kafka_position = 0;
    while spate_position < input.len() {
        let original = BatchRef::parse_prefix(&input[spate_position..]).expect("it converted");
        let length = original.as_bytes().len();
        let kafka_length = length - 11;
        let one = kafka.slice(kafka_position..kafka_position + kafka_length);
        let crc = u32::from_be_bytes(one[17..21].try_into().expect("4 bytes"));
        assert_eq!(crc, crc32c::crc32c(&one[kafka_offset::ATTRIBUTES..]));
        assert_eq!(
            &one[KAFKA_HEADER..],
            &original.as_bytes()[BATCH_HEADER_SIZE as usize..]
        );
        if original.validate_records().is_ok() {
            let again = kafka_to_spate(&one).expect("a valid Spate batch converts back");
            let mut again = again.to_contiguous().to_vec();
            stamp(&mut again, original.base_offset(), original.append_time())
                .expect("the original's offsets are valid");
            if original.magic() == spate_format::batch::MAGIC {
                assert_eq!(&again[..], original.as_bytes(), "round trip");
            } else {
                // A version 1 batch comes back as version 2: another magic, so other CRCs.
                let original = original.as_bytes();
                assert_eq!(again[8..28], original[8..28], "round trip");
                assert_eq!(again[29..], original[29..], "round trip");
            }
        }
        spate_position += length;
        kafka_position += kafka_length;
    }
}

fuzz_target!(|input: &[u8]| {
    // The first byte chooses the direction (bit 0) and whether to fix the CRCs (bit 1), so the
    // fuzzer also explores everything behind the checksums.
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut owned = rest.to_vec();
    if mode & 1 == 0 {
        if mode & 2 != 0 {
            fix_kafka_crc(&mut owned);
        }
        produce(Bytes::from(owned));
    } else {
        if mode & 2 != 0 {
            spate_fuzz::fix_segment_crcs(&mut owned);
        }
        fetch(Bytes::from(owned));
    }
});
