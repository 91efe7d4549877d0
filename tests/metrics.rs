//! Metrics after known workloads: the in-memory Kinesis and tokio's paused clock make every
//! figure exact. What each metric counts is the KPL's rule (`Retrier::handle_put_records_result`
//! and `Retrier::emit_metrics` in aws/kinesis/core/retrier.cc, awslabs/amazon-kinesis-producer):
//! per Kinesis record in an answer, `KinesisRecordsPut` 1 or 0 and `AllErrors` 0 or 1 at its
//! predicted shard; per call, `RequestTime` and the per-request counts at stream level; per
//! finished user record, `UserRecordsPut` 1 or 0, `RetriesPerRecord`, and `BufferingTime` per
//! attempt.
#![allow(clippy::disallowed_methods)] // a test reads the (paused) clock itself

use std::time::Duration;

use kinesis_producer::metrics::{Granularity, Level, Metrics, Name};
use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Config, Producer, UserRecord};
use tokio::time::sleep;

const MINUTE: Duration = Duration::from_secs(60);

/// 100 records of 10 bytes over 10 keys.
fn workload() -> Vec<UserRecord> {
    (0..100)
        .map(|i| UserRecord::new(format!("key-{}", i % 10), "0123456789").unwrap())
        .collect()
}

fn total(m: &Metrics, name: Name) -> (f64, u64, f64, f64) {
    let s = m
        .global(name)
        .unwrap_or_else(|| panic!("no {name} in {m:#?}"))
        .total;
    (s.sum, s.count, s.min, s.max)
}

async fn put_all(producer: &Producer, records: Vec<UserRecord>) {
    let futures: Vec<_> = records.into_iter().map(|r| producer.send("s", r)).collect();
    for f in futures {
        f.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_known_workload_gives_the_kpl_figures() {
    let sink = MemorySink::new().with_stream("s", 2);
    sink.set_latency(Duration::from_millis(10));
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let futures: Vec<_> = workload()
        .into_iter()
        .map(|r| producer.send("s", r))
        .collect();
    assert_eq!(producer.outstanding(), 100);
    sleep(Duration::from_millis(50)).await;
    assert_eq!(
        producer.oldest_unresolved_age(),
        Some(Duration::from_millis(50)),
        "taken in at once, 50 ms ago"
    );
    for f in futures {
        f.await.unwrap();
    }
    assert_eq!(producer.outstanding(), 0);
    assert_eq!(producer.oldest_unresolved_age(), None);

    let calls = sink.requests();
    let kinesis_records: usize = calls.iter().map(|(_, e)| e.len()).sum();
    assert_eq!(kinesis_records, 2, "one aggregate per shard");
    let m = producer.metrics(MINUTE);
    assert_eq!(total(&m, Name::UserRecordsReceived), (100.0, 100, 1.0, 1.0));
    assert_eq!(total(&m, Name::UserRecordsPut), (100.0, 100, 1.0, 1.0));
    assert_eq!(
        total(&m, Name::UserRecordsDataPut),
        (1000.0, 100, 10.0, 10.0)
    );
    assert_eq!(total(&m, Name::RetriesPerRecord), (0.0, 100, 0.0, 0.0));
    // Every record waited RecordMaxBufferedTime (100 ms) before its one call.
    assert_eq!(
        total(&m, Name::BufferingTime),
        (10_000.0, 100, 100.0, 100.0)
    );
    assert_eq!(total(&m, Name::KinesisRecordsPut).0, 2.0);
    assert_eq!(total(&m, Name::AllErrors), (0.0, 2, 0.0, 0.0));
    let per_kinesis = total(&m, Name::UserRecordsPerKinesisRecord);
    assert_eq!((per_kinesis.0, per_kinesis.1), (100.0, 2));
    let request = total(&m, Name::RequestTime);
    assert_eq!(request.1, calls.len() as u64);
    assert_eq!((request.2, request.3), (10.0, 10.0), "the sink's latency");
    let per_call = total(&m, Name::KinesisRecordsPerPutRecordsRequest);
    assert_eq!((per_call.0, per_call.1), (2.0, calls.len() as u64));
    assert_eq!(total(&m, Name::UserRecordsPerPutRecordsRequest).0, 100.0);
    let data: usize = calls
        .iter()
        .flat_map(|(_, e)| e)
        .map(|e| e.data.len() + e.partition_key.len())
        .sum();
    assert_eq!(total(&m, Name::KinesisRecordsDataPut).0, data as f64);
    assert!(m.global(Name::UserRecordExpired).is_none(), "none expired");

    // The stream's and the shards' series add up to the whole (granularity shard, the default).
    let stream = m.find(Name::UserRecordsPut, Some("s"), None).unwrap();
    assert_eq!(stream.total.sum, 100.0);
    let shards: Vec<_> = m
        .metrics
        .iter()
        .filter(|x| x.name == Name::UserRecordsPut && x.shard.is_some())
        .collect();
    assert_eq!(shards.len(), 2);
    assert_eq!(shards.iter().map(|x| x.total.sum).sum::<f64>(), 100.0);
    for s in &shards {
        assert!(s.shard.as_deref().unwrap().starts_with("shardId-"));
        assert_eq!(s.stream.as_deref(), Some("s"));
    }

    // The window holds the recent seconds only; the totals stay.
    sleep(Duration::from_secs(5)).await;
    let m = producer.metrics(Duration::from_secs(2));
    let put = m.global(Name::UserRecordsPut).unwrap();
    assert_eq!((put.total.count, put.recent.count), (100, 0));
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn errors_retries_and_throttling_are_counted_by_code() {
    let sink = MemorySink::new().with_stream("s", 1);
    // The first call fails as a whole; then the first entry is throttled once.
    sink.fail_next_calls(1, "InternalFailure", "try again");
    let mut throttled = false;
    let producer = Producer::with_sink(
        Config::builder()
            .aggregation_enabled(false)
            .build()
            .unwrap(),
        sink.clone(),
    );
    let first = producer.send("s", UserRecord::new("a", "1").unwrap());
    first.await.unwrap();
    sink.set_entry_fault(move |_| {
        (!std::mem::replace(&mut throttled, true)).then(|| {
            (
                "ProvisionedThroughputExceededException".into(),
                "Rate exceeded for shard".into(),
            )
        })
    });
    let second = producer.send("s", UserRecord::new("b", "2").unwrap());
    second.await.unwrap();
    let m = producer.metrics(MINUTE);
    let codes: Vec<(&str, f64)> = m.errors_by_code().map(|(c, x)| (c, x.total.sum)).collect();
    assert_eq!(
        codes,
        [
            ("InternalFailure", 1.0),
            ("ProvisionedThroughputExceededException", 1.0)
        ]
    );
    // The whole-call failure counts once for the stream; the throttled entry once at its shard.
    let shard_throttles = m
        .metrics
        .iter()
        .find(|x| x.name == Name::ErrorsByCode && x.shard.is_some())
        .unwrap();
    assert_eq!(
        shard_throttles.error_code.as_deref(),
        Some("ProvisionedThroughputExceededException")
    );
    assert_eq!(total(&m, Name::ThrottledEntries).0, 1.0);
    // AllErrors: 1 for the failed call, then per entry answered: 0, 1 (throttled), 0.
    assert_eq!(total(&m, Name::AllErrors), (2.0, 4, 0.0, 1.0));
    assert_eq!(total(&m, Name::KinesisRecordsPut), (2.0, 3, 0.0, 1.0));
    // Each record was retried once; each attempt had its buffering time.
    assert_eq!(total(&m, Name::RetriesPerRecord), (2.0, 2, 1.0, 1.0));
    assert_eq!(total(&m, Name::BufferingTime).1, 4);
    assert_eq!(total(&m, Name::UserRecordsPut), (2.0, 2, 1.0, 1.0));
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn expired_records_count_as_not_put_and_expired() {
    let sink = MemorySink::new().with_stream("s", 1);
    sink.set_entry_fault(|_| Some(("InternalFailure".into(), "down".into())));
    let config = Config::builder()
        .record_ttl(Duration::from_secs(2))
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, sink);
    let futures: Vec<_> = (0..5)
        .map(|i| producer.send("s", UserRecord::new(format!("k{i}"), "x").unwrap()))
        .collect();
    for f in futures {
        f.await.unwrap_err();
    }
    let m = producer.metrics(MINUTE);
    assert_eq!(total(&m, Name::UserRecordExpired), (5.0, 5, 1.0, 1.0));
    assert_eq!(total(&m, Name::UserRecordsPut), (0.0, 5, 0.0, 0.0));
    // A record that failed counts for its stream, not a shard (docs/metrics.md).
    let put = m.find(Name::UserRecordsPut, Some("s"), None).unwrap();
    assert_eq!(put.total.count, 5);
    assert!(
        !m.metrics
            .iter()
            .any(|x| x.name == Name::UserRecordsPut && x.shard.is_some())
    );
    let retries = total(&m, Name::RetriesPerRecord);
    assert_eq!(retries.1, 5);
    assert!(retries.2 >= 1.0, "retried before expiring: {retries:?}");
    assert_eq!(producer.oldest_unresolved_age(), None);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn level_and_granularity_decide_what_is_recorded() {
    for (level, granularity) in [
        (Level::None, Granularity::Shard),
        (Level::Summary, Granularity::Shard),
        (Level::Detailed, Granularity::Global),
        (Level::Detailed, Granularity::Stream),
    ] {
        let sink = MemorySink::new().with_stream("s", 2);
        let config = Config::builder()
            .metrics_level(level)
            .metrics_granularity(granularity)
            .build()
            .unwrap();
        let producer = Producer::with_sink(config, sink);
        put_all(&producer, workload()).await;
        let m = producer.metrics(MINUTE);
        if level == Level::None {
            assert!(m.metrics.is_empty(), "{m:#?}");
            assert_eq!(producer.outstanding(), 0, "outstanding() needs no metrics");
            // Nor does the oldest record's age.
            let held = producer.send("s", UserRecord::new("k", "x").unwrap());
            sleep(Duration::from_millis(30)).await;
            assert_eq!(
                producer.oldest_unresolved_age(),
                Some(Duration::from_millis(30))
            );
            held.await.unwrap();
            assert_eq!(producer.oldest_unresolved_age(), None);
            continue;
        }
        for x in &m.metrics {
            assert!(
                x.name.level() <= level,
                "{:?} recorded at {level:?}",
                x.name
            );
            let at = match (&x.stream, &x.shard) {
                (_, Some(_)) => Granularity::Shard,
                (Some(_), None) => Granularity::Stream,
                (None, None) => Granularity::Global,
            };
            assert!(at <= granularity, "{x:?} at {granularity:?}");
        }
        assert_eq!(total(&m, Name::UserRecordsPut).0, 100.0);
        producer.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn held_records_are_sampled_while_they_wait() {
    let sink = MemorySink::new().with_stream("s", 2);
    // Calls take a second (ListShards too): the records wait for the map, then in flight, and
    // are sampled meanwhile.
    sink.set_latency(Duration::from_secs(1));
    let producer = Producer::with_sink(Config::default(), sink);
    let futures: Vec<_> = workload()
        .into_iter()
        .map(|r| producer.send("s", r))
        .collect();
    sleep(Duration::from_millis(1500)).await;
    let m = producer.metrics(MINUTE);
    let pending = m.find(Name::UserRecordsPending, Some("s"), None).unwrap();
    assert_eq!(pending.last, Some(100.0));
    assert_eq!(pending.total.max, 100.0);
    assert_eq!(
        m.global(Name::UserRecordsBuffered).unwrap().last,
        Some(100.0)
    );
    let age = m.global(Name::OldestUnresolvedRecordAge).unwrap();
    assert!(age.last.unwrap() >= 1400.0, "{age:?}");
    // RateLimit 150: each shard's limiter lets 1,500 records and 1.5 MiB a second through.
    let rates: Vec<f64> = m
        .metrics
        .iter()
        .filter(|x| x.name == Name::LimiterRecordsPerSecond)
        .map(|x| x.last.unwrap())
        .collect();
    assert_eq!(rates, [1500.0, 1500.0]);
    for f in futures {
        f.await.unwrap();
    }
    sleep(Duration::from_millis(500)).await;
    let m = producer.metrics(MINUTE);
    let pending = m.find(Name::UserRecordsPending, Some("s"), None).unwrap();
    assert_eq!(pending.last, Some(0.0), "the drop to nothing is sampled");
    // What a shard costs at the default level and granularity (docs/metrics.md counts on it):
    // eleven series when nothing failed.
    let first = m
        .metrics
        .iter()
        .find_map(|x| x.shard.clone())
        .expect("per-shard series");
    let per_shard = m
        .metrics
        .iter()
        .filter(|x| x.shard.as_ref() == Some(&first))
        .count();
    assert_eq!(per_shard, 11);
    producer.shutdown().await;
}
