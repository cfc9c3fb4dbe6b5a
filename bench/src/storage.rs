//! `storage`: the node's storage engine alone — one glommio shard appending batches through
//! `spate_node::engine::Engine` (validation, `PartitionLog`, O_DIRECT `DmaStorage`, group
//! commit, acknowledgement by durability level) to real files, no network. Latency is per
//! batch, from the append call to its acknowledgement.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use spate_format::{BatchBuilder, Record};

use crate::report::{histogram, micros, params, Latency, Meter, Run};
use crate::scenarios::{DurabilityArg, TIMELINE_INTERVAL};

#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    #[arg(long, default_value = "1")]
    pub partitions: u32,
    /// Bytes per batch (records of `--message-size` until the batch is full).
    #[arg(long, default_value = "262144")]
    pub batch_bytes: u32,
    #[arg(long, default_value = "1024")]
    pub message_size: usize,
    /// Batches in flight per partition (appenders waiting for their acknowledgement).
    #[arg(long, default_value = "8")]
    pub in_flight: u32,
    #[arg(long, value_enum, default_value = "fsync")]
    pub durability: DurabilityArg,
    #[arg(long, default_value = "10")]
    pub seconds: f64,
    /// Count the node's metrics, as a node does unless `--metrics-listen none`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub metrics: bool,
}

/// A batch of `message_size` records filling about `batch_bytes`; returns it and its value
/// bytes.
fn batch(batch_bytes: u32, message_size: usize) -> Result<(Bytes, u64), String> {
    let value = vec![b'x'; message_size];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(0));
    let mut builder = BatchBuilder::new();
    let mut payload = 0u64;
    loop {
        let record = Record {
            timestamp: now,
            value: Some(&value),
            ..Record::default()
        };
        let fits = builder
            .encoded_size(&record)
            .is_ok_and(|size| builder.len() + size <= batch_bytes);
        if !fits {
            break;
        }
        builder.push(&record).map_err(|error| error.to_string())?;
        payload += message_size as u64;
    }
    if builder.is_empty() {
        return Err(format!(
            "--message-size {message_size} does not fit in --batch-bytes {batch_bytes}"
        ));
    }
    let bytes = builder.finish().map_err(|error| error.to_string())?;
    Ok((Bytes::from(bytes), payload))
}

pub fn run(data_dir: &std::path::Path, name: &str, args: &StorageArgs) -> Result<Run, String> {
    let dir = data_dir.join("storage");
    let _ = std::fs::remove_dir_all(&dir);
    let flags = spate_node::Flags {
        data_dir: Some(dir.clone()),
        listen: Some("127.0.0.1:0".into()),
        shards: Some(1),
        ..spate_node::Flags::default()
    };
    let config = spate_node::NodeConfig::resolve(flags).map_err(|error| error.to_string())?;
    std::fs::create_dir_all(dir.join("topics")).map_err(|error| error.to_string())?;
    spate_node::storage::probe_direct_io(&dir)
        .map_err(|error| format!("{}: no O_DIRECT: {error}", dir.display()))?;
    let (batch, payload) = batch(args.batch_bytes, args.message_size)?;
    let records = u64::from(
        spate_format::BatchRef::parse(&batch)
            .map_err(|error| error.to_string())?
            .record_count(),
    );
    let mut run = Run::new(
        name,
        "spate",
        "storage",
        params([
            ("partitions", args.partitions.to_string()),
            ("batch_bytes", batch.len().to_string()),
            ("message_size", args.message_size.to_string()),
            ("in_flight", args.in_flight.to_string()),
            ("durability", args.durability.name().to_owned()),
            ("seconds", args.seconds.to_string()),
            ("metrics", args.metrics.to_string()),
        ]),
    );
    let args = args.clone();
    let meter = Meter::start(TIMELINE_INTERVAL);
    let cpu = crate::cpu::CpuTime::now();
    let task_meter = meter.clone();
    let io_memory = config.io_memory;
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("bench-storage")
        .io_memory(io_memory)
        .spawn(move || async move {
            if args.metrics {
                // The shard's counters, as a node's shard installs them.
                spate_node::metrics::install(std::sync::Arc::new(
                    spate_node::metrics::ShardMetrics::new(0),
                ));
            }
            let engine =
                match spate_node::engine::Engine::open(config, "bench", args.partitions).await {
                    Ok(engine) => Rc::new(engine),
                    Err(error) => return Err(format!("cannot open the engine: {error}")),
                };
            let latency = Rc::new(RefCell::new(histogram()));
            let errors = Rc::new(RefCell::new(0u64));
            let started = Instant::now();
            let deadline = started + Duration::from_secs_f64(args.seconds);
            let mut tasks = Vec::new();
            for partition in 0..args.partitions {
                for _ in 0..args.in_flight.max(1) {
                    let engine = engine.clone();
                    let latency = latency.clone();
                    let errors = errors.clone();
                    let batch = batch.clone();
                    let meter = task_meter.clone();
                    let durability = args.durability.level();
                    tasks.push(glommio::spawn_local(async move {
                        while Instant::now() < deadline {
                            let start = Instant::now();
                            match engine.append(partition, durability, batch.clone()).await {
                                Ok(_) => {
                                    let _ = latency.borrow_mut().record(micros(start.elapsed()));
                                    meter.add(records, payload);
                                }
                                Err(_) => *errors.borrow_mut() += 1,
                            }
                        }
                    }));
                }
            }
            for task in tasks {
                task.await;
            }
            let elapsed = started.elapsed();
            engine.close().await;
            let latency = latency.borrow().clone();
            let errors = *errors.borrow();
            Ok((latency, errors, elapsed))
        })
        .map_err(|error| format!("cannot start the glommio executor: {error}"))?;
    let (latency, errors, elapsed) = executor
        .join()
        .map_err(|error| format!("the storage executor failed: {error}"))??;
    let (operations, bytes, timeline) = meter.stop();
    run.finish(elapsed, operations, bytes);
    crate::cpu::CpuTime::since(cpu).record_total(&mut run);
    run.errors = errors;
    run.timeline = timeline;
    run.latency
        .push(Latency::from_histogram("batch ack", &latency));
    let _ = std::fs::remove_dir_all(&dir);
    crate::cluster::settle_filesystem();
    Ok(run)
}
