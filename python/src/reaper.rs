//! Awaiting the records' futures: one task for all of them, not a task each.
//!
//! A task spawned per record from a Python thread costs a wake-up of the runtime per record
//! (a third of `put_nowait`'s time in a profile). Here a put pushes its future onto an inbox;
//! the reaper awaits all of them at once and hands what resolved together to the delivery
//! thread as one batch.
//!
//! Waking the reaper for each put that finds the inbox empty still cost a wake-up per put
//! (the reaper empties the inbox faster than Python fills it): about a sixth of the CPU of
//! `put_nowait` per record, in the kernel. So after a round that took new futures the reaper
//! looks at the inbox again on its own after [`TICK`], and only a reaper that found the inbox
//! empty asks to be woken. An outcome can reach Python up to a `TICK` later for it, against
//! the `RecordMaxBufferedTime` (100 ms by default) it waited in the buffer.
//!
//! [`Reaper::settle`] is a barrier: it returns once every future pushed before it resolved and
//! was handed over, so that a flush's or a close's completion reaches Python after the outcomes
//! of the records sent before it (the delivery channel keeps order).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// How soon a busy reaper looks at its inbox again without being woken.
const TICK: Duration = Duration::from_millis(1);

pub(crate) struct Reaper {
    inbox: Mutex<Inbox>,
    wake: Notify,
    /// Whether the reaper waits to be woken for new futures (it found the inbox empty); a busy
    /// reaper comes back within a [`TICK`] on its own.
    asleep: AtomicBool,
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
            asleep: AtomicBool::new(false),
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
        self.inbox().futures.push((future, token));
        if self.asleep.swap(false, Ordering::AcqRel) {
            // Set before the reaper last looked at the inbox: it may have found it empty and
            // be waiting (or about to wait: the permit is kept for it).
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
        // Whether the last round took new futures: more are likely coming.
        let mut busy = false;
        loop {
            // A busy reaper comes back after a TICK; an idle one is asleep from here: a put
            // after this point wakes it (through the permit, if it comes before the wait).
            let wait = busy || {
                self.asleep.store(true, Ordering::Release);
                let inbox = self.inbox();
                inbox.futures.is_empty() && inbox.barriers.is_empty()
            };
            if wait {
                tokio::select! {
                    () = tokio::time::sleep(TICK), if busy => {}
                    () = self.wake.notified() => {}
                    Some(d) = waiting.next(), if !waiting.is_empty() => batch.push(d),
                }
            }
            self.asleep.store(false, Ordering::Release);
            let Inbox { futures, barriers } = std::mem::take(&mut *self.inbox());
            busy = !futures.is_empty();
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
