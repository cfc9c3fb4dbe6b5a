//! `spate-client`: the Rust SDK for Spate over QUIC, and (feature `cli`, on by default) the
//! `spate` command-line tool.
//!
//! - [`Client`]: one QUIC connection to a gateway (reconnecting after a break), admin calls
//!   (create, delete, list, describe topics) and the raw produce, fetch and list-offsets
//!   requests.
//! - [`Producer`]: batches records per partition by size and linger, partitions by key,
//!   pipelines batches in order, resends them after a lost answer (idempotent: stored once)
//!   and resolves a [`Delivery`] per record to its offset.
//! - [`Consumer`]: reads partitions from a start position with long polls and prefetch, checks
//!   every batch's CRCs and yields records with all their fields.
//! - [`GroupConsumer`]: reads a topic as a member of a consumer group (the partitions split
//!   among the members, committed offsets, rebalances), and the group admin calls.
//!
//! The library depends on the wire crates (`spate-format`, `spate-proto`) only; the node and
//! gateway crates are linked into the `spate` binary for `spate up`, never used here.

mod client;
mod consumer;
mod group;
mod producer;

pub use client::{
    quic_client_config, quic_client_config_as, quic_socket, CertificateError, Client, ClientError,
    ClientIdentity, ConnectError, ConnectionLost, InvalidAnswer, PartitionDescription,
    TopicDescription, ALPN, CONNECTION_WINDOW, CONNECT_TIMEOUT, FETCH_LANES, IDLE_TIMEOUT_MS,
    KEEP_ALIVE_INTERVAL, LANE_QUEUE_MAX, REQUEST_TIMEOUT, STREAM_WINDOW, SYSTEM_CA,
    UDP_PAYLOAD_MAX,
};
pub use consumer::{
    ConsumedRecord, Consumer, ConsumerConfig, EndPosition, OffsetReset, StartPosition,
    CHUNKS_BUFFERED_MAX, DECOMPRESSED_PER_CHUNK_MAX, RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN,
};
pub use group::{
    decode_assignment, encode_assignment, GroupConfig, GroupConsumer, PartitionLag, Rebalance,
    GROUP_RETRY_MAX, GROUP_RETRY_MIN, JOIN_ATTEMPTS_MAX, PROTOCOL, PROTOCOL_TYPE, SYNC_WAIT_MAX,
};
pub use producer::{
    murmur2, partition_for_key, Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    COMMAND_QUEUE_MAX, IN_FLIGHT_MAX,
};
pub use spate_format::Compression;
pub use spate_proto::group::{FetchedOffset, GroupInfo, MemberInfo};
pub use spate_proto::{AlterTopicRequest, CreateTopicRequest, Durability, ErrorCode, Setting};
