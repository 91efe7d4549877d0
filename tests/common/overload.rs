//! Offers a stream twice its write capacity on ferrokinesis with per-shard limits enforced, and
//! reports what was delivered. Shared by `tests/throttling.rs` (short, checks that nothing fails
//! and everything reads back) and `benches/throttling.rs` (30 s, the figures).
#![allow(dead_code)] // each test binary uses its own subset
#![allow(clippy::disallowed_methods)] // the workload times what it runs (clippy.toml keeps the library's stages off the clock)

use std::sync::Arc;
use std::time::{Duration, Instant};

use kinesis_producer::local::{LocalKinesis, LocalOptions, ReadRecord};
use kinesis_producer::shard_map::even_split;
use kinesis_producer::{HashKey, Producer, UserRecord};

use super::harness;

/// What an overload run delivered.
#[derive(Debug)]
#[allow(dead_code)] // each user reads its own fields
pub struct Overload {
    pub offered_bytes: u64,
    pub records: usize,
    pub failed: usize,
    /// Bytes put per second over the run (data and partition key, as Kinesis counts them), as a
    /// share of the shards' byte budget.
    pub delivered_share: f64,
    pub delivered_bytes_per_sec: f64,
    pub retried: usize,
    pub read_back: usize,
    pub kinesis_records: usize,
    /// Bytes the shards took per second while the run was under way (by the records'
    /// arrival times, first and last 2 s left out), as a share of their byte budget: what the
    /// whole-run figure would be without the start and the tail.
    pub steady_share: f64,
}

/// `shards` shards; records of `size` bytes offered at `factor` x the byte budget for `secs` s.
pub async fn run(shards: i32, size: usize, factor: f64, secs: u64) -> Overload {
    run_shared(1, shards, size, factor, secs)
        .await
        .pop()
        .expect("one producer")
}

/// `producers` separate producers sharing a stream of `shards` shards, together offering
/// records of `size` bytes at `factor` x its byte budget for `secs` s, each sender waiting for
/// room (`send_wait`). Returns what each delivered; `read_back` and `kinesis_records` are the
/// stream's totals, in every entry.
pub async fn run_shared(
    producers: usize,
    shards: i32,
    size: usize,
    factor: f64,
    secs: u64,
) -> Vec<Overload> {
    let kinesis = LocalKinesis::start(LocalOptions {
        enforce_limits: true,
        port: 0,
    })
    .await
    .unwrap();
    kinesis.create_stream("overload", shards).await.unwrap();
    let config = kinesis
        .config()
        .record_ttl(Duration::from_secs(120))
        .build()
        .unwrap();
    let budget = shards as f64 * 1024.0 * 1024.0; // bytes per second
    // `factor` percent of the byte budget, in records per 10 ms tick, shared by the producers.
    let per_tick =
        (budget * factor / 100.0 / size as f64 / 100.0 / producers as f64).round() as usize;
    let keys: Arc<[Arc<str>]> = balanced_keys(shards as usize, 1000).into();
    let start = Instant::now();
    let mut runs = Vec::new();
    for p in 0..producers {
        let producer = Producer::new(config.clone()).await;
        let keys = Arc::clone(&keys);
        runs.push(tokio::spawn(async move {
            let mut futures = Vec::new();
            let mut offered_bytes = 0u64;
            let mut tick = 0u64;
            while start.elapsed() < Duration::from_secs(secs) {
                for _ in 0..per_tick {
                    let i = futures.len() * producers + p;
                    let mut data = (i as u64).to_be_bytes().to_vec();
                    data.resize(size, (i % 251) as u8);
                    let r = UserRecord::new(Arc::clone(&keys[i % keys.len()]), data).unwrap();
                    // What Kinesis counts against a shard's limit: data and partition key.
                    let bytes = r.size() as u64;
                    offered_bytes += bytes;
                    let f = producer.send_wait("overload", r).await;
                    futures.push((bytes, f));
                }
                tick += 1;
                tokio::time::sleep_until((start + Duration::from_millis(10 * tick)).into()).await;
            }
            let mut failed = 0;
            let mut retried = 0;
            let mut delivered = 0u64;
            let records = futures.len();
            for (bytes, f) in futures {
                match f.await {
                    Ok(receipt) => {
                        retried += usize::from(receipt.attempts.len() > 1);
                        delivered += bytes;
                    }
                    Err(e) => {
                        failed += 1;
                        if failed < 5 {
                            eprintln!("failed: {e}");
                        }
                    }
                }
            }
            // This producer's own drain time: how fast it got its records in, against the others.
            let own = start.elapsed();
            producer.shutdown().await;
            (offered_bytes, records, failed, retried, delivered, own)
        }));
    }
    let mut done = Vec::new();
    for r in runs {
        done.push(r.await.unwrap());
    }
    // The whole run lasts until the last producer has every outcome.
    let drained_for = start.elapsed();
    let read = kinesis.read_all("overload").await.unwrap();
    let read_back: usize = read.iter().map(|r| harness::user_records(r).len()).sum();
    let steady_share = steady_share(&read, shards);
    // Twice the budget was offered, so the shards never lacked work until the end: what the
    // producers delivered over the whole run, against the budget over the whole run, is how
    // well they kept them busy.
    done.into_iter()
        .map(
            |(offered_bytes, records, failed, retried, delivered, own)| {
                // One producer: over the whole run. Several: each over its own drain time, so
                // that a producer starved by the others shows a lower rate.
                let over = if producers == 1 { drained_for } else { own };
                let delivered_bytes_per_sec = delivered as f64 / over.as_secs_f64();
                Overload {
                    offered_bytes,
                    records,
                    failed,
                    delivered_share: delivered_bytes_per_sec / budget,
                    delivered_bytes_per_sec,
                    retried,
                    read_back,
                    kinesis_records: read.len(),
                    steady_share,
                }
            },
        )
        .collect()
}

/// Bytes of data the shards took per second, by arrival time, leaving out the first and the
/// last 2 s of arrivals, as a share of `shards` x 1 MiB/s.
fn steady_share(read: &[ReadRecord], shards: i32) -> f64 {
    let arrivals = || {
        read.iter()
            .filter_map(|r| Some((r.arrival_ms?, r.data.len() as u64)))
    };
    let (Some(first), Some(last)) = (arrivals().map(|a| a.0).min(), arrivals().map(|a| a.0).max())
    else {
        return 0.0;
    };
    let (from, to) = (first + 2_000, last - 2_000);
    if to <= from {
        return 0.0;
    }
    let bytes: u64 = arrivals()
        .filter(|(at, _)| *at >= from && *at < to)
        .map(|(_, b)| b)
        .sum();
    let secs = (to - from) as f64 / 1000.0;
    bytes as f64 / secs / (f64::from(shards) * 1024.0 * 1024.0)
}

/// `n` partition keys, the same number on each of `shards` evenly split shards: with keys
/// drawn as they come (`key-0` .. `key-999`), MD5 put 51.7% of them on one of two shards, so
/// that shard held the whole run back and no producer could deliver more than 96.7% of the
/// budget. Balanced keys measure the producer, not the draw.
fn balanced_keys(shards: usize, n: usize) -> Vec<Arc<str>> {
    let ranges = even_split(shards);
    let per_shard = n / shards;
    let mut counts = vec![0; shards];
    let mut keys = Vec::with_capacity(n);
    for j in 0.. {
        if keys.len() == per_shard * shards {
            break;
        }
        let key = format!("key-{j}");
        let hash = HashKey::from_partition_key(&key);
        let shard = ranges
            .iter()
            .position(|(lo, hi)| *lo <= hash && hash <= *hi)
            .expect("the ranges cover the key space");
        if counts[shard] < per_shard {
            counts[shard] += 1;
            keys.push(key.into());
        }
    }
    keys
}
