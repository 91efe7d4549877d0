//! What becomes of a user record: each attempt, the receipt of a record put, or the error
//! that hands back a record that was not.

use std::sync::Arc;

use crate::error::RecordError;
use crate::record::UserRecord;

/// Why an attempt failed: the service's error code and message (or, for a call that got no
/// answer, a code such as `ConnectionError` or `RequestTimeout` and a sentence naming the
/// endpoint and the cause), with the underlying error kept as its [`source`].
///
/// It is shared: every user record that failed in the same PutRecords call or Kinesis record
/// holds the same `Arc`, so an error is stored once, not once per record and attempt.
///
/// [`source`]: std::error::Error::source
#[derive(Debug, Clone)]
pub struct AttemptError {
    /// The error code, e.g. `ProvisionedThroughputExceededException` or `ConnectionError`.
    pub code: String,
    /// The message: the service's, or one sentence describing a transport failure.
    pub message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl AttemptError {
    /// An error with this code and message and no underlying cause.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        AttemptError {
            code: code.into(),
            message: message.into(),
            source: None,
        }
    }

    /// The same error, with `source` as its cause.
    pub fn with_source(mut self, source: Arc<dyn std::error::Error + Send + Sync>) -> Self {
        self.source = Some(source);
        self
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AttemptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Errors are equal when their code and message are: the cause is detail.
impl PartialEq for AttemptError {
    fn eq(&self, other: &Self) -> bool {
        (&self.code, &self.message) == (&other.code, &other.message)
    }
}

impl Eq for AttemptError {}

/// One attempt to put a record: when it started relative to the record's arrival, how long it
/// took, and the error the service gave, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// Time from the record's arrival to the start of this attempt.
    pub delay: std::time::Duration,
    /// How long the PutRecords call took.
    pub duration: std::time::Duration,
    /// Why it failed (shared with the other records that failed with it), or `None` when the
    /// attempt succeeded.
    pub error: Option<Arc<AttemptError>>,
}

impl Attempt {
    /// Whether this attempt put the record.
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }
}

/// The attempts made for a record, in order; reads as a slice of [`Attempt`].
///
/// One attempt is held inline: a record put on its first try costs no allocation for it. At
/// most [`Attempts::KEPT`] are kept in detail (the first and the latest): a record retried
/// through a long outage (a hundred attempts in two minutes) must not grow without bound in
/// memory. [`Attempts::count`] says how many were made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attempts {
    kept: smallvec::SmallVec<[Attempt; 1]>,
    made: u32,
}

impl Attempts {
    /// How many attempts are kept in detail at most: the first and the latest.
    pub const KEPT: usize = 8;

    pub(crate) fn push(&mut self, attempt: Attempt) {
        if self.kept.len() == Self::KEPT {
            // Keep the first (when the record first went out) and the latest.
            self.kept.remove(1);
        }
        self.kept.push(attempt);
        self.made = self.made.saturating_add(1);
    }

    /// How many attempts were made (more than the slice holds when some were not kept).
    pub fn count(&self) -> usize {
        self.made as usize
    }

    /// The kept attempts as a `Vec`.
    pub fn to_vec(&self) -> Vec<Attempt> {
        self.kept.to_vec()
    }
}

impl std::ops::Deref for Attempts {
    type Target = [Attempt];

    fn deref(&self) -> &[Attempt] {
        &self.kept
    }
}

impl<'a> IntoIterator for &'a Attempts {
    type Item = &'a Attempt;
    type IntoIter = std::slice::Iter<'a, Attempt>;

    fn into_iter(self) -> Self::IntoIter {
        self.kept.iter()
    }
}

/// Where a user record was put.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The stream.
    pub stream: Arc<str>,
    /// The shard that took it.
    pub shard_id: Arc<str>,
    /// The sequence number of the Kinesis record that carries it (shared by every user record
    /// in that Kinesis record).
    pub sequence_number: Arc<str>,
    /// Its index in that Kinesis record (0 when the record was sent plain); consumers see the
    /// same number after deaggregating.
    pub sub_sequence_number: u64,
    /// Whether it travelled in an aggregate.
    pub aggregated: bool,
    /// Every attempt, the last one successful.
    pub attempts: Attempts,
}

/// Why a user record was not put. The record itself comes back in [`PutError::record`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PutErrorKind {
    /// Kinesis would refuse the record as it is (e.g. over the stream's per-record limit).
    #[error(transparent)]
    InvalidRecord(#[from] RecordError),
    /// Not put within `RecordTtl`.
    #[error(
        "expired: not put within RecordTtl ({ttl_ms} ms); the last attempt failed with {last_error}"
    )]
    Expired {
        /// The `RecordTtl` in force, in milliseconds.
        ttl_ms: u64,
        /// The last attempt's error (shared with the record's attempts); its cause is this
        /// error's `source()`.
        #[source]
        last_error: Arc<AttemptError>,
    },
    /// Kinesis refused the record with an error that retrying cannot heal (no such stream,
    /// access denied, a KMS key that cannot be used, ...): failed at once, never retried.
    #[error("refused by Kinesis, not retried: {code}: {message}")]
    Rejected {
        /// The service's error code, e.g. `ResourceNotFoundException`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// No usable AWS credentials to sign the call (none found by the credential chain, or its
    /// configuration is invalid): failed at once, as retrying cannot find them. (A provider
    /// that failed or timed out, which may heal, is retried until `RecordTtl`; an
    /// `ExpiredTokenException` from Kinesis is retried while the credentials refresh.)
    #[error("no usable AWS credentials, not retried: {code}: {message}")]
    NoCredentials {
        /// `CredentialsNotLoaded` or `CredentialsInvalidConfiguration`.
        code: String,
        /// What is wrong, in one sentence.
        message: String,
    },
    /// Throttled, and `FailIfThrottled` is set: failed at once instead of retried.
    #[error("throttled, and FailIfThrottled is set: {code}: {message}")]
    Throttled {
        /// The service's error code, e.g. `ProvisionedThroughputExceededException`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// The producer's buffer is full (`MaxBufferedRecords` or `MaxBufferedBytes`): the record
    /// was not accepted. Wait for room ([`Producer::send_wait`](crate::Producer::send_wait), [`Producer::send_blocking`](crate::Producer::send_blocking)) or
    /// slow down.
    #[error(
        "the producer's buffer is full: {records} records buffered (MaxBufferedRecords {max_records}), {bytes} bytes (MaxBufferedBytes {max_bytes}); the record was not accepted"
    )]
    BufferFull {
        /// Records buffered when it was refused.
        records: usize,
        /// Bytes (data plus keys) buffered when it was refused.
        bytes: usize,
        /// `MaxBufferedRecords`.
        max_records: usize,
        /// `MaxBufferedBytes`.
        max_bytes: usize,
    },
    /// Sent after [`Producer::shutdown`](crate::Producer::shutdown): not accepted.
    #[error("the producer is shut down and accepts no records")]
    Closed,
    /// The spool did not take the record (`SpoolDirectory` set): full, or writing it fails, or it
    /// could not be opened. Nothing was sent; the record is handed back.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    /// The producer's engine stopped (its runtime shut down, or it failed) before the record was
    /// resolved. The record may or may not have been put.
    #[error(
        "the producer stopped before the record's outcome was known; it may or may not have been put"
    )]
    Stopped,
}

/// A user record that was not put, handed back with the reason and every attempt made.
///
/// Its message is one sentence (the record, the stream, the reason); its `source()` is the
/// reason's cause (for an expired record, the last attempt's error, and under that the SDK's).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutError {
    /// Why.
    pub kind: PutErrorKind,
    /// The stream it was sent to.
    pub stream: Arc<str>,
    /// The record, handed back.
    pub record: UserRecord,
    /// Every attempt made, in order.
    pub attempts: Attempts,
}

impl std::fmt::Display for PutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record with partition key {:?} for stream {} not put after {} attempts: {}",
            self.record.partition_key(),
            self.stream,
            self.attempts.count(),
            self.kind
        )
    }
}

impl std::error::Error for PutError {
    // The kind's text is already in the message: the chain goes on from its cause.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}
