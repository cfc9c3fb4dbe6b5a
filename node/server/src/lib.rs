//! `spate-node`: the storage node. One glommio executor (shard) per configured core, each
//! owning disjoint partitions, driving their `spate-core` logs with O_DIRECT io_uring I/O and
//! serving `spate-proto` frames over TCP. See `docs/operations.md`.

#[cfg(feature = "cluster")]
pub mod assignment;
pub mod check;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod connections;
#[cfg(feature = "cluster")]
pub mod controller;
pub mod coordinator;
pub mod durable;
pub mod engine;
pub mod fence;
pub mod fetcher;
pub mod identity;
pub mod inbound;
pub mod links;
pub mod lock;
pub mod logging;
pub mod membership;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod ownership;
pub mod partition;
pub mod process;
#[cfg(feature = "cluster")]
pub mod records;
pub mod replica;
pub mod shard;
pub mod storage;
pub mod verify;

pub use config::{Flags, NodeCommand, NodeConfig};
pub use node::{start, start_observed, NodeError, NodeHandle};
