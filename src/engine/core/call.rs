//! A PutRecords call: what the core asks the driver to send, the records it lends with it, and
//! what it keeps of the calls in flight.

use std::sync::Arc;
use std::time::Instant;

use super::ledger::{Settlement, settle};
use super::ready::Ready;
use crate::sink::{EntryResult, PutEntry, SinkError};

/// A PutRecords call in flight, by the number the core gave it.
pub(crate) type CallId = u64;

/// A PutRecords call for the driver to make, and answer with
/// [`handle_put_answer`](Core::handle_put_answer).
pub(crate) struct Call {
    pub(crate) id: CallId,
    pub(crate) stream: Arc<str>,
    pub(crate) entries: Vec<PutEntry>,
    /// The call's span: its stream, entries, bytes and attempt, linked to its callers' spans.
    pub(crate) span: tracing::Span,
    /// The call's Kinesis records, lent to the driver with the call so that the answer is read
    /// ([`Carried::settle`], the ledger's pure `settle`) where it arrives, off the core's
    /// thread: reading it on the core's task cost 10 to 18% of the engine's speed
    /// (`cargo bench --bench engine`, before and after in one sitting).
    pub(crate) carried: Carried,
}

/// A call's Kinesis records, on loan to the driver until its answer.
pub(crate) struct Carried {
    pub(super) batch: Vec<Ready>,
    pub(super) started: Instant,
    pub(super) metrics: bool,
}

impl Carried {
    /// Reads the answer to the call, which came at `finished` (see [`settle`]).
    pub(crate) fn settle(
        self,
        answer: Result<Vec<EntryResult>, SinkError>,
        finished: Instant,
    ) -> Answered {
        let settlement = settle(&self.batch, answer, self.started, finished, self.metrics);
        Answered {
            batch: self.batch,
            settlement,
            started: self.started,
            finished,
        }
    }
}

/// A call's records back from the driver, with what its answer says of each.
pub(crate) struct Answered {
    pub(super) batch: Vec<Ready>,
    pub(super) settlement: Settlement,
    pub(super) started: Instant,
    pub(super) finished: Instant,
}

/// A call in flight: from which stream, how many Kinesis records, under which map.
pub(super) struct InFlight {
    pub(super) stream: usize,
    pub(super) entries: usize,
    pub(super) generation: u64,
    /// How many times its stream had been found missing when it was sent.
    pub(super) missing: u64,
}
