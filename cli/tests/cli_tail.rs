//! `kpl tail` end to end against the embedded Kinesis on 127.0.0.1: files followed through
//! rotation (rename) and truncation (copytruncate), a `kill -9` in the middle, and a restart
//! from the checkpoint, with every line found in the stream afterwards.
// Faults (and names) drawn from the global generator on purpose: not shaped by the producer.
#![allow(clippy::disallowed_methods)]
#![cfg(unix)]

mod common;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::text;
use kinesis_producer::aggregation::deaggregate;
use kinesis_producer::local::{LocalKinesis, LocalOptions};

fn append(path: &Path, lines: std::ops::RangeInclusive<u32>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in lines {
        writeln!(f, "line-{i:05} some log text").unwrap();
    }
}

fn spawn_tail(dir: &Path, endpoint: &str, extra: &[&str]) -> Child {
    let log = File::create(dir.join(format!("tail-{}.stderr", fastrand::u32(..)))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kpl"))
        .current_dir(dir)
        .args([
            "tail",
            "--stream",
            "logs",
            "--endpoint-url",
            endpoint,
            "--poll-ms",
            "50",
            "--checkpoint",
            "cp.json",
        ])
        .args(extra)
        .env_remove("AWS_ACCESS_KEY_ID")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Polls `cond` every 50 ms for at most `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One field of every file in the checkpoint (empty before the first checkpoint).
fn checkpoint_field(dir: &Path, field: &str) -> Vec<u64> {
    std::fs::read(dir.join("cp.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|v| {
            v["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f[field].as_u64().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn checkpoint_offsets(dir: &Path) -> Vec<u64> {
    checkpoint_field(dir, "offset")
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("kpl tail did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".stderr") {
            all += &std::fs::read_to_string(e.path()).unwrap();
        }
    }
    all
}

/// Lines in the stream, with how many times each was found.
async fn lines_in_stream(kinesis: &LocalKinesis) -> HashMap<String, usize> {
    let mut found = HashMap::new();
    for r in kinesis.read_all("logs").await.unwrap() {
        for u in deaggregate(&r.partition_key, r.data) {
            *found
                .entry(String::from_utf8(u.data.to_vec()).unwrap())
                .or_default() += 1;
        }
    }
    found
}

fn expected(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range
        .map(|i| format!("line-{i:05} some log text"))
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kpl-tail-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_survives_rotation_and_kill_9_without_losing_a_line() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("logs", 2).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let dir = temp_dir("rotation");
    let log = dir.join("app.log");

    // Existing content, sent because of --from-start; the pattern names app.log alone, so a
    // rotated file falls out of it and must be finished by identity.
    append(&log, 1..=1000);
    let mut tail = spawn_tail(&dir, &endpoint, &["--from-start", "app.log"]);
    wait_until(Duration::from_secs(60), "the first checkpoint", || {
        checkpoint_offsets(&dir).iter().any(|o| *o > 0)
    });
    // Rotation while running: the writer keeps writing to the renamed file for a moment.
    append(&log, 1001..=2000);
    std::fs::rename(&log, dir.join("app.log.1")).unwrap();
    append(&dir.join("app.log.1"), 2001..=2500);
    append(&log, 2501..=3000);
    // Once the new app.log is known (a file created and rotated away entirely while kpl tail
    // is stopped cannot be found under a pattern that does not match rotated names; see
    // `kpl tail --help`), kill -9 at once: lines read but not yet settled are past the
    // checkpoint.
    let new_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).unwrap());
    wait_until(
        Duration::from_secs(60),
        "the new app.log in the checkpoint",
        || checkpoint_field(&dir, "ino").contains(&new_inode),
    );
    append(&log, 3001..=8000);
    // Long enough for some lines to be put, not always long enough for the checkpoint (each
    // second) to record them: those are sent again after the restart.
    std::thread::sleep(Duration::from_millis(700));
    tail.kill().unwrap();
    tail.wait().unwrap();

    // While it is down: more lines, and another rotation.
    append(&log, 8001..=8500);
    std::fs::rename(&log, dir.join("app.log.2")).unwrap();
    append(&log, 8501..=9000);

    let mut tail = spawn_tail(&dir, &endpoint, &["--exit-when-idle", "1", "app.log"]);
    let status = wait_exit(&mut tail, Duration::from_secs(120));
    let stderr = stderr_of(&dir);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("kpl tail: stopped (idle)"), "{stderr}");

    let found = lines_in_stream(&kinesis).await;
    let want = expected(1..=9000);
    let missing: Vec<&String> = want.iter().filter(|l| !found.contains_key(*l)).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(
        found.len(),
        9000,
        "only the lines written are in the stream"
    );
    let duplicates: usize = found.values().map(|n| n - 1).sum();
    eprintln!("after kill -9: 9000 lines delivered, {duplicates} sent twice (at least once)");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_a_truncated_file_from_its_start_and_stops_cleanly_on_sigterm() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("logs", 1).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let dir = temp_dir("truncate");
    let log = dir.join("app.log");
    append(&log, 1..=50); // there before the start: --from-end (the default) skips these

    let mut tail = spawn_tail(&dir, &endpoint, &["app.*"]);
    wait_until(Duration::from_secs(60), "the first checkpoint", || {
        dir.join("cp.json").exists()
    });
    append(&log, 51..=300);
    let size = std::fs::metadata(&log).unwrap().len();
    wait_until(Duration::from_secs(60), "lines 51-300 delivered", || {
        checkpoint_offsets(&dir) == vec![size]
    });
    // copytruncate: the content was copied elsewhere, the file emptied and written anew.
    File::create(&log).unwrap();
    append(&log, 301..=320);
    let size = std::fs::metadata(&log).unwrap().len();
    wait_until(Duration::from_secs(60), "lines 301-320 delivered", || {
        checkpoint_offsets(&dir) == vec![size]
    });
    let status = Command::new("kill")
        .args(["-TERM", &tail.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_exit(&mut tail, Duration::from_secs(60));
    let stderr = stderr_of(&dir);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("was truncated"), "{stderr}");
    assert!(
        stderr.contains("kpl tail: stopped (terminated): 270 lines read, 270 put, 0 failed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "no terminal codes off a terminal: {stderr}"
    );

    let found = lines_in_stream(&kinesis).await;
    let mut want = expected(51..=320);
    want.sort();
    let mut got: Vec<String> = found.keys().cloned().collect();
    got.sort();
    assert_eq!(got, want);
    assert!(
        found.values().all(|n| *n == 1),
        "no restart, so no duplicates"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tail_refuses_a_damaged_checkpoint_and_names_it() {
    let dir = temp_dir("damaged");
    std::fs::write(dir.join("cp.json"), "not json").unwrap();
    let mut tail = spawn_tail(&dir, "http://127.0.0.1:9", &["app.log"]);
    let status = wait_exit(&mut tail, Duration::from_secs(30));
    let stderr = stderr_of(&dir);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("checkpoint cp.json: not a kpl tail checkpoint"),
        "{}",
        text(stderr.as_bytes())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sends_json_lines_with_their_keys_names_bad_lines_and_exits_1() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("logs", 2).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let dir = temp_dir("json");
    std::fs::write(
        dir.join("events.jsonl"),
        "{\"user\":\"ann\",\"n\":1}\nnot json\n{\"n\":2}\n{\"user\":\"bob\",\"n\":3}\n",
    )
    .unwrap();
    let mut tail = spawn_tail(
        &dir,
        &endpoint,
        &[
            "--json",
            "--partition-key-field",
            "user",
            "--from-start",
            "--exit-when-idle",
            "0.5",
            "events.*",
        ],
    );
    let status = wait_exit(&mut tail, Duration::from_secs(60));
    let stderr = stderr_of(&dir);
    assert_eq!(
        status.code(),
        Some(1),
        "bad lines give exit status 1: {stderr}"
    );
    assert!(
        stderr.contains("events.jsonl byte 21: not JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("events.jsonl byte 30: no field \"user\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("4 lines read, 2 put, 0 failed, 2 bad lines skipped"),
        "{stderr}"
    );
    let mut got: Vec<(String, String)> = Vec::new();
    for r in kinesis.read_all("logs").await.unwrap() {
        for u in deaggregate(&r.partition_key, r.data) {
            got.push((u.partition_key, String::from_utf8(u.data.to_vec()).unwrap()));
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("ann".into(), "{\"user\":\"ann\",\"n\":1}".into()),
            ("bob".into(), "{\"user\":\"bob\",\"n\":3}".into()),
        ]
    );
    // The checkpoint is past the bad lines too: a restart sends nothing again.
    assert_eq!(checkpoint_offsets(&dir), vec![59]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// logrotate's `copytruncate` under a pattern that matches the copy (`app.log*`, as documented),
/// with a compressed older rotation beside it, then a restart from the checkpoint: every line
/// arrives, none more than twice, and only a line around the cut may come twice (at least
/// once). Before: the stale fingerprint made every poll after the cut look like another
/// truncation (60 of 400 lines three times or more), and the copy was read again from its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_through_copytruncate_sends_each_line_once_but_around_the_cut() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("logs", 1).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let dir = temp_dir("copytruncate");
    let log = dir.join("app.log");
    append(&log, 1..=300);
    // An older rotation, compressed by logrotate: gzip bytes, not lines.
    let mut gz = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0x03];
    gz.extend((0..2000u32).map(|i| (i * 7 % 251) as u8));
    std::fs::write(dir.join("app.log.2.gz"), gz).unwrap();

    let mut tail = spawn_tail(&dir, &endpoint, &["--from-start", "app.log*"]);
    let size = std::fs::metadata(&log).unwrap().len();
    wait_until(Duration::from_secs(60), "lines 1-300 delivered", || {
        checkpoint_offsets(&dir).contains(&size)
    });
    // copytruncate: copy, then empty in place; the writer goes on appending.
    std::fs::copy(&log, dir.join("app.log.1")).unwrap();
    File::create(&log).unwrap();
    for k in 0..8 {
        append(&log, 301 + k * 10..=310 + k * 10);
        std::thread::sleep(Duration::from_millis(500));
    }
    let size = std::fs::metadata(&log).unwrap().len();
    wait_until(Duration::from_secs(60), "lines 301-380 delivered", || {
        checkpoint_offsets(&dir).contains(&size)
    });
    let status = Command::new("kill")
        .args(["-TERM", &tail.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_exit(&mut tail, Duration::from_secs(60));
    assert!(status.success(), "{}", stderr_of(&dir));
    // A restart from the checkpoint, with 20 more lines.
    append(&log, 381..=400);
    let mut tail = spawn_tail(&dir, &endpoint, &["--exit-when-idle", "1", "app.log*"]);
    let status = wait_exit(&mut tail, Duration::from_secs(120));
    let stderr = stderr_of(&dir);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("app.log.2.gz is compressed (gzip), not lines; skipped"),
        "{stderr}"
    );

    let found = lines_in_stream(&kinesis).await;
    let want = expected(1..=400);
    let missing: Vec<&String> = want.iter().filter(|l| !found.contains_key(*l)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}\n{stderr}");
    assert_eq!(found.len(), 400, "only the lines written: {stderr}");
    let twice: Vec<(&String, &usize)> = found.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.iter().all(|(_, n)| **n == 2) && twice.len() <= 1,
        "more than a line around the cut sent again: {twice:?}\n{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file renamed out of the pattern is still read for --rotate-wait (5 s by default) after
/// its last write: a writer that holds it open a moment after the rotation loses nothing (it
/// was closed after 500 ms). A line longer than any record is reported and skipped to its
/// newline, not held in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reads_a_late_write_to_a_rotated_file_and_skips_an_endless_line() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("logs", 1).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let dir = temp_dir("late");
    let log = dir.join("app.log");
    append(&log, 1..=10);
    let mut tail = spawn_tail(&dir, &endpoint, &["--from-start", "app.log"]);
    let size = std::fs::metadata(&log).unwrap().len();
    wait_until(Duration::from_secs(60), "lines 1-10 delivered", || {
        checkpoint_offsets(&dir).contains(&size)
    });
    std::fs::rename(&log, dir.join("app.log.old")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    append(&dir.join("app.log.old"), 11..=12);
    // The new file: a line of 11 MiB, then ordinary lines.
    {
        let mut f = File::create(&log).unwrap();
        f.write_all(&vec![b'x'; 11 << 20]).unwrap();
        f.write_all(b"\n").unwrap();
    }
    append(&log, 13..=15);
    std::thread::sleep(Duration::from_millis(1000));
    let status = Command::new("kill")
        .args(["-TERM", &tail.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_exit(&mut tail, Duration::from_secs(60));
    let stderr = stderr_of(&dir);
    assert_eq!(
        status.code(),
        Some(1),
        "a bad line gives exit status 1: {stderr}"
    );
    assert!(
        stderr.contains("app.log byte 0: a line longer than 10485760 bytes"),
        "{stderr}"
    );
    let found = lines_in_stream(&kinesis).await;
    let mut got: Vec<String> = found.keys().cloned().collect();
    got.sort();
    assert_eq!(got, expected(1..=15), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
