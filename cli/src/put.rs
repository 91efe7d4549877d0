//! `kpl put`: send lines through the producer; failures go to a dead-letter file.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use kinesis_producer::{BatchFuture, Producer, PutError, Receipt, UserRecord};

use crate::conn::ConnArgs;
use crate::io::{InputRecord, for_each_line_or_pause};
use crate::lines::{DeadLetter, LineArgs};
use crate::progress::Progress;

pub const EXAMPLES: &str = "\
Examples:
  kpl put --stream logs app.log                        # each line a record, random partition keys
  tail -f app.log | kpl put --stream logs
  kpl put --stream events --json --partition-key-field user events.jsonl
  kpl put --stream events --json --partition-key-field user --data-field payload events.jsonl
  kpl put --stream events --endpoint-url http://127.0.0.1:4567 events.txt   # a local Kinesis
  kpl put --stream events --replay kpl-dead-letter.jsonl   # send failed records again
  kpl put --stream logs --spool /var/spool/kpl app.log     # survives a crash; run it again to go on
Records that could not be put are written to the dead-letter file (JSON Lines: the record, as
`kpl aggregate` reads it, with the error), and the exit status is then 1.";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: ConnArgs,
    /// Files of lines to send, one record a line; stdin when none.
    files: Vec<PathBuf>,
    #[command(flatten)]
    lines: LineArgs,
    #[command(flatten)]
    metrics: crate::prometheus::MetricsArgs,
    /// Where records that could not be put are written (appended to).
    #[arg(long, value_name = "FILE", default_value = "kpl-dead-letter.jsonl")]
    dead_letter: PathBuf,
    /// Send the records of a dead-letter file (written by an earlier `kpl put`) again.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["files", "json"])]
    replay: Option<PathBuf>,
    /// Keep every record on disk in this directory until it is put (the producer's
    /// SpoolDirectory): after a crash or `kill -9`, running the same command again sends what
    /// the spool held and, for files, goes on from the line it had reached (saved in the
    /// directory once the lines before it are durable). One `kpl put` per directory.
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
}

/// How often, at most, `--spool` saves how far it has read the files (each save waits for the
/// spool to make what was read durable first).
const SAVE_POSITIONS: std::time::Duration = std::time::Duration::from_millis(200);

/// Records whose outcomes are not yet awaited are kept to this many: batches resolve roughly in
/// order, so waiting on the oldest keeps memory flat on an endless stdin.
const OUTSTANDING: usize = 50_000;

/// Records handed to the producer together (`send_all_blocking`: one message, one reservation
/// and one future per batch); a batch also goes whenever the input pauses, so records from a
/// slow stdin are not held back waiting for more.
const BATCH: usize = 1_000;

#[derive(Default)]
struct Tally {
    lines: u64,
    bad: u64,
    /// Lines an earlier run with the same spool had read.
    skipped: u64,
    put: u64,
    failed: u64,
    bytes: u64,
}

fn settle(
    outcome: Result<Receipt, PutError>,
    tally: &mut Tally,
    dead: &mut DeadLetter,
    progress: &Progress,
) -> std::io::Result<()> {
    match outcome {
        Ok(_) => tally.put += 1,
        Err(e) => {
            tally.failed += 1;
            if tally.failed <= 3 {
                progress.println(&format!("kpl put: not put: {e}"));
            }
            dead.write(&e)?;
        }
    }
    Ok(())
}

/// What `kpl put` holds while it reads: the batch being gathered, and the batches sent whose
/// outcomes are not awaited yet.
struct Sending<'a> {
    producer: &'a Producer,
    runtime: &'a tokio::runtime::Runtime,
    stream: &'a str,
    batch: Vec<UserRecord>,
    outstanding: VecDeque<BatchFuture>,
    unsettled: usize,
    tally: Tally,
    dead: DeadLetter,
    progress: Progress,
    /// With `--spool` and files: how far they are read.
    positions: Option<crate::positions::Positions>,
    /// The last line gathered into the batch: the file's name and the line's number.
    last_source: String,
    last_number: usize,
    saved_at: Instant,
}

impl Sending<'_> {
    /// Sends the batch gathered so far (waiting for room in the producer's buffer), then
    /// awaits the oldest batches while more than [`OUTSTANDING`] records are unsettled.
    fn send(&mut self) -> std::io::Result<()> {
        if !self.batch.is_empty() {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            self.unsettled += batch.len();
            let future = self.producer.send_all_blocking(self.stream, batch);
            self.outstanding.push_back(future);
        }
        // The lines gathered are in the spool now (appended when the batch was admitted).
        if let Some(positions) = &mut self.positions {
            positions.read(&self.last_source, self.last_number);
            if positions.unsaved() && self.saved_at.elapsed() >= SAVE_POSITIONS {
                self.save_positions()?;
            }
        }
        while self.unsettled > OUTSTANDING {
            self.settle_oldest()?;
        }
        Ok(())
    }

    /// Waits until the spool holds what was read durably, then saves how far that is.
    fn save_positions(&mut self) -> std::io::Result<()> {
        if let Some(positions) = &mut self.positions {
            self.producer
                .sync_spool_blocking()
                .map_err(std::io::Error::other)?;
            positions.save()?;
            self.saved_at = Instant::now();
        }
        Ok(())
    }

    fn settle_oldest(&mut self) -> std::io::Result<bool> {
        let Some(future) = self.outstanding.pop_front() else {
            return Ok(false);
        };
        let outcomes = self.runtime.block_on(future);
        self.unsettled -= outcomes.len();
        for outcome in outcomes {
            settle(outcome, &mut self.tally, &mut self.dead, &self.progress)?;
        }
        Ok(true)
    }
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = args.conn.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The producer's engine runs on the runtime's workers; this thread reads the input and
    // waits (blocking) for room, so an endless stdin streams through with bounded memory.
    runtime.block_on(async { args.metrics.install() })?;
    let producer = match &args.spool {
        None => runtime.block_on(Producer::new(config)),
        Some(dir) => {
            let config = args.conn.build(
                args.conn
                    .builder(kinesis_producer::Config::builder())?
                    .spool_directory(dir),
            )?;
            runtime.block_on(Producer::try_new(config))?
        }
    };
    if let Some(stats) = producer.spool_stats()
        && stats.recovered_records > 0
    {
        eprintln!(
            "kpl put: the spool holds {} records an earlier run did not see put: sending them first",
            stats.recovered_records
        );
    }
    let stream = args.conn.stream.clone();
    let dead = DeadLetter::new(args.dead_letter.clone());
    let progress = Progress::new("put", None);
    let tally = Tally::default();
    let start = Instant::now();
    // Replaying the dead-letter file itself: it is moved aside first, so records failing again
    // start a new dead-letter file instead of being appended to the one being read. The moved
    // file is removed once every record in it is settled. A file moved aside by an earlier
    // replay that did not finish (killed, crashed) still holds records not known to be put: it
    // is replayed too, and never overwritten (the new one takes the next free name).
    let mut replay: Vec<PathBuf> = args.replay.iter().cloned().collect();
    let mut moved_aside = Vec::new();
    if let Some(path) = &args.replay
        && same_file(path, &args.dead_letter)
    {
        let mut aside = unfinished_replays(path);
        if aside.is_empty() || path.exists() {
            let name = free_replaying_name(path);
            std::fs::rename(path, &name).map_err(|e| format!("{}: {e}", path.display()))?;
            aside.push(name);
        }
        if aside.len() > 1 {
            eprintln!(
                "kpl put: replaying {} files an earlier replay left unfinished too",
                aside.len() - 1
            );
        }
        replay = aside.clone();
        moved_aside = aside;
    }
    let sources = if replay.is_empty() {
        &args.files
    } else {
        &replay
    };
    let positions = match &args.spool {
        Some(dir) if replay.is_empty() && !args.files.is_empty() => {
            Some(crate::positions::Positions::load(dir, &args.files)?)
        }
        _ => None,
    };
    let sending = RefCell::new(Sending {
        positions,
        last_source: String::new(),
        last_number: 0,
        saved_at: Instant::now(),
        producer: &producer,
        runtime: &runtime,
        stream: &stream,
        batch: Vec::with_capacity(BATCH),
        outstanding: VecDeque::new(),
        unsettled: 0,
        tally,
        dead,
        progress,
    });
    let line = |source: &str, number: usize, line: &[u8]| {
        let s = &mut *sending.borrow_mut();
        if s.positions.as_ref().is_some_and(|p| p.done(source, number)) {
            s.tally.skipped += 1;
            return Ok(());
        }
        s.tally.lines += 1;
        if s.positions.is_some() {
            if s.last_source != source {
                source.clone_into(&mut s.last_source);
            }
            s.last_number = number;
        }
        let record = if args.replay.is_some() {
            serde_json::from_slice::<InputRecord>(line)
                .map_err(|e| format!("not a dead-letter line: {e}"))
                .and_then(InputRecord::into_user_record)
        } else {
            args.lines.record(line)
        };
        match record {
            Ok(r) => {
                s.tally.bytes += r.size() as u64;
                s.batch.push(r);
                if s.batch.len() == BATCH {
                    s.send()?;
                }
            }
            Err(reason) => {
                s.tally.bad += 1;
                s.progress.println(&format!(
                    "kpl put: {source} line {number}: {reason}; skipped"
                ));
            }
        }
        let tally = &s.tally;
        s.progress.update(tally.lines, || {
            format!(
                "{} lines read, {} put, {} failed",
                tally.lines, tally.put, tally.failed
            )
        });
        Ok(())
    };
    let pause = || sending.borrow_mut().send();
    for_each_line_or_pause(sources, line, pause)?;
    let mut sending = sending.into_inner();
    sending.send()?;
    producer.flush();
    sending.save_positions()?;
    while sending.settle_oldest()? {}
    let Sending {
        tally,
        mut dead,
        progress,
        ..
    } = sending;
    runtime.block_on(producer.shutdown());
    dead.sync()?;
    for aside in moved_aside {
        std::fs::remove_file(aside)?;
    }
    progress.finish();
    if tally.skipped > 0 {
        eprintln!(
            "kpl put: {} lines skipped, read by an earlier run with this spool",
            tally.skipped
        );
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "kpl put: {} lines, {} put, {} failed{}, {} bad lines skipped; {} bytes in {secs:.2} s ({:.0} records/s)",
        tally.lines,
        tally.put,
        tally.failed,
        if tally.failed > 0 {
            format!(" (written to {})", dead.path.display())
        } else {
            String::new()
        },
        tally.bad,
        tally.bytes,
        tally.put as f64 / secs.max(1e-9),
    );
    Ok(if tally.failed > 0 || tally.bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Files an earlier replay of dead-letter file `path` moved aside and did not finish:
/// `<path>.replaying` and `<path>.replaying.<n>`, oldest first.
fn unfinished_replays(path: &std::path::Path) -> Vec<PathBuf> {
    // Bounded: one more name per replay interrupted in a row.
    (0..1_000)
        .map(|n| replaying_name(path, n))
        .filter(|p| p.exists())
        .collect()
}

/// The `n`th name a dead-letter file `path` is moved to while it is replayed.
fn replaying_name(path: &std::path::Path, n: usize) -> PathBuf {
    match n {
        0 => PathBuf::from(format!("{}.replaying", path.display())),
        n => PathBuf::from(format!("{}.replaying.{n}", path.display())),
    }
}

/// The first of those names no file has.
fn free_replaying_name(path: &std::path::Path) -> PathBuf {
    (0..)
        .map(|n| replaying_name(path, n))
        .find(|p| !p.exists())
        .expect("a free name")
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
