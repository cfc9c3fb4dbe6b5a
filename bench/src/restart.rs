//! The restart scenario: a node with many partitions holding one record each is killed with
//! SIGKILL and started again; reports the time until it serves, its memory, and the disk the
//! partitions take. The node runs as a child process (this binary's hidden `node` command), so
//! it can be killed for real.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spate_client::Setting;

use crate::report::{params, Run};

/// Goals of the scenario at 10,000 partitions (issue "Hardening", defect 4), printed beside
/// the figures.
const RESTART_SECONDS_GOAL: f64 = 10.0;
const RSS_BYTES_GOAL: u64 = 1 << 30;
const DISK_BYTES_GOAL: u64 = 2 << 30;

#[derive(Debug, Clone, clap::Args)]
pub struct RestartArgs {
    /// Partitions of the one topic, each given one record.
    #[arg(long, default_value_t = 10_000)]
    pub partitions: u32,
    /// Shards of the node. [default: one per core]
    #[arg(long)]
    pub shards: Option<u32>,
    /// Longest wait for the node to serve again before the run fails.
    #[arg(long, default_value_t = 300.0, value_parser = crate::replication::seconds)]
    pub timeout_seconds: f64,
}

/// The node as a child process.
struct NodeProcess {
    child: Child,
    endpoint: String,
}

impl NodeProcess {
    /// Starts `spate-bench node` on `dir` and waits until it serves; returns it and how long
    /// that took.
    fn start(dir: &Path, shards: Option<u32>) -> Result<(NodeProcess, Duration), String> {
        let exe = std::env::current_exe().map_err(|error| error.to_string())?;
        let mut command = Command::new(exe);
        command
            .args(["node", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(shards) = shards {
            command.args(["--shards", &shards.to_string()]);
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start the node: {error}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut endpoint = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|error| error.to_string())?;
            if let Some(address) = line.strip_prefix("shard 0 listening on ") {
                endpoint = Some(address.to_owned());
            }
            if line == "ready" {
                break;
            }
        }
        let took = started.elapsed();
        let Some(endpoint) = endpoint else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the node stopped before serving".into());
        };
        Ok((NodeProcess { child, endpoint }, took))
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// (current, peak) resident memory in bytes, from `/proc/PID/status`.
    fn memory(&self) -> (u64, u64) {
        let pid = self.child.id();
        (
            crate::abuse::memory(pid, "VmRSS:"),
            crate::abuse::memory(pid, "VmHWM:"),
        )
    }
}

/// Bytes allocated on disk under `dir` (blocks, not lengths: preallocation counts).
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.blocks() * 512;
            }
        }
    }
    total
}

/// A gateway in this process in front of the node at `endpoint`.
async fn start_gateway(data_dir: &Path, endpoint: &str) -> Result<spate_gateway::Gateway, String> {
    let flags = spate_gateway::Flags {
        listen: Some("127.0.0.1:0".into()),
        node: Some(endpoint.to_owned()),
        dev_cert_dir: Some(data_dir.join("tls")),
        ..spate_gateway::Flags::default()
    };
    let config = spate_gateway::GatewayConfig::resolve(flags).map_err(|error| error.to_string())?;
    spate_gateway::start(config)
        .await
        .map_err(|error| error.to_string())
}

async fn client(gateway: &spate_gateway::Gateway) -> Result<spate_client::Client, String> {
    spate_client::Client::connect(gateway.local_addr, &gateway.cert_path, "localhost")
        .await
        .map_err(|error| error.to_string())
}

pub async fn run(data_dir: &Path, name: &str, args: &RestartArgs) -> Result<Run, String> {
    let dir = data_dir.join("restart");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
    let (node, _) = NodeProcess::start(&dir, args.shards)?;
    let gateway = start_gateway(data_dir, &node.endpoint).await?;
    let client = Arc::new(client(&gateway).await?);
    let topic = "restart";
    client
        .create_topic(
            topic,
            args.partitions,
            Setting::Unlimited,
            Setting::Unlimited,
        )
        .await
        .map_err(|error| format!("cannot create the topic: {error}"))?;
    let writing = Instant::now();
    // Tried again only while the node cannot take it yet; a copy stored twice would show in
    // the check after the restart (every partition must hold exactly one record).
    crate::replication::write_every_partition(
        &client,
        topic,
        args.partitions,
        1,
        Duration::from_secs_f64(args.timeout_seconds),
    )
    .await
    .map_err(|error| format!("produce failed: {error}"))?;
    let write_seconds = writing.elapsed().as_secs_f64();
    let (rss_before, _) = node.memory();
    let disk_before = allocated(&dir);
    node.kill();
    gateway.close();
    gateway.wait_idle().await;

    let (node, took) = NodeProcess::start(&dir, args.shards)?;
    let restart_seconds = took.as_secs_f64();
    if restart_seconds > args.timeout_seconds {
        node.kill();
        return Err(format!("the node took {restart_seconds:.1} s to serve"));
    }
    let (rss_after, rss_peak) = node.memory();
    let disk_after = allocated(&dir);
    // Every partition must still hold its record.
    let gateway = start_gateway(data_dir, &node.endpoint).await?;
    let description = client_describe(&gateway, topic).await;
    node.kill();
    gateway.close();
    gateway.wait_idle().await;
    let description = description?;
    let missing = description
        .partitions
        .iter()
        .filter(|partition| partition.high_watermark != 1)
        .count();
    if missing > 0 || description.partitions.len() != args.partitions as usize {
        return Err(format!(
            "after the restart {missing} of {} partitions do not hold their one record",
            args.partitions
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);

    let mut run = Run::new(
        name,
        "spate",
        "restart",
        params([
            ("partitions", args.partitions.to_string()),
            (
                "shards",
                args.shards.map_or("one per core".into(), |s| s.to_string()),
            ),
        ]),
    );
    run.finish(took, u64::from(args.partitions), 0);
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    run.figures = BTreeMap::from([
        ("write_seconds".into(), write_seconds),
        ("restart_seconds".into(), restart_seconds),
        ("rss_before_kill_mib".into(), mib(rss_before)),
        ("rss_after_restart_mib".into(), mib(rss_after)),
        ("rss_peak_during_restart_mib".into(), mib(rss_peak)),
        ("disk_allocated_before_kill_mib".into(), mib(disk_before)),
        ("disk_allocated_after_restart_mib".into(), mib(disk_after)),
    ]);
    if args.partitions == 10_000 {
        crate::say(format!(
            "      goals at 10,000 partitions: restart {restart_seconds:.1} s (≤ {RESTART_SECONDS_GOAL} s), \
             peak RSS {:.0} MiB (≤ {:.0} MiB), disk {:.0} MiB (≤ {:.0} MiB)",
            mib(rss_peak),
            mib(RSS_BYTES_GOAL),
            mib(disk_after),
            mib(DISK_BYTES_GOAL)
        ));
    }
    Ok(run)
}

async fn client_describe(
    gateway: &spate_gateway::Gateway,
    topic: &str,
) -> Result<spate_client::TopicDescription, String> {
    let client = client(gateway).await?;
    client
        .describe_topic(topic)
        .await
        .map_err(|error| format!("cannot describe the topic after the restart: {error}"))
}

/// The hidden `node` command: a node in this process until it is killed (SIGKILL in the
/// scenario). Prints `shard N listening on ADDR` per shard, then `ready`.
pub fn serve(flags: spate_node::Flags) -> Result<(), String> {
    let config = spate_node::NodeConfig::resolve(flags).map_err(|error| error.to_string())?;
    let node = spate_node::start(config).map_err(|error| error.to_string())?;
    #[allow(clippy::print_stdout)]
    {
        for (shard, endpoint) in node.endpoints.iter().enumerate() {
            println!("shard {shard} listening on {endpoint}");
        }
        println!("ready");
    }
    loop {
        std::thread::park();
    }
}
