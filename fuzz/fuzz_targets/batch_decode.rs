//! Fuzz target: any bytes given to the batch decoder never panic (compressed records are
//! decompressed, bounded), and every batch it accepts rebuilds from its decoded records: byte
//! for byte after the magic when it is uncompressed and its first record is at the base
//! timestamp (the format is canonical), record for record otherwise.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_format::batch::MAGIC;
use spate_format::{stamp, BatchBuilder, BatchRef, Compression, Header, Record};

fuzz_target!(|input: &[u8]| {
    // The first byte chooses between the raw bytes and the bytes with correct CRCs.
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut owned = rest.to_vec();
    if mode & 1 == 1 {
        spate_fuzz::fix_crcs(&mut owned);
    }
    let data = &owned[..];
    let Ok(batch) = BatchRef::parse_prefix(data) else {
        return;
    };
    for record in batch.records() {
        let Ok(record) = record else { break };
        for header in record.headers {
            let _ = header.value;
        }
    }
    if batch.validate_records().is_err() {
        return;
    }
    let section = batch.records_section().expect("validated records decompress");
    let mut builder = BatchBuilder::new()
        .timestamp_type(batch.timestamp_type())
        .producer(batch.producer())
        .compression(batch.compression());
    let mut first_at_base = true;
    for record in batch.records_in(&section) {
        let record = record.expect("validated records decode");
        if record.offset_delta == 0 {
            first_at_base = record.timestamp == batch.first_timestamp();
        }
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|header| Header {
                name: header.name,
                value: header.value,
            })
            .collect();
        let pushed = builder.push(&Record {
            timestamp: record.timestamp,
            key: record.key,
            value: record.value,
            headers: &headers,
        });
        match pushed {
            Ok(()) => {}
            // Decompressed records may exceed one batch (up to DECOMPRESSED_SIZE_MAX); the
            // builder's limit is on uncompressed records.
            Err(_) if batch.compression() != Compression::None => return,
            Err(error) => panic!("a decoded record does not fit a batch of the same size: {error}"),
        }
    }
    let mut rebuilt = builder.finish().expect("at least one record");
    stamp(&mut rebuilt, batch.base_offset(), batch.append_time()).expect("offsets were valid");
    let again = BatchRef::parse_validated(&rebuilt).expect("a rebuilt batch is valid");
    assert_eq!(again.magic(), MAGIC);
    assert_eq!(again.record_count(), batch.record_count());
    assert_eq!(again.max_timestamp(), batch.max_timestamp());
    if batch.compression() == Compression::None && first_at_base {
        // Everything from the magic on but the magic itself (version 1 batches rebuild as
        // version 2), and the batch length before it.
        let (original, rebuilt) = (batch.as_bytes(), &rebuilt[..]);
        assert_eq!(rebuilt.len(), original.len(), "lengths differ");
        assert_eq!(rebuilt[24..28], original[24..28]);
        assert_eq!(
            rebuilt[29..],
            original[29..],
            "decoded batch does not re-encode identically"
        );
    } else {
        let again_section = again.records_section().expect("rebuilt records decompress");
        let decoded = |b: &BatchRef<'_>, s: &[u8]| {
            b.records_in(s)
                .map(|r| {
                    let r = r.expect("valid");
                    (r.timestamp, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(decoded(&again, &again_section), decoded(&batch, &section));
    }
});
