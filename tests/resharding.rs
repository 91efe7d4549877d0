//! Resharding in the middle of a run, end to end: the producer through the real SDK into
//! ferrokinesis on 127.0.0.1, while the stream is split, merged and rescaled under it. A
//! consumer that filters by shard range (as the KCL does) must see every record, exactly where
//! its receipt says.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kinesis::types::ScalingType;
use kinesis_producer::aggregation::deaggregate_strict;
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::{HashKey, Producer, UserRecord};

async fn shard_ranges(
    kinesis: &LocalKinesis,
    stream: &str,
) -> HashMap<String, (HashKey, HashKey, bool)> {
    let out = kinesis
        .client()
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    out.shards
        .unwrap_or_default()
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
        resent += usize::from(
            receipt
                .attempts
                .iter()
                .any(|a| a.error.as_ref().is_some_and(|e| e.0 == "WrongShard")),
        );
        receipts.push((i, receipt));
    }
    producer.shutdown().await;

    // The KCL's view: user records inside the range of the shard they were read from.
    let ranges = shard_ranges(&kinesis, "reshard").await;
    let mut kept: HashMap<Vec<u8>, (String, String, u64)> = HashMap::new();
    let mut dropped = 0;
    for r in kinesis.read_all("reshard").await.unwrap() {
        let (start, end, _) = ranges[&r.shard_id];
        for u in deaggregate_strict(&r.partition_key, r.data.clone()).unwrap() {
            let key = HashKey::from_partition_key(&u.partition_key);
            if start <= key && key <= end {
                kept.insert(
                    u.data.to_vec(),
                    (
                        r.shard_id.clone(),
                        r.sequence_number.clone(),
                        u.sub_sequence_number,
                    ),
                );
            } else {
                dropped += 1;
            }
        }
    }
    for (i, receipt) in &receipts {
        let data = format!("record {i:>8}");
        let (shard, seq, sub) = kept
            .get(data.as_bytes())
            .unwrap_or_else(|| panic!("{data} is lost to a KCL consumer"));
        assert_eq!(
            (&**shard, &**seq, *sub),
            (
                &*receipt.shard_id,
                &*receipt.sequence_number,
                receipt.sub_sequence_number
            ),
            "{data}"
        );
    }
    eprintln!(
        "resharding: {} records, {resent} re-sent after landing outside their shard, {dropped} copies outside their shard's range (filtered by a KCL consumer), {} shards listed",
        receipts.len(),
        ranges.len()
    );
}
