//! Fences that survive restarts. Damage to acknowledged data found while running (a fetch
//! that meets a bad checksum in a sealed segment) fences the partition; a restart re-runs
//! recovery, which validates only the ends of sealed segments, so without a record the fence
//! would be lifted and writes would resume on a partition with known damage. The shard writes
//! a marker file, `FENCED`, into the partition directory (atomically: temporary file, fsync,
//! rename, directory fsync); recovery honours it by fencing the partition again. An operator
//! lifts it by removing the file after repairing the partition (docs/reliability.md).
//!
//! Storage errors (EIO, ENOSPC) are not persisted: recovery from the media is the answer to
//! them, and a restart runs it.

use std::path::{Path, PathBuf};

use spate_core::FenceReason;

/// The marker's name inside a partition directory.
pub const FENCE_FILE_NAME: &str = "FENCED";

pub fn marker_path(partition_dir: &Path) -> PathBuf {
    partition_dir.join(FENCE_FILE_NAME)
}

/// Writes the marker for a corruption fence (other reasons are not persisted).
pub fn persist(partition_dir: &Path, reason: &FenceReason) -> std::io::Result<()> {
    let FenceReason::Corruption {
        segment,
        position,
        detail,
    } = reason
    else {
        return Ok(());
    };
    let path = marker_path(partition_dir);
    if path.exists() {
        return Ok(());
    }
    // Line 1: segment, line 2: position, the rest: what was found.
    let text = format!("{segment}\n{position}\n{detail}\n");
    crate::durable::replace(partition_dir, FENCE_FILE_NAME, text.as_bytes())
}

/// The fence recorded in the partition directory, if any. A marker that does not parse
/// still fences: its presence is what counts.
pub fn load(partition_dir: &Path) -> Option<FenceReason> {
    let path = marker_path(partition_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => format!("\n0\nthe marker cannot be read: {error}"),
    };
    let mut lines = text.splitn(3, '\n');
    let segment = lines.next().unwrap_or_default().to_owned();
    let position = lines
        .next()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or(0);
    let found = lines.next().unwrap_or_default().trim();
    Some(FenceReason::Corruption {
        segment,
        position,
        detail: format!(
            "found before a restart: {found}; remove {} once the partition is repaired",
            path.display()
        ),
    })
}
