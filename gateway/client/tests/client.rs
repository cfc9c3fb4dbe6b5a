//! The SDK against a real node and gateway (in process, on loopback): admin calls, produce,
//! fetch with CRCs checked, list offsets, and server errors surfaced as typed errors.

use std::path::PathBuf;

use bytes::Bytes;
use spate_client::{Client, ClientError};
use spate_format::{BatchBuilder, Record};
use spate_proto::{Durability, ErrorCode, FetchRequest, OffsetSpec, PartitionId, Setting};

fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn batch(values: &[&str]) -> Bytes {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut builder = BatchBuilder::new();
    for value in values {
        builder
            .push(&Record {
                timestamp: now,
                value: Some(value.as_bytes()),
                ..Record::default()
            })
            .unwrap();
    }
    Bytes::from(builder.finish().unwrap())
}

/// A node of 2 shards with `flags` (data directory and listener filled in), a gateway in
/// front of it reaching it through shard `via`, and a client of the gateway.
async fn node_and_gateway(
    dir: &std::path::Path,
    flags: spate_node::Flags,
    via: usize,
) -> (spate_node::NodeHandle, spate_gateway::Gateway, Client) {
    let flags = spate_node::Flags {
        data_dir: Some(dir.join("node")),
        listen: Some("127.0.0.1:0".into()),
        shards: Some(2),
        ..flags
    };
    let node = spate_node::start(spate_node::NodeConfig::resolve(flags).unwrap()).unwrap();
    let flags = spate_gateway::Flags {
        listen: Some("127.0.0.1:0".into()),
        node: Some(node.endpoints[via].to_string()),
        dev_cert_dir: Some(dir.join("tls")),
        ..spate_gateway::Flags::default()
    };
    let gateway = spate_gateway::start(spate_gateway::GatewayConfig::resolve(flags).unwrap())
        .await
        .unwrap();
    let client = Client::connect(gateway.local_addr, &gateway.cert_path, "localhost")
        .await
        .unwrap();
    (node, gateway, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_produce_and_fetch_through_the_gateway() {
    let dir = data_dir("round-trip");
    let (node, gateway, client) = node_and_gateway(&dir, spate_node::Flags::default(), 1).await;

    client
        .create_topic("orders", 3, Setting::Default, Setting::Default)
        .await
        .unwrap();
    match client
        .create_topic("orders", 3, Setting::Default, Setting::Default)
        .await
    {
        Err(ClientError::Server(error)) => assert_eq!(error.code, ErrorCode::TopicAlreadyExists),
        other => panic!("{other:?}"),
    }
    let metadata = client.metadata(&[]).await.unwrap();
    assert_eq!(metadata.topics[0].partitions.len(), 3);

    // Many requests in flight on one client at once.
    let mut produces = Vec::new();
    for partition in 0..3u32 {
        for round in 0..4 {
            let client = client.clone();
            let values = [format!("p{partition}-r{round}")];
            produces.push(tokio::spawn(async move {
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                client
                    .produce("orders", partition, Durability::Fsync, batch(&values))
                    .await
            }));
        }
    }
    for produce in produces {
        produce.await.unwrap().unwrap();
    }
    for partition in 0..3u32 {
        let fetched = client
            .fetch(FetchRequest {
                topic: "orders".into(),
                partition: PartitionId(partition),
                offset: 0,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                min_bytes: 0,
                epochs: spate_proto::ReadEpochs::default(),
            })
            .await
            .unwrap();
        assert_eq!(fetched.high_watermark, 4);
        let listed = client
            .list_offsets("orders", partition, OffsetSpec::Latest)
            .await
            .unwrap();
        assert_eq!(listed.offset, 4);
    }
    match client
        .list_offsets("missing", 0, OffsetSpec::Earliest)
        .await
    {
        Err(ClientError::Server(error)) => assert_eq!(error.code, ErrorCode::UnknownTopic),
        other => panic!("{other:?}"),
    }
    client.delete_topic("orders").await.unwrap();
    assert!(client.metadata(&[]).await.unwrap().topics.is_empty());
    gateway.close();
    node.shutdown();
}

/// `GroupConsumer`: a second member splits the partitions with the first (rebalance
/// callbacks in order: revoked after the commit, then assigned), the two read every record
/// once between them (a graceful rebalance repeats nothing), and when one closes the other
/// takes its partitions from its commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_consumers_split_partitions_and_hand_them_over_on_close() {
    use spate_client::{GroupConfig, GroupConsumer, Rebalance};
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let dir = data_dir("group-consumers");
    let flags = spate_node::Flags {
        group_initial_rebalance_delay_ms: Some(100),
        ..spate_node::Flags::default()
    };
    let (node, gateway, client) = node_and_gateway(&dir, flags, 0).await;
    client
        .create_topic("tasks", 4, Setting::Default, Setting::Default)
        .await
        .unwrap();
    let mut sent = BTreeSet::new();
    for partition in 0..4u32 {
        let values: Vec<String> = (0..25).map(|i| format!("p{partition}-{i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        client
            .produce("tasks", partition, Durability::Fsync, batch(&refs))
            .await
            .unwrap();
        sent.extend(values);
    }
    let config = GroupConfig {
        session_timeout: Duration::from_secs(6),
        heartbeat_interval: Duration::from_millis(200),
        auto_commit_interval: None,
        ..GroupConfig::default()
    };
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut first = GroupConsumer::join(&client, "crew", "tasks", config.clone())
        .await
        .unwrap();
    assert_eq!(first.assignment(), &[0, 1, 2, 3]);
    let heard = events.clone();
    first.on_rebalance(move |change| heard.lock().unwrap().push(change));
    let mut read = Vec::new();
    for _ in 0..10 {
        let record = first.next().await.unwrap();
        read.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
    }
    first.commit().await.unwrap();
    // The second member's join waits until the first rejoins (inside its polls).
    let joining = {
        let client = client.clone();
        let config = config.clone();
        tokio::spawn(async move { GroupConsumer::join(&client, "crew", "tasks", config).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while first.assignment().len() != 2 {
        assert!(tokio::time::Instant::now() < deadline, "no rebalance");
        if let Some(record) = first.poll(Duration::from_millis(100)).await.unwrap() {
            read.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    let mut second = joining.await.unwrap().unwrap();
    let ours: BTreeSet<u32> = first.assignment().iter().copied().collect();
    let theirs: BTreeSet<u32> = second.assignment().iter().copied().collect();
    assert!(ours.is_disjoint(&theirs) && ours.len() + theirs.len() == 4);
    {
        let events = events.lock().unwrap();
        assert_eq!(
            events[0],
            Rebalance::Revoked(vec![0, 1, 2, 3]),
            "{events:?}"
        );
        assert_eq!(events[1], Rebalance::Assigned(first.assignment().to_vec()));
    }
    // Everything is read once between them.
    let mut by_second = Vec::new();
    while read.len() + by_second.len() < 100 {
        assert!(tokio::time::Instant::now() < deadline, "records missing");
        if let Some(record) = first.poll(Duration::from_millis(50)).await.unwrap() {
            read.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
        if let Some(record) = second.poll(Duration::from_millis(50)).await.unwrap() {
            by_second.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    let all: Vec<&String> = read.iter().chain(&by_second).collect();
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a record was read twice");
    assert_eq!(unique.len(), sent.len());
    // The first closes (commits, leaves): the second takes every partition, and finds
    // nothing left to read.
    first.close().await.unwrap();
    while second.assignment().len() != 4 {
        assert!(tokio::time::Instant::now() < deadline, "no takeover");
        assert!(second
            .poll(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none());
    }
    second.close().await.unwrap();
    let (info, lags) = client.describe_group_offsets("crew").await.unwrap();
    assert_eq!(info.state, "Empty");
    assert_eq!(lags.len(), 4);
    assert!(lags.iter().all(|lag| lag.lag == Some(0)), "{lags:?}");
    gateway.close();
    node.shutdown();
}
