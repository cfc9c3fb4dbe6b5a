//! The coordinator in a cluster (`--etcd`, feature `cluster`): the node's metadata follows the
//! cluster's map (docs/cluster.md, "Roles"), made again whenever the map or this node's
//! session changes, and admin requests change the cluster's keys in etcd instead of the
//! node's metadata file — topics are created through the controller, deleted and altered by
//! compare-and-swap, producer ids handed out from the cluster's counter. Each answer waits
//! until this node's shards applied the change (bounded), so a topic that was created can be
//! used at once through this node.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::channels::local_channel::LocalSender;
use spate_proto::{
    AllocateProducerIdsResponse, AlterTopicResponse, CreateTopicRequest, CreateTopicResponse,
    DeleteTopicResponse, ErrorCode, ErrorResponse, MovePartitionsResponse, PartitionMove, Request,
    Response, Setting, OFFSETS_PARTITIONS, OFFSETS_TOPIC,
};

use super::{auto_create, auto_create_off, validate_create, Coordinator, Work};
use crate::assignment::{metadata_from, ClusterMap};
use crate::cluster::{ClusterQuery, Refused};
use crate::metadata::ClusterRoutes;
use crate::records::{
    min_insync_of, min_insync_record, setting_of, setting_record, TopicRequestRecord,
    TopicSettings, RECORD_VERSION,
};
use crate::shard::ReplicaOf;
use crate::shard::Shard;

/// How long a node waits for the controller to create a topic.
const CREATE_WAIT: Duration = Duration::from_secs(10);

/// How long an answer waits for this node's map to show a change it made (and, for a new
/// topic, for its partitions' first states).
const MAP_WAIT: Duration = Duration::from_secs(10);

/// The offsets topic of a cluster: `OFFSETS_PARTITIONS` partitions, no retention (a
/// coordinator compacts it), small segments, `--offsets-replication-factor` copies (0: the
/// smaller of 3 and the members registered now).
fn offsets_topic(config: &crate::config::NodeConfig, query: &ClusterQuery) -> CreateTopicRequest {
    let replication_factor = match config.offsets_replication_factor {
        0 => {
            let members = query.map.borrow().members.len();
            u16::try_from(members.clamp(1, 3)).unwrap_or(1)
        }
        factor => factor,
    };
    CreateTopicRequest {
        legacy_layout: false,
        topic: OFFSETS_TOPIC.to_owned(),
        partitions: OFFSETS_PARTITIONS,
        retention_ms: Setting::Unlimited,
        retention_bytes: Setting::Unlimited,
        segment_bytes: Setting::Value(crate::shard::groups::OFFSETS_SEGMENT_BYTES),
        replication_factor,
        min_insync_replicas: Setting::Default,
    }
}

/// How often the coordinator looks whether the node joined its cluster yet.
const JOIN_CHECK: Duration = Duration::from_millis(20);

/// Once the node joined its cluster, asks the coordinator to remake the metadata whenever the
/// cluster's map or the node's session changes.
pub(super) async fn follow_cluster(shard: Rc<Shard>, work: Rc<LocalSender<Work>>) {
    let query = loop {
        if let Some(query) = shard.cluster.query() {
            break query.clone();
        }
        if shard.shutdown.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        glommio::timer::sleep(JOIN_CHECK).await;
    };
    let mut map = query.map.clone();
    let mut session = query.session.clone();
    loop {
        if work.send(Work::Remap).await.is_err() {
            return;
        }
        let changed = future::or(async { map.changed().await.is_ok() }, async {
            session.changed().await.is_ok()
        })
        .await;
        if !changed {
            return;
        }
    }
}

/// Removes the replica directories of this cluster (their `replica-of` names its id) of
/// partitions this node does not hold; directories of another cluster or without the file (a
/// single node's, from before it joined) are left alone.
fn remove_unheld(data_dir: &std::path::Path, routes: &ClusterRoutes) {
    let Ok(entries) = std::fs::read_dir(data_dir.join("topics")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours =
            matches!(ReplicaOf::read(&path), Ok(Some(of)) if of.cluster == routes.cluster_id);
        if !ours {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let held = name.rsplit_once('-').is_some_and(|(topic, partition)| {
            partition
                .parse::<u32>()
                .is_ok_and(|partition| routes.replica(topic, partition).is_some())
        });
        if held {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed a replica this node no longer holds");
            }
            Err(error) => {
                tracing::error!(dir = %path.display(), "cannot remove a replica this node no longer holds: {error}");
            }
        }
    }
}

impl Coordinator {
    /// Makes the metadata from the newest map and session, and publishes it if it changed.
    pub(super) async fn remap(&self) {
        let Some(query) = self.shard.cluster.query() else {
            return;
        };
        let Some(me) = self.shard.config.node_id else {
            return;
        };
        // Made and published in turn: a remap that started later never publishes an older
        // map over a newer one.
        let Ok(_turn) = self.publishing.acquire_permit(1).await else {
            return;
        };
        let map = query.map.borrow().clone();
        let session = *query.session.borrow();
        let shards = u16::try_from(self.shard.endpoints.len()).unwrap_or(u16::MAX);
        let current = self.shard.metadata();
        let metadata = metadata_from(&map, me, session, shards, current.next_producer_id);
        if metadata == *current {
            return;
        }
        let routes = metadata.cluster.clone();
        self.publish_in_turn(metadata).await;
        // Every shard closed what it no longer holds: replicas left on disk from before (a
        // topic deleted while this node was away) go too.
        if let Some(routes) = routes.filter(|routes| routes.complete) {
            let dir = self.shard.config.data_dir.clone();
            glommio::executor()
                .spawn_blocking(move || remove_unheld(&dir, &routes))
                .await;
        }
    }

    /// Waits (up to [`MAP_WAIT`]) until this node's map is at `revision` or later and `done`
    /// holds for it, then remakes the metadata; whether it got there.
    async fn await_map(
        &self,
        query: &ClusterQuery,
        revision: i64,
        done: impl Fn(&ClusterMap) -> bool,
    ) -> bool {
        let deadline = Instant::now() + MAP_WAIT;
        let mut receiver = query.map.clone();
        let reached = loop {
            let ready = {
                let map = receiver.borrow_and_update();
                map.revision >= revision && done(&map)
            };
            if ready {
                break true;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break false;
            }
            let changed = future::or(async { receiver.changed().await.is_ok() }, async {
                glommio::timer::sleep(remaining).await;
                true
            })
            .await;
            if !changed {
                break false;
            }
        };
        self.remap().await;
        reached
    }

    /// An admin request in a cluster.
    pub(super) async fn handle_cluster(
        &self,
        query: &ClusterQuery,
        api_key: u16,
        request: Request,
    ) -> Response {
        let answer = match request {
            Request::CreateTopic(create) => self.create(query, create, false).await,
            Request::AutoCreateTopic(auto) => {
                if let Some(topic) = self.shard.metadata().topics.get(&auto.topic) {
                    return Response::AutoCreateTopic(CreateTopicResponse {
                        partitions: u32::try_from(topic.shards.len()).unwrap_or(u32::MAX),
                        topic: auto.topic,
                    });
                }
                if auto.topic == OFFSETS_TOPIC {
                    // Asked by this node's own shards at the first group request (clients
                    // cannot name the internal topic).
                    self.create(query, offsets_topic(&self.shard.config, query), true)
                        .await
                } else if self.shard.config.auto_create_topics {
                    let create = auto_create(&self.shard.config, auto.topic);
                    self.create(query, create, true).await
                } else {
                    Err(auto_create_off(&auto.topic))
                }
            }
            Request::DeleteTopic(delete) => match query.delete_topic(delete.topic.clone()).await {
                Ok(revision) => {
                    let name = delete.topic.clone();
                    self.await_map(query, revision, move |map| !map.topics.contains_key(&name))
                        .await;
                    Ok(Response::DeleteTopic(DeleteTopicResponse {
                        topic: delete.topic,
                    }))
                }
                Err(refused) => Err(refused),
            },
            Request::AlterTopic(alter) => {
                let partitions = self
                    .shard
                    .metadata()
                    .topics
                    .get(&alter.topic)
                    .map_or(1, |topic| u32::try_from(topic.shards.len()).unwrap_or(1));
                let checked = alter.clone();
                let change = move |settings: TopicSettings| {
                    let check = CreateTopicRequest {
                        legacy_layout: false,
                        topic: checked.topic.clone(),
                        partitions,
                        retention_ms: checked
                            .retention_ms
                            .unwrap_or(setting_of(settings.retention_ms)),
                        retention_bytes: checked
                            .retention_bytes
                            .unwrap_or(setting_of(settings.retention_bytes)),
                        segment_bytes: checked
                            .segment_bytes
                            .unwrap_or(setting_of(settings.segment_bytes)),
                        replication_factor: 0,
                        min_insync_replicas: checked
                            .min_insync_replicas
                            .unwrap_or(min_insync_of(settings.min_insync_replicas)),
                    };
                    validate_create(&check)?;
                    let changed = TopicSettings {
                        retention_ms: setting_record(check.retention_ms),
                        retention_bytes: setting_record(check.retention_bytes),
                        segment_bytes: setting_record(check.segment_bytes),
                        min_insync_replicas: min_insync_record(check.min_insync_replicas),
                    };
                    // Checked only, or nothing changes: nothing is written (the answer shows
                    // the result).
                    Ok((!checked.validate_only && changed != settings).then_some(changed))
                };
                match query.alter_topic(alter.topic.clone(), change).await {
                    Ok((settings, revision)) => {
                        if revision > 0 {
                            self.await_map(query, revision, |_| true).await;
                        }
                        let (retention_ms, retention_bytes, segment_bytes) = if alter.validate_only
                        {
                            (
                                alter
                                    .retention_ms
                                    .unwrap_or(setting_of(settings.retention_ms)),
                                alter
                                    .retention_bytes
                                    .unwrap_or(setting_of(settings.retention_bytes)),
                                alter
                                    .segment_bytes
                                    .unwrap_or(setting_of(settings.segment_bytes)),
                            )
                        } else {
                            (
                                setting_of(settings.retention_ms),
                                setting_of(settings.retention_bytes),
                                setting_of(settings.segment_bytes),
                            )
                        };
                        Ok(Response::AlterTopic(AlterTopicResponse {
                            topic: alter.topic,
                            retention_ms,
                            retention_bytes,
                            segment_bytes,
                        }))
                    }
                    Err(refused) => Err(refused),
                }
            }
            Request::AllocateProducerIds(allocate) => query
                .allocate_producer_ids(allocate.count)
                .await
                .map(|first| {
                    Response::AllocateProducerIds(AllocateProducerIdsResponse {
                        first,
                        count: allocate.count,
                    })
                }),
            Request::MovePartitions(request) => self
                .move_partitions(query, request.change)
                .await
                .map(Response::MovePartitions),
            _ => Err((ErrorCode::InvalidRequest, "not an admin request".into())),
        };
        answer.unwrap_or_else(|(code, message)| Response::Error {
            api_key,
            error: ErrorResponse::new(code, message),
        })
    }

    /// Creates a topic through the controller and waits until this node's map shows it with
    /// every partition's first state (bounded); `auto`: answered as `AutoCreateTopic`, and a
    /// topic another client created meanwhile is no error.
    async fn create(
        &self,
        query: &ClusterQuery,
        create: CreateTopicRequest,
        auto: bool,
    ) -> Result<Response, Refused> {
        validate_create(&create)?;
        let factor = match create.replication_factor {
            0 => self.shard.config.default_replication_factor,
            factor => factor,
        };
        let id = crate::identity::random_id_hex128().map_err(|error| {
            (
                ErrorCode::Internal,
                format!("cannot draw a topic id: {error}"),
            )
        })?;
        let record = TopicRequestRecord {
            v: RECORD_VERSION,
            id,
            partitions: create.partitions,
            replication_factor: u32::from(factor),
            settings: TopicSettings {
                retention_ms: setting_record(create.retention_ms),
                retention_bytes: setting_record(create.retention_bytes),
                segment_bytes: setting_record(create.segment_bytes),
                min_insync_replicas: min_insync_record(create.min_insync_replicas),
            },
            refused: None,
        };
        let name = create.topic.clone();
        let revision = match query.create_topic(name.clone(), record, CREATE_WAIT).await {
            Ok((_, revision)) => revision,
            Err((ErrorCode::TopicAlreadyExists, _)) if auto => 0,
            Err(refused) => return Err(refused),
        };
        let shown = name.clone();
        let created = self
            .await_map(query, revision, move |map| {
                matches!(map.topics.get(&shown), Some(Some(topic))
                    if topic.partitions.iter().all(|partition| partition.state.is_some()))
            })
            .await;
        if !created {
            tracing::warn!(topic = %name, "created, but this node's map did not show every partition led in time");
        }
        let partitions = self
            .shard
            .metadata()
            .topics
            .get(&name)
            .map_or(create.partitions, |topic| {
                u32::try_from(topic.shards.len()).unwrap_or(u32::MAX)
            });
        let response = CreateTopicResponse {
            topic: name,
            partitions,
        };
        tracing::info!(topic = %response.topic, partitions, replication_factor = factor, "created a topic through the controller");
        Ok(if auto {
            Response::AutoCreateTopic(response)
        } else {
            Response::CreateTopic(response)
        })
    }
}

/// The checks of a reassignment's target `replicas` against `map`: not empty, no node twice,
/// at most `CLUSTER_PARTITION_REPLICAS_MAX`, every node a registered member that is not
/// decommissioned.
fn check_target(map: &ClusterMap, replicas: &[u32]) -> Result<(), Refused> {
    let invalid = |message: String| Err((ErrorCode::InvalidReplicaAssignment, message));
    if replicas.is_empty() {
        return invalid("a partition needs at least one replica".into());
    }
    if replicas.len() > spate_proto::limits::CLUSTER_PARTITION_REPLICAS_MAX as usize {
        return invalid(format!(
            "{} replicas; a partition has at most {}",
            replicas.len(),
            spate_proto::limits::CLUSTER_PARTITION_REPLICAS_MAX
        ));
    }
    for (index, node) in replicas.iter().enumerate() {
        if replicas[..index].contains(node) {
            return invalid(format!("node {node} is named twice"));
        }
        if !map.members.contains_key(node) {
            return invalid(format!("node {node} is not a member of the cluster"));
        }
        if map.decommissioned.contains_key(node) {
            return invalid(format!("node {node} is decommissioned"));
        }
    }
    Ok(())
}

/// A throttle is at least one byte per second (0 would let a replica catch up never).
fn check_throttle(throttle: Option<u64>) -> Result<(), Refused> {
    if throttle == Some(0) {
        return Err((
            ErrorCode::InvalidRequest,
            "a throttle of 0 bytes/s would never let a replica catch up; give at least 1".into(),
        ));
    }
    Ok(())
}

/// A topic record with reassignments must stay within `TOPIC_RECORD_SIZE_MAX` also once the
/// controller added every target's new replicas (each written as a placement of at most
/// `PLACEMENT_JSON_MAX` bytes), or the controller could never write its first step.
fn check_record_size(record: &crate::records::TopicRecord) -> Result<(), Refused> {
    const PLACEMENT_JSON_MAX: usize = r#"{"node":4294967295,"shard":65535},"#.len();
    let added: usize = record
        .reassigning
        .iter()
        .map(|entry| {
            let current = usize::try_from(entry.partition)
                .ok()
                .and_then(|index| record.replicas.get(index));
            entry
                .target
                .iter()
                .filter(|node| {
                    current.is_none_or(|replicas| !replicas.iter().any(|at| at.node == **node))
                })
                .count()
        })
        .sum();
    let size = crate::records::json(record).len() + added * PLACEMENT_JSON_MAX;
    if size > crate::records::TOPIC_RECORD_SIZE_MAX {
        return Err((
            ErrorCode::InvalidRequest,
            format!(
                "the topic's record would grow to about {size} bytes while its partitions move, \
                 more than the {} a topic record may have: move fewer partitions at once",
                crate::records::TOPIC_RECORD_SIZE_MAX
            ),
        ));
    }
    Ok(())
}

/// The partitions a move names: `partitions` of `topic` as `map` shows it (all of them when
/// none are named).
fn named_partitions(
    map: &ClusterMap,
    topic: &str,
    partitions: &[u32],
) -> Result<Vec<u32>, Refused> {
    let Some(Some(mapped)) = map.topics.get(topic) else {
        return Err((ErrorCode::UnknownTopic, format!("unknown topic {topic:?}")));
    };
    let count = u32::try_from(mapped.partitions.len()).unwrap_or(u32::MAX);
    if partitions.is_empty() {
        return Ok((0..count).collect());
    }
    if let Some(missing) = partitions.iter().find(|number| **number >= count) {
        return Err((
            ErrorCode::UnknownPartition,
            format!("topic {topic:?} has {count} partitions, not {missing}"),
        ));
    }
    let mut named = partitions.to_vec();
    named.sort_unstable();
    named.dedup();
    Ok(named)
}

/// The answer of a move: the outcomes, those left as they were first.
fn move_answer(mut results: Vec<spate_proto::MoveResult>) -> MovePartitionsResponse {
    let changed = results
        .iter()
        .filter(|result| result.error.is_none())
        .count();
    let unchanged = results.len() - changed;
    results.sort_by_key(|result| result.error.is_none());
    MovePartitionsResponse {
        changed: u32::try_from(changed).unwrap_or(u32::MAX),
        unchanged: u32::try_from(unchanged).unwrap_or(u32::MAX),
        results,
    }
    .within_limits()
}

impl Coordinator {
    /// `MovePartitions` in a cluster (docs/cluster.md, "Moving partitions"): a reassignment
    /// or its cancellation written into the topic's record, a preferred-leader election by
    /// compare-and-swap on each partition's key, a decommission mark written or removed; the
    /// answer waits until this node's map shows the change.
    async fn move_partitions(
        &self,
        query: &ClusterQuery,
        change: PartitionMove,
    ) -> Result<MovePartitionsResponse, Refused> {
        let map = query.map.borrow().clone();
        let (results, revision) = match change {
            PartitionMove::Reassign {
                topic,
                partitions,
                replicas,
                throttle,
            } => {
                check_target(&map, &replicas)?;
                check_throttle(throttle)?;
                let named = named_partitions(&map, &topic, &partitions)?;
                let name = topic.clone();
                query
                    .change_topic_record(topic, move |record| {
                        let changed = reassign_in(record, &name, &named, Some(&replicas), throttle);
                        check_record_size(record)?;
                        Ok(changed)
                    })
                    .await?
            }
            PartitionMove::Cancel { topic, partitions } => {
                let named = named_partitions(&map, &topic, &partitions)?;
                let name = topic.clone();
                query
                    .change_topic_record(topic, move |record| {
                        Ok(reassign_in(record, &name, &named, None, None))
                    })
                    .await?
            }
            PartitionMove::ElectPreferred { topic, partitions } => {
                let named: Vec<(String, u32)> = match topic {
                    Some(topic) => named_partitions(&map, &topic, &partitions)?
                        .into_iter()
                        .map(|number| (topic.clone(), number))
                        .collect(),
                    None => map
                        .topics
                        .iter()
                        .filter_map(|(name, topic)| Some((name, topic.as_ref()?)))
                        .flat_map(|(name, topic)| {
                            (0u32..)
                                .zip(&topic.partitions)
                                .map(move |(number, _)| (name.clone(), number))
                        })
                        .collect(),
                };
                let (mut results, revision) = query.elect_preferred(named).await?;
                if partitions.is_empty() {
                    // Asked for every partition: those led as preferred already are no news.
                    results.retain(|result| result.error != Some(ErrorCode::ElectionNotNeeded));
                }
                (results, revision)
            }
            PartitionMove::Decommission { node, throttle } => {
                check_throttle(throttle)?;
                let holds = |map: &ClusterMap| -> Vec<spate_proto::MoveResult> {
                    map.topics
                        .iter()
                        .filter_map(|(name, topic)| Some((name, topic.as_ref()?)))
                        .flat_map(|(name, topic)| {
                            (0u32..)
                                .zip(&topic.partitions)
                                .filter(move |(_, partition)| {
                                    partition.replicas.iter().any(|at| at.node == node)
                                })
                                .map(move |(number, _)| spate_proto::MoveResult {
                                    topic: name.clone(),
                                    partition: number,
                                    error: None,
                                    message: format!("moves off node {node}"),
                                })
                        })
                        .collect()
                };
                let held = holds(&map);
                if !map.members.contains_key(&node) && held.is_empty() {
                    return Err((
                        ErrorCode::InvalidRequest,
                        format!("node {node} is neither a member nor holds a replica"),
                    ));
                }
                let revision = query.decommission(node, true, throttle).await?;
                tracing::info!(
                    node,
                    partitions = held.len(),
                    "decommissioned a node: its replicas move to other members"
                );
                (held, revision)
            }
            PartitionMove::Recommission { node } => {
                let revision = query.decommission(node, false, None).await?;
                tracing::info!(node, "took a decommissioned node back");
                (Vec::new(), revision)
            }
        };
        if revision > 0 {
            self.await_map(query, revision, |_| true).await;
        }
        Ok(move_answer(results))
    }
}

/// Writes into `record` (of topic `topic`) the reassignment of `partitions` to `target`
/// (with `throttle`), or their cancellation (`target` `None`: back to the replicas before the
/// reassignment); whether anything changed, and the outcome of each partition.
fn reassign_in(
    record: &mut crate::records::TopicRecord,
    topic: &str,
    partitions: &[u32],
    target: Option<&[u32]>,
    throttle: Option<u64>,
) -> (bool, Vec<spate_proto::MoveResult>) {
    let mut changed = false;
    let mut results = Vec::with_capacity(partitions.len());
    for &number in partitions {
        let outcome = |error: Option<ErrorCode>, message: String| spate_proto::MoveResult {
            topic: topic.to_owned(),
            partition: number,
            error,
            message,
        };
        let Some(current) = usize::try_from(number)
            .ok()
            .and_then(|index| record.replicas.get(index))
        else {
            results.push(outcome(
                Some(ErrorCode::UnknownPartition),
                format!("{topic}/{number} does not exist"),
            ));
            continue;
        };
        let current: Vec<u32> = current.iter().map(|at| at.node).collect();
        let entry = record
            .reassigning
            .iter()
            .position(|entry| entry.partition == number);
        match (target, entry) {
            (None, None) => results.push(outcome(
                Some(ErrorCode::NoReassignmentInProgress),
                format!("{topic}/{number} is not being reassigned"),
            )),
            (None, Some(index)) => {
                let entry = &mut record.reassigning[index];
                entry.target = entry.original.clone();
                entry.throttle_bytes_per_s = None;
                changed = true;
                results.push(outcome(None, format!("moves back to {:?}", entry.original)));
            }
            (Some(target), None) if target == current.as_slice() => results.push(outcome(
                None,
                format!("its replicas are {target:?} already"),
            )),
            (Some(target), None) => {
                record.reassigning.push(crate::records::ReassignmentRecord {
                    partition: number,
                    target: target.to_vec(),
                    original: current.clone(),
                    throttle_bytes_per_s: throttle,
                });
                changed = true;
                results.push(outcome(
                    None,
                    format!("moves from {current:?} to {target:?}"),
                ));
            }
            (Some(target), Some(index)) => {
                let entry = &mut record.reassigning[index];
                entry.target = target.to_vec();
                entry.throttle_bytes_per_s = throttle;
                changed = true;
                results.push(outcome(
                    None,
                    format!("now moves from {current:?} to {target:?}"),
                ));
            }
        }
    }
    record.reassigning.sort_by_key(|entry| entry.partition);
    (changed, results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ReplicaPlacement, TopicRecord, TopicSettings};

    fn record(partitions: &[&[u32]]) -> TopicRecord {
        TopicRecord {
            v: RECORD_VERSION,
            id: format!("{:032x}", 1),
            partitions: u32::try_from(partitions.len()).unwrap(),
            replication_factor: 2,
            replicas: partitions
                .iter()
                .map(|nodes| {
                    nodes
                        .iter()
                        .map(|&node| ReplicaPlacement { node, shard: 0 })
                        .collect()
                })
                .collect(),
            settings: TopicSettings::default(),
            reassigning: Vec::new(),
        }
    }

    /// A reassignment records its target and the replicas before it; a second one replaces
    /// the target and keeps them; a cancellation moves back to them; cancelling what does
    /// not move, or moving a partition to where it is, changes nothing.
    #[test]
    fn reassignments_are_written_replaced_and_cancelled_in_the_topic_record() {
        let mut topic = record(&[&[1, 2], &[2, 3]]);
        let (changed, results) = reassign_in(&mut topic, "t", &[0], Some(&[3, 4]), Some(9));
        assert!(changed && results[0].error.is_none());
        assert_eq!(topic.reassigning[0].target, [3, 4]);
        assert_eq!(topic.reassigning[0].original, [1, 2]);
        assert_eq!(topic.reassigning[0].throttle_bytes_per_s, Some(9));
        let (changed, _) = reassign_in(&mut topic, "t", &[0], Some(&[4]), None);
        assert!(changed);
        assert_eq!(topic.reassigning[0].target, [4]);
        assert_eq!(topic.reassigning[0].original, [1, 2]);
        let (changed, _) = reassign_in(&mut topic, "t", &[0], None, None);
        assert!(changed);
        assert_eq!(topic.reassigning[0].target, [1, 2]);
        let (changed, results) = reassign_in(&mut topic, "t", &[1], None, None);
        assert!(!changed);
        assert_eq!(results[0].error, Some(ErrorCode::NoReassignmentInProgress));
        let (changed, results) = reassign_in(&mut topic, "t", &[1], Some(&[2, 3]), None);
        assert!(!changed && results[0].error.is_none());
        let (changed, results) = reassign_in(&mut topic, "t", &[7], Some(&[2]), None);
        assert!(!changed);
        assert_eq!(results[0].error, Some(ErrorCode::UnknownPartition));
    }

    /// A throttle of 0 is refused; a record that would outgrow its limit once the targets'
    /// replicas are added is refused before it is written.
    #[test]
    fn throttles_and_record_sizes_are_checked() {
        assert!(check_throttle(Some(0)).is_err());
        assert!(check_throttle(Some(1)).is_ok() && check_throttle(None).is_ok());
        let nodes: Vec<u32> = (1..=64).collect();
        let partitions: Vec<&[u32]> = vec![&[1]; 10_000];
        let mut topic = record(&partitions);
        assert!(check_record_size(&topic).is_ok());
        let all: Vec<u32> = (0..10_000).collect();
        reassign_in(&mut topic, "t", &all, Some(&nodes), None);
        let refused = check_record_size(&topic).unwrap_err();
        assert_eq!(refused.0, ErrorCode::InvalidRequest);
        assert!(refused.1.contains("move fewer partitions"), "{}", refused.1);
    }
}
