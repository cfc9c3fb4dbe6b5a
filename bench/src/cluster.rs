//! The Spate under test: a node and a gateway (with its Kafka listener) started in this
//! process on a fresh data directory (what `spate up` runs), or an existing gateway given by
//! address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use spate_client::{Client, Setting};

/// Where clients connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: SocketAddr,
    pub cert: PathBuf,
    pub server_name: String,
    /// The topics this benchmark made there (deleted at the end on a gateway the user gave,
    /// unless `--keep`).
    pub made: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Copies of each partition of the topics it creates (0: the node's default).
    pub replication_factor: u16,
}

/// A node and a gateway running in this process; stopped on drop.
#[derive(Debug)]
pub struct Local {
    pub target: Target,
    /// The gateway's Kafka listener (`bootstrap.servers` for the Kafka scenarios).
    pub kafka: Option<SocketAddr>,
    node: Option<spate_node::NodeHandle>,
    gateway: spate_gateway::Gateway,
    /// The gateway runs on a runtime of its own, as the `spate-gateway` process does beside
    /// its clients, with threads named `gateway` so its CPU time is told apart
    /// (`cpu::CpuTime`). Taken by `stop` or `drop`.
    gateway_runtime: Option<tokio::runtime::Runtime>,
}

/// Worker threads of the gateway's runtime (the machine's CPUs, at least two).
fn gateway_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |count| count.get().max(2))
}

impl Drop for Local {
    fn drop(&mut self) {
        // Not blocking: a runtime dropped on an async thread would panic.
        if let Some(runtime) = self.gateway_runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Local {
    /// Starts a node (one shard per core unless `shards`) on `data_dir/node` (emptied first)
    /// and a gateway in front of it, serving QUIC and Kafka on loopback ports of its choice;
    /// both count metrics (served nowhere) unless `metrics` is false, as with
    /// `--metrics-listen none`.
    pub async fn start(
        data_dir: &Path,
        shards: Option<u32>,
        metrics: bool,
    ) -> Result<Local, String> {
        let metrics_listen = (!metrics).then(|| "none".to_owned());
        let node_dir = data_dir.join("node");
        if std::fs::remove_dir_all(&node_dir).is_ok() {
            // A previous run's gigabytes: see `settle_filesystem`.
            settle_filesystem();
        }
        let flags = spate_node::Flags {
            data_dir: Some(node_dir),
            listen: Some("127.0.0.1:0".into()),
            shards,
            metrics_listen: metrics_listen.clone(),
            ..spate_node::Flags::default()
        };
        let config = spate_node::NodeConfig::resolve(flags).map_err(|error| error.to_string())?;
        let node = spate_node::start(config).map_err(|error| error.to_string())?;
        let flags = spate_gateway::Flags {
            listen: Some("127.0.0.1:0".into()),
            node: Some(node.endpoints[0].to_string()),
            dev_cert_dir: Some(data_dir.join("tls")),
            kafka_listen: Some("127.0.0.1:0".into()),
            metrics_listen,
            ..spate_gateway::Flags::default()
        };
        let config =
            spate_gateway::GatewayConfig::resolve(flags).map_err(|error| error.to_string())?;
        let gateway_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(gateway_threads())
            .thread_name("gateway")
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start the gateway's runtime: {error}"))?;
        let started = gateway_runtime
            .spawn(spate_gateway::start(config))
            .await
            .map_err(|error| format!("the gateway's start failed: {error}"))
            .and_then(|started| started.map_err(|error| error.to_string()));
        let gateway = match started {
            Ok(gateway) => gateway,
            Err(error) => {
                // Not blocking: a runtime dropped on an async thread would panic.
                gateway_runtime.shutdown_background();
                return Err(error);
            }
        };
        Ok(Local {
            target: Target {
                address: gateway.local_addr,
                cert: gateway.cert_path.clone(),
                server_name: "localhost".into(),
                made: Default::default(),
                replication_factor: 0,
            },
            kafka: gateway.kafka.as_ref().map(|kafka| kafka.local_addr),
            node: Some(node),
            gateway,
            gateway_runtime: Some(gateway_runtime),
        })
    }

    pub async fn stop(mut self) {
        // Waiting for the gateway's tasks works from this runtime; they run on their own.
        if let Some(kafka) = &self.gateway.kafka {
            kafka.shutdown().await;
        }
        self.gateway.close();
        self.gateway.wait_idle().await;
        if let Some(node) = self.node.take() {
            // Joining the shard threads blocks; do it off the async threads.
            let _ = tokio::task::spawn_blocking(move || node.shutdown()).await;
        }
    }
}

impl Target {
    pub async fn client(&self) -> Result<Client, String> {
        Client::connect(self.address, &self.cert, &self.server_name)
            .await
            .map_err(|error| error.to_string())
    }

    /// Creates `topic` afresh (deleting an old one) with unlimited retention.
    pub async fn fresh_topic(&self, topic: &str, partitions: u32) -> Result<(), String> {
        let client = self.client().await?;
        if client.delete_topic(topic).await.is_ok() {
            settle_filesystem();
        }
        client
            .create_replicated_topic(
                topic,
                partitions,
                self.replication_factor,
                Setting::Unlimited,
                Setting::Unlimited,
            )
            .await
            .map_err(|error| format!("cannot create topic {topic}: {error}"))?;
        if let Ok(mut made) = self.made.lock() {
            made.insert(topic.to_owned());
        }
        Ok(())
    }

    /// Deletes every topic named `bench-…` (the QUIC and the Kafka runs' topics) from the
    /// Spate this benchmark started, and lets the filesystem free their space.
    pub async fn delete_bench_topics(&self) {
        let Ok(client) = self.client().await else {
            return;
        };
        let Ok(topics) = client.list_topics().await else {
            return;
        };
        let mut deleted = false;
        for topic in topics
            .iter()
            .filter(|topic| topic.name.starts_with("bench-"))
        {
            deleted |= client.delete_topic(&topic.name).await.is_ok();
        }
        if deleted {
            settle_filesystem();
        }
    }

    /// Deletes the topics this benchmark made; returns what could not be deleted.
    pub async fn clean_up(&self) -> Vec<String> {
        let made: Vec<String> = self
            .made
            .lock()
            .map(|mut made| std::mem::take(&mut *made).into_iter().collect())
            .unwrap_or_default();
        let mut left = Vec::new();
        let Ok(client) = self.client().await else {
            return made;
        };
        for topic in made {
            if let Err(error) = client.delete_topic(&topic).await {
                left.push(format!("{topic} ({error})"));
            }
        }
        left
    }
}

/// Flushes the filesystem (`sync`) after a run deleted files: on ext4 and others, freeing
/// gigabytes of extents is committed with the next journal transaction, which the next run's
/// first `fdatasync` would otherwise wait for (seen as seconds of zero throughput).
pub fn settle_filesystem() {
    let _ = std::process::Command::new("sync").status();
}
