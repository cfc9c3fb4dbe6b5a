//! Verification of a sealed segment from its first byte to its last: every batch's checksums
//! and header, offsets continuing from the segment's base to the next segment's base, and
//! exactly the bytes the log holds for it.
//!
//! A start validates only the ends of sealed segments (their indexes and last batches), and
//! a fetch checks what it reads, so damage in the middle of a sealed segment would otherwise
//! be found only when a consumer reaches it. The node runs this in the background at a
//! bounded rate after every start, and `spate-node check` runs it offline. The verifier does
//! no I/O: it asks for reads ([`SegmentVerifier::next_read`]) and is handed what they read.

use spate_format::limits::BATCH_SIZE_MAX;
use spate_format::segment::{EndReason, SegmentScanner};
use spate_format::{BatchError, Offset};

use crate::storage::{align_down, align_up, FileRef};

/// Bytes read at a time (sector-aligned; a whole batch of the largest size always fits).
pub const VERIFY_READ_BYTES: u64 = 2 * BATCH_SIZE_MAX as u64;

/// A segment the log no longer writes: what its file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedSegment {
    pub base: Offset,
    /// The offset after its last record (the next segment's base).
    pub next: Offset,
    /// Bytes of batches in its file.
    pub size: u64,
}

impl SealedSegment {
    pub fn file(&self) -> FileRef {
        FileRef::log(self.base)
    }
}

/// Damage found in a sealed segment: acknowledged data that cannot be read back intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment's file name.
    pub segment: String,
    /// File position where the damage starts.
    pub position: u64,
    pub detail: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.segment, self.position, self.detail)
    }
}

/// A read the verifier needs: `len` bytes at `position`, both sector-aligned (O_DIRECT). The
/// file may end before `position + len`; the verifier is handed what was there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyRead {
    pub file: FileRef,
    pub position: u64,
    pub len: u64,
}

/// Verifies one sealed segment, read by read.
#[derive(Debug, Clone)]
pub struct SegmentVerifier {
    segment: SealedSegment,
    /// File position of the next batch to check.
    position: u64,
    /// Offset the next batch must start at.
    expected: Offset,
    outcome: Option<Result<(), Damage>>,
}

impl SegmentVerifier {
    pub fn new(segment: SealedSegment) -> Self {
        let mut verifier = SegmentVerifier {
            segment,
            position: 0,
            expected: segment.base,
            outcome: None,
        };
        if segment.size == 0 {
            verifier.finish();
        }
        verifier
    }

    pub fn segment(&self) -> SealedSegment {
        self.segment
    }

    /// The next read to make, or `None` once the outcome is known.
    pub fn next_read(&self) -> Option<VerifyRead> {
        if self.outcome.is_some() {
            return None;
        }
        let start = align_down(self.position);
        let end = align_up((self.position + VERIFY_READ_BYTES).min(self.segment.size));
        Some(VerifyRead {
            file: self.segment.file(),
            position: start,
            len: end - start,
        })
    }

    /// Hands the verifier what the read it asked for (`read`) returned.
    pub fn handle_read(&mut self, read: VerifyRead, data: &[u8]) {
        if self.outcome.is_some() || self.next_read() != Some(read) {
            return;
        }
        let skip = usize::try_from(self.position - read.position).unwrap_or(usize::MAX);
        let end = (read.position + data.len() as u64).min(self.segment.size);
        if end <= self.position {
            let damage = self.damage(format!(
                "the file ends at {}; the log holds {} bytes in it",
                read.position + data.len() as u64,
                self.segment.size
            ));
            self.outcome = Some(Err(damage));
            return;
        }
        let take = usize::try_from(end - read.position).unwrap_or(usize::MAX);
        let bytes = &data[skip.min(take)..take];
        let at_end = end == self.segment.size;
        let mut scanner = SegmentScanner::new(bytes, self.position, Some(self.expected));
        for batch in scanner.by_ref() {
            self.expected = batch.next_offset();
        }
        let Some(scan) = scanner.end() else {
            return;
        };
        let progressed = scan.position > self.position;
        match scan.reason {
            EndReason::Clean if at_end => {
                self.position = scan.position;
                self.finish();
            }
            EndReason::Clean | EndReason::InvalidBatch(BatchError::Truncated { .. })
                if !at_end && progressed =>
            {
                // The read ended inside a batch: read on from its start.
                self.position = scan.position;
            }
            EndReason::Clean | EndReason::InvalidBatch(BatchError::Truncated { .. }) if !at_end => {
                // Nothing valid fits in a read larger than any batch: the file ends early.
                self.position = scan.position;
                let damage = self.damage(format!(
                    "the file ends at {}; the log holds {} bytes in it",
                    read.position + data.len() as u64,
                    self.segment.size
                ));
                self.outcome = Some(Err(damage));
            }
            EndReason::OffsetMismatch { expected, found } => {
                self.position = scan.position;
                let damage = self.damage(format!(
                    "a batch starts at offset {found}, expected {expected}"
                ));
                self.outcome = Some(Err(damage));
            }
            EndReason::ZeroPadding => {
                self.position = scan.position;
                let damage = self.damage(format!(
                    "zeros where the batch at offset {} should start",
                    self.expected
                ));
                self.outcome = Some(Err(damage));
            }
            EndReason::InvalidBatch(error) => {
                self.position = scan.position;
                let damage = self.damage(error.to_string());
                self.outcome = Some(Err(damage));
            }
            EndReason::Clean => {
                self.position = scan.position;
                let damage = self.damage("the batches end before the segment does".into());
                self.outcome = Some(Err(damage));
            }
        }
    }

    /// The outcome once known: `Ok` if the whole segment is intact.
    pub fn outcome(&self) -> Option<&Result<(), Damage>> {
        self.outcome.as_ref()
    }

    fn finish(&mut self) {
        self.outcome = Some(if self.expected == self.segment.next {
            Ok(())
        } else {
            Err(self.damage(format!(
                "the segment ends at offset {}, the next one starts at {}",
                self.expected, self.segment.next
            )))
        });
    }

    fn damage(&self, detail: String) -> Damage {
        Damage {
            segment: self.segment.file().file_name(),
            position: self.position,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use spate_format::batch::{stamp, BatchBuilder, Record};

    use super::*;

    /// A segment file of `batches` batches of `records` records each (values of `value_len`
    /// bytes), starting at offset `base`; returns the bytes and the offset after the last.
    fn segment_bytes(base: u64, batches: u64, records: u64, value_len: usize) -> (Vec<u8>, u64) {
        let mut file = Vec::new();
        let mut offset = base;
        let value = vec![7u8; value_len];
        for _ in 0..batches {
            let mut builder = BatchBuilder::new();
            for _ in 0..records {
                builder
                    .push(&Record {
                        timestamp: 1_700_000_000_000,
                        key: None,
                        value: Some(&value),
                        headers: &[],
                    })
                    .unwrap();
            }
            let mut batch = builder.finish().unwrap();
            stamp(&mut batch, Offset(offset), 1_700_000_000_000).unwrap();
            file.extend_from_slice(&batch);
            offset += records;
        }
        (file, offset)
    }

    /// Runs the verifier over `file` (as a disk would: reads past the end come back short).
    fn verify(segment: SealedSegment, file: &[u8]) -> (Result<(), Damage>, usize) {
        let mut verifier = SegmentVerifier::new(segment);
        let mut reads = 0;
        while let Some(read) = verifier.next_read() {
            assert_eq!(read.position % 4096, 0);
            assert_eq!(read.len % 4096, 0);
            assert!(read.len <= VERIFY_READ_BYTES + 4096);
            let start = usize::try_from(read.position).unwrap().min(file.len());
            let end = usize::try_from(read.position + read.len)
                .unwrap()
                .min(file.len());
            verifier.handle_read(read, &file[start..end]);
            reads += 1;
            assert!(reads < 10_000, "the verifier makes no progress");
        }
        (verifier.outcome().unwrap().clone(), reads)
    }

    /// Damage names the segment's file, the position and what was found (operators read it
    /// in the log and in `spate-node check`).
    #[test]
    fn damage_says_where_and_what() {
        let damage = Damage {
            segment: FileRef::log(Offset(100)).file_name(),
            position: 40_960,
            detail: "batch CRC mismatch".into(),
        };
        assert_eq!(
            damage.to_string(),
            "00000000000000000100.log at 40960: batch CRC mismatch"
        );
    }

    #[test]
    fn an_intact_segment_verifies_across_many_reads() {
        // ~6 MiB of batches of ~200 KiB: reads end inside batches.
        let (mut file, next) = segment_bytes(100, 30, 50, 4000);
        let size = file.len() as u64;
        // Preallocated zeros after the data are not part of the segment.
        file.resize(file.len() + 10_000, 0);
        let segment = SealedSegment {
            base: Offset(100),
            next: Offset(next),
            size,
        };
        let (outcome, reads) = verify(segment, &file);
        assert_eq!(outcome, Ok(()));
        assert!(reads >= 3, "{reads} reads");
        let empty = SealedSegment {
            base: Offset(5),
            next: Offset(5),
            size: 0,
        };
        assert_eq!(verify(empty, &[]).0, Ok(()));
    }

    #[test]
    fn a_flipped_byte_anywhere_is_damage_at_its_batch() {
        let (file, next) = segment_bytes(0, 30, 50, 4000);
        let segment = SealedSegment {
            base: Offset(0),
            next: Offset(next),
            size: file.len() as u64,
        };
        let batch_len = file.len() / 30;
        for flip in [10, batch_len + 500, file.len() / 2, file.len() - 1] {
            let mut damaged = file.clone();
            damaged[flip] ^= 0x40;
            let damage = verify(segment, &damaged).0.unwrap_err();
            assert_eq!(damage.segment, "00000000000000000000.log");
            let batch_start = (flip / batch_len * batch_len) as u64;
            assert_eq!(damage.position, batch_start, "flip at {flip}: {damage}");
        }
    }

    #[test]
    fn a_short_file_or_wrong_offsets_are_damage() {
        let (file, next) = segment_bytes(0, 30, 50, 4000);
        let size = file.len() as u64;
        let segment = SealedSegment {
            base: Offset(0),
            next: Offset(next),
            size,
        };
        // Cut in the middle (a file shorter than the log says).
        let damage = verify(segment, &file[..file.len() / 2]).0.unwrap_err();
        assert!(damage.position < size / 2 + 1, "{damage}");
        // Zeros where batches should be.
        let mut zeroed = file.clone();
        let third = file.len() / 3;
        zeroed[third..].fill(0);
        assert!(verify(segment, &zeroed).0.is_err());
        // The next segment starts elsewhere.
        let gap = SealedSegment {
            next: Offset(next + 1),
            ..segment
        };
        let damage = verify(gap, &file).0.unwrap_err();
        assert!(damage.detail.contains("next one starts"), "{damage}");
        // The segment does not start at its base.
        let shifted = SealedSegment {
            base: Offset(1),
            ..segment
        };
        let damage = verify(shifted, &file).0.unwrap_err();
        assert_eq!(damage.position, 0);
        assert!(damage.detail.contains("expected 1"), "{damage}");
    }

    /// The value length that makes a one-record batch exactly `len` bytes long.
    fn value_len_for(len: usize) -> usize {
        (0..len)
            .find(|&value_len| segment_bytes(0, 1, 1, value_len).0.len() == len)
            .expect("some value length gives the batch length")
    }

    /// Reads that end exactly on a batch boundary in the middle of a segment (batches of one
    /// sector: every read of 2 MiB ends between two batches) read on; the segment verifies
    /// in as many reads as its size needs (mutation testing found the guards unpinned).
    #[test]
    fn reads_ending_on_a_batch_boundary_read_on() {
        let value_len = value_len_for(4096);
        // 3 MiB of batches of 4 KiB: the first read ends exactly between two batches.
        let (file, next) = segment_bytes(0, 768, 1, value_len);
        assert_eq!(file.len(), 3 << 20);
        let segment = SealedSegment {
            base: Offset(0),
            next: Offset(next),
            size: file.len() as u64,
        };
        let (outcome, reads) = verify(segment, &file);
        assert_eq!(outcome, Ok(()));
        assert_eq!(reads, 2, "2 MiB, then the last MiB");
    }

    /// A file cut inside the batch that a read ended in: the next read, from that batch's
    /// start, brings less than the batch, and the verifier says the file ends early (it
    /// neither reads the same bytes again and again nor calls it a bad batch); a segment
    /// whose size ends inside its last batch is a bad batch, not a short file.
    #[test]
    fn a_file_cut_inside_a_batch_across_reads_ends_early() {
        // Batches of ~300 KiB: the one holding 2 MiB starts before it and ends after it.
        let (file, next) = segment_bytes(0, 12, 1, 300_000);
        let batch_len = file.len() / 12;
        let straddling = (2 << 20) / batch_len;
        let start = straddling * batch_len;
        assert!(start < 2 << 20 && start + batch_len > 2 << 20);
        let segment = SealedSegment {
            base: Offset(0),
            next: Offset(next),
            size: file.len() as u64,
        };
        let cut = (2 << 20) + 1_000;
        let damage = verify(segment, &file[..cut]).0.unwrap_err();
        assert_eq!(damage.position, start as u64, "{damage}");
        assert_eq!(
            damage.detail,
            format!(
                "the file ends at {cut}; the log holds {} bytes in it",
                file.len()
            )
        );
        // The log says the segment ends 1,000 bytes into its last batch.
        let last = 11 * batch_len;
        let short = SealedSegment {
            size: last as u64 + 1_000,
            ..segment
        };
        let damage = verify(short, &file).0.unwrap_err();
        assert_eq!(damage.position, last as u64, "{damage}");
        assert!(!damage.detail.contains("the file ends"), "{damage}");
        assert!(damage.detail.ends_with("only 1000 available"), "{damage}");
    }

    #[test]
    fn an_unexpected_read_is_ignored() {
        let (file, next) = segment_bytes(0, 2, 1, 10);
        let segment = SealedSegment {
            base: Offset(0),
            next: Offset(next),
            size: file.len() as u64,
        };
        let mut verifier = SegmentVerifier::new(segment);
        let wrong = VerifyRead {
            file: segment.file(),
            position: 4096,
            len: 4096,
        };
        verifier.handle_read(wrong, &[1, 2, 3]);
        assert!(verifier.outcome().is_none());
        let read = verifier.next_read().unwrap();
        verifier.handle_read(read, &file);
        assert_eq!(verifier.outcome(), Some(&Ok(())));
    }
}
