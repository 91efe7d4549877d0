//! The producer engine alone (in-memory Kinesis, no network), in user records/s, beside the
//! codec floor measured in the same run (aggregating and encoding the same records on one
//! thread, no engine).
//!
//! Workload: 200,000 user records of 100 bytes, 16-byte partition keys (10,000 distinct), sent
//! from one plain (non-async) thread, then `flush()` (so the last, partly filled aggregates are
//! not held for RecordMaxBufferedTime); each measurement ends when every record's future has
//! resolved. Streams of 4 and 64 shards. Per-shard rate limiting is off (RateLimit 1000000):
//! the in-memory sink never throttles, and this measures the engine, not the shard limits. Also prints the memory each buffered record costs.
//!
//! The floor the producer is held to (issue 12) is `md5_floor_2_cores`: the hashing no producer
//! can skip, on both cores, measured in the same run: the MD5 of each record's partition key (to
//! route it) and of the bytes of the aggregates that carry them (the KPL format's checksum). The
//! `send_all` cases send the same records in batches of 1,000 through `Producer::send_all`.
//! After criterion's figures, a summary line per case gives its median over a few more runs as a
//! fraction of the floor's median, measured alternately with it.
//!
//! Run: `cargo bench --bench engine`; figures go in docs/benchmarks.md. `KPL_ENGINE_MEMORY=1`
//! prints the memory per shard only; `KPL_ENGINE_CORES=n` runs every case on n engine cores
//! (default: one per runtime worker, two).
#![allow(clippy::disallowed_methods)] // a benchmark times what it runs (clippy.toml keeps the library's stages off the clock)

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kinesis_producer::aggregation::{AggregationLimits, Aggregator};
use kinesis_producer::metrics::Level;
use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Config, Producer, UserRecord};
use md5::{Digest, Md5};

const RECORDS: usize = 200_000;

fn runtime() -> tokio::runtime::Runtime {
    // Two workers, one per core: the engine and the PutRecords calls (and their replies).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `EngineCores` for every case: `KPL_ENGINE_CORES` (default 0, one per runtime worker: two).
fn engine_cores() -> u64 {
    std::env::var("KPL_ENGINE_CORES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Records per `send_all` batch in the bulk cases.
const BATCH: usize = 1_000;

/// How a case hands its records to the producer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// `Producer::send`, one future per record.
    Send,
    /// `Producer::send_all`, batches of [`BATCH`].
    SendAll,
}

/// The hashing no producer can skip, on both cores: the MD5 of every key, and of every
/// aggregate's bytes, half on each of two threads. Returns the time taken.
fn md5_floor(keys: &[&str], aggregates: &[bytes::Bytes]) -> Duration {
    fn hash(keys: &[&str], aggregates: &[bytes::Bytes]) {
        for k in keys {
            black_box(Md5::digest(k.as_bytes()));
        }
        for a in aggregates {
            black_box(Md5::digest(a));
        }
    }
    let start = Instant::now();
    let (k1, k2) = keys.split_at(keys.len() / 2);
    let (a1, a2) = aggregates.split_at(aggregates.len() / 2);
    std::thread::scope(|s| {
        let other = s.spawn(|| hash(k1, a1));
        hash(k2, a2);
        other.join().unwrap();
    });
    start.elapsed()
}

/// The bytes of the aggregates the codec packs `records` into (one shard's worth of packing:
/// the same bytes to hash, give or take the key tables, as over any number of shards).
fn aggregates(records: &[UserRecord]) -> Vec<bytes::Bytes> {
    let mut agg = Aggregator::new(AggregationLimits::default());
    let now = Instant::now();
    let mut out = Vec::new();
    for r in records {
        out.extend(agg.push(r.clone(), now).unwrap().map(|a| a.record.data));
    }
    out.extend(agg.flush().map(|a| a.record.data));
    out
}

/// Sends every record from this thread, over `streams` streams of `shards` shards each in turn
/// (a record, or a batch, per stream at a time), and waits for every future; returns the time
/// taken.
#[allow(clippy::too_many_arguments)] // a benchmark case's parameters
fn run_once(
    rt: &tokio::runtime::Runtime,
    streams: usize,
    shards: usize,
    ordered: bool,
    metrics: Level,
    path: Path,
    records: &[UserRecord],
) -> Duration {
    let names: Vec<String> = (0..streams).map(|i| format!("bench-{i}")).collect();
    let sink = names
        .iter()
        .fold(MemorySink::new(), |sink, name| {
            sink.with_stream(name, shards)
        })
        .discarding();
    // The in-memory sink never throttles: per-shard rate limiting off, to measure the engine.
    let config = Config::builder()
        .rate_limit(1_000_000)
        .per_key_ordering(ordered)
        .metrics_level(metrics)
        .engine_cores(engine_cores())
        .build()
        .unwrap();
    let producer = {
        let _guard = rt.enter();
        Producer::with_sink(config, sink)
    };
    // Let the shard maps arrive, so the measurement is the steady state.
    for name in &names {
        rt.block_on(producer.send(name, UserRecord::new("warm", "up").unwrap()))
            .unwrap();
    }
    // The records are made inside the measurement: making one computes its partition key's
    // MD5 (for routing), which is the producer's work, done on the caller's thread.
    let parts = common::bench_parts(records);
    let start = Instant::now();
    let make = |(key, data)| UserRecord::new(key, data).unwrap();
    match path {
        Path::Send => {
            let futures: Vec<_> = parts
                .into_iter()
                .zip(names.iter().cycle())
                .map(|(p, name)| producer.send(name, make(p)))
                .collect();
            // End of the batch: send the partly filled aggregates now instead of measuring
            // RecordMaxBufferedTime (100 ms) of waiting for them.
            producer.flush();
            rt.block_on(async {
                for f in futures {
                    black_box(f.await.unwrap());
                }
            });
        }
        Path::SendAll => {
            let mut parts = parts.into_iter();
            let mut batches = Vec::with_capacity(records.len() / BATCH + 1);
            for name in names.iter().cycle() {
                let batch: Vec<UserRecord> = parts.by_ref().take(BATCH).map(make).collect();
                if batch.is_empty() {
                    break;
                }
                batches.push(producer.send_all(name, batch));
            }
            producer.flush();
            rt.block_on(async {
                for b in batches {
                    for outcome in b.await {
                        black_box(outcome.unwrap());
                    }
                }
            });
        }
    }
    let elapsed = start.elapsed();
    rt.block_on(producer.shutdown());
    elapsed
}

fn engine(c: &mut Criterion) {
    let records = common::bench_workload(RECORDS);
    let rt = runtime();
    // First, while nothing else the runtime ran is still being freed (frees of memory made
    // before counting started would be counted against it).
    memory_per_shard(&rt, 1000);
    if std::env::var("KPL_ENGINE_MEMORY").is_ok() {
        return;
    }
    // `KPL_ENGINE_ONCE=SHARDS:LEVEL` (LEVEL none or detailed) runs the workload once and stops:
    // for counting instructions with `valgrind --tool=callgrind`, which repeat where timings
    // on this machine drift by several percent between runs (see docs/benchmarks.md).
    if let Ok(once) = std::env::var("KPL_ENGINE_ONCE") {
        let (shards, level) = once.split_once(':').expect("SHARDS:LEVEL");
        let level = Level::from_property(level).expect("none, summary or detailed");
        let path = match std::env::var("KPL_ENGINE_PATH").as_deref() {
            Ok("send_all") => Path::SendAll,
            _ => Path::Send,
        };
        let took = run_once(
            &rt,
            1,
            shards.parse().unwrap(),
            false,
            level,
            path,
            &records,
        );
        println!("{RECORDS} records through {shards} shards at {level:?}: {took:?}");
        return;
    }
    let mut group = c.benchmark_group("engine/100B-records");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(20);
    group.bench_function("codec_floor", |b| {
        b.iter_batched(
            || records.clone(),
            |rs| {
                let mut agg = Aggregator::new(AggregationLimits::default());
                let now = Instant::now();
                for r in rs {
                    black_box(agg.push(r, now).unwrap());
                }
                black_box(agg.flush())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let keys: Vec<&str> = records.iter().map(|r| r.partition_key()).collect();
    let packed = aggregates(&records);
    group.bench_function("md5_floor_2_cores", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| md5_floor(&keys, &packed)).sum())
    });
    // The default metrics level (detailed, per shard), and none: what metrics cost.
    let cases = [
        (4, false, Level::Detailed, Path::Send),
        (4, false, Level::None, Path::Send),
        (64, false, Level::Detailed, Path::Send),
        (64, false, Level::None, Path::Send),
        (4, true, Level::Detailed, Path::Send),
        (64, true, Level::Detailed, Path::Send),
        (4, false, Level::Detailed, Path::SendAll),
        (64, false, Level::Detailed, Path::SendAll),
        (1000, false, Level::Detailed, Path::Send),
        (1000, false, Level::Detailed, Path::SendAll),
    ];
    let name = |(shards, ordered, metrics, path): (usize, bool, Level, Path)| {
        format!(
            "producer_{shards}_shards{}{}{}",
            if ordered { "_ordered" } else { "" },
            if metrics == Level::None {
                "_metrics_none"
            } else {
                ""
            },
            if path == Path::SendAll {
                "_send_all"
            } else {
                ""
            },
        )
    };
    for case @ (shards, ordered, metrics, path) in cases {
        group.bench_function(name(case), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run_once(&rt, 1, shards, ordered, metrics, path, &records))
                    .sum()
            })
        });
    }
    group.bench_function("producer_10_streams_of_100_shards_send_all", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    run_once(
                        &rt,
                        10,
                        100,
                        false,
                        Level::Detailed,
                        Path::SendAll,
                        &records,
                    )
                })
                .sum()
        })
    });
    group.finish();
    // Each case against the floor, measured alternately with it in this run: under `cargo
    // bench` only (`cargo test` runs each benchmark once, as a test, without `--bench`).
    if std::env::args().any(|a| a == "--bench") {
        summary(&rt, &records, &cases, &name);
    }
    memory_per_buffered_record(&rt);
}

type Case = (usize, bool, Level, Path);

/// Prints each case's median of 7 runs beside the floor's, run alternately with it.
fn summary(
    rt: &tokio::runtime::Runtime,
    records: &[UserRecord],
    cases: &[Case],
    name: &dyn Fn(Case) -> String,
) {
    let keys: Vec<&str> = records.iter().map(|r| r.partition_key()).collect();
    let packed = aggregates(records);
    const RUNS: usize = 7;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    for &case @ (shards, ordered, metrics, path) in cases {
        let (floor, took): (Vec<_>, Vec<_>) = (0..RUNS)
            .map(|_| {
                (
                    md5_floor(&keys, &packed),
                    run_once(rt, 1, shards, ordered, metrics, path, records),
                )
            })
            .unzip();
        let (floor, took) = (median(floor), median(took));
        let rate = |d: Duration| RECORDS as f64 / d.as_secs_f64() / 1e6;
        println!(
            "{}: {:.2} M records/s, floor {:.2} M/s: {:.2} of the floor (medians of {RUNS})",
            name(case),
            rate(took),
            rate(floor),
            floor.as_secs_f64() / took.as_secs_f64()
        );
    }
    let (floor, took): (Vec<_>, Vec<_>) = (0..RUNS)
        .map(|_| {
            (
                md5_floor(&keys, &packed),
                run_once(rt, 10, 100, false, Level::Detailed, Path::SendAll, records),
            )
        })
        .unzip();
    let (floor, took) = (median(floor), median(took));
    println!(
        "producer_10_streams_of_100_shards_send_all: {:.2} M records/s, floor {:.2} M/s: {:.2} of the floor (medians of {RUNS})",
        RECORDS as f64 / took.as_secs_f64() / 1e6,
        RECORDS as f64 / floor.as_secs_f64() / 1e6,
        floor.as_secs_f64() / took.as_secs_f64()
    );
}

/// The heap an idle producer keeps per shard of a stream of `shards` shards once its map is
/// known and one record has gone through each shard (its aggregator, limiter, metrics series).
fn memory_per_shard(rt: &tokio::runtime::Runtime, shards: usize) {
    count(true);
    let before = live_bytes();
    let sink = MemorySink::new().with_stream("bench", shards).discarding();
    let producer = {
        let _guard = rt.enter();
        let config = Config::builder()
            .engine_cores(engine_cores())
            .build()
            .unwrap();
        Producer::with_sink(config, sink)
    };
    let futures: Vec<_> = (0..shards * 20)
        .map(|i| producer.send("bench", UserRecord::new(format!("k{i}"), "x").unwrap()))
        .collect();
    producer.flush();
    rt.block_on(async {
        for f in futures {
            f.await.unwrap();
        }
        // Past a metrics sample, so what the engine keeps per shard is all there.
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let after = live_bytes();
    count(false);
    println!(
        "memory per shard: {:.0} bytes of heap ({shards} shards, idle, every shard used)",
        (after - before) as f64 / shards as f64
    );
    rt.block_on(producer.shutdown());
}

#[path = "../tests/common/mod.rs"]
mod common;
use common::counting;
use counting::{Counting, count, live_bytes};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Holds every record buffered (an hour's RecordMaxBufferedTime, aggregates that never fill)
/// and reports the resident memory it took per record, futures included.
fn memory_per_buffered_record(rt: &tokio::runtime::Runtime) {
    let sink = MemorySink::new().with_stream("bench", 64).discarding();
    let config = Config::builder()
        .record_max_buffered_time(Duration::from_secs(3600))
        .aggregation_max_size(1 << 20)
        .build()
        .unwrap();
    let producer = {
        let _guard = rt.enter();
        Producer::with_sink(config, sink)
    };
    // The first record waits for the shard map; let it go out.
    let warm = producer.send("bench", UserRecord::new("warm", "up").unwrap());
    producer.flush();
    rt.block_on(warm).unwrap();
    // 100,000 records of 100 bytes at most 1 MiB per aggregate over 64 shards: none fills.
    // Fresh records, so that the measurement includes their data (not shared with `records`).
    let held: Vec<UserRecord> = common::bench_workload(100_000);
    let data_bytes: usize = held.iter().map(|r| r.size()).sum();
    // The records themselves count as buffered memory: measure from before they exist.
    drop(held);
    count(true);
    let before = live_bytes();
    let held = common::bench_workload(100_000);
    // A `Vec` of its own for the futures: `collect` from the records' `Vec` would reuse that
    // allocation in place (a record is larger than a future), keeping the caller's 72 bytes a
    // record alive and counting them as the producer's.
    let mut futures = Vec::with_capacity(held.len());
    for r in held {
        futures.push(producer.send("bench", r));
    }
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
    let after = live_bytes();
    count(false);
    let per = (after - before) as f64 / futures.len() as f64;
    let data = data_bytes as f64 / futures.len() as f64;
    println!(
        "memory per buffered record: {per:.0} bytes of heap, of which {data:.0} are the record's data and key \
         (100,000 records held, their futures included)"
    );
    // The bound docs/benchmarks.md claims (issue 9): at most 300 bytes of bookkeeping.
    assert!(
        per - data <= 300.0,
        "{:.0} bytes of bookkeeping per buffered record, over 300",
        per - data
    );
    producer.flush();
    rt.block_on(async {
        for f in futures {
            f.await.unwrap();
        }
    });
}

criterion_group!(benches, engine);
criterion_main!(benches);
