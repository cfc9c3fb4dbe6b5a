//! `spate topic create|alter|list|describe|delete`: admin calls, printed as aligned columns.

use std::io::Write;

use clap::Subcommand;
use spate_client::{Client, Setting};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
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
    List,
    /// Show a topic's partitions: owner shard, log start offset, high watermark.
    Describe { name: String },
    /// Delete a topic and all its records.
    Delete { name: String },
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
fn table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
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
                .map_err(|error| error.to_string())?;
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
                .map_err(|error| error.to_string())?;
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
                .map_err(|error| error.to_string())?;
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
                .map_err(|error| error.to_string())?;
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
        TopicCommand::Delete { name } => {
            client
                .delete_topic(name)
                .await
                .map_err(|error| error.to_string())?;
            writeln!(out, "deleted topic {name}")
        }
    };
    written
        .and_then(|()| out.flush())
        .map_err(|error| format!("cannot write to stdout: {error}"))
}
