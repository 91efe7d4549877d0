//! What the handles and the engine's own tasks tell the engine.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::pending::Pending;
use super::ready::ShardRef;
use super::settle::{Misrouted, NotPut, ShardOutcome};
use crate::shard_map::Shard;
use crate::sink::SinkError;

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

/// What a PutRecords task hands back to the engine: the Kinesis records that were not put (with
/// the attempt recorded), and how many records of each epoch it resolved.
pub(super) struct PutDone {
    pub(super) stream: usize,
    /// The Kinesis records the call carried, and the generation of the stream's shard map when
    /// it was sent.
    pub(super) entries: usize,
    pub(super) generation: u64,
    pub(super) failed: Vec<NotPut>,
    pub(super) resolved: Vec<(u64, u64)>,
    pub(super) outcomes: Vec<ShardOutcome>,
    pub(super) misrouted: Vec<Misrouted>,
    /// Shards that Kinesis put something of on another shard than
    /// predicted: the map is stale there.
    pub(super) stale: Vec<ShardRef>,
    pub(super) finished: Instant,
    /// The call's metrics.
    pub(super) tally: crate::metrics::Tally,
}

pub(super) struct RefreshDone {
    pub(super) stream: usize,
    pub(super) generation: u64,
    pub(super) result: Result<Vec<Shard>, SinkError>,
    /// The stream's own per-record limit (asked for once the listing is in), if known.
    pub(super) record_limit: Option<Result<Option<usize>, SinkError>>,
}
