//! The cost of the durable spool: the engine with the spool off and on, in the same run,
//! alternately, on this machine's disk (the spool directory is under `target/`).
//!
//! Workload as `benches/engine.rs`: 200,000 user records of 100 bytes, 16-byte partition keys
//! (10,000 distinct), 4 shards of the in-memory Kinesis (discarding what it is sent), per-shard
//! rate limiting off, through `Producer::send` and `Producer::send_all` (batches of 1,000),
//! every future awaited. Printed per case, medians of 5 runs:
//! - records/s, and as a fraction of the same case with the spool off (the floor here);
//! - CPU per record (user + system time of the process, from /proc/self/stat);
//! - bytes written to the spool per record (frames and segment headers; acks beside);
//! - at a paced 50,000 records/s (batches of 100 every 2 ms), the p50 and p99 latency from a
//!   batch's send to its last outcome, spool off and on: what the spool adds to a put;
//! - with one `sync_spool` per record (2,000 records, one at a time): records/s and the p50
//!   and p99 time `sync_spool` takes (a write and an `fdatasync`);
//! - the disk's own floor: sequential 64 KiB writes with an `fdatasync` per MiB, in MB/s.
//!
//! Run: `cargo bench --bench spool`; figures go in docs/benchmarks.md.
#![allow(clippy::disallowed_methods)] // a benchmark times what it runs

use std::hint::black_box;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Config, Producer, UserRecord};

const RECORDS: usize = 200_000;
const RUNS: usize = 5;

/// Whether this is the benchmark (`cargo bench`) rather than `cargo test --all-targets` running
/// it once as a test, which only checks that it runs: a tenth of the records, one run each.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}
const BATCH: usize = 1_000;

/// User plus system CPU time of this process so far (Linux: /proc/self/stat, in clock ticks
/// of 1/100 s).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn spool_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/spool-bench");
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn producer(rt: &tokio::runtime::Runtime, spool: bool) -> Producer {
    let sink = MemorySink::new().with_stream("bench", 4).discarding();
    let mut config = Config::builder().rate_limit(1_000_000);
    if spool {
        config = config.spool_directory(spool_dir());
    }
    let _guard = rt.enter();
    let producer = Producer::try_with_sink(config.build().unwrap(), sink).unwrap();
    rt.block_on(producer.send("bench", UserRecord::new("warm", "up").unwrap()))
        .unwrap();
    producer
}

struct Run {
    took: Duration,
    cpu: Duration,
    written: u64,
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    spool: bool,
    send_all: bool,
    records: &[UserRecord],
) -> Run {
    let producer = producer(rt, spool);
    let written_before = producer.spool_stats().map_or(0, |s| s.written_bytes);
    let parts = common::bench_parts(records);
    let make = |(key, data)| UserRecord::new(key, data).unwrap();
    let cpu_before = cpu();
    let start = Instant::now();
    if send_all {
        let mut parts = parts.into_iter();
        let mut batches = Vec::new();
        loop {
            let batch: Vec<UserRecord> = parts.by_ref().take(BATCH).map(make).collect();
            if batch.is_empty() {
                break;
            }
            batches.push(producer.send_all("bench", batch));
        }
        producer.flush();
        rt.block_on(async {
            for b in batches {
                for outcome in b.await {
                    black_box(outcome.unwrap());
                }
            }
        });
    } else {
        let futures: Vec<_> = parts
            .into_iter()
            .map(|p| producer.send("bench", make(p)))
            .collect();
        producer.flush();
        rt.block_on(async {
            for f in futures {
                black_box(f.await.unwrap());
            }
        });
    }
    let took = start.elapsed();
    let cpu = cpu() - cpu_before;
    let written = producer.spool_stats().map_or(0, |s| s.written_bytes) - written_before;
    rt.block_on(producer.shutdown());
    Run { took, cpu, written }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Batches of 100 every 2 ms for 2 s: each batch's time from send to its last outcome.
fn paced_latency(
    rt: &tokio::runtime::Runtime,
    spool: bool,
    records: &[UserRecord],
) -> Vec<Duration> {
    let producer = producer(rt, spool);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for (i, batch) in records.chunks(100).take(1_000).enumerate() {
        // Paced against the start, not the previous batch.
        let due = start + Duration::from_millis(2 * i as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let sent = Instant::now();
        let future = producer.send_all("bench", batch.to_vec());
        let seen = Arc::clone(&seen);
        tasks.push(rt.spawn(async move {
            for o in future.await {
                o.unwrap();
            }
            seen.lock().unwrap().push(sent.elapsed());
        }));
    }
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    rt.block_on(producer.shutdown());
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

/// One record at a time, each followed by `sync_spool`: records/s and each sync's time.
fn sync_each(rt: &tokio::runtime::Runtime, records: &[UserRecord]) -> (f64, Vec<Duration>) {
    let producer = producer(rt, true);
    let mut syncs = Vec::new();
    let mut futures = Vec::new();
    let start = Instant::now();
    for r in records.iter().take(2_000) {
        futures.push(producer.send("bench", r.clone()));
        let at = Instant::now();
        rt.block_on(producer.sync_spool()).unwrap();
        syncs.push(at.elapsed());
    }
    producer.flush();
    rt.block_on(async {
        for f in futures {
            f.await.unwrap();
        }
    });
    let rate = 2_000.0 / start.elapsed().as_secs_f64();
    rt.block_on(producer.shutdown());
    (rate, syncs)
}

/// The disk alone: 64 KiB writes, an fdatasync per MiB, `bytes` in all; MB/s.
fn disk_floor(bytes: usize) -> f64 {
    let dir = spool_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("floor");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0xA5u8; 64 * 1024];
    let start = Instant::now();
    let mut written = 0;
    while written < bytes {
        file.write_all(&block).unwrap();
        written += block.len();
        if written % (1 << 20) == 0 {
            file.sync_data().unwrap();
        }
    }
    file.sync_data().unwrap();
    let took = start.elapsed();
    std::fs::remove_file(&path).unwrap();
    written as f64 / took.as_secs_f64() / 1e6
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (records_n, runs_n) = if measuring() {
        (RECORDS, RUNS)
    } else {
        (RECORDS / 10, 1)
    };
    let records = common::bench_workload(records_n);
    for send_all in [false, true] {
        let name = if send_all { "send_all" } else { "send" };
        let mut off = Vec::new();
        let mut on = Vec::new();
        for _ in 0..runs_n {
            off.push(run_once(&rt, false, send_all, &records));
            on.push(run_once(&rt, true, send_all, &records));
        }
        let rate = |runs: &[Run]| {
            records_n as f64 / median(runs.iter().map(|r| r.took).collect()).as_secs_f64()
        };
        let cpu = |runs: &[Run]| {
            median(runs.iter().map(|r| r.cpu).collect()).as_secs_f64() * 1e9 / records_n as f64
        };
        let written =
            on.iter().map(|r| r.written).sum::<u64>() as f64 / (runs_n * records_n) as f64;
        println!(
            "spool {name}: off {:.2} M records/s, {:.0} ns CPU a record; on (SpoolSyncInterval 5 ms) {:.2} M records/s, {:.0} ns CPU a record, {:.1} bytes written a record: {:.2} of off (medians of {runs_n})",
            rate(&off) / 1e6,
            cpu(&off),
            rate(&on) / 1e6,
            cpu(&on),
            written,
            rate(&on) / rate(&off),
        );
    }
    let mut off = paced_latency(&rt, false, &records);
    let mut on = paced_latency(&rt, true, &records);
    println!(
        "spool latency at 50,000 records/s, send to outcome: off p50 {:.1} ms p99 {:.1} ms; on p50 {:.1} ms p99 {:.1} ms",
        percentile(&mut off, 0.5).as_secs_f64() * 1e3,
        percentile(&mut off, 0.99).as_secs_f64() * 1e3,
        percentile(&mut on, 0.5).as_secs_f64() * 1e3,
        percentile(&mut on, 0.99).as_secs_f64() * 1e3,
    );
    let (rate, mut syncs) = sync_each(&rt, &records);
    println!(
        "spool with one sync_spool a record: {rate:.0} records/s; sync_spool p50 {:.2} ms p99 {:.2} ms",
        percentile(&mut syncs, 0.5).as_secs_f64() * 1e3,
        percentile(&mut syncs, 0.99).as_secs_f64() * 1e3,
    );
    println!(
        "disk floor: {:.0} MB/s (64 KiB writes, an fdatasync a MiB)",
        disk_floor(if measuring() { 256 << 20 } else { 16 << 20 })
    );
    let _ = std::fs::remove_dir_all(spool_dir());
}
