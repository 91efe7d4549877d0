//! kinesis-local (npm 0.6.2, a Scala.js build of kinesis-mock, which no one here wrote), started
//! by the test on free ports of 127.0.0.1 and stopped when it is dropped. It addresses streams by
//! StreamARN on every call and honours `MaxRecordSizeInKiB`, which the embedded ferrokinesis
//! does not (see the facts file). It listens on every interface (it has no host setting): the
//! tests only ever connect to 127.0.0.1. `scripts/test.sh` installs it and names it in
//! `KPL_KINESIS_LOCAL`. Included next to `mod common;` (it uses `common::free_port`).
#![allow(dead_code)] // each test binary uses its own subset

use std::process::Command;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::types::StreamStatus;
use kinesis_producer::{Config, ConfigBuilder};

use super::{Service, free_port};

/// kinesis-local takes a 12-digit access key id as the account id.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

pub struct KinesisLocal {
    _server: Service,
    /// Its plain HTTP endpoint.
    pub endpoint: String,
    /// The port it serves HTTPS on, with the certificate it was started with.
    pub tls_port: u16,
    pub client: Client,
}

impl KinesisLocal {
    /// Starts kinesis-local and waits (at most 30 s) until it answers.
    pub async fn start() -> KinesisLocal {
        KinesisLocal::start_with_certificate(None).await
    }

    /// As [`KinesisLocal::start`], serving HTTPS with the key and certificate of `cert`
    /// (kinesis-local's `server.json` form: `{"server": {"key": PEM, "cert": PEM}}`) instead of
    /// its own self-signed one (which names no host, so no verifying client accepts it).
    pub async fn start_with_certificate(cert: Option<&std::path::Path>) -> KinesisLocal {
        let dir = std::env::var("KPL_KINESIS_LOCAL").expect(
            "these tests need kinesis-local (npm): run scripts/test.sh, which installs it, or set \
             KPL_KINESIS_LOCAL to its node_modules/kinesis-local directory",
        );
        let (plain, tls) = (free_port(), free_port());
        let cert = cert.map_or_else(|| format!("{dir}/server.json"), |p| p.display().to_string());
        let mut command = Command::new("node");
        command
            .arg(format!("{dir}/main.js"))
            .env("KINESIS_MOCK_CERT_PATH", cert)
            .env("KINESIS_MOCK_PLAIN_PORT", plain.to_string())
            .env("KINESIS_MOCK_TLS_PORT", tls.to_string())
            .env("LOG_LEVEL", "WARN")
            .env("CREATE_STREAM_DURATION", "1ms")
            .env("UPDATE_SHARD_COUNT_DURATION", "1ms");
        let server = Service::start(command, "node runs kinesis-local");
        let endpoint = format!("http://127.0.0.1:{plain}");
        let sdk = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&endpoint)
            .credentials_provider(Credentials::new(ACCOUNT, "local", None, None, "test"))
            .build();
        let local = KinesisLocal {
            _server: server,
            endpoint,
            tls_port: tls,
            client: Client::from_conf(sdk),
        };
        for _ in 0..300 {
            if local.client.list_streams().send().await.is_ok() {
                return local;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "kinesis-local did not answer on {} within 30 s",
            local.endpoint
        );
    }

    /// A producer configuration for this endpoint (static credentials of [`ACCOUNT`]).
    pub fn config(&self) -> ConfigBuilder {
        Config::builder()
            .endpoint(&self.endpoint)
            .region(REGION)
            .credentials(ACCOUNT, "local")
    }

    /// Creates a stream of `shards` shards (with `MaxRecordSizeInKiB` when given), waits until
    /// it is active, and returns its ARN.
    pub async fn create_stream(
        &self,
        name: &str,
        shards: i32,
        max_record_kib: Option<i32>,
    ) -> String {
        self.client
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .set_max_record_size_in_kib(max_record_kib)
            .send()
            .await
            .unwrap();
        for _ in 0..300 {
            let summary = self
                .client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .unwrap()
                .stream_description_summary
                .unwrap();
            if summary.stream_status == StreamStatus::Active {
                return summary.stream_arn;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("stream {name} did not become active within 30 s");
    }

    /// Every record of the stream, shard by shard, from the start, except the shards in `skip`.
    pub async fn records(&self, arn: &str, skip: &[&str]) -> Vec<aws_sdk_kinesis::types::Record> {
        let shards = self
            .client
            .list_shards()
            .stream_arn(arn)
            .send()
            .await
            .unwrap()
            .shards
            .unwrap_or_default();
        let mut out = Vec::new();
        for shard in shards
            .into_iter()
            .filter(|s| !skip.contains(&s.shard_id.as_str()))
        {
            let mut iterator = self
                .client
                .get_shard_iterator()
                .stream_arn(arn)
                .shard_id(shard.shard_id)
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator;
            // Bounded: an empty page ends a shard.
            for _ in 0..1000 {
                let Some(it) = iterator.take() else { break };
                let page = self
                    .client
                    .get_records()
                    .stream_arn(arn)
                    .shard_iterator(it)
                    .limit(100)
                    .send()
                    .await
                    .unwrap();
                let empty = page.records.is_empty();
                out.extend(page.records);
                if empty {
                    break;
                }
                iterator = page.next_shard_iterator;
            }
        }
        out
    }
}

impl KinesisLocal {
    /// Every user record the stream holds (aggregates taken apart), as text, sorted.
    pub async fn user_records(&self, arn: &str) -> Vec<String> {
        let mut read: Vec<String> = self
            .records(arn, &[])
            .await
            .into_iter()
            .flat_map(|r| {
                let key = r.partition_key.clone();
                kinesis_producer::aggregation::deaggregate(
                    &key,
                    bytes::Bytes::from(r.data.into_inner()),
                )
                .into_iter()
                .map(|u| String::from_utf8(u.data.to_vec()).unwrap())
                .collect::<Vec<_>>()
            })
            .collect();
        read.sort();
        read
    }
}
