//! The Kafka listener against a real `spate-gateway` process (the node runs in this test's
//! process, on loopback, with its data under `target/`): the protocol rules checked with raw
//! sockets (version negotiation, order of answers, limits, garbage), and real Kafka clients
//! (Debian's `kcat`, installed by `.ci/run`) listing, producing and consuming.

#![allow(clippy::print_stdout, clippy::cast_possible_truncation)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::{encode_request_header_into_buffer, Decodable, Encodable};

fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kafka-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn node(dir: &Path, shards: u32) -> spate_node::NodeHandle {
    let flags = spate_node::Flags {
        data_dir: Some(dir.join("node")),
        listen: Some("127.0.0.1:0".into()),
        shards: Some(shards),
        ..spate_node::Flags::default()
    };
    spate_node::start(spate_node::NodeConfig::resolve(flags).unwrap()).unwrap()
}

/// A `spate-gateway` process with a Kafka listener; killed when dropped.
struct Gateway {
    child: Child,
    quic: SocketAddr,
    kafka: SocketAddr,
}

impl Gateway {
    fn start(dir: &Path, node: SocketAddr, flags: &[&str]) -> Gateway {
        let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_spate-gateway"))
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--listen", "127.0.0.1:0", "--node", &node.to_string()])
            .args(["--kafka-listen", "127.0.0.1:0"])
            .arg("--dev-cert-dir")
            .arg(dir.join("tls"))
            .args(flags)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let rest = first
            .strip_prefix("gateway listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let (quic, _cert) = rest.split_once(" (certificate ").unwrap();
        let second = lines.next().unwrap().unwrap();
        let kafka = second
            .strip_prefix("kafka listening on ")
            .and_then(|rest| rest.split_once(' '))
            .map(|(address, _)| address.parse().unwrap())
            .unwrap_or_else(|| panic!("unexpected second line {second:?}"));
        Gateway {
            quic: quic.parse().unwrap(),
            kafka,
            child,
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request frame: size, header, body.
fn frame(api: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")));
    encode_request_header_into_buffer(&mut out, &header).unwrap();
    body.encode(&mut out, version).unwrap();
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    out.to_vec()
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Reads one response frame (without its size).
fn read_response(stream: &mut TcpStream) -> Bytes {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).unwrap();
    Bytes::from(body)
}

/// Whether the peer closed the connection (read returns end of file or a reset).
fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

fn api_versions(stream: &mut TcpStream, version: i16, correlation_id: i32) -> ApiVersionsResponse {
    stream
        .write_all(&frame(
            ApiKey::ApiVersions,
            version,
            correlation_id,
            &ApiVersionsRequest::default(),
        ))
        .unwrap();
    let mut answer = read_response(stream);
    assert_eq!(answer.get_i32(), correlation_id);
    // ApiVersions answers always have a v0 header: the body follows at once.
    ApiVersionsResponse::decode(&mut answer, version).unwrap()
}

#[test]
fn versions_order_limits_and_garbage_over_raw_sockets() {
    let dir = data_dir("raw");
    let node = node(&dir, 1);
    let mut gateway = Gateway::start(
        &dir,
        node.endpoints[0],
        &[
            "--kafka-request-bytes-max",
            "1048576",
            "--kafka-buffer-budget",
            "8388608",
        ],
    );
    let mut client = connect(gateway.kafka);
    for version in 0..=4 {
        let answer = api_versions(&mut client, version, 100 + i32::from(version));
        assert_eq!(answer.error_code, 0);
        let produce = answer
            .api_keys
            .iter()
            .find(|key| key.api_key == ApiKey::Produce as i16)
            .unwrap();
        // From v0 only so that librdkafka before 2.11.1 compresses (docs/kafka.md).
        assert_eq!((produce.min_version, produce.max_version), (0, 12));
    }

    // A version from the future: a v0 answer naming the served range, connection kept.
    let mut future = BytesMut::new();
    future.put_i32(0);
    future.put_i16(ApiKey::ApiVersions as i16);
    future.put_i16(99);
    future.put_i32(7);
    future.put_slice(b"\xff\xff\x00unknown future fields");
    let size = (future.len() - 4) as i32;
    future[..4].copy_from_slice(&size.to_be_bytes());
    client.write_all(&future).unwrap();
    let mut answer = read_response(&mut client);
    assert_eq!(answer.get_i32(), 7);
    let fallback = ApiVersionsResponse::decode(&mut answer, 0).unwrap();
    assert_eq!(fallback.error_code, 35);
    assert!(fallback.api_keys.iter().any(|key| key.api_key == 18));
    assert_eq!(api_versions(&mut client, 3, 8).error_code, 0);

    // Pipelined requests are answered in the order they were sent.
    let mut batch = Vec::new();
    for id in 0..100 {
        if id % 3 == 0 {
            batch.extend(frame(ApiKey::Metadata, 4, id, &MetadataRequest::default()));
        } else {
            batch.extend(frame(
                ApiKey::ApiVersions,
                3,
                id,
                &ApiVersionsRequest::default(),
            ));
        }
    }
    client.write_all(&batch).unwrap();
    for id in 0..100 {
        let mut answer = read_response(&mut client);
        assert_eq!(answer.get_i32(), id, "answers out of order");
        if id % 3 == 0 {
            let metadata = MetadataResponse::decode(&mut answer, 4).unwrap();
            assert_eq!(metadata.brokers.len(), 1);
            assert_eq!(metadata.brokers[0].port, i32::from(gateway.kafka.port()));
        }
    }

    // A node without --auto-create-topics: a topic a client names stays unknown.
    let named = MetadataRequest::default()
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("unnamed")))),
        ]))
        .with_allow_auto_topic_creation(true);
    client
        .write_all(&frame(ApiKey::Metadata, 12, 500, &named))
        .unwrap();
    let mut answer = read_response(&mut client);
    assert_eq!(answer.get_i32(), 500);
    answer.advance(1); // response header v1: tagged fields
    let metadata = MetadataResponse::decode(&mut answer, 12).unwrap();
    assert_eq!(metadata.topics.len(), 1);
    assert_eq!(metadata.topics[0].error_code, 3, "{metadata:?}");

    // A request larger than the limit: closed before anything is read.
    let mut large = connect(gateway.kafka);
    large.write_all(&(2_000_000i32).to_be_bytes()).unwrap();
    assert!(is_closed(&mut large));
    // Garbage: that connection closes, the others are served.
    let mut garbage = connect(gateway.kafka);
    garbage
        .write_all(&[0, 0, 0, 12, 0x7f, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .unwrap();
    assert!(is_closed(&mut garbage));
    // An array count far beyond the request's bytes (aborted an unpatched kafka-protocol).
    let mut bomb = connect(gateway.kafka);
    let mut request = BytesMut::new();
    request.put_i32(14);
    request.put_i16(ApiKey::Metadata as i16);
    request.put_i16(4);
    request.put_i32(1);
    request.put_i16(-1);
    request.put_i32(i32::MAX);
    bomb.write_all(&request).unwrap();
    assert!(is_closed(&mut bomb));
    // A request that stops arriving does not hold its connection's budget forever: the
    // client stays connected, the gateway keeps serving others.
    let mut half = connect(gateway.kafka);
    half.write_all(&(1000i32).to_be_bytes()).unwrap();
    half.write_all(&[0u8; 10]).unwrap();
    assert_eq!(api_versions(&mut client, 3, 9).error_code, 0);
    assert!(gateway.is_running());
    let _ = gateway.quic;
    drop(node);
}

/// A real batch: two records kcat (librdkafka 2.0.2) sent.
const KCAT_BATCH: &[u8] = include_bytes!("../../kafka/testdata/kcat-keys-headers.bin");

fn produce_request(topic: &'static str, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from_static(KCAT_BATCH)))])])
}

#[test]
fn acks_zero_is_never_answered_and_its_failure_closes_the_connection() {
    let dir = data_dir("acks");
    let node = node(&dir, 1);
    let gateway = Gateway::start(&dir, node.endpoints[0], &[]);
    let mut client = connect(gateway.kafka);
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    client
        .write_all(&frame(ApiKey::CreateTopics, 7, 1, &create))
        .unwrap();
    let mut answer = read_response(&mut client);
    assert_eq!(answer.get_i32(), 1);
    answer.advance(1); // response header v1: tagged fields
    let created = CreateTopicsResponse::decode(&mut answer, 7).unwrap();
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");

    // acks=0 then ApiVersions, pipelined: only the second is answered.
    let mut both = frame(ApiKey::Produce, 7, 2, &produce_request("t", 0));
    both.extend(frame(
        ApiKey::ApiVersions,
        3,
        3,
        &ApiVersionsRequest::default(),
    ));
    client.write_all(&both).unwrap();
    let mut answer = read_response(&mut client);
    assert_eq!(answer.get_i32(), 3, "the acks=0 produce was answered");
    // A failing acks=0 produce (unknown topic): the connection closes after the answers
    // before it, so the client learns of the failure.
    let mut both = frame(ApiKey::ApiVersions, 3, 4, &ApiVersionsRequest::default());
    both.extend(frame(ApiKey::Produce, 7, 5, &produce_request("nope", 0)));
    client.write_all(&both).unwrap();
    let mut answer = read_response(&mut client);
    assert_eq!(answer.get_i32(), 4);
    assert!(is_closed(&mut client));

    // The acks=0 batch was stored: an acks=all produce of the same batch comes after it.
    let mut client = connect(gateway.kafka);
    client
        .write_all(&frame(ApiKey::Produce, 7, 6, &produce_request("t", -1)))
        .unwrap();
    let mut answer = read_response(&mut client);
    assert_eq!(answer.get_i32(), 6);
    let produced = ProduceResponse::decode(&mut answer, 7).unwrap();
    let partition = &produced.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 0, "{partition:?}");
    assert_eq!(partition.base_offset, 2, "kcat's batch holds two records");
    drop(node);
}

/// Produce v0-v2 are advertised (old librdkafka compresses only then) and answered in their
/// own layout; what they carry, magic 0/1 message sets, is refused per partition with
/// UNSUPPORTED_FOR_MESSAGE_FORMAT, and the connection stays usable.
#[test]
fn produce_v0_to_v2_refuse_legacy_message_sets_in_their_own_layout() {
    let dir = data_dir("legacy-produce");
    let node = node(&dir, 1);
    let gateway = Gateway::start(&dir, node.endpoints[0], &[]);
    let mut client = connect(gateway.kafka);
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("old")))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    client
        .write_all(&frame(ApiKey::CreateTopics, 7, 1, &create))
        .unwrap();
    read_response(&mut client);
    // A v1 message (magic 1) of one record: offset, size, crc, magic, attributes,
    // timestamp, key -1, value "x".
    let mut message_set = BytesMut::new();
    message_set.put_i64(0);
    message_set.put_i32(27);
    message_set.put_u32(0);
    message_set.put_u8(1);
    message_set.put_u8(0);
    message_set.put_i64(1_767_225_600_000);
    message_set.put_i32(-1);
    message_set.put_i32(1);
    message_set.put_u8(b'x');
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("old")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(message_set.freeze()))])]);
    for version in 0..=2i16 {
        let correlation_id = 10 + i32::from(version);
        // v0-v2 are v3 without the leading transactional id (a null string, `ff ff`, right
        // after the 18-byte request header v1 with client id "raw-test").
        let mut bytes = frame(ApiKey::Produce, 3, correlation_id, &request);
        assert_eq!(&bytes[22..24], &[0xff, 0xff]);
        bytes.drain(22..24);
        bytes[6..8].copy_from_slice(&version.to_be_bytes());
        let size = (bytes.len() - 4) as i32;
        bytes[..4].copy_from_slice(&size.to_be_bytes());
        client.write_all(&bytes).unwrap();
        let mut answer = read_response(&mut client);
        assert_eq!(answer.get_i32(), correlation_id);
        assert_eq!(answer.get_i32(), 1, "v{version}: one topic");
        assert_eq!(answer.get_i16(), 3);
        assert_eq!(&answer.split_to(3)[..], b"old");
        assert_eq!(answer.get_i32(), 1, "v{version}: one partition");
        assert_eq!(answer.get_i32(), 0);
        assert_eq!(
            answer.get_i16(),
            43,
            "v{version}: UNSUPPORTED_FOR_MESSAGE_FORMAT"
        );
        assert_eq!(answer.get_i64(), -1);
        if version == 2 {
            answer.get_i64(); // log_append_time_ms
        }
        if version >= 1 {
            assert_eq!(answer.get_i32(), 0, "v{version}: throttle time");
        }
        assert!(answer.is_empty(), "v{version}: {} bytes left", answer.len());
    }
    // The connection still serves: a v7 produce of a real batch is stored at offset 0.
    client
        .write_all(&frame(ApiKey::Produce, 7, 20, &produce_request("old", -1)))
        .unwrap();
    let mut answer = read_response(&mut client);
    assert_eq!(answer.get_i32(), 20);
    let produced = ProduceResponse::decode(&mut answer, 7).unwrap();
    let partition = &produced.responses[0].partition_responses[0];
    assert_eq!((partition.error_code, partition.base_offset), (0, 0));
    drop(node);
}

/// Group requests carry the client's names to the node: a name longer than the node reads
/// (a 70,000-byte group id in JoinGroup v6, a flexible version with no i16 limit on strings)
/// is refused with INVALID_REQUEST, and the gateway keeps serving; pipelined OffsetCommits of
/// one connection are applied in their order (the last one is what OffsetFetch answers).
#[test]
fn group_requests_with_oversized_names_are_refused_and_commits_keep_their_order() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{
        GroupId, JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
        OffsetFetchRequest, OffsetFetchResponse,
    };
    let dir = data_dir("group-limits");
    let node = node(&dir, 2);
    let mut gateway = Gateway::start(&dir, node.endpoints[0], &[]);
    let mut client = connect(gateway.kafka);
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string("g".repeat(70_000))))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"m"))]);
    client
        .write_all(&frame(ApiKey::JoinGroup, 6, 1, &join))
        .unwrap();
    let mut answer = read_response(&mut client);
    assert_eq!(answer.get_i32(), 1);
    answer.advance(1); // response header v1: tagged fields
    let joined = JoinGroupResponse::decode(&mut answer, 6).unwrap();
    assert_eq!(joined.error_code, 42, "INVALID_REQUEST: {joined:?}");
    assert!(gateway.is_running());

    // 50 commits of one partition at generation -1, pipelined, then a fetch.
    let commit = |offset: i64| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("ordered")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])])
    };
    // The coordinator loads its offsets at the first request (COORDINATOR_LOAD_IN_PROGRESS,
    // 14, until then).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        client
            .write_all(&frame(ApiKey::OffsetCommit, 7, 2, &commit(0)))
            .unwrap();
        let mut answer = read_response(&mut client);
        assert_eq!(answer.get_i32(), 2);
        let committed = OffsetCommitResponse::decode(&mut answer, 7).unwrap();
        match committed.topics[0].partitions[0].error_code {
            0 => break,
            14 if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("commit refused with {other}"),
        }
    }
    let mut pipelined = Vec::new();
    for offset in 1..=50i32 {
        pipelined.extend(frame(
            ApiKey::OffsetCommit,
            7,
            100 + offset,
            &commit(i64::from(offset)),
        ));
    }
    client.write_all(&pipelined).unwrap();
    for offset in 1..=50i32 {
        let mut answer = read_response(&mut client);
        assert_eq!(answer.get_i32(), 100 + offset);
        let committed = OffsetCommitResponse::decode(&mut answer, 7).unwrap();
        assert_eq!(
            committed.topics[0].partitions[0].error_code, 0,
            "commit {offset}: {committed:?}"
        );
    }
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("ordered")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_indexes(vec![0])]));
    client
        .write_all(&frame(ApiKey::OffsetFetch, 5, 200, &fetch))
        .unwrap();
    let mut answer = read_response(&mut client);
    assert_eq!(answer.get_i32(), 200);
    let fetched = OffsetFetchResponse::decode(&mut answer, 5).unwrap();
    assert_eq!(fetched.error_code, 0, "{fetched:?}");
    assert_eq!(
        fetched.topics[0].partitions[0].committed_offset, 50,
        "{fetched:?}"
    );
    drop(node);
}
