//! The cluster's records in etcd (docs/cluster.md, "Keys"): their JSON layouts, their keys,
//! reading a prefix in pages, and the requester's side of a topic creation
//! ([`request_topic`]). The keys are JSON with a `"v": 1` field, readable with `etcdctl`:
//! `/spate/<cluster>/topics/<name>` ([`TopicRecord`]),
//! `/spate/<cluster>/partitions/<name>/<n>` ([`PartitionRecord`]) and
//! `/spate/<cluster>/topic-requests/<name>` ([`TopicRequestRecord`]).

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, WatchOptions};
use serde::{Deserialize, Serialize};
use spate_core::replica::{
    IsrMember, LeaderEpoch, PartitionState, ReplicaId, SessionId, StorageId, TopicId,
};
use spate_proto::Setting;

/// The version of the topic and partition records' JSON layout.
pub const RECORD_VERSION: u32 = 1;
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
    /// The topic's settings as its creator gave them.
    #[serde(flatten)]
    pub settings: TopicSettings,
    /// Reassignments in progress, by partition (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reassigning: Vec<ReassignmentRecord>,
}

/// A partition's reassignment in progress, in its topic's record (docs/cluster.md, "Moving
/// partitions"): the controller moves the partition step by step to `target` and removes the
/// entry once its replicas are the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignmentRecord {
    pub partition: u32,
    /// The target replicas' node ids, in preference order.
    pub target: Vec<u32>,
    /// The replicas' node ids before the reassignment (a cancellation moves back to them).
    pub original: Vec<u32>,
    /// The byte rate the new replicas catch up at (absent: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_bytes_per_s: Option<u64>,
}

/// A decommissioned node: `/spate/<cluster>/decommissioned/<node>`. The controller places
/// no new replicas there and moves the replicas it holds to other members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecommissionRecord {
    /// The layout's version (1).
    pub v: u32,
    /// The byte rate the replicas taking its place catch up at (absent: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_bytes_per_s: Option<u64>,
}

/// The key marking node `node` of `cluster` decommissioned.
pub fn decommissioned_key(cluster: &str, node: u32) -> String {
    format!("{}{node}", decommissioned_prefix(cluster))
}

/// The prefix of the decommission marks of `cluster`.
pub fn decommissioned_prefix(cluster: &str) -> String {
    format!("/spate/{cluster}/decommissioned/")
}

/// The decommissioned nodes among `kvs` (keys under [`decommissioned_prefix`]) with their
/// records; a mark whose value cannot be read still marks its node (with no throttle).
pub(crate) fn decommissioned_of(
    kvs: &[KeyValue],
    cluster: &str,
) -> std::collections::BTreeMap<u32, Option<u64>> {
    let prefix = decommissioned_prefix(cluster);
    kvs.iter()
        .filter_map(|kv| {
            let node = name_under(kv.key(), &prefix)?.parse::<u32>().ok()?;
            let throttle = serde_json::from_slice::<DecommissionRecord>(kv.value())
                .ok()
                .and_then(|record| record.throttle_bytes_per_s);
            Some((node, throttle))
        })
        .collect()
}

/// A topic's settings in its records: absent is the node's default, -1 unlimited (as
/// Kafka writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TopicSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<u32>,
}

/// Topic `name`'s record, if this version reads it: its layout version, a topic id of 32 hex
/// digits, a valid topic name, one replica list per partition and at most
/// `PARTITIONS_PER_TOPIC_MAX` partitions (so it can be served and described); else why not.
pub(crate) fn read_topic(name: &str, value: &[u8]) -> Result<(TopicId, TopicRecord), String> {
    let record: TopicRecord = serde_json::from_slice(value).map_err(|error| error.to_string())?;
    if record.v != RECORD_VERSION {
        return Err(format!("its layout version is {}", record.v));
    }
    let id = topic_id(&record.id).ok_or("its id is not 32 hex digits")?;
    spate_format::validate_topic_name(name).map_err(|error| error.to_string())?;
    let partitions = record.replicas.len();
    if partitions > spate_format::limits::PARTITIONS_PER_TOPIC_MAX as usize
        || partitions != record.partitions as usize
    {
        return Err(format!(
            "{} partitions with {partitions} replica lists",
            record.partitions
        ));
    }
    // Reassignments a request would have refused (written by hand, or damaged) are left out:
    // a partition out of range or named twice, a target empty, too long or naming a node
    // twice.
    let mut record = record;
    let mut seen = std::collections::BTreeSet::new();
    record.reassigning.retain(|entry| {
        let target_ok = !entry.target.is_empty()
            && entry.target.len() <= spate_proto::limits::CLUSTER_PARTITION_REPLICAS_MAX as usize
            && entry
                .target
                .iter()
                .enumerate()
                .all(|(index, node)| !entry.target[..index].contains(node));
        (entry.partition as usize) < partitions && target_ok && seen.insert(entry.partition)
    });
    Ok((id, record))
}

/// A partition's record, if this version reads it: its topic id and state, and the record.
pub(crate) fn read_partition(
    value: &[u8],
) -> Result<(TopicId, PartitionState, PartitionRecord), String> {
    let record: PartitionRecord =
        serde_json::from_slice(value).map_err(|error| error.to_string())?;
    if record.v != RECORD_VERSION {
        return Err(format!("its layout version is {}", record.v));
    }
    match (topic_id(&record.topic_id), record.state()) {
        (Some(topic_id), Some(state)) => Ok((topic_id, state, record)),
        _ => Err("an id is not hexadecimal".to_owned()),
    }
}

/// The topic and the partition number a partition key under `prefix` names.
pub(crate) fn partition_under<'a>(key: &'a [u8], prefix: &str) -> Option<(&'a str, u32)> {
    let (topic, number) = name_under(key, prefix)?.rsplit_once('/')?;
    Some((topic, number.parse().ok()?))
}

/// A topic setting as the records write it: absent is the node's default, -1 unlimited.
pub fn setting_of(record: Option<i64>) -> Setting {
    match record {
        None => Setting::Default,
        Some(-1) => Setting::Unlimited,
        Some(value) => u64::try_from(value).map_or(Setting::Default, Setting::Value),
    }
}

/// A topic setting as the records write it (values are checked to fit i64 before).
pub fn setting_record(setting: Setting) -> Option<i64> {
    match setting {
        Setting::Default => None,
        Setting::Unlimited => Some(-1),
        Setting::Value(value) => Some(i64::try_from(value).unwrap_or(i64::MAX)),
    }
}

/// `min.insync.replicas` as the records hold it (`None`: the default, 1).
pub fn min_insync_of(record: Option<u32>) -> Setting {
    record.map_or(Setting::Default, |count| Setting::Value(u64::from(count)))
}

/// `min.insync.replicas` as the records write it (checked to be 1 to 65,535 before).
pub fn min_insync_record(setting: Setting) -> Option<u32> {
    match setting {
        Setting::Value(count) => Some(u32::try_from(count).unwrap_or(u32::MAX)),
        Setting::Default | Setting::Unlimited => None,
    }
}

/// A request to create a topic: `/spate/<cluster>/topic-requests/<name>`, written by the node
/// a client asked, accepted (the topic key written, the request removed) or refused (the
/// request marked) by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRequestRecord {
    /// The layout's version (1).
    pub v: u32,
    /// The new topic's id (32 hex digits), chosen by the requester.
    pub id: String,
    pub partitions: u32,
    pub replication_factor: u32,
    #[serde(flatten)]
    pub settings: TopicSettings,
    /// Set by the controller when it cannot create the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedRecord>,
}

/// Why the controller refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRecord {
    /// `exists`, `partitions` or `replication_factor`.
    pub reason: String,
    /// What an operator reads.
    pub message: String,
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

/// The key of the cluster's id (`{"v":1,"id":"<32 hex digits>"}`), written once by the first
/// member to register: replica directories name it, so a node never takes or removes the
/// replicas of another cluster (an etcd replaced or emptied under the same name).
pub fn cluster_id_key(cluster: &str) -> String {
    format!("/spate/{cluster}/cluster-id")
}

/// The cluster id record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdRecord {
    pub v: u32,
    /// 32 hex digits.
    pub id: String,
}

/// The key of the request to create topic `name` of `cluster`.
pub fn topic_request_key(cluster: &str, name: &str) -> String {
    format!("{}{name}", topic_requests_prefix(cluster))
}

/// The prefix of the requests to create topics of `cluster`.
pub fn topic_requests_prefix(cluster: &str) -> String {
    format!("/spate/{cluster}/topic-requests/")
}

/// The key of partition `partition` of topic `name` of `cluster`.
pub fn partition_key(cluster: &str, name: &str, partition: u32) -> String {
    format!("{}{name}/{partition}", partitions_prefix(cluster))
}

/// The prefix of the partition keys of `cluster`.
pub fn partitions_prefix(cluster: &str) -> String {
    format!("/spate/{cluster}/partitions/")
}

pub(crate) fn hex(value: &str) -> Option<u64> {
    u64::from_str_radix(value, 16).ok()
}

impl PartitionRecord {
    /// The state [`decide`] works on; `None` if an id is not hex.
    pub(crate) fn state(&self) -> Option<PartitionState> {
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
    pub(crate) fn with_state(&self, state: &PartitionState) -> Option<PartitionRecord> {
        let partition_epoch = self.partition_epoch.checked_add(1)?;
        Some(PartitionRecord::new(&self.topic_id, state, partition_epoch))
    }

    /// The record of `state` for topic `topic_id`.
    pub(crate) fn new(
        topic_id: &str,
        state: &PartitionState,
        partition_epoch: u64,
    ) -> PartitionRecord {
        PartitionRecord {
            v: RECORD_VERSION,
            topic_id: topic_id.to_owned(),
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
            partition_epoch,
        }
    }
}

/// A topic id as its records write it: 32 hex digits.
pub fn topic_id_text(id: TopicId) -> String {
    format!("{:032x}", id.0)
}

pub(crate) fn topic_id(text: &str) -> Option<TopicId> {
    (text.len() == 32)
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
        .map(TopicId)
}

/// Keys one etcd answer carries at first when the controller reads a prefix; an answer too
/// large for the client (4 MiB, as tonic decodes) is asked again with half as many, down to
/// one key (a topic record is at most [`TOPIC_RECORD_SIZE_MAX`]).
const READ_PAGE_KEYS: i64 = 1_000;

/// The largest topic record the controller writes: well within etcd's default request limit
/// (`--max-request-bytes`, 1.5 MiB) and one answer of the client (4 MiB).
pub const TOPIC_RECORD_SIZE_MAX: usize = 1 << 20;

/// The keys under `prefix` at `revision` (0: the newest), at most `max`, read in pages; with
/// whether there were more and the revision read.
pub(crate) async fn read_prefix(
    client: &mut Client,
    prefix: &str,
    revision: i64,
    max: i64,
) -> Result<(Vec<KeyValue>, bool, i64), etcd_client::Error> {
    // Every prefix ends with '/': its range ends before the next byte value ('0').
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = revision;
    let mut page = READ_PAGE_KEYS.min(max);
    let mut kvs = Vec::new();
    loop {
        let limit = page.min(max - i64::try_from(kvs.len()).unwrap_or(max));
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let answer = match client.get(from.clone(), Some(options)).await {
            Ok(answer) => answer,
            // The answer was larger than the client takes: smaller pages.
            Err(etcd_client::Error::GRpcStatus(status))
                if page > 1 && status.message().contains("too large") =>
            {
                page /= 2;
                continue;
            }
            Err(error) => return Err(error),
        };
        if revision == 0 {
            revision = answer
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision);
        }
        let more = answer.more();
        let last = answer.kvs().last().map(|kv| kv.key().to_vec());
        kvs.extend(answer.kvs().iter().cloned());
        let full = i64::try_from(kvs.len()).unwrap_or(max) >= max;
        match last {
            Some(mut last) if more && !full => {
                last.push(0);
                from = last;
            }
            _ => return Ok((kvs, more, revision)),
        }
    }
}

/// The name after `prefix` in `key`, if it is under it and UTF-8.
pub(crate) fn name_under<'a>(key: &'a [u8], prefix: &str) -> Option<&'a str> {
    std::str::from_utf8(key).ok()?.strip_prefix(prefix)
}

/// A record as JSON. The records are derived `Serialize` structs of strings, integers,
/// options and vectors of such; serde_json fails only for maps with non-string keys or
/// `Serialize` impls that return errors, neither of which they have, so the encoding cannot
/// fail.
pub(crate) fn json(record: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(record).expect("a record of strings and numbers encodes")
}

/// Why a topic was not created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicRequestError {
    #[error("topic {0:?} exists")]
    Exists(String),
    #[error("topic {0:?} is being created (a request for it waits for the controller)")]
    Pending(String),
    /// Refused by the controller; `reason` is `exists`, `partitions` or
    /// `replication_factor`.
    #[error("{message}")]
    Refused { reason: String, message: String },
    #[error(
        "the controller did not answer within {0:?}; the topic may still be created (its \
         request stays in etcd until the controller takes it)"
    )]
    TimedOut(Duration),
    #[error("etcd: {0}")]
    Etcd(String),
}

impl From<etcd_client::Error> for TopicRequestError {
    fn from(error: etcd_client::Error) -> Self {
        TopicRequestError::Etcd(error.to_string())
    }
}

/// Asks the controller of `cluster` to create topic `name` (`request` says how, with a fresh
/// topic id) and waits up to `wait` for its answer: the topic's record once the controller
/// wrote it (with the revision it was written at), or why not. A request the controller refused earlier and nobody collected is
/// replaced; a pending one is not (another creation of the name is under way).
pub async fn request_topic(
    client: &mut Client,
    cluster: &str,
    name: &str,
    request: &TopicRequestRecord,
    wait: Duration,
) -> Result<(TopicRecord, i64), TopicRequestError> {
    let topic = topic_key(cluster, name);
    let key = topic_request_key(cluster, name);
    let value = json(request);
    let mut replace = 0;
    let revision = loop {
        let absent = if replace == 0 {
            Compare::create_revision(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, replace)
        };
        let txn = Txn::new()
            .when([
                Compare::create_revision(topic.clone(), CompareOp::Equal, 0),
                absent,
            ])
            .and_then([TxnOp::put(key.clone(), value.clone(), None)])
            .or_else([
                TxnOp::get(topic.clone(), None),
                TxnOp::get(key.clone(), None),
            ]);
        let answer = client.txn(txn).await?;
        if answer.succeeded() {
            break answer
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision);
        }
        let mut found = answer
            .op_responses()
            .into_iter()
            .map(|response| match response {
                etcd_client::TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                _ => None,
            });
        if found.next().flatten().is_some() {
            return Err(TopicRequestError::Exists(name.to_owned()));
        }
        match found.next().flatten() {
            Some(kv) => match serde_json::from_slice::<TopicRequestRecord>(kv.value()) {
                Ok(old) if old.refused.is_some() && replace != kv.mod_revision() => {
                    replace = kv.mod_revision();
                }
                _ => return Err(TopicRequestError::Pending(name.to_owned())),
            },
            // Gone meanwhile: try again as new.
            None => replace = 0,
        }
    };
    let options = || WatchOptions::new().with_start_revision(revision + 1);
    let mut watch = client.watch(topic.clone(), Some(options())).await?;
    watch.watch(key.clone(), Some(options())).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, watch.message()).await;
        let answer = match message {
            Err(_) => return Err(TopicRequestError::TimedOut(wait)),
            Ok(Err(error)) => return Err(error.into()),
            Ok(Ok(None)) => return Err(TopicRequestError::Etcd("the watch ended".into())),
            Ok(Ok(Some(answer))) => answer,
        };
        if answer.canceled() || answer.compact_revision() > 0 {
            return Err(TopicRequestError::Etcd(format!(
                "etcd ended the watch: {}",
                answer.cancel_reason()
            )));
        }
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            if event.event_type() != etcd_client::EventType::Put {
                continue;
            }
            if kv.key() == topic.as_bytes() {
                match serde_json::from_slice::<TopicRecord>(kv.value()) {
                    Ok(record) if record.id == request.id => {
                        return Ok((record, kv.mod_revision()));
                    }
                    // Created by someone else (another request of the name, a race lost).
                    _ => return Err(TopicRequestError::Exists(name.to_owned())),
                }
            }
            if let Ok(record) = serde_json::from_slice::<TopicRequestRecord>(kv.value()) {
                if let (Some(refused), true) = (record.refused, record.id == request.id) {
                    // Collected: the request goes (unless it changed meanwhile).
                    let txn = Txn::new()
                        .when([Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            kv.mod_revision(),
                        )])
                        .and_then([TxnOp::delete(key.clone(), None)]);
                    client.txn(txn).await?;
                    return Err(TopicRequestError::Refused {
                        reason: refused.reason,
                        message: refused.message,
                    });
                }
            }
        }
    }
}

/// Watch messages taken together (a burst, such as a node's loss changing many partitions,
/// makes one pass over everything, not one per message).
const WATCH_BURST_MAX: usize = 1_000;

/// How long a burst is waited for after its first message.
const WATCH_BURST_WAIT: Duration = Duration::from_millis(20);

/// What a watch showed next.
#[derive(Debug)]
pub(crate) enum Change {
    /// Something changed (a burst of messages, taken together).
    Changed,
    /// Nothing changed for the whole wait.
    Quiet,
    /// The watch ended (etcd cancelled or compacted it, or the stream broke), saying why:
    /// read everything again and watch anew.
    Ended(String),
}

/// The changes under some prefixes and to some keys of etcd, as one watch stream.
pub(crate) struct Changes {
    stream: etcd_client::WatchStream,
}

impl Changes {
    /// Watches `prefixes` and the exact `keys` from `revision` on.
    pub(crate) async fn open(
        client: &mut Client,
        prefixes: &[String],
        keys: &[String],
        revision: i64,
    ) -> Result<Changes, etcd_client::Error> {
        let from = || WatchOptions::new().with_start_revision(revision);
        let mut watches = prefixes
            .iter()
            .map(|prefix| (prefix, from().with_prefix()))
            .chain(keys.iter().map(|key| (key, from())));
        let Some((first, options)) = watches.next() else {
            return Err(etcd_client::Error::InvalidArgs("nothing to watch".into()));
        };
        let mut stream = client.watch(first.as_str(), Some(options)).await?;
        for (key, options) in watches {
            stream.watch(key.as_str(), Some(options)).await?;
        }
        Ok(Changes { stream })
    }

    /// The next change, waiting at most `wait`; the rest of a burst is taken with it.
    pub(crate) async fn next(&mut self, wait: Duration) -> Change {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.message()).await {
                Err(_) => return Change::Quiet,
                Ok(Err(error)) => return Change::Ended(error.to_string()),
                Ok(Ok(None)) => return Change::Ended("the stream ended".into()),
                Ok(Ok(Some(answer))) => {
                    if let Some(ended) = ended(&answer) {
                        return ended;
                    }
                    if !answer.events().is_empty() {
                        break;
                    }
                }
            }
        }
        // The rest of a burst, briefly.
        for _ in 0..WATCH_BURST_MAX {
            match tokio::time::timeout(WATCH_BURST_WAIT, self.stream.message()).await {
                Err(_) => break,
                Ok(Err(error)) => return Change::Ended(error.to_string()),
                Ok(Ok(None)) => return Change::Ended("the stream ended".into()),
                Ok(Ok(Some(answer))) => {
                    if let Some(ended) = ended(&answer) {
                        return ended;
                    }
                }
            }
        }
        Change::Changed
    }
}

/// Whether `answer` ends its watch (cancelled or compacted), and why.
fn ended(answer: &etcd_client::WatchResponse) -> Option<Change> {
    (answer.canceled() || answer.compact_revision() > 0).then(|| {
        Change::Ended(format!(
            "etcd cancelled it (compacted at revision {}: {})",
            answer.compact_revision(),
            answer.cancel_reason()
        ))
    })
}
