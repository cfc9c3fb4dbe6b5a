//! Smoke test of `spate-bench`: every scenario (`abuse` against a tiny attack; the Kafka ones
//! when the `kafka` feature is on) and baseline runs briefly on a real data directory under `target/` and writes a report with its runs
//! and ratios and both charts.
//! (Figures from a debug build under a parallel test suite mean nothing; only that it works.)

use std::path::PathBuf;
use std::process::Command;

fn bench(out: &std::path::Path, data: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_spate-bench"))
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "spate-bench {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("report: "), "{table}");
    assert!(out.join("throughput.svg").exists());
    assert!(out.join("latency.svg").exists());
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn names(report: &serde_json::Value) -> Vec<String> {
    report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_scenario_runs_and_reports() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");

    let report = bench(
        &root.join("storage"),
        &data,
        &["storage", "--seconds", "0.5", "--baseline"],
    );
    assert_eq!(names(&report), ["disk-odirect-fdatasync", "storage-fsync"]);
    let storage = &report["runs"][1];
    assert!(storage["operations"].as_u64().unwrap() > 0);
    assert!(
        storage["latency"][0]["percentiles_us"]["p99"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(report["ratios"].as_array().unwrap().len(), 2);

    let report = bench(
        &root.join("produce"),
        &data,
        &[
            "produce",
            "--seconds",
            "0.5",
            "--baseline",
            "--durability",
            "none",
            "--warmup-seconds",
            "0",
        ],
    );
    assert_eq!(names(&report), ["quic-raw", "produce-none-4p"]);
    assert!(report["runs"][1]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(report["runs"][1]["errors"].as_u64().unwrap(), 0);
    assert_eq!(report["ratios"][0]["name"], "produce none ÷ raw QUIC");

    let report = bench(
        &root.join("e2e"),
        &data,
        &[
            "e2e",
            "--seconds",
            "0.5",
            "--rate",
            "2000",
            "--message-size",
            "64",
            "--warmup-seconds",
            "0",
        ],
    );
    let e2e = &report["runs"][0];
    assert_eq!(e2e["latency"][0]["what"], "publish-to-consume");
    assert!(e2e["latency"][0]["count"].as_u64().unwrap() >= 500);
    assert!(e2e["operations"].as_u64().unwrap() >= 500);

    let report = bench(
        &root.join("consume"),
        &data,
        &[
            "consume",
            "--backlog-bytes",
            "2000000",
            "--message-size",
            "100",
        ],
    );
    assert_eq!(report["runs"][0]["operations"].as_u64().unwrap(), 20_000);

    let report = bench(
        &root.join("abuse"),
        &data,
        &[
            "abuse",
            "--connections",
            "2",
            "--streams",
            "8",
            "--announced-bytes",
            "65536",
            "--sent-bytes",
            "16384",
            "--seconds",
            "0.5",
            "--buffer-budget",
            "8388608",
            "--connection-buffer-budget",
            "2097152",
        ],
    );
    assert_eq!(names(&report), ["abuse-unloaded", "abuse-attacked"]);
    let attacked = &report["runs"][1];
    assert!(attacked["bytes"].as_u64().unwrap() > 0);
    let figure =
        |name: &str| -> u64 { attacked["params"][name].as_str().unwrap().parse().unwrap() };
    assert!(figure("attack_bytes_sent_total") > 0);
    assert!(figure("gateway_rss_peak_vmhwm") > 0);
    assert!(figure("gateway_rss_after_attackers_closed") > 0);
    assert!(figure("gateway_exit_after_sigterm_ms") < 5000);
    assert_eq!(
        report["ratios"][0]["name"],
        "producer under attack ÷ unloaded"
    );

    let report = bench(
        &root.join("disk"),
        &data,
        &["baseline", "disk", "--seconds", "0.3", "--queue-depth", "2"],
    );
    assert_eq!(names(&report), ["disk-odirect"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_restart_scenario_kills_and_restarts_a_node() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-smoke-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let report = bench(
        &root.join("restart"),
        &root.join("data"),
        &["restart", "--partitions", "20", "--shards", "2"],
    );
    let run = &report["runs"][0];
    assert_eq!(run["scenario"], "restart");
    assert_eq!(run["operations"].as_u64().unwrap(), 20);
    for figure in [
        "restart_seconds",
        "rss_after_restart_mib",
        "disk_allocated_after_restart_mib",
    ] {
        assert!(run["figures"][figure].as_f64().unwrap() > 0.0, "{figure}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The Kafka scenarios (librdkafka) against a Spate they start (node and gateway on port 0)
/// and the raw TCP baseline, briefly.
#[cfg(feature = "kafka")]
#[test]
fn the_kafka_scenarios_run_against_a_spate_they_start() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-smoke-kafka-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");

    let report = bench(
        &root.join("kafka-produce"),
        &data,
        &[
            "kafka-produce",
            "--seconds",
            "0.3",
            "--acks",
            "1",
            "--warmup-seconds",
            "0",
            "--baseline",
        ],
    );
    assert_eq!(names(&report), ["tcp-raw", "kafka-produce-acks1-4p"]);
    assert!(report["runs"][0]["bytes"].as_u64().unwrap() > 0);
    let produce = &report["runs"][1];
    assert!(produce["operations"].as_u64().unwrap() > 0);
    assert_eq!(produce["errors"].as_u64().unwrap(), 0);
    assert_eq!(produce["kind"], "spate");
    assert_eq!(produce["latency"][0]["what"], "ack");
    assert!(produce["latency"][0]["count"].as_u64().unwrap() > 0);
    assert!(produce["params"]["client"]
        .as_str()
        .unwrap()
        .starts_with("librdkafka "));
    assert_eq!(report["ratios"][0]["name"], "kafka produce ÷ raw TCP");
    assert_eq!(report["ratios"][0]["numerator"], "kafka-produce-acks1-4p");

    // Compressed batches: librdkafka compresses for Spate (the run stops if it does not).
    let report = bench(
        &root.join("kafka-produce-lz4"),
        &data,
        &[
            "kafka-produce",
            "--seconds",
            "0.2",
            "--acks",
            "1",
            "--compression",
            "lz4",
        ],
    );
    let compressed = &report["runs"][0];
    assert_eq!(compressed["params"]["compression"], "lz4");
    assert!(compressed["operations"].as_u64().unwrap() > 0);
    assert_eq!(compressed["errors"].as_u64().unwrap(), 0);

    let report = bench(
        &root.join("kafka-consume"),
        &data,
        &[
            "kafka-consume",
            "--backlog-bytes",
            "2000000",
            "--message-size",
            "100",
        ],
    );
    let consume = &report["runs"][0];
    assert_eq!(consume["name"], "kafka-consume-catch-up");
    assert_eq!(consume["operations"].as_u64().unwrap(), 20_000);
    assert_eq!(consume["bytes"].as_u64().unwrap(), 2_000_000);
    assert_eq!(consume["errors"].as_u64().unwrap(), 0);

    let report = bench(
        &root.join("tcp"),
        &data,
        &["baseline", "tcp", "--seconds", "0.2"],
    );
    assert_eq!(names(&report), ["tcp-raw"]);
    let _ = std::fs::remove_dir_all(&root);
}

/// Without the feature the Kafka commands exist and say how to get them.
#[cfg(not(feature = "kafka"))]
#[test]
fn the_kafka_scenarios_say_when_the_feature_is_off() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-smoke-no-kafka-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_spate-bench"))
        .args(["kafka-produce", "--seconds", "0.1", "--data-dir"])
        .arg(root.join("data"))
        .arg("--out")
        .arg(root.join("out"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--features kafka"), "{stderr}");
    let _ = std::fs::remove_dir_all(&root);
}

/// The cluster scenarios (feature `cluster`; etcd from Debian's `etcd-server`, which `.ci/run`
/// installs), each on a small cluster of three node processes: produce at replication factor
/// 1 and 3 with the ratios, the controller's node killed under 60 partitions (every one led
/// and written again), and 60 producer connections over three gateway processes.
#[cfg(feature = "cluster")]
#[test]
fn the_cluster_scenarios_run_on_a_cluster_they_start() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-smoke-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");

    let report = bench(
        &root.join("replicated-produce"),
        &data,
        &[
            "replicated-produce",
            "--seconds",
            "0.5",
            "--warmup-seconds",
            "0",
        ],
    );
    assert_eq!(names(&report), ["produce-fsync-rf1", "produce-fsync-rf3"]);
    for run in report["runs"].as_array().unwrap() {
        assert!(run["operations"].as_u64().unwrap() > 0, "{run}");
        assert_eq!(run["errors"].as_u64().unwrap(), 0, "{run}");
        assert_eq!(run["params"]["nodes"], "3");
    }
    assert_eq!(report["runs"][1]["params"]["replication_factor"], "3");
    let ratios: Vec<&str> = report["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ratio| ratio["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        ratios,
        [
            "produce-fsync-rf3 ÷ produce-fsync-rf1",
            "produce-fsync-rf3 ack p99 ÷ produce-fsync-rf1 ack p99"
        ]
    );

    let report = bench(
        &root.join("failover"),
        &data,
        &["failover", "--partitions", "60"],
    );
    let failover = &report["runs"][0];
    assert_eq!(failover["name"], "failover");
    let figure = |name: &str| failover["figures"][name].as_f64().unwrap();
    // A node is gone from the cluster only once its lease (3 s, renewed every second)
    // lapsed.
    assert!(figure("kill_to_lease_lapsed_seconds") >= 1.0);
    assert!(figure("kill_to_new_controller_seconds") >= 1.0);
    assert!(figure("read_back_check_seconds") >= 0.0);
    assert!(
        figure("kill_to_every_partition_led_seconds") >= figure("kill_to_lease_lapsed_seconds")
    );
    assert!(
        figure("kill_to_every_partition_written_seconds")
            >= figure("kill_to_every_partition_led_seconds")
    );
    assert_eq!(failover["operations"].as_u64().unwrap(), 60);

    let report = bench(
        &root.join("connections"),
        &data,
        &[
            "connections",
            "--connections",
            "60",
            "--interval-ms",
            "200",
            "--seconds",
            "1",
        ],
    );
    let connections = &report["runs"][0];
    assert_eq!(connections["params"]["gateways"], "3");
    assert_eq!(connections["errors"].as_u64().unwrap(), 0);
    // 60 connections, one record each every 200 ms for a second.
    assert!(
        connections["operations"].as_u64().unwrap() >= 240,
        "{connections}"
    );
    assert!(
        connections["figures"]["gateway_kib_per_connection"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Without the feature the cluster commands exist and say how to get them.
#[cfg(not(feature = "cluster"))]
#[test]
fn the_cluster_scenarios_say_when_the_feature_is_off() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-smoke-no-cluster-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_spate-bench"))
        .args(["failover", "--partitions", "3", "--data-dir"])
        .arg(root.join("data"))
        .arg("--out")
        .arg(root.join("out"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--features cluster"), "{stderr}");
    let _ = std::fs::remove_dir_all(&root);
}
