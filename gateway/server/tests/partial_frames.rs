//! Memory exhaustion by partial frames, against a real `spate-gateway` process (the node runs
//! in this test's process, on loopback, with its data under `target/`): clients that open many
//! streams, announce large frames, send half of each and stall keep the gateway's memory
//! within its buffer budget plus the QUIC windows and a constant, a well-behaved client on the
//! same gateway is still served, a stalled frame is answered `Timeout` and its budget freed,
//! and SIGTERM stops the gateway promptly with the stalled streams open; the budget is given
//! back when attackers close, and the memory they took goes back to the system.

#![allow(clippy::print_stdout, clippy::cast_possible_truncation)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use spate_format::{BatchBuilder, Record};
use spate_proto::limits::RESPONSE_SIZE_MAX;
use spate_proto::*;

/// Memory of the gateway process that is neither partial frames nor data unread in QUIC:
/// code, runtime, TLS, connection state, allocator slack. Measured at 8–20 MiB; the margin
/// covers allocator fragmentation.
const GATEWAY_BASE_RSS: u64 = 64 << 20;

/// Memory QUIC may use per byte of receive window: quinn keeps received data in the
/// datagrams it came in and compacts a stream only when more than 1.5 times its data (at
/// least 32 KiB) is wasted, so unread data can take up to 2.5 times its size.
const QUIC_UNREAD_OVERHEAD: (u64, u64) = (5, 2);

fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("partial-frames-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn node(dir: &Path) -> spate_node::NodeHandle {
    let flags = spate_node::Flags {
        data_dir: Some(dir.join("node")),
        listen: Some("127.0.0.1:0".into()),
        shards: Some(1),
        ..spate_node::Flags::default()
    };
    spate_node::start(spate_node::NodeConfig::resolve(flags).unwrap()).unwrap()
}

/// A `spate-gateway` process; killed when dropped.
struct GatewayProcess {
    child: Child,
    address: SocketAddr,
    cert: PathBuf,
}

impl GatewayProcess {
    fn start(dir: &Path, node: SocketAddr, flags: &[&str]) -> GatewayProcess {
        let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_spate-gateway"))
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--listen", "127.0.0.1:0", "--node", &node.to_string()])
            .arg("--dev-cert-dir")
            .arg(dir.join("tls"))
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let rest = line
            .trim_end()
            .strip_prefix("gateway listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let (address, cert) = rest.split_once(" (certificate ").unwrap();
        GatewayProcess {
            address: address.parse().unwrap(),
            cert: PathBuf::from(cert.strip_suffix(')').unwrap()),
            child,
        }
    }

    /// A `VmRSS`/`VmHWM`-style field of /proc/PID/status, in bytes.
    fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|line| line.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|value| value.parse().ok())
            .unwrap();
        kib * 1024
    }

    async fn connect(&self) -> (quinn::Endpoint, quinn::Connection) {
        connect(self.address, &self.cert).await
    }

    /// Sends SIGTERM and returns how long the process took to exit.
    fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "gateway exited with {status}");
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(address: SocketAddr, cert: &Path) -> (quinn::Endpoint, quinn::Connection) {
    let crypto = spate_gateway::tls::client_config(cert).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connection = endpoint
        .connect(address, "localhost")
        .unwrap()
        .await
        .unwrap();
    (endpoint, connection)
}

/// The 16-byte header of a produce request announcing a frame of `size` bytes.
fn announce(size: u32, correlation_id: u64) -> [u8; 16] {
    let mut header = [0u8; 16];
    header[..4].copy_from_slice(&(size - 4).to_le_bytes());
    header[4..6].copy_from_slice(&4u16.to_le_bytes());
    header[6] = 1;
    header[8..16].copy_from_slice(&correlation_id.to_le_bytes());
    header
}

/// Reads one response frame from `receive`.
async fn response(receive: &mut quinn::RecvStream, buffer: &mut BytesMut) -> (u64, Response) {
    let decoder = FrameDecoder::new(RESPONSE_SIZE_MAX);
    loop {
        if let Some(frame) = decoder.decode(buffer).unwrap() {
            return (frame.head.correlation_id, Response::decode(&frame).unwrap());
        }
        let chunk = receive
            .read_chunk(1 << 20, true)
            .await
            .unwrap()
            .expect("the stream ended before an answer");
        buffer.extend_from_slice(&chunk.bytes);
    }
}

fn produce(topic: &str, value: &[u8]) -> Request {
    let mut builder = BatchBuilder::new();
    builder
        .push(&Record {
            timestamp: 1_700_000_000_000,
            value: Some(value),
            ..Record::default()
        })
        .unwrap();
    Request::Produce(ProduceRequest {
        topic: topic.into(),
        partition: PartitionId(0),
        durability: Durability::None,
        batch: Bytes::from(builder.finish().unwrap()),
    })
}

/// Total bytes the connections have sent so far.
fn sent(connections: &[quinn::Connection]) -> u64 {
    connections
        .iter()
        .map(|connection| connection.stats().udp_tx.bytes)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_partial_frames_stay_within_the_budget_and_others_are_served() {
    const BUDGET: u64 = 16 << 20;
    const CONNECTION_WINDOW: u64 = 4 << 20;
    const ATTACKERS: usize = 8;
    const STREAMS: usize = 64;
    let dir = data_dir("budget");
    let node = node(&dir);
    let mut gateway = GatewayProcess::start(
        &dir,
        node.endpoints[0],
        &[
            "--buffer-budget",
            &BUDGET.to_string(),
            "--connection-buffer-budget",
            &(4u64 << 20).to_string(),
            "--connection-window",
            &CONNECTION_WINDOW.to_string(),
            // Longer than the test: only the budget may bound memory here.
            "--frame-stall-timeout-ms",
            "600000",
        ],
    );
    let (times, divisor) = QUIC_UNREAD_OVERHEAD;
    let quic = (ATTACKERS as u64 + 1) * CONNECTION_WINDOW * times / divisor;
    // 16 + 90 + 64 = 170 MiB, while the attack sends 256 MiB of partial frames.
    let bound = BUDGET + quic + GATEWAY_BASE_RSS;
    let (_endpoint, client) = gateway.connect().await;
    let create = Request::CreateTopic(CreateTopicRequest {
        legacy_layout: false,
        min_insync_replicas: Setting::Default,
        topic: "calm".into(),
        partitions: 1,
        retention_ms: Setting::Default,
        retention_bytes: Setting::Default,
        segment_bytes: Setting::Default,
        replication_factor: 0,
    });
    let (mut send, mut receive) = client.open_bi().await.unwrap();
    let mut buffer = BytesMut::new();
    send.write_all(&create.to_frame(1)).await.unwrap();
    assert!(matches!(
        response(&mut receive, &mut buffer).await,
        (1, Response::CreateTopic(_))
    ));

    // The attack: every stream announces 1 MiB, sends half of it and stalls. Without a
    // budget the gateway reads it all: 8 × 64 × 512 KiB = 256 MiB.
    let attack = Attack::open(&gateway, ATTACKERS, STREAMS).await;
    // Until the attackers can send no more (flow control holds them), watching the
    // gateway's memory all along.
    let last = attack
        .landed(|| {
            let rss = gateway.memory("VmRSS:");
            assert!(
                rss <= bound,
                "gateway RSS {rss} above budget + QUIC windows + base = {bound}"
            );
        })
        .await;
    assert!(
        last > BUDGET,
        "the attackers sent only {last} bytes: the attack did not reach the budget"
    );

    // A well-behaved client on the same gateway still gets its frames through.
    let value = vec![b'v'; 200 << 10];
    for round in 0..8u64 {
        let frame = produce("calm", &value).to_frame(100 + round);
        send.write_all(&frame).await.unwrap();
        let answer =
            tokio::time::timeout(Duration::from_secs(20), response(&mut receive, &mut buffer))
                .await
                .expect("no answer for a well-behaved client within 20 s under attack");
        match answer {
            (id, Response::Produce(produced)) => {
                assert_eq!(id, 100 + round);
                assert_eq!(produced.base_offset, round);
            }
            other => panic!("{other:?}"),
        }
    }
    let peak = gateway.memory("VmHWM:");
    println!(
        "attackers sent {last} bytes; gateway peak RSS {peak} (bound {bound}, budget {BUDGET})"
    );
    assert!(peak <= bound, "gateway peak RSS {peak} above {bound}");

    // SIGTERM with every stalled stream still open: the gateway exits promptly.
    let took = gateway.terminate();
    println!("gateway exited {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    drop(attack);
    node.shutdown();
}

/// Attacker connections whose streams each announce a 1 MiB frame, send half of it and
/// stall.
struct Attack {
    connections: Vec<(quinn::Endpoint, quinn::Connection)>,
    /// Each stream's writer; a stream stays open (not finished) while its handles live.
    writers: Vec<tokio::task::JoinHandle<(quinn::SendStream, quinn::RecvStream)>>,
}

impl Attack {
    async fn open(gateway: &GatewayProcess, connections: usize, streams: usize) -> Attack {
        let mut attack = Attack {
            connections: Vec::new(),
            writers: Vec::new(),
        };
        for _ in 0..connections {
            let (endpoint, connection) = gateway.connect().await;
            for stream in 0..streams {
                let (mut send, held) = connection.open_bi().await.unwrap();
                attack.writers.push(tokio::spawn(async move {
                    let mut bytes = announce(1 << 20, stream as u64).to_vec();
                    bytes.resize(16 + (512 << 10), 0xEE);
                    // Blocks for good once the gateway withholds credit.
                    let _ = send.write_all(&bytes).await;
                    (send, held)
                }));
            }
            attack.connections.push((endpoint, connection));
        }
        attack
    }

    /// Waits until the attackers can send no more (flow control holds them), calling
    /// `watch` every 50 ms; returns the bytes they sent.
    async fn landed(&self, mut watch: impl FnMut()) -> u64 {
        let connections: Vec<quinn::Connection> = self
            .connections
            .iter()
            .map(|(_, connection)| connection.clone())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = sent(&connections);
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(750) {
            assert!(Instant::now() < deadline, "the attack never settled");
            tokio::time::sleep(Duration::from_millis(50)).await;
            watch();
            let now = sent(&connections);
            if now > last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        last
    }

    /// Closes every attacker connection and waits until the closes are sent.
    async fn close(self) {
        for (_, connection) in &self.connections {
            connection.close(quinn::VarInt::from_u32(0), b"bye");
        }
        for (endpoint, _) in &self.connections {
            endpoint.wait_idle().await;
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        for writer in &self.writers {
            writer.abort();
        }
    }
}

/// Memory the gateway may keep after attackers closed, above its RSS before the attack:
/// tables that grew with the connections and streams, the allocator's metadata and caches.
/// Measured at 21–23 MiB once it stops falling, after a 1.1 GiB attack (`spate-bench abuse`,
/// not growing over three rounds). (This test stops at the first reading under the bound,
/// while jemalloc's decay is still returning pages.)
const RETAINED_AFTER_ATTACK_MAX: u64 = 40 << 20;

/// After the attackers close, the memory their partial frames and unread QUIC data took is
/// given back to the system, not kept by the allocator for later: the gateway's RSS returns
/// to near what it was before the attack. (An attacker whose close is lost is forgotten at
/// the idle timeout, shortened here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_given_back_to_the_system_after_attackers_close() {
    const ATTACKERS: usize = 24;
    const STREAMS: usize = 64;
    let dir = data_dir("returned");
    let node = node(&dir);
    let gateway = GatewayProcess::start(
        &dir,
        node.endpoints[0],
        &[
            "--buffer-budget",
            &(128u64 << 20).to_string(),
            "--idle-timeout-ms",
            "5000",
            // Longer than the test: only the close frees the attackers' frames.
            "--frame-stall-timeout-ms",
            "600000",
        ],
    );
    let before = gateway.memory("VmRSS:");
    let attack = Attack::open(&gateway, ATTACKERS, STREAMS).await;
    let sent = attack.landed(|| {}).await;
    let peak = gateway.memory("VmHWM:");
    // The attack must have taken far more than what may be kept, or the test proves nothing.
    assert!(
        peak >= before + 4 * RETAINED_AFTER_ATTACK_MAX,
        "the attack took the gateway only from {before} to {peak} bytes"
    );
    attack.close().await;
    let bound = before + RETAINED_AFTER_ATTACK_MAX;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut rss = gateway.memory("VmRSS:");
    while rss > bound {
        assert!(
            Instant::now() < deadline,
            "gateway RSS {rss} still above {bound} (before the attack {before}, peak {peak}) \
             90 s after the attackers closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss = gateway.memory("VmRSS:");
    }
    println!(
        "attackers sent {sent} bytes; gateway RSS {before} before, peak {peak}, {rss} after \
         they closed"
    );
    node.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_frame_is_answered_timeout_and_its_budget_freed() {
    let dir = data_dir("stall");
    let node = node(&dir);
    let frame_size_max = limits::REQUEST_SIZE_MAX;
    // One connection's budget holds exactly one largest frame.
    let gateway = GatewayProcess::start(
        &dir,
        node.endpoints[0],
        &[
            "--connection-buffer-budget",
            &frame_size_max.to_string(),
            "--stream-window",
            "65536",
            "--frame-stall-timeout-ms",
            "500",
        ],
    );
    let (_endpoint, connection) = gateway.connect().await;
    let (mut stalled, mut stalled_answers) = connection.open_bi().await.unwrap();
    stalled
        .write_all(&announce(frame_size_max, 77))
        .await
        .unwrap();
    // More than the stream window: this returns only once the gateway has read body bytes,
    // which it does only after reserving the whole frame.
    stalled.write_all(&vec![0u8; 100 << 10]).await.unwrap();
    let written = Instant::now();
    // The connection's budget is held by the stalled frame, so this request must wait for
    // the stall timeout to free it.
    let (mut send, mut receive) = connection.open_bi().await.unwrap();
    let metadata = Request::Metadata(MetadataRequest {
        placement: false,
        settings: false,
        topics: vec![],
        racks: false,
    })
    .to_frame(5);
    send.write_all(&metadata).await.unwrap();
    let waiting = tokio::spawn(async move {
        let mut buffer = BytesMut::new();
        let answer = response(&mut receive, &mut buffer).await;
        (written.elapsed(), answer)
    });

    let mut stalled_buffer = BytesMut::new();
    let (id, answer) = tokio::time::timeout(
        Duration::from_secs(10),
        response(&mut stalled_answers, &mut stalled_buffer),
    )
    .await
    .expect("no answer to the stalled frame");
    assert_eq!(id, 77);
    match answer {
        Response::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::Timeout);
            assert!(error.message.contains("stalled"), "{}", error.message);
        }
        other => panic!("{other:?}"),
    }
    let stall_answered = written.elapsed();
    // The stream is stopped: the client learns it cannot send more.
    let stopped = tokio::time::timeout(Duration::from_secs(10), stalled.stopped())
        .await
        .expect("the stalled stream was not stopped");
    assert_eq!(
        stopped.unwrap(),
        Some(quinn::VarInt::from_u32(
            spate_gateway::server::STREAM_STALLED
        ))
    );
    // Its budget is free again: the waiting request is answered, and not before the stall
    // timeout (500 ms after the stalled frame's last bytes) had passed.
    let (waited, (id, answer)) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting request was never served")
        .unwrap();
    assert_eq!(id, 5);
    assert!(matches!(answer, Response::Metadata(_)), "{answer:?}");
    assert!(
        waited >= Duration::from_millis(400),
        "answered after {waited:?}: the request did not wait for the stalled frame's budget"
    );
    println!("stall answered after {stall_answered:?}");
    node.shutdown();
}

/// Waits until `condition` holds, checking every 20 ms, at most 20 s.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// In process, to read the budget: every reservation is given back when the attackers'
/// connections close (their streams stalled mid-frame or waiting for budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_given_back_when_attackers_close() {
    let dir = data_dir("release");
    let node = node(&dir);
    let flags = spate_gateway::Flags {
        listen: Some("127.0.0.1:0".into()),
        node: Some(node.endpoints[0].to_string()),
        dev_cert_dir: Some(dir.join("tls")),
        buffer_budget: Some(16 << 20),
        connection_buffer_budget: Some(4 << 20),
        ..spate_gateway::Flags::default()
    };
    let gateway = spate_gateway::start(spate_gateway::GatewayConfig::resolve(flags).unwrap())
        .await
        .unwrap();
    let mut attackers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (endpoint, connection) = connect(gateway.local_addr, &gateway.cert_path).await;
        for stream in 0..32u64 {
            let (mut attack, held) = connection.open_bi().await.unwrap();
            writers.push(tokio::spawn(async move {
                let mut bytes = announce(1 << 20, stream).to_vec();
                bytes.resize(16 + (512 << 10), 0xEE);
                let _ = attack.write_all(&bytes).await;
                (attack, held)
            }));
        }
        attackers.push((endpoint, connection));
    }
    // The attackers hold 1 MiB frames. (How many depends on which streams' data fills each
    // connection's QUIC window first; waiting for a fixed amount could wait for stall
    // timeouts.)
    until("the attackers hold reservations", || {
        gateway.budget.used() >= 4 << 20
    })
    .await;
    assert!(gateway.budget.used() <= 16 << 20);
    // Close only once the attackers can send no more, so the close is not lost among their
    // data. (In about one run in eight on a busy machine the gateway still does not see the
    // close; it then learns of it when the stall timeout, 10 s, makes it send to the client,
    // and everything is given back then: the until() deadline allows for that.)
    let connections: Vec<quinn::Connection> = attackers.iter().map(|(_, c)| c.clone()).collect();
    let mut last = sent(&connections);
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = sent(&connections);
        if now > last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    for (_, connection) in &attackers {
        connection.close(quinn::VarInt::from_u32(0), b"bye");
    }
    until("every reservation is given back", || {
        gateway.budget.used() == 0
    })
    .await;
    for writer in writers {
        writer.abort();
    }
    gateway.close();
    node.shutdown();
}
