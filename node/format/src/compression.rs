//! The compression codecs of record batches (format version 2): Kafka's four, with Kafka's
//! numbering and Kafka's stream formats, so a batch compressed by any Kafka client is stored
//! and returned as sent, and every client can read it.
//!
//! Decompression takes untrusted bytes and is bounded: the output may not exceed
//! [`DECOMPRESSED_SIZE_MAX`], checked while decoding (never after allocating what the input
//! claims), and zstd may not use a window over 2^[`ZSTD_WINDOW_LOG_MAX`]. A stream that
//! decodes to more is refused as [`DecompressError::TooLarge`] ("zip bomb"); one that does not
//! decode is [`DecompressError::Corrupt`]. Specified in `docs/format/record-batch.md`.
//!
//! | codec | stream format | decoder |
//! |---|---|---|
//! | gzip (1) | RFC 1952, one or more members | `flate2` |
//! | snappy (2) | raw snappy, or xerial's framing (`\x82SNAPPY\0`, blocks with a length each) as the Java client writes it | `snap` |
//! | lz4 (3) | the LZ4 frame format | `lz4_flex` |
//! | zstd (4) | zstd frames | `zstd` (libzstd) |

use std::io::{Read, Write};

use crate::limits::DECOMPRESSED_SIZE_MAX;

/// The largest zstd window a decoder accepts (2^25 = 32 MiB, the largest output anyway). A
/// frame may ask for up to 2^31; without this bound its window alone could take that much.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// zstd level the producer side uses (libzstd's default, as Kafka's and librdkafka's).
pub const ZSTD_LEVEL: i32 = 3;

/// Block size of the xerial snappy framing the producer side writes (the Java client's).
pub const SNAPPY_XERIAL_BLOCK: usize = 32 * 1024;

/// The xerial snappy stream header: magic, then version 1 and compatible version 1.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER: usize = 16;

/// Compression codec of a batch (attribute bits 0-2), numbered as in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Every codec, in Kafka's numbering order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec of attribute bits 0-2, if it is one of Kafka's five.
    pub fn from_bits(bits: u16) -> Option<Compression> {
        Some(match bits {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    /// Attribute bits 0-2 of this codec.
    pub fn bits(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The name used by Kafka's `compression.type` and Spate's `--compression`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Compression::ALL
            .into_iter()
            .find(|codec| codec.name() == name)
            .ok_or_else(|| format!("unknown compression {name:?}: none, gzip, snappy, lz4 or zstd"))
    }
}

/// Why a compressed records section could not be decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("{codec} data does not decompress: {reason}")]
    Corrupt {
        codec: Compression,
        reason: &'static str,
    },
    #[error("{codec} data decompresses to more than {max} bytes")]
    TooLarge { codec: Compression, max: u32 },
}

/// Decompresses `input` of `codec`, producing at most `DECOMPRESSED_SIZE_MAX` bytes.
/// `Compression::None` returns the input as it is.
pub fn decompress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, DecompressError> {
    decompress_limited(codec, input, DECOMPRESSED_SIZE_MAX as usize)
}

/// [`decompress`] with another output limit (tests use small ones).
pub fn decompress_limited(
    codec: Compression,
    input: &[u8],
    max: usize,
) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |reason| DecompressError::Corrupt { codec, reason };
    match codec {
        Compression::None => {
            if input.len() > max {
                return Err(too_large(codec, max));
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(
            codec,
            flate2::read::MultiGzDecoder::new(input),
            max,
            "invalid gzip stream",
        ),
        Compression::Snappy => {
            let mut out = Vec::new();
            if input.starts_with(&XERIAL_MAGIC) {
                snappy_xerial(input, max, &mut out)?;
            } else {
                snappy_block(input, max, &mut out)?;
            }
            Ok(out)
        }
        Compression::Lz4 => read_bounded(
            codec,
            lz4_flex::frame::FrameDecoder::new(input),
            max,
            "invalid LZ4 frame",
        ),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|_| corrupt("zstd decoder could not start"))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|_| corrupt("zstd decoder could not start"))?;
            read_bounded(codec, decoder, max, "invalid zstd frame")
        }
    }
}

fn too_large(codec: Compression, max: usize) -> DecompressError {
    DecompressError::TooLarge {
        codec,
        max: u32::try_from(max).unwrap_or(u32::MAX),
    }
}

/// Reads a decoder to its end, refusing to produce more than `max` bytes. The buffer grows
/// with what is actually produced, so a claim in the input cannot make it allocate.
fn read_bounded(
    codec: Compression,
    decoder: impl Read,
    max: usize,
    reason: &'static str,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    match decoder.take(limit).read_to_end(&mut out) {
        Ok(_) if out.len() > max => Err(too_large(codec, max)),
        Ok(_) => Ok(out),
        Err(_) => Err(DecompressError::Corrupt { codec, reason }),
    }
}

/// Appends one raw snappy block to `out`. The block's declared length is checked against
/// what `out` may still take (`max` in all) before anything is allocated.
fn snappy_block(block: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    let codec = Compression::Snappy;
    let corrupt = |reason| DecompressError::Corrupt { codec, reason };
    let length =
        snap::raw::decompress_len(block).map_err(|_| corrupt("invalid snappy block header"))?;
    let start = out.len();
    if length > max.saturating_sub(start) {
        return Err(too_large(codec, max));
    }
    out.resize(start + length, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|_| corrupt("invalid snappy block"))?;
    if written != length {
        return Err(corrupt("snappy block shorter than it declares"));
    }
    Ok(())
}

/// Xerial's framing: a 16-byte header, then blocks of a big-endian i32 length and a raw
/// snappy block.
fn snappy_xerial(input: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    let corrupt = |reason| DecompressError::Corrupt {
        codec: Compression::Snappy,
        reason,
    };
    let mut rest = input
        .get(XERIAL_HEADER..)
        .ok_or(corrupt("xerial snappy header cut short"))?;
    while !rest.is_empty() {
        let (length, after) = rest
            .split_first_chunk::<4>()
            .ok_or(corrupt("xerial snappy block length cut short"))?;
        let length = usize::try_from(i32::from_be_bytes(*length))
            .map_err(|_| corrupt("negative xerial snappy block length"))?;
        if length > after.len() {
            return Err(corrupt("xerial snappy block longer than the data"));
        }
        let (block, after) = after.split_at(length);
        snappy_block(block, max, out)?;
        rest = after;
    }
    Ok(())
}

/// Compresses `input` with `codec` in the stream format Kafka's Java client writes (gzip
/// member, xerial-framed snappy in 32 KiB blocks, an LZ4 frame of independent 64 KiB blocks
/// without checksums, one zstd frame at level 3). `Compression::None` copies. `None` if the
/// codec failed, which writing into memory does not do.
pub fn compress(codec: Compression, input: &[u8]) -> Option<Vec<u8>> {
    Some(match codec {
        Compression::None => input.to_vec(),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(input).ok()?;
            encoder.finish().ok()?
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER + input.len() / 2);
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for block in input.chunks(SNAPPY_XERIAL_BLOCK) {
                let compressed = encoder.compress_vec(block).ok()?;
                // Blocks are at most 32 KiB, their compressed form far below i32::MAX.
                let length = i32::try_from(compressed.len()).unwrap_or(i32::MAX);
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            out
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(input).ok()?;
            encoder.finish().ok()?
        }
        Compression::Zstd => zstd::bulk::compress(input, ZSTD_LEVEL).ok()?,
    })
}
