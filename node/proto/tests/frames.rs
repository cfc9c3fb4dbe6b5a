//! Frame tests: golden bytes of `docs/protocol.md`, round trips of every request and response,
//! incremental decoding byte by byte, routing without decoding, and limits enforced before
//! anything is buffered.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use spate_proto::limits::{FRAME_HEADER_SIZE, REQUEST_SIZE_MAX, RESPONSE_SIZE_MAX};
use spate_proto::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_one(bytes: &Bytes, size_max: u32) -> Frame {
    let mut buffer = BytesMut::from(&bytes[..]);
    let frame = FrameDecoder::new(size_max)
        .decode(&mut buffer)
        .unwrap()
        .unwrap();
    assert!(buffer.is_empty());
    frame
}

/// A node builds its `DescribeCluster` answer from etcd's records, which nothing bounds: an
/// answer past every limit (ids of 70,000 bytes, addresses of 300, 1,100 members, a member
/// with 2,000 shards) encodes without a panic to what a decoder takes, cut to the limits.
#[test]
fn a_describe_cluster_answer_beyond_the_limits_is_cut_to_them() {
    use spate_proto::limits::{
        CLUSTER_ID_SIZE_MAX, CLUSTER_MEMBERS_MAX, CLUSTER_NAME_SIZE_MAX, CLUSTER_SHARDS_MAX,
        ENDPOINT_SIZE_MAX, RACK_SIZE_MAX, SHARDS_MAX,
    };
    let member = |node: u32, shards: usize| ClusterMember {
        node,
        session: "s".repeat(70_000),
        storage: "é".repeat(100),
        since_ms: 1,
        shards: vec!["a".repeat(300); shards],
        rack: "r".repeat(100),
    };
    let mut members = vec![member(0, 2_000)];
    members.extend((1..1_100).map(|node| member(node, 40)));
    let listed = (0..200)
        .map(|partition| PartitionStatus {
            topic: "t".repeat(249),
            partition,
            leader: Some(1),
            replicas: vec![7; 100],
            isr: vec![7; 100],
        })
        .collect();
    let moving = (0..200)
        .map(|partition| MovingPartition {
            topic: "t".repeat(249),
            partition,
            replicas: vec![7; 100],
            target: vec![8; 100],
            original: vec![9; 100],
            throttle: Some(1),
        })
        .collect();
    let response = Response::DescribeCluster(DescribeClusterResponse {
        racks: true,
        moves: Some(MovesStatus {
            decommissioned: (0..2_000).collect(),
            moving: 5_000,
            listed: moving,
        }),
        cluster: "c".repeat(1_000),
        node: Some(1),
        controller: None,
        members,
        partitions: Some(PartitionHealth {
            total: 1_000_000,
            under_replicated: 200,
            offline: 0,
            listed,
        }),
    });
    let bytes = response.to_frame(7);
    assert!(bytes.len() <= RESPONSE_SIZE_MAX as usize);
    let Response::DescribeCluster(cut) =
        Response::decode(&decode_one(&bytes, RESPONSE_SIZE_MAX)).unwrap()
    else {
        panic!("not a DescribeCluster answer")
    };
    assert_eq!(cut.cluster.len(), CLUSTER_NAME_SIZE_MAX as usize);
    assert_eq!(cut.members.len(), CLUSTER_MEMBERS_MAX as usize);
    assert_eq!(cut.members[0].shards.len(), SHARDS_MAX as usize);
    assert_eq!(cut.members[0].session.len(), CLUSTER_ID_SIZE_MAX as usize);
    // Cut on a character boundary: 32 two-byte characters.
    assert_eq!(cut.members[0].storage, "é".repeat(32));
    assert_eq!(cut.members[0].shards[0].len(), ENDPOINT_SIZE_MAX as usize);
    assert_eq!(cut.members[0].rack.len(), RACK_SIZE_MAX as usize);
    let shards: usize = cut.members.iter().map(|member| member.shards.len()).sum();
    assert_eq!(shards, CLUSTER_SHARDS_MAX as usize);
    let health = cut.partitions.unwrap();
    assert_eq!(
        health.under_replicated, 200,
        "the counts cover every partition"
    );
    assert_eq!(
        health.listed.len(),
        limits::CLUSTER_PARTITIONS_LISTED_MAX as usize
    );
    assert_eq!(
        health.listed[0].isr.len(),
        limits::CLUSTER_PARTITION_REPLICAS_MAX as usize
    );
    let moves = cut.moves.unwrap();
    assert_eq!(moves.moving, 5_000, "the count covers every move");
    assert_eq!(moves.decommissioned.len(), CLUSTER_MEMBERS_MAX as usize);
    assert_eq!(
        moves.listed.len(),
        limits::CLUSTER_PARTITIONS_LISTED_MAX as usize
    );
    assert_eq!(
        moves.listed[0].target,
        vec![8; limits::CLUSTER_PARTITION_REPLICAS_MAX as usize]
    );
}

/// A `MovePartitions` answer over many partitions lists the first outcomes, each message
/// cut on a character boundary; the counts cover them all.
#[test]
fn a_move_answer_beyond_the_limits_is_cut_to_them() {
    let results = (0..500)
        .map(|partition| MoveResult {
            topic: "t".into(),
            partition,
            error: Some(ErrorCode::PreferredLeaderNotAvailable),
            message: "é".repeat(5_000),
        })
        .collect();
    let response = Response::MovePartitions(MovePartitionsResponse {
        changed: 7,
        unchanged: 500,
        results,
    });
    let bytes = response.to_frame(3);
    let Response::MovePartitions(cut) =
        Response::decode(&decode_one(&bytes, RESPONSE_SIZE_MAX)).unwrap()
    else {
        panic!("not a MovePartitions answer")
    };
    assert_eq!((cut.changed, cut.unchanged), (7, 500));
    assert_eq!(
        cut.results.len(),
        limits::CLUSTER_PARTITIONS_LISTED_MAX as usize
    );
    assert_eq!(
        cut.results[0].message,
        "é".repeat(limits::MOVE_MESSAGE_SIZE_MAX as usize / 2)
    );
    assert_eq!(
        cut.results[0].error,
        Some(ErrorCode::PreferredLeaderNotAvailable)
    );
}

#[test]
fn golden_fetch_request_matches_the_doc() {
    let request = Request::Fetch(FetchRequest {
        topic: "clicks".into(),
        partition: PartitionId(3),
        offset: 1000,
        max_bytes: 1 << 20,
        max_wait_ms: 500,
        min_bytes: 1,
        epochs: ReadEpochs::default(),
    });
    let bytes = request.to_frame(7);
    let expected = concat!(
        "2c000000",         // length: 44 bytes follow
        "0500",             // api key 5 (Fetch)
        "01",               // version 1
        "00",               // flags: request
        "0700000000000000", // correlation id 7
        "0600",             // topic length 6
        "636c69636b73",     // "clicks"
        "03000000",         // partition 3
        "e803000000000000", // offset 1000
        "00001000",         // max_bytes 1 MiB
        "f4010000",         // max_wait_ms 500
        "01000000",         // min_bytes 1
    );
    assert_eq!(
        hex(&bytes),
        expected,
        "update docs/protocol.md if the format changed"
    );
    let frame = decode_one(&bytes, REQUEST_SIZE_MAX);
    assert_eq!(
        frame.route().unwrap(),
        Some(Route {
            topic: "clicks",
            partition: PartitionId(3)
        })
    );
    assert_eq!(Request::decode(&frame).unwrap(), request);
}

#[test]
fn golden_error_response_matches_the_doc() {
    let response = Response::Error {
        api_key: ApiKey::Produce.to_u16(),
        error: ErrorResponse::new(ErrorCode::NotOwner, "shard 1 owns it").with_detail(
            ErrorDetail::NotOwner {
                shard: ShardId(1),
                endpoint: "127.0.0.1:9093".into(),
            },
        ),
    };
    let bytes = response.to_frame(7);
    let expected = concat!(
        "32000000",                     // length: 50 bytes follow
        "0400",                         // api key 4 (Produce)
        "01",                           // version 1
        "03",                           // flags: response | error
        "0700000000000000",             // correlation id 7
        "1400",                         // code 20 (NotOwner)
        "0f00",                         // message length 15
        "7368617264203120",             // "shard 1 "
        "6f776e73206974",               // "owns it"
        "01",                           // detail 1: NotOwner
        "0100",                         // shard 1
        "0e00",                         // endpoint length 14
        "3132372e302e302e313a39303933", // "127.0.0.1:9093"
    );
    assert_eq!(
        hex(&bytes),
        expected,
        "update docs/protocol.md if the format changed"
    );
    assert_eq!(
        Response::decode(&decode_one(&bytes, RESPONSE_SIZE_MAX)).unwrap(),
        response
    );
}

#[test]
fn partial_frames_need_more_at_every_split() {
    let request = Request::Produce(ProduceRequest {
        topic: "t".into(),
        partition: PartitionId(0),
        durability: Durability::Fsync,
        batch: Bytes::from_static(b"not validated here"),
    });
    let mut stream = BytesMut::new();
    request.encode(1, &mut stream);
    request.encode(2, &mut stream);
    let whole = stream.freeze();
    let decoder = FrameDecoder::new(REQUEST_SIZE_MAX);
    let mut buffer = BytesMut::new();
    let mut ids = Vec::new();
    for &byte in whole.iter() {
        buffer.extend_from_slice(&[byte]);
        while let Some(frame) = decoder.decode(&mut buffer).unwrap() {
            assert_eq!(Request::decode(&frame).unwrap(), request);
            ids.push(frame.head.correlation_id);
        }
        if !buffer.is_empty() {
            assert!(decoder.needed(&buffer) > 0);
        }
    }
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(
        peek_frame(&[], REQUEST_SIZE_MAX),
        Ok(Peek::NeedMore { needed: 16 })
    );
}

#[test]
fn oversized_frames_are_refused_from_the_header_alone() {
    let head = FrameHead {
        api_key: ApiKey::Produce.to_u16(),
        version: VERSION,
        flags: 0,
        correlation_id: 9,
        body_length: REQUEST_SIZE_MAX,
    };
    let mut buffer = BytesMut::from(&head.encode()[..]);
    assert!(matches!(
        FrameDecoder::new(REQUEST_SIZE_MAX).decode(&mut buffer),
        Err(FrameError::TooLarge { .. })
    ));
    let short = [4u8, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        peek_frame(&short, REQUEST_SIZE_MAX),
        Err(FrameError::TooShort { length: 4 })
    );
}

#[test]
fn bad_headers_and_bodies_are_typed_errors() {
    let request = Request::DeleteTopic(DeleteTopicRequest { topic: "t".into() });
    let bytes = request.to_frame(1);
    let with = |index: usize, value: u8| {
        let mut copy = bytes.to_vec();
        copy[index] = value;
        Request::decode(&decode_one(&Bytes::from(copy), REQUEST_SIZE_MAX))
    };
    assert_eq!(with(4, 99), Err(ProtoError::UnknownApi(99)));
    assert!(matches!(
        with(6, 2),
        Err(ProtoError::UnsupportedVersion { found: 2, .. })
    ));
    assert_eq!(with(7, 0x80), Err(ProtoError::Flags(0x80)));
    assert!(matches!(with(7, 1), Err(ProtoError::Direction { .. })));
    assert!(matches!(with(18, b'/'), Err(ProtoError::TopicName(_))));

    let fetch = |max_bytes, max_wait_ms, min_bytes| {
        let request = Request::Fetch(FetchRequest {
            topic: "t".into(),
            partition: PartitionId(0),
            offset: 0,
            max_bytes,
            max_wait_ms,
            min_bytes,
            epochs: ReadEpochs::default(),
        });
        Request::decode(&decode_one(&request.to_frame(1), REQUEST_SIZE_MAX))
    };
    assert!(fetch(1024, 100, 1).is_ok());
    assert!(matches!(
        fetch(0, 100, 0),
        Err(ProtoError::Value {
            field: "max_bytes",
            ..
        })
    ));
    assert!(matches!(
        fetch(1 << 30, 100, 1),
        Err(ProtoError::Value {
            field: "max_bytes",
            ..
        })
    ));
    assert!(matches!(
        fetch(1024, 3_600_000, 1),
        Err(ProtoError::Value { .. })
    ));
    assert!(matches!(
        fetch(1024, 100, 2048),
        Err(ProtoError::Value {
            field: "min_bytes",
            ..
        })
    ));

    // A count that the body cannot hold is refused before allocating.
    let mut body = BytesMut::new();
    let head = FrameHead {
        api_key: ApiKey::Metadata.to_u16(),
        version: VERSION,
        flags: 0,
        correlation_id: 3,
        body_length: 4,
    };
    body.extend_from_slice(&head.encode());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    let frame = decode_one(&body.freeze(), REQUEST_SIZE_MAX);
    assert!(matches!(
        Request::decode(&frame),
        Err(ProtoError::Length {
            field: "topics",
            ..
        })
    ));
}

#[test]
fn routing_reads_only_the_routing_fields() {
    let request = Request::Produce(ProduceRequest {
        topic: "orders".into(),
        partition: PartitionId(42),
        durability: Durability::Write,
        batch: Bytes::from_static(&[0xff; 100]),
    });
    let bytes = request.to_frame(5);
    // Cut the frame right after the routing fields: routing still works on the prefix.
    let routing_end = FRAME_HEADER_SIZE as usize + 2 + 6 + 4;
    let frame = decode_one(&bytes, REQUEST_SIZE_MAX);
    let prefix_head = frame.head;
    assert_eq!(
        route(
            &prefix_head,
            &bytes[FRAME_HEADER_SIZE as usize..routing_end]
        )
        .unwrap(),
        Some(Route {
            topic: "orders",
            partition: PartitionId(42)
        })
    );
    let metadata = Request::Metadata(MetadataRequest {
        placement: false,
        topics: vec![],
        settings: false,
        racks: false,
    })
    .to_frame(6);
    assert_eq!(
        decode_one(&metadata, REQUEST_SIZE_MAX).route().unwrap(),
        None
    );
}

/// What a replica frame may not say: more synced than written, a bad presence tag, a chain
/// that does not go up, records beside a divergence, more boundaries than the limit.
#[test]
fn replica_frames_refuse_what_no_replica_sends() {
    let fetch = ReplicaFetchRequest {
        topic: "t".into(),
        partition: PartitionId(1),
        topic_id: u128::MAX - 5,
        replica: 2,
        storage_id: 3,
        leader_epoch: 4,
        session: 8,
        incarnation: 9,
        fetch_offset: 100,
        last_fetched_epoch: Some(4),
        durable_end: 100,
        max_bytes: 1 << 20,
        max_wait_ms: 500,
    };
    let decode_request =
        |request: &Request| Request::decode(&decode_one(&request.to_frame(9), REQUEST_SIZE_MAX));
    let fine = Request::ReplicaFetch(fetch.clone());
    assert_eq!(decode_request(&fine).unwrap(), fine);
    let field_of = |result: Result<Request, ProtoError>| match result {
        Err(ProtoError::Value { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let mut ahead = fetch.clone();
    ahead.durable_end = 101;
    assert_eq!(
        field_of(decode_request(&Request::ReplicaFetch(ahead))),
        "durable_end"
    );
    let mut empty = fetch.clone();
    empty.max_bytes = 0;
    assert_eq!(
        field_of(decode_request(&Request::ReplicaFetch(empty))),
        "max_bytes"
    );
    let mut long = fetch;
    long.max_wait_ms = 60_001;
    assert_eq!(
        field_of(decode_request(&Request::ReplicaFetch(long))),
        "max_wait_ms"
    );
    // The presence byte of `last_fetched_epoch` (after topic, partition, topic id, replica,
    // storage id, leader epoch, session, incarnation, fetch offset) is 0 or 1.
    let mut bytes = BytesMut::from(&fine.to_frame(9)[..]);
    let tag = FRAME_HEADER_SIZE as usize + 2 + 1 + 4 + 16 + 4 + 8 + 4 + 8 + 8 + 8;
    assert_eq!(bytes[tag], 1);
    bytes[tag] = 2;
    let frame = decode_one(&bytes.freeze(), REQUEST_SIZE_MAX);
    assert_eq!(field_of(Request::decode(&frame)), "last_fetched_epoch");
    let progress = ReplicaProgressRequest {
        topic: "t".into(),
        partition: PartitionId(1),
        topic_id: 7,
        replica: 2,
        storage_id: 3,
        leader_epoch: 4,
        session: 8,
        incarnation: 9,
        log_end: 10,
        durable_end: 11,
    };
    assert_eq!(
        field_of(decode_request(&Request::ReplicaProgress(progress))),
        "durable_end"
    );

    let answer = ReplicaFetchResponse {
        high_watermark: 10,
        log_start_offset: 0,
        diverging: None,
        epochs: vec![
            EpochBoundary {
                epoch: 3,
                start_offset: 0,
            },
            EpochBoundary {
                epoch: 5,
                start_offset: 7,
            },
        ],
        records: Bytes::from_static(b"batches"),
    };
    let decode_response = |response: ReplicaFetchResponse| {
        Response::decode(&decode_one(
            &Response::ReplicaFetch(response).to_frame(9),
            RESPONSE_SIZE_MAX,
        ))
    };
    assert!(decode_response(answer.clone()).is_ok());
    for (epoch, start_offset) in [(5, 8), (6, 7), (4, 9)] {
        let mut backwards = answer.clone();
        backwards.epochs.push(EpochBoundary {
            epoch,
            start_offset,
        });
        assert!(
            matches!(
                decode_response(backwards),
                Err(ProtoError::Value {
                    field: "epochs",
                    ..
                })
            ),
            "({epoch}, {start_offset})"
        );
    }
    let mut both = answer.clone();
    both.diverging = Some(DivergingEpoch {
        epoch: 3,
        end_offset: 5,
    });
    assert!(matches!(
        decode_response(both),
        Err(ProtoError::Value {
            field: "diverging",
            ..
        })
    ));
    let mut many = answer;
    many.records = Bytes::new();
    many.epochs = (0..=limits::REPLICA_FETCH_EPOCHS_MAX)
        .map(|i| EpochBoundary {
            epoch: i,
            start_offset: u64::from(i),
        })
        .collect();
    assert!(matches!(
        decode_response(many),
        Err(ProtoError::Length {
            field: "epochs",
            ..
        })
    ));
    // Only these two are the node link's own.
    let link_only: Vec<ApiKey> = ApiKey::ALL
        .into_iter()
        .filter(|api| api.is_node_link_only())
        .collect();
    assert_eq!(link_only, [ApiKey::ReplicaFetch, ApiKey::ReplicaProgress]);
}

fn topic() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,40}".prop_filter("reserved names", |name| name != "." && name != "..")
}

fn setting() -> impl Strategy<Value = Setting> {
    prop_oneof![
        Just(Setting::Default),
        Just(Setting::Unlimited),
        any::<u64>().prop_map(Setting::Value),
    ]
}

fn some_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn read_epochs() -> impl Strategy<Value = ReadEpochs> {
    (any::<bool>(), proptest::option::of(any::<u32>()))
        .prop_map(|(answer, current)| ReadEpochs { answer, current })
}

/// Epoch boundaries as a leader's chain has them: going up in epoch and start offset.
fn boundaries() -> impl Strategy<Value = Vec<EpochBoundary>> {
    proptest::collection::vec((1u32..1000, 1u64..1_000_000), 0..5).prop_map(|steps| {
        let (mut epoch, mut start) = (0u32, 0u64);
        steps
            .into_iter()
            .map(|(more_epochs, more_offsets)| {
                epoch += more_epochs;
                start += more_offsets;
                EpochBoundary {
                    epoch,
                    start_offset: start,
                }
            })
            .collect()
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            topic(),
            any::<u32>(),
            setting(),
            setting(),
            setting(),
            any::<u16>(),
            setting()
        )
            .prop_map(
                |(topic, partitions, retention_ms, retention_bytes, segment_bytes, factor, min)| {
                    Request::CreateTopic(CreateTopicRequest {
                        legacy_layout: false,
                        topic,
                        partitions,
                        retention_ms,
                        retention_bytes,
                        segment_bytes,
                        replication_factor: factor,
                        min_insync_replicas: min,
                    })
                }
            ),
        topic().prop_map(|topic| Request::DeleteTopic(DeleteTopicRequest { topic })),
        (
            proptest::collection::vec(topic(), 0..10),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(topics, settings, placement)| Request::Metadata(MetadataRequest {
                    topics,
                    // Asking for placement asks for the settings too.
                    settings: settings || placement,
                    placement,
                    racks: false,
                })
            ),
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(partitions, moves, racks)| {
            // Moves are asked only with the partitions, racks only with the moves (each
            // implies the ones before).
            Request::DescribeCluster(DescribeClusterRequest {
                partitions: partitions || moves || racks,
                moves: moves || racks,
                racks,
            })
        }),
        (topic(), any::<u32>(), 0u8..3, some_bytes(300)).prop_map(
            |(topic, partition, durability, batch)| Request::Produce(ProduceRequest {
                topic,
                partition: PartitionId(partition),
                durability: Durability::from_u8(durability).unwrap(),
                batch,
            })
        ),
        (
            topic(),
            any::<u32>(),
            any::<u64>(),
            1u32..=(8 << 20),
            0u32..=60_000,
            any::<u32>(),
            read_epochs(),
        )
            .prop_map(
                |(topic, partition, offset, max_bytes, max_wait_ms, min_bytes, epochs)| {
                    Request::Fetch(FetchRequest {
                        topic,
                        partition: PartitionId(partition),
                        offset,
                        max_bytes,
                        max_wait_ms,
                        min_bytes: min_bytes % (max_bytes + 1),
                        epochs,
                    })
                }
            ),
        (
            topic(),
            any::<u32>(),
            prop_oneof![
                Just(OffsetSpec::Earliest),
                Just(OffsetSpec::Latest),
                any::<i64>().prop_map(OffsetSpec::Timestamp),
                any::<u32>().prop_map(OffsetSpec::EpochEnd),
            ],
            read_epochs(),
        )
            .prop_map(|(topic, partition, spec, mut epochs)| {
                // An epoch's end is asked only with epochs (the decoder refuses it without).
                epochs.answer |= matches!(spec, OffsetSpec::EpochEnd(_));
                Request::ListOffsets(ListOffsetsRequest {
                    topic,
                    partition: PartitionId(partition),
                    spec,
                    epochs,
                })
            }),
        (
            topic(),
            any::<u32>(),
            prop_oneof![
                Just(RecordTarget::Newest),
                any::<i64>().prop_map(RecordTarget::AtOrAfter),
            ],
            read_epochs(),
        )
            .prop_map(|(topic, partition, target, epochs)| {
                Request::FindRecord(FindRecordRequest {
                    topic,
                    partition: PartitionId(partition),
                    target,
                    epochs,
                })
            }),
        (topic(), any::<u32>(), any::<u64>()).prop_map(|(topic, partition, offset)| {
            Request::DeleteRecords(DeleteRecordsRequest {
                topic,
                partition: PartitionId(partition),
                offset,
            })
        }),
        (1u32..=1_000_000)
            .prop_map(|count| Request::AllocateProducerIds(AllocateProducerIdsRequest { count })),
        topic().prop_map(|topic| Request::AutoCreateTopic(AutoCreateTopicRequest { topic })),
        (
            topic(),
            proptest::option::of(setting()),
            proptest::option::of(setting()),
            proptest::option::of(setting()),
            proptest::option::of(setting()),
            any::<bool>()
        )
            .prop_map(
                |(topic, retention_ms, retention_bytes, segment_bytes, min, validate_only)| {
                    Request::AlterTopic(AlterTopicRequest {
                        topic,
                        retention_ms,
                        retention_bytes,
                        segment_bytes,
                        min_insync_replicas: min,
                        validate_only,
                    })
                }
            ),
        replica_fetch_request().prop_map(Request::ReplicaFetch),
        replica_progress_request().prop_map(Request::ReplicaProgress),
        partition_move()
            .prop_map(|change| Request::MovePartitions(MovePartitionsRequest { change })),
    ]
}

fn partitions() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(any::<u32>(), 0..5)
}

fn partition_move() -> impl Strategy<Value = PartitionMove> {
    prop_oneof![
        (
            topic(),
            partitions(),
            proptest::collection::vec(any::<u32>(), 0..5),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(topic, partitions, replicas, throttle)| {
                PartitionMove::Reassign {
                    topic,
                    partitions,
                    replicas,
                    throttle,
                }
            }),
        (topic(), partitions())
            .prop_map(|(topic, partitions)| PartitionMove::Cancel { topic, partitions }),
        (proptest::option::of(topic()), partitions())
            .prop_map(|(topic, partitions)| PartitionMove::ElectPreferred { topic, partitions }),
        (any::<u32>(), proptest::option::of(any::<u64>()))
            .prop_map(|(node, throttle)| PartitionMove::Decommission { node, throttle }),
        any::<u32>().prop_map(|node| PartitionMove::Recommission { node }),
    ]
}

fn moves_status() -> impl Strategy<Value = MovesStatus> {
    (
        proptest::collection::vec(any::<u32>(), 0..4),
        any::<u32>(),
        proptest::collection::vec(
            (
                topic(),
                any::<u32>(),
                proptest::collection::vec(any::<u32>(), 0..4),
                proptest::collection::vec(any::<u32>(), 0..4),
                proptest::collection::vec(any::<u32>(), 0..4),
                proptest::option::of(any::<u64>()),
            ),
            0..4,
        ),
    )
        .prop_map(|(decommissioned, moving, listed)| MovesStatus {
            decommissioned,
            moving,
            listed: listed
                .into_iter()
                .map(
                    |(topic, partition, replicas, target, original, throttle)| MovingPartition {
                        topic,
                        partition,
                        replicas,
                        target,
                        original,
                        throttle,
                    },
                )
                .collect(),
        })
}

fn move_response() -> impl Strategy<Value = MovePartitionsResponse> {
    (
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(
            (
                topic(),
                any::<u32>(),
                proptest::option::of((1u16..).prop_map(ErrorCode::from_u16)),
                "\\PC{0,40}",
            ),
            0..4,
        ),
    )
        .prop_map(|(changed, unchanged, results)| MovePartitionsResponse {
            changed,
            unchanged,
            results: results
                .into_iter()
                .map(|(topic, partition, error, message)| MoveResult {
                    topic,
                    partition,
                    error,
                    message,
                })
                .collect(),
        })
}

fn replica_fetch_request() -> impl Strategy<Value = ReplicaFetchRequest> {
    (
        (
            topic(),
            any::<u32>(),
            any::<u128>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (
            any::<u32>(),
            any::<u64>(),
            proptest::option::of(any::<u32>()),
            any::<u64>(),
            1u32..=(8 << 20),
            0u32..=60_000,
        ),
    )
        .prop_map(
            |(
                (topic, partition, topic_id, replica, storage_id, session),
                (leader_epoch, fetch_offset, last_fetched_epoch, durable, max_bytes, max_wait_ms),
            )| ReplicaFetchRequest {
                topic,
                partition: PartitionId(partition),
                topic_id,
                replica,
                storage_id,
                leader_epoch,
                session,
                incarnation: session.rotate_left(17),
                fetch_offset,
                last_fetched_epoch,
                durable_end: durable % (fetch_offset.saturating_add(1)).max(1),
                max_bytes,
                max_wait_ms,
            },
        )
}

fn replica_progress_request() -> impl Strategy<Value = ReplicaProgressRequest> {
    (
        topic(),
        any::<u32>(),
        any::<u128>(),
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(
                topic,
                partition,
                topic_id,
                replica,
                storage_id,
                leader_epoch,
                session,
                log_end,
                durable,
            )| {
                ReplicaProgressRequest {
                    topic,
                    partition: PartitionId(partition),
                    topic_id,
                    replica,
                    storage_id,
                    leader_epoch,
                    session,
                    incarnation: session.rotate_left(17),
                    log_end,
                    durable_end: durable.min(log_end),
                }
            },
        )
}

/// A leader's answer: where the follower diverges, or batches with the epoch boundaries
/// inside them (increasing in epoch and start).
fn replica_fetch_response() -> impl Strategy<Value = ReplicaFetchResponse> {
    let boundaries =
        proptest::collection::vec((1u32..1000, 1u64..1_000_000), 0..6).prop_map(|steps| {
            let (mut epoch, mut start) = (0u32, 0u64);
            steps
                .into_iter()
                .map(|(de, ds)| {
                    epoch += de;
                    start += ds;
                    EpochBoundary {
                        epoch,
                        start_offset: start,
                    }
                })
                .collect::<Vec<_>>()
        });
    (
        any::<u64>(),
        any::<u64>(),
        proptest::option::of((any::<u32>(), any::<u64>())),
        boundaries,
        some_bytes(300),
    )
        .prop_map(
            |(high_watermark, log_start_offset, diverging, epochs, records)| match diverging {
                Some((epoch, end_offset)) => ReplicaFetchResponse {
                    high_watermark,
                    log_start_offset,
                    diverging: Some(DivergingEpoch { epoch, end_offset }),
                    epochs: Vec::new(),
                    records: Bytes::new(),
                },
                None => ReplicaFetchResponse {
                    high_watermark,
                    log_start_offset,
                    diverging: None,
                    epochs,
                    records,
                },
            },
        )
}

fn response() -> impl Strategy<Value = Response> {
    let topic_metadata = (
        topic(),
        setting(),
        setting(),
        setting(),
        setting(),
        proptest::collection::vec(
            (
                any::<u32>(),
                any::<u16>(),
                proptest::option::of(any::<u32>()),
                any::<u32>(),
                proptest::collection::vec(any::<u32>(), 0..4),
                proptest::collection::vec(any::<u32>(), 0..4),
            ),
            0..10,
        ),
    )
        .prop_map(
            |(name, retention_ms, retention_bytes, segment_bytes, min, partitions)| TopicMetadata {
                replicas: partitions
                    .iter()
                    .map(|(_, _, leader, epoch, replicas, isr)| PartitionPlacement {
                        leader: *leader,
                        epoch: *epoch,
                        replicas: replicas.clone(),
                        isr: isr.clone(),
                    })
                    .collect(),
                name,
                retention_ms,
                retention_bytes,
                segment_bytes,
                min_insync_replicas: min,
                partitions: partitions
                    .into_iter()
                    .map(|(partition, shard, ..)| PartitionMetadata {
                        partition: PartitionId(partition),
                        shard: ShardId(shard),
                    })
                    .collect(),
            },
        );
    let detail = prop_oneof![
        Just(ErrorDetail::None),
        (any::<u16>(), "[0-9a-z.:]{0,30}").prop_map(|(shard, endpoint)| ErrorDetail::NotOwner {
            shard: ShardId(shard),
            endpoint
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(log_start_offset, high_watermark)| {
            ErrorDetail::OffsetRange {
                log_start_offset,
                high_watermark,
            }
        }),
    ];
    prop_oneof![
        (topic(), any::<u32>()).prop_map(|(topic, partitions)| Response::CreateTopic(
            CreateTopicResponse { topic, partitions }
        )),
        topic().prop_map(|topic| Response::DeleteTopic(DeleteTopicResponse { topic })),
        (
            proptest::collection::vec((any::<u16>(), "[0-9a-z.:]{0,30}"), 0..5),
            proptest::collection::vec(topic_metadata, 0..5),
            any::<bool>(),
            proptest::option::of(proptest::collection::vec(
                (any::<u32>(), "[0-9a-z.:]{0,30}", "[a-z0-9-]{0,12}"),
                0..4
            )),
            any::<bool>(),
        )
            .prop_map(|(shards, mut topics, settings, members, racks)| {
                if !settings {
                    // Not carried: read back as the default.
                    for topic in &mut topics {
                        topic.min_insync_replicas = Setting::Default;
                    }
                }
                // Placement is carried only with the settings.
                // Racks are carried only with placement; without them, read back empty.
                let racks = racks && members.is_some();
                let members = members.filter(|_| settings).map(|members| {
                    members
                        .into_iter()
                        .map(|(node, kafka, rack)| MemberAddress {
                            node,
                            kafka,
                            rack: if racks { rack } else { String::new() },
                        })
                        .collect::<Vec<_>>()
                });
                let racks = racks && members.is_some();
                if members.is_none() {
                    for topic in &mut topics {
                        topic.replicas.clear();
                    }
                }
                Response::Metadata(MetadataResponse {
                    members,
                    shards: shards
                        .into_iter()
                        .map(|(shard, endpoint)| ShardInfo {
                            shard: ShardId(shard),
                            endpoint,
                        })
                        .collect(),
                    topics,
                    settings,
                    racks,
                })
            }),
        (any::<u64>(), any::<i64>(), any::<u64>()).prop_map(
            |(base_offset, append_time, log_start_offset)| Response::Produce(ProduceResponse {
                base_offset,
                append_time,
                log_start_offset,
            })
        ),
        (any::<u64>(), any::<u64>(), some_bytes(300), boundaries()).prop_map(
            |(high_watermark, log_start_offset, records, epochs)| Response::Fetch(FetchResponse {
                high_watermark,
                log_start_offset,
                records,
                epochs,
            })
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(offset, log_start_offset, high_watermark, leader_epoch)| {
                Response::ListOffsets(ListOffsetsResponse {
                    offset,
                    log_start_offset,
                    high_watermark,
                    leader_epoch,
                })
            }),
        (
            any::<u64>(),
            any::<i64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(any::<u32>())
        )
            .prop_map(
                |(offset, timestamp, log_start_offset, high_watermark, leader_epoch)| {
                    Response::FindRecord(FindRecordResponse {
                        offset,
                        timestamp,
                        log_start_offset,
                        high_watermark,
                        leader_epoch,
                    })
                }
            ),
        any::<u64>().prop_map(
            |log_start_offset| Response::DeleteRecords(DeleteRecordsResponse { log_start_offset })
        ),
        (any::<u64>(), any::<u32>()).prop_map(|(first, count)| Response::AllocateProducerIds(
            AllocateProducerIdsResponse { first, count }
        )),
        (topic(), any::<u32>()).prop_map(|(topic, partitions)| Response::AutoCreateTopic(
            CreateTopicResponse { topic, partitions }
        )),
        (topic(), setting(), setting(), setting()).prop_map(
            |(topic, retention_ms, retention_bytes, segment_bytes)| {
                Response::AlterTopic(AlterTopicResponse {
                    topic,
                    retention_ms,
                    retention_bytes,
                    segment_bytes,
                })
            }
        ),
        replica_fetch_response().prop_map(Response::ReplicaFetch),
        Just(Response::ReplicaProgress),
        (
            "[a-z0-9-]{0,20}",
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(
                (
                    any::<u32>(),
                    "[0-9a-f]{0,16}",
                    "[0-9a-f]{16}",
                    any::<u64>(),
                    proptest::collection::vec("[0-9a-z.:]{0,30}", 0..4)
                ),
                0..4
            ),
            proptest::option::of((
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(
                    (
                        topic(),
                        any::<u32>(),
                        proptest::option::of(any::<u32>()),
                        proptest::collection::vec(any::<u32>(), 0..4),
                        proptest::collection::vec(any::<u32>(), 0..4),
                    ),
                    0..4
                )
            ))
        )
            .prop_flat_map(|described| (
                Just(described),
                proptest::option::of(moves_status()),
                any::<bool>()
            ))
            .prop_map(
                |((cluster, node, controller, members, partitions), moves, racks)| {
                    // Carried only with the partitions; racks only with the moves.
                    let moves = moves.filter(|_| partitions.is_some());
                    let racks = racks && moves.is_some();
                    Response::DescribeCluster(DescribeClusterResponse {
                        moves,
                        racks,
                        partitions: partitions.map(|(total, under_replicated, offline, listed)| {
                            PartitionHealth {
                                total,
                                under_replicated,
                                offline,
                                listed: listed
                                    .into_iter()
                                    .map(|(topic, partition, leader, replicas, isr)| {
                                        PartitionStatus {
                                            topic,
                                            partition,
                                            leader,
                                            replicas,
                                            isr,
                                        }
                                    })
                                    .collect(),
                            }
                        }),
                        cluster,
                        node,
                        controller,
                        members: members
                            .into_iter()
                            .map(|(node, session, storage, since_ms, shards)| ClusterMember {
                                rack: if racks {
                                    format!("rack-{}", node % 7)
                                } else {
                                    String::new()
                                },
                                node,
                                session,
                                storage,
                                since_ms,
                                shards,
                            })
                            .collect(),
                    })
                }
            ),
        move_response().prop_map(Response::MovePartitions),
        (any::<u16>(), any::<u16>(), "\\PC{0,40}", detail).prop_map(
            |(api_key, code, message, detail)| Response::Error {
                api_key,
                error: ErrorResponse::new(ErrorCode::from_u16(code), message).with_detail(detail),
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_request_round_trips(request in request(), correlation_id in any::<u64>()) {
        let bytes = request.to_frame(correlation_id);
        let frame = decode_one(&bytes, REQUEST_SIZE_MAX);
        prop_assert_eq!(frame.head.correlation_id, correlation_id);
        prop_assert_eq!(frame.bytes(), &bytes);
        let decoded = Request::decode(&frame).unwrap();
        let expected_route = match &request {
            Request::Produce(r) => Some((r.topic.clone(), r.partition)),
            Request::Fetch(r) => Some((r.topic.clone(), r.partition)),
            Request::ListOffsets(r) => Some((r.topic.clone(), r.partition)),
            Request::DeleteRecords(r) => Some((r.topic.clone(), r.partition)),
            Request::FindRecord(r) => Some((r.topic.clone(), r.partition)),
            Request::ReplicaFetch(r) => Some((r.topic.clone(), r.partition)),
            Request::ReplicaProgress(r) => Some((r.topic.clone(), r.partition)),
            _ => None,
        };
        let found_route = frame.route().unwrap().map(|r| (r.topic.to_owned(), r.partition));
        prop_assert_eq!(found_route, expected_route);
        prop_assert_eq!(decoded, request);
    }

    #[test]
    fn a_produce_frame_from_parts_is_the_frame_of_the_joined_batch(
        topic in topic(),
        partition in any::<u32>(),
        durability in 0u8..3,
        batch in some_bytes(300),
        split in any::<proptest::sample::Index>(),
        correlation_id in any::<u64>(),
    ) {
        let durability = Durability::from_u8(durability).unwrap();
        let at = split.index(batch.len() + 1);
        let from_parts = produce_frame_from_parts(
            correlation_id,
            &topic,
            PartitionId(partition),
            durability,
            &[&batch[..at], &batch[at..]],
        );
        let joined = Request::Produce(ProduceRequest {
            topic,
            partition: PartitionId(partition),
            durability,
            batch,
        })
        .to_frame(correlation_id);
        prop_assert_eq!(from_parts, joined);
    }

    #[test]
    fn a_produce_frame_built_in_place_is_the_frame_of_its_batch(
        topic in topic(),
        partition in any::<u32>(),
        durability in 0u8..3,
        batch in some_bytes(300),
        correlation_id in any::<u64>(),
    ) {
        let durability = Durability::from_u8(durability).unwrap();
        let headroom = produce_frame_headroom(&topic);
        let mut buffer = vec![0xee; headroom];
        buffer.extend_from_slice(&batch);
        let in_place = produce_frame_in_place(
            buffer,
            correlation_id,
            &topic,
            PartitionId(partition),
            durability,
        );
        let whole = Request::Produce(ProduceRequest {
            topic,
            partition: PartitionId(partition),
            durability,
            batch,
        })
        .to_frame(correlation_id);
        prop_assert_eq!(in_place, whole);
    }

    #[test]
    fn a_response_in_parts_is_the_whole_frame(
        response in response(),
        correlation_id in any::<u64>(),
    ) {
        let (head, records, tail) = response.to_frame_parts(correlation_id);
        let mut joined = head.to_vec();
        joined.extend_from_slice(&records);
        joined.extend_from_slice(&tail);
        prop_assert_eq!(&joined[..], &response.to_frame(correlation_id)[..]);
    }

    #[test]
    fn any_response_round_trips(response in response(), correlation_id in any::<u64>()) {
        let bytes = response.to_frame(correlation_id);
        let frame = decode_one(&bytes, RESPONSE_SIZE_MAX);
        prop_assert_eq!(Response::decode(&frame).unwrap(), response);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut buffer = BytesMut::from(&bytes[..]);
        let decoder = FrameDecoder::new(REQUEST_SIZE_MAX);
        while let Ok(Some(frame)) = decoder.decode(&mut buffer) {
            let _ = frame.route();
            let _ = Request::decode(&frame);
            let _ = Response::decode(&frame);
        }
    }

    #[test]
    fn valid_header_with_garbage_body_never_panics(
        api_key in 0u16..17,
        flags in 0u8..4,
        body in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let head = FrameHead {
            api_key,
            version: VERSION,
            flags,
            correlation_id: 1,
            body_length: u32::try_from(body.len()).unwrap(),
        };
        let mut bytes = head.encode().to_vec();
        bytes.extend_from_slice(&body);
        let frame = decode_one(&Bytes::from(bytes), REQUEST_SIZE_MAX);
        let _ = frame.route();
        let _ = Request::decode(&frame);
        let _ = Response::decode(&frame);
    }
}

/// `CreateTopic` from a client of before replication (no `replication_factor` at the end)
/// is read with the default, 0; with it, the factor is read; anything after it is refused.
#[test]
fn a_create_topic_without_a_replication_factor_is_read_with_the_default() {
    let request = Request::CreateTopic(CreateTopicRequest {
        legacy_layout: false,
        topic: "clicks".into(),
        partitions: 3,
        retention_ms: Setting::Default,
        retention_bytes: Setting::Unlimited,
        segment_bytes: Setting::Value(1 << 20),
        replication_factor: 3,
        min_insync_replicas: Setting::Default,
    });
    let frame = decode_one(&request.to_frame(7), REQUEST_SIZE_MAX);
    assert_eq!(Request::decode(&frame).unwrap(), request);
    let body = frame.body();
    let reframed = |body: &[u8]| {
        let head = FrameHead {
            body_length: u32::try_from(body.len()).unwrap(),
            ..frame.head
        };
        let mut bytes = head.encode().to_vec();
        bytes.extend_from_slice(body);
        decode_one(&Bytes::from(bytes), REQUEST_SIZE_MAX)
    };
    let older = reframed(&body[..body.len() - 2]);
    let Request::CreateTopic(read) = Request::decode(&older).unwrap() else {
        panic!("not a CreateTopic");
    };
    assert_eq!(read.replication_factor, 0);
    assert_eq!(read.segment_bytes, Setting::Value(1 << 20));
    // Read as the older layout, it encodes back to its own bytes.
    assert!(read.legacy_layout);
    assert_eq!(
        Request::CreateTopic(read).to_frame(older.head.correlation_id),
        older.bytes()
    );
    let mut longer = body.to_vec();
    longer.push(0);
    assert!(Request::decode(&reframed(&longer)).is_err());
    assert!(Request::decode(&reframed(&body[..body.len() - 1])).is_err());
}

/// `min_insync_replicas` travels only where both sides know it: a `CreateTopic` or
/// `AlterTopic` that leaves it alone has the bytes of before (an older node takes it), a
/// `Metadata` answer carries it only when its request asked (an older client reads the
/// answer it always did), and a newer client reads an older node's answer as "not said".
#[test]
fn min_insync_replicas_is_sent_only_to_peers_that_asked_for_it() {
    let create = |min_insync_replicas| CreateTopicRequest {
        legacy_layout: false,
        topic: "clicks".into(),
        partitions: 3,
        retention_ms: Setting::Default,
        retention_bytes: Setting::Default,
        segment_bytes: Setting::Default,
        replication_factor: 3,
        min_insync_replicas,
    };
    let plain = Request::CreateTopic(create(Setting::Default)).to_frame(1);
    let with = Request::CreateTopic(create(Setting::Value(2))).to_frame(1);
    assert_eq!(
        with.len(),
        plain.len() + 9,
        "one setting more, only when set"
    );
    let frame = decode_one(&with, REQUEST_SIZE_MAX);
    assert_eq!(
        Request::decode(&frame).unwrap(),
        Request::CreateTopic(create(Setting::Value(2)))
    );

    let alter = |min_insync_replicas| AlterTopicRequest {
        topic: "clicks".into(),
        retention_ms: Some(Setting::Value(60_000)),
        retention_bytes: None,
        segment_bytes: None,
        min_insync_replicas,
        validate_only: false,
    };
    let plain = Request::AlterTopic(alter(None)).to_frame(1);
    let with = Request::AlterTopic(alter(Some(Setting::Value(2)))).to_frame(1);
    assert_eq!(with.len(), plain.len() + 10);
    // Only the forms an encoder writes decode (each frame encodes back to its bytes): an
    // explicit default at the end of a CreateTopic, an absent marker at the end of an
    // AlterTopic are refused.
    let longer = |frame: &Bytes, extra: &[u8]| {
        let frame = decode_one(frame, REQUEST_SIZE_MAX);
        let mut body = frame.body().to_vec();
        body.extend_from_slice(extra);
        let head = FrameHead {
            body_length: u32::try_from(body.len()).unwrap(),
            ..frame.head
        };
        let mut bytes = head.encode().to_vec();
        bytes.extend_from_slice(&body);
        Request::decode(&decode_one(&Bytes::from(bytes), REQUEST_SIZE_MAX))
    };
    let create_plain = Request::CreateTopic(create(Setting::Default)).to_frame(1);
    assert!(longer(&create_plain, &[0; 9]).is_err());
    assert!(longer(&plain, &[0]).is_err());
    for (frame, request) in [(plain, alter(None)), (with, alter(Some(Setting::Value(2))))] {
        let frame = decode_one(&frame, REQUEST_SIZE_MAX);
        assert_eq!(
            Request::decode(&frame).unwrap(),
            Request::AlterTopic(request)
        );
    }

    let answer = |settings| MetadataResponse {
        members: None,
        racks: false,
        shards: vec![],
        topics: vec![TopicMetadata {
            replicas: Vec::new(),
            name: "clicks".into(),
            retention_ms: Setting::Value(1),
            retention_bytes: Setting::Unlimited,
            segment_bytes: Setting::Value(1 << 20),
            min_insync_replicas: if settings {
                Setting::Value(2)
            } else {
                Setting::Default
            },
            partitions: vec![],
        }],
        settings,
    };
    let older = Response::Metadata(answer(false)).to_frame(1);
    let newer = Response::Metadata(answer(true)).to_frame(1);
    assert_eq!(newer.len(), older.len() + 1 + 9);
    assert_eq!(
        &newer[FRAME_HEADER_SIZE as usize..older.len()],
        &older[FRAME_HEADER_SIZE as usize..],
        "the answer of before, then the settings"
    );
    for (frame, expected) in [(older, answer(false)), (newer, answer(true))] {
        let frame = decode_one(&frame, RESPONSE_SIZE_MAX);
        assert_eq!(
            Response::decode(&frame).unwrap(),
            Response::Metadata(expected)
        );
    }
    let asked = Request::Metadata(MetadataRequest {
        placement: false,
        topics: vec![],
        settings: true,
        racks: false,
    })
    .to_frame(1);
    let unasked = Request::Metadata(MetadataRequest {
        placement: false,
        topics: vec![],
        settings: false,
        racks: false,
    })
    .to_frame(1);
    assert_eq!(asked.len(), unasked.len() + 1);
}

/// Placement (where each partition's replicas are, the members' Kafka addresses) follows the
/// settings at the end of a Metadata request and answer: asked with a second `1`, which asks
/// for the settings too; answered after the settings; an answer without it (a single node, an
/// older node) reads as `members: None`; a request asking for placement without its settings
/// byte is not made by any encoder and reads as asking for the settings only.
#[test]
fn placement_follows_the_settings_and_is_carried_only_when_asked() {
    let request = |settings, placement| {
        Request::Metadata(MetadataRequest {
            topics: vec![],
            settings,
            placement,
            racks: false,
        })
        .to_frame(1)
    };
    let settings_only = request(true, false);
    let placed = request(true, true);
    assert_eq!(placed.len(), settings_only.len() + 1);
    assert_eq!(placed[placed.len() - 2..], [1, 1]);
    // Asking for placement alone still sends the settings byte before it.
    assert_eq!(request(false, true), placed);
    let frame = decode_one(&placed, REQUEST_SIZE_MAX);
    assert_eq!(
        Request::decode(&frame).unwrap(),
        Request::Metadata(MetadataRequest {
            topics: vec![],
            settings: true,
            placement: true,
            racks: false,
        })
    );
    let answer = |members: Option<Vec<MemberAddress>>| MetadataResponse {
        shards: vec![],
        topics: vec![TopicMetadata {
            name: "clicks".into(),
            retention_ms: Setting::Value(1),
            retention_bytes: Setting::Unlimited,
            segment_bytes: Setting::Value(1 << 20),
            min_insync_replicas: Setting::Value(2),
            partitions: vec![
                PartitionMetadata {
                    partition: PartitionId(0),
                    shard: ShardId(0),
                },
                PartitionMetadata {
                    partition: PartitionId(1),
                    shard: ShardId(3),
                },
            ],
            replicas: if members.is_some() {
                vec![
                    PartitionPlacement {
                        leader: Some(2),
                        epoch: 4,
                        replicas: vec![2, 1, 3],
                        isr: vec![2, 3],
                    },
                    PartitionPlacement {
                        leader: None,
                        epoch: 0,
                        replicas: vec![1],
                        isr: vec![],
                    },
                ]
            } else {
                vec![]
            },
        }],
        settings: true,
        members,
        racks: false,
    };
    let members = vec![
        MemberAddress {
            node: 1,
            kafka: "10.0.0.1:9092".into(),
            rack: String::new(),
        },
        MemberAddress {
            node: 2,
            kafka: String::new(),
            rack: String::new(),
        },
    ];
    let without = Response::Metadata(answer(None)).to_frame(1);
    let with = Response::Metadata(answer(Some(members.clone()))).to_frame(1);
    assert_eq!(
        &with[FRAME_HEADER_SIZE as usize..without.len()],
        &without[FRAME_HEADER_SIZE as usize..],
        "the answer with settings, then the placement"
    );
    for (frame, expected) in [
        (without, answer(None)),
        (with, answer(Some(members.clone()))),
    ] {
        let frame = decode_one(&frame, RESPONSE_SIZE_MAX);
        assert_eq!(
            Response::decode(&frame).unwrap(),
            Response::Metadata(expected)
        );
    }
    // Racks: asked after placement (a third `1`), answered after the placement.
    let asked = Request::Metadata(MetadataRequest {
        topics: vec![],
        settings: true,
        placement: true,
        racks: true,
    })
    .to_frame(1);
    assert_eq!(asked[asked.len() - 3..], [1, 1, 1]);
    let frame = decode_one(&asked, REQUEST_SIZE_MAX);
    assert!(matches!(
        Request::decode(&frame).unwrap(),
        Request::Metadata(MetadataRequest { racks: true, .. })
    ));
    let mut racked = answer(Some(members.clone()));
    racked.racks = true;
    if let Some(members) = racked.members.as_mut() {
        members[0].rack = "eu-west-1a".into();
    }
    let placed = Response::Metadata(answer(Some(members))).to_frame(1);
    let with_racks = Response::Metadata(racked.clone()).to_frame(1);
    assert_eq!(
        &with_racks[FRAME_HEADER_SIZE as usize..placed.len()],
        &placed[FRAME_HEADER_SIZE as usize..],
        "the answer with placement, then the racks"
    );
    let frame = decode_one(&with_racks, RESPONSE_SIZE_MAX);
    assert_eq!(
        Response::decode(&frame).unwrap(),
        Response::Metadata(racked)
    );
}

/// The wait a node may take before answering, read from a frame as a gateway does, is the
/// request's own: a fetch's `max_wait_ms`, a JoinGroup's rebalance timeout, a SyncGroup's
/// `GROUP_SYNC_WAIT_MS_MAX`, nothing for the rest.
#[test]
fn a_frames_parked_wait_is_its_requests() {
    use core::time::Duration;
    let fetch = Request::Fetch(FetchRequest {
        topic: "clicks".into(),
        partition: PartitionId(3),
        offset: 7,
        max_bytes: 1 << 20,
        max_wait_ms: 1234,
        min_bytes: 1,
        epochs: ReadEpochs::default(),
    });
    let join = Request::Group(GroupRequest {
        topic: OFFSETS_TOPIC.into(),
        partition: PartitionId(0),
        group: "g".into(),
        op: GroupOp::Join(group::JoinOp {
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 45_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::new())],
            require_known_member_id: false,
        }),
    });
    let produce = Request::Produce(ProduceRequest {
        topic: "clicks".into(),
        partition: PartitionId(0),
        durability: Durability::Fsync,
        batch: Bytes::from_static(b"not looked at"),
    });
    let delete = Request::DeleteTopic(DeleteTopicRequest {
        topic: "clicks".into(),
    });
    for (request, wait) in [
        (fetch, Duration::from_millis(1234)),
        (join, Duration::from_secs(45)),
        (produce, Duration::ZERO),
        (
            delete,
            Duration::from_millis(u64::from(limits::ADMIN_WAIT_MS_MAX)),
        ),
    ] {
        assert_eq!(request.parked_wait(), wait);
        let frame = decode_one(&request.to_frame(9), REQUEST_SIZE_MAX);
        assert_eq!(parked_wait(&frame), wait, "{request:?}");
    }
}
