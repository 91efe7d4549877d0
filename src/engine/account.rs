//! Accounting on the engine's side: resolving a record (its future, its room in the budget, its
//! flush epoch, its metrics), and each turn's metrics: what the turn gathered, and the samples.

use std::sync::Arc;

use tokio::time::Instant;

use super::epochs::Epochs;
use super::pending::{Pending, Resolution};
use super::{Engine, clock};
use crate::aggregation::Entry;
use crate::budget::Budget;
use crate::metrics::tally::{Puts, user_record_failed};
use crate::metrics::{Granularity, Level, Name, SAMPLE_INTERVAL, Tally};
use crate::outcome::PutErrorKind;
use crate::sink::Sink;

/// Resolves a record on the engine's side: its future gets the outcome, its room in the budget
/// and its flush epoch are given back, and its metrics go to `tally`, its stream's. (The
/// PutRecords task, resolving a whole answer, gives the budget back once per call instead: see
/// `settle_put`.)
pub(super) fn resolve(
    pending: Pending,
    how: Resolution<'_>,
    epochs: &mut Epochs,
    budget: &Budget,
    tally: &mut Tally,
) {
    let retries = pending.attempts_made();
    match &how {
        _ if !tally.on => {}
        Resolution::Put { put, .. } => {
            let mut puts = Puts::new(put.started);
            puts.add(pending.record().data().len(), pending.last_end(), retries);
            puts.into_group(tally.group(Some(&put.shard_id), None));
        }
        // Failures are counted for the stream: the engine no longer knows their shard.
        Resolution::Failed(kind) => {
            let expired = matches!(kind, PutErrorKind::Expired { .. });
            user_record_failed(tally.group(None, None), retries, expired);
        }
    }
    tally.resolved_arrival(pending.arrival());
    let done = pending.resolve(how);
    budget.release(1, done.charge);
    epochs.resolve(done.epoch);
}

/// Resolves a record that was not put: its future gets the record back with `kind`.
pub(super) fn fail(
    pending: Pending,
    kind: PutErrorKind,
    epochs: &mut Epochs,
    budget: &Budget,
    tally: &mut Tally,
) {
    resolve(pending, Resolution::Failed(kind), epochs, budget, tally);
}

impl<S: Sink> Engine<S> {
    /// The end of a turn: what it gathered goes to the metrics, and the samples are taken when
    /// due.
    pub(super) fn account(&mut self, now: Instant) {
        if now >= self.metrics.next_sample && self.metrics.sample_wanted(self.buffered()) {
            self.sample(now);
        } else {
            self.metrics.commit(now);
        }
    }

    /// When the next sample is due, if one is wanted.
    pub(super) fn sample_at(&self) -> Option<Instant> {
        self.metrics
            .sample_wanted(self.buffered())
            .then_some(self.metrics.next_sample)
    }

    /// The last turn: the final figures, exported.
    pub(super) fn account_last(&mut self) {
        self.sample(clock());
        self.metrics.close();
    }

    fn buffered(&self) -> bool {
        self.budget.used().0 > 0
    }

    /// Samples the quantities: what is buffered, and per stream and shard what waits to be
    /// sent and the rate each shard's limiter allows.
    fn sample(&mut self, now: Instant) {
        let (records, bytes) = self.budget.used();
        let mut samples = vec![
            (Name::UserRecordsBuffered, None, None, records as f64),
            (Name::BytesBuffered, None, None, bytes as f64),
        ];
        let detailed = self.config.metrics_level >= Level::Detailed;
        let per_shard = detailed && self.config.metrics_granularity >= Granularity::Shard;
        for (i, s) in self.streams.iter().enumerate().filter(|_| detailed) {
            let (total, mut waiting) = s.ready.waiting();
            // Lanes are for the current map's shards (the same count, but between a map's
            // arrival and its lanes).
            waiting.resize(s.shards.len(), 0);
            samples.push((Name::UserRecordsWaitingToSend, Some(i), None, total as f64));
            if !per_shard {
                continue;
            }
            for (shard, waiting) in s.shards.iter().zip(waiting) {
                let id = Some(Arc::clone(&shard.id));
                let (per_sec, bytes_per_sec) = shard.limiter.rates();
                samples.extend([
                    (
                        Name::UserRecordsWaitingToSend,
                        Some(i),
                        id.clone(),
                        waiting as f64,
                    ),
                    (Name::LimiterRecordsPerSecond, Some(i), id.clone(), per_sec),
                    (Name::LimiterBytesPerSecond, Some(i), id, bytes_per_sec),
                ]);
            }
        }
        self.metrics.record_samples(&samples, records > 0, now);
        debug_assert!(self.metrics.next_sample == now + SAMPLE_INTERVAL);
    }
}
