//! Interop with the public reference library, PyPI `aws-kinesis-agg`, run as a subprocess
//! (scripts/test.sh installs it): its deaggregator reads our aggregates, ours reads its, and the
//! committed golden vectors regenerate identically.
#![allow(clippy::disallowed_methods)] // the tests time what they run, and pick instants from the clock (clippy.toml keeps the library's stages off the clock)

mod common;

use common::{JsonRecord, b64, reference, repo_path, unb64, workload};
use kinesis_producer::UserRecord;
use kinesis_producer::aggregation::{
    AggregationLimits, Aggregator, KinesisRecord, deaggregate_strict,
};
use serde::Deserialize;
use std::time::Instant;

/// Aggregates `records` with our Aggregator under `limits`.
fn aggregate(records: &[UserRecord], limits: AggregationLimits) -> Vec<KinesisRecord> {
    let mut agg = Aggregator::new(limits);
    let mut out = Vec::new();
    let now = Instant::now();
    for r in records.iter().cloned() {
        out.extend(agg.push(r, now).unwrap().map(|a| a.record));
    }
    out.extend(agg.flush().map(|a| a.record));
    out
}

#[derive(Deserialize)]
struct TheirUserRecord {
    kinesis_record: usize,
    partition_key: String,
    explicit_hash_key: Option<String>,
    data_base64: String,
    sub_sequence_number: u64,
    aggregated: bool,
}

#[test]
fn the_reference_deaggregator_reads_our_aggregates() {
    let records = workload(1, 1000, 300);
    // Default limits (few big aggregates), small ones (many, some plain) and a count limit.
    let limit_sets = [
        AggregationLimits::default(),
        AggregationLimits::new(1000, 4_294_967_295).unwrap(),
        AggregationLimits::new(51_200, 7).unwrap(),
        // Records over 150 bytes cannot share an aggregate: a mix of plain and aggregated.
        AggregationLimits::new(150, 4_294_967_295).unwrap(),
        // Aggregation off in effect: every record plain.
        AggregationLimits::new(51_200, 1).unwrap(),
    ];
    for limits in limit_sets {
        let sent = aggregate(&records, limits);
        let input: Vec<_> = sent
            .iter()
            .map(|k| serde_json::json!({"partition_key": k.partition_key, "data_base64": b64(&k.data)}))
            .collect();
        let output = reference(&["deaggregate"], &serde_json::to_string(&input).unwrap());
        let theirs: Vec<TheirUserRecord> = serde_json::from_str(&output).unwrap();
        assert_eq!(theirs.len(), records.len(), "{limits:?}");

        // Which Kinesis record each user record went into, and at which index.
        let mut expected_place = Vec::new();
        for (k, kr) in sent.iter().enumerate() {
            expected_place.extend((0..kr.user_records).map(|i| (k, i as u64, kr.aggregated)));
        }
        for (i, (t, r)) in theirs.iter().zip(&records).enumerate() {
            assert_eq!(t.partition_key, r.partition_key(), "record {i}, {limits:?}");
            assert_eq!(unb64(&t.data_base64), r.data(), "record {i}, {limits:?}");
            let (k, sub, aggregated) = expected_place[i];
            assert_eq!(
                (t.kinesis_record, t.aggregated),
                (k, aggregated),
                "record {i}"
            );
            if aggregated {
                assert_eq!(t.sub_sequence_number, sub, "record {i}");
                // The reference reports table entry 0 for a record without a key (it does not
                // check presence), so compare explicit hash keys only where one was set.
                if let Some(ehk) = r.explicit_hash_key() {
                    assert_eq!(
                        t.explicit_hash_key.as_deref(),
                        Some(ehk.to_string().as_str()),
                        "record {i}"
                    );
                }
            } else {
                // A plain record carries its own keys on the Kinesis record itself.
                assert_eq!(
                    sent[k].explicit_hash_key,
                    r.explicit_hash_key(),
                    "record {i}"
                );
            }
        }
        let plain = sent.iter().filter(|k| !k.aggregated).count();
        if limits.max_size() == 150 {
            assert!(
                plain > 0 && plain < sent.len(),
                "want a mix, got {plain} of {}",
                sent.len()
            );
        }
        if limits.max_count() == 1 {
            assert_eq!(plain, records.len());
        }
        eprintln!(
            "{limits:?}: {} Kinesis records ({plain} plain) for 1000 user records",
            sent.len()
        );
    }
}

#[derive(Deserialize)]
struct TheirKinesisRecord {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data_base64: String,
    user_records: usize,
}

#[test]
fn we_read_the_reference_aggregators_output() {
    let records = workload(2, 1000, 300);
    let input: Vec<_> = records.iter().map(JsonRecord::from_user).collect();
    let input = serde_json::to_string(&input).unwrap();
    for max_size in ["1048576", "51200", "1000"] {
        let output = reference(&["aggregate", "--max-size", max_size], &input);
        let theirs: Vec<TheirKinesisRecord> = serde_json::from_str(&output).unwrap();
        assert!(
            theirs.len() > 1 || max_size == "1048576",
            "{max_size}: {} records",
            theirs.len()
        );
        let mut back = Vec::new();
        for kr in &theirs {
            let users = deaggregate_strict(&kr.partition_key, unb64(&kr.data_base64)).unwrap();
            assert_eq!(users.len(), kr.user_records);
            assert!(
                users
                    .iter()
                    .enumerate()
                    .all(|(i, u)| u.aggregated && u.sub_sequence_number == i as u64)
            );
            // The reference routes an aggregate by its first record's keys.
            assert_eq!(kr.partition_key, users[0].partition_key);
            assert_eq!(kr.explicit_hash_key, users[0].explicit_hash_key);
            back.extend(users);
        }
        assert_eq!(back.len(), records.len(), "{max_size}");
        for (i, (u, r)) in back.iter().zip(&records).enumerate() {
            assert_eq!(u.partition_key, r.partition_key(), "record {i}");
            assert_eq!(&u.data, r.data(), "record {i}");
            // Ours checks presence: exactly the keys that were set, and no others.
            assert_eq!(
                u.explicit_hash_key,
                r.explicit_hash_key().map(|k| k.to_string()),
                "record {i}"
            );
        }
    }
}

#[test]
fn golden_vectors_regenerate_identically() {
    let fresh = reference(&["golden"], "");
    let committed = std::fs::read_to_string(repo_path("tests/golden/vectors.json")).unwrap();
    assert!(
        fresh == committed,
        "tests/golden/vectors.json is stale: regenerate it with \
         `python tests/interop/agg_ref.py golden > tests/golden/vectors.json`"
    );
}
