//! The QUIC side: the endpoint, its limits, connections and streams. Every bidirectional
//! stream carries request frames one way and their responses the other; frames of one stream
//! are forwarded in order, their answers return as they come (matched by correlation id).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use spate_proto::{FrameDecoder, Response};
use thiserror::Error;
use tokio::sync::{mpsc, Semaphore};

use crate::config::GatewayConfig;
use crate::router::Router;
use crate::tls;

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("invalid listen address {0}")]
    Listen(String),
    #[error("cannot open the QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    #[error("QUIC configuration: {0}")]
    Quic(String),
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub local_addr: SocketAddr,
    /// The certificate clients must trust (the development one unless configured).
    pub cert_path: PathBuf,
    endpoint: Endpoint,
    pub router: Arc<Router>,
}

impl Gateway {
    /// Stops accepting and closes every connection.
    pub fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(0), b"gateway shutting down");
    }

    /// Waits until every connection is closed.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

pub fn transport(config: &GatewayConfig) -> Result<TransportConfig, GatewayError> {
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(config.max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(config.stream_window))
        .receive_window(VarInt::from_u32(config.connection_window))
        .send_window(u64::from(config.connection_window))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(config.idle_timeout)
                .map_err(|error| GatewayError::Quic(error.to_string()))?,
        ));
    // Large datagrams where the path allows (loopback, jumbo frames): far fewer packets.
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(UDP_PAYLOAD_MAX);
    transport.mtu_discovery_config(Some(mtu));
    Ok(transport)
}

/// Largest UDP payload the gateway accepts, matching the MTU discovery bound: loopback and
/// jumbo-frame paths carry far fewer packets. The client uses the same value.
pub const UDP_PAYLOAD_MAX: u16 = 16_384;

/// The endpoint configuration. Its stateless-reset key is derived from the TLS private key, so
/// a restarted gateway (same key) answers packets of connections it forgot with a valid
/// stateless reset: clients learn at once that their connection is gone and reconnect,
/// instead of waiting for the idle timeout.
pub fn endpoint_config(key: &std::path::Path) -> Result<quinn::EndpointConfig, GatewayError> {
    let secret = std::fs::read(key)
        .map_err(|error| GatewayError::Quic(format!("cannot read {}: {error}", key.display())))?;
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
        .max_udp_payload_size(UDP_PAYLOAD_MAX)
        .map_err(|error| GatewayError::Quic(error.to_string()))?;
    Ok(config)
}

/// Starts the gateway: TLS, the QUIC endpoint, the accept loop, the periodic metadata refresh.
pub async fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let (cert, key) = tls::ensure_dev_cert(&config.dev_cert_dir)?;
            tracing::info!(cert = %cert.display(), "using the development certificate (trust it with --ca-cert)");
            (cert, key)
        }
    };
    let crypto = tls::server_config(&cert, &key)?;
    let crypto = QuicServerConfig::try_from(crypto)
        .map_err(|error| GatewayError::Quic(error.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport(&config)?));
    let address = config
        .listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| GatewayError::Listen(config.listen.clone()))?;
    let socket = std::net::UdpSocket::bind(address).map_err(GatewayError::Endpoint)?;
    let endpoint = Endpoint::new(
        endpoint_config(&key)?,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(GatewayError::Endpoint)?;
    let local_addr = endpoint.local_addr().map_err(GatewayError::Endpoint)?;
    let router = Router::new(config.node.clone());
    if let Err(error) = router.refresh().await {
        tracing::warn!(node = %config.node, "cannot reach the node yet: {error}; will retry");
    }
    let refresher = router.clone();
    let every = config.metadata_refresh;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = refresher.refresh().await {
                tracing::warn!("metadata refresh failed: {error}");
            }
        }
    });
    let config = Arc::new(config);
    tokio::spawn(accept(endpoint.clone(), router.clone(), config));
    Ok(Gateway {
        local_addr,
        cert_path: cert,
        endpoint,
        router,
    })
}

async fn accept(endpoint: Endpoint, router: Arc<Router>, config: Arc<GatewayConfig>) {
    while let Some(incoming) = endpoint.accept().await {
        let open = endpoint.open_connections();
        if open >= config.max_connections as usize {
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
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            let permits = Arc::new(Semaphore::new(config.frames_per_connection as usize));
            while let Ok((send, receive)) = connection.accept_bi().await {
                let router = router.clone();
                let config = config.clone();
                let permits = permits.clone();
                tokio::spawn(async move {
                    if let Err(error) = serve_stream(router, config, permits, send, receive).await {
                        tracing::debug!("stream closed: {error}");
                    }
                });
            }
        });
    }
}

async fn serve_stream(
    router: Arc<Router>,
    config: Arc<GatewayConfig>,
    connection_permits: Arc<Semaphore>,
    mut send: quinn::SendStream,
    mut receive: quinn::RecvStream,
) -> Result<(), String> {
    let per_stream = config.frames_per_stream as usize;
    let (answers, mut outgoing) = mpsc::channel::<(Bytes, Bytes)>(per_stream);
    let writer = tokio::spawn(async move {
        while let Some((header, body)) = outgoing.recv().await {
            if send.write_all(&header).await.is_err() || send.write_all(&body).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    let stream_permits = Arc::new(Semaphore::new(per_stream));
    let decoder = FrameDecoder::new(config.frame_size_max);
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let result = loop {
        match decoder.decode(&mut buffer) {
            Ok(Some(frame)) => {
                let (Ok(stream_permit), Ok(connection_permit)) = (
                    stream_permits.clone().acquire_owned().await,
                    connection_permits.clone().acquire_owned().await,
                ) else {
                    break Ok(());
                };
                let api_key = frame.head.api_key;
                let correlation_id = frame.head.correlation_id;
                // Sent in stream order; the answer is awaited beside the next frames.
                let pending = router.send(&frame).await;
                let router = router.clone();
                let answers = answers.clone();
                tokio::spawn(async move {
                    let answer = router.answer(pending, api_key, correlation_id).await;
                    let _ = answers.send(answer).await;
                    drop((stream_permit, connection_permit));
                });
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                let frame = Response::frame_error(&buffer, &error);
                let _ = answers.send((frame, Bytes::new())).await;
                break Err(error.to_string());
            }
        }
        // Read only what the decoder needs next, bounded by the frame limit.
        match receive.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => buffer.extend_from_slice(&chunk.bytes),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error.to_string()),
        }
    };
    // Let the answers on their way go out, then finish the stream.
    let _ = stream_permits.acquire_many(config.frames_per_stream).await;
    drop(answers);
    let _ = writer.await;
    result
}
