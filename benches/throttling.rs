//! The per-shard rate limiter against real throttling: ferrokinesis with its per-shard limits
//! enforced (1000 records/s, 1 MiB/s per shard) on 127.0.0.1, a 2-shard stream offered twice its
//! byte capacity (records of 1,000 bytes) for 30 s, by one producer and then by four sharing
//! it. Reports records failed (target: none) and delivered throughput against the shards' byte
//! budget (targets: at least 95% for one producer; at least 90% together for four, each within
//! 25% of a fair share).
//!
//! Run: `cargo bench --bench throttling` (set KPL_OVERLOAD_SECS to change the 30 s).

#[path = "../tests/common/mod.rs"]
mod common;
use common::overload;

fn main() {
    // `cargo test --all-targets` runs benches once as tests: keep that quick.
    let secs = if std::env::args().any(|a| a == "--bench") {
        std::env::var("KPL_OVERLOAD_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30)
    } else {
        2
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(overload::run(2, 1000, 200.0, secs));
    println!(
        "throttling/2-shards-2x-offered-{secs}s: {} records, {} failed, {} retried at least once; \
         delivered {:.2} MiB/s = {:.1}% of the 2 MiB/s budget ({:.1}% while under way, start \
         and tail left out); {} Kinesis records; read back {}",
        r.records,
        r.failed,
        r.retried,
        r.delivered_bytes_per_sec / 1048576.0,
        r.delivered_share * 100.0,
        r.steady_share * 100.0,
        r.kinesis_records,
        r.read_back
    );
    assert_eq!(r.failed, 0, "no record may fail under overload");
    // The target met and claimed in docs/benchmarks.md, at the measured scale (a 2 s run is
    // mostly start and tail).
    if secs >= 30 {
        assert!(
            r.delivered_share >= 0.95,
            "one producer delivered {:.1}% of the byte budget, under 95%",
            r.delivered_share * 100.0
        );
    }

    // Four producers sharing the stream, together offering twice its capacity.
    let runs = rt.block_on(overload::run_shared(4, 2, 1000, 200.0, secs));
    // Each producer's rate over its own drain time; together, over the slowest one's.
    let slowest = runs
        .iter()
        .map(|r| r.delivered_share)
        .fold(f64::INFINITY, f64::min);
    let total: f64 = slowest * runs.len() as f64;
    let shares: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.1}%", r.delivered_share * 100.0))
        .collect();
    let fair = runs.iter().map(|r| r.delivered_share).sum::<f64>() / runs.len() as f64;
    let worst = runs
        .iter()
        .map(|r| (r.delivered_share - fair).abs() / fair)
        .fold(0.0, f64::max);
    println!(
        "throttling/4-producers-2-shards-2x-offered-{secs}s: {} records, {} failed; together \
         at least {:.1}% of the byte budget (4 x the slowest), each {} over its own drain time \
         (at most {:.1}% from the mean); read back {}",
        runs.iter().map(|r| r.records).sum::<usize>(),
        runs.iter().map(|r| r.failed).sum::<usize>(),
        total * 100.0,
        shares.join(", "),
        worst * 100.0,
        runs[0].read_back
    );
    assert!(runs.iter().all(|r| r.failed == 0), "no record may fail");
    // The targets met and claimed in docs/benchmarks.md, checked at the measured scale (the
    // 2 s run of `cargo test` is too short for shares to settle).
    if secs >= 30 {
        assert!(
            total >= 0.90,
            "four producers together below 90% of the budget"
        );
        assert!(worst <= 0.25, "a producer more than 25% from a fair share");
    }
}
