//! Scenarios of a replicated cluster on this machine (docs/cluster.md): an etcd (Debian's
//! `etcd-server`, found on `PATH`) and `--nodes` node processes (this binary's hidden `node`
//! command with `--etcd`, so it must be built with the `cluster` feature), each with its own
//! data directory under the benchmark's.
//!
//! - `replicated-produce`: the `produce` scenario on a topic of replication factor 1, then on
//!   one of `--replication-factor` (3), through one gateway, same cluster, same run; the ratios
//!   of throughput and of the acknowledgement p99 are the cost of replication.
//! - `failover`: a topic of `--partitions` (10,000) partitions of replication factor 3, one
//!   record written into each; the controller's node is killed with SIGKILL; the times until
//!   another controller is elected, until its lease lapsed, until every partition has a live
//!   leader again, and until every partition took a new `fsync` write. Then every partition
//!   is read back: each acknowledged record at its offset, nothing else but resent copies.
//! - `connections`: `--connections` (10,000) QUIC connections spread over one gateway process
//!   per node, each producing one record every `--interval-ms`; the gateways' memory per
//!   connection, the handshake rate, and the acknowledgement latency under that load.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use spate_client::{Client, Setting};
use spate_format::{BatchBuilder, Record};
use spate_proto::limits::RESPONSE_SIZE_MAX;
use spate_proto::{
    DescribeClusterResponse, Durability, FetchRequest, FrameDecoder, PartitionId, ProduceRequest,
    Request, Response,
};

use crate::abuse::GatewayProcess;
use crate::cluster::Target;
use crate::report::{histogram, micros, params, Latency, Meter, Run};
use crate::scenarios::{DurabilityArg, ProduceArgs};

/// Whether this build's nodes can join a cluster (the `cluster` feature).
pub const ENABLED: bool = cfg!(feature = "cluster");
pub const FEATURE_OFF: &str = "the cluster scenarios need a spate-bench built with \
     `--features cluster` (needs protoc, Debian's protobuf-compiler) and etcd on PATH \
     (Debian's etcd-server)";

/// The goal for the time from a node's loss being known (its lease lapsed) until every
/// partition has a leader again, at 10,000 partitions (issue "Several nodes").
const ELECTION_SECONDS_GOAL: f64 = 5.0;
/// How long a node or etcd may take to start, and the cluster to form.
const START_WAIT: Duration = Duration::from_secs(60);
/// How often the failover scenario asks the cluster for its state.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Writes in flight while one record is written into every partition.
const WRITES_IN_FLIGHT: usize = 256;
/// QUIC connections per client endpoint (UDP socket) of the `connections` scenario.
const CONNECTIONS_PER_ENDPOINT: u32 = 1000;
/// Handshakes in flight while the `connections` scenario connects.
const HANDSHAKES_IN_FLIGHT: usize = 128;
/// Tries of a handshake that failed, after the first.
const HANDSHAKE_TRIES: u32 = 3;
/// How long the gateways' memory is left to settle before it is read.
const MEMORY_SETTLE: Duration = Duration::from_secs(2);

/// A duration flag in seconds: finite and not negative.
pub fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!("{text}: not a number of seconds (0 or more)")),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Nodes of the cluster, each a process with its own data directory.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Shards of each node.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// The nodes' etcd session timeout: how long after `kill -9` a node is known to be gone.
    #[arg(long, default_value_t = 3000)]
    pub session_timeout_ms: u64,
    /// Longest wait for the cluster to reach a state (formed, every partition led, every
    /// partition written) before the run fails.
    #[arg(long, default_value_t = 600.0, value_parser = seconds)]
    pub timeout_seconds: f64,
    /// Each node shard's connection limit (`spate-node --max-connections`; the node's
    /// default, 1,024, when not given). A follower shard fetches over one connection per
    /// leader shard, so the partition count does not need it raised (docs/cluster.md).
    #[arg(long)]
    pub node_max_connections: Option<u32>,
}

impl ClusterArgs {
    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_seconds)
    }

    fn params(&self) -> [(&'static str, String); 4] {
        [
            ("nodes", self.nodes.to_string()),
            ("shards_per_node", self.shards.to_string()),
            ("session_timeout_ms", self.session_timeout_ms.to_string()),
            (
                "node_max_connections",
                self.node_max_connections
                    .map_or("default".into(), |max| max.to_string()),
            ),
        ]
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplicatedProduceArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The replication factor compared with 1.
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u16,
    #[command(flatten)]
    pub produce: ProduceArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Partitions of the one topic.
    #[arg(long, default_value_t = 10_000)]
    pub partitions: u32,
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u16,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Producer connections, spread evenly over the gateways (one per node).
    #[arg(long, default_value_t = 10_000)]
    pub connections: u32,
    /// Partitions of the topic they write (replication factor 3, or the nodes if fewer).
    #[arg(long, default_value_t = 12)]
    pub partitions: u32,
    /// Each connection produces one record this often (phases spread over the interval).
    #[arg(long, default_value_t = 2000)]
    pub interval_ms: u64,
    /// Value bytes per record.
    #[arg(long, default_value_t = 100)]
    pub message_size: usize,
    #[arg(long, value_enum, default_value = "fsync")]
    pub durability: DurabilityArg,
    /// How long the connections produce after every one of them produced once.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub seconds: f64,
}

/// One node process of the cluster.
struct Member {
    id: u32,
    child: Child,
    /// Its shards' addresses, shard 0 first.
    shards: Vec<SocketAddr>,
}

/// etcd and the nodes, killed when dropped.
pub struct LocalCluster {
    etcd: Child,
    members: Vec<Member>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

/// Raises this process's open-file limit to its hard limit (the nodes, started from it,
/// inherit it): thousands of partitions and connections need more than the usual 1,024.
fn raise_file_limit() {
    let _ = rlimit::utils::increase_nofile_limit(u64::MAX);
}

/// Two distinct free loopback ports (both held until both are known).
fn free_ports() -> Result<(u16, u16), String> {
    let bind = || {
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|error| format!("no free port: {error}"))
    };
    let (first, second) = (bind()?, bind()?);
    let port = |listener: &std::net::TcpListener| {
        listener
            .local_addr()
            .map(|address| address.port())
            .map_err(|error| format!("no free port: {error}"))
    };
    Ok((port(&first)?, port(&second)?))
}

/// The shard addresses a node process prints (`shard N listening on ADDR`) until `ready`;
/// `None` if it stopped first or did not get there within `START_WAIT`.
fn read_ready(stdout: std::process::ChildStdout) -> Option<Vec<SocketAddr>> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut shards = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some((_, address)) = line.split_once(" listening on ") {
                match address.parse() {
                    Ok(address) => shards.push(address),
                    Err(_) => break,
                }
            }
            if line == "ready" {
                let _ = sender.send(shards);
                return;
            }
        }
    });
    receiver.recv_timeout(START_WAIT).ok()
}

fn log_file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::create(path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            return Err(format!("{what}: not within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl LocalCluster {
    /// Starts etcd and the nodes on `dir` (emptied first; logs in `dir/*.log`); returns once
    /// every node serves (not yet once the cluster formed: [`wait_formed`]).
    pub fn start(dir: &Path, args: &ClusterArgs) -> Result<LocalCluster, String> {
        if !ENABLED {
            return Err(FEATURE_OFF.to_owned());
        }
        raise_file_limit();
        if std::fs::remove_dir_all(dir).is_ok() {
            crate::cluster::settle_filesystem();
        }
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let (client_port, peer_port) = free_ports()?;
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let etcd = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("bench={peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(log_file(&dir.join("etcd.log"))?)
            .spawn()
            .map_err(|error| format!("cannot start etcd (Debian's etcd-server): {error}"))?;
        let mut cluster = LocalCluster {
            etcd,
            members: Vec::new(),
        };
        let client_address = url.trim_start_matches("http://").to_owned();
        wait_until("etcd listening", START_WAIT, || {
            std::net::TcpStream::connect(&client_address).is_ok()
        })?;
        let me = std::env::current_exe().map_err(|error| error.to_string())?;
        for id in 1..=args.nodes {
            let data = dir.join(format!("node-{id}"));
            let mut command = Command::new(&me);
            command.args(["node", "--listen", "127.0.0.1:0"]);
            if let Some(max) = args.node_max_connections {
                command.args(["--max-connections", &max.to_string()]);
            }
            let mut child = command
                .arg("--data-dir")
                .arg(&data)
                .args([
                    "--etcd",
                    &url,
                    "--node-id",
                    &id.to_string(),
                    "--shards",
                    &args.shards.to_string(),
                    "--session-timeout-ms",
                    &args.session_timeout_ms.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log_file(&dir.join(format!("node-{id}.log")))?)
                .spawn()
                .map_err(|error| format!("cannot start node {id}: {error}"))?;
            // Kept (and so killed when the cluster is dropped) before anything can fail.
            let stdout = child.stdout.take();
            cluster.members.push(Member {
                id,
                child,
                shards: Vec::new(),
            });
            let Some(shards) = stdout.and_then(read_ready) else {
                return Err(format!(
                    "node {id} did not start serving within {START_WAIT:?}; see {}",
                    dir.join(format!("node-{id}.log")).display()
                ));
            };
            if let Some(member) = cluster.members.last_mut() {
                member.shards = shards;
            }
        }
        Ok(cluster)
    }

    /// The `--node` list of a gateway in front of node `id`: its first shard, then the others'.
    pub fn node_list(&self, id: u32) -> String {
        let own = self.members.iter().filter(|member| member.id == id);
        let others = self.members.iter().filter(|member| member.id != id);
        own.chain(others)
            .filter_map(|member| member.shards.first())
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn ids(&self) -> Vec<u32> {
        self.members.iter().map(|member| member.id).collect()
    }

    fn pid(&self, id: u32) -> Option<u32> {
        self.members
            .iter()
            .find(|member| member.id == id)
            .map(|member| member.child.id())
    }

    /// Kills node `id` with SIGKILL.
    fn kill(&mut self, id: u32) {
        if let Some(member) = self.members.iter_mut().find(|member| member.id == id) {
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
    }
}

/// A gateway in this process with the node list `nodes`.
async fn start_gateway(data_dir: &Path, nodes: String) -> Result<spate_gateway::Gateway, String> {
    let flags = spate_gateway::Flags {
        listen: Some("127.0.0.1:0".into()),
        node: Some(nodes),
        dev_cert_dir: Some(data_dir.join("tls")),
        ..spate_gateway::Flags::default()
    };
    let config = spate_gateway::GatewayConfig::resolve(flags).map_err(|error| error.to_string())?;
    spate_gateway::start(config)
        .await
        .map_err(|error| format!("cannot start a gateway: {error}"))
}

fn target_of(gateway: &spate_gateway::Gateway) -> Target {
    Target {
        address: gateway.local_addr,
        cert: gateway.cert_path.clone(),
        server_name: "localhost".into(),
        made: Default::default(),
        replication_factor: 0,
    }
}

async fn describe(client: &Client) -> Option<DescribeClusterResponse> {
    client.describe_cluster().await.ok()
}

/// Waits until every node is a member and a controller is elected.
async fn wait_formed(client: &Client, nodes: u32, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Some(cluster) = describe(client).await {
            if cluster.members.len() == nodes as usize && cluster.controller.is_some() {
                return Ok(());
            }
        }
        if started.elapsed() > limit {
            return Err(format!(
                "the cluster of {nodes} nodes did not form within {limit:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `replicated-produce`: returns the run at replication factor 1 and the one at
/// `--replication-factor`.
pub async fn replicated_produce(
    data_dir: &Path,
    args: &ReplicatedProduceArgs,
) -> Result<Vec<Run>, String> {
    let cluster = LocalCluster::start(&data_dir.join("cluster"), &args.cluster)?;
    let gateway = start_gateway(data_dir, cluster.node_list(1)).await?;
    let mut target = target_of(&gateway);
    let outcome = async {
        wait_formed(&target.client().await?, args.cluster.nodes, START_WAIT).await?;
        let mut runs = Vec::new();
        for factor in [1, args.replication_factor] {
            target.replication_factor = factor;
            let name = produce_name(args.produce.durability, factor);
            let mut run = crate::scenarios::produce(&target, &name, &args.produce).await?;
            run.scenario = "replicated-produce".into();
            // The nodes run in processes of their own: this process's CPU split says nothing.
            run.figures.retain(|figure, _| !figure.starts_with("cpu_"));
            for (key, value) in args.cluster.params() {
                run.params.insert(key.into(), value);
            }
            run.params
                .insert("replication_factor".into(), factor.to_string());
            runs.push(run);
        }
        Ok(runs)
    }
    .await;
    gateway.close();
    gateway.wait_idle().await;
    drop(cluster);
    outcome
}

/// The run's name: `produce-fsync-rf3` and so on (the ratios refer to these).
pub fn produce_name(durability: DurabilityArg, factor: u16) -> String {
    let durability = match durability {
        DurabilityArg::Fsync => "fsync",
        DurabilityArg::Write => "write",
        DurabilityArg::None => "none",
    };
    format!("produce-{durability}-rf{factor}")
}

fn durability_of(argument: DurabilityArg) -> Durability {
    match argument {
        DurabilityArg::Fsync => Durability::Fsync,
        DurabilityArg::Write => Durability::Write,
        DurabilityArg::None => Durability::None,
    }
}

/// A batch of one record holding `value`, stamped now.
pub fn batch_of(value: &[u8]) -> Result<Bytes, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(0));
    let mut builder = BatchBuilder::new();
    builder
        .push(&Record {
            timestamp: now,
            value: Some(value),
            ..Record::default()
        })
        .map_err(|error| error.to_string())?;
    builder
        .finish()
        .map(Bytes::from)
        .map_err(|error| error.to_string())
}

/// The value written into `partition` in `round` (told apart when read back).
fn round_value(partition: u32, round: u32) -> String {
    format!("partition {partition} round {round}")
}

/// Reads `partition` whole and checks that each round's value is at the offset its write was
/// acknowledged at, and that nothing else is there but copies of those values (a resend whose
/// first try's answer was lost).
async fn check_partition(
    client: &Client,
    topic: &str,
    partition: u32,
    acknowledged: &[Written],
) -> Result<(), String> {
    let mut found: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut offset = 0;
    loop {
        let answer = client
            .fetch(FetchRequest {
                topic: topic.to_owned(),
                partition: PartitionId(partition),
                offset,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                min_bytes: 0,
                epochs: spate_proto::ReadEpochs::default(),
            })
            .await
            .map_err(|error| format!("partition {partition}: cannot read it back: {error}"))?;
        let before = offset;
        for batch in spate_format::batches(&answer.records) {
            let batch = batch.map_err(|error| format!("partition {partition}: {error}"))?;
            for record in batch.records() {
                let record = record.map_err(|error| format!("partition {partition}: {error}"))?;
                let at = batch.base_offset().0 + u64::from(record.offset_delta);
                found.insert(at, record.value.unwrap_or_default().to_vec());
            }
            offset = batch.next_offset().0;
        }
        if offset >= answer.high_watermark || offset == before {
            break;
        }
    }
    let expected: Vec<String> = (1..=acknowledged.len())
        .map(|round| round_value(partition, u32::try_from(round).unwrap_or(u32::MAX)))
        .collect();
    for (round, written) in acknowledged.iter().enumerate() {
        if found.get(&written.offset).map(Vec::as_slice) != Some(expected[round].as_bytes()) {
            return Err(format!(
                "partition {partition}: the record of round {} acknowledged at offset {} is \
                 not there (found {:?})",
                round + 1,
                written.offset,
                found
                    .get(&written.offset)
                    .map(|value| String::from_utf8_lossy(value))
            ));
        }
    }
    if let Some((at, value)) = found
        .iter()
        .find(|(_, value)| !expected.iter().any(|e| e.as_bytes() == value.as_slice()))
    {
        return Err(format!(
            "partition {partition}: offset {at} holds {:?}, written by no one",
            String::from_utf8_lossy(value)
        ));
    }
    Ok(())
}

/// Where one record written into a partition landed.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    offset: u64,
    /// Whether an earlier try's answer was lost (it may be stored too, before `offset`).
    resent: bool,
}

/// Writes one `fsync` record into every partition of `topic`, trying again until `limit`
/// while the cluster cannot take it yet (no leader serving, an answer lost); returns where
/// each landed.
pub async fn write_every_partition(
    client: &Arc<Client>,
    topic: &str,
    partitions: u32,
    round: u32,
    limit: Duration,
) -> Result<Vec<Written>, String> {
    let permits = Arc::new(tokio::sync::Semaphore::new(WRITES_IN_FLIGHT));
    let deadline = Instant::now() + limit;
    let mut tasks = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|error| error.to_string())?;
        let client = client.clone();
        let topic = topic.to_owned();
        let batch = batch_of(round_value(partition, round).as_bytes())?;
        tasks.push(tokio::spawn(async move {
            let mut resent = false;
            let outcome = loop {
                match client
                    .produce(&topic, partition, Durability::Fsync, batch.clone())
                    .await
                {
                    Ok(answer) => {
                        break Ok(Written {
                            offset: answer.base_offset,
                            resent,
                        })
                    }
                    // The topic was just created: a node whose map does not show it yet
                    // answers UnknownTopic.
                    Err(error)
                        if (error.is_retriable()
                            || error.outcome_unknown()
                            || error.code() == Some(spate_proto::ErrorCode::UnknownTopic))
                            && Instant::now() < deadline =>
                    {
                        // A deposed leader answers the produces it held NotLeaderOrFollower:
                        // those may be kept too.
                        resent |= error.outcome_unknown()
                            || error.code() == Some(spate_proto::ErrorCode::NotLeaderOrFollower);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(error) => break Err(format!("partition {partition}: {error}")),
                }
            };
            drop(permit);
            outcome
        }));
    }
    let mut written = Vec::with_capacity(tasks.len());
    for task in tasks {
        written.push(task.await.map_err(|error| error.to_string())??);
    }
    Ok(written)
}

/// `failover`.
pub async fn failover(data_dir: &Path, name: &str, args: &FailoverArgs) -> Result<Run, String> {
    let mut cluster = LocalCluster::start(&data_dir.join("cluster"), &args.cluster)?;
    // One gateway per node, so one whose node survives is always there to ask.
    let mut gateways = Vec::new();
    for id in cluster.ids() {
        gateways.push((id, start_gateway(data_dir, cluster.node_list(id)).await?));
    }
    let outcome = failover_on(&mut cluster, &gateways, name, args).await;
    for (_, gateway) in &gateways {
        gateway.close();
        gateway.wait_idle().await;
    }
    drop(cluster);
    outcome
}

async fn failover_on(
    cluster: &mut LocalCluster,
    gateways: &[(u32, spate_gateway::Gateway)],
    name: &str,
    args: &FailoverArgs,
) -> Result<Run, String> {
    let limit = args.cluster.timeout();
    let first = gateways.first().ok_or("no gateway")?;
    let client = target_of(&first.1).client().await?;
    wait_formed(&client, args.cluster.nodes, START_WAIT).await?;
    let topic = "bench-failover";
    let creating = Instant::now();
    let created = client
        .create_replicated_topic(
            topic,
            args.partitions,
            args.replication_factor,
            Setting::Unlimited,
            Setting::Unlimited,
        )
        .await;
    // Thousands of partitions take longer to create than a gateway waits for an answer: an
    // answer that did not come is followed by watching the cluster until it shows them.
    let answered = match created {
        Ok(()) => true,
        Err(error) if error.outcome_unknown() => {
            crate::say(format!(
                "      the creation was not answered ({error}): waiting"
            ));
            false
        }
        Err(error) => return Err(format!("cannot create the topic: {error}")),
    };
    let created_seconds = creating.elapsed().as_secs_f64();
    let settled = |cluster: &DescribeClusterResponse| {
        cluster.partitions.as_ref().is_some_and(|health| {
            health.total == args.partitions && health.offline == 0 && health.under_replicated == 0
        })
    };
    loop {
        if describe(&client).await.is_some_and(|c| settled(&c)) {
            break;
        }
        if creating.elapsed() > limit {
            return Err("the topic's partitions were not all led and in sync in time".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let led_seconds = creating.elapsed().as_secs_f64();
    let writing = Instant::now();
    let client = Arc::new(client);
    let first = write_every_partition(&client, topic, args.partitions, 1, limit).await?;
    let write_seconds = writing.elapsed().as_secs_f64();
    let created_to_written = creating.elapsed().as_secs_f64();
    if let Some(partition) = first
        .iter()
        .position(|written| written.offset != 0 && !written.resent)
    {
        return Err(format!(
            "partition {partition}'s first record went to offset {}",
            first[partition].offset
        ));
    }
    let before = describe(&client)
        .await
        .ok_or("the cluster could not be described")?;
    let victim = before.controller.ok_or("no controller")?;
    // Asked through a gateway in front of a survivor.
    let (_, survivor) = gateways
        .iter()
        .find(|(id, _)| *id != victim)
        .ok_or("no node survives")?;
    let client = Arc::new(target_of(survivor).client().await?);
    let pid = cluster
        .pid(victim)
        .ok_or("the controller is not one of ours")?;
    crate::say(format!(
        "      killing node {victim} (the controller, pid {pid}) with SIGKILL"
    ));
    let killed = Instant::now();
    cluster.kill(victim);
    let (mut controller_at, mut gone_at, mut led_at) = (None, None, None);
    let mut offline_peak = 0;
    while led_at.is_none() {
        if killed.elapsed() > limit {
            return Err(format!(
                "after the kill: controller {controller_at:?}, member gone {gone_at:?}, \
                 every partition led {led_at:?} within {limit:?}"
            ));
        }
        let Some(state) = describe(&client).await else {
            tokio::time::sleep(POLL_INTERVAL).await;
            continue;
        };
        let now = killed.elapsed();
        if controller_at.is_none() && state.controller.is_some_and(|id| id != victim) {
            controller_at = Some(now);
        }
        if gone_at.is_none() && !state.members.iter().any(|member| member.node == victim) {
            gone_at = Some(now);
        }
        if let Some(health) = &state.partitions {
            offline_peak = offline_peak.max(health.offline);
            if gone_at.is_some() && controller_at.is_some() && health.offline == 0 {
                led_at = Some(now);
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let second = write_every_partition(&client, topic, args.partitions, 2, limit).await?;
    let serving = killed.elapsed();
    // Every acknowledged record is read back at its offset (no offset re-issued, nothing
    // lost), and nothing else is stored but resent copies.
    let checking = Instant::now();
    for partition in 0..args.partitions {
        let index = partition as usize;
        check_partition(&client, topic, partition, &[first[index], second[index]]).await?;
    }
    let check_seconds = checking.elapsed().as_secs_f64();
    let resent = first.iter().chain(&second).filter(|w| w.resent).count();
    let seconds = |at: Option<Duration>| at.map_or(f64::NAN, |at| at.as_secs_f64());
    let gone = seconds(gone_at);
    let led = seconds(led_at);
    let election = led - gone;
    let mut run = Run::new(
        name,
        "spate",
        "failover",
        params([
            ("partitions", args.partitions.to_string()),
            ("replication_factor", args.replication_factor.to_string()),
        ]),
    );
    for (key, value) in args.cluster.params() {
        run.params.insert(key.into(), value);
    }
    run.finish(serving, u64::from(args.partitions), 0);
    run.figures = BTreeMap::from([
        (
            if answered {
                "create_answered_seconds".into()
            } else {
                "create_unanswered_after_seconds".into()
            },
            created_seconds,
        ),
        (
            "create_to_all_led_in_sync_in_the_map_seconds".into(),
            led_seconds,
        ),
        (
            "create_to_every_partition_written_seconds".into(),
            created_to_written,
        ),
        ("first_write_every_partition_seconds".into(), write_seconds),
        (
            "kill_to_new_controller_seconds".into(),
            seconds(controller_at),
        ),
        ("kill_to_lease_lapsed_seconds".into(), gone),
        ("kill_to_every_partition_led_seconds".into(), led),
        (
            "lease_lapsed_to_every_partition_led_seconds".into(),
            election,
        ),
        (
            "kill_to_every_partition_written_seconds".into(),
            serving.as_secs_f64(),
        ),
        ("offline_partitions_peak".into(), f64::from(offline_peak)),
        ("writes_resent_after_a_lost_answer".into(), resent as f64),
        ("read_back_check_seconds".into(), check_seconds),
    ]);
    crate::say(format!(
        "      after the lease lapsed, every partition led in {election:.2} s \
         (goal at 10,000 partitions: ≤ {ELECTION_SECONDS_GOAL} s); a new controller {:.2} s \
         after the kill",
        seconds(controller_at)
    ));
    Ok(run)
}

/// A producer connection of the `connections` scenario: one stream, one request at a time.
struct Producer {
    connection: quinn::Connection,
    send: quinn::SendStream,
    receive: quinn::RecvStream,
    buffer: BytesMut,
    next_id: u64,
}

impl Producer {
    async fn open(
        endpoint: &quinn::Endpoint,
        address: SocketAddr,
        server_name: &str,
    ) -> Result<Producer, String> {
        let connection = endpoint
            .connect(address, server_name)
            .map_err(|error| error.to_string())?
            .await
            .map_err(|error| format!("handshake: {error}"))?;
        let (send, receive) = connection
            .open_bi()
            .await
            .map_err(|error| format!("stream: {error}"))?;
        Ok(Producer {
            connection,
            send,
            receive,
            buffer: BytesMut::new(),
            next_id: 1,
        })
    }

    /// Sends one produce request and waits for its answer.
    async fn produce(&mut self, request: &Request) -> Result<(), String> {
        let id = self.next_id;
        self.next_id += 1;
        self.send
            .write_chunk(request.to_frame(id))
            .await
            .map_err(|error| error.to_string())?;
        let decoder = FrameDecoder::new(RESPONSE_SIZE_MAX);
        loop {
            if let Some(frame) = decoder
                .decode(&mut self.buffer)
                .map_err(|error| error.to_string())?
            {
                return match Response::decode(&frame).map_err(|error| error.to_string())? {
                    Response::Produce(_) if frame.head.correlation_id == id => Ok(()),
                    Response::Error { error, .. } => Err(error.message),
                    other => Err(format!("unexpected answer {other:?}")),
                };
            }
            match self.receive.read_chunk(65_536, true).await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk.bytes),
                Ok(None) => return Err("the gateway closed the stream".into()),
                Err(error) => return Err(error.to_string()),
            }
        }
    }
}

fn rss(pid: u32) -> u64 {
    crate::abuse::memory(pid, "VmRSS:")
}

/// `connections`.
pub async fn connections(
    data_dir: &Path,
    name: &str,
    args: &ConnectionsArgs,
) -> Result<Run, String> {
    let cluster = LocalCluster::start(&data_dir.join("cluster"), &args.cluster)?;
    let per_gateway = args.connections.div_ceil(args.cluster.nodes.max(1));
    let mut gateways = Vec::new();
    for id in cluster.ids() {
        let flags = [
            "--node".to_owned(),
            cluster.node_list(id),
            "--max-connections".to_owned(),
            (per_gateway + 16).max(4096).to_string(),
        ];
        let log = data_dir.join("cluster").join(format!("gateway-{id}.log"));
        gateways.push(GatewayProcess::spawn(data_dir, None, &flags, &log)?);
    }
    let outcome = connections_on(&cluster, &gateways, name, args).await;
    drop(gateways);
    drop(cluster);
    outcome
}

async fn connections_on(
    cluster: &LocalCluster,
    gateways: &[GatewayProcess],
    name: &str,
    args: &ConnectionsArgs,
) -> Result<Run, String> {
    let first = &gateways.first().ok_or("no gateway")?.target;
    let client = first.client().await?;
    wait_formed(&client, args.cluster.nodes, START_WAIT).await?;
    let topic = "bench-connections";
    let factor = u16::try_from(args.cluster.nodes.min(3)).unwrap_or(3);
    client
        .create_replicated_topic(
            topic,
            args.partitions,
            factor,
            Setting::Unlimited,
            Setting::Unlimited,
        )
        .await
        .map_err(|error| format!("cannot create the topic: {error}"))?;
    // Every gateway learns the topic and serves one write before its memory is read.
    for gateway in gateways {
        let client = Arc::new(gateway.target.client().await?);
        write_every_partition(&client, topic, args.partitions, 1, args.cluster.timeout()).await?;
    }
    drop(client);
    tokio::time::sleep(MEMORY_SETTLE).await;
    let gateway_pids: Vec<u32> = gateways.iter().map(GatewayProcess::pid).collect();
    let node_pids: Vec<u32> = cluster
        .ids()
        .iter()
        .filter_map(|id| cluster.pid(*id))
        .collect();
    let total = |pids: &[u32]| pids.iter().map(|pid| rss(*pid)).sum::<u64>();
    let (gateways_idle, nodes_idle) = (total(&gateway_pids), total(&node_pids));

    // Connect.
    let client_config =
        spate_client::quic_client_config(&first.cert).map_err(|error| error.to_string())?;
    let mut endpoints = Vec::new();
    for _ in 0..args.connections.div_ceil(CONNECTIONS_PER_ENDPOINT) {
        // The SDK's socket (large kernel buffers): a handshake burst on a default-sized
        // socket loses packets and waits out retransmission timers.
        let socket = spate_client::quic_socket(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|error| format!("cannot open a UDP socket: {error}"))?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|error| format!("cannot open a QUIC endpoint: {error}"))?;
        endpoint.set_default_client_config(client_config.clone());
        endpoints.push(endpoint);
    }
    let connecting = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_FLIGHT));
    let mut opening = Vec::with_capacity(args.connections as usize);
    let retried = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handshakes = Arc::new(Mutex::new(histogram()));
    for index in 0..args.connections {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|error| error.to_string())?;
        let endpoint = endpoints[(index / CONNECTIONS_PER_ENDPOINT) as usize].clone();
        let gateway = &gateways[index as usize % gateways.len()].target;
        let (address, server_name) = (gateway.address, gateway.server_name.clone());
        let retried = retried.clone();
        let handshakes = handshakes.clone();
        opening.push(tokio::spawn(async move {
            // A handshake lost in a burst is tried again, as a client would.
            let mut tries = 0;
            let started = Instant::now();
            let producer = loop {
                match Producer::open(&endpoint, address, &server_name).await {
                    Ok(producer) => {
                        if let Ok(mut handshakes) = handshakes.lock() {
                            let _ = handshakes.record(micros(started.elapsed()));
                        }
                        break Ok(producer);
                    }
                    Err(_) if tries < HANDSHAKE_TRIES => {
                        tries += 1;
                        retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    outcome => break outcome,
                }
            };
            drop(permit);
            producer
        }));
    }
    let mut producers = Vec::with_capacity(opening.len());
    for task in opening {
        producers.push(task.await.map_err(|error| error.to_string())??);
    }
    let connect_seconds = connecting.elapsed().as_secs_f64();

    // Each connection produces once, then `seconds` long every `interval_ms`.
    let value = vec![b'x'; args.message_size];
    let durability = durability_of(args.durability);
    let requests: Vec<Request> = (0..args.partitions)
        .map(|partition| {
            Ok(Request::Produce(ProduceRequest {
                topic: topic.into(),
                partition: PartitionId(partition),
                durability,
                batch: batch_of(&value)?,
            }))
        })
        .collect::<Result<_, String>>()?;
    let requests = Arc::new(requests);
    let latency = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let meter = Arc::new(std::sync::OnceLock::<Meter>::new());
    let (first_round_done, mut first_round) = tokio::sync::mpsc::channel::<()>(1024);
    let (go, start) = tokio::sync::watch::channel(None::<Instant>);
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let run_for = Duration::from_secs_f64(args.seconds);
    let count = args.connections;
    let mut tasks = Vec::with_capacity(producers.len());
    for (index, mut producer) in producers.into_iter().enumerate() {
        let requests = requests.clone();
        let latency = latency.clone();
        let errors = errors.clone();
        let meter = meter.clone();
        let first_round_done = first_round_done.clone();
        let mut start = start.clone();
        let message_size = args.message_size as u64;
        tasks.push(tokio::spawn(async move {
            let request = &requests[index % requests.len()];
            let first = producer.produce(request).await;
            let _ = first_round_done.send(()).await;
            drop(first_round_done);
            first?;
            let Ok(started) = start.wait_for(Option::is_some).await.map(|at| *at) else {
                return Ok(producer.connection);
            };
            let Some(started) = started else {
                return Ok(producer.connection);
            };
            // Phases spread evenly over one interval.
            let phase = interval.mul_f64(index as f64 / f64::from(count));
            let mut next = started + phase;
            while next < started + run_for {
                tokio::time::sleep_until(next.into()).await;
                match producer.produce(request).await {
                    Ok(()) => {
                        if let Some(meter) = meter.get() {
                            meter.add(1, message_size);
                        }
                        if let Ok(mut latency) = latency.lock() {
                            let _ = latency.record(micros(next.elapsed()));
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                next += interval;
            }
            Ok::<_, String>(producer.connection)
        }));
    }
    drop(first_round_done);
    let mut answered = 0;
    while answered < count && first_round.recv().await.is_some() {
        answered += 1;
    }
    let first_round_seconds = connecting.elapsed().as_secs_f64() - connect_seconds;
    tokio::time::sleep(MEMORY_SETTLE).await;
    let (gateways_loaded, nodes_loaded) = (total(&gateway_pids), total(&node_pids));
    let producing = Instant::now();
    let _ = meter.set(Meter::start(Duration::from_millis(250)));
    let _ = go.send(Some(producing));
    let mut connections = Vec::with_capacity(tasks.len());
    let mut failed = None;
    for task in tasks {
        match task.await.map_err(|error| error.to_string())? {
            Ok(connection) => connections.push(connection),
            Err(error) => failed = failed.or(Some(error)),
        }
    }
    let elapsed = producing.elapsed();
    if let Some(error) = failed {
        return Err(format!("a producer connection failed: {error}"));
    }
    let (gateways_after, nodes_after) = (total(&gateway_pids), total(&node_pids));
    let gateways_peak: u64 = gateway_pids
        .iter()
        .map(|pid| crate::abuse::memory(*pid, "VmHWM:"))
        .sum();
    for connection in &connections {
        connection.close(0u32.into(), b"done");
    }
    for endpoint in &endpoints {
        endpoint.wait_idle().await;
    }
    let (operations, bytes, timeline) = meter.get().map(Meter::stop).unwrap_or_default();
    let mut run = Run::new(
        name,
        "spate",
        "connections",
        params([
            ("connections", args.connections.to_string()),
            ("gateways", gateways.len().to_string()),
            ("partitions", args.partitions.to_string()),
            ("replication_factor", factor.to_string()),
            ("interval_ms", args.interval_ms.to_string()),
            ("message_size", args.message_size.to_string()),
            (
                "durability",
                format!("{:?}", args.durability).to_lowercase(),
            ),
        ]),
    );
    for (key, value) in args.cluster.params() {
        run.params.insert(key.into(), value);
    }
    run.finish(elapsed, operations, bytes);
    run.timeline = timeline;
    run.errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    if let Ok(latency) = latency.lock() {
        run.latency.push(Latency::from_histogram(
            "ack (from intended send time)",
            &latency,
        ));
    }
    if let Ok(handshakes) = handshakes.lock() {
        // From the first try to the stream being open, retries included.
        run.latency.push(Latency::from_histogram(
            "connect (handshake and stream)",
            &handshakes,
        ));
    }
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let per_connection_kib = |loaded: u64, idle: u64| {
        loaded.saturating_sub(idle) as f64 / 1024.0 / f64::from(args.connections.max(1))
    };
    run.figures = BTreeMap::from([
        ("connect_seconds".into(), connect_seconds),
        (
            "handshakes_per_s".into(),
            f64::from(args.connections) / connect_seconds.max(f64::EPSILON),
        ),
        ("first_round_seconds".into(), first_round_seconds),
        (
            "handshakes_retried".into(),
            retried.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        ("gateways_rss_idle_mib".into(), mib(gateways_idle)),
        ("gateways_rss_connected_mib".into(), mib(gateways_loaded)),
        ("gateways_rss_after_run_mib".into(), mib(gateways_after)),
        ("gateways_rss_peak_mib".into(), mib(gateways_peak)),
        (
            "gateway_kib_per_connection".into(),
            per_connection_kib(gateways_loaded, gateways_idle),
        ),
        ("nodes_rss_idle_mib".into(), mib(nodes_idle)),
        ("nodes_rss_connected_mib".into(), mib(nodes_loaded)),
        ("nodes_rss_after_run_mib".into(), mib(nodes_after)),
    ]);
    Ok(run)
}
