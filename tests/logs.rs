//! What the producer logs, read back as the JSON lines `tracing-subscriber` writes: a span per
//! PutRecords call (stream, entries, bytes, attempt), following from the spans its records were
//! sent in, and per shard-map listing; a debug event for each retry decision (code, class,
//! wait); a warning for rejections and expiries, one per group of records failing together, not
//! one per record.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Config, Producer};
use serde_json::Value;

mod common;
use common::harness;
use common::log_buffer;
use harness::record;
use log_buffer::LogBuffer;

/// Every line logged, as JSON.
fn lines(log: &LogBuffer) -> Vec<Value> {
    log.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every event with this message, as logged.
fn events<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["fields"]["message"] == message)
        .collect()
}

fn capture() -> (LogBuffer, tracing::subscriber::DefaultGuard) {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        // A span that logs nothing inside it still shows, when it closes.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn calls_are_spans_and_retry_decisions_are_events() {
    let (log, _guard) = capture();
    let sink = MemorySink::new().with_stream("s", 1);
    sink.fail_next_calls(1, "ServiceUnavailable", "try later");
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let receipt = producer.send("s", record("k", "v")).await.unwrap();
    assert_eq!(receipt.attempts.len(), 2);
    producer.shutdown().await;
    let lines = lines(&log);
    // Two calls, each its own span with its attempt.
    let calls = events(&lines, "PutRecords");
    let attempts: Vec<&Value> = calls.iter().map(|e| &e["span"]["attempt"]).collect();
    assert_eq!(attempts, [1, 2], "{calls:?}");
    for call in &calls {
        assert_eq!(call["span"]["name"], "put_records");
        assert_eq!(call["span"]["stream"], "s");
        assert_eq!(call["span"]["entries"], 1);
    }
    let retries = events(&lines, "retrying");
    assert_eq!(retries.len(), 1, "{lines:?}");
    assert_eq!(retries[0]["level"], "DEBUG");
    assert_eq!(retries[0]["fields"]["code"], "ServiceUnavailable");
    assert_eq!(retries[0]["fields"]["class"], "Transient");
    assert!(
        lines.iter().any(|l| l["span"]["name"] == "list_shards"),
        "the listing has its span"
    );
}

#[tokio::test(start_paused = true)]
async fn rejections_and_expiries_warn_once_per_group() {
    let (log, _guard) = capture();
    let sink = MemorySink::new().with_stream("s", 1);
    sink.set_entry_fault(|_| {
        Some((
            "AccessDeniedException".into(),
            "User is not authorized".into(),
        ))
    });
    let producer = Producer::with_sink(Config::default(), sink.clone());
    let futures: Vec<_> = (0..50)
        .map(|i| producer.send("s", record("k", &format!("{i}"))))
        .collect();
    for f in futures {
        f.await.unwrap_err();
    }
    producer.shutdown().await;
    let (_sink, expiring) = harness::failing_producer("down", Duration::from_secs(1));
    let futures: Vec<_> = (0..50)
        .map(|i| expiring.send("s", record("k", &format!("{i}"))))
        .collect();
    for f in futures {
        f.await.unwrap_err();
    }
    expiring.shutdown().await;
    let lines = lines(&log);
    // The 50 records went as one aggregate: one warning each, not fifty.
    let rejected = events(&lines, "records rejected by Kinesis, not retried");
    assert_eq!(rejected.len(), 1, "{lines:?}");
    assert_eq!(rejected[0]["level"], "WARN");
    assert_eq!(rejected[0]["fields"]["records"], 50);
    assert_eq!(rejected[0]["fields"]["code"], "AccessDeniedException");
    let expired = events(
        &lines,
        "records expired (RecordTtl) before their next attempt",
    );
    assert_eq!(expired.len(), 1, "{lines:?}");
    assert_eq!(expired[0]["level"], "WARN");
    assert_eq!(expired[0]["fields"]["records"], 50);
    assert_eq!(expired[0]["fields"]["ttl_ms"], 1000);
}

/// The `follows_from` links between spans: (the span's name, the id of the one it follows).
#[derive(Clone, Default)]
struct Links(Arc<Mutex<Vec<(String, u64)>>>);

impl<S> tracing_subscriber::Layer<S> for Links
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let name = ctx.span(span).map_or("?".into(), |s| s.name().to_owned());
        self.0.lock().unwrap().push((name, follows.into_u64()));
    }
}

/// Records the links between spans (debug and above) until the guard is dropped.
fn capture_links() -> (Links, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::layer::SubscriberExt;
    let links = Links::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(links.clone());
    (links, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn a_call_follows_from_the_spans_its_records_were_sent_in() {
    let (links, _guard) = capture_links();
    let sink = MemorySink::new().with_stream("s", 1);
    let producer = Producer::with_sink(Config::default(), sink);
    // Two requests, three records: one call of one aggregate, linked to each request once.
    let first = tracing::info_span!("handle_request", id = 1);
    let second = tracing::info_span!("handle_request", id = 2);
    let futures = vec![
        first.in_scope(|| producer.send("s", record("a", "1"))),
        first.in_scope(|| producer.send("s", record("b", "2"))),
        second.in_scope(|| producer.send("s", record("c", "3"))),
        // Outside any span: nothing to link.
        producer.send("s", record("d", "4")),
    ];
    for f in futures {
        f.await.unwrap();
    }
    producer.shutdown().await;
    let links = links.0.lock().unwrap().clone();
    let call = |span: &tracing::Span| ("put_records".to_owned(), span.id().unwrap().into_u64());
    assert_eq!(links, [call(&first), call(&second)]);
}

#[tokio::test(start_paused = true)]
async fn a_call_follows_from_at_most_32_spans() {
    let (links, _guard) = capture_links();
    let producer = Producer::with_sink(Config::default(), MemorySink::new().with_stream("s", 1));
    // Forty requests, one record each, all in one aggregate of one call.
    let spans: Vec<tracing::Span> = (0..40)
        .map(|i| tracing::info_span!("handle_request", id = i))
        .collect();
    let futures: Vec<_> = spans
        .iter()
        .enumerate()
        .map(|(i, span)| span.in_scope(|| producer.send("s", record("k", &i.to_string()))))
        .collect();
    for f in futures {
        f.await.unwrap();
    }
    producer.shutdown().await;
    let links = links.0.lock().unwrap().clone();
    assert_eq!(links.len(), 32, "{links:?}");
    let first: Vec<u64> = spans[..32]
        .iter()
        .map(|s| s.id().unwrap().into_u64())
        .collect();
    assert_eq!(links.iter().map(|(_, id)| *id).collect::<Vec<_>>(), first);
}
