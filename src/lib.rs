//! # kinesis-producer
//!
//! An in-process producer for Amazon Kinesis Data Streams that packs user records in the KPL
//! aggregation format, so every KCL, Lambda and Firehose consumer reads them unchanged.
//!
//! ```text
//!  any thread                      engine task (owns all state)                      network
//!  producer.send(stream, record) ─▶ shard map: hash key (EHK or MD5(pk)) → shard
//!   → RecordFuture                   per-shard Aggregator (exact size, deadline)
//!                                      │ full / RecordMaxBufferedTime / flush
//!                                    collector (≤ CollectionMaxCount, ≤ CollectionMaxSize)
//!                                      │ ≤ MaxConnections calls
//!                                    Sink::put_records ──────────────────────────▶ Kinesis
//!                                      │ failed entries only: backoff, until RecordTtl
//!  RecordFuture ◀── Receipt {shard, sequence number, sub-sequence, attempts}
//!               ◀── PutError {kind, record handed back, attempts}
//! ```
//!
//! ```
//! # #[cfg(feature = "local")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_producer::local::{LocalKinesis, LocalOptions};
//! use kinesis_producer::{Producer, UserRecord};
//!
//! // An embedded local Kinesis on 127.0.0.1; against AWS, use Config::builder().region(..).
//! let kinesis = LocalKinesis::start(LocalOptions::default()).await?;
//! kinesis.create_stream("events", 2).await?;
//! let producer = Producer::new(kinesis.config().build()?).await;
//!
//! let futures: Vec<_> = (0..100)
//!     .map(|i| producer.send("events", UserRecord::new(format!("user-{}", i % 7), format!("event {i}")).unwrap()))
//!     .collect();
//! for f in futures {
//!     let receipt = f.await?;
//!     assert!(receipt.shard_id.starts_with("shardId-"));
//! }
//! producer.shutdown().await;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "local"))]
//! # fn main() {}
//! ```
//!
//! The codec is usable on its own: [`aggregation::Aggregator`] packs user records for one shard
//! with exact size accounting, [`aggregation::deaggregate`] reads them back.
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
//!     if let Some(full) = aggregator.push(record, deadline).unwrap() {
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
//!
//! Features: `aws` (default; the aws-sdk-kinesis sink and [`Producer::new`]), `cloudwatch`
//! (uploading the metrics to CloudWatch, [`ConfigBuilder::upload_metrics`]), `local` (the
//! embedded local Kinesis), `test-util` (the in-memory sink). The `kpl` tool is its own package,
//! `cli/`.

#![warn(missing_docs)]

pub mod aggregation;
mod budget;
pub mod config;
mod engine;
pub mod error;
pub mod hash_key;
pub(crate) mod limiter;
#[cfg(feature = "local")]
pub mod local;
pub mod metrics;
pub mod outcome;
pub mod producer;
pub mod record;
pub mod shard_map;
pub mod sink;
pub mod spool;

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Not part of the API (no semver promise, hidden from the docs): internals the crate's own
/// tests need. The engine's core, and the prost structs mirroring `proto/aggregation.proto`, for the KCL model in
/// `tests/common/kcl.rs`, which decodes an aggregate the way the KCL's protobuf runtime does.
#[doc(hidden)]
pub mod __private {
    pub use crate::aggregation::proto::{AggregatedRecord, Record, Tag};
    /// The engine's sans-I/O core, for the deterministic simulation (`tests/simulation.rs`).
    pub use crate::engine::simulated as core;
    /// Called at the spool writer's kill points, for the crash tests (`cli/tests/cli_spool.rs`).
    pub use crate::spool::writer::set_hook as spool_hook;
}

pub use config::{Config, ConfigBuilder};
pub use error::{ConfigError, DeaggregationError, PropertiesError, RecordError};
pub use hash_key::HashKey;
pub use outcome::{Attempt, AttemptError, Attempts, PutError, PutErrorKind, Receipt};
pub use producer::{BatchFuture, Buffered, Producer, RecordFuture};
pub use record::UserRecord;
pub use spool::{SpoolError, SpoolStats};
