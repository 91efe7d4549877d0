//! The producer under random faults that do not follow its rate (see tests/common/faultmix.rs):
//! 40,000 records of about 330 bytes into a 4-shard stream, default configuration (RecordTtl
//! 30 s). Target: no record fails. Floor: the same records into the same stream without the
//! fault layer, in the same run.
//!
//! Run: `cargo bench --bench faultmix` (KPL_FAULTMIX_RECORDS changes the 40,000).

#[path = "../tests/common/mod.rs"]
mod common;
use common::faultmix;

fn main() {
    // `cargo test --all-targets` runs benches once as tests: keep that quick.
    let n = if std::env::args().any(|a| a == "--bench") {
        std::env::var("KPL_FAULTMIX_RECORDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40_000)
    } else {
        1_000
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clean = rt.block_on(faultmix::run_clean(n));
    let r = rt.block_on(faultmix::run(n));
    println!(
        "faultmix/{n}-records: {} delivered, {} failed in {:.1} s ({:.0} records/s; without \
         faults {:.1} s, {:.0} records/s); attempts mean {:.2}, max {}; injected over {} calls: \
         {} throttled whole, {} HTTP 500, {} dropped, {} of {} entries throttled; read back {}",
        r.delivered,
        r.failed,
        r.seconds,
        r.records as f64 / r.seconds,
        clean.seconds,
        clean.records as f64 / clean.seconds,
        r.attempts_mean,
        r.attempts_max,
        r.calls,
        r.throttled_calls,
        r.errors_500,
        r.dropped,
        r.throttled_entries,
        r.entries,
        r.read_back
    );
    if let Some(f) = &r.first_failure {
        println!("first failure: {f}");
    }
    assert_eq!(r.failed, 0, "no record may fail");
}
