//! Fuzz target: an arbitrary sequence of operations (appends of each durability, I/O
//! completions in any order, time passing, fetches, retention, crashes with recovery from a
//! crash image, storage faults) applied to `PartitionLog` over `SimStorage`, checked after
//! every operation against the model of what was appended (every record at its offset, with
//! its bytes) and the log's promises. The first 8 bytes seed batch contents, completion order
//! and crash images; every later byte is one operation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_sim::{Op, Simulation};

/// Enough operations for rolls, retention and several crashes, few enough to stay fast.
const OPS_MAX: usize = 1000;

fuzz_target!(|data: &[u8]| {
    let Some((seed, ops)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mut simulation = Simulation::new(u64::from_le_bytes(*seed));
    for &byte in ops.iter().take(OPS_MAX) {
        if let Err(violation) = simulation.apply(Op::from_byte(byte)) {
            panic!("invariant violated: {violation}");
        }
    }
    if let Err(violation) = simulation.finish() {
        panic!("invariant violated at the end: {violation}");
    }
});
