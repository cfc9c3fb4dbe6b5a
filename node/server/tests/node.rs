//! In-process tests of the node: real glommio shards, real files under `target/`, real TCP on
//! loopback.

#![allow(clippy::cast_possible_truncation)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use spate_proto::*;

#[test]
fn produce_and_fetch_round_trip_across_shards_and_partitions() {
    let dir = data_dir("round-trip");
    let node = start(&dir, 2);
    let mut admin = Client::connect(node.endpoints[1]);
    assert!(matches!(
        admin.create_topic("events", 4),
        Response::CreateTopic(_)
    ));
    assert!(matches!(
        admin.create_topic("events", 4),
        Response::Error {
            error: ErrorResponse {
                code: ErrorCode::TopicAlreadyExists,
                ..
            },
            ..
        }
    ));
    let metadata = admin.metadata();
    assert_eq!(metadata.shards.len(), 2);
    // The node's topics: this one and the internal offsets topic.
    assert_eq!(metadata.topics.len(), 2);
    let topic = metadata.topics.iter().find(|t| t.name == "events").unwrap();
    assert_eq!(topic.partitions.len(), 4);
    let shards_used: std::collections::BTreeSet<u16> =
        topic.partitions.iter().map(|p| p.shard.0).collect();
    assert_eq!(shards_used.len(), 2, "partitions spread over both shards");
    for partition in 0..4u32 {
        let mut client = Client::connect(owner(&metadata, "events", partition));
        for round in 0..3u8 {
            let value = [partition as u8, round];
            match client.produce("events", partition, &[&value, b"second"], Durability::Fsync) {
                Response::Produce(produced) => {
                    assert_eq!(produced.base_offset, u64::from(round) * 2);
                }
                other => panic!("produce failed: {other:?}"),
            }
        }
        match client.fetch("events", partition, 0, 0) {
            Response::Fetch(fetched) => {
                assert_eq!(fetched.high_watermark, 6);
                let values = records(&fetched.records);
                assert_eq!(values.len(), 6);
                assert_eq!(values[2], (2, vec![partition as u8, 1]));
                assert_eq!(values[3], (3, b"second".to_vec()));
            }
            other => panic!("fetch failed: {other:?}"),
        }
        match client.fetch("events", partition, 4, 0) {
            Response::Fetch(fetched) => assert_eq!(records(&fetched.records)[0].0, 4),
            other => panic!("fetch failed: {other:?}"),
        }
    }
    node.shutdown();
}

#[test]
fn a_request_for_another_shards_partition_names_the_owner() {
    let dir = data_dir("not-owner");
    let node = start(&dir, 2);
    let mut client = Client::connect(node.endpoints[0]);
    client.create_topic("t", 8);
    let metadata = client.metadata();
    let partition = metadata
        .topics
        .iter()
        .find(|t| t.name == "t")
        .unwrap()
        .partitions
        .iter()
        .find(|p| p.shard.0 == 1)
        .unwrap()
        .partition
        .0;
    match client.produce("t", partition, &[b"x"], Durability::Fsync) {
        Response::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::NotOwner);
            assert_eq!(
                error.detail,
                ErrorDetail::NotOwner {
                    shard: ShardId(1),
                    endpoint: node.endpoints[1].to_string()
                }
            );
        }
        other => panic!("expected NotOwner, got {other:?}"),
    }
    // Replication frames reach the owning shard, which replicates nothing without a cluster.
    let own = metadata
        .topics
        .iter()
        .find(|t| t.name == "t")
        .unwrap()
        .partitions
        .iter()
        .find(|p| p.shard.0 == 0)
        .unwrap()
        .partition;
    let replica_fetch = Request::ReplicaFetch(ReplicaFetchRequest {
        topic: "t".into(),
        partition: own,
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
    let progress = Request::ReplicaProgress(ReplicaProgressRequest {
        topic: "t".into(),
        partition: own,
        topic_id: 1,
        replica: 2,
        storage_id: 3,
        leader_epoch: 1,
        session: 1,
        incarnation: 1,
        log_end: 0,
        durable_end: 0,
    });
    for request in [replica_fetch, progress] {
        match client.call(&request) {
            Response::Error { error, .. } => {
                assert_eq!(error.code, ErrorCode::ReplicaNotAvailable, "{error}");
                assert!(error.message.contains("not replicated"), "{error}");
            }
            other => panic!("expected ReplicaNotAvailable, got {other:?}"),
        }
    }
    // A single node describes itself as the one member of no cluster, with its shards.
    match client.call(&Request::DescribeCluster(DescribeClusterRequest {
        partitions: true,
        moves: true,
        racks: true,
    })) {
        Response::DescribeCluster(cluster) => {
            assert_eq!((cluster.cluster.as_str(), cluster.controller), ("", None));
            assert_eq!(cluster.members.len(), 1);
            let me = &cluster.members[0];
            assert_eq!(me.node, cluster.node.unwrap_or(0));
            assert_eq!(me.session, "");
            assert_eq!(me.storage.len(), 16, "{me:?}");
            let shards: Vec<String> = node.endpoints.iter().map(ToString::to_string).collect();
            assert_eq!(me.shards, shards);
            assert!(me.since_ms > 1_700_000_000_000, "{me:?}");
            // Its partitions (the offsets topic's at least), all served by it.
            let health = cluster.partitions.unwrap();
            assert!(health.total >= OFFSETS_PARTITIONS, "{health:?}");
            assert_eq!((health.under_replicated, health.offline), (0, 0));
            // A single node moves nothing between nodes: no moves, even when asked.
            assert_eq!(cluster.moves, None);
        }
        other => panic!("expected DescribeCluster, got {other:?}"),
    }
    assert!(matches!(
        client.produce("missing", 0, &[b"x"], Durability::Fsync),
        Response::Error {
            error: ErrorResponse {
                code: ErrorCode::UnknownTopic,
                ..
            },
            ..
        }
    ));
    assert!(matches!(
        client.produce("t", 99, &[b"x"], Durability::Fsync),
        Response::Error {
            error: ErrorResponse {
                code: ErrorCode::UnknownPartition,
                ..
            },
            ..
        }
    ));
    node.shutdown();
}

#[test]
fn long_poll_wakes_on_append_and_times_out_at_max_wait() {
    let dir = data_dir("long-poll");
    let node = start(&dir, 1);
    let mut admin = Client::connect(node.endpoints[0]);
    admin.create_topic("t", 1);
    // Times out empty.
    let started = Instant::now();
    match admin.fetch("t", 0, 0, 300) {
        Response::Fetch(fetched) => assert!(fetched.records.is_empty()),
        other => panic!("{other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290),
        "answered after {waited:?}, before max_wait"
    );
    // Wakes on append: a fetch waiting up to 30 s answers as soon as a record is durable.
    let mut consumer = Client::connect(node.endpoints[0]);
    let waiting = consumer.send(&Request::Fetch(FetchRequest {
        topic: "t".into(),
        partition: PartitionId(0),
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 30_000,
        min_bytes: 1,
        epochs: ReadEpochs::default(),
    }));
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert!(matches!(
        admin.produce("t", 0, &[b"wake"], Durability::Fsync),
        Response::Produce(_)
    ));
    let (id, response) = consumer.receive().unwrap();
    assert_eq!(id, waiting);
    match response {
        Response::Fetch(fetched) => {
            assert_eq!(records(&fetched.records), vec![(0, b"wake".to_vec())]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the parked fetch was not woken by the append"
    );
    node.shutdown();
}

/// The parked-fetch limit (`fetch_waiters`) is the log's: one more long poll than it allows
/// gets `Busy` at once, and the parked ones are all woken by one durable append.
#[test]
fn parked_fetches_beyond_the_limit_get_busy_and_the_rest_wake_together() {
    let dir = data_dir("fetch-waiters");
    let mut config = config(&dir, 1);
    config.fetch_waiters = 2;
    let node = spate_node::start(config).unwrap();
    let mut admin = Client::connect(node.endpoints[0]);
    admin.create_topic("t", 1);
    let park = |client: &mut Client| {
        client.send(&Request::Fetch(FetchRequest {
            topic: "t".into(),
            partition: PartitionId(0),
            offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 30_000,
            min_bytes: 1,
            epochs: ReadEpochs::default(),
        }))
    };
    let mut parked: Vec<Client> = (0..2).map(|_| Client::connect(node.endpoints[0])).collect();
    let ids: Vec<u64> = parked.iter_mut().map(park).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = Client::connect(node.endpoints[0]);
    park(&mut third);
    match third.receive().unwrap().1 {
        Response::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::Busy, "{error:?}");
            assert!(error.message.contains("(the limit)"), "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    let started = Instant::now();
    assert!(matches!(
        admin.produce("t", 0, &[b"wake"], Durability::Fsync),
        Response::Produce(_)
    ));
    for (client, id) in parked.iter_mut().zip(ids) {
        let (answered, response) = client.receive().unwrap();
        assert_eq!(answered, id);
        match response {
            Response::Fetch(fetched) => {
                assert_eq!(records(&fetched.records), vec![(0, b"wake".to_vec())]);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    node.shutdown();
}

#[test]
fn durability_levels_acknowledge_and_become_visible() {
    let dir = data_dir("durability");
    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    client.create_topic("t", 1);
    for (index, durability) in [Durability::None, Durability::Write, Durability::Fsync]
        .into_iter()
        .enumerate()
    {
        match client.produce("t", 0, &[b"v"], durability) {
            Response::Produce(produced) => assert_eq!(produced.base_offset, index as u64),
            other => panic!("{other:?}"),
        }
    }
    // The fsync acknowledgement covers everything before it: all three are visible.
    match client.fetch("t", 0, 0, 0) {
        Response::Fetch(fetched) => {
            assert_eq!(fetched.high_watermark, 3);
            assert_eq!(records(&fetched.records).len(), 3);
        }
        other => panic!("{other:?}"),
    }
    // `none` alone becomes visible within the flush interval.
    client.produce("t", 0, &[b"later"], Durability::None);
    match client.fetch("t", 0, 3, 2000) {
        Response::Fetch(fetched) => {
            assert_eq!(records(&fetched.records), vec![(3, b"later".to_vec())]);
        }
        other => panic!("{other:?}"),
    }
    // Offsets out of range carry the valid range.
    match client.fetch("t", 0, 99, 0) {
        Response::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::OffsetOutOfRange);
            assert_eq!(
                error.detail,
                ErrorDetail::OffsetRange {
                    log_start_offset: 0,
                    high_watermark: 4
                }
            );
        }
        other => panic!("{other:?}"),
    }
    let list =
        |client: &mut Client, spec| match client.call(&Request::ListOffsets(ListOffsetsRequest {
            topic: "t".into(),
            partition: PartitionId(0),
            spec,
            epochs: ReadEpochs::default(),
        })) {
            Response::ListOffsets(listed) => listed.offset,
            other => panic!("{other:?}"),
        };
    assert_eq!(list(&mut client, OffsetSpec::Earliest), 0);
    assert_eq!(list(&mut client, OffsetSpec::Latest), 4);
    assert_eq!(list(&mut client, OffsetSpec::Timestamp(0)), 0);
    assert_eq!(list(&mut client, OffsetSpec::Timestamp(i64::MAX)), 4);
    node.shutdown();
}

#[test]
fn garbage_and_oversized_frames_get_errors_and_other_connections_keep_working() {
    let dir = data_dir("garbage");
    let node = start(&dir, 1);
    let mut good = Client::connect(node.endpoints[0]);
    good.create_topic("t", 1);
    // An oversized length: an error frame, then the connection closes.
    let mut bad = Client::connect(node.endpoints[0]);
    let mut oversized = vec![0u8; 16];
    oversized[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    oversized[4] = 4;
    oversized[6] = 1;
    bad.send_raw(&oversized).unwrap();
    match bad.receive() {
        Some((_, Response::Error { error, .. })) => {
            assert_eq!(error.code, ErrorCode::FrameTooLarge);
        }
        other => panic!("{other:?}"),
    }
    assert!(bad.receive().is_none(), "the connection is closed");
    // A well-framed body of garbage: an error, the connection stays usable.
    let mut messy = Client::connect(node.endpoints[0]);
    let head = FrameHead {
        api_key: 4,
        version: 1,
        flags: 0,
        correlation_id: 77,
        body_length: 5,
    };
    let mut frame = head.encode().to_vec();
    frame.extend_from_slice(&[1, 2, 3, 4, 5]);
    messy.send_raw(&frame).unwrap();
    match messy.receive() {
        Some((77, Response::Error { error, .. })) => assert_eq!(error.code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    // A batch with a broken CRC is refused; nothing is stored.
    let mut request = produce_request("t", 0, &[b"x"], Durability::Fsync);
    if let Request::Produce(produce) = &mut request {
        let mut bytes = produce.batch.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        produce.batch = bytes.into();
    }
    match messy.call(&request) {
        Response::Error { error, .. } => assert_eq!(error.code, ErrorCode::InvalidBatch),
        other => panic!("{other:?}"),
    }
    // A truncated frame, then the peer goes away: no crash.
    let mut truncated = Client::connect(node.endpoints[0]);
    truncated
        .send_raw(&produce_request("t", 0, &[b"x"], Durability::Fsync).to_frame(1)[..20])
        .unwrap();
    drop(truncated);
    assert!(
        matches!(good.produce("t", 0, &[b"still"], Durability::Fsync), Response::Produce(p) if p.base_offset == 0)
    );
    node.shutdown();
}

#[test]
fn restart_with_another_shard_count_serves_all_data() {
    let dir = data_dir("reshard");
    let node = start(&dir, 2);
    let mut client = Client::connect(node.endpoints[0]);
    client.create_topic("t", 6);
    let metadata = client.metadata();
    for partition in 0..6 {
        let mut owner_client = Client::connect(owner(&metadata, "t", partition));
        let value = [partition as u8; 3];
        assert!(matches!(
            owner_client.produce("t", partition, &[&value], Durability::Fsync),
            Response::Produce(_)
        ));
    }
    node.shutdown();
    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    let metadata = client.metadata();
    assert!(metadata
        .topics
        .iter()
        .all(|topic| topic.partitions.iter().all(|p| p.shard.0 == 0)));
    for partition in 0..6 {
        match client.fetch("t", partition, 0, 0) {
            Response::Fetch(fetched) => assert_eq!(
                records(&fetched.records),
                vec![(0, vec![partition as u8; 3])]
            ),
            other => panic!("{other:?}"),
        }
    }
    node.shutdown();
    let node = start(&dir, 3);
    let mut client = Client::connect(node.endpoints[2]);
    let metadata = client.metadata();
    for partition in 0..6 {
        let mut owner_client = Client::connect(owner(&metadata, "t", partition));
        match owner_client.fetch("t", partition, 0, 0) {
            Response::Fetch(fetched) => assert_eq!(fetched.high_watermark, 1),
            other => panic!("{other:?}"),
        }
    }
    node.shutdown();
}

fn segment_files(dir: &std::path::Path, topic: &str, partition: u32) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> =
        std::fs::read_dir(dir.join("topics").join(format!("{topic}-{partition}")))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .collect();
    files.sort();
    files
}

#[test]
fn offline_damage_truncates_a_garbage_tail_and_fences_only_the_corrupt_partition() {
    let dir = data_dir("offline-damage");
    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    assert!(matches!(
        client.call(&Request::CreateTopic(CreateTopicRequest {
            legacy_layout: false,
            min_insync_replicas: Setting::Default,
            topic: "c".into(),
            partitions: 2,
            retention_ms: Setting::Default,
            retention_bytes: Setting::Default,
            segment_bytes: Setting::Value(64 << 10),
            replication_factor: 0,
        })),
        Response::CreateTopic(_)
    ));
    let value = vec![7u8; 3000];
    for _ in 0..60 {
        assert!(matches!(
            client.produce("c", 0, &[&value, &value], Durability::Fsync),
            Response::Produce(_)
        ));
    }
    for round in 0..5u8 {
        assert!(matches!(
            client.produce("c", 1, &[&[round; 10]], Durability::Fsync),
            Response::Produce(_)
        ));
    }
    node.shutdown();

    // Partition 1: garbage after the last batch of its active segment.
    let active = segment_files(&dir, "c", 1).pop().unwrap();
    let mut bytes = std::fs::read(&active).unwrap();
    let (_, end) = spate_format::segment::scan_segment(&bytes, 0, None);
    let end = end.position as usize;
    bytes[end..end + 100].fill(0xab);
    std::fs::write(&active, &bytes).unwrap();
    // Partition 0: one flipped byte inside the last batch of its first, sealed segment.
    let sealed_segments = segment_files(&dir, "c", 0);
    assert!(sealed_segments.len() >= 3, "partition 0 rolled");
    let sealed = &sealed_segments[0];
    let mut bytes = std::fs::read(sealed).unwrap();
    let (batches, _) = spate_format::segment::scan_segment(&bytes, 0, None);
    let last = batches.last().unwrap();
    let flip_at = (last.position + 100) as usize;
    bytes[flip_at] ^= 0x04;
    std::fs::write(sealed, &bytes).unwrap();

    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    // The garbage tail is gone; every acknowledged record of partition 1 is there and it
    // takes writes again at the next offset.
    match client.fetch("c", 1, 0, 0) {
        Response::Fetch(fetched) => {
            assert_eq!(fetched.high_watermark, 5);
            assert_eq!(records(&fetched.records).len(), 5);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(client.produce("c", 1, &[b"after"], Durability::Fsync), Response::Produce(p) if p.base_offset == 5)
    );
    // Partition 0 is fenced: writes refused with the segment and position named...
    match client.produce("c", 0, &[b"x"], Durability::Fsync) {
        Response::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::PartitionFenced);
            assert!(
                error.message.contains("00000000000000000000.log"),
                "{}",
                error.message
            );
        }
        other => panic!("expected a fence, got {other:?}"),
    }
    // ...and the records below the damage are still served.
    let high = match client.fetch("c", 0, 0, 0) {
        Response::Fetch(fetched) => {
            assert_eq!(records(&fetched.records)[0].0, 0);
            assert!(fetched.high_watermark <= last.base_offset.0);
            fetched.high_watermark
        }
        other => panic!("{other:?}"),
    };
    // A long poll at the end of a fenced partition is answered at once: nothing more will
    // become visible there, so it neither parks nor spins until its wait is over.
    let started = Instant::now();
    match client.fetch("c", 0, high, 20_000) {
        Response::Fetch(fetched) => assert!(fetched.records.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a long poll on a fenced partition waited {:?}",
        started.elapsed()
    );
    node.shutdown();
}

#[test]
fn retention_deletes_old_segments_on_its_schedule() {
    let dir = data_dir("retention");
    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    assert!(matches!(
        client.call(&Request::CreateTopic(CreateTopicRequest {
            legacy_layout: false,
            min_insync_replicas: Setting::Default,
            topic: "r".into(),
            partitions: 1,
            retention_ms: Setting::Unlimited,
            retention_bytes: Setting::Value(128 << 10),
            segment_bytes: Setting::Value(64 << 10),
            replication_factor: 0,
        })),
        Response::CreateTopic(_)
    ));
    let value = vec![1u8; 4000];
    for _ in 0..100 {
        assert!(matches!(
            client.produce("r", 0, &[&value], Durability::Fsync),
            Response::Produce(_)
        ));
    }
    // The test node checks retention every 100 ms; a segment still being sealed waits for
    // the next pass. Wait until the log keeps about its limit: 128 KiB of 64 KiB segments,
    // plus the active one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (log_start, files) = loop {
        let listed = client.call(&Request::ListOffsets(ListOffsetsRequest {
            topic: "r".into(),
            partition: PartitionId(0),
            spec: OffsetSpec::Earliest,
            epochs: ReadEpochs::default(),
        }));
        let Response::ListOffsets(listed) = listed else {
            panic!("{listed:?}")
        };
        let files = segment_files(&dir, "r", 0);
        // The log start moves when the shard decides a deletion; the file goes when the
        // unlink completes, a moment later: wait for both.
        let settled = files.first().is_some_and(|first| {
            first.file_name().and_then(|name| name.to_str())
                == Some(format!("{:020}.log", listed.offset).as_str())
        });
        if (listed.offset > 0 && files.len() <= 4 && settled) || Instant::now() > deadline {
            break (listed.offset, files);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(log_start > 0, "retention never ran");
    assert!(files.len() <= 4, "{} segments left", files.len());
    // Whole segments went, oldest first: the first file left starts at the log start.
    let first = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(first, format!("{log_start:020}.log"));
    match client.fetch("r", 0, 0, 0) {
        Response::Error { error, .. } => assert_eq!(error.code, ErrorCode::OffsetOutOfRange),
        other => panic!("{other:?}"),
    }
    match client.fetch("r", 0, log_start, 0) {
        Response::Fetch(fetched) => assert_eq!(records(&fetched.records)[0].0, log_start),
        other => panic!("{other:?}"),
    }
    node.shutdown();
}

/// A fresh node's first files are empty segments; fetches that miss the tail cache must still
/// read from disk (glommio's polled-I/O probe misjudged such devices when its first file was
/// empty, and every disk read then failed with EOPNOTSUPP).
#[test]
fn fetches_beyond_the_tail_cache_read_from_disk_on_a_fresh_node() {
    let dir = data_dir("disk-reads");
    let mut config = config(&dir, 1);
    config.tail_cache_bytes = 0;
    let node = spate_node::start(config).unwrap();
    let mut client = Client::connect(node.endpoints[0]);
    assert!(matches!(
        client.create_topic("cold", 1),
        Response::CreateTopic(_)
    ));
    let value = vec![7u8; 100_000];
    for round in 0..20u64 {
        match client.produce("cold", 0, &[&value, &value], Durability::Fsync) {
            Response::Produce(produced) => assert_eq!(produced.base_offset, round * 2),
            other => panic!("produce failed: {other:?}"),
        }
    }
    let mut offset = 0;
    while offset < 40 {
        match client.fetch("cold", 0, offset, 0) {
            Response::Fetch(fetched) => {
                let values = records(&fetched.records);
                assert!(!values.is_empty());
                for (at, bytes) in &values {
                    assert_eq!(*at, offset);
                    assert_eq!(bytes, &value);
                    offset += 1;
                }
            }
            other => panic!("fetch from disk failed: {other:?}"),
        }
    }
    node.shutdown();
}

/// DeleteRecords moves the log start, answers once the move is durable, deletes the whole
/// segments below it, and the move survives a restart.
#[test]
fn delete_records_moves_the_log_start_durably_and_frees_whole_segments() {
    let dir = data_dir("delete-records");
    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    assert!(matches!(
        client.call(&Request::CreateTopic(CreateTopicRequest {
            legacy_layout: false,
            min_insync_replicas: Setting::Default,
            topic: "d".into(),
            partitions: 1,
            retention_ms: Setting::Unlimited,
            retention_bytes: Setting::Unlimited,
            segment_bytes: Setting::Value(64 << 10),
            replication_factor: 0,
        })),
        Response::CreateTopic(_)
    ));
    let value = vec![3u8; 4000];
    for _ in 0..60 {
        assert!(matches!(
            client.produce("d", 0, &[&value], Durability::Fsync),
            Response::Produce(_)
        ));
    }
    let delete = |client: &mut Client, offset: u64| {
        client.call(&Request::DeleteRecords(DeleteRecordsRequest {
            topic: "d".into(),
            partition: PartitionId(0),
            offset,
        }))
    };
    let earliest =
        |client: &mut Client| match client.call(&Request::ListOffsets(ListOffsetsRequest {
            topic: "d".into(),
            partition: PartitionId(0),
            spec: OffsetSpec::Earliest,
            epochs: ReadEpochs::default(),
        })) {
            Response::ListOffsets(listed) => listed.offset,
            other => panic!("{other:?}"),
        };
    let before = segment_files(&dir, "d", 0);
    assert!(before.len() >= 3, "{before:?}");

    assert_eq!(
        delete(&mut client, 30),
        Response::DeleteRecords(DeleteRecordsResponse {
            log_start_offset: 30
        })
    );
    assert_eq!(earliest(&mut client), 30);
    let partition_dir = dir.join("topics").join("d-0");
    assert!(partition_dir.join(format!("{:020}.start", 30)).exists());
    match client.fetch("d", 0, 29, 0) {
        Response::Error { error, .. } => assert_eq!(error.code, ErrorCode::OffsetOutOfRange),
        other => panic!("{other:?}"),
    }
    match client.fetch("d", 0, 30, 0) {
        Response::Fetch(fetched) => {
            assert_eq!(fetched.log_start_offset, 30);
            assert_eq!(records(&fetched.records)[0].0, 30);
        }
        other => panic!("{other:?}"),
    }
    // Below the log start: answered at once with the log start. Past the end: refused.
    assert_eq!(
        delete(&mut client, 5),
        Response::DeleteRecords(DeleteRecordsResponse {
            log_start_offset: 30
        })
    );
    match delete(&mut client, 61) {
        Response::Error { error, .. } => assert_eq!(error.code, ErrorCode::OffsetOutOfRange),
        other => panic!("{other:?}"),
    }
    // The segments wholly below the log start go (the one holding it stays).
    let deadline = Instant::now() + Duration::from_secs(10);
    let files = loop {
        let files = segment_files(&dir, "d", 0);
        let first: u64 = files[0]
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse().ok())
            .unwrap();
        let second: u64 = files.get(1).map_or(u64::MAX, |file| {
            file.file_stem().unwrap().to_str().unwrap().parse().unwrap()
        });
        if (first <= 30 && second > 30) || Instant::now() > deadline {
            break files;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(files.len() < before.len(), "{files:?}");
    node.shutdown();

    // The move survives a restart; -1 (u64::MAX here) deletes up to the high watermark.
    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    assert_eq!(earliest(&mut client), 30);
    assert_eq!(
        delete(&mut client, DELETE_RECORDS_TO_HIGH_WATERMARK),
        Response::DeleteRecords(DeleteRecordsResponse {
            log_start_offset: 60
        })
    );
    match client.produce("d", 0, &[&value], Durability::Fsync) {
        Response::Produce(produced) => {
            assert_eq!(produced.base_offset, 60);
            assert_eq!(produced.log_start_offset, 60);
        }
        other => panic!("{other:?}"),
    }
    node.shutdown();
    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    assert_eq!(earliest(&mut client), 60);
    // One marker is left: the newest.
    let markers: Vec<_> = std::fs::read_dir(&partition_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "start"))
        .collect();
    assert_eq!(
        markers,
        vec![partition_dir.join(format!("{:020}.start", 60))]
    );
    node.shutdown();
}

/// FindRecord: the first record at or after a time, and the first with the newest durable
/// timestamp (Kafka's ListOffsets -3), inside a batch, across a restart and after the log
/// start moved past it.
#[test]
fn find_record_by_time_and_the_newest_time() {
    use spate_format::{BatchBuilder, Record};
    let dir = data_dir("max-timestamp");
    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    client.create_topic("m", 1);
    let find =
        |client: &mut Client, target| match client.call(&Request::FindRecord(FindRecordRequest {
            topic: "m".into(),
            partition: PartitionId(0),
            target,
            epochs: ReadEpochs::default(),
        })) {
            Response::FindRecord(found) => (found.offset, found.timestamp),
            other => panic!("{other:?}"),
        };
    let newest = |client: &mut Client| find(client, RecordTarget::Newest);
    assert_eq!(
        newest(&mut client),
        (0, -1),
        "empty: the high watermark, no time"
    );
    let now = now_ms();
    // Batches of three records; the newest time is the middle record of the second batch
    // (offset 4), and a later record has the same time (offset 7).
    for times in [
        [now - 30, now - 10, now - 20],
        [now - 5, now, now - 1],
        [now - 3, now, now - 2],
    ] {
        let mut builder = BatchBuilder::new();
        for timestamp in times {
            builder
                .push(&Record {
                    timestamp,
                    value: Some(b"v"),
                    ..Record::default()
                })
                .unwrap();
        }
        let batch = bytes::Bytes::from(builder.finish().unwrap());
        assert!(matches!(
            client.call(&Request::Produce(ProduceRequest {
                topic: "m".into(),
                partition: PartitionId(0),
                durability: Durability::Fsync,
                batch,
            })),
            Response::Produce(_)
        ));
    }
    assert_eq!(newest(&mut client), (4, now));
    // By time: the first record at or after it, with its own time.
    assert_eq!(
        find(&mut client, RecordTarget::AtOrAfter(now - 4)),
        (4, now)
    );
    assert_eq!(
        find(&mut client, RecordTarget::AtOrAfter(now - 15)),
        (1, now - 10)
    );
    assert_eq!(
        find(&mut client, RecordTarget::AtOrAfter(now + 1)),
        (9, -1),
        "none: the high watermark, no time"
    );
    node.shutdown();
    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    assert_eq!(newest(&mut client), (4, now), "the same after recovery");
    // Once the log starts after it, the next record with that time is the answer.
    assert!(matches!(
        client.call(&Request::DeleteRecords(DeleteRecordsRequest {
            topic: "m".into(),
            partition: PartitionId(0),
            offset: 5,
        })),
        Response::DeleteRecords(_)
    ));
    assert_eq!(newest(&mut client), (7, now));
    node.shutdown();
}

/// The offsets log stays bounded: once more than twice max(live offsets,
/// `offsets_snapshot_records`) records were appended, the live offsets are written again and
/// the log start moves to them; a restart replays only that and finds every commit.
#[test]
fn the_offsets_log_is_compacted_by_snapshots_and_replays_after_a_restart() {
    let dir = data_dir("offsets-compaction");
    let config = || {
        let mut config = config(&dir, 2);
        config.offsets_snapshot_records = 20;
        config
    };
    let node = spate_node::start(config()).unwrap();
    let mut admin = Client::connect(node.endpoints[0]);
    let metadata = admin.metadata();
    let partition = group::group_partition("g").0;
    let mut client = Client::connect(owner(&metadata, OFFSETS_TOPIC, partition));
    for offset in 1..=200 {
        client.commit("g", "t", offset as u32 % 4, offset);
    }
    let expected = vec![(0, 200), (1, 197), (2, 198), (3, 199)];
    assert_eq!(client.committed("g"), expected);
    let log =
        |client: &mut Client, spec| match client.call(&Request::ListOffsets(ListOffsetsRequest {
            topic: OFFSETS_TOPIC.into(),
            partition: PartitionId(partition),
            spec,
            epochs: ReadEpochs::default(),
        })) {
            Response::ListOffsets(listed) => listed.offset,
            other => panic!("{other:?}"),
        };
    // 200 records appended, 4 live: compacted, so at most twice max(live, 20) records after
    // the 4 live ones written again (where the last compaction falls depends on when the
    // coordinator's tick ran: right after the 200th commit, the log holds the 4 live ones
    // alone; a compaction that ran earlier leaves up to 40 records after them).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (start, end) = (
            log(&mut client, OffsetSpec::Earliest),
            log(&mut client, OffsetSpec::Latest),
        );
        if start > 0 && end - start <= 2 * 20 + 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted: log start {start}, end {end}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(client.committed("g"), expected);
    node.shutdown();
    let node = spate_node::start(config()).unwrap();
    let metadata = Client::connect(node.endpoints[0]).metadata();
    let mut client = Client::connect(owner(&metadata, OFFSETS_TOPIC, partition));
    assert_eq!(client.committed("g"), expected);
    // Clients cannot write or trim the internal topic.
    assert!(matches!(
        client.produce(OFFSETS_TOPIC, partition, &[b"x"], Durability::Fsync),
        Response::Error { error, .. } if error.code == ErrorCode::InvalidRequest
    ));
    node.shutdown();
}

/// `min.insync.replicas` on a single node (one replica in sync): a topic created with 2
/// refuses `fsync` produces before appending (`NotEnoughReplicas`, retriable) and takes
/// `write` ones; the setting is shown when asked for, kept across a restart, changed back
/// with `AlterTopic`, and values outside 1 to 65,535 are refused.
#[test]
fn min_insync_replicas_refuses_fsync_writes_a_single_node_cannot_replicate() {
    let dir = data_dir("min-insync");
    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    let create = |min_insync_replicas| {
        Request::CreateTopic(CreateTopicRequest {
            legacy_layout: false,
            topic: "t".into(),
            partitions: 1,
            retention_ms: Setting::Default,
            retention_bytes: Setting::Default,
            segment_bytes: Setting::Default,
            replication_factor: 0,
            min_insync_replicas,
        })
    };
    for invalid in [
        Setting::Value(0),
        Setting::Unlimited,
        Setting::Value(65_536),
    ] {
        match client.call(&create(invalid)) {
            Response::Error { error, .. } => {
                assert_eq!(error.code, ErrorCode::InvalidConfig, "{error:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        client.call(&create(Setting::Value(2))),
        Response::CreateTopic(_)
    ));
    let shown = |client: &mut Client| match client.call(&Request::Metadata(MetadataRequest {
        placement: false,
        topics: vec!["t".into()],
        settings: true,
        racks: false,
    })) {
        Response::Metadata(metadata) => {
            assert!(metadata.settings);
            metadata.topics[0].min_insync_replicas
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(shown(&mut client), Setting::Value(2));
    let refused = |client: &mut Client| match client.produce("t", 0, &[b"v"], Durability::Fsync) {
        Response::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::NotEnoughReplicas, "{error:?}");
            assert!(error.code.is_retriable());
            assert!(
                error.message.contains("min.insync.replicas is 2"),
                "{error:?}"
            );
        }
        other => panic!("{other:?}"),
    };
    refused(&mut client);
    // Not appended: the next record takes offset 0.
    match client.produce("t", 0, &[b"w"], Durability::Write) {
        Response::Produce(produced) => assert_eq!(produced.base_offset, 0),
        other => panic!("{other:?}"),
    }
    node.shutdown();

    let node = start(&dir, 1);
    let mut client = Client::connect(node.endpoints[0]);
    assert_eq!(
        shown(&mut client),
        Setting::Value(2),
        "kept across a restart"
    );
    refused(&mut client);
    // Asked without settings (a client of before): the answer of before.
    let metadata = client.metadata();
    assert!(!metadata.settings);
    let alter = |client: &mut Client, min_insync_replicas| {
        client.call(&Request::AlterTopic(AlterTopicRequest {
            topic: "t".into(),
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
            min_insync_replicas: Some(min_insync_replicas),
            validate_only: false,
        }))
    };
    match alter(&mut client, Setting::Value(0)) {
        Response::Error { error, .. } => assert_eq!(error.code, ErrorCode::InvalidConfig),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        alter(&mut client, Setting::Default),
        Response::AlterTopic(_)
    ));
    assert_eq!(shown(&mut client), Setting::Value(1));
    match client.produce("t", 0, &[b"x"], Durability::Fsync) {
        Response::Produce(produced) => assert_eq!(produced.base_offset, 1),
        other => panic!("{other:?}"),
    }
    node.shutdown();
}
