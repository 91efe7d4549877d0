//! Resharding in the middle of a run, end to end: the producer through the real SDK into
//! ferrokinesis on 127.0.0.1, while the stream is split, merged and rescaled under it. A
//! KCL consumer (modelled rule for rule in `tests/common/kcl.rs`: an aggregate holding any record
//! outside the shard's range is dropped whole) must see every record, exactly where its receipt
//! says.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kinesis::types::ScalingType;
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::{HashKey, Producer, UserRecord};

mod common;
use common::faultmix;
use common::harness::{self, kcl, retried_after};

async fn shard_ranges(
    kinesis: &LocalKinesis,
    stream: &str,
) -> HashMap<String, (HashKey, HashKey, bool)> {
    listing(kinesis, stream)
        .await
        .into_iter()
        .map(|s| {
            let r = s.hash_key_range.unwrap();
            let closed = s
                .sequence_number_range
                .is_some_and(|q| q.ending_sequence_number.is_some());
            let range = (
                HashKey(r.starting_hash_key.parse().unwrap()),
                HashKey(r.ending_hash_key.parse().unwrap()),
                closed,
            );
            (s.shard_id, range)
        })
        .collect()
}

/// Every shard of `stream`, as ListShards gives it.
async fn listing(kinesis: &LocalKinesis, stream: &str) -> Vec<aws_sdk_kinesis::types::Shard> {
    let out = kinesis
        .client()
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    out.shards.unwrap_or_default()
}

async fn open_shards(kinesis: &LocalKinesis, stream: &str) -> Vec<(String, HashKey, HashKey)> {
    let mut open: Vec<_> = shard_ranges(kinesis, stream)
        .await
        .into_iter()
        .filter(|(_, r)| !r.2)
        .map(|(id, r)| (id, r.0, r.1))
        .collect();
    open.sort_by_key(|s| s.1);
    open
}

async fn wait_active(kinesis: &LocalKinesis, stream: &str) {
    for _ in 0..200 {
        let out = kinesis
            .client()
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        if out
            .stream_description_summary()
            .is_some_and(|s| s.stream_status.as_str() == "ACTIVE")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("stream {stream} did not become active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_merge_and_rescale_mid_run_lose_nothing_for_a_kcl_consumer() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("reshard", 4).await.unwrap();
    let config = kinesis
        .config()
        .record_max_buffered_time(Duration::from_millis(300))
        .build()
        .unwrap();
    let producer = Producer::new(config).await;
    let mut futures = Vec::new();
    let send = |producer: &Producer, from: usize, n: usize, futures: &mut Vec<_>| {
        for i in from..from + n {
            let r = UserRecord::new(format!("key-{}", i % 700), format!("record {i:>8}")).unwrap();
            futures.push((i, producer.send("reshard", r)));
        }
    };
    send(&producer, 0, 5_000, &mut futures);
    // Split the first shard at its middle while those aggregates are still filling.
    let open = open_shards(&kinesis, "reshard").await;
    let (first, start, end) = open[0].clone();
    let middle = start.0 + (end.0 - start.0) / 2;
    kinesis
        .client()
        .split_shard()
        .stream_name("reshard")
        .shard_to_split(&first)
        .new_starting_hash_key(middle.to_string())
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, "reshard").await;
    send(&producer, 5_000, 5_000, &mut futures);
    // Merge the last two shards (adjacent ranges).
    let open = open_shards(&kinesis, "reshard").await;
    let (a, b) = (
        open[open.len() - 2].0.clone(),
        open[open.len() - 1].0.clone(),
    );
    kinesis
        .client()
        .merge_shards()
        .stream_name("reshard")
        .shard_to_merge(&a)
        .adjacent_shard_to_merge(&b)
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, "reshard").await;
    send(&producer, 10_000, 5_000, &mut futures);
    // Rescale to 6 evenly split shards.
    kinesis
        .client()
        .update_shard_count()
        .stream_name("reshard")
        .target_shard_count(6)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, "reshard").await;
    send(&producer, 15_000, 5_000, &mut futures);

    let mut receipts = Vec::new();
    let mut resent = 0;
    for (i, f) in futures {
        let receipt = f.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
        resent += usize::from(retried_after(&receipt, "WrongShard"));
        receipts.push((i, receipt));
    }
    producer.shutdown().await;

    // The KCL's view (tests/common/kcl.rs: a whole aggregate is dropped when any of its
    // records is outside the range of the shard it was read from; plain records are kept).
    let ranges = shard_ranges(&kinesis, "reshard").await;
    let kcl_ranges: HashMap<String, (HashKey, HashKey)> = ranges
        .iter()
        .map(|(id, &(start, end, _))| (id.clone(), (start, end)))
        .collect();
    let mut kept: HashMap<Vec<u8>, (String, String, u64)> = HashMap::new();
    // A plain deaggregator's view (aws-kinesis-agg, Lambda helpers): every copy.
    let mut copies: HashMap<Vec<u8>, usize> = HashMap::new();
    let (mut dropped_aggregates, mut dropped_records) = (0, 0);
    for r in kinesis.read_all("reshard").await.unwrap() {
        let all = harness::user_records(&r);
        for u in &all {
            *copies.entry(u.data.to_vec()).or_default() += 1;
        }
        let seen = harness::kcl_records(&r, &kcl_ranges);
        if seen.len() < all.len() {
            dropped_aggregates += 1;
            dropped_records += all.len();
        }
        for u in seen {
            kept.insert(
                u.data.to_vec(),
                (r.shard_id.clone(), u.sequence_number, u.sub_sequence_number),
            );
        }
    }
    // Every Ok receipt's record must be where the receipt says, as the KCL reads it.
    let (mut lost, mut misplaced) = (Vec::new(), Vec::new());
    for (i, receipt) in &receipts {
        let data = format!("record {i:>8}");
        match kept.get(data.as_bytes()) {
            None => lost.push(*i),
            Some((shard, seq, sub)) => {
                if (&**shard, &**seq, *sub)
                    != (
                        &*receipt.shard_id,
                        &*receipt.sequence_number,
                        receipt.sub_sequence_number,
                    )
                {
                    misplaced.push(*i);
                }
            }
        }
    }
    let duplicated = copies.values().filter(|&&n| n > 1).count();
    eprintln!(
        "resharding: {} records, {resent} re-sent after landing in an aggregate that straddled \
         shards, {dropped_aggregates} aggregates ({dropped_records} user records) dropped by a \
         KCL consumer, {duplicated} records seen more than once by a plain deaggregator, {} \
         lost to a KCL consumer, {} not where their receipt says, {} shards listed",
        receipts.len(),
        lost.len(),
        misplaced.len(),
        ranges.len()
    );
    assert!(lost.is_empty(), "records lost to a KCL consumer: {lost:?}");
    assert!(
        misplaced.is_empty(),
        "not where the receipt says: {misplaced:?}"
    );
}

/// Each shard's parents (ParentShardId, and AdjacentParentShardId for a merge), as the KCL
/// reads them from ListShards to process parents before children.
async fn lineage(kinesis: &LocalKinesis, stream: &str) -> HashMap<String, Vec<String>> {
    listing(kinesis, stream)
        .await
        .into_iter()
        .map(|s| {
            let parents = [s.parent_shard_id, s.adjacent_parent_shard_id]
                .into_iter()
                .flatten()
                .collect();
            (s.shard_id, parents)
        })
        .collect()
}

/// Per-key ordering end to end, as the issue that found it broken ran it: `PerKeyOrdering`,
/// 8,000 records over 40 keys at about 2,000 a second into a 2-shard stream behind a fault layer
/// (10% of entries and 3% of calls throttled, whatever our rate), a shard split twice and two
/// merged during the run. Read as the KCL reads it (`harness::kcl_order_by_key`: parents wholly
/// before children, by sequence and sub-sequence number within a shard, a straddling aggregate
/// dropped whole), each key's records come in the order sent, and each where its receipt says.
/// On three engine cores, so that the split shards' ranges cross the cores' cuts: a shard
/// written by two cores, each key staying on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_for_a_kcl_consumer_through_splits_and_a_merge() {
    let faults = std::sync::Arc::new(faultmix::Injected::default());
    let f = std::sync::Arc::clone(&faults);
    let mix = faultmix::Mix {
        throttled_calls: 0.03,
        errors_500: 0.0,
        dropped: 0.0,
        throttled_entries: 0.10,
    };
    let kinesis = LocalKinesis::start_with(LocalOptions::default(), move |app| {
        faultmix::layer(app, f, mix)
    })
    .await
    .unwrap();
    kinesis.create_stream("ordered", 2).await.unwrap();
    let config = kinesis
        .config()
        .per_key_ordering(true)
        .record_max_buffered_time(Duration::from_millis(50))
        .engine_cores(3)
        .build()
        .unwrap();
    let producer = Producer::new(config).await;
    let mut futures = Vec::new();
    for i in 0..8_000usize {
        let r = UserRecord::new(format!("key-{}", i % 40), i.to_string()).unwrap();
        futures.push(producer.send("ordered", r));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Split the widest open shard at its middle, twice; then merge two neighbours.
        if i == 2_000 || i == 4_000 {
            let open = open_shards(&kinesis, "ordered").await;
            let (id, start, end) = open
                .iter()
                .max_by_key(|(_, s, e)| e.0 - s.0)
                .unwrap()
                .clone();
            kinesis
                .client()
                .split_shard()
                .stream_name("ordered")
                .shard_to_split(&id)
                .new_starting_hash_key((start.0 + (end.0 - start.0) / 2).to_string())
                .send()
                .await
                .unwrap();
            wait_active(&kinesis, "ordered").await;
        }
        if i == 6_000 {
            let open = open_shards(&kinesis, "ordered").await;
            kinesis
                .client()
                .merge_shards()
                .stream_name("ordered")
                .shard_to_merge(&open[0].0)
                .adjacent_shard_to_merge(&open[1].0)
                .send()
                .await
                .unwrap();
            wait_active(&kinesis, "ordered").await;
        }
    }
    let mut receipts = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        let Ok(outcome) = tokio::time::timeout(Duration::from_secs(120), f).await else {
            panic!("record {i} never resolved");
        };
        let receipt = outcome.unwrap_or_else(|e| panic!("record {i}: {e}"));
        receipts.push(receipt);
    }
    producer.shutdown().await;
    let stored = kinesis.read_all("ordered").await.unwrap();
    let ranges: HashMap<String, (HashKey, HashKey)> = shard_ranges(&kinesis, "ordered")
        .await
        .into_iter()
        .map(|(id, (start, end, _))| (id, (start, end)))
        .collect();
    let parents = lineage(&kinesis, "ordered").await;
    assert_eq!(parents.values().filter(|p| !p.is_empty()).count(), 5);
    let kept = harness::kcl_view(&stored, &ranges);
    for (i, receipt) in receipts.iter().enumerate() {
        let (shard, seq, sub) = kept
            .get(i.to_string().as_bytes())
            .unwrap_or_else(|| panic!("record {i} is lost to a KCL consumer"));
        assert_eq!(
            (&**shard, &**seq, *sub),
            (
                &*receipt.shard_id,
                &*receipt.sequence_number,
                receipt.sub_sequence_number
            ),
            "record {i}"
        );
    }
    let order = harness::kcl_order_by_key(&stored, &ranges, &parents);
    let out_of_order = harness::keys_out_of_order(&order);
    let throttled = faults
        .throttled_entries
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "ordered resharding: {} keys read, {throttled} entries throttled, {} keys out of order",
        order.len(),
        out_of_order.len()
    );
    assert!(throttled > 0);
    assert!(out_of_order.is_empty(), "out of order: {out_of_order:?}");
}

/// The KCL model itself, on aggregates built by the encoder.
#[test]
fn the_kcl_model_drops_a_whole_aggregate_with_any_record_outside_the_range() {
    use kinesis_producer::aggregation::encode;
    let low = UserRecord::new("a", "low")
        .unwrap()
        .with_explicit_hash_key(HashKey(10));
    let high = UserRecord::new("b", "high")
        .unwrap()
        .with_explicit_hash_key(HashKey(1000));
    let both = encode(&[low.clone(), high.clone()]).unwrap();
    assert!(both.aggregated);
    let (start, end) = (HashKey(0), HashKey(100));
    // One record out of range: nothing of the aggregate reaches the processor.
    assert!(kcl::deaggregate("a", &both.data, "1", start, end).is_empty());
    // Every record in range: all of them, with their sub-sequence numbers.
    let wide = kcl::deaggregate("a", &both.data, "1", start, HashKey(u128::MAX));
    assert_eq!(
        wide.iter()
            .map(|r| (&*r.data, r.sub_sequence_number, r.aggregated))
            .collect::<Vec<_>>(),
        [(&b"low"[..], 0, true), (&b"high"[..], 1, true)]
    );
    // A plain record is never filtered, whatever its key.
    let plain = encode(std::slice::from_ref(&high)).unwrap();
    assert!(!plain.aggregated);
    let seen = kcl::deaggregate("b", &plain.data, "2", start, end);
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].aggregated);
    // A damaged checksum makes the aggregate one plain record.
    let mut bad = both.data.to_vec();
    *bad.last_mut().unwrap() ^= 1;
    let seen = kcl::deaggregate("a", &bad.into(), "3", start, end);
    assert_eq!((seen.len(), seen[0].aggregated), (1, false));
}
