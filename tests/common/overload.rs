//! Offers a stream twice its write capacity on ferrokinesis with per-shard limits enforced, and
//! reports what was delivered. Shared by `tests/throttling.rs` (short, checks that nothing fails
//! and everything reads back) and `benches/throttling.rs` (30 s, the figures).

use std::time::{Duration, Instant};

use kinesis_producer::aggregation::deaggregate_strict;
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::{Producer, UserRecord};

/// What an overload run delivered.
#[derive(Debug)]
#[allow(dead_code)] // each user reads its own fields
pub struct Overload {
    pub offered_bytes: u64,
    pub records: usize,
    pub failed: usize,
    /// Bytes of data put per second over the run, as a share of the shards' byte budget.
    pub delivered_share: f64,
    pub delivered_bytes_per_sec: f64,
    pub retried: usize,
    pub read_back: usize,
    pub kinesis_records: usize,
}

/// `shards` shards; records of `size` bytes offered at `factor` x the byte budget for `secs` s.
pub async fn run(shards: i32, size: usize, factor: f64, secs: u64) -> Overload {
    let kinesis = LocalKinesis::start(LocalOptions {
        enforce_limits: true,
        port: 0,
    })
    .await
    .unwrap();
    kinesis.create_stream("overload", shards).await.unwrap();
    let producer = Producer::new(
        kinesis
            .config()
            .record_ttl(Duration::from_secs(120))
            .build()
            .unwrap(),
    )
    .await;
    let budget = shards as f64 * 1024.0 * 1024.0; // bytes per second
    // `factor` percent of the byte budget, in records per 10 ms tick.
    let per_tick = (budget * factor / 100.0 / size as f64 / 100.0).round() as usize;
    let start = Instant::now();
    let mut futures = Vec::new();
    let mut offered_bytes = 0u64;
    let mut tick = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..per_tick {
            let i = futures.len();
            let mut data = (i as u64).to_be_bytes().to_vec();
            data.resize(size, (i % 251) as u8);
            let r = UserRecord::new(format!("key-{}", i % 1000), data).unwrap();
            offered_bytes += size as u64;
            futures.push(producer.send_wait("overload", r).await);
        }
        tick += 1;
        tokio::time::sleep_until((start + Duration::from_millis(10 * tick)).into()).await;
    }
    let mut failed = 0;
    let mut retried = 0;
    let mut delivered = 0u64;
    let records = futures.len();
    for f in futures {
        match f.await {
            Ok(receipt) => {
                retried += usize::from(receipt.attempts.len() > 1);
                delivered += size as u64;
            }
            Err(e) => {
                failed += 1;
                if failed < 5 {
                    eprintln!("failed: {e}");
                }
            }
        }
    }
    let drained_for = start.elapsed();
    producer.shutdown().await;
    let read = kinesis.read_all("overload").await.unwrap();
    let read_back: usize = read
        .iter()
        .map(|r| {
            deaggregate_strict(&r.partition_key, r.data.clone())
                .unwrap()
                .len()
        })
        .sum();
    // Twice the budget was offered, so the shards never lacked work until the end: what the
    // producer delivered over the whole run, against the budget over the whole run, is how
    // well it kept them busy.
    let delivered_bytes_per_sec = delivered as f64 / drained_for.as_secs_f64();
    Overload {
        offered_bytes,
        records,
        failed,
        delivered_share: delivered_bytes_per_sec / budget,
        delivered_bytes_per_sec,
        retried,
        read_back,
        kinesis_records: read.len(),
    }
}
