//! Helpers for the node's tests: temporary data directories on the real filesystem (under
//! `target/`, never tmpfs), an in-process node, and a small blocking client speaking frames.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use spate_format::{BatchBuilder, Record};
use spate_node::{Flags, NodeConfig, NodeHandle};
use spate_proto::limits::RESPONSE_SIZE_MAX;
use spate_proto::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh data directory under `target/tmp` (a real filesystem, so O_DIRECT works).
pub fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn config(dir: &std::path::Path, shards: u32) -> NodeConfig {
    let flags = Flags {
        data_dir: Some(dir.to_owned()),
        listen: Some("127.0.0.1:0".into()),
        shards: Some(shards),
        retention_check_ms: Some(100),
        ..Flags::default()
    };
    NodeConfig::resolve(flags).unwrap()
}

pub fn start(dir: &std::path::Path, shards: u32) -> NodeHandle {
    spate_node::start(config(dir, shards)).unwrap()
}

/// A blocking client on one shard connection.
pub struct Client {
    stream: TcpStream,
    buffer: BytesMut,
    next_id: u64,
}

impl Client {
    pub fn connect(address: SocketAddr) -> Client {
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buffer: BytesMut::new(),
            next_id: 1,
        }
    }

    pub fn send(&mut self, request: &Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.stream.write_all(&request.to_frame(id)).unwrap();
        id
    }

    /// Like `send`, but `None` if the connection is gone.
    pub fn try_send(&mut self, request: &Request) -> Option<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.stream.write_all(&request.to_frame(id)).ok()?;
        Some(id)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next response frame (any correlation id), or `None` if the connection closed.
    pub fn receive(&mut self) -> Option<(u64, Response)> {
        let decoder = FrameDecoder::new(RESPONSE_SIZE_MAX);
        loop {
            if let Some(frame) = decoder.decode(&mut self.buffer).unwrap() {
                let response = Response::decode(&frame).unwrap();
                return Some((frame.head.correlation_id, response));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
            }
        }
    }

    pub fn call(&mut self, request: &Request) -> Response {
        let id = self.send(request);
        let (answered, response) = self.receive().expect("connection closed");
        assert_eq!(answered, id, "responses on this client come in order");
        response
    }

    pub fn create_topic(&mut self, topic: &str, partitions: u32) -> Response {
        self.call(&Request::CreateTopic(CreateTopicRequest {
            legacy_layout: false,
            min_insync_replicas: Setting::Default,
            topic: topic.into(),
            partitions,
            retention_ms: Setting::Default,
            retention_bytes: Setting::Default,
            segment_bytes: Setting::Default,
            replication_factor: 0,
        }))
    }

    /// Sends a group request, retrying while the coordinator loads its offsets (in a
    /// cluster also while the offsets topic is created), for up to 30 s.
    pub fn group_call(&mut self, group: &str, op: &GroupOp) -> Response {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.call(&Request::Group(GroupRequest::new(group, op.clone())));
            match &answer {
                Response::Error { error, .. }
                    if error.code == ErrorCode::CoordinatorLoadInProgress
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return answer,
            }
        }
    }

    /// Commits `offset` for `topic`'s `partition` as `group` (no member: a simple consumer).
    pub fn commit(&mut self, group: &str, topic: &str, partition: u32, offset: i64) {
        let op = GroupOp::Commit {
            member: group::MemberRef {
                member_id: String::new(),
                instance_id: None,
                generation: -1,
            },
            offsets: vec![group::CommitOffset {
                topic: topic.into(),
                partition,
                offset,
                leader_epoch: -1,
                metadata: String::new(),
            }],
        };
        assert_eq!(
            self.group_call(group, &op),
            Response::Group(GroupResponse::Done)
        );
    }

    /// The offsets `group` committed, as (partition, offset).
    pub fn committed(&mut self, group: &str) -> Vec<(u32, i64)> {
        match self.group_call(group, &GroupOp::FetchOffsets(None)) {
            Response::Group(GroupResponse::Offsets(offsets)) => offsets
                .into_iter()
                .map(|offset| (offset.partition, offset.offset))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    pub fn metadata(&mut self) -> MetadataResponse {
        match self.call(&Request::Metadata(MetadataRequest {
            placement: false,
            settings: false,
            topics: vec![],
            racks: false,
        })) {
            Response::Metadata(metadata) => metadata,
            other => panic!("metadata failed: {other:?}"),
        }
    }

    pub fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        values: &[&[u8]],
        durability: Durability,
    ) -> Response {
        self.call(&produce_request(topic, partition, values, durability))
    }

    pub fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_wait_ms: u32,
    ) -> Response {
        self.call(&Request::Fetch(FetchRequest {
            topic: topic.into(),
            partition: PartitionId(partition),
            offset,
            max_bytes: 1 << 20,
            max_wait_ms,
            min_bytes: 1,
            epochs: ReadEpochs::default(),
        }))
    }
}

/// Milliseconds since the epoch now: records carry the time they are made, so retention by
/// time (7 days by default) does not delete them under the test.
pub fn now_ms() -> i64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(elapsed.as_millis()).unwrap()
}

pub fn batch(values: &[&[u8]]) -> bytes::Bytes {
    batch_of(BatchBuilder::new(), values)
}

/// A batch of an idempotent producer: `producer` id, epoch 0, first sequence `sequence`.
pub fn idempotent_batch(values: &[&[u8]], producer: i64, sequence: i32) -> bytes::Bytes {
    let builder = BatchBuilder::new().producer(spate_format::ProducerFields {
        producer_id: producer,
        producer_epoch: 0,
        base_sequence: sequence,
    });
    batch_of(builder, values)
}

fn batch_of(mut builder: BatchBuilder, values: &[&[u8]]) -> bytes::Bytes {
    let timestamp = now_ms();
    for value in values {
        builder
            .push(&Record {
                timestamp,
                value: Some(value),
                ..Record::default()
            })
            .unwrap();
    }
    bytes::Bytes::from(builder.finish().unwrap())
}

pub fn produce_request(
    topic: &str,
    partition: u32,
    values: &[&[u8]],
    durability: Durability,
) -> Request {
    Request::Produce(ProduceRequest {
        topic: topic.into(),
        partition: PartitionId(partition),
        durability,
        batch: batch(values),
    })
}

/// The values of every record in fetched bytes, with their offsets.
pub fn records(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for batch in spate_format::batches(bytes) {
        let batch = batch.unwrap();
        for record in batch.records() {
            let record = record.unwrap();
            out.push((
                batch.base_offset().0 + u64::from(record.offset_delta),
                record.value.unwrap_or_default().to_vec(),
            ));
        }
    }
    out
}

/// The endpoint of the shard that owns a partition.
pub fn owner(metadata: &MetadataResponse, topic: &str, partition: u32) -> SocketAddr {
    let topic = metadata.topics.iter().find(|t| t.name == topic).unwrap();
    let shard = topic.partitions[partition as usize].shard;
    metadata.shards[usize::from(shard.0)]
        .endpoint
        .parse()
        .unwrap()
}
