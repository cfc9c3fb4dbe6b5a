//! A node's membership in a cluster, against a real etcd (Debian's `etcd-server`, started by
//! each test on free loopback ports; `.ci/run` installs it): registration under a lease, a
//! second process with the same node id refused, a graceful stop leaving at once, a killed
//! node registering again at once (its data directory names the lease to revoke), a
//! lapsed lease answered by a new session, and one controller at a time. Built with the `cluster` feature
//! (`cargo test -p spate-node --features cluster --test cluster`).

#![cfg(feature = "cluster")]

mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{data_dir, owner, records, Client as NodeClient};
use etcd::EtcdProcess;
use etcd_client::{Client, GetOptions, Txn, TxnOp};
use spate_node::cluster::{controller_election, member_key, ControllerRecord, MemberRecord};
use spate_node::records::{
    partition_key, partitions_prefix, request_topic, topic_key, topic_request_key, IsrRecord,
    LeaderRecord, PartitionRecord, RefusedRecord, ReplicaPlacement, TopicRecord, TopicRequestError,
    TopicRequestRecord, TopicSettings,
};
use spate_node::{Flags, NodeConfig, NodeError, NodeHandle};
use spate_proto::{
    DescribeClusterResponse, Durability, ErrorCode, FetchRequest, OffsetSpec, ReadEpochs, Request,
    Response,
};

/// An etcd server of one member, stopped when dropped.
struct Etcd {
    process: EtcdProcess,
    url: String,
}

impl Etcd {
    fn start(name: &str) -> Etcd {
        Etcd::start_with(name, &[])
    }

    /// [`Etcd::start`] with more of etcd's flags.
    fn start_with(name: &str, extra: &[&str]) -> Etcd {
        let dir = data_dir(&format!("etcd-{name}"));
        let process = EtcdProcess::spawn_with(name, &dir, extra);
        process.wait_listening();
        let url = process.url.clone();
        let etcd = Etcd { process, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        while etcd.get(&member_key("probe", 0)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    fn run<T>(&self, work: impl AsyncFnOnce(&mut Client) -> T) -> T {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = Client::connect([&self.url], None).await.unwrap();
            work(&mut client).await
        })
    }

    /// The value and lease of `key`, if it exists.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let connect = Client::connect([&self.url], None);
            let mut client = tokio::time::timeout(Duration::from_secs(2), connect)
                .await
                .map_err(|_| "timeout".to_owned())?
                .map_err(|error| error.to_string())?;
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                client.get(key, Some(GetOptions::new())),
            )
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|error| error.to_string())?;
            Ok(answer
                .kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.lease())))
        })
    }

    fn member(&self, node: u32) -> Option<(MemberRecord, i64)> {
        self.get(&member_key("spate", node))
            .unwrap()
            .map(|(value, lease)| (serde_json::from_slice(&value).unwrap(), lease))
    }
}

fn config(dir: &Path, etcd: &Etcd, node: u32, session_timeout_ms: u64) -> NodeConfig {
    NodeConfig::resolve(Flags {
        data_dir: Some(dir.to_owned()),
        listen: Some("127.0.0.1:0".into()),
        shards: Some(2),
        node_id: Some(node),
        etcd: Some(etcd.url.clone()),
        session_timeout_ms: Some(session_timeout_ms),
        ..Flags::default()
    })
    .unwrap()
}

fn storage_id(dir: &Path) -> String {
    let bytes = std::fs::read(dir.join("identity")).unwrap();
    let identity = spate_format::identity::decode_identity(&bytes).unwrap();
    format!("{:016x}", identity.storage_id)
}

/// What `node` answers to `DescribeCluster` (any shard answers).
fn describe(node: &NodeHandle) -> Result<DescribeClusterResponse, spate_proto::ErrorResponse> {
    match NodeClient::connect(node.endpoints[1]).call(&Request::DescribeCluster(
        spate_proto::DescribeClusterRequest {
            partitions: true,
            moves: false,
            racks: false,
        },
    )) {
        Response::DescribeCluster(cluster) => Ok(cluster),
        Response::Error { error, .. } => Err(error),
        other => panic!("expected DescribeCluster, got {other:?}"),
    }
}

fn endpoints(node: &NodeHandle) -> Vec<String> {
    node.endpoints.iter().map(ToString::to_string).collect()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_registers_under_its_lease_and_its_id_is_never_shared() {
    let etcd = Etcd::start("registers");
    let dir = data_dir("member-1");
    let node = spate_node::start(config(&dir, &etcd, 1, 3_000)).unwrap();
    let (record, lease) = etcd.member(1).expect("registered");
    assert_eq!(record.v, 1);
    assert_eq!(record.node, 1);
    assert_eq!(record.storage, storage_id(&dir));
    let shards: Vec<String> = node.endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(record.shards, shards);
    assert_eq!(record.session.len(), 16);
    // Under a lease of the session timeout, which the data directory names.
    let ttl = etcd.run(async |client| {
        client
            .lease_time_to_live(lease, None)
            .await
            .unwrap()
            .granted_ttl()
    });
    assert_eq!(ttl, 3);
    let identity = std::fs::read(dir.join("identity")).unwrap();
    let identity = spate_format::identity::decode_identity(&identity).unwrap();
    assert_eq!(identity.lease_id, Some(lease));
    // Kept alive past its time to live.
    std::thread::sleep(Duration::from_millis(4_500));
    assert_eq!(
        etcd.member(1).map(|(record, _)| record.session),
        Some(record.session.clone())
    );

    // Another process (another data directory) with the same id is refused, and nothing of
    // the first one's registration changes.
    let other = data_dir("member-1-again");
    match spate_node::start(config(&other, &etcd, 1, 3_000)) {
        Err(NodeError::Cluster(error)) => {
            let message = error.to_string();
            assert!(
                message.contains("node id 1 is registered by another process")
                    && message.contains(&record.session),
                "{message}"
            );
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("two nodes registered with one id"),
    }
    assert_eq!(etcd.member(1), Some((record, lease)));

    // A graceful stop leaves at once (the lease is revoked, not left to expire).
    node.shutdown();
    assert_eq!(etcd.member(1), None);
}

/// etcd dropping the lease (here revoked from outside, as an expiry would) makes the node
/// register again, with a new session, within a renewal interval; without etcd the node
/// stops leading before its lease can have expired, answers on, and stops within seconds.
#[test]
fn a_lapsed_lease_is_answered_by_a_new_session() {
    let etcd = Etcd::start("lapsed");
    let dir = data_dir("member-2");
    let node = spate_node::start(config(&dir, &etcd, 2, 3_000)).unwrap();
    let (first, lease) = etcd.member(2).expect("registered");
    etcd.run(async |client| client.lease_revoke(lease).await.unwrap());
    let mut second = None;
    wait_for("a new session", Duration::from_secs(10), || {
        second = etcd.member(2);
        second
            .as_ref()
            .is_some_and(|(record, _)| record.session != first.session)
    });
    let (second, new_lease) = second.unwrap();
    assert_ne!(new_lease, lease);
    assert_eq!(second.storage, first.storage);
    // It leads the partition of a topic it created (the only member: the controller).
    let mut client = NodeClient::connect(node.endpoints[0]);
    assert!(matches!(
        client.create_topic("t", 1),
        Response::CreateTopic(_)
    ));
    let mut leader = NodeClient::connect(owner(&client.metadata(), "t", 0));
    assert_eq!(
        produced(leader.produce("t", 0, &[b"led"], Durability::Fsync)),
        Ok(0)
    );
    // With etcd gone, the node stops leading before its lease can have expired: two thirds
    // of the 3 s session timeout after its last confirmed renewal, which was sent at most a
    // renewal interval (1 s) before etcd went, so within about 1 s — etcd cannot have expired
    // the lease within 2 s. It answers on, and still stops promptly (the revocation it
    // attempts is bounded).
    drop(etcd);
    wait_for("leadership given up", Duration::from_secs(2), || {
        produced(leader.produce("t", 0, &[b"unled"], Durability::Fsync))
            == Err(ErrorCode::NotLeaderOrFollower)
    });
    assert!(client.metadata().topics.iter().any(|t| t.name == "t"));
    let stopping = Instant::now();
    node.shutdown();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
}

fn spawn_node(dir: &Path, etcd: &Etcd, node: u32, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_spate-node"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--etcd",
            &etcd.url,
        ])
        .args(["--node-id", &node.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for the node's "listening" line, which comes once it is registered.
fn wait_listening(child: &mut Child) {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert!(!line.is_empty(), "the node exited before listening");
}

/// A node killed with SIGKILL leaves its registration behind, under a lease of 30 s; started
/// again it revokes that lease (its data directory names it) and registers at once, with a new
/// session, instead of waiting for the old one to expire.
#[test]
fn a_killed_node_registers_again_at_once() {
    let etcd = Etcd::start("killed");
    let dir: PathBuf = data_dir("member-3");
    let mut child = spawn_node(&dir, &etcd, 3, &["--session-timeout-ms", "30000"]);
    wait_listening(&mut child);
    let (first, _) = etcd.member(3).expect("registered");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        etcd.member(3).map(|(record, _)| record.session),
        Some(first.session.clone())
    );
    let started = Instant::now();
    let mut child = spawn_node(&dir, &etcd, 3, &["--session-timeout-ms", "30000"]);
    wait_listening(&mut child);
    let (second, _) = etcd.member(3).expect("registered again");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(second.session, first.session);
    assert_eq!(second.storage, first.storage);
    // SIGTERM: a graceful stop, which leaves the cluster.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    assert_eq!(etcd.member(3), None);
    // A node of a cluster needs its id.
    let refused = Command::new(env!("CARGO_BIN_EXE_spate-node"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&dir)
        .args(["--etcd", &etcd.url])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs its --node-id"), "{stderr}");
}

/// Of two members exactly one is the controller; when it stops, the other is elected.
#[test]
fn one_member_at_a_time_is_the_controller_and_a_successor_is_elected() {
    let etcd = Etcd::start("controller");
    let first_dir = data_dir("member-11");
    let first = spate_node::start(config(&first_dir, &etcd, 11, 3_000)).unwrap();
    let second = spate_node::start(config(&data_dir("member-12"), &etcd, 12, 3_000)).unwrap();
    let elected = || -> Option<u32> {
        etcd.run(async |client| {
            let answer = client.leader(controller_election("spate")).await.ok()?;
            let record: ControllerRecord = serde_json::from_slice(answer.kv()?.value()).ok()?;
            Some(record.node)
        })
    };
    wait_for("a controller", Duration::from_secs(10), || {
        first.is_controller() || second.is_controller()
    });
    // The first to campaign wins, and only one holds it.
    assert!(first.is_controller() && !second.is_controller());
    assert_eq!(elected(), Some(11));
    let (record, _) = etcd.member(11).unwrap();
    let session = etcd.run(async |client| {
        let answer = client.leader(controller_election("spate")).await.unwrap();
        let record: ControllerRecord =
            serde_json::from_slice(answer.kv().unwrap().value()).unwrap();
        record.session
    });
    assert_eq!(
        session, record.session,
        "the campaign runs under the member's session"
    );
    // Either node describes the cluster as etcd holds it: both members with their sessions,
    // storage ids and shards, and the controller.
    let seen = describe(&second).unwrap();
    assert_eq!(
        (seen.cluster.as_str(), seen.node, seen.controller),
        ("spate", Some(12), Some(11))
    );
    assert_eq!(
        seen.members
            .iter()
            .map(|member| member.node)
            .collect::<Vec<_>>(),
        vec![11, 12]
    );
    assert_eq!(seen.members[0].session, record.session);
    assert_eq!(seen.members[0].storage, storage_id(&first_dir));
    assert_eq!(seen.members[0].since_ms, record.since_ms);
    assert_eq!(seen.members[0].shards, endpoints(&first));
    assert_eq!(seen.members[1].shards, endpoints(&second));
    assert_eq!(describe(&first).unwrap().node, Some(11));
    first.shutdown();
    wait_for("the successor", Duration::from_secs(10), || {
        second.is_controller()
    });
    assert_eq!(elected(), Some(12));
    let seen = describe(&second).unwrap();
    assert_eq!(seen.controller, Some(12));
    assert_eq!(
        seen.members
            .iter()
            .map(|member| member.node)
            .collect::<Vec<_>>(),
        vec![12]
    );
    second.shutdown();
    assert_eq!(elected(), None);
}

/// With etcd gone, a node still serves, and `DescribeCluster` says in a bounded time that
/// the cluster cannot be read (`Unavailable`) rather than hang.
#[test]
fn describe_cluster_says_when_etcd_cannot_be_read() {
    let mut etcd = Etcd::start("describe");
    let node = spate_node::start(config(&data_dir("member-21"), &etcd, 21, 3_000)).unwrap();
    assert_eq!(describe(&node).unwrap().members.len(), 1);
    etcd.process.stop();
    let asked = Instant::now();
    let error = describe(&node).unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable, "{error}");
    assert!(
        error
            .message
            .contains("cannot read the cluster's members from etcd"),
        "{error}"
    );
    assert!(
        asked.elapsed() < spate_node::cluster::CLUSTER_QUERY_WAIT + Duration::from_secs(2),
        "answered after {:?}",
        asked.elapsed()
    );
    node.shutdown();
}

/// The partition key `t/0` as etcd holds it.
fn partition_record(etcd: &Etcd) -> PartitionRecord {
    let (value, _) = etcd
        .get(&partition_key("spate", "t", 0))
        .unwrap()
        .expect("the partition key exists");
    serde_json::from_slice(&value).unwrap()
}

/// Writes topic `t` with its one partition, both in one transaction (as if the controller had
/// created the topic and its partition key at once).
fn write_topic(etcd: &Etcd, topic: &TopicRecord, partition: &PartitionRecord) {
    write_topic_named(etcd, "t", topic, partition);
}

/// [`write_topic`] for topic `name`.
fn write_topic_named(etcd: &Etcd, name: &str, topic: &TopicRecord, partition: &PartitionRecord) {
    etcd.run(async |client| {
        let txn = Txn::new().and_then([
            TxnOp::put(
                partition_key("spate", name, 0),
                serde_json::to_vec(&partition).unwrap(),
                None,
            ),
            TxnOp::put(
                topic_key("spate", name),
                serde_json::to_vec(&topic).unwrap(),
                None,
            ),
        ]);
        assert!(client.txn(txn).await.unwrap().succeeded());
    });
}

fn isr_nodes(record: &PartitionRecord) -> Vec<u32> {
    record.isr.iter().map(|member| member.node).collect()
}

/// The controller's duties against a real etcd: with a topic whose partition is led by one
/// member and replicated on three, it moves leadership to the next in-sync replica in
/// preference order (in a new epoch) when the leader leaves, removes a dead follower from the
/// ISR (done here by the successor controller, after the first one left), keeps the last
/// in-sync replica when it too is gone (the partition waits offline, nobody out of sync is
/// elected), and elects it again, in a new epoch, when it returns under a new session.
#[test]
fn the_controller_elects_leaders_from_the_isr_as_members_come_and_go() {
    let etcd = Etcd::start("duties");
    let dirs: Vec<PathBuf> = (31..=33)
        .map(|node| data_dir(&format!("member-{node}")))
        .collect();
    let first = spate_node::start(config(&dirs[0], &etcd, 31, 3_000)).unwrap();
    wait_for("a controller", Duration::from_secs(10), || {
        first.is_controller()
    });
    let second = spate_node::start(config(&dirs[1], &etcd, 32, 3_000)).unwrap();
    let third = spate_node::start(config(&dirs[2], &etcd, 33, 3_000)).unwrap();
    let member = |node: u32| etcd.member(node).unwrap().0;
    let led_by = |node: u32| {
        Some(LeaderRecord {
            node,
            session: member(node).session,
        })
    };
    let in_sync = |node: u32| IsrRecord {
        node,
        storage: member(node).storage,
    };
    let topic = TopicRecord {
        reassigning: Vec::new(),
        v: 1,
        id: format!("{:032x}", 7),
        partitions: 1,
        replication_factor: 3,
        replicas: vec![[32, 33, 31]
            .iter()
            .map(|&node| ReplicaPlacement { node, shard: 0 })
            .collect()],
        settings: TopicSettings::default(),
    };
    let partition = PartitionRecord {
        v: 1,
        topic_id: topic.id.clone(),
        leader: Some(LeaderRecord {
            node: 32,
            session: member(32).session,
        }),
        epoch: 1,
        isr: vec![in_sync(32), in_sync(33), in_sync(31)],
        partition_epoch: 1,
    };
    write_topic(&etcd, &topic, &partition);
    // Every member alive and in sync: nothing to change.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(partition_record(&etcd), partition);
    // The leader leaves: the next in-sync replica in preference order leads, one epoch on.
    second.shutdown();
    wait_for("a new leader", Duration::from_secs(10), || {
        partition_record(&etcd).epoch == 2
    });
    let record = partition_record(&etcd);
    assert_eq!(record.leader, led_by(33));
    assert_eq!(isr_nodes(&record), vec![33, 31]);
    assert_eq!(record.partition_epoch, 2);
    // The controller leaves too: its successor removes it from the ISR (the leader stays).
    first.shutdown();
    wait_for("the successor", Duration::from_secs(10), || {
        third.is_controller()
    });
    wait_for("the ISR without 31", Duration::from_secs(10), || {
        isr_nodes(&partition_record(&etcd)) == vec![33]
    });
    let record = partition_record(&etcd);
    assert_eq!((record.leader.unwrap().node, record.epoch), (33, 2));
    // 32 returns (out of sync) and the last in-sync replica leaves: the partition waits
    // offline for it rather than elect 32.
    let second = spate_node::start(config(&dirs[1], &etcd, 32, 3_000)).unwrap();
    third.shutdown();
    wait_for("32 controlling", Duration::from_secs(10), || {
        second.is_controller()
    });
    wait_for("the partition offline", Duration::from_secs(10), || {
        partition_record(&etcd).leader.is_none()
    });
    let record = partition_record(&etcd);
    assert_eq!((isr_nodes(&record), record.epoch), (vec![33], 2));
    // 33 returns under a new session with its data directory: it leads again, a new epoch.
    let third = spate_node::start(config(&dirs[2], &etcd, 33, 3_000)).unwrap();
    wait_for("33 leading again", Duration::from_secs(10), || {
        partition_record(&etcd).epoch == 3
    });
    let record = partition_record(&etcd);
    assert_eq!(record.leader, led_by(33));
    assert_eq!(isr_nodes(&record), vec![33]);
    second.shutdown();
    third.shutdown();
}

/// The elections for a lost member's partitions are written together: its six partitions
/// get their new leader in one transaction (one etcd revision), not one round trip each (at
/// 10,000 partitions over three nodes that took 8.6 s; `spate-bench failover`).
#[test]
fn the_controller_elects_a_lost_members_partitions_in_one_transaction() {
    assert_eq!(elect_a_lost_members_partitions("elections", 211, &[]), 1);
}

/// An etcd that takes fewer operations per transaction (`--max-txn-ops 4`) refuses the
/// batch of six: the controller splits it in halves until etcd takes them (two
/// transactions of three keys and four compares).
#[test]
fn the_controller_splits_a_batch_etcd_refuses_as_too_large() {
    assert_eq!(
        elect_a_lost_members_partitions("small-txns", 221, &["--max-txn-ops", "4"]),
        2
    );
}

/// A member (`controller`) and the test's members `controller + 1` and `controller + 2`
/// (etcd started with `etcd_flags`); six partitions led by the first of the test's, which
/// goes: every partition is led by the other, alone in the ISR. Returns in how many etcd
/// transactions (revisions) the elections were written.
fn elect_a_lost_members_partitions(name: &str, controller: u32, etcd_flags: &[&str]) -> usize {
    const PARTITIONS: u32 = 6;
    let (id, lost, kept) = (controller, controller + 1, controller + 2);
    let etcd = Etcd::start_with(name, etcd_flags);
    let dir = data_dir(&format!("member-{controller}"));
    let controller = spate_node::start(config(&dir, &etcd, controller, 3_000)).unwrap();
    wait_for("a controller", Duration::from_secs(10), || {
        controller.is_controller()
    });
    for node in [lost, kept] {
        let session = format!("{node:016x}");
        register_test_member(&etcd, node, &session, u64::from(node), "127.0.0.1:9");
    }
    let in_sync = |node: u32| IsrRecord {
        node,
        storage: format!("{:016x}", u64::from(node)),
    };
    let topic = TopicRecord {
        reassigning: Vec::new(),
        v: 1,
        id: format!("{id:032x}"),
        partitions: PARTITIONS,
        replication_factor: 2,
        replicas: (0..PARTITIONS)
            .map(|_| {
                [lost, kept]
                    .iter()
                    .map(|&node| ReplicaPlacement { node, shard: 0 })
                    .collect()
            })
            .collect(),
        settings: TopicSettings::default(),
    };
    let state = PartitionRecord {
        v: 1,
        topic_id: topic.id.clone(),
        leader: Some(LeaderRecord {
            node: lost,
            session: format!("{lost:016x}"),
        }),
        epoch: 1,
        isr: vec![in_sync(lost), in_sync(kept)],
        partition_epoch: 1,
    };
    // The partition keys first, then the topic's (a few keys per transaction: the etcd may
    // take few operations in one).
    etcd.run(async |client| {
        let mut puts: Vec<TxnOp> = (0..PARTITIONS)
            .map(|partition| {
                TxnOp::put(
                    partition_key("spate", "m", partition),
                    serde_json::to_vec(&state).unwrap(),
                    None,
                )
            })
            .collect();
        puts.push(TxnOp::put(
            topic_key("spate", "m"),
            serde_json::to_vec(&topic).unwrap(),
            None,
        ));
        for some in puts.chunks(3) {
            let txn = Txn::new().and_then(some.to_vec());
            assert!(client.txn(txn).await.unwrap().succeeded());
        }
    });
    // Nothing to change while both live.
    std::thread::sleep(Duration::from_millis(500));
    let read = || {
        etcd.run(async |client| {
            let answer = client
                .get(
                    partitions_prefix("spate") + "m/",
                    Some(GetOptions::new().with_prefix()),
                )
                .await
                .unwrap();
            answer
                .kvs()
                .iter()
                .map(|kv| {
                    let record: PartitionRecord = serde_json::from_slice(kv.value()).unwrap();
                    (record, kv.mod_revision())
                })
                .collect::<Vec<_>>()
        })
    };
    assert!(read().iter().all(|(record, _)| record == &state));
    // The first goes: every partition is led by the other in epoch 2, alone in the ISR.
    etcd.run(async |client| {
        client
            .delete(member_key("spate", lost), None)
            .await
            .unwrap();
    });
    wait_for("every partition led again", Duration::from_secs(10), || {
        read().iter().all(|(record, _)| record.epoch == 2)
    });
    let elected = read();
    assert_eq!(elected.len(), PARTITIONS as usize);
    for (record, _) in &elected {
        assert_eq!(record.leader.as_ref().unwrap().node, kept, "{record:?}");
        assert_eq!(isr_nodes(record), vec![kept], "{record:?}");
    }
    let revisions: std::collections::BTreeSet<i64> =
        elected.iter().map(|(_, revision)| *revision).collect();
    controller.shutdown();
    revisions.len()
}

/// An etcd, node `first` elected controller, then node `first + 1` in line behind it.
fn controller_and_member(name: &str, first: u32) -> (Etcd, NodeHandle, NodeHandle) {
    let etcd = Etcd::start(name);
    let dir = data_dir(&format!("member-{first}"));
    let controller = spate_node::start(config(&dir, &etcd, first, 3_000)).unwrap();
    wait_for("a controller", Duration::from_secs(10), || {
        controller.is_controller()
    });
    let dir = data_dir(&format!("member-{}", first + 1));
    let member = spate_node::start(config(&dir, &etcd, first + 1, 3_000)).unwrap();
    (etcd, controller, member)
}

/// etcd answers a campaign only when it is won: a member that waited longer than its session
/// timeout in line still takes over when the controller goes.
#[test]
fn a_campaign_waiting_longer_than_the_session_timeout_still_wins() {
    let (_etcd, first, second) = controller_and_member("patient", 41);
    std::thread::sleep(Duration::from_secs(4));
    assert!(!second.is_controller());
    first.shutdown();
    wait_for("the successor", Duration::from_secs(10), || {
        second.is_controller()
    });
    second.shutdown();
}

/// A controller whose election key is deleted while its lease lives (an operator's
/// `etcdctl del`, a resignation) is deposed: the next in line takes over, and the deposed
/// member stops acting as controller and campaigns again.
#[test]
fn a_controller_whose_election_key_goes_is_deposed() {
    let (etcd, first, second) = controller_and_member("deposed", 51);
    etcd.run(async |client| {
        let leader = client.leader(controller_election("spate")).await.unwrap();
        let key = leader.kv().unwrap().key().to_vec();
        client.delete(key, None).await.unwrap();
    });
    wait_for("the successor", Duration::from_secs(10), || {
        second.is_controller()
    });
    wait_for("the first deposed", Duration::from_secs(10), || {
        !first.is_controller()
    });
    // It campaigns again, behind the new controller: it takes over when that one goes.
    second.shutdown();
    wait_for("the first again", Duration::from_secs(10), || {
        first.is_controller()
    });
    first.shutdown();
}

/// A member record the controller cannot read (here a newer layout version, as in a rolling
/// upgrade) is not a dead member: a partition naming it is left as it is. Once the record is
/// gone (the member is), the controller removes it from the ISR.
#[test]
fn the_controller_leaves_partitions_naming_an_unreadable_member_alone() {
    let (etcd, controller, member) = controller_and_member("unreadable", 61);
    let storage = |node: u32| etcd.member(node).unwrap().0.storage;
    let topic = TopicRecord {
        reassigning: Vec::new(),
        v: 1,
        id: format!("{:032x}", 9),
        partitions: 1,
        replication_factor: 2,
        replicas: vec![vec![
            ReplicaPlacement { node: 62, shard: 0 },
            ReplicaPlacement { node: 63, shard: 0 },
        ]],
        settings: TopicSettings::default(),
    };
    let partition = PartitionRecord {
        v: 1,
        topic_id: topic.id.clone(),
        leader: Some(LeaderRecord {
            node: 62,
            session: etcd.member(62).unwrap().0.session,
        }),
        epoch: 1,
        isr: vec![
            IsrRecord {
                node: 62,
                storage: storage(62),
            },
            IsrRecord {
                node: 63,
                storage: "0000000000000063".into(),
            },
        ],
        partition_epoch: 1,
    };
    let newer = serde_json::json!({
        "v": 2, "node": 63, "session": "0000000000000001", "storage": "0000000000000063",
        "shards": [], "since_ms": 1
    })
    .to_string();
    etcd.run(async |client| {
        client
            .put(member_key("spate", 63), newer, None)
            .await
            .unwrap();
    });
    write_topic(&etcd, &topic, &partition);
    // Passes run (the puts above, and the 5 s resync): nothing changes.
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(partition_record(&etcd), partition);
    etcd.run(async |client| {
        client.delete(member_key("spate", 63), None).await.unwrap();
    });
    wait_for("63 out of the ISR", Duration::from_secs(10), || {
        isr_nodes(&partition_record(&etcd)) == vec![62]
    });
    assert_eq!(partition_record(&etcd).epoch, 1, "the leader stays");
    member.shutdown();
    controller.shutdown();
}

/// A request to create a topic, as a node writes it for its client.
fn topic_request(id: u128, partitions: u32, replication_factor: u32) -> TopicRequestRecord {
    TopicRequestRecord {
        v: 1,
        id: format!("{id:032x}"),
        partitions,
        replication_factor,
        settings: TopicSettings {
            retention_ms: Some(3_600_000),
            ..TopicSettings::default()
        },
        refused: None,
    }
}

fn request(
    etcd: &Etcd,
    name: &str,
    record: &TopicRequestRecord,
) -> Result<TopicRecord, TopicRequestError> {
    etcd.run(async |client| {
        request_topic(client, "spate", name, record, Duration::from_secs(10))
            .await
            .map(|(record, _)| record)
    })
}

/// The partition keys of topic `name`, by partition.
fn partitions_of(etcd: &Etcd, name: &str) -> Vec<PartitionRecord> {
    etcd.run(async |client| {
        let prefix = format!("{}{name}/", partitions_prefix("spate"));
        let answer = client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let mut records: Vec<(u32, PartitionRecord)> = answer
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv.key_str().unwrap();
                let number = key.rsplit_once('/').unwrap().1.parse().unwrap();
                (number, serde_json::from_slice(kv.value()).unwrap())
            })
            .collect();
        records.sort_by_key(|(number, _)| *number);
        records.into_iter().map(|(_, record)| record).collect()
    })
}

/// Topic creation through the controller, against a real etcd: a request is accepted with
/// its replicas placed over the live members (distinct nodes per partition, leaders spread),
/// the controller then gives every partition its first state (the first replica leads, in
/// epoch 1, every replica in sync with its storage id); a second request of the name is
/// answered "exists"; one the members cannot meet is refused with the reason, and its
/// request removed by the requester; a deleted topic's partition keys are removed, and the
/// name can be created again under a new id.
#[test]
fn topics_are_created_through_the_controller() {
    let (etcd, controller, member) = controller_and_member("create", 71);
    let created = request(&etcd, "clicks", &topic_request(5, 4, 2)).unwrap();
    assert_eq!(created.id, format!("{:032x}", 5));
    assert_eq!(created.settings.retention_ms, Some(3_600_000));
    assert_eq!(created.replicas.len(), 4);
    let mut leaders = Vec::new();
    for replicas in &created.replicas {
        let mut nodes: Vec<u32> = replicas.iter().map(|at| at.node).collect();
        leaders.push(nodes[0]);
        assert!(replicas.iter().all(|at| at.shard < 2), "{replicas:?}");
        nodes.sort_unstable();
        assert_eq!(nodes, vec![71, 72]);
    }
    leaders.sort_unstable();
    assert_eq!(
        leaders,
        vec![71, 71, 72, 72],
        "leaders spread over the nodes"
    );
    wait_for("the partition keys", Duration::from_secs(10), || {
        partitions_of(&etcd, "clicks").len() == 4
    });
    for (record, replicas) in partitions_of(&etcd, "clicks").iter().zip(&created.replicas) {
        let first = replicas[0].node;
        assert_eq!(record.topic_id, created.id);
        assert_eq!(record.epoch, 1);
        assert_eq!(record.partition_epoch, 1);
        let leader = record.leader.as_ref().unwrap();
        assert_eq!(leader.node, first);
        assert_eq!(leader.session, etcd.member(first).unwrap().0.session);
        let in_sync: Vec<(u32, String)> = record
            .isr
            .iter()
            .map(|member| (member.node, member.storage.clone()))
            .collect();
        let expected: Vec<(u32, String)> = replicas
            .iter()
            .map(|at| (at.node, etcd.member(at.node).unwrap().0.storage))
            .collect();
        assert_eq!(in_sync, expected);
    }
    assert_eq!(
        request(&etcd, "clicks", &topic_request(6, 1, 1)),
        Err(TopicRequestError::Exists("clicks".into()))
    );
    match request(&etcd, "wide", &topic_request(7, 1, 3)) {
        Err(TopicRequestError::Refused { reason, message }) => {
            assert_eq!(reason, "replication_factor");
            assert!(message.contains("3 needs as many nodes"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        etcd.get(&topic_request_key("spate", "wide")).unwrap(),
        None,
        "the requester removes a refused request"
    );
    assert_eq!(etcd.get(&topic_key("spate", "wide")).unwrap(), None);
    // Deleted: its partition keys go; created again, it has a new id and new partitions.
    etcd.run(async |client| {
        client
            .delete(topic_key("spate", "clicks"), None)
            .await
            .unwrap();
    });
    wait_for(
        "the partition keys removed",
        Duration::from_secs(10),
        || partitions_of(&etcd, "clicks").is_empty(),
    );
    let again = request(&etcd, "clicks", &topic_request(8, 1, 1)).unwrap();
    wait_for("the new partition key", Duration::from_secs(10), || {
        partitions_of(&etcd, "clicks")
            .iter()
            .map(|record| record.topic_id.clone())
            .collect::<Vec<_>>()
            == vec![again.id.clone()]
    });
    member.shutdown();
    controller.shutdown();
}

/// A request that waits for a controller is taken by the next one elected; a request left
/// refused by a requester that went away does not block the name.
#[test]
fn a_request_waits_for_a_controller_and_a_stale_refusal_is_replaced() {
    let etcd = Etcd::start("waiting");
    let mut stale = topic_request(1, 1, 1);
    stale.refused = Some(RefusedRecord {
        reason: "replication_factor".into(),
        message: "refused long ago".into(),
    });
    etcd.run(async |client| {
        client
            .put(
                topic_request_key("spate", "late"),
                serde_json::to_vec(&stale).unwrap(),
                None,
            )
            .await
            .unwrap();
    });
    let url = etcd.url.clone();
    let asked = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = Client::connect([&url], None).await.unwrap();
            let record = topic_request(2, 1, 1);
            request_topic(
                &mut client,
                "spate",
                "late",
                &record,
                Duration::from_secs(20),
            )
            .await
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let dir = data_dir("member-81");
    let node = spate_node::start(config(&dir, &etcd, 81, 3_000)).unwrap();
    let (created, _) = asked.join().unwrap().unwrap();
    assert_eq!(created.id, format!("{:032x}", 2));
    assert_eq!(
        created.replicas,
        vec![vec![ReplicaPlacement { node: 81, shard: 0 }]]
    );
    node.shutdown();
}

/// The controller reads each prefix in pages, smaller when an answer would be too large for
/// the client (4 MiB): with topic records of about 900 KiB each (here naming a node that is
/// not alive, so no partition key is made), a pass still reads them all and takes a request.
#[test]
fn the_controller_reads_large_topics_in_pages() {
    let (etcd, controller, member) = controller_and_member("pages", 91);
    let big = TopicRecord {
        reassigning: Vec::new(),
        v: 1,
        id: format!("{:032x}", 1),
        partitions: 10_000,
        replication_factor: 3,
        replicas: (0..10_000)
            .map(|_| {
                (0..3)
                    .map(|shard| ReplicaPlacement {
                        node: 4_000_000_000,
                        shard,
                    })
                    .collect()
            })
            .collect(),
        settings: TopicSettings::default(),
    };
    let value = serde_json::to_vec(&big).unwrap();
    assert!(
        value.len() > 900_000 && value.len() < 1 << 20,
        "{}",
        value.len()
    );
    etcd.run(async |client| {
        for n in 0..6 {
            client
                .put(topic_key("spate", &format!("big-{n}")), value.clone(), None)
                .await
                .unwrap();
        }
    });
    let created = request(&etcd, "small", &topic_request(3, 2, 2)).unwrap();
    assert_eq!(created.replicas.len(), 2);
    wait_for(
        "the small topic's partitions",
        Duration::from_secs(10),
        || partitions_of(&etcd, "small").len() == 2,
    );
    member.shutdown();
    controller.shutdown();
}

/// What a produce answered: the offset given, or the error code.
fn produced(response: Response) -> Result<u64, ErrorCode> {
    match response {
        Response::Produce(produced) => Ok(produced.base_offset),
        Response::Error { error, .. } => Err(error.code),
        other => panic!("{other:?}"),
    }
}

/// A member's data directory holds the directory of a partition.
fn holds(dir: &Path, topic: &str, partition: u32) -> bool {
    dir.join("topics")
        .join(format!("{topic}-{partition}"))
        .exists()
}

/// Two nodes serve the partitions of topics created through either of them: `Metadata`
/// lists every member's shards and routes each partition to its leader's; a partition is
/// produced to and fetched from its leader, a node that does not hold it answers `NotOwner`
/// with the leader's shard; a replication factor the members cannot meet is refused, one the
/// members meet is served by the partition's leader; a node that
/// restarts serves its partitions again, its records kept; a deleted topic's replicas are
/// removed from both nodes.
#[test]
fn a_cluster_serves_its_topics_across_its_nodes() {
    let etcd = Etcd::start("serve");
    let first_dir = data_dir("member-101");
    let second_dir = data_dir("member-102");
    let first = spate_node::start(config(&first_dir, &etcd, 101, 3_000)).unwrap();
    wait_for("a controller", Duration::from_secs(10), || {
        first.is_controller()
    });
    let second = spate_node::start(config(&second_dir, &etcd, 102, 3_000)).unwrap();
    let mut client = NodeClient::connect(first.endpoints[0]);
    assert!(matches!(
        client.create_topic("spread", 4),
        Response::CreateTopic(created) if created.partitions == 4
    ));
    let metadata = client.metadata();
    assert_eq!(metadata.shards.len(), 4, "{metadata:?}");
    let nodes_of = |metadata: &spate_proto::MetadataResponse| -> Vec<bool> {
        let topic = metadata.topics.iter().find(|t| t.name == "spread").unwrap();
        topic
            .partitions
            .iter()
            .map(|partition| {
                let endpoint = &metadata.shards[usize::from(partition.shard.0)].endpoint;
                first
                    .endpoints
                    .iter()
                    .any(|own| own.to_string() == *endpoint)
            })
            .collect()
    };
    let on_first = nodes_of(&metadata);
    assert!(
        on_first.contains(&true) && on_first.contains(&false),
        "{on_first:?}"
    );
    for partition in 0..4u32 {
        let value = format!("record {partition}");
        let leader = owner(&metadata, "spread", partition);
        let mut at_leader = NodeClient::connect(leader);
        // The creation is answered once this node applied it; the other node may show the
        // topic a moment later (`UnknownTopic` meanwhile, as a Kafka broker's
        // UNKNOWN_TOPIC_OR_PARTITION), and the leader, on either node, may take its epoch a
        // moment later (retriable `NotLeaderOrFollower` meanwhile).
        let mut offset = Err(ErrorCode::NotLeaderOrFollower);
        wait_for("the leader serving", Duration::from_secs(10), || {
            offset = produced(at_leader.produce(
                "spread",
                partition,
                &[value.as_bytes()],
                Durability::Fsync,
            ));
            !matches!(offset, Err(code) if code.is_retriable() || code == ErrorCode::UnknownTopic)
        });
        assert_eq!(offset, Ok(0));
        match at_leader.fetch("spread", partition, 0, 0) {
            Response::Fetch(fetched) => {
                assert_eq!(records(&fetched.records), [(0, value.into_bytes())]);
            }
            other => panic!("{other:?}"),
        }
        // The other node's shards send the client to the leader.
        let elsewhere = if on_first[partition as usize] {
            second.endpoints[0]
        } else {
            first.endpoints[0]
        };
        // (The creation was answered once the node asked knew it; the other learns it from
        // its own watch.)
        let mut wrong = NodeClient::connect(elsewhere);
        let mut answered = None;
        wait_for("the other node routing", Duration::from_secs(5), || {
            answered = Some(produced(wrong.produce(
                "spread",
                partition,
                &[b"x"],
                Durability::Fsync,
            )));
            answered != Some(Err(ErrorCode::UnknownTopic))
        });
        assert_eq!(answered, Some(Err(ErrorCode::NotOwner)));
    }
    // Two copies on two nodes: created and served by its leader (replicated to the other:
    // `a_replicated_partition_keeps_its_acknowledged_records_when_its_leader_goes`).
    let replicated = Request::CreateTopic(spate_proto::CreateTopicRequest {
        legacy_layout: false,
        min_insync_replicas: spate_proto::Setting::Default,
        topic: "copies".into(),
        partitions: 1,
        retention_ms: spate_proto::Setting::Default,
        retention_bytes: spate_proto::Setting::Default,
        segment_bytes: spate_proto::Setting::Default,
        replication_factor: 2,
    });
    let answer = client.call(&replicated);
    assert!(matches!(answer, Response::CreateTopic(_)), "{answer:?}");
    let metadata = client.metadata();
    let mut at_leader = NodeClient::connect(owner(&metadata, "copies", 0));
    wait_for("copies served", Duration::from_secs(10), || {
        produced(at_leader.produce("copies", 0, &[b"x"], Durability::Fsync)) == Ok(0)
    });
    let wide = Request::CreateTopic(spate_proto::CreateTopicRequest {
        topic: "wide".into(),
        replication_factor: 3,
        ..match replicated {
            Request::CreateTopic(create) => create,
            _ => unreachable!(),
        }
    });
    match client.call(&wide) {
        Response::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::InvalidReplicationFactor, "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    // The second node restarts: a new session, elected again, its records kept; a topic
    // deleted while it was away leaves its data directory.
    assert!(matches!(
        client.create_topic("lonely", 2),
        Response::CreateTopic(_)
    ));
    let lonely = (0..2).find(|&p| holds(&second_dir, "lonely", p)).unwrap();
    second.shutdown();
    assert!(matches!(
        client.call(&Request::DeleteTopic(spate_proto::DeleteTopicRequest {
            topic: "lonely".into()
        })),
        Response::DeleteTopic(_)
    ));
    assert!(holds(&second_dir, "lonely", lonely));
    let second = spate_node::start(config(&second_dir, &etcd, 102, 3_000)).unwrap();
    wait_for(
        "the replica of the deleted topic removed",
        Duration::from_secs(10),
        || !holds(&second_dir, "lonely", lonely),
    );
    let on_second = u32::try_from(on_first.iter().position(|on_first| !on_first).unwrap()).unwrap();
    let mut second_client = NodeClient::connect(second.endpoints[0]);
    let mut shards: std::collections::HashMap<std::net::SocketAddr, NodeClient> =
        std::collections::HashMap::new();
    wait_for(
        "the restarted node leads again",
        Duration::from_secs(15),
        || {
            // Not yet in its map, or not yet led (routed past every shard).
            let Some(leader) = routed(&second_client.metadata(), "spread", on_second) else {
                return false;
            };
            let at_leader = shards
                .entry(leader)
                .or_insert_with(|| NodeClient::connect(leader));
            matches!(at_leader.fetch("spread", on_second, 0, 0), Response::Fetch(fetched)
            if records(&fetched.records) == [(0, format!("record {on_second}").into_bytes())])
        },
    );
    drop((second_client, shards));
    // Deleted: every replica goes, on both nodes.
    assert!(matches!(
        client.call(&Request::DeleteTopic(spate_proto::DeleteTopicRequest {
            topic: "spread".into()
        })),
        Response::DeleteTopic(_)
    ));
    assert!(client.metadata().topics.iter().all(|t| t.name != "spread"));
    wait_for("the replicas removed", Duration::from_secs(10), || {
        (0..4).all(|p| !holds(&first_dir, "spread", p) && !holds(&second_dir, "spread", p))
    });
    second.shutdown();
    first.shutdown();
}

/// The shard a partition is routed to, if it is led (a partition without a leader is routed
/// past every shard).
fn routed(
    metadata: &spate_proto::MetadataResponse,
    topic: &str,
    partition: u32,
) -> Option<std::net::SocketAddr> {
    let shard = metadata
        .topics
        .iter()
        .find(|t| t.name == topic)?
        .partitions
        .get(partition as usize)?
        .shard;
    metadata
        .shards
        .get(usize::from(shard.0))?
        .endpoint
        .parse()
        .ok()
}

/// The records a fetch from offset 0 answers, as values.
/// The values of a partition's records from its log start (batches of one record each).
fn values_of(client: &mut NodeClient, topic: &str, partition: u32) -> Vec<Vec<u8>> {
    let start = match client.call(&Request::ListOffsets(spate_proto::ListOffsetsRequest {
        topic: topic.into(),
        partition: spate_proto::PartitionId(partition),
        spec: OffsetSpec::Earliest,
        epochs: ReadEpochs::default(),
    })) {
        Response::ListOffsets(listed) => listed.offset,
        other => panic!("{other:?}"),
    };
    match client.fetch(topic, partition, start, 0) {
        Response::Fetch(fetched) => records(&fetched.records)
            .into_iter()
            .map(|(_, value)| value)
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// A node's replicas are removed only when its own cluster's complete map no longer gives
/// them to it: a topic deleted and created again under the same name while the node serves
/// starts empty (the old replica goes); a restart with fewer shards keeps and serves every
/// replica (on the shard its number wraps to); a node brought to an empty etcd (another
/// cluster id) neither serves nor removes the replicas of its old cluster.
#[test]
fn replicas_are_removed_only_when_their_cluster_gives_them_away() {
    let etcd = Etcd::start("keep");
    let dir = data_dir("member-111");
    let node = spate_node::start(config(&dir, &etcd, 111, 3_000)).unwrap();
    wait_for("a controller", Duration::from_secs(10), || {
        node.is_controller()
    });
    let mut client = NodeClient::connect(node.endpoints[0]);
    // Two partitions on one node of two shards: one on each shard.
    assert!(matches!(
        client.create_topic("kept", 2),
        Response::CreateTopic(_)
    ));
    let metadata = client.metadata();
    let shards: Vec<u16> = (0..2u32)
        .map(|partition| {
            metadata
                .topics
                .iter()
                .find(|t| t.name == "kept")
                .unwrap()
                .partitions[partition as usize]
                .shard
                .0
        })
        .collect();
    assert_eq!(shards, [0, 1]);
    for partition in 0..2 {
        let mut leader = NodeClient::connect(owner(&metadata, "kept", partition));
        let value = format!("kept {partition}");
        assert_eq!(
            produced(leader.produce("kept", partition, &[value.as_bytes()], Durability::Fsync)),
            Ok(0)
        );
    }
    // Deleted and created again at once: the new topic starts empty.
    assert!(matches!(
        client.create_topic("again", 1),
        Response::CreateTopic(_)
    ));
    let mut leader = NodeClient::connect(owner(&client.metadata(), "again", 0));
    assert_eq!(
        produced(leader.produce("again", 0, &[b"old"], Durability::Fsync)),
        Ok(0)
    );
    // In one etcd transaction, so the node never sees the name without a topic: the old
    // topic's key and partition state go, a new topic (another id, the same placement)
    // comes.
    let (value, _) = etcd.get(&topic_key("spate", "again")).unwrap().unwrap();
    let mut record: TopicRecord = serde_json::from_slice(&value).unwrap();
    record.id = format!("{:032x}", 0xa9a1u32);
    etcd.run(async |client| {
        let txn = Txn::new().and_then([
            TxnOp::delete(partition_key("spate", "again", 0), None),
            TxnOp::put(
                topic_key("spate", "again"),
                serde_json::to_vec(&record).unwrap(),
                None,
            ),
        ]);
        assert!(client.txn(txn).await.unwrap().succeeded());
    });
    // The old replica's records go with it: the partition answers again, empty.
    let mut shards: std::collections::HashMap<std::net::SocketAddr, NodeClient> =
        std::collections::HashMap::new();
    wait_for(
        "the new topic served, empty",
        Duration::from_secs(10),
        || {
            let Some(leader) = routed(&client.metadata(), "again", 0) else {
                return false;
            };
            let leader = shards
                .entry(leader)
                .or_insert_with(|| NodeClient::connect(leader));
            matches!(leader.fetch("again", 0, 0, 0), Response::Fetch(fetched)
            if fetched.high_watermark == 0 && fetched.records.is_empty())
        },
    );
    drop(shards);
    let mut leader = NodeClient::connect(owner(&client.metadata(), "again", 0));
    assert_eq!(
        produced(leader.produce("again", 0, &[b"new"], Durability::Fsync)),
        Ok(0)
    );
    assert_eq!(values_of(&mut leader, "again", 0), [b"new".to_vec()]);
    drop((client, leader));
    node.shutdown();

    // One shard now (a process of its own, as a restarted node is): both replicas kept and
    // served there.
    let (mut child, endpoint) = spawn_listening(&dir, &etcd, 111, &["--shards", "1"]);
    let mut client = NodeClient::connect(endpoint);
    wait_for(
        "both partitions served again",
        Duration::from_secs(15),
        || {
            (0..2).all(|partition| {
                matches!(client.fetch("kept", partition, 0, 0), Response::Fetch(fetched)
                if records(&fetched.records) == [(0, format!("kept {partition}").into_bytes())])
            })
        },
    );
    drop(client);
    stop(&mut child);
    drop(etcd);

    // Another cluster (an empty etcd): the old replicas are neither served nor removed.
    let other = Etcd::start("other");
    let (mut child, endpoint) = spawn_listening(&dir, &other, 111, &["--shards", "1"]);
    let mut client = NodeClient::connect(endpoint);
    wait_for("the controller", Duration::from_secs(10), || {
        matches!(client.create_topic("kept", 2), Response::CreateTopic(_))
    });
    // Past the map's resync: still there, still the old cluster's.
    std::thread::sleep(Duration::from_millis(1_500));
    for partition in 0..2 {
        assert!(holds(&dir, "kept", partition));
        let mut leader = NodeClient::connect(owner(&client.metadata(), "kept", partition));
        match leader.fetch("kept", partition, 0, 0) {
            Response::Error { error, .. } => assert_eq!(error.code, ErrorCode::Storage),
            other => panic!("a replica of another cluster was served: {other:?}"),
        }
    }
    stop(&mut child);
}

/// A `spate-node` process of `etcd`'s cluster on `dir`, once it listens, and its (first)
/// shard's address.
fn spawn_listening(
    dir: &Path,
    etcd: &Etcd,
    node: u32,
    extra: &[&str],
) -> (Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_spate-node"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--etcd", &etcd.url])
        .args([
            "--node-id",
            &node.to_string(),
            "--session-timeout-ms",
            "3000",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let endpoint = line
        .trim()
        .rsplit_once(' ')
        .and_then(|(_, address)| address.parse().ok())
        .unwrap_or_else(|| panic!("the node said {line:?}"));
    (child, endpoint)
}

/// Stops a node process gracefully (SIGTERM) and waits for it.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// An admin request that waits (here a topic's creation, while the test holds the controller's
/// election so that no member answers it) holds back neither the node's other admin requests
/// nor its following of the cluster's map: a topic written meanwhile is served at once, and
/// the waiting creation still gets its answer (`Timeout`, after the node's 10 s wait).
#[test]
fn a_waiting_admin_request_holds_back_nothing_else() {
    let etcd = Etcd::start("unblocked");
    // The test's own campaign wins first: no member becomes the controller.
    etcd.run(async |client| {
        let lease = client.lease_grant(60, None).await.unwrap().id();
        client
            .campaign(controller_election("spate"), "the test", lease)
            .await
            .unwrap();
    });
    let dir = data_dir("member-111");
    let node = spate_node::start(config(&dir, &etcd, 111, 3_000)).unwrap();
    wait_for("membership", Duration::from_secs(10), || {
        etcd.member(111).is_some()
    });
    let endpoint = node.endpoints[0];
    let waiting = std::thread::spawn(move || {
        let mut client = NodeClient::connect(endpoint);
        let started = Instant::now();
        let answer = client.create_topic("waiting", 1);
        (answer, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    // Another admin request meanwhile is answered at once.
    let mut client = NodeClient::connect(endpoint);
    let asked = Instant::now();
    match client.call(&Request::DeleteTopic(spate_proto::DeleteTopicRequest {
        topic: "absent".into(),
    })) {
        Response::Error { error, .. } => assert_eq!(error.code, ErrorCode::UnknownTopic),
        other => panic!("{other:?}"),
    }
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    // A topic the (absent) controller would have made, written by hand.
    let member = etcd.member(111).unwrap().0;
    let topic = TopicRecord {
        reassigning: Vec::new(),
        v: 1,
        id: format!("{:032x}", 11),
        partitions: 1,
        replication_factor: 1,
        replicas: vec![vec![ReplicaPlacement {
            node: 111,
            shard: 0,
        }]],
        settings: TopicSettings::default(),
    };
    let partition = PartitionRecord {
        v: 1,
        topic_id: topic.id.clone(),
        leader: Some(LeaderRecord {
            node: 111,
            session: member.session.clone(),
        }),
        epoch: 1,
        isr: vec![IsrRecord {
            node: 111,
            storage: member.storage,
        }],
        partition_epoch: 1,
    };
    write_topic(&etcd, &topic, &partition);
    let written = Instant::now();
    wait_for("t served", Duration::from_secs(5), || {
        produced(client.produce("t", 0, &[b"now"], Durability::Fsync)) == Ok(0)
    });
    assert!(
        !waiting.is_finished(),
        "the creation was answered before the topic was served, after {:?}",
        written.elapsed()
    );
    let (answer, took) = waiting.join().unwrap();
    match answer {
        Response::Error { error, .. } => assert_eq!(error.code, ErrorCode::Timeout, "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(took >= Duration::from_secs(9), "{took:?}");
    node.shutdown();
}

/// Registers member `node`, played by the test, under a lease of its own (120 s): session and
/// storage id as given, its one shard at `endpoint`.
fn register_test_member(etcd: &Etcd, node: u32, session: &str, storage: u64, endpoint: &str) {
    etcd.run(async |client| {
        let lease = client.lease_grant(120, None).await.unwrap().id();
        let record = MemberRecord {
            kafka: None,
            rack: None,
            v: 1,
            node,
            session: session.to_owned(),
            storage: format!("{storage:016x}"),
            shards: vec![endpoint.to_owned()],
            since_ms: 0,
        };
        client
            .put(
                member_key("spate", node),
                serde_json::to_vec(&record).unwrap(),
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )
            .await
            .unwrap();
    });
}

/// A topic of one partition with topic id `id` on `first` and `second` (shard 0 each).
fn two_replica_topic(id: u128, first: u32, second: u32) -> TopicRecord {
    TopicRecord {
        reassigning: Vec::new(),
        v: 1,
        id: format!("{id:032x}"),
        partitions: 1,
        replication_factor: 2,
        replicas: vec![vec![
            ReplicaPlacement {
                node: first,
                shard: 0,
            },
            ReplicaPlacement {
                node: second,
                shard: 0,
            },
        ]],
        settings: TopicSettings::default(),
    }
}

/// Topic `t` with one partition on `replicas` (shard 0 each), led by `leader` (a live member)
/// in `epoch` with `isr`, written by hand as the controller would.
fn write_led_topic(etcd: &Etcd, id: u128, replicas: &[u32], leader: u32, epoch: u32, isr: &[u32]) {
    let member = etcd.member(leader).unwrap().0;
    let topic = TopicRecord {
        reassigning: Vec::new(),
        v: 1,
        id: format!("{id:032x}"),
        partitions: 1,
        replication_factor: u32::try_from(replicas.len()).unwrap(),
        replicas: vec![replicas
            .iter()
            .map(|&node| ReplicaPlacement { node, shard: 0 })
            .collect()],
        settings: TopicSettings::default(),
    };
    let partition = PartitionRecord {
        v: 1,
        topic_id: topic.id.clone(),
        leader: Some(LeaderRecord {
            node: leader,
            session: member.session,
        }),
        epoch,
        isr: isr
            .iter()
            .map(|&node| IsrRecord {
                node,
                storage: etcd
                    .member(node)
                    .map_or_else(|| format!("{:016x}", 5), |(member, _)| member.storage),
            })
            .collect(),
        partition_epoch: 1,
    };
    write_topic(etcd, &topic, &partition);
}

/// The storage id of the test's follower: member 122's (the controller keeps an ISR member
/// only with its member's data directory).
static FOLLOWER_STORAGE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(5);

/// A follower's fetch of `t`/0 as replica `replica` (data directory `FOLLOWER_STORAGE`),
/// with nothing synced.
fn replica_fetch(
    topic_id: u128,
    replica: u32,
    epoch: u32,
    fetch_offset: u64,
    last_fetched_epoch: Option<u32>,
    max_wait_ms: u32,
) -> Request {
    Request::ReplicaFetch(spate_proto::ReplicaFetchRequest {
        topic: "t".into(),
        partition: spate_proto::PartitionId(0),
        topic_id,
        replica,
        storage_id: FOLLOWER_STORAGE.load(std::sync::atomic::Ordering::Relaxed),
        leader_epoch: epoch,
        session: 1,
        incarnation: 1,
        fetch_offset,
        last_fetched_epoch,
        // Nothing synced yet: the follower joins the ISR only once it reports it (below).
        durable_end: 0,
        max_bytes: 1 << 20,
        max_wait_ms,
    })
}

fn fetched(response: Response) -> spate_proto::ReplicaFetchResponse {
    match response {
        Response::ReplicaFetch(fetched) => fetched,
        other => panic!("{other:?}"),
    }
}

fn refused_with(response: Response) -> ErrorCode {
    match response {
        Response::Error { error, .. } => error.code,
        other => panic!("{other:?}"),
    }
}

/// The leader's side of replication against a follower played by the test: the leader
/// enters its epoch in the partition's `leader-epochs` file before it serves; a follower's
/// `ReplicaFetch` gets the batches from its offset with the epoch boundaries inside them and
/// the high watermark, is refused for a stale or unknown epoch, a replica not assigned, or
/// another topic of the name, is told where it diverges or to start over, and is parked
/// until a write reaches it; `ReplicaProgress` is taken. A follower that reports holding
/// everything durably is added to the ISR by the leader (compare-and-swap in etcd, one
/// partition epoch on), the high watermark is then the smallest durable end over both (an
/// `fsync` produce waits for the follower's report); a follower that stops fetching is
/// removed after `replica.lag.time.max` and the leader acknowledges alone again.
#[test]
fn a_leader_answers_its_followers_fetches() {
    let etcd = Etcd::start("leader");
    let dir = data_dir("member-121");
    let node = spate_node::start(config(&dir, &etcd, 121, 3_000)).unwrap();
    // Member 122 is the test: registered under a lease of its own (so the controller keeps
    // it in the ISR below), fetching by hand.
    let follower_storage = 0x0122_0122_u64;
    FOLLOWER_STORAGE.store(follower_storage, std::sync::atomic::Ordering::Relaxed);
    register_test_member(
        &etcd,
        122,
        &format!("{:016x}", 0x122),
        follower_storage,
        "127.0.0.1:9",
    );
    wait_for("membership", Duration::from_secs(10), || {
        etcd.member(121).is_some() && etcd.member(122).is_some()
    });
    let id = 0x1210_u128;
    write_led_topic(&etcd, id, &[121, 122], 121, 3, &[121]);
    let mut client = NodeClient::connect(node.endpoints[0]);
    wait_for("t served", Duration::from_secs(5), || {
        produced(client.produce("t", 0, &[b"a", b"b"], Durability::Fsync)) == Ok(0)
    });
    assert_eq!(
        produced(client.produce("t", 0, &[b"c"], Durability::Fsync)),
        Ok(2)
    );
    let chain = std::fs::read(dir.join("topics/t-0/leader-epochs")).unwrap();
    let chain = spate_core::replica::LeaderEpochs::from_file(&chain).unwrap();
    assert_eq!(
        chain.latest_epoch(),
        Some(spate_core::replica::LeaderEpoch(3))
    );
    assert_eq!(chain.entries().len(), 1);
    assert_eq!(chain.entries()[0].start.0, 0);

    // From the start: every batch, the epoch they belong to, the high watermark.
    let answer = fetched(client.call(&replica_fetch(id, 122, 3, 0, None, 0)));
    assert_eq!(answer.diverging, None);
    assert_eq!((answer.high_watermark, answer.log_start_offset), (3, 0));
    assert_eq!(
        answer.epochs,
        vec![spate_proto::EpochBoundary {
            epoch: 3,
            start_offset: 0
        }]
    );
    let values: Vec<Vec<u8>> = records(&answer.records)
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    // Refusals.
    let code = |request: Request, client: &mut NodeClient| refused_with(client.call(&request));
    assert_eq!(
        code(replica_fetch(id, 122, 2, 0, None, 0), &mut client),
        ErrorCode::FencedLeaderEpoch
    );
    assert_eq!(
        code(replica_fetch(id, 122, 4, 0, None, 0), &mut client),
        ErrorCode::UnknownLeaderEpoch
    );
    assert_eq!(
        code(replica_fetch(id, 123, 3, 0, None, 0), &mut client),
        ErrorCode::ReplicaNotAvailable
    );
    assert_eq!(
        code(replica_fetch(id + 1, 122, 3, 0, None, 0), &mut client),
        ErrorCode::NotLeaderOrFollower
    );
    // A follower past the leader's end of its last epoch truncates there.
    let answer = fetched(client.call(&replica_fetch(id, 122, 3, 9, Some(3), 0)));
    assert_eq!(
        answer.diverging,
        Some(spate_proto::DivergingEpoch {
            epoch: 3,
            end_offset: 3
        })
    );
    assert!(answer.records.is_empty());
    // One whose last epoch precedes the leader's chain starts over at the log start.
    match client.call(&replica_fetch(id, 122, 3, 2, Some(1), 0)) {
        Response::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::OffsetOutOfRange, "{error}");
            assert_eq!(
                error.detail,
                spate_proto::ErrorDetail::OffsetRange {
                    log_start_offset: 0,
                    high_watermark: 3
                }
            );
        }
        other => panic!("{other:?}"),
    }
    // Progress reports are taken.
    let progress = Request::ReplicaProgress(spate_proto::ReplicaProgressRequest {
        topic: "t".into(),
        partition: spate_proto::PartitionId(0),
        topic_id: id,
        replica: 122,
        storage_id: FOLLOWER_STORAGE.load(std::sync::atomic::Ordering::Relaxed),
        leader_epoch: 3,
        session: 1,
        incarnation: 1,
        log_end: 3,
        durable_end: 0,
    });
    assert!(matches!(client.call(&progress), Response::ReplicaProgress));
    // A follower at the end is parked until a write reaches it.
    let endpoint = node.endpoints[0];
    let parked = std::thread::spawn(move || {
        let mut follower = NodeClient::connect(endpoint);
        let asked = Instant::now();
        let answer = fetched(follower.call(&replica_fetch(id, 122, 3, 3, Some(3), 20_000)));
        (answer, asked.elapsed(), follower)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        produced(client.produce("t", 0, &[b"d"], Durability::Fsync)),
        Ok(3)
    );
    // A second connection of the follower, in the same session: what it says counts there
    // too (sessions, not connections, order what a follower says).
    let (answer, waited, mut follower) = parked.join().unwrap();
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(records(&answer.records), vec![(3, b"d".to_vec())]);
    assert_eq!(answer.epochs[0].epoch, 3);

    // The follower reports it holds everything, durably: caught up, the leader adds it to
    // the ISR (by compare-and-swap in etcd).
    let progress = Request::ReplicaProgress(spate_proto::ReplicaProgressRequest {
        log_end: 4,
        durable_end: 4,
        ..match progress {
            Request::ReplicaProgress(progress) => progress,
            _ => unreachable!(),
        }
    });
    assert!(matches!(
        follower.call(&progress),
        Response::ReplicaProgress
    ));
    wait_for("122 in sync", Duration::from_secs(5), || {
        isr_nodes(&partition_record(&etcd)) == vec![121, 122]
    });
    let record = partition_record(&etcd);
    assert_eq!((record.epoch, record.partition_epoch), (3, 2));
    assert_eq!(record.isr[1].storage, format!("{follower_storage:016x}"));
    // The high watermark is the smallest durable end over the ISR: a `fsync` produce waits
    // for the follower, a `write` one does not.
    let at_end = fetched(follower.call(&replica_fetch(id, 122, 3, 4, Some(3), 0)));
    assert_eq!((at_end.diverging, at_end.high_watermark), (None, 4));
    assert_eq!(
        produced(client.produce("t", 0, &[b"e"], Durability::Write)),
        Ok(4)
    );
    let endpoint = node.endpoints[0];
    let waiting = std::thread::spawn(move || {
        let mut producer = NodeClient::connect(endpoint);
        produced(producer.produce("t", 0, &[b"f"], Durability::Fsync))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "acknowledged before the follower held it"
    );
    // The follower fetches both in a newer session, over its first connection (as a replica
    // moved to another shard of its node fetches over that shard's link, which may be older):
    // the newer session counts, whichever connection brings it…
    let in_session = |request: Request, session| match request {
        Request::ReplicaFetch(fetch) => {
            Request::ReplicaFetch(spate_proto::ReplicaFetchRequest { session, ..fetch })
        }
        Request::ReplicaProgress(report) => {
            Request::ReplicaProgress(spate_proto::ReplicaProgressRequest { session, ..report })
        }
        other => other,
    };
    let answer = fetched(client.call(&in_session(replica_fetch(id, 122, 3, 4, Some(3), 0), 2)));
    assert_eq!(answer.diverging, None);
    assert_eq!(records(&answer.records).len(), 2);
    let progress = Request::ReplicaProgress(spate_proto::ReplicaProgressRequest {
        log_end: 6,
        durable_end: 6,
        ..match progress {
            Request::ReplicaProgress(progress) => progress,
            _ => unreachable!(),
        }
    });
    // …and a report of the older session, even over the newer connection, counts for
    // nothing: the produce still waits…
    assert!(matches!(
        follower.call(&progress),
        Response::ReplicaProgress
    ));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "a report of an older session counted"
    );
    // …until the newer session reports: the produce is acknowledged.
    assert!(matches!(
        follower.call(&in_session(progress.clone(), 2)),
        Response::ReplicaProgress
    ));
    assert_eq!(waiting.join().unwrap(), Ok(5));
    let answer = fetched(follower.call(&replica_fetch(id, 122, 3, 6, Some(3), 0)));
    assert_eq!(answer.high_watermark, 6);
    // With `min.insync.replicas` 2, a produce is taken while both are in sync…
    let alter = |client: &mut NodeClient, min_insync_replicas| {
        client.call(&Request::AlterTopic(spate_proto::AlterTopicRequest {
            topic: "t".into(),
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
            min_insync_replicas: Some(min_insync_replicas),
            validate_only: false,
        }))
    };
    assert!(matches!(
        alter(&mut client, spate_proto::Setting::Value(2)),
        Response::AlterTopic(_)
    ));
    let waiting = std::thread::spawn(move || {
        let mut producer = NodeClient::connect(endpoint);
        produced(producer.produce("t", 0, &[b"g"], Durability::Fsync))
    });
    // …then the follower stops fetching: after `replica.lag.time.max` (10 s) the leader
    // removes it; the waiting produce is stored on every in-sync replica, but the ISR is below
    // 2 by then (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND)…
    wait_for("122 out of sync", Duration::from_secs(20), || {
        isr_nodes(&partition_record(&etcd)) == vec![121]
    });
    assert_eq!(
        waiting.join().unwrap(),
        Err(ErrorCode::NotEnoughReplicasAfterAppend)
    );
    // …and the next `fsync` produce is refused before it is appended; `write` is taken.
    assert_eq!(
        produced(client.produce("t", 0, &[b"h"], Durability::Fsync)),
        Err(ErrorCode::NotEnoughReplicas)
    );
    assert_eq!(
        produced(client.produce("t", 0, &[b"i"], Durability::Write)),
        Ok(7)
    );
    // Back to 1: the leader acknowledges alone again.
    assert!(matches!(
        alter(&mut client, spate_proto::Setting::Default),
        Response::AlterTopic(_)
    ));
    assert_eq!(
        produced(client.produce("t", 0, &[b"j"], Durability::Fsync)),
        Ok(8)
    );
    // Parked replica fetches give their in-flight slot back (a follower shard sends all its
    // fetches from this shard over one connection): more of them than a connection has
    // slots (256) wait at its end, and a progress report sent behind them is answered at
    // once, not after their wait.
    let mut link = NodeClient::connect(endpoint);
    for _ in 0..300 {
        link.send(&replica_fetch(id, 122, 3, 9, Some(3), 5_000));
    }
    let sent = Instant::now();
    let report = link.send(&progress);
    let (first, answer) = link.receive().unwrap();
    assert_eq!(first, report, "{answer:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "the report waited {:?} behind parked fetches",
        sent.elapsed()
    );
    node.shutdown();
}

/// Replication between two real nodes: a topic created with replication factor 2 has both
/// replicas in its ISR; `fsync` produces to the leader are acknowledged once the follower
/// (its fetcher) holds them durably; when the leader stops, the controller elects the
/// follower, which serves every acknowledged record, recognises an idempotent producer's
/// resend of a batch the old leader acknowledged, and takes new ones; the old leader,
/// started again, follows the new one, catches up and rejoins the ISR, and serves what was
/// written meanwhile once it leads again.
#[test]
fn a_replicated_partition_keeps_its_acknowledged_records_when_its_leader_goes() {
    let etcd = Etcd::start("replicated");
    let dirs = [data_dir("member-131"), data_dir("member-132")];
    let mut nodes = vec![
        Some(spate_node::start(config(&dirs[0], &etcd, 131, 3_000)).unwrap()),
        None,
    ];
    wait_for("a controller", Duration::from_secs(10), || {
        nodes[0].as_ref().unwrap().is_controller()
    });
    nodes[1] = Some(spate_node::start(config(&dirs[1], &etcd, 132, 3_000)).unwrap());
    wait_for("membership", Duration::from_secs(10), || {
        etcd.member(132).is_some()
    });
    let mut client = NodeClient::connect(nodes[0].as_ref().unwrap().endpoints[0]);
    let create = Request::CreateTopic(spate_proto::CreateTopicRequest {
        legacy_layout: false,
        min_insync_replicas: spate_proto::Setting::Default,
        topic: "r".into(),
        partitions: 1,
        retention_ms: spate_proto::Setting::Default,
        retention_bytes: spate_proto::Setting::Default,
        segment_bytes: spate_proto::Setting::Default,
        replication_factor: 2,
    });
    assert!(matches!(client.call(&create), Response::CreateTopic(_)));
    let state = || partitions_of(&etcd, "r").remove(0);
    let first = state();
    assert_eq!(isr_nodes(&first).len(), 2, "{first:?}");
    let leader = first.leader.unwrap().node;
    let at = |node: u32| usize::try_from(node - 131).unwrap();
    let follower = if leader == 131 { 132 } else { 131 };
    // Metadata with placement names the leader, its epoch, the replicas and the ISR by node
    // id, and the members (without Kafka addresses here: none configured).
    let (assigned, _) = etcd.get(&topic_key("spate", "r")).unwrap().unwrap();
    let assigned: TopicRecord = serde_json::from_slice(&assigned).unwrap();
    let placed = spate_proto::PartitionPlacement {
        leader: Some(leader),
        epoch: 1,
        replicas: assigned.replicas[0].iter().map(|at| at.node).collect(),
        isr: isr_nodes(&state()),
    };
    wait_for("the placement", Duration::from_secs(10), || {
        let asked = Request::Metadata(spate_proto::MetadataRequest {
            topics: vec!["r".into()],
            settings: false,
            placement: true,
            racks: false,
        });
        match client.call(&asked) {
            Response::Metadata(metadata) => {
                let members: Vec<(u32, String)> = metadata
                    .members
                    .unwrap_or_default()
                    .into_iter()
                    .map(|member| (member.node, member.kafka))
                    .collect();
                members == vec![(131, String::new()), (132, String::new())]
                    && metadata.topics[0].replicas == vec![placed.clone()]
            }
            _ => false,
        }
    });
    // The leader's shard for the partition, once the leader took its epoch.
    let mut at_leader = NodeClient::connect(owner(&client.metadata(), "r", 0));
    let mut written = Vec::new();
    wait_for("the leader serving", Duration::from_secs(10), || {
        produced(at_leader.produce("r", 0, &[b"record 0"], Durability::Fsync)) == Ok(0)
    });
    written.push(b"record 0".to_vec());
    for n in 1..19u32 {
        let value = format!("record {n}");
        let offset = produced(at_leader.produce("r", 0, &[value.as_bytes()], Durability::Fsync))
            .unwrap_or_else(|code| panic!("produce {n}: {code:?}"));
        assert_eq!(offset, u64::from(n));
        written.push(value.into_bytes());
    }
    // The last one from an idempotent producer: its state is replicated with its batch.
    let idempotent = Request::Produce(spate_proto::ProduceRequest {
        topic: "r".into(),
        partition: spate_proto::PartitionId(0),
        durability: Durability::Fsync,
        batch: common::idempotent_batch(&[b"record 19"], 4_242, 0),
    });
    assert_eq!(produced(at_leader.call(&idempotent)), Ok(19));
    written.push(b"record 19".to_vec());
    // Both replicas stayed in sync.
    assert_eq!(isr_nodes(&state()).len(), 2);
    // Records deleted on the leader (DeleteRecords) go on the follower too, durably: they do
    // not come back when it leads.
    assert!(matches!(
        at_leader.call(&Request::DeleteRecords(spate_proto::DeleteRecordsRequest {
            topic: "r".into(),
            partition: spate_proto::PartitionId(0),
            offset: 5,
        })),
        Response::DeleteRecords(_)
    ));
    let follower_marker = dirs[at(follower)]
        .join("topics/r-0")
        .join(format!("{:020}.start", 5));
    wait_for(
        "the follower's log start at 5",
        Duration::from_secs(10),
        || follower_marker.exists(),
    );
    written.drain(..5);
    // The leader goes: the follower leads the next epoch and serves every acknowledged record.
    nodes[at(leader)].take().unwrap().shutdown();
    wait_for("the follower leading", Duration::from_secs(15), || {
        let record = state();
        record.leader.as_ref().map(|leader| leader.node) == Some(follower) && record.epoch == 2
    });
    // Each node's shard holding its replica, as the controller placed it.
    let (topic, _) = etcd.get(&topic_key("spate", "r")).unwrap().unwrap();
    let topic: TopicRecord = serde_json::from_slice(&topic).unwrap();
    let shard_of = |node: u32| -> usize {
        let at = topic.replicas[0].iter().find(|at| at.node == node).unwrap();
        usize::from(at.shard) % 2
    };
    let mut at_follower =
        NodeClient::connect(nodes[at(follower)].as_ref().unwrap().endpoints[shard_of(follower)]);
    // The producer did not hear its acknowledgement and sends the batch again, now to the
    // new leader: recognised from the replicated batches, answered with its first offset,
    // not stored twice.
    wait_for("the new leader serving", Duration::from_secs(10), || {
        produced(at_follower.call(&idempotent)) == Ok(19)
    });
    assert_eq!(
        produced(at_follower.produce("r", 0, &[b"after"], Durability::Fsync)),
        Ok(20)
    );
    written.push(b"after".to_vec());
    assert_eq!(values_of(&mut at_follower, "r", 0), written);
    // Led, with one of its two replicas in sync: under-replicated, as every node tells.
    wait_for("r-0 under-replicated", Duration::from_secs(10), || {
        describe(nodes[at(follower)].as_ref().unwrap())
            .ok()
            .and_then(|cluster| cluster.partitions)
            .is_some_and(|health| {
                health.under_replicated == 1
                    && health.listed.iter().any(|status| {
                        status.topic == "r"
                            && status.leader == Some(follower)
                            && status.isr == vec![follower]
                    })
            })
    });
    // The old leader comes back: it follows, catches up, and rejoins the ISR.
    nodes[at(leader)] =
        Some(spate_node::start(config(&dirs[at(leader)], &etcd, leader, 3_000)).unwrap());
    wait_for("both in sync again", Duration::from_secs(20), || {
        isr_nodes(&state()).len() == 2
    });
    wait_for("none under-replicated", Duration::from_secs(10), || {
        describe(nodes[at(follower)].as_ref().unwrap())
            .ok()
            .and_then(|cluster| cluster.partitions)
            .is_some_and(|health| health.under_replicated == 0 && health.offline == 0)
    });
    // The new leader goes too: the old one leads again, with everything.
    nodes[at(follower)].take().unwrap().shutdown();
    wait_for(
        "the old leader leading again",
        Duration::from_secs(15),
        || {
            let record = state();
            record.leader.as_ref().map(|l| l.node) == Some(leader) && record.epoch == 3
        },
    );
    let mut again =
        NodeClient::connect(nodes[at(leader)].as_ref().unwrap().endpoints[shard_of(leader)]);
    wait_for("the old leader serving", Duration::from_secs(10), || {
        matches!(again.fetch("r", 0, 5, 0), Response::Fetch(_))
    });
    assert_eq!(values_of(&mut again, "r", 0), written);
    // Kafka's leader epochs (KIP-320) as this leader's chain has them: epoch 1 from the log
    // start (5), epoch 2 from 20, epoch 3 (this leadership, nothing written yet) from 21.
    let fetch = |client: &mut NodeClient, epochs: ReadEpochs| {
        client.call(&Request::Fetch(FetchRequest {
            topic: "r".into(),
            partition: spate_proto::PartitionId(0),
            offset: 5,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            min_bytes: 0,
            epochs,
        }))
    };
    let boundary = |epoch, start_offset| spate_proto::EpochBoundary {
        epoch,
        start_offset,
    };
    let asked = |current| ReadEpochs {
        answer: true,
        current,
    };
    match fetch(&mut again, asked(Some(3))) {
        Response::Fetch(answer) => {
            assert_eq!(answer.epochs, vec![boundary(1, 5), boundary(2, 20)]);
        }
        other => panic!("{other:?}"),
    }
    // Not asked: no epochs (what the SDK and older gateways get).
    match fetch(&mut again, ReadEpochs::default()) {
        Response::Fetch(answer) => assert!(answer.epochs.is_empty()),
        other => panic!("{other:?}"),
    }
    // A reader with a stale epoch is fenced; one ahead of this node is told it is unknown.
    let refused = |response: Response| match response {
        Response::Error { error, .. } => error.code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(fetch(&mut again, asked(Some(2)))),
        ErrorCode::FencedLeaderEpoch
    );
    assert_eq!(
        refused(fetch(&mut again, asked(Some(4)))),
        ErrorCode::UnknownLeaderEpoch
    );
    let list = |client: &mut NodeClient, spec| match client.call(&Request::ListOffsets(
        spate_proto::ListOffsetsRequest {
            topic: "r".into(),
            partition: spate_proto::PartitionId(0),
            spec,
            epochs: asked(None),
        },
    )) {
        Response::ListOffsets(found) => (found.offset, found.leader_epoch),
        other => panic!("{other:?}"),
    };
    // Where each epoch's records end, as Kafka's OffsetForLeaderEpoch answers: the next
    // epoch's start, the log end for the latest, nothing above the chain, and the chain's
    // start for an epoch before it.
    assert_eq!(list(&mut again, OffsetSpec::EpochEnd(1)), (20, Some(1)));
    assert_eq!(list(&mut again, OffsetSpec::EpochEnd(2)), (21, Some(2)));
    assert_eq!(list(&mut again, OffsetSpec::EpochEnd(3)), (21, Some(3)));
    assert_eq!(list(&mut again, OffsetSpec::EpochEnd(4)).1, None);
    assert_eq!(list(&mut again, OffsetSpec::EpochEnd(0)), (5, Some(0)));
    // The epochs of the offsets ListOffsets finds: the latest for the high watermark.
    assert_eq!(list(&mut again, OffsetSpec::Earliest), (5, Some(1)));
    assert_eq!(list(&mut again, OffsetSpec::Latest), (21, Some(3)));
    // By time (Kafka's ListOffsets with a timestamp): the epoch of the record found, and the
    // reader's epoch checked as for the others.
    let find = |client: &mut NodeClient, epochs| {
        client.call(&Request::FindRecord(spate_proto::FindRecordRequest {
            topic: "r".into(),
            partition: spate_proto::PartitionId(0),
            target: spate_proto::RecordTarget::AtOrAfter(0),
            epochs,
        }))
    };
    match find(&mut again, asked(Some(3))) {
        Response::FindRecord(found) => assert_eq!((found.offset, found.leader_epoch), (5, Some(1))),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        refused(find(&mut again, asked(Some(2)))),
        ErrorCode::FencedLeaderEpoch
    );
    for node in nodes.into_iter().flatten() {
        node.shutdown();
    }
}

/// Racks (`--rack`): each member publishes its rack, the controller puts every partition's
/// replicas on different racks (here two nodes on rack `a`, one on `b`, two copies each: each
/// partition has its copy on `b`), and the node's Metadata names the racks when asked.
#[test]
fn replicas_are_spread_over_racks() {
    let etcd = Etcd::start("racks");
    let racks = [(161, "a"), (162, "a"), (163, "b")];
    let nodes: Vec<NodeHandle> = racks
        .iter()
        .map(|&(id, rack)| {
            let mut config = config(&data_dir(&format!("member-{id}")), &etcd, id, 3_000);
            config.rack = Some(rack.to_owned());
            spate_node::start(config).unwrap()
        })
        .collect();
    wait_for("three members", Duration::from_secs(10), || {
        racks.iter().all(|&(id, _)| etcd.member(id).is_some())
    });
    assert_eq!(etcd.member(163).unwrap().0.rack.as_deref(), Some("b"));
    let mut client = NodeClient::connect(nodes[0].endpoints[0]);
    let create = Request::CreateTopic(spate_proto::CreateTopicRequest {
        legacy_layout: false,
        min_insync_replicas: spate_proto::Setting::Default,
        topic: "racked".into(),
        partitions: 6,
        retention_ms: spate_proto::Setting::Default,
        retention_bytes: spate_proto::Setting::Default,
        segment_bytes: spate_proto::Setting::Default,
        replication_factor: 2,
    });
    assert!(matches!(client.call(&create), Response::CreateTopic(_)));
    let (assigned, _) = etcd.get(&topic_key("spate", "racked")).unwrap().unwrap();
    let assigned: TopicRecord = serde_json::from_slice(&assigned).unwrap();
    let mut leaders = std::collections::BTreeSet::new();
    for replicas in &assigned.replicas {
        let nodes: Vec<u32> = replicas.iter().map(|at| at.node).collect();
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        assert!(nodes.contains(&163), "both copies on rack a: {nodes:?}");
        leaders.insert(nodes[0]);
    }
    assert_eq!(leaders.len(), 3, "leaders spread over the nodes");
    let asked = Request::Metadata(spate_proto::MetadataRequest {
        topics: vec!["racked".into()],
        settings: true,
        placement: true,
        racks: true,
    });
    match client.call(&asked) {
        Response::Metadata(metadata) => {
            assert!(metadata.racks);
            let listed: Vec<(u32, String)> = metadata
                .members
                .unwrap()
                .into_iter()
                .map(|member| (member.node, member.rack))
                .collect();
            let expected: Vec<(u32, String)> = racks
                .iter()
                .map(|&(id, rack)| (id, rack.to_owned()))
                .collect();
            assert_eq!(listed, expected);
        }
        other => panic!("{other:?}"),
    }
    // `DescribeCluster` (what `spate cluster status` shows) names them too, when asked.
    let asked = Request::DescribeCluster(spate_proto::DescribeClusterRequest {
        partitions: true,
        moves: true,
        racks: true,
    });
    match client.call(&asked) {
        Response::DescribeCluster(cluster) => {
            assert!(cluster.racks);
            let listed: Vec<(u32, &str)> = cluster
                .members
                .iter()
                .map(|member| (member.node, member.rack.as_str()))
                .collect();
            assert_eq!(listed, racks);
        }
        other => panic!("{other:?}"),
    }
    for node in nodes {
        node.shutdown();
    }
}

/// Automatic leader balancing (Kafka's `auto.leader.rebalance.enable`): a node stops, the
/// other leads its partitions; when it is back and in sync, the controller moves the
/// leaderships of the partitions it prefers back to it within a check interval — and not at
/// all with balancing off.
#[test]
fn leaderships_go_back_to_their_preferred_replicas() {
    for balancing in [true, false] {
        let etcd = Etcd::start(if balancing { "balanced" } else { "unbalanced" });
        let base = if balancing { 141 } else { 151 };
        let ids = [base, base + 1];
        let dirs = ids.map(|id| data_dir(&format!("member-{id}")));
        let start = |at: usize| {
            let mut config = config(&dirs[at], &etcd, ids[at], 3_000);
            config.auto_leader_rebalance = balancing;
            config.leader_imbalance_check_ms = 1_000;
            config.leader_imbalance_percent = 10;
            spate_node::start(config).unwrap()
        };
        let mut nodes = [Some(start(0)), None];
        wait_for("a controller", Duration::from_secs(10), || {
            nodes[0].as_ref().unwrap().is_controller()
        });
        nodes[1] = Some(start(1));
        wait_for("membership", Duration::from_secs(10), || {
            etcd.member(ids[1]).is_some()
        });
        let mut client = NodeClient::connect(nodes[0].as_ref().unwrap().endpoints[0]);
        let create = Request::CreateTopic(spate_proto::CreateTopicRequest {
            legacy_layout: false,
            min_insync_replicas: spate_proto::Setting::Default,
            topic: "b".into(),
            partitions: 4,
            retention_ms: spate_proto::Setting::Default,
            retention_bytes: spate_proto::Setting::Default,
            segment_bytes: spate_proto::Setting::Default,
            replication_factor: 2,
        });
        assert!(matches!(client.call(&create), Response::CreateTopic(_)));
        let (assigned, _) = etcd.get(&topic_key("spate", "b")).unwrap().unwrap();
        let assigned: TopicRecord = serde_json::from_slice(&assigned).unwrap();
        let preferred: Vec<u32> = assigned.replicas.iter().map(|at| at[0].node).collect();
        assert!(preferred.contains(&ids[1]), "{preferred:?}");
        let leaders = || -> Vec<Option<u32>> {
            partitions_of(&etcd, "b")
                .iter()
                .map(|state| state.leader.as_ref().map(|leader| leader.node))
                .collect()
        };
        let all_in_sync = || partitions_of(&etcd, "b").iter().all(|p| p.isr.len() == 2);
        let preferred_lead =
            || leaders() == preferred.iter().map(|node| Some(*node)).collect::<Vec<_>>();
        wait_for("the preferred leaders", Duration::from_secs(10), || {
            preferred_lead() && all_in_sync()
        });
        // The second node goes: the first leads everything.
        nodes[1].take().unwrap().shutdown();
        wait_for("one leader for all", Duration::from_secs(15), || {
            leaders().iter().all(|leader| *leader == Some(ids[0]))
        });
        // Back and in sync: with balancing, its partitions are led by it again.
        nodes[1] = Some(start(1));
        wait_for("both in sync again", Duration::from_secs(20), all_in_sync);
        if balancing {
            wait_for(
                "the preferred leaders again",
                Duration::from_secs(10),
                preferred_lead,
            );
        } else {
            std::thread::sleep(Duration::from_secs(4));
            assert!(
                leaders().iter().all(|leader| *leader == Some(ids[0])),
                "{:?}",
                leaders()
            );
        }
        for node in nodes.into_iter().flatten() {
            node.shutdown();
        }
    }
}

/// A real follower node and the test as its partition's leader: etcd, the test's listener
/// (its one shard), the follower node, its data directory, topic `id` on both, and the
/// partition led by the test in `epoch` (written by the caller when its leader side runs).
struct TestLeads {
    etcd: Etcd,
    listener: std::net::TcpListener,
    node: NodeHandle,
    dir: PathBuf,
    topic: TopicRecord,
    led_by_test: PartitionRecord,
    follower_storage: String,
}

impl TestLeads {
    fn start(name: &str, leader: u32, follower: u32, epoch: u32, leader_isr_only: bool) -> Self {
        let etcd = Etcd::start(name);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let session = format!("{leader:016x}");
        register_test_member(&etcd, leader, &session, u64::from(leader), &endpoint);
        let dir = data_dir(&format!("member-{follower}"));
        let node = spate_node::start(config(&dir, &etcd, follower, 3_000)).unwrap();
        wait_for("membership", Duration::from_secs(10), || {
            etcd.member(follower).is_some()
        });
        let follower_storage = etcd.member(follower).unwrap().0.storage;
        let topic = two_replica_topic(u128::from(follower), leader, follower);
        let mut isr = vec![IsrRecord {
            node: leader,
            storage: format!("{leader:016x}"),
        }];
        if !leader_isr_only {
            isr.push(IsrRecord {
                node: follower,
                storage: follower_storage.clone(),
            });
        }
        let led_by_test = PartitionRecord {
            v: 1,
            topic_id: topic.id.clone(),
            leader: Some(LeaderRecord {
                node: leader,
                session,
            }),
            epoch,
            isr,
            partition_epoch: 1,
        };
        TestLeads {
            etcd,
            listener,
            node,
            dir,
            topic,
            led_by_test,
            follower_storage,
        }
    }

    /// The follower leads `epoch`, alone in the ISR.
    fn follower_leads(&self, name: &str, follower: u32, epoch: u32) {
        let member = self.etcd.member(follower).unwrap().0;
        let state = PartitionRecord {
            leader: Some(LeaderRecord {
                node: follower,
                session: member.session,
            }),
            epoch,
            isr: vec![IsrRecord {
                node: follower,
                storage: self.follower_storage.clone(),
            }],
            partition_epoch: self.led_by_test.partition_epoch + 1,
            ..self.led_by_test.clone()
        };
        write_topic_named(&self.etcd, name, &self.topic, &state);
    }
}

/// A stamped one-record batch at `offset` with `value`.
fn stamped(offset: u64, value: &str) -> Vec<u8> {
    let mut batch = common::batch(&[value.as_bytes()]).to_vec();
    spate_format::stamp(&mut batch, spate_format::Offset(offset), 1_765_000_000_000).unwrap();
    batch
}

/// The test's side of a leader's link: answers each `ReplicaFetch` with what `answer` says
/// for it (and each `ReplicaProgress` with an empty answer) until `answer` says stop.
fn serve_as_leader(
    listener: std::net::TcpListener,
    mut answer: impl FnMut(&spate_proto::ReplicaFetchRequest) -> Option<Response> + Send + 'static,
) -> std::thread::JoinHandle<Vec<spate_proto::ReplicaFetchRequest>> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut asked = Vec::new();
        'links: for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let decoder = spate_proto::FrameDecoder::new(1 << 24);
            let mut buffer = bytes::BytesMut::new();
            let mut chunk = vec![0u8; 1 << 16];
            loop {
                let frame = match decoder.decode(&mut buffer).unwrap() {
                    Some(frame) => frame,
                    None => match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => continue 'links,
                        Ok(read) => {
                            buffer.extend_from_slice(&chunk[..read]);
                            continue;
                        }
                    },
                };
                let id = frame.head.correlation_id;
                let response = match Request::decode(&frame).unwrap() {
                    Request::ReplicaFetch(fetch) => {
                        let response = answer(&fetch);
                        asked.push(fetch);
                        match response {
                            Some(response) => response,
                            None => break 'links,
                        }
                    }
                    Request::ReplicaProgress(_) => Response::ReplicaProgress,
                    other => panic!("a follower sent {other:?}"),
                };
                if stream.write_all(&response.to_frame(id)).is_err() {
                    continue 'links;
                }
            }
        }
        asked
    })
}

/// The follower's side of truncation, with the test as the leader: a follower that took
/// records of epoch 1 and is told its log diverges at offset 3 cuts its log there
/// (`Recovery::truncating`, the partition reopened), fetches on from 3 with its chain cut
/// too, takes the leader's records of epoch 2, and, made the leader later, serves exactly
/// the leader's log with the epochs that wrote it in its `leader-epochs` file.
#[test]
fn a_follower_cuts_its_log_where_its_leader_says_it_diverges() {
    // Member 151 is the test.
    let leads = TestLeads::start("truncation", 151, 152, 2, false);
    let records_answer = |from: u64, values: &[&str], epochs: Vec<(u32, u64)>, hw: u64| {
        let mut records = Vec::new();
        for (n, value) in values.iter().enumerate() {
            records.extend(stamped(from + n as u64, value));
        }
        Response::ReplicaFetch(spate_proto::ReplicaFetchResponse {
            high_watermark: hw,
            log_start_offset: 0,
            diverging: None,
            epochs: epochs
                .into_iter()
                .map(|(epoch, start_offset)| spate_proto::EpochBoundary {
                    epoch,
                    start_offset,
                })
                .collect(),
            records: records.into(),
        })
    };
    let mut step = 0;
    let leader = serve_as_leader(leads.listener.try_clone().unwrap(), move |fetch| {
        assert_eq!((fetch.replica, fetch.leader_epoch), (152, 2));
        let answer = match (fetch.fetch_offset, fetch.last_fetched_epoch) {
            // First: five records of epoch 1 (the follower's high watermark becomes 2).
            (0, None) => {
                records_answer(0, &["r0", "r1", "r2", "stale3", "stale4"], vec![(1, 0)], 2)
            }
            // The follower's epoch 1 ends at 5; the leader's at 3 (its epoch 2 starts there).
            (5, Some(1)) => Response::ReplicaFetch(spate_proto::ReplicaFetchResponse {
                high_watermark: 2,
                log_start_offset: 0,
                diverging: Some(spate_proto::DivergingEpoch {
                    epoch: 1,
                    end_offset: 3,
                }),
                epochs: Vec::new(),
                records: bytes::Bytes::new(),
            }),
            // Cut at 3: the leader's records of epoch 2.
            (3, Some(1)) => {
                step = 1;
                records_answer(3, &["x3", "x4"], vec![(2, 3)], 5)
            }
            // Caught up: nothing more (the follower's fetches are answered at once).
            (5, Some(2)) => {
                std::thread::sleep(Duration::from_millis(50));
                records_answer(5, &[], vec![(2, 5)], 5)
            }
            other => panic!("an unexpected fetch {other:?} after step {step}"),
        };
        Some(answer)
    });
    write_topic_named(&leads.etcd, "d", &leads.topic, &leads.led_by_test);
    // The follower's log: r0 r1 r2 x3 x4, its chain (1, 0), (2, 3).
    let chain_path = leads.dir.join("topics/d-0/leader-epochs");
    wait_for("the follower caught up", Duration::from_secs(15), || {
        std::fs::read(&chain_path)
            .ok()
            .and_then(|bytes| spate_core::replica::LeaderEpochs::from_file(&bytes).ok())
            .is_some_and(|chain| chain.latest_epoch() == Some(spate_core::replica::LeaderEpoch(2)))
    });
    // The follower leads epoch 3: it serves the leader's log, not what it cut.
    leads.follower_leads("d", 152, 3);
    let mut client = NodeClient::connect(leads.node.endpoints[0]);
    wait_for("the follower leading", Duration::from_secs(10), || {
        matches!(client.fetch("d", 0, 0, 0), Response::Fetch(_))
    });
    let values: Vec<Vec<u8>> = values_of(&mut client, "d", 0);
    let expected: Vec<Vec<u8>> = ["r0", "r1", "r2", "x3", "x4"]
        .iter()
        .map(|value| value.as_bytes().to_vec())
        .collect();
    assert_eq!(values, expected);
    let chain =
        spate_core::replica::LeaderEpochs::from_file(&std::fs::read(&chain_path).unwrap()).unwrap();
    let entries: Vec<(u32, u64)> = chain
        .entries()
        .iter()
        .map(|entry| (entry.epoch.0, entry.start.0))
        .collect();
    assert_eq!(entries, vec![(1, 0), (2, 3), (3, 5)]);
    leads.node.shutdown();
    drop(leader);
}

/// The follower's side of a reset, with the test as the leader: a follower whose position the
/// leader no longer has (its log starts past the follower's end) empties its replica and
/// starts at the leader's log start (`Recovery::resetting`), takes the records from there,
/// and, made the leader, serves its log from that start.
#[test]
fn a_follower_starts_over_at_its_leaders_log_start() {
    starts_over("reset", 161, 162, 10);
}

/// The same when the leader's log start lies inside a batch (DeleteRecords at a mid-batch
/// offset): the follower's empty log takes that batch whole, from below its start, and its
/// log start stays where the leader's is.
#[test]
fn a_follower_starts_over_inside_a_batch() {
    starts_over("reset-mid", 163, 164, 11);
}

/// A follower (`follower`) of the test (`leader`) starts over at the leader's log start
/// `log_start`, 10 or 11: the leader's records 10 and 11 are one batch.
fn starts_over(name: &str, leader: u32, follower: u32, log_start: u64) {
    // The test is the leader, alone in the ISR.
    let leads = TestLeads::start(name, leader, follower, 4, true);
    let answer_records = move |from: u64, values: &[&str], hw: u64| {
        let mut records = Vec::new();
        if from >= 10 && !values.is_empty() {
            // b10 and b11 in one batch at 10, whatever offset was asked.
            let mut batch = common::batch(&[b"b10", b"b11"]).to_vec();
            spate_format::stamp(&mut batch, spate_format::Offset(10), 1_765_000_000_000).unwrap();
            records = batch;
        } else {
            for (n, value) in values.iter().enumerate() {
                records.extend(stamped(from + n as u64, value));
            }
        }
        Response::ReplicaFetch(spate_proto::ReplicaFetchResponse {
            high_watermark: hw,
            log_start_offset: if from >= 10 { log_start } else { 0 },
            diverging: None,
            epochs: vec![spate_proto::EpochBoundary {
                epoch: 4,
                start_offset: from,
            }],
            records: records.into(),
        })
    };
    let mut reset = false;
    let served = serve_as_leader(leads.listener.try_clone().unwrap(), move |fetch| {
        let answer = match (fetch.fetch_offset, fetch.last_fetched_epoch) {
            // Two records from the start, then the leader's retention passes them.
            (0, None) if !reset => answer_records(0, &["a0", "a1"], 2),
            (2, Some(4)) => {
                reset = true;
                Response::Error {
                    api_key: 14,
                    error: spate_proto::ErrorResponse::new(
                        ErrorCode::OffsetOutOfRange,
                        format!("the leader's log starts at {log_start}"),
                    )
                    .with_detail(spate_proto::ErrorDetail::OffsetRange {
                        log_start_offset: log_start,
                        high_watermark: 12,
                    }),
                }
            }
            (offset, None) if offset == log_start => answer_records(log_start, &["b10", "b11"], 12),
            (12, Some(4)) => {
                std::thread::sleep(Duration::from_millis(50));
                answer_records(12, &[], 12)
            }
            other => panic!("an unexpected fetch {other:?}"),
        };
        Some(answer)
    });
    write_topic_named(&leads.etcd, "s", &leads.topic, &leads.led_by_test);
    let chain_path = leads.dir.join("topics/s-0/leader-epochs");
    wait_for("the follower started over", Duration::from_secs(15), || {
        std::fs::read(&chain_path)
            .ok()
            .and_then(|bytes| spate_core::replica::LeaderEpochs::from_file(&bytes).ok())
            .is_some_and(|chain| {
                chain.entries().first().map(|entry| entry.start.0) == Some(log_start)
            })
    });
    leads.follower_leads("s", follower, 5);
    let mut client = NodeClient::connect(leads.node.endpoints[0]);
    wait_for("the follower leading", Duration::from_secs(10), || {
        matches!(client.fetch("s", 0, log_start, 0), Response::Fetch(_))
    });
    match client.fetch("s", 0, log_start, 0) {
        Response::Fetch(fetched) => {
            assert_eq!(fetched.log_start_offset, log_start);
            // The batch holding the start, whole (a client skips what is below the start).
            assert_eq!(
                records(&fetched.records),
                vec![(10, b"b10".to_vec()), (11, b"b11".to_vec())]
            );
        }
        other => panic!("{other:?}"),
    }
    leads.node.shutdown();
    drop(served);
}

/// What the test, as the leader, saw of a follower's fetch: the connection it came over
/// (numbered in accept order), its topic, session and offset.
#[derive(Debug, Clone)]
struct SeenFetch {
    connection: usize,
    topic: String,
    session: u64,
    fetch_offset: u64,
}

/// A follower shard fetches every replica it follows on one leader shard over one
/// connection, each replica in a fetch session of its own; a replica that starts over (its
/// leader's log start passed its end) goes on over the same connection in a newer session,
/// so what it reported before counts for nothing at the leader.
#[test]
fn a_follower_fetches_all_its_replicas_of_a_leader_over_one_connection() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    const TOPICS: usize = 8;
    // Member 171 is the test, leading every partition alone in its ISR.
    let leads = TestLeads::start("shared-link", 171, 172, 2, true);
    let seen: Arc<Mutex<Vec<SeenFetch>>> = Arc::default();
    let listener = leads.listener.try_clone().unwrap();
    let log = seen.clone();
    // Each connection is served by a thread of its own: a second one would be seen.
    std::thread::spawn(move || {
        for (connection, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let decoder = spate_proto::FrameDecoder::new(1 << 24);
                let mut buffer = bytes::BytesMut::new();
                let mut chunk = vec![0u8; 1 << 16];
                loop {
                    let frame = match decoder.decode(&mut buffer) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(read) => {
                                buffer.extend_from_slice(&chunk[..read]);
                                continue;
                            }
                        },
                        Err(_) => return,
                    };
                    let fetch = match Request::decode(&frame) {
                        Ok(Request::ReplicaFetch(fetch)) => fetch,
                        Ok(Request::ReplicaProgress(_)) => {
                            let answer =
                                Response::ReplicaProgress.to_frame(frame.head.correlation_id);
                            if stream.write_all(&answer).is_err() {
                                return;
                            }
                            continue;
                        }
                        other => panic!("a follower sent {other:?}"),
                    };
                    log.lock().unwrap().push(SeenFetch {
                        connection,
                        topic: fetch.topic.clone(),
                        session: fetch.session,
                        fetch_offset: fetch.fetch_offset,
                    });
                    let records = |from: u64, values: &[&str], hw: u64| {
                        let mut records = Vec::new();
                        for (n, value) in values.iter().enumerate() {
                            records.extend(stamped(from + n as u64, value));
                        }
                        Response::ReplicaFetch(spate_proto::ReplicaFetchResponse {
                            high_watermark: hw,
                            log_start_offset: if from >= 10 { 10 } else { 0 },
                            diverging: None,
                            epochs: vec![spate_proto::EpochBoundary {
                                epoch: 2,
                                start_offset: from,
                            }],
                            records: records.into(),
                        })
                    };
                    let answer = match (fetch.topic.as_str(), fetch.fetch_offset) {
                        (_, 0) => records(0, &["a0", "a1"], 2),
                        // The leader's log start passes l0's end: it starts over at 10.
                        ("l0", 2) => Response::Error {
                            api_key: 14,
                            error: spate_proto::ErrorResponse::new(
                                ErrorCode::OffsetOutOfRange,
                                "the leader's log starts at 10",
                            )
                            .with_detail(
                                spate_proto::ErrorDetail::OffsetRange {
                                    log_start_offset: 10,
                                    high_watermark: 10,
                                },
                            ),
                        },
                        (_, from) => {
                            std::thread::sleep(Duration::from_millis(20));
                            records(from, &[], from)
                        }
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
    for n in 0..TOPICS {
        let id = 0x5A00 + n as u128;
        let topic = TopicRecord {
            id: format!("{id:032x}"),
            ..leads.topic.clone()
        };
        let state = PartitionRecord {
            topic_id: topic.id.clone(),
            ..leads.led_by_test.clone()
        };
        write_topic_named(&leads.etcd, &format!("l{n}"), &topic, &state);
    }
    // Every replica caught up (fetching at its end again), l0 after starting over at 10.
    let caught_up = |seen: &[SeenFetch], topic: &str, at: u64| {
        seen.iter()
            .filter(|fetch| fetch.topic == topic && fetch.fetch_offset == at)
            .count()
            >= 2
    };
    wait_for("every replica caught up", Duration::from_secs(20), || {
        let seen = seen.lock().unwrap();
        caught_up(&seen, "l0", 10) && (1..TOPICS).all(|n| caught_up(&seen, &format!("l{n}"), 2))
    });
    let seen = seen.lock().unwrap().clone();
    let connections: std::collections::BTreeSet<usize> =
        seen.iter().map(|fetch| fetch.connection).collect();
    assert_eq!(connections.len(), 1, "{seen:?}");
    // One session per replica, and a newer one for l0 once it started over.
    let sessions = |topic: &str| -> std::collections::BTreeSet<u64> {
        seen.iter()
            .filter(|fetch| fetch.topic == topic)
            .map(|fetch| fetch.session)
            .collect()
    };
    let mut all = std::collections::BTreeSet::new();
    for n in 1..TOPICS {
        let own = sessions(&format!("l{n}"));
        assert_eq!(own.len(), 1, "l{n}: {seen:?}");
        all.extend(own);
    }
    assert_eq!(all.len(), TOPICS - 1, "{seen:?}");
    let before = seen
        .iter()
        .find(|fetch| fetch.topic == "l0" && fetch.fetch_offset == 2)
        .unwrap()
        .session;
    let after = seen
        .iter()
        .find(|fetch| fetch.topic == "l0" && fetch.fetch_offset == 10)
        .unwrap()
        .session;
    assert!(after > before, "{seen:?}");
    assert!(!all.contains(&before) && !all.contains(&after), "{seen:?}");
    leads.node.shutdown();
}

/// Moves the leadership of `topic`/`partition` to `to` (a live member in its ISR) in the next
/// epoch, by compare-and-swap, as the controller does when it elects a leader.
fn move_leader(etcd: &Etcd, topic: &str, partition: u32, to: u32) {
    let key = partition_key("spate", topic, partition);
    let (value, revision) = etcd.run(async |client| {
        let answer = client.get(key.clone(), None).await.unwrap();
        let kv = answer.kvs().first().expect("the partition key exists");
        (kv.value().to_vec(), kv.mod_revision())
    });
    let mut record: PartitionRecord = serde_json::from_slice(&value).unwrap();
    record.leader = Some(LeaderRecord {
        node: to,
        session: etcd.member(to).unwrap().0.session,
    });
    record.epoch += 1;
    record.partition_epoch += 1;
    etcd.run(async |client| {
        let txn = Txn::new()
            .when([etcd_client::Compare::mod_revision(
                key.clone(),
                etcd_client::CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(
                key.clone(),
                serde_json::to_vec(&record).unwrap(),
                None,
            )]);
        assert!(client.txn(txn).await.unwrap().succeeded());
    });
}

/// The endpoint of the shard of `node` (handle `handle`) holding its replica of
/// `topic`/`partition`, as the controller placed it.
fn replica_endpoint(
    etcd: &Etcd,
    handle: &NodeHandle,
    topic: &str,
    partition: u32,
    node: u32,
) -> std::net::SocketAddr {
    let (value, _) = etcd.get(&topic_key("spate", topic)).unwrap().unwrap();
    let record: TopicRecord = serde_json::from_slice(&value).unwrap();
    let placed = record.replicas[partition as usize]
        .iter()
        .find(|at| at.node == node)
        .expect("a replica on the node");
    handle.endpoints[usize::from(placed.shard) % handle.endpoints.len()]
}

/// Consumer groups in a cluster: the first group request has the offsets topic created
/// through the controller (its partitions replicated over both members; meanwhile
/// `CoordinatorLoadInProgress`), a commit is acknowledged by the leader of the group's
/// offsets partition, and wherever that leadership goes — to the follower and back while both
/// live, then to the follower when the leader stops — the new leader loads every acknowledged
/// commit before it answers (a node that led before loads again: it does not answer from the
/// groups of its earlier leadership), and a node that no longer leads answers
/// `NotLeaderOrFollower`.
#[test]
fn committed_offsets_follow_the_leadership_of_their_offsets_partition() {
    use spate_proto::group::group_partition;
    use spate_proto::OFFSETS_TOPIC;
    let etcd = Etcd::start("groups");
    let dirs = [data_dir("member-141"), data_dir("member-142")];
    let mut nodes = vec![
        Some(spate_node::start(config(&dirs[0], &etcd, 141, 3_000)).unwrap()),
        None,
    ];
    wait_for("a controller", Duration::from_secs(10), || {
        nodes[0].as_ref().unwrap().is_controller()
    });
    nodes[1] = Some(spate_node::start(config(&dirs[1], &etcd, 142, 3_000)).unwrap());
    wait_for("membership", Duration::from_secs(10), || {
        etcd.member(142).is_some()
    });
    let at = |node: u32| usize::try_from(node - 141).unwrap();
    let group = "g";
    let p = group_partition(group).0;
    // No offsets topic yet: the first group request has it created, with as many replicas as
    // the node sees members (up to 3).
    let mut first = NodeClient::connect(nodes[0].as_ref().unwrap().endpoints[0]);
    wait_for(
        "the first node seeing both",
        Duration::from_secs(10),
        || first.metadata().shards.len() == 4,
    );
    match first.call(&Request::Group(spate_proto::GroupRequest::new(
        group,
        spate_proto::GroupOp::FetchOffsets(None),
    ))) {
        Response::Error { error, .. } => {
            assert_eq!(
                error.code,
                ErrorCode::CoordinatorLoadInProgress,
                "{error:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    wait_for("the offsets topic", Duration::from_secs(20), || {
        let partitions = partitions_of(&etcd, OFFSETS_TOPIC);
        partitions.len() == spate_proto::OFFSETS_PARTITIONS as usize
            && partitions
                .iter()
                .all(|record| record.leader.is_some() && isr_nodes(record).len() == 2)
    });
    let state = || partitions_of(&etcd, OFFSETS_TOPIC).remove(p as usize);
    let leader = state().leader.unwrap().node;
    let follower = if leader == 141 { 142 } else { 141 };
    let client_at = |node: u32| {
        let handle = nodes[at(node)].as_ref().unwrap();
        NodeClient::connect(replica_endpoint(&etcd, handle, OFFSETS_TOPIC, p, node))
    };
    let mut at_leader = client_at(leader);
    let fetch = spate_proto::GroupOp::FetchOffsets(None);
    wait_for("the leader coordinating", Duration::from_secs(15), || {
        matches!(at_leader.group_call(group, &fetch), Response::Group(_))
    });
    at_leader.commit(group, "t", 0, 42);
    at_leader.commit(group, "t", 1, 7);
    assert_eq!(at_leader.committed(group), vec![(0, 42), (1, 7)]);
    // The leadership moves to the follower while both live: it loads the commits.
    move_leader(&etcd, OFFSETS_TOPIC, p, follower);
    let mut at_follower = client_at(follower);
    wait_for("the follower coordinating", Duration::from_secs(15), || {
        matches!(at_follower.group_call(group, &fetch), Response::Group(_))
    });
    assert_eq!(at_follower.committed(group), vec![(0, 42), (1, 7)]);
    at_follower.commit(group, "t", 0, 50);
    // The old leader tells where the group went.
    wait_for("the old leader refusing", Duration::from_secs(10), || {
        matches!(at_leader.group_call(group, &fetch), Response::Error { error, .. }
            if error.code == ErrorCode::NotLeaderOrFollower)
    });
    // And back: the old leader loads again, and sees the commit made meanwhile.
    move_leader(&etcd, OFFSETS_TOPIC, p, leader);
    wait_for(
        "the old leader coordinating",
        Duration::from_secs(15),
        || matches!(at_leader.group_call(group, &fetch), Response::Group(_)),
    );
    assert_eq!(at_leader.committed(group), vec![(0, 50), (1, 7)]);
    at_leader.commit(group, "t", 1, 9);
    // The leader stops: the controller elects the follower, which has every commit.
    wait_for("both in sync", Duration::from_secs(10), || {
        isr_nodes(&state()).len() == 2
    });
    nodes[at(leader)].take().unwrap().shutdown();
    wait_for("the follower elected", Duration::from_secs(15), || {
        state().leader.map(|elected| elected.node) == Some(follower)
    });
    wait_for(
        "the follower coordinating again",
        Duration::from_secs(15),
        || matches!(at_follower.group_call(group, &fetch), Response::Group(_)),
    );
    assert_eq!(at_follower.committed(group), vec![(0, 50), (1, 9)]);
    for node in nodes.into_iter().flatten() {
        node.shutdown();
    }
}
