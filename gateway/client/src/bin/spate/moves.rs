//! `spate cluster reassign|elect-preferred|decommission|recommission`: moving partitions
//! between the nodes of a cluster (docs/cluster.md, "Moving partitions").

use std::io::Write;

use spate_client::Client;
use spate_proto::{MovePartitionsResponse, PartitionMove, Setting};

use crate::topic::table;

/// A byte rate: bytes per second, or with a unit (`10MB`, `512KiB`).
pub fn rate(text: &str) -> Result<u64, String> {
    match crate::topic::size_setting(text)? {
        Setting::Value(0) => Err("a rate must be above 0 bytes/s".into()),
        Setting::Value(bytes) => Ok(bytes),
        Setting::Default | Setting::Unlimited => {
            Err("a rate in bytes per second (bytes, or 512KiB, 100MB)".into())
        }
    }
}

/// Sends `change` and prints what it did: a line per partition left as it was (and per
/// partition changed, unless there are many), then the counts.
pub async fn run(client: &Client, change: PartitionMove) -> Result<(), String> {
    let answer = client
        .move_partitions(change)
        .await
        .map_err(|error| crate::describe(&error))?;
    print(&answer).map_err(|error| format!("cannot write to stdout: {error}"))
}

fn print(answer: &MovePartitionsResponse) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if !answer.results.is_empty() {
        let mut rows = vec![["TOPIC", "PARTITION", "OUTCOME"]
            .map(str::to_owned)
            .to_vec()];
        for result in &answer.results {
            let outcome = match result.error {
                None => result.message.clone(),
                Some(code) => format!("{code}: {}", result.message),
            };
            rows.push(vec![
                result.topic.clone(),
                result.partition.to_string(),
                outcome,
            ]);
        }
        table(&mut out, &rows)?;
    }
    let listed = answer.results.len() as u64;
    let all = u64::from(answer.changed) + u64::from(answer.unchanged);
    if all > listed {
        writeln!(out, "(the first {listed} of {all} are listed)")?;
    }
    writeln!(
        out,
        "{} partitions changed, {} left as they were",
        answer.changed, answer.unchanged
    )
}
