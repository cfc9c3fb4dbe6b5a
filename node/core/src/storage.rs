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

    /// The producer snapshot as of the end of the segment at `base`.
    pub fn producers(base: Offset) -> Self {
        FileRef {
            base,
            kind: SegmentFileKind::Producers,
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
        data: WriteData,
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

    /// Asserts the O_DIRECT contract that every shell relies on (the simulator's storage and
    /// the node's `DmaStorage` both check it before running a request): writes and reads at
    /// sector-aligned positions with non-empty, sector-aligned lengths. Breaking it is a bug
    /// in the core, never caused by input.
    pub fn assert_aligned(&self) {
        let sector = u64::from(SECTOR_SIZE);
        match self {
            IoRequest::Write { position, data, .. } => {
                assert_eq!(
                    position % sector,
                    0,
                    "O_DIRECT write position {position} unaligned"
                );
                assert_eq!(
                    data.len() % sector,
                    0,
                    "O_DIRECT write length {} unaligned",
                    data.len()
                );
                assert!(!data.is_empty(), "empty write");
            }
            IoRequest::Read { position, len, .. } => {
                assert_eq!(
                    position % sector,
                    0,
                    "O_DIRECT read position {position} unaligned"
                );
                assert_eq!(len % sector, 0, "O_DIRECT read length {len} unaligned");
            }
            IoRequest::Create { .. }
            | IoRequest::Allocate { .. }
            | IoRequest::WriteFile { .. }
            | IoRequest::Sync { .. }
            | IoRequest::SyncDir { .. }
            | IoRequest::ReadFile { .. }
            | IoRequest::Truncate { .. }
            | IoRequest::Remove { .. } => {}
        }
    }
}

/// The bytes of one `Write`: pieces laid end to end, then zeros up to [`WriteData::len`], a
/// whole number of sectors. The pieces are shared with the producers' frames and the tail
/// cache: the log never copies record bytes into a write buffer of its own; the shell copies
/// them once, into the memory it hands to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteData {
    pieces: Vec<Bytes>,
    /// Bytes of the pieces together (the rest of `len` is zeros).
    filled: u64,
    len: u64,
}

impl WriteData {
    /// `pieces`, padded with zeros to `len`. `len` must be a non-zero multiple of
    /// [`SECTOR_SIZE`] and hold every piece.
    pub fn new(pieces: Vec<Bytes>, len: u64) -> Self {
        let filled = pieces.iter().map(|piece| piece.len() as u64).sum();
        assert!(len > 0, "an empty write");
        assert_eq!(
            len % u64::from(SECTOR_SIZE),
            0,
            "write length {len} unaligned"
        );
        assert!(
            filled <= len,
            "{filled} bytes of pieces exceed the write's {len}"
        );
        WriteData {
            pieces,
            filled,
            len,
        }
    }

    /// One contiguous piece (tests, index files); `data.len()` must be sector-aligned.
    pub fn contiguous(data: Bytes) -> Self {
        let len = data.len() as u64;
        Self::new(vec![data], len)
    }

    /// Bytes written, including the zero padding: a multiple of [`SECTOR_SIZE`].
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never true: a write has at least one sector.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of data before the zero padding.
    pub fn filled(&self) -> u64 {
        self.filled
    }

    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// Copies the write's bytes `[from, from + out.len())` (padding included) into `out`:
    /// the one copy a shell makes into its device buffer.
    pub fn copy_to(&self, from: u64, out: &mut [u8]) {
        let end = from + out.len() as u64;
        assert!(
            end <= self.len,
            "copy of [{from}, {end}) beyond a {}-byte write",
            self.len
        );
        let mut written = 0usize;
        let mut piece_start = 0u64;
        for piece in &self.pieces {
            let piece_end = piece_start + piece.len() as u64;
            if piece_end > from && piece_start < end {
                let lo = from.max(piece_start);
                let hi = end.min(piece_end);
                let source = &piece[to_usize(lo - piece_start)..to_usize(hi - piece_start)];
                out[written..written + source.len()].copy_from_slice(source);
                written += source.len();
            }
            if piece_end >= end {
                break;
            }
            piece_start = piece_end;
        }
        out[written..].fill(0);
    }

    /// Copies the whole write (padding included) into `outs`, laid end to end (their lengths
    /// must add up to [`WriteData::len`]), in one pass over the pieces.
    pub fn copy_into(&self, outs: &mut [&mut [u8]]) {
        let total: usize = outs.iter().map(|out| out.len()).sum();
        assert_eq!(total as u64, self.len, "the outputs hold the write exactly");
        let mut pieces = self.pieces.iter().map(|piece| &piece[..]);
        let mut piece: &[u8] = pieces.next().unwrap_or(&[]);
        for out in outs.iter_mut() {
            let mut at = 0;
            while at < out.len() {
                if piece.is_empty() {
                    match pieces.next() {
                        Some(next) => {
                            piece = next;
                            continue;
                        }
                        None => {
                            out[at..].fill(0);
                            break;
                        }
                    }
                }
                let take = piece.len().min(out.len() - at);
                out[at..at + take].copy_from_slice(&piece[..take]);
                piece = &piece[take..];
                at += take;
            }
        }
    }

    /// The write's bytes as one buffer (a copy: simulated storage and tests).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = vec![0; to_usize(self.len)];
        self.copy_to(0, &mut out);
        Bytes::from(out)
    }

    /// What is left to write after the first `done` bytes (a sector multiple below `len`)
    /// were written: the rest of a short write.
    pub fn skip(&self, done: u64) -> WriteData {
        assert_eq!(done % u64::from(SECTOR_SIZE), 0, "skip {done} unaligned");
        assert!(done < self.len, "skip {done} of a {}-byte write", self.len);
        let mut pieces = Vec::new();
        let mut piece_start = 0u64;
        for piece in &self.pieces {
            let piece_end = piece_start + piece.len() as u64;
            if piece_end > done {
                pieces.push(piece.slice(to_usize(done.saturating_sub(piece_start))..));
            }
            piece_start = piece_end;
        }
        WriteData::new(pieces, self.len - done)
    }
}

/// A length or position inside a write, which the log builds from batches in memory (at most
/// `ROUND_BYTES_MAX`): it always fits `usize`.
fn to_usize(value: u64) -> usize {
    usize::try_from(value).expect("a write fits in memory")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces() -> WriteData {
        let pieces = vec![
            Bytes::from_static(b"abc"),
            Bytes::from(vec![7u8; 5000]),
            Bytes::from_static(b"xyz"),
        ];
        WriteData::new(pieces, 8192)
    }

    /// Mutation testing found these unpinned.
    #[test]
    fn a_file_shows_as_its_name_and_unaligned_requests_are_bugs() {
        let file = FileRef::log(Offset(5));
        assert_eq!(file.to_string(), file.file_name());
        let aligned = IoRequest::Read {
            id: IoId(1),
            file,
            position: 4096,
            len: 4096,
        };
        aligned.assert_aligned();
        let unaligned = IoRequest::Read {
            id: IoId(2),
            file,
            position: 100,
            len: 4096,
        };
        assert!(std::panic::catch_unwind(|| unaligned.assert_aligned()).is_err());
    }

    #[test]
    fn write_data_copies_pieces_then_zeros() {
        let data = pieces();
        assert_eq!((data.len(), data.filled()), (8192, 5006));
        let whole = data.to_bytes();
        assert_eq!(&whole[..3], b"abc");
        assert!(whole[3..5003].iter().all(|&byte| byte == 7));
        assert_eq!(&whole[5003..5006], b"xyz");
        assert!(whole[5006..].iter().all(|&byte| byte == 0));
        // Any window equals the same window of the whole.
        for (from, len) in [
            (0usize, 1usize),
            (2, 2),
            (4999, 10),
            (5005, 100),
            (6000, 2192),
            (0, 8192),
        ] {
            let mut out = vec![0xff; len];
            data.copy_to(u64::try_from(from).unwrap(), &mut out);
            assert_eq!(&out[..], &whole[from..from + len], "{from}+{len}");
        }
    }

    #[test]
    fn write_data_copies_into_consecutive_outputs() {
        let data = pieces();
        let whole = data.to_bytes();
        for cuts in [
            vec![8192],
            vec![4096, 4096],
            vec![1, 5002, 3, 3186],
            vec![5006, 3186],
        ] {
            let mut buffers: Vec<Vec<u8>> = cuts.iter().map(|&len| vec![0xff; len]).collect();
            let mut outs: Vec<&mut [u8]> = buffers.iter_mut().map(|b| &mut b[..]).collect();
            data.copy_into(&mut outs);
            assert_eq!(buffers.concat(), whole.to_vec(), "{cuts:?}");
        }
    }

    #[test]
    fn write_data_skips_a_written_prefix() {
        let data = pieces();
        let rest = data.skip(4096);
        assert_eq!((rest.len(), rest.filled()), (4096, 5006 - 4096));
        assert_eq!(&rest.to_bytes()[..], &data.to_bytes()[4096..]);
        let contiguous = WriteData::contiguous(Bytes::from(vec![1u8; 8192]));
        assert_eq!(
            contiguous.skip(4096).to_bytes(),
            Bytes::from(vec![1u8; 4096])
        );
    }

    #[test]
    #[should_panic(expected = "unaligned")]
    fn write_data_refuses_an_unaligned_length() {
        let _ = WriteData::new(vec![Bytes::from_static(b"a")], 100);
    }
}
