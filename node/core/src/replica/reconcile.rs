//! One pass of the controller, pure: from everything it read at one etcd revision (the
//! members, the topics with their assignments, the partition states and the requests to
//! create topics), what it writes. The node's controller (`node/server/src/controller.rs`)
//! decodes the keys into a [`ClusterRead`], calls [`reconcile`] and applies each [`Action`]
//! as a compare-and-swap on the revision it read; the simulation drives the same function.
//!
//! The rules (docs/cluster.md, "The controller"):
//! - a request to create a topic is accepted with replicas placed over the live members and
//!   their shards ([`place`], spread from a start the topic id gives, over the shards that
//!   hold the fewest replicas of every topic), or refused (the topic exists; too few nodes;
//!   a partition count out of range) — never both, and the topic key is written only by an
//!   acceptance, so a topic appears whole, with its assignment;
//! - a topic's partition without a state gets its first one: every assigned replica alive
//!   with a readable record is in sync (they are all empty), and the first of them in
//!   preference order leads, in epoch 1; with none alive it waits;
//! - an existing partition changes as [`decide`] says;
//! - a partition state whose topic is gone, was created again (another topic id) or has fewer
//!   partitions is removed — only when every topic was read and its topic key was readable;
//! - anything that names a member whose record cannot be read is left as it is (that member
//!   is not known to be dead);
//! - a partition being moved (a reassignment's target, or replicas on a decommissioned node)
//!   moves in steps, as in Kafka (KIP-455): the target's new replicas are added; once every
//!   target replica is in the ISR, a leader outside the target hands over to the first
//!   target replica in sync; then the replicas become the target and the ISR loses the
//!   others, both in one transaction ([`reassign_step`]).

use std::collections::{BTreeMap, BTreeSet};

use spate_format::limits::PARTITIONS_PER_TOPIC_MAX;

use super::control::{
    decide, elect_preferred, place, LiveMember, PartitionState, Placeable, Placement,
};
use super::LeaderEpoch;
use super::{IsrMember, PlacementError, ReplicaId};

/// A topic's identity: random, 128 bits, made when it is requested; tells a topic created
/// again under the same name apart from the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(pub u128);

/// A live member with a readable record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub live: LiveMember,
    /// How many shards it runs (replicas are placed on shards `0..shards`).
    pub shards: u16,
}

/// A topic as its key holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicAssignment {
    pub id: TopicId,
    /// Per partition, its replicas in preference order (the first is the preferred leader).
    pub replicas: Vec<Vec<Placement>>,
    /// The replication factor it was created with (a decommission keeps this many).
    pub factor: u32,
    /// Reassignments in progress: partition → its target replicas, in preference order.
    pub targets: BTreeMap<u32, Vec<ReplicaId>>,
}

/// A partition's state as its key holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionEntry {
    pub topic_id: TopicId,
    pub state: PartitionState,
}

/// A pending request to create a topic (a refused one is not passed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreationRequest {
    pub id: TopicId,
    pub partitions: u32,
    pub factor: u32,
}

/// A partition: its topic's name and its number.
pub type PartitionName = (String, u32);

/// Everything the controller read at one revision. A key that exists but cannot be read is
/// present with `None`: it is neither created over nor taken for absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterRead {
    /// The live members whose records it read.
    pub members: BTreeMap<ReplicaId, Member>,
    /// Members registered with a record it cannot read: not known to be dead.
    pub unknown: BTreeSet<ReplicaId>,
    pub topics: BTreeMap<String, Option<TopicAssignment>>,
    /// Whether every topic key was read (a pass that read only the first ones removes no
    /// partition state: its topic may be among the others).
    pub topics_complete: bool,
    pub partitions: BTreeMap<PartitionName, Option<PartitionEntry>>,
    /// Whether every partition key was read (a pass that read only the first ones creates
    /// no partition state: the key may exist among the others).
    pub partitions_complete: bool,
    pub requests: BTreeMap<String, Option<CreationRequest>>,
    /// Decommissioned nodes: no new replicas go there, and the replicas they hold move to
    /// other members.
    pub excluded: BTreeSet<ReplicaId>,
    /// The racks of the live members that have one (`--rack`): placement spreads each
    /// partition's replicas over them.
    pub racks: BTreeMap<ReplicaId, String>,
}

/// Why a request to create a topic is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the topic exists")]
    Exists,
    #[error("{partitions} partitions (valid: 1 to {PARTITIONS_PER_TOPIC_MAX})")]
    PartitionCount { partitions: u32 },
    #[error(transparent)]
    Placement(#[from] PlacementError),
}

/// What the controller writes, each a compare-and-swap on what it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write the topic key with this assignment and remove the request (only if the topic
    /// key is still absent and the request unchanged).
    Accept {
        topic: String,
        replicas: Vec<Vec<Placement>>,
    },
    /// Mark the request refused, saying why; the node that made it answers its client.
    Refuse { topic: String, refusal: Refusal },
    /// Write a partition's first state (only if its key is still absent).
    Create {
        partition: PartitionName,
        topic_id: TopicId,
        state: PartitionState,
    },
    /// Change a partition's state (only if its key is unchanged).
    Change {
        partition: PartitionName,
        state: PartitionState,
    },
    /// Remove the state of a partition no topic has.
    Remove { partition: PartitionName },
    /// A step of a move: the partition's replicas become `replicas` (in the topic key), with
    /// the partition key changed to `state` in the same transaction when given; `finished`:
    /// the reassignment's target is reached and its entry goes.
    Reassign {
        partition: PartitionName,
        replicas: Vec<Placement>,
        state: Option<PartitionState>,
        finished: bool,
    },
}

/// What a move does next for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Change the topic key (and the partition key with it).
    Assign {
        replicas: Vec<Placement>,
        state: Option<PartitionState>,
        finished: bool,
    },
    /// Move the leadership (the partition key only).
    Lead(PartitionState),
}

/// The next step of moving a partition whose replicas are `current` (placements), in
/// `state`, to `target` (node ids, in preference order), each only under a live leader:
/// the target's missing replicas added (each on its node's emptiest shard; all of them alive
/// with shards, else it waits); then, once every target replica is alive and in the ISR, a
/// leader outside the target replaced by the first target replica in sync; then the replicas
/// cut to the target and the ISR to its members. Adding and removing replicas also starts a
/// new leader epoch (the leader stays): the leader's view of its followers starts over, and
/// anything a follower sent under the old replica set — a replica removed, its log deleted,
/// and added again later, among them — is fenced by its epoch (Kafka bumps the epoch so
/// too). `None`: nothing to do now (waiting for replicas to catch up, for members, or for a
/// live leader, which [`decide`] brings).
fn reassign_step(
    current: &[Placement],
    state: &PartitionState,
    target: &[ReplicaId],
    members: &BTreeMap<ReplicaId, Member>,
    load: &mut BTreeMap<Placement, u64>,
) -> Option<Step> {
    if target.is_empty() {
        return None;
    }
    let (leader, session) = state.leader?;
    if members.get(&leader).map(|member| member.live.session) != Some(session) {
        return None;
    }
    let next_epoch = LeaderEpoch(state.epoch.0.checked_add(1)?);
    let nodes: Vec<ReplicaId> = current.iter().map(|at| at.node).collect();
    let missing: Vec<ReplicaId> = target
        .iter()
        .filter(|node| !nodes.contains(node))
        .copied()
        .collect();
    if !missing.is_empty() {
        let mut replicas = current.to_vec();
        let mut trial = load.clone();
        for node in &missing {
            let shards = members.get(node).map_or(0, |member| member.shards);
            let shard = (0..shards).min_by_key(|&shard| {
                let at = Placement { node: *node, shard };
                (trial.get(&at).copied().unwrap_or(0), shard)
            })?;
            let at = Placement { node: *node, shard };
            *trial.entry(at).or_insert(0) += 1;
            replicas.push(at);
        }
        *load = trial;
        // An added replica is not in sync until it caught up in the new epoch.
        let isr = state
            .isr
            .iter()
            .filter(|member| !missing.contains(&member.replica))
            .copied()
            .collect();
        return Some(Step::Assign {
            replicas,
            state: Some(PartitionState {
                leader: state.leader,
                epoch: next_epoch,
                isr,
            }),
            finished: false,
        });
    }
    let in_sync = |node: &ReplicaId| {
        state.isr.iter().any(|member| {
            member.replica == *node
                && members
                    .get(node)
                    .is_some_and(|live| live.live.storage == member.storage)
        })
    };
    if !target.iter().all(in_sync) {
        return None;
    }
    if !target.contains(&leader) {
        let next = target.iter().find(|node| in_sync(node))?;
        let session = members.get(next)?.live.session;
        return Some(Step::Lead(PartitionState {
            leader: Some((*next, session)),
            epoch: next_epoch,
            isr: state.isr.clone(),
        }));
    }
    let replicas: Vec<Placement> = target
        .iter()
        .filter_map(|node| current.iter().find(|at| at.node == *node).copied())
        .collect();
    let isr: Vec<_> = state
        .isr
        .iter()
        .filter(|member| target.contains(&member.replica))
        .copied()
        .collect();
    let removes = nodes.iter().any(|node| !target.contains(node));
    let state = (removes || isr != state.isr).then_some(PartitionState {
        leader: state.leader,
        epoch: next_epoch,
        isr,
    });
    Some(Step::Assign {
        replicas,
        state,
        finished: true,
    })
}

/// Where a partition with replicas on decommissioned nodes goes: the others kept in order,
/// and as many live members that are neither decommissioned nor replicas already as the
/// topic's replication factor needs, chosen by the fewest replicas held (then node id) and
/// put where the decommissioned ones were. `None`: nothing to move, or not enough members.
fn decommission_target(
    current: &[Placement],
    factor: u32,
    read: &ClusterRead,
    load: &BTreeMap<Placement, u64>,
) -> Option<Vec<ReplicaId>> {
    let excluded = |node: &ReplicaId| read.excluded.contains(node);
    if !current.iter().any(|at| excluded(&at.node)) {
        return None;
    }
    let keep = current.iter().filter(|at| !excluded(&at.node)).count();
    let factor = usize::try_from(factor.max(1)).unwrap_or(usize::MAX);
    let mut need = factor.saturating_sub(keep);
    // With racks on every member, a replacement on a rack the partition's other replicas
    // (kept, or chosen before it) do not use comes first (as placement spreads a new
    // partition's replicas).
    let racked = read
        .members
        .keys()
        .all(|node| read.racks.contains_key(node));
    let mut used_racks: BTreeSet<&String> = current
        .iter()
        .filter(|at| !excluded(&at.node))
        .filter_map(|at| read.racks.get(&at.node))
        .collect();
    let mut candidates: Vec<(u64, ReplicaId)> = read
        .members
        .iter()
        .filter(|(node, member)| {
            member.shards > 0 && !excluded(node) && !current.iter().any(|at| at.node == **node)
        })
        .map(|(&node, _)| {
            let held = load
                .iter()
                .filter(|(at, _)| at.node == node)
                .map(|(_, count)| *count)
                .sum();
            (held, node)
        })
        .collect();
    let mut target = Vec::with_capacity(current.len());
    for at in current {
        if !excluded(&at.node) {
            target.push(at.node);
        } else if need > 0 {
            let rack_used = |node: &ReplicaId| {
                racked
                    && read
                        .racks
                        .get(node)
                        .is_some_and(|rack| used_racks.contains(rack))
            };
            let (index, _) = candidates
                .iter()
                .enumerate()
                .min_by_key(|(_, &(held, node))| (rack_used(&node), held, node))?;
            let (_, chosen) = candidates.swap_remove(index);
            used_racks.extend(read.racks.get(&chosen));
            target.push(chosen);
            need -= 1;
        }
    }
    (need == 0).then_some(target)
}

/// The actions of one pass over `read`: acceptances and refusals first (in topic order),
/// then new partitions, changes and removals (in partition order).
pub fn reconcile(read: &ClusterRead) -> Vec<Action> {
    let mut actions = Vec::new();
    let live: BTreeMap<ReplicaId, LiveMember> = read
        .members
        .iter()
        .map(|(&replica, member)| (replica, member.live))
        .collect();
    let knows = |replica: &ReplicaId| !read.unknown.contains(replica);

    // Requests. Placement counts the replicas every shard holds already, so new topics fill
    // the emptiest shards.
    let mut load: BTreeMap<Placement, u64> = BTreeMap::new();
    for assignment in read.topics.values().flatten() {
        for placement in assignment.replicas.iter().flatten() {
            *load.entry(*placement).or_insert(0) += 1;
        }
    }
    let placeable: Vec<Placeable> = read
        .members
        .iter()
        .filter(|(node, _)| !read.excluded.contains(node))
        .map(|(&node, member)| Placeable {
            node,
            shards: member.shards,
            rack: read.racks.get(&node).cloned(),
        })
        .collect();
    for (topic, request) in &read.requests {
        let Some(request) = request else { continue };
        let refuse = |refusal| Action::Refuse {
            topic: topic.clone(),
            refusal,
        };
        if read.topics.contains_key(topic) {
            actions.push(refuse(Refusal::Exists));
            continue;
        }
        if request.partitions == 0 || request.partitions > PARTITIONS_PER_TOPIC_MAX {
            actions.push(refuse(Refusal::PartitionCount {
                partitions: request.partitions,
            }));
            continue;
        }
        let factor = usize::try_from(request.factor).unwrap_or(usize::MAX);
        // The low bits of the random topic id: where the round of leaders starts.
        let nodes = u128::try_from(placeable.len().max(1)).unwrap_or(1);
        let start = usize::try_from(request.id.0 % nodes).unwrap_or(0);
        let mut trial = load.clone();
        match place(&placeable, request.partitions, factor, start, &mut trial) {
            Ok(replicas) => {
                load = trial;
                actions.push(Action::Accept {
                    topic: topic.clone(),
                    replicas,
                });
            }
            Err(error) => actions.push(refuse(error.into())),
        }
    }

    // Partitions of the topics read: the missing ones created, the others decided.
    for (name, assignment) in &read.topics {
        let Some(assignment) = assignment else {
            continue;
        };
        for (number, replicas) in (0u32..).zip(&assignment.replicas) {
            let ids: Vec<ReplicaId> = replicas.iter().map(|at| at.node).collect();
            let partition = (name.clone(), number);
            match read.partitions.get(&partition) {
                None => {
                    if !read.partitions_complete || !ids.iter().all(knows) {
                        continue;
                    }
                    let isr: Vec<IsrMember> = ids
                        .iter()
                        .filter_map(|replica| {
                            let member = live.get(replica)?;
                            Some(IsrMember {
                                replica: *replica,
                                storage: member.storage,
                            })
                        })
                        .collect();
                    if isr.is_empty() {
                        continue;
                    }
                    if let Some(state) = decide(&PartitionState::new(isr), &ids, &live) {
                        actions.push(Action::Create {
                            partition,
                            topic_id: assignment.id,
                            state,
                        });
                    }
                }
                Some(None) => {}
                Some(Some(entry)) => {
                    if entry.topic_id != assignment.id {
                        continue;
                    }
                    let state = &entry.state;
                    let names_unknown = !ids
                        .iter()
                        .chain(state.leader.iter().map(|(leader, _)| leader))
                        .chain(state.isr.iter().map(|member| &member.replica))
                        .all(knows);
                    if names_unknown {
                        continue;
                    }
                    if let Some(state) = decide(state, &ids, &live) {
                        actions.push(Action::Change { partition, state });
                        continue;
                    }
                    let explicit = assignment.targets.get(&number);
                    let target = match explicit {
                        Some(target) => Some(target.clone()),
                        None => decommission_target(replicas, assignment.factor, read, &load),
                    };
                    let Some(target) = target else { continue };
                    if !target.iter().all(knows) {
                        continue;
                    }
                    match reassign_step(replicas, state, &target, &read.members, &mut load) {
                        None => {}
                        Some(Step::Lead(state)) => {
                            actions.push(Action::Change { partition, state });
                        }
                        Some(Step::Assign {
                            replicas,
                            state,
                            finished,
                        }) => actions.push(Action::Reassign {
                            partition,
                            replicas,
                            state,
                            finished: finished && explicit.is_some(),
                        }),
                    }
                }
            }
        }
    }

    // Partition states no topic has.
    if read.topics_complete {
        for (partition, entry) in &read.partitions {
            let Some(entry) = entry else { continue };
            let orphan = match read.topics.get(&partition.0) {
                None => true,
                Some(None) => false,
                Some(Some(assignment)) => {
                    assignment.id != entry.topic_id
                        || usize::try_from(partition.1)
                            .map_or(true, |number| number >= assignment.replicas.len())
                }
            };
            if orphan {
                actions.push(Action::Remove {
                    partition: partition.clone(),
                });
            }
        }
    }
    actions
}

/// Kafka's automatic leader balancing (`auto.leader.rebalance.enable`, with
/// `leader.imbalance.per.broker.percentage`): for each member, the partitions whose preferred
/// replica (the first) it is are counted, and those led by another node; where more than
/// `percent` percent of them are led elsewhere, each of those whose preferred election can be
/// made ([`elect_preferred`]: the member alive and in sync) gets it. Partitions being
/// reassigned (their move decides the leader), whose preferred replica is decommissioned, of
/// a stale topic id, or naming a member whose record could not be read are left alone, and so
/// is every partition [`reconcile`] changes in the same pass (`skip`).
pub fn rebalance_leaders(
    read: &ClusterRead,
    percent: u32,
    skip: &BTreeSet<PartitionName>,
) -> Vec<Action> {
    let live: BTreeMap<ReplicaId, LiveMember> = read
        .members
        .iter()
        .map(|(&replica, member)| (replica, member.live))
        .collect();
    let knows = |replica: &ReplicaId| !read.unknown.contains(replica);
    // Per preferred member: its partitions, those led elsewhere, and the elections of those
    // that can have one.
    let mut preferred: BTreeMap<ReplicaId, (u64, u64, Vec<Action>)> = BTreeMap::new();
    for (name, assignment) in &read.topics {
        let Some(assignment) = assignment else {
            continue;
        };
        for (number, replicas) in (0u32..).zip(&assignment.replicas) {
            let Some(first) = replicas.first().map(|at| at.node) else {
                continue;
            };
            let partition = (name.clone(), number);
            let Some(Some(entry)) = read.partitions.get(&partition) else {
                continue;
            };
            let ids: Vec<ReplicaId> = replicas.iter().map(|at| at.node).collect();
            let names_unknown = !ids
                .iter()
                .chain(entry.state.leader.iter().map(|(leader, _)| leader))
                .chain(entry.state.isr.iter().map(|member| &member.replica))
                .all(knows);
            if entry.topic_id != assignment.id
                || assignment.targets.contains_key(&number)
                || read.excluded.contains(&first)
                || names_unknown
            {
                continue;
            }
            let counted = preferred.entry(first).or_default();
            counted.0 += 1;
            let led_elsewhere = entry
                .state
                .leader
                .is_some_and(|(leader, _)| leader != first);
            if !led_elsewhere {
                continue;
            }
            counted.1 += 1;
            if skip.contains(&partition) {
                continue;
            }
            if let Ok(state) = elect_preferred(&entry.state, &ids, &live) {
                counted.2.push(Action::Change { partition, state });
            }
        }
    }
    preferred
        .into_values()
        .filter(|(total, elsewhere, _)| {
            elsewhere.saturating_mul(100) > u64::from(percent).saturating_mul(*total)
        })
        .flat_map(|(_, _, elections)| elections)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::{LeaderEpoch, SessionId, StorageId};

    #[test]
    fn leaders_go_back_to_their_preferred_replicas_past_the_imbalance() {
        let mut read = three_nodes();
        // Ten partitions preferring node 1, four preferring node 2; all in sync on 1, 2, 3.
        let replicas: Vec<Vec<Placement>> = (0..14)
            .map(|n| {
                if n < 10 {
                    vec![at(1, 0), at(2, 0), at(3, 0)]
                } else {
                    vec![at(2, 0), at(3, 0), at(1, 0)]
                }
            })
            .collect();
        read.topics.insert(
            "t".into(),
            Some(TopicAssignment {
                id: TopicId(7),
                replicas,
                factor: 3,
                targets: BTreeMap::new(),
            }),
        );
        // Node 1 leads 9 of its 10 (one led by 3: 10 %, not above it); node 2 leads 2 of its 4
        // (50 % elsewhere: by 1 and by 3).
        let leaders = [1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 2, 2, 1, 3];
        let sessions = |node: u32| SessionId(u64::from(node) * 10);
        for (number, leader) in (0u32..).zip(leaders) {
            read.partitions.insert(
                ("t".into(), number),
                Some(PartitionEntry {
                    topic_id: TopicId(7),
                    state: PartitionState {
                        leader: Some((ReplicaId(leader), sessions(leader))),
                        epoch: LeaderEpoch(4),
                        isr: isr(&[1, 2, 3]),
                    },
                }),
            );
        }
        let elected = |actions: Vec<Action>| -> Vec<(u32, u32, u32)> {
            actions
                .into_iter()
                .map(|action| match action {
                    Action::Change { partition, state } => {
                        let (leader, _) = state.leader.unwrap();
                        (partition.1, leader.0, state.epoch.0)
                    }
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let none = BTreeSet::new();
        // Above 10 %: node 2's two partitions go back to it, each in a new epoch; node 1 at
        // exactly 10 % keeps its balance as it is.
        assert_eq!(
            elected(rebalance_leaders(&read, 10, &none)),
            vec![(12, 2, 5), (13, 2, 5)]
        );
        // At 5 %, node 1's partition too; at 50 %, nobody.
        assert_eq!(
            elected(rebalance_leaders(&read, 5, &none)),
            vec![(9, 1, 5), (12, 2, 5), (13, 2, 5)]
        );
        assert_eq!(elected(rebalance_leaders(&read, 50, &none)), vec![]);
        // A partition the pass changes anyway, one being moved, and one whose preferred
        // replica fell out of the ISR are left alone (the others still count).
        let skip: BTreeSet<PartitionName> = [("t".to_owned(), 12)].into();
        if let Some(Some(TopicAssignment { targets, .. })) = read.topics.get_mut("t") {
            targets.insert(9, vec![ReplicaId(1), ReplicaId(2), ReplicaId(3)]);
        }
        if let Some(Some(entry)) = read.partitions.get_mut(&("t".to_owned(), 13)) {
            entry.state.isr = isr(&[1, 3]);
        }
        assert_eq!(elected(rebalance_leaders(&read, 5, &skip)), vec![]);
        // A decommissioned preferred replica is not balanced back to.
        read.excluded.insert(ReplicaId(2));
        read.partitions.insert(
            ("t".into(), 13),
            Some(PartitionEntry {
                topic_id: TopicId(7),
                state: PartitionState {
                    leader: Some((ReplicaId(3), sessions(3))),
                    epoch: LeaderEpoch(4),
                    isr: isr(&[1, 2, 3]),
                },
            }),
        );
        assert_eq!(elected(rebalance_leaders(&read, 0, &none)), vec![]);
    }

    fn member(node: u32, session: u64, shards: u16) -> (ReplicaId, Member) {
        (
            ReplicaId(node),
            Member {
                live: LiveMember {
                    session: SessionId(session),
                    storage: StorageId(u64::from(node) * 100),
                },
                shards,
            },
        )
    }

    fn isr(nodes: &[u32]) -> Vec<IsrMember> {
        nodes
            .iter()
            .map(|&node| IsrMember {
                replica: ReplicaId(node),
                storage: StorageId(u64::from(node) * 100),
            })
            .collect()
    }

    fn at(node: u32, shard: u16) -> Placement {
        Placement {
            node: ReplicaId(node),
            shard,
        }
    }

    fn three_nodes() -> ClusterRead {
        ClusterRead {
            members: [member(1, 10, 2), member(2, 20, 2), member(3, 30, 2)].into(),
            topics_complete: true,
            partitions_complete: true,
            ..ClusterRead::default()
        }
    }

    fn request(id: u128, partitions: u32, factor: u32) -> Option<CreationRequest> {
        Some(CreationRequest {
            id: TopicId(id),
            partitions,
            factor,
        })
    }

    #[test]
    fn a_request_is_placed_over_live_members_and_the_emptiest_shards() {
        let mut read = three_nodes();
        // An existing topic fills shard 0 of every node.
        read.topics.insert(
            "old".into(),
            Some(TopicAssignment {
                id: TopicId(1),
                replicas: vec![vec![at(1, 0), at(2, 0), at(3, 0)]],
                factor: 1,
                targets: BTreeMap::new(),
            }),
        );
        read.partitions.insert(
            ("old".into(), 0),
            Some(PartitionEntry {
                topic_id: TopicId(1),
                state: PartitionState {
                    leader: Some((ReplicaId(1), SessionId(10))),
                    epoch: LeaderEpoch(1),
                    isr: isr(&[1, 2, 3]),
                },
            }),
        );
        // Topic id 4: the round of leaders starts at the second node (4 mod 3 = 1).
        read.requests.insert("new".into(), request(4, 2, 2));
        let actions = reconcile(&read);
        assert_eq!(
            actions,
            vec![Action::Accept {
                topic: "new".into(),
                replicas: vec![vec![at(2, 1), at(3, 1)], vec![at(3, 0), at(1, 1)]],
            }]
        );
    }

    #[test]
    fn requests_that_cannot_be_met_are_refused() {
        let mut read = three_nodes();
        read.topics.insert("taken".into(), None);
        read.requests.insert("taken".into(), request(1, 1, 1));
        read.requests.insert("too-wide".into(), request(2, 1, 4));
        read.requests.insert("none".into(), request(3, 0, 1));
        read.requests
            .insert("many".into(), request(4, PARTITIONS_PER_TOPIC_MAX + 1, 1));
        read.requests.insert("zero".into(), request(5, 1, 0));
        // Unreadable: left for whoever can read it.
        read.requests.insert("unreadable".into(), None);
        let refusals: Vec<(String, Refusal)> = reconcile(&read)
            .into_iter()
            .map(|action| match action {
                Action::Refuse { topic, refusal } => (topic, refusal),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            refusals,
            vec![
                (
                    "many".into(),
                    Refusal::PartitionCount {
                        partitions: PARTITIONS_PER_TOPIC_MAX + 1
                    }
                ),
                ("none".into(), Refusal::PartitionCount { partitions: 0 }),
                ("taken".into(), Refusal::Exists),
                (
                    "too-wide".into(),
                    Refusal::Placement(PlacementError::TooFewNodes {
                        factor: 4,
                        nodes: 3
                    })
                ),
                (
                    "zero".into(),
                    Refusal::Placement(PlacementError::ZeroFactor)
                ),
            ]
        );
    }

    /// Two topics requested in one pass see each other's replicas: the second fills the
    /// shards the first left empty.
    #[test]
    fn requests_of_one_pass_share_the_load() {
        let mut read = three_nodes();
        read.requests.insert("a".into(), request(0, 3, 1));
        read.requests.insert("b".into(), request(0, 3, 1));
        let shards: Vec<BTreeSet<Placement>> = reconcile(&read)
            .into_iter()
            .map(|action| match action {
                Action::Accept { replicas, .. } => replicas.into_iter().flatten().collect(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(shards.len(), 2);
        assert!(shards[0].is_disjoint(&shards[1]), "{shards:?}");
    }

    #[test]
    fn a_new_partition_starts_with_its_live_replicas_in_sync() {
        let mut read = three_nodes();
        read.members.remove(&ReplicaId(2));
        read.topics.insert(
            "t".into(),
            Some(TopicAssignment {
                id: TopicId(9),
                replicas: vec![
                    vec![at(2, 0), at(1, 0), at(3, 0)],
                    vec![at(2, 1)],
                    vec![at(3, 1), at(1, 1)],
                ],
                factor: 1,
                targets: BTreeMap::new(),
            }),
        );
        let actions = reconcile(&read);
        assert_eq!(
            actions,
            vec![
                // Replica 2 is dead: the next in preference order leads, in epoch 1.
                Action::Create {
                    partition: ("t".into(), 0),
                    topic_id: TopicId(9),
                    state: PartitionState {
                        leader: Some((ReplicaId(1), SessionId(10))),
                        epoch: LeaderEpoch(1),
                        isr: isr(&[1, 3]),
                    },
                },
                // Partition 1's only replica is dead: it waits.
                Action::Create {
                    partition: ("t".into(), 2),
                    topic_id: TopicId(9),
                    state: PartitionState {
                        leader: Some((ReplicaId(3), SessionId(30))),
                        epoch: LeaderEpoch(1),
                        isr: isr(&[3, 1]),
                    },
                },
            ]
        );
        // A replica whose record cannot be read: nothing is created over it.
        read.unknown.insert(ReplicaId(2));
        assert_eq!(reconcile(&read).len(), 1);
        // Nothing is created when some partition keys were not read (they may exist).
        read.partitions_complete = false;
        assert!(reconcile(&read).is_empty());
        read.partitions_complete = true;
        // An existing but unreadable partition key is not created over.
        read.partitions.insert(("t".into(), 2), None);
        assert!(reconcile(&read).is_empty());
    }

    #[test]
    fn partition_states_without_their_topic_are_removed() {
        let mut read = three_nodes();
        let entry = |topic_id| {
            Some(PartitionEntry {
                topic_id: TopicId(topic_id),
                state: PartitionState {
                    leader: Some((ReplicaId(1), SessionId(10))),
                    epoch: LeaderEpoch(1),
                    isr: isr(&[1]),
                },
            })
        };
        read.topics.insert(
            "kept".into(),
            Some(TopicAssignment {
                id: TopicId(7),
                replicas: vec![vec![at(1, 0)]],
                factor: 1,
                targets: BTreeMap::new(),
            }),
        );
        read.topics.insert("unreadable".into(), None);
        read.partitions.insert(("kept".into(), 0), entry(7));
        // Beyond the topic's partitions.
        read.partitions.insert(("kept".into(), 1), entry(7));
        // Of an older topic of the same name.
        read.partitions.insert(("recreated".into(), 0), entry(3));
        read.topics.insert(
            "recreated".into(),
            Some(TopicAssignment {
                id: TopicId(8),
                replicas: vec![vec![at(1, 0)]],
                factor: 1,
                targets: BTreeMap::new(),
            }),
        );
        // Of a deleted topic.
        read.partitions.insert(("gone".into(), 0), entry(5));
        // Of a topic whose key cannot be read: kept.
        read.partitions.insert(("unreadable".into(), 0), entry(6));
        let removed: Vec<PartitionName> = reconcile(&read)
            .into_iter()
            .filter_map(|action| match action {
                Action::Remove { partition } => Some(partition),
                _ => None,
            })
            .collect();
        assert_eq!(
            removed,
            vec![
                ("gone".into(), 0),
                ("kept".into(), 1),
                ("recreated".into(), 0)
            ]
        );
        // Without every topic read, nothing is removed.
        read.topics_complete = false;
        assert!(!reconcile(&read)
            .iter()
            .any(|action| matches!(action, Action::Remove { .. })));
    }

    #[test]
    fn existing_partitions_follow_decide_unless_they_name_an_unknown_member() {
        let mut read = three_nodes();
        read.members.remove(&ReplicaId(1));
        read.topics.insert(
            "t".into(),
            Some(TopicAssignment {
                id: TopicId(1),
                replicas: vec![vec![at(1, 0), at(2, 0)]],
                factor: 1,
                targets: BTreeMap::new(),
            }),
        );
        read.partitions.insert(
            ("t".into(), 0),
            Some(PartitionEntry {
                topic_id: TopicId(1),
                state: PartitionState {
                    leader: Some((ReplicaId(1), SessionId(10))),
                    epoch: LeaderEpoch(3),
                    isr: isr(&[1, 2]),
                },
            }),
        );
        assert_eq!(
            reconcile(&read),
            vec![Action::Change {
                partition: ("t".into(), 0),
                state: PartitionState {
                    leader: Some((ReplicaId(2), SessionId(20))),
                    epoch: LeaderEpoch(4),
                    isr: isr(&[2]),
                },
            }]
        );
        read.unknown.insert(ReplicaId(1));
        assert!(reconcile(&read).is_empty());
    }

    fn moving(read: &mut ClusterRead, replicas: Vec<Placement>, target: Option<&[u32]>) {
        let targets = target
            .map(|target| [(0, target.iter().map(|&node| ReplicaId(node)).collect())].into())
            .unwrap_or_default();
        read.topics.insert(
            "t".into(),
            Some(TopicAssignment {
                id: TopicId(1),
                replicas: vec![replicas],
                factor: 2,
                targets,
            }),
        );
    }

    fn state_of(read: &mut ClusterRead, leader: u32, session: u64, epoch: u32, in_sync: &[u32]) {
        read.partitions.insert(
            ("t".into(), 0),
            Some(PartitionEntry {
                topic_id: TopicId(1),
                state: PartitionState {
                    leader: Some((ReplicaId(leader), SessionId(session))),
                    epoch: LeaderEpoch(epoch),
                    isr: isr(in_sync),
                },
            }),
        );
    }

    /// A reassignment from {1, 2} to {3, 2}: replica 3 is added; nothing happens until it
    /// is in sync; then leader 1 hands over to 3 (the first target replica in sync); then
    /// the replicas become the target and the ISR loses 1, in one action, and the entry goes.
    #[test]
    fn a_reassignment_adds_waits_hands_over_and_removes() {
        let mut read = three_nodes();
        moving(&mut read, vec![at(1, 0), at(2, 0)], Some(&[3, 2]));
        state_of(&mut read, 1, 10, 4, &[1, 2]);
        let added = vec![at(1, 0), at(2, 0), at(3, 0)];
        assert_eq!(
            reconcile(&read),
            vec![Action::Reassign {
                partition: ("t".into(), 0),
                replicas: added.clone(),
                // A new epoch under the same leader: its followers start over.
                state: Some(PartitionState {
                    leader: Some((ReplicaId(1), SessionId(10))),
                    epoch: LeaderEpoch(5),
                    isr: isr(&[1, 2]),
                }),
                finished: false,
            }]
        );
        moving(&mut read, added.clone(), Some(&[3, 2]));
        assert!(reconcile(&read).is_empty(), "replica 3 is not in sync yet");
        // A target that keeps every replica (here: {1, 2, 3}) also waits for the new one.
        moving(&mut read, added.clone(), Some(&[1, 2, 3]));
        assert!(reconcile(&read).is_empty(), "replica 3 is not in sync yet");
        moving(&mut read, added, Some(&[3, 2]));
        state_of(&mut read, 1, 10, 4, &[1, 2, 3]);
        assert_eq!(
            reconcile(&read),
            vec![Action::Change {
                partition: ("t".into(), 0),
                state: PartitionState {
                    leader: Some((ReplicaId(3), SessionId(30))),
                    epoch: LeaderEpoch(5),
                    isr: isr(&[1, 2, 3]),
                },
            }]
        );
        state_of(&mut read, 3, 30, 5, &[1, 2, 3]);
        assert_eq!(
            reconcile(&read),
            vec![Action::Reassign {
                partition: ("t".into(), 0),
                replicas: vec![at(3, 0), at(2, 0)],
                state: Some(PartitionState {
                    leader: Some((ReplicaId(3), SessionId(30))),
                    epoch: LeaderEpoch(6),
                    isr: isr(&[2, 3]),
                }),
                finished: true,
            }]
        );
        // Reached: only the entry goes.
        moving(&mut read, vec![at(3, 0), at(2, 0)], Some(&[3, 2]));
        state_of(&mut read, 3, 30, 5, &[2, 3]);
        assert_eq!(
            reconcile(&read),
            vec![Action::Reassign {
                partition: ("t".into(), 0),
                replicas: vec![at(3, 0), at(2, 0)],
                state: None,
                finished: true,
            }]
        );
    }

    /// A move waits for a live leader (the election comes first), and for target members
    /// that are gone (alive, with shards, to take a replica).
    #[test]
    fn a_move_waits_for_its_leader_and_its_members() {
        let mut read = three_nodes();
        moving(&mut read, vec![at(1, 0), at(2, 0)], Some(&[3, 2]));
        state_of(&mut read, 1, 10, 4, &[1, 2]);
        read.members.remove(&ReplicaId(3));
        assert!(reconcile(&read).is_empty(), "node 3 is gone");
        read = three_nodes();
        moving(&mut read, vec![at(1, 0), at(2, 0), at(3, 0)], Some(&[3, 2]));
        state_of(&mut read, 1, 10, 4, &[1, 2, 3]);
        read.members.remove(&ReplicaId(1));
        // The leader is gone: decide elects (2, first in the ISR by preference), no move.
        let actions = reconcile(&read);
        assert!(
            matches!(&actions[..], [Action::Change { state, .. }] if state.leader.map(|l| l.0) == Some(ReplicaId(2))),
            "{actions:?}"
        );
    }

    /// A decommissioned node takes no new replicas, and its replicas move to the member
    /// holding the fewest, keeping the replication factor; once moved, nothing more.
    #[test]
    fn a_decommissioned_node_is_emptied() {
        let mut read = three_nodes();
        read.members.extend([member(4, 40, 2)]);
        read.excluded.insert(ReplicaId(1));
        read.topics.insert(
            "busy".into(),
            Some(TopicAssignment {
                id: TopicId(2),
                replicas: vec![vec![at(3, 0)], vec![at(3, 1)]],
                factor: 1,
                targets: BTreeMap::new(),
            }),
        );
        for number in 0..2 {
            read.partitions.insert(
                ("busy".into(), number),
                Some(PartitionEntry {
                    topic_id: TopicId(2),
                    state: PartitionState {
                        leader: Some((ReplicaId(3), SessionId(30))),
                        epoch: LeaderEpoch(1),
                        isr: isr(&[3]),
                    },
                }),
            );
        }
        moving(&mut read, vec![at(1, 0), at(2, 0)], None);
        state_of(&mut read, 1, 10, 4, &[1, 2]);
        let actions = reconcile(&read);
        assert_eq!(
            actions,
            vec![Action::Reassign {
                partition: ("t".into(), 0),
                replicas: vec![at(1, 0), at(2, 0), at(4, 0)],
                state: Some(PartitionState {
                    leader: Some((ReplicaId(1), SessionId(10))),
                    epoch: LeaderEpoch(5),
                    isr: isr(&[1, 2]),
                }),
                finished: false,
            }]
        );
        moving(&mut read, vec![at(1, 0), at(2, 0), at(4, 0)], None);
        state_of(&mut read, 1, 10, 4, &[1, 2, 4]);
        assert!(
            matches!(&reconcile(&read)[..], [Action::Change { state, .. }]
            if state.leader.map(|l| l.0) == Some(ReplicaId(2)))
        );
        state_of(&mut read, 2, 20, 5, &[1, 2, 4]);
        assert_eq!(
            reconcile(&read),
            vec![Action::Reassign {
                partition: ("t".into(), 0),
                replicas: vec![at(2, 0), at(4, 0)],
                state: Some(PartitionState {
                    leader: Some((ReplicaId(2), SessionId(20))),
                    epoch: LeaderEpoch(6),
                    isr: isr(&[2, 4]),
                }),
                finished: false,
            }]
        );
        moving(&mut read, vec![at(2, 0), at(4, 0)], None);
        state_of(&mut read, 2, 20, 5, &[2, 4]);
        assert!(reconcile(&read).is_empty());
        // New topics are placed without it.
        read.requests.insert("new".into(), request(0, 4, 1));
        let placed: Vec<Placement> = reconcile(&read)
            .into_iter()
            .flat_map(|action| match action {
                Action::Accept { replicas, .. } => replicas.into_iter().flatten().collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(placed.len(), 4);
        assert!(
            placed.iter().all(|at| at.node != ReplicaId(1)),
            "{placed:?}"
        );
        // Without a member to take its place, the replica stays.
        read.members.remove(&ReplicaId(4));
        read.members.remove(&ReplicaId(3));
        read.requests.clear();
        read.topics.remove("busy");
        read.partitions.retain(|(topic, _), _| topic != "busy");
        moving(&mut read, vec![at(1, 0), at(2, 0)], None);
        state_of(&mut read, 1, 10, 4, &[1, 2]);
        assert!(reconcile(&read).is_empty());
    }

    #[test]
    fn a_decommissioned_replica_is_replaced_on_a_rack_the_others_do_not_use() {
        let added = |read: &ClusterRead| match &reconcile(read)[..] {
            [Action::Reassign { replicas, .. }] => replicas.last().map(|at| at.node.0),
            other => panic!("{other:?}"),
        };
        let mut read = three_nodes();
        read.members.extend([member(4, 40, 2)]);
        read.excluded.insert(ReplicaId(1));
        moving(&mut read, vec![at(1, 0), at(2, 0)], None);
        state_of(&mut read, 1, 10, 4, &[1, 2]);
        // Without racks: the member holding the fewest replicas (3 and 4 hold none: 3).
        assert_eq!(added(&read), Some(3));
        // Node 2, kept, is on rack b with node 3: node 4 (rack a) is taken instead.
        read.racks = [(1, "a"), (2, "b"), (3, "b"), (4, "a")]
            .into_iter()
            .map(|(node, rack)| (ReplicaId(node), rack.to_owned()))
            .collect();
        assert_eq!(added(&read), Some(4));
        // Two replaced at once: each on a rack of its own. Node 3 (rack b) is the emptiest,
        // node 4 (rack b) next, node 5 (rack c) holds the most: the second replacement goes
        // to c, not to b again.
        read.members.extend([member(5, 50, 2)]);
        read.racks = [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "a")]
            .into_iter()
            .map(|(node, rack)| (ReplicaId(node), rack.to_owned()))
            .collect();
        read.members.extend([member(6, 60, 2)]);
        read.excluded.insert(ReplicaId(2));
        read.topics.insert(
            "busy".into(),
            Some(TopicAssignment {
                id: TopicId(2),
                replicas: vec![vec![at(5, 0)], vec![at(5, 1)], vec![at(4, 0)]],
                factor: 1,
                targets: BTreeMap::new(),
            }),
        );
        read.topics.insert(
            "t".into(),
            Some(TopicAssignment {
                id: TopicId(1),
                replicas: vec![vec![at(1, 0), at(2, 0), at(6, 0)]],
                factor: 3,
                targets: BTreeMap::new(),
            }),
        );
        state_of(&mut read, 6, 60, 4, &[1, 2, 6]);
        let moved: Vec<Vec<u32>> = reconcile(&read)
            .into_iter()
            .filter_map(|action| match action {
                Action::Reassign { replicas, .. } => {
                    Some(replicas.iter().map(|at| at.node.0).collect())
                }
                _ => None,
            })
            .collect();
        assert_eq!(moved, vec![vec![1, 2, 6, 3, 5]]);
    }
}
