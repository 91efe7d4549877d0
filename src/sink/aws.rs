//! The sink over aws-sdk-kinesis: the only module that imports the SDK.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kinesis::Client;
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
        AwsSink {
            client: Client::new(&sdk),
        }
    }

    /// A sink over a client you configured yourself.
    pub fn from_client(client: Client) -> AwsSink {
        AwsSink { client }
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The most specific code and message the SDK offers: the service's error code when there is
/// one, else the kind of transport failure.
pub(crate) fn sink_error<
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
>(
    operation: &'static str,
    err: SdkError<E, R>,
) -> SinkError {
    let code = match &err {
        SdkError::ServiceError(e) => e.err().code().unwrap_or("UnknownServiceError").to_owned(),
        SdkError::TimeoutError(_) => "RequestTimeout".to_owned(),
        SdkError::DispatchFailure(e) if e.is_timeout() => "RequestTimeout".to_owned(),
        SdkError::DispatchFailure(e) if e.is_io() => "ConnectionError".to_owned(),
        SdkError::DispatchFailure(_) => "DispatchFailure".to_owned(),
        SdkError::ResponseError(_) => "ResponseError".to_owned(),
        SdkError::ConstructionFailure(_) => "ConstructionFailure".to_owned(),
        _ => "Unknown".to_owned(),
    };
    let message = match &err {
        SdkError::ServiceError(e) => e
            .err()
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| DisplayErrorContext(&err).to_string()),
        _ => DisplayErrorContext(&err).to_string(),
    };
    SinkError {
        operation,
        code,
        message,
    }
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
                .map_err(|b| SinkError {
                    operation: "PutRecords",
                    code: "InvalidEntry".into(),
                    message: b.to_string(),
                })?;
            records.push(entry);
        }
        let out = self
            .client
            .put_records()
            .stream_name(stream)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| sink_error("PutRecords", e))?;
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
                .map_err(|e| sink_error("ListShards", e))?;
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
                    return Err(SinkError {
                        operation: "ListShards",
                        code: "MalformedResponse".into(),
                        message: format!("shard {} has no valid hash key range", s.shard_id),
                    });
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
