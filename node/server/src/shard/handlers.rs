//! The request handlers of a shard: metadata, produce, fetch (long poll), list-offsets,
//! find-record and DeleteRecords, each on the partition the request resolved to, and the
//! mapping of the core's errors to wire errors (`ErrorCode::from`, plus the partition named in
//! the message).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::channels::local_channel;
use spate_core::{
    AppendError, DeleteRecordsError, FetchError, FetchPlan, FetchWaitError, ReadDone,
};
use spate_format::{batches, Offset};
use spate_proto::{
    DeleteRecordsRequest, DeleteRecordsResponse, Durability, ErrorCode, ErrorDetail, ErrorResponse,
    FetchRequest, FetchResponse, FindRecordRequest, FindRecordResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetSpec, PartitionId,
    PartitionMetadata, ProduceRequest, ProduceResponse, ReadEpochs, RecordTarget, Setting, ShardId,
    ShardInfo, TopicMetadata, DELETE_RECORDS_TO_HIGH_WATERMARK,
};

use super::{effective, error, Shard};

/// A parked fetch whose log has not woken it this long after its wait ended is answered by
/// the shell's own timer (the log's deadline follows the wall clock, which can step back).
const FETCH_DEADLINE_GRACE: Duration = Duration::from_millis(50);

/// Bytes a timestamp search reads per step: large enough that a partition is scanned in few
/// reads, small enough that one step never holds much memory.
const FIND_STEP_BYTES: u32 = 1 << 20;
use crate::metadata::{ClusterRoutes, Serving, Topic};
use crate::partition::{now, DeleteRecordsResult, Partition, ProduceResult};

/// The answer for a partition this shard should serve but could not open.
fn could_not_open(topic: &str, partition: PartitionId) -> ErrorResponse {
    error(
        ErrorCode::Storage,
        format!("partition {topic}-{partition} could not be opened on this node; see its log"),
    )
}

impl Shard {
    pub(super) fn describe(
        &self,
        request: &MetadataRequest,
    ) -> Result<MetadataResponse, ErrorResponse> {
        let names = &request.topics;
        let metadata = self.metadata();
        // In a cluster, every member's shards (a topic's `shards` index them).
        let endpoints = match &metadata.cluster {
            Some(routes) => &routes.shards,
            None => &self.endpoints,
        };
        let shards = endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| ShardInfo {
                shard: ShardId(u16::try_from(index).unwrap_or(u16::MAX)),
                endpoint: endpoint.clone(),
            })
            .collect();
        let selected: Vec<&String> = if names.is_empty() {
            metadata.topics.keys().collect()
        } else {
            names.iter().collect()
        };
        let mut topics = Vec::with_capacity(selected.len());
        for name in selected {
            let topic = metadata
                .topics
                .get(name)
                .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("unknown topic {name:?}")))?;
            let resolve = |setting, default: Option<u64>| match effective(setting, default) {
                Some(value) => Setting::Value(value),
                None => Setting::Unlimited,
            };
            topics.push(TopicMetadata {
                replicas: Vec::new(),
                name: name.clone(),
                retention_ms: resolve(topic.retention_ms, Some(self.config.retention_ms)),
                retention_bytes: resolve(topic.retention_bytes, self.config.retention_bytes),
                segment_bytes: resolve(
                    topic.segment_bytes,
                    Some(u64::from(self.config.segment_bytes)),
                ),
                min_insync_replicas: if request.settings || request.placement {
                    Setting::Value(u64::from(topic.min_insync()))
                } else {
                    Setting::Default
                },
                partitions: topic
                    .shards
                    .iter()
                    .enumerate()
                    .map(|(partition, shard)| PartitionMetadata {
                        partition: PartitionId(u32::try_from(partition).unwrap_or(u32::MAX)),
                        shard: *shard,
                    })
                    .collect(),
            });
        }
        // In a cluster, placement when asked (a single node has none to tell).
        #[cfg(feature = "cluster")]
        let members = match (&metadata.cluster, self.cluster.query()) {
            (Some(_), Some(query)) if request.placement => {
                let map = query.map.borrow();
                for topic in &mut topics {
                    topic.replicas =
                        crate::assignment::placement_of(&map, &topic.name, topic.partitions.len());
                }
                Some(crate::assignment::member_addresses(&map))
            }
            _ => None,
        };
        #[cfg(not(feature = "cluster"))]
        let members = None;
        Ok(MetadataResponse {
            racks: request.racks && members.is_some(),
            members,
            shards,
            topics,
            // Placement is carried after the settings (asking for it asks for them).
            settings: request.settings || request.placement,
        })
    }

    /// The partition, if this shard owns it; otherwise the error to answer with.
    pub(crate) fn owned(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<Rc<Partition>, ErrorResponse> {
        let metadata = self.metadata();
        let owner = metadata
            .topics
            .get(topic)
            .ok_or_else(|| error(ErrorCode::UnknownTopic, format!("unknown topic {topic:?}")))?
            .shards
            .get(partition.0 as usize)
            .copied()
            .ok_or_else(|| {
                error(
                    ErrorCode::UnknownPartition,
                    format!("topic {topic:?} has no partition {partition}"),
                )
            })?;
        if let Some(routes) = &metadata.cluster {
            return self.replica(routes, topic, partition, owner);
        }
        if owner != self.id {
            let endpoint = self
                .endpoints
                .get(usize::from(owner.0))
                .cloned()
                .unwrap_or_default();
            return Err(error(
                ErrorCode::NotOwner,
                format!("partition {topic}-{partition} is on shard {owner} at {endpoint}"),
            )
            .with_detail(ErrorDetail::NotOwner {
                shard: owner,
                endpoint,
            }));
        }
        self.opened(topic, partition)
    }

    /// The open partition this shard owns, or why it is not open (its recovery failed).
    fn opened(&self, topic: &str, partition: PartitionId) -> Result<Rc<Partition>, ErrorResponse> {
        self.partitions
            .borrow()
            .get(topic, partition.0)
            .cloned()
            .ok_or_else(|| could_not_open(topic, partition))
    }

    /// In a cluster: the partition a follower's replica request names, if this shard holds
    /// it and this node leads its current epoch (whether or not it serves clients yet).
    pub(crate) fn led(
        &self,
        routes: &ClusterRoutes,
        topic: &str,
        partition: PartitionId,
    ) -> Result<Rc<Partition>, ErrorResponse> {
        match routes.replica(topic, partition.0) {
            Some(local) if local.shard == self.id && local.leads.is_some() => {
                self.opened(topic, partition)
            }
            Some(local) if local.leads.is_some() => Err(error(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "partition {topic}-{partition} is led from this node's shard {}",
                    local.shard
                ),
            )),
            Some(_) => Err(error(
                ErrorCode::NotLeaderOrFollower,
                format!("this node does not lead partition {topic}-{partition}"),
            )),
            None => Err(error(
                ErrorCode::NotLeaderOrFollower,
                format!("this node holds no replica of partition {topic}-{partition}"),
            )),
        }
    }

    /// In a cluster: the partition if this shard holds its replica and leads it; otherwise
    /// where it is led (`owner`, an index into the members' shards) or why it is not served.
    fn replica(
        &self,
        routes: &ClusterRoutes,
        topic: &str,
        partition: PartitionId,
        owner: ShardId,
    ) -> Result<Rc<Partition>, ErrorResponse> {
        let not_owner = |shard: ShardId, endpoint: String| {
            error(
                ErrorCode::NotOwner,
                format!("partition {topic}-{partition} is served by the shard at {endpoint}"),
            )
            .with_detail(ErrorDetail::NotOwner { shard, endpoint })
        };
        match routes.replica(topic, partition.0) {
            Some(local) if local.shard == self.id => match &local.serving {
                Serving::Leader { epoch } => {
                    // Led here by the map but not open: refused or failed (`Storage`, the
                    // log says why), or not opened yet (a new topic's replicas open one after
                    // the other; clients try again).
                    let opened = self.partitions.borrow().get(topic, partition.0).cloned();
                    let Some(opened) = opened else {
                        let key = spate_core::PartitionKey {
                            topic: topic.to_owned(),
                            partition: partition.0,
                        };
                        if self.not_opened.borrow().contains(&key) {
                            return Err(could_not_open(topic, partition));
                        }
                        return Err(error(
                            ErrorCode::NotLeaderOrFollower,
                            format!(
                                "partition {topic}-{partition}: this node leads it and is \
                                 still opening it"
                            ),
                        ));
                    };
                    if opened.leading_epoch() != Some(*epoch) {
                        return Err(error(
                            ErrorCode::NotLeaderOrFollower,
                            format!(
                                "partition {topic}-{partition}: this node is taking the \
                                 leadership of epoch {epoch}"
                            ),
                        ));
                    }
                    Ok(opened)
                }
                Serving::NotLeader(reason) => Err(error(
                    ErrorCode::NotLeaderOrFollower,
                    format!("partition {topic}-{partition}: {reason}"),
                )),
            },
            // This node holds it on another shard: there if it leads it here.
            Some(local) if matches!(local.serving, Serving::Leader { .. }) => {
                let endpoint = self
                    .endpoints
                    .get(usize::from(local.shard.0))
                    .cloned()
                    .unwrap_or_default();
                Err(not_owner(
                    routes.global(local.shard).unwrap_or(owner),
                    endpoint,
                ))
            }
            // Led elsewhere (or by nobody): the leader's shard, if there is one.
            Some(_) | None => match routes.shards.get(usize::from(owner.0)) {
                Some(endpoint) => Err(not_owner(owner, endpoint.clone())),
                None => Err(error(
                    ErrorCode::NotLeaderOrFollower,
                    format!(
                        "partition {topic}-{partition} has no leader this node can route to \
                         (being created, or every in-sync replica is gone)"
                    ),
                )),
            },
        }
    }

    /// Appends now (so frames of one connection keep their order); the answer is immediate
    /// for `none`, or comes when the watermark of the requested level passes the batch.
    #[allow(clippy::type_complexity)]
    pub(crate) fn produce(
        &self,
        partition: &Partition,
        request: &ProduceRequest,
    ) -> Result<Result<ProduceResponse, local_channel::LocalReceiver<ProduceResult>>, ErrorResponse>
    {
        let key = &partition.key;
        if partition.is_closing() {
            // Closed (deleted, moved, shutting down) while this request waited for room.
            return Err(error(ErrorCode::ShuttingDown, "the partition closed"));
        }
        self.still_leads(partition)?;
        let fsync = request.durability == Durability::Fsync;
        if fsync {
            let min_insync = self
                .metadata()
                .topics
                .get(&key.topic)
                .map_or(1, Topic::min_insync);
            partition.check_min_insync(min_insync)?;
        }
        let appended = partition.with_log(|log| {
            let ticket = log.handle_append(now(), &request.batch, request.durability)?;
            Ok::<_, AppendError>((ticket, log.log_start()))
        });
        let (ticket, log_start) = appended.map_err(|refused| {
            error(
                ErrorCode::from(&refused),
                format!("partition {}-{}: {refused}", key.topic, key.partition),
            )
        })?;
        if !ticket.duplicate {
            partition.count_append(
                ticket.last_offset.0 - ticket.base_offset.0 + 1,
                request.batch.len() as u64,
            );
        }
        let response = ProduceResponse {
            base_offset: ticket.base_offset.0,
            append_time: ticket.append_time.0,
            log_start_offset: log_start.0,
        };
        partition.ring();
        match ticket.waiter {
            None => Ok(Ok(response)),
            Some(waiter) => Ok(Err(partition.wait_ack(waiter, response, fsync))),
        }
    }

    /// In a cluster, a write goes only into a replica that leads (its leadership may have gone
    /// while the request waited for room).
    fn still_leads(&self, partition: &Partition) -> Result<(), ErrorResponse> {
        if self.metadata().cluster.is_some() && partition.leading_epoch().is_none() {
            let key = &partition.key;
            return Err(error(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "partition {}-{}: this node no longer leads it",
                    key.topic, key.partition
                ),
            ));
        }
        Ok(())
    }

    /// Moves the log start (DeleteRecords). The answer is immediate if the log already starts
    /// there, or comes once the move is durable (the partition's `LogStartMoved`).
    #[allow(clippy::type_complexity)]
    pub(crate) fn delete_records(
        &self,
        partition: &Partition,
        request: &DeleteRecordsRequest,
    ) -> Result<
        Result<DeleteRecordsResponse, local_channel::LocalReceiver<DeleteRecordsResult>>,
        ErrorResponse,
    > {
        let key = &partition.key;
        self.still_leads(partition)?;
        let moved = partition.with_log(|log| {
            let offset = if request.offset == DELETE_RECORDS_TO_HIGH_WATERMARK {
                log.high_watermark()
            } else {
                Offset(request.offset)
            };
            log.handle_delete_records(offset)
                .map(|waiter| (waiter, log.log_start()))
        });
        let (waiter, log_start) = moved.map_err(|refused| {
            let answer = error(
                ErrorCode::from(&refused),
                format!(
                    "cannot delete the records of {}-{} before {}: {refused}",
                    key.topic, key.partition, request.offset
                ),
            );
            match refused {
                DeleteRecordsError::AboveHighWatermark { high_watermark, .. } => answer
                    .with_detail(ErrorDetail::OffsetRange {
                        log_start_offset: partition.log().log_start().0,
                        high_watermark: high_watermark.0,
                    }),
                DeleteRecordsError::Fenced(_) => answer,
            }
        })?;
        let Some(waiter) = waiter else {
            return Ok(Ok(DeleteRecordsResponse {
                log_start_offset: log_start.0,
            }));
        };
        partition.ring();
        Ok(Err(partition.wait_start(waiter)))
    }

    /// A fetch: answered at once when it finds at least `min_bytes` (or `max_wait_ms` is 0),
    /// otherwise parked on the log until the high watermark moves or the wait is over.
    pub(super) async fn fetch(
        &self,
        partition: &Rc<Partition>,
        request: &FetchRequest,
    ) -> Result<FetchResponse, ErrorResponse> {
        partition.check_read_epoch(request.epochs)?;
        let started = Instant::now();
        let max_wait = Duration::from_millis(u64::from(request.max_wait_ms));
        let offset = Offset(request.offset);
        loop {
            if partition.is_stopped() {
                return Err(error(ErrorCode::ShuttingDown, "the partition closed"));
            }
            let plan = partition.with_log(|log| {
                log.handle_fetch(offset, request.max_bytes)
                    .map(|plan| (plan, log.high_watermark(), log.log_start()))
            });
            let (plan, high_watermark, log_start) = plan.map_err(|refused| {
                let answer = error(ErrorCode::from(&refused), refused.to_string());
                match refused {
                    FetchError::OutOfRange {
                        log_start,
                        high_watermark,
                        ..
                    } => answer.with_detail(ErrorDetail::OffsetRange {
                        log_start_offset: log_start.0,
                        high_watermark: high_watermark.0,
                    }),
                    FetchError::Corrupt { .. } => answer,
                }
            })?;
            let records = self.fetch_records(partition, plan).await?;
            let (records, epochs) = partition.read_boundaries(request.epochs, records, offset);
            let waited = started.elapsed();
            let answer = FetchResponse {
                high_watermark: high_watermark.0,
                log_start_offset: log_start.0,
                records,
                epochs,
            };
            if answer.records.len() >= request.min_bytes.max(1) as usize
                || waited >= max_wait
                || self.shutdown.load(Ordering::Relaxed)
            {
                partition.count_fetch(answer.records.len() as u64);
                return Ok(answer);
            }
            // Park until the high watermark moves or the wait is over (the log decides).
            let remaining = max_wait.saturating_sub(waited);
            let remaining_ms = u32::try_from(remaining.as_millis())
                .unwrap_or(u32::MAX)
                .max(1);
            let parked = partition
                .with_log(|log| log.handle_fetch_wait(now(), offset, high_watermark, remaining_ms));
            let ticket = match parked {
                Ok(ticket) => ticket,
                // Nothing more will become visible: what was found is the answer.
                Err(FetchWaitError::Fenced) => {
                    partition.count_fetch(answer.records.len() as u64);
                    return Ok(answer);
                }
                Err(refused) => {
                    return Err(error(
                        ErrorCode::from(&refused),
                        format!(
                            "partition {}-{}: {refused}",
                            partition.key.topic, partition.key.partition
                        ),
                    ))
                }
            };
            let woken = partition.wait_fetch(ticket);
            // The log's deadline follows the wall clock; this one does not (a clock stepped
            // back must not hold a long poll past its wait).
            let in_time = future::or(async { woken.recv().await.is_some() }, async {
                glommio::timer::sleep(remaining + FETCH_DEADLINE_GRACE).await;
                false
            })
            .await;
            if !in_time {
                partition.cancel_fetch(ticket);
            }
        }
    }

    /// The records a fetch plan names: at hand, or read from the segment file (damage found
    /// there fences the partition before the error is answered). A read that ends inside the
    /// batch holding the offset is followed by one that covers it (the log says so once).
    pub(crate) async fn fetch_records(
        &self,
        partition: &Rc<Partition>,
        plan: FetchPlan,
    ) -> Result<Bytes, ErrorResponse> {
        let mut read = match plan {
            FetchPlan::AtEnd => return Ok(Bytes::new()),
            FetchPlan::Ready(bytes) => return Ok(bytes),
            FetchPlan::Read(read) => read,
        };
        let reader = partition.storage.borrow().reader();
        let refused = loop {
            let data = reader
                .read(read.file, read.position, read.len)
                .await
                .map_err(|storage| error(ErrorCode::Storage, storage.to_string()))?;
            let keep_max = partition.read_ahead_room();
            match partition.with_log(|log| log.handle_read(now(), &read, &data, keep_max)) {
                Ok(ReadDone::Answer(bytes)) => return Ok(bytes),
                Ok(ReadDone::More(more)) => read = more,
                Err(refused) => break refused,
            }
        };
        if let FetchError::Corrupt {
            segment,
            position,
            detail,
        } = &refused
        {
            let reason = spate_core::FenceReason::Corruption {
                segment: segment.clone(),
                position: *position,
                detail: detail.clone(),
            };
            self.fence_corrupt(partition, reason).await;
        }
        Err(error(ErrorCode::from(&refused), refused.to_string()))
    }

    pub(super) async fn list_offsets(
        &self,
        partition: &Rc<Partition>,
        request: ListOffsetsRequest,
    ) -> Result<ListOffsetsResponse, ErrorResponse> {
        partition.check_read_epoch(request.epochs)?;
        let (log_start, high_watermark, scan_from) = {
            let log = partition.log();
            let start = match request.spec {
                OffsetSpec::Timestamp(timestamp) => log.timestamp_scan_start(timestamp),
                _ => None,
            };
            (log.log_start(), log.high_watermark(), start)
        };
        let offset = match request.spec {
            OffsetSpec::EpochEnd(epoch) => {
                let (end, leader_epoch) = partition.epoch_end(epoch).unzip();
                return Ok(ListOffsetsResponse {
                    offset: end.unwrap_or(high_watermark.0),
                    log_start_offset: log_start.0,
                    high_watermark: high_watermark.0,
                    leader_epoch,
                });
            }
            OffsetSpec::Earliest => log_start,
            OffsetSpec::Latest => high_watermark,
            OffsetSpec::Timestamp(timestamp) => match scan_from {
                None => high_watermark,
                Some(from) => self
                    .first_record_at_or_after(
                        partition,
                        &request.topic,
                        request.partition,
                        from,
                        timestamp,
                        high_watermark,
                    )
                    .await?
                    .map_or(high_watermark, |(offset, _)| offset),
            },
        };
        let leader_epoch = request
            .epochs
            .answer
            .then(|| partition.epoch_of(offset, high_watermark))
            .flatten();
        Ok(ListOffsetsResponse {
            offset: offset.0,
            log_start_offset: log_start.0,
            high_watermark: high_watermark.0,
            leader_epoch,
        })
    }

    /// The first durable record at or after `from` whose timestamp is at least `timestamp`,
    /// with its timestamp, scanning batches up to the high watermark; `None` if there is none.
    async fn first_record_at_or_after(
        &self,
        target: &Rc<Partition>,
        topic: &str,
        partition: PartitionId,
        from: Offset,
        timestamp: i64,
        high_watermark: Offset,
    ) -> Result<Option<(Offset, i64)>, ErrorResponse> {
        let mut offset = from;
        loop {
            if offset >= high_watermark {
                return Ok(None);
            }
            let before = offset;
            let request = FetchRequest {
                topic: topic.to_owned(),
                partition,
                offset: offset.0,
                max_bytes: FIND_STEP_BYTES,
                max_wait_ms: 0,
                min_bytes: 0,
                epochs: ReadEpochs::default(),
            };
            let fetched = match self.fetch(target, &request).await {
                Ok(fetched) => fetched,
                // The log start moved past the scan meanwhile (retention, DeleteRecords): go
                // on from it.
                Err(ErrorResponse {
                    code: ErrorCode::OffsetOutOfRange,
                    detail:
                        ErrorDetail::OffsetRange {
                            log_start_offset, ..
                        },
                    ..
                }) if log_start_offset > offset.0 => {
                    offset = Offset(log_start_offset);
                    continue;
                }
                Err(error) => return Err(error),
            };
            for batch in batches(&fetched.records) {
                let Ok(batch) = batch else { break };
                if batch.max_timestamp() >= timestamp && batch.last_offset() >= offset {
                    // The first record of the batch at or after the asked time (a compressed
                    // batch is decompressed, bounded, to find it; it was validated when
                    // produced, so this does not fail, and if it did the batch's start and
                    // newest timestamp are the answer).
                    let Ok(section) = batch.records_section() else {
                        return Ok(Some((
                            batch.base_offset().max(offset),
                            batch.max_timestamp(),
                        )));
                    };
                    let found = batch
                        .records_in(&section)
                        .flatten()
                        .map(|record| {
                            (
                                Offset(batch.base_offset().0 + u64::from(record.offset_delta)),
                                record.timestamp,
                            )
                        })
                        .find(|(at, time)| *time >= timestamp && *at >= offset);
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                offset = batch.next_offset();
            }
            if offset == before {
                // Nothing more to read (or nothing readable): never loop without progress.
                return Ok(None);
            }
        }
    }

    /// A record by timestamp with its offset and time (Kafka's ListOffsets by time and by
    /// newest time): the log says where to start (and, for the newest, which time); the scan
    /// finds the first record.
    pub(super) async fn find_record(
        &self,
        partition: &Rc<Partition>,
        request: FindRecordRequest,
    ) -> Result<FindRecordResponse, ErrorResponse> {
        partition.check_read_epoch(request.epochs)?;
        let (log_start, high_watermark, target) = {
            let log = partition.log();
            let target = match request.target {
                RecordTarget::Newest => log.max_timestamp_scan_start(),
                RecordTarget::AtOrAfter(timestamp) => log
                    .timestamp_scan_start(timestamp)
                    .map(|from| (timestamp, from)),
            };
            (log.log_start(), log.high_watermark(), target)
        };
        let found = match target {
            None => None,
            Some((timestamp, from)) => {
                self.first_record_at_or_after(
                    partition,
                    &request.topic,
                    request.partition,
                    from,
                    timestamp,
                    high_watermark,
                )
                .await?
            }
        };
        let (offset, timestamp) = found.map_or((high_watermark.0, -1), |(offset, timestamp)| {
            (offset.0, timestamp)
        });
        let leader_epoch = request
            .epochs
            .answer
            .then(|| partition.epoch_of(Offset(offset), high_watermark))
            .flatten();
        Ok(FindRecordResponse {
            offset,
            timestamp,
            log_start_offset: log_start.0,
            high_watermark: high_watermark.0,
            leader_epoch,
        })
    }
}
