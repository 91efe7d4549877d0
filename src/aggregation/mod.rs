//! The KPL aggregation format: encoder, exact-size aggregator, deaggregator.
//!
//! ```text
//! user records ──▶ Aggregator::try_push ──▶ Aggregator::flush ──▶ KinesisRecord ──▶ PutRecords
//!  (pk, ehk?, data)   exact size, deadline    1 record: plain        pk "a", ehk = first
//!                                             n records: aggregate   record's hash key
//!
//! Kinesis record data ──▶ deaggregate / deaggregate_strict ──▶ user records + sub-sequence numbers
//! ```
//!
//! An aggregate is the magic `F3 89 9A C2`, then a protobuf `AggregatedRecord` (see
//! `proto/aggregation.proto`), then the MD5 of the protobuf. The KCL, the AWS Lambda deaggregators and Firehose read it; our bytes
//! equal those of the reference `aws-kinesis-agg` aggregator for the same input.

mod aggregator;
mod deaggregate;
mod packer;
pub(crate) mod proto;

pub use aggregator::{
    Aggregate, AggregationLimits, Aggregator, DEFAULT_AGGREGATION_MAX_COUNT,
    DEFAULT_AGGREGATION_MAX_SIZE, Entry, KinesisRecord, MIN_AGGREGATION_MAX_SIZE, Rejected,
    TryPush, encode, encode_aggregated,
};
pub use deaggregate::{
    AggregateEntry, DeaggregatedRecord, Decoded, DecodedAggregate, deaggregate, deaggregate_strict,
    decode, has_magic,
};

/// The four bytes an aggregate starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// The length of the MD5 digest an aggregate ends with.
pub const DIGEST_LEN: usize = 16;
/// Bytes an aggregate adds around its protobuf body: magic and digest.
pub const AGGREGATE_OVERHEAD: usize = MAGIC.len() + DIGEST_LEN;
/// The partition key the KPL gives an aggregate: routing is by explicit hash key, so one byte.
pub const AGGREGATE_PARTITION_KEY: &str = "a";
/// Kinesis's default per-record limit, data plus partition key (PutRecords API reference).
pub const MAX_RECORD_SIZE: usize = 1024 * 1024;
/// The highest per-record limit a stream can be given (`MaxRecordSizeInKiB` = 10240).
pub const MAX_RECORD_SIZE_LIMIT: usize = 10 * 1024 * 1024;
/// Kinesis bills one PUT payload unit per started 25 KiB of a record.
pub const PUT_PAYLOAD_UNIT: usize = 25 * 1024;

/// PUT payload units Kinesis bills for one record of `size` bytes (at least one).
///
/// ```
/// use kinesis_producer::aggregation::put_payload_units;
/// assert_eq!(put_payload_units(0), 1);
/// assert_eq!(put_payload_units(25 * 1024), 1);
/// assert_eq!(put_payload_units(51_200), 2);
/// assert_eq!(put_payload_units(51_201), 3);
/// ```
pub fn put_payload_units(size: usize) -> u64 {
    size.div_ceil(PUT_PAYLOAD_UNIT).max(1) as u64
}

#[cfg(test)]
mod tests;
