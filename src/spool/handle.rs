//! The spool's handle: appending records (under one short lock, encoding into memory only),
//! waiting for room and for a sync, and closing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Chunk, MAX_UNWRITTEN, Spool, SpoolError, SpoolStats, State, Tag, frame};
use crate::record::UserRecord;
use std::sync::MutexGuard;

impl Spool {
    /// Appends `records`, bound for `stream`, in order, as many as fit: their tags, and why the
    /// rest (if any) was not taken.
    pub(crate) fn append(
        &self,
        stream: &str,
        records: &[UserRecord],
    ) -> (Vec<Tag>, Option<SpoolError>) {
        let mut state = self.shared.lock();
        let mut tags = Vec::with_capacity(records.len());
        let mut refused = None;
        for record in records {
            let len = frame::frame_len(stream, record) as u64;
            if let Err(e) = self.check(&mut state, len) {
                refused = Some(e);
                break;
            }
            tags.push(self.push(&mut state, stream, record, len));
        }
        let n = tags.len();
        let full = matches!(refused, Some(SpoolError::Full { .. }));
        self.appended(state, n);
        if full {
            self.shared.to_writer.notify_one();
        }
        (tags, refused)
    }

    /// Appends one record, bound for `stream`: its tag.
    ///
    /// # Errors
    /// [`SpoolError::Full`] when it does not fit, [`SpoolError::TooLarge`] when it never could,
    /// the writer's failure while writing fails, or [`SpoolError::Closed`].
    pub(crate) fn append_one(&self, stream: &str, record: &UserRecord) -> Result<Tag, SpoolError> {
        // As `append` of one, without its `Vec`: `send` appends a record at a time.
        let mut state = self.shared.lock();
        let len = frame::frame_len(stream, record) as u64;
        if let Err(e) = self.check(&mut state, len) {
            let full = matches!(e, SpoolError::Full { .. });
            drop(state);
            if full {
                self.shared.to_writer.notify_one();
            }
            return Err(e);
        }
        let tag = self.push(&mut state, stream, record, len);
        self.appended(state, 1);
        Ok(tag)
    }

    pub(super) fn append_stored(&self, stored: &[frame::Stored]) -> Result<Vec<Tag>, SpoolError> {
        let mut state = self.shared.lock();
        let mut tags = Vec::with_capacity(stored.len());
        for s in stored {
            let len = frame::frame_len(&s.stream, &s.record) as u64;
            tags.push(self.push(&mut state, &s.stream, &s.record, len));
        }
        self.appended(state, stored.len());
        Ok(tags)
    }

    /// Whether `len` more bytes may be appended now.
    fn check(&self, state: &mut State, len: u64) -> Result<(), SpoolError> {
        let shared = &self.shared;
        let max = shared.options.max_bytes;
        let header = frame::HEADER.len() as u64;
        if len + 2 * header > max {
            return Err(SpoolError::TooLarge {
                frame: len,
                max_bytes: max,
            });
        }
        if state.closing {
            return Err(SpoolError::Closed);
        }
        if let Some(e) = &state.failure {
            return Err(e.clone());
        }
        // Room for the record, and for the header of a segment it may start.
        if state.used + len + header > max || state.unwritten + len > MAX_UNWRITTEN.max(len) {
            // What is appended to the active segment cannot be freed until it is sealed.
            shared.roll(state);
            return Err(SpoolError::Full {
                used: state.used,
                max_bytes: max,
                dir: shared.options.dir.clone(),
            });
        }
        Ok(())
    }

    /// Appends `record`'s frame, `len` bytes (its `frame_len`, already checked to fit).
    fn push(&self, state: &mut State, stream: &str, record: &UserRecord, len: u64) -> Tag {
        let shared = &self.shared;
        if state.active_len + len > shared.segment_bytes {
            shared.roll(state);
        }
        let chunk = match state.chunks.last_mut() {
            Some(c) if Arc::ptr_eq(&c.segment, &state.active) => c,
            _ => {
                state.chunks.push(Chunk {
                    segment: Arc::clone(&state.active),
                    bytes: Vec::new(),
                    seal: false,
                });
                state.chunks.last_mut().expect("just pushed")
            }
        };
        frame::encode(&mut chunk.bytes, stream, record);
        state.active_len += len;
        state.used += len;
        state.unwritten += len;
        state.active.bytes.fetch_add(len, Ordering::Relaxed);
        state.active.live.fetch_add(1, Ordering::Relaxed);
        Tag {
            segment: Arc::clone(&state.active),
            index: state.active.records.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn appended(&self, mut state: MutexGuard<'_, State>, n: usize) {
        state.appended += n as u64;
        if std::mem::take(&mut state.writer_idle) {
            drop(state);
            self.shared.to_writer.notify_one();
        }
    }

    pub(super) fn ask_sync(&self) {
        self.shared.lock().sync_asked = true;
        self.shared.to_writer.notify_one();
    }

    /// Makes every record appended so far durable, and waits for it.
    ///
    /// # Errors
    /// The writer's failure, if writing fails meanwhile; [`SpoolError::Closed`] if the spool
    /// closes first.
    pub(crate) async fn sync(&self) -> Result<(), SpoolError> {
        let target = self.shared.lock().appended;
        self.ask_sync();
        loop {
            let notified = self.shared.changed_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(done) = self.synced(target) {
                return done;
            }
            notified.await;
        }
    }

    fn synced(&self, target: u64) -> Option<Result<(), SpoolError>> {
        if self.shared.synced.load(Ordering::Acquire) >= target {
            return Some(Ok(()));
        }
        let state = self.shared.lock();
        if let Some(e) = &state.failure {
            return Some(Err(e.clone()));
        }
        if state.closing && state.chunks.is_empty() {
            return Some(Err(SpoolError::Closed));
        }
        None
    }

    pub(super) fn wait_synced_blocking(&self, target: u64) -> Result<(), SpoolError> {
        loop {
            if let Some(done) = self.synced(target) {
                return done;
            }
            let state = self.shared.lock();
            if self.shared.synced.load(Ordering::Acquire) >= target || state.failure.is_some() {
                continue;
            }
            drop(
                self.shared
                    .changed
                    .wait_timeout(state, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
    }

    /// As [`sync`](Self::sync), blocking the thread.
    ///
    /// # Errors
    /// As [`sync`](Self::sync).
    pub(crate) fn sync_blocking(&self) -> Result<(), SpoolError> {
        let target = self.shared.lock().appended;
        self.ask_sync();
        self.wait_synced_blocking(target)
    }

    /// The bytes `record`, bound for `stream`, takes in the spool.
    pub(crate) fn frame_len(&self, stream: &str, record: &UserRecord) -> u64 {
        frame::frame_len(stream, record) as u64
    }

    /// Whether `len` more bytes would fit now (a waiter's check; the append checks again).
    pub(super) fn has_room(&self, len: u64) -> bool {
        let state = self.shared.lock();
        state.closing
            || state.failure.is_some()
            || (state.used + len + frame::HEADER.len() as u64 <= self.shared.options.max_bytes
                && state.unwritten + len <= MAX_UNWRITTEN.max(len))
    }

    /// Waits until `len` bytes may fit, or `give_up` says to stop.
    pub(crate) async fn wait_room(&self, len: u64, give_up: impl Fn() -> bool) {
        loop {
            let notified = self.shared.changed_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_room(len) || give_up() {
                return;
            }
            // Room comes with the writer's deletions, which wake us; the timeout only guards
            // against a wake-up missed between two waiters.
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// As [`wait_room`](Self::wait_room), blocking the thread.
    pub(crate) fn wait_room_blocking(&self, len: u64, give_up: impl Fn() -> bool) {
        while !self.has_room(len) && !give_up() {
            let state = self.shared.lock();
            drop(
                self.shared
                    .changed
                    .wait_timeout(state, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
    }

    /// A recovered record was put: counted.
    pub(crate) fn recovered_put(&self) {
        self.shared
            .stats
            .recovered_put
            .fetch_add(1, Ordering::Relaxed);
    }

    /// What the spool has done since it was opened.
    pub(crate) fn stats(&self) -> SpoolStats {
        let s = &self.shared.stats;
        let state = self.shared.lock();
        SpoolStats {
            recovered_records: s.recovered_records.load(Ordering::Relaxed),
            recovered_put: s.recovered_put.load(Ordering::Relaxed),
            corrupt_segments: s.corrupt_segments.load(Ordering::Relaxed),
            torn_tails: s.torn_tails.load(Ordering::Relaxed),
            appended_records: state.appended,
            written_bytes: s.written_bytes.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            deleted_segments: s.deleted_segments.load(Ordering::Relaxed),
            used_bytes: state.used,
        }
    }

    /// Writes and syncs what is appended, deletes what is resolved, and stops the writer.
    /// Records not resolved stay in the spool for the next producer.
    pub(crate) fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.to_writer.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        self.shared.wake_callers();
    }
}
