//! The bulk path (`Producer::send_all` and its waiting forms) against the in-memory Kinesis, on
//! tokio's paused clock: each record's outcome in order, the buffer's bound kept, nothing lost.
#![allow(clippy::disallowed_methods)] // the tests measure the paused clock

use std::collections::HashMap;

use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Config, Producer, PutErrorKind, UserRecord};

mod common;
use common::harness;
use harness::read_back;

fn records(from: usize, n: usize) -> Vec<UserRecord> {
    (from..from + n)
        .map(|i| UserRecord::new(format!("key-{}", i % 37), format!("record {i:05}")).unwrap())
        .collect()
}

/// Every user record stored, by data: (shard, sequence number, sub-sequence number).
fn stored(sink: &MemorySink, stream: &str) -> HashMap<Vec<u8>, (String, String, u64)> {
    let mut out = HashMap::new();
    for u in read_back(&sink.records(stream)) {
        let at = (u.shard_id, u.sequence_number, u.sub_sequence_number);
        assert!(out.insert(u.data.to_vec(), at).is_none(), "stored twice");
    }
    out
}

#[tokio::test(start_paused = true)]
async fn each_record_s_receipt_comes_back_in_order_and_says_where_it_was_stored() {
    let sink = MemorySink::new().with_stream("s", 4);
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let sent = records(0, 3_000);
    let outcomes = producer.send_all("s", sent.clone()).await;
    assert_eq!(outcomes.len(), sent.len());
    let stored = stored(&sink, "s");
    assert_eq!(stored.len(), sent.len());
    for (record, outcome) in sent.iter().zip(&outcomes) {
        let receipt = outcome.as_ref().unwrap();
        let (shard, seq, sub) = &stored[&record.data().to_vec()];
        assert_eq!(
            (&*receipt.shard_id, &*receipt.sequence_number),
            (shard.as_str(), seq.as_str())
        );
        assert_eq!(receipt.sub_sequence_number, *sub);
        assert_eq!(&*receipt.stream, "s");
        assert!(receipt.attempts.last().unwrap().is_success());
    }
    // Aggregated as single sends are: 3,000 records of ~12 bytes in a few Kinesis records.
    assert!(sink.records("s").len() <= 8, "{}", sink.records("s").len());
    // An empty batch resolves at once.
    assert!(producer.send_all("s", Vec::new()).await.is_empty());
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn records_past_the_buffer_s_room_are_refused_each_with_its_record_and_the_rest_put() {
    let sink = MemorySink::new().with_stream("s", 2);
    let config = Config::builder().max_buffered_records(10).build().unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let held = producer.send("s", records(100, 1).pop().unwrap());
    let sent = records(0, 15);
    let outcomes = producer.send_all("s", sent.clone()).await;
    // One record was buffered already: nine of the batch fit, in order, the other six do not.
    for (i, (record, outcome)) in sent.iter().zip(&outcomes).enumerate() {
        match outcome {
            Ok(_) => assert!(i < 9, "record {i} was put"),
            Err(e) => {
                assert!(i >= 9, "record {i} was refused");
                assert!(
                    matches!(
                        e.kind,
                        PutErrorKind::BufferFull {
                            max_records: 10,
                            ..
                        }
                    ),
                    "{e}"
                );
                assert_eq!(&e.record, record);
            }
        }
    }
    held.await.unwrap();
    assert_eq!(stored(&sink, "s").len(), 10);
    assert_eq!(producer.buffered().records, 0, "every reservation released");
}

#[tokio::test(start_paused = true)]
async fn a_batch_larger_than_the_whole_buffer_goes_in_as_it_drains() {
    let sink = MemorySink::new().with_stream("s", 3);
    let config = Config::builder().max_buffered_records(100).build().unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let sent = records(0, 1_000);
    let outcomes = producer.send_all_wait("s", sent.clone()).await.await;
    assert!(outcomes.iter().all(Result::is_ok));
    let stored = stored(&sink, "s");
    assert!(sent.iter().all(|r| stored.contains_key(&r.data().to_vec())));
    assert_eq!(stored.len(), 1_000);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_sent_after_shutdown_comes_back_closed_record_by_record() {
    let sink = MemorySink::new().with_stream("s", 1);
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let other = producer.clone();
    producer.shutdown().await;
    let sent = records(0, 3);
    for outcomes in [
        other.send_all("s", sent.clone()).await,
        other.send_all_wait("s", sent.clone()).await.await,
    ] {
        let refused: Vec<_> = outcomes.into_iter().map(|o| o.unwrap_err()).collect();
        assert!(refused.iter().all(|e| e.kind == PutErrorKind::Closed));
        let back: Vec<_> = refused.into_iter().map(|e| e.record).collect();
        assert_eq!(back, sent);
    }
    assert!(sink.records("s").is_empty());
}

/// Plain threads, no runtime: batches sent with `send_all_blocking` from several threads into
/// a buffer smaller than what they send, waited on with a minimal executor.
#[test]
fn blocking_batches_from_plain_threads_all_go_in() {
    let sink = MemorySink::new().with_stream("s", 4);
    let config = Config::builder().max_buffered_records(500).build().unwrap();
    let producer = Producer::with_sink(config, sink.clone());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let producer = producer.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|b| producer.send_all_blocking("s", records(t * 10_000 + b * 400, 400)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let batches: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    producer.flush();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for batch in batches {
        let outcomes = runtime.block_on(batch);
        assert_eq!(outcomes.len(), 400);
        assert!(outcomes.iter().all(Result::is_ok));
    }
    assert_eq!(stored(&sink, "s").len(), 4 * 5 * 400);
}
