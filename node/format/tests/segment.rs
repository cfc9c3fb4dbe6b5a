//! Segment scanning tests: clean ends, preallocated zero padding, torn tails at every cut,
//! flipped bytes anywhere, offset discontinuities, and file names.

#![allow(clippy::cast_possible_truncation)]

use proptest::prelude::*;
use spate_format::limits::SECTOR_SIZE;
use spate_format::segment::{parse_segment_file_name, scan_segment, segment_file_name};
use spate_format::{
    stamp, BatchBuilder, BatchError, EndReason, Offset, Record, ScanEnd, SegmentFileKind,
};

/// A batch of `count` records with `value_size`-byte values, stamped at `base`.
fn batch(base: u64, count: u32, value_size: usize) -> Vec<u8> {
    let value = vec![0xab; value_size];
    let mut builder = BatchBuilder::new();
    for index in 0..count {
        let record = Record {
            timestamp: 1_000 + i64::from(index),
            value: Some(&value),
            ..Record::default()
        };
        builder.push(&record).unwrap();
    }
    let mut bytes = builder.finish().unwrap();
    stamp(&mut bytes, Offset(base), 5).unwrap();
    bytes
}

/// A segment starting at offset `base` with batches of the given record counts, and the end
/// position of every batch.
fn segment(base: u64, counts: &[u32], value_size: usize) -> (Vec<u8>, Vec<u64>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    let mut next = base;
    for &count in counts {
        bytes.extend_from_slice(&batch(next, count, value_size));
        ends.push(bytes.len() as u64);
        next += u64::from(count);
    }
    (bytes, ends)
}

#[test]
fn golden_file_names_match_the_doc() {
    assert_eq!(
        segment_file_name(Offset(0), SegmentFileKind::Log),
        "00000000000000000000.log"
    );
    assert_eq!(
        segment_file_name(Offset(368_769), SegmentFileKind::OffsetIndex),
        "00000000000000368769.index"
    );
    assert_eq!(
        segment_file_name(Offset(368_769), SegmentFileKind::TimeIndex),
        "00000000000000368769.timeindex"
    );
    assert_eq!(
        parse_segment_file_name("00000000000000368769.timeindex"),
        Ok((Offset(368_769), SegmentFileKind::TimeIndex))
    );
    for bad in [
        "0000000000000036876.log",
        "000000000000003687690.log",
        "00000000000000368769.txt",
        "0000000000000036876x.log",
        "99999999999999999999.log",
        "00000000000000368769",
        "",
    ] {
        assert!(parse_segment_file_name(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn golden_segment_is_batches_back_to_back_then_zeros() {
    let (mut bytes, ends) = segment(100, &[3, 1], 8);
    let written = bytes.len() as u64;
    // Preallocated space is zero; the scanner calls it padding, not damage.
    bytes.resize(SECTOR_SIZE as usize, 0);
    let (batches, end) = scan_segment(&bytes, 0, Some(Offset(100)));
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].position, 0);
    assert_eq!(batches[0].base_offset, Offset(100));
    assert_eq!(batches[0].last_offset, Offset(102));
    assert_eq!(batches[1].position, ends[0]);
    assert_eq!(batches[1].base_offset, Offset(103));
    assert_eq!(batches[1].end_position(), written);
    assert_eq!(
        end,
        ScanEnd {
            position: written,
            reason: EndReason::ZeroPadding
        }
    );
}

#[test]
fn scan_of_exact_bytes_ends_clean_and_reports_file_positions() {
    let (bytes, ends) = segment(0, &[2, 2, 2], 30);
    let (batches, end) = scan_segment(&bytes[ends[0] as usize..], 1 << 20, Some(Offset(2)));
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].position, 1 << 20);
    assert_eq!(batches[1].position, (1 << 20) + ends[1] - ends[0]);
    assert_eq!(end.reason, EndReason::Clean);
    assert_eq!(end.position, (1 << 20) + ends[2] - ends[0]);
    assert_eq!(
        scan_segment(&[], 7, None).1,
        ScanEnd {
            position: 7,
            reason: EndReason::Clean
        }
    );
}

#[test]
fn offset_discontinuity_stops_the_scan() {
    let mut bytes = batch(0, 2, 10);
    bytes.extend_from_slice(&batch(5, 1, 10));
    let (batches, end) = scan_segment(&bytes, 0, Some(Offset(0)));
    assert_eq!(batches.len(), 1);
    assert_eq!(
        end.reason,
        EndReason::OffsetMismatch {
            expected: Offset(2),
            found: Offset(5)
        }
    );
    let (batches, end) = scan_segment(&bytes, 0, Some(Offset(1)));
    assert!(batches.is_empty());
    assert_eq!(end.position, 0);
}

#[test]
fn every_cut_of_the_tail_is_reported_as_truncated_at_the_last_boundary() {
    let (bytes, ends) = segment(0, &[1, 4, 2], 50);
    for cut in 0..bytes.len() {
        let (batches, end) = scan_segment(&bytes[..cut], 0, Some(Offset(0)));
        let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
        assert_eq!(batches.len(), whole, "cut {cut}");
        let boundary = if whole == 0 { 0 } else { ends[whole - 1] };
        assert_eq!(end.position, boundary, "cut {cut}");
        if cut as u64 == boundary {
            assert_eq!(end.reason, EndReason::Clean, "cut {cut}");
        } else {
            assert!(
                matches!(
                    end.reason,
                    EndReason::InvalidBatch(BatchError::Truncated { .. })
                ),
                "cut {cut}: {:?}",
                end.reason
            );
        }
    }
}

#[test]
fn a_torn_tail_followed_by_zero_padding_is_invalid_not_padding() {
    let (mut bytes, ends) = segment(0, &[3, 3], 40);
    // The second batch's last bytes never reached the disk: zeros where its tail should be.
    let len = bytes.len();
    bytes[len - 10..].fill(0);
    bytes.resize(2 * SECTOR_SIZE as usize, 0);
    let (batches, end) = scan_segment(&bytes, 0, Some(Offset(0)));
    assert_eq!(batches.len(), 1);
    assert_eq!(end.position, ends[0]);
    assert!(matches!(
        end.reason,
        EndReason::InvalidBatch(BatchError::ProducerCrc { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn flipping_any_byte_stops_the_scan_at_or_before_the_damaged_batch(
        counts in proptest::collection::vec(1u32..5, 1..8),
        value_size in 0usize..200,
        position_seed in any::<usize>(),
        mask in 1u8..=255,
    ) {
        let (mut bytes, ends) = segment(10, &counts, value_size);
        let position = position_seed % bytes.len();
        bytes[position] ^= mask;
        let damaged = ends.iter().position(|&end| position < end as usize).unwrap();
        let damaged_start = if damaged == 0 { 0 } else { ends[damaged - 1] };
        let (batches, end) = scan_segment(&bytes, 0, Some(Offset(10)));
        prop_assert_eq!(batches.len(), damaged);
        prop_assert_eq!(end.position, damaged_start);
        let clean = matches!(end.reason, EndReason::Clean | EndReason::ZeroPadding);
        prop_assert!(!clean, "damage reported as {:?}", end.reason);
    }

    #[test]
    fn scanning_garbage_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        start in any::<u32>(),
    ) {
        let (batches, end) = scan_segment(&bytes, u64::from(start), None);
        let covered: u64 = batches.iter().map(|batch| u64::from(batch.length)).sum();
        prop_assert_eq!(end.position, u64::from(start) + covered);
    }
}

/// The producer snapshot of docs/format/producer-snapshot.md: one producer (id 42, epoch 1)
/// with two batches.
#[test]
fn a_producer_snapshot_matches_the_golden_bytes_of_the_format_doc() {
    use spate_format::producers::{decode_snapshot, encode_snapshot, SnapshotBatch, SnapshotEntry};
    use zerocopy::little_endian::{I16, I32, I64, U32, U64};
    use zerocopy::FromZeros;
    let mut entry = SnapshotEntry::new_zeroed();
    entry.producer_id = I64::new(42);
    entry.producer_epoch = I16::new(1);
    entry.batch_count = 2;
    entry.batches[0] = SnapshotBatch {
        base_offset: U64::new(100),
        append_time: I64::new(1_700_000_000_000),
        base_sequence: I32::new(0),
        record_count: U32::new(3),
    };
    entry.batches[1] = SnapshotBatch {
        base_offset: U64::new(107),
        append_time: I64::new(1_700_000_000_005),
        base_sequence: I32::new(3),
        record_count: U32::new(2),
    };
    let bytes = encode_snapshot(&[entry]);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(hex, GOLDEN_SNAPSHOT.concat());
    assert_eq!(decode_snapshot(&bytes), Ok(&[entry][..]));
}

const GOLDEN_SNAPSHOT: [&str; 30] = [
    "fe79c354",         // crc
    "53505053",         // magic SPPS
    "0100",             // version 1
    "0000",             // reserved
    "01000000",         // entry_count 1
    "2a00000000000000", // producer_id 42
    "0100",             // producer_epoch 1
    "02",               // batch_count 2
    "00",               // reserved0
    "00000000",         // reserved1
    "6400000000000000", // batch 0: base_offset
    "0068e5cf8b010000", // batch 0: append_time
    "00000000",         // batch 0: base_sequence
    "03000000",         // batch 0: record_count
    "6b00000000000000", // batch 1: base_offset
    "0568e5cf8b010000", // batch 1: append_time
    "03000000",         // batch 1: base_sequence
    "02000000",         // batch 1: record_count
    "0000000000000000", // batch 2: base_offset
    "0000000000000000", // batch 2: append_time
    "00000000",         // batch 2: base_sequence
    "00000000",         // batch 2: record_count
    "0000000000000000", // batch 3: base_offset
    "0000000000000000", // batch 3: append_time
    "00000000",         // batch 3: base_sequence
    "00000000",         // batch 3: record_count
    "0000000000000000", // batch 4: base_offset
    "0000000000000000", // batch 4: append_time
    "00000000",         // batch 4: base_sequence
    "00000000",         // batch 4: record_count
];

/// The leader-epoch file of docs/format/leader-epochs.md: epoch 1 from offset 0, epoch 3
/// from offset 1000.
#[test]
fn a_leader_epoch_file_matches_the_golden_bytes_of_the_format_doc() {
    use spate_format::epochs::{decode_epochs, encode_epochs, epochs_entry};

    let entries = [epochs_entry(1, 0), epochs_entry(3, 1000)];
    let bytes = encode_epochs(&entries);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let golden = [
        "b51d31d2",         // crc
        "53504c45",         // magic SPLE
        "0100",             // version 1
        "0000",             // reserved
        "02000000",         // entry_count 2
        "01000000",         // entry 0: epoch 1
        "00000000",         // entry 0: reserved
        "0000000000000000", // entry 0: start 0
        "03000000",         // entry 1: epoch 3
        "00000000",         // entry 1: reserved
        "e803000000000000", // entry 1: start 1000
    ];
    assert_eq!(hex, golden.concat());
    assert_eq!(decode_epochs(&bytes), Ok(&entries[..]));
}
