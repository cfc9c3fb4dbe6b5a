//! The shell of the Kafka admin APIs answered in `spate_kafka::admin` (DescribeConfigs,
//! CreatePartitions, IncrementalAlterConfigs; DescribeCluster needs nothing from the node)
//! and `spate_kafka::moves` (ElectLeaders, AlterPartitionReassignments,
//! ListPartitionReassignments):
//! it asks the node for its Metadata when an answer needs it, or sends it the AlterTopic
//! requests, through the router like every Kafka request, and keeps nothing.

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    CreatePartitionsRequest, CreatePartitionsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, ElectLeadersRequest, ElectLeadersResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use spate_kafka::admin::{self, BrokerFacts};
use spate_kafka::errors::kafka_error;
use spate_kafka::moves;
use spate_proto::{ErrorResponse, MetadataResponse, Request as NodeRequest, Response};

use crate::kafka::{send, unexpected};
use crate::router::Router;

/// The node's whole Metadata answer (every topic: asking for named ones fails the whole
/// request on the first unknown name), with the later settings (`min.insync.replicas`) and,
/// if `placement`, where each partition's replicas are. A node of before refuses what it
/// does not know as malformed and is asked again with less (placement, then the settings).
pub(crate) async fn node_metadata(
    router: &Router,
    placement: bool,
) -> Result<MetadataResponse, ErrorResponse> {
    node_metadata_of(router, &[], placement).await
}

/// [`node_metadata`] for the `topics` named (all when none; an unknown one fails it).
pub(crate) async fn node_metadata_of(
    router: &Router,
    topics: &[&str],
    placement: bool,
) -> Result<MetadataResponse, ErrorResponse> {
    // Placement comes with the members' racks; an older node refuses what it does not know
    // (`Malformed`), and is asked again for less.
    let mut asked = if placement { 3 } else { 1 };
    loop {
        let request = NodeRequest::Metadata(spate_proto::MetadataRequest {
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            settings: asked >= 1,
            placement: asked >= 2,
            racks: asked >= 3,
        });
        let pending = send(router, &request).await;
        match router.response(pending).await {
            Response::Metadata(map) => return Ok(map),
            Response::Error { error, .. }
                if asked > 0 && error.code == spate_proto::ErrorCode::Malformed =>
            {
                asked -= 1;
            }
            other => return Err(unexpected(other)),
        }
    }
}

/// DescribeConfigs: the node is asked only if a topic or a broker other than 0 is named.
pub async fn describe_configs(
    router: &Router,
    facts: &BrokerFacts,
    version: i16,
    request: &DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let node = if admin::needs_node_map(request) {
        node_metadata(router, true).await
    } else {
        Ok(MetadataResponse {
            racks: false,
            members: None,
            shards: vec![],
            topics: vec![],
            settings: true,
        })
    };
    admin::describe_configs(version, request, node.as_ref(), facts)
}

/// CreatePartitions: refused per topic; the node's Metadata tells an unknown topic from one
/// whose partitions cannot change.
pub async fn create_partitions(
    router: &Router,
    request: &CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node = node_metadata(router, false).await;
    admin::create_partitions(request, node.as_ref())
}

/// IncrementalAlterConfigs: each resource becomes one AlterTopic request to the node (in
/// request order; `validate_only` is passed on), or is refused as it is.
pub async fn incremental_alter_configs(
    router: &Router,
    request: &IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let outcome = match admin::alter_topic(resource, request.validate_only) {
            Err(refusal) => Err(refusal),
            Ok(alter) => {
                let pending = send(router, &NodeRequest::AlterTopic(alter)).await;
                match router.response(pending).await {
                    Response::AlterTopic(_) => Ok(()),
                    other => {
                        let error = unexpected(other);
                        Err((kafka_error(error.code), error.message))
                    }
                }
            }
        };
        let answer = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        responses.push(match outcome {
            Ok(()) => answer,
            Err((error, message)) => answer
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Sends the node requests of `plan`, one after the other; the outcome of every partition,
/// and the refusal of a request for every partition (which lists none).
async fn run_plan(
    router: &Router,
    plan: moves::Plan,
) -> (Vec<moves::Outcome>, Option<(ResponseError, String)>) {
    let mut outcomes = plan.known;
    let mut refused = None;
    for (change, named) in plan.moves {
        let request = NodeRequest::MovePartitions(spate_proto::MovePartitionsRequest { change });
        let pending = send(router, &request).await;
        let answer = match router.response(pending).await {
            Response::MovePartitions(answer) => Ok(answer.results),
            other => Err(unexpected(other)),
        };
        if let (true, Err(error)) = (named.is_empty(), &answer) {
            refused = Some((kafka_error(error.code), error.message.clone()));
        }
        outcomes.extend(moves::outcomes(&named, answer));
    }
    (outcomes, refused)
}

/// ElectLeaders: preferred elections through the node's `MovePartitions`.
pub async fn elect_leaders(router: &Router, request: &ElectLeadersRequest) -> ElectLeadersResponse {
    match moves::elect_plan(request) {
        Err((refused, message)) => {
            tracing::debug!("ElectLeaders refused: {message}");
            moves::elect_response(Vec::new(), Some(refused))
        }
        Ok(plan) => {
            let (outcomes, refused) = run_plan(router, plan).await;
            moves::elect_response(outcomes, refused.map(|(error, _)| error))
        }
    }
}

/// AlterPartitionReassignments: reassignments and cancellations through the node's
/// `MovePartitions`.
pub async fn alter_partition_reassignments(
    router: &Router,
    request: &AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let (outcomes, _) = run_plan(router, moves::alter_plan(request)).await;
    moves::alter_response(outcomes)
}

/// ListPartitionReassignments: the moves the node's `DescribeCluster` lists.
pub async fn list_partition_reassignments(
    router: &Router,
    request: &ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let describe = NodeRequest::DescribeCluster(spate_proto::DescribeClusterRequest {
        partitions: true,
        moves: true,
        racks: false,
    });
    let pending = send(router, &describe).await;
    match router.response(pending).await {
        Response::DescribeCluster(cluster) => {
            moves::list_response(request, &cluster.moves.unwrap_or_default())
        }
        other => {
            let error = unexpected(other);
            ListPartitionReassignmentsResponse::default()
                .with_error_code(kafka_error(error.code).code())
                .with_error_message(Some(StrBytes::from_string(error.message)))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_gateways_copy_of_node_defaults_agrees_with_the_node() {
        assert_eq!(
            spate_kafka::admin::RETENTION_MS_NODE_DEFAULT,
            spate_node::config::RETENTION_MS_DEFAULT
        );
        assert_eq!(
            spate_kafka::admin::SEGMENT_BYTES_NODE_DEFAULT,
            u64::from(spate_format::limits::SEGMENT_SIZE_DEFAULT)
        );
    }
}
