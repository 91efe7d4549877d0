//! The AWS edge as pure functions: our entries as the SDK's request entries, a PutRecords answer
//! as per-entry results, a ListShards page as shards, an SDK error as a code and one sentence
//! (its class follows from the code, `error::classify`). No client and no I/O: the tests build
//! the SDK's outputs and errors with its own builders.

use std::sync::Arc;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{self as sdk, PutRecordsRequestEntry};

use crate::hash_key::HashKey;
use crate::shard_map::Shard;
use crate::sink::{EntryResult, PutEntry, SinkError};

/// One of our entries as the SDK's request entry.
pub(super) fn request_entry(e: PutEntry) -> Result<PutRecordsRequestEntry, SinkError> {
    PutRecordsRequestEntry::builder()
        .partition_key(e.partition_key)
        .set_explicit_hash_key(e.explicit_hash_key.map(|k| k.to_string()))
        .data(Blob::new(e.data.to_vec()))
        .build()
        .map_err(|b| SinkError::new("PutRecords", "InvalidEntry", b.to_string()))
}

/// Whether `stream` names a stream by its ARN (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`,
/// in any partition) rather than by name: a name cannot hold `:` or `/` (its pattern is
/// `[a-zA-Z0-9_.-]+`), so the two never mix up.
pub fn is_stream_arn(stream: &str) -> bool {
    stream.starts_with("arn:") && stream.contains(":kinesis:") && stream.contains(":stream/")
}

/// A PutRecords answer as one result per entry, in request order: put (shard and sequence
/// number) or failed (the entry's code and message; an entry that names neither a shard nor a
/// code is `UnknownEntryError`).
pub(super) fn entry_results(out: PutRecordsOutput) -> Vec<EntryResult> {
    out.records
        .into_iter()
        .map(|r| match (r.shard_id, r.sequence_number, r.error_code) {
            (Some(shard_id), Some(sequence_number), None) => EntryResult::Put {
                shard_id,
                sequence_number,
            },
            (_, _, code) => EntryResult::Failed {
                code: code.unwrap_or_else(|| "UnknownEntryError".into()),
                message: r.error_message.unwrap_or_default(),
            },
        })
        .collect()
}

/// Adds a ListShards page to `shards`, skipping shards already there; returns how many it
/// added.
///
/// # Errors
/// `MalformedResponse` for a shard without a valid hash key range.
pub(super) fn add_page(shards: &mut Vec<Shard>, page: Vec<sdk::Shard>) -> Result<usize, SinkError> {
    let before = shards.len();
    for s in page {
        let shard = shard(s)?;
        if !shards.iter().any(|k| k.shard_id == shard.shard_id) {
            shards.push(shard);
        }
    }
    Ok(shards.len() - before)
}

/// A listed shard as ours: its range, and closed when it has an ending sequence number (split
/// or merged away).
fn shard(s: sdk::Shard) -> Result<Shard, SinkError> {
    let closed = s
        .sequence_number_range
        .as_ref()
        .and_then(|r| r.ending_sequence_number.as_ref())
        .is_some();
    let range = s.hash_key_range.as_ref();
    let parse = |v: Option<&str>| v.and_then(|v| v.parse::<u128>().ok()).map(HashKey);
    let (Some(start), Some(end)) = (
        parse(range.map(|r| r.starting_hash_key())),
        parse(range.map(|r| r.ending_hash_key())),
    ) else {
        return Err(SinkError::new(
            "ListShards",
            "MalformedResponse",
            format!("shard {} has no valid hash key range", s.shard_id),
        ));
    };
    Ok(Shard {
        shard_id: s.shard_id,
        start,
        end,
        closed,
    })
}

/// The reason phrase of the statuses a Kinesis endpoint or a proxy in front of it answers.
fn status_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

/// The errors under `err`, outermost first (`err` itself included).
fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = vec![err];
    while let Some(next) = out.last().and_then(|e| e.source()) {
        // Bounded: a cyclic chain must not loop.
        if out.len() >= 32 {
            break;
        }
        out.push(next);
    }
    out
}

/// A transport failure (no usable answer) as a code and one sentence naming the endpoint and
/// the cause, read off the error chain: the SDK's own text is a debug dump of every layer
/// (`dispatch failure: io error: client error (Connect): tcp connect error: ...`).
pub(crate) fn describe_transport(
    operation: &str,
    endpoint: &str,
    err: &(dyn std::error::Error + 'static),
    timeout: bool,
) -> (&'static str, String) {
    let errors = chain(err);
    let texts: Vec<String> = errors
        .iter()
        .map(|e| e.to_string().to_lowercase())
        .collect();
    let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
    // The innermost error says what happened at the bottom (the OS, the TLS library).
    let innermost = errors.last().map(|e| e.to_string()).unwrap_or_default();
    let io_kind = errors
        .iter()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    use std::io::ErrorKind as K;
    if has("dns error") || has("failed to lookup address") {
        let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
        return ("DnsError", format!("cannot resolve {host}: {innermost}"));
    }
    if has("tls") || has("certificate") || has("handshake") || has("corrupt message") {
        return (
            "TlsError",
            format!("TLS with {endpoint} failed: {innermost}"),
        );
    }
    match io_kind {
        Some(K::ConnectionRefused) => {
            return (
                "ConnectionError",
                format!("cannot connect to {endpoint}: connection refused"),
            );
        }
        Some(K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof) => {
            return (
                "ConnectionError",
                format!("the connection to {endpoint} was closed before {operation} was answered"),
            );
        }
        _ => {}
    }
    if timeout {
        return (
            "RequestTimeout",
            format!("no answer from {endpoint} to {operation} in time: {innermost}"),
        );
    }
    if has("connection closed") || has("incomplete message") {
        return (
            "ConnectionError",
            format!("the connection to {endpoint} was closed before {operation} was answered"),
        );
    }
    (
        "ConnectionError",
        format!("cannot reach {endpoint} for {operation}: {innermost}"),
    )
}

/// A failure to get credentials for signing, found in `err`'s chain, as a code and a sentence:
/// the SDK reports it as a dispatch failure, which read as "cannot reach the endpoint" and was
/// retried until RecordTtl. `CredentialsNotLoaded` (no provider of the chain has any) and
/// `CredentialsInvalidConfiguration` cannot heal by retrying (`error::classify`); a provider
/// that timed out or failed (STS, SSO, the instance metadata service) may, and is retried.
pub(crate) fn credentials_error(
    err: &(dyn std::error::Error + 'static),
) -> Option<(&'static str, String)> {
    use aws_credential_types::provider::error::CredentialsError as E;
    let errors = chain(err);
    let found = errors.iter().find_map(|e| e.downcast_ref::<E>())?;
    let innermost = errors.last().map(|e| e.to_string()).unwrap_or_default();
    Some(match found {
        E::CredentialsNotLoaded(_) => (
            "CredentialsNotLoaded",
            format!(
                "no AWS credentials were found: {innermost}; set them (environment, profile, \
                 role) or give static ones"
            ),
        ),
        E::InvalidConfiguration(_) => (
            "CredentialsInvalidConfiguration",
            format!("the AWS credentials configuration is invalid: {innermost}"),
        ),
        E::ProviderTimedOut(_) => (
            "CredentialsTimedOut",
            format!("the AWS credentials provider did not answer in time: {innermost}"),
        ),
        _ => (
            "CredentialsError",
            format!("the AWS credentials could not be loaded: {innermost}"),
        ),
    })
}

/// The most specific code and one-sentence message for a failed SDK call: the service's code
/// and message when it answered with one; `HTTP <status>` when it answered without (a proxy's
/// 502, say); for no answer, a transport code and a sentence naming the endpoint and the cause
/// (`cannot connect to 127.0.0.1:4567: connection refused`). The SDK's error stays as the
/// `source()`.
pub(crate) fn sink_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    endpoint: &str,
    request_timeout: std::time::Duration,
    err: SdkError<E, HttpResponse>,
) -> SinkError {
    let (code, message) = match &err {
        SdkError::ServiceError(e) => match e.err().code() {
            Some(code) => (
                code.to_owned(),
                e.err()
                    .message()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{endpoint} answered {operation} with {code}")),
            ),
            None => {
                let status = e.raw().status().as_u16();
                let reason = status_reason(status)
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default();
                (
                    format!("HTTP {status}"),
                    format!("{endpoint} answered {operation} with HTTP {status}{reason}"),
                )
            }
        },
        SdkError::TimeoutError(_) => (
            "RequestTimeout".to_owned(),
            format!(
                "no answer from {endpoint} to {operation} within RequestTimeout ({} ms)",
                request_timeout.as_millis()
            ),
        ),
        SdkError::DispatchFailure(_) if credentials_error(&err).is_some() => {
            let (code, message) = credentials_error(&err).expect("checked");
            (
                code.to_owned(),
                format!("{message} (for {operation} to {endpoint})"),
            )
        }
        SdkError::DispatchFailure(e) => {
            let (code, message) = match e.as_connector_error() {
                Some(c) => describe_transport(operation, endpoint, c, c.is_timeout()),
                None => describe_transport(operation, endpoint, &err, e.is_timeout()),
            };
            (code.to_owned(), message)
        }
        SdkError::ResponseError(_) => {
            let innermost = chain(&err)
                .last()
                .map(|e| e.to_string())
                .unwrap_or_default();
            (
                "ResponseError".to_owned(),
                format!("the answer of {endpoint} to {operation} could not be read: {innermost}"),
            )
        }
        SdkError::ConstructionFailure(_) => {
            let innermost = chain(&err)
                .last()
                .map(|e| e.to_string())
                .unwrap_or_default();
            (
                "ConstructionFailure".to_owned(),
                format!("the {operation} request could not be made: {innermost}"),
            )
        }
        _ => (
            "Unknown".to_owned(),
            format!(
                "{operation} to {endpoint} failed: {}",
                DisplayErrorContext(&err)
            ),
        ),
    };
    let mut e = SinkError::new(operation, code, message);
    e.source = Some(Arc::new(err));
    e
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_kinesis::operation::put_records::PutRecordsError;
    use aws_sdk_kinesis::types::{HashKeyRange, PutRecordsResultEntry, SequenceNumberRange};
    use aws_smithy_runtime_api::http::StatusCode;

    use super::*;

    use crate::error::{ErrorClass, classify};

    #[test]
    fn a_stream_arn_is_told_from_a_name() {
        assert!(is_stream_arn(
            "arn:aws:kinesis:eu-west-1:123456789012:stream/events"
        ));
        assert!(is_stream_arn(
            "arn:aws-cn:kinesis:cn-north-1:123456789012:stream/events"
        ));
        assert!(!is_stream_arn("events"));
        assert!(!is_stream_arn("arn-events"));
        assert!(!is_stream_arn("arn:aws:sqs:eu-west-1:123456789012:queue"));
    }

    fn answer(status: u16) -> HttpResponse {
        HttpResponse::new(StatusCode::try_from(status).unwrap(), "".into())
    }

    fn service_error(code: Option<&str>, status: u16) -> SdkError<PutRecordsError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("Rate exceeded for shard");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        SdkError::service_error(PutRecordsError::generic(meta.build()), answer(status))
    }

    fn put(err: SdkError<PutRecordsError, HttpResponse>) -> SinkError {
        sink_error(
            "PutRecords",
            "127.0.0.1:4567",
            std::time::Duration::from_millis(6000),
            err,
        )
    }

    fn listed(id: &str, start: &str, end: &str, closed: bool) -> sdk::Shard {
        let range = SequenceNumberRange::builder().starting_sequence_number("1");
        let range = if closed {
            range.ending_sequence_number("9")
        } else {
            range
        };
        sdk::Shard::builder()
            .shard_id(id)
            .hash_key_range(
                HashKeyRange::builder()
                    .starting_hash_key(start)
                    .ending_hash_key(end)
                    .build()
                    .unwrap(),
            )
            .sequence_number_range(range.build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn a_put_records_answer_gives_one_result_per_entry_in_order() {
        let out = PutRecordsOutput::builder()
            .records(
                PutRecordsResultEntry::builder()
                    .shard_id("shardId-000000000001")
                    .sequence_number("4960")
                    .build(),
            )
            .records(
                PutRecordsResultEntry::builder()
                    .error_code("ProvisionedThroughputExceededException")
                    .error_message("Rate exceeded for shard shardId-000000000001")
                    .build(),
            )
            // Neither a shard nor a code: an answer we cannot read as put.
            .records(PutRecordsResultEntry::builder().build())
            .failed_record_count(2)
            .build()
            .unwrap();
        assert_eq!(
            entry_results(out),
            [
                EntryResult::Put {
                    shard_id: "shardId-000000000001".into(),
                    sequence_number: "4960".into(),
                },
                EntryResult::Failed {
                    code: "ProvisionedThroughputExceededException".into(),
                    message: "Rate exceeded for shard shardId-000000000001".into(),
                },
                EntryResult::Failed {
                    code: "UnknownEntryError".into(),
                    message: String::new(),
                },
            ]
        );
    }

    #[test]
    fn a_list_shards_page_gives_ranges_closed_shards_and_skips_repeats() {
        let max = u128::MAX.to_string();
        let half = (u128::MAX / 2).to_string();
        let above = (u128::MAX / 2 + 1).to_string();
        let mut shards = Vec::new();
        let page = vec![
            listed("shardId-000000000000", "0", &max, true),
            listed("shardId-000000000001", "0", &half, false),
        ];
        assert_eq!(add_page(&mut shards, page).unwrap(), 2);
        let page = vec![
            listed("shardId-000000000001", "0", &half, false),
            listed("shardId-000000000002", &above, &max, false),
        ];
        assert_eq!(
            add_page(&mut shards, page).unwrap(),
            1,
            "a repeat is skipped"
        );
        assert_eq!(
            shards,
            [
                Shard {
                    shard_id: "shardId-000000000000".into(),
                    start: HashKey(0),
                    end: HashKey(u128::MAX),
                    closed: true,
                },
                Shard {
                    shard_id: "shardId-000000000001".into(),
                    start: HashKey(0),
                    end: HashKey(u128::MAX / 2),
                    closed: false,
                },
                Shard {
                    shard_id: "shardId-000000000002".into(),
                    start: HashKey(u128::MAX / 2 + 1),
                    end: HashKey(u128::MAX),
                    closed: false,
                },
            ]
        );
        let bad = vec![listed("shardId-000000000003", "zero", &max, false)];
        let err = add_page(&mut shards, bad).unwrap_err();
        assert_eq!(err.code, "MalformedResponse");
        assert_eq!(
            err.message,
            "shard shardId-000000000003 has no valid hash key range"
        );
    }

    #[test]
    fn an_entry_becomes_the_sdks_request_entry() {
        let entry = PutEntry {
            partition_key: "user-1".into(),
            explicit_hash_key: Some(HashKey(42)),
            data: bytes::Bytes::from_static(b"hello"),
        };
        let sdk = request_entry(entry).unwrap();
        assert_eq!(sdk.partition_key(), "user-1");
        assert_eq!(sdk.explicit_hash_key(), Some("42"));
        assert_eq!(sdk.data().as_ref(), b"hello");
    }

    #[test]
    fn a_service_answer_keeps_its_code_and_message_and_its_class() {
        let err = put(service_error(
            Some("ProvisionedThroughputExceededException"),
            400,
        ));
        assert_eq!(err.code, "ProvisionedThroughputExceededException");
        assert_eq!(err.message, "Rate exceeded for shard");
        assert_eq!(classify(&err.code), ErrorClass::Throttled);
        assert!(
            std::error::Error::source(&err).is_some(),
            "the SDK error is kept"
        );
        let denied = put(service_error(Some("AccessDeniedException"), 400));
        assert_eq!(classify(&denied.code), ErrorClass::NonRetryable);
    }

    #[test]
    fn an_answer_without_a_code_is_named_by_its_http_status() {
        let err = put(service_error(None, 502));
        assert_eq!(err.code, "HTTP 502");
        assert_eq!(
            err.message,
            "127.0.0.1:4567 answered PutRecords with HTTP 502 Bad Gateway"
        );
        assert_eq!(classify(&err.code), ErrorClass::Transient);
    }

    #[test]
    fn no_answer_is_a_timeout_or_a_connection_error_naming_the_endpoint() {
        let err = put(SdkError::timeout_error("operation timed out"));
        assert_eq!(err.code, "RequestTimeout");
        assert_eq!(
            err.message,
            "no answer from 127.0.0.1:4567 to PutRecords within RequestTimeout (6000 ms)"
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = put(SdkError::dispatch_failure(ConnectorError::io(
            refused.into(),
        )));
        assert_eq!(err.code, "ConnectionError");
        assert_eq!(
            err.message,
            "cannot connect to 127.0.0.1:4567: connection refused"
        );
        assert_eq!(classify(&err.code), ErrorClass::Transient);
        let err = put(SdkError::construction_failure("no region"));
        assert_eq!(err.code, "ConstructionFailure");
        assert_eq!(
            err.message,
            "the PutRecords request could not be made: no region"
        );
    }
}
