//! The endpoint's own ceiling (issue 12, item 7): how many user records a second an endpoint
//! takes from a client that does nothing but put aggregates built before the clock starts, so
//! that a producer's figure against the same endpoint can be read against what the endpoint
//! (and the machine it shares) allows at all.
//!
//! The workload has the shape of `scripts/bench-cli.sh`'s seed workload (its JSON events of
//! about 60 bytes over 1,000 user keys, drawn here with a seed of its own), packed into aggregates of the KPL's default AggregationMaxSize (51,200
//! bytes; one aggregator across all keys, as the endpoint does not look inside them), put with
//! PutRecords of at most 500 records and 5 MiB
//! (the KPL's CollectionMaxCount and CollectionMaxSize), `CONCURRENCY` calls in flight (24 by
//! default, the KPL's MaxConnections). Prints one JSON line.
//!
//! Run: `cargo run --release --example endpoint_ceiling -- ENDPOINT STREAM [RECORDS]
//! [CONCURRENCY]` (e.g. against `kpl local --create-stream seed:4`).
#![allow(clippy::disallowed_methods)] // the example times what it runs (clippy.toml keeps the library's stages off the clock)

use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinesis_producer::UserRecord;
use kinesis_producer::aggregation::{AggregationLimits, Aggregator, KinesisRecord};

/// The KPL's CollectionMaxCount and CollectionMaxSize.
const CALL_MAX_COUNT: usize = 500;
const CALL_MAX_SIZE: usize = 5 * 1024 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(endpoint), Some(stream)) = (args.first(), args.get(1)) else {
        return Err("usage: endpoint_ceiling ENDPOINT STREAM [RECORDS] [CONCURRENCY]".into());
    };
    let records: usize = args.get(2).map_or(Ok(1_000_000), |s| s.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(24), |s| s.parse())?;

    let calls = build_calls(records)?;
    let kinesis_records: usize = calls.iter().map(Vec::len).sum();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
        .build();
    let client = aws_sdk_kinesis::Client::from_conf(config);

    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut failed = 0usize;
    for call in calls {
        if in_flight.len() >= concurrency {
            failed += in_flight
                .join_next()
                .await
                .expect("a call is in flight")??;
        }
        let (client, stream) = (client.clone(), stream.clone());
        in_flight.spawn(async move {
            let out = client
                .put_records()
                .stream_name(stream)
                .set_records(Some(call))
                .send()
                .await?;
            Ok::<_, aws_sdk_kinesis::Error>(out.failed_record_count.unwrap_or(0) as usize)
        });
    }
    while let Some(done) = in_flight.join_next().await {
        failed += done??;
    }
    let wall = started.elapsed();
    if failed > 0 {
        return Err(format!(
            "{failed} Kinesis records were refused: the ceiling needs every one accepted"
        )
        .into());
    }
    println!(
        "{{\"user_records\": {records}, \"kinesis_records\": {kinesis_records}, \"wall_s\": {:.3}, \"user_records_per_s\": {:.0}}}",
        wall.as_secs_f64(),
        records as f64 / wall.as_secs_f64().max(f64::EPSILON)
    );
    Ok(())
}

/// The seed workload's `n` records in aggregates, in calls.
fn build_calls(n: usize) -> Result<Vec<Vec<PutRecordsRequestEntry>>, Box<dyn std::error::Error>> {
    let kinds = ["click", "view", "purchase", "scroll", "login"];
    let mut aggregator = Aggregator::new(AggregationLimits::default());
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut aggregates: Vec<KinesisRecord> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..n {
        let user = format!("user-{:04}", rng.usize(..1000));
        let line = format!(
            "{{\"user\":\"{user}\",\"event\":\"{}\",\"seq\":{},\"v\":{:.3}}}",
            kinds[rng.usize(..kinds.len())],
            i % 100_000,
            rng.f64()
        );
        let record = UserRecord::new(user, line)?;
        if let Some(full) = aggregator.push(record, deadline).map_err(|r| r.error)? {
            aggregates.push(full.record);
        }
    }
    aggregates.extend(aggregator.flush().map(|a| a.record));

    let mut calls = Vec::new();
    let (mut call, mut size) = (Vec::new(), 0usize);
    for k in aggregates {
        let entry_size = k.size();
        if call.len() == CALL_MAX_COUNT || size + entry_size > CALL_MAX_SIZE {
            calls.push(std::mem::take(&mut call));
            size = 0;
        }
        size += entry_size;
        call.push(
            PutRecordsRequestEntry::builder()
                .partition_key(k.partition_key)
                .set_explicit_hash_key(k.explicit_hash_key.map(|h| h.to_string()))
                .data(Blob::new(k.data.to_vec()))
                .build()?,
        );
    }
    if !call.is_empty() {
        calls.push(call);
    }
    Ok(calls)
}
