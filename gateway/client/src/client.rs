//! [`Client`]: one QUIC connection to a gateway, re-established on the next request after it
//! breaks. Requests travel on a few long-lived bidirectional streams ("lanes"): lane 0 carries
//! produce and admin requests, so a partition's batches keep their order; the fetch lanes
//! carry fetches and offset lookups, so parked long polls never hold up produces. Answers are
//! matched to requests by correlation id. Every request has a deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{IdleTimeout, VarInt};
use spate_format::{BatchError, BuildError, RecordError};
use spate_proto::limits::RESPONSE_SIZE_MAX;
use spate_proto::{
    AlterTopicRequest, AlterTopicResponse, CreateTopicRequest, DeleteRecordsRequest,
    DeleteTopicRequest, DescribePartitionRequest, DescribePartitionResponse, ErrorCode,
    ErrorResponse, FetchRequest, FetchResponse, FindRecordRequest, FrameDecoder, GroupRequest,
    GroupResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetSpec, PartitionId, Pipeline, ProduceRequest, ProduceResponse, ReadEpochs, RecordTarget,
    Request, Response, Setting, TopicMetadata,
};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

pub use spate_proto::ALPN;

/// Frames one lane queues before `request` waits (the gateway admits 64 in flight per stream
/// by default; QUIC flow control bounds the rest).
pub const LANE_QUEUE_MAX: usize = 256;

/// Fetch lanes per connection: fetches of partition p use lane `1 + p % FETCH_LANES`. Each
/// lane holds at most the gateway's per-stream limit of parked long polls.
pub const FETCH_LANES: u32 = 8;

/// The `ca_cert` that means the operating system's trusted CAs instead of a file.
pub const SYSTEM_CA: &str = "system";

/// How long connecting (QUIC and TLS handshakes) may take. QUIC over UDP learns nothing from
/// a port nobody listens on (quinn does not surface ICMP), so a wrong address is only known
/// by this deadline: 2 s, so a mistyped address is named quickly, yet long enough for one
/// retransmission of the first packet (quinn's first probe timeout is about 1 s) on a lossy
/// path. The SDK retries a failed connection where it retries requests (producers,
/// consumers), so a slow handshake costs a retry, not an error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Deadline of a request that does not wait at the server; a fetch gets its `max_wait` on top.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection that hears nothing from the gateway for this long is closed (keep-alives
/// every `KEEP_ALIVE_INTERVAL` keep a healthy one open).
pub const IDLE_TIMEOUT_MS: u32 = 30_000;

/// Keep-alive interval, well inside the gateway's idle timeout (30 s by default).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Largest UDP payload sent or accepted, the gateway's bound too (MTU discovery finds what
/// the path carries; loopback carries all of it).
pub const UDP_PAYLOAD_MAX: u16 = 16_384;

/// A lane's read buffer starts this large; it grows to the answer being read.
const LANE_BUFFER_START: usize = 64 << 10;

/// Most bytes taken from quinn per read of a lane.
const LANE_READ_MAX: usize = 1 << 20;

/// Receive windows: one fetch answer (up to 16 MiB) per stream, a few at once per connection.
pub const STREAM_WINDOW: u32 = 16 << 20;
pub const CONNECTION_WINDOW: u32 = 64 << 20;

#[derive(Debug, Clone, Error)]
pub enum ClientError {
    #[error("cannot use the CA certificate {}: {source}", path.display())]
    Certificate {
        path: PathBuf,
        source: CertificateError,
    },
    #[error("cannot use the client certificate {}: {source}", path.display())]
    Identity {
        path: PathBuf,
        source: CertificateError,
    },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The gateway ended the TLS handshake: it wants a client certificate this client did not
    /// give, or does not accept the one given. Not worth a retry.
    #[error("the gateway at {address} refused this client: {reason}")]
    Refused { address: SocketAddr, reason: String },
    #[error("cannot connect to the gateway at {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: ConnectError,
    },
    /// The connection broke while the request was in flight: it may or may not have been
    /// carried out.
    #[error("the connection to the gateway broke: {0}")]
    Connection(ConnectionLost),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Server(ErrorResponse),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// A consumer's topic was deleted while it read it.
    #[error("topic {0} was deleted")]
    TopicDeleted(String),
    #[error("partition {partition} does not exist: {topic} has {partitions} partitions")]
    NoSuchPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("invalid record: {0}")]
    InvalidRecord(#[from] BuildError),
    #[error(
        "invalid record: it needs {size} bytes, more than a batch holds ({} bytes with its \
         {}-byte header)",
        spate_format::limits::BATCH_SIZE_MAX,
        spate_format::limits::BATCH_HEADER_SIZE
    )]
    RecordTooLarge { size: u64 },
    #[error("invalid setting {field}: {value} (valid: {valid})")]
    InvalidSetting {
        field: &'static str,
        value: u64,
        valid: String,
    },
    #[error("the producer is closed")]
    Closed,
    /// An answer the SDK cannot use: a version mismatch or a bug, not worth a retry.
    #[error("invalid answer from the gateway: {0}")]
    InvalidAnswer(InvalidAnswer),
    /// A produce failed after one of its attempts may have reached the node (its answer was
    /// lost): the records may or may not be stored. Any other produce failure means they are
    /// not.
    #[error("may or may not be stored (an answer was lost): {0}")]
    MaybeStored(Box<ClientError>),
}

/// Why the CA certificate file cannot be used.
#[derive(Debug, Clone, Error)]
pub enum CertificateError {
    #[error("{0}")]
    Read(Arc<std::io::Error>),
    #[error("not PEM: {0}")]
    Pem(Arc<std::io::Error>),
    #[error("no PEM certificate in the file")]
    Empty,
    #[error("no PEM private key in the file")]
    NoKey,
    #[error(
        "an encrypted private key, which the SDK cannot use: give it the key unencrypted \
         (`openssl pkey -in FILE -out key.pem` asks for the passphrase once) and protect that \
         file with its permissions (chmod 600)"
    )]
    EncryptedKey,
    /// `system`: the operating system's trusted CAs could not be loaded.
    #[error("the system's trusted certificates cannot be loaded: {0}")]
    System(String),
    #[error("{0}")]
    Rejected(rustls::Error),
}

/// Why a connection could not be set up.
#[derive(Debug, Clone, Error)]
pub enum ConnectError {
    #[error("cannot open the UDP socket: {0}")]
    Socket(Arc<std::io::Error>),
    #[error("{0}")]
    Start(quinn::ConnectError),
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("{0}")]
    Handshake(quinn::ConnectionError),
    #[error("the QUIC configuration is refused: {0}")]
    Config(String),
}

/// How a connection failed a request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ConnectionLost {
    #[error("its answers stopped")]
    AnswersStopped,
    #[error("the request stream is closed")]
    StreamClosed,
    #[error("the stream closed before the answer came")]
    NoAnswer,
}

/// What is wrong with an answer.
#[derive(Debug, Clone, Error)]
pub enum InvalidAnswer {
    #[error("an answer of api key {api_key} to a different request")]
    WrongKind { api_key: u16 },
    #[error("a fetched batch is invalid: {0}")]
    Batch(BatchError),
    #[error("a fetched batch's records are invalid: {0}")]
    Records(RecordError),
}

/// Runs `attempt` again while it fails for a passing reason ([`ClientError::is_retriable`]),
/// at most `retries` more times, pausing `first` (doubling up to `max`) between tries; `what`
/// names it in the debug log.
pub(crate) async fn retry_passing<T, F, Fut>(
    what: &str,
    retries: u32,
    first: Duration,
    max: Duration,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut pause = first;
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(error) if error.is_retriable() && tries < retries => {
                tries += 1;
                tracing::debug!("{what} retried: {error}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(max);
            }
            other => return other,
        }
    }
}

/// A client certificate and its private key (PEM files, the key unencrypted), presented to a
/// gateway that asks for one (mutual TLS, docs/security.md). The certificate file may hold
/// the chain: the client's certificate first, then intermediate CAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientIdentity {
    /// The certificate chain and key, read from their files.
    fn load(
        &self,
    ) -> Result<
        (
            Vec<rustls::pki_types::CertificateDer<'static>>,
            rustls::pki_types::PrivateKeyDer<'static>,
        ),
        ClientError,
    > {
        let cert_error = |source: CertificateError| ClientError::Identity {
            path: self.cert.clone(),
            source,
        };
        let key_error = |source: CertificateError| ClientError::Identity {
            path: self.key.clone(),
            source,
        };
        let chain = read_certs(&self.cert).map_err(cert_error)?;
        let bytes = std::fs::read(&self.key)
            .map_err(|error| key_error(CertificateError::Read(error.into())))?;
        let encrypted = [
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----".as_slice(),
            b"Proc-Type: 4,ENCRYPTED".as_slice(),
        ]
        .iter()
        .any(|marker| bytes.windows(marker.len()).any(|window| window == *marker));
        if encrypted {
            return Err(key_error(CertificateError::EncryptedKey));
        }
        let key = rustls_pemfile::private_key(&mut bytes.as_slice())
            .map_err(|error| key_error(CertificateError::Pem(error.into())))?
            .ok_or_else(|| key_error(CertificateError::NoKey))?;
        Ok((chain, key))
    }
}

/// The PEM certificates in the file at `path` (at least one).
fn read_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, CertificateError> {
    let bytes = std::fs::read(path).map_err(|error| CertificateError::Read(error.into()))?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CertificateError::Pem(error.into()))?;
    if certs.is_empty() {
        return Err(CertificateError::Empty);
    }
    Ok(certs)
}

/// What the TLS alert with which a gateway closed a connection during the handshake says
/// about this client, if the connection was closed so (QUIC carries the alert as crypto
/// error 0x100 + alert).
fn refusal(address: SocketAddr, reason: Option<&quinn::ConnectionError>) -> Option<ClientError> {
    let quinn::ConnectionError::ConnectionClosed(close) = reason? else {
        return None;
    };
    let code = u64::from(close.error_code);
    if !(0x100..0x200).contains(&code) {
        return None;
    }
    let reason = match code & 0xff {
        116 => "it requires a client certificate (give one: --client-cert and --client-key, \
                or a ClientIdentity in the SDK)"
            .to_owned(),
        48 => "it does not trust the client certificate's issuer (unknown CA: is the \
               certificate signed by a CA in the gateway's --client-ca?)"
            .to_owned(),
        51 => "it does not trust the client certificate: its signature does not verify with \
               the gateway's --client-ca (did another CA of the same name sign it?)"
            .to_owned(),
        44 => "the client certificate is revoked".to_owned(),
        45 => "the client certificate has expired (or is not valid yet)".to_owned(),
        43 => "the client certificate is not made for client authentication (it needs \
               extendedKeyUsage clientAuth, or none)"
            .to_owned(),
        42 => "the client certificate is invalid (bad certificate)".to_owned(),
        alert => format!("TLS handshake failed (alert {alert}: {close})"),
    };
    Some(ClientError::Refused { address, reason })
}

impl ClientError {
    /// Whether sending the same request again later can succeed, and doing so is harmless for
    /// a request that only reads (fetch, list offsets, metadata).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Connection(_) | ClientError::Timeout(_) => {
                true
            }
            ClientError::Server(error) => error.code.is_retriable(),
            _ => false,
        }
    }

    /// The server's error code, if the server answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(error) => Some(error.code),
            ClientError::MaybeStored(error) => error.code(),
            _ => None,
        }
    }

    /// Whether a request that met this error may have been carried out: its answer was lost
    /// (the connection broke, no answer in time, the gateway lost the shard after forwarding).
    /// Every other error is a refusal, or was met before the request left.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::Connection(_) | ClientError::Timeout(_) | ClientError::MaybeStored(_) => {
                true
            }
            // `Timeout`: the shard did not answer in time, or the controller did not (a topic
            // may still be made); also a frame that stalled before it was forwarded, which
            // is taken as unknown too (the safe side).
            ClientError::Server(error) => {
                matches!(error.code, ErrorCode::OutcomeUnknown | ErrorCode::Timeout)
            }
            _ => false,
        }
    }
}

/// The requests in flight on a session, by correlation id (ids are per session).
type Waiters = Arc<Pipeline<oneshot::Sender<Response>>>;

/// One QUIC connection and its lanes.
#[derive(Debug)]
struct Session {
    connection: quinn::Connection,
    lanes: Vec<mpsc::Sender<Bytes>>,
    waiters: Waiters,
    broken: Arc<AtomicBool>,
}

impl Session {
    fn is_usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && self.connection.close_reason().is_none()
    }
}

#[derive(Debug)]
struct Shared {
    address: SocketAddr,
    server_name: String,
    endpoint: quinn::Endpoint,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

/// A connection to a Spate gateway. Cheap to clone; clones share the connection. After the
/// connection breaks, the next request connects again; requests in flight at the break fail
/// with [`ClientError::Connection`].
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// A topic with, per partition, its owner and its offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub retention_ms: Setting,
    pub retention_bytes: Setting,
    pub segment_bytes: Setting,
    /// `min.insync.replicas` (`Setting::Value`; `Default` from a node that does not say).
    pub min_insync_replicas: Setting,
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: u32,
    /// The node shard that owns the partition.
    pub shard: u16,
    pub log_start_offset: u64,
    /// The offset the next durable record gets.
    pub high_watermark: u64,
    /// Bytes of its segment files on the node.
    pub size_bytes: u64,
    pub segments: u32,
    /// Why the node refuses writes to it, if it does.
    pub fenced: Option<String>,
    /// The timestamp of its oldest record (ms), if it has records.
    pub first_timestamp: Option<i64>,
    /// Its newest record timestamp (ms), if it has records.
    pub last_timestamp: Option<i64>,
    /// Records whose timestamp is in the last minute (the rate: this / 60 per second).
    pub records_last_minute: u64,
}

/// The window `records_last_minute` counts over.
pub const RATE_WINDOW_MS: i64 = 60_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// The QUIC client configuration the SDK uses: TLS 1.3 trusting the certificates in `ca`,
/// ALPN `spate/1`, keep-alives, and receive windows sized for fetch answers. Public for tools
/// that speak the frames themselves (benchmarks, tests).
pub fn quic_client_config(ca: &Path) -> Result<quinn::ClientConfig, ClientError> {
    quic_client_config_as(ca, None)
}

/// [`quic_client_config`] presenting `identity`'s certificate to a gateway that asks for one.
pub fn quic_client_config_as(
    ca: &Path,
    identity: Option<&ClientIdentity>,
) -> Result<quinn::ClientConfig, ClientError> {
    let certificate_error = |source: CertificateError| ClientError::Certificate {
        path: ca.to_owned(),
        source,
    };
    let mut roots = rustls::RootCertStore::empty();
    if ca == Path::new(SYSTEM_CA) {
        // The operating system's trust store (a gateway with a certificate from a public CA
        // or one the machine trusts); certificates it cannot parse are skipped.
        let loaded = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            let reasons: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
            return Err(certificate_error(CertificateError::System(
                if reasons.is_empty() {
                    "the store is empty".to_owned()
                } else {
                    reasons.join("; ")
                },
            )));
        }
    } else {
        for cert in read_certs(ca).map_err(certificate_error)? {
            roots
                .add(cert)
                .map_err(|error| certificate_error(CertificateError::Rejected(error)))?;
        }
    }
    if roots.is_empty() {
        return Err(certificate_error(CertificateError::Empty));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut crypto = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let (chain, key) = identity.load()?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| ClientError::Identity {
                    path: identity.key.clone(),
                    source: CertificateError::Rejected(error),
                })?
        }
    };
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    // Fails only for a crypto provider without TLS 1.3's initial cipher suite; ring has it.
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|_| ClientError::Tls(rustls::Error::General("no initial cipher suite".into())))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(IDLE_TIMEOUT_MS))))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .packet_threshold(spate_proto::limits::QUIC_PACKET_THRESHOLD)
        .time_threshold(spate_proto::limits::QUIC_TIME_THRESHOLD);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(UDP_PAYLOAD_MAX);
    transport.mtu_discovery_config(Some(mtu));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A client's UDP socket, bound to `bind`, with `QUIC_SOCKET_BUFFER_BYTES` of receive and
/// send buffer asked for (best effort: the kernel caps it at `net.core.rmem_max`/`wmem_max`).
/// Public for tools that run QUIC beside the SDK (the benchmark's baseline).
pub fn quic_socket(bind: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(bind)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    let wanted = spate_proto::limits::QUIC_SOCKET_BUFFER_BYTES;
    let _ = state.set_recv_buffer_size((&socket).into(), wanted);
    let _ = state.set_send_buffer_size((&socket).into(), wanted);
    Ok(socket)
}

/// Reads answers from one lane and hands each to its waiter; when the lane ends, marks the
/// session broken and fails every waiter.
async fn read_lane(mut receive: quinn::RecvStream, waiters: Waiters, broken: Arc<AtomicBool>) {
    let decoder = FrameDecoder::new(RESPONSE_SIZE_MAX);
    let mut buffer = BytesMut::with_capacity(LANE_BUFFER_START);
    'read: loop {
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    let Ok(response) = Response::decode(&frame) else {
                        break 'read;
                    };
                    if let Some(waiter) = waiters.take(frame.head.correlation_id) {
                        let _ = waiter.send(response);
                    }
                }
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
        match receive.read_chunk(LANE_READ_MAX, true).await {
            Ok(Some(chunk)) => {
                // Room for the rest of the answer being read, reserved at once: a fetch answer
                // of a megabyte would otherwise be moved each time the buffer doubles.
                buffer.reserve(decoder.needed(&buffer).max(chunk.bytes.len()));
                buffer.extend_from_slice(&chunk.bytes);
            }
            _ => break,
        }
    }
    broken.store(true, Ordering::Relaxed);
    // Dropping the senders fails every caller still waiting.
    waiters.close();
}

impl Client {
    /// Connects to the gateway at `address`, trusting the certificate(s) in `ca_cert` for the
    /// server name `server_name` (`localhost` for the development certificate).
    pub async fn connect(
        address: SocketAddr,
        ca_cert: &Path,
        server_name: &str,
    ) -> Result<Client, ClientError> {
        Client::connect_as(address, ca_cert, server_name, None).await
    }

    /// [`Client::connect`], presenting `identity`'s certificate to a gateway that asks for
    /// client certificates (`--client-ca`); the gateway's principal for this client is the
    /// certificate's (docs/security.md).
    pub async fn connect_as(
        address: SocketAddr,
        ca_cert: &Path,
        server_name: &str,
        identity: Option<&ClientIdentity>,
    ) -> Result<Client, ClientError> {
        let connect_error = |source: ConnectError| ClientError::Connect { address, source };
        let bind: SocketAddr = if address.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0u8; 4], 0))
        };
        let socket_error =
            |error: std::io::Error| connect_error(ConnectError::Socket(error.into()));
        let socket = quic_socket(bind).map_err(socket_error)?;
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(UDP_PAYLOAD_MAX)
            .map_err(|error| connect_error(ConnectError::Config(error.to_string())))?;
        let mut endpoint =
            quinn::Endpoint::new(endpoint_config, None, socket, Arc::new(quinn::TokioRuntime))
                .map_err(socket_error)?;
        endpoint.set_default_client_config(quic_client_config_as(ca_cert, identity)?);
        let client = Client {
            shared: Arc::new(Shared {
                address,
                server_name: server_name.to_owned(),
                endpoint,
                session: tokio::sync::Mutex::new(None),
            }),
        };
        client.session().await?;
        Ok(client)
    }

    /// The gateway's address.
    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    /// The current session, or a new one when there is none or it broke.
    async fn session(&self) -> Result<Arc<Session>, ClientError> {
        let mut current = self.shared.session.lock().await;
        if let Some(session) = current.as_ref().filter(|session| session.is_usable()) {
            return Ok(session.clone());
        }
        if let Some(old) = current.take() {
            old.connection.close(VarInt::from_u32(0), b"reconnecting");
        }
        let address = self.shared.address;
        let connect_error = |source: ConnectError| ClientError::Connect { address, source };
        let connecting = self
            .shared
            .endpoint
            .connect(address, &self.shared.server_name)
            .map_err(|error| connect_error(ConnectError::Start(error)))?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| connect_error(ConnectError::HandshakeTimeout(CONNECT_TIMEOUT)))?
            .map_err(|error| {
                refusal(address, Some(&error))
                    .unwrap_or_else(|| connect_error(ConnectError::Handshake(error)))
            })?;
        let waiters: Waiters = Arc::default();
        let broken = Arc::new(AtomicBool::new(false));
        let mut lanes = Vec::new();
        for _ in 0..=FETCH_LANES {
            let (mut send, receive) = connection.open_bi().await.map_err(|error| {
                refusal(address, Some(&error))
                    .unwrap_or_else(|| connect_error(ConnectError::Handshake(error)))
            })?;
            let (lane, mut queue) = mpsc::channel::<Bytes>(LANE_QUEUE_MAX);
            let writer_broken = broken.clone();
            tokio::spawn(async move {
                while let Some(frame) = queue.recv().await {
                    // The frame is handed to quinn as it is, not copied into its buffer.
                    if send.write_chunk(frame).await.is_err() {
                        writer_broken.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                let _ = send.shutdown().await;
            });
            tokio::spawn(read_lane(receive, waiters.clone(), broken.clone()));
            lanes.push(lane);
        }
        let session = Arc::new(Session {
            connection,
            lanes,
            waiters,
            broken,
        });
        *current = Some(session.clone());
        Ok(session)
    }

    /// Queues a request on its lane and returns where its answer arrives. Requests queued by
    /// one caller on one lane reach the gateway in that order. Waits while the lane is full.
    pub(crate) async fn submit(&self, request: &Request) -> Result<Submitted, ClientError> {
        let lane = match request {
            Request::Fetch(fetch) => 1 + fetch.partition.0 % FETCH_LANES,
            Request::ListOffsets(list) => 1 + list.partition.0 % FETCH_LANES,
            _ => 0,
        };
        // A fetch waits at the node up to its `max_wait_ms`, a JoinGroup until the join phase
        // ends (at most the largest rebalance timeout of the group), a SyncGroup until the
        // leader's assignment.
        let timeout = REQUEST_TIMEOUT + request.parked_wait();
        self.submit_frame(lane, timeout, |id| request.to_frame(id))
            .await
    }

    /// Queues a `Produce` frame (made by `spate_proto::produce_frame_in_place`) on the produce
    /// lane under a fresh correlation id. `frame` becomes the bytes sent: rewritten in place
    /// when no one else holds them (the first send), copied otherwise (a resend while quinn
    /// may still hold the earlier bytes).
    pub(crate) async fn submit_produce_frame(
        &self,
        frame: &mut Bytes,
    ) -> Result<Submitted, ClientError> {
        self.submit_frame(0, REQUEST_TIMEOUT, |id| {
            let mut bytes = match std::mem::take(frame).try_into_mut() {
                Ok(unique) => unique,
                Err(shared) => BytesMut::from(&shared[..]),
            };
            spate_proto::frame::FrameHeader::set_correlation_id(&mut bytes, id);
            let sent = bytes.freeze();
            *frame = sent.clone();
            sent
        })
        .await
    }

    /// Queues the frame `encode` makes for the correlation id it is given on `lane`.
    async fn submit_frame(
        &self,
        lane: u32,
        timeout: Duration,
        encode: impl FnOnce(u64) -> Bytes,
    ) -> Result<Submitted, ClientError> {
        let session = self.session().await?;
        let (sender, receiver) = oneshot::channel();
        let Some(id) = session.waiters.register(sender) else {
            session.broken.store(true, Ordering::Relaxed);
            return Err(ClientError::Connection(ConnectionLost::AnswersStopped));
        };
        let queued = session.lanes[lane as usize].send(encode(id)).await.is_ok();
        if !queued {
            session.waiters.cancel(id);
            session.broken.store(true, Ordering::Relaxed);
            return Err(ClientError::Connection(ConnectionLost::StreamClosed));
        }
        Ok(Submitted {
            receiver,
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            id,
            session,
        })
    }

    /// Sends `ask(true)`, a request with a trailing part a node of before does not know (it
    /// refuses the request as `Malformed`), and then `ask(false)`, the request of before.
    async fn asking_for_more(
        &self,
        ask: impl Fn(bool) -> Request,
    ) -> Result<Response, ClientError> {
        match self.request(&ask(true)).await {
            Err(ClientError::Server(refused)) if refused.code == ErrorCode::Malformed => {
                self.request(&ask(false)).await
            }
            answer => answer,
        }
    }

    /// Sends a request and waits for its answer; an error answer becomes `ClientError::Server`.
    pub async fn request(&self, request: &Request) -> Result<Response, ClientError> {
        self.submit(request).await?.answer().await
    }

    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        retention_ms: Setting,
        retention_bytes: Setting,
    ) -> Result<(), ClientError> {
        self.create_replicated_topic(topic, partitions, 0, retention_ms, retention_bytes)
            .await
    }

    /// Creates a topic with `replication_factor` copies of each partition on distinct nodes
    /// (0: the node's default, 1; a single node holds one copy, a cluster at most as many as
    /// it has live nodes, else `InvalidReplicationFactor`).
    pub async fn create_replicated_topic(
        &self,
        topic: &str,
        partitions: u32,
        replication_factor: u16,
        retention_ms: Setting,
        retention_bytes: Setting,
    ) -> Result<(), ClientError> {
        self.create_topic_with(CreateTopicRequest {
            legacy_layout: false,
            topic: topic.into(),
            partitions,
            retention_ms,
            retention_bytes,
            segment_bytes: Setting::Default,
            replication_factor,
            min_insync_replicas: Setting::Default,
        })
        .await
    }

    /// Creates a topic with every setting the protocol has (segment size,
    /// `min.insync.replicas`, …); `Setting::Default` takes the node's.
    pub async fn create_topic_with(&self, request: CreateTopicRequest) -> Result<(), ClientError> {
        match self.request(&Request::CreateTopic(request)).await? {
            Response::CreateTopic(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Changes a topic's retention and segment size (`None` keeps a setting;
    /// `Setting::Default` goes back to the node's; a new segment size applies from each
    /// partition's next roll). Every shard applies it before the answer, which is the topic's
    /// settings as they are now.
    pub async fn alter_topic(
        &self,
        topic: &str,
        retention_ms: Option<Setting>,
        retention_bytes: Option<Setting>,
        segment_bytes: Option<Setting>,
    ) -> Result<AlterTopicResponse, ClientError> {
        self.alter_topic_with(AlterTopicRequest {
            topic: topic.into(),
            retention_ms,
            retention_bytes,
            segment_bytes,
            min_insync_replicas: None,
            validate_only: false,
        })
        .await
    }

    /// Changes any of a topic's settings (`None` keeps one; `min_insync_replicas` too).
    /// The answer names the retention and segment settings as they are now; read
    /// `min.insync.replicas` back with [`Client::describe_topic`].
    pub async fn alter_topic_with(
        &self,
        request: AlterTopicRequest,
    ) -> Result<AlterTopicResponse, ClientError> {
        match self.request(&Request::AlterTopic(request)).await? {
            Response::AlterTopic(altered) => Ok(altered),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a partition's records before `before` (Kafka's DeleteRecords): its log start
    /// moves there, durably, before the answer; `None` deletes up to the high watermark.
    /// Returns the log start now (higher than asked if the log already started further on).
    /// Offsets past the high watermark are refused (`ErrorCode::OffsetOutOfRange`). The
    /// segments wholly below the new start are deleted right after.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        before: Option<u64>,
    ) -> Result<u64, ClientError> {
        let request = Request::DeleteRecords(DeleteRecordsRequest {
            topic: topic.into(),
            partition: PartitionId(partition),
            offset: before.unwrap_or(spate_proto::DELETE_RECORDS_TO_HIGH_WATERMARK),
        });
        match self.request(&request).await? {
            Response::DeleteRecords(moved) => Ok(moved.log_start_offset),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<(), ClientError> {
        let request = Request::DeleteTopic(DeleteTopicRequest {
            topic: topic.into(),
        });
        match self.request(&request).await? {
            Response::DeleteTopic(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Topics, their settings and which shard owns each partition (all topics when `topics`
    /// is empty).
    /// The partition maps of `topics`; of every topic when empty (the internal offsets
    /// topic only when named).
    pub async fn metadata(&self, topics: &[&str]) -> Result<MetadataResponse, ClientError> {
        let ask = |settings| {
            Request::Metadata(MetadataRequest {
                placement: false,
                racks: false,
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                settings,
            })
        };
        match self.asking_for_more(ask).await? {
            Response::Metadata(mut metadata) => {
                if topics.is_empty() {
                    metadata
                        .topics
                        .retain(|topic| topic.name != spate_proto::OFFSETS_TOPIC);
                }
                Ok(metadata)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// What the node behind the gateway knows of its cluster: the registered members (with
    /// their shards), the elected controller, the answering node's id, and the partitions'
    /// health (how many, which are under-replicated or offline; `None` from a node that
    /// does not say). A single node (no `--etcd`) answers with an empty cluster name and
    /// itself as the one member.
    pub async fn describe_cluster(
        &self,
    ) -> Result<spate_proto::DescribeClusterResponse, ClientError> {
        let ask = |newer| {
            Request::DescribeCluster(spate_proto::DescribeClusterRequest {
                partitions: newer,
                moves: newer,
                racks: newer,
            })
        };
        match self.asking_for_more(ask).await? {
            Response::DescribeCluster(cluster) => Ok(cluster),
            other => Err(unexpected(&other)),
        }
    }

    /// Moves partitions between the nodes of a cluster (docs/cluster.md, "Moving
    /// partitions"): a reassignment or its cancellation, a preferred-leader election, a
    /// decommission or its end. The answer counts the partitions changed and lists why the
    /// others were not; a single node refuses (`InvalidRequest`).
    pub async fn move_partitions(
        &self,
        change: spate_proto::PartitionMove,
    ) -> Result<spate_proto::MovePartitionsResponse, ClientError> {
        let request = Request::MovePartitions(spate_proto::MovePartitionsRequest { change });
        match self.request(&request).await? {
            Response::MovePartitions(answer) => Ok(answer),
            other => Err(unexpected(&other)),
        }
    }

    /// Moves `partitions` of `topic` (all of them when empty) to `replicas` (node ids, the
    /// first the preferred leader), the new replicas catching up at `throttle` bytes/s.
    pub async fn reassign_partitions(
        &self,
        topic: &str,
        partitions: &[u32],
        replicas: &[u32],
        throttle: Option<u64>,
    ) -> Result<spate_proto::MovePartitionsResponse, ClientError> {
        self.move_partitions(spate_proto::PartitionMove::Reassign {
            topic: topic.to_owned(),
            partitions: partitions.to_vec(),
            replicas: replicas.to_vec(),
            throttle,
        })
        .await
    }

    /// Makes each partition's preferred replica its leader where it is alive and in sync:
    /// every partition of every topic (`topic` `None`), or of one topic (`partitions` empty),
    /// or the ones named.
    pub async fn elect_preferred_leaders(
        &self,
        topic: Option<&str>,
        partitions: &[u32],
    ) -> Result<spate_proto::MovePartitionsResponse, ClientError> {
        self.move_partitions(spate_proto::PartitionMove::ElectPreferred {
            topic: topic.map(str::to_owned),
            partitions: partitions.to_vec(),
        })
        .await
    }

    /// Sends a consumer-group request to the group's coordinator (through the gateway).
    pub async fn group(&self, request: GroupRequest) -> Result<GroupResponse, ClientError> {
        match self.request(&Request::Group(request)).await? {
            Response::Group(answer) => Ok(answer),
            other => Err(unexpected(&other)),
        }
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>, ClientError> {
        let mut topics = self.metadata(&[]).await?.topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// One topic's metadata; `ClientError::UnknownTopic` if it does not exist.
    pub async fn topic(&self, topic: &str) -> Result<TopicMetadata, ClientError> {
        let metadata = self.metadata(&[topic]).await.map_err(|error| match error {
            ClientError::Server(ref answer) if answer.code == ErrorCode::UnknownTopic => {
                ClientError::UnknownTopic(topic.to_owned())
            }
            other => other,
        })?;
        metadata
            .topics
            .into_iter()
            .find(|found| found.name == topic)
            .ok_or_else(|| ClientError::UnknownTopic(topic.to_owned()))
    }

    /// A topic with, per partition, its owner shard, offsets, bytes on disk, segments, fence,
    /// oldest and newest record timestamps, and the records appended in the last minute (the
    /// requests of all partitions are sent at once).
    pub async fn describe_topic(&self, topic: &str) -> Result<TopicDescription, ClientError> {
        let metadata = self.topic(topic).await?;
        let minute_ago = now_ms().saturating_sub(RATE_WINDOW_MS);
        let mut asked = Vec::with_capacity(metadata.partitions.len());
        for partition in &metadata.partitions {
            let (name, id) = (topic.to_owned(), partition.partition);
            let describe = Request::DescribePartition(DescribePartitionRequest {
                topic: name.clone(),
                partition: id,
            });
            let oldest = Request::FindRecord(FindRecordRequest {
                topic: name.clone(),
                partition: id,
                target: RecordTarget::AtOrAfter(0),
                epochs: ReadEpochs::default(),
            });
            let newest = Request::FindRecord(FindRecordRequest {
                topic: name.clone(),
                partition: id,
                target: RecordTarget::Newest,
                epochs: ReadEpochs::default(),
            });
            let recent = Request::ListOffsets(ListOffsetsRequest {
                topic: name,
                partition: id,
                spec: OffsetSpec::Timestamp(minute_ago),
                epochs: ReadEpochs::default(),
            });
            asked.push((
                *partition,
                self.submit(&describe).await?,
                self.submit(&oldest).await?,
                self.submit(&newest).await?,
                self.submit(&recent).await?,
            ));
        }
        let timestamp = |response: Response| match response {
            Response::FindRecord(found) => Ok((found.timestamp >= 0).then_some(found.timestamp)),
            other => Err(unexpected(&other)),
        };
        let mut partitions = Vec::with_capacity(asked.len());
        for (partition, describe, oldest, newest, recent) in asked {
            let facts = match describe.answer().await? {
                Response::DescribePartition(facts) => facts,
                other => return Err(unexpected(&other)),
            };
            let first_timestamp = timestamp(oldest.answer().await?)?;
            let last_timestamp = timestamp(newest.answer().await?)?;
            let since_minute = match recent.answer().await? {
                Response::ListOffsets(found) => found.offset,
                other => return Err(unexpected(&other)),
            };
            partitions.push(PartitionDescription {
                partition: partition.partition.0,
                shard: partition.shard.0,
                log_start_offset: facts.log_start_offset,
                high_watermark: facts.high_watermark,
                size_bytes: facts.size_bytes,
                segments: facts.segments,
                fenced: (!facts.fenced.is_empty()).then_some(facts.fenced),
                first_timestamp,
                last_timestamp,
                records_last_minute: facts.high_watermark.saturating_sub(since_minute),
            });
        }
        Ok(TopicDescription {
            name: metadata.name,
            retention_ms: metadata.retention_ms,
            retention_bytes: metadata.retention_bytes,
            segment_bytes: metadata.segment_bytes,
            min_insync_replicas: metadata.min_insync_replicas,
            partitions,
        })
    }

    /// The node's facts of each partition named (offsets, bytes on disk, segments, fence),
    /// asked all at once.
    pub async fn describe_partitions(
        &self,
        partitions: &[(String, u32)],
    ) -> Result<Vec<DescribePartitionResponse>, ClientError> {
        let mut asked = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let request = Request::DescribePartition(DescribePartitionRequest {
                topic: topic.clone(),
                partition: PartitionId(*partition),
            });
            asked.push(self.submit(&request).await?);
        }
        let mut facts = Vec::with_capacity(asked.len());
        for submitted in asked {
            match submitted.answer().await? {
                Response::DescribePartition(found) => facts.push(found),
                other => return Err(unexpected(&other)),
            }
        }
        Ok(facts)
    }

    /// Appends one batch (built with `spate_format::BatchBuilder`) to a partition. The
    /// [`Producer`](crate::Producer) builds and pipelines batches for you.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        durability: spate_proto::Durability,
        batch: Bytes,
    ) -> Result<ProduceResponse, ClientError> {
        let request = Request::Produce(ProduceRequest {
            topic: topic.into(),
            partition: PartitionId(partition),
            durability,
            batch,
        });
        match self.request(&request).await? {
            Response::Produce(produced) => Ok(produced),
            other => Err(unexpected(&other)),
        }
    }

    /// Fetches whole batches from `offset`, waiting up to `max_wait_ms` for `min_bytes`. Every
    /// batch's CRCs are checked here, end to end.
    pub async fn fetch(&self, request: FetchRequest) -> Result<FetchResponse, ClientError> {
        let fetched = self.fetch_unchecked(request).await?;
        for batch in spate_format::batches(&fetched.records) {
            batch.map_err(|error| ClientError::InvalidAnswer(InvalidAnswer::Batch(error)))?;
        }
        Ok(fetched)
    }

    /// [`Client::fetch`] for a caller that checks every batch's CRCs itself before using it
    /// (the consumer does, as it decodes), so the bytes are not checked twice.
    pub(crate) async fn fetch_unchecked(
        &self,
        request: FetchRequest,
    ) -> Result<FetchResponse, ClientError> {
        match self.request(&Request::Fetch(request)).await? {
            Response::Fetch(fetched) => Ok(fetched),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<ListOffsetsResponse, ClientError> {
        let request = Request::ListOffsets(ListOffsetsRequest {
            topic: topic.into(),
            partition: PartitionId(partition),
            spec,
            // An epoch's end is answered with the epoch it names.
            epochs: ReadEpochs {
                answer: matches!(spec, OffsetSpec::EpochEnd(_)),
                current: None,
            },
        });
        match self.request(&request).await? {
            Response::ListOffsets(listed) => Ok(listed),
            other => Err(unexpected(&other)),
        }
    }
}

/// The error for an answer of another kind than the request's.
pub(crate) fn unexpected(response: &Response) -> ClientError {
    ClientError::InvalidAnswer(InvalidAnswer::WrongKind {
        api_key: response.api_key(),
    })
}

/// A request on its way; its answer arrives through [`Submitted::answer`].
#[derive(Debug)]
pub(crate) struct Submitted {
    receiver: oneshot::Receiver<Response>,
    timeout: Duration,
    deadline: tokio::time::Instant,
    id: u64,
    session: Arc<Session>,
}

impl Submitted {
    /// Waits for the answer; an error answer becomes `ClientError::Server`.
    pub(crate) async fn answer(mut self) -> Result<Response, ClientError> {
        self.answer_ref().await
    }

    /// [`Submitted::answer`] without giving the request up: it can be awaited again after the
    /// caller's `select!` took another branch (the deadline stays the one set at submit).
    pub(crate) async fn answer_ref(&mut self) -> Result<Response, ClientError> {
        match tokio::time::timeout_at(self.deadline, &mut self.receiver).await {
            Ok(Ok(Response::Error { error, .. })) => Err(ClientError::Server(error)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => {
                // A gateway that refuses the client's certificate closes the connection just
                // after the client finished its side of the handshake: say so.
                let connection = &self.session.connection;
                Err(refusal(
                    connection.remote_address(),
                    connection.close_reason().as_ref(),
                )
                .unwrap_or(ClientError::Connection(ConnectionLost::NoAnswer)))
            }
            Err(_) => {
                self.session.waiters.cancel(self.id);
                Err(ClientError::Timeout(self.timeout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_did_not_come_in_time_is_an_unknown_outcome() {
        let server = |code| ClientError::Server(ErrorResponse::new(code, "test"));
        assert!(server(ErrorCode::OutcomeUnknown).outcome_unknown());
        assert!(server(ErrorCode::Timeout).outcome_unknown());
        assert!(ClientError::Timeout(Duration::from_secs(1)).outcome_unknown());
        assert!(!server(ErrorCode::NotLeaderOrFollower).outcome_unknown());
        assert!(!server(ErrorCode::UnknownTopic).outcome_unknown());
    }
}
