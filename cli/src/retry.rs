//! Retrying a read call that Kinesis throttled or that failed on the way, as the KCL does.
//!
//! Reads are limited to 5 GetRecords calls and 2 MB a second per shard, shared with every other
//! consumer of the stream, and ListShards and GetShardIterator have their own account limits: a
//! throttled call is normal, not a reason to stop. The KCL's polling consumer backs off and
//! calls again on `ProvisionedThroughputExceededException` and on transient errors
//! (`PrefetchRecordsPublisher` in amazon-kinesis-client); here, with exponential backoff and
//! full jitter. Errors that retrying cannot heal (no such stream, access denied) end at once.

use std::future::Future;
use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use kinesis_producer::error::{ErrorClass, classify};
use kinesis_producer::sink::SinkError;
use kinesis_producer::sink::aws::AwsSink;

/// The first wait after a failure; each further one doubles, up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Attempts of one call before giving up: about a minute and a half of waits at the cap.
pub const MAX_ATTEMPTS: u32 = 20;
/// Attempts of a command's first call: an endpoint that has never answered is more likely
/// wrong (a typo, nothing listening) than briefly away, and the user should hear it soon.
pub const FIRST_CONTACT_ATTEMPTS: u32 = 3;

/// The wait before attempt `attempt` (2, 3, ...): a random time up to `FIRST_WAIT * 2^(n-2)`,
/// capped at `MAX_WAIT` (full jitter, so that readers throttled together do not retry
/// together).
pub fn wait(attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let ceiling = FIRST_WAIT
        .saturating_mul(1 << attempt.saturating_sub(2).min(16))
        .min(MAX_WAIT);
    ceiling.mul_f64(rng.f64())
}

/// Calls `call` until it succeeds, fails with an error retrying cannot heal (or one in
/// `final_codes`, which the caller handles), or has failed `max_attempts` times; throttling
/// and transient failures are retried after [`wait`]. The error is one sentence (see
/// [`AwsSink::error`]), with how many attempts were made when it gave up.
pub async fn retrying<T, E, F, Fut>(
    sink: &AwsSink,
    operation: &'static str,
    final_codes: &[&str],
    max_attempts: u32,
    rng: &mut fastrand::Rng,
    mut call: F,
) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut attempt = 1;
    loop {
        let err = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => sink.error(operation, e),
        };
        if final_codes.contains(&err.code.as_str())
            || classify(&err.code) == ErrorClass::NonRetryable
        {
            return Err(err);
        }
        if attempt >= max_attempts {
            let message = format!("{} (gave up after {attempt} attempts)", err.message);
            return Err(SinkError { message, ..err });
        }
        attempt += 1;
        let pause = wait(attempt, rng);
        tracing::debug!(operation, code = %err.code, attempt, wait_ms = pause.as_millis() as u64, "retrying a read call");
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_jitter() {
        let mut rng = fastrand::Rng::with_seed(1);
        for attempt in 2..40 {
            let w = wait(attempt, &mut rng);
            let ceiling = (FIRST_WAIT * (1 << (attempt - 2).min(16))).min(MAX_WAIT);
            assert!(w <= ceiling, "{attempt}: {w:?}");
        }
        let late: Vec<Duration> = (0..100).map(|_| wait(30, &mut rng)).collect();
        assert!(
            late.iter().any(|w| *w > MAX_WAIT / 2),
            "reaches near the cap"
        );
        assert!(late.iter().all(|w| *w <= MAX_WAIT));
    }
}
