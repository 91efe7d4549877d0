//! `kpl put` and `kpl read` end to end against the embedded Kinesis on 127.0.0.1, run as a user
//! runs them.

use std::collections::HashMap;
mod common;

use std::process::{Command, Stdio};

use common::{kpl, text};

use kinesis_producer::aggregation::deaggregate;
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use serde_json::Value;

fn read_back(endpoint: &str, stream: &str) -> Vec<Value> {
    let out = kpl(
        &["read", "--stream", stream, "--endpoint-url", endpoint],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_read_gives_back_exactly_what_was_put() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("cli", 3).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let input: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"user\":\"u{}\",\"n\":{i},\"msg\":\"héllo {i}\"}}\n",
                i % 37
            )
        })
        .collect();
    // A KPL-style properties file turning on per-key ordering.
    let props = std::env::temp_dir().join(format!("kpl-order-{}.properties", std::process::id()));
    std::fs::write(
        &props,
        "PerKeyOrdering = true\nRecordMaxBufferedTime = 50\n",
    )
    .unwrap();
    let out = tokio::task::spawn_blocking({
        let (endpoint, input, props) = (
            endpoint.clone(),
            input.clone(),
            props.to_str().unwrap().to_owned(),
        );
        move || {
            let args = [
                "put",
                "--stream",
                "cli",
                "--endpoint-url",
                &endpoint,
                "--config",
                &props,
                "--json",
                "--partition-key-field",
                "user",
            ];
            kpl(&args, input.as_bytes())
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("3000 lines, 3000 put, 0 failed"),
        "{}",
        text(&out.stderr)
    );
    // Off a terminal: plain lines, no bar, no escape codes or carriage returns.
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&b'\r'),
        "{}",
        text(&out.stderr)
    );

    let records = tokio::task::spawn_blocking(move || read_back(&endpoint, "cli"))
        .await
        .unwrap();
    assert_eq!(records.len(), 3000);
    let mut sent: HashMap<String, String> = HashMap::new();
    for line in input.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        sent.insert(line.to_owned(), v["user"].as_str().unwrap().to_owned());
    }
    let mut per_key: HashMap<String, Vec<i64>> = HashMap::new();
    for r in &records {
        let data = r["data"].as_str().unwrap();
        assert_eq!(
            sent.get(data),
            Some(&r["partition_key"].as_str().unwrap().to_owned()),
            "{r}"
        );
        assert!(r["shard_id"].as_str().unwrap().starts_with("shardId-"));
        let v: Value = serde_json::from_str(data).unwrap();
        per_key
            .entry(v["user"].as_str().unwrap().to_owned())
            .or_default()
            .push(v["n"].as_i64().unwrap());
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 3000);
    // `kpl read` reads each shard in order, and one key lives on one shard: with
    // PerKeyOrdering, each key's records come back in the order they were put.
    for (key, ns) in &per_key {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{key}: {ns:?}");
    }
    std::fs::remove_file(props).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_records_go_to_the_dead_letter_file_and_replay_from_it() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("real", 1).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let dir = std::env::temp_dir().join(format!("kpl-dead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dead = dir.join("dead.jsonl");
    let dead_s = dead.to_str().unwrap().to_owned();
    let (e, d) = (endpoint.clone(), dead_s.clone());
    let out = tokio::task::spawn_blocking(move || {
        kpl(
            &[
                "put",
                "--stream",
                "missing",
                "--endpoint-url",
                &e,
                "--dead-letter",
                &d,
            ],
            b"one\ntwo\nthree\n",
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("3 lines, 0 put, 3 failed (written to"),
        "{}",
        text(&out.stderr)
    );
    let lines: Vec<Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("ResourceNotFoundException"),
        "{}",
        lines[0]
    );

    let (e, d) = (endpoint.clone(), dead_s.clone());
    let out = tokio::task::spawn_blocking(move || {
        kpl(
            &[
                "put",
                "--stream",
                "real",
                "--endpoint-url",
                &e,
                "--replay",
                &d,
            ],
            b"",
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let records = tokio::task::spawn_blocking(move || read_back(&endpoint, "real"))
        .await
        .unwrap();
    let mut data: Vec<&str> = records
        .iter()
        .map(|r| r["data"].as_str().unwrap())
        .collect();
    data.sort();
    assert_eq!(data, ["one", "three", "two"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_properties_file_uses_kpl_names_and_refuses_unknown_ones() {
    let dir = std::env::temp_dir().join(format!("kpl-props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.properties");
    std::fs::write(
        &bad,
        "# comment\nAggregationMaxSize = 102400\nRecordMaxBufferedTme = 50\n",
    )
    .unwrap();
    let out = kpl(
        &[
            "put",
            "--stream",
            "s",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--config",
            bad.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("bad.properties line 3: unknown property RecordMaxBufferedTme; did you mean RecordMaxBufferedTime? If not, the KPL ignores a name it does not know, with a warning"), "{err}");
    // The KPL's way, one flag away: the name is ignored, with a warning.
    let out = kpl(
        &[
            "put",
            "--stream",
            "s",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--config",
            bad.to_str().unwrap(),
            "--ignore-unknown-properties",
        ],
        b"",
    );
    let err = text(&out.stderr);
    assert!(!err.contains("unknown property"), "{err}");
    assert!(
        err.contains("RecordMaxBufferedTme (no KPL or producer property has this name)"),
        "{err}"
    );
    let range = dir.join("range.properties");
    std::fs::write(&range, "CollectionMaxCount: 501\n").unwrap();
    let out = kpl(
        &["read", "--stream", "s", "--config", range.to_str().unwrap()],
        b"",
    );
    assert!(
        text(&out.stderr)
            .contains("range.properties line 1: CollectionMaxCount is 501; the range is 1..=500"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kpl_local_serves_streams_that_put_and_read_use() {
    let server = common::KplLocal::start("dev:2");
    let endpoint = server.endpoint.clone();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert_eq!(server.created, ["created stream dev with 2 shard(s)"]);
    let put = kpl(
        &["put", "--stream", "dev", "--endpoint-url", &endpoint],
        b"a\nb\nc\n",
    );
    let counted = kpl(
        &[
            "read",
            "--stream",
            "dev",
            "--endpoint-url",
            &endpoint,
            "--count",
        ],
        b"",
    );
    drop(server);
    assert!(put.status.success(), "{}", text(&put.stderr));
    assert!(
        text(&counted.stdout).contains("3 user records"),
        "{}",
        text(&counted.stdout)
    );
}

/// A KPL user's properties file carries over: the KPL's every property at its default is
/// accepted without a word; settings with no effect here get one warning naming them; a file's
/// `KinesisPort = 443` does not override `--endpoint-url` (it once sent everything to port 443).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kpl_properties_file_carries_over() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("kplconf", 2).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let defaults = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/kpl-defaults.properties"
    );
    let daemon = std::env::temp_dir().join(format!("kpl-daemon-{}.properties", std::process::id()));
    std::fs::write(
        &daemon,
        "KinesisEndpoint = kinesis.us-east-1.amazonaws.com\nKinesisPort = 443\nThreadPoolSize = 8\n",
    )
    .unwrap();
    let daemon_path = daemon.to_str().unwrap().to_owned();
    let input: String = (0..100).map(|i| format!("line {i}\n")).collect();
    let (out_defaults, out_daemon) = tokio::task::spawn_blocking(move || {
        let put = |config: &str| {
            let args = [
                "put",
                "--stream",
                "kplconf",
                "--endpoint-url",
                &endpoint,
                "--config",
                config,
            ];
            kpl(&args, input.as_bytes())
        };
        (put(defaults), put(&daemon_path))
    })
    .await
    .unwrap();
    let err = text(&out_defaults.stderr);
    assert!(out_defaults.status.success(), "{err}");
    assert!(err.contains("100 lines, 100 put, 0 failed"), "{err}");
    assert!(!err.contains("WARN"), "{err}");
    let err = text(&out_daemon.stderr);
    assert!(out_daemon.status.success(), "{err}");
    assert!(err.contains("100 lines, 100 put, 0 failed"), "{err}");
    assert!(
        err.contains(
            "WARN kinesis_producer::config: these properties have no effect here: \
             ThreadPoolSize (there is no native daemon: the producer runs in your process)"
        ),
        "{err}"
    );
    let stored: usize = kinesis
        .read_all("kplconf")
        .await
        .unwrap()
        .into_iter()
        .map(|r| deaggregate(&r.partition_key, r.data).len())
        .sum();
    assert_eq!(stored, 200, "both runs' records, once each");
    std::fs::remove_file(daemon).unwrap();
}

/// At trace level, with credentials (and a session token) from the environment, neither the
/// secret key nor the token appears anywhere kpl writes, in either log format; the log is on
/// (the library's events show).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_log_never_shows_the_credentials() {
    const SECRET: &str = "kplSentinelSecretKey/DoNotLog+0123456789abcdef";
    const TOKEN: &str = "kplSentinelSessionToken-DoNotLog-FwoGZXIvYXdzEJr";
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("secret", 1).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    for format in ["human", "json"] {
        let endpoint = endpoint.clone();
        let out = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = Command::new(env!("CARGO_BIN_EXE_kpl"))
                .args(["put", "--stream", "secret", "--endpoint-url", &endpoint])
                .args(["--log-level", "trace", "--log-format", format])
                .env_remove("RUST_LOG")
                .env("AWS_ACCESS_KEY_ID", "AKIAKPLSENTINEL00001")
                .env("AWS_SECRET_ACCESS_KEY", SECRET)
                .env("AWS_SESSION_TOKEN", TOKEN)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"one\ntwo\nthree\n").unwrap();
            drop(stdin);
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{all}");
        assert!(all.contains("3 lines, 3 put, 0 failed"), "{all}");
        assert!(
            all.contains("PutRecords"),
            "the library's trace is on: {all}"
        );
        assert!(
            !all.contains(SECRET),
            "{format}: the secret key was written"
        );
        assert!(
            !all.contains(TOKEN),
            "{format}: the session token was written"
        );
    }
}

use common::kinesis_local;

/// `kpl` with the AWS environment of kinesis-local's account (its ARNs name that account).
fn kpl_as(account: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let env = [
        ("AWS_ACCESS_KEY_ID", account),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_REGION", kinesis_local::REGION),
    ];
    common::kpl_with(args, stdin, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_read_take_a_stream_arn() {
    let local = kinesis_local::KinesisLocal::start().await;
    let arn = local.create_stream("cli-arn", 2, None).await;
    let endpoint = local.endpoint.clone();
    let (put, read) = tokio::task::spawn_blocking(move || {
        let conn = [
            "--stream",
            arn.as_str(),
            "--endpoint-url",
            endpoint.as_str(),
        ];
        let put = kpl_as(
            kinesis_local::ACCOUNT,
            &[&["put"][..], &conn[..]].concat(),
            b"one\ntwo\nthree\n",
        );
        let read = kpl_as(
            kinesis_local::ACCOUNT,
            &[&["read"][..], &conn[..]].concat(),
            b"",
        );
        (put, read)
    })
    .await
    .unwrap();
    assert!(put.status.success(), "{}", text(&put.stderr));
    assert!(
        text(&put.stderr).contains("3 lines, 3 put, 0 failed"),
        "{}",
        text(&put.stderr)
    );
    assert!(read.status.success(), "{}", text(&read.stderr));
    let mut data: Vec<String> = text(&read.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["data"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    data.sort();
    assert_eq!(data, ["one", "three", "two"]);
}

/// A replay of the dead-letter file that was killed leaves its records in
/// `<dead-letter>.replaying`; the next replay sends those too and never renames the new
/// dead-letter file over them (it did: those records were lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_an_unfinished_one_loses_nothing() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("real", 1).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let dir = std::env::temp_dir().join(format!("kpl-replaying-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dead = dir.join("dead.jsonl");
    let dead_s = dead.to_str().unwrap().to_owned();
    // Two rounds of failures (the stream is missing): the first round's file is then left
    // moved aside, as a replay killed before it finished leaves it.
    for input in [&b"one\ntwo\n"[..], &b"three\nfour\n"[..]] {
        let (e, d) = (endpoint.clone(), dead_s.clone());
        let first = input.starts_with(b"one");
        let input = input.to_vec();
        let out = tokio::task::spawn_blocking(move || {
            kpl(
                &[
                    "put",
                    "--stream",
                    "missing",
                    "--endpoint-url",
                    &e,
                    "--dead-letter",
                    &d,
                ],
                &input,
            )
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        if first {
            std::fs::rename(&dead, dir.join("dead.jsonl.replaying")).unwrap();
        }
    }
    let (e, d) = (endpoint.clone(), dead_s.clone());
    let out = tokio::task::spawn_blocking(move || {
        kpl(
            &[
                "put",
                "--stream",
                "real",
                "--endpoint-url",
                &e,
                "--replay",
                &d,
                "--dead-letter",
                &d,
            ],
            b"",
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let records = tokio::task::spawn_blocking(move || read_back(&endpoint, "real"))
        .await
        .unwrap();
    let mut data: Vec<&str> = records
        .iter()
        .map(|r| r["data"].as_str().unwrap())
        .collect();
    data.sort();
    assert_eq!(data, ["four", "one", "three", "two"]);
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "nothing left aside: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
