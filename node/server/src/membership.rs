//! What a node tells about its cluster (`DescribeCluster`, docs/protocol.md): a single node
//! (no `--etcd`) describes itself, the one member of a cluster without a name; a member of a
//! cluster asks etcd, on the cluster session's thread (never on a shard's executor), for the
//! registered members and the elected controller.

use std::sync::Arc;

use spate_proto::{ClusterMember, DescribeClusterResponse, ErrorResponse};

/// What a shard knows for `DescribeCluster`, shared by the node's shards.
#[derive(Debug, Default)]
pub struct ClusterView {
    node: Option<u32>,
    storage_id: u64,
    storage: String,
    since_ms: u64,
    #[cfg(feature = "cluster")]
    query: std::sync::OnceLock<crate::cluster::ClusterQuery>,
    /// Which shard holds each partition directory open (a replica moved to another shard of
    /// this node by a reassignment opens there only once the old shard closed it).
    held: std::sync::Mutex<std::collections::HashMap<(String, u32), u16>>,
}

impl ClusterView {
    /// The view of a node with id `node` (if any) whose data directory has `storage_id`,
    /// started at `since_ms` (Unix time).
    pub fn new(node: Option<u32>, storage_id: u64, since_ms: u64) -> Self {
        ClusterView {
            node,
            storage_id,
            storage: format!("{storage_id:016x}"),
            since_ms,
            #[cfg(feature = "cluster")]
            query: std::sync::OnceLock::new(),
            held: std::sync::Mutex::default(),
        }
    }

    /// Takes partition `partition` of `topic` for `shard`: `false` while another shard holds
    /// its directory.
    pub fn hold(&self, topic: &str, partition: u32, shard: u16) -> bool {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.get(&(topic.to_owned(), partition)) {
            Some(holder) => *holder == shard,
            None => {
                held.insert((topic.to_owned(), partition), shard);
                true
            }
        }
    }

    /// Gives partition `partition` of `topic` up, if `shard` holds it.
    pub fn release(&self, topic: &str, partition: u32, shard: u16) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (topic.to_owned(), partition);
        if held.get(&key) == Some(&shard) {
            held.remove(&key);
        }
    }

    /// The node's storage id (its data directory's, docs/format/identity.md).
    pub fn storage_id(&self) -> u64 {
        self.storage_id
    }

    /// From now on, answers come from the cluster (etcd) through `query`.
    #[cfg(feature = "cluster")]
    pub fn attach(&self, query: crate::cluster::ClusterQuery) {
        let _ = self.query.set(query);
    }

    /// The node's way to the cluster (etcd), once it registered.
    #[cfg(feature = "cluster")]
    pub fn query(&self) -> Option<&crate::cluster::ClusterQuery> {
        self.query.get()
    }

    /// The etcd revision of this node's newest registration (0 before it registered, and
    /// for a single node): it orders this node's fetch sessions across its restarts.
    pub fn incarnation(&self) -> u64 {
        #[cfg(feature = "cluster")]
        if let Some(query) = self.query.get() {
            return query.incarnation();
        }
        0
    }

    /// The answer to `DescribeCluster`; `shards` are this node's shard addresses.
    pub async fn describe(
        self: Arc<Self>,
        shards: Vec<String>,
    ) -> Result<DescribeClusterResponse, ErrorResponse> {
        #[cfg(feature = "cluster")]
        if let Some(query) = self.query.get() {
            return query.describe().await.map_err(|detail| {
                ErrorResponse::new(
                    spate_proto::ErrorCode::Unavailable,
                    format!("cannot read the cluster's members from etcd: {detail}"),
                )
            });
        }
        Ok(DescribeClusterResponse {
            cluster: String::new(),
            node: self.node,
            controller: None,
            members: vec![ClusterMember {
                node: self.node.unwrap_or(0),
                session: String::new(),
                storage: self.storage.clone(),
                since_ms: self.since_ms,
                shards,
                rack: String::new(),
            }],
            partitions: None,
            moves: None,
            racks: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition directory is held by one shard at a time: another shard gets it only once
    /// the holder gave it up (a replica moved between shards of a node).
    #[test]
    fn one_shard_at_a_time_holds_a_partition_directory() {
        let view = ClusterView::new(Some(1), 7, 0);
        assert!(view.hold("t", 0, 0));
        assert!(view.hold("t", 0, 0), "the holder again");
        assert!(!view.hold("t", 0, 1));
        assert!(view.hold("t", 1, 1), "another partition");
        view.release("t", 0, 1);
        assert!(!view.hold("t", 0, 1), "only the holder gives it up");
        view.release("t", 0, 0);
        assert!(view.hold("t", 0, 1));
    }
}
