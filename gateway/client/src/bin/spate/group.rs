//! `spate group list|describe|reset-offsets|delete`: consumer groups, printed as aligned
//! columns.

use std::io::Write;

use clap::Subcommand;
use spate_client::{Client, ClientError, ErrorCode, PartitionLag};
use spate_proto::OffsetSpec;

use crate::topic::table;

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups (with members, or with committed offsets) and their state.
    #[command(after_help = "Example:\n  spate group list")]
    List,
    /// Show a group's members and, per partition, its committed offset, the high watermark,
    /// the lag between them and the member reading it.
    #[command(after_help = "Example:\n  spate group describe billing")]
    Describe { group: String },
    /// Move a group's committed offsets of a topic (refused while the group has members).
    #[command(
        after_help = "Examples:\n  spate group reset-offsets billing --topic clicks --to earliest   # read it all again\n  spate group reset-offsets billing --topic clicks --to latest     # skip the backlog\n  spate group reset-offsets billing --topic clicks --to @1767225600000\n  spate group reset-offsets billing --topic clicks --to 5000 --partition 2"
    )]
    ResetOffsets {
        group: String,
        #[arg(long, value_name = "TOPIC")]
        topic: String,
        /// `earliest`, `latest`, an offset, or `@TIMESTAMP_MS` (the first record at or after
        /// that time).
        #[arg(long, value_name = "POSITION", value_parser = target)]
        to: Target,
        /// Only these partitions (repeat the flag for several). [default: every partition]
        #[arg(long = "partition", value_name = "N")]
        partitions: Vec<u32>,
    },
    /// Delete a group and its committed offsets (refused while it has members).
    #[command(after_help = "Example:\n  spate group delete billing")]
    Delete { group: String },
}

/// `--to` of `reset-offsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
}

fn target(text: &str) -> Result<Target, String> {
    match text {
        "earliest" => Ok(Target::Earliest),
        "latest" => Ok(Target::Latest),
        _ => match text.strip_prefix('@') {
            Some(time) => time
                .parse()
                .map(Target::Timestamp)
                .map_err(|_| format!("`{time}` is not a timestamp in ms")),
            None => text.parse().map(Target::Offset).map_err(|_| {
                format!("`{text}` is not earliest, latest, an offset or @TIMESTAMP_MS")
            }),
        },
    }
}

fn describe_error(error: &ClientError) -> String {
    crate::describe(error)
}

fn lag_rows(rows: &[PartitionLag]) -> Vec<Vec<String>> {
    let mut table = vec![vec![
        "TOPIC".to_owned(),
        "PARTITION".to_owned(),
        "COMMITTED".to_owned(),
        "HIGH-WATERMARK".to_owned(),
        "LAG".to_owned(),
        "MEMBER".to_owned(),
    ]];
    for row in rows {
        let shown = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
        table.push(vec![
            row.topic.clone(),
            row.partition.to_string(),
            shown(row.committed),
            row.high_watermark.to_string(),
            shown(row.lag),
            row.member.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table
}

pub async fn run(client: &Client, command: &GroupCommand) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let written = match command {
        GroupCommand::List => {
            let groups = client.list_groups().await.map_err(|e| describe_error(&e))?;
            let mut rows = vec![vec![
                "GROUP".to_owned(),
                "STATE".to_owned(),
                "PROTOCOL".to_owned(),
            ]];
            for group in groups {
                let protocol = if group.protocol_type.is_empty() {
                    "-".to_owned()
                } else {
                    group.protocol_type
                };
                rows.push(vec![group.group, group.state, protocol]);
            }
            table(&mut out, &rows)
        }
        GroupCommand::Describe { group } => {
            let (info, rows) = client
                .describe_group_offsets(group)
                .await
                .map_err(|e| describe_error(&e))?;
            if info.state == "Dead" {
                return Err(format!("group {group} does not exist"));
            }
            let protocol = if info.protocol.is_empty() {
                String::new()
            } else {
                format!(", {} {}", info.protocol_type, info.protocol)
            };
            writeln!(
                out,
                "group {group}: {}{protocol}, {} members",
                info.state,
                info.members.len()
            )
            .and_then(|()| {
                for member in &info.members {
                    writeln!(out, "  member {} ({})", member.member_id, member.client_id)?;
                }
                table(&mut out, &lag_rows(&rows))
            })
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to,
            partitions,
        } => {
            let info = client
                .describe_group(group)
                .await
                .map_err(|e| describe_error(&e))?;
            if !info.members.is_empty() {
                return Err(format!(
                    "group {group} has {} members: stop them before moving its offsets",
                    info.members.len()
                ));
            }
            let metadata = client.topic(topic).await.map_err(|e| describe_error(&e))?;
            let count = u32::try_from(metadata.partitions.len()).unwrap_or(u32::MAX);
            let chosen: Vec<u32> = if partitions.is_empty() {
                (0..count).collect()
            } else {
                if let Some(missing) = partitions.iter().find(|p| **p >= count) {
                    return Err(format!("topic {topic} has no partition {missing}"));
                }
                partitions.clone()
            };
            let mut offsets = Vec::with_capacity(chosen.len());
            for partition in chosen {
                let spec = match to {
                    Target::Earliest => OffsetSpec::Earliest,
                    Target::Latest => OffsetSpec::Latest,
                    Target::Timestamp(time) => OffsetSpec::Timestamp(*time),
                    Target::Offset(offset) => {
                        offsets.push((topic.clone(), partition, *offset));
                        continue;
                    }
                };
                let listed = client
                    .list_offsets(topic, partition, spec)
                    .await
                    .map_err(|e| describe_error(&e))?;
                offsets.push((topic.clone(), partition, listed.offset));
            }
            client
                .commit_offsets(group, offsets.clone())
                .await
                .map_err(|error| match error.code() {
                    Some(ErrorCode::UnknownMemberId) => format!(
                        "group {group} has members now: stop them before moving its offsets"
                    ),
                    _ => describe_error(&error),
                })?;
            let mut rows = vec![vec![
                "TOPIC".to_owned(),
                "PARTITION".to_owned(),
                "COMMITTED".to_owned(),
            ]];
            for (topic, partition, offset) in offsets {
                rows.push(vec![topic, partition.to_string(), offset.to_string()]);
            }
            table(&mut out, &rows)
        }
        GroupCommand::Delete { group } => {
            client
                .delete_group(group)
                .await
                .map_err(|error| match error.code() {
                    Some(ErrorCode::NonEmptyGroup) => {
                        format!("group {group} has members: stop them before deleting it")
                    }
                    Some(ErrorCode::GroupIdNotFound) => format!("group {group} does not exist"),
                    _ => describe_error(&error),
                })?;
            writeln!(out, "deleted group {group}")
        }
    };
    written.map_err(|error| format!("cannot write to stdout: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(target("earliest"), Ok(Target::Earliest));
        assert_eq!(target("latest"), Ok(Target::Latest));
        assert_eq!(target("42"), Ok(Target::Offset(42)));
        assert_eq!(target("@7"), Ok(Target::Timestamp(7)));
        assert!(target("soon").is_err());
    }
}
