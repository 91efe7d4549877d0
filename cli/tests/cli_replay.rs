//! `kpl bench --input`: the user's own records replayed, cycled or cut, and read back exactly
//! from the embedded local Kinesis; a sample captured with `kpl read --limit` replayed at its
//! recorded pace; the errors a bad input gets.

mod common;

use std::path::PathBuf;

use common::{assert_refused, json_report, kpl, text};
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use serde_json::Value;

fn temp_file(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kpl-replay-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn report(args: &[&str]) -> Value {
    json_report(&kpl(args, b""))
}

#[test]
fn replayed_json_lines_are_read_back_exactly_whether_cycled_or_cut() {
    // 400 events over 37 users, every tenth with an explicit hash key.
    let body: String = (0..400)
        .map(|i| {
            let hash = if i % 10 == 0 {
                format!(",\"h\":\"{}\"", i * 7919)
            } else {
                String::new()
            };
            format!("{{\"user\":\"user-{}\",\"seq\":{i}{hash}}}\n", i % 37)
        })
        .collect();
    let input = temp_file("events.jsonl", &body);
    let input = input.to_str().unwrap();
    for (records, want) in [(None, 400u64), (Some("1000"), 1000), (Some("150"), 150)] {
        let mut args = vec![
            "bench",
            "--input",
            input,
            "--partition-key-field",
            "user",
            "--explicit-hash-key-field",
            "h",
            "--json",
        ];
        if let Some(n) = records {
            args.extend(["--records", n]);
        }
        let r = report(&args);
        assert_eq!(r["input"]["format"], "jsonl");
        assert_eq!(r["input"]["records"], 400);
        assert_eq!(r["input"]["distinct_partition_keys"], 37);
        assert_eq!(r["input"]["with_explicit_hash_key"], 40);
        assert_eq!(r["records"], want);
        let runs = r["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "aggregation on and off");
        for run in runs {
            assert_eq!(run["user_records_put"], want, "{run}");
            assert_eq!(run["read_back_user_records"], want, "{run}");
            // Keys and data as a multiset: the records in the stream are the input's, cycled
            // or cut, not just as many of them.
            assert_eq!(run["read_back_exact"], true, "{run}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_captured_with_kpl_read_replays_at_its_recorded_pace() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("live", 2).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let sample = tokio::task::spawn_blocking(move || {
        let lines: String = (0..500)
            .map(|i| format!("line {i} of the live stream\n"))
            .collect();
        let put = kpl(
            &["put", "--stream", "live", "--endpoint-url", &endpoint],
            lines.as_bytes(),
        );
        assert!(put.status.success(), "{}", text(&put.stderr));
        let read = kpl(
            &[
                "read",
                "--stream",
                "live",
                "--endpoint-url",
                &endpoint,
                "--limit",
                "200",
            ],
            b"",
        );
        assert!(read.status.success(), "{}", text(&read.stderr));
        let counted = kpl(
            &[
                "read",
                "--stream",
                "live",
                "--endpoint-url",
                &endpoint,
                "--count",
                "--limit",
                "50",
            ],
            b"",
        );
        assert!(
            text(&counted.stdout).ends_with(" 50 user records\n"),
            "--count counts to the limit: {}",
            text(&counted.stdout)
        );
        text(&read.stdout)
    })
    .await
    .unwrap();
    let lines: Vec<Value> = sample
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 200, "--limit 200");
    assert!(
        lines
            .iter()
            .all(|l| l["arrival_timestamp"].as_f64().is_some()),
        "every record has its arrival time: {}",
        lines[0]
    );
    let input = temp_file("sample.jsonl", &sample);
    let r = report(&[
        "bench",
        "--input",
        input.to_str().unwrap(),
        "--pace",
        "original",
        "--aggregation",
        "on",
        "--json",
    ]);
    assert_eq!(r["input"]["format"], "read", "detected from the first line");
    assert_eq!(r["input"]["records"], 200);
    assert_eq!(r["original_pace"], true);
    assert!(r["input"]["recorded_seconds"].as_f64().is_some());
    let run = &r["runs"][0];
    assert_eq!(run["user_records_put"], 200);
    assert_eq!(run["read_back_exact"], true, "{run}");
}

#[test]
fn a_bad_input_is_refused_naming_the_file_the_line_and_why() {
    let no_field = temp_file("no-field.jsonl", "{\"user\":\"a\"}\n{\"other\":1}\n");
    let plain = temp_file("plain.txt", "one\ntwo\n");
    let empty = temp_file("empty.txt", "\n\n");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec![
                "--input",
                no_field.to_str().unwrap(),
                "--partition-key-field",
                "user",
            ],
            format!("{} line 2: no field \"user\"", no_field.display()),
        ),
        (
            vec!["--input", plain.to_str().unwrap(), "--pace", "original"],
            format!(
                "--pace original needs an arrival time on every record, and {} has none",
                plain.display()
            ),
        ),
        (
            vec!["--input", empty.to_str().unwrap()],
            format!("{}: no records in it", empty.display()),
        ),
        (
            vec!["--input", "/nonexistent/kpl-input.jsonl"],
            "/nonexistent/kpl-input.jsonl: No such file or directory".into(),
        ),
        (
            vec!["--input", plain.to_str().unwrap(), "--pace", "fast"],
            "use original, as-fast or a number of records per second above 0".into(),
        ),
        (
            vec!["--partition-key-field", "user"],
            "the following required arguments were not provided".into(),
        ),
    ];
    for (flags, message) in cases {
        assert_refused(&[&["bench"][..], &flags].concat(), &message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sweep_and_fleet_against_an_endpoint_put_exactly_the_input_each_run() {
    // A real endpoint (the embedded Kinesis over HTTP, as any endpoint is reached): kpl bench
    // writes into the stream it is given, each run after the other, and `kpl read` reads it all
    // back; a run per sweep value and mode, so the stream holds the input that many times.
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("mine", 3).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let body: String = (0..300)
        .map(|i| format!("{{\"user\":\"u{}\",\"n\":{i}}}\n", i % 17))
        .collect();
    let input = temp_file("endpoint.jsonl", &body);
    let page = input.with_extension("html");
    let (report, read) = tokio::task::spawn_blocking(move || {
        let report = json_report(&kpl(
            &[
                "bench",
                "--endpoint-url",
                &endpoint,
                "--stream",
                "mine",
                "--input",
                input.to_str().unwrap(),
                "--partition-key-field",
                "user",
                "--producers",
                "2",
                "--sweep",
                "CollectionMaxCount=10,500",
                "--report",
                page.to_str().unwrap(),
                "--json",
            ],
            b"",
        ));
        assert!(
            std::fs::read_to_string(&page)
                .unwrap()
                .contains("The fleet")
        );
        let read = kpl(
            &["read", "--stream", "mine", "--endpoint-url", &endpoint],
            b"",
        );
        assert!(read.status.success(), "{}", text(&read.stderr));
        (report, text(&read.stdout))
    })
    .await
    .unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "two values, two modes");
    for run in runs {
        assert_eq!(run["user_records_put"], 300, "{run}");
        let shares = run["producers"].as_array().unwrap();
        let put: u64 = shares
            .iter()
            .map(|s| s["user_records_put"].as_u64().unwrap())
            .sum();
        assert_eq!(put, 300);
    }
    let mut got: Vec<(String, String)> = read
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["partition_key"].as_str().unwrap().to_owned(),
                v["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let once: Vec<(String, String)> = body
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["user"].as_str().unwrap().to_owned(), l.to_owned())
        })
        .collect();
    let mut want: Vec<(String, String)> = (0..4).flat_map(|_| once.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "the stream holds the input once per run, keys and data"
    );
}
