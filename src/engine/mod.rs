//! The engine: one task that owns every buffer, timer and in-flight call.
//!
//! ```text
//! Msg::Record ─▶ StreamState: shard map known? ── no ──▶ unmapped (until the map; those that
//!                   │                                    cannot wait go aggregated by hash key)
//!                   │ yes: predicted shard = map.lookup(hash key)
//!                   ▼
//!               ShardState.aggregator ── full / deadline / flush ──▶ ready (Kinesis records)
//!                                                                    │ collector: ≤ CollectionMaxCount,
//!                                                                    │ ≤ CollectionMaxSize, under each
//!                                                                    ▼ shard's limiter, when due
//!                                                   ≤ MaxConnections PutRecords tasks (JoinSet)
//!                                                                    │ settle: put ones resolved there
//!              Receipt / PutError ◀── retrier: fail now, or retry at a time, until RecordTtl
//! ```
//!
//! Its stages, each in its own module:
//! - `protocol`: the messages from the handles and from the engine's own tasks;
//! - `pending`: a user record in the engine, its future, and the one way it is resolved;
//! - `stream`: one stream's state, one [`stream::ShardState`] per shard of its map;
//! - `collector`: what one PutRecords call takes from a stream's queue (pure);
//! - `settle`: applying a PutRecords answer, in the task that made the call;
//! - `retrier`: a failed record's fate (pure); `resend`: applying it;
//! - `mapping`: records waiting for the first map, a listing's arrival, misrouted aggregates;
//! - `epochs`: flush accounting for `flush_and_wait`;
//! - this module: the loop and its wake-ups, routing, sending, applying answers.
//!
//! Only this task touches the state, so nothing in it is locked. Handles talk to it through one
//! unbounded channel (`send` never blocks); each record carries the slot its future waits on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;

use crate::aggregation::{Aggregator, Entry, MAX_RECORD_SIZE, encode};
use crate::budget::Budget;
use crate::config::Config;
use crate::error::{ErrorClass, classify};
use crate::limiter::Feedback;
use crate::metrics::{Recorder, Shared};
use crate::outcome::{AttemptError, PutErrorKind};
use crate::record::UserRecord;
use crate::shard_map::ShardMap;
use crate::sink::{PutEntry, Sink, SinkError};

mod account;
mod batch;
mod collector;
mod epochs;
mod mapping;
mod order;
mod pending;
mod protocol;
mod ready;
mod resend;
mod retrier;
mod settle;
mod slot;
mod stream;
mod wake;

use account::{fail, resolve};
pub(crate) use batch::Batch;
pub use batch::BatchFuture;
use collector::{CallLimits, Taken};
use epochs::Epochs;
use order::reroute_later;
pub(crate) use pending::Pending;
pub use pending::RecordFuture;
use pending::Resolution;
pub(crate) use protocol::Msg;
use protocol::{PutDone, RefreshDone};
use ready::{Ready, ShardRef};
use retrier::Fate;
use settle::{Misrouted, NotPut, Settled, settle_put};
use slot::Put;
use stream::{
    Retry, ShardState, StreamState, flush_aggregators, flush_due, push_ready, request_refresh,
    retune,
};
use wake::WakeInputs;

/// The engine's own limit on a call is RequestTimeout plus this: the sink applies RequestTimeout
/// itself (the AWS sink as the SDK's operation timeout) and can name the endpoint in its error,
/// so it should answer first; the engine's limit is the backstop for sinks that have none.
const TIMEOUT_GRACE: Duration = Duration::from_millis(250);

/// How long to wait before asking for a shard map again after ListShards failed.
const REFRESH_RETRY: Duration = Duration::from_secs(1);
/// Messages taken from the channel per wake-up: large enough to amortise the wake-up, small
/// enough that timers are looked at often under load.
const RECV_BATCH: usize = 1024;

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

pub(crate) struct Engine<S> {
    /// Where the retry grid starts (see `retrier::RETRY_GRID`).
    origin: Instant,
    config: Config,
    sink: Arc<S>,
    budget: Arc<Budget>,
    streams: Vec<StreamState>,
    /// Stream index by the id the producer gave it.
    by_id: HashMap<usize, usize>,
    inflight: JoinSet<PutDone>,
    refreshes: JoinSet<RefreshDone>,
    generation: u64,
    epochs: Epochs,
    closing: bool,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    retry_seq: u64,
    /// Records taken in so far: each record's place in that order (`Pending::seq`).
    taken_in: u64,
    /// The one source of retry jitter (a test can seed the retrier with its own).
    rng: fastrand::Rng,
    metrics: Recorder,
}

impl<S: Sink> Engine<S> {
    pub(crate) fn new(config: Config, sink: S, budget: Arc<Budget>) -> Self {
        let origin = clock();
        // The oldest record's age to within a millisecond, or within 1/30,000 of RecordTtl
        // when that is longer, so the ledger of arrivals stays under 30,000 counters.
        let age_resolution = (config.record_ttl / 30_000).max(Duration::from_millis(1));
        let metrics = Recorder::new(&config, origin, age_resolution);
        Engine {
            metrics,
            config,
            sink: Arc::new(sink),
            budget,
            streams: Vec::new(),
            by_id: HashMap::new(),
            inflight: JoinSet::new(),
            refreshes: JoinSet::new(),
            generation: 0,
            epochs: Epochs::new(),
            closing: false,
            shutdown_waiters: Vec::new(),
            retry_seq: 0,
            taken_in: 0,
            rng: fastrand::Rng::new(),
            origin,
        }
    }

    /// The metrics' store, for the producer's handles to read.
    pub(crate) fn metrics(&self) -> Arc<Shared> {
        self.metrics.shared()
    }

    /// Tells when the engine has stopped.
    pub(crate) fn closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.metrics.closed()
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut buf = Vec::with_capacity(RECV_BATCH);
        let mut open = true;
        loop {
            let now = clock();
            self.tick(now);
            self.account(now);
            if (self.closing || !open) && self.is_idle() {
                break;
            }
            let wake = wake::next_wake(&self.streams, self.wake_inputs(), now);
            let wake = wake.into_iter().chain(self.sample_at()).min();
            // Wait for the next input; then read the clock once and hand both to the stage.
            let input = tokio::select! {
                biased;
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => match done {
                    Ok(done) => Input::Put(done),
                    // A panicking sink lost its batch; those futures resolve as Stopped.
                    Err(e) => {
                        tracing::error!(error = %e, "a PutRecords task failed");
                        Input::Woken
                    }
                },
                Some(done) = self.refreshes.join_next(), if !self.refreshes.is_empty() => match done {
                    Ok(done) => Input::Listed(done),
                    Err(_) => Input::Woken,
                },
                n = rx.recv_many(&mut buf, RECV_BATCH), if open => Input::Messages(n),
                () = sleep_until(wake.unwrap_or(now + Duration::from_secs(3600))), if wake.is_some() => Input::Woken,
            };
            let now = clock();
            match input {
                Input::Put(done) => self.on_put(done),
                Input::Listed(done) => self.on_refresh(done, now),
                Input::Messages(n) => {
                    if n == 0 {
                        // Every handle is gone: send what is held, then stop.
                        open = false;
                        self.closing = true;
                    }
                    for msg in buf.drain(..) {
                        self.on_msg(msg, now);
                    }
                }
                Input::Woken => {}
            }
        }
        self.account_last();
        tracing::debug!("producer engine stopped");
        for tx in self.shutdown_waiters.drain(..) {
            let _ = tx.send(());
        }
    }

    /// What, besides the streams, decides the next wake-up.
    fn wake_inputs(&self) -> WakeInputs {
        WakeInputs {
            can_send: self.inflight.len() < self.config.max_connections,
            closing: self.closing,
            unmapped_wait: unmapped_wait(&self.config),
            record_ttl: self.config.record_ttl,
        }
    }

    fn is_idle(&self) -> bool {
        self.inflight.is_empty()
            && self.streams.iter().all(|s| {
                s.unmapped.is_empty()
                    && s.ready.is_empty()
                    && s.retrying.is_empty()
                    && s.unverified.is_empty()
                    && s.ordered_retries.is_empty()
                    && s.reroute.is_empty()
                    && s.shards.iter().all(|h| h.aggregator.is_empty())
            })
    }

    fn add_stream(&mut self, id: usize, name: Arc<str>, now: Instant) {
        let i = self.streams.len();
        self.metrics.add_stream(Arc::clone(&name));
        let limits = self.config.aggregation.for_stream(MAX_RECORD_SIZE);
        let mut s = StreamState::new(name, limits, now);
        s.ordered = self.config.per_key_ordering;
        self.streams.push(s);
        self.by_id.insert(id, i);
    }

    fn on_msg(&mut self, msg: Msg, now: Instant) {
        match msg {
            Msg::NewStream { id, name } => self.add_stream(id, name, now),
            Msg::Record { stream, pending } => {
                if let Some(i) = self.stream_index(stream) {
                    self.take_in(i, pending, now);
                }
            }
            Msg::Records { stream, entries } => {
                if let Some(i) = self.stream_index(stream) {
                    for pending in entries {
                        self.take_in(i, pending, now);
                    }
                }
            }
            Msg::Flush => self.flush_all(),
            Msg::Refresh(name) => {
                if let Some(s) = self.streams.iter_mut().find(|s| s.name == name) {
                    request_refresh(s, now);
                }
            }
            Msg::FlushWait(tx) => {
                self.flush_all();
                self.epochs.wait(tx);
            }
            Msg::Shutdown(tx) => {
                self.closing = true;
                self.shutdown_waiters.push(tx);
            }
        }
    }

    fn stream_index(&self, id: usize) -> Option<usize> {
        let i = self.by_id.get(&id).copied();
        if i.is_none() {
            // Cannot happen: a stream's id is announced before its first record.
            tracing::error!(stream = id, "records for an unknown stream id");
        }
        i
    }

    /// Takes a record from a handle in at `now`.
    fn take_in(&mut self, i: usize, mut pending: Pending, now: Instant) {
        self.taken_in += 1;
        pending.arrive(now, self.epochs.add(), self.taken_in);
        self.metrics.received(i, now);
        if let Some(limit) = self.config.max_user_record_size
            && pending.record().size() > limit
        {
            let record = pending.record();
            let error = crate::error::RecordError::RecordTooLarge {
                size: record.size(),
                data_len: record.data().len(),
                key_len: record.partition_key().len(),
                limit,
            };
            let tally = self.metrics.tally(i);
            let kind = PutErrorKind::InvalidRecord(error);
            return fail(pending, kind, &mut self.epochs, &self.budget, tally);
        }
        let deadline = now + self.config.record_max_buffered_time;
        self.route(i, pending, deadline);
    }

    /// Puts a record into its predicted shard's aggregator, or holds it until the map is known.
    fn route(&mut self, i: usize, pending: Pending, deadline: Instant) {
        let s = &mut self.streams[i];
        let Some(map) = &s.map else {
            s.unmapped.push_back((pending, deadline));
            return;
        };
        match map.lookup(pending.record().hash_key()) {
            Some(index) => match s.shards[index]
                .aggregator
                .push(pending, deadline.into_std())
            {
                Ok(full) => {
                    s.aggregators_due =
                        Some(s.aggregators_due.map_or(deadline, |d| d.min(deadline)));
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
                        push_ready(s, r);
                    }
                }
                Err(rejected) => fail(
                    rejected.entry,
                    PutErrorKind::InvalidRecord(rejected.error),
                    &mut self.epochs,
                    &self.budget,
                    self.metrics.tally(i),
                ),
            },
            // A gap in a map taken mid-resharding: let Kinesis route it.
            None => self.send_plain(i, pending, deadline),
        }
    }

    /// Queues a record on its own, unaggregated, routed by its own keys.
    fn send_plain(&mut self, i: usize, pending: Pending, deadline: Instant) {
        let record = pending.record();
        if let Err(error) = self.streams[i].limits.check(record) {
            return fail(
                pending,
                PutErrorKind::InvalidRecord(error),
                &mut self.epochs,
                &self.budget,
                self.metrics.tally(i),
            );
        }
        let kinesis = encode(std::slice::from_ref(record)).expect("one record encodes");
        let s = &mut self.streams[i];
        let shard = s
            .map
            .as_ref()
            .and_then(|m| m.lookup(record.hash_key()))
            .map(|index| s.shard_ref(index));
        let expected = s.shard_mut(shard).map(|h| Arc::clone(&h.id));
        let ready = Ready {
            record: kinesis,
            entries: vec![pending],
            deadline,
            shard,
            expected,
        };
        push_ready(s, ready);
    }

    fn flush_all(&mut self) {
        for s in &mut self.streams {
            flush_aggregators(s);
            s.forced = s.ready.len();
            // Records waiting for the map go at the next tick if they cannot wait for it (see
            // `release_unmapped`).
            s.flush_unmapped = !s.unmapped.is_empty();
        }
    }

    /// Does everything that is due: refreshes, deadlines, retries, and sends.
    fn tick(&mut self, now: Instant) {
        for i in 0..self.streams.len() {
            let s = &mut self.streams[i];
            // While closing, maps are fetched only to settle misrouted aggregates.
            if !s.refreshing && now >= s.next_refresh && (!self.closing || s.needs_map()) {
                self.start_refresh(i);
            }
            let closing = self.closing;
            if !self.streams[i].unmapped.is_empty() {
                self.release_unmapped(i, now);
            }
            // In-order retries whose backoff is over go to the front of their shard's queue.
            let s = &mut self.streams[i];
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
            if !self.streams[i].unverified.is_empty() {
                self.expire_unverified(i, now);
            }
            if self.can_reroute(i, now) {
                self.reroute(i, now);
            }
            // Retries whose backoff is over go back through aggregation, due at once.
            let mut due = Vec::new();
            while self.streams[i].retrying.peek().is_some_and(|r| r.at <= now) {
                due.extend(self.streams[i].retrying.pop().expect("peeked").records);
            }
            for pending in due {
                self.route(i, pending, now);
            }
            let s = &mut self.streams[i];
            if closing {
                flush_aggregators(s);
            } else if s.aggregators_due.is_some_and(|d| d <= now) {
                flush_due(s, now, self.config.record_max_buffered_time / 5);
            }
            if closing {
                s.forced = s.ready.len();
            }
            while self.inflight.len() < self.config.max_connections
                && self.should_send(i, now)
                && self.send_batch(i, now)
            {}
        }
    }

    /// Whether stream `i` has a PutRecords call's worth to send now.
    fn should_send(&self, i: usize, now: Instant) -> bool {
        collector::should_send(&self.streams[i], self.call_limits(), now)
    }

    fn call_limits(&self) -> CallLimits {
        CallLimits {
            max_count: self.config.collection_max_count,
            max_size: self.config.collection_max_size,
        }
    }

    /// Sends one PutRecords call's worth from stream `i`; false if rate limits held back all.
    fn send_batch(&mut self, i: usize, now: Instant) -> bool {
        let limits = self.call_limits();
        let ordered = self.config.per_key_ordering;
        let s = &mut self.streams[i];
        let Taken {
            batch,
            bytes,
            limited_until,
        } = collector::take(&mut s.ready, &mut s.shards, limits, ordered, now);
        s.limited_until = limited_until;
        if batch.is_empty() {
            return false;
        }
        s.forced = s.forced.saturating_sub(batch.len());
        s.in_flight += batch.len();
        let (sent, generation) = (batch.len(), s.generation());
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
        let budget = Arc::clone(&self.budget);
        let metrics = self.config.metrics_level != crate::metrics::Level::None;
        let (sink, name, limit) = (
            Arc::clone(&self.sink),
            Arc::clone(&s.name),
            self.config.request_timeout,
        );
        let call = async move {
            let call = guarded("PutRecords", sink.put_records(&name, entries));
            let result = match timeout(limit + TIMEOUT_GRACE, call).await {
                Ok(r) => r,
                Err(_) => Err(timed_out("PutRecords", limit)),
            };
            let finished = clock();
            let Settled {
                failed,
                resolved,
                outcomes,
                misrouted,
                stale,
                tally,
            } = settle_put(&budget, batch, now, finished, result, metrics);
            PutDone {
                stream: i,
                entries: sent,
                generation,
                failed,
                resolved,
                outcomes,
                misrouted,
                stale,
                finished,
                tally,
            }
        };
        self.inflight.spawn(call.instrument(span));
        true
    }

    fn on_put(&mut self, done: PutDone) {
        self.metrics.call(done.stream, done.tally);
        for (epoch, count) in done.resolved {
            self.epochs.resolve_many(epoch, count);
        }
        let s = &mut self.streams[done.stream];
        s.in_flight -= done.entries;
        // Sent under another map than the current one (an older one, or one dropped since).
        if done.generation != s.generation() {
            s.draining = s.draining.saturating_sub(done.entries);
        }
        if !done.stale.is_empty() {
            tracing::info!(stream = %s.name, misrouted = done.misrouted.len(), "records landed on unexpected shards; refreshing the shard map");
            request_refresh(s, done.finished);
        }
        // Until the new map is in, what is aggregated for these shards waits: packed for the
        // old ranges, it would straddle the new shards, and KCL consumers drop such aggregates.
        for at in done.stale {
            if let Some(shard) = s.shard_mut(Some(at)) {
                shard.stale = true;
            }
        }
        s.unverified.extend(done.misrouted);
        for (at, _, _) in &done.outcomes {
            if let Some(shard) = s.shard_mut(Some(*at)) {
                shard.busy = false;
            }
        }
        // One feedback per shard for the whole answer. Feedback about the shards of an older
        // map does not apply to the new one.
        let mut feedback: Vec<(usize, Feedback)> = Vec::new();
        for (at, size, accepted) in done.outcomes {
            let (Some(k), Some(accepted)) = (s.current(Some(at)), accepted) else {
                continue;
            };
            let i = match feedback.iter().position(|(j, _)| *j == k) {
                Some(i) => i,
                None => {
                    feedback.push((k, Feedback::default()));
                    feedback.len() - 1
                }
            };
            feedback[i].1.count(accepted, size);
        }
        for (k, f) in feedback {
            s.shards[k].limiter.observe(f, done.finished.into_std());
            retune(s, k);
        }
        let stream = Arc::clone(&self.streams[done.stream].name);
        let missing = done
            .failed
            .iter()
            .any(|f| f.error.code == mapping::STREAM_MISSING);
        for NotPut {
            ready,
            error,
            class,
        } in done.failed
        {
            tracing::debug!(stream = %stream, code = %error.code, reason = %error.message, "entry not put");
            if self.config.per_key_ordering {
                self.retry_in_order(done.stream, ready, done.finished, &error, class);
            } else {
                self.retry_or_fail(done.stream, ready.entries, done.finished, &error, class);
            }
        }
        if missing {
            self.forget_map(done.stream, done.finished);
        }
    }
}

/// The engine's one clock: the loop reads it once per input and its call tasks once per
/// answer; every stage gets the time from them (`clippy.toml` keeps the stages off the clock).
#[allow(clippy::disallowed_methods)]
pub(crate) fn clock() -> Instant {
    Instant::now()
}

/// What wakes the engine's loop.
enum Input {
    /// A PutRecords call's answer, applied in its task.
    Put(PutDone),
    /// A ListShards listing (or its failure).
    Listed(RefreshDone),
    /// `n` messages from the handles in the buffer; 0: every handle is gone.
    Messages(usize),
    /// A wake-up time came, or a task ended without an answer.
    Woken,
}

/// `call`, a sink's, with a panic in it turned into its error (`SinkPanicked`, which is not
/// retried): a panic that ended the task instead left its records' budget, flush epochs and
/// shard flags taken for good, so that `flush_and_wait` and `shutdown` never returned.
async fn guarded<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    match CatchUnwind(Box::pin(call)).await {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            tracing::error!(operation, panic = %what, "the sink panicked");
            Err(SinkError::new(
                operation,
                "SinkPanicked",
                format!("the sink panicked in {operation}: {what}"),
            ))
        }
    }
}

/// A future whose panic while polled is its output (boxed: one allocation per call, so that no
/// pin projection is needed).
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(payload) => std::task::Poll::Ready(Err(payload)),
        }
    }
}

fn timed_out(operation: &'static str, limit: Duration) -> SinkError {
    SinkError::new(
        operation,
        "RequestTimeout",
        format!(
            "no answer to {operation} within RequestTimeout ({} ms)",
            limit.as_millis()
        ),
    )
}
