//! `spate produce`: one record per stdin line, pipelined through the SDK producer. With
//! `--report-acks`, one `LINE<TAB>PARTITION<TAB>OFFSET` line per acknowledged record, flushed
//! as acknowledgements arrive, so an interrupted script knows exactly what was stored.
//!
//! The first SIGINT (Ctrl-C) or SIGTERM stops reading stdin, waits up to `--drain-timeout-ms`
//! for the records in flight, and prints one summary line: lines read, stored, failed, not
//! known stored, and the last line up to which every line is stored. A second one exits at
//! once (with the same summary, as far as it is known). Either way the exit status is 130.
//!
//! The producer is idempotent: records whose answer is lost are sent again until stored once
//! or `--delivery-timeout-ms` passes. Lines that are surely not stored go to
//! `--failed-lines FILE` (running `spate produce` again on that file is safe: within a
//! partition nothing is stored after a failed batch), lines whose outcome stayed unknown to
//! `--unknown-lines FILE`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use spate_client::{
    Client, ClientError, Compression, Delivery, Durability, Producer, ProducerConfig,
    ProducerRecord,
};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, Notify};

use crate::{notice, Failure};

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
    /// Add this header to every record (repeat for several).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE", value_parser = header)]
    headers: Vec<(String, Bytes)>,
    /// Records are separated by DELIM instead of a newline (escapes: \n \t \r \0 \\;
    /// a `\r` before a newline delimiter is removed too).
    #[arg(short = 'D', long, value_name = "DELIM", default_value = "\\n", value_parser = delimiter)]
    delimiter: Delimiter,
    /// `lines`: each record's value (and key, with --key-separator) as read; `json`: one JSON
    /// object per record, as `spate consume --format json` prints them: `value` or
    /// `value_b64` (binary), `key` or `key_b64`, `headers` ([{"name":..,"value":..}]),
    /// `timestamp` (ms), `partition`.
    #[arg(long, value_enum, default_value = "lines")]
    input: InputArg,
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
    /// After an interrupt, wait this long for the records in flight before giving up on them
    /// (a second interrupt gives up at once).
    #[arg(long, value_name = "MS", default_value = "30000")]
    drain_timeout_ms: u64,
    /// Give up on a record this long after its batch was sealed; until then a record whose
    /// answer is lost (a gateway or node restart) is sent again and stored once.
    #[arg(long, value_name = "MS", default_value = "120000")]
    delivery_timeout_ms: u64,
    /// Write each input line that is surely not stored to FILE (created or truncated), as
    /// read: `spate produce TOPIC < FILE` with the same options then stores exactly those.
    #[arg(long, value_name = "FILE")]
    failed_lines: Option<std::path::PathBuf>,
    /// Write each input line whose outcome is not known (its answer was lost and the
    /// delivery timeout passed) to FILE.
    #[arg(long, value_name = "FILE")]
    unknown_lines: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputArg {
    Lines,
    Json,
}

fn header(text: &str) -> Result<(String, Bytes), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    Ok((name.to_owned(), Bytes::copy_from_slice(value.as_bytes())))
}

/// `--delimiter`: the bytes between records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delimiter(Vec<u8>);

fn delimiter(text: &str) -> Result<Delimiter, String> {
    let mut bytes = Vec::new();
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character == '\\' {
            crate::push_escaped(&mut characters, &mut bytes)?;
        } else {
            let mut buffer = [0u8; 4];
            bytes.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
        }
    }
    if bytes.is_empty() {
        return Err("the delimiter is empty".into());
    }
    Ok(Delimiter(bytes))
}

/// A record from one JSON line (the shape `spate consume --format json` prints).
fn json_record(line: &[u8], partition: Option<u32>) -> Result<ProducerRecord, String> {
    use base64::Engine;
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|error| format!("not JSON: {error}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let bytes = |name: &str| -> Result<Option<Bytes>, String> {
        if let Some(text) = object.get(name) {
            return match text {
                serde_json::Value::Null => Ok(None),
                serde_json::Value::String(text) => Ok(Some(Bytes::from(text.clone()))),
                _ => Err(format!("`{name}` is not a string")),
            };
        }
        match object.get(&format!("{name}_b64")) {
            None => Ok(None),
            Some(serde_json::Value::String(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(|decoded| Some(Bytes::from(decoded)))
                .map_err(|error| format!("`{name}_b64` is not base64: {error}")),
            Some(_) => Err(format!("`{name}_b64` is not a string")),
        }
    };
    let mut record = ProducerRecord {
        key: bytes("key")?,
        value: bytes("value")?,
        partition,
        ..ProducerRecord::default()
    };
    if let Some(timestamp) = object.get("timestamp") {
        record.timestamp = Some(timestamp.as_i64().ok_or("`timestamp` is not an integer")?);
    }
    if let Some(chosen) = object.get("partition") {
        let chosen = chosen
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or("`partition` is not a partition number")?;
        record.partition = Some(partition.unwrap_or(chosen));
    }
    if let Some(headers) = object.get("headers") {
        let headers = headers.as_array().ok_or("`headers` is not an array")?;
        for header in headers {
            let header = header.as_object().ok_or("a header is not an object")?;
            let name = header
                .get("name")
                .and_then(serde_json::Value::as_str)
                .ok_or("a header has no `name`")?;
            let value = match (header.get("value"), header.get("value_b64")) {
                (Some(serde_json::Value::String(text)), _) => Some(Bytes::from(text.clone())),
                (_, Some(serde_json::Value::String(encoded))) => Some(Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .map_err(|error| {
                            format!("a header's `value_b64` is not base64: {error}")
                        })?,
                )),
                _ => None,
            };
            record.headers.push((name.to_owned(), value));
        }
    }
    Ok(record)
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

/// One line's outcome on its way to the printer, with the line as read (shared with the
/// record's key and value, not copied) for the failed-lines files.
enum Outcome {
    Sent(u64, Delivery, Bytes),
    Failed(u64, String, Bytes),
}

/// Where lines that are not stored are written.
struct LineFiles {
    failed: Option<std::fs::File>,
    unknown: Option<std::fs::File>,
    /// Written after each line, as in the input.
    delimiter: Vec<u8>,
}

impl LineFiles {
    fn open(args: &ProduceArgs) -> Result<LineFiles, String> {
        use std::os::unix::fs::MetadataExt;
        // The input itself (`--failed-lines failed.txt < failed.txt`) must not be emptied
        // before it is read.
        let input = std::fs::metadata("/proc/self/fd/0")
            .ok()
            .map(|input| (input.dev(), input.ino()));
        let create = |path: &Option<std::path::PathBuf>| {
            path.as_ref()
                .map(|path| {
                    let existing = std::fs::metadata(path)
                        .ok()
                        .map(|file| (file.dev(), file.ino()));
                    if existing.is_some() && existing == input {
                        return Err(format!(
                            "{} is the input too: write the lines that are not stored to \
                             another file",
                            path.display()
                        ));
                    }
                    std::fs::File::create(path)
                        .map_err(|error| format!("cannot create {}: {error}", path.display()))
                })
                .transpose()
        };
        Ok(LineFiles {
            failed: create(&args.failed_lines)?,
            unknown: create(&args.unknown_lines)?,
            delimiter: args.delimiter.0.clone(),
        })
    }

    /// Writes `line` to the file for its kind (unbuffered: an interrupted run keeps what it
    /// wrote).
    fn write(&mut self, unknown: bool, line: &[u8]) -> Result<(), String> {
        let file = if unknown {
            self.unknown.as_mut()
        } else {
            self.failed.as_mut()
        };
        let Some(file) = file else {
            return Ok(());
        };
        let mut record = Vec::with_capacity(line.len() + self.delimiter.len());
        record.extend_from_slice(line);
        record.extend_from_slice(&self.delimiter);
        file.write_all(&record)
            .map_err(|error| format!("cannot write a not-stored line: {error}"))
    }
}

/// What happened to the input so far, shared with the printer so an interrupt can tell it
/// even while acknowledgements are still awaited.
#[derive(Debug, Default)]
struct Progress {
    read: AtomicU64,
    acknowledged: AtomicU64,
    /// Surely not stored.
    failed: AtomicU64,
    /// Given up with the outcome unknown (counted in `failed` too).
    unknown: AtomicU64,
    /// Every line up to this one (counted from 1) is acknowledged; 0: none known.
    stored_through: AtomicU64,
}

impl Progress {
    /// The interrupt's summary line.
    fn summary(&self) -> String {
        let read = self.read.load(Ordering::Relaxed);
        let acknowledged = self.acknowledged.load(Ordering::Relaxed);
        // Lines given up with their outcome unknown are not known stored, like those in flight.
        let failed = self
            .failed
            .load(Ordering::Relaxed)
            .saturating_sub(self.unknown.load(Ordering::Relaxed));
        let unknown = read.saturating_sub(acknowledged + failed);
        let through = match self.stored_through.load(Ordering::Relaxed) {
            0 => "no line is known stored".to_owned(),
            line => format!("every line up to line {line} is stored"),
        };
        format!(
            "interrupted: {read} lines read, {acknowledged} stored, {failed} failed, {unknown} \
             not known stored; {through}"
        )
    }
}

/// SIGINT and SIGTERM, registered before the first line is read (from then on they no longer
/// end the process by themselves).
pub(crate) struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
}

impl Interrupts {
    pub(crate) fn new() -> Result<Interrupts, String> {
        let register =
            |kind| signal(kind).map_err(|error| format!("cannot handle interrupts: {error}"));
        Ok(Interrupts {
            interrupt: register(SignalKind::interrupt())?,
            terminate: register(SignalKind::terminate())?,
        })
    }

    pub(crate) async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

fn split_key(line: &[u8], separator: &[u8]) -> Option<(usize, usize)> {
    if separator.is_empty() {
        return None;
    }
    line.windows(separator.len())
        .position(|window| window == separator)
        .map(|at| (at, at + separator.len()))
}

pub async fn run(client: &Client, args: &ProduceArgs) -> Result<(), Failure> {
    let config = ProducerConfig {
        durability: match args.durability {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::Write => Durability::Write,
            DurabilityArg::None => Durability::None,
        },
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(args.linger_ms),
        compression: args.compression.codec(),
        delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
        ..ProducerConfig::default()
    };
    let files = LineFiles::open(args)?;
    let producer = Producer::new(client, &args.topic, config)
        .await
        .map_err(|error| crate::describe(&error))?;
    let mut interrupts = Interrupts::new()?;
    let progress = Arc::new(Progress::default());
    let (outcomes, pending) = mpsc::channel(ACKS_PENDING_MAX);
    let mut printer = tokio::spawn(print_acks(
        pending,
        args.report_acks,
        progress.clone(),
        files,
    ));
    let stop = Notify::new();
    let reading = read_lines(&producer, outcomes, args, &progress, &stop);
    tokio::pin!(reading);
    let read = tokio::select! {
        read = &mut reading => Some(read),
        () = interrupts.next() => None,
    };
    let timeout = Duration::from_millis(args.drain_timeout_ms);
    let announce = || {
        notice(format!(
            "interrupted: no more lines are read; waiting up to {} ms for the records in \
             flight (interrupt again to stop now)",
            timeout.as_millis()
        ));
    };
    if read.is_none() {
        // The line being sent is finished; no other is read.
        stop.notify_one();
        announce();
    }
    let reading_done = read.is_some();
    let drain = async {
        if !reading_done {
            let _ = (&mut reading).await;
        }
        let flushed = producer.flush().await;
        let printed = (&mut printer).await;
        (flushed, printed)
    };
    tokio::pin!(drain);
    // Without an interrupt while reading, the last batches are awaited; an interrupt then
    // (a gateway that stopped answering) starts the same bounded drain.
    let finished = match read {
        None => None,
        Some(_) => tokio::select! {
            done = &mut drain => Some(done),
            () = interrupts.next() => {
                announce();
                None
            }
        },
    };
    let Some((flushed, printed)) = finished else {
        tokio::select! {
            _ = &mut drain => {}
            () = tokio::time::sleep(timeout) => {}
            () = interrupts.next() => {}
        }
        notice(progress.summary());
        return Err(Failure::Interrupted);
    };
    let first_failure =
        printed.map_err(|error| format!("the acknowledgement printer failed: {error}"))??;
    if let Some(read) = read {
        read?;
    }
    flushed.map_err(|error| crate::describe(&error))?;
    let failed = progress.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let unknown = progress.unknown.load(Ordering::Relaxed);
        let mut written = String::new();
        if let Some(path) = &args.failed_lines {
            written.push_str(&format!(
                "; the {} lines surely not stored are in {} (produce them again with the same \
                 options)",
                failed - unknown,
                path.display()
            ));
        }
        if let (Some(path), true) = (&args.unknown_lines, unknown > 0) {
            written.push_str(&format!(
                "; the {unknown} lines not known stored are in {}",
                path.display()
            ));
        }
        return Err(Failure::Error(format!(
            "{failed} of {} records were not acknowledged, {unknown} of them may be stored \
             (first: {}){written}",
            failed + progress.acknowledged.load(Ordering::Relaxed),
            first_failure.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Reads stdin to its end (or until `stop` is notified, between lines), one record per line,
/// handing each line's outcome to the printer.
async fn read_lines(
    producer: &Producer,
    outcomes: mpsc::Sender<Outcome>,
    args: &ProduceArgs,
    progress: &Progress,
    stop: &Notify,
) -> Result<(), String> {
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut input = tokio::io::BufReader::with_capacity(1 << 20, tokio::io::stdin());
    let mut line = Vec::new();
    let mut number = 0u64;
    let delimiter = args.delimiter.0.as_slice();
    loop {
        line.clear();
        let read = tokio::select! {
            biased;
            () = stop.notified() => return Ok(()),
            read = read_record(&mut input, delimiter, &mut line) => read,
        };
        match read {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error) => return Err(format!("cannot read stdin: {error}")),
        }
        number += 1;
        progress.read.store(number, Ordering::Relaxed);
        if line.ends_with(delimiter) {
            line.truncate(line.len() - delimiter.len());
            if delimiter == b"\n" && line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let mut record = ProducerRecord {
            partition: args.partition,
            ..ProducerRecord::default()
        };
        // One copy of the line; the key and value are slices of it.
        let whole = Bytes::copy_from_slice(&line);
        let outcome = match (args.input, separator) {
            (InputArg::Json, _) => match json_record(&whole, args.partition) {
                Ok(parsed) => {
                    record = parsed;
                    None
                }
                Err(error) => Some(Outcome::Failed(number, error, whole.clone())),
            },
            (InputArg::Lines, Some(separator)) => match split_key(&whole, separator) {
                Some((key_end, value_start)) => {
                    record.key = Some(whole.slice(..key_end));
                    record.value = Some(whole.slice(value_start..));
                    None
                }
                None => Some(Outcome::Failed(
                    number,
                    "no key separator in the line".to_owned(),
                    whole.clone(),
                )),
            },
            (InputArg::Lines, None) => {
                record.value = Some(whole.clone());
                None
            }
        };
        for (name, value) in &args.headers {
            record.headers.push((name.clone(), Some(value.clone())));
        }
        let outcome = match outcome {
            Some(failed) => failed,
            None => match producer.send(record).await {
                Ok(delivery) => Outcome::Sent(number, delivery, whole),
                Err(error) => Outcome::Failed(number, crate::describe(&error), whole),
            },
        };
        if outcomes.send(outcome).await.is_err() {
            return Ok(());
        }
    }
}

/// Reads one record into `line`: up to and including `delimiter`, or what is left at the end
/// of the input. Returns the bytes read (0 at the end).
async fn read_record(
    input: &mut (impl tokio::io::AsyncBufRead + Unpin),
    delimiter: &[u8],
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let last = *delimiter.last().expect("a delimiter is not empty");
    loop {
        let read = input.read_until(last, line).await?;
        if read == 0 || line.ends_with(delimiter) {
            return Ok(line.len());
        }
    }
}

/// Awaits each line's acknowledgement in input order, printing it if asked and counting it
/// in `progress`; stdout is flushed whenever the next acknowledgement is not there yet.
/// Returns the first failure.
async fn print_acks(
    mut pending: mpsc::Receiver<Outcome>,
    report: bool,
    progress: Arc<Progress>,
    mut files: LineFiles,
) -> Result<Option<String>, String> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let mut first_failure = None;
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
        let (number, result, line) = match outcome {
            Outcome::Failed(number, message, line) => (number, Err((false, message)), line),
            Outcome::Sent(number, mut delivery, line) => {
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
                    result.map_err(|error: ClientError| {
                        (error.outcome_unknown(), crate::describe(&error))
                    }),
                    line,
                )
            }
        };
        match result {
            Ok(metadata) => {
                if report {
                    writeln!(out, "{number}\t{}\t{}", metadata.partition, metadata.offset)
                        .map_err(write_error)?;
                }
                progress.acknowledged.fetch_add(1, Ordering::Relaxed);
                if first_failure.is_none() {
                    progress.stored_through.store(number, Ordering::Relaxed);
                }
            }
            Err((unknown, message)) => {
                files.write(unknown, &line)?;
                if unknown {
                    progress.unknown.fetch_add(1, Ordering::Relaxed);
                }
                let failed = progress.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if first_failure.is_none() {
                    first_failure = Some(format!("line {number}: {message}"));
                }
                if failed <= FAILURES_SHOWN_MAX {
                    crate::report(format!("line {number} not acknowledged: {message}"));
                }
            }
        }
    }
    out.flush().map_err(write_error)?;
    Ok(first_failure)
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
