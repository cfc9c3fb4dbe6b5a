//! The QUIC side: the endpoint, its limits, connections and streams. Every bidirectional
//! stream carries request frames one way and their responses the other; frames of one stream
//! are forwarded in order, their answers return as they come (matched by correlation id).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use spate_proto::frame::FrameHeader;
use spate_proto::{ErrorCode, Frame, FrameDecoder, FrameError, Response};
use thiserror::Error;
use tokio::sync::{mpsc, Semaphore};

use crate::budget::{Budget, Charge};
use crate::config::GatewayConfig;
use crate::metrics::{GatewayMetrics, Protocol, Refusal};
use crate::router::Router;
use crate::tls;

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("invalid listen address {0}")]
    Listen(String),
    #[error("cannot listen for QUIC on {address} (UDP): {source}")]
    Endpoint {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("idle_timeout_ms {0:?} is too large for QUIC (at most 2^62 ms)")]
    IdleTimeout(Duration),
    #[error("cannot read the key {} that seeds stateless resets: {source}", path.display())]
    ResetKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QUIC configuration: {0}")]
    Quic(#[from] quinn::ConfigError),
    #[error("the TLS configuration has no initial cipher suite for QUIC: {0}")]
    CipherSuite(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::ListenError),
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub local_addr: SocketAddr,
    /// The certificate clients must trust (the development one unless configured).
    pub cert_path: PathBuf,
    endpoint: Endpoint,
    pub router: Arc<Router>,
    /// The budget of partially received frames (its `used()` is what they hold now).
    pub budget: Arc<Budget>,
    /// The Kafka listener, when configured.
    pub kafka: Option<crate::kafka::KafkaListener>,
    /// The private key beside `cert_path`, and the transport settings, for
    /// [`Gateway::reload_tls`].
    key_path: PathBuf,
    /// How client certificates are checked (`--client-ca`), read again on reload.
    client_trust: Option<tls::ClientTrust>,
    transport: Arc<TransportConfig>,
    /// What the gateway counts, for a metrics listener (`None` with `--metrics-listen none`).
    pub metrics: Option<Arc<GatewayMetrics>>,
}

impl Gateway {
    /// Reads the certificate chain and key files again and serves them to new connections
    /// (SIGHUP), with the client CAs and revocation lists; connections already open keep
    /// theirs. On an error the files in use stay. The stateless-reset key stays the one
    /// derived at start. The Kafka listener's files are reloaded too.
    pub fn reload_tls(&self) -> Result<(), GatewayError> {
        if let Some(kafka) = &self.kafka {
            kafka.reload_tls()?;
        }
        let crypto =
            tls::server_config(&self.cert_path, &self.key_path, self.client_trust.as_ref())?;
        let crypto = QuicServerConfig::try_from(crypto)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(self.transport.clone());
        self.endpoint.set_server_config(Some(server));
        Ok(())
    }

    /// Stops accepting and closes every connection.
    pub fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(0), b"gateway shutting down");
    }

    /// Waits until every connection is closed.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }

    /// Closes every connection and waits for clients to acknowledge, at most
    /// [`SHUTDOWN_DRAIN_MAX`]. Streams waiting for budget or stalled mid-frame end with their
    /// connection, so they do not hold the shutdown up.
    pub async fn shutdown(&self) {
        if let Some(kafka) = &self.kafka {
            kafka.shutdown().await;
        }
        self.close();
        if tokio::time::timeout(SHUTDOWN_DRAIN_MAX, self.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                "connections still draining after {SHUTDOWN_DRAIN_MAX:?}; exiting anyway"
            );
        }
    }
}

/// How long a shutdown waits for clients to acknowledge the close: every client has been
/// sent the close by then; waiting longer only answers late packets of unresponsive ones.
pub const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(2);

pub fn transport(config: &GatewayConfig) -> Result<TransportConfig, GatewayError> {
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(config.max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(config.stream_window))
        .receive_window(VarInt::from_u32(config.connection_window))
        .send_window(SEND_WINDOW)
        .packet_threshold(spate_proto::limits::QUIC_PACKET_THRESHOLD)
        .time_threshold(spate_proto::limits::QUIC_TIME_THRESHOLD)
        .max_idle_timeout(Some(
            IdleTimeout::try_from(config.idle_timeout())
                .map_err(|_| GatewayError::IdleTimeout(config.idle_timeout()))?,
        ));
    // Large datagrams where the path allows (loopback, jumbo frames): far fewer packets.
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(UDP_PAYLOAD_MAX);
    transport.mtu_discovery_config(Some(mtu));
    Ok(transport)
}

/// Answer bytes in flight to one client unacknowledged: fetch answers of up to 16 MiB go out
/// at full speed on fast paths. (Receive windows are settings: they bound what clients can
/// make the gateway hold.)
pub const SEND_WINDOW: u64 = 32 << 20;

/// Largest UDP payload the gateway accepts, matching the MTU discovery bound: loopback and
/// jumbo-frame paths carry far fewer packets. The client uses the same value.
pub const UDP_PAYLOAD_MAX: u16 = 16_384;

/// The endpoint configuration. Its stateless-reset key is derived from the TLS private key, so
/// a restarted gateway (same key) answers packets of connections it forgot with a valid
/// stateless reset: clients learn at once that their connection is gone and reconnect,
/// instead of waiting for the idle timeout.
/// The gateway's UDP socket, bound to `address`, with `QUIC_SOCKET_BUFFER_BYTES` of receive
/// and send buffer asked for (a smaller grant, capped by `net.core.rmem_max`, is logged: raise
/// the sysctl, docs/operations.md).
pub fn quic_socket(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(address)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    let wanted = spate_proto::limits::QUIC_SOCKET_BUFFER_BYTES;
    // Best effort: the socket works with the default buffers, only less well.
    let _ = state.set_recv_buffer_size((&socket).into(), wanted);
    let _ = state.set_send_buffer_size((&socket).into(), wanted);
    let granted = state.recv_buffer_size((&socket).into()).unwrap_or(0);
    if granted < wanted {
        tracing::info!(
            wanted,
            granted,
            "the UDP receive buffer is smaller than asked (net.core.rmem_max); datagrams are dropped under load"
        );
    }
    Ok(socket)
}

pub fn endpoint_config(key: &std::path::Path) -> Result<quinn::EndpointConfig, GatewayError> {
    let secret = std::fs::read(key).map_err(|source| GatewayError::ResetKey {
        path: key.to_owned(),
        source,
    })?;
    let derive = |label: &[u8]| {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(label);
        context.update(&secret);
        context.finish()
    };
    let reset_key = derive(b"spate-gateway stateless reset key v1\0");
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key.as_ref());
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    // The connection ids carry a keyed check; with the default random key a restarted
    // gateway would drop the old connections' packets as invalid instead of resetting them.
    let cid_key = derive(b"spate-gateway connection id key v1\0");
    let mut cid_key_bytes = [0u8; 8];
    cid_key_bytes.copy_from_slice(&cid_key.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key_bytes);
    config
        .cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        })
        .max_udp_payload_size(UDP_PAYLOAD_MAX)?;
    Ok(config)
}

/// Starts the gateway: TLS, the QUIC endpoint, the accept loop, the periodic metadata refresh.
pub async fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            // A gateway on every address is reached by other machines' names for it too.
            let extra = config
                .listen
                .to_socket_addrs()
                .ok()
                .and_then(|mut addresses| addresses.next())
                .map(tls::dev_names_for)
                .unwrap_or_default();
            let (cert, key) = tls::ensure_dev_cert_for(&config.dev_cert_dir, &extra)?;
            tracing::info!(cert = %cert.display(), "using the development certificate (trust it with --ca-cert)");
            (cert, key)
        }
    };
    let client_trust = config.client_trust();
    let crypto = tls::server_config(&cert, &key, client_trust.as_ref())?;
    let crypto = QuicServerConfig::try_from(crypto)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let transport_config = Arc::new(transport(&config)?);
    server.transport_config(transport_config.clone());
    let address = config
        .listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| GatewayError::Listen(config.listen.clone()))?;
    let endpoint_error = |source| GatewayError::Endpoint { address, source };
    let socket = quic_socket(address).map_err(endpoint_error)?;
    let endpoint = Endpoint::new(
        endpoint_config(&key)?,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(endpoint_error)?;
    let local_addr = endpoint.local_addr().map_err(endpoint_error)?;
    let router = Router::new(config.node.clone(), config.shard_answer_timeout());
    let metrics = config.metrics_on().then(|| {
        let metrics = GatewayMetrics::new();
        metrics.attach(router.clone());
        metrics
    });
    if let Err(error) = router.refresh().await {
        tracing::warn!(node = %config.node, "cannot reach the node yet: {error}; will retry");
    }
    let refresher = router.clone();
    let every = config.metadata_refresh();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = refresher.refresh().await {
                tracing::warn!("metadata refresh failed: {error}");
            }
        }
    });
    tracing::info!(
        buffer_budget = config.buffer_budget,
        connection_buffer_budget = config.connection_buffer_budget,
        client_bytes_max = config.client_bytes_max(),
        "client request bytes held at most: the buffer budget for partial frames plus \
         max_connections × connection_window unread in QUIC (whose memory can reach 2.5 \
         times that)"
    );
    let budget = Budget::new(config.budget_limits());
    let kafka = match config.kafka() {
        None => None,
        Some(kafka) => Some(
            crate::kafka::start(
                kafka,
                router.clone(),
                config.frame_stall_timeout(),
                metrics.clone(),
            )
            .await?,
        ),
    };
    let config = Arc::new(config);
    tokio::spawn(accept(
        endpoint.clone(),
        router.clone(),
        config,
        budget.clone(),
        metrics.clone(),
    ));
    if let Some(metrics) = &metrics {
        metrics
            .listening
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Gateway {
        local_addr,
        cert_path: cert,
        endpoint,
        router,
        budget,
        kafka,
        key_path: key,
        client_trust,
        transport: transport_config,
        metrics,
    })
}

async fn accept(
    endpoint: Endpoint,
    router: Arc<Router>,
    config: Arc<GatewayConfig>,
    budget: Arc<Budget>,
    metrics: Option<Arc<GatewayMetrics>>,
) {
    let refused_log = Arc::new(crate::kafka::Throttled::new());
    while let Some(incoming) = endpoint.accept().await {
        let open = endpoint.open_connections();
        if open >= config.max_connections as usize {
            if let Some(metrics) = &metrics {
                metrics.refused(Protocol::Quic, Refusal::ConnectionLimit);
            }
            incoming.refuse();
            continue;
        }
        // Under load, make new clients prove their address first (a Retry round trip).
        if open >= (config.max_connections as usize) / 2 && !incoming.remote_address_validated() {
            let _ = incoming.retry();
            continue;
        }
        let router = router.clone();
        let config = config.clone();
        let connection_budget = budget.connection();
        let metrics = metrics.clone();
        let refused_log = refused_log.clone();
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    if let Some(metrics) = &metrics {
                        metrics.refused(Protocol::Quic, Refusal::Handshake);
                    }
                    // A refused client certificate among them: worth a line, not a flood.
                    if refused_log.allow() {
                        tracing::info!(%peer, "QUIC handshake failed: {error}");
                    }
                    return;
                }
            };
            if config.client_ca.is_some() {
                tracing::debug!(
                    %peer,
                    principal = principal(&connection).as_deref().unwrap_or("ANONYMOUS"),
                    "QUIC client connected"
                );
            }
            let _open = metrics
                .as_ref()
                .map(|metrics| metrics.connection(Protocol::Quic));
            let permits = Arc::new(Semaphore::new(config.frames_per_connection as usize));
            while let Ok((send, receive)) = connection.accept_bi().await {
                let stream = Stream {
                    router: router.clone(),
                    config: config.clone(),
                    connection_permits: permits.clone(),
                    charge: connection_budget.charge(),
                    connection: connection.clone(),
                    metrics: metrics.clone(),
                };
                let open = metrics.as_ref().map(GatewayMetrics::stream);
                tokio::spawn(async move {
                    let _open = open;
                    if let Err(error) = stream.serve(send, receive).await {
                        tracing::debug!("stream closed: {error}");
                    }
                });
            }
        });
    }
}

/// The principal of a connection's client certificate (`tls::principal_of`), `None` for a
/// client that presented none.
pub fn principal(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    tls::principal_of(chain.first()?)
}

/// Bytes asked of QUIC per read: large enough to move a frame in a few calls.
const READ_CHUNK_MAX: usize = 64 * 1024;

/// QUIC application error code with which a stream is stopped after a stalled frame.
pub const STREAM_STALLED: u32 = 1;

/// Why a stream's serving ended early.
#[derive(Debug, Error)]
pub enum StreamError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("reading the stream failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("frame stalled: {received} of {size} bytes received and none for {waited:?}")]
    Stalled {
        received: usize,
        size: usize,
        waited: Duration,
    },
    #[error("the connection closed")]
    ConnectionClosed,
}

/// One client stream being served.
struct Stream {
    router: Arc<Router>,
    config: Arc<GatewayConfig>,
    connection_permits: Arc<Semaphore>,
    /// The budget bytes this stream holds: always at least the bytes in its frame buffer.
    charge: Charge,
    connection: quinn::Connection,
    metrics: Option<Arc<GatewayMetrics>>,
}

impl Stream {
    async fn serve(
        mut self,
        mut send: quinn::SendStream,
        mut receive: quinn::RecvStream,
    ) -> Result<(), StreamError> {
        let per_stream = self.config.frames_per_stream as usize;
        let (answers, mut outgoing) = mpsc::channel::<(Bytes, Bytes)>(per_stream);
        let writer = tokio::spawn(async move {
            while let Some((header, body)) = outgoing.recv().await {
                // Handed to quinn as they are: a fetch answer's records are not copied here.
                if send.write_all_chunks(&mut [header, body]).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
        });
        let stream_permits = Arc::new(Semaphore::new(per_stream));
        let result = self
            .read_frames(&mut receive, &answers, &stream_permits)
            .await;
        if matches!(
            result,
            Err(StreamError::Frame(_) | StreamError::Stalled { .. })
        ) {
            // Tell the client to stop sending: nothing more is read from this stream.
            let _ = receive.stop(VarInt::from_u32(STREAM_STALLED));
        }
        // Give the budget back before waiting for answers to go out.
        drop(self.charge);
        drop(receive);
        // Let the answers on their way go out, then finish the stream.
        let _ = stream_permits
            .acquire_many(self.config.frames_per_stream)
            .await;
        drop(answers);
        let _ = writer.await;
        result
    }

    /// Reads and forwards frames until the stream ends or fails. Bytes are read from QUIC
    /// only once the budget covers them: the header first, then exactly the rest of the frame
    /// it announces, so the buffer never holds more than the charge.
    async fn read_frames(
        &mut self,
        receive: &mut quinn::RecvStream,
        answers: &mpsc::Sender<(Bytes, Bytes)>,
        stream_permits: &Arc<Semaphore>,
    ) -> Result<(), StreamError> {
        let decoder = FrameDecoder::new(self.config.frame_size_max);
        let mut buffer = BytesMut::new();
        loop {
            assert!(buffer.len() as u64 <= self.charge.bytes());
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    let size = frame.bytes().len() as u64;
                    if let Some(metrics) = &self.metrics {
                        metrics.received(Protocol::Quic, frame.bytes().len());
                    }
                    self.forward(frame, answers, stream_permits).await?;
                    self.charge.release(size);
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    let frame = Response::frame_error(&buffer, &error);
                    let _ = answers.send((frame, Bytes::new())).await;
                    return Err(error.into());
                }
            }
            // The header, or the rest of the frame it announced.
            let unit = buffer.len() + decoder.needed(&buffer);
            assert!(unit > buffer.len() && unit <= self.config.frame_size_max as usize);
            if self.charge.bytes() < unit as u64 {
                tokio::select! {
                    () = self.charge.grow_to(unit as u64) => {}
                    _ = self.connection.closed() => return Err(StreamError::ConnectionClosed),
                }
            }
            if buffer.is_empty() {
                // A fresh buffer for each frame, sized by its header: a buffer split after a
                // frame would reserve its old capacity again.
                buffer = BytesMut::new();
            }
            buffer.reserve(unit - buffer.len());
            let want = (unit - buffer.len()).min(READ_CHUNK_MAX);
            let read = receive.read_chunk(want, true);
            let chunk = if buffer.is_empty() {
                // Between frames a stream may idle as long as its connection lives.
                read.await?
            } else {
                let stall = self.config.frame_stall_timeout();
                match tokio::time::timeout(stall, read).await {
                    Ok(chunk) => chunk?,
                    Err(_) => {
                        let error = StreamError::Stalled {
                            received: buffer.len(),
                            size: unit,
                            waited: stall,
                        };
                        let answer = Response::error(
                            FrameHeader::api_key_of(&buffer),
                            ErrorCode::Timeout,
                            error.to_string(),
                        )
                        .to_frame(FrameHeader::correlation_id_of(&buffer));
                        let _ = answers.send((answer, Bytes::new())).await;
                        return Err(error);
                    }
                }
            };
            match chunk {
                Some(chunk) => buffer.extend_from_slice(&chunk.bytes),
                // The client finished the stream (a partial frame at its end is dropped).
                None => return Ok(()),
            }
        }
    }

    /// Sends a whole frame towards its shard (in stream order) and arranges for its answer.
    async fn forward(
        &self,
        frame: Frame,
        answers: &mpsc::Sender<(Bytes, Bytes)>,
        stream_permits: &Arc<Semaphore>,
    ) -> Result<(), StreamError> {
        let (Ok(stream_permit), Ok(connection_permit)) = (
            stream_permits.clone().acquire_owned().await,
            self.connection_permits.clone().acquire_owned().await,
        ) else {
            return Err(StreamError::ConnectionClosed);
        };
        let api_key = frame.head.api_key;
        let correlation_id = frame.head.correlation_id;
        // Sent in stream order; the answer is awaited beside the next frames.
        let pending = self.router.send(&frame).await;
        let router = self.router.clone();
        let answers = answers.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let answer = router.answer(pending, api_key, correlation_id).await;
            if let Some(metrics) = &metrics {
                metrics.quic_request(api_key, FrameHeader::error_code_of(&answer.0, &answer.1));
                metrics.sent(Protocol::Quic, answer.0.len() + answer.1.len());
            }
            let _ = answers.send(answer).await;
            drop((stream_permit, connection_permit));
        });
        Ok(())
    }
}
