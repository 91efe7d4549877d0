//! CPU per record with many senders waiting for room: 200,000 records through a producer whose
//! buffer holds 1,000 (`MaxBufferedRecords`) and whose room comes back a little at a time
//! (unaggregated calls of at most 10 records), sent by 20 tasks and then by 20,000 tasks, each
//! with `send_wait` (an asyncio app awaiting `put`, thousands of requests during an outage).
//! A release of room wakes only as many waiting senders as it admits, so the CPU should not
//! grow with the number of waiters: the target is the 20,000-waiter run within 2x of the
//! 20-waiter run, its floor measured in the same run.
//!
//! Run: `cargo bench --bench waiters` (under `cargo test` it runs once, small, unjudged).
#![allow(clippy::disallowed_methods)] // a benchmark times what it runs

use std::sync::Arc;
use std::time::{Duration, Instant};

use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Config, Producer, UserRecord};

/// CPU time this process has used (user + system), from /proc/self/stat (clock ticks).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces), from its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let hz = 100; // USER_HZ on Linux
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

/// `records` records sent by `senders` tasks through a buffer of 1,000, every future awaited.
/// Returns the CPU time and wall time it took.
fn run(records: usize, senders: usize) -> (Duration, Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink = MemorySink::new().with_stream("s", 4).discarding();
        let config = Config::builder()
            .max_buffered_records(1_000)
            // Room comes back a little at a time: calls of at most 10 records, unaggregated.
            .aggregation_enabled(false)
            .collection_max_count(10)
            .record_max_buffered_time(Duration::from_millis(1))
            .rate_limit(1_000_000)
            .build()
            .unwrap();
        let producer = Arc::new(Producer::with_sink(config, sink));
        let (cpu0, wall0) = (cpu(), Instant::now());
        let per = records / senders;
        let tasks: Vec<_> = (0..senders)
            .map(|t| {
                let producer = Arc::clone(&producer);
                tokio::spawn(async move {
                    let mut futures = Vec::with_capacity(per);
                    for i in 0..per {
                        let r =
                            UserRecord::new(format!("k{}", (t * per + i) % 10_000), vec![7u8; 100])
                                .unwrap();
                        futures.push(producer.send_wait("s", r).await);
                    }
                    for f in futures {
                        f.await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = (cpu() - cpu0, wall0.elapsed());
        Arc::try_unwrap(producer).ok().unwrap().shutdown().await;
        took
    })
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if !bench {
        run(2_000, 2);
        run(2_000, 200);
        return;
    }
    let records = 200_000;
    let mut floor = Vec::new();
    let mut many = Vec::new();
    for _ in 0..3 {
        floor.push(run(records, 20));
        many.push(run(records, 20_000));
    }
    let best = |v: &[(Duration, Duration)]| v.iter().map(|r| r.0).min().unwrap();
    let (f, m) = (best(&floor), best(&many));
    for (name, v) in [
        ("20 waiting senders", &floor),
        ("20,000 waiting senders", &many),
    ] {
        let runs: Vec<String> = v
            .iter()
            .map(|(c, w)| format!("{:.2} CPU s / {:.2} s", c.as_secs_f64(), w.as_secs_f64()))
            .collect();
        println!("{name}: {} ({})", runs.join(", "), records);
    }
    let ratio = m.as_secs_f64() / f.as_secs_f64().max(1e-9);
    println!(
        "CPU per record: {:.2} us with 20 waiting, {:.2} us with 20,000: {ratio:.2}x (target: at most 2x)",
        f.as_secs_f64() * 1e6 / records as f64,
        m.as_secs_f64() * 1e6 / records as f64,
    );
}
