//! CPU time of this process's threads by part, so a report shows what moving a gigabyte
//! costs the node, the gateway and the client on a machine where all three share the CPUs.
//!
//! Threads are told apart by name: the node's shards (`shard-*`, and the kernel's io_uring
//! workers `iou-*` that run their blocking requests), the gateway's runtime (`gateway*`,
//! given by `cluster::Local`), and everything else (the benchmark, the SDK's runtime,
//! librdkafka's threads). The node's and the gateway's times come from their live threads'
//! `/proc/self/task/*/stat` (user + system), the client's is the whole process's
//! (`/proc/self/stat`, which keeps the time of threads that ended, such as librdkafka's)
//! minus those two. A node or gateway thread that ends during a run (an io_uring worker idle
//! for seconds, a blocking-pool thread) moves its lifetime's time to the client's column: the
//! parts are estimates, their sum is exact.

use std::collections::BTreeMap;

use crate::report::Run;

/// Clock ticks per second of the times in `/proc/*/stat`: the kernel reports them in
/// `USER_HZ`, which is 100 on every architecture Linux runs glommio on (what
/// `sysconf(_SC_CLK_TCK)` returns), whatever its internal tick rate.
const USER_HZ: f64 = 100.0;

/// Seconds of CPU time used so far, by part.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    pub node: f64,
    pub gateway: f64,
    pub client: f64,
}

impl CpuTime {
    /// The threads' CPU time now (zero where `/proc` cannot be read).
    pub fn now() -> CpuTime {
        let mut time = CpuTime::default();
        let process = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| parse_stat(&stat, USER_HZ).map(|(_, seconds)| seconds))
            .unwrap_or(0.0);
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return time;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Some((name, seconds)) = parse_stat(&stat, USER_HZ) else {
                continue;
            };
            match part(name) {
                Part::Node => time.node += seconds,
                Part::Gateway => time.gateway += seconds,
                Part::Client => {}
            }
        }
        time.client = (process - time.node - time.gateway).max(0.0);
        time
    }

    /// The CPU time used since `before`.
    pub fn since(before: CpuTime) -> CpuTime {
        let now = CpuTime::now();
        CpuTime {
            node: (now.node - before.node).max(0.0),
            gateway: (now.gateway - before.gateway).max(0.0),
            client: (now.client - before.client).max(0.0),
        }
    }

    /// The whole process's CPU time.
    pub fn total(self) -> f64 {
        self.node + self.gateway + self.client
    }

    /// Adds the process's CPU seconds per gigabyte the run moved (`run.bytes`) to its figures,
    /// not split by part: for baselines and in-process runs, whose threads are all the
    /// benchmark's own.
    pub fn record_total(self, run: &mut Run) {
        if run.bytes > 0 {
            let gigabytes = run.bytes as f64 / 1e9;
            run.figures
                .insert("cpu_seconds_per_gb".to_owned(), self.total() / gigabytes);
        }
    }

    /// Adds the parts' CPU seconds per gigabyte the run moved (`run.bytes`) to its figures,
    /// and their sum.
    pub fn record(self, run: &mut Run) {
        if run.bytes == 0 {
            return;
        }
        self.record_total(run);
        let gigabytes = run.bytes as f64 / 1e9;
        let figures = BTreeMap::from([
            ("cpu_node_seconds_per_gb".to_owned(), self.node / gigabytes),
            (
                "cpu_gateway_seconds_per_gb".to_owned(),
                self.gateway / gigabytes,
            ),
            (
                "cpu_client_seconds_per_gb".to_owned(),
                self.client / gigabytes,
            ),
        ]);
        run.figures.extend(figures);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Node,
    Gateway,
    Client,
}

fn part(thread_name: &str) -> Part {
    if thread_name.starts_with("shard-") || thread_name.starts_with("iou-") {
        Part::Node
    } else if thread_name.starts_with("gateway") {
        Part::Gateway
    } else {
        Part::Client
    }
}

/// The thread's name and its user + system CPU seconds from a `/proc/…/stat` line: the name
/// is between the first `(` and the last `)` (it may hold spaces and parentheses), then come
/// the fields from the third on; utime and stime are the 14th and 15th.
fn parse_stat(stat: &str, ticks_per_second: f64) -> Option<(&str, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is the 3rd field (state): utime is fields[11], stime fields[12].
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (user + system) / ticks_per_second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_the_name_and_cpu_seconds() {
        let line = "1234 (shard-0 (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100";
        assert_eq!(parse_stat(line, 100.0), Some(("shard-0 (x)", 3.0)));
        assert_eq!(part("shard-1-2"), Part::Node);
        assert_eq!(part("iou-wrk-77"), Part::Node);
        assert_eq!(part("gateway"), Part::Gateway);
        assert_eq!(part("tokio-runtime-w"), Part::Client);
    }
}
