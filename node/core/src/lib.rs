//! `spate-core`: the pure, sans-IO state machines of Spate's storage — the partition log
//! (appends, group commit, durability, segments, retention, fetch planning), its recovery,
//! the requests waiting on it (acknowledgements, parked fetches), and the byte budget a
//! shard's partitions share.
//!
//! No I/O, no clock (time is an argument), no async runtime: inputs are `handle_*` calls,
//! outputs are polled (`poll_io`, `poll_event`). Shells (the glommio node, the simulator)
//! run the storage requests. See `docs/ARCHITECTURE.md` and `docs/format/segment.md`.

pub mod config;
pub mod coordinator;
pub mod group;
pub mod offsets;
pub mod partition;
pub mod producers;
pub mod recovery;
pub mod replica;
pub mod shard;
pub mod storage;
pub mod tail;
pub mod verify;
pub mod waiters;
pub mod wire;

pub use config::{LogConfig, FETCH_WAITERS_DEFAULT, ROUND_BYTES_MAX, TORN_WINDOW_BYTES};
pub use partition::{
    AppendError, AppendTicket, DeleteRecordsError, FenceReason, FetchError, FetchPlan, LogEvent,
    PartitionLog, ReadDone, ReadPlan, READ_AHEAD_KEEP_MS,
};
pub use producers::{ProducerError, ProducerStates};
pub use recovery::{Recovered, Recovery, RecoveryError, RecoveryReport, TornTail};
pub use shard::{PartitionKey, ShardBudget, READ_AHEAD_SHARD_BYTES_MAX};
pub use storage::{
    FileRef, IoDone, IoId, IoOutcome, IoRequest, ListedFile, Storage, StorageError, WriteData,
};
pub use verify::{Damage, SealedSegment, SegmentVerifier, VerifyRead};
pub use waiters::{FetchWaitError, Ticket};

/// Milliseconds since the Unix epoch: the only notion of time the core has, always passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub i64);
