//! Kafka's consumer-group APIs (classic protocol) translated to the node's `Group` requests
//! and back: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and OffsetDelete. The state machine
//! is the node's (`spate_core::coordinator`); the gateway only translates. Every group
//! request goes to the group's partition of the offsets topic, so the gateway is its own
//! coordinator (FindCoordinator answers with itself) and stays stateless.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsResponse, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use spate_proto::group::{
    group_partition, CommitOffset, FetchedOffset, GroupInfo, JoinOp, MemberRef,
    OFFSET_METADATA_BYTES_MAX,
};
use spate_proto::{
    ErrorCode, ErrorDetail, ErrorResponse, GroupOp, GroupRequest, GroupResponse, PartitionId,
    OFFSETS_PARTITIONS, OFFSETS_TOPIC,
};

use crate::errors::kafka_error;
use crate::translate::{self, Broker};

/// A node's answer to a group request.
pub type Answer = Result<GroupResponse, ErrorResponse>;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn optional(value: Option<&StrBytes>) -> Option<String> {
    value.map(|value| value.to_string())
}

/// The Kafka error of a group request's failure. A coordinator that cannot be reached,
/// is stopping, moved, is fenced or failed its storage, or an answer that was lost, is
/// COORDINATOR_NOT_AVAILABLE, and one whose node no longer leads the group's offsets
/// partition NOT_COORDINATOR (either way the client finds the coordinator again and retries,
/// as Kafka's clients do); the rest as for every request.
fn code_of(error: &ErrorResponse) -> i16 {
    match error.code {
        ErrorCode::Unavailable
        | ErrorCode::ShuttingDown
        | ErrorCode::NotOwner
        | ErrorCode::PartitionFenced
        | ErrorCode::Storage
        | ErrorCode::Busy
        | ErrorCode::Timeout
        | ErrorCode::OutcomeUnknown => ResponseError::CoordinatorNotAvailable.code(),
        // In a cluster the group's offsets partition is led elsewhere now: the client finds
        // the coordinator again (this gateway routes it to the new leader).
        ErrorCode::NotLeaderOrFollower => ResponseError::NotCoordinator.code(),
        code => kafka_error(code).code(),
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The Kafka error code of an answer that should have been `Done`.
fn done_code(answer: &Answer) -> i16 {
    match answer {
        Ok(_) => 0,
        Err(error) => code_of(error),
    }
}

fn wrong_answer(answer: &GroupResponse) -> ErrorResponse {
    ErrorResponse::new(
        ErrorCode::Internal,
        format!("unexpected answer from the node: {answer:?}"),
    )
}

/// FindCoordinator: groups are coordinated behind any gateway (it routes each group request
/// to the leader of the group's offsets partition). In a cluster of Kafka brokers
/// ([`translate::cluster_brokers`]; `node` is the node's Metadata with placement) the answer
/// is the broker of that leader, as Kafka's; otherwise, or while that partition has no leader
/// (the offsets topic is created at the first group request), this gateway (in a cluster: the
/// listed broker at its advertised address). Transactions are not served.
pub fn find_coordinator(
    version: i16,
    request: &FindCoordinatorRequest,
    broker: &Broker,
    node: Option<&spate_proto::MetadataResponse>,
) -> FindCoordinatorResponse {
    let (brokers, own) = translate::brokers_and_own(node, broker);
    let offsets =
        node.and_then(|node| node.topics.iter().find(|topic| topic.name == OFFSETS_TOPIC));
    let coordinator_of = |group: &str| -> (i32, Broker) {
        let leader = offsets
            .and_then(|topic| topic.replicas.get(group_partition(group).0 as usize))
            .and_then(|placed| placed.leader)
            .and_then(|leader| i32::try_from(leader).ok());
        leader
            .and_then(|leader| brokers.iter().find(|(id, _)| *id == leader).cloned())
            .unwrap_or_else(|| own.clone())
    };
    let found = |key: StrBytes| {
        if request.key_type == 0 {
            let (id, at) = coordinator_of(key.as_str());
            Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(id))
                .with_host(text(&at.host))
                .with_port(at.port)
        } else {
            let (error, message) = translate::no_transaction_coordinator();
            Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message)))
        }
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .cloned()
            .map(found)
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let one = found(request.key.clone());
    let answer = FindCoordinatorResponse::default()
        .with_error_code(one.error_code)
        .with_node_id(one.node_id)
        .with_host(one.host)
        .with_port(one.port);
    if version >= 1 {
        answer.with_error_message(one.error_message)
    } else {
        answer
    }
}

/// JoinGroup as the node's request.
pub fn join_request(version: i16, request: &JoinGroupRequest, client_id: &str) -> GroupRequest {
    GroupRequest::new(
        request.group_id.as_str(),
        GroupOp::Join(JoinOp {
            member_id: request.member_id.to_string(),
            instance_id: optional(request.group_instance_id.as_ref()),
            // Kafka's client ids may be longer than the node keeps.
            client_id: cut(client_id, spate_proto::group::GROUP_NAME_BYTES_MAX as usize),
            session_timeout_ms: request.session_timeout_ms,
            // v0 has one timeout for both.
            rebalance_timeout_ms: if version >= 1 {
                request.rebalance_timeout_ms
            } else {
                request.session_timeout_ms
            },
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .iter()
                .map(|protocol| (protocol.name.to_string(), protocol.metadata.clone()))
                .collect(),
            // KIP-394: from v4 a first join gets MEMBER_ID_REQUIRED with its member id.
            require_known_member_id: version >= 4,
        }),
    )
}

pub fn join_response(version: i16, answer: Answer) -> JoinGroupResponse {
    // Before v7 the protocol name is not nullable.
    let empty_name = (version < 7).then(|| text(""));
    let failed = |code: i16, member_id: String| {
        JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_protocol_name(empty_name.clone())
            .with_member_id(StrBytes::from_string(member_id))
    };
    match answer {
        Ok(GroupResponse::Joined {
            generation,
            protocol_type,
            protocol,
            leader,
            member_id,
            members,
        }) => JoinGroupResponse::default()
            .with_generation_id(generation)
            .with_protocol_type(Some(StrBytes::from_string(protocol_type)))
            .with_protocol_name(Some(StrBytes::from_string(protocol)))
            .with_leader(StrBytes::from_string(leader))
            .with_member_id(StrBytes::from_string(member_id))
            .with_members(
                members
                    .into_iter()
                    .map(|member| {
                        JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(member.member_id))
                            .with_group_instance_id(member.instance_id.map(StrBytes::from_string))
                            .with_metadata(member.metadata)
                    })
                    .collect(),
            ),
        Ok(other) => failed(code_of(&wrong_answer(&other)), String::new()),
        Err(error) => {
            let member_id = match &error.detail {
                ErrorDetail::MemberId { member_id } => member_id.clone(),
                _ => String::new(),
            };
            failed(code_of(&error), member_id)
        }
    }
}

fn member(
    group_instance_id: Option<&StrBytes>,
    member_id: &StrBytes,
    generation: i32,
) -> MemberRef {
    MemberRef {
        member_id: member_id.to_string(),
        instance_id: optional(group_instance_id),
        generation,
    }
}

pub fn sync_request(request: &SyncGroupRequest) -> GroupRequest {
    GroupRequest::new(
        request.group_id.as_str(),
        GroupOp::Sync {
            member: member(
                request.group_instance_id.as_ref(),
                &request.member_id,
                request.generation_id,
            ),
            assignments: request
                .assignments
                .iter()
                .map(|assignment| {
                    (
                        assignment.member_id.to_string(),
                        assignment.assignment.clone(),
                    )
                })
                .collect(),
        },
    )
}

pub fn sync_response(answer: Answer) -> SyncGroupResponse {
    match answer {
        Ok(GroupResponse::Synced {
            protocol_type,
            protocol,
            assignment,
        }) => SyncGroupResponse::default()
            .with_protocol_type(Some(StrBytes::from_string(protocol_type)))
            .with_protocol_name(Some(StrBytes::from_string(protocol)))
            .with_assignment(assignment),
        Ok(other) => SyncGroupResponse::default().with_error_code(code_of(&wrong_answer(&other))),
        Err(error) => SyncGroupResponse::default().with_error_code(code_of(&error)),
    }
}

pub fn heartbeat_request(request: &HeartbeatRequest) -> GroupRequest {
    GroupRequest::new(
        request.group_id.as_str(),
        GroupOp::Heartbeat(member(
            request.group_instance_id.as_ref(),
            &request.member_id,
            request.generation_id,
        )),
    )
}

pub fn heartbeat_response(answer: &Answer) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(done_code(answer))
}

pub fn leave_request(version: i16, request: &LeaveGroupRequest) -> GroupRequest {
    let members = if version >= 3 {
        request
            .members
            .iter()
            .map(|member| {
                (
                    member.member_id.to_string(),
                    optional(member.group_instance_id.as_ref()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    GroupRequest::new(request.group_id.as_str(), GroupOp::Leave(members))
}

pub fn leave_response(
    version: i16,
    request: &LeaveGroupRequest,
    answer: Answer,
) -> LeaveGroupResponse {
    let results = match answer {
        Ok(GroupResponse::Left(results)) => results,
        Ok(other) => {
            return LeaveGroupResponse::default().with_error_code(code_of(&wrong_answer(&other)))
        }
        Err(error) => return LeaveGroupResponse::default().with_error_code(code_of(&error)),
    };
    let kafka_code = |code: u16| match code {
        0 => 0,
        code => kafka_error(ErrorCode::from_u16(code)).code(),
    };
    if version < 3 {
        let code = results.first().map_or(0, |(code, _)| kafka_code(*code));
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = request
        .members
        .iter()
        .zip(results)
        .map(|(member, (code, _))| {
            MemberResponse::default()
                .with_member_id(member.member_id.clone())
                .with_group_instance_id(member.group_instance_id.clone())
                .with_error_code(kafka_code(code))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

/// OffsetCommit as the node's request, and the partitions refused before it (metadata too
/// large), with their error.
pub fn commit_request(
    version: i16,
    request: &OffsetCommitRequest,
) -> (GroupRequest, Vec<(String, i32, i16)>) {
    let mut offsets = Vec::new();
    let mut refused = Vec::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            let metadata = partition
                .committed_metadata
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let index = u32::try_from(partition.partition_index);
            match index {
                _ if metadata.len() > OFFSET_METADATA_BYTES_MAX as usize => refused.push((
                    topic.name.to_string(),
                    partition.partition_index,
                    ResponseError::OffsetMetadataTooLarge.code(),
                )),
                Err(_) => refused.push((
                    topic.name.to_string(),
                    partition.partition_index,
                    ResponseError::UnknownTopicOrPartition.code(),
                )),
                Ok(index) => offsets.push(CommitOffset {
                    topic: topic.name.to_string(),
                    partition: index,
                    offset: partition.committed_offset,
                    leader_epoch: if version >= 6 {
                        partition.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata,
                }),
            }
        }
    }
    let generation = if version >= 1 {
        request.generation_id_or_member_epoch
    } else {
        -1
    };
    let node = GroupRequest::new(
        request.group_id.as_str(),
        GroupOp::Commit {
            member: member(
                request.group_instance_id.as_ref(),
                &request.member_id,
                generation,
            ),
            offsets,
        },
    );
    (node, refused)
}

pub fn commit_response(
    request: &OffsetCommitRequest,
    refused: &[(String, i32, i16)],
    answer: &Answer,
) -> OffsetCommitResponse {
    let code = done_code(answer);
    let refused: std::collections::HashMap<(&str, i32), i16> = refused
        .iter()
        .map(|(name, index, refusal)| ((name.as_str(), *index), *refusal))
        .collect();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .map(|partition| {
                            let own = refused
                                .get(&(topic.name.as_str(), partition.partition_index))
                                .copied()
                                .unwrap_or(code);
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(partition.partition_index)
                                .with_error_code(own)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's OffsetFetch: `None` partitions for all the group has.
pub fn fetch_request(group: &str, partitions: Option<Vec<(String, u32)>>) -> GroupRequest {
    GroupRequest::new(group, GroupOp::FetchOffsets(partitions))
}

/// The partitions an OffsetFetch names (v0–v7: `topics`; v8+: each group's).
pub fn fetch_partitions<'a>(
    topics: impl Iterator<Item = (&'a TopicName, &'a [i32])>,
) -> Vec<(String, u32)> {
    topics
        .flat_map(|(name, indexes)| {
            indexes.iter().filter_map(move |index| {
                u32::try_from(*index)
                    .ok()
                    .map(|index| (name.to_string(), index))
            })
        })
        .collect()
}

fn fetched_offsets(answer: Answer) -> Result<Vec<FetchedOffset>, i16> {
    match answer {
        Ok(GroupResponse::Offsets(offsets)) => Ok(offsets),
        Ok(other) => Err(code_of(&wrong_answer(&other))),
        Err(error) => Err(code_of(&error)),
    }
}

/// Fetched offsets grouped by topic, in the order they came.
fn by_topic(offsets: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut topics: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for offset in offsets {
        match topics.iter_mut().find(|(name, _)| *name == offset.topic) {
            Some((_, list)) => list.push(offset),
            None => topics.push((offset.topic.clone(), vec![offset])),
        }
    }
    topics
}

fn partition_index(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}

/// OffsetFetch v1–v7 (one group).
pub fn fetch_response_single(answer: Answer) -> OffsetFetchResponse {
    let offsets = match fetched_offsets(answer) {
        Ok(offsets) => offsets,
        Err(code) => return OffsetFetchResponse::default().with_error_code(code),
    };
    let topics = by_topic(offsets)
        .into_iter()
        .map(|(name, offsets)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    offsets
                        .into_iter()
                        .map(|offset| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(partition_index(offset.partition))
                                .with_committed_offset(offset.offset)
                                .with_committed_leader_epoch(offset.leader_epoch)
                                .with_metadata(Some(StrBytes::from_string(offset.metadata)))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// OffsetFetch v8+: one entry per group.
pub fn fetch_response_group(group: &GroupId, answer: Answer) -> OffsetFetchResponseGroup {
    let answer_group = OffsetFetchResponseGroup::default().with_group_id(group.clone());
    let offsets = match fetched_offsets(answer) {
        Ok(offsets) => offsets,
        Err(code) => return answer_group.with_error_code(code),
    };
    let topics = by_topic(offsets)
        .into_iter()
        .map(|(name, offsets)| {
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    offsets
                        .into_iter()
                        .map(|offset| {
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(partition_index(offset.partition))
                                .with_committed_offset(offset.offset)
                                .with_committed_leader_epoch(offset.leader_epoch)
                                .with_metadata(Some(StrBytes::from_string(offset.metadata)))
                        })
                        .collect(),
                )
        })
        .collect();
    answer_group.with_topics(topics)
}

/// ListGroups asks every partition of the offsets topic.
pub fn list_requests(
    node: Option<&spate_proto::MetadataResponse>,
    broker: &Broker,
) -> Vec<GroupRequest> {
    // In a cluster of Kafka brokers an admin client asks every broker and joins the answers:
    // each lists the groups of the offsets partitions its node leads, as Kafka's brokers do.
    let led: Option<Vec<u32>> = node.and_then(|node| {
        translate::cluster_brokers(node)?;
        let (_, (own, _)) = translate::brokers_and_own(Some(node), broker);
        let offsets = node
            .topics
            .iter()
            .find(|topic| topic.name == OFFSETS_TOPIC)?;
        Some(
            (0..OFFSETS_PARTITIONS)
                .filter(|partition| {
                    offsets
                        .replicas
                        .get(*partition as usize)
                        .and_then(|placed| placed.leader)
                        .and_then(|leader| i32::try_from(leader).ok())
                        == Some(own)
                })
                .collect(),
        )
    });
    led.unwrap_or_else(|| (0..OFFSETS_PARTITIONS).collect())
        .into_iter()
        .map(|partition| GroupRequest {
            topic: OFFSETS_TOPIC.to_owned(),
            partition: PartitionId(partition),
            group: String::new(),
            op: GroupOp::List,
        })
        .collect()
}

pub fn list_response(request: &ListGroupsRequest, answers: Vec<Answer>) -> ListGroupsResponse {
    let mut groups = Vec::new();
    let mut code = 0;
    for answer in answers {
        match answer {
            Ok(GroupResponse::Groups(found)) => groups.extend(found),
            Ok(other) => code = code_of(&wrong_answer(&other)),
            Err(error) => code = code_of(&error),
        }
    }
    let wanted = |group: &GroupInfo| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|state| state.eq_ignore_ascii_case(&group.state))
    };
    let listed = groups
        .into_iter()
        .filter(|group| group.state != "Dead")
        .filter(wanted)
        .map(|group| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.group)))
                .with_protocol_type(StrBytes::from_string(group.protocol_type))
                .with_group_state(StrBytes::from_string(group.state))
                .with_group_type(text("classic"))
        })
        .collect();
    ListGroupsResponse::default()
        .with_error_code(code)
        .with_groups(listed)
}

pub fn describe_request(group: &GroupId) -> GroupRequest {
    GroupRequest::new(group.as_str(), GroupOp::Describe)
}

pub fn described(version: i16, group: &GroupId, answer: Answer) -> DescribedGroup {
    let base = DescribedGroup::default().with_group_id(group.clone());
    let found = match answer {
        Ok(GroupResponse::Groups(mut found)) if found.len() == 1 => found.remove(0),
        Ok(other) => return base.with_error_code(code_of(&wrong_answer(&other))),
        Err(error) => {
            let base = base.with_error_code(code_of(&error));
            return if version >= 6 {
                base.with_error_message(Some(StrBytes::from_string(error.message)))
            } else {
                base
            };
        }
    };
    base.with_group_state(StrBytes::from_string(found.state))
        .with_protocol_type(StrBytes::from_string(found.protocol_type))
        .with_protocol_data(StrBytes::from_string(found.protocol))
        .with_members(
            found
                .members
                .into_iter()
                .map(|member| {
                    DescribedGroupMember::default()
                        .with_member_id(StrBytes::from_string(member.member_id))
                        .with_group_instance_id(member.instance_id.map(StrBytes::from_string))
                        .with_client_id(StrBytes::from_string(member.client_id))
                        .with_client_host(text(""))
                        .with_member_metadata(member.metadata)
                        .with_member_assignment(member.assignment)
                })
                .collect(),
        )
}

pub fn describe_response(groups: Vec<DescribedGroup>) -> DescribeGroupsResponse {
    DescribeGroupsResponse::default().with_groups(groups)
}

pub fn delete_request(group: &GroupId) -> GroupRequest {
    GroupRequest::new(group.as_str(), GroupOp::Delete)
}

pub fn delete_response(results: Vec<(GroupId, Answer)>) -> DeleteGroupsResponse {
    DeleteGroupsResponse::default().with_results(
        results
            .into_iter()
            .map(|(group, answer)| {
                DeletableGroupResult::default()
                    .with_group_id(group)
                    .with_error_code(done_code(&answer))
            })
            .collect(),
    )
}

pub fn offset_delete_request(request: &OffsetDeleteRequest) -> GroupRequest {
    let partitions = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().filter_map(|partition| {
                u32::try_from(partition.partition_index)
                    .ok()
                    .map(|index| (topic.name.to_string(), index))
            })
        })
        .collect();
    GroupRequest::new(
        request.group_id.as_str(),
        GroupOp::DeleteOffsets(partitions),
    )
}

pub fn offset_delete_response(
    request: &OffsetDeleteRequest,
    answer: &Answer,
) -> OffsetDeleteResponse {
    let code = done_code(answer);
    // A group-level refusal (the group has members, is unknown) is the top-level error.
    let (top, each) = match answer {
        Err(error)
            if matches!(
                error.code,
                ErrorCode::NonEmptyGroup | ErrorCode::GroupIdNotFound | ErrorCode::InvalidGroupId
            ) =>
        {
            (code, 0)
        }
        _ => (0, code),
    };
    let top = if top == kafka_error(ErrorCode::NonEmptyGroup).code() {
        // Kafka's answer for offsets of a group that is consuming them.
        ResponseError::GroupSubscribedToTopic.code()
    } else {
        top
    };
    OffsetDeleteResponse::default()
        .with_error_code(top)
        .with_topics(
            request
                .topics
                .iter()
                .map(|topic| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic.name.clone())
                        .with_partitions(
                            topic
                                .partitions
                                .iter()
                                .map(|partition| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(partition.partition_index)
                                        .with_error_code(each)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn broker() -> Broker {
        Broker {
            host: "gw.example".into(),
            port: 9092,
        }
    }

    #[test]
    fn in_a_cluster_of_kafka_addresses_the_coordinator_is_the_offsets_partitions_leader() {
        use spate_proto::{MemberAddress, PartitionPlacement, TopicMetadata};
        let group = "g";
        let led = group_partition(group).0 as usize;
        let mut replicas = vec![PartitionPlacement::default(); OFFSETS_PARTITIONS as usize];
        replicas[led].leader = Some(7);
        let node = spate_proto::MetadataResponse {
            racks: false,
            shards: vec![],
            topics: vec![TopicMetadata {
                name: OFFSETS_TOPIC.into(),
                retention_ms: spate_proto::Setting::Unlimited,
                retention_bytes: spate_proto::Setting::Unlimited,
                segment_bytes: spate_proto::Setting::Value(1 << 24),
                min_insync_replicas: spate_proto::Setting::Value(1),
                partitions: (0..OFFSETS_PARTITIONS)
                    .map(|partition| spate_proto::PartitionMetadata {
                        partition: PartitionId(partition),
                        shard: spate_proto::ShardId(0),
                    })
                    .collect(),
                replicas,
            }],
            settings: true,
            members: Some(vec![
                MemberAddress {
                    node: 7,
                    kafka: "10.0.0.7:9092".into(),
                    rack: String::new(),
                },
                MemberAddress {
                    node: 8,
                    kafka: "10.0.0.8:9092".into(),
                    rack: String::new(),
                },
            ]),
        };
        let request = FindCoordinatorRequest::default().with_key(text(group));
        let answer = find_coordinator(3, &request, &broker(), Some(&node));
        assert_eq!(
            (answer.node_id, answer.host.to_string(), answer.port),
            (BrokerId(7), "10.0.0.7".to_owned(), 9092)
        );
        // A group whose offsets partition has no leader yet: this gateway.
        let other = (0..)
            .map(|n| format!("g{n}"))
            .find(|name| group_partition(name).0 as usize != led)
            .unwrap();
        let request = FindCoordinatorRequest::default().with_key(text(&other));
        let answer = find_coordinator(3, &request, &broker(), Some(&node));
        assert_eq!(
            answer.host.as_str(),
            "10.0.0.7",
            "the first broker: this gateway is not listed"
        );
        let eight = Broker {
            host: "10.0.0.8".into(),
            port: 9092,
        };
        let answer = find_coordinator(3, &request, &eight, Some(&node));
        assert_eq!(
            (answer.node_id, answer.host.as_str()),
            (BrokerId(8), "10.0.0.8"),
            "this gateway's own broker"
        );
        // ListGroups asks only the offsets partitions this broker's node leads.
        let seven = Broker {
            host: "10.0.0.7".into(),
            port: 9092,
        };
        let partitions = |broker: &Broker, node| -> Vec<u32> {
            list_requests(node, broker)
                .iter()
                .map(|request| request.partition.0)
                .collect()
        };
        assert_eq!(
            partitions(&seven, Some(&node)),
            vec![group_partition(group).0]
        );
        assert!(partitions(&eight, Some(&node)).is_empty());
        assert_eq!(
            partitions(&broker(), None).len(),
            OFFSETS_PARTITIONS as usize
        );
    }

    #[test]
    fn a_moved_coordinator_is_not_coordinator_and_a_loading_one_load_in_progress() {
        let code = |code| code_of(&ErrorResponse::new(code, "refused"));
        assert_eq!(
            code(ErrorCode::NotLeaderOrFollower),
            ResponseError::NotCoordinator.code()
        );
        assert_eq!(
            code(ErrorCode::CoordinatorLoadInProgress),
            ResponseError::CoordinatorLoadInProgress.code()
        );
        assert_eq!(
            code(ErrorCode::Unavailable),
            ResponseError::CoordinatorNotAvailable.code()
        );
    }

    #[test]
    fn find_coordinator_names_the_gateway_for_groups_and_refuses_transactions() {
        for version in 0..=4 {
            let request = FindCoordinatorRequest::default()
                .with_key(text("g"))
                .with_coordinator_keys(vec![text("g")]);
            let answer = find_coordinator(version, &request, &broker(), None);
            let (code, host, port) = if version >= 4 {
                let one = &answer.coordinators[0];
                (one.error_code, one.host.to_string(), one.port)
            } else {
                (answer.error_code, answer.host.to_string(), answer.port)
            };
            assert_eq!((code, host.as_str(), port), (0, "gw.example", 9092));
            let mut bytes = bytes::BytesMut::new();
            answer.encode(&mut bytes, version).unwrap();
        }
        let transactional = FindCoordinatorRequest::default().with_key_type(1);
        assert_ne!(
            find_coordinator(3, &transactional, &broker(), None).error_code,
            0
        );
    }

    #[test]
    fn join_round_trips_through_the_node_request_and_member_id_required_carries_the_id() {
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(60_000)
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(text("range"))
                .with_metadata(bytes::Bytes::from_static(b"m"))]);
        let node = join_request(5, &request, "client");
        let GroupOp::Join(join) = &node.op else {
            panic!("a join");
        };
        assert!(join.require_known_member_id);
        assert_eq!(join.rebalance_timeout_ms, 60_000);
        assert_eq!(node.partition, group_partition("g"));
        let refused = ErrorResponse::new(ErrorCode::MemberIdRequired, "join again").with_detail(
            ErrorDetail::MemberId {
                member_id: "client-1".into(),
            },
        );
        for version in [0, 4, 5, 6, 7, 9] {
            let answer = join_response(version, Err(refused.clone()));
            assert_eq!(answer.error_code, ResponseError::MemberIdRequired.code());
            assert_eq!(answer.member_id.as_str(), "client-1");
            let mut bytes = bytes::BytesMut::new();
            answer.encode(&mut bytes, version).unwrap();
            let back = JoinGroupResponse::decode(&mut bytes.freeze(), version).unwrap();
            assert_eq!(back.member_id.as_str(), "client-1");
        }
    }

    #[test]
    fn commits_refuse_oversized_metadata_per_partition() {
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(text("t")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5),
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(1)
                        .with_committed_offset(5)
                        .with_committed_metadata(Some(StrBytes::from_string("x".repeat(5000)))),
                ])]);
        let (node, refused) = commit_request(8, &request);
        let GroupOp::Commit { offsets, .. } = &node.op else {
            panic!("a commit");
        };
        assert_eq!(offsets.len(), 1);
        let answer = commit_response(&request, &refused, &Ok(GroupResponse::Done));
        let codes: Vec<i16> = answer.topics[0]
            .partitions
            .iter()
            .map(|partition| partition.error_code)
            .collect();
        assert_eq!(codes, vec![0, ResponseError::OffsetMetadataTooLarge.code()]);
    }
}
