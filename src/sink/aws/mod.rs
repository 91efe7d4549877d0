//! The sink over aws-sdk-kinesis: the only module that imports the SDK. The client and the
//! calls are here; what their answers and errors mean for us is in `edge.rs`, as pure
//! functions unit-tested with the SDK's own builders.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{Credentials, Region};

use super::{EntryResult, PutEntry, Sink, SinkError};
use crate::config::Config;
use crate::shard_map::Shard;

mod edge;
mod http;

pub use edge::is_stream_arn;
pub(crate) use edge::sink_error;
pub(crate) use http::http_client;

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
        AwsSink::from_sdk_config(&load_sdk_config(config).await, config)
    }

    /// A client from an AWS configuration you loaded yourself (`aws_config::load_defaults` or
    /// `aws_config::defaults(...)...load()`), so that what you set up there applies: the HTTP
    /// client (proxies, custom CA bundles), FIPS or dual-stack endpoints, credential and region
    /// providers. `config` adds the producer's own: `RequestTimeout` and `ConnectTimeout`, the
    /// SDK's retries off (the producer retries the failed entries itself), and its region,
    /// endpoint, static credentials, proxy and trusted certificates where set (they win over
    /// `sdk`'s; a proxy or certificates replace `sdk`'s HTTP client for this client).
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, config: &Config) -> AwsSink {
        let mut builder = aws_sdk_kinesis::config::Builder::from(sdk)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(config.request_timeout())
                    .connect_timeout(config.connect_timeout())
                    .build(),
            )
            .retry_config(RetryConfig::disabled());
        let mut region = config
            .region()
            .map(|r| Region::new(r.to_owned()))
            .or_else(|| sdk.region().cloned());
        let mut endpoint = config
            .endpoint()
            .or_else(|| sdk.endpoint_url())
            .map(str::to_owned);
        if region.is_none() && endpoint.is_some() {
            region = Some(Region::new(LOCAL_DEFAULT_REGION));
        }
        // `KinesisPort` without an endpoint: the regional endpoint on that port, as the KPL.
        if let (None, Some(port), Some(r)) = (&endpoint, config.kinesis_port(), &region) {
            endpoint = Some(format!("https://kinesis.{r}.amazonaws.com:{port}"));
        }
        if let Some(c) = config.credentials() {
            builder = builder.credentials_provider(static_credentials(c));
        }
        if let Some(client) = http_client(config) {
            builder = builder.http_client(client);
        }
        builder.set_region(region.clone());
        builder.set_endpoint_url(endpoint.clone());
        let mut name = endpoint_name(endpoint.as_deref(), region.as_ref().map(|r| r.as_ref()));
        // An answer that could not be read may be the proxy's doing: errors say it was there.
        if let Some(proxy) = config.proxy() {
            name = format!("{name} (through the proxy {})", proxy.url());
        }
        AwsSink {
            client: Client::from_conf(builder.build()),
            endpoint: name.into(),
            request_timeout: config.request_timeout(),
        }
    }

    /// A sink over a client you configured yourself; errors name the endpoint by the client's
    /// region (see [`AwsSink::with_endpoint_name`]).
    pub fn from_client(client: Client) -> AwsSink {
        let endpoint = endpoint_name(None, client.config().region().map(|r| r.as_ref()));
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

    /// A failed call of this sink's client (`operation`: `GetRecords`, say) as the sink reports
    /// its own: the service's code and message, or for no answer a transport code and one
    /// sentence naming the endpoint and the cause, never the SDK's debug text; the SDK's error
    /// stays as the `source()`. Classify its code with [`classify`](crate::error::classify).
    pub fn error<E>(
        &self,
        operation: &'static str,
        err: aws_sdk_kinesis::error::SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
    ) -> SinkError
    where
        E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        edge::sink_error(operation, &self.endpoint, self.request_timeout, err)
    }
}

/// The AWS configuration `config` describes: its region and static credentials where set, else
/// the standard AWS chains (shared by the Kinesis client and the CloudWatch uploader).
///
/// # Cancellation
/// Loading awaits the region and credential chains; dropping the future creates nothing.
pub(crate) async fn load_sdk_config(config: &Config) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(behavior_version());
    if let Some(region) = config.region() {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(c) = config.credentials() {
        loader = loader.credentials_provider(static_credentials(c));
    }
    loader.load().await
}

/// The endpoint as errors name it: `host:port` of a custom endpoint, else the regional
/// Kinesis host.
/// How errors name the endpoint: its host and port, or the regional endpoint's name.
fn endpoint_name(endpoint: Option<&str>, region: Option<&str>) -> String {
    match (endpoint, region) {
        (Some(url), _) => {
            let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
            rest.trim_end_matches('/').to_owned()
        }
        (None, Some(region)) => format!("kinesis.{region}.amazonaws.com"),
        (None, None) => "the Kinesis endpoint".to_owned(),
    }
}

/// The SDK behaviour version the producer's clients are made with: pinned and dated, so that
/// upgrading the SDK cannot change its defaults (timeouts, retries, checksums) under users; it
/// is moved forward on purpose, with the tests.
pub fn behavior_version() -> BehaviorVersion {
    BehaviorVersion::v2025_08_07()
}

pub(crate) fn static_credentials(c: &crate::config::StaticCredentials) -> Credentials {
    Credentials::new(
        c.access_key_id.clone(),
        c.secret_access_key.clone(),
        None,
        None,
        "kinesis-producer-static",
    )
}

impl Sink for AwsSink {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<EntryResult>, SinkError> {
        let records = entries
            .into_iter()
            .map(edge::request_entry)
            .collect::<Result<Vec<_>, _>>()?;
        let request = self.client.put_records();
        // A stream ARN is sent as StreamARN (what AWS recommends, and what reaches a stream of
        // another account), a name as StreamName.
        let request = if edge::is_stream_arn(stream) {
            request.stream_arn(stream)
        } else {
            request.stream_name(stream)
        };
        let out = request
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| sink_error("PutRecords", &self.endpoint, self.request_timeout, e))?;
        Ok(edge::entry_results(out))
    }

    async fn max_record_size(&self, stream: &str) -> Result<Option<usize>, SinkError> {
        let request = self.client.describe_stream_summary();
        let request = if edge::is_stream_arn(stream) {
            request.stream_arn(stream)
        } else {
            request.stream_name(stream)
        };
        let out = request.send().await.map_err(|e| {
            sink_error(
                "DescribeStreamSummary",
                &self.endpoint,
                self.request_timeout,
                e,
            )
        })?;
        Ok(out
            .stream_description_summary
            .and_then(|s| s.max_record_size_in_kib)
            .and_then(|kib| usize::try_from(kib).ok())
            .map(|kib| kib * 1024))
    }

    async fn list_shards(&self, stream: &str) -> Result<Vec<Shard>, SinkError> {
        let mut shards: Vec<Shard> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // The API takes the stream (its name or ARN) on the first page only, the token after.
            let request = match &token {
                None if edge::is_stream_arn(stream) => self.client.list_shards().stream_arn(stream),
                None => self.client.list_shards().stream_name(stream),
                Some(t) => self.client.list_shards().next_token(t),
            };
            let out = request
                .max_results(LIST_SHARDS_PAGE)
                .send()
                .await
                .map_err(|e| sink_error("ListShards", &self.endpoint, self.request_timeout, e))?;
            let added = edge::add_page(&mut shards, out.shards.unwrap_or_default())?;
            token = out.next_token;
            // Stop at the last page, and on a page that brings nothing new (a service that
            // repeats itself must not loop us forever).
            if token.is_none() || added == 0 {
                return Ok(shards);
            }
        }
    }
}
