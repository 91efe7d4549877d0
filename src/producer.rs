//! The public handle: send, flush, shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};

use crate::budget::{Budget, charge};
use crate::config::Config;
use crate::engine::{Delivered, Engine, Failure, Msg, Outcome};
use crate::error::RecordError;
use crate::record::{AttemptError, Attempts, Receipt, UserRecord};
use crate::sink::Sink;

/// Why a user record was not put. The record itself comes back in [`PutError::record`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PutErrorKind {
    /// Kinesis would refuse the record as it is (e.g. over the stream's per-record limit).
    #[error(transparent)]
    InvalidRecord(#[from] RecordError),
    /// Not put within `RecordTtl`.
    #[error(
        "expired: not put within RecordTtl ({ttl_ms} ms); the last attempt failed with {last_error}"
    )]
    Expired {
        /// The `RecordTtl` in force, in milliseconds.
        ttl_ms: u64,
        /// The last attempt's error (shared with the record's attempts); its cause is this
        /// error's `source()`.
        #[source]
        last_error: Arc<AttemptError>,
    },
    /// Kinesis refused the record with an error that retrying cannot heal (no such stream,
    /// access denied, a KMS key that cannot be used, ...): failed at once, never retried.
    #[error("refused by Kinesis, not retried: {code}: {message}")]
    Rejected {
        /// The service's error code, e.g. `ResourceNotFoundException`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// Throttled, and `FailIfThrottled` is set: failed at once instead of retried.
    #[error("throttled, and FailIfThrottled is set: {code}: {message}")]
    Throttled {
        /// The service's error code, e.g. `ProvisionedThroughputExceededException`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// The producer's buffer is full (`MaxBufferedRecords` or `MaxBufferedBytes`): the record
    /// was not accepted. Wait for room ([`Producer::send_wait`], [`Producer::send_blocking`]) or
    /// slow down.
    #[error(
        "the producer's buffer is full: {records} records buffered (MaxBufferedRecords {max_records}), {bytes} bytes (MaxBufferedBytes {max_bytes}); the record was not accepted"
    )]
    BufferFull {
        /// Records buffered when it was refused.
        records: usize,
        /// Bytes (data plus keys) buffered when it was refused.
        bytes: usize,
        /// `MaxBufferedRecords`.
        max_records: usize,
        /// `MaxBufferedBytes`.
        max_bytes: usize,
    },
    /// Sent after [`Producer::shutdown`]: not accepted.
    #[error("the producer is shut down and accepts no records")]
    Closed,
    /// The producer's engine stopped (its runtime shut down, or it failed) before the record was
    /// resolved. The record may or may not have been put.
    #[error(
        "the producer stopped before the record's outcome was known; it may or may not have been put"
    )]
    Stopped,
}

/// A user record that was not put, handed back with the reason and every attempt made.
///
/// Its message is one sentence (the record, the stream, the reason); its `source()` is the
/// reason's cause (for an expired record, the last attempt's error, and under that the SDK's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutError {
    /// Why.
    pub kind: PutErrorKind,
    /// The stream it was sent to.
    pub stream: Arc<str>,
    /// The record, handed back.
    pub record: UserRecord,
    /// Every attempt made, in order.
    pub attempts: Attempts,
}

impl std::fmt::Display for PutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record with partition key {:?} for stream {} not put after {} attempts: {}",
            self.record.partition_key(),
            self.stream,
            self.attempts.count(),
            self.kind
        )
    }
}

impl std::error::Error for PutError {
    // The kind's text is already in the message: the chain goes on from its cause.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// The outcome of one [`Producer::send`]: resolves exactly once, to a [`Receipt`] or a
/// [`PutError`] that hands the record back.
///
/// Dropping it does not cancel the send; the record is still put.
#[must_use = "the record is sent either way; the future tells whether it was put"]
pub struct RecordFuture {
    state: FutureState,
}

enum FutureState {
    Waiting {
        reply: oneshot::Receiver<Outcome>,
        record: Option<UserRecord>,
        stream: Arc<str>,
    },
    /// Resolved before it was polled (refused at `send`). Boxed: a future is held per record,
    /// often in a caller's `Vec`, and an unboxed outcome would double every future's size for
    /// the rare record refused at once.
    Done(Option<Box<Result<Receipt, PutError>>>),
}

impl RecordFuture {
    fn failed(kind: PutErrorKind, stream: Arc<str>, record: UserRecord) -> Self {
        RecordFuture {
            state: FutureState::Done(Some(Box::new(Err(PutError {
                kind,
                stream,
                record,
                attempts: Attempts::default(),
            })))),
        }
    }
}

impl Future for RecordFuture {
    type Output = Result<Receipt, PutError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            FutureState::Done(outcome) => Poll::Ready(
                *outcome
                    .take()
                    .expect("RecordFuture polled after completion"),
            ),
            FutureState::Waiting {
                reply,
                record,
                stream,
            } => {
                let outcome = std::task::ready!(Pin::new(reply).poll(cx));
                // The future keeps its own copy of the record (its data is shared, not copied),
                // so it can hand it back whatever happened to the engine.
                let record = record.take().expect("RecordFuture polled after completion");
                Poll::Ready(match outcome {
                    Ok(Ok(Delivered {
                        shard_id,
                        sequence_number,
                        sub_sequence_number,
                        aggregated,
                        attempts,
                    })) => Ok(Receipt {
                        stream: stream.clone(),
                        shard_id,
                        sequence_number,
                        sub_sequence_number,
                        aggregated,
                        attempts,
                    }),
                    Ok(Err(Failure { kind, attempts })) => Err(PutError {
                        kind,
                        stream: stream.clone(),
                        record,
                        attempts,
                    }),
                    Err(_) => Err(PutError {
                        kind: PutErrorKind::Stopped,
                        stream: stream.clone(),
                        record,
                        attempts: Attempts::default(),
                    }),
                })
            }
        }
    }
}

impl std::fmt::Debug for RecordFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordFuture").finish_non_exhaustive()
    }
}

struct Inner {
    tx: mpsc::UnboundedSender<Msg>,
    /// Buffered records and bytes against MaxBufferedRecords and MaxBufferedBytes.
    budget: Arc<Budget>,
    /// Stream names, interned, with the id the engine knows each by: a send looks its stream
    /// up instead of allocating its name.
    streams: dashmap::DashMap<Box<str>, (Arc<str>, usize)>,
    /// Serialises first sightings of streams, so ids reach the engine in order, each before
    /// any record of its stream.
    new_stream: std::sync::Mutex<usize>,
    closed: AtomicBool,
    /// The runtime the producer made for itself when created outside one; shut down (in the
    /// background, so dropping the producer never blocks or panics) with the last handle.
    runtime: Option<tokio::runtime::Runtime>,
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
    #[cfg(feature = "aws")]
    pub async fn new(config: Config) -> Producer {
        let sink = crate::sink::aws::AwsSink::new(&config).await;
        Producer::with_sink(config, sink)
    }

    /// A producer that sends through `sink`: the in-memory Kinesis for tests, or your own sink.
    ///
    /// # Panics
    /// Created outside a tokio runtime, it builds one of its own; if the operating system
    /// refuses it threads, that panics.
    pub fn with_sink<S: Sink>(config: Config, sink: S) -> Producer {
        let (tx, rx) = mpsc::unbounded_channel();
        // The channel itself is unbounded; what bounds memory is this budget, reserved before a
        // record enters the channel and released when it resolves.
        let budget = Arc::new(Budget::new(
            config.max_buffered_records,
            config.max_buffered_bytes,
        ));
        let engine = Engine::new(config, sink, budget.clone());
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(engine.run(rx));
                None
            }
            Err(_) => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    // One worker for the engine, one for PutRecords calls and their replies.
                    .worker_threads(2)
                    .thread_name("kinesis-producer")
                    .enable_all()
                    .build()
                    .expect("a tokio runtime can be built");
                rt.spawn(engine.run(rx));
                Some(rt)
            }
        };
        Producer {
            inner: Arc::new(Inner {
                tx,
                budget,
                streams: dashmap::DashMap::new(),
                new_stream: std::sync::Mutex::new(0),
                closed: AtomicBool::new(false),
                runtime,
            }),
        }
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
            Err(e) => RecordFuture {
                state: FutureState::Done(Some(Box::new(Err(e)))),
            },
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
    #[allow(clippy::result_large_err)] // the error hands the record back by value
    pub fn try_send(&self, stream: &str, record: UserRecord) -> Result<RecordFuture, PutError> {
        let (stream, stream_id) = self.stream_id(stream);
        if let Some(kind) = self.refusal() {
            return Err(PutError {
                kind,
                stream,
                record,
                attempts: Attempts::default(),
            });
        }
        if !self.inner.budget.try_reserve(charge(&record)) {
            return Err(self.full(stream, record));
        }
        self.enqueue(stream, stream_id, record)
    }

    /// As [`send`](Self::send), but waits for room in the buffer instead of refusing the record.
    ///
    /// # Cancellation
    /// Dropping the future before it completes gives up the wait: the record was not accepted
    /// and is dropped with the future.
    pub async fn send_wait(&self, stream: &str, record: UserRecord) -> RecordFuture {
        let (stream, stream_id) = self.stream_id(stream);
        let closed = || self.inner.closed.load(Ordering::Acquire);
        if !self.inner.budget.reserve(charge(&record), closed).await {
            return RecordFuture::failed(PutErrorKind::Closed, stream, record);
        }
        self.enqueue(stream, stream_id, record)
            .unwrap_or_else(|e| RecordFuture {
                state: FutureState::Done(Some(Box::new(Err(e)))),
            })
    }

    /// As [`send_wait`](Self::send_wait), blocking the calling thread while the buffer is full:
    /// for callers outside an async runtime. Do not call it from an async task (it would block
    /// a runtime worker); use `send_wait` there.
    pub fn send_blocking(&self, stream: &str, record: UserRecord) -> RecordFuture {
        let (stream, stream_id) = self.stream_id(stream);
        let closed = || self.inner.closed.load(Ordering::Acquire);
        if !self.inner.budget.reserve_blocking(charge(&record), closed) {
            return RecordFuture::failed(PutErrorKind::Closed, stream, record);
        }
        self.enqueue(stream, stream_id, record)
            .unwrap_or_else(|e| RecordFuture {
                state: FutureState::Done(Some(Box::new(Err(e)))),
            })
    }

    /// Records and bytes buffered now: accepted and not yet resolved. The bytes are the memory
    /// they hold: each record's data and partition key twice (the record, and its copy in the
    /// aggregate) plus 960 bytes (640 of bookkeeping: its future, reply channel and the
    /// engine's entry; 320 reserved for the attempts it keeps if retried). Never more than
    /// `MaxBufferedRecords` and `MaxBufferedBytes`.
    pub fn buffered(&self) -> (usize, usize) {
        self.inner.budget.used()
    }

    fn refusal(&self) -> Option<PutErrorKind> {
        self.inner
            .closed
            .load(Ordering::Acquire)
            .then_some(PutErrorKind::Closed)
    }

    fn full(&self, stream: Arc<str>, record: UserRecord) -> PutError {
        let (records, bytes) = self.inner.budget.used();
        let (max_records, max_bytes) = self.inner.budget.limits();
        let kind = PutErrorKind::BufferFull {
            records,
            bytes,
            max_records,
            max_bytes,
        };
        PutError {
            kind,
            stream,
            record,
            attempts: Attempts::default(),
        }
    }

    /// Hands a record whose room is reserved to the engine.
    #[allow(clippy::result_large_err)] // the error hands the record back by value
    fn enqueue(
        &self,
        stream: Arc<str>,
        stream_id: usize,
        record: UserRecord,
    ) -> Result<RecordFuture, PutError> {
        let (reply, rx) = oneshot::channel();
        // The hash key (an MD5 when there is no explicit key) is computed here, on the
        // caller's thread, so that many senders share the hashing the engine would do alone.
        let hash_key = record.hash_key();
        let kept = record.clone();
        let size = charge(&record);
        let msg = Msg::Record {
            stream: stream_id,
            record,
            hash_key,
            reply,
        };
        if self.inner.tx.send(msg).is_err() {
            self.inner.budget.release(1, size);
            let kind = PutErrorKind::Stopped;
            return Err(PutError {
                kind,
                stream,
                record: kept,
                attempts: Attempts::default(),
            });
        }
        Ok(RecordFuture {
            state: FutureState::Waiting {
                reply: rx,
                record: Some(kept),
                stream,
            },
        })
    }

    fn stream_id(&self, stream: &str) -> (Arc<str>, usize) {
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
                let _ = self.inner.tx.send(Msg::NewStream {
                    id,
                    name: name.clone(),
                });
                (name, id)
            })
            .clone()
    }

    /// Fetches `stream`'s shard map again now, instead of at the next `ShardMapRefreshInterval`
    /// (for example after resharding the stream yourself). Returns at once; records keep
    /// flowing meanwhile. A stream the producer has not sent to yet is ignored.
    pub fn refresh_shard_map(&self, stream: &str) {
        if let Some(entry) = self.inner.streams.get(stream) {
            let _ = self.inner.tx.send(Msg::Refresh(entry.0.clone()));
        }
    }

    /// Starts sending everything buffered now, without waiting for `RecordMaxBufferedTime` or
    /// full aggregates. Returns at once.
    pub fn flush(&self) {
        let _ = self.inner.tx.send(Msg::Flush);
    }

    /// Flushes, then waits until every record sent before this call has resolved (put, or
    /// failed and handed back).
    ///
    /// # Cancellation
    /// Dropping the future stops the waiting only: the flush has started and the records are
    /// sent regardless.
    pub async fn flush_and_wait(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::FlushWait(tx)).is_ok() {
            // An error means the engine stopped; every future has then resolved already.
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
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
