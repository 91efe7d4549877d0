//! The ledger: the one place a record's outcome is decided and accounted. Its future's outcome,
//! its room in the budget, its flush epoch and its metrics all change here, together, and
//! nowhere else.
//!
//! A PutRecords answer is read by [`settle`], a pure function of the call's Kinesis records and
//! the answer: what happened to each entry, what the rate limiters learn, which shards the
//! answer showed stale, and the call's metrics. The core applies the [`Settlement`]; every user
//! record it resolves goes through [`Ledger::put`] or [`Ledger::fail`], which leave the outcome
//! for the driver to hand to the record's future ([`Outcome`]), count the room to give back to
//! the budget, and count the record out of its flush epoch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::epochs::Epochs;
use super::ready::{Ready, ShardRef};
use crate::aggregation::{Entry, KinesisRecord};
use crate::budget::charge;
use crate::engine::pending::{Pending, Resolution};
use crate::engine::slot::Put;
use crate::error::{ErrorClass, classify};
use crate::metrics::tally::{Puts, Tally, ms, user_record_failed};
use crate::metrics::{Gather, Level, Name};
use crate::outcome::{AttemptError, PutErrorKind};
use crate::sink::{EntryResult, SinkError};

/// A record's outcome, decided: for the driver to leave in its future.
pub(crate) enum Outcome {
    /// The user records of one Kinesis record, put as `put` says; each one's sub-sequence
    /// number is its place among them.
    Put {
        put: Arc<Put>,
        entries: Vec<Pending>,
        /// Their Kinesis record, spent: dropped where the outcome is delivered, off the core's
        /// task (its data's last reference is freed there).
        record: KinesisRecord,
    },
    /// A user record not put, for this reason.
    Failed {
        pending: Pending,
        kind: PutErrorKind,
    },
}

impl Outcome {
    /// Leaves the outcome in the future(s) and wakes them; gives how many user records.
    pub(crate) fn deliver(self) -> usize {
        match self {
            Outcome::Put {
                put,
                entries,
                record,
            } => {
                let n = entries.len();
                let started_ns = crate::engine::pending::arrival_offset(put.started);
                for (n, pending) in entries.into_iter().enumerate() {
                    pending.resolve(Resolution::Put {
                        put: &put,
                        sub_sequence_number: n as u32,
                        started_ns,
                    });
                }
                // Freed here, after the futures are woken, not on the core's task.
                drop(record);
                n
            }
            Outcome::Failed { pending, kind } => {
                pending.resolve(Resolution::Failed(kind));
                1
            }
        }
    }
}

/// What the ledger has for the driver since it last asked: outcomes to deliver, room to give
/// back to the budget, flush waiters whose records have all resolved.
#[derive(Default)]
pub(crate) struct Outcomes {
    pub(crate) resolved: Vec<Outcome>,
    /// User records and bytes (as the budget charges them) resolved.
    pub(crate) released: (usize, usize),
    /// Tokens of `flush_and_wait` waiters that are done.
    pub(crate) flushed: Vec<u64>,
}

impl Outcomes {
    pub(crate) fn is_empty(&self) -> bool {
        self.resolved.is_empty() && self.released == (0, 0) && self.flushed.is_empty()
    }
}

/// The ledger: flush epochs, the charge of what the core holds, the metrics gathered, and the
/// outcomes decided but not yet delivered.
pub(super) struct Ledger {
    epochs: Epochs,
    gather: Gather,
    out: Outcomes,
    /// User records taken in and not resolved, and their charge in bytes.
    held: (usize, usize),
    /// The last instant records were taken in at, as the offset arrivals are kept in: a turn
    /// takes many records in at one instant, and the conversion cost 80 instructions a record.
    arrival: Option<(Instant, i64)>,
}

impl Ledger {
    pub(super) fn new(level: Level) -> Self {
        Ledger {
            epochs: Epochs::new(),
            gather: Gather::new(level),
            out: Outcomes::default(),
            held: (0, 0),
            arrival: None,
        }
    }

    pub(super) fn add_stream(&mut self) {
        self.gather.add_stream();
    }

    /// Takes a record of stream `stream` in at `now`, as the `seq`th.
    pub(super) fn take_in(&mut self, stream: usize, pending: &mut Pending, now: Instant, seq: u64) {
        let ns = match self.arrival {
            Some((at, ns)) if at == now => ns,
            _ => {
                let ns = crate::engine::pending::arrival_offset(now);
                self.arrival = Some((now, ns));
                ns
            }
        };
        pending.arrive_at(ns, self.epochs.add(), seq);
        self.gather.received(stream, now);
        self.held.0 += 1;
        self.held.1 += charge(pending.record());
    }

    /// A `flush_and_wait` waiter, `token`, for every record taken in so far.
    pub(super) fn flush_wait(&mut self, token: u64) {
        self.epochs.wait(token);
    }

    /// What the core holds: user records taken in and not resolved, and their charge.
    pub(super) fn held(&self) -> (usize, usize) {
        self.held
    }

    pub(super) fn gather(&mut self) -> &mut Gather {
        &mut self.gather
    }

    /// A PutRecords call's metrics.
    pub(super) fn call(&mut self, stream: usize, tally: Tally) {
        self.gather.call(stream, tally);
    }

    /// Counts records out: their room and their flush epochs.
    pub(super) fn count_out(&mut self, counted: &Counted) {
        for &(epoch, n) in &counted.epochs {
            self.epochs.resolve_many(epoch, n);
        }
        self.held.0 -= counted.records;
        self.held.1 -= counted.bytes;
        self.out.released.0 += counted.records;
        self.out.released.1 += counted.bytes;
    }

    /// The user records of one Kinesis record put as `put` says, already counted out with the
    /// rest of their call's (`Settlement::put`, passed to [`count_out`](Self::count_out)); their
    /// metrics were counted with the call's.
    pub(super) fn put_settled(&mut self, ready: Ready, put: Arc<Put>) {
        let (entries, record) = (ready.entries, ready.record);
        self.out.resolved.push(Outcome::Put {
            put,
            entries,
            record,
        });
    }

    /// The user records of one Kinesis record put as `put` says, counted out here (not with
    /// their call's: see `Core::handle_put_answer`).
    pub(super) fn put(&mut self, ready: Ready, put: Arc<Put>) {
        self.count_out(&Counted::of(&ready.entries));
        self.put_settled(ready, put);
    }

    /// The user records of one Kinesis record of stream `stream`, put as `put` says, counted
    /// in the metrics here (an aggregate verified after its call: see `mapping::verify`).
    pub(super) fn put_verified(&mut self, stream: usize, ready: Ready, put: Arc<Put>) {
        let tally = self.gather.tally(stream);
        if tally.on {
            let mut puts = Puts::new(put.started);
            for pending in &ready.entries {
                puts.add(
                    pending.record().data().len(),
                    pending.last_end(),
                    pending.attempts_made(),
                );
                tally.resolved_arrival(pending.arrival());
            }
            puts.into_group(tally.group(Some(&put.shard_id), None));
        } else {
            for pending in &ready.entries {
                tally.resolved_arrival(pending.arrival());
            }
        }
        self.put(ready, put);
    }

    /// A user record of stream `stream` that was not put, for reason `kind`.
    pub(super) fn fail(&mut self, stream: usize, pending: Pending, kind: PutErrorKind) {
        let tally = self.gather.tally(stream);
        if tally.on {
            // Failures are counted for the stream: the core no longer knows their shard.
            let expired = matches!(kind, PutErrorKind::Expired { .. });
            user_record_failed(tally.group(None, None), pending.attempts_made(), expired);
        }
        tally.resolved_arrival(pending.arrival());
        self.count_out(&Counted::of(std::iter::once(&pending)));
        self.out.resolved.push(Outcome::Failed { pending, kind });
    }

    /// Hands what was decided since the last call to `into` (appended).
    pub(super) fn take(&mut self, into: &mut Outcomes) {
        into.resolved.append(&mut self.out.resolved);
        into.released.0 += std::mem::take(&mut self.out.released.0);
        into.released.1 += std::mem::take(&mut self.out.released.1);
        self.epochs.take_done(&mut into.flushed);
    }
}

/// An aggregate that was put, but on another shard than the one it was built for.
pub(super) struct Misrouted {
    pub(super) ready: Ready,
    pub(super) shard_id: Arc<str>,
    pub(super) sequence_number: Arc<str>,
    pub(super) started: Instant,
    pub(super) duration: Duration,
}

/// For the rate limiters: the (shard index, map generation) an entry was sent to, its size, and
/// whether the shard accepted it (`Some(true)`), throttled it (`Some(false)`) or neither (a 500,
/// a broken connection: nothing learnt about the shard's rate).
pub(super) type ShardOutcome = (ShardRef, usize, Option<bool>);

/// What happened to one entry of a call.
pub(super) enum EntryFate {
    /// Put where it was predicted to go (or with no prediction): its records are resolved.
    Put(Arc<Put>),
    /// An aggregate put on another shard than predicted: whether consumers keep it depends on
    /// that shard's range (see `mapping::verify`).
    Misrouted {
        shard_id: Arc<str>,
        sequence_number: Arc<str>,
    },
    /// Not put: the error (shared by its user records' attempts) and its class.
    Failed {
        error: Arc<AttemptError>,
        class: ErrorClass,
    },
}

/// What a PutRecords answer says, entry by entry, and what follows from it.
pub(super) struct Settlement {
    /// One per entry of the call, in its order.
    pub(super) fates: Vec<EntryFate>,
    pub(super) outcomes: Vec<ShardOutcome>,
    /// Shards that Kinesis put something of on another shard than predicted: the map is stale
    /// there.
    pub(super) stale: Vec<ShardRef>,
    /// The call's metrics.
    pub(super) tally: Tally,
    /// What the records put (`EntryFate::Put`) count out of the ledger, found here, where the
    /// answer is read, so that applying it does not visit each record again.
    pub(super) put: Counted,
}

/// User records counted out together: how many, their charge in bytes as the budget counts it,
/// and how many in each flush epoch (in runs).
#[derive(Debug, Default)]
pub(super) struct Counted {
    records: usize,
    bytes: usize,
    epochs: Vec<(u64, u64)>,
}

impl Counted {
    fn add(&mut self, pending: &Pending) {
        self.records += 1;
        self.bytes += charge(pending.record());
        match self.epochs.last_mut() {
            Some((epoch, n)) if *epoch == pending.epoch() => *n += 1,
            _ => self.epochs.push((pending.epoch(), 1)),
        }
    }

    fn of<'a>(entries: impl IntoIterator<Item = &'a Pending>) -> Counted {
        let mut c = Counted::default();
        for pending in entries {
            c.add(pending);
        }
        c
    }
}

/// Reads a PutRecords answer for the Kinesis records `batch`, sent at `started` and answered at
/// `finished`: pure, a function of its inputs only. The call's metrics are gathered when
/// `metrics` (MetricsLevel is not none), including those of the records it puts.
pub(super) fn settle(
    batch: &[Ready],
    answer: Result<Vec<EntryResult>, SinkError>,
    started: Instant,
    finished: Instant,
    metrics: bool,
) -> Settlement {
    let duration = finished.saturating_duration_since(started);
    let mut tally = Tally::new(metrics);
    // A call that failed as a whole counts one error for the stream, as the KPL counts it
    // (`Retrier::emit_metrics` in aws/kinesis/core/retrier.cc), not one per entry.
    let whole_call_error = match &answer {
        Ok(r) if r.len() == batch.len() => None,
        Ok(_) => Some("MalformedResponse".to_owned()),
        Err(e) => Some(e.code.clone()),
    };
    if metrics {
        call_metrics(&mut tally, batch, duration, whole_call_error.as_deref());
    }
    // A call that failed as a whole fails every entry with one shared error.
    let whole_call = |e: AttemptError| {
        let e = Arc::new(e);
        (0..batch.len())
            .map(|_| Err(Arc::clone(&e)))
            .collect::<Vec<_>>()
    };
    let results: Vec<Result<(String, String), Arc<AttemptError>>> = match answer {
        Ok(results) if results.len() == batch.len() => results
            .into_iter()
            .map(|r| match r {
                EntryResult::Put {
                    shard_id,
                    sequence_number,
                } => Ok((shard_id, sequence_number)),
                // One error per failed Kinesis record, shared by its user records.
                EntryResult::Failed { code, message } => {
                    Err(Arc::new(AttemptError::new(code, message)))
                }
            })
            .collect(),
        Ok(results) => whole_call(AttemptError::new(
            "MalformedResponse",
            format!("{} results for {} entries", results.len(), batch.len()),
        )),
        Err(e) => whole_call(e.to_attempt_error()),
    };
    let mut fates = Vec::with_capacity(batch.len());
    let mut put = Counted::default();
    let mut outcomes = Vec::new();
    let mut stale = Vec::new();
    for (ready, result) in batch.iter().zip(results) {
        let class = result.as_ref().err().map(|e| classify(&e.code));
        // The group of the shard the entry was predicted for: looked up once per entry.
        let group = metrics.then(|| tally.index(ready.expected.as_ref(), None));
        if let Some(g) = group {
            let answered = whole_call_error.is_none();
            entry_metrics(&mut tally, g, ready, answered.then_some(&result), class);
        }
        if let Some(shard) = ready.shard {
            let accepted = match class {
                None => Some(true),
                Some(ErrorClass::Throttled) => Some(false),
                Some(_) => None,
            };
            outcomes.push((shard, ready.record.size(), accepted));
        }
        match result {
            Ok((shard_id, sequence_number)) => {
                let (shard_id, sequence_number): (Arc<str>, Arc<str>) =
                    (shard_id.into(), sequence_number.into());
                if ready.expected.as_ref().is_some_and(|e| *e != shard_id) {
                    stale.extend(ready.shard);
                    // A plain record is where its own key put it; an aggregate went where its
                    // first record's key put it, and the others may be outside that shard.
                    if ready.record.aggregated {
                        fates.push(EntryFate::Misrouted {
                            shard_id,
                            sequence_number,
                        });
                        continue;
                    }
                }
                // Before any map (no prediction), the group of the shard that took it.
                let group = match group {
                    Some(_) if ready.expected.is_none() => Some(tally.index(Some(&shard_id), None)),
                    g => g,
                };
                let mut puts = Puts::new(started);
                for pending in &ready.entries {
                    put.add(pending);
                    if group.is_some() {
                        let data = pending.record().data().len();
                        puts.add(data, pending.last_end(), pending.attempts_made());
                    }
                    tally.resolved_arrival(pending.arrival());
                }
                if let Some(g) = group {
                    puts.into_group(&mut tally.groups[g]);
                }
                fates.push(EntryFate::Put(Arc::new(Put {
                    shard_id,
                    sequence_number,
                    aggregated: ready.record.aggregated,
                    started,
                    duration,
                })));
            }
            Err(error) => {
                if let Some(g) = group {
                    for pending in &ready.entries {
                        let buffering = started.saturating_duration_since(pending.last_end());
                        tally.groups[g].put(Name::BufferingTime, ms(buffering));
                    }
                }
                fates.push(EntryFate::Failed {
                    error,
                    class: class.unwrap_or(ErrorClass::Transient),
                });
            }
        }
    }
    Settlement {
        fates,
        outcomes,
        stale,
        tally,
        put,
    }
}

/// The metrics of the call as a whole (stream level): its time, its entries and user records,
/// and its error if it failed as a whole (the entries' own are added by `entry_metrics`).
fn call_metrics(tally: &mut Tally, batch: &[Ready], duration: Duration, error: Option<&str>) {
    let users: usize = batch.iter().map(|r| r.entries.len()).sum();
    let g = tally.group(None, None);
    g.put(Name::RequestTime, ms(duration));
    g.put(Name::KinesisRecordsPerPutRecordsRequest, batch.len() as f64);
    g.put(Name::UserRecordsPerPutRecordsRequest, users as f64);
    if let Some(code) = error {
        g.put(Name::AllErrors, 1.0);
        tally
            .group(None, Some(&Arc::from(code)))
            .put(Name::ErrorsByCode, 1.0);
    }
}

/// The metrics of one entry, in group `g` (its predicted shard's), as the KPL counts them
/// (`Retrier::handle_put_records_result` and `emit_metrics`): its user records, and when the
/// call was answered (`result`), put or not, its size, its error.
fn entry_metrics(
    tally: &mut Tally,
    g: usize,
    ready: &Ready,
    result: Option<&Result<(String, String), Arc<AttemptError>>>,
    class: Option<ErrorClass>,
) {
    let users = ready.entries.len() as f64;
    tally.groups[g].put(Name::UserRecordsPerKinesisRecord, users);
    match result {
        None => {}
        Some(Ok(_)) => {
            let g = &mut tally.groups[g];
            g.put(Name::KinesisRecordsPut, 1.0);
            g.put(Name::KinesisRecordsDataPut, ready.record.size() as f64);
            g.put(Name::AllErrors, 0.0);
        }
        Some(Err(e)) => {
            let shard = ready.expected.as_ref();
            let g = &mut tally.groups[g];
            g.put(Name::KinesisRecordsPut, 0.0);
            g.put(Name::AllErrors, 1.0);
            if class == Some(ErrorClass::Throttled) {
                g.put(Name::ThrottledEntries, 1.0);
            }
            let code: Arc<str> = e.code.as_str().into();
            tally.group(shard, Some(&code)).put(Name::ErrorsByCode, 1.0);
        }
    }
}
