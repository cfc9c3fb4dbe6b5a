//! `DmaStorage`: the core's storage contract on real files — glommio `DmaFile`s (O_DIRECT,
//! 4 KiB-aligned buffers from the executor's DMA allocator, io_uring), one partition
//! directory each. The only module that knows about glommio files, so the runtime stays
//! replaceable.
//!
//! Every request runs as its own task; its completion is queued and the partition's doorbell
//! rung, and the partition's driver feeds it back to the log.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::channels::local_channel::LocalSender;
use glommio::io::{DmaFile, OpenOptions};
use spate_core::storage::FileRef;
use spate_core::{IoDone, IoOutcome, IoRequest, ListedFile, Storage, StorageError, WriteData};
use spate_format::segment::SegmentFileKind;

/// Largest single read or write handed to glommio. Larger requests can hang forever in the
/// kernel when they exceed what one block request maps (glommio issue #633); 512 KiB is 128
/// pages, below any device's segment limit seen in practice. Larger I/O is split into such
/// chunks, all in flight at once.
pub const IO_CHUNK_BYTES: usize = 512 << 10;

/// Reads `len` bytes at `position` (both aligned) in chunks in flight together; stops at the
/// first short chunk (the end of the file).
async fn read_chunked(dma: &Rc<DmaFile>, position: u64, len: usize) -> std::io::Result<Bytes> {
    let chunks: Vec<_> = (0..len)
        .step_by(IO_CHUNK_BYTES)
        .map(|offset| {
            let dma = dma.clone();
            let size = IO_CHUNK_BYTES.min(len - offset);
            glommio::spawn_local(async move {
                dma.read_at_aligned(position + offset as u64, size)
                    .await
                    .map(|read| (size, read))
            })
        })
        .collect();
    let mut out = bytes::BytesMut::with_capacity(len);
    let mut short = false;
    for chunk in chunks {
        let (size, read) = chunk.await?;
        if !short {
            out.extend_from_slice(&read[..]);
            short = read.len() < size;
        }
    }
    Ok(out.freeze())
}

/// Writes below this size take their device buffer from glommio's registered I/O memory
/// each time (cheap: a small allocator over memory mapped once); larger ones are made of
/// pooled buffers (see [`WriteBuffers`]).
const POOLED_WRITE_BYTES_MIN: usize = 64 << 10;

/// Size classes of the pooled write buffers: powers of two from [`POOLED_WRITE_BYTES_MIN`] to
/// [`IO_CHUNK_BYTES`].
const POOL_CLASSES: usize = (IO_CHUNK_BYTES / POOLED_WRITE_BYTES_MIN).trailing_zeros() as usize + 1;
const _: () = assert!(IO_CHUNK_BYTES.is_power_of_two() && POOLED_WRITE_BYTES_MIN.is_power_of_two());

/// Bytes of free write buffers a shard keeps for reuse: two rounds of the largest size
/// (`ROUND_BYTES_MAX`, 8 MiB) in flight. Buffers beyond it are freed when their write ends.
pub const WRITE_BUFFERS_FREE_BYTES_MAX: usize = 16 << 20;

/// The device buffers a shard's writes are copied into, reused from write to write: a fresh
/// DMA allocation per write (beyond glommio's small registered memory, each a new mapping of
/// zeroed pages, faulted in and unmapped again) cost more CPU than the copy itself. One per
/// shard (glommio executor): a buffer belongs to the executor that allocated it.
#[derive(Debug, Default)]
pub struct WriteBuffers {
    free: RefCell<[Vec<glommio::io::DmaBuffer>; POOL_CLASSES]>,
    free_bytes: std::cell::Cell<usize>,
}

impl WriteBuffers {
    fn class(size: usize) -> usize {
        (size / POOLED_WRITE_BYTES_MIN).trailing_zeros() as usize
    }

    /// A buffer of exactly `size` bytes (a pooled size class) for `dma`'s executor.
    fn take(&self, dma: &DmaFile, size: usize) -> glommio::io::DmaBuffer {
        assert!(
            size.is_power_of_two() && (POOLED_WRITE_BYTES_MIN..=IO_CHUNK_BYTES).contains(&size)
        );
        match self.free.borrow_mut()[Self::class(size)].pop() {
            Some(buffer) => {
                self.free_bytes.set(self.free_bytes.get() - size);
                buffer
            }
            None => dma.alloc_dma_buffer(size),
        }
    }

    /// Returns a buffer whose write has ended, unless the pool holds enough.
    fn give_back(&self, buffer: glommio::io::DmaBuffer) {
        let size = buffer.len();
        if self.free_bytes.get() + size <= WRITE_BUFFERS_FREE_BYTES_MAX {
            self.free_bytes.set(self.free_bytes.get() + size);
            self.free.borrow_mut()[Self::class(size)].push(buffer);
        }
    }
}

/// How a write of `len` bytes (sector-aligned) is cut into device buffers: whole
/// [`IO_CHUNK_BYTES`] pieces, then the rest as its pooled power-of-two parts, largest first,
/// then what is left below [`POOLED_WRITE_BYTES_MIN`] as one piece. Each piece is one write,
/// all in flight together.
fn write_pieces(len: usize) -> Vec<usize> {
    let mut pieces = vec![IO_CHUNK_BYTES; len / IO_CHUNK_BYTES];
    let mut rest = len % IO_CHUNK_BYTES;
    let mut size = IO_CHUNK_BYTES / 2;
    while size >= POOLED_WRITE_BYTES_MIN {
        if rest >= size {
            pieces.push(size);
            rest -= size;
        }
        size /= 2;
    }
    if rest > 0 {
        pieces.push(rest);
    }
    pieces
}

/// Writes `data` at `position` (both aligned), copied into device buffers (the one copy of
/// the bytes on the node) that are in flight together; returns the bytes written from the
/// start up to the first short piece.
async fn write_chunked(
    dma: &Rc<DmaFile>,
    buffers: &Rc<WriteBuffers>,
    position: u64,
    data: &WriteData,
) -> std::io::Result<usize> {
    // The log built the write from batches in memory (at most ROUND_BYTES_MAX).
    let len = usize::try_from(data.len()).expect("a write fits in memory");
    let mut devices: Vec<_> = write_pieces(len)
        .into_iter()
        .map(|size| {
            if size >= POOLED_WRITE_BYTES_MIN {
                buffers.take(dma, size)
            } else {
                dma.alloc_dma_buffer(size)
            }
        })
        .collect();
    {
        let mut outs: Vec<&mut [u8]> = devices
            .iter_mut()
            .map(|device| device.as_bytes_mut())
            .collect();
        data.copy_into(&mut outs);
    }
    let mut from = 0usize;
    let chunks: Vec<_> = devices
        .into_iter()
        .map(|buffer| {
            let dma = dma.clone();
            let buffers = buffers.clone();
            let size = buffer.len();
            let at = position + from as u64;
            from += size;
            glommio::spawn_local(async move {
                let buffer = Rc::new(buffer);
                let result = dma.write_rc_at(buffer.clone(), at).await;
                if let Ok(buffer) = Rc::try_unwrap(buffer) {
                    if buffer.len() >= POOLED_WRITE_BYTES_MIN {
                        buffers.give_back(buffer);
                    }
                }
                result.map(|written| (size, written))
            })
        })
        .collect();
    let mut total = 0;
    let mut short = false;
    let mut failure = None;
    for chunk in chunks {
        match chunk.await {
            Ok((size, written)) if !short => {
                total += written;
                short = written < size;
            }
            Ok(_) => {}
            Err(error) => {
                if !short && failure.is_none() {
                    failure = Some(error);
                }
                short = true;
            }
        }
    }
    match failure {
        // Whatever was written before the failed chunk counts; a failure at the start is an error.
        Some(error) if total == 0 => Err(error.into()),
        _ => Ok(total),
    }
}

/// Files of one partition directory, kept open.
#[derive(Debug, Default)]
struct Files {
    open: HashMap<FileRef, Rc<DmaFile>>,
}

/// A storage request taking this long is logged as a warning with what it was.
pub const SLOW_IO: std::time::Duration = std::time::Duration::from_millis(500);

/// Storage of one partition directory.
#[derive(Debug)]
pub struct DmaStorage {
    dir: PathBuf,
    files: Rc<RefCell<Files>>,
    buffers: Rc<WriteBuffers>,
    completed: Rc<RefCell<VecDeque<IoDone>>>,
    doorbell: Rc<LocalSender<()>>,
}

fn storage_error<E: Into<std::io::Error> + std::any::Any>(
    operation: &'static str,
    file: &str,
    error: E,
) -> StorageError {
    // glommio's conversion to io::Error keeps the kind but drops the OS error number, which
    // the shard needs (an ENOSPC fence is recovered by itself once space is back).
    let glommio_errno =
        match (&error as &dyn std::any::Any).downcast_ref::<glommio::GlommioError<()>>() {
            Some(glommio::GlommioError::EnhancedIoError { source, .. }) => source.raw_os_error(),
            Some(glommio::GlommioError::IoError(source)) => source.raw_os_error(),
            _ => None,
        };
    let error: std::io::Error = error.into();
    let mut storage = StorageError::new(operation, file, error.to_string());
    storage.errno = error.raw_os_error().or(glommio_errno);
    storage
}

impl DmaStorage {
    /// `doorbell` is rung (without blocking) whenever a request completes; writes copy into
    /// the shard's `buffers`.
    pub fn new(dir: PathBuf, doorbell: Rc<LocalSender<()>>, buffers: Rc<WriteBuffers>) -> Self {
        DmaStorage {
            dir,
            files: Rc::new(RefCell::new(Files::default())),
            buffers,
            completed: Rc::new(RefCell::new(VecDeque::new())),
            doorbell,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files of the partition open now (metrics).
    pub fn open_files(&self) -> usize {
        self.files.borrow().open.len()
    }

    /// A handle for fetch reads and closing, usable without holding this storage borrowed
    /// across an await.
    pub fn reader(&self) -> DmaReader {
        DmaReader {
            dir: self.dir.clone(),
            files: self.files.clone(),
        }
    }
}

/// A file open for one pass; closed by [`PassReader::close`] (or when dropped).
#[derive(Debug)]
pub struct PassReader {
    name: String,
    dma: Rc<DmaFile>,
}

impl PassReader {
    /// Reads `len` bytes at `position` (both sector-aligned); shorter at the end of the file.
    pub async fn read(&self, position: u64, len: u64) -> Result<Bytes, StorageError> {
        let size = usize::try_from(len).unwrap_or(usize::MAX);
        read_chunked(&self.dma, position, size)
            .await
            .map_err(|error| storage_error("read", &self.name, error))
    }

    pub async fn close(self) {
        let _ = self.dma.close_rc().await;
    }
}

/// Reads a partition's files for fetches; shares the open files with its `DmaStorage`.
#[derive(Debug, Clone)]
pub struct DmaReader {
    dir: PathBuf,
    files: Rc<RefCell<Files>>,
}

impl DmaReader {
    /// Reads `len` bytes at `position` (both sector-aligned).
    pub async fn read(
        &self,
        file: FileRef,
        position: u64,
        len: u64,
    ) -> Result<Bytes, StorageError> {
        let dma = open(&self.files, &self.dir, file).await?;
        let size = usize::try_from(len).unwrap_or(usize::MAX);
        read_chunked(&dma, position, size)
            .await
            .map_err(|error| storage_error("read", &file.file_name(), error))
    }

    /// Opens a file for one sequential pass (background verification), read-only and
    /// outside the partition's open files, so a pass over every segment holds one descriptor.
    pub async fn open_for_pass(&self, file: FileRef) -> Result<PassReader, StorageError> {
        let name = file.file_name();
        let dma = OpenOptions::new()
            .read(true)
            .dma_open(self.dir.join(&name))
            .await
            .map_err(|error| storage_error("open", &name, error))?;
        Ok(PassReader {
            name,
            dma: Rc::new(dma),
        })
    }

    /// Closes every open file (shutdown, topic deletion).
    pub async fn close(&self) {
        let files: Vec<Rc<DmaFile>> = self
            .files
            .borrow_mut()
            .open
            .drain()
            .map(|(_, file)| file)
            .collect();
        for file in files {
            let _ = file.close_rc().await;
        }
    }
}

async fn open(
    files: &Rc<RefCell<Files>>,
    dir: &Path,
    file: FileRef,
) -> Result<Rc<DmaFile>, StorageError> {
    if let Some(open) = files.borrow().open.get(&file) {
        return Ok(open.clone());
    }
    let dma = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(dir.join(file.file_name()))
        .await
        .map_err(|error| storage_error("open", &file.file_name(), error))?;
    let dma = Rc::new(dma);
    files.borrow_mut().open.insert(file, dma.clone());
    Ok(dma)
}

async fn execute(
    files: Rc<RefCell<Files>>,
    buffers: Rc<WriteBuffers>,
    dir: &Path,
    request: IoRequest,
) -> Result<IoOutcome, StorageError> {
    match request {
        IoRequest::Create { file, allocate, .. } => {
            let name = file.file_name();
            let dma = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .dma_open(dir.join(&name))
                .await
                .map_err(|error| storage_error("create", &name, error))?;
            if allocate > 0 {
                dma.pre_allocate(allocate, false)
                    .await
                    .map_err(|error| storage_error("fallocate", &name, error))?;
            }
            if file.kind == SegmentFileKind::LogStart {
                // A marker: its name is all it holds, nothing reads or writes it.
                let _ = dma.close().await;
            } else {
                files.borrow_mut().open.insert(file, Rc::new(dma));
            }
            Ok(IoOutcome::Done)
        }
        IoRequest::Allocate { file, len, .. } => {
            let dma = open(&files, dir, file).await?;
            dma.pre_allocate(len, false)
                .await
                .map_err(|error| storage_error("fallocate", &file.file_name(), error))?;
            Ok(IoOutcome::Done)
        }
        IoRequest::Write {
            file,
            position,
            data,
            ..
        } => {
            let dma = open(&files, dir, file).await?;
            let written = write_chunked(&dma, &buffers, position, &data)
                .await
                .map_err(|error| storage_error("write", &file.file_name(), error))?;
            Ok(IoOutcome::Written {
                bytes: written as u64,
            })
        }
        IoRequest::WriteFile { file, data, .. } => {
            // Index files are small caches: written with buffered I/O off the executor thread.
            let path = dir.join(file.file_name());
            let name = file.file_name();
            glommio::executor()
                .spawn_blocking(move || -> std::io::Result<()> {
                    use std::io::Write;
                    let mut out = std::fs::File::create(&path)?;
                    out.write_all(&data)?;
                    out.sync_data()
                })
                .await
                .map_err(|error| storage_error("write", &name, error))?;
            Ok(IoOutcome::Done)
        }
        IoRequest::Sync { file, .. } => {
            let dma = open(&files, dir, file).await?;
            let started = std::time::Instant::now();
            dma.fdatasync()
                .await
                .map_err(|error| storage_error("fdatasync", &file.file_name(), error))?;
            let took = started.elapsed().as_secs_f64();
            crate::metrics::with(|metrics| metrics.fdatasync_seconds.observe(took));
            Ok(IoOutcome::Done)
        }
        IoRequest::SyncDir { .. } => {
            let shown = dir.display().to_string();
            let dir = dir.to_owned();
            glommio::executor()
                .spawn_blocking(move || std::fs::File::open(&dir).and_then(|dir| dir.sync_all()))
                .await
                .map_err(|error| storage_error("fsync", &shown, error))?;
            Ok(IoOutcome::Done)
        }
        IoRequest::Read {
            file,
            position,
            len,
            ..
        } => {
            let dma = open(&files, dir, file).await?;
            let size = usize::try_from(len).unwrap_or(usize::MAX);
            let data = read_chunked(&dma, position, size)
                .await
                .map_err(|error| storage_error("read", &file.file_name(), error))?;
            Ok(IoOutcome::Read { data })
        }
        IoRequest::ReadFile { file, .. } => {
            let path = dir.join(file.file_name());
            let name = file.file_name();
            let data = glommio::executor()
                .spawn_blocking(move || std::fs::read(&path))
                .await
                .map_err(|error| storage_error("read", &name, error))?;
            Ok(IoOutcome::Read {
                data: Bytes::from(data),
            })
        }
        IoRequest::Truncate { file, len, .. } => {
            let dma = open(&files, dir, file).await?;
            dma.truncate(len)
                .await
                .map_err(|error| storage_error("truncate", &file.file_name(), error))?;
            Ok(IoOutcome::Done)
        }
        IoRequest::Remove { file, .. } => {
            let removed = files.borrow_mut().open.remove(&file);
            if let Some(dma) = removed {
                let _ = dma.close_rc().await;
            }
            let path = dir.join(file.file_name());
            let name = file.file_name();
            glommio::executor()
                .spawn_blocking(move || match std::fs::remove_file(&path) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
                    _ => Ok(()),
                })
                .await
                .map_err(|error| storage_error("unlink", &name, error))?;
            Ok(IoOutcome::Done)
        }
    }
}

impl Storage for DmaStorage {
    fn submit(&mut self, request: IoRequest) {
        request.assert_aligned();
        let files = self.files.clone();
        let buffers = self.buffers.clone();
        let dir = self.dir.clone();
        let completed = self.completed.clone();
        let doorbell = self.doorbell.clone();
        glommio::spawn_local(async move {
            let id = request.id();
            let kind = describe(&request);
            tracing::trace!(id = id.0, "storage request {kind}");
            let started = std::time::Instant::now();
            let result = execute(files, buffers, &dir, request).await;
            let took = started.elapsed();
            if took >= SLOW_IO {
                // Stalls of the device or filesystem show up here, named.
                tracing::warn!(
                    dir = %dir.display(),
                    took_ms = took.as_millis(),
                    "slow storage request: {kind}"
                );
            }
            tracing::trace!(
                id = id.0,
                ok = result.is_ok(),
                "storage request done {kind}"
            );
            completed.borrow_mut().push_back(IoDone { id, result });
            // A full doorbell is already ringing.
            let _ = doorbell.try_send(());
        })
        .detach();
    }

    fn poll_done(&mut self) -> Option<IoDone> {
        self.completed.borrow_mut().pop_front()
    }

    fn list(&mut self) -> Result<Vec<ListedFile>, StorageError> {
        list_dir(&self.dir)
    }
}

fn describe(request: &IoRequest) -> String {
    match request {
        IoRequest::Create { file, .. } => format!("create {file}"),
        IoRequest::Allocate { file, len, .. } => format!("allocate {file} {len}"),
        IoRequest::Write {
            file,
            position,
            data,
            ..
        } => format!("write {file} at {position} len {}", data.len()),
        IoRequest::WriteFile { file, .. } => format!("write-file {file}"),
        IoRequest::Sync { file, .. } => format!("sync {file}"),
        IoRequest::SyncDir { .. } => "sync-dir".to_owned(),
        IoRequest::Read {
            file,
            position,
            len,
            ..
        } => format!("read {file} at {position} len {len}"),
        IoRequest::ReadFile { file, .. } => format!("read-file {file}"),
        IoRequest::Truncate { file, len, .. } => format!("truncate {file} {len}"),
        IoRequest::Remove { file, .. } => format!("remove {file}"),
    }
}

/// The files of a partition directory with their lengths.
pub fn list_dir(dir: &Path) -> Result<Vec<ListedFile>, StorageError> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|error| storage_error("list", &shown, error))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| storage_error("list", &shown, error))?;
        let metadata = entry
            .metadata()
            .map_err(|error| storage_error("stat", &shown, error))?;
        if metadata.is_file() {
            files.push(ListedFile {
                name: entry.file_name().to_string_lossy().into_owned(),
                len: metadata.len(),
                data_end: data_end(&entry.path(), metadata.len()),
            });
        }
    }
    Ok(files)
}

/// Where the data of a file ends: the end of its last data region as the filesystem reports
/// it with `SEEK_DATA`/`SEEK_HOLE`; preallocated extents that were never written count as
/// holes on ext4 and xfs, and a hole reads as zeros. A filesystem may report a hole as data,
/// never data as a hole, so this is never short of real data. `len` on any error.
pub fn data_end(path: &Path, len: u64) -> u64 {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path) else {
        return len;
    };
    let fd = file.as_raw_fd();
    let mut end = 0u64;
    let mut position = 0i64;
    // A file has few regions (written extents and preallocated ones), but bound the walk.
    for _ in 0..DATA_REGIONS_MAX {
        let data = match lseek(fd, position, Whence::SeekData) {
            Ok(data) => data,
            // ENXIO: no data at or after `position`.
            Err(nix::errno::Errno::ENXIO) => return end,
            Err(_) => return len,
        };
        let Ok(hole) = lseek(fd, data, Whence::SeekHole) else {
            return len;
        };
        end = u64::try_from(hole).unwrap_or(len);
        if end >= len {
            return len;
        }
        position = hole;
    }
    len
}

/// Data regions `data_end` walks before it gives up and reports the whole file.
const DATA_REGIONS_MAX: usize = 1024;

/// Bytes an unprivileged writer can still allocate on the filesystem holding `dir` (0 if
/// unknown).
pub fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir).map_or(0, |stats| {
        stats
            .blocks_available()
            .saturating_mul(stats.fragment_size())
    })
}

/// The type of the filesystem holding `dir` (`ext4`, `xfs`, `tmpfs`, ...), from
/// `/proc/self/mountinfo`: the mount with the longest mount point that contains the path.
pub fn filesystem_type(dir: &Path) -> Option<String> {
    let path = dir.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let mut fields = line.split(' ');
        let mount_point = fields.nth(4)?.replace("\\040", " ");
        let fstype = line.split(" - ").nth(1)?.split(' ').next()?.to_owned();
        if path.starts_with(&mount_point)
            && best
                .as_ref()
                .is_none_or(|(len, _)| mount_point.len() >= *len)
        {
            best = Some((mount_point.len(), fstype));
        }
    }
    best.map(|(_, fstype)| fstype)
}

/// Checks that `dir` supports O_DIRECT: tmpfs and some others silently do not, and glommio
/// would then fall back to buffered I/O without a word.
pub fn probe_direct_io(dir: &Path) -> Result<(), std::io::Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(".direct-io-probe");
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        // An aligned buffer without unsafe code: over-allocate and start at the boundary.
        let buffer = vec![0u8; 8192];
        let start = buffer.as_ptr().align_offset(4096);
        file.write_all(&buffer[start..start + 4096])?;
        file.sync_data()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Makes glommio learn, on the calling executor thread, whether the data directory's device
/// supports polled I/O, by opening a file that has data. glommio probes on the first file it
/// opens per device and thread with a one-sector read; on an empty file (a new segment) that
/// read ends at end-of-file without touching the device, so the probe wrongly reports polled
/// I/O as supported, and every later read of real data fails with EOPNOTSUPP on devices
/// without it (virtio disks, for one). Call before any other file is opened on the thread.
pub async fn probe_polled_io(dir: &Path, shard: u16) -> Result<(), std::io::Error> {
    let path = dir.join(format!(".polled-io-probe-{shard}"));
    std::fs::write(&path, vec![0u8; 4096])?;
    let result = match OpenOptions::new().read(true).dma_open(&path).await {
        Ok(file) => {
            let read = file.read_at_aligned(0, 4096).await;
            let _ = file.close().await;
            read.map(|_| ())
                .map_err(|error| std::io::Error::other(error.to_string()))
        }
        Err(error) => Err(std::io::Error::other(error.to_string())),
    };
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(test)]
mod write_piece_tests {
    use super::*;

    #[test]
    fn a_write_is_cut_into_pooled_sizes_and_one_small_rest() {
        for sectors in [1usize, 15, 16, 17, 100, 127, 128, 129, 300, 2048, 2049] {
            let len = sectors * 4096;
            let pieces = write_pieces(len);
            assert_eq!(pieces.iter().sum::<usize>(), len, "{len}");
            let small: Vec<_> = pieces
                .iter()
                .filter(|&&size| size < POOLED_WRITE_BYTES_MIN)
                .collect();
            assert!(small.len() <= 1, "{len}: {pieces:?}");
            for &size in &pieces {
                assert_eq!(size % 4096, 0);
                if size >= POOLED_WRITE_BYTES_MIN {
                    assert!(size.is_power_of_two() && size <= IO_CHUNK_BYTES, "{size}");
                    assert!(WriteBuffers::class(size) < POOL_CLASSES);
                }
            }
        }
        assert_eq!(write_pieces(300 << 10), vec![256 << 10, 44 << 10]);
    }
}
