//! Sending again what an earlier producer left in the spool.
//!
//! The records go in before [`Producer`] construction returns, as far as the buffer has room
//! (the rest as it frees, ahead of nothing: new records may then come between). Each one put
//! releases its place in the tag it was found in. One that fails (its `RecordTtl` passed
//! while Kinesis was away, say) has no caller to hand it back to: it stays in the spool and is
//! sent again after a pause, for as long as the producer runs; a producer dropped or shut down
//! meanwhile leaves it for the next one.

use std::sync::Arc;
use std::time::Duration;

use super::{Recovered, Tag};
use crate::outcome::PutErrorKind;
use crate::producer::Producer;
use crate::record::UserRecord;

/// The pause before failed recovered records are sent again: doubled each round, up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Records of one stream, in the order found, each with its tag.
struct Run {
    stream: Arc<str>,
    records: Vec<UserRecord>,
    tags: Vec<Tag>,
}

/// Consecutive records of one stream go in one batch.
fn runs(recovered: Vec<Recovered>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for r in recovered {
        match runs.last_mut() {
            Some(run) if run.stream == r.stored.stream => {
                run.records.push(r.stored.record);
                run.tags.push(r.tag);
            }
            _ => runs.push(Run {
                stream: r.stored.stream,
                records: vec![r.stored.record],
                tags: vec![r.tag],
            }),
        }
    }
    runs
}

/// Sends `recovered` through `producer`: what fits in its buffer now, before this returns; the
/// rest, and any retries, from a task on its runtime. Each entry carries its record's tag,
/// released as soon as the record is put (`Segment::resolved`).
pub(crate) fn start(producer: &Producer, recovered: Vec<Recovered>) {
    let Some(spool) = producer.spool().map(Arc::clone) else {
        return;
    };
    let mut first = Vec::new();
    for run in runs(recovered) {
        let future = producer.send_recovered_now(&run.stream, run.records, run.tags.clone());
        first.push((run.stream, future, run.tags));
    }
    let weak = producer.downgrade();
    producer.runtime().spawn(async move {
        let mut failed: Vec<(Arc<str>, UserRecord, Tag, PutErrorKind)> = Vec::new();
        for (stream, future, tags) in first {
            for (outcome, tag) in future.await.into_iter().zip(tags) {
                // A record put released its place as it resolved; one that failed kept it.
                match outcome {
                    Ok(_) => spool.recovered_put(),
                    Err(e) => failed.push((Arc::clone(&stream), e.record, tag, e.kind)),
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
            for (stream, record, tag, _) in retry {
                match runs.last_mut() {
                    Some(run) if run.stream == stream => {
                        run.records.push(record);
                        run.tags.push(tag);
                    }
                    _ => runs.push(Run {
                        stream,
                        records: vec![record],
                        tags: vec![tag],
                    }),
                }
            }
            for run in runs {
                let future = producer
                    .send_recovered(&run.stream, run.records, run.tags.clone())
                    .await;
                for (outcome, tag) in future.await.into_iter().zip(run.tags) {
                    match outcome {
                        Ok(_) => spool.recovered_put(),
                        Err(e) => failed.push((Arc::clone(&run.stream), e.record, tag, e.kind)),
                    }
                }
            }
            drop(producer);
        }
    });
}
