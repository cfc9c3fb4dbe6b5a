//! The `spate` command-line tool: `spate up` runs a node and a gateway locally; `topic`,
//! `produce` and `consume` talk to a gateway over QUIC through the SDK. Contract for scripts:
//! results go to stdout, one clear line per failure to stderr, exit status 0 only on success,
//! 1 on failure, 2 for unusable arguments; `produce` exits 130 after SIGINT or SIGTERM, once
//! it has waited for the records in flight and printed what is stored.

mod cluster_up;
mod consume;
mod group;
mod moves;
mod produce;
mod profile;
mod top;
mod topic;
mod up;

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spate_client::{Client, ClientError, ErrorCode};

/// Where `spate up` keeps its data (and the development certificate in `tls/`).
pub const DATA_DIR_DEFAULT: &str = "./spate-data";
/// The development certificate `spate up` writes, trusted by default.
pub const CA_CERT_DEFAULT: &str = "./spate-data/tls/cert.pem";

/// Spate command-line tool: start Spate locally, manage topics, produce and consume records.
#[derive(Debug, Parser)]
#[command(
    name = "spate",
    version,
    about = "Spate command-line tool: start Spate locally, manage topics, produce and consume records.",
    long_about = None,
    after_help = "Examples:\n  spate up                                 # Spate here, with a development certificate\n  spate topic create clicks --partitions 4\n  seq 1000 | spate produce clicks          # one record per line\n  spate consume clicks --follow            # print records as they arrive\n\nExit status: 0 success, 1 failure (one `spate: error: ...` line on stderr), 2 unusable\narguments, 130 interrupted (`produce` drains first). Reference: docs/cli.md."
)]
struct Cli {
    /// Gateway address (for `up`: the address to listen on, default 127.0.0.1:7447).
    /// [default: the profile's, else 127.0.0.1:7447]
    #[arg(long, global = true, env = "SPATE_GATEWAY", value_name = "HOST:PORT")]
    gateway: Option<String>,
    /// CA certificate (PEM) to trust for the gateway, or `system` for the operating system's
    /// trusted CAs. [default: the profile's, else ./spate-data/tls/cert.pem, the development
    /// certificate `spate up` writes]
    #[arg(long, global = true, env = "SPATE_CA_CERT", value_name = "PATH")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to present to a gateway that asks for one (mutual TLS,
    /// docs/security.md), with --client-key. [default: the profile's, else none]
    #[arg(long, global = true, env = "SPATE_CLIENT_CERT", value_name = "PATH")]
    client_cert: Option<PathBuf>,
    /// Private key (PEM, unencrypted) of --client-cert. [default: the profile's]
    #[arg(long, global = true, env = "SPATE_CLIENT_KEY", value_name = "PATH")]
    client_key: Option<PathBuf>,
    /// Name to verify in the gateway's certificate. [default: the profile's, else the host of
    /// --gateway]
    #[arg(long, global = true, env = "SPATE_SERVER_NAME", value_name = "NAME")]
    server_name: Option<String>,
    /// The profile (gateway, CA, server name) to use from the config file
    /// (~/.config/spate/config.toml, or SPATE_CONFIG). [default: the file's current one]
    #[arg(long, global = true, env = "SPATE_PROFILE", value_name = "NAME")]
    profile: Option<String>,
    /// How log lines are written to stderr: `text` or `json` (one object per line); given
    /// before the command (`spate --log-format json up`). [default: text]
    #[arg(
        long,
        env = "SPATE_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    log_format: spate_ops::LogFormat,
    /// What is logged: a level (`error`, `warn`, `info`, `debug`, `trace`) or `tracing`
    /// directives; `RUST_LOG` wins when set. [default: info for `up`, nothing for the other
    /// commands, which report failures in their own words]
    #[arg(long, env = "SPATE_LOG_LEVEL", value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node and a gateway here with default settings until Ctrl-C.
    #[command(
        after_help = "Examples:\n  spate up                             # data in ./spate-data, QUIC on 127.0.0.1:7447, Kafka on 127.0.0.1:9092\n  spate up --data-dir /var/tmp/spate   # another data directory\n\nOther `spate` commands run from the same directory trust its development certificate\n(./spate-data/tls/cert.pem) without flags."
    )]
    Up(up::UpArgs),
    /// Run a node as `spate-node` does, with its flags (`spate up --nodes N` runs its members
    /// this way; `spate-node --help` describes them).
    #[command(hide = true)]
    Node(Box<spate_node::Flags>),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// The node at a glance (shards, partitions and bytes on disk per shard) and the
    /// cluster's members and controller.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// List, describe (members, committed offsets, lag), reset and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Send newline-delimited records from stdin to a topic.
    #[command(
        after_help = "Examples:\n  tail -F app.log | spate produce logs                  # ship a log, one record per line\n  printf 'sensor-7:21.5\\n' | spate produce readings --key-separator :\n  spate produce clicks --report-acks < events.txt > acks.tsv\n  spate produce clicks --failed-lines failed.txt < events.txt || spate produce clicks < failed.txt\n\nRecords whose answer is lost (a gateway or node restart) are sent again and stored once.\nCtrl-C stops reading, waits for the records in flight and says what is stored."
    )]
    Produce(produce::ProduceArgs),
    /// Save where gateways are (address, CA, server name) as named profiles.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// A live view of a running Spate from its metrics endpoints (like `top`): ingest and
    /// reads per topic, fsync latency, connections, requests, consumer lag, fenced
    /// partitions.
    #[command(
        after_help = "Examples:\n  spate top                                   # the node and gateway of `spate up` (127.0.0.1:9644, :9645)\n  spate top --metrics 10.0.0.5:9644,10.0.0.5:9645 --interval 5\n  spate top --once                            # one view, for scripts and logs"
    )]
    Top(top::TopArgs),
    /// Print records of a topic to stdout, one per line.
    #[command(
        after_help = "Examples:\n  spate consume clicks                       # everything stored, then stop\n  spate consume clicks --follow              # and keep printing new records\n  spate consume clicks --from latest --follow\n  spate consume clicks --from @1767225600000 --count 10   # from a time (ms)\n  spate consume clicks --format json         # key, value, headers, offset, timestamp\n  spate consume clicks --group billing       # share the partitions with the group's other members"
    )]
    Consume(consume::ConsumeArgs),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Shards with their endpoints, partitions, bytes on disk, segments and fenced partitions.
    #[command(after_help = "Example:\n  spate cluster info")]
    Info,
    /// The cluster's members (nodes registered in etcd, with their shards), its elected
    /// controller, and its partitions (how many; the under-replicated and offline ones with
    /// their leader, replicas and ISR); a single node lists itself.
    #[command(after_help = "Example:\n  spate cluster status")]
    Status,
    /// Move partitions of a topic to other nodes: new replicas are added and catch up, the
    /// leadership moves if its node leaves, then the old replicas are removed. `spate cluster
    /// status` shows the moves in progress.
    #[command(
        after_help = "Examples:\n  spate cluster reassign clicks --partitions 0,1 --replicas 2,3,4\n  spate cluster reassign clicks --replicas 4,5 --throttle 50MB   # every partition, new replicas at 50 MB/s\n  spate cluster reassign clicks --partitions 0 --cancel          # back to the replicas before"
    )]
    Reassign {
        topic: String,
        /// The partitions (default: all of the topic's).
        #[arg(long, value_name = "N,…", value_delimiter = ',')]
        partitions: Vec<u32>,
        /// The new replicas' node ids, in preference order (the first is the preferred
        /// leader).
        #[arg(
            long,
            value_name = "NODE,…",
            value_delimiter = ',',
            required_unless_present = "cancel"
        )]
        replicas: Vec<u32>,
        /// The byte rate the new replicas catch up at (bytes/s, or 50MB, 1GiB).
        #[arg(long, value_name = "RATE", value_parser = moves::rate, conflicts_with = "cancel")]
        throttle: Option<u64>,
        /// Move the partitions back to the replicas they had before their reassignment.
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
    },
    /// Make each partition's preferred replica (its first) the leader, where it is alive and
    /// in sync: after a node came back, its leaderships return to it.
    #[command(
        after_help = "Examples:\n  spate cluster elect-preferred                          # every partition of every topic\n  spate cluster elect-preferred clicks --partitions 0,3"
    )]
    ElectPreferred {
        /// Only this topic's partitions.
        topic: Option<String>,
        /// Only these partitions of the topic.
        #[arg(long, value_name = "N,…", value_delimiter = ',', requires = "topic")]
        partitions: Vec<u32>,
    },
    /// Empty a node before it is retired: no new replicas go there, and the controller
    /// moves the ones it holds to other members (keeping each topic's replication factor).
    /// Stop the node once `spate cluster status` lists no partition moving off it.
    #[command(after_help = "Example:\n  spate cluster decommission 3 --throttle 100MB")]
    Decommission {
        node: u32,
        /// The byte rate the replicas taking its place catch up at (bytes/s, or 100MB).
        #[arg(long, value_name = "RATE", value_parser = moves::rate)]
        throttle: Option<u64>,
    },
    /// Take a decommissioned node back: new replicas may go there again. Replicas already
    /// moved stay where they are; a partition caught mid-move keeps the replica added for it
    /// (reassign it to the replicas wanted).
    #[command(after_help = "Example:\n  spate cluster recommission 3")]
    Recommission { node: u32 },
}

/// Exit status of unusable arguments (clap's).
pub const EXIT_USAGE: u8 = 2;

/// Exit status of a command stopped by SIGINT or SIGTERM (the shells' 128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// How a command that did not succeed ends.
#[derive(Debug)]
pub enum Failure {
    /// One error line on stderr, exit status 1.
    Error(String),
    /// Stopped by an interrupt, whose summary is printed already: exit status 130.
    Interrupted,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Error(message)
    }
}

/// Prints one line to stderr that is not an error (an interrupt's summary).
pub fn notice(message: impl std::fmt::Display) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("spate: {message}");
    }
}

/// A client error in the CLI's words: an error answer in the server's own words (its code
/// name, such as `Storage` or `UnknownTopic`, is for programs), prefixed where the words alone
/// would not say what failed; any other error as it is.
pub fn describe(error: &ClientError) -> String {
    if let ClientError::Connect {
        address,
        source: spate_client::ConnectError::HandshakeTimeout(waited),
    } = error
    {
        return format!(
            "no Spate gateway answered at {address} (QUIC, UDP) within {} s; is it running, and \
             is that its address (--gateway, SPATE_GATEWAY)?",
            waited.as_secs()
        );
    }
    let ClientError::Server(answer) = error else {
        return error.to_string();
    };
    let message = &answer.message;
    match answer.code {
        ErrorCode::Storage => format!("the node's storage failed: {message}"),
        ErrorCode::PartitionFenced => format!("the partition is fenced: {message}"),
        ErrorCode::Internal => format!("internal error on the server: {message}"),
        ErrorCode::Busy => format!("the server is busy, try again: {message}"),
        _ => message.clone(),
    }
}

/// Decodes the escape after a backslash (`\n \t \r \0 \\`, the ones `-D` and `--format`
/// take) from `characters` onto `out`.
pub fn push_escaped(characters: &mut std::str::Chars<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    match characters.next() {
        Some('n') => out.push(b'\n'),
        Some('t') => out.push(b'\t'),
        Some('r') => out.push(b'\r'),
        Some('0') => out.push(0),
        Some('\\') => out.push(b'\\'),
        other => {
            return Err(format!(
                "unknown escape \\{} (known: \\n \\t \\r \\0 \\\\)",
                other.map(String::from).unwrap_or_default()
            ))
        }
    }
    Ok(())
}

/// The async runtime of every command (two worker threads: the CLI waits on the network).
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))
}

/// Prints one error line to stderr.
pub fn report(message: impl std::fmt::Display) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("spate: error: {message}");
    }
}

/// The gateway's address when neither a flag nor a profile names one.
pub const GATEWAY_DEFAULT: &str = "127.0.0.1:7447";

impl Cli {
    /// The profile in use: `--profile`, else the config file's current one, else none.
    fn profile(&self) -> Result<profile::Profile, String> {
        let Some(path) = profile::path() else {
            return Ok(profile::Profile::default());
        };
        let config = profile::load(&path)?;
        match (&self.profile, &config.profile) {
            (Some(name), _) => config
                .profiles
                .get(name)
                .cloned()
                .ok_or_else(|| format!("no profile {name} in {}", path.display())),
            // A gateway named on the command line is not the current profile's: its CA and
            // server name would not fit it.
            (None, _) if self.gateway.is_some() => Ok(profile::Profile::default()),
            (None, Some(name)) => config.profiles.get(name).cloned().ok_or_else(|| {
                format!(
                    "the current profile {name} is not in {} (spate profile use NAME)",
                    path.display()
                )
            }),
            (None, None) => Ok(profile::Profile::default()),
        }
    }

    async fn connect(&self) -> Result<Client, String> {
        let profile = self.profile()?;
        let gateway = self
            .gateway
            .clone()
            .or(profile.gateway)
            .unwrap_or_else(|| GATEWAY_DEFAULT.to_owned());
        let address = gateway
            .to_socket_addrs()
            .map_err(|error| format!("bad --gateway {gateway}: {error}"))?
            .next()
            .ok_or_else(|| format!("--gateway {gateway} has no address"))?;
        let chosen_ca = self.ca_cert.clone().or(profile.ca_cert);
        let ca_cert = chosen_ca
            .clone()
            .unwrap_or_else(|| PathBuf::from(CA_CERT_DEFAULT));
        let host = match gateway.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => gateway.as_str(),
        };
        let server_name = self
            .server_name
            .clone()
            .or(profile.server_name)
            .unwrap_or_else(|| host.to_owned());
        let identity = match (
            self.client_cert.clone().or(profile.client_cert),
            self.client_key.clone().or(profile.client_key),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(spate_client::ClientIdentity { cert, key }),
            (Some(_), None) => return Err("--client-cert needs its --client-key".to_owned()),
            (None, Some(_)) => return Err("--client-key needs its --client-cert".to_owned()),
        };
        Client::connect_as(address, &ca_cert, &server_name, identity.as_ref())
            .await
            .map_err(|error| match error {
                ClientError::Certificate { .. } if chosen_ca.is_none() => format!(
                    "{error} (start Spate with `spate up`, or give the gateway's CA with --ca-cert)"
                ),
                other => describe(&other),
            })
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` go to stdout as clap prints them.
        Err(error) if !error.use_stderr() => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
        // Usage errors in the one error form, then clap's usage lines: exit status 2.
        Err(error) => {
            let rendered = error.render().to_string();
            let rendered = rendered.strip_prefix("error: ").unwrap_or(&rendered);
            #[allow(clippy::print_stderr)]
            {
                eprint!("spate: error: {rendered}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Command::Node(flags) = &cli.command {
        return spate_node::process::run((**flags).clone());
    }
    let default_level = if matches!(cli.command, Command::Up(_)) {
        "info"
    } else {
        "off"
    };
    let level = cli.log_level.as_deref().unwrap_or(default_level);
    if let Err(error) = spate_ops::logging::check_level(level) {
        report(error);
        return ExitCode::from(EXIT_USAGE);
    }
    spate_ops::logging::init(cli.log_format, level);
    if let Command::Top(args) = &cli.command {
        return top::run(args);
    }
    if let Command::Up(args) = &cli.command {
        return up::run(args, cli.gateway.as_deref().unwrap_or(GATEWAY_DEFAULT));
    }
    if let Command::Profile(command) = &cli.command {
        let given = profile::Profile {
            gateway: cli.gateway.clone(),
            ca_cert: cli.ca_cert.clone(),
            server_name: cli.server_name.clone(),
            client_cert: cli.client_cert.clone(),
            client_key: cli.client_key.clone(),
        };
        return match profile::run(command, &given) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                report(message);
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(message) => {
            report(message);
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let client = cli.connect().await?;
        match &cli.command {
            Command::Up(_) | Command::Profile(_) | Command::Node(_) | Command::Top(_) => Ok(()),
            Command::Topic(command) => Ok(topic::run(&client, command).await?),
            Command::Group(command) => Ok(group::run(&client, command).await?),
            Command::Cluster(ClusterCommand::Info) => Ok(topic::cluster_info(&client).await?),
            Command::Cluster(ClusterCommand::Status) => Ok(topic::cluster_status(&client).await?),
            Command::Cluster(command) => match move_of(command) {
                Some(change) => Ok(moves::run(&client, change).await?),
                None => Ok(()),
            },
            Command::Produce(args) => produce::run(&client, args).await,
            Command::Consume(args) => Ok(consume::run(&client, args).await?),
        }
    });
    // Tasks still waiting on the network must not hold the exit up.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(message)) => {
            report(message);
            ExitCode::FAILURE
        }
        Err(Failure::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
    }
}

/// The move a `spate cluster` command asks for.
fn move_of(command: &ClusterCommand) -> Option<spate_proto::PartitionMove> {
    use spate_proto::PartitionMove;
    Some(match command {
        ClusterCommand::Reassign {
            topic,
            partitions,
            replicas,
            throttle,
            cancel,
        } => {
            if *cancel {
                PartitionMove::Cancel {
                    topic: topic.clone(),
                    partitions: partitions.clone(),
                }
            } else {
                PartitionMove::Reassign {
                    topic: topic.clone(),
                    partitions: partitions.clone(),
                    replicas: replicas.clone(),
                    throttle: *throttle,
                }
            }
        }
        ClusterCommand::ElectPreferred { topic, partitions } => PartitionMove::ElectPreferred {
            topic: topic.clone(),
            partitions: partitions.clone(),
        },
        ClusterCommand::Decommission { node, throttle } => PartitionMove::Decommission {
            node: *node,
            throttle: *throttle,
        },
        ClusterCommand::Recommission { node } => PartitionMove::Recommission { node: *node },
        ClusterCommand::Info | ClusterCommand::Status => return None,
    })
}
