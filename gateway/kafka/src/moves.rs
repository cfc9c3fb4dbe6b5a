//! Kafka's partition-moving admin APIs as the node's `MovePartitions` and `DescribeCluster`
//! (docs/kafka.md, docs/cluster.md "Moving partitions"), pure: ElectLeaders (preferred
//! elections; unclean ones are refused, Spate never elects outside the ISR),
//! AlterPartitionReassignments (a reassignment per partition, or its cancellation) and
//! ListPartitionReassignments (the moves the node lists: the first
//! `CLUSTER_PARTITIONS_LISTED_MAX`). The shell (`gateway/server/src/kafka_admin.rs`) sends the
//! node requests these functions make and hands the answers back.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use spate_proto::limits::CLUSTER_PARTITIONS_LISTED_MAX;
use spate_proto::{ErrorResponse, MoveResult, MovesStatus, PartitionMove};

use crate::errors::kafka_error;

/// Kafka's election types: preferred (0) and unclean (1).
const ELECTION_PREFERRED: i8 = 0;

/// Partitions one node request names: its answer lists the outcome of each.
const PARTITIONS_PER_MOVE: usize = CLUSTER_PARTITIONS_LISTED_MAX as usize;

/// The outcome of one partition: `None` when it changed.
pub type Outcome = (String, i32, Option<(ResponseError, String)>);

/// What a Kafka request becomes: the node requests to send, and the outcomes already known
/// (partitions refused as they are).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Each node request with the partitions it names (for their outcome when the whole
    /// request is refused).
    pub moves: Vec<(PartitionMove, Vec<(String, i32)>)>,
    pub known: Vec<Outcome>,
}

/// The outcomes of a node request: the node's answer for each partition it lists (the
/// partitions it does not list changed), or its refusal for every partition.
pub fn outcomes(
    named: &[(String, i32)],
    answer: Result<Vec<MoveResult>, ErrorResponse>,
) -> Vec<Outcome> {
    if named.is_empty() {
        // Every partition was asked for: the outcomes are the node's list.
        return answer
            .unwrap_or_default()
            .into_iter()
            .filter_map(|result| {
                let partition = i32::try_from(result.partition).ok()?;
                let error = result.error.map(|code| (kafka_error(code), result.message));
                Some((result.topic, partition, error))
            })
            .collect();
    }
    match answer {
        Err(refused) => named
            .iter()
            .map(|(topic, partition)| {
                let error = (kafka_error(refused.code), refused.message.clone());
                (topic.clone(), *partition, Some(error))
            })
            .collect(),
        Ok(results) => {
            let mut listed: BTreeMap<(String, i32), Option<(ResponseError, String)>> = results
                .into_iter()
                .filter_map(|result| {
                    let partition = i32::try_from(result.partition).ok()?;
                    let error = result.error.map(|code| (kafka_error(code), result.message));
                    Some(((result.topic, partition), error))
                })
                .collect();
            named
                .iter()
                .map(|(topic, partition)| {
                    let error = listed
                        .remove(&(topic.clone(), *partition))
                        .unwrap_or_default();
                    (topic.clone(), *partition, error)
                })
                .collect()
        }
    }
}

/// `items` grouped by topic, the topics in order of first mention.
fn by_topic<T>(items: impl IntoIterator<Item = (String, T)>) -> Vec<(String, Vec<T>)> {
    let mut topics: Vec<(String, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match topics.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, items)) => items.push(item),
            None => topics.push((topic, vec![item])),
        }
    }
    topics
}

fn refused(topic: &str, partition: i32, error: ResponseError, message: String) -> Outcome {
    (topic.to_owned(), partition, Some((error, message)))
}

/// ElectLeaders: per topic, the named partitions in node requests of at most
/// [`PARTITIONS_PER_MOVE`]; every partition of every topic when none are named (then only the
/// elections made, or refused, are listed). An unclean election is refused: Spate elects only
/// from the in-sync replicas.
pub fn elect_plan(request: &ElectLeadersRequest) -> Result<Plan, (ResponseError, String)> {
    let unclean = request.election_type != ELECTION_PREFERRED;
    let Some(topics) = &request.topic_partitions else {
        if unclean {
            return Err((
                ResponseError::InvalidRequest,
                "unclean leader election is off in Spate: a leader is elected only from the \
                 in-sync replicas"
                    .into(),
            ));
        }
        return Ok(Plan {
            moves: vec![(
                PartitionMove::ElectPreferred {
                    topic: None,
                    partitions: Vec::new(),
                },
                Vec::new(),
            )],
            known: Vec::new(),
        });
    };
    let mut plan = Plan::default();
    for topic in topics {
        let name = topic.topic.0.to_string();
        let mut valid = Vec::new();
        for &partition in &topic.partitions {
            if unclean {
                plan.known.push(refused(
                    &name,
                    partition,
                    ResponseError::EligibleLeadersNotAvailable,
                    "unclean leader election is off in Spate: a leader is elected only from \
                     the in-sync replicas"
                        .into(),
                ));
            } else {
                match u32::try_from(partition) {
                    Ok(number) => valid.push(number),
                    Err(_) => plan.known.push(refused(
                        &name,
                        partition,
                        ResponseError::UnknownTopicOrPartition,
                        format!("{name}/{partition} is not a partition"),
                    )),
                }
            }
        }
        valid.sort_unstable();
        valid.dedup();
        for chunk in valid.chunks(PARTITIONS_PER_MOVE) {
            let named = chunk
                .iter()
                .map(|number| (name.clone(), i32::try_from(*number).unwrap_or(i32::MAX)))
                .collect();
            plan.moves.push((
                PartitionMove::ElectPreferred {
                    topic: Some(name.clone()),
                    partitions: chunk.to_vec(),
                },
                named,
            ));
        }
    }
    Ok(plan)
}

/// The ElectLeaders answer from the outcomes, grouped by topic (in order of first mention).
/// `refused`: the error of the whole request (it has no message field).
pub fn elect_response(
    outcomes: Vec<Outcome>,
    refused: Option<ResponseError>,
) -> ElectLeadersResponse {
    let mut answer = ElectLeadersResponse::default();
    if let Some(error) = refused {
        return answer.with_error_code(error.code());
    }
    let topics = by_topic(outcomes.into_iter().map(|(topic, partition, error)| {
        let result = match error {
            None => PartitionResult::default().with_partition_id(partition),
            Some((error, message)) => PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        };
        (topic, result)
    }));
    answer.replica_election_results = topics
        .into_iter()
        .map(|(topic, results)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(results)
        })
        .collect();
    answer
}

/// AlterPartitionReassignments: per topic, partitions with the same new replicas go in one
/// node request (a reassignment, or a cancellation for null replicas), at most
/// [`PARTITIONS_PER_MOVE`] each.
pub fn alter_plan(request: &AlterPartitionReassignmentsRequest) -> Plan {
    let mut plan = Plan::default();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        // Target (None: cancel) → partitions, in order of first mention.
        let mut groups: Vec<(Option<Vec<u32>>, Vec<u32>)> = Vec::new();
        for partition in &topic.partitions {
            let Ok(number) = u32::try_from(partition.partition_index) else {
                plan.known.push(refused(
                    &name,
                    partition.partition_index,
                    ResponseError::UnknownTopicOrPartition,
                    format!("{name}/{} is not a partition", partition.partition_index),
                ));
                continue;
            };
            let target = match &partition.replicas {
                None => None,
                Some(replicas) => {
                    let nodes: Option<Vec<u32>> = replicas
                        .iter()
                        .map(|broker| u32::try_from(broker.0).ok())
                        .collect();
                    let Some(nodes) = nodes else {
                        plan.known.push(refused(
                            &name,
                            partition.partition_index,
                            ResponseError::InvalidReplicaAssignment,
                            "a broker id is negative".into(),
                        ));
                        continue;
                    };
                    Some(nodes)
                }
            };
            match groups.iter_mut().find(|(wanted, _)| *wanted == target) {
                Some((_, numbers)) => numbers.push(number),
                None => groups.push((target, vec![number])),
            }
        }
        for (target, numbers) in groups {
            for chunk in numbers.chunks(PARTITIONS_PER_MOVE) {
                let named = chunk
                    .iter()
                    .map(|number| (name.clone(), i32::try_from(*number).unwrap_or(i32::MAX)))
                    .collect();
                let change = match &target {
                    None => PartitionMove::Cancel {
                        topic: name.clone(),
                        partitions: chunk.to_vec(),
                    },
                    Some(replicas) => PartitionMove::Reassign {
                        topic: name.clone(),
                        partitions: chunk.to_vec(),
                        replicas: replicas.clone(),
                        throttle: None,
                    },
                };
                plan.moves.push((change, named));
            }
        }
    }
    plan
}

/// The AlterPartitionReassignments answer from the outcomes, grouped by topic.
pub fn alter_response(outcomes: Vec<Outcome>) -> AlterPartitionReassignmentsResponse {
    let topics = by_topic(outcomes.into_iter().map(|(topic, partition, error)| {
        let result = match error {
            None => ReassignablePartitionResponse::default().with_partition_index(partition),
            Some((error, message)) => ReassignablePartitionResponse::default()
                .with_partition_index(partition)
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        };
        (topic, result)
    }));
    AlterPartitionReassignmentsResponse::default().with_responses(
        topics
            .into_iter()
            .map(|(topic, partitions)| {
                ReassignableTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

/// ListPartitionReassignments from the node's moves: each listed move of the topics asked
/// (all when none), as Kafka shows a reassignment — the replicas before and after together,
/// the ones being added and the ones being removed (a decommission's: its replicas on
/// decommissioned nodes). The node lists the first `CLUSTER_PARTITIONS_LISTED_MAX` moves.
pub fn list_response(
    request: &ListPartitionReassignmentsRequest,
    moves: &MovesStatus,
) -> ListPartitionReassignmentsResponse {
    let asked = |topic: &str, partition: u32| -> bool {
        let Some(topics) = &request.topics else {
            return true;
        };
        topics.iter().any(|asked| {
            *asked.name.0 == *topic
                && asked
                    .partition_indexes
                    .iter()
                    .any(|index| u32::try_from(*index) == Ok(partition))
        })
    };
    let ids = |nodes: &[u32]| -> Vec<BrokerId> {
        nodes
            .iter()
            .map(|node| BrokerId(i32::try_from(*node).unwrap_or(i32::MAX)))
            .collect()
    };
    let mut ongoing_moves = Vec::new();
    for moving in &moves.listed {
        if !asked(&moving.topic, moving.partition) {
            continue;
        }
        let (replicas, adding, removing) = if moving.target.is_empty() {
            let removing: Vec<u32> = moving
                .replicas
                .iter()
                .copied()
                .filter(|node| moves.decommissioned.contains(node))
                .collect();
            (moving.replicas.clone(), Vec::new(), removing)
        } else {
            let mut all = moving.original.clone();
            all.extend(
                moving
                    .target
                    .iter()
                    .filter(|node| !moving.original.contains(node)),
            );
            let adding = moving
                .target
                .iter()
                .copied()
                .filter(|node| !moving.original.contains(node))
                .collect();
            let removing = moving
                .original
                .iter()
                .copied()
                .filter(|node| !moving.target.contains(node))
                .collect();
            (all, adding, removing)
        };
        let ongoing = OngoingPartitionReassignment::default()
            .with_partition_index(i32::try_from(moving.partition).unwrap_or(i32::MAX))
            .with_replicas(ids(&replicas))
            .with_adding_replicas(ids(&adding))
            .with_removing_replicas(ids(&removing));
        ongoing_moves.push((moving.topic.clone(), ongoing));
    }
    ListPartitionReassignmentsResponse::default().with_topics(
        by_topic(ongoing_moves)
            .into_iter()
            .map(|(topic, partitions)| {
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
    use spate_proto::{ErrorCode, MovingPartition};

    fn name(topic: &str) -> TopicName {
        TopicName(StrBytes::from_string(topic.to_owned()))
    }

    #[test]
    fn elections_are_asked_per_topic_and_unclean_ones_refused() {
        let request = ElectLeadersRequest::default().with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(name("a"))
                .with_partitions(vec![2, 0, 2, -1]),
        ]));
        let plan = elect_plan(&request).unwrap();
        assert_eq!(
            plan.moves,
            vec![(
                PartitionMove::ElectPreferred {
                    topic: Some("a".into()),
                    partitions: vec![0, 2],
                },
                vec![("a".into(), 0), ("a".into(), 2)],
            )]
        );
        assert_eq!(plan.known.len(), 1);
        assert_eq!(
            plan.known[0].2.as_ref().unwrap().0,
            ResponseError::UnknownTopicOrPartition
        );
        // Every partition: one request for all.
        let all = elect_plan(&ElectLeadersRequest::default().with_topic_partitions(None)).unwrap();
        assert!(matches!(
            &all.moves[..],
            [(PartitionMove::ElectPreferred { topic: None, .. }, _)]
        ));
        // Unclean: refused per partition, or as a whole.
        let unclean = request.with_election_type(1);
        let plan = elect_plan(&unclean).unwrap();
        assert!(plan.moves.is_empty());
        assert!(plan
            .known
            .iter()
            .all(|(_, _, error)| error.as_ref().unwrap().0
                == ResponseError::EligibleLeadersNotAvailable));
        let all_unclean = ElectLeadersRequest::default()
            .with_topic_partitions(None)
            .with_election_type(1);
        assert_eq!(
            elect_plan(&all_unclean).unwrap_err().0,
            ResponseError::InvalidRequest
        );
    }

    #[test]
    fn outcomes_follow_the_nodes_answer_or_its_refusal() {
        let named = vec![("a".to_owned(), 0), ("a".to_owned(), 1)];
        let listed = vec![MoveResult {
            topic: "a".into(),
            partition: 1,
            error: Some(ErrorCode::ElectionNotNeeded),
            message: "leads already".into(),
        }];
        let outcomes = outcomes(&named, Ok(listed));
        assert_eq!(outcomes[0], ("a".into(), 0, None));
        assert_eq!(
            outcomes[1].2,
            Some((ResponseError::ElectionNotNeeded, "leads already".into()))
        );
        let answer = elect_response(outcomes, None);
        assert_eq!(answer.replica_election_results.len(), 1);
        let results = &answer.replica_election_results[0].partition_result;
        assert_eq!(
            (results[0].error_code, results[1].error_code),
            (0, ResponseError::ElectionNotNeeded.code())
        );
        let refused = super::outcomes(
            &named,
            Err(ErrorResponse::new(
                ErrorCode::InvalidRequest,
                "needs a cluster",
            )),
        );
        assert!(refused
            .iter()
            .all(|(_, _, error)| error.as_ref().unwrap().0 == ResponseError::InvalidRequest));
    }

    #[test]
    fn reassignments_group_partitions_by_target_and_null_cancels() {
        let partition = |index: i32, replicas: Option<Vec<i32>>| {
            ReassignablePartition::default()
                .with_partition_index(index)
                .with_replicas(replicas.map(|ids| ids.into_iter().map(BrokerId).collect()))
        };
        let request = AlterPartitionReassignmentsRequest::default().with_topics(vec![
            ReassignableTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![
                    partition(0, Some(vec![2, 3])),
                    partition(1, None),
                    partition(2, Some(vec![2, 3])),
                    partition(3, Some(vec![-1])),
                ]),
        ]);
        let plan = alter_plan(&request);
        assert_eq!(
            plan.moves,
            vec![
                (
                    PartitionMove::Reassign {
                        topic: "t".into(),
                        partitions: vec![0, 2],
                        replicas: vec![2, 3],
                        throttle: None,
                    },
                    vec![("t".into(), 0), ("t".into(), 2)],
                ),
                (
                    PartitionMove::Cancel {
                        topic: "t".into(),
                        partitions: vec![1],
                    },
                    vec![("t".into(), 1)],
                ),
            ]
        );
        assert_eq!(
            plan.known[0].2.as_ref().unwrap().0,
            ResponseError::InvalidReplicaAssignment
        );
        let answer = alter_response(vec![("t".into(), 0, None), ("t".into(), 1, None)]);
        assert_eq!(answer.responses[0].partitions.len(), 2);
    }

    #[test]
    fn listed_moves_show_as_kafka_reassignments() {
        let moves = MovesStatus {
            decommissioned: vec![9],
            moving: 2,
            listed: vec![
                MovingPartition {
                    topic: "t".into(),
                    partition: 0,
                    replicas: vec![1, 2, 3],
                    target: vec![3, 2],
                    original: vec![1, 2],
                    throttle: None,
                },
                MovingPartition {
                    topic: "u".into(),
                    partition: 4,
                    replicas: vec![9, 5],
                    target: Vec::new(),
                    original: vec![9, 5],
                    throttle: Some(10),
                },
            ],
        };
        let all = list_response(
            &ListPartitionReassignmentsRequest::default().with_topics(None),
            &moves,
        );
        assert_eq!(all.topics.len(), 2);
        let t = &all.topics[0].partitions[0];
        assert_eq!(t.replicas, vec![BrokerId(1), BrokerId(2), BrokerId(3)]);
        assert_eq!(t.adding_replicas, vec![BrokerId(3)]);
        assert_eq!(t.removing_replicas, vec![BrokerId(1)]);
        let u = &all.topics[1].partitions[0];
        assert_eq!(u.removing_replicas, vec![BrokerId(9)]);
        assert!(u.adding_replicas.is_empty());
        // Only what was asked.
        let asked = ListPartitionReassignmentsRequest::default().with_topics(Some(vec![
            ListPartitionReassignmentsTopics::default()
                .with_name(name("u"))
                .with_partition_indexes(vec![4]),
        ]));
        let some = list_response(&asked, &moves);
        assert_eq!(some.topics.len(), 1);
        assert_eq!(*some.topics[0].name.0, *"u");
    }
}
