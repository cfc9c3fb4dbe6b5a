//! `SimStorage`: an in-memory, seeded implementation of the core's storage contract that
//! knows what is synced and what is only written, completes requests in a random order,
//! injects faults on demand, and produces crash images.
//!
//! The crash model: a crash image holds every synced byte, plus any subset of the 4 KiB
//! sectors written (or in flight) since the last sync of their file, each sector either all
//! new or all old; a file created or removed since the last directory sync may or may not
//! exist. Sectors are atomic; writes are not. The one exception: the last sector written
//! since a file's last sync, if no synced write reached it, may come back as garbage (a
//! device tearing the sector it was writing), which recovery must treat as a garbage tail. The storage also enforces the O_DIRECT contract
//! (sector-aligned positions and lengths) with assertions: breaking it is a bug in the core.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use spate_core::storage::{align_up, FileRef};
use spate_core::{IoDone, IoOutcome, IoRequest, ListedFile, Storage, StorageError};
use spate_format::limits::SECTOR_SIZE;

use crate::rng::Rng;

const SECTOR: usize = SECTOR_SIZE as usize;

/// One crash image in this many turns the last unsynced sector of a file into garbage.
const GARBAGE_SECTOR_ONE_IN: u64 = 8;

/// A fault to inject into the next matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next `Write` fails (EIO).
    WriteError,
    /// The next `Sync` fails (EIO); nothing becomes durable.
    SyncError,
    /// The next `Write` of more than one sector writes only some of its sectors.
    ShortWrite,
    /// The next `Read` or `ReadFile` fails (EIO).
    ReadError,
}

#[derive(Debug, Clone, Default)]
struct SimFile {
    /// What a read returns now.
    data: Vec<u8>,
    /// What survives a crash for sure: the contents at the last sync.
    durable: Vec<u8>,
    /// End of the sectors written by `Write`s so far, and at the last sync: a sector at or
    /// past `synced_written_end` holds no synced byte (whatever its bytes' values).
    written_end: usize,
    synced_written_end: usize,
}

/// Counters of what the storage did, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub writes: u64,
    pub syncs: u64,
    pub dir_syncs: u64,
    pub reads: u64,
    pub faults: u64,
}

#[derive(Debug, Clone)]
pub struct SimStorage {
    rng: Rng,
    files: BTreeMap<FileRef, SimFile>,
    /// Files whose directory entry is durable.
    dir_durable: BTreeSet<FileRef>,
    /// Removed files whose removal is not durable yet, with their durable contents.
    removed: BTreeMap<FileRef, Vec<u8>>,
    in_flight: Vec<IoRequest>,
    completed: VecDeque<IoDone>,
    faults: Vec<Fault>,
    pub stats: SimStats,
}

fn error(operation: &'static str, file: &FileRef, message: &str) -> StorageError {
    let mut error = StorageError::new(operation, file.file_name(), message);
    error.errno = Some(5);
    error
}

impl SimStorage {
    pub fn new(seed: u64) -> Self {
        SimStorage {
            rng: Rng::new(seed),
            files: BTreeMap::new(),
            dir_durable: BTreeSet::new(),
            removed: BTreeMap::new(),
            in_flight: Vec::new(),
            completed: VecDeque::new(),
            faults: Vec::new(),
            stats: SimStats::default(),
        }
    }

    /// Arms a fault for the next matching request.
    pub fn inject(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    pub fn pending_faults(&self) -> usize {
        self.faults.len()
    }

    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    fn take_fault(&mut self, fault: Fault) -> bool {
        match self.faults.iter().position(|&armed| armed == fault) {
            Some(index) => {
                self.faults.remove(index);
                self.stats.faults += 1;
                true
            }
            None => false,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Completes one in-flight request, chosen at random; false if none is in flight.
    pub fn complete_one(&mut self) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        let index = self.rng.index(self.in_flight.len());
        let request = self.in_flight.swap_remove(index);
        let done = self.execute(request);
        self.completed.push_back(done);
        true
    }

    /// Completes every in-flight request, in a random order.
    pub fn complete_all(&mut self) {
        while self.complete_one() {}
    }

    /// The current contents of a file (what a read sees), for checks.
    pub fn contents(&self, file: &FileRef) -> Option<&[u8]> {
        self.files.get(file).map(|file| file.data.as_slice())
    }

    /// The synced contents of a file.
    pub fn durable_contents(&self, file: &FileRef) -> Option<&[u8]> {
        self.files.get(file).map(|file| file.durable.as_slice())
    }

    /// Whether a crash now keeps the file's directory entry for sure.
    pub fn is_dir_durable(&self, file: &FileRef) -> bool {
        self.dir_durable.contains(file)
    }

    pub fn file_refs(&self) -> Vec<FileRef> {
        self.files.keys().copied().collect()
    }

    /// Reads bytes right away (for fetch plans in tests).
    pub fn read_now(&self, file: &FileRef, position: u64, len: u64) -> Option<Bytes> {
        let data = &self.files.get(file)?.data;
        let start = usize::try_from(position).ok()?.min(data.len());
        let end = usize::try_from(position + len).ok()?.min(data.len());
        Some(Bytes::copy_from_slice(&data[start..end]))
    }

    /// Media corruption: flips one bit of a file in its current and synced contents.
    pub fn flip_bit(&mut self, file: &FileRef, position: u64, bit: u8) {
        let sim = self
            .files
            .get_mut(file)
            .expect("flipping a bit of a missing file");
        let index = usize::try_from(position).expect("position fits usize");
        for bytes in [&mut sim.data, &mut sim.durable] {
            if let Some(byte) = bytes.get_mut(index) {
                *byte ^= 1 << (bit % 8);
            }
        }
    }

    fn execute(&mut self, request: IoRequest) -> IoDone {
        let id = request.id();
        let result = match request {
            IoRequest::Create { file, allocate, .. } => {
                if self.files.contains_key(&file) {
                    Err(error("create", &file, "file exists"))
                } else {
                    let allocate = usize::try_from(allocate).expect("fits");
                    self.removed.remove(&file);
                    self.files.insert(
                        file,
                        SimFile {
                            data: vec![0; allocate],
                            durable: Vec::new(),
                            written_end: 0,
                            synced_written_end: 0,
                        },
                    );
                    Ok(IoOutcome::Done)
                }
            }
            IoRequest::Allocate { file, len, .. } => match self.files.get_mut(&file) {
                Some(sim) => {
                    let len = usize::try_from(len).expect("fits");
                    if sim.data.len() < len {
                        sim.data.resize(len, 0);
                    }
                    Ok(IoOutcome::Done)
                }
                None => Err(error("allocate", &file, "no such file")),
            },
            IoRequest::Write {
                file,
                position,
                data,
                ..
            } => {
                // Aligned: checked at `submit` (`IoRequest::assert_aligned`).
                let data = data.to_bytes();
                self.stats.writes += 1;
                if self.take_fault(Fault::WriteError) {
                    Err(error("write", &file, "injected EIO"))
                } else {
                    let sectors = data.len() / SECTOR;
                    let written = if sectors > 1 && self.take_fault(Fault::ShortWrite) {
                        usize::try_from(self.rng.range(1, sectors as u64 - 1)).expect("fits")
                            * SECTOR
                    } else {
                        data.len()
                    };
                    match self.files.get_mut(&file) {
                        Some(sim) => {
                            let start = usize::try_from(position).expect("fits");
                            if sim.data.len() < start + written {
                                sim.data.resize(start + written, 0);
                            }
                            sim.data[start..start + written].copy_from_slice(&data[..written]);
                            sim.written_end = sim.written_end.max(start + written);
                            Ok(IoOutcome::Written {
                                bytes: written as u64,
                            })
                        }
                        None => Err(error("write", &file, "no such file")),
                    }
                }
            }
            IoRequest::WriteFile { file, data, .. } => {
                self.stats.writes += 1;
                if self.take_fault(Fault::WriteError) {
                    Err(error("write", &file, "injected EIO"))
                } else {
                    self.removed.remove(&file);
                    let sim = self.files.entry(file).or_default();
                    sim.data = data.to_vec();
                    sim.durable = data.to_vec();
                    sim.written_end = data.len();
                    sim.synced_written_end = data.len();
                    Ok(IoOutcome::Done)
                }
            }
            IoRequest::Sync { file, .. } => {
                self.stats.syncs += 1;
                if self.take_fault(Fault::SyncError) {
                    Err(error("fdatasync", &file, "injected EIO"))
                } else {
                    match self.files.get_mut(&file) {
                        Some(sim) => {
                            sim.durable = sim.data.clone();
                            sim.synced_written_end = sim.written_end;
                            Ok(IoOutcome::Done)
                        }
                        None => Err(error("fdatasync", &file, "no such file")),
                    }
                }
            }
            IoRequest::SyncDir { .. } => {
                self.stats.dir_syncs += 1;
                self.dir_durable = self.files.keys().copied().collect();
                self.removed.clear();
                Ok(IoOutcome::Done)
            }
            IoRequest::Read {
                file,
                position,
                len,
                ..
            } => {
                // Aligned: checked at `submit` (`IoRequest::assert_aligned`).
                self.stats.reads += 1;
                if self.take_fault(Fault::ReadError) {
                    Err(error("read", &file, "injected EIO"))
                } else {
                    self.read_now(&file, position, len)
                        .map(|data| IoOutcome::Read { data })
                        .ok_or_else(|| error("read", &file, "no such file"))
                }
            }
            IoRequest::ReadFile { file, .. } => {
                self.stats.reads += 1;
                if self.take_fault(Fault::ReadError) {
                    Err(error("read", &file, "injected EIO"))
                } else {
                    self.files
                        .get(&file)
                        .map(|sim| IoOutcome::Read {
                            data: Bytes::copy_from_slice(&sim.data),
                        })
                        .ok_or_else(|| error("read", &file, "no such file"))
                }
            }
            IoRequest::Truncate { file, len, .. } => match self.files.get_mut(&file) {
                Some(sim) => {
                    sim.data.resize(usize::try_from(len).expect("fits"), 0);
                    Ok(IoOutcome::Done)
                }
                None => Err(error("truncate", &file, "no such file")),
            },
            IoRequest::Remove { file, .. } => {
                if let Some(sim) = self.files.remove(&file) {
                    if self.dir_durable.remove(&file) {
                        self.removed.insert(file, sim.durable);
                    }
                }
                Ok(IoOutcome::Done)
            }
        };
        IoDone { id, result }
    }

    /// The requests handed to the storage and not completed yet.
    pub fn in_flight_requests(&self) -> &[IoRequest] {
        &self.in_flight
    }

    /// A crash: returns the storage as it could be found after a power loss now, leaving this
    /// one untouched. Requests in flight may or may not have happened (a write: any subset of
    /// its sectors).
    pub fn crash(&self, seed: u64) -> SimStorage {
        let mut rng = Rng::new(seed);
        let mut files_now = self.files.clone();
        for request in &self.in_flight {
            match request {
                IoRequest::Write {
                    file,
                    position,
                    data,
                    ..
                } => {
                    if let Some(sim) = files_now.get_mut(file) {
                        let start = usize::try_from(*position).expect("fits");
                        for (index, sector) in data.to_bytes().chunks(SECTOR).enumerate() {
                            if rng.chance(1, 2) {
                                let at = start + index * SECTOR;
                                if sim.data.len() < at + SECTOR {
                                    sim.data.resize(at + SECTOR, 0);
                                }
                                sim.data[at..at + SECTOR].copy_from_slice(sector);
                            }
                        }
                    }
                }
                // A sync racing the crash may have reached the device.
                IoRequest::Sync { file, .. } if rng.chance(1, 2) => {
                    if let Some(sim) = files_now.get_mut(file) {
                        sim.durable = sim.data.clone();
                        sim.synced_written_end = sim.written_end;
                    }
                }
                _ => {}
            }
        }
        let mut files = BTreeMap::new();
        for (file, sim) in &files_now {
            if !self.dir_durable.contains(file) && rng.chance(1, 2) {
                continue;
            }
            let len = if rng.chance(1, 2) {
                sim.data.len()
            } else {
                sim.durable.len()
            };
            let mut image = vec![0u8; len];
            // The last sector written since the file's last sync, if no synced write reached it.
            let mut last_unsynced = None;
            for start in (0..len).step_by(SECTOR) {
                let end = (start + SECTOR).min(len);
                let old = sim
                    .durable
                    .get(start..end.min(sim.durable.len()))
                    .unwrap_or(&[]);
                let new = sim.data.get(start..end.min(sim.data.len())).unwrap_or(&[]);
                if old != new {
                    last_unsynced = (start >= sim.synced_written_end).then_some(start..end);
                }
                let source = if old == new || rng.chance(1, 2) {
                    old
                } else {
                    new
                };
                image[start..start + source.len()].copy_from_slice(source);
            }
            // A device may tear the last sector it was writing into garbage rather than
            // leave it old or new; only a sector no synced write reached (its bytes' values
            // say nothing: a synced batch may end in a zero byte), and only the last one (so
            // nothing valid can follow it): a garbage tail.
            if let Some(sector) = last_unsynced {
                if rng.chance(1, GARBAGE_SECTOR_ONE_IN) {
                    rng.fill(&mut image[sector]);
                }
            }
            let len = image.len();
            files.insert(
                *file,
                SimFile {
                    data: image.clone(),
                    durable: image,
                    written_end: len,
                    synced_written_end: len,
                },
            );
        }
        for (file, durable) in &self.removed {
            if rng.chance(1, 2) {
                files.insert(
                    *file,
                    SimFile {
                        data: durable.clone(),
                        durable: durable.clone(),
                        written_end: durable.len(),
                        synced_written_end: durable.len(),
                    },
                );
            }
        }
        let mut storage = SimStorage::new(rng.next_u64());
        storage.dir_durable = files.keys().copied().collect();
        storage.files = files;
        storage
    }
}

impl Storage for SimStorage {
    fn submit(&mut self, request: IoRequest) {
        request.assert_aligned();
        self.in_flight.push(request);
    }

    fn poll_done(&mut self) -> Option<IoDone> {
        self.completed.pop_front()
    }

    fn list(&mut self) -> Result<Vec<ListedFile>, StorageError> {
        Ok(self
            .files
            .iter()
            .map(|(file, sim)| ListedFile {
                name: file.file_name(),
                len: sim.data.len() as u64,
                // The tightest bound a filesystem could report: the sector after the last
                // non-zero byte (real ones report whole extents, never less).
                data_end: sim
                    .data
                    .iter()
                    .rposition(|&byte| byte != 0)
                    .map_or(0, |last| align_up(last as u64 + 1))
                    .min(sim.data.len() as u64),
            })
            .collect())
    }
}
