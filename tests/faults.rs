//! Delivery under faults, deterministic: the in-memory Kinesis scripts the faults, tokio's paused
//! clock keeps time.
// Faults (and names) drawn from the global generator on purpose: not shaped by the producer.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kinesis_producer::aggregation::deaggregate_strict;
use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Buffered, Config, Producer, PutErrorKind, UserRecord};
use tokio::time::Instant;

mod common;
use common::harness;
use harness::{first_error_code, record, retried_after, stored_count};

#[tokio::test(start_paused = true)]
async fn errors_that_cannot_heal_fail_at_once_and_others_are_put() {
    let sink = MemorySink::new().with_stream("s", 2);
    // Every Kinesis record whose first user record's key starts with "bad" is refused.
    sink.set_entry_fault(|e| {
        let users = deaggregate_strict(&e.partition_key, e.data.clone()).unwrap();
        users[0].partition_key.starts_with("bad").then(|| {
            (
                "KMSAccessDeniedException".into(),
                "The ciphertext refers to a key you cannot use.".into(),
            )
        })
    });
    let config = Config::builder()
        .aggregation_enabled(false)
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let start = Instant::now();
    let bad = producer.send("s", record("bad-1", "refused"));
    let good = producer.send("s", record("good-1", "fine"));
    let err = bad.await.unwrap_err();
    assert_eq!(
        err.kind,
        PutErrorKind::Rejected {
            code: "KMSAccessDeniedException".into(),
            message: "The ciphertext refers to a key you cannot use.".into()
        }
    );
    assert_eq!(err.attempts.len(), 1, "never retried");
    assert_eq!(err.record.partition_key(), "bad-1");
    assert!(
        err.to_string()
            .contains("refused by Kinesis, not retried: KMSAccessDeniedException"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    good.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unknown_stream_fails_fast_and_other_streams_keep_working() {
    let sink = MemorySink::new().with_stream("real", 2);
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let start = Instant::now();
    let missing: Vec<_> = (0..10)
        .map(|i| producer.send("missing", record("k", &format!("{i}"))))
        .collect();
    let real: Vec<_> = (0..10)
        .map(|i| producer.send("real", record("k", &format!("{i}"))))
        .collect();
    for f in missing {
        let err = f.await.unwrap_err();
        assert!(
            matches!(&err.kind, PutErrorKind::Rejected { code, .. } if code == "ResourceNotFoundException"),
            "{err}"
        );
        assert!(
            err.to_string().contains("Stream missing under account"),
            "{err}"
        );
    }
    // Failed after the first attempt, not retried until RecordTtl (30 s).
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    for f in real {
        f.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn fail_if_throttled_fails_throttled_records_at_once() {
    let sink = MemorySink::new().with_stream("s", 1);
    sink.set_entry_fault(|_| {
        Some((
            "ProvisionedThroughputExceededException".into(),
            "Rate exceeded for shard".into(),
        ))
    });
    let config = Config::builder().fail_if_throttled(true).build().unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let err = producer.send("s", record("k", "v")).await.unwrap_err();
    assert!(
        matches!(&err.kind, PutErrorKind::Throttled { code, .. } if code == "ProvisionedThroughputExceededException")
    );
    assert_eq!(err.attempts.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn failed_records_back_off_exponentially_and_throttled_ones_briefly() {
    for (code, growing) in [
        ("InternalFailure", true),
        ("ProvisionedThroughputExceededException", false),
    ] {
        let sink = MemorySink::new().with_stream("s", 1);
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        // The first four attempts fail, the fifth goes through.
        sink.set_entry_fault(move |_| {
            (c.fetch_add(1, Ordering::Relaxed) < 4).then(|| (code.into(), "failed".into()))
        });
        let producer = Producer::with_sink(Config::default(), sink.clone());
        let receipt = producer.send("s", record("k", "v")).await.unwrap();
        assert_eq!(receipt.attempts.len(), 5);
        for n in 1..5 {
            let gap = receipt.attempts[n].delay - receipt.attempts[n - 1].delay;
            // Transient errors: a backoff of [e/2, e], e = 100 ms * 2^(n-1). Throttling:
            // [50, 100] ms each time (the shard's rate limiter paces the retries).
            let e = if growing {
                Duration::from_millis(100 * (1 << (n - 1)))
            } else {
                Duration::from_millis(100)
            };
            assert!(
                gap >= e / 2 && gap <= e + Duration::from_millis(15),
                "{code} attempt {n}: gap {gap:?}, e {e:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn retried_records_go_back_through_aggregation() {
    let sink = MemorySink::new().with_stream("s", 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    // The first 20 Kinesis records sent fail; everything after is put.
    sink.set_entry_fault(move |_| {
        (c.fetch_add(1, Ordering::Relaxed) < 20).then(|| ("InternalFailure".into(), "oops".into()))
    });
    // Small aggregates, so that the first 20 hold many records.
    let config = Config::builder().aggregation_max_count(10).build().unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let futures: Vec<_> = (0..1_000)
        .map(|i| producer.send("s", record(&format!("k{}", i % 7), &format!("record {i}"))))
        .collect();
    let mut retried = 0;
    for f in futures {
        let receipt = f.await.unwrap();
        if receipt.attempts.len() > 1 {
            retried += 1;
            // Put inside an aggregate again, not one by one.
            assert!(receipt.aggregated);
        }
    }
    assert!(retried >= 100, "{retried}");
    let stored = stored_count(&sink, "s");
    assert_eq!(stored, 1_000, "each record stored exactly once");
}

#[tokio::test(start_paused = true)]
async fn whole_call_throttling_is_retried() {
    let sink = MemorySink::new().with_stream("s", 2);
    sink.fail_next_calls(2, "ThrottlingException", "Rate exceeded");
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let receipt = producer.send("s", record("k", "v")).await.unwrap();
    assert_eq!(receipt.attempts.len(), 3);
    assert_eq!(first_error_code(&receipt), "ThrottlingException");
}

#[tokio::test(start_paused = true)]
async fn each_record_expires_at_its_own_ttl() {
    let (_sink, producer) = harness::failing_producer("down", Duration::from_secs(3));
    let first = producer.send("s", record("k", "first"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = producer.send("s", record("k", "second"));
    let start = Instant::now();
    let e1 = first.await.unwrap_err();
    let t1 = start.elapsed();
    let e2 = second.await.unwrap_err();
    let t2 = start.elapsed();
    assert!(matches!(
        e1.kind,
        PutErrorKind::Expired { ttl_ms: 3000, .. }
    ));
    assert!(matches!(
        e2.kind,
        PutErrorKind::Expired { ttl_ms: 3000, .. }
    ));
    // Each fails by its own RecordTtl (the first arrived a second before `start`). A record fails
    // as soon as its next attempt would start after its TTL, so with a long backoff both can be
    // failed at the same moment.
    assert!(t1 <= Duration::from_secs(2), "{t1:?}");
    assert!(t2 >= t1 && t2 <= Duration::from_secs(3), "{t1:?} {t2:?}");
}

#[tokio::test(start_paused = true)]
async fn a_full_buffer_refuses_with_the_record_and_frees_as_records_resolve() {
    let sink = MemorySink::new().with_stream("s", 1);
    let config = Config::builder().max_buffered_records(3).build().unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let accepted: Vec<_> = (0..3)
        .map(|i| {
            producer
                .try_send("s", record("k", &format!("{i}")))
                .unwrap()
        })
        .collect();
    // Each record holds its data and key twice (2 + 2 bytes) and 704 of bookkeeping.
    let buffered = producer.buffered();
    assert_eq!((buffered.records, buffered.bytes), (3, 3 * (2 * 2 + 704)));
    let refused = producer.try_send("s", record("k", "refused")).unwrap_err();
    assert_eq!(
        refused.kind,
        PutErrorKind::BufferFull {
            records: 3,
            bytes: 3 * 708,
            max_records: 3,
            max_bytes: 256 << 20
        }
    );
    assert_eq!(refused.record.data().as_ref(), b"refused");
    assert!(
        refused
            .to_string()
            .contains("buffer is full: 3 records buffered (MaxBufferedRecords 3)"),
        "{refused}"
    );
    // `send` says the same through its future.
    let via_send = producer.send("s", record("k", "too")).await.unwrap_err();
    assert!(matches!(via_send.kind, PutErrorKind::BufferFull { .. }));
    for f in accepted {
        f.await.unwrap();
    }
    assert_eq!(producer.buffered(), Buffered::default());
    // Failed records give their room back too.
    let big = producer
        .send("s", UserRecord::new("k", vec![0u8; 2 << 20]).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(big.kind, PutErrorKind::InvalidRecord(_)));
    assert_eq!(producer.buffered(), Buffered::default());
}

/// The endpoint fails every call for 20 s while a sender offers records as fast as it may: the
/// buffer never exceeds its limits, the sender is held back instead, nothing fails, and
/// everything goes through once the endpoint is back.
#[tokio::test(start_paused = true)]
async fn an_outage_at_full_load_stays_within_the_buffer_and_recovers_by_itself() {
    let sink = MemorySink::new().with_stream("s", 4);
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d = Arc::clone(&down);
    sink.set_entry_fault(move |_| {
        d.load(Ordering::Relaxed)
            .then(|| ("InternalFailure".into(), "down".into()))
    });
    let config = Config::builder()
        .max_buffered_records(2_000)
        .max_buffered_bytes(1 << 20)
        .record_ttl(Duration::from_secs(120))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut futures = Vec::new();
            let mut peak = (0, 0);
            for i in 0..20_000 {
                futures.push(
                    producer
                        .send_wait(
                            "s",
                            record(&format!("k{}", i % 100), &format!("record {i:>10}")),
                        )
                        .await,
                );
                let Buffered {
                    records: r,
                    bytes: b,
                    ..
                } = producer.buffered();
                peak = (peak.0.max(r), peak.1.max(b));
            }
            (futures, peak)
        })
    };
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = producer.buffered();
    assert!(
        during.records <= 2_000 && during.bytes <= 1 << 20,
        "{during:?}"
    );
    // The byte limit (which counts each record's bookkeeping, about 1 KB here) is the one
    // reached: the buffer filled up to within a record of it and the sender was held back.
    assert!(
        during.bytes + 1_000 >= 1 << 20,
        "the buffer filled up and the sender was held back: {during:?}"
    );
    down.store(false, Ordering::Relaxed);
    let (futures, peak) = sender.await.unwrap();
    assert!(peak.0 <= 2_000 && peak.1 <= 1 << 20, "peak {peak:?}");
    for f in futures {
        f.await.unwrap();
    }
    let stored = stored_count(&sink, "s");
    assert_eq!(stored, 20_000);
    assert_eq!(producer.buffered(), Buffered::default());
}

#[test]
fn send_blocking_waits_for_room_on_a_plain_thread() {
    let sink = MemorySink::new().with_stream("s", 1);
    sink.set_latency(Duration::from_millis(20));
    let config = Config::builder().max_buffered_records(10).build().unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let futures: Vec<_> = (0..200)
        .map(|i| producer.send_blocking("s", record("k", &format!("{i}"))))
        .collect();
    harness::block_on_all(futures);
    assert!(
        sink.requests().len() >= 20,
        "sent in small batches as room freed up"
    );
}

/// What a KCL consumer keeps of the in-memory sink's `stream`, by data.
fn kcl_view(
    sink: &MemorySink,
    stream: &str,
) -> std::collections::HashMap<Vec<u8>, (String, String, u64)> {
    harness::kcl_view(&sink.records(stream), &harness::ranges(sink, stream))
}

/// Both shards split while aggregates built for them are in flight: aggregates land on one child
/// holding records of the other; the producer notices, refreshes its map, keeps an aggregate that
/// fits the taking shard and re-sends every record of one that does not. A KCL consumer then
/// sees every record, where its receipt says.
#[tokio::test(start_paused = true)]
async fn a_split_in_mid_flight_loses_nothing_for_a_range_filtering_consumer() {
    let sink = MemorySink::new().with_stream("s", 2);
    sink.set_latency(Duration::from_millis(50));
    let config = Config::builder()
        .record_max_buffered_time(Duration::from_millis(200))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    producer.send("s", record("warm", "up")).await.unwrap();
    let before: Vec<_> = (0..2_000)
        .map(|i| {
            producer.send(
                "s",
                record(&format!("k{}", i % 300), &format!("before {i}")),
            )
        })
        .collect();
    // The aggregates above are still being filled (200 ms) when both shards split.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let half = u128::MAX / 4;
    sink.split_shard("s", "shardId-000000000000", kinesis_producer::HashKey(half));
    sink.split_shard(
        "s",
        "shardId-000000000001",
        kinesis_producer::HashKey(half * 3),
    );
    let after: Vec<_> = (0..2_000)
        .map(|i| producer.send("s", record(&format!("k{}", i % 300), &format!("after {i}"))))
        .collect();
    let mut receipts = Vec::new();
    let mut resent = 0;
    for (i, f) in before.into_iter().chain(after).enumerate() {
        let receipt = f.await.unwrap();
        resent += usize::from(retried_after(&receipt, "WrongShard"));
        receipts.push((i, receipt));
    }
    assert!(resent > 0, "the split caught aggregates in flight");
    let kept = kcl_view(&sink, "s");
    for (i, receipt) in receipts {
        let data = if i < 2_000 {
            format!("before {i}")
        } else {
            format!("after {}", i - 2_000)
        };
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
    assert!(sink.list_shards_calls() >= 2, "the map was refreshed");
}

/// A split under steady traffic while ListShards is slow (300 ms): once an answer shows the map
/// is stale, the shard's aggregates wait for the new map instead of going on straddling the new
/// shards, so only what was sent before that answer is sent again.
#[tokio::test(start_paused = true)]
async fn after_a_stale_answer_aggregates_wait_for_the_new_map() {
    let sink = MemorySink::new().with_stream("s", 2);
    sink.set_latency(Duration::from_millis(20));
    sink.set_list_shards_latency(Duration::from_millis(300));
    let producer = Producer::with_sink(Config::default(), sink.clone());
    producer.send("s", record("warm", "up")).await.unwrap();
    let mut futures = Vec::new();
    // 4,000 records/s for 2 s over 500 keys; the first shard splits after 0.5 s.
    for tick in 0..200 {
        if tick == 50 {
            sink.split_shard(
                "s",
                "shardId-000000000000",
                kinesis_producer::HashKey(u128::MAX / 4),
            );
        }
        for j in 0..40 {
            let n = tick * 40 + j;
            futures.push(producer.send("s", record(&format!("k{}", n % 500), &format!("{n}"))));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut resent = 0;
    let mut receipts = Vec::new();
    for f in futures {
        let receipt = f.await.unwrap();
        resent += usize::from(retried_after(&receipt, "WrongShard"));
        receipts.push(receipt);
    }
    let kept = kcl_view(&sink, "s");
    for (n, receipt) in receipts.iter().enumerate() {
        let (shard, seq, sub) = kept
            .get(n.to_string().as_bytes())
            .unwrap_or_else(|| panic!("{n} is lost to a KCL consumer"));
        assert_eq!(
            (&**shard, &**seq, *sub),
            (
                &*receipt.shard_id,
                &*receipt.sequence_number,
                receipt.sub_sequence_number
            )
        );
    }
    eprintln!("steady split: {resent} of 8,000 records re-sent");
    // Shard 0 takes ~2,000 records/s in aggregates of 100 ms (~200 records each): what was in
    // flight or queued when the split happened is re-sent (a few hundred records), not the
    // ~600 of each further 300 ms ListShards takes.
    assert!(resent > 0, "the split caught aggregates in flight");
    assert!(resent <= 600, "{resent} re-sent");
}

/// For each partition key, the order its records were stored in: by shard, sequence number and
/// sub-sequence number (one key lives on one shard).
fn stored_order(sink: &MemorySink, stream: &str) -> std::collections::HashMap<String, Vec<usize>> {
    let mut rows = Vec::new();
    for u in harness::read_back(&sink.records(stream)) {
        let n: usize = std::str::from_utf8(&u.data).unwrap().parse().unwrap();
        rows.push((
            u.shard_id,
            u.sequence_number,
            u.sub_sequence_number,
            u.partition_key,
            n,
        ));
    }
    rows.sort();
    let mut by_key: std::collections::HashMap<String, Vec<usize>> =
        std::collections::HashMap::new();
    for (_, _, _, key, n) in rows {
        by_key.entry(key).or_default().push(n);
    }
    by_key
}

/// Every one of `n` records is stored, and each key's records in the order they were sent.
fn assert_every_key_in_order(sink: &MemorySink, n: usize) {
    let order = stored_order(sink, "s");
    assert_eq!(order.values().map(Vec::len).sum::<usize>(), n);
    for (key, ns) in &order {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {ns:?}"
        );
    }
}

async fn run_with_faults(ordered: bool) -> (MemorySink, usize) {
    let sink = MemorySink::new().with_stream("s", 4);
    sink.set_latency(Duration::from_millis(5));
    // A third of all Kinesis records are throttled, whatever they hold.
    sink.set_entry_fault(|_| {
        (fastrand::u8(..) < 85).then(|| {
            (
                "ProvisionedThroughputExceededException".into(),
                "Rate exceeded".into(),
            )
        })
    });
    let config = Config::builder()
        .per_key_ordering(ordered)
        .aggregation_max_count(20)
        .record_max_buffered_time(Duration::from_millis(20))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let mut futures = Vec::new();
    for n in 0..4_000usize {
        futures.push(producer.send("s", record(&format!("key-{}", n % 40), &n.to_string())));
        if n % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
    }
    let mut retried = 0;
    for f in futures {
        retried += usize::from(f.await.unwrap().attempts.len() > 1);
    }
    (sink, retried)
}

#[tokio::test(start_paused = true)]
async fn per_key_ordering_holds_across_throttling_and_retries() {
    let (sink, retried) = run_with_faults(true).await;
    assert!(retried > 500, "{retried}");
    assert_every_key_in_order(&sink, 4_000);
    // The same faults without the option: records of a key overtake each other on retries.
    let (sink, _) = run_with_faults(false).await;
    let order = stored_order(&sink, "s");
    assert!(
        order.values().any(|ns| ns.windows(2).any(|w| w[0] > w[1])),
        "the control run should show disorder"
    );
}

/// The `kpl put` failure of a loaded machine, made deterministic: with per-key ordering, the
/// first ListShards answers late (after RecordMaxBufferedTime), a flush is asked for before it
/// does (as `kpl put` flushes at the end of its input), and calls finish in another order than
/// they started. No record of a key may be stored before an earlier one of the same key.
#[tokio::test(start_paused = true)]
async fn per_key_order_holds_with_a_slow_first_map_a_flush_and_reordered_completions() {
    let sink = MemorySink::new().with_stream("s", 3);
    sink.set_list_shards_latency(Duration::from_millis(400));
    sink.set_latency(Duration::from_millis(2));
    sink.set_latency_spread(Duration::from_millis(30), 7);
    let config = Config::builder()
        .per_key_ordering(true)
        .record_max_buffered_time(Duration::from_millis(50))
        .aggregation_max_count(10)
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let mut futures = Vec::new();
    for n in 0..3_000usize {
        futures.push(producer.send("s", record(&format!("u{}", n % 37), &n.to_string())));
        if n % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if n == 1_000 {
            producer.flush();
        }
    }
    producer.flush();
    for f in futures {
        f.await.unwrap();
    }
    assert_every_key_in_order(&sink, 3_000);
}

/// Wrong credentials: the service refuses every call. Records fail at once, with the service's
/// code and message, instead of being retried until RecordTtl.
#[tokio::test(start_paused = true)]
async fn wrong_credentials_fail_fast_with_the_services_words() {
    let sink = MemorySink::new().with_stream("s", 1);
    sink.fail_next_calls(
        1_000,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    );
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let start = Instant::now();
    let err = producer.send("s", record("k", "v")).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(
        err.kind,
        PutErrorKind::Rejected {
            code: "UnrecognizedClientException".into(),
            message: "The security token included in the request is invalid.".into()
        }
    );
    assert_eq!(err.attempts.len(), 1);
    assert_eq!(producer.buffered(), Buffered::default());
}

/// A deep queue held back by the rate limiter of a busy shard, next to a quiet shard: every
/// record is put, the busy shard's calls come at the limiter's pace in batches (not one call
/// per token), and the quiet shard's records are not stuck behind the busy one's.
#[tokio::test(start_paused = true)]
async fn a_queue_held_by_the_rate_limiter_drains_in_batches_at_its_pace() {
    let sink = MemorySink::new().with_stream("s", 2);
    let shards = sink.shards("s");
    // RateLimit 100%: 1000 records/s per shard; no aggregation, so one record is one entry.
    let config = Config::builder()
        .aggregation_enabled(false)
        .rate_limit(100)
        .record_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let start = Instant::now();
    let busy: Vec<_> = (0..2000)
        .map(|i| {
            producer.send(
                "s",
                record("busy", &format!("{i}")).with_explicit_hash_key(shards[0].start),
            )
        })
        .collect();
    let quiet: Vec<_> = (0..20)
        .map(|i| {
            producer.send(
                "s",
                record("quiet", &format!("{i}")).with_explicit_hash_key(shards[1].start),
            )
        })
        .collect();
    // Bounded: an engine that forgot to wake for its limiter would otherwise hang the test.
    let (quiet_done, busy_done) = tokio::time::timeout(Duration::from_secs(120), async {
        for f in quiet {
            f.await.unwrap();
        }
        let quiet_done = start.elapsed();
        for f in busy {
            f.await.unwrap();
        }
        (quiet_done, start.elapsed())
    })
    .await
    .expect("every record resolves");
    eprintln!(
        "quiet {quiet_done:?}, busy {busy_done:?}, {} calls",
        sink.requests().len()
    );
    // 2,000 records at 1000/s, less the bucket's initial burst (500): about 1.5 s.
    assert!(busy_done >= Duration::from_secs(1), "{busy_done:?}");
    assert!(busy_done <= Duration::from_secs(3), "{busy_done:?}");
    assert!(quiet_done < Duration::from_secs(2), "{quiet_done:?}");
    let calls = sink.requests().len();
    // At most one call per LIMITED_WAIT (10 ms) while limited, ~150 over 1.5 s; a call per
    // token would be ~1,500.
    assert!(calls <= 400, "{calls} PutRecords calls");
}

/// While a shard throttles, its aggregates are cut at one PUT payload unit (25 KiB), so that
/// less of its allowance is lost to an aggregate that no longer fits; once it stops, they grow
/// back to AggregationMaxSize (51,200 bytes by default).
#[tokio::test(start_paused = true)]
async fn a_throttling_shard_gets_aggregates_of_one_payload_unit_until_it_stops() {
    let sink = MemorySink::new().with_stream("s", 1);
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let data = "x".repeat(1_000);
    let send = |n: usize| {
        let futures: Vec<_> = (0..n)
            .map(|i| producer.send("s", record(&format!("k{i}"), &data)))
            .collect();
        async move {
            for f in futures {
                f.await.unwrap();
            }
        }
    };
    let sizes = |from: usize| -> Vec<usize> {
        sink.requests()[from..]
            .iter()
            .flat_map(|(_, entries)| entries.iter().map(|e| e.data.len() + e.partition_key.len()))
            .collect()
    };
    // Not throttled: aggregates fill up to AggregationMaxSize.
    send(200).await;
    assert!(sizes(0).iter().any(|&s| s > 30_000), "{:?}", sizes(0));
    // Every other entry throttled.
    sink.set_entry_fault(harness::every_nth(
        2,
        "ProvisionedThroughputExceededException",
        "Rate exceeded for shard.",
    ));
    send(200).await;
    let from = sink.requests().len();
    send(200).await;
    let throttled = sizes(from);
    assert!(throttled.iter().all(|&s| s <= 25_600), "{throttled:?}");
    assert!(throttled.iter().any(|&s| s > 20_000), "{throttled:?}");
    // Throttling stops; a trickle for some seconds lets the limiter see it (the share throttled
    // is averaged over about a second, by bytes too: the trickle's small records take a while
    // to outweigh the throttled aggregates).
    sink.clear_entry_fault();
    for _ in 0..50 {
        send(2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let from = sink.requests().len();
    send(200).await;
    let after = sizes(from);
    assert!(after.iter().any(|&s| s > 30_000), "{after:?}");
}

/// The in-memory Kinesis, except that DescribeStreamSummary is refused (a role allowed only
/// PutRecords and ListShards): the producer cannot learn the stream's own record size limit.
struct NoDescribe(MemorySink);

impl kinesis_producer::sink::Sink for NoDescribe {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<kinesis_producer::sink::PutEntry>,
    ) -> Result<Vec<kinesis_producer::sink::EntryResult>, kinesis_producer::sink::SinkError> {
        self.0.put_records(stream, entries).await
    }

    async fn list_shards(
        &self,
        stream: &str,
    ) -> Result<Vec<kinesis_producer::shard_map::Shard>, kinesis_producer::sink::SinkError> {
        self.0.list_shards(stream).await
    }

    async fn max_record_size(
        &self,
        _: &str,
    ) -> Result<Option<usize>, kinesis_producer::sink::SinkError> {
        Err(kinesis_producer::sink::SinkError::new(
            "DescribeStreamSummary",
            "AccessDeniedException",
            "not authorized to perform kinesis:DescribeStreamSummary",
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn without_describe_stream_summary_the_limit_is_one_mib_and_records_still_go() {
    let sink = MemorySink::new().with_stream("s", 1);
    // MaxRecordSize is 10 MiB by default: only the stream's answer could raise the limit.
    let producer = Producer::with_sink(Config::default(), NoDescribe(sink.clone()));
    let small = producer.send("s", record("k", "fits"));
    let large = producer.send("s", UserRecord::new("k", vec![0u8; 2 << 20]).unwrap());
    small.await.unwrap();
    let err = large.await.unwrap_err();
    assert!(
        matches!(
            err.kind,
            PutErrorKind::InvalidRecord(kinesis_producer::RecordError::RecordTooLarge {
                limit: 1_048_576,
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(stored_count(&sink, "s"), 1);
    producer.shutdown().await;
}
