//! Starting and stopping a node: the data directory checks, the metadata, one glommio
//! executor per shard with its listener, the channels between shard 0 (the coordinator) and
//! the others, and a graceful shutdown.

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use spate_proto::ShardId;
use thiserror::Error;

#[cfg(feature = "cluster")]
use crate::cluster::{ClusterError, ClusterSession, ClusterSettings};
use crate::config::NodeConfig;
use crate::coordinator::{self, Coordinator, ToCoordinator, ToShard};
use crate::identity::IdentityLoadError;
use crate::lock::{DataDirLock, LockError};
use crate::metadata::{Metadata, MetadataError};
use crate::metrics::{NodeMetrics, ShardMetrics};
use crate::shard::Shard;
use crate::storage::probe_direct_io;

/// Longest a shard's reactor sleeps without a timer waking it (see the task queue note).
const HEARTBEAT: Duration = Duration::from_millis(10);

/// Messages in flight between the coordinator and one shard, each way.
const SHARD_CHANNEL_MAX: usize = 64;

/// How often a shard looks at the shutdown flag (a graceful stop starts within this).
/// How long a task may run before glommio's scheduler preempts it for another queue: a long
/// recovery scan or checksum pass never holds up a shard's connections for more.
const PREEMPT_TIMER: Duration = Duration::from_millis(5);

/// The latency the shard's task queue asks of glommio (`Latency::Matters`), which makes the
/// reactor wake for blocking-pool completions (see `spawn_shard`).
const TASK_QUEUE_LATENCY: Duration = Duration::from_millis(10);

const SHUTDOWN_CHECK: Duration = Duration::from_millis(20);

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("cannot create the data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error(
        "the data directory {dir} does not support O_DIRECT ({source}); tmpfs and some other \
         filesystems silently disable it. Put the data on a real filesystem (ext4, xfs), or \
         pass --allow-buffered-io to run without direct I/O (not durable in the same way)"
    )]
    NoDirectIo { dir: String, source: std::io::Error },
    #[error(
        "the data directory {dir} is on {fstype}, which keeps data in memory: nothing would \
         survive a power loss. Put the data on a real filesystem (ext4, xfs), or pass \
         --allow-buffered-io to run there anyway (for experiments)"
    )]
    MemoryFilesystem { dir: String, fstype: String },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Identity(#[from] IdentityLoadError),
    #[cfg(feature = "cluster")]
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("invalid listen address {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error("shard {shard} failed to start: {reason}")]
    Shard { shard: u16, reason: String },
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    /// The address each shard listens on, by shard id.
    pub endpoints: Vec<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    /// Raised once per operator request to re-run recovery of fenced partitions.
    retry_fenced: Arc<AtomicU64>,
    executors: Vec<glommio::ExecutorJoinHandle<()>>,
    /// The node's membership in a cluster (`--etcd`); left first on shutdown.
    cluster: Option<Membership>,
    /// What the shards count, for a metrics listener (`None` with `--metrics-listen none`).
    pub metrics: Option<Arc<NodeMetrics>>,
    /// Held until every shard stopped: dropped last, after `executors` were joined.
    _lock: DataDirLock,
}

impl NodeHandle {
    /// Stops accepting, lets in-flight syncs finish, closes every file, and waits for every
    /// shard to stop.
    pub fn shutdown(self) {
        // A controlled shutdown: the cluster learns at once that this node is gone.
        if let Some(cluster) = self.cluster {
            leave(cluster);
        }
        self.shutdown.store(true, Ordering::Relaxed);
        for executor in self.executors {
            let _ = executor.join();
        }
    }

    /// Whether this node is its cluster's elected controller (never without `--etcd`).
    #[cfg(feature = "cluster")]
    pub fn is_controller(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(ClusterSession::is_controller)
    }

    /// Asks every shard to re-run recovery, from the media, of its fenced partitions (after
    /// the operator fixed the disk; SIGHUP in `spate-node`).
    pub fn retry_fenced(&self) {
        self.retry_fenced.fetch_add(1, Ordering::Relaxed);
    }

    /// A flag that stops the node when set (for signal handlers).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }
}

fn listen_addresses(config: &NodeConfig) -> Result<Vec<SocketAddr>, NodeError> {
    let bad = |reason: String| NodeError::Listen {
        address: config.listen.clone(),
        reason,
    };
    let base = config
        .listen
        .to_socket_addrs()
        .map_err(|error| bad(error.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))?;
    (0..config.shards)
        .map(|index| {
            let mut address = base;
            if base.port() != 0 {
                let port = u32::from(base.port()) + index;
                address.set_port(
                    u16::try_from(port).map_err(|_| {
                        bad(format!("port {port} for shard {index} is out of range"))
                    })?,
                );
            }
            Ok(address)
        })
        .collect()
}

/// Removes directories of partitions the metadata no longer knows (a deletion that did not
/// finish before a crash).
fn remove_orphans(config: &NodeConfig, metadata: &Metadata) {
    let Ok(entries) = std::fs::read_dir(config.data_dir.join("topics")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let known = name.rsplit_once('-').is_some_and(|(topic, partition)| {
            let partition: Option<usize> = partition.parse().ok();
            metadata
                .topics
                .get(topic)
                .zip(partition)
                .is_some_and(|(topic, p)| p < topic.shards.len())
        });
        if !known {
            tracing::info!(dir = %entry.path().display(), "removing the directory of a deleted partition");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts a node; returns once every shard recovered its partitions and is listening.
/// Starts a node: the data directory is checked and locked, the metadata loaded, one
/// executor per shard started (each binds its listener, connects its coordinator channels,
/// recovers its partitions and serves), and the call returns once every shard serves.
pub fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    let metrics = config.metrics_on().then(|| {
        NodeMetrics::new(
            config.shards,
            config.data_dir.clone(),
            config.metrics_per_topic,
        )
    });
    start_observed(config, metrics)
}

/// [`start`], counting into `metrics` (made by the caller, who may serve it before the
/// shards recovered: `/readyz` then answers 503 until they serve); `None` counts nothing.
pub fn start_observed(
    config: NodeConfig,
    metrics: Option<Arc<NodeMetrics>>,
) -> Result<NodeHandle, NodeError> {
    let lock = prepare_data_dir(&config)?;
    let identity = crate::identity::load_or_create(&config.data_dir, config.node_id)?;
    let storage_id = format!("{:016x}", identity.storage_id);
    match identity.node_id {
        Some(node_id) => tracing::info!(node_id, storage_id, "identity"),
        None => tracing::info!(storage_id, "identity (no node id: a single node)"),
    }
    // A member of a cluster takes its topics from the cluster's keys (docs/cluster.md,
    // "Roles"), once it joined; its metadata file is not used.
    let metadata = if config.etcd.is_some() {
        Metadata {
            cluster: Some(Arc::default()),
            ..Metadata::default()
        }
    } else {
        load_metadata(&config)?
    };
    let addresses = listen_addresses(&config)?;
    let cluster_view = Arc::new(crate::membership::ClusterView::new(
        identity.node_id,
        identity.storage_id,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            }),
    ));
    let shards = config.shards as usize;
    let shutdown = Arc::new(AtomicBool::new(false));
    let retry_fenced = Arc::new(AtomicU64::new(0));
    let mut channels = ShardChannels::new(shards);
    let (bound_tx, bound_rx) = mpsc::channel::<(usize, Result<SocketAddr, String>)>();
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut endpoint_senders = Vec::new();
    let mut executors = Vec::new();
    let config = Arc::new(config);
    for (index, &address) in addresses.iter().enumerate() {
        let (endpoints_tx, endpoints_rx) = mpsc::channel::<Vec<String>>();
        endpoint_senders.push(endpoints_tx);
        let start = ShardStart {
            index,
            address,
            config: config.clone(),
            metadata: metadata.clone(),
            shutdown: shutdown.clone(),
            retry_fenced: retry_fenced.clone(),
            bound: bound_tx.clone(),
            endpoints: endpoints_rx,
            ready: ready_tx.clone(),
            channels: channels.take(index),
            cluster: cluster_view.clone(),
            metrics: metrics.as_ref().and_then(|metrics| metrics.shard(index)),
        };
        match spawn_shard(start) {
            Ok(handle) => executors.push(handle),
            Err(failure) => return stop_started(failure, endpoint_senders, executors, &shutdown),
        }
    }
    drop(bound_tx);
    drop(ready_tx);
    let endpoints = match await_bound(&bound_rx, shards) {
        Ok(endpoints) => endpoints,
        Err(failure) => return stop_started(failure, endpoint_senders, executors, &shutdown),
    };
    let names: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    for sender in &endpoint_senders {
        let _ = sender.send(names.clone());
    }
    if let Err(failure) = await_ready(&ready_rx, shards) {
        return stop_started(failure, endpoint_senders, executors, &shutdown);
    }
    let cluster = match join_cluster(&config, identity, &endpoints) {
        Ok(cluster) => cluster,
        Err(failure) => return stop_started(failure, endpoint_senders, executors, &shutdown),
    };
    #[cfg(feature = "cluster")]
    if let Some(session) = &cluster {
        cluster_view.attach(session.query());
    }
    Ok(NodeHandle {
        endpoints,
        shutdown,
        retry_fenced,
        executors,
        cluster,
        metrics,
        _lock: lock,
    })
}

/// The node's membership in a cluster, when built with the `cluster` feature.
#[cfg(feature = "cluster")]
type Membership = ClusterSession;
/// Without the `cluster` feature a node is never a member (`NodeConfig::check` refuses
/// `--etcd`).
#[cfg(not(feature = "cluster"))]
type Membership = std::convert::Infallible;

/// Registers the node with its cluster (`--etcd`; `NodeConfig::check` made sure a node id
/// comes with it), or nothing for a single node.
#[cfg(feature = "cluster")]
fn join_cluster(
    config: &NodeConfig,
    identity: spate_format::identity::Identity,
    endpoints: &[SocketAddr],
) -> Result<Option<Membership>, NodeError> {
    let (Some(etcd), Some(node_id)) = (config.etcd.as_deref(), config.node_id) else {
        return Ok(None);
    };
    let settings = ClusterSettings {
        endpoints: etcd.split(',').map(|url| url.trim().to_owned()).collect(),
        cluster_name: config.cluster_name.clone(),
        node_id,
        session_timeout: Duration::from_millis(config.session_timeout_ms),
        kafka_address: config.kafka_address.clone(),
        rack: config.rack.clone(),
        leader_balance: config
            .auto_leader_rebalance
            .then_some(crate::cluster::LeaderBalance {
                interval: Duration::from_millis(config.leader_imbalance_check_ms),
                percent: config.leader_imbalance_percent,
            }),
    };
    let shards = endpoints.iter().map(ToString::to_string).collect();
    Ok(Some(ClusterSession::join(
        settings,
        config.data_dir.clone(),
        identity,
        shards,
    )?))
}

#[cfg(not(feature = "cluster"))]
#[allow(clippy::unnecessary_wraps)]
fn join_cluster(
    _config: &NodeConfig,
    _identity: spate_format::identity::Identity,
    _endpoints: &[SocketAddr],
) -> Result<Option<Membership>, NodeError> {
    Ok(None)
}

#[cfg(feature = "cluster")]
fn leave(membership: Membership) {
    membership.leave();
}

#[cfg(not(feature = "cluster"))]
fn leave(membership: Membership) {
    match membership {}
}

/// Creates and locks the data directory (before anything in it is read or written) and
/// checks that it is on a filesystem that keeps data and honours O_DIRECT.
fn prepare_data_dir(config: &NodeConfig) -> Result<DataDirLock, NodeError> {
    let dir = &config.data_dir;
    let shown = dir.display().to_string();
    std::fs::create_dir_all(dir).map_err(|source| NodeError::DataDir {
        dir: shown.clone(),
        source,
    })?;
    // First of all: nothing in the directory is read or written before it is ours.
    let lock = DataDirLock::acquire(dir)?;
    std::fs::create_dir_all(dir.join("topics")).map_err(|source| NodeError::DataDir {
        dir: shown.clone(),
        source,
    })?;
    if let Some(fstype) = crate::storage::filesystem_type(dir) {
        if matches!(fstype.as_str(), "tmpfs" | "ramfs") {
            if config.allow_buffered_io {
                tracing::warn!(dir = %shown, fstype, "data directory in memory; running as asked");
            } else {
                return Err(NodeError::MemoryFilesystem { dir: shown, fstype });
            }
        }
    }
    if let Err(source) = probe_direct_io(dir) {
        if config.allow_buffered_io {
            tracing::warn!(dir = %shown, "O_DIRECT unavailable ({source}); running with buffered I/O as asked");
        } else {
            return Err(NodeError::NoDirectIo { dir: shown, source });
        }
    }
    Ok(lock)
}

/// The node's metadata, its partitions reassigned to the configured shard count (stored if
/// that moved any), with the directories of deleted topics removed.
fn load_metadata(config: &NodeConfig) -> Result<Metadata, NodeError> {
    let mut metadata = Metadata::load(&config.data_dir)?;
    if !metadata.topics.contains_key(spate_proto::OFFSETS_TOPIC) {
        // Committed offsets of consumer groups: kept until deleted or expired (no
        // retention), bounded by snapshots (docs/groups.md).
        metadata.topics.insert(
            spate_proto::OFFSETS_TOPIC.to_owned(),
            crate::metadata::Topic {
                retention_ms: spate_proto::Setting::Unlimited,
                retention_bytes: spate_proto::Setting::Unlimited,
                segment_bytes: spate_proto::Setting::Value(
                    crate::shard::groups::OFFSETS_SEGMENT_BYTES,
                ),
                min_insync_replicas: spate_proto::Setting::Default,
                shards: (0..spate_proto::OFFSETS_PARTITIONS)
                    .map(|partition| {
                        crate::metadata::assign(
                            spate_proto::OFFSETS_TOPIC,
                            partition,
                            config.shards,
                        )
                    })
                    .collect(),
            },
        );
        metadata.store(&config.data_dir)?;
    }
    let moved = metadata.reassign(config.shards);
    if moved > 0 {
        tracing::info!(
            moved,
            shards = config.shards,
            "reassigned partitions to the new shard count"
        );
        metadata.store(&config.data_dir)?;
    }
    remove_orphans(config, &metadata);
    Ok(metadata)
}

/// The ends of the channels between the coordinator (shard 0) and shards 1..N, each way,
/// before each shard takes its own.
struct ShardChannels {
    to_coordinator: Vec<Option<SharedSender<ToCoordinator>>>,
    from_coordinator: Vec<Option<SharedReceiver<ToShard>>>,
    /// The coordinator's ends (`ShardEnds::Coordinator`) until shard 0 takes them.
    coordinator: ShardEnds,
}

/// One shard's ends.
enum ShardEnds {
    Coordinator(
        Vec<SharedSender<ToShard>>,
        Vec<SharedReceiver<ToCoordinator>>,
    ),
    Follower(SharedSender<ToCoordinator>, SharedReceiver<ToShard>),
    /// Taken already (a programming error, answered as a failed start).
    Missing,
}

impl ShardChannels {
    fn new(shards: usize) -> Self {
        let mut to_coordinator = vec![None];
        let mut from_coordinator = vec![None];
        let mut to_shards = Vec::new();
        let mut from_shards = Vec::new();
        for _ in 1..shards {
            let (sender, receiver) = shared_channel::new_bounded(SHARD_CHANNEL_MAX);
            to_coordinator.push(Some(sender));
            from_shards.push(receiver);
            let (sender, receiver) = shared_channel::new_bounded(SHARD_CHANNEL_MAX);
            to_shards.push(sender);
            from_coordinator.push(Some(receiver));
        }
        ShardChannels {
            to_coordinator,
            from_coordinator,
            coordinator: ShardEnds::Coordinator(to_shards, from_shards),
        }
    }

    fn take(&mut self, index: usize) -> ShardEnds {
        if index == 0 {
            return std::mem::replace(&mut self.coordinator, ShardEnds::Missing);
        }
        let sender = self.to_coordinator.get_mut(index).and_then(Option::take);
        let receiver = self.from_coordinator.get_mut(index).and_then(Option::take);
        match (sender, receiver) {
            (Some(sender), Some(receiver)) => ShardEnds::Follower(sender, receiver),
            _ => ShardEnds::Missing,
        }
    }
}

/// Everything one shard's executor starts from.
struct ShardStart {
    index: usize,
    address: SocketAddr,
    config: Arc<NodeConfig>,
    metadata: Metadata,
    shutdown: Arc<AtomicBool>,
    retry_fenced: Arc<AtomicU64>,
    /// Where the shard reports the address it bound (or why it could not).
    bound: mpsc::Sender<(usize, Result<SocketAddr, String>)>,
    /// Every shard's endpoint, once all are bound.
    endpoints: mpsc::Receiver<Vec<String>>,
    /// Where the shard reports that it serves (or why it cannot).
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    channels: ShardEnds,
    cluster: Arc<crate::membership::ClusterView>,
    /// This shard's metrics, installed in its thread (`None`: metrics off).
    metrics: Option<Arc<ShardMetrics>>,
}

/// Starts one shard's executor.
fn spawn_shard(start: ShardStart) -> Result<glommio::ExecutorJoinHandle<()>, NodeError> {
    let index = start.index;
    let shard_error = |reason: String| NodeError::Shard {
        shard: u16::try_from(index).unwrap_or(u16::MAX),
        reason,
    };
    let cpus = start
        .config
        .cpu_list()
        .map_err(|error| shard_error(error.to_string()))?;
    let placement = match cpus {
        None => Placement::Unbound,
        Some(cpus) => match cpus.get(index) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => return Err(shard_error(format!("no CPU listed for shard {index}"))),
        },
    };
    let builder = LocalExecutorBuilder::new(placement)
        .name(&format!("shard-{index}"))
        .io_memory(start.config.io_memory)
        .preempt_timer(PREEMPT_TIMER);
    builder
        .spawn(move || async move {
            // Everything runs in a latency-sensitive task queue: glommio then always signals
            // the reactor when a blocking-pool operation (truncate, fallocate, directory
            // sync) completes. With its default, a completion racing the reactor going to
            // sleep can be missed and the shard stalls until a timer fires. The heartbeat
            // below bounds any such stall whatever happens.
            let queue = glommio::executor().create_task_queue(
                glommio::Shares::default(),
                glommio::Latency::Matters(TASK_QUEUE_LATENCY),
                "spate",
            );
            glommio::spawn_local(async {
                loop {
                    glommio::timer::sleep(HEARTBEAT).await;
                }
            })
            .detach();
            if let Ok(body) = glommio::spawn_local_into(run_shard(start), queue) {
                body.await;
            }
        })
        .map_err(|error| shard_error(error.to_string()))
}

/// A shard's life inside its executor: bind, learn every shard's endpoint, connect to the
/// coordinator, recover its partitions, serve until shutdown, close its partitions.
async fn run_shard(start: ShardStart) {
    let ShardStart {
        index,
        address,
        config,
        metadata,
        shutdown,
        retry_fenced,
        bound,
        endpoints,
        ready,
        channels,
        cluster,
        metrics,
    } = start;
    if let Some(metrics) = metrics.clone() {
        crate::metrics::install(metrics);
    }
    let listener = match TcpListener::bind(address) {
        Ok(listener) => listener,
        Err(error) => {
            let _ = bound.send((index, Err(format!("cannot listen on {address}: {error}"))));
            return;
        }
    };
    let _ = bound.send((
        index,
        listener.local_addr().map_err(|error| error.to_string()),
    ));
    let Ok(endpoints) = endpoints.recv() else {
        return;
    };
    let id = ShardId(u16::try_from(index).unwrap_or(u16::MAX));
    let config = Rc::new((*config).clone());
    let Some((admin, role)) = connect_role(channels).await else {
        let _ = ready.send((index, Err("channels missing".into())));
        return;
    };
    tracing::debug!(shard = index, "channels connected; recovering partitions");
    let shard = Rc::new(
        Shard::new(
            id,
            config.clone(),
            endpoints,
            Metadata::default(),
            shutdown.clone(),
            admin.clone(),
        )
        .with_cluster(cluster.clone()),
    );
    if let Err(error) = crate::storage::probe_polled_io(&config.data_dir, id.0).await {
        let reason = format!(
            "cannot read with O_DIRECT in {}: {error}",
            config.data_dir.display()
        );
        let _ = ready.send((index, Err(reason)));
        return;
    }
    let recovering = std::time::Instant::now();
    shard.apply_metadata(metadata).await;
    let took = recovering.elapsed();
    tracing::info!(
        shard = index,
        partitions = shard.partition_count(),
        took_ms = took.as_millis(),
        "partitions recovered"
    );
    if let Some(metrics) = &metrics {
        metrics
            .recovery_micros
            .set(i64::try_from(took.as_micros()).unwrap_or(i64::MAX));
        metrics.publish(shard.sample_metrics());
        metrics.ready.store(true, Ordering::Relaxed);
    }
    let _ = ready.send((index, Ok(())));
    let accepting = glommio::spawn_local(shard.clone().accept(listener));
    match role {
        Role::Coordinator {
            queue,
            to_shards,
            from_shards,
        } => {
            glommio::spawn_local(Coordinator::run(
                shard.clone(),
                queue,
                to_shards,
                from_shards,
            ))
            .detach();
        }
        Role::Follower { receiver } => {
            glommio::spawn_local(coordinator::follow(shard.clone(), admin, receiver)).detach();
        }
    }
    spawn_maintenance(&shard, retry_fenced);
    while !shutdown.load(Ordering::Relaxed) {
        glommio::timer::sleep(SHUTDOWN_CHECK).await;
    }
    // The listener and the connections close before the executor ends, their reads in flight
    // cancelled and the cancellations reaped: an io_uring operation keeps its socket open
    // until then, and a node stopped inside a process (`spate up`, the tests) would otherwise
    // leave a port that takes connections, and connections that take requests, nobody
    // answers. Connections first send the answers already on their way.
    accepting.await;
    shard.connections.close_all();
    let deadline = std::time::Instant::now() + CONNECTIONS_CLOSE_WAIT;
    while !shard.connections.is_empty() && std::time::Instant::now() < deadline {
        glommio::timer::sleep(SOCKETS_CLOSE_SETTLE).await;
    }
    glommio::timer::sleep(SOCKETS_CLOSE_SETTLE).await;
    shard.close_all().await;
}

/// How long a stopping shard waits for its connections to send what is on its way and close.
const CONNECTIONS_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How long a stopping shard lets its reactor reap the cancellations of its sockets' reads.
const SOCKETS_CLOSE_SETTLE: Duration = Duration::from_millis(5);

/// Connects a shard's channel ends (each waits for its peer, so all connect concurrently) and
/// makes its admin client: local on the coordinator, through the channel on the others.
async fn connect_role(channels: ShardEnds) -> Option<(coordinator::AdminClient, Role)> {
    match channels {
        ShardEnds::Coordinator(senders, receivers) => {
            let sending: Vec<_> = senders
                .into_iter()
                .map(|end| glommio::spawn_local(end.connect()))
                .collect();
            let receiving: Vec<_> = receivers
                .into_iter()
                .map(|end| glommio::spawn_local(end.connect()))
                .collect();
            let mut to_shards = Vec::new();
            for task in sending {
                to_shards.push(task.await);
            }
            let mut from_shards = Vec::new();
            for task in receiving {
                from_shards.push(task.await);
            }
            let (admin, queue) = coordinator::local_client();
            Some((
                admin,
                Role::Coordinator {
                    queue,
                    to_shards,
                    from_shards,
                },
            ))
        }
        ShardEnds::Follower(sender, receiver) => {
            let sending = glommio::spawn_local(sender.connect());
            let receiving = glommio::spawn_local(receiver.connect());
            let sender = sending.await;
            let receiver = receiving.await;
            Some((
                coordinator::remote_client(sender),
                Role::Follower { receiver },
            ))
        }
        ShardEnds::Missing => None,
    }
}

/// A shard's background work: re-running recovery of fenced partitions (on SIGHUP, or by
/// itself after ENOSPC), background verification, retention.
fn spawn_maintenance(shard: &Rc<Shard>, retry_fenced: Arc<AtomicU64>) {
    let fence_shard = shard.clone();
    glommio::spawn_local(async move {
        let mut seen = 0;
        loop {
            glommio::timer::sleep(crate::shard::FENCE_CHECK).await;
            let asked = retry_fenced.load(Ordering::Relaxed);
            fence_shard.retry_fenced(asked != seen).await;
            seen = asked;
        }
    })
    .detach();
    glommio::spawn_local(crate::verify::run(shard.clone())).detach();
    if crate::metrics::enabled() {
        let sampled = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(crate::metrics::SAMPLE_INTERVAL).await;
                let sample = sampled.sample_metrics();
                crate::metrics::with(|metrics| metrics.publish(sample));
            }
        })
        .detach();
    }
    #[cfg(feature = "cluster")]
    if shard.config.etcd.is_some() {
        glommio::spawn_local(crate::replica::propose_isr_changes(shard.clone())).detach();
    }
    let retention_every = Duration::from_millis(shard.config.retention_check_ms);
    let retention_shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(retention_every).await;
            retention_shard.retention();
        }
    })
    .detach();
}

/// Every shard's bound address, by shard id, or the first failure.
fn await_bound(
    bound: &mpsc::Receiver<(usize, Result<SocketAddr, String>)>,
    shards: usize,
) -> Result<Vec<SocketAddr>, NodeError> {
    let mut endpoints: Vec<Option<SocketAddr>> = vec![None; shards];
    let mut failure = None;
    for _ in 0..shards {
        match bound.recv() {
            Ok((index, Ok(address))) => endpoints[index] = Some(address),
            Ok((index, Err(reason))) => {
                failure = Some(NodeError::Shard {
                    shard: u16::try_from(index).unwrap_or(u16::MAX),
                    reason,
                });
            }
            Err(_) => {
                failure = Some(NodeError::Shard {
                    shard: 0,
                    reason: "a shard stopped while starting".into(),
                });
            }
        }
    }
    match failure {
        Some(failure) => Err(failure),
        None => Ok(endpoints.into_iter().flatten().collect()),
    }
}

/// Waits until every shard serves, or the first failure.
fn await_ready(
    ready: &mpsc::Receiver<(usize, Result<(), String>)>,
    shards: usize,
) -> Result<(), NodeError> {
    for _ in 0..shards {
        match ready.recv() {
            Ok((_, Ok(()))) => {}
            Ok((index, Err(reason))) => {
                return Err(NodeError::Shard {
                    shard: u16::try_from(index).unwrap_or(u16::MAX),
                    reason,
                });
            }
            Err(_) => {
                return Err(NodeError::Shard {
                    shard: 0,
                    reason: "a shard stopped while starting".into(),
                });
            }
        }
    }
    Ok(())
}

/// A failed start: stops the shards already started and answers the failure.
fn stop_started(
    failure: NodeError,
    endpoint_senders: Vec<mpsc::Sender<Vec<String>>>,
    executors: Vec<glommio::ExecutorJoinHandle<()>>,
    shutdown: &AtomicBool,
) -> Result<NodeHandle, NodeError> {
    shutdown.store(true, Ordering::Relaxed);
    drop(endpoint_senders);
    // An executor that could not start (io_uring refused its rings or buffers under a low
    // locked-memory limit, say) says why only here: the reason goes into the failure.
    let mut causes = Vec::new();
    for executor in executors {
        if let Err(error) = executor.join() {
            causes.push(error.to_string());
        }
    }
    match failure {
        NodeError::Shard { shard, reason } if !causes.is_empty() => Err(NodeError::Shard {
            shard,
            reason: format!("{reason}: {}", causes.join("; ")),
        }),
        failure => Err(failure),
    }
}

enum Role {
    Coordinator {
        queue: glommio::channels::local_channel::LocalReceiver<coordinator::AdminItemHandle>,
        to_shards: Vec<shared_channel::ConnectedSender<ToShard>>,
        from_shards: Vec<shared_channel::ConnectedReceiver<ToCoordinator>>,
    },
    Follower {
        receiver: shared_channel::ConnectedReceiver<ToShard>,
    },
}
