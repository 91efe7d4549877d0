//! One producer on several engine cores (`EngineCores`), end to end: the real SDK into
//! ferrokinesis on 127.0.0.1. Each core takes the records of its part of the hash key space;
//! what the producer shows must not show the cut: every record put once, where its receipt
//! says, each key in order, a flush-and-wait that waits for every core, and metrics counted
//! once (a shard written by two cores is one series).

use std::collections::HashMap;
use std::time::Duration;

use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::metrics::Name;
use kinesis_producer::{HashKey, Producer, UserRecord};

mod common;
use common::harness;

/// Five shards on four cores: the shards' ranges (fifths) cross the cores' cuts (quarters), so
/// three shards are each written by two cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_cores_put_every_record_once_in_key_order_and_count_it_once() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("cores", 5).await.unwrap();
    let config = kinesis
        .config()
        .engine_cores(4)
        .per_key_ordering(true)
        .record_max_buffered_time(Duration::from_millis(50))
        .build()
        .unwrap();
    let producer = Producer::new(config).await;
    let record = |i: usize| UserRecord::new(format!("key-{}", i % 300), i.to_string()).unwrap();

    // Half one at a time, half in batches (a batch's records go to their cores, in order).
    let mut futures = Vec::new();
    for i in 0..3_000 {
        futures.push(producer.send("cores", record(i)));
    }
    let batch = producer
        .send_all_wait("cores", (3_000..6_000).map(record).collect::<Vec<_>>())
        .await;
    // Returns once every core has resolved every record sent before it.
    producer.flush_and_wait().await;
    assert_eq!(producer.outstanding(), 0, "flush_and_wait returned early");

    let mut receipts: Vec<(usize, kinesis_producer::Receipt)> = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        receipts.push((i, f.await.unwrap_or_else(|e| panic!("record {i}: {e}"))));
    }
    for (i, r) in batch.await.into_iter().enumerate() {
        receipts.push((
            3_000 + i,
            r.unwrap_or_else(|e| panic!("record {}: {e}", 3_000 + i)),
        ));
    }

    // Metrics: each record counted once, each shard one series.
    let m = producer.metrics(Duration::from_secs(60));
    let put = m.global(Name::UserRecordsPut).unwrap();
    assert_eq!(put.total.sum, 6_000.0);
    let shards: Vec<_> = m
        .metrics
        .iter()
        .filter(|x| x.name == Name::UserRecordsPut && x.shard.is_some())
        .collect();
    assert_eq!(shards.len(), 5, "one series per shard: {shards:?}");
    assert_eq!(shards.iter().map(|x| x.total.sum).sum::<f64>(), 6_000.0);
    let streams = m
        .metrics
        .iter()
        .filter(|x| x.name == Name::UserRecordsPut && x.stream.is_some() && x.shard.is_none())
        .count();
    assert_eq!(streams, 1, "the stream registered once, not once per core");
    producer.shutdown().await;

    // Read back as the KCL reads it (an aggregate with a record outside its shard's range is
    // dropped whole: tests/common/kcl.rs): every record where its receipt says, each key in the
    // order sent.
    let stored = kinesis.read_all("cores").await.unwrap();
    let listed = kinesis
        .client()
        .list_shards()
        .stream_name("cores")
        .send()
        .await
        .unwrap();
    let ranges: HashMap<String, (HashKey, HashKey)> = listed
        .shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            let key = |k: &str| HashKey(k.parse().unwrap());
            (
                s.shard_id().to_owned(),
                (key(r.starting_hash_key()), key(r.ending_hash_key())),
            )
        })
        .collect();
    let mut seen: HashMap<String, (String, String, u64)> = HashMap::new();
    let mut copies = 0;
    for r in &stored {
        for u in harness::kcl_records(r, &ranges) {
            copies += 1;
            seen.insert(
                String::from_utf8(u.data.to_vec()).unwrap(),
                (r.shard_id.clone(), u.sequence_number, u.sub_sequence_number),
            );
        }
    }
    assert_eq!(
        copies, 6_000,
        "each record once (nothing failed, nothing was retried)"
    );
    for (i, receipt) in &receipts {
        let at = seen
            .get(&i.to_string())
            .unwrap_or_else(|| panic!("record {i} lost"));
        assert_eq!(
            (&*at.0, &*at.1, at.2),
            (
                &*receipt.shard_id,
                &*receipt.sequence_number,
                receipt.sub_sequence_number
            ),
            "record {i} is not where its receipt says"
        );
    }
    let order = harness::kcl_order_by_key(&stored, &ranges, &HashMap::new());
    let late = harness::keys_out_of_order(&order);
    assert!(late.is_empty(), "keys out of order: {late:?}");
}

/// With one core (`EngineCores` 1) the producer is what it was: the same records, the same
/// shards, one series per shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_core_on_a_two_worker_runtime_is_one_engine() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("one", 2).await.unwrap();
    let producer = Producer::new(kinesis.config().engine_cores(1).build().unwrap()).await;
    let futures: Vec<_> = (0..500)
        .map(|i| producer.send("one", UserRecord::new(format!("k{i}"), "x").unwrap()))
        .collect();
    for f in futures {
        f.await.unwrap();
    }
    let m = producer.metrics(Duration::from_secs(60));
    assert_eq!(m.global(Name::UserRecordsPut).unwrap().total.sum, 500.0);
    producer.shutdown().await;
}

/// Without per-key ordering each record goes to the core that owns its shard (the table each
/// listing makes), so a shard is written by one core and its records are packed together: on
/// four cores, 2,000 records to a one-shard stream (sent after its first listing, within
/// RecordMaxBufferedTime, then flushed) make one aggregate, as on one core; keyed by part of
/// the key space instead, each of the four cores would have made its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_per_key_ordering_a_shard_is_packed_by_one_core() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("one-shard", 1).await.unwrap();
    kinesis.create_stream("three", 3).await.unwrap();
    let config = kinesis
        .config()
        .engine_cores(4)
        .record_max_buffered_time(Duration::from_secs(2))
        .build()
        .unwrap();
    let producer = Producer::new(config).await;
    // The first record waits for the stream's listing, which makes the table.
    for stream in ["one-shard", "three"] {
        producer
            .send(stream, UserRecord::new("warm", "up").unwrap())
            .await
            .unwrap();
    }
    let record = |i: usize| UserRecord::new(format!("k{}", i % 50), format!("{i:08}")).unwrap();
    let one = producer.send_all("one-shard", (0..2_000).map(record).collect::<Vec<_>>());
    let three = producer.send_all("three", (0..6_000).map(record).collect::<Vec<_>>());
    producer.flush();
    for outcome in one.await.into_iter().chain(three.await) {
        outcome.unwrap();
    }
    let m = producer.metrics(Duration::from_secs(60));
    assert_eq!(m.global(Name::UserRecordsPut).unwrap().total.sum, 8_002.0);
    producer.shutdown().await;

    let stored = kinesis.read_all("one-shard").await.unwrap();
    let users: usize = stored.iter().map(|r| harness::user_records(r).len()).sum();
    assert_eq!(users, 2_001);
    // The warm-up record, then one aggregate of all 2,000.
    assert_eq!(stored.len(), 2, "{} Kinesis records", stored.len());
    // Three shards over four cores: each shard one core, one aggregate each.
    let stored = kinesis.read_all("three").await.unwrap();
    let users: usize = stored.iter().map(|r| harness::user_records(r).len()).sum();
    assert_eq!(users, 6_001);
    assert_eq!(stored.len(), 1 + 3, "{} Kinesis records", stored.len());
}

/// Cores share listings: asked for together (each core's first, and each periodic refresh,
/// whose timers start from the same shared answer), one ListShards serves them all. On tokio's
/// paused clock, so that the count does not depend on timing: four cores over ten refresh
/// intervals make the listings of one core, not four times as many.
#[tokio::test(start_paused = true)]
async fn four_cores_share_each_listing() {
    use kinesis_producer::Config;
    use kinesis_producer::sink::memory::MemorySink;
    let listings = |cores: u64| async move {
        let sink = MemorySink::new().with_stream("s", 4);
        sink.set_latency(Duration::from_millis(5));
        let config = Config::builder()
            .engine_cores(cores)
            .shard_map_refresh_interval(Duration::from_secs(1))
            .build()
            .unwrap();
        let producer = Producer::with_sink(config, sink.clone());
        // Records on every core, so that every core has the stream's map to keep.
        let futures: Vec<_> = (0..400)
            .map(|i| producer.send("s", UserRecord::new(format!("k{i}"), "x").unwrap()))
            .collect();
        for f in futures {
            f.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        producer.shutdown().await;
        sink.list_shards_calls()
    };
    let one = listings(1).await;
    let four = listings(4).await;
    assert!(one >= 10, "{one} listings in 10.5 s at one a second");
    assert_eq!(four, one, "four cores made {four} listings, one core {one}");
}
