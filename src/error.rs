//! Typed errors. Every message names the value at fault and the limit it broke, so a caller can
//! act on it without reading our source.

use std::fmt;

/// The longest part of a caller's value that an error message repeats; longer values are cut
/// (with their full length stated) so one bad multi-megabyte key does not flood a log.
const SHOWN_VALUE_CHARS: usize = 64;

/// A caller's value as an error message shows it: quoted, and cut if long.
#[derive(Clone, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    pub(crate) fn new(value: &str) -> Self {
        let chars = value.chars().count();
        if chars <= SHOWN_VALUE_CHARS {
            Shown(format!("{value:?}"))
        } else {
            let head: String = value.chars().take(SHOWN_VALUE_CHARS).collect();
            Shown(format!("{head:?}… ({chars} characters)"))
        }
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user record that Kinesis would refuse, caught before it is buffered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Kinesis requires a partition key of at least one character.
    #[error("partition key is empty; it must be 1 to 256 characters")]
    EmptyPartitionKey,
    /// Kinesis allows at most 256 Unicode characters (not bytes, not UTF-16 units).
    #[error("partition key is {chars} characters; the limit is 256")]
    PartitionKeyTooLong {
        /// The key's length in Unicode characters.
        chars: usize,
    },
    /// An explicit hash key must be a plain decimal integer, as the Kinesis API requires
    /// (pattern `0|([1-9]\d{0,38})`).
    #[error(
        "explicit hash key {value} is not a decimal integer (digits only, no sign, no leading zeros)"
    )]
    MalformedExplicitHashKey {
        /// The value given, cut if long.
        value: Shown,
    },
    /// An explicit hash key above the largest 128-bit hash key.
    #[error(
        "explicit hash key {value} is above the maximum 340282366920938463463374607431768211455 (2^128-1)"
    )]
    ExplicitHashKeyOutOfRange {
        /// The value given, cut if long.
        value: Shown,
    },
    /// Kinesis counts data plus partition key against its per-record limit.
    #[error(
        "record is {size} bytes (data {data_len} + partition key {key_len}); the limit is {limit} bytes"
    )]
    RecordTooLarge {
        /// Data plus partition key, in bytes.
        size: usize,
        /// The data's length in bytes.
        data_len: usize,
        /// The partition key's length in UTF-8 bytes.
        key_len: usize,
        /// The per-record limit in force.
        limit: usize,
    },
}

/// A configuration value outside the range the KPL (and Kinesis) allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The property's value is outside its range.
    #[error("{property} is {value}; the range is {range}")]
    OutOfRange {
        /// The KPL property name, e.g. `AggregationMaxSize`.
        property: &'static str,
        /// The value given.
        value: String,
        /// The allowed range, e.g. `64..=1048576`.
        range: String,
    },
    /// A numeric property given text that is not a whole number.
    #[error("{property} is {value:?}; it must be a whole number")]
    NotANumber {
        /// The KPL property name.
        property: &'static str,
        /// The text given.
        value: String,
    },
    /// A boolean property given text other than true or false.
    #[error("{property} is {value:?}; it must be true or false")]
    NotABoolean {
        /// The KPL property name.
        property: &'static str,
        /// The text given.
        value: String,
    },
    /// A property given a value outside the set it accepts.
    #[error("{property} is {value:?}; it must be one of {allowed}")]
    NotOneOf {
        /// The KPL property name.
        property: &'static str,
        /// The text given.
        value: String,
        /// The values it accepts, comma-separated.
        allowed: String,
    },
    /// A property that takes effect only with another one, given without it.
    #[error("{property} is set but {needs} is not; set both")]
    Incomplete {
        /// The KPL property name given.
        property: &'static str,
        /// The one it needs.
        needs: &'static str,
    },
    /// A certificate file (`CaCertFile`) or directory (`CaCertPath`) that cannot be read or
    /// holds no usable certificate.
    #[error("{property} {} cannot be used: {reason}", path.display())]
    Certificates {
        /// The KPL property name.
        property: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why, e.g. `No such file or directory (os error 2)`.
        reason: String,
    },
    /// A property name the producer does not know (often a typo).
    #[error(
        "unknown property {name}; {}the KPL ignores a name it does not know, with a warning \
         (`ConfigBuilder::ignore_unknown_properties`, or kpl's `--ignore-unknown-properties`, \
         does the same); the known properties are {known}",
        closest.map(|c| format!("did you mean {c}? If not, ")).unwrap_or_default()
    )]
    UnknownProperty {
        /// The name given.
        name: String,
        /// The known name closest to it, if one is close.
        closest: Option<&'static str>,
        /// Every known name, comma-separated.
        known: String,
    },
}

/// Why a KPL `.properties` file could not be applied
/// ([`ConfigBuilder::properties_file`](crate::ConfigBuilder::properties_file)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PropertiesError {
    /// The file could not be read.
    #[error("cannot read the properties file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is neither `Name = value`, `Name: value`, a comment nor blank.
    #[error("{path} line {line}: expected `Name = value`, found {text:?}")]
    Malformed {
        /// The file.
        path: std::path::PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// The line.
        text: String,
    },
    /// A property's name or value was refused.
    #[error("{path} line {line}: {source}")]
    Property {
        /// The file.
        path: std::path::PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// Why.
        #[source]
        source: ConfigError,
    },
}

/// Why a Kinesis record that carries the aggregation magic could not be read as an aggregate.
///
/// Returned only by strict deaggregation ([`deaggregate_strict`](crate::aggregation::deaggregate_strict));
/// in lenient mode such a record is passed through as one plain user record, as the KCL does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeaggregationError {
    /// The record starts with the magic but is too short to hold a digest after it.
    #[error(
        "record starts with the aggregation magic but is {len} bytes; an aggregate is at least 21 bytes (4 magic + protobuf + 16 MD5)"
    )]
    Truncated {
        /// The record's length in bytes.
        len: usize,
    },
    /// The trailing MD5 does not match the protobuf body.
    #[error("aggregate MD5 mismatch: the record carries {carried}, the body hashes to {computed}")]
    DigestMismatch {
        /// The digest at the end of the record, hex.
        carried: String,
        /// The digest of the body, hex.
        computed: String,
    },
    /// The protobuf body does not decode as an `AggregatedRecord`.
    #[error("aggregate body is not a valid AggregatedRecord: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A required protobuf field is absent.
    #[error("user record {record} of the aggregate has no {field} (a required field)")]
    MissingField {
        /// Zero-based index of the user record.
        record: usize,
        /// The field's name in aggregation.proto.
        field: &'static str,
    },
    /// A record refers past the end of one of the key tables.
    #[error(
        "user record {record} of the aggregate refers to {table} entry {index}, but the table has {table_len} entries"
    )]
    KeyIndexOutOfRange {
        /// Zero-based index of the user record.
        record: usize,
        /// `partition_key_table` or `explicit_hash_key_table`.
        table: &'static str,
        /// The index it refers to.
        index: u64,
        /// The table's length.
        table_len: usize,
    },
}

/// How an error from Kinesis (or from the way to it) is handled. Every failure the producer
/// sees goes through [`classify`]: this is the one place that decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The shard (or the account, or KMS) is over its rate: retry after a backoff, and slow down.
    Throttled,
    /// Likely to heal by itself (a server error, a timeout, a dropped connection): retry after
    /// a backoff, until `RecordTtl`.
    Transient,
    /// Will not heal by retrying (no such stream, access denied, invalid request, KMS key
    /// unusable): fail the records at once with the service's code and message.
    NonRetryable,
}

/// Classifies an error code: a Kinesis error code (per entry or for a whole call), or one of
/// the transport codes the sink reports (`RequestTimeout`, `ConnectionError`, `DispatchFailure`,
/// `ResponseError`). Unknown codes count as transient: retrying a record that could have been put
/// costs less than dropping it.
///
/// ```
/// use kinesis_producer::error::{ErrorClass, classify};
/// assert_eq!(classify("ProvisionedThroughputExceededException"), ErrorClass::Throttled);
/// assert_eq!(classify("InternalFailure"), ErrorClass::Transient);
/// assert_eq!(classify("ResourceNotFoundException"), ErrorClass::NonRetryable);
/// ```
pub fn classify(code: &str) -> ErrorClass {
    match code {
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "Throttling"
        | "LimitExceededException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "SlowDown"
        | "KMSThrottlingException" => ErrorClass::Throttled,
        "ResourceNotFoundException"
        | "ResourceInUseException"
        | "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidClientTokenId"
        | "ValidationException"
        | "InvalidArgumentException"
        | "SerializationException"
        | "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSNotFoundException"
        | "KMSInvalidStateException"
        | "KMSOptInRequired"
        | "InvalidEntry"
        | "ConstructionFailure"
        | "SinkPanicked"
        | "CredentialsNotLoaded"
        | "CredentialsInvalidConfiguration" => ErrorClass::NonRetryable,
        // InternalFailure, ServiceUnavailable, RequestTimeout, ConnectionError, DispatchFailure,
        // ResponseError, ExpiredTokenException (credentials refresh), and anything unknown.
        _ => ErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for code in [
            "ProvisionedThroughputExceededException",
            "KMSThrottlingException",
            "ThrottlingException",
        ] {
            assert_eq!(classify(code), ErrorClass::Throttled, "{code}");
        }
        for code in [
            "InternalFailure",
            "ServiceUnavailable",
            "RequestTimeout",
            "ConnectionError",
            "ExpiredTokenException",
            "SomethingNew",
        ] {
            assert_eq!(classify(code), ErrorClass::Transient, "{code}");
        }
        for code in [
            "ResourceNotFoundException",
            "AccessDeniedException",
            "UnrecognizedClientException",
            "ValidationException",
            "KMSAccessDeniedException",
            "KMSDisabledException",
            "KMSNotFoundException",
        ] {
            assert_eq!(classify(code), ErrorClass::NonRetryable, "{code}");
        }
    }

    #[test]
    fn long_values_are_cut_and_their_length_stated() {
        let value = "9".repeat(1000);
        let err = RecordError::ExplicitHashKeyOutOfRange {
            value: Shown::new(&value),
        };
        let msg = err.to_string();
        assert!(msg.contains("(1000 characters)"), "{msg}");
        assert!(msg.len() < 250, "{msg}");
    }

    #[test]
    fn messages_name_value_and_limit() {
        assert_eq!(
            RecordError::PartitionKeyTooLong { chars: 300 }.to_string(),
            "partition key is 300 characters; the limit is 256"
        );
        assert_eq!(
            RecordError::RecordTooLarge {
                size: 1_048_600,
                data_len: 1_048_590,
                key_len: 10,
                limit: 1_048_576
            }
            .to_string(),
            "record is 1048600 bytes (data 1048590 + partition key 10); the limit is 1048576 bytes"
        );
        assert_eq!(
            ConfigError::OutOfRange {
                property: "AggregationMaxSize",
                value: "10".into(),
                range: "64..=1048576".into()
            }
            .to_string(),
            "AggregationMaxSize is 10; the range is 64..=1048576"
        );
    }
}
