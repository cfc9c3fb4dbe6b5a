//! Kafka admin APIs answered from what the gateway knows: DescribeConfigs (a topic's
//! settings from the node's Metadata answer, plus facts fixed by Spate), DescribeCluster (one
//! broker: this gateway) and CreatePartitions (refused: partitions are fixed at creation);
//! and IncrementalAlterConfigs translated to the node's AlterTopic.
//! Pure: the gateway's `kafka_admin` module asks the node for its Metadata and passes it in.
//!
//! Invariants: nothing is stated that Spate does not do (a value the gateway cannot know is
//! reported with source UNKNOWN, not guessed as a default), and only fields that exist at the
//! request's version are set (the encoders refuse others).

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use spate_proto::{ErrorResponse, MetadataResponse, Setting, TopicMetadata};

use crate::batch::KAFKA_BATCH_SIZE_MAX;
use crate::errors::kafka_error;
use crate::translate::{self, Broker, BROKER_ID, CLUSTER_ID};

/// DescribeConfigs resource types (Kafka's `ConfigResource.Type`).
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Kafka's config sources (`DescribeConfigsResponse.ConfigSource`) that Spate answers with.
pub const SOURCE_UNKNOWN: i8 = 0;
pub const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// Kafka's config types (`DescribeConfigsResponse.ConfigType`, v3+) that Spate answers with.
pub const TYPE_STRING: i8 = 2;
pub const TYPE_INT: i8 = 3;
pub const TYPE_LONG: i8 = 5;
pub const TYPE_LIST: i8 = 7;

/// The node's default `retention.ms` (`spate_node::config::RETENTION_MS_DEFAULT`, which the
/// gateway may not depend on; a test in the gateway checks they agree). Used only if a node
/// answers a topic's setting as "the node's default" instead of its effective value.
pub const RETENTION_MS_NODE_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

/// The node's default `segment.bytes`, for the same case.
pub const SEGMENT_BYTES_NODE_DEFAULT: u64 = spate_format::limits::SEGMENT_SIZE_DEFAULT as u64;

/// The message CreatePartitions answers every existing topic with.
pub const PARTITIONS_FIXED: &str = "partitions are fixed at creation in this Spate version";

/// Kafka's cluster operations (`AclOperation` codes) a DescribeCluster reports as authorized
/// when asked: Spate has no authorizer, and Kafka without one answers every operation the
/// cluster resource supports (ALTER 7, CREATE 5, CLUSTER_ACTION 9, DESCRIBE 8,
/// DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12). Authorized is not served: an
/// API not in ApiVersions stays unserved.
pub const CLUSTER_AUTHORIZED_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// What DescribeCluster's `cluster_authorized_operations` is when not asked for (Kafka's
/// "omitted").
pub const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// DescribeCluster endpoint type of brokers (v1+; 2 would be controllers).
pub const ENDPOINT_TYPE_BROKERS: i8 = 1;

/// The gateway settings a broker DescribeConfigs states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerFacts {
    /// The advertised address (what Metadata answers name).
    pub broker: Broker,
    /// `--kafka-request-bytes-max`.
    pub request_bytes_max: u32,
    /// `--kafka-max-connections`.
    pub max_connections: u32,
    /// Whether the listener takes TLS (`--kafka-tls-cert`): the listener is then `SSL`.
    pub tls: bool,
}

/// One configuration entry as Spate states it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: &'static str,
    value: String,
    source: i8,
    read_only: bool,
    config_type: i8,
    documentation: &'static str,
}

fn setting_value(setting: Setting, default: Option<u64>) -> (String, i8) {
    match setting {
        // The node answers effective values; whether one is the topic's own or the node's
        // default, it does not say, so the source is unknown.
        Setting::Value(value) => (value.to_string(), SOURCE_UNKNOWN),
        Setting::Unlimited => ("-1".to_owned(), SOURCE_UNKNOWN),
        // Not sent by current nodes ("never Default" in spate_proto); the documented default.
        Setting::Default => (
            default.map_or_else(|| "-1".to_owned(), |value| value.to_string()),
            SOURCE_DEFAULT_CONFIG,
        ),
    }
}

/// A topic's entries: its four settings, then the facts every Spate topic shares. The
/// retention settings and `min.insync.replicas` can change (IncrementalAlterConfigs); the
/// rest are read-only.
fn topic_entries(topic: &TopicMetadata) -> Vec<Entry> {
    let setting = |name, setting, default, config_type, documentation| {
        let (value, source) = setting_value(setting, default);
        Entry {
            name,
            value,
            source,
            read_only: name == "segment.bytes",
            config_type,
            documentation,
        }
    };
    let fact = |name, value: String, config_type, documentation| Entry {
        name,
        value,
        source: SOURCE_DEFAULT_CONFIG,
        read_only: true,
        config_type,
        documentation,
    };
    vec![
        setting(
            "retention.ms",
            topic.retention_ms,
            Some(RETENTION_MS_NODE_DEFAULT),
            TYPE_LONG,
            "How long records are kept, in milliseconds, before their segment may be deleted \
             (-1: forever).",
        ),
        setting(
            "retention.bytes",
            topic.retention_bytes,
            None,
            TYPE_LONG,
            "The size a partition may reach before its oldest segments are deleted (-1: \
             unlimited).",
        ),
        setting(
            "segment.bytes",
            topic.segment_bytes,
            Some(SEGMENT_BYTES_NODE_DEFAULT),
            TYPE_INT,
            "The size of a segment file; retention deletes whole segments.",
        ),
        setting(
            "min.insync.replicas",
            topic.min_insync_replicas,
            Some(1),
            TYPE_INT,
            "With acks=all, a write is refused (NOT_ENOUGH_REPLICAS) while fewer replicas are \
             in sync; a single node counts as one.",
        ),
        fact(
            "cleanup.policy",
            "delete".to_owned(),
            TYPE_LIST,
            "Spate deletes by retention only; it does not compact.",
        ),
        fact(
            "max.message.bytes",
            KAFKA_BATCH_SIZE_MAX.to_string(),
            TYPE_INT,
            "The largest Kafka record batch Spate accepts (its 1 MiB batch limit less the 11 \
             bytes Spate's batch header has more).",
        ),
        fact(
            "message.timestamp.type",
            "CreateTime".to_owned(),
            TYPE_STRING,
            "Records keep the timestamps their producer gave them.",
        ),
        fact(
            "compression.type",
            "producer".to_owned(),
            TYPE_STRING,
            "Batches are stored as the producer sent them, never recompressed.",
        ),
    ]
}

/// This gateway's broker entries (`id`: 0, or its node's id in a cluster of brokers): its own
/// Kafka settings, fixed when it starts.
fn broker_entries(facts: &BrokerFacts, id: i32) -> Vec<Entry> {
    let host = if facts.broker.host.contains(':') {
        format!("[{}]", facts.broker.host)
    } else {
        facts.broker.host.clone()
    };
    let entry = |name, value: String, source, config_type, documentation| Entry {
        name,
        value,
        source,
        read_only: true,
        config_type,
        documentation,
    };
    vec![
        entry(
            "broker.id",
            id.to_string(),
            SOURCE_DEFAULT_CONFIG,
            TYPE_INT,
            "A Spate gateway is broker 0 to its Kafka clients, or in a cluster of brokers the \
             node id of the node it fronts.",
        ),
        entry(
            "advertised.listeners",
            format!(
                "{}://{host}:{}",
                if facts.tls { "SSL" } else { "PLAINTEXT" },
                facts.broker.port
            ),
            SOURCE_STATIC_BROKER_CONFIG,
            TYPE_STRING,
            "The address Metadata answers name (--kafka-advertise, else the listen address), \
             SSL:// with --kafka-tls-cert.",
        ),
        entry(
            "message.max.bytes",
            KAFKA_BATCH_SIZE_MAX.to_string(),
            SOURCE_DEFAULT_CONFIG,
            TYPE_INT,
            "The largest Kafka record batch Spate accepts.",
        ),
        entry(
            "socket.request.max.bytes",
            facts.request_bytes_max.to_string(),
            SOURCE_STATIC_BROKER_CONFIG,
            TYPE_INT,
            "The largest Kafka request the gateway reads (--kafka-request-bytes-max).",
        ),
        entry(
            "max.connections",
            facts.max_connections.to_string(),
            SOURCE_STATIC_BROKER_CONFIG,
            TYPE_INT,
            "Kafka connections the gateway serves at once (--kafka-max-connections).",
        ),
    ]
}

fn config_result(
    version: i16,
    entry: Entry,
    include_synonyms: bool,
    include_documentation: bool,
) -> DescribeConfigsResourceResult {
    let value = Some(StrBytes::from_string(entry.value));
    // Kafka lists an entry's synonyms in order of precedence, the entry itself first; Spate
    // has no other names for its settings.
    let synonyms = if include_synonyms {
        vec![DescribeConfigsSynonym::default()
            .with_name(StrBytes::from_static_str(entry.name))
            .with_value(value.clone())
            .with_source(entry.source)]
    } else {
        Vec::new()
    };
    let result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(entry.name))
        .with_value(value)
        .with_read_only(entry.read_only)
        .with_config_source(entry.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms);
    if version >= 3 {
        result
            .with_config_type(entry.config_type)
            .with_documentation(
                include_documentation.then(|| StrBytes::from_static_str(entry.documentation)),
            )
    } else {
        result
    }
}

/// Whether a DescribeConfigs needs the node's Metadata: it names a topic, or a broker (in a
/// cluster of brokers, this gateway's broker id is its node's, which the members with
/// placement tell; only without them is it broker 0).
pub fn needs_node_map(request: &DescribeConfigsRequest) -> bool {
    request.resources.iter().any(|resource| {
        resource.resource_type == RESOURCE_TOPIC
            || (resource.resource_type == RESOURCE_BROKER
                && !resource.resource_name.as_str().is_empty())
    })
}

/// The DescribeConfigs answer, resource by resource in request order. `node` is the node's
/// whole Metadata answer (or why it could not be had); it is read only for topics.
pub fn describe_configs(
    version: i16,
    request: &DescribeConfigsRequest,
    node: Result<&MetadataResponse, &ErrorResponse>,
    facts: &BrokerFacts,
) -> DescribeConfigsResponse {
    // Documentation exists from v3; a v1/v2 request has no such flag (it decodes as false).
    let include_documentation = version >= 3 && request.include_documentation;
    // This gateway's broker id: 0, or its node's id in a cluster of brokers.
    let (_, (own, _)) = translate::brokers_and_own(node.ok(), &facts.broker);
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let entries: Result<Vec<Entry>, (ResponseError, String)> = match resource.resource_type
            {
                RESOURCE_TOPIC => match node {
                    Err(error) => Err((kafka_error(error.code), error.message.clone())),
                    Ok(map) => map
                        .topics
                        .iter()
                        .find(|topic| topic.name == name)
                        .map(topic_entries)
                        .ok_or_else(|| {
                            (
                                ResponseError::UnknownTopicOrPartition,
                                format!("unknown topic {name:?}"),
                            )
                        }),
                },
                // As Kafka: the empty name asks for the cluster-wide dynamic defaults
                // (Spate has none), a broker id for that broker's settings.
                RESOURCE_BROKER if name.is_empty() => Ok(Vec::new()),
                RESOURCE_BROKER if name == own.to_string() => Ok(broker_entries(facts, own)),
                // Without the node's map this gateway cannot tell its broker id in a cluster
                // (broker 0 is still this gateway when the node is unreachable: a single node
                // or a cluster without Kafka addresses).
                RESOURCE_BROKER if name != BROKER_ID.to_string() && node.is_err() => {
                    Err(match node {
                        Err(error) => (kafka_error(error.code), error.message.clone()),
                        Ok(_) => (ResponseError::UnknownServerError, String::new()),
                    })
                }
                RESOURCE_BROKER => Err((
                    ResponseError::InvalidRequest,
                    format!(
                        "unexpected broker id {name:?}: this gateway is broker {own} (ask each \
                         broker for its own settings, or use the empty name)"
                    ),
                )),
                other => Err((
                    ResponseError::InvalidRequest,
                    format!(
                        "resource type {other} is not described by Spate (TOPIC \
                             {RESOURCE_TOPIC} and BROKER {RESOURCE_BROKER} are)"
                    ),
                )),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match entries {
                Err((error, message)) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
                Ok(entries) => {
                    // Null or empty: every entry (as Kafka's brokers answer); else those named
                    // (names Spate does not have are left out, as Kafka does).
                    let wanted = |entry: &Entry| match &resource.configuration_keys {
                        None => true,
                        Some(keys) => {
                            keys.is_empty() || keys.iter().any(|key| key.as_str() == entry.name)
                        }
                    };
                    result.with_configs(
                        entries
                            .into_iter()
                            .filter(wanted)
                            .map(|entry| {
                                config_result(
                                    version,
                                    entry,
                                    request.include_synonyms,
                                    include_documentation,
                                )
                            })
                            .collect(),
                    )
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The DescribeCluster answer: cluster `spate` and its brokers as Metadata lists them — in
/// a cluster of Kafka brokers ([`translate::cluster_brokers`]; `node` is the node's Metadata
/// with placement) every member, the first the controller; otherwise one broker, this
/// gateway (id 0), also the controller. Asking for controllers (endpoint type 2, v1+) is
/// refused as Kafka's brokers refuse it.
pub fn describe_cluster(
    version: i16,
    request: &DescribeClusterRequest,
    broker: &Broker,
    node: Option<&MetadataResponse>,
) -> DescribeClusterResponse {
    let (brokers, _) = translate::brokers_and_own(node, broker);
    let controller = brokers.first().map_or(BROKER_ID, |(id, _)| *id);
    let answer = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
        .with_controller_id(BrokerId(controller));
    if version >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return answer
            .with_endpoint_type(request.endpoint_type)
            .with_controller_id(BrokerId(-1))
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_string(format!(
                "endpoint type {}: Spate's gateway describes brokers only (type {ENDPOINT_TYPE_BROKERS})",
                request.endpoint_type
            ))));
    }
    let authorized = if request.include_cluster_authorized_operations {
        CLUSTER_AUTHORIZED_OPERATIONS
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    answer
        .with_brokers(
            brokers
                .into_iter()
                .map(|(id, broker)| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id))
                        .with_host(StrBytes::from_string(broker.host))
                        .with_port(broker.port)
                        .with_rack(translate::rack_of(node, id))
                })
                .collect(),
        )
        .with_cluster_authorized_operations(authorized)
}

/// The CreatePartitions answer: every existing topic is refused with INVALID_PARTITIONS
/// (Spate cannot add partitions to a topic yet, DESIGN §3), an unknown one with
/// UNKNOWN_TOPIC_OR_PARTITION, a topic named twice with INVALID_REQUEST (Kafka's rule).
/// Nothing changes, so `validate_only` answers the same.
pub fn create_partitions(
    request: &CreatePartitionsRequest,
    node: Result<&MetadataResponse, &ErrorResponse>,
) -> CreatePartitionsResponse {
    let results = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            let named = request
                .topics
                .iter()
                .filter(|other| other.name == topic.name)
                .count();
            let (error, message) = if named > 1 {
                (
                    ResponseError::InvalidRequest,
                    format!("topic {name:?} is named more than once in the request"),
                )
            } else {
                match node {
                    Err(error) => (kafka_error(error.code), error.message.clone()),
                    Ok(map) => match map.topics.iter().find(|known| known.name == name) {
                        None => (
                            ResponseError::UnknownTopicOrPartition,
                            format!("unknown topic {name:?}"),
                        ),
                        Some(known) => (
                            ResponseError::InvalidPartitions,
                            format!(
                                "topic {name:?} has {} partitions (asked for {}): \
                                 {PARTITIONS_FIXED}",
                                known.partitions.len(),
                                topic.count
                            ),
                        ),
                    },
                }
            };
            CreatePartitionsTopicResult::default()
                .with_name(topic.name.clone())
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message)))
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// IncrementalAlterConfigs operations (Kafka's `AlterConfigOp.OpType`).
pub const OP_SET: i8 = 0;
pub const OP_DELETE: i8 = 1;
pub const OP_APPEND: i8 = 2;
pub const OP_SUBTRACT: i8 = 3;

/// An IncrementalAlterConfigs resource as the node's AlterTopic request. Spate changes a
/// topic's `retention.ms` and `retention.bytes` (SET a value, -1 for unlimited; DELETE back to
/// the node's default) and `min.insync.replicas` (SET a count ≥ 1; DELETE back to 1);
/// `cleanup.policy` may be set to `delete`, what it is; everything else
/// is refused with a message rather than ignored: `segment.bytes` (changed natively with
/// `spate topic alter --segment-bytes`),
/// APPEND/SUBTRACT apply to list settings (Spate has none), a broker's settings are the
/// gateway's command line. A setting named twice is INVALID_REQUEST, as in Kafka.
pub fn alter_topic(
    resource: &kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<spate_proto::AlterTopicRequest, translate::Refusal> {
    match resource.resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return Err((
                ResponseError::InvalidRequest,
                "the broker's settings are the gateway's command-line settings; they cannot be \
                 changed over Kafka"
                    .into(),
            ))
        }
        other => {
            return Err((
                ResponseError::InvalidRequest,
                format!("resource type {other} has no settings in Spate (topics do)"),
            ))
        }
    }
    let mut request = spate_proto::AlterTopicRequest {
        topic: resource.resource_name.to_string(),
        retention_ms: None,
        retention_bytes: None,
        // `segment.bytes` is refused below (Kafka clients change it with `spate topic
        // alter --segment-bytes`).
        segment_bytes: None,
        min_insync_replicas: None,
        validate_only,
    };
    for (index, config) in resource.configs.iter().enumerate() {
        let name = config.name.as_str();
        if resource.configs[..index]
            .iter()
            .any(|earlier| earlier.name == config.name)
        {
            return Err((
                ResponseError::InvalidRequest,
                format!("{name} is named more than once"),
            ));
        }
        let value = config.value.as_ref().map_or("", |value| value.as_str());
        let invalid = |why: &str| (ResponseError::InvalidConfig, format!("{name}: {why}"));
        let setting = match config.config_operation {
            OP_SET => match value.parse::<i64>() {
                Ok(-1) => Some(Setting::Unlimited),
                Ok(number) if number >= 0 => Some(Setting::Value(number.unsigned_abs())),
                _ => None,
            },
            OP_DELETE => Some(Setting::Default),
            OP_APPEND | OP_SUBTRACT => {
                return Err(invalid(
                    "APPEND and SUBTRACT apply to list settings; Spate's are single values",
                ))
            }
            other => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("{name}: unknown operation {other}"),
                ))
            }
        };
        match name {
            "retention.ms" | "retention.bytes" => {
                let setting = setting.ok_or_else(|| {
                    invalid(&format!(
                        "{value:?}: expected -1 (unlimited) or a number ≥ 0"
                    ))
                })?;
                if name == "retention.ms" {
                    request.retention_ms = Some(setting);
                } else {
                    request.retention_bytes = Some(setting);
                }
            }
            "min.insync.replicas" => {
                let setting = setting
                    .filter(|setting| !matches!(setting, Setting::Unlimited | Setting::Value(0)))
                    .ok_or_else(|| {
                        invalid(&format!("{value:?}: expected a number of replicas ≥ 1"))
                    })?;
                request.min_insync_replicas = Some(setting);
            }
            "cleanup.policy" if config.config_operation == OP_DELETE || value == "delete" => {}
            "cleanup.policy" => {
                return Err(invalid(
                    "Spate deletes by retention only; compaction is not supported",
                ))
            }
            "segment.bytes" => {
                return Err(invalid(
                    "not changed through Kafka in this Spate version; use `spate topic alter \
                     --segment-bytes`",
                ))
            }
            _ => {
                return Err(invalid(
                    "not a setting Spate can change (it changes retention.ms, retention.bytes \
                     and min.insync.replicas)",
                ))
            }
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable};
    use spate_proto::{ErrorCode, PartitionId, PartitionMetadata, ShardId};

    use super::*;
    use crate::versions::supported;

    fn node_map() -> MetadataResponse {
        MetadataResponse {
            members: None,
            racks: false,
            settings: false,
            shards: vec![],
            topics: vec![TopicMetadata {
                replicas: Vec::new(),
                name: "clicks".into(),
                retention_ms: Setting::Value(3_600_000),
                retention_bytes: Setting::Unlimited,
                segment_bytes: Setting::Value(1 << 20),
                min_insync_replicas: Setting::Value(2),
                partitions: (0..2)
                    .map(|partition| PartitionMetadata {
                        partition: PartitionId(partition),
                        shard: ShardId(0),
                    })
                    .collect(),
            }],
        }
    }

    fn facts() -> BrokerFacts {
        BrokerFacts {
            broker: Broker {
                host: "::1".into(),
                port: 19092,
            },
            request_bytes_max: 100 << 20,
            max_connections: 1024,
            tls: false,
        }
    }

    fn resource(resource_type: i8, name: &'static str) -> DescribeConfigsResource {
        DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_static_str(name))
            .with_configuration_keys(None)
    }

    fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
        let (min, max) = supported(key).unwrap();
        min..=max
    }

    /// Encodes `body` at `version` and decodes it back (with the crate's client half).
    fn round_trip<T: Encodable + Decodable>(body: &T, version: i16) -> T {
        let mut bytes = BytesMut::new();
        body.encode(&mut bytes, version)
            .unwrap_or_else(|error| panic!("v{version} does not encode: {error}"));
        let mut bytes = bytes.freeze();
        let decoded = T::decode(&mut bytes, version).unwrap();
        assert!(bytes.is_empty(), "v{version}: bytes left after decoding");
        decoded
    }

    fn value<'a>(result: &'a DescribeConfigsResult, name: &str) -> Option<&'a str> {
        result
            .configs
            .iter()
            .find(|config| config.name.as_str() == name)
            .and_then(|config| config.value.as_ref())
            .map(|value| value.as_str())
    }

    #[test]
    fn a_topic_is_described_with_its_settings_and_spates_facts() {
        let map = node_map();
        let request = DescribeConfigsRequest::default().with_resources(vec![
            resource(RESOURCE_TOPIC, "clicks"),
            resource(RESOURCE_TOPIC, "nope"),
        ]);
        let answer = describe_configs(4, &request, Ok(&map), &facts());
        let clicks = &answer.results[0];
        assert_eq!(clicks.error_code, 0);
        assert_eq!(clicks.resource_type, RESOURCE_TOPIC);
        assert_eq!(clicks.resource_name.as_str(), "clicks");
        assert_eq!(value(clicks, "retention.ms"), Some("3600000"));
        assert_eq!(value(clicks, "retention.bytes"), Some("-1"));
        assert_eq!(value(clicks, "segment.bytes"), Some("1048576"));
        assert_eq!(value(clicks, "cleanup.policy"), Some("delete"));
        assert_eq!(value(clicks, "max.message.bytes"), Some("1048565"));
        assert_eq!(value(clicks, "message.timestamp.type"), Some("CreateTime"));
        assert_eq!(value(clicks, "compression.type"), Some("producer"));
        assert_eq!(value(clicks, "min.insync.replicas"), Some("2"));
        assert_eq!(clicks.configs.len(), 8);
        // The node says the effective value, not whose it is.
        let retention = &clicks.configs[0];
        assert_eq!(retention.config_source, SOURCE_UNKNOWN);
        // Retention and min.insync.replicas change with IncrementalAlterConfigs; the segment
        // size and the facts do not.
        assert!(!retention.read_only && !retention.is_sensitive);
        assert!(!clicks.configs[1].read_only);
        assert!(clicks.configs[2].read_only);
        assert_eq!(clicks.configs[3].name.as_str(), "min.insync.replicas");
        assert!(!clicks.configs[3].read_only);
        assert!(clicks.configs[4..].iter().all(|entry| entry.read_only));
        assert!(retention.synonyms.is_empty() && retention.documentation.is_none());
        assert_eq!(retention.config_type, TYPE_LONG);
        let policy = &clicks.configs[4];
        assert_eq!(policy.config_source, SOURCE_DEFAULT_CONFIG);

        let nope = &answer.results[1];
        assert_eq!(
            nope.error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert!(nope.configs.is_empty());
        assert!(nope.error_message.as_ref().unwrap().contains("nope"));

        // The node unreachable: its retriable error, per topic.
        let down = ErrorResponse::new(ErrorCode::Unavailable, "down");
        let answer = describe_configs(4, &request, Err(&down), &facts());
        assert!(answer
            .results
            .iter()
            .all(|result| result.error_code == ResponseError::LeaderNotAvailable.code()));
    }

    #[test]
    fn a_settings_node_default_is_reported_as_the_documented_default() {
        let mut map = node_map();
        map.topics[0].retention_ms = Setting::Default;
        map.topics[0].retention_bytes = Setting::Default;
        map.topics[0].segment_bytes = Setting::Default;
        let request = DescribeConfigsRequest::default()
            .with_resources(vec![resource(RESOURCE_TOPIC, "clicks")]);
        let answer = describe_configs(1, &request, Ok(&map), &facts());
        let clicks = &answer.results[0];
        assert_eq!(value(clicks, "retention.ms"), Some("604800000"));
        assert_eq!(value(clicks, "retention.bytes"), Some("-1"));
        assert_eq!(value(clicks, "segment.bytes"), Some("1073741824"));
        assert!(clicks.configs[..3]
            .iter()
            .all(|config| config.config_source == SOURCE_DEFAULT_CONFIG));
    }

    #[test]
    fn keys_synonyms_and_documentation_are_honoured() {
        let map = node_map();
        let keys = |keys: Option<Vec<&'static str>>| {
            resource(RESOURCE_TOPIC, "clicks").with_configuration_keys(
                keys.map(|keys| keys.into_iter().map(StrBytes::from_static_str).collect()),
            )
        };
        let request = DescribeConfigsRequest::default()
            .with_resources(vec![
                keys(Some(vec![
                    "segment.bytes",
                    "unclean.leader.election.enable",
                ])),
                keys(Some(vec![])),
            ])
            .with_include_synonyms(true)
            .with_include_documentation(true);
        let answer = describe_configs(3, &request, Ok(&map), &facts());
        let named = &answer.results[0].configs;
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].name.as_str(), "segment.bytes");
        assert_eq!(named[0].synonyms.len(), 1);
        assert_eq!(named[0].synonyms[0].name.as_str(), "segment.bytes");
        assert_eq!(named[0].synonyms[0].value, named[0].value);
        assert!(named[0].documentation.is_some());
        assert_eq!(named[0].config_type, TYPE_INT);
        assert_eq!(answer.results[1].configs.len(), 8);
        let all = &answer.results[1].configs;
        let min_insync = all
            .iter()
            .find(|config| config.name.as_str() == "min.insync.replicas")
            .unwrap();
        assert_eq!(min_insync.value.as_deref(), Some("2"));
        assert!(!min_insync.read_only);
        // v1/v2 have no documentation or type: they keep the crate's defaults.
        let answer = describe_configs(2, &request, Ok(&map), &facts());
        let named = &answer.results[0].configs;
        let absent = DescribeConfigsResourceResult::default();
        assert_eq!(named[0].documentation, absent.documentation);
        assert_eq!(named[0].config_type, absent.config_type);
        assert_eq!(named[0].synonyms.len(), 1);
    }

    #[test]
    fn the_broker_states_the_gateways_settings_and_other_types_are_refused() {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            resource(RESOURCE_BROKER, "0"),
            resource(RESOURCE_BROKER, ""),
            resource(RESOURCE_BROKER, "3"),
            resource(8, "0"),
        ]);
        // A broker is named: the node's map tells which broker this gateway is. Only the
        // cluster-wide defaults (the empty name) need no map.
        assert!(needs_node_map(&request));
        assert!(needs_node_map(
            &DescribeConfigsRequest::default().with_resources(vec![resource(RESOURCE_BROKER, "0")])
        ));
        assert!(!needs_node_map(
            &DescribeConfigsRequest::default().with_resources(vec![resource(RESOURCE_BROKER, "")])
        ));
        let single = MetadataResponse {
            shards: vec![],
            topics: vec![],
            settings: true,
            members: None,
            racks: false,
        };
        let answer = describe_configs(4, &request, Ok(&single), &facts());
        let broker = &answer.results[0];
        assert_eq!(broker.error_code, 0);
        assert_eq!(value(broker, "broker.id"), Some("0"));
        assert_eq!(
            value(broker, "advertised.listeners"),
            Some("PLAINTEXT://[::1]:19092")
        );
        assert_eq!(value(broker, "message.max.bytes"), Some("1048565"));
        assert_eq!(value(broker, "socket.request.max.bytes"), Some("104857600"));
        assert_eq!(value(broker, "max.connections"), Some("1024"));
        assert_eq!(answer.results[1].error_code, 0);
        assert!(answer.results[1].configs.is_empty());
        for refused in &answer.results[2..] {
            assert_eq!(refused.error_code, ResponseError::InvalidRequest.code());
            assert!(refused.error_message.is_some());
            assert!(refused.configs.is_empty());
        }
        // The node unreachable: broker 0 still answers, broker 3 gets the retriable error.
        let down = ErrorResponse::new(ErrorCode::Unavailable, "down");
        let answer = describe_configs(4, &request, Err(&down), &facts());
        assert_eq!(answer.results[0].error_code, 0);
        assert_eq!(
            answer.results[2].error_code,
            kafka_error(ErrorCode::Unavailable).code()
        );
        // In a cluster of brokers this gateway is its node's broker (the member at its
        // advertised address), and only that broker's settings are its to state.
        let cluster = MetadataResponse {
            members: Some(vec![
                spate_proto::MemberAddress {
                    node: 2,
                    kafka: "127.0.0.1:9092".into(),
                    rack: String::new(),
                },
                spate_proto::MemberAddress {
                    node: 3,
                    kafka: "[::1]:19092".into(),
                    rack: String::new(),
                },
            ]),
            ..single
        };
        let answer = describe_configs(4, &request, Ok(&cluster), &facts());
        assert_eq!(
            answer.results[0].error_code,
            ResponseError::InvalidRequest.code()
        );
        assert_eq!(answer.results[2].error_code, 0);
        assert_eq!(value(&answer.results[2], "broker.id"), Some("3"));
    }

    #[test]
    fn describe_configs_encodes_at_every_served_version() {
        let map = node_map();
        let request = DescribeConfigsRequest::default()
            .with_resources(vec![
                resource(RESOURCE_TOPIC, "clicks"),
                resource(RESOURCE_TOPIC, "nope"),
                resource(RESOURCE_BROKER, "0"),
                resource(16, "x"),
            ])
            .with_include_synonyms(true)
            .with_include_documentation(true);
        for version in versions(ApiKey::DescribeConfigs) {
            let answer = describe_configs(version, &request, Ok(&map), &facts());
            let decoded = round_trip(&answer, version);
            assert_eq!(decoded, answer, "v{version}");
            assert_eq!(decoded.results.len(), 4);
        }
        let known = ApiKey::DescribeConfigs.valid_versions();
        assert_eq!(
            (known.min, known.max),
            supported(ApiKey::DescribeConfigs).unwrap()
        );
    }

    #[test]
    fn describe_cluster_names_this_gateway_at_every_served_version() {
        let broker = facts().broker;
        for version in versions(ApiKey::DescribeCluster) {
            for asked in [false, true] {
                let request = DescribeClusterRequest::default()
                    .with_include_cluster_authorized_operations(asked);
                let answer =
                    round_trip(&describe_cluster(version, &request, &broker, None), version);
                assert_eq!(answer.error_code, 0);
                assert_eq!(answer.cluster_id.as_str(), CLUSTER_ID);
                assert_eq!(answer.controller_id, BrokerId(BROKER_ID));
                assert_eq!(answer.brokers.len(), 1);
                assert_eq!(answer.brokers[0].broker_id, BrokerId(BROKER_ID));
                assert_eq!(answer.brokers[0].host.as_str(), "::1");
                assert_eq!(answer.brokers[0].port, 19092);
                assert_eq!(answer.endpoint_type, ENDPOINT_TYPE_BROKERS);
                let authorized = if asked {
                    CLUSTER_AUTHORIZED_OPERATIONS
                } else {
                    i32::MIN
                };
                assert_eq!(answer.cluster_authorized_operations, authorized);
            }
        }
        let controllers = DescribeClusterRequest::default().with_endpoint_type(2);
        let answer = round_trip(&describe_cluster(1, &controllers, &broker, None), 1);
        assert_eq!(
            answer.error_code,
            ResponseError::UnsupportedEndpointType.code()
        );
        assert!(answer.brokers.is_empty());
        // DescribeCluster v2 adds fenced brokers, not served.
        assert_eq!(supported(ApiKey::DescribeCluster), Some((0, 1)));
        // In a cluster of Kafka brokers: every member, as Metadata lists them.
        let mut node = node_map();
        node.settings = true;
        node.members = Some(vec![
            spate_proto::MemberAddress {
                node: 4,
                kafka: "10.0.0.4:9092".into(),
                rack: String::new(),
            },
            spate_proto::MemberAddress {
                node: 5,
                kafka: "10.0.0.5:9092".into(),
                rack: String::new(),
            },
        ]);
        let request = DescribeClusterRequest::default();
        let answer = round_trip(&describe_cluster(1, &request, &broker, Some(&node)), 1);
        let listed: Vec<(i32, String)> = answer
            .brokers
            .iter()
            .map(|broker| (broker.broker_id.0, broker.host.to_string()))
            .collect();
        assert_eq!(
            listed,
            vec![(4, "10.0.0.4".to_owned()), (5, "10.0.0.5".to_owned())]
        );
        assert_eq!(answer.controller_id, BrokerId(4));
    }

    #[test]
    fn create_partitions_is_refused_with_a_clear_error_at_every_served_version() {
        let map = node_map();
        let topic = |name: &'static str, count| {
            CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(name)))
                .with_count(count)
        };
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![topic("clicks", 4), topic("nope", 2)])
            .with_validate_only(true);
        for version in versions(ApiKey::CreatePartitions) {
            let answer = round_trip(&create_partitions(&request, Ok(&map)), version);
            let clicks = &answer.results[0];
            assert_eq!(clicks.name.0.as_str(), "clicks");
            assert_eq!(clicks.error_code, ResponseError::InvalidPartitions.code());
            let message = clicks.error_message.as_ref().unwrap();
            assert!(message.contains(PARTITIONS_FIXED), "{message}");
            assert!(message.contains("has 2 partitions"), "{message}");
            assert!(!ResponseError::InvalidPartitions.is_retriable());
            assert_eq!(
                answer.results[1].error_code,
                ResponseError::UnknownTopicOrPartition.code()
            );
        }
        let twice = CreatePartitionsRequest::default()
            .with_topics(vec![topic("clicks", 4), topic("clicks", 5)]);
        let answer = create_partitions(&twice, Ok(&map));
        assert!(answer
            .results
            .iter()
            .all(|result| result.error_code == ResponseError::InvalidRequest.code()));
        let down = ErrorResponse::new(ErrorCode::Unavailable, "down");
        let answer = create_partitions(&request, Err(&down));
        assert_eq!(
            answer.results[0].error_code,
            ResponseError::LeaderNotAvailable.code()
        );
    }

    fn alterable(
        resource_type: i8,
        configs: &[(&'static str, Option<&'static str>, i8)],
    ) -> kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_static_str("t"))
            .with_configs(
                configs
                    .iter()
                    .map(|(name, value, op)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_static_str(name))
                            .with_value(value.map(StrBytes::from_static_str))
                            .with_config_operation(*op)
                    })
                    .collect(),
            )
    }

    #[test]
    fn incremental_alter_configs_changes_retention_and_refuses_the_rest_with_reasons() {
        let alter = alter_topic(
            &alterable(
                RESOURCE_TOPIC,
                &[
                    ("retention.ms", Some("60000"), OP_SET),
                    ("retention.bytes", None, OP_DELETE),
                    ("cleanup.policy", Some("delete"), OP_SET),
                ],
            ),
            true,
        )
        .unwrap();
        assert_eq!(alter.retention_ms, Some(Setting::Value(60_000)));
        assert_eq!(alter.retention_bytes, Some(Setting::Default));
        assert!(alter.validate_only);
        let unlimited = alter_topic(
            &alterable(RESOURCE_TOPIC, &[("retention.bytes", Some("-1"), OP_SET)]),
            false,
        )
        .unwrap();
        assert_eq!(unlimited.retention_ms, None, "untouched settings stay");
        assert_eq!(unlimited.retention_bytes, Some(Setting::Unlimited));
        let min_insync = alter_topic(
            &alterable(
                RESOURCE_TOPIC,
                &[("min.insync.replicas", Some("2"), OP_SET)],
            ),
            false,
        )
        .unwrap();
        assert_eq!(min_insync.min_insync_replicas, Some(Setting::Value(2)));
        let back = alter_topic(
            &alterable(RESOURCE_TOPIC, &[("min.insync.replicas", None, OP_DELETE)]),
            false,
        )
        .unwrap();
        assert_eq!(back.min_insync_replicas, Some(Setting::Default));
        for (resource, error) in [
            (
                alterable(
                    RESOURCE_TOPIC,
                    &[("segment.bytes", Some("1048576"), OP_SET)],
                ),
                ResponseError::InvalidConfig,
            ),
            (
                alterable(RESOURCE_TOPIC, &[("retention.ms", Some("-5"), OP_SET)]),
                ResponseError::InvalidConfig,
            ),
            (
                alterable(
                    RESOURCE_TOPIC,
                    &[("cleanup.policy", Some("compact"), OP_SET)],
                ),
                ResponseError::InvalidConfig,
            ),
            (
                alterable(RESOURCE_TOPIC, &[("retention.ms", Some("1"), OP_APPEND)]),
                ResponseError::InvalidConfig,
            ),
            (
                alterable(
                    RESOURCE_TOPIC,
                    &[("min.insync.replicas", Some("0"), OP_SET)],
                ),
                ResponseError::InvalidConfig,
            ),
            (
                alterable(
                    RESOURCE_TOPIC,
                    &[("min.insync.replicas", Some("-1"), OP_SET)],
                ),
                ResponseError::InvalidConfig,
            ),
            (
                alterable(
                    RESOURCE_TOPIC,
                    &[("unclean.leader.election.enable", Some("true"), OP_SET)],
                ),
                ResponseError::InvalidConfig,
            ),
            (
                alterable(RESOURCE_TOPIC, &[("retention.ms", Some("1"), 9)]),
                ResponseError::InvalidRequest,
            ),
            (
                alterable(
                    RESOURCE_TOPIC,
                    &[
                        ("retention.ms", Some("1"), OP_SET),
                        ("retention.ms", Some("2"), OP_SET),
                    ],
                ),
                ResponseError::InvalidRequest,
            ),
            (
                alterable(RESOURCE_BROKER, &[("log.retention.ms", Some("1"), OP_SET)]),
                ResponseError::InvalidRequest,
            ),
        ] {
            let (code, message) = alter_topic(&resource, false).unwrap_err();
            assert_eq!(code, error, "{message}");
            assert!(!message.is_empty());
        }
    }
}
