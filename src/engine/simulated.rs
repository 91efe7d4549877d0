//! The engine's core with its inputs and outputs open, for the deterministic simulation
//! (`tests/simulation.rs`), which drives it as the driver does, on simulated time, against a
//! model of Kinesis. Not part of the API: hidden from the docs, no semver promise.
//!
//! It adds nothing to the core: each method is one of the core's, with the core's private
//! types (a record in the engine, a call, a listing) wrapped, and [`SimCore::deliver`] doing
//! what the driver does with the ledger's outcomes. With several cores
//! ([`SimCore::with_cores`]) it does what the producer and the drivers do around them: each
//! record goes to the core that owns its shard by the table the latest listing made (as the
//! producer's lister keeps it), or, with per-key ordering or before any listing, to the core of
//! its part of the key space; every core hears of streams, flushes, refreshes and shutdown,
//! each has its share of MaxConnections, and a flush-and-wait is done when every core has done
//! it. (Listings are answered per core: the drivers' sharing of one listing among cores only
//! makes some answers arrive together.)

// Hidden internals whose every method is the core's, documented there.
#![allow(missing_docs, missing_debug_implementations)]

use std::sync::Arc;
use std::time::Instant;

use super::batch::Batch;
use super::core::{CallId, Carried, Core, Listed, Listing, Outcomes, Part, Table, core_for};
use super::pending::Pending;
use super::{BatchFuture, RecordFuture};
use crate::aggregation::Entry;
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
    /// The core that made it.
    pub core: usize,
    pub stream: Arc<str>,
    pub entries: Vec<PutEntry>,
}

/// A listing a core asks for (the core's index, its listing).
pub struct SimListing(usize, Listing);

impl SimListing {
    /// The stream to list.
    pub fn stream(&self) -> &str {
        &self.1.name
    }

    /// The core that asked for it.
    pub fn core(&self) -> usize {
        self.0
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

/// The core, or the cores.
pub struct SimCore {
    cores: Vec<Core>,
    outcomes: Outcomes,
    /// The records of each call in flight, as the driver holds them until the answer, with the
    /// core that made it and its number there, by the number the caller knows it by.
    carried: std::collections::HashMap<u64, (usize, CallId, Carried)>,
    next_call: u64,
    /// Flush-and-wait tokens, with how many cores have not done them yet.
    flushing: std::collections::HashMap<u64, usize>,
    /// Records are routed by shard (several cores, no per-key ordering), by this table once a
    /// listing made it, as the producer's lister does.
    by_shard: bool,
    table: Option<Table>,
}

impl SimCore {
    /// A core started at `now`, its jitter drawn from a generator seeded with `seed`.
    pub fn new(config: Config, seed: u64, now: Instant) -> Self {
        SimCore::with_cores(config, seed, now, 1)
    }

    /// `n` cores (at most MaxConnections), each given the records of its part of the key
    /// space, as the producer runs them.
    pub fn with_cores(config: Config, seed: u64, now: Instant, n: usize) -> Self {
        let n = n.clamp(1, config.max_connections);
        let by_shard = n > 1 && !config.per_key_ordering();
        let cores = (0..n)
            .map(|index| {
                let part = Part { index, of: n };
                let mut own = config.clone();
                own.max_connections = part.connections(config.max_connections);
                let rng = fastrand::Rng::with_seed(seed.wrapping_add(index as u64));
                Core::for_part(own, rng, now, part)
            })
            .collect();
        SimCore {
            cores,
            outcomes: Outcomes::default(),
            carried: std::collections::HashMap::new(),
            next_call: 0,
            flushing: std::collections::HashMap::new(),
            by_shard,
            table: None,
        }
    }

    /// How many cores there are.
    pub fn cores(&self) -> usize {
        self.cores.len()
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
        let name: Arc<str> = Arc::from(name);
        for core in &mut self.cores {
            core.add_stream(id, Arc::clone(&name), now);
        }
    }

    /// Hands records to their cores (each core's in the order given), as the producer does.
    pub fn handle_records(&mut self, id: usize, records: Vec<SimRecord>, now: Instant) {
        let n = self.cores.len();
        if n == 1 {
            self.cores[0].handle_records(id, records.into_iter().map(|r| r.0), now);
            return;
        }
        let mut parts: Vec<Vec<Pending>> = (0..n).map(|_| Vec::new()).collect();
        for r in records {
            let core = core_for(self.table.as_ref(), r.0.record().hash_key().0, n);
            parts[core].push(r.0);
        }
        for (core, part) in self.cores.iter_mut().zip(parts) {
            if !part.is_empty() {
                core.handle_records(id, part, now);
            }
        }
    }

    pub fn flush(&mut self) {
        self.cores.iter_mut().for_each(Core::flush);
    }

    pub fn flush_wait(&mut self, token: u64) {
        self.flushing.insert(token, self.cores.len());
        for core in &mut self.cores {
            core.flush_wait(token);
        }
    }

    pub fn refresh(&mut self, stream: &str, now: Instant) {
        for core in &mut self.cores {
            core.refresh(stream, now);
        }
    }

    pub fn close(&mut self) {
        self.cores.iter_mut().for_each(Core::close);
    }

    pub fn is_finished(&self) -> bool {
        self.cores.iter().all(Core::is_finished)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for core in &mut self.cores {
            core.handle_timeout(now);
        }
    }

    /// The next call any core asks for (the first core's first, as each driver makes its
    /// own core's calls).
    pub fn poll_call(&mut self, now: Instant) -> Option<SimCall> {
        for (i, core) in self.cores.iter_mut().enumerate() {
            if let Some(c) = core.poll_call(now) {
                let id = self.next_call;
                self.next_call += 1;
                self.carried.insert(id, (i, c.id, c.carried));
                return Some(SimCall {
                    id,
                    core: i,
                    stream: c.stream,
                    entries: c.entries,
                });
            }
        }
        None
    }

    pub fn handle_put_answer(
        &mut self,
        id: u64,
        answer: Result<Vec<EntryResult>, SinkError>,
        now: Instant,
    ) {
        let (core, local, carried) = self
            .carried
            .remove(&id)
            .expect("an answer to a call in flight");
        self.cores[core].handle_put_answer(local, carried.settle(answer, now), now);
    }

    pub fn poll_listing(&mut self) -> Option<SimListing> {
        self.cores
            .iter_mut()
            .enumerate()
            .find_map(|(i, core)| core.poll_listing().map(|l| SimListing(i, l)))
    }

    pub fn handle_listing(
        &mut self,
        listing: &SimListing,
        shards: Result<Vec<Shard>, SinkError>,
        record_limit: Option<Result<Option<usize>, SinkError>>,
        now: Instant,
    ) {
        if self.by_shard
            && let Ok(shards) = &shards
            && let Some(table) = Table::from_listing(shards, self.cores.len())
        {
            self.table = Some(table);
        }
        let listed = Listed {
            shards,
            record_limit,
        };
        self.cores[listing.0].handle_listing(&listing.1, listed, now);
    }

    /// The earliest instant any core asks to be woken at.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.cores.iter().filter_map(|c| c.poll_timeout(now)).min()
    }

    /// Hands the ledgers' outcomes to their futures, as the drivers do; a flush-and-wait is
    /// done once every core has done it.
    pub fn deliver(&mut self) -> Delivered {
        let mut d = Delivered::default();
        for core in &mut self.cores {
            core.poll_outcomes(&mut self.outcomes);
            for outcome in self.outcomes.resolved.drain(..) {
                d.resolved += outcome.deliver();
            }
            let (records, bytes) = std::mem::take(&mut self.outcomes.released);
            d.released_records += records;
            d.released_bytes += bytes;
            for token in self.outcomes.flushed.drain(..) {
                let left = self.flushing.entry(token).or_insert(1);
                *left -= 1;
                if *left == 0 {
                    self.flushing.remove(&token);
                    d.flushed.push(token);
                }
            }
        }
        d
    }

    /// User records taken in and not resolved, and their charge in bytes.
    pub fn held(&self) -> (usize, usize) {
        self.cores
            .iter()
            .map(Core::held)
            .fold((0, 0), |(r, b), (cr, cb)| (r + cr, b + cb))
    }

    pub fn calls_in_flight(&self) -> usize {
        self.cores.iter().map(Core::calls_in_flight).sum()
    }
}
