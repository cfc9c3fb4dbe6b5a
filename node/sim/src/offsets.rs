//! The seeded simulation of a group coordinator's committed offsets
//! (`spate_core::coordinator` over `spate_core::offsets`) against a simulated offsets log:
//! commits, group and offset deletions, expiry and snapshots are appended; the disk makes a
//! prefix of the appends durable at random times; the coordinator hears the outcomes in a
//! random order (acknowledgements of durable appends; after a storage error, failures of the
//! rest, then the partition is reopened from the disk); the node crashes at random, keeping the durable records and a random prefix of
//! the written ones; snapshots move the log start (everything before them is deleted), and a
//! restarted coordinator replays the log from its start.
//!
//! Invariants checked after every step:
//! - what the coordinator shows (`fetch`) is the replay of the appends it was told about in
//!   append order, up to the first one still unsettled, without the failed ones — a prefix
//!   of the log, never a later record before an earlier one;
//! - after a crash, what it shows is the replay of the surviving log from its start; every
//!   acknowledged record survived (so an acknowledged commit is shown unless a later record
//!   of its key survived too);
//! - a snapshot is a full copy of the shown state: replaying from the moved log start gives
//!   what replaying the whole log gives.

use std::collections::{BTreeMap, BTreeSet};

use spate_core::coordinator::{AppendId, GroupCoordinator};
use spate_core::group::GroupConfig;
use spate_core::offsets::{Committed, OffsetRecord, OffsetStore};
use spate_core::Millis;

use crate::rng::Rng;

const GROUPS: [&str; 3] = ["a", "b", "c"];
const PARTITIONS: u32 = 4;
const RETENTION_MS: i64 = 60_000;

/// What an offsets run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffsetsReport {
    pub appends: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub crashes: u64,
    pub snapshots: u64,
    pub expiries: u64,
}

impl OffsetsReport {
    pub fn add(&mut self, other: &OffsetsReport) {
        self.appends += other.appends;
        self.acknowledged += other.acknowledged;
        self.failed += other.failed;
        self.crashes += other.crashes;
        self.snapshots += other.snapshots;
        self.expiries += other.expiries;
    }
}

/// An append as the simulated log holds it.
#[derive(Debug, Clone)]
struct Append {
    id: AppendId,
    records: Vec<OffsetRecord>,
    /// Durable on the disk.
    durable: bool,
    /// What the coordinator was told: `Some(true)` acknowledged, `Some(false)` failed.
    told: Option<bool>,
    /// A snapshot: once acknowledged, the log start moves to it.
    snapshot: bool,
}

struct Run {
    rng: Rng,
    now: Millis,
    coordinator: GroupCoordinator,
    /// Appends of this coordinator life, in log order.
    log: Vec<Append>,
    /// Records that survived earlier crashes, from the log start, in log order.
    base: Vec<OffsetRecord>,
    /// The acknowledged snapshot the log starts at now (an index into `log`): what came
    /// before it, `base` included, is deleted.
    start: Option<usize>,
    next_offset: i64,
    report: OffsetsReport,
}

type Checked = Result<(), String>;

fn replay(records: &[OffsetRecord]) -> OffsetStore {
    let mut store = OffsetStore::default();
    for record in records {
        // Records of the simulation always read back.
        let _ = store.apply(record);
    }
    store
}

fn shown(coordinator: &GroupCoordinator) -> BTreeMap<(String, String, u32), Committed> {
    let mut all = BTreeMap::new();
    for group in GROUPS {
        for ((topic, partition), committed) in coordinator.fetch(group, None) {
            if let Some(committed) = committed {
                all.insert((group.to_owned(), topic, partition), committed);
            }
        }
    }
    all
}

fn state_of(store: &OffsetStore) -> BTreeMap<(String, String, u32), Committed> {
    let mut all = BTreeMap::new();
    for group in GROUPS {
        for ((topic, partition), committed) in store.fetch(group, None) {
            if let Some(committed) = committed {
                all.insert((group.to_owned(), topic, partition), committed);
            }
        }
    }
    all
}

/// Runs one seed for `steps` steps.
pub fn run_offsets_seed(seed: u64, steps: u32) -> Result<OffsetsReport, String> {
    let mut run = Run {
        rng: Rng::new(seed),
        now: Millis(1_000_000),
        coordinator: GroupCoordinator::new(GroupConfig::default(), seed),
        log: Vec::new(),
        base: Vec::new(),
        start: None,
        next_offset: 0,
        report: OffsetsReport::default(),
    };
    for step in 0..steps {
        run.step()
            .map_err(|message| format!("offsets seed {seed} failed at step {step}: {message}"))?;
    }
    Ok(run.report)
}

/// Runs `count` seeds from `first`.
pub fn run_offsets_seeds(first: u64, count: u64, steps: u32) -> Result<OffsetsReport, String> {
    let mut total = OffsetsReport::default();
    for seed in first..first + count {
        total.add(&run_offsets_seed(seed, steps)?);
    }
    Ok(total)
}

impl Run {
    fn append(&mut self, made: Option<(AppendId, Vec<OffsetRecord>)>, snapshot: bool) {
        if let Some((id, records)) = made {
            self.report.appends += 1;
            self.log.push(Append {
                id,
                records,
                durable: false,
                told: None,
                snapshot,
            });
        }
    }

    fn group(&mut self) -> &'static str {
        GROUPS[self.rng.index(GROUPS.len())]
    }

    fn step(&mut self) -> Checked {
        self.now = Millis(self.now.0 + i64::try_from(self.rng.below(5_000)).unwrap_or(0));
        match self.rng.below(100) {
            0..=39 => {
                let group = self.group();
                let count = 1 + self.rng.below(3);
                let mut offsets = Vec::new();
                for _ in 0..count {
                    self.next_offset += 1;
                    let partition =
                        u32::try_from(self.rng.below(u64::from(PARTITIONS))).unwrap_or(0);
                    offsets.push((
                        "t".to_owned(),
                        partition,
                        self.next_offset,
                        -1,
                        String::new(),
                    ));
                }
                let made = self
                    .coordinator
                    .commit(self.now, group, "", None, -1, &offsets)
                    .map_err(|error| format!("a commit without members was refused: {error}"))?;
                self.append(Some(made), false);
            }
            40..=42 => {
                let group = self.group();
                let made = self.coordinator.delete(group).ok();
                self.append(made, false);
            }
            43..=45 => {
                let group = self.group();
                let partition = u32::try_from(self.rng.below(u64::from(PARTITIONS))).unwrap_or(0);
                let made = self
                    .coordinator
                    .delete_offsets(group, &[("t".to_owned(), partition)])
                    .ok();
                self.append(made, false);
            }
            46..=48 => {
                let made = self.coordinator.expire(self.now, RETENTION_MS);
                if made.is_some() {
                    self.report.expiries += 1;
                }
                self.append(made, false);
            }
            49..=53 => {
                let made = self.coordinator.snapshot();
                if made.is_some() {
                    self.report.snapshots += 1;
                }
                self.append(made, true);
            }
            54..=71 => {
                // The disk makes the next few appends durable, in order.
                let mut more = 1 + self.rng.below(4);
                for append in &mut self.log {
                    if more == 0 {
                        break;
                    }
                    if !append.durable && append.told.is_none() {
                        append.durable = true;
                        more -= 1;
                    }
                }
            }
            72..=95 => {
                // The coordinator hears about a durable append, in any order.
                let ready: Vec<usize> = (0..self.log.len())
                    .filter(|&i| self.log[i].durable && self.log[i].told.is_none())
                    .collect();
                if !ready.is_empty() {
                    let index = ready[self.rng.index(ready.len())];
                    self.log[index].told = Some(true);
                    self.report.acknowledged += 1;
                    let id = self.log[index].id;
                    self.coordinator.appended(id, true);
                    self.after_acknowledged(index);
                }
            }
            96..=97 => {
                // A storage error: every append not durable fails (it may still be on the
                // disk, written but not known to be durable). The partition is fenced and
                // reopened from the disk, as after a crash.
                for index in 0..self.log.len() {
                    if !self.log[index].durable && self.log[index].told.is_none() {
                        self.log[index].told = Some(false);
                        self.report.failed += 1;
                        let id = self.log[index].id;
                        self.coordinator.appended(id, false);
                    }
                }
                self.check_shown()?;
                self.crash()?;
            }
            _ => self.crash()?,
        }
        self.check_shown()
    }

    /// A snapshot acknowledged: the log start moves to it (what is before is deleted; it is
    /// all durable, as the disk keeps appends in order).
    fn after_acknowledged(&mut self, index: usize) {
        if self.log[index].snapshot && self.start.is_none_or(|start| start < index) {
            self.start = Some(index);
        }
    }

    /// What the coordinator must show: the base, then the appends in order while settled,
    /// the acknowledged ones applied.
    fn check_shown(&self) -> Checked {
        let mut records = self.base.clone();
        for append in &self.log {
            match append.told {
                Some(true) => records.extend(append.records.iter().cloned()),
                Some(false) => {}
                None => break,
            }
        }
        let expected = state_of(&replay(&records));
        let found = shown(&self.coordinator);
        if found != expected {
            return Err(format!(
                "the coordinator shows {found:?}, the acknowledged prefix of the log gives {expected:?}"
            ));
        }
        Ok(())
    }

    /// The node crashes: durable appends survive, then a random prefix of the written ones
    /// (failed or unsettled appends may be on the disk); a new coordinator replays the log.
    fn crash(&mut self) -> Checked {
        self.report.crashes += 1;
        let from = self.start.unwrap_or(0);
        if self.log[..from].iter().any(|append| !append.durable) {
            return Err("the log start moved past an append that is not durable".into());
        }
        // Everything ever written that survives, from before any log-start move: what the
        // log would hold without compaction.
        let old_base = std::mem::take(&mut self.base);
        let mut full = old_base.clone();
        for append in &self.log[..from] {
            full.extend(append.records.iter().cloned());
        }
        let mut surviving = match self.start {
            Some(_) => Vec::new(),
            None => old_base,
        };
        let mut keep_written = self.rng.chance(1, 2);
        let mut acknowledged_lost = false;
        for append in &self.log[from..] {
            let survives = append.durable || keep_written;
            if !append.durable && self.rng.chance(1, 3) {
                keep_written = false;
            }
            if survives {
                if acknowledged_lost {
                    // The disk keeps a prefix: nothing after a lost append.
                    break;
                }
                surviving.extend(append.records.iter().cloned());
                full.extend(append.records.iter().cloned());
            } else {
                acknowledged_lost = true;
            }
        }
        // Every acknowledged append must be in the surviving prefix.
        let acknowledged: usize = self
            .log
            .iter()
            .filter(|append| append.told == Some(true))
            .map(|append| append.records.len())
            .sum();
        let durable_records: usize = self
            .log
            .iter()
            .take_while(|append| append.durable || append.told == Some(true))
            .map(|append| append.records.len())
            .sum();
        if durable_records < acknowledged {
            return Err("an acknowledged append was not durable".into());
        }
        let mut restarted = GroupCoordinator::new(GroupConfig::default(), self.rng.next_u64());
        for record in &surviving {
            restarted
                .replay(record)
                .map_err(|error| format!("a record of the log does not replay: {error}"))?;
        }
        // Replaying from the log start gives what replaying everything ever written gives
        // (a snapshot is a full copy of the offsets up to it).
        if state_of(&replay(&surviving)) != state_of(&replay(&full)) {
            return Err(format!(
                "the compacted log replays to {:?}, the whole log to {:?}",
                state_of(&replay(&surviving)),
                state_of(&replay(&full))
            ));
        }
        self.coordinator = restarted;
        self.log.clear();
        self.start = None;
        self.base = surviving;
        let expected = state_of(&replay(&self.base));
        if shown(&self.coordinator) != expected {
            return Err("a restarted coordinator does not show the replay of its log".into());
        }
        let keys: BTreeSet<_> = expected.keys().collect();
        if keys.len() > GROUPS.len() * PARTITIONS as usize {
            return Err("more offsets than keys".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_seeds_keep_every_promise() {
        let report = run_offsets_seeds(0, 300, 300).unwrap();
        assert!(report.crashes > 100, "{report:?}");
        assert!(report.snapshots > 100, "{report:?}");
        assert!(report.failed > 100, "{report:?}");
    }
}
