//! Fuzz target: gzip decompression of untrusted bytes is bounded and never panics, and Spate's
//! gzip encoder round-trips (`spate_fuzz::decompress_target`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_format::Compression;

fuzz_target!(|input: &[u8]| spate_fuzz::decompress_target(Compression::Gzip, input));
