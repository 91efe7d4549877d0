//! `kpl tail`: follow files and send their new lines, as the Kinesis Agent does.
//!
//! Files are found by glob patterns on every poll and known by identity (device and inode), so a
//! rotated file (renamed away) is read to its end while its successor is read from the start,
//! and a truncated file (copytruncate) is read again from the start. The checkpoint holds, per
//! file, the offset up to which every line is settled: put, or written to the dead-letter file
//! and synced. It is replaced atomically (write, fsync, rename), so after a crash or `kill -9`
//! a restart resends at most the lines past the checkpoint: at least once, nothing lost.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kinesis_producer::Producer;
use tokio::task::JoinHandle;

use crate::conn::ConnArgs;
use crate::lines::{DeadLetter, LineArgs};
use crate::progress::Progress;

mod checkpoint;
mod copies;
mod files;
mod settle;

use checkpoint::{CheckpointEntry, CheckpointFile};
use copies::{Cut, NewFile, PendingCopy};
use files::{
    FINGERPRINT_LEN, FileId, Out, READ_BUDGET, READ_CHUNK, Tracked, file_id, find_by_id,
    fingerprint, read_new_lines, send_line,
};
use settle::{Shared, Tally, new_incarnation};

pub const EXAMPLES: &str = "\
Examples:
  kpl tail --stream logs '/var/log/app/*.log'            # new lines from now on
  kpl tail --stream logs --from-start '/var/log/app.log*' # existing content too
  kpl tail --stream events --json --partition-key-field user --checkpoint /var/lib/kpl/events.json 'events-*.jsonl'
  kpl tail --stream logs --exit-when-idle 5 app.log       # send what is there, then exit
Quote patterns so the shell does not expand them: files created later must match too.
Rotation: a file renamed away is read to its end, even after a restart. A file created AND
rotated away entirely while kpl tail is stopped can only be found if the pattern matches
rotated names too ('app.log*'), as with the Kinesis Agent.
The checkpoint (default kpl-tail.checkpoint.json) records how far each file is delivered; a
restart resumes from it (--from-start/--from-end apply only to files it does not know).
Records that cannot be put go to the dead-letter file; `kpl put --replay FILE` sends them again.
Stop with Ctrl-C or SIGTERM: buffered lines are sent and the checkpoint written first.";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: ConnArgs,
    /// Files to follow: paths or glob patterns (`*`, `?`, `[...]`, `**`).
    #[arg(required = true, value_name = "PATTERN")]
    patterns: Vec<String>,
    #[command(flatten)]
    lines: LineArgs,
    #[command(flatten)]
    metrics: crate::prometheus::MetricsArgs,
    /// Where delivery progress is kept across restarts.
    #[arg(long, value_name = "FILE", default_value = "kpl-tail.checkpoint.json")]
    checkpoint: PathBuf,
    /// Files the checkpoint does not know: send what they already hold.
    #[arg(long, conflicts_with = "from_end")]
    from_start: bool,
    /// Files the checkpoint does not know: send only lines written from now on (the default).
    #[arg(long)]
    from_end: bool,
    /// Where records that could not be put are written (appended to).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "kpl-tail-dead-letter.jsonl"
    )]
    dead_letter: PathBuf,
    /// How often files are checked for new lines, rotation and truncation, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    poll_ms: u64,
    /// Exit once every line read is settled and no file has changed for this many seconds.
    #[arg(long, value_name = "SECS")]
    exit_when_idle: Option<f64>,
    /// How long a file renamed out of the patterns is still read after its last write (a
    /// writer may hold it open for a while after a rotation), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    rotate_wait: f64,
}

const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

struct Tail {
    args: Args,
    producer: Producer,
    shared: Arc<Shared>,
    files: HashMap<FileId, Tracked>,
    /// New files that are copies of followed ones, waiting to see whether the original is
    /// truncated (see `copies.rs`).
    copies: HashMap<FileId, PendingCopy>,
    /// Compressed files the patterns match: not followed (reported once).
    skipped: std::collections::HashSet<FileId>,
    /// Whether a checkpoint was found at start: files new to it were created while we were
    /// stopped and are read from the start.
    resumed: bool,
    last_checkpoint: Option<CheckpointFile>,
}

impl Tail {
    /// Paths matching the patterns now, by identity.
    fn scan(&self) -> Result<HashMap<FileId, PathBuf>, String> {
        let mut found = HashMap::new();
        for pattern in &self.args.patterns {
            let paths = glob::glob(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
            for path in paths.flatten() {
                if let Ok(meta) = std::fs::metadata(&path)
                    && meta.is_file()
                {
                    found.insert(file_id(&meta), path);
                }
            }
        }
        Ok(found)
    }

    fn open(&self, path: &Path, start: u64) -> std::io::Result<Tracked> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let fingerprint_len = len.min(FINGERPRINT_LEN);
        let fingerprint = fingerprint(&mut file, fingerprint_len)?;
        let start = start.min(len);
        Ok(Tracked {
            path: path.to_path_buf(),
            file,
            read_to: start,
            partial: Vec::new(),
            skipping: false,
            cut: None,
            sent_to: start,
            fingerprint_len,
            fingerprint,
            matched: true,
            idle_polls: 0,
            incarnation: new_incarnation(&self.shared, start),
            retired: Vec::new(),
        })
    }

    /// Starts following: files the checkpoint knows resume where it says (renamed-away ones
    /// are looked for next to where they were), others by --from-start / --from-end.
    fn start(&mut self, checkpoint: Option<CheckpointFile>) -> Result<(), String> {
        let found = self.scan()?;
        let entries: HashMap<FileId, CheckpointEntry> = checkpoint
            .iter()
            .flat_map(|c| c.files.iter())
            .map(|e| ((e.dev, e.ino), e.clone()))
            .collect();
        // Files the checkpoint knows first: a new file may be a copy of one of them.
        for (id, path) in &found {
            let Some(entry) = entries.get(id) else {
                continue;
            };
            let resume = Tail::resume_offset(path, entry);
            match self.open(path, resume.unwrap_or(0)) {
                Ok(mut t) => {
                    if resume.is_none() {
                        // Truncated while we were stopped: followed from its start, and what it
                        // was is kept for a copy of it (copytruncate) to go on from.
                        t.cut = Some(Cut {
                            read_to: entry.offset,
                            partial: Vec::new(),
                            fingerprint_len: entry.fingerprint_len,
                            fingerprint: entry.fingerprint.clone(),
                            at: Instant::now(),
                        });
                    }
                    self.files.insert(*id, t);
                }
                Err(e) => eprintln!("kpl tail: {}: {e}", path.display()),
            }
        }
        for (id, path) in &found {
            if entries.contains_key(id) {
                continue;
            }
            if self.resumed {
                // Created while we were stopped: new, unless it is a copy or compressed.
                self.take_new(*id, path);
                continue;
            }
            let start = if self.args.from_start {
                0
            } else {
                std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
            };
            match self.compressed_or_open(*id, path, start) {
                Some(Ok(t)) => {
                    self.files.insert(*id, t);
                }
                Some(Err(e)) => eprintln!("kpl tail: {}: {e}", path.display()),
                None => {}
            }
        }
        // Checkpointed files no pattern matches any more: rotated (renamed) while we were
        // stopped. Their rest is sent, then they are forgotten.
        for (id, entry) in &entries {
            if found.contains_key(id) {
                continue;
            }
            match find_by_id(&entry.path, *id) {
                Some(path) => {
                    let Some(offset) = Tail::resume_offset(&path, entry) else {
                        eprintln!(
                            "kpl tail: {} changed since the checkpoint (truncated?); its unsent lines are lost",
                            path.display()
                        );
                        continue;
                    };
                    if let Ok(mut t) = self.open(&path, offset) {
                        t.matched = false;
                        self.files.insert(*id, t);
                    }
                }
                None => eprintln!(
                    "kpl tail: {} (checkpointed at byte {}) is gone; lines after that offset, if any, were not sent",
                    entry.path.display(),
                    entry.offset
                ),
            }
        }
        Ok(())
    }

    /// One pass: new files, rotation, truncation, new lines. Returns whether anything changed.
    async fn poll(&mut self) -> Result<bool, String> {
        let found = self.scan()?;
        let mut changed = false;
        for (id, path) in &found {
            if !self.files.contains_key(id)
                && !self.copies.contains_key(id)
                && !self.skipped.contains(id)
            {
                changed |= self.take_new(*id, path);
            }
        }
        let rotate_wait_polls = self.rotate_wait_polls();
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            let matched = found.get(&id);
            let t = self.files.get_mut(&id).expect("listed");
            t.matched = matched.is_some();
            if let Some(path) = matched {
                t.path = path.clone();
            }
            let out = Out {
                producer: &self.producer,
                stream: &self.args.conn.stream,
                lines: &self.args.lines,
                shared: &self.shared,
            };
            // A file far behind (a first --from-start, a burst) is read chunk after chunk for up
            // to READ_BUDGET per poll, so catching up is not paced by the poll interval; then
            // the other files and the checkpoint get their turn.
            let started = Instant::now();
            let mut grew = false;
            loop {
                let read = read_new_lines(t, &out)
                    .await
                    .map_err(|e| format!("{}: {e}", t.path.display()))?;
                grew |= read > 0;
                if read < READ_CHUNK || started.elapsed() >= READ_BUDGET {
                    break;
                }
            }
            changed |= grew;
            if t.matched || grew {
                t.idle_polls = 0;
                continue;
            }
            // Rotated away and quiet for a poll: whatever its writer wrote is in. A last line
            // without a newline is sent as it is, and the file closed once all is settled.
            t.idle_polls += 1;
            if t.idle_polls >= rotate_wait_polls && t.incarnation.tx.is_some() {
                if !t.partial.is_empty() {
                    let line = std::mem::take(&mut t.partial);
                    let end = t.read_to;
                    send_line(t, &line, end, &out).await;
                }
                t.incarnation.tx = None;
            }
            if t.incarnation.tx.is_none()
                && t.incarnation.settler.is_finished()
                && t.retired.iter().all(JoinHandle::is_finished)
            {
                self.files.remove(&id);
                changed = true;
            }
        }
        // Copies whose original was truncated this pass go on from where it was read to.
        let before = self.files.len();
        self.settle_copies();
        changed |= self.files.len() != before;
        Ok(changed)
    }

    /// Polls without a write after which a file renamed out of the patterns is closed.
    fn rotate_wait_polls(&self) -> u32 {
        let polls = self.args.rotate_wait * 1000.0 / self.args.poll_ms as f64;
        (polls.ceil() as u32).max(2)
    }

    /// Takes in a file new since the start (or the checkpoint): a compressed one is skipped, a
    /// copy of a followed file goes on from where that was read (`copies.rs`), anything else
    /// is new from its start. Returns whether it is followed now.
    fn take_new(&mut self, id: FileId, path: &Path) -> bool {
        match self.classify(path, id) {
            NewFile::Compressed(kind) => {
                self.skip_compressed(id, path, kind);
                false
            }
            NewFile::CopyOfCut(original) => {
                self.open_copy(path, id, original);
                true
            }
            NewFile::CopyOf(original) => {
                self.copies.insert(
                    id,
                    PendingCopy {
                        path: path.to_path_buf(),
                        original,
                        since: Instant::now(),
                    },
                );
                false
            }
            NewFile::Plain => match self.open(path, 0) {
                Ok(t) => {
                    self.files.insert(id, t);
                    true
                }
                Err(e) => {
                    eprintln!("kpl tail: {}: {e}", path.display());
                    false
                }
            },
        }
    }

    /// Opens `path` at `start` unless it is compressed (then skipped: `None`).
    fn compressed_or_open(
        &mut self,
        id: FileId,
        path: &Path,
        start: u64,
    ) -> Option<std::io::Result<Tracked>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        if let Some(kind) = files::compressed(path, &mut file) {
            self.skip_compressed(id, path, kind);
            return None;
        }
        Some(self.open(path, start))
    }

    fn skip_compressed(&mut self, id: FileId, path: &Path, kind: &str) {
        if self.skipped.insert(id) {
            eprintln!(
                "kpl tail: {} is compressed ({kind}), not lines; skipped",
                path.display()
            );
        }
    }

    fn unsettled(&self) -> bool {
        self.files
            .values()
            .any(|t| t.incarnation.delivered.load(Relaxed) < t.sent_to)
    }
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args
        .exit_when_idle
        .is_some_and(|s| !(0.0..=86_400.0).contains(&s))
    {
        return Err("--exit-when-idle must be from 0 to 86400 seconds".into());
    }
    if !(0.0..=3_600.0).contains(&args.rotate_wait) {
        return Err("--rotate-wait must be from 0 to 3600 seconds".into());
    }
    let checkpoint = match std::fs::read(&args.checkpoint) {
        Ok(bytes) => Some(
            serde_json::from_slice::<CheckpointFile>(&bytes).map_err(|e| {
                format!(
                    "checkpoint {}: not a kpl tail checkpoint ({e}); move it away to start afresh",
                    args.checkpoint.display()
                )
            })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("checkpoint {}: {e}", args.checkpoint.display()).into()),
    };
    let config = args.conn.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        args.metrics.install()?;
        let producer = Producer::new(config).await;
        let shared = Arc::new(Shared {
            dead: Mutex::new(DeadLetter::new(args.dead_letter.clone())),
            tally: Tally::default(),
            shown: AtomicU64::new(0),
        });
        let mut tail = Tail {
            resumed: checkpoint.is_some(),
            args,
            producer,
            shared,
            files: HashMap::new(),
            copies: HashMap::new(),
            skipped: std::collections::HashSet::new(),
            last_checkpoint: None,
        };
        follow(&mut tail, checkpoint).await
    })
}

async fn follow(
    tail: &mut Tail,
    checkpoint: Option<CheckpointFile>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    tail.start(checkpoint)?;
    let mut stop = Box::pin(stop_signal());
    let poll = Duration::from_millis(tail.args.poll_ms);
    let idle_limit = tail.args.exit_when_idle.map(Duration::from_secs_f64);
    let mut last_change = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut progress = Progress::every("tail", None, Duration::from_secs(30));
    let reason = loop {
        if tail.poll().await? {
            last_change = Instant::now();
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            tail.save_checkpoint()?;
            last_checkpoint = Instant::now();
        }
        let t = &tail.shared.tally;
        let (lines, put, failed) = (
            t.lines.load(Relaxed),
            t.put.load(Relaxed),
            t.failed.load(Relaxed),
        );
        let files = tail.files.len();
        progress.update(lines, || {
            format!("{files} files, {lines} lines read, {put} put, {failed} failed")
        });
        if let Some(limit) = idle_limit
            && last_change.elapsed() >= limit
        {
            // Idle: push out what is buffered so it settles without waiting for its linger.
            tail.producer.flush();
            if !tail.unsettled() {
                break "idle";
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            signal = &mut stop => break signal,
        }
    };
    progress.finish();
    // Everything read is sent and settled before the last checkpoint is written.
    tail.producer.flush();
    let deadline = Instant::now() + Duration::from_secs(600);
    while tail.unsettled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tail.save_checkpoint()?;
    let t = &tail.shared.tally;
    let failed = t.failed.load(Relaxed);
    eprintln!(
        "kpl tail: stopped ({reason}): {} lines read, {} put, {failed} failed{}, {} bad lines skipped; checkpoint {}",
        t.lines.load(Relaxed),
        t.put.load(Relaxed),
        if failed > 0 {
            format!(" (written to {})", tail.args.dead_letter.display())
        } else {
            String::new()
        },
        t.bad.load(Relaxed),
        tail.args.checkpoint.display()
    );
    Ok(if failed > 0 || t.bad.load(Relaxed) > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Resolves on Ctrl-C or SIGTERM, naming it.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return "interrupted";
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted",
            _ = term.recv() => "terminated",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupted"
    }
}
