//! The `Group` request: consumer groups and their committed offsets, served by the shard that
//! owns the group's partition of the internal offsets topic. The routing fields (that topic
//! and partition) come first, as in a produce, so a gateway routes it without decoding the
//! rest. Specified in `docs/protocol.md`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::{Reader, Writer};
use crate::error::ProtoError;
use crate::PartitionId;

/// The internal topic that holds committed offsets; a group belongs to its partition
/// [`group_partition`].
pub const OFFSETS_TOPIC: &str = "__spate_offsets";
/// Partitions of [`OFFSETS_TOPIC`] (fixed: a group's partition must never change).
pub const OFFSETS_PARTITIONS: u32 = 16;
/// Bytes of a group id, member id, instance id, client id, protocol name or type.
pub const GROUP_NAME_BYTES_MAX: u32 = 255;
/// Bytes of one protocol's metadata and of one member's assignment.
pub const GROUP_METADATA_BYTES_MAX: u32 = 64 << 10;
/// Protocols one member offers.
pub const GROUP_PROTOCOLS_MAX: u32 = 16;
/// Members named in one request or answer.
pub const GROUP_MEMBERS_MAX: u32 = 1_000;
/// Offsets committed or fetched in one request.
pub const GROUP_OFFSETS_MAX: u32 = 10_000;
/// Groups in one answer (ListGroups of one coordinator).
pub const GROUPS_PER_ANSWER_MAX: u32 = 100_000;
/// Bytes of a committed offset's metadata string.
pub const OFFSET_METADATA_BYTES_MAX: u32 = 4096;

/// The protocol type of Spate's own consumers (Kafka clients use `consumer`): the
/// coordinator assigns the partitions of such a group itself.
pub const PROTOCOL_TYPE: &str = "spate";
/// The one assignment protocol they offer; a member's metadata is the topic it reads.
pub const PROTOCOL: &str = "range";

/// The encoding of an assignment: the topic, then its partitions (u32 little-endian each).
pub fn encode_assignment(topic: &str, partitions: &[u32]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + topic.len() + 4 * partitions.len());
    out.put_u16_le(u16::try_from(topic.len()).unwrap_or(u16::MAX));
    out.put_slice(topic.as_bytes());
    for partition in partitions {
        out.put_u32_le(*partition);
    }
    out.freeze()
}

/// Reads an assignment made by [`encode_assignment`] (`None` if it is not one).
pub fn decode_assignment(mut bytes: &[u8]) -> Option<(String, Vec<u32>)> {
    if bytes.remaining() < 2 {
        return None;
    }
    let length = usize::from(bytes.get_u16_le());
    if bytes.remaining() < length || !(bytes.remaining() - length).is_multiple_of(4) {
        return None;
    }
    let topic = std::str::from_utf8(&bytes[..length]).ok()?.to_owned();
    bytes.advance(length);
    let mut partitions = Vec::with_capacity(bytes.remaining() / 4);
    while bytes.has_remaining() {
        partitions.push(bytes.get_u32_le());
    }
    Some((topic, partitions))
}

/// Kafka's `murmur2` of the group id, positive, modulo [`OFFSETS_PARTITIONS`]: the group's
/// partition of [`OFFSETS_TOPIC`] (and so its coordinator shard).
pub fn group_partition(group: &str) -> PartitionId {
    PartitionId((murmur2(group.as_bytes()) & 0x7fff_ffff) % OFFSETS_PARTITIONS)
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Group ids are at most 255 bytes.
    let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut h = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// A member as a request names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberRef {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOp {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// What a `Group` request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOp {
    Join(JoinOp),
    Sync {
        member: MemberRef,
        /// The leader's: member id → assignment (empty from the others).
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat(MemberRef),
    /// (member id, instance id) of each member leaving.
    Leave(Vec<(String, Option<String>)>),
    Commit {
        member: MemberRef,
        offsets: Vec<CommitOffset>,
    },
    /// `None`: every offset the group has.
    FetchOffsets(Option<Vec<(String, u32)>>),
    /// Every group of this coordinator partition (the group id is ignored).
    List,
    Describe,
    Delete,
    DeleteOffsets(Vec<(String, u32)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRequest {
    /// [`OFFSETS_TOPIC`].
    pub topic: String,
    /// [`group_partition`] of `group`.
    pub partition: PartitionId,
    pub group: String,
    pub op: GroupOp,
}

fn check_name(field: &'static str, value: &str, max: u32) -> Result<(), ProtoError> {
    if value.len() > max as usize {
        return Err(ProtoError::Length {
            field,
            length: value.len() as u64,
            max: max.into(),
        });
    }
    Ok(())
}

fn check_count(field: &'static str, count: usize, max: u32) -> Result<(), ProtoError> {
    if count > max as usize {
        return Err(ProtoError::Length {
            field,
            length: count as u64,
            max: max.into(),
        });
    }
    Ok(())
}

fn check_member(member: &MemberRef) -> Result<(), ProtoError> {
    check_name("member_id", &member.member_id, NAME)?;
    check_name(
        "instance_id",
        member.instance_id.as_deref().unwrap_or(""),
        NAME,
    )
}

fn check_partitions(partitions: &[(String, u32)]) -> Result<(), ProtoError> {
    check_count("partitions", partitions.len(), GROUP_OFFSETS_MAX)?;
    partitions
        .iter()
        .try_for_each(|(topic, _)| check_name("topic", topic, NAME))
}

impl GroupRequest {
    /// Whether the request is within the limits its decoding checks (a request built from
    /// a Kafka client's fields is checked before it is encoded: encoding assumes them).
    pub fn check(&self) -> Result<(), ProtoError> {
        check_name("topic", &self.topic, NAME)?;
        check_name("group", &self.group, NAME)?;
        match &self.op {
            GroupOp::Join(join) => {
                check_name("member_id", &join.member_id, NAME)?;
                check_name(
                    "instance_id",
                    join.instance_id.as_deref().unwrap_or(""),
                    NAME,
                )?;
                check_name("client_id", &join.client_id, NAME)?;
                check_name("protocol_type", &join.protocol_type, NAME)?;
                check_count("protocols", join.protocols.len(), GROUP_PROTOCOLS_MAX)?;
                join.protocols.iter().try_for_each(|(name, metadata)| {
                    check_name("protocols", name, NAME)?;
                    check_count("metadata", metadata.len(), GROUP_METADATA_BYTES_MAX)
                })
            }
            GroupOp::Sync {
                member,
                assignments,
            } => {
                check_member(member)?;
                check_count("assignments", assignments.len(), GROUP_MEMBERS_MAX)?;
                assignments.iter().try_for_each(|(member_id, assignment)| {
                    check_name("assignments", member_id, NAME)?;
                    check_count("assignment", assignment.len(), GROUP_METADATA_BYTES_MAX)
                })
            }
            GroupOp::Heartbeat(member) => check_member(member),
            GroupOp::Leave(members) => {
                check_count("members", members.len(), GROUP_MEMBERS_MAX)?;
                members.iter().try_for_each(|(member_id, instance_id)| {
                    check_name("member_id", member_id, NAME)?;
                    check_name("instance_id", instance_id.as_deref().unwrap_or(""), NAME)
                })
            }
            GroupOp::Commit { member, offsets } => {
                check_member(member)?;
                check_count("offsets", offsets.len(), GROUP_OFFSETS_MAX)?;
                offsets.iter().try_for_each(|offset| {
                    check_name("topic", &offset.topic, NAME)?;
                    check_name("metadata", &offset.metadata, OFFSET_METADATA_BYTES_MAX)
                })
            }
            GroupOp::FetchOffsets(partitions) => {
                partitions.as_deref().map_or(Ok(()), check_partitions)
            }
            GroupOp::DeleteOffsets(partitions) => check_partitions(partitions),
            GroupOp::List | GroupOp::Describe | GroupOp::Delete => Ok(()),
        }
    }

    /// A request for `group`, routed to its coordinator partition.
    pub fn new(group: &str, op: GroupOp) -> GroupRequest {
        GroupRequest {
            topic: OFFSETS_TOPIC.to_owned(),
            partition: group_partition(group),
            group: group.to_owned(),
            op,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A committed offset as OffsetFetch answers it (offset -1, epoch -1 and empty metadata:
/// nothing committed).
pub type FetchedOffset = CommitOffset;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberInfo>,
}

/// The answer to a `Group` request (errors come as the error response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupResponse {
    Joined {
        generation: i32,
        protocol_type: String,
        protocol: String,
        leader: String,
        member_id: String,
        /// For the leader: every member with its metadata; empty for the others.
        members: Vec<JoinedMember>,
    },
    Synced {
        protocol_type: String,
        protocol: String,
        assignment: Bytes,
    },
    /// Heartbeat, Commit, Delete, DeleteOffsets.
    Done,
    /// One (error code, message) per leaving member; code 0: left.
    Left(Vec<(u16, String)>),
    Offsets(Vec<FetchedOffset>),
    /// List (members omitted) and Describe (one group).
    Groups(Vec<GroupInfo>),
}

const NAME: u32 = GROUP_NAME_BYTES_MAX;

fn count(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn put_option<B: BufMut>(w: &mut Writer<'_, B>, value: Option<&str>) {
    match value {
        None => w.u8(0),
        Some(value) => {
            w.u8(1);
            w.str16(value);
        }
    }
}

fn read_option(r: &mut Reader, field: &'static str) -> Result<Option<String>, ProtoError> {
    match r.u8(field)? {
        0 => Ok(None),
        1 => Ok(Some(r.string16(field, NAME)?)),
        other => Err(ProtoError::Value {
            field,
            value: other.into(),
        }),
    }
}

/// A u8 that must be 0 or 1 (so every decoded request encodes back to its own bytes).
fn read_flag(r: &mut Reader, field: &'static str) -> Result<bool, ProtoError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(ProtoError::Value {
            field,
            value: other.into(),
        }),
    }
}

fn i32_of(r: &mut Reader, field: &'static str) -> Result<i32, ProtoError> {
    Ok(r.u32(field)?.cast_signed())
}

fn put_member<B: BufMut>(w: &mut Writer<'_, B>, member: &MemberRef) {
    w.str16(&member.member_id);
    put_option(w, member.instance_id.as_deref());
    w.u32(member.generation.cast_unsigned());
}

fn read_member(r: &mut Reader) -> Result<MemberRef, ProtoError> {
    Ok(MemberRef {
        member_id: r.string16("member_id", NAME)?,
        instance_id: read_option(r, "instance_id")?,
        generation: i32_of(r, "generation")?,
    })
}

fn put_offsets<B: BufMut>(w: &mut Writer<'_, B>, offsets: &[CommitOffset]) {
    w.u32(count(offsets.len()));
    for offset in offsets {
        w.str16(&offset.topic);
        w.u32(offset.partition);
        w.i64(offset.offset);
        w.u32(offset.leader_epoch.cast_unsigned());
        w.str16(&offset.metadata);
    }
}

fn read_offsets(r: &mut Reader) -> Result<Vec<CommitOffset>, ProtoError> {
    // An entry is at least 20 bytes: empty topic and metadata.
    let n = r.count("offsets", GROUP_OFFSETS_MAX, 20)?;
    (0..n)
        .map(|_| {
            Ok(CommitOffset {
                topic: r.string16("topic", NAME)?,
                partition: r.u32("partition")?,
                offset: r.i64("offset")?,
                leader_epoch: i32_of(r, "leader_epoch")?,
                metadata: r.string16("metadata", OFFSET_METADATA_BYTES_MAX)?,
            })
        })
        .collect()
}

fn put_partitions<B: BufMut>(w: &mut Writer<'_, B>, partitions: &[(String, u32)]) {
    w.u32(count(partitions.len()));
    for (topic, partition) in partitions {
        w.str16(topic);
        w.u32(*partition);
    }
}

fn read_partitions(r: &mut Reader) -> Result<Vec<(String, u32)>, ProtoError> {
    let n = r.count("partitions", GROUP_OFFSETS_MAX, 6)?;
    (0..n)
        .map(|_| Ok((r.string16("topic", NAME)?, r.u32("partition")?)))
        .collect()
}

fn put_named_bytes<B: BufMut>(w: &mut Writer<'_, B>, items: &[(String, Bytes)]) {
    w.u32(count(items.len()));
    for (name, bytes) in items {
        w.str16(name);
        w.bytes32(bytes);
    }
}

fn read_named_bytes(
    r: &mut Reader,
    field: &'static str,
    max: u32,
) -> Result<Vec<(String, Bytes)>, ProtoError> {
    let n = r.count(field, max, 6)?;
    (0..n)
        .map(|_| {
            Ok((
                r.string16(field, NAME)?,
                r.bytes32(field, GROUP_METADATA_BYTES_MAX)?,
            ))
        })
        .collect()
}

impl GroupRequest {
    pub(crate) fn encode_body<B: BufMut>(&self, w: &mut Writer<'_, B>) {
        w.str16(&self.topic);
        w.u32(self.partition.0);
        w.str16(&self.group);
        match &self.op {
            GroupOp::Join(join) => {
                w.u8(0);
                w.str16(&join.member_id);
                put_option(w, join.instance_id.as_deref());
                w.str16(&join.client_id);
                w.u32(join.session_timeout_ms.cast_unsigned());
                w.u32(join.rebalance_timeout_ms.cast_unsigned());
                w.str16(&join.protocol_type);
                put_named_bytes(w, &join.protocols);
                w.u8(u8::from(join.require_known_member_id));
            }
            GroupOp::Sync {
                member,
                assignments,
            } => {
                w.u8(1);
                put_member(w, member);
                put_named_bytes(w, assignments);
            }
            GroupOp::Heartbeat(member) => {
                w.u8(2);
                put_member(w, member);
            }
            GroupOp::Leave(members) => {
                w.u8(3);
                w.u32(count(members.len()));
                for (member_id, instance_id) in members {
                    w.str16(member_id);
                    put_option(w, instance_id.as_deref());
                }
            }
            GroupOp::Commit { member, offsets } => {
                w.u8(4);
                put_member(w, member);
                put_offsets(w, offsets);
            }
            GroupOp::FetchOffsets(partitions) => {
                w.u8(5);
                match partitions {
                    None => w.u8(0),
                    Some(partitions) => {
                        w.u8(1);
                        put_partitions(w, partitions);
                    }
                }
            }
            GroupOp::List => w.u8(6),
            GroupOp::Describe => w.u8(7),
            GroupOp::Delete => w.u8(8),
            GroupOp::DeleteOffsets(partitions) => {
                w.u8(9);
                put_partitions(w, partitions);
            }
        }
    }

    /// Decodes the body after the routing fields were read.
    pub(crate) fn decode_rest(
        topic: String,
        partition: PartitionId,
        r: &mut Reader,
    ) -> Result<GroupRequest, ProtoError> {
        let group = r.string16("group", NAME)?;
        let op = match r.u8("op")? {
            0 => GroupOp::Join(JoinOp {
                member_id: r.string16("member_id", NAME)?,
                instance_id: read_option(r, "instance_id")?,
                client_id: r.string16("client_id", NAME)?,
                session_timeout_ms: i32_of(r, "session_timeout_ms")?,
                rebalance_timeout_ms: i32_of(r, "rebalance_timeout_ms")?,
                protocol_type: r.string16("protocol_type", NAME)?,
                protocols: read_named_bytes(r, "protocols", GROUP_PROTOCOLS_MAX)?,
                require_known_member_id: read_flag(r, "require_known_member_id")?,
            }),
            1 => GroupOp::Sync {
                member: read_member(r)?,
                assignments: read_named_bytes(r, "assignments", GROUP_MEMBERS_MAX)?,
            },
            2 => GroupOp::Heartbeat(read_member(r)?),
            3 => {
                let n = r.count("members", GROUP_MEMBERS_MAX, 3)?;
                let members = (0..n)
                    .map(|_| {
                        Ok((
                            r.string16("member_id", NAME)?,
                            read_option(r, "instance_id")?,
                        ))
                    })
                    .collect::<Result<_, ProtoError>>()?;
                GroupOp::Leave(members)
            }
            4 => GroupOp::Commit {
                member: read_member(r)?,
                offsets: read_offsets(r)?,
            },
            5 => GroupOp::FetchOffsets(match read_flag(r, "all")? {
                false => None,
                true => Some(read_partitions(r)?),
            }),
            6 => GroupOp::List,
            7 => GroupOp::Describe,
            8 => GroupOp::Delete,
            9 => GroupOp::DeleteOffsets(read_partitions(r)?),
            other => {
                return Err(ProtoError::Value {
                    field: "op",
                    value: other.into(),
                })
            }
        };
        Ok(GroupRequest {
            topic,
            partition,
            group,
            op,
        })
    }
}

impl GroupResponse {
    pub(crate) fn encode_body<B: BufMut>(&self, w: &mut Writer<'_, B>) {
        match self {
            GroupResponse::Joined {
                generation,
                protocol_type,
                protocol,
                leader,
                member_id,
                members,
            } => {
                w.u8(0);
                w.u32(generation.cast_unsigned());
                w.str16(protocol_type);
                w.str16(protocol);
                w.str16(leader);
                w.str16(member_id);
                w.u32(count(members.len()));
                for member in members {
                    w.str16(&member.member_id);
                    put_option(w, member.instance_id.as_deref());
                    w.bytes32(&member.metadata);
                }
            }
            GroupResponse::Synced {
                protocol_type,
                protocol,
                assignment,
            } => {
                w.u8(1);
                w.str16(protocol_type);
                w.str16(protocol);
                w.bytes32(assignment);
            }
            GroupResponse::Done => w.u8(2),
            GroupResponse::Left(results) => {
                w.u8(3);
                w.u32(count(results.len()));
                for (code, message) in results {
                    w.u16(*code);
                    w.str16(message);
                }
            }
            GroupResponse::Offsets(offsets) => {
                w.u8(4);
                put_offsets(w, offsets);
            }
            GroupResponse::Groups(groups) => {
                w.u8(5);
                w.u32(count(groups.len()));
                for group in groups {
                    w.str16(&group.group);
                    w.str16(&group.state);
                    w.str16(&group.protocol_type);
                    w.str16(&group.protocol);
                    w.u32(count(group.members.len()));
                    for member in &group.members {
                        w.str16(&member.member_id);
                        put_option(w, member.instance_id.as_deref());
                        w.str16(&member.client_id);
                        w.bytes32(&member.metadata);
                        w.bytes32(&member.assignment);
                    }
                }
            }
        }
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<GroupResponse, ProtoError> {
        Ok(match r.u8("answer")? {
            0 => {
                let generation = i32_of(r, "generation")?;
                let protocol_type = r.string16("protocol_type", NAME)?;
                let protocol = r.string16("protocol", NAME)?;
                let leader = r.string16("leader", NAME)?;
                let member_id = r.string16("member_id", NAME)?;
                let n = r.count("members", GROUP_MEMBERS_MAX, 7)?;
                let members = (0..n)
                    .map(|_| {
                        Ok(JoinedMember {
                            member_id: r.string16("member_id", NAME)?,
                            instance_id: read_option(r, "instance_id")?,
                            metadata: r.bytes32("metadata", GROUP_METADATA_BYTES_MAX)?,
                        })
                    })
                    .collect::<Result<_, ProtoError>>()?;
                GroupResponse::Joined {
                    generation,
                    protocol_type,
                    protocol,
                    leader,
                    member_id,
                    members,
                }
            }
            1 => GroupResponse::Synced {
                protocol_type: r.string16("protocol_type", NAME)?,
                protocol: r.string16("protocol", NAME)?,
                assignment: r.bytes32("assignment", GROUP_METADATA_BYTES_MAX)?,
            },
            2 => GroupResponse::Done,
            3 => {
                let n = r.count("results", GROUP_MEMBERS_MAX, 4)?;
                let results = (0..n)
                    .map(|_| {
                        Ok((
                            r.u16("code")?,
                            r.string16("message", crate::limits::ERROR_MESSAGE_SIZE_MAX)?,
                        ))
                    })
                    .collect::<Result<_, ProtoError>>()?;
                GroupResponse::Left(results)
            }
            4 => GroupResponse::Offsets(read_offsets(r)?),
            5 => {
                let n = r.count("groups", GROUPS_PER_ANSWER_MAX, 12)?;
                let mut groups = Vec::with_capacity(n);
                for _ in 0..n {
                    let group = r.string16("group", NAME)?;
                    let state = r.string16("state", NAME)?;
                    let protocol_type = r.string16("protocol_type", NAME)?;
                    let protocol = r.string16("protocol", NAME)?;
                    let m = r.count("members", GROUP_MEMBERS_MAX, 13)?;
                    let members = (0..m)
                        .map(|_| {
                            Ok(MemberInfo {
                                member_id: r.string16("member_id", NAME)?,
                                instance_id: read_option(r, "instance_id")?,
                                client_id: r.string16("client_id", NAME)?,
                                metadata: r.bytes32("metadata", GROUP_METADATA_BYTES_MAX)?,
                                assignment: r.bytes32("assignment", GROUP_METADATA_BYTES_MAX)?,
                            })
                        })
                        .collect::<Result<_, ProtoError>>()?;
                    groups.push(GroupInfo {
                        group,
                        state,
                        protocol_type,
                        protocol,
                        members,
                    });
                }
                GroupResponse::Groups(groups)
            }
            other => {
                return Err(ProtoError::Value {
                    field: "answer",
                    value: other.into(),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{Request, Response};

    fn round_trip_request(op: GroupOp) {
        let request = Request::Group(GroupRequest::new("", op));
        let frame = crate::Frame::parse(request.to_frame(7), u32::MAX).unwrap();
        assert_eq!(Request::decode(&frame).unwrap(), request);
    }

    fn round_trip_response(answer: GroupResponse) {
        let response = Response::Group(answer);
        let frame = crate::Frame::parse(response.to_frame(7), u32::MAX).unwrap();
        assert_eq!(Response::decode(&frame).unwrap(), response);
    }

    #[test]
    fn every_request_and_answer_round_trips_also_with_empty_fields() {
        let member = MemberRef::default();
        let offset = CommitOffset {
            topic: String::new(),
            partition: 0,
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
        };
        for op in [
            GroupOp::Join(JoinOp {
                member_id: String::new(),
                instance_id: Some(String::new()),
                client_id: String::new(),
                session_timeout_ms: -1,
                rebalance_timeout_ms: 0,
                protocol_type: String::new(),
                protocols: vec![(String::new(), Bytes::new())],
                require_known_member_id: true,
            }),
            GroupOp::Sync {
                member: member.clone(),
                assignments: vec![(String::new(), Bytes::new())],
            },
            GroupOp::Heartbeat(member.clone()),
            GroupOp::Leave(vec![(String::new(), None)]),
            GroupOp::Commit {
                member,
                offsets: vec![offset.clone(), offset],
            },
            GroupOp::FetchOffsets(None),
            GroupOp::FetchOffsets(Some(vec![(String::new(), 0)])),
            GroupOp::List,
            GroupOp::Describe,
            GroupOp::Delete,
            GroupOp::DeleteOffsets(vec![(String::new(), 1)]),
        ] {
            round_trip_request(op);
        }
        for answer in [
            GroupResponse::Joined {
                generation: -1,
                protocol_type: String::new(),
                protocol: String::new(),
                leader: String::new(),
                member_id: String::new(),
                members: vec![JoinedMember {
                    member_id: String::new(),
                    instance_id: None,
                    metadata: Bytes::new(),
                }],
            },
            GroupResponse::Synced {
                protocol_type: String::new(),
                protocol: String::new(),
                assignment: Bytes::new(),
            },
            GroupResponse::Done,
            GroupResponse::Left(vec![(0, String::new())]),
            GroupResponse::Offsets(vec![FetchedOffset {
                topic: String::new(),
                partition: 0,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
            }]),
            GroupResponse::Groups(vec![GroupInfo {
                group: String::new(),
                state: String::new(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: vec![MemberInfo {
                    member_id: String::new(),
                    instance_id: None,
                    client_id: String::new(),
                    metadata: Bytes::new(),
                    assignment: Bytes::new(),
                }],
            }]),
        ] {
            round_trip_response(answer);
        }
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Values of Kafka's `Utils.murmur2` (UtilsTest).
        assert_eq!(murmur2(b"21").cast_signed(), -973932308);
        assert_eq!(murmur2(b"foobar").cast_signed(), -790332482);
        assert_eq!(
            murmur2(b"a-little-bit-long-string").cast_signed(),
            -985981536
        );
        assert_eq!(
            murmur2(b"a-little-bit-longer-string").cast_signed(),
            -1486304829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8").cast_signed(),
            -58897971
        );
        assert_eq!(murmur2(b"abc").cast_signed(), 479470107);
    }
}
