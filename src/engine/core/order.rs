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

use std::time::Instant;

use super::ledger::Ledger;
use super::stream::{ShardState, StreamState, route};
use crate::engine::pending::Pending;

/// Per-key ordering: stream `s`'s new map is installed (its shard states already made for it):
/// everything not yet sent waits to be routed again, and what is in flight drains.
pub(super) fn hold_for_new_map(s: &mut StreamState, mut old: Vec<ShardState>, now: Instant) {
    let (generation, lanes) = (s.generation(), s.shards.len());
    let (records, retry_at) = take_unsent(s, &mut old, generation, lanes);
    s.draining = s.in_flight;
    let at = retry_at.map_or(now, |t| t.max(now));
    reroute_later(s, records.into_iter().map(|(p, _)| p).collect(), at);
}

/// Routes stream `s`'s records waiting to be routed again, with everything queued or
/// aggregated for it, in the order they were taken in, due now. (In-order retries of the
/// current map stay: their shards' keys are not among these, see the module docs.)
pub(super) fn reroute(s: &mut StreamState, ledger: &mut Ledger, now: Instant) {
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
        route(s, ledger, pending, now);
    }
}

/// Takes every user record of `s` not yet sent, with its deadline, in the order taken in: held
/// for in-order retries, queued (the queue starts again with `lanes` lanes for the map of
/// `generation`), aggregating in `shards`, waiting for a map. Also gives the latest time an
/// in-order retry among them was to wait until.
pub(super) fn take_unsent(
    s: &mut StreamState,
    shards: &mut [ShardState],
    generation: u64,
    lanes: usize,
) -> (Vec<(Pending, Instant)>, Option<Instant>) {
    let mut records: Vec<(Pending, Instant)> = Vec::new();
    let mut retry_at: Option<Instant> = None;
    for (t, r) in s.ordered_retries.drain(..) {
        retry_at = Some(retry_at.map_or(t, |a| a.max(t)));
        records.extend(r.entries.into_iter().map(|p| (p, r.deadline)));
    }
    for r in s.ready.take_all(generation, lanes) {
        records.extend(r.entries.into_iter().map(|p| (p, r.deadline)));
    }
    for shard in shards {
        if let Some(a) = shard.aggregator.flush() {
            let deadline = a.deadline;
            records.extend(a.entries.into_iter().map(|p| (p, deadline)));
        }
    }
    records.extend(s.unmapped.drain(..));
    records.sort_by_key(|(p, _)| p.seq());
    s.aggregators_due = None;
    s.forced = 0;
    (records, retry_at)
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
