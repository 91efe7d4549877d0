//! The metrics uploaded to CloudWatch as the KPL uploads them, end to end: records put through
//! the embedded Kinesis, metrics uploaded every MetricsUploadDelay to moto's CloudWatch (PyPI
//! `moto[server]`, which no one here wrote) on 127.0.0.1, read back with GetMetricStatistics.
//! `scripts/test.sh` installs moto and names its server in `KPL_MOTO_SERVER`; the test starts it
//! on a free port and stops it.
#![cfg(feature = "cloudwatch")]
#![allow(clippy::disallowed_methods)] // the query's time range is wall-clock time

mod common;
use common::moto;

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use common::free_port;
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::{Producer, UserRecord};
use moto::Moto;

fn dimension(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_uploaded_to_cloudwatch_under_the_kpls_names_and_dimensions() {
    let moto = Moto::start().await;
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("watched", 2).await.unwrap();
    let config = kinesis
        .config()
        .upload_metrics(true)
        .cloudwatch_endpoint(&moto.endpoint)
        .metrics_namespace("KplTest")
        .metrics_upload_delay(Duration::from_millis(500))
        .metrics_dimension("Service", "checkout")
        .build()
        .unwrap();
    let producer = Producer::new(config).await;
    let futures: Vec<_> = (0..300)
        .map(|i| producer.send("watched", UserRecord::new(format!("k{i}"), "data").unwrap()))
        .collect();
    for f in futures {
        f.await.unwrap();
    }
    producer.shutdown().await;

    let sdk = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatch::config::Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .build();
    let cloudwatch = aws_sdk_cloudwatch::Client::from_conf(sdk);
    let now = SystemTime::now();
    let query = |name: &str, dims: Vec<Dimension>| {
        cloudwatch
            .get_metric_statistics()
            .namespace("KplTest")
            .metric_name(name)
            .set_dimensions(Some(dims))
            .start_time(DateTime::from(now - Duration::from_secs(600)))
            .end_time(DateTime::from(now + Duration::from_secs(600)))
            .period(60)
            .statistics(Statistic::Sum)
            .statistics(Statistic::SampleCount)
            .send()
    };
    // moto matches a query to every datum that has all the queried dimensions, and more
    // (`MetricDatumBase.filter`, moto/cloudwatch/models.py), where CloudWatch matches the exact
    // set: so a query for (StreamName, Service) also sums the per-shard series. Each series is
    // told apart by subtracting the finer ones.
    let sum = |dims: Vec<Dimension>| {
        let query = query("UserRecordsPut", dims);
        async move {
            let points = query.await.unwrap().datapoints.unwrap_or_default();
            points.iter().fold((0.0, 0.0), |(s, c), p| {
                (s + p.sum.unwrap_or(0.0), c + p.sample_count.unwrap_or(0.0))
            })
        }
    };
    let service = || dimension("Service", "checkout");
    let stream = || vec![dimension("StreamName", "watched"), service()];
    // The uploads were made while the producer ran and at its shutdown (in the background):
    // wait, bounded, until CloudWatch has them all (three series of 300: producer, stream and
    // its shards together).
    for _ in 0..100 {
        if sum(vec![service()]).await.0 >= 900.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = cloudwatch
        .list_metrics()
        .namespace("KplTest")
        .metric_name("UserRecordsPut")
        .send()
        .await
        .unwrap()
        .metrics
        .unwrap_or_default();
    let shard_ids: Vec<String> = listed
        .iter()
        .flat_map(|m| m.dimensions().iter())
        .filter(|d| d.name() == Some("ShardId"))
        .filter_map(|d| d.value().map(str::to_owned))
        .collect();
    assert_eq!(shard_ids.len(), 2, "one series per shard: {listed:?}");
    let mut shards = (0.0, 0.0);
    for id in &shard_ids {
        let mut dims = stream();
        dims.push(dimension("ShardId", id));
        let (s, c) = sum(dims).await;
        assert!(s > 0.0, "shard {id} took records");
        shards = (shards.0 + s, shards.1 + c);
    }
    assert_eq!(shards, (300.0, 300.0), "the shards' series: sum, count");
    let with_stream = sum(stream()).await;
    let stream_only = (with_stream.0 - shards.0, with_stream.1 - shards.1);
    assert_eq!(stream_only, (300.0, 300.0), "the stream's series");
    let all = sum(vec![service()]).await;
    let global = (all.0 - with_stream.0, all.1 - with_stream.1);
    assert_eq!(
        global,
        (300.0, 300.0),
        "the producer's series (only the extra dimension)"
    );
    // Other metrics went too, under the KPL's names.
    let names: std::collections::BTreeSet<String> = cloudwatch
        .list_metrics()
        .namespace("KplTest")
        .send()
        .await
        .unwrap()
        .metrics
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.metric_name().map(str::to_owned))
        .collect();
    for name in [
        "BufferingTime",
        "KinesisRecordsPut",
        "RequestTime",
        "UserRecordsReceived",
    ] {
        assert!(names.contains(name), "{name} not uploaded: {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cloudwatch_neither_holds_up_nor_fails_a_record() {
    // Nothing listens on this port of 127.0.0.1: every upload fails to connect, and is retried.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("unwatched", 1).await.unwrap();
    let config = kinesis
        .config()
        .upload_metrics(true)
        .cloudwatch_endpoint(&nowhere)
        .metrics_upload_delay(Duration::from_millis(50))
        .build()
        .unwrap();
    let producer = Producer::new(config).await;
    for round in 0..5 {
        let futures: Vec<_> = (0..100)
            .map(|i| {
                let record = UserRecord::new(format!("k{i}"), format!("{round}")).unwrap();
                producer.send("unwatched", record)
            })
            .collect();
        for f in futures {
            f.await.expect("put whatever CloudWatch does");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A hang guard, not a speed test: shutdown does not wait for the uploader.
    tokio::time::timeout(Duration::from_secs(60), producer.shutdown())
        .await
        .expect("shutdown finishes while CloudWatch is unreachable");
}
