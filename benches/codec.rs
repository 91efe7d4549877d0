//! The aggregation codec's speed beside its floor, both measured in the same run.
//!
//! Workload: 10,000 user records of 100 bytes with 16-byte partition keys, 1,000 distinct,
//! aggregated under the KPL defaults (51,200-byte aggregates). Reported in user records/s.
//!
//! Floor: MD5 of the same bytes (every record's key and data, hashed in 51,200-byte pieces as
//! the aggregates are). Every aggregate must be hashed once, so no codec beats this; the target
//! is at most 2x its time.
//!
//! Run: `cargo bench --bench codec`; figures go in docs/benchmarks.md.
#![allow(clippy::disallowed_methods)] // a benchmark times what it runs (clippy.toml keeps the library's stages off the clock)

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kinesis_producer::UserRecord;
use kinesis_producer::aggregation::{AggregationLimits, Aggregator, KinesisRecord, deaggregate};
use md5::{Digest, Md5};

const RECORDS: usize = 10_000;
const DATA_LEN: usize = 100;
const KEYS: usize = 1_000;

fn workload() -> Vec<UserRecord> {
    // A fixed xorshift stream: the same bytes on every run.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..RECORDS)
        .map(|_| {
            let key = format!("partition-{:06}", next() as usize % KEYS);
            debug_assert_eq!(key.len(), 16);
            let data: Vec<u8> = (0..DATA_LEN).map(|_| next() as u8).collect();
            UserRecord::new(key, data).unwrap()
        })
        .collect()
}

fn aggregate(records: Vec<UserRecord>) -> Vec<KinesisRecord> {
    let mut agg = Aggregator::new(AggregationLimits::default());
    let now = Instant::now();
    let mut out = Vec::with_capacity(32);
    for r in records {
        if let Some(full) = agg.push(r, now).unwrap() {
            out.push(full.record);
        }
    }
    out.extend(agg.flush().map(|a| a.record));
    out
}

fn codec(c: &mut Criterion) {
    let records = workload();
    let mut group = c.benchmark_group("codec/100B-records-16B-keys");
    group.throughput(Throughput::Elements(RECORDS as u64));

    let same_bytes: Vec<u8> = records
        .iter()
        .flat_map(|r| {
            r.partition_key()
                .as_bytes()
                .iter()
                .chain(r.data().iter())
                .copied()
        })
        .collect();
    group.bench_function("md5_floor", |b| {
        b.iter(|| {
            for piece in black_box(&same_bytes).chunks(51_200) {
                black_box(Md5::digest(piece));
            }
        })
    });

    group.bench_function("aggregate_encode", |b| {
        b.iter_batched(
            || records.clone(),
            |rs| black_box(aggregate(rs)),
            BatchSize::LargeInput,
        )
    });

    let sent: Vec<(String, Bytes)> = aggregate(records.clone())
        .into_iter()
        .map(|k| (k.partition_key, k.data))
        .collect();
    group.bench_function("deaggregate", |b| {
        b.iter(|| {
            for (pk, data) in &sent {
                black_box(deaggregate(pk, data.clone()));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
