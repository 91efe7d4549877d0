//! # kinesis-producer
//!
//! An in-process producer for Amazon Kinesis Data Streams that packs user records in the KPL
//! aggregation format, so every KCL, Lambda and Firehose consumer reads them unchanged.
//!
//! This release carries the foundation: the aggregation format.
//!
//! ```text
//! UserRecord ──▶ aggregation::Aggregator (one per shard, exact size) ──▶ KinesisRecord
//!                                                                        │ PutRecords
//! DeaggregatedRecord ◀── aggregation::deaggregate ◀── Kinesis record data ◀┘ GetRecords
//! ```
//!
//! ```
//! use std::time::{Duration, Instant};
//! use kinesis_producer::{HashKey, UserRecord};
//! use kinesis_producer::aggregation::{AggregationLimits, Aggregator, deaggregate};
//!
//! let mut aggregator = Aggregator::new(AggregationLimits::default());
//! let deadline = Instant::now() + Duration::from_millis(100);
//! let mut sent = Vec::new();
//! for i in 0..1000 {
//!     let mut record = UserRecord::new(format!("sensor-{}", i % 10), vec![i as u8; 100]).unwrap();
//!     if i % 10 == 0 {
//!         record = record.with_explicit_hash_key(HashKey(i as u128));
//!     }
//!     // When the record does not fit, push flushes what is held and returns it: send that.
//!     if let Some(full) = aggregator.push(record, i, deadline).unwrap() {
//!         sent.push(full.record);
//!     }
//! }
//! sent.extend(aggregator.flush().map(|a| a.record));
//! assert!(sent.len() <= 3 && sent.iter().all(|r| r.size() <= 51_200));
//!
//! let read_back: Vec<_> = sent
//!     .iter()
//!     .flat_map(|r| deaggregate(&r.partition_key, r.data.clone()))
//!     .collect();
//! assert_eq!(read_back.len(), 1000);
//! assert_eq!(read_back[10].explicit_hash_key.as_deref(), Some("10"));
//! assert_eq!(read_back[11].explicit_hash_key, None);
//! ```

#![warn(missing_docs)]

pub mod aggregation;
pub mod config;
mod engine;
pub mod error;
pub mod hash_key;
#[cfg(feature = "local")]
pub mod local;
pub mod producer;
pub mod record;
pub mod shard_map;
pub mod sink;

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use config::{Config, ConfigBuilder};
pub use error::{ConfigError, DeaggregationError, RecordError};
pub use hash_key::HashKey;
pub use producer::{Producer, PutError, PutErrorKind, RecordFuture};
pub use record::{Attempt, Receipt, UserRecord};
