//! The public handle: send, flush, shutdown.

mod batch;
mod spooling;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::budget::{Budget, charge};
use crate::config::Config;
pub use crate::engine::{BatchFuture, RecordFuture};

/// What a producer holds now against its budget ([`Producer::buffered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Buffered {
    /// User records accepted and not yet resolved (limit: `MaxBufferedRecords`).
    pub records: usize,
    /// The memory they hold (limit: `MaxBufferedBytes`): each record's data and partition key
    /// twice (the record, and its copy in the aggregate) plus 704 bytes (384 of bookkeeping: its
    /// future, the slot it shares with the engine's entry; 320 reserved for the attempts it
    /// keeps if retried).
    pub bytes: usize,
}
use crate::aggregation::Entry;
use crate::engine::{Engine, Lister, Msg, Part, Pending, Table, clock, core_for, recorder};
use crate::metrics::{Metrics, Shared};
use arc_swap::ArcSwapOption;

use crate::outcome::{Attempts, PutError, PutErrorKind};
use crate::record::UserRecord;
use crate::sink::Sink;
use crate::spool::{Recovered, Spool, SpoolError};
use spooling::{is_spool_full, open_spool};

pub(crate) struct Inner {
    /// Each engine core's channel; a record goes to the core of its part of the hash key space
    /// ([`Part::index_of`]).
    cores: Box<[mpsc::UnboundedSender<Msg>]>,
    /// Buffered records and bytes against MaxBufferedRecords and MaxBufferedBytes.
    budget: Arc<Budget>,
    /// Stream names, interned, with the id the engine knows each by: a send looks its stream
    /// up instead of allocating its name.
    /// Hashed with foldhash, not SipHash: the names are the program's own, and SipHash made
    /// this lookup about 340 instructions of every `send` (callgrind, `benches/engine.rs`).
    streams: dashmap::DashMap<Box<str>, StreamEntry, hashbrown::DefaultHashBuilder>,
    /// Serialises first sightings of streams, so ids reach the engine in order, each before
    /// any record of its stream.
    new_stream: std::sync::Mutex<usize>,
    closed: AtomicBool,
    /// The engine's metrics, read by [`Producer::metrics`].
    metrics: Arc<Shared>,
    /// Set when the engine stops (the CloudWatch uploader then makes its last upload).
    #[cfg_attr(not(feature = "cloudwatch"), allow(dead_code))]
    engine_stopped: tokio::sync::watch::Receiver<bool>,
    /// The runtime the engine runs on (its own, or the one the producer was made in).
    #[cfg_attr(not(feature = "cloudwatch"), allow(dead_code))]
    handle: tokio::runtime::Handle,
    /// The runtime the producer made for itself when created outside one; shut down (in the
    /// background, so dropping the producer never blocks or panics) with the last handle.
    runtime: Option<tokio::runtime::Runtime>,
    /// The durable spool, when `SpoolDirectory` is set and it opened.
    spool: Option<Arc<Spool>>,
    /// Why the spool configured could not be opened: every record is refused with it.
    spool_failed: Option<SpoolError>,
    /// Listings shared by the engine cores, which keep each stream's table of shard owners
    /// current when records are routed by shard (several cores, no per-key ordering).
    lister: Option<Arc<Lister>>,
}

/// A stream the producer has seen: its interned name, the id the engine knows it by, and, when
/// records are routed by shard (several engine cores, no per-key ordering), the table of which
/// core owns which shard, kept current by the cores' listings.
#[derive(Clone)]
pub(crate) struct StreamEntry {
    name: Arc<str>,
    id: usize,
    table: Option<Arc<ArcSwapOption<Table>>>,
}

impl Inner {
    /// Which engine core takes a record of hash key `hash` of a stream whose table is `table`:
    /// the owner of its shard once the table is known; until then, and with per-key ordering,
    /// the core of its part of the key space.
    #[inline]
    fn core_index(&self, table: Option<&ArcSwapOption<Table>>, hash: u128) -> usize {
        let n = self.cores.len();
        if n == 1 {
            return 0;
        }
        match table {
            Some(cell) => core_for(cell.load().as_deref(), hash, n),
            None => core_for(None, hash, n),
        }
    }

    /// Hands `entries` of a stream (its id and table in `stream`) to their engine cores, each
    /// core's in the order given.
    pub(crate) fn dispatch(&self, stream: &StreamEntry, entries: Vec<Pending>) {
        let n = self.cores.len();
        if n == 1 {
            self.send_records(0, stream.id, entries);
            return;
        }
        let table = stream.table.as_ref().and_then(|t| t.load_full());
        let mut parts: Vec<Vec<Pending>> = (0..n)
            .map(|_| Vec::with_capacity(entries.len().div_ceil(n)))
            .collect();
        for entry in entries {
            let core = core_for(table.as_deref(), entry.record().hash_key().0, n);
            parts[core].push(entry);
        }
        let stream = stream.id;
        for (core, part) in parts.into_iter().enumerate() {
            if !part.is_empty() {
                self.send_records(core, stream, part);
            }
        }
    }

    fn send_records(&self, core: usize, stream: usize, entries: Vec<Pending>) {
        let msg = Msg::Records { stream, entries };
        if let Err(mpsc::error::SendError(msg)) = self.cores[core].send(msg) {
            let Msg::Records { entries, .. } = msg else {
                unreachable!("the message just sent")
            };
            let bytes = entries.iter().map(|p| charge(p.record())).sum();
            self.budget.release(entries.len(), bytes);
            // Dropped unresolved, each entry resolves as stopped, with its record.
            drop(entries);
        }
    }

    /// Sends `msg()` to every engine core (a core that stopped is skipped).
    fn to_every_core(&self, msg: impl Fn() -> Msg) {
        for core in &self.cores {
            let _ = core.send(msg());
        }
    }

    /// Sends every engine core a message carrying a sender to answer on, and gives back the
    /// receivers of the cores that took it.
    fn to_every_core_wait(
        &self,
        msg: impl Fn(oneshot::Sender<()>) -> Msg,
    ) -> Vec<oneshot::Receiver<()>> {
        let mut waits = Vec::with_capacity(self.cores.len());
        for core in &self.cores {
            let (tx, rx) = oneshot::channel();
            if core.send(msg(tx)).is_ok() {
                waits.push(rx);
            }
        }
        waits
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Puts user records into Kinesis streams, aggregated in the KPL format.
///
/// Cheap to clone; every clone feeds the same engine. The engine runs as a task on the tokio
/// runtime the producer was created in, or, when created outside one, on a runtime of its own.
/// When the last handle is dropped, the engine still sends everything it holds and resolves
/// every future (on a runtime of its own, it stops instead and the futures resolve to
/// [`PutErrorKind::Stopped`]): no future is left pending forever.
#[derive(Clone)]
#[must_use = "a producer sends nothing unless records are sent through it"]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Producer {
    /// A producer that talks to Kinesis through aws-sdk-kinesis: region, endpoint and
    /// credentials from `config`, else from the standard AWS chains.
    ///
    /// # Cancellation
    /// Loading the AWS configuration is the only await; dropping the future before it completes
    /// creates nothing.
    ///
    /// With `SpoolDirectory` set, prefer [`try_new`](Self::try_new): if the spool cannot be
    /// opened (another producer holds it, the disk refuses), this producer refuses every record
    /// with that error ([`PutErrorKind::Spool`]) and logs it once.
    #[cfg(feature = "aws")]
    pub async fn new(config: Config) -> Producer {
        let sdk = crate::sink::aws::load_sdk_config(&config).await;
        Producer::from_sdk_config(&sdk, config)
    }

    /// As [`new`](Self::new), but an error when the spool (`SpoolDirectory`) cannot be opened.
    /// The spool is opened, and what an earlier producer left in it is read back and sent
    /// first, before this returns.
    ///
    /// # Errors
    /// [`SpoolError::Locked`] when another producer has the directory open,
    /// [`SpoolError::Open`] when it cannot be created, read or written.
    ///
    /// # Cancellation
    /// Dropping the future before it completes creates nothing.
    #[cfg(feature = "aws")]
    pub async fn try_new(config: Config) -> Result<Producer, SpoolError> {
        let sdk = crate::sink::aws::load_sdk_config(&config).await;
        let sink = crate::sink::aws::AwsSink::from_sdk_config(&sdk, &config);
        let spool = open_spool(&config).transpose()?;
        Ok(Producer::build(config, sink, spool.map(Ok)))
    }

    /// A producer over the AWS SDK configured from an AWS configuration you loaded yourself,
    /// so that what you set up in aws-config applies (the HTTP client with its proxies and CA
    /// bundles, FIPS or dual-stack endpoints, credential and region providers); `config` brings
    /// the KPL settings (see [`AwsSink::from_sdk_config`](crate::sink::aws::AwsSink::from_sdk_config)).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use kinesis_producer::{Config, Producer};
    /// let sdk = aws_config::defaults(kinesis_producer::sink::aws::behavior_version())
    ///     .region("eu-west-1")
    ///     .load()
    ///     .await;
    /// let producer = Producer::from_sdk_config(&sdk, Config::builder().rate_limit(100).build()?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// As [`Producer::with_sink`], created outside a tokio runtime without threads to spare.
    #[cfg(feature = "aws")]
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, config: Config) -> Producer {
        let sink = crate::sink::aws::AwsSink::from_sdk_config(sdk, &config);
        #[cfg(feature = "cloudwatch")]
        let upload = crate::metrics::cloudwatch::upload(sdk, &config);
        let producer = Producer::with_sink(config, sink);
        // The CloudWatch uploader, when asked for, runs beside the engine until it stops.
        #[cfg(feature = "cloudwatch")]
        if let Some(upload) = upload {
            let inner = &producer.inner;
            let run = crate::metrics::cloudwatch::run(
                Arc::clone(&inner.metrics),
                upload,
                inner.engine_stopped.clone(),
            );
            inner.handle.spawn(run);
        }
        producer
    }

    /// A producer that sends through `sink`: the in-memory Kinesis for tests, or your own sink.
    ///
    /// # Panics
    /// Created outside a tokio runtime, it builds one of its own; if the operating system
    /// refuses it threads, that panics.
    pub fn with_sink<S: Sink>(config: Config, sink: S) -> Producer {
        let spool = open_spool(&config);
        if let Some(Err(e)) = &spool {
            tracing::error!("{e}; every record sent to this producer is refused");
        }
        Producer::build(config, sink, spool)
    }

    /// As [`with_sink`](Self::with_sink), but an error when the spool (`SpoolDirectory`) cannot
    /// be opened.
    ///
    /// ```
    /// # use kinesis_producer::{Config, Producer, SpoolError, UserRecord};
    /// # use kinesis_producer::sink::memory::MemorySink;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = std::env::temp_dir().join(format!("kpl-spool-doc-{}", std::process::id()));
    /// let config = Config::builder().spool_directory(&dir).build().unwrap();
    /// let sink = MemorySink::new().with_stream("s", 1);
    /// let producer = Producer::try_with_sink(config.clone(), sink.clone()).unwrap();
    /// let put = producer.send("s", UserRecord::new("k", "kept on disk until put").unwrap());
    /// // Once this returns, the record survives a crash of the process or the machine.
    /// producer.sync_spool().await.unwrap();
    /// // A second producer on the same directory is refused.
    /// let refused = Producer::try_with_sink(config, sink).unwrap_err();
    /// assert!(matches!(refused, SpoolError::Locked { .. }));
    /// put.await.unwrap();
    /// producer.shutdown().await;
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`try_new`](Self::try_new).
    ///
    /// # Panics
    /// As [`with_sink`](Self::with_sink).
    pub fn try_with_sink<S: Sink>(config: Config, sink: S) -> Result<Producer, SpoolError> {
        let spool = open_spool(&config).transpose()?;
        Ok(Producer::build(config, sink, spool.map(Ok)))
    }

    fn build<S: Sink>(
        config: Config,
        sink: S,
        spool: Option<Result<(Spool, Vec<Recovered>), SpoolError>>,
    ) -> Producer {
        let (spool, recovered, spool_failed) = match spool {
            None => (None, Vec::new(), None),
            Some(Ok((spool, recovered))) => (Some(Arc::new(spool)), recovered, None),
            Some(Err(e)) => (None, Vec::new(), Some(e)),
        };
        // The channels are unbounded; what bounds memory is this budget, reserved before a
        // record enters a channel and released when it resolves.
        let budget = Arc::new(Budget::new(
            config.max_buffered_records,
            config.max_buffered_bytes,
        ));
        // `EngineCores` 0: one core per worker thread, but one with per-key ordering, whose
        // cores each keep a part of the key space and so would split shards' aggregates.
        let engine_cores = match config.engine_cores {
            0 if config.per_key_ordering => Some(1),
            0 => None,
            n => Some(n),
        };
        let (handle, runtime) = match tokio::runtime::Handle::try_current() {
            Ok(handle) => (handle, None),
            Err(_) => {
                // A worker per engine core and one for PutRecords calls and their replies (a
                // worker per CPU for one core per worker), at least two, at most one per CPU.
                let cpus = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
                let workers = engine_cores.map_or(cpus, |n| (n + 1).clamp(2, cpus));
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name("kinesis-producer")
                    .enable_all()
                    .build()
                    .expect("a tokio runtime can be built");
                (rt.handle().clone(), Some(rt))
            }
        };
        let cores = engine_cores
            .unwrap_or_else(|| handle.metrics().num_workers())
            .clamp(1, config.max_connections);
        let sink = Arc::new(sink);
        let first = recorder(&config);
        let metrics = first.shared();
        let engine_stopped = first.closed();
        // Without per-key ordering a record may go to any core, so each goes to the one that
        // owns its shard: no shard is written by two cores. With it, a key must stay on one
        // core whatever the map does, so each core keeps its part of the key space.
        let by_shard = !config.per_key_ordering;
        let lister = (cores > 1).then(|| Arc::new(Lister::new(cores, by_shard)));
        let mut recorders = Vec::with_capacity(cores);
        for _ in 1..cores {
            recorders.push(first.another_core());
        }
        recorders.insert(0, first);
        let mut channels = Vec::with_capacity(cores);
        for (index, recorder) in recorders.into_iter().enumerate() {
            // The cores share MaxConnections.
            let part = Part { index, of: cores };
            let mut own = config.clone();
            own.max_connections = part.connections(config.max_connections);
            let (tx, rx) = mpsc::unbounded_channel();
            let engine = Engine::new(
                own,
                Arc::clone(&sink),
                Arc::clone(&budget),
                part,
                recorder,
                lister.clone(),
            );
            handle.spawn(engine.run(rx));
            channels.push(tx);
        }
        let producer = Producer {
            inner: Arc::new(Inner {
                cores: channels.into_boxed_slice(),
                budget,
                streams: dashmap::DashMap::default(),
                new_stream: std::sync::Mutex::new(0),
                closed: AtomicBool::new(false),
                metrics,
                engine_stopped,
                handle,
                runtime,
                spool,
                spool_failed,
                lister,
            }),
        };
        if !recovered.is_empty() {
            crate::spool::resend::start(&producer, recovered);
        }
        producer
    }

    /// Sends a record to `stream`. Never blocks and never waits: callable from any thread,
    /// inside or outside an async runtime. The record is buffered, aggregated with others bound
    /// for the same shard and sent within `RecordMaxBufferedTime`; the returned future tells
    /// where it was put, or hands it back with the reason it was not.
    ///
    /// When the buffer is full (`MaxBufferedRecords`, `MaxBufferedBytes`) the future resolves
    /// at once to [`PutErrorKind::BufferFull`] with the record; [`try_send`](Self::try_send)
    /// says so directly, [`send_wait`](Self::send_wait) and [`send_blocking`](Self::send_blocking)
    /// wait for room.
    pub fn send(&self, stream: &str, record: UserRecord) -> RecordFuture {
        match self.try_send(stream, record) {
            Ok(future) => future,
            Err(e) => RecordFuture::resolved(e),
        }
    }

    /// As [`send`](Self::send), but a record that is not accepted (buffer full, producer shut
    /// down or stopped) comes back at once as the error, with the record.
    ///
    /// ```
    /// # use kinesis_producer::{Config, Producer, PutErrorKind, UserRecord};
    /// # use kinesis_producer::sink::memory::MemorySink;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let config = Config::builder().max_buffered_records(1).build().unwrap();
    /// let producer = Producer::with_sink(config, MemorySink::new().with_stream("s", 1));
    /// let first = producer.try_send("s", UserRecord::new("k", "one").unwrap()).unwrap();
    /// let refused = producer.try_send("s", UserRecord::new("k", "two").unwrap()).unwrap_err();
    /// assert!(matches!(refused.kind, PutErrorKind::BufferFull { max_records: 1, .. }));
    /// assert_eq!(refused.record.data().as_ref(), b"two");
    /// first.await.unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    /// A [`PutError`] handing the record back when it is not accepted: the buffer is full
    /// ([`PutErrorKind::BufferFull`]), the producer is shut down ([`PutErrorKind::Closed`]) or its
    /// engine stopped ([`PutErrorKind::Stopped`]).
    #[allow(clippy::result_large_err)] // the error hands the record back by value
    pub fn try_send(&self, stream: &str, record: UserRecord) -> Result<RecordFuture, PutError> {
        let entry = self.stream_entry(stream);
        if let Some(kind) = self.refusal() {
            return Err(PutError {
                kind,
                stream: entry.name,
                record,
                attempts: Attempts::default(),
            });
        }
        if !self.inner.budget.try_reserve(charge(&record)) {
            return Err(self.full(entry.name, record));
        }
        self.enqueue(&entry, record)
    }

    /// As [`send`](Self::send), but waits for room in the buffer instead of refusing the record.
    ///
    /// # Cancellation
    /// Dropping the future before it completes gives up the wait: the record was not accepted
    /// and is dropped with the future.
    pub async fn send_wait(&self, stream: &str, record: UserRecord) -> RecordFuture {
        let entry = self.stream_entry(stream);
        let stream = &entry.name;
        let closed = || self.inner.closed.load(Ordering::Acquire);
        let mut record = record;
        loop {
            if !self.inner.budget.reserve(charge(&record), closed).await {
                return closed_while_waiting(Arc::clone(stream), record);
            }
            match self.enqueue(&entry, record) {
                Err(e) if is_spool_full(&e.kind) => {
                    record = e.record;
                    if let Some(spool) = &self.inner.spool {
                        spool
                            .wait_room(spool.frame_len(stream, &record), closed)
                            .await;
                    }
                }
                done => return done.unwrap_or_else(RecordFuture::resolved),
            }
        }
    }

    /// As [`send_wait`](Self::send_wait), blocking the calling thread while the buffer is full:
    /// for callers outside an async runtime. Do not call it from an async task (it would block
    /// a runtime worker); use `send_wait` there.
    pub fn send_blocking(&self, stream: &str, record: UserRecord) -> RecordFuture {
        let entry = self.stream_entry(stream);
        let stream = &entry.name;
        let closed = || self.inner.closed.load(Ordering::Acquire);
        let mut record = record;
        loop {
            if !self.inner.budget.reserve_blocking(charge(&record), closed) {
                return closed_while_waiting(Arc::clone(stream), record);
            }
            match self.enqueue(&entry, record) {
                Err(e) if is_spool_full(&e.kind) => {
                    record = e.record;
                    if let Some(spool) = &self.inner.spool {
                        spool.wait_room_blocking(spool.frame_len(stream, &record), closed);
                    }
                }
                done => return done.unwrap_or_else(RecordFuture::resolved),
            }
        }
    }

    /// Records and bytes buffered now: accepted and not yet resolved (see [`Buffered`]). Never
    /// more than `MaxBufferedRecords` and `MaxBufferedBytes`.
    pub fn buffered(&self) -> Buffered {
        let (records, bytes) = self.inner.budget.used();
        Buffered { records, bytes }
    }

    /// The producer's metrics (the KPL's `getMetrics(seconds)`): each under the KPL's name, per
    /// dimension set, with its statistic set since the start and over the last `window`
    /// (whole seconds, the one under way counting as one; at most
    /// [`WINDOW_SECONDS`](crate::metrics::WINDOW_SECONDS)). Which metrics and dimensions are
    /// recorded follows `MetricsLevel` and `MetricsGranularity`; `docs/metrics.md` says what
    /// each means.
    ///
    /// The engine adds its figures once per turn, and samples the sampled ones every
    /// [`SAMPLE_INTERVAL`](crate::metrics::SAMPLE_INTERVAL) while it holds records: a figure may
    /// be that much behind.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use kinesis_producer::metrics::Name;
    /// use kinesis_producer::sink::memory::MemorySink;
    /// use kinesis_producer::{Config, Producer, UserRecord};
    ///
    /// let sink = MemorySink::new().with_stream("events", 2);
    /// let producer = Producer::with_sink(Config::default(), sink);
    /// for i in 0..10 {
    ///     producer.send("events", UserRecord::new(format!("k{i}"), "data").unwrap());
    /// }
    /// producer.flush_and_wait().await;
    /// let metrics = producer.metrics(Duration::from_secs(60));
    /// let put = metrics.global(Name::UserRecordsPut).unwrap();
    /// assert_eq!((put.total.sum, put.total.count), (10.0, 10));
    /// # }
    /// # #[cfg(not(feature = "test-util"))]
    /// # fn main() {}
    /// ```
    pub fn metrics(&self, window: std::time::Duration) -> Metrics {
        self.inner.metrics.snapshot(window, clock())
    }

    /// User records accepted and not yet resolved (the KPL's `getOutstandingRecordsCount`): the
    /// same as [`buffered`](Self::buffered)`().records`.
    pub fn outstanding(&self) -> usize {
        self.inner.budget.used().0
    }

    /// How long the oldest user record the engine holds unresolved has waited since it took it
    /// in (the KPL's `getOldestRecordTimeInMillis`), to within a millisecond (or 1/30,000 of
    /// RecordTtl, when that is longer); `None` when it holds none. Up to a turn of the engine
    /// behind.
    pub fn oldest_unresolved_age(&self) -> Option<std::time::Duration> {
        let oldest = self.inner.metrics.oldest()?;
        Some(clock().saturating_duration_since(oldest))
    }

    fn refusal(&self) -> Option<PutErrorKind> {
        self.inner
            .closed
            .load(Ordering::Acquire)
            .then_some(PutErrorKind::Closed)
    }

    fn full_kind(&self) -> PutErrorKind {
        let (records, bytes) = self.inner.budget.used();
        let (max_records, max_bytes) = self.inner.budget.limits();
        PutErrorKind::BufferFull {
            records,
            bytes,
            max_records,
            max_bytes,
        }
    }

    fn full(&self, stream: Arc<str>, record: UserRecord) -> PutError {
        PutError {
            kind: self.full_kind(),
            stream,
            record,
            attempts: Attempts::default(),
        }
    }

    /// Hands a record whose room is reserved to the engine.
    #[allow(clippy::result_large_err)] // the error hands the record back by value
    fn enqueue(&self, entry: &StreamEntry, record: UserRecord) -> Result<RecordFuture, PutError> {
        let stream = Arc::clone(&entry.name);
        let size = charge(&record);
        let tag = match self.spool_one(&stream, &record) {
            Ok(tag) => tag,
            Err(kind) => {
                self.inner.budget.release(1, size);
                return Err(PutError {
                    kind,
                    stream,
                    record,
                    attempts: Attempts::default(),
                });
            }
        };
        let core = self
            .inner
            .core_index(entry.table.as_deref(), record.hash_key().0);
        let (mut pending, future) = Pending::new(record, Arc::clone(&stream));
        if let Some(tag) = tag {
            pending = pending.spooled(tag);
        }
        let msg = Msg::Record {
            stream: entry.id,
            pending,
        };
        if let Err(mpsc::error::SendError(msg)) = self.inner.cores[core].send(msg) {
            self.inner.budget.release(1, size);
            let Msg::Record { pending, .. } = msg else {
                unreachable!("the message just sent")
            };
            return Err(PutError {
                kind: PutErrorKind::Stopped,
                stream,
                record: pending.abandon(),
                attempts: Attempts::default(),
            });
        }
        Ok(future)
    }

    /// The stream's entry, registering it (with the metrics, then every engine core) when it
    /// is seen for the first time.
    pub(crate) fn stream_entry(&self, stream: &str) -> StreamEntry {
        if let Some(entry) = self.inner.streams.get(stream) {
            return entry.clone();
        }
        let mut next = self
            .inner
            .new_stream
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.inner
            .streams
            .entry(stream.into())
            .or_insert_with(|| {
                let id = *next;
                *next += 1;
                let name: Arc<str> = Arc::from(stream);
                // The metrics' counts first: every core finds the stream there.
                self.inner.metrics.add_stream(Arc::clone(&name));
                self.inner.to_every_core(|| Msg::NewStream {
                    id,
                    name: Arc::clone(&name),
                });
                let table = self.inner.lister.as_ref().and_then(|l| l.table_for(&name));
                StreamEntry { name, id, table }
            })
            .clone()
    }

    /// Fetches `stream`'s shard map again now, instead of at the next `ShardMapRefreshInterval`
    /// (for example after resharding the stream yourself). Returns at once; records keep
    /// flowing meanwhile. A stream the producer has not sent to yet is ignored.
    pub fn refresh_shard_map(&self, stream: &str) {
        if let Some(entry) = self.inner.streams.get(stream) {
            self.inner
                .to_every_core(|| Msg::Refresh(Arc::clone(&entry.name)));
        }
    }

    /// Starts sending everything buffered now, without waiting for `RecordMaxBufferedTime` or
    /// full aggregates; a shard over its rate still sends at the pace its limiter allows.
    /// Returns at once.
    pub fn flush(&self) {
        self.inner.to_every_core(|| Msg::Flush);
    }

    /// Flushes, then waits until every record sent before this call has resolved (put, or
    /// failed and handed back).
    ///
    /// # Cancellation
    /// Dropping the future stops the waiting only: the flush has started and the records are
    /// sent regardless.
    pub async fn flush_and_wait(&self) {
        // Each core's flush, then each one's wait: an error means that core stopped, and
        // every future it held has resolved already.
        let waits = self.inner.to_every_core_wait(Msg::FlushWait);
        for rx in waits {
            let _ = rx.await;
        }
    }

    /// Stops accepting records (later sends fail with [`PutErrorKind::Closed`]), sends
    /// everything buffered, waits for every record in flight and every retry to resolve, then
    /// stops the engine. Other clones of this producer are shut down too.
    ///
    /// # Cancellation
    /// Dropping the future stops the waiting only: the producer is closed and still drains.
    pub async fn shutdown(self) {
        self.inner.closed.store(true, Ordering::Release);
        for rx in self.inner.to_every_core_wait(Msg::Shutdown) {
            let _ = rx.await;
        }
        // Every record resolved: the spool deletes what it can and lets go of the directory.
        if let Some(spool) = &self.inner.spool {
            let spool = Arc::clone(spool);
            let _ = tokio::task::spawn_blocking(move || spool.close()).await;
        }
    }
}

/// The outcome of a record whose sender waited for room until the producer shut down.
fn closed_while_waiting(stream: Arc<str>, record: UserRecord) -> RecordFuture {
    RecordFuture::resolved(PutError {
        kind: PutErrorKind::Closed,
        stream,
        record,
        attempts: Attempts::default(),
    })
}
