//! The durable spool (`SpoolDirectory`): every record appended to a segmented log on local disk
//! before the engine takes it, made durable in groups (`fdatasync` at most every
//! `SpoolSyncInterval`, or when a caller asks with
//! [`Producer::sync_spool`](crate::Producer::sync_spool)), and a segment deleted once every
//! record in it is resolved. A producer opened on the same directory sends again what the spool
//! still holds. Public here: its errors ([`SpoolError`]) and figures ([`SpoolStats`]); the
//! guarantee and its limits are in `docs/delivery.md`, "The spool".
//!
//! Ownership: callers append under one short lock (`Spool::append`), which only encodes into
//! memory; one writer thread (`writer.rs`) owns the files: it writes, syncs, seals and deletes
//! segments. A record's owner in the engine (where its outcome goes) carries a `Tag`, its
//! segment and index, and its outcome releases its place (`Segment::release`) and notes it in
//! the segment's acks; the last release of a sealed segment asks the writer to delete it. An
//! entry dropped unresolved (the engine stopped) releases nothing: its record stays in the spool
//! for the next producer.
//!
//! Why not a write-ahead-log crate: those looked at (walogs, wal-db, okaywal) free segments by
//! checkpointing a prefix of the log, while records here resolve out of order and a segment is
//! freed as soon as its own records are; they sync per append or per call rather than in groups
//! on our interval with waiters; and they refuse to open on a corrupt segment, where the spool
//! must move it aside and go on (`docs/architecture.md`).

mod acks;
pub(crate) mod frame;
mod handle;
mod recover;
pub(crate) mod resend;
pub(crate) mod writer;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

pub(crate) use recover::Recovered;

/// A record's place in the spool, held by its entry in the engine until it resolves: its
/// segment and its index there.
#[derive(Debug, Clone)]
pub(crate) struct Tag {
    segment: Arc<Segment>,
    index: u32,
}

impl Tag {
    /// The record resolved: `put`, or failed (handed back to its caller, or, recovered, kept to
    /// send again).
    pub(crate) fn resolved(&self, put: bool) {
        self.segment.resolved(self.index, put);
    }
}

/// Why the spool did not take a record, or could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// Another producer (in this process or another) has the directory open.
    #[error(
        "the spool directory {} is in use by another producer (it holds {}); two producers cannot share a spool",
        dir.display(), dir.join(LOCK).display()
    )]
    Locked {
        /// The spool directory.
        dir: PathBuf,
    },
    /// The directory could not be created, locked or read.
    #[error("the spool directory {} cannot be used: {source}", dir.display())]
    Open {
        /// The spool directory.
        dir: PathBuf,
        /// What the operating system said.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Writing or syncing a segment failed (a full disk, an I/O error): records are refused,
    /// each handed back, until a write succeeds again; what was taken before is kept in memory
    /// and written then.
    #[error(
        "writing the spool segment {} failed: {source}; records are refused until a write succeeds again",
        path.display()
    )]
    Write {
        /// The segment being written.
        path: PathBuf,
        /// What the operating system said (`StorageFull` for a full disk).
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The spool holds `SpoolMaxBytes` already: the record was not accepted. It frees as the
    /// records in it resolve; the waiting sends (`send_wait`, `send_all_wait`, the blocking
    /// ones) wait for that.
    #[error(
        "the spool is full: {used} bytes in {} (SpoolMaxBytes {max_bytes}); the record was not accepted",
        dir.display()
    )]
    Full {
        /// Bytes the spool holds.
        used: u64,
        /// `SpoolMaxBytes`.
        max_bytes: u64,
        /// The spool directory.
        dir: PathBuf,
    },
    /// One record takes more room in the spool than `SpoolMaxBytes` allows in all.
    #[error("the record takes {frame} bytes in the spool, more than SpoolMaxBytes {max_bytes}")]
    TooLarge {
        /// The bytes the record takes, framed.
        frame: u64,
        /// `SpoolMaxBytes`.
        max_bytes: u64,
    },
    /// [`Producer::sync_spool`](crate::Producer::sync_spool) on a producer without a spool:
    /// nothing was made durable.
    #[error("this producer has no spool (SpoolDirectory is not set): nothing is kept on disk")]
    NotConfigured,
    /// The producer is shut down or its spool closed.
    #[error("the spool is closed")]
    Closed,
}

/// Two errors are equal when they say the same (an I/O error has no equality of its own).
impl PartialEq for SpoolError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for SpoolError {}

/// The lock file in a spool directory: held (`flock`) while a producer has it open.
pub(crate) const LOCK: &str = "lock";

/// The sub-directory damaged segments are moved to.
pub(crate) const CORRUPT: &str = "corrupt";

/// Bytes taken but not yet written that appends may hold in memory before they wait for the
/// writer: a disk slower than the callers must not make the spool a second unbounded buffer.
const MAX_UNWRITTEN: u64 = 64 * 1024 * 1024;

/// How often, at most, a segment whose records have all resolved is sealed early (so that it
/// can be deleted) while it is not full: at a low rate, this bounds what a crash sends again to
/// about this long's records.
const IDLE_SEAL: Duration = Duration::from_secs(1);

/// How the spool is set up (from `SpoolDirectory`, `SpoolMaxBytes`, `SpoolSyncInterval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) dir: PathBuf,
    pub(crate) max_bytes: u64,
    pub(crate) sync_interval: Duration,
}

impl Options {
    /// Segments are a sixteenth of the spool, between 64 KiB and 8 MiB: small enough that one
    /// slow record keeps little else on disk, and that a crash sends little again.
    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 16).clamp(64 * 1024, 8 * 1024 * 1024)
    }
}

/// What the spool has done since it was opened ([`Producer::spool_stats`](crate::Producer::spool_stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SpoolStats {
    /// Records found in the spool when it was opened, sent again.
    pub recovered_records: u64,
    /// Of those, records put since.
    pub recovered_put: u64,
    /// Segments found damaged when it was opened and moved aside.
    pub corrupt_segments: u64,
    /// Segments whose torn tail (a write cut short by a crash) was cut when it was opened.
    pub torn_tails: u64,
    /// Records appended since it was opened.
    pub appended_records: u64,
    /// Bytes written to segments since it was opened (frames and headers).
    pub written_bytes: u64,
    /// `fdatasync` calls made.
    pub syncs: u64,
    /// Segments deleted, all their records resolved.
    pub deleted_segments: u64,
    /// Bytes the spool holds now (on disk or about to be).
    pub used_bytes: u64,
}

/// A segment: a file of records, live while any of them is unresolved.
#[derive(Debug)]
pub(crate) struct Segment {
    id: u64,
    /// Records not resolved yet, plus one while the segment is still appended to.
    live: AtomicUsize,
    /// Its size, header included, counted in the spool's `used` until it is deleted.
    bytes: AtomicU64,
    /// Records appended to it: the next one's index.
    records: AtomicU32,
    /// Written by an earlier producer: its records have no caller to hand a failure back to, so
    /// a failed one keeps its place (the resend task sends it again).
    recovered: bool,
    shared: Weak<Shared>,
}

impl Segment {
    /// One of its records resolved: `put`, or failed (handed back to its caller, or, recovered,
    /// kept to send again).
    fn resolved(self: &Arc<Self>, index: u32, put: bool) {
        if put || !self.recovered {
            if let Some(shared) = self.shared.upgrade() {
                let first = {
                    let mut acks = shared.acks.lock().unwrap_or_else(|e| e.into_inner());
                    acks.push((self.id, index));
                    acks.len() == 1
                };
                // The first ack since the writer's last turn wakes it, should it be idle: acks
                // are written within an interval, so a crash repeats little.
                if first {
                    shared.to_writer.notify_one();
                }
            }
            self.release();
        }
    }

    /// One of its records no longer needs its place; the last one of a sealed segment has it
    /// deleted.
    pub(crate) fn release(self: &Arc<Self>) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(shared) = self.shared.upgrade()
        {
            let mut state = shared.lock();
            state.deletes.push(Arc::clone(self));
            drop(state);
            shared.to_writer.notify_one();
        }
    }
}

/// The file name of segment `id`: the order they were written in sorts as their names do.
pub(crate) fn segment_name(id: u64) -> String {
    format!("segment-{id:020}.log")
}

pub(crate) struct Shared {
    options: Options,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Wakes the writer: data to sync now, a segment to delete, closing.
    to_writer: Condvar,
    /// Wakes blocked callers: room freed, a sync done, a failure.
    changed: Condvar,
    changed_async: tokio::sync::Notify,
    /// Records appended and synced: `sync_spool` waits for `synced` to reach what was appended.
    synced: AtomicU64,
    /// Records resolved (segment id, index), for the writer to append to the ack files. Its own
    /// lock: resolving never waits for an append.
    acks: Mutex<Vec<(u64, u32)>>,
    stats: Stats,
    /// Writes to fail with `ENOSPC` (a full disk), for the tests.
    #[cfg(test)]
    fail_writes: AtomicUsize,
}

#[derive(Default)]
struct Stats {
    recovered_records: AtomicU64,
    recovered_put: AtomicU64,
    corrupt_segments: AtomicU64,
    torn_tails: AtomicU64,
    written_bytes: AtomicU64,
    syncs: AtomicU64,
    deleted_segments: AtomicU64,
}

/// What callers and the writer share, under one lock held for moves and counts only.
struct State {
    /// Bytes appended, not yet handed to the writer, by segment, in order.
    chunks: Vec<Chunk>,
    active: Arc<Segment>,
    active_len: u64,
    next_id: u64,
    appended: u64,
    /// Bytes of live segments, written or not: what `SpoolMaxBytes` bounds.
    used: u64,
    unwritten: u64,
    sync_asked: bool,
    /// Segments whose every record resolved, to delete.
    deletes: Vec<Arc<Segment>>,
    /// Set while writing fails; appends are refused with it.
    failure: Option<SpoolError>,
    closing: bool,
    /// The writer sleeps with nothing to write: the first append wakes it.
    writer_idle: bool,
    /// When the active segment was last sealed early, idle (see [`IDLE_SEAL`]).
    last_idle_seal: Option<std::time::Instant>,
}

struct Chunk {
    segment: Arc<Segment>,
    bytes: Vec<u8>,
    /// The segment is complete after these bytes: sync it, close it, release its hold.
    seal: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Held for moves and counts, never across a panic that matters.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_callers(&self) {
        self.changed.notify_all();
        self.changed_async.notify_waiters();
    }

    fn new_segment(self: &Arc<Self>, state: &mut State, recovered: bool) -> Arc<Segment> {
        let id = state.next_id;
        state.next_id += 1;
        state.used += frame::HEADER.len() as u64;
        state.unwritten += frame::HEADER.len() as u64;
        let segment = Arc::new(Segment {
            id,
            live: AtomicUsize::new(1),
            bytes: AtomicU64::new(frame::HEADER.len() as u64),
            records: AtomicU32::new(0),
            recovered,
            shared: Arc::downgrade(self),
        });
        state.chunks.push(Chunk {
            segment: Arc::clone(&segment),
            bytes: frame::HEADER.to_vec(),
            seal: false,
        });
        segment
    }

    /// Seals the active segment and starts the next (when it holds records).
    fn roll(self: &Arc<Self>, state: &mut State) {
        if state.active_len <= frame::HEADER.len() as u64 {
            return;
        }
        self.seal_active(state);
        state.active = self.new_segment(state, false);
        state.active_len = frame::HEADER.len() as u64;
    }

    /// Marks the active segment's last chunk as sealing it.
    fn seal_active(&self, state: &mut State) {
        match state.chunks.last_mut() {
            Some(c) if Arc::ptr_eq(&c.segment, &state.active) => c.seal = true,
            _ => state.chunks.push(Chunk {
                segment: Arc::clone(&state.active),
                bytes: Vec::new(),
                seal: true,
            }),
        }
    }
}

/// The spool of one producer: the directory locked, the writer running.
pub(crate) struct Spool {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held for the spool's life: its `flock` keeps other producers out.
    _lock: File,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.shared.options.dir)
            .finish_non_exhaustive()
    }
}

/// Opens the spool in `options.dir` (creating it), takes its lock, and reads back what an
/// earlier producer left unresolved: those records, each with its segment to release once it is
/// put. Torn tails are cut; damaged segments are moved to `corrupt/`, their whole records kept.
///
/// # Errors
/// [`SpoolError::Locked`] when another producer holds the directory, [`SpoolError::Open`] when
/// it cannot be created, read or written.
pub(crate) fn open(options: Options) -> Result<(Spool, Vec<Recovered>), SpoolError> {
    let dir = options.dir.clone();
    let io = |source: std::io::Error| SpoolError::Open {
        dir: dir.clone(),
        source: Arc::new(source),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))
        .map_err(io)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { dir }),
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    let segment_bytes = options.segment_bytes();
    let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
        let active = Arc::new(Segment {
            id: 0,
            live: AtomicUsize::new(1),
            bytes: AtomicU64::new(0),
            records: AtomicU32::new(0),
            recovered: false,
            shared: Weak::clone(weak),
        });
        Shared {
            options,
            segment_bytes,
            state: Mutex::new(State {
                chunks: Vec::new(),
                active,
                active_len: 0,
                next_id: 0,
                appended: 0,
                used: 0,
                unwritten: 0,
                sync_asked: false,
                deletes: Vec::new(),
                failure: None,
                closing: false,
                writer_idle: false,
                last_idle_seal: None,
            }),
            to_writer: Condvar::new(),
            changed: Condvar::new(),
            changed_async: tokio::sync::Notify::new(),
            synced: AtomicU64::new(0),
            acks: Mutex::new(Vec::new()),
            stats: Stats::default(),
            #[cfg(test)]
            fail_writes: AtomicUsize::new(0),
        }
    });
    let found = recover::scan(&shared, &dir).map_err(io)?;
    {
        let mut state = shared.lock();
        state.next_id = found.next_id;
        state.used = found.used;
        // Records kept from damaged segments go first, in a segment of their own, marked
        // recovered like the segments they came from.
        state.active = shared.new_segment(&mut state, !found.rescued.is_empty());
        state.active_len = frame::HEADER.len() as u64;
    }
    let spool = Spool {
        writer: Mutex::new(Some(writer::start(Arc::clone(&shared)).map_err(io)?)),
        shared,
        _lock: lock,
    };
    // Records kept from damaged segments are written again, in a segment of this spool's,
    // before anything new: the damaged file is no longer theirs.
    let mut recovered = found.recovered;
    if !found.rescued.is_empty() {
        let tags = spool
            .append_stored(&found.rescued)
            .map_err(|e| io(std::io::Error::other(e)))?;
        let target = {
            let mut state = spool.shared.lock();
            spool.shared.roll(&mut state);
            state.appended
        };
        spool.ask_sync();
        spool
            .wait_synced_blocking(target)
            .map_err(|e| io(std::io::Error::other(e)))?;
        recovered.extend(
            found
                .rescued
                .into_iter()
                .zip(tags)
                .map(|(stored, tag)| Recovered { stored, tag }),
        );
    }
    spool
        .shared
        .stats
        .recovered_records
        .store(recovered.len() as u64, Ordering::Relaxed);
    if !recovered.is_empty() {
        tracing::info!(
            dir = %spool.shared.options.dir.display(),
            records = recovered.len(),
            "the spool holds {} records that an earlier producer did not see resolved: sending them again",
            recovered.len()
        );
        metrics_facade::counter!("kpl_spool_recovered_records").increment(recovered.len() as u64);
    }
    Ok((spool, recovered))
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
