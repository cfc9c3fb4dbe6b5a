//! Kafka requests as Spate node requests, and node answers as Kafka responses: which node
//! request each part of a Kafka request becomes, and how the answers assemble. Pure; the
//! gateway's `kafka` module sends the node requests and waits for their answers.

use bytes::Bytes;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    BrokerId, DeleteRecordsResponse, FetchResponse, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use spate_proto::{Durability, ErrorResponse, OffsetSpec, ReadEpochs, RecordTarget};

use crate::batch::KafkaRecords;
use crate::errors::kafka_error;

/// The one broker a Kafka client sees: this gateway, at its advertised address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: i32,
}

/// The broker id Spate's gateway answers with (one broker: itself).
pub const BROKER_ID: i32 = 0;

/// The cluster id in Metadata and DescribeCluster answers.
pub const CLUSTER_ID: &str = "spate";

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// The durability a produce's `acks` asks for: all (-1) → `fsync`, the leader (1) →
/// `write`, none (0) → `none` (and no answer). Anything else is INVALID_REQUIRED_ACKS.
pub fn durability(acks: i16) -> Result<Durability, ResponseError> {
    match acks {
        -1 => Ok(Durability::Fsync),
        1 => Ok(Durability::Write),
        0 => Ok(Durability::None),
        _ => Err(ResponseError::InvalidRequiredAcks),
    }
}

/// Splits `HOST:PORT` (`[v6]:PORT` too) for Metadata answers; `None` for an empty host or
/// port 0.
pub fn host_port(address: &str) -> Option<Broker> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| Broker {
        host: host.to_owned(),
        port: i32::from(port),
    })
}

/// A cluster's brokers, when the node's answer carries placement and every member publishes
/// a Kafka address (`spate-node --kafka-address`): each member is a broker (broker id = node
/// id) at that address. `None` otherwise: this gateway is then the one broker.
pub fn cluster_brokers(node: &spate_proto::MetadataResponse) -> Option<Vec<(i32, Broker)>> {
    let members = node.members.as_ref()?;
    if members.is_empty() {
        return None;
    }
    members
        .iter()
        .map(|member| Some((i32::try_from(member.node).ok()?, host_port(&member.kafka)?)))
        .collect()
}

/// The rack of broker `id` (a member's `--rack`, when the node's answer carries racks); `None`
/// without one (Kafka's null rack).
pub fn rack_of(node: Option<&spate_proto::MetadataResponse>, id: i32) -> Option<StrBytes> {
    let id = u32::try_from(id).ok()?;
    node?
        .members
        .as_ref()?
        .iter()
        .find(|member| member.node == id && !member.rack.is_empty())
        .map(|member| StrBytes::from_string(member.rack.clone()))
}

/// The brokers a Kafka answer lists (the cluster's, or this gateway as broker 0) and the one
/// that is this gateway: the listed broker at this gateway's advertised address, else the
/// first (any gateway serves every request).
pub fn brokers_and_own(
    node: Option<&spate_proto::MetadataResponse>,
    broker: &Broker,
) -> (Vec<(i32, Broker)>, (i32, Broker)) {
    let listed = node
        .and_then(cluster_brokers)
        .unwrap_or_else(|| vec![(BROKER_ID, broker.clone())]);
    let own = listed
        .iter()
        .find(|(_, listed)| listed == broker)
        .or_else(|| listed.first())
        .cloned()
        .unwrap_or_else(|| (BROKER_ID, broker.clone()));
    (listed, own)
}

/// The Metadata answer. `node` is the node's whole partition map (or why it could not be
/// had). Every topic is asked for by `topics` null (v1+) or empty (v0). In a cluster whose
/// members publish Kafka addresses ([`cluster_brokers`]) every member is a broker and each
/// partition names its leader, replicas and ISR by node id (a partition without a leader:
/// LEADER_NOT_AVAILABLE) and its leader epoch (KIP-320: clients then send it with their
/// fetches and validate their positions with OffsetForLeaderEpoch after a leader change);
/// otherwise this gateway is the one broker and leads everything, without epochs (-1: a
/// single node has none, and clients skip the checks).
pub fn metadata_response(
    version: i16,
    request: &MetadataRequest,
    node: Result<&spate_proto::MetadataResponse, &ErrorResponse>,
    broker: &Broker,
) -> MetadataResponse {
    let cluster = node.ok().and_then(cluster_brokers);
    let (listed, _) = brokers_and_own(node.ok(), broker);
    let controller = listed.first().map_or(BROKER_ID, |(id, _)| *id);
    let brokers = listed
        .iter()
        .map(|(id, broker)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(*id))
                .with_host(StrBytes::from_string(broker.host.clone()))
                .with_port(broker.port)
                .with_rack(rack_of(node.ok(), *id))
        })
        .collect();
    let ids = |nodes: &[u32]| -> Vec<BrokerId> {
        nodes
            .iter()
            .filter_map(|node| i32::try_from(*node).ok())
            .map(BrokerId)
            .collect()
    };
    let known = |name: &str| match node {
        Ok(map) => map.topics.iter().find(|topic| topic.name == name),
        Err(_) => None,
    };
    let describe = |topic: &spate_proto::TopicMetadata| {
        MetadataResponseTopic::default()
            .with_name(Some(topic_name(&topic.name)))
            .with_is_internal(topic.name == spate_proto::OFFSETS_TOPIC)
            .with_partitions(
                topic
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(index, partition)| {
                        let answer = MetadataResponsePartition::default()
                            .with_partition_index(
                                i32::try_from(partition.partition.0).unwrap_or(i32::MAX),
                            )
                            .with_leader_epoch(-1);
                        let placed = topic.replicas.get(index);
                        match (&cluster, placed) {
                            (Some(_), Some(placed)) => {
                                let leader = placed
                                    .leader
                                    .and_then(|leader| i32::try_from(leader).ok())
                                    .filter(|leader| listed.iter().any(|(id, _)| id == leader));
                                let answer = answer
                                    .with_leader_epoch(leader_epoch(placed.epoch))
                                    .with_replica_nodes(ids(&placed.replicas))
                                    .with_isr_nodes(ids(&placed.isr));
                                match leader {
                                    Some(leader) => answer.with_leader_id(BrokerId(leader)),
                                    None => answer
                                        .with_leader_id(BrokerId(-1))
                                        .with_error_code(ResponseError::LeaderNotAvailable.code()),
                                }
                            }
                            _ => answer
                                .with_leader_id(BrokerId(BROKER_ID))
                                .with_replica_nodes(vec![BrokerId(BROKER_ID)])
                                .with_isr_nodes(vec![BrokerId(BROKER_ID)]),
                        }
                    })
                    .collect(),
            )
    };
    let unavailable = match node {
        Ok(_) => None,
        Err(error) => Some(kafka_error(error.code)),
    };
    let every = match &request.topics {
        None => None,
        Some(topics) if version == 0 && topics.is_empty() => None,
        Some(topics) => Some(topics),
    };
    let topics = match every {
        None => match node {
            Ok(map) => map.topics.iter().map(describe).collect(),
            Err(_) => Vec::new(),
        },
        Some(wanted) => wanted
            .iter()
            .filter_map(|wanted| wanted.name.as_ref())
            .map(|name| match known(name.as_str()) {
                Some(topic) => describe(topic),
                None => MetadataResponseTopic::default()
                    .with_name(Some(name.clone()))
                    .with_error_code(
                        unavailable
                            .unwrap_or(ResponseError::UnknownTopicOrPartition)
                            .code(),
                    ),
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
}

/// A Kafka leader epoch from the node's: 0 is "no leader yet" there, and Kafka's epochs are
/// `i32`; either way -1, "unknown" (clients then skip KIP-320's checks).
fn leader_epoch(epoch: u32) -> i32 {
    i32::try_from(epoch)
        .ok()
        .filter(|epoch| *epoch > 0)
        .unwrap_or(-1)
}

/// The epoch a Kafka request says the reader believes current (`current_leader_epoch`): none
/// (nothing is checked) for -1 or a version without the field, and for 0, which librdkafka
/// sends when it knows no epoch (Spate's epochs start at 1).
pub fn current_epoch(epoch: i32) -> Option<u32> {
    u32::try_from(epoch).ok().filter(|epoch| *epoch > 0)
}

/// What a partition read asks the node about epochs: always the epochs of the answer (a
/// single node has none and answers without), and the reader's current epoch if it gave one.
pub fn read_epochs(current_leader_epoch: i32) -> ReadEpochs {
    ReadEpochs {
        answer: true,
        current: current_epoch(current_leader_epoch),
    }
}

/// What a ListOffsets partition asks the node for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The node's ListOffsets: earliest or latest.
    Offsets(OffsetSpec),
    /// A record by time (the node's FindRecord, which also says the record's timestamp).
    Record(RecordTarget),
}

/// What a ListOffsets timestamp asks for: latest (-1), earliest (-2), the record with the
/// newest timestamp (-3, KIP-734), or the first record at or after a time. The later special
/// values (-4 earliest local, -5 latest tiered) are for tiered storage, which Spate does
/// not have (their versions are not served).
pub fn offset_spec(timestamp: i64) -> Result<Lookup, ResponseError> {
    match timestamp {
        -1 => Ok(Lookup::Offsets(OffsetSpec::Latest)),
        -2 => Ok(Lookup::Offsets(OffsetSpec::Earliest)),
        -3 => Ok(Lookup::Record(RecordTarget::Newest)),
        time if time >= 0 => Ok(Lookup::Record(RecordTarget::AtOrAfter(time))),
        _ => Err(ResponseError::InvalidRequest),
    }
}

/// A node's answer to a ListOffsets partition: the offset found, its record's timestamp
/// (-1 where the node does not say), and the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub offset: u64,
    pub timestamp: i64,
    pub high_watermark: u64,
    /// The epoch of the record at `offset` (the latest at the high watermark), when the node
    /// has epochs.
    pub leader_epoch: Option<u32>,
}

impl From<spate_proto::ListOffsetsResponse> for Found {
    fn from(found: spate_proto::ListOffsetsResponse) -> Self {
        Found {
            offset: found.offset,
            timestamp: -1,
            high_watermark: found.high_watermark,
            leader_epoch: found.leader_epoch,
        }
    }
}

impl From<spate_proto::FindRecordResponse> for Found {
    fn from(found: spate_proto::FindRecordResponse) -> Self {
        Found {
            offset: found.offset,
            timestamp: found.timestamp,
            high_watermark: found.high_watermark,
            leader_epoch: found.leader_epoch,
        }
    }
}

/// The node's DeleteRecords offset for Kafka's: -1 is the high watermark; other negative
/// offsets are OFFSET_OUT_OF_RANGE (Kafka's answer).
pub fn delete_records_offset(offset: i64) -> Result<u64, ResponseError> {
    match offset {
        -1 => Ok(spate_proto::DELETE_RECORDS_TO_HIGH_WATERMARK),
        offset => u64::try_from(offset).map_err(|_| ResponseError::OffsetOutOfRange),
    }
}

/// One partition's DeleteRecords answer from the node's: the new log start as the low
/// watermark, or the error (-1 as the low watermark then, as Kafka answers).
pub fn delete_records_partition(
    index: i32,
    offset: Result<u64, ResponseError>,
    answer: Result<spate_proto::DeleteRecordsResponse, ErrorResponse>,
) -> DeleteRecordsPartitionResult {
    let partition = DeleteRecordsPartitionResult::default()
        .with_partition_index(index)
        .with_low_watermark(-1);
    if let Err(error) = offset {
        return partition.with_error_code(error.code());
    }
    match answer {
        Err(error) => partition.with_error_code(kafka_error(error.code).code()),
        Ok(moved) => {
            partition.with_low_watermark(i64::try_from(moved.log_start_offset).unwrap_or(i64::MAX))
        }
    }
}

/// Assembles DeleteRecords topics from per-partition answers in request order.
pub fn delete_records_response(
    topics: Vec<(TopicName, Vec<DeleteRecordsPartitionResult>)>,
) -> DeleteRecordsResponse {
    DeleteRecordsResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                DeleteRecordsTopicResult::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

/// One partition's ListOffsets answer from the node's. No record at or after a timestamp is
/// offset -1 (Kafka's answer), where the node answers with the high watermark. The offset's
/// leader epoch is given from v4 (before, the field does not exist).
pub fn list_offsets_partition(
    version: i16,
    index: i32,
    spec: Result<Lookup, ResponseError>,
    answer: Result<Found, ErrorResponse>,
) -> ListOffsetsPartitionResponse {
    let partition = ListOffsetsPartitionResponse::default().with_partition_index(index);
    let spec = match spec {
        Ok(spec) => spec,
        Err(error) => return partition.with_error_code(error.code()),
    };
    match answer {
        Err(error) => partition
            .with_error_code(kafka_error(error.code).code())
            .with_offset(-1)
            .with_timestamp(-1),
        Ok(found) => {
            let offset = i64::try_from(found.offset).unwrap_or(i64::MAX);
            // By time or newest time with no such record: -1 (Kafka's answer).
            let searched = matches!(spec, Lookup::Record(_));
            if searched && found.offset >= found.high_watermark {
                return partition.with_offset(-1).with_timestamp(-1);
            }
            let epoch = found
                .leader_epoch
                .filter(|_| version >= 4)
                .and_then(|epoch| i32::try_from(epoch).ok())
                .unwrap_or(-1);
            partition
                .with_offset(offset)
                .with_timestamp(found.timestamp)
                .with_leader_epoch(epoch)
        }
    }
}

/// What an OffsetForLeaderEpoch partition asks the node: the end of its leader epoch (`None`
/// for Kafka's undefined epoch, -1, whose answer is undefined too), checked against the
/// reader's current epoch.
pub type EpochLookup = (Option<u32>, ReadEpochs);

/// The node request an OffsetForLeaderEpoch partition becomes: a ListOffsets of the epoch's
/// end (`OffsetSpec::EpochEnd`), or of the latest offset for an undefined epoch (the reader's
/// current epoch is still checked, as Kafka does).
pub fn epoch_end_request(
    topic: &TopicName,
    partition: spate_proto::PartitionId,
    (epoch, epochs): &EpochLookup,
) -> spate_proto::ListOffsetsRequest {
    spate_proto::ListOffsetsRequest {
        topic: topic.0.to_string(),
        partition,
        spec: epoch.map_or(OffsetSpec::Latest, OffsetSpec::EpochEnd),
        epochs: *epochs,
    }
}

/// What an OffsetForLeaderEpoch partition asks (its `leader_epoch` and
/// `current_leader_epoch`).
pub fn epoch_lookup(leader_epoch: i32, current_leader_epoch: i32) -> EpochLookup {
    (
        u32::try_from(leader_epoch).ok(),
        read_epochs(current_leader_epoch),
    )
}

/// One partition's OffsetForLeaderEpoch answer (KIP-320) from the node's: the largest epoch
/// of the leader's chain at or below the one asked about and where its records end, or -1
/// and -1 when there is none (an epoch above the chain, an undefined one, a node without
/// epochs), as Kafka's `LeaderEpochFileCache::endOffsetFor` answers. `asked` is what the
/// partition asked (`Err`: refused without the node).
pub fn epoch_end_partition(
    index: i32,
    asked: Result<EpochLookup, ResponseError>,
    answer: Result<spate_proto::ListOffsetsResponse, ErrorResponse>,
) -> EpochEndOffset {
    let partition = EpochEndOffset::default()
        .with_partition(index)
        .with_leader_epoch(-1)
        .with_end_offset(-1);
    let asked = match asked {
        Ok(asked) => asked,
        Err(error) => return partition.with_error_code(error.code()),
    };
    match answer {
        Err(error) => partition.with_error_code(kafka_error(error.code).code()),
        Ok(found) => match (asked.0, found.leader_epoch) {
            (Some(_), Some(epoch)) => match (i32::try_from(epoch), i64::try_from(found.offset)) {
                (Ok(epoch), Ok(end)) => partition.with_leader_epoch(epoch).with_end_offset(end),
                _ => partition,
            },
            _ => partition,
        },
    }
}

/// Assembles OffsetForLeaderEpoch topics from per-partition answers in request order.
pub fn offset_for_leader_epoch_response(
    topics: Vec<(TopicName, Vec<EpochEndOffset>)>,
) -> OffsetForLeaderEpochResponse {
    OffsetForLeaderEpochResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetForLeaderTopicResult::default()
                    .with_topic(name)
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

/// Assembles ListOffsets topics from per-partition answers in request order.
pub fn list_offsets_response(
    topics: Vec<(TopicName, Vec<ListOffsetsPartitionResponse>)>,
) -> ListOffsetsResponse {
    ListOffsetsResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                ListOffsetsTopicResponse::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

/// One partition of a Kafka Fetch as the node's Fetch asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPart {
    pub topic: TopicName,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: u32,
    /// The epoch the client believes its leader is in (v9+; -1: none).
    pub current_leader_epoch: i32,
}

/// Bytes of records one Fetch asks of the node over all its partitions (its `max_bytes`,
/// at most this): what one fetch answer can make the gateway hold, plus one batch per
/// partition (the node always answers a partition's first batch whole).
pub const FETCH_RESPONSE_BYTES_MAX: u32 = 64 << 20;

/// Largest read of one partition in one Fetch (the node's `FETCH_BYTES_MAX`).
pub const FETCH_PARTITION_BYTES_MAX: u32 = 8 << 20;

/// The partitions a Fetch asks for, in request order (at most `partitions_max`; more is an
/// INVALID_REQUEST for the whole fetch). Each asks the node for at most its
/// `partition_max_bytes` and what is left of the request's `max_bytes` (at most
/// [`FETCH_RESPONSE_BYTES_MAX`]) after the partitions before it; once that is spent, one
/// byte (the node still answers one whole batch, so no partition starves).
pub fn fetch_parts(
    request: &FetchRequest,
    partitions_max: usize,
) -> Result<Vec<FetchPart>, ResponseError> {
    let mut left = u32::try_from(request.max_bytes.max(0))
        .unwrap_or(0)
        .min(FETCH_RESPONSE_BYTES_MAX);
    let mut parts = Vec::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            if parts.len() == partitions_max {
                return Err(ResponseError::InvalidRequest);
            }
            let asked = u32::try_from(partition.partition_max_bytes.max(0)).unwrap_or(0);
            let max_bytes = asked.min(left).clamp(1, FETCH_PARTITION_BYTES_MAX);
            left = left.saturating_sub(max_bytes);
            parts.push(FetchPart {
                topic: topic.topic.clone(),
                partition: partition.partition,
                offset: partition.fetch_offset,
                max_bytes,
                current_leader_epoch: partition.current_leader_epoch,
            });
        }
    }
    Ok(parts)
}

/// One partition's fetched data: Kafka record batches (already converted), the high
/// watermark and log start, or an error.
#[derive(Debug, Clone)]
pub enum Fetched {
    Data {
        records: KafkaRecords,
        high_watermark: u64,
        log_start_offset: u64,
    },
    Error(ResponseError),
}

/// Assembles a Fetch answer in request order, within the request's `max_bytes` (the first
/// non-empty partition is answered whole even if larger, as KIP-74 allows; later ones that
/// would pass the limit are answered empty, and the client fetches them again).
/// A Fetch answer from the node's, and each partition's records in response order (`None`
/// for a partition answered with an error). The records are not in the response yet: write
/// them around it ([`crate::splice::encode_fetch_response`]) or put them in
/// ([`records_in_place`]).
pub fn fetch_response(
    parts: &[FetchPart],
    fetched: Vec<Fetched>,
    max_bytes: i32,
) -> (FetchResponse, Vec<Option<KafkaRecords>>) {
    let max_bytes = usize::try_from(max_bytes.max(0)).unwrap_or(0);
    let mut total = 0usize;
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut all_records = Vec::with_capacity(parts.len());
    for (part, fetched) in parts.iter().zip(fetched) {
        let data = PartitionData::default().with_partition_index(part.partition);
        let data = match fetched {
            Fetched::Error(error) => {
                all_records.push(None);
                data.with_error_code(error.code())
            }
            Fetched::Data {
                records,
                high_watermark,
                log_start_offset,
            } => {
                let records = if total > 0 && total + records.len() > max_bytes {
                    KafkaRecords::default()
                } else {
                    total += records.len();
                    records
                };
                all_records.push(Some(records));
                let high_watermark = i64::try_from(high_watermark).unwrap_or(i64::MAX);
                data.with_high_watermark(high_watermark)
                    .with_last_stable_offset(high_watermark)
                    .with_log_start_offset(i64::try_from(log_start_offset).unwrap_or(i64::MAX))
                    .with_records(Some(Bytes::new()))
            }
        };
        match topics.last_mut() {
            Some(last) if last.topic == part.topic => last.partitions.push(data),
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(part.topic.clone())
                    .with_partitions(vec![data]),
            ),
        }
    }
    (FetchResponse::default().with_responses(topics), all_records)
}

/// The Fetch response with each partition's records in place (one copy of them): for an
/// encoder that needs them inside the response.
pub fn records_in_place(
    mut response: FetchResponse,
    records: &[Option<KafkaRecords>],
) -> FetchResponse {
    let mut all = records.iter();
    for topic in &mut response.responses {
        for partition in &mut topic.partitions {
            if let Some(Some(records)) = all.next() {
                partition.records = Some(records.to_contiguous());
            }
        }
    }
    response
}

/// Refused with this Kafka error and message.
pub type Refusal = (ResponseError, String);

/// Partitions of a topic created without a count (`num_partitions` -1): Kafka's
/// `num.partitions` default.
pub const DEFAULT_PARTITIONS: u32 = 1;

/// A CreateTopics topic as the node's CreateTopic request. The replication factor goes to the
/// node (-1: its default; a single node keeps one copy, a cluster as many as it has live
/// nodes), which places partitions itself; Spate knows the topic
/// settings `retention.ms`, `retention.bytes`, `segment.bytes`, `min.insync.replicas` (and
/// `cleanup.policy=delete`, what it always does); anything else is refused with
/// INVALID_CONFIG rather than ignored.
pub fn create_topic(
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<spate_proto::CreateTopicRequest, Refusal> {
    let partitions = match topic.num_partitions {
        -1 => DEFAULT_PARTITIONS,
        count => u32::try_from(count)
            .ok()
            .filter(|count| *count > 0)
            .ok_or_else(|| {
                (
                    ResponseError::InvalidPartitions,
                    format!("{count} partitions: a topic has at least one"),
                )
            })?,
    };
    // -1: the node's default; a factor the cluster cannot meet is refused by the node.
    let replication_factor = match topic.replication_factor {
        -1 => 0,
        factor => u16::try_from(factor)
            .ok()
            .filter(|factor| *factor > 0)
            .ok_or_else(|| {
                (
                    ResponseError::InvalidReplicationFactor,
                    format!("replication factor {factor}: a topic has at least one copy"),
                )
            })?,
    };
    if !topic.assignments.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            "manual replica assignment is not supported: Spate places partitions on its shards"
                .into(),
        ));
    }
    let mut request = spate_proto::CreateTopicRequest {
        legacy_layout: false,
        topic: topic.name.0.to_string(),
        partitions,
        retention_ms: spate_proto::Setting::Default,
        retention_bytes: spate_proto::Setting::Default,
        segment_bytes: spate_proto::Setting::Default,
        replication_factor,
        min_insync_replicas: spate_proto::Setting::Default,
    };
    for config in &topic.configs {
        let name = config.name.as_str();
        let value = config
            .value
            .as_ref()
            .map(|value| value.as_str())
            .unwrap_or("");
        let invalid = |why: &str| {
            (
                ResponseError::InvalidConfig,
                format!("{name}={value}: {why}"),
            )
        };
        let limit = |value: &str| -> Result<spate_proto::Setting, Refusal> {
            match value.parse::<i64>() {
                Ok(-1) => Ok(spate_proto::Setting::Unlimited),
                Ok(number) if number >= 0 => Ok(spate_proto::Setting::Value(number.unsigned_abs())),
                _ => Err(invalid("expected -1 (unlimited) or a number ≥ 0")),
            }
        };
        match name {
            "retention.ms" => request.retention_ms = limit(value)?,
            "retention.bytes" => request.retention_bytes = limit(value)?,
            "segment.bytes" => {
                let bytes = value
                    .parse::<u64>()
                    .map_err(|_| invalid("expected a number of bytes"))?;
                request.segment_bytes = spate_proto::Setting::Value(bytes);
            }
            "min.insync.replicas" => {
                let count = value
                    .parse::<u64>()
                    .ok()
                    .filter(|count| *count > 0)
                    .ok_or_else(|| invalid("expected a number of replicas ≥ 1"))?;
                request.min_insync_replicas = spate_proto::Setting::Value(count);
            }
            "cleanup.policy" if value == "delete" => {}
            "cleanup.policy" => {
                return Err(invalid(
                    "Spate deletes by retention only; compaction is not supported",
                ))
            }
            _ => {
                return Err(invalid(
                    "not a setting Spate has (it has retention.ms, retention.bytes, segment.bytes, min.insync.replicas, cleanup.policy=delete)",
                ))
            }
        }
    }
    Ok(request)
}

/// The FindCoordinator error for a transaction coordinator (Spate has no transactions):
/// not retriable, so clients report it at once instead of retrying forever.
pub fn no_transaction_coordinator() -> Refusal {
    (
        ResponseError::TransactionalIdAuthorizationFailed,
        "transactions are not supported by Spate".into(),
    )
}

/// Producer ids a gateway takes from the node at a time (as Kafka's brokers take blocks from
/// their controller): ids of a block not used before the gateway stops are never used.
pub const PRODUCER_ID_BLOCK: u32 = 1000;

/// What an InitProducerId request gets, when no new id is needed: a producer that names its
/// id and epoch (v3+, after a fatal error) gets the next epoch of the same id; a transactional
/// producer is refused (Spate has no transactions).
pub fn init_producer_id(
    request: &kafka_protocol::messages::InitProducerIdRequest,
) -> Result<Option<(i64, i16)>, ResponseError> {
    match &request.transactional_id {
        None => {}
        // Kafka's answer to an empty transactional id.
        Some(id) if id.0.is_empty() => return Err(ResponseError::InvalidRequest),
        Some(_) => return Err(ResponseError::TransactionalIdAuthorizationFailed),
    }
    let producer_id = request.producer_id.0;
    if producer_id < 0 {
        return Ok(None);
    }
    match request.producer_epoch.checked_add(1) {
        Some(epoch) if request.producer_epoch >= 0 => Ok(Some((producer_id, epoch))),
        // The epoch is exhausted (or invalid): a new id.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use spate_proto::{ErrorCode, PartitionId, PartitionMetadata, Setting, ShardId, TopicMetadata};

    use super::*;

    fn node_map() -> spate_proto::MetadataResponse {
        spate_proto::MetadataResponse {
            members: None,
            racks: false,
            settings: false,
            shards: vec![],
            topics: vec![TopicMetadata {
                replicas: Vec::new(),
                min_insync_replicas: Setting::Default,
                name: "clicks".into(),
                retention_ms: Setting::Default,
                retention_bytes: Setting::Default,
                segment_bytes: Setting::Default,
                partitions: (0..3)
                    .map(|partition| PartitionMetadata {
                        partition: PartitionId(partition),
                        shard: ShardId(0),
                    })
                    .collect(),
            }],
        }
    }

    fn broker() -> Broker {
        Broker {
            host: "example.org".into(),
            port: 9092,
        }
    }

    #[test]
    fn metadata_names_this_gateway_and_every_partition() {
        let map = node_map();
        let all = metadata_response(
            4,
            &MetadataRequest::default().with_topics(None),
            Ok(&map),
            &broker(),
        );
        assert_eq!(
            metadata_response(0, &MetadataRequest::default(), Ok(&map), &broker()).topics,
            all.topics
        );
        assert!(
            metadata_response(1, &MetadataRequest::default(), Ok(&map), &broker())
                .topics
                .is_empty()
        );
        assert_eq!(all.brokers.len(), 1);
        assert_eq!(all.brokers[0].host.as_str(), "example.org");
        assert_eq!(all.brokers[0].port, 9092);
        assert_eq!(all.topics.len(), 1);
        assert_eq!(all.topics[0].partitions.len(), 3);
        assert!(all.topics[0]
            .partitions
            .iter()
            .all(|partition| partition.leader_id == BrokerId(BROKER_ID)));

        let one = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name("clicks"))),
            MetadataRequestTopic::default().with_name(Some(topic_name("nope"))),
        ]));
        let answer = metadata_response(4, &one, Ok(&map), &broker());
        assert_eq!(answer.topics.len(), 2);
        assert_eq!(answer.topics[0].error_code, 0);
        assert_eq!(
            answer.topics[1].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        // The node unreachable: a retriable error per topic.
        let down = ErrorResponse::new(ErrorCode::Unavailable, "down");
        let answer = metadata_response(4, &one, Err(&down), &broker());
        assert_eq!(
            answer.topics[0].error_code,
            ResponseError::LeaderNotAvailable.code()
        );
    }

    #[test]
    fn in_a_cluster_of_kafka_addresses_every_member_is_a_broker() {
        use spate_proto::{MemberAddress, PartitionPlacement};
        let mut map = node_map();
        let placed = |leader: Option<u32>| PartitionPlacement {
            leader,
            epoch: 3,
            replicas: vec![2, 1],
            isr: vec![2],
        };
        map.settings = true;
        map.topics[0].replicas = vec![placed(Some(2)), placed(None), placed(Some(1))];
        map.members = Some(vec![
            MemberAddress {
                node: 1,
                kafka: "10.0.0.1:9092".into(),
                rack: String::new(),
            },
            MemberAddress {
                node: 2,
                kafka: "[::1]:9093".into(),
                rack: String::new(),
            },
        ]);
        let all = metadata_response(
            9,
            &MetadataRequest::default().with_topics(None),
            Ok(&map),
            &broker(),
        );
        let brokers: Vec<(i32, String, i32)> = all
            .brokers
            .iter()
            .map(|broker| (broker.node_id.0, broker.host.to_string(), broker.port))
            .collect();
        assert_eq!(
            brokers,
            vec![(1, "10.0.0.1".into(), 9092), (2, "::1".into(), 9093)]
        );
        assert_eq!(all.controller_id, BrokerId(1));
        let partitions = &all.topics[0].partitions;
        assert_eq!(partitions[0].leader_id, BrokerId(2));
        assert_eq!(partitions[0].replica_nodes, vec![BrokerId(2), BrokerId(1)]);
        assert_eq!(partitions[0].isr_nodes, vec![BrokerId(2)]);
        assert_eq!(partitions[0].error_code, 0);
        // KIP-320: each partition's leader epoch (clients send it with their fetches).
        assert_eq!(partitions[0].leader_epoch, 3);
        // No racks carried: every broker's rack is null.
        assert!(all.brokers.iter().all(|broker| broker.rack.is_none()));
        // No leader: LEADER_NOT_AVAILABLE, and the client asks again.
        assert_eq!(partitions[1].leader_id, BrokerId(-1));
        assert_eq!(
            partitions[1].error_code,
            ResponseError::LeaderNotAvailable.code()
        );
        assert_eq!(partitions[2].leader_id, BrokerId(1));
        // A member without a Kafka address: this gateway answers as the one broker.
        map.members.as_mut().unwrap()[1].kafka = String::new();
        let single = metadata_response(
            9,
            &MetadataRequest::default().with_topics(None),
            Ok(&map),
            &broker(),
        );
        assert_eq!(single.brokers.len(), 1);
        assert_eq!(single.brokers[0].node_id, BrokerId(BROKER_ID));
        assert!(single.topics[0]
            .partitions
            .iter()
            .all(|partition| partition.leader_id == BrokerId(BROKER_ID)
                && partition.leader_epoch == -1));
        // A member's rack (`--rack`) goes with its broker.
        map.racks = true;
        map.members.as_mut().unwrap()[1].rack = "eu-west-1b".into();
        map.members.as_mut().unwrap()[1].kafka = "[::1]:9093".into();
        let racked = metadata_response(
            9,
            &MetadataRequest::default().with_topics(None),
            Ok(&map),
            &broker(),
        );
        let racks: Vec<Option<&str>> = racked
            .brokers
            .iter()
            .map(|broker| broker.rack.as_ref().map(|rack| rack.as_str()))
            .collect();
        assert_eq!(racks, vec![None, Some("eu-west-1b")]);
        // Before its first leader a partition's epoch is 0 on the node: unknown to Kafka.
        map.members.as_mut().unwrap()[1].kafka = "[::1]:9093".into();
        map.topics[0].replicas[0].epoch = 0;
        let first = metadata_response(
            9,
            &MetadataRequest::default().with_topics(None),
            Ok(&map),
            &broker(),
        );
        assert_eq!(first.topics[0].partitions[0].leader_epoch, -1);
    }

    #[test]
    fn create_topics_takes_spate_settings_and_refuses_the_rest() {
        use kafka_protocol::messages::create_topics_request::{
            CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
        };
        let config = |name: &'static str, value: &'static str| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str(name))
                .with_value(Some(StrBytes::from_static_str(value)))
        };
        let topic = CreatableTopic::default()
            .with_name(topic_name("t"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_configs(vec![
                config("retention.ms", "-1"),
                config("retention.bytes", "1000000"),
                config("segment.bytes", "1048576"),
                config("min.insync.replicas", "2"),
                config("cleanup.policy", "delete"),
            ]);
        let request = create_topic(&topic).unwrap();
        assert_eq!(request.partitions, DEFAULT_PARTITIONS);
        assert_eq!(request.retention_ms, Setting::Unlimited);
        assert_eq!(request.retention_bytes, Setting::Value(1_000_000));
        assert_eq!(request.segment_bytes, Setting::Value(1 << 20));
        assert_eq!(request.min_insync_replicas, Setting::Value(2));
        let refused = |topic: CreatableTopic| create_topic(&topic).unwrap_err();
        let base = CreatableTopic::default()
            .with_name(topic_name("t"))
            .with_num_partitions(3)
            .with_replication_factor(1);
        let (error, message) = refused(
            base.clone()
                .with_configs(vec![config("cleanup.policy", "compact")]),
        );
        assert_eq!(error, ResponseError::InvalidConfig);
        assert!(message.contains("compaction"), "{message}");
        for count in ["0", "-1", "two"] {
            assert_eq!(
                refused(
                    base.clone()
                        .with_configs(vec![config("min.insync.replicas", count)])
                )
                .0,
                ResponseError::InvalidConfig
            );
        }
        assert_eq!(
            refused(
                base.clone()
                    .with_configs(vec![config("unclean.leader.election.enable", "true")])
            )
            .0,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            refused(
                base.clone()
                    .with_configs(vec![config("retention.ms", "soon")])
            )
            .0,
            ResponseError::InvalidConfig
        );
        for factor in [0, -2] {
            assert_eq!(
                refused(base.clone().with_replication_factor(factor)).0,
                ResponseError::InvalidReplicationFactor
            );
        }
        // Any other factor is the node's to meet or refuse.
        let replicated = create_topic(&base.clone().with_replication_factor(3)).unwrap();
        assert_eq!(replicated.replication_factor, 3);
        assert_eq!(
            refused(base.clone().with_num_partitions(0)).0,
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            refused(base.with_assignments(vec![CreatableReplicaAssignment::default()])).0,
            ResponseError::InvalidRequest
        );
        assert!(!no_transaction_coordinator().0.is_retriable());
    }

    #[test]
    fn init_producer_id_bumps_a_known_producer_and_refuses_transactions() {
        use kafka_protocol::messages::{InitProducerIdRequest, ProducerId, TransactionalId};
        let fresh = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        assert_eq!(init_producer_id(&fresh), Ok(None));
        let known = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(42))
            .with_producer_epoch(3);
        assert_eq!(init_producer_id(&known), Ok(Some((42, 4))));
        let exhausted = known.with_producer_epoch(i16::MAX);
        assert_eq!(init_producer_id(&exhausted), Ok(None));
        let transactional =
            fresh.with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))));
        assert_eq!(
            init_producer_id(&transactional),
            Err(ResponseError::TransactionalIdAuthorizationFailed)
        );
        let empty = transactional
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(""))));
        assert_eq!(init_producer_id(&empty), Err(ResponseError::InvalidRequest));
    }

    #[test]
    fn acks_map_to_durability() {
        assert_eq!(durability(-1), Ok(Durability::Fsync));
        assert_eq!(durability(1), Ok(Durability::Write));
        assert_eq!(durability(0), Ok(Durability::None));
        assert_eq!(durability(2), Err(ResponseError::InvalidRequiredAcks));
    }

    #[test]
    fn list_offsets_answers_offsets_and_record_timestamps_and_minus_one_past_the_end() {
        let answer = spate_proto::ListOffsetsResponse {
            offset: 10,
            log_start_offset: 0,
            high_watermark: 10,
            leader_epoch: Some(4),
        };
        let by_time = list_offsets_partition(7, 0, offset_spec(5), Ok(answer.into()));
        assert_eq!(by_time.offset, -1);
        // Found by time: the record's offset and its own timestamp.
        let record = spate_proto::FindRecordResponse {
            offset: 3,
            timestamp: 77,
            log_start_offset: 0,
            high_watermark: 10,
            leader_epoch: Some(2),
        };
        let by_time = list_offsets_partition(7, 0, offset_spec(5), Ok(record.into()));
        assert_eq!((by_time.offset, by_time.timestamp), (3, 77));
        // With the epoch of the record found (KIP-320).
        assert_eq!(by_time.leader_epoch, 2);
        let latest = list_offsets_partition(7, 0, offset_spec(-1), Ok(answer.into()));
        assert_eq!((latest.offset, latest.timestamp), (10, -1));
        // The offset's leader epoch from v4 (KIP-320), where the field exists.
        assert_eq!(latest.leader_epoch, 4);
        let old = list_offsets_partition(3, 0, offset_spec(-1), Ok(answer.into()));
        assert_eq!(old.leader_epoch, -1);
        assert_eq!(
            list_offsets_partition(7, 0, offset_spec(-4), Ok(answer.into())).error_code,
            ResponseError::InvalidRequest.code()
        );
        // The newest timestamp: its record's offset and time, or -1 on an empty partition.
        assert_eq!(offset_spec(-3), Ok(Lookup::Record(RecordTarget::Newest)));
        let newest = spate_proto::FindRecordResponse {
            offset: 4,
            timestamp: 1_700_000_000_000,
            log_start_offset: 0,
            high_watermark: 10,
            leader_epoch: None,
        };
        let found = list_offsets_partition(7, 0, offset_spec(-3), Ok(newest.into()));
        assert_eq!((found.offset, found.timestamp), (4, 1_700_000_000_000));
        let empty = spate_proto::FindRecordResponse {
            offset: 0,
            timestamp: -1,
            log_start_offset: 0,
            high_watermark: 0,
            leader_epoch: Some(4),
        };
        let none = list_offsets_partition(7, 0, offset_spec(-3), Ok(empty.into()));
        assert_eq!((none.offset, none.timestamp, none.error_code), (-1, -1, 0));
        // No record: no epoch either, as Kafka answers.
        assert_eq!(none.leader_epoch, -1);
    }

    #[test]
    fn offset_for_leader_epoch_answers_as_kafkas_epoch_cache_and_checks_the_current_epoch() {
        let topic = TopicName(StrBytes::from_static_str("t"));
        let found = |offset, leader_epoch| {
            Ok(spate_proto::ListOffsetsResponse {
                offset,
                log_start_offset: 0,
                high_watermark: 50,
                leader_epoch,
            })
        };
        // An epoch the leader's chain knows: where its records end, and the epoch.
        let asked = epoch_lookup(3, 5);
        let request = epoch_end_request(&topic, PartitionId(2), &asked);
        assert_eq!(request.spec, OffsetSpec::EpochEnd(3));
        assert_eq!(
            request.epochs,
            ReadEpochs {
                answer: true,
                current: Some(5)
            }
        );
        let answer = epoch_end_partition(2, Ok(asked), found(40, Some(3)));
        assert_eq!(
            (answer.error_code, answer.leader_epoch, answer.end_offset),
            (0, 3, 40)
        );
        // One the node has no end for (above its chain, or no chain): -1 and -1, no error.
        let answer = epoch_end_partition(2, Ok(asked), found(50, None));
        assert_eq!((answer.leader_epoch, answer.end_offset), (-1, -1));
        // Kafka's undefined epoch: the current epoch is still checked, the answer undefined.
        let undefined = epoch_lookup(-1, 5);
        let request = epoch_end_request(&topic, PartitionId(2), &undefined);
        assert_eq!(request.spec, OffsetSpec::Latest);
        let answer = epoch_end_partition(2, Ok(undefined), found(50, Some(5)));
        assert_eq!((answer.leader_epoch, answer.end_offset), (-1, -1));
        // A stale or early current epoch: the node's refusal as Kafka's code.
        let fenced = ErrorResponse::new(ErrorCode::FencedLeaderEpoch, "stale");
        let answer = epoch_end_partition(2, Ok(asked), Err(fenced));
        assert_eq!(answer.error_code, ResponseError::FencedLeaderEpoch.code());
        // -1 and 0 (librdkafka's "no epoch known") check nothing; Spate's epochs start at 1.
        assert_eq!(current_epoch(-1), None);
        assert_eq!(current_epoch(0), None);
        assert_eq!(current_epoch(7), Some(7));
    }

    #[test]
    fn delete_records_maps_minus_one_to_the_high_watermark_and_errors_to_kafka_codes() {
        assert_eq!(
            delete_records_offset(-1),
            Ok(spate_proto::DELETE_RECORDS_TO_HIGH_WATERMARK)
        );
        assert_eq!(delete_records_offset(0), Ok(0));
        assert_eq!(delete_records_offset(42), Ok(42));
        assert_eq!(
            delete_records_offset(-2),
            Err(ResponseError::OffsetOutOfRange)
        );
        let moved = spate_proto::DeleteRecordsResponse {
            log_start_offset: 7,
        };
        let answered = delete_records_partition(3, Ok(7), Ok(moved));
        assert_eq!(
            (
                answered.partition_index,
                answered.low_watermark,
                answered.error_code
            ),
            (3, 7, 0)
        );
        let refused = delete_records_partition(
            0,
            Ok(99),
            Err(ErrorResponse::new(
                ErrorCode::OffsetOutOfRange,
                "past the end",
            )),
        );
        assert_eq!(
            (refused.low_watermark, refused.error_code),
            (-1, ResponseError::OffsetOutOfRange.code())
        );
        let fenced = delete_records_partition(
            0,
            Ok(1),
            Err(ErrorResponse::new(ErrorCode::PartitionFenced, "fenced")),
        );
        assert_eq!(fenced.error_code, ResponseError::KafkaStorageError.code());
        let negative = delete_records_partition(0, delete_records_offset(-5), Ok(moved));
        assert_eq!(negative.error_code, ResponseError::OffsetOutOfRange.code());
    }

    #[test]
    fn a_fetch_asks_the_node_for_at_most_its_max_bytes_in_all() {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        let request = |max_bytes: i32, partitions: i32, each: i32| {
            FetchRequest::default()
                .with_max_bytes(max_bytes)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic_name("t"))
                    .with_partitions(
                        (0..partitions)
                            .map(|partition| {
                                FetchPartition::default()
                                    .with_partition(partition)
                                    .with_partition_max_bytes(each)
                            })
                            .collect(),
                    )])
        };
        let sizes = |request: &FetchRequest| -> Vec<u32> {
            fetch_parts(request, 100)
                .unwrap()
                .iter()
                .map(|part| part.max_bytes)
                .collect()
        };
        assert_eq!(sizes(&request(2500, 4, 1000)), vec![1000, 1000, 500, 1]);
        // The request's own limit is capped, and so is each partition.
        let huge = sizes(&request(i32::MAX, 12, i32::MAX));
        assert_eq!(huge[..8], [FETCH_PARTITION_BYTES_MAX; 8]);
        assert_eq!(huge[8..], [1; 4]);
        assert_eq!(
            huge.iter().map(|bytes| u64::from(*bytes)).sum::<u64>(),
            (64 << 20) + 4
        );
        assert_eq!(
            fetch_parts(&request(100, 101, 1), 100),
            Err(ResponseError::InvalidRequest)
        );
    }

    #[test]
    fn a_fetch_answer_keeps_to_max_bytes_after_its_first_batch() {
        let parts: Vec<FetchPart> = (0..3)
            .map(|partition| FetchPart {
                topic: topic_name("t"),
                partition,
                offset: 0,
                max_bytes: 100,
                current_leader_epoch: -1,
            })
            .collect();
        let data = |len: usize| Fetched::Data {
            records: KafkaRecords::from_kafka_bytes(Bytes::from(vec![1u8; len])),
            high_watermark: 7,
            log_start_offset: 0,
        };
        let (answer, records) = fetch_response(&parts, vec![data(150), data(10), data(10)], 100);
        let answer = records_in_place(answer, &records);
        let partitions = &answer.responses[0].partitions;
        assert_eq!(partitions.len(), 3);
        // The first is whole although larger; the others would pass the limit.
        assert_eq!(partitions[0].records.as_ref().unwrap().len(), 150);
        assert!(partitions[1].records.as_ref().unwrap().is_empty());
        assert_eq!(partitions[1].high_watermark, 7);
        let (answer, records) = fetch_response(&parts, vec![data(0), data(40), data(50)], 100);
        let answer = records_in_place(answer, &records);
        let sizes: Vec<usize> = answer.responses[0]
            .partitions
            .iter()
            .map(|partition| partition.records.as_ref().unwrap().len())
            .collect();
        assert_eq!(sizes, vec![0, 40, 50]);
    }
}
