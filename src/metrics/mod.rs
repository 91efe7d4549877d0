//! Metrics under the KPL's names and semantics, as statistic sets (sum, count, min, max).
//!
//! The engine records them without a lock on its path: a PutRecords task gathers its call's
//! values in a `tally::Tally` (one statistic set per metric and shard), the engine gathers
//! arrivals and failures in its own, and once per turn it adds them to the `store::Store`
//! under one lock. Every [`SAMPLE_INTERVAL`] while records are buffered it samples the
//! quantities (pending records, limiter rates, buffered bytes, the oldest record's age) and
//! exports changed series to the `metrics` crate. [`Producer::metrics`](crate::Producer::metrics)
//! reads the store.
//!
//! See `docs/metrics.md` for what each figure means and how it is exported.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use std::time::Instant;

#[cfg(feature = "cloudwatch")]
pub(crate) mod cloudwatch;
mod facade;
mod names;
pub(crate) mod store;
pub(crate) mod tally;

pub use names::{Granularity, Level, Name, Unit};
use store::{Store, StreamCounts};
pub(crate) use tally::Tally;

/// How often the sampled metrics are sampled while the producer holds records (the KPL's
/// `UserRecordsPending` interval), and changed series exported to the `metrics` crate.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// How many seconds of history each series keeps for [`Producer::metrics`](crate::Producer::metrics)'
/// window (the KPL keeps 60 one-second buckets too).
pub const WINDOW_SECONDS: u64 = 60;

/// A statistic set: the sum, count, minimum and maximum of a metric's values, as CloudWatch
/// takes them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stat {
    /// The values added up.
    pub sum: f64,
    /// How many values there were.
    pub count: u64,
    /// The least value (0 when there were none).
    pub min: f64,
    /// The greatest value (0 when there were none).
    pub max: f64,
}

impl Stat {
    /// The mean value, if there were values.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    pub(crate) fn add(&mut self, v: f64) {
        if self.count == 0 {
            (self.min, self.max) = (v, v);
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.sum += v;
        self.count += 1;
    }

    /// Adds `n` values of 1.
    pub(crate) fn add_ones(&mut self, n: u64) {
        if n > 0 {
            self.merge(&Stat {
                sum: n as f64,
                count: n,
                min: 1.0,
                max: 1.0,
            });
        }
    }

    pub(crate) fn merge(&mut self, o: &Stat) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        self.sum += o.sum;
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// One metric for one set of dimensions.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metric {
    /// Which metric.
    pub name: Name,
    /// The `ErrorCode` dimension (`ErrorsByCode` only).
    pub error_code: Option<Arc<str>>,
    /// The `StreamName` dimension; `None`: across all streams.
    pub stream: Option<Arc<str>>,
    /// The `ShardId` dimension; `None`: across the stream's shards.
    pub shard: Option<Arc<str>>,
    /// Every value since the producer started.
    pub total: Stat,
    /// The values of the window asked for.
    pub recent: Stat,
    /// For a sampled metric, its latest sample: the quantity now.
    pub last: Option<f64>,
}

/// The producer's metrics at one moment ([`Producer::metrics`](crate::Producer::metrics)).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Metrics {
    /// Every series recorded, ordered by name, error code, stream and shard.
    pub metrics: Vec<Metric>,
}

impl Metrics {
    /// The series of `name` for these dimensions (`None`: across all of that dimension).
    pub fn find(&self, name: Name, stream: Option<&str>, shard: Option<&str>) -> Option<&Metric> {
        self.metrics.iter().find(|m| {
            m.name == name
                && m.error_code.is_none()
                && m.stream.as_deref() == stream
                && m.shard.as_deref() == shard
        })
    }

    /// The whole producer's series of `name` (no dimensions).
    pub fn global(&self, name: Name) -> Option<&Metric> {
        self.find(name, None, None)
    }

    /// The producer's `ErrorsByCode` series (no stream or shard), one per error code.
    pub fn errors_by_code(&self) -> impl Iterator<Item = (&str, &Metric)> {
        self.metrics
            .iter()
            .filter_map(|m| match (&m.error_code, &m.stream) {
                (Some(code), None) if m.name == Name::ErrorsByCode => Some((&**code, m)),
                _ => None,
            })
    }
}

/// The store, shared by the engine (which writes it) and the producer's handles (which read).
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
}

impl Shared {
    /// A stream named for the first time: its counts get the next index (the one the engine
    /// knows it by). Done by the producer before any core hears of the stream, so that every
    /// core finds it.
    pub(crate) fn add_stream(&self, name: Arc<str>) {
        self.lock().streams.push(StreamCounts {
            name,
            ..Default::default()
        });
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        // Held for additions and reads only: a poisoned store is still whole.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The metrics, with `window`'s values as of `now`.
    pub(crate) fn snapshot(&self, window: Duration, now: Instant) -> Metrics {
        Metrics {
            metrics: self.lock().snapshot(window, now),
        }
    }

    /// When the oldest unresolved record arrived, if any is.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        let store = self.lock();
        store.ledger.oldest(store.origin)
    }
}

/// One sample the engine took: the metric, the stream's index, the shard, the value.
pub(crate) type Sample = (Name, Option<usize>, Option<Arc<str>>, f64);

/// What the engine's core gathers between two turns of its driver: arrivals, failures and the
/// tallies of PutRecords answers, per stream. Plain data (no lock, no clock): the driver hands
/// it to the [`Recorder`] once per turn.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    /// What the core gathered per stream (arrivals, failures, puts resolved outside a call).
    local: Vec<Tally>,
    /// Tallies of PutRecords calls, by stream, not yet added.
    calls: Vec<(usize, Tally)>,
    /// User records received since the last turn, per stream.
    received: Vec<u64>,
    /// Arrivals since the last turn: (when, how many).
    arrivals: Vec<(Instant, u32)>,
    /// Whether metric values are gathered (`MetricsLevel` is not none).
    on: bool,
}

impl Gather {
    /// Gathers values when `level` is not none (arrivals are counted whatever the level: they
    /// give the oldest record's age).
    pub(crate) fn new(level: Level) -> Self {
        Gather {
            on: level != Level::None,
            ..Gather::default()
        }
    }

    pub(crate) fn add_stream(&mut self) {
        self.local.push(Tally::new(self.on));
        self.received.push(0);
    }

    /// A user record of stream `stream` arrived at `now`.
    #[inline]
    pub(crate) fn received(&mut self, stream: usize, now: Instant) {
        // Counted here, added to the tally once per turn: a group lookup per record cost as
        // much as the rest of the metrics (callgrind, `cargo bench --bench engine`).
        self.received[stream] += 1;
        tally::count_run(&mut self.arrivals, now);
    }

    /// What is gathered for stream `stream`.
    pub(crate) fn tally(&mut self, stream: usize) -> &mut Tally {
        &mut self.local[stream]
    }

    /// A PutRecords call's tally, added at the next commit.
    pub(crate) fn call(&mut self, stream: usize, tally: Tally) {
        if !tally.is_empty() {
            self.calls.push((stream, tally));
        }
    }

    fn is_empty(&self) -> bool {
        self.arrivals.is_empty() && self.calls.is_empty() && self.local.iter().all(Tally::is_empty)
    }
}

/// What the recorders of one producer's engine cores share: how many still run (the engine has
/// stopped when none does) and each core's latest samples, which the first core sums and
/// records (a shard written by two cores is one series, not two).
#[derive(Debug)]
struct Cores {
    running: AtomicUsize,
    latest: Mutex<Vec<Vec<Sample>>>,
}

/// The driver's side: the store the handles read, when to sample next, and the signal that the
/// engine stopped.
#[derive(Debug)]
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    /// Which engine core this recorder is for: the first records what every core sampled.
    core: usize,
    cores: Arc<Cores>,
    pub(crate) next_sample: Instant,
    /// Whether metric values are gathered (`MetricsLevel` is not none).
    on: bool,
    /// Whether the last sample saw anything buffered: one more sample records the drop to 0.
    sampled_some: bool,
    /// Set when the engine stops: an uploader makes its last upload and ends.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Recorder {
    /// A recorder at the level and granularity of `config`; the ages of unresolved records are
    /// kept to within `age_resolution`.
    pub(crate) fn new(config: &crate::Config, origin: Instant, age_resolution: Duration) -> Self {
        let mut store = Store::new(
            config.metrics_level,
            config.metrics_granularity,
            origin,
            age_resolution,
        );
        store.dimensions = config.metrics_dimensions.clone();
        store.uploading = config.upload_metrics && config.metrics_level != Level::None;
        Recorder {
            shared: Arc::new(Shared {
                store: Mutex::new(store),
            }),
            next_sample: origin,
            on: config.metrics_level != Level::None,
            sampled_some: false,
            closed: tokio::sync::watch::Sender::new(false),
            core: 0,
            cores: Arc::new(Cores {
                running: AtomicUsize::new(1),
                latest: Mutex::new(vec![Vec::new()]),
            }),
        }
    }

    /// A recorder for one more engine core, into the same store: the engine stops when the
    /// last core's recorder [closes](Self::close).
    pub(crate) fn another_core(&self) -> Recorder {
        self.cores.running.fetch_add(1, Ordering::AcqRel);
        let core = {
            let mut latest = self.cores.latest.lock().unwrap_or_else(|e| e.into_inner());
            latest.push(Vec::new());
            latest.len() - 1
        };
        Recorder {
            shared: Arc::clone(&self.shared),
            next_sample: self.next_sample,
            on: self.on,
            sampled_some: false,
            closed: self.closed.clone(),
            core,
            cores: Arc::clone(&self.cores),
        }
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Tells when the engine has stopped (for the CloudWatch uploader).
    pub(crate) fn closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// This core stopped; when it is the last, the engine has, and the figures are final.
    pub(crate) fn close(&self) {
        if self.cores.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.closed.send_replace(true);
        }
    }

    /// Adds everything `g` gathered since the last turn, under one lock.
    pub(crate) fn commit(&mut self, g: &mut Gather, now: Instant) {
        if g.is_empty() {
            return;
        }
        for (i, n) in g.received.iter_mut().enumerate() {
            let n = std::mem::take(n);
            if n > 0 && g.on {
                g.local[i]
                    .group(None, None)
                    .put_ones(Name::UserRecordsReceived, n);
            }
        }
        let mut store = self.shared.lock();
        let origin = store.origin;
        for (at, n) in g.arrivals.drain(..) {
            store.ledger.arrive(origin, at, n);
        }
        for (i, t) in g.local.iter_mut().enumerate() {
            if !t.is_empty() {
                store.apply(i, t, now);
                *t = Tally::new(g.on);
            }
        }
        for (i, t) in g.calls.drain(..) {
            store.apply(i, &t, now);
        }
    }

    /// Whether a sample is worth taking when due: metrics are on and something is buffered, or
    /// the last sample saw something (this one records the drop to nothing).
    pub(crate) fn sample_wanted(&self, buffered: bool) -> bool {
        // At MetricsLevel none nothing is sampled: no wake-ups for it (arrivals are added to
        // the ledger at every turn's commit).
        self.on && (buffered || self.sampled_some)
    }

    /// Records one round of samples taken at `now`, and exports changed series to the
    /// `metrics` crate. `samples`: (metric, stream index, shard id, value). With several engine
    /// cores, each core's samples are left for the first, which adds up every core's latest
    /// (the buffer's figures it samples itself: they are the producer's, not a core's).
    pub(crate) fn record_samples(
        &mut self,
        g: &mut Gather,
        samples: Vec<Sample>,
        buffered: bool,
        now: Instant,
    ) {
        self.commit(g, now);
        self.sampled_some = buffered;
        self.next_sample = now + SAMPLE_INTERVAL;
        let samples = {
            let mut latest = self.cores.latest.lock().unwrap_or_else(|e| e.into_inner());
            if latest.len() == 1 {
                samples
            } else if self.core != 0 {
                latest[self.core] = samples;
                return;
            } else {
                tally::sum_samples(samples, &latest[1..])
            }
        };
        let mut store = self.shared.lock();
        if store.level == Level::None {
            return;
        }
        let origin = store.origin;
        let oldest = store.ledger.oldest(origin);
        let age = oldest.map_or(0.0, |t| tally::ms(now.saturating_duration_since(t)));
        store.sample(Name::OldestUnresolvedRecordAge, None, None, age, now);
        for i in 0..store.streams.len() {
            let c = &store.streams[i];
            let (name, pending) = (Arc::clone(&c.name), c.received.saturating_sub(c.finished));
            store.sample(
                Name::UserRecordsPending,
                Some(&name),
                None,
                pending as f64,
                now,
            );
        }
        for (name, stream, shard, value) in samples {
            let stream = stream
                .and_then(|i| store.streams.get(i))
                .map(|c| Arc::clone(&c.name));
            store.sample(name, stream.as_ref(), shard.as_ref(), value, now);
        }
        store.export();
    }
}
