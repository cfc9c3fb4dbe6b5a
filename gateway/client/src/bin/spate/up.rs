//! `spate up`: a node and a gateway in this process, with default settings (and automatic
//! topic creation, as a development mode), a data directory and the development certificate,
//! until Ctrl-C or SIGTERM; then the gateway closes and the node finishes its in-flight syncs
//! before the process exits. With `--nodes N`, a cluster on this machine instead: an etcd and
//! N member processes (`cluster_up`), the gateway in this process in front of them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Data directory of the node; the development certificate goes to its `tls/`.
    #[arg(long, value_name = "DIR", default_value = crate::DATA_DIR_DEFAULT)]
    pub(crate) data_dir: PathBuf,
    /// Address of the node's first shard (port 0: every shard picks a free port). Only the
    /// gateway needs it.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    pub(crate) node_listen: String,
    /// Number of node shards. [default: one per available core]
    #[arg(long, value_name = "N")]
    pub(crate) shards: Option<u32>,
    /// TCP address for Kafka clients (kcat, librdkafka, kafka-python, ...).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub(crate) kafka_listen: String,
    /// The address Kafka clients are told to connect to, when it differs from
    /// --kafka-listen (containers, NAT). [default: the listen address]
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) kafka_advertise: Option<String>,
    /// Where the node serves Prometheus metrics, /healthz and /readyz (`none`: off); with
    /// --nodes, node I at this port + 2 × (I − 1) (port 0: a free port).
    #[arg(
        long,
        env = "SPATE_METRICS_LISTEN",
        value_name = "HOST:PORT|none",
        default_value = "127.0.0.1:9644"
    )]
    pub(crate) metrics_listen: String,
    /// Where the gateway serves Prometheus metrics, /healthz and /readyz (`none`: off); with
    /// --nodes, node I's gateway at this port + 2 × (I − 1).
    #[arg(
        long,
        env = "SPATE_GATEWAY_METRICS_LISTEN",
        value_name = "HOST:PORT|none",
        default_value = "127.0.0.1:9645"
    )]
    pub(crate) gateway_metrics_listen: String,
    /// Serve no Kafka listener.
    #[arg(long, conflicts_with_all = ["kafka_listen", "kafka_advertise"])]
    pub(crate) no_kafka: bool,
    /// Run a cluster of this many nodes on this machine: an etcd (Debian's `etcd-server`)
    /// and one process per node, each with its data in DIR/node-I, topics replicated on up
    /// to 3 of them; needs a spate built with `--features cluster`. [default: 1, a single
    /// node in this process]
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub(crate) nodes: u32,
    /// With --nodes: the endpoints of a running etcd (comma-separated URLs) instead of one
    /// started here (in DIR/etcd).
    #[arg(long, value_name = "URLS")]
    pub(crate) etcd: Option<String>,
    /// With --nodes: a node whose etcd lease is not renewed for this long is dead to the
    /// cluster, and its partitions move to others (the failover time after `kill -9`), in
    /// ms. [default: 10000]
    #[arg(long, value_name = "MS")]
    pub(crate) session_timeout_ms: Option<u64>,
}

fn failed(message: impl std::fmt::Display) -> ExitCode {
    crate::report(message);
    ExitCode::FAILURE
}

pub fn run(args: &UpArgs, gateway_listen: &str) -> ExitCode {
    if args.nodes > 1 || args.etcd.is_some() {
        return crate::cluster_up::run(args, gateway_listen);
    }
    let flags = spate_node::Flags {
        data_dir: Some(args.data_dir.clone()),
        listen: Some(args.node_listen.clone()),
        shards: args.shards,
        // Development mode: a Kafka client naming a new topic creates it (as kcat -P does).
        auto_create_topics: Some(true),
        metrics_listen: Some(args.metrics_listen.clone()),
        ..spate_node::Flags::default()
    };
    let config = match spate_node::NodeConfig::resolve(flags) {
        Ok(config) => config,
        Err(error) => return failed(error),
    };
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(message) => return failed(message),
    };
    // The node's metrics listener first: `/readyz` answers 503 while it recovers.
    let (metrics, listener) = match spate_node::metrics::serve(&config) {
        Ok(Some((metrics, listener))) => (Some(metrics), Some(listener)),
        Ok(None) => (None, None),
        Err(error) => return failed(error),
    };
    let node = match spate_node::start_observed(config, metrics) {
        Ok(node) => node,
        Err(error) => return failed(error),
    };
    let shards: Vec<String> = node.endpoints.iter().map(ToString::to_string).collect();
    let mut about = vec![format!(
        "node shards on {}; data in {}",
        shards.join(", "),
        args.data_dir.display()
    )];
    if let Some(listener) = &listener {
        about.push(format!("node metrics listening on {}", listener.address));
    }
    let outcome = runtime.block_on(async {
        let first = node
            .endpoints
            .first()
            .ok_or_else(|| "the node started no shard".to_owned())?;
        let gateway = Gateway {
            listen: gateway_listen.to_owned(),
            node: first.to_string(),
            kafka: (!args.no_kafka)
                .then(|| (args.kafka_listen.clone(), args.kafka_advertise.clone())),
            node_id: None,
            metrics_listen: args.gateway_metrics_listen.clone(),
        };
        serve(args, vec![gateway], &about, None).await
    });
    tracing::info!("stopping the node: finishing in-flight syncs");
    node.shutdown();
    drop(listener);
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => failed(message),
    }
}

/// A gateway `serve` starts: QUIC on `listen`, in front of the node shards `node` (its own
/// first, comma-separated), Kafka on `kafka` (listen, advertised) unless `None`; `node_id`:
/// the cluster member it fronts.
pub(crate) struct Gateway {
    pub(crate) listen: String,
    pub(crate) node: String,
    pub(crate) kafka: Option<(String, Option<String>)>,
    pub(crate) node_id: Option<u32>,
    /// Where its metrics are served (`none`: off).
    pub(crate) metrics_listen: String,
}

/// Runs `gateways` (the first is the one `spate` commands use) until Ctrl-C or SIGTERM,
/// printing the lines scripts wait for (`about` after the listeners); with `members`, "spate
/// is up" only once that many nodes are registered in the cluster.
pub(crate) async fn serve(
    args: &UpArgs,
    gateways: Vec<Gateway>,
    about: &[String],
    members: Option<usize>,
) -> Result<(), String> {
    let mut started = Vec::with_capacity(gateways.len());
    let mut metrics_listeners = Vec::new();
    for gateway in &gateways {
        let (kafka_listen, kafka_advertise) = match &gateway.kafka {
            Some((listen, advertise)) => (Some(listen.clone()), advertise.clone()),
            None => (None, None),
        };
        let flags = spate_gateway::Flags {
            listen: Some(gateway.listen.clone()),
            node: Some(gateway.node.clone()),
            dev_cert_dir: Some(args.data_dir.join("tls")),
            kafka_listen,
            kafka_advertise,
            metrics_listen: Some(gateway.metrics_listen.clone()),
            ..spate_gateway::Flags::default()
        };
        let config =
            spate_gateway::GatewayConfig::resolve(flags).map_err(|error| error.to_string())?;
        let running = spate_gateway::start(config)
            .await
            .map_err(|error| error.to_string())?;
        if let Some(metrics) = &running.metrics {
            let listener =
                spate_ops::serve(&gateway.metrics_listen, metrics.clone()).map_err(|error| {
                    format!("{error} (--gateway-metrics-listen; `none` turns metrics off)")
                })?;
            metrics_listeners.push((listener, gateway.node_id));
        }
        started.push((running, gateway.node_id));
    }
    let Some((gateway, _)) = started.first() else {
        return Err("no gateway to start".to_owned());
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|error| format!("cannot install a SIGTERM handler: {error}"))?;
    // Later commands find this Spate from any directory (before "spate is up": a script
    // that waits for that line can rely on it).
    match crate::profile::record_local(gateway.local_addr, &gateway.cert_path) {
        Ok(Some(previous)) => crate::notice(format!(
            "the current profile is now `local` (this Spate); it was `{previous}`: \
             `spate profile use {previous}` goes back"
        )),
        Ok(None) => {}
        Err(error) => tracing::warn!("cannot record the profile `local`: {error}"),
    }
    if let Some(expected) = members {
        wait_for_members(gateway, expected).await?;
    }
    let certificate = gateway.cert_path.display();
    // The first line is the same contract as spate-gateway's.
    spate_ops::announce(&format!(
        "gateway listening on {} (certificate {certificate})",
        gateway.local_addr
    ));
    if let Some(kafka) = &gateway.kafka {
        spate_ops::announce(&format!(
            "kafka listening on {} (advertised as {})",
            kafka.local_addr, kafka.advertised
        ));
    }
    for (other, node_id) in started.iter().skip(1) {
        if let (Some(kafka), Some(node_id)) = (&other.kafka, node_id) {
            spate_ops::announce(&format!(
                "kafka for node {node_id} listening on {} (advertised as {})",
                kafka.local_addr, kafka.advertised
            ));
        }
    }
    for (listener, node_id) in &metrics_listeners {
        spate_ops::announce(&match node_id {
            Some(node_id) => format!(
                "gateway metrics for node {node_id} listening on {}",
                listener.address
            ),
            None => format!("gateway metrics listening on {}", listener.address),
        });
    }
    for line in about {
        spate_ops::announce(line);
    }
    if gateway.cert_path != std::path::Path::new(crate::CA_CERT_DEFAULT) {
        spate_ops::announce(&format!(
            "other spate commands need: --ca-cert {certificate} (or SPATE_CA_CERT)"
        ));
    }
    spate_ops::announce("spate is up; Ctrl-C stops it");
    spate_ops::notify::ready();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down the gateway");
    spate_ops::notify::stopping();
    // Bounded: clients stalled mid-frame must not hold `spate up` open.
    for (gateway, _) in started {
        gateway.shutdown().await;
    }
    drop(metrics_listeners);
    Ok(())
}

/// How long `spate up --nodes N` waits for its nodes to register in the cluster.
const MEMBERS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until the cluster behind the gateway has `expected` members registered (so topics
/// created right after "spate is up" are placed over all of them).
async fn wait_for_members(gateway: &spate_gateway::Gateway, expected: usize) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + MEMBERS_WAIT;
    let mut seen = 0;
    loop {
        if let Ok(client) =
            spate_client::Client::connect(gateway.local_addr, &gateway.cert_path, "localhost").await
        {
            if let Ok(cluster) = client.describe_cluster().await {
                seen = cluster.members.len();
                if seen >= expected && cluster.controller.is_some() {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{seen} of {expected} nodes registered in the cluster within {}s (see their logs)",
                MEMBERS_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
