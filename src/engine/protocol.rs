//! What the handles tell the engine.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::pending::Pending;

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
    /// Records sent together ([`Producer::send_all`](crate::Producer::send_all)), in order.
    Records {
        stream: usize,
        entries: Vec<Pending>,
    },
    Flush,
    /// Fetch this stream's shard map again now.
    Refresh(Arc<str>),
    FlushWait(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}
