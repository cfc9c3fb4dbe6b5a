//! The node's membership in a cluster whose control plane is etcd (docs/cluster.md, "Control
//! plane: etcd"). With `--etcd`, a node registers `/spate/<cluster>/members/<node>` under an
//! etcd lease of `--session-timeout-ms` and keeps the lease alive every third of it; the key
//! holds the node's session (random per registration), its storage id and its shards'
//! addresses. The registration is one transaction that succeeds only if no other process holds
//! the node id. A restarting node first revokes the lease its data directory names (its last
//! session's), so its old registration goes at once. A graceful stop revokes the lease (the
//! key goes at once); a node that cannot renew within the timeout registers again under a new
//! lease — a new session.
//!
//! Every member campaigns in etcd's election `/spate/<cluster>/controller` under its lease;
//! etcd elects one at a time (the oldest campaign), and a controller whose lease goes (a
//! stop, a crash, a lapse) is succeeded by the next, which then carries the controller's
//! duties (`crate::controller`).
//!
//! The etcd client runs on a thread of its own (a current-thread tokio runtime), never on a
//! shard's executor.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, TxnOpResponse,
};
use serde::{Deserialize, Serialize};
use spate_format::identity::Identity;
use thiserror::Error;
use tokio::sync::{oneshot, watch};

use crate::assignment::ClusterMap;

use crate::identity::IdentityLoadError;

/// The version of the member record's JSON layout.
pub const MEMBER_RECORD_VERSION: u32 = 1;

/// How the node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub endpoints: Vec<String>,
    pub cluster_name: String,
    pub node_id: u32,
    pub session_timeout: Duration,
    /// The address Kafka clients reach this node's partitions at (its gateway's Kafka
    /// listener), published in the member record.
    pub kafka_address: Option<String>,
    /// How the controller balances leaders back to preferred replicas; `None`: it does not.
    pub leader_balance: Option<LeaderBalance>,
    /// This node's rack (`--rack`), published in the member record.
    pub rack: Option<String>,
}

/// Automatic leader balancing (`--auto-leader-rebalance`): every `interval`, the preferred
/// elections of the members whose preferred partitions are led elsewhere in more than
/// `percent` percent (`spate_core::replica::rebalance_leaders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderBalance {
    pub interval: Duration,
    pub percent: u32,
}

impl ClusterSettings {
    /// The lease's time to live in whole seconds (etcd's unit), at least 1.
    fn ttl_seconds(&self) -> i64 {
        i64::try_from(self.session_timeout.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// What a node publishes about itself under `members/<node>` (JSON, readable with `etcdctl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The layout's version ([`MEMBER_RECORD_VERSION`]).
    pub v: u32,
    pub node: u32,
    /// Random per registration (16 hex digits): a node that registers again is a new session.
    pub session: String,
    /// The data directory's storage id (16 hex digits, docs/format/identity.md).
    pub storage: String,
    /// The address of each shard, by shard id.
    pub shards: Vec<String>,
    /// When this session registered (Unix time, ms).
    pub since_ms: u64,
    /// The address of the Kafka listener that fronts this node (`--kafka-address`), listed
    /// as its broker in Kafka Metadata; absent when not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<String>,
    /// Its rack (`--rack`): the controller spreads each partition's replicas over racks, and
    /// Kafka Metadata lists it with the broker; absent when not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// The etcd election of `cluster`'s controller.
pub fn controller_election(cluster: &str) -> String {
    format!("/spate/{cluster}/controller")
}

/// What the controller's campaign holds (JSON): who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRecord {
    /// The layout's version ([`MEMBER_RECORD_VERSION`]).
    pub v: u32,
    pub node: u32,
    /// The member's session (16 hex digits) the campaign runs under.
    pub session: String,
}

/// The etcd key of the members of `cluster`.
pub fn members_prefix(cluster: &str) -> String {
    format!("/spate/{cluster}/members/")
}

/// The etcd key of node `node` of `cluster`.
pub fn member_key(cluster: &str, node: u32) -> String {
    format!("{}{node}", members_prefix(cluster))
}

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cannot reach etcd at {endpoints}: {detail}")]
    Unreachable { endpoints: String, detail: String },
    #[error(
        "node id {node} is registered by another process (session {session}, since {since_ms} \
         ms after the Unix epoch; etcd key {key}): two nodes must never share an id. Stop the \
         other process, or give this node an id of its own"
    )]
    Taken {
        node: u32,
        session: String,
        since_ms: u64,
        key: String,
    },
    #[error("etcd refused the node's registration: {0}")]
    Etcd(String),
    #[error(transparent)]
    Identity(#[from] IdentityLoadError),
    #[error("the cluster session's thread failed: {0}")]
    Thread(String),
}

/// The node's live membership: a thread keeping its lease alive until [`ClusterSession::leave`].
#[derive(Debug)]
pub struct ClusterSession {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The session the node registered with at its start (later ones are logged).
    pub session: u64,
    controller: Arc<AtomicBool>,
    query: ClusterQuery,
}

impl ClusterSession {
    /// Registers the node (see the module documentation) and keeps its registration alive on
    /// a thread of its own. Returns once registered, or why it could not be.
    pub fn join(
        settings: ClusterSettings,
        data_dir: PathBuf,
        identity: Identity,
        shards: Vec<String>,
    ) -> Result<ClusterSession, ClusterError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let controller = Arc::new(AtomicBool::new(false));
        let asked = settings.clone();
        let elected = controller.clone();
        let (session_tx, session_rx) = watch::channel(None);
        let session_tx = Arc::new(session_tx);
        let incarnation = Arc::new(AtomicU64::new(0));
        let registered_at = incarnation.clone();
        let renewed = Arc::new(std::sync::Mutex::new(Instant::now()));
        let (map_tx, map_rx) = watch::channel(Arc::new(ClusterMap::default()));
        let mapped = settings.clone();
        let thread = std::thread::Builder::new()
            .name("spate-cluster".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(ClusterError::Thread(error.to_string())));
                        return;
                    }
                };
                let handle = runtime.handle().clone();
                runtime.block_on(async move {
                    let mut member = Member {
                        settings,
                        data_dir,
                        identity,
                        shards,
                        controller: elected,
                        session: session_tx.clone(),
                        incarnation: registered_at,
                        renewed: renewed.clone(),
                    };
                    let registered = match member.register().await {
                        Ok(registered) => registered,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok((registered.session, handle)));
                    let map = tokio::spawn(crate::assignment::follow(mapped, map_tx));
                    let watchdog = tokio::spawn(withdraw_when_overdue(
                        renewed,
                        session_tx,
                        member.settings.session_timeout,
                    ));
                    member.keep(registered, stop_rx).await;
                    map.abort();
                    watchdog.abort();
                });
            })
            .map_err(|error| ClusterError::Thread(error.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok((session, runtime))) => Ok(ClusterSession {
                stop: Some(stop_tx),
                thread: Some(thread),
                session,
                controller,
                query: ClusterQuery {
                    runtime,
                    settings: asked,
                    in_flight: Arc::new(AtomicUsize::new(0)),
                    client: Arc::default(),
                    admin_client: Arc::default(),
                    map: map_rx,
                    session: session_rx,
                    incarnation,
                },
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(ClusterError::Thread("it stopped before registering".into()))
            }
        }
    }

    /// Reads the cluster's members and controller for `DescribeCluster`.
    pub fn query(&self) -> ClusterQuery {
        self.query.clone()
    }

    /// Whether this node won the controller's election (under its current session).
    pub fn is_controller(&self) -> bool {
        self.controller.load(Ordering::Relaxed)
    }

    /// Leaves the cluster: the lease is revoked, so the node's registration goes at once (a
    /// controlled shutdown), and the thread stops.
    pub fn leave(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ClusterSession {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Queries about `DescribeCluster` asked of etcd at once; more are refused (busy).
pub const CLUSTER_QUERIES_MAX: usize = 16;

/// How long a `DescribeCluster` waits for etcd.
pub const CLUSTER_QUERY_WAIT: Duration = Duration::from_secs(2);

/// Reads the cluster's state from etcd on the cluster session's thread, for any shard.
#[derive(Clone)]
pub struct ClusterQuery {
    runtime: tokio::runtime::Handle,
    settings: ClusterSettings,
    in_flight: Arc<AtomicUsize>,
    /// The connection queries share (made at the first, dropped after a failure).
    client: Arc<tokio::sync::Mutex<Option<Client>>>,
    /// The connection of topic changes and producer ids (no per-request timeout: a topic's
    /// creation watches for the controller's answer; each call is bounded instead).
    admin_client: Arc<tokio::sync::Mutex<Option<Client>>>,
    /// The newest map of the cluster's assignments.
    pub map: watch::Receiver<Arc<ClusterMap>>,
    /// The session this node may lead under (`None` while its lease may have lapsed).
    pub session: watch::Receiver<Option<u64>>,
    /// The etcd revision of this node's newest registration (0 before the first): it only
    /// grows, also across restarts, so it orders what this node's runs say.
    incarnation: Arc<AtomicU64>,
}

impl std::fmt::Debug for ClusterQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterQuery")
            .field("settings", &self.settings)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl ClusterQuery {
    /// The etcd revision at which this node registered last: larger for every registration,
    /// across restarts too (a follower's fetch sessions are ordered by it first).
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::Relaxed)
    }

    /// The registered members (by node id) and the elected controller, read from etcd within
    /// [`CLUSTER_QUERY_WAIT`]; at most [`CLUSTER_QUERIES_MAX`] at once.
    pub async fn describe(&self) -> Result<spate_proto::DescribeClusterResponse, String> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= CLUSTER_QUERIES_MAX {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(format!(
                "{CLUSTER_QUERIES_MAX} queries of the cluster are in flight already; ask again"
            ));
        }
        // Given back when the query ends, also if its task is dropped unrun (a stopping
        // runtime).
        let in_flight = InFlight(self.in_flight.clone());
        let (answer_tx, answer_rx) = oneshot::channel();
        let settings = self.settings.clone();
        let client = self.client.clone();
        self.runtime.spawn(async move {
            // The read resets the shared connection when it times out; this bounds the
            // connect as well.
            let answer =
                tokio::time::timeout(2 * CLUSTER_QUERY_WAIT, read_cluster(&settings, &client))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "etcd did not answer within {:?}",
                            2 * CLUSTER_QUERY_WAIT
                        ))
                    });
            drop(in_flight);
            let _ = answer_tx.send(answer);
        });
        answer_rx
            .await
            .unwrap_or_else(|_| Err("the node is leaving the cluster".into()))
    }
}

/// Where the next connection to etcd starts trying (each try moves it on, so a member that
/// went away is left for the next one).
static NEXT_ENDPOINT: AtomicUsize = AtomicUsize::new(0);

/// How long a new connection's first request may take before the next member is tried.
const ENDPOINT_PROBE_WAIT: Duration = Duration::from_secs(2);

/// A connection to one member of etcd among `endpoints`, each tried alone in turn (from a
/// rotating start) and checked with a status request. The client's own balanced channel over
/// several endpoints fails requests while one endpoint is down (etcdv3/etcd-client#39), which
/// let a node's lease lapse whenever one member of three was gone; one member at a time, and
/// the next after a failure, keeps the node working while a quorum is up.
pub(crate) async fn connect_etcd(
    endpoints: &[String],
    options: ConnectOptions,
) -> Result<Client, etcd_client::Error> {
    let count = endpoints.len().max(1);
    // Each process starts elsewhere, so the nodes' leases do not all sit on the first member.
    let start = NEXT_ENDPOINT
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(std::process::id() as usize);
    let mut last = None;
    for step in 0..count {
        let Some(endpoint) = endpoints.get(start.wrapping_add(step) % count) else {
            break;
        };
        match Client::connect([endpoint.as_str()], Some(options.clone())).await {
            Ok(mut client) => {
                match tokio::time::timeout(ENDPOINT_PROBE_WAIT, client.status()).await {
                    // A member cut off from the quorum answers too, without a leader.
                    Ok(Ok(status)) if status.leader() != 0 => return Ok(client),
                    Ok(Ok(_)) => {
                        last = Some(etcd_client::Error::IoError(std::io::Error::other(format!(
                            "{endpoint} has no leader (cut off from the quorum)"
                        ))));
                    }
                    Ok(Err(error)) => last = Some(error),
                    Err(_) => {
                        last = Some(etcd_client::Error::IoError(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("{endpoint} did not answer within {ENDPOINT_PROBE_WAIT:?}"),
                        )));
                    }
                }
            }
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        etcd_client::Error::InvalidArgs("no etcd endpoint is configured".into())
    }))
}

/// A refusal of a change asked of the cluster: the error code and message for the client.
pub type Refused = (spate_proto::ErrorCode, String);

/// How long a change of the cluster's topics or producer ids may take on etcd.
pub const CLUSTER_CHANGE_WAIT: Duration = Duration::from_secs(10);

/// How long a preferred-leader election over many partitions may take on etcd (two reads
/// and a write per partition).
const ELECTION_WAIT: Duration = Duration::from_secs(60);

/// The key of the cluster's producer id counter.
pub fn producer_ids_key(cluster: &str) -> String {
    format!("/spate/{cluster}/producer-ids")
}

/// The producer id counter (JSON): ids below `next` were handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdsRecord {
    pub v: u32,
    pub next: u64,
}

impl ClusterQuery {
    /// Runs `work` on the cluster thread with the admin connection, within `wait`; the
    /// connection is made again after a failure.
    async fn admin<T, F, Fut>(&self, wait: Duration, work: F) -> Result<T, Refused>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, Refused>> + Send + 'static,
    {
        use spate_proto::ErrorCode;
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= CLUSTER_QUERIES_MAX {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err((
                ErrorCode::Busy,
                format!("{CLUSTER_QUERIES_MAX} queries of the cluster are in flight already"),
            ));
        }
        let in_flight = InFlight(self.in_flight.clone());
        let (answer_tx, answer_rx) = oneshot::channel();
        let settings = self.settings.clone();
        let slot = self.admin_client.clone();
        self.runtime.spawn(async move {
            let answer = tokio::time::timeout(wait, async {
                let cached = slot.lock().await.clone();
                let client = match cached {
                    Some(client) => client,
                    None => {
                        let options = ConnectOptions::new()
                            .with_connect_timeout(CLUSTER_QUERY_WAIT)
                            .with_keep_alive(ETCD_KEEPALIVE_INTERVAL, CLUSTER_QUERY_WAIT);
                        let client =
                            connect_etcd(&settings.endpoints, options)
                                .await
                                .map_err(|error| {
                                    (
                                        ErrorCode::Unavailable,
                                        format!("cannot reach etcd: {error}"),
                                    )
                                })?;
                        *slot.lock().await = Some(client.clone());
                        client
                    }
                };
                work(client).await
            })
            .await
            .unwrap_or_else(|_| {
                Err((
                    ErrorCode::Unavailable,
                    format!("etcd did not answer within {wait:?}"),
                ))
            });
            if matches!(&answer, Err((ErrorCode::Unavailable, _))) {
                *slot.lock().await = None;
            }
            drop(in_flight);
            let _ = answer_tx.send(answer);
        });
        answer_rx.await.unwrap_or_else(|_| {
            Err((
                ErrorCode::ShuttingDown,
                "the node is leaving the cluster".into(),
            ))
        })
    }

    /// Asks the controller to create topic `name` (docs/cluster.md, "Creating a topic") and
    /// waits up to `wait` for its answer: the topic's record and the revision it was
    /// created at.
    pub async fn create_topic(
        &self,
        name: String,
        request: crate::records::TopicRequestRecord,
        wait: Duration,
    ) -> Result<(crate::records::TopicRecord, i64), Refused> {
        use crate::records::TopicRequestError;
        use spate_proto::ErrorCode;
        let cluster = self.settings.cluster_name.clone();
        self.admin(wait + CLUSTER_QUERY_WAIT, move |mut client| async move {
            crate::records::request_topic(&mut client, &cluster, &name, &request, wait)
                .await
                .map_err(|error| {
                    let code = match &error {
                        TopicRequestError::Exists(_) | TopicRequestError::Pending(_) => {
                            ErrorCode::TopicAlreadyExists
                        }
                        TopicRequestError::Refused { reason, .. } => match reason.as_str() {
                            "exists" => ErrorCode::TopicAlreadyExists,
                            "partitions" => ErrorCode::InvalidPartitionCount,
                            _ => ErrorCode::InvalidReplicationFactor,
                        },
                        TopicRequestError::TimedOut(_) => ErrorCode::Timeout,
                        TopicRequestError::Etcd(_) => ErrorCode::Unavailable,
                    };
                    (code, error.to_string())
                })
        })
        .await
    }

    /// Deletes topic `name` (its key: nodes stop serving it and remove their replicas, the
    /// controller removes its partition states); the revision of the deletion.
    pub async fn delete_topic(&self, name: String) -> Result<i64, Refused> {
        use spate_proto::ErrorCode;
        let key = crate::records::topic_key(&self.settings.cluster_name, &name);
        self.admin(CLUSTER_CHANGE_WAIT, move |mut client| async move {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Greater, 0)])
                .and_then([TxnOp::delete(key, None)]);
            let answer = client.txn(txn).await.map_err(|error| unavailable(&error))?;
            if !answer.succeeded() {
                return Err((ErrorCode::UnknownTopic, format!("unknown topic {name:?}")));
            }
            Ok(answer
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision))
        })
        .await
    }

    /// Changes topic `name`'s settings with `change` (from those it holds now, by
    /// compare-and-swap, again if another change came between); the new settings and the
    /// revision they were written at (none when `change` only checks).
    pub async fn alter_topic(
        &self,
        name: String,
        change: impl Fn(
                crate::records::TopicSettings,
            ) -> Result<Option<crate::records::TopicSettings>, Refused>
            + Send
            + 'static,
    ) -> Result<(crate::records::TopicSettings, i64), Refused> {
        self.change_topic_record(name, move |record| match change(record.settings)? {
            None => Ok((false, record.settings)),
            Some(settings) => {
                record.settings = settings;
                Ok((true, settings))
            }
        })
        .await
    }

    /// Changes topic `name`'s record with `change` (from the record it holds now, by
    /// compare-and-swap, again if another change came between); `change` says what it did
    /// and whether anything is to be written. The outcome, and the revision written at (0:
    /// nothing written).
    pub async fn change_topic_record<T: Send + 'static>(
        &self,
        name: String,
        change: impl Fn(&mut crate::records::TopicRecord) -> Result<(bool, T), Refused> + Send + 'static,
    ) -> Result<(T, i64), Refused> {
        use spate_proto::ErrorCode;
        let key = crate::records::topic_key(&self.settings.cluster_name, &name);
        self.admin(CLUSTER_CHANGE_WAIT, move |mut client| async move {
            loop {
                let read = client
                    .get(key.clone(), None)
                    .await
                    .map_err(|error| unavailable(&error))?;
                let Some(kv) = read.kvs().first() else {
                    return Err((ErrorCode::UnknownTopic, format!("unknown topic {name:?}")));
                };
                let (_, mut record) =
                    crate::records::read_topic(&name, kv.value()).map_err(|problem| {
                        (
                            ErrorCode::InvalidRequest,
                            format!("the record of topic {name:?} cannot be read: {problem}"),
                        )
                    })?;
                let (write, outcome) = change(&mut record)?;
                if !write {
                    return Ok((outcome, 0));
                }
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then([TxnOp::put(key.clone(), crate::records::json(&record), None)]);
                let answer = client.txn(txn).await.map_err(|error| unavailable(&error))?;
                if answer.succeeded() {
                    let revision = answer
                        .header()
                        .map_or(0, etcd_client::ResponseHeader::revision);
                    return Ok((outcome, revision));
                }
            }
        })
        .await
    }

    /// Makes each of `partitions` (topic, number) led by its preferred replica where it is
    /// alive and in sync (`spate_core::replica::elect_preferred`), by compare-and-swap on the
    /// partition key as read; the outcome of each and the last revision written (0: none).
    pub async fn elect_preferred(
        &self,
        partitions: Vec<(String, u32)>,
    ) -> Result<(Vec<spate_proto::MoveResult>, i64), Refused> {
        use spate_core::replica::{LiveMember, PreferredRefusal, ReplicaId, SessionId, StorageId};
        use spate_proto::ErrorCode;
        let cluster = self.settings.cluster_name.clone();
        self.admin(ELECTION_WAIT, move |mut client| async move {
            let (kvs, _, _) = crate::records::read_prefix(
                &mut client,
                &members_prefix(&cluster),
                0,
                crate::controller::CONTROLLER_KEYS_MAX,
            )
            .await
            .map_err(|error| unavailable(&error))?;
            let members: std::collections::BTreeMap<ReplicaId, LiveMember> = kvs
                .iter()
                .filter_map(|kv| {
                    let record = member_record(&cluster, kv.key(), kv.value()).ok()?;
                    let live = LiveMember {
                        session: SessionId(crate::records::hex(&record.session)?),
                        storage: StorageId(crate::records::hex(&record.storage)?),
                    };
                    Some((ReplicaId(record.node), live))
                })
                .collect();
            let (marks, _, _) = crate::records::read_prefix(
                &mut client,
                &crate::records::decommissioned_prefix(&cluster),
                0,
                crate::controller::CONTROLLER_KEYS_MAX,
            )
            .await
            .map_err(|error| unavailable(&error))?;
            let decommissioned = crate::records::decommissioned_of(&marks, &cluster);
            // Per topic: its id, each partition's preferred replica, and the partitions
            // being reassigned.
            type Preferred = (String, Vec<ReplicaId>, Vec<u32>);
            let mut topics: std::collections::BTreeMap<String, Option<Preferred>> =
                std::collections::BTreeMap::new();
            let mut results = Vec::with_capacity(partitions.len());
            let mut written = 0;
            for (topic, number) in partitions {
                let outcome = |error: Option<ErrorCode>, message: String| spate_proto::MoveResult {
                    topic: topic.clone(),
                    partition: number,
                    error,
                    message,
                };
                if !topics.contains_key(&topic) {
                    let key = crate::records::topic_key(&cluster, &topic);
                    let read = client
                        .get(key, None)
                        .await
                        .map_err(|error| unavailable(&error))?;
                    let record = read
                        .kvs()
                        .first()
                        .and_then(|kv| crate::records::read_topic(&topic, kv.value()).ok());
                    let preferred = record.map(|(_, record)| {
                        let firsts = record
                            .replicas
                            .iter()
                            .map(|replicas| {
                                replicas
                                    .first()
                                    .map_or(ReplicaId(u32::MAX), |at| ReplicaId(at.node))
                            })
                            .collect();
                        let moving = record
                            .reassigning
                            .iter()
                            .map(|entry| entry.partition)
                            .collect();
                        (record.id, firsts, moving)
                    });
                    topics.insert(topic.clone(), preferred);
                }
                let known = topics.get(&topic).and_then(Option::as_ref);
                let preferred = known.and_then(|(_, firsts, _)| {
                    firsts.get(usize::try_from(number).ok()?).copied()
                });
                let (Some(preferred), Some((topic_id, _, moving))) = (preferred, known) else {
                    results.push(outcome(
                        Some(ErrorCode::UnknownPartition),
                        format!("{topic}/{number} is not a partition of the cluster"),
                    ));
                    continue;
                };
                // A partition being moved gets its leader from the move; a preferred replica
                // on a decommissioned node would have to hand over again.
                if moving.contains(&number) || decommissioned.contains_key(&preferred.0) {
                    results.push(outcome(
                        Some(ErrorCode::PreferredLeaderNotAvailable),
                        format!(
                            "{topic}/{number} is being moved, or its preferred replica (node \
                             {preferred}) is decommissioned"
                        ),
                    ));
                    continue;
                }
                let topic_id = topic_id.clone();
                let key = crate::records::partition_key(&cluster, &topic, number);
                let read = client
                    .get(key.clone(), None)
                    .await
                    .map_err(|error| unavailable(&error))?;
                let Some(kv) = read.kvs().first() else {
                    results.push(outcome(
                        Some(ErrorCode::PreferredLeaderNotAvailable),
                        format!("{topic}/{number} has no state yet"),
                    ));
                    continue;
                };
                let Ok((_, state, record)) = crate::records::read_partition(kv.value()) else {
                    results.push(outcome(
                        Some(ErrorCode::Internal),
                        format!("the state of {topic}/{number} cannot be read"),
                    ));
                    continue;
                };
                if record.topic_id != topic_id {
                    results.push(outcome(
                        Some(ErrorCode::UnknownPartition),
                        format!("{topic}/{number} belongs to another topic of the name"),
                    ));
                    continue;
                }
                let next = match spate_core::replica::elect_preferred(&state, &[preferred], &members)
                {
                    Ok(next) => next,
                    Err(refusal) => {
                        let code = match refusal {
                            PreferredRefusal::NotNeeded(_) => ErrorCode::ElectionNotNeeded,
                            _ => ErrorCode::PreferredLeaderNotAvailable,
                        };
                        results.push(outcome(Some(code), refusal.to_string()));
                        continue;
                    }
                };
                let Some(changed) = record.with_state(&next) else {
                    results.push(outcome(
                        Some(ErrorCode::Internal),
                        "the partition epoch cannot grow".into(),
                    ));
                    continue;
                };
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then([TxnOp::put(key, crate::records::json(&changed), None)]);
                let answer = client.txn(txn).await.map_err(|error| unavailable(&error))?;
                if answer.succeeded() {
                    written = answer
                        .header()
                        .map_or(written, etcd_client::ResponseHeader::revision);
                    tracing::info!(topic = %topic, partition = number, leader = preferred.0, epoch = next.epoch.0, "the preferred replica was elected leader");
                    results.push(outcome(
                        None,
                        format!("node {preferred} leads in epoch {}", next.epoch.0),
                    ));
                } else {
                    results.push(outcome(
                        Some(ErrorCode::NotLeaderOrFollower),
                        "the partition changed meanwhile; try again".into(),
                    ));
                }
            }
            Ok((results, written))
        })
        .await
    }

    /// Marks node `node` decommissioned (with the rate its replicas' successors catch up at),
    /// or takes the mark away (`decommission: false`); the revision written.
    pub async fn decommission(
        &self,
        node: u32,
        decommission: bool,
        throttle: Option<u64>,
    ) -> Result<i64, Refused> {
        use spate_proto::ErrorCode;
        let key = crate::records::decommissioned_key(&self.settings.cluster_name, node);
        self.admin(CLUSTER_CHANGE_WAIT, move |mut client| async move {
            let answer = if decommission {
                let record = crate::records::DecommissionRecord {
                    v: crate::records::RECORD_VERSION,
                    throttle_bytes_per_s: throttle,
                };
                client
                    .put(key, crate::records::json(&record), None)
                    .await
                    .map_err(|error| unavailable(&error))?
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::revision)
            } else {
                let deleted = client
                    .delete(key, None)
                    .await
                    .map_err(|error| unavailable(&error))?;
                if deleted.deleted() == 0 {
                    return Err((
                        ErrorCode::InvalidRequest,
                        format!("node {node} is not decommissioned"),
                    ));
                }
                deleted
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::revision)
            };
            Ok(answer)
        })
        .await
    }

    /// The leader's change of a partition's in-sync replicas (docs/cluster.md, "The in-sync
    /// replica set"): written only if the partition key is still at `revision` (the state
    /// the leader's ISR came from: a change by the controller or an election since makes it
    /// fail), one partition epoch later; the key's new revision.
    pub async fn change_isr(
        &self,
        topic: String,
        partition: u32,
        revision: i64,
        isr: Vec<spate_core::replica::IsrMember>,
    ) -> Result<i64, Refused> {
        use spate_proto::ErrorCode;
        let key = crate::records::partition_key(&self.settings.cluster_name, &topic, partition);
        self.admin(CLUSTER_CHANGE_WAIT, move |mut client| async move {
            let read = client
                .get(key.clone(), None)
                .await
                .map_err(|error| unavailable(&error))?;
            let Some(kv) = read.kvs().first() else {
                return Err((ErrorCode::UnknownTopic, format!("{key} is gone")));
            };
            if kv.mod_revision() != revision {
                return Err((
                    ErrorCode::NotLeaderOrFollower,
                    format!(
                        "{key} changed since revision {revision} (now {})",
                        kv.mod_revision()
                    ),
                ));
            }
            let (_, state, record) = crate::records::read_partition(kv.value())
                .map_err(|problem| (ErrorCode::Internal, format!("{key}: {problem}")))?;
            let changed = spate_core::replica::PartitionState { isr, ..state };
            let Some(record) = record.with_state(&changed) else {
                return Err((
                    ErrorCode::Internal,
                    format!("{key}: the partition epoch cannot grow"),
                ));
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::put(key.clone(), crate::records::json(&record), None)]);
            let answer = client.txn(txn).await.map_err(|error| unavailable(&error))?;
            if !answer.succeeded() {
                return Err((
                    ErrorCode::NotLeaderOrFollower,
                    format!("{key} changed since revision {revision}"),
                ));
            }
            Ok(answer
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision))
        })
        .await
    }

    /// Hands out `count` producer ids, never handed out before anywhere in the cluster (the
    /// counter in etcd moves by compare-and-swap before the answer); the first.
    pub async fn allocate_producer_ids(&self, count: u32) -> Result<u64, Refused> {
        use spate_proto::ErrorCode;
        let key = producer_ids_key(&self.settings.cluster_name);
        self.admin(CLUSTER_CHANGE_WAIT, move |mut client| async move {
            loop {
                let read = client
                    .get(key.clone(), None)
                    .await
                    .map_err(|error| unavailable(&error))?;
                let (first, compare) = match read.kvs().first() {
                    None => (
                        0,
                        Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    ),
                    Some(kv) => {
                        let record: ProducerIdsRecord = serde_json::from_slice(kv.value())
                            .map_err(|error| {
                                (
                                    ErrorCode::InvalidRequest,
                                    format!("the producer id counter cannot be read: {error}"),
                                )
                            })?;
                        let compare =
                            Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision());
                        (record.next, compare)
                    }
                };
                // Producer ids are i64 in Kafka: never one above i64::MAX.
                let Some(next) = first
                    .checked_add(u64::from(count))
                    .filter(|next| i64::try_from(*next).is_ok())
                else {
                    return Err((
                        ErrorCode::InvalidRequest,
                        "the cluster has handed out every producer id".into(),
                    ));
                };
                let record = ProducerIdsRecord { v: 1, next };
                let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                    key.clone(),
                    crate::records::json(&record),
                    None,
                )]);
                if client
                    .txn(txn)
                    .await
                    .map_err(|error| unavailable(&error))?
                    .succeeded()
                {
                    return Ok(first);
                }
            }
        })
        .await
    }
}

fn unavailable(error: &etcd_client::Error) -> Refused {
    (
        spate_proto::ErrorCode::Unavailable,
        format!("etcd: {error}"),
    )
}

/// One query of the cluster counted in flight until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The node a member key of `cluster` names (`/spate/<cluster>/members/<node>`).
pub fn member_node(cluster: &str, key: &[u8]) -> Option<u32> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(members_prefix(cluster).as_str())?
        .parse()
        .ok()
}

/// A member record as etcd holds it under `key`, if it is one this version reads and it is
/// the member its key names (a record under `members/5` must say node 5).
pub fn member_record(cluster: &str, key: &[u8], value: &[u8]) -> Result<MemberRecord, String> {
    let record: MemberRecord = serde_json::from_slice(value).map_err(|error| error.to_string())?;
    if record.v != MEMBER_RECORD_VERSION {
        return Err(format!(
            "its layout version is {}, not {MEMBER_RECORD_VERSION}",
            record.v
        ));
    }
    if member_node(cluster, key) != Some(record.node) {
        return Err(format!("it says node {}, its key another", record.node));
    }
    Ok(record)
}

/// The members and the controller as etcd holds them now.
async fn read_cluster(
    settings: &ClusterSettings,
    shared: &tokio::sync::Mutex<Option<Client>>,
) -> Result<spate_proto::DescribeClusterResponse, String> {
    let mut client = {
        let mut cached = shared.lock().await;
        match cached.as_ref() {
            Some(client) => client.clone(),
            None => {
                let options = ConnectOptions::new()
                    .with_connect_timeout(CLUSTER_QUERY_WAIT)
                    .with_timeout(CLUSTER_QUERY_WAIT)
                    .with_keep_alive(ETCD_KEEPALIVE_INTERVAL, CLUSTER_QUERY_WAIT);
                let client = connect_etcd(&settings.endpoints, options)
                    .await
                    .map_err(|error| error.to_string())?;
                *cached = Some(client.clone());
                client
            }
        }
    };
    let answer = tokio::time::timeout(CLUSTER_QUERY_WAIT, describe_from(&mut client, settings))
        .await
        .unwrap_or_else(|_| Err(format!("etcd did not answer within {CLUSTER_QUERY_WAIT:?}")));
    if answer.is_err() {
        // A fresh connection for the next query.
        *shared.lock().await = None;
    }
    answer
}

/// The members and the controller as `client` reads them from etcd.
async fn describe_from(
    client: &mut Client,
    settings: &ClusterSettings,
) -> Result<spate_proto::DescribeClusterResponse, String> {
    let name = &settings.cluster_name;
    let members_max = i64::from(spate_proto::limits::CLUSTER_MEMBERS_MAX);
    let listed = client
        .get(
            members_prefix(name),
            Some(GetOptions::new().with_prefix().with_limit(members_max)),
        )
        .await
        .map_err(|error| error.to_string())?;
    let mut members: Vec<spate_proto::ClusterMember> = listed
        .kvs()
        .iter()
        .filter_map(|kv| match member_record(name, kv.key(), kv.value()) {
            Ok(record) => Some(spate_proto::ClusterMember {
                node: record.node,
                session: record.session,
                storage: record.storage,
                since_ms: record.since_ms,
                shards: record.shards,
                rack: record.rack.unwrap_or_default(),
            }),
            Err(error) => {
                tracing::warn!(
                    key = %String::from_utf8_lossy(kv.key()),
                    "a member record that does not decode is left out: {error}"
                );
                None
            }
        })
        .collect();
    members.sort_by_key(|member| member.node);
    let controller = match client.leader(controller_election(name)).await {
        Ok(leader) => leader
            .kv()
            .and_then(|kv| serde_json::from_slice::<ControllerRecord>(kv.value()).ok())
            .map(|record| record.node),
        // etcd answers "election: no leader" while nobody is elected.
        Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("no leader") => {
            None
        }
        Err(error) => return Err(error.to_string()),
    };
    Ok(spate_proto::DescribeClusterResponse {
        cluster: name.clone(),
        node: Some(settings.node_id),
        controller,
        members,
        partitions: None,
        moves: None,
        racks: false,
    })
}

/// A registration that holds: the lease that carries it, its keep-alive channel, and the
/// controller campaign under it.
struct Registered {
    client: Client,
    lease: i64,
    session: u64,
    keeper: LeaseKeeper,
    responses: LeaseKeepAliveStream,
    campaign: tokio::task::JoinHandle<()>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        // A campaign belongs to its lease: a new session campaigns anew.
        self.campaign.abort();
    }
}

/// The node as a member: what it registers, from the thread that keeps it registered.
struct Member {
    settings: ClusterSettings,
    data_dir: PathBuf,
    identity: Identity,
    shards: Vec<String>,
    /// Set while this node's campaign under its current session is the elected one.
    controller: Arc<AtomicBool>,
    /// The session whose lease holds (as far as this node can be sure), `None` while it may
    /// have lapsed: the node leads only under it.
    session: Arc<watch::Sender<Option<u64>>>,
    /// The etcd revision of the newest registration ([`ClusterQuery::incarnation`]).
    incarnation: Arc<AtomicU64>,
    /// When the last renewal etcd confirmed was sent (or the lease granted): etcd counts the
    /// lease from no earlier than that.
    renewed: Arc<std::sync::Mutex<Instant>>,
}

fn etcd_error(error: &etcd_client::Error) -> ClusterError {
    ClusterError::Etcd(error.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Member {
    fn key(&self) -> String {
        member_key(&self.settings.cluster_name, self.settings.node_id)
    }

    async fn connect(&self) -> Result<Client, ClusterError> {
        let timeout = self.settings.session_timeout;
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let unreachable = |detail: String| ClusterError::Unreachable {
            endpoints: self.settings.endpoints.join(","),
            detail,
        };
        match tokio::time::timeout(timeout, connect_etcd(&self.settings.endpoints, options)).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(unreachable(error.to_string())),
            Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
        }
    }

    /// One registration: the previous session's lease revoked, a new lease granted and
    /// recorded in the data directory, then the member key created under it if nobody holds
    /// it.
    async fn register(&mut self) -> Result<Registered, ClusterError> {
        let mut client = self.connect().await?;
        let unreachable = |error: etcd_client::Error| ClusterError::Unreachable {
            endpoints: self.settings.endpoints.join(","),
            detail: error.to_string(),
        };
        if let Some(previous) = self.identity.lease_id {
            match client.lease_revoke(previous).await {
                Ok(_) => tracing::info!(
                    lease = previous,
                    "revoked the lease of this node's previous session"
                ),
                // Expired already (or revoked by a graceful stop).
                Err(etcd_client::Error::GRpcStatus(status))
                    if status.message().contains("lease not found") => {}
                Err(error) => return Err(unreachable(error)),
            }
        }
        // The cluster's id, written by the first member ever to register (kept by a
        // compare-and-swap on its absence).
        let id_key = crate::records::cluster_id_key(&self.settings.cluster_name);
        let id = crate::records::ClusterIdRecord {
            v: crate::records::RECORD_VERSION,
            id: crate::identity::random_id_hex128().map_err(|error| {
                ClusterError::Thread(format!("cannot draw a cluster id: {error}"))
            })?,
        };
        let txn = Txn::new()
            .when([Compare::create_revision(
                id_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(id_key, crate::records::json(&id), None)]);
        client.txn(txn).await.map_err(unreachable)?;
        let asked = Instant::now();
        let grant = client
            .lease_grant(self.settings.ttl_seconds(), None)
            .await
            .map_err(unreachable)?;
        let lease = grant.id();
        // Recorded (durably) before the key exists, so a crash from here on leaves the lease
        // for the next start to revoke.
        self.identity.lease_id = Some(lease);
        crate::identity::store(&self.data_dir, self.identity)?;
        let session = crate::identity::random_id()
            .map_err(|error| ClusterError::Thread(format!("cannot draw a session id: {error}")))?;
        let record = MemberRecord {
            v: MEMBER_RECORD_VERSION,
            node: self.settings.node_id,
            session: format!("{session:016x}"),
            storage: format!("{:016x}", self.identity.storage_id),
            shards: self.shards.clone(),
            since_ms: now_ms(),
            kafka: self.settings.kafka_address.clone(),
            rack: self.settings.rack.clone(),
        };
        let value = serde_json::to_vec(&record)
            .map_err(|error| ClusterError::Thread(format!("cannot encode the member: {error}")))?;
        let key = self.key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let answer = client.txn(txn).await.map_err(|error| etcd_error(&error))?;
        let revision = answer
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        if !answer.succeeded() {
            let _ = client.lease_revoke(lease).await;
            let holder = answer
                .op_responses()
                .into_iter()
                .find_map(|response| match response {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                    _ => None,
                });
            let holder: Option<MemberRecord> =
                holder.and_then(|value| serde_json::from_slice(&value).ok());
            return Err(ClusterError::Taken {
                node: self.settings.node_id,
                session: holder
                    .as_ref()
                    .map_or_else(|| "unknown".to_owned(), |holder| holder.session.clone()),
                since_ms: holder.map_or(0, |holder| holder.since_ms),
                key,
            });
        }
        let (keeper, responses) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|error| etcd_error(&error))?;
        let campaign = self.campaign(lease, &record.session);
        if let Ok(mut renewed) = self.renewed.lock() {
            *renewed = asked;
        }
        self.incarnation
            .fetch_max(u64::try_from(revision).unwrap_or(0), Ordering::Relaxed);
        self.session.send_replace(Some(session));
        tracing::info!(
            node = self.settings.node_id,
            session = %record.session,
            lease,
            key = %key,
            "registered with the cluster"
        );
        Ok(Registered {
            client,
            lease,
            session,
            keeper,
            responses,
            campaign,
        })
    }

    /// Campaigns for the controller under `lease` until elected, then carries the
    /// controller's duties while the election holds; campaigns again if a campaign fails or
    /// this node is deposed while its lease lives. The task is aborted when the lease goes (a
    /// new session campaigns anew). The campaign's client has no per-request timeout: etcd
    /// answers a campaign only when it is won, which may be long after the session timeout.
    fn campaign(&self, lease: i64, session: &str) -> tokio::task::JoinHandle<()> {
        self.controller.store(false, Ordering::Relaxed);
        let node = self.settings.node_id;
        let name = controller_election(&self.settings.cluster_name);
        let record = ControllerRecord {
            v: MEMBER_RECORD_VERSION,
            node,
            session: session.to_owned(),
        };
        let controller = self.controller.clone();
        let cluster = self.settings.cluster_name.clone();
        let endpoints = self.settings.endpoints.clone();
        let connect_timeout = self.settings.session_timeout;
        let balance = self.settings.leader_balance;
        tokio::spawn(async move {
            let mut balancing = crate::controller::Balancing::new(balance);
            let Ok(value) = serde_json::to_vec(&record) else {
                return;
            };
            loop {
                // No per-request timeout (etcd answers a campaign when it is won), but
                // keep-alive pings, so a connection that died silently fails the campaign
                // (and the controller's duties on it) instead of hanging it.
                let options = ConnectOptions::new()
                    .with_connect_timeout(connect_timeout)
                    .with_keep_alive(ETCD_KEEPALIVE_INTERVAL, connect_timeout);
                let elected = match connect_etcd(&endpoints, options).await {
                    Ok(mut client) => client
                        .campaign(name.clone(), value.clone(), lease)
                        .await
                        .map(|elected| (client, elected)),
                    Err(error) => Err(error),
                };
                match elected {
                    Ok((client, elected)) => {
                        let Some(leader) = elected.leader().cloned() else {
                            tracing::warn!(node, "etcd elected this node without a leader key");
                            tokio::time::sleep(CAMPAIGN_RETRY).await;
                            continue;
                        };
                        controller.store(true, Ordering::Relaxed);
                        tracing::info!(
                            node,
                            revision = leader.rev(),
                            "this node is the cluster's controller"
                        );
                        crate::controller::lead(client, cluster.clone(), leader, &mut balancing)
                            .await;
                        controller.store(false, Ordering::Relaxed);
                        tracing::warn!(
                            node,
                            "this node is no longer the cluster's controller; campaigning again"
                        );
                    }
                    Err(error) => tracing::warn!(
                        node,
                        "the campaign for the controller ended without an election ({error}); \
                         campaigning again"
                    ),
                }
                tokio::time::sleep(CAMPAIGN_RETRY).await;
            }
        })
    }

    /// Renews the lease every third of the timeout until told to stop (then revokes it).
    /// When it could not be renewed for a whole timeout, or etcd says it expired, the node
    /// registers again: a new session. A stop is noticed at once, also while etcd does not
    /// answer.
    async fn keep(&mut self, registered: Registered, mut stop: oneshot::Receiver<()>) {
        let mut current = Some(registered);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                () = self.renew_or_register(&mut current) => {}
            }
        }
        if let Some(mut registered) = current {
            // Bounded: a stop does not wait long for an etcd that does not answer.
            let revoke = registered.client.lease_revoke(registered.lease);
            match tokio::time::timeout(REVOKE_WAIT, revoke).await {
                Ok(Ok(_)) => tracing::info!(
                    node = self.settings.node_id,
                    "left the cluster (lease revoked)"
                ),
                Ok(Err(error)) => tracing::warn!(
                    "cannot revoke this node's etcd lease ({error}); its registration goes \
                     when the lease expires"
                ),
                Err(_) => tracing::warn!(
                    "etcd did not answer the lease's revocation within {REVOKE_WAIT:?}; the \
                     node's registration goes when the lease expires"
                ),
            }
        }
    }

    /// One renewal interval: wait, renew, and register again if the lease lapsed.
    async fn renew_or_register(&mut self, current: &mut Option<Registered>) {
        let interval = self.settings.session_timeout / 3;
        tokio::time::sleep(interval).await;
        let sent = Instant::now();
        let lapsed = match current.as_mut() {
            Some(registered) => match renew(registered, interval).await {
                Ok(true) => {
                    // etcd counts the lease from no earlier than the renewal's sending.
                    if let Ok(mut renewed) = self.renewed.lock() {
                        *renewed = sent;
                    }
                    if self.session.borrow().is_none() {
                        tracing::info!("this node's lease was renewed in time: it leads again");
                    }
                    self.session.send_replace(Some(registered.session));
                    false
                }
                Ok(false) => {
                    tracing::error!(
                        lease = registered.lease,
                        "etcd says this node's lease expired; registering again with a new \
                         session"
                    );
                    true
                }
                Err(error) => {
                    tracing::warn!(
                        lease = registered.lease,
                        "cannot renew this node's etcd lease: {error}; keeping it alive through \
                         another etcd member"
                    );
                    // The member the keep-alive went to may be gone: the same lease, kept
                    // alive through the next member that answers (the next interval renews).
                    if let Ok(mut client) = self.connect().await {
                        match client.lease_keep_alive(registered.lease).await {
                            Ok((keeper, responses)) => {
                                registered.keeper = keeper;
                                registered.responses = responses;
                                registered.client = client;
                            }
                            Err(error) => tracing::warn!(
                                lease = registered.lease,
                                "cannot keep the lease alive through another member: {error}"
                            ),
                        }
                    }
                    // Leadership ends earlier, on its own clock (`withdraw_when_overdue`).
                    let renewed = self
                        .renewed
                        .lock()
                        .map_or_else(|_| Instant::now(), |at| *at);
                    renewed.elapsed() >= self.settings.session_timeout
                }
            },
            None => true,
        };
        if lapsed {
            self.session.send_replace(None);
            *current = None;
            self.controller.store(false, Ordering::Relaxed);
            match self.register().await {
                Ok(registered) => *current = Some(registered),
                Err(error) => tracing::error!("cannot register with the cluster: {error}"),
            }
        }
    }
}

/// Withdraws the node's session (it then leads nothing) once two thirds of the session
/// timeout passed since the last renewal etcd confirmed was sent, well before etcd can have
/// expired the lease (it counts from no earlier than that sending), whatever the renewals
/// are doing; a renewal that succeeds gives it back (docs/cluster.md, "Transactions").
async fn withdraw_when_overdue(
    renewed: Arc<std::sync::Mutex<Instant>>,
    session: Arc<watch::Sender<Option<u64>>>,
    timeout: Duration,
) {
    let lead_for = timeout * 2 / 3;
    loop {
        let last = renewed.lock().map_or_else(|_| Instant::now(), |at| *at);
        let deadline = last + lead_for;
        if Instant::now() < deadline {
            tokio::time::sleep_until(deadline.into()).await;
            continue;
        }
        if session.borrow().is_some() {
            tracing::warn!(
                "this node's lease was not renewed for two thirds of the session timeout: it \
                 stops leading until a renewal succeeds"
            );
            session.send_replace(None);
        }
        // Looked at again soon: a renewal on its way may still succeed.
        tokio::time::sleep(timeout / 20).await;
    }
}

/// How often the campaign's and the queries' connections ping etcd (HTTP/2 keep-alive) to
/// notice a connection that died silently; no more often than etcd's default
/// `--grpc-keepalive-min-time` (5 s) allows.
const ETCD_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a member waits before campaigning again after a campaign failed or it was
/// deposed.
const CAMPAIGN_RETRY: Duration = Duration::from_secs(1);

/// How long a stopping node waits for etcd to revoke its lease.
const REVOKE_WAIT: Duration = Duration::from_secs(2);

/// One keep-alive round trip: `Ok(true)` renewed, `Ok(false)` the lease is gone.
async fn renew(registered: &mut Registered, wait: Duration) -> Result<bool, String> {
    registered
        .keeper
        .keep_alive()
        .await
        .map_err(|error| error.to_string())?;
    match tokio::time::timeout(wait, registered.responses.message()).await {
        Ok(Ok(Some(response))) => Ok(response.ttl() > 0),
        Ok(Ok(None)) => Err("the keep-alive stream ended".into()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {wait:?}")),
    }
}
