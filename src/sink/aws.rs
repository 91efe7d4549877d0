//! The sink over aws-sdk-kinesis: the only module that imports the SDK.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::config::{Credentials, Region};
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use super::{EntryResult, PutEntry, Sink, SinkError};
use crate::config::Config;
use crate::hash_key::HashKey;
use crate::shard_map::Shard;

/// The region used against a custom endpoint when none is configured: local Kinesis
/// implementations accept any, and the SDK needs one to sign.
const LOCAL_DEFAULT_REGION: &str = "us-east-1";
/// Shards per ListShards page (the API's default and a safe size for every implementation).
const LIST_SHARDS_PAGE: i32 = 1000;

/// Puts records through aws-sdk-kinesis.
#[derive(Debug, Clone)]
pub struct AwsSink {
    client: Client,
    /// How errors name the endpoint (`127.0.0.1:4567`, `kinesis.eu-west-1.amazonaws.com`).
    endpoint: Arc<str>,
    request_timeout: Duration,
}

impl AwsSink {
    /// A client configured from `config`: region, endpoint, static credentials where set,
    /// else the standard AWS chains; `RequestTimeout` as the operation timeout and
    /// `ConnectTimeout` for connecting.
    ///
    /// The SDK's own retries are off: the producer retries only the entries that failed, with
    /// its own backoff bounded by `RecordTtl`, so the two layers never multiply.
    ///
    /// # Cancellation
    /// Only loading the AWS configuration awaits; dropping the future creates nothing.
    pub async fn new(config: &Config) -> AwsSink {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(config.request_timeout())
                    .connect_timeout(config.connect_timeout())
                    .build(),
            )
            .retry_config(RetryConfig::disabled());
        if let Some(region) = config.region() {
            loader = loader.region(Region::new(region.to_owned()));
        }
        if let Some(endpoint) = config.endpoint() {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(c) = config.credentials() {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                None,
                None,
                "kinesis-producer-static",
            ));
        }
        let mut sdk = loader.load().await;
        if sdk.region().is_none() && config.endpoint().is_some() {
            sdk = sdk
                .into_builder()
                .region(Region::new(LOCAL_DEFAULT_REGION))
                .build();
        }
        let endpoint = endpoint_name(config, sdk.region().map(|r| r.as_ref()));
        AwsSink {
            client: Client::new(&sdk),
            endpoint: endpoint.into(),
            request_timeout: config.request_timeout(),
        }
    }

    /// A sink over a client you configured yourself; errors name the endpoint by the client's
    /// region (see [`AwsSink::with_endpoint_name`]).
    pub fn from_client(client: Client) -> AwsSink {
        let endpoint = match client.config().region() {
            Some(region) => format!("kinesis.{region}.amazonaws.com"),
            None => "the Kinesis endpoint".to_owned(),
        };
        let request_timeout = client
            .config()
            .timeout_config()
            .and_then(|t| t.operation_timeout())
            .unwrap_or_default();
        AwsSink {
            client,
            endpoint: endpoint.into(),
            request_timeout,
        }
    }

    /// The same sink, naming its endpoint `name` in errors (e.g. `127.0.0.1:4567`, for a client
    /// with a custom endpoint).
    pub fn with_endpoint_name(mut self, name: &str) -> AwsSink {
        self.endpoint = name.into();
        self
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The endpoint as errors name it: `host:port` of a custom endpoint, else the regional
/// Kinesis host.
fn endpoint_name(config: &Config, region: Option<&str>) -> String {
    match config.endpoint() {
        Some(url) => {
            let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
            rest.trim_end_matches('/').to_owned()
        }
        None => match region {
            Some(region) => format!("kinesis.{region}.amazonaws.com"),
            None => "the Kinesis endpoint".to_owned(),
        },
    }
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

impl Sink for AwsSink {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<EntryResult>, SinkError> {
        let mut records = Vec::with_capacity(entries.len());
        for e in entries {
            let entry = PutRecordsRequestEntry::builder()
                .partition_key(e.partition_key)
                .set_explicit_hash_key(e.explicit_hash_key.map(|k| k.to_string()))
                .data(Blob::new(e.data.to_vec()))
                .build()
                .map_err(|b| SinkError::new("PutRecords", "InvalidEntry", b.to_string()))?;
            records.push(entry);
        }
        let out = self
            .client
            .put_records()
            .stream_name(stream)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| sink_error("PutRecords", &self.endpoint, self.request_timeout, e))?;
        Ok(out
            .records
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
            .collect())
    }

    async fn list_shards(&self, stream: &str) -> Result<Vec<Shard>, SinkError> {
        let mut shards: Vec<Shard> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // The API takes the stream name on the first page only, the token after.
            let request = match &token {
                None => self.client.list_shards().stream_name(stream),
                Some(t) => self.client.list_shards().next_token(t),
            };
            let out = request
                .max_results(LIST_SHARDS_PAGE)
                .send()
                .await
                .map_err(|e| sink_error("ListShards", &self.endpoint, self.request_timeout, e))?;
            let before = shards.len();
            for s in out.shards.unwrap_or_default() {
                // Closed shards (split or merged away) have an ending sequence number.
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
                if !shards.iter().any(|k| k.shard_id == s.shard_id) {
                    shards.push(Shard {
                        shard_id: s.shard_id,
                        start,
                        end,
                        closed,
                    });
                }
            }
            token = out.next_token;
            // Stop at the last page, and on a page that brings nothing new (a service that
            // repeats itself must not loop us forever).
            if token.is_none() || shards.len() == before {
                return Ok(shards);
            }
        }
    }
}
