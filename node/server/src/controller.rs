//! The controller's duties on etcd (docs/cluster.md, "The controller"), run by the member that
//! won the election for as long as its campaign holds: it reads the members, the topics and
//! the partitions at one revision, applies the pure decision of
//! [`spate_core::replica::control::decide`] to every partition (a leader whose session is gone
//! is replaced by the first live in-sync replica in preference order, in a new epoch; dead
//! in-sync replicas leave the ISR, the last one stays; a partition whose ISR members are all
//! gone waits offline), writes each change as a compare-and-swap on the partition key's
//! revision and on the controller's own election key, and starts over whenever etcd shows a
//! change to the members, topics, partitions or its election key (a watch from the next
//! revision) or every [`CONTROLLER_RESYNC`] without one. A deposed controller's writes fail
//! on the election key's compare, so two controllers never both write; it notices at its next
//! pass and returns.
//!
//! The keys are JSON with a `"v": 1` field, readable with `etcdctl`:
//! `/spate/<cluster>/topics/<name>` ([`TopicRecord`]) and
//! `/spate/<cluster>/partitions/<name>/<n>` ([`PartitionRecord`]).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, LeaderKey, Txn, TxnOp, WatchOptions};
use serde::{Deserialize, Serialize};
use spate_core::replica::{
    decide, IsrMember, LeaderEpoch, LiveMember, PartitionState, ReplicaId, SessionId, StorageId,
};

use crate::cluster::{member_node, member_record, members_prefix};

/// The version of the topic and partition records' JSON layout.
pub const RECORD_VERSION: u32 = 1;

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

/// A topic as the cluster holds it: `/spate/<cluster>/topics/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// The layout's version (1).
    pub v: u32,
    /// Random 128-bit id (32 hex digits): tells a re-created topic apart.
    pub id: String,
    pub partitions: u32,
    pub replication_factor: u32,
    /// Per partition, its replicas in preference order (the first is the preferred leader).
    pub replicas: Vec<Vec<ReplicaPlacement>>,
}

/// Where one replica of a partition lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPlacement {
    pub node: u32,
    pub shard: u16,
}

/// A partition's replication state: `/spate/<cluster>/partitions/<name>/<n>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The layout's version (1).
    pub v: u32,
    /// The id of the topic it belongs to (a partition of an older topic of the same name is
    /// ignored).
    pub topic_id: String,
    /// The leader and the member session it was elected in; `null`: offline.
    pub leader: Option<LeaderRecord>,
    /// The leader epoch (bumped by every election).
    pub epoch: u32,
    /// The in-sync replicas, each with the storage id it was in sync with (KIP-903).
    pub isr: Vec<IsrRecord>,
    /// Bumped by every change of this record.
    pub partition_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub node: u32,
    /// The member's session (16 hex digits).
    pub session: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrRecord {
    pub node: u32,
    /// The storage id (16 hex digits) of the data directory that was in sync.
    pub storage: String,
}

/// The key of topic `name` of `cluster`.
pub fn topic_key(cluster: &str, name: &str) -> String {
    format!("{}{name}", topics_prefix(cluster))
}

/// The prefix of the topic keys of `cluster`.
pub fn topics_prefix(cluster: &str) -> String {
    format!("/spate/{cluster}/topics/")
}

/// The key of partition `partition` of topic `name` of `cluster`.
pub fn partition_key(cluster: &str, name: &str, partition: u32) -> String {
    format!("{}{name}/{partition}", partitions_prefix(cluster))
}

/// The prefix of the partition keys of `cluster`.
pub fn partitions_prefix(cluster: &str) -> String {
    format!("/spate/{cluster}/partitions/")
}

fn hex(value: &str) -> Option<u64> {
    u64::from_str_radix(value, 16).ok()
}

impl PartitionRecord {
    /// The state [`decide`] works on; `None` if an id is not hex.
    fn state(&self) -> Option<PartitionState> {
        let leader = match &self.leader {
            None => None,
            Some(leader) => Some((ReplicaId(leader.node), SessionId(hex(&leader.session)?))),
        };
        let isr = self
            .isr
            .iter()
            .map(|member| {
                Some(IsrMember {
                    replica: ReplicaId(member.node),
                    storage: StorageId(hex(&member.storage)?),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(PartitionState {
            leader,
            epoch: LeaderEpoch(self.epoch),
            isr,
        })
    }

    /// This record changed to `state`, one partition epoch later (`None` if the partition
    /// epoch cannot grow).
    fn with_state(&self, state: &PartitionState) -> Option<PartitionRecord> {
        Some(PartitionRecord {
            v: RECORD_VERSION,
            topic_id: self.topic_id.clone(),
            leader: state.leader.map(|(node, session)| LeaderRecord {
                node: node.0,
                session: format!("{:016x}", session.0),
            }),
            epoch: state.epoch.0,
            isr: state
                .isr
                .iter()
                .map(|member| IsrRecord {
                    node: member.replica.0,
                    storage: format!("{:016x}", member.storage.0),
                })
                .collect(),
            partition_epoch: self.partition_epoch.checked_add(1)?,
        })
    }
}

/// Keys of one kind (members, topics, partitions) a pass reads; past it, a pass acts on the
/// first ones in key order and says so (an etcd answer holds at most 4 MiB, which about
/// 14,000 partition records fill).
pub const CONTROLLER_KEYS_MAX: i64 = 10_000;

/// Watch messages taken together before a pass (a burst, such as a node's loss changing many
/// partitions, makes one pass, not one per message).
const WATCH_BURST_MAX: usize = 1_000;

/// How long the controller waits for more of a burst before its pass.
const WATCH_BURST_WAIT: Duration = Duration::from_millis(20);

/// How one pass ended.
enum Pass {
    /// Done, at this revision.
    Done(i64),
    /// This node's election key is gone: it is no longer the controller.
    Deposed,
}

/// Runs the controller's duties while `leader` (this node's won campaign) holds; returns when
/// this node is deposed (its election key is gone while its lease lives). The task running it
/// is aborted when the session goes.
pub async fn lead(mut client: Client, cluster: String, leader: LeaderKey) {
    let mut warned = HashSet::new();
    loop {
        let revision = match bounded(reconcile(&mut client, &cluster, &leader, &mut warned)).await {
            Ok(Pass::Done(revision)) => revision,
            Ok(Pass::Deposed) => return,
            Err(error) => {
                tracing::warn!("the controller cannot apply its decisions: {error}");
                tokio::time::sleep(CONTROLLER_RETRY).await;
                continue;
            }
        };
        let mut watch =
            match bounded(watch_from(&mut client, &cluster, &leader, revision + 1)).await {
                Ok(watch) => watch,
                Err(error) => {
                    tracing::warn!("the controller cannot watch etcd: {error}");
                    tokio::time::sleep(CONTROLLER_RETRY).await;
                    continue;
                }
            };
        // Wait for a change (or the resync), then read everything again.
        loop {
            match tokio::time::timeout(CONTROLLER_RESYNC, watch.message()).await {
                Ok(Ok(Some(answer))) if answer.canceled() || answer.compact_revision() > 0 => {
                    tracing::warn!(
                        compacted = answer.compact_revision(),
                        reason = answer.cancel_reason(),
                        "etcd ended the controller's watch; reading everything again"
                    );
                    break;
                }
                Ok(Ok(Some(answer))) if answer.events().is_empty() => continue,
                Ok(Ok(Some(_))) => {
                    // The rest of a burst, briefly.
                    let mut ended = false;
                    for _ in 0..WATCH_BURST_MAX {
                        match tokio::time::timeout(WATCH_BURST_WAIT, watch.message()).await {
                            Ok(Ok(Some(answer)))
                                if answer.canceled() || answer.compact_revision() > 0 =>
                            {
                                ended = true;
                                break;
                            }
                            Ok(Ok(Some(_))) => {}
                            Ok(Ok(None) | Err(_)) => {
                                ended = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if ended {
                        tracing::warn!(
                            "the controller's watch ended in a burst; reading everything again"
                        );
                        break;
                    }
                }
                Err(_) => {}
                Ok(Ok(None) | Err(_)) => {
                    tracing::warn!("the controller's watch ended; reading everything again");
                    break;
                }
            }
            match bounded(reconcile(&mut client, &cluster, &leader, &mut warned)).await {
                Ok(Pass::Done(_)) => {}
                Ok(Pass::Deposed) => return,
                Err(error) => {
                    tracing::warn!("the controller cannot apply its decisions: {error}");
                    tokio::time::sleep(CONTROLLER_RETRY).await;
                }
            }
        }
        tokio::time::sleep(CONTROLLER_RETRY).await;
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

/// One watch stream over the members, the topics and the partitions of `cluster`, and this
/// node's election key (its deletion deposes it), from `revision` on.
async fn watch_from(
    client: &mut Client,
    cluster: &str,
    leader: &LeaderKey,
    revision: i64,
) -> Result<etcd_client::WatchStream, etcd_client::Error> {
    let options = || {
        WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision)
    };
    let mut watch = client
        .watch(members_prefix(cluster), Some(options()))
        .await?;
    watch.watch(topics_prefix(cluster), Some(options())).await?;
    watch
        .watch(partitions_prefix(cluster), Some(options()))
        .await?;
    let exact = WatchOptions::new().with_start_revision(revision);
    watch.watch(leader.key(), Some(exact)).await?;
    Ok(watch)
}

/// One pass: everything read at one revision, every partition decided, each change written
/// by compare-and-swap. `warned` holds the keys already warned about (a key that is bad
/// again after it was fixed is warned about again).
async fn reconcile(
    client: &mut Client,
    cluster: &str,
    leader: &LeaderKey,
    warned: &mut HashSet<String>,
) -> Result<Pass, etcd_client::Error> {
    let limited = || {
        GetOptions::new()
            .with_prefix()
            .with_limit(CONTROLLER_KEYS_MAX)
    };
    let members_read = client.get(members_prefix(cluster), Some(limited())).await?;
    let revision = members_read
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    let at = || limited().with_revision(revision);
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
        tracing::warn!("this node's election key is gone: it is no longer the controller");
        return Ok(Pass::Deposed);
    }
    let topics_read = client.get(topics_prefix(cluster), Some(at())).await?;
    let partitions_read = client.get(partitions_prefix(cluster), Some(at())).await?;
    let mut bad = HashSet::new();
    let mut undecodable = |key: &[u8], what: &str, error: &dyn std::fmt::Display| {
        let key = String::from_utf8_lossy(key).into_owned();
        if !warned.contains(&key) {
            tracing::warn!(key = %key, "the controller ignores a {what} it cannot read: {error}");
        }
        bad.insert(key);
    };
    for (read, what) in [
        (&members_read, "members"),
        (&topics_read, "topics"),
        (&partitions_read, "partitions"),
    ] {
        if read.more() {
            let effect = if what == "members" {
                "decides nothing until there are fewer"
            } else {
                "acts on the first ones in key order"
            };
            undecodable(
                what.as_bytes(),
                "part of the keys",
                &format_args!("more than {CONTROLLER_KEYS_MAX} {what}; the controller {effect}"),
            );
        }
    }
    // Members whose records this node cannot read are not known to be dead: partitions that
    // name them are left as they are (a newer node's record in a rolling upgrade, a damaged
    // key). With more members than one pass reads, nobody is known to be dead.
    if members_read.more() {
        *warned = bad;
        return Ok(Pass::Done(revision));
    }
    let mut unknown = HashSet::new();
    let mut members = BTreeMap::new();
    for kv in members_read.kvs() {
        let record = match member_record(cluster, kv.key(), kv.value()) {
            Ok(record) => record,
            Err(error) => {
                unknown.extend(member_node(cluster, kv.key()));
                undecodable(kv.key(), "member", &error);
                continue;
            }
        };
        match (hex(&record.session), hex(&record.storage)) {
            (Some(session), Some(storage)) => {
                members.insert(
                    ReplicaId(record.node),
                    LiveMember {
                        session: SessionId(session),
                        storage: StorageId(storage),
                    },
                );
            }
            _ => {
                unknown.insert(record.node);
                undecodable(kv.key(), "member", &"an id is not hexadecimal");
            }
        }
    }
    let topics_at = topics_prefix(cluster);
    let mut topics = BTreeMap::new();
    for kv in topics_read.kvs() {
        let Some(name) = std::str::from_utf8(kv.key())
            .ok()
            .and_then(|key| key.strip_prefix(topics_at.as_str()))
        else {
            continue;
        };
        match serde_json::from_slice::<TopicRecord>(kv.value()) {
            Ok(record) if record.v == RECORD_VERSION => {
                topics.insert(name.to_owned(), record);
            }
            Ok(record) => undecodable(
                kv.key(),
                "topic",
                &format_args!("its layout version is {}", record.v),
            ),
            Err(error) => undecodable(kv.key(), "topic", &error),
        }
    }
    let partitions_at = partitions_prefix(cluster);
    for kv in partitions_read.kvs() {
        let Some((topic, partition)) = std::str::from_utf8(kv.key())
            .ok()
            .and_then(|key| key.strip_prefix(partitions_at.as_str()))
            .and_then(|rest| rest.rsplit_once('/'))
            .and_then(|(topic, n)| Some((topic.to_owned(), n.parse::<usize>().ok()?)))
        else {
            undecodable(kv.key(), "partition key", &"no topic/partition in its name");
            continue;
        };
        let record = match serde_json::from_slice::<PartitionRecord>(kv.value()) {
            Ok(record) if record.v == RECORD_VERSION => record,
            Ok(record) => {
                let version = format!("its layout version is {}", record.v);
                undecodable(kv.key(), "partition", &version);
                continue;
            }
            Err(error) => {
                undecodable(kv.key(), "partition", &error);
                continue;
            }
        };
        // A partition counts only once its topic exists with the same id (a half-created
        // or re-created topic is not acted on).
        let Some(replicas) = topics
            .get(&topic)
            .filter(|topic| topic.id == record.topic_id)
            .and_then(|topic| topic.replicas.get(partition))
        else {
            continue;
        };
        let Some(state) = record.state() else {
            undecodable(kv.key(), "partition", &"an id is not hexadecimal");
            continue;
        };
        let replicas: Vec<ReplicaId> = replicas.iter().map(|at| ReplicaId(at.node)).collect();
        let names_unknown = replicas
            .iter()
            .chain(state.leader.iter().map(|(leader, _)| leader))
            .chain(state.isr.iter().map(|member| &member.replica))
            .any(|replica| unknown.contains(&replica.0));
        if names_unknown {
            continue;
        }
        let Some(next) = decide(&state, &replicas, &members) else {
            continue;
        };
        let Some(written) = record.with_state(&next) else {
            undecodable(kv.key(), "partition", &"its partition epoch cannot grow");
            continue;
        };
        let Ok(value) = serde_json::to_vec(&written) else {
            continue;
        };
        let key = kv.key().to_vec();
        let txn = Txn::new()
            .when([
                Compare::create_revision(leader.key(), CompareOp::Equal, leader.rev()),
                Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
            ])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(leader.key(), None)]);
        let answer = client.txn(txn).await?;
        if answer.succeeded() {
            tracing::info!(
                partition = %String::from_utf8_lossy(&key),
                leader = ?written.leader.as_ref().map(|leader| leader.node),
                epoch = written.epoch,
                isr = ?written.isr.iter().map(|member| member.node).collect::<Vec<_>>(),
                "the controller changed a partition"
            );
            continue;
        }
        // The compare failed: the partition changed since the read (the next pass sees it),
        // or this node's election key is gone (deposed: its successor decides).
        let still_elected = answer.op_responses().into_iter().any(|response| {
            matches!(response, etcd_client::TxnOpResponse::Get(get)
                if get.kvs().iter().any(|kv| kv.create_revision() == leader.rev()))
        });
        if !still_elected {
            tracing::warn!("this node's election key is gone: it is no longer the controller");
            return Ok(Pass::Deposed);
        }
    }
    *warned = bad;
    Ok(Pass::Done(revision))
}
