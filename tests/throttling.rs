//! Sustained overload against a real per-shard-throttling Kinesis (ferrokinesis with limits
//! enforced, on 127.0.0.1): twice the stream's capacity offered, no record may fail and every
//! record must read back. The throughput figure is printed, not asserted (see
//! `cargo bench --bench throttling` for the 30 s measurement).

mod common;
use common::overload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_capacity_turns_into_backpressure_not_failures() {
    let r = overload::run(2, 1000, 200.0, 8).await;
    eprintln!("{r:?}");
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(r.read_back, r.records, "{r:?}");
}

/// Four producers sharing the stream, twice its capacity in total: none fails, all reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_sharing_an_overloaded_stream_lose_nothing() {
    let runs = overload::run_shared(4, 2, 1000, 200.0, 6).await;
    for r in &runs {
        eprintln!("{r:?}");
        assert_eq!(r.failed, 0, "{r:?}");
    }
    let records: usize = runs.iter().map(|r| r.records).sum();
    assert_eq!(runs[0].read_back, records);
}
