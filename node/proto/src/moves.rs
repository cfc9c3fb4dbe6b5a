//! Moving partitions between the nodes of a cluster (docs/cluster.md, "Moving partitions";
//! docs/protocol.md, key 17): `MovePartitions` starts or cancels a reassignment, elects
//! preferred leaders, or decommissions a node (or takes it back); `DescribeCluster` lists the
//! moves in progress ([`MovesStatus`]). A single node refuses them.

use bytes::BytesMut;

use crate::codec::{Reader, Writer};
use crate::error::{ErrorCode, ProtoError};
use crate::limits::{
    CLUSTER_MEMBERS_MAX, CLUSTER_PARTITIONS_LISTED_MAX, CLUSTER_PARTITION_REPLICAS_MAX,
    MOVE_MESSAGE_SIZE_MAX,
};
use crate::messages::{read_ids, read_topic, truncate_utf8, write_ids};
use spate_format::limits::PARTITIONS_PER_TOPIC_MAX;

/// What a `MovePartitions` request changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionMove {
    /// Tag 0: move `partitions` of `topic` to `replicas` (node ids, in preference order; the
    /// first is the preferred leader), the new replicas catching up at `throttle` bytes/s.
    /// A reassignment in progress gets the new target.
    Reassign {
        topic: String,
        partitions: Vec<u32>,
        replicas: Vec<u32>,
        throttle: Option<u64>,
    },
    /// Tag 1: move `partitions` of `topic` back to the replicas they had before their
    /// reassignment.
    Cancel { topic: String, partitions: Vec<u32> },
    /// Tag 2: make each partition's preferred replica its leader where it is alive and in
    /// sync; no topic: every topic; no partitions: every partition of the topic.
    ElectPreferred {
        topic: Option<String>,
        partitions: Vec<u32>,
    },
    /// Tag 3: place no new replicas on `node` and move the ones it holds to other members.
    Decommission { node: u32, throttle: Option<u64> },
    /// Tag 4: take a decommissioned node back (moves already made stay).
    Recommission { node: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovePartitionsRequest {
    pub change: PartitionMove,
}

/// The outcome for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveResult {
    pub topic: String,
    pub partition: u32,
    /// `None` when it changed.
    pub error: Option<ErrorCode>,
    /// What happened, for an operator (at most `MOVE_MESSAGE_SIZE_MAX` bytes).
    pub message: String,
}

/// The answer to `MovePartitions`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MovePartitionsResponse {
    /// Partitions changed: reassignments started or cancelled, leaders elected; for a
    /// decommission, the partitions with a replica on the node (they move now).
    pub changed: u32,
    /// Partitions left as they were (why: in `results`).
    pub unchanged: u32,
    /// Outcomes, those left as they were first, at most `CLUSTER_PARTITIONS_LISTED_MAX`.
    pub results: Vec<MoveResult>,
}

/// A partition being moved, in a `DescribeCluster` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovingPartition {
    pub topic: String,
    pub partition: u32,
    /// Its replicas now (node ids, at most `CLUSTER_PARTITION_REPLICAS_MAX`).
    pub replicas: Vec<u32>,
    /// Where it goes (empty: off decommissioned nodes, the controller choosing where).
    pub target: Vec<u32>,
    /// Its replicas before the move (a decommission's: its replicas now).
    pub original: Vec<u32>,
    /// The rate its new replicas catch up at, bytes/s.
    pub throttle: Option<u64>,
}

/// The moves in progress, in a `DescribeCluster` answer that lists partitions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MovesStatus {
    /// Decommissioned nodes (at most `CLUSTER_MEMBERS_MAX`).
    pub decommissioned: Vec<u32>,
    /// Partitions being moved (a reassignment, or a replica on a decommissioned node).
    pub moving: u32,
    /// The first of them, at most `CLUSTER_PARTITIONS_LISTED_MAX`.
    pub listed: Vec<MovingPartition>,
}

fn write_partitions(w: &mut Writer<'_, BytesMut>, partitions: &[u32]) {
    w.u32(u32::try_from(partitions.len()).unwrap_or(u32::MAX));
    for partition in partitions {
        w.u32(*partition);
    }
}

fn read_partitions(reader: &mut Reader) -> Result<Vec<u32>, ProtoError> {
    let count = reader.count("partitions", PARTITIONS_PER_TOPIC_MAX, 4)?;
    (0..count).map(|_| reader.u32("partition")).collect()
}

fn write_optional_u64(w: &mut Writer<'_, BytesMut>, value: Option<u64>) {
    match value {
        None => w.u8(0),
        Some(value) => {
            w.u8(1);
            w.u64(value);
        }
    }
}

fn read_optional_u64(reader: &mut Reader, field: &'static str) -> Result<Option<u64>, ProtoError> {
    match reader.u8(field)? {
        0 => Ok(None),
        1 => Ok(Some(reader.u64(field)?)),
        other => Err(ProtoError::Value {
            field,
            value: other.into(),
        }),
    }
}

impl MovePartitionsRequest {
    pub(crate) fn encode_body(&self, w: &mut Writer<'_, BytesMut>) {
        match &self.change {
            PartitionMove::Reassign {
                topic,
                partitions,
                replicas,
                throttle,
            } => {
                w.u8(0);
                w.str16(topic);
                write_partitions(w, partitions);
                write_ids(w, replicas);
                write_optional_u64(w, *throttle);
            }
            PartitionMove::Cancel { topic, partitions } => {
                w.u8(1);
                w.str16(topic);
                write_partitions(w, partitions);
            }
            PartitionMove::ElectPreferred { topic, partitions } => {
                w.u8(2);
                match topic {
                    None => w.u8(0),
                    Some(topic) => {
                        w.u8(1);
                        w.str16(topic);
                    }
                }
                write_partitions(w, partitions);
            }
            PartitionMove::Decommission { node, throttle } => {
                w.u8(3);
                w.u32(*node);
                write_optional_u64(w, *throttle);
            }
            PartitionMove::Recommission { node } => {
                w.u8(4);
                w.u32(*node);
            }
        }
    }

    pub(crate) fn decode_body(reader: &mut Reader) -> Result<Self, ProtoError> {
        let change = match reader.u8("move")? {
            0 => PartitionMove::Reassign {
                topic: read_topic(reader)?,
                partitions: read_partitions(reader)?,
                replicas: read_ids(reader, "replicas")?,
                throttle: read_optional_u64(reader, "throttle")?,
            },
            1 => PartitionMove::Cancel {
                topic: read_topic(reader)?,
                partitions: read_partitions(reader)?,
            },
            2 => {
                let topic = match reader.u8("has_topic")? {
                    0 => None,
                    1 => Some(read_topic(reader)?),
                    other => {
                        return Err(ProtoError::Value {
                            field: "has_topic",
                            value: other.into(),
                        })
                    }
                };
                PartitionMove::ElectPreferred {
                    topic,
                    partitions: read_partitions(reader)?,
                }
            }
            3 => PartitionMove::Decommission {
                node: reader.u32("node")?,
                throttle: read_optional_u64(reader, "throttle")?,
            },
            4 => PartitionMove::Recommission {
                node: reader.u32("node")?,
            },
            other => {
                return Err(ProtoError::Value {
                    field: "move",
                    value: other.into(),
                })
            }
        };
        Ok(Self { change })
    }
}

impl MovePartitionsResponse {
    /// The answer cut to what a decoder takes.
    pub fn within_limits(mut self) -> Self {
        self.results
            .truncate(CLUSTER_PARTITIONS_LISTED_MAX as usize);
        for result in &mut self.results {
            truncate_utf8(&mut result.message, MOVE_MESSAGE_SIZE_MAX as usize);
        }
        self
    }

    pub(crate) fn encode_body(&self, w: &mut Writer<'_, BytesMut>) {
        let this = self.clone().within_limits();
        w.u32(this.changed);
        w.u32(this.unchanged);
        w.u32(u32::try_from(this.results.len()).unwrap_or(u32::MAX));
        for result in &this.results {
            w.str16(&result.topic);
            w.u32(result.partition);
            w.u16(result.error.map_or(0, ErrorCode::to_u16));
            w.str16(&result.message);
        }
    }

    pub(crate) fn decode_body(reader: &mut Reader) -> Result<Self, ProtoError> {
        let changed = reader.u32("changed")?;
        let unchanged = reader.u32("unchanged")?;
        let count = reader.count("results", CLUSTER_PARTITIONS_LISTED_MAX, 2 + 1 + 4 + 2 + 2)?;
        let mut results = Vec::with_capacity(count);
        for _ in 0..count {
            let topic = read_topic(reader)?;
            let partition = reader.u32("partition")?;
            let error = match reader.u16("code")? {
                0 => None,
                code => Some(ErrorCode::from_u16(code)),
            };
            let message = reader.string16("message", MOVE_MESSAGE_SIZE_MAX)?;
            results.push(MoveResult {
                topic,
                partition,
                error,
                message,
            });
        }
        Ok(Self {
            changed,
            unchanged,
            results,
        })
    }
}

impl MovesStatus {
    /// The status cut to what a decoder takes.
    pub fn within_limits(mut self) -> Self {
        self.decommissioned.truncate(CLUSTER_MEMBERS_MAX as usize);
        self.listed.truncate(CLUSTER_PARTITIONS_LISTED_MAX as usize);
        let max = CLUSTER_PARTITION_REPLICAS_MAX as usize;
        for moving in &mut self.listed {
            moving.replicas.truncate(max);
            moving.target.truncate(max);
            moving.original.truncate(max);
        }
        self
    }

    pub(crate) fn encode_body(&self, w: &mut Writer<'_, BytesMut>) {
        let this = self.clone().within_limits();
        w.u32(u32::try_from(this.decommissioned.len()).unwrap_or(u32::MAX));
        for node in &this.decommissioned {
            w.u32(*node);
        }
        w.u32(this.moving);
        w.u32(u32::try_from(this.listed.len()).unwrap_or(u32::MAX));
        for moving in &this.listed {
            w.str16(&moving.topic);
            w.u32(moving.partition);
            write_ids(w, &moving.replicas);
            write_ids(w, &moving.target);
            write_ids(w, &moving.original);
            write_optional_u64(w, moving.throttle);
        }
    }

    pub(crate) fn decode_body(reader: &mut Reader) -> Result<Self, ProtoError> {
        let count = reader.count("decommissioned", CLUSTER_MEMBERS_MAX, 4)?;
        let decommissioned = (0..count)
            .map(|_| reader.u32("decommissioned"))
            .collect::<Result<_, _>>()?;
        let moving = reader.u32("moving")?;
        let count = reader.count(
            "moving_listed",
            CLUSTER_PARTITIONS_LISTED_MAX,
            2 + 1 + 4 + 4 + 4 + 4 + 1,
        )?;
        let mut listed = Vec::with_capacity(count);
        for _ in 0..count {
            listed.push(MovingPartition {
                topic: read_topic(reader)?,
                partition: reader.u32("partition")?,
                replicas: read_ids(reader, "replicas")?,
                target: read_ids(reader, "target")?,
                original: read_ids(reader, "original")?,
                throttle: read_optional_u64(reader, "throttle")?,
            });
        }
        Ok(Self {
            decommissioned,
            moving,
            listed,
        })
    }
}
