//! Fuzz target: decoding any bytes as a data directory's identity file never panics; an
//! accepted file re-encodes to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_format::identity::{decode_identity, encode_identity};

fuzz_target!(|data: &[u8]| {
    if let Ok(identity) = decode_identity(data) {
        assert_eq!(encode_identity(identity), data);
    }
});
