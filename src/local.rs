//! An embedded local Kinesis ([ferrokinesis](https://crates.io/crates/ferrokinesis)) served
//! in-process on 127.0.0.1, for tests, demos and development without an AWS account.
//!
//! It routes by MD5 and explicit hash key exactly as AWS does and, with
//! [`LocalOptions::enforce_limits`], throttles each shard at 1000 records/s and 1 MiB/s.

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigBuilder};
use crate::sink::SinkError;
use crate::sink::aws::{AwsSink, sink_error};

/// ferrokinesis rejects bodies over axum's 2 MiB default; PutRecords may carry 5 MiB plus its
/// base64 and JSON framing.
const BODY_LIMIT: usize = 7 << 20;

/// How to run the local Kinesis.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalOptions {
    /// Throttle each shard at 1000 records/s and 1 MiB/s, as AWS does.
    pub enforce_limits: bool,
    /// The port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
}

/// A record read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadRecord {
    /// The shard it was read from.
    pub shard_id: String,
    /// Its sequence number.
    pub sequence_number: String,
    /// Its partition key.
    pub partition_key: String,
    /// Its data.
    pub data: Bytes,
    /// When the stream took it (`ApproximateArrivalTimestamp`), in milliseconds since the Unix
    /// epoch, if the service gave one.
    pub arrival_ms: Option<i64>,
}

/// A running local Kinesis; stopped when dropped.
#[derive(Debug)]
pub struct LocalKinesis {
    addr: SocketAddr,
    endpoint: String,
    client: Client,
    server: JoinHandle<()>,
}

impl Drop for LocalKinesis {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LocalKinesis {
    /// Starts serving on 127.0.0.1 (never another address).
    ///
    /// # Cancellation
    /// Dropping the future before it completes leaves nothing running.
    ///
    /// # Errors
    /// The listener cannot be bound (no free port on 127.0.0.1, or the port asked for is taken).
    pub async fn start(options: LocalOptions) -> std::io::Result<LocalKinesis> {
        Self::start_with(options, |app| app).await
    }

    /// As [`start`](Self::start), with the HTTP service wrapped by `wrap` (an axum `Router`
    /// layer): for tests that inject faults between the SDK and the Kinesis implementation.
    ///
    /// # Cancellation
    /// Dropping the future before it completes leaves nothing running.
    ///
    /// # Errors
    /// The listener cannot be bound (no free port on 127.0.0.1, or the port asked for is taken).
    pub async fn start_with(
        options: LocalOptions,
        wrap: impl FnOnce(axum::Router) -> axum::Router,
    ) -> std::io::Result<LocalKinesis> {
        let (app, _store) = ferrokinesis::create_app(ferrokinesis::store::StoreOptions {
            create_stream_ms: 0,
            delete_stream_ms: 0,
            update_stream_ms: 0,
            shard_limit: 10_000,
            enforce_limits: options.enforce_limits,
            ..ferrokinesis::store::StoreOptions::default()
        });
        let app = wrap(app.layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT)));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "local Kinesis stopped");
            }
        });
        let endpoint = format!("http://{addr}");
        let sink = AwsSink::new(
            &Self::config_for(&endpoint)
                .build()
                .expect("valid local config"),
        )
        .await;
        Ok(LocalKinesis {
            addr,
            endpoint,
            client: sink.client().clone(),
            server,
        })
    }

    fn config_for(endpoint: &str) -> ConfigBuilder {
        Config::builder()
            .endpoint(endpoint)
            .region("us-east-1")
            .credentials("local", "local")
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A configuration builder pointed at it (endpoint, region, static credentials).
    pub fn config(&self) -> ConfigBuilder {
        Self::config_for(&self.endpoint)
    }

    /// An SDK client pointed at it.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates a stream of `shards` evenly split shards and waits until it is active.
    ///
    /// # Cancellation
    /// Dropping the future may leave the stream created.
    ///
    /// # Errors
    /// The local Kinesis refuses the stream (a name in use, a shard count out of range), as
    /// `CreateStream` would.
    pub async fn create_stream(&self, name: &str, shards: i32) -> Result<(), SinkError> {
        self.client
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .send()
            .await
            .map_err(|e| sink_error("CreateStream", &self.addr.to_string(), Duration::ZERO, e))?;
        // Bounded wait: creation is immediate here (create_stream_ms = 0).
        for _ in 0..200 {
            let out = self
                .client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .map_err(|e| {
                    sink_error(
                        "DescribeStreamSummary",
                        &self.addr.to_string(),
                        Duration::ZERO,
                        e,
                    )
                })?;
            if out
                .stream_description_summary()
                .is_some_and(|s| s.stream_status == StreamStatus::Active)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(SinkError::new(
            "CreateStream",
            "StreamNotActive",
            format!("stream {name} did not become active"),
        ))
    }

    /// Every record in `stream`, shard by shard (closed shards included), each shard read from
    /// TRIM_HORIZON to its end.
    ///
    /// # Cancellation
    /// Dropping the future stops the reading; nothing is changed.
    ///
    /// # Errors
    /// The stream does not exist, or a `GetRecords` call fails.
    pub async fn read_all(&self, stream: &str) -> Result<Vec<ReadRecord>, SinkError> {
        let shards = self
            .client
            .list_shards()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| sink_error("ListShards", &self.addr.to_string(), Duration::ZERO, e))?
            .shards
            .unwrap_or_default();
        let mut out = Vec::new();
        for shard in shards {
            let mut iterator = self
                .client
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(&shard.shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .map_err(|e| {
                    sink_error(
                        "GetShardIterator",
                        &self.addr.to_string(),
                        Duration::ZERO,
                        e,
                    )
                })?
                .shard_iterator;
            // Bounded: a page holds up to 10,000 records; stop at the first empty page.
            for _ in 0..100_000 {
                let Some(it) = iterator.take() else { break };
                let page = self
                    .client
                    .get_records()
                    .shard_iterator(it)
                    .limit(10_000)
                    .send()
                    .await
                    .map_err(|e| {
                        sink_error("GetRecords", &self.addr.to_string(), Duration::ZERO, e)
                    })?;
                if page.records.is_empty() {
                    break;
                }
                for r in page.records {
                    let arrival_ms = r
                        .approximate_arrival_timestamp
                        .and_then(|t| t.to_millis().ok());
                    out.push(ReadRecord {
                        shard_id: shard.shard_id.clone(),
                        sequence_number: r.sequence_number,
                        partition_key: r.partition_key,
                        data: Bytes::from(r.data.into_inner()),
                        arrival_ms,
                    });
                }
                iterator = page.next_shard_iterator;
            }
        }
        Ok(out)
    }
}
