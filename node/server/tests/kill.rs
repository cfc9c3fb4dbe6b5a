//! The kill test: the real `spate-node` binary is killed with SIGKILL at random moments —
//! while producers wait for `fsync` acknowledgements, and during startup and recovery — over
//! many cycles. After every restart each acknowledged record must be read back exactly once,
//! at its acknowledged offset, in order, and no new offset may collide with an acknowledged
//! one.
//!
//! Ignored by default (it takes time and depends on timing): `.ci/run` runs a short version,
//! `SPATE_KILL_CYCLES=200 cargo test -p spate-node --test kill -- --ignored` a long one.

#![allow(clippy::print_stderr, clippy::cast_possible_truncation)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{data_dir, owner, records, Client};
use spate_proto::*;

const PARTITIONS: u32 = 4;

/// Requests in flight on one connection: correlation id -> (partition, values).
type InFlight = BTreeMap<u64, (u32, Vec<Vec<u8>>)>;

struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn spawn(dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_spate-node"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
        ])
        .args(["--retention-check-ms", "3600000"])
        .env(
            "RUST_LOG",
            std::env::var("SPATE_KILL_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(dir.join("node.log"))
                .map_or_else(|_| Stdio::null(), Stdio::from),
        )
        .spawn()
        .expect("start spate-node")
}

/// Reads the `shard N listening on ADDR` lines; `None` if the process died first.
fn endpoints(child: &mut Child) -> Option<Vec<SocketAddr>> {
    let stdout = child.stdout.take()?;
    let mut lines = BufReader::new(stdout).lines();
    let mut found = Vec::new();
    while found.len() < 2 {
        let line = lines.next()?.ok()?;
        let address = line.rsplit(' ').next()?.parse().ok()?;
        found.push(address);
    }
    Some(found)
}

fn kill(child: &Arc<Mutex<Child>>) {
    let mut child = child.lock().unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

/// Produces with `fsync` on every partition until the connection dies; records every
/// acknowledgement as (partition, offset) -> value.
fn produce_until_killed(
    metadata: &MetadataResponse,
    acked: &mut BTreeMap<(u32, u64), Vec<u8>>,
    next_value: &mut u64,
) {
    let mut clients: Vec<(u32, Client)> = (0..PARTITIONS)
        .map(|p| (p, Client::connect(owner(metadata, "k", p))))
        .collect();
    let mut in_flight: Vec<InFlight> = vec![BTreeMap::new(); clients.len()];
    loop {
        for (index, (partition, client)) in clients.iter_mut().enumerate() {
            while in_flight[index].len() < 8 {
                let values: Vec<Vec<u8>> = (0..3)
                    .map(|_| {
                        *next_value += 1;
                        format!("value-{next_value}").into_bytes()
                    })
                    .collect();
                let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
                let request = common::produce_request("k", *partition, &slices, Durability::Fsync);
                let Some(id) = client.try_send(&request) else {
                    return;
                };
                in_flight[index].insert(id, (*partition, values));
            }
            let Some((id, response)) = client.receive() else {
                return;
            };
            let Some((partition, values)) = in_flight[index].remove(&id) else {
                continue;
            };
            match response {
                Response::Produce(produced) => {
                    for (delta, value) in values.into_iter().enumerate() {
                        let previous =
                            acked.insert((partition, produced.base_offset + delta as u64), value);
                        assert!(
                            previous.is_none(),
                            "offset {} of partition {partition} acknowledged twice",
                            produced.base_offset
                        );
                    }
                }
                Response::Error { error, .. } if error.code == ErrorCode::ShuttingDown => return,
                other => panic!("produce failed: {other:?}"),
            }
        }
    }
}

fn verify(metadata: &MetadataResponse, acked: &BTreeMap<(u32, u64), Vec<u8>>) -> usize {
    let mut total = 0;
    for partition in 0..PARTITIONS {
        let mut client = Client::connect(owner(metadata, "k", partition));
        let mut offset = 0;
        let mut log: Vec<(u64, Vec<u8>)> = Vec::new();
        loop {
            match client.fetch("k", partition, offset, 0) {
                Response::Fetch(fetched) => {
                    // The first batch may start before the offset asked for.
                    let from = offset;
                    let found: Vec<_> = records(&fetched.records)
                        .into_iter()
                        .filter(|(o, _)| *o >= from)
                        .collect();
                    let Some(last) = found.last() else { break };
                    offset = last.0 + 1;
                    log.extend(found);
                    if offset >= fetched.high_watermark {
                        break;
                    }
                }
                other => panic!("fetch failed: {other:?}"),
            }
        }
        for (index, (offset, _)) in log.iter().enumerate() {
            assert_eq!(
                *offset, index as u64,
                "partition {partition}: offsets are not dense"
            );
        }
        let mut seen = HashSet::new();
        for (offset, value) in &log {
            assert!(
                seen.insert(value.clone()),
                "partition {partition}: {:?} stored twice (offset {offset})",
                String::from_utf8_lossy(value)
            );
        }
        for ((_, offset), value) in acked.range((partition, 0)..(partition + 1, 0)) {
            let stored = log.get(*offset as usize).map(|(_, value)| value);
            assert_eq!(
                stored,
                Some(value),
                "partition {partition}: acknowledged offset {offset} lost or changed"
            );
        }
        total += log.len();
    }
    total
}

#[test]
#[ignore = "kills real processes; run by .ci/run and by hand (SPATE_KILL_CYCLES)"]
fn acknowledged_records_survive_kill_nine() {
    let cycles: u32 = std::env::var("SPATE_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("SPATE_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill test: {cycles} cycles, seed {seed}");
    let mut rng = Rng(seed);
    let dir = data_dir("kill");
    let mut acked: BTreeMap<(u32, u64), Vec<u8>> = BTreeMap::new();
    let mut next_value = 0;
    let mut created = false;
    let started = Instant::now();
    for cycle in 0..cycles {
        let child = Arc::new(Mutex::new(spawn(&dir)));
        if rng.below(5) == 0 {
            // Kill during startup or recovery.
            std::thread::sleep(Duration::from_millis(rng.below(40)));
            kill(&child);
            continue;
        }
        let endpoints = {
            let mut guard = child.lock().unwrap();
            endpoints(&mut guard)
        };
        let Some(endpoints) = endpoints else {
            kill(&child);
            panic!("cycle {cycle}: spate-node did not start (seed {seed})");
        };
        let mut admin = Client::connect(endpoints[0]);
        if !created {
            assert!(matches!(
                admin.create_topic("k", PARTITIONS),
                Response::CreateTopic(_)
            ));
            created = true;
        }
        let metadata = admin.metadata();
        let total = verify(&metadata, &acked);
        // Kill while producers wait for acknowledgements.
        let killer = {
            let child = child.clone();
            let delay = Duration::from_millis(20 + rng.below(200));
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                kill(&child);
            })
        };
        let before = acked.len();
        produce_until_killed(&metadata, &mut acked, &mut next_value);
        killer.join().unwrap();
        eprintln!(
            "cycle {cycle}: {total} records verified, {} newly acknowledged",
            acked.len() - before
        );
    }
    // A last restart to verify the final state.
    let child = Arc::new(Mutex::new(spawn(&dir)));
    let endpoints = endpoints(&mut child.lock().unwrap()).expect("final start");
    let mut admin = Client::connect(endpoints[0]);
    let metadata = admin.metadata();
    let total = verify(&metadata, &acked);
    kill(&child);
    eprintln!(
        "kill test passed: {cycles} cycles in {:.0?}, {} acknowledged records, {total} stored (seed {seed})",
        started.elapsed(),
        acked.len()
    );
    assert!(
        acked.len() > 100,
        "too few acknowledgements to prove anything"
    );
}
