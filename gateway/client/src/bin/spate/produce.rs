//! `spate produce`: one record per stdin line, pipelined through the SDK producer. With
//! `--report-acks`, one `LINE<TAB>PARTITION<TAB>OFFSET` line per acknowledged record, flushed
//! as acknowledgements arrive, so an interrupted script knows exactly what was stored.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use spate_client::{
    Client, ClientError, Compression, Delivery, Durability, Producer, ProducerConfig,
    ProducerRecord,
};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// Records read ahead of their acknowledgements (the producer's buffer bounds bytes too).
const ACKS_PENDING_MAX: usize = 64 * 1024;

/// Failed lines reported one by one on stderr; the final summary counts all of them.
const FAILURES_SHOWN_MAX: u64 = 10;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DurabilityArg {
    /// Acknowledged once `fdatasync` covered the record.
    Fsync,
    /// Acknowledged once the write reached the device (lost on power failure).
    Write,
    /// Acknowledged once the shard assigned an offset (lost if the node crashes).
    None,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: String,
    /// Send every record to this partition. [default: by key hash, or spread when no key]
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Split each line into key and value at the first occurrence of SEP. A line without SEP
    /// is an error (reported, not sent).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// When records are acknowledged.
    #[arg(long, value_enum, default_value = "fsync")]
    durability: DurabilityArg,
    /// Print `LINE<TAB>PARTITION<TAB>OFFSET` for every acknowledged record.
    #[arg(long)]
    report_acks: bool,
    /// Wait up to this long for more records before sending a partition's batch.
    #[arg(long, value_name = "MS", default_value = "5")]
    linger_ms: u64,
    /// Send a partition's batch once it holds this many bytes (before compression).
    #[arg(long, value_name = "BYTES", default_value = "262144")]
    batch_bytes: u32,
    /// Compress each batch with this codec (Kafka's; a batch that would not shrink is sent
    /// uncompressed). Every client reads every codec.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionArg {
    fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// One line's outcome on its way to the printer.
enum Outcome {
    Sent(u64, Delivery),
    Failed(u64, String),
}

struct Tally {
    acknowledged: u64,
    failed: u64,
    first_failure: Option<String>,
}

fn split_key(line: &[u8], separator: &[u8]) -> Option<(usize, usize)> {
    if separator.is_empty() {
        return None;
    }
    line.windows(separator.len())
        .position(|window| window == separator)
        .map(|at| (at, at + separator.len()))
}

pub async fn run(client: &Client, args: &ProduceArgs) -> Result<(), String> {
    let config = ProducerConfig {
        durability: match args.durability {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::Write => Durability::Write,
            DurabilityArg::None => Durability::None,
        },
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(args.linger_ms),
        compression: args.compression.codec(),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, &args.topic, config)
        .await
        .map_err(|error| error.to_string())?;
    let (outcomes, pending) = mpsc::channel(ACKS_PENDING_MAX);
    let printer = tokio::spawn(print_acks(pending, args.report_acks));
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut input = tokio::io::BufReader::with_capacity(1 << 20, tokio::io::stdin());
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut read_error = None;
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                read_error = Some(format!("cannot read stdin: {error}"));
                break;
            }
        }
        number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let mut record = ProducerRecord {
            partition: args.partition,
            ..ProducerRecord::default()
        };
        match separator {
            Some(separator) => match split_key(&line, separator) {
                Some((key_end, value_start)) => {
                    record.key = Some(Bytes::copy_from_slice(&line[..key_end]));
                    record.value = Some(Bytes::copy_from_slice(&line[value_start..]));
                }
                None => {
                    let message = "no key separator in the line".to_owned();
                    if outcomes
                        .send(Outcome::Failed(number, message))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
            },
            None => record.value = Some(Bytes::copy_from_slice(&line)),
        }
        let outcome = match producer.send(record).await {
            Ok(delivery) => Outcome::Sent(number, delivery),
            Err(error) => Outcome::Failed(number, error.to_string()),
        };
        if outcomes.send(outcome).await.is_err() {
            break;
        }
    }
    let closed = producer.close().await;
    drop(outcomes);
    let tally = printer
        .await
        .map_err(|error| format!("the acknowledgement printer failed: {error}"))??;
    if let Some(error) = read_error {
        return Err(error);
    }
    if let Err(error) = closed {
        return Err(error.to_string());
    }
    if tally.failed > 0 {
        return Err(format!(
            "{} of {} records were not acknowledged (first: {})",
            tally.failed,
            tally.failed + tally.acknowledged,
            tally.first_failure.unwrap_or_default()
        ));
    }
    Ok(())
}

/// Awaits each line's acknowledgement in input order, printing it if asked; stdout is flushed
/// whenever the next acknowledgement is not there yet.
async fn print_acks(mut pending: mpsc::Receiver<Outcome>, report: bool) -> Result<Tally, String> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let mut tally = Tally {
        acknowledged: 0,
        failed: 0,
        first_failure: None,
    };
    let write_error = |error: std::io::Error| format!("cannot write to stdout: {error}");
    loop {
        let outcome = match pending.try_recv() {
            Ok(outcome) => outcome,
            Err(_) => {
                out.flush().map_err(write_error)?;
                match pending.recv().await {
                    Some(outcome) => outcome,
                    None => break,
                }
            }
        };
        let (number, result) = match outcome {
            Outcome::Failed(number, message) => (number, Err(message)),
            Outcome::Sent(number, mut delivery) => {
                let result = tokio::select! {
                    biased;
                    result = &mut delivery => result,
                    () = std::future::ready(()) => {
                        out.flush().map_err(write_error)?;
                        delivery.await
                    }
                };
                (
                    number,
                    result.map_err(|error: ClientError| error.to_string()),
                )
            }
        };
        match result {
            Ok(metadata) => {
                tally.acknowledged += 1;
                if report {
                    writeln!(out, "{number}\t{}\t{}", metadata.partition, metadata.offset)
                        .map_err(write_error)?;
                }
            }
            Err(message) => {
                tally.failed += 1;
                if tally.first_failure.is_none() {
                    tally.first_failure = Some(format!("line {number}: {message}"));
                }
                if tally.failed <= FAILURES_SHOWN_MAX {
                    crate::report(format!("line {number} not acknowledged: {message}"));
                }
            }
        }
    }
    out.flush().map_err(write_error)?;
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::split_key;

    #[test]
    fn splits_at_the_first_separator() {
        assert_eq!(split_key(b"k:v:w", b":"), Some((1, 2)));
        assert_eq!(split_key(b"key::value", b"::"), Some((3, 5)));
        assert_eq!(split_key(b":v", b":"), Some((0, 1)));
        assert_eq!(split_key(b"value", b":"), None);
        assert_eq!(split_key(b"value", b""), None);
    }
}
