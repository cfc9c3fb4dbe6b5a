//! The narrow storage contract between the pure partition log and the shells that own real
//! (or simulated) files: requests the log hands out, and the completions it gets back.
//!
//! The log never performs I/O. It hands out [`IoRequest`]s through `poll_io`; a shell runs
//! them (io_uring, a simulator) and reports each as an [`IoDone`]. Requests handed out
//! together may complete in any order: the log only hands out a request once everything it
//! depends on has completed. Short writes and errors are part of the contract.

use bytes::Bytes;
use spate_format::limits::SECTOR_SIZE;
use spate_format::segment::{segment_file_name, SegmentFileKind};
use spate_format::Offset;
use thiserror::Error;

/// One file of a partition: a segment's log, offset index or time index, named by the
/// segment's base offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileRef {
    pub base: Offset,
    pub kind: SegmentFileKind,
}

impl FileRef {
    pub fn log(base: Offset) -> Self {
        FileRef {
            base,
            kind: SegmentFileKind::Log,
        }
    }

    pub fn offset_index(base: Offset) -> Self {
        FileRef {
            base,
            kind: SegmentFileKind::OffsetIndex,
        }
    }

    pub fn time_index(base: Offset) -> Self {
        FileRef {
            base,
            kind: SegmentFileKind::TimeIndex,
        }
    }

    /// The log-start marker recording that the log starts at `start`.
    pub fn log_start(start: Offset) -> Self {
        FileRef {
            base: start,
            kind: SegmentFileKind::LogStart,
        }
    }

    /// The file's name in the partition directory.
    pub fn file_name(&self) -> String {
        segment_file_name(self.base, self.kind)
    }
}

impl std::fmt::Display for FileRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// Identifies a request so its completion can be matched to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IoId(pub u64);

/// Work for a shell. Positions and lengths of `Write` and `Read` are multiples of
/// [`SECTOR_SIZE`] (O_DIRECT); everything else is byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoRequest {
    /// Create a new, empty file (it must not exist) and preallocate `allocate` bytes of zeros.
    Create {
        id: IoId,
        file: FileRef,
        allocate: u64,
    },
    /// Extend the file with zeros so it is at least `len` bytes long (fallocate).
    Allocate { id: IoId, file: FileRef, len: u64 },
    /// Write `data` at `position`. May complete short (`IoOutcome::Written` with fewer bytes).
    Write {
        id: IoId,
        file: FileRef,
        position: u64,
        data: Bytes,
    },
    /// Replace the whole file with `data` (created if missing) and sync it. For small files
    /// (indexes); the shell may use buffered I/O.
    WriteFile {
        id: IoId,
        file: FileRef,
        data: Bytes,
    },
    /// `fdatasync` the file.
    Sync { id: IoId, file: FileRef },
    /// `fsync` the partition directory, making file creations and removals durable.
    SyncDir { id: IoId },
    /// Read up to `len` bytes at `position`; fewer only at the end of the file.
    Read {
        id: IoId,
        file: FileRef,
        position: u64,
        len: u64,
    },
    /// Read the whole file (small files: indexes).
    ReadFile { id: IoId, file: FileRef },
    /// Set the file's length to `len` (cutting or extending with zeros).
    Truncate { id: IoId, file: FileRef, len: u64 },
    /// Remove the file (missing is not an error).
    Remove { id: IoId, file: FileRef },
}

impl IoRequest {
    pub fn id(&self) -> IoId {
        match self {
            IoRequest::Create { id, .. }
            | IoRequest::Allocate { id, .. }
            | IoRequest::Write { id, .. }
            | IoRequest::WriteFile { id, .. }
            | IoRequest::Sync { id, .. }
            | IoRequest::SyncDir { id }
            | IoRequest::Read { id, .. }
            | IoRequest::ReadFile { id, .. }
            | IoRequest::Truncate { id, .. }
            | IoRequest::Remove { id, .. } => *id,
        }
    }
}

/// What a successful request produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoOutcome {
    Done,
    /// Bytes a `Write` wrote from the start of its data (all of them unless short).
    Written {
        bytes: u64,
    },
    /// Bytes a `Read` or `ReadFile` returned.
    Read {
        data: Bytes,
    },
}

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{operation} on {file}: {message}")]
pub struct StorageError {
    pub operation: &'static str,
    pub file: String,
    /// The OS error number, when there is one.
    pub errno: Option<i32>,
    pub message: String,
}

impl StorageError {
    pub fn new(
        operation: &'static str,
        file: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StorageError {
            operation,
            file: file.into(),
            errno: None,
            message: message.into(),
        }
    }
}

/// The completion of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoDone {
    pub id: IoId,
    pub result: Result<IoOutcome, StorageError>,
}

/// A listed file of the partition directory: its name and its length in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub name: String,
    pub len: u64,
    /// Every byte from here to `len` reads as zeros (preallocated, never written), as the
    /// filesystem reports it (`SEEK_HOLE`): recovery need not read them. `len` where unknown.
    pub data_end: u64,
}

/// Storage that runs requests and reports completions; implemented by the node's glommio
/// shell and by the simulator. `submit` never blocks; completions come back through
/// `poll_done`, in any order.
pub trait Storage {
    fn submit(&mut self, request: IoRequest);
    fn poll_done(&mut self) -> Option<IoDone>;
    /// The files of the partition directory (for recovery).
    fn list(&mut self) -> Result<Vec<ListedFile>, StorageError>;
}

/// Rounds `position` down to a sector boundary.
pub fn align_down(position: u64) -> u64 {
    position & !(u64::from(SECTOR_SIZE) - 1)
}

/// Rounds `position` up to a sector boundary.
pub fn align_up(position: u64) -> u64 {
    align_down(position + u64::from(SECTOR_SIZE) - 1)
}
