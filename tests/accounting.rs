//! The accounting test: 100,000 records through the real SDK, a fault-injecting proxy and
//! ferrokinesis with its per-shard throttling on, all on 127.0.0.1. Faults: HTTP 500s, whole-call
//! throttling, responses slower than RequestTimeout, connection resets, the endpoint down for
//! 3 s; ferrokinesis adds real per-entry throttling. Some records go to a stream that does not
//! exist, some are too large. Every future must resolve; every Ok record must be read back where
//! its receipt says; every failed record must come back with its cause; the counts must add up.
// Faults (and names) drawn from the global generator on purpose: not shaped by the producer.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Response;
use axum::middleware::Next;
use kinesis_producer::aggregation::deaggregate_strict;
use kinesis_producer::local::LocalKinesis;
use kinesis_producer::{Producer, PutErrorKind, UserRecord};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::faultmix;

/// What the proxy does, and what it did.
#[derive(Default)]
struct Faults {
    down: AtomicBool,
    errors_500: AtomicUsize,
    throttled_calls: AtomicUsize,
    slow: AtomicUsize,
    resets: AtomicUsize,
}

/// Fault injection on PutRecords calls: 4% HTTP 500, 3% whole-call throttling, 1% answered
/// after RequestTimeout (the write happens; the answer comes too late).
async fn inject(faults: Arc<Faults>, req: Request, next: Next) -> Response<Body> {
    if !faultmix::is_put_records(&req) {
        return next.run(req).await;
    }
    let roll = fastrand::f64();
    if roll < 0.04 {
        faults.errors_500.fetch_add(1, Ordering::Relaxed);
        return faultmix::server_error("injected server error");
    }
    if roll < 0.07 {
        faults.throttled_calls.fetch_add(1, Ordering::Relaxed);
        return faultmix::throttled("Rate exceeded (injected)");
    }
    let response = next.run(req).await;
    if roll < 0.08 {
        faults.slow.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    response
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`: resets 2% of new connections, and every
/// connection (new or open) while `down` is set.
async fn tcp_proxy(upstream: std::net::SocketAddr, faults: Arc<Faults>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let faults = Arc::clone(&faults);
            tokio::spawn(async move {
                let reset = |s: TcpStream, faults: &Faults| {
                    faults.resets.fetch_add(1, Ordering::Relaxed);
                    // Linger 0: closing sends RST, which the client sees as a reset connection.
                    let _ = s.set_zero_linger();
                    drop(s);
                };
                if faults.down.load(Ordering::Relaxed) || fastrand::f64() < 0.02 {
                    return reset(client, &faults);
                }
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return reset(client, &faults);
                };
                let watch_down = async {
                    while !faults.down.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    () = watch_down => reset(client, &faults),
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_records_under_mixed_faults_add_up() {
    let faults = Arc::new(Faults::default());
    let f = Arc::clone(&faults);
    let kinesis = LocalKinesis::start_with(faultmix::LIMITED, move |app| {
        app.layer(axum::middleware::from_fn(move |req, next| {
            inject(Arc::clone(&f), req, next)
        }))
    })
    .await
    .unwrap();
    kinesis.create_stream("acct", 4).await.unwrap();
    let proxy = tcp_proxy(kinesis.addr(), Arc::clone(&faults)).await;
    let config = kinesis
        .config()
        .endpoint(format!("http://{proxy}"))
        .request_timeout(Duration::from_secs(1))
        .record_ttl(Duration::from_secs(120))
        .build()
        .unwrap();
    let producer = Producer::new(config).await;

    // Down for 3 s, two seconds in.
    let outage = {
        let faults = Arc::clone(&faults);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            faults.down.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(3)).await;
            faults.down.store(false, Ordering::Relaxed);
        })
    };

    const N: usize = 100_000;
    let mut futures = Vec::with_capacity(N);
    for i in 0..N {
        // 1% to a stream that does not exist, 0.1% too large for Kinesis.
        let stream = if i % 100 == 37 {
            "no-such-stream"
        } else {
            "acct"
        };
        let len = if i % 1000 == 501 {
            1 << 20
        } else {
            10 + (i * 7919) % 290
        };
        let mut data = format!("{i:>8}:").into_bytes();
        data.resize(len, b'x');
        let r = UserRecord::new(format!("key-{}", i % 2000), data).unwrap();
        futures.push((i, stream, producer.send_wait(stream, r).await));
    }
    let mut ok = HashMap::new();
    let mut failed: HashMap<String, usize> = HashMap::new();
    for (i, stream, f) in futures {
        // Every future resolves (a bounded wait: RecordTtl plus slack).
        match tokio::time::timeout(Duration::from_secs(180), f)
            .await
            .expect("every future resolves")
        {
            Ok(receipt) => {
                assert_eq!(stream, "acct");
                ok.insert(format!("{i:>8}:"), receipt);
            }
            Err(e) => {
                // Handed back, with its cause.
                assert_eq!(&e.record.data()[..9], format!("{i:>8}:").as_bytes());
                let cause = match &e.kind {
                    PutErrorKind::Rejected { code, .. } => {
                        assert_eq!(
                            stream, "no-such-stream",
                            "only the missing stream is refused: {e}"
                        );
                        code.clone()
                    }
                    PutErrorKind::InvalidRecord(_) => {
                        assert_eq!(e.record.data().len(), 1 << 20);
                        "InvalidRecord".into()
                    }
                    other => panic!("record {i} failed unexpectedly: {other}"),
                };
                *failed.entry(cause).or_default() += 1;
            }
        }
    }
    outage.await.unwrap();
    producer.shutdown().await;

    // Every Ok record is in the stream, where its receipt says (possibly more than once: a
    // write whose answer came too late was sent again).
    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut located = 0;
    for r in kinesis.read_all("acct").await.unwrap() {
        for u in deaggregate_strict(&r.partition_key, r.data.clone()).unwrap() {
            let id = String::from_utf8_lossy(&u.data[..9]).into_owned();
            *copies.entry(id.clone()).or_default() += 1;
            if let Some(receipt) = ok.get(&id)
                && *receipt.shard_id == r.shard_id
                && *receipt.sequence_number == r.sequence_number
                && receipt.sub_sequence_number == u.sub_sequence_number
            {
                located += 1;
            }
        }
    }
    for id in ok.keys() {
        assert!(
            copies.contains_key(id),
            "record {id} was Ok but is not in the stream"
        );
    }
    assert_eq!(
        located,
        ok.len(),
        "every receipt points at a copy of its record"
    );
    let failed_total: usize = failed.values().sum();
    assert_eq!(ok.len() + failed_total, N, "the counts add up");
    assert_eq!(failed.get("ResourceNotFoundException"), Some(&1000));
    assert_eq!(failed.get("InvalidRecord"), Some(&100));
    let duplicates: usize = copies.values().map(|c| c - 1).sum();
    let retried = ok.values().filter(|r| r.attempts.len() > 1).count();
    eprintln!(
        "accounting: {N} records: {} ok ({retried} after retries), failed {failed:?}; faults injected: {} HTTP 500, {} throttled calls, {} slow answers, {} connection resets, 3 s down; {duplicates} duplicate copies in the stream",
        ok.len(),
        faults.errors_500.load(Ordering::Relaxed),
        faults.throttled_calls.load(Ordering::Relaxed),
        faults.slow.load(Ordering::Relaxed),
        faults.resets.load(Ordering::Relaxed),
    );
    assert_eq!(
        copies.len(),
        ok.len(),
        "nothing in the stream that was not Ok"
    );
}
