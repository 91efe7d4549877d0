//! The state of one stream: its shard map, aggregators, queues and retries.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ledger::{Ledger, Misrouted};
use super::part::Part;
use super::ready::{Ready, ReadyQueue, ShardRef, born};
use super::retrier;
use crate::aggregation::{AggregationLimits, Aggregator, Entry, encode};
use crate::config::Config;
use crate::engine::pending::Pending;
use crate::limiter::ShardLimiter;
use crate::outcome::{AttemptError, PutErrorKind};
use crate::record::UserRecord;
use crate::shard_map::ShardMap;

/// What the functions that work on one stream (`mapping`, `resend`, `order`, `stream`) need
/// besides the stream: borrowed from the core for one step.
pub(super) struct Ctx<'a> {
    pub(super) config: &'a Config,
    pub(super) ledger: &'a mut Ledger,
    pub(super) rng: &'a mut fastrand::Rng,
    /// Where the retry grid starts (see `retrier::RETRY_GRID`).
    pub(super) origin: Instant,
    pub(super) closing: bool,
    /// The generation of the latest listing asked for.
    pub(super) listings: u64,
    /// The part of the hash key space this core owns.
    pub(super) part: Part,
}

/// Everything kept for one shard of the current map; one owner instead of vectors kept in step.
pub(super) struct ShardState {
    /// The shard's id: Kinesis naming another one for a record predicted here means the map is
    /// stale.
    pub(super) id: Arc<str>,
    pub(super) aggregator: Aggregator<Pending>,
    pub(super) limiter: ShardLimiter,
    /// Per-key ordering: a record of this shard is in flight or held for an in-order retry;
    /// nothing else goes to it meanwhile.
    pub(super) busy: bool,
    /// Kinesis showed the map to be out of date here (it put a record of this shard's on
    /// another): its aggregates are held until the next listing is in.
    pub(super) stale: bool,
    /// This core owns keys of the shard (with several cores, each is given the records of its
    /// own part of the key space: see `part.rs`).
    pub(super) owned: bool,
}

impl ShardState {
    /// Shard `id` of a stream whose aggregation limits are `limits`, whose limits this core
    /// starts at `share` of, and which it owns (sends to as a rule, samples) or not (see
    /// `part.rs`).
    pub(super) fn new(
        id: &str,
        config: &Config,
        limits: AggregationLimits,
        share: f64,
        owned: bool,
        now: Instant,
    ) -> Self {
        ShardState {
            id: Arc::from(id),
            aggregator: Aggregator::new(limits),
            limiter: ShardLimiter::with_share(config.rate_limit, share, now),
            owned,
            busy: false,
            stale: false,
        }
    }

    /// Flushes this shard's aggregate (shard `index` of the map of `generation`), if any.
    pub(super) fn flush(&mut self, at: ShardRef) -> Option<Ready> {
        let a = self.aggregator.flush()?;
        Some(Ready::from_aggregate(a, at, Arc::clone(&self.id)))
    }
}

/// User records of one failed Kinesis record, waiting out their backoff before they go back
/// through aggregation (with whatever else is bound for their shards by then).
pub(super) struct Retry {
    pub(super) at: Instant,
    pub(super) seq: u64,
    pub(super) records: Vec<Pending>,
}

// Ordered so that a `BinaryHeap` pops the earliest `at` first (ties in arrival order).
impl Ord for Retry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}
impl PartialOrd for Retry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Retry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Retry {}

pub(super) struct StreamState {
    /// Its index among the core's streams (for its metrics).
    pub(super) index: usize,
    pub(super) name: Arc<str>,
    /// The aggregation limits for this stream: the configured ones with the stream's own
    /// per-record limit (its `MaxRecordSizeInKiB`, 1 MiB until DescribeStreamSummary says more).
    pub(super) limits: AggregationLimits,
    pub(super) map: Option<ShardMap>,
    pub(super) refreshing: bool,
    /// A refresh was asked for while one was under way: its answer may predate the change
    /// the caller knows of, so ask again once it is in.
    pub(super) refresh_again: bool,
    pub(super) next_refresh: Instant,
    /// The shards of the current map, by index.
    pub(super) shards: Vec<ShardState>,
    /// No aggregator's earliest deadline is before this (it may be earlier than the true
    /// minimum after a flush, never later): the aggregators are scanned only once it passes,
    /// rather than on every wake-up, which with many shards would cost more than the records.
    pub(super) aggregators_due: Option<Instant>,
    /// Records that arrived before the first shard map, with their deadlines. They wait for the
    /// map (see `unmapped_wait`); those that cannot wait go out aggregated by hash key.
    pub(super) unmapped: VecDeque<(Pending, Instant)>,
    /// ListShards failed at least once for this stream (so waiting for a map may be long).
    pub(super) map_failed: bool,
    /// ListShards failed with an error that cannot heal (the stream is missing, access denied):
    /// records do not wait for a map that will not come; PutRecords will say why they fail.
    pub(super) map_refused: bool,
    /// DescribeStreamSummary failed (warned once, until it answers again).
    pub(super) record_limit_failed: bool,
    /// A flush asked for the records waiting for the map to be sent.
    pub(super) flush_unmapped: bool,
    /// Kinesis records ready to send, in lanes by shard.
    pub(super) ready: ReadyQueue,
    pub(super) retrying: std::collections::BinaryHeap<Retry>,
    /// Retries queued so far (ties in `retrying` go in this order).
    pub(super) retry_seq: u64,
    /// How many of the records at the front of `ready` a flush asked to send now.
    pub(super) forced: usize,
    /// Per-key ordering: failed Kinesis records waiting out their backoff, to be sent again as
    /// they are, ahead of anything newer for their shard.
    pub(super) ordered_retries: Vec<(Instant, Ready)>,
    /// Aggregates Kinesis put on another shard than predicted, waiting for a shard map that
    /// knows that shard's range to tell which of their user records consumers will keep.
    pub(super) unverified: Vec<Misrouted>,
    /// When a record held back by its shard's limiter can go, if any is.
    pub(super) limited_until: Option<Instant>,
    /// Kinesis records of this stream in PutRecords calls not answered yet.
    pub(super) in_flight: usize,
    /// Per-key ordering (`PerKeyOrdering`): the fields below are used only with it.
    pub(super) ordered: bool,
    /// Of the Kinesis records in flight, those sent under an older shard map than the current
    /// one. Their keys may belong to other shards now, which no busy flag covers, so nothing of
    /// the stream is sent until they are answered (see `order.rs`).
    pub(super) draining: usize,
    /// User records to be routed again, in the order they were taken in, ahead of everything
    /// queued for their keys: what a new map made stale, old-map records that failed, records
    /// of aggregates that straddled the shard that took them. Nothing of the stream is sent
    /// while any wait (see `order.rs`).
    pub(super) reroute: Vec<Pending>,
    /// Not before this (the backoff of the failed records among them).
    pub(super) reroute_at: Instant,
    /// Listings of this generation or older were asked for before the stream was last found
    /// missing, and are not used (see `mapping::forget_map`).
    pub(super) listed_before_missing: u64,
    /// How many times the stream was found missing (see `mapping::forget_map`).
    pub(super) missing: u64,
}

impl StreamState {
    /// A stream just named by a handle: no map yet, its first refresh due `now`.
    pub(super) fn new(
        index: usize,
        name: Arc<str>,
        limits: AggregationLimits,
        now: Instant,
    ) -> Self {
        StreamState {
            index,
            name,
            limits,
            map: None,
            refreshing: false,
            refresh_again: false,
            next_refresh: now,
            shards: Vec::new(),
            aggregators_due: None,
            unmapped: VecDeque::new(),
            map_failed: false,
            map_refused: false,
            record_limit_failed: false,
            flush_unmapped: false,
            ready: ReadyQueue::default(),
            retrying: std::collections::BinaryHeap::new(),
            retry_seq: 0,
            forced: 0,
            limited_until: None,
            unverified: Vec::new(),
            ordered_retries: Vec::new(),
            in_flight: 0,
            ordered: false,
            draining: 0,
            reroute: Vec::new(),
            reroute_at: now,
            listed_before_missing: 0,
            missing: 0,
        }
    }

    /// Whether it holds no record (calls in flight aside).
    pub(super) fn is_empty(&self) -> bool {
        self.unmapped.is_empty()
            && self.ready.is_empty()
            && self.retrying.is_empty()
            && self.unverified.is_empty()
            && self.ordered_retries.is_empty()
            && self.reroute.is_empty()
            && self.shards.iter().all(|h| h.aggregator.is_empty())
    }

    /// Per-key ordering: when the records waiting to be routed again can be (`order.rs`), if
    /// nothing else must come first: calls of an older map answered, misrouted aggregates
    /// checked, a map to route them with. The one rule, for the tick and the wake-up alike (a
    /// wake-up for a time the tick would not act on spun the engine without end).
    pub(super) fn reroute_due(&self) -> Option<Instant> {
        (!self.reroute.is_empty()
            && self.draining == 0
            && self.unverified.is_empty()
            && self.map.is_some())
        .then_some(self.reroute_at)
    }

    /// Per-key ordering: whether nothing of the stream may be sent now, because records older
    /// than what is queued must first be answered (sent under an older map, or put on a shard
    /// no listing has named yet) or routed again.
    pub(super) fn held(&self) -> bool {
        self.ordered
            && (self.draining > 0 || !self.unverified.is_empty() || !self.reroute.is_empty())
    }

    /// Whether a listing is needed to settle something (records waiting for the first map or
    /// to be routed again, misrouted aggregates, aggregates held for stale shards), so that it is fetched even while
    /// closing.
    pub(super) fn needs_map(&self) -> bool {
        !self.unmapped.is_empty()
            || !self.unverified.is_empty()
            || !self.reroute.is_empty()
            || self.shards.iter().any(|h| h.stale)
    }

    /// The current map's generation (0 before the first).
    pub(super) fn generation(&self) -> u64 {
        self.map.as_ref().map_or(0, ShardMap::generation)
    }

    /// A reference to shard `index` of the current map.
    pub(super) fn shard_ref(&self, index: usize) -> ShardRef {
        ShardRef {
            index,
            generation: self.generation(),
        }
    }

    /// The shard `at` names, if it is a shard of the current map.
    pub(super) fn shard_mut(&mut self, at: Option<ShardRef>) -> Option<&mut ShardState> {
        let k = self.current(at)?;
        Some(&mut self.shards[k])
    }

    /// Whether `at` names a shard of the current map, and its index there.
    pub(super) fn current(&self, at: Option<ShardRef>) -> Option<usize> {
        at?.index_in(self.generation(), self.shards.len())
    }
}

/// While a shard throttles more than this share of what it is sent (averaged over about a
/// second), its aggregates are cut at [`THROTTLED_AGGREGATE_SIZE`].
pub(super) const THROTTLED_SHARE: f64 = 0.02;
/// The largest aggregate for a throttling shard: one PUT payload unit (25 KiB), so the cut costs
/// no payload units. A shard's allowance runs out partway through a record that no longer fits;
/// with aggregates half the size, less of it is left unused (ferrokinesis, whose limit is a
/// fixed one-second window, then lost on average half a 50 KB aggregate of each second's
/// 1 MiB), and a throttled attempt carries half as much to send again.
pub(super) const THROTTLED_AGGREGATE_SIZE: usize = 25_600;

/// The aggregation limits for a shard in the state its limiter is in: its stream's, with
/// aggregates cut at [`THROTTLED_AGGREGATE_SIZE`] while the shard throttles.
pub(super) fn aggregation_limits(
    stream: AggregationLimits,
    limiter: &ShardLimiter,
) -> AggregationLimits {
    if limiter.throttled_share() > THROTTLED_SHARE {
        stream.capped(THROTTLED_AGGREGATE_SIZE)
    } else {
        stream
    }
}

/// Gives shard `k`'s aggregator the limits its stream and its limiter call for now (see
/// [`aggregation_limits`]); what it held that no longer fits goes to the queue.
pub(super) fn retune(s: &mut StreamState, k: usize) {
    let at = s.shard_ref(k);
    let shard = &mut s.shards[k];
    let limits = aggregation_limits(s.limits, &shard.limiter);
    if shard.aggregator.limits() != limits
        && let Some(held) = shard.aggregator.set_limits(limits)
    {
        let held = Ready::from_aggregate(held, at, Arc::clone(&shard.id));
        s.ready.push_back(held);
    }
}

/// Asks for the stream's shard map now; during a refresh, once more after it (its answer may
/// predate what prompted this).
pub(super) fn request_refresh(s: &mut StreamState, now: Instant) {
    if s.refreshing {
        s.refresh_again = true;
    } else {
        s.next_refresh = now;
    }
}

/// Flushes the aggregators whose earliest deadline has passed, and notes the next one.
/// Flushes the aggregates whose deadline has come, and with them those due within `slack`:
/// shards fed at the same pace have deadlines a few milliseconds apart, and flushing each on its
/// own made one PutRecords call per shard per RecordMaxBufferedTime (found by `kpl bench` at an
/// offered rate: 116 calls aggregated against 30 unaggregated). Called at the earliest deadline,
/// so an aggregate alone is never flushed early.
pub(super) fn flush_due(s: &mut StreamState, now: Instant, slack: Duration) {
    let mut next_due: Option<Instant> = None;
    let generation = s.generation();
    for (index, shard) in s.shards.iter_mut().enumerate() {
        let Some(d) = shard.aggregator.earliest_deadline() else {
            continue;
        };
        if d <= now + slack {
            if let Some(full) = shard.flush(ShardRef { index, generation }) {
                s.ready.push_back(full);
            }
        } else {
            next_due = Some(next_due.map_or(d, |n| n.min(d)));
        }
    }
    s.aggregators_due = next_due;
}

pub(super) fn flush_aggregators(s: &mut StreamState) {
    s.aggregators_due = None;
    let generation = s.generation();
    for (index, shard) in s.shards.iter_mut().enumerate() {
        if let Some(full) = shard.flush(ShardRef { index, generation }) {
            s.ready.push_back(full);
        }
    }
}

/// Fails the user records queued in `s` whose RecordTtl is over at `now`, with the error of
/// their last attempt, or saying they made none: a record waits in the queue while its shard
/// is over its rate, busy with an earlier record of its key, or held for a new shard map, and
/// without this it waited past RecordTtl (shutdown then took as long; found by the simulation,
/// seed 65 of `tests/simulation.rs`: 22 s for a RecordTtl of 3.3 s). What is left of an
/// aggregate is packed again, in its place.
pub(super) fn expire_queued(s: &mut StreamState, ledger: &mut Ledger, ttl: Duration, now: Instant) {
    let Some(cutoff) = now.checked_sub(ttl) else {
        return;
    };
    let index = s.index;
    let mut expired = 0usize;
    s.ready.expire(cutoff, |r| {
        let before = r.entries.len();
        let (gone, keep): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut r.entries)
            .into_iter()
            .partition(|p| p.arrival() <= cutoff);
        expired += gone.len();
        for pending in gone {
            let last = pending.last_error().unwrap_or_else(|| {
                Arc::new(AttemptError::new(
                    "NotSent",
                    "no attempt within RecordTtl: it waited for its shard (over its rate, busy \
                     with an earlier record of its key, or held for a new shard map)",
                ))
            });
            ledger.fail(index, pending, retrier::expiry(ttl, &last));
        }
        if !keep.is_empty() && keep.len() < before {
            // A subset of an aggregate, in the same order, is smaller than the aggregate.
            let records: Vec<UserRecord> = keep.iter().map(|p| p.record().clone()).collect();
            r.record = encode(&records).expect("at least one record");
        }
        // Taken again from what is left, whatever it was: every record left in the queue is
        // then born after `cutoff`, so the wake-up for the oldest TTL is ahead, and cannot spin.
        r.born = born(&keep, now);
        r.entries = keep;
    });
    s.forced = s.forced.min(s.ready.len());
    if expired > 0 {
        tracing::warn!(stream = %s.name, records = expired, ttl_ms = ttl.as_millis() as u64, "records expired (RecordTtl) waiting to be sent");
    }
}

/// Per-key ordering: fails the records waiting to be routed again whose RecordTtl is over at
/// `now`. They wait for calls of an older map to drain and for a map to route them with; when
/// the stream is gone, that map may never come (found by the simulation, seed 6848 of
/// `tests/simulation.rs`: records of a call that failed after the stream was deleted waited for
/// ever, and shutdown never finished).
pub(super) fn expire_reroute(
    s: &mut StreamState,
    ledger: &mut Ledger,
    ttl: Duration,
    now: Instant,
) {
    let Some(cutoff) = now.checked_sub(ttl) else {
        return;
    };
    if Pending::oldest_arrival(&s.reroute).is_none_or(|a| a > cutoff) {
        return;
    }
    let (gone, keep): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut s.reroute)
        .into_iter()
        .partition(|p| p.arrival() <= cutoff);
    s.reroute = keep;
    tracing::warn!(stream = %s.name, records = gone.len(), ttl_ms = ttl.as_millis() as u64, "records expired (RecordTtl) waiting to be routed again");
    for pending in gone {
        let last = pending.last_error().unwrap_or_else(|| {
            Arc::new(AttemptError::new(
                "NoShardMap",
                "no attempt within RecordTtl: it waited for a shard map to be routed again with",
            ))
        });
        ledger.fail(s.index, pending, retrier::expiry(ttl, &last));
    }
}

/// Per-key ordering: in-order retries whose backoff is over go to the front of their shard's
/// queue, due at once.
pub(super) fn release_ordered_retries(s: &mut StreamState, now: Instant) {
    let mut k = 0;
    while k < s.ordered_retries.len() {
        if s.ordered_retries[k].0 <= now {
            let (_, r) = s.ordered_retries.swap_remove(k);
            if let Some(shard) = s.shard_mut(r.shard) {
                shard.busy = false;
            }
            s.ready.push_front(r);
            s.forced += 1;
        } else {
            k += 1;
        }
    }
}

/// Puts a record into its predicted shard's aggregator, or holds it until the map is known.
pub(super) fn route(s: &mut StreamState, ledger: &mut Ledger, pending: Pending, deadline: Instant) {
    let Some(map) = &s.map else {
        s.unmapped.push_back((pending, deadline));
        return;
    };
    match map.lookup(pending.record().hash_key()) {
        Some(index) => match s.shards[index].aggregator.push(pending, deadline) {
            Ok(full) => {
                s.aggregators_due = Some(s.aggregators_due.map_or(deadline, |d| d.min(deadline)));
                let at = s.shard_ref(index);
                let shard = &mut s.shards[index];
                // The shard's id is cloned only for what leaves the aggregator.
                let full = full.map(|a| Ready::from_aggregate(a, at, Arc::clone(&shard.id)));
                // Nothing more can join a full aggregate: it need not wait for its deadline.
                let more = if shard.aggregator.is_full() {
                    shard.flush(at)
                } else {
                    None
                };
                for r in full.into_iter().chain(more) {
                    s.ready.push_back(r);
                }
            }
            Err(rejected) => ledger.fail(
                s.index,
                rejected.entry,
                PutErrorKind::InvalidRecord(rejected.error),
            ),
        },
        // A gap in a map taken mid-resharding: let Kinesis route it.
        None => send_plain(s, ledger, pending, deadline),
    }
}

/// Queues a record on its own, unaggregated, routed by its own keys.
fn send_plain(s: &mut StreamState, ledger: &mut Ledger, pending: Pending, deadline: Instant) {
    let record = pending.record();
    if let Err(error) = s.limits.check(record) {
        return ledger.fail(s.index, pending, PutErrorKind::InvalidRecord(error));
    }
    let kinesis = encode(std::slice::from_ref(record)).expect("one record encodes");
    let shard = s
        .map
        .as_ref()
        .and_then(|m| m.lookup(record.hash_key()))
        .map(|index| s.shard_ref(index));
    let expected = s.shard_mut(shard).map(|h| Arc::clone(&h.id));
    s.ready.push_back(Ready {
        record: kinesis,
        born: pending.arrival(),
        entries: vec![pending],
        deadline,
        shard,
        expected,
    });
}
