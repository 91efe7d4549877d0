//! Per-shard write limits: token buckets for records/s and bytes/s, adaptive to throttling.
//!
//! Pure: no I/O, time passed in. Kinesis allows each shard 1000 records/s and 1 MiB/s
//! ([`SHARD_RECORDS_PER_SEC`], [`SHARD_BYTES_PER_SEC`]); the producer aims at `RateLimit` percent
//! of that (KPL default 150: Kinesis tolerates short bursts over the rate, and aiming a little
//! high keeps a shard busy). When a shard throttles anyway, its limiter cuts its own rate
//! (multiplicative decrease) and earns it back with every record put (additive increase), so a
//! sustained overload turns into waiting records and backpressure, not failed ones.

use std::time::{Duration, Instant};

/// Kinesis's write limit per shard, in records (PutRecords entries) per second.
pub const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
/// Kinesis's write limit per shard, in bytes per second (1 MiB).
pub const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// The lowest share of its configured rate a throttled shard is cut to.
const MIN_FACTOR: f64 = 0.1;
/// A throttled shard's rate is multiplied by this.
const DECREASE: f64 = 0.7;
/// Throttled entries that come back together are one signal: cut at most once per this.
const DECREASE_EVERY: Duration = Duration::from_millis(200);
/// Each record put earns this much of the rate back.
const INCREASE: f64 = 0.02;
/// The shortest wait [`ShardLimiter::ready_at`] reports when a record cannot go now.
const MIN_WAIT: Duration = Duration::from_millis(1);
/// Buckets hold at most this much time's worth of tokens (the burst allowed).
const BURST: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    /// Tokens per second at factor 1.
    rate: f64,
}

impl Bucket {
    fn refill(&mut self, elapsed: f64, factor: f64) {
        let rate = self.rate * factor;
        self.tokens = (self.tokens + rate * elapsed).min(rate * BURST.as_secs_f64());
    }
}

/// The limiter of one shard.
#[derive(Debug, Clone)]
pub struct ShardLimiter {
    records: Bucket,
    bytes: Bucket,
    factor: f64,
    last: Instant,
    last_decrease: Option<Instant>,
}

impl ShardLimiter {
    /// A limiter at `rate_limit_percent` of the shard's limits, with a full burst available.
    pub fn new(rate_limit_percent: u32, now: Instant) -> Self {
        let share = f64::from(rate_limit_percent) / 100.0;
        let burst = BURST.as_secs_f64();
        ShardLimiter {
            records: Bucket {
                tokens: SHARD_RECORDS_PER_SEC * share * burst,
                rate: SHARD_RECORDS_PER_SEC * share,
            },
            bytes: Bucket {
                tokens: SHARD_BYTES_PER_SEC * share * burst,
                rate: SHARD_BYTES_PER_SEC * share,
            },
            factor: 1.0,
            last: now,
            last_decrease: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.records.refill(elapsed, self.factor);
        self.bytes.refill(elapsed, self.factor);
    }

    /// Takes what one Kinesis record of `bytes` bytes costs, if it is available now. A record
    /// bigger than the byte bucket can ever hold goes when the bucket is full (and drives it
    /// negative), so it is delayed, never refused.
    pub fn try_take(&mut self, bytes: usize, now: Instant) -> bool {
        self.refill(now);
        let full_bytes = self.bytes.rate * self.factor * BURST.as_secs_f64();
        let bytes_ok = self.bytes.tokens >= bytes as f64 || self.bytes.tokens >= full_bytes;
        if self.records.tokens >= 1.0 && bytes_ok {
            self.records.tokens -= 1.0;
            self.bytes.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }

    /// When a record of `bytes` bytes could be taken, at the current rate.
    pub fn ready_at(&self, bytes: usize, now: Instant) -> Instant {
        let wait = |b: &Bucket, need: f64| {
            let rate = b.rate * self.factor;
            if b.tokens >= need {
                0.0
            } else {
                (need - b.tokens) / rate
            }
        };
        let full_bytes = self.bytes.rate * self.factor * BURST.as_secs_f64();
        let need_bytes = (bytes as f64).min(full_bytes);
        let secs = wait(&self.records, 1.0).max(wait(&self.bytes, need_bytes));
        if secs <= 0.0 {
            return now;
        }
        // Measured from the last refill; at least a millisecond ahead, so that a wait rounded
        // down to nothing cannot wake the caller at the same instant over and over.
        (self.last + Duration::from_secs_f64(secs)).max(now + MIN_WAIT)
    }

    /// The shard throttled a record: slow down (once per [`DECREASE_EVERY`]).
    pub fn throttled(&mut self, now: Instant) {
        self.refill(now);
        if self
            .last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < DECREASE_EVERY)
        {
            return;
        }
        self.last_decrease = Some(now);
        self.factor = (self.factor * DECREASE).max(MIN_FACTOR);
        // What was saved up at the old rate must not burst out now.
        self.records.tokens = self.records.tokens.min(0.0);
        self.bytes.tokens = self.bytes.tokens.min(0.0);
    }

    /// A record was put on the shard: earn some rate back.
    pub fn put(&mut self, now: Instant) {
        self.refill(now);
        self.factor = (self.factor + INCREASE).min(1.0);
    }

    /// The share of the configured rate in force, in `0.1..=1`.
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        thread_local!(static BASE: Instant = Instant::now());
        BASE.with(|b| *b)
    }

    fn at(ms: u64) -> Instant {
        t0() + Duration::from_millis(ms)
    }

    /// Sends records of `size` bytes as fast as the limiter lets them over `secs` seconds and
    /// returns (records, bytes) sent.
    fn drain(l: &mut ShardLimiter, size: usize, secs: u64) -> (u64, u64) {
        let (mut n, mut b) = (0, 0);
        let mut now = at(0);
        let end = at(secs * 1000);
        while now < end {
            if l.try_take(size, now) {
                n += 1;
                b += size as u64;
            } else {
                now = l.ready_at(size, now).max(now + Duration::from_micros(1));
            }
        }
        (n, b)
    }

    #[test]
    fn small_records_are_bounded_by_the_record_rate() {
        let mut l = ShardLimiter::new(100, at(0));
        let (n, _) = drain(&mut l, 10, 10);
        // 10 s at 1000/s plus the initial half-second burst.
        assert!((10_000..=10_600).contains(&n), "{n}");
    }

    #[test]
    fn large_records_are_bounded_by_the_byte_rate() {
        let mut l = ShardLimiter::new(150, at(0));
        let (_, b) = drain(&mut l, 50_000, 10);
        let per_sec = b as f64 / 10.0;
        // 150% of 1 MiB/s, plus the burst spread over 10 s.
        assert!(
            (1.5 * SHARD_BYTES_PER_SEC..=1.6 * SHARD_BYTES_PER_SEC).contains(&per_sec),
            "{per_sec}"
        );
    }

    #[test]
    fn throttling_cuts_the_rate_and_success_earns_it_back() {
        let mut l = ShardLimiter::new(100, at(0));
        l.throttled(at(0));
        assert!((l.factor() - 0.7).abs() < 1e-9);
        // A burst of throttled entries from the same call counts once.
        l.throttled(at(10));
        assert!((l.factor() - 0.7).abs() < 1e-9);
        for i in 0..20 {
            l.throttled(at(300 + i * 300));
        }
        assert_eq!(l.factor(), MIN_FACTOR);
        assert!(!l.try_take(1, at(6_000)), "no burst right after throttling");
        for i in 0..100 {
            l.put(at(7_000 + i));
        }
        assert_eq!(l.factor(), 1.0);
    }

    #[test]
    fn a_record_larger_than_the_burst_is_delayed_not_refused() {
        let mut l = ShardLimiter::new(100, at(0));
        assert!(l.try_take(3 << 20, at(0)), "a full bucket lets it through");
        assert!(!l.try_take(1, at(1)), "and it is paid for afterwards");
        let ready = l.ready_at(1, at(1));
        assert!(ready > at(2_000), "{:?}", ready - at(0));
        assert!(l.try_take(1, ready + Duration::from_millis(1)));
    }
}
