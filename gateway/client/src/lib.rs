//! `spate-client`: the Rust SDK for Spate over QUIC. A [`Client`] holds one QUIC connection to
//! a gateway and multiplexes requests on it (pipelined, answers matched by correlation id);
//! it offers the admin calls (create, delete, list, describe topics) and the raw produce,
//! fetch and list-offsets requests the producer and consumer are built on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use spate_proto::limits::RESPONSE_SIZE_MAX;
use spate_proto::{
    CreateTopicRequest, DeleteTopicRequest, ErrorResponse, FetchRequest, FetchResponse,
    FrameDecoder, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetSpec, PartitionId, ProduceRequest, ProduceResponse, Request, Response, Setting,
};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

/// The ALPN protocol of Spate over QUIC.
pub const ALPN: &[u8] = b"spate/1";

/// Requests one client may have in flight before `request` waits.
pub const IN_FLIGHT_MAX: usize = 1024;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot read the CA certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot connect to the gateway at {address}: {reason}")]
    Connect { address: SocketAddr, reason: String },
    #[error("the connection to the gateway broke: {0}")]
    Connection(String),
    #[error("{0}")]
    Server(ErrorResponse),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// One QUIC connection to a gateway with a multiplexed request stream.
#[derive(Debug, Clone)]
pub struct Client {
    outgoing: mpsc::Sender<Bytes>,
    waiters: Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>,
    next_id: Arc<AtomicU64>,
    _connection: quinn::Connection,
}

fn client_crypto(ca: &Path) -> Result<quinn::ClientConfig, ClientError> {
    let shown = ca.display().to_string();
    let bytes = std::fs::read(ca).map_err(|error| ClientError::Certificate {
        path: shown.clone(),
        reason: error.to_string(),
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut bytes.as_slice()) {
        let cert = cert.map_err(|error| ClientError::Certificate {
            path: shown.clone(),
            reason: error.to_string(),
        })?;
        roots
            .add(cert)
            .map_err(|error| ClientError::Tls(error.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| ClientError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|error| ClientError::Tls(error.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

impl Client {
    /// Connects to the gateway at `address`, trusting the certificate(s) in `ca_cert` for the
    /// server name `server_name` (`localhost` for the development certificate).
    pub async fn connect(
        address: SocketAddr,
        ca_cert: &Path,
        server_name: &str,
    ) -> Result<Client, ClientError> {
        let connect_error = |reason: String| ClientError::Connect { address, reason };
        let bind: SocketAddr = if address.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|_| connect_error("bad bind address".into()))?;
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|error| connect_error(error.to_string()))?;
        endpoint.set_default_client_config(client_crypto(ca_cert)?);
        let connection = endpoint
            .connect(address, server_name)
            .map_err(|error| connect_error(error.to_string()))?
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        let (mut send, mut receive) = connection
            .open_bi()
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        let (outgoing, mut queue) = mpsc::channel::<Bytes>(IN_FLIGHT_MAX);
        tokio::spawn(async move {
            while let Some(frame) = queue.recv().await {
                if send.write_all(&frame).await.is_err() {
                    break;
                }
            }
            let _ = send.shutdown().await;
        });
        let waiters: Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>> =
            Arc::new(Mutex::new(HashMap::new()));
        let reader_waiters = waiters.clone();
        tokio::spawn(async move {
            let decoder = FrameDecoder::new(RESPONSE_SIZE_MAX);
            let mut buffer = BytesMut::with_capacity(64 * 1024);
            'read: loop {
                loop {
                    match decoder.decode(&mut buffer) {
                        Ok(Some(frame)) => {
                            let Ok(response) = Response::decode(&frame) else {
                                break 'read;
                            };
                            let waiter = reader_waiters
                                .lock()
                                .ok()
                                .and_then(|mut w| w.remove(&frame.head.correlation_id));
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(response);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break 'read,
                    }
                }
                match receive.read_chunk(1 << 20, true).await {
                    Ok(Some(chunk)) => buffer.extend_from_slice(&chunk.bytes),
                    _ => break,
                }
            }
            // Fails every caller still waiting.
            if let Ok(mut waiters) = reader_waiters.lock() {
                waiters.clear();
            }
        });
        Ok(Client {
            outgoing,
            waiters,
            next_id: Arc::new(AtomicU64::new(1)),
            _connection: connection,
        })
    }

    /// Sends a request and waits for its answer; an error answer becomes `ClientError::Server`.
    pub async fn request(&self, request: &Request) -> Result<Response, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .map_err(|_| ClientError::Connection("poisoned".into()))?
            .insert(id, sender);
        self.outgoing
            .send(request.to_frame(id))
            .await
            .map_err(|_| ClientError::Connection("the request stream is closed".into()))?;
        match receiver.await {
            Ok(Response::Error { error, .. }) => Err(ClientError::Server(error)),
            Ok(response) => Ok(response),
            Err(_) => Err(ClientError::Connection(
                "no answer: the stream closed".into(),
            )),
        }
    }

    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        retention_ms: Setting,
        retention_bytes: Setting,
    ) -> Result<(), ClientError> {
        let request = Request::CreateTopic(CreateTopicRequest {
            topic: topic.into(),
            partitions,
            retention_ms,
            retention_bytes,
            segment_bytes: Setting::Default,
        });
        match self.request(&request).await? {
            Response::CreateTopic(_) => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<(), ClientError> {
        match self
            .request(&Request::DeleteTopic(DeleteTopicRequest {
                topic: topic.into(),
            }))
            .await?
        {
            Response::DeleteTopic(_) => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Topics, their settings and which shard owns each partition (all topics when `topics`
    /// is empty).
    pub async fn metadata(&self, topics: &[&str]) -> Result<MetadataResponse, ClientError> {
        let request = Request::Metadata(MetadataRequest {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        });
        match self.request(&request).await? {
            Response::Metadata(metadata) => Ok(metadata),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Appends one batch (built with `spate_format::BatchBuilder`) to a partition.
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
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Fetches whole batches from `offset`, waiting up to `max_wait_ms` for `min_bytes`. Every
    /// batch's CRCs are checked here, end to end.
    pub async fn fetch(&self, request: FetchRequest) -> Result<FetchResponse, ClientError> {
        match self.request(&Request::Fetch(request)).await? {
            Response::Fetch(fetched) => {
                for batch in spate_format::batches(&fetched.records) {
                    batch.map_err(|error| {
                        ClientError::Unexpected(format!("a fetched batch is invalid: {error}"))
                    })?;
                }
                Ok(fetched)
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
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
        });
        match self.request(&request).await? {
            Response::ListOffsets(listed) => Ok(listed),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
