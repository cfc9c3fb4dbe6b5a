//! Kafka request framing: a 4-byte big-endian size, then a request header and body. The size
//! is checked against the limit before anything is allocated; the header's version decides
//! how the header and body decode; every response is framed with the header version the
//! schemas prescribe (ApiVersions answers always use header v0, also for the flexible v3+
//! body: an old librdkafka fails its very first exchange otherwise).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestHeader, RequestKind, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use thiserror::Error;

use crate::limits::REQUEST_SIZE_MIN;
use crate::versions::{api_versions_body, supported};

/// Why a connection is closed (Kafka closes on requests it cannot parse; the client
/// reconnects and, for an unserved version, renegotiates).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("request size {size} is outside {min}..={max} bytes")]
    Size { size: i64, min: u32, max: u32 },
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("{api:?} is not served on this port")]
    NotServed { api: ApiKey },
    #[error("{api:?} v{version} is not served (served: v{min}..=v{max})")]
    Version {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("malformed {api:?} v{version} request: {detail}")]
    Malformed {
        api: ApiKey,
        version: i16,
        detail: String,
    },
}

/// Checks a request's size prefix; returns the number of bytes to read next.
pub fn request_size(prefix: [u8; 4], max: u32) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    match u32::try_from(size) {
        Ok(size) if (REQUEST_SIZE_MIN..=max).contains(&size) => {
            Ok(usize::try_from(size).unwrap_or(usize::MAX))
        }
        _ => Err(FrameError::Size {
            size: i64::from(size),
            min: REQUEST_SIZE_MIN,
            max,
        }),
    }
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

impl Request {
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// What a request frame decodes to.
#[derive(Debug)]
pub enum Decoded {
    Request(Box<Request>),
    /// An ApiVersions request of a version not served (KIP-511): answer these bytes (a v0
    /// answer with UNSUPPORTED_VERSION and the served ranges) and keep the connection.
    Answer(Bytes),
}

/// Decodes one request (the bytes after the size prefix). Byte fields of the body (a
/// produce's records) are slices of `frame`, not copies.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, FrameError> {
    if frame.len() < REQUEST_SIZE_MIN as usize {
        return Err(FrameError::Size {
            size: frame.len() as i64,
            min: REQUEST_SIZE_MIN,
            max: u32::MAX,
        });
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(raw_key).map_err(|()| FrameError::UnknownApi(raw_key))?;
    let (min, max) = supported(api).ok_or(FrameError::NotServed { api })?;
    if !(min..=max).contains(&version) {
        if api == ApiKey::ApiVersions {
            return Ok(Decoded::Answer(encode_response(
                api,
                0,
                correlation_id,
                &api_versions_body(ResponseError::UnsupportedVersion.code()),
            )));
        }
        return Err(FrameError::Version {
            api,
            version,
            min,
            max,
        });
    }
    let malformed = |detail: String| FrameError::Malformed {
        api,
        version,
        detail,
    };
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|error| malformed(format!("header: {error}")))?;
    let body = if api == ApiKey::Produce && version < PRODUCE_SCHEMA_MIN {
        decode_legacy_produce(&frame).map_err(|error| malformed(error.to_string()))?
    } else {
        RequestKind::decode(api, &mut frame, version)
            .map_err(|error| malformed(error.to_string()))?
    };
    // Bytes after the request are ignored, as Kafka's brokers do: librdkafka 2.16 sends a
    // Metadata v12 request with three more bytes than the schema has.
    Ok(Decoded::Request(Box::new(Request {
        api,
        version,
        header,
        body,
    })))
}

/// The lowest Produce version kafka-protocol's schemas know (Kafka 4 removed v0-v2, KIP-896).
pub const PRODUCE_SCHEMA_MIN: i16 = 3;

/// Produce v0-v2, served only so that librdkafka before 2.11.1 compresses (it turns gzip,
/// snappy and lz4 on only if the broker advertises Produce v0; it never sends v0-v2 itself
/// once it has magic-2 batches). Their request is v3's without the leading
/// `transactional_id`, so it is decoded as v3 behind a null string; their records are magic
/// 0/1 message sets, which the gateway refuses per partition
/// (UNSUPPORTED_FOR_MESSAGE_FORMAT).
fn decode_legacy_produce(body: &[u8]) -> anyhow::Result<RequestKind> {
    let mut v3 = BytesMut::with_capacity(2 + body.len());
    v3.put_i16(-1);
    v3.put_slice(body);
    let mut v3 = v3.freeze();
    Ok(RequestKind::Produce(ProduceRequest::decode(
        &mut v3,
        PRODUCE_SCHEMA_MIN,
    )?))
}

/// Frames a Produce response of any served version: v3+ by the schemas; v2 as v3 (the same
/// fields); v1 and v0 by hand (v3's fields without each partition's `log_append_time_ms`, and
/// v0 also without `throttle_time_ms`), as the schemas no longer have them. The response
/// header of v0-v2 is v0, as v3's.
pub fn encode_produce_response(version: i16, correlation_id: i32, body: &ProduceResponse) -> Bytes {
    if version >= 2 {
        return encode_response(ApiKey::Produce, version.max(3), correlation_id, body);
    }
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(0);
    out.put_i32(correlation_id);
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    out.put_i32(count(body.responses.len()));
    for topic in &body.responses {
        let name = topic.name.as_bytes();
        // Topic names are at most 249 bytes (Spate's rule), far inside i16.
        out.put_i16(i16::try_from(name.len()).unwrap_or(i16::MAX));
        out.put_slice(name);
        out.put_i32(count(topic.partition_responses.len()));
        for partition in &topic.partition_responses {
            out.put_i32(partition.index);
            out.put_i16(partition.error_code);
            out.put_i64(partition.base_offset);
        }
    }
    if version == 1 {
        out.put_i32(body.throttle_time_ms);
    }
    let size = i32::try_from(out.len() - 4).unwrap_or(i32::MAX);
    out[..4].copy_from_slice(&size.to_be_bytes());
    out.freeze()
}

/// Frames a response: size, header (of the version the schemas prescribe for `api` at
/// `version`), body.
pub fn encode_response<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Bytes {
    // Sized up front: a fetch answer of many MiB grown by doubling would be copied again at
    // every step.
    let body_size = body.compute_size(version).unwrap_or(0);
    let mut out = BytesMut::with_capacity(64 + body_size);
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // Encoding our own structures fails only for a field set that the version lacks, a bug
    // in this crate: then the answer is an empty body, which the client reports.
    let encoded = header
        .encode(&mut out, api.response_header_version(version))
        .and_then(|()| body.encode(&mut out, version));
    if encoded.is_err() {
        out.truncate(4);
        let _ = header.encode(&mut out, api.response_header_version(version));
    }
    let size = i32::try_from(out.len() - 4).unwrap_or(i32::MAX);
    out[..4].copy_from_slice(&size.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use bytes::Buf;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
    use kafka_protocol::protocol::encode_request_header_into_buffer;

    use super::*;

    fn request(api: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut out = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(41);
        encode_request_header_into_buffer(&mut out, &header).unwrap();
        body.encode(&mut out, version).unwrap();
        out.freeze()
    }

    #[test]
    fn sizes_are_checked_before_anything_is_read() {
        assert_eq!(request_size(100i32.to_be_bytes(), 1000), Ok(100));
        assert!(request_size(1001i32.to_be_bytes(), 1000).is_err());
        assert!(request_size((-1i32).to_be_bytes(), 1000).is_err());
        assert!(request_size(7i32.to_be_bytes(), 1000).is_err());
    }

    #[test]
    fn api_versions_v3_is_answered_with_a_v0_header() {
        let frame = request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let Decoded::Request(request) = decode_request(frame).unwrap() else {
            panic!("not a request");
        };
        assert_eq!(request.correlation_id(), 41);
        let answer = encode_response(
            ApiKey::ApiVersions,
            3,
            request.correlation_id(),
            &api_versions_body(0),
        );
        let mut answer = answer.slice(4..);
        assert_eq!(answer.get_i32(), 41);
        // No tagged-field byte after the correlation id: the body starts at once.
        let body = ApiVersionsResponse::decode(&mut answer, 3).unwrap();
        assert_eq!(body.error_code, 0);
        assert!(!answer.has_remaining());
    }

    #[test]
    fn an_api_versions_version_from_the_future_gets_a_v0_answer() {
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::ApiVersions as i16);
        frame.put_i16(9);
        frame.put_i32(77);
        frame.put_slice(b"\xff\xff\x00whatever a future version holds");
        let Decoded::Answer(answer) = decode_request(frame.freeze()).unwrap() else {
            panic!("not answered");
        };
        let mut answer = answer.slice(4..);
        assert_eq!(answer.get_i32(), 77);
        let body = ApiVersionsResponse::decode(&mut answer, 0).unwrap();
        assert_eq!(body.error_code, ResponseError::UnsupportedVersion.code());
        assert!(body
            .api_keys
            .iter()
            .any(|key| key.api_key == ApiKey::ApiVersions as i16 && key.max_version == 4));
    }

    #[test]
    fn unserved_and_malformed_requests_are_errors_never_panics() {
        let metadata = request(ApiKey::Metadata, 13, &MetadataRequest::default());
        assert!(matches!(
            decode_request(metadata),
            Err(FrameError::Version { .. })
        ));
        let mut frame = BytesMut::new();
        frame.put_i16(999);
        frame.put_i16(0);
        frame.put_i32(1);
        assert_eq!(
            decode_request(frame.freeze()).unwrap_err(),
            FrameError::UnknownApi(999)
        );
        // A Metadata v4 request whose topic array claims i32::MAX entries (the allocation
        // that aborted an unpatched kafka-protocol).
        let mut bomb = BytesMut::new();
        bomb.put_i16(ApiKey::Metadata as i16);
        bomb.put_i16(4);
        bomb.put_i32(1);
        bomb.put_i16(-1);
        bomb.put_i32(i32::MAX);
        assert!(matches!(
            decode_request(bomb.freeze()),
            Err(FrameError::Malformed { .. })
        ));
        // The reproducer of kafka-protocol-rs #152 (flexible, compact array).
        let repro = Bytes::from_static(&[
            0x00, 0x03, 0x00, 0x0c, 0, 0, 0, 1, 0xff, 0xff, 0x00, 0xb6, 0xff, 0xff, 0xff, 0x0f,
        ]);
        assert!(decode_request(repro).is_err());
        // Bytes after the request are ignored, as Kafka does (librdkafka 2.16's Metadata
        // v12 for every topic, captured).
        let librdkafka = [
            0x00, 0x03, 0x00, 0x0c, 0, 0, 0, 3, 0x00, 0x07, b'r', b'd', b'k', b'a', b'f', b'k',
            b'a', 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        ];
        let Ok(Decoded::Request(metadata)) = decode_request(Bytes::copy_from_slice(&librdkafka))
        else {
            panic!("librdkafka's Metadata v12 was refused");
        };
        assert!(
            matches!(&metadata.body, RequestKind::Metadata(request) if request.topics.is_none())
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode_request(Bytes::from(bytes));
        }

        #[test]
        fn arbitrary_bodies_after_a_valid_header_never_panic(
            key in proptest::sample::select(vec![0i16, 1, 2, 3, 18]),
            version in 0i16..13,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let mut frame = BytesMut::new();
            frame.put_i16(key);
            frame.put_i16(version);
            frame.put_i32(5);
            frame.put_slice(&body);
            let _ = decode_request(frame.freeze());
        }
    }
}
