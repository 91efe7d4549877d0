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
        self.wake();
    }

    fn wake(&self) {
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.notify.notify_waiters();
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.room.notify_all();
        }
    }

    /// Waits until room for a record of `size` bytes is reserved, or `give_up` says to stop.
    pub(crate) async fn reserve(&self, size: usize, give_up: impl Fn() -> bool) -> bool {
        if self.try_reserve(size) {
            return true;
        }
        self.waiters.fetch_add(1, Ordering::AcqRel);
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
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        reserved
    }

    /// As [`reserve`](Self::reserve), blocking the thread.
    pub(crate) fn reserve_blocking(&self, size: usize, give_up: impl Fn() -> bool) -> bool {
        if self.try_reserve(size) {
            return true;
        }
        self.waiters.fetch_add(1, Ordering::AcqRel);
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
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        reserved
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
