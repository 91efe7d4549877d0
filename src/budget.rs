//! The bound on buffered records and bytes: reserved by `send`, released when a record resolves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::outcome::{Attempt, Attempts};
use crate::record::UserRecord;

/// Buffered records and bytes (see [`charge`]), against their limits.
///
/// Lock-free on the usual path: reserving and releasing are atomic additions; only a caller
/// waiting for room touches the `Notify` or the condition variable, and releases wake them only
/// when someone waits.
#[derive(Debug)]
pub(crate) struct Budget {
    records: AtomicUsize,
    bytes: AtomicUsize,
    max_records: usize,
    max_bytes: usize,
    waiters: AtomicUsize,
    notify: Notify,
    lock: Mutex<()>,
    room: Condvar,
}

/// The memory around each buffered record besides its data and key: its future and the slot
/// it shares with the engine's entry, that entry (the record, arrival, flush epoch), its share
/// of the aggregate's key tables and of the queues. Measured with a counting allocator at 271
/// bytes (`tests/memory.rs` checks the charge; `cargo bench --bench engine` prints the figure;
/// see `docs/benchmarks.md`), with room for queues and vectors caught mid-growth.
const BOOKKEEPING: usize = 384;

/// Room for the attempts a retried record keeps (at most `Attempts::KEPT` on the heap),
/// reserved with the record: charging them as they grew let a buffer of records retried
/// through an outage run half again over its limit.
const ATTEMPTS_RESERVE: usize = Attempts::KEPT * std::mem::size_of::<Attempt>();

/// What each record holds of the byte budget besides its data and key.
pub(crate) const RECORD_OVERHEAD: usize = BOOKKEEPING + ATTEMPTS_RESERVE;

/// What a record holds of the byte budget: its data and key twice (the record, and its copy in
/// the aggregate being built or sent) and [`RECORD_OVERHEAD`]. So `MaxBufferedBytes` bounds the
/// memory the buffer really takes, not only the data in it.
pub(crate) fn charge(record: &UserRecord) -> usize {
    2 * record.size() + RECORD_OVERHEAD
}

/// How long a blocked sender sleeps before it looks again, should a wake-up be missed.
const BLOCKING_RECHECK: Duration = Duration::from_millis(50);

impl Budget {
    pub(crate) fn new(max_records: usize, max_bytes: usize) -> Self {
        Budget {
            records: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_records,
            max_bytes,
            waiters: AtomicUsize::new(0),
            notify: Notify::new(),
            lock: Mutex::new(()),
            room: Condvar::new(),
        }
    }

    /// Buffered records and bytes now.
    pub(crate) fn used(&self) -> (usize, usize) {
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.max_records, self.max_bytes)
    }

    /// Reserves room for one record of `size` bytes, if there is room. A record larger than the
    /// whole byte limit is let in when nothing else is buffered, so it is not refused forever.
    pub(crate) fn try_reserve(&self, size: usize) -> bool {
        self.try_reserve_many(1, size)
    }

    /// Reserves room for `records` records of `size` bytes in all, if there is room for all of
    /// them (two atomic additions, whatever the number). Only a single record may go over the
    /// byte limit, when nothing else is buffered.
    pub(crate) fn try_reserve_many(&self, records: usize, size: usize) -> bool {
        let before = self.records.fetch_add(records, Ordering::AcqRel);
        if before + records > self.max_records {
            self.records.fetch_sub(records, Ordering::AcqRel);
            return false;
        }
        let bytes = self.bytes.fetch_add(size, Ordering::AcqRel);
        if bytes + size > self.max_bytes && (bytes > 0 || records > 1) {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            self.records.fetch_sub(records, Ordering::AcqRel);
            // No wake-up here: a waiter refused while this attempt held its record for a
            // moment is woken by the next release (records are buffered, so one will come),
            // whereas waking here woke the refused waiter itself, which then tried again and
            // woke itself again, without end (found when the byte limit, which now counts
            // bookkeeping, became the one reached first).
            return false;
        }
        true
    }

    /// Returns room for `records` records of `bytes` bytes in all.
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.records.fetch_sub(records, Ordering::AcqRel);
        self.wake(records);
    }

    /// Wakes as many waiting senders as `records` places admit (each kind, async and
    /// blocking), not all of them: a release then costs the same whether 20 or 20,000 senders
    /// wait (waking all of them made each release cost as many failed attempts as there were
    /// waiters). Tokio's `Notify` hands a `notify_one` on to the next waiter when the woken
    /// one is dropped (a cancelled `send_wait`), so no wake-up is lost to a cancellation.
    fn wake(&self, records: usize) {
        let waiting = self.waiters.load(Ordering::Acquire);
        if waiting == 0 {
            return;
        }
        let n = records.min(waiting);
        for _ in 0..n {
            self.notify.notify_one();
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..n {
            self.room.notify_one();
        }
    }

    /// After a woken waiter gave up: its wake-up goes to the next one if room is left.
    fn pass_on(&self) {
        let (records, bytes) = self.used();
        if records < self.max_records && bytes < self.max_bytes {
            self.wake(1);
        }
    }

    /// Waits until room for a record of `size` bytes is reserved, or `give_up` says to stop.
    pub(crate) async fn reserve(&self, size: usize, give_up: impl Fn() -> bool) -> bool {
        if self.try_reserve(size) {
            return true;
        }
        // Counted while waiting; the guard uncounts it however the wait ends, cancellation
        // (a dropped `send_wait`) included, which left the count raised for good before.
        let _waiting = Waiting::new(&self.waiters);
        let reserved = loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a release between the look and the wait wakes us.
            notified.as_mut().enable();
            if self.try_reserve(size) {
                break true;
            }
            if give_up() {
                break false;
            }
            notified.await;
        };
        if !reserved {
            self.pass_on();
        }
        reserved
    }

    /// As [`reserve`](Self::reserve), blocking the thread.
    pub(crate) fn reserve_blocking(&self, size: usize, give_up: impl Fn() -> bool) -> bool {
        if self.try_reserve(size) {
            return true;
        }
        let waiting = Waiting::new(&self.waiters);
        let reserved = loop {
            let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.try_reserve(size) {
                break true;
            }
            if give_up() {
                break false;
            }
            // Bounded wait: woken by a release, or looks again after a while regardless.
            drop(
                self.room
                    .wait_timeout(guard, BLOCKING_RECHECK)
                    .unwrap_or_else(|e| e.into_inner()),
            );
        };
        drop(waiting);
        if !reserved {
            self.pass_on();
        }
        reserved
    }

    /// Senders waiting for room now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }
}

/// One waiting sender, counted while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn limits_hold_and_release_gives_room_back() {
        let b = Budget::new(2, 100);
        assert!(b.try_reserve(40));
        assert!(b.try_reserve(40));
        assert!(!b.try_reserve(1), "record limit");
        b.release(1, 40);
        assert!(!b.try_reserve(61), "byte limit");
        assert!(b.try_reserve(60));
        assert_eq!(b.used(), (2, 100));
        b.release(2, 100);
        // Alone, a record bigger than the byte limit is let in.
        assert!(b.try_reserve(500));
        assert!(!b.try_reserve(1));
    }

    #[test]
    fn a_batch_gets_in_whole_or_not_at_all() {
        let b = Budget::new(5, 1000);
        assert!(b.try_reserve(100));
        assert!(!b.try_reserve_many(5, 100), "one record too many");
        assert!(!b.try_reserve_many(2, 950), "ten bytes too many");
        assert_eq!(b.used(), (1, 100), "a refused batch holds nothing");
        assert!(b.try_reserve_many(4, 900));
        assert_eq!(b.used(), (5, 1000));
        b.release(5, 1000);
        // Only a record alone goes over the byte limit, not a batch.
        assert!(!b.try_reserve_many(2, 2000));
        assert!(b.try_reserve_many(1, 2000));
    }

    /// A release wakes as many waiting senders as its room admits, not all of them: with 1,000
    /// waiting, room for one more wakes about one (each wake-up of a sender with no room is a
    /// failed attempt, counted by its `give_up`).
    #[tokio::test(flavor = "current_thread")]
    async fn a_release_wakes_only_as_many_senders_as_it_has_room_for() {
        use std::sync::atomic::AtomicUsize;
        let b = Arc::new(Budget::new(10, 1 << 20));
        assert!(b.try_reserve_many(10, 100));
        let looks = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..1_000 {
            let (b, looks) = (Arc::clone(&b), Arc::clone(&looks));
            waiters.push(tokio::spawn(async move {
                b.reserve(10, || {
                    looks.fetch_add(1, Ordering::Relaxed);
                    false
                })
                .await
            }));
        }
        tokio::task::yield_now().await;
        while b.waiting() < 1_000 {
            tokio::task::yield_now().await;
        }
        let before = looks.load(Ordering::Relaxed);
        // Room for three.
        b.release(3, 30);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let woken = looks.load(Ordering::Relaxed) - before;
        assert_eq!(b.used().0, 10, "three got in");
        assert_eq!(b.waiting(), 997);
        assert!(woken <= 5, "{woken} senders looked for room, for 3 places");
        for w in waiters {
            w.abort();
        }
    }

    /// A `send_wait` dropped while it waits is no longer counted as waiting.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_wait_is_uncounted() {
        let b = Arc::new(Budget::new(1, 1 << 20));
        assert!(b.try_reserve(10));
        let waiter = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.reserve(10, || false).await })
        };
        while b.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(b.waiting(), 0);
        // And a wake-up meant for it is not lost: the next waiter gets in.
        let next = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.reserve(10, || false).await })
        };
        while b.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        b.release(1, 10);
        assert!(next.await.unwrap());
    }

    #[test]
    fn a_blocked_sender_gets_in_when_room_is_released() {
        let b = std::sync::Arc::new(Budget::new(1, 1000));
        assert!(b.try_reserve(10));
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || b.reserve_blocking(10, || false))
        };
        std::thread::sleep(Duration::from_millis(20));
        b.release(1, 10);
        assert!(waiter.join().unwrap());
        assert_eq!(b.used(), (1, 10));
    }
}
