//! Applying a PutRecords answer: what was put is resolved where the answer arrives; the rest
//! goes back to the engine.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::pending::Resolution;
use super::ready::{Ready, ShardRef};
use super::slot::Put;
use crate::aggregation::Entry;
use crate::budget::Budget;
use crate::error::{ErrorClass, classify};
use crate::metrics::Name;
use crate::metrics::tally::{Puts, Tally, ms};
use crate::outcome::AttemptError;
use crate::sink::{EntryResult, SinkError};

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

/// What a PutRecords task found.
pub(super) struct Settled {
    pub(super) failed: Vec<NotPut>,
    pub(super) resolved: Vec<(u64, u64)>,
    pub(super) outcomes: Vec<ShardOutcome>,
    pub(super) misrouted: Vec<Misrouted>,
    pub(super) stale: Vec<ShardRef>,
    /// The call's metrics.
    pub(super) tally: Tally,
}

/// A Kinesis record that was not put, with the error (shared by its user records' attempts).
pub(super) struct NotPut {
    pub(super) ready: Ready,
    pub(super) error: Arc<AttemptError>,
    /// The error's class (`error::classify`), found once, here.
    pub(super) class: ErrorClass,
}

/// Splits a PutRecords outcome: resolves the user records that were put, right here in the
/// task (building receipts and waking futures is most of the per-record work after the call,
/// and doing it here keeps it off the engine task), and returns the rest, with the call's
/// metrics when `metrics` (MetricsLevel is not none).
pub(super) fn settle_put(
    budget: &Budget,
    batch: Vec<Ready>,
    started: Instant,
    finished: Instant,
    result: Result<Vec<EntryResult>, SinkError>,
    metrics: bool,
) -> Settled {
    let duration = finished - started;
    let mut tally = Tally::new(metrics);
    // A call that failed as a whole counts one error for the stream, as the KPL counts it
    // (`Retrier::emit_metrics` in aws/kinesis/core/retrier.cc), not one per entry.
    let whole_call_error = match &result {
        Ok(r) if r.len() == batch.len() => None,
        Ok(_) => Some("MalformedResponse".to_owned()),
        Err(e) => Some(e.code.clone()),
    };
    if metrics {
        call_metrics(&mut tally, &batch, duration, whole_call_error.as_deref());
    }
    // A call that failed as a whole fails every entry with one shared error.
    let whole_call = |e: AttemptError| {
        let e = Arc::new(e);
        (0..batch.len())
            .map(|_| Err(Arc::clone(&e)))
            .collect::<Vec<_>>()
    };
    let results: Vec<Result<(String, String), Arc<AttemptError>>> = match result {
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
    let mut failed = Vec::new();
    let mut resolved: Vec<(u64, u64)> = Vec::new();
    // Room goes back once per call rather than per record: the counters are shared with every
    // sending thread.
    let (mut put_records, mut put_bytes) = (0, 0);
    let mut outcomes = Vec::new();
    let mut misrouted = Vec::new();
    let mut stale = Vec::new();
    for (mut ready, result) in batch.into_iter().zip(results) {
        let class = result.as_ref().err().map(|e| classify(&e.code));
        // The group of the shard the entry was predicted for: looked up once per entry.
        let group = metrics.then(|| tally.index(ready.expected.as_ref(), None));
        if let Some(g) = group {
            let answered = whole_call_error.is_none();
            entry_metrics(&mut tally, g, &ready, answered.then_some(&result), class);
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
                let aggregated = ready.record.aggregated;
                let (shard_id, sequence_number): (Arc<str>, Arc<str>) =
                    (shard_id.into(), sequence_number.into());
                if ready.expected.as_ref().is_some_and(|e| *e != shard_id) {
                    stale.extend(ready.shard);
                    // A plain record is where its own key put it; an aggregate went where its
                    // first record's key put it, and the others may be outside that shard.
                    if aggregated {
                        misrouted.push(Misrouted {
                            ready,
                            shard_id,
                            sequence_number,
                            started,
                            duration,
                        });
                        continue;
                    }
                }
                let put = Arc::new(Put {
                    shard_id,
                    sequence_number,
                    aggregated,
                    started,
                    duration,
                });
                // Before any map (no prediction), the shard that took it.
                let group = match group {
                    Some(_) if ready.expected.is_none() => {
                        Some(tally.index(Some(&put.shard_id), None))
                    }
                    g => g,
                };
                let mut puts = Puts::new(started);
                for (n, pending) in ready.entries.into_iter().enumerate() {
                    if group.is_some() {
                        let data = pending.record().data().len();
                        puts.add(data, pending.last_end(), pending.attempts_made());
                    }
                    let arrival = pending.arrival();
                    let done = pending.resolve(Resolution::Put {
                        put: &put,
                        sub_sequence_number: n as u32,
                    });
                    put_records += 1;
                    put_bytes += done.charge;
                    tally.resolved_arrival(arrival);
                    match resolved.last_mut() {
                        Some((epoch, count)) if *epoch == done.epoch => *count += 1,
                        _ => resolved.push((done.epoch, 1)),
                    }
                }
                if let Some(g) = group {
                    puts.into_group(&mut tally.groups[g]);
                }
            }
            Err(error) => {
                let mut group = group.map(|g| &mut tally.groups[g]);
                for pending in &mut ready.entries {
                    if let Some(g) = group.as_deref_mut() {
                        let buffering = started.saturating_duration_since(pending.last_end());
                        g.put(Name::BufferingTime, ms(buffering));
                    }
                    pending.record_failure(started, duration, Arc::clone(&error));
                }
                failed.push(NotPut {
                    ready,
                    error,
                    class: class.unwrap_or(ErrorClass::Transient),
                });
            }
        }
    }
    budget.release(put_records, put_bytes);
    Settled {
        failed,
        resolved,
        outcomes,
        misrouted,
        stale,
        tally,
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
