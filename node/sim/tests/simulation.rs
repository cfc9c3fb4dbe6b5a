//! The deterministic simulation of the partition log: a fixed set of seeds in the default
//! suite, and an ignored test that replays one seed (the `spate-sim` binary runs many).

#![allow(clippy::print_stderr)]

use spate_sim::{run_group_seeds, run_replication_seeds, run_seed, run_seeds, Options};

/// Seeds the default suite runs. A failure prints the seed that replays it.
const SEEDS: u64 = 300;

#[test]
fn fixed_seeds_keep_every_promise() {
    match run_seeds(0, SEEDS, Options::default()) {
        Ok(total) => {
            eprintln!("{total:?}");
            assert!(total.crashes > 100, "too few crashes simulated: {total:?}");
            assert!(total.torn_tails > 0, "no torn tail simulated: {total:?}");
            assert!(total.fences > 0, "no fence simulated: {total:?}");
            assert!(total.rolls > 0 && total.segments_deleted > 0, "{total:?}");
            assert!(
                total.log_start_moves > 100,
                "too few log-start moves: {total:?}"
            );
        }
        Err(failure) => panic!("{failure}"),
    }
}

/// `SPATE_SIM_SEED=N cargo test -p spate-sim replay -- --ignored` replays one seed.
#[test]
#[ignore = "replays SPATE_SIM_SEED"]
fn replay() {
    let seed = std::env::var("SPATE_SIM_SEED")
        .expect("set SPATE_SIM_SEED")
        .parse()
        .expect("a number");
    match run_seed(seed, Options::default()) {
        Ok(report) => eprintln!("seed {seed} passed: {report:?}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// The consumer-group state machine (`spate_core::group`) under clients that join, sync,
/// heartbeat, commit, leave, die and come back, and coordinator restarts.
#[test]
fn group_seeds_keep_every_promise() {
    match run_group_seeds(0, 2_000, 400) {
        Ok(total) => {
            eprintln!("{total:?}");
            assert!(total.generations > 1_000, "{total:?}");
            assert!(total.stable_reached > 1_000, "{total:?}");
            assert!(total.coordinator_restarts > 100, "{total:?}");
            assert!(
                total.commits_allowed > 0 && total.commits_refused > 0,
                "{total:?}"
            );
        }
        Err(failure) => panic!("{failure}"),
    }
}

/// Replication (`spate_core::replica`) with three to five replicas, a model of etcd, lossy
/// links, crashes, replaced disks, replicas cut from etcd, and the partition moved between
/// nodes (reassignments, their cancellations and decommissions; removed replicas' logs
/// deleted)
/// (`docs/cluster.md`).
#[test]
fn replication_seeds_keep_every_promise() {
    match run_replication_seeds(0, 500, 2_000) {
        Ok(total) => {
            eprintln!("{total:?}");
            assert!(total.acknowledged > 10_000, "{total:?}");
            assert!(total.elections > 200 && total.truncations > 50, "{total:?}");
            assert!(
                total.isr_shrinks > 200 && total.isr_expansions > 200,
                "{total:?}"
            );
            assert!(
                total.disks_replaced > 20 && total.etcd_cuts > 200,
                "{total:?}"
            );
            assert!(
                total.refused_min_insync > 0 && total.reads > 1_000,
                "{total:?}"
            );
            assert!(
                total.log_start_moves > 1_000 && total.resets > 100,
                "{total:?}"
            );
            assert!(
                total.moves > 500
                    && total.moves_done > 500
                    && total.replicas_removed > 500
                    && total.decommissions > 200,
                "{total:?}"
            );
        }
        Err(failure) => panic!("{failure}"),
    }
}

/// `SPATE_SIM_SEED=N cargo test -p spate-sim replay_replication -- --ignored` replays one
/// replication seed.
#[test]
#[ignore = "replays SPATE_SIM_SEED"]
fn replay_replication() {
    let seed = std::env::var("SPATE_SIM_SEED")
        .expect("set SPATE_SIM_SEED")
        .parse()
        .expect("a number");
    match spate_sim::run_replication_seed(seed, 2_000) {
        Ok(report) => eprintln!("seed {seed} passed: {report:?}"),
        Err(failure) => panic!("{failure}"),
    }
}
