//! Per-key ordering across a change of shard map: holding a stream, and routing its records
//! again in the order they were taken in.
//!
//! Within one map, a key belongs to one shard, and a shard with a Kinesis record in flight (or
//! waiting to be retried) sends nothing else (`ShardState::busy`): so a key's records are
//! stored in order. A new map breaks both halves: a key's records may be in the old shard's
//! queues and flight and in the new shard's at once, and the busy flags of the old shards say
//! nothing about the new ones. So, with `PerKeyOrdering`:
//! - when a map is installed, nothing not yet sent keeps its place: every record queued,
//!   aggregated, held for an in-order retry or waiting for the map goes to the stream's
//!   `reroute`, and the records in flight are counted (`draining`);
//! - an old-map record that fails, and the records of an aggregate that straddled the shard
//!   that took it (the KCL drops it whole), go to `reroute` too;
//! - while anything is draining, unverified or waiting to be routed again, nothing of the
//!   stream is sent (`StreamState::held`); once nothing is draining or unverified and the
//!   failed records' backoff is over, `reroute` and everything queued are routed again sorted
//!   by the order the engine took them in (`Pending::seq`), so each key's records enter the
//!   queues of the new map oldest first.
//!
//! A resharding is rare; the hold costs one round trip of the calls in flight and a repacking.

use tokio::time::Instant;

use super::*;

impl<S: Sink> Engine<S> {
    /// Per-key ordering: stream `i`'s new map is installed (its shard states already made for
    /// it): everything not yet sent waits to be routed again, and what is in flight drains.
    pub(super) fn hold_for_new_map(&mut self, i: usize, old: Vec<ShardState>, now: Instant) {
        let s = &mut self.streams[i];
        let mut records: Vec<Pending> = Vec::new();
        let mut at = now;
        for (t, r) in s.ordered_retries.drain(..) {
            at = at.max(t);
            records.extend(r.entries);
        }
        for r in s.ready.take_all(s.generation(), s.shards.len()) {
            records.extend(r.entries);
        }
        for mut shard in old {
            if let Some(a) = shard.aggregator.flush() {
                records.extend(a.entries);
            }
        }
        records.extend(s.unmapped.drain(..).map(|(p, _)| p));
        s.aggregators_due = None;
        s.forced = 0;
        s.draining = s.in_flight;
        reroute_later(s, records, at);
    }

    /// Whether stream `i`'s records waiting to be routed again can be now.
    pub(super) fn can_reroute(&self, i: usize, now: Instant) -> bool {
        let s = &self.streams[i];
        !s.reroute.is_empty()
            && s.draining == 0
            && s.unverified.is_empty()
            && s.reroute_at <= now
            && s.map.is_some()
    }

    /// Routes stream `i`'s records waiting to be routed again, with everything queued or
    /// aggregated for it, in the order they were taken in, due now. (In-order retries of the
    /// current map stay: their shards' keys are not among these, see the module docs.)
    pub(super) fn reroute(&mut self, i: usize, now: Instant) {
        let s = &mut self.streams[i];
        let mut records = std::mem::take(&mut s.reroute);
        for r in s.ready.take_all(s.generation(), s.shards.len()) {
            records.extend(r.entries);
        }
        for shard in &mut s.shards {
            if let Some(a) = shard.aggregator.flush() {
                records.extend(a.entries);
            }
        }
        s.aggregators_due = None;
        s.forced = 0;
        records.sort_by_key(Pending::seq);
        tracing::debug!(stream = %s.name, records = records.len(), "per-key ordering: records routed again in the order taken in");
        for pending in records {
            self.route(i, pending, now);
        }
    }
}

/// Adds `records` to those `s` routes again, not before `at`.
pub(super) fn reroute_later(s: &mut StreamState, records: Vec<Pending>, at: Instant) {
    if records.is_empty() {
        return;
    }
    s.reroute_at = if s.reroute.is_empty() {
        at
    } else {
        s.reroute_at.max(at)
    };
    s.reroute.extend(records);
}
