//! Unit and property tests of the codec: exact sizes, limits, round trips, malformed input.
//! (Over 600 lines on purpose: one file holds every case of the one format, so that a change
//! to the encoder meets all of them at once; the helpers at the top serve them all.)
#![allow(clippy::disallowed_methods)] // a test picks its own instants from the clock (clippy.toml keeps the library's stages off the clock)

use std::time::{Duration, Instant};

use bytes::Bytes;
use md5::{Digest, Md5};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::error::{DeaggregationError, RecordError};
use crate::hash_key::HashKey;
use crate::record::UserRecord;

fn rec(pk: &str, data: &[u8]) -> UserRecord {
    UserRecord::new(pk, Bytes::copy_from_slice(data)).unwrap()
}

fn at(ms: u64) -> Instant {
    // A fixed base keeps deadlines comparable within a test.
    thread_local!(static BASE: Instant = Instant::now());
    BASE.with(|b| *b + Duration::from_millis(ms))
}

/// The same aggregate, encoded through the prost structs: an independent encoder.
fn prost_aggregate(records: &[UserRecord]) -> Vec<u8> {
    let mut agg = proto::AggregatedRecord::default();
    for r in records {
        let pk = match agg
            .partition_key_table
            .iter()
            .position(|k| k == r.partition_key())
        {
            Some(i) => i,
            None => {
                agg.partition_key_table.push(r.partition_key().to_owned());
                agg.partition_key_table.len() - 1
            }
        };
        let ehk = r.explicit_hash_key().map(|key| {
            let key = key.to_string();
            match agg.explicit_hash_key_table.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    agg.explicit_hash_key_table.push(key);
                    agg.explicit_hash_key_table.len() - 1
                }
            }
        });
        agg.records.push(proto::Record {
            partition_key_index: Some(pk as u64),
            explicit_hash_key_index: ehk.map(|i| i as u64),
            data: Some(r.data().clone()),
            tags: vec![],
        });
    }
    let body = agg.encode_to_vec();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

fn push(
    agg: &mut Aggregator<(UserRecord, usize)>,
    r: UserRecord,
    tag: usize,
) -> TryPush<(UserRecord, usize)> {
    agg.try_push((r, tag), at(100)).unwrap()
}

#[test]
fn one_record_is_sent_plain_with_its_own_keys() {
    let mut agg = Aggregator::new(AggregationLimits::default());
    let r = rec("user-1", b"hello").with_explicit_hash_key(HashKey(42));
    assert!(matches!(push(&mut agg, r, 7), TryPush::Added));
    assert_eq!(agg.size(), 11);
    let out = agg.flush().unwrap();
    assert_eq!(
        out.record,
        KinesisRecord {
            partition_key: "user-1".into(),
            explicit_hash_key: Some(HashKey(42)),
            data: Bytes::from_static(b"hello"),
            aggregated: false,
            user_records: 1,
        }
    );
    assert_eq!(out.entries.len(), 1);
    assert_eq!(out.entries[0].1, 7);
    assert!(agg.is_empty() && agg.flush().is_none());
}

#[test]
fn aggregate_routes_by_first_records_hash_key() {
    let mut agg = Aggregator::new(AggregationLimits::default());
    for (i, pk) in ["b", "c", "b"].into_iter().enumerate() {
        assert!(matches!(push(&mut agg, rec(pk, b"x"), i), TryPush::Added));
    }
    let out = agg.flush().unwrap();
    assert_eq!(out.record.partition_key, "a");
    assert_eq!(
        out.record.explicit_hash_key,
        Some(HashKey::from_partition_key("b"))
    );
    assert!(out.record.aggregated);
    assert_eq!(out.record.user_records, 3);
    assert_eq!(
        out.entries.iter().map(|e| e.1).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    // Keys are deduplicated: two table entries for three records.
    let Decoded::Aggregated(p) = decode(&out.record.data).unwrap() else {
        panic!("plain")
    };
    assert_eq!(p.partition_key_table, ["b", "c"]);
    assert_eq!(
        p.records
            .iter()
            .map(|r| r.partition_key_index)
            .collect::<Vec<_>>(),
        [0, 1, 0]
    );
}

#[test]
fn known_bytes_of_a_small_aggregate() {
    // Worked by hand from the wire format: tables, then records, field-number order.
    let records = [
        rec("a", b"1"),
        rec("b", b"").with_explicit_hash_key(HashKey(5)),
    ];
    let bytes = encode_aggregated(&records);
    let body: &[u8] = &[
        0x0a, 1, b'a', // partition_key_table[0] = "a"
        0x0a, 1, b'b', // partition_key_table[1] = "b"
        0x12, 1, b'5', // explicit_hash_key_table[0] = "5"
        0x1a, 5, 0x08, 0, 0x1a, 1, b'1', // records[0] = {pk 0, data "1"}
        0x1a, 6, 0x08, 1, 0x10, 0, 0x1a, 0, // records[1] = {pk 1, ehk 0, data ""}
    ];
    assert_eq!(&bytes[..4], &MAGIC);
    assert_eq!(&bytes[4..bytes.len() - 16], body);
    assert_eq!(&bytes[bytes.len() - 16..], Md5::digest(body).as_slice());
}

#[test]
fn fills_to_exactly_the_max_size() {
    // Find the data length that lands a second record exactly on the limit.
    let max = 150;
    let limits = AggregationLimits::new(max, 100).unwrap();
    let mut agg = Aggregator::new(limits);
    assert!(matches!(
        push(&mut agg, rec("k", b"first"), 0),
        TryPush::Added
    ));
    let base = {
        let mut probe = Aggregator::<UserRecord>::new(limits);
        let _ = probe.try_push(rec("k", b"first"), at(0)).unwrap();
        let _ = probe.try_push(rec("k", b""), at(0)).unwrap();
        probe.size()
    };
    let fill = max - base; // data length under 128 keeps the varint one byte
    assert!(fill < 128);
    assert!(matches!(
        push(&mut agg, rec("k", &vec![7; fill + 1]), 1),
        TryPush::NoCapacity(..)
    ));
    assert!(matches!(
        push(&mut agg, rec("k", &vec![7; fill]), 1),
        TryPush::Added
    ));
    assert_eq!(agg.size(), max);
    assert!(agg.is_full());
    assert_eq!(agg.flush().unwrap().record.size(), max);
}

#[test]
fn max_count_bounds_an_aggregate() {
    let mut agg = Aggregator::new(AggregationLimits::new(51_200, 3).unwrap());
    for i in 0..3 {
        assert!(matches!(push(&mut agg, rec("k", b"x"), i), TryPush::Added));
    }
    assert!(agg.is_full());
    match push(&mut agg, rec("k", b"x"), 3) {
        TryPush::NoCapacity((r, tag)) => assert_eq!((r.data().as_ref(), tag), (&b"x"[..], 3)),
        TryPush::Added => panic!("a fourth record was taken"),
    }
    assert_eq!(agg.flush().unwrap().record.user_records, 3);
}

#[test]
fn a_record_too_big_to_aggregate_leaves_alone_and_plain() {
    let mut agg = Aggregator::new(AggregationLimits::new(1000, 100).unwrap());
    assert!(matches!(
        push(&mut agg, rec("small", b"x"), 0),
        TryPush::Added
    ));
    // 2000 bytes: over AggregationMaxSize, under the 1 MiB record limit.
    let big = rec("big", &[1; 2000]);
    let TryPush::NoCapacity((big, _)) = push(&mut agg, big, 1) else {
        panic!("taken beside another")
    };
    let first = agg.flush().unwrap();
    assert!(!first.record.aggregated);
    assert!(matches!(push(&mut agg, big, 1), TryPush::Added));
    assert!(agg.is_full(), "nothing may join an oversized record");
    assert!(matches!(
        push(&mut agg, rec("small", b"y"), 2),
        TryPush::NoCapacity(..)
    ));
    assert_eq!(agg.size(), 2003);
    let out = agg.flush().unwrap();
    assert_eq!(out.record.partition_key, "big");
    assert!(!out.record.aggregated);
    assert_eq!(out.record.size(), 2003);
    // Afterwards the aggregator aggregates again.
    assert!(matches!(
        push(&mut agg, rec("small", b"z"), 3),
        TryPush::Added
    ));
    assert!(!agg.is_full());
}

#[test]
fn a_record_over_the_kinesis_limit_is_handed_back_and_nothing_changes() {
    let mut agg = Aggregator::new(AggregationLimits::default());
    assert!(matches!(
        push(&mut agg, rec("keep", b"me"), 0),
        TryPush::Added
    ));
    let huge = rec("0123456789", &vec![0; MAX_RECORD_SIZE - 9]);
    let rejected = agg.try_push((huge, 1), at(0)).unwrap_err();
    assert_eq!(
        rejected.error,
        RecordError::RecordTooLarge {
            size: 1_048_577,
            data_len: 1_048_567,
            key_len: 10,
            limit: 1_048_576
        }
    );
    assert_eq!(rejected.entry.1, 1);
    assert_eq!(rejected.entry.0.data().len(), 1_048_567);
    assert_eq!(agg.len(), 1);
    assert_eq!(agg.earliest_deadline(), Some(at(100)));
    // Exactly at the limit is fine, alone.
    let limit = rec("0123456789", &vec![0; MAX_RECORD_SIZE - 10]);
    assert!(matches!(
        agg.try_push((limit, 2), at(0)).unwrap(),
        TryPush::NoCapacity(..)
    ));
}

#[test]
fn a_raised_stream_limit_lets_bigger_records_through() {
    let limits = AggregationLimits::with_max_record_size(51_200, 10, 2 * MAX_RECORD_SIZE).unwrap();
    let mut agg = Aggregator::new(limits);
    let r = rec("k", &vec![0; MAX_RECORD_SIZE + 5]);
    assert!(matches!(agg.try_push(r, at(0)).unwrap(), TryPush::Added));
    assert_eq!(agg.flush().unwrap().record.size(), MAX_RECORD_SIZE + 6);
}

#[test]
fn earliest_deadline_is_the_minimum_and_clears_on_flush() {
    let mut agg = Aggregator::new(AggregationLimits::default());
    assert_eq!(agg.earliest_deadline(), None);
    for (i, ms) in [50u64, 20, 80].into_iter().enumerate() {
        let _ = agg.try_push((rec("k", b"x"), i), at(ms)).unwrap();
    }
    assert_eq!(agg.earliest_deadline(), Some(at(20)));
    agg.flush();
    assert_eq!(agg.earliest_deadline(), None);
}

#[test]
fn limits_are_validated_with_kpl_names() {
    let msg = |r: Result<AggregationLimits, crate::error::ConfigError>| r.unwrap_err().to_string();
    assert_eq!(
        msg(AggregationLimits::new(63, 1)),
        "AggregationMaxSize is 63; the range is 64..=1048576"
    );
    assert_eq!(
        msg(AggregationLimits::new(1_048_577, 1)),
        "AggregationMaxSize is 1048577; the range is 64..=1048576"
    );
    assert_eq!(
        msg(AggregationLimits::new(64, 0)),
        "AggregationMaxCount is 0; the range is 1..=4294967295"
    );
    assert_eq!(
        msg(AggregationLimits::with_max_record_size(64, 1, 1000)),
        "MaxRecordSize is 1000; the range is 1048576..=10485760"
    );
    assert!(AggregationLimits::new(64, 1).is_ok());
    assert!(AggregationLimits::with_max_record_size(10 << 20, 1, 10 << 20).is_ok());
    assert_eq!(AggregationLimits::default().max_size(), 51_200);
}

#[test]
fn encode_matches_the_kpl_shapes() {
    assert!(encode(&[]).is_none());
    let one = encode(&[rec("k", b"v")]).unwrap();
    assert!(!one.aggregated && one.data.as_ref() == b"v" && one.partition_key == "k");
    let two = encode(&[rec("k", b"v"), rec("j", b"w")]).unwrap();
    assert!(two.aggregated && two.partition_key == "a" && has_magic(&two.data));
}

// ---------- deaggregation ----------

fn aggregate_bytes(body: &[u8]) -> Bytes {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&Md5::digest(body));
    Bytes::from(out)
}

#[test]
fn plain_records_pass_through() {
    let users = deaggregate_strict("pk", Bytes::from_static(b"plain")).unwrap();
    assert_eq!(
        users,
        [DeaggregatedRecord {
            partition_key: "pk".into(),
            explicit_hash_key: None,
            data: Bytes::from_static(b"plain"),
            sub_sequence_number: 0,
            aggregated: false,
        }]
    );
    assert_eq!(deaggregate("pk", Bytes::new()).len(), 1);
}

#[test]
fn malformed_aggregates_are_errors_when_strict_and_plain_when_lenient() {
    let good = encode_aggregated(&[rec("a", b"1"), rec("b", b"2")]);
    let mut bad_digest = good.to_vec();
    *bad_digest.last_mut().unwrap() ^= 1;
    let mut truncated_body = MAGIC.to_vec();
    truncated_body.extend_from_slice(&good[4..good.len() - 20]);
    let truncated_body = aggregate_bytes(&truncated_body[4..]);
    // records[0] = {pk index 3, data ""} with an empty table
    let bad_index = aggregate_bytes(&[0x1a, 4, 0x08, 3, 0x1a, 0]);
    let bad_ehk = aggregate_bytes(&[0x0a, 1, b'k', 0x1a, 6, 0x08, 0, 0x10, 0, 0x1a, 0]);
    let no_pk_index = aggregate_bytes(&[0x0a, 1, b'k', 0x1a, 2, 0x1a, 0]);
    let no_data = aggregate_bytes(&[0x0a, 1, b'k', 0x1a, 2, 0x08, 0]);
    let short = Bytes::from([&MAGIC[..], &[0u8; 16]].concat());
    let cases: Vec<(Bytes, &str)> = vec![
        (Bytes::from(bad_digest), "aggregate MD5 mismatch"),
        (
            truncated_body,
            "aggregate body is not a valid AggregatedRecord",
        ),
        (
            bad_index,
            "user record 0 of the aggregate refers to partition_key_table entry 3, but the table has 0 entries",
        ),
        (
            bad_ehk,
            "user record 0 of the aggregate refers to explicit_hash_key_table entry 0, but the table has 0 entries",
        ),
        (
            no_pk_index,
            "user record 0 of the aggregate has no partition_key_index (a required field)",
        ),
        (
            no_data,
            "user record 0 of the aggregate has no data (a required field)",
        ),
        (
            short,
            "record starts with the aggregation magic but is 20 bytes",
        ),
    ];
    for (data, message) in cases {
        let err = deaggregate_strict("outer", data.clone()).unwrap_err();
        assert!(
            err.to_string().starts_with(message),
            "{err} / expected {message}"
        );
        let lenient = deaggregate("outer", data.clone());
        assert_eq!(lenient.len(), 1, "{message}");
        assert_eq!(
            (lenient[0].partition_key.as_str(), &lenient[0].data),
            ("outer", &data)
        );
        assert!(!lenient[0].aggregated);
    }
    assert!(matches!(
        deaggregate_strict("k", Bytes::from([&MAGIC[..], &[0u8; 3]].concat())),
        Err(DeaggregationError::Truncated { len: 7 })
    ));
}

#[test]
fn an_empty_aggregate_has_no_user_records() {
    // A body with only a key table: valid, and it carries nothing.
    let data = aggregate_bytes(&[0x0a, 1, b'k']);
    assert!(deaggregate_strict("k", data.clone()).unwrap().is_empty());
    assert!(deaggregate("k", data).is_empty());
}

#[test]
fn tags_and_unknown_fields_are_read_and_ignored() {
    // records[0] = {pk 0, data "d", tags [{key "t"}]}, then unknown field 9 (varint 1).
    let data = aggregate_bytes(&[
        0x0a, 1, b'k', 0x1a, 10, 0x08, 0, 0x1a, 1, b'd', 0x22, 3, 0x0a, 1, b't', 0x48, 1,
    ]);
    let users = deaggregate_strict("outer", data).unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(
        (users[0].partition_key.as_str(), users[0].data.as_ref()),
        ("k", &b"d"[..])
    );
}

// ---------- properties ----------

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        // Few distinct keys: lots of deduplication.
        (0u8..6).prop_map(|i| format!("k{i}")),
        // Non-ASCII, multi-byte and long keys.
        "[a-zé🔑ключ]{1,12}",
        (1usize..=256).prop_map(|n| "x".repeat(n)),
        (200usize..=256).prop_map(|n| "ж".repeat(n)),
    ]
}

fn arb_record() -> impl Strategy<Value = UserRecord> {
    let data = prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..64),
        2 => proptest::collection::vec(any::<u8>(), 100..300),
        1 => (1000usize..5000).prop_map(|n| vec![3u8; n]),
    ];
    let ehk = prop_oneof![
        3 => Just(None),
        1 => (0u128..4).prop_map(Some),
        1 => any::<u128>().prop_map(Some),
    ];
    (arb_key(), ehk, data).prop_map(|(pk, ehk, data)| {
        let r = UserRecord::new(pk, data).unwrap();
        match ehk {
            Some(k) => r.with_explicit_hash_key(HashKey(k)),
            None => r,
        }
    })
}

fn arb_limits() -> impl Strategy<Value = AggregationLimits> {
    let size = prop_oneof![
        64usize..600,
        600usize..6000,
        Just(51_200),
        Just(MAX_RECORD_SIZE)
    ];
    let count = prop_oneof![1usize..5, 5usize..200, Just(DEFAULT_AGGREGATION_MAX_COUNT)];
    (size, count).prop_map(|(s, c)| AggregationLimits::new(s, c).unwrap())
}

/// Checks one flushed aggregate against what went in and what was predicted.
fn check_flushed(
    out: &Aggregate<(UserRecord, usize)>,
    predicted: usize,
    limits: AggregationLimits,
) -> Result<(), TestCaseError> {
    let rec = &out.record;
    prop_assert_eq!(
        rec.size(),
        predicted,
        "predicted size must equal encoded size"
    );
    prop_assert!(out.entries.len() <= limits.max_count());
    prop_assert!(rec.size() <= limits.max_record_size());
    if out.entries.len() > 1 {
        prop_assert!(rec.size() <= limits.max_size());
        prop_assert!(rec.aggregated);
        let records: Vec<UserRecord> = out.entries.iter().map(|e| e.0.clone()).collect();
        prop_assert_eq!(
            rec.data.to_vec(),
            prost_aggregate(&records),
            "hand encoder == prost"
        );
        prop_assert_eq!(rec.explicit_hash_key, Some(records[0].hash_key()));
    } else {
        prop_assert!(!rec.aggregated);
    }
    let users = deaggregate_strict(&rec.partition_key, rec.data.clone()).unwrap();
    prop_assert_eq!(users.len(), out.entries.len());
    for (i, (u, (r, _))) in users.iter().zip(&out.entries).enumerate() {
        prop_assert_eq!(&u.partition_key, r.partition_key());
        prop_assert_eq!(&u.data, r.data());
        if out.entries.len() > 1 {
            prop_assert_eq!(
                u.explicit_hash_key.clone(),
                r.explicit_hash_key().map(|k| k.to_string())
            );
            prop_assert_eq!(u.sub_sequence_number, i as u64);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The aggregator's size is exact at every step, limits hold, an empty aggregator takes any
    /// acceptable record, and every record comes out once, in order, byte for byte.
    #[test]
    fn aggregator_sizes_are_exact_and_nothing_is_lost(
        limits in arb_limits(),
        records in proptest::collection::vec(arb_record(), 0..120),
    ) {
        let mut agg = Aggregator::new(limits);
        let mut out_tags = Vec::new();
        for (tag, r) in records.iter().cloned().enumerate() {
            let full_before = agg.is_full();
            match agg.try_push((r, tag), at(tag as u64)).unwrap() {
                TryPush::Added => prop_assert!(!full_before, "a full aggregator took a record"),
                TryPush::NoCapacity((r, tag)) => {
                    prop_assert!(!agg.is_empty(), "an empty aggregator refused a record");
                    let predicted = agg.size();
                    let out = agg.flush().unwrap();
                    check_flushed(&out, predicted, limits)?;
                    out_tags.extend(out.entries.iter().map(|e| e.1));
                    prop_assert!(matches!(agg.try_push((r, tag), at(0)).unwrap(), TryPush::Added));
                }
            }
        }
        let predicted = agg.size();
        if let Some(out) = agg.flush() {
            check_flushed(&out, predicted, limits)?;
            out_tags.extend(out.entries.iter().map(|e| e.1));
        }
        prop_assert_eq!(out_tags, (0..records.len()).collect::<Vec<_>>());
    }

    /// `push` makes exactly the aggregates that `try_push` + `flush` make, and never refuses.
    #[test]
    fn push_equals_try_push_then_flush(
        limits in arb_limits(),
        records in proptest::collection::vec(arb_record(), 0..80),
    ) {
        let mut by_push = Aggregator::new(limits);
        let mut pushed = Vec::new();
        let mut by_try = Aggregator::new(limits);
        let mut tried = Vec::new();
        for (tag, r) in records.into_iter().enumerate() {
            pushed.extend(by_push.push((r.clone(), tag), at(0)).unwrap().map(|a| a.record));
            if let TryPush::NoCapacity((r, tag)) = by_try.try_push((r, tag), at(0)).unwrap() {
                tried.extend(by_try.flush().map(|a| a.record));
                prop_assert!(matches!(by_try.try_push((r, tag), at(0)).unwrap(), TryPush::Added));
            }
            prop_assert_eq!(by_push.size(), by_try.size());
        }
        pushed.extend(by_push.flush().map(|a| a.record));
        tried.extend(by_try.flush().map(|a| a.record));
        prop_assert_eq!(pushed, tried);
    }

    /// encode_aggregated agrees with prost for any input, and strict deaggregation inverts it.
    #[test]
    fn encode_round_trips(records in proptest::collection::vec(arb_record(), 1..40)) {
        let bytes = encode_aggregated(&records);
        prop_assert_eq!(bytes.to_vec(), prost_aggregate(&records));
        let users = deaggregate_strict("outer", bytes).unwrap();
        prop_assert_eq!(users.len(), records.len());
        for (u, r) in users.iter().zip(&records) {
            prop_assert_eq!(&u.partition_key, r.partition_key());
            prop_assert_eq!(&u.data, r.data());
            prop_assert_eq!(u.explicit_hash_key.clone(), r.explicit_hash_key().map(|k| k.to_string()));
        }
    }

    /// Any bytes: no panic; lenient always yields something sensible; strict success agrees.
    #[test]
    fn any_bytes_deaggregate_without_panic(data in proptest::collection::vec(any::<u8>(), 0..200), magic: bool) {
        let data = if magic { [&MAGIC[..], &data].concat() } else { data };
        let data = Bytes::from(data);
        let lenient = deaggregate("pk", data.clone());
        match deaggregate_strict("pk", data.clone()) {
            Ok(strict) => prop_assert_eq!(strict, lenient),
            Err(_) => {
                prop_assert_eq!(lenient.len(), 1);
                prop_assert_eq!(&lenient[0].data, &data);
            }
        }
    }

    /// Any single corrupted byte of an aggregate is caught.
    #[test]
    fn corruption_is_detected(records in proptest::collection::vec(arb_record(), 2..10), pos: usize, flip in 1u8..=255) {
        let mut bytes = encode_aggregated(&records).to_vec();
        let pos = pos % bytes.len();
        bytes[pos] ^= flip;
        let bytes = Bytes::from(bytes);
        if pos < MAGIC.len() {
            // No magic: a plain record, as any consumer would read it.
            prop_assert!(!deaggregate_strict("pk", bytes).unwrap()[0].aggregated);
        } else {
            prop_assert!(deaggregate_strict("pk", bytes.clone()).is_err());
            prop_assert!(!deaggregate("pk", bytes)[0].aggregated);
        }
    }
}
