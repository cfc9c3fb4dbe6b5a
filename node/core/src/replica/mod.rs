//! Replication of a partition over several nodes, pure: leader epochs and agreement between
//! logs ([`epochs`]), the leader's view of its followers, the high watermark and the in-sync
//! replica set ([`leader`]), the follower's fetch state ([`follower`]), and the controller's
//! decisions — elections and placement ([`control`]) and a whole pass of them over what
//! the controller read ([`reconcile`]). The design —
//! control plane on etcd, Kafka's replication protocol — is in `docs/cluster.md`; the
//! simulation in `spate-sim` (`replication`) checks these against a model of etcd.

pub mod control;
pub mod epochs;
pub mod follower;
pub mod leader;
pub mod reconcile;
pub mod throttle;

pub use control::{
    decide, elect_preferred, place, role, LiveMember, PartitionState, Placeable, Placement,
    PlacementError, PreferredRefusal, Role, SessionId,
};
pub use epochs::{
    check_agreement, truncation_point, Agreement, EpochEnd, EpochError, EpochStart, LeaderEpoch,
    LeaderEpochs, Truncation,
};
pub use follower::{Follower, FollowerError};
pub use leader::{
    AckState, Leader, LeaderConfig, NotEnoughReplicas, Progress, ReplicaError,
    REPLICA_LAG_MAX_MS_DEFAULT,
};
pub use reconcile::{
    rebalance_leaders, reconcile, Action, ClusterRead, CreationRequest, Member, PartitionEntry,
    PartitionName, Refusal, TopicAssignment, TopicId,
};
pub use throttle::Throttle;

/// A replica of a partition: the node that holds it (its node id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(pub u32);

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The identity of a node's data directory, created with it: a replica whose directory was
/// replaced (a lost disk) holds none of what it held before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageId(pub u64);

/// A member of a partition's in-sync replica set: the replica and the data directory it was
/// in sync with (Kafka's KIP-903).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IsrMember {
    pub replica: ReplicaId,
    pub storage: StorageId,
}
