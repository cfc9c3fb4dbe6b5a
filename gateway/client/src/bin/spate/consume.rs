//! `spate consume`: prints records of a topic, one per line, as raw values or as JSON objects.
//! Without `--follow` it stops at the high watermark each partition had when it started.

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use clap::{Args, ValueEnum};
use spate_client::{Client, ConsumedRecord, Consumer, ConsumerConfig, StartPosition};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// The record's value as it was produced.
    Value,
    /// `{"partition":..,"offset":..,"timestamp":..,"key":..,"value":..}`; a key or value that
    /// is not UTF-8 appears base64-encoded as `key_b64` / `value_b64` instead.
    Json,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Read only this partition. [default: all]
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Where to start: `earliest`, `latest`, an offset, or `@TIMESTAMP_MS` (the first record
    /// at or after that time).
    #[arg(long, value_name = "POSITION", default_value = "earliest", value_parser = position)]
    from: StartPosition,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Keep waiting for new records instead of stopping at the high watermark.
    #[arg(long)]
    follow: bool,
    #[arg(long, value_enum, default_value = "value")]
    format: Format,
    /// How long each fetch waits at the node for new records.
    #[arg(long, value_name = "MS", default_value = "500")]
    max_wait_ms: u64,
}

fn position(text: &str) -> Result<StartPosition, String> {
    match text {
        "earliest" => Ok(StartPosition::Earliest),
        "latest" => Ok(StartPosition::Latest),
        _ => {
            if let Some(timestamp) = text.strip_prefix('@') {
                timestamp
                    .parse::<i64>()
                    .map(StartPosition::Timestamp)
                    .map_err(|_| format!("`{timestamp}` is not a timestamp in ms"))
            } else {
                text.parse::<u64>().map(StartPosition::Offset).map_err(|_| {
                    format!("`{text}` is not earliest, latest, an offset or @TIMESTAMP_MS")
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
    out.extend_from_slice(b"}\n");
}

pub async fn run(client: &Client, args: &ConsumeArgs) -> Result<(), String> {
    let config = ConsumerConfig {
        start: args.from,
        max_wait: Duration::from_millis(args.max_wait_ms),
        stop_at_end: !args.follow,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, &args.topic, args.partition.map(|p| vec![p]), config)
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
        line.clear();
        match args.format {
            Format::Value => {
                line.extend_from_slice(record.value.as_deref().unwrap_or_default());
                line.push(b'\n');
            }
            Format::Json => json_line(&mut line, &record),
        }
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
            "{\"partition\":2,\"offset\":41,\"timestamp\":1700000000000,\"key\":\"k\\\"1\",\"value\":\"line\\ttab\\\\ \\u0001 \u{e9}\"}\n"
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
            "{\"partition\":2,\"offset\":41,\"timestamp\":1700000000000,\"key\":null,\"value_b64\":\"/wBB\"}\n"
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
    }
}
