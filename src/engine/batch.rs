//! Many records sent at once ([`Producer::send_all`](crate::Producer::send_all)): one slot holds
//! the outcomes of the whole batch, in order, and its future is woken once, when the last record
//! resolves.
//!
//! Each record is still its own entry in the engine (it may go in another aggregate, call or
//! retry than its neighbours); what the batch shares is what is per record on the single path:
//! the slot's allocation and its reference counts, the wake-up, and the future the caller holds.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use super::pending::Pending;
use super::slot::{BatchSlot, Outcomes, Owner, State, caller_span};
use crate::outcome::{PutError, PutErrorKind, Receipt};
use crate::record::UserRecord;

/// A batch being made: each record, in order, becomes an entry for the engine or is refused.
pub(crate) struct Batch {
    slot: Arc<BatchSlot>,
    next: u32,
}

impl Batch {
    /// A batch of `len` records.
    ///
    /// # Panics
    /// With more than `u32::MAX` records.
    pub(crate) fn new(len: usize) -> Batch {
        assert!(u32::try_from(len).is_ok(), "a batch of {len} records");
        let each = std::iter::repeat_with(|| State::Waiting(None))
            .take(len)
            .collect();
        Batch {
            slot: Arc::new(BatchSlot {
                state: Mutex::new(Outcomes {
                    each,
                    remaining: len,
                    waker: None,
                    taken: false,
                }),
                caller: caller_span(),
            }),
            next: 0,
        }
    }

    /// The next record's entry for the engine.
    pub(crate) fn entry(&mut self, record: UserRecord) -> Pending {
        let index = self.next;
        self.next += 1;
        Pending::owned_by(record, Owner::Batch(Arc::clone(&self.slot), index))
    }

    /// The next record, refused before the engine took it.
    pub(crate) fn refuse(&mut self, kind: PutErrorKind, record: UserRecord) {
        let index = self.next as usize;
        self.next += 1;
        self.slot.fill(index, State::refused(kind, record));
    }

    /// The future of the batch, once every record is an entry or refused.
    pub(crate) fn future(self, stream: Arc<str>) -> BatchFuture {
        debug_assert_eq!(self.next as usize, self.slot.lock().each.len());
        BatchFuture {
            slot: self.slot,
            stream,
        }
    }
}

/// The outcome of one [`Producer::send_all`](crate::Producer::send_all): resolves once every
/// record of the batch has, to each record's outcome in the order the records were given (a
/// [`Receipt`], or a [`PutError`] that hands the record back).
///
/// Dropping it does not cancel the sends; the records are still put.
#[must_use = "the records are sent either way; the future tells whether each was put"]
pub struct BatchFuture {
    slot: Arc<BatchSlot>,
    stream: Arc<str>,
}

impl Future for BatchFuture {
    type Output = Vec<Result<Receipt, PutError>>;

    /// # Panics
    /// When polled after it completed.
    #[allow(clippy::result_large_err)] // each error hands its record back by value
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.slot.lock();
        assert!(!state.taken, "BatchFuture polled after completion");
        if state.remaining > 0 {
            match &state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        state.taken = true;
        let each = std::mem::take(&mut state.each);
        drop(state);
        let stream = &self.stream;
        Poll::Ready(each.into_iter().map(|s| s.into_outcome(stream)).collect())
    }
}

impl std::fmt::Debug for BatchFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchFuture")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test picks its own instants from the clock
mod tests {
    use std::task::Waker;

    use super::*;
    use crate::engine::pending::Resolution;
    use crate::engine::slot::Put;

    fn record(i: usize) -> UserRecord {
        UserRecord::new(format!("k{i}"), format!("data {i}")).unwrap()
    }

    fn poll(f: &mut BatchFuture) -> Poll<Vec<Result<Receipt, PutError>>> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn outcomes_come_back_in_the_order_given_whatever_order_they_resolve_in() {
        let mut batch = Batch::new(4);
        let first = batch.entry(record(0));
        batch.refuse(PutErrorKind::Closed, record(1));
        let third = batch.entry(record(2));
        let fourth = batch.entry(record(3));
        let mut future = batch.future("s".into());
        let put = Arc::new(Put {
            shard_id: "shardId-000000000000".into(),
            sequence_number: "7".into(),
            aggregated: true,
            started: std::time::Instant::now(),
            duration: std::time::Duration::from_millis(3),
        });
        fourth.resolve(Resolution::Put {
            put: &put,
            sub_sequence_number: 0,
            started_ns: crate::engine::pending::arrival_offset(put.started),
        });
        drop(third); // an entry the engine dropped resolves as stopped
        assert!(
            poll(&mut future).is_pending(),
            "one record still unresolved"
        );
        first.resolve(Resolution::Put {
            put: &put,
            sub_sequence_number: 1,
            started_ns: crate::engine::pending::arrival_offset(put.started),
        });
        let Poll::Ready(outcomes) = poll(&mut future) else {
            panic!("every record resolved");
        };
        assert_eq!(outcomes.len(), 4);
        assert_eq!(outcomes[0].as_ref().unwrap().sub_sequence_number, 1);
        let refused = outcomes[1].as_ref().unwrap_err();
        assert_eq!(
            (&refused.kind, &refused.record),
            (&PutErrorKind::Closed, &record(1))
        );
        let stopped = outcomes[2].as_ref().unwrap_err();
        assert_eq!(
            (&stopped.kind, &stopped.record),
            (&PutErrorKind::Stopped, &record(2))
        );
        assert_eq!(outcomes[3].as_ref().unwrap().sub_sequence_number, 0);
        assert!(outcomes.iter().all(|o| match o {
            Ok(r) => &*r.stream == "s",
            Err(e) => &*e.stream == "s",
        }));
    }

    #[test]
    fn the_last_record_wakes_the_future_once() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(Arc::clone(&count));
        let mut batch = Batch::new(3);
        let entries: Vec<_> = (0..3).map(|i| batch.entry(record(i))).collect();
        let mut future = batch.future("s".into());
        let polled = Pin::new(&mut future).poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending());
        for entry in entries {
            entry.resolve(Resolution::Failed(PutErrorKind::Closed));
        }
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(poll(&mut future).is_ready());
    }

    #[test]
    fn an_empty_batch_resolves_at_once() {
        let mut future = Batch::new(0).future("s".into());
        assert_eq!(poll(&mut future).map(|o| o.len()), Poll::Ready(0));
    }
}
