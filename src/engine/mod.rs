//! The engine: a sans-I/O [`core`] that makes every decision, and the [`driver`] that runs it on
//! tokio against a [`Sink`](crate::sink::Sink).
//!
//! ```text
//!  handles ── Msg (one unbounded channel) ──▶ driver ── handle_records / handle_timeout ──▶ core
//!                                               │  ◀── poll_call / poll_listing ──────────────┤
//!                                 sink calls in tasks ── handle_put_answer / handle_listing ─▶│
//!  futures, budget, flush waiters ◀── deliver ◀─┴── poll_outcomes (the ledger's decisions) ───┘
//! ```
//!
//! - `core`: streams, shard maps, aggregators, ready lanes, limiters, retries, the calls in
//!   flight and the ledger; no clock, no sink, no channel, no task (see its docs);
//! - `driver`: the only engine code that touches tokio, the sink and the clock;
//! - `protocol`: the messages from the handles;
//! - `pending`, `slot`, `batch`: a user record in the engine and the future its caller holds.
//!
//! Only the driver's task touches the core, so nothing in it is locked. Handles talk to it
//! through one unbounded channel (`send` never blocks); each record carries the slot its future
//! waits on.

mod batch;
mod core;
mod driver;
mod lister;
mod pending;
mod protocol;
pub mod simulated;
mod slot;

pub(crate) use batch::Batch;
pub use batch::BatchFuture;
pub(crate) use core::{Part, Table, core_for};
pub(crate) use driver::{Engine, clock, recorder};
pub(crate) use lister::Lister;
pub(crate) use pending::Pending;
pub use pending::RecordFuture;
pub(crate) use protocol::Msg;
