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

use crate::report::{
    histogram, micros, pair_ratios, params, sides, switch_counting, Latency, Meter, Run, Slice,
};
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

/// How the engine counts its metrics during a run.
#[derive(Debug, Clone, Copy)]
enum Counting {
    /// As `--metrics` says, the whole run.
    AsArgs,
    /// On for a first `slice` (warm-up, not counted), then switched every `slice` in the
    /// order on, off, off, on, on, off, … (or, with `phase`, off, on, on, off, …) so that a
    /// drift of the disk or the machine weighs on both sides alike (`switch_counting`).
    Alternating { slice: Duration, phase: bool },
}

/// What one engine run measured.
struct Driven {
    /// Batch acknowledgement latency with counting off (`[0]`) and on (`[1]`).
    latency: [hdrhistogram::Histogram<u64>; 2],
    errors: u64,
    elapsed: Duration,
    operations: u64,
    bytes: u64,
    timeline: Vec<(f64, f64)>,
    cpu: crate::cpu::CpuTime,
    slices: Vec<Slice>,
}

fn params_of(args: &StorageArgs, batch_bytes: usize) -> std::collections::BTreeMap<String, String> {
    params([
        ("partitions", args.partitions.to_string()),
        ("batch_bytes", batch_bytes.to_string()),
        ("message_size", args.message_size.to_string()),
        ("in_flight", args.in_flight.to_string()),
        ("durability", args.durability.name().to_owned()),
        ("seconds", args.seconds.to_string()),
        ("metrics", args.metrics.to_string()),
    ])
}

pub fn run(data_dir: &std::path::Path, name: &str, args: &StorageArgs) -> Result<Run, String> {
    let (driven, batch_bytes) = drive(data_dir, args, Counting::AsArgs)?;
    let mut run = Run::new(name, "spate", "storage", params_of(args, batch_bytes));
    run.finish(driven.elapsed, driven.operations, driven.bytes);
    driven.cpu.record_total(&mut run);
    run.errors = driven.errors;
    run.timeline = driven.timeline;
    let latency = &driven.latency[usize::from(args.metrics)];
    run.latency
        .push(Latency::from_histogram("batch ack", latency));
    Ok(run)
}

/// `runs` engine runs of `args.seconds` each (each from an empty directory: a long run
/// would fill the disk), whose counting of metrics is switched on and off every `slice`
/// (see `Counting::Alternating`). Returns the two sides as runs named `{name}-on` and
/// `{name}-off` (bytes, time and CPU time of their slices; the timeline of the first run
/// goes with `-on`), the `-on` run carrying the ratio of each adjacent
/// on/off pair of slices in its figures (`pair_ratio_median`, `pair_ratio_min`,
/// `pair_ratio_max`, `pairs`).
pub fn alternating(
    data_dir: &std::path::Path,
    name: &str,
    args: &StorageArgs,
    slice: Duration,
    runs: u32,
) -> Result<(Run, Run), String> {
    let args = StorageArgs {
        metrics: true,
        ..args.clone()
    };
    let mut driven: Option<Driven> = None;
    let mut batch_bytes = 0;
    // The ratio of each pair of adjacent slices of a run (on, off or off, on).
    let mut ratios = Vec::new();
    for run in 0..runs.max(1) {
        let phase = run % 2 == 1;
        let (more, bytes) = drive(data_dir, &args, Counting::Alternating { slice, phase })?;
        if more.errors > 0 {
            // A fenced partition (a full disk) makes slices of nothing: no figure at all is
            // better than a wrong one.
            return Err(format!(
                "the storage run met {} failed appends (see the log above)",
                more.errors
            ));
        }
        batch_bytes = bytes;
        ratios.extend(pair_ratios(&more.slices));
        driven = Some(match driven {
            None => more,
            Some(mut all) => {
                for (side, histogram) in all.latency.iter_mut().zip(&more.latency) {
                    let _ = side.add(histogram);
                }
                all.errors += more.errors;
                all.slices.extend(more.slices);
                all
            }
        });
    }
    let Some(driven) = driven else {
        return Err("no storage run".to_owned());
    };
    let mut params = params_of(&args, batch_bytes);
    params.insert("slice_seconds".to_owned(), slice.as_secs_f64().to_string());
    let (mut on, mut off) = sides(name, "storage", &params, &driven.slices, &ratios);
    for (run, latency) in [
        (&mut off, &driven.latency[0]),
        (&mut on, &driven.latency[1]),
    ] {
        run.latency
            .push(Latency::from_histogram("batch ack", latency));
    }
    on.errors = driven.errors;
    on.timeline = driven.timeline;
    Ok((on, off))
}

/// Runs the engine as `args` say; returns what it measured and the batch's size.
fn drive(
    data_dir: &std::path::Path,
    args: &StorageArgs,
    counting: Counting,
) -> Result<(Driven, usize), String> {
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
    let batch_bytes = batch.len();
    let records = u64::from(
        spate_format::BatchRef::parse(&batch)
            .map_err(|error| error.to_string())?
            .record_count(),
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
            let latency = Rc::new(RefCell::new([histogram(), histogram()]));
            let errors = Rc::new(RefCell::new(0u64));
            let started = Instant::now();
            let deadline = started + Duration::from_secs_f64(args.seconds);
            let controller =
                glommio::spawn_local(shard_counting(counting, task_meter.clone(), deadline));
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
                                    let side = usize::from(spate_node::metrics::enabled());
                                    let _ =
                                        latency.borrow_mut()[side].record(micros(start.elapsed()));
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
            let slices = controller.await;
            let elapsed = started.elapsed();
            engine.close().await;
            let latency = latency.borrow().clone();
            let errors = *errors.borrow();
            Ok((latency, errors, elapsed, slices))
        })
        .map_err(|error| format!("cannot start the glommio executor: {error}"))?;
    let (latency, errors, elapsed, slices) = executor
        .join()
        .map_err(|error| format!("the storage executor failed: {error}"))??;
    let (operations, bytes, timeline) = meter.stop();
    let cpu = crate::cpu::CpuTime::since(cpu);
    let _ = std::fs::remove_dir_all(&dir);
    crate::cluster::settle_filesystem();
    Ok((
        Driven {
            latency,
            errors,
            elapsed,
            operations,
            bytes,
            timeline,
            cpu,
            slices,
        },
        batch_bytes,
    ))
}

/// Switches the shard's counting as `counting` says until `deadline` (`switch_counting`,
/// through `spate_node::metrics::pause`); returns the slices it measured (none for
/// `Counting::AsArgs`). Runs on the engine's executor.
async fn shard_counting(counting: Counting, meter: Meter, deadline: Instant) -> Vec<Slice> {
    let Counting::Alternating { slice, phase } = counting else {
        return Vec::new();
    };
    switch_counting(
        &meter,
        slice,
        deadline,
        phase,
        |counting| spate_node::metrics::pause(!counting),
        glommio::timer::sleep,
    )
    .await
}
