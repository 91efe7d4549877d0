//! The KCL's reading of a Kinesis record on a shard, rule for rule, for tests that stand in for
//! a KCL consumer.
//!
//! Reference: `AggregatorUtil.deaggregate(records, startingHashKey, endingHashKey)` in
//! awslabs/amazon-kinesis-client (KCL 2.x and 3.x,
//! `amazon-kinesis-client/src/main/java/software/amazon/kinesis/retrieval/AggregatorUtil.java`),
//! which the KCL calls with the hash key range of the shard being read:
//! - a record is an aggregate only if it starts with the magic, has more than 16 bytes after it,
//!   its last 16 bytes are the MD5 of the bytes between, and those parse as an
//!   `AggregatedRecord` (proto2: a missing required field is a parse failure); otherwise it is
//!   yielded as one plain record, **never filtered by hash key**;
//! - in an aggregate, each user record's effective hash key is its explicit hash key if it has
//!   one, else MD5 of its partition key; at the first one outside the shard's range, the user
//!   records of this aggregate already yielded are removed and the rest skipped: **the whole
//!   aggregate is dropped**;
//! - an exception while walking the records (a key index out of the tables, an explicit hash
//!   key that is not a number) is logged and ends the walk, keeping what was already yielded.
#![allow(dead_code)]

use bytes::Bytes;
use kinesis_producer::__private::AggregatedRecord;
use kinesis_producer::HashKey;
use md5::{Digest, Md5};
use prost::Message;

const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// A user record as a KCL record processor receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KclRecord {
    pub partition_key: String,
    pub data: Bytes,
    pub sequence_number: String,
    pub sub_sequence_number: u64,
    pub aggregated: bool,
}

/// What a KCL consumer reading a shard whose hash key range is `start..=end` receives for the
/// Kinesis record (`partition_key`, `data`, `sequence_number`) it read there.
pub fn deaggregate(
    partition_key: &str,
    data: &Bytes,
    sequence_number: &str,
    start: HashKey,
    end: HashKey,
) -> Vec<KclRecord> {
    let plain = || {
        vec![KclRecord {
            partition_key: partition_key.to_owned(),
            data: data.clone(),
            sequence_number: sequence_number.to_owned(),
            sub_sequence_number: 0,
            aggregated: false,
        }]
    };
    if data.len() < MAGIC.len() || data[..4] != MAGIC || data.len() - 4 <= 16 {
        return plain();
    }
    let message = &data[4..data.len() - 16];
    if Md5::digest(message).as_slice() != &data[data.len() - 16..] {
        return plain();
    }
    let Ok(aggregate) = AggregatedRecord::decode(message) else {
        return plain();
    };
    // proto2 `required` fields: the Java runtime refuses a message without them.
    if aggregate
        .records
        .iter()
        .any(|r| r.partition_key_index.is_none() || r.data.is_none())
    {
        return plain();
    }
    let mut out = Vec::new();
    for (sub, r) in aggregate.records.iter().enumerate() {
        // The exception path: keep what was yielded, stop.
        let Some(pk) = aggregate
            .partition_key_table
            .get(r.partition_key_index.unwrap() as usize)
        else {
            break;
        };
        let key = match r.explicit_hash_key_index {
            Some(i) => match aggregate
                .explicit_hash_key_table
                .get(i as usize)
                .and_then(|k| k.parse::<u128>().ok())
            {
                Some(k) => HashKey(k),
                None => break,
            },
            None => HashKey::from_partition_key(pk),
        };
        if key < start || key > end {
            // The whole aggregate is dropped, what was yielded of it included.
            return Vec::new();
        }
        out.push(KclRecord {
            partition_key: pk.clone(),
            data: r.data.clone().unwrap(),
            sequence_number: sequence_number.to_owned(),
            sub_sequence_number: sub as u64,
            aggregated: true,
        });
    }
    out
}
