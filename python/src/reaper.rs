//! Awaiting the records' futures: one task for all of them, not a task each.
//!
//! A task spawned per record from a Python thread costs a wake-up of the runtime per record
//! (a third of `put_nowait`'s time in a profile). Here a put pushes its future onto an inbox
//! and wakes the reaper only when the inbox was empty; the reaper awaits all of them at once
//! and hands what resolved together to the delivery thread as one batch.
//!
//! [`Reaper::settle`] is a barrier: it returns once every future pushed before it resolved and
//! was handed over, so that a flush's or a close's completion reaches Python after the outcomes
//! of the records sent before it (the delivery channel keeps order).

use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kinesis_producer::RecordFuture;
use pyo3::prelude::*;
use tokio::sync::{Notify, oneshot};

use crate::deliver::{Delivery, Failure, Outcome};

#[derive(Default)]
struct Inbox {
    futures: Vec<(RecordFuture, Py<PyAny>)>,
    /// Waiters of `settle`, answered after the round that takes them.
    barriers: Vec<oneshot::Sender<()>>,
}

pub(crate) struct Reaper {
    inbox: Mutex<Inbox>,
    wake: Notify,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper").finish_non_exhaustive()
    }
}

impl Reaper {
    /// Starts the reaper on `runtime`, handing outcomes to `out`. It runs until the runtime
    /// stops.
    pub(crate) fn start(runtime: &tokio::runtime::Handle, out: Sender<Vec<Delivery>>) -> Arc<Self> {
        let reaper = Arc::new(Reaper {
            inbox: Mutex::new(Inbox::default()),
            wake: Notify::new(),
        });
        runtime.spawn(Arc::clone(&reaper).run(out));
        reaper
    }

    fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        // Nothing panics while holding it; a poisoned inbox is still consistent.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Awaits `future`, delivering its outcome to `token`.
    pub(crate) fn add(&self, future: RecordFuture, token: Py<PyAny>) {
        let mut inbox = self.inbox();
        let first = inbox.futures.is_empty() && inbox.barriers.is_empty();
        inbox.futures.push((future, token));
        drop(inbox);
        if first {
            // A waiting reaper is woken; a busy one keeps the permit and takes this on its
            // next round.
            self.wake.notify_one();
        }
    }

    /// Returns once every future added before this call that has resolved was handed to the
    /// delivery thread.
    pub(crate) async fn settle(&self) {
        let (tx, rx) = oneshot::channel();
        self.inbox().barriers.push(tx);
        self.wake.notify_one();
        // An error means the runtime is stopping: nothing more will be handed over anyway.
        let _ = rx.await;
    }

    async fn run(self: Arc<Self>, out: Sender<Vec<Delivery>>) {
        let mut waiting = FuturesUnordered::new();
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                Some(d) = waiting.next(), if !waiting.is_empty() => batch.push(d),
            }
            let Inbox { futures, barriers } = std::mem::take(&mut *self.inbox());
            for (future, token) in futures {
                waiting.push(async move {
                    let outcome = future.await.map_err(|e| Failure::Put(Box::new(e)));
                    Delivery {
                        token,
                        outcome: Outcome::One(outcome),
                    }
                });
            }
            // Everything resolved by now goes in this round's batch.
            while let Some(Some(d)) = waiting.next().now_or_never() {
                batch.push(d);
            }
            if !batch.is_empty() {
                // Fails only when the delivery thread is gone (the interpreter exiting).
                let _ = out.send(std::mem::take(&mut batch));
            }
            for b in barriers {
                let _ = b.send(());
            }
        }
    }
}
