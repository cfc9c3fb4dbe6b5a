//! Fuzz target: any bytes after a Kafka request's size prefix decode to a request, an
//! ApiVersions fallback answer or an error, never a panic or an unbounded allocation (the
//! array-count abort of an unpatched kafka-protocol; its reproducers are among the seeds).
//! What decodes is answered: encoding the ApiVersions answer for it must work too.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spate_kafka::frame::{decode_request, encode_response, request_size, Decoded};
use spate_kafka::versions::api_versions_body;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = request_size([data[0], data[1], data[2], data[3]], 100 << 20);
    }
    match decode_request(Bytes::copy_from_slice(data)) {
        Ok(Decoded::Request(request)) => {
            let answer = encode_response(
                request.api,
                request.version,
                request.correlation_id(),
                &api_versions_body(0),
            );
            assert!(answer.len() >= 8);
        }
        Ok(Decoded::Answer(answer)) => assert!(answer.len() >= 8),
        Err(_) => {}
    }
});
