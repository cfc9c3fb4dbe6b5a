//! The Kafka listener: Kafka clients over TCP, translated to node requests and routed to the
//! owning shard like QUIC requests (docs/kafka.md). The gateway stays stateless: every
//! acknowledgement comes from the node.
//!
//! One task reads a connection's requests in order: it checks each request's size before
//! reading it, reserves its bytes in the Kafka budget (so requests being received or waiting
//! to be forwarded never exceed `kafka_buffer_budget`), decodes it and sends its node
//! requests at once, so requests to one partition reach the shard in the order they came.
//! The answers are awaited in tasks of their own and written by a writer task in request
//! order (Kafka's rule), at most `kafka_in_flight` at a time: beyond that the reader stops
//! reading, and TCP carries the back-pressure to the client. What the request means and how
//! answers assemble is `spate_kafka` (pure); this module moves the bytes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteRecordsRequest, DeleteTopicsRequest,
    DeleteTopicsResponse, FetchRequest, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    ProduceResponse, ProducerId, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use spate_kafka::frame::{
    decode_request, encode_produce_response, encode_response, request_size, Decoded, Request,
};
use spate_kafka::translate::{self, Broker, FetchPart, Fetched};
use spate_kafka::versions::api_versions_body;
use spate_proto::{
    ErrorCode, ErrorResponse, Frame, PartitionId, Request as NodeRequest, Response as NodeResponse,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::budget::Budget;
use crate::config::{KafkaConfig, KafkaTls};
use crate::kafka_groups;
use crate::metrics::{GatewayMetrics, Protocol, Refusal};
use crate::router::{Pending, Router};
use crate::tls::{self, TlsError};

/// Topics one Metadata request may have created automatically (the rest stay unknown and the
/// client asks again).
pub const AUTO_CREATE_PER_REQUEST_MAX: usize = 16;

/// The shortest wait for the node's answer to a produce, whatever its `timeout_ms` says.
pub const PRODUCE_TIMEOUT_MIN: Duration = Duration::from_secs(1);

/// Partitions one Fetch may name: each becomes a node request.
pub const FETCH_PARTITIONS_MAX: usize = 1024;

/// Longest a Fetch may park waiting for data (the node's own limit on a long poll).
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(60);

/// At most one log line per this interval for refused connections and bad requests: a flood
/// must not flood the log.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How long a shutdown waits for Kafka connections to write the answers of the requests they
/// already forwarded to the node; connections still busy then are closed anyway.
pub const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(5);

/// After the gateway wrote a connection's last answer and its FIN, how long it keeps reading
/// (and dropping) what the client still sends, until the client closes too. Closing a socket
/// with unread bytes sends a reset, which can make the client's kernel drop answers the client
/// has not read yet: a producer would then resend batches that were stored.
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Pause after a failed accept (out of descriptors and the like) instead of spinning.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What the writer does with one request's outcome.
#[derive(Debug)]
enum Reply {
    /// Write these bytes (a framed response).
    Bytes(Bytes),
    /// Write these back to back (a framed response around records it shares).
    Pieces(Vec<Bytes>),
    /// Nothing to write (a produce with `acks=0`).
    Nothing,
    /// Close the connection after the answers before it (an `acks=0` produce failed: the
    /// client learns it only this way, as with Kafka).
    Close(String),
}

type Answer = Pin<Box<dyn std::future::Future<Output = Reply> + Send>>;

/// A rate-limited log line.
#[derive(Debug)]
pub(crate) struct Throttled {
    started: Instant,
    last: AtomicU64,
}

impl Throttled {
    pub(crate) fn new() -> Self {
        Throttled {
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub(crate) fn allow(&self) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let interval = u64::try_from(LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < interval {
            return false;
        }
        self.last.store(now, Ordering::Relaxed);
        true
    }
}

#[derive(Debug)]
struct Context {
    router: Arc<Router>,
    broker: Broker,
    config: KafkaConfig,
    budget: Arc<Budget>,
    stall_timeout: Duration,
    refused_log: Throttled,
    closed_log: Throttled,
    /// The rest of the block of producer ids taken from the node.
    producer_ids: tokio::sync::Mutex<std::ops::Range<u64>>,
    metrics: Option<Arc<GatewayMetrics>>,
    /// TLS on the listener (`--kafka-tls-cert`), if configured.
    tls: Option<Arc<TlsState>>,
}

/// The Kafka listener's TLS: its files, and the acceptor made of them (replaced on reload).
struct TlsState {
    files: KafkaTls,
    acceptor: std::sync::RwLock<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsState {
    fn load(files: &KafkaTls) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let config = tls::kafka_server_config(&files.cert, &files.key, files.client.as_ref())?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        match self.acceptor.read() {
            Ok(acceptor) => acceptor.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A running Kafka listener.
#[derive(Debug)]
pub struct KafkaListener {
    pub local_addr: SocketAddr,
    /// What Metadata answers advertise.
    pub advertised: String,
    stop: watch::Sender<bool>,
    accept: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    tls: Option<Arc<TlsState>>,
}

impl KafkaListener {
    /// Whether clients connect with TLS (`security.protocol=SSL`).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads the listener's certificate, key, client CAs and revocation lists again for new
    /// connections (SIGHUP); on an error the ones in use stay.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        let Some(state) = &self.tls else {
            return Ok(());
        };
        let acceptor = TlsState::load(&state.files)?;
        match state.acceptor.write() {
            Ok(mut current) => *current = acceptor,
            Err(poisoned) => *poisoned.into_inner() = acceptor,
        }
        Ok(())
    }

    /// Stops accepting and reading requests, writes the answers of the requests already
    /// forwarded (for at most [`SHUTDOWN_DRAIN_MAX`]), and closes every Kafka connection.
    /// Requests not read yet were never forwarded: clients send them again after they
    /// reconnect, so a restart neither loses nor duplicates a produce.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.lock().await.take() {
            let _ = accept.await;
        }
    }
}

/// Why the Kafka listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen for Kafka on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("invalid Kafka advertised address {0}: HOST:PORT expected")]
    Advertise(String),
    #[error("Kafka listener TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Binds the Kafka listener and starts accepting.
pub async fn start(
    config: KafkaConfig,
    router: Arc<Router>,
    stall_timeout: Duration,
    metrics: Option<Arc<GatewayMetrics>>,
) -> Result<KafkaListener, ListenError> {
    let listen_error = |source| ListenError::Listen {
        address: config.listen.clone(),
        source,
    };
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(listen_error)?;
    let local_addr = listener.local_addr().map_err(listen_error)?;
    let advertised = config
        .advertise
        .clone()
        .unwrap_or_else(|| local_addr.to_string());
    let Some(broker) = translate::host_port(&advertised) else {
        return Err(ListenError::Advertise(advertised));
    };
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(TlsState {
            acceptor: std::sync::RwLock::new(TlsState::load(files)?),
            files: files.clone(),
        })),
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let context = Arc::new(Context {
        router,
        broker,
        budget: Budget::new(config.budget_limits()),
        config,
        stall_timeout,
        refused_log: Throttled::new(),
        closed_log: Throttled::new(),
        producer_ids: tokio::sync::Mutex::new(0..0),
        metrics,
        tls: tls.clone(),
    });
    let accept = tokio::spawn(accept(listener, context, stopped));
    Ok(KafkaListener {
        local_addr,
        advertised,
        stop,
        accept: tokio::sync::Mutex::new(Some(accept)),
        tls,
    })
}

async fn accept(listener: TcpListener, context: Arc<Context>, mut stopped: watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(context.config.max_connections as usize));
    let mut open = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                if context.refused_log.allow() {
                    tracing::warn!("cannot accept a Kafka connection: {error}");
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some(metrics) = &context.metrics {
                metrics.refused(Protocol::Kafka, Refusal::ConnectionLimit);
            }
            if context.refused_log.allow() {
                tracing::warn!(
                    %peer,
                    limit = context.config.max_connections,
                    "Kafka connection refused: kafka_max_connections reached"
                );
            }
            continue;
        };
        let context = context.clone();
        let stopped = stopped.clone();
        let counted = context
            .metrics
            .as_ref()
            .map(|metrics| metrics.connection(Protocol::Kafka));
        open.spawn(async move {
            let _ = socket.set_nodelay(true);
            match context.tls.as_ref().map(|tls| tls.acceptor()) {
                None => {
                    let (reader, writer) = socket.into_split();
                    serve(reader, writer, peer, context, stopped).await;
                }
                Some(acceptor) => {
                    // The handshake is bounded like a request's bytes: a client that starts
                    // one and goes quiet does not keep its connection slot.
                    let handshake =
                        tokio::time::timeout(context.stall_timeout, acceptor.accept(socket)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            // The principal is parsed from the certificate only for the
                            // debug line (nothing else uses it yet).
                            let client = context
                                .tls
                                .as_ref()
                                .and_then(|tls| tls.files.client.as_ref())
                                .filter(|_| tracing::enabled!(tracing::Level::DEBUG));
                            if let Some(trust) = client {
                                let principal = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .and_then(tls::principal_of);
                                tracing::debug!(
                                    %peer,
                                    auth = ?trust.auth,
                                    principal = principal.as_deref().unwrap_or("ANONYMOUS"),
                                    "Kafka TLS client connected"
                                );
                            }
                            let (reader, writer) = tokio::io::split(stream);
                            serve(reader, writer, peer, context, stopped).await;
                        }
                        Ok(Err(error)) => handshake_failed(&context, peer, &error.to_string()),
                        Err(_) => handshake_failed(&context, peer, "no TLS handshake in time"),
                    }
                }
            }
            drop(permit);
            drop(counted);
        });
        // Reap finished connections so the set stays as large as the open ones.
        while open.try_join_next().is_some() {}
    }
    let drained = tokio::time::timeout(SHUTDOWN_DRAIN_MAX, async {
        while open.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = open.len(),
            "Kafka connections still answering after {SHUTDOWN_DRAIN_MAX:?}; closing them"
        );
    }
    open.shutdown().await;
}

/// A TLS handshake on the Kafka listener failed (a plaintext client, an untrusted or missing
/// client certificate, a client that went quiet): counted, and logged at most once per
/// `LOG_INTERVAL`.
fn handshake_failed(context: &Context, peer: SocketAddr, reason: &str) {
    if let Some(metrics) = &context.metrics {
        metrics.refused(Protocol::Kafka, Refusal::Handshake);
    }
    if context.refused_log.allow() {
        tracing::info!(%peer, "Kafka TLS handshake failed: {reason}");
    }
}

/// Serves one connection (its two halves: a TCP socket's, or a TLS stream's) until the
/// client closes it, it breaks a rule, or shutdown.
async fn serve<R, W>(
    mut reader: R,
    mut writer: W,
    peer: SocketAddr,
    context: Arc<Context>,
    mut stopped: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let in_flight = context.config.in_flight as usize;
    // Each answer with its request's api key (-1: answered by the decoder).
    let (replies, mut pending) = mpsc::channel::<(i16, JoinHandle<Reply>)>(in_flight);
    let (closed_tx, mut closed) = watch::channel(false);
    let metrics = context.metrics.clone();
    let writer_task = tokio::spawn(async move {
        while let Some((api_key, reply)) = pending.recv().await {
            let reply = reply.await;
            if let Some(metrics) = &metrics {
                metrics.kafka_request(api_key, matches!(reply, Ok(Reply::Close(_)) | Err(_)));
                let written = match &reply {
                    Ok(Reply::Bytes(bytes)) => bytes.len(),
                    Ok(Reply::Pieces(pieces)) => pieces.iter().map(Bytes::len).sum(),
                    _ => 0,
                };
                metrics.sent(Protocol::Kafka, written);
            }
            match reply {
                Ok(Reply::Bytes(bytes)) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Reply::Pieces(pieces)) => {
                    if write_pieces(&mut writer, &pieces).await.is_err() {
                        break;
                    }
                }
                Ok(Reply::Nothing) => {}
                Ok(Reply::Close(reason)) => {
                    tracing::debug!(%peer, "closing a Kafka connection: {reason}");
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = writer.shutdown().await;
        let _ = closed_tx.send(true);
    });
    let connection_budget = context.budget.connection();
    let mut charge = connection_budget.charge();
    loop {
        let mut prefix = [0u8; 4];
        let read = tokio::select! {
            read = reader.read_exact(&mut prefix) => read,
            _ = closed.changed() => break,
            _ = stopped.changed() => break,
        };
        if read.is_err() {
            break;
        }
        let size = match request_size(prefix, context.config.request_bytes_max) {
            Ok(size) => size,
            Err(error) => {
                closing(&context, peer, &error.to_string());
                break;
            }
        };
        // Reserve the request's bytes before reading them: while the budget is spent, the
        // request stays in the socket.
        tokio::select! {
            () = charge.grow_to(size as u64) => {}
            _ = closed.changed() => break,
            _ = stopped.changed() => break,
        }
        let Some(frame) = read_body(&mut reader, size, context.stall_timeout).await else {
            closing(
                &context,
                peer,
                "the request stopped arriving (or the client left)",
            );
            break;
        };
        if let Some(metrics) = &context.metrics {
            metrics.received(Protocol::Kafka, size + 4);
        }
        let reply = match decode_request(frame) {
            Ok(Decoded::Answer(bytes)) => (-1, tokio::spawn(async move { Reply::Bytes(bytes) })),
            Ok(Decoded::Request(request)) => {
                let api_key = request.api as i16;
                let answer = dispatch(&context, *request).await;
                (api_key, tokio::spawn(answer))
            }
            Err(error) => {
                closing(&context, peer, &error.to_string());
                break;
            }
        };
        // Forwarded (or answered): the bytes are no longer held for it.
        charge.release(size as u64);
        if replies.send(reply).await.is_err() {
            break;
        }
    }
    drop(charge);
    drop(replies);
    // Every answer written, then the FIN; see CLOSE_LINGER for why the socket is not dropped
    // at once.
    let _ = writer_task.await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Ok(1..) = reader.read(&mut sink).await {}
    })
    .await;
}

fn closing(context: &Context, peer: SocketAddr, reason: &str) {
    if context.closed_log.allow() {
        tracing::info!(%peer, "closing a Kafka connection: {reason}");
    }
}

/// Reads exactly `size` bytes; `None` if the client leaves or stops sending for longer than
/// `stall` in the middle of the request.
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
    stall: Duration,
) -> Option<Bytes> {
    let mut buffer = BytesMut::with_capacity(size);
    while buffer.len() < size {
        let mut limited = (&mut *reader).take((size - buffer.len()) as u64);
        match tokio::time::timeout(stall, limited.read_buf(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => {}
            _ => return None,
        }
    }
    Some(buffer.freeze())
}

/// Writes `pieces` back to back, several per call (vectored).
async fn write_pieces<W: AsyncWrite + Unpin>(
    writer: &mut W,
    pieces: &[Bytes],
) -> std::io::Result<()> {
    let mut index = 0;
    let mut skip = 0;
    while index < pieces.len() {
        let slices: Vec<std::io::IoSlice<'_>> = pieces[index..]
            .iter()
            .take(64)
            .enumerate()
            .map(|(at, piece)| std::io::IoSlice::new(if at == 0 { &piece[skip..] } else { piece }))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while index < pieces.len() && written > 0 {
            let left = pieces[index].len() - skip;
            if written >= left {
                written -= left;
                index += 1;
                skip = 0;
            } else {
                skip += written;
                written = 0;
            }
        }
    }
    Ok(())
}

fn respond<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Reply {
    Reply::Bytes(encode_response(api, version, correlation_id, body))
}

/// Sends a request's node requests (now, in order) and returns the future of its answer.
async fn dispatch(context: &Arc<Context>, request: Request) -> Answer {
    let Request {
        api,
        version,
        header,
        body,
    } = request;
    let correlation_id = header.correlation_id;
    match body {
        RequestKind::ApiVersions(_) => {
            let reply = respond(api, version, correlation_id, &api_versions_body(0));
            Box::pin(async move { reply })
        }
        RequestKind::Metadata(request) => {
            let context = context.clone();
            Box::pin(async move {
                let answer = metadata(&context, version, &request).await;
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::Produce(request) => produce(context, version, correlation_id, request).await,
        RequestKind::ListOffsets(request) => {
            list_offsets(context, version, correlation_id, request).await
        }
        RequestKind::Fetch(request) => fetch(context, version, correlation_id, request).await,
        RequestKind::OffsetForLeaderEpoch(request) => {
            offset_for_leader_epoch(context, version, correlation_id, request).await
        }
        RequestKind::DeleteRecords(request) => {
            delete_records(context, version, correlation_id, request).await
        }
        RequestKind::CreateTopics(request) => {
            let context = context.clone();
            Box::pin(async move {
                let answer = create_topics(&context, version, request).await;
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::DeleteTopics(request) => {
            let context = context.clone();
            Box::pin(async move {
                let answer = delete_topics(&context, version, request).await;
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::InitProducerId(request) => {
            let context = context.clone();
            Box::pin(async move {
                let answer = init_producer_id(&context, &request).await;
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::DescribeConfigs(request) => {
            let context = context.clone();
            Box::pin(async move {
                let facts = spate_kafka::admin::BrokerFacts {
                    broker: context.broker.clone(),
                    request_bytes_max: context.config.request_bytes_max,
                    max_connections: context.config.max_connections,
                    tls: context.tls.is_some(),
                };
                let answer = crate::kafka_admin::describe_configs(
                    &context.router,
                    &facts,
                    version,
                    &request,
                )
                .await;
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::DescribeCluster(request) => {
            let context = context.clone();
            Box::pin(async move {
                let node = node_metadata(&context).await.ok();
                let answer = spate_kafka::admin::describe_cluster(
                    version,
                    &request,
                    &context.broker,
                    node.as_ref(),
                );
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::IncrementalAlterConfigs(request) => {
            let context = context.clone();
            Box::pin(async move {
                let answer =
                    crate::kafka_admin::incremental_alter_configs(&context.router, &request).await;
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::ElectLeaders(request) => {
            let context = context.clone();
            Box::pin(async move {
                let answer = crate::kafka_admin::elect_leaders(&context.router, &request).await;
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::AlterPartitionReassignments(request) => {
            let context = context.clone();
            Box::pin(async move {
                let answer =
                    crate::kafka_admin::alter_partition_reassignments(&context.router, &request)
                        .await;
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::ListPartitionReassignments(request) => {
            let context = context.clone();
            Box::pin(async move {
                let answer =
                    crate::kafka_admin::list_partition_reassignments(&context.router, &request)
                        .await;
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::CreatePartitions(request) => {
            let context = context.clone();
            Box::pin(async move {
                let answer = crate::kafka_admin::create_partitions(&context.router, &request).await;
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::FindCoordinator(request) => {
            let context = context.clone();
            Box::pin(async move {
                // In a cluster of Kafka brokers, the leader of the group's offsets partition:
                // the offsets topic's placement only (the whole map before it exists).
                let offsets = crate::kafka_admin::node_metadata_of(
                    &context.router,
                    &[spate_proto::OFFSETS_TOPIC],
                    true,
                )
                .await;
                let node = match offsets {
                    Ok(node) => Some(node),
                    Err(_) => node_metadata(&context).await.ok(),
                };
                let answer = spate_kafka::groups::find_coordinator(
                    version,
                    &request,
                    &context.broker,
                    node.as_ref(),
                );
                respond(api, version, correlation_id, &answer)
            })
        }
        RequestKind::JoinGroup(request) => {
            let client_id = header
                .client_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let answer = kafka_groups::join(&context.router, version, &request, &client_id).await;
            Box::pin(async move { respond(api, version, correlation_id, &answer.await) })
        }
        RequestKind::SyncGroup(request) => {
            let answer = kafka_groups::sync(&context.router, &request).await;
            Box::pin(async move { respond(api, version, correlation_id, &answer.await) })
        }
        RequestKind::Heartbeat(request) => {
            let answer = kafka_groups::heartbeat(&context.router, &request).await;
            Box::pin(async move { respond(api, version, correlation_id, &answer.await) })
        }
        RequestKind::LeaveGroup(request) => {
            let answer = kafka_groups::leave(&context.router, version, request).await;
            Box::pin(async move { respond(api, version, correlation_id, &answer.await) })
        }
        RequestKind::OffsetCommit(request) => {
            let answer = kafka_groups::commit(&context.router, version, request).await;
            Box::pin(async move { respond(api, version, correlation_id, &answer.await) })
        }
        RequestKind::OffsetFetch(request) => {
            let answer = kafka_groups::fetch(&context.router, version, &request).await;
            Box::pin(async move { respond(api, version, correlation_id, &answer.await) })
        }
        RequestKind::ListGroups(request) => {
            let answer = kafka_groups::list(&context.router, &context.broker, request).await;
            Box::pin(async move { respond(api, version, correlation_id, &answer.await) })
        }
        RequestKind::DescribeGroups(request) => {
            let answer = kafka_groups::describe(&context.router, version, &request).await;
            Box::pin(async move { respond(api, version, correlation_id, &answer.await) })
        }
        RequestKind::DeleteGroups(request) => {
            let answer = kafka_groups::delete(&context.router, &request).await;
            Box::pin(async move { respond(api, version, correlation_id, &answer.await) })
        }
        RequestKind::OffsetDelete(request) => {
            let answer = kafka_groups::offset_delete(&context.router, request).await;
            Box::pin(async move { respond(api, version, correlation_id, &answer.await) })
        }
        other => {
            // Only served APIs decode (`spate_kafka::versions`); nothing else reaches here.
            let reason = format!("{api:?} is not served: {other:?}");
            Box::pin(async move { Reply::Close(reason) })
        }
    }
}

/// Sends one node request towards its shard.
pub(crate) async fn send(router: &Router, request: &NodeRequest) -> Pending {
    send_frame(router, request.to_frame(0)).await
}

/// Sends a node request frame the gateway built (correlation id 0: the link sets its own).
pub(crate) async fn send_frame(router: &Router, bytes: Bytes) -> Pending {
    match Frame::parse(bytes, u32::MAX) {
        Ok(frame) => router.send(&frame).await,
        Err(error) => Pending::Ready(NodeResponse::error(
            0,
            ErrorCode::Internal,
            format!("a request the gateway built does not frame: {error}"),
        )),
    }
}

pub(crate) fn unexpected(response: NodeResponse) -> ErrorResponse {
    match response {
        NodeResponse::Error { error, .. } => error,
        other => ErrorResponse::new(
            ErrorCode::Internal,
            format!("unexpected answer from the node: {other:?}"),
        ),
    }
}

async fn metadata(
    context: &Context,
    version: i16,
    request: &MetadataRequest,
) -> kafka_protocol::messages::MetadataResponse {
    let mut node = node_metadata(context).await;
    // Topics named but unknown are created if the client allows it (always before v4) and
    // the node does (`--auto-create-topics`; otherwise it refuses and they stay unknown).
    let allowed = version < 4 || request.allow_auto_topic_creation;
    if let (true, Ok(map), Some(named)) = (allowed, &node, &request.topics) {
        let missing: Vec<String> = named
            .iter()
            .filter_map(|topic| topic.name.as_ref())
            .map(|name| name.0.to_string())
            .filter(|name| !map.topics.iter().any(|topic| &topic.name == name))
            .take(AUTO_CREATE_PER_REQUEST_MAX)
            .collect();
        if !missing.is_empty() {
            for topic in missing {
                let pending = send(
                    &context.router,
                    &NodeRequest::AutoCreateTopic(spate_proto::AutoCreateTopicRequest { topic }),
                )
                .await;
                if let NodeResponse::Error { error, .. } = context.router.response(pending).await {
                    tracing::debug!("automatic topic creation refused: {}", error.message);
                }
            }
            node = node_metadata(context).await;
        }
    }
    translate::metadata_response(version, request, node.as_ref(), &context.broker)
}

/// The node's whole partition map, with placement (where each partition's replicas are, in
/// a cluster).
async fn node_metadata(context: &Context) -> Result<spate_proto::MetadataResponse, ErrorResponse> {
    crate::kafka_admin::node_metadata(&context.router, true).await
}

async fn create_topics(
    context: &Context,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let outcome = match translate::create_topic(topic) {
            Err(refusal) => Err(refusal),
            // Validated as far as the gateway can (the node checks names and limits when it
            // creates); nothing is created.
            Ok(_) if request.validate_only => Ok(()),
            Ok(create) => {
                let pending = send(&context.router, &NodeRequest::CreateTopic(create)).await;
                match context.router.response(pending).await {
                    NodeResponse::CreateTopic(_) => Ok(()),
                    other => {
                        let error = unexpected(other);
                        Err((spate_kafka::errors::kafka_error(error.code), error.message))
                    }
                }
            }
        };
        let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
        match outcome {
            Ok(()) => {
                if version >= 5 {
                    let partitions = match topic.num_partitions {
                        -1 => i32::try_from(translate::DEFAULT_PARTITIONS).unwrap_or(1),
                        count => count,
                    };
                    // -1 asked for the node's default, one copy.
                    let factor = match topic.replication_factor {
                        -1 => 1,
                        factor => factor,
                    };
                    result = result
                        .with_num_partitions(partitions)
                        .with_replication_factor(factor);
                }
            }
            Err((error, message)) => {
                result = result
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message)));
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn delete_topics(
    context: &Context,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v6 names topics in `topics` (by name or id), earlier versions in `topic_names`.
    let names: Vec<Option<TopicName>> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|topic| topic.name.clone())
            .collect()
    } else {
        request.topic_names.iter().cloned().map(Some).collect()
    };
    let mut results = Vec::with_capacity(names.len());
    for name in names {
        let mut result = DeletableTopicResult::default().with_name(name.clone());
        let outcome = match &name {
            None => Err((
                ResponseError::UnknownTopicId,
                "Spate has no topic ids: name the topic".to_owned(),
            )),
            Some(name) => {
                let pending = send(
                    &context.router,
                    &NodeRequest::DeleteTopic(spate_proto::DeleteTopicRequest {
                        topic: name.0.to_string(),
                    }),
                )
                .await;
                match context.router.response(pending).await {
                    NodeResponse::DeleteTopic(_) => Ok(()),
                    other => {
                        let error = unexpected(other);
                        Err((spate_kafka::errors::kafka_error(error.code), error.message))
                    }
                }
            }
        };
        if let Err((error, message)) = outcome {
            result = result.with_error_code(error.code());
            if version >= 5 {
                result = result.with_error_message(Some(StrBytes::from_string(message)));
            }
        }
        results.push(result);
    }
    DeleteTopicsResponse::default().with_responses(results)
}

/// Producer ids: a known producer gets its next epoch; a new one the next id of the block the
/// gateway took from the node (a new block when it is used up). The node never hands out an
/// id twice, also across crashes, so ids are unique over gateway restarts.
async fn init_producer_id(
    context: &Context,
    request: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let answer = InitProducerIdResponse::default();
    match translate::init_producer_id(request) {
        Err(error) => {
            return answer
                .with_error_code(error.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
        Ok(Some((id, epoch))) => {
            return answer
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch)
        }
        Ok(None) => {}
    }
    let mut ids = context.producer_ids.lock().await;
    if ids.start >= ids.end {
        let pending = send(
            &context.router,
            &NodeRequest::AllocateProducerIds(spate_proto::AllocateProducerIdsRequest {
                count: translate::PRODUCER_ID_BLOCK,
            }),
        )
        .await;
        match context.router.response(pending).await {
            NodeResponse::AllocateProducerIds(block) => {
                *ids = block.first..block.first.saturating_add(u64::from(block.count));
            }
            other => {
                let error = unexpected(other);
                tracing::warn!("cannot get producer ids from the node: {}", error.message);
                return answer
                    .with_error_code(spate_kafka::errors::kafka_error(error.code).code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1);
            }
        }
    }
    let id = ids.start;
    ids.start += 1;
    answer
        .with_producer_id(ProducerId(i64::try_from(id).unwrap_or(-1)))
        .with_producer_epoch(0)
}

fn partition_id(index: i32) -> Option<PartitionId> {
    u32::try_from(index).ok().map(PartitionId)
}

async fn produce(
    context: &Arc<Context>,
    version: i16,
    correlation_id: i32,
    request: ProduceRequest,
) -> Answer {
    let acks = request.acks;
    let durability = translate::durability(acks);
    // Kafka's timeout bounds the wait for replicas, not the leader's own write: a short one
    // must not fail a write that is merely being synced.
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms.max(0)).unwrap_or(0))
        .max(PRODUCE_TIMEOUT_MIN);
    // Per partition, in request order: the node's answer to wait for, or the error now.
    type Refused = (ResponseError, Option<String>);
    let mut parts: Vec<(TopicName, i32, Result<Pending, Refused>)> = Vec::new();
    for topic in request.topic_data {
        for partition in topic.partition_data {
            let index = partition.index;
            let outcome = match (durability, partition_id(index)) {
                (Err(error), _) => Err((error, None)),
                (_, None) => Err((ResponseError::UnknownTopicOrPartition, None)),
                (Ok(durability), Some(id)) => match batch_for_node(partition.records.as_ref()) {
                    Err(error) => Err(error),
                    Ok(batch) => {
                        // The records go into the node's frame with one copy, the only one
                        // the gateway makes of them on the way in.
                        let frame = spate_proto::produce_frame_from_parts(
                            0,
                            topic.name.0.as_str(),
                            id,
                            durability,
                            &[batch.header(), batch.records()],
                        );
                        Ok(send_frame(&context.router, frame).await)
                    }
                },
            };
            parts.push((topic.name.clone(), index, outcome));
        }
    }
    let context = context.clone();
    Box::pin(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut failed = None;
        let mut topics: Vec<TopicProduceResponse> = Vec::new();
        for (topic, index, outcome) in parts {
            // Kafka answers a failed partition with base offset -1 (`INVALID_OFFSET`).
            let answer = PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(-1);
            let answer = match outcome {
                Err((error, message)) => answer
                    .with_error_code(error.code())
                    .with_error_message(message.map(StrBytes::from_string)),
                Ok(pending) => {
                    let waited =
                        tokio::time::timeout_at(deadline, context.router.response(pending)).await;
                    match waited {
                        Err(_) => answer
                            .with_error_code(ResponseError::RequestTimedOut.code())
                            .with_error_message(Some(StrBytes::from_static_str(
                                "the node did not answer within the request's timeout",
                            ))),
                        Ok(NodeResponse::Produce(stored)) => answer
                            .with_base_offset(i64::try_from(stored.base_offset).unwrap_or(-1))
                            .with_log_start_offset(
                                i64::try_from(stored.log_start_offset).unwrap_or(-1),
                            ),
                        Ok(other) => {
                            let error = unexpected(other);
                            answer
                                .with_error_code(
                                    spate_kafka::errors::kafka_error(error.code).code(),
                                )
                                .with_error_message(Some(StrBytes::from_string(error.message)))
                        }
                    }
                }
            };
            if let Some(metrics) = &context.metrics {
                metrics.kafka_partition_error(ApiKey::Produce as i16, answer.error_code);
            }
            if answer.error_code != 0 && failed.is_none() {
                failed = Some(format!(
                    "acks=0 produce to {}-{index} failed with error {}",
                    topic.0.as_str(),
                    answer.error_code
                ));
            }
            match topics.last_mut() {
                Some(last) if last.name == topic => last.partition_responses.push(answer),
                _ => topics.push(
                    TopicProduceResponse::default()
                        .with_name(topic)
                        .with_partition_responses(vec![answer]),
                ),
            }
        }
        if acks == 0 {
            return failed.map_or(Reply::Nothing, Reply::Close);
        }
        let answer = ProduceResponse::default().with_responses(topics);
        Reply::Bytes(encode_produce_response(version, correlation_id, &answer))
    })
}

/// The node batch for a Kafka produce's records (one Kafka v2 batch): a Spate header and
/// the records section, a slice of the request (no copy yet).
fn batch_for_node(
    records: Option<&Bytes>,
) -> Result<spate_kafka::batch::SpateBatch, (ResponseError, Option<String>)> {
    let Some(records) = records else {
        return Err((
            ResponseError::InvalidRecord,
            Some("a produce without records".into()),
        ));
    };
    spate_kafka::batch::kafka_to_spate(records).map_err(|error| {
        (
            ResponseError::try_from_code(error.kafka_error_code())
                .unwrap_or(ResponseError::CorruptMessage),
            Some(error.to_string()),
        )
    })
}

/// Each partition of a request with a node request per partition (ListOffsets,
/// DeleteRecords): its index, what it asks (`Err`: answered without the node), and the node's
/// answer on its way (`None`: not sent).
type Sent<S> = Vec<(
    TopicName,
    Vec<(i32, Result<S, ResponseError>, Option<Pending>)>,
)>;

/// Each partition of such a request: its index and what it asks (`Err`: answered without
/// the node).
type Asked<S> = Vec<(TopicName, Vec<(i32, Result<S, ResponseError>)>)>;

/// Sends one node request per partition now, in request order (`request` builds it from the
/// topic, the partition and what the partition asks).
async fn send_each<S>(
    context: &Context,
    asked: Asked<S>,
    request: impl Fn(&TopicName, PartitionId, &S) -> NodeRequest,
) -> Sent<S> {
    let mut sent = Vec::with_capacity(asked.len());
    for (name, partitions) in asked {
        let mut parts = Vec::with_capacity(partitions.len());
        for (index, asks) in partitions {
            let pending = match (&asks, partition_id(index)) {
                (Ok(what), Some(id)) => {
                    Some(send(&context.router, &request(&name, id, what)).await)
                }
                _ => None,
            };
            parts.push((index, asks, pending));
        }
        sent.push((name, parts));
    }
    sent
}

/// Waits for every answer of [`send_each`] in request order and makes each partition's
/// Kafka answer with `answer` (index, what it asked, the node's answer).
async fn gather<S, P>(
    context: &Context,
    sent: Sent<S>,
    answer: impl Fn(i32, Result<S, ResponseError>, Result<NodeResponse, ErrorResponse>) -> P,
) -> Vec<(TopicName, Vec<P>)> {
    let mut answered = Vec::with_capacity(sent.len());
    for (name, parts) in sent {
        let mut partitions = Vec::with_capacity(parts.len());
        for (index, asks, pending) in parts {
            let response = match pending {
                None => Err(ErrorResponse::new(
                    ErrorCode::UnknownPartition,
                    "no such partition",
                )),
                Some(pending) => Ok(context.router.response(pending).await),
            };
            partitions.push(answer(index, asks, response));
        }
        answered.push((name, partitions));
    }
    answered
}

async fn list_offsets(
    context: &Arc<Context>,
    version: i16,
    correlation_id: i32,
    request: ListOffsetsRequest,
) -> Answer {
    let asked = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let epochs = translate::read_epochs(partition.current_leader_epoch);
                    let spec = translate::offset_spec(partition.timestamp);
                    (partition.partition_index, spec.map(|spec| (spec, epochs)))
                })
                .collect();
            (topic.name, partitions)
        })
        .collect();
    let sent = send_each(context, asked, |topic, partition, &(lookup, epochs)| {
        let topic = topic.0.to_string();
        match lookup {
            translate::Lookup::Offsets(spec) => {
                NodeRequest::ListOffsets(spate_proto::ListOffsetsRequest {
                    topic,
                    partition,
                    spec,
                    epochs,
                })
            }
            translate::Lookup::Record(target) => {
                NodeRequest::FindRecord(spate_proto::FindRecordRequest {
                    topic,
                    partition,
                    target,
                    epochs,
                })
            }
        }
    })
    .await;
    let context = context.clone();
    Box::pin(async move {
        let answered = gather(&context, sent, |index, spec, response| {
            let answer = response.and_then(|response| match response {
                NodeResponse::ListOffsets(found) => Ok(found.into()),
                NodeResponse::FindRecord(found) => Ok(found.into()),
                other => Err(unexpected(other)),
            });
            let spec = spec.map(|(spec, _)| spec);
            translate::list_offsets_partition(version, index, spec, answer)
        })
        .await;
        let answer = translate::list_offsets_response(answered);
        respond(ApiKey::ListOffsets, version, correlation_id, &answer)
    })
}

/// OffsetForLeaderEpoch (KIP-320): each partition's question goes to its leader's shard now
/// as a ListOffsets of the epoch's end; the answer assembles once all are answered.
async fn offset_for_leader_epoch(
    context: &Arc<Context>,
    version: i16,
    correlation_id: i32,
    request: OffsetForLeaderEpochRequest,
) -> Answer {
    let asked = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let lookup = translate::epoch_lookup(
                        partition.leader_epoch,
                        partition.current_leader_epoch,
                    );
                    (partition.partition, Ok(lookup))
                })
                .collect();
            (topic.topic, partitions)
        })
        .collect();
    let sent = send_each(context, asked, |topic, partition, lookup| {
        NodeRequest::ListOffsets(translate::epoch_end_request(topic, partition, lookup))
    })
    .await;
    let context = context.clone();
    Box::pin(async move {
        let answered = gather(&context, sent, |index, lookup, response| {
            let answer = response.and_then(|response| match response {
                NodeResponse::ListOffsets(found) => Ok(found),
                other => Err(unexpected(other)),
            });
            translate::epoch_end_partition(index, lookup, answer)
        })
        .await;
        let answer = translate::offset_for_leader_epoch_response(answered);
        respond(
            ApiKey::OffsetForLeaderEpoch,
            version,
            correlation_id,
            &answer,
        )
    })
}

/// DeleteRecords: each partition's move goes to its shard now; the answer assembles once
/// every move is durable (or refused).
async fn delete_records(
    context: &Arc<Context>,
    version: i16,
    correlation_id: i32,
    request: DeleteRecordsRequest,
) -> Answer {
    let asked = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let offset = translate::delete_records_offset(partition.offset);
                    (partition.partition_index, offset)
                })
                .collect();
            (topic.name, partitions)
        })
        .collect();
    let sent = send_each(context, asked, |topic, partition, offset| {
        NodeRequest::DeleteRecords(spate_proto::DeleteRecordsRequest {
            topic: topic.0.to_string(),
            partition,
            offset: *offset,
        })
    })
    .await;
    let context = context.clone();
    Box::pin(async move {
        let answered = gather(&context, sent, |index, offset, response| {
            let answer = response.and_then(|response| match response {
                NodeResponse::DeleteRecords(moved) => Ok(moved),
                other => Err(unexpected(other)),
            });
            translate::delete_records_partition(index, offset, answer)
        })
        .await;
        let answer = translate::delete_records_response(answered);
        respond(ApiKey::DeleteRecords, version, correlation_id, &answer)
    })
}

async fn fetch(
    context: &Arc<Context>,
    version: i16,
    correlation_id: i32,
    request: FetchRequest,
) -> Answer {
    let context = context.clone();
    Box::pin(async move {
        let parts = match translate::fetch_parts(&request, FETCH_PARTITIONS_MAX) {
            Ok(parts) => parts,
            Err(error) => {
                let answer = kafka_protocol::messages::FetchResponse::default()
                    .with_error_code(error.code());
                return respond(ApiKey::Fetch, version, correlation_id, &answer);
            }
        };
        let max_wait =
            Duration::from_millis(u64::try_from(request.max_wait_ms.max(0)).unwrap_or(0))
                .min(FETCH_WAIT_MAX);
        let min_bytes = usize::try_from(request.min_bytes.max(0)).unwrap_or(0);
        let started = tokio::time::Instant::now();
        // First every partition at once without waiting; then, if that is not enough, one
        // long poll per partition, answered when the first brings data or the wait is over.
        let mut fetched = fetch_round(&context, &parts, 0).await;
        let bytes = |fetched: &[Fetched]| -> usize {
            fetched
                .iter()
                .map(|fetched| match fetched {
                    Fetched::Data { records, .. } => records.len(),
                    Fetched::Error(_) => 0,
                })
                .sum()
        };
        let errors = fetched
            .iter()
            .any(|fetched| matches!(fetched, Fetched::Error(_)));
        if bytes(&fetched) < min_bytes.max(1) && !errors && !max_wait.is_zero() {
            let remaining = max_wait.saturating_sub(started.elapsed());
            let wait_ms = u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX);
            fetched = long_poll(&context, &parts, fetched, wait_ms, remaining).await;
        }
        let (answer, records) = translate::fetch_response(&parts, fetched, request.max_bytes);
        if let Some(metrics) = &context.metrics {
            for partition in answer
                .responses
                .iter()
                .flat_map(|topic| topic.partitions.iter())
            {
                metrics.kafka_partition_error(ApiKey::Fetch as i16, partition.error_code);
            }
        }
        // The records go to the socket as slices of the node's answers; the response is
        // written around them.
        match spate_kafka::splice::encode_fetch_response(version, correlation_id, &answer, &records)
        {
            Some(pieces) => Reply::Pieces(pieces),
            None => {
                let answer = translate::records_in_place(answer, &records);
                respond(ApiKey::Fetch, version, correlation_id, &answer)
            }
        }
    })
}

fn fetch_request(part: &FetchPart, wait_ms: u32) -> Option<NodeRequest> {
    Some(NodeRequest::Fetch(spate_proto::FetchRequest {
        topic: part.topic.0.to_string(),
        partition: partition_id(part.partition)?,
        offset: u64::try_from(part.offset).ok()?,
        max_bytes: part
            .max_bytes
            .clamp(1, translate::FETCH_PARTITION_BYTES_MAX),
        max_wait_ms: wait_ms,
        min_bytes: 1,
        epochs: translate::read_epochs(part.current_leader_epoch),
    }))
}

/// One node fetch per partition, all in flight at once.
async fn fetch_round(context: &Context, parts: &[FetchPart], wait_ms: u32) -> Vec<Fetched> {
    let mut pending = Vec::with_capacity(parts.len());
    for part in parts {
        pending.push(match fetch_request(part, wait_ms) {
            Some(request) => Some(send(&context.router, &request).await),
            None => None,
        });
    }
    let mut fetched = Vec::with_capacity(parts.len());
    for (part, pending) in parts.iter().zip(pending) {
        fetched.push(match pending {
            None if part.partition < 0 => Fetched::Error(ResponseError::UnknownTopicOrPartition),
            None => Fetched::Error(ResponseError::OffsetOutOfRange),
            Some(pending) => fetched_from(context.router.response(pending).await),
        });
    }
    fetched
}

/// Parks one long poll per partition that had no data; returns when the first of them
/// brings data (or all end, or `remaining` passes). Polls still parked are dropped: the
/// node answers them at their deadline and the link discards the answers.
async fn long_poll(
    context: &Context,
    parts: &[FetchPart],
    mut fetched: Vec<Fetched>,
    wait_ms: u32,
    remaining: Duration,
) -> Vec<Fetched> {
    let mut polls = tokio::task::JoinSet::new();
    for (index, part) in parts.iter().enumerate() {
        let Some(request) = fetch_request(part, wait_ms) else {
            continue;
        };
        let pending = send(&context.router, &request).await;
        let router = context.router.clone();
        polls.spawn(async move { (index, router.response(pending).await) });
    }
    let deadline = tokio::time::Instant::now() + remaining;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, polls.join_next()).await {
        let Ok((index, response)) = joined else {
            continue;
        };
        let answer = fetched_from(response);
        let has_data = matches!(&answer, Fetched::Data { records, .. } if !records.is_empty());
        if let Some(slot) = fetched.get_mut(index) {
            *slot = answer;
        }
        if has_data {
            break;
        }
    }
    polls.abort_all();
    fetched
}

fn fetched_from(response: NodeResponse) -> Fetched {
    match response {
        NodeResponse::Fetch(data) => {
            match spate_kafka::batch::spate_to_kafka_with_epochs(&data.records, &data.epochs) {
                Ok(records) => Fetched::Data {
                    records,
                    high_watermark: data.high_watermark,
                    log_start_offset: data.log_start_offset,
                },
                Err(error) => {
                    // The node sends only whole, checked batches: damage on the way or a bug.
                    tracing::error!("a fetch answer from the node does not convert: {error}");
                    Fetched::Error(ResponseError::CorruptMessage)
                }
            }
        }
        other => {
            let error = unexpected(other);
            Fetched::Error(spate_kafka::errors::kafka_error(error.code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_split_into_host_and_port() {
        assert_eq!(
            translate::host_port("kafka.example.org:9092"),
            Some(Broker {
                host: "kafka.example.org".into(),
                port: 9092
            })
        );
        assert_eq!(
            translate::host_port("[::1]:19092"),
            Some(Broker {
                host: "::1".into(),
                port: 19092
            })
        );
        assert_eq!(translate::host_port("nohost"), None);
        assert_eq!(translate::host_port(":9092"), None);
        assert_eq!(translate::host_port("h:99999"), None);
    }
}
