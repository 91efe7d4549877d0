//! The engine: one task that owns every buffer, timer and in-flight call.
//!
//! ```text
//! Msg::Record ─▶ StreamState: shard map known? ── no ──▶ unmapped (until the map; those that
//!                   │                                    cannot wait go aggregated by hash key)
//!                   │ yes: predicted shard = map.lookup(hash key)
//!                   ▼
//!               Aggregator per shard ── full / deadline / flush ──▶ ready (Kinesis records)
//!                                                                    │ collector: ≤ CollectionMaxCount,
//!                                                                    │ ≤ CollectionMaxSize, sent when one
//!                                                                    ▼ is due, the batch is full, or flush
//!                                                   ≤ MaxConnections PutRecords tasks (JoinSet)
//!                                                                    │
//!              Receipt / Failure ◀── per entry: Put │ Failed → retry only that entry after backoff,
//!                                                      until RecordTtl
//! ```
//!
//! Only this task touches the state, so nothing in it is locked. Handles talk to it through one
//! unbounded channel (`send` never blocks); each record carries its reply channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use crate::aggregation::{Aggregate, Aggregator, Entry, KinesisRecord, encode};
use crate::budget::Budget;
use crate::config::Config;
use crate::error::{ErrorClass, RecordError, classify};
use crate::limiter::{Feedback, ShardLimiter};
use crate::outcome::{AttemptError, PutErrorKind};
use crate::record::UserRecord;
use crate::shard_map::{Shard, ShardMap};
use crate::sink::{EntryResult, PutEntry, Sink, SinkError};

mod pending;

pub(crate) use pending::Pending;
pub use pending::RecordFuture;
use pending::{Put, Resolution};

pub(crate) enum Msg {
    /// A stream seen for the first time, with the id records will name it by. Sent before any
    /// record for it (the producer registers streams under a lock).
    NewStream {
        id: usize,
        name: Arc<str>,
    },
    Record {
        /// The stream's id: an index, so the sending thread and the engine never share a
        /// reference count per record.
        stream: usize,
        /// The record, and the slot its future waits on.
        pending: Pending,
    },
    Flush,
    /// Fetch this stream's shard map again now.
    Refresh(Arc<str>),
    FlushWait(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The shortest wait for a shard over its rate: see `send_batch`.
const LIMITED_WAIT: Duration = Duration::from_millis(10);
/// First retry delay; doubled per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
/// At most a second between attempts: retries go back through the rate limiter, which paces
/// a throttled shard, so a longer wait would only spend the record's TTL. With the default
/// RecordTtl of 30 s a record gets about 30 attempts, enough for a stream where most attempts
/// fail (38% success per attempt leaves about one record in a million failed).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The wait before the next attempt after `attempts` failed ones: exponential from
/// [`BASE_BACKOFF`], capped at [`MAX_BACKOFF`], with "equal jitter" (half fixed, half random) so
/// that records failed together do not come back together, yet never retry at once.
///
/// A throttled record waits [`BASE_BACKOFF`] (jittered) whatever its attempts: it goes back
/// through its shard's rate limiter, which is what paces a throttled shard; growing waits only
/// left the shard idle while the last records of a backlog sat out their backoff.
fn backoff(attempts: usize, class: ErrorClass) -> Duration {
    if class == ErrorClass::Throttled {
        let half = BASE_BACKOFF / 2;
        return half + half.mul_f64(fastrand::f64());
    }
    let exp = BASE_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let half = exp / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Retry times are rounded up to this grid, so that records failed in different calls but due
/// within the same few milliseconds go back in one call: with per-record jitter, a throttled
/// stream without aggregation otherwise made one PutRecords call of a few records per retry
/// time (found by `kpl bench`: 4,600 calls for 20,000 records).
const RETRY_GRID: Duration = Duration::from_millis(10);

/// `at` rounded up to the next multiple of [`RETRY_GRID`] after `origin`.
fn on_grid(at: Instant, origin: Instant) -> Instant {
    let grid = RETRY_GRID.as_nanos();
    let since = at.saturating_duration_since(origin).as_nanos();
    let rounded = since.div_ceil(grid) * grid;
    origin + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

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
/// never less than RecordMaxBufferedTime.
fn unmapped_wait(config: &Config) -> Duration {
    (config.record_ttl / 2).max(config.record_max_buffered_time)
}

/// A Kinesis record ready to send (or waiting to be retried).
struct Ready {
    record: KinesisRecord,
    entries: Vec<Pending>,
    /// When it must be sent at the latest: its earliest user record's deadline.
    deadline: Instant,
    /// The shard it is predicted to land on, as an index into the map of the given generation:
    /// whose rate limiter it answers to. `None` while no map is known.
    shard: Option<(usize, u64)>,
    /// The id of that shard: Kinesis naming another one means the map is stale, and an
    /// aggregate may then hold records outside the range of the shard that took it.
    expected: Option<Arc<str>>,
}

impl Ready {
    /// An aggregate flushed from the aggregator of shard `shard` of the map of `generation`.
    fn from_aggregate(
        a: Aggregate<Pending>,
        shard: usize,
        generation: u64,
        expected: &[Arc<str>],
    ) -> Ready {
        let deadline = Instant::from_std(a.deadline);
        Ready {
            record: a.record,
            entries: a.entries,
            deadline,
            shard: Some((shard, generation)),
            expected: expected.get(shard).cloned(),
        }
    }
}

impl Ready {
    /// An aggregate of records that share one hash key, sent before any shard map is known:
    /// Kinesis routes it by that key, the same as each of its records, so no shard is predicted.
    fn unmapped(a: Aggregate<Pending>, now: Instant) -> Ready {
        Ready {
            record: a.record,
            entries: a.entries,
            deadline: now,
            shard: None,
            expected: None,
        }
    }
}

/// User records of one failed Kinesis record, waiting out their backoff before they go back
/// through aggregation (with whatever else is bound for their shards by then).
struct Retry {
    at: Instant,
    seq: u64,
    records: Vec<Pending>,
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

struct StreamState {
    name: Arc<str>,
    map: Option<ShardMap>,
    refreshing: bool,
    /// A refresh was asked for while one was under way: its answer may predate the change
    /// the caller knows of, so ask again once it is in.
    refresh_again: bool,
    next_refresh: Instant,
    aggregators: Vec<Aggregator<Pending>>,
    /// No aggregator's earliest deadline is before this (it may be earlier than the true
    /// minimum after a flush, never later): the aggregators are scanned only once it passes,
    /// rather than on every wake-up, which with many shards would cost more than the records.
    aggregators_due: Option<Instant>,
    /// Records that arrived before the first shard map, with their deadlines. They wait for the
    /// map (see `unmapped_wait`); those that cannot wait go out aggregated by hash key.
    unmapped: VecDeque<(Pending, Instant)>,
    /// ListShards failed at least once for this stream (so waiting for a map may be long).
    map_failed: bool,
    /// ListShards failed with an error that cannot heal (the stream is missing, access denied):
    /// records do not wait for a map that will not come; PutRecords will say why they fail.
    map_refused: bool,
    /// A flush asked for the records waiting for the map to be sent.
    flush_unmapped: bool,
    ready: VecDeque<Ready>,
    ready_bytes: usize,
    retrying: std::collections::BinaryHeap<Retry>,
    /// How many of the records at the front of `ready` a flush asked to send now.
    forced: usize,
    /// One rate limiter per shard of the current map.
    limiters: Vec<ShardLimiter>,
    /// The current map's shard ids, by index.
    shard_ids: Vec<Arc<str>>,
    /// Per-key ordering: shards (by index in the current map) with a record in flight or held
    /// for an in-order retry; nothing else goes to them meanwhile.
    busy: Vec<bool>,
    /// Per-key ordering: failed Kinesis records waiting out their backoff, to be sent again as
    /// they are, ahead of anything newer for their shard.
    ordered_retries: Vec<(Instant, Ready)>,
    /// Aggregates Kinesis put on another shard than predicted, waiting for a shard map that
    /// knows that shard's range to tell which of their user records consumers will keep.
    unverified: Vec<Misrouted>,
    /// When a record held back by its shard's limiter can go, if any is.
    limited_until: Option<Instant>,
    /// Shards of the current map that Kinesis showed to be out of date (it put a record of
    /// theirs on another shard): their aggregates are held until the next listing is in.
    stale: Vec<bool>,
}

impl StreamState {
    /// Whether a listing is needed to settle something (records waiting for the first map,
    /// misrouted aggregates, aggregates held for stale shards), so that it is fetched even while
    /// closing.
    fn needs_map(&self) -> bool {
        !self.unmapped.is_empty() || !self.unverified.is_empty() || self.stale.iter().any(|&h| h)
    }
}

/// Waiters of `flush_and_wait`: records are counted per epoch; a new epoch starts at each
/// waiter, which is woken when every epoch up to its own has no records left.
struct Epochs {
    base: u64,
    counts: VecDeque<u64>,
    waiters: Vec<(u64, oneshot::Sender<()>)>,
}

impl Epochs {
    fn new() -> Self {
        Epochs {
            base: 0,
            counts: VecDeque::from([0]),
            waiters: Vec::new(),
        }
    }

    fn current(&self) -> u64 {
        self.base + self.counts.len() as u64 - 1
    }

    fn add(&mut self) -> u64 {
        *self.counts.back_mut().expect("never empty") += 1;
        self.current()
    }

    fn resolve(&mut self, epoch: u64) {
        self.resolve_many(epoch, 1);
    }

    fn resolve_many(&mut self, epoch: u64, n: u64) {
        if let Some(c) = self.counts.get_mut((epoch - self.base) as usize) {
            *c -= n;
        }
        self.settle();
    }

    fn wait(&mut self, tx: oneshot::Sender<()>) {
        let epoch = self.current();
        self.counts.push_back(0);
        self.waiters.push((epoch, tx));
        self.settle();
    }

    fn settle(&mut self) {
        while self.counts.len() > 1 && self.counts[0] == 0 {
            self.counts.pop_front();
            self.base += 1;
        }
        let base = self.base;
        let front_clear = self.counts[0] == 0;
        // Waiter e is done when every epoch <= e is clear: either popped (e < base), or e is
        // the front epoch and it is clear.
        let waiters = std::mem::take(&mut self.waiters);
        for (e, tx) in waiters {
            if e < base || (e == base && front_clear) {
                let _ = tx.send(());
            } else {
                self.waiters.push((e, tx));
            }
        }
    }
}

/// What a PutRecords task hands back to the engine: the Kinesis records that were not put (with
/// the attempt recorded), and how many records of each epoch it resolved.
struct PutDone {
    stream: usize,
    failed: Vec<NotPut>,
    resolved: Vec<(u64, u64)>,
    outcomes: Vec<ShardOutcome>,
    misrouted: Vec<Misrouted>,
    /// Shards (index, map generation) that Kinesis put something of on another shard than
    /// predicted: the map is stale there.
    stale: Vec<(usize, u64)>,
    finished: Instant,
}

/// An aggregate that was put, but on another shard than the one it was built for.
struct Misrouted {
    ready: Ready,
    shard_id: Arc<str>,
    sequence_number: Arc<str>,
    started: Instant,
    duration: Duration,
}

/// For the rate limiters: the (shard index, map generation) an entry was sent to, its size, and
/// whether the shard accepted it (`Some(true)`), throttled it (`Some(false)`) or neither (a 500,
/// a broken connection: nothing learnt about the shard's rate).
type ShardOutcome = ((usize, u64), usize, Option<bool>);

/// What a PutRecords task found.
struct Settled {
    failed: Vec<NotPut>,
    resolved: Vec<(u64, u64)>,
    outcomes: Vec<ShardOutcome>,
    misrouted: Vec<Misrouted>,
    stale: Vec<(usize, u64)>,
}

/// A Kinesis record that was not put, with the error (shared by its user records' attempts).
type NotPut = (Ready, Arc<AttemptError>);

/// Splits a PutRecords outcome: resolves the user records that were put, right here in the
/// task (building receipts and waking futures is most of the per-record work after the call,
/// and doing it here keeps it off the engine task), and returns the rest.
fn settle_put(
    budget: &Budget,
    batch: Vec<Ready>,
    started: Instant,
    result: Result<Vec<EntryResult>, SinkError>,
) -> Settled {
    let finished = Instant::now();
    let duration = finished - started;
    // A call that failed as a whole fails every entry with one shared error.
    let whole_call = |e: AttemptError| {
        let e = Arc::new(e);
        (0..batch.len()).map(|_| Err(e.clone())).collect::<Vec<_>>()
    };
    let results: Vec<Result<(String, String), Arc<AttemptError>>> = match result {
        Ok(results) if results.len() == batch.len() => results
            .into_iter()
            .map(|r| match r {
                EntryResult::Put {
                    shard_id,
                    sequence_number,
                } => Ok((shard_id, sequence_number)),
                // One error per failed Kinesis record, shared by its user records.
                EntryResult::Failed { code, message } => {
                    Err(Arc::new(AttemptError::new(code, message)))
                }
            })
            .collect(),
        Ok(results) => whole_call(AttemptError::new(
            "MalformedResponse",
            format!("{} results for {} entries", results.len(), batch.len()),
        )),
        Err(e) => whole_call(e.to_attempt_error()),
    };
    let mut failed = Vec::new();
    let mut resolved: Vec<(u64, u64)> = Vec::new();
    // Room goes back once per call rather than per record: the counters are shared with every
    // sending thread.
    let (mut put_records, mut put_bytes) = (0, 0);
    let mut outcomes = Vec::new();
    let mut misrouted = Vec::new();
    let mut stale = Vec::new();
    for (mut ready, result) in batch.into_iter().zip(results) {
        if let Some(shard) = ready.shard {
            let accepted = match &result {
                Ok(_) => Some(true),
                Err(e) if classify(&e.code) == ErrorClass::Throttled => Some(false),
                Err(_) => None,
            };
            outcomes.push((shard, ready.record.size(), accepted));
        }
        match result {
            Ok((shard_id, sequence_number)) => {
                let aggregated = ready.record.aggregated;
                let (shard_id, sequence_number): (Arc<str>, Arc<str>) =
                    (shard_id.into(), sequence_number.into());
                if ready.expected.as_ref().is_some_and(|e| *e != shard_id) {
                    stale.extend(ready.shard);
                    // A plain record is where its own key put it; an aggregate went where its
                    // first record's key put it, and the others may be outside that shard.
                    if aggregated {
                        misrouted.push(Misrouted {
                            ready,
                            shard_id,
                            sequence_number,
                            started,
                            duration,
                        });
                        continue;
                    }
                }
                let put = Arc::new(Put {
                    shard_id,
                    sequence_number,
                    aggregated,
                    started,
                    duration,
                });
                for (n, pending) in ready.entries.into_iter().enumerate() {
                    let done = pending.resolve(Resolution::Put {
                        put: &put,
                        sub_sequence_number: n as u32,
                    });
                    put_records += 1;
                    put_bytes += done.charge;
                    match resolved.last_mut() {
                        Some((epoch, count)) if *epoch == done.epoch => *count += 1,
                        _ => resolved.push((done.epoch, 1)),
                    }
                }
            }
            Err(error) => {
                for pending in &mut ready.entries {
                    pending.record_failure(started, duration, error.clone());
                }
                failed.push((ready, error));
            }
        }
    }
    budget.release(put_records, put_bytes);
    Settled {
        failed,
        resolved,
        outcomes,
        misrouted,
        stale,
    }
}

struct RefreshDone {
    stream: usize,
    generation: u64,
    result: Result<Vec<Shard>, SinkError>,
}

pub(crate) struct Engine<S> {
    /// Where the retry grid starts (see [`RETRY_GRID`]).
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
}

/// Resolves a record that was not put: its future gets the record back with `kind`; its room in
/// the budget and its flush epoch are given back.
fn fail(pending: Pending, kind: PutErrorKind, epochs: &mut Epochs, budget: &Budget) {
    let done = pending.resolve(Resolution::Failed(kind));
    budget.release(1, done.charge);
    epochs.resolve(done.epoch);
}

impl<S: Sink> Engine<S> {
    pub(crate) fn new(config: Config, sink: S, budget: Arc<Budget>) -> Self {
        Engine {
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
            origin: Instant::now(),
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut buf = Vec::with_capacity(RECV_BATCH);
        let mut open = true;
        loop {
            let now = Instant::now();
            self.tick(now);
            if (self.closing || !open) && self.is_idle() {
                break;
            }
            let wake = self.next_wake(now);
            tokio::select! {
                biased;
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => match done {
                    Ok(done) => self.on_put(done),
                    // A panicking sink lost its batch; those futures resolve as Stopped.
                    Err(e) => tracing::error!(error = %e, "a PutRecords task failed"),
                },
                Some(done) = self.refreshes.join_next(), if !self.refreshes.is_empty() => {
                    if let Ok(done) = done {
                        self.on_refresh(done);
                    }
                }
                n = rx.recv_many(&mut buf, RECV_BATCH), if open => {
                    if n == 0 {
                        // Every handle is gone: send what is held, then stop.
                        open = false;
                        self.closing = true;
                    }
                    let now = Instant::now();
                    for msg in buf.drain(..) {
                        self.on_msg(msg, now);
                    }
                }
                () = sleep_until(wake.unwrap_or(now + Duration::from_secs(3600))), if wake.is_some() => {}
            }
        }
        tracing::debug!("producer engine stopped");
        for tx in self.shutdown_waiters.drain(..) {
            let _ = tx.send(());
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
                    && s.aggregators.iter().all(Aggregator::is_empty)
            })
    }

    fn add_stream(&mut self, id: usize, name: Arc<str>, now: Instant) {
        let i = self.streams.len();
        self.streams.push(StreamState {
            name,
            map: None,
            refreshing: false,
            refresh_again: false,
            next_refresh: now,
            aggregators: Vec::new(),
            aggregators_due: None,
            unmapped: VecDeque::new(),
            map_failed: false,
            map_refused: false,
            flush_unmapped: false,
            ready: VecDeque::new(),
            ready_bytes: 0,
            retrying: std::collections::BinaryHeap::new(),
            forced: 0,
            limiters: Vec::new(),
            limited_until: None,
            shard_ids: Vec::new(),
            unverified: Vec::new(),
            busy: Vec::new(),
            ordered_retries: Vec::new(),
            stale: Vec::new(),
        });
        self.by_id.insert(id, i);
    }

    fn on_msg(&mut self, msg: Msg, now: Instant) {
        match msg {
            Msg::NewStream { id, name } => self.add_stream(id, name, now),
            Msg::Record {
                stream,
                mut pending,
            } => {
                let Some(&i) = self.by_id.get(&stream) else {
                    // Cannot happen: a stream's id is announced before its first record.
                    tracing::error!(stream, "record for an unknown stream id");
                    return;
                };
                pending.arrive(now, self.epochs.add());
                let deadline = now + self.config.record_max_buffered_time;
                self.route(i, pending, deadline);
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

    /// Puts a record into its predicted shard's aggregator, or holds it until the map is known.
    fn route(&mut self, i: usize, pending: Pending, deadline: Instant) {
        let s = &mut self.streams[i];
        let Some(map) = &s.map else {
            s.unmapped.push_back((pending, deadline));
            return;
        };
        match map.lookup(pending.record().hash_key()) {
            Some(shard) => match s.aggregators[shard].push(pending, deadline.into_std()) {
                Ok(full) => {
                    s.aggregators_due =
                        Some(s.aggregators_due.map_or(deadline, |d| d.min(deadline)));
                    let generation = map.generation();
                    if let Some(full) = full {
                        push_ready(
                            s,
                            Ready::from_aggregate(full, shard, generation, &s.shard_ids),
                        );
                    }
                    // Nothing more can join a full aggregate: it need not wait for its deadline.
                    if s.aggregators[shard].is_full()
                        && let Some(full) = s.aggregators[shard].flush()
                    {
                        push_ready(
                            s,
                            Ready::from_aggregate(full, shard, generation, &s.shard_ids),
                        );
                    }
                }
                Err(rejected) => fail(
                    rejected.entry,
                    PutErrorKind::InvalidRecord(rejected.error),
                    &mut self.epochs,
                    &self.budget,
                ),
            },
            // A gap in a map taken mid-resharding: let Kinesis route it.
            None => self.send_plain(i, pending, deadline),
        }
    }

    /// Queues a record on its own, unaggregated, routed by its own keys.
    fn send_plain(&mut self, i: usize, pending: Pending, deadline: Instant) {
        let record = pending.record();
        let limit = self.config.aggregation.max_record_size();
        if record.size() > limit {
            let error = RecordError::RecordTooLarge {
                size: record.size(),
                data_len: record.data().len(),
                key_len: record.partition_key().len(),
                limit,
            };
            return fail(
                pending,
                PutErrorKind::InvalidRecord(error),
                &mut self.epochs,
                &self.budget,
            );
        }
        let kinesis = encode(std::slice::from_ref(record)).expect("one record encodes");
        let s = &mut self.streams[i];
        let shard = s
            .map
            .as_ref()
            .and_then(|m| Some((m.lookup(record.hash_key())?, m.generation())));
        let expected = shard.and_then(|(k, _)| s.shard_ids.get(k).cloned());
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

    /// Sends the records waiting for stream `i`'s first map that cannot wait any longer: all of
    /// them when ListShards refused (the stream is missing or access denied: PutRecords will
    /// say so), or when a flush, shutdown or a buffer at least half full asks for them after
    /// ListShards failed at least once; otherwise those whose wait (`unmapped_wait`) is over.
    /// They go out aggregated by hash key: records of one hash key always land on one shard,
    /// whatever the map, so every consumer reads such an aggregate, and a cold start with a
    /// slow or throttled ListShards costs latency, not one PUT unit per user record.
    ///
    /// With per-key ordering, records wait for the map until their TTL instead (two of one key
    /// in different calls could land in either order), and expire then.
    fn release_unmapped(&mut self, i: usize, now: Instant) {
        let ttl = self.config.record_ttl;
        if self.config.per_key_ordering {
            let no_map = Arc::new(AttemptError::new(
                "NoShardMap",
                "no shard map yet: ListShards has not answered",
            ));
            while let Some((pending, _)) = self.streams[i]
                .unmapped
                .pop_front_if(|(p, _)| p.arrival() + ttl <= now)
            {
                let kind = PutErrorKind::Expired {
                    ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                    last_error: no_map.clone(),
                };
                fail(pending, kind, &mut self.epochs, &self.budget);
            }
            return;
        }
        let (records, bytes) = self.budget.used();
        let (max_records, max_bytes) = self.budget.limits();
        let pressed = records * 2 >= max_records || bytes * 2 >= max_bytes;
        let s = &mut self.streams[i];
        let asked = self.closing || s.flush_unmapped || pressed;
        let all = s.map_refused || (asked && s.map_failed);
        let wait = unmapped_wait(&self.config);
        let mut out = Vec::new();
        while let Some(entry) = s
            .unmapped
            .pop_front_if(|(p, _)| all || p.arrival() + wait <= now)
        {
            out.push(entry);
        }
        if s.unmapped.is_empty() {
            s.flush_unmapped = false;
        }
        if out.is_empty() {
            return;
        }
        tracing::debug!(stream = %s.name, records = out.len(), "no shard map yet: sending records aggregated by hash key");
        // Grouped by hash key (a stable sort keeps each key's order).
        let mut out: Vec<Pending> = out.into_iter().map(|(pending, _)| pending).collect();
        out.sort_by_key(|p| p.record().hash_key());
        let mut aggregator: Aggregator<Pending> = Aggregator::new(self.config.aggregation);
        let mut key = None;
        for pending in out {
            let k = pending.record().hash_key();
            if key.replace(k).is_some_and(|last| last != k)
                && let Some(done) = aggregator.flush()
            {
                push_ready(&mut self.streams[i], Ready::unmapped(done, now));
            }
            match aggregator.push(pending, now.into_std()) {
                Ok(Some(full)) => push_ready(&mut self.streams[i], Ready::unmapped(full, now)),
                Ok(None) => {}
                Err(rejected) => fail(
                    rejected.entry,
                    PutErrorKind::InvalidRecord(rejected.error),
                    &mut self.epochs,
                    &self.budget,
                ),
            }
        }
        if let Some(last) = aggregator.flush() {
            push_ready(&mut self.streams[i], Ready::unmapped(last, now));
        }
        let s = &mut self.streams[i];
        s.forced = s.ready.len();
    }

    /// Does everything that is due: refreshes, deadlines, retries, and sends.
    fn tick(&mut self, now: Instant) {
        for i in 0..self.streams.len() {
            let s = &mut self.streams[i];
            // While closing, maps are fetched only to settle misrouted aggregates.
            if !s.refreshing && now >= s.next_refresh && (!self.closing || s.needs_map()) {
                s.refreshing = true;
                self.generation += 1;
                let (sink, name, generation) = (self.sink.clone(), s.name.clone(), self.generation);
                let limit = self.config.request_timeout;
                self.refreshes.spawn(async move {
                    let result = match timeout(limit + TIMEOUT_GRACE, sink.list_shards(&name)).await
                    {
                        Ok(r) => r,
                        Err(_) => Err(timed_out("ListShards", limit)),
                    };
                    RefreshDone {
                        stream: i,
                        generation,
                        result,
                    }
                });
            }
            let closing = self.closing;
            if !self.streams[i].unmapped.is_empty() {
                self.release_unmapped(i, now);
            }
            // In-order retries whose backoff is over go to the front of their shard's queue.
            let s = &mut self.streams[i];
            let generation = s.map.as_ref().map_or(0, ShardMap::generation);
            let mut k = 0;
            while k < s.ordered_retries.len() {
                if s.ordered_retries[k].0 <= now {
                    let (_, r) = s.ordered_retries.swap_remove(k);
                    if let Some((shard, g)) = r.shard
                        && g == generation
                        && let Some(b) = s.busy.get_mut(shard)
                    {
                        *b = false;
                    }
                    s.ready_bytes += r.record.size();
                    s.ready.push_front(r);
                    s.forced += 1;
                } else {
                    k += 1;
                }
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
        let s = &self.streams[i];
        // While a shard is over its rate, the next call waits for the time its limiter gave
        // (at least LIMITED_WAIT): each finished call would otherwise start another with the
        // few tokens accrued since, thousands of calls of a few records each.
        let limited = s.limited_until.is_some_and(|t| t > now);
        !s.ready.is_empty()
            && (s.forced > 0
                || !limited
                    && (s.ready.len() >= self.config.collection_max_count
                        || s.ready_bytes >= self.config.collection_max_size
                        || s.ready.iter().any(|r| r.deadline <= now)))
    }

    /// Sends one PutRecords call's worth from stream `i`; false if rate limits held back all.
    fn send_batch(&mut self, i: usize, now: Instant) -> bool {
        let (max_count, max_size) = (
            self.config.collection_max_count,
            self.config.collection_max_size,
        );
        let ordered = self.config.per_key_ordering;
        let s = &mut self.streams[i];
        let generation = s.map.as_ref().map_or(0, ShardMap::generation);
        let mut bytes = 0;
        let mut held_shards = if ordered {
            vec![false; s.busy.len()]
        } else {
            Vec::new()
        };
        s.limited_until = None;
        // Shards found over their rate in this scan: their other records are passed over
        // without asking the limiter again, and once every shard is, the scan stops. Records
        // passed over stay where they are (only those taken are removed): popping and pushing
        // back a deep queue behind throttled shards at every wake-up was most of the engine's
        // CPU (found by `kpl bench`: 23 CPU seconds for 200,000 unaggregated records).
        let mut limited = vec![false; s.limiters.len()];
        let mut limited_count = 0;
        let mut at_index = 0;
        let mut batch = Vec::new();
        while let Some(next) = s.ready.get(at_index) {
            let size = next.record.size();
            let shard = next.shard.filter(|(_, g)| *g == generation).map(|(k, _)| k);
            // The first record always goes, even one larger than CollectionMaxSize (a stream
            // with a raised record limit): the call must carry it somehow.
            if batch.len() >= max_count || (!batch.is_empty() && bytes + size > max_size) {
                break;
            }
            // In order, a shard takes one record at a time: PutRecords does not order its
            // entries, so two of one shard in flight could land in either order.
            if ordered
                && let Some(k) = shard
                && (s.busy.get(k).copied().unwrap_or(false)
                    || held_shards.get(k).copied().unwrap_or(false))
            {
                at_index += 1;
                continue;
            }
            // A shard the map was shown to be stale for holds its aggregates until the new map
            // (plain records route themselves; in order, nothing of it may pass what is held).
            if let Some(k) = shard
                && s.stale.get(k).copied().unwrap_or(false)
                && (ordered || next.record.aggregated)
            {
                if let Some(h) = held_shards.get_mut(k) {
                    *h = true;
                }
                at_index += 1;
                continue;
            }
            // Records of a shard over its rate wait; the others go past them.
            if let Some(k) = shard
                && limited.get(k).copied().unwrap_or(false)
            {
                at_index += 1;
                continue;
            }
            if let Some(k) = shard
                && let Some(limiter) = s.limiters.get_mut(k)
                && !limiter.try_take(size, now.into_std())
            {
                // Not before LIMITED_WAIT: waking for each record's token made calls of one or
                // two records and a scan of the queue per token; the bucket keeps what accrues
                // meanwhile (up to its burst), so the rate is not lowered, only batched.
                let at = Instant::from_std(limiter.ready_at(size, now.into_std()))
                    .max(now + LIMITED_WAIT);
                s.limited_until = Some(s.limited_until.map_or(at, |u| u.min(at)));
                // In order, nothing later of this shard may pass it in this scan.
                if let Some(h) = held_shards.get_mut(k) {
                    *h = true;
                }
                at_index += 1;
                limited[k] = true;
                limited_count += 1;
                if limited_count == limited.len() {
                    break;
                }
                continue;
            }
            if ordered
                && let Some(k) = shard
                && let Some(b) = s.busy.get_mut(k)
            {
                *b = true;
            }
            bytes += size;
            // In order, the queue keeps its order: VecDeque::remove moves the shorter side.
            // Otherwise a record taken from deep in a long queue (a quiet shard's, behind
            // throttled ones) is replaced by the last one, in O(1): removing it moved half the
            // queue, per record. PutRecords keeps no order among entries anyway.
            // Near either end (the common case: the oldest records go first), remove keeps the
            // queue's order at the cost of a few moves.
            let near_end = at_index.min(s.ready.len() - at_index) <= 32;
            let taken = if ordered || near_end {
                s.ready.remove(at_index)
            } else {
                s.ready.swap_remove_back(at_index)
            };
            batch.push(taken.expect("an index just read"));
        }
        if batch.is_empty() {
            return false;
        }
        s.ready_bytes -= bytes;
        s.forced = s.forced.saturating_sub(batch.len());
        let entries: Vec<PutEntry> = batch
            .iter()
            .map(|r| PutEntry {
                partition_key: r.record.partition_key.clone(),
                explicit_hash_key: r.record.explicit_hash_key,
                data: r.record.data.clone(),
            })
            .collect();
        tracing::debug!(stream = %s.name, entries = entries.len(), bytes, "PutRecords");
        let budget = self.budget.clone();
        let (sink, name, limit) = (
            self.sink.clone(),
            s.name.clone(),
            self.config.request_timeout,
        );
        self.inflight.spawn(async move {
            let result =
                match timeout(limit + TIMEOUT_GRACE, sink.put_records(&name, entries)).await {
                    Ok(r) => r,
                    Err(_) => Err(timed_out("PutRecords", limit)),
                };
            let Settled {
                failed,
                resolved,
                outcomes,
                misrouted,
                stale,
            } = settle_put(&budget, batch, now, result);
            PutDone {
                stream: i,
                failed,
                resolved,
                outcomes,
                misrouted,
                stale,
                finished: Instant::now(),
            }
        });
        true
    }

    fn on_put(&mut self, done: PutDone) {
        for (epoch, count) in done.resolved {
            self.epochs.resolve_many(epoch, count);
        }
        let s = &mut self.streams[done.stream];
        if !done.stale.is_empty() {
            tracing::info!(stream = %s.name, misrouted = done.misrouted.len(), "records landed on unexpected shards; refreshing the shard map");
            request_refresh(s, done.finished);
        }
        let generation = s.map.as_ref().map_or(0, ShardMap::generation);
        // Until the new map is in, what is aggregated for these shards waits: packed for the
        // old ranges, it would straddle the new shards, and KCL consumers drop such aggregates.
        for (k, g) in done.stale {
            if g == generation
                && let Some(h) = s.stale.get_mut(k)
            {
                *h = true;
            }
        }
        s.unverified.extend(done.misrouted);
        let generation = s.map.as_ref().map_or(0, ShardMap::generation);
        for ((k, g), _, _) in &done.outcomes {
            if *g == generation
                && let Some(b) = s.busy.get_mut(*k)
            {
                *b = false;
            }
        }
        // One feedback per shard for the whole answer. Feedback about the shards of an older
        // map does not apply to the new one.
        let mut feedback: Vec<(usize, Feedback)> = Vec::new();
        for ((k, g), size, accepted) in done.outcomes {
            let Some(accepted) = accepted.filter(|_| g == generation) else {
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
            if let Some(limiter) = s.limiters.get_mut(k) {
                limiter.observe(f, done.finished.into_std());
                let limits = aggregation_limits(&self.config, limiter);
                if s.aggregators[k].limits() != limits
                    && let Some(held) = s.aggregators[k].set_limits(limits)
                {
                    push_ready_parts(
                        &mut s.ready,
                        &mut s.ready_bytes,
                        Ready::from_aggregate(held, k, generation, &s.shard_ids),
                    );
                }
            }
        }
        let stream = self.streams[done.stream].name.clone();
        for (ready, error) in done.failed {
            tracing::debug!(stream = %stream, code = %error.code, message = %error.message, "entry not put");
            if self.config.per_key_ordering {
                self.retry_in_order(done.stream, ready, done.finished, &error);
            } else {
                self.retry_or_fail(done.stream, ready.entries, done.finished, &error);
            }
        }
    }

    /// Decides the fate of the user records of a Kinesis record that was not put, by the one
    /// classification of errors (`error::classify`): an error that cannot heal fails them at
    /// once (as does throttling with `FailIfThrottled`); otherwise they are to be tried again
    /// after a jittered, exponentially growing backoff, except those the backoff would take past
    /// their own RecordTtl, which fail as expired. Returns the records to try again, in order,
    /// and when; `None` when none are left.
    fn triage(
        &mut self,
        entries: Vec<Pending>,
        now: Instant,
        error: &Arc<AttemptError>,
    ) -> Option<(Vec<Pending>, Instant)> {
        let give_up = match classify(&error.code) {
            ErrorClass::NonRetryable => Some(PutErrorKind::Rejected {
                code: error.code.clone(),
                message: error.message.clone(),
            }),
            ErrorClass::Throttled if self.config.fail_if_throttled => {
                Some(PutErrorKind::Throttled {
                    code: error.code.clone(),
                    message: error.message.clone(),
                })
            }
            _ => None,
        };
        if let Some(kind) = give_up {
            for pending in entries {
                fail(pending, kind.clone(), &mut self.epochs, &self.budget);
            }
            return None;
        }
        let attempts = entries.first().map_or(1, Pending::attempts_made);
        let at = on_grid(now + backoff(attempts, classify(&error.code)), self.origin);
        let ttl = self.config.record_ttl;
        let mut keep = Vec::with_capacity(entries.len());
        for pending in entries {
            if at <= pending.arrival() + ttl {
                keep.push(pending);
            } else {
                let kind = PutErrorKind::Expired {
                    ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                    last_error: error.clone(),
                };
                fail(pending, kind, &mut self.epochs, &self.budget);
            }
        }
        (!keep.is_empty()).then_some((keep, at))
    }

    /// Retries that go back through aggregation (with whatever else is bound for their shards
    /// by then) once their backoff is over.
    fn retry_or_fail(
        &mut self,
        i: usize,
        entries: Vec<Pending>,
        now: Instant,
        error: &Arc<AttemptError>,
    ) {
        if let Some((records, at)) = self.triage(entries, now, error) {
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
    fn retry_in_order(
        &mut self,
        i: usize,
        mut ready: Ready,
        now: Instant,
        error: &Arc<AttemptError>,
    ) {
        let before = ready.entries.len();
        let shard = ready.shard;
        let entries = std::mem::take(&mut ready.entries);
        let Some((keep, at)) = self.triage(entries, now, error) else {
            // Nothing left to send: the shard is free for what comes next.
            self.free_shard(i, shard);
            return;
        };
        if keep.len() < before {
            // A subset of an aggregate, in the same order, is smaller than the aggregate.
            let records: Vec<UserRecord> = keep.iter().map(|p| p.record().clone()).collect();
            ready.record = encode(&records).expect("at least one record");
        }
        ready.entries = keep;
        let s = &mut self.streams[i];
        let generation = s.map.as_ref().map_or(0, ShardMap::generation);
        // The shard stays busy until the retry is back in the queue.
        if let Some((k, g)) = ready.shard
            && g == generation
            && let Some(b) = s.busy.get_mut(k)
        {
            *b = true;
        }
        s.ordered_retries.push((at, ready));
    }

    fn free_shard(&mut self, i: usize, shard: Option<(usize, u64)>) {
        let s = &mut self.streams[i];
        let generation = s.map.as_ref().map_or(0, ShardMap::generation);
        if let Some((k, g)) = shard
            && g == generation
            && let Some(b) = s.busy.get_mut(k)
        {
            *b = false;
        }
    }

    fn on_refresh(&mut self, done: RefreshDone) {
        let now = Instant::now();
        let interval = self.config.shard_map_refresh_interval;
        let s = &mut self.streams[done.stream];
        s.refreshing = false;
        let again = std::mem::take(&mut s.refresh_again);
        if !again {
            // A listing is in (or ListShards failed): held aggregates go, packed for whatever
            // map is installed now; one that still straddles is caught by `verify`.
            s.stale.iter_mut().for_each(|h| *h = false);
        }
        match done.result {
            Ok(shards) => {
                s.map_refused = false;
                s.next_refresh = if again { now } else { now + interval };
                let fresh = ShardMap::new(shards, done.generation);
                let newer = s
                    .map
                    .as_ref()
                    .is_none_or(|m| m.generation() < done.generation);
                let changed = s.map.as_ref().is_none_or(|m| m.shards() != fresh.shards());
                if newer && changed {
                    self.install(done.stream, fresh.clone(), now);
                }
                if !self.streams[done.stream].unverified.is_empty() {
                    self.verify(done.stream, &fresh, now);
                }
            }
            Err(e) => {
                tracing::warn!(stream = %s.name, error = %e, "could not list shards; retrying");
                s.map_failed = true;
                s.map_refused = classify(&e.code) == ErrorClass::NonRetryable;
                s.next_refresh = now + REFRESH_RETRY;
            }
        }
    }

    /// Makes `map` stream `i`'s shard map.
    fn install(&mut self, i: usize, map: ShardMap, now: Instant) {
        let s = &mut self.streams[i];
        tracing::info!(stream = %s.name, shards = map.len(), generation = map.generation(), "shard map");
        // Nothing not yet sent keeps its old packing: an aggregate built for an old shard may
        // straddle the new ones, and would reach consumers that drop what lies outside the
        // shard that takes it. Its user records are packed again for the new map. (Aggregates
        // already in flight are checked against the shard that takes them: see `verify`.)
        let mut repack: Vec<(Vec<Pending>, Instant)> = Vec::new();
        for agg in &mut s.aggregators {
            if let Some(a) = agg.flush() {
                repack.push((a.entries, Instant::from_std(a.deadline)));
            }
        }
        s.aggregators_due = None;
        let limits = self.config.aggregation;
        s.aggregators = (0..map.len()).map(|_| Aggregator::new(limits)).collect();
        let rate = self.config.rate_limit;
        s.limiters = (0..map.len())
            .map(|_| ShardLimiter::new(rate, now.into_std()))
            .collect();
        s.shard_ids = map
            .shards()
            .iter()
            .map(|sh| Arc::from(sh.shard_id.as_str()))
            .collect();
        s.busy = vec![false; map.len()];
        s.stale = vec![false; map.len()];
        let queued = std::mem::take(&mut s.ready);
        s.ready_bytes = 0;
        s.forced = 0;
        for mut r in queued {
            if r.record.aggregated {
                repack.push((r.entries, r.deadline));
            } else {
                // A plain record goes where its own key sends it: only its label changes.
                let key = r.entries[0].record().hash_key();
                r.shard = map.lookup(key).map(|k| (k, map.generation()));
                r.expected = r.shard.and_then(|(k, _)| s.shard_ids.get(k).cloned());
                push_ready(s, r);
            }
        }
        s.map = Some(map);
        for (entries, deadline) in repack {
            for pending in entries {
                self.route(i, pending, deadline);
            }
        }
        let waiting = std::mem::take(&mut self.streams[i].unmapped);
        for (pending, deadline) in waiting {
            self.route(i, pending, deadline);
        }
        let s = &mut self.streams[i];
        if std::mem::take(&mut s.flush_unmapped) {
            // A flush asked for while they waited for this map: they go now.
            flush_aggregators(s);
            s.forced = s.ready.len();
        }
    }

    /// Settles aggregates that landed on another shard than predicted, now that `map` (a fresh
    /// listing) may know that shard's range. The KCL drops a **whole** aggregate when any one of
    /// its user records has a hash key outside the range of the shard it is read from
    /// (`AggregatorUtil.deaggregate`, amazon-kinesis-client): so an aggregate that fits the shard
    /// that took it is delivered, all of it, and one that does not is not delivered at all: all
    /// its user records go back through aggregation, to the shards they belong to now. An
    /// aggregate whose shard the listing does not know yet waits for the next one.
    fn verify(&mut self, i: usize, map: &ShardMap, now: Instant) {
        let waiting = std::mem::take(&mut self.streams[i].unverified);
        let mut resend = Vec::new();
        for m in waiting {
            let Some((start, end)) = map.range_of(&m.shard_id) else {
                self.streams[i].unverified.push(m);
                continue;
            };
            let outside = m.ready.entries.iter().find_map(|p| {
                let key = p.record().hash_key();
                (key < start || key > end).then_some(key)
            });
            let Some(outside) = outside else {
                let put = Arc::new(Put {
                    shard_id: m.shard_id,
                    sequence_number: m.sequence_number,
                    aggregated: true,
                    started: m.started,
                    duration: m.duration,
                });
                for (n, pending) in m.ready.entries.into_iter().enumerate() {
                    let done = pending.resolve(Resolution::Put {
                        put: &put,
                        sub_sequence_number: n as u32,
                    });
                    self.budget.release(1, done.charge);
                    self.epochs.resolve(done.epoch);
                }
                continue;
            };
            let message = format!(
                "put on {} in an aggregate holding hash key {outside}, outside that shard's range: \
                 KCL consumers drop such an aggregate whole, so all its records are sent again",
                m.shard_id
            );
            let error = Arc::new(AttemptError::new("WrongShard", message));
            for mut pending in m.ready.entries {
                pending.record_failure(m.started, m.duration, error.clone());
                resend.push(pending);
            }
        }
        if !resend.is_empty() {
            tracing::info!(
                records = resend.len(),
                "re-sending the records of aggregates that straddled the shard that took them"
            );
        }
        for pending in resend {
            self.route(i, pending, now);
        }
        let s = &mut self.streams[i];
        if !s.unverified.is_empty() {
            // The listing did not know the shard that took them yet: look again soon.
            s.next_refresh = s.next_refresh.min(now + REFRESH_RETRY);
        }
    }

    /// The earliest moment something becomes due, if anything can.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        let can_send = self.inflight.len() < self.config.max_connections;
        for s in &self.streams {
            if !s.refreshing && (!self.closing || s.needs_map()) {
                at(s.next_refresh);
            }
            if let Some((p, _)) = s.unmapped.front() {
                let wait = if self.config.per_key_ordering {
                    self.config.record_ttl
                } else {
                    unmapped_wait(&self.config)
                };
                at(p.arrival() + wait);
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
            // While a shard is over its rate nothing is sent before `limited_until` (see
            // `should_send`), so the deadlines of the queue need no walk: with hundreds of
            // thousands of records queued behind throttled shards, that walk at every wake-up
            // was most of the engine's CPU (found by `kpl bench`).
            let limited = s.limited_until.is_some_and(|t| t > now);
            if can_send {
                // A deadline already past was acted on by `tick`: a record still here is held
                // back (its shard over its rate, or busy in order), and what frees it (a call
                // finishing, the limiter's time, a retry's time) wakes the engine instead.
                // Counting it would spin.
                if !limited {
                    for r in &s.ready {
                        if r.deadline > now {
                            at(r.deadline);
                        }
                    }
                }
                // Only a time still ahead: a past one is stale (it is recomputed only when a
                // batch is tried), and waking for it would spin.
                if let Some(t) = s.limited_until
                    && t > now
                {
                    at(t);
                }
            }
        }
        wake
    }
}

/// While a shard throttles more than this share of what it is sent (averaged over about a
/// second), its aggregates are cut at [`THROTTLED_AGGREGATE_SIZE`].
const THROTTLED_SHARE: f64 = 0.02;
/// The largest aggregate for a throttling shard: one PUT payload unit (25 KiB), so the cut costs
/// no payload units. A shard's allowance runs out partway through a record that no longer fits;
/// with aggregates half the size, less of it is left unused (ferrokinesis, whose limit is a
/// fixed one-second window, then lost on average half a 50 KB aggregate of each second's
/// 1 MiB), and a throttled attempt carries half as much to send again.
const THROTTLED_AGGREGATE_SIZE: usize = 25_600;

/// The aggregation limits for a shard in the state its limiter is in: the configured ones, with
/// aggregates cut at [`THROTTLED_AGGREGATE_SIZE`] while the shard throttles.
fn aggregation_limits(
    config: &Config,
    limiter: &ShardLimiter,
) -> crate::aggregation::AggregationLimits {
    if limiter.throttled_share() > THROTTLED_SHARE {
        config.aggregation.capped(THROTTLED_AGGREGATE_SIZE)
    } else {
        config.aggregation
    }
}

/// Asks for the stream's shard map now; during a refresh, once more after it (its answer may
/// predate what prompted this).
fn request_refresh(s: &mut StreamState, now: Instant) {
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
fn flush_due(s: &mut StreamState, now: Instant, slack: Duration) {
    let mut next_due: Option<Instant> = None;
    let generation = s.map.as_ref().map_or(0, ShardMap::generation);
    for (shard, agg) in s.aggregators.iter_mut().enumerate() {
        let Some(d) = agg.earliest_deadline().map(Instant::from_std) else {
            continue;
        };
        if d <= now + slack {
            if let Some(full) = agg.flush() {
                push_ready_parts(
                    &mut s.ready,
                    &mut s.ready_bytes,
                    Ready::from_aggregate(full, shard, generation, &s.shard_ids),
                );
            }
        } else {
            next_due = Some(next_due.map_or(d, |n| n.min(d)));
        }
    }
    s.aggregators_due = next_due;
}

fn flush_aggregators(s: &mut StreamState) {
    s.aggregators_due = None;
    let generation = s.map.as_ref().map_or(0, ShardMap::generation);
    for (shard, agg) in s.aggregators.iter_mut().enumerate() {
        if let Some(full) = agg.flush() {
            push_ready_parts(
                &mut s.ready,
                &mut s.ready_bytes,
                Ready::from_aggregate(full, shard, generation, &s.shard_ids),
            );
        }
    }
}

fn push_ready(s: &mut StreamState, r: Ready) {
    push_ready_parts(&mut s.ready, &mut s.ready_bytes, r);
}

fn push_ready_parts(ready: &mut VecDeque<Ready>, bytes: &mut usize, r: Ready) {
    *bytes += r.record.size();
    ready.push_back(r);
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
