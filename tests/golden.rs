//! Golden vectors: our encoder's bytes equal the reference aws-kinesis-agg aggregator's for the
//! same input. The vectors were made by `tests/interop/agg_ref.py golden` (the interop tests
//! check that they still regenerate identically); this test needs no Python.

mod common;

use common::{JsonRecord, repo_path, unb64};
use kinesis_producer::aggregation::{deaggregate_strict, encode, encode_aggregated};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    records: Vec<JsonRecord>,
    aggregate_base64: String,
}

fn vectors() -> Vectors {
    let text = std::fs::read_to_string(repo_path("tests/golden/vectors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn our_aggregates_equal_the_reference_bytes() {
    let vectors = vectors();
    assert!(vectors.cases.len() >= 8);
    for case in &vectors.cases {
        let records: Vec<_> = case.records.iter().map(JsonRecord::to_user).collect();
        let ours = encode_aggregated(&records);
        let theirs = unb64(&case.aggregate_base64);
        assert_eq!(ours, theirs, "case {:?}: bytes differ", case.name);
        // What a producer sends differs from the reference only for one record, sent plain.
        let sent = encode(&records).unwrap();
        if records.len() > 1 {
            assert_eq!(sent.data, theirs, "case {:?}", case.name);
        } else {
            assert_eq!(sent.data, records[0].data(), "case {:?}", case.name);
        }
    }
}

#[test]
fn we_read_the_reference_bytes_back_exactly() {
    for case in vectors().cases {
        let users = deaggregate_strict("outer", unb64(&case.aggregate_base64)).unwrap();
        let back: Vec<JsonRecord> = users
            .iter()
            .map(|u| JsonRecord {
                partition_key: u.partition_key.clone(),
                explicit_hash_key: u.explicit_hash_key.clone(),
                data_base64: common::b64(&u.data),
            })
            .collect();
        assert_eq!(back, case.records, "case {:?}", case.name);
        assert!(
            users
                .iter()
                .enumerate()
                .all(|(i, u)| u.sub_sequence_number == i as u64)
        );
    }
}
