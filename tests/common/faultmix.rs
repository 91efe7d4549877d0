//! A Kinesis with random faults that do not follow the producer's rate, as when other
//! producers share the stream or the network misbehaves: ferrokinesis on 127.0.0.1 behind a
//! fault-injecting layer. Each PutRecords call, at random (calls 1 to 4: one of each of the
//! first four classes, in order):
//! - 20%: throttled as a whole (HTTP 400 `ProvisionedThroughputExceededException`, not stored);
//! - 15%: HTTP 500 `InternalFailure` (not stored);
//! - 10%: the connection dropped without an answer (half before the write, half after it: the
//!   records are then stored, and the producer cannot tell);
//! - otherwise it goes through, with 30% of its entries throttled one by one
//!   (`ProvisionedThroughputExceededException`, removed from the request before ferrokinesis
//!   sees it, so they are not stored), the answer merged back in request order.
//!
//! Shared by `tests/faultmix.rs` (short, checks that nothing fails) and `benches/faultmix.rs`.
// Faults (and names) drawn from the global generator on purpose: not shaped by the producer.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{Response, StatusCode};
use axum::middleware::Next;
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::{Config, Producer, UserRecord};
use serde_json::{Value, json};

use super::harness;

/// The embedded Kinesis as AWS limits it: each shard at 1000 records/s and 1 MiB/s.
pub const LIMITED: LocalOptions = LocalOptions {
    enforce_limits: true,
    port: 0,
};

/// What the layer did.
#[derive(Debug, Default)]
pub struct Injected {
    pub calls: AtomicU64,
    pub throttled_calls: AtomicU64,
    pub errors_500: AtomicU64,
    pub dropped: AtomicU64,
    pub throttled_entries: AtomicU64,
    pub entries: AtomicU64,
}

/// A Kinesis error answer, as the service writes one.
pub fn error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Body::from(
            json!({"__type": kind, "message": message}).to_string(),
        ))
        .unwrap()
}

/// A whole call refused with HTTP 500 `InternalFailure`.
pub fn server_error(message: &str) -> Response<Body> {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalFailure",
        message,
    )
}

/// A whole call throttled: HTTP 400 `ProvisionedThroughputExceededException`.
pub fn throttled(message: &str) -> Response<Body> {
    let code = "ProvisionedThroughputExceededException";
    error(StatusCode::BAD_REQUEST, code, message)
}

/// An answer whose body breaks off: hyper drops the connection, the client gets no answer.
fn dropped() -> Response<Body> {
    let broken = futures_util::stream::iter([Err::<Bytes, _>(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "dropped by the fault layer",
    ))]);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-amz-json-1.1")
        .header("content-length", "1000")
        .body(Body::from_stream(broken))
        .unwrap()
}

/// Whether a request is a PutRecords call.
pub fn is_put_records(req: &Request) -> bool {
    req.headers()
        .get("x-amz-target")
        .is_some_and(|t| t.as_bytes().ends_with(b".PutRecords"))
}

/// The shares of PutRecords calls met by each fault, and of the other calls' entries
/// throttled one by one.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub throttled_calls: f64,
    pub errors_500: f64,
    /// Half dropped before the write, half after it.
    pub dropped: f64,
    pub throttled_entries: f64,
}

/// The mix the module docs describe.
pub const MIX: Mix = Mix {
    throttled_calls: 0.20,
    errors_500: 0.15,
    dropped: 0.10,
    throttled_entries: 0.30,
};

/// The fault layer over the embedded Kinesis: `mix`, counted in `faults`.
pub fn layer(app: axum::Router, faults: Arc<Injected>, mix: Mix) -> axum::Router {
    app.layer(axum::middleware::from_fn(move |req, next| {
        inject(Arc::clone(&faults), mix, req, next)
    }))
}

async fn inject(faults: Arc<Injected>, mix: Mix, req: Request, next: Next) -> Response<Body> {
    if !is_put_records(&req) {
        return next.run(req).await;
    }
    let call = faults.calls.fetch_add(1, Ordering::Relaxed);
    // The upper bounds of the classes: whole-call throttling, a 500, a drop before the write,
    // one after it.
    let bounds = [
        mix.throttled_calls,
        mix.throttled_calls + mix.errors_500,
        mix.throttled_calls + mix.errors_500 + mix.dropped / 2.0,
        mix.throttled_calls + mix.errors_500 + mix.dropped,
    ];
    // Calls 1 to 4 meet one fault class each (the middle of its share), so that a short run
    // with few calls (aggregated records make few) is sure to see every class of the mix; the
    // others are drawn at random. (Not from call 0: the first call carries what gathered while
    // the first shard map came, and throttling all of it on purpose at every run measured one
    // cold-start case, not the mix.)
    let forced = (1..=4).contains(&call).then(|| {
        let k = call as usize - 1;
        let low = if k == 0 { 0.0 } else { bounds[k - 1] };
        (low + bounds[k]) / 2.0
    });
    let roll = match forced {
        Some(r) if bounds.iter().any(|&b| r < b) => r,
        _ => fastrand::f64(),
    };
    if roll < bounds[0] {
        faults.throttled_calls.fetch_add(1, Ordering::Relaxed);
        return throttled("Rate exceeded for stream (injected).");
    }
    if roll < bounds[1] {
        faults.errors_500.fetch_add(1, Ordering::Relaxed);
        return server_error("Internal service failure (injected).");
    }
    if roll < bounds[2] {
        faults.dropped.fetch_add(1, Ordering::Relaxed);
        return dropped();
    }
    let after_write = roll < bounds[3];
    // Entry throttling: take that share of the entries out, forward the rest.
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut request: Value = serde_json::from_slice(&bytes).unwrap();
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    faults
        .entries
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    let throttled: Vec<bool> = records
        .iter()
        .map(|_| fastrand::f64() < mix.throttled_entries)
        .collect();
    let kept: Vec<Value> = records
        .iter()
        .zip(&throttled)
        .filter(|(_, t)| !**t)
        .map(|(r, _)| r.clone())
        .collect();
    let n_throttled = throttled.iter().filter(|t| **t).count();
    faults
        .throttled_entries
        .fetch_add(n_throttled as u64, Ordering::Relaxed);
    let throttled_entry = json!({
        "ErrorCode": "ProvisionedThroughputExceededException",
        "ErrorMessage": "Rate exceeded for shard (injected).",
    });
    if kept.is_empty() {
        let out = json!({
            "FailedRecordCount": n_throttled,
            "Records": vec![throttled_entry; n_throttled],
        });
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Body::from(out.to_string()))
            .unwrap();
    }
    request["Records"] = Value::Array(kept);
    let mut parts = parts;
    parts.headers.remove("content-length");
    let forwarded = Request::from_parts(parts, Body::from(request.to_string()));
    let response = next.run(forwarded).await;
    if after_write {
        faults.dropped.fetch_add(1, Ordering::Relaxed);
        return dropped();
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    if !parts.status.is_success() {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    let mut results = answer["Records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter();
    let mut merged = Vec::with_capacity(throttled.len());
    let mut failed = answer["FailedRecordCount"].as_u64().unwrap_or(0);
    for t in &throttled {
        if *t {
            merged.push(throttled_entry.clone());
            failed += 1;
        } else {
            merged.push(results.next().unwrap());
        }
    }
    let out = json!({"FailedRecordCount": failed, "Records": merged});
    let mut parts = parts;
    parts.headers.remove("content-length");
    Response::from_parts(parts, Body::from(out.to_string()))
}

/// What a run under the fault mix gave.
#[derive(Debug)]
pub struct FaultRun {
    pub records: usize,
    pub delivered: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
    pub attempts_max: usize,
    pub attempts_mean: f64,
    pub seconds: f64,
    pub read_back: usize,
    pub calls: u64,
    pub throttled_calls: u64,
    pub errors_500: u64,
    pub dropped: u64,
    pub throttled_entries: u64,
    pub entries: u64,
}

/// `n` JSON-like records of about 330 bytes over 1,000 keys into a 4-shard stream behind the
/// fault mix (per-shard limits enforced too), with the producer's defaults (RecordTtl 30 s):
/// sent as fast as the producer takes them, every outcome awaited.
pub async fn run(n: usize) -> FaultRun {
    run_with(n, true).await
}

/// The same records into the same stream without the fault layer: the floor.
pub async fn run_clean(n: usize) -> FaultRun {
    run_with(n, false).await
}

async fn run_with(n: usize, faulty: bool) -> FaultRun {
    let faults = Arc::new(Injected::default());
    let f = Arc::clone(&faults);
    let kinesis = LocalKinesis::start_with(
        LIMITED,
        move |app| {
            if faulty { layer(app, f, MIX) } else { app }
        },
    )
    .await
    .unwrap();
    kinesis.create_stream("faults", 4).await.unwrap();
    let config: Config = kinesis.config().build().unwrap();
    let producer = Producer::new(config).await;
    let start = Instant::now();
    let mut futures = Vec::with_capacity(n);
    for i in 0..n {
        let data = format!(
            r#"{{"event":"page_view","n":{i},"user":"u{}","session":"{:032x}","path":"/products/{}/reviews","referrer":"https://example.com/search?q=item+{}","agent":"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/130.0","ts":"2026-12-01T10:00:00Z"}}"#,
            i % 1000,
            (i as u128) * 0x9e37_79b9_7f4a_7c15,
            i % 977,
            i % 613
        );
        let r = UserRecord::new(format!("u{}", i % 1000), data).unwrap();
        futures.push(producer.send_wait("faults", r).await);
    }
    let (mut delivered, mut failed, mut first_failure) = (0, 0, None);
    let (mut attempts_max, mut attempts_sum) = (0, 0);
    for f in futures {
        match tokio::time::timeout(Duration::from_secs(120), f)
            .await
            .expect("every future resolves")
        {
            Ok(receipt) => {
                delivered += 1;
                attempts_max = attempts_max.max(receipt.attempts.len());
                attempts_sum += receipt.attempts.len();
            }
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    producer.shutdown().await;
    let read_back: usize = kinesis
        .read_all("faults")
        .await
        .unwrap()
        .iter()
        .map(|r| harness::user_records(r).len())
        .sum();
    FaultRun {
        records: n,
        delivered,
        failed,
        first_failure,
        attempts_max,
        attempts_mean: attempts_sum as f64 / delivered.max(1) as f64,
        seconds,
        read_back,
        calls: faults.calls.load(Ordering::Relaxed),
        throttled_calls: faults.throttled_calls.load(Ordering::Relaxed),
        errors_500: faults.errors_500.load(Ordering::Relaxed),
        dropped: faults.dropped.load(Ordering::Relaxed),
        throttled_entries: faults.throttled_entries.load(Ordering::Relaxed),
        entries: faults.entries.load(Ordering::Relaxed),
    }
}
