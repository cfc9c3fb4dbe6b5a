//! `spate-node check`: an offline inspection of a data directory. For every partition it runs
//! the same `Recovery` a start would run, on a storage that reads the files and only records
//! the writes recovery would make (nothing is changed), then verifies every sealed segment in
//! full with `spate_core::verify` (every batch's checksums, offsets continuing across
//! segments): a start reads only the end of a sealed segment whose indexes are valid.
//!
//! It takes the data-directory lock, so it never reads files a running node is writing.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use spate_core::recovery::Recovery;
use spate_core::storage::FileRef;
use spate_core::{
    IoDone, IoOutcome, IoRequest, LogConfig, SealedSegment, SegmentVerifier, StorageError,
};
use spate_format::Offset;
use thiserror::Error;

use crate::identity::IdentityLoadError;
use crate::lock::{DataDirLock, LockError};
use crate::metadata::{Metadata, MetadataError};
use crate::shard::partition_dir;
use crate::storage::list_dir;

#[derive(Debug, Error)]
pub enum CheckError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// What the check found in the whole directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub partitions: usize,
    pub damaged: usize,
    /// The identity file is damaged (a start refuses the directory).
    pub identity_damaged: bool,
}

impl Summary {
    /// Whether anything needs the operator.
    pub fn is_damaged(&self) -> bool {
        self.damaged > 0 || self.identity_damaged
    }
}

/// Checks every partition of the data directory `dir`, writing one line per partition (and
/// one per finding) to `out`.
pub fn check(dir: &Path, out: &mut impl Write) -> Result<Summary, CheckError> {
    let _lock = DataDirLock::acquire(dir)?;
    let metadata = Metadata::load(dir)?;
    let mut summary = Summary::default();
    match crate::identity::load(dir) {
        Ok(Some(identity)) => writeln!(
            out,
            "identity: storage id {:016x}, {}",
            identity.storage_id,
            identity
                .node_id
                .map_or("no node id".to_owned(), |id| format!("node {id}"))
        )?,
        Ok(None) => writeln!(out, "identity: none yet (made at the next start)")?,
        Err(IdentityLoadError::Damaged { source, .. }) => {
            summary.identity_damaged = true;
            writeln!(out, "identity: DAMAGED: {source}")?;
        }
        Err(error) => {
            summary.identity_damaged = true;
            writeln!(out, "identity: cannot be read: {error}")?;
        }
    }
    for (topic, described) in &metadata.topics {
        for partition in 0..described.shards.len() {
            let partition = u32::try_from(partition).unwrap_or(u32::MAX);
            summary.partitions += 1;
            let findings = check_partition(&partition_dir(dir, topic, partition));
            let damaged = findings.damage.len();
            if damaged > 0 {
                summary.damaged += 1;
            }
            writeln!(
                out,
                "{topic}-{partition}: {} segments, offsets {}..{}, {}",
                findings.segments,
                findings.log_start.0,
                findings.high_watermark.0,
                if damaged > 0 { "DAMAGED" } else { "ok" }
            )?;
            for note in findings.notes.iter().chain(&findings.damage) {
                writeln!(out, "  {note}")?;
            }
        }
    }
    Ok(summary)
}

#[derive(Debug, Default)]
struct Findings {
    segments: usize,
    log_start: Offset,
    high_watermark: Offset,
    /// What a start would repair by itself (torn tails, indexes, leftovers).
    notes: Vec<String>,
    /// Damage to acknowledged data.
    damage: Vec<String>,
}

fn check_partition(dir: &Path) -> Findings {
    let mut findings = Findings::default();
    let listing = match list_dir(dir) {
        Ok(listing) => listing,
        Err(error) => {
            findings
                .damage
                .push(format!("cannot list the directory: {error}"));
            return findings;
        }
    };
    let mut recovery = Recovery::new(LogConfig::default(), &listing);
    let result = loop {
        while let Some(request) = recovery.poll_io() {
            let done = dry_run(dir, request, &mut findings.notes);
            recovery.handle_io_done(done);
        }
        if let Some(result) = recovery.poll_done() {
            break result;
        }
    };
    let recovered = match result {
        Ok(recovered) => recovered,
        Err(error) => {
            findings.damage.push(format!("recovery fails: {error}"));
            return findings;
        }
    };
    let report = &recovered.report;
    findings.segments = report.segments as usize;
    findings.log_start = recovered.log.log_start();
    findings.high_watermark = recovered.log.high_watermark();
    if let Some(torn) = &report.torn_tail {
        findings.notes.push(format!(
            "torn tail (never acknowledged) in segment {} at {}: {} bytes a start discards ({})",
            torn.segment.0, torn.position, torn.bytes_discarded, torn.reason
        ));
    }
    for base in &report.rebuilt_indexes {
        findings.notes.push(format!(
            "indexes of segment {} are rebuilt at start",
            base.0
        ));
    }
    if let Some(corruption) = &report.corruption {
        findings.damage.push(corruption.to_string());
    }
    if let Some(fence) = crate::fence::load(dir) {
        findings.damage.push(format!("fenced: {fence}"));
    }
    // Sealed segments in full: a start checks only their ends.
    for segment in recovered.log.sealed_segments() {
        if let Err(damage) = verify_file(dir, segment) {
            findings.damage.push(damage);
        }
    }
    findings
}

/// Verifies a sealed segment from its first byte (every batch valid, offsets from its base
/// up to the next segment's, exactly the bytes the log holds for it).
fn verify_file(dir: &Path, segment: SealedSegment) -> Result<(), String> {
    let name = segment.file().file_name();
    let file = std::fs::File::open(dir.join(&name)).map_err(|error| format!("{name}: {error}"))?;
    let mut verifier = SegmentVerifier::new(segment);
    while let Some(read) = verifier.next_read() {
        let data =
            read_at(&file, read.position, read.len).map_err(|error| format!("{name}: {error}"))?;
        verifier.handle_read(read, &data);
    }
    match verifier.outcome() {
        Some(Err(damage)) => Err(damage.to_string()),
        _ => Ok(()),
    }
}

fn read_at(file: &std::fs::File, position: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    let mut filled = 0;
    while filled < buffer.len() {
        let read = file.read_at(&mut buffer[filled..], position + filled as u64)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    buffer.truncate(filled);
    Ok(buffer)
}

/// Runs a recovery request without changing anything: reads are served from the files,
/// writes are only noted.
fn dry_run(dir: &Path, request: IoRequest, notes: &mut Vec<String>) -> IoDone {
    let id = request.id();
    let failed = |operation: &'static str, file: &FileRef, error: std::io::Error| {
        let mut storage = StorageError::new(operation, file.file_name(), error.to_string());
        storage.errno = error.raw_os_error();
        storage
    };
    let result = match request {
        IoRequest::Read {
            file,
            position,
            len,
            ..
        } => std::fs::File::open(dir.join(file.file_name()))
            .and_then(|handle| read_at(&handle, position, len))
            .map(|data| IoOutcome::Read {
                data: Bytes::from(data),
            })
            .map_err(|error| failed("read", &file, error)),
        IoRequest::ReadFile { file, .. } => std::fs::read(dir.join(file.file_name()))
            .map(|data| IoOutcome::Read {
                data: Bytes::from(data),
            })
            .map_err(|error| failed("read", &file, error)),
        IoRequest::Truncate { file, len, .. } => {
            notes.push(format!("a start cuts {file} to {len} bytes"));
            Ok(IoOutcome::Done)
        }
        IoRequest::Remove { file, .. } => {
            notes.push(format!("a start removes the leftover {file}"));
            Ok(IoOutcome::Done)
        }
        IoRequest::Write { data, .. } => Ok(IoOutcome::Written { bytes: data.len() }),
        IoRequest::Create { .. }
        | IoRequest::Allocate { .. }
        | IoRequest::WriteFile { .. }
        | IoRequest::Sync { .. }
        | IoRequest::SyncDir { .. } => Ok(IoOutcome::Done),
    };
    IoDone { id, result }
}
