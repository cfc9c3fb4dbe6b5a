//! `abuse`: memory exhaustion by partial frames against a real gateway process. A node runs
//! in this process; the gateway runs in its own process (this binary's `gateway-process`
//! command, which runs the same code as `spate-gateway`, or `--gateway-bin`), so its memory
//! can be read from /proc. A well-behaved producer runs alone, then again while attacker
//! connections each open streams that announce large frames, send part of each and stall.
//! Reported: the producer's throughput unloaded and under attack (and their ratio), the
//! gateway's peak RSS against its budget, its RSS once settled after the attackers close and
//! again `--linger-seconds` later, and how long it takes to exit after SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::cluster::Target;
use crate::report::Run;
use crate::scenarios::{self, DurabilityArg, ProduceArgs};

/// How often the gateway's memory is sampled.
const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// The attack has landed when the attackers sent nothing more for this long (flow control
/// holds them).
const ATTACK_QUIET: Duration = Duration::from_secs(1);
/// Longest wait for the attack to land or for memory to settle after it.
const SETTLE_MAX: Duration = Duration::from_secs(60);
/// Memory has settled after the attack when it moved less than this over `ATTACK_QUIET`.
const RSS_SETTLED_DELTA: u64 = 1 << 20;

#[derive(Debug, Clone, Args)]
pub struct AbuseArgs {
    /// Attacker QUIC connections.
    #[arg(long, default_value = "100")]
    pub connections: u32,
    /// Streams each attacker opens (the gateway allows 256 per connection by default).
    #[arg(long, default_value = "255")]
    pub streams: u32,
    /// Frame size each attacker stream announces in its header, in bytes.
    #[arg(long, default_value = "1048576")]
    pub announced_bytes: u32,
    /// Body bytes each attacker stream sends before stalling.
    #[arg(long, default_value = "524288")]
    pub sent_bytes: u32,
    /// How long the producer runs, alone and under attack.
    #[arg(long, default_value = "10")]
    pub seconds: f64,
    #[arg(long, default_value = "4")]
    pub partitions: u32,
    #[arg(long, value_enum, default_value = "none")]
    pub durability: DurabilityArg,
    /// The gateway's --buffer-budget. [default: the gateway's]
    #[arg(long, value_name = "BYTES")]
    pub buffer_budget: Option<u64>,
    /// The gateway's --connection-buffer-budget. [default: the gateway's]
    #[arg(long, value_name = "BYTES")]
    pub connection_buffer_budget: Option<u64>,
    /// The gateway's --frame-stall-timeout-ms. [default: the gateway's]
    #[arg(long, value_name = "MS")]
    pub frame_stall_timeout_ms: Option<u64>,
    /// Attacks one after another (each with the producer beside it): a second round shows
    /// whether memory the allocator kept after the first is reused rather than grown.
    #[arg(long, default_value = "1")]
    pub rounds: u32,
    /// How long to keep watching the gateway's RSS after the attackers closed and it settled,
    /// in seconds; the RSS at the end is reported beside the settled one. The default outlasts
    /// the gateway's idle timeout (30 s), which forgets connections whose close it never
    /// received, and its allocator's decay time (10 s).
    #[arg(long, default_value = "35")]
    pub linger_seconds: f64,
    /// A `spate-gateway` binary to run instead of this binary's `gateway-process`.
    #[arg(long, value_name = "PATH")]
    pub gateway_bin: Option<PathBuf>,
}

/// The gateway process under attack; killed when dropped.
pub struct GatewayProcess {
    child: Child,
    pub target: Target,
}

impl GatewayProcess {
    fn start(data_dir: &Path, node: SocketAddr, args: &AbuseArgs) -> Result<Self, String> {
        let mut flags = vec!["--node".to_owned(), node.to_string()];
        let settings = [
            ("--buffer-budget", args.buffer_budget),
            ("--connection-buffer-budget", args.connection_buffer_budget),
            ("--frame-stall-timeout-ms", args.frame_stall_timeout_ms),
        ];
        for (flag, value) in settings {
            if let Some(value) = value {
                flags.extend([flag.to_owned(), value.to_string()]);
            }
        }
        GatewayProcess::spawn(
            data_dir,
            args.gateway_bin.as_deref(),
            &flags,
            &data_dir.join("abuse-gateway.log"),
        )
    }

    /// Starts a gateway process (`binary`, or this binary's `gateway-process`) on a free
    /// loopback port with the development certificate of `data_dir/tls` and `flags`, its log
    /// in `log_path`; returns once it listens.
    pub fn spawn(
        data_dir: &Path,
        binary: Option<&Path>,
        flags: &[String],
        log_path: &Path,
    ) -> Result<Self, String> {
        let mut command = match binary {
            Some(binary) => Command::new(binary),
            None => {
                let me = std::env::current_exe()
                    .map_err(|error| format!("cannot find this executable: {error}"))?;
                let mut command = Command::new(me);
                command.arg("gateway-process");
                command
            }
        };
        // Several gateway processes run at once (`connections`): metrics on free ports.
        command
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(flags)
            .arg("--dev-cert-dir")
            .arg(data_dir.join("tls"));
        let log = std::fs::File::create(log_path)
            .map_err(|error| format!("cannot create {}: {error}", log_path.display()))?;
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|error| format!("cannot start the gateway: {error}"))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let parsed = line
            .trim_end()
            .strip_prefix("gateway listening on ")
            .and_then(|rest| rest.split_once(" (certificate "))
            .and_then(|(address, cert)| {
                Some((
                    address.parse().ok()?,
                    PathBuf::from(cert.strip_suffix(')')?),
                ))
            });
        let Some((address, cert)) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the gateway did not start (first line {line:?}); see {}",
                log_path.display()
            ));
        };
        Ok(GatewayProcess {
            child,
            target: Target {
                address,
                cert,
                server_name: "localhost".into(),
                made: Default::default(),
                replication_factor: 0,
            },
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM; returns how long the gateway took to exit.
    fn terminate(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|error| format!("cannot run kill: {error}"))?;
        if !sent.success() {
            return Err("kill -TERM failed".into());
        }
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(started.elapsed()),
                Ok(None) if started.elapsed() < SETTLE_MAX => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => return Err(format!("no exit within {SETTLE_MAX:?} of SIGTERM")),
                Err(error) => return Err(error.to_string()),
            }
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`); 0 if unreadable.
pub fn memory(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Samples a process's RSS on a thread of its own; `stop` returns the largest sample.
struct RssSampler {
    running: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let running = Arc::new(AtomicBool::new(true));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let running = running.clone();
            let peak = peak.clone();
            std::thread::spawn(move || {
                while running.load(Ordering::Relaxed) {
                    peak.fetch_max(memory(pid, "VmRSS:"), Ordering::Relaxed);
                    std::thread::sleep(MEMORY_SAMPLE_INTERVAL);
                }
            })
        };
        RssSampler {
            running,
            peak,
            thread,
        }
    }

    fn stop(self) -> u64 {
        self.running.store(false, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// The attackers: connections whose streams each hold a partial frame.
struct Attack {
    endpoint: quinn::Endpoint,
    connections: Vec<quinn::Connection>,
    /// Each stream's writer; a stream stays open (not finished) while its handle lives.
    writers: Vec<tokio::task::JoinHandle<(quinn::SendStream, quinn::RecvStream)>>,
}

impl Attack {
    async fn open(target: &Target, args: &AbuseArgs) -> Result<Attack, String> {
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|error| format!("cannot open a QUIC endpoint: {error}"))?;
        endpoint.set_default_client_config(
            spate_client::quic_client_config(&target.cert).map_err(|error| error.to_string())?,
        );
        let mut frame = Vec::with_capacity(16 + args.sent_bytes as usize);
        // A produce request header announcing `announced_bytes` in all.
        frame.extend_from_slice(&(args.announced_bytes - 4).to_le_bytes());
        frame.extend_from_slice(&4u16.to_le_bytes());
        frame.extend_from_slice(&[1, 0]);
        frame.extend_from_slice(&0u64.to_le_bytes());
        frame.resize(16 + args.sent_bytes as usize, 0xEE);
        let frame = bytes::Bytes::from(frame);
        let mut attack = Attack {
            endpoint,
            connections: Vec::new(),
            writers: Vec::new(),
        };
        for _ in 0..args.connections {
            let connection = attack
                .endpoint
                .connect(target.address, &target.server_name)
                .map_err(|error| error.to_string())?
                .await
                .map_err(|error| format!("attacker connection: {error}"))?;
            for _ in 0..args.streams {
                let (mut send, receive) = connection
                    .open_bi()
                    .await
                    .map_err(|error| format!("attacker stream: {error}"))?;
                let frame = frame.clone();
                attack.writers.push(tokio::spawn(async move {
                    // Waits for good once the gateway withholds flow-control credit.
                    let _ = send.write_all(&frame).await;
                    (send, receive)
                }));
            }
            attack.connections.push(connection);
        }
        Ok(attack)
    }

    fn sent(&self) -> u64 {
        self.connections
            .iter()
            .map(|connection| connection.stats().udp_tx.bytes)
            .sum()
    }

    /// Waits until the attackers can send no more; returns the bytes they sent.
    async fn landed(&self) -> u64 {
        let started = Instant::now();
        let mut last = self.sent();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < ATTACK_QUIET && started.elapsed() < SETTLE_MAX {
            tokio::time::sleep(MEMORY_SAMPLE_INTERVAL).await;
            let now = self.sent();
            if now > last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        last
    }

    async fn close(self) {
        for connection in &self.connections {
            connection.close(quinn::VarInt::from_u32(0), b"done");
        }
        for writer in &self.writers {
            writer.abort();
        }
        self.endpoint.wait_idle().await;
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1u32 << 20))
}

/// Runs the scenario; returns the producer's runs, unloaded and under attack in each round
/// (each round's figures are in its run's parameters).
pub fn run(
    runtime: &tokio::runtime::Runtime,
    data_dir: &Path,
    args: &AbuseArgs,
) -> Result<Vec<Run>, String> {
    if u64::from(args.sent_bytes) + 16 >= u64::from(args.announced_bytes) {
        return Err("--sent-bytes must leave the announced frame incomplete".into());
    }
    let node_dir = data_dir.join("node");
    let _ = std::fs::remove_dir_all(&node_dir);
    let flags = spate_node::Flags {
        data_dir: Some(node_dir),
        listen: Some("127.0.0.1:0".into()),
        ..spate_node::Flags::default()
    };
    let config = spate_node::NodeConfig::resolve(flags).map_err(|error| error.to_string())?;
    let node = spate_node::start(config).map_err(|error| error.to_string())?;
    let result = run_against(runtime, data_dir, node.endpoints[0], args);
    node.shutdown();
    result
}

fn run_against(
    runtime: &tokio::runtime::Runtime,
    data_dir: &Path,
    node: SocketAddr,
    args: &AbuseArgs,
) -> Result<Vec<Run>, String> {
    let mut gateway = GatewayProcess::start(data_dir, node, args)?;
    let pid = gateway.child.id();
    let target = gateway.target.clone();
    let produce = ProduceArgs {
        producers: 1,
        partitions: args.partitions,
        message_size: 1024,
        batch_bytes: 256 << 10,
        linger_ms: 5,
        durability: args.durability,
        seconds: args.seconds,
        count: None,
        rate: None,
        buffer_bytes: 8 << 20,
        warmup_seconds: (args.seconds / 10.0).min(1.0),
    };
    let unloaded = runtime.block_on(scenarios::produce(&target, "abuse-unloaded", &produce))?;
    let before = memory(pid, "VmRSS:");
    crate::say(format!(
        "      unloaded: {:.1} MB/s; gateway RSS {} MiB; attacking with {} connections × {} streams",
        unloaded.mb_per_s,
        mib(before),
        args.connections,
        args.streams
    ));
    let budget = args
        .buffer_budget
        .unwrap_or(spate_gateway::config::BUFFER_BUDGET_DEFAULT);
    let connections = args.connections + produce.producers + 1;
    let windows =
        u64::from(connections) * u64::from(spate_gateway::config::CONNECTION_WINDOW_DEFAULT);
    let mut runs = vec![unloaded];
    for round in 1..=args.rounds.max(1) {
        let name = if round == 1 {
            "abuse-attacked".to_owned()
        } else {
            format!("abuse-attacked-{round}")
        };
        let (mut attacked, figures) = attack_round(runtime, &target, pid, args, &produce, &name)?;
        crate::say(format!(
            "      round {round} under attack: {:.1} MB/s ({:.2} of unloaded); gateway peak RSS {} \
             MiB (budget {} MiB + windows of {connections} connections {} MiB); after the \
             attackers closed {} MiB, {} s later {} MiB",
            attacked.mb_per_s,
            attacked.mb_per_s / runs[0].mb_per_s.max(1e-9),
            mib(figures.peak),
            mib(budget),
            mib(windows),
            mib(figures.after),
            args.linger_seconds,
            mib(figures.lingered),
        ));
        let params = [
            ("attack_connections", args.connections.to_string()),
            ("attack_streams", args.streams.to_string()),
            ("attack_announced_bytes", args.announced_bytes.to_string()),
            ("attack_sent_bytes", args.sent_bytes.to_string()),
            ("attack_bytes_sent_total", figures.sent.to_string()),
            ("gateway_buffer_budget", budget.to_string()),
            ("gateway_connection_windows_total", windows.to_string()),
            ("gateway_rss_before_attack", figures.before.to_string()),
            (
                "gateway_rss_max_under_attack",
                figures.attack_max.to_string(),
            ),
            ("gateway_rss_peak_vmhwm", figures.peak.to_string()),
            (
                "gateway_rss_after_attackers_closed",
                figures.after.to_string(),
            ),
            ("gateway_rss_after_linger", figures.lingered.to_string()),
            ("linger_seconds", args.linger_seconds.to_string()),
            (
                "gateway_process",
                args.gateway_bin.as_ref().map_or_else(
                    || "spate-bench gateway-process".to_owned(),
                    |path| path.display().to_string(),
                ),
            ),
        ];
        for (name, value) in params {
            attacked.params.insert(name.to_owned(), value);
        }
        runs.push(attacked);
    }
    let exit = gateway.terminate()?;
    crate::say(format!(
        "      gateway exited {} ms after SIGTERM",
        exit.as_millis()
    ));
    for run in runs.iter_mut().skip(1) {
        run.params.insert(
            "gateway_exit_after_sigterm_ms".into(),
            exit.as_millis().to_string(),
        );
    }
    Ok(runs)
}

/// What one attack round measured of the gateway, in bytes.
struct RoundFigures {
    sent: u64,
    before: u64,
    attack_max: u64,
    peak: u64,
    after: u64,
    /// RSS `--linger-seconds` after `after` was read.
    lingered: u64,
}

/// One attack with the producer beside it; the attackers close at the end and the
/// gateway's memory is read once it settles.
fn attack_round(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    pid: u32,
    args: &AbuseArgs,
    produce: &ProduceArgs,
    name: &str,
) -> Result<(Run, RoundFigures), String> {
    let before = memory(pid, "VmRSS:");
    let sampler = RssSampler::start(pid);
    let attack = runtime.block_on(Attack::open(target, args))?;
    let sent = runtime.block_on(attack.landed());
    crate::say(format!(
        "      attack landed: {} MiB sent; gateway RSS {} MiB",
        mib(sent),
        mib(memory(pid, "VmRSS:"))
    ));
    let attacked = runtime.block_on(scenarios::produce(target, name, produce));
    let attack_max = sampler.stop();
    let peak = memory(pid, "VmHWM:");
    runtime.block_on(attack.close());
    // Memory after the attackers left, once it stops moving.
    let settle_started = Instant::now();
    let mut after = memory(pid, "VmRSS:");
    let mut steady_since = Instant::now();
    while steady_since.elapsed() < ATTACK_QUIET && settle_started.elapsed() < SETTLE_MAX {
        std::thread::sleep(MEMORY_SAMPLE_INTERVAL);
        let now = memory(pid, "VmRSS:");
        if now.abs_diff(after) > RSS_SETTLED_DELTA {
            steady_since = Instant::now();
        }
        after = now;
    }
    crate::say(format!(
        "      attackers closed; gateway RSS settled at {} MiB; watching it for {} s",
        mib(after),
        args.linger_seconds
    ));
    std::thread::sleep(Duration::from_secs_f64(args.linger_seconds.max(0.0)));
    let lingered = memory(pid, "VmRSS:");
    Ok((
        attacked?,
        RoundFigures {
            sent,
            before,
            attack_max,
            peak,
            after,
            lingered,
        },
    ))
}
