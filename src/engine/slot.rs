//! Where a record's outcome meets its future: the [`Slot`] a record's own future waits on, or
//! its place in the [`BatchSlot`] a batch's future shares ([`Owner`]); the [`State`] left there,
//! built into the caller's `Receipt` or `PutError` when the future is polled; and [`Put`], what
//! the user records of one Kinesis record share once it is put (one allocation per Kinesis
//! record, not per user record).

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use std::time::Instant;
use tracing::Level;

use crate::outcome::{Attempt, Attempts, PutError, PutErrorKind, Receipt};
use crate::record::UserRecord;

/// What the user records of one Kinesis record share once it is put: one allocation per
/// Kinesis record, not per user record.
#[derive(Debug)]
pub(crate) struct Put {
    pub(crate) shard_id: Arc<str>,
    pub(crate) sequence_number: Arc<str>,
    pub(crate) aggregated: bool,
    /// When the successful call started, and how long it took.
    pub(crate) started: Instant,
    pub(crate) duration: Duration,
}

/// Where the outcome meets the future.
pub(super) struct Slot {
    pub(super) state: Mutex<State>,
    /// The span the record was sent in, when debug spans are recorded: the PutRecords calls
    /// that carry it follow from that span. Here, not in the engine's entry, which moves from
    /// queue to queue; boxed, as it is most often absent.
    pub(super) caller: Option<Box<tracing::Span>>,
}

pub(super) enum State {
    /// Not resolved yet; the waker of the task that last polled the future.
    Waiting(Option<Waker>),
    Put {
        put: Arc<Put>,
        /// From the record's arrival to the start of the call that put it.
        delay: Duration,
        /// The failed attempts before, if there were any.
        failed: Option<Box<Attempts>>,
        sub_sequence_number: u32,
    },
    /// Failures are rare: boxed, so that they do not make every slot larger.
    Failed(Box<Failure>),
    /// The future took the outcome.
    Taken,
}

pub(super) struct Failure {
    pub(super) kind: PutErrorKind,
    pub(super) record: UserRecord,
    pub(super) attempts: Attempts,
}

impl Slot {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is held for a few moves, never across a panic that matters: a poisoned
        // slot's state is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves the outcome and wakes the future, if it is waiting.
    pub(super) fn fill(&self, outcome: State) {
        let previous = std::mem::replace(&mut *self.lock(), outcome);
        if let State::Waiting(Some(waker)) = previous {
            waker.wake();
        }
    }
}

/// Where a batch's outcomes meet its future.
pub(crate) struct BatchSlot {
    pub(super) state: Mutex<Outcomes>,
    /// The span the batch was sent in, when debug spans are recorded (see `Slot::caller`).
    pub(super) caller: Option<Box<tracing::Span>>,
}

pub(super) struct Outcomes {
    /// One per record, in the order they were given.
    pub(super) each: Vec<State>,
    /// Records not resolved yet.
    pub(super) remaining: usize,
    /// The waker of the task that last polled the future.
    pub(super) waker: Option<Waker>,
    /// The future took the outcomes.
    pub(super) taken: bool,
}

impl BatchSlot {
    pub(super) fn lock(&self) -> MutexGuard<'_, Outcomes> {
        // Held for a move and a count, never across a panic that matters (see `Slot::lock`).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves record `index`'s outcome; the last one wakes the future.
    pub(super) fn fill(&self, index: usize, outcome: State) {
        let waker = {
            let mut state = self.lock();
            state.each[index] = outcome;
            state.remaining -= 1;
            if state.remaining == 0 {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(super) fn caller(&self) -> Option<&tracing::Span> {
        self.caller.as_deref()
    }
}

/// Where a pending record's outcome goes: the slot of its own future, or its place in the
/// slot its batch's future shares ([`Producer::send_all`](crate::Producer::send_all)).
pub(super) enum Owner {
    One(Arc<Slot>),
    Batch(Arc<BatchSlot>, u32),
    /// A record kept in the spool (`SpoolDirectory`), at this place: its outcome is noted
    /// there too. Boxed: the spool's records pay for it, the others keep a 16-byte owner.
    Spooled(Box<(Owner, crate::spool::Tag)>),
}

impl Owner {
    pub(super) fn fill(&self, outcome: State) {
        match self {
            Owner::One(slot) => slot.fill(outcome),
            Owner::Batch(batch, index) => batch.fill(*index as usize, outcome),
            Owner::Spooled(spooled) => {
                let (owner, tag) = &**spooled;
                match &outcome {
                    State::Put { .. } => tag.resolved(true),
                    // Stopped (the engine went away) is not an outcome: the record stays in
                    // the spool, for the next producer to send.
                    State::Failed(f) if f.kind == PutErrorKind::Stopped => {}
                    // Handed back to its caller (or, recovered, kept to send again).
                    State::Failed(_) => tag.resolved(false),
                    State::Waiting(_) | State::Taken => {}
                }
                owner.fill(outcome);
            }
        }
    }

    pub(super) fn caller(&self) -> Option<&tracing::Span> {
        match self {
            Owner::One(slot) => slot.caller.as_deref(),
            Owner::Batch(batch, _) => batch.caller(),
            Owner::Spooled(spooled) => spooled.0.caller(),
        }
    }
}

/// The span a record sent now is sent in, when the calls' spans are recorded (debug, the
/// engine's target) and there is anything to link: otherwise this is one atomic load (the
/// subscribers' maximum level).
pub(super) fn caller_span() -> Option<Box<tracing::Span>> {
    if tracing::span_enabled!(target: "kinesis_producer::engine", Level::DEBUG) {
        Some(tracing::Span::current())
            .filter(|s| !s.is_none())
            .map(Box::new)
    } else {
        None
    }
}

impl State {
    /// What the future of a record resolved to this state returns: the receipt is built here,
    /// from what the user records of its Kinesis record share.
    ///
    /// # Panics
    /// On a state with no outcome (waiting, or taken already): a future polled after it
    /// completed.
    #[allow(clippy::result_large_err)] // the error hands the record back by value
    pub(super) fn into_outcome(self, stream: &Arc<str>) -> Result<Receipt, PutError> {
        match self {
            State::Put {
                put,
                delay,
                failed,
                sub_sequence_number,
            } => {
                let mut attempts = failed.map(|a| *a).unwrap_or_default();
                attempts.push(Attempt {
                    delay,
                    duration: put.duration,
                    error: None,
                });
                Ok(Receipt {
                    stream: Arc::clone(stream),
                    shard_id: Arc::clone(&put.shard_id),
                    sequence_number: Arc::clone(&put.sequence_number),
                    sub_sequence_number: u64::from(sub_sequence_number),
                    aggregated: put.aggregated,
                    attempts,
                })
            }
            State::Failed(failure) => {
                let Failure {
                    kind,
                    record,
                    attempts,
                } = *failure;
                Err(PutError {
                    kind,
                    stream: Arc::clone(stream),
                    record,
                    attempts,
                })
            }
            State::Waiting(_) | State::Taken => panic!("a record future polled after completion"),
        }
    }

    /// A record refused before the engine took it, with the reason.
    pub(super) fn refused(kind: PutErrorKind, record: UserRecord) -> State {
        State::Failed(Box::new(Failure {
            kind,
            record,
            attempts: Attempts::default(),
        }))
    }
}
