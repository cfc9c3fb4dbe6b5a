//! A node's view of its cluster's assignments (docs/cluster.md, "Roles"): the members with
//! their shards, the topics with their replicas and settings, and each partition's state,
//! read from etcd at one revision on the cluster thread and again whenever a watch shows a
//! change (or every [`MAP_RESYNC`]), published as a [`ClusterMap`]; and the node's metadata
//! made from it ([`metadata_from`]): every partition routed to its leader's shard, the
//! replicas this node holds opened on their shards, and each served only while this node
//! leads its current epoch under the session it holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use spate_core::replica::{role, PartitionState, ReplicaId, Role, SessionId};
use spate_proto::limits::{ENDPOINT_SIZE_MAX, SHARDS_MAX};
use spate_proto::ShardId;
use tokio::sync::watch;

use crate::cluster::{member_record, members_prefix, ClusterSettings};
use crate::metadata::{ClusterRoutes, Follows, Leads, LocalReplica, Metadata, Serving, Topic};
use crate::records::{
    cluster_id_key, decommissioned_of, decommissioned_prefix, min_insync_of, name_under,
    partition_under, partitions_prefix, read_partition, read_prefix, read_topic, setting_of,
    topic_id, topic_id_text, topics_prefix, Change, Changes, ClusterIdRecord, ReassignmentRecord,
    ReplicaPlacement, TopicSettings, RECORD_VERSION,
};

/// Keys of one kind a node reads for its map (as many as the controller acts on).
const MAP_KEYS_MAX: i64 = crate::controller::CONTROLLER_KEYS_MAX;

/// How often a node reads the whole map again without a change shown by its watch.
pub const MAP_RESYNC: Duration = Duration::from_secs(5);

/// How long one read of the map (or opening its watch) may take.
const MAP_READ_WAIT: Duration = Duration::from_secs(10);

/// How long the node waits after a failed read before it tries again.
const MAP_RETRY: Duration = Duration::from_secs(1);

/// The cluster's assignments at one etcd revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMap {
    pub revision: i64,
    /// The registered members (readable records) and their shard endpoints.
    pub members: BTreeMap<u32, Vec<String>>,
    /// The members' Kafka addresses (`MemberRecord::kafka`), of those that publish one.
    pub kafka: BTreeMap<u32, String>,
    /// The members' racks (`MemberRecord::rack`), of those that have one.
    pub racks: BTreeMap<u32, String>,
    /// The topics; `None`: a key this version cannot read.
    pub topics: BTreeMap<String, Option<MappedTopic>>,
    /// Whether every topic key was read and readable.
    pub complete: bool,
    /// The cluster's id, once a member wrote it (every member does at registration).
    pub cluster_id: Option<String>,
    /// Decommissioned nodes, with the byte rate their replicas' successors catch up at.
    pub decommissioned: BTreeMap<u32, Option<u64>>,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedTopic {
    /// Its id (32 hex digits).
    pub id: String,
    pub settings: TopicSettings,
    pub partitions: Vec<MappedPartition>,
    /// Reassignments in progress.
    pub reassigning: Vec<ReassignmentRecord>,
}

/// A partition: its replicas and its state (`None` until the controller wrote it, or when its
/// key cannot be read or names another topic id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedPartition {
    pub replicas: Vec<ReplicaPlacement>,
    pub state: Option<PartitionState>,
    /// The partition key's revision (a leader's ISR change compares it); 0 with no state.
    pub revision: i64,
}

/// Reads the map at one revision (in pages).
pub async fn read_map(
    client: &mut Client,
    cluster: &str,
) -> Result<ClusterMap, etcd_client::Error> {
    let (members_read, _, revision) =
        read_prefix(client, &members_prefix(cluster), 0, MAP_KEYS_MAX).await?;
    let (topics_read, topics_more, _) =
        read_prefix(client, &topics_prefix(cluster), revision, MAP_KEYS_MAX).await?;
    let (partitions_read, _, _) =
        read_prefix(client, &partitions_prefix(cluster), revision, MAP_KEYS_MAX).await?;
    let (decommissioned_read, _, _) = read_prefix(
        client,
        &decommissioned_prefix(cluster),
        revision,
        MAP_KEYS_MAX,
    )
    .await?;
    let id = client
        .get(
            cluster_id_key(cluster),
            Some(etcd_client::GetOptions::new().with_revision(revision)),
        )
        .await?;
    let cluster_id = id
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice::<ClusterIdRecord>(kv.value()).ok())
        .filter(|record| record.v == RECORD_VERSION && topic_id(&record.id).is_some())
        .map(|record| record.id);
    let mut map = ClusterMap {
        revision,
        complete: !topics_more,
        cluster_id,
        decommissioned: decommissioned_of(&decommissioned_read, cluster),
        ..ClusterMap::default()
    };
    for kv in &members_read {
        // Only addresses a `Metadata` answer can carry: one bad record must not make every
        // node's answer undecodable.
        if let Ok(record) = member_record(cluster, kv.key(), kv.value()) {
            let fits = record.shards.len() <= SHARDS_MAX as usize
                && record
                    .shards
                    .iter()
                    .all(|endpoint| endpoint.len() <= ENDPOINT_SIZE_MAX as usize);
            if fits {
                if let Some(kafka) = record
                    .kafka
                    .filter(|address| address.len() <= ENDPOINT_SIZE_MAX as usize)
                {
                    map.kafka.insert(record.node, kafka);
                }
                if let Some(rack) = record.rack.filter(|rack| crate::config::valid_rack(rack)) {
                    map.racks.insert(record.node, rack);
                }
                map.members.insert(record.node, record.shards);
            }
        }
    }
    let topics_at = topics_prefix(cluster);
    for kv in &topics_read {
        let Some(name) = name_under(kv.key(), &topics_at) else {
            continue;
        };
        let topic = read_topic(name, kv.value())
            .ok()
            .map(|(_, record)| MappedTopic {
                id: record.id,
                settings: record.settings,
                reassigning: record.reassigning,
                partitions: record
                    .replicas
                    .into_iter()
                    .map(|replicas| MappedPartition {
                        replicas,
                        state: None,
                        revision: 0,
                    })
                    .collect(),
            });
        map.complete &= topic.is_some();
        map.topics.insert(name.to_owned(), topic);
    }
    let partitions_at = partitions_prefix(cluster);
    for kv in &partitions_read {
        let Some((name, number)) = partition_under(kv.key(), &partitions_at) else {
            continue;
        };
        let Some(Some(topic)) = map.topics.get_mut(name) else {
            continue;
        };
        let Ok((topic_id, state, _)) = read_partition(kv.value()) else {
            continue;
        };
        if topic_id_text(topic_id) != topic.id {
            continue;
        }
        if let Some(partition) = usize::try_from(number)
            .ok()
            .and_then(|number| topic.partitions.get_mut(number))
        {
            partition.state = Some(state);
            partition.revision = kv.mod_revision();
        }
    }
    Ok(map)
}

/// Keeps `sender` holding the newest map of `settings`' cluster: read, then watched, read
/// again on every change and every [`MAP_RESYNC`]; reconnects after a failure. Runs on the
/// cluster thread until aborted.
pub async fn follow(settings: ClusterSettings, sender: watch::Sender<Arc<ClusterMap>>) {
    let cluster = settings.cluster_name.clone();
    let prefixes = [
        members_prefix(&cluster),
        topics_prefix(&cluster),
        partitions_prefix(&cluster),
        decommissioned_prefix(&cluster),
    ];
    loop {
        // No per-request timeout (it would end the watch), but keep-alive pings and bounded
        // reads.
        let options = ConnectOptions::new()
            .with_connect_timeout(settings.session_timeout)
            .with_keep_alive(Duration::from_secs(10), settings.session_timeout);
        let mut client = match crate::cluster::connect_etcd(&settings.endpoints, options).await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!("cannot connect to etcd for the cluster's map: {error}");
                tokio::time::sleep(MAP_RETRY).await;
                continue;
            }
        };
        'read: loop {
            let map = match bounded(read_map(&mut client, &cluster)).await {
                Ok(map) => map,
                Err(error) => {
                    tracing::warn!("cannot read the cluster's map: {error}");
                    break;
                }
            };
            let revision = map.revision;
            publish(&sender, map);
            let opened = Changes::open(&mut client, &prefixes, &[], revision + 1);
            let mut changes = match bounded(opened).await {
                Ok(changes) => changes,
                Err(error) => {
                    tracing::warn!("cannot watch the cluster's map: {error}");
                    break;
                }
            };
            loop {
                if let Change::Ended(why) = changes.next(MAP_RESYNC).await {
                    tracing::warn!(
                        "the watch of the cluster's map ended ({why}); reading it again"
                    );
                    continue 'read;
                }
                match bounded(read_map(&mut client, &cluster)).await {
                    Ok(map) => publish(&sender, map),
                    Err(error) => {
                        tracing::warn!("cannot read the cluster's map: {error}");
                        break 'read;
                    }
                }
            }
        }
        tokio::time::sleep(MAP_RETRY).await;
    }
}

/// Publishes `map` unless it says what the last one said.
fn publish(sender: &watch::Sender<Arc<ClusterMap>>, map: ClusterMap) {
    sender.send_if_modified(|current| {
        // Every new revision is told (an answer waits for its own change's revision), even
        // when nothing this node uses changed.
        let same = **current == map;
        *current = Arc::new(map);
        !same
    });
}

async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(MAP_READ_WAIT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("etcd did not answer within {MAP_READ_WAIT:?}")),
    }
}

/// The shard of a node with `shards` shards that holds a replica assigned to `shard`.
fn effective_shard(shard: u16, shards: usize) -> Option<u16> {
    let shards = u16::try_from(shards).ok().filter(|shards| *shards > 0)?;
    Some(shard % shards)
}

/// The routing index of a partition nobody can serve now (no leader among the members):
/// past every shard, so a gateway sends it to any shard, which answers that it is not led.
pub const NO_LEADER_SHARD: ShardId = ShardId(u16::MAX);

/// The metadata of node `me` (with `shards` shards, registered under `session` while its
/// lease holds) from `map`: every topic routed to its leaders' shards, the replicas `me`
/// holds, and which of them it serves. `next_producer_id` is kept from the local metadata.
pub fn metadata_from(
    map: &ClusterMap,
    me: u32,
    session: Option<u64>,
    shards: u16,
    next_producer_id: u64,
) -> Metadata {
    // Without the cluster's id, nothing is opened or removed (a replica directory must name
    // its cluster).
    let mut routes = ClusterRoutes {
        complete: map.complete && map.cluster_id.is_some(),
        cluster_id: map.cluster_id.clone().unwrap_or_default(),
        ..ClusterRoutes::default()
    };
    let mut first: HashMap<u32, u16> = HashMap::new();
    for (node, endpoints) in &map.members {
        // A `Metadata` answer lists at most `SHARDS_MAX` shards: members past it are not
        // routed to (their partitions answer as not led).
        let end = routes.shards.len() + endpoints.len();
        let (Ok(start), true) = (
            u16::try_from(routes.shards.len()),
            end <= SHARDS_MAX as usize,
        ) else {
            tracing::warn!(
                node,
                "more shards in the cluster than a Metadata answer lists ({SHARDS_MAX}): this \
                 member's partitions are not routed to"
            );
            continue;
        };
        first.insert(*node, start);
        routes.shards.extend(endpoints.iter().cloned());
    }
    routes.first_local = first.get(&me).copied();
    // A replica assigned to a shard its node no longer runs (restarted with fewer) lives on
    // the shard its number wraps to: a replica's files are the node's, not a shard's.
    let index = |node: u32, shard: u16| -> Option<ShardId> {
        let endpoints = map.members.get(&node)?;
        let shard = effective_shard(shard, endpoints.len())?;
        first.get(&node)?.checked_add(shard).map(ShardId)
    };
    let mut topics = BTreeMap::new();
    for (name, topic) in &map.topics {
        let Some(topic) = topic else { continue };
        let mut owners = Vec::with_capacity(topic.partitions.len());
        for (number, partition) in (0u32..).zip(&topic.partitions) {
            let leader = partition
                .state
                .as_ref()
                .and_then(|state| state.leader)
                .and_then(|(leader, _)| {
                    let at = partition.replicas.iter().find(|at| at.node == leader.0)?;
                    index(at.node, at.shard)
                });
            owners.push(leader.unwrap_or(NO_LEADER_SHARD));
            let Some(here) = partition.replicas.iter().find(|at| at.node == me) else {
                continue;
            };
            if map.cluster_id.is_none() {
                continue;
            }
            let Some(shard) = effective_shard(here.shard, usize::from(shards)) else {
                continue;
            };
            let serving = match &partition.state {
                None => Serving::NotLeader("no leader yet (the partition is being created)".into()),
                Some(state) => serving(state, me, session),
            };
            let leads = partition.state.as_ref().and_then(|state| {
                match role(state, ReplicaId(me), session.map(SessionId)) {
                    Role::Leader { epoch } => Some(Leads {
                        epoch: epoch.0,
                        replicas: partition.replicas.iter().map(|at| at.node).collect(),
                        isr: state.isr.clone(),
                        revision: partition.revision,
                    }),
                    Role::Follower { .. } | Role::Offline => None,
                }
            });
            let follows = partition.state.as_ref().and_then(|state| {
                let Role::Follower { leader, epoch } =
                    role(state, ReplicaId(me), session.map(SessionId))
                else {
                    return None;
                };
                let at = partition.replicas.iter().find(|at| at.node == leader.0)?;
                let shard = index(at.node, at.shard)?;
                Some(Follows {
                    leader: leader.0,
                    epoch: epoch.0,
                    endpoint: routes.shards.get(usize::from(shard.0))?.clone(),
                })
            });
            let throttle = follows
                .as_ref()
                .and_then(|_| move_throttle(map, topic, number, partition, me));
            routes.local.entry(name.clone()).or_default().insert(
                number,
                LocalReplica {
                    shard: ShardId(shard),
                    topic_id: topic.id.clone(),
                    serving,
                    leads,
                    follows,
                    throttle,
                },
            );
        }
        topics.insert(
            name.clone(),
            Topic {
                retention_ms: setting_of(topic.settings.retention_ms),
                retention_bytes: setting_of(topic.settings.retention_bytes),
                segment_bytes: setting_of(topic.settings.segment_bytes),
                min_insync_replicas: min_insync_of(topic.settings.min_insync_replicas),
                shards: owners,
            },
        );
    }
    Metadata {
        topics,
        next_producer_id,
        cluster: Some(Arc::new(routes)),
    }
}

/// The byte rate replica `me` of partition `number` catches up at: while it is not in sync
/// and the partition moves (a reassignment's throttle, or a decommissioned replica's), the
/// smallest such rate.
fn move_throttle(
    map: &ClusterMap,
    topic: &MappedTopic,
    number: u32,
    partition: &MappedPartition,
    me: u32,
) -> Option<u64> {
    let in_sync = partition.state.as_ref().is_some_and(|state| {
        state
            .isr
            .iter()
            .any(|member| member.replica == ReplicaId(me))
    });
    if in_sync {
        return None;
    }
    move_throttle_of(map, topic, number, partition)
}

/// The byte rate of partition `number`'s move, if it moves with a throttle.
fn move_throttle_of(
    map: &ClusterMap,
    topic: &MappedTopic,
    number: u32,
    partition: &MappedPartition,
) -> Option<u64> {
    let reassigning = topic
        .reassigning
        .iter()
        .filter(|entry| entry.partition == number)
        .filter_map(|entry| entry.throttle_bytes_per_s);
    let decommissioning = partition
        .replicas
        .iter()
        .filter_map(|at| *map.decommissioned.get(&at.node)?);
    reassigning.chain(decommissioning).min()
}

/// Whether `me` serves a partition in `state`, and why not: it leads the current epoch
/// under its live session (its `fsync` acknowledgements then wait for every in-sync replica).
fn serving(state: &PartitionState, me: u32, session: Option<u64>) -> Serving {
    match role(state, ReplicaId(me), session.map(SessionId)) {
        Role::Leader { epoch } => Serving::Leader { epoch: epoch.0 },
        Role::Follower { leader, epoch } => {
            Serving::NotLeader(format!("led by node {leader} in epoch {}", epoch.0))
        }
        Role::Offline => Serving::NotLeader(match state.leader {
            Some((leader, _)) if leader == ReplicaId(me) => {
                "led by this node under an earlier session; waiting for the controller to \
                 elect anew"
                    .into()
            }
            _ => "no leader: every in-sync replica is gone".into(),
        }),
    }
}

/// A partition's live leader (a registered member) and its in-sync replicas, as `map` shows.
fn leader_and_isr(map: &ClusterMap, partition: &MappedPartition) -> (Option<u32>, Vec<u32>) {
    let leader = partition
        .state
        .as_ref()
        .and_then(|state| state.leader)
        .map(|(leader, _)| leader.0)
        .filter(|leader| map.members.contains_key(leader));
    let isr = partition
        .state
        .as_ref()
        .map(|state| state.isr.iter().map(|member| member.replica.0).collect())
        .unwrap_or_default();
    (leader, isr)
}

/// The members of `map` with the Kafka address each publishes (empty when none).
pub fn member_addresses(map: &ClusterMap) -> Vec<spate_proto::MemberAddress> {
    map.members
        .keys()
        .take(spate_proto::limits::CLUSTER_MEMBERS_MAX as usize)
        .map(|node| spate_proto::MemberAddress {
            node: *node,
            kafka: map.kafka.get(node).cloned().unwrap_or_default(),
            rack: map.racks.get(node).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Where the replicas of each of `partitions` partitions of topic `name` are, as `map` shows
/// (a partition the map does not show: no leader, no replicas).
pub fn placement_of(
    map: &ClusterMap,
    name: &str,
    partitions: usize,
) -> Vec<spate_proto::PartitionPlacement> {
    let max = spate_proto::limits::CLUSTER_PARTITION_REPLICAS_MAX as usize;
    let mapped = map.topics.get(name).and_then(Option::as_ref);
    (0..partitions)
        .map(|index| {
            let Some(partition) = mapped.and_then(|topic| topic.partitions.get(index)) else {
                return spate_proto::PartitionPlacement::default();
            };
            let (leader, mut isr) = leader_and_isr(map, partition);
            isr.truncate(max);
            spate_proto::PartitionPlacement {
                leader,
                epoch: partition.state.as_ref().map_or(0, |state| state.epoch.0),
                replicas: partition
                    .replicas
                    .iter()
                    .take(max)
                    .map(|at| at.node)
                    .collect(),
                isr,
            }
        })
        .collect()
}

/// Every partition's health as `map` shows it (`DescribeCluster`, `spate cluster status`):
/// offline without a leader or with one whose member is gone, under-replicated when led with
/// fewer in sync than assigned; the under-replicated listed first, then the offline, while
/// there is room (`CLUSTER_PARTITIONS_LISTED_MAX`).
pub fn health_of(map: &ClusterMap) -> spate_proto::PartitionHealth {
    let room = spate_proto::limits::CLUSTER_PARTITIONS_LISTED_MAX as usize;
    let mut health = spate_proto::PartitionHealth::default();
    let mut offline = Vec::new();
    for (name, topic) in &map.topics {
        let Some(topic) = topic else { continue };
        for (number, partition) in (0u32..).zip(&topic.partitions) {
            health.total += 1;
            let (leader, isr) = leader_and_isr(map, partition);
            let status = || spate_proto::PartitionStatus {
                topic: name.clone(),
                partition: number,
                leader,
                replicas: partition.replicas.iter().map(|at| at.node).collect(),
                isr: isr.clone(),
            };
            if leader.is_none() {
                health.offline += 1;
                if offline.len() < room {
                    offline.push(status());
                }
            } else if isr.len() < partition.replicas.len() {
                health.under_replicated += 1;
                if health.listed.len() < room {
                    health.listed.push(status());
                }
            }
        }
    }
    let left = room.saturating_sub(health.listed.len());
    health.listed.extend(offline.into_iter().take(left));
    health
}

/// The moves in progress as `map` shows them (`DescribeCluster`): the decommissioned nodes,
/// and the partitions with a reassignment or a replica on a decommissioned node, the first
/// `CLUSTER_PARTITIONS_LISTED_MAX` listed.
pub fn moves_of(map: &ClusterMap) -> spate_proto::MovesStatus {
    let room = spate_proto::limits::CLUSTER_PARTITIONS_LISTED_MAX as usize;
    let mut moves = spate_proto::MovesStatus {
        decommissioned: map.decommissioned.keys().copied().collect(),
        ..spate_proto::MovesStatus::default()
    };
    for (name, topic) in &map.topics {
        let Some(topic) = topic else { continue };
        for (number, partition) in (0u32..).zip(&topic.partitions) {
            let entry = topic
                .reassigning
                .iter()
                .find(|entry| entry.partition == number);
            let leaving = partition
                .replicas
                .iter()
                .any(|at| map.decommissioned.contains_key(&at.node));
            if entry.is_none() && !leaving {
                continue;
            }
            moves.moving += 1;
            if moves.listed.len() < room {
                moves.listed.push(spate_proto::MovingPartition {
                    topic: name.clone(),
                    partition: number,
                    replicas: partition.replicas.iter().map(|at| at.node).collect(),
                    target: entry.map(|entry| entry.target.clone()).unwrap_or_default(),
                    original: entry.map_or_else(
                        || partition.replicas.iter().map(|at| at.node).collect(),
                        |entry| entry.original.clone(),
                    ),
                    throttle: move_throttle_of(map, topic, number, partition),
                });
            }
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_core::replica::{IsrMember, LeaderEpoch, StorageId};
    use spate_proto::Setting;

    fn state(leader: Option<(u32, u64)>, isr: &[u32]) -> Option<PartitionState> {
        Some(PartitionState {
            leader: leader.map(|(node, session)| (ReplicaId(node), SessionId(session))),
            epoch: LeaderEpoch(2),
            isr: isr
                .iter()
                .map(|&node| IsrMember {
                    replica: ReplicaId(node),
                    storage: StorageId(u64::from(node)),
                })
                .collect(),
        })
    }

    fn at(node: u32, shard: u16) -> ReplicaPlacement {
        ReplicaPlacement { node, shard }
    }

    fn map() -> ClusterMap {
        let endpoints = |node: u32| vec![format!("n{node}:0"), format!("n{node}:1")];
        ClusterMap {
            revision: 9,
            members: [(1, endpoints(1)), (2, endpoints(2))].into(),
            kafka: BTreeMap::new(),
            racks: BTreeMap::new(),
            decommissioned: BTreeMap::new(),
            topics: [(
                "t".to_owned(),
                Some(MappedTopic {
                    id: format!("{:032x}", 5),
                    reassigning: Vec::new(),
                    settings: TopicSettings {
                        retention_ms: Some(-1),
                        segment_bytes: Some(1 << 20),
                        ..TopicSettings::default()
                    },
                    partitions: vec![
                        // Led by node 2 on its shard 1.
                        MappedPartition {
                            replicas: vec![at(2, 1)],
                            state: state(Some((2, 20)), &[2]),
                            revision: 0,
                        },
                        // Led by node 1 alone: served.
                        MappedPartition {
                            replicas: vec![at(1, 1)],
                            state: state(Some((1, 10)), &[1]),
                            revision: 0,
                        },
                        // Led by node 1 with a follower in sync: served.
                        MappedPartition {
                            replicas: vec![at(1, 0), at(2, 0)],
                            state: state(Some((1, 10)), &[1, 2]),
                            revision: 0,
                        },
                        // No state yet.
                        MappedPartition {
                            replicas: vec![at(1, 0)],
                            state: None,
                            revision: 0,
                        },
                        // Its leader (node 3) is not a member.
                        MappedPartition {
                            replicas: vec![at(3, 0), at(1, 1)],
                            state: state(Some((3, 30)), &[3, 1]),
                            revision: 0,
                        },
                    ],
                }),
            )]
            .into(),
            complete: true,
            cluster_id: Some(format!("{:032x}", 77)),
        }
    }

    #[test]
    fn partitions_route_to_their_leaders_shards_and_only_led_replicas_serve() {
        let metadata = metadata_from(&map(), 1, Some(10), 2, 7);
        let routes = metadata.cluster.as_ref().unwrap();
        assert_eq!(routes.shards, ["n1:0", "n1:1", "n2:0", "n2:1"]);
        assert_eq!(routes.first_local, Some(0));
        let topic = &metadata.topics["t"];
        assert_eq!(
            topic.shards,
            [
                ShardId(3),
                ShardId(1),
                ShardId(0),
                NO_LEADER_SHARD,
                NO_LEADER_SHARD
            ]
        );
        assert_eq!(topic.retention_ms, Setting::Unlimited);
        assert_eq!(topic.segment_bytes, Setting::Value(1 << 20));
        assert_eq!(topic.retention_bytes, Setting::Default);
        assert_eq!(metadata.next_producer_id, 7);
        let local = |partition: u32| routes.replica("t", partition);
        assert!(local(0).is_none());
        assert_eq!(local(1).unwrap().serving, Serving::Leader { epoch: 2 });
        assert_eq!(local(1).unwrap().shard, ShardId(1));
        assert_eq!(local(2).unwrap().serving, Serving::Leader { epoch: 2 });
        assert!(matches!(local(3).unwrap().serving, Serving::NotLeader(_)));
        assert!(
            matches!(local(4).unwrap().serving, Serving::NotLeader(ref why) if why.contains("node 3"))
        );
        // What it leads (and answers followers for), served to clients or not.
        let leads = |partition: u32| local(partition).unwrap().leads.clone();
        assert_eq!(leads(1).map(|l| (l.epoch, l.replicas)), Some((2, vec![1])));
        let with_follower = leads(2).unwrap();
        assert_eq!(with_follower.replicas, vec![1, 2]);
        assert_eq!(with_follower.isr.len(), 2);
        assert_eq!((leads(3), leads(4)), (None, None));
        assert_eq!(metadata.local_partitions(ShardId(1)).len(), 2);
        assert!(routes.local["t"]
            .values()
            .all(|local| local.follows.is_none()));
        // Led by node 2: node 1 follows it, fetching from node 2's shard of the partition.
        let mut led_by_2 = map();
        if let Some(Some(topic)) = led_by_2.topics.get_mut("t") {
            topic.partitions[2].state = state(Some((2, 20)), &[1, 2]);
        }
        let followed = metadata_from(&led_by_2, 1, Some(10), 2, 7);
        let local = followed.cluster.as_ref().unwrap().replica("t", 2).unwrap();
        assert_eq!(
            local.follows,
            Some(Follows {
                leader: 2,
                epoch: 2,
                endpoint: "n2:0".into()
            })
        );
        assert!(local.leads.is_none());
        // Under another session (or none: the lease in doubt) it serves nothing.
        for session in [Some(11), None] {
            let metadata = metadata_from(&map(), 1, session, 2, 7);
            let routes = metadata.cluster.unwrap();
            assert!(routes
                .local
                .values()
                .flat_map(HashMap::values)
                .all(
                    |local| matches!(local.serving, Serving::NotLeader(_)) && local.leads.is_none()
                ));
        }
        // A replica assigned to a shard this node no longer runs lives on the shard its
        // number wraps to (its files are the node's): opened and routed there.
        let mut fewer = map();
        fewer.members.insert(1, vec!["n1:0".into()]);
        let metadata = metadata_from(&fewer, 1, Some(10), 1, 7);
        let routes = metadata.cluster.as_ref().unwrap();
        assert_eq!(routes.replica("t", 1).unwrap().shard, ShardId(0));
        assert_eq!(
            routes.replica("t", 1).unwrap().serving,
            Serving::Leader { epoch: 2 }
        );
        assert_eq!(metadata.topics["t"].shards[1], ShardId(0));
    }
}
