//! An etcd server of one member for tests (Debian's `etcd-server`; `.ci/run` installs it),
//! on free loopback ports, stopped when dropped. Shared by the node's cluster tests and the
//! SDK's (`#[path]`-included there); each test binary uses a part of it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running etcd; `url` is its client URL.
pub struct EtcdProcess {
    child: Child,
    pub url: String,
}

fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port free on `host` (an address of this machine) right now.
fn free_port_on(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdProcess {
    /// Starts etcd named `name` with its data under `dir` (not waited for: the caller probes
    /// it).
    pub fn spawn(name: &str, dir: &Path) -> EtcdProcess {
        EtcdProcess::spawn_with(name, dir, &[])
    }

    /// [`EtcdProcess::spawn`] with more of etcd's flags (`extra`).
    pub fn spawn_with(name: &str, dir: &Path, extra: &[&str]) -> EtcdProcess {
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
            .args(extra)
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

/// One member of an [`EtcdCluster`].
struct ClusterMember {
    name: String,
    url: String,
    peer: String,
    child: Option<Child>,
}

/// An etcd cluster of several members on loopback, each its own process and data directory
/// (a fault run kills and restarts members); `urls` lists their client URLs, comma-separated.
pub struct EtcdCluster {
    members: Vec<ClusterMember>,
    initial: String,
    dir: std::path::PathBuf,
    pub urls: String,
}

impl EtcdCluster {
    /// Starts `count` members named `{name}-{i}` under `dir` (not waited for).
    pub fn spawn(name: &str, dir: &Path, count: usize) -> EtcdCluster {
        EtcdCluster::spawn_on(name, dir, count, "127.0.0.1")
    }

    /// [`EtcdCluster::spawn`] on `host`, an address of this machine.
    pub fn spawn_on(name: &str, dir: &Path, count: usize, host: &str) -> EtcdCluster {
        let members: Vec<ClusterMember> = (0..count)
            .map(|index| ClusterMember {
                name: format!("{name}-{index}"),
                url: format!("http://{host}:{}", free_port_on(host)),
                peer: format!("http://{host}:{}", free_port_on(host)),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|member| format!("{}={}", member.name, member.peer))
            .collect::<Vec<_>>()
            .join(",");
        let urls = members
            .iter()
            .map(|member| member.url.clone())
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial,
            dir: dir.to_owned(),
            urls,
        };
        for index in 0..count {
            cluster.start(index);
        }
        cluster
    }

    /// Starts member `index` (again: its data directory keeps its membership).
    pub fn start(&mut self, index: usize) {
        let member = &mut self.members[index];
        let child = Command::new("etcd")
            .args(["--name", &member.name, "--data-dir"])
            .arg(self.dir.join(&member.name))
            .args([
                "--listen-client-urls",
                &member.url,
                "--advertise-client-urls",
                &member.url,
                "--listen-peer-urls",
                &member.peer,
                "--initial-advertise-peer-urls",
                &member.peer,
                "--initial-cluster",
                &self.initial,
                "--initial-cluster-state",
                "new",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd must be installed (Debian's etcd-server; .ci/run installs it)");
        member.child = Some(child);
    }

    /// Kills member `index` with SIGKILL.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Waits (up to 30 s) until every member takes connections on its client port.
    pub fn wait_listening(&self) {
        for member in &self.members {
            let address = member.url.trim_start_matches("http://").to_owned();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::net::TcpStream::connect(&address).is_err() {
                assert!(std::time::Instant::now() < deadline, "etcd did not start");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    /// Stops every member.
    pub fn stop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
