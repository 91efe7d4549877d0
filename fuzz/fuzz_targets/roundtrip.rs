//! Arbitrary records and limits through the Aggregator and back: sizes are exact, limits hold,
//! and strict deaggregation gives back every record, in order, byte for byte.
#![no_main]

use std::time::Instant;

use arbitrary::Arbitrary;
use kinesis_producer::aggregation::{Aggregate, AggregationLimits, Aggregator, TryPush, deaggregate_strict};
use kinesis_producer::{HashKey, UserRecord};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    max_size: u32,
    max_count: u16,
    records: Vec<(String, Option<u128>, Vec<u8>)>,
}

fn check(out: Aggregate<usize>, predicted: usize, limits: AggregationLimits, records: &[UserRecord]) {
    assert_eq!(out.record.size(), predicted);
    assert!(out.entries.len() <= limits.max_count());
    if out.entries.len() > 1 {
        assert!(out.record.size() <= limits.max_size());
    }
    let users = deaggregate_strict(&out.record.partition_key, out.record.data.clone()).unwrap();
    assert_eq!(users.len(), out.entries.len());
    for (u, (_, tag)) in users.iter().zip(&out.entries) {
        let r = &records[*tag];
        assert_eq!(u.partition_key, r.partition_key());
        assert_eq!(&u.data, r.data());
        if out.entries.len() > 1 {
            assert_eq!(u.explicit_hash_key, r.explicit_hash_key().map(|k| k.to_string()));
        }
    }
}

fuzz_target!(|input: Input| {
    // Small limits, so that the short inputs a fuzzer makes still split into several aggregates.
    let max_size = 64 + (input.max_size as usize % 4000);
    let max_count = 1 + input.max_count as usize;
    let limits = AggregationLimits::new(max_size, max_count).unwrap();
    let records: Vec<UserRecord> = input
        .records
        .into_iter()
        .filter_map(|(pk, ehk, data)| {
            let r = UserRecord::new(pk, data).ok()?;
            Some(match ehk {
                Some(k) => r.with_explicit_hash_key(HashKey(k)),
                None => r,
            })
        })
        .collect();
    let mut agg = Aggregator::new(limits);
    let now = Instant::now();
    let mut seen = 0;
    for (tag, r) in records.iter().cloned().enumerate() {
        if let TryPush::NoCapacity(r, tag) = agg.try_push(r, tag, now).unwrap() {
            let predicted = agg.size();
            let out = agg.flush().unwrap();
            seen += out.entries.len();
            check(out, predicted, limits, &records);
            assert!(matches!(agg.try_push(r, tag, now).unwrap(), TryPush::Added));
        }
    }
    let predicted = agg.size();
    if let Some(out) = agg.flush() {
        seen += out.entries.len();
        check(out, predicted, limits, &records);
    }
    assert_eq!(seen, records.len());
});
