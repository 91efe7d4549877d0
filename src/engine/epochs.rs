//! Flush accounting: which records `flush_and_wait` waits for.

use std::collections::VecDeque;

use tokio::sync::oneshot;

/// Waiters of `flush_and_wait`: records are counted per epoch; a new epoch starts at each
/// waiter, which is woken when every epoch up to its own has no records left.
pub(super) struct Epochs {
    /// The oldest epoch with records left (or the current one).
    base: u64,
    /// Unresolved records per epoch, from `base` on.
    counts: VecDeque<u64>,
    waiters: Vec<(u64, oneshot::Sender<()>)>,
}

impl Epochs {
    pub(super) fn new() -> Self {
        Epochs {
            base: 0,
            counts: VecDeque::from([0]),
            waiters: Vec::new(),
        }
    }

    pub(super) fn current(&self) -> u64 {
        self.base + self.counts.len() as u64 - 1
    }

    pub(super) fn add(&mut self) -> u64 {
        *self.counts.back_mut().expect("never empty") += 1;
        self.current()
    }

    pub(super) fn resolve(&mut self, epoch: u64) {
        self.resolve_many(epoch, 1);
    }

    pub(super) fn resolve_many(&mut self, epoch: u64, n: u64) {
        if let Some(c) = self.counts.get_mut((epoch - self.base) as usize) {
            *c -= n;
        }
        self.settle();
    }

    pub(super) fn wait(&mut self, tx: oneshot::Sender<()>) {
        let epoch = self.current();
        self.counts.push_back(0);
        self.waiters.push((epoch, tx));
        self.settle();
    }

    fn settle(&mut self) {
        while self.counts.len() > 1 && self.counts[0] == 0 {
            self.counts.pop_front();
            self.base += 1;
        }
        let base = self.base;
        let front_clear = self.counts[0] == 0;
        // Waiter e is done when every epoch <= e is clear: either popped (e < base), or e is
        // the front epoch and it is clear.
        let waiters = std::mem::take(&mut self.waiters);
        for (e, tx) in waiters {
            if e < base || (e == base && front_clear) {
                let _ = tx.send(());
            } else {
                self.waiters.push((e, tx));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_wakes_once_every_record_before_it_resolved() {
        let mut e = Epochs::new();
        let a = e.add();
        let b = e.add();
        let (tx, mut rx) = oneshot::channel();
        e.wait(tx);
        // Records after the waiter do not hold it.
        let c = e.add();
        assert!(c > a && a == b);
        e.resolve(a);
        assert!(rx.try_recv().is_err());
        e.resolve_many(b, 1);
        assert!(rx.try_recv().is_ok());
        e.resolve(c);
    }

    #[test]
    fn waiters_wake_in_their_own_time_and_a_waiter_with_nothing_before_it_at_once() {
        let mut e = Epochs::new();
        let (tx0, mut rx0) = oneshot::channel();
        e.wait(tx0);
        assert!(rx0.try_recv().is_ok());
        let first = e.add();
        let (tx1, mut rx1) = oneshot::channel();
        e.wait(tx1);
        let second = e.add();
        let (tx2, mut rx2) = oneshot::channel();
        e.wait(tx2);
        // The later epoch resolves first: its waiter still waits for the earlier one.
        e.resolve(second);
        assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err());
        e.resolve(first);
        assert!(rx1.try_recv().is_ok() && rx2.try_recv().is_ok());
    }
}
