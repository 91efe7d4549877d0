//! Reading Kinesis records back into user records.

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

use super::proto;
use super::{DIGEST_LEN, MAGIC};
use crate::error::DeaggregationError;

/// One user record read out of a Kinesis record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeaggregatedRecord {
    /// Its partition key: from the aggregate's table, or the Kinesis record's own for a plain
    /// record.
    pub partition_key: String,
    /// Its explicit hash key, only where the producer set one. Kinesis does not return the
    /// explicit hash key of a plain record, so this is `None` for those.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Bytes,
    /// Its index in the aggregate: with the Kinesis record's sequence number, it identifies the
    /// user record. 0 for a plain record.
    pub sub_sequence_number: u64,
    /// Whether it came out of an aggregate.
    pub aggregated: bool,
}

/// What a Kinesis record's bytes turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// No aggregation magic: one plain user record.
    Plain,
    /// A well-formed aggregate; its digest matches.
    Aggregated(DecodedAggregate),
}

/// A well-formed aggregate as [`decode`] read it: the key tables and the records that index
/// them, every index checked and every required field present. (Tags, which neither the KPL nor
/// we write, are read and dropped, as the KCL does.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodedAggregate {
    /// The distinct partition keys, in table order.
    pub partition_key_table: Vec<String>,
    /// The distinct explicit hash keys, in table order.
    pub explicit_hash_key_table: Vec<String>,
    /// The user records, in sub-sequence order.
    pub records: Vec<AggregateEntry>,
}

/// One user record inside a [`DecodedAggregate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AggregateEntry {
    /// Its partition key's index in `partition_key_table`.
    pub partition_key_index: u64,
    /// Its explicit hash key's index in `explicit_hash_key_table`, if it has one.
    pub explicit_hash_key_index: Option<u64>,
    /// Its data.
    pub data: Bytes,
}

/// Whether `data` starts with the aggregation magic. A plain record can start with it too, by
/// chance; only a matching MD5 tells an aggregate for sure.
pub fn has_magic(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Decodes a Kinesis record's data, checking everything strict deaggregation checks: the
/// digest, the protobuf, the required fields and every key index.
///
/// # Errors
/// [`DeaggregationError`] saying what is wrong when the record carries the aggregation magic but
/// is not a valid aggregate (MD5 mismatch, broken protobuf, a key index out of range).
pub fn decode(data: &Bytes) -> Result<Decoded, DeaggregationError> {
    if !has_magic(data) {
        return Ok(Decoded::Plain);
    }
    // The reference deaggregators need at least one byte of body: magic + 16 bytes is not an
    // aggregate.
    if data.len() <= MAGIC.len() + DIGEST_LEN {
        return Err(DeaggregationError::Truncated { len: data.len() });
    }
    let body_end = data.len() - DIGEST_LEN;
    let body = data.slice(MAGIC.len()..body_end);
    let computed: [u8; DIGEST_LEN] = Md5::digest(&body).into();
    let carried = &data[body_end..];
    if computed != carried {
        return Err(DeaggregationError::DigestMismatch {
            carried: hex(carried),
            computed: hex(&computed),
        });
    }
    let agg = proto::AggregatedRecord::decode(body)?;
    let mut records = Vec::with_capacity(agg.records.len());
    for (i, r) in agg.records.into_iter().enumerate() {
        let pk_index = r
            .partition_key_index
            .ok_or(DeaggregationError::MissingField {
                record: i,
                field: "partition_key_index",
            })?;
        check_index(
            i,
            "partition_key_table",
            pk_index,
            agg.partition_key_table.len(),
        )?;
        if let Some(ehk_index) = r.explicit_hash_key_index {
            check_index(
                i,
                "explicit_hash_key_table",
                ehk_index,
                agg.explicit_hash_key_table.len(),
            )?;
        }
        let data = r.data.ok_or(DeaggregationError::MissingField {
            record: i,
            field: "data",
        })?;
        records.push(AggregateEntry {
            partition_key_index: pk_index,
            explicit_hash_key_index: r.explicit_hash_key_index,
            data,
        });
    }
    Ok(Decoded::Aggregated(DecodedAggregate {
        partition_key_table: agg.partition_key_table,
        explicit_hash_key_table: agg.explicit_hash_key_table,
        records,
    }))
}

fn check_index(
    record: usize,
    table: &'static str,
    index: u64,
    table_len: usize,
) -> Result<(), DeaggregationError> {
    if usize::try_from(index).is_ok_and(|i| i < table_len) {
        Ok(())
    } else {
        Err(DeaggregationError::KeyIndexOutOfRange {
            record,
            table,
            index,
            table_len,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn user_records(agg: DecodedAggregate) -> Vec<DeaggregatedRecord> {
    // `decode` checked every index, so the lookups below cannot miss.
    let DecodedAggregate {
        partition_key_table: pks,
        explicit_hash_key_table: ehks,
        records,
    } = agg;
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| DeaggregatedRecord {
            partition_key: pks[r.partition_key_index as usize].clone(),
            explicit_hash_key: r.explicit_hash_key_index.map(|e| ehks[e as usize].clone()),
            data: r.data,
            sub_sequence_number: i as u64,
            aggregated: true,
        })
        .collect()
}

fn plain(partition_key: &str, data: Bytes) -> DeaggregatedRecord {
    DeaggregatedRecord {
        partition_key: partition_key.to_owned(),
        explicit_hash_key: None,
        data,
        sub_sequence_number: 0,
        aggregated: false,
    }
}

/// Reads a Kinesis record (its partition key and data) as the KCL does: an aggregate gives its
/// user records in sub-sequence order; anything else, including a record that has the magic but
/// a bad digest, a broken protobuf body or a key index out of range, is one plain user record.
/// Never fails, never panics.
///
/// A well-formed aggregate with no records gives no user records.
pub fn deaggregate(partition_key: &str, data: Bytes) -> Vec<DeaggregatedRecord> {
    match decode(&data) {
        Ok(Decoded::Aggregated(agg)) => user_records(agg),
        Ok(Decoded::Plain) | Err(_) => vec![plain(partition_key, data)],
    }
}

/// As [`deaggregate`], but a record that carries the aggregation magic and is not a well-formed
/// aggregate is an error naming what is wrong, instead of a plain record.
///
/// # Errors
/// [`DeaggregationError`] saying what is wrong when the record carries the aggregation magic but
/// is not a valid aggregate.
pub fn deaggregate_strict(
    partition_key: &str,
    data: Bytes,
) -> Result<Vec<DeaggregatedRecord>, DeaggregationError> {
    Ok(match decode(&data)? {
        Decoded::Aggregated(agg) => user_records(agg),
        Decoded::Plain => vec![plain(partition_key, data)],
    })
}
