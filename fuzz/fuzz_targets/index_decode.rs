//! Fuzz target: decoding any bytes as an offset or time index never panics; an accepted index
//! re-encodes to the same bytes and its lookups agree with a linear search.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_format::index::{
    decode_offset_index, decode_time_index, encode_index, lookup_offset, lookup_time,
};

fuzz_target!(|data: &[u8]| {
    let probe = data.first().copied().unwrap_or(0);
    if let Ok(entries) = decode_offset_index(data) {
        assert_eq!(encode_index(entries), data);
        for target in [0, u32::from(probe), u32::from(probe) << 16, u32::MAX] {
            let linear = entries
                .iter()
                .rev()
                .find(|e| e.relative_offset.get() <= target);
            assert_eq!(lookup_offset(entries, target), linear);
        }
    }
    if let Ok(entries) = decode_time_index(data) {
        assert_eq!(encode_index(entries), data);
        for target in [i64::MIN, 0, i64::from(probe) << 40, i64::MAX] {
            let linear = entries.iter().rev().find(|e| e.timestamp.get() < target);
            assert_eq!(lookup_time(entries, target), linear);
        }
    }
});
