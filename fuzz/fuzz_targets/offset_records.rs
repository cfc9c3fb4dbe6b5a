//! Fuzz target: decoding any bytes as a committed-offset key or value (the coordinator's
//! offsets log, read back from disk) never panics; an accepted one re-encodes to the same
//! bytes; a store fed any records never panics and replays its snapshot to itself.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spate_core::offsets::{Committed, OffsetKey, OffsetRecord, OffsetStore};

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = OffsetKey::decode(data) {
        assert_eq!(key.encode().expect("a decoded key encodes"), data);
    }
    if let Ok(value) = Committed::decode(data) {
        assert_eq!(value.encode().expect("a decoded value encodes"), data);
    }
    // Split the input into records: [key length u8][key][value length u8 or 255 = none][value].
    let mut store = OffsetStore::default();
    let mut rest = data;
    while let Some((&key_len, tail)) = rest.split_first() {
        let Some((key, tail)) = tail.split_at_checked(usize::from(key_len)) else {
            break;
        };
        let Some((&value_len, tail)) = tail.split_first() else {
            break;
        };
        let (value, tail) = if value_len == 255 {
            (None, tail)
        } else {
            let Some((value, tail)) = tail.split_at_checked(usize::from(value_len)) else {
                break;
            };
            (Some(Bytes::copy_from_slice(value)), tail)
        };
        let _ = store.apply(&OffsetRecord {
            key: Bytes::copy_from_slice(key),
            value,
        });
        rest = tail;
    }
    let mut replayed = OffsetStore::default();
    for record in store.snapshot_records() {
        replayed.apply(&record).expect("a snapshot record applies");
    }
    assert_eq!(replayed, store);
});
