//! Fuzz target: any bytes after a Kafka request's size prefix decode to a request, an
//! ApiVersions fallback answer or an error, never a panic or an unbounded allocation (the
//! array-count abort of an unpatched kafka-protocol; its reproducers are among the seeds).
//! What decodes is answered: encoding the ApiVersions answer for it must work too. A group
//! request becomes the node's `Group` request: one that passes `check` must encode (the
//! gateway encodes only such). ElectLeaders and AlterPartitionReassignments become the node's
//! `MovePartitions` requests, which must encode. An OffsetForLeaderEpoch partition becomes the
//! node's ListOffsets of an epoch's end, which must decode back to itself.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spate_kafka::frame::{decode_request, encode_response, request_size, Decoded};
use spate_kafka::{groups, moves, translate};
use spate_kafka::versions::api_versions_body;
use spate_proto::{
    Frame, FrameDecoder, GroupRequest, MovePartitionsRequest, PartitionId, Request as NodeRequest,
};

use kafka_protocol::messages::RequestKind;

/// The node requests a Kafka group request becomes.
fn node_requests(version: i16, body: &RequestKind) -> Vec<GroupRequest> {
    match body {
        RequestKind::JoinGroup(r) => vec![groups::join_request(version, r, "client")],
        RequestKind::SyncGroup(r) => vec![groups::sync_request(r)],
        RequestKind::Heartbeat(r) => vec![groups::heartbeat_request(r)],
        RequestKind::LeaveGroup(r) => vec![groups::leave_request(version, r)],
        RequestKind::OffsetCommit(r) => vec![groups::commit_request(version, r).0],
        RequestKind::OffsetDelete(r) => vec![groups::offset_delete_request(r)],
        RequestKind::DescribeGroups(r) => r.groups.iter().map(groups::describe_request).collect(),
        RequestKind::DeleteGroups(r) => r.groups_names.iter().map(groups::delete_request).collect(),
        RequestKind::OffsetFetch(r) => vec![groups::fetch_request(
            r.group_id.as_str(),
            r.topics.as_ref().map(|topics| {
                groups::fetch_partitions(
                    topics
                        .iter()
                        .map(|topic| (&topic.name, topic.partition_indexes.as_slice())),
                )
            }),
        )],
        _ => Vec::new(),
    }
}

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
            for node in node_requests(request.version, &request.body) {
                if node.check().is_ok() {
                    assert!(!NodeRequest::Group(node).to_frame(0).is_empty());
                }
            }
            let plan = match &request.body {
                RequestKind::ElectLeaders(r) => moves::elect_plan(r).ok(),
                RequestKind::AlterPartitionReassignments(r) => Some(moves::alter_plan(r)),
                _ => None,
            };
            for (change, _) in plan.map(|plan| plan.moves).unwrap_or_default() {
                let node = NodeRequest::MovePartitions(MovePartitionsRequest { change });
                assert!(!node.to_frame(0).is_empty());
            }
            if let RequestKind::OffsetForLeaderEpoch(r) = &request.body {
                for topic in &r.topics {
                    for partition in &topic.partitions {
                        let Ok(index) = u32::try_from(partition.partition) else {
                            continue;
                        };
                        let lookup = translate::epoch_lookup(
                            partition.leader_epoch,
                            partition.current_leader_epoch,
                        );
                        let node = NodeRequest::ListOffsets(translate::epoch_end_request(
                            &topic.topic,
                            PartitionId(index),
                            &lookup,
                        ));
                        if spate_format::validate_topic_name(topic.topic.as_str()).is_err() {
                            continue;
                        }
                        let mut bytes = bytes::BytesMut::from(&node.to_frame(0)[..]);
                        let frame: Frame = FrameDecoder::new(1 << 20)
                            .decode(&mut bytes)
                            .expect("a whole frame")
                            .expect("complete");
                        assert_eq!(NodeRequest::decode(&frame).expect("decodes"), node);
                    }
                }
            }
        }
        Ok(Decoded::Answer(answer)) => assert!(answer.len() >= 8),
        Err(_) => {}
    }
});
