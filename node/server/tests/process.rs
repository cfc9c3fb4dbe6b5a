//! Quick tests of the real `spate-node` binary: its help, its refusal of a data directory
//! without O_DIRECT, and a graceful shutdown on SIGTERM that keeps every acknowledged record.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{data_dir, records, Client};
use spate_proto::*;

/// `spate-node`, its metrics on a free port (tests never take the default ports).
fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spate-node"));
    command.args(["--metrics-listen", "127.0.0.1:0"]);
    command
}

#[test]
fn help_documents_every_option() {
    let output = binary().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--data-dir",
        "--listen",
        "--shards",
        "--cpus",
        "--config",
        "--allow-buffered-io",
        "--max-connections",
        "--frames-in-flight",
        "--frame-size-max",
        "--unflushed-bytes",
        "--fetch-waiters",
        "--retention-ms",
        "--retention-bytes",
        "--segment-bytes",
        "--flush-interval-ms",
        "--retention-check-ms",
        "--io-memory",
        "--tail-cache-bytes",
        "--metrics-listen",
        "--metrics-per-topic",
        "--log-format",
        "--log-level",
        "--preallocate-bytes",
        "--frame-timeout-ms",
        "--idle-timeout-ms",
        "--verify-bytes-per-second",
        "--verify-interval-ms",
        "--auto-create-topics",
        "--auto-create-partitions",
        "--node-id",
        "--etcd",
        "--cluster-name",
        "--session-timeout-ms",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn a_data_directory_in_memory_is_refused() {
    // /dev/shm is tmpfs on Linux: data there does not survive a power loss (and before
    // Linux 6.6 tmpfs had no O_DIRECT at all).
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    let dir = shm.join(format!("spate-in-memory-{}", std::process::id()));
    let mut child = binary()
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            panic!("spate-node started on tmpfs");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success());
    assert!(stderr.contains("tmpfs"), "{stderr}");
    assert!(stderr.contains("--allow-buffered-io"), "{stderr}");
}

fn start(dir: &std::path::Path) -> (std::process::Child, SocketAddr) {
    start_with(dir, &[])
}

fn start_with(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, SocketAddr) {
    let mut child = binary()
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("SPATE_TEST_NODE_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let address = line.rsplit(' ').next().unwrap().parse().unwrap();
    (child, address)
}

#[test]
fn sigterm_shuts_down_gracefully_and_keeps_acknowledged_records() {
    let dir = data_dir("sigterm");
    let (mut child, address) = start(&dir);
    let mut client = Client::connect(address);
    client.create_topic("t", 1);
    // `write` is acknowledged before any sync; the shutdown must still make it durable.
    for index in 0..50u32 {
        let value = index.to_le_bytes();
        assert!(matches!(
            client.produce("t", 0, &[&value], Durability::Write),
            Response::Produce(_)
        ));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "spate-node exited with {exit:?}");
    let (mut child, address) = start(&dir);
    let mut client = Client::connect(address);
    match client.fetch("t", 0, 0, 0) {
        Response::Fetch(fetched) => {
            let found = records(&fetched.records);
            assert_eq!(found.len(), 50);
            assert_eq!(found[49], (49, 49u32.to_le_bytes().to_vec()));
        }
        other => panic!("{other:?}"),
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_second_node_on_the_same_data_directory_exits_before_touching_it() {
    let dir = data_dir("locked");
    let (mut first, address) = start(&dir);
    let mut client = Client::connect(address);
    client.create_topic("t", 1);
    assert!(matches!(
        client.produce("t", 0, &[b"kept"], Durability::Fsync),
        Response::Produce(_)
    ));
    let before = snapshot(&dir);
    let mut second = binary()
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let _ = first.kill();
            panic!("a second node runs on the same data directory");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second node started: {stderr}");
    assert!(second.stdout.is_empty(), "the second node listened");
    assert!(
        stderr.contains(&format!(
            "in use by another spate process (PID {})",
            first.id()
        )),
        "{stderr}"
    );
    // Not a byte of the first node's files was read into a recovery or written.
    assert!(!stderr.contains("recover"), "{stderr}");
    assert_eq!(snapshot(&dir), before);
    // The first node still serves what it acknowledged.
    match client.fetch("t", 0, 0, 0) {
        Response::Fetch(fetched) => assert_eq!(records(&fetched.records), [(0, b"kept".to_vec())]),
        other => panic!("{other:?}"),
    }
    let _ = first.kill();
    let _ = first.wait();
    // Once the holder is gone (even by SIGKILL) the directory can be opened again.
    let (mut third, address) = start(&dir);
    let mut client = Client::connect(address);
    match client.fetch("t", 0, 0, 0) {
        Response::Fetch(fetched) => assert_eq!(records(&fetched.records), [(0, b"kept".to_vec())]),
        other => panic!("{other:?}"),
    }
    let _ = third.kill();
    let _ = third.wait();
}

/// A data directory served as node 3 is never served as node 4: the start is refused with a
/// message naming the directory's node, before anything else in it is read or written; the
/// storage id made at the first start stays through restarts.
#[test]
fn a_data_directory_is_never_served_under_another_node_id() {
    let dir = data_dir("node-id");
    let (mut first, address) = start_with(&dir, &["--node-id", "3"]);
    let mut client = Client::connect(address);
    client.create_topic("t", 1);
    assert!(matches!(
        client.produce("t", 0, &[b"kept"], Durability::Fsync),
        Response::Produce(_)
    ));
    terminate(first);
    let identity = std::fs::read(dir.join("identity")).unwrap();
    let decoded = spate_format::identity::decode_identity(&identity).unwrap();
    assert_eq!(decoded.node_id, Some(3));
    // The refused start takes the directory's lock (its `.lock` file), and nothing else.
    let unlocked = |dir: &std::path::Path| {
        let mut files = snapshot(dir);
        files.retain(|(name, ..)| !name.ends_with(".lock"));
        files
    };
    let before = unlocked(&dir);
    let other = binary()
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--node-id",
            "4",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success(), "served as node 4: {stderr}");
    assert!(other.stdout.is_empty(), "node 4 listened");
    assert!(stderr.contains("belongs to node 3, not node 4"), "{stderr}");
    assert!(!stderr.contains("recover"), "{stderr}");
    assert_eq!(unlocked(&dir), before);
    // As node 3 (or without an id) it serves what it acknowledged, with the same identity.
    for extra in [&["--node-id", "3"][..], &[]] {
        let (child, address) = start_with(&dir, extra);
        let mut client = Client::connect(address);
        match client.fetch("t", 0, 0, 0) {
            Response::Fetch(fetched) => {
                assert_eq!(records(&fetched.records), [(0, b"kept".to_vec())]);
            }
            other => panic!("{other:?}"),
        }
        terminate(child);
        assert_eq!(std::fs::read(dir.join("identity")).unwrap(), identity);
    }
    // The offline check shows the identity, and a damaged identity file needs the operator.
    let check = || {
        let output = binary()
            .args(["check", "--data-dir", dir.to_str().unwrap()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), stdout)
    };
    let (code, stdout) = check();
    assert_eq!(code, Some(0), "{stdout}");
    let shown = format!("identity: storage id {:016x}, node 3", decoded.storage_id);
    assert!(stdout.contains(&shown), "{stdout}");
    let mut damaged = identity.clone();
    damaged[18] ^= 1;
    std::fs::write(dir.join("identity"), &damaged).unwrap();
    let (code, stdout) = check();
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("identity: DAMAGED"), "{stdout}");
    let refused = binary()
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("remove the file"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    std::fs::write(dir.join("identity"), &identity).unwrap();
    first = start_with(&dir, &["--node-id", "3"]).0;
    let _ = first.kill();
    let _ = first.wait();
}

/// Every file under `dir` with its length and modification time.
fn snapshot(dir: &std::path::Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                found.push((
                    entry.path().display().to_string(),
                    metadata.len(),
                    metadata.modified().unwrap(),
                ));
            }
        }
    }
    found.sort();
    found
}

/// Bytes allocated on disk under `dir` (blocks, so preallocated space counts).
fn allocated(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let metadata = entry.as_ref().unwrap().metadata().unwrap();
            if metadata.is_dir() {
                pending.push(entry.unwrap().path());
            } else {
                total += metadata.blocks() * 512;
            }
        }
    }
    total
}

fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

#[test]
fn many_small_partitions_take_little_disk_and_memory_across_a_kill() {
    const PARTITIONS: u32 = 200;
    let dir = data_dir("many-partitions");
    let (mut child, address) = start(&dir);
    let mut client = Client::connect(address);
    client.create_topic("many", PARTITIONS);
    for partition in 0..PARTITIONS {
        let value = partition.to_le_bytes();
        assert!(matches!(
            client.produce("many", partition, &[&value], Durability::Fsync),
            Response::Produce(_)
        ));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, address) = start(&dir);
    // Segments start small and grow geometrically: 64 KiB each here, where a fixed 16 MiB
    // chunk took 3.2 GB for these 200 records.
    let disk = allocated(&dir);
    assert!(
        disk <= u64::from(PARTITIONS) * (128 << 10),
        "{disk} bytes allocated for {PARTITIONS} one-record partitions"
    );
    // Recovery reads only what was written, and a partition's write buffer is allocated by
    // its next append: the peak stays far below a buffer or a preallocation per partition.
    let peak = resident_bytes(child.id());
    assert!(
        peak <= 100 << 20,
        "peak resident memory {peak} bytes after recovering {PARTITIONS} partitions"
    );
    let mut client = Client::connect(address);
    for partition in 0..PARTITIONS {
        match client.fetch("many", partition, 0, 0) {
            Response::Fetch(fetched) => assert_eq!(
                records(&fetched.records),
                [(0, partition.to_le_bytes().to_vec())]
            ),
            other => panic!("{other:?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_active_segment_cut_from_outside_fences_instead_of_reissuing_offsets() {
    let dir = data_dir("cut-outside");
    let (mut child, address) = start(&dir);
    let mut client = Client::connect(address);
    client.create_topic("t", 1);
    for index in 0..10u8 {
        let value = [index; 300];
        assert!(matches!(
            client.produce("t", 0, &[&value], Durability::Fsync),
            Response::Produce(_)
        ));
    }
    let _ = child.kill();
    let _ = child.wait();
    // Someone cuts the file in the middle of the seventh acknowledged batch.
    let segment = dir.join("topics/t-0/00000000000000000000.log");
    let bytes = std::fs::read(&segment).unwrap();
    let (batches, _) = spate_format::segment::scan_segment(&bytes, 0, None);
    assert_eq!(batches.len(), 10);
    let cut = batches[6].position + 100;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let (mut child, address) = start(&dir);
    let mut client = Client::connect(address);
    // Offsets 6.. were acknowledged once: a new record must not get offset 6.
    match client.produce("t", 0, &[b"after"], Durability::Fsync) {
        Response::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::PartitionFenced);
            assert!(
                error.message.contains("possibly acknowledged records lost"),
                "{}",
                error.message
            );
        }
        other => panic!("expected a fence, got {other:?}"),
    }
    // What is left below the cut is still served, and the file was not cut further.
    match client.fetch("t", 0, 0, 0) {
        Response::Fetch(fetched) => assert_eq!(records(&fetched.records).len(), 6),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), cut);
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads until the peer closes; panics if it sends anything or stays open for `limit`.
fn closed_within(stream: &mut std::net::TcpStream, limit: std::time::Duration) {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection was not closed: {other:?}"),
    }
}

#[test]
fn silent_connections_cannot_lock_a_reconnecting_client_out() {
    let dir = data_dir("silent-connections");
    let (mut child, address) = start_with(&dir, &["--max-connections", "4"]);
    let mut silent: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(address).unwrap())
        .collect();
    // Connections silent for less than a second are never pushed out.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let mut client = Client::connect(address);
    assert!(matches!(
        client.create_topic("t", 1),
        Response::CreateTopic(_)
    ));
    // The one silent longest made room.
    closed_within(&mut silent[0], std::time::Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn stalled_frames_and_idle_connections_are_closed() {
    use std::io::Write;
    let dir = data_dir("stalled-connections");
    let (mut child, address) = start_with(
        &dir,
        &["--frame-timeout-ms", "300", "--idle-timeout-ms", "1500"],
    );
    let started = std::time::Instant::now();
    let mut stalled = std::net::TcpStream::connect(address).unwrap();
    let mut idle = std::net::TcpStream::connect(address).unwrap();
    // Half of a frame header, then nothing.
    stalled.write_all(&[0x10, 0, 0, 0, 1, 0, 0, 0]).unwrap();
    closed_within(&mut stalled, std::time::Duration::from_secs(5));
    let stalled_after = started.elapsed();
    closed_within(&mut idle, std::time::Duration::from_secs(10));
    let idle_after = started.elapsed();
    assert!(
        stalled_after < idle_after,
        "the stalled frame ({stalled_after:?}) outlived the idle connection ({idle_after:?})"
    );
    assert!(idle_after >= std::time::Duration::from_millis(1500));
    // The node serves on.
    let mut client = Client::connect(address);
    assert!(matches!(
        client.create_topic("t", 1),
        Response::CreateTopic(_)
    ));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn check_finds_damage_inside_a_sealed_segment_that_a_start_does_not_read() {
    let dir = data_dir("check");
    let (mut child, address) = start(&dir);
    let mut client = Client::connect(address);
    rolled_topic(&mut client, 2);
    let check = |dir: &std::path::Path| {
        let output = binary()
            .args(["check", "--data-dir", dir.to_str().unwrap()])
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // Never on a directory a node is using.
    let (code, _, stderr) = check(&dir);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("in use by another spate process"),
        "{stderr}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());

    let (code, stdout, stderr) = check(&dir);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("c-0: "), "{stdout}");
    assert!(stdout.contains("c-1: 0 segments"), "{stdout}");
    assert!(!stdout.contains("DAMAGED"), "{stdout}");

    // One flipped byte in the middle of the first, sealed segment: a start validates only
    // the end of a sealed segment, the check reads all of it.
    let segment = dir.join("topics/c-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let (batches, _) = spate_format::segment::scan_segment(&bytes, 0, None);
    assert!(batches.len() > 4);
    let flip_at = usize::try_from(batches[2].position + 200).unwrap();
    bytes[flip_at] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    let (code, stdout, _) = check(&dir);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("c-0: ") && stdout.contains("DAMAGED"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "00000000000000000000.log at {}",
            batches[2].position
        )),
        "{stdout}"
    );
    // Nothing was changed.
    assert_eq!(std::fs::read(&segment).unwrap(), bytes);
}

fn terminate(mut child: std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_fence_found_while_running_survives_restarts_until_its_marker_is_removed() {
    let dir = data_dir("persisted-fence");
    let (child, address) = start(&dir);
    let mut client = Client::connect(address);
    rolled_topic(&mut client, 1);
    terminate(child);
    // Damage inside a sealed segment: a start does not read it.
    let segment = dir.join("topics/c-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let (batches, _) = spate_format::segment::scan_segment(&bytes, 0, None);
    let flip_at = usize::try_from(batches[2].position + 200).unwrap();
    bytes[flip_at] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();

    // Background verification off: here a consumer finds the damage first.
    let (child, address) = start_with(&dir, &["--verify-bytes-per-second", "0"]);
    let mut client = Client::connect(address);
    assert!(
        matches!(
            client.produce("c", 0, &[b"before"], Durability::Fsync),
            Response::Produce(_)
        ),
        "nothing is known of the damage yet"
    );
    // A consumer reaching it fences the partition (the batches before it are served)...
    assert!(matches!(client.fetch("c", 0, 0, 0), Response::Fetch(_)));
    let damaged = batches[2].base_offset.0;
    assert!(matches!(
        client.fetch("c", 0, damaged, 0),
        Response::Error { .. }
    ));
    let fenced = |client: &mut Client| match client.produce("c", 0, &[b"x"], Durability::Fsync) {
        Response::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::PartitionFenced);
            error.message
        }
        other => panic!("expected a fence, got {other:?}"),
    };
    fenced(&mut client);
    terminate(child);
    // ...and the fence holds across a restart, naming the marker to remove.
    let (child, address) = start(&dir);
    let mut client = Client::connect(address);
    let message = fenced(&mut client);
    assert!(message.contains("found before a restart"), "{message}");
    assert!(message.contains("FENCED"), "{message}");
    terminate(child);
    let check = binary()
        .args(["check", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains("fenced: "));
    // After a repair (here: the byte put back), removing the marker lifts the fence.
    bytes[flip_at] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    std::fs::remove_file(dir.join("topics/c-0/FENCED")).unwrap();
    let (mut child, address) = start(&dir);
    let mut client = Client::connect(address);
    assert!(matches!(
        client.produce("c", 0, &[b"after"], Durability::Fsync),
        Response::Produce(_)
    ));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn background_verification_fences_damage_inside_a_sealed_segment_after_a_start() {
    let dir = data_dir("background-verification");
    let (child, address) = start(&dir);
    let mut client = Client::connect(address);
    rolled_topic(&mut client, 1);
    terminate(child);
    // A flipped bit inside the first sealed segment: a start reads only a sealed segment's
    // end, and no consumer will read it.
    let segment = dir.join("topics/c-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let (batches, _) = spate_format::segment::scan_segment(&bytes, 0, None);
    let flip_at = usize::try_from(batches[3].position + 100).unwrap();
    bytes[flip_at] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();

    // Default settings: the first pass starts with the node.
    let (mut child, address) = start(&dir);
    let mut client = Client::connect(address);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let message = loop {
        match client.produce("c", 0, &[b"x"], Durability::Fsync) {
            Response::Error { error, .. } if error.code == ErrorCode::PartitionFenced => {
                break error.message;
            }
            Response::Produce(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the damage was not found in 30 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(message.contains("background verification"), "{message}");
    assert!(
        message.contains(&format!(
            "00000000000000000000.log at position {}",
            batches[3].position
        )),
        "{message}"
    );
    // Recorded: a restart keeps the fence.
    assert!(dir.join("topics/c-0/FENCED").exists());
    // The records before the damage are still served.
    match client.fetch("c", 0, 0, 0) {
        Response::Fetch(fetched) => assert!(!records(&fetched.records).is_empty()),
        other => panic!("{other:?}"),
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn producer_ids_are_never_handed_out_twice_across_a_kill() {
    let dir = data_dir("producer-ids");
    let allocate = |client: &mut Client, count: u32| match client.call(
        &Request::AllocateProducerIds(AllocateProducerIdsRequest { count }),
    ) {
        Response::AllocateProducerIds(block) => {
            assert_eq!(block.count, count);
            block.first..block.first + u64::from(count)
        }
        other => panic!("{other:?}"),
    };
    let (mut child, address) = start(&dir);
    let mut client = Client::connect(address);
    let first = allocate(&mut client, 1000);
    let second = allocate(&mut client, 10);
    assert_eq!(first, 0..1000);
    assert_eq!(second.start, first.end);
    // Answered means stored: after kill -9 the next block starts after both.
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, address) = start(&dir);
    let mut client = Client::connect(address);
    let third = allocate(&mut client, 1000);
    assert_eq!(third.start, second.end);
    assert!(matches!(
        client.call(&Request::AllocateProducerIds(AllocateProducerIdsRequest {
            count: 0
        })),
        Response::Error { .. }
    ));
    let _ = child.kill();
    let _ = child.wait();
}

/// A small tmpfs mounted for one test (a real ENOSPC), unmounted when dropped.
struct SmallFilesystem {
    path: std::path::PathBuf,
}

impl SmallFilesystem {
    fn mount(name: &str, size: &str) -> SmallFilesystem {
        let path = data_dir(name);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount a tmpfs (the test needs root)"
        );
        SmallFilesystem { path }
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_partition_fenced_by_enospc_recovers_by_itself_once_space_is_back() {
    let filesystem = SmallFilesystem::mount("enospc", "16m");
    let filler = filesystem.path.join("filler");
    std::fs::write(&filler, vec![1u8; 12 << 20]).unwrap();
    let data = filesystem.path.join("data");
    // tmpfs keeps data in memory: allowed here, only to run out of space for real.
    let (mut child, address) = start_with(&data, &["--allow-buffered-io"]);
    let mut client = Client::connect(address);
    client.create_topic("t", 1);
    let value = vec![5u8; 60_000];
    let mut acknowledged = 0u64;
    let fence = loop {
        match client.produce("t", 0, &[&value], Durability::Fsync) {
            Response::Produce(produced) => {
                assert_eq!(produced.base_offset, acknowledged);
                acknowledged += 1;
                assert!(acknowledged < 1000, "the filesystem never filled up");
            }
            Response::Error { error, .. } => break error,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(fence.code, ErrorCode::PartitionFenced);
    assert!(fence.message.contains("No space left"), "{}", fence.message);
    // Space comes back: the shard re-runs the partition's recovery by itself.
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let next = loop {
        match client.produce("t", 0, &[b"after"], Durability::Fsync) {
            Response::Produce(produced) => break produced.base_offset,
            Response::Error { .. } => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still fenced after space came back"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => panic!("{other:?}"),
        }
    };
    // Every acknowledged record is there, offsets were not reused.
    assert!(next >= acknowledged, "offset {next} issued again");
    let mut offset = 0;
    let mut found = Vec::new();
    while offset <= next {
        match client.fetch("t", 0, offset, 0) {
            Response::Fetch(fetched) => {
                let batch = records(&fetched.records);
                assert!(!batch.is_empty());
                offset = batch.last().unwrap().0 + 1;
                found.extend(batch);
            }
            other => panic!("{other:?}"),
        }
    }
    for (index, (at, bytes)) in found.iter().enumerate() {
        assert_eq!(*at, index as u64, "offsets are dense");
        if *at < acknowledged {
            assert_eq!(bytes, &value);
        }
    }
    assert_eq!(found.last().unwrap(), &(next, b"after".to_vec()));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sighup_re_runs_recovery_of_fenced_partitions() {
    let filesystem = SmallFilesystem::mount("sighup", "16m");
    let filler = filesystem.path.join("filler");
    std::fs::write(&filler, vec![1u8; 12 << 20]).unwrap();
    let data = filesystem.path.join("data");
    let (mut child, address) = start_with(&data, &["--allow-buffered-io"]);
    let mut client = Client::connect(address);
    client.create_topic("t", 1);
    let value = vec![5u8; 60_000];
    let mut acknowledged = 0u64;
    loop {
        match client.produce("t", 0, &[&value], Durability::Fsync) {
            Response::Produce(_) => acknowledged += 1,
            Response::Error { error, .. } => {
                assert_eq!(error.code, ErrorCode::PartitionFenced);
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(acknowledged < 1000, "the filesystem never filled up");
    }
    // Some space back, less than the node waits for before it retries by itself.
    std::fs::write(&filler, vec![1u8; 11 << 20]).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(matches!(
        client.produce("t", 0, &[b"x"], Durability::Fsync),
        Response::Error { .. }
    ));
    // The operator asks.
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let next = loop {
        match client.produce("t", 0, &[b"after"], Durability::Fsync) {
            Response::Produce(produced) => break produced.base_offset,
            Response::Error { .. } => {
                assert!(std::time::Instant::now() < deadline, "still fenced");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(next >= acknowledged, "offset {next} issued again");
    let _ = child.kill();
    let _ = child.wait();
}

/// Creates topic `c` with `partitions` partitions and 64 KiB segments, and writes 60 batches
/// of two 3,000-byte records to partition 0, so it has several rolled (sealed) segments.
fn rolled_topic(client: &mut Client, partitions: u32) {
    assert!(matches!(
        client.call(&Request::CreateTopic(CreateTopicRequest {
            legacy_layout: false,
            min_insync_replicas: Setting::Default,
            topic: "c".into(),
            partitions,
            retention_ms: Setting::Default,
            retention_bytes: Setting::Default,
            segment_bytes: Setting::Value(64 << 10),
            replication_factor: 0,
        })),
        Response::CreateTopic(_)
    ));
    let value = vec![7u8; 3000];
    for _ in 0..60 {
        assert!(matches!(
            client.produce("c", 0, &[&value, &value], Durability::Fsync),
            Response::Produce(_)
        ));
    }
}

/// A build without the `cluster` feature says how to get one rather than ignoring `--etcd`.
#[cfg(not(feature = "cluster"))]
#[test]
fn a_build_without_cluster_support_refuses_etcd_and_says_how_to_build_it() {
    let dir = data_dir("no-cluster");
    let output = binary()
        .arg("--data-dir")
        .arg(&dir)
        .args(["--node-id", "1", "--etcd", "http://127.0.0.1:2379"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--features cluster"), "{stderr}");
    assert!(!dir.join("identity").exists(), "nothing was written");
}

/// A node that takes no new connection for a long while keeps serving. Until 2026-12-07 the
/// accept loop polled one accept again at every 50 ms shutdown check, and glommio kept a
/// clone of the task's waker per poll until the accept completed: after about 820 s without
/// a new connection the waker count overflowed and the node aborted. Long, so not in the
/// default suite: `SPATE_IDLE_SECONDS=1000 cargo test --release -p spate-node --test process
/// an_idle_node -- --ignored --nocapture` (the default, 1000 s, outlives the old failure).
#[test]
#[ignore = "a soak: runs for SPATE_IDLE_SECONDS (default 1000)"]
fn an_idle_node_keeps_serving() {
    let seconds: u64 = std::env::var("SPATE_IDLE_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000);
    let dir = data_dir("idle");
    let mut child = binary()
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--shards", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // `shard 0 listening on ADDR`
    let first: SocketAddr = lines
        .next()
        .unwrap()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the node stopped while idle"
    );
    // It still takes a connection and answers.
    let mut client = Client::connect(first);
    let metadata = client.call(&Request::Metadata(MetadataRequest {
        placement: false,
        settings: false,
        topics: vec![],
        racks: false,
    }));
    assert!(matches!(metadata, Response::Metadata(_)), "{metadata:?}");
    let _ = child.kill();
    let _ = child.wait();
}
