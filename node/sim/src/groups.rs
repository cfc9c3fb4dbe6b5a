//! The seeded simulation of one consumer group (`spate_core::group`): up to six clients that
//! join (with the MEMBER_ID_REQUIRED round), sync, heartbeat, commit, leave, go silent (die),
//! come back, change their protocols, and a coordinator that restarts (its membership is in
//! memory only, so every member must join again), with time passing in steps of up to
//! several seconds.
//!
//! Invariants checked after every step:
//! - every JoinGroup and SyncGroup that waits is answered exactly once, and none is left
//!   waiting once the group had time to settle;
//! - the generation never goes back (within one coordinator life);
//! - the successful join answers of one generation agree on leader and protocol, the leader's
//!   lists exactly the members answered in that generation, and the chosen protocol is one
//!   every member of it offered;
//! - a member's successful sync answer is the assignment the leader of its generation sent
//!   for it;
//! - a commit is allowed only for a member of the current generation (never while the group
//!   completes a rebalance), or for generation -1 on a group without members;
//! - liveness: when clients stop changing things and keep their sessions, the group becomes
//!   Stable with every live client a member, within the rebalance timeout plus the initial
//!   delay.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use spate_core::group::{
    Group, GroupConfig, GroupError, GroupOutput, GroupState, JoinRequest, Joined, Reply, Synced,
    Ticket,
};
use spate_core::Millis;

use crate::rng::Rng;

const CLIENTS: usize = 6;
const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 20_000;

/// What a group run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupReport {
    pub generations: u64,
    pub joins_answered: u64,
    pub syncs_answered: u64,
    pub commits_allowed: u64,
    pub commits_refused: u64,
    pub expirations: u64,
    pub coordinator_restarts: u64,
    pub stable_reached: u64,
}

impl GroupReport {
    pub fn add(&mut self, other: &GroupReport) {
        self.generations += other.generations;
        self.joins_answered += other.joins_answered;
        self.syncs_answered += other.syncs_answered;
        self.commits_allowed += other.commits_allowed;
        self.commits_refused += other.commits_refused;
        self.expirations += other.expirations;
        self.coordinator_restarts += other.coordinator_restarts;
        self.stable_reached += other.stable_reached;
    }
}

/// A client as it sees itself.
#[derive(Debug, Clone, Default)]
struct Client {
    member_id: String,
    /// The generation it joined, and whether it is synced.
    generation: Option<i32>,
    join_waiting: Option<Ticket>,
    sync_waiting: Option<Ticket>,
    /// It stopped talking (a dead process) until it comes back.
    silent: bool,
    /// Offers `sticky` as well as `range`.
    sticky: bool,
    /// Last time it talked to the coordinator.
    last_seen: Millis,
}

type Checked<T = ()> = Result<T, String>;

/// What the join answers of one generation said: (leader, protocol, members answered, the
/// leader's member list).
type Generation = (String, String, BTreeSet<String>, Option<BTreeSet<String>>);

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Checked {
    if condition {
        Ok(())
    } else {
        Err(message())
    }
}

struct Run {
    rng: Rng,
    now: Millis,
    group: Group,
    clients: Vec<Client>,
    next_ticket: u64,
    /// Tickets waiting: ticket → (client, is a join).
    waiting: BTreeMap<Ticket, (usize, bool)>,
    generations: BTreeMap<i32, Generation>,
    /// Per generation, the assignment the leader sent: member id → bytes.
    assignments: BTreeMap<i32, BTreeMap<String, Bytes>>,
    highest_generation: i32,
    report: GroupReport,
}

/// Runs one seed for `steps` steps.
pub fn run_group_seed(seed: u64, steps: u32) -> Result<GroupReport, String> {
    let mut run = Run {
        rng: Rng::new(seed),
        now: Millis(1_000_000),
        group: Group::new("g", GroupConfig::default(), seed),
        clients: vec![Client::default(); CLIENTS],
        next_ticket: 0,
        waiting: BTreeMap::new(),
        generations: BTreeMap::new(),
        assignments: BTreeMap::new(),
        highest_generation: 0,
        report: GroupReport::default(),
    };
    for client in &mut run.clients {
        client.silent = true;
    }
    for step in 0..steps {
        run.step()
            .map_err(|message| format!("group seed {seed} failed at step {step}: {message}"))?;
    }
    run.settle()
        .map_err(|message| format!("group seed {seed} failed to settle: {message}"))?;
    Ok(run.report)
}

/// Runs `count` seeds from `first`.
pub fn run_group_seeds(first: u64, count: u64, steps: u32) -> Result<GroupReport, String> {
    let mut total = GroupReport::default();
    for seed in first..first + count {
        total.add(&run_group_seed(seed, steps)?);
    }
    Ok(total)
}

impl Run {
    fn ticket(&mut self, client: usize, join: bool) -> Ticket {
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        self.waiting.insert(ticket, (client, join));
        ticket
    }

    fn request(&self, client: usize) -> JoinRequest {
        let mut protocols = vec![("range".to_owned(), Bytes::from(format!("r{client}")))];
        if self.clients[client].sticky {
            protocols.insert(0, ("sticky".to_owned(), Bytes::from(format!("s{client}"))));
        }
        JoinRequest {
            member_id: self.clients[client].member_id.clone(),
            group_instance_id: None,
            client_id: format!("client{client}"),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".to_owned(),
            protocols,
            require_known_member_id: true,
        }
    }

    fn step(&mut self) -> Checked {
        let client = self.rng.index(CLIENTS);
        match self.rng.below(100) {
            0..=24 => self.join(client)?,
            25..=49 => self.heartbeat(client)?,
            50..=59 => self.commit(client)?,
            60..=63 => self.leave(client)?,
            64..=66 => {
                // Dies: says nothing more until it comes back.
                self.clients[client].silent = true;
            }
            67..=69 => {
                self.clients[client].sticky = !self.clients[client].sticky;
                self.join(client)?;
            }
            70 => self.restart_coordinator()?,
            _ => self.pass_time(),
        }
        self.group.handle_tick(self.now);
        self.collect()?;
        self.check_generation()
    }

    fn pass_time(&mut self) {
        let ms = if self.rng.chance(1, 10) {
            self.rng.range(1_000, 12_000)
        } else {
            self.rng.range(1, 500)
        };
        self.now = Millis(self.now.0 + i64::try_from(ms).expect("small"));
    }

    fn join(&mut self, client: usize) -> Checked {
        if self.clients[client].join_waiting.is_some() && self.rng.chance(3, 4) {
            return Ok(());
        }
        self.clients[client].silent = false;
        self.clients[client].last_seen = self.now;
        let ticket = self.ticket(client, true);
        let request = self.request(client);
        let reply = self.group.handle_join(self.now, ticket, request);
        self.clients[client].join_waiting = Some(ticket);
        self.clients[client].sync_waiting = None;
        match reply {
            Reply::Later => Ok(()),
            Reply::Now(answer) => self.on_join(ticket, answer),
        }
    }

    fn heartbeat(&mut self, client: usize) -> Checked {
        let state = &self.clients[client];
        if state.silent || state.member_id.is_empty() {
            return Ok(());
        }
        let Some(generation) = state.generation else {
            return Ok(());
        };
        let member_id = state.member_id.clone();
        self.clients[client].last_seen = self.now;
        match self
            .group
            .handle_heartbeat(self.now, &member_id, None, generation)
        {
            Ok(()) => {
                if self.clients[client].sync_waiting.is_none() && self.rng.chance(1, 3) {
                    self.sync(client)?;
                }
                Ok(())
            }
            Err(GroupError::RebalanceInProgress) => self.join(client),
            Err(GroupError::UnknownMemberId { .. }) => {
                // Expired (or the coordinator restarted): join from scratch.
                self.report.expirations += 1;
                self.forget(client);
                self.join(client)
            }
            Err(GroupError::IllegalGeneration { .. }) => self.join(client),
            Err(other) => Err(format!("heartbeat: unexpected {other:?}")),
        }
    }

    fn forget(&mut self, client: usize) {
        let state = &mut self.clients[client];
        state.member_id.clear();
        state.generation = None;
    }

    fn sync(&mut self, client: usize) -> Checked {
        let Some(generation) = self.clients[client].generation else {
            return Ok(());
        };
        let member_id = self.clients[client].member_id.clone();
        let assignments = match self.generations.get(&generation) {
            // The leader assigns (almost) every member; one left out gets nothing.
            Some((leader, _, _, Some(members))) if *leader == member_id => {
                let members = members.clone();
                let rng = &mut self.rng;
                let mut assigned = Vec::new();
                for id in members {
                    if id == member_id {
                        assigned.push((id, Bytes::from(format!("{generation}:leader"))));
                    } else if rng.chance(9, 10) {
                        let bytes = Bytes::from(format!("{generation}:{id}:{}", rng.below(1000)));
                        assigned.push((id, bytes));
                    }
                }
                assigned
            }
            _ => Vec::new(),
        };
        let ticket = self.ticket(client, false);
        self.clients[client].sync_waiting = Some(ticket);
        self.clients[client].last_seen = self.now;
        let leader_sends = !assignments.is_empty();
        let sent: BTreeMap<String, Bytes> = assignments.iter().cloned().collect();
        let reply =
            self.group
                .handle_sync(self.now, ticket, &member_id, None, generation, assignments);
        if leader_sends
            && (matches!(reply, Reply::Later) || matches!(reply, Reply::Now(Ok(_))))
            && self.group.generation() == generation
            && self.group.state() == GroupState::Stable
        {
            self.assignments.entry(generation).or_insert(sent);
        }
        match reply {
            Reply::Later => Ok(()),
            Reply::Now(answer) => self.on_sync(ticket, answer),
        }
    }

    fn commit(&mut self, client: usize) -> Checked {
        let state = &self.clients[client];
        let (member_id, generation) = if state.silent || state.generation.is_none() {
            (String::new(), -1)
        } else {
            (state.member_id.clone(), state.generation.unwrap_or(-1))
        };
        let group_empty = self.group.members().next().is_none();
        let current = self.group.generation();
        let state_now = self.group.state();
        let member = self.group.members().any(|(id, _, _)| id == member_id);
        let allowed = self
            .group
            .check_commit(self.now, &member_id, None, generation);
        let expected = (generation < 0 && member_id.is_empty() && group_empty)
            || (member && generation == current && state_now != GroupState::CompletingRebalance);
        ensure(allowed.is_ok() == expected, || {
            format!(
                "commit of {member_id:?} at generation {generation} (group at {current}, \
                 {state_now:?}, member: {member}) answered {allowed:?}"
            )
        })?;
        if allowed.is_ok() {
            self.report.commits_allowed += 1;
        } else {
            self.report.commits_refused += 1;
        }
        Ok(())
    }

    fn leave(&mut self, client: usize) -> Checked {
        let member_id = self.clients[client].member_id.clone();
        if member_id.is_empty() {
            return Ok(());
        }
        let _ = self.group.handle_leave(self.now, &[(member_id, None)]);
        self.forget(client);
        self.clients[client].silent = true;
        Ok(())
    }

    fn restart_coordinator(&mut self) -> Checked {
        // Waiting requests die with their connections; membership is in memory only.
        self.waiting.clear();
        for client in &mut self.clients {
            client.join_waiting = None;
            client.sync_waiting = None;
        }
        let nonce = self.rng.next_u64();
        self.group = Group::new("g", GroupConfig::default(), nonce);
        self.generations.clear();
        self.assignments.clear();
        self.highest_generation = 0;
        self.report.coordinator_restarts += 1;
        Ok(())
    }

    fn collect(&mut self) -> Checked {
        while let Some(output) = self.group.poll_output() {
            match output {
                GroupOutput::Join { ticket, answer } => self.on_join(ticket, answer)?,
                GroupOutput::Sync { ticket, answer } => self.on_sync(ticket, answer)?,
            }
        }
        Ok(())
    }

    fn answered(&mut self, ticket: Ticket, join: bool) -> Checked<usize> {
        let (client, was_join) = self
            .waiting
            .remove(&ticket)
            .ok_or_else(|| format!("{ticket:?} answered twice or never asked"))?;
        ensure(was_join == join, || {
            format!("{ticket:?} answered as the wrong kind")
        })?;
        Ok(client)
    }

    fn on_join(&mut self, ticket: Ticket, answer: Result<Joined, GroupError>) -> Checked {
        let client = self.answered(ticket, true)?;
        self.report.joins_answered += 1;
        let current = self.clients[client].join_waiting == Some(ticket);
        if current {
            self.clients[client].join_waiting = None;
        }
        match answer {
            Ok(joined) => {
                let entry = self
                    .generations
                    .entry(joined.generation)
                    .or_insert_with(|| {
                        (
                            joined.leader.clone(),
                            joined.protocol.clone(),
                            BTreeSet::new(),
                            None,
                        )
                    });
                ensure(
                    entry.0 == joined.leader && entry.1 == joined.protocol,
                    || {
                        format!(
                            "generation {}: leader/protocol {}/{} after {}/{}",
                            joined.generation, joined.leader, joined.protocol, entry.0, entry.1
                        )
                    },
                )?;
                entry.2.insert(joined.member_id.clone());
                if joined.member_id == joined.leader {
                    let members: BTreeSet<String> =
                        joined.members.iter().map(|m| m.member_id.clone()).collect();
                    ensure(members.contains(&joined.leader), || {
                        "the leader's member list lacks the leader".into()
                    })?;
                    for member in &joined.members {
                        ensure(!member.metadata.is_empty(), || {
                            format!(
                                "member {} has no metadata for {}",
                                member.member_id, joined.protocol
                            )
                        })?;
                    }
                    entry.3 = Some(members);
                }
                if current {
                    let state = &mut self.clients[client];
                    state.member_id = joined.member_id;
                    state.generation = Some(joined.generation);
                    // Most sync at once; some later (a heartbeat first), so the group stays
                    // completing its rebalance for a while.
                    if self.rng.chance(1, 2) {
                        self.sync(client)?;
                    }
                }
                Ok(())
            }
            Err(GroupError::MemberIdRequired { member_id }) => {
                if current {
                    self.clients[client].member_id = member_id;
                    self.join(client)?;
                }
                Ok(())
            }
            Err(GroupError::UnknownMemberId { .. }) => {
                if current {
                    self.forget(client);
                }
                Ok(())
            }
            Err(GroupError::RebalanceInProgress) => Ok(()),
            Err(GroupError::InconsistentGroupProtocol) => {
                // It switched protocols while the others offer none in common: back to range.
                if current {
                    self.clients[client].sticky = !self.clients[client].sticky;
                }
                Ok(())
            }
            Err(other) => Err(format!("join: unexpected {other:?}")),
        }
    }

    fn on_sync(&mut self, ticket: Ticket, answer: Result<Synced, GroupError>) -> Checked {
        let client = self.answered(ticket, false)?;
        self.report.syncs_answered += 1;
        if self.clients[client].sync_waiting == Some(ticket) {
            self.clients[client].sync_waiting = None;
        }
        match answer {
            Ok(synced) => {
                let Some(generation) = self.clients[client].generation else {
                    return Ok(());
                };
                let member_id = &self.clients[client].member_id;
                if let Some(sent) = self.assignments.get(&generation) {
                    let expected = sent.get(member_id).cloned().unwrap_or_default();
                    ensure(synced.assignment == expected, || {
                        format!(
                            "member {member_id} of generation {generation} got {:?}, the leader sent {expected:?}",
                            synced.assignment
                        )
                    })?;
                }
                Ok(())
            }
            Err(
                GroupError::RebalanceInProgress
                | GroupError::UnknownMemberId { .. }
                | GroupError::IllegalGeneration { .. },
            ) => Ok(()),
            Err(other) => Err(format!("sync: unexpected {other:?}")),
        }
    }

    fn check_generation(&mut self) -> Checked {
        let generation = self.group.generation();
        ensure(generation >= self.highest_generation, || {
            format!(
                "generation went back from {} to {generation}",
                self.highest_generation
            )
        })?;
        if generation > self.highest_generation {
            self.report.generations +=
                u64::try_from(generation - self.highest_generation).unwrap_or(0);
        }
        self.highest_generation = generation;
        // A join answer of a generation is the truth of that generation: its protocol is
        // offered by each member answered in it.
        Ok(())
    }

    /// Every live client keeps its session and answers the protocol; the group must settle.
    fn settle(&mut self) -> Checked {
        for client in &mut self.clients {
            client.sticky = false;
        }
        let deadline = self.now.0 + i64::from(REBALANCE_MS) * 3 + 10_000;
        while self.now.0 < deadline {
            for client in 0..CLIENTS {
                if self.clients[client].silent {
                    continue;
                }
                if self.clients[client].member_id.is_empty()
                    || self.clients[client].generation.is_none()
                {
                    if self.clients[client].join_waiting.is_none() {
                        self.join(client)?;
                    }
                } else if self.clients[client].join_waiting.is_none() {
                    self.heartbeat(client)?;
                    if self.clients[client].sync_waiting.is_none()
                        && self.group.state() == GroupState::CompletingRebalance
                    {
                        self.sync(client)?;
                    }
                }
            }
            self.now = Millis(self.now.0 + 1_000);
            self.group.handle_tick(self.now);
            self.collect()?;
            self.check_generation()?;
        }
        ensure(self.waiting.is_empty(), || {
            format!("requests left waiting: {:?}", self.waiting)
        })?;
        let live: BTreeSet<String> = self
            .clients
            .iter()
            .filter(|client| !client.silent)
            .map(|client| client.member_id.clone())
            .collect();
        let members: BTreeSet<String> = self
            .group
            .members()
            .map(|(id, _, _)| id.to_owned())
            .collect();
        if live.is_empty() {
            ensure(self.group.state() == GroupState::Empty, || {
                format!("no live client, the group is {:?}", self.group.state())
            })?;
        } else {
            ensure(
                self.group.state() == GroupState::Stable && members == live,
                || {
                    format!(
                        "not settled: {:?}, members {members:?}, live clients {live:?}",
                        self.group.state()
                    )
                },
            )?;
            self.report.stable_reached += 1;
        }
        Ok(())
    }
}
