//! Baseline: raw TCP. One plain loopback TCP connection in this process: the client writes
//! `message_size` chunks until the deadline, the server reads and discards, then reports the
//! bytes it received. It is what the Kafka scenarios are compared with, as `quic-raw` is for
//! the QUIC ones: the transport alone, without a protocol, a gateway or a disk.

use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::report::{params, Meter, Run};
use crate::scenarios::TIMELINE_INTERVAL;

/// The server's read buffer: large enough that a read is never the bottleneck, as the
/// gateway's own reads of whole requests are not.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// How long the client waits for the server's count after it stopped writing.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct TcpArgs {
    /// Bytes per write.
    #[arg(long, default_value = "65536")]
    pub message_size: usize,
    #[arg(long, default_value = "10")]
    pub seconds: f64,
}

/// Reads until the client shuts its side down, then answers the byte count (8 bytes, LE).
async fn serve(listener: TcpListener) -> Result<(), String> {
    let (mut socket, _) = listener
        .accept()
        .await
        .map_err(|error| format!("tcp baseline: accept failed: {error}"))?;
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    let mut received = 0u64;
    loop {
        let read = socket
            .read(&mut buffer)
            .await
            .map_err(|error| format!("tcp baseline: the server's read failed: {error}"))?;
        if read == 0 {
            break;
        }
        received += read as u64;
    }
    socket
        .write_all(&received.to_le_bytes())
        .await
        .map_err(|error| format!("tcp baseline: the server's answer failed: {error}"))?;
    socket
        .shutdown()
        .await
        .map_err(|error| format!("tcp baseline: the server's shutdown failed: {error}"))
}

pub async fn run(name: &str, args: &TcpArgs) -> Result<Run, String> {
    if args.message_size == 0 {
        return Err("tcp baseline: --message-size must be at least 1".into());
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| format!("tcp baseline: cannot listen: {error}"))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("tcp baseline: the listener has no address: {error}"))?;
    let server = tokio::spawn(serve(listener));
    let mut socket = TcpStream::connect(address)
        .await
        .map_err(|error| format!("tcp baseline: cannot connect: {error}"))?;

    let mut run = Run::new(
        name,
        "baseline",
        "tcp",
        params([
            ("message_size", args.message_size.to_string()),
            ("connections", "1".to_owned()),
            ("seconds", args.seconds.to_string()),
        ]),
    );
    let meter = Meter::start(TIMELINE_INTERVAL);
    let cpu = crate::cpu::CpuTime::now();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let chunk = vec![b'x'; args.message_size];
    let mut sent = 0u64;
    while Instant::now() < deadline {
        socket
            .write_all(&chunk)
            .await
            .map_err(|error| format!("tcp baseline: write failed: {error}"))?;
        sent += chunk.len() as u64;
        meter.add(1, chunk.len() as u64);
    }
    socket
        .shutdown()
        .await
        .map_err(|error| format!("tcp baseline: shutdown failed: {error}"))?;
    let mut reply = [0u8; 8];
    tokio::time::timeout(REPLY_TIMEOUT, socket.read_exact(&mut reply))
        .await
        .map_err(|_| format!("tcp baseline: no count from the server within {REPLY_TIMEOUT:?}"))?
        .map_err(|error| format!("tcp baseline: reading the server's count failed: {error}"))?;
    let elapsed = started.elapsed();
    server
        .await
        .map_err(|error| format!("tcp baseline: the server task failed: {error}"))??;
    let received = u64::from_le_bytes(reply);
    if received != sent {
        return Err(format!(
            "tcp baseline: sent {sent} bytes, the server received {received}"
        ));
    }
    let (operations, _, timeline) = meter.stop();
    run.finish(elapsed, operations, received);
    crate::cpu::CpuTime::since(cpu).record_total(&mut run);
    run.timeline = timeline;
    Ok(run)
}
