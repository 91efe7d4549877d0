//! Deciding a failed record's fate: fail it now, or try it again, and when.
//!
//! Pure: the error's class, the attempts made, the time and a random source are passed in (the
//! engine owns the one random generator, so a test can seed it).

use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use crate::error::ErrorClass;
use crate::outcome::{AttemptError, PutErrorKind};

/// What becomes of the user records of a Kinesis record that was not put.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Fate {
    /// Fail them all now, for this reason: an error that cannot heal, or throttling while
    /// `FailIfThrottled` is set.
    Fail(PutErrorKind),
    /// Try them again at this time; those whose RecordTtl ends before then expire instead
    /// (see [`expired`]).
    RetryAt(Instant),
}

/// The fate of records that failed with `error` (of class `class`) after `attempts` attempts,
/// at `now`: retry times fall on the grid that starts at `origin` (see [`RETRY_GRID`]).
pub(super) fn fate(
    error: &AttemptError,
    class: ErrorClass,
    attempts: usize,
    fail_if_throttled: bool,
    now: Instant,
    origin: Instant,
    rng: &mut fastrand::Rng,
) -> Fate {
    match class {
        ErrorClass::NonRetryable if error.code.starts_with("Credentials") => {
            Fate::Fail(PutErrorKind::NoCredentials {
                code: error.code.clone(),
                message: error.message.clone(),
            })
        }
        ErrorClass::NonRetryable => Fate::Fail(PutErrorKind::Rejected {
            code: error.code.clone(),
            message: error.message.clone(),
        }),
        ErrorClass::Throttled if fail_if_throttled => Fate::Fail(PutErrorKind::Throttled {
            code: error.code.clone(),
            message: error.message.clone(),
        }),
        _ => Fate::RetryAt(on_grid(now + backoff(attempts, class, rng), origin)),
    }
}

/// Whether a record that arrived at `arrival` is past its `ttl` at `at`: its next attempt would
/// start too late.
pub(super) fn expired(arrival: Instant, ttl: Duration, at: Instant) -> bool {
    at > arrival + ttl
}

/// Why a record expired: not put within `ttl`, the last attempt having failed with `last`.
pub(super) fn expiry(ttl: Duration, last: &Arc<AttemptError>) -> PutErrorKind {
    PutErrorKind::Expired {
        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        last_error: Arc::clone(last),
    }
}

/// First retry delay; doubled per attempt up to [`MAX_BACKOFF`].
pub(super) const BASE_BACKOFF: Duration = Duration::from_millis(100);
/// At most a second between attempts: retries go back through the rate limiter, which paces
/// a throttled shard, so a longer wait would only spend the record's TTL. With the default
/// RecordTtl of 30 s a record gets about 30 attempts, enough for a stream where most attempts
/// fail (38% success per attempt leaves about one record in a million failed).
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The wait before the next attempt after `attempts` failed ones: exponential from
/// [`BASE_BACKOFF`], capped at [`MAX_BACKOFF`], with "equal jitter" (half fixed, half random) so
/// that records failed together do not come back together, yet never retry at once.
///
/// A throttled record waits [`BASE_BACKOFF`] (jittered) whatever its attempts: it goes back
/// through its shard's rate limiter, which is what paces a throttled shard; growing waits only
/// left the shard idle while the last records of a backlog sat out their backoff.
pub(super) fn backoff(attempts: usize, class: ErrorClass, rng: &mut fastrand::Rng) -> Duration {
    if class == ErrorClass::Throttled {
        let half = BASE_BACKOFF / 2;
        return half + half.mul_f64(rng.f64());
    }
    let exp = BASE_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let half = exp / 2;
    half + half.mul_f64(rng.f64())
}

/// Retry times are rounded up to this grid, so that records failed in different calls but due
/// within the same few milliseconds go back in one call: with per-record jitter, a throttled
/// stream without aggregation otherwise made one PutRecords call of a few records per retry
/// time (found by `kpl bench`: 4,600 calls for 20,000 records).
pub(super) const RETRY_GRID: Duration = Duration::from_millis(10);

/// `at` rounded up to the next multiple of [`RETRY_GRID`] after `origin`.
pub(super) fn on_grid(at: Instant, origin: Instant) -> Instant {
    let grid = RETRY_GRID.as_nanos();
    let since = at.saturating_duration_since(origin).as_nanos();
    let rounded = since.div_ceil(grid) * grid;
    origin + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test picks its own instants from the clock
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn error(code: &str) -> AttemptError {
        AttemptError::new(code, "a message")
    }

    #[test]
    fn errors_that_cannot_heal_fail_at_once_with_the_services_words() {
        let t0 = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let e = error("ResourceNotFoundException");
        let fate = fate(&e, ErrorClass::NonRetryable, 1, false, t0, t0, &mut rng);
        assert_eq!(
            fate,
            Fate::Fail(PutErrorKind::Rejected {
                code: "ResourceNotFoundException".into(),
                message: "a message".into()
            })
        );
    }

    #[test]
    fn throttling_fails_at_once_only_when_asked() {
        let t0 = Instant::now();
        let mut rng = fastrand::Rng::with_seed(2);
        let e = error("ProvisionedThroughputExceededException");
        let asked = fate(&e, ErrorClass::Throttled, 1, true, t0, t0, &mut rng);
        assert!(matches!(asked, Fate::Fail(PutErrorKind::Throttled { .. })));
        let Fate::RetryAt(at) = fate(&e, ErrorClass::Throttled, 9, false, t0, t0, &mut rng) else {
            panic!("throttling is retried");
        };
        // 50-100 ms whatever the attempts, on the 10 ms grid.
        assert!(at >= t0 + ms(50) && at <= t0 + ms(100), "{:?}", at - t0);
        assert_eq!((at - t0).as_millis() % 10, 0);
    }

    #[test]
    fn transient_errors_back_off_exponentially_up_to_a_second() {
        let t0 = Instant::now();
        let mut rng = fastrand::Rng::with_seed(3);
        let e = error("InternalFailure");
        for (attempts, (lo, hi)) in [
            (1, (50, 100)),
            (2, (100, 200)),
            (3, (200, 400)),
            (9, (500, 1000)),
        ] {
            for _ in 0..50 {
                let Fate::RetryAt(at) =
                    fate(&e, ErrorClass::Transient, attempts, false, t0, t0, &mut rng)
                else {
                    panic!("transient errors are retried");
                };
                let wait = at - t0;
                assert!(wait >= ms(lo) && wait <= ms(hi), "{attempts}: {wait:?}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let t0 = Instant::now();
        let e = error("InternalFailure");
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (1..10)
                .map(|a| fate(&e, ErrorClass::Transient, a, false, t0, t0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
    }

    #[test]
    fn a_record_expires_when_its_next_attempt_would_start_after_its_ttl() {
        let t0 = Instant::now();
        assert!(!expired(t0, ms(1000), t0 + ms(1000)));
        assert!(expired(t0, ms(1000), t0 + ms(1001)));
        let last = Arc::new(error("InternalFailure"));
        assert!(matches!(
            expiry(ms(1500), &last),
            PutErrorKind::Expired { ttl_ms: 1500, .. }
        ));
    }
}
