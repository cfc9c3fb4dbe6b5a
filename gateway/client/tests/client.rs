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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_produce_and_fetch_through_the_gateway() {
    let dir = data_dir("round-trip");
    let flags = spate_node::Flags {
        data_dir: Some(dir.join("node")),
        listen: Some("127.0.0.1:0".into()),
        shards: Some(2),
        ..spate_node::Flags::default()
    };
    let node = spate_node::start(spate_node::NodeConfig::resolve(flags).unwrap()).unwrap();
    let flags = spate_gateway::Flags {
        listen: Some("127.0.0.1:0".into()),
        node: Some(node.endpoints[1].to_string()),
        dev_cert_dir: Some(dir.join("tls")),
        ..spate_gateway::Flags::default()
    };
    let gateway = spate_gateway::start(spate_gateway::GatewayConfig::resolve(flags).unwrap())
        .await
        .unwrap();
    let client = Client::connect(gateway.local_addr, &gateway.cert_path, "localhost")
        .await
        .unwrap();

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
