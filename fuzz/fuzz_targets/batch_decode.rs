//! Fuzz target: any bytes given to the batch decoder never panic, and every batch it accepts
//! rebuilds byte for byte from its decoded records (the format is canonical).

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_format::{stamp, BatchBuilder, BatchRef, Header, Record};

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
    let mut builder = BatchBuilder::new()
        .timestamp_type(batch.timestamp_type())
        .producer(batch.producer());
    for record in batch.records() {
        let record = record.expect("validated records decode");
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|header| Header {
                name: header.name,
                value: header.value,
            })
            .collect();
        builder
            .push(&Record {
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                headers: &headers,
            })
            .expect("a decoded record fits a batch of the same size");
    }
    let mut rebuilt = builder.finish().expect("at least one record");
    stamp(&mut rebuilt, batch.base_offset(), batch.append_time()).expect("offsets were valid");
    assert_eq!(
        rebuilt,
        batch.as_bytes(),
        "decoded batch does not re-encode identically"
    );
});
