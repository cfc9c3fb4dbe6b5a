//! Consumer groups, Kafka's classic protocol: the pure state machine of one group —
//! membership, generations, the join and sync phases of a rebalance, session and rebalance
//! timeouts, static members (`group.instance.id`), and the checks an offset commit makes.
//! Modelled on Apache Kafka's `ClassicGroup` and `GroupMetadataManager`; no I/O, `now` is
//! passed in. The shard that owns the group drives it; committed offsets are stored by the
//! shard (this machine only says whether a commit is allowed).
//!
//! States: `Empty` (no members) → `PreparingRebalance` (waiting for members to (re)join) →
//! `CompletingRebalance` (joined; waiting for the leader's assignment) → `Stable`; any member
//! change or expiry goes back to `PreparingRebalance`, the last member leaving to `Empty`.
//!
//! Requests that wait (a JoinGroup until the join phase ends, a SyncGroup until the leader's
//! assignment arrives) are named by a [`Ticket`] the caller chose; their answers come out of
//! [`Group::poll_output`]. Invariants:
//! - every parked JoinGroup and SyncGroup is answered exactly once: when its phase ends, when
//!   its member is removed (UNKNOWN_MEMBER_ID, or FENCED_INSTANCE_ID for a replaced static
//!   member), or when a newer request of the same member replaces it (REBALANCE_IN_PROGRESS
//!   for the older one);
//! - the generation only grows; a member's assignment is that of the current generation;
//! - a member whose session deadline passes without a heartbeat or request is removed (and a
//!   rebalance starts); during the join phase a member that has not rejoined by the rebalance
//!   deadline is removed;
//! - at most `GroupConfig::members_max` members (pending member ids count).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use thiserror::Error;

use crate::Millis;

/// How long an empty group waits for more members before its first join phase ends (Kafka's
/// `group.initial.rebalance.delay.ms`), unless configured otherwise.
pub const INITIAL_REBALANCE_DELAY_MS_DEFAULT: i64 = 3_000;
/// Session timeouts a member may ask for (Kafka's `group.min/max.session.timeout.ms`).
pub const SESSION_TIMEOUT_MS_MIN: i32 = 6_000;
pub const SESSION_TIMEOUT_MS_MAX: i32 = 30 * 60 * 1000;
/// Members of one group, unless configured otherwise (Kafka's `group.max.size` is unlimited;
/// a bound keeps one group's memory and every rebalance's answer size in check).
pub const MEMBERS_MAX_DEFAULT: usize = 1_000;
/// Bytes of the client id that go into a member id (the rest is cut).
pub const CLIENT_ID_IN_MEMBER_ID_MAX: usize = 200;
/// Protocols one member may offer, and bytes of its metadata and of an assignment.
pub const PROTOCOLS_PER_MEMBER_MAX: usize = 16;
pub const PROTOCOL_METADATA_BYTES_MAX: usize = 64 << 10;

/// Settings of the groups of a coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    pub initial_rebalance_delay_ms: i64,
    pub members_max: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: INITIAL_REBALANCE_DELAY_MS_DEFAULT,
            members_max: MEMBERS_MAX_DEFAULT,
        }
    }
}

/// Names a request that waits for its answer; chosen by the caller, unique per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// The group protocol's errors, each one of Kafka's error codes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GroupError {
    /// A first JoinGroup without a member id: rejoin with this one (KIP-394).
    #[error("join again with the member id {member_id}")]
    MemberIdRequired { member_id: String },
    #[error("unknown member {member_id}")]
    UnknownMemberId { member_id: String },
    #[error("generation {found} is not the group's generation {current}")]
    IllegalGeneration { current: i32, found: i32 },
    #[error("the group is rebalancing: join again")]
    RebalanceInProgress,
    #[error("the member's protocol type or protocols match none of the group's")]
    InconsistentGroupProtocol,
    #[error("the group has {members} members, the limit")]
    GroupMaxSizeReached { members: usize },
    #[error("session timeout {found} ms is outside {SESSION_TIMEOUT_MS_MIN}..={SESSION_TIMEOUT_MS_MAX} ms")]
    InvalidSessionTimeout { found: i32 },
    #[error("static member {instance_id} was replaced by a newer member id")]
    FencedInstanceId { instance_id: String },
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

/// A JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Empty on a member's first join.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// Whether the client supports KIP-394 (JoinGroup v4+): a first join without a member id
    /// is answered MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// A member as the leader's JoinGroup answer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol, for the leader; empty for the
    /// others.
    pub members: Vec<JoinedMember>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    /// Its metadata for the group's protocol (empty before one was chosen).
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// The answer to a SyncGroup: the member's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Bytes,
}

/// An answer to a request that waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOutput {
    Join {
        ticket: Ticket,
        answer: Result<Joined, GroupError>,
    },
    Sync {
        ticket: Ticket,
        answer: Result<Synced, GroupError>,
    },
}

/// What a JoinGroup or SyncGroup gets: its answer now, or later through `poll_output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    Now(Result<T, GroupError>),
    Later,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// When the member is removed unless heard from.
    deadline: Millis,
    join: Option<Ticket>,
    sync: Option<Ticket>,
}

/// One consumer group (see the module documentation).
#[derive(Debug, Clone)]
pub struct Group {
    id: String,
    config: GroupConfig,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined: (deadline).
    pending: BTreeMap<String, Millis>,
    /// Static members: instance id → member id.
    instances: BTreeMap<String, String>,
    /// When the join phase ends at the latest (the largest rebalance timeout).
    join_deadline: Option<Millis>,
    /// An empty group's first join phase lasts at least until then.
    delay_until: Option<Millis>,
    /// Makes member ids unique across coordinator restarts (the shell's random number).
    nonce: u64,
    next_member: u64,
    outputs: VecDeque<GroupOutput>,
}

impl Group {
    /// A new, empty group; `nonce` (random per coordinator start) keeps member ids from
    /// repeating those handed out before a restart.
    pub fn new(id: &str, config: GroupConfig, nonce: u64) -> Group {
        Group {
            id: id.to_owned(),
            config,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            instances: BTreeMap::new(),
            join_deadline: None,
            delay_until: None,
            nonce,
            next_member: 0,
            outputs: VecDeque::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    /// Member ids with their instance id and assignment, in id order.
    pub fn members(&self) -> impl Iterator<Item = (&str, Option<&str>, &Bytes)> {
        self.members.iter().map(|(id, member)| {
            (
                id.as_str(),
                member.instance_id.as_deref(),
                &member.assignment,
            )
        })
    }

    /// Every member as DescribeGroups shows it, in id order.
    pub fn describe(&self) -> Vec<DescribedMember> {
        self.members
            .iter()
            .map(|(id, member)| DescribedMember {
                member_id: id.clone(),
                group_instance_id: member.instance_id.clone(),
                client_id: member.client_id.clone(),
                metadata: self
                    .protocol
                    .as_deref()
                    .and_then(|chosen| {
                        member
                            .protocols
                            .iter()
                            .find(|(name, _)| name == chosen)
                            .map(|(_, metadata)| metadata.clone())
                    })
                    .unwrap_or_default(),
                assignment: member.assignment.clone(),
            })
            .collect()
    }

    /// Whether the group has members (or member ids handed out and not yet joined).
    pub fn has_members(&self) -> bool {
        self.size() > 0
    }

    pub fn poll_output(&mut self) -> Option<GroupOutput> {
        self.outputs.pop_front()
    }

    /// When [`Group::handle_tick`] must run next, if ever.
    pub fn poll_timeout(&self) -> Option<Millis> {
        // A member waiting in a join or a sync does not expire (the phase's end settles it).
        let sessions = self
            .members
            .values()
            .filter(|member| member.join.is_none() && member.sync.is_none())
            .map(|member| member.deadline);
        let pending = self.pending.values().copied();
        let delay = self
            .delay_until
            .filter(|_| self.state == GroupState::PreparingRebalance);
        sessions
            .chain(pending)
            .chain(self.join_deadline)
            .chain(delay)
            .min()
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        // A member id stays within 255 bytes: the client id's first 200, then 38 at most.
        let mut end = client_id.len().min(CLIENT_ID_IN_MEMBER_ID_MAX);
        while !client_id.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}-{:016x}-{}",
            &client_id[..end],
            self.nonce,
            self.next_member
        )
    }

    fn size(&self) -> usize {
        self.members.len() + self.pending.len()
    }

    /// A JoinGroup. Answered now (errors, MEMBER_ID_REQUIRED, a static member rejoining a
    /// stable group unchanged) or when the join phase ends.
    pub fn handle_join(
        &mut self,
        now: Millis,
        ticket: Ticket,
        request: JoinRequest,
    ) -> Reply<Joined> {
        if let Err(error) = self.check_join(&request) {
            return Reply::Now(Err(error));
        }
        let mut member_id = request.member_id.clone();
        if let Some(instance) = &request.group_instance_id {
            if let Some(known) = self.instances.get(instance).cloned() {
                if !member_id.is_empty() && member_id != known {
                    // An older process of the instance (Kafka's validateExistingMember): the
                    // live member stays, the stale one is fenced.
                    return Reply::Now(Err(GroupError::FencedInstanceId {
                        instance_id: instance.clone(),
                    }));
                }
                if member_id.is_empty() {
                    // A static member restarted: it takes over the old member id's place
                    // under a new id; the old one is fenced.
                    let was_leader = self.leader.as_deref() == Some(known.as_str());
                    let new_id = self.new_member_id(&request.client_id);
                    self.replace_static(&known, &new_id, instance);
                    member_id = new_id;
                    let unchanged = self.members.get(&member_id).is_some_and(|member| {
                        member.protocols == request.protocols
                            && member.protocol_type == request.protocol_type
                    });
                    // A restarted leader goes through a rebalance (it must assign again); an
                    // unchanged follower of a stable group is answered at once.
                    if self.state == GroupState::Stable && unchanged && !was_leader {
                        // Kafka: no rebalance; the member gets the current generation and
                        // syncs to fetch its assignment.
                        let member = self.members.get_mut(&member_id).expect("replaced");
                        member.deadline = Millis(now.0 + i64::from(member.session_timeout_ms));
                        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                        return Reply::Now(Ok(self.joined_answer(&member_id)));
                    }
                }
            } else if !member_id.is_empty() {
                // A member id for an instance the group does not know (expired, or made up).
                return Reply::Now(Err(GroupError::UnknownMemberId { member_id }));
            } else {
                // First join of a static member: no MEMBER_ID_REQUIRED round.
                member_id = self.new_member_id(&request.client_id);
                if self.size() >= self.config.members_max {
                    return Reply::Now(Err(GroupError::GroupMaxSizeReached {
                        members: self.size(),
                    }));
                }
                self.instances.insert(instance.clone(), member_id.clone());
            }
        } else if member_id.is_empty() {
            if self.size() >= self.config.members_max {
                return Reply::Now(Err(GroupError::GroupMaxSizeReached {
                    members: self.size(),
                }));
            }
            let new_id = self.new_member_id(&request.client_id);
            if request.require_known_member_id {
                let deadline = Millis(now.0 + i64::from(request.session_timeout_ms));
                self.pending.insert(new_id.clone(), deadline);
                return Reply::Now(Err(GroupError::MemberIdRequired { member_id: new_id }));
            }
            // Before KIP-394 the new member joins at once under its new id.
            self.pending.insert(new_id.clone(), now);
            member_id = new_id;
        }
        let known = self.members.contains_key(&member_id);
        let pending = self.pending.remove(&member_id).is_some();
        let static_new = request.group_instance_id.is_some() && !known;
        if !known && !pending && !static_new {
            return Reply::Now(Err(GroupError::UnknownMemberId { member_id }));
        }
        if !known && self.size() >= self.config.members_max {
            return Reply::Now(Err(GroupError::GroupMaxSizeReached {
                members: self.size(),
            }));
        }
        self.add_or_update(now, ticket, &member_id, request);
        Reply::Later
    }

    fn check_join(&self, request: &JoinRequest) -> Result<(), GroupError> {
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&request.session_timeout_ms)
        {
            return Err(GroupError::InvalidSessionTimeout {
                found: request.session_timeout_ms,
            });
        }
        if request.rebalance_timeout_ms <= 0 {
            return Err(GroupError::InvalidRequest(
                "rebalance timeout must be positive",
            ));
        }
        if request.protocols.is_empty()
            || request.protocols.len() > PROTOCOLS_PER_MEMBER_MAX
            || request.protocol_type.is_empty()
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if request
            .protocols
            .iter()
            .any(|(_, metadata)| metadata.len() > PROTOCOL_METADATA_BYTES_MAX)
        {
            return Err(GroupError::InvalidRequest("protocol metadata too large"));
        }
        // A group with members speaks one protocol type, and some protocol every member
        // (as it joined last, this one too: Kafka's rule) supports.
        if !self.members.is_empty() {
            if self.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
                return Err(GroupError::InconsistentGroupProtocol);
            }
            let mut candidates: Vec<&str> = request
                .protocols
                .iter()
                .map(|(name, _)| name.as_str())
                .collect();
            for member in self.members.values() {
                candidates.retain(|name| member.protocols.iter().any(|(theirs, _)| theirs == name));
            }
            if candidates.is_empty() {
                return Err(GroupError::InconsistentGroupProtocol);
            }
        }
        Ok(())
    }

    fn replace_static(&mut self, old_id: &str, new_id: &str, instance: &str) {
        self.instances
            .insert(instance.to_owned(), new_id.to_owned());
        let Some(mut member) = self.members.remove(old_id) else {
            return;
        };
        let fenced = GroupError::FencedInstanceId {
            instance_id: instance.to_owned(),
        };
        if let Some(ticket) = member.join.take() {
            self.outputs.push_back(GroupOutput::Join {
                ticket,
                answer: Err(fenced.clone()),
            });
        }
        if let Some(ticket) = member.sync.take() {
            self.outputs.push_back(GroupOutput::Sync {
                ticket,
                answer: Err(fenced),
            });
        }
        // Its session restarts where the join goes on: at once for an unchanged follower of a
        // stable group, else in `add_or_update`.
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.to_owned());
        }
        self.members.insert(new_id.to_owned(), member);
    }

    fn add_or_update(
        &mut self,
        now: Millis,
        ticket: Ticket,
        member_id: &str,
        request: JoinRequest,
    ) {
        let deadline = Millis(now.0 + i64::from(request.session_timeout_ms));
        let changed = self.members.get(member_id).is_none_or(|member| {
            member.protocols != request.protocols || member.protocol_type != request.protocol_type
        });
        let member = self
            .members
            .entry(member_id.to_owned())
            .or_insert_with(|| Member {
                instance_id: request.group_instance_id.clone(),
                client_id: request.client_id.clone(),
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocol_type: request.protocol_type.clone(),
                protocols: Vec::new(),
                assignment: Bytes::new(),
                deadline,
                join: None,
                sync: None,
            });
        let replaced = member.join.replace(ticket);
        let sync = member.sync.take();
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.protocol_type = request.protocol_type.clone();
        member.protocols = request.protocols;
        member.deadline = deadline;
        if let Some(previous) = replaced {
            self.outputs.push_back(GroupOutput::Join {
                ticket: previous,
                answer: Err(GroupError::RebalanceInProgress),
            });
        }
        if let Some(sync) = sync {
            self.outputs.push_back(GroupOutput::Sync {
                ticket: sync,
                answer: Err(GroupError::RebalanceInProgress),
            });
        }
        if self.state == GroupState::Empty || self.protocol_type.is_none() {
            self.protocol_type = Some(request.protocol_type);
        }
        match self.state {
            GroupState::Empty => {
                // The first member: wait a little for the others (initial rebalance delay).
                self.prepare_rebalance(now, self.config.initial_rebalance_delay_ms);
            }
            GroupState::Stable if !changed && self.leader.as_deref() != Some(member_id) => {
                // An unchanged follower rejoining a stable group (it lost its state): the
                // current generation again, no rebalance.
                let answer = Ok(self.joined_answer(member_id));
                if let Some(member) = self.members.get_mut(member_id) {
                    member.join = None;
                }
                self.outputs.push_back(GroupOutput::Join { ticket, answer });
                return;
            }
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now, 0),
            GroupState::PreparingRebalance => {}
        }
        self.maybe_complete_join(now);
    }

    /// Starts a join phase: every member must rejoin by the largest rebalance timeout; an
    /// empty group's first phase lasts at least `delay_ms`.
    fn prepare_rebalance(&mut self, now: Millis, delay_ms: i64) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        let mut refused = Vec::new();
        for member in self.members.values_mut() {
            refused.extend(member.sync.take());
        }
        for ticket in refused {
            self.outputs.push_back(GroupOutput::Sync {
                ticket,
                answer: Err(GroupError::RebalanceInProgress),
            });
        }
        self.state = GroupState::PreparingRebalance;
        let timeout = self
            .members
            .values()
            .map(|member| i64::from(member.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        self.join_deadline = Some(Millis(now.0 + timeout.max(delay_ms)));
        self.delay_until = (delay_ms > 0).then(|| Millis(now.0 + delay_ms));
    }

    /// Ends the join phase once every member (and every member id handed out) has joined and
    /// the initial delay is over, or at its deadline.
    fn maybe_complete_join(&mut self, now: Millis) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|member| member.join.is_some());
        let delay_over = self.delay_until.is_none_or(|until| now >= until);
        let deadline_over = self.join_deadline.is_some_and(|deadline| now >= deadline);
        if (all_joined && delay_over) || deadline_over {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Millis) {
        // Members that did not rejoin in time are out; so are member ids never used.
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(
                &id,
                GroupError::UnknownMemberId {
                    member_id: id.clone(),
                },
            );
        }
        self.pending.clear();
        self.join_deadline = None;
        self.delay_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.protocol = self.vote();
        if !self
            .leader
            .as_ref()
            .is_some_and(|leader| self.members.contains_key(leader))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let answer = Ok(self.joined_answer(&id));
            let member = self.members.get_mut(&id).expect("listed");
            member.assignment = Bytes::new();
            member.deadline = Millis(now.0 + i64::from(member.session_timeout_ms));
            if let Some(ticket) = member.join.take() {
                self.outputs.push_back(GroupOutput::Join { ticket, answer });
            }
        }
    }

    /// The protocol every member supports that most members prefer (Kafka's vote: each
    /// member votes for the first of its protocols that all support; ties go to the name
    /// first in order).
    fn vote(&self) -> Option<String> {
        let mut candidates: Vec<&str> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        for member in self.members.values() {
            candidates.retain(|name| member.protocols.iter().any(|(theirs, _)| theirs == name));
        }
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name.as_str()))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let most = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, count)| *count == most)
            .map(|(name, _)| name.to_owned())
    }

    fn joined_answer(&self, member_id: &str) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, member)| JoinedMember {
                    member_id: id.clone(),
                    group_instance_id: member.instance_id.clone(),
                    metadata: member
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == protocol)
                        .map(|(_, metadata)| metadata.clone())
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol,
            leader,
            member_id: member_id.to_owned(),
            members,
        }
    }

    /// The last member is gone: no protocol, no leader.
    /// The last member left: no protocol, no leader; the protocol type stays (Kafka's
    /// `ClassicGroup` keeps it, so an empty consumer group still shows as one) until the next
    /// first member sets its own.
    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.protocol = None;
        self.leader = None;
    }

    /// Removes a member, answering what it had waiting with `error`.
    fn remove_member(&mut self, member_id: &str, error: GroupError) {
        let Some(member) = self.members.remove(member_id) else {
            return;
        };
        if let Some(instance) = &member.instance_id {
            if self
                .instances
                .get(instance)
                .is_some_and(|id| id == member_id)
            {
                self.instances.remove(instance);
            }
        }
        if let Some(ticket) = member.join {
            self.outputs.push_back(GroupOutput::Join {
                ticket,
                answer: Err(error.clone()),
            });
        }
        if let Some(ticket) = member.sync {
            self.outputs.push_back(GroupOutput::Sync {
                ticket,
                answer: Err(error),
            });
        }
    }

    /// After members left or expired: a rebalance, or the join phase may now be complete.
    fn after_removal(&mut self, now: Millis) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.generation += 1;
                    self.become_empty();
                } else {
                    self.prepare_rebalance(now, 0);
                }
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Empty => {}
        }
    }

    /// Finds a member by id, checking a static member's instance id.
    fn known(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            if let Some(current) = self.instances.get(instance) {
                if current != member_id {
                    return Err(GroupError::FencedInstanceId {
                        instance_id: instance.to_owned(),
                    });
                }
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(GroupError::UnknownMemberId {
                member_id: member_id.to_owned(),
            })
        }
    }

    /// A SyncGroup: the leader's brings the assignment (`assignments`: member id → bytes);
    /// every member's is answered with its own once the leader's arrived.
    pub fn handle_sync(
        &mut self,
        now: Millis,
        ticket: Ticket,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<Synced> {
        if let Err(error) = self.known(member_id, instance_id) {
            return Reply::Now(Err(error));
        }
        if generation != self.generation {
            return Reply::Now(Err(GroupError::IllegalGeneration {
                current: self.generation,
                found: generation,
            }));
        }
        self.touch(now, member_id);
        match self.state {
            GroupState::Empty => Reply::Now(Err(GroupError::UnknownMemberId {
                member_id: member_id.to_owned(),
            })),
            GroupState::PreparingRebalance => Reply::Now(Err(GroupError::RebalanceInProgress)),
            GroupState::Stable => Reply::Now(Ok(self.synced(member_id))),
            GroupState::CompletingRebalance => {
                let member = self.members.get_mut(member_id).expect("known");
                if let Some(previous) = member.sync.replace(ticket) {
                    self.outputs.push_back(GroupOutput::Sync {
                        ticket: previous,
                        answer: Err(GroupError::RebalanceInProgress),
                    });
                }
                if self.leader.as_deref() == Some(member_id) {
                    for (id, assignment) in assignments {
                        if let Some(member) = self.members.get_mut(&id) {
                            member.assignment = assignment;
                        }
                    }
                    self.state = GroupState::Stable;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let answer = Ok(self.synced(&id));
                        if let Some(ticket) = self.members.get_mut(&id).and_then(|m| m.sync.take())
                        {
                            self.outputs.push_back(GroupOutput::Sync { ticket, answer });
                        }
                    }
                }
                Reply::Later
            }
        }
    }

    fn synced(&self, member_id: &str) -> Synced {
        Synced {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            assignment: self
                .members
                .get(member_id)
                .map(|member| member.assignment.clone())
                .unwrap_or_default(),
        }
    }

    fn touch(&mut self, now: Millis, member_id: &str) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.deadline = Millis(now.0 + i64::from(member.session_timeout_ms));
        }
    }

    /// A Heartbeat: keeps the member's session; REBALANCE_IN_PROGRESS tells it to rejoin.
    pub fn handle_heartbeat(
        &mut self,
        now: Millis,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.known(member_id, instance_id)?;
        self.touch(now, member_id);
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                current: self.generation,
                found: generation,
            });
        }
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Empty => Err(GroupError::UnknownMemberId {
                member_id: member_id.to_owned(),
            }),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// A LeaveGroup of these members (member id, instance id); one answer each.
    pub fn handle_leave(
        &mut self,
        now: Millis,
        leaving: &[(String, Option<String>)],
    ) -> Vec<Result<(), GroupError>> {
        let mut answers = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for (member_id, instance_id) in leaving {
            // A static member may leave by its instance id alone.
            let id = match (member_id.is_empty(), instance_id) {
                (true, Some(instance)) => self.instances.get(instance).cloned().unwrap_or_default(),
                _ => member_id.clone(),
            };
            match self.known(&id, instance_id.as_deref()) {
                Ok(()) => {
                    self.remove_member(
                        &id,
                        GroupError::UnknownMemberId {
                            member_id: id.clone(),
                        },
                    );
                    removed = true;
                    answers.push(Ok(()));
                }
                Err(error) => answers.push(Err(error)),
            }
        }
        if removed {
            self.after_removal(now);
        }
        answers
    }

    /// Whether an OffsetCommit of `member_id` at `generation` is allowed: by a member of the
    /// current generation (also while the group prepares a rebalance, so members commit
    /// before they rejoin), or, for a group without members, by anyone at generation -1
    /// (consumers that `assign()` partitions, and admin tools).
    pub fn check_commit(
        &mut self,
        now: Millis,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        // Kafka's rule: a group without members takes commits at generation -1 (consumers
        // that assign partitions themselves, admin tools), whatever member id they carry.
        if generation < 0 && self.members.is_empty() {
            return Ok(());
        }
        self.known(member_id, instance_id)?;
        self.touch(now, member_id);
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                current: self.generation,
                found: generation,
            });
        }
        match self.state {
            GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Lets time pass: member ids and members not heard from in their session timeout are
    /// removed; a join phase past its deadline (or initial delay) ends.
    pub fn handle_tick(&mut self, now: Millis) {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| {
                member.deadline <= now && member.join.is_none() && member.sync.is_none()
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove_member(
                id,
                GroupError::UnknownMemberId {
                    member_id: id.clone(),
                },
            );
        }
        if !expired.is_empty() {
            self.after_removal(now);
        }
        // Lapsed member ids, or the deadline, may end a join phase.
        self.maybe_complete_join(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 30_000;

    fn join(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_owned(),
            group_instance_id: None,
            client_id: "c".to_owned(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".to_owned(),
            protocols: protocols
                .iter()
                .map(|name| ((*name).to_owned(), Bytes::from(format!("meta-{name}"))))
                .collect(),
            require_known_member_id: true,
        }
    }

    fn group() -> Group {
        Group::new("g", GroupConfig::default(), 7)
    }

    /// A first join: MEMBER_ID_REQUIRED, then the join with the id handed out.
    fn first_join(group: &mut Group, now: Millis, ticket: u64, protocols: &[&str]) -> String {
        let Reply::Now(Err(GroupError::MemberIdRequired { member_id })) =
            group.handle_join(now, Ticket(ticket), join("", protocols))
        else {
            panic!("a first join needs a member id");
        };
        assert_eq!(
            group.handle_join(now, Ticket(ticket), join(&member_id, protocols)),
            Reply::Later
        );
        member_id
    }

    fn outputs(group: &mut Group) -> Vec<GroupOutput> {
        std::iter::from_fn(|| group.poll_output()).collect()
    }

    fn joined(output: &GroupOutput) -> &Joined {
        match output {
            GroupOutput::Join {
                answer: Ok(joined), ..
            } => joined,
            other => panic!("not a successful join: {other:?}"),
        }
    }

    #[test]
    fn clients_before_kip_394_join_at_once_and_long_client_ids_are_cut() {
        let mut group = group();
        let mut old = join("", &["range"]);
        old.require_known_member_id = false;
        old.client_id = "x".repeat(300);
        assert_eq!(group.handle_join(Millis(0), Ticket(1), old), Reply::Later);
        group.handle_tick(Millis(3_000));
        let outputs = outputs(&mut group);
        let joined = joined(&outputs[0]);
        assert_eq!(joined.generation, 1);
        assert!(joined.member_id.len() <= 255, "{}", joined.member_id.len());
    }

    #[test]
    fn two_members_join_after_the_initial_delay_and_sync_the_leaders_assignment() {
        let mut group = group();
        let a = first_join(&mut group, Millis(0), 1, &["range", "roundrobin"]);
        let b = first_join(&mut group, Millis(100), 2, &["roundrobin", "range"]);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        // Everyone joined, but the initial delay holds the phase open.
        group.handle_tick(Millis(2_999));
        assert!(outputs(&mut group).is_empty());
        group.handle_tick(Millis(3_000));
        let answers = outputs(&mut group);
        assert_eq!(answers.len(), 2);
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        assert_eq!(group.generation(), 1);
        let leader = group.leader().unwrap().to_owned();
        assert_eq!(leader, a.clone().min(b.clone()));
        for answer in &answers {
            let joined = joined(answer);
            assert_eq!(joined.generation, 1);
            // A tie (one vote each) goes to the first name.
            assert_eq!(joined.protocol, "range");
            assert_eq!(
                joined.members.len(),
                if joined.member_id == leader { 2 } else { 0 }
            );
        }
        let follower = if leader == a { &b } else { &a };
        assert_eq!(
            group.handle_sync(Millis(3_010), Ticket(3), follower, None, 1, Vec::new()),
            Reply::Later
        );
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"p0")),
            (b.clone(), Bytes::from_static(b"p1")),
        ];
        assert_eq!(
            group.handle_sync(Millis(3_020), Ticket(4), &leader, None, 1, assignments),
            Reply::Later
        );
        assert_eq!(group.state(), GroupState::Stable);
        let synced = outputs(&mut group);
        assert_eq!(synced.len(), 2);
        for output in synced {
            let GroupOutput::Sync {
                ticket,
                answer: Ok(synced),
            } = output
            else {
                panic!("{output:?}");
            };
            let expected = if (ticket == Ticket(4)) == (leader == a) {
                "p0"
            } else {
                "p1"
            };
            assert_eq!(synced.assignment, Bytes::from(expected));
        }
        assert_eq!(group.handle_heartbeat(Millis(4_000), &a, None, 1), Ok(()));
        assert_eq!(
            group.handle_heartbeat(Millis(4_000), &a, None, 0),
            Err(GroupError::IllegalGeneration {
                current: 1,
                found: 0
            })
        );
        assert_eq!(group.check_commit(Millis(4_000), &b, None, 1), Ok(()));
    }

    /// Drives a group of the given members to Stable at generation 1.
    fn stable(members: usize) -> (Group, Vec<String>) {
        let mut group = group();
        let ids: Vec<String> = (0..members)
            .map(|n| first_join(&mut group, Millis(0), n as u64, &["range"]))
            .collect();
        group.handle_tick(Millis(3_000));
        outputs(&mut group);
        let leader = group.leader().unwrap().to_owned();
        let generation = group.generation();
        let _ = group.handle_sync(
            Millis(3_000),
            Ticket(100),
            &leader,
            None,
            generation,
            Vec::new(),
        );
        outputs(&mut group);
        assert_eq!(group.state(), GroupState::Stable);
        (group, ids)
    }

    #[test]
    fn a_new_member_triggers_a_rebalance_that_waits_for_the_others_to_rejoin() {
        let (mut group, ids) = stable(2);
        let c = first_join(&mut group, Millis(5_000), 10, &["range"]);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        // The others learn it from their heartbeats and rejoin.
        assert_eq!(
            group.handle_heartbeat(Millis(5_100), &ids[0], None, 1),
            Err(GroupError::RebalanceInProgress)
        );
        // A commit of the old generation is still allowed while preparing.
        assert_eq!(group.check_commit(Millis(5_100), &ids[0], None, 1), Ok(()));
        assert_eq!(
            group.handle_join(Millis(5_200), Ticket(11), join(&ids[0], &["range"])),
            Reply::Later
        );
        assert!(
            outputs(&mut group).is_empty(),
            "one member has not rejoined"
        );
        assert_eq!(
            group.handle_join(Millis(5_300), Ticket(12), join(&ids[1], &["range"])),
            Reply::Later
        );
        let answers = outputs(&mut group);
        assert_eq!(answers.len(), 3);
        assert!(answers.iter().all(|answer| joined(answer).generation == 2));
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        assert_eq!(
            group.check_commit(Millis(5_300), &c, None, 2),
            Err(GroupError::RebalanceInProgress)
        );
    }

    #[test]
    fn a_member_that_does_not_rejoin_in_time_is_removed() {
        let (mut group, ids) = stable(2);
        // Member 0 rejoins with new metadata; member 1 has died (no heartbeats).
        assert_eq!(
            group.handle_join(
                Millis(4_000),
                Ticket(20),
                join(&ids[0], &["range", "sticky"])
            ),
            Reply::Later
        );
        // Member 1 still heartbeats (told to rejoin each time) but never rejoins.
        for at in [10_000, 20_000, 30_000] {
            assert_eq!(
                group.handle_heartbeat(Millis(at), &ids[1], None, 1),
                Err(GroupError::RebalanceInProgress)
            );
        }
        group.handle_tick(Millis(4_000 + i64::from(REBALANCE) - 1));
        assert!(outputs(&mut group).is_empty());
        group.handle_tick(Millis(4_000 + i64::from(REBALANCE)));
        let answers = outputs(&mut group);
        assert_eq!(answers.len(), 1);
        assert_eq!(
            joined(&answers[0]).members.len(),
            1,
            "the survivor leads alone"
        );
        assert_eq!(
            group.handle_heartbeat(Millis(40_000), &ids[1], None, 2),
            Err(GroupError::UnknownMemberId {
                member_id: ids[1].clone()
            })
        );
    }

    #[test]
    fn a_silent_member_expires_and_the_last_one_leaving_empties_the_group() {
        let (mut group, ids) = stable(2);
        // Member 1 keeps heartbeating, member 0 goes silent.
        assert_eq!(
            group.handle_heartbeat(Millis(9_000), &ids[1], None, 1),
            Ok(())
        );
        group.handle_tick(Millis(3_000 + i64::from(SESSION)));
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            group.handle_join(Millis(13_100), Ticket(30), join(&ids[1], &["range"])),
            Reply::Later
        );
        let answers = outputs(&mut group);
        assert_eq!(joined(&answers[0]).generation, 2);
        assert_eq!(
            group.handle_leave(Millis(14_000), &[(ids[1].clone(), None)]),
            vec![Ok(())]
        );
        assert_eq!(group.state(), GroupState::Empty);
        // An empty group takes commits without a generation (assign() consumers, tools).
        assert_eq!(group.check_commit(Millis(14_000), "", None, -1), Ok(()));
        assert_eq!(group.poll_timeout(), None);
    }

    #[test]
    fn a_member_id_handed_out_and_never_used_expires() {
        let (mut group, ids) = stable(1);
        let Reply::Now(Err(GroupError::MemberIdRequired { .. })) =
            group.handle_join(Millis(5_000), Ticket(40), join("", &["range"]))
        else {
            panic!("member id required");
        };
        assert_eq!(
            group.handle_heartbeat(Millis(6_000), &ids[0], None, 1),
            Ok(())
        );
        assert_eq!(
            group.poll_timeout(),
            Some(Millis(5_000 + i64::from(SESSION)))
        );
        group.handle_tick(Millis(5_000 + i64::from(SESSION)));
        assert_eq!(group.members().count(), 1);
    }

    #[test]
    fn a_static_member_restarting_keeps_its_place_and_fences_its_old_id() {
        let mut group = group();
        let leader = first_join(&mut group, Millis(0), 1, &["range"]);
        let mut request = join("", &["range"]);
        request.group_instance_id = Some("host-1".to_owned());
        assert_eq!(
            group.handle_join(Millis(0), Ticket(2), request.clone()),
            Reply::Later
        );
        group.handle_tick(Millis(3_000));
        let answers = outputs(&mut group);
        let first = answers
            .iter()
            .map(joined)
            .find(|joined| joined.member_id != leader)
            .expect("the static member joined")
            .member_id
            .clone();
        let assignments = vec![(first.clone(), Bytes::from_static(b"all"))];
        let _ = group.handle_sync(Millis(3_000), Ticket(3), &leader, None, 1, assignments);
        outputs(&mut group);
        assert_eq!(group.state(), GroupState::Stable);
        // Restarted: joins again with no member id, same instance id and metadata.
        let Reply::Now(Ok(again)) = group.handle_join(Millis(4_000), Ticket(4), request.clone())
        else {
            panic!("a static follower rejoining a stable group unchanged is answered at once");
        };
        assert_eq!(again.generation, 1, "no rebalance");
        assert_ne!(again.member_id, first);
        assert!(again.members.is_empty(), "it is not the leader");
        assert_eq!(
            group.handle_heartbeat(Millis(4_000), &first, Some("host-1"), 1),
            Err(GroupError::FencedInstanceId {
                instance_id: "host-1".to_owned()
            })
        );
        let Reply::Now(Ok(synced)) = group.handle_sync(
            Millis(4_000),
            Ticket(5),
            &again.member_id,
            Some("host-1"),
            1,
            Vec::new(),
        ) else {
            panic!("stable: the assignment at once");
        };
        assert_eq!(synced.assignment, Bytes::from_static(b"all"));
        // The old process comes back with its old id: it is fenced, the live member stays.
        let mut stale = request.clone();
        stale.member_id = first.clone();
        assert_eq!(
            group.handle_join(Millis(4_100), Ticket(6), stale),
            Reply::Now(Err(GroupError::FencedInstanceId {
                instance_id: "host-1".to_owned()
            }))
        );
        assert_eq!(
            group.handle_heartbeat(Millis(4_100), &again.member_id, Some("host-1"), 1),
            Ok(())
        );
        // An id made up for an unknown instance is refused.
        let mut made_up = request;
        made_up.group_instance_id = Some("host-2".to_owned());
        made_up.member_id = "invented".to_owned();
        assert!(matches!(
            group.handle_join(Millis(4_100), Ticket(7), made_up),
            Reply::Now(Err(GroupError::UnknownMemberId { .. }))
        ));
    }

    #[test]
    fn joins_are_refused_when_they_cannot_fit() {
        let (mut group, ids) = stable(1);
        assert_eq!(
            group.handle_join(Millis(0), Ticket(1), join(&ids[0], &["other"])),
            Reply::Now(Err(GroupError::InconsistentGroupProtocol))
        );
        let mut short = join("", &["range"]);
        short.session_timeout_ms = 10;
        assert_eq!(
            group.handle_join(Millis(0), Ticket(1), short),
            Reply::Now(Err(GroupError::InvalidSessionTimeout { found: 10 }))
        );
        assert_eq!(
            group.handle_join(Millis(0), Ticket(1), join("stranger", &["range"])),
            Reply::Now(Err(GroupError::UnknownMemberId {
                member_id: "stranger".to_owned()
            }))
        );
        let config = GroupConfig {
            members_max: 1,
            ..GroupConfig::default()
        };
        let mut small = Group::new("s", config, 1);
        first_join(&mut small, Millis(0), 1, &["range"]);
        assert_eq!(
            small.handle_join(Millis(0), Ticket(2), join("", &["range"])),
            Reply::Now(Err(GroupError::GroupMaxSizeReached { members: 1 }))
        );
    }

    #[test]
    fn a_newer_join_of_the_same_member_answers_the_older_one() {
        let mut group = group();
        let a = first_join(&mut group, Millis(0), 1, &["range"]);
        assert_eq!(
            group.handle_join(Millis(10), Ticket(2), join(&a, &["range"])),
            Reply::Later
        );
        assert_eq!(
            outputs(&mut group),
            vec![GroupOutput::Join {
                ticket: Ticket(1),
                answer: Err(GroupError::RebalanceInProgress)
            }]
        );
        group.handle_tick(Millis(3_000));
        let answers = outputs(&mut group);
        assert!(matches!(
            answers[..],
            [GroupOutput::Join {
                ticket: Ticket(2),
                answer: Ok(_)
            }]
        ));
    }

    /// A stable group of a dynamic leader and a static member "host-1"; returns the group and
    /// both member ids (leader first).
    fn stable_with_static_member() -> (Group, String, String, JoinRequest) {
        let mut group = group();
        let leader = first_join(&mut group, Millis(0), 1, &["range"]);
        let mut request = join("", &["range"]);
        request.group_instance_id = Some("host-1".to_owned());
        assert_eq!(
            group.handle_join(Millis(0), Ticket(2), request.clone()),
            Reply::Later
        );
        group.handle_tick(Millis(3_000));
        let first = outputs(&mut group)
            .iter()
            .map(joined)
            .find(|joined| joined.member_id != leader)
            .expect("the static member joined")
            .member_id
            .clone();
        let _ = group.handle_sync(Millis(3_000), Ticket(3), &leader, None, 1, Vec::new());
        outputs(&mut group);
        assert_eq!(group.state(), GroupState::Stable);
        (group, leader, first, request)
    }

    /// Mutation testing found these rules unpinned (docs/reliability.md).
    #[test]
    fn a_static_member_rejoining_changed_or_as_leader_goes_through_a_rebalance() {
        // Changed metadata: a rebalance.
        let (mut group, _, _, request) = stable_with_static_member();
        let mut changed = request;
        changed.protocols = vec![("range".to_owned(), Bytes::from_static(b"other"))];
        assert_eq!(
            group.handle_join(Millis(4_000), Ticket(4), changed),
            Reply::Later
        );
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        // The static leader restarting: a rebalance (it must assign again).
        let mut group = group_with_static_leader();
        let mut again = join("", &["range"]);
        again.group_instance_id = Some("host-0".to_owned());
        assert_eq!(
            group.handle_join(Millis(4_000), Ticket(9), again),
            Reply::Later
        );
        // The only member rejoined: the join phase is over at once, a new generation.
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        assert_eq!(group.generation(), 2);
    }

    fn group_with_static_leader() -> Group {
        let mut group = group();
        let mut request = join("", &["range"]);
        request.group_instance_id = Some("host-0".to_owned());
        assert_eq!(
            group.handle_join(Millis(0), Ticket(1), request),
            Reply::Later
        );
        group.handle_tick(Millis(3_000));
        let leader = group.leader().expect("a leader").to_owned();
        outputs(&mut group);
        let _ = group.handle_sync(Millis(3_000), Ticket(2), &leader, None, 1, Vec::new());
        outputs(&mut group);
        assert_eq!(group.state(), GroupState::Stable);
        group
    }

    #[test]
    fn a_static_member_answered_at_once_gets_a_fresh_session() {
        let (mut group, leader, _, request) = stable_with_static_member();
        let Reply::Now(Ok(again)) = group.handle_join(Millis(4_000), Ticket(4), request) else {
            panic!("answered at once");
        };
        // Its session runs from the rejoin: alive just before it ends, gone after.
        assert_eq!(
            group.handle_heartbeat(Millis(13_000), &leader, None, 1),
            Ok(())
        );
        group.handle_tick(Millis(13_999));
        assert!(group.members().any(|(id, ..)| id == again.member_id));
        group.handle_tick(Millis(14_001));
        assert!(!group.members().any(|(id, ..)| id == again.member_id));
    }

    #[test]
    fn a_group_shows_its_id_protocol_and_each_members_chosen_metadata() {
        let mut group = group();
        assert_eq!(group.id(), "g");
        assert_eq!((group.protocol(), group.protocol_type()), (None, None));
        first_join(&mut group, Millis(0), 1, &["roundrobin", "range"]);
        first_join(&mut group, Millis(0), 2, &["range", "roundrobin"]);
        group.handle_tick(Millis(3_000));
        outputs(&mut group);
        assert_eq!(group.protocol_type(), Some("consumer"));
        let chosen = group.protocol().expect("a protocol").to_owned();
        for member in group.describe() {
            assert_eq!(member.metadata, Bytes::from(format!("meta-{chosen}")));
        }
    }

    #[test]
    fn pending_member_ids_count_toward_the_size_limit_and_known_members_always_rejoin() {
        let config = GroupConfig {
            members_max: 2,
            ..GroupConfig::default()
        };
        let mut group = Group::new("s", config, 1);
        let a = first_join(&mut group, Millis(0), 1, &["range"]);
        assert!(matches!(
            group.handle_join(Millis(0), Ticket(2), join("", &["range"])),
            Reply::Now(Err(GroupError::MemberIdRequired { .. }))
        ));
        assert_eq!(
            group.handle_join(Millis(0), Ticket(3), join("", &["range"])),
            Reply::Now(Err(GroupError::GroupMaxSizeReached { members: 2 }))
        );
        // A full group still takes a known member's rejoin.
        assert_eq!(
            group.handle_join(Millis(10), Ticket(4), join(&a, &["range"])),
            Reply::Later
        );
    }

    #[test]
    fn a_long_client_id_is_cut_at_a_character_boundary_in_member_ids() {
        let mut group = group();
        let mut request = join("", &["range"]);
        request.client_id = format!(
            "{}é{}",
            "a".repeat(CLIENT_ID_IN_MEMBER_ID_MAX - 1),
            "b".repeat(9)
        );
        let Reply::Now(Err(GroupError::MemberIdRequired { member_id })) =
            group.handle_join(Millis(0), Ticket(1), request)
        else {
            panic!("a member id");
        };
        let prefix = format!("{}-", "a".repeat(CLIENT_ID_IN_MEMBER_ID_MAX - 1));
        assert!(member_id.starts_with(&prefix), "{member_id}");
    }

    #[test]
    fn joins_outside_the_protocol_limits_are_refused_and_the_limits_themselves_taken() {
        let mut group = group();
        let member_id = first_join(&mut group, Millis(0), 1, &["range"]);
        let with = |change: &dyn Fn(&mut JoinRequest)| {
            let mut request = join(&member_id, &["range"]);
            change(&mut request);
            request
        };
        let names: Vec<String> = (0..=PROTOCOLS_PER_MEMBER_MAX)
            .map(|n| format!("p{n}"))
            .collect();
        let refused = [
            with(&|request| request.protocols.clear()),
            with(&|request| request.protocol_type.clear()),
            with(&|request| {
                request.protocols = names
                    .iter()
                    .map(|name| (name.clone(), Bytes::new()))
                    .collect();
            }),
            with(&|request| {
                request.protocols = vec![(
                    "range".to_owned(),
                    Bytes::from(vec![0; PROTOCOL_METADATA_BYTES_MAX + 1]),
                )];
            }),
        ];
        for (n, request) in refused.into_iter().enumerate() {
            // A group's first join is checked on its own (no member's protocols to compare).
            let mut first = request.clone();
            first.member_id.clear();
            assert!(
                matches!(
                    Group::new("fresh", GroupConfig::default(), 3).handle_join(
                        Millis(1),
                        Ticket(9),
                        first
                    ),
                    Reply::Now(Err(
                        GroupError::InconsistentGroupProtocol | GroupError::InvalidRequest(_)
                    ))
                ),
                "request {n} must be refused as a first join"
            );
            assert!(
                matches!(
                    group.handle_join(Millis(1), Ticket(10), request),
                    Reply::Now(Err(
                        GroupError::InconsistentGroupProtocol | GroupError::InvalidRequest(_)
                    ))
                ),
                "request {n} must be refused"
            );
        }
        let mut most = with(&|request| {
            request.protocols = names[..PROTOCOLS_PER_MEMBER_MAX]
                .iter()
                .map(|name| (name.clone(), Bytes::new()))
                .collect();
        });
        most.protocols[0] = (
            "range".to_owned(),
            Bytes::from(vec![0; PROTOCOL_METADATA_BYTES_MAX]),
        );
        assert_eq!(group.handle_join(Millis(1), Ticket(11), most), Reply::Later);
    }

    #[test]
    fn a_member_waiting_in_a_join_does_not_expire_meanwhile() {
        let (mut group, ids) = stable(2);
        assert_eq!(
            group.handle_heartbeat(Millis(9_000), &ids[1], None, 1),
            Ok(())
        );
        // The first member rejoins with a short session: while it waits in the join phase
        // its session does not run, so the next deadline is the other member's (9 s + 10 s),
        // not its own (9.5 s + 6 s).
        let mut rejoin = join(&ids[0], &["range"]);
        rejoin.session_timeout_ms = SESSION_TIMEOUT_MS_MIN;
        assert_eq!(
            group.handle_join(Millis(9_500), Ticket(20), rejoin),
            Reply::Later
        );
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(group.poll_timeout(), Some(Millis(19_000)));
    }

    /// Who leads and who follows in a stable group of two.
    fn leader_and_follower(group: &Group, ids: &[String]) -> (String, String) {
        let leader = group.leader().expect("a leader").to_owned();
        let follower = ids.iter().find(|id| **id != leader).expect("two").clone();
        (leader, follower)
    }

    #[test]
    fn only_an_unchanged_follower_rejoins_a_stable_group_without_a_rebalance() {
        let (mut group, ids) = stable(2);
        let (leader, follower) = leader_and_follower(&group, &ids);
        assert_eq!(
            group.handle_join(Millis(4_000), Ticket(30), join(&follower, &["range"])),
            Reply::Later
        );
        let answers = outputs(&mut group);
        assert_eq!(
            joined(&answers[0]).generation,
            1,
            "answered at once, no rebalance"
        );
        assert_eq!(group.state(), GroupState::Stable);
        // Its session restarted with the rejoin.
        group.handle_tick(Millis(4_001));
        assert!(group.members().any(|(id, ..)| *id == follower));
        // Changed metadata: a rebalance.
        let mut changed = join(&follower, &["range"]);
        changed.protocols[0].1 = Bytes::from_static(b"new metadata");
        group.handle_join(Millis(4_100), Ticket(31), changed);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        // The leader rejoining, even unchanged: a rebalance (it must assign again).
        let (mut group, ids) = stable(2);
        let (leader_again, _) = leader_and_follower(&group, &ids);
        group.handle_join(Millis(4_000), Ticket(32), join(&leader_again, &["range"]));
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert!(!leader.is_empty());
    }

    #[test]
    fn an_emptied_group_takes_the_protocol_type_of_its_next_member() {
        let (mut group, ids) = stable(1);
        assert_eq!(
            group.handle_leave(Millis(4_000), &[(ids[0].clone(), None)]),
            vec![Ok(())]
        );
        assert_eq!(group.state(), GroupState::Empty);
        assert_eq!(
            group.generation(),
            2,
            "the last member leaving ends generation 1"
        );
        let mut connect = join("", &["range"]);
        connect.protocol_type = "connect".to_owned();
        let Reply::Now(Err(GroupError::MemberIdRequired { member_id })) =
            group.handle_join(Millis(5_000), Ticket(1), connect.clone())
        else {
            panic!("a member id");
        };
        connect.member_id = member_id;
        assert_eq!(
            group.handle_join(Millis(5_000), Ticket(2), connect),
            Reply::Later
        );
        assert_eq!(group.protocol_type(), Some("connect"));
        // A group without members takes commits at generation -1 only.
        let mut empty = Group::new("e", GroupConfig::default(), 1);
        assert_eq!(empty.check_commit(Millis(0), "", None, -1), Ok(()));
        assert!(empty.check_commit(Millis(0), "", None, 0).is_err());
    }

    #[test]
    fn the_protocol_most_members_prefer_wins() {
        let mut group = group();
        first_join(&mut group, Millis(0), 1, &["range", "roundrobin"]);
        first_join(&mut group, Millis(0), 2, &["roundrobin", "range"]);
        first_join(&mut group, Millis(0), 3, &["roundrobin", "range"]);
        group.handle_tick(Millis(3_000));
        outputs(&mut group);
        assert_eq!(group.protocol(), Some("roundrobin"));
    }

    #[test]
    fn sessions_start_when_the_join_phase_ends() {
        let mut group = group();
        let member = first_join(&mut group, Millis(0), 1, &["range"]);
        group.handle_tick(Millis(3_000));
        outputs(&mut group);
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        // Its session (10 s) runs from the end of the join phase, not from before it.
        group.handle_tick(Millis(12_999));
        assert!(group.members().any(|(id, ..)| id == member));
    }

    #[test]
    fn a_member_id_lapses_exactly_at_its_deadline() {
        let mut group = group();
        let Reply::Now(Err(GroupError::MemberIdRequired { .. })) =
            group.handle_join(Millis(0), Ticket(1), join("", &["range"]))
        else {
            panic!("a member id");
        };
        group.handle_tick(Millis(i64::from(SESSION) - 1));
        assert!(group.has_members());
        group.handle_tick(Millis(i64::from(SESSION)));
        assert!(!group.has_members());
    }

    #[test]
    fn a_static_member_may_leave_by_its_instance_id_alone() {
        let (mut group, _, _, request) = stable_with_static_member();
        assert_eq!(
            group.handle_leave(Millis(4_000), &[(String::new(), Some("host-1".to_owned()))]),
            vec![Ok(())]
        );
        assert_eq!(group.members().count(), 1);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        // The instance is forgotten with its member: a member id made up for it is unknown,
        // not fenced by a stale mapping (which would also grow without bound).
        let mut stale = request;
        stale.member_id = "made-up".to_owned();
        assert_eq!(
            group.handle_join(Millis(4_100), Ticket(9), stale),
            Reply::Now(Err(GroupError::UnknownMemberId {
                member_id: "made-up".to_owned()
            }))
        );
    }
}
