//! Streams addressed by ARN, and streams' own record size limits, end to end through the real
//! aws-sdk-kinesis client against kinesis-local (see `common/kinesis_local.rs`), which honours
//! both. What the producer sends is read off the wire by an SDK interceptor (the serialized
//! request each call transmits), and what the stream holds is read back with GetRecords.

mod common;
use common::kinesis_local;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesis::error::BoxError;
use kinesis_local::KinesisLocal;
use kinesis_producer::aggregation::deaggregate;
use kinesis_producer::sink::aws::AwsSink;
use kinesis_producer::{ConfigBuilder, HashKey, Producer, PutErrorKind, RecordError, UserRecord};
use serde_json::Value;

/// Every request the client transmits: its `X-Amz-Target` operation and its JSON body.
#[derive(Debug, Clone, Default)]
struct Wire(Arc<Mutex<Vec<(String, Value)>>>);

impl Intercept for Wire {
    fn name(&self) -> &'static str {
        "wire"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let target = request.headers().get("x-amz-target").unwrap_or("");
        let operation = target.rsplit('.').next().unwrap_or("").to_owned();
        let body = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        self.0.lock().unwrap().push((operation, body));
        Ok(())
    }
}

impl Wire {
    fn calls(&self, operation: &str) -> Vec<Value> {
        let calls = self.0.lock().unwrap();
        calls
            .iter()
            .filter(|(op, _)| op == operation)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// A producer over `local` whose every request is recorded in the returned [`Wire`].
fn producer(local: &KinesisLocal) -> (Producer, Wire) {
    producer_with(local, local.config())
}

fn producer_with(local: &KinesisLocal, config: ConfigBuilder) -> (Producer, Wire) {
    let wire = Wire::default();
    let sdk = local
        .client
        .config()
        .to_builder()
        .interceptor(wire.clone())
        .build();
    let sink = AwsSink::from_client(aws_sdk_kinesis::Client::from_conf(sdk));
    let config = config.build().unwrap();
    (Producer::with_sink(config, sink), wire)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_named_by_its_arn_is_addressed_by_arn_on_every_call() {
    let local = KinesisLocal::start().await;
    let arn = local.create_stream("by-arn", 2, None).await;
    assert!(arn.starts_with("arn:aws:kinesis:us-east-1:123456789012:stream/by-arn"));
    let (producer, wire) = producer(&local);
    let futures: Vec<_> = (0..200)
        .map(|i| {
            let record = UserRecord::new(format!("key-{}", i % 20), format!("event {i}")).unwrap();
            producer.send(&arn, record)
        })
        .collect();
    let mut shards = std::collections::BTreeSet::new();
    for f in futures {
        let receipt = f.await.unwrap();
        assert_eq!(&*receipt.stream, arn);
        shards.insert(receipt.shard_id.to_string());
    }
    assert_eq!(shards.len(), 2, "both shards took records: {shards:?}");
    producer.shutdown().await;

    // Every call the producer made named the stream by its ARN, and never by name.
    for operation in ["PutRecords", "ListShards", "DescribeStreamSummary"] {
        let calls = wire.calls(operation);
        assert!(!calls.is_empty(), "no {operation} call");
        for body in calls {
            assert_eq!(body["StreamARN"], arn.as_str(), "{operation}");
            assert!(body.get("StreamName").is_none(), "{operation}: {body}");
        }
    }

    // Everything is in the stream, once.
    let read = local.user_records(&arn).await;
    let mut sent: Vec<String> = (0..200).map(|i| format!("event {i}")).collect();
    sent.sort();
    assert_eq!(read, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_up_to_the_streams_own_limit_go_and_larger_ones_are_refused_at_once() {
    let local = KinesisLocal::start().await;
    // A stream raised to 10 MiB records, and one at the default 1 MiB. The 10 MiB record goes to
    // the large stream's second shard (its explicit hash key), the others to its first:
    // kinesis-local stores a 10 MiB record but answers HTTP 500 to any GetRecords that would
    // return it, so only the first shard is read back.
    let large = local.create_stream("large", 2, Some(10_240)).await;
    let small = local.create_stream("small", 1, None).await;
    // kinesis-local takes about 10 s for a 10 MiB PutRecords call (it is 10-30x slower than
    // Kinesis): RequestTimeout is raised for it, or every attempt would time out.
    let config = local.config().request_timeout(Duration::from_secs(120));
    let (producer, wire) = producer_with(&local, config);
    let ten_mib = 10 << 20;
    let first = HashKey(0);
    let second = HashKey(u128::MAX);
    let big = UserRecord::new("k", vec![7u8; ten_mib - 1])
        .unwrap()
        .with_explicit_hash_key(second);
    let two_mib = UserRecord::new("k", vec![8u8; 2 << 20])
        .unwrap()
        .with_explicit_hash_key(first);
    let little: Vec<_> = (0..20)
        .map(|i| {
            let r = UserRecord::new(format!("s{i}"), "x").unwrap();
            producer.send(&large, r.with_explicit_hash_key(first))
        })
        .collect();
    let big_put = producer.send(&large, big);
    let two_put = producer.send(&large, two_mib.clone());
    let refused = producer.send(&small, two_mib);
    let big_receipt = big_put.await.unwrap();
    let two_receipt = two_put.await.unwrap();
    assert_ne!(big_receipt.shard_id, two_receipt.shard_id);
    for f in little {
        f.await.unwrap();
    }
    let err = refused.await.unwrap_err();
    assert!(
        matches!(
            err.kind,
            PutErrorKind::InvalidRecord(RecordError::RecordTooLarge {
                limit: 1_048_576,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.attempts.is_empty(), "refused before anything was sent");
    producer.shutdown().await;

    // The 10 MiB record went alone in its call (5 MiB calls cannot carry it with others).
    let calls = wire.calls("PutRecords");
    let entries = |b: &Value| b["Records"].as_array().map_or(0, Vec::len);
    let alone = calls
        .iter()
        .filter(|b| b["StreamARN"] == large.as_str())
        .find(|b| {
            b["Records"][0]["Data"]
                .as_str()
                .is_some_and(|d| d.len() > 13_000_000)
        })
        .expect("the 10 MiB record's call");
    assert_eq!(entries(alone), 1);
    let mut sizes: Vec<usize> = local
        .records(&large, &[&big_receipt.shard_id])
        .await
        .into_iter()
        .flat_map(|r| {
            let key = r.partition_key.clone();
            deaggregate(&key, bytes::Bytes::from(r.data.into_inner()))
        })
        .map(|u| u.data.len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes.len(), 21, "every record of the first shard, once");
    assert_eq!(sizes[20], 2 << 20);
}

/// The bytes of a PutRecords call's body as Kinesis counts them: each entry's data (decoded
/// from base64) and partition key.
fn call_bytes(body: &Value) -> usize {
    use base64::Engine;
    body["Records"].as_array().map_or(0, |records| {
        records
            .iter()
            .map(|r| {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap_or(""))
                    .map_or(0, |d| d.len());
                data + r["PartitionKey"].as_str().map_or(0, str::len)
            })
            .sum()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_up_to_10_mib_to_a_stream_of_large_records_and_stay_within_5_mib_elsewhere() {
    let local = KinesisLocal::start().await;
    let large = local.create_stream("large-calls", 1, Some(10_240)).await;
    let small = local.create_stream("small-calls", 1, None).await;
    // The limiter out of the way (the records are sent at once), CollectionMaxSize at its top,
    // one engine core (on two, the three records' keys would fall to both, in two calls).
    let config = local
        .config()
        .engine_cores(1)
        .collection_max_size(10 << 20)
        .rate_limit(1_000_000)
        .request_timeout(Duration::from_secs(120));
    let (producer, wire) = producer_with(&local, config);
    let three: Vec<_> = (0..3)
        .map(|i| UserRecord::new(format!("big-{i}"), vec![b'a' + i; 3 << 20]).unwrap())
        .collect();
    let sevens: Vec<_> = (0..7)
        .map(|i| UserRecord::new(format!("mib-{i}"), vec![b'k' + i; 1000 << 10]).unwrap())
        .collect();
    let large_put = producer.send_all(&large, three);
    let small_put = producer.send_all(&small, sevens);
    producer.flush();
    for outcome in large_put.await.into_iter().chain(small_put.await) {
        outcome.unwrap();
    }
    producer.shutdown().await;
    let calls = wire.calls("PutRecords");
    let of = |stream: &str| -> Vec<&Value> {
        calls.iter().filter(|b| b["StreamARN"] == stream).collect()
    };
    // The three 3 MiB records of the large-record stream went together: 9 MiB in one call.
    let large_calls = of(&large);
    assert_eq!(large_calls.len(), 1, "{} calls", large_calls.len());
    assert_eq!(large_calls[0]["Records"].as_array().unwrap().len(), 3);
    assert!(call_bytes(large_calls[0]) > 9 << 20);
    // The 1 MiB-record stream is not known to take 10 MiB requests: every call within 5 MiB.
    let small_calls = of(&small);
    assert!(small_calls.len() >= 2);
    for body in small_calls {
        assert!(
            call_bytes(body) <= 5 << 20,
            "a call of {} bytes",
            call_bytes(body)
        );
    }
}
