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
use spate_client::{Client, ClientError};
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

/// Produces `value` with `fsync`, retrying what the client says may be retried (the
/// leadership moving, the gateway's map being stale) for up to 20 s; the offset given.
async fn produce(client: &Client, value: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .produce("events", 0, Durability::Fsync, batch(value))
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

async fn values(client: &Client) -> Result<Vec<String>, ClientError> {
    let fetched = client
        .fetch(FetchRequest {
            topic: "events".into(),
            partition: PartitionId(0),
            offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            min_bytes: 0,
        })
        .await?;
    let mut out = Vec::new();
    for batch in spate_format::batches(&fetched.records) {
        for record in batch.unwrap().records() {
            out.push(String::from_utf8(record.unwrap().value.unwrap().to_vec()).unwrap());
        }
    }
    Ok(out)
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
    let flags = spate_gateway::Flags {
        listen: Some("127.0.0.1:0".into()),
        node: Some(nodes[1].as_ref().unwrap().endpoints[0].to_string()),
        dev_cert_dir: Some(dir.join("tls")),
        ..spate_gateway::Flags::default()
    };
    let gateway = spate_gateway::start(spate_gateway::GatewayConfig::resolve(flags).unwrap())
        .await
        .unwrap();
    let client = Client::connect(gateway.local_addr, &gateway.cert_path, "localhost")
        .await
        .unwrap();
    wait_for("both members", Duration::from_secs(10), async || {
        client
            .describe_cluster()
            .await
            .is_ok_and(|cluster| cluster.members.len() == 2)
    })
    .await;
    client
        .create_replicated_topic("events", 1, 2, Setting::Default, Setting::Default)
        .await
        .unwrap();
    let mut written = Vec::new();
    for n in 0..30 {
        let value = format!("before {n}");
        assert_eq!(produce(&client, &value).await, n);
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
        assert_eq!(produce(&client, &value).await, n);
        written.push(value);
    }
    assert_eq!(values(&client).await.unwrap(), written);
    gateway.close();
    for node in nodes.into_iter().flatten() {
        node.shutdown();
    }
    etcd.stop();
}
