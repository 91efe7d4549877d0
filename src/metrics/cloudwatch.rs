//! Uploading the metrics to CloudWatch as the KPL does (`MetricsManager::upload` in
//! aws/metrics/metrics_manager.cc): every `MetricsUploadDelay`, one statistic set per series for
//! the time since the last upload, under `MetricsNamespace`, with the KPL's dimension names
//! (`StreamName`, `ShardId`, `ErrorCode`) and the configured extra ones, 20 data to a
//! PutMetricData call as the KPL batches them. It runs as a task of its own, with the producer's
//! credentials: a slow or failing CloudWatch never holds up, slows or fails a record. A failed
//! call is tried again with backoff a few times, then its data are dropped (and logged), so an
//! unreachable CloudWatch cannot make the uploader grow without bound.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::config::retry::RetryConfig;
use aws_sdk_cloudwatch::config::timeout::TimeoutConfig;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};
use tokio::sync::watch;

use super::names::Dims;
use super::names::{Level, Name, Unit};
use super::{Shared, Stat};
use crate::config::Config;

/// Data per PutMetricData call: the KPL's batch (its requests stay under 38 KiB).
const BATCH: usize = 20;
/// Attempts per call before its data are dropped, and the first wait between them (doubled).
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how often to upload.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    client: Client,
    namespace: String,
    every: Duration,
    dimensions: Vec<(String, String)>,
}

/// What `config` asks to upload, with a client from `sdk` (the producer's own AWS
/// configuration: credentials, region) and `config`'s region, static credentials and
/// `CloudwatchEndpoint`; `None` when it asks for no upload.
pub(crate) fn upload(sdk: &aws_config::SdkConfig, config: &Config) -> Option<Upload> {
    if !config.upload_metrics() || config.metrics_level() == Level::None {
        return None;
    }
    let mut builder = aws_sdk_cloudwatch::config::Builder::from(sdk)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(CALL_TIMEOUT)
                .connect_timeout(config.connect_timeout())
                .build(),
        )
        // The uploader retries itself, a few times, with backoff.
        .retry_config(RetryConfig::disabled());
    if let Some(region) = config.region() {
        builder = builder.region(aws_sdk_cloudwatch::config::Region::new(region.to_owned()));
    }
    if let Some(c) = config.credentials() {
        builder = builder.credentials_provider(crate::sink::aws::static_credentials(c));
    }
    if let Some(url) = config.cloudwatch_endpoint() {
        builder = builder.endpoint_url(url);
    }
    if let Some(client) = crate::sink::aws::http_client(config) {
        builder = builder.http_client(client);
    }
    Some(Upload {
        client: Client::from_conf(builder.build()),
        namespace: config.metrics_namespace().to_owned(),
        every: config.metrics_upload_delay(),
        dimensions: config.metrics_dimensions().to_vec(),
    })
}

fn unit(u: Unit) -> StandardUnit {
    match u {
        Unit::Count => StandardUnit::Count,
        Unit::Bytes => StandardUnit::Bytes,
        Unit::Milliseconds => StandardUnit::Milliseconds,
        Unit::CountPerSecond => StandardUnit::CountSecond,
        Unit::BytesPerSecond => StandardUnit::BytesSecond,
    }
}

/// One series' statistic set as CloudWatch takes it, with the KPL's dimension names.
fn datum(name: Name, dims: &Dims, stat: &Stat, extra: &[(String, String)]) -> MetricDatum {
    let mut dimensions: Vec<Dimension> = Vec::new();
    let mut add = |n: &str, v: &str| dimensions.push(Dimension::builder().name(n).value(v).build());
    if let Some(code) = &dims.code {
        add("ErrorCode", code);
    }
    if let Some(stream) = &dims.stream {
        add("StreamName", stream);
    }
    if let Some(shard) = &dims.shard {
        add("ShardId", shard);
    }
    for (n, v) in extra {
        add(n, v);
    }
    MetricDatum::builder()
        .metric_name(name.as_str())
        .set_dimensions(Some(dimensions))
        .statistic_values(
            StatisticSet::builder()
                .sample_count(stat.count as f64)
                .sum(stat.sum)
                .minimum(stat.min)
                .maximum(stat.max)
                .build(),
        )
        .unit(unit(name.unit()))
        .build()
}

/// Uploads what the store gathered every `upload.every`, until `closed` says the engine
/// stopped; then once more, with the final figures.
pub(crate) async fn run(shared: Arc<Shared>, upload: Upload, mut closed: watch::Receiver<bool>) {
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(upload.every) => *closed.borrow(),
            changed = closed.changed() => changed.is_err() || *closed.borrow(),
        };
        let data: Vec<MetricDatum> = shared
            .lock()
            .take_upload()
            .iter()
            .map(|(name, dims, stat)| datum(*name, dims, stat, &upload.dimensions))
            .collect();
        for batch in data.chunks(BATCH) {
            put(&upload, batch.to_vec()).await;
        }
        if stop {
            return;
        }
    }
}

async fn put(upload: &Upload, batch: Vec<MetricDatum>) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let call = upload
            .client
            .put_metric_data()
            .namespace(&upload.namespace)
            .set_metric_data(Some(batch.clone()))
            .send();
        let error = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => return,
            // One sentence (the service's code and message, or the transport's cause), not
            // the SDK's debug text.
            Ok(Err(e)) => {
                let endpoint = "CloudWatch";
                crate::sink::aws::sink_error("PutMetricData", endpoint, CALL_TIMEOUT, e).to_string()
            }
            Err(_) => format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(metrics = batch.len(), attempts = attempt, %error, "could not upload metrics to CloudWatch; these are dropped");
            return;
        }
        tracing::debug!(metrics = batch.len(), attempt, %error, "metrics upload failed; retrying");
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}
