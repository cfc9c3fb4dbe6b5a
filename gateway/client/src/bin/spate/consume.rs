//! `spate consume`: prints records of a topic, one per line, as raw values, JSON objects or a
//! kcat-style template. Without `--follow` it stops at the high watermark each partition had
//! when it started; `--until` stops earlier.

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use clap::{Args, ValueEnum};
use spate_client::{
    Client, ConsumedRecord, Consumer, ConsumerConfig, EndPosition, GroupConfig, GroupConsumer,
    OffsetReset, StartPosition,
};

/// How each record is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// The record's value as it was produced.
    Value,
    /// `{"partition":..,"offset":..,"timestamp":..,"key":..,"value":..,"headers":[..]}`; a
    /// key or value that is not UTF-8 appears base64-encoded as `key_b64` / `value_b64`.
    Json,
    /// A kcat-style template (`%p %o %s\n`, see `--format`).
    Template(Vec<Piece>),
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    KeyLength,
    Value,
    ValueLength,
    Headers,
}

/// `--offset-reset`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ResetArg {
    Earliest,
    Latest,
    Error,
}

fn format(text: &str) -> Result<Format, String> {
    match text {
        "value" => return Ok(Format::Value),
        "json" => return Ok(Format::Json),
        _ => {}
    }
    if !text.contains('%') {
        return Err(format!(
            "`{text}` is not value, json or a template with %-fields (such as '%p %o %s\\n')"
        ));
    }
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut characters = text.chars();
    let flush = |literal: &mut Vec<u8>, pieces: &mut Vec<Piece>| {
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(literal)));
        }
    };
    while let Some(character) = characters.next() {
        match character {
            '%' => {
                let field = match characters.next() {
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('T') => Piece::Timestamp,
                    Some('k') => Piece::Key,
                    Some('K') => Piece::KeyLength,
                    Some('s') => Piece::Value,
                    Some('S') => Piece::ValueLength,
                    Some('h') => Piece::Headers,
                    Some('%') => {
                        literal.push(b'%');
                        continue;
                    }
                    other => {
                        return Err(format!(
                            "unknown template field %{} (known: %t %p %o %T %k %K %s %S %h %%)",
                            other.map(String::from).unwrap_or_default()
                        ))
                    }
                };
                flush(&mut literal, &mut pieces);
                pieces.push(field);
            }
            '\\' => crate::push_escaped(&mut characters, &mut literal)?,
            other => {
                let mut buffer = [0u8; 4];
                literal.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    flush(&mut literal, &mut pieces);
    Ok(Format::Template(pieces))
}

/// Prints `record` through a template.
fn template_line(out: &mut Vec<u8>, pieces: &[Piece], topic: &str, record: &ConsumedRecord) {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.extend_from_slice(text),
            Piece::Topic => out.extend_from_slice(topic.as_bytes()),
            Piece::Partition => out.extend_from_slice(record.partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
            Piece::Timestamp => out.extend_from_slice(record.timestamp.to_string().as_bytes()),
            Piece::Key => out.extend_from_slice(record.key.as_deref().unwrap_or_default()),
            Piece::KeyLength => out.extend_from_slice(
                record
                    .key
                    .as_ref()
                    .map_or(-1, |key| i64::try_from(key.len()).unwrap_or(i64::MAX))
                    .to_string()
                    .as_bytes(),
            ),
            Piece::Value => out.extend_from_slice(record.value.as_deref().unwrap_or_default()),
            Piece::ValueLength => out.extend_from_slice(
                record
                    .value
                    .as_ref()
                    .map_or(-1, |value| i64::try_from(value.len()).unwrap_or(i64::MAX))
                    .to_string()
                    .as_bytes(),
            ),
            Piece::Headers => {
                // kcat's form: name=value pairs separated by commas.
                for (index, (name, value)) in record.headers.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(name.as_bytes());
                    out.push(b'=');
                    out.extend_from_slice(value.as_deref().unwrap_or_default());
                }
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Read only this partition. [default: all]
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Where to start: `earliest`, `latest`, an offset, `-N` (N records before the end),
    /// `@TIMESTAMP_MS` (the first record at or after that time), or per partition
    /// `P=POSITION,...` (`0=100,1=-10`: only those partitions are read).
    #[arg(
        long,
        value_name = "POSITION",
        default_value = "earliest",
        value_parser = starts,
        allow_hyphen_values = true
    )]
    from: Starts,
    /// Stop before this offset, or `@TIMESTAMP_MS` (before the first record at or after
    /// that time), in each partition. [default: the end (or never, with --follow)]
    #[arg(long, value_name = "END", value_parser = end_position)]
    until: Option<EndPosition>,
    /// What an offset outside a partition's records (past its end, or removed by
    /// retention) does: go on from the earliest or the latest record, or fail (Kafka's
    /// auto.offset.reset).
    #[arg(long, value_enum, default_value = "error")]
    offset_reset: ResetArg,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Keep waiting for new records instead of stopping at the high watermark.
    #[arg(long)]
    follow: bool,
    /// `value`, `json`, or a template: %t topic, %p partition, %o offset, %T timestamp
    /// (ms), %k key, %K key length (-1: none), %s value, %S value length, %h headers
    /// (`name=value,...`), %% a percent sign; escapes \n \t \r \0 \\. A template
    /// ends its own lines: '%p:%o %s\n'.
    #[arg(long, value_name = "FORMAT", default_value = "value", value_parser = format)]
    format: Format,
    /// How long each fetch waits at the node for new records.
    #[arg(long, value_name = "MS", default_value = "500")]
    max_wait_ms: u64,
    /// Read as a member of this consumer group: the topic's partitions are split among the
    /// group's members, each record printed is committed (at most a second later, and at
    /// exit), and a restart goes on after the last commit. Runs until Ctrl-C or SIGTERM (or
    /// --count), then leaves the group; --from applies to partitions the group never
    /// committed.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
}

/// `--from`: one start for every partition, or one per listed partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Starts {
    All(StartPosition),
    Each(Vec<(u32, StartPosition)>),
}

fn starts(text: &str) -> Result<Starts, String> {
    if !text.contains('=') {
        return position(text).map(Starts::All);
    }
    text.split(',')
        .map(|item| {
            let (partition, start) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}` is not PARTITION=POSITION"))?;
            let partition = partition
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("`{partition}` is not a partition number"))?;
            Ok((partition, position(start.trim())?))
        })
        .collect::<Result<Vec<_>, String>>()
        .and_then(|each| {
            let mut seen = std::collections::BTreeSet::new();
            match each.iter().find(|(partition, _)| !seen.insert(*partition)) {
                Some((partition, _)) => Err(format!("partition {partition} is given twice")),
                None => Ok(Starts::Each(each)),
            }
        })
}

fn end_position(text: &str) -> Result<EndPosition, String> {
    match text.strip_prefix('@') {
        Some(timestamp) => timestamp
            .parse::<i64>()
            .map(EndPosition::Timestamp)
            .map_err(|_| format!("`{timestamp}` is not a timestamp in ms")),
        None => text
            .parse::<u64>()
            .map(EndPosition::Offset)
            .map_err(|_| format!("`{text}` is not an offset or @TIMESTAMP_MS")),
    }
}

fn position(text: &str) -> Result<StartPosition, String> {
    match text {
        "earliest" => Ok(StartPosition::Earliest),
        "latest" => Ok(StartPosition::Latest),
        _ => {
            if let Some(count) = text.strip_prefix('-') {
                count
                    .parse::<u64>()
                    .map(StartPosition::FromEnd)
                    .map_err(|_| format!("`{text}` is not -N (N records before the end)"))
            } else if let Some(timestamp) = text.strip_prefix('@') {
                timestamp
                    .parse::<i64>()
                    .map(StartPosition::Timestamp)
                    .map_err(|_| format!("`{timestamp}` is not a timestamp in ms"))
            } else {
                text.parse::<u64>().map(StartPosition::Offset).map_err(|_| {
                    format!("`{text}` is not earliest, latest, an offset, -N or @TIMESTAMP_MS")
                })
            }
        }
    }
}

/// Appends `text` as a JSON string literal.
fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for character in text.chars() {
        match character {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            control if u32::from(control) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", u32::from(control)).as_bytes());
            }
            other => {
                let mut buffer = [0u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Appends `"name":"text"`, `"name_b64":"..."` for bytes that are not UTF-8, or `"name":null`.
fn json_bytes(out: &mut Vec<u8>, name: &str, bytes: Option<&[u8]>) {
    match bytes {
        None => out.extend_from_slice(format!("\"{name}\":null").as_bytes()),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.extend_from_slice(format!("\"{name}\":").as_bytes());
                json_string(out, text);
            }
            Err(_) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                out.extend_from_slice(format!("\"{name}_b64\":\"{encoded}\"").as_bytes());
            }
        },
    }
}

fn json_line(out: &mut Vec<u8>, record: &ConsumedRecord) {
    out.extend_from_slice(
        format!(
            "{{\"partition\":{},\"offset\":{},\"timestamp\":{},",
            record.partition, record.offset, record.timestamp
        )
        .as_bytes(),
    );
    json_bytes(out, "key", record.key.as_deref());
    out.push(b',');
    json_bytes(out, "value", record.value.as_deref());
    out.extend_from_slice(b",\"headers\":[");
    for (index, (name, value)) in record.headers.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json_string(out, name);
        out.push(b',');
        json_bytes(out, "value", value.as_deref());
        out.push(b'}');
    }
    out.extend_from_slice(b"]}\n");
}

/// How often a group consumer flushes what it printed and commits it.
const GROUP_COMMIT_EVERY: Duration = Duration::from_secs(1);

/// Writes one record as `args.format` says.
fn render(line: &mut Vec<u8>, args: &ConsumeArgs, record: &ConsumedRecord) {
    line.clear();
    match &args.format {
        Format::Value => {
            line.extend_from_slice(record.value.as_deref().unwrap_or_default());
            line.push(b'\n');
        }
        Format::Json => json_line(line, record),
        Format::Template(pieces) => template_line(line, pieces, &args.topic, record),
    }
}

/// `spate consume --group`: prints the group's share of the topic for this member, commits
/// what it printed (after flushing it), and leaves the group at the end.
async fn run_group(client: &Client, args: &ConsumeArgs, group: &str) -> Result<(), String> {
    let start = match &args.from {
        Starts::All(start) => *start,
        Starts::Each(_) => {
            return Err(
                "with --group, --from takes one position (the group assigns the partitions)".into(),
            )
        }
    };
    if args.partition.is_some() || args.until.is_some() {
        return Err(
            "--group assigns the partitions and follows them: drop --partition and --until".into(),
        );
    }
    let config = GroupConfig {
        start,
        max_wait: Duration::from_millis(args.max_wait_ms),
        auto_commit_interval: None,
        offset_reset: match args.offset_reset {
            ResetArg::Earliest => OffsetReset::Earliest,
            ResetArg::Latest => OffsetReset::Latest,
            ResetArg::Error => OffsetReset::Error,
        },
        client_id: format!("spate-consume-{}", std::process::id()),
        // Only what reached stdout counts as processed.
        manual_processing: true,
        ..GroupConfig::default()
    };
    let mut interrupts = crate::produce::Interrupts::new()?;
    let mut consumer = GroupConsumer::join(client, group, &args.topic, config)
        .await
        .map_err(|error| crate::describe(&error))?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let mut line = Vec::with_capacity(4096);
    let mut printed = 0u64;
    let mut last_commit = std::time::Instant::now();
    // The last offset written to the buffer, per partition: processed once flushed.
    let mut unflushed: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    let outcome: Result<(), String> = loop {
        if args.count.is_some_and(|count| printed >= count) {
            break Ok(());
        }
        // Flushed before every wait (a poll may rebalance, which commits).
        if consumer.buffered() == 0 || last_commit.elapsed() >= GROUP_COMMIT_EVERY {
            if let Err(error) = out.flush() {
                break Err(format!("cannot write to stdout: {error}"));
            }
            for (partition, offset) in std::mem::take(&mut unflushed) {
                consumer.mark_processed(partition, offset);
            }
            if last_commit.elapsed() >= GROUP_COMMIT_EVERY {
                last_commit = std::time::Instant::now();
                if let Err(error) = consumer.commit().await {
                    tracing::debug!("commit failed: {error}");
                }
            }
        }
        let record = tokio::select! {
            record = consumer.poll(GROUP_COMMIT_EVERY) => record,
            () = interrupts.next() => break Ok(()),
        };
        let record = match record {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(error) => break Err(crate::describe(&error)),
        };
        render(&mut line, args, &record);
        if let Err(error) = out.write_all(&line) {
            break Err(format!("cannot write to stdout: {error}"));
        }
        unflushed.insert(record.partition, record.offset);
        printed += 1;
    };
    // Only what reached stdout is committed.
    match out.flush() {
        Ok(()) => {
            for (partition, offset) in unflushed {
                consumer.mark_processed(partition, offset);
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(error) => return Err(format!("cannot write to stdout: {error}")),
    }
    let closed = consumer.close().await;
    outcome?;
    closed.map_err(|error| format!("leaving group {group}: {}", crate::describe(&error)))?;
    crate::notice(format!(
        "left group {group} after {printed} records; offsets committed"
    ));
    Ok(())
}

pub async fn run(client: &Client, args: &ConsumeArgs) -> Result<(), String> {
    if let Some(group) = &args.group {
        return run_group(client, args, group).await;
    }
    let start = match &args.from {
        Starts::All(start) => *start,
        Starts::Each(_) => StartPosition::Earliest,
    };
    let config = ConsumerConfig {
        start,
        max_wait: Duration::from_millis(args.max_wait_ms),
        stop_at_end: !args.follow,
        until: args.until,
        offset_reset: match args.offset_reset {
            ResetArg::Earliest => OffsetReset::Earliest,
            ResetArg::Latest => OffsetReset::Latest,
            ResetArg::Error => OffsetReset::Error,
        },
        ..ConsumerConfig::default()
    };
    let starts = match (&args.from, args.partition) {
        (Starts::Each(_), Some(_)) => {
            return Err(
                "give the partitions either in --from P=POSITION or with --partition".into(),
            )
        }
        (Starts::Each(each), None) => Some(each.clone()),
        (Starts::All(start), Some(partition)) => Some(vec![(partition, *start)]),
        (Starts::All(_), None) => None,
    };
    let mut consumer = Consumer::starting_at(client, &args.topic, starts, config)
        .await
        .map_err(|error| crate::describe(&error))?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let mut line = Vec::with_capacity(4096);
    let mut printed = 0u64;
    let outcome = loop {
        if args.count.is_some_and(|count| printed >= count) {
            break Ok(());
        }
        if consumer.buffered() == 0 {
            if let Err(error) = out.flush() {
                break Err(error);
            }
        }
        let record = match consumer.next().await {
            Ok(Some(record)) => record,
            Ok(None) => break Ok(()),
            Err(error) => {
                let _ = out.flush();
                return Err(crate::describe(&error));
            }
        };
        render(&mut line, args, &record);
        if let Err(error) = out.write_all(&line) {
            break Err(error);
        }
        printed += 1;
    };
    match outcome.and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // The reader went away (`spate consume | head`): not a failure of ours.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(format!("cannot write to stdout: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn json_lines_escape_text_and_encode_binary() {
        let mut out = Vec::new();
        let record = ConsumedRecord {
            partition: 2,
            offset: 41,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k\"1")),
            value: Some(Bytes::from_static(b"line\ttab\\ \x01 \xc3\xa9")),
            headers: Vec::new(),
        };
        json_line(&mut out, &record);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"partition\":2,\"offset\":41,\"timestamp\":1700000000000,\"key\":\"k\\\"1\",\"value\":\"line\\ttab\\\\ \\u0001 \u{e9}\",\"headers\":[]}\n"
        );
        let mut out = Vec::new();
        let record = ConsumedRecord {
            key: None,
            value: Some(Bytes::from_static(&[0xff, 0x00, 0x41])),
            ..record
        };
        json_line(&mut out, &record);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"partition\":2,\"offset\":41,\"timestamp\":1700000000000,\"key\":null,\"value_b64\":\"/wBB\",\"headers\":[]}\n"
        );
    }

    #[test]
    fn positions_parse() {
        assert_eq!(position("earliest"), Ok(StartPosition::Earliest));
        assert_eq!(position("latest"), Ok(StartPosition::Latest));
        assert_eq!(position("17"), Ok(StartPosition::Offset(17)));
        assert_eq!(
            position("@1700000000000"),
            Ok(StartPosition::Timestamp(1_700_000_000_000))
        );
        assert!(position("soon").is_err());
        assert!(position("@x").is_err());
        assert_eq!(position("-10"), Ok(StartPosition::FromEnd(10)));
        assert_eq!(
            starts("0=100, 1=-5,2=@7"),
            Ok(Starts::Each(vec![
                (0, StartPosition::Offset(100)),
                (1, StartPosition::FromEnd(5)),
                (2, StartPosition::Timestamp(7)),
            ]))
        );
        assert!(starts("x=1").is_err());
        assert_eq!(
            starts("0=10,0=20"),
            Err("partition 0 is given twice".to_owned())
        );
        assert_eq!(end_position("@5"), Ok(EndPosition::Timestamp(5)));
        assert_eq!(end_position("9"), Ok(EndPosition::Offset(9)));
    }

    #[test]
    fn templates_print_every_field_like_kcat() {
        let Ok(Format::Template(pieces)) = format("%t/%p@%o %T %k(%K)=%s(%S) [%h] 100%%\\n") else {
            panic!("a template");
        };
        let record = ConsumedRecord {
            partition: 1,
            offset: 7,
            timestamp: 99,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![
                ("a".to_owned(), Some(Bytes::from_static(b"1"))),
                ("b".to_owned(), None),
            ],
        };
        let mut out = Vec::new();
        template_line(&mut out, &pieces, "t", &record);
        assert_eq!(out, b"t/1@7 99 (-1)=v(1) [a=1,b=] 100%\n");
        assert!(format("%x").is_err());
        assert!(format("plain").is_err());
        assert_eq!(format("json"), Ok(Format::Json));
    }
}
