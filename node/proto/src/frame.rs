//! Frames: the 16-byte header, incremental decoding from a byte stream, and routing fields
//! read without decoding the rest of the body.
//!
//! Invariants: a frame is only split off the stream once it is complete; its length is checked
//! against the receiver's limit before any byte of the body is buffered for it; the routing
//! fields of partition-scoped requests are the first fields of the body, so a gateway can
//! route a frame and forward its bytes untouched. Specified in `docs/protocol.md`.

use core::mem::{offset_of, size_of};

use bytes::{Bytes, BytesMut};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{FrameError, ProtoError};
use crate::limits::FRAME_HEADER_SIZE;
use crate::{ApiKey, PartitionId};
use spate_format::limits::TOPIC_NAME_LENGTH_MAX;

/// The protocol version this crate speaks, for every api.
pub const VERSION: u8 = 1;

/// Flag bit: the frame is a response (clear: a request).
pub const FLAG_RESPONSE: u8 = 0x01;
/// Flag bit: the response body is an error body (only with `FLAG_RESPONSE`).
pub const FLAG_ERROR: u8 = 0x02;
pub(crate) const FLAGS_KNOWN: u8 = FLAG_RESPONSE | FLAG_ERROR;

/// The fixed header at the start of every frame (little-endian, alignment 1).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FrameHeader {
    /// Bytes after this field: the rest of the header (12) plus the body.
    pub length: U32,
    pub api_key: U16,
    pub version: u8,
    pub flags: u8,
    /// Chosen by the requester, echoed in the response.
    pub correlation_id: U64,
}

const _: () = assert!(size_of::<FrameHeader>() == FRAME_HEADER_SIZE as usize);
/// Where each field of [`FrameHeader`] lies; the only place the layout is spelled out in
/// bytes for code that edits or reads a header it has not decoded (a gateway rewriting
/// correlation ids, an error answering a frame whose header is only partly there).
const API_KEY_AT: usize = offset_of!(FrameHeader, api_key);
const FLAGS_AT: usize = offset_of!(FrameHeader, flags);
const CORRELATION_ID_AT: usize = offset_of!(FrameHeader, correlation_id);

impl FrameHeader {
    /// Rewrites the correlation id of the frame header at the start of `frame`.
    pub fn set_correlation_id(frame: &mut [u8], correlation_id: u64) {
        frame[CORRELATION_ID_AT..CORRELATION_ID_AT + 8]
            .copy_from_slice(&correlation_id.to_le_bytes());
    }

    /// The api key of a header that may be partial (0 when it has not arrived).
    pub fn api_key_of(partial: &[u8]) -> u16 {
        match partial.get(API_KEY_AT..API_KEY_AT + 2) {
            Some(bytes) => u16::from_le_bytes([bytes[0], bytes[1]]),
            None => 0,
        }
    }

    /// The error code of an answer given as its header and body: `None` for an answer that
    /// is not an error. An error's body starts with its code (u16, docs/protocol.md); a body
    /// too short for it reads as [`ErrorCode::Malformed`].
    pub fn error_code_of(header: &[u8], body: &[u8]) -> Option<crate::ErrorCode> {
        let flags = header.get(FLAGS_AT)?;
        if flags & FLAG_ERROR == 0 {
            return None;
        }
        Some(match body.get(..2) {
            Some(code) => crate::ErrorCode::from_u16(u16::from_le_bytes([code[0], code[1]])),
            None => crate::ErrorCode::Malformed,
        })
    }

    /// The correlation id of a header that may be partial (0 when it has not arrived).
    pub fn correlation_id_of(partial: &[u8]) -> u64 {
        let mut id = [0u8; 8];
        if let Some(bytes) = partial.get(CORRELATION_ID_AT..CORRELATION_ID_AT + 8) {
            id.copy_from_slice(bytes);
        }
        u64::from_le_bytes(id)
    }
}

const _: () = assert!(offset_of!(FrameHeader, api_key) == 4);
const _: () = assert!(offset_of!(FrameHeader, version) == 6);
const _: () = assert!(offset_of!(FrameHeader, flags) == 7);
const _: () = assert!(offset_of!(FrameHeader, correlation_id) == 8);

/// Bytes of the header that the `length` field counts.
const LENGTH_COVERED_HEADER: u32 = FRAME_HEADER_SIZE - 4;

/// The decoded fields of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Raw api key; [`FrameHead::api`] maps it to a known api.
    pub api_key: u16,
    pub version: u8,
    pub flags: u8,
    pub correlation_id: u64,
    /// Length of the body after the 16-byte header.
    pub body_length: u32,
}

impl FrameHead {
    pub fn api(&self) -> Result<ApiKey, ProtoError> {
        ApiKey::from_u16(self.api_key).ok_or(ProtoError::UnknownApi(self.api_key))
    }

    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    pub fn is_error(&self) -> bool {
        self.flags & FLAG_ERROR != 0
    }

    /// Checks flags and version for a frame that should be a request.
    pub fn check_request(&self) -> Result<ApiKey, ProtoError> {
        self.check(false)
    }

    /// Checks flags and version for a frame that should be a response.
    pub fn check_response(&self) -> Result<ApiKey, ProtoError> {
        self.check(true)
    }

    fn check(&self, response: bool) -> Result<ApiKey, ProtoError> {
        let api = self.api()?;
        // Only a response may carry the error flag.
        if self.flags & !FLAGS_KNOWN != 0 || (!response && self.is_error()) {
            return Err(ProtoError::Flags(self.flags));
        }
        if self.is_response() != response {
            let (expected, found) = if response {
                ("response", "request")
            } else {
                ("request", "response")
            };
            return Err(ProtoError::Direction { expected, found });
        }
        if self.version != VERSION {
            return Err(ProtoError::UnsupportedVersion {
                api: api.name(),
                found: self.version,
                supported: VERSION,
            });
        }
        Ok(api)
    }

    /// Total frame size, header included.
    pub fn frame_size(&self) -> usize {
        FRAME_HEADER_SIZE as usize + self.body_length as usize
    }

    /// Encodes the header (for a body of `body_length` bytes).
    pub fn encode(&self) -> [u8; FRAME_HEADER_SIZE as usize] {
        let header = FrameHeader {
            length: U32::new(LENGTH_COVERED_HEADER + self.body_length),
            api_key: U16::new(self.api_key),
            version: self.version,
            flags: self.flags,
            correlation_id: U64::new(self.correlation_id),
        };
        let mut out = [0u8; FRAME_HEADER_SIZE as usize];
        out.copy_from_slice(header.as_bytes());
        out
    }
}

/// The outcome of looking at the start of a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// The frame is not complete: at least `needed` more bytes must arrive.
    NeedMore { needed: usize },
    /// A whole frame of `head.frame_size()` bytes is at the start of the buffer.
    Complete { head: FrameHead },
}

/// Looks at the start of `buffer` and says whether a whole frame is there. A frame whose
/// declared size exceeds `size_max` is an error as soon as its header arrives, before any of
/// its body is buffered.
pub fn peek_frame(buffer: &[u8], size_max: u32) -> Result<Peek, FrameError> {
    let Ok((header, _)) = FrameHeader::ref_from_prefix(buffer) else {
        return Ok(Peek::NeedMore {
            needed: FRAME_HEADER_SIZE as usize - buffer.len(),
        });
    };
    let length = header.length.get();
    if length < LENGTH_COVERED_HEADER {
        return Err(FrameError::TooShort { length });
    }
    let size = u64::from(length) + 4;
    if size > u64::from(size_max) {
        return Err(FrameError::TooLarge {
            size,
            max: size_max,
        });
    }
    let head = FrameHead {
        api_key: header.api_key.get(),
        version: header.version,
        flags: header.flags,
        correlation_id: header.correlation_id.get(),
        body_length: length - LENGTH_COVERED_HEADER,
    };
    let frame_size = head.frame_size();
    if buffer.len() < frame_size {
        return Ok(Peek::NeedMore {
            needed: frame_size - buffer.len(),
        });
    }
    Ok(Peek::Complete { head })
}

/// A whole frame: its decoded header and its bytes (header included), shared, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub head: FrameHead,
    bytes: Bytes,
}

impl Frame {
    /// Every byte of the frame, header included, for forwarding untouched.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The body after the 16-byte header.
    pub fn body(&self) -> Bytes {
        self.bytes.slice(FRAME_HEADER_SIZE as usize..)
    }

    /// Parses exactly one frame from `bytes`.
    pub fn parse(bytes: Bytes, size_max: u32) -> Result<Frame, FrameError> {
        match peek_frame(&bytes, size_max)? {
            Peek::Complete { head } if head.frame_size() == bytes.len() => {
                Ok(Frame { head, bytes })
            }
            Peek::Complete { head } => Err(FrameError::TooLarge {
                size: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
                max: u32::try_from(head.frame_size()).unwrap_or(u32::MAX),
            }),
            Peek::NeedMore { .. } => Err(FrameError::TooShort {
                length: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            }),
        }
    }

    /// The routing fields of a partition-scoped request, read without decoding the rest.
    pub fn route(&self) -> Result<Option<Route<'_>>, ProtoError> {
        route(&self.head, &self.bytes[FRAME_HEADER_SIZE as usize..])
    }
}

/// Splits whole frames off a stream buffer: feed received bytes into a `BytesMut`, call
/// [`FrameDecoder::decode`] until it returns `Ok(None)` (need more bytes).
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    size_max: u32,
}

impl FrameDecoder {
    /// `size_max` is the largest frame accepted, header included
    /// ([`crate::limits::REQUEST_SIZE_MAX`] on a server, [`crate::limits::RESPONSE_SIZE_MAX`]
    /// on a client).
    pub fn new(size_max: u32) -> Self {
        FrameDecoder { size_max }
    }

    pub fn size_max(&self) -> u32 {
        self.size_max
    }

    /// Splits the next whole frame off `buffer`, or returns `Ok(None)` when more bytes are
    /// needed (then [`FrameDecoder::needed`] tells how many at least). An error means the
    /// stream cannot be resynchronised.
    pub fn decode(&self, buffer: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match peek_frame(buffer, self.size_max)? {
            Peek::NeedMore { .. } => Ok(None),
            Peek::Complete { head } => {
                let bytes = buffer.split_to(head.frame_size()).freeze();
                Ok(Some(Frame { head, bytes }))
            }
        }
    }

    /// Bytes still missing for the frame at the start of `buffer` (0 if complete or invalid).
    pub fn needed(&self, buffer: &[u8]) -> usize {
        match peek_frame(buffer, self.size_max) {
            Ok(Peek::NeedMore { needed }) => needed,
            _ => 0,
        }
    }
}

/// Where a partition-scoped request goes, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub topic: &'a str,
    pub partition: PartitionId,
}

/// Reads the routing fields (topic, partition) at the start of the body of a `Produce`,
/// `Fetch`, `ListOffsets`, `DeleteRecords` or `FindRecord` request; `Ok(None)` for requests any shard can answer. Nothing
/// after the routing fields is read.
pub fn route<'a>(head: &FrameHead, body: &'a [u8]) -> Result<Option<Route<'a>>, ProtoError> {
    if head.is_response() || !head.api()?.is_partition_scoped() {
        return Ok(None);
    }
    let truncated = |field| ProtoError::Truncated { field };
    let (length, rest) = body.split_first_chunk::<2>().ok_or(truncated("topic"))?;
    let length = u16::from_le_bytes(*length);
    if u32::from(length) > TOPIC_NAME_LENGTH_MAX {
        return Err(ProtoError::Length {
            field: "topic",
            length: length.into(),
            max: TOPIC_NAME_LENGTH_MAX.into(),
        });
    }
    let (topic, rest) = rest
        .split_at_checked(length.into())
        .ok_or(truncated("topic"))?;
    let topic = core::str::from_utf8(topic).map_err(|_| ProtoError::Utf8 { field: "topic" })?;
    spate_format::validate_topic_name(topic)?;
    let (partition, _) = rest
        .split_first_chunk::<4>()
        .ok_or(truncated("partition"))?;
    Ok(Some(Route {
        topic,
        partition: PartitionId(u32::from_le_bytes(*partition)),
    }))
}

#[cfg(test)]
mod error_code_tests {
    use crate::{ErrorCode, Response};

    #[test]
    fn an_answers_error_code_is_read_from_its_header_and_body() {
        let split = |frame: bytes::Bytes| {
            let at = crate::limits::FRAME_HEADER_SIZE as usize;
            (frame.slice(..at), frame.slice(at..))
        };
        let (header, body) = split(Response::error(4, ErrorCode::NotOwner, "moved").to_frame(7));
        assert_eq!(
            super::FrameHeader::error_code_of(&header, &body),
            Some(ErrorCode::NotOwner)
        );
        let (header, body) = split(Response::ReplicaProgress.to_frame(7));
        assert_eq!(super::FrameHeader::error_code_of(&header, &body), None);
        assert_eq!(
            super::FrameHeader::error_code_of(&header[..4], &body),
            None,
            "a partial header is no error"
        );
    }
}
