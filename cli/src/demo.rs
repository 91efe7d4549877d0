//! `kpl demo`: the producer end to end on an embedded local Kinesis, checked, with what
//! aggregation saves.
//!
//! Starts ferrokinesis in-process on 127.0.0.1, creates a stream, sends a synthetic workload
//! through the producer and the real AWS SDK client, reads every shard back with GetRecords,
//! deaggregates, checks every record and reports the packing. No AWS account needed.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kinesis_producer::aggregation::{deaggregate_strict, put_payload_units};
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::{HashKey, Producer, UserRecord};

pub const EXAMPLES: &str = "\
Examples:
  kpl demo
  kpl demo --records 200000 --data-size 500 --keys 10 --shards 8
  kpl demo --no-aggregation --records 20000";

#[derive(clap::Args)]
pub struct Args {
    /// User records to send.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Bytes of data per record.
    #[arg(long, default_value_t = 100)]
    data_size: usize,
    /// Distinct partition keys (16 characters each).
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Shards in the demo stream.
    #[arg(long, default_value_t = 4)]
    shards: i32,
    /// AggregationMaxSize in bytes.
    #[arg(long, default_value_t = kinesis_producer::aggregation::DEFAULT_AGGREGATION_MAX_SIZE)]
    max_size: usize,
    /// Send every record on its own (AggregationEnabled = false), to compare.
    #[arg(long)]
    no_aggregation: bool,
}

/// A cheap deterministic generator: the demo gives the same records on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn workload(args: &Args) -> Result<Vec<UserRecord>, kinesis_producer::RecordError> {
    let keys = args.keys.max(1);
    let mut rng = SplitMix(42);
    (0..args.records)
        .map(|i| {
            // The index leads the data, so every record can be recognised when read back.
            let mut data = (i as u64).to_be_bytes().to_vec();
            data.extend((0..args.data_size.saturating_sub(8)).map(|_| rng.next() as u8));
            data.truncate(args.data_size.max(8));
            let r = UserRecord::new(format!("partition-{:06}", rng.next() as usize % keys), data)?;
            Ok(if i % 10 == 0 {
                r.with_explicit_hash_key(HashKey(u128::from(rng.next()) << 64))
            } else {
                r
            })
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(demo(args))
}

async fn demo(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let records = workload(&args)?;
    let kinesis = LocalKinesis::start(LocalOptions::default()).await?;
    kinesis.create_stream("demo", args.shards).await?;
    println!("kpl demo: the producer end to end, through the AWS SDK, into a local Kinesis");
    println!(
        "  local Kinesis (ferrokinesis, in this process) at {}, stream \"demo\" with {} shards",
        kinesis.endpoint(),
        args.shards
    );
    println!(
        "  workload: {} user records of {} bytes, {} distinct 16-character partition keys, every 10th with an explicit hash key",
        records.len(),
        args.data_size,
        args.keys
    );

    let config = kinesis
        .config()
        .aggregation_enabled(!args.no_aggregation)
        .aggregation_max_size(args.max_size as u64)
        .build()
        .map_err(crate::flag_error)?;
    let producer = Producer::new(config.clone()).await;
    let start = Instant::now();
    let futures: Vec<_> = records
        .iter()
        .map(|r| producer.send("demo", r.clone()))
        .collect();
    let mut receipts = Vec::with_capacity(futures.len());
    let mut failed = 0;
    for f in futures {
        match f.await {
            Ok(receipt) => receipts.push(Some(receipt)),
            Err(e) => {
                failed += 1;
                if failed <= 5 {
                    eprintln!("  failed: {e}");
                }
                receipts.push(None);
            }
        }
    }
    let elapsed = start.elapsed();
    producer.shutdown().await;

    // Read every shard back, as a consumer would, and check each record.
    let read = kinesis.read_all("demo").await?;
    let mut by_index: HashMap<u64, (String, String, u64, String, Option<String>)> = HashMap::new();
    for k in &read {
        for u in deaggregate_strict(&k.partition_key, k.data.clone())? {
            let index = u64::from_be_bytes(u.data[..8].try_into()?);
            by_index.insert(
                index,
                (
                    k.shard_id.clone(),
                    k.sequence_number.clone(),
                    u.sub_sequence_number,
                    u.partition_key,
                    u.explicit_hash_key,
                ),
            );
        }
    }
    let mut mismatches = 0;
    for (i, (r, receipt)) in records.iter().zip(&receipts).enumerate() {
        let Some(receipt) = receipt else { continue };
        let ok = by_index
            .get(&(i as u64))
            .is_some_and(|(shard, seq, sub, pk, ehk)| {
                pk == r.partition_key()
                    && **shard == *receipt.shard_id
                    && **seq == *receipt.sequence_number
                    && *sub == receipt.sub_sequence_number
                    && (!receipt.aggregated || *ehk == r.explicit_hash_key().map(|k| k.to_string()))
            });
        mismatches += usize::from(!ok);
    }

    let user_bytes: usize = records.iter().map(UserRecord::size).sum();
    let sent_bytes: usize = read
        .iter()
        .map(|k| k.data.len() + k.partition_key.len())
        .sum();
    let plain_units: u64 = records.iter().map(|r| put_payload_units(r.size())).sum();
    let sent_units: u64 = read
        .iter()
        .map(|k| put_payload_units(k.data.len() + k.partition_key.len()))
        .sum();
    let mut latencies: Vec<Duration> = receipts
        .iter()
        .flatten()
        .filter_map(|r| r.attempts.last().map(|a| a.delay + a.duration))
        .collect();
    latencies.sort();
    let retried = receipts
        .iter()
        .flatten()
        .filter(|r| r.attempts.count() > 1)
        .count();

    println!(
        "  sent: {} records put, {failed} failed, in {:.2} s ({:.0} user records/s), {retried} needed a retry",
        receipts.iter().flatten().count(),
        elapsed.as_secs_f64(),
        records.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  packing: {} Kinesis records ({:.1} user records each); {} bytes of user data and keys -> {} bytes sent",
        read.len(),
        records.len() as f64 / read.len().max(1) as f64,
        user_bytes,
        sent_bytes
    );
    println!(
        "  PUT payload units: {plain_units} if sent one by one -> {sent_units} used ({:.1}% fewer)",
        (1.0 - sent_units as f64 / plain_units.max(1) as f64) * 100.0
    );
    println!(
        "  latency from send to receipt: p50 {:?}, p99 {:?}, max {:?} (RecordMaxBufferedTime {:?})",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        config.record_max_buffered_time()
    );
    if failed == 0 && mismatches == 0 && by_index.len() == records.len() {
        println!(
            "  read back: all {} user records, each exactly once, on the shard and at the sequence number its receipt gave",
            records.len()
        );
        println!("demo passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "  read back: {} of {} user records; {mismatches} differ from their receipts",
            by_index.len(),
            records.len()
        );
        println!("demo FAILED");
        Ok(ExitCode::FAILURE)
    }
}
