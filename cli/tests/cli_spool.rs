//! Crash tests of the spool, in the manner of Vector's disk-buffer tests: a producer process
//! with a spool writes into `kpl local` (a separate process, so the stream outlives every
//! crash), is killed with SIGKILL at random moments, in the middle of a sync and in the middle
//! of a segment's deletion, and is started again each time; at the end the stream is read back
//! whole.
//!
//! Checked (conservation): every record whose `sync_spool` had returned before the kill is in
//! the stream; every record of the last run (not killed) is; no record is there that was never
//! sent. Checked (liveness): each restart takes new records and finishes its work. Reported:
//! duplicates (at least once allows them), and records sent but not yet synced at a kill that
//! were lost (allowed: nothing was promised for them).
//!
//! The producer process is this test binary itself, run again with `KPL_SPOOL_CHILD` set: its
//! `child` test then runs the producer instead of returning at once.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{kpl, text};

const STREAM: &str = "crash";
/// Records each producer process sends.
const PER_RUN: u64 = 3_000;

/// `kpl local` on a free port, with the stream; stopped when dropped.
struct Local(common::KplLocal);

impl std::ops::Deref for Local {
    type Target = common::KplLocal;
    fn deref(&self) -> &common::KplLocal {
        &self.0
    }
}

impl Local {
    fn start(stream: &str) -> Local {
        let local = common::KplLocal::start(&format!("{stream}:2"));
        assert!(local.created[0].starts_with("created stream"));
        Local(local)
    }

    /// Every user record in the stream, by its data, with how many times it is there.
    fn read(&self, stream: &str) -> BTreeMap<String, usize> {
        let out = kpl(
            &["read", "--stream", stream, "--endpoint-url", &self.endpoint],
            b"",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut seen = BTreeMap::new();
        for line in text(&out.stdout).lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let data = record["data"].as_str().unwrap().to_owned();
            *seen.entry(data).or_insert(0) += 1;
        }
        seen
    }
}

/// A record's data: its number, padded so that segments fill and are deleted often.
fn data(n: u64) -> String {
    format!("n{n:09}-{}", "x".repeat(180))
}

fn number(data: &str) -> u64 {
    data[1..10].parse().unwrap()
}

/// The producer process: sends records `start..start + PER_RUN` in chunks, syncing the spool
/// after each and saying so on stdout.
#[test]
fn child() {
    let Ok(args) = std::env::var("KPL_SPOOL_CHILD") else {
        return;
    };
    let args: Vec<&str> = args.split('|').collect();
    let (endpoint, dir, start) = (args[0], args[1], args[2].parse::<u64>().unwrap());
    // The points the parent kills at: said on stdout, then held a moment so the kill lands
    // while the writer is there.
    kinesis_producer::__private::spool_hook(|point| {
        println!("AT {point}");
        std::thread::sleep(Duration::from_millis(15));
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = kinesis_producer::Config::builder()
            .endpoint(endpoint)
            .region("us-east-1")
            .credentials("local", "local")
            .spool_directory(dir)
            // 64 KiB segments: sealed and deleted many times a run.
            .spool_max_bytes(1 << 20)
            .build()
            .unwrap();
        let producer = kinesis_producer::Producer::try_new(config).await.unwrap();
        let recovered = producer.spool_stats().unwrap().recovered_records;
        println!("RECOVERED {recovered}");
        for chunk in (start..start + PER_RUN).collect::<Vec<_>>().chunks(50) {
            for &n in chunk {
                let record =
                    kinesis_producer::UserRecord::new(format!("k{}", n % 64), data(n)).unwrap();
                // The outcome is not awaited: the spool, not the future, is what this tests.
                drop(producer.send_wait(STREAM, record).await);
            }
            let last = chunk[chunk.len() - 1];
            println!("SENT {last}");
            producer.sync_spool().await.unwrap();
            println!("SYNCED {last}");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        producer.flush_and_wait().await;
        producer.shutdown().await;
        println!("DONE");
    });
}

/// Where a run was killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    AtSync,
    AtDelete,
    Random(u64),
    /// Not killed: the last run.
    Never,
}

/// One producer process's run, as its stdout told it.
#[derive(Debug, Default)]
struct Run {
    start: u64,
    sent: Option<u64>,
    synced: Option<u64>,
    done: bool,
    killed_at: Option<&'static str>,
}

fn run_child(endpoint: &str, dir: &std::path::Path, start: u64, kill: Kill) -> Run {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(
            "KPL_SPOOL_CHILD",
            format!("{endpoint}|{}|{start}", dir.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut run = Run {
        start,
        ..Run::default()
    };
    let note = |run: &mut Run, line: &str| {
        if let Some(n) = line.strip_prefix("SENT ") {
            run.sent = Some(n.parse().unwrap());
        } else if let Some(n) = line.strip_prefix("SYNCED ") {
            run.synced = Some(n.parse().unwrap());
        } else if line == "DONE" {
            run.done = true;
        }
    };
    let (deadline, random) = match kill {
        Kill::Random(ms) => (ms, true),
        // Bounded: a run that never reaches the point is killed at 20 s.
        _ => (20_000, false),
    };
    let mut waited = 0;
    loop {
        match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(line) => {
                note(&mut run, &line);
                // Only once the run has synced something, so each kill has something at stake.
                let at = match (kill, line.as_str()) {
                    (Kill::AtSync, "AT sync") if run.synced.is_some() => Some("sync"),
                    (Kill::AtDelete, "AT delete") => Some("delete"),
                    _ => None,
                };
                if at.is_some() {
                    run.killed_at = at;
                    child.kill().unwrap();
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                waited += 1;
                if kill != Kill::Never && waited >= deadline {
                    run.killed_at = Some(if random { "random" } else { "deadline" });
                    child.kill().unwrap();
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    child.wait().unwrap();
    reader.join().unwrap();
    // What it printed before it died counts too.
    for line in rx.try_iter() {
        note(&mut run, &line);
    }
    run
}

#[test]
fn records_synced_before_kill_9_are_all_in_the_stream() {
    let local = Local::start(STREAM);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(24);
    let mut runs = Vec::new();
    // 24 kills: 8 in a sync, 8 in a segment's deletion, 8 at random moments; then a last run
    // that finishes.
    let mut kills: Vec<Kill> = (0..24)
        .map(|i| match i % 3 {
            0 => Kill::AtSync,
            1 => Kill::AtDelete,
            _ => Kill::Random(rng.u64(20..700)),
        })
        .collect();
    rng.shuffle(&mut kills);
    kills.push(Kill::Never);
    for (i, kill) in kills.iter().enumerate() {
        let run = run_child(&local.endpoint, dir.path(), i as u64 * PER_RUN, *kill);
        runs.push((*kill, run));
    }
    let seen = local.read(STREAM);
    let mut acknowledged = 0;
    let mut missing = Vec::new();
    let mut at_risk = 0;
    let mut lost_unsynced = 0;
    for (kill, run) in &runs {
        let synced_to = if run.done {
            Some(run.start + PER_RUN - 1)
        } else {
            run.synced
        };
        if let Some(last) = synced_to {
            for n in run.start..=last {
                acknowledged += 1;
                if !seen.contains_key(&data(n)) {
                    missing.push((n, *kill));
                }
            }
        }
        // Sent (as far as it said), not known synced: may be lost.
        let from = synced_to.map_or(run.start, |s| s + 1);
        if let Some(sent) = run.sent {
            for n in from..=sent {
                at_risk += 1;
                if !seen.contains_key(&data(n)) {
                    lost_unsynced += 1;
                }
            }
        }
    }
    let last = runs.last().unwrap();
    assert!(last.1.done, "the last run did not finish: {:?}", last.1);
    let sent_at_most = runs.len() as u64 * PER_RUN;
    let strangers: Vec<&String> = seen.keys().filter(|d| number(d) >= sent_at_most).collect();
    assert!(strangers.is_empty(), "records never sent: {strangers:?}");
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    let killed = |what: &str| {
        runs.iter()
            .filter(|(_, r)| r.killed_at == Some(what))
            .count()
    };
    eprintln!(
        "spool crash test: {} runs, {} killed (in a sync {}, in a segment deletion {}, at random {}, at the 20 s bound {}); \
         {acknowledged} records synced before their kill, {} of them missing; {} records in the stream, {duplicates} duplicates; \
         {at_risk} records sent but not synced at a kill, {lost_unsynced} of them lost",
        runs.len(),
        runs.iter().filter(|(_, r)| r.killed_at.is_some()).count(),
        killed("sync"),
        killed("delete"),
        killed("random"),
        killed("deadline"),
        missing.len(),
        seen.len(),
    );
    assert!(
        missing.is_empty(),
        "synced records missing: {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(killed("sync") >= 8, "kills in a sync: {}", killed("sync"));
    assert!(
        killed("delete") >= 8,
        "kills in a deletion: {}",
        killed("delete")
    );
    // Each restart took new records (liveness): every run synced some.
    for (kill, run) in &runs {
        assert!(
            run.synced.is_some() || run.killed_at.is_some_and(|k| k == "random"),
            "{kill:?}: {run:?}"
        );
    }
}

/// `kpl put --spool DIR FILE`, killed at random moments and run again each time, puts every
/// line of the file; run once more after it finished, it sends nothing again.
#[test]
fn kpl_put_with_a_spool_goes_on_after_kill_9_where_it_stopped() {
    let local = Local::start("lines");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let input = dir.path().join("input.txt");
    let lines: Vec<String> = (0..60_000)
        .map(|n| format!("line {n:07} {}", "y".repeat(80)))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let args = |spool: &std::path::Path| {
        vec![
            "put".to_owned(),
            "--stream".to_owned(),
            "lines".to_owned(),
            "--endpoint-url".to_owned(),
            local.endpoint.clone(),
            "--spool".to_owned(),
            spool.display().to_string(),
            input.display().to_string(),
        ]
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let mut killed = 0;
    let mut finished = None;
    // Four runs killed at random moments, each going on from where the one before stopped;
    // then one left to finish (bounded at 120 s).
    for run in 0..5 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kpl"))
            .args(args(&spool))
            .env_remove("AWS_ACCESS_KEY_ID")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stop = if run < 4 {
            Duration::from_millis(rng.u64(300..1_500))
        } else {
            Duration::from_secs(120)
        };
        let mut waited = Duration::ZERO;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if waited >= stop {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
            waited += Duration::from_millis(10);
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        match status {
            Some(status) => {
                assert!(status.success(), "{err}");
                finished = Some(err);
                break;
            }
            None => killed += 1,
        }
    }
    let finished = finished.expect("kpl put did not finish in 120 s");
    assert!(
        killed >= 2,
        "killed only {killed} times: lengthen the input"
    );
    let seen = local.read("lines");
    let missing: Vec<&String> = lines.iter().filter(|l| !seen.contains_key(*l)).collect();
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "kpl put --spool: killed {killed} times, then finished; {} of {} lines in the stream, {duplicates} duplicates",
        lines.len() - missing.len(),
        lines.len()
    );
    assert!(
        missing.is_empty(),
        "{} lines missing, first {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(seen.len(), lines.len());
    assert!(finished.contains("kpl put:"), "{finished}");
    // Run again: every line was read by an earlier run; nothing is sent.
    let out = common::kpl(
        &args(&spool).iter().map(String::as_str).collect::<Vec<_>>(),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("60000 lines skipped, read by an earlier run with this spool"),
        "{}",
        text(&out.stderr)
    );
    // Compared by counts: a failure must not print 60,000 lines.
    let again = local.read("lines");
    let resent: usize = again.values().sum::<usize>() - seen.values().sum::<usize>();
    assert_eq!(
        resent, 0,
        "{resent} records sent again by a run after the one that finished"
    );
}

/// `kpl put --spool` knows a file by its identity: lines appended since the last run are sent
/// (the file named by another path too), and a new file at the same path is read from its start.
#[test]
fn kpl_put_with_a_spool_sends_what_was_appended_and_reads_a_replaced_file_whole() {
    let local = Local::start("grow");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let input = dir.path().join("app.log");
    let put = |path: &str| {
        let out = common::kpl(
            &[
                "put",
                "--stream",
                "grow",
                "--endpoint-url",
                &local.endpoint,
                "--spool",
                &spool.display().to_string(),
                path,
            ],
            b"",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let lines = |range: std::ops::Range<usize>| -> String {
        range.map(|i| format!("line {i}\n")).collect()
    };
    std::fs::write(&input, lines(0..10)).unwrap();
    let absolute = input.display().to_string();
    put(&absolute);
    // Ten more lines; named through a path with a `.` in it this time.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    std::io::Write::write_all(&mut f, lines(10..20).as_bytes()).unwrap();
    let other = dir.path().join(".").join("app.log").display().to_string();
    let err = put(&other);
    assert!(err.contains("going on after line 10"), "{err}");
    // A new file where it was: read whole.
    std::fs::remove_file(&input).unwrap();
    std::fs::write(&input, lines(100..103)).unwrap();
    let err = put(&absolute);
    assert!(err.contains("is not the file read before"), "{err}");
    let seen = local.read("grow");
    let expected: Vec<String> = (0..20)
        .chain(100..103)
        .map(|i| format!("line {i}"))
        .collect();
    assert_eq!(
        seen.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected.into_iter().collect()
    );
    assert!(seen.values().all(|&c| c == 1), "a line sent twice");
}
