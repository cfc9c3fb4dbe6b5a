//! Fuzz target: any byte stream given to the frame decoder never panics; every frame that
//! decodes as a request or a response re-encodes to exactly its bytes, and the routing fields
//! agree with the decoded request.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use spate_proto::limits::RESPONSE_SIZE_MAX;
use spate_proto::{FrameDecoder, Request, Response};

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder::new(RESPONSE_SIZE_MAX);
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buffer) {
        let route = frame.route();
        if let Ok(request) = Request::decode(&frame) {
            assert_eq!(&request.to_frame(frame.head.correlation_id), frame.bytes());
            let expected = match &request {
                Request::Produce(r) => Some((r.topic.as_str(), r.partition)),
                Request::Fetch(r) => Some((r.topic.as_str(), r.partition)),
                Request::ListOffsets(r) => Some((r.topic.as_str(), r.partition)),
                Request::DeleteRecords(r) => Some((r.topic.as_str(), r.partition)),
                Request::FindRecord(r) => Some((r.topic.as_str(), r.partition)),
                Request::Group(r) => Some((r.topic.as_str(), r.partition)),
                Request::DescribePartition(r) => Some((r.topic.as_str(), r.partition)),
                Request::ReplicaFetch(r) => Some((r.topic.as_str(), r.partition)),
                Request::ReplicaProgress(r) => Some((r.topic.as_str(), r.partition)),
                _ => None,
            };
            let found = route
                .expect("a decodable request routes")
                .map(|r| (r.topic, r.partition));
            assert_eq!(found, expected);
        }
        if let Ok(response) = Response::decode(&frame) {
            assert_eq!(&response.to_frame(frame.head.correlation_id), frame.bytes());
        }
    }
});
