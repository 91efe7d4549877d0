//! The engine against the in-memory Kinesis, on tokio's paused clock: exact and instant.
#![allow(clippy::disallowed_methods)] // the tests measure the paused clock (clippy.toml keeps the library's stages off the clock)

use std::collections::HashMap;
use std::time::Duration;

use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Config, HashKey, Producer, PutErrorKind, RecordError, UserRecord};
use tokio::time::Instant;

mod common;
use common::harness;
use harness::{first_error_code, read_back};

fn records(n: usize, keys: usize, size: usize) -> Vec<UserRecord> {
    (0..n)
        .map(|i| {
            let r = UserRecord::new(format!("key-{}", i % keys), format!("{i:0size$}")).unwrap();
            if i % 7 == 0 {
                r.with_explicit_hash_key(HashKey((i as u128) << 100))
            } else {
                r
            }
        })
        .collect()
}

/// Every user record stored in the sink, deaggregated, with the shard and sequence number that
/// carries it, keyed by data (unique in these tests).
fn stored(sink: &MemorySink, stream: &str) -> HashMap<Vec<u8>, (String, String, u64, String)> {
    let mut out = HashMap::new();
    for u in read_back(&sink.records(stream)) {
        let prev = out.insert(
            u.data.to_vec(),
            (
                u.shard_id,
                u.sequence_number,
                u.sub_sequence_number,
                u.partition_key,
            ),
        );
        assert!(prev.is_none(), "a record was stored twice");
    }
    out
}

#[tokio::test(start_paused = true)]
async fn partial_failures_are_resent_until_everything_is_put() {
    let sink = MemorySink::new().with_stream("s", 4);
    // Every third entry fails, whatever it is: retried entries fail again a third of the time.
    sink.set_entry_fault(harness::every_nth(
        3,
        "InternalFailure",
        "Internal service failure.",
    ));
    let config = Config::builder()
        .aggregation_max_size(4096)
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let sent = records(10_000, 500, 100);
    let futures: Vec<_> = sent.iter().map(|r| producer.send("s", r.clone())).collect();
    let mut retried = 0;
    for (f, r) in futures.into_iter().zip(&sent) {
        let receipt = f.await.unwrap();
        assert_eq!(receipt.stream.as_ref(), "s");
        retried += usize::from(receipt.attempts.len() > 1);
        assert!(receipt.attempts.last().unwrap().is_success());
        assert!(
            receipt.attempts[..receipt.attempts.len() - 1]
                .iter()
                .all(|a| a.error.as_ref().unwrap().code == "InternalFailure")
        );
        // The receipt says where the record is.
        let _ = r;
    }
    assert!(retried > 1000, "{retried} records needed a retry");
    let stored = stored(&sink, "s");
    assert_eq!(stored.len(), sent.len());
    // Only failed entries were sent again: no entry was put twice (checked in `stored`), and
    // no request exceeded the PutRecords limits.
    for (_, entries) in sink.requests() {
        assert!(entries.len() <= 500);
        assert!(entries.iter().map(|e| e.size()).sum::<usize>() <= 5 << 20);
    }
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn receipts_match_where_records_were_stored_and_routing_is_by_shard() {
    let sink = MemorySink::new().with_stream("s", 4);
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let sent = records(5_000, 300, 50);
    let futures: Vec<_> = sent.iter().map(|r| producer.send("s", r.clone())).collect();
    let mut receipts = Vec::new();
    for f in futures {
        receipts.push(f.await.unwrap());
    }
    let stored = stored(&sink, "s");
    let shards = kinesis_producer::shard_map::even_split(4);
    for (r, receipt) in sent.iter().zip(&receipts) {
        let (shard_id, seq, sub, pk) = &stored[&r.data().to_vec()];
        assert_eq!(
            (
                &*receipt.shard_id,
                &*receipt.sequence_number,
                receipt.sub_sequence_number
            ),
            (shard_id.as_str(), seq.as_str(), *sub)
        );
        assert_eq!(pk, r.partition_key());
        // Each record sits on the shard its own hash key belongs to.
        let idx = shards
            .iter()
            .position(|(s, e)| *s <= r.hash_key() && r.hash_key() <= *e)
            .unwrap();
        assert_eq!(*shard_id, format!("shardId-{idx:012}"));
    }
    // Aggregation is real: 5000 records of ~60 bytes in a handful of Kinesis records.
    assert!(
        sink.records("s").len() <= 5_000 / 50,
        "{} Kinesis records",
        sink.records("s").len()
    );
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lone_record_is_sent_at_record_max_buffered_time() {
    let sink = MemorySink::new().with_stream("s", 2);
    let config = Config::builder()
        .record_max_buffered_time(Duration::from_millis(250))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    // Let the shard map arrive first.
    producer
        .send("s", UserRecord::new("warm", "up").unwrap())
        .await
        .unwrap();
    let start = Instant::now();
    let receipt = producer
        .send("s", UserRecord::new("k", "alone").unwrap())
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(receipt.attempts.len(), 1);
    assert!(!receipt.aggregated);
}

#[tokio::test(start_paused = true)]
async fn flush_and_wait_resolves_everything_sent_before_it() {
    let sink = MemorySink::new().with_stream("s", 2);
    let config = Config::builder()
        .record_max_buffered_time(Duration::from_secs(3600))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let futures: Vec<_> = records(1000, 10, 20)
        .into_iter()
        .map(|r| producer.send("s", r))
        .collect();
    let start = Instant::now();
    producer.flush_and_wait().await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "flush did not wait for the buffer time"
    );
    for f in futures {
        // Already resolved: polling once is enough.
        assert!(
            tokio::time::timeout(Duration::ZERO, f)
                .await
                .unwrap()
                .is_ok()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_buffered_and_in_flight_records() {
    let sink = MemorySink::new().with_stream("s", 4);
    sink.set_latency(Duration::from_millis(300));
    let config = Config::builder()
        .record_max_buffered_time(Duration::from_secs(60))
        .max_connections(2)
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let sent = records(20_000, 1000, 100);
    let futures: Vec<_> = sent.iter().map(|r| producer.send("s", r.clone())).collect();
    tokio::time::sleep(Duration::from_millis(500)).await; // some calls are in flight now
    let clone = producer.clone();
    producer.shutdown().await;
    for f in futures {
        f.await.unwrap();
    }
    assert_eq!(stored(&sink, "s").len(), sent.len());
    assert!(sink.max_concurrent_calls() <= 2);
    let late = clone
        .send("s", UserRecord::new("k", "late").unwrap())
        .await
        .unwrap_err();
    assert_eq!(late.kind, PutErrorKind::Closed);
    assert_eq!(late.record.data().as_ref(), b"late");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_producer_still_resolves_every_future() {
    let sink = MemorySink::new().with_stream("s", 1);
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let futures: Vec<_> = records(100, 5, 10)
        .into_iter()
        .map(|r| producer.send("s", r))
        .collect();
    drop(producer);
    for f in futures {
        f.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn several_streams_through_one_producer() {
    let sink = MemorySink::new().with_stream("a", 2).with_stream("b", 3);
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let fa: Vec<_> = records(300, 30, 10)
        .into_iter()
        .map(|r| producer.send("a", r))
        .collect();
    let fb: Vec<_> = records(200, 30, 10)
        .into_iter()
        .map(|r| producer.send("b", r))
        .collect();
    for f in fa {
        assert_eq!(f.await.unwrap().stream.as_ref(), "a");
    }
    for f in fb {
        assert_eq!(f.await.unwrap().stream.as_ref(), "b");
    }
    assert_eq!(stored(&sink, "a").len(), 300);
    assert_eq!(stored(&sink, "b").len(), 200);
}

#[tokio::test(start_paused = true)]
async fn max_connections_bounds_calls_in_flight() {
    let sink = MemorySink::new().with_stream("s", 8);
    sink.set_latency(Duration::from_millis(50));
    let config = Config::builder()
        .max_connections(3)
        .aggregation_enabled(false)
        .collection_max_count(10)
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let futures: Vec<_> = records(2_000, 100, 10)
        .into_iter()
        .map(|r| producer.send("s", r))
        .collect();
    for f in futures {
        assert!(!f.await.unwrap().aggregated);
    }
    assert_eq!(sink.max_concurrent_calls(), 3);
    assert!(sink.requests().iter().all(|(_, e)| e.len() <= 10));
}

#[tokio::test(start_paused = true)]
async fn a_record_too_big_is_handed_back_and_others_go_through() {
    let sink = MemorySink::new().with_stream("s", 1);
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let ok = producer.send("s", UserRecord::new("k", "fine").unwrap());
    let big = producer.send("s", UserRecord::new("k", vec![0u8; 1 << 20]).unwrap());
    let err = big.await.unwrap_err();
    assert_eq!(
        err.kind,
        PutErrorKind::InvalidRecord(RecordError::RecordTooLarge {
            size: 1_048_577,
            data_len: 1_048_576,
            key_len: 1,
            limit: 1_048_576
        })
    );
    assert_eq!(err.record.data().len(), 1 << 20);
    assert!(err.to_string().contains("record is 1048577 bytes"), "{err}");
    ok.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn records_expire_at_record_ttl_with_their_attempts() {
    let (_sink, producer) = harness::failing_producer("always", Duration::from_secs(2));
    let start = Instant::now();
    let err = producer
        .send("s", UserRecord::new("k", "doomed").unwrap())
        .await
        .unwrap_err();
    assert!(start.elapsed() <= Duration::from_secs(2) + Duration::from_millis(100));
    assert!(
        matches!(&err.kind, PutErrorKind::Expired { ttl_ms: 2000, last_error } if last_error.to_string() == "InternalFailure: always")
    );
    assert!(err.attempts.len() >= 3, "{} attempts", err.attempts.len());
    assert!(err.attempts.iter().all(|a| !a.is_success()));
    assert_eq!(err.record.data().as_ref(), b"doomed");
}

#[tokio::test(start_paused = true)]
async fn user_record_timeout_in_millis_fails_records_sooner_than_record_ttl() {
    let sink = MemorySink::new().with_stream("s", 1);
    sink.set_entry_fault(|_| Some(("InternalFailure".into(), "always".into())));
    // The KPL's property: a timeout shorter than RecordTtl wins.
    let config = Config::builder()
        .set_property("UserRecordTimeoutInMillis", "1500")
        .unwrap()
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink);
    let start = Instant::now();
    let err = producer
        .send("s", UserRecord::new("k", "late").unwrap())
        .await
        .unwrap_err();
    assert!(
        start.elapsed() <= Duration::from_millis(1600),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(&err.kind, PutErrorKind::Expired { ttl_ms: 1500, .. }),
        "{err}"
    );
    assert_eq!(err.record.data().as_ref(), b"late");
}

#[tokio::test(start_paused = true)]
async fn a_record_in_a_call_past_its_user_record_timeout_gets_the_calls_answer() {
    // A call that takes 2 s (under RequestTimeout) for a record timed out at 500 ms: the
    // record is not reported failed while Kinesis may still store it; the call's answer counts.
    let sink = MemorySink::new().with_stream("s", 1);
    sink.set_latency(Duration::from_secs(2));
    let config = Config::builder()
        .user_record_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let receipt = producer
        .send("s", UserRecord::new("k", "slow").unwrap())
        .await
        .unwrap();
    assert_eq!(receipt.attempts.len(), 1);
    assert_eq!(
        read_back(&sink.records("s")).len(),
        1,
        "stored once, and reported put"
    );
}

#[tokio::test(start_paused = true)]
async fn whole_call_failures_and_timeouts_are_retried() {
    let sink = MemorySink::new().with_stream("s", 2);
    sink.fail_next_calls(3, "ServiceUnavailable", "try later");
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let futures: Vec<_> = records(100, 10, 10)
        .into_iter()
        .map(|r| producer.send("s", r))
        .collect();
    for f in futures {
        let receipt = f.await.unwrap();
        assert!(receipt.attempts.len() >= 2);
        assert_eq!(first_error_code(&receipt), "ServiceUnavailable");
    }
    // Slow answers past RequestTimeout count as failed attempts and are retried.
    sink.set_latency(Duration::from_secs(7));
    let slow = producer.send("s", UserRecord::new("k", "slow").unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    sink.set_latency(Duration::ZERO);
    let receipt = slow.await.unwrap();
    assert_eq!(first_error_code(&receipt), "RequestTimeout");
}

/// A slow first ListShards (1.5 s, past RecordMaxBufferedTime) costs latency, not PUT units:
/// the records wait for the map, then go out aggregated per shard, even with a flush asked for
/// meanwhile (a flush does not override the wait while ListShards has not failed).
#[tokio::test(start_paused = true)]
async fn records_before_a_slow_first_shard_map_wait_for_it_and_are_aggregated() {
    let sink = MemorySink::new().with_stream("s", 4);
    sink.set_list_shards_latency(Duration::from_millis(1500));
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let start = Instant::now();
    let futures: Vec<_> = records(20_000, 20_000, 10)
        .into_iter()
        .map(|r| producer.send("s", r))
        .collect();
    producer.flush();
    for f in futures {
        assert!(f.await.unwrap().aggregated);
    }
    assert!(start.elapsed() >= Duration::from_millis(1500));
    let entries: usize = sink.requests().iter().map(|(_, e)| e.len()).sum();
    // 20,000 records of ~20 B fill 4 shards' aggregates of 50 KiB: about 10 Kinesis records,
    // against 20,000 sent one by one.
    assert!(entries <= 40, "{entries} Kinesis records");
}

/// ListShards throttled at a fleet's cold start (LimitExceededException, retried each second):
/// the records wait for the map within their TTL instead of going out one by one.
#[tokio::test(start_paused = true)]
async fn a_throttled_list_shards_at_start_delays_records_without_unaggregating_them() {
    let sink = MemorySink::new().with_stream("s", 2);
    sink.fail_next_list_shards(3, "LimitExceededException", "Rate exceeded for stream s.");
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let futures: Vec<_> = records(5_000, 5_000, 10)
        .into_iter()
        .map(|r| producer.send("s", r))
        .collect();
    for f in futures {
        assert!(f.await.unwrap().aggregated);
    }
    assert_eq!(sink.list_shards_calls(), 4);
    let entries: usize = sink.requests().iter().map(|(_, e)| e.len()).sum();
    assert!(entries <= 20, "{entries} Kinesis records");
}

/// Where records cannot wait for a map (ListShards keeps failing: past half their TTL they go),
/// records that share a hash key still travel together: one aggregate per key, each routed by
/// Kinesis by that key, so every consumer, the KCL included, reads them.
#[tokio::test(start_paused = true)]
async fn without_any_shard_map_records_of_one_hash_key_are_aggregated_together() {
    let sink = MemorySink::new().with_stream("s", 3);
    sink.fail_next_list_shards(1_000, "InternalFailure", "Internal service failure.");
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let start = Instant::now();
    let futures: Vec<_> = (0..3_000)
        .map(|i| {
            producer.send(
                "s",
                UserRecord::new(format!("k{}", i % 30), format!("{i}")).unwrap(),
            )
        })
        .collect();
    for f in futures {
        let receipt = f.await.unwrap();
        assert!(receipt.aggregated);
        assert_eq!(receipt.attempts.len(), 1);
    }
    // Half of the default RecordTtl (30 s) spent waiting for the map.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(15) && waited < Duration::from_millis(15_100),
        "{waited:?}"
    );
    let entries: Vec<_> = sink.requests().into_iter().flat_map(|(_, e)| e).collect();
    assert_eq!(entries.len(), 30, "one aggregate per key");
    // Stored where each key's hash sends it, readable by a KCL consumer (every record of an
    // aggregate inside the shard's range).
    let ranges = harness::ranges(&sink, "s");
    for r in sink.records("s") {
        let (start, end) = ranges[&r.shard_id];
        for u in harness::user_records(&r) {
            let key = HashKey::from_partition_key(&u.partition_key);
            assert!(start <= key && key <= end);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_aggregate_goes_out_without_waiting_for_its_deadline() {
    let sink = MemorySink::new().with_stream("s", 1);
    let config = Config::builder()
        .aggregation_max_count(3)
        .record_max_buffered_time(Duration::from_secs(3600))
        .collection_max_count(1)
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let start = Instant::now();
    let futures: Vec<_> = records(3, 3, 10)
        .into_iter()
        .map(|r| producer.send("s", r))
        .collect();
    for f in futures {
        assert!(f.await.unwrap().aggregated);
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "waited {:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn the_shard_map_is_refreshed_periodically_and_on_demand() {
    let sink = MemorySink::new().with_stream("s", 2);
    let config = Config::builder()
        .shard_map_refresh_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    producer
        .send("s", UserRecord::new("k", "v").unwrap())
        .await
        .unwrap();
    assert_eq!(sink.list_shards_calls(), 1);
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(sink.list_shards_calls(), 3, "every 10 s");
    producer.refresh_shard_map("s");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(sink.list_shards_calls(), 4, "on demand");
    producer.refresh_shard_map("never-used"); // ignored
}

/// Plain threads, no runtime anywhere: the producer runs on a runtime of its own, sends come
/// from several threads, and the futures are waited on with a minimal executor.
#[test]
fn works_from_plain_threads_without_a_runtime() {
    let sink = MemorySink::new().with_stream("s", 4);
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let producer = producer.clone();
            std::thread::spawn(move || {
                (0..2_500)
                    .map(|i| {
                        let r = UserRecord::new(
                            format!("key-{}", i % 50),
                            format!("thread {t} record {i}"),
                        )
                        .unwrap();
                        producer.send("s", r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let futures: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    producer.flush();
    harness::block_on_all(futures);
    assert_eq!(stored(&sink, "s").len(), 10_000);
}

/// Aggregates of several shards due within a fifth of RecordMaxBufferedTime of each other leave
/// together, in one PutRecords call; one due later than that waits for its own deadline.
#[tokio::test(start_paused = true)]
async fn aggregates_due_close_together_leave_in_one_call() {
    let sink = MemorySink::new().with_stream("s", 4);
    let shards = sink.shards("s");
    let config = Config::builder()
        .record_max_buffered_time(Duration::from_millis(100))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let start = Instant::now();
    let mut futures = Vec::new();
    // Shards 0-2 get a record 5 ms apart: due at 100, 105 and 110 ms, within 20 ms of the first.
    for shard in &shards[..3] {
        let r = UserRecord::new("k", "v")
            .unwrap()
            .with_explicit_hash_key(shard.start);
        futures.push(producer.send("s", r));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Shard 3's record comes 40 ms after the first: due at 140 ms, on its own.
    tokio::time::sleep(Duration::from_millis(25)).await;
    let late = UserRecord::new("k", "v")
        .unwrap()
        .with_explicit_hash_key(shards[3].start);
    let late = producer.send("s", late);
    for f in futures {
        f.await.unwrap();
    }
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "the first deadline"
    );
    late.await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(140),
        "its own deadline"
    );
    let calls: Vec<usize> = sink.requests().iter().map(|(_, e)| e.len()).collect();
    assert_eq!(calls, vec![3, 1]);
}
