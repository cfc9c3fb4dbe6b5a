//! End to end with real processes on loopback: the `spate-node` and `spate-gateway` binaries
//! (and `spate up`), driven through the `spate` CLI and the SDK. Covers topic admin, round
//! trips across shards, stable key partitioning, long-poll wake-up, pipelined order, a gateway
//! restart while clients retry, a node `kill -9` under a running producer (every acknowledged
//! record read back exactly once, in order), and abusive clients.
//!
//! The node and gateway binaries are found next to the `spate` binary; `cargo test
//! --workspace` builds all three.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_possible_truncation,
    clippy::cast_lossless
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spate_client::{
    partition_for_key, Client, ClientError, ConsumedRecord, Consumer, ConsumerConfig, Durability,
    ErrorCode, Producer, ProducerConfig, ProducerRecord, Setting, StartPosition,
};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

fn binary(name: &str) -> PathBuf {
    let spate = PathBuf::from(env!("CARGO_BIN_EXE_spate"));
    if name == "spate" {
        return spate;
    }
    let path = spate.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) so the \
         node and gateway binaries are built",
        path.display()
    );
    path
}

/// The `spate` binary with a config file of the tests' own (`spate up` records a profile;
/// the user's ~/.config/spate stays untouched and unread).
/// `spate up`'s metrics listeners on free ports (tests never take the default ports).
const METRICS_ON_FREE_PORTS: [(&str, &str); 2] = [
    ("SPATE_METRICS_LISTEN", "127.0.0.1:0"),
    ("SPATE_GATEWAY_METRICS_LISTEN", "127.0.0.1:0"),
];

fn spate_command() -> Command {
    let mut command = Command::new(binary("spate"));
    command.envs(METRICS_ON_FREE_PORTS);
    command.env(
        "SPATE_CONFIG",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("spate-config-{}.toml", std::process::id())),
    );
    command
}

fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process, killed when dropped; its stdout lines arrive on a channel and its stderr
/// goes to a log file next to its data.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Process {
    fn spawn(command: &mut Command, log: PathBuf) -> Process {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Process { child, lines, log }
    }

    /// The next stdout line starting with `prefix`.
    fn line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    panic!("no line starting with {prefix:?}; stderr:\n{log}");
                }
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A base port with `count` consecutive free TCP ports (the node puts shard i on base + i), so
/// a restarted node keeps its addresses. Chosen below the ephemeral port range, so no
/// outgoing connection (the gateway reconnecting while the node is down) takes it meanwhile.
fn free_ports(count: u16) -> u16 {
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = 10_000u16;
    let span = u32::from(ephemeral_low.saturating_sub(low + count).max(1));
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    for attempt in 0..100u32 {
        let base = low + u16::try_from((seed.wrapping_add(attempt * 7919)) % span).unwrap();
        let all_free = (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {count} consecutive free ports");
}

struct Node {
    process: Process,
    endpoints: Vec<SocketAddr>,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    metrics: SocketAddr,
}

impl Node {
    fn start(dir: &Path, shards: u32, port: u16) -> Node {
        let mut process = Process::spawn(
            Command::new(binary("spate-node"))
                .args(["--metrics-listen", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(dir.join("node"))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--shards", &shards.to_string()]),
            dir.join("node.log"),
        );
        let endpoints = (0..shards)
            .map(|shard| {
                let line = process.line(&format!("shard {shard} listening on "));
                line.rsplit(' ').next().unwrap().parse().unwrap()
            })
            .collect();
        let metrics = process.line("metrics listening on ");
        let metrics = metrics.rsplit(' ').next().unwrap().parse().unwrap();
        Node {
            process,
            endpoints,
            metrics,
        }
    }
}

struct Gateway {
    process: Process,
    address: SocketAddr,
    cert: PathBuf,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    metrics: SocketAddr,
}

impl Gateway {
    fn start(dir: &Path, node: SocketAddr, listen: &str) -> Gateway {
        let mut process = Process::spawn(
            Command::new(binary("spate-gateway"))
                .args(["--metrics-listen", "127.0.0.1:0"])
                .args(["--listen", listen])
                .args(["--node", &node.to_string()])
                .arg("--dev-cert-dir")
                .arg(dir.join("tls"))
                .args(["--metadata-refresh-ms", "1000"]),
            dir.join("gateway.log"),
        );
        let (address, cert) = parse_gateway_line(&process.line("gateway listening on "));
        let metrics = process.line("metrics listening on ");
        let metrics = metrics.rsplit(' ').next().unwrap().parse().unwrap();
        Gateway {
            process,
            address,
            cert,
            metrics,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(self.address, &self.cert, "localhost")
            .await
            .unwrap()
    }
}

/// A node (`shards` shards from `port`, 0 for free ports), a gateway in front of it, an SDK
/// client, and `topic` created with `partitions` partitions.
async fn cluster(
    dir: &Path,
    shards: u32,
    port: u16,
    topic: &str,
    partitions: u32,
) -> (Node, Gateway, Client) {
    let node = Node::start(dir, shards, port);
    let gateway = Gateway::start(dir, node.endpoints[0], "127.0.0.1:0");
    let client = gateway.client().await;
    client
        .create_topic(topic, partitions, Setting::Default, Setting::Default)
        .await
        .unwrap();
    (node, gateway, client)
}

/// `gateway listening on ADDR (certificate PATH)`.
fn parse_gateway_line(line: &str) -> (SocketAddr, PathBuf) {
    let rest = line.strip_prefix("gateway listening on ").unwrap();
    let (address, cert) = rest.split_once(" (certificate ").unwrap();
    (
        address.parse().unwrap(),
        PathBuf::from(cert.strip_suffix(')').unwrap()),
    )
}

/// Runs the `spate` CLI against a gateway.
struct Cli {
    gateway: SocketAddr,
    cert: PathBuf,
}

impl Cli {
    /// `spate` for this gateway, with `args`.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = spate_command();
        command
            .args(["--gateway", &self.gateway.to_string()])
            .arg("--ca-cert")
            .arg(&self.cert)
            .args(args);
        command
    }

    /// Starts `spate` with `args`, its stdin, stdout and stderr piped.
    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn run(&self, args: &[&str], input: &str) -> Output {
        let mut child = self.spawn(args);
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        output
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str], input: &str) -> String {
        let output = self.run(args, input);
        assert!(
            output.status.success(),
            "spate {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str], input: &str) -> String {
        let output = self.run(args, input);
        assert!(!output.status.success(), "spate {args:?} succeeded");
        String::from_utf8(output.stderr).unwrap()
    }
}

/// `LINE<TAB>PARTITION<TAB>OFFSET` lines → line → (partition, offset).
fn parse_acks(stdout: &str) -> BTreeMap<u64, (u32, u64)> {
    let mut acks = BTreeMap::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 3, "{line:?}");
        let previous = acks.insert(
            fields[0].parse().unwrap(),
            (fields[1].parse().unwrap(), fields[2].parse().unwrap()),
        );
        assert!(previous.is_none(), "line acknowledged twice: {line}");
    }
    acks
}

#[test]
fn cli_admin_produce_consume_across_shards() {
    let dir = data_dir("cli");
    let node = Node::start(&dir, 2, 0);
    let gateway = Gateway::start(&dir, node.endpoints[1], "127.0.0.1:0");
    let cli = Cli {
        gateway: gateway.address,
        cert: gateway.cert.clone(),
    };

    assert_eq!(
        cli.ok(&["topic", "create", "events", "--partitions", "4"], ""),
        "created topic events with 4 partitions\n"
    );
    cli.ok(
        &[
            "topic",
            "create",
            "audit",
            "--partitions",
            "1",
            "--retention-ms",
            "unlimited",
            "--retention-bytes",
            "1000000000",
        ],
        "",
    );
    let stderr = cli.fails(&["topic", "create", "events", "--partitions", "4"], "");
    assert!(stderr.starts_with("spate: error: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // A single node holds one copy of each partition: more is refused, and says why.
    let stderr = cli.fails(
        &[
            "topic",
            "create",
            "copies",
            "--partitions",
            "1",
            "--replication-factor",
            "2",
        ],
        "",
    );
    assert!(stderr.contains("replication needs a cluster"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Nor can it move partitions between nodes.
    for args in [
        &["cluster", "reassign", "events", "--replicas", "1,2"][..],
        &["cluster", "elect-preferred"],
        &["cluster", "decommission", "3"],
    ] {
        let stderr = cli.fails(args, "");
        assert!(
            stderr.contains("moving partitions between nodes needs a cluster"),
            "{args:?}: {stderr}"
        );
    }
    let listed = cli.ok(&["topic", "list"], "");
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["TOPIC", "PARTITIONS", "RETENTION_MS", "RETENTION_BYTES"],
            vec!["audit", "1", "unlimited", "1000000000"],
            vec!["events", "4", "604800000", "unlimited"],
        ]
    );
    // Retention changes on a live topic; what is not named stays.
    assert_eq!(
        cli.ok(
            &["topic", "alter", "audit", "--retention-ms", "3600000"],
            ""
        ),
        "topic audit: retention_ms 3600000, retention_bytes 1000000000, segment_bytes default\n"
    );
    assert_eq!(
        cli.ok(
            &["topic", "alter", "audit", "--retention-bytes", "default"],
            ""
        ),
        "topic audit: retention_ms 3600000, retention_bytes default, segment_bytes default\n"
    );
    assert!(cli
        .ok(&["topic", "list"], "")
        .lines()
        .any(|line| line.split_whitespace().collect::<Vec<_>>()
            == ["audit", "1", "3600000", "unlimited"]));
    for refused in [
        &["topic", "alter", "audit"][..],
        &["topic", "alter", "audit", "--retention-ms", "0"],
        &["topic", "alter", "nope", "--retention-ms", "1000"],
    ] {
        let stderr = cli.fails(refused, "");
        assert!(
            stderr.starts_with("spate: error: "),
            "{refused:?}: {stderr}"
        );
    }

    // Keyed lines: each key always lands on the partition its hash names, and each
    // partition's offsets follow the input order.
    let lines: Vec<(String, String)> = (1..=600)
        .map(|i| (format!("user-{}", i % 7), format!("event {i} ünïcode")))
        .collect();
    let input: String = lines
        .iter()
        .map(|(key, value)| format!("{key}|{value}\n"))
        .collect();
    let acks = parse_acks(&cli.ok(
        &["produce", "events", "--key-separator", "|", "--report-acks"],
        &input,
    ));
    assert_eq!(acks.len(), 600);
    let mut expected: Vec<Vec<&str>> = vec![Vec::new(); 4];
    for (number, (partition, offset)) in &acks {
        let (key, value) = &lines[(*number - 1) as usize];
        assert_eq!(*partition, partition_for_key(key.as_bytes(), 4), "{key}");
        assert_eq!(*offset, expected[*partition as usize].len() as u64);
        expected[*partition as usize].push(value);
    }
    assert!(expected.iter().filter(|values| !values.is_empty()).count() >= 3);
    for (partition, values) in expected.iter().enumerate() {
        let consumed = cli.ok(
            &["consume", "events", "--partition", &partition.to_string()],
            "",
        );
        let consumed: Vec<&str> = consumed.lines().collect();
        assert_eq!(&consumed, values, "partition {partition}");
    }
    assert_eq!(cli.ok(&["consume", "events"], "").lines().count(), 600);

    // Describe: owners over both shards, high watermarks as produced, bytes and segments on
    // disk, the records' times, and the last minute's rate (everything was just produced).
    let described = cli.ok(&["topic", "describe", "events"], "");
    let mut described = described.lines();
    let heading = described.next().unwrap();
    assert!(
        heading.starts_with("topic events: 4 partitions, retention_ms 604800000"),
        "{heading}"
    );
    assert!(heading.ends_with(" on disk"), "{heading}");
    assert_eq!(
        described
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "PARTITION",
            "SHARD",
            "LOG_START",
            "HIGH_WATERMARK",
            "SIZE",
            "SEGMENTS",
            "FIRST_TIMESTAMP",
            "LAST_TIMESTAMP",
            "RATE_1M"
        ]
    );
    let mut shards = HashSet::new();
    for (partition, row) in described.enumerate() {
        let row: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(row[0], partition.to_string());
        shards.insert(row[1].to_owned());
        assert_eq!(row[2], "0");
        let count = expected[partition].len();
        assert_eq!(row[3], count.to_string());
        assert_eq!(row[5], "1", "one segment: {row:?}");
        if count > 0 {
            assert!(!row[4].ends_with("0B") || row[4] != "0B", "{row:?}");
            assert!(row[6].starts_with("20") && row[6].ends_with('Z'), "{row:?}");
            assert!(row[7] >= row[6], "{row:?}");
            let rate: f64 = row[8].trim_end_matches("/s").parse().unwrap();
            #[allow(clippy::cast_precision_loss)]
            let expected_rate = count as f64 / 60.0;
            assert!((rate - expected_rate).abs() < 0.1, "{row:?}");
        } else {
            assert_eq!((row[6], row[7], row[8]), ("-", "-", "0.0/s"), "{row:?}");
        }
    }
    assert_eq!(shards.len(), 2, "partitions spread over both shards");
    // The node at a glance: both shards, every partition (events, the 1-partition topic made
    // above, and the 16 of the offsets topic).
    let cluster = cli.ok(&["cluster", "info"], "");
    assert!(
        cluster.starts_with("node: 2 shards, 2 topics, 21 partitions (16 of them internal)"),
        "{cluster}"
    );
    let owned: usize = cluster
        .lines()
        .skip(2)
        .map(|line| {
            line.split_whitespace()
                .nth(2)
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(owned, 21, "{cluster}");
    // Without etcd the node is a single node, the one member, with both shards.
    let status = cli.ok(&["cluster", "status"], "");
    let shown: Vec<&str> = status.lines().collect();
    assert!(
        shown[0].starts_with("a single node (no cluster; answered by "),
        "{status}"
    );
    assert_eq!(
        shown.len(),
        4,
        "a heading, the columns, one member, the partitions: {status}"
    );
    assert!(
        shown[3].starts_with("partitions: ")
            && shown[3].ends_with(" 0 under-replicated, 0 offline"),
        "{status}"
    );
    let us: Vec<&str> = shown[2].split_whitespace().collect();
    assert_eq!(us[1], "-", "no session without a cluster: {status}");
    assert_eq!(us[2].len(), 16, "the storage id: {status}");
    assert!(us[3].ends_with('Z'), "the start in UTC: {status}");
    assert_eq!(us[4].split(',').count(), 2, "both shards: {status}");
    // Durations and sizes take units.
    cli.ok(
        &[
            "topic",
            "alter",
            "events",
            "--retention-ms",
            "2d",
            "--retention-bytes",
            "1GiB",
        ],
        "",
    );
    let altered = cli.ok(&["topic", "describe", "events"], "");
    assert!(
        altered.starts_with(
            "topic events: 4 partitions, retention_ms 172800000, retention_bytes 1073741824,"
        ),
        "{altered}"
    );
    // A smaller segment size applies from the next roll: 200 KB fill several 64 KiB
    // segments.
    cli.ok(&["topic", "create", "rolled", "--partitions", "1"], "");
    let changed = cli.ok(
        &["topic", "alter", "rolled", "--segment-bytes", "64KiB"],
        "",
    );
    assert!(changed.ends_with("segment_bytes 65536\n"), "{changed}");
    let filler: String = (0..2000).map(|i| format!("{i:0>99}\n")).collect();
    cli.ok(&["produce", "rolled", "--batch-bytes", "16384"], &filler);
    let rolled = cli.ok(&["topic", "describe", "rolled"], "");
    let segments: u32 = rolled
        .lines()
        .find(|line| line.starts_with("0 "))
        .and_then(|line| line.split_whitespace().nth(5))
        .unwrap()
        .parse()
        .unwrap();
    assert!(segments >= 3, "{rolled}");
    assert!(rolled.contains("segment_bytes 65536"), "{rolled}");
    assert!(rolled.contains("min_insync_replicas 1,"), "{rolled}");
    assert_eq!(cli.ok(&["consume", "rolled"], ""), filler);
    cli.ok(&["topic", "delete", "rolled"], "");
    // min.insync.replicas: a single node (one replica in sync) refuses `fsync` writes while
    // it is above 1, with the reason; `write` ones are taken.
    cli.ok(
        &[
            "topic",
            "create",
            "strict",
            "--partitions",
            "1",
            "--min-insync-replicas",
            "2",
        ],
        "",
    );
    assert!(cli
        .ok(&["topic", "describe", "strict"], "")
        .contains("min_insync_replicas 2,"));
    // (Retriable: the producer tries again until its delivery timeout.)
    let refused = cli.fails(
        &[
            "produce",
            "strict",
            "--durability",
            "fsync",
            "--delivery-timeout-ms",
            "1500",
        ],
        "r\n",
    );
    assert!(refused.contains("min.insync.replicas is 2"), "{refused}");
    cli.ok(&["produce", "strict", "--durability", "write"], "w\n");
    assert_eq!(
        cli.ok(
            &[
                "topic",
                "alter",
                "strict",
                "--min-insync-replicas",
                "default"
            ],
            ""
        ),
        "topic strict: retention_ms default, retention_bytes default, segment_bytes default, \
         min_insync_replicas 1\n"
    );
    cli.ok(&["produce", "strict", "--durability", "fsync"], "f\n");
    assert_eq!(cli.ok(&["consume", "strict"], ""), "w\nf\n");
    cli.ok(&["topic", "delete", "strict"], "");

    // JSON, positions and counts.
    let busiest = (0..4).max_by_key(|p| expected[*p].len()).unwrap();
    let partition = busiest.to_string();
    let json = cli.ok(
        &[
            "consume",
            "events",
            "--partition",
            &partition,
            "--from",
            "1",
            "--count",
            "2",
            "--format",
            "json",
        ],
        "",
    );
    let json: Vec<&str> = json.lines().collect();
    assert_eq!(json.len(), 2);
    let key = &lines[(*acks
        .iter()
        .find(|(_, at)| **at == (busiest as u32, 1))
        .unwrap()
        .0
        - 1) as usize]
        .0;
    assert!(json[0].starts_with(&format!(
        "{{\"partition\":{busiest},\"offset\":1,\"timestamp\":"
    )));
    assert!(
        json[0].ends_with(&format!(
            ",\"key\":\"{key}\",\"value\":\"{}\",\"headers\":[]}}",
            expected[busiest][1]
        )),
        "{}",
        json[0]
    );
    let future = (now_ms() + 3_600_000).to_string();
    assert_eq!(
        cli.ok(&["consume", "events", "--from", &format!("@{future}")], ""),
        ""
    );
    assert_eq!(
        cli.ok(&["consume", "events", "--from", "@0"], "")
            .lines()
            .count(),
        600
    );
    assert_eq!(cli.ok(&["consume", "events", "--from", "latest"], ""), "");

    // An explicit partition; binary-safe values come back as value_b64 in JSON.
    let acks = parse_acks(&cli.ok(
        &["produce", "audit", "--partition", "0", "--report-acks"],
        "first\n\nthird\r\n",
    ));
    assert_eq!(
        acks.into_iter().collect::<Vec<_>>(),
        [(1, (0, 0)), (2, (0, 1)), (3, (0, 2))]
    );
    assert_eq!(cli.ok(&["consume", "audit"], ""), "first\n\nthird\n");

    // Trim: the records before an offset go (DeleteRecords); past the end is refused.
    let trimmed = cli.ok(&["topic", "trim", "audit", "--before", "1"], "");
    let rows: Vec<Vec<&str>> = trimmed
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(rows, [vec!["PARTITION", "LOG_START"], vec!["0", "1"]]);
    assert_eq!(cli.ok(&["consume", "audit"], ""), "\nthird\n");
    let stderr = cli.fails(&["topic", "trim", "audit", "--before", "99"], "");
    assert!(
        stderr.starts_with("spate: error: partition 0: ") && stderr.contains("99"),
        "{stderr}"
    );
    // In the server's words, without its code name (issue 18, point 7).
    assert!(!stderr.contains("OffsetOutOfRange"), "{stderr}");
    let stderr = cli.fails(&["topic", "trim", "audit", "--before", "soon"], "");
    assert!(stderr.contains("neither an offset nor `end`"), "{stderr}");

    // Failures: one line on stderr, non-zero exit; the good lines still acknowledged.
    let output = cli.run(
        &["produce", "audit", "--key-separator", "=", "--report-acks"],
        "a=1\nno separator\nb=2\n",
    );
    assert!(!output.status.success());
    let acked = parse_acks(&String::from_utf8(output.stdout).unwrap());
    assert_eq!(acked.keys().copied().collect::<Vec<_>>(), [1, 3]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("line 2 not acknowledged"), "{stderr}");
    assert!(
        stderr.contains("1 of 3 records were not acknowledged"),
        "{stderr}"
    );
    let stderr = cli.fails(&["consume", "nothing"], "");
    assert_eq!(stderr, "spate: error: unknown topic nothing\n");
    let stderr = cli.fails(&["produce", "audit", "--partition", "5"], "x\n");
    assert!(stderr.contains("partition 5 does not exist"), "{stderr}");

    assert_eq!(
        cli.ok(&["topic", "delete", "audit"], ""),
        "deleted topic audit\n"
    );
    assert!(!cli.ok(&["topic", "list"], "").contains("audit"));
    drop(gateway);
    drop(node);
}

/// A node with `shards` shards on free ports, a gateway in front of it, the CLI for them, and
/// `topic` created with `partitions` partitions.
fn cli_cluster(name: &str, shards: u32, topic: &str, partitions: u32) -> (Node, Gateway, Cli) {
    let dir = data_dir(name);
    let node = Node::start(&dir, shards, 0);
    let gateway = Gateway::start(&dir, node.endpoints[0], "127.0.0.1:0");
    let cli = Cli {
        gateway: gateway.address,
        cert: gateway.cert.clone(),
    };
    let partitions = partitions.to_string();
    cli.ok(&["topic", "create", topic, "--partitions", &partitions], "");
    (node, gateway, cli)
}

/// Sends `signal` (`-INT`, `-STOP`, ...) to a process.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Writes `line-1`, `line-2`, ... to `stdin` until the reader goes away; the receiver hears
/// every 10,000 lines written.
fn write_lines_endlessly(mut stdin: ChildStdin) -> mpsc::Receiver<u64> {
    let (written_sender, written) = mpsc::channel();
    std::thread::spawn(move || {
        for number in 1u64.. {
            if stdin
                .write_all(format!("line-{number}\n").as_bytes())
                .is_err()
            {
                break;
            }
            if number % 10_000 == 0 {
                let _ = written_sender.send(number);
            }
        }
    });
    written
}

/// Checks that an interrupted `spate produce` is still draining, interrupts it again and
/// returns its stderr once it exited with 130, which must come within 5 s.
fn interrupt_again(child: Child) -> String {
    std::thread::sleep(Duration::from_millis(500));
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the interrupt did not drain"
    );
    let second = Instant::now();
    send_signal(child.id(), "-INT");
    let output = child.wait_with_output().unwrap();
    let took = second.elapsed();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
    stderr
}

/// The summary line an interrupted `spate produce` prints.
fn interrupt_summary(stderr: &str) -> &str {
    let summary = stderr
        .lines()
        .find(|line| line.contains("lines read"))
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    assert!(summary.starts_with("spate: interrupted: "), "{summary}");
    summary
}

/// Issue 18, point 2: the first SIGINT stops reading, drains the records in flight and
/// prints what is stored; every line it reports stored is stored, once and in order.
#[test]
fn an_interrupted_produce_drains_and_reports_what_is_stored() {
    let (_node, _gateway, cli) = cli_cluster("interrupt", 1, "lines", 1);
    let mut child = cli.spawn(&["produce", "lines", "--linger-ms", "1"]);
    // Lines keep coming and stdin stays open: only the interrupt ends the run.
    let written = write_lines_endlessly(child.stdin.take().unwrap());
    // Interrupt mid-run, once some 50,000 lines went in.
    while written.recv_timeout(STARTUP_TIMEOUT).unwrap() < 50_000 {}
    send_signal(child.id(), "-INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let summary = interrupt_summary(&stderr);
    let stored: u64 = summary
        .rsplit("every line up to line ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no stored line in {summary:?}"));
    assert!(stored >= 1, "{summary}");
    // Nothing failed and the drain finished: every line read is stored.
    assert!(
        summary.contains(" 0 failed, 0 not known stored"),
        "{summary}"
    );
    let consumed = cli.ok(&["consume", "lines"], "");
    let consumed: Vec<&str> = consumed.lines().collect();
    assert!(consumed.len() as u64 >= stored, "{summary}");
    for (index, line) in consumed.iter().enumerate() {
        assert_eq!(*line, format!("line-{}", index + 1), "{summary}");
    }
    assert_eq!(consumed.len() as u64, stored, "{summary}");
}

/// Issue 18, point 3 (with issue 13's idempotent producer): when records fail for good (the
/// node killed and not back within `--delivery-timeout-ms`), nothing of a partition is stored
/// after its first failed batch, the lines surely not stored go to `--failed-lines` and those
/// whose answer was lost to `--unknown-lines`. Producing the failed-lines file again stores
/// exactly those lines: every line is then stored once, except unknown ones, at most once.
#[test]
fn failed_lines_are_written_out_and_a_rerun_of_them_fills_the_gap() {
    let dir = data_dir("failed-lines");
    let port = free_ports(2);
    let mut node = Node::start(&dir, 2, port);
    let gateway = Gateway::start(&dir, node.endpoints[0], "127.0.0.1:0");
    let cli = Cli {
        gateway: gateway.address,
        cert: gateway.cert.clone(),
    };
    cli.ok(&["topic", "create", "lines", "--partitions", "2"], "");
    let failed_path = dir.join("failed.txt");
    let unknown_path = dir.join("unknown.txt");
    let failed_arg = failed_path.to_str().unwrap().to_owned();
    let unknown_arg = unknown_path.to_str().unwrap().to_owned();
    let mut child = cli.spawn(&[
        "produce",
        "lines",
        "--linger-ms",
        "1",
        "--delivery-timeout-ms",
        "1500",
        "--failed-lines",
        &failed_arg,
        "--unknown-lines",
        &unknown_arg,
    ]);
    const TOTAL: u64 = 60_000;
    let mut stdin = child.stdin.take().unwrap();
    let (go_on, resume) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for number in 1..=TOTAL {
            if number == 40_001 {
                resume.recv().unwrap();
            }
            stdin
                .write_all(format!("line-{number}\n").as_bytes())
                .unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    node.process.kill();
    go_on.send(()).unwrap();
    writer.join().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("records were not acknowledged"), "{stderr}");
    node = Node::start(&dir, 2, port);

    let lines_of = |text: &str| -> Vec<String> { text.lines().map(str::to_owned).collect() };
    let failed = lines_of(&std::fs::read_to_string(&failed_path).unwrap());
    let unknown = lines_of(&std::fs::read_to_string(&unknown_path).unwrap());
    let stored = lines_of(&cli.ok(&["consume", "lines"], ""));
    assert!(!failed.is_empty(), "{stderr}");
    let stored_set: HashSet<&String> = stored.iter().collect();
    assert_eq!(stored_set.len(), stored.len(), "a line stored twice");
    assert!(
        failed.iter().all(|line| !stored_set.contains(line)),
        "a line in the failed-lines file is stored"
    );
    let mut all: HashSet<&String> = stored_set.clone();
    all.extend(failed.iter());
    all.extend(unknown.iter());
    assert_eq!(
        all.len() as u64,
        TOTAL,
        "every line is stored, failed or unknown"
    );

    // The failed-lines file cannot also be the input (it would be emptied before it is read).
    let same = cli
        .command(&["produce", "lines", "--failed-lines", &failed_arg])
        .stdin(std::fs::File::open(&failed_path).unwrap())
        .output()
        .unwrap();
    assert!(!same.status.success());
    assert!(String::from_utf8_lossy(&same.stderr).contains("is the input too"));
    assert_eq!(
        lines_of(&std::fs::read_to_string(&failed_path).unwrap()),
        failed
    );
    let input: String = failed.iter().map(|line| format!("{line}\n")).collect();
    cli.ok(&["produce", "lines"], &input);
    let after = lines_of(&cli.ok(&["consume", "lines"], ""));
    let mut counts: HashMap<&String, u32> = HashMap::new();
    for line in &after {
        *counts.entry(line).or_default() += 1;
    }
    assert!(
        counts.values().all(|&count| count == 1),
        "a line stored twice after the rerun"
    );
    for line in stored.iter().chain(&failed) {
        assert_eq!(counts.get(line), Some(&1), "{line}");
    }
    println!(
        "{} stored, {} failed then stored by the rerun, {} unknown",
        stored.len(),
        failed.len(),
        unknown.len()
    );
    drop(gateway);
    drop(node);
}

/// Issue 18, point 3: the gateway is killed (`kill -9`) mid-produce and started again a
/// second later: the idempotent producer resends what was unanswered, `spate produce` exits 0
/// and the topic holds exactly the input, once.
#[test]
fn a_gateway_kill_mid_produce_stores_the_input_exactly_once() {
    let dir = data_dir("gateway-kill-produce");
    let node = Node::start(&dir, 2, 0);
    let port = free_ports(1);
    let listen = format!("127.0.0.1:{port}");
    let mut gateway = Gateway::start(&dir, node.endpoints[0], &listen);
    let cli = Cli {
        gateway: gateway.address,
        cert: gateway.cert.clone(),
    };
    cli.ok(&["topic", "create", "lines", "--partitions", "2"], "");
    let mut child = cli.spawn(&["produce", "lines", "--linger-ms", "1"]);
    const TOTAL: u64 = 100_000;
    let mut stdin = child.stdin.take().unwrap();
    let (killed, resume) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for number in 1..=TOTAL {
            if number == 50_001 {
                resume.recv().unwrap();
            }
            stdin
                .write_all(format!("line-{number}\n").as_bytes())
                .unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(800));
    gateway.process.kill();
    killed.send(()).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    gateway = Gateway::start(&dir, node.endpoints[0], &listen);
    writer.join().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    let stored = cli.ok(&["consume", "lines"], "");
    let mut seen = HashSet::new();
    for line in stored.lines() {
        let number: u64 = line.trim_start_matches("line-").parse().unwrap();
        assert!(seen.insert(number), "line {number} stored twice");
    }
    assert_eq!(seen.len() as u64, TOTAL, "every line stored");
    drop(gateway);
    drop(node);
}

/// The README's "what to try next": `spate up` stopped (SIGTERM) in the middle of a
/// `spate produce` and started again; the producer waits, resends what was unanswered and
/// every line is stored exactly once.
#[test]
fn a_produce_rides_out_a_restart_of_spate_up() {
    let dir = data_dir("up-restart-produce");
    let port = free_ports(1);
    let start = || {
        let mut up = Process::spawn(
            spate_command()
                .args([
                    "up",
                    "--gateway",
                    &format!("127.0.0.1:{port}"),
                    "--shards",
                    "2",
                ])
                .args(["--kafka-listen", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(dir.join("data")),
            dir.join("up.log"),
        );
        let (gateway, cert) = parse_gateway_line(&up.line("gateway listening on "));
        up.line("spate is up");
        (up, Cli { gateway, cert })
    };
    let (mut up, cli) = start();
    cli.ok(&["topic", "create", "lines", "--partitions", "2"], "");
    let mut child = cli.spawn(&["produce", "lines", "--linger-ms", "1"]);
    const TOTAL: u64 = 60_000;
    let mut stdin = child.stdin.take().unwrap();
    let (restarted, resume) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for number in 1..=TOTAL {
            if number == 30_001 {
                resume.recv().unwrap();
            }
            stdin
                .write_all(format!("line-{number}\n").as_bytes())
                .unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(800));
    assert!(up.terminate().success());
    let (mut up, _) = start();
    restarted.send(()).unwrap();
    writer.join().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    let stored = cli.ok(&["consume", "lines"], "");
    let mut seen = HashSet::new();
    for line in stored.lines() {
        assert!(seen.insert(line.to_owned()), "{line} stored twice");
    }
    assert_eq!(seen.len() as u64, TOTAL, "every line stored");
    assert!(up.terminate().success());
}

/// Issue 18, point 7: a wrong address (nothing listens on that UDP port) is answered within
/// about 2 s, naming the address and what to check.
#[test]
fn a_wrong_gateway_address_is_named_fast() {
    // A real gateway's certificate, and an address where no gateway listens.
    let (_node, _gateway, real) = cli_cluster("wrong-address", 1, "t", 1);
    let port = free_ports(1);
    let address = format!("127.0.0.1:{port}");
    let cli = Cli {
        gateway: address.parse().unwrap(),
        cert: real.cert,
    };
    let started = Instant::now();
    let stderr = cli.fails(&["topic", "list"], "");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}: {stderr}");
    assert!(
        stderr.starts_with(&format!(
            "spate: error: no Spate gateway answered at {address} (QUIC, UDP) within 2 s"
        )),
        "{stderr}"
    );
}

/// Issue 18, point 4: records in full — headers and a custom delimiter on produce, kcat-style
/// templates, JSON lines that `produce --input json` takes back unchanged (binary values,
/// headers, timestamps, partitions), starts from the end and per partition, an end, and an
/// offset past the end treated the same with and without `--follow`.
#[test]
fn records_in_full_round_trip_through_templates_and_json() {
    let (_node, _gateway, cli) = cli_cluster("records-in-full", 1, "full", 2);
    cli.ok(
        &[
            "produce",
            "full",
            "--partition",
            "0",
            "-H",
            "src=test",
            "-H",
            "v=2",
            "-D",
            ";",
        ],
        "a;b;c",
    );
    let printed = cli.ok(&["consume", "full", "--format", "%p:%o %K %s [%h]\\n"], "");
    assert_eq!(
        printed,
        "0:0 -1 a [src=test,v=2]\n0:1 -1 b [src=test,v=2]\n0:2 -1 c [src=test,v=2]\n"
    );
    // Binary values, keys, headers, timestamps and partitions in JSON lines.
    let input = concat!(
        r#"{"partition":1,"timestamp":1700000000000,"key":"k1","value_b64":"/wBB","headers":[{"name":"h","value":"x"},{"name":"n","value":null}]}"#,
        "\n",
        r#"{"partition":1,"timestamp":1700000000001,"key":null,"value":"plain"}"#,
        "\n"
    );
    cli.ok(&["produce", "full", "--input", "json"], input);
    let json = cli.ok(
        &["consume", "full", "--partition", "1", "--format", "json"],
        "",
    );
    assert_eq!(
        json,
        concat!(
            r#"{"partition":1,"offset":0,"timestamp":1700000000000,"key":"k1","value_b64":"/wBB","headers":[{"name":"h","value":"x"},{"name":"n","value":null}]}"#,
            "\n",
            r#"{"partition":1,"offset":1,"timestamp":1700000000001,"key":null,"value":"plain","headers":[]}"#,
            "\n"
        )
    );
    // What consume prints, produce takes back: a copy prints the same.
    cli.ok(&["topic", "create", "copy", "--partitions", "2"], "");
    cli.ok(&["produce", "copy", "--input", "json"], &json);
    assert_eq!(
        cli.ok(
            &["consume", "copy", "--partition", "1", "--format", "json"],
            ""
        ),
        json
    );
    // Starts and ends.
    let values = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["consume", "full"];
        all.extend_from_slice(args);
        cli.ok(&all, "").lines().map(str::to_owned).collect()
    };
    assert_eq!(values(&["--from", "-1", "--partition", "0"]), ["c"]);
    assert_eq!(values(&["--from", "0=1"]), ["b", "c"]);
    assert_eq!(values(&["--from", "0=1,1=-1"]).len(), 3);
    assert_eq!(values(&["--partition", "0", "--until", "2"]), ["a", "b"]);
    // Before the first record at or after that time: only the first of partition 1.
    assert_eq!(
        values(&[
            "--partition",
            "1",
            "--until",
            "@1700000000001",
            "--format",
            "%o\\n"
        ]),
        ["0"]
    );
    // An offset past the end: an error with and without --follow, unless told where to go.
    for follow in [false, true] {
        let mut args = vec!["consume", "full", "--partition", "0", "--from", "9"];
        if follow {
            args.push("--follow");
        }
        let stderr = cli.fails(&args, "");
        assert!(stderr.contains("offset 9 is outside"), "{stderr}");
    }
    assert_eq!(
        values(&[
            "--partition",
            "0",
            "--from",
            "9",
            "--offset-reset",
            "earliest"
        ]),
        ["a", "b", "c"]
    );
    assert!(values(&[
        "--partition",
        "0",
        "--from",
        "9",
        "--offset-reset",
        "latest"
    ])
    .is_empty());
}

/// `args` as the `&str`s `Cli` takes.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Runs the shell block of `docs/{doc}` that follows the comment starting `<!-- {marker}:`
/// in `dir`, with `env`.
fn run_documented(doc: &str, marker: &str, dir: &Path, env: &[(&str, &str)]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let block = text
        .split_once(&format!("<!-- {marker}:"))
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block.to_owned())
        .unwrap_or_else(|| panic!("docs/{doc} has the {marker} block"));
    std::fs::create_dir_all(dir).unwrap();
    let output = Command::new("bash")
        .args(["-e", "-c", &block])
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "the {marker} block of docs/{doc} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the openssl block of docs/tls.md in `dir` for `name` and `ip`.
fn make_certificates_as_documented(dir: &Path, name: &str, ip: &str) {
    run_documented(
        "tls.md",
        "tls-howto",
        dir,
        &[("GATEWAY_NAME", name), ("GATEWAY_IP", ip)],
    );
}

/// A CA, the gateway's certificate for localhost/127.0.0.1 (docs/tls.md) and a client
/// certificate for `principal` (docs/security.md), all in `dir`.
fn make_client_certificates_as_documented(dir: &Path, principal: &str) {
    make_certificates_as_documented(dir, "localhost", "127.0.0.1");
    run_documented(
        "security.md",
        "client-cert-howto",
        dir,
        &[("CLIENT_NAME", principal)],
    );
}

/// Issue 16: mutual TLS on QUIC, set up as docs/security.md says. With `--client-ca`, the
/// CLI (flags, then environment variables) and the SDK with a client certificate are
/// admitted, and the gateway logs their principal; without a certificate, or with one
/// another CA issued, they are refused with `ClientError::Refused` and a message saying
/// why. With `--client-auth optional` and the CRL made as documented, a client without a
/// certificate is admitted (anonymous) and the revoked certificate is refused.
#[test]
fn mutual_tls_as_documented_admits_and_refuses_clients() {
    let dir = data_dir("mtls");
    let certs = dir.join("certs");
    let other = dir.join("other");
    make_client_certificates_as_documented(&certs, "writer");
    make_client_certificates_as_documented(&other, "stranger");
    let node = Node::start(&dir, 1, 0);
    let gateway_with = |extra: &[&str], log: &str| {
        Process::spawn(
            Command::new(binary("spate-gateway"))
                .args(["--metrics-listen", "127.0.0.1:0"])
                .args(["--listen", "127.0.0.1:0"])
                .args(["--node", &node.endpoints[0].to_string()])
                .arg("--tls-cert")
                .arg(certs.join("gateway.pem"))
                .arg("--tls-key")
                .arg(certs.join("gateway.key"))
                .arg("--client-ca")
                .arg(certs.join("ca.pem"))
                .args(["--log-level", "info,spate_gateway=debug"])
                .args(extra),
            dir.join(log),
        )
    };
    let mut gateway = gateway_with(&[], "gateway.log");
    let (address, _) = parse_gateway_line(&gateway.line("gateway listening on "));
    let cli = Cli {
        gateway: address,
        cert: certs.join("ca.pem"),
    };
    let path = |dir: &Path, file: &str| dir.join(file).to_string_lossy().into_owned();
    let as_writer = [
        "--client-cert".to_owned(),
        path(&certs, "client.pem"),
        "--client-key".to_owned(),
        path(&certs, "client.key"),
    ];
    let as_stranger = [
        "--client-cert".to_owned(),
        path(&other, "client.pem"),
        "--client-key".to_owned(),
        path(&other, "client.key"),
    ];
    let with = |identity: &[String], args: &[&str]| -> Vec<String> {
        identity
            .iter()
            .cloned()
            .chain(args.iter().map(|arg| (*arg).to_owned()))
            .collect()
    };
    let ok = |args: Vec<String>, input: &str| cli.ok(&strs(&args), input);
    let fails = |args: Vec<String>| cli.fails(&strs(&args), "");
    ok(
        with(
            &as_writer,
            &["topic", "create", "mtls", "--partitions", "1"],
        ),
        "",
    );
    ok(with(&as_writer, &["produce", "mtls"]), "one\ntwo\n");
    // The same identity from the environment.
    let listed = cli
        .command(&["topic", "list"])
        .env("SPATE_CLIENT_CERT", certs.join("client.pem"))
        .env("SPATE_CLIENT_KEY", certs.join("client.key"))
        .output()
        .unwrap();
    assert!(
        listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains("mtls"),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let anonymous = fails(with(&[], &["topic", "list"]));
    assert!(
        anonymous.contains("refused this client")
            && anonymous.contains("requires a client certificate"),
        "{anonymous}"
    );
    let stranger = fails(with(&as_stranger, &["topic", "list"]));
    assert!(
        stranger.contains("refused this client: it does not trust the client certificate"),
        "{stranger}"
    );
    // The SDK, with and without an identity.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let identity = spate_client::ClientIdentity {
        cert: certs.join("client.pem"),
        key: certs.join("client.key"),
    };
    let topics = runtime
        .block_on(async {
            Client::connect_as(address, &certs.join("ca.pem"), "localhost", Some(&identity))
                .await?
                .list_topics()
                .await
        })
        .unwrap();
    assert!(topics.iter().any(|topic| topic.name == "mtls"));
    let refused = runtime
        .block_on(async {
            Client::connect(address, &certs.join("ca.pem"), "localhost")
                .await?
                .list_topics()
                .await
        })
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::Refused { .. }) && !refused.is_retriable(),
        "{refused:?}"
    );
    // The principal, in the gateway's debug log.
    let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap();
    assert!(
        log.lines()
            .any(|line| line.contains("QUIC client connected") && line.contains("writer")),
        "{log}"
    );
    drop(gateway);

    // Revocation, as documented, and optional client certificates.
    run_documented("security.md", "crl-howto", &certs, &[]);
    let crl = path(&certs, "crl.pem");
    let mut gateway = gateway_with(
        &["--client-auth", "optional", "--client-crl", &crl],
        "gateway-optional.log",
    );
    let (address, _) = parse_gateway_line(&gateway.line("gateway listening on "));
    let cli = Cli {
        gateway: address,
        cert: certs.join("ca.pem"),
    };
    let ok = |args: Vec<String>| cli.ok(&strs(&args), "");
    let fails = |args: Vec<String>| cli.fails(&strs(&args), "");
    assert!(ok(with(&[], &["topic", "list"])).contains("mtls"));
    let revoked = fails(with(&as_writer, &["topic", "list"]));
    assert!(
        revoked.contains("the client certificate is revoked"),
        "{revoked}"
    );
    let stranger = fails(with(&as_stranger, &["topic", "list"]));
    assert!(
        stranger.contains("it does not trust the client certificate"),
        "{stranger}"
    );
    drop(gateway);
}

/// Issue 18, point 9: the CA and leaf made with the commands of docs/tls.md are served by a
/// gateway and trusted by `spate` (by IP and by name); another CA is refused; a renewal
/// written over the files and a SIGHUP reach new connections while a connection opened
/// before keeps working; a CA certificate used as the server's is refused as
/// CaUsedAsEndEntity (the documented pitfall).
#[test]
fn a_certificate_made_as_documented_is_served_trusted_and_reloaded() {
    let dir = data_dir("tls-howto");
    let first = dir.join("first");
    let second = dir.join("second");
    make_certificates_as_documented(&first, "localhost", "127.0.0.1");
    make_certificates_as_documented(&second, "localhost", "127.0.0.1");
    let serving = dir.join("serving");
    std::fs::create_dir_all(&serving).unwrap();
    for file in ["gateway.pem", "gateway.key"] {
        std::fs::copy(first.join(file), serving.join(file)).unwrap();
    }
    let node = Node::start(&dir, 1, 0);
    let mut gateway = Process::spawn(
        Command::new(binary("spate-gateway"))
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--node", &node.endpoints[0].to_string()])
            .arg("--tls-cert")
            .arg(serving.join("gateway.pem"))
            .arg("--tls-key")
            .arg(serving.join("gateway.key")),
        dir.join("gateway.log"),
    );
    let (address, served) = parse_gateway_line(&gateway.line("gateway listening on "));
    assert_eq!(served, serving.join("gateway.pem"));
    let trusting = |ca: &Path| Cli {
        gateway: address,
        cert: ca.to_owned(),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    trusting(&first.join("ca.pem")).ok(&["topic", "create", "tls", "--partitions", "1"], "");
    trusting(&first.join("ca.pem")).ok(&["--server-name", "localhost", "topic", "list"], "");
    let refused = trusting(&second.join("ca.pem")).fails(&["topic", "list"], "");
    assert!(refused.contains("certificate"), "{refused}");
    // A connection opened before the renewal.
    let before = runtime
        .block_on(Client::connect(address, &first.join("ca.pem"), "localhost"))
        .unwrap();
    // The renewal: the second CA's leaf over the served files, then SIGHUP.
    for file in ["gateway.pem", "gateway.key"] {
        let temporary = serving.join(format!("{file}.new"));
        std::fs::copy(second.join(file), &temporary).unwrap();
        std::fs::rename(&temporary, serving.join(file)).unwrap();
    }
    send_signal(gateway.child.id(), "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
        if log.contains("reloaded the TLS certificate") {
            break;
        }
        assert!(Instant::now() < deadline, "no reload logged: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    trusting(&second.join("ca.pem")).ok(&["topic", "list"], "");
    let stale = trusting(&first.join("ca.pem")).fails(&["topic", "list"], "");
    assert!(stale.contains("certificate"), "{stale}");
    let listed = runtime.block_on(before.list_topics()).unwrap();
    assert!(
        listed.iter().any(|topic| topic.name == "tls"),
        "the old connection goes on"
    );
    drop(gateway);

    // The pitfall: a self-signed CA certificate as the server's own.
    let pitfall = dir.join("pitfall");
    std::fs::create_dir_all(&pitfall).unwrap();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-keyout",
            "ca-as-leaf.key",
            "-out",
            "ca-as-leaf.pem",
            "-days",
            "30",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .current_dir(&pitfall)
        .output()
        .unwrap();
    assert!(made.status.success());
    let mut wrong = Process::spawn(
        Command::new(binary("spate-gateway"))
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--node", &node.endpoints[0].to_string()])
            .arg("--tls-cert")
            .arg(pitfall.join("ca-as-leaf.pem"))
            .arg("--tls-key")
            .arg(pitfall.join("ca-as-leaf.key")),
        dir.join("gateway-pitfall.log"),
    );
    let (address, _) = parse_gateway_line(&wrong.line("gateway listening on "));
    let refused = Cli {
        gateway: address,
        cert: pitfall.join("ca-as-leaf.pem"),
    }
    .fails(&["topic", "list"], "");
    assert!(refused.contains("CaUsedAsEndEntity"), "{refused}");
    drop(wrong);
    // `--ca-cert system` trusts the machine's CAs (loaded: the answer is about the
    // certificate the gateway sent, not about a file), which did not sign a private CA's leaf.
    let gateway = Gateway::start(&dir, node.endpoints[0], "127.0.0.1:0");
    let untrusted = Cli {
        gateway: gateway.address,
        cert: PathBuf::from("system"),
    }
    .fails(&["topic", "list"], "");
    assert!(untrusted.contains("UnknownIssuer"), "{untrusted}");
    drop(gateway);
    drop(node);
}

/// Issue 18, point 8: `spate up` records itself as the profile `local`, so commands work
/// from any directory without flags; other profiles are set, listed, chosen (`--profile`,
/// `profile use`) and deleted; flags win over the profile.
#[test]
fn profiles_follow_the_user_and_spate_up_records_itself() {
    let dir = data_dir("profiles");
    let config = dir.join("config.toml");
    let here = dir.join("here");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&here).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let spate = |args: &[&str]| -> Output {
        Command::new(binary("spate"))
            .env("SPATE_CONFIG", &config)
            .env_remove("SPATE_GATEWAY")
            .env_remove("SPATE_CA_CERT")
            .env_remove("SPATE_SERVER_NAME")
            .env_remove("SPATE_PROFILE")
            .current_dir(&elsewhere)
            .args(args)
            .output()
            .unwrap()
    };
    let text = |output: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let mut up = Process::spawn(
        Command::new(binary("spate"))
            .env("SPATE_CONFIG", &config)
            .envs(METRICS_ON_FREE_PORTS)
            .current_dir(&here)
            .args([
                "up",
                "--gateway",
                "127.0.0.1:0",
                "--kafka-listen",
                "127.0.0.1:0",
            ])
            .args(["--shards", "1", "--data-dir", "data"]),
        dir.join("up.log"),
    );
    up.line("spate is up");
    let created = spate(&["topic", "create", "p", "--partitions", "1"]);
    assert!(created.status.success(), "{}", text(&created));
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("profile = \"local\""), "{written}");
    assert!(written.contains("[profiles.local]"), "{written}");
    let port = free_ports(1);
    let nowhere = format!("127.0.0.1:{port}");
    let cert = here.join("data").join("tls").join("cert.pem");
    let cert = cert.to_str().unwrap();
    let set = spate(&[
        "profile",
        "set",
        "other",
        "--gateway",
        &nowhere,
        "--ca-cert",
        cert,
    ]);
    assert!(set.status.success(), "{}", text(&set));
    let listed = text(&spate(&["profile", "list"]));
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with('*') && line.contains("local")),
        "{listed}"
    );
    assert!(listed.contains("other"), "{listed}");
    let named = format!("no Spate gateway answered at {nowhere}");
    let chosen = spate(&["--profile", "other", "topic", "list"]);
    assert!(text(&chosen).contains(&named), "{}", text(&chosen));
    assert!(spate(&["profile", "use", "other"]).status.success());
    assert!(text(&spate(&["topic", "list"])).contains(&named));
    assert!(spate(&["profile", "use", "local"]).status.success());
    let listed = spate(&["topic", "list"]);
    assert!(
        listed.status.success() && text(&listed).contains('p'),
        "{}",
        text(&listed)
    );
    // A gateway on the command line wins over the profile (and does not take its CA).
    let flagged = spate(&["--gateway", &nowhere, "--ca-cert", cert, "topic", "list"]);
    assert!(text(&flagged).contains(&named), "{}", text(&flagged));
    // `spate up` makes `local` current again, and says so.
    assert!(spate(&["profile", "use", "other"]).status.success());
    drop(up);
    let mut up = Process::spawn(
        Command::new(binary("spate"))
            .env("SPATE_CONFIG", &config)
            .envs(METRICS_ON_FREE_PORTS)
            .current_dir(&here)
            .args([
                "up",
                "--gateway",
                "127.0.0.1:0",
                "--kafka-listen",
                "127.0.0.1:0",
            ])
            .args(["--shards", "1", "--data-dir", "data"]),
        dir.join("up2.log"),
    );
    up.line("spate is up");
    let log = std::fs::read_to_string(dir.join("up2.log")).unwrap();
    assert!(log.contains("it was `other`"), "{log}");
    let listed = spate(&["topic", "list"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(spate(&["profile", "delete", "other"]).status.success());
    let gone = spate(&["--profile", "other", "topic", "list"]);
    assert!(text(&gone).contains("no profile other"), "{}", text(&gone));
    assert!(up.terminate().success());
}

/// Issue 18, point 2: when the records in flight cannot be answered (the gateway is frozen),
/// a second SIGINT ends the drain at once, with the summary of what is known.
#[test]
fn a_second_interrupt_stops_the_drain_at_once() {
    let (_node, gateway, cli) = cli_cluster("interrupt-twice", 1, "lines", 1);
    let mut child = cli.spawn(&["produce", "lines"]);
    let written = write_lines_endlessly(child.stdin.take().unwrap());
    while written.recv_timeout(STARTUP_TIMEOUT).unwrap() < 20_000 {}
    let gateway_pid = gateway.process.child.id();
    send_signal(gateway_pid, "-STOP");
    send_signal(child.id(), "-INT");
    // The drain waits (nothing can be answered); the second interrupt ends it.
    let stderr = interrupt_again(child);
    send_signal(gateway_pid, "-CONT");
    let summary = interrupt_summary(&stderr);
    // With the last of the records unanswered, not all that was read is known stored.
    assert!(!summary.contains(" 0 not known stored"), "{summary}");
}

/// Issue 18, point 2: after stdin ended, an interrupt still stops a run whose last batches
/// cannot be answered (the gateway frozen): the drain is announced and a second interrupt
/// ends it at once.
#[test]
fn an_interrupt_after_the_input_ended_still_drains_and_stops() {
    let (_node, gateway, cli) = cli_cluster("interrupt-eof", 1, "lines", 1);
    let mut child = cli.spawn(&["produce", "lines", "--report-acks"]);
    // The first line is acknowledged; then the gateway stops answering, the rest of the input
    // goes in and stdin ends, so the run waits for its last batches.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"line-1\n").unwrap();
    stdin.flush().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("1\t0\t"), "{first}");
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let gateway_pid = gateway.process.child.id();
    send_signal(gateway_pid, "-STOP");
    let rest: String = (2..=1000).map(|i| format!("line-{i}\n")).collect();
    stdin.write_all(rest.as_bytes()).unwrap();
    drop(stdin);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended without its answers"
    );
    send_signal(child.id(), "-INT");
    let stderr = interrupt_again(child);
    send_signal(gateway_pid, "-CONT");
    assert!(stderr.contains("waiting up to 30000 ms"), "{stderr}");
    interrupt_summary(&stderr);
}

/// Issue 18, point 1: `spate consume --follow` keeps printing across a graceful (SIGTERM)
/// restart of the node and then of the gateway, without gaps or repeats.
#[test]
fn a_follower_survives_restarts_of_the_node_and_the_gateway() {
    let dir = data_dir("follow-restarts");
    let port = free_ports(2);
    let mut node = Node::start(&dir, 2, port);
    let mut gateway = Gateway::start(&dir, node.endpoints[0], "127.0.0.1:0");
    let address = gateway.address;
    let cli = Cli {
        gateway: address,
        cert: gateway.cert.clone(),
    };
    cli.ok(&["topic", "create", "follow", "--partitions", "2"], "");
    let mut follower = Process::spawn(
        &mut cli.command(&["consume", "follow", "--follow", "--max-wait-ms", "1000"]),
        dir.join("follower.log"),
    );
    // Produces records [from, to) once the whole path answers again, and checks that the
    // follower prints exactly them, in order (one key, so one partition).
    let phase = |from: u32, to: u32| {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !cli
            .run(&["topic", "describe", "follow"], "")
            .status
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "the topic is not reachable again"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let input: String = (from..to).map(|i| format!("k:record-{i}\n")).collect();
        cli.ok(&["produce", "follow", "--key-separator", ":"], &input);
        for i in from..to {
            let line = follower
                .lines
                .recv_timeout(STARTUP_TIMEOUT)
                .unwrap_or_else(|_| {
                    let log = std::fs::read_to_string(&follower.log).unwrap_or_default();
                    panic!("the follower stopped before record-{i}; stderr:\n{log}")
                });
            assert_eq!(line, format!("record-{i}"));
        }
    };
    phase(0, 100);
    assert!(node.process.terminate().success());
    node = Node::start(&dir, 2, port);
    phase(100, 200);
    assert!(gateway.process.terminate().success());
    gateway = Gateway::start(&dir, node.endpoints[0], &address.to_string());
    phase(200, 300);
    // Nothing more than the 300 records was printed.
    assert!(follower.lines.recv_timeout(Duration::from_secs(2)).is_err());
    assert!(
        follower.child.try_wait().unwrap().is_none(),
        "the follower exited"
    );
    drop(gateway);
}

/// `spate consume --group` in several processes: the group's members split the topic's
/// partitions (the SDK's range assignment), a member killed with SIGKILL loses its partitions
/// to the others after its session timeout, every record is printed, and a record is
/// printed twice only if the killed member printed it after its last commit. At the end
/// `spate group describe` shows every partition committed at its high watermark (lag 0).
#[test]
fn cli_group_members_split_a_topic_and_take_over_from_a_killed_one() {
    let (_node, _gateway, cli) = cli_cluster("cli-group", 2, "jobs", 4);
    let dir = data_dir("cli-group-members");
    let produce = |from: u32, to: u32| {
        let input: String = (from..to).map(|i| format!("k{i}:job-{i}\n")).collect();
        cli.ok(&["produce", "jobs", "--key-separator", ":"], &input);
    };
    let member = |name: &str| {
        Process::spawn(
            &mut cli.command(&[
                "consume",
                "jobs",
                "--group",
                "workers",
                "--format",
                "%p %o %s\\n",
            ]),
            dir.join(format!("{name}.log")),
        )
    };
    // (partition, offset, value) printed by each member.
    let mut printed: BTreeMap<&str, Vec<(u32, u64, String)>> = BTreeMap::new();
    let drain = |process: &Process,
                 name: &'static str,
                 printed: &mut BTreeMap<&str, Vec<(u32, u64, String)>>| {
        while let Ok(line) = process.lines.try_recv() {
            let mut fields = line.splitn(3, ' ');
            let partition = fields.next().unwrap().parse().unwrap();
            let offset = fields.next().unwrap().parse().unwrap();
            let value = fields.next().unwrap().to_owned();
            printed
                .entry(name)
                .or_default()
                .push((partition, offset, value));
        }
    };
    let all_printed = |printed: &BTreeMap<&str, Vec<(u32, u64, String)>>, count: u32| {
        let seen: std::collections::BTreeSet<&str> = printed
            .values()
            .flatten()
            .map(|(_, _, value)| value.as_str())
            .collect();
        seen.len() == count as usize
    };
    produce(0, 2000);
    let mut a = member("a");
    let b = member("b");
    let deadline = Instant::now() + STARTUP_TIMEOUT * 2;
    while !all_printed(&printed, 2000) {
        assert!(
            Instant::now() < deadline,
            "2,000 records not printed by the two members"
        );
        drain(&a, "a", &mut printed);
        drain(&b, "b", &mut printed);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The two members read disjoint partitions, and both read some.
    let partitions = |name: &str,
                      printed: &BTreeMap<&str, Vec<(u32, u64, String)>>|
     -> std::collections::BTreeSet<u32> {
        printed
            .get(name)
            .into_iter()
            .flatten()
            .map(|(partition, ..)| *partition)
            .collect()
    };
    let (of_a, of_b) = (partitions("a", &printed), partitions("b", &printed));
    assert!(of_a.is_disjoint(&of_b), "{of_a:?} {of_b:?}");
    assert_eq!(of_a.len() + of_b.len(), 4, "{of_a:?} {of_b:?}");
    // a is killed while new records arrive: b takes over a's partitions once a's session
    // (10 s) times out.
    produce(2000, 2500);
    a.kill();
    drain(&a, "a", &mut printed);
    produce(2500, 3000);
    let deadline = Instant::now() + STARTUP_TIMEOUT * 3;
    while !all_printed(&printed, 3000) {
        assert!(
            Instant::now() < deadline,
            "b did not take over a's partitions"
        );
        drain(&b, "b", &mut printed);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Twice only what a printed, and per partition at most what a printed after its last
    // commit (a commits at least every second).
    let mut times: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, records) in &printed {
        for (_, _, value) in records {
            times.entry(value.as_str()).or_default().push(name);
        }
    }
    for (value, names) in &times {
        assert!(
            names.len() == 1 || (names.len() == 2 && names.contains(&"a")),
            "{value}: {names:?}"
        );
    }
    // b printed each partition's records in offset order.
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for (partition, offset, _) in &printed["b"] {
        assert!(
            last.get(partition).is_none_or(|before| before < offset),
            "b: {partition} {offset}"
        );
        last.insert(*partition, *offset);
    }
    let mut b = b;
    assert!(b.terminate().success());
    let left = std::fs::read_to_string(dir.join("b.log")).unwrap();
    assert!(left.contains("left group workers after"), "{left}");
    // Lag 0 everywhere: the commits are the high watermarks.
    let described = cli.ok(&["group", "describe", "workers"], "");
    assert!(described.starts_with("group workers: Empty"), "{described}");
    let rows: Vec<Vec<&str>> = described
        .lines()
        .skip_while(|line| !line.starts_with("TOPIC"))
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 4, "{described}");
    for row in &rows {
        assert_eq!(
            row[2], row[3],
            "committed is the high watermark: {described}"
        );
        assert_eq!(row[4], "0", "{described}");
    }
    let total: u64 = rows.iter().map(|row| row[3].parse::<u64>().unwrap()).sum();
    assert_eq!(total, 3000);
    let listed = cli.ok(&["group", "list"], "");
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with("workers ") && line.contains("Empty")),
        "{listed}"
    );
    // Offsets move only while the group is empty; then the group can go.
    cli.ok(
        &[
            "group",
            "reset-offsets",
            "workers",
            "--topic",
            "jobs",
            "--to",
            "earliest",
        ],
        "",
    );
    let reset = cli.ok(&["group", "describe", "workers"], "");
    assert!(
        reset
            .lines()
            .filter(|line| line.starts_with("jobs "))
            .all(|line| line.split_whitespace().nth(2) == Some("0")),
        "{reset}"
    );
    cli.ok(&["group", "delete", "workers"], "");
    let gone = cli.fails(&["group", "describe", "workers"], "");
    assert!(gone.contains("does not exist"), "{gone}");
}

/// Committed offsets survive `kill -9` of the node during commits: every commit that was
/// acknowledged is there after the restart (a later one may be too, if it was in flight),
/// and a commit never goes back.
#[test]
fn committed_offsets_survive_node_kills_during_commits() {
    let dir = data_dir("commit-kills");
    let port = free_ports(2);
    let mut node = Node::start(&dir, 2, port);
    let gateway = Gateway::start(&dir, node.endpoints[0], "127.0.0.1:0");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(gateway.client());
    runtime
        .block_on(client.create_topic("ledger", 2, Setting::Default, Setting::Default))
        .unwrap();
    let committed = |client: &Client| -> Option<u64> {
        let found = runtime
            .block_on(client.committed_offsets("auditors", Some(vec![("ledger".into(), 1)])))
            .ok()?;
        u64::try_from(found.first()?.offset).ok()
    };
    let mut acknowledged = 0u64;
    let mut attempted = 0u64;
    for cycle in 0..3 {
        // Commit 1, 2, 3, ... as fast as answers come, while the node is killed.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let committer = {
            let client = client.clone();
            let stop = stop.clone();
            let from = attempted;
            runtime.spawn(async move {
                let (mut acked, mut tried) = (None, from);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tried += 1;
                    match client
                        .commit_offsets("auditors", vec![("ledger".into(), 1, tried)])
                        .await
                    {
                        Ok(()) => acked = Some(tried),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                (acked, tried)
            })
        };
        std::thread::sleep(Duration::from_millis(300 + 200 * cycle));
        node.process.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (acked, tried) = runtime.block_on(committer).unwrap();
        let acked = acked.expect("some commits were acknowledged before the kill");
        assert!(acked > acknowledged);
        acknowledged = acked;
        attempted = tried;
        node = Node::start(&dir, 2, port);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let found = loop {
            if let Some(found) = committed(&client) {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "no committed offset after the restart"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            found >= acknowledged && found <= attempted,
            "cycle {cycle}: committed {found}, acknowledged {acknowledged}, attempted {attempted}"
        );
        acknowledged = found;
    }
    drop(gateway);
}

/// Issue 18, point 1: a follower whose topic is deleted says so and exits with an error.
#[test]
fn a_follower_reports_its_topic_deleted() {
    let (_node, _gateway, cli) = cli_cluster("follow-deleted", 2, "doomed", 2);
    cli.ok(&["produce", "doomed"], "one\n");
    let mut follower = cli.spawn(&["consume", "doomed", "--follow", "--max-wait-ms", "500"]);
    std::thread::sleep(Duration::from_millis(500));
    cli.ok(&["topic", "delete", "doomed"], "");
    let deadline = Instant::now() + Duration::from_secs(30);
    while follower.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the follower kept waiting on a deleted topic"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = follower.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "one\n");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, "spate: error: topic doomed was deleted\n");
}

/// Issue 18, point 7: a usage error has the one error form too, and exit status 2; help
/// goes to stdout with status 0.
#[test]
fn usage_errors_have_the_one_error_form() {
    let output = spate_command()
        .args(["produce", "--partition", "x", "events"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("spate: error: "), "{stderr}");
    assert!(stderr.contains("--partition"), "{stderr}");
    let output = spate_command()
        .args(["produce", "--help"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8(output.stdout).unwrap().contains("Usage:"));
}

/// Issue 18, point 7: a port already taken is named in the error.
#[test]
fn a_gateway_port_clash_names_the_address() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let output = Command::new(binary("spate-gateway"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--listen", &address.to_string()])
        .args(["--node", "127.0.0.1:9"])
        .arg("--dev-cert-dir")
        .arg(data_dir("port-clash").join("tls"))
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for QUIC on {address} (UDP)")),
        "{stderr}"
    );
}

/// Issue 18, point 7: a gateway given an encrypted private key (made with openssl, as a user
/// would) says so, names the file and how to decrypt it, and exits non-zero.
#[test]
fn an_encrypted_key_is_named_as_such_by_the_gateway() {
    let dir = data_dir("encrypted-key");
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-aes256",
        "-pass",
        "pass:secret",
        "-out",
        "key.pem",
    ]);
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        "key.pem",
        "-passin",
        "pass:secret",
        "-subj",
        "/CN=localhost",
        "-days",
        "1",
        "-out",
        "cert.pem",
    ]);
    let output = Command::new(binary("spate-gateway"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--listen", "127.0.0.1:0", "--node", "127.0.0.1:9"])
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("holds an encrypted private key") && stderr.contains("key.pem"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
}

/// Issue 18, point 6: unkeyed records of many short runs (one `spate produce` per line)
/// spread over the partitions instead of all landing on partition 0.
#[test]
fn unkeyed_records_of_short_runs_spread_over_partitions() {
    let (_node, _gateway, cli) = cli_cluster("spread", 1, "spread", 4);
    // With a random first partition, one of 4 stays empty after 40 runs with probability
    // 4 × (3/4)^40, about 4 in 100,000.
    for run in 0..40 {
        cli.ok(&["produce", "spread"], &format!("run-{run}\n"));
    }
    let mut total = 0;
    for partition in 0..4 {
        let records = cli.ok(
            &["consume", "spread", "--partition", &partition.to_string()],
            "",
        );
        let count = records.lines().count();
        assert!(
            count > 0,
            "partition {partition} got none of the 40 records"
        );
        total += count;
    }
    assert_eq!(total, 40);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Issue 18, point 8: `spate up --gateway 0.0.0.0:PORT` issues a development certificate
/// that also names the machine's host name and the address it reaches others from, so
/// clients on other machines verify it by either; back on loopback, the certificate names
/// only `localhost` and `127.0.0.1` again.
#[test]
fn a_gateway_on_every_address_gets_a_certificate_for_the_machines_names() {
    let dir = data_dir("up-all-addresses");
    let outbound = std::net::UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|socket| {
            socket.connect(("192.0.2.1", 9))?;
            socket.local_addr()
        })
        .map(|address| address.ip());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim().to_owned();
    let up = |listen: &str| {
        let mut up = Process::spawn(
            spate_command()
                .args(["up", "--gateway", listen, "--shards", "1", "--no-kafka"])
                .arg("--data-dir")
                .arg(dir.join("data")),
            dir.join("up.log"),
        );
        let (gateway, cert) = parse_gateway_line(&up.line("gateway listening on "));
        up.line("spate is up");
        (up, gateway, cert)
    };
    let (mut all, gateway, cert) = up("0.0.0.0:0");
    let names = std::fs::read_to_string(dir.join("data/tls/names")).unwrap();
    assert!(names.lines().any(|name| name == host), "{names}");
    // Every IPv4 address of the machine (the kernel's local host routes) is named.
    let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let lines: Vec<&str> = trie.lines().collect();
    for pair in lines.windows(2) {
        if pair[1].trim() == "/32 host LOCAL" {
            let address = pair[0].trim().trim_start_matches("|-- ");
            if !address.starts_with("127.") {
                assert!(
                    names.lines().any(|name| name == address),
                    "{address}: {names}"
                );
            }
        }
    }
    // Reached by the machine's address, verified by it (the server name defaults to the
    // host of --gateway) or by the host name.
    if let Some(ip) = outbound
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
    {
        assert!(names.lines().any(|name| name == ip.to_string()), "{names}");
        let by_ip = Cli {
            gateway: SocketAddr::new(ip, gateway.port()),
            cert,
        };
        by_ip.ok(&["topic", "create", "anywhere", "--partitions", "1"], "");
        let by_host = by_ip.ok(&["--server-name", &host, "topic", "list"], "");
        assert!(by_host.contains("anywhere"), "{by_host}");
    }
    assert!(all.terminate().success());
    let (mut local, _, _) = up("127.0.0.1:0");
    let names = std::fs::read_to_string(dir.join("data/tls/names")).unwrap();
    assert_eq!(names, "localhost\n127.0.0.1\n");
    assert!(local.terminate().success());
}

#[test]
fn spate_up_serves_and_stops_cleanly() {
    let dir = data_dir("up");
    let start = || {
        let mut up = Process::spawn(
            spate_command()
                .args(["up", "--gateway", "127.0.0.1:0", "--shards", "2"])
                .args(["--kafka-listen", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(dir.join("data")),
            dir.join("up.log"),
        );
        let (gateway, cert) = parse_gateway_line(&up.line("gateway listening on "));
        assert_eq!(cert, dir.join("data").join("tls").join("cert.pem"));
        // Kafka clients are served too (on port 9092 by default).
        assert!(up
            .line("kafka listening on ")
            .contains("(advertised as 127.0.0.1:"));
        up.line("spate is up");
        (up, Cli { gateway, cert })
    };
    let (mut up, cli) = start();
    cli.ok(&["topic", "create", "demo", "--partitions", "3"], "");
    let input: String = (0..1000).map(|i| format!("record {i}\n")).collect();
    cli.ok(&["produce", "demo"], &input);
    let mut consumed: Vec<String> = cli
        .ok(&["consume", "demo"], "")
        .lines()
        .map(str::to_owned)
        .collect();
    consumed.sort();
    let mut sent: Vec<String> = input.lines().map(str::to_owned).collect();
    sent.sort();
    assert_eq!(consumed, sent);
    assert!(up.terminate().success());

    // The data and the certificate survive a restart.
    let (mut up, cli) = start();
    assert_eq!(cli.ok(&["consume", "demo"], "").lines().count(), 1000);
    assert!(up.terminate().success());
}

async fn records(consumer: &mut Consumer, count: usize) -> Vec<ConsumedRecord> {
    let mut records = Vec::with_capacity(count);
    while records.len() < count {
        let record = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("records within 30 s")
            .unwrap()
            .expect("a record");
        records.push(record);
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_and_pipelined_batches_keep_order() {
    let dir = data_dir("sdk");
    let (node, gateway, client) = cluster(&dir, 2, 0, "metrics", 2).await;

    // A follower parked in a long poll (10 s) is woken by a produce: the record arrives far
    // sooner than the poll's timeout.
    let config = ConsumerConfig {
        start: StartPosition::Offset(0),
        max_wait: Duration::from_secs(10),
        ..ConsumerConfig::default()
    };
    let mut follower = Consumer::new(&client, "metrics", Some(vec![0]), config)
        .await
        .unwrap();
    let producer = Producer::new(&client, "metrics", ProducerConfig::default())
        .await
        .unwrap();
    let sent = Instant::now();
    let delivery = producer
        .send(
            ProducerRecord::new("cpu=0.93")
                .partition(0)
                .key("host-1")
                .header("unit", "ratio")
                .timestamp(1_700_000_000_123),
        )
        .await
        .unwrap();
    let record = records(&mut follower, 1).await.remove(0);
    let latency = sent.elapsed();
    println!("long-poll consumer saw the record {latency:?} after it was sent");
    assert!(latency < Duration::from_secs(5), "{latency:?}");
    let acked = delivery.await.unwrap();
    assert_eq!((acked.partition, acked.offset), (0, 0));
    assert_eq!(
        record,
        ConsumedRecord {
            partition: 0,
            offset: 0,
            timestamp: 1_700_000_000_123,
            key: Some(Bytes::from_static(b"host-1")),
            value: Some(Bytes::from_static(b"cpu=0.93")),
            headers: vec![("unit".to_owned(), Some(Bytes::from_static(b"ratio")))],
        }
    );

    // Small batches, many in flight on one partition: offsets follow the send order.
    let config = ProducerConfig {
        batch_bytes: 1024,
        linger: Duration::ZERO,
        durability: Durability::Write,
        ..ProducerConfig::default()
    };
    let pipelined = Producer::new(&client, "metrics", config).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..20_000u32 {
        let record = ProducerRecord::new(format!("sample {i}")).partition(0);
        deliveries.push(pipelined.send(record).await.unwrap());
    }
    pipelined.flush().await.unwrap();
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let acked = delivery.await.unwrap();
        assert_eq!((acked.partition, acked.offset), (0, 1 + i as u64));
    }
    let values: Vec<Bytes> = records(&mut follower, 20_000)
        .await
        .into_iter()
        .map(|record| record.value.unwrap())
        .collect();
    for (i, value) in values.iter().enumerate() {
        assert_eq!(value, format!("sample {i}").as_bytes());
    }
    // Reading from a timestamp and to the end.
    let config = ConsumerConfig {
        start: StartPosition::Timestamp(1_700_000_000_124),
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let mut reader = Consumer::new(&client, "metrics", Some(vec![0]), config)
        .await
        .unwrap();
    let mut count = 0;
    while let Some(record) = reader.next().await.unwrap() {
        assert_eq!(record.offset, 1 + count);
        count += 1;
    }
    assert_eq!(count, 20_000);
    drop(gateway);
    drop(node);
}

/// Produces `values` one by one until each is acknowledged, reconnecting as needed; returns
/// how many attempts failed.
async fn produce_retrying(client: &Client, topic: &str, values: &[String]) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failures = 0;
    for value in values {
        loop {
            assert!(Instant::now() < deadline, "no acknowledgement within 60 s");
            let batch = single_record_batch(value);
            match client.produce(topic, 0, Durability::Fsync, batch).await {
                Ok(_) => break,
                Err(error) => {
                    assert!(error.is_retriable(), "{error}");
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    failures
}

fn single_record_batch(value: &str) -> Bytes {
    let mut builder = spate_format::BatchBuilder::new();
    builder
        .push(&spate_format::Record {
            timestamp: now_ms(),
            value: Some(value.as_bytes()),
            ..spate_format::Record::default()
        })
        .unwrap();
    Bytes::from(builder.finish().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_restart_while_clients_retry() {
    let dir = data_dir("gateway-restart");
    let (node, mut gateway, client) = cluster(&dir, 1, 0, "logs", 1).await;
    let address = gateway.address;
    let config = ConsumerConfig {
        max_wait: Duration::from_secs(2),
        ..ConsumerConfig::default()
    };
    let mut follower = Consumer::new(&client, "logs", None, config).await.unwrap();
    let before: Vec<String> = (0..50).map(|i| format!("before {i}")).collect();
    assert_eq!(produce_retrying(&client, "logs", &before).await, 0);

    gateway.process.kill();
    let restarted = Gateway::start(&dir, node.endpoints[0], &address.to_string());
    assert_eq!(restarted.address, address);
    let after: Vec<String> = (0..50).map(|i| format!("after {i}")).collect();
    let resumed = Instant::now();
    let failures = produce_retrying(&client, "logs", &after).await;
    let took = resumed.elapsed();
    println!("{failures} produce attempts failed while the gateway restarted; {took:?}");
    // The restarted gateway resets the old connection (stateless reset), so the client does
    // not sit out the 30 s idle timeout.
    assert!(took < Duration::from_secs(15), "{took:?}");

    // The follower's fetches were retried across the restart: every record once, in order.
    let values: Vec<String> = records(&mut follower, 100)
        .await
        .into_iter()
        .map(|record| String::from_utf8(record.value.unwrap().to_vec()).unwrap())
        .collect();
    let expected: Vec<String> = before.into_iter().chain(after).collect();
    assert_eq!(values, expected);
    drop(restarted);
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_kill_9_under_a_running_producer_loses_no_acknowledged_record() {
    let dir = data_dir("node-kill");
    let port = free_ports(2);
    let (mut node, gateway, client) = cluster(&dir, 2, port, "orders", 4).await;
    let config = ProducerConfig {
        linger: Duration::from_millis(1),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&client, "orders", config).await.unwrap();

    // Keeps producing numbered records and collects their outcomes until told to stop.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let producing = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        let mut in_flight = std::collections::VecDeque::new();
        let mut sequence = 0u64;
        while !*stopped.borrow_and_update() {
            let record =
                ProducerRecord::new(sequence.to_string()).key(format!("k{}", sequence % 13));
            in_flight.push_back((sequence, producer.send(record).await.unwrap()));
            sequence += 1;
            while in_flight.len() > 2000 {
                let (sequence, delivery) = in_flight.pop_front().unwrap();
                outcomes.push((sequence, delivery.await));
            }
            if sequence.is_multiple_of(200) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        producer.flush().await.unwrap();
        for (sequence, delivery) in in_flight {
            outcomes.push((sequence, delivery.await));
        }
        outcomes
    });

    let acked_before = wait_for_acks(&client, 5_000).await;
    node.process.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = Node::start(&dir, 2, port);
    assert_eq!(restarted.endpoints, node.endpoints);
    // Acknowledgements resume through the same gateway.
    wait_for_acks(&client, acked_before + 5_000).await;
    stop.send(true).unwrap();
    let outcomes = producing.await.unwrap();

    let mut acked: HashMap<u64, (u32, u64)> = HashMap::new();
    let mut failed = 0;
    for (sequence, outcome) in &outcomes {
        match outcome {
            Ok(metadata) => {
                acked.insert(*sequence, (metadata.partition, metadata.offset));
            }
            Err(error) => {
                assert!(
                    matches!(error, ClientError::Connection(_) | ClientError::Timeout(_))
                        || error.code() == Some(ErrorCode::Unavailable)
                        || error.code() == Some(ErrorCode::OutcomeUnknown)
                        || error.code() == Some(ErrorCode::ShuttingDown),
                    "{error}"
                );
                failed += 1;
            }
        }
    }
    println!(
        "{} records sent, {} acknowledged, {failed} failed around the kill",
        outcomes.len(),
        acked.len()
    );
    assert!(failed > 0 || acked.len() == outcomes.len());

    // Read everything back: every acknowledged record exactly once at its offset, acked
    // records of a partition in send order, no record twice.
    let config = ConsumerConfig {
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let mut reader = Consumer::new(&client, "orders", None, config)
        .await
        .unwrap();
    let mut seen: HashMap<u64, (u32, u64)> = HashMap::new();
    let mut last_acked: HashMap<u32, u64> = HashMap::new();
    while let Some(record) = reader.next().await.unwrap() {
        let sequence: u64 = std::str::from_utf8(record.value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let at = (record.partition, record.offset);
        assert!(
            seen.insert(sequence, at).is_none(),
            "record {sequence} stored twice"
        );
        if acked.get(&sequence) == Some(&at) {
            if let Some(previous) = last_acked.insert(record.partition, sequence) {
                assert!(previous < sequence, "acknowledged records out of order");
            }
        }
    }
    for (sequence, at) in &acked {
        assert_eq!(
            seen.get(sequence),
            Some(at),
            "acknowledged record {sequence}"
        );
    }
    drop(gateway);
    drop(restarted);
}

/// Issue 13, part 6: the SDK's producer is idempotent by default. While it sends, the gateway
/// is killed (`kill -9`) with produces stranded at a frozen node (SIGSTOP; the node stores
/// them after their answers' way back is gone) and restarted, then the node is killed and
/// restarted, three times each. Every record is acknowledged (no "outcome unknown" reaches the
/// application), stored exactly once, and a partition's records have offsets in send order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_stores_each_record_once_across_kills() {
    let dir = data_dir("sdk-idempotent-kills");
    let port = free_ports(3);
    let listen = format!("127.0.0.1:{}", port + 2);
    let (mut node, mut gateway, _) = cluster(&dir, 2, port, "orders", 4).await;
    gateway.process.kill();
    gateway = Gateway::start(&dir, node.endpoints[0], &listen);
    let client = gateway.client().await;
    let config = ProducerConfig {
        linger: Duration::from_millis(1),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&client, "orders", config).await.unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let producing = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        let mut in_flight = std::collections::VecDeque::new();
        let mut sequence = 0u64;
        while !*stopped.borrow_and_update() {
            let record =
                ProducerRecord::new(sequence.to_string()).key(format!("k{}", sequence % 13));
            in_flight.push_back((sequence, producer.send(record).await.unwrap()));
            sequence += 1;
            while in_flight.len() > 2000 {
                let (sequence, delivery) = in_flight.pop_front().unwrap();
                outcomes.push((sequence, delivery.await));
            }
            if sequence.is_multiple_of(200) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        producer.flush().await.unwrap();
        for (sequence, delivery) in in_flight {
            outcomes.push((sequence, delivery.await));
        }
        outcomes
    });
    let mut acked = wait_for_acks(&client, 3_000).await;
    for _ in 0..3 {
        let node_pid = node.process.child.id();
        send_signal(node_pid, "-STOP");
        tokio::time::sleep(Duration::from_millis(200)).await;
        gateway.process.kill();
        send_signal(node_pid, "-CONT");
        gateway = Gateway::start(&dir, node.endpoints[0], &listen);
        acked = wait_for_acks(&client, acked + 3_000).await;
        node.process.kill();
        node = Node::start(&dir, 2, port);
        acked = wait_for_acks(&client, acked + 3_000).await;
    }
    stop.send(true).unwrap();
    let outcomes = producing.await.unwrap();

    let mut stored_at: HashMap<u64, (u32, u64)> = HashMap::new();
    for (sequence, outcome) in &outcomes {
        match outcome {
            Ok(metadata) => {
                stored_at.insert(*sequence, (metadata.partition, metadata.offset));
            }
            Err(error) => panic!("record {sequence} failed: {error}"),
        }
    }
    let config = ConsumerConfig {
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let mut reader = Consumer::new(&client, "orders", None, config)
        .await
        .unwrap();
    let mut seen: HashMap<u64, (u32, u64)> = HashMap::new();
    let mut last: HashMap<u32, u64> = HashMap::new();
    while let Some(record) = reader.next().await.unwrap() {
        let sequence: u64 = std::str::from_utf8(record.value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let at = (record.partition, record.offset);
        assert!(
            seen.insert(sequence, at).is_none(),
            "record {sequence} stored twice"
        );
        if let Some(previous) = last.insert(record.partition, sequence) {
            assert!(
                previous < sequence,
                "records of partition {} out of send order",
                record.partition
            );
        }
    }
    assert_eq!(seen.len(), outcomes.len(), "every record stored once");
    assert_eq!(
        seen, stored_at,
        "each record where its acknowledgement said"
    );
    println!("{} records, each stored once", outcomes.len());
    drop(gateway);
    drop(node);
}

/// Waits until the topic's high watermarks add up to at least `count`; returns the sum.
async fn wait_for_acks(client: &Client, count: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(topic) = client.describe_topic("orders").await {
            let sum: u64 = topic.partitions.iter().map(|p| p.high_watermark).sum();
            if sum >= count {
                return sum;
            }
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {count} records in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `bytes` on a new stream, finishes it, and returns the error frame that comes back.
async fn error_answer(connection: &quinn::Connection, bytes: &[u8]) -> spate_proto::ErrorResponse {
    let (mut send, mut receive) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), receive.read_to_end(1 << 16))
        .await
        .unwrap()
        .unwrap();
    let frame = spate_proto::Frame::parse(Bytes::from(answer), 1 << 16).unwrap();
    match spate_proto::Response::decode(&frame).unwrap() {
        spate_proto::Response::Error { error, .. } => error,
        other => panic!("not an error answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_do_not_stop_the_gateway_serving_others() {
    let dir = data_dir("abuse");
    let (_node, gateway, client) = cluster(&dir, 1, 0, "quiet", 1).await;
    let quic = |name: &'static str| {
        let cert = gateway.cert.clone();
        let address = gateway.address;
        async move {
            let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            endpoint.set_default_client_config(spate_client::quic_client_config(&cert).unwrap());
            let connection = endpoint
                .connect(address, "localhost")
                .unwrap()
                .await
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            (endpoint, connection)
        }
    };

    // Garbage (a frame of an unknown api and version): an error frame comes back.
    let (_endpoint, garbage) = quic("garbage").await;
    let mut junk = vec![0xAB; 64];
    junk[..4].copy_from_slice(&60u32.to_le_bytes());
    let error = error_answer(&garbage, &junk).await;
    println!("garbage answered with {error}");
    assert_ne!(error.code, ErrorCode::Internal);

    // An oversized length prefix: FrameTooLarge, without the gateway waiting for 4 GiB.
    let mut header = [0u8; 16];
    header[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let error = error_answer(&garbage, &header).await;
    assert_eq!(error.code, ErrorCode::FrameTooLarge);

    // Many streams, each holding half a frame, and many idle connections.
    let (_many_endpoint, many) = quic("many streams").await;
    let mut held = Vec::new();
    for _ in 0..200 {
        let (mut send, receive) = many.open_bi().await.unwrap();
        send.write_all(&[40, 0, 0, 0, 4, 0]).await.unwrap();
        held.push((send, receive));
    }
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(quic("idle").await);
    }

    // A well-behaved client still gets its work done.
    let started = Instant::now();
    let producer = Producer::new(&client, "quiet", ProducerConfig::default())
        .await
        .unwrap();
    let delivery = producer
        .send(ProducerRecord::new("still here"))
        .await
        .unwrap();
    assert_eq!(delivery.await.unwrap().offset, 0);
    let config = ConsumerConfig {
        stop_at_end: true,
        ..ConsumerConfig::default()
    };
    let mut reader = Consumer::new(&client, "quiet", None, config).await.unwrap();
    let record = reader.next().await.unwrap().unwrap();
    assert_eq!(record.value.as_deref(), Some(&b"still here"[..]));
    println!(
        "served a normal client in {:?} under abuse",
        started.elapsed()
    );
    // New connections are still accepted.
    let (_endpoint, fresh) = quic("fresh").await;
    drop(fresh);
    drop(held);
    drop(idle);
}

/// The Kafka client the tests drive: Debian 12's `kcat` 1.7.1 with librdkafka 2.0.2, the
/// oldest librdkafka in common distributions (the current one is tested through
/// confluent-kafka's wheel).
const KCAT_PACKAGE: &str = "kcat=1.7.1-2";

/// Installs `kcat` with apt when it is missing (`.ci/run` does the same first), once per
/// test process, so `cargo test --workspace` runs on a fresh machine.
fn ensure_kcat() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| ensure_package("kcat", "-V", "1.7.1", KCAT_PACKAGE));
}

/// Installs Debian's `package` with apt unless `command version_flag` prints `version`.
fn ensure_package(command: &str, version_flag: &str, version: &str, package: &str) {
    let present = Command::new(command)
        .arg(version_flag)
        .output()
        .is_ok_and(|output| {
            String::from_utf8_lossy(&output.stdout).contains(version)
                || String::from_utf8_lossy(&output.stderr).contains(version)
        });
    if present {
        return;
    }
    let install = |update: bool| {
        if update {
            let _ = Command::new("apt-get").arg("update").status();
        }
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success())
    };
    assert!(
        install(false) || install(true),
        "cannot install {package} with apt-get (needs root and the Debian archive)"
    );
}

/// Runs `kcat` with `input` on stdin; returns stdout, panicking with stderr on failure.
fn kcat(args: &[&str], input: &str) -> String {
    ensure_kcat();
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (.ci/run installs Debian's kcat 1.7.1)");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        output.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The Kafka address `spate up` printed: `kafka listening on ADDRESS (advertised as
/// HOST:PORT)`.
fn kafka_address(up: &mut Process) -> String {
    up.line("kafka listening on ")
        .strip_prefix("kafka listening on ")
        .and_then(|rest| rest.split_once(' '))
        .map(|(address, _)| address.to_owned())
        .unwrap()
}

/// `spate up` with `shards` shards and a Kafka listener on a free port; returns the process,
/// the Kafka address and a CLI for its gateway.
fn up_with_kafka(dir: &Path, shards: u32) -> (Process, String, Cli) {
    let mut up = Process::spawn(
        spate_command()
            .args([
                "up",
                "--gateway",
                "127.0.0.1:0",
                "--shards",
                &shards.to_string(),
            ])
            .args(["--kafka-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("data")),
        dir.join("up.log"),
    );
    let (gateway, cert) = parse_gateway_line(&up.line("gateway listening on "));
    let broker = kafka_address(&mut up);
    up.line("spate is up");
    (up, broker, Cli { gateway, cert })
}

/// Runs a Kafka client script (`command` names the program and script) with the broker and
/// topic as arguments, and expects it to succeed.
fn run_client(command: &mut Command, broker: &str, topic: &str) {
    let output = command.args([broker, topic]).output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn kcat_lists_produces_and_consumes_across_protocols() {
    let dir = data_dir("kcat");
    let (mut up, broker, cli) = up_with_kafka(&dir, 2);
    cli.ok(&["topic", "create", "demo", "--partitions", "2"], "");

    // Metadata: the one broker (this gateway) and both partitions.
    let listed = kcat(&["-b", &broker, "-L", "-t", "demo"], "");
    assert!(
        listed.contains(&format!("broker 0 at {broker}")),
        "{listed}"
    );
    assert!(
        listed.contains("topic \"demo\" with 2 partitions"),
        "{listed}"
    );

    // Written with kcat (keys and headers, acks=all), read with kcat and with spate.
    let input: String = (0..200).map(|i| format!("key-{i}:value {i}\n")).collect();
    kcat(
        &[
            "-b",
            &broker,
            "-t",
            "demo",
            "-P",
            "-K:",
            "-H",
            "trace=7",
            "-X",
            "acks=all",
            "-X",
            "partitioner=murmur2_random",
        ],
        &input,
    );
    let consumed = kcat(
        &[
            "-b",
            &broker,
            "-t",
            "demo",
            "-C",
            "-e",
            "-o",
            "beginning",
            "-f",
            "%p %o %k=%s %h\n",
        ],
        "",
    );
    let mut by_partition: HashMap<u32, Vec<(u64, String)>> = HashMap::new();
    for line in consumed.lines() {
        let (partition, rest) = line.split_once(' ').unwrap();
        let (offset, rest) = rest.split_once(' ').unwrap();
        assert!(rest.ends_with(" trace=7"), "{line}");
        by_partition
            .entry(partition.parse().unwrap())
            .or_default()
            .push((
                offset.parse().unwrap(),
                rest.trim_end_matches(" trace=7").to_owned(),
            ));
    }
    let mut all: Vec<String> = Vec::new();
    for (partition, records) in &by_partition {
        // Offsets dense from 0, each key on the partition Kafka's partitioner chose (the same
        // murmur2 as the SDK's).
        for (expected, (offset, record)) in records.iter().enumerate() {
            assert_eq!(*offset, expected as u64);
            let (key, _) = record.split_once('=').unwrap();
            assert_eq!(partition_for_key(key.as_bytes(), 2), *partition, "{key}");
        }
        all.extend(records.iter().map(|(_, record)| record.clone()));
    }
    let mut sent: Vec<String> = input
        .lines()
        .map(|line| line.replacen(':', "=", 1))
        .collect();
    sent.sort();
    all.sort();
    assert_eq!(all, sent);
    let json = cli.ok(&["consume", "demo", "--format", "json"], "");
    let mut via_spate: Vec<String> = json
        .lines()
        .map(|line| {
            let key = line
                .split("\"key\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let value = line
                .split("\"value\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            format!("{key}={value}")
        })
        .collect();
    via_spate.sort();
    assert_eq!(via_spate, sent);

    // Written with spate, read with kcat (partition 1 now holds more).
    let before = by_partition.get(&1).map_or(0, Vec::len);
    cli.ok(
        &["produce", "demo", "--partition", "1"],
        "from spate 1\nfrom spate 2\n",
    );
    let tail = kcat(
        &[
            "-b",
            &broker,
            "-t",
            "demo",
            "-p",
            "1",
            "-C",
            "-e",
            "-o",
            &before.to_string(),
            "-f",
            "%o %s\n",
        ],
        "",
    );
    assert_eq!(
        tail,
        format!("{before} from spate 1\n{} from spate 2\n", before + 1)
    );
    // Offsets by time and at the ends.
    let ends = kcat(&["-b", &broker, "-Q", "-t", "demo:1:-1"], "");
    assert!(ends.contains(&format!("offset {}", before + 2)), "{ends}");
    // `spate up` creates a topic a producer names (development mode, --auto-create-topics).
    kcat(&["-b", &broker, "-t", "fresh", "-P"], "first\nsecond\n");
    let fresh = kcat(
        &[
            "-b",
            &broker,
            "-t",
            "fresh",
            "-C",
            "-e",
            "-o",
            "beginning",
            "-f",
            "%s\n",
        ],
        "",
    );
    assert_eq!(fresh, "first\nsecond\n");
    assert!(cli.ok(&["topic", "list"], "").contains("fresh"));
    assert!(up.terminate().success());
}

/// How often `marker` occurs in the stored segment files of `topic`'s partition 0 under the
/// data directory of `up_with_kafka(dir, …)`: a compressed batch holds a repeated text a few
/// times at most, a plain one once per record.
fn stored_occurrences(dir: &Path, topic: &str, marker: &str) -> usize {
    let partition = dir.join("data/topics").join(format!("{topic}-0"));
    let mut count = 0;
    for entry in std::fs::read_dir(&partition).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "log") {
            let bytes = std::fs::read(&path).unwrap();
            count += bytes
                .windows(marker.len())
                .filter(|window| *window == marker.as_bytes())
                .count();
        }
    }
    count
}

/// Compressed batches from every writer are stored compressed and read by every reader:
/// confluent-kafka (librdkafka 2.16) with each codec, read back by itself (in the script) and by
/// `spate consume`; `spate produce --compression` with each codec, read back by kcat
/// (librdkafka 2.0.2) and `spate consume`; kcat (librdkafka 2.0.2) with each codec, read back
/// by `spate consume`.
#[test]
fn compressed_batches_of_every_codec_cross_protocols() {
    let python = python_with_kafka_clients();
    let dir = data_dir("codecs");
    let (mut up, broker, cli) = up_with_kafka(&dir, 2);
    let marker = "humidity nominal";
    let value = |i: usize| format!("reading {i} of sensor seven: temperature nominal, {marker}");
    let expected: Vec<String> = (0..200).map(value).collect();
    let compressed = |topic: &str| {
        let found = stored_occurrences(&dir, topic, marker);
        assert!(found < 20, "{topic}: the marker is stored {found} times");
    };
    let consumed = |topic: &str| -> Vec<String> {
        cli.ok(&["consume", topic], "")
            .lines()
            .map(str::to_owned)
            .collect()
    };

    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients");
    run_client(
        Command::new(&python).arg(scripts.join("confluent_codecs.py")),
        &broker,
        "ck",
    );
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("ck-{codec}");
        assert_eq!(consumed(&topic), expected, "{topic}");
        compressed(&topic);
    }

    let input: String = expected.iter().map(|line| format!("{line}\n")).collect();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("spate-{codec}");
        cli.ok(&["topic", "create", &topic, "--partitions", "1"], "");
        cli.ok(&["produce", &topic, "--compression", codec], &input);
        compressed(&topic);
        assert_eq!(consumed(&topic), expected, "{topic}");
        let read = kcat(
            &[
                "-b",
                &broker,
                "-t",
                &topic,
                "-C",
                "-e",
                "-o",
                "beginning",
                "-f",
                "%o %s\n",
            ],
            "",
        );
        let numbered: Vec<String> = expected
            .iter()
            .enumerate()
            .map(|(offset, line)| format!("{offset} {line}"))
            .collect();
        assert_eq!(read.lines().collect::<Vec<_>>(), numbered, "{topic}");
    }

    // librdkafka 2.0.2 compresses with gzip, snappy and lz4 only because Produce v0 is
    // advertised (docs/kafka.md); with zstd because Produce 7 and Fetch 10 are.
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("kcat-{codec}");
        kcat(
            &[
                "-b",
                &broker,
                "-t",
                &topic,
                "-P",
                "-z",
                codec,
                "-X",
                "linger.ms=50",
            ],
            &input,
        );
        compressed(&topic);
        assert_eq!(consumed(&topic), expected, "{topic}");
    }
    assert!(up.terminate().success());
}

/// A gateway restart (SIGTERM, then a new process on the same ports) while a librdkafka
/// producer (confluent-kafka, idempotent, acks=all) sends: it reconnects, every record is
/// delivered, stored exactly once and in order. The stopping gateway answers every request it
/// forwarded before it closes, and never forwards one it will not answer.
#[test]
fn kafka_gateway_restart_under_a_running_librdkafka_producer() {
    let python = python_with_kafka_clients();
    let dir = data_dir("kafka-restart");
    let node = Node::start(&dir, 1, 0);
    let ports = free_ports(2);
    let start_gateway = || {
        let mut process = Process::spawn(
            Command::new(binary("spate-gateway"))
                .args(["--metrics-listen", "127.0.0.1:0"])
                .args(["--listen", &format!("127.0.0.1:{ports}")])
                .args(["--kafka-listen", &format!("127.0.0.1:{}", ports + 1)])
                .args(["--node", &node.endpoints[0].to_string()])
                .arg("--dev-cert-dir")
                .arg(dir.join("tls"))
                .args(["--metadata-refresh-ms", "1000"]),
            dir.join("gateway.log"),
        );
        process.line("kafka listening on ");
        process
    };
    let mut gateway = start_gateway();
    let broker = format!("127.0.0.1:{}", ports + 1);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients/confluent_restart.py");
    let mut producer = Command::new(&python)
        .arg(script)
        .args([broker.as_str(), "restarts", "30000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(producer.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "producing");
    assert!(gateway.terminate().success(), "the gateway stops cleanly");
    let restarted = start_gateway();
    let output = producer.wait_with_output().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        output.status.success() && rest.contains(&"restart ok".to_owned()),
        "{rest:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(restarted);
    drop(node);
}

/// Issue 13, (e): an idempotent librdkafka producer (confluent-kafka, acks=all) keeps
/// producing while the gateway and the node are killed (`kill -9`) and restarted, three times
/// each. The gateway is killed while the node is frozen (SIGSTOP) with produces waiting, so
/// the node stores them after their answers' way back is gone; a node killed loses answers
/// and the records not yet durable. The client resends with the
/// same sequence numbers, and the node, which rebuilds each producer's last batches at
/// recovery, stores what it lacks and answers the rest as duplicates: every record is
/// delivered, stored exactly once, at offsets in send order (the script checks the delivery
/// reports and reads the partition back).
#[test]
fn an_idempotent_kafka_producer_stores_each_record_once_across_kills() {
    let python = python_with_kafka_clients();
    let dir = data_dir("kafka-idempotent-kills");
    let ports = free_ports(3);
    let mut node = Node::start(&dir, 1, ports);
    let start_gateway = |node: &Node| {
        let mut process = Process::spawn(
            Command::new(binary("spate-gateway"))
                .args(["--metrics-listen", "127.0.0.1:0"])
                .args(["--listen", &format!("127.0.0.1:{}", ports + 1)])
                .args(["--kafka-listen", &format!("127.0.0.1:{}", ports + 2)])
                .args(["--node", &node.endpoints[0].to_string()])
                .arg("--dev-cert-dir")
                .arg(dir.join("tls"))
                .args(["--metadata-refresh-ms", "1000"]),
            dir.join("gateway.log"),
        );
        process.line("kafka listening on ");
        process
    };
    let mut gateway = start_gateway(&node);
    let broker = format!("127.0.0.1:{}", ports + 2);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients/confluent_restart.py");
    let mut producer = Command::new(&python)
        .arg(script)
        .args([broker.as_str(), "kills", "120000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(producer.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "producing");
    for _ in 0..3 {
        // Produces pile up at the frozen node; the gateway dies with them unanswered; the
        // node then reads and stores them, and its answers find no gateway.
        std::thread::sleep(Duration::from_millis(300));
        send_signal(node.process.child.id(), "-STOP");
        std::thread::sleep(Duration::from_millis(200));
        gateway.kill();
        send_signal(node.process.child.id(), "-CONT");
        gateway = start_gateway(&node);
        std::thread::sleep(Duration::from_millis(300));
        node.process.kill();
        node = Node::start(&dir, 1, ports);
    }
    let output = producer.wait_with_output().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        output.status.success() && rest.contains(&"restart ok".to_owned()),
        "{rest:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(gateway);
    drop(node);
}

/// Python Kafka clients, pinned: kafka-python (pure Python) and confluent-kafka (whose wheel
/// bundles a current librdkafka).
const PYTHON_KAFKA_CLIENTS: [&str; 2] = ["kafka-python==3.0.12", "confluent-kafka==2.16.1"];

/// A virtual environment under `target/` with the pinned Python Kafka clients, made once per
/// test process (`python3 -m venv`, then pip from PyPI).
fn python_with_kafka_clients() -> PathBuf {
    static READY: std::sync::Once = std::sync::Once::new();
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kafka-clients-venv");
    let python = venv.join("bin").join("python");
    READY.call_once(|| {
        let pinned = |python: &Path| {
            Command::new(python)
                .args(["-m", "pip", "freeze"])
                .output()
                .is_ok_and(|output| {
                    let frozen = String::from_utf8_lossy(&output.stdout).to_lowercase();
                    PYTHON_KAFKA_CLIENTS
                        .iter()
                        .all(|package| frozen.contains(&package.to_lowercase()))
                })
        };
        if pinned(&python) {
            return;
        }
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_KAFKA_CLIENTS)
            .status()
            .expect("pip runs");
        assert!(
            status.success(),
            "pip install {PYTHON_KAFKA_CLIENTS:?} failed"
        );
    });
    python
}

/// Consumer groups with librdkafka (confluent-kafka, each of its assignors), kafka-python and
/// kafkajs: two
/// consumers split a 4-partition topic and commit, a third joins, one is killed with SIGKILL
/// while records flow; every record is processed, duplicates only from the killed consumer's
/// last batch per partition or from a batch whose commit failed (a rebalance completed between
/// its fetch and its commit: the client gives its assignment up), the commits end at the high watermarks, and the admin client
/// lists, describes and deletes the group (`tests/kafka_clients/confluent_group.py`).
#[test]
fn kafka_consumer_groups_split_rebalance_and_survive_a_killed_member() {
    let python = python_with_kafka_clients();
    let dir = data_dir("kafka-groups");
    let (mut up, broker, _cli) = up_with_kafka(&dir, 2);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients/confluent_group.py");
    let run = |command: &mut Command, what: &str| {
        let output = command.env("SPATE_TEST_DIR", &dir).output().unwrap();
        assert!(
            output.status.success(),
            "{what}:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    for assignor in ["range", "roundrobin", "cooperative-sticky"] {
        run(
            Command::new(&python).arg(&script).args([
                &broker,
                &format!("groups-{assignor}"),
                assignor,
            ]),
            assignor,
        );
    }
    // kafka-python's own group client (its sticky assignor) and kafkajs's (round robin).
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients");
    run(
        Command::new(&python)
            .arg(scripts.join("kafka_python_group.py"))
            .args([&broker, "groups-kafka-python", "sticky"]),
        "kafka-python",
    );
    let kafkajs = kafkajs_dir();
    run(
        Command::new("node")
            .arg(kafkajs.join("kafkajs_group.js"))
            .args([&broker, "groups-kafkajs"])
            .env("KAFKAJS_NO_PARTITIONER_WARNING", "1"),
        "kafkajs",
    );
    assert!(up.terminate().success());
}

#[test]
fn python_kafka_clients_administer_produce_and_consume() {
    let python = python_with_kafka_clients();
    let dir = data_dir("python-kafka");
    let (mut up, broker, _cli) = up_with_kafka(&dir, 2);
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients");
    for (script, topic) in [
        ("kafka_python.py", "py-topic"),
        ("confluent.py", "ck-topic"),
    ] {
        run_client(
            Command::new(&python).arg(scripts.join(script)),
            &broker,
            topic,
        );
    }
    assert!(up.terminate().success());
}

/// A directory under `target/` with the pinned kafkajs (`tests/kafka_clients/package.json`
/// and its lockfile, `npm ci`) and the test script next to it, made once per test process.
fn kafkajs_dir() -> PathBuf {
    static READY: std::sync::Once = std::sync::Once::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kafkajs");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients");
    READY.call_once(|| {
        std::fs::create_dir_all(&dir).unwrap();
        for file in [
            "package.json",
            "package-lock.json",
            "kafkajs.js",
            "kafkajs_group.js",
            "kafkajs_tls.js",
        ] {
            std::fs::copy(source.join(file), dir.join(file)).unwrap();
        }
        if dir.join("node_modules/kafkajs/package.json").exists() {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci (kafkajs) failed");
    });
    dir
}

#[test]
fn kafkajs_administers_and_produces() {
    let dir = kafkajs_dir();
    let data = data_dir("kafkajs");
    let (mut up, broker, _cli) = up_with_kafka(&data, 2);
    run_client(
        Command::new("node")
            .arg(dir.join("kafkajs.js"))
            .env("KAFKAJS_NO_PARTITIONER_WARNING", "1"),
        &broker,
        "js-topic",
    );
    assert!(up.terminate().success());
}

/// Issue 16: TLS with client certificates on the Kafka listener (`--kafka-tls-cert`,
/// `--kafka-client-ca`), certificates made as docs/tls.md and docs/security.md say. kcat
/// produces and consumes over TLS; confluent-kafka, kafka-python and kafkajs produce and read
/// back (`tls_clients.py`, `kafkajs_tls.js`); a plaintext client, a client without a
/// certificate and one with another CA's certificate are refused, and the refusals counted.
#[test]
fn kafka_clients_speak_tls_with_client_certificates() {
    let python = python_with_kafka_clients();
    let kafkajs = kafkajs_dir();
    let dir = data_dir("kafka-tls");
    let certs = dir.join("certs");
    let other = dir.join("other");
    make_client_certificates_as_documented(&certs, "writer");
    make_client_certificates_as_documented(&other, "stranger");
    let node = Node::start(&dir, 2, 0);
    let mut gateway = Process::spawn(
        Command::new(binary("spate-gateway"))
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--node", &node.endpoints[0].to_string()])
            .arg("--dev-cert-dir")
            .arg(dir.join("tls"))
            .args(["--kafka-listen", "127.0.0.1:0"])
            .arg("--kafka-tls-cert")
            .arg(certs.join("gateway.pem"))
            .arg("--kafka-tls-key")
            .arg(certs.join("gateway.key"))
            .arg("--kafka-client-ca")
            .arg(certs.join("ca.pem")),
        dir.join("gateway.log"),
    );
    let (address, dev_cert) = parse_gateway_line(&gateway.line("gateway listening on "));
    Cli {
        gateway: address,
        cert: dev_cert,
    }
    .ok(&["topic", "create", "tls-kcat", "--partitions", "1"], "");
    let broker = gateway
        .line("kafka listening on ")
        .strip_prefix("kafka listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let metrics: SocketAddr = gateway
        .line("metrics listening on ")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let file = |dir: &Path, name: &str| dir.join(name).to_string_lossy().into_owned();
    let ssl = |dir: &Path, certificate: bool| {
        let mut args = vec![
            "-X".to_owned(),
            "security.protocol=SSL".to_owned(),
            "-X".to_owned(),
            format!("ssl.ca.location={}", file(&certs, "ca.pem")),
        ];
        if certificate {
            args.extend([
                "-X".to_owned(),
                format!("ssl.certificate.location={}", file(dir, "client.pem")),
                "-X".to_owned(),
                format!("ssl.key.location={}", file(dir, "client.key")),
            ]);
        }
        args
    };
    let kcat_args = |settings: &[String], rest: &[&str]| -> Vec<String> {
        ["-b", broker.as_str()]
            .iter()
            .map(|arg| (*arg).to_owned())
            .chain(settings.iter().cloned())
            .chain(rest.iter().map(|arg| (*arg).to_owned()))
            .collect()
    };
    let writer = ssl(&certs, true);
    let produce = kcat_args(&writer, &["-t", "tls-kcat", "-P"]);
    kcat(
        &produce.iter().map(String::as_str).collect::<Vec<_>>(),
        "one\ntwo\nthree\n",
    );
    let consume = kcat_args(
        &writer,
        &[
            "-C",
            "-t",
            "tls-kcat",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%s\n",
        ],
    );
    let consumed = kcat(&consume.iter().map(String::as_str).collect::<Vec<_>>(), "");
    assert_eq!(consumed, "one\ntwo\nthree\n");
    // Refused: plaintext, no client certificate, another CA's certificate.
    ensure_kcat();
    for (what, settings) in [
        ("plaintext", Vec::new()),
        ("no client certificate", ssl(&certs, false)),
        ("another CA's certificate", ssl(&other, true)),
    ] {
        let listed = Command::new("kcat")
            .args(kcat_args(&settings, &["-L", "-m", "3"]))
            .output()
            .unwrap();
        assert!(
            !listed.status.success(),
            "kcat with {what} was admitted: {}",
            String::from_utf8_lossy(&listed.stdout)
        );
    }
    let output = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients/tls_clients.py"))
        .args([&broker, "tls-python"])
        .arg(&certs)
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tls_clients.py:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new("node")
        .arg(kafkajs.join("kafkajs_tls.js"))
        .args([&broker, "tls-kafkajs"])
        .arg(&certs)
        .env("KAFKAJS_NO_PARTITIONER_WARNING", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kafkajs_tls.js:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let scraped = http_get(metrics, "/metrics").1;
    let refused = scraped
        .lines()
        .find(|line| {
            line.starts_with("spate_gateway_connections_refused_total")
                && line.contains("protocol=\"kafka\"")
                && line.contains("reason=\"handshake_failed\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(refused >= 3.0, "{scraped}");
    drop(gateway);
}

#[test]
fn kafka_admin_clients_describe_alter_configs_and_delete_records() {
    let python = python_with_kafka_clients();
    let dir = data_dir("kafka-admin");
    let (mut up, broker, cli) = up_with_kafka(&dir, 1);
    let topic = "admin-topic";
    cli.ok(
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            "2",
            "--retention-ms",
            "3600000",
        ],
        "",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients/admin.py");
    run_client(Command::new(&python).arg(script), &broker, topic);
    assert!(up.terminate().success());
}

/// rsyslog's Kafka output (omkafka; Debian 12: rsyslog 8.2302 on librdkafka 2.0.2, installed
/// by `.ci/run`) ships the lines appended to a file to Spate: each arrives once and in order,
/// readable with `spate consume`; on SIGTERM rsyslog stops cleanly.
#[test]
fn rsyslog_ships_a_file_to_spate_over_kafka() {
    let dir = data_dir("rsyslog");
    let (mut up, broker, cli) = up_with_kafka(&dir, 1);
    cli.ok(&["topic", "create", "syslog", "--partitions", "1"], "");
    let input = dir.join("app.log");
    std::fs::write(&input, "").unwrap();
    let work = dir.join("rsyslog-work");
    std::fs::create_dir_all(&work).unwrap();
    let config = dir.join("rsyslog.conf");
    std::fs::write(
        &config,
        format!(
            r#"global(workDirectory="{work}")
module(load="imfile")
module(load="omkafka")
template(name="line" type="string" string="%msg%")
input(type="imfile" file="{input}" tag="app" ruleset="ship" freshStartTail="off")
ruleset(name="ship") {{
  action(type="omkafka" broker=["{broker}"] topic="syslog" template="line"
         confParam=["queue.buffering.max.ms=5", "request.required.acks=-1"])
}}
"#,
            work = work.display(),
            input = input.display(),
        ),
    )
    .unwrap();
    let mut rsyslog = Process::spawn(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(dir.join("rsyslog.pid")),
        dir.join("rsyslog.log"),
    );
    let lines: Vec<String> = (0..1000)
        .map(|i| format!("event {i} from the app"))
        .collect();
    {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .unwrap();
        for line in &lines {
            writeln!(file, "{line}").unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let consumed = loop {
        let consumed = cli.ok(&["consume", "syslog"], "");
        if consumed.lines().count() >= lines.len() || Instant::now() > deadline {
            break consumed;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = || std::fs::read_to_string(dir.join("rsyslog.log")).unwrap_or_default();
    assert_eq!(
        consumed.lines().collect::<Vec<_>>(),
        lines,
        "rsyslog's log:\n{}",
        log()
    );
    assert!(rsyslog.terminate().success(), "{}", log());
    assert!(up.terminate().success());
}

/// Batches stored in a partition, as the node keeps them: the record count of each.
async fn stored_batches(client: &Client, topic: &str, partition: u32) -> Vec<u32> {
    let mut counts = Vec::new();
    let mut offset = 0;
    loop {
        let fetched = client
            .fetch(spate_proto::FetchRequest {
                topic: topic.into(),
                partition: spate_proto::PartitionId(partition),
                offset,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                min_bytes: 1,
                epochs: spate_proto::ReadEpochs::default(),
            })
            .await
            .unwrap();
        if fetched.records.is_empty() {
            return counts;
        }
        for batch in spate_format::batches(&fetched.records) {
            let batch = batch.unwrap();
            counts.push(batch.record_count());
            offset = batch.next_offset().0;
        }
    }
}

/// Issue 12: with no linger, records sent while a partition already has `IN_FLIGHT_MAX`
/// batches unanswered join one batch (held open until one is answered) instead of each
/// queueing as a batch of its own; order and exactly-once storage are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_while_a_partition_is_busy_join_one_batch() {
    use spate_client::IN_FLIGHT_MAX;
    let dir = data_dir("held-batches");
    let (_node, gateway, client) = cluster(&dir, 1, 0, "held", 1).await;
    let config = ProducerConfig {
        linger: Duration::ZERO,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&client, "held", config).await.unwrap();
    let record = |number: u32| ProducerRecord::new(format!("record-{number}")).partition(0);
    // The first batch is answered (the partition knows the producer: 5 may fly at once).
    producer.send(record(0)).await.unwrap().await.unwrap();
    let gateway_pid = gateway.process.child.id();
    send_signal(gateway_pid, "-STOP");
    let mut deliveries = Vec::new();
    for number in 1..=30 {
        deliveries.push(producer.send(record(number)).await.unwrap());
        // Each record alone: with no linger it is sealed unless the partition is busy.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send_signal(gateway_pid, "-CONT");
    for (number, delivery) in deliveries.into_iter().enumerate() {
        let stored = delivery.await.unwrap();
        assert_eq!(stored.offset, number as u64 + 1, "in order, once");
    }
    let batches = stored_batches(&client, "held", 0).await;
    let mut expected = vec![1; 1 + IN_FLIGHT_MAX];
    expected.push(30 - IN_FLIGHT_MAX as u32);
    assert_eq!(
        batches, expected,
        "the first, five in flight, then the rest in one batch"
    );
}

/// `spate up --nodes 3` (built with the `cluster` feature; etcd from Debian's
/// `etcd-server`): a cluster of three node processes on this machine, a gateway for each;
/// `kcat -L` lists the three nodes as brokers and the partition's leader among them.
/// kcat (idempotent, acks=all) keeps producing while the leader of the topic's partition is
/// killed with SIGKILL: every line arrives exactly once and in order, `spate up` reports the
/// exit and carries on, and the whole cluster stops on SIGTERM and starts again from its data
/// directory with every record. Kafka admin clients move a partition (`moves.py`), and
/// librdkafka 2.16 reads across a leader change with leader epochs (`epochs.py`). Then a
/// consumer group of librdkafka commits half of another
/// topic, the node leading the group's offsets partition is killed with SIGKILL, and the
/// group's next consumer reads exactly the other half (`confluent_group_failover.py`).
#[cfg(feature = "cluster-tests")]
#[test]
fn spate_up_runs_a_cluster_that_survives_kill_9_of_a_leader() {
    let dir = data_dir("up-nodes");
    let start = || {
        let mut up = Process::spawn(
            spate_command()
                .args(["up", "--nodes", "3", "--gateway", "127.0.0.1:0"])
                .args([
                    "--kafka-listen",
                    "127.0.0.1:0",
                    "--session-timeout-ms",
                    "3000",
                ])
                .arg("--data-dir")
                .arg(dir.join("data")),
            dir.join("up.log"),
        );
        let (gateway, cert) = parse_gateway_line(&up.line("gateway listening on "));
        let broker = kafka_address(&mut up);
        // `node I (pid P): shards on …`
        let pids: Vec<u32> = (1..=3)
            .map(|id| {
                let line = up.line(&format!("node {id} (pid "));
                line[format!("node {id} (pid ").len()..]
                    .split(')')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        up.line("spate is up");
        (up, broker, pids, Cli { gateway, cert })
    };
    let (mut up, broker, pids, cli) = start();
    let status = cli.ok(&["cluster", "status"], "");
    assert!(status.contains("3 members"), "{status}");
    // Replicated on all three (the default replication factor of `spate up --nodes 3`).
    cli.ok(&["topic", "create", "t", "--partitions", "1"], "");
    let leads = |id: u32| {
        std::fs::read_to_string(dir.join(format!("data/node-{id}.log")))
            .unwrap_or_default()
            .contains("leads a new epoch topic=t partition=0")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some(id) = (1..=3).find(|id| leads(*id)) {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "no leader of t-0 in the nodes' logs"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    ensure_kcat();
    // Every node is a Kafka broker (its own gateway, broker id = node id), and the topic's
    // partition names its leader: a Kafka client sends its requests there itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = Command::new("kcat")
            .args(["-L", "-b", &broker, "-t", "t"])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        let brokers: Vec<&str> = listed
            .lines()
            .filter(|line| line.trim_start().starts_with("broker "))
            .collect();
        if listed.contains(" 3 brokers:")
            && listed.contains(&format!("partition 0, leader {leader},"))
        {
            assert!(
                (1..=3).all(|id| brokers
                    .iter()
                    .any(|line| line.trim_start().starts_with(&format!("broker {id} at ")))),
                "{listed}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "kcat -L: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut kcat = Command::new("kcat")
        .args(["-P", "-b", &broker, "-t", "t", "-p", "0"])
        .args([
            "-X",
            "enable.idempotence=true",
            "-X",
            "request.required.acks=-1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = kcat.stdin.take().unwrap();
    let lines: Vec<String> = (1..=300).map(|i| format!("line {i}")).collect();
    for (index, line) in lines.iter().enumerate() {
        if index == 100 {
            let killed = Command::new("kill")
                .args(["-KILL", &pids[leader as usize - 1].to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
        }
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let produced = kcat.wait_with_output().unwrap();
    assert!(
        produced.status.success(),
        "kcat: {}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let expected: String = lines.iter().map(|line| format!("{line}\n")).collect();
    assert_eq!(cli.ok(&["consume", "t"], ""), expected);
    // The partition has two of its three replicas in sync: `spate cluster status` says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cli.ok(&["cluster", "status"], "");
        if status.contains("1 under-replicated, 0 offline") {
            assert!(
                status.lines().any(|line| {
                    let row: Vec<&str> = line.split_whitespace().collect();
                    let mut replicas: Vec<&str> =
                        row.get(3).map_or(vec![], |ids| ids.split(',').collect());
                    replicas.sort_unstable();
                    row.len() == 5 && row[0] == "t" && row[1] == "0" && replicas == ["1", "2", "3"]
                }),
                "{status}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not under-replicated: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let reported = std::fs::read_to_string(dir.join("up.log")).unwrap();
    assert!(
        reported.contains(&format!(
            "node {leader} exited (signal: 9 (SIGKILL)); the others carry on"
        )),
        "{reported}"
    );
    assert!(up.terminate().success());

    // Everything stopped with it; started again, the cluster serves every record.
    let (mut up, broker, pids, cli) = start();
    assert_eq!(cli.ok(&["consume", "t"], ""), expected);
    // The node killed before catches up and rejoins the ISR.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli
        .ok(&["cluster", "status"], "")
        .contains("partitions: 1 in all, 0 under-replicated, 0 offline")
    {
        assert!(Instant::now() < deadline, "still under-replicated");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Kafka admin clients move a partition to the two other nodes and elect its preferred
    // leader (AlterPartitionReassignments, ListPartitionReassignments, ElectLeaders).
    let python = python_with_kafka_clients();
    let moves = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients/moves.py");
    let ran = Command::new(&python)
        .arg(&moves)
        .args([broker.as_str(), "moves"])
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "moves.py:\n{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    // Kafka's leader epochs (KIP-320) with librdkafka 2.16: records carry their epoch, a
    // consumer reads on across a leader change, and a position past the end of its epoch is
    // found out through OffsetForLeaderEpoch.
    let epochs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients/epochs.py");
    let ran = Command::new(&python)
        .arg(&epochs)
        .args([broker.as_str(), "epochs"])
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "epochs.py:\n{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    // The CLI: the moved partition's preferred replica leads already; nothing is moving; a
    // node that is not in the cluster cannot be decommissioned.
    let elected = cli.ok(
        &["cluster", "elect-preferred", "moves", "--partitions", "0"],
        "",
    );
    assert!(elected.contains("ElectionNotNeeded"), "{elected}");
    assert!(
        elected.ends_with("0 partitions changed, 1 left as they were\n"),
        "{elected}"
    );
    assert!(!cli.ok(&["cluster", "status"], "").contains("moving:"));
    let refused = cli.fails(&["cluster", "decommission", "99"], "");
    assert!(
        refused.contains("neither a member nor holds a replica"),
        "{refused}"
    );

    // A consumer group (librdkafka) commits half of a topic; the node leading the group's
    // offsets partition is killed; the group's next consumer starts where it committed.
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kafka_clients/confluent_group_failover.py");
    let output = dir.join("failover.txt");
    let run = |args: &[&str], what: &str| {
        let ran = Command::new(&python)
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        assert!(
            ran.status.success(),
            "{what}:\n{}\n{}",
            String::from_utf8_lossy(&ran.stdout),
            String::from_utf8_lossy(&ran.stderr)
        );
    };
    let out = output.to_str().unwrap();
    run(&["produce", &broker, "events", "400"], "produce");
    run(
        &["consume", &broker, "events", "failover", "200", out],
        "consume",
    );
    let offsets_partition = spate_proto::group::group_partition("failover").0;
    let coordinates = |id: u32| {
        std::fs::read_to_string(dir.join(format!("data/node-{id}.log")))
            .unwrap_or_default()
            .contains(&format!(
                "leads a new epoch topic=__spate_offsets partition={offsets_partition} "
            ))
    };
    let coordinator: Vec<u32> = (1..=3).filter(|id| coordinates(*id)).collect();
    assert_eq!(coordinator.len(), 1, "one leader of the offsets partition");
    let killed = Command::new("kill")
        .args(["-KILL", &pids[coordinator[0] as usize - 1].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    run(
        &["consume", &broker, "events", "failover", "200", out],
        "consume after the kill",
    );
    let mut read: Vec<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|line| line.splitn(3, ' ').nth(2).unwrap().to_owned())
        .collect();
    read.sort_unstable();
    let mut all: Vec<String> = (0..400).map(|n| format!("record {n}")).collect();
    all.sort_unstable();
    assert_eq!(
        read, all,
        "every record read once, across the coordinator's loss"
    );
    assert!(up.terminate().success());
}

// ---------------------------------------------------------------------------------------
// Operations: a real Prometheus scraping a real node and gateway (docs/operations.md,
// "Metrics"; docs/deploy.md).

/// Debian 12's Prometheus (with `promtool`), as `.ci/run` installs it.
const PROMETHEUS_PACKAGE: &str = "prometheus=2.42.0+ds-5+b6";

fn ensure_prometheus() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| ensure_package("prometheus", "--version", "2.42.0", PROMETHEUS_PACKAGE));
}

/// A GET over HTTP/1.0 (the test's own client, so nothing but the servers under test is
/// involved): the status and the body.
fn http_get(address: SocketAddr, path_and_query: &str) -> (u16, String) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// `text` percent-encoded for a URL's query.
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The value of an instant PromQL query that gives one sample, if it gives one.
fn prometheus_value(prometheus: SocketAddr, query: &str) -> Option<f64> {
    let (status, body) = http_get(
        prometheus,
        &format!("/api/v1/query?query={}", url_encoded(query)),
    );
    assert_eq!(status, 200, "{query}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "success", "{query}: {body}");
    let result = answer["data"]["result"].as_array()?;
    let sample = result.first()?;
    sample["value"][1].as_str()?.parse().ok()
}

/// `promtool check metrics` on a scrape: the exposition follows Prometheus' rules.
fn promtool_check_metrics(scrape: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed with Debian's prometheus");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics on the {what}'s scrape:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The metric names a document uses: `spate_…` and `process_…` words, with a histogram's
/// `_bucket`, `_sum` and `_count` series named by their family.
fn metric_names(document: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    let bytes = document.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &document[at..];
        let starts = (rest.starts_with("spate_") || rest.starts_with("process_"))
            && (at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_'));
        if !starts {
            at += 1;
            continue;
        }
        let length = rest
            .bytes()
            .take_while(|byte| byte.is_ascii_alphanumeric() || *byte == b'_')
            .count();
        let name = &rest[..length];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
        at += length;
    }
    names
}

/// A batch of `values` (records without keys), stamped now.
fn batch(values: &[&str]) -> Vec<u8> {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut builder = spate_format::BatchBuilder::new();
    for value in values {
        builder
            .push(&spate_format::Record {
                timestamp: now,
                value: Some(value.as_bytes()),
                ..spate_format::Record::default()
            })
            .unwrap();
    }
    builder.finish().unwrap()
}

/// The families a scrape exposes (from its `# TYPE` lines).
fn families(scrape: &str) -> HashSet<String> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_node_and_a_gateway_under_load() {
    ensure_prometheus();
    let dir = data_dir("prometheus");
    let (node, gateway, client) = cluster(&dir, 2, 0, "metered", 4).await;
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy");

    // Health: the processes serve and are ready (the gateway once it has the map).
    assert_eq!(http_get(node.metrics, "/healthz").0, 200);
    let (status, body) = http_get(node.metrics, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while http_get(gateway.metrics, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(node.metrics, "/nothing").0, 404);

    // A group with committed offsets, so the lag families have series.
    client
        .produce(
            "metered",
            0,
            Durability::Fsync,
            Bytes::from(batch(&["a", "b"])),
        )
        .await
        .unwrap();
    client
        .commit_offsets("metered-readers", vec![("metered".to_owned(), 0, 1)])
        .await
        .unwrap();

    // Prometheus scraping both every second, with the deployment kit's alert rules.
    let prometheus_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prometheus: SocketAddr = format!("127.0.0.1:{prometheus_port}").parse().unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: spate-node\n    static_configs:\n      - targets: ['{node}']\n\
             \x20 - job_name: spate-gateway\n    static_configs:\n      - targets: ['{gateway}']\n",
            rules = deploy.join("alerts.yml").display(),
            node = node.metrics,
            gateway = gateway.metrics,
        ),
    )
    .unwrap();
    let mut prometheus_process = Process::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={prometheus}")),
        dir.join("prometheus.log"),
    );

    // Load: durable appends on every partition until Prometheus has seen enough.
    let loading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = {
        let client = client.clone();
        let loading = loading.clone();
        tokio::spawn(async move {
            let mut appended = 0u64;
            while loading.load(std::sync::atomic::Ordering::Relaxed) {
                for partition in 0..4 {
                    client
                        .produce(
                            "metered",
                            partition,
                            Durability::Fsync,
                            Bytes::from(batch(&["x"; 20])),
                        )
                        .await
                        .unwrap();
                    appended += 20;
                }
            }
            appended
        })
    };

    // Both targets up, the append rate and the fsync p99 sane.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (rate, fsync_p99) = loop {
        assert!(
            Instant::now() < deadline,
            "Prometheus saw no sane rates in time; its log:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ready = http_get(prometheus, "/-/ready");
        if ready.0 != 200 {
            continue;
        }
        let up = prometheus_value(prometheus, "sum(up)");
        let rate = prometheus_value(prometheus, "sum(rate(spate_append_records_total[5s]))");
        let fsync_p99 = prometheus_value(
            prometheus,
            "histogram_quantile(0.99, sum by (le) (rate(spate_fdatasync_duration_seconds_bucket[5s])))",
        );
        match (up, rate, fsync_p99) {
            (Some(up), Some(rate), Some(p99)) if up == 2.0 && rate > 0.0 && p99.is_finite() => {
                break (rate, p99)
            }
            _ => continue,
        }
    };
    // `spate top` shows the same: the topic's ingest rate, the lag and no fence.
    let top = Command::new(binary("spate"))
        .args(["top", "--once", "--interval", "1", "--metrics"])
        .arg(format!("{},{}", node.metrics, gateway.metrics))
        .output()
        .unwrap();
    let view = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{view}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    let metered = view
        .lines()
        .find(|line| line.starts_with("metered "))
        .unwrap_or_else(|| panic!("no line for the topic:\n{view}"));
    let records_per_second: f64 = metered.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(records_per_second > 0.0, "{view}");
    assert!(view.contains("metered-readers"), "{view}");
    assert!(view.contains("fenced partitions: none"), "{view}");
    println!("{view}");
    loading.store(false, std::sync::atomic::Ordering::Relaxed);
    let appended = load.await.unwrap();
    println!("Prometheus: {rate:.0} records/s appended, fsync p99 {fsync_p99:.6} s ({appended} records in the run)");
    // Sane: records went in, and an fdatasync takes more than nothing and less than the
    // histogram's largest finite bound.
    assert!(rate > 0.0 && rate < 10_000_000.0, "{rate}");
    assert!(fsync_p99 > 0.0 && fsync_p99 <= 10.0, "{fsync_p99}");
    // The lag of the group: every record appended after its commit at offset 1.
    let lag = prometheus_value(
        prometheus,
        "sum(spate_consumer_group_lag{group=\"metered-readers\",topic=\"metered\",partition=\"0\"})",
    );
    assert!(lag.is_some_and(|lag| lag >= 1.0), "{lag:?}");
    assert_eq!(
        prometheus_value(prometheus, "min(spate_gateway_link_up)"),
        Some(1.0)
    );
    // Prometheus took the deployment kit's alert rules.
    let (status, rules) = http_get(prometheus, "/api/v1/rules");
    assert_eq!(status, 200);
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let loaded = rules["data"]["groups"]
        .as_array()
        .map_or(0, |groups| groups.len());
    assert!(loaded > 0, "no rule group loaded: {rules}");
    prometheus_process.kill();

    // The expositions pass promtool (the rules: `the_deployment_kit_verifies`).
    let node_scrape = http_get(node.metrics, "/metrics").1;
    let gateway_scrape = http_get(gateway.metrics, "/metrics").1;
    promtool_check_metrics(&node_scrape, "node");
    promtool_check_metrics(&gateway_scrape, "gateway");

    // Every metric the dashboard and the alert rules use exists in a scrape.
    let mut exposed = families(&node_scrape);
    exposed.extend(families(&gateway_scrape));
    for document in ["grafana-dashboard.json", "alerts.yml"] {
        let text = std::fs::read_to_string(deploy.join(document)).unwrap();
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{document} uses no metric");
        let missing: Vec<&String> = used
            .iter()
            .filter(|name| !exposed.contains(*name))
            .collect();
        assert!(
            missing.is_empty(),
            "{document} uses metrics no scrape has: {missing:?}"
        );
    }
    drop((node, gateway));
}

/// Runs `command` with `args` in `dir`; panics with its output unless it succeeds.
fn succeeds(dir: &Path, command: &str, args: &[&str]) -> String {
    let output = Command::new(command)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("{command}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command} {args:?}:\n{text}");
    text
}

/// The deployment kit of docs/deploy.md: the alert rules load and pass their unit tests, the
/// Prometheus configuration loads, and systemd accepts both units (with `ExecStart` pointing
/// at the binaries built here, as they would be installed in /usr/local/bin).
#[test]
fn the_deployment_kit_verifies() {
    ensure_prometheus();
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy");
    succeeds(&deploy, "promtool", &["check", "rules", "alerts.yml"]);
    succeeds(&deploy, "promtool", &["test", "rules", "alerts-test.yml"]);
    succeeds(&deploy, "promtool", &["check", "config", "prometheus.yml"]);
    ensure_package("systemd-analyze", "--version", "systemd", "systemd");
    let dir = data_dir("units");
    let mut units = Vec::new();
    for (unit, binary_name) in [
        ("spate-node.service", "spate-node"),
        ("spate-gateway.service", "spate-gateway"),
    ] {
        let text = std::fs::read_to_string(deploy.join(unit)).unwrap();
        let installed = format!("/usr/local/bin/{binary_name}");
        assert!(text.contains(&installed), "{unit} runs {installed}");
        let built = binary(binary_name);
        std::fs::write(
            dir.join(unit),
            text.replace(&installed, &built.display().to_string()),
        )
        .unwrap();
        units.push(unit);
    }
    let mut args = vec!["verify"];
    args.extend(units.iter().copied());
    let said = succeeds(&dir, "systemd-analyze", &args);
    assert!(
        !said.contains("spate-"),
        "systemd-analyze verify warns about the units:\n{said}"
    );
}
