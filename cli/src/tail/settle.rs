//! `kpl tail`'s settling: each incarnation of a file (a truncation starts another) has a task
//! that awaits its lines' futures in the order read and publishes the offset of the settled
//! prefix; failures go to the dead-letter file first.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use kinesis_producer::RecordFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::lines::DeadLetter;

/// One follow of a file: a truncation starts another (offsets begin again at 0).
pub(super) struct Incarnation {
    /// Lines sent, with the offset where each ends; `None` for a line skipped as bad.
    pub(super) tx: Option<mpsc::UnboundedSender<(u64, Option<RecordFuture>)>>,
    /// Every line ending at or before this offset is settled.
    pub(super) delivered: Arc<AtomicU64>,
    pub(super) settler: JoinHandle<()>,
}

#[derive(Default)]
pub(super) struct Tally {
    pub(super) lines: AtomicU64,
    pub(super) bad: AtomicU64,
    pub(super) put: AtomicU64,
    pub(super) failed: AtomicU64,
}

pub(super) struct Shared {
    pub(super) dead: Mutex<DeadLetter>,
    pub(super) tally: Tally,
    /// The first failures are shown; all go to the dead-letter file.
    pub(super) shown: AtomicU64,
}

pub(super) fn settle_lines(
    shared: Arc<Shared>,
    delivered: Arc<AtomicU64>,
    mut rx: mpsc::UnboundedReceiver<(u64, Option<RecordFuture>)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // In the order read: the offset only ever advances past a prefix of settled lines.
        while let Some((end, future)) = rx.recv().await {
            if let Some(future) = future {
                match future.await {
                    Ok(_) => {
                        shared.tally.put.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        shared.tally.failed.fetch_add(1, Relaxed);
                        if shared.shown.fetch_add(1, Relaxed) < 3 {
                            eprintln!("kpl tail: not put: {e}");
                        }
                        let written = shared.dead.lock().expect("not poisoned").write(&e);
                        if let Err(err) = written {
                            // Without the dead letter the line is not settled: the checkpoint
                            // stays before it, so a restart sends it again.
                            eprintln!("kpl tail: cannot write the dead-letter file: {err}");
                            return;
                        }
                    }
                }
            }
            delivered.store(end, Relaxed);
        }
    })
}

pub(super) fn new_incarnation(shared: &Arc<Shared>, offset: u64) -> Incarnation {
    let (tx, rx) = mpsc::unbounded_channel();
    let delivered = Arc::new(AtomicU64::new(offset));
    Incarnation {
        tx: Some(tx),
        delivered: Arc::clone(&delivered),
        settler: settle_lines(Arc::clone(shared), delivered, rx),
    }
}
