//! A fault-injection run against a real cluster, in the manner of Jepsen: a real etcd cluster
//! of three members, three node processes (`spate node`) and a gateway, idempotent producers
//! writing through the gateway with `fsync` (acks=all) to a topic of three partitions
//! replicated on all three nodes, a reader fetching what is visible all along and a member of
//! a consumer group committing what it was handed, and a nemesis that, one fault at a time,
//! kills a node with SIGKILL (and starts it again), pauses one with SIGSTOP for longer than
//! the session timeout (then SIGCONT), kills an etcd member with SIGKILL (and starts it
//! again), cuts a node off from the other nodes or from etcd (each node runs in a network
//! namespace of its own: [`Network`]), takes the etcd quorum away (two members killed, then
//! started again), fills a node's disk (each node has a file system of its own: [`Disks`]),
//! or moves a partition (its replicas cut to two, then the third added back
//! first, then its preferred leader elected). Then every node runs again, and a checker
//! reads every partition whole and reports acknowledged records lost or moved, records
//! stored twice, records of a producer out of order, offsets the reader or the group's
//! member saw holding another value than the log holds in the end, and group commits that
//! were acknowledged and then undone, or that pass the log's end or a record the member was
//! not handed. It must report nothing.
//!
//! Built with the `cluster-tests` feature; needs root, `ip` (iproute2), `mount` and
//! `mkfs.ext4`. The short form
//! runs in CI (85 s of faults: each kind once); the
//! long one is `SPATE_FAULT_SECONDS=1800 cargo test --release -p spate-client --features
//! cluster-tests --test faults -- --nocapture` (docs/cluster.md).

#![cfg(feature = "cluster-tests")]

#[path = "../../../node/server/tests/common/etcd.rs"]
mod etcd;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd::EtcdCluster;
use spate_client::{
    Client, GroupConfig, GroupConsumer, Producer, ProducerConfig, ProducerRecord, Rebalance,
};
use spate_proto::{FetchRequest, PartitionId, Setting};

const NODES: u32 = 3;
const PARTITIONS: u32 = 3;
const PRODUCERS: usize = 2;
const TOPIC: &str = "faults";
/// The consumer group reading the topic through the faults.
const GROUP: &str = "faults-readers";
/// The nodes' session timeout: a paused node is paused longer than this.
const SESSION_TIMEOUT_MS: u64 = 3_000;

/// The run's network: each node in a network namespace of its own, joined to this one by a
/// veth on a bridge, so a fault can cut one node's traffic to another node or to etcd (a
/// blackhole route in its namespace: packets silently dropped, as a real partition does).
/// On the bridge, this namespace holds `.1` (the gateway's side) and `.2` (etcd's); node
/// `i` is `.{10 + i}`. Removed when dropped. Needs root and `ip` (iproute2).
struct Network {
    bridge: String,
    namespaces: Vec<String>,
    subnet: String,
}

impl Network {
    fn ip(arguments: &[&str]) {
        let status = Command::new("ip")
            .args(arguments)
            .status()
            .expect("ip (iproute2) must be installed; .ci/run installs it");
        assert!(status.success(), "ip {}", arguments.join(" "));
    }

    fn create(nodes: u32) -> Network {
        let tag = std::process::id() % 10_000;
        let subnet = format!("10.{}.{}", 200 + tag % 50, tag % 250);
        let network = Network {
            bridge: format!("spbr{tag}"),
            namespaces: (1..=nodes)
                .map(|node| format!("spate-{tag}-{node}"))
                .collect(),
            subnet,
        };
        Network::ip(&["link", "add", &network.bridge, "type", "bridge"]);
        for host in [1, 2] {
            let address = format!("{}.{host}/24", network.subnet);
            Network::ip(&["addr", "add", &address, "dev", &network.bridge]);
        }
        Network::ip(&["link", "set", &network.bridge, "up"]);
        for ((index, namespace), node) in network.namespaces.iter().enumerate().zip(1..) {
            let outside = format!("spv{tag}o{index}");
            let inside = format!("spv{tag}i{index}");
            Network::ip(&["netns", "add", namespace]);
            Network::ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            Network::ip(&["link", "set", &inside, "netns", namespace]);
            Network::ip(&["link", "set", &outside, "master", &network.bridge, "up"]);
            let address = format!("{}/24", network.node(node));
            Network::ip(&["-n", namespace, "addr", "add", &address, "dev", &inside]);
            Network::ip(&["-n", namespace, "link", "set", &inside, "up"]);
            Network::ip(&["-n", namespace, "link", "set", "lo", "up"]);
        }
        network
    }

    /// Node `node`'s address.
    fn node(&self, node: u32) -> String {
        format!("{}.{}", self.subnet, 10 + node)
    }

    /// The address etcd listens on.
    fn etcd(&self) -> String {
        format!("{}.2", self.subnet)
    }

    fn namespace(&self, node: u32) -> &str {
        &self.namespaces[node as usize - 1]
    }

    /// Drops what node `node` sends to `to` (`true`), or lets it through again.
    fn cut(&self, node: u32, to: &str, cut: bool) {
        let route = format!("{to}/32");
        let verb = if cut { "add" } else { "del" };
        Network::ip(&[
            "-n",
            self.namespace(node),
            "route",
            verb,
            "blackhole",
            &route,
        ]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // A namespace's removal removes its veth pair.
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// Each node's disk: an ext4 file system of its own (a sparse image on a loop device,
/// without blocks reserved for root, since nodes run as root), so a fault can fill one
/// node's disk. Unmounted and removed when dropped. Needs root, `mount` and `mkfs.ext4`.
struct Disks {
    mounts: Vec<PathBuf>,
}

impl Disks {
    fn run(program: &str, arguments: &[&std::ffi::OsStr]) {
        let status = Command::new(program)
            .args(arguments)
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|error| panic!("{program}: {error}"));
        assert!(status.success(), "{program} {arguments:?}");
    }

    fn create(dir: &Path, nodes: u32) -> Disks {
        let mut disks = Disks { mounts: Vec::new() };
        for node in 1..=nodes {
            let image = dir.join(format!("disk-{node}.img"));
            let mount = dir.join(format!("disk-{node}"));
            std::fs::create_dir_all(&mount).unwrap();
            std::fs::File::create(&image)
                .unwrap()
                .set_len(4 << 30)
                .unwrap();
            Disks::run(
                "mkfs.ext4",
                &[
                    "-q".as_ref(),
                    "-F".as_ref(),
                    "-m".as_ref(),
                    "0".as_ref(),
                    image.as_ref(),
                ],
            );
            Disks::run(
                "mount",
                &[
                    "-o".as_ref(),
                    "loop".as_ref(),
                    image.as_ref(),
                    mount.as_ref(),
                ],
            );
            disks.mounts.push(mount);
        }
        disks
    }

    /// Node `node`'s data directory, on its disk.
    fn data(&self, node: u32) -> PathBuf {
        self.mounts[node as usize - 1].join("data")
    }

    /// Fills node `node`'s disk (a preallocated ballast file, as near every free byte as
    /// the file system takes), or empties it again.
    fn fill(&self, node: u32, full: bool) {
        let ballast = self.mounts[node as usize - 1].join("ballast");
        if !full {
            std::fs::remove_file(&ballast).unwrap();
            return;
        }
        let free = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.mounts[node as usize - 1])
            .output()
            .unwrap();
        let free: u64 = String::from_utf8_lossy(&free.stdout)
            .lines()
            .last()
            .and_then(|line| line.trim().parse().ok())
            .expect("df says what is free");
        // The file system's own blocks for the file's extents come off the free space too.
        for slack in 0..64u64 {
            let length = free.saturating_sub(slack << 20).to_string();
            let filled = Command::new("fallocate")
                .args(["-l", &length])
                .arg(&ballast)
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if filled.success() {
                return;
            }
        }
        panic!("could not fill node {node}'s disk");
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        for mount in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
    }
}

fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A node process: started (again) by `start`, its first shard's address read from its
/// stdout.
struct Node {
    id: u32,
    /// Where its log goes.
    dir: PathBuf,
    /// Its data directory (on its own disk).
    data: PathBuf,
    etcd: String,
    /// Its network namespace and its address there.
    namespace: String,
    host: String,
    child: Option<Child>,
    address: Option<std::net::SocketAddr>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{}.log", self.id)))
            .unwrap();
        // `ip netns exec` enters the namespace and execs the node: the child is the node.
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.namespace,
                env!("CARGO_BIN_EXE_spate"),
            ])
            .arg("node")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--node-id", &self.id.to_string(), "--etcd", &self.etcd])
            .args(["--listen", &format!("{}:0", self.host), "--shards", "1"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--session-timeout-ms", &SESSION_TIMEOUT_MS.to_string()])
            .args(["--default-replication-factor", "3"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines
            .next()
            .expect("the node says where it listens")
            .unwrap();
        // "shard 0 listening on HOST:PORT"
        self.address = line
            .rsplit_once(' ')
            .and_then(|(_, address)| address.parse().ok());
        assert!(self.address.is_some(), "node {}: {line}", self.id);
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success());
    }

    fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.take().unwrap().wait();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the run saw: acknowledged records (partition, offset) → value, per producer the
/// values in the order it sent them (partition, sequence), and what readers read.
#[derive(Default)]
struct History {
    acknowledged: BTreeMap<(u32, u64), String>,
    unknown: usize,
    observed: HashMap<(u32, u64), String>,
    /// What the group's member was handed.
    group_seen: HashMap<(u32, u64), String>,
    /// Per partition, the offset the latest commit the coordinator acknowledged set.
    group_committed: BTreeMap<u32, u64>,
    /// Commits and polls the group's member saw fail (retried).
    group_errors: usize,
}

/// Every record of `partition` from its start, as (offset, value).
async fn read_all(client: &Client, partition: u32) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let fetched = client
            .fetch(FetchRequest {
                topic: TOPIC.into(),
                partition: PartitionId(partition),
                offset,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                min_bytes: 0,
                epochs: spate_proto::ReadEpochs::default(),
            })
            .await
            .unwrap_or_else(|error| panic!("read {partition} at {offset}: {error}"));
        let before = out.len();
        for batch in spate_format::batches(&fetched.records) {
            let batch = batch.unwrap();
            let base = batch.base_offset().0;
            for record in batch.records() {
                let record = record.unwrap();
                let at = base + u64::from(record.offset_delta);
                if at >= offset {
                    let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                    out.push((at, value));
                    offset = at + 1;
                }
            }
        }
        if out.len() == before || offset >= fetched.high_watermark {
            return out;
        }
    }
}

/// Writes `w{producer}-{n}` to partition n % PARTITIONS until `stop`, recording each answer.
async fn produce(
    writer: Producer,
    producer: usize,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
) {
    let mut pending = std::collections::VecDeque::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let value = format!("w{producer}-{n}");
        let partition = u32::try_from(n % u64::from(PARTITIONS)).unwrap();
        let record = ProducerRecord::new(value.clone().into_bytes()).partition(partition);
        let delivery = writer.send(record).await.unwrap();
        pending.push_back((value, delivery));
        n += 1;
        while pending.len() > 64 {
            let (value, delivery) = pending.pop_front().unwrap();
            settle(&history, value, &delivery.await);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for (value, delivery) in pending {
        settle(&history, value, &delivery.await);
    }
    let _ = writer.close().await;
}

fn settle(
    history: &Mutex<History>,
    value: String,
    answer: &Result<spate_client::RecordMetadata, spate_client::ClientError>,
) {
    let mut history = history.lock().unwrap();
    match answer {
        Ok(stored) => {
            history
                .acknowledged
                .insert((stored.partition, stored.offset), value);
        }
        Err(_) => history.unknown += 1,
    }
}

/// Reads every partition from where it left off until `stop`, recording each record seen.
async fn observe(client: Client, stop: Arc<AtomicBool>, history: Arc<Mutex<History>>) {
    let mut next = vec![0u64; PARTITIONS as usize];
    while !stop.load(Ordering::Relaxed) {
        for partition in 0..PARTITIONS {
            let Ok(fetched) = client
                .fetch(FetchRequest {
                    topic: TOPIC.into(),
                    partition: PartitionId(partition),
                    offset: next[partition as usize],
                    max_bytes: 256 << 10,
                    max_wait_ms: 100,
                    min_bytes: 1,
                    epochs: spate_proto::ReadEpochs::default(),
                })
                .await
            else {
                continue;
            };
            let mut history = history.lock().unwrap();
            for batch in spate_format::batches(&fetched.records) {
                let Ok(batch) = batch else { break };
                let base = batch.base_offset().0;
                for record in batch.records().flatten() {
                    let at = base + u64::from(record.offset_delta);
                    if at < next[partition as usize] {
                        continue;
                    }
                    let value = String::from_utf8_lossy(record.value.unwrap_or_default());
                    history.observed.insert((partition, at), value.into_owned());
                    next[partition as usize] = at + 1;
                }
            }
        }
    }
}

/// A member of consumer group `GROUP` reading the topic until `stop`: each record it is
/// handed is recorded and marked processed, and what it processed is committed every
/// second; each acknowledged commit is recorded with the offsets it set (the member's
/// marks start over at every rebalance, as its commits do). One member: its commits only
/// move forward, so an acknowledged one must never be found undone.
async fn consume_in_group(client: Client, stop: Arc<AtomicBool>, history: Arc<Mutex<History>>) {
    let config = GroupConfig {
        manual_processing: true,
        auto_commit_interval: None,
        max_wait: Duration::from_millis(200),
        ..GroupConfig::default()
    };
    let mut member = loop {
        match GroupConsumer::join(&client, GROUP, TOPIC, config.clone()).await {
            Ok(member) => break member,
            Err(_) if !stop.load(Ordering::Relaxed) => {
                history.lock().unwrap().group_errors += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("the group's member never joined: {error}"),
        }
    };
    let rebalanced = Arc::new(AtomicBool::new(false));
    let flag = rebalanced.clone();
    member.on_rebalance(move |_: Rebalance| flag.store(true, Ordering::Relaxed));
    let mut marked: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let polled = member.poll(Duration::from_millis(200)).await;
        if rebalanced.swap(false, Ordering::Relaxed) {
            marked.clear();
        }
        match polled {
            Ok(Some(record)) => {
                let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
                    .into_owned();
                history
                    .lock()
                    .unwrap()
                    .group_seen
                    .insert((record.partition, record.offset), value);
                if member.assignment().contains(&record.partition) {
                    member.mark_processed(record.partition, record.offset);
                    let next = marked.entry(record.partition).or_insert(0);
                    *next = (*next).max(record.offset + 1);
                }
            }
            Ok(None) => {}
            Err(_) => {
                history.lock().unwrap().group_errors += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            last_commit = Instant::now();
            let covered: Vec<(u32, u64)> = marked
                .iter()
                .filter(|(partition, _)| member.assignment().contains(partition))
                .map(|(partition, next)| (*partition, *next))
                .collect();
            let committed = member.commit().await;
            if rebalanced.swap(false, Ordering::Relaxed) {
                marked.clear();
                continue;
            }
            let mut history = history.lock().unwrap();
            match committed {
                Ok(()) => {
                    for (partition, next) in covered {
                        let at = history.group_committed.entry(partition).or_insert(0);
                        *at = (*at).max(next);
                    }
                }
                Err(_) => history.group_errors += 1,
            }
        }
    }
    let _ = member.close().await;
}

/// How long a move waits for each of its steps.
const MOVE_STEP_WAIT: Duration = Duration::from_secs(15);

/// Moves partition `round % PARTITIONS`: its replicas cut to two (one node left out, in
/// turn), then the left-out node added back as the first replica (a replica removed, its log
/// deleted, and added again), then its preferred leader elected; each step waited for (the
/// moves listed done), bounded. What happened, for the nemesis's log.
async fn move_partition(client: &Client, round: usize) -> String {
    let partition = u32::try_from(round % PARTITIONS as usize).unwrap();
    let left_out = u32::try_from(round / PARTITIONS as usize % NODES as usize).unwrap() + 1;
    let kept: Vec<u32> = (1..=NODES).filter(|node| *node != left_out).collect();
    let mut all = vec![left_out];
    all.extend(&kept);
    let mut said = format!("move {TOPIC}/{partition}:");
    for (target, what) in [(&kept, "cut to"), (&all, "back to")] {
        let answer = client
            .reassign_partitions(TOPIC, &[partition], target, None)
            .await;
        said.push_str(&format!(" {what} {target:?}"));
        if let Err(error) = answer {
            said.push_str(&format!(" (refused: {error})"));
            return said;
        }
        let deadline = Instant::now() + MOVE_STEP_WAIT;
        loop {
            let done = client
                .describe_cluster()
                .await
                .is_ok_and(|cluster| cluster.moves.is_some_and(|moves| moves.moving == 0));
            if done {
                break;
            }
            if Instant::now() > deadline {
                said.push_str(" (still moving)");
                return said;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    match client
        .elect_preferred_leaders(Some(TOPIC), &[partition])
        .await
    {
        Ok(answer) => said.push_str(&format!(", elected: {} changed", answer.changed)),
        Err(error) => said.push_str(&format!(", election refused: {error}")),
    }
    said
}

/// How long a node is cut off from the other nodes: past `replica.lag.time.max` (10 s), so
/// the leaders on both sides drop the unreachable followers from their ISRs.
const CUT_FROM_NODES: Duration = Duration::from_secs(12);

/// The nemesis: one fault at a time, chosen in turn: SIGKILL of a node (started again 4 s
/// later), SIGSTOP of one for twice the session timeout (then SIGCONT), SIGKILL of an etcd
/// member (started again 4 s later), a node cut off from the other nodes (both ways) for
/// `CUT_FROM_NODES`, a node cut off from etcd for twice the session timeout (its lease
/// lapses while it still reaches its peers and the gateway), two of the three etcd members
/// killed for twice the session timeout (the quorum lost: no lease is renewed, and none
/// expires, until they are back), a node's disk full for twice the session timeout (its
/// writes fail with ENOSPC: the partitions it holds fence, and recover once it has room), or
/// a partition moved (`mover`); 3 s of calm after each.
fn nemesis(
    nodes: &mut [Node],
    etcd: &mut EtcdCluster,
    network: &Network,
    disks: &Disks,
    mover: &dyn Fn(usize) -> String,
    until: Instant,
    log: &Path,
) {
    let mut round = 0usize;
    let mut said = String::new();
    let hosts: Vec<(u32, String)> = nodes
        .iter()
        .map(|node| (node.id, node.host.clone()))
        .collect();
    while Instant::now() < until {
        let victim = round / 8 % nodes.len();
        let node = &mut nodes[victim];
        match round % 8 {
            0 => {
                said.push_str(&format!("kill -9 node {}\n", node.id));
                node.kill();
                std::thread::sleep(Duration::from_secs(4));
                node.start();
            }
            1 => {
                said.push_str(&format!("SIGSTOP node {}\n", node.id));
                node.signal("-STOP");
                std::thread::sleep(Duration::from_millis(2 * SESSION_TIMEOUT_MS));
                node.signal("-CONT");
            }
            2 => {
                let member = round / 8 % etcd.len();
                said.push_str(&format!("kill -9 etcd member {member}\n"));
                etcd.kill(member);
                std::thread::sleep(Duration::from_secs(4));
                etcd.start(member);
            }
            3 => {
                said.push_str(&format!("node {} cut off from the other nodes\n", node.id));
                let others: Vec<&(u32, String)> =
                    hosts.iter().filter(|(id, _)| *id != node.id).collect();
                for cut in [true, false] {
                    for (other, host) in &others {
                        network.cut(node.id, host, cut);
                        network.cut(*other, &node.host, cut);
                    }
                    if cut {
                        std::thread::sleep(CUT_FROM_NODES);
                    }
                }
            }
            4 => {
                said.push_str(&format!("node {} cut off from etcd\n", node.id));
                network.cut(node.id, &network.etcd(), true);
                std::thread::sleep(Duration::from_millis(2 * SESSION_TIMEOUT_MS));
                network.cut(node.id, &network.etcd(), false);
            }
            5 => {
                let kept = round / 8 % etcd.len();
                said.push_str(&format!("etcd quorum lost (only member {kept} left)\n"));
                let killed: Vec<usize> = (0..etcd.len()).filter(|member| *member != kept).collect();
                for member in &killed {
                    etcd.kill(*member);
                }
                std::thread::sleep(Duration::from_millis(2 * SESSION_TIMEOUT_MS));
                for member in &killed {
                    etcd.start(*member);
                }
            }
            6 => {
                said.push_str(&format!("node {}'s disk full\n", node.id));
                disks.fill(node.id, true);
                std::thread::sleep(Duration::from_millis(2 * SESSION_TIMEOUT_MS));
                disks.fill(node.id, false);
            }
            _ => {
                let moved = mover(round / 8);
                said.push_str(&moved);
                said.push('\n');
            }
        }
        std::thread::sleep(Duration::from_secs(3));
        round += 1;
    }
    std::fs::write(log, said).unwrap();
}

#[test]
fn a_cluster_under_kills_and_pauses_loses_duplicates_and_reorders_nothing() {
    let seconds: u64 = std::env::var("SPATE_FAULT_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(85);
    let dir = data_dir("run");
    // Dropped last: after the nodes and etcd.
    let network = Network::create(NODES);
    let disks = Disks::create(&dir, NODES);
    let mut etcd = EtcdCluster::spawn_on("faults", &dir, 3, &network.etcd());
    etcd.wait_listening();
    let mut nodes: Vec<Node> = (1..=NODES)
        .map(|id| Node {
            id,
            dir: dir.clone(),
            data: disks.data(id),
            etcd: etcd.urls.clone(),
            namespace: network.namespace(id).to_owned(),
            host: network.node(id),
            child: None,
            address: None,
        })
        .collect();
    for node in &mut nodes {
        node.start();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|node| node.address.unwrap().to_string())
        .collect();
    let (gateway, client) = runtime.block_on(async {
        let flags = spate_gateway::Flags {
            listen: Some("127.0.0.1:0".into()),
            // Any member: the gateway learns the others from its Metadata.
            node: Some(addresses[0].clone()),
            dev_cert_dir: Some(dir.join("tls")),
            ..spate_gateway::Flags::default()
        };
        let gateway = spate_gateway::start(spate_gateway::GatewayConfig::resolve(flags).unwrap())
            .await
            .unwrap();
        let client = Client::connect(gateway.local_addr, &gateway.cert_path, "localhost")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client.describe_cluster().await.is_ok_and(|cluster| {
            cluster.members.len() == NODES as usize && cluster.controller.is_some()
        }) {
            assert!(Instant::now() < deadline, "three members");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let create = spate_client::CreateTopicRequest {
            legacy_layout: false,
            topic: TOPIC.into(),
            partitions: PARTITIONS,
            retention_ms: Setting::Default,
            retention_bytes: Setting::Default,
            // The smallest segments: logs roll (new files, new preallocations) every few
            // seconds under the faults, so a full disk is met by writes, not only by the
            // preallocated space of one large segment.
            segment_bytes: Setting::Value(u64::from(spate_format::limits::SEGMENT_SIZE_MIN)),
            replication_factor: 3,
            min_insync_replicas: Setting::Value(2),
        };
        client.create_topic_with(create).await.unwrap();
        (gateway, client)
    });
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for producer in 0..PRODUCERS {
        // Made before the faults start (each takes a producer id from the cluster).
        let config = ProducerConfig {
            linger: Duration::from_millis(2),
            delivery_timeout: Duration::from_secs(60),
            ..ProducerConfig::default()
        };
        let writer = runtime
            .block_on(Producer::new(&client, TOPIC, config))
            .unwrap();
        tasks.push(runtime.spawn(produce(writer, producer, stop.clone(), history.clone())));
    }
    tasks.push(runtime.spawn(observe(client.clone(), stop.clone(), history.clone())));
    tasks.push(runtime.spawn(consume_in_group(
        client.clone(),
        stop.clone(),
        history.clone(),
    )));
    let mover = |round: usize| runtime.block_on(move_partition(&client, round));
    nemesis(
        &mut nodes,
        &mut etcd,
        &network,
        &disks,
        &mover,
        Instant::now() + Duration::from_secs(seconds),
        &dir.join("nemesis.txt"),
    );
    // Every node runs (and none is paused); the writers finish what they sent.
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    let logs: Vec<Vec<(u64, String)>> = runtime.block_on(async {
        let mut logs = Vec::new();
        for partition in 0..PARTITIONS {
            logs.push(read_all(&client, partition).await);
        }
        logs
    });
    let group_final: BTreeMap<u32, u64> = runtime.block_on(async {
        client
            .committed_offsets(GROUP, None)
            .await
            .unwrap_or_else(|error| panic!("the group's offsets: {error}"))
            .into_iter()
            .filter(|offset| offset.topic == TOPIC && offset.offset >= 0)
            .map(|offset| (offset.partition, u64::try_from(offset.offset).unwrap()))
            .collect()
    });
    let history = history.lock().unwrap();
    let mut problems = Vec::new();
    let stored: HashMap<(u32, u64), &str> = logs
        .iter()
        .enumerate()
        .flat_map(|(partition, log)| {
            let partition = u32::try_from(partition).unwrap();
            log.iter()
                .map(move |(offset, value)| ((partition, *offset), value.as_str()))
        })
        .collect();
    for ((partition, offset), value) in &history.acknowledged {
        match stored.get(&(*partition, *offset)) {
            Some(found) if *found == value => {}
            found => problems.push(format!(
                "acknowledged {value} at {partition}/{offset}, the log holds {found:?}"
            )),
        }
    }
    let mut seen: HashMap<&str, (u32, u64)> = HashMap::new();
    for (&(partition, offset), value) in &stored {
        if let Some(first) = seen.insert(value, (partition, offset)) {
            problems.push(format!(
                "{value} stored twice: {}/{} and {partition}/{offset}",
                first.0, first.1
            ));
        }
    }
    for (partition, log) in logs.iter().enumerate() {
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (offset, value) in log {
            let (producer, sequence) = value.split_once('-').unwrap();
            let sequence: u64 = sequence.parse().unwrap();
            if let Some(before) = last.insert(producer, sequence) {
                if before >= sequence {
                    problems.push(format!(
                        "{value} at {partition}/{offset} after {producer}-{before}"
                    ));
                }
            }
        }
    }
    for ((partition, offset), value) in &history.observed {
        match stored.get(&(*partition, *offset)) {
            Some(found) if *found == value => {}
            found => problems.push(format!(
                "a reader saw {value} at {partition}/{offset}, the log holds {found:?}"
            )),
        }
    }
    // The group: what its member was handed is what the log holds; an acknowledged commit is
    // never undone; no commit passes the log's end or a record the member was not handed.
    for ((partition, offset), value) in &history.group_seen {
        match stored.get(&(*partition, *offset)) {
            Some(found) if *found == value => {}
            found => problems.push(format!(
                "the group's member was handed {value} at {partition}/{offset}, the log holds \
                 {found:?}"
            )),
        }
    }
    for (partition, log) in logs.iter().enumerate() {
        let partition = u32::try_from(partition).unwrap();
        let end = log.last().map_or(0, |(offset, _)| offset + 1);
        let acknowledged = history.group_committed.get(&partition).copied();
        let committed = group_final.get(&partition).copied();
        if acknowledged > committed {
            problems.push(format!(
                "the group's commit of {acknowledged:?} for {partition} was acknowledged, \
                 {committed:?} is committed in the end"
            ));
        }
        let committed = committed.unwrap_or(0);
        if committed > end {
            problems.push(format!(
                "the group committed {committed} for {partition}, past the log's end {end}"
            ));
        }
        for (offset, _) in log.iter().filter(|(offset, _)| *offset < committed) {
            if !history.group_seen.contains_key(&(partition, *offset)) {
                problems.push(format!(
                    "the group committed {committed} for {partition}, its member was never \
                     handed {offset}"
                ));
                break;
            }
        }
    }
    let nemesis = std::fs::read_to_string(dir.join("nemesis.txt")).unwrap_or_default();
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "faults: {} s, {} faults, {} acknowledged, {} unanswered, {} stored, {} observed; \
             the group: {} handed, committed {:?} (acknowledged {:?}), {} failed polls or commits",
            seconds,
            nemesis.lines().count(),
            history.acknowledged.len(),
            history.unknown,
            stored.len(),
            history.observed.len(),
            history.group_seen.len(),
            group_final,
            history.group_committed,
            history.group_errors
        );
    }
    assert!(
        problems.is_empty(),
        "{} problems (first 20):\n{}\nnemesis:\n{nemesis}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
    assert!(
        history.acknowledged.len() > 100,
        "too few writes were acknowledged to judge: {}",
        history.acknowledged.len()
    );
    assert!(
        history.group_seen.len() > 100 && !history.group_committed.is_empty(),
        "the group's member read or committed too little to judge: {} handed, {:?} committed",
        history.group_seen.len(),
        history.group_committed
    );
    gateway.close();
    for node in &mut nodes {
        node.stop();
    }
    etcd.stop();
}
