//! `kpl read` where reads are throttled, fail or outlive their iterator, as they do when other
//! consumers share a stream (5 GetRecords calls and 2 MB a second per shard, for all of them):
//! it must back off and go on, renew an expired iterator after the last record read, print
//! every record exactly once, and end any error with one sentence.
// Faults drawn from the global generator on purpose: not shaped by the reader.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Response, StatusCode};
use axum::middleware::Next;
use common::{kpl, text};
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::{Producer, UserRecord};
use serde_json::{Value, json};

#[derive(Default)]
struct Faults {
    calls: AtomicU64,
    throttled: AtomicU64,
    expired: AtomicU64,
    errors_500: AtomicU64,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Body::from(
            json!({"__type": code, "message": message}).to_string(),
        ))
        .unwrap()
}

/// GetRecords calls: 30% throttled, 5% answered with an expired iterator, 5% HTTP 500; the
/// others go through with their Limit cut to 50 records, so that reading takes many calls.
async fn faults(faults: Arc<Faults>, req: Request, next: Next) -> Response<Body> {
    let get_records = req
        .headers()
        .get("x-amz-target")
        .is_some_and(|t| t.as_bytes().ends_with(b".GetRecords"));
    if !get_records {
        return next.run(req).await;
    }
    faults.calls.fetch_add(1, Ordering::Relaxed);
    let roll = fastrand::f64();
    if roll < 0.30 {
        faults.throttled.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "Rate exceeded for Shard (injected).",
        );
    }
    if roll < 0.35 {
        faults.expired.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            "ExpiredIteratorException",
            "Iterator expired (injected).",
        );
    }
    if roll < 0.40 {
        faults.errors_500.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "Internal service failure (injected).",
        );
    }
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut request: Value = serde_json::from_slice(&bytes).unwrap();
    request["Limit"] = 50.into();
    parts.headers.remove("content-length");
    next.run(Request::from_parts(parts, Body::from(request.to_string())))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_backs_off_through_throttling_and_renews_expired_iterators() {
    let injected = Arc::new(Faults::default());
    let f = Arc::clone(&injected);
    let kinesis = LocalKinesis::start_with(LocalOptions::default(), move |app| {
        app.layer(axum::middleware::from_fn(move |req, next| {
            faults(Arc::clone(&f), req, next)
        }))
    })
    .await
    .unwrap();
    kinesis.create_stream("reads", 2).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    // Unaggregated, so that 6,000 records are 6,000 Kinesis records: 120 pages of 50.
    let config = kinesis.config().aggregation_enabled(false).build().unwrap();
    let producer = Producer::new(config).await;
    let futures: Vec<_> = (0..6_000)
        .map(|i| {
            let r = UserRecord::new(format!("k{}", i % 97), format!("record {i}")).unwrap();
            producer.send("reads", r)
        })
        .collect();
    for f in futures {
        f.await.unwrap();
    }
    producer.shutdown().await;

    let out = kpl(
        &["read", "--stream", "reads", "--endpoint-url", &endpoint],
        b"",
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut seen = HashSet::new();
    let mut lines = 0;
    for line in text(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        lines += 1;
        let data = v["data"].as_str().unwrap().to_owned();
        assert!(seen.insert(data.clone()), "{data} printed twice");
    }
    assert_eq!(lines, 6_000, "{stderr}");
    let expected: HashSet<String> = (0..6_000).map(|i| format!("record {i}")).collect();
    assert_eq!(seen, expected);
    let (calls, throttled, expired, errors_500) = (
        injected.calls.load(Ordering::Relaxed),
        injected.throttled.load(Ordering::Relaxed),
        injected.expired.load(Ordering::Relaxed),
        injected.errors_500.load(Ordering::Relaxed),
    );
    eprintln!(
        "kpl read: {calls} GetRecords calls, {throttled} throttled, {expired} expired, {errors_500} HTTP 500"
    );
    assert!(throttled > 10 && expired > 0 && errors_500 > 0);
}

/// An error `kpl read` cannot get past ends it with one sentence: the service's code and
/// message, or the endpoint and the cause, never the SDK's debug text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_errors_are_one_sentence() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let out = kpl(
        &["read", "--stream", "missing", "--endpoint-url", &endpoint],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("ListShards failed: ResourceNotFoundException:"),
        "{err}"
    );
    for debug in ["ServiceError", "ErrorMetadata", "raw:", "{ "] {
        assert!(!err.contains(debug), "{err}");
    }
    // Nothing listening: a sentence naming the endpoint, after the retries.
    let out = kpl(
        &[
            "read",
            "--stream",
            "s",
            "--endpoint-url",
            "http://127.0.0.1:9",
        ],
        b"",
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot connect to 127.0.0.1:9: connection refused"),
        "{err}"
    );
    for debug in ["DispatchFailure", "ConnectorError", "{ "] {
        assert!(!err.contains(debug), "{err}");
    }
}
