//! Microbenchmarks (criterion) of the hot pure code: building a batch, validating and
//! iterating one, the CRC, scanning a segment, and encoding/decoding frames. Run with
//! `cargo bench -p spate-bench --bench micro`.

#![allow(clippy::semicolon_if_nothing_returned)] // criterion closures read better without

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spate_format::{stamp, BatchBuilder, BatchRef, Offset, Record, SegmentScanner};
use spate_proto::limits::REQUEST_SIZE_MAX;
use spate_proto::{Durability, FrameDecoder, PartitionId, ProduceRequest, Request};

const VALUE: [u8; 1024] = [b'x'; 1024];
const TIMESTAMP: i64 = 1_700_000_000_000;

/// A batch of `count` records of 1 KiB values with 16-byte keys.
fn batch(count: u32) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for index in 0..count {
        let key = format!("key-{index:012}");
        builder
            .push(&Record {
                timestamp: TIMESTAMP + i64::from(index),
                key: Some(key.as_bytes()),
                value: Some(&VALUE),
                headers: &[],
            })
            .expect("the record fits");
    }
    builder.finish().expect("a non-empty batch")
}

fn batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    let built = batch(200);
    group.throughput(Throughput::Bytes(built.len() as u64));
    group.bench_function("build 200 x 1 KiB", |b| b.iter(|| black_box(batch(200))));
    group.bench_function("parse + validate 200 x 1 KiB", |b| {
        b.iter(|| BatchRef::parse_validated(black_box(&built)).expect("valid"))
    });
    group.bench_function("iterate 200 records", |b| {
        let parsed = BatchRef::parse_validated(&built).expect("valid");
        b.iter(|| {
            let mut bytes = 0usize;
            for record in parsed.records() {
                bytes += record.expect("valid").value.map_or(0, <[u8]>::len);
            }
            black_box(bytes)
        })
    });
    group.bench_function("crc32 of the batch", |b| {
        b.iter(|| crc32fast::hash(black_box(&built)))
    });
    group.finish();
}

fn segments(c: &mut Criterion) {
    let mut group = c.benchmark_group("segment");
    // 4 MiB of stamped batches back to back, as in a segment file.
    let mut segment = Vec::new();
    let mut next = 0u64;
    while segment.len() < 4 << 20 {
        let mut one = batch(50);
        stamp(&mut one, Offset(next), TIMESTAMP).expect("a valid batch");
        next += 50;
        segment.extend_from_slice(&one);
    }
    group.throughput(Throughput::Bytes(segment.len() as u64));
    group.bench_function("scan 4 MiB", |b| {
        b.iter(|| {
            let scanner = SegmentScanner::new(black_box(&segment), 0, Some(Offset(0)));
            black_box(scanner.scan())
        })
    });
    group.finish();
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    let request = Request::Produce(ProduceRequest {
        topic: "events".into(),
        partition: PartitionId(3),
        durability: Durability::Fsync,
        batch: Bytes::from(batch(200)),
    });
    let frame = request.to_frame(7);
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("encode produce 200 KiB", |b| {
        b.iter(|| black_box(request.to_frame(7)))
    });
    let decoder = FrameDecoder::new(REQUEST_SIZE_MAX);
    group.bench_function("decode produce 200 KiB", |b| {
        b.iter(|| {
            let mut buffer = BytesMut::from(&frame[..]);
            let frame = decoder.decode(&mut buffer).expect("valid").expect("whole");
            black_box(Request::decode(&frame).expect("valid"))
        })
    });
    group.bench_function("route produce", |b| {
        let mut buffer = BytesMut::from(&frame[..]);
        let frame = decoder.decode(&mut buffer).expect("valid").expect("whole");
        b.iter(|| black_box(frame.route().expect("routable")))
    });
    group.finish();
}

criterion_group!(micro, batches, segments, frames);
criterion_main!(micro);
