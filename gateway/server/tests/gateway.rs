//! The gateway in front of a real node (in process, on loopback): frames over QUIC streams
//! reach the owning shard and come back with the client's correlation ids; garbage on one
//! stream does not disturb others.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use spate_format::{BatchBuilder, Record};
use spate_gateway::{Flags, GatewayConfig};
use spate_proto::limits::RESPONSE_SIZE_MAX;
use spate_proto::*;

fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gateway-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn node(dir: &std::path::Path) -> spate_node::NodeHandle {
    let flags = spate_node::Flags {
        data_dir: Some(dir.join("node")),
        listen: Some("127.0.0.1:0".into()),
        shards: Some(2),
        ..spate_node::Flags::default()
    };
    spate_node::start(spate_node::NodeConfig::resolve(flags).unwrap()).unwrap()
}

async fn gateway(dir: &std::path::Path, node: SocketAddr) -> spate_gateway::Gateway {
    gateway_with(dir, &node.to_string(), None).await
}

/// A gateway in front of `nodes` (its `--node`), with `--shard-answer-timeout-ms` if given.
async fn gateway_with(
    dir: &std::path::Path,
    nodes: &str,
    answer_timeout_ms: Option<u64>,
) -> spate_gateway::Gateway {
    let flags = Flags {
        listen: Some("127.0.0.1:0".into()),
        node: Some(nodes.to_owned()),
        dev_cert_dir: Some(dir.join("tls")),
        shard_answer_timeout_ms: answer_timeout_ms,
        ..Flags::default()
    };
    spate_gateway::start(GatewayConfig::resolve(flags).unwrap())
        .await
        .unwrap()
}

async fn connect(gateway: &spate_gateway::Gateway) -> quinn::Connection {
    let crypto = spate_gateway::tls::client_config(&gateway.cert_path).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
        .connect(gateway.local_addr, "localhost")
        .unwrap()
        .await
        .unwrap()
}

/// Sends frames on a new stream and collects one response per frame, by correlation id.
async fn exchange(connection: &quinn::Connection, frames: &[Bytes]) -> Vec<(u64, Response)> {
    let (mut send, mut receive) = connection.open_bi().await.unwrap();
    for frame in frames {
        send.write_all(frame).await.unwrap();
    }
    send.finish().unwrap();
    let decoder = FrameDecoder::new(RESPONSE_SIZE_MAX);
    let mut buffer = BytesMut::new();
    let mut out = Vec::new();
    while out.len() < frames.len() {
        if let Some(frame) = decoder.decode(&mut buffer).unwrap() {
            out.push((frame.head.correlation_id, Response::decode(&frame).unwrap()));
            continue;
        }
        match receive.read_chunk(1 << 20, true).await.unwrap() {
            Some(chunk) => buffer.extend_from_slice(&chunk.bytes),
            None => break,
        }
    }
    out
}

fn produce(topic: &str, partition: u32, value: &[u8]) -> Request {
    let mut builder = BatchBuilder::new();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    builder
        .push(&Record {
            timestamp: now,
            value: Some(value),
            ..Record::default()
        })
        .unwrap();
    Request::Produce(ProduceRequest {
        topic: topic.into(),
        partition: PartitionId(partition),
        durability: Durability::Fsync,
        batch: Bytes::from(builder.finish().unwrap()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_the_owning_shard_and_answers_keep_their_ids() {
    let dir = data_dir("round-trip");
    let node = node(&dir);
    let gateway = gateway(&dir, node.endpoints[0]).await;
    let connection = connect(&gateway).await;
    let create = Request::CreateTopic(CreateTopicRequest {
        legacy_layout: false,
        min_insync_replicas: Setting::Default,
        topic: "g".into(),
        partitions: 4,
        retention_ms: Setting::Default,
        retention_bytes: Setting::Default,
        segment_bytes: Setting::Default,
        replication_factor: 0,
    });
    let answers = exchange(&connection, &[create.to_frame(900)]).await;
    assert!(
        matches!(answers[0], (900, Response::CreateTopic(_))),
        "{answers:?}"
    );
    // Pipelined produces to every partition (both shards) on one stream, ids kept, and in
    // order per partition.
    let mut frames = Vec::new();
    for round in 0..5u64 {
        for partition in 0..4u32 {
            let id = 1000 + round * 10 + u64::from(partition);
            frames.push(
                produce("g", partition, format!("{partition}-{round}").as_bytes()).to_frame(id),
            );
        }
    }
    let answers = exchange(&connection, &frames).await;
    assert_eq!(answers.len(), 20);
    for (id, response) in &answers {
        let round = (id - 1000) / 10;
        match response {
            Response::Produce(produced) => assert_eq!(produced.base_offset, round, "id {id}"),
            other => panic!("id {id}: {other:?}"),
        }
    }
    for partition in 0..4u32 {
        let fetch = Request::Fetch(FetchRequest {
            topic: "g".into(),
            partition: PartitionId(partition),
            offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            min_bytes: 0,
            epochs: ReadEpochs::default(),
        });
        let answers = exchange(&connection, &[fetch.to_frame(7)]).await;
        match &answers[0] {
            (7, Response::Fetch(fetched)) => {
                let values: Vec<Vec<u8>> = spate_format::batches(&fetched.records)
                    .flat_map(|batch| {
                        batch
                            .unwrap()
                            .records()
                            .map(|r| r.unwrap().value.unwrap().to_vec())
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let expected: Vec<Vec<u8>> = (0..5)
                    .map(|round| format!("{partition}-{round}").into_bytes())
                    .collect();
                assert_eq!(values, expected);
            }
            other => panic!("{other:?}"),
        }
    }
    // Replication frames are for nodes only: the gateway answers them itself.
    let replica_fetch = Request::ReplicaFetch(ReplicaFetchRequest {
        topic: "g".into(),
        partition: PartitionId(0),
        topic_id: 1,
        replica: 2,
        storage_id: 3,
        leader_epoch: 1,
        session: 1,
        incarnation: 1,
        fetch_offset: 0,
        last_fetched_epoch: None,
        durable_end: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
    });
    let answers = exchange(&connection, &[replica_fetch.to_frame(11)]).await;
    match &answers[0] {
        (11, Response::Error { api_key, error }) => {
            assert_eq!(*api_key, ApiKey::ReplicaFetch.to_u16());
            assert_eq!(error.code, ErrorCode::InvalidRequest);
            assert!(error.message.contains("between nodes only"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    // Garbage on one stream: an error frame and the stream ends; the connection serves on.
    let (mut send, mut receive) = connection.open_bi().await.unwrap();
    let mut oversized = vec![0u8; 16];
    oversized[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    send.write_all(&oversized).await.unwrap();
    let reply = receive.read_to_end(1 << 16).await.unwrap();
    let mut buffer = BytesMut::from(&reply[..]);
    let frame = FrameDecoder::new(RESPONSE_SIZE_MAX)
        .decode(&mut buffer)
        .unwrap()
        .unwrap();
    match Response::decode(&frame).unwrap() {
        Response::Error { error, .. } => assert_eq!(error.code, ErrorCode::FrameTooLarge),
        other => panic!("{other:?}"),
    }
    let metadata = Request::Metadata(MetadataRequest {
        placement: false,
        settings: false,
        topics: vec![],
        racks: false,
    })
    .to_frame(3);
    let answers = exchange(&connection, &[metadata]).await;
    // The node lists the user's topic and its internal offsets topic.
    assert!(matches!(&answers[0], (3, Response::Metadata(m))
        if m.topics.len() == 2 && m.topics.iter().any(|t| t.name == OFFSETS_TOPIC)));
    gateway.close();
    node.shutdown();
}

/// A "node" that answers `Metadata` (itself as shard 0 of topic `t`, partitions 0 and 1) and
/// produces to partition 0, and takes every other frame without ever answering, keeping its
/// connections open; it counts the connections it accepted.
fn silent_node() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let decoder = FrameDecoder::new(1 << 24);
                let mut buffer = BytesMut::new();
                let mut chunk = vec![0u8; 1 << 16];
                loop {
                    let Some(frame) = decoder.decode(&mut buffer).unwrap() else {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                        continue;
                    };
                    let answer = match Request::decode(&frame) {
                        Ok(Request::Metadata(_)) => Response::Metadata(MetadataResponse {
                            members: None,
                            racks: false,
                            shards: vec![ShardInfo {
                                shard: ShardId(0),
                                endpoint: address.to_string(),
                            }],
                            topics: vec![TopicMetadata {
                                replicas: Vec::new(),
                                name: "t".into(),
                                retention_ms: Setting::Unlimited,
                                retention_bytes: Setting::Unlimited,
                                segment_bytes: Setting::Value(1 << 30),
                                min_insync_replicas: Setting::Default,
                                partitions: (0..2)
                                    .map(|partition| PartitionMetadata {
                                        partition: PartitionId(partition),
                                        shard: ShardId(0),
                                    })
                                    .collect(),
                            }],
                            settings: false,
                        }),
                        Ok(Request::Produce(produce)) if produce.partition.0 == 0 => {
                            Response::Produce(ProduceResponse {
                                base_offset: 0,
                                append_time: 0,
                                log_start_offset: 0,
                            })
                        }
                        _ => continue,
                    };
                    if stream
                        .write_all(&answer.to_frame(frame.head.correlation_id))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (address, accepted)
}

/// A gateway given several node addresses (`--node A,B`) whose first is gone learns the map
/// from the next one and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_first_node_is_gone_learns_the_map_from_the_next() {
    let dir = data_dir("second-node");
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (node, _) = silent_node();
    let gateway = gateway_with(&dir, &format!("{gone},{node}"), None).await;
    let connection = connect(&gateway).await;
    let answers = exchange(&connection, &[produce("t", 0, b"through B").to_frame(1)]).await;
    assert!(
        matches!(&answers[..], [(1, Response::Produce(_))]),
        "{answers:?}"
    );
    gateway.shutdown().await;
}

/// A shard that stops answering without closing its connection: each request forwarded to it
/// is answered `Timeout` once `--shard-answer-timeout-ms` has passed beyond the request's own
/// wait (a fetch's `max_wait_ms`), and the gateway gives the link up and connects anew
/// rather than queueing more requests behind the silent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_stops_answering_gets_timeouts_and_a_new_link() {
    let dir = data_dir("silent-shard");
    let (node, accepted) = silent_node();
    let gateway = gateway_with(&dir, &node.to_string(), Some(400)).await;
    let connection = connect(&gateway).await;
    let started = std::time::Instant::now();
    let answers = exchange(&connection, &[produce("t", 1, b"lost?").to_frame(1)]).await;
    let waited = started.elapsed();
    match &answers[..] {
        [(1, Response::Error { error, .. })] => {
            assert_eq!(error.code, ErrorCode::Timeout, "{error:?}");
            assert!(error.message.contains("400 ms"), "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        waited >= std::time::Duration::from_millis(400),
        "{waited:?}"
    );
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    // A fetch may wait at the shard as long as it asks (1 s here), then the timeout.
    let fetch = Request::Fetch(FetchRequest {
        topic: "t".into(),
        partition: PartitionId(1),
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 1000,
        min_bytes: 1,
        epochs: ReadEpochs::default(),
    });
    let started = std::time::Instant::now();
    let answers = exchange(&connection, &[fetch.to_frame(2)]).await;
    let waited = started.elapsed();
    assert!(
        matches!(&answers[..], [(2, Response::Error { error, .. })] if error.code == ErrorCode::Timeout),
        "{answers:?}"
    );
    assert!(
        waited >= std::time::Duration::from_millis(1400),
        "{waited:?}"
    );
    // Every timeout gave its link up: the gateway connected again for the next request.
    let links = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(links >= 2, "{links} connections");
    gateway.shutdown().await;
}

/// A request the shard does not answer in time on a link that answers others is answered
/// `Timeout` alone: the link stays (no new connection), and the requests it answers meanwhile
/// all get their answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_on_a_link_that_answers_others_fails_alone() {
    let dir = data_dir("slow-request");
    let (node, accepted) = silent_node();
    let gateway = gateway_with(&dir, &node.to_string(), Some(400)).await;
    let connection = connect(&gateway).await;
    let slow = {
        let connection = connection.clone();
        tokio::spawn(async move {
            exchange(
                &connection,
                &[produce("t", 1, b"never answered").to_frame(1)],
            )
            .await
        })
    };
    // Answered requests on the same link, every 50 ms, until after the slow one's deadline.
    for id in 0..20u64 {
        let answers = exchange(&connection, &[produce("t", 0, b"answered").to_frame(id)]).await;
        assert!(
            matches!(&answers[..], [(_, Response::Produce(_))]),
            "{answers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let answers = slow.await.unwrap();
    assert!(
        matches!(&answers[..], [(1, Response::Error { error, .. })] if error.code == ErrorCode::Timeout),
        "{answers:?}"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the link was kept"
    );
    gateway.shutdown().await;
}
