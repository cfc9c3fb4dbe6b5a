//! `spate up --nodes N`: a Spate cluster on this machine for development and for watching
//! failover. An etcd (started here from Debian's `etcd-server`, data in DIR/etcd, unless
//! `--etcd` names a running one), N node processes (this binary's `spate node`, data in
//! DIR/node-I, logs in DIR/node-I.log, default replication factor min(N, 3)), and a gateway per
//! node in this process (QUIC and Kafka; each node publishes its gateway's Kafka address, so
//! Kafka clients see every node as a broker), until Ctrl-C or SIGTERM; then the gateways
//! close, the nodes stop gracefully (SIGTERM, as `spate-node` takes it) and etcd last.
//! A node that exits meanwhile (`kill -9` to try failover) is reported with the command that
//! starts it again; the others carry on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::up::UpArgs;

/// How long a node or etcd may take to start (recovery of a large data directory included).
const START_WAIT: Duration = Duration::from_secs(60);
/// How long a node may take to stop gracefully before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(30);
/// Replicas of a topic created without a replication factor, at most.
const REPLICATION_FACTOR_MAX: u32 = 3;

/// A running child (etcd or a node): told to stop through `stop`, reported if it exits first.
struct Supervised {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

pub fn run(args: &UpArgs, gateway_listen: &str) -> ExitCode {
    if !cfg!(feature = "cluster") {
        crate::report(
            "this spate was built without cluster support: build it with `cargo build \
             --release -p spate-client --features cluster` (needs protoc, Debian's \
             protobuf-compiler)",
        );
        return ExitCode::FAILURE;
    }
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(message) => {
            crate::report(message);
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let mut children = Vec::new();
        let outcome = match start(args, &mut children).await {
            Ok((nodes, about)) => match gateways(gateway_listen, nodes) {
                Ok(gateways) => {
                    let members = usize::try_from(args.nodes).unwrap_or(usize::MAX);
                    crate::up::serve(args, gateways, &about, Some(members)).await
                }
                Err(message) => Err(message),
            },
            Err(message) => Err(message),
        };
        // Nodes first (newest first), etcd last: a node stopping deregisters from etcd.
        for child in children.into_iter().rev() {
            let _ = child.stop.send(());
            let _ = child.done.await;
        }
        outcome
    });
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            crate::report(message);
            ExitCode::FAILURE
        }
    }
}

/// A node as started: its id, its first shard, and its gateway's Kafka listener (listen,
/// advertised; the advertised one is in the node's member record).
struct Started {
    id: u32,
    first: SocketAddr,
    kafka: Option<(String, String)>,
    /// Where its gateway serves metrics.
    gateway_metrics: String,
}

/// A gateway per node, each in front of its node's first shard (and knowing the others'):
/// the first with QUIC on `gateway_listen` (the one `spate` commands use), the others on a
/// free port of its host; each with the node's Kafka listener, so Kafka clients see every
/// node as a broker.
fn gateways(gateway_listen: &str, nodes: Vec<Started>) -> Result<Vec<crate::up::Gateway>, String> {
    let quic: SocketAddr = gateway_listen
        .parse()
        .map_err(|error| format!("--gateway {gateway_listen}: {error}"))?;
    let firsts: Vec<SocketAddr> = nodes.iter().map(|node| node.first).collect();
    Ok(nodes
        .into_iter()
        .enumerate()
        .map(|(index, node)| crate::up::Gateway {
            listen: if index == 0 {
                gateway_listen.to_owned()
            } else {
                SocketAddr::new(quic.ip(), 0).to_string()
            },
            // Its own node first, then the others: a gateway whose node is gone still learns
            // the cluster's map.
            node: std::iter::once(node.first)
                .chain(firsts.iter().copied().filter(|first| *first != node.first))
                .map(|first| first.to_string())
                .collect::<Vec<_>>()
                .join(","),
            kafka: node
                .kafka
                .map(|(listen, advertised)| (listen, Some(advertised))),
            node_id: Some(node.id),
            metrics_listen: node.gateway_metrics,
        })
        .collect())
}

/// Where node `id` (or its gateway) serves metrics: `listen` at its port + 2 × (id − 1), so
/// nodes and gateways started from the default ports (9644 and 9645) interleave; port 0
/// stays 0 (a free port) and `none` stays off.
fn metrics_of(listen: &str, flag: &str, id: u32) -> Result<String, String> {
    if listen == "none" {
        return Ok(listen.to_owned());
    }
    let address: SocketAddr = listen
        .parse()
        .map_err(|error| format!("{flag} {listen}: {error}"))?;
    let port = match address.port() {
        0 => 0,
        port => u16::try_from(u32::from(port) + 2 * (id - 1))
            .map_err(|_| format!("{flag} {listen}: node {id}'s port is past 65535"))?,
    };
    Ok(SocketAddr::new(address.ip(), port).to_string())
}

/// The Kafka listener of node `id`'s gateway: (listen, advertised). On --kafka-listen's host
/// at its port + id − 1 (port 0: a free port), advertised at --kafka-advertise's host and
/// port + id − 1 when given, else where it listens. `None` with --no-kafka.
fn kafka_of(args: &UpArgs, id: u32) -> Result<Option<(String, String)>, String> {
    if args.no_kafka {
        return Ok(None);
    }
    let offset = |address: &str, flag: &str| -> Result<(String, u16), String> {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("{flag} {address}: not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|error| format!("{flag} {address}: {error}"))?;
        let port = match port {
            0 => 0,
            port => u16::try_from(u32::from(port) + id - 1)
                .map_err(|_| format!("{flag} {address}: node {id}'s port is past 65535"))?,
        };
        Ok((host.to_owned(), port))
    };
    let (host, port) = offset(&args.kafka_listen, "--kafka-listen")?;
    let port = match port {
        0 => free_port()?,
        port => port,
    };
    let listen = format!("{host}:{port}");
    let advertised = match &args.kafka_advertise {
        Some(advertise) => {
            let (host, port) = offset(advertise, "--kafka-advertise")?;
            format!("{host}:{port}")
        }
        None => listen.clone(),
    };
    Ok(Some((listen, advertised)))
}

/// Starts etcd and the nodes (into `children`, which are stopped however this ends); a
/// Ctrl-C or SIGTERM meanwhile stops the start. The children run in process groups of their
/// own, so a terminal's Ctrl-C reaches `spate up` only, which stops them in order. Returns
/// the nodes as started and the lines that say what was started.
async fn start(
    args: &UpArgs,
    children: &mut Vec<Supervised>,
) -> Result<(Vec<Started>, Vec<String>), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| format!("cannot install a SIGINT handler: {error}"))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| format!("cannot install a SIGTERM handler: {error}"))?;
    tokio::select! {
        started = start_children(args, children) => started,
        _ = interrupt.recv() => Err("interrupted while starting".to_owned()),
        _ = terminate.recv() => Err("terminated while starting".to_owned()),
    }
}

async fn start_children(
    args: &UpArgs,
    children: &mut Vec<Supervised>,
) -> Result<(Vec<Started>, Vec<String>), String> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|error| format!("cannot create {}: {error}", args.data_dir.display()))?;
    let mut about = Vec::new();
    let etcd = match &args.etcd {
        Some(urls) => {
            about.push(format!("etcd at {urls}"));
            urls.clone()
        }
        None => {
            let (url, child, pid) = start_etcd(&args.data_dir).await?;
            about.push(format!(
                "etcd (pid {pid}) on {url}; data in {}, log {}",
                args.data_dir.join("etcd").display(),
                args.data_dir.join("etcd.log").display()
            ));
            children.push(supervise("etcd".into(), child, pid, String::new()));
            url
        }
    };
    let executable = std::env::current_exe()
        .map_err(|error| format!("cannot find this spate's executable: {error}"))?;
    let mut started = Vec::new();
    for id in 1..=args.nodes {
        let kafka = kafka_of(args, id)?;
        let node_args = node_args(
            args,
            &etcd,
            id,
            kafka.as_ref().map(|(_, advertised)| advertised.as_str()),
        )?;
        let (child, pid, shards) = start_node(&executable, &node_args, args, id).await?;
        let first = shards
            .first()
            .copied()
            .ok_or_else(|| format!("node {id} started no shard"))?;
        started.push(Started {
            id,
            first,
            kafka,
            gateway_metrics: metrics_of(
                &args.gateway_metrics_listen,
                "--gateway-metrics-listen",
                id,
            )?,
        });
        let shown: Vec<String> = shards.iter().map(ToString::to_string).collect();
        about.push(format!(
            "node {id} (pid {pid}): shards on {}; data in {}, log {}",
            shown.join(", "),
            node_dir(args, id).display(),
            node_log(args, id).display()
        ));
        let again = format!(
            "{} node {}",
            executable.display(),
            node_args
                .iter()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        children.push(supervise(format!("node {id}"), child, pid, again));
    }
    Ok((started, about))
}

fn node_dir(args: &UpArgs, id: u32) -> PathBuf {
    args.data_dir.join(format!("node-{id}"))
}

fn node_log(args: &UpArgs, id: u32) -> PathBuf {
    args.data_dir.join(format!("node-{id}.log"))
}

/// The flags of node `id`: its data directory, id and etcd; shard 0 on --node-listen's host,
/// its port + 100 × (id − 1) (port 0: free ports); one shard unless --shards; automatic topic
/// creation and a replication factor of min(N, 3), as a development cluster; its gateway's
/// advertised Kafka address (`kafka`).
fn node_args(
    args: &UpArgs,
    etcd: &str,
    id: u32,
    kafka: Option<&str>,
) -> Result<Vec<std::ffi::OsString>, String> {
    let listen: SocketAddr = args
        .node_listen
        .parse()
        .map_err(|error| format!("--node-listen {}: {error}", args.node_listen))?;
    let port = match listen.port() {
        0 => 0,
        port => u16::try_from(u32::from(port) + 100 * (id - 1))
            .map_err(|_| format!("--node-listen {listen}: node {id}'s port is past 65535"))?,
    };
    let mut out: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        node_dir(args, id).into(),
        "--node-id".into(),
        id.to_string().into(),
        "--etcd".into(),
        etcd.into(),
        "--listen".into(),
        SocketAddr::new(listen.ip(), port).to_string().into(),
        "--shards".into(),
        args.shards.unwrap_or(1).to_string().into(),
        "--auto-create-topics".into(),
        "--default-replication-factor".into(),
        args.nodes.min(REPLICATION_FACTOR_MAX).to_string().into(),
    ];
    out.push("--metrics-listen".into());
    out.push(metrics_of(&args.metrics_listen, "--metrics-listen", id)?.into());
    if let Some(timeout) = args.session_timeout_ms {
        out.push("--session-timeout-ms".into());
        out.push(timeout.to_string().into());
    }
    if let Some(kafka) = kafka {
        out.push("--kafka-address".into());
        out.push(kafka.into());
    }
    Ok(out)
}

/// A free TCP port on loopback (bound, then released for the child to take).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("cannot find a free port: {error}"))
}

fn log_file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))
}

/// Starts a one-member etcd on free loopback ports, data in DIR/etcd (kept across runs), and
/// waits until it takes connections.
async fn start_etcd(dir: &Path) -> Result<(String, Child, u32), String> {
    let (client, peer) = (free_port()?, free_port()?);
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = log_file(&dir.join("etcd.log"))?;
    let stderr = log
        .try_clone()
        .map_err(|error| format!("cannot open etcd's log: {error}"))?;
    let mut child = Command::new("etcd")
        .arg("--name")
        .arg("spate-up")
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .arg("--initial-cluster")
        .arg(format!("spate-up={peer_url}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => "etcd is not installed: `spate up --nodes N` starts \
                 one (Debian: `apt install etcd-server`), or give --etcd URLS of a running one"
                .to_owned(),
            _ => format!("cannot start etcd: {error}"),
        })?;
    let pid = child.id().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", client))
            .await
            .is_ok()
        {
            return Ok((url, child, pid));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "etcd exited at its start ({status}); see {}",
                dir.join("etcd.log").display()
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "etcd did not listen on {url} within {}s",
                START_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts node `id` (`spate node` with `node_args`), its log in DIR/node-I.log, and reads the
/// addresses of its shards from the lines it prints once it serves.
async fn start_node(
    executable: &Path,
    node_args: &[std::ffi::OsString],
    args: &UpArgs,
    id: u32,
) -> Result<(Child, u32, Vec<SocketAddr>), String> {
    let log_path = node_log(args, id);
    let log = log_file(&log_path)?;
    let mut child = Command::new(executable)
        .arg("node")
        .args(node_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start node {id}: {error}"))?;
    let pid = child.id().unwrap_or(0);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| format!("node {id} has no output"))?;
    let mut lines = BufReader::new(stdout).lines();
    let shards = args.shards.unwrap_or(1) as usize;
    let mut addresses = Vec::with_capacity(shards);
    let read = async {
        while addresses.len() < shards {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    // `shard N listening on HOST:PORT`
                    if let Some(address) = line
                        .rsplit_once(" listening on ")
                        .and_then(|(_, address)| address.parse::<SocketAddr>().ok())
                    {
                        addresses.push(address);
                    }
                }
                Ok(None) | Err(_) => return false,
            }
        }
        true
    };
    match tokio::time::timeout(START_WAIT, read).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(format!(
                "node {id} stopped at its start; see {}",
                log_path.display()
            ))
        }
        Err(_) => {
            return Err(format!(
                "node {id} did not serve within {}s; see {}",
                START_WAIT.as_secs(),
                log_path.display()
            ))
        }
    }
    // Nothing more is printed; the pipe is drained so a late line never blocks the node.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, pid, addresses))
}

/// Watches `child`: one that exits before it is told to stop is reported (with `again`, the
/// command that starts it again); told to stop, it gets SIGTERM and `STOP_WAIT`, then SIGKILL.
fn supervise(name: String, mut child: Child, pid: u32, again: String) -> Supervised {
    let (stop, stopping) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_or_else(|error| error.to_string(), |status| status.to_string());
                if again.is_empty() {
                    crate::notice(format!("{name} exited ({status})"));
                } else {
                    crate::notice(format!(
                        "{name} exited ({status}); the others carry on. Start it again with: {again}"
                    ));
                }
            }
            _ = stopping => {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                if tokio::time::timeout(STOP_WAIT, child.wait()).await.is_err() {
                    tracing::warn!(%name, "did not stop within {}s: killed", STOP_WAIT.as_secs());
                    let _ = child.kill().await;
                }
            }
        }
    });
    Supervised { stop, done }
}
