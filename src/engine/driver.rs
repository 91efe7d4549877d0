//! The driver: the one part of the engine that touches tokio, the sink and the clock. It runs
//! the [`Core`] as one task: it reads the handles' channel, makes the calls and listings the
//! core asks for in tasks of their own, reads the clock once per input and hands it to the core,
//! sleeps until the core's next timeout, and delivers what the core's ledger decided: futures
//! resolved, room given back to the budget, flush waiters woken, metrics committed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout};
use tracing::Instrument;

use super::core::{Answered, CallId, Core, Listed, Listing, Outcome, Outcomes, Part};
use super::lister::{Lister, Turn};
use super::protocol::Msg;
use crate::budget::Budget;
use crate::config::Config;
use crate::metrics::{Name, Recorder, SAMPLE_INTERVAL};
use crate::sink::{Sink, SinkError};

/// The engine's own limit on a call is RequestTimeout plus this: the sink applies RequestTimeout
/// itself (the AWS sink as the SDK's operation timeout) and can name the endpoint in its error,
/// so it should answer first; the engine's limit is the backstop for sinks that have none.
const TIMEOUT_GRACE: Duration = Duration::from_millis(250);

/// Messages taken from the channel per wake-up: large enough to amortise the wake-up, small
/// enough that timers are looked at often under load.
const RECV_BATCH: usize = 1024;

/// The engine: a [`Core`] and what it runs on.
pub(crate) struct Engine<S> {
    core: Core,
    config: Config,
    sink: Arc<S>,
    budget: Arc<Budget>,
    recorder: Recorder,
    /// The part of the hash key space whose records this engine core is given.
    part: Part,
    /// Listings shared with the producer's other engine cores (none when this is the only one).
    lister: Option<Arc<Lister>>,
    /// PutRecords calls in flight, each answering with its call's id and its answer read.
    inflight: JoinSet<(CallId, Answered)>,
    /// Which call each task makes, for a task that ends without an answer.
    tasks: HashMap<tokio::task::Id, CallId>,
    refreshes: JoinSet<(Listing, Listed)>,
    /// `flush_and_wait` waiters, by the token the core knows them by.
    flush_waiters: HashMap<u64, oneshot::Sender<()>>,
    next_token: u64,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    outcomes: Outcomes,
    /// The latest task that leaves outcomes in futures and wakes them (see [`Wakeups`]).
    last_wakeup: Option<tokio::task::JoinHandle<()>>,
}

/// What one turn of the driver hands a task of its own to wake: the outcomes the ledger decided,
/// then the flush waiters that are done. The ledger decides; the task only leaves each outcome
/// in its future and wakes it, off the core's task (building receipts and waking is most of the
/// per-record work after a call). A task per turn, spawned, not one task fed by a channel: a
/// task woken from the core's thread runs next on that thread (tokio's LIFO slot), and that
/// cost the engine 5 to 14% of its speed in `cargo bench --bench engine`; a spawned one goes
/// to the other worker. Each waits for the one before it to finish before it wakes its flush
/// waiters, so a flush returns after every outcome before it is delivered.
struct Wakeups {
    outcomes: Vec<Outcome>,
    flushed: Vec<oneshot::Sender<()>>,
}

/// The recorder of a producer's first engine core (the others are made from it with
/// [`Recorder::another_core`]).
pub(crate) fn recorder(config: &Config) -> Recorder {
    // The oldest record's age to within a millisecond, or within 1/30,000 of RecordTtl when
    // that is longer, so the ledger of arrivals stays under 30,000 counters.
    let age_resolution = (config.record_ttl / 30_000).max(Duration::from_millis(1));
    Recorder::new(config, clock(), age_resolution)
}

impl<S: Sink> Engine<S> {
    /// Engine core `part.index` of `part.of`: `config` is its own (its share of
    /// MaxConnections), `recorder` one of the producer's ([`recorder`]), `lister` shared by the
    /// cores when there are several.
    pub(crate) fn new(
        config: Config,
        sink: Arc<S>,
        budget: Arc<Budget>,
        part: Part,
        recorder: Recorder,
        lister: Option<Arc<Lister>>,
    ) -> Self {
        let origin = clock();
        Engine {
            core: Core::for_part(config.clone(), fastrand::Rng::new(), origin, part),
            config,
            sink,
            budget,
            recorder,
            part,
            lister,
            inflight: JoinSet::new(),
            tasks: HashMap::new(),
            refreshes: JoinSet::new(),
            flush_waiters: HashMap::new(),
            next_token: 0,
            shutdown_waiters: Vec::new(),
            outcomes: Outcomes::default(),
            last_wakeup: None,
        }
    }

    /// Runs the engine until every handle is gone or shutdown is asked for, and everything it
    /// holds is resolved.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut buf = Vec::with_capacity(RECV_BATCH);
        let mut open = true;
        loop {
            let now = clock();
            self.core.handle_timeout(now);
            self.start_listings();
            self.start_calls(now);
            self.deliver();
            self.account(now);
            if self.core.is_finished() {
                break;
            }
            let wake = self.core.poll_timeout(now);
            let wake = wake.into_iter().chain(self.sample_at()).min();
            // Wait for the next input; then read the clock once and hand both to the core.
            tokio::select! {
                biased;
                Some(done) = self.inflight.join_next_with_id(), if !self.inflight.is_empty() => {
                    match done {
                        Ok((task, (id, answered))) => {
                            self.tasks.remove(&task);
                            self.core.handle_put_answer(id, answered, clock());
                        }
                        // Cannot happen (the sink's panics are caught in `guarded`, and no
                        // task is aborted): its records are gone with it (their futures resolve
                        // as stopped), and nothing waits on it.
                        Err(e) => {
                            tracing::error!(error = %e, "a PutRecords task failed");
                            if let Some(id) = self.tasks.remove(&e.id()) {
                                self.core.handle_lost_call(id);
                            }
                        }
                    }
                }
                Some(done) = self.refreshes.join_next(), if !self.refreshes.is_empty() => {
                    if let Ok((listing, listed)) = done {
                        self.core.handle_listing(&listing, listed, clock());
                    }
                }
                n = rx.recv_many(&mut buf, RECV_BATCH), if open => {
                    let now = clock();
                    if n == 0 {
                        // Every handle is gone: send what is held, then stop.
                        open = false;
                        self.core.close();
                    }
                    for msg in buf.drain(..) {
                        self.on_msg(msg, now);
                    }
                }
                () = sleep_until(tokio::time::Instant::from_std(wake.unwrap_or(now + Duration::from_secs(3600)))), if wake.is_some() => {}
            }
        }
        self.deliver();
        if let Some(last) = self.last_wakeup.take() {
            // Every future is woken before shutdown returns (each wake-up task waits for the
            // one before it).
            let _ = last.await;
        }
        self.account_last();
        tracing::debug!("producer engine stopped");
        for tx in self.shutdown_waiters.drain(..) {
            let _ = tx.send(());
        }
    }

    fn on_msg(&mut self, msg: Msg, now: Instant) {
        match msg {
            Msg::NewStream { id, name } => self.core.add_stream(id, name, now),
            Msg::Record { stream, pending } => {
                self.core
                    .handle_records(stream, std::iter::once(pending), now)
            }
            Msg::Records { stream, entries } => self.core.handle_records(stream, entries, now),
            Msg::Flush => self.core.flush(),
            Msg::Refresh(name) => self.core.refresh(&name, now),
            Msg::FlushWait(tx) => {
                let token = self.next_token;
                self.next_token += 1;
                self.flush_waiters.insert(token, tx);
                self.core.flush_wait(token);
            }
            Msg::Shutdown(tx) => {
                self.core.close();
                self.shutdown_waiters.push(tx);
            }
        }
    }

    /// Starts the listings the core asks for, each in a task of its own: ListShards, and once
    /// it answers, DescribeStreamSummary for the stream's own record limit.
    fn start_listings(&mut self) {
        let limit = self.config.request_timeout;
        while let Some(listing) = self.core.poll_listing() {
            let sink = Arc::clone(&self.sink);
            let span = tracing::debug_span!("list_shards", stream = %listing.name, generation = listing.generation);
            let turn = self.lister.as_ref().map(|l| l.join(&listing.name));
            self.refreshes.spawn(
                async move {
                    let leading = match turn {
                        Some(Turn::Follow(rx)) => {
                            // Another core is listing this stream: its answer is this one's.
                            let listed = rx.await.unwrap_or_else(|_| Listed {
                                shards: Err(SinkError::new(
                                    "ListShards",
                                    "ListingAbandoned",
                                    "the engine core listing the stream stopped before it answered",
                                )),
                                record_limit: None,
                            });
                            return (listing, listed);
                        }
                        Some(Turn::Lead(leading)) => Some(leading),
                        None => None,
                    };
                    let name = &listing.name;
                    let call = guarded("ListShards", sink.list_shards(name));
                    let shards = match timeout(limit + TIMEOUT_GRACE, call).await {
                        Ok(r) => r,
                        Err(_) => Err(timed_out("ListShards", limit)),
                    };
                    // The stream's own record limit, refreshed with its map.
                    let record_limit = match &shards {
                        Ok(_) => {
                            let describe =
                                guarded("DescribeStreamSummary", sink.max_record_size(name));
                            Some(
                                timeout(limit + TIMEOUT_GRACE, describe)
                                    .await
                                    .unwrap_or_else(|_| {
                                        Err(timed_out("DescribeStreamSummary", limit))
                                    }),
                            )
                        }
                        Err(_) => None,
                    };
                    let listed = Listed {
                        shards,
                        record_limit,
                    };
                    match leading {
                        Some(leading) => (listing, leading.finish(listed)),
                        None => (listing, listed),
                    }
                }
                .instrument(span),
            );
        }
    }

    /// Makes the PutRecords calls the core asks for, each in a task of its own.
    fn start_calls(&mut self, now: Instant) {
        let limit = self.config.request_timeout;
        while let Some(call) = self.core.poll_call(now) {
            let sink = Arc::clone(&self.sink);
            let id = call.id;
            let span = call.span;
            let (stream, entries, carried) = (call.stream, call.entries, call.carried);
            let task = async move {
                let put = guarded("PutRecords", sink.put_records(&stream, entries));
                let answer = match timeout(limit + TIMEOUT_GRACE, put).await {
                    Ok(r) => r,
                    Err(_) => Err(timed_out("PutRecords", limit)),
                };
                // The ledger's pure reading of the answer, here, off the core's thread.
                (id, carried.settle(answer, clock()))
            };
            let handle = self.inflight.spawn(task.instrument(span));
            self.tasks.insert(handle.id(), id);
        }
    }

    /// Delivers what the core's ledger decided: room to the budget at once, outcomes to their
    /// futures and then flush waiters through the wake-up task.
    fn deliver(&mut self) {
        self.core.poll_outcomes(&mut self.outcomes);
        if self.outcomes.is_empty() {
            return;
        }
        let (records, bytes) = std::mem::take(&mut self.outcomes.released);
        if records > 0 {
            self.budget.release(records, bytes);
        }
        let flushed: Vec<oneshot::Sender<()>> = self
            .outcomes
            .flushed
            .drain(..)
            .filter_map(|token| self.flush_waiters.remove(&token))
            .collect();
        let outcomes = std::mem::take(&mut self.outcomes.resolved);
        if outcomes.is_empty() && flushed.is_empty() {
            return;
        }
        let w = Wakeups { outcomes, flushed };
        let before = self.last_wakeup.take();
        self.last_wakeup = Some(tokio::spawn(async move {
            for outcome in w.outcomes {
                let _ = outcome.deliver();
            }
            if let Some(before) = before {
                let _ = before.await;
            }
            for flushed in w.flushed {
                let _ = flushed.send(());
            }
        }));
    }

    /// The end of a turn: what it gathered goes to the metrics, and the samples are taken when
    /// due.
    fn account(&mut self, now: Instant) {
        if now >= self.recorder.next_sample && self.recorder.sample_wanted(self.buffered()) {
            self.sample(now);
        } else {
            self.recorder.commit(self.core.gather(), now);
        }
    }

    /// When the next sample is due, if one is wanted.
    fn sample_at(&self) -> Option<Instant> {
        self.recorder
            .sample_wanted(self.buffered())
            .then_some(self.recorder.next_sample)
    }

    /// The last turn: the final figures, exported.
    fn account_last(&mut self) {
        self.sample(clock());
        self.recorder.close();
    }

    fn buffered(&self) -> bool {
        self.budget.used().0 > 0
    }

    /// Samples the quantities: what is buffered, and the core's per stream and shard.
    fn sample(&mut self, now: Instant) {
        let (records, bytes) = self.budget.used();
        // The buffer is the producer's: the first core samples it, the others only their own.
        let mut samples = if self.part.index == 0 {
            vec![
                (Name::UserRecordsBuffered, None, None, records as f64),
                (Name::BytesBuffered, None, None, bytes as f64),
            ]
        } else {
            Vec::new()
        };
        samples.extend(self.core.samples());
        self.recorder
            .record_samples(self.core.gather(), samples, records > 0, now);
        debug_assert!(self.recorder.next_sample == now + SAMPLE_INTERVAL);
    }
}

/// The engine's one clock: the driver reads it once per input; the core gets the time from it
/// (`clippy.toml` keeps the core off the clock). Tokio's, so that a test's paused clock holds.
#[allow(clippy::disallowed_methods)]
pub(crate) fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
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
