//! The data-directory lock: one process at a time owns a data directory.
//!
//! Two nodes on one directory would both recover the same files, both assign the same offsets
//! to different producers and overwrite each other's acknowledged records. Before the node
//! reads or writes anything in the directory it takes an exclusive `flock` on `.lock` there and
//! holds it for the life of the process (the kernel drops it when the process dies, also on
//! `kill -9`, so a crash never leaves a stale lock behind). The file holds the holder's PID so
//! a refused process can name it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The lock file's name inside the data directory.
pub const LOCK_FILE_NAME: &str = ".lock";

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "the data directory {dir} is in use by another spate process ({holder}); a second \
         node on the same directory would lose acknowledged records. Stop it first, or give \
         this one another --data-dir"
    )]
    Held { dir: String, holder: String },
    #[error("cannot lock the data directory {dir} ({path}): {source}")]
    Io {
        dir: String,
        path: String,
        source: std::io::Error,
    },
}

/// An exclusive lock on a data directory, released when dropped (or when the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    // Held only for its lock: closing the file releases it.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `dir` (which must exist) without waiting; fails at once, naming the
    /// holder, if another process (or another node in this process) holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE_NAME);
        let io = |source| LockError::Io {
            dir: dir.display().to_string(),
            path: path.display().to_string(),
            source,
        };
        // Not truncated on open: the holder's PID must stay readable for the refused one.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.display().to_string(),
                    holder: holder(&mut file),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        // The PID is a hint for people; the lock itself is the flock, so no fsync is needed.
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds the lock, from the PID the holder wrote (it may not have written it yet).
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("PID {pid}"),
        Err(_) => "PID not yet written".to_owned(),
    }
}
