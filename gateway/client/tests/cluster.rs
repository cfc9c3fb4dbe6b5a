//! The SDK through a gateway in front of a cluster of two real nodes and a real etcd
//! (Debian's `etcd-server`, started here; `.ci/run` installs it): a replicated topic keeps
//! every acknowledged record and keeps taking new ones when its leader's node stops — the
//! gateway refreshes its map from the surviving node and the client retries. Built with the
//! `cluster-tests` feature (`cargo test -p spate-client --features cluster-tests --test
//! cluster`).

#![cfg(feature = "cluster-tests")]

#[path = "../../../node/server/tests/common/etcd.rs"]
mod etcd;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd::EtcdProcess;
use spate_client::Client;
use spate_format::{BatchBuilder, Record};
use spate_proto::{Durability, FetchRequest, PartitionId, Setting};

fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("client-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn batch(value: &str) -> Bytes {
    let mut builder = BatchBuilder::new();
    builder
        .push(&Record {
            timestamp: 1_765_000_000_000,
            value: Some(value.as_bytes()),
            ..Record::default()
        })
        .unwrap();
    Bytes::from(builder.finish().unwrap())
}

fn node(dir: &std::path::Path, etcd: &EtcdProcess, id: u32) -> spate_node::NodeHandle {
    let flags = spate_node::Flags {
        data_dir: Some(dir.to_owned()),
        listen: Some("127.0.0.1:0".into()),
        shards: Some(2),
        node_id: Some(id),
        etcd: Some(etcd.url.clone()),
        session_timeout_ms: Some(3_000),
        ..spate_node::Flags::default()
    };
    spate_node::start(spate_node::NodeConfig::resolve(flags).unwrap()).unwrap()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway in front of the node at `endpoint` (it learns the others from the node's map),
/// and a client of it that sees `members` members.
async fn gateway_and_client(
    dir: &std::path::Path,
    endpoint: String,
    members: usize,
) -> (spate_gateway::Gateway, Client) {
    let flags = spate_gateway::Flags {
        listen: Some("127.0.0.1:0".into()),
        node: Some(endpoint),
        dev_cert_dir: Some(dir.join("tls")),
        ..spate_gateway::Flags::default()
    };
    let gateway = spate_gateway::start(spate_gateway::GatewayConfig::resolve(flags).unwrap())
        .await
        .unwrap();
    let client = Client::connect(gateway.local_addr, &gateway.cert_path, "localhost")
        .await
        .unwrap();
    wait_for("every member", Duration::from_secs(10), async || {
        client
            .describe_cluster()
            .await
            .is_ok_and(|cluster| cluster.members.len() == members)
    })
    .await;
    (gateway, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_topic_keeps_serving_through_the_gateway_when_its_leader_stops() {
    if std::env::var_os("SPATE_TEST_LOG").is_some() {
        spate_node::logging::init("info");
    }
    let dir = data_dir("failover");
    let mut etcd = EtcdProcess::spawn("sdk", &dir);
    etcd.wait_listening();
    let mut nodes = vec![Some(node(&dir.join("141"), &etcd, 141))];
    wait_for("a controller", Duration::from_secs(15), async || {
        nodes[0].as_ref().unwrap().is_controller()
    })
    .await;
    nodes.push(Some(node(&dir.join("142"), &etcd, 142)));
    let endpoint = nodes[1].as_ref().unwrap().endpoints[0].to_string();
    let (gateway, client) = gateway_and_client(&dir, endpoint, 2).await;
    client
        .create_replicated_topic("events", 1, 2, Setting::Default, Setting::Default)
        .await
        .unwrap();
    let mut written = Vec::new();
    for n in 0..30 {
        let value = format!("before {n}");
        assert_eq!(produce_to(&client, "events", &value).await, n);
        written.push(value);
    }
    // The node leading the partition stops.
    let metadata = client.metadata(&["events"]).await.unwrap();
    let shard = metadata.topics[0].partitions[0].shard;
    let endpoint = metadata.shards[usize::from(shard.0)].endpoint.clone();
    let leader = nodes
        .iter()
        .position(|node| {
            node.as_ref()
                .unwrap()
                .endpoints
                .iter()
                .any(|own| own.to_string() == endpoint)
        })
        .expect("the leader is one of the nodes");
    nodes[leader].take().unwrap().shutdown();
    // The other node leads; every acknowledged record is there, and new ones are taken.
    for n in 30..40 {
        let value = format!("after {n}");
        assert_eq!(produce_to(&client, "events", &value).await, n);
        written.push(value);
    }
    assert_eq!(read_all(&client, "events").await, written);
    gateway.close();
    for node in nodes.into_iter().flatten() {
        node.shutdown();
    }
    etcd.stop();
}

/// Where partition 0 of `topic` is, as the node behind the gateway's map shows it.
async fn placement(client: &Client, topic: &str) -> spate_proto::PartitionPlacement {
    let request = spate_proto::Request::Metadata(spate_proto::MetadataRequest {
        topics: vec![topic.to_owned()],
        settings: true,
        placement: true,
        racks: false,
    });
    match client.request(&request).await.unwrap() {
        spate_proto::Response::Metadata(mut metadata) => {
            metadata.topics.remove(0).replicas.remove(0)
        }
        other => panic!("{other:?}"),
    }
}

/// The moves in progress as `spate cluster status` shows them.
async fn moves(client: &Client) -> spate_proto::MovesStatus {
    client.describe_cluster().await.unwrap().moves.unwrap()
}

/// Produces `value` with `fsync` to partition 0 of `topic`, retrying what may be retried.
async fn produce_to(client: &Client, topic: &str, value: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .produce(topic, 0, Durability::Fsync, batch(value))
            .await
        {
            Ok(produced) => return produced.base_offset,
            Err(error) if error.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("produce {value}: {error}"),
        }
    }
}

/// Every value of partition 0 of `topic`, read through the gateway (retrying while its
/// leadership moves).
async fn read_all(client: &Client, topic: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fetched = client
            .fetch(FetchRequest {
                topic: topic.into(),
                partition: PartitionId(0),
                offset: 0,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                min_bytes: 0,
                epochs: spate_proto::ReadEpochs::default(),
            })
            .await;
        match fetched {
            Ok(fetched) => {
                let mut out = Vec::new();
                for batch in spate_format::batches(&fetched.records) {
                    for record in batch.unwrap().records() {
                        let value = record.unwrap().value.unwrap().to_vec();
                        out.push(String::from_utf8(value).unwrap());
                    }
                }
                return out;
            }
            Err(error) if error.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("fetch {topic}: {error}"),
        }
    }
}

/// Partitions move between three real nodes while they take writes (docs/cluster.md, "Moving
/// partitions"): a reassignment held back by its throttle is cancelled and the partition is
/// where it was; a reassignment to the two other nodes adds them, hands the leadership over,
/// and removes the first replica from its node's disk; a preferred-leader election moves the
/// leadership to the first replica; a decommission empties a node. Every acknowledged record
/// is read back after each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_between_nodes_and_nothing_acknowledged_is_lost() {
    if std::env::var_os("SPATE_TEST_LOG").is_some() {
        spate_node::logging::init("info");
    }
    let dir = data_dir("moves");
    let mut etcd = EtcdProcess::spawn("moves", &dir);
    etcd.wait_listening();
    let ids = [151u32, 152, 153];
    let mut nodes = vec![node(&dir.join("151"), &etcd, 151)];
    wait_for("a controller", Duration::from_secs(15), async || {
        nodes[0].is_controller()
    })
    .await;
    nodes.push(node(&dir.join("152"), &etcd, 152));
    nodes.push(node(&dir.join("153"), &etcd, 153));
    let (gateway, client) = gateway_and_client(&dir, nodes[0].endpoints[0].to_string(), 3).await;
    client
        .create_replicated_topic("moving", 1, 1, Setting::Default, Setting::Default)
        .await
        .unwrap();
    let mut written = Vec::new();
    for n in 0..40 {
        let value = format!("record {n} {}", "x".repeat(100));
        assert_eq!(produce_to(&client, "moving", &value).await, n);
        written.push(value);
    }
    let first = placement(&client, "moving").await;
    let [home] = first.replicas[..] else {
        panic!("{first:?}")
    };
    let others: Vec<u32> = ids.iter().copied().filter(|id| *id != home).collect();
    let dir_of = |node: u32| dir.join(node.to_string()).join("topics").join("moving-0");

    // 1. Held back by its throttle (100 bytes/s for about 5 KB), then cancelled.
    let answer = client
        .reassign_partitions("moving", &[0], &[home, others[0]], Some(100))
        .await
        .unwrap();
    assert_eq!((answer.changed, answer.unchanged), (1, 0), "{answer:?}");
    wait_for(
        "the new replica added",
        Duration::from_secs(10),
        async || placement(&client, "moving").await.replicas == [home, others[0]],
    )
    .await;
    let status = moves(&client).await;
    assert_eq!(status.moving, 1, "{status:?}");
    assert_eq!(status.listed[0].target, [home, others[0]]);
    assert_eq!(status.listed[0].throttle, Some(100));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        placement(&client, "moving").await.isr,
        [home],
        "a replica catching up at 100 bytes/s is not in sync after 2 s"
    );
    let cancelled = client
        .move_partitions(spate_proto::PartitionMove::Cancel {
            topic: "moving".into(),
            partitions: vec![0],
        })
        .await
        .unwrap();
    assert_eq!(cancelled.changed, 1, "{cancelled:?}");
    wait_for("the move back", Duration::from_secs(10), async || {
        moves(&client).await.moving == 0
    })
    .await;
    assert_eq!(placement(&client, "moving").await.replicas, [home]);
    wait_for(
        "the added replica removed",
        Duration::from_secs(10),
        async || !dir_of(others[0]).exists(),
    )
    .await;
    let again = client
        .move_partitions(spate_proto::PartitionMove::Cancel {
            topic: "moving".into(),
            partitions: vec![0],
        })
        .await
        .unwrap();
    assert_eq!(
        again.results[0].error,
        Some(spate_proto::ErrorCode::NoReassignmentInProgress)
    );

    // 2. Off its node, onto the two others, while records keep coming.
    client
        .reassign_partitions("moving", &[], &others, None)
        .await
        .unwrap();
    for n in 40..60 {
        let value = format!("record {n}");
        assert_eq!(produce_to(&client, "moving", &value).await, n);
        written.push(value);
    }
    wait_for(
        "the move to the others",
        Duration::from_secs(20),
        async || moves(&client).await.moving == 0,
    )
    .await;
    let moved = placement(&client, "moving").await;
    assert_eq!(moved.replicas, others);
    assert!(moved.leader.is_some_and(|leader| others.contains(&leader)));
    assert!(moved.epoch > first.epoch, "{moved:?}");
    wait_for(
        "the old replica removed",
        Duration::from_secs(10),
        async || !dir_of(home).exists(),
    )
    .await;
    assert_eq!(read_all(&client, "moving").await, written);

    // 3. The preferred replica (the first) leads after an election.
    client
        .reassign_partitions("moving", &[0], &[others[1], others[0]], None)
        .await
        .unwrap();
    wait_for("the new order", Duration::from_secs(10), async || {
        placement(&client, "moving").await.replicas == [others[1], others[0]]
            && moves(&client).await.moving == 0
    })
    .await;
    wait_for("both in sync", Duration::from_secs(15), async || {
        placement(&client, "moving").await.isr.len() == 2
    })
    .await;
    let leader = placement(&client, "moving").await.leader;
    let elected = client
        .elect_preferred_leaders(Some("moving"), &[0])
        .await
        .unwrap();
    if leader == Some(others[1]) {
        assert_eq!(
            elected.results[0].error,
            Some(spate_proto::ErrorCode::ElectionNotNeeded)
        );
    } else {
        assert_eq!(elected.changed, 1, "{elected:?}");
    }
    wait_for(
        "the preferred leader",
        Duration::from_secs(10),
        async || placement(&client, "moving").await.leader == Some(others[1]),
    )
    .await;
    let again = client
        .elect_preferred_leaders(Some("moving"), &[0])
        .await
        .unwrap();
    assert_eq!(
        again.results[0].error,
        Some(spate_proto::ErrorCode::ElectionNotNeeded)
    );
    for n in 60..70 {
        let value = format!("record {n}");
        assert_eq!(produce_to(&client, "moving", &value).await, n);
        written.push(value);
    }
    assert_eq!(read_all(&client, "moving").await, written);

    // 4. Decommissioned, the preferred leader's node gives its replica up (the topic has one
    // copy: the other replica stays, and leads).
    let decommissioned = client
        .move_partitions(spate_proto::PartitionMove::Decommission {
            node: others[1],
            throttle: None,
        })
        .await
        .unwrap();
    assert_eq!(decommissioned.changed, 1, "{decommissioned:?}");
    wait_for("the node emptied", Duration::from_secs(20), async || {
        let status = moves(&client).await;
        status.moving == 0 && status.decommissioned == [others[1]]
    })
    .await;
    let left = placement(&client, "moving").await;
    assert_eq!(
        (left.replicas, left.leader),
        (vec![others[0]], Some(others[0]))
    );
    assert_eq!(read_all(&client, "moving").await, written);
    // A reassignment onto it is refused; taken back, it can hold replicas again.
    let refused = client
        .reassign_partitions("moving", &[0], &[others[1]], None)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("decommissioned"), "{refused}");
    client
        .move_partitions(spate_proto::PartitionMove::Recommission { node: others[1] })
        .await
        .unwrap();
    assert!(moves(&client).await.decommissioned.is_empty());

    gateway.close();
    for node in nodes {
        node.shutdown();
    }
    etcd.stop();
}
