//! The node's metrics (docs/operations.md, "Metrics"): what each shard counts, how a scrape
//! reads it, and `/readyz`.
//!
//! Each shard owns one [`ShardMetrics`], installed in its thread ([`install`]) and written
//! only by that thread: counters and histograms on the hot path are single-writer cells
//! (`spate_ops::cells`), a few instructions each with no lock and no cache line shared with
//! another shard. What is a state rather than an event (watermarks, sizes, fences, unsynced
//! bytes, connections, groups) is sampled by each shard once per [`SAMPLE_INTERVAL`] into an
//! immutable [`ShardSample`] that the scrape picks up; the shard holds the sample's lock only
//! to swap a pointer. Scrapes run on the metrics thread (`spate_ops::endpoint`) and add the
//! shards up there. Without metrics (`--metrics-listen none`) nothing is installed and
//! nothing is counted.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::DescriptorEncoder;
use spate_ops::cells::{BYTES_BOUNDS, COUNT_BOUNDS, DURATION_BOUNDS};
use spate_ops::{counter, gauge, histogram, Count, Exposition, Histogram, HistogramSnapshot};
use spate_ops::{Labels, Level, Readiness};
use spate_proto::{ApiKey, ErrorCode};

/// How often each shard samples its states (watermarks, sizes, fences, groups): a scrape
/// sees them at most this old.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Partitions a node exposes one series each for; with more, the partition families are
/// summed per topic (as `--metrics-per-topic` asks), so a scrape stays bounded: 10,000
/// partitions make about 100,000 series, what one Prometheus server takes per target
/// comfortably.
pub const PARTITION_SERIES_MAX: usize = 10_000;

/// Committed offsets exposed one series each (group, topic, partition); beyond, lag is summed
/// per group and topic.
pub const GROUP_SERIES_MAX: usize = 10_000;

/// Request kinds counted: raw api keys 0 (unknown) to 17.
const API_SLOTS: usize = 18;
/// Outcomes counted per kind: 0 is success, 1..=127 an error code (a larger one counts in
/// 127's slot, named `other`).
const CODE_SLOTS: usize = 128;

/// One shard's counters and its latest sample.
#[derive(Debug)]
pub struct ShardMetrics {
    pub shard: u16,
    /// Bytes written to the device per write round (one sync of a partition).
    pub write_round_bytes: Histogram,
    /// Records made durable per write round.
    pub write_round_records: Histogram,
    /// From a round's first write to its sync's completion.
    pub write_round_seconds: Histogram,
    pub fdatasync_seconds: Histogram,
    /// Waits of a connection or an appender for the unsynced-bytes budget or a partition's
    /// write buffer (back-pressure).
    pub backpressure_waits: Count,
    pub connections_accepted: Count,
    pub connections_refused: Count,
    /// `API_SLOTS` × `CODE_SLOTS` answers.
    requests: Box<[Count]>,
    /// Partitions recovered (opened from disk), torn tails truncated, corruptions found.
    pub recovered_partitions: Count,
    pub torn_tails: Count,
    pub corruptions: Count,
    /// How long the shard's start-up recovery took, in microseconds.
    pub recovery_micros: Level,
    /// Set once the shard recovered its partitions and serves.
    pub ready: AtomicBool,
    sample: Mutex<Arc<ShardSample>>,
}

impl ShardMetrics {
    pub fn new(shard: u16) -> Self {
        ShardMetrics {
            shard,
            write_round_bytes: Histogram::new(BYTES_BOUNDS),
            write_round_records: Histogram::new(COUNT_BOUNDS),
            write_round_seconds: Histogram::new(DURATION_BOUNDS),
            fdatasync_seconds: Histogram::new(DURATION_BOUNDS),
            backpressure_waits: Count::default(),
            connections_accepted: Count::default(),
            connections_refused: Count::default(),
            requests: (0..API_SLOTS * CODE_SLOTS)
                .map(|_| Count::default())
                .collect(),
            recovered_partitions: Count::default(),
            torn_tails: Count::default(),
            corruptions: Count::default(),
            recovery_micros: Level::default(),
            ready: AtomicBool::new(false),
            sample: Mutex::new(Arc::new(ShardSample::default())),
        }
    }

    /// Counts one answer to a request of raw api key `api_key`: `error` is its error code.
    pub fn count_answer(&self, api_key: u16, error: Option<ErrorCode>) {
        let api = usize::from(api_key).min(API_SLOTS - 1);
        let code = error.map_or(0, |code| {
            usize::from(code.to_u16()).clamp(1, CODE_SLOTS - 1)
        });
        self.requests[api * CODE_SLOTS + code].add(1);
    }

    /// Publishes the shard's latest sample.
    pub fn publish(&self, sample: ShardSample) {
        let sample = Arc::new(sample);
        // A poisoned lock means a scrape panicked (a bug, and the process aborts on panics).
        if let Ok(mut slot) = self.sample.lock() {
            *slot = sample;
        }
    }

    fn latest(&self) -> Arc<ShardSample> {
        self.sample
            .lock()
            .map(|slot| slot.clone())
            .unwrap_or_default()
    }
}

/// A shard's states at one moment.
#[derive(Debug, Default)]
pub struct ShardSample {
    pub unsynced_bytes: u64,
    pub unsynced_bytes_limit: u64,
    /// Long-poll fetches parked on the shard's partitions.
    pub fetch_waiters: u64,
    /// Segment and index files the shard's partitions hold open.
    pub open_files: u64,
    pub connections: u64,
    pub partitions: Vec<PartitionSample>,
    pub groups: Vec<GroupSample>,
}

/// One partition replica's states.
#[derive(Debug, Clone)]
pub struct PartitionSample {
    pub topic: String,
    pub partition: u32,
    pub high_watermark: u64,
    pub log_start: u64,
    pub log_end: u64,
    pub size_bytes: u64,
    pub segments: u64,
    /// Why the partition is fenced, if it is.
    pub fenced: Option<String>,
    /// Idempotent producers whose state the partition keeps.
    pub producers: u64,
    /// Records and bytes appended by produce requests since the partition opened.
    pub appended_records: u64,
    pub appended_bytes: u64,
    /// Record bytes answered to consumers' fetches since the partition opened.
    pub fetched_bytes: u64,
}

/// One consumer group the shard coordinates.
#[derive(Debug, Clone)]
pub struct GroupSample {
    pub group: String,
    pub members: u64,
    /// The generation: each completed rebalance adds one.
    pub generation: i64,
    /// Committed offsets: (topic, partition, offset).
    pub committed: Vec<(String, u32, i64)>,
}

thread_local! {
    /// The metrics of the shard running on this thread, if metrics are on.
    static SHARD: RefCell<Option<Arc<ShardMetrics>>> = const { RefCell::new(None) };
}

/// Makes `metrics` the current thread's shard metrics (called first thing in a shard).
pub fn install(metrics: Arc<ShardMetrics>) {
    SHARD.with(|slot| *slot.borrow_mut() = Some(metrics));
}

/// Counting paused in every shard of the process, metrics installed or not: what the
/// benchmark switches to measure what counting costs (`spate-bench metrics-cost`); never set
/// by a node. Only read on the data path (a cache line no shard writes).
static PAUSED: AtomicBool = AtomicBool::new(false);

/// Pauses (`true`) or resumes counting in every shard of this process.
pub fn pause(paused: bool) {
    PAUSED.store(paused, Ordering::Relaxed);
}

fn paused() -> bool {
    PAUSED.load(Ordering::Relaxed)
}

/// Runs `f` on this thread's shard metrics; nothing when metrics are off or paused.
#[inline]
pub fn with(f: impl FnOnce(&ShardMetrics)) {
    if paused() {
        return;
    }
    SHARD.with(|slot| {
        if let Some(metrics) = slot.borrow().as_ref() {
            f(metrics);
        }
    });
}

/// Whether this thread's shard counts metrics (installed, and not paused).
pub fn enabled() -> bool {
    !paused() && SHARD.with(|slot| slot.borrow().is_some())
}

/// The metrics a node started with `config` counts, served on its metrics listener, or
/// `None` with `--metrics-listen none`. Made before the node starts, so `/readyz` answers
/// (503) while its shards recover; the message names the setting when the address cannot be
/// served.
pub fn serve(
    config: &crate::NodeConfig,
) -> Result<Option<(Arc<NodeMetrics>, spate_ops::MetricsListener)>, String> {
    if !config.metrics_on() {
        return Ok(None);
    }
    let metrics = NodeMetrics::new(
        config.shards,
        config.data_dir.clone(),
        config.metrics_per_topic,
    );
    let listener = spate_ops::serve(&config.metrics_listen, metrics.clone())
        .map_err(|error| format!("{error} (--metrics-listen; `none` turns metrics off)"))?;
    tracing::info!(address = %listener.address, "serving metrics, /healthz and /readyz");
    Ok(Some((metrics, listener)))
}

/// Everything a node exposes: every shard's metrics and the data directory's filesystem.
#[derive(Debug)]
pub struct NodeMetrics {
    shards: Vec<Arc<ShardMetrics>>,
    data_dir: PathBuf,
    per_topic: bool,
    /// Set once the automatic per-topic summing was logged.
    summing_logged: AtomicBool,
}

impl NodeMetrics {
    /// Metrics for a node of `shards` shards over `data_dir`; partition families summed per
    /// topic when `per_topic`.
    pub fn new(shards: u32, data_dir: PathBuf, per_topic: bool) -> Arc<Self> {
        Arc::new(NodeMetrics {
            shards: (0..shards)
                .map(|shard| Arc::new(ShardMetrics::new(u16::try_from(shard).unwrap_or(u16::MAX))))
                .collect(),
            data_dir,
            per_topic,
            summing_logged: AtomicBool::new(false),
        })
    }

    /// Shard `index`'s metrics.
    pub fn shard(&self, index: usize) -> Option<Arc<ShardMetrics>> {
        self.shards.get(index).cloned()
    }
}

/// A family: its name, its help, and the cell of each shard it reads.
type Cell<T, C> = (&'static str, &'static str, fn(&T) -> &C);
/// A family: its name, its help, and the value it reads from each sample row.
type Value<T> = (&'static str, &'static str, fn(&T) -> u64);

fn shard_label(shard: u16) -> Labels {
    vec![("shard", shard.to_string())]
}

/// The label of an outcome slot: an error's name, or `other` for the last slot.
pub(crate) fn error_name(code: usize, slots: usize) -> String {
    if code == slots - 1 {
        return "other".into();
    }
    ErrorCode::from_u16(u16::try_from(code).unwrap_or(u16::MAX)).label()
}

fn api_name(api: usize) -> String {
    ApiKey::label_of(u16::try_from(api).unwrap_or(u16::MAX)).to_owned()
}

#[allow(clippy::cast_precision_loss)]
fn float(value: u64) -> f64 {
    value as f64
}

impl NodeMetrics {
    fn encode_shards(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        samples: &[Arc<ShardSample>],
    ) -> fmt::Result {
        let histograms: [Cell<ShardMetrics, Histogram>; 4] = [
            (
                "spate_write_round_bytes",
                "Bytes written to the device per write round (one partition's writes up to its sync).",
                |shard| &shard.write_round_bytes,
            ),
            (
                "spate_write_round_records",
                "Records made durable per write round.",
                |shard| &shard.write_round_records,
            ),
            (
                "spate_write_round_duration_seconds",
                "From a write round's first write to the completion of its fdatasync.",
                |shard| &shard.write_round_seconds,
            ),
            (
                "spate_fdatasync_duration_seconds",
                "Duration of one fdatasync of a segment file.",
                |shard| &shard.fdatasync_seconds,
            ),
        ];
        for (name, help, cell) in histograms {
            let series: Vec<(Labels, HistogramSnapshot)> = self
                .shards
                .iter()
                .map(|shard| (shard_label(shard.shard), cell(shard).snapshot()))
                .collect();
            histogram(encoder, name, help, &series)?;
        }
        let counters: [Cell<ShardMetrics, Count>; 6] = [
            (
                "spate_backpressure_waits_total",
                "Times a connection or appender waited for the unsynced-bytes budget or a partition's write buffer.",
                |shard| &shard.backpressure_waits,
            ),
            (
                "spate_node_connections_accepted_total",
                "Connections accepted by the shard.",
                |shard| &shard.connections_accepted,
            ),
            (
                "spate_node_connections_refused_total",
                "Connections refused at the shard's connection limit.",
                |shard| &shard.connections_refused,
            ),
            (
                "spate_recovery_partitions_total",
                "Partitions recovered from disk (at start, after a move, or after a fence).",
                |shard| &shard.recovered_partitions,
            ),
            (
                "spate_recovery_torn_tails_total",
                "Torn tails (never acknowledged) truncated by recovery.",
                |shard| &shard.torn_tails,
            ),
            (
                "spate_recovery_corruptions_total",
                "Corruptions of acknowledged data found by recovery (each fences its partition).",
                |shard| &shard.corruptions,
            ),
        ];
        for (name, help, cell) in counters {
            let series: Vec<(Labels, u64)> = self
                .shards
                .iter()
                .map(|shard| (shard_label(shard.shard), cell(shard).get()))
                .collect();
            counter(encoder, name, help, &series)?;
        }
        let recovery: Vec<(Labels, f64)> = self
            .shards
            .iter()
            .map(|shard| {
                #[allow(clippy::cast_precision_loss)]
                let seconds = shard.recovery_micros.get() as f64 / 1e6;
                (shard_label(shard.shard), seconds)
            })
            .collect();
        gauge(
            encoder,
            "spate_recovery_duration_seconds",
            "How long the shard's start-up recovery took.",
            &recovery,
        )?;
        let sampled: [Value<ShardSample>; 5] = [
            (
                "spate_shard_unsynced_bytes",
                "Bytes appended but not yet durable on the shard.",
                |sample| sample.unsynced_bytes,
            ),
            (
                "spate_shard_unsynced_bytes_limit",
                "The shard's unsynced-bytes budget (--unflushed-bytes); at it, connections wait.",
                |sample| sample.unsynced_bytes_limit,
            ),
            (
                "spate_fetch_waiters",
                "Long-poll fetches parked on the shard's partitions.",
                |sample| sample.fetch_waiters,
            ),
            (
                "spate_node_connections",
                "Open connections of the shard.",
                |sample| sample.connections,
            ),
            (
                "spate_shard_open_files",
                "Segment files the shard's partitions hold open (process_open_fds counts every descriptor).",
                |sample| sample.open_files,
            ),
        ];
        for (name, help, value) in sampled {
            let series: Vec<(Labels, f64)> = self
                .shards
                .iter()
                .zip(samples)
                .map(|(shard, sample)| (shard_label(shard.shard), float(value(sample))))
                .collect();
            gauge(encoder, name, help, &series)?;
        }
        let mut requests = Vec::new();
        for api in 0..API_SLOTS {
            for code in 0..CODE_SLOTS {
                let total: u64 = self
                    .shards
                    .iter()
                    .map(|shard| shard.requests[api * CODE_SLOTS + code].get())
                    .sum();
                if total > 0 {
                    let outcome = if code == 0 {
                        "ok".to_owned()
                    } else {
                        error_name(code, CODE_SLOTS)
                    };
                    requests.push((
                        vec![("request", api_name(api)), ("outcome", outcome)],
                        total,
                    ));
                }
            }
        }
        counter(
            encoder,
            "spate_node_requests_total",
            "Requests answered by the node, by request and outcome (ok or the error).",
            &requests,
        )
    }

    fn encode_partitions(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        samples: &[Arc<ShardSample>],
    ) -> fmt::Result {
        let partitions: Vec<&PartitionSample> = samples
            .iter()
            .flat_map(|sample| sample.partitions.iter())
            .collect();
        let per_topic = self.per_topic || partitions.len() > PARTITION_SERIES_MAX;
        if per_topic && !self.per_topic && !self.summing_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                partitions = partitions.len(),
                max = PARTITION_SERIES_MAX,
                "more partitions than metric series allowed per partition: partition metrics are summed per topic"
            );
        }
        // Per partition, or summed per topic (then without the `partition` label).
        let mut rows: BTreeMap<(String, Option<u32>), PartitionSample> = BTreeMap::new();
        for sample in partitions {
            let key = (
                sample.topic.clone(),
                (!per_topic).then_some(sample.partition),
            );
            match rows.get_mut(&key) {
                None => {
                    rows.insert(key, sample.clone());
                }
                Some(row) => {
                    row.high_watermark += sample.high_watermark;
                    row.log_start += sample.log_start;
                    row.log_end += sample.log_end;
                    row.size_bytes += sample.size_bytes;
                    row.segments += sample.segments;
                    row.producers += sample.producers;
                    row.appended_records += sample.appended_records;
                    row.appended_bytes += sample.appended_bytes;
                    row.fetched_bytes += sample.fetched_bytes;
                    // Summed per topic, the fenced gauge counts fenced partitions (below).
                    if row.fenced.is_none() {
                        row.fenced.clone_from(&sample.fenced);
                    }
                }
            }
        }
        let fenced_count: HashMap<(String, Option<u32>), u64> = if per_topic {
            let mut counts = HashMap::new();
            for sample in samples.iter().flat_map(|sample| sample.partitions.iter()) {
                if sample.fenced.is_some() {
                    *counts.entry((sample.topic.clone(), None)).or_insert(0) += 1;
                }
            }
            counts
        } else {
            HashMap::new()
        };
        let labels = |(topic, partition): &(String, Option<u32>)| -> Labels {
            let mut labels = vec![("topic", topic.clone())];
            if let Some(partition) = partition {
                labels.push(("partition", partition.to_string()));
            }
            labels
        };
        let gauges: [Value<PartitionSample>; 6] = [
            (
                "spate_partition_high_watermark",
                "The partition's high watermark: the offset after the last record consumers may read.",
                |row| row.high_watermark,
            ),
            (
                "spate_partition_log_start_offset",
                "The partition's first offset kept (retention and DeleteRecords move it).",
                |row| row.log_start,
            ),
            (
                "spate_partition_log_end_offset",
                "The offset the partition's next record gets.",
                |row| row.log_end,
            ),
            (
                "spate_partition_size_bytes",
                "Bytes of the partition's segments.",
                |row| row.size_bytes,
            ),
            (
                "spate_partition_segments",
                "Segments of the partition.",
                |row| row.segments,
            ),
            (
                "spate_partition_producers",
                "Idempotent producers whose state the partition keeps.",
                |row| row.producers,
            ),
        ];
        for (name, help, value) in gauges {
            let series: Vec<(Labels, f64)> = rows
                .iter()
                .map(|(key, row)| (labels(key), float(value(row))))
                .collect();
            gauge(encoder, name, help, &series)?;
        }
        let fenced: Vec<(Labels, f64)> = rows
            .iter()
            .map(|(key, row)| {
                let value = if per_topic {
                    fenced_count.get(key).copied().unwrap_or(0)
                } else {
                    u64::from(row.fenced.is_some())
                };
                (labels(key), float(value))
            })
            .collect();
        gauge(
            encoder,
            "spate_partition_fenced",
            "1 when the partition is fenced (writes refused; the reason is logged and in /readyz); summed per topic, the fenced partitions.",
            &fenced,
        )?;
        let counters: [Value<PartitionSample>; 3] = [
            (
                "spate_append_records_total",
                "Records appended by produce requests.",
                |row| row.appended_records,
            ),
            (
                "spate_append_bytes_total",
                "Bytes of record batches appended by produce requests.",
                |row| row.appended_bytes,
            ),
            (
                "spate_fetch_bytes_total",
                "Record bytes answered to consumers' fetches (replication not included).",
                |row| row.fetched_bytes,
            ),
        ];
        for (name, help, value) in counters {
            let series: Vec<(Labels, u64)> = rows
                .iter()
                .map(|(key, row)| (labels(key), value(row)))
                .collect();
            counter(encoder, name, help, &series)?;
        }
        Ok(())
    }

    fn encode_groups(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        samples: &[Arc<ShardSample>],
    ) -> fmt::Result {
        // High watermarks of every partition replica on this node, for the lag.
        let watermarks: HashMap<(&str, u32), u64> = samples
            .iter()
            .flat_map(|sample| sample.partitions.iter())
            .map(|row| ((row.topic.as_str(), row.partition), row.high_watermark))
            .collect();
        let groups: Vec<&GroupSample> = samples
            .iter()
            .flat_map(|sample| sample.groups.iter())
            .collect();
        let members: Vec<(Labels, f64)> = groups
            .iter()
            .map(|group| (vec![("group", group.group.clone())], float(group.members)))
            .collect();
        gauge(
            encoder,
            "spate_consumer_group_members",
            "Members of the consumer group.",
            &members,
        )?;
        let generations: Vec<(Labels, f64)> = groups
            .iter()
            .map(|group| {
                #[allow(clippy::cast_precision_loss)]
                let generation = group.generation as f64;
                (vec![("group", group.group.clone())], generation)
            })
            .collect();
        gauge(
            encoder,
            "spate_consumer_group_generation",
            "The consumer group's generation; each completed rebalance adds one (changes() counts rebalances).",
            &generations,
        )?;
        let series: usize = groups.iter().map(|group| group.committed.len()).sum();
        let per_topic = series > GROUP_SERIES_MAX;
        let mut committed = Vec::new();
        let mut lag: BTreeMap<(String, String, Option<u32>), u64> = BTreeMap::new();
        for group in &groups {
            for (topic, partition, offset) in &group.committed {
                if !per_topic {
                    #[allow(clippy::cast_precision_loss)]
                    let value = *offset as f64;
                    committed.push((
                        vec![
                            ("group", group.group.clone()),
                            ("topic", topic.clone()),
                            ("partition", partition.to_string()),
                        ],
                        value,
                    ));
                }
                // Lag needs the partition's high watermark: known for partitions with a
                // replica on this node.
                let Some(&high_watermark) = watermarks.get(&(topic.as_str(), *partition)) else {
                    continue;
                };
                let behind = high_watermark.saturating_sub(u64::try_from(*offset).unwrap_or(0));
                let key = (
                    group.group.clone(),
                    topic.clone(),
                    (!per_topic).then_some(*partition),
                );
                *lag.entry(key).or_insert(0) += behind;
            }
        }
        gauge(
            encoder,
            "spate_consumer_group_committed_offset",
            "The consumer group's committed offset (the next offset it reads).",
            &committed,
        )?;
        let lag: Vec<(Labels, f64)> = lag
            .into_iter()
            .map(|((group, topic, partition), behind)| {
                let mut labels = vec![("group", group), ("topic", topic)];
                if let Some(partition) = partition {
                    labels.push(("partition", partition.to_string()));
                }
                (labels, float(behind))
            })
            .collect();
        gauge(
            encoder,
            "spate_consumer_group_lag",
            "Records between the consumer group's committed offset and the partition's high watermark (partitions with a replica on this node).",
            &lag,
        )
    }
}

impl Exposition for NodeMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let samples: Vec<Arc<ShardSample>> =
            self.shards.iter().map(|shard| shard.latest()).collect();
        spate_ops::expose::build_info(encoder, "node")?;
        self.encode_shards(encoder, &samples)?;
        self.encode_partitions(encoder, &samples)?;
        self.encode_groups(encoder, &samples)?;
        let statistics = nix::sys::statvfs::statvfs(&self.data_dir).ok();
        let (free, total) = statistics.map_or((None, None), |stats| {
            let block = stats.fragment_size();
            (
                Some(float(stats.blocks_available().saturating_mul(block))),
                Some(float(stats.blocks().saturating_mul(block))),
            )
        });
        let dir = || vec![("data_dir", self.data_dir.display().to_string())];
        gauge(
            encoder,
            "spate_disk_free_bytes",
            "Bytes free for the node on the data directory's filesystem.",
            &free
                .map(|free| (dir(), free))
                .into_iter()
                .collect::<Vec<_>>(),
        )?;
        gauge(
            encoder,
            "spate_disk_total_bytes",
            "Size of the data directory's filesystem.",
            &total
                .map(|total| (dir(), total))
                .into_iter()
                .collect::<Vec<_>>(),
        )
    }

    fn readiness(&self) -> Readiness {
        let starting: Vec<String> = self
            .shards
            .iter()
            .filter(|shard| !shard.ready.load(Ordering::Relaxed))
            .map(|shard| shard.shard.to_string())
            .collect();
        let mut detail = String::new();
        if !starting.is_empty() {
            detail.push_str(&format!(
                "recovering: shard {}\n",
                starting.join(", shard ")
            ));
        }
        for shard in &self.shards {
            for row in &shard.latest().partitions {
                if let Some(reason) = &row.fenced {
                    detail.push_str(&format!(
                        "fenced: {}-{}: {reason}\n",
                        row.topic, row.partition
                    ));
                }
            }
        }
        Readiness {
            ready: starting.is_empty(),
            detail,
        }
    }
}
