//! The spool's writer thread: the one owner of the segment files. It writes what callers
//! appended, makes it durable in groups (one `fdatasync` per `SpoolSyncInterval` at most, or at
//! once when a caller asks), seals full segments and deletes those whose records all resolved.
//! A plain thread, not a task: `fdatasync` blocks for milliseconds, and the runtime's workers
//! are the engine's.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::acks::AckFiles;
use super::{Chunk, IDLE_SEAL, Segment, Shared, SpoolError, State, segment_name};

/// A function the crash tests have called at the points they kill the process in: `"sync"`
/// (written, not yet made durable) and `"delete"` (a segment about to be removed). Unset, a
/// load and a branch.
static HOOK: std::sync::OnceLock<fn(&'static str)> = std::sync::OnceLock::new();

/// Sets the function called at the writer's kill points, `"sync"` and `"delete"` (once per
/// process; `__private::spool_hook`, for the crash tests).
pub fn set_hook(hook: fn(&'static str)) {
    let _ = HOOK.set(hook);
}

fn hook(point: &'static str) {
    if let Some(hook) = HOOK.get() {
        hook(point);
    }
}

/// The spool's clock: the writer runs in real time, outside the engine's core (whose time is an
/// input).
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

pub(super) fn start(shared: Arc<Shared>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kinesis-producer-spool".into())
        .spawn(move || Writer::new(shared).run())
}

/// The segment being written.
struct Current {
    segment: Arc<Segment>,
    file: File,
    /// Its length on disk, and the length last made durable.
    len: u64,
    durable: u64,
    /// Chunks written since the last sync: given back if the sync fails.
    unsynced: Vec<Chunk>,
}

struct Writer {
    shared: Arc<Shared>,
    current: Option<Current>,
    last_sync: Instant,
    /// When acks were last written: at most one turn an interval for them alone.
    last_acks: Instant,
    acks: AckFiles,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Writer {
        Writer {
            acks: AckFiles::new(shared.options.dir.clone()),
            shared,
            current: None,
            last_sync: now(),
            last_acks: now(),
        }
    }

    fn run(mut self) {
        loop {
            let (chunks, deletes, target, closing) = self.wait();
            let mut sealed = Vec::new();
            let wrote = !chunks.is_empty();
            if wrote {
                match self.write(chunks, &mut sealed) {
                    Ok(()) => {
                        self.shared.synced.store(target, Ordering::Release);
                        let mut state = self.shared.lock();
                        if state.failure.take().is_some() {
                            tracing::info!("the spool is written again; records are accepted");
                        }
                    }
                    Err((e, rest)) => self.failed(e, rest),
                }
                self.last_sync = now();
            }
            // Sealed segments give up the hold they had while appended to: those whose records
            // all resolved meanwhile come back through `deletes`.
            for segment in sealed {
                segment.release();
            }
            self.delete(deletes);
            self.last_acks = now();
            self.shared.wake_callers();
            // Closing, the writer stops once all is written, or at the first failure (what was
            // not synced then was never promised).
            let stop = {
                let state = self.shared.lock();
                state.chunks.is_empty() || state.failure.is_some()
            };
            if closing && stop {
                let deletes = std::mem::take(&mut self.shared.lock().deletes);
                self.delete(deletes);
                return;
            }
        }
    }

    /// Waits for something to do: appended data whose interval is up (or a sync asked for),
    /// segments to delete, or closing. Seals an idle segment whose records all resolved.
    fn wait(&mut self) -> (Vec<Chunk>, Vec<Arc<Segment>>, u64, bool) {
        let shared = Arc::clone(&self.shared);
        let interval = shared.options.sync_interval;
        let mut state = shared.lock();
        loop {
            self.seal_idle(&mut state);
            if state.closing {
                // The active segment goes too if all its records resolved; else it stays, for
                // the next producer to send again.
                if state.active.live.load(Ordering::Acquire) == 1 {
                    shared.seal_active(&mut state);
                }
                return self.take(&mut state);
            }
            let since = self.last_sync.elapsed();
            let acks = !shared
                .acks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            // After a failed write, the next try waits the interval (at least 10 ms, so that a
            // full disk with SpoolSyncInterval 0 is not retried in a spin), whatever is asked.
            let retry = interval.max(Duration::from_millis(10));
            let due = !state.chunks.is_empty()
                && match state.failure {
                    None => state.sync_asked || since >= interval,
                    Some(_) => since >= retry,
                };
            let acks_due = acks && self.last_acks.elapsed() >= interval;
            if due || !state.deletes.is_empty() || acks_due {
                return self.take(&mut state);
            }
            let wait = if state.chunks.is_empty() && !acks {
                state.writer_idle = true;
                IDLE_SEAL
            } else if state.chunks.is_empty() {
                // Acks only: written an interval after the last ones.
                interval.saturating_sub(self.last_acks.elapsed())
            } else if state.failure.is_some() {
                retry.saturating_sub(since)
            } else {
                interval.saturating_sub(since)
            }
            .max(Duration::from_micros(50));
            state = shared
                .to_writer
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.writer_idle = false;
        }
    }

    fn take(&self, state: &mut State) -> (Vec<Chunk>, Vec<Arc<Segment>>, u64, bool) {
        state.sync_asked = false;
        (
            std::mem::take(&mut state.chunks),
            std::mem::take(&mut state.deletes),
            state.appended,
            state.closing,
        )
    }

    /// Seals the active segment when its records all resolved and it is not new, at most every
    /// [`IDLE_SEAL`]: it is then deleted, so that a crash sends little again.
    fn seal_idle(&self, state: &mut State) {
        let idle = state.active.live.load(Ordering::Acquire) == 1
            && state.active_len > super::frame::HEADER.len() as u64
            && state
                .last_idle_seal
                .is_none_or(|at| at.elapsed() >= IDLE_SEAL);
        if idle {
            state.last_idle_seal = Some(now());
            self.shared.roll(state);
        }
    }

    /// Writes `chunks` in order and syncs; on failure, the error and the chunks not made
    /// durable, in order.
    fn write(
        &mut self,
        chunks: Vec<Chunk>,
        sealed: &mut Vec<Arc<Segment>>,
    ) -> Result<(), (SpoolError, Vec<Chunk>)> {
        let mut chunks = chunks.into_iter();
        while let Some(chunk) = chunks.next() {
            if let Err((e, unwritten)) = self.write_chunk(chunk, sealed) {
                let mut rest = self.give_back();
                rest.extend(unwritten);
                rest.extend(chunks);
                return Err((e, rest));
            }
        }
        if let Err(e) = self.sync_current() {
            return Err((e, self.give_back()));
        }
        Ok(())
    }

    /// Writes one chunk; on failure, the error and the chunk if it is not among those given
    /// back by [`give_back`](Self::give_back).
    fn write_chunk(
        &mut self,
        chunk: Chunk,
        sealed: &mut Vec<Arc<Segment>>,
    ) -> Result<(), (SpoolError, Option<Chunk>)> {
        let same = self
            .current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.segment, &chunk.segment));
        if !same {
            // Chunks come in order, and a segment's last chunk seals it: a new segment means
            // the one before is done (closed already, unless it failed mid-way: then it is
            // written again from its first unwritten chunk).
            self.current = None;
            if let Err(e) = self.open(&chunk.segment) {
                return Err((e, Some(chunk)));
            }
        }
        #[cfg(test)]
        let injected = self
            .shared
            .fail_writes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        #[cfg(not(test))]
        let injected = false;
        let current = self.current.as_mut().expect("opened");
        let written = if injected {
            Err(std::io::Error::from_raw_os_error(28))
        } else {
            current.file.write_all(&chunk.bytes)
        };
        if let Err(e) = written {
            // Cut back what part of it went in: the chunk is written again whole.
            let _ = current.file.set_len(current.len);
            return Err((self.error(&chunk.segment, e), Some(chunk)));
        }
        current.len += chunk.bytes.len() as u64;
        self.shared
            .stats
            .written_bytes
            .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        let seal = chunk.seal;
        let segment = Arc::clone(&chunk.segment);
        current.unsynced.push(chunk);
        if seal {
            self.sync_current().map_err(|e| (e, None))?;
            self.current = None;
            sealed.push(segment);
        }
        Ok(())
    }

    fn open(&mut self, segment: &Arc<Segment>) -> Result<(), SpoolError> {
        let path = self.shared.options.dir.join(segment_name(segment.id));
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| self.error(segment, e))?;
        let len = file.metadata().map_err(|e| self.error(segment, e))?.len();
        if created {
            // The new name must be durable before any record in it is called durable.
            File::open(&self.shared.options.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.error(segment, e))?;
        }
        self.current = Some(Current {
            segment: Arc::clone(segment),
            file,
            len,
            durable: len,
            unsynced: Vec::new(),
        });
        Ok(())
    }

    fn sync_current(&mut self) -> Result<(), SpoolError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        if current.unsynced.is_empty() {
            return Ok(());
        }
        hook("sync");
        if let Err(e) = current.file.sync_data() {
            // After a failed fdatasync the kernel may have dropped the pages: what was written
            // since the last good sync is cut and written again, never trusted.
            let _ = current.file.set_len(current.durable);
            current.len = current.durable;
            let segment = Arc::clone(&current.segment);
            return Err(self.error(&segment, e));
        }
        self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        current.durable = current.len;
        let written: u64 = current
            .unsynced
            .drain(..)
            .map(|c| c.bytes.len() as u64)
            .sum();
        self.shared.lock().unwritten -= written;
        Ok(())
    }

    /// The chunks written to the current segment and not made durable: to write again.
    fn give_back(&mut self) -> Vec<Chunk> {
        match self.current.as_mut() {
            Some(current) => {
                let _ = current.file.set_len(current.durable);
                current.len = current.durable;
                std::mem::take(&mut current.unsynced)
            }
            None => Vec::new(),
        }
    }

    fn error(&self, segment: &Segment, e: std::io::Error) -> SpoolError {
        SpoolError::Write {
            path: self.shared.options.dir.join(segment_name(segment.id)),
            source: Arc::new(e),
        }
    }

    /// Writing failed: callers are refused until a write succeeds; what was not made durable
    /// is kept, in front of what came since, to write again after the interval.
    fn failed(&mut self, e: SpoolError, rest: Vec<Chunk>) {
        tracing::error!("{e}");
        let mut state = self.shared.lock();
        let newer = std::mem::take(&mut state.chunks);
        state.chunks = rest;
        state.chunks.extend(newer);
        state.failure = Some(e);
    }

    /// Appends the acks of records resolved so far (before any deletion: an ack never comes
    /// after its segment's deletion, which the last of its records' acks precedes).
    fn write_acks(&mut self) {
        let acks = std::mem::take(&mut *self.shared.acks.lock().unwrap_or_else(|e| e.into_inner()));
        if !acks.is_empty() {
            self.acks.write(acks);
        }
    }

    fn delete(&mut self, deletes: Vec<Arc<Segment>>) {
        self.write_acks();
        for segment in deletes {
            self.acks.remove(segment.id);
            let path = self.shared.options.dir.join(segment_name(segment.id));
            if self
                .current
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(&c.segment, &segment))
            {
                self.current = None;
            }
            hook("delete");
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Left on disk, its records are sent again by the next producer: at least once.
                Err(e) => {
                    tracing::warn!("deleting the spool segment {} failed: {e}", path.display())
                }
            }
            self.shared
                .stats
                .deleted_segments
                .fetch_add(1, Ordering::Relaxed);
            let mut state = self.shared.lock();
            state.used -= segment.bytes.load(Ordering::Relaxed);
        }
    }
}
