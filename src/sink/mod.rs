//! Where Kinesis records go: the [`Sink`] trait, in the crate's own types.
//!
//! Two implementations: [`aws::AwsSink`] over aws-sdk-kinesis (the only module that imports the
//! SDK), and `memory::MemorySink`, an in-memory Kinesis with scripted faults for deterministic
//! tests (feature `test-util`).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::hash_key::HashKey;
use crate::outcome::AttemptError;
use crate::shard_map::Shard;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;

/// One entry of a PutRecords call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutEntry {
    /// The partition key to send.
    pub partition_key: String,
    /// The explicit hash key to send, if any.
    pub explicit_hash_key: Option<HashKey>,
    /// The data.
    pub data: Bytes,
}

impl PutEntry {
    /// What Kinesis counts against its limits: data plus partition key bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// The outcome of one entry of a PutRecords call, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult {
    /// Put: where and under which sequence number.
    Put {
        /// The shard that took it.
        shard_id: String,
        /// Its sequence number.
        sequence_number: String,
    },
    /// Not put, with the service's code and message (e.g.
    /// `ProvisionedThroughputExceededException`, `InternalFailure`).
    Failed {
        /// The error code.
        code: String,
        /// The error message.
        message: String,
    },
}

/// A whole call failed: nothing in it was put.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed: {code}: {message}")]
pub struct SinkError {
    /// `PutRecords` or `ListShards`.
    pub operation: &'static str,
    /// The service's error code, or for a call without an answer a transport code
    /// (`ConnectionError`, `RequestTimeout`, `DnsError`, `TlsError`, `HTTP 502`, ...).
    pub code: String,
    /// The service's message, or one sentence naming the endpoint and the cause.
    pub message: String,
    /// The underlying error (the SDK's, with its own chain), if any.
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// A failed `operation` with this code and message and no underlying cause.
    pub fn new(
        operation: &'static str,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        SinkError {
            operation,
            code: code.into(),
            message: message.into(),
            source: None,
        }
    }

    /// What each record of the failed call keeps of it: code, message and cause, shared.
    pub fn to_attempt_error(&self) -> AttemptError {
        let e = AttemptError::new(self.code.clone(), self.message.clone());
        match &self.source {
            Some(source) => e.with_source(Arc::clone(source)),
            None => e,
        }
    }
}

/// Errors are equal when their operation, code and message are: the cause is detail.
impl PartialEq for SinkError {
    fn eq(&self, other: &Self) -> bool {
        (self.operation, &self.code, &self.message)
            == (other.operation, &other.code, &other.message)
    }
}

impl Eq for SinkError {}

/// Puts records into Kinesis and lists shards. Implementations must be cheap to share: the
/// engine holds one in an `Arc` and calls it from many tasks at once.
pub trait Sink: Send + Sync + 'static {
    /// One PutRecords call: one result per entry, in order, or an error for the whole call.
    fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> impl Future<Output = Result<Vec<EntryResult>, SinkError>> + Send;

    /// Every shard of the stream, open and closed (with `closed` set), every page of
    /// ListShards.
    fn list_shards(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Vec<Shard>, SinkError>> + Send;

    /// The stream's own per-record limit in bytes (DescribeStreamSummary's
    /// `MaxRecordSizeInKiB`), asked for with each shard map; `Ok(None)` when the sink does not
    /// know one, and then Kinesis's default, 1 MiB, applies. The default implementation knows
    /// none.
    fn max_record_size(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Option<usize>, SinkError>> + Send {
        let _ = stream;
        async { Ok(None) }
    }
}
