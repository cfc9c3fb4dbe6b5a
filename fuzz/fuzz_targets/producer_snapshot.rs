//! Fuzz target: decoding any bytes as a producer snapshot never panics; an accepted snapshot
//! re-encodes to the same bytes, and the state it loads encodes back to a valid snapshot
//! holding the same producers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_core::ProducerStates;
use spate_format::producers::{decode_snapshot, encode_snapshot};

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = decode_snapshot(data) {
        assert_eq!(encode_snapshot(entries), data);
        let state = ProducerStates::decode(data).expect("a decoded snapshot loads");
        assert_eq!(state.len(), entries.len());
        let again = state.encode();
        let reloaded = ProducerStates::decode(&again).expect("an encoded state decodes");
        assert_eq!(reloaded, state);
    }
});
