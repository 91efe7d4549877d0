//! Applying a failed record's fate (see `retrier`): failed now, or tried again through
//! aggregation, or, in order, as it was, ahead of anything newer for its shard.

use std::sync::Arc;

use tokio::time::Instant;

use super::*;

impl<S: Sink> Engine<S> {
    /// Applies the fate (`retrier::fate`) of the user records of a Kinesis record that was not
    /// put, whose error was classified once, where the answer was read: failed now, or to be
    /// tried again at a time, except those whose RecordTtl ends before it, which fail as
    /// expired. Returns the records to try again, in order, and when; `None` when none are left.
    pub(super) fn triage(
        &mut self,
        i: usize,
        entries: Vec<Pending>,
        now: Instant,
        error: &Arc<AttemptError>,
        class: ErrorClass,
    ) -> Option<(Vec<Pending>, Instant)> {
        let attempts = entries.first().map_or(1, Pending::attempts_made);
        let fail_if_throttled = self.config.fail_if_throttled;
        match retrier::fate(
            error,
            class,
            attempts,
            fail_if_throttled,
            now,
            self.origin,
            &mut self.rng,
        ) {
            Fate::Fail(kind) => {
                if matches!(kind, PutErrorKind::Rejected { .. }) {
                    tracing::warn!(records = entries.len(), attempts, code = %error.code, reason = %error.message, "records rejected by Kinesis, not retried");
                } else {
                    tracing::debug!(records = entries.len(), attempts, code = %error.code, "records failed, not retried");
                }
                for pending in entries {
                    let tally = self.metrics.tally(i);
                    fail(pending, kind.clone(), &mut self.epochs, &self.budget, tally);
                }
                None
            }
            Fate::RetryAt(at) => {
                let ttl = self.config.record_ttl;
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
                    fail(
                        pending,
                        retrier::expiry(ttl, error),
                        &mut self.epochs,
                        &self.budget,
                        self.metrics.tally(i),
                    );
                }
                (!keep.is_empty()).then_some((keep, at))
            }
        }
    }

    /// Retries that go back through aggregation (with whatever else is bound for their shards
    /// by then) once their backoff is over.
    pub(super) fn retry_or_fail(
        &mut self,
        i: usize,
        entries: Vec<Pending>,
        now: Instant,
        error: &Arc<AttemptError>,
        class: ErrorClass,
    ) {
        if let Some((records, at)) = self.triage(i, entries, now, error, class) {
            self.retry_seq += 1;
            self.streams[i].retrying.push(Retry {
                at,
                seq: self.retry_seq,
                records,
            });
        }
    }

    /// Per-key ordering: a failed Kinesis record is sent again as it is (its user records keep
    /// their order), ahead of anything newer for its shard, which waits meanwhile; if some of
    /// its records expired, the rest are packed again without them.
    pub(super) fn retry_in_order(
        &mut self,
        i: usize,
        mut ready: Ready,
        now: Instant,
        error: &Arc<AttemptError>,
        class: ErrorClass,
    ) {
        let before = ready.entries.len();
        let shard = ready.shard;
        let entries = std::mem::take(&mut ready.entries);
        let Some((keep, at)) = self.triage(i, entries, now, error, class) else {
            // Nothing left to send: the shard is free for what comes next.
            self.free_shard(i, shard);
            return;
        };
        let s = &mut self.streams[i];
        if s.current(shard).is_none() {
            // Sent under an older map: its keys may belong to other shards now, with newer
            // records of theirs queued there. It is routed again ahead of them (`order.rs`).
            return reroute_later(s, keep, at);
        }
        if keep.len() < before {
            // A subset of an aggregate, in the same order, is smaller than the aggregate.
            let records: Vec<UserRecord> = keep.iter().map(|p| p.record().clone()).collect();
            ready.record = encode(&records).expect("at least one record");
        }
        ready.entries = keep;
        let s = &mut self.streams[i];
        // The shard stays busy until the retry is back in the queue.
        if let Some(shard) = s.shard_mut(ready.shard) {
            shard.busy = true;
        }
        s.ordered_retries.push((at, ready));
    }

    pub(super) fn free_shard(&mut self, i: usize, at: Option<ShardRef>) {
        if let Some(shard) = self.streams[i].shard_mut(at) {
            shard.busy = false;
        }
    }
}
