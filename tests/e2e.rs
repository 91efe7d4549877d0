//! End to end: the producer, through the real aws-sdk-kinesis client over HTTP, into a real
//! Kinesis implementation (ferrokinesis) embedded in this process on 127.0.0.1; read back with
//! GetRecords and deaggregated.
#![allow(clippy::disallowed_methods)] // the tests time what they run (clippy.toml keeps the library's stages off the clock)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kinesis_producer::local::{LocalKinesis, LocalOptions, ReadRecord};
use kinesis_producer::shard_map::even_split;
use kinesis_producer::{HashKey, Producer, UserRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod common;
use common::harness;
use harness::send_all;

async fn local() -> LocalKinesis {
    LocalKinesis::start(LocalOptions::default()).await.unwrap()
}

fn workload(seed: u64, n: usize, keys: usize, sizes: std::ops::Range<usize>) -> Vec<UserRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let len = rng.random_range(sizes.clone());
            // The first 8 bytes make every record's data unique, so read-back can match them.
            let mut data = (i as u64).to_be_bytes().to_vec();
            data.extend((8..len.max(8)).map(|_| rng.random::<u8>()));
            data.truncate(len.max(8));
            let r = UserRecord::new(format!("pk-{}", rng.random_range(0..keys)), data).unwrap();
            if i % 20 == 0 {
                r.with_explicit_hash_key(HashKey(rng.random()))
            } else {
                r
            }
        })
        .collect()
}

/// User records read back: data → its copies (shard, sequence number, sub-sequence number,
/// key, explicit hash key, aggregated). Delivery is at least once: a call that timed out on a
/// loaded machine after the stream stored it is sent again, and then two copies are read.
type ReadBack = HashMap<Vec<u8>, Vec<Copy>>;
type Copy = (String, String, u64, String, Option<String>, bool);

fn deaggregate_all(read: &[ReadRecord]) -> ReadBack {
    let mut out: ReadBack = HashMap::new();
    for u in harness::read_back(read) {
        let v = (
            u.shard_id,
            u.sequence_number,
            u.sub_sequence_number,
            u.partition_key,
            u.explicit_hash_key,
            u.aggregated,
        );
        out.entry(u.data.to_vec()).or_default().push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_put_where_its_hash_key_belongs_and_reads_back_exactly() {
    let kinesis = local().await;
    kinesis.create_stream("e2e", 4).await.unwrap();
    let producer = Producer::new(kinesis.config().build().unwrap()).await;
    let records = workload(7, 100_000, 5_000, 10..501);
    let receipts = send_all(&producer, "e2e", &records).await;
    producer.shutdown().await;

    let read = kinesis.read_all("e2e").await.unwrap();
    let back = deaggregate_all(&read);
    assert_eq!(back.len(), records.len());
    let ranges = even_split(4);
    for (i, (r, receipt)) in records.iter().zip(&receipts).enumerate() {
        let copies = back
            .get(r.data().as_ref())
            .unwrap_or_else(|| panic!("record {i} not read back"));
        // A second copy only where the producer tried again.
        assert!(
            copies.len() == 1 || receipt.attempts.count() > 1,
            "record {i} read {} times, put at the first attempt",
            copies.len()
        );
        // The copy the receipt names.
        let (shard, seq, sub, pk, ehk, aggregated) = copies
            .iter()
            .find(|c| {
                (c.0.as_str(), c.1.as_str(), c.2)
                    == (
                        &*receipt.shard_id,
                        &*receipt.sequence_number,
                        receipt.sub_sequence_number,
                    )
            })
            .unwrap_or_else(|| panic!("record {i}: no copy where its receipt says, {copies:?}"));
        assert_eq!(pk, r.partition_key(), "record {i}");
        assert_eq!(*aggregated, receipt.aggregated, "record {i}");
        if *aggregated {
            // The explicit hash key travels inside an aggregate.
            assert_eq!(
                ehk.clone(),
                r.explicit_hash_key().map(|k| k.to_string()),
                "record {i}"
            );
        }
        let owner = ranges
            .iter()
            .position(|(s, e)| *s <= r.hash_key() && r.hash_key() <= *e)
            .unwrap();
        assert_eq!(
            *shard,
            format!("shardId-{owner:012}"),
            "record {i} is on the wrong shard"
        );
        assert_eq!(
            (
                &*receipt.shard_id,
                &*receipt.sequence_number,
                receipt.sub_sequence_number
            ),
            (shard.as_str(), seq.as_str(), *sub),
            "record {i}"
        );
    }
    let twice = back.values().filter(|c| c.len() > 1).count();
    eprintln!(
        "100000 user records in {} Kinesis records; {twice} read more than once (retried)",
        read.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_packs_at_least_fifty_records_per_kinesis_record() {
    let kinesis = local().await;
    kinesis.create_stream("packing", 4).await.unwrap();
    let producer = Producer::new(kinesis.config().build().unwrap()).await;
    let records = workload(8, 20_000, 1_000, 100..101);
    send_all(&producer, "packing", &records).await;
    producer.shutdown().await;
    let read = kinesis.read_all("packing").await.unwrap();
    assert_eq!(deaggregate_all(&read).len(), records.len());
    assert!(
        read.len() * 50 <= records.len(),
        "{} Kinesis records for {} user records",
        read.len(),
        records.len()
    );
    eprintln!(
        "20000 user records of 100 bytes in {} Kinesis records ({:.0} each)",
        read.len(),
        records.len() as f64 / read.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_record_goes_out_after_record_max_buffered_time() {
    let kinesis = local().await;
    kinesis.create_stream("lone", 2).await.unwrap();
    let producer = Producer::new(kinesis.config().build().unwrap()).await;
    // The first record also waits for the shard map; measure the ones after it.
    producer
        .send("lone", UserRecord::new("warm", "up").unwrap())
        .await
        .unwrap();
    let mut figures = Vec::new();
    for i in 0..5 {
        let start = Instant::now();
        let receipt = producer
            .send("lone", UserRecord::new(format!("k{i}"), "alone").unwrap())
            .await
            .unwrap();
        figures.push(start.elapsed());
        assert_eq!(receipt.attempts.len(), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A figure for the notes, not an assertion: RecordMaxBufferedTime is 100 ms.
    eprintln!("lone record send-to-receipt latency: {figures:?}");
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_records_buffered_and_in_flight_loses_nothing() {
    let kinesis = local().await;
    kinesis.create_stream("drain", 2).await.unwrap();
    // Long buffering: nothing would go out for an hour but for the shutdown.
    let config = kinesis
        .config()
        .record_max_buffered_time(Duration::from_secs(3600))
        .build()
        .unwrap();
    let producer = Producer::new(config).await;
    let records = workload(9, 30_000, 500, 50..300);
    let futures: Vec<_> = records
        .iter()
        .map(|r| producer.send("drain", r.clone()))
        .collect();
    // Some aggregates fill up and are in flight; the rest are buffered.
    tokio::time::sleep(Duration::from_millis(50)).await;
    producer.shutdown().await;
    for f in futures {
        f.await.unwrap();
    }
    let back = deaggregate_all(&kinesis.read_all("drain").await.unwrap());
    assert_eq!(back.len(), records.len());
}

/// What a service set up once in aws-config (here its endpoint, region and credentials; in
/// production a proxy, a CA bundle, FIPS) applies to the producer made from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_from_your_own_sdk_config_puts_through_it() {
    let kinesis = local().await;
    kinesis.create_stream("sdk", 2).await.unwrap();
    let sdk = aws_config::defaults(kinesis_producer::sink::aws::behavior_version())
        .endpoint_url(kinesis.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .load()
        .await;
    let config = kinesis_producer::Config::builder()
        .record_max_buffered_time(Duration::from_millis(20))
        .build()
        .unwrap();
    let producer = Producer::from_sdk_config(&sdk, config);
    let records = workload(9, 500, 50, 10..100);
    let receipts = send_all(&producer, "sdk", &records).await;
    producer.shutdown().await;
    let stored = deaggregate_all(&kinesis.read_all("sdk").await.unwrap());
    assert_eq!(stored.len(), 500, "every record read back");
    for (r, receipt) in records.iter().zip(&receipts) {
        let copies = &stored[r.data().as_ref()];
        assert!(copies.iter().any(|c| (c.0.as_str(), c.1.as_str(), c.2)
            == (
                &*receipt.shard_id,
                &*receipt.sequence_number,
                receipt.sub_sequence_number
            )));
    }
}
