//! Limits of the wire protocol, each with the reason for its value.

use spate_format::limits::{BATCH_SIZE_MAX, TOPIC_NAME_LENGTH_MAX};

/// Size of the fixed frame header: length, api key, version, flags, correlation id.
pub const FRAME_HEADER_SIZE: u32 = 16;

/// Largest request frame, header included: one batch of the largest size plus room for the
/// routing fields and the largest metadata request.
pub const REQUEST_SIZE_MAX: u32 = BATCH_SIZE_MAX + 64 * 1024;

/// Largest response frame, header included: bounds what a client or gateway buffers for one
/// response (a fetch of `FETCH_BYTES_MAX` plus at most one batch, or a large metadata answer).
pub const RESPONSE_SIZE_MAX: u32 = 16 << 20;

/// Largest `max_bytes` a fetch may ask for. A fetch always returns at least the batch that
/// holds its offset, so a response may exceed `max_bytes` by up to one batch.
pub const FETCH_BYTES_MAX: u32 = 8 << 20;

/// Longest a fetch may wait for data (its `max_wait_ms`): one minute. Longer waits belong in
/// a loop on the client, where a lost connection is noticed.
pub const FETCH_WAIT_MS_MAX: u32 = 60_000;

/// Longest a SyncGroup may wait for its leader's assignment, as requesters count it (the SDK
/// and a gateway add it to their deadline for such a request).
pub const GROUP_SYNC_WAIT_MS_MAX: u32 = 300_000;

/// Longest a node may take over an admin request (`CreateTopic`, `DeleteTopic`, `AlterTopic`,
/// `AutoCreateTopic`, `AllocateProducerIds`): in a cluster its change goes through etcd and
/// the controller, then every shard applies it (each step bounded by the node, 10 to 30 s).
pub const ADMIN_WAIT_MS_MAX: u32 = 60_000;

/// Most topics named in one metadata request.
pub const TOPICS_PER_REQUEST_MAX: u32 = 200;

/// Longest error message, in bytes.
pub const ERROR_MESSAGE_SIZE_MAX: u32 = 4096;

/// Longest shard endpoint (`host:port`), in bytes.
pub const ENDPOINT_SIZE_MAX: u32 = 256;

/// Longest rack name a `Metadata` answer carries, in bytes (a node's `--rack` is at most 64).
pub const RACK_SIZE_MAX: u32 = 64;

/// Most shards one node may have: shard ids are `u16`, and one shard per core.
pub const SHARDS_MAX: u32 = 1024;

/// Receive and send buffer asked for each QUIC socket (SDK and gateway). The kernel's default
/// (208 KiB) drops datagrams whenever a few hundred arrive while the endpoint is busy —
/// hundreds a second under load, even on loopback — and a packet lost at the start of a
/// connection costs QUIC a probe timeout (seen as a 1.5 s stall before the first answer).
/// The kernel grants at most `net.core.rmem_max` / `wmem_max`.
pub const QUIC_SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// QUIC loss detection on both ends (SDK and gateway): a packet is declared lost once this
/// many later packets were acknowledged (QUIC's default: 3) or after this many round trips
/// (default: 9/8). At loopback and LAN round trips of about 100 µs the defaults declared
/// packets lost whenever an acknowledgement came a little late (hundreds in a second, none
/// dropped), and each "loss" halved the congestion window: a produce run then moved almost
/// nothing for 1.5 s (docs/benchmarks.md, the start-of-run stall). Real losses are still
/// found, a few packets or a fraction of a millisecond later.
pub const QUIC_PACKET_THRESHOLD: u32 = 10;
/// See [`QUIC_PACKET_THRESHOLD`].
pub const QUIC_TIME_THRESHOLD: f32 = 2.0;

/// Most topics in one metadata response.
pub const TOPICS_PER_RESPONSE_MAX: u32 = 100_000;

const _: () = assert!(
    TOPICS_PER_REQUEST_MAX * (2 + TOPIC_NAME_LENGTH_MAX) + 4096
        <= REQUEST_SIZE_MAX - BATCH_SIZE_MAX
);
const _: () = assert!(FETCH_BYTES_MAX + BATCH_SIZE_MAX + 4096 <= RESPONSE_SIZE_MAX);
const _: () = assert!(REQUEST_SIZE_MAX <= RESPONSE_SIZE_MAX);
const _: () = assert!(SHARDS_MAX <= u16::MAX as u32 + 1);
const _: () = assert!(ERROR_MESSAGE_SIZE_MAX <= u16::MAX as u32);
const _: () = assert!(ENDPOINT_SIZE_MAX <= u16::MAX as u32);

/// Producer ids one AllocateProducerIds request may take: a gateway takes blocks of 1,000, as
/// Kafka's brokers do from their controller.
pub const PRODUCER_IDS_PER_REQUEST_MAX: u32 = 1_000_000;

/// Leader-epoch boundaries in one `ReplicaFetch` answer: the leader answers the records up to
/// the boundary where the limit is reached (a new epoch starts only with a leader election, so
/// an answer of 8 MiB holds a handful).
pub const REPLICA_FETCH_EPOCHS_MAX: u32 = 4096;

/// Members a `DescribeCluster` answer lists (the cluster's nodes).
pub const CLUSTER_MEMBERS_MAX: u32 = 1024;

/// Shard addresses a `DescribeCluster` answer lists, over all its members (so the largest
/// answer stays well inside `RESPONSE_SIZE_MAX`).
pub const CLUSTER_SHARDS_MAX: u32 = 32_768;

/// Bytes of a member's session or storage id (16 hex digits; room to grow).
pub const CLUSTER_ID_SIZE_MAX: u32 = 64;

/// Bytes of a cluster's name (`--cluster-name`).
pub const CLUSTER_NAME_SIZE_MAX: u32 = 255;

/// Partitions a `DescribeCluster` answer lists by name (under-replicated ones first, then
/// offline ones); the counts cover them all.
pub const CLUSTER_PARTITIONS_LISTED_MAX: u32 = 100;

/// Bytes of the message of one `MovePartitions` outcome.
pub const MOVE_MESSAGE_SIZE_MAX: u32 = 1024;

// The largest `MovePartitions` answer and the moves a `DescribeCluster` answer lists fit a
// response beside the rest (the listed partitions bounded as above).
const _: () = assert!(
    12 + CLUSTER_PARTITIONS_LISTED_MAX as u64
        * (2 + 249 + 4 + 2 + 2 + MOVE_MESSAGE_SIZE_MAX as u64)
        + 8
        + 4 * CLUSTER_MEMBERS_MAX as u64
        + CLUSTER_PARTITIONS_LISTED_MAX as u64
            * (2 + 249 + 4 + 3 * (4 + 4 * CLUSTER_PARTITION_REPLICAS_MAX as u64) + 9)
        <= (RESPONSE_SIZE_MAX as u64) / 4
);

/// Replicas (and in-sync replicas) of one listed partition.
pub const CLUSTER_PARTITION_REPLICAS_MAX: u32 = 64;

// The largest `DescribeCluster` answer fits a response: the name, every member's fixed
// fields and ids, every shard address at its largest, and the listed partitions (each its
// name, number, leader and two lists at their largest).
const _: () = assert!(
    2 + CLUSTER_NAME_SIZE_MAX as u64
        + 10
        + 4
        + CLUSTER_MEMBERS_MAX as u64 * (4 + 2 * (2 + CLUSTER_ID_SIZE_MAX as u64) + 8 + 4)
        + CLUSTER_SHARDS_MAX as u64 * (2 + ENDPOINT_SIZE_MAX as u64)
        + 1
        + 16
        + CLUSTER_PARTITIONS_LISTED_MAX as u64
            * (2 + 249 + 4 + 5 + 2 * (4 + 4 * CLUSTER_PARTITION_REPLICAS_MAX as u64))
        <= RESPONSE_SIZE_MAX as u64 - FRAME_HEADER_SIZE as u64
);
