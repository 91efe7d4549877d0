//! Aggregate user records for one shard, then read them back as a consumer would.
//!
//! Run: `cargo run --example codec`
#![allow(clippy::disallowed_methods)] // the example times what it runs (clippy.toml keeps the library's stages off the clock)

use std::time::{Duration, Instant};

use kinesis_producer::aggregation::{
    AggregationLimits, Aggregator, deaggregate, put_payload_units,
};
use kinesis_producer::{HashKey, UserRecord};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // KPL defaults: AggregationMaxSize 51200 bytes, AggregationMaxCount 4294967295.
    let mut aggregator = Aggregator::new(AggregationLimits::default());
    // Each record's deadline is its arrival plus RecordMaxBufferedTime (KPL default 100 ms).
    let deadline = Instant::now() + Duration::from_millis(100);

    let mut to_send = Vec::new();
    for i in 0..2_000u32 {
        let mut record = UserRecord::new(format!("device-{}", i % 50), format!("reading {i}"))?;
        if i % 100 == 0 {
            // Pin some records to a point in the hash key space (e.g. a chosen shard).
            record = record.with_explicit_hash_key(
                "170141183460469231731687303715884105728".parse::<HashKey>()?,
            );
        }
        // `push` hands back the full aggregate when the new record does not fit beside it.
        if let Some(full) = aggregator
            .push((record, i), deadline)
            .map_err(|r| r.error)?
        {
            to_send.push(full.record);
        }
    }
    // The engine flushes at the earliest deadline; here we just flush what is left.
    println!(
        "earliest deadline held: {:?}",
        aggregator.earliest_deadline().map(|d| d - Instant::now())
    );
    to_send.extend(aggregator.flush().map(|a| a.record));

    for (i, k) in to_send.iter().enumerate() {
        println!(
            "Kinesis record {i}: partition key {:?}, explicit hash key {}, {} bytes, {} user records, {} PUT payload units",
            k.partition_key,
            k.explicit_hash_key
                .map_or("-".to_string(), |h| h.to_string()),
            k.size(),
            k.user_records,
            put_payload_units(k.size()),
        );
    }

    // What a consumer (KCL, Lambda) sees after GetRecords: the user records, in order.
    let read: Vec<_> = to_send
        .iter()
        .flat_map(|k| deaggregate(&k.partition_key, k.data.clone()))
        .collect();
    assert_eq!(read.len(), 2_000);
    println!(
        "read back {} user records; record 100: key {:?}, explicit hash key {:?}, data {:?}, sub-sequence {}",
        read.len(),
        read[100].partition_key,
        read[100].explicit_hash_key,
        String::from_utf8_lossy(&read[100].data),
        read[100].sub_sequence_number
    );
    Ok(())
}
