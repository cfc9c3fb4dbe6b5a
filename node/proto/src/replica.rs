//! The replication frames of the node link (docs/cluster.md, "ReplicaFetch and
//! ReplicaProgress"): a follower's fetch from its partition's leader and its progress
//! reports. Only nodes speak them to each other; a gateway refuses them from clients
//! ([`crate::ApiKey::is_node_link_only`]).

use bytes::{Bytes, BytesMut};

use crate::codec::{Reader, Writer};
use crate::error::ProtoError;
use crate::limits::{FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, REPLICA_FETCH_EPOCHS_MAX};
use crate::PartitionId;

/// A follower's fetch: "give me the batches from `fetch_offset` on", with what the leader needs
/// to check that the follower's log agrees with its own and to count the follower's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchRequest {
    pub topic: String,
    pub partition: PartitionId,
    /// The topic's id (random, 128 bits): a topic deleted and created again under the same
    /// name is another topic.
    pub topic_id: u128,
    /// The follower's node id.
    pub replica: u32,
    /// The follower's data directory (created with it): progress counts for this one only,
    /// so a replaced disk is not mistaken for the one that was in sync (Kafka's KIP-903).
    pub storage_id: u64,
    /// The leader epoch the follower believes current.
    pub leader_epoch: u32,
    /// The follower's fetch session for this replica: a new, larger one each time the
    /// follower opens the replica's log again (a cut, a start over, a move to another of its
    /// shards) or loses its link — numbered by the follower's process, whatever shard it
    /// runs on. After `incarnation`, it orders what the follower said: a session's reports
    /// count only until a newer one starts.
    pub session: u64,
    /// The follower's incarnation: the etcd revision of its newest registration, larger for
    /// every registration and across restarts (its session numbers start over with a new
    /// process).
    pub incarnation: u64,
    /// The follower's log end: where the batches asked for start.
    pub fetch_offset: u64,
    /// The epoch of the last entry of the follower's `leader-epochs` file; `None` when it
    /// holds none (an empty replica).
    pub last_fetched_epoch: Option<u32>,
    /// The follower's synced end: what counts towards the high watermark.
    pub durable_end: u64,
    /// Soft limit on the answer's records (1 to `FETCH_BYTES_MAX`; the first batch always
    /// counts).
    pub max_bytes: u32,
    /// How long the leader may park the fetch while it has nothing past `fetch_offset`.
    pub max_wait_ms: u32,
}

/// Where the follower's log leaves the leader's: the largest epoch of the leader's chain at or
/// below the follower's last one, and the offset after that epoch's last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DivergingEpoch {
    pub epoch: u32,
    pub end_offset: u64,
}

/// An entry of the leader's epoch chain: the records from `start_offset` on were appended by
/// the leader of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochBoundary {
    pub epoch: u32,
    pub start_offset: u64,
}

/// The leader's answer to a `ReplicaFetch`: either where the follower diverges (no records;
/// it truncates there and asks again) or the batches from the fetch offset on, up to the
/// leader's log end, with the epoch boundaries inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchResponse {
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Set when the follower's log diverges; `epochs` and `records` are then empty.
    pub diverging: Option<DivergingEpoch>,
    /// The leader's epoch boundaries from the entry covering the first batch on (at most
    /// `REPLICA_FETCH_EPOCHS_MAX`, in increasing order).
    pub epochs: Vec<EpochBoundary>,
    /// Whole batches, back to back, as the leader stamped them.
    pub records: Bytes,
}

/// A follower's report of its progress, sent while its `ReplicaFetch` is parked, so that an
/// `acks=all` produce waits for the follower's `fdatasync` rather than its next fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaProgressRequest {
    pub topic: String,
    pub partition: PartitionId,
    pub topic_id: u128,
    pub replica: u32,
    pub storage_id: u64,
    pub leader_epoch: u32,
    /// The fetch session the report belongs to (see [`ReplicaFetchRequest::session`]).
    pub session: u64,
    /// See [`ReplicaFetchRequest::incarnation`].
    pub incarnation: u64,
    pub log_end: u64,
    pub durable_end: u64,
}

/// Who sends a replica request: the fields after the routing fields that both requests
/// start with.
struct Sender {
    topic_id: u128,
    replica: u32,
    storage_id: u64,
    leader_epoch: u32,
    session: u64,
    incarnation: u64,
}

impl Sender {
    /// Writes the routing fields, then the sender's.
    fn write(&self, w: &mut Writer<'_, BytesMut>, topic: &str, partition: PartitionId) {
        w.str16(topic);
        w.u32(partition.0);
        w.raw(&self.topic_id.to_le_bytes());
        w.u32(self.replica);
        w.u64(self.storage_id);
        w.u32(self.leader_epoch);
        w.u64(self.session);
        w.u64(self.incarnation);
    }

    /// Reads the sender's fields (after the routing fields, which the caller read).
    fn read(reader: &mut Reader) -> Result<Sender, ProtoError> {
        let low = reader.u64("topic_id")?;
        let high = reader.u64("topic_id")?;
        Ok(Sender {
            topic_id: (u128::from(high) << 64) | u128::from(low),
            replica: reader.u32("replica")?,
            storage_id: reader.u64("storage_id")?,
            leader_epoch: reader.u32("leader_epoch")?,
            session: reader.u64("session")?,
            incarnation: reader.u64("incarnation")?,
        })
    }
}

impl ReplicaFetchRequest {
    /// The body after the routing fields' topic.
    pub(crate) fn encode_body(&self, w: &mut Writer<'_, BytesMut>) {
        let sender = Sender {
            topic_id: self.topic_id,
            replica: self.replica,
            storage_id: self.storage_id,
            leader_epoch: self.leader_epoch,
            session: self.session,
            incarnation: self.incarnation,
        };
        sender.write(w, &self.topic, self.partition);
        w.u64(self.fetch_offset);
        match self.last_fetched_epoch {
            None => w.u8(0),
            Some(epoch) => {
                w.u8(1);
                w.u32(epoch);
            }
        }
        w.u64(self.durable_end);
        w.u32(self.max_bytes);
        w.u32(self.max_wait_ms);
    }

    /// The fields after the routing fields (read by the caller).
    pub(crate) fn decode_rest(
        topic: String,
        partition: PartitionId,
        reader: &mut Reader,
    ) -> Result<Self, ProtoError> {
        let sender = Sender::read(reader)?;
        let request = ReplicaFetchRequest {
            topic,
            partition,
            topic_id: sender.topic_id,
            replica: sender.replica,
            storage_id: sender.storage_id,
            leader_epoch: sender.leader_epoch,
            session: sender.session,
            incarnation: sender.incarnation,
            fetch_offset: reader.u64("fetch_offset")?,
            last_fetched_epoch: match reader.u8("last_fetched_epoch")? {
                0 => None,
                1 => Some(reader.u32("last_fetched_epoch")?),
                other => {
                    return Err(ProtoError::Value {
                        field: "last_fetched_epoch",
                        value: other.into(),
                    })
                }
            },
            durable_end: reader.u64("durable_end")?,
            max_bytes: reader.u32("max_bytes")?,
            max_wait_ms: reader.u32("max_wait_ms")?,
        };
        if request.max_bytes == 0 || request.max_bytes > FETCH_BYTES_MAX {
            return Err(ProtoError::Value {
                field: "max_bytes",
                value: request.max_bytes.into(),
            });
        }
        if request.max_wait_ms > FETCH_WAIT_MS_MAX {
            return Err(ProtoError::Value {
                field: "max_wait_ms",
                value: request.max_wait_ms.into(),
            });
        }
        // A replica never reports more synced than written.
        if request.durable_end > request.fetch_offset {
            return Err(ProtoError::Value {
                field: "durable_end",
                value: request.durable_end,
            });
        }
        Ok(request)
    }
}

impl ReplicaProgressRequest {
    pub(crate) fn encode_body(&self, w: &mut Writer<'_, BytesMut>) {
        let sender = Sender {
            topic_id: self.topic_id,
            replica: self.replica,
            storage_id: self.storage_id,
            leader_epoch: self.leader_epoch,
            session: self.session,
            incarnation: self.incarnation,
        };
        sender.write(w, &self.topic, self.partition);
        w.u64(self.log_end);
        w.u64(self.durable_end);
    }

    pub(crate) fn decode_rest(
        topic: String,
        partition: PartitionId,
        reader: &mut Reader,
    ) -> Result<Self, ProtoError> {
        let sender = Sender::read(reader)?;
        let request = ReplicaProgressRequest {
            topic,
            partition,
            topic_id: sender.topic_id,
            replica: sender.replica,
            storage_id: sender.storage_id,
            leader_epoch: sender.leader_epoch,
            session: sender.session,
            incarnation: sender.incarnation,
            log_end: reader.u64("log_end")?,
            durable_end: reader.u64("durable_end")?,
        };
        if request.durable_end > request.log_end {
            return Err(ProtoError::Value {
                field: "durable_end",
                value: request.durable_end,
            });
        }
        Ok(request)
    }
}

/// A list of epoch boundaries: a `u32` count (at most `REPLICA_FETCH_EPOCHS_MAX`, which
/// the sender keeps to), then each boundary's epoch (`u32`) and start offset (`u64`).
pub(crate) fn encode_boundaries(w: &mut Writer<'_, BytesMut>, epochs: &[EpochBoundary]) {
    w.u32(u32::try_from(epochs.len()).unwrap_or(u32::MAX));
    for boundary in epochs {
        w.u32(boundary.epoch);
        w.u64(boundary.start_offset);
    }
}

/// The boundaries [`encode_boundaries`] wrote, refused unless they go up in both epoch and
/// start offset (anything else is not a leader's chain).
pub(crate) fn decode_boundaries(reader: &mut Reader) -> Result<Vec<EpochBoundary>, ProtoError> {
    let count = reader.count("epochs", REPLICA_FETCH_EPOCHS_MAX, 12)?;
    let mut epochs = Vec::with_capacity(count);
    for _ in 0..count {
        let boundary = EpochBoundary {
            epoch: reader.u32("epoch")?,
            start_offset: reader.u64("start_offset")?,
        };
        if epochs.last().is_some_and(|last: &EpochBoundary| {
            boundary.epoch <= last.epoch || boundary.start_offset <= last.start_offset
        }) {
            return Err(ProtoError::Value {
                field: "epochs",
                value: boundary.epoch.into(),
            });
        }
        epochs.push(boundary);
    }
    Ok(epochs)
}

impl ReplicaFetchResponse {
    /// The body before the records' bytes (which follow as `bytes32`'s content).
    pub(crate) fn encode_head(&self, w: &mut Writer<'_, BytesMut>) {
        w.u64(self.high_watermark);
        w.u64(self.log_start_offset);
        match self.diverging {
            None => w.u8(0),
            Some(diverging) => {
                w.u8(1);
                w.u32(diverging.epoch);
                w.u64(diverging.end_offset);
            }
        }
        encode_boundaries(w, &self.epochs);
        w.length32(&self.records);
    }

    pub(crate) fn decode_body(reader: &mut Reader) -> Result<Self, ProtoError> {
        let high_watermark = reader.u64("high_watermark")?;
        let log_start_offset = reader.u64("log_start_offset")?;
        let diverging = match reader.u8("diverging")? {
            0 => None,
            1 => Some(DivergingEpoch {
                epoch: reader.u32("diverging_epoch")?,
                end_offset: reader.u64("diverging_end_offset")?,
            }),
            other => {
                return Err(ProtoError::Value {
                    field: "diverging",
                    value: other.into(),
                })
            }
        };
        let epochs = decode_boundaries(reader)?;
        let records = reader.bytes32("records", crate::limits::RESPONSE_SIZE_MAX)?;
        if diverging.is_some() && (!epochs.is_empty() || !records.is_empty()) {
            return Err(ProtoError::Value {
                field: "diverging",
                value: 1,
            });
        }
        Ok(ReplicaFetchResponse {
            high_watermark,
            log_start_offset,
            diverging,
            epochs,
            records,
        })
    }
}
