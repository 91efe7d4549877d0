//! `kpl put`: send lines through the producer; failures go to a dead-letter file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kinesis_producer::{HashKey, Producer, PutError, RecordFuture, UserRecord};
use serde_json::Value;

use crate::conn::ConnArgs;
use crate::io::{InputRecord, b64, for_each_line};

pub const EXAMPLES: &str = "\
Examples:
  kpl put --stream logs app.log                        # each line a record, random partition keys
  tail -f app.log | kpl put --stream logs
  kpl put --stream events --json --partition-key-field user events.jsonl
  kpl put --stream events --json --partition-key-field user --data-field payload events.jsonl
  kpl put --stream events --endpoint-url http://127.0.0.1:4567 events.txt   # a local Kinesis
  kpl put --stream events --replay kpl-dead-letter.jsonl   # send failed records again
Records that could not be put are written to the dead-letter file (JSON Lines: the record, as
`kpl aggregate` reads it, with the error), and the exit status is then 1.";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: ConnArgs,
    /// Files of lines to send, one record a line; stdin when none.
    files: Vec<PathBuf>,
    /// Read each line as a JSON object (for --partition-key-field and the like).
    #[arg(long)]
    json: bool,
    /// With --json: the field whose value is the partition key (otherwise a random key).
    #[arg(long, value_name = "FIELD", requires = "json")]
    partition_key_field: Option<String>,
    /// With --json: the field whose value is the explicit hash key (a decimal string or number).
    #[arg(long, value_name = "FIELD", requires = "json")]
    explicit_hash_key_field: Option<String>,
    /// With --json: send this field's value (a string as its text, anything else as JSON)
    /// instead of the whole line.
    #[arg(long, value_name = "FIELD", requires = "json")]
    data_field: Option<String>,
    /// Where records that could not be put are written.
    #[arg(long, value_name = "FILE", default_value = "kpl-dead-letter.jsonl")]
    dead_letter: PathBuf,
    /// Send the records of a dead-letter file (written by an earlier `kpl put`) again.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["files", "json"])]
    replay: Option<PathBuf>,
}

/// Futures not yet awaited are kept to this many: they resolve roughly in order, so waiting on
/// the oldest keeps memory flat on an endless stdin.
const OUTSTANDING: usize = 50_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Tally {
    lines: u64,
    bad: u64,
    put: u64,
    failed: u64,
    bytes: u64,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn record_from(args: &Args, line: &[u8]) -> Result<UserRecord, String> {
    if !args.json {
        let key = format!("{:032x}", fastrand::u128(..));
        return UserRecord::new(key, line.to_vec()).map_err(|e| e.to_string());
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| value.get(name).ok_or_else(|| format!("no field {name:?}"));
    let key = match &args.partition_key_field {
        Some(f) => text_of(field(f)?),
        None => format!("{:032x}", fastrand::u128(..)),
    };
    let data = match &args.data_field {
        Some(f) => text_of(field(f)?).into_bytes(),
        None => line.to_vec(),
    };
    let record = UserRecord::new(key, data).map_err(|e| e.to_string())?;
    match &args.explicit_hash_key_field {
        Some(f) => {
            let key: HashKey = text_of(field(f)?)
                .parse()
                .map_err(|e: kinesis_producer::RecordError| e.to_string())?;
            Ok(record.with_explicit_hash_key(key))
        }
        None => Ok(record),
    }
}

struct DeadLetter {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl DeadLetter {
    fn write(&mut self, e: &PutError) -> std::io::Result<()> {
        if self.out.is_none() {
            self.out = Some(BufWriter::new(File::create(&self.path)?));
        }
        let mut line = serde_json::json!({
            "partition_key": e.record.partition_key(),
            "data_base64": b64(e.record.data()),
            "error": e.kind.to_string(),
            "attempts": e.attempts.len(),
        });
        if let Some(k) = e.record.explicit_hash_key() {
            line["explicit_hash_key"] = k.to_string().into();
        }
        let out = self.out.as_mut().expect("just opened");
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")
    }
}

async fn settle(f: RecordFuture, tally: &mut Tally, dead: &mut DeadLetter) -> std::io::Result<()> {
    match f.await {
        Ok(_) => tally.put += 1,
        Err(e) => {
            tally.failed += 1;
            if tally.failed <= 3 {
                eprintln!("kpl put: not put: {e}");
            }
            dead.write(&e)?;
        }
    }
    Ok(())
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = args.conn.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The producer's engine runs on the runtime's workers; this thread reads the input and
    // waits (blocking) for room, so an endless stdin streams through with bounded memory.
    let producer = runtime.block_on(Producer::new(config));
    let stream = args.conn.stream.clone();
    let mut dead = DeadLetter {
        path: args.dead_letter.clone(),
        out: None,
    };
    let mut tally = Tally::default();
    let mut outstanding: VecDeque<RecordFuture> = VecDeque::new();
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let replay: Vec<PathBuf> = args.replay.iter().cloned().collect();
    let sources = if replay.is_empty() {
        &args.files
    } else {
        &replay
    };
    for_each_line(sources, |source, number, line| {
        tally.lines += 1;
        let record = if args.replay.is_some() {
            serde_json::from_slice::<InputRecord>(line)
                .map_err(|e| format!("not a dead-letter line: {e}"))
                .and_then(InputRecord::into_user_record)
        } else {
            record_from(&args, line)
        };
        match record {
            Ok(r) => {
                tally.bytes += r.size() as u64;
                outstanding.push_back(producer.send_blocking(&stream, r));
            }
            Err(reason) => {
                tally.bad += 1;
                eprintln!("kpl put: {source} line {number}: {reason}; skipped");
            }
        }
        while outstanding.len() > OUTSTANDING {
            let f = outstanding.pop_front().expect("non-empty");
            runtime.block_on(settle(f, &mut tally, &mut dead))?;
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            eprintln!(
                "kpl put: {} lines read, {} put, {} failed",
                tally.lines, tally.put, tally.failed
            );
        }
        Ok(())
    })?;
    producer.flush();
    for f in outstanding {
        runtime.block_on(settle(f, &mut tally, &mut dead))?;
    }
    runtime.block_on(producer.shutdown());
    if let Some(out) = dead.out.as_mut() {
        out.flush()?;
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
