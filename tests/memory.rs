//! `MaxBufferedBytes` bounds the memory the buffer really holds, bookkeeping included: a
//! counting allocator (this test binary's global allocator) measures the live heap while
//! records are buffered, and it must stay within what `Producer::buffered()` says they hold.

use std::time::Duration;

use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Buffered, Config, Producer, UserRecord};

mod common;
use common::counting;
use counting::{Counting, count, live_bytes as live};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn record(i: usize) -> UserRecord {
    UserRecord::new(format!("key-{:05}", i % 1000), vec![b'x'; 90]).unwrap()
}

/// The heap the buffer takes against what it says it holds: (live heap grown, bytes charged).
fn measure(
    config: Config,
    sink: MemorySink,
    outage: bool,
    n: usize,
    run_for: Duration,
) -> (isize, usize) {
    // The counter is global: measurements must not overlap (the test harness runs tests on
    // several threads).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    count(true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let producer = Producer::with_sink(config, sink.clone());
        // Warm up: the stream, its shard map, the engine's first allocations.
        producer
            .send("s", UserRecord::new("warm", "up").unwrap())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if outage {
            sink.fail_next_calls(10_000, "ServiceUnavailable", "Service unavailable.");
        }
        let before = live();
        let mut futures = Vec::with_capacity(n);
        for i in 0..n {
            futures.push(producer.send("s", record(i)));
        }
        // The engine takes them in, aggregates them, and (in the outage) retries them.
        tokio::time::sleep(run_for).await;
        let grown = live() - before;
        let Buffered { records, bytes, .. } = producer.buffered();
        assert_eq!(records, n, "every record still buffered");
        eprintln!(
            "{n} records buffered: heap grew {grown} bytes ({:.0} per record, of which 2 x {} \
             data and key), {bytes} bytes charged ({:.0} per record)",
            grown as f64 / n as f64,
            record(0).size(),
            bytes as f64 / n as f64
        );
        drop(futures);
        count(false);
        (grown, bytes)
    })
}

#[test]
fn buffered_records_take_no_more_memory_than_they_are_charged() {
    let sink = MemorySink::new().with_stream("s", 4).discarding();
    let config = Config::builder()
        .record_max_buffered_time(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (grown, charged) = measure(config, sink, false, 20_000, Duration::from_millis(10));
    assert!(grown > 0);
    assert!(grown as usize <= charged, "{grown} > {charged}");
}

/// An outage: every call fails for a minute, so every record is retried again and again and
/// keeps its attempts: that memory is charged too.
#[test]
fn records_retried_through_an_outage_stay_within_their_charge() {
    let sink = MemorySink::new().with_stream("s", 4).discarding();
    let config = Config::builder()
        .record_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let (grown, charged) = measure(config, sink, true, 20_000, Duration::from_secs(60));
    assert!(grown as usize <= charged, "{grown} > {charged}");
}
