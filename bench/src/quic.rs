//! Baseline: raw QUIC. A plain quinn bulk transfer over loopback in this process, with the
//! gateway's TLS (the development certificate), transport limits and endpoint settings on the
//! server and the SDK's on the client: `streams` streams each write `message_size` chunks
//! until the deadline; the server reads and discards, then reports the bytes it received.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use quinn::crypto::rustls::QuicServerConfig;

use crate::report::{params, Meter, Run};
use crate::scenarios::TIMELINE_INTERVAL;

#[derive(Debug, Clone, Args)]
pub struct QuicArgs {
    /// Bytes per write.
    #[arg(long, default_value = "65536")]
    pub message_size: usize,
    /// Streams on the one connection, written concurrently.
    #[arg(long, default_value = "1")]
    pub streams: u32,
    #[arg(long, default_value = "10")]
    pub seconds: f64,
}

async fn serve(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((mut send, mut receive)) = connection.accept_bi().await {
                tokio::spawn(async move {
                    let mut received = 0u64;
                    while let Ok(Some(chunk)) = receive.read_chunk(1 << 20, false).await {
                        received += chunk.bytes.len() as u64;
                    }
                    let _ = send.write_all(&received.to_le_bytes()).await;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                });
            }
        });
    }
}

pub async fn run(data_dir: &std::path::Path, name: &str, args: &QuicArgs) -> Result<Run, String> {
    let tls_dir = data_dir.join("tls");
    let (cert, key) =
        spate_gateway::tls::ensure_dev_cert(&tls_dir).map_err(|error| error.to_string())?;
    let flags = spate_gateway::Flags {
        listen: Some("127.0.0.1:0".into()),
        dev_cert_dir: Some(tls_dir),
        ..spate_gateway::Flags::default()
    };
    let gateway =
        spate_gateway::GatewayConfig::resolve(flags).map_err(|error| error.to_string())?;
    let transport =
        spate_gateway::server::transport(&gateway).map_err(|error| error.to_string())?;
    let crypto =
        spate_gateway::tls::server_config(&cert, &key, None).map_err(|error| error.to_string())?;
    let crypto = QuicServerConfig::try_from(crypto).map_err(|error| error.to_string())?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    // The same sockets as the gateway's and the SDK's, so the baseline moves bytes as they do.
    let socket =
        spate_gateway::server::quic_socket(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|error| error.to_string())?;
    let endpoint_config =
        spate_gateway::server::endpoint_config(&key).map_err(|error| error.to_string())?;
    let server = quinn::Endpoint::new(
        endpoint_config,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|error| error.to_string())?;
    let address = server.local_addr().map_err(|error| error.to_string())?;
    tokio::spawn(serve(server.clone()));

    let mut client_config = quinn::EndpointConfig::default();
    client_config
        .max_udp_payload_size(spate_client::UDP_PAYLOAD_MAX)
        .map_err(|error| error.to_string())?;
    let socket = spate_client::quic_socket(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|error| error.to_string())?;
    let mut client =
        quinn::Endpoint::new(client_config, None, socket, Arc::new(quinn::TokioRuntime))
            .map_err(|error| error.to_string())?;
    client.set_default_client_config(
        spate_client::quic_client_config(&cert).map_err(|error| error.to_string())?,
    );
    let connection = client
        .connect(address, "localhost")
        .map_err(|error| error.to_string())?
        .await
        .map_err(|error| error.to_string())?;

    let mut run = Run::new(
        name,
        "baseline",
        "quic",
        params([
            ("message_size", args.message_size.to_string()),
            ("streams", args.streams.to_string()),
            ("seconds", args.seconds.to_string()),
        ]),
    );
    let meter = Meter::start(TIMELINE_INTERVAL);
    let cpu = crate::cpu::CpuTime::now();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let chunk = bytes::Bytes::from(vec![b'x'; args.message_size]);
    let mut streams = Vec::new();
    for _ in 0..args.streams.max(1) {
        let connection = connection.clone();
        let meter = meter.clone();
        let chunk = chunk.clone();
        streams.push(tokio::spawn(async move {
            let (mut send, mut receive) = connection
                .open_bi()
                .await
                .map_err(|error| error.to_string())?;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                send.write_chunk(chunk.clone())
                    .await
                    .map_err(|error| error.to_string())?;
                sent += chunk.len() as u64;
                meter.add(1, chunk.len() as u64);
            }
            send.finish().map_err(|error| error.to_string())?;
            let reply = receive
                .read_to_end(8)
                .await
                .map_err(|error| error.to_string())?;
            let mut received = [0u8; 8];
            received.copy_from_slice(reply.get(..8).ok_or("short reply")?);
            let received = u64::from_le_bytes(received);
            if received != sent {
                return Err(format!("sent {sent} bytes, the server received {received}"));
            }
            Ok::<_, String>(received)
        }));
    }
    let mut received = 0;
    for stream in streams {
        received += stream
            .await
            .map_err(|error| format!("stream task failed: {error}"))??;
    }
    let elapsed = started.elapsed();
    let (operations, _, timeline) = meter.stop();
    run.finish(elapsed, operations, received);
    crate::cpu::CpuTime::since(cpu).record_total(&mut run);
    run.timeline = timeline;
    connection.close(0u32.into(), b"done");
    client.wait_idle().await;
    Ok(run)
}
