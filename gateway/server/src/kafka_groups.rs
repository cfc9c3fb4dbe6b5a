//! The shell of Kafka's consumer-group APIs (translated in `spate_kafka::groups`): each
//! request becomes `Group` requests to the shard that coordinates the group (the owner of
//! its offsets partition), sent through the router like every Kafka request. The gateway
//! keeps nothing.
//!
//! Each handler sends its node requests when it is called — before the connection's next
//! request is read, so requests of one connection reach the coordinator in the order they
//! came (two pipelined OffsetCommits are applied in order) — and returns the future of the
//! Kafka answer.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use spate_kafka::groups::{self, Answer};
use spate_proto::limits::REQUEST_SIZE_MAX;
use spate_proto::{ErrorCode, GroupRequest, Request as NodeRequest, Response};

use crate::kafka::unexpected;
use crate::router::{Pending, Router};

/// Groups one DescribeGroups, DeleteGroups or batched OffsetFetch may name (after removing
/// repeats): each is a node request, and their answers are held together.
pub const GROUPS_PER_REQUEST_MAX: usize = 100;

/// Sends one group request now; a request the node would refuse to read (a name too long, a
/// frame over its request limit) is refused here.
async fn send(router: &Router, request: GroupRequest) -> Pending {
    let refused = |message: String| {
        Pending::Ready(Response::error(
            spate_proto::ApiKey::Group.to_u16(),
            ErrorCode::InvalidRequest,
            message,
        ))
    };
    if let Err(problem) = request.check() {
        return refused(format!("invalid group request: {problem}"));
    }
    let frame = NodeRequest::Group(request).to_frame(0);
    if frame.len() > REQUEST_SIZE_MAX as usize {
        return refused(format!(
            "the group request is {} bytes, over the limit of {REQUEST_SIZE_MAX}",
            frame.len()
        ));
    }
    crate::kafka::send_frame(router, frame).await
}

async fn answer(router: &Router, pending: Pending) -> Answer {
    match router.response(pending).await {
        Response::Group(answer) => Ok(answer),
        other => Err(unexpected(other)),
    }
}

/// Sends every request now; the future collects the answers in order.
async fn send_all(
    router: &Arc<Router>,
    requests: Vec<GroupRequest>,
) -> impl Future<Output = Vec<Answer>> + Send + 'static {
    let mut pending = Vec::with_capacity(requests.len());
    for request in requests {
        pending.push(send(router, request).await);
    }
    let router = router.clone();
    async move {
        let mut answers = Vec::with_capacity(pending.len());
        for one in pending {
            answers.push(answer(&router, one).await);
        }
        answers
    }
}

/// Sends one request now; the future is its answer.
async fn send_one(
    router: &Arc<Router>,
    request: GroupRequest,
) -> impl Future<Output = Answer> + Send + 'static {
    let pending = send(router, request).await;
    let router = router.clone();
    async move { answer(&router, pending).await }
}

/// The groups a request names, each once, at most `GROUPS_PER_REQUEST_MAX`.
fn distinct(groups: &[GroupId]) -> Vec<GroupId> {
    let mut seen = BTreeSet::new();
    groups
        .iter()
        .filter(|group| seen.insert(group.as_str()))
        .take(GROUPS_PER_REQUEST_MAX)
        .cloned()
        .collect()
}

pub async fn join(
    router: &Arc<Router>,
    version: i16,
    request: &JoinGroupRequest,
    client_id: &str,
) -> impl Future<Output = JoinGroupResponse> + Send + 'static {
    let answer = send_one(router, groups::join_request(version, request, client_id)).await;
    async move { groups::join_response(version, answer.await) }
}

pub async fn sync(
    router: &Arc<Router>,
    request: &SyncGroupRequest,
) -> impl Future<Output = SyncGroupResponse> + Send + 'static {
    let answer = send_one(router, groups::sync_request(request)).await;
    async move { groups::sync_response(answer.await) }
}

pub async fn heartbeat(
    router: &Arc<Router>,
    request: &HeartbeatRequest,
) -> impl Future<Output = HeartbeatResponse> + Send + 'static {
    let answer = send_one(router, groups::heartbeat_request(request)).await;
    async move { groups::heartbeat_response(&answer.await) }
}

pub async fn leave(
    router: &Arc<Router>,
    version: i16,
    request: LeaveGroupRequest,
) -> impl Future<Output = LeaveGroupResponse> + Send + 'static {
    let answer = send_one(router, groups::leave_request(version, &request)).await;
    async move { groups::leave_response(version, &request, answer.await) }
}

pub async fn commit(
    router: &Arc<Router>,
    version: i16,
    request: OffsetCommitRequest,
) -> impl Future<Output = OffsetCommitResponse> + Send + 'static {
    let (node, refused) = groups::commit_request(version, &request);
    let answer = send_one(router, node).await;
    async move { groups::commit_response(&request, &refused, &answer.await) }
}

pub async fn fetch(
    router: &Arc<Router>,
    version: i16,
    request: &OffsetFetchRequest,
) -> impl Future<Output = OffsetFetchResponse> + Send + 'static {
    // v1–v7 name one group; v8 several.
    let asked: Vec<GroupId> = if version < 8 {
        vec![request.group_id.clone()]
    } else {
        distinct(
            &request
                .groups
                .iter()
                .map(|group| group.group_id.clone())
                .collect::<Vec<_>>(),
        )
    };
    let requests = asked
        .iter()
        .map(|group| {
            let wanted = if version < 8 {
                request.topics.as_ref().map(|topics| {
                    groups::fetch_partitions(
                        topics
                            .iter()
                            .map(|topic| (&topic.name, topic.partition_indexes.as_slice())),
                    )
                })
            } else {
                request
                    .groups
                    .iter()
                    .find(|named| &named.group_id == group)
                    .and_then(|named| {
                        named.topics.as_ref().map(|topics| {
                            groups::fetch_partitions(
                                topics
                                    .iter()
                                    .map(|topic| (&topic.name, topic.partition_indexes.as_slice())),
                            )
                        })
                    })
            };
            groups::fetch_request(group.as_str(), wanted)
        })
        .collect();
    let answers = send_all(router, requests).await;
    async move {
        let mut answers = answers.await;
        if version < 8 {
            let answer = answers.pop().unwrap_or_else(|| {
                Err(spate_proto::ErrorResponse::new(
                    ErrorCode::Internal,
                    "no answer",
                ))
            });
            return groups::fetch_response_single(answer);
        }
        OffsetFetchResponse::default().with_groups(
            asked
                .iter()
                .zip(answers)
                .map(|(group, answer)| groups::fetch_response_group(group, answer))
                .collect(),
        )
    }
}

pub async fn list(
    router: &Arc<Router>,
    broker: &spate_kafka::translate::Broker,
    request: ListGroupsRequest,
) -> impl Future<Output = ListGroupsResponse> + Send + 'static {
    let offsets =
        crate::kafka_admin::node_metadata_of(router, &[spate_proto::OFFSETS_TOPIC], true).await;
    let asked = groups::list_requests(offsets.as_ref().ok(), broker);
    let answers = send_all(router, asked).await;
    async move { groups::list_response(&request, answers.await) }
}

pub async fn describe(
    router: &Arc<Router>,
    version: i16,
    request: &DescribeGroupsRequest,
) -> impl Future<Output = DescribeGroupsResponse> + Send + 'static {
    let asked = distinct(&request.groups);
    let answers = send_all(router, asked.iter().map(groups::describe_request).collect()).await;
    async move {
        groups::describe_response(
            asked
                .iter()
                .zip(answers.await)
                .map(|(group, answer)| groups::described(version, group, answer))
                .collect(),
        )
    }
}

pub async fn delete(
    router: &Arc<Router>,
    request: &DeleteGroupsRequest,
) -> impl Future<Output = DeleteGroupsResponse> + Send + 'static {
    let asked = distinct(&request.groups_names);
    let answers = send_all(router, asked.iter().map(groups::delete_request).collect()).await;
    async move { groups::delete_response(asked.into_iter().zip(answers.await).collect()) }
}

pub async fn offset_delete(
    router: &Arc<Router>,
    request: OffsetDeleteRequest,
) -> impl Future<Output = OffsetDeleteResponse> + Send + 'static {
    let answer = send_one(router, groups::offset_delete_request(&request)).await;
    async move { groups::offset_delete_response(&request, &answer.await) }
}
