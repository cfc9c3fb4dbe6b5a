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

use crate::config::NodeConfig;
use crate::coordinator::{self, Coordinator, ToCoordinator, ToShard};
use crate::lock::{DataDirLock, LockError};
use crate::metadata::{Metadata, MetadataError};
use crate::shard::Shard;
use crate::storage::probe_direct_io;

/// Longest a shard's reactor sleeps without a timer waking it (see the task queue note).
const HEARTBEAT: Duration = Duration::from_millis(10);

/// Messages in flight between the coordinator and one shard, each way.
const SHARD_CHANNEL_MAX: usize = 64;

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
    /// Held until every shard stopped: dropped last, after `executors` were joined.
    _lock: DataDirLock,
}

impl NodeHandle {
    /// Stops accepting, lets in-flight syncs finish, closes every file, and waits for every
    /// shard to stop.
    pub fn shutdown(self) {
        self.shutdown.store(true, Ordering::Relaxed);
        for executor in self.executors {
            let _ = executor.join();
        }
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
pub fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    let dir = config.data_dir.clone();
    let shown = dir.display().to_string();
    std::fs::create_dir_all(&dir).map_err(|source| NodeError::DataDir {
        dir: shown.clone(),
        source,
    })?;
    // First of all: nothing in the directory is read or written before it is ours.
    let lock = DataDirLock::acquire(&dir)?;
    std::fs::create_dir_all(dir.join("topics")).map_err(|source| NodeError::DataDir {
        dir: shown.clone(),
        source,
    })?;
    if let Some(fstype) = crate::storage::filesystem_type(&dir) {
        if matches!(fstype.as_str(), "tmpfs" | "ramfs") {
            if config.allow_buffered_io {
                tracing::warn!(dir = %shown, fstype, "data directory in memory; running as asked");
            } else {
                return Err(NodeError::MemoryFilesystem { dir: shown, fstype });
            }
        }
    }
    if let Err(source) = probe_direct_io(&dir) {
        if config.allow_buffered_io {
            tracing::warn!(dir = %shown, "O_DIRECT unavailable ({source}); running with buffered I/O as asked");
        } else {
            return Err(NodeError::NoDirectIo { dir: shown, source });
        }
    }
    let mut metadata = Metadata::load(&dir)?;
    let moved = metadata.reassign(config.shards);
    if moved > 0 {
        tracing::info!(
            moved,
            shards = config.shards,
            "reassigned partitions to the new shard count"
        );
        metadata.store(&dir)?;
    }
    remove_orphans(&config, &metadata);
    let addresses = listen_addresses(&config)?;
    let shards = config.shards as usize;
    let shutdown = Arc::new(AtomicBool::new(false));
    let retry_fenced = Arc::new(AtomicU64::new(0));

    // Channels between the coordinator (shard 0) and shards 1..N, each way.
    let mut to_coordinator_senders: Vec<Option<SharedSender<ToCoordinator>>> = vec![None];
    let mut to_coordinator_receivers = Vec::new();
    let mut to_shard_senders = Vec::new();
    let mut to_shard_receivers: Vec<Option<SharedReceiver<ToShard>>> = vec![None];
    for _ in 1..shards {
        let (sender, receiver) = shared_channel::new_bounded(SHARD_CHANNEL_MAX);
        to_coordinator_senders.push(Some(sender));
        to_coordinator_receivers.push(receiver);
        let (sender, receiver) = shared_channel::new_bounded(SHARD_CHANNEL_MAX);
        to_shard_senders.push(sender);
        to_shard_receivers.push(Some(receiver));
    }
    let mut coordinator_ends = Some((to_shard_senders, to_coordinator_receivers));

    let (bound_tx, bound_rx) = mpsc::channel::<(usize, Result<SocketAddr, String>)>();
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut endpoint_senders = Vec::new();
    let mut executors = Vec::new();
    let config = Arc::new(config);
    for index in 0..shards {
        let (endpoints_tx, endpoints_rx) = mpsc::channel::<Vec<String>>();
        endpoint_senders.push(endpoints_tx);
        let placement = match &config.cpus {
            Some(cpus) => Placement::Fixed(cpus[index]),
            None => Placement::Unbound,
        };
        let address = addresses[index];
        let config = config.clone();
        let metadata = metadata.clone();
        let shutdown = shutdown.clone();
        let retry_asked = retry_fenced.clone();
        let bound_tx = bound_tx.clone();
        let ready_tx = ready_tx.clone();
        let to_coordinator = to_coordinator_senders[index].take();
        let from_coordinator = to_shard_receivers[index].take();
        let coordinator = if index == 0 {
            coordinator_ends.take()
        } else {
            None
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{index}"))
            .io_memory(config.io_memory)
            .preempt_timer(Duration::from_millis(5));
        let handle = builder
            .spawn(move || async move {
                // Everything runs in a latency-sensitive task queue: glommio then always
                // signals the reactor when a blocking-pool operation (truncate, fallocate,
                // directory sync) completes. With its default, a completion racing the
                // reactor going to sleep can be missed and the shard stalls until a timer
                // fires. The heartbeat below bounds any such stall whatever happens.
                let queue = glommio::executor().create_task_queue(
                    glommio::Shares::default(),
                    glommio::Latency::Matters(Duration::from_millis(10)),
                    "spate",
                );
                glommio::spawn_local(async {
                    loop {
                        glommio::timer::sleep(HEARTBEAT).await;
                    }
                })
                .detach();
                let Ok(body) = glommio::spawn_local_into(
                    async move {
                        let listener = match TcpListener::bind(address) {
                            Ok(listener) => listener,
                            Err(error) => {
                                let _ = bound_tx.send((
                                    index,
                                    Err(format!("cannot listen on {address}: {error}")),
                                ));
                                return;
                            }
                        };
                        let local = listener.local_addr().map_err(|error| error.to_string());
                        let _ = bound_tx.send((index, local));
                        let Ok(endpoints) = endpoints_rx.recv() else {
                            return;
                        };
                        let id = ShardId(u16::try_from(index).unwrap_or(u16::MAX));
                        let config = Rc::new((*config).clone());
                        // Connect the channel ends concurrently: each waits for its peer.
                        let (admin, role) = match coordinator {
                            Some((senders, receivers)) => {
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
                                (
                                    admin,
                                    Role::Coordinator {
                                        queue,
                                        to_shards,
                                        from_shards,
                                    },
                                )
                            }
                            None => {
                                let (Some(sender), Some(receiver)) =
                                    (to_coordinator, from_coordinator)
                                else {
                                    let _ = ready_tx.send((index, Err("channels missing".into())));
                                    return;
                                };
                                let sending = glommio::spawn_local(sender.connect());
                                let receiving = glommio::spawn_local(receiver.connect());
                                let sender = sending.await;
                                let receiver = receiving.await;
                                (
                                    coordinator::remote_client(sender),
                                    Role::Follower { receiver },
                                )
                            }
                        };
                        tracing::debug!(shard = index, "channels connected; recovering partitions");
                        let shard = Rc::new(Shard::new(
                            id,
                            config.clone(),
                            endpoints,
                            Metadata::default(),
                            shutdown.clone(),
                            admin.clone(),
                        ));
                        if let Err(error) =
                            crate::storage::probe_polled_io(&config.data_dir, id.0).await
                        {
                            let _ = ready_tx.send((
                                index,
                                Err(format!(
                                    "cannot read with O_DIRECT in {}: {error}",
                                    config.data_dir.display()
                                )),
                            ));
                            return;
                        }
                        shard.apply_metadata(metadata).await;
                        tracing::debug!(shard = index, "partitions recovered");
                        let _ = ready_tx.send((index, Ok(())));
                        glommio::spawn_local(shard.clone().accept(listener)).detach();
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
                                glommio::spawn_local(coordinator::follow(
                                    shard.clone(),
                                    admin,
                                    receiver,
                                ))
                                .detach();
                            }
                        }
                        let fence_shard = shard.clone();
                        glommio::spawn_local(async move {
                            let mut seen = 0;
                            loop {
                                glommio::timer::sleep(crate::shard::FENCE_CHECK).await;
                                let asked = retry_asked.load(Ordering::Relaxed);
                                fence_shard.retry_fenced(asked != seen).await;
                                seen = asked;
                            }
                        })
                        .detach();
                        glommio::spawn_local(crate::verify::run(shard.clone())).detach();
                        let retention_every = Duration::from_millis(config.retention_check_ms);
                        let retention_shard = shard.clone();
                        glommio::spawn_local(async move {
                            loop {
                                glommio::timer::sleep(retention_every).await;
                                retention_shard.retention();
                            }
                        })
                        .detach();
                        while !shutdown.load(Ordering::Relaxed) {
                            glommio::timer::sleep(Duration::from_millis(20)).await;
                        }
                        shard.close_all().await;
                    },
                    queue,
                ) else {
                    return;
                };
                body.await;
            })
            .map_err(|error| NodeError::Shard {
                shard: u16::try_from(index).unwrap_or(u16::MAX),
                reason: error.to_string(),
            })?;
        executors.push(handle);
    }
    drop(bound_tx);
    drop(ready_tx);
    let mut endpoints: Vec<Option<SocketAddr>> = vec![None; shards];
    let mut failure = None;
    for _ in 0..shards {
        match bound_rx.recv() {
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
    let fail = |failure: NodeError,
                senders: Vec<mpsc::Sender<Vec<String>>>,
                executors: Vec<glommio::ExecutorJoinHandle<()>>,
                shutdown: &AtomicBool| {
        shutdown.store(true, Ordering::Relaxed);
        drop(senders);
        for executor in executors {
            let _ = executor.join();
        }
        Err(failure)
    };
    if let Some(failure) = failure {
        return fail(failure, endpoint_senders, executors, &shutdown);
    }
    let endpoints: Vec<SocketAddr> = endpoints.into_iter().flatten().collect();
    let names: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    for sender in &endpoint_senders {
        let _ = sender.send(names.clone());
    }
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((index, Err(reason))) => {
                let failure = NodeError::Shard {
                    shard: u16::try_from(index).unwrap_or(u16::MAX),
                    reason,
                };
                return fail(failure, endpoint_senders, executors, &shutdown);
            }
            Err(_) => {
                let failure = NodeError::Shard {
                    shard: 0,
                    reason: "a shard stopped while starting".into(),
                };
                return fail(failure, endpoint_senders, executors, &shutdown);
            }
        }
    }
    Ok(NodeHandle {
        endpoints,
        shutdown,
        retry_fenced,
        executors,
        _lock: lock,
    })
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
