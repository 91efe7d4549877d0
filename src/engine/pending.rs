//! A user record in the engine, and its one way to be resolved.
//!
//! A record is stored once. The engine's entry ([`Pending`]) owns the record and what the
//! engine needs to know of it; the caller's [`RecordFuture`] and the entry share one small
//! [`Slot`] where the outcome is left and the future's waker waits. The outcome of a record put
//! is a reference to what every user record of its Kinesis record shares ([`Put`]) plus its own
//! sub-sequence number: the receipt is built when the future is polled, not stored per record.
//!
//! Every path that resolves a record goes through [`Pending::resolve`], which hands back what
//! the record held of the budget and its flush epoch for the caller to account. An entry
//! dropped unresolved (the engine stopped: its runtime shut down, a sink panicked) resolves
//! its future as [`PutErrorKind::Stopped`] with the record, so no future waits forever.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use std::time::Instant;

use super::slot::{Failure, Owner, Put, Slot, State, caller_span};
use crate::aggregation::Entry;
use crate::budget::charge;
use crate::outcome::{Attempt, AttemptError, Attempts, PutError, PutErrorKind, Receipt};
use crate::record::UserRecord;

/// How a pending record is resolved.
pub(crate) enum Resolution<'a> {
    /// Put, as user record `sub_sequence_number` of the Kinesis record `put` describes.
    Put {
        put: &'a Arc<Put>,
        sub_sequence_number: u32,
        /// `put.started` as an [`arrival_offset`]: converted once for all the Kinesis record's
        /// user records, not once each.
        started_ns: i64,
    },
    /// Not put, for this reason.
    Failed(PutErrorKind),
}

/// What a resolved record gives back for the caller to account: its share of the budget (one
/// record of `charge` bytes) and the flush epoch it counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) charge: usize,
    pub(crate) epoch: u64,
}

/// A user record in the engine: the record, what the engine knows of it, and the slot its
/// future waits on. Resolved exactly once, by [`resolve`](Self::resolve) or, if the engine drops
/// it, as stopped.
pub(crate) struct Pending {
    record: UserRecord,
    /// Where its outcome goes; `None` once resolved.
    slot: Option<Owner>,
    /// The failed attempts: none for most records, so boxed (room for them is reserved in the
    /// budget with the record: see `budget::RECORD_OVERHEAD`).
    failed: Option<Box<Attempts>>,
    /// When the engine took it in, in nanoseconds after (negative: before) [`base`]: 8 bytes
    /// where an `Instant` takes 16, so that `seq` costs no memory per buffered record (the
    /// bookkeeping bound of `benches/engine.rs`).
    arrival_ns: i64,
    epoch: u64,
    /// Its place in the order the engine took records in: with per-key ordering, records sent
    /// again after a resharding are routed in this order, whatever queue they come from.
    seq: u64,
}

/// The instant arrivals are counted from: read once per process. (Any instant will do: a paused
/// test clock may run before it, hence signed offsets.)
fn base() -> Instant {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    #[allow(clippy::disallowed_methods)]
    let base = *BASE.get_or_init(std::time::Instant::now);
    base
}

/// The instant `ns` nanoseconds from [`base`].
fn instant(ns: i64) -> Instant {
    let b = base();
    let n = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 { b + n } else { b - n }
}

/// `at` as nanoseconds from [`base`] (saturating at about 292 years either way), as a record's
/// arrival is kept.
pub(crate) fn arrival_offset(at: Instant) -> i64 {
    offset(at)
}

/// `at` as nanoseconds from [`base`] (saturating at about 292 years either way).
fn offset(at: Instant) -> i64 {
    let b = base();
    match at.checked_duration_since(b) {
        Some(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        None => -i64::try_from((b - at).as_nanos()).unwrap_or(i64::MAX),
    }
}

impl Entry for Pending {
    fn record(&self) -> &UserRecord {
        &self.record
    }
}

impl Pending {
    /// A record and its future; the entry gets its arrival and flush epoch when the engine
    /// takes it in ([`arrive`](Self::arrive)).
    pub(crate) fn new(record: UserRecord, stream: Arc<str>) -> (Pending, RecordFuture) {
        let slot = Arc::new(Slot {
            state: Mutex::new(State::Waiting(None)),
            caller: caller_span(),
        });
        let future = RecordFuture {
            state: FutureState::Waiting {
                slot: Arc::clone(&slot),
                stream,
            },
        };
        (Pending::owned_by(record, Owner::One(slot)), future)
    }

    /// A record whose outcome goes to `owner`; it gets its arrival and flush epoch when the
    /// engine takes it in.
    pub(super) fn owned_by(record: UserRecord, owner: Owner) -> Pending {
        Pending {
            record,
            slot: Some(owner),
            failed: None,
            // Set by `arrive`; until then the record is in the channel (a placeholder no
            // decision uses: reading the clock per record on the sender's thread would cost).
            arrival_ns: 0,
            epoch: 0,
            seq: 0,
        }
    }

    /// The record is in the spool, at `tag`: its outcome, when it comes, goes there too
    /// ([`Owner::Spooled`]; no field here, so that a producer without a spool keeps every
    /// buffered record as small as before).
    pub(crate) fn spooled(mut self, tag: crate::spool::Tag) -> Pending {
        self.slot = self
            .slot
            .take()
            .map(|owner| Owner::Spooled(Box::new((owner, tag))));
        self
    }

    /// The engine took the record in at the instant whose [`arrival_offset`] is `arrival_ns`,
    /// counted in flush epoch `epoch`, as the `seq`th.
    pub(crate) fn arrive_at(&mut self, arrival_ns: i64, epoch: u64, seq: u64) {
        self.arrival_ns = arrival_ns;
        self.epoch = epoch;
        self.seq = seq;
    }

    /// The flush epoch it counts in.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Its place in the order the engine took records in.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn arrival(&self) -> Instant {
        instant(self.arrival_ns)
    }

    /// When the oldest of `entries` was taken in, if there are any (one conversion from the
    /// stored offsets, not one per record).
    pub(crate) fn oldest_arrival(entries: &[Pending]) -> Option<Instant> {
        entries.iter().map(|p| p.arrival_ns).min().map(instant)
    }

    /// The error of its latest failed attempt, if it made one.
    pub(crate) fn last_error(&self) -> Option<Arc<AttemptError>> {
        self.failed.as_ref()?.last()?.error.clone()
    }

    /// The span the record was sent in, if any.
    pub(crate) fn caller(&self) -> Option<&tracing::Span> {
        self.slot.as_ref().and_then(Owner::caller)
    }

    /// When the record's latest attempt ended (its arrival, before any): the start of the time
    /// it has spent buffered since (the KPL's `BufferingTime` is measured per attempt).
    pub(crate) fn last_end(&self) -> Instant {
        match self.failed.as_ref().and_then(|a| a.last()) {
            Some(a) => self.arrival() + a.delay + a.duration,
            None => self.arrival(),
        }
    }

    /// Attempts made so far: the failed ones (a record is resolved at its first success).
    pub(crate) fn attempts_made(&self) -> usize {
        self.failed.as_ref().map_or(0, |a| a.count())
    }

    /// Records a failed attempt: a call that started at `started` and took `duration`.
    pub(crate) fn record_failure(
        &mut self,
        started: Instant,
        duration: Duration,
        error: Arc<AttemptError>,
    ) {
        let delay = started - self.arrival();
        self.failed.get_or_insert_default().push(Attempt {
            delay,
            duration,
            error: Some(error),
        });
    }

    /// Resolves the record: leaves the outcome for its future and wakes it. The one way a
    /// record is resolved; the caller returns the budget and counts the epoch.
    pub(crate) fn resolve(mut self, how: Resolution<'_>) -> Resolved {
        let resolved = Resolved {
            charge: charge(&self.record),
            epoch: self.epoch,
        };
        let Some(slot) = self.slot.take() else {
            return resolved;
        };
        let failed = self.failed.take();
        slot.fill(match how {
            Resolution::Put {
                put,
                sub_sequence_number,
                started_ns,
            } => State::Put {
                put: Arc::clone(put),
                delay: Duration::from_nanos(
                    started_ns.saturating_sub(self.arrival_ns).max(0) as u64
                ),
                failed,
                sub_sequence_number,
            },
            Resolution::Failed(kind) => State::Failed(Box::new(Failure {
                kind,
                // A clone costs reference counts: the entry is dropped right after.
                record: self.record.clone(),
                attempts: failed.map(|a| *a).unwrap_or_default(),
            })),
        });
        resolved
    }

    /// Takes the record back out of an entry the engine never took in (its channel is closed):
    /// the future is dropped by the caller, who reports the failure itself.
    pub(crate) fn abandon(mut self) -> UserRecord {
        self.slot = None;
        self.record.clone()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.fill(State::Failed(Box::new(Failure {
                kind: PutErrorKind::Stopped,
                record: self.record.clone(),
                attempts: self.failed.take().map(|a| *a).unwrap_or_default(),
            })));
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("record", &self.record)
            .field("arrival", &self.arrival())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// The outcome of one [`Producer::send`](crate::Producer::send): resolves exactly once, to a
/// [`Receipt`] or a [`PutError`] that hands the record back.
///
/// Dropping it does not cancel the send; the record is still put.
#[must_use = "the record is sent either way; the future tells whether it was put"]
pub struct RecordFuture {
    state: FutureState,
}

enum FutureState {
    Waiting {
        slot: Arc<Slot>,
        stream: Arc<str>,
    },
    /// Resolved before it was polled (refused at `send`). Boxed: a future is held per record,
    /// often in a caller's `Vec`, and an unboxed outcome would make every future several
    /// times larger for the rare record refused at once.
    Done(Option<Box<Result<Receipt, PutError>>>),
}

impl RecordFuture {
    /// A future already resolved to `error` (a record refused at `send`).
    pub(crate) fn resolved(error: PutError) -> Self {
        RecordFuture {
            state: FutureState::Done(Some(Box::new(Err(error)))),
        }
    }
}

impl Future for RecordFuture {
    type Output = Result<Receipt, PutError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (slot, stream) = match &mut self.state {
            FutureState::Done(outcome) => {
                return Poll::Ready(
                    *outcome
                        .take()
                        .expect("RecordFuture polled after completion"),
                );
            }
            FutureState::Waiting { slot, stream } => (slot, stream),
        };
        let mut state = slot.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Waiting(waker) => {
                let waker = match waker {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                *state = State::Waiting(Some(waker));
                Poll::Pending
            }
            resolved => Poll::Ready(resolved.into_outcome(stream)),
        }
    }
}

impl std::fmt::Debug for RecordFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordFuture").finish_non_exhaustive()
    }
}

/// Most spans one PutRecords call's span follows from: a call carries records of up to 500
/// aggregates, each of records sent in as many spans; past this many, the rest are not linked.
const MAX_CALLER_LINKS: usize = 32;

/// Makes a call's span follow from each distinct span its records were sent in (the
/// `follows_from` links a tracing layer such as OpenTelemetry's turns into span links), once
/// each and at most [`MAX_CALLER_LINKS`] of them. The caller skips it when the call's span is
/// disabled, so it costs nothing unless debug spans are recorded.
pub(super) fn link_callers<'a>(span: &tracing::Span, entries: impl Iterator<Item = &'a Pending>) {
    let mut linked: smallvec::SmallVec<[tracing::Id; 4]> = smallvec::SmallVec::new();
    for id in entries.filter_map(|p| p.caller().and_then(tracing::Span::id)) {
        if linked.contains(&id) {
            continue;
        }
        if linked.len() == MAX_CALLER_LINKS {
            break;
        }
        span.follows_from(&id);
        linked.push(id);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test picks its own instants from the clock
mod tests {
    use std::task::Waker;

    use super::*;

    fn record() -> UserRecord {
        UserRecord::new("k", &b"data"[..]).unwrap()
    }

    fn poll(f: &mut RecordFuture) -> Poll<Result<Receipt, PutError>> {
        let waker = std::task::Waker::noop();
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_put_record_resolves_to_a_receipt_with_every_attempt() {
        let (mut pending, mut future) = Pending::new(record(), "s".into());
        let t0 = Instant::now();
        pending.arrive_at(arrival_offset(t0), 3, 1);
        assert!(poll(&mut future).is_pending());
        let error = Arc::new(AttemptError::new("InternalFailure", "boom"));
        pending.record_failure(t0, Duration::from_millis(5), error);
        assert_eq!(pending.attempts_made(), 1);
        let put = Arc::new(Put {
            shard_id: "shardId-000000000001".into(),
            sequence_number: "42".into(),
            aggregated: true,
            started: t0 + Duration::from_millis(100),
            duration: Duration::from_millis(7),
        });
        let resolved = pending.resolve(Resolution::Put {
            put: &put,
            sub_sequence_number: 2,
            started_ns: arrival_offset(put.started),
        });
        assert_eq!(resolved.epoch, 3);
        assert_eq!(resolved.charge, charge(&record()));
        let Poll::Ready(Ok(receipt)) = poll(&mut future) else {
            panic!("not resolved to a receipt");
        };
        assert_eq!(&*receipt.stream, "s");
        assert_eq!(&*receipt.shard_id, "shardId-000000000001");
        assert_eq!(receipt.sub_sequence_number, 2);
        assert_eq!(receipt.attempts.count(), 2);
        assert!(!receipt.attempts[0].is_success());
        assert_eq!(receipt.attempts[1].delay, Duration::from_millis(100));
        assert_eq!(receipt.attempts[1].duration, Duration::from_millis(7));
    }

    #[test]
    fn a_failed_record_comes_back_with_its_error() {
        let (pending, mut future) = Pending::new(record(), "s".into());
        pending.resolve(Resolution::Failed(PutErrorKind::Closed));
        let Poll::Ready(Err(e)) = poll(&mut future) else {
            panic!("not resolved to an error");
        };
        assert_eq!(e.kind, PutErrorKind::Closed);
        assert_eq!(e.record, record());
        assert_eq!(&*e.stream, "s");
    }

    #[test]
    fn an_entry_dropped_unresolved_resolves_as_stopped_with_the_record() {
        let (pending, mut future) = Pending::new(record(), "s".into());
        drop(pending);
        let Poll::Ready(Err(e)) = poll(&mut future) else {
            panic!("not resolved");
        };
        assert_eq!(e.kind, PutErrorKind::Stopped);
        assert_eq!(e.record, record());
    }

    #[test]
    fn resolving_wakes_the_task_that_polled() {
        struct Flag(std::sync::atomic::AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(Arc::clone(&flag));
        let (pending, mut future) = Pending::new(record(), "s".into());
        assert!(
            Pin::new(&mut future)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        drop(pending);
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
    }
}
