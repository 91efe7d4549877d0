//! `kpl bench --producers N`: a fleet of producers sharing one stream, each with its own
//! buffers, aggregators and rate limiter, as N processes of an application would be.

use kinesis_producer::UserRecord;
use serde::Serialize;

/// Which of `n` producers sends the `i`-th record. With `affinity`, the one that owns the
/// record's place in the hash key space (producer `k` the `k`-th of `n` equal ranges: with as
/// many shards as producers, or a multiple, a producer's records land on its own shards, as
/// in a fleet partitioned by shard); otherwise each in turn, so every key (and every shard)
/// reaches every producer, as behind a load balancer.
pub(super) fn owner(record: &UserRecord, i: u64, n: usize, affinity: bool) -> usize {
    if n <= 1 {
        return 0;
    }
    if affinity {
        // The top 64 bits of the 128-bit hash key, scaled to 0..n without overflow.
        let top = (record.hash_key().0 >> 64) as u64;
        ((u128::from(top) * n as u128) >> 64) as usize
    } else {
        (i % n as u64) as usize
    }
}

/// One producer's part of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProducerShare {
    pub user_records_sent: u64,
    pub user_records_put: u64,
    pub user_records_failed: u64,
    pub kinesis_records_put: u64,
    pub put_records_calls: u64,
    pub entries_sent: u64,
    pub throttled_entries: u64,
    pub put_payload_units: u64,
    /// Its share of the run's user records put, in percent.
    pub share_percent: f64,
    /// Its entries refused for throughput over its entries sent, in percent.
    pub throttled_percent: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_turns_and_affinity_follows_the_hash_key_range() {
        let r = |k: &str| UserRecord::new(k, "x").unwrap();
        assert_eq!(
            (0..6)
                .map(|i| owner(&r("a"), i, 3, false))
                .collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2]
        );
        // With affinity a key always goes to one producer: the one whose quarter of the hash
        // key space holds it, which is the shard's index in a stream of four even shards.
        for k in ["a", "user-0001", "user-0999", "zzz"] {
            let quarter = (r(k).hash_key().0 / (u128::MAX / 4 + 1)) as usize;
            for i in 0..3 {
                assert_eq!(owner(&r(k), i, 4, true), quarter, "{k}");
            }
        }
        let top = r("pinned").with_explicit_hash_key(kinesis_producer::HashKey(u128::MAX));
        assert_eq!(owner(&top, 0, 4, true), 3);
        assert_eq!(owner(&top, 7, 1, true), 0);
    }
}
