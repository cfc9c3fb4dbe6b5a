//! `spate topic create|alter|list|describe|trim|delete`: admin calls, printed as aligned
//! columns.

use std::io::Write;

use clap::Subcommand;
use spate_client::{Client, Setting};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(
        after_help = "Examples:\n  spate topic create clicks --partitions 4\n  spate topic create audit --partitions 1 --retention-ms unlimited\n  spate topic create metrics --partitions 8 --retention-ms 86400000 --retention-bytes 10737418240"
    )]
    Create {
        name: String,
        /// Number of partitions (fixed for the topic's life).
        #[arg(long, value_name = "N")]
        partitions: u32,
        /// Delete records older than this, in ms, or `unlimited`. [default: the node's]
        #[arg(long, value_name = "MS", value_parser = setting)]
        retention_ms: Option<Setting>,
        /// Delete the oldest segments while a partition holds more than this, in bytes, or
        /// `unlimited`. [default: the node's]
        #[arg(long, value_name = "BYTES", value_parser = setting)]
        retention_bytes: Option<Setting>,
    },
    /// Change a topic's retention (settings not given stay as they are).
    #[command(
        after_help = "Examples:\n  spate topic alter clicks --retention-ms 3600000     # keep one hour\n  spate topic alter clicks --retention-bytes default  # back to the node's setting"
    )]
    Alter {
        name: String,
        /// Delete records older than this, in ms; `unlimited`; or `default` (the node's).
        #[arg(long, value_name = "MS", value_parser = setting)]
        retention_ms: Option<Setting>,
        /// Delete the oldest segments while a partition holds more than this, in bytes;
        /// `unlimited`; or `default` (the node's).
        #[arg(long, value_name = "BYTES", value_parser = setting)]
        retention_bytes: Option<Setting>,
    },
    /// List topics with their partition counts and retention.
    #[command(after_help = "Example:\n  spate topic list")]
    List,
    /// Show a topic's partitions: owner shard, log start offset, high watermark.
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

fn setting(text: &str) -> Result<Setting, String> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(Setting::Unlimited);
    }
    if text.eq_ignore_ascii_case("default") {
        return Ok(Setting::Default);
    }
    text.parse::<u64>()
        .map(Setting::Value)
        .map_err(|_| format!("`{text}` is neither a number nor `unlimited` or `default`"))
}

fn shown(setting: Setting) -> String {
    match setting {
        Setting::Default => "default".into(),
        Setting::Unlimited => "unlimited".into(),
        Setting::Value(value) => value.to_string(),
    }
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
            retention_ms,
            retention_bytes,
        } => {
            client
                .create_topic(
                    name,
                    *partitions,
                    retention_ms.unwrap_or_default(),
                    retention_bytes.unwrap_or_default(),
                )
                .await
                .map_err(|error| crate::describe(&error))?;
            writeln!(out, "created topic {name} with {partitions} partitions")
        }
        TopicCommand::Alter {
            name,
            retention_ms,
            retention_bytes,
        } => {
            if retention_ms.is_none() && retention_bytes.is_none() {
                return Err(
                    "nothing to change: give --retention-ms and/or --retention-bytes".into(),
                );
            }
            let (ms, bytes) = client
                .alter_topic(name, *retention_ms, *retention_bytes)
                .await
                .map_err(|error| crate::describe(&error))?;
            writeln!(
                out,
                "topic {name}: retention_ms {}, retention_bytes {}",
                shown(ms),
                shown(bytes)
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
            let mut rows = vec![vec![
                "PARTITION".to_owned(),
                "SHARD".to_owned(),
                "LOG_START".to_owned(),
                "HIGH_WATERMARK".to_owned(),
            ]];
            for partition in &topic.partitions {
                rows.push(vec![
                    partition.partition.to_string(),
                    partition.shard.to_string(),
                    partition.log_start_offset.to_string(),
                    partition.high_watermark.to_string(),
                ]);
            }
            writeln!(
                out,
                "topic {}: {} partitions, retention_ms {}, retention_bytes {}, segment_bytes {}",
                topic.name,
                topic.partitions.len(),
                shown(topic.retention_ms),
                shown(topic.retention_bytes),
                shown(topic.segment_bytes)
            )
            .and_then(|()| table(&mut out, &rows))
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
