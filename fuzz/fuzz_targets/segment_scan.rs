//! Fuzz target: scanning any bytes as a segment never panics; the valid batches it reports
//! tile the valid prefix exactly and each re-parses at its position; the end reason is true.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_format::segment::scan_segment;
use spate_format::{BatchRef, EndReason, Offset};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses whether an expected first offset is given, so both paths run.
    // Bit 1 of it chooses whether every batch gets correct CRCs first.
    let (expected, rest) = match data.split_first() {
        Some((&flag, rest)) if flag & 1 == 1 => (Some(Offset(u64::from(flag >> 2))), rest),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    let mut owned = rest.to_vec();
    if data.first().is_some_and(|flag| flag & 2 == 2) {
        spate_fuzz::fix_segment_crcs(&mut owned);
    }
    let bytes = &owned[..];
    let start = 4096u64;
    let (batches, end) = scan_segment(bytes, start, expected);
    let mut position = start;
    let mut next = expected;
    for batch in &batches {
        assert_eq!(batch.position, position);
        let at = usize::try_from(batch.position - start).unwrap();
        let parsed = BatchRef::parse_prefix(&bytes[at..]).expect("reported batch re-parses");
        assert_eq!(parsed.len(), batch.length);
        assert_eq!(parsed.base_offset(), batch.base_offset);
        if let Some(next) = next {
            assert_eq!(batch.base_offset, next);
        }
        next = Some(batch.next_offset());
        position = batch.end_position();
    }
    assert_eq!(end.position, position);
    let rest = &bytes[usize::try_from(end.position - start).unwrap()..];
    match end.reason {
        EndReason::Clean => assert!(rest.is_empty()),
        EndReason::ZeroPadding => assert!(!rest.is_empty() && rest.iter().all(|&b| b == 0)),
        EndReason::InvalidBatch(_) => assert!(BatchRef::parse_prefix(rest).is_err()),
        EndReason::OffsetMismatch { expected, found } => {
            assert_ne!(expected, found);
            assert_eq!(BatchRef::parse_prefix(rest).unwrap().base_offset(), found);
        }
    }
});
