//! Writing metric families into a scrape, through `prometheus-client`'s encoder (Prometheus
//! text format 0.0.4). A process implements [`Exposition`]; each scrape calls it on the
//! metrics thread, where it reads its cells and writes families with [`counter`], [`gauge`]
//! and [`histogram`].

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::cells::HistogramSnapshot;

/// A series' labels: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Whether a process can take traffic, and what an operator should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// Shown in the `/readyz` body: why not ready, or what is wrong though ready (a fenced
    /// partition).
    pub detail: String,
}

/// What a process exposes on its metrics listener.
pub trait Exposition: Send + Sync + 'static {
    /// Writes every metric family of the process (called on the metrics thread per scrape).
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result;
    /// The `/readyz` answer.
    fn readiness(&self) -> Readiness;
}

/// A counter family. `name` is the full series name, ending in `_total`.
pub fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> fmt::Result {
    // Names are literals of the callers; one without `_total` is a bug (an assertion).
    let base = name
        .strip_suffix("_total")
        .expect("a counter's name ends in _total");
    let mut family = encoder.encode_descriptor(base, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        family
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

/// A gauge family.
pub fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels, f64)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        family.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

/// A histogram family.
pub fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels, HistogramSnapshot)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, snapshot) in series {
        family
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(
                snapshot.sum,
                snapshot.count(),
                &snapshot.pairs(),
                None,
            )?;
    }
    Ok(())
}

/// An [`Exposition`] as `prometheus-client` collects it.
struct Collected(std::sync::Arc<dyn Exposition>);

impl fmt::Debug for Collected {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Collected")
    }
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.0.encode(&mut encoder)?;
        crate::process::encode(&mut encoder)
    }
}

/// The registry a metrics listener scrapes: the process' own families and the `process_*`
/// ones.
pub fn registry(exposition: std::sync::Arc<dyn Exposition>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collected(exposition)));
    registry
}

/// One scrape in Prometheus text format 0.0.4. Writing into a `String` cannot fail, so an
/// error is the encoder refusing a family: answered as such, never a panic on the metrics
/// thread.
pub fn scrape(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(64 << 10);
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

/// The `spate_build_info` family every process writes first: its version, and `process`
/// (`node`, `gateway`).
pub fn build_info(encoder: &mut DescriptorEncoder<'_>, process: &str) -> fmt::Result {
    let labels = vec![
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("process", process.to_owned()),
    ];
    gauge(
        encoder,
        "spate_build_info",
        "The running Spate version (always 1).",
        &[(labels, 1.0)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::Histogram;

    #[derive(Debug)]
    struct Fixed;

    impl Exposition for Fixed {
        fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
            counter(
                encoder,
                "spate_things_total",
                "Things.",
                &[(vec![("topic", "a\"b".into())], 3)],
            )?;
            gauge(encoder, "spate_level", "A level.", &[(vec![], 1.5)])?;
            let histogram = Histogram::new(&[1.0]);
            histogram.observe(0.5);
            histogram.observe(3.0);
            self::histogram(
                encoder,
                "spate_duration_seconds",
                "Durations.",
                &[(vec![("shard", "0".into())], histogram.snapshot())],
            )
        }

        fn readiness(&self) -> Readiness {
            Readiness {
                ready: true,
                detail: String::new(),
            }
        }
    }

    #[test]
    fn families_are_written_in_prometheus_text_format() {
        let text = scrape(&registry(std::sync::Arc::new(Fixed))).unwrap();
        for line in [
            "# TYPE spate_things_total counter",
            "spate_things_total{topic=\"a\\\"b\"} 3",
            "# TYPE spate_level gauge",
            "spate_level 1.5",
            "spate_duration_seconds_bucket{shard=\"0\",le=\"1\"} 1",
            "spate_duration_seconds_bucket{shard=\"0\",le=\"+Inf\"} 2",
            "spate_duration_seconds_sum{shard=\"0\"} 3.5",
            "spate_duration_seconds_count{shard=\"0\"} 2",
            "# TYPE process_open_fds gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
