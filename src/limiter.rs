//! Per-shard write limits: token buckets for records/s and bytes/s, adaptive to throttling.
//!
//! Pure: no I/O, time passed in. Kinesis allows each shard 1000 records/s and 1 MiB/s
//! ([`SHARD_RECORDS_PER_SEC`], [`SHARD_BYTES_PER_SEC`]); the producer aims at `RateLimit` percent
//! of that (KPL default 150: Kinesis tolerates short bursts over the rate, and aiming a little
//! high keeps a shard busy).
//!
//! The limiter learns from what each shard does with what it is sent, summed over windows of
//! [`WINDOW`] (one PutRecords answer is noise), the share throttled averaged over about a second
//! (`SMOOTHING`: with aggregation a shard sees a few answers a second, of a few entries each):
//! - **decrease in proportion to the share throttled**: with a share `p` of the entries (or
//!   bytes, whichever is larger) throttled, each window multiplies the rate by `1 - DECREASE * p`;
//! - **increase in proportion to what the shard accepted**: by `INCREASE` times the rate the
//!   shard took in the window (bytes and records, whichever is the larger share of the
//!   allowance), plus a small constant (`PROBE`) while the window used its allowance, so
//!   aggregated traffic (few large records) recovers as fast as unaggregated traffic, and
//!   producers sharing a stream converge on equal shares (additive increase, multiplicative
//!   decrease).
//!
//! Throttling the producer causes grows with its rate; throttling from elsewhere (other
//! producers, other applications, a fault) does not. While a shard throttles, the rate stays at
//! or below 110% of its published limit (`THROTTLED_CEILING`). At that rate a window gains
//! `(INCREASE + PROBE) * (1 - p)` and loses `DECREASE * p`, so throttling of up to about 44% of
//! what is sent, arriving whatever the rate, leaves the rate where it is; beyond that, or when
//! the throttling follows the rate, it comes down until the two balance (a fixed cut per
//! throttle, against a small gain per record put, held a stream with 30% random throttling at
//! the 10% floor). Producers sharing an overloaded shard settle at equal rates with about 58%
//! of entries throttled: every entry retried goes back through this limiter, and the shard
//! stays busy.

use std::time::{Duration, Instant};

/// Kinesis's write limit per shard, in records (PutRecords entries) per second.
pub const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
/// Kinesis's write limit per shard, in bytes per second (1 MiB).
pub const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// The lowest share of its configured rate a throttled shard is cut to.
const MIN_FACTOR: f64 = 0.1;
/// A window with a share `p` throttled multiplies the rate by `1 - DECREASE * p`.
const DECREASE: f64 = 0.5;
/// A window earns back this share of the rate the shard accepted in it.
const INCREASE: f64 = 0.2;
/// And this much of the configured rate times the share accepted, when the window used its
/// allowance: the additive part, which makes producers sharing a shard converge on equal
/// shares (a gain only in proportion to each one's rate would keep whatever ratio chance gave
/// them).
const PROBE: f64 = 0.2;
/// While a shard throttles, the rate never stays above this multiple of the shard's published
/// limit (1000 records/s, 1 MiB/s), whatever `RateLimit` allows: the limit is what the shard
/// takes from every producer together, so sending faster only turns into throttled entries and
/// retries. `RateLimit` above 100 is for bursts while the shard is not throttling.
const THROTTLED_CEILING: f64 = 1.1;
/// The share throttled is judged over about this long (an exponentially weighted average): with
/// aggregation a shard sees a few answers a second, each of a few entries, and one answer fully
/// throttled by chance must not halve the rate.
const SMOOTHING: Duration = Duration::from_secs(1);
/// Feedback is summed over this long before the rate changes.
pub const WINDOW: Duration = Duration::from_millis(100);
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

/// What one PutRecords answer said about one shard: entries and bytes accepted and throttled.
/// (Entries that failed otherwise, a 500 or a broken connection, say nothing about its rate.)
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Feedback {
    /// Kinesis records the shard accepted.
    pub accepted_records: u64,
    /// Their bytes (data plus partition key).
    pub accepted_bytes: u64,
    /// Kinesis records the shard throttled.
    pub throttled_records: u64,
    /// Their bytes.
    pub throttled_bytes: u64,
}

impl Feedback {
    /// Counts one Kinesis record of `bytes` bytes that the shard accepted or throttled.
    pub fn count(&mut self, accepted: bool, bytes: usize) {
        if accepted {
            self.accepted_records += 1;
            self.accepted_bytes += bytes as u64;
        } else {
            self.throttled_records += 1;
            self.throttled_bytes += bytes as u64;
        }
    }

    fn add(&mut self, other: Feedback) {
        self.accepted_records += other.accepted_records;
        self.accepted_bytes += other.accepted_bytes;
        self.throttled_records += other.throttled_records;
        self.throttled_bytes += other.throttled_bytes;
    }
}

/// The limiter of one shard.
#[derive(Debug, Clone)]
pub struct ShardLimiter {
    records: Bucket,
    bytes: Bucket,
    factor: f64,
    last: Instant,
    /// Feedback of the window under way, and when it started.
    /// The share of the shard's keys this limiter's engine core owns (1 but for a shard
    /// written by several cores): where it starts, and its floor is that share of the usual.
    part: f64,
    window: Feedback,
    window_start: Instant,
    /// Accepted and throttled (records, bytes), averaged over about [`SMOOTHING`].
    smoothed: [f64; 4],
}

impl ShardLimiter {
    /// A limiter at `rate_limit_percent` of the shard's limits, with a full burst available.
    #[cfg(test)]
    pub fn new(rate_limit_percent: u32, now: Instant) -> Self {
        ShardLimiter::with_share(rate_limit_percent, 1.0, now)
    }

    /// A limiter for a shard written by other engine cores too (`engine::core::part`): it
    /// starts at `part` (in `0..=1`) of `rate_limit_percent` of the shard's limits, the share of
    /// the shard's keys its core owns, and climbs from there like any limiter, up to the whole
    /// rate while the shard takes what it is sent: a hot key on one side of the cut gets the
    /// whole shard, and cores that both fill it settle at their shares as producers sharing a
    /// stream do.
    pub(crate) fn with_share(rate_limit_percent: u32, part: f64, now: Instant) -> Self {
        let share = f64::from(rate_limit_percent) / 100.0;
        let burst = BURST.as_secs_f64() * part;
        ShardLimiter {
            part,
            records: Bucket {
                tokens: SHARD_RECORDS_PER_SEC * share * burst,
                rate: SHARD_RECORDS_PER_SEC * share,
            },
            bytes: Bucket {
                tokens: SHARD_BYTES_PER_SEC * share * burst,
                rate: SHARD_BYTES_PER_SEC * share,
            },
            factor: part,
            last: now,
            window: Feedback::default(),
            window_start: now,
            smoothed: [0.0; 4],
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

    /// What a PutRecords answer said about this shard. Once a window of feedback is complete,
    /// the rate moves: down in proportion to the share throttled, up in proportion to what the
    /// shard accepted.
    pub fn observe(&mut self, feedback: Feedback, now: Instant) {
        self.refill(now);
        self.window.add(feedback);
        let elapsed = now.saturating_duration_since(self.window_start);
        // Nothing sent, nothing learnt: the window stays open until feedback comes (a shard
        // sent a record every half second is judged over that half second).
        if elapsed < WINDOW || self.window == Feedback::default() {
            return;
        }
        let w = std::mem::take(&mut self.window);
        self.window_start = now;
        let secs = elapsed.as_secs_f64();
        // The share of the full configured rate the shard accepted in the window.
        let accepted = (w.accepted_records as f64 / (self.records.rate * secs))
            .max(w.accepted_bytes as f64 / (self.bytes.rate * secs));
        // Whether what was sent used the allowance in force (a producer with little to send
        // earns nothing: its rate was not what the shard was tested at).
        let sent = ((w.accepted_records + w.throttled_records) as f64 / (self.records.rate * secs))
            .max((w.accepted_bytes + w.throttled_bytes) as f64 / (self.bytes.rate * secs));
        let used = sent >= 0.5 * self.factor;
        // The share throttled, over about the last SMOOTHING.
        let decay = (-secs / SMOOTHING.as_secs_f64()).exp();
        let now_window = [
            w.accepted_records as f64,
            w.accepted_bytes as f64,
            w.throttled_records as f64,
            w.throttled_bytes as f64,
        ];
        for (avg, x) in self.smoothed.iter_mut().zip(now_window) {
            *avg = *avg * decay + x;
        }
        let p = self.throttled_share();
        // The constants are per WINDOW: a longer window (sparse answers) counts as that many.
        let windows = (secs / WINDOW.as_secs_f64()).min(10.0);
        let before = self.factor;
        let mut factor = before * (1.0 - DECREASE * p).powf(windows);
        factor += INCREASE * accepted.min(before) * windows;
        if used {
            factor += PROBE * (1.0 - p) * windows;
        }
        if p > 0.0 {
            let ceiling = THROTTLED_CEILING * SHARD_RECORDS_PER_SEC / self.records.rate;
            factor = factor.min(ceiling);
        }
        self.factor = factor.clamp(MIN_FACTOR * self.part, 1.0);
        if self.factor < before {
            // What was saved up at the old rate must not burst out now.
            let keep = self.factor / before;
            self.records.tokens = self.records.tokens.min(self.records.tokens * keep);
            self.bytes.tokens = self.bytes.tokens.min(self.bytes.tokens * keep);
        }
    }

    /// The rates it lets through now: Kinesis records per second and bytes per second.
    pub fn rates(&self) -> (f64, f64) {
        (
            self.records.rate * self.factor,
            self.bytes.rate * self.factor,
        )
    }

    /// The share of the configured rate in force, in `0.1..=1`.
    #[cfg(test)]
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The share of what was sent that the shard throttled (entries or bytes, whichever is
    /// larger), averaged over about the last second.
    pub fn throttled_share(&self) -> f64 {
        let [ar, ab, tr, tb] = self.smoothed;
        let share = |t: f64, a: f64| if t + a > 0.0 { t / (t + a) } else { 0.0 };
        share(tr, ar).max(share(tb, ab))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test picks its own instants from the clock
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

    /// Sends as fast as `l` allows for `ms` milliseconds from `from`, every entry accepted,
    /// telling `l` so every 10 ms; returns how many went.
    fn run_accepted(l: &mut ShardLimiter, from: u64, ms: u64) -> u64 {
        let mut sent = 0;
        for tick in (from..from + ms).step_by(10) {
            let mut n = 0;
            while l.try_take(100, at(tick)) {
                n += 1;
            }
            sent += n;
            let fb = Feedback {
                accepted_records: n,
                accepted_bytes: n * 100,
                ..Feedback::default()
            };
            l.observe(fb, at(tick));
        }
        sent
    }

    #[test]
    fn a_shard_shared_by_cores_starts_at_its_part_and_climbs_to_the_whole_rate() {
        // Half of a shard's keys: half the rate at first.
        let mut l = ShardLimiter::with_share(100, 0.5, at(0));
        assert_eq!(l.factor(), 0.5);
        assert_eq!(l.rates().0, 500.0);
        // A hot key on this side of the cut, never throttled: the whole shard within a second.
        run_accepted(&mut l, 0, 1_000);
        assert_eq!(l.factor(), 1.0, "a core alone on its shard gets all of it");
        let sent = run_accepted(&mut l, 1_000, 2_000);
        assert!((1_900..=2_100).contains(&sent), "{sent} in 2 s at 1000/s");
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

    /// A shard simulated in steps of 10 ms, with `n` backlogged producers sending records of
    /// `size` bytes as fast as their limiters let them. The shard accepts `capacity` records per
    /// second in all (beyond that it throttles, each producer in proportion to what it sent),
    /// and throttles a further share `random` of every entry whatever the rate. Returns each
    /// producer's accepted records over the last half of `secs`, and the limiters.
    fn simulate(
        n: usize,
        size: usize,
        capacity: f64,
        random: f64,
        secs: u64,
        seed: u64,
    ) -> (Vec<u64>, Vec<ShardLimiter>) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut limiters: Vec<_> = (0..n).map(|_| ShardLimiter::new(150, at(0))).collect();
        let mut accepted = vec![0u64; n];
        let steps = secs * 100;
        for step in 0..steps {
            let now = at(step * 10);
            let sent: Vec<u64> = limiters
                .iter_mut()
                .map(|l| {
                    let mut k = 0;
                    while k < 100 && l.try_take(size, now) {
                        k += 1;
                    }
                    k
                })
                .collect();
            let total: u64 = sent.iter().sum();
            let room = capacity / 100.0;
            let keep = if total as f64 > room {
                room / total as f64
            } else {
                1.0
            };
            for (i, l) in limiters.iter_mut().enumerate() {
                let mut f = Feedback::default();
                for _ in 0..sent[i] {
                    f.count(rng.f64() < keep && rng.f64() >= random, size);
                }
                if step >= steps / 2 {
                    accepted[i] += f.accepted_records;
                }
                // The answer comes back 20 ms later.
                l.observe(f, now + Duration::from_millis(20));
            }
        }
        (accepted, limiters)
    }

    #[test]
    fn throttling_that_does_not_follow_our_rate_does_not_collapse_it() {
        // 30% of entries throttled at random, a shard that would take far more: the rate
        // stays near the configured one instead of sinking to the floor.
        // While throttled, at most 110% of the shard's limit: a factor of 0.733 at 150%.
        let ceiling = 1.1 / 1.5;
        let (accepted, limiters) = simulate(1, 300, 1e9, 0.3, 20, 1);
        assert!(
            limiters[0].factor() > 0.9 * ceiling,
            "{}",
            limiters[0].factor()
        );
        // 1,100 records/s, 70% accepted, over 10 s: about 7,700.
        assert!(accepted[0] > 7_000, "{accepted:?}");
        // Even 44% (30% of entries and 20% of whole calls) does not sink it.
        let (_, limiters) = simulate(1, 300, 1e9, 0.44, 20, 2);
        assert!(
            limiters[0].factor() > 0.8 * ceiling,
            "{}",
            limiters[0].factor()
        );
    }

    #[test]
    fn sparse_answers_with_random_throttling_do_not_collapse_the_rate() {
        // Aggregated traffic: one answer every 200 ms carrying 6 records of 50 KB (about the
        // allowance at 150%); a fifth of the calls throttled whole, 30% of the other entries.
        let mut rng = fastrand::Rng::with_seed(9);
        let mut l = ShardLimiter::new(150, at(0));
        let (mut min, mut sum) = (1.0f64, 0.0);
        for i in 0..300u64 {
            let now = at(i * 200);
            let mut f = Feedback::default();
            let whole = rng.f64() < 0.2;
            let mut k = 0;
            while k < 6 && l.try_take(50_000, now) {
                k += 1;
                f.count(!(whole || rng.f64() < 0.3), 50_000);
            }
            l.observe(f, now + Duration::from_millis(30));
            if i >= 50 {
                min = min.min(l.factor());
                sum += l.factor();
            }
        }
        let mean = sum / 250.0;
        eprintln!("sparse answers: factor mean {mean:.2}, min {min:.2}");
        // Near the ceiling (0.733 at 150%) on average, and never at the floor.
        assert!(mean > 0.5, "the rate averaged {mean}");
        assert!(min > 0.15, "the rate sank to {min}");
    }

    #[test]
    fn a_producer_overloading_a_shard_alone_keeps_it_busy() {
        let (accepted, _) = simulate(1, 100, 1000.0, 0.0, 20, 3);
        // The shard's 1000 records/s over 10 s, nearly all of it used.
        assert!(accepted[0] >= 9_500, "{accepted:?}");
    }

    #[test]
    fn producers_sharing_a_shard_get_fair_shares_and_keep_it_busy() {
        for seed in 4..8 {
            producers_share_fairly(seed);
        }
    }

    fn producers_share_fairly(seed: u64) {
        let (accepted, limiters) = simulate(4, 100, 1000.0, 0.0, 60, seed);
        let total: u64 = accepted.iter().sum();
        // 30 s of a 1000 records/s shard.
        assert!(total >= 27_000, "{accepted:?}");
        let fair = total as f64 / 4.0;
        for a in &accepted {
            assert!(
                (*a as f64 - fair).abs() <= 0.25 * fair,
                "{accepted:?}, factors {:?}",
                limiters
                    .iter()
                    .map(ShardLimiter::factor)
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn aggregated_traffic_recovers_as_fast_as_unaggregated() {
        // Both cut to the floor, then a shard that accepts everything: few large records and
        // many small ones earn the rate back in the same time (in bytes or records, whichever
        // is the larger share of the allowance).
        let recover = |size: usize| {
            let mut l = ShardLimiter::new(100, at(0));
            // Whatever the limiter lets through, throttled: for 5 s, then all accepted.
            let step = |l: &mut ShardLimiter, now: Instant, accept: bool| {
                let mut f = Feedback::default();
                while l.try_take(size, now) {
                    f.count(accept, size);
                }
                l.observe(f, now);
            };
            for i in 0..500 {
                step(&mut l, at(i * 10), false);
            }
            assert_eq!(l.factor(), MIN_FACTOR);
            let mut t = 0u32;
            while l.factor() < 0.99 && t < 1_000 {
                step(&mut l, at(5_000 + u64::from(t) * 10), true);
                t += 1;
            }
            t
        };
        let (large, small) = (recover(50_000), recover(100));
        assert!(
            large < 300 && small < 300,
            "{large} and {small} steps of 10 ms"
        );
        assert!(
            large.abs_diff(small) * 2 <= large.max(small),
            "{large} vs {small}"
        );
    }

    #[test]
    fn a_window_of_feedback_moves_the_rate_once() {
        let mut l = ShardLimiter::new(100, at(0));
        let throttled = Feedback {
            throttled_records: 5,
            throttled_bytes: 500,
            accepted_records: 5,
            accepted_bytes: 500,
        };
        // Within the first window: nothing changes yet.
        l.observe(throttled, at(10));
        l.observe(throttled, at(50));
        assert_eq!(l.factor(), 1.0);
        // The window ends: half of what was sent throttled, 30% of the allowance sent (not
        // enough to count as using it): the rate is multiplied by 1 - 0.5 * 0.5, plus 0.2 x
        // the 15% accepted.
        l.observe(throttled, at(100));
        let accepted = 15.0 / (1000.0 * 0.1);
        let expected = 1.0 - DECREASE * 0.5 + INCREASE * accepted;
        assert!((l.factor() - expected).abs() < 1e-9, "{}", l.factor());
        // Nothing sent, nothing learnt.
        l.observe(Feedback::default(), at(300));
        assert!((l.factor() - expected).abs() < 1e-9);
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
