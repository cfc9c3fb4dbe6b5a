//! Fuzz target: decoding any bytes as a leader-epoch file never panics; an accepted file
//! re-encodes to the same bytes, and the chain it loads writes the same file back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_core::replica::LeaderEpochs;
use spate_format::epochs::{decode_epochs, encode_epochs};

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = decode_epochs(data) {
        assert_eq!(encode_epochs(entries), data);
        let chain = LeaderEpochs::from_file(data).expect("a decoded file loads");
        assert_eq!(chain.entries().len(), entries.len());
        assert_eq!(chain.to_file(), data);
    }
});
