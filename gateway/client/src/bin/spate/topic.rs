//! `spate topic create|alter|list|describe|trim|delete`: admin calls, printed as aligned
//! columns.

use std::io::Write;

use clap::Subcommand;
use spate_client::{AlterTopicRequest, Client, CreateTopicRequest, Setting};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(
        after_help = "Examples:\n  spate topic create clicks --partitions 4\n  spate topic create audit --partitions 1 --retention-ms unlimited\n  spate topic create metrics --partitions 8 --retention-ms 86400000 --retention-bytes 10737418240\n  spate topic create orders --partitions 6 --replication-factor 3 --min-insync-replicas 2   # a cluster of 3 nodes or more"
    )]
    Create {
        name: String,
        /// Number of partitions (fixed for the topic's life).
        #[arg(long, value_name = "N")]
        partitions: u32,
        /// Copies of each partition, on distinct nodes (a cluster; a single node holds one).
        /// [default: the node's, 1]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        replication_factor: Option<u16>,
        /// Delete records older than this, in ms, or `unlimited`. [default: the node's]
        #[arg(long, value_name = "MS", value_parser = duration_setting)]
        retention_ms: Option<Setting>,
        /// Delete the oldest segments while a partition holds more than this, in bytes, or
        /// `unlimited`. [default: the node's]
        #[arg(long, value_name = "BYTES", value_parser = size_setting)]
        retention_bytes: Option<Setting>,
        /// Refuse `fsync` writes (Kafka acks=all) while fewer replicas than this are in sync.
        /// [default: 1]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        min_insync_replicas: Option<u16>,
    },
    /// Change a topic's retention, segment size or min.insync.replicas (settings not given
    /// stay as they are).
    #[command(
        after_help = "Examples:\n  spate topic alter clicks --retention-ms 3600000     # keep one hour\n  spate topic alter clicks --retention-ms 7d --retention-bytes 50GiB\n  spate topic alter clicks --retention-bytes default  # back to the node's setting\n  spate topic alter clicks --segment-bytes 256MiB     # smaller segments from the next roll\n  spate topic alter orders --min-insync-replicas 2    # acks=all needs 2 replicas in sync"
    )]
    Alter {
        name: String,
        /// Delete records older than this, in ms; `unlimited`; or `default` (the node's).
        #[arg(long, value_name = "MS", value_parser = duration_setting)]
        retention_ms: Option<Setting>,
        /// Delete the oldest segments while a partition holds more than this, in bytes;
        /// `unlimited`; or `default` (the node's).
        #[arg(long, value_name = "BYTES", value_parser = size_setting)]
        retention_bytes: Option<Setting>,
        /// Roll each partition to a new segment file at this size (64 KiB to 2 GiB), from its
        /// next roll on; or `default` (the node's).
        #[arg(long, value_name = "BYTES", value_parser = size_setting)]
        segment_bytes: Option<Setting>,
        /// Refuse `fsync` writes (Kafka acks=all) while fewer replicas than this are in sync;
        /// or `default` (1).
        #[arg(long, value_name = "N", value_parser = count_setting)]
        min_insync_replicas: Option<Setting>,
    },
    /// List topics with their partition counts and retention.
    #[command(after_help = "Example:\n  spate topic list")]
    List,
    /// Show a topic's partitions: owner shard, offsets, bytes and segments on disk, record
    /// times, the last minute's rate.
    #[command(after_help = "Example:\n  spate topic describe clicks")]
    Describe { name: String },
    /// Delete the records before an offset (the partition's log start moves there; Kafka's
    /// DeleteRecords). Prints each partition's log start after the move.
    #[command(
        after_help = "Examples:\n  spate topic trim clicks --before 1000              # every partition\n  spate topic trim clicks --before end --partition 0  # empty partition 0"
    )]
    Trim {
        name: String,
        /// Delete the records before this offset, or `end`: all records (up to the high
        /// watermark).
        #[arg(long, value_name = "OFFSET", value_parser = trim_point)]
        before: TrimPoint,
        /// The partitions to trim (repeat the flag for several). [default: every partition]
        #[arg(long = "partition", value_name = "N")]
        partitions: Vec<u32>,
    },
    /// Delete a topic and all its records.
    #[command(after_help = "Example:\n  spate topic delete clicks")]
    Delete { name: String },
}

/// `--before`: an offset, or `end` (`None`: up to the high watermark).
#[derive(Debug, Clone, Copy)]
pub struct TrimPoint(Option<u64>);

fn trim_point(text: &str) -> Result<TrimPoint, String> {
    if text.eq_ignore_ascii_case("end") {
        return Ok(TrimPoint(None));
    }
    text.parse::<u64>()
        .map(|offset| TrimPoint(Some(offset)))
        .map_err(|_| format!("`{text}` is neither an offset nor `end`"))
}

/// A number with an optional unit from `units` (name, factor), case-insensitive.
fn with_unit(text: &str, units: &[(&str, u64)], what: &str) -> Result<u64, String> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not {what}"))?;
    let unit = unit.trim();
    let factor = if unit.is_empty() {
        1
    } else {
        units
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|(_, factor)| *factor)
            .ok_or_else(|| format!("`{text}` is not {what}"))?
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `unlimited`, `default`, or a value parsed by `value`.
fn setting_of(text: &str, value: impl Fn(&str) -> Result<u64, String>) -> Result<Setting, String> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(Setting::Unlimited);
    }
    if text.eq_ignore_ascii_case("default") {
        return Ok(Setting::Default);
    }
    value(text).map(Setting::Value)
}

/// A duration in ms: `3600000`, or with a unit: `500ms`, `30s`, `15m`, `12h`, `7d`.
fn duration_setting(text: &str) -> Result<Setting, String> {
    const UNITS: [(&str, u64); 5] = [
        ("ms", 1),
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ];
    setting_of(text, |text| {
        with_unit(
            text,
            &UNITS,
            "a duration (ms, or 30s, 15m, 12h, 7d), `unlimited` or `default`",
        )
    })
}

/// A size in bytes: `1073741824`, or with a unit: `512KiB`, `100MB`, `1GiB`, `2TB`.
pub(crate) fn size_setting(text: &str) -> Result<Setting, String> {
    const UNITS: [(&str, u64); 9] = [
        ("b", 1),
        ("kb", 1_000),
        ("kib", 1 << 10),
        ("mb", 1_000_000),
        ("mib", 1 << 20),
        ("gb", 1_000_000_000),
        ("gib", 1 << 30),
        ("tb", 1_000_000_000_000),
        ("tib", 1 << 40),
    ];
    setting_of(text, |text| {
        with_unit(
            text,
            &UNITS,
            "a size (bytes, or 512KiB, 100MB, 1GiB), `unlimited` or `default`",
        )
    })
}

/// Bytes as people read them: `512 B`, `1.5 KiB`, `20.0 MiB`, `3.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A time in ms since the epoch as UTC, `2026-12-06T04:58:00.123Z`.
pub fn utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// `--min-insync-replicas` of `alter`: a count ≥ 1, or `default`.
fn count_setting(text: &str) -> Result<Setting, String> {
    if text == "default" {
        return Ok(Setting::Default);
    }
    match text.parse::<u16>() {
        Ok(count) if count > 0 => Ok(Setting::Value(u64::from(count))),
        _ => Err(format!(
            "{text:?}: expected a number of replicas (1 to 65535) or `default`"
        )),
    }
}

fn shown(setting: Setting) -> String {
    match setting {
        Setting::Default => "default".into(),
        Setting::Unlimited => "unlimited".into(),
        Setting::Value(value) => value.to_string(),
    }
}

/// `spate cluster info`: the node's shards, with the partitions each owns and their bytes on
/// disk (the internal offsets topic included).
pub async fn cluster_info(client: &Client) -> Result<(), String> {
    let describe = |error: spate_client::ClientError| crate::describe(&error);
    let mut metadata = client.metadata(&[]).await.map_err(describe)?;
    let topics = metadata.topics.len();
    let internal = client
        .metadata(&[spate_proto::OFFSETS_TOPIC])
        .await
        .map_err(describe)?;
    metadata.topics.extend(internal.topics);
    let mut owned: Vec<(String, u32, u16)> = Vec::new();
    for topic in &metadata.topics {
        for partition in &topic.partitions {
            owned.push((topic.name.clone(), partition.partition.0, partition.shard.0));
        }
    }
    let named: Vec<(String, u32)> = owned
        .iter()
        .map(|(topic, partition, _)| (topic.clone(), *partition))
        .collect();
    let facts = client.describe_partitions(&named).await.map_err(describe)?;
    let mut rows = vec![[
        "SHARD",
        "ENDPOINT",
        "PARTITIONS",
        "SIZE",
        "SEGMENTS",
        "FENCED",
    ]
    .map(str::to_owned)
    .to_vec()];
    let mut total = 0u64;
    for shard in &metadata.shards {
        let mine: Vec<&spate_proto::DescribePartitionResponse> = owned
            .iter()
            .zip(&facts)
            .filter(|((_, _, owner), _)| *owner == shard.shard.0)
            .map(|(_, facts)| facts)
            .collect();
        let bytes: u64 = mine.iter().map(|facts| facts.size_bytes).sum();
        total += bytes;
        rows.push(vec![
            shard.shard.0.to_string(),
            shard.endpoint.clone(),
            mine.len().to_string(),
            human_bytes(bytes).replace(' ', ""),
            mine.iter()
                .map(|facts| u64::from(facts.segments))
                .sum::<u64>()
                .to_string(),
            mine.iter()
                .filter(|facts| !facts.fenced.is_empty())
                .count()
                .to_string(),
        ]);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "node: {} shards, {topics} topics, {} partitions ({} of them internal), {} on disk",
        metadata.shards.len(),
        owned.len(),
        owned.len()
            - named
                .iter()
                .filter(|(topic, _)| topic != spate_proto::OFFSETS_TOPIC)
                .count(),
        human_bytes(total)
    )
    .and_then(|()| table(&mut out, &rows))
    .map_err(|error| format!("cannot write to stdout: {error}"))
}

/// `spate cluster status`: the cluster's name and controller, then one row per member.
pub async fn cluster_status(client: &Client) -> Result<(), String> {
    let cluster = client
        .describe_cluster()
        .await
        .map_err(|error| crate::describe(&error))?;
    let mut out = std::io::stdout().lock();
    let answering = cluster.node.map_or_else(
        || "a node without an id".to_owned(),
        |node| format!("node {node}"),
    );
    let heading = if cluster.cluster.is_empty() {
        format!("a single node (no cluster; answered by {answering})")
    } else {
        format!(
            "cluster {}: {} members, controller {} (answered by {answering})",
            cluster.cluster,
            cluster.members.len(),
            cluster
                .controller
                .map_or_else(|| "none elected".to_owned(), |node| format!("node {node}"))
        )
    };
    // A RACK column when any member has one (`spate-node --rack`).
    let racks = cluster.members.iter().any(|member| !member.rack.is_empty());
    let mut heads = vec!["NODE", "SESSION", "STORAGE", "SINCE", "SHARDS"];
    if racks {
        heads.insert(4, "RACK");
    }
    let mut rows = vec![heads.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for member in &cluster.members {
        let controller = if cluster.controller == Some(member.node) {
            " (controller)"
        } else {
            ""
        };
        let mut row = vec![
            format!("{}{controller}", member.node),
            if member.session.is_empty() {
                "-".to_owned()
            } else {
                member.session.clone()
            },
            member.storage.clone(),
            since(member.since_ms),
            member.shards.join(","),
        ];
        if racks {
            let rack = if member.rack.is_empty() {
                "-".to_owned()
            } else {
                member.rack.clone()
            };
            row.insert(4, rack);
        }
        rows.push(row);
    }
    let mut partitions = Vec::new();
    if let Some(health) = &cluster.partitions {
        partitions.push(format!(
            "partitions: {} in all, {} under-replicated, {} offline",
            health.total, health.under_replicated, health.offline
        ));
        if !health.listed.is_empty() {
            let ids = |ids: &[u32]| {
                ids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut listed = vec![["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"]
                .map(str::to_owned)
                .to_vec()];
            for status in &health.listed {
                listed.push(vec![
                    status.topic.clone(),
                    status.partition.to_string(),
                    status
                        .leader
                        .map_or_else(|| "none (offline)".to_owned(), |node| node.to_string()),
                    ids(&status.replicas),
                    ids(&status.isr),
                ]);
            }
            let shown = health.listed.len();
            let all = u64::from(health.under_replicated) + u64::from(health.offline);
            if all > shown as u64 {
                partitions.push(format!("(the first {shown} of {all} are listed)"));
            }
            return writeln!(out, "{heading}")
                .and_then(|()| table(&mut out, &rows))
                .and_then(|()| {
                    partitions
                        .iter()
                        .try_for_each(|line| writeln!(out, "{line}"))
                })
                .and_then(|()| table(&mut out, &listed))
                .and_then(|()| print_moves(&mut out, cluster.moves.as_ref()))
                .map_err(|error| format!("cannot write to stdout: {error}"));
        }
    }
    writeln!(out, "{heading}")
        .and_then(|()| table(&mut out, &rows))
        .and_then(|()| {
            partitions
                .iter()
                .try_for_each(|line| writeln!(out, "{line}"))
        })
        .and_then(|()| print_moves(&mut out, cluster.moves.as_ref()))
        .map_err(|error| format!("cannot write to stdout: {error}"))
}

/// The moves in progress (`spate cluster status`): decommissioned nodes and the partitions
/// being moved, with their replicas, target and throttle.
fn print_moves(
    out: &mut impl Write,
    moves: Option<&spate_proto::MovesStatus>,
) -> std::io::Result<()> {
    let Some(moves) = moves else { return Ok(()) };
    let ids = |ids: &[u32]| {
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if !moves.decommissioned.is_empty() {
        writeln!(out, "decommissioned nodes: {}", ids(&moves.decommissioned))?;
    }
    if moves.moving == 0 {
        return Ok(());
    }
    writeln!(out, "moving: {} partitions", moves.moving)?;
    let mut rows = vec![["TOPIC", "PARTITION", "REPLICAS", "TARGET", "THROTTLE"]
        .map(str::to_owned)
        .to_vec()];
    for moving in &moves.listed {
        rows.push(vec![
            moving.topic.clone(),
            moving.partition.to_string(),
            ids(&moving.replicas),
            if moving.target.is_empty() {
                "off decommissioned nodes".to_owned()
            } else {
                ids(&moving.target)
            },
            moving
                .throttle
                .map_or_else(|| "-".to_owned(), |rate| format!("{}/s", human_bytes(rate))),
        ]);
    }
    table(out, &rows)?;
    if u64::from(moves.moving) > moves.listed.len() as u64 {
        writeln!(
            out,
            "(the first {} of {} are listed)",
            moves.listed.len(),
            moves.moving
        )?;
    }
    Ok(())
}

/// A Unix time in ms as UTC `YYYY-MM-DDTHH:MM:SSZ`; past the year 9999 (which RFC 3339
/// cannot write, and only a damaged record holds), the milliseconds as they are.
fn since(ms: u64) -> String {
    /// 9999-12-31T23:59:59Z.
    const RFC3339_SECONDS_MAX: u64 = 253_402_300_799;
    if ms / 1000 > RFC3339_SECONDS_MAX {
        return format!("{ms}ms");
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Writes rows as left-aligned columns separated by two spaces.
pub fn table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

pub async fn run(client: &Client, command: &TopicCommand) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let written = match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            retention_ms,
            retention_bytes,
            min_insync_replicas,
        } => {
            client
                .create_topic_with(CreateTopicRequest {
                    legacy_layout: false,
                    topic: name.clone(),
                    partitions: *partitions,
                    retention_ms: retention_ms.unwrap_or_default(),
                    retention_bytes: retention_bytes.unwrap_or_default(),
                    segment_bytes: Setting::Default,
                    replication_factor: replication_factor.unwrap_or(0),
                    min_insync_replicas: min_insync_replicas
                        .map_or(Setting::Default, |count| Setting::Value(u64::from(count))),
                })
                .await
                .map_err(|error| crate::describe(&error))?;
            writeln!(out, "created topic {name} with {partitions} partitions")
        }
        TopicCommand::Alter {
            name,
            retention_ms,
            retention_bytes,
            segment_bytes,
            min_insync_replicas,
        } => {
            if retention_ms.is_none()
                && retention_bytes.is_none()
                && segment_bytes.is_none()
                && min_insync_replicas.is_none()
            {
                return Err(
                    "nothing to change: give --retention-ms, --retention-bytes, \
                     --segment-bytes or --min-insync-replicas"
                        .into(),
                );
            }
            let altered = client
                .alter_topic_with(AlterTopicRequest {
                    topic: name.clone(),
                    retention_ms: *retention_ms,
                    retention_bytes: *retention_bytes,
                    segment_bytes: *segment_bytes,
                    min_insync_replicas: *min_insync_replicas,
                    validate_only: false,
                })
                .await
                .map_err(|error| crate::describe(&error))?;
            let min_insync = match min_insync_replicas {
                None => String::new(),
                Some(Setting::Value(count)) => format!(", min_insync_replicas {count}"),
                Some(_) => ", min_insync_replicas 1".to_owned(),
            };
            writeln!(
                out,
                "topic {name}: retention_ms {}, retention_bytes {}, segment_bytes {}{min_insync}",
                shown(altered.retention_ms),
                shown(altered.retention_bytes),
                shown(altered.segment_bytes)
            )
        }
        TopicCommand::List => {
            let topics = client
                .list_topics()
                .await
                .map_err(|error| crate::describe(&error))?;
            let mut rows = vec![vec![
                "TOPIC".to_owned(),
                "PARTITIONS".to_owned(),
                "RETENTION_MS".to_owned(),
                "RETENTION_BYTES".to_owned(),
            ]];
            for topic in topics {
                rows.push(vec![
                    topic.name,
                    topic.partitions.len().to_string(),
                    shown(topic.retention_ms),
                    shown(topic.retention_bytes),
                ]);
            }
            table(&mut out, &rows)
        }
        TopicCommand::Describe { name } => {
            let topic = client
                .describe_topic(name)
                .await
                .map_err(|error| crate::describe(&error))?;
            let mut rows = vec![[
                "PARTITION",
                "SHARD",
                "LOG_START",
                "HIGH_WATERMARK",
                "SIZE",
                "SEGMENTS",
                "FIRST_TIMESTAMP",
                "LAST_TIMESTAMP",
                "RATE_1M",
            ]
            .map(str::to_owned)
            .to_vec()];
            let time = |ms: Option<i64>| ms.map_or_else(|| "-".to_owned(), utc);
            for partition in &topic.partitions {
                #[allow(clippy::cast_precision_loss)]
                let rate = partition.records_last_minute as f64 / 60.0;
                rows.push(vec![
                    partition.partition.to_string(),
                    partition.shard.to_string(),
                    partition.log_start_offset.to_string(),
                    partition.high_watermark.to_string(),
                    human_bytes(partition.size_bytes).replace(' ', ""),
                    partition.segments.to_string(),
                    time(partition.first_timestamp),
                    time(partition.last_timestamp),
                    format!("{rate:.1}/s"),
                ]);
            }
            let total: u64 = topic.partitions.iter().map(|p| p.size_bytes).sum();
            let fences: Vec<String> = topic
                .partitions
                .iter()
                .filter_map(|p| {
                    p.fenced
                        .as_ref()
                        .map(|why| format!("partition {} is fenced: {why}", p.partition))
                })
                .collect();
            writeln!(
                out,
                "topic {}: {} partitions, retention_ms {}, retention_bytes {}, segment_bytes {}, min_insync_replicas {}, {} on disk",
                topic.name,
                topic.partitions.len(),
                shown(topic.retention_ms),
                shown(topic.retention_bytes),
                shown(topic.segment_bytes),
                shown(topic.min_insync_replicas),
                human_bytes(total)
            )
            .and_then(|()| table(&mut out, &rows))
            .and_then(|()| fences.iter().try_for_each(|line| writeln!(out, "{line}")))
        }
        TopicCommand::Trim {
            name,
            before,
            partitions,
        } => {
            let partitions = if partitions.is_empty() {
                let topic = client
                    .topic(name)
                    .await
                    .map_err(|error| crate::describe(&error))?;
                (0..u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX)).collect()
            } else {
                partitions.clone()
            };
            let mut rows = vec![vec!["PARTITION".to_owned(), "LOG_START".to_owned()]];
            for partition in partitions {
                let log_start = client
                    .delete_records(name, partition, before.0)
                    .await
                    .map_err(|error| {
                        format!("partition {partition}: {}", crate::describe(&error))
                    })?;
                rows.push(vec![partition.to_string(), log_start.to_string()]);
            }
            table(&mut out, &rows)
        }
        TopicCommand::Delete { name } => {
            client
                .delete_topic(name)
                .await
                .map_err(|error| crate::describe(&error))?;
            writeln!(out, "deleted topic {name}")
        }
    };
    written
        .and_then(|()| out.flush())
        .map_err(|error| format!("cannot write to stdout: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_times_read_and_print() {
        assert_eq!(duration_setting("7d"), Ok(Setting::Value(604_800_000)));
        assert_eq!(duration_setting("90s"), Ok(Setting::Value(90_000)));
        assert_eq!(duration_setting("3600000"), Ok(Setting::Value(3_600_000)));
        assert_eq!(duration_setting("unlimited"), Ok(Setting::Unlimited));
        assert!(duration_setting("7 weeks").is_err());
        assert_eq!(size_setting("1GiB"), Ok(Setting::Value(1 << 30)));
        assert_eq!(size_setting("100MB"), Ok(Setting::Value(100_000_000)));
        assert_eq!(size_setting("default"), Ok(Setting::Default));
        assert!(size_setting("99999999999TiB").is_err());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_796_531_387_123), "2026-12-06T04:29:47.123Z");
    }
}
