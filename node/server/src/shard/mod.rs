//! A shard: one glommio executor owning a disjoint set of partitions, its TCP listener, its
//! connections, and its copy of the node's metadata.
//!
//! Invariants: nothing on the data path crosses shards or takes a lock — a request for a
//! partition of another shard is answered `NotOwner` with that shard's endpoint; appends from
//! one connection are applied in the order their frames arrived (the append happens before
//! the next frame is read); no `RefCell` borrow is held across an await; every queue is
//! bounded (frames in flight per connection, waiters per partition, connections per shard)
//! and reading stops while the shard's unsynced bytes exceed its budget.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::local_channel;
use glommio::sync::Semaphore;
use spate_core::recovery::Recovery;
use spate_core::{PartitionKey, PartitionLog, Storage};
use spate_proto::{ErrorCode, ErrorResponse, Setting, ShardId};

use crate::config::NodeConfig;
use crate::connections::Connections;
use crate::coordinator::{AdminClient, Update};
use crate::fetcher::{Following, Reopen};
use crate::metadata::{Follows, Metadata, Topic};
use crate::ownership::PartitionTable;
use crate::partition::{now, Budget, Partition};
use crate::storage::{list_dir, DmaStorage};

mod connection;
pub(crate) mod groups;
mod handlers;

/// Partitions one shard recovers at a time (at startup and when metadata changes). Each reads
/// at most `RECOVERY_READ_BYTES` (4 MiB) at once, so recovery holds at most 64 MiB of reads.
const RECOVERY_CONCURRENCY: u64 = 16;

/// A closing partition's in-flight writes and syncs get up to 500 × 10 ms = 5 s to finish
/// before its files close (what is not durable by then is not acknowledged).
const CLOSE_SETTLE_CHECKS: u32 = 500;
const CLOSE_SETTLE_CHECK: Duration = Duration::from_millis(10);

/// How long a shard waits for another shard of its node to close a partition's directory
/// (a replica moved between shards: the other closes it as it applies the same metadata),
/// and how often it looks.
const HOLD_WAIT: Duration = Duration::from_secs(15);
const HOLD_CHECK: Duration = Duration::from_millis(20);

/// The directory of a partition.
pub fn partition_dir(data_dir: &std::path::Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join("topics").join(format!("{topic}-{partition}"))
}

/// The file in a replica's directory (in a cluster) naming what it is a replica of:
/// `<cluster id>/<topic id>` (32 hex digits each).
pub const REPLICA_FILE_NAME: &str = "replica-of";

/// What a replica directory is a replica of: the cluster's id and the topic's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaOf {
    pub cluster: String,
    pub topic: String,
}

impl ReplicaOf {
    /// What `dir` says it is a replica of: `Ok(None)` without a file, `Err` for a file that
    /// cannot be read or understood.
    pub fn read(dir: &std::path::Path) -> Result<Option<ReplicaOf>, String> {
        match std::fs::read_to_string(dir.join(REPLICA_FILE_NAME)) {
            Ok(text) => match text.trim().split_once('/') {
                Some((cluster, topic)) => Ok(Some(ReplicaOf {
                    cluster: cluster.to_owned(),
                    topic: topic.to_owned(),
                })),
                None => Err(format!(
                    "{} says {text:?}, not <cluster id>/<topic id>",
                    dir.join(REPLICA_FILE_NAME).display()
                )),
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(format!(
                "cannot read {}: {error}",
                dir.join(REPLICA_FILE_NAME).display()
            )),
        }
    }
}

/// Makes `dir` the directory of a replica of `of` before it is opened: a directory naming
/// another topic of the same cluster holds a replica of an older topic of the same name
/// (deleted and created again while this node was away) and is emptied first; a new one gets
/// the file (durably, before anything is written into it). A directory of another cluster
/// (etcd replaced or emptied, another `--cluster-name`), one with data but no file (a single
/// node's partition from before the node joined a cluster), or one whose file cannot be read
/// is not taken: nothing in it is removed.
fn claim_directory(dir: &std::path::Path, of: &ReplicaOf) -> Result<(), String> {
    let shown = dir.display();
    match ReplicaOf::read(dir)? {
        Some(found) if found == *of => return Ok(()),
        Some(found) if found.cluster != of.cluster => {
            return Err(format!(
                "{shown} holds a replica of cluster {} (this cluster is {}): it is not served \
                 and nothing in it is removed; move it away if its data is not needed",
                found.cluster, of.cluster
            ));
        }
        Some(found) => {
            std::fs::remove_dir_all(dir)
                .and_then(|()| std::fs::create_dir_all(dir))
                .map_err(|error| format!("cannot empty {shown}: {error}"))?;
            tracing::info!(
                dir = %shown,
                old = found.topic,
                new = of.topic,
                "removed the replica of an older topic of the same name"
            );
        }
        None => {
            let used = std::fs::read_dir(dir)
                .map_err(|error| format!("cannot list {shown}: {error}"))?
                .flatten()
                .any(|entry| {
                    entry.file_name().to_string_lossy() != format!("{REPLICA_FILE_NAME}.tmp")
                });
            if used {
                return Err(format!(
                    "{shown} holds a partition without a `{REPLICA_FILE_NAME}` file (from \
                     before this node joined a cluster?); it is not served and nothing in it is \
                     removed: move it away to let this node hold the cluster's replica"
                ));
            }
        }
    }
    let text = format!("{}/{}\n", of.cluster, of.topic);
    crate::durable::replace(dir, REPLICA_FILE_NAME, text.as_bytes())
        .map_err(|error| format!("cannot record what {shown} is a replica of: {error}"))
}

/// Free space in the data directory before a partition fenced by ENOSPC is recovered by
/// itself: room for several preallocation steps, so it does not fence again at once.
pub const RECOVERY_FREE_BYTES_MIN: u64 = 4 << 20;

/// How often each shard looks for fenced partitions to recover.
pub const FENCE_CHECK: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Shard {
    pub id: ShardId,
    pub config: Rc<NodeConfig>,
    pub endpoints: Vec<String>,
    metadata: RefCell<Rc<Metadata>>,
    /// The unsynced bytes of the shard's partitions against `unflushed_bytes`.
    budget: Rc<Budget>,
    partitions: RefCell<PartitionTable>,
    /// Partitions being opened (recovering) right now.
    opening: RefCell<std::collections::HashSet<PartitionKey>>,
    /// Partitions this shard should serve whose last opening failed or was refused (a
    /// replica of another cluster, a failed recovery; their log says why): answered
    /// `Storage`, where one not opened yet is answered `NotLeaderOrFollower`. An entry goes
    /// when an opening starts again; at most one per partition ever placed on this shard.
    pub(crate) not_opened: RefCell<std::collections::HashSet<PartitionKey>>,
    pub(crate) connections: Rc<Connections>,
    pub shutdown: Arc<AtomicBool>,
    admin: AdminClient,
    /// The device buffers every partition's writes are copied into.
    write_buffers: Rc<crate::storage::WriteBuffers>,
    /// What the node tells of its cluster (`DescribeCluster`).
    pub cluster: Arc<crate::membership::ClusterView>,
    /// In a cluster: what each open replica was claimed as (its directory's `replica-of`).
    claims: RefCell<std::collections::HashMap<PartitionKey, ReplicaOf>>,
    /// Fetchers started on this shard (each one's generation).
    fetchers: std::cell::Cell<u64>,
    /// The fetchers' links to their leaders' shards.
    pub(crate) links: crate::links::Links,
    /// In a cluster: this shard's request for the offsets topic (`groups`).
    offsets_creation: RefCell<groups::OffsetsCreation>,
}

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(code, message)
}

fn effective(setting: Setting, default: Option<u64>) -> Option<u64> {
    match setting {
        Setting::Default => default,
        Setting::Unlimited => None,
        Setting::Value(value) => Some(value),
    }
}

impl Shard {
    pub fn new(
        id: ShardId,
        config: Rc<NodeConfig>,
        endpoints: Vec<String>,
        metadata: Metadata,
        shutdown: Arc<AtomicBool>,
        admin: AdminClient,
    ) -> Self {
        let budget = config.unflushed_bytes;
        Shard {
            id,
            config,
            endpoints,
            metadata: RefCell::new(Rc::new(metadata)),
            budget: Rc::new(Budget::new(budget)),
            partitions: RefCell::new(PartitionTable::default()),
            opening: RefCell::new(std::collections::HashSet::new()),
            not_opened: RefCell::new(std::collections::HashSet::new()),
            connections: Rc::new(Connections::default()),
            shutdown,
            admin,
            write_buffers: Rc::default(),
            cluster: Arc::default(),
            claims: RefCell::default(),
            fetchers: std::cell::Cell::new(0),
            links: crate::links::Links::default(),
            offsets_creation: RefCell::default(),
        }
    }

    /// The shard, telling `cluster` of its node's cluster.
    #[must_use]
    pub fn with_cluster(mut self, cluster: Arc<crate::membership::ClusterView>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Runs `f` on a partition's log (never across an await), if the partition is open.
    pub fn with_log<R>(
        &self,
        key: &PartitionKey,
        f: impl FnOnce(&mut PartitionLog) -> R,
    ) -> Option<R> {
        let partition = self
            .partitions
            .borrow()
            .get(&key.topic, key.partition)
            .cloned()?;
        Some(partition.with_log(f))
    }

    pub fn metadata(&self) -> Rc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// Partitions open on the shard.
    pub fn partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }

    /// The shard's states for the metrics (`crate::metrics`, once per sample interval).
    pub fn sample_metrics(&self) -> crate::metrics::ShardSample {
        let (unsynced_bytes, unsynced_bytes_limit) = self.budget.unsynced();
        let partitions: Vec<Rc<Partition>> =
            self.partitions.borrow().partitions().cloned().collect();
        let mut groups = Vec::new();
        let mut fetch_waiters = 0;
        let mut open_files = 0;
        for partition in &partitions {
            fetch_waiters += partition.fetches_parked() as u64;
            open_files += partition.open_files() as u64;
            let coordinator = partition.groups.borrow().clone();
            if let Some(coordinator) = coordinator {
                coordinator.sample(&mut groups);
            }
        }
        crate::metrics::ShardSample {
            unsynced_bytes,
            unsynced_bytes_limit,
            fetch_waiters,
            open_files,
            connections: self.connections.len() as u64,
            partitions: partitions
                .iter()
                .map(|partition| partition.sample())
                .collect(),
            groups,
        }
    }

    /// Waits until the shard's unsynced bytes are within its budget (back-pressure).
    pub(crate) async fn within_budget(&self) {
        self.budget.within().await;
    }

    /// Waits while `len` more bytes would not fit in the partition's write buffer
    /// (`PARTITION_BUFFER_BYTES_MAX`, the log's `has_room`): the connection stops reading
    /// (back-pressure) instead of the producer getting `Busy`. Waiters queue in arrival
    /// order (the partition's room gate); the caller appends before awaiting anything else,
    /// so the room found is still there.
    pub(crate) async fn within_room(&self, partition: &Partition, len: u64) {
        let Ok(_turn) = partition.room_gate.clone().acquire_static_permit(1).await else {
            return;
        };
        if !partition.log().has_room(len) {
            crate::metrics::with(|metrics| metrics.backpressure_waits.add(1));
        }
        while !partition.log().has_room(len) && !partition.is_closing() {
            self.budget.wait_for_progress().await;
        }
    }

    /// The log settings of a partition of `topic`, when the shard owns `owned` partitions
    /// (they share the shard's tail cache).
    fn log_config(&self, topic: &Topic, owned: usize) -> spate_core::LogConfig {
        let segment_bytes = match topic.segment_bytes {
            Setting::Value(value) => u32::try_from(value).unwrap_or(self.config.segment_bytes),
            _ => self.config.segment_bytes,
        };
        let mut config = self.config.log_config(
            effective(topic.retention_ms, Some(self.config.retention_ms)),
            effective(topic.retention_bytes, self.config.retention_bytes),
            segment_bytes,
        );
        config.tail_cache_bytes = self.config.tail_cache_bytes / owned.max(1) as u64;
        config
    }

    /// Opens (recovering from disk) every partition this shard owns and does not have open,
    /// and closes those it no longer owns. Called at startup and on every metadata update.
    pub async fn apply_metadata(self: &Rc<Self>, metadata: Metadata) {
        let metadata = Rc::new(metadata);
        *self.metadata.borrow_mut() = metadata.clone();
        let local = metadata.local_partitions(self.id);
        let owned = local.len();
        let wanted: Vec<(PartitionKey, spate_core::LogConfig)> = local
            .into_iter()
            .map(|(topic, partition, settings)| {
                let config = self.log_config(settings, owned);
                (PartitionKey { topic, partition }, config)
            })
            .collect();
        let open: Vec<PartitionKey> = self.partitions.borrow().keys();
        for key in open {
            let still = wanted.iter().any(|(wanted, _)| *wanted == key);
            match &metadata.cluster {
                None if !still => {
                    let keep = metadata.topics.contains_key(&key.topic);
                    self.close_partition(&key, keep).await;
                }
                None => {}
                Some(routes) => {
                    let claim = self.claims.borrow().get(&key).cloned();
                    let wanted_topic = routes
                        .replica(&key.topic, key.partition)
                        .map(|local| &local.topic_id);
                    let same_cluster = claim
                        .as_ref()
                        .is_some_and(|claim| claim.cluster == routes.cluster_id);
                    // Another topic of the same name (deleted and created again): the old
                    // replica goes, the new one opens below.
                    let recreated =
                        still && claim.as_ref().map(|claim| &claim.topic) != wanted_topic;
                    if recreated || !still {
                        // Files go only for what this cluster's complete map no longer
                        // gives this node, or gives to another topic of the name — not for a
                        // replica the map moved to another shard of this node.
                        let elsewhere = !recreated && wanted_topic.is_some();
                        let keep = elsewhere || !(same_cluster && (recreated || routes.complete));
                        self.close_partition(&key, keep).await;
                        self.claims.borrow_mut().remove(&key);
                    }
                }
            }
        }
        // Partitions recover concurrently, a bounded number at a time: a restart with many
        // partitions waits for the disk's queue, not for each partition's round trips, and
        // the memory recovery reads into stays bounded.
        let permits = Rc::new(Semaphore::new(RECOVERY_CONCURRENCY));
        let mut opening = Vec::new();
        for (key, config) in wanted {
            let present = self.partitions.borrow().contains(&key);
            if present {
                self.with_log(&key, |log| log.set_config(config.clone()));
                continue;
            }
            let Ok(permit) = permits.clone().acquire_static_permit(1).await else {
                break;
            };
            let shard = self.clone();
            opening.push(glommio::spawn_local(async move {
                shard.open_partition(key, config).await;
                drop(permit);
            }));
        }
        for task in opening {
            task.await;
        }
        // The partitions already open follow their leadership: a new epoch, a changed
        // in-sync set, or none — as the newest metadata says (another update may have
        // come while this one opened partitions).
        let newest = self.metadata();
        if let Some(routes) = &newest.cluster {
            for partition in self.partition_list() {
                let key = &partition.key;
                let Some(local) = routes.replica(&key.topic, key.partition) else {
                    continue;
                };
                let dir = partition_dir(&self.config.data_dir, &key.topic, key.partition);
                // A fetcher stops before its replica leads.
                self.follow(&partition, &local.topic_id, local.follows.as_ref());
                self.lead(&partition, &dir, &local.topic_id, local.leads.as_ref())
                    .await;
            }
        }
    }

    async fn close_partition(&self, key: &PartitionKey, keep_files: bool) {
        let partition = self.partitions.borrow_mut().remove(key);
        if let Some(partition) = partition {
            // Make everything appended durable before the files close.
            partition.with_log(|log| log.handle_flush(now()));
            partition.close();
            // Give in-flight syncs a moment to finish before the files go.
            for _ in 0..CLOSE_SETTLE_CHECKS {
                if partition.settled() {
                    break;
                }
                glommio::timer::sleep(CLOSE_SETTLE_CHECK).await;
            }
            // What has not settled by now is not acknowledged: the driver stops at once.
            partition.abandon();
            partition.release_budget();
            let reader = partition.storage.borrow().reader();
            reader.close().await;
        }
        if !keep_files {
            let dir = partition_dir(&self.config.data_dir, &key.topic, key.partition);
            let shown = dir.display().to_string();
            let removed = glommio::executor()
                .spawn_blocking(move || std::fs::remove_dir_all(&dir))
                .await;
            match removed {
                Ok(()) => tracing::info!(dir = %shown, "deleted partition directory"),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::error!(dir = %shown, "cannot delete partition directory: {error}");
                }
            }
        }
        self.cluster.release(&key.topic, key.partition, self.id.0);
    }

    /// Opens a partition unless it is being opened already (a metadata update and a retried
    /// recovery may both want it; two drivers on one directory would corrupt it).
    async fn open_partition(self: &Rc<Self>, key: PartitionKey, config: spate_core::LogConfig) {
        self.open_partition_as(key, config, None).await;
    }

    /// [`Shard::open_partition`], its log cut or reset first when `reopen` says so.
    async fn open_partition_as(
        self: &Rc<Self>,
        key: PartitionKey,
        config: spate_core::LogConfig,
        reopen: Option<Reopen>,
    ) {
        if !self.opening.borrow_mut().insert(key.clone()) {
            return;
        }
        self.not_opened.borrow_mut().remove(&key);
        // Another shard of this node may still hold the directory (a replica moved between
        // shards): it opens here once that one closed it.
        let mut waited = Duration::ZERO;
        while !self.cluster.hold(&key.topic, key.partition, self.id.0) {
            if waited >= HOLD_WAIT || self.shutdown.load(Ordering::Relaxed) {
                tracing::error!(topic = %key.topic, partition = key.partition, "not opened: another shard of this node still holds its directory");
                self.opening.borrow_mut().remove(&key);
                self.not_opened.borrow_mut().insert(key);
                return;
            }
            glommio::timer::sleep(HOLD_CHECK).await;
            waited += HOLD_CHECK;
        }
        // The map may have moved it on meanwhile (to another shard, or off this node).
        if self.placed_here(&key) {
            self.open_partition_once(key.clone(), config, reopen).await;
            if !self.partitions.borrow().contains(&key) {
                self.not_opened.borrow_mut().insert(key.clone());
            }
        }
        if !self.partitions.borrow().contains(&key) {
            self.cluster.release(&key.topic, key.partition, self.id.0);
        }
        self.opening.borrow_mut().remove(&key);
    }

    /// Whether the newest metadata puts `key` on this shard (a single node's: always).
    fn placed_here(&self, key: &PartitionKey) -> bool {
        match &self.metadata().cluster {
            None => true,
            Some(routes) => routes
                .replica(&key.topic, key.partition)
                .is_some_and(|local| local.shard == self.id),
        }
    }

    /// A follower's replica whose log must be cut or started over (its fetcher of
    /// `generation` found so): closed, opened again through `Recovery::truncating` or
    /// `Recovery::resetting`, and followed anew — only while that fetcher is still the
    /// replica's (under the replica's turn, so no leadership is taken meanwhile), and with the
    /// key claimed as opening throughout (no metadata update opens it in between).
    pub(crate) async fn reopen(
        self: &Rc<Self>,
        partition: &Rc<Partition>,
        how: Reopen,
        generation: u64,
    ) {
        let Ok(turn) = partition
            .replica_turn
            .clone()
            .acquire_static_permit(1)
            .await
        else {
            return;
        };
        let still = self.is_current(partition)
            && partition
                .following
                .borrow()
                .as_ref()
                .is_some_and(|following| following.generation == generation);
        let key = partition.key.clone();
        if !still || !self.opening.borrow_mut().insert(key.clone()) {
            return;
        }
        self.not_opened.borrow_mut().remove(&key);
        let config = partition.log().config().clone();
        self.close_partition(&key, true).await;
        drop(turn);
        // Closing gave the directory up: it is this shard's again before it opens (another
        // shard that took it meanwhile has the replica now).
        if self.placed_here(&key) && self.cluster.hold(&key.topic, key.partition, self.id.0) {
            self.open_partition_once(key.clone(), config, Some(how))
                .await;
            if !self.partitions.borrow().contains(&key) {
                self.not_opened.borrow_mut().insert(key.clone());
                self.cluster.release(&key.topic, key.partition, self.id.0);
            }
        }
        self.opening.borrow_mut().remove(&key);
    }

    async fn open_partition_once(
        self: &Rc<Self>,
        key: PartitionKey,
        config: spate_core::LogConfig,
        reopen: Option<Reopen>,
    ) {
        if self.partitions.borrow().contains(&key) {
            return;
        }
        let dir = partition_dir(&self.config.data_dir, &key.topic, key.partition);
        if let Err(error) = std::fs::create_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), "cannot create partition directory: {error}");
            return;
        }
        let claim = self.metadata().cluster.as_ref().and_then(|routes| {
            let local = routes.replica(&key.topic, key.partition)?;
            Some(ReplicaOf {
                cluster: routes.cluster_id.clone(),
                topic: local.topic_id.clone(),
            })
        });
        if let Some(of) = claim {
            let claimed = dir.clone();
            let wanted = of.clone();
            let result = glommio::executor()
                .spawn_blocking(move || claim_directory(&claimed, &wanted))
                .await;
            if let Err(error) = result {
                tracing::error!(topic = %key.topic, partition = key.partition, "replica not opened: {error}");
                return;
            }
            self.claims.borrow_mut().insert(key.clone(), of);
        }
        let (doorbell, bell) = local_channel::new_bounded(1);
        let doorbell = Rc::new(doorbell);
        let mut storage =
            DmaStorage::new(dir.clone(), doorbell.clone(), self.write_buffers.clone());
        let listing = match list_dir(&dir) {
            Ok(listing) => listing,
            Err(error) => {
                tracing::error!(dir = %dir.display(), "cannot list partition directory: {error}");
                return;
            }
        };
        tracing::debug!(topic = %key.topic, partition = key.partition, files = listing.len(), "recovering");
        let mut recovery = match reopen {
            None => Recovery::new(config, &listing),
            Some(Reopen::Truncate(to)) => Recovery::truncating(config, &listing, to),
            Some(Reopen::Reset(start)) => Recovery::resetting(config, &listing, start),
        };
        let result = loop {
            while let Some(request) = recovery.poll_io() {
                storage.submit(request);
            }
            if let Some(result) = recovery.poll_done() {
                break result;
            }
            tracing::trace!(topic = %key.topic, partition = key.partition, "recovery waits for storage");
            if bell.recv().await.is_none() {
                return;
            }
            while let Some(done) = storage.poll_done() {
                recovery.handle_io_done(done);
            }
        };
        let recovered = match result {
            Ok(recovered) => recovered,
            Err(error) => {
                tracing::error!(topic = %key.topic, partition = key.partition, "recovery failed, partition not served: {error}");
                return;
            }
        };
        let report = &recovered.report;
        crate::metrics::with(|metrics| {
            metrics.recovered_partitions.add(1);
            metrics
                .torn_tails
                .add(u64::from(report.torn_tail.is_some()));
            metrics
                .corruptions
                .add(u64::from(report.corruption.is_some()));
        });
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(
                topic = %key.topic,
                partition = key.partition,
                segment = torn.segment.0,
                position = torn.position,
                discarded = torn.bytes_discarded,
                "truncated a torn tail (never acknowledged): {}",
                torn.reason
            );
        }
        if let Some(corruption) = &report.corruption {
            tracing::error!(
                topic = %key.topic,
                partition = key.partition,
                "corruption of acknowledged data, partition fenced (reads below it still served): {corruption}"
            );
            self.persist_fence(&key, corruption).await;
        }
        for base in &report.rebuilt_indexes {
            tracing::info!(topic = %key.topic, partition = key.partition, segment = base.0, "rebuilt segment indexes");
        }
        for invalid in &report.invalid_snapshots {
            tracing::warn!(topic = %key.topic, partition = key.partition, "producer snapshot not used, replayed more of the log instead: {invalid}");
        }
        tracing::debug!(
            topic = %key.topic,
            partition = key.partition,
            segments = report.segments,
            high_watermark = recovered.log.high_watermark().0,
            producers = recovered.log.producers().len(),
            "partition open"
        );
        let mut recovered = recovered;
        if recovered.log.fenced().is_none() {
            if let Some(reason) = crate::fence::load(&dir) {
                tracing::error!(
                    topic = %key.topic,
                    partition = key.partition,
                    "partition fenced: {reason}"
                );
                recovered.log.handle_corruption(reason);
            }
        }
        let partition = Partition::new(
            key.clone(),
            recovered.log,
            storage,
            doorbell,
            self.budget.clone(),
        );
        // A partition this node leads takes its epoch (the `leader-epochs` file) before anyone
        // can reach it.
        let local = self.metadata().cluster.as_ref().and_then(|routes| {
            let local = routes.replica(&key.topic, key.partition)?;
            Some(local.clone())
        });
        if let Some(local) = &local {
            self.lead(&partition, &dir, &local.topic_id, local.leads.as_ref())
                .await;
        }
        let replaced = self.partitions.borrow_mut().insert(partition.clone());
        if let Some(old) = replaced {
            // `opening` keeps two drivers off one directory; should one slip through, the
            // old one stops and leaves the budget.
            tracing::error!(topic = %old.key.topic, partition = old.key.partition, "a partition was opened twice; the older driver stops");
            old.abandon();
            old.release_budget();
        }
        glommio::spawn_local(partition.clone().drive(bell)).detach();
        // The role as the metadata says now (it may have changed while this partition
        // opened and took its epoch).
        let local = self.metadata().cluster.as_ref().and_then(|routes| {
            let local = routes.replica(&key.topic, key.partition)?;
            Some(local.clone())
        });
        if let Some(local) = &local {
            self.follow(&partition, &local.topic_id, local.follows.as_ref());
            self.lead(&partition, &dir, &local.topic_id, local.leads.as_ref())
                .await;
        }
    }

    /// Starts (or ends) the fetcher of `partition` as `follows` says: a new leader, epoch or
    /// endpoint ends the old fetcher and starts a new one.
    fn follow(
        self: &Rc<Self>,
        partition: &Rc<Partition>,
        topic_id: &str,
        follows: Option<&Follows>,
    ) {
        let topic_id = u128::from_str_radix(topic_id, 16).ok();
        let wanted = follows.zip(topic_id);
        let same = {
            let following = partition.following.borrow();
            match (following.as_ref(), wanted) {
                (None, None) => true,
                (Some(following), Some((follows, topic_id))) => {
                    following.leader == follows.leader
                        && following.epoch == follows.epoch
                        && following.endpoint == follows.endpoint
                        && following.topic_id == topic_id
                }
                _ => false,
            }
        };
        if same {
            return;
        }
        let Some((follows, topic_id)) = wanted else {
            partition.following.borrow_mut().take();
            return;
        };
        let generation = self.fetchers.get() + 1;
        self.fetchers.set(generation);
        *partition.following.borrow_mut() = Some(Following {
            leader: follows.leader,
            epoch: follows.epoch,
            endpoint: follows.endpoint.clone(),
            topic_id,
            generation,
        });
        glommio::spawn_local(crate::fetcher::run(
            self.clone(),
            partition.clone(),
            generation,
        ))
        .detach();
    }

    /// Re-runs recovery, from what is on the media, for fenced partitions: all of them when
    /// `requested` (the operator's SIGHUP), otherwise those fenced by ENOSPC once the data
    /// directory has `RECOVERY_FREE_BYTES_MIN` free. A failed `fdatasync` is never retried:
    /// the partition's files are closed and everything is read back from the disk, as at a
    /// start. A recorded corruption fence (`FENCED`) is found again by the new recovery.
    pub async fn retry_fenced(self: &Rc<Self>, requested: bool) {
        let fenced: Vec<(PartitionKey, spate_core::FenceReason)> = {
            let keys: Vec<PartitionKey> = self.partitions.borrow().keys();
            keys.into_iter()
                .filter_map(|key| {
                    let reason = self.with_log(&key, |log| log.fenced().cloned()).flatten()?;
                    Some((key, reason))
                })
                .collect()
        };
        if fenced.is_empty() {
            return;
        }
        let free = crate::storage::free_bytes(&self.config.data_dir);
        let mut closed = 0;
        for (key, reason) in fenced {
            let no_space = matches!(&reason, spate_core::FenceReason::Storage(error)
                if error.errno == Some(libc::ENOSPC));
            let retry = requested || (no_space && free >= RECOVERY_FREE_BYTES_MIN);
            if !retry {
                continue;
            }
            tracing::warn!(
                topic = %key.topic,
                partition = key.partition,
                free_bytes = free,
                "re-running recovery of a fenced partition ({reason})"
            );
            self.close_partition(&key, true).await;
            closed += 1;
        }
        if closed > 0 {
            let metadata = (*self.metadata()).clone();
            self.apply_metadata(metadata).await;
        }
    }

    /// Fences a partition for damage found in acknowledged data (a fetch or the background
    /// verification met it), recording the fence first so a restart keeps it.
    pub(crate) async fn fence_corrupt(
        &self,
        partition: &Partition,
        reason: spate_core::FenceReason,
    ) {
        self.persist_fence(&partition.key, &reason).await;
        partition.with_log(|log| log.handle_corruption(reason));
        partition.ring();
    }

    /// The partitions open on this shard now.
    pub(crate) fn partition_list(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().partitions().cloned().collect()
    }

    /// Whether `partition` is still open (not closed, deleted or re-opened since).
    pub(crate) fn is_current(&self, partition: &Rc<Partition>) -> bool {
        self.partitions
            .borrow()
            .get(&partition.key.topic, partition.key.partition)
            .is_some_and(|open| Rc::ptr_eq(open, partition))
    }

    /// Records a corruption fence in the partition's directory so a restart keeps it.
    async fn persist_fence(&self, key: &PartitionKey, reason: &spate_core::FenceReason) {
        let dir = partition_dir(&self.config.data_dir, &key.topic, key.partition);
        let reason = reason.clone();
        let shown = dir.display().to_string();
        let stored = glommio::executor()
            .spawn_blocking(move || crate::fence::persist(&dir, &reason))
            .await;
        if let Err(error) = stored {
            tracing::error!(dir = %shown, "cannot record the fence (a restart would lift it): {error}");
        }
    }

    /// Closes every partition after letting in-flight syncs finish.
    pub async fn close_all(&self) {
        let keys: Vec<PartitionKey> = self.partitions.borrow().keys();
        for key in keys {
            self.close_partition(&key, true).await;
        }
    }

    /// Applies retention to every partition.
    pub fn retention(&self) {
        let time = now();
        let partitions: Vec<Rc<Partition>> =
            self.partitions.borrow().partitions().cloned().collect();
        for partition in partitions {
            let deleted = partition.with_log(|log| log.handle_retention(time));
            if deleted > 0 {
                partition.ring();
            }
        }
    }

    /// Applies a metadata update from the coordinator.
    pub async fn on_update(self: &Rc<Self>, update: Update) {
        self.apply_metadata(update.metadata).await;
    }
}
