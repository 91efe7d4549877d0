//! Random faults that do not follow the producer's rate (tests/common/faultmix.rs: 20% of calls
//! throttled whole, 15% HTTP 500, 10% connections dropped, 30% of the other entries throttled
//! one by one; per-shard limits enforced too), with the default RecordTtl of 30 s: nothing may
//! fail, everything must read back. Figures: `cargo bench --bench faultmix`.

mod common;
use common::faultmix;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_at_every_rate_lose_nothing_within_the_default_ttl() {
    let r = faultmix::run(8_000).await;
    eprintln!("{r:?}");
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(r.delivered, r.records);
    // At least once: the connections dropped after the write leave extra copies.
    assert!(r.read_back >= r.records, "{r:?}");
    assert!(r.throttled_calls > 0 && r.dropped > 0 && r.throttled_entries > 0);
}
