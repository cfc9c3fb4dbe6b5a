//! The controller's duties on etcd (docs/cluster.md, "The controller"), run by the member that
//! won the election for as long as its campaign holds: it reads the members, the topics, the
//! partitions and the requests to create topics at one revision (in pages), takes the pure
//! decisions of [`spate_core::replica::reconcile`] (requests accepted with their replicas
//! placed, or refused; new partitions given their first state; a leader whose session is gone
//! replaced by the first live in-sync replica in preference order, in a new epoch; dead
//! in-sync replicas removed, the last one kept; partition states of deleted topics removed),
//! writes each as a compare-and-swap on what it read and on the controller's own election
//! key, and starts over whenever etcd shows a change under those prefixes or to its election
//! key (a watch from the next revision) or every [`CONTROLLER_RESYNC`] without one. A deposed
//! controller's writes fail on the election key's compare, so two controllers never both
//! write; it notices at its next pass and returns.
//! The records it reads and writes are in [`crate::records`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, LeaderKey, Txn, TxnOp};
use spate_core::replica::{
    rebalance_leaders, reconcile as reconcile_actions, Action, ClusterRead, CreationRequest,
    LiveMember, Member, PartitionEntry, PartitionName, Placement, Refusal, ReplicaId, SessionId,
    StorageId, TopicAssignment,
};

use crate::cluster::{member_node, member_record, members_prefix, LeaderBalance};
use crate::records::{
    decommissioned_of, decommissioned_prefix, hex, json, name_under, partition_key,
    partition_under, partitions_prefix, read_partition, read_prefix, read_topic, topic_id,
    topic_id_text, topic_key, topic_request_key, topic_requests_prefix, topics_prefix, Change,
    Changes, PartitionRecord, RefusedRecord, ReplicaPlacement, TopicRecord, TopicRequestRecord,
    RECORD_VERSION, TOPIC_RECORD_SIZE_MAX,
};

/// How often the controller reads everything again without a change shown by its watch
/// (a safety net: a watch that silently stalled never leaves a partition without a leader
/// for longer).
pub const CONTROLLER_RESYNC: Duration = Duration::from_secs(5);

/// How long one pass (or opening the watch) may take before the controller gives it up and
/// tries again: its connection has no per-request timeout (it is the campaign's), and a
/// pass that hung would leave the cluster with an elected controller doing nothing.
pub const CONTROLLER_PASS_WAIT: Duration = Duration::from_secs(10);

/// How long the controller waits after a failed read or write before it tries again.
const CONTROLLER_RETRY: Duration = Duration::from_secs(1);

/// Failed passes (or watches) in a row after which the controller reconnects to etcd.
const CONTROLLER_FAILURES_MAX: u32 = 3;

/// Keys of one kind (members, topics, partitions) a pass reads; past it, a pass acts on the
/// first ones in key order and says so (an etcd answer holds at most 4 MiB, which about
/// 14,000 partition records fill).
pub const CONTROLLER_KEYS_MAX: i64 = 10_000;

/// How one pass ended.
enum Pass {
    /// Done, at this revision.
    Done(i64),
    /// This node's election key is gone: it is no longer the controller.
    Deposed,
}

/// Runs the controller's duties while `leader` (this node's won campaign) holds; returns when
/// this node is deposed (its election key is gone while its lease lives). The task running it
/// is aborted when the session goes. The first pass after each of `balancing`'s intervals
/// also moves leaderships back to preferred replicas (the interval counts across returns and
/// new elections under the same session, so a flapping etcd does not put balancing off).
pub async fn lead(
    mut client: Client,
    cluster: String,
    leader: LeaderKey,
    balancing: &mut Balancing,
) {
    let mut warned = HashSet::new();
    // Failures in a row over this connection: past `CONTROLLER_FAILURES_MAX` the controller
    // returns, and the campaign reconnects (through another etcd member when this one is
    // gone) and resumes its election key under the same lease.
    let mut failures = 0u32;
    loop {
        if failures >= CONTROLLER_FAILURES_MAX {
            tracing::warn!(
                "the controller's etcd connection keeps failing: reconnecting, through \
                 another member if this one is gone"
            );
            return;
        }
        let revision =
            match balanced_pass(&mut client, &cluster, &leader, &mut warned, balancing).await {
                Ok(Pass::Done(revision)) => revision,
                Ok(Pass::Deposed) => return,
                Err(error) => {
                    tracing::warn!("the controller cannot apply its decisions: {error}");
                    failures += 1;
                    tokio::time::sleep(CONTROLLER_RETRY).await;
                    continue;
                }
            };
        let mut watch =
            match bounded(watch_from(&mut client, &cluster, &leader, revision + 1)).await {
                Ok(watch) => watch,
                Err(error) => {
                    tracing::warn!("the controller cannot watch etcd: {error}");
                    failures += 1;
                    tokio::time::sleep(CONTROLLER_RETRY).await;
                    continue;
                }
            };
        failures = 0;
        // Wait for a change (or the resync), then read everything again.
        loop {
            if let Change::Ended(why) = watch.next(CONTROLLER_RESYNC).await {
                tracing::warn!("the controller's watch ended ({why}); reading everything again");
                break;
            }
            match balanced_pass(&mut client, &cluster, &leader, &mut warned, balancing).await {
                Ok(Pass::Done(_)) => failures = 0,
                Ok(Pass::Deposed) => return,
                Err(error) => {
                    tracing::warn!("the controller cannot apply its decisions: {error}");
                    failures += 1;
                    if failures >= CONTROLLER_FAILURES_MAX {
                        break;
                    }
                    tokio::time::sleep(CONTROLLER_RETRY).await;
                }
            }
        }
        tokio::time::sleep(CONTROLLER_RETRY).await;
    }
}

/// One pass ([`reconcile`], within [`CONTROLLER_PASS_WAIT`]), balancing leaders when `balancing` says it is due; a
/// pass that balanced and went through puts the next balancing one interval on.
async fn balanced_pass(
    client: &mut Client,
    cluster: &str,
    leader: &LeaderKey,
    warned: &mut HashSet<String>,
    balancing: &mut Balancing,
) -> Result<Pass, String> {
    let percent = balancing.due();
    let pass = bounded(reconcile(client, cluster, leader, warned, percent)).await?;
    if matches!(pass, Pass::Done(_)) {
        balancing.done(percent);
    }
    Ok(pass)
}

/// When the controller's next pass balances leaders (`--auto-leader-rebalance`).
#[derive(Debug)]
pub struct Balancing {
    balance: Option<LeaderBalance>,
    next: tokio::time::Instant,
}

impl Balancing {
    /// The first balancing one interval from now.
    pub fn new(balance: Option<LeaderBalance>) -> Self {
        let interval = balance.map_or(Duration::ZERO, |balance| balance.interval);
        Self {
            balance,
            next: tokio::time::Instant::now() + interval,
        }
    }

    /// The imbalance allowed, in percent, when this pass is to balance.
    fn due(&self) -> Option<u32> {
        let balance = self.balance?;
        (tokio::time::Instant::now() >= self.next).then_some(balance.percent)
    }

    /// A pass done: if it balanced, the next balancing is one interval on.
    fn done(&mut self, balanced: Option<u32>) {
        if let (Some(_), Some(balance)) = (balanced, self.balance) {
            self.next = tokio::time::Instant::now() + balance.interval;
        }
    }
}

/// `work` within [`CONTROLLER_PASS_WAIT`] (its time out counts as an error).
async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(CONTROLLER_PASS_WAIT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "etcd did not answer within {CONTROLLER_PASS_WAIT:?}"
        )),
    }
}

/// The changes to the members, the topics, the partitions and the topic requests of
/// `cluster`, and to this node's election key (its deletion deposes it), from `revision` on.
async fn watch_from(
    client: &mut Client,
    cluster: &str,
    leader: &LeaderKey,
    revision: i64,
) -> Result<Changes, etcd_client::Error> {
    let prefixes = [
        members_prefix(cluster),
        topics_prefix(cluster),
        partitions_prefix(cluster),
        topic_requests_prefix(cluster),
        decommissioned_prefix(cluster),
    ];
    let key = String::from_utf8_lossy(leader.key()).into_owned();
    Changes::open(client, &prefixes, &[key], revision).await
}

/// Keys written or removed in one transaction (etcd allows 128 operations per transaction by
/// default, `--max-txn-ops`; each key also has its compare, beside the controller's own).
const TXN_KEYS_MAX: usize = 100;

/// What a pass read besides the pure [`ClusterRead`]: the revisions and records its writes
/// compare and build on.
#[derive(Default)]
struct Read {
    cluster: ClusterRead,
    /// Partition key → (mod revision, record).
    partitions: BTreeMap<PartitionName, (i64, PartitionRecord)>,
    /// Topic name → (mod revision, request).
    requests: BTreeMap<String, (i64, TopicRequestRecord)>,
    /// Topic name → (mod revision, record), of the topics it could read.
    topics: BTreeMap<String, (i64, TopicRecord)>,
}

/// Reads everything at one revision into a [`Read`]; `None` if this node's election key is
/// gone (deposed). Keys it cannot read are warned about once each (`bad` collects them).
async fn read_all(
    client: &mut Client,
    cluster: &str,
    leader: &LeaderKey,
    bad: &mut Vec<(String, String)>,
) -> Result<Option<(Read, i64)>, etcd_client::Error> {
    let (members_read, members_more, revision) =
        read_prefix(client, &members_prefix(cluster), 0, CONTROLLER_KEYS_MAX).await?;
    let elected = client
        .get(
            leader.key(),
            Some(GetOptions::new().with_revision(revision)),
        )
        .await?;
    if !elected
        .kvs()
        .iter()
        .any(|kv| kv.create_revision() == leader.rev())
    {
        return Ok(None);
    }
    let (topics_read, topics_more, _) = read_prefix(
        client,
        &topics_prefix(cluster),
        revision,
        CONTROLLER_KEYS_MAX,
    )
    .await?;
    let (partitions_read, partitions_more, _) = read_prefix(
        client,
        &partitions_prefix(cluster),
        revision,
        CONTROLLER_KEYS_MAX,
    )
    .await?;
    let (requests_read, requests_more, _) = read_prefix(
        client,
        &topic_requests_prefix(cluster),
        revision,
        CONTROLLER_KEYS_MAX,
    )
    .await?;
    let (decommissioned_read, _, _) = read_prefix(
        client,
        &decommissioned_prefix(cluster),
        revision,
        CONTROLLER_KEYS_MAX,
    )
    .await?;
    let mut undecodable = |key: &[u8], what: &str, error: &dyn std::fmt::Display| {
        bad.push((
            String::from_utf8_lossy(key).into_owned(),
            format!("the controller ignores a {what} it cannot read: {error}"),
        ));
    };
    for (more, what, effect) in [
        (
            members_more,
            "members",
            "decides nothing until there are fewer",
        ),
        (
            topics_more,
            "topics",
            "acts on the first ones in key order and removes no partition",
        ),
        (
            partitions_more,
            "partitions",
            "acts on the first ones in key order",
        ),
        (
            requests_more,
            "topic requests",
            "acts on the first ones in key order",
        ),
    ] {
        if more {
            undecodable(
                what.as_bytes(),
                "part of the keys",
                &format_args!("more than {CONTROLLER_KEYS_MAX} {what}; the controller {effect}"),
            );
        }
    }
    let mut read = Read::default();
    read.cluster.excluded = decommissioned_of(&decommissioned_read, cluster)
        .into_keys()
        .map(ReplicaId)
        .collect();
    // With more members than one pass reads, nobody is known to be dead: nothing is decided.
    if members_more {
        return Ok(Some((read, revision)));
    }
    // Members whose records this node cannot read are not known to be dead: whatever names
    // them is left as it is (a newer node's record in a rolling upgrade, a damaged key).
    for kv in &members_read {
        let record = match member_record(cluster, kv.key(), kv.value()) {
            Ok(record) => record,
            Err(error) => {
                read.cluster
                    .unknown
                    .extend(member_node(cluster, kv.key()).map(ReplicaId));
                undecodable(kv.key(), "member", &error);
                continue;
            }
        };
        let shards = u16::try_from(record.shards.len()).unwrap_or(u16::MAX);
        match (hex(&record.session), hex(&record.storage)) {
            (Some(session), Some(storage)) => {
                let live = LiveMember {
                    session: SessionId(session),
                    storage: StorageId(storage),
                };
                read.cluster
                    .members
                    .insert(ReplicaId(record.node), Member { live, shards });
                if let Some(rack) = record.rack.filter(|rack| crate::config::valid_rack(rack)) {
                    read.cluster.racks.insert(ReplicaId(record.node), rack);
                }
            }
            _ => {
                read.cluster.unknown.insert(ReplicaId(record.node));
                undecodable(kv.key(), "member", &"an id is not hexadecimal");
            }
        }
    }
    let topics_at = topics_prefix(cluster);
    read.cluster.topics_complete = !topics_more;
    read.cluster.partitions_complete = !partitions_more;
    for kv in &topics_read {
        let Some(name) = name_under(kv.key(), &topics_at) else {
            continue;
        };
        let assignment = match read_topic(name, kv.value()) {
            Ok((id, record)) => {
                let assignment = TopicAssignment {
                    id,
                    replicas: record
                        .replicas
                        .iter()
                        .map(|replicas| {
                            replicas
                                .iter()
                                .map(|at| Placement {
                                    node: ReplicaId(at.node),
                                    shard: at.shard,
                                })
                                .collect()
                        })
                        .collect(),
                    factor: record.replication_factor,
                    targets: record
                        .reassigning
                        .iter()
                        .map(|entry| {
                            let target = entry.target.iter().copied().map(ReplicaId).collect();
                            (entry.partition, target)
                        })
                        .collect(),
                };
                read.topics
                    .insert(name.to_owned(), (kv.mod_revision(), record));
                Some(assignment)
            }
            Err(error) => {
                undecodable(kv.key(), "topic", &error);
                None
            }
        };
        read.cluster.topics.insert(name.to_owned(), assignment);
    }
    let partitions_at = partitions_prefix(cluster);
    for kv in &partitions_read {
        let Some(partition) = partition_under(kv.key(), &partitions_at)
            .map(|(topic, number)| (topic.to_owned(), number))
        else {
            undecodable(kv.key(), "partition key", &"no topic/partition in its name");
            continue;
        };
        let decoded = read_partition(kv.value());
        match decoded {
            Ok((topic_id, state, record)) => {
                read.partitions
                    .insert(partition.clone(), (kv.mod_revision(), record));
                read.cluster
                    .partitions
                    .insert(partition, Some(PartitionEntry { topic_id, state }));
            }
            Err(error) => {
                undecodable(kv.key(), "partition", &error);
                read.cluster.partitions.insert(partition, None);
            }
        }
    }
    let requests_at = topic_requests_prefix(cluster);
    for kv in &requests_read {
        let Some(name) = name_under(kv.key(), &requests_at) else {
            continue;
        };
        let request = match serde_json::from_slice::<TopicRequestRecord>(kv.value()) {
            Ok(record) if record.v != RECORD_VERSION => {
                let version = format!("its layout version is {}", record.v);
                undecodable(kv.key(), "topic request", &version);
                None
            }
            // Refused already: for its requester to collect.
            Ok(record) if record.refused.is_some() => continue,
            Ok(record) => match topic_id(&record.id) {
                Some(id) => {
                    let request = CreationRequest {
                        id,
                        partitions: record.partitions,
                        factor: record.replication_factor,
                    };
                    read.requests
                        .insert(name.to_owned(), (kv.mod_revision(), record));
                    Some(request)
                }
                None => {
                    undecodable(kv.key(), "topic request", &"its id is not 32 hex digits");
                    None
                }
            },
            Err(error) => {
                undecodable(kv.key(), "topic request", &error);
                None
            }
        };
        read.cluster.requests.insert(name.to_owned(), request);
    }
    Ok(Some((read, revision)))
}

/// One pass: everything read at one revision, the pure decisions of
/// [`spate_core::replica::reconcile`] taken, each written by compare-and-swap. `warned` holds
/// the keys already warned about (a key that is bad again after it was fixed is warned about
/// again).
async fn reconcile(
    client: &mut Client,
    cluster: &str,
    leader: &LeaderKey,
    warned: &mut HashSet<String>,
    balance: Option<u32>,
) -> Result<Pass, etcd_client::Error> {
    let mut bad = Vec::new();
    let read = read_all(client, cluster, leader, &mut bad).await?;
    let mut now_bad = HashSet::new();
    for (key, warning) in bad {
        if !warned.contains(&key) {
            tracing::warn!(key = %key, "{warning}");
        }
        now_bad.insert(key);
    }
    *warned = now_bad;
    let Some((read, revision)) = read else {
        tracing::warn!("this node's election key is gone: it is no longer the controller");
        return Ok(Pass::Deposed);
    };
    let guard = || Compare::create_revision(leader.key(), CompareOp::Equal, leader.rev());
    let mut batch = Batch::default();
    let mut changes = Vec::new();
    let mut moves: BTreeMap<String, Vec<Move>> = BTreeMap::new();
    let mut actions = reconcile_actions(&read.cluster);
    if let Some(percent) = balance {
        let changed: BTreeSet<_> = actions
            .iter()
            .filter_map(|action| match action {
                Action::Create { partition, .. }
                | Action::Change { partition, .. }
                | Action::Remove { partition }
                | Action::Reassign { partition, .. } => Some(partition.clone()),
                Action::Accept { .. } | Action::Refuse { .. } => None,
            })
            .collect();
        let elections = rebalance_leaders(&read.cluster, percent, &changed);
        if !elections.is_empty() {
            tracing::info!(
                partitions = elections.len(),
                "the controller moves leaderships back to their preferred replicas (more than \
                 {percent} % of a node's were led elsewhere)"
            );
        }
        actions.extend(elections);
    }
    for action in actions {
        match action {
            Action::Accept { topic, replicas } => {
                let Some((mod_revision, request)) = read.requests.get(&topic) else {
                    continue;
                };
                let record = TopicRecord {
                    v: RECORD_VERSION,
                    id: request.id.clone(),
                    partitions: request.partitions,
                    replication_factor: request.replication_factor,
                    replicas: replicas
                        .iter()
                        .map(|replicas| {
                            replicas
                                .iter()
                                .map(|at| ReplicaPlacement {
                                    node: at.node.0,
                                    shard: at.shard,
                                })
                                .collect()
                        })
                        .collect(),
                    settings: request.settings,
                    reassigning: Vec::new(),
                };
                let request_key = topic_request_key(cluster, &topic);
                let value = json(&record);
                if value.len() > TOPIC_RECORD_SIZE_MAX {
                    let refused = RefusedRecord {
                        reason: "partitions".into(),
                        message: format!(
                            "{} partitions with {} replicas each make a topic record of {} \
                             bytes, more than the {TOPIC_RECORD_SIZE_MAX} a topic may have",
                            request.partitions,
                            request.replication_factor,
                            value.len()
                        ),
                    };
                    let txn = refusal_txn(leader, &request_key, *mod_revision, request, refused);
                    if !apply(client, leader, txn).await? {
                        return Ok(Pass::Deposed);
                    }
                    continue;
                }
                let key = topic_key(cluster, &topic);
                let txn = Txn::new()
                    .when([
                        guard(),
                        Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                        Compare::mod_revision(request_key.clone(), CompareOp::Equal, *mod_revision),
                    ])
                    .and_then([
                        TxnOp::put(key, value, None),
                        TxnOp::delete(request_key, None),
                    ])
                    .or_else([TxnOp::get(leader.key(), None)]);
                if !apply(client, leader, txn).await? {
                    return Ok(Pass::Deposed);
                }
                tracing::info!(
                    topic = %topic,
                    partitions = request.partitions,
                    replication_factor = request.replication_factor,
                    "the controller created a topic"
                );
            }
            Action::Refuse { topic, refusal } => {
                let Some((mod_revision, request)) = read.requests.get(&topic) else {
                    continue;
                };
                let reason = match refusal {
                    Refusal::Exists => "exists",
                    Refusal::PartitionCount { .. } => "partitions",
                    Refusal::Placement(_) => "replication_factor",
                };
                let refused = RefusedRecord {
                    reason: reason.into(),
                    message: format!("cannot create topic {topic:?}: {refusal}"),
                };
                let request_key = topic_request_key(cluster, &topic);
                let txn = refusal_txn(leader, &request_key, *mod_revision, request, refused);
                if !apply(client, leader, txn).await? {
                    return Ok(Pass::Deposed);
                }
                tracing::info!(topic = %topic, "the controller refused to create a topic: {refusal}");
            }
            Action::Create {
                partition,
                topic_id,
                state,
            } => {
                let key = partition_key(cluster, &partition.0, partition.1);
                let record = PartitionRecord::new(&topic_id_text(topic_id), &state, 1);
                let value = json(&record);
                batch
                    .compares
                    .push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                batch.ops.push(TxnOp::put(key, value, None));
                if batch.ops.len() == TXN_KEYS_MAX && !batch.write(client, leader).await? {
                    return Ok(Pass::Deposed);
                }
            }
            Action::Change { partition, state } => {
                let Some((mod_revision, record)) = read.partitions.get(&partition) else {
                    continue;
                };
                let key = partition_key(cluster, &partition.0, partition.1);
                let Some(written) = record.with_state(&state) else {
                    tracing::warn!(partition = %key, "a partition's epoch cannot grow: left as it is");
                    continue;
                };
                changes.push(Changed {
                    key,
                    mod_revision: *mod_revision,
                    record: written,
                });
                if changes.len() == TXN_KEYS_MAX
                    && !write_changes(client, leader, &mut changes).await?
                {
                    return Ok(Pass::Deposed);
                }
            }
            Action::Reassign {
                partition,
                replicas,
                state,
                finished,
            } => {
                let (topic, number) = partition;
                moves.entry(topic).or_default().push(Move {
                    partition: number,
                    replicas,
                    state,
                    finished,
                });
            }
            Action::Remove { partition } => {
                let Some((mod_revision, _)) = read.partitions.get(&partition) else {
                    continue;
                };
                let key = partition_key(cluster, &partition.0, partition.1);
                batch.compares.push(Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    *mod_revision,
                ));
                batch.ops.push(TxnOp::delete(key, None));
                if batch.ops.len() == TXN_KEYS_MAX && !batch.write(client, leader).await? {
                    return Ok(Pass::Deposed);
                }
            }
        }
    }
    if !batch.write(client, leader).await? || !write_changes(client, leader, &mut changes).await? {
        return Ok(Pass::Deposed);
    }
    for (topic, moves) in moves {
        if !move_partitions(client, cluster, leader, &read, &topic, moves).await? {
            return Ok(Pass::Deposed);
        }
    }
    Ok(Pass::Done(revision))
}

/// A step of a partition's move ([`Action::Reassign`]).
struct Move {
    partition: u32,
    replicas: Vec<Placement>,
    state: Option<spate_core::replica::PartitionState>,
    finished: bool,
}

/// Applies the steps of moving partitions of `topic`: its record with their new replicas
/// (and finished reassignments' entries gone) and their partition keys whose ISR shrinks, in
/// one transaction on the revisions read (at most [`TXN_KEYS_MAX`] keys: the rest wait for
/// the next pass, which this write brings); `false` if this node is deposed.
async fn move_partitions(
    client: &mut Client,
    cluster: &str,
    leader: &LeaderKey,
    read: &Read,
    topic: &str,
    moves: Vec<Move>,
) -> Result<bool, etcd_client::Error> {
    let Some((topic_revision, record)) = read.topics.get(topic) else {
        return Ok(true);
    };
    let key = topic_key(cluster, topic);
    let mut record = record.clone();
    let mut compares = vec![
        Compare::create_revision(leader.key(), CompareOp::Equal, leader.rev()),
        Compare::mod_revision(key.clone(), CompareOp::Equal, *topic_revision),
    ];
    let mut ops = Vec::new();
    let mut moved = Vec::new();
    for step in moves {
        if ops.len() + 2 > TXN_KEYS_MAX {
            break;
        }
        let Some(slot) = usize::try_from(step.partition)
            .ok()
            .and_then(|index| record.replicas.get_mut(index))
        else {
            continue;
        };
        if let Some(state) = &step.state {
            let name = (topic.to_owned(), step.partition);
            let Some((revision, partition)) = read.partitions.get(&name) else {
                continue;
            };
            let Some(written) = partition.with_state(state) else {
                continue;
            };
            let partition_key = partition_key(cluster, topic, step.partition);
            compares.push(Compare::mod_revision(
                partition_key.clone(),
                CompareOp::Equal,
                *revision,
            ));
            ops.push(TxnOp::put(partition_key, json(&written), None));
        }
        *slot = step
            .replicas
            .iter()
            .map(|at| ReplicaPlacement {
                node: at.node.0,
                shard: at.shard,
            })
            .collect();
        if step.finished {
            record
                .reassigning
                .retain(|entry| entry.partition != step.partition);
        }
        moved.push((
            step.partition,
            slot.iter().map(|at| at.node).collect::<Vec<_>>(),
        ));
    }
    let value = json(&record);
    if value.len() > TOPIC_RECORD_SIZE_MAX {
        tracing::warn!(
            topic,
            "moving partitions would make a topic record of {} bytes, more than the \
             {TOPIC_RECORD_SIZE_MAX} a topic may have: not moved",
            value.len()
        );
        return Ok(true);
    }
    ops.push(TxnOp::put(key, value, None));
    let txn = Txn::new()
        .when(compares)
        .and_then(ops)
        .or_else([TxnOp::get(leader.key(), None)]);
    // A compare that failed otherwise than by deposition: a key changed since the read (the
    // next pass, which that change brings, decides again).
    let outcome = run_txn(client, leader, txn).await?;
    if outcome == Outcome::Written {
        for (partition, replicas) in moved {
            tracing::info!(topic, partition, replicas = ?replicas, "the controller moved a partition a step");
        }
    }
    Ok(outcome != Outcome::Deposed)
}

/// A partition's new state, to be written if its key is still at the revision read.
struct Changed {
    key: String,
    mod_revision: i64,
    record: PartitionRecord,
}

/// Writes `changes` (then empty): together, in one transaction comparing every key's
/// revision (the elections for a lost node's thousands of partitions take a few round trips,
/// not one each); a batch that meets a key changed since the read (a leader's own ISR
/// change), or that etcd refuses as too large, is split in halves until only the changed
/// keys are left for the next pass, which their change brings. `false` if this node is
/// deposed.
async fn write_changes(
    client: &mut Client,
    leader: &LeaderKey,
    changes: &mut Vec<Changed>,
) -> Result<bool, etcd_client::Error> {
    let changes = std::mem::take(changes);
    if changes.is_empty() {
        return Ok(true);
    }
    let guard = || Compare::create_revision(leader.key(), CompareOp::Equal, leader.rev());
    let txn_of = |changes: &[Changed]| {
        let mut compares = vec![guard()];
        let mut puts = Vec::with_capacity(changes.len());
        for change in changes {
            compares.push(Compare::mod_revision(
                change.key.clone(),
                CompareOp::Equal,
                change.mod_revision,
            ));
            puts.push(TxnOp::put(change.key.clone(), json(&change.record), None));
        }
        Txn::new()
            .when(compares)
            .and_then(puts)
            .or_else([TxnOp::get(leader.key(), None)])
    };
    let logged = |change: &Changed| {
        let written = &change.record;
        tracing::info!(
            partition = %change.key,
            leader = ?written.leader.as_ref().map(|leader| leader.node),
            epoch = written.epoch,
            isr = ?written.isr.iter().map(|member| member.node).collect::<Vec<_>>(),
            "the controller changed a partition"
        );
    };
    // Parts still to write, each tried whole: one that meets a changed key, or that etcd
    // refuses as too large, is split in halves (a changed key then costs a few round trips,
    // not one per key of its batch).
    let mut parts: Vec<&[Changed]> = vec![&changes];
    while let Some(part) = parts.pop() {
        match run_txn(client, leader, txn_of(part)).await {
            Ok(Outcome::Written) => part.iter().for_each(logged),
            Ok(Outcome::Deposed) => return Ok(false),
            // Its key changed: the next pass, which the change brings, decides again.
            Ok(Outcome::Stale) if part.len() == 1 => {}
            Err(error) if part.len() == 1 || !too_large(&error) => return Err(error),
            Ok(Outcome::Stale) | Err(_) => {
                let (first, second) = part.split_at(part.len() / 2);
                parts.push(second);
                parts.push(first);
            }
        }
    }
    Ok(true)
}

/// Whether etcd refused a transaction for its size: more operations than its
/// `--max-txn-ops` (128 by default), or a request above its size limit.
fn too_large(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            message.contains("too many operations in txn request")
                || message.contains("request is too large")
        }
        _ => false,
    }
}

/// Partition keys created or removed together, in one transaction.
#[derive(Default)]
struct Batch {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
}

impl Batch {
    /// Writes what the batch holds (if anything); `false` if this node is deposed.
    async fn write(
        &mut self,
        client: &mut Client,
        leader: &LeaderKey,
    ) -> Result<bool, etcd_client::Error> {
        if self.ops.is_empty() {
            return Ok(true);
        }
        let count = self.ops.len();
        let mut compares = vec![Compare::create_revision(
            leader.key(),
            CompareOp::Equal,
            leader.rev(),
        )];
        compares.append(&mut self.compares);
        let txn = Txn::new()
            .when(compares)
            .and_then(std::mem::take(&mut self.ops))
            .or_else([TxnOp::get(leader.key(), None)]);
        let elected = apply(client, leader, txn).await?;
        if elected {
            tracing::debug!(
                keys = count,
                "the controller created or removed partition keys"
            );
        }
        Ok(elected)
    }
}

/// The transaction marking a request refused (if it is unchanged and `leader` elected).
fn refusal_txn(
    leader: &LeaderKey,
    key: &str,
    mod_revision: i64,
    request: &TopicRequestRecord,
    refused: RefusedRecord,
) -> Txn {
    let record = TopicRequestRecord {
        refused: Some(refused),
        ..request.clone()
    };
    Txn::new()
        .when([
            Compare::create_revision(leader.key(), CompareOp::Equal, leader.rev()),
            Compare::mod_revision(key, CompareOp::Equal, mod_revision),
        ])
        .and_then([TxnOp::put(key, json(&record), None)])
        .or_else([TxnOp::get(leader.key(), None)])
}

/// What a transaction guarded by this node's election key came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Written,
    /// A key's compare failed (it changed since the read): left for the next pass, which
    /// the change itself brings.
    Stale,
    /// The election key is gone.
    Deposed,
}

/// Runs `txn`, whose failure branch reads this node's election key.
async fn run_txn(
    client: &mut Client,
    leader: &LeaderKey,
    txn: Txn,
) -> Result<Outcome, etcd_client::Error> {
    let answer = client.txn(txn).await?;
    if answer.succeeded() {
        return Ok(Outcome::Written);
    }
    let still_elected = answer.op_responses().into_iter().any(|response| {
        matches!(response, etcd_client::TxnOpResponse::Get(get)
            if get.kvs().iter().any(|kv| kv.create_revision() == leader.rev()))
    });
    if !still_elected {
        tracing::warn!("this node's election key is gone: it is no longer the controller");
        return Ok(Outcome::Deposed);
    }
    Ok(Outcome::Stale)
}

/// Runs `txn`, whose failure branch reads this node's election key; `false` if the key is
/// gone (deposed). A compare that failed otherwise (a key changed since the read) is left for
/// the next pass, which the change itself brings.
async fn apply(
    client: &mut Client,
    leader: &LeaderKey,
    txn: Txn,
) -> Result<bool, etcd_client::Error> {
    Ok(run_txn(client, leader, txn).await? != Outcome::Deposed)
}
