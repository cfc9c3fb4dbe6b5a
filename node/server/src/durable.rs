//! Small files replaced atomically and durably: the new contents go to a temporary file
//! beside the old one, which is synced, renamed over the old one, and the directory synced.
//! A crash leaves the old contents or the new ones, never a mix or an empty file (a leftover
//! temporary file is overwritten by the next replacement).

use std::io::Write;
use std::path::Path;

/// Replaces `dir/name` with `bytes`, durably (see the module documentation).
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}
