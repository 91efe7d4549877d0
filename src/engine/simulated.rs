//! The engine's core with its inputs and outputs open, for the deterministic simulation
//! (`tests/simulation.rs`), which drives it as the driver does, on simulated time, against a
//! model of Kinesis. Not part of the API: hidden from the docs, no semver promise.
//!
//! It adds nothing to the core: each method is one of the core's, with the core's private
//! types (a record in the engine, a call, a listing) wrapped, and [`SimCore::deliver`] doing
//! what the driver does with the ledger's outcomes.

// Hidden internals whose every method is the core's, documented there.
#![allow(missing_docs, missing_debug_implementations)]

use std::sync::Arc;
use std::time::Instant;

use super::batch::Batch;
use super::core::{Carried, Core, Listed, Listing, Outcomes};
use super::pending::Pending;
use super::{BatchFuture, RecordFuture};
use crate::config::Config;
use crate::record::UserRecord;
use crate::shard_map::Shard;
use crate::sink::{EntryResult, PutEntry, SinkError};

/// A user record on its way into the core.
pub struct SimRecord(Pending);

/// A PutRecords call the core asks for.
pub struct SimCall {
    /// The call's number, for its answer.
    pub id: u64,
    pub stream: Arc<str>,
    pub entries: Vec<PutEntry>,
}

/// A listing the core asks for.
pub struct SimListing(Listing);

impl SimListing {
    /// The stream to list.
    pub fn stream(&self) -> &str {
        &self.0.name
    }
}

/// What one delivery handed on: user records resolved (their futures now ready), the room they
/// give back to the budget, and the flush waiters that are done.
#[derive(Debug, Default)]
pub struct Delivered {
    pub resolved: usize,
    pub released_records: usize,
    pub released_bytes: usize,
    pub flushed: Vec<u64>,
}

/// The core.
pub struct SimCore {
    core: Core,
    outcomes: Outcomes,
    /// The records of each call in flight, as the driver holds them until the answer.
    carried: std::collections::HashMap<u64, Carried>,
}

impl SimCore {
    /// A core started at `now`, its jitter drawn from a generator seeded with `seed`.
    pub fn new(config: Config, seed: u64, now: Instant) -> Self {
        SimCore {
            core: Core::new(config, fastrand::Rng::with_seed(seed), now),
            outcomes: Outcomes::default(),
            carried: std::collections::HashMap::new(),
        }
    }

    /// A record to hand to the core, and its caller's future.
    pub fn record(record: UserRecord, stream: &str) -> (SimRecord, RecordFuture) {
        let (pending, future) = Pending::new(record, Arc::from(stream));
        (SimRecord(pending), future)
    }

    /// Records to hand to the core together, and the future of the whole batch.
    pub fn batch(records: Vec<UserRecord>, stream: &str) -> (Vec<SimRecord>, BatchFuture) {
        let mut batch = Batch::new(records.len());
        let entries = records
            .into_iter()
            .map(|r| SimRecord(batch.entry(r)))
            .collect();
        (entries, batch.future(Arc::from(stream)))
    }

    /// What a record takes of the budget, in bytes (its count is one record).
    pub fn charge(record: &UserRecord) -> usize {
        crate::budget::charge(record)
    }

    pub fn add_stream(&mut self, id: usize, name: &str, now: Instant) {
        self.core.add_stream(id, Arc::from(name), now);
    }

    pub fn handle_records(&mut self, id: usize, records: Vec<SimRecord>, now: Instant) {
        self.core
            .handle_records(id, records.into_iter().map(|r| r.0), now);
    }

    pub fn flush(&mut self) {
        self.core.flush();
    }

    pub fn flush_wait(&mut self, token: u64) {
        self.core.flush_wait(token);
    }

    pub fn refresh(&mut self, stream: &str, now: Instant) {
        self.core.refresh(stream, now);
    }

    pub fn close(&mut self) {
        self.core.close();
    }

    pub fn is_finished(&self) -> bool {
        self.core.is_finished()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    pub fn poll_call(&mut self, now: Instant) -> Option<SimCall> {
        self.core.poll_call(now).map(|c| {
            self.carried.insert(c.id, c.carried);
            SimCall {
                id: c.id,
                stream: c.stream,
                entries: c.entries,
            }
        })
    }

    pub fn handle_put_answer(
        &mut self,
        id: u64,
        answer: Result<Vec<EntryResult>, SinkError>,
        now: Instant,
    ) {
        let carried = self
            .carried
            .remove(&id)
            .expect("an answer to a call in flight");
        self.core
            .handle_put_answer(id, carried.settle(answer, now), now);
    }

    pub fn poll_listing(&mut self) -> Option<SimListing> {
        self.core.poll_listing().map(SimListing)
    }

    pub fn handle_listing(
        &mut self,
        listing: &SimListing,
        shards: Result<Vec<Shard>, SinkError>,
        record_limit: Option<Result<Option<usize>, SinkError>>,
        now: Instant,
    ) {
        let listed = Listed {
            shards,
            record_limit,
        };
        self.core.handle_listing(&listing.0, listed, now);
    }

    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.core.poll_timeout(now)
    }

    /// Hands the ledger's outcomes to their futures, as the driver does.
    pub fn deliver(&mut self) -> Delivered {
        self.core.poll_outcomes(&mut self.outcomes);
        let mut d = Delivered::default();
        for outcome in self.outcomes.resolved.drain(..) {
            d.resolved += outcome.deliver();
        }
        (d.released_records, d.released_bytes) = std::mem::take(&mut self.outcomes.released);
        d.flushed = std::mem::take(&mut self.outcomes.flushed);
        d
    }

    /// User records taken in and not resolved, and their charge in bytes.
    pub fn held(&self) -> (usize, usize) {
        self.core.held()
    }

    pub fn calls_in_flight(&self) -> usize {
        self.core.calls_in_flight()
    }
}
