//! Sending again what an earlier producer left in the spool.
//!
//! The records go in before [`Producer`] construction returns, as far as the buffer has room
//! (the rest as it frees, ahead of nothing: new records may then come between). Each one put
//! releases its place in the segment it was found in. One that fails (its `RecordTtl` passed
//! while Kinesis was away, say) has no caller to hand it back to: it stays in the spool and is
//! sent again after a pause, for as long as the producer runs; a producer dropped or shut down
//! meanwhile leaves it for the next one.

use std::sync::Arc;
use std::time::Duration;

use super::{Recovered, Segment};
use crate::outcome::PutErrorKind;
use crate::producer::Producer;
use crate::record::UserRecord;

/// The pause before failed recovered records are sent again: doubled each round, up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Records of one stream, in the order found, each with its segment.
struct Run {
    stream: Arc<str>,
    records: Vec<UserRecord>,
    segments: Vec<Arc<Segment>>,
}

/// Consecutive records of one stream go in one batch.
fn runs(recovered: Vec<Recovered>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for r in recovered {
        match runs.last_mut() {
            Some(run) if run.stream == r.stored.stream => {
                run.records.push(r.stored.record);
                run.segments.push(r.segment);
            }
            _ => runs.push(Run {
                stream: r.stored.stream,
                records: vec![r.stored.record],
                segments: vec![r.segment],
            }),
        }
    }
    runs
}

/// Sends `recovered` through `producer`: what fits in its buffer now, before this returns; the
/// rest, and any retries, from a task on its runtime.
pub(crate) fn start(producer: &Producer, recovered: Vec<Recovered>) {
    let Some(spool) = producer.spool().map(Arc::clone) else {
        return;
    };
    let mut first = Vec::new();
    for run in runs(recovered) {
        let future = producer.send_recovered_now(&run.stream, run.records);
        first.push((run.stream, future, run.segments));
    }
    let weak = producer.downgrade();
    producer.runtime().spawn(async move {
        let mut failed: Vec<(Arc<str>, UserRecord, Arc<Segment>, PutErrorKind)> = Vec::new();
        for (stream, future, segments) in first {
            for (outcome, segment) in future.await.into_iter().zip(segments) {
                match outcome {
                    Ok(_) => {
                        segment.release();
                        spool.recovered_put();
                    }
                    Err(e) => failed.push((Arc::clone(&stream), e.record, segment, e.kind)),
                }
            }
        }
        let mut pause = FIRST_PAUSE;
        while !failed.is_empty() {
            let refused_as_full = failed
                .iter()
                .all(|(.., kind)| matches!(kind, PutErrorKind::BufferFull { .. }));
            if failed
                .iter()
                .any(|(.., kind)| matches!(kind, PutErrorKind::Closed | PutErrorKind::Stopped))
            {
                // Shut down or stopped: what is left stays in the spool.
                return;
            }
            if !refused_as_full {
                let (.., kind) = &failed[0];
                tracing::warn!(
                    records = failed.len(),
                    "{} records recovered from the spool were not put ({kind}); they stay in it and are sent again in {} s",
                    failed.len(),
                    pause.as_secs()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            let Some(producer) = Producer::upgrade(&weak) else {
                return;
            };
            let retry = std::mem::take(&mut failed);
            let mut runs: Vec<Run> = Vec::new();
            for (stream, record, segment, _) in retry {
                match runs.last_mut() {
                    Some(run) if run.stream == stream => {
                        run.records.push(record);
                        run.segments.push(segment);
                    }
                    _ => runs.push(Run {
                        stream,
                        records: vec![record],
                        segments: vec![segment],
                    }),
                }
            }
            for run in runs {
                let future = producer.send_recovered(&run.stream, run.records).await;
                for (outcome, segment) in future.await.into_iter().zip(run.segments) {
                    match outcome {
                        Ok(_) => {
                            segment.release();
                            spool.recovered_put();
                        }
                        Err(e) => failed.push((Arc::clone(&run.stream), e.record, segment, e.kind)),
                    }
                }
            }
            drop(producer);
        }
    });
}
