//! `spate-sim`: deterministic simulation of `spate-core` — the consumer-group state machine
//! (`groups`), a group coordinator's committed offsets over a crashing log (`offsets`), and
//! `SimStorage` (in-memory storage
//! that tracks synced versus written bytes, injects faults and produces crash images) and a
//! seeded workload driver that checks the log's promises after every step. A failing run
//! prints its seed; the same seed replays it exactly.

pub mod groups;
pub mod offsets;
pub mod replication;
pub mod rng;
pub mod storage;
pub mod workload;

pub use groups::{run_group_seed, run_group_seeds, GroupReport};
pub use offsets::{run_offsets_seed, run_offsets_seeds, OffsetsReport};
pub use replication::{run_replication_seed, run_replication_seeds, ReplicationReport};
pub use storage::{Fault, SimStorage};
pub use workload::{run_seed, run_seeds, Failure, Op, Options, RunReport, Simulation};
