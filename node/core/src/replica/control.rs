//! The controller's decisions, pure: who leads a partition after a member is lost or comes
//! back, which ISR entries no longer hold (a dead node, a replaced disk), and where the
//! replicas of a new topic go. The node's controller applies a decision to etcd with a
//! compare-and-swap on the revision it read (`docs/cluster.md`); the simulation runs the
//! same functions against its model of etcd.
//!
//! Invariants:
//! - a leader is only ever chosen from the ISR, among members alive with the data directory
//!   their ISR entry names (no unclean election);
//! - a new leader always gets a new epoch (one above the partition's), also when the same
//!   node is chosen again (a restarted node lost its memory of the epochs it led);
//! - the ISR never becomes empty: its last member stays, even dead (Kafka's "last replica
//!   standing"), so the partition waits for it;
//! - replicas of one partition are on distinct nodes.

use std::collections::{BTreeMap, BTreeSet};

use super::{IsrMember, LeaderEpoch, ReplicaId, StorageId};

/// One registration of a node: a process start (its lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// A live member as etcd shows it (its key exists: its lease holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveMember {
    pub session: SessionId,
    pub storage: StorageId,
}

/// A partition's replication state as etcd holds it (without the revision, which the
/// compare-and-swap carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The leader and the session it was elected in; `None`: offline.
    pub leader: Option<(ReplicaId, SessionId)>,
    pub epoch: LeaderEpoch,
    pub isr: Vec<IsrMember>,
}

impl PartitionState {
    /// A new partition: no leader yet, every assigned replica in sync (they are all empty).
    pub fn new(isr: Vec<IsrMember>) -> Self {
        Self {
            leader: None,
            epoch: LeaderEpoch(0),
            isr,
        }
    }
}

fn alive(members: &BTreeMap<ReplicaId, LiveMember>, member: &IsrMember) -> bool {
    members
        .get(&member.replica)
        .is_some_and(|live| live.storage == member.storage)
}

/// What the controller writes for a partition now, if anything: when the leader's session is
/// gone (or there is no leader), the first replica in preference order that is in the ISR
/// and alive leads with the next epoch, and the ISR keeps its live members; with a live
/// leader, dead ISR members are removed (the last one stays). Nothing when a new leader is
/// due but the epoch cannot grow (at `u32::MAX`, which only a damaged state holds).
pub fn decide(
    state: &PartitionState,
    replicas: &[ReplicaId],
    members: &BTreeMap<ReplicaId, LiveMember>,
) -> Option<PartitionState> {
    let leader_alive = state.leader.is_some_and(|(leader, session)| {
        members
            .get(&leader)
            .is_some_and(|live| live.session == session)
    });
    let live: Vec<IsrMember> = state
        .isr
        .iter()
        .filter(|member| alive(members, member))
        .copied()
        .collect();
    let mut next = state.clone();
    if leader_alive {
        if !live.is_empty() && live.len() < state.isr.len() {
            next.isr = live;
        }
    } else {
        let chosen = replicas.iter().find_map(|replica| {
            let member = live.iter().find(|member| member.replica == *replica)?;
            let session = members.get(&member.replica)?.session;
            Some((member.replica, session))
        });
        match chosen {
            Some(chosen) => {
                // An epoch at its largest value cannot grow: electing in it again would let
                // two leaders share an epoch, so the partition is left as it is.
                next.leader = Some(chosen);
                next.epoch = LeaderEpoch(state.epoch.0.checked_add(1)?);
                next.isr = live;
            }
            None => next.leader = None,
        }
    }
    (next != *state).then_some(next)
}

/// Why a preferred-leader election changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreferredRefusal {
    #[error("node {0}, the preferred leader, leads already")]
    NotNeeded(ReplicaId),
    #[error("node {0}, the preferred leader, is not alive and in sync")]
    NotAvailable(ReplicaId),
    #[error("the partition has no replicas")]
    NoReplicas,
    #[error("the leader epoch cannot grow")]
    EpochExhausted,
}

/// The state that makes the preferred replica (the first of `replicas`) the leader, in a new
/// epoch, when it is alive and in the ISR (the ISR is kept as it is: every member of it holds
/// every record the high watermark passed). A leadership moved while the old leader lives is
/// as safe as an election after its loss: the old leader, deposed, answers what still waits
/// for its high watermark and truncates to the new leader's log as a follower.
pub fn elect_preferred(
    state: &PartitionState,
    replicas: &[ReplicaId],
    members: &BTreeMap<ReplicaId, LiveMember>,
) -> Result<PartitionState, PreferredRefusal> {
    let preferred = *replicas.first().ok_or(PreferredRefusal::NoReplicas)?;
    let live = members.get(&preferred);
    if let (Some((leader, session)), Some(live)) = (state.leader, live) {
        if leader == preferred && live.session == session {
            return Err(PreferredRefusal::NotNeeded(preferred));
        }
    }
    let in_sync = state
        .isr
        .iter()
        .any(|member| member.replica == preferred && alive(members, member));
    let (true, Some(live)) = (in_sync, live) else {
        return Err(PreferredRefusal::NotAvailable(preferred));
    };
    let epoch = state
        .epoch
        .0
        .checked_add(1)
        .ok_or(PreferredRefusal::EpochExhausted)?;
    Ok(PartitionState {
        leader: Some((preferred, live.session)),
        epoch: LeaderEpoch(epoch),
        isr: state.isr.clone(),
    })
}

/// What a node is for one partition it holds a replica of, by the partition's state in etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It leads `epoch`: the leader entry names this node and its current session.
    Leader { epoch: LeaderEpoch },
    /// Another member leads `epoch`.
    Follower {
        leader: ReplicaId,
        epoch: LeaderEpoch,
    },
    /// Nobody leads, or the leader entry names this node under a session it no longer has
    /// (a restart, a lapsed lease: the controller elects anew in a new epoch) or while this
    /// node has no session it can be sure of.
    Offline,
}

/// The role of node `me` for a partition in `state`, while `session` is the session of its
/// registration that still holds (`None`: its lease may have expired, so it leads nothing).
pub fn role(state: &PartitionState, me: ReplicaId, session: Option<SessionId>) -> Role {
    match state.leader {
        Some((leader, led_in)) if leader == me => {
            if session == Some(led_in) {
                Role::Leader { epoch: state.epoch }
            } else {
                Role::Offline
            }
        }
        Some((leader, _)) => Role::Follower {
            leader,
            epoch: state.epoch,
        },
        None => Role::Offline,
    }
}

/// A node that can hold replicas, for placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeable {
    pub node: ReplicaId,
    pub shards: u16,
    /// Its rack (`--rack`: a failure domain — a rack, a room, a zone), if it has one.
    pub rack: Option<String>,
}

/// Where one replica goes: a node and one of its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Placement {
    pub node: ReplicaId,
    pub shard: u16,
}

/// Why replicas cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor {factor} needs as many nodes with shards, {nodes} are alive")]
    TooFewNodes { factor: usize, nodes: usize },
    #[error("replication factor must be at least 1")]
    ZeroFactor,
}

/// Whether placement is rack-aware: every usable node has a rack, and there are at least two
/// (Kafka's rule: racks on some brokers only are not a layout it can spread over).
fn rack_aware(usable: &[&Placeable]) -> bool {
    let racks: BTreeSet<&str> = usable
        .iter()
        .filter_map(|node| node.rack.as_deref())
        .collect();
    racks.len() >= 2 && usable.iter().all(|node| node.rack.is_some())
}

/// The nodes in Kafka's rack-alternated order (`getRackAlternatedBrokerList`): the first node
/// of each rack (racks by name, nodes by id), then the second of each, and so on, so that
/// consecutive nodes are on different racks as far as the racks' sizes allow.
fn rack_alternated<'a>(usable: &[&'a Placeable]) -> Vec<&'a Placeable> {
    let mut racks: BTreeMap<&str, Vec<&'a Placeable>> = BTreeMap::new();
    for node in usable {
        racks
            .entry(node.rack.as_deref().unwrap_or(""))
            .or_default()
            .push(node);
    }
    let deepest = racks.values().map(Vec::len).max().unwrap_or(0);
    (0..deepest)
        .flat_map(|round| {
            racks
                .values()
                .filter_map(move |nodes| nodes.get(round).copied())
        })
        .collect()
}

/// Replicas for `partitions` new partitions with `factor` copies each: partition `p`'s
/// replicas are consecutive nodes (in node order, shards > 0 only) from `start + p`, so
/// leaders (the first replica) spread over the nodes in turn; on each node, a replica goes to
/// the shard holding the fewest replicas there (`load` counts the replicas each shard holds
/// already, by node and shard — of every topic, or of this one — and is updated). When every
/// node has a rack and there are several, the nodes are taken in rack-alternated order and a
/// node whose rack already holds a replica of the partition is passed over while a rack
/// without one remains (Kafka's rack-aware assignment): with at least `factor` racks, every
/// partition's replicas are on `factor` different racks.
pub fn place(
    nodes: &[Placeable],
    partitions: u32,
    factor: usize,
    start: usize,
    load: &mut BTreeMap<Placement, u64>,
) -> Result<Vec<Vec<Placement>>, PlacementError> {
    if factor == 0 {
        return Err(PlacementError::ZeroFactor);
    }
    let mut usable: Vec<&Placeable> = nodes.iter().filter(|node| node.shards > 0).collect();
    usable.sort_by_key(|node| node.node);
    usable.dedup_by_key(|node| node.node);
    if usable.len() < factor {
        return Err(PlacementError::TooFewNodes {
            factor,
            nodes: usable.len(),
        });
    }
    let racked = rack_aware(&usable);
    if racked {
        usable = rack_alternated(&usable);
    }
    let racks = usable
        .iter()
        .filter_map(|node| node.rack.as_deref())
        .collect::<BTreeSet<_>>()
        .len();
    let mut out = Vec::new();
    for partition in 0..partitions {
        let first = start.wrapping_add(partition as usize);
        // From `first` round the ring: nodes on racks not used yet (any node without racks),
        // then, if that is not enough, the nodes passed over, in the same order.
        let ring = (0..usable.len()).map(|step| usable[first.wrapping_add(step) % usable.len()]);
        let mut chosen: Vec<&Placeable> = Vec::with_capacity(factor);
        let mut used: BTreeSet<&str> = BTreeSet::new();
        for node in ring.clone() {
            if chosen.len() == factor {
                break;
            }
            let rack = node.rack.as_deref().unwrap_or("");
            if racked && used.contains(rack) && used.len() < racks {
                continue;
            }
            used.insert(rack);
            chosen.push(node);
        }
        for node in ring {
            if chosen.len() == factor {
                break;
            }
            if !chosen.iter().any(|taken| taken.node == node.node) {
                chosen.push(node);
            }
        }
        let replicas = chosen
            .into_iter()
            .map(|node| {
                let shard = (0..node.shards)
                    .min_by_key(|&shard| {
                        let at = Placement {
                            node: node.node,
                            shard,
                        };
                        (load.get(&at).copied().unwrap_or(0), shard)
                    })
                    .unwrap_or(0);
                let placement = Placement {
                    node: node.node,
                    shard,
                };
                *load.entry(placement).or_insert(0) += 1;
                placement
            })
            .collect();
        out.push(replicas);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(replica: u32, storage: u64) -> IsrMember {
        IsrMember {
            replica: ReplicaId(replica),
            storage: StorageId(storage),
        }
    }

    fn live(entries: &[(u32, u64, u64)]) -> BTreeMap<ReplicaId, LiveMember> {
        entries
            .iter()
            .map(|&(replica, session, storage)| {
                (
                    ReplicaId(replica),
                    LiveMember {
                        session: SessionId(session),
                        storage: StorageId(storage),
                    },
                )
            })
            .collect()
    }

    const REPLICAS: [ReplicaId; 3] = [ReplicaId(1), ReplicaId(2), ReplicaId(3)];

    /// A state read from etcd may hold any epoch: at the largest one no election can give a
    /// new epoch, so none is made (no panic, no wrap to a lower epoch).
    #[test]
    fn an_epoch_that_cannot_grow_elects_nobody() {
        let state = PartitionState {
            leader: Some((ReplicaId(1), SessionId(10))),
            epoch: LeaderEpoch(u32::MAX),
            isr: vec![member(1, 1), member(2, 2)],
        };
        assert_eq!(decide(&state, &REPLICAS, &live(&[(2, 20, 2)])), None);
        // The ISR still shrinks under a live leader (no new epoch needed).
        let next = decide(&state, &REPLICAS, &live(&[(1, 10, 1)])).unwrap();
        assert_eq!(
            (next.epoch, next.isr),
            (LeaderEpoch(u32::MAX), vec![member(1, 1)])
        );
    }

    #[test]
    fn the_preferred_replica_leads_when_it_is_alive_and_in_sync() {
        let state = PartitionState {
            leader: Some((ReplicaId(2), SessionId(20))),
            epoch: LeaderEpoch(4),
            isr: vec![member(2, 2), member(1, 1)],
        };
        let all = live(&[(1, 10, 1), (2, 20, 2), (3, 30, 3)]);
        let next = elect_preferred(&state, &REPLICAS, &all).unwrap();
        assert_eq!(next.leader, Some((ReplicaId(1), SessionId(10))));
        assert_eq!(next.epoch, LeaderEpoch(5));
        assert_eq!(next.isr, state.isr);
        // It leads already.
        assert_eq!(
            elect_preferred(&next, &REPLICAS, &all),
            Err(PreferredRefusal::NotNeeded(ReplicaId(1)))
        );
        // Leading under an old session is not leading: elected again.
        let restarted = live(&[(1, 11, 1), (2, 20, 2)]);
        assert_eq!(
            elect_preferred(&next, &REPLICAS, &restarted).map(|state| state.leader),
            Ok(Some((ReplicaId(1), SessionId(11))))
        );
        // Not in the ISR, gone, or with another data directory: refused.
        let out = PartitionState {
            isr: vec![member(2, 2)],
            ..state
        };
        assert_eq!(
            elect_preferred(&out, &REPLICAS, &all),
            Err(PreferredRefusal::NotAvailable(ReplicaId(1)))
        );
        for members in [live(&[(2, 20, 2)]), live(&[(1, 10, 9), (2, 20, 2)])] {
            assert_eq!(
                elect_preferred(&state, &REPLICAS, &members),
                Err(PreferredRefusal::NotAvailable(ReplicaId(1)))
            );
        }
        assert_eq!(
            elect_preferred(&state, &[], &all),
            Err(PreferredRefusal::NoReplicas)
        );
        let last = PartitionState {
            epoch: LeaderEpoch(u32::MAX),
            ..state
        };
        assert_eq!(
            elect_preferred(&last, &REPLICAS, &all),
            Err(PreferredRefusal::EpochExhausted)
        );
    }

    #[test]
    fn a_lost_leader_is_replaced_by_the_first_live_isr_member_in_a_new_epoch() {
        let state = PartitionState {
            leader: Some((ReplicaId(1), SessionId(10))),
            epoch: LeaderEpoch(4),
            isr: vec![member(1, 1), member(2, 2), member(3, 3)],
        };
        // Everyone alive: nothing to do.
        let all = live(&[(1, 10, 1), (2, 20, 2), (3, 30, 3)]);
        assert_eq!(decide(&state, &REPLICAS, &all), None);
        // The leader restarted (a new session): re-elected, in a new epoch.
        let restarted = live(&[(1, 11, 1), (2, 20, 2), (3, 30, 3)]);
        let next = decide(&state, &REPLICAS, &restarted).unwrap();
        assert_eq!(next.leader, Some((ReplicaId(1), SessionId(11))));
        assert_eq!(next.epoch, LeaderEpoch(5));
        // The leader gone, replica 2's disk replaced: replica 3 leads, 2 leaves the ISR.
        let members = live(&[(2, 21, 9), (3, 30, 3)]);
        let next = decide(&state, &REPLICAS, &members).unwrap();
        assert_eq!(next.leader, Some((ReplicaId(3), SessionId(30))));
        assert_eq!(next.isr, vec![member(3, 3)]);
    }

    /// With a live leader whose ISR holds no live member (its own entry names a data
    /// directory it no longer has), the ISR is kept as it is: never emptied (mutation testing
    /// found this unpinned).
    #[test]
    fn a_live_leader_never_gets_an_empty_isr() {
        let state = PartitionState {
            leader: Some((ReplicaId(1), SessionId(10))),
            epoch: LeaderEpoch(4),
            isr: vec![member(1, 1)],
        };
        let replaced = live(&[(1, 10, 7)]);
        assert_eq!(decide(&state, &REPLICAS, &replaced), None);
    }

    #[test]
    fn without_a_live_isr_member_the_partition_waits_offline() {
        let state = PartitionState {
            leader: Some((ReplicaId(1), SessionId(10))),
            epoch: LeaderEpoch(4),
            isr: vec![member(1, 1)],
        };
        // Replica 2 is alive but was not in sync: no unclean election.
        let members = live(&[(2, 20, 2)]);
        let next = decide(&state, &REPLICAS, &members).unwrap();
        assert_eq!(next.leader, None);
        assert_eq!(next.epoch, LeaderEpoch(4));
        assert_eq!(next.isr, vec![member(1, 1)], "the last replica stays");
        assert_eq!(decide(&next, &REPLICAS, &members), None);
        // It comes back: it leads again.
        let back = live(&[(1, 12, 1), (2, 20, 2)]);
        let again = decide(&next, &REPLICAS, &back).unwrap();
        assert_eq!(again.leader, Some((ReplicaId(1), SessionId(12))));
        assert_eq!(again.epoch, LeaderEpoch(5));
    }

    #[test]
    fn dead_followers_leave_the_isr_while_the_leader_lives() {
        let state = PartitionState {
            leader: Some((ReplicaId(2), SessionId(20))),
            epoch: LeaderEpoch(1),
            isr: vec![member(1, 1), member(2, 2), member(3, 3)],
        };
        let members = live(&[(2, 20, 2), (3, 30, 3)]);
        let next = decide(&state, &REPLICAS, &members).unwrap();
        assert_eq!(next.leader, state.leader);
        assert_eq!(next.epoch, state.epoch);
        assert_eq!(next.isr, vec![member(2, 2), member(3, 3)]);
    }

    #[test]
    fn a_node_leads_only_under_the_session_it_was_elected_in() {
        let state = PartitionState {
            leader: Some((ReplicaId(1), SessionId(10))),
            epoch: LeaderEpoch(3),
            isr: vec![member(1, 1), member(2, 2)],
        };
        let leader = Role::Leader {
            epoch: LeaderEpoch(3),
        };
        assert_eq!(role(&state, ReplicaId(1), Some(SessionId(10))), leader);
        // Restarted, or its lease in doubt: it leads nothing until elected again.
        assert_eq!(
            role(&state, ReplicaId(1), Some(SessionId(11))),
            Role::Offline
        );
        assert_eq!(role(&state, ReplicaId(1), None), Role::Offline);
        let follower = Role::Follower {
            leader: ReplicaId(1),
            epoch: LeaderEpoch(3),
        };
        assert_eq!(role(&state, ReplicaId(2), Some(SessionId(20))), follower);
        assert_eq!(role(&state, ReplicaId(2), None), follower);
        let offline = PartitionState {
            leader: None,
            ..state
        };
        assert_eq!(
            role(&offline, ReplicaId(1), Some(SessionId(10))),
            Role::Offline
        );
    }

    #[test]
    fn placement_spreads_leaders_nodes_and_shards() {
        let nodes = [
            Placeable {
                node: ReplicaId(3),
                shards: 2,
                rack: None,
            },
            Placeable {
                node: ReplicaId(1),
                shards: 2,
                rack: None,
            },
            Placeable {
                node: ReplicaId(2),
                shards: 2,
                rack: None,
            },
            Placeable {
                node: ReplicaId(4),
                shards: 0,
                rack: None,
            },
        ];
        let mut load = BTreeMap::new();
        let placed = place(&nodes, 6, 3, 1, &mut load).unwrap();
        let mut leaders = BTreeMap::new();
        for replicas in &placed {
            let mut distinct: Vec<ReplicaId> = replicas.iter().map(|at| at.node).collect();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
            assert!(replicas.iter().all(|at| at.node != ReplicaId(4)));
            *leaders.entry(replicas[0].node).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        // 18 replicas on 6 shards: 3 each.
        assert_eq!(load.len(), 6);
        assert!(load.values().all(|&count| count == 3), "{load:?}");
        assert_eq!(
            place(&nodes, 1, 4, 0, &mut load),
            Err(PlacementError::TooFewNodes {
                factor: 4,
                nodes: 3
            })
        );
        assert_eq!(
            place(&nodes, 1, 0, 0, &mut load),
            Err(PlacementError::ZeroFactor)
        );
    }

    fn racked(entries: &[(u32, Option<&str>)]) -> Vec<Placeable> {
        entries
            .iter()
            .map(|&(node, rack)| Placeable {
                node: ReplicaId(node),
                shards: 1,
                rack: rack.map(str::to_owned),
            })
            .collect()
    }

    fn racks_of(placed: &[Vec<Placement>], nodes: &[Placeable]) -> Vec<Vec<String>> {
        placed
            .iter()
            .map(|replicas| {
                replicas
                    .iter()
                    .map(|at| {
                        let node = nodes.iter().find(|node| node.node == at.node).unwrap();
                        node.rack.clone().unwrap_or_default()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn placement_spreads_each_partitions_replicas_over_racks() {
        // Two nodes per rack, racks in node order a a b b c c: consecutive nodes would put
        // two replicas on one rack; rack-aware, every partition has one replica per rack.
        let nodes = racked(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let mut load = BTreeMap::new();
        let placed = place(&nodes, 12, 3, 0, &mut load).unwrap();
        let mut leaders = BTreeMap::new();
        for (replicas, racks) in placed.iter().zip(racks_of(&placed, &nodes)) {
            let mut distinct = racks.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct, ["a", "b", "c"], "{replicas:?}");
            *leaders.entry(replicas[0].node).or_insert(0) += 1;
        }
        // Leaders still spread over all six nodes.
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2; 6]);
        // Fewer racks than copies: every rack holds one before any holds two.
        let nodes = racked(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
        ]);
        let placed = place(&nodes, 4, 3, 0, &mut BTreeMap::new()).unwrap();
        for racks in racks_of(&placed, &nodes) {
            assert!(racks.contains(&"b".to_owned()), "{racks:?}");
        }
        // Racks on some nodes only: placement as without racks (consecutive nodes).
        let some = racked(&[(1, Some("a")), (2, None), (3, Some("b"))]);
        let plain = racked(&[(1, None), (2, None), (3, None)]);
        assert_eq!(
            place(&some, 5, 2, 1, &mut BTreeMap::new()),
            place(&plain, 5, 2, 1, &mut BTreeMap::new())
        );
    }
}
