//! Results of benchmark runs: throughput, latency percentiles (from `hdrhistogram`), a
//! throughput timeline, ratios between runs of the same report, the JSON report and the
//! summary table printed at the end.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to 100 s, with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, 3 digits <= 5).
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

pub fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Percentiles reported for every latency.
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
];

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// What was measured (e.g. "ack", "fdatasync", "publish-to-consume").
    pub what: String,
    pub count: u64,
    /// Percentile name → µs.
    pub percentiles_us: BTreeMap<String, u64>,
    pub max_us: u64,
    pub mean_us: f64,
    /// (percentile, µs) points for the latency chart.
    pub curve: Vec<(f64, u64)>,
}

impl Latency {
    pub fn from_histogram(what: &str, histogram: &Histogram<u64>) -> Latency {
        let percentiles_us = PERCENTILES
            .iter()
            .map(|(name, quantile)| ((*name).to_owned(), histogram.value_at_percentile(*quantile)))
            .collect();
        let curve = [
            0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999,
        ]
        .iter()
        .map(|quantile| (*quantile, histogram.value_at_percentile(*quantile)))
        .collect();
        Latency {
            what: what.to_owned(),
            count: histogram.len(),
            percentiles_us,
            max_us: histogram.max(),
            mean_us: histogram.mean(),
            curve,
        }
    }

    pub fn p(&self, name: &str) -> u64 {
        self.percentiles_us.get(name).copied().unwrap_or(0)
    }
}

/// One run of one scenario or baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub name: String,
    /// "spate" or "baseline".
    pub kind: &'static str,
    pub scenario: String,
    pub params: BTreeMap<String, String>,
    pub seconds: f64,
    /// Records (or, for baselines, writes/messages) completed.
    pub operations: u64,
    /// Payload bytes completed (record values; bytes written or sent for baselines).
    pub bytes: u64,
    pub mb_per_s: f64,
    pub operations_per_s: f64,
    pub errors: u64,
    pub latency: Vec<Latency>,
    /// (seconds since the start, MB/s over the sampling interval).
    pub timeline: Vec<(f64, f64)>,
    /// Other measured figures of the scenario by name, with the unit in the name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub figures: BTreeMap<String, f64>,
}

impl Run {
    pub fn new(
        name: impl Into<String>,
        kind: &'static str,
        scenario: &str,
        params: BTreeMap<String, String>,
    ) -> Run {
        Run {
            name: name.into(),
            kind,
            scenario: scenario.to_owned(),
            params,
            seconds: 0.0,
            operations: 0,
            bytes: 0,
            mb_per_s: 0.0,
            operations_per_s: 0.0,
            errors: 0,
            latency: Vec::new(),
            timeline: Vec::new(),
            figures: BTreeMap::new(),
        }
    }

    /// Fills the totals and rates.
    pub fn finish(&mut self, elapsed: Duration, operations: u64, bytes: u64) {
        self.seconds = elapsed.as_secs_f64();
        self.operations = operations;
        self.bytes = bytes;
        let seconds = self.seconds.max(1e-9);
        self.mb_per_s = bytes as f64 / 1e6 / seconds;
        self.operations_per_s = operations as f64 / seconds;
    }

    pub fn latency(&self, what: &str) -> Option<&Latency> {
        self.latency.iter().find(|latency| latency.what == what)
    }
}

/// Builds a parameter map from `(name, value)` pairs.
pub fn params<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// Counts bytes as they complete and samples the rate every `interval` on its own thread.
#[derive(Debug, Clone)]
pub struct Meter {
    bytes: Arc<AtomicU64>,
    operations: Arc<AtomicU64>,
    samples: Arc<std::sync::Mutex<Vec<(f64, f64)>>>,
    running: Arc<std::sync::atomic::AtomicBool>,
}

impl Meter {
    pub fn start(interval: Duration) -> Meter {
        let meter = Meter {
            bytes: Arc::new(AtomicU64::new(0)),
            operations: Arc::new(AtomicU64::new(0)),
            samples: Arc::new(std::sync::Mutex::new(Vec::new())),
            running: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let sampler = meter.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut last = 0u64;
            while sampler.running.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                let now = sampler.bytes.load(Ordering::Relaxed);
                let rate = (now - last) as f64 / 1e6 / interval.as_secs_f64();
                last = now;
                if let Ok(mut samples) = sampler.samples.lock() {
                    samples.push((started.elapsed().as_secs_f64(), rate));
                }
            }
        });
        meter
    }

    pub fn add(&self, operations: u64, bytes: u64) {
        self.operations.fetch_add(operations, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The (operations, bytes) counted so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.operations.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Stops sampling; returns (operations, bytes, timeline).
    pub fn stop(&self) -> (u64, u64, Vec<(f64, f64)>) {
        self.running.store(false, Ordering::Relaxed);
        let timeline = self
            .samples
            .lock()
            .map(|samples| samples.clone())
            .unwrap_or_default();
        (
            self.operations.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            timeline,
        )
    }
}

/// A ratio between two runs of the same report.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub numerator: String,
    pub denominator: String,
    pub value: f64,
    /// How to read it.
    pub meaning: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub data_dir: String,
    pub filesystem: String,
}

impl Machine {
    pub fn read(data_dir: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown".to_owned(),
                |(_, model)| model.trim().to_owned(),
            );
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel,
            data_dir: data_dir.display().to_string(),
            filesystem: spate_node::storage::filesystem_type(data_dir)
                .unwrap_or_else(|| "unknown".to_owned()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub spate_version: &'static str,
    /// Seconds since the epoch when the report was written.
    pub unix_time: u64,
    pub command: String,
    pub machine: Machine,
    pub runs: Vec<Run>,
    pub ratios: Vec<Ratio>,
    /// What the reader should know about runs left out (e.g. a cargo feature off).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(command: String, data_dir: &Path) -> Report {
        Report {
            spate_version: env!("CARGO_PKG_VERSION"),
            unix_time: 0,
            command,
            machine: Machine::read(data_dir),
            runs: Vec::new(),
            ratios: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn run(&self, name: &str) -> Option<&Run> {
        self.runs.iter().find(|run| run.name == name)
    }

    /// Adds `numerator.value ÷ denominator.value` when both runs are in the report.
    pub fn ratio(
        &mut self,
        name: &str,
        numerator: &str,
        denominator: &str,
        value: impl Fn(&Run) -> Option<f64>,
        meaning: &str,
    ) {
        let (Some(top), Some(bottom)) = (self.run(numerator), self.run(denominator)) else {
            return;
        };
        let (Some(top), Some(bottom)) = (value(top), value(bottom)) else {
            return;
        };
        if bottom <= 0.0 {
            return;
        }
        self.ratios.push(Ratio {
            name: name.to_owned(),
            numerator: numerator.to_owned(),
            denominator: denominator.to_owned(),
            value: top / bottom,
            meaning: meaning.to_owned(),
        });
    }

    /// Writes `report.json` and the charts into `out`; returns the report's path.
    pub fn write(&mut self, out: &Path) -> std::io::Result<std::path::PathBuf> {
        std::fs::create_dir_all(out)?;
        self.unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let path = out.join("report.json");
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, json)?;
        std::fs::write(
            out.join("throughput.svg"),
            crate::charts::throughput(&self.runs),
        )?;
        std::fs::write(out.join("latency.svg"), crate::charts::latency(&self.runs))?;
        Ok(path)
    }

    /// The summary table: one line per run, then the ratios.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let machine = &self.machine;
        out.push_str(&format!(
            "machine: {} CPUs ({}), {:.1} GiB, Linux {}, data on {} ({})\n\n",
            machine.cpus,
            machine.cpu_model,
            machine.memory_gib,
            machine.kernel,
            machine.filesystem,
            machine.data_dir
        ));
        out.push_str(&format!(
            "{:<28} {:>9} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}  {}\n",
            "run",
            "MB/s",
            "ops/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "p99.99 µs",
            "max µs",
            "latency of"
        ));
        for run in &self.runs {
            let latency = run.latency.first();
            let cell =
                |name: &str| latency.map_or_else(|| "-".to_owned(), |l| l.p(name).to_string());
            out.push_str(&format!(
                "{:<28} {:>9.1} {:>12.0} {:>10} {:>10} {:>10} {:>10} {:>10}  {}{}\n",
                run.name,
                run.mb_per_s,
                run.operations_per_s,
                cell("p50"),
                cell("p99"),
                cell("p99.9"),
                cell("p99.99"),
                latency.map_or_else(|| "-".to_owned(), |l| l.max_us.to_string()),
                latency.map_or("-", |l| l.what.as_str()),
                if run.errors > 0 {
                    format!(" ({} errors)", run.errors)
                } else {
                    String::new()
                }
            ));
        }
        if !self.ratios.is_empty() {
            out.push_str("\nratios (same run, same machine):\n");
            for ratio in &self.ratios {
                out.push_str(&format!(
                    "  {:<48} {:>7.3}   {} ÷ {} — {}\n",
                    ratio.name, ratio.value, ratio.numerator, ratio.denominator, ratio.meaning
                ));
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("note: {note}\n"));
            }
        }
        out
    }
}

/// One slice of a run whose counting of metrics is switched on and off: what it moved while
/// counting was on or off.
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    pub metrics: bool,
    pub seconds: f64,
    pub operations: u64,
    pub bytes: u64,
    /// The process's CPU time in the slice.
    pub cpu_seconds: f64,
}

/// Switches counting with `set` (`true`: counting) every `slice` after a first slice of
/// counting (warm-up, not measured), in the order on, off, off, on, on, off, … (`phase`
/// false) or off, on, on, off, … (`phase` true) so that a drift of the machine weighs on both
/// sides alike, until a slice would end past `deadline`; returns each slice with what
/// `meter` counted in it. Counting is left on. Runs of a set alternate their phase, so the
/// first measured slice of a run (which may differ from the others) falls on each side as
/// often. `sleep` is the runtime's timer (glommio's or tokio's).
pub async fn switch_counting<S, F>(
    meter: &Meter,
    slice: Duration,
    deadline: Instant,
    phase: bool,
    mut set: impl FnMut(bool),
    sleep: S,
) -> Vec<Slice>
where
    S: Fn(Duration) -> F,
    F: std::future::Future,
{
    let mut slices = Vec::new();
    set(true);
    sleep(slice).await;
    let mut index = 0u32;
    while Instant::now() + slice <= deadline {
        let metrics = matches!(index % 4, 0 | 3) != phase;
        set(metrics);
        let (operations, bytes) = meter.totals();
        let cpu = crate::cpu::CpuTime::now().total();
        let started = Instant::now();
        sleep(slice).await;
        let (operations_after, bytes_after) = meter.totals();
        slices.push(Slice {
            metrics,
            seconds: started.elapsed().as_secs_f64(),
            operations: operations_after - operations,
            bytes: bytes_after - bytes,
            cpu_seconds: crate::cpu::CpuTime::now().total() - cpu,
        });
        index += 1;
    }
    set(true);
    slices
}

/// The ratio (on ÷ off) of the rates of each pair of adjacent slices of one run.
pub fn pair_ratios(slices: &[Slice]) -> Vec<f64> {
    let rate = |slice: &Slice| slice.bytes as f64 / slice.seconds.max(1e-9);
    slices
        .chunks_exact(2)
        .map(|pair| {
            let (on, off) = if pair[0].metrics {
                (&pair[0], &pair[1])
            } else {
                (&pair[1], &pair[0])
            };
            rate(on) / rate(off).max(1e-9)
        })
        .collect()
}

/// The two sides of slices as runs `{name}-on` and `{name}-off` (bytes, time and CPU time of
/// their slices), the `-on` run carrying the median, lowest and highest of `ratios` and their
/// number in its figures (`pair_ratio_median`, `pair_ratio_min`, `pair_ratio_max`, `pairs`).
pub fn sides(
    name: &str,
    scenario: &str,
    params: &BTreeMap<String, String>,
    slices: &[Slice],
    ratios: &[f64],
) -> (Run, Run) {
    let side = |metrics: bool| {
        let mut params = params.clone();
        params.insert("metrics".to_owned(), metrics.to_string());
        let on_side = || slices.iter().filter(move |slice| slice.metrics == metrics);
        let mut run = Run::new(
            format!("{name}-{}", if metrics { "on" } else { "off" }),
            "spate",
            scenario,
            params,
        );
        run.finish(
            Duration::from_secs_f64(on_side().map(|slice| slice.seconds).sum()),
            on_side().map(|slice| slice.operations).sum(),
            on_side().map(|slice| slice.bytes).sum(),
        );
        let cpu: f64 = on_side().map(|slice| slice.cpu_seconds).sum();
        if run.bytes > 0 {
            run.figures.insert(
                "cpu_seconds_per_gb".to_owned(),
                cpu / (run.bytes as f64 / 1e9),
            );
        }
        run
    };
    let mut on = side(true);
    let mut ratios = ratios.to_vec();
    ratios.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (ratios.first(), ratios.last()) {
        on.figures
            .insert("pair_ratio_median".to_owned(), ratios[ratios.len() / 2]);
        on.figures.insert("pair_ratio_min".to_owned(), *min);
        on.figures.insert("pair_ratio_max".to_owned(), *max);
        #[allow(clippy::cast_precision_loss)]
        on.figures.insert("pairs".to_owned(), ratios.len() as f64);
    }
    (on, side(false))
}
