//! A shard's connections: accepting them (within the connection limit), reading frames
//! (bounded in flight, back-pressure while the shard is over its budget or a partition's
//! write buffer is full, stalled-frame and idle timeouts), decoding each frame once and
//! resolving its partition once, and writing the answers back in any order (each carries its
//! correlation id).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{future, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};
use spate_proto::{
    AlterTopicRequest, AutoCreateTopicRequest, CreateTopicRequest, DeleteTopicRequest,
    DescribePartitionResponse, ErrorCode, ErrorResponse, Frame, FrameDecoder, ReplicaFetchRequest,
    ReplicaProgressRequest, Request, Response, OFFSETS_TOPIC,
};

use super::groups::{self, GroupAnswer};
use super::{error, Shard};
use crate::connections::Registration;
use crate::inbound::Inbound;
use crate::partition::Partition;

type Pending = Pin<Box<dyn Future<Output = Response>>>;

/// Longest a connection waits for bytes before it checks its timeouts again (requests that
/// finish while it waits make it idle).
const TIMEOUT_CHECK: Duration = Duration::from_secs(1);

/// How long `accept` waits before it looks at the shutdown flag again: a stopping node
/// closes its listeners within this.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// Pause after a failed accept (out of descriptors and the like) instead of spinning.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// What ended a connection's wait for bytes.
enum Wake {
    Read(std::io::Result<usize>),
    Evicted,
    Timer,
}

/// Followers' replica fetches one connection may have waiting at this shard at once: a
/// follower's shard sends all its fetches from one leader shard over one connection, one
/// per replica it follows there, and each may be parked for its wait (they give their
/// in-flight slot back, so progress reports behind them are read at once). Past this, the
/// connection is not read until one is answered.
pub const REPLICA_FETCHES_PER_LINK_MAX: u32 = 16_384;

/// Followers' replica fetches one connection may have answered with records and not yet
/// written out: a fetch takes a slot before it reads its records and holds it until its
/// answer is queued, so the records read ahead of the connection's writer stay within this
/// many answers (each at most the fetch's `max_bytes`: 1 MiB from Spate's followers).
pub const REPLICA_ANSWERS_PER_LINK_MAX: u64 = 32;

/// A connection's bounds on the replica fetches it carries.
pub(crate) struct ReplicaLink {
    /// Fetches waiting (`REPLICA_FETCHES_PER_LINK_MAX`).
    fetches: Rc<Semaphore>,
    /// Answers holding records (`REPLICA_ANSWERS_PER_LINK_MAX`).
    pub(crate) answers: Rc<Semaphore>,
}

/// A parked answer, with what it holds until it is queued (a replica fetch's records slot).
type ParkedPending = Pin<Box<dyn Future<Output = (Response, Option<StaticPermit>)>>>;

/// A decoded request, with the partition it names when it names one (resolved once, at
/// arrival, and carried to the answer).
enum Resolved {
    Partition(Rc<Partition>, Request),
    Shard(Request),
}

/// What dispatching a frame produced: an answer now, or one to wait for.
enum Dispatched {
    Now(Response),
    Later(Pending),
    /// An answer that may wait for minutes (a JoinGroup or SyncGroup parked at its group's
    /// coordinator): it gives its in-flight slot back at once, so parked requests never stop
    /// a connection (a gateway's link, shared by its clients) from being read; the
    /// coordinator bounds them instead (`groups::PARKED_MAX`). A follower's `ReplicaFetch`
    /// parks so too, bounded per connection ([`ReplicaLink`]), its answer holding its
    /// records' slot.
    Parked(ParkedPending),
}

/// An answer that comes from `answer` (an async operation of the shard).
fn later<T: 'static>(
    api_key: u16,
    answer: impl Future<Output = Result<T, ErrorResponse>> + 'static,
    wrap: fn(T) -> Response,
) -> Dispatched {
    Dispatched::Later(Box::pin(async move {
        match answer.await {
            Ok(response) => wrap(response),
            Err(error) => Response::Error { api_key, error },
        }
    }))
}

/// An answer now, or one a partition sends once an acknowledgement is due (produce,
/// DeleteRecords); a closed channel means the partition closed.
#[allow(clippy::type_complexity)]
fn now_or_waited<T: 'static>(
    api_key: u16,
    outcome: Result<
        Result<T, local_channel::LocalReceiver<Result<T, ErrorResponse>>>,
        ErrorResponse,
    >,
    wrap: fn(T) -> Response,
) -> Dispatched {
    match outcome {
        Ok(Ok(response)) => Dispatched::Now(wrap(response)),
        Ok(Err(receiver)) => later(
            api_key,
            async move {
                receiver
                    .recv()
                    .await
                    .unwrap_or_else(|| Err(error(ErrorCode::ShuttingDown, "the partition closed")))
            },
            wrap,
        ),
        Err(error) => Dispatched::Now(Response::Error { api_key, error }),
    }
}

/// A replica's fetch session as the leader orders it: by the follower's incarnation (the etcd
/// revision of its newest registration: a follower that restarted or registered again is in
/// a newer one), then by the session's number (which the follower's process hands out in
/// order, whichever of its shards the replica is on — a replica moved to another shard of
/// its node, or a new fetcher after a cut, a start over or a lost link, is in a newer one).
/// Which connection a fetch came over does not matter.
fn fetch_session(incarnation: u64, session: u64) -> u128 {
    (u128::from(incarnation) << 64) | u128::from(session)
}

/// The refusal of a client's write, deletion or change of the internal offsets topic.
fn internal_topic() -> ErrorResponse {
    error(
        ErrorCode::InvalidRequest,
        format!("{OFFSETS_TOPIC} is internal: only the group coordinator writes it"),
    )
}

/// Fetched records at least this long are written to the connection as they are, after the
/// answer's header (a second write); shorter ones are copied behind it (one write).
const SHARED_ANSWER_BYTES_MIN: usize = 16 << 10;

/// An answer's frame as the connection's writer sends it: a head, the records after it and
/// what follows them (a fetch's epochs).
type AnswerFrame = (Bytes, Bytes, Bytes);

/// An answer's frame, counted in the shard's metrics by request and outcome.
fn answer_frame(response: &Response, correlation: u64) -> AnswerFrame {
    crate::metrics::with(|metrics| {
        let error = match response {
            Response::Error { error, .. } => Some(error.code),
            _ => None,
        };
        metrics.count_answer(response.api_key(), error);
    });
    match response {
        Response::Fetch(fetch) if fetch.records.len() >= SHARED_ANSWER_BYTES_MIN => {
            response.to_frame_parts(correlation)
        }
        _ => (response.to_frame(correlation), Bytes::new(), Bytes::new()),
    }
}

impl Shard {
    /// Accepts connections until shutdown.
    pub async fn accept(self: Rc<Self>, listener: TcpListener) {
        // The accepts run in a task of their own, polled only when one completes, and hand
        // each connection over through a channel. Two things rule out simpler shapes:
        // - an accept dropped by the shutdown timer after the kernel completed it would leave
        //   that connection open and never read (its client waits forever; seen in the
        //   cluster tests, where clients connect often), so one accept stays in flight;
        // - polling that one accept again at every shutdown check adds a clone of the task's
        //   waker to its source each time (glommio's `collect_rw` keeps every waker it is
        //   given until the accept completes): a listener that took no new connection for
        //   about 14 minutes overflowed the task's waker count, a panic that aborts the
        //   node.
        // At shutdown the acceptor is cancelled with its accept: a connection the kernel
        // completed in that instant is closed, as the listener is.
        let (handing, accepted_connections) =
            local_channel::new_bounded::<std::io::Result<TcpStream>>(1);
        let acceptor = glommio::spawn_local(async move {
            loop {
                let accepted = listener.accept().await.map_err(std::io::Error::from);
                if handing.send(accepted).await.is_err() {
                    return;
                }
            }
        });
        loop {
            let accepted = future::or(async { accepted_connections.recv().await }, async {
                glommio::timer::sleep(ACCEPT_POLL).await;
                None
            })
            .await;
            if self.shutdown.load(Ordering::Relaxed) {
                drop(accepted_connections);
                let _ = acceptor.cancel().await;
                return;
            }
            let stream = match accepted {
                None => continue,
                Some(Ok(stream)) => stream,
                Some(Err(error)) => {
                    tracing::warn!("accept failed: {error}");
                    glommio::timer::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            let max = self.config.max_connections as usize;
            // At the limit, the connection silent longest makes room (silent ones cannot
            // hold the port forever, and a reconnecting gateway always gets in).
            if self.connections.len() >= max && !self.connections.evict_longest_silent() {
                let refused = self.connections.refused();
                if refused > 0 {
                    tracing::warn!(
                        max = self.config.max_connections,
                        refused,
                        "connection limit reached and every connection is active; refusing connections"
                    );
                }
                crate::metrics::with(|metrics| metrics.connections_refused.add(1));
                let mut stream = stream;
                let refusal =
                    Response::error(0, ErrorCode::Busy, "connection limit reached").to_frame(0);
                let _ = stream.write_all(&refusal).await;
                continue;
            }
            let _ = stream.set_nodelay(true);
            crate::metrics::with(|metrics| metrics.connections_accepted.add(1));
            let registration = self.connections.register();
            let shard = self.clone();
            glommio::spawn_local(async move {
                let peer = stream
                    .peer_addr()
                    .map(|addr| addr.to_string())
                    .unwrap_or_default();
                if let Err(error) = shard.clone().serve(stream, &registration).await {
                    tracing::debug!(peer = %peer, "connection closed: {error}");
                }
                drop(registration);
            })
            .detach();
        }
    }

    /// Answers one frame, holding its in-flight permit until the answer is queued: at once
    /// (queued in order with the frames before it) or, for answers that wait (acknowledgements,
    /// long polls, admin requests), from a task of its own. `false` once the connection's
    /// writer is gone.
    async fn answer(
        self: &Rc<Self>,
        frame: &Frame,
        permit: StaticPermit,
        responses: &Rc<LocalSender<AnswerFrame>>,
        replica: &ReplicaLink,
    ) -> bool {
        let correlation = frame.head.correlation_id;
        let resolved = self.resolve(frame);
        let mut replica_fetch = None;
        match &resolved {
            Ok(Resolved::Partition(partition, Request::Produce(produce))) => {
                // Nothing awaits between this and the append below, so the room it found is
                // still there.
                self.within_room(partition, produce.batch.len() as u64)
                    .await;
            }
            Ok(Resolved::Partition(_, Request::ReplicaFetch(_))) => {
                let Ok(slot) = replica.fetches.clone().acquire_static_permit(1).await else {
                    return false;
                };
                replica_fetch = Some(slot);
            }
            _ => {}
        }
        let progress = matches!(
            &resolved,
            Ok(Resolved::Partition(_, Request::ReplicaProgress(_)))
        );
        match self.dispatch(frame.head.api_key, resolved, replica) {
            Dispatched::Now(response) if progress => {
                // Taken already; the follower does not wait for its answer, which is dropped
                // rather than hold the connection's reading up behind answers being written.
                drop(permit);
                match responses.try_send(answer_frame(&response, correlation)) {
                    Ok(()) | Err(glommio::GlommioError::WouldBlock(_)) => true,
                    Err(_) => false,
                }
            }
            Dispatched::Now(response) => {
                drop(permit);
                responses
                    .send(answer_frame(&response, correlation))
                    .await
                    .is_ok()
            }
            Dispatched::Later(pending) => {
                let responses = responses.clone();
                glommio::spawn_local(async move {
                    let response = pending.await;
                    let _ = responses.send(answer_frame(&response, correlation)).await;
                    drop(permit);
                })
                .detach();
                true
            }
            Dispatched::Parked(pending) => {
                drop(permit);
                // Weak: a connection that closes does not wait for its parked answers.
                let responses = Rc::downgrade(responses);
                glommio::spawn_local(async move {
                    let (response, records_slot) = pending.await;
                    if let Some(responses) = responses.upgrade() {
                        let _ = responses.send(answer_frame(&response, correlation)).await;
                    }
                    drop(records_slot);
                    drop(replica_fetch);
                })
                .detach();
                true
            }
        }
    }

    async fn serve(
        self: Rc<Self>,
        stream: TcpStream,
        registration: &Registration,
    ) -> std::io::Result<()> {
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let in_flight = self.config.frames_in_flight as usize;
        let (responses, outgoing) = local_channel::new_bounded::<AnswerFrame>(in_flight);
        let responses = Rc::new(responses);
        let writer_task = glommio::spawn_local(async move {
            'frames: while let Some((head, records, tail)) = outgoing.recv().await {
                for part in [head, records, tail] {
                    if !part.is_empty() && writer.write_all(&part).await.is_err() {
                        break 'frames;
                    }
                }
            }
            let _ = writer.close().await;
        });
        let permits = Rc::new(Semaphore::new(u64::from(self.config.frames_in_flight)));
        let replica = ReplicaLink {
            fetches: Rc::new(Semaphore::new(u64::from(REPLICA_FETCHES_PER_LINK_MAX))),
            answers: Rc::new(Semaphore::new(REPLICA_ANSWERS_PER_LINK_MAX)),
        };
        let decoder = FrameDecoder::new(self.config.frame_size_max);
        let mut inbound = Inbound::default();
        let mut last_read = Instant::now();
        let result = 'connection: loop {
            loop {
                let frame = match inbound.next_frame(&decoder) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(frame_error) => {
                        // The stream cannot be resynchronised: answer and close.
                        let answer = Response::frame_error(inbound.buffered(), &frame_error);
                        let _ = responses.send((answer, Bytes::new(), Bytes::new())).await;
                        break 'connection Ok(());
                    }
                };
                self.within_budget().await;
                let Ok(permit) = permits.clone().acquire_static_permit(1).await else {
                    break 'connection Ok(());
                };
                if !self.answer(&frame, permit, &responses, &replica).await {
                    break 'connection Ok(());
                }
            }
            if self.shutdown.load(Ordering::Relaxed) {
                break Ok(());
            }
            let in_flight = self.config.frames_in_flight
                - u32::try_from(permits.available()).unwrap_or(self.config.frames_in_flight);
            registration.in_flight.set(in_flight);
            let silent = last_read.elapsed();
            let frame_timeout = Duration::from_millis(self.config.frame_timeout_ms);
            let idle_timeout = Duration::from_millis(self.config.idle_timeout_ms);
            // A started frame must keep arriving; a connection with nothing to do goes away.
            let (limit, why) = if inbound.is_empty() {
                (idle_timeout, "idle")
            } else {
                (frame_timeout, "a started frame stalled")
            };
            if silent >= limit && (in_flight == 0 || !inbound.is_empty()) {
                tracing::debug!(
                    silent_ms = silent.as_millis(),
                    "closing a connection: {why}"
                );
                break Ok(());
            }
            let wait = limit
                .saturating_sub(silent)
                .clamp(Duration::from_millis(1), TIMEOUT_CHECK);
            let woke = future::or(
                async { Wake::Read(inbound.read(&mut reader, &decoder).await) },
                future::or(
                    async {
                        let _ = registration.closed.recv().await;
                        Wake::Evicted
                    },
                    async {
                        glommio::timer::sleep(wait).await;
                        Wake::Timer
                    },
                ),
            )
            .await;
            match woke {
                Wake::Read(Ok(0)) => break Ok(()),
                Wake::Read(Ok(_)) => {}
                Wake::Read(Err(error)) => break Err(error),
                Wake::Evicted => {
                    tracing::debug!("closing the connection silent longest to make room");
                    break Ok(());
                }
                Wake::Timer => continue,
            }
            last_read = Instant::now();
            registration.touch();
        };
        // Let the answers already on their way go out, then close.
        let _ = permits
            .acquire(u64::from(self.config.frames_in_flight))
            .await;
        drop(responses);
        writer_task.await;
        result
    }

    /// Decodes a frame (once) and finds the partition it names (once); the error to answer
    /// with otherwise.
    fn resolve(&self, frame: &Frame) -> Result<Resolved, ErrorResponse> {
        let request = Request::decode(frame)
            .map_err(|problem| error(ErrorCode::from(&problem), problem.to_string()))?;
        let (topic, partition) = match &request {
            Request::Produce(request) => (&request.topic, request.partition),
            Request::Fetch(request) => (&request.topic, request.partition),
            Request::ListOffsets(request) => (&request.topic, request.partition),
            Request::FindRecord(request) => (&request.topic, request.partition),
            Request::DeleteRecords(request) => (&request.topic, request.partition),
            Request::Group(request) => (&request.topic, request.partition),
            Request::DescribePartition(request) => (&request.topic, request.partition),
            Request::ReplicaFetch(ReplicaFetchRequest {
                topic, partition, ..
            })
            | Request::ReplicaProgress(ReplicaProgressRequest {
                topic, partition, ..
            }) => {
                // Followers reach the leader whether or not it serves clients yet.
                let metadata = self.metadata();
                let partition = match &metadata.cluster {
                    Some(routes) => self.led(routes, topic, *partition)?,
                    None => self.owned(topic, *partition)?,
                };
                return Ok(Resolved::Partition(partition, request));
            }
            Request::Metadata(_)
            | Request::DescribeCluster(_)
            | Request::CreateTopic(_)
            | Request::DeleteTopic(_)
            | Request::AllocateProducerIds(_)
            | Request::AutoCreateTopic(_)
            | Request::AlterTopic(_)
            | Request::MovePartitions(_) => return Ok(Resolved::Shard(request)),
        };
        if matches!(request, Request::Group(_)) && topic == OFFSETS_TOPIC {
            let metadata = self.metadata();
            if metadata.cluster.is_some() && !metadata.topics.contains_key(OFFSETS_TOPIC) {
                // The cluster's first group request: the topic is created (`dispatch`).
                return Ok(Resolved::Shard(request));
            }
        }
        let partition = self.owned(topic, partition)?;
        Ok(Resolved::Partition(partition, request))
    }

    fn dispatch(
        self: &Rc<Self>,
        api_key: u16,
        resolved: Result<Resolved, ErrorResponse>,
        replica: &ReplicaLink,
    ) -> Dispatched {
        let resolved = match resolved {
            Ok(resolved) => resolved,
            Err(error) => return Dispatched::Now(Response::Error { api_key, error }),
        };
        let fail = move |error: ErrorResponse| Response::Error { api_key, error };
        match resolved {
            Resolved::Shard(Request::Metadata(request)) => {
                Dispatched::Now(match self.describe(&request) {
                    Ok(response) => Response::Metadata(response),
                    Err(error) => fail(error),
                })
            }
            Resolved::Shard(Request::DescribeCluster(request)) => {
                let describe = self.cluster.clone().describe(self.endpoints.clone());
                // The partitions as this node's map shows them (a single node's are all
                // served by it).
                // The moves in progress, with the partitions (a cluster's only).
                #[cfg(feature = "cluster")]
                let moves = request
                    .moves
                    .then(|| self.metadata().cluster.is_some())
                    .filter(|cluster| *cluster)
                    .and_then(|_| self.cluster.query())
                    .map(|query| crate::assignment::moves_of(&query.map.borrow()));
                #[cfg(not(feature = "cluster"))]
                let moves = None;
                let health = request.partitions.then(|| {
                    let metadata = self.metadata();
                    match &metadata.cluster {
                        #[cfg(feature = "cluster")]
                        Some(_) => self
                            .cluster
                            .query()
                            .map_or_else(spate_proto::PartitionHealth::default, |query| {
                                crate::assignment::health_of(&query.map.borrow())
                            }),
                        #[cfg(not(feature = "cluster"))]
                        Some(_) => spate_proto::PartitionHealth::default(),
                        None => spate_proto::PartitionHealth {
                            total: metadata
                                .topics
                                .values()
                                .map(|topic| u32::try_from(topic.shards.len()).unwrap_or(0))
                                .sum(),
                            ..spate_proto::PartitionHealth::default()
                        },
                    }
                });
                Dispatched::Later(Box::pin(async move {
                    match describe.await {
                        Ok(response) => {
                            // Racks go with the moves (a cluster's answer).
                            let racks = request.racks && moves.is_some();
                            Response::DescribeCluster(spate_proto::DescribeClusterResponse {
                                partitions: health,
                                moves,
                                racks,
                                ..response
                            })
                        }
                        Err(error) => fail(error),
                    }
                }))
            }
            Resolved::Shard(
                Request::CreateTopic(CreateTopicRequest { topic, .. })
                | Request::DeleteTopic(DeleteTopicRequest { topic })
                | Request::AutoCreateTopic(AutoCreateTopicRequest { topic })
                | Request::AlterTopic(AlterTopicRequest { topic, .. }),
            ) if topic == OFFSETS_TOPIC => Dispatched::Now(fail(internal_topic())),
            Resolved::Partition(partition, Request::Produce(_) | Request::DeleteRecords(_))
                if partition.key.topic == OFFSETS_TOPIC =>
            {
                Dispatched::Now(fail(internal_topic()))
            }
            Resolved::Partition(partition, Request::DescribePartition(_)) => {
                let log = partition.log();
                Dispatched::Now(Response::DescribePartition(DescribePartitionResponse {
                    log_start_offset: log.log_start().0,
                    high_watermark: log.high_watermark().0,
                    size_bytes: log.size_bytes(),
                    segments: u32::try_from(log.segment_count()).unwrap_or(u32::MAX),
                    fenced: log.fenced().map(ToString::to_string).unwrap_or_default(),
                }))
            }
            Resolved::Partition(
                partition,
                Request::ReplicaFetch(_) | Request::ReplicaProgress(_),
            ) if self.metadata().cluster.is_none() => {
                // A single node: no replica is assigned to any partition.
                Dispatched::Now(fail(error(
                    ErrorCode::ReplicaNotAvailable,
                    format!(
                        "{}/{} is not replicated: this node is not in a cluster",
                        partition.key.topic, partition.key.partition
                    ),
                )))
            }
            Resolved::Partition(partition, Request::ReplicaFetch(request)) => {
                // Parked apart from the in-flight slots (see `REPLICA_FETCHES_PER_LINK_MAX`).
                let shard = self.clone();
                let session = fetch_session(request.incarnation, request.session);
                let answers = replica.answers.clone();
                Dispatched::Parked(Box::pin(async move {
                    match shard
                        .replica_fetch(&partition, &request, session, &answers)
                        .await
                    {
                        Ok((answer, slot)) => (Response::ReplicaFetch(answer), slot),
                        Err(error) => (fail(error), None),
                    }
                }))
            }
            Resolved::Partition(partition, Request::ReplicaProgress(request)) => {
                let session = fetch_session(request.incarnation, request.session);
                Dispatched::Now(match self.replica_progress(&partition, &request, session) {
                    Ok(()) => Response::ReplicaProgress,
                    Err(error) => fail(error),
                })
            }
            Resolved::Shard(Request::Group(_)) => {
                Dispatched::Now(fail(self.offsets_topic_missing()))
            }
            Resolved::Partition(partition, Request::Group(request)) => {
                match self.group(&partition, request) {
                    GroupAnswer::Now(answer) => Dispatched::Now(groups::wrap(answer, api_key)),
                    GroupAnswer::Parked(receiver) => Dispatched::Parked(Box::pin(async move {
                        let answer = receiver.recv().await.unwrap_or_else(|| {
                            Err(error(
                                ErrorCode::ShuttingDown,
                                "the group coordinator closed",
                            ))
                        });
                        (groups::wrap(answer, api_key), None)
                    })),
                    GroupAnswer::Appending(appending) => Dispatched::Later(Box::pin(async move {
                        groups::wrap(appending.await, api_key)
                    })),
                }
            }
            Resolved::Shard(
                request @ (Request::CreateTopic(_)
                | Request::DeleteTopic(_)
                | Request::AllocateProducerIds(_)
                | Request::AutoCreateTopic(_)
                | Request::AlterTopic(_)
                | Request::MovePartitions(_)),
            ) => {
                let admin = self.admin.clone();
                Dispatched::Later(Box::pin(async move { admin.call(request, api_key).await }))
            }
            Resolved::Partition(partition, Request::Produce(request)) => now_or_waited(
                api_key,
                self.produce(&partition, &request),
                Response::Produce,
            ),
            Resolved::Partition(
                partition,
                Request::Fetch(_) | Request::ListOffsets(_) | Request::FindRecord(_),
            ) if !partition.reads_ready() => Dispatched::Now(fail(error(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "partition {}-{}: its new leader is not ready for reads yet (its high \
                     watermark has not reached the start of its epoch); retry shortly",
                    partition.key.topic, partition.key.partition
                ),
            ))),
            Resolved::Partition(partition, Request::Fetch(request)) => {
                let shard = self.clone();
                later(
                    api_key,
                    async move { shard.fetch(&partition, &request).await },
                    Response::Fetch,
                )
            }
            Resolved::Partition(partition, Request::ListOffsets(request)) => {
                let shard = self.clone();
                later(
                    api_key,
                    async move { shard.list_offsets(&partition, request).await },
                    Response::ListOffsets,
                )
            }
            Resolved::Partition(partition, Request::FindRecord(request)) => {
                let shard = self.clone();
                later(
                    api_key,
                    async move { shard.find_record(&partition, request).await },
                    Response::FindRecord,
                )
            }
            Resolved::Partition(partition, Request::DeleteRecords(request)) => now_or_waited(
                api_key,
                self.delete_records(&partition, &request),
                Response::DeleteRecords,
            ),
            // `resolve` never pairs these.
            Resolved::Shard(_) | Resolved::Partition(..) => Dispatched::Now(fail(error(
                ErrorCode::Internal,
                "request routed to the wrong handler",
            ))),
        }
    }
}
