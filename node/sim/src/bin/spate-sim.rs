//! `spate-sim`: runs the simulations over a range of seeds, or random seeds for a given time,
//! and prints the first failing seed (which replays the failure exactly). Each seed runs the
//! partition log, one consumer group, a group coordinator's committed offsets, and a
//! replicated partition (replicas, a model of etcd, lossy links).
//!
//! ```text
//! spate-sim [--from SEED] [--seeds N] [--seconds S] [--steps N] [--keep-going]
//!           [--only log|groups|offsets|replication]
//! ```
//!
//! `--only` runs one of the four simulations per seed (the others report zeros).
//!
//! With `--keep-going` it runs every seed, prints the first few failures and counts the
//! failing seeds (how often a deliberately injected bug is caught).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spate_sim::{
    run_group_seed, run_offsets_seed, run_replication_seed, run_seed, GroupReport, OffsetsReport,
    Options, ReplicationReport, RunReport,
};

/// Steps of each seed's group and offsets simulations.
const GROUP_STEPS: u32 = 400;
const OFFSETS_STEPS: u32 = 300;
/// Steps of each seed's replication simulation.
const REPLICATION_STEPS: u32 = 2_000;

/// Failures printed with `--keep-going`; the rest are only counted.
const FAILURES_SHOWN: u64 = 3;

fn main() {
    let mut from: Option<u64> = None;
    let mut seeds: Option<u64> = None;
    let mut seconds: Option<u64> = None;
    let mut options = Options::default();
    let mut keep_going = false;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| -> u64 {
            let text = args
                .next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")));
            text.parse()
                .unwrap_or_else(|_| usage(&format!("{name}: not a number: {text}")))
        };
        match flag.as_str() {
            "--from" => from = Some(value("--from")),
            "--seeds" => seeds = Some(value("--seeds")),
            "--seconds" => seconds = Some(value("--seconds")),
            "--steps" => options.steps = u32::try_from(value("--steps")).unwrap_or(u32::MAX),
            "--keep-going" => keep_going = true,
            "--only" => {
                let name = args.next().unwrap_or_default();
                if !["log", "groups", "offsets", "replication"].contains(&name.as_str()) {
                    usage(&format!("--only: not a simulation: {name}"));
                }
                only = Some(name);
            }
            "--help" | "-h" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    // Without --from, start at a seed from the clock, so every run explores new seeds.
    let first = from.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs().wrapping_mul(1_000_000_007))
    });
    let deadline = seconds.map(|seconds| Instant::now() + Duration::from_secs(seconds));
    let count = seeds.unwrap_or(if deadline.is_some() { u64::MAX } else { 1000 });
    let started = Instant::now();
    let mut total = RunReport::default();
    let mut groups = GroupReport::default();
    let mut offsets = OffsetsReport::default();
    let mut replication = ReplicationReport::default();
    let mut ran = 0u64;
    let mut failed = 0u64;
    println!(
        "spate-sim: seeds from {first}, {} steps each",
        options.steps
    );
    for seed in first..first.saturating_add(count) {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let runs = |name: &str| only.as_deref().is_none_or(|only| only == name);
        let outcome = (|| -> Result<_, String> {
            let report = if runs("log") {
                run_seed(seed, options).map_err(|failure| failure.to_string())?
            } else {
                RunReport::default()
            };
            let group = if runs("groups") {
                run_group_seed(seed, GROUP_STEPS)?
            } else {
                GroupReport::default()
            };
            let offset = if runs("offsets") {
                run_offsets_seed(seed, OFFSETS_STEPS)?
            } else {
                OffsetsReport::default()
            };
            let replicated = if runs("replication") {
                run_replication_seed(seed, REPLICATION_STEPS)?
            } else {
                ReplicationReport::default()
            };
            Ok((report, group, offset, replicated))
        })();
        match outcome {
            Ok((report, group, offset, replicated)) => {
                total.add(&report);
                groups.add(&group);
                offsets.add(&offset);
                replication.add(&replicated);
            }
            Err(failure) if keep_going => {
                failed += 1;
                if failed <= FAILURES_SHOWN {
                    eprintln!("FAILED: {failure}");
                }
            }
            Err(failure) => {
                eprintln!("FAILED: {failure}");
                std::process::exit(1);
            }
        }
        ran += 1;
        if ran.is_multiple_of(10_000) {
            println!(
                "{} seeds passed ({:.0} s)",
                ran - failed,
                started.elapsed().as_secs_f64()
            );
        }
    }
    if failed > 0 {
        println!(
            "{failed} of {ran} seeds failed in {:.1} s (seeds {first}..{})",
            started.elapsed().as_secs_f64(),
            first + ran
        );
        std::process::exit(1);
    }
    println!(
        "{ran} seeds passed in {:.1} s (seeds {first}..{}): {} appends, {} crashes, {} torn tails, \
         {} fences, {} corruptions detected ({} flips in sealed segments found by verification), \
         {} rolls, {} segments deleted, {} log-start moves, {} acknowledgements, {} parked fetches \
         woken, {} fetches answered from read-ahead, {} reads continued, {} resends recognised as \
         duplicates, {} sequence refusals",
        started.elapsed().as_secs_f64(),
        first + ran,
        total.appends,
        total.crashes,
        total.torn_tails,
        total.fences,
        total.corruptions_detected,
        total.flips_found_by_verification,
        total.rolls,
        total.segments_deleted,
        total.log_start_moves,
        total.acks,
        total.fetches_woken,
        total.read_ahead_hits,
        total.reads_continued,
        total.duplicates,
        total.sequence_refusals,
    );
    println!(
        "groups: {} generations, {} joins and {} syncs answered, {} commits allowed and {} \
         refused, {} sessions expired, {} coordinator restarts; offsets: {} appends ({} \
         acknowledged, {} failed), {} crashes, {} snapshots, {} expiries",
        groups.generations,
        groups.joins_answered,
        groups.syncs_answered,
        groups.commits_allowed,
        groups.commits_refused,
        groups.expirations,
        groups.coordinator_restarts,
        offsets.appends,
        offsets.acknowledged,
        offsets.failed,
        offsets.crashes,
        offsets.snapshots,
        offsets.expiries,
    );
    println!(
        "replication: {} writes ({} acknowledged, {} refused for min.insync.replicas), {} \
         records committed, {} elections, ISR {} shrinks and {} expansions, {} truncations, {} \
         crashes ({} with a replaced disk), {} replicas cut from etcd, {} consumer reads, {} \
         log-start moves on leaders, {} followers started over at a leader's log start, {} \
         moves ({} done, {} replicas removed), {} decommissions or recommissions",
        replication.writes,
        replication.acknowledged,
        replication.refused_min_insync,
        replication.committed,
        replication.elections,
        replication.isr_shrinks,
        replication.isr_expansions,
        replication.truncations,
        replication.crashes,
        replication.disks_replaced,
        replication.etcd_cuts,
        replication.reads,
        replication.log_start_moves,
        replication.resets,
        replication.moves,
        replication.moves_done,
        replication.replicas_removed,
        replication.decommissions,
    );
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("spate-sim: {problem}");
    }
    eprintln!(
        "usage: spate-sim [--from SEED] [--seeds N] [--seconds S] [--steps N] [--keep-going] \
         [--only log|groups|offsets|replication]"
    );
    std::process::exit(2);
}
