//! The engine's core: every decision the engine makes, and no I/O.
//!
//! ```text
//!            handle_records ─▶ stream: shard map known? ── no ──▶ unmapped (until the map; those
//!                                 │                              that cannot wait go aggregated
//!                                 │ yes: map.lookup(hash key)    by hash key)
//!                                 ▼
//!                   shard aggregator ── full / deadline / flush ──▶ ready lanes
//!                                                                   │ collector: ≤ CollectionMaxCount,
//!                                                                   │ ≤ CollectionMaxSize, under each
//!                                                                   ▼ shard's limiter, when due
//!   poll_call ◀── Call (≤ MaxConnections in flight) ... handle_put_answer ─▶ ledger::settle
//!                                                                   │ put: Ledger::put
//!   poll_outcomes ◀── Ledger (outcome, budget, epoch, metrics) ◀────┤ failed: retrier, or Ledger::fail
//!                                                                   │ misrouted: wait for a listing
//!   poll_listing ◀── Listing ... handle_listing ─▶ mapping::install / verify
//!   poll_timeout ◀── wake::next_wake ... handle_timeout ─▶ deadlines, retries, refreshes
//! ```
//!
//! As quinn-proto's `Connection` is to its endpoint, the core is to the driver: it is told what
//! happened (`handle_*`, each with the time), and asked what to do (`poll_*`). It holds no clock,
//! no sink, no channel, no task and no lock; its random source is handed to it. So every
//! decision is a function of its inputs and can be tested, and simulated, without tokio.
//!
//! Its state, each piece with one owner:
//! - `stream`: one stream's state, one shard state per shard of its map, its ready lanes
//!   (`ready`), its retries; the functions that route a record into it;
//! - `collector`: what one PutRecords call takes from a stream's lanes (pure);
//! - `ledger`: a call's answer read ([`ledger::settle`], pure), and the one place a record is
//!   resolved, with its budget, flush epoch and metrics;
//! - `retrier`: a failed record's fate (pure); `resend`: applying it;
//! - `mapping`: records waiting for the first map, a listing's arrival, misrouted aggregates;
//! - `order`: per-key ordering across a change of map;
//! - `epochs`: flush accounting for `flush_and_wait`;
//! - `wake`: the next time anything is due (pure);
//! - this module: the core's inputs and outputs, and the calls in flight.
//!
//! The core works on a set of streams and their shards; nothing in it assumes it has every
//! shard of a stream's map, so that one core per CPU, each given a disjoint set of shards, is
//! the next step (see `docs/architecture.md`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;

use crate::aggregation::{Entry, MAX_RECORD_SIZE};
use crate::config::Config;
use crate::error::RecordError;
use crate::limiter::Feedback;
use crate::metrics::{Gather, Granularity, Level, Name, Sample};
use crate::outcome::PutErrorKind;
use crate::sink::PutEntry;

use super::pending::{self, Pending};

mod call;
mod collector;
mod epochs;
mod ledger;
mod mapping;
mod order;
mod part;
mod ready;
mod resend;
mod retrier;
mod stream;
#[cfg(test)]
mod tests;
mod wake;

use call::InFlight;
pub(crate) use call::{Answered, Call, CallId, Carried};
use collector::{CallLimits, Taken};
use ledger::{EntryFate, Ledger, Misrouted};
pub(crate) use ledger::{Outcome, Outcomes};
pub(crate) use mapping::Listed;
pub(crate) use part::{Part, Table, core_for};
use stream::{Ctx, StreamState, flush_aggregators, flush_due, request_refresh, retune, route};
use wake::WakeInputs;

/// A listing for the driver to make (ListShards, then DescribeStreamSummary for the stream's
/// own record limit) and answer with [`handle_listing`](Core::handle_listing).
pub(crate) struct Listing {
    pub(crate) stream: usize,
    pub(crate) name: Arc<str>,
    /// Its place in the order listings were asked for: a map is never replaced by an older one.
    pub(crate) generation: u64,
}

/// How long a record waits for its stream's first shard map before it goes out without one
/// (aggregated by hash key only): half its RecordTtl, leaving the other half for attempts, and
/// never less than RecordMaxBufferedTime. With per-key ordering, its whole RecordTtl: going out
/// without a map could reorder its key, so it expires waiting instead.
fn unmapped_wait(config: &Config) -> Duration {
    if config.per_key_ordering {
        config.record_ttl
    } else {
        (config.record_ttl / 2).max(config.record_max_buffered_time)
    }
}

/// The engine's core. See the module docs.
pub(crate) struct Core {
    config: Config,
    origin: Instant,
    streams: Vec<StreamState>,
    /// Stream index by the id the producer gave it.
    by_id: HashMap<usize, usize>,
    ledger: Ledger,
    calls: HashMap<CallId, InFlight>,
    next_call: CallId,
    listings: VecDeque<Listing>,
    /// Listings asked for so far (each listing's generation).
    generation: u64,
    closing: bool,
    /// Records taken in so far: each record's place in that order (`Pending::seq`).
    taken_in: u64,
    /// The one source of retry jitter.
    rng: fastrand::Rng,
    /// The stream `poll_call` looks at first: it stays on a stream while that stream has calls
    /// to make, as the loop did that sent each stream's calls in turn.
    cursor: usize,
    /// The part of the hash key space whose records this core is given.
    part: Part,
}

impl Core {
    /// A core with no streams yet, started at `now`, drawing its jitter from `rng`.
    #[cfg(test)]
    pub(crate) fn new(config: Config, rng: fastrand::Rng, now: Instant) -> Self {
        Core::for_part(config, rng, now, Part::WHOLE)
    }

    /// As [`new`](Self::new), for a core that is given the records of `part` of the hash key
    /// space only (one of several cores): its limiters aim at its part of each shard's limits.
    pub(crate) fn for_part(config: Config, rng: fastrand::Rng, now: Instant, part: Part) -> Self {
        Core {
            part,
            ledger: Ledger::new(config.metrics_level),
            config,
            origin: now,
            streams: Vec::new(),
            by_id: HashMap::new(),
            calls: HashMap::new(),
            next_call: 0,
            listings: VecDeque::new(),
            generation: 0,
            closing: false,
            taken_in: 0,
            rng,
            cursor: 0,
        }
    }

    fn ctx(&mut self, i: usize) -> (&mut StreamState, Ctx<'_>) {
        (
            &mut self.streams[i],
            Ctx {
                config: &self.config,
                ledger: &mut self.ledger,
                rng: &mut self.rng,
                origin: self.origin,
                closing: self.closing,
                listings: self.generation,
                part: self.part,
            },
        )
    }

    /// A stream named for the first time, by the id its records will carry.
    pub(crate) fn add_stream(&mut self, id: usize, name: Arc<str>, now: Instant) {
        let i = self.streams.len();
        self.ledger.add_stream();
        let limits = self.config.aggregation.for_stream(MAX_RECORD_SIZE);
        let mut s = StreamState::new(i, name, limits, now);
        s.ordered = self.config.per_key_ordering;
        self.streams.push(s);
        self.by_id.insert(id, i);
    }

    /// Records of the stream known by `id`, taken in at `now`, in order.
    pub(crate) fn handle_records(
        &mut self,
        id: usize,
        records: impl IntoIterator<Item = Pending>,
        now: Instant,
    ) {
        self.cursor = 0;
        let Some(i) = self.by_id.get(&id).copied() else {
            // Cannot happen: a stream's id is announced before its first record.
            tracing::error!(stream = id, "records for an unknown stream id");
            return;
        };
        for pending in records {
            self.take_in(i, pending, now);
        }
    }

    fn take_in(&mut self, i: usize, mut pending: Pending, now: Instant) {
        self.taken_in += 1;
        self.ledger.take_in(i, &mut pending, now, self.taken_in);
        if let Some(limit) = self.config.max_user_record_size
            && pending.record().size() > limit
        {
            let record = pending.record();
            let error = RecordError::RecordTooLarge {
                size: record.size(),
                data_len: record.data().len(),
                key_len: record.partition_key().len(),
                limit,
            };
            return self
                .ledger
                .fail(i, pending, PutErrorKind::InvalidRecord(error));
        }
        let deadline = now + self.config.record_max_buffered_time;
        route(&mut self.streams[i], &mut self.ledger, pending, deadline);
    }

    /// Sends everything held as soon as the rate limits allow.
    pub(crate) fn flush(&mut self) {
        self.cursor = 0;
        for s in &mut self.streams {
            flush_aggregators(s);
            s.forced = s.ready.len();
            // Records waiting for the map go at the next timeout if they cannot wait for it
            // (see `mapping::release_unmapped`).
            s.flush_unmapped = !s.unmapped.is_empty();
        }
    }

    /// Flushes, and notes a waiter, `token`, that is done (its token comes out of
    /// [`poll_outcomes`](Self::poll_outcomes)) once every record taken in so far resolves.
    pub(crate) fn flush_wait(&mut self, token: u64) {
        self.flush();
        self.ledger.flush_wait(token);
    }

    /// Asks for the shard map of stream `name` again now.
    pub(crate) fn refresh(&mut self, name: &str, now: Instant) {
        if let Some(s) = self.streams.iter_mut().find(|s| &*s.name == name) {
            request_refresh(s, now);
        }
    }

    /// Starts shutting down: everything held is sent as soon as the rate limits allow, and
    /// maps are fetched only where a record needs one.
    pub(crate) fn close(&mut self) {
        self.cursor = 0;
        self.closing = true;
    }

    /// Whether the core is shutting down and holds nothing: no record, no call in flight.
    pub(crate) fn is_finished(&self) -> bool {
        self.closing && self.is_idle()
    }

    fn is_idle(&self) -> bool {
        self.calls.is_empty() && self.streams.iter().all(StreamState::is_empty)
    }

    /// Does everything due at `now`: shard map refreshes (see
    /// [`poll_listing`](Self::poll_listing)), records waiting for a map, deadlines, retries.
    /// The calls this makes due come out of [`poll_call`](Self::poll_call).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.cursor = 0;
        for i in 0..self.streams.len() {
            let s = &mut self.streams[i];
            // While closing, maps are fetched only to settle what needs one.
            if !s.refreshing && now >= s.next_refresh && (!self.closing || s.needs_map()) {
                s.refreshing = true;
                self.generation += 1;
                self.listings.push_back(Listing {
                    stream: i,
                    name: Arc::clone(&s.name),
                    generation: self.generation,
                });
            }
            let (s, mut cx) = self.ctx(i);
            if !s.unmapped.is_empty() {
                let wait = unmapped_wait(cx.config);
                mapping::release_unmapped(s, &mut cx, wait, now);
            }
            stream::release_ordered_retries(s, now);
            if !s.unverified.is_empty() {
                mapping::expire_unverified(s, &mut cx, now);
            }
            if !s.reroute.is_empty() {
                stream::expire_reroute(s, cx.ledger, cx.config.record_ttl, now);
            }
            if s.reroute_due().is_some_and(|at| at <= now) {
                order::reroute(s, cx.ledger, now);
            }
            // Retries whose backoff is over go back through aggregation, due at once.
            let mut due = Vec::new();
            while s.retrying.peek().is_some_and(|r| r.at <= now) {
                due.extend(s.retrying.pop().expect("peeked").records);
            }
            for pending in due {
                route(s, cx.ledger, pending, now);
            }
            // Before the aggregates due join the queue: they go now if they can, even those
            // that lingered past their TTL (RecordMaxBufferedTime longer than RecordTtl). What
            // cannot go, and whose TTL is over, is expired at the next turn, which the wake-up
            // for the queue's oldest TTL asks for at once (`wake::next_wake`).
            let ttl = cx.config.record_ttl;
            if s.ready.oldest_born().is_some_and(|b| b + ttl <= now) {
                stream::expire_queued(s, cx.ledger, ttl, now);
            }
            if cx.closing {
                flush_aggregators(s);
                s.forced = s.ready.len();
            } else if s.aggregators_due.is_some_and(|d| d <= now) {
                flush_due(s, now, cx.config.record_max_buffered_time / 5);
            }
        }
    }

    /// The next PutRecords call to make at `now`, if any is due and fewer than MaxConnections
    /// are in flight. Call it until it gives `None`.
    pub(crate) fn poll_call(&mut self, now: Instant) -> Option<Call> {
        while self.cursor < self.streams.len() {
            if self.calls.len() >= self.config.max_connections {
                return None;
            }
            let i = self.cursor;
            let limits = CallLimits {
                max_count: self.config.collection_max_count,
                max_size: collector::max_call_size(
                    self.config.collection_max_size,
                    self.streams[i].limits.max_record_size(),
                ),
            };
            if collector::should_send(&self.streams[i], limits, now)
                && let Some(call) = self.make_call(i, limits, now)
            {
                return Some(call);
            }
            self.cursor += 1;
        }
        None
    }

    /// One PutRecords call's worth from stream `i`; `None` if rate limits held back all.
    fn make_call(&mut self, i: usize, limits: CallLimits, now: Instant) -> Option<Call> {
        let ordered = self.config.per_key_ordering;
        let s = &mut self.streams[i];
        let Taken {
            batch,
            bytes,
            limited_until,
        } = collector::take(&mut s.ready, &mut s.shards, limits, ordered, now);
        s.limited_until = limited_until;
        if batch.is_empty() {
            return None;
        }
        s.forced = s.forced.saturating_sub(batch.len());
        s.in_flight += batch.len();
        let entries: Vec<PutEntry> = batch
            .iter()
            .map(|r| PutEntry {
                partition_key: r.record.partition_key.clone(),
                explicit_hash_key: r.record.explicit_hash_key,
                data: r.record.data.clone(),
            })
            .collect();
        // The call's attempt: one more than the most any of its records has made.
        let attempt = 1 + batch
            .iter()
            .filter_map(|r| r.entries.first())
            .map(Pending::attempts_made)
            .max()
            .unwrap_or(0);
        let span = tracing::debug_span!(
            "put_records",
            stream = %s.name,
            entries = entries.len(),
            bytes,
            attempt
        );
        if !span.is_disabled() {
            pending::link_callers(&span, batch.iter().flat_map(|r| &r.entries));
        }
        tracing::debug!(parent: &span, "PutRecords");
        let id = self.next_call;
        self.next_call += 1;
        let generation = s.generation();
        let stream = Arc::clone(&s.name);
        self.calls.insert(
            id,
            InFlight {
                stream: i,
                entries: batch.len(),
                generation,
                missing: s.missing,
            },
        );
        let metrics = self.config.metrics_level != Level::None;
        Some(Call {
            id,
            stream,
            entries,
            span,
            carried: Carried {
                batch,
                started: now,
                metrics,
            },
        })
    }

    /// Call `id` came back at `now` with its answer read ([`Carried::settle`]: the sink's
    /// results, one per entry in order, or the error that failed the call as a whole, the
    /// driver's own time limit included).
    pub(crate) fn handle_put_answer(&mut self, id: CallId, answered: Answered, now: Instant) {
        self.cursor = 0;
        let Some(InFlight {
            stream: i,
            entries,
            generation,
            missing,
        }) = self.calls.remove(&id)
        else {
            tracing::error!(call = id, "an answer to a call not in flight");
            return;
        };
        let Answered {
            batch,
            settlement,
            started,
            finished,
        } = answered;
        self.ledger.call(i, settlement.tally);
        // The stream was found missing after this call was sent: it may have been created
        // again before the call reached it, with other shards under the same ids, so an
        // aggregate reported put where it was predicted may straddle the shard that took it.
        // Such aggregates are checked against a listing of the stream as it is now, as a
        // misrouted one is (found by the simulation's soak, seed 3556678).
        let gone = missing != self.streams[i].missing;
        if !gone {
            self.ledger.count_out(&settlement.put);
        }
        let duration = finished.saturating_duration_since(started);
        let (s, mut cx) = self.ctx(i);
        s.in_flight -= entries;
        // Sent under another map than the current one (an older one, or one dropped since).
        if generation != s.generation() {
            s.draining = s.draining.saturating_sub(entries);
        }
        if !settlement.stale.is_empty() {
            tracing::info!(stream = %s.name, "records landed on unexpected shards; refreshing the shard map");
            request_refresh(s, now);
        }
        // Until the new map is in, what is aggregated for these shards waits: packed for the
        // old ranges, it would straddle the new shards, and KCL consumers drop such aggregates.
        for at in settlement.stale {
            if let Some(shard) = s.shard_mut(Some(at)) {
                shard.stale = true;
            }
        }
        for (at, _, _) in &settlement.outcomes {
            if let Some(shard) = s.shard_mut(Some(*at)) {
                shard.busy = false;
            }
        }
        // One feedback per shard for the whole answer. Feedback about the shards of an older
        // map does not apply to the new one.
        let mut feedback: Vec<(usize, Feedback)> = Vec::new();
        for (at, size, accepted) in settlement.outcomes {
            let (Some(k), Some(accepted)) = (s.current(Some(at)), accepted) else {
                continue;
            };
            let j = match feedback.iter().position(|(j, _)| *j == k) {
                Some(j) => j,
                None => {
                    feedback.push((k, Feedback::default()));
                    feedback.len() - 1
                }
            };
            feedback[j].1.count(accepted, size);
        }
        for (k, f) in feedback {
            s.shards[k].limiter.observe(f, now);
            retune(s, k);
        }
        let mut missing = false;
        for (mut ready, fate) in batch.into_iter().zip(settlement.fates) {
            match fate {
                EntryFate::Put(put) if gone && ready.record.aggregated => {
                    s.unverified.push(Misrouted {
                        shard_id: Arc::clone(&put.shard_id),
                        sequence_number: Arc::clone(&put.sequence_number),
                        ready,
                        started,
                        duration,
                    });
                    request_refresh(s, now);
                }
                EntryFate::Put(put) if gone => cx.ledger.put(ready, put),
                EntryFate::Put(put) => cx.ledger.put_settled(ready, put),
                EntryFate::Misrouted {
                    shard_id,
                    sequence_number,
                } => s.unverified.push(Misrouted {
                    ready,
                    shard_id,
                    sequence_number,
                    started,
                    duration,
                }),
                EntryFate::Failed { error, class } => {
                    for pending in &mut ready.entries {
                        pending.record_failure(started, duration, Arc::clone(&error));
                    }
                    tracing::debug!(stream = %s.name, code = %error.code, reason = %error.message, "entry not put");
                    missing |= error.code == mapping::STREAM_MISSING;
                    if cx.config.per_key_ordering {
                        resend::retry_in_order(s, &mut cx, ready, now, &error, class);
                    } else {
                        resend::retry_or_fail(s, &mut cx, ready.entries, now, &error, class);
                    }
                }
            }
        }
        if missing {
            mapping::forget_map(s, cx.listings, now);
        }
    }

    /// Call `id` ended without an answer and its records are gone with it (its task failed
    /// outside the sink, which cannot happen: the driver catches a sink's panics). Nothing
    /// waits for it any more: the stream's shards are freed for what comes next.
    pub(crate) fn handle_lost_call(&mut self, id: CallId) {
        let Some(f) = self.calls.remove(&id) else {
            return;
        };
        let s = &mut self.streams[f.stream];
        s.in_flight -= f.entries;
        if f.generation != s.generation() {
            s.draining = s.draining.saturating_sub(f.entries);
        }
        s.shards.iter_mut().for_each(|h| h.busy = false);
    }

    /// The next listing to make, if one is due (after [`handle_timeout`](Self::handle_timeout)).
    pub(crate) fn poll_listing(&mut self) -> Option<Listing> {
        self.listings.pop_front()
    }

    /// What the listing `listing` found, at `now`.
    pub(crate) fn handle_listing(&mut self, listing: &Listing, listed: Listed, now: Instant) {
        self.cursor = 0;
        let (s, mut cx) = self.ctx(listing.stream);
        mapping::on_listing(s, &mut cx, listing.generation, listed, now);
    }

    /// When the core must next be woken with [`handle_timeout`](Self::handle_timeout), if
    /// anything will be due without other input.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let inputs = WakeInputs {
            can_send: self.calls.len() < self.config.max_connections,
            closing: self.closing,
            unmapped_wait: unmapped_wait(&self.config),
            record_ttl: self.config.record_ttl,
        };
        wake::next_wake(&self.streams, inputs, now)
    }

    /// Hands what the ledger decided since the last call to `into`: outcomes to deliver to
    /// futures, room to give back to the budget, flush waiters that are done.
    pub(crate) fn poll_outcomes(&mut self, into: &mut Outcomes) {
        self.ledger.take(into);
    }

    /// The metrics gathered since the driver last committed them.
    pub(crate) fn gather(&mut self) -> &mut Gather {
        self.ledger.gather()
    }

    /// User records taken in and not resolved, and their charge in bytes as the budget counts
    /// it.
    pub(crate) fn held(&self) -> (usize, usize) {
        self.ledger.held()
    }

    /// PutRecords calls in flight.
    pub(crate) fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// The sampled quantities of the streams: what waits to be sent, per stream and (at shard
    /// granularity) per shard, with the rate each shard's limiter allows.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        let mut samples = Vec::new();
        let detailed = self.config.metrics_level >= Level::Detailed;
        if !detailed {
            return samples;
        }
        let per_shard = self.config.metrics_granularity >= Granularity::Shard;
        for (i, s) in self.streams.iter().enumerate() {
            let (total, mut waiting) = s.ready.waiting();
            // Lanes are for the current map's shards (the same count, but between a map's
            // arrival and its lanes).
            waiting.resize(s.shards.len(), 0);
            samples.push((Name::UserRecordsWaitingToSend, Some(i), None, total as f64));
            if !per_shard {
                continue;
            }
            for (shard, waiting) in s.shards.iter().zip(waiting) {
                if !shard.owned {
                    // Another core's shard: its figures are that core's.
                    continue;
                }
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
        samples
    }
}
