//! Paths found by reading the engine (issue 22, item 5), each with the test that showed it:
//! a sink that panics, listings that never come while aggregates wait for one, a stream
//! deleted and created again under the producer. Deterministic: the in-memory Kinesis (or a
//! sink around it) and tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::sink::{EntryResult, PutEntry, Sink, SinkError};
use kinesis_producer::{Buffered, Config, Producer, PutErrorKind};

mod common;
use common::harness;
use harness::record;

/// The in-memory Kinesis, but the `put_panics`th PutRecords call and the `list_panics`th
/// ListShards call panic (1-based; 0: never).
#[derive(Clone)]
struct Panicky {
    inner: MemorySink,
    puts: Arc<AtomicUsize>,
    lists: Arc<AtomicUsize>,
    put_panics: usize,
    list_panics: usize,
}

impl Sink for Panicky {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<EntryResult>, SinkError> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.put_panics {
            panic!("injected: PutRecords call {n}");
        }
        self.inner.put_records(stream, entries).await
    }

    async fn list_shards(
        &self,
        stream: &str,
    ) -> Result<Vec<kinesis_producer::shard_map::Shard>, SinkError> {
        let n = self.lists.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.list_panics {
            panic!("injected: ListShards call {n}");
        }
        self.inner.list_shards(stream).await
    }
}

/// A sink call that panics settles its records as failed, naming the panic, and the producer
/// carries on: before, the task's panic left their budget, flush epochs and shard flags taken,
/// and `flush_and_wait` and `shutdown` never returned.
#[tokio::test(start_paused = true)]
async fn a_panicking_sink_call_fails_its_records_and_flush_and_shutdown_return() {
    for ordered in [false, true] {
        let inner = MemorySink::new().with_stream("s", 2);
        let sink = Panicky {
            inner: inner.clone(),
            puts: Arc::default(),
            lists: Arc::default(),
            put_panics: 2,
            list_panics: 1,
        };
        let config = Config::builder()
            .per_key_ordering(ordered)
            .aggregation_max_count(10)
            .build()
            .unwrap();
        let producer = Producer::with_sink(config, sink);
        let mut futures = Vec::new();
        for batch in 0..4 {
            futures.extend(
                (batch * 50..batch * 50 + 50)
                    .map(|i| producer.send("s", record(&format!("k{}", i % 13), &i.to_string()))),
            );
            tokio::time::timeout(Duration::from_secs(120), producer.flush_and_wait())
                .await
                .expect("flush_and_wait returns after a panicking call");
        }
        let (mut put, mut panicked) = (0, 0);
        for f in futures {
            match f.await {
                Ok(_) => put += 1,
                Err(e) => {
                    match &e.kind {
                        PutErrorKind::Rejected { code, message } => {
                            assert_eq!(code, "SinkPanicked");
                            assert!(
                                message.contains("the sink panicked in PutRecords: injected"),
                                "{message}"
                            );
                        }
                        other => panic!("{other:?}"),
                    }
                    panicked += 1;
                }
            }
        }
        assert!(panicked > 0 && put > 0, "{put} put, {panicked} failed");
        assert_eq!(put + panicked, 200);
        assert_eq!(producer.buffered(), Buffered::default());
        // It carries on: later records are put.
        producer
            .send("s", record("after", "after"))
            .await
            .expect("put after the panic");
        tokio::time::timeout(Duration::from_secs(60), producer.shutdown())
            .await
            .expect("shutdown returns");
    }
}

/// Aggregates Kinesis put on another shard than predicted wait for a listing that names that
/// shard (to tell whether KCL consumers keep them). When listings keep failing (the stream's
/// ListShards denied after a split), RecordTtl applies to them: they fail as expired, naming
/// why, and `shutdown` finishes. Before, they waited for good.
#[tokio::test(start_paused = true)]
async fn aggregates_waiting_for_a_listing_that_never_comes_expire_at_their_ttl() {
    for ordered in [false, true] {
        let sink = MemorySink::new().with_stream("s", 1);
        let config = Config::builder()
            .per_key_ordering(ordered)
            .record_ttl(Duration::from_secs(5))
            .build()
            .unwrap();
        let producer = Producer::with_sink(config, sink.clone());
        producer.send("s", record("first", "0")).await.unwrap();
        // The shard splits, and from now on ListShards is refused.
        let shard = sink.shards("s")[0].clone();
        let middle = kinesis_producer::HashKey(u128::MAX / 2);
        sink.split_shard("s", &shard.shard_id, middle);
        sink.fail_next_list_shards(
            100_000,
            "AccessDeniedException",
            "not authorized: ListShards",
        );
        let futures: Vec<_> = (1..200)
            .map(|i| producer.send("s", record(&format!("k{i}"), &i.to_string())))
            .collect();
        let mut expired = 0;
        for f in futures {
            let outcome = tokio::time::timeout(Duration::from_secs(60), f)
                .await
                .expect("every record resolves within its RecordTtl");
            if let Err(e) = outcome {
                assert!(
                    matches!(&e.kind, PutErrorKind::Expired { last_error, .. }
                        if last_error.code == "ShardMapUnavailable"),
                    "{e}"
                );
                expired += 1;
            }
        }
        assert!(expired > 0, "some aggregates straddled the split");
        tokio::time::timeout(Duration::from_secs(60), producer.shutdown())
            .await
            .expect("shutdown finishes");
    }
}

/// A stream deleted and created again reuses shard ids (`shardId-000000000000`, ...), so an
/// aggregate packed for the old stream's shard 0 lands on the new stream's shard 0 under the
/// id it expected, and may hold records outside its new range: KCL consumers drop such an
/// aggregate whole. Once a call is told the stream is missing, the producer's map is not
/// trusted again until a new listing is in: every record reported `Ok` after the stream is
/// back must be where a KCL consumer reads it.
#[tokio::test(start_paused = true)]
async fn a_stream_deleted_and_created_again_with_other_shards_loses_no_ok_record() {
    for ordered in [false, true] {
        let sink = MemorySink::new().with_stream("s", 1);
        let config = Config::builder()
            .per_key_ordering(ordered)
            .record_max_buffered_time(Duration::from_millis(20))
            .aggregation_max_count(10)
            .build()
            .unwrap();
        let producer = Producer::with_sink(config, sink.clone());
        producer.send("s", record("warm", "warm")).await.unwrap();
        sink.delete_stream("s");
        // Sent while it is gone: refused, handed back (the stream is missing).
        let gone = producer.send("s", record("k", "while gone")).await;
        assert!(gone.is_err());
        let sink = sink.clone().with_stream("s", 4);
        let futures: Vec<_> = (0..400)
            .map(|i| {
                (
                    i,
                    producer.send("s", record(&format!("key-{i}"), &i.to_string())),
                )
            })
            .collect();
        let mut receipts = Vec::new();
        for (i, f) in futures {
            if let Ok(r) = f.await {
                receipts.push((i, r));
            }
        }
        producer.shutdown().await;
        let kept = harness::kcl_view(&sink.records("s"), &harness::ranges(&sink, "s"));
        let lost: Vec<usize> = receipts
            .iter()
            .filter(|(i, _)| !kept.contains_key(i.to_string().as_bytes()))
            .map(|(i, _)| *i)
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} records reported Ok are invisible to a KCL consumer: {:?}",
            lost.len(),
            receipts.len(),
            &lost[..lost.len().min(10)]
        );
        assert_eq!(
            receipts.len(),
            400,
            "after the stream is back, every record is put"
        );
    }
}
