//! `spate top`: a live view of a running Spate read from the metrics endpoints of its node
//! and gateway (docs/operations.md, "Metrics"), refreshed like `top`: ingest and reads per
//! topic, fsync and write-round latency, connections, requests and errors, consumer lag per
//! group, fenced partitions with their reason (from `/readyz`). Rates are the difference of
//! two scrapes over the interval between them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The metrics endpoints to read (a node's, a gateway's; several nodes' too),
    /// comma-separated.
    #[arg(
        long,
        env = "SPATE_METRICS",
        value_name = "HOST:PORT,…",
        value_delimiter = ',',
        default_value = "127.0.0.1:9644,127.0.0.1:9645"
    )]
    metrics: Vec<String>,
    /// Seconds between refreshes (0.2 to 3600).
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    interval: f64,
    /// Print one view (rates over one interval) and exit, without clearing the screen: for
    /// scripts and logs. Exit status 1 when no endpoint answered.
    #[arg(long)]
    once: bool,
}

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest scrape read (a node with 10,000 partitions exposes about 15 MB).
const SCRAPE_BYTES_MAX: u64 = 64 << 20;

/// One sample of a scrape.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Parses the samples of Prometheus' text format (the lines that are not comments). Spate
/// writes this format itself (through `prometheus-client`), so only what it writes needs to
/// be read: `name{label="value",…} number`, with `\\`, `\"` and `\n` escaped in values. A
/// line that does not parse is skipped.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let bytes = line.as_bytes();
    let mut at = name_end;
    let mut labels = Vec::new();
    if bytes[at] == b'{' {
        at += 1;
        loop {
            if bytes.get(at)? == &b'}' {
                at += 1;
                break;
            }
            // `key="value"`, then `,` or `}`. Splitting only at ASCII bytes keeps every slice
            // on a character boundary.
            let key_end = at + line[at..].find('=')?;
            let key = line[at..key_end].to_owned();
            if bytes.get(key_end + 1)? != &b'"' {
                return None;
            }
            at = key_end + 2;
            let mut value = String::new();
            loop {
                match bytes.get(at)? {
                    b'"' => break,
                    b'\\' => {
                        match bytes.get(at + 1)? {
                            b'n' => value.push('\n'),
                            b'"' => value.push('"'),
                            _ => value.push('\\'),
                        }
                        at += 2;
                    }
                    _ => {
                        let next = line[at..].chars().next()?;
                        value.push(next);
                        at += next.len_utf8();
                    }
                }
            }
            at += 1;
            labels.push((key, value));
            if bytes.get(at)? == &b',' {
                at += 1;
            }
        }
    }
    let value = line[at..].split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// A GET of `path` on `address` over HTTP/1.0: the body of a 200 answer.
fn get(address: &str, path: &str) -> Result<String, String> {
    let target = address
        .to_socket_addrs()
        .map_err(|error| format!("{address}: {error}"))?
        .next()
        .ok_or_else(|| format!("{address}: resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, SCRAPE_TIMEOUT)
        .map_err(|error| format!("{address}: {error}"))?;
    let _ = stream.set_read_timeout(Some(SCRAPE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(SCRAPE_TIMEOUT));
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| format!("{address}: {error}"))?;
    let mut answer = Vec::new();
    stream
        .take(SCRAPE_BYTES_MAX)
        .read_to_end(&mut answer)
        .map_err(|error| format!("{address}: {error}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{address}: not an HTTP answer"))?;
    let status = head.split(' ').nth(1).unwrap_or("");
    // `/readyz` answers 503 with a body worth showing.
    if status != "200" && status != "503" {
        return Err(format!(
            "{address}{path}: HTTP {status} (is this a Spate metrics endpoint?)"
        ));
    }
    Ok(body.to_owned())
}

/// Every endpoint's samples at one moment, and what `/readyz` says.
#[derive(Debug, Default)]
struct Scrape {
    samples: Vec<Sample>,
    /// `endpoint: readiness lines` (fenced partitions, recovering shards).
    readiness: Vec<String>,
    /// Endpoints that did not answer, with why.
    failed: Vec<String>,
}

fn scrape(endpoints: &[String]) -> Scrape {
    let mut out = Scrape::default();
    for endpoint in endpoints {
        match get(endpoint, "/metrics") {
            Ok(text) => out.samples.extend(parse(&text)),
            Err(error) => {
                out.failed.push(error);
                continue;
            }
        }
        if let Ok(body) = get(endpoint, "/readyz") {
            out.readiness.extend(
                body.lines()
                    .filter(|line| *line != "ready")
                    .map(|line| format!("{endpoint}: {line}")),
            );
        }
    }
    out
}

impl Scrape {
    fn sum(&self, name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
        self.samples
            .iter()
            .filter(|sample| sample.name == name && keep(sample))
            .map(|sample| sample.value)
            .sum()
    }

    /// `name` summed by the value of `label`.
    fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for sample in self.samples.iter().filter(|sample| sample.name == name) {
            if let Some(value) = sample.label(label) {
                *out.entry(value.to_owned()).or_insert(0.0) += sample.value;
            }
        }
        out
    }

    /// A histogram's cumulative buckets summed over its series: (le, count), ascending.
    fn buckets(&self, family: &str) -> Vec<(f64, f64)> {
        let name = format!("{family}_bucket");
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for sample in self.samples.iter().filter(|sample| sample.name == name) {
            let Some(le) = sample.label("le") else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse::<f64>() {
                    Ok(le) => le,
                    Err(_) => continue,
                }
            };
            // Non-negative floats order as their bits do.
            buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += sample.value;
        }
        buckets.into_values().collect()
    }
}

/// The `quantile` of the observations between two scrapes of a histogram, interpolated in
/// its bucket as Prometheus' `histogram_quantile` does; `None` without observations.
fn quantile(earlier: &[(f64, f64)], later: &[(f64, f64)], quantile: f64) -> Option<f64> {
    let before = |le: f64| {
        earlier
            .iter()
            .find(|(bound, _)| bound.to_bits() == le.to_bits())
            .map_or(0.0, |(_, count)| *count)
    };
    let between: Vec<(f64, f64)> = later
        .iter()
        .map(|&(le, count)| (le, (count - before(le)).max(0.0)))
        .collect();
    let total = between.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = quantile * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for &(le, cumulative) in &between {
        if cumulative >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let within = cumulative - below;
            return Some(if within > 0.0 {
                lower + (le - lower) * (rank - below) / within
            } else {
                le
            });
        }
        lower = le;
        below = cumulative;
    }
    Some(lower)
}

fn bytes(value: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = value.max(0.0);
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn milliseconds(seconds: Option<f64>) -> String {
    seconds.map_or_else(
        || "-".to_owned(),
        |seconds| format!("{:.2} ms", seconds * 1e3),
    )
}

/// The view of the interval between two scrapes `seconds` apart.
fn render(endpoints: &[String], before: &Scrape, now: &Scrape, seconds: f64) -> String {
    let rate = |name: &str, label: &str| -> BTreeMap<String, f64> {
        let earlier = before.by(name, label);
        now.by(name, label)
            .into_iter()
            .map(|(key, value)| {
                let delta = (value - earlier.get(&key).copied().unwrap_or(0.0)).max(0.0);
                (key, delta / seconds)
            })
            .collect()
    };
    let total_rate = |name: &str, keep: &dyn Fn(&Sample) -> bool| {
        ((now.sum(name, keep) - before.sum(name, keep)) / seconds).max(0.0)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "spate top: {} every {seconds:.1} s",
        endpoints.join(", ")
    );
    for failure in &now.failed {
        let _ = writeln!(out, "unreachable: {failure}");
    }
    let all = |_: &Sample| true;
    let shards = now
        .samples
        .iter()
        .filter(|sample| sample.name == "spate_shard_unsynced_bytes")
        .count();
    if shards > 0 {
        let fsync = quantile(
            &before.buckets("spate_fdatasync_duration_seconds"),
            &now.buckets("spate_fdatasync_duration_seconds"),
            0.99,
        );
        let round = quantile(
            &before.buckets("spate_write_round_duration_seconds"),
            &now.buckets("spate_write_round_duration_seconds"),
            0.99,
        );
        let _ = writeln!(
            out,
            "node: {shards} shards, {:.0} connections, unsynced {} of {}, fsync p99 {}, write round p99 {}, back-pressure waits {:.1}/s, requests {:.0}/s ({:.1} errors/s)",
            now.sum("spate_node_connections", all),
            bytes(now.sum("spate_shard_unsynced_bytes", all)),
            bytes(now.sum("spate_shard_unsynced_bytes_limit", all)),
            milliseconds(fsync),
            milliseconds(round),
            total_rate("spate_backpressure_waits_total", &all),
            total_rate("spate_node_requests_total", &all),
            total_rate("spate_node_requests_total", &|sample| {
                sample.label("outcome") != Some("ok")
            }),
        );
    }
    let gateway_connections = now.by("spate_gateway_connections", "protocol");
    if !gateway_connections.is_empty() {
        let forward = quantile(
            &before.buckets("spate_gateway_forward_duration_seconds"),
            &now.buckets("spate_gateway_forward_duration_seconds"),
            0.99,
        );
        let _ = writeln!(
            out,
            "gateway: {} QUIC and {} Kafka connections, requests {:.0}/s ({:.1} errors/s), in {}/s, out {}/s, forwarding p99 {}",
            gateway_connections.get("quic").copied().unwrap_or(0.0),
            gateway_connections.get("kafka").copied().unwrap_or(0.0),
            total_rate("spate_gateway_requests_total", &all),
            total_rate("spate_gateway_requests_total", &|sample| {
                sample.label("outcome") != Some("ok")
            }),
            bytes(total_rate("spate_gateway_received_bytes_total", &all)),
            bytes(total_rate("spate_gateway_sent_bytes_total", &all)),
            milliseconds(forward),
        );
    }
    let records_in = rate("spate_append_records_total", "topic");
    let bytes_in = rate("spate_append_bytes_total", "topic");
    let bytes_out = rate("spate_fetch_bytes_total", "topic");
    let size = now.by("spate_partition_size_bytes", "topic");
    let fenced = now.by("spate_partition_fenced", "topic");
    let mut partitions: BTreeMap<String, usize> = BTreeMap::new();
    for sample in now
        .samples
        .iter()
        .filter(|sample| sample.name == "spate_partition_high_watermark")
    {
        if let Some(topic) = sample.label("topic") {
            *partitions.entry(topic.to_owned()).or_insert(0) += 1;
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<32} {:>6} {:>11} {:>12} {:>11} {:>11} {:>7}",
        "TOPIC", "PARTS", "IN/s", "RECORDS/s", "OUT/s", "SIZE", "FENCED"
    );
    for (topic, count) in &partitions {
        if topic.starts_with("__") {
            continue;
        }
        let _ = writeln!(
            out,
            "{:<32} {:>6} {:>11} {:>12.0} {:>11} {:>11} {:>7.0}",
            topic,
            count,
            bytes(bytes_in.get(topic).copied().unwrap_or(0.0)),
            records_in.get(topic).copied().unwrap_or(0.0),
            bytes(bytes_out.get(topic).copied().unwrap_or(0.0)),
            bytes(size.get(topic).copied().unwrap_or(0.0)),
            fenced.get(topic).copied().unwrap_or(0.0),
        );
    }
    // Lag per group and topic (each partition's lag once, however many replicas report it).
    let mut lag: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for sample in now
        .samples
        .iter()
        .filter(|sample| sample.name == "spate_consumer_group_lag")
    {
        let (Some(group), Some(topic)) = (sample.label("group"), sample.label("topic")) else {
            continue;
        };
        let partition = sample.label("partition").unwrap_or("").to_owned();
        let slot = lag
            .entry((group.to_owned(), topic.to_owned()))
            .or_default()
            .entry(partition)
            .or_insert(0.0);
        *slot = slot.max(sample.value);
    }
    if !lag.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<32} {:<32} {:>14}", "GROUP", "TOPIC", "LAG");
        for ((group, topic), partitions) in &lag {
            let _ = writeln!(
                out,
                "{group:<32} {topic:<32} {:>14.0}",
                partitions.values().sum::<f64>()
            );
        }
    }
    let _ = writeln!(out);
    if now.readiness.is_empty() {
        let _ = writeln!(out, "fenced partitions: none");
    } else {
        for line in &now.readiness {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

pub fn run(args: &TopArgs) -> ExitCode {
    if !(0.2..=3600.0).contains(&args.interval) {
        crate::report(format!(
            "--interval {}: between 0.2 and 3600 seconds",
            args.interval
        ));
        return ExitCode::from(crate::EXIT_USAGE);
    }
    let interval = Duration::from_secs_f64(args.interval);
    let clear = !args.once && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut before = scrape(&args.metrics);
    let mut taken = Instant::now();
    loop {
        std::thread::sleep(interval);
        let now = scrape(&args.metrics);
        let seconds = taken.elapsed().as_secs_f64();
        taken = Instant::now();
        if args.once && now.failed.len() == args.metrics.len() {
            crate::report(format!(
                "no metrics endpoint answered: {}",
                now.failed.join("; ")
            ));
            return ExitCode::FAILURE;
        }
        let view = render(&args.metrics, &before, &now, seconds);
        let mut stdout = std::io::stdout().lock();
        // Home and clear, then the view: the terminal shows one view at a time.
        let written = if clear {
            write!(stdout, "\x1b[H\x1b[2J{view}")
        } else {
            write!(stdout, "{view}")
        };
        if written.and_then(|()| stdout.flush()).is_err() || args.once {
            return ExitCode::SUCCESS;
        }
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_escaped_labels_and_special_values() {
        let samples = parse(
            "# HELP x y\n# TYPE x counter\nx_total{topic=\"a\\\"b\",partition=\"0\"} 12\n\
             up 1.5\nh_bucket{le=\"+Inf\"} 3\nbroken{a=1} 2\nv{q=\"é\\n\\\\\"} -Inf\n",
        );
        assert_eq!(samples.len(), 4, "{samples:?}");
        assert_eq!(samples[0].label("topic"), Some("a\"b"));
        assert_eq!(samples[0].label("partition"), Some("0"));
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[1].name, "up");
        assert_eq!(samples[2].label("le"), Some("+Inf"));
        assert_eq!(samples[3].label("q"), Some("é\n\\"));
        assert_eq!(samples[3].value, f64::NEG_INFINITY);
    }

    #[test]
    fn quantiles_come_from_the_observations_between_two_scrapes() {
        let earlier = [(0.001, 10.0), (0.01, 10.0), (f64::INFINITY, 10.0)];
        // 100 more, all in (0.001, 0.01].
        let later = [(0.001, 10.0), (0.01, 110.0), (f64::INFINITY, 110.0)];
        let p99 = quantile(&earlier, &later, 0.99).unwrap();
        assert!((p99 - (0.001 + 0.009 * 0.99)).abs() < 1e-12, "{p99}");
        assert_eq!(quantile(&later, &later, 0.99), None);
    }

    #[test]
    fn a_view_shows_topics_rates_lag_and_fences() {
        let before = Scrape {
            samples: parse(
                "spate_append_records_total{topic=\"clicks\",partition=\"0\"} 100\n\
                 spate_append_bytes_total{topic=\"clicks\",partition=\"0\"} 1024\n",
            ),
            ..Scrape::default()
        };
        let now = Scrape {
            samples: parse(
                "spate_append_records_total{topic=\"clicks\",partition=\"0\"} 300\n\
                 spate_append_bytes_total{topic=\"clicks\",partition=\"0\"} 3072\n\
                 spate_partition_high_watermark{topic=\"clicks\",partition=\"0\"} 300\n\
                 spate_partition_fenced{topic=\"clicks\",partition=\"0\"} 1\n\
                 spate_consumer_group_lag{group=\"billing\",topic=\"clicks\",partition=\"0\"} 42\n",
            ),
            readiness: vec!["127.0.0.1:9644: fenced: clicks-0: write failed".to_owned()],
            failed: Vec::new(),
        };
        let view = render(&["127.0.0.1:9644".to_owned()], &before, &now, 2.0);
        let clicks = view
            .lines()
            .find(|line| line.starts_with("clicks"))
            .unwrap();
        let fields: Vec<&str> = clicks.split_whitespace().collect();
        // 1 partition, 1 KiB/s and 100 records/s in, fenced 1.
        assert_eq!(fields[1], "1");
        assert_eq!(fields[2..4], ["1.0", "KiB"]);
        assert_eq!(fields[4], "100");
        assert_eq!(fields.last(), Some(&"1"));
        assert!(view.contains("billing"), "{view}");
        assert!(view.contains("42"), "{view}");
        assert!(view.contains("fenced: clicks-0: write failed"), "{view}");
    }
}
