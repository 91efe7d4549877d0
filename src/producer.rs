//! The public handle: send, flush, shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::engine::{Delivered, Engine, Failure, Msg, Outcome};
use crate::error::RecordError;
use crate::record::{Attempts, Receipt, UserRecord};
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
        /// The last attempt's error code and message.
        last_error: String,
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record with partition key {:?} for stream {stream} not put after {} attempts: {kind}", record.partition_key(), attempts.len())]
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
    Done(Option<Result<Receipt, PutError>>),
}

impl RecordFuture {
    fn failed(kind: PutErrorKind, stream: Arc<str>, record: UserRecord) -> Self {
        RecordFuture {
            state: FutureState::Done(Some(Err(PutError {
                kind,
                stream,
                record,
                attempts: Attempts::default(),
            }))),
        }
    }
}

impl Future for RecordFuture {
    type Output = Result<Receipt, PutError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            FutureState::Done(outcome) => Poll::Ready(
                outcome
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
        let engine = Engine::new(config, sink);
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
    pub fn send(&self, stream: &str, record: UserRecord) -> RecordFuture {
        let (stream, stream_id) = self.stream_id(stream);
        if self.inner.closed.load(Ordering::Acquire) {
            return RecordFuture::failed(PutErrorKind::Closed, stream, record);
        }
        let (reply, rx) = oneshot::channel();
        // The hash key (an MD5 when there is no explicit key) is computed here, on the
        // caller's thread, so that many senders share the hashing the engine would do alone.
        let hash_key = record.hash_key();
        let kept = record.clone();
        let msg = Msg::Record {
            stream: stream_id,
            record,
            hash_key,
            reply,
        };
        if let Err(mpsc::error::SendError(msg)) = self.inner.tx.send(msg) {
            drop(msg);
            return RecordFuture::failed(PutErrorKind::Stopped, stream, kept);
        }
        RecordFuture {
            state: FutureState::Waiting {
                reply: rx,
                record: Some(kept),
                stream,
            },
        }
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
