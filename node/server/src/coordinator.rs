//! Metadata changes, coordinated between shards over bounded glommio channels.
//!
//! Shard 0 is the coordinator: it applies topic creations and deletions (and hands out blocks
//! of producer ids), stores the new metadata durably, sends it to every shard, and answers
//! the request only after every shard has applied it (opened or closed its partitions), so a
//! topic that was created can be used at once on any shard. A single node takes its admin
//! requests one at a time; in a cluster they run side by side (each waits on etcd, not on the
//! others), and the metadata made from the cluster's map is published in turn with them.
//! Other shards forward admin requests to it and apply the updates it sends. The data path
//! never goes through here.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use spate_format::limits::{PARTITIONS_PER_TOPIC_MAX, SEGMENT_SIZE_MAX, SEGMENT_SIZE_MIN};
use spate_proto::{
    AllocateProducerIdsResponse, AlterTopicResponse, CreateTopicRequest, CreateTopicResponse,
    DeleteTopicResponse, ErrorCode, ErrorResponse, Request, Response, Setting, ShardId,
};

use crate::metadata::{assign, Metadata, Topic};

#[cfg(feature = "cluster")]
mod cluster;
use crate::shard::Shard;

/// Admin requests waiting for the coordinator, per shard.
pub const ADMIN_QUEUE_MAX: usize = 64;
/// How long the coordinator waits for every shard to apply an update.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A new version of the metadata.
#[derive(Debug, Clone)]
pub struct Update {
    pub version: u64,
    pub metadata: Metadata,
}

/// Messages from a shard to the coordinator.
#[derive(Debug)]
pub enum ToCoordinator {
    Admin {
        id: u64,
        api_key: u16,
        request: Request,
    },
    Applied {
        shard: ShardId,
        version: u64,
    },
}

/// Messages from the coordinator to a shard.
#[derive(Debug)]
pub enum ToShard {
    Update(Update),
    Reply { id: u64, response: Response },
}

/// What the coordinator does next, one at a time.
#[derive(Debug)]
enum Work {
    Admin(Box<AdminItem>),
    /// The cluster's map or this node's session changed: the metadata is made again (only in
    /// a cluster).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Remap,
}

/// Where the coordinator sends an answer.
#[derive(Debug)]
enum ReplyTo {
    Local(LocalSender<Response>),
    Remote { shard: usize, id: u64 },
}

#[derive(Debug)]
struct AdminItem {
    api_key: u16,
    request: Request,
    reply: ReplyTo,
}

/// A shard's way to the coordinator.
#[derive(Debug, Clone)]
pub enum AdminClient {
    /// On shard 0 itself.
    Local(Rc<LocalSender<AdminItemHandle>>),
    Remote(Rc<RemoteAdmin>),
}

/// An opaque admin item (the coordinator's queue element).
#[derive(Debug)]
pub struct AdminItemHandle(AdminItem);

#[derive(Debug)]
pub struct RemoteAdmin {
    sender: ConnectedSender<ToCoordinator>,
    pending: RefCell<HashMap<u64, LocalSender<Response>>>,
    next_id: Cell<u64>,
}

impl AdminClient {
    /// Sends a create/delete request to the coordinator and waits for the answer.
    pub async fn call(&self, request: Request, api_key: u16) -> Response {
        let (reply, answer) = local_channel::new_bounded(1);
        let sent = match self {
            AdminClient::Local(queue) => queue
                .send(AdminItemHandle(AdminItem {
                    api_key,
                    request,
                    reply: ReplyTo::Local(reply),
                }))
                .await
                .is_ok(),
            AdminClient::Remote(remote) => {
                let id = remote.next_id.get();
                remote.next_id.set(id + 1);
                remote.pending.borrow_mut().insert(id, reply);
                remote
                    .sender
                    .send(ToCoordinator::Admin {
                        id,
                        api_key,
                        request,
                    })
                    .await
                    .is_ok()
            }
        };
        if !sent {
            return Response::error(api_key, ErrorCode::ShuttingDown, "the coordinator is gone");
        }
        answer.recv().await.unwrap_or_else(|| {
            Response::error(api_key, ErrorCode::ShuttingDown, "the coordinator is gone")
        })
    }
}

/// Builds the admin client of shard 0 and the coordinator's queue.
pub fn local_client() -> (AdminClient, LocalReceiver<AdminItemHandle>) {
    let (sender, receiver) = local_channel::new_bounded(ADMIN_QUEUE_MAX);
    (AdminClient::Local(Rc::new(sender)), receiver)
}

/// Builds the admin client of another shard.
pub fn remote_client(sender: ConnectedSender<ToCoordinator>) -> AdminClient {
    AdminClient::Remote(Rc::new(RemoteAdmin {
        sender,
        pending: RefCell::new(HashMap::new()),
        next_id: Cell::new(0),
    }))
}

/// On a shard other than 0: applies updates and delivers replies from the coordinator.
pub async fn follow(
    shard: Rc<Shard>,
    admin: AdminClient,
    from_coordinator: ConnectedReceiver<ToShard>,
) {
    while let Some(message) = from_coordinator.recv().await {
        match message {
            ToShard::Update(update) => {
                let version = update.version;
                shard.on_update(update).await;
                if let AdminClient::Remote(remote) = &admin {
                    let applied = ToCoordinator::Applied {
                        shard: shard.id,
                        version,
                    };
                    let _ = remote.sender.send(applied).await;
                }
            }
            ToShard::Reply { id, response } => {
                if let AdminClient::Remote(remote) = &admin {
                    if let Some(reply) = remote.pending.borrow_mut().remove(&id) {
                        let _ = reply.try_send(response);
                    }
                }
            }
        }
    }
}

/// The coordinator, on shard 0.
pub struct Coordinator {
    shard: Rc<Shard>,
    version: Cell<u64>,
    to_shards: Vec<ConnectedSender<ToShard>>,
    applied: RefCell<HashMap<u64, usize>>,
    applied_bell: LocalSender<()>,
    applied_rings: LocalReceiver<()>,
    /// Held while the metadata is made and published: one version at a time, sent to every
    /// shard in order, whichever task publishes it.
    publishing: glommio::sync::Semaphore,
    /// In a cluster, admin requests run side by side (they wait on etcd and the controller,
    /// not on each other); at most `ADMIN_QUEUE_MAX` at once.
    admin_slots: Rc<glommio::sync::Semaphore>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("version", &self.version.get())
            .finish()
    }
}

impl Coordinator {
    /// `to_shards[i]` reaches shard `i + 1`; `from_shards` likewise.
    pub async fn run(
        shard: Rc<Shard>,
        queue: LocalReceiver<AdminItemHandle>,
        to_shards: Vec<ConnectedSender<ToShard>>,
        from_shards: Vec<ConnectedReceiver<ToCoordinator>>,
    ) {
        let (applied_bell, applied_rings) = local_channel::new_bounded(1);
        let coordinator = Rc::new(Coordinator {
            shard,
            version: Cell::new(0),
            to_shards,
            applied: RefCell::new(HashMap::new()),
            applied_bell,
            applied_rings,
            publishing: glommio::sync::Semaphore::new(1),
            admin_slots: Rc::new(glommio::sync::Semaphore::new(ADMIN_QUEUE_MAX as u64)),
        });
        let (forward, items) = local_channel::new_bounded::<Work>(ADMIN_QUEUE_MAX);
        let forward = Rc::new(forward);
        // One task per shard turns its messages into queue items and acknowledgements.
        for (index, receiver) in from_shards.into_iter().enumerate() {
            let coordinator = coordinator.clone();
            let forward = forward.clone();
            glommio::spawn_local(async move {
                while let Some(message) = receiver.recv().await {
                    match message {
                        ToCoordinator::Admin {
                            id,
                            api_key,
                            request,
                        } => {
                            let item = AdminItem {
                                api_key,
                                request,
                                reply: ReplyTo::Remote { shard: index, id },
                            };
                            if forward.send(Work::Admin(Box::new(item))).await.is_err() {
                                break;
                            }
                        }
                        ToCoordinator::Applied { version, .. } => {
                            *coordinator.applied.borrow_mut().entry(version).or_insert(0) += 1;
                            let _ = coordinator.applied_bell.try_send(());
                        }
                    }
                }
            })
            .detach();
        }
        let local = forward.clone();
        glommio::spawn_local(async move {
            while let Some(AdminItemHandle(item)) = queue.recv().await {
                if local.send(Work::Admin(Box::new(item))).await.is_err() {
                    break;
                }
            }
        })
        .detach();
        #[cfg(feature = "cluster")]
        if coordinator.shard.config.etcd.is_some() {
            glommio::spawn_local(cluster::follow_cluster(
                coordinator.shard.clone(),
                forward.clone(),
            ))
            .detach();
        }
        drop(forward);
        while let Some(work) = items.recv().await {
            let item = match work {
                Work::Admin(item) => item,
                Work::Remap => {
                    #[cfg(feature = "cluster")]
                    coordinator.remap().await;
                    continue;
                }
            };
            if coordinator.shard.config.etcd.is_none() {
                // A single node changes its metadata file: one request after the other.
                coordinator.answer(*item).await;
                continue;
            }
            // In a cluster a request waits on etcd and on the controller (seconds, for a
            // topic's creation): it must not hold back the next request, nor the remaps that
            // follow the cluster's map while it waits.
            let Ok(slot) = coordinator.admin_slots.acquire_static_permit(1).await else {
                break;
            };
            let coordinator = coordinator.clone();
            glommio::spawn_local(async move {
                coordinator.answer(*item).await;
                drop(slot);
            })
            .detach();
        }
    }

    /// Handles an admin request and sends its answer.
    async fn answer(&self, item: AdminItem) {
        let response = self.handle(item.api_key, item.request).await;
        match item.reply {
            ReplyTo::Local(reply) => {
                let _ = reply.try_send(response);
            }
            ReplyTo::Remote { shard, id } => {
                if let Some(sender) = self.to_shards.get(shard) {
                    let _ = sender.send(ToShard::Reply { id, response }).await;
                }
            }
        }
    }

    async fn handle(&self, api_key: u16, request: Request) -> Response {
        #[cfg(feature = "cluster")]
        if let Some(query) = self.shard.cluster.query() {
            return self.handle_cluster(query, api_key, request).await;
        }
        let fail = |code, message: String| Response::Error {
            api_key,
            error: ErrorResponse::new(code, message),
        };
        if self.shard.config.etcd.is_some() {
            return fail(
                ErrorCode::Unavailable,
                "the node has not joined its cluster yet".into(),
            );
        }
        let mut metadata = (*self.shard.metadata()).clone();
        let response = match request {
            Request::CreateTopic(create) => {
                if let Err((code, message)) = validate_create(&create) {
                    return fail(code, message);
                }
                if create.replication_factor > 1 {
                    return fail(
                        ErrorCode::InvalidReplicationFactor,
                        format!(
                            "replication factor {}: a single node holds one copy of each \
                             partition; replication needs a cluster (--etcd, docs/cluster.md)",
                            create.replication_factor
                        ),
                    );
                }
                if metadata.topics.contains_key(&create.topic) {
                    return fail(
                        ErrorCode::TopicAlreadyExists,
                        format!("topic {:?} already exists", create.topic),
                    );
                }
                let shards = u32::try_from(self.shard.endpoints.len()).unwrap_or(1);
                let topic = Topic {
                    retention_ms: create.retention_ms,
                    retention_bytes: create.retention_bytes,
                    segment_bytes: create.segment_bytes,
                    min_insync_replicas: create.min_insync_replicas,
                    shards: (0..create.partitions)
                        .map(|p| assign(&create.topic, p, shards))
                        .collect(),
                };
                metadata.topics.insert(create.topic.clone(), topic);
                Response::CreateTopic(CreateTopicResponse {
                    topic: create.topic,
                    partitions: create.partitions,
                })
            }
            Request::DeleteTopic(delete) => {
                if metadata.topics.remove(&delete.topic).is_none() {
                    return fail(
                        ErrorCode::UnknownTopic,
                        format!("unknown topic {:?}", delete.topic),
                    );
                }
                Response::DeleteTopic(DeleteTopicResponse {
                    topic: delete.topic,
                })
            }
            Request::AutoCreateTopic(auto) => {
                if let Some(topic) = metadata.topics.get(&auto.topic) {
                    // Created meanwhile (another client named it too): nothing to change.
                    return Response::AutoCreateTopic(CreateTopicResponse {
                        partitions: u32::try_from(topic.shards.len()).unwrap_or(u32::MAX),
                        topic: auto.topic,
                    });
                }
                if !self.shard.config.auto_create_topics {
                    let (code, message) = auto_create_off(&auto.topic);
                    return fail(code, message);
                }
                let create = auto_create(&self.shard.config, auto.topic);
                if let Err((code, message)) = validate_create(&create) {
                    return fail(code, message);
                }
                let shards = u32::try_from(self.shard.endpoints.len()).unwrap_or(1);
                metadata.topics.insert(
                    create.topic.clone(),
                    Topic {
                        retention_ms: create.retention_ms,
                        retention_bytes: create.retention_bytes,
                        segment_bytes: create.segment_bytes,
                        min_insync_replicas: create.min_insync_replicas,
                        shards: (0..create.partitions)
                            .map(|p| assign(&create.topic, p, shards))
                            .collect(),
                    },
                );
                tracing::info!(topic = %create.topic, partitions = create.partitions, "created a topic a client named (--auto-create-topics)");
                Response::AutoCreateTopic(CreateTopicResponse {
                    topic: create.topic,
                    partitions: create.partitions,
                })
            }
            Request::AlterTopic(alter) => {
                let Some(topic) = metadata.topics.get_mut(&alter.topic) else {
                    return fail(
                        ErrorCode::UnknownTopic,
                        format!("unknown topic {:?}", alter.topic),
                    );
                };
                // The same rules as at creation, for the settings as they would become.
                let check = CreateTopicRequest {
                    legacy_layout: false,
                    topic: alter.topic.clone(),
                    partitions: u32::try_from(topic.shards.len()).unwrap_or(u32::MAX),
                    retention_ms: alter.retention_ms.unwrap_or(topic.retention_ms),
                    retention_bytes: alter.retention_bytes.unwrap_or(topic.retention_bytes),
                    segment_bytes: alter.segment_bytes.unwrap_or(topic.segment_bytes),
                    replication_factor: 0,
                    min_insync_replicas: alter
                        .min_insync_replicas
                        .unwrap_or(topic.min_insync_replicas),
                };
                if let Err((code, message)) = validate_create(&check) {
                    return fail(code, message);
                }
                let answer = Response::AlterTopic(AlterTopicResponse {
                    topic: alter.topic.clone(),
                    retention_ms: check.retention_ms,
                    retention_bytes: check.retention_bytes,
                    segment_bytes: check.segment_bytes,
                });
                if alter.validate_only {
                    return answer;
                }
                topic.retention_ms = check.retention_ms;
                topic.retention_bytes = check.retention_bytes;
                topic.segment_bytes = check.segment_bytes;
                topic.min_insync_replicas = check.min_insync_replicas;
                tracing::info!(topic = %alter.topic, retention_ms = ?check.retention_ms, retention_bytes = ?check.retention_bytes, segment_bytes = ?check.segment_bytes, min_insync_replicas = ?check.min_insync_replicas, "changed a topic's settings");
                answer
            }
            Request::AllocateProducerIds(allocate) => {
                let first = metadata.next_producer_id;
                // Producer ids are i64 in Kafka: never hand out one above i64::MAX.
                let end = first
                    .checked_add(u64::from(allocate.count))
                    .filter(|end| i64::try_from(*end).is_ok());
                let Some(end) = end else {
                    return fail(
                        ErrorCode::InvalidRequest,
                        "the node has handed out every producer id".into(),
                    );
                };
                metadata.next_producer_id = end;
                Response::AllocateProducerIds(AllocateProducerIdsResponse {
                    first,
                    count: allocate.count,
                })
            }
            Request::MovePartitions(_) => {
                return fail(
                    ErrorCode::InvalidRequest,
                    "a single node holds one copy of each partition: moving partitions between \
                     nodes needs a cluster (--etcd, docs/cluster.md)"
                        .into(),
                )
            }
            _ => return fail(ErrorCode::InvalidRequest, "not an admin request".into()),
        };
        let dir = self.shard.config.data_dir.clone();
        let stored = metadata.clone();
        let result = glommio::executor()
            .spawn_blocking(move || stored.store(&dir))
            .await;
        if let Err(error) = result {
            tracing::error!("cannot store metadata: {error}");
            return fail(
                ErrorCode::Storage,
                format!("cannot store metadata: {error}"),
            );
        }
        self.publish(metadata).await;
        response
    }

    /// Sends `metadata` to every shard and applies it here; returns once every shard applied
    /// it (or after `APPLY_TIMEOUT`).
    async fn publish(&self, metadata: Metadata) {
        let Ok(_turn) = self.publishing.acquire_permit(1).await else {
            return;
        };
        self.publish_in_turn(metadata).await;
    }

    /// [`Coordinator::publish`], by the holder of `publishing`.
    async fn publish_in_turn(&self, metadata: Metadata) {
        let version = self.version.get() + 1;
        self.version.set(version);
        for sender in &self.to_shards {
            let update = Update {
                version,
                metadata: metadata.clone(),
            };
            let _ = sender.send(ToShard::Update(update)).await;
        }
        self.shard.apply_metadata(metadata).await;
        // Answer once every shard applied it.
        let deadline = std::time::Instant::now() + APPLY_TIMEOUT;
        while self.applied.borrow().get(&version).copied().unwrap_or(0) < self.to_shards.len() {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            if remaining.is_zero() {
                tracing::warn!(version, "not every shard applied a metadata update in time");
                break;
            }
            future::or(
                async { self.applied_rings.recv().await.map_or((), |_| ()) },
                glommio::timer::sleep(remaining),
            )
            .await;
        }
        self.applied.borrow_mut().remove(&version);
    }
}

/// Why a topic a client named is not created: automatic creation is off on this node.
fn auto_create_off(topic: &str) -> (ErrorCode, String) {
    (
        ErrorCode::UnknownTopic,
        format!(
            "unknown topic {topic:?}, and automatic creation is off on this node \
             (--auto-create-topics); create it with `spate topic create {topic} --partitions N` \
             or a Kafka admin client"
        ),
    )
}

/// The creation of a topic a client named, with the node's `--auto-create-partitions` and
/// default settings.
fn auto_create(config: &crate::config::NodeConfig, topic: String) -> CreateTopicRequest {
    CreateTopicRequest {
        legacy_layout: false,
        topic,
        partitions: config.auto_create_partitions,
        retention_ms: Setting::Default,
        retention_bytes: Setting::Default,
        segment_bytes: Setting::Default,
        replication_factor: 0,
        min_insync_replicas: Setting::Default,
    }
}

fn validate_create(create: &CreateTopicRequest) -> Result<(), (ErrorCode, String)> {
    if create.partitions == 0 || create.partitions > PARTITIONS_PER_TOPIC_MAX {
        return Err((
            ErrorCode::InvalidPartitionCount,
            format!(
                "{} partitions (valid: 1 to {PARTITIONS_PER_TOPIC_MAX})",
                create.partitions
            ),
        ));
    }
    if let Setting::Value(bytes) = create.segment_bytes {
        if !(u64::from(SEGMENT_SIZE_MIN)..=u64::from(SEGMENT_SIZE_MAX)).contains(&bytes) {
            return Err((
                ErrorCode::InvalidConfig,
                format!("segment_bytes {bytes} (valid: 64 KiB to 2 GiB)"),
            ));
        }
    }
    match create.min_insync_replicas {
        Setting::Default => {}
        Setting::Value(count) if (1..=u64::from(u16::MAX)).contains(&count) => {}
        other => {
            return Err((
                ErrorCode::InvalidConfig,
                format!(
                    "min_insync_replicas {} (valid: 1 to {})",
                    match other {
                        Setting::Value(count) => count.to_string(),
                        _ => "unlimited".into(),
                    },
                    u16::MAX
                ),
            ))
        }
    }
    if create.segment_bytes == Setting::Unlimited {
        return Err((
            ErrorCode::InvalidConfig,
            "segment_bytes cannot be unlimited".into(),
        ));
    }
    for (field, setting) in [
        ("retention_ms", create.retention_ms),
        ("retention_bytes", create.retention_bytes),
    ] {
        if setting == Setting::Value(0) {
            return Err((
                ErrorCode::InvalidConfig,
                format!("{field} must be positive"),
            ));
        }
        if let Setting::Value(value) = setting {
            if value > i64::MAX as u64 {
                return Err((
                    ErrorCode::InvalidConfig,
                    format!("{field} {value} is too large"),
                ));
            }
        }
    }
    Ok(())
}
