//! The user record: what a caller hands the producer.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::RecordError;
use crate::hash_key::{HashKey, validate_partition_key};

/// One record as the caller sees it: a partition key, an optional explicit hash key and data.
///
/// Construction checks the partition key (1 to 256 characters); explicit hash keys are checked
/// when parsed into a [`HashKey`]. The data's size limit depends on the stream (1 MiB by default,
/// up to 10 MiB where the stream allows), so it is checked where the limit is known: by the
/// [`Aggregator`](crate::aggregation::Aggregator) and the producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    // Shared, so that cloning a record (the producer keeps a copy to hand back on failure)
    // costs a reference count, not an allocation.
    partition_key: Arc<str>,
    explicit_hash_key: Option<HashKey>,
    data: Bytes,
}

impl UserRecord {
    /// A record routed by its partition key's MD5.
    ///
    /// The key may be a `&str`, a `String` or an `Arc<str>`; reusing `Arc<str>` keys (a fixed set
    /// of device or tenant ids, say) avoids an allocation per record. The data may be anything
    /// that converts into [`Bytes`]; it is never copied.
    ///
    /// ```
    /// use kinesis_producer::UserRecord;
    /// let record = UserRecord::new("user-42", &b"hello"[..]).unwrap();
    /// assert_eq!(record.size(), 12);
    /// let err = UserRecord::new("", &b"x"[..]).unwrap_err();
    /// assert_eq!(err.to_string(), "partition key is empty; it must be 1 to 256 characters");
    /// ```
    pub fn new(
        partition_key: impl Into<Arc<str>>,
        data: impl Into<Bytes>,
    ) -> Result<Self, RecordError> {
        let partition_key = partition_key.into();
        validate_partition_key(&partition_key)?;
        Ok(UserRecord {
            partition_key,
            explicit_hash_key: None,
            data: data.into(),
        })
    }

    /// Routes this record by `key` instead of its partition key's MD5. The partition key is
    /// still stored with the record and given back to consumers.
    ///
    /// ```
    /// use kinesis_producer::{HashKey, UserRecord};
    /// let key: HashKey = "170141183460469231731687303715884105728".parse().unwrap();
    /// let record = UserRecord::new("k", &b"x"[..]).unwrap().with_explicit_hash_key(key);
    /// assert_eq!(record.hash_key(), key);
    /// ```
    pub fn with_explicit_hash_key(mut self, key: HashKey) -> Self {
        self.explicit_hash_key = Some(key);
        self
    }

    /// The partition key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key, if the caller set one.
    pub fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit_hash_key
    }

    /// The data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Where Kinesis will route this record: the explicit hash key if set, else MD5 of the
    /// partition key. Computes an MD5 when there is no explicit key.
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .unwrap_or_else(|| HashKey::from_partition_key(&self.partition_key))
    }

    /// The size Kinesis counts against its per-record limit if this record is sent on its own:
    /// data plus the partition key's UTF-8 bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// Takes the record apart: partition key, explicit hash key, data.
    pub fn into_parts(self) -> (Arc<str>, Option<HashKey>, Bytes) {
        (self.partition_key, self.explicit_hash_key, self.data)
    }
}

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
