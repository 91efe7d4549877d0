//! The next wake-up: the earliest moment something of a stream becomes due, a pure function of
//! the streams, what the engine can do now, and the time. The loop sleeps until it (or until a
//! message, an answer or a listing arrives first).

use std::time::Duration;

use std::time::Instant;

use super::stream::StreamState;
use crate::engine::pending::Pending;

/// What, besides the streams, decides when the engine must wake.
#[derive(Debug, Clone, Copy)]
pub(super) struct WakeInputs {
    /// A call can start now (fewer than MaxConnections in flight): only then do the deadlines of
    /// ready records and the limiter's times matter; otherwise a call finishing wakes the loop.
    pub(super) can_send: bool,
    /// Shutting down: periodic refreshes no longer matter, only those a stream needs.
    pub(super) closing: bool,
    /// How long a record waits for its stream's first map.
    pub(super) unmapped_wait: Duration,
    /// `RecordTtl`: misrouted aggregates waiting for a listing expire with it.
    pub(super) record_ttl: Duration,
}

/// The earliest moment anything of `streams` becomes due, if anything can.
pub(super) fn next_wake(streams: &[StreamState], w: WakeInputs, now: Instant) -> Option<Instant> {
    streams.iter().filter_map(|s| stream_wake(s, w, now)).min()
}

fn stream_wake(s: &StreamState, w: WakeInputs, now: Instant) -> Option<Instant> {
    let mut wake: Option<Instant> = None;
    let mut at = |t: Instant| wake = Some(wake.map_or(t, |v| v.min(t)));
    if !s.refreshing && (!w.closing || s.needs_map()) {
        at(s.next_refresh);
    }
    if let Some((p, _)) = s.unmapped.front() {
        at(p.arrival() + w.unmapped_wait);
    }
    if let Some(d) = s.aggregators_due {
        at(d);
    }
    if let Some(r) = s.retrying.peek() {
        at(r.at);
    }
    for (t, _) in &s.ordered_retries {
        at(*t);
    }
    for m in &s.unverified {
        at(super::mapping::unverified_expiry(m, w.record_ttl));
    }
    if let Some(t) = s.reroute_due() {
        at(t);
    }
    // Records waiting to be routed again, and queued records, whose RecordTtl runs out. Even
    // a time already past: such a record joined after this turn's check (a retry whose wait
    // ended the instant its TTL did, left behind a stale shard, had no wake-up and waited for
    // the next listing: found by the simulation's soak, seed 8402965), and the next turn
    // expires it (`stream::expire_reroute`, `stream::expire_queued`), so this cannot spin.
    if let Some(born) = Pending::oldest_arrival(&s.reroute) {
        at(born + w.record_ttl);
    }
    if let Some(born) = s.ready.oldest_born() {
        at(born + w.record_ttl);
    }
    if w.can_send {
        // While a shard is over its rate nothing is sent before `limited_until` (see
        // `should_send`), so the deadlines of the queue need no walk: with hundreds of
        // thousands of records queued behind throttled shards, that walk at every wake-up was
        // most of the engine's CPU (found by `kpl bench`).
        let limited = s.limited_until.is_some_and(|t| t > now);
        // A deadline already past was acted on by `tick`: a record still here is held back (its
        // shard over its rate, or busy in order), and what frees it (a call finishing, the
        // limiter's time, a retry's time) wakes the engine instead. Counting it would spin.
        // Per lane, its earliest deadline: a lane whose earliest has passed is held back as a
        // whole (its shard), and its later deadlines are freed by the same wake-up.
        if !limited {
            for d in s.ready.earliest_by_lane() {
                if d > now {
                    at(d);
                }
            }
        }
        // Only a time still ahead: a past one is stale (it is recomputed only when a batch is
        // tried), and waking for it would spin.
        if let Some(t) = s.limited_until
            && t > now
        {
            at(t);
        }
    }
    wake
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test picks its own instants from the clock
mod tests {
    use std::sync::Arc;

    use super::super::ready::test_ready;
    use super::super::stream::Retry;
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn inputs(can_send: bool, closing: bool) -> WakeInputs {
        WakeInputs {
            can_send,
            closing,
            unmapped_wait: 15_000 * MS,
            // Past the periodic refresh (60 s), so the cases below see no expiry.
            record_ttl: 120_000 * MS,
        }
    }

    /// Per-key ordering: records waiting to be routed again wake the engine only when the tick
    /// would route them. Without a map (a stream found missing), waking for their time, already
    /// past, spun the engine without end (found by `tests/simulation.rs`).
    #[test]
    fn records_to_route_again_wake_only_when_they_can_be() {
        let now = Instant::now();
        let mut s = StreamState::new(0, Arc::from("s"), Default::default(), now);
        s.next_refresh = now + 60_000 * MS;
        s.ordered = true;
        let record = crate::record::UserRecord::new("k", "v").unwrap();
        let (pending, _future) = crate::engine::Pending::new(record, Arc::from("s"));
        s.reroute.push(pending);
        s.reroute_at = now - 5 * MS;
        assert_eq!(
            next_wake(std::slice::from_ref(&s), inputs(true, false), now),
            Some(now + 60_000 * MS),
            "no map: nothing to do before the refresh"
        );
    }

    /// A stream whose map is in and whose next refresh is a minute away.
    fn mapped(now: Instant) -> StreamState {
        let mut s = StreamState::new(0, Arc::from("s"), Default::default(), now);
        s.next_refresh = now + 60_000 * MS;
        s
    }

    #[test]
    fn a_new_stream_wakes_at_once_for_its_first_listing_unless_one_is_under_way() {
        let now = Instant::now();
        let mut s = StreamState::new(0, Arc::from("s"), Default::default(), now);
        assert_eq!(next_wake(&[s], inputs(true, false), now), Some(now));
        s = StreamState::new(0, Arc::from("s"), Default::default(), now);
        s.refreshing = true;
        assert_eq!(next_wake(&[s], inputs(true, false), now), None);
    }

    #[test]
    fn closing_skips_periodic_refreshes() {
        let now = Instant::now();
        assert_eq!(next_wake(&[mapped(now)], inputs(true, true), now), None);
        assert_eq!(
            next_wake(&[mapped(now)], inputs(true, false), now),
            Some(now + 60_000 * MS)
        );
    }

    #[test]
    fn the_earliest_of_deadlines_retries_and_aggregators_across_streams() {
        let now = Instant::now();
        let mut a = mapped(now);
        a.aggregators_due = Some(now + 100 * MS);
        a.ready.push_back(test_ready(0, 1, 100, now + 80 * MS));
        let mut b = mapped(now);
        b.retrying.push(Retry {
            at: now + 50 * MS,
            seq: 0,
            records: Vec::new(),
        });
        b.ordered_retries
            .push((now + 70 * MS, test_ready(0, 1, 100, now)));
        assert_eq!(
            next_wake(&[a, b], inputs(true, false), now),
            Some(now + 50 * MS)
        );
    }

    #[test]
    fn a_deadline_already_past_does_not_spin_the_loop() {
        let now = Instant::now();
        let mut s = mapped(now);
        s.ready.push_back(test_ready(0, 1, 100, now - 10 * MS));
        s.ready.push_back(test_ready(0, 1, 100, now));
        assert_eq!(
            next_wake(&[s], inputs(true, false), now),
            Some(now + 60_000 * MS),
            "only the refresh"
        );
    }

    #[test]
    fn a_limited_stream_wakes_at_the_limiters_time_not_its_deadlines() {
        let now = Instant::now();
        let mut s = mapped(now);
        s.ready.push_back(test_ready(0, 1, 100, now + 5 * MS));
        s.limited_until = Some(now + 40 * MS);
        assert_eq!(
            next_wake(&[s], inputs(true, false), now),
            Some(now + 40 * MS)
        );
        // A limiter time already past is stale: the deadlines count again.
        let mut s = mapped(now);
        s.ready.push_back(test_ready(0, 1, 100, now + 5 * MS));
        s.limited_until = Some(now - MS);
        assert_eq!(
            next_wake(&[s], inputs(true, false), now),
            Some(now + 5 * MS)
        );
    }

    #[test]
    fn queued_records_wake_the_core_when_their_ttl_runs_out() {
        let now = Instant::now();
        let mut s = mapped(now);
        // Held back past its deadline (its shard busy, say): only its TTL wakes the core.
        s.ready.push_back(test_ready(0, 1, 100, now - 10 * MS));
        let w = WakeInputs {
            record_ttl: 2_000 * MS,
            ..inputs(true, false)
        };
        assert_eq!(next_wake(&[s], w, now), Some(now + 1_990 * MS));
    }

    #[test]
    fn with_every_connection_busy_ready_records_wait_for_a_call_to_finish() {
        let now = Instant::now();
        let mut s = mapped(now);
        s.ready.push_back(test_ready(0, 1, 100, now + 5 * MS));
        s.limited_until = Some(now + 40 * MS);
        assert_eq!(
            next_wake(&[s], inputs(false, false), now),
            Some(now + 60_000 * MS)
        );
    }
}
