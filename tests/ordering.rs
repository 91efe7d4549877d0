//! Per-key ordering across resharding, read as a KCL consumer reads it: with `PerKeyOrdering`,
//! splits and merges at random points of a run, throttled entries, failed calls and calls that
//! finish out of order, each key's records must reach a KCL consumer in the order they were sent
//! (`harness::kcl_order_by_key`: a parent shard wholly before its children, within a shard by
//! sequence and sub-sequence number, an aggregate dropped whole when a record of it is outside
//! the shard's range), and every record `Ok` must be where its receipt says.
//!
//! Deterministic: the in-memory Kinesis, tokio's paused clock, faults and resharding drawn from
//! a seeded generator (`KPL_ORDER_SEEDS=n` runs more seeds).

use std::collections::HashMap;
use std::time::Duration;

use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Config, Producer};

mod common;
use common::harness;
use harness::{kcl_order_by_key, kcl_view, keys_out_of_order, ranges, record, reshard_at_random};

const STREAM: &str = "s";
const KEYS: usize = 40;

struct Run {
    records: usize,
    retried: usize,
    out_of_order: Vec<String>,
}

async fn run(seed: u64, records: usize) -> Run {
    let mut rng = fastrand::Rng::with_seed(seed);
    let sink = MemorySink::new().with_stream(STREAM, 2);
    sink.set_latency(Duration::from_millis(5));
    sink.set_latency_spread(Duration::from_millis(20), seed);
    // Throttling that does not depend on our rate: 10% of entries, whatever they hold.
    let mut faults = fastrand::Rng::with_seed(seed ^ 0x5eed);
    sink.set_entry_fault(move |_| {
        (faults.u8(..) < 26).then(|| {
            (
                "ProvisionedThroughputExceededException".into(),
                "Rate exceeded for shard".into(),
            )
        })
    });
    let config = Config::builder()
        .per_key_ordering(true)
        .aggregation_max_count(20)
        .record_max_buffered_time(Duration::from_millis(50))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let reshard_at: Vec<usize> = (0..4).map(|_| rng.usize(1..records / 50)).collect();
    let mut futures = Vec::with_capacity(records);
    for n in 0..records {
        futures.push(producer.send(STREAM, record(&format!("key-{}", n % KEYS), &n.to_string())));
        if n % 50 == 49 {
            let step = n / 50;
            for _ in reshard_at.iter().filter(|&&s| s == step) {
                reshard_at_random(&sink, STREAM, &mut rng);
            }
            // 3% of calls fail as a whole.
            if rng.u8(..100) < 3 {
                sink.fail_next_calls(1, "InternalFailure", "We encountered an internal error.");
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(5..40))).await;
        }
    }
    let mut receipts = Vec::with_capacity(records);
    let mut retried = 0;
    for (n, f) in futures.into_iter().enumerate() {
        let Ok(outcome) = tokio::time::timeout(Duration::from_secs(600), f).await else {
            panic!("seed {seed}: record {n} never resolved");
        };
        let receipt = outcome.unwrap_or_else(|e| panic!("seed {seed}: record {n}: {e}"));
        retried += usize::from(receipt.attempts.len() > 1);
        receipts.push(receipt);
    }
    producer.shutdown().await;

    let stored = sink.records(STREAM);
    let ranges = ranges(&sink, STREAM);
    // Every record Ok is where its receipt says, as the KCL reads it.
    let kept = kcl_view(&stored, &ranges);
    for (n, receipt) in receipts.iter().enumerate() {
        let (shard, seq, sub) = kept
            .get(n.to_string().as_bytes())
            .unwrap_or_else(|| panic!("seed {seed}: record {n} is lost to a KCL consumer"));
        assert_eq!(
            (&**shard, &**seq, *sub),
            (
                &*receipt.shard_id,
                &*receipt.sequence_number,
                receipt.sub_sequence_number
            ),
            "seed {seed}: record {n} is not where its receipt says"
        );
    }
    // Each key's records in the order sent (a record delivered twice may repeat in place: at
    // least once allows a copy, not a newer record before an older one).
    let order = kcl_order_by_key(&stored, &ranges, &sink.parents(STREAM));
    let out_of_order = keys_out_of_order(&order);
    Run {
        records,
        retried,
        out_of_order,
    }
}

#[tokio::test(start_paused = true)]
async fn per_key_order_holds_for_a_kcl_consumer_across_splits_and_merges() {
    let seeds: u64 = std::env::var("KPL_ORDER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut failures = HashMap::new();
    let (mut records, mut retried) = (0, 0);
    for seed in 0..seeds {
        let r = run(seed, 3_000).await;
        records += r.records;
        retried += r.retried;
        if !r.out_of_order.is_empty() {
            failures.insert(seed, r.out_of_order);
        }
    }
    eprintln!(
        "{seeds} seeds, {records} records, {retried} retried; keys out of order: {}",
        failures.values().map(Vec::len).sum::<usize>()
    );
    assert!(retried > 0, "the faults must make records retry");
    let mut seeds: Vec<_> = failures.into_iter().collect();
    seeds.sort();
    assert!(
        seeds.is_empty(),
        "records of a key reached a KCL consumer after newer ones: {seeds:?}"
    );
}
