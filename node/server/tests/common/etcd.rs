//! An etcd server of one member for tests (Debian's `etcd-server`; `.ci/run` installs it),
//! on free loopback ports, stopped when dropped. Shared by the node's cluster tests and the
//! SDK's (`#[path]`-included there).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running etcd; `url` is its client URL.
pub struct EtcdProcess {
    child: Child,
    pub url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdProcess {
    /// Starts etcd named `name` with its data under `dir` (not waited for: the caller probes
    /// it).
    pub fn spawn(name: &str, dir: &Path) -> EtcdProcess {
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new("etcd")
            .args(["--name", name, "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("{name}={peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd must be installed (Debian's etcd-server; .ci/run installs it)");
        EtcdProcess { child, url }
    }
}

impl EtcdProcess {
    /// Waits (up to 30 s) until etcd takes connections on its client port.
    pub fn wait_listening(&self) {
        let address = self.url.trim_start_matches("http://").to_owned();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(std::time::Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Stops it now (a test of what happens without etcd).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
