//! The development certificate survives a crash while it is written: the real `spate-gateway`
//! binary starts on a certificate directory holding the empty files a crash right after
//! creating them left behind (the old code wrote without fsync), replaces them with a pair
//! that loads, and leaves no temporary files.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[test]
fn empty_development_certificate_files_are_replaced_at_start() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gateway-dev-cert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::write(tls.join("cert.pem"), b"").unwrap();
    std::fs::write(tls.join("key.pem"), b"").unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_spate-gateway"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--node",
            "127.0.0.1:1",
            "--dev-cert-dir",
        ])
        .arg(&tls)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(gateway.stdout.take().unwrap())
        .lines()
        .next()
        .map(Result::unwrap);
    let _ = gateway.kill();
    let output = gateway.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = line.unwrap_or_else(|| panic!("the gateway did not start: {stderr}"));
    assert!(line.starts_with("gateway listening on "), "{line}");
    assert!(stderr.contains("does not load"), "{stderr}");
    let cert = tls.join("cert.pem");
    let key = tls.join("key.pem");
    spate_gateway::tls::server_config(&cert, &key, None).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&tls)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["cert.pem", "key.pem", "names"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    let _ = std::fs::remove_dir_all(&dir);
}
