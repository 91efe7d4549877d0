//! Outcomes counted as they come: a task per chunk of records awaits their futures in order and
//! merges its counts (put, failed by kind, retried, latency from the attempts) into the run's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use kinesis_producer::{PutErrorKind, RecordFuture};

#[derive(Default)]
pub(super) struct Settled {
    pub(super) put: u64,
    pub(super) failed: u64,
    pub(super) failures: std::collections::BTreeMap<String, u64>,
    pub(super) retried: u64,
    pub(super) failed_bytes: u64,
    pub(super) latencies_ms: Vec<f64>,
    /// Per record put, its latency less the round trip of the call that put it: the time the
    /// producer added (buffering, waiting for the limiter, earlier attempts and their backoff).
    pub(super) added_ms: Vec<f64>,
    /// The first failure, in full, to show why records failed.
    pub(super) first_error: Option<String>,
    /// When the last record was settled: the end of the run.
    pub(super) last_at: Option<Instant>,
}

/// Waits for a chunk of records' outcomes, in order, and counts them. A task per chunk, not
/// one for all: a record held back by retries holds back only its chunk's count, not every
/// record behind it; and not one per record, whose cost limited the in-memory runs. Latency
/// comes from each record's attempts, from its arrival to the end of its last call, so waiting
/// in order does not change it.
pub(super) async fn chunk_outcomes(
    futures: Vec<RecordFuture>,
    settled: Arc<std::sync::Mutex<Settled>>,
    delivered: Arc<AtomicU64>,
) {
    let mut s = Settled::default();
    for future in futures {
        count_outcome(&mut s, future.await);
        delivered.fetch_add(1, Relaxed);
    }
    s.last_at = Some(Instant::now());
    settled.lock().expect("no settling task panics").merge(s);
}

impl Settled {
    pub(super) fn merge(&mut self, other: Settled) {
        self.put += other.put;
        self.failed += other.failed;
        self.retried += other.retried;
        self.failed_bytes += other.failed_bytes;
        self.latencies_ms.extend(other.latencies_ms);
        self.added_ms.extend(other.added_ms);
        for (kind, n) in other.failures {
            *self.failures.entry(kind).or_default() += n;
        }
        self.last_at = self.last_at.max(other.last_at);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

fn count_outcome(
    s: &mut Settled,
    outcome: Result<kinesis_producer::Receipt, kinesis_producer::PutError>,
) {
    match outcome {
        Ok(receipt) => {
            s.put += 1;
            s.retried += u64::from(receipt.attempts.count() > 1);
            if let Some(a) = receipt.attempts.last() {
                s.latencies_ms
                    .push((a.delay + a.duration).as_secs_f64() * 1000.0);
                s.added_ms.push(a.delay.as_secs_f64() * 1000.0);
            }
        }
        Err(e) => {
            s.failed += 1;
            if s.first_error.is_none() {
                s.first_error = Some(e.to_string());
            }
            s.failed_bytes += e.record.size() as u64;
            let kind = match &e.kind {
                PutErrorKind::InvalidRecord(_) => "invalid record".to_string(),
                PutErrorKind::Expired { .. } => "expired (RecordTtl)".into(),
                PutErrorKind::Rejected { code, .. } => format!("rejected ({code})"),
                PutErrorKind::Throttled { .. } => "throttled (FailIfThrottled)".into(),
                PutErrorKind::BufferFull { .. } => "buffer full".into(),
                PutErrorKind::Closed => "closed".into(),
                PutErrorKind::Stopped => "stopped".into(),
                other => other.to_string(),
            };
            *s.failures.entry(kind).or_default() += 1;
        }
    }
}
