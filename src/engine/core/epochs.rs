//! Flush accounting: which records `flush_and_wait` waits for.

use std::collections::VecDeque;

/// Waiters of `flush_and_wait`, each known by a token its driver gave: records are counted per
/// epoch; a new epoch starts at each waiter, which is done when every epoch up to its own has
/// no records left. Plain data: the driver wakes the waiters whose tokens come out of
/// [`take_done`](Epochs::take_done).
pub(super) struct Epochs {
    /// The oldest epoch with records left (or the current one).
    base: u64,
    /// Unresolved records per epoch, from `base` on.
    counts: VecDeque<u64>,
    waiters: Vec<(u64, u64)>,
    /// Tokens of waiters whose records have all resolved, not yet taken.
    done: Vec<u64>,
}

impl Epochs {
    pub(super) fn new() -> Self {
        Epochs {
            base: 0,
            counts: VecDeque::from([0]),
            waiters: Vec::new(),
            done: Vec::new(),
        }
    }

    pub(super) fn current(&self) -> u64 {
        self.base + self.counts.len() as u64 - 1
    }

    pub(super) fn add(&mut self) -> u64 {
        *self.counts.back_mut().expect("never empty") += 1;
        self.current()
    }

    #[cfg(test)]
    pub(super) fn resolve(&mut self, epoch: u64) {
        self.resolve_many(epoch, 1);
    }

    pub(super) fn resolve_many(&mut self, epoch: u64, n: u64) {
        if let Some(c) = self.counts.get_mut((epoch - self.base) as usize) {
            *c -= n;
        }
        self.settle();
    }

    /// A waiter, `token`, for every record added so far.
    pub(super) fn wait(&mut self, token: u64) {
        let epoch = self.current();
        self.counts.push_back(0);
        self.waiters.push((epoch, token));
        self.settle();
    }

    /// The tokens of waiters done since the last call, in `into`.
    pub(super) fn take_done(&mut self, into: &mut Vec<u64>) {
        into.append(&mut self.done);
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
        if self.waiters.is_empty() {
            return;
        }
        let done = &mut self.done;
        self.waiters.retain(|&(e, token)| {
            let clear = e < base || (e == base && front_clear);
            if clear {
                done.push(token);
            }
            !clear
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(e: &mut Epochs) -> Vec<u64> {
        let mut v = Vec::new();
        e.take_done(&mut v);
        v
    }

    #[test]
    fn a_waiter_wakes_once_every_record_before_it_resolved() {
        let mut e = Epochs::new();
        let a = e.add();
        let b = e.add();
        e.wait(7);
        // Records after the waiter do not hold it.
        let c = e.add();
        assert!(c > a && a == b);
        e.resolve(a);
        assert!(done(&mut e).is_empty());
        e.resolve_many(b, 1);
        assert_eq!(done(&mut e), vec![7]);
        e.resolve(c);
    }

    #[test]
    fn waiters_wake_in_their_own_time_and_a_waiter_with_nothing_before_it_at_once() {
        let mut e = Epochs::new();
        e.wait(0);
        assert_eq!(done(&mut e), vec![0]);
        let first = e.add();
        e.wait(1);
        let second = e.add();
        e.wait(2);
        // The later epoch resolves first: its waiter still waits for the earlier one.
        e.resolve(second);
        assert!(done(&mut e).is_empty());
        e.resolve(first);
        assert_eq!(done(&mut e), vec![1, 2]);
    }
}
