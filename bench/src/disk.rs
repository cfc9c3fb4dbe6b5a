//! Baseline: the raw disk. O_DIRECT sequential writes with `tokio-uring` on a file in the data
//! directory, `queue_depth` writes of `block_bytes` in flight per round, with or without an
//! `fdatasync` after each round (what one group commit of the storage engine does), into
//! preallocated space as the node's segments are. Latency: per round, and per `fdatasync`.

use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio_uring::buf::BoundedBuf;

use crate::report::{histogram, micros, params, Latency, Meter, Run};
use crate::scenarios::TIMELINE_INTERVAL;

/// O_DIRECT needs buffers, offsets and sizes aligned to the logical block size.
const ALIGNMENT: usize = 4096;
/// Space preallocated ahead of the writes at a time.
const PREALLOCATE_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Args)]
pub struct DiskArgs {
    /// Bytes per write (rounded up to 4 KiB).
    #[arg(long, default_value = "262144")]
    pub block_bytes: usize,
    /// Writes in flight per round.
    #[arg(long, default_value = "8")]
    pub queue_depth: u32,
    /// `fdatasync` after every round.
    #[arg(long)]
    pub sync: bool,
    #[arg(long, default_value = "10")]
    pub seconds: f64,
}

/// A buffer whose `range` is `size` bytes starting at a 4 KiB-aligned address, built without
/// unsafe code: over-allocate and start at the aligned offset.
fn aligned(size: usize) -> (Vec<u8>, std::ops::Range<usize>) {
    let buffer = vec![b'x'; size + ALIGNMENT];
    let start = buffer.as_ptr().align_offset(ALIGNMENT);
    (buffer, start..start + size)
}

pub fn run(data_dir: &std::path::Path, name: &str, args: &DiskArgs) -> Result<Run, String> {
    let path = data_dir.join("baseline-disk.dat");
    let _ = std::fs::remove_file(&path);
    let block = args.block_bytes.div_ceil(ALIGNMENT).max(1) * ALIGNMENT;
    let depth = args.queue_depth.max(1);
    let mut run = Run::new(
        name,
        "baseline",
        "disk",
        params([
            ("block_bytes", block.to_string()),
            ("queue_depth", depth.to_string()),
            ("fdatasync_per_round", args.sync.to_string()),
            ("seconds", args.seconds.to_string()),
        ]),
    );
    let meter = Meter::start(TIMELINE_INTERVAL);
    let cpu = crate::cpu::CpuTime::now();
    let writer_meter = meter.clone();
    let seconds = args.seconds;
    let sync = args.sync;
    let file_path = path.clone();
    let outcome = tokio_uring::start(async move {
        let file = tokio_uring::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&file_path)
            .await
            .map_err(|error| format!("cannot open {}: {error}", file_path.display()))?;
        let file = Rc::new(file);
        let mut buffers: Vec<(Vec<u8>, std::ops::Range<usize>)> =
            (0..depth).map(|_| aligned(block)).collect();
        let mut rounds = histogram();
        let mut syncs = histogram();
        let mut position = 0u64;
        let mut allocated = 0u64;
        let round_bytes = block as u64 * u64::from(depth);
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(seconds);
        while Instant::now() < deadline {
            if position + round_bytes > allocated {
                file.fallocate(allocated, PREALLOCATE_BYTES, 0)
                    .await
                    .map_err(|error| format!("fallocate: {error}"))?;
                allocated += PREALLOCATE_BYTES;
            }
            let round = Instant::now();
            let mut writes = Vec::with_capacity(depth as usize);
            for index in 0..u64::from(depth) {
                // `depth` buffers exist and every write of the previous round gave its buffer
                // back (a failed write ends the run), so one is always there.
                let (buffer, range) = buffers.pop().expect("one buffer per write in flight");
                let file = file.clone();
                let at = position + index * block as u64;
                writes.push(tokio_uring::spawn(async move {
                    let (result, slice) = file.write_all_at(buffer.slice(range.clone()), at).await;
                    (result, (slice.into_inner(), range))
                }));
            }
            for write in writes {
                let (result, buffer) = write
                    .await
                    .map_err(|error| format!("write task failed: {error}"))?;
                result.map_err(|error| format!("O_DIRECT write: {error}"))?;
                buffers.push(buffer);
            }
            position += round_bytes;
            if sync {
                let synced = Instant::now();
                file.sync_data()
                    .await
                    .map_err(|error| format!("fdatasync: {error}"))?;
                let _ = syncs.record(micros(synced.elapsed()));
            }
            let _ = rounds.record(micros(round.elapsed()));
            writer_meter.add(u64::from(depth), round_bytes);
        }
        let elapsed = started.elapsed();
        Ok::<_, String>((rounds, syncs, elapsed))
    });
    let (operations, bytes, timeline) = meter.stop();
    let _ = std::fs::remove_file(&path);
    crate::cluster::settle_filesystem();
    let (rounds, syncs, elapsed) = outcome?;
    run.finish(elapsed, operations, bytes);
    crate::cpu::CpuTime::since(cpu).record_total(&mut run);
    run.timeline = timeline;
    run.latency.push(Latency::from_histogram("round", &rounds));
    if sync {
        run.latency
            .push(Latency::from_histogram("fdatasync", &syncs));
    }
    Ok(run)
}
