//! Kafka admin clients against a real `spate up` on loopback: kafka-python and
//! confluent-kafka describe a topic's configs and the broker's, describe the cluster, and are
//! refused CreatePartitions with a clear error (`tests/kafka_clients/admin.py`). The topic is
//! made with the `spate` CLI over QUIC, so the settings read over Kafka are the node's.
//!
//! The helpers are the few of `e2e.rs` this needs (test files do not share modules).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The Python Kafka clients, pinned (the same as `e2e.rs`, sharing its virtual environment).
const PYTHON_KAFKA_CLIENTS: [&str; 2] = ["kafka-python==3.0.12", "confluent-kafka==2.16.1"];

fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kafka-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process, killed when dropped; its stdout lines arrive on a channel and its stderr
/// goes to a log file.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Process {
    fn spawn(command: &mut Command, log: PathBuf) -> Process {
        let stderr = std::fs::File::create(&log).unwrap();
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
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A virtual environment under `target/` with the pinned Python Kafka clients (the one
/// `e2e.rs` makes; made here if missing).
fn python_with_kafka_clients() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kafka-clients-venv");
    let python = venv.join("bin").join("python");
    let pinned = Command::new(&python)
        .args(["-m", "pip", "freeze"])
        .output()
        .is_ok_and(|output| {
            let frozen = String::from_utf8_lossy(&output.stdout).to_lowercase();
            PYTHON_KAFKA_CLIENTS
                .iter()
                .all(|package| frozen.contains(&package.to_lowercase()))
        });
    if pinned {
        return python;
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
    python
}

#[test]
fn kafka_admin_clients_describe_configs_and_cluster_and_are_refused_new_partitions() {
    let python = python_with_kafka_clients();
    let dir = data_dir("python");
    let mut up = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_spate"))
            .args(["up", "--gateway", "127.0.0.1:0", "--shards", "1"])
            .args(["--kafka-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("data")),
        dir.join("up.log"),
    );
    // "gateway listening on ADDRESS (certificate PATH)"
    let gateway_line = up.line("gateway listening on ");
    let (gateway, cert) = gateway_line
        .strip_prefix("gateway listening on ")
        .and_then(|rest| rest.split_once(" (certificate "))
        .map(|(address, cert)| (address.to_owned(), cert.trim_end_matches(')').to_owned()))
        .unwrap();
    // "kafka listening on ADDRESS (advertised as ADDRESS)"
    let broker = up
        .line("kafka listening on ")
        .strip_prefix("kafka listening on ")
        .and_then(|rest| rest.split_once(' '))
        .map(|(address, _)| address.to_owned())
        .unwrap();
    up.line("spate is up");

    let topic = "admin-topic";
    let created = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["--gateway", &gateway, "--ca-cert", &cert])
        .args(["topic", "create", topic, "--partitions", "2"])
        .args(["--retention-ms", "3600000"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "spate topic create failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients/admin.py");
    let output = Command::new(&python)
        .arg(script)
        .args([broker.as_str(), topic])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "admin.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("admin ok"));
}
