//! The data directory's identity (`identity`, docs/format/identity.md): its storage id, made
//! at its first start, and the node id it is served under once one was given. A data
//! directory is never served under another node id; a cluster tells a replaced disk (a new
//! storage id) from the one that was in sync (docs/cluster.md).

use std::io::Read;
use std::path::Path;

use spate_format::identity::{decode_identity, encode_identity, Identity, IdentityError};
use thiserror::Error;

/// The file's name in the data directory.
pub const FILE_NAME: &str = "identity";

#[derive(Debug, Error)]
pub enum IdentityLoadError {
    #[error("cannot read or write the identity file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the identity file {path} is damaged ({source}); if the data directory is otherwise \
         sound, remove the file: the directory then gets a new storage id (a cluster treats \
         it as a new disk, which catches up from the other replicas)"
    )]
    Damaged { path: String, source: IdentityError },
    #[error(
        "the data directory {dir} belongs to node {stored}, not node {given}: a data \
         directory is never served under another node id (start with --node-id {stored}, \
         or give node {given} a data directory of its own)"
    )]
    OtherNode {
        dir: String,
        stored: u32,
        given: u32,
    },
}

/// A random 128-bit id as 32 hex digits: topic ids, the cluster's id.
pub fn random_id_hex128() -> std::io::Result<String> {
    Ok(format!("{:016x}{:016x}", random_id()?, random_id()?))
}

/// A random 64-bit id (never 0): storage ids, cluster sessions.
pub fn random_id() -> std::io::Result<u64> {
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    loop {
        let mut bytes = [0u8; 8];
        urandom.read_exact(&mut bytes)?;
        let id = u64::from_le_bytes(bytes);
        if id != 0 {
            return Ok(id);
        }
    }
}

/// The directory's identity, made on its first start and checked against `node_id` on every
/// start: a directory that has none yet gets a new storage id; one that has no node id yet
/// takes `node_id`; one that has another refuses. Written durably before the call returns.
pub fn load_or_create(dir: &Path, node_id: Option<u32>) -> Result<Identity, IdentityLoadError> {
    let stored = load(dir)?;
    let identity = match (stored, node_id) {
        (Some(stored), Some(given)) if stored.node_id.is_some_and(|id| id != given) => {
            return Err(IdentityLoadError::OtherNode {
                dir: dir.display().to_string(),
                stored: stored.node_id.unwrap_or_default(),
                given,
            });
        }
        (Some(stored), given) if stored.node_id.is_some() || given.is_none() => return Ok(stored),
        (Some(stored), given) => Identity {
            node_id: given,
            ..stored
        },
        (None, given) => Identity {
            storage_id: random_id().map_err(|source| IdentityLoadError::Io {
                path: dir.join(FILE_NAME).display().to_string(),
                source,
            })?,
            node_id: given,
            lease_id: None,
        },
    };
    store(dir, identity)?;
    Ok(identity)
}

/// The directory's identity as stored, without changing anything; `None` before its first
/// start with identities.
pub fn load(dir: &Path) -> Result<Option<Identity>, IdentityLoadError> {
    let path = dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => {
            decode_identity(&bytes)
                .map(Some)
                .map_err(|source| IdentityLoadError::Damaged {
                    path: path.display().to_string(),
                    source,
                })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityLoadError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Replaces the directory's identity file (durably) with `identity`.
pub fn store(dir: &Path, identity: Identity) -> Result<(), IdentityLoadError> {
    crate::durable::replace(dir, FILE_NAME, &encode_identity(identity)).map_err(|source| {
        IdentityLoadError::Io {
            path: dir.join(FILE_NAME).display().to_string(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_named(name: &str) -> std::path::PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/test-data/identity")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn made_once_then_kept_and_a_node_id_never_changes() {
        let dir = dir_named("kept");
        let first = load_or_create(&dir, None).unwrap();
        assert_eq!(first.node_id, None);
        assert_ne!(first.storage_id, 0);
        assert_eq!(load_or_create(&dir, None).unwrap(), first);
        // The first node id given is recorded; the storage id stays.
        let named = load_or_create(&dir, Some(4)).unwrap();
        assert_eq!(named.node_id, Some(4));
        assert_eq!(named.storage_id, first.storage_id);
        assert_eq!(load_or_create(&dir, Some(4)).unwrap(), named);
        assert_eq!(load_or_create(&dir, None).unwrap(), named);
        let refused = load_or_create(&dir, Some(5)).unwrap_err();
        assert!(matches!(
            refused,
            IdentityLoadError::OtherNode {
                stored: 4,
                given: 5,
                ..
            }
        ));
        assert!(refused.to_string().contains("--node-id 4"), "{refused}");
        assert_eq!(
            load_or_create(&dir, Some(4)).unwrap(),
            named,
            "nothing changed"
        );
        // Another directory is another disk.
        let other_dir = dir_named("other");
        let other = load_or_create(&other_dir, Some(4)).unwrap();
        assert_ne!(other.storage_id, named.storage_id);
    }

    #[test]
    fn a_damaged_file_refuses_the_start_and_says_what_to_do() {
        let dir = dir_named("damaged");
        load_or_create(&dir, Some(1)).unwrap();
        let path = dir.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = load_or_create(&dir, Some(1)).unwrap_err();
        assert!(matches!(error, IdentityLoadError::Damaged { .. }));
        assert!(error.to_string().contains("remove the file"), "{error}");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            load_or_create(&dir, Some(1)),
            Err(IdentityLoadError::Damaged { .. })
        ));
    }
}
