//! The shell of Kafka's consumer-group APIs (translated in `spate_kafka::groups`): each
//! request becomes `Group` requests to the shard that coordinates the group (the owner of
//! its offsets partition), sent through the router like every Kafka request. The gateway
//! keeps nothing.

use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use spate_kafka::groups::{self, Answer};
use spate_proto::{GroupRequest, Request as NodeRequest, Response};

use crate::kafka::{send, unexpected};
use crate::router::{Pending, Router};

/// Groups one DescribeGroups, DeleteGroups or batched OffsetFetch may name: each is a node
/// request.
pub const GROUPS_PER_REQUEST_MAX: usize = 1_000;

/// Sends one group request and waits for the node's answer.
async fn call(router: &Router, request: GroupRequest) -> Answer {
    let pending = send(router, &NodeRequest::Group(request)).await;
    answer(router, pending).await
}

async fn answer(router: &Router, pending: Pending) -> Answer {
    match router.response(pending).await {
        Response::Group(answer) => Ok(answer),
        other => Err(unexpected(other)),
    }
}

/// Sends every request first (so they run at once on their shards), then collects the
/// answers in order.
async fn call_all(router: &Router, requests: Vec<GroupRequest>) -> Vec<Answer> {
    let mut pending = Vec::with_capacity(requests.len());
    for request in requests {
        pending.push(send(router, &NodeRequest::Group(request)).await);
    }
    let mut answers = Vec::with_capacity(pending.len());
    for one in pending {
        answers.push(answer(router, one).await);
    }
    answers
}

pub async fn join(
    router: &Router,
    version: i16,
    request: &JoinGroupRequest,
    client_id: &str,
) -> JoinGroupResponse {
    let answer = call(router, groups::join_request(version, request, client_id)).await;
    groups::join_response(version, answer)
}

pub async fn sync(router: &Router, request: &SyncGroupRequest) -> SyncGroupResponse {
    groups::sync_response(call(router, groups::sync_request(request)).await)
}

pub async fn heartbeat(router: &Router, request: &HeartbeatRequest) -> HeartbeatResponse {
    groups::heartbeat_response(&call(router, groups::heartbeat_request(request)).await)
}

pub async fn leave(
    router: &Router,
    version: i16,
    request: &LeaveGroupRequest,
) -> LeaveGroupResponse {
    let answer = call(router, groups::leave_request(version, request)).await;
    groups::leave_response(version, request, answer)
}

pub async fn commit(
    router: &Router,
    version: i16,
    request: &OffsetCommitRequest,
) -> OffsetCommitResponse {
    let (node, refused) = groups::commit_request(version, request);
    let answer = call(router, node).await;
    groups::commit_response(request, &refused, &answer)
}

pub async fn fetch(
    router: &Router,
    version: i16,
    request: &OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version < 8 {
        let partitions = request.topics.as_ref().map(|topics| {
            groups::fetch_partitions(
                topics
                    .iter()
                    .map(|topic| (&topic.name, topic.partition_indexes.as_slice())),
            )
        });
        let answer = call(
            router,
            groups::fetch_request(request.group_id.as_str(), partitions),
        )
        .await;
        return groups::fetch_response_single(answer);
    }
    let asked: Vec<_> = request.groups.iter().take(GROUPS_PER_REQUEST_MAX).collect();
    let requests = asked
        .iter()
        .map(|group| {
            let partitions = group.topics.as_ref().map(|topics| {
                groups::fetch_partitions(
                    topics
                        .iter()
                        .map(|topic| (&topic.name, topic.partition_indexes.as_slice())),
                )
            });
            groups::fetch_request(group.group_id.as_str(), partitions)
        })
        .collect();
    let answers = call_all(router, requests).await;
    OffsetFetchResponse::default().with_groups(
        asked
            .iter()
            .zip(answers)
            .map(|(group, answer)| groups::fetch_response_group(&group.group_id, answer))
            .collect(),
    )
}

pub async fn list(router: &Router, request: &ListGroupsRequest) -> ListGroupsResponse {
    let answers = call_all(router, groups::list_requests()).await;
    groups::list_response(request, answers)
}

pub async fn describe(
    router: &Router,
    version: i16,
    request: &DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let asked: Vec<_> = request.groups.iter().take(GROUPS_PER_REQUEST_MAX).collect();
    let answers = call_all(
        router,
        asked
            .iter()
            .map(|group| groups::describe_request(group))
            .collect(),
    )
    .await;
    groups::describe_response(
        asked
            .iter()
            .zip(answers)
            .map(|(group, answer)| groups::described(version, group, answer))
            .collect(),
    )
}

pub async fn delete(router: &Router, request: &DeleteGroupsRequest) -> DeleteGroupsResponse {
    let asked: Vec<_> = request
        .groups_names
        .iter()
        .take(GROUPS_PER_REQUEST_MAX)
        .collect();
    let answers = call_all(
        router,
        asked
            .iter()
            .map(|group| groups::delete_request(group))
            .collect(),
    )
    .await;
    groups::delete_response(asked.into_iter().cloned().zip(answers).collect())
}

pub async fn offset_delete(router: &Router, request: &OffsetDeleteRequest) -> OffsetDeleteResponse {
    let answer = call(router, groups::offset_delete_request(request)).await;
    groups::offset_delete_response(request, &answer)
}
