//! Helpers shared by the fuzz targets.
//!
//! Random bytes almost never carry valid CRCs, so a fuzzer alone would rarely get past a
//! batch header. `fix_crcs` writes correct CRCs into fuzzer-made batches so the targets also
//! explore everything behind the checksums (records, offsets, lengths).

use spate_format::batch::{HEADER_CRC_START, PRODUCER_CRC_START};
use spate_format::limits::BATCH_HEADER_SIZE;

const HEADER: usize = BATCH_HEADER_SIZE as usize;

/// Rewrites both CRCs of the batch at the start of `bytes` to match its contents, using its
/// declared length clamped to the bytes available. Returns the declared length, or `None` if
/// fewer bytes than a header are available.
pub fn fix_crcs(bytes: &mut [u8]) -> Option<usize> {
    if bytes.len() < HEADER {
        return None;
    }
    let declared = u32::from_le_bytes(bytes[PRODUCER_CRC_START..][..4].try_into().ok()?);
    let declared = usize::try_from(declared).ok()?;
    let end = declared.clamp(PRODUCER_CRC_START, bytes.len());
    let producer_crc = crc32fast::hash(&bytes[PRODUCER_CRC_START..end]);
    bytes[4..8].copy_from_slice(&producer_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[HEADER_CRC_START..HEADER]);
    bytes[0..4].copy_from_slice(&header_crc.to_le_bytes());
    Some(declared)
}

/// Fixes the CRCs of every batch in a fuzzer-made segment, walking by declared lengths.
pub fn fix_segment_crcs(bytes: &mut [u8]) {
    let mut position = 0;
    while position < bytes.len() {
        match fix_crcs(&mut bytes[position..]) {
            Some(declared) => position += declared.max(HEADER),
            None => break,
        }
    }
}

/// Output limit of the decompression targets: small, so an input that expands far is found
/// quickly (the bound is the same code path as `DECOMPRESSED_SIZE_MAX`).
pub const DECOMPRESS_FUZZ_LIMIT: usize = 1 << 20;

/// The body of the `decompress_*` targets: any bytes given to `codec`'s bounded decoder never
/// panic and never give more than the limit; and the bytes compressed by Spate's encoder
/// decompress back to themselves.
pub fn decompress_target(codec: spate_format::Compression, input: &[u8]) {
    use spate_format::compression::{compress, decompress_limited, DecompressError};
    match decompress_limited(codec, input, DECOMPRESS_FUZZ_LIMIT) {
        Ok(plain) => assert!(plain.len() <= DECOMPRESS_FUZZ_LIMIT),
        Err(DecompressError::TooLarge { max, .. }) => {
            assert_eq!(max as usize, DECOMPRESS_FUZZ_LIMIT);
        }
        Err(DecompressError::Corrupt { .. }) => {}
    }
    let compressed = compress(codec, input).expect("in-memory codecs do not fail");
    let back = decompress_limited(codec, &compressed, input.len()).expect("round trip");
    assert_eq!(back, input, "{codec} does not round-trip");
}
