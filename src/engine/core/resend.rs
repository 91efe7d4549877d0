//! Applying a failed record's fate (see `retrier`): failed now, or tried again through
//! aggregation, or, in order, as it was, ahead of anything newer for its shard.

use std::sync::Arc;
use std::time::Instant;

use super::order::reroute_later;
use super::ready::Ready;
use super::retrier::{self, Fate};
use super::stream::{Ctx, Retry, StreamState};
use crate::aggregation::{Entry, encode};
use crate::engine::pending::Pending;
use crate::error::ErrorClass;
use crate::outcome::{AttemptError, PutErrorKind};
use crate::record::UserRecord;

/// Applies the fate (`retrier::fate`) of the user records of a Kinesis record that was not
/// put, whose error was classified once, where the answer was read: failed now, or to be
/// tried again at a time, except those whose RecordTtl ends before it, which fail as
/// expired. Returns the records to try again, in order, and when; `None` when none are left.
fn triage(
    s: &StreamState,
    cx: &mut Ctx<'_>,
    entries: Vec<Pending>,
    now: Instant,
    error: &Arc<AttemptError>,
    class: ErrorClass,
) -> Option<(Vec<Pending>, Instant)> {
    let attempts = entries.first().map_or(1, Pending::attempts_made);
    let fail_if_throttled = cx.config.fail_if_throttled;
    match retrier::fate(
        error,
        class,
        attempts,
        fail_if_throttled,
        now,
        cx.origin,
        cx.rng,
    ) {
        Fate::Fail(kind) => {
            if matches!(kind, PutErrorKind::Rejected { .. }) {
                tracing::warn!(records = entries.len(), attempts, code = %error.code, reason = %error.message, "records rejected by Kinesis, not retried");
            } else {
                tracing::debug!(records = entries.len(), attempts, code = %error.code, "records failed, not retried");
            }
            for pending in entries {
                cx.ledger.fail(s.index, pending, kind.clone());
            }
            None
        }
        Fate::RetryAt(at) => {
            let ttl = cx.config.record_ttl;
            let (gone, keep): (Vec<Pending>, Vec<Pending>) = entries
                .into_iter()
                .partition(|p| retrier::expired(p.arrival(), ttl, at));
            if !gone.is_empty() {
                tracing::warn!(records = gone.len(), attempts, ttl_ms = ttl.as_millis() as u64, last_error = %error.code, "records expired (RecordTtl) before their next attempt");
            }
            if !keep.is_empty() {
                let wait_ms = at.saturating_duration_since(now).as_millis() as u64;
                tracing::debug!(records = keep.len(), attempts, code = %error.code, ?class, wait_ms, "retrying");
            }
            for pending in gone {
                cx.ledger
                    .fail(s.index, pending, retrier::expiry(ttl, error));
            }
            (!keep.is_empty()).then_some((keep, at))
        }
    }
}

/// Retries that go back through aggregation (with whatever else is bound for their shards
/// by then) once their backoff is over.
pub(super) fn retry_or_fail(
    s: &mut StreamState,
    cx: &mut Ctx<'_>,
    entries: Vec<Pending>,
    now: Instant,
    error: &Arc<AttemptError>,
    class: ErrorClass,
) {
    if let Some((records, at)) = triage(s, cx, entries, now, error, class) {
        s.retry_seq += 1;
        let seq = s.retry_seq;
        s.retrying.push(Retry { at, seq, records });
    }
}

/// Per-key ordering: a failed Kinesis record is sent again as it is (its user records keep
/// their order), ahead of anything newer for its shard, which waits meanwhile; if some of
/// its records expired, the rest are packed again without them.
pub(super) fn retry_in_order(
    s: &mut StreamState,
    cx: &mut Ctx<'_>,
    mut ready: Ready,
    now: Instant,
    error: &Arc<AttemptError>,
    class: ErrorClass,
) {
    let before = ready.entries.len();
    let shard = ready.shard;
    let entries = std::mem::take(&mut ready.entries);
    let Some((keep, at)) = triage(s, cx, entries, now, error, class) else {
        // Nothing left to send: the shard is free for what comes next.
        if let Some(shard) = s.shard_mut(shard) {
            shard.busy = false;
        }
        return;
    };
    if s.current(shard).is_none() {
        // Sent under an older map: its keys may belong to other shards now, with newer
        // records of theirs queued there. It is routed again ahead of them (`order.rs`).
        return reroute_later(s, keep, at);
    }
    if keep.len() < before {
        // A subset of an aggregate, in the same order, is smaller than the aggregate.
        let records: Vec<UserRecord> = keep.iter().map(|p| p.record().clone()).collect();
        ready.record = encode(&records).expect("at least one record");
        // Its oldest record may have expired: the TTL it waits for is the oldest kept's (a
        // stale one spun the core at a TTL already past: found by the simulation's soak, seed
        // 32543).
        ready.born = super::ready::born(&keep, now);
    }
    ready.entries = keep;
    // The shard stays busy until the retry is back in the queue.
    if let Some(shard) = s.shard_mut(ready.shard) {
        shard.busy = true;
    }
    s.ordered_retries.push((at, ready));
}
