//! `Engine`: the node's storage engine without the network, for `spate-bench storage`. One
//! shard on the calling glommio executor owns every partition of one topic and appends
//! through exactly the functions a produce frame goes through (`Shard::within_budget`,
//! `Shard::owned`, `Shard::within_room`, `Shard::produce`: validation, `PartitionLog`,
//! `DmaStorage`, group commit, acknowledgements by ticket), minus the TCP connection and the
//! frame decoding.

use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use spate_proto::{
    Durability, ErrorCode, ErrorResponse, PartitionId, ProduceRequest, ProduceResponse, Setting,
    ShardId,
};

use crate::config::NodeConfig;
use crate::coordinator::local_client;
use crate::metadata::{Metadata, Topic};
use crate::shard::Shard;

#[derive(Debug)]
pub struct Engine {
    shard: Rc<Shard>,
    topic: String,
}

impl Engine {
    /// Opens (recovering if present) `partitions` partitions of `topic` under
    /// `config.data_dir`. Must run inside a glommio executor, which then owns them.
    pub async fn open(
        config: NodeConfig,
        topic: &str,
        partitions: u32,
    ) -> Result<Engine, std::io::Error> {
        crate::storage::probe_polled_io(&config.data_dir, 0).await?;
        let mut metadata = Metadata::default();
        metadata.topics.insert(
            topic.to_owned(),
            Topic {
                retention_ms: Setting::Unlimited,
                retention_bytes: Setting::Unlimited,
                segment_bytes: Setting::Default,
                min_insync_replicas: Setting::Default,
                shards: vec![ShardId(0); partitions as usize],
            },
        );
        // No coordinator runs: the engine takes no admin requests.
        let (admin, _queue) = local_client();
        let shard = Rc::new(Shard::new(
            ShardId(0),
            Rc::new(config),
            Vec::new(),
            metadata.clone(),
            Arc::new(AtomicBool::new(false)),
            admin,
        ));
        shard.apply_metadata(metadata).await;
        Ok(Engine {
            shard,
            topic: topic.to_owned(),
        })
    }

    /// Appends one batch and waits for its acknowledgement at `durability`. Waits first, as a
    /// connection does, while the shard's unsynced bytes are over budget or the partition's
    /// write buffer is full.
    pub async fn append(
        &self,
        partition: u32,
        durability: Durability,
        batch: Bytes,
    ) -> Result<ProduceResponse, ErrorResponse> {
        // A `none` append completes without awaiting anything: let the driver and the other
        // appenders run (a connection yields the same way when it reads its socket).
        futures_lite::future::yield_now().await;
        self.shard.within_budget().await;
        let request = ProduceRequest {
            topic: self.topic.clone(),
            partition: PartitionId(partition),
            durability,
            batch,
        };
        let partition = self.shard.owned(&request.topic, request.partition)?;
        self.shard
            .within_room(&partition, request.batch.len() as u64)
            .await;
        match self.shard.produce(&partition, &request)? {
            Ok(response) => Ok(response),
            Err(receiver) => receiver.recv().await.unwrap_or_else(|| {
                Err(ErrorResponse::new(
                    ErrorCode::ShuttingDown,
                    "the partition closed",
                ))
            }),
        }
    }

    /// Makes everything durable and closes the partitions.
    pub async fn close(&self) {
        self.shard.close_all().await;
    }
}
