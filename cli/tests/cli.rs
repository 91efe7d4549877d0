//! The `kpl` binary, as a user runs it: aggregate, inspect, demo.

mod common;

use std::process::Output;

use common::{JsonRecord, b64, kpl, text, unb64, workload};
use kinesis_producer::UserRecord;
use kinesis_producer::aggregation::encode_aggregated;
use serde_json::Value;

fn lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Input lines: records whose data is valid UTF-8 given as "data", the rest as "data_base64".
fn jsonl(records: &[UserRecord]) -> String {
    let mut s = String::new();
    for r in records {
        let mut v = serde_json::json!({"partition_key": r.partition_key()});
        match std::str::from_utf8(r.data()) {
            Ok(t) => v["data"] = t.into(),
            Err(_) => v["data_base64"] = b64(r.data()).into(),
        }
        if let Some(k) = r.explicit_hash_key() {
            v["explicit_hash_key"] = k.to_string().into();
        }
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

fn read_back(lines: &[Value]) -> Vec<JsonRecord> {
    lines
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect()
}

#[test]
fn aggregate_then_inspect_json_gives_back_the_records() {
    let mut records = workload(3, 1000, 300);
    records.push(UserRecord::new("text", "plain UTF-8 text").unwrap());
    let input = jsonl(&records);
    let expected: Vec<JsonRecord> = records.iter().map(JsonRecord::from_user).collect();
    for flags in [
        &[][..],
        &["--max-size", "1000"],
        &["--max-count", "1"],
        &["--max-size", "150"],
    ] {
        let agg = kpl(&[&["aggregate"][..], flags].concat(), input.as_bytes());
        assert!(agg.status.success(), "{flags:?}: {}", text(&agg.stderr));
        let kinesis = lines(&agg);
        assert!(text(&agg.stderr).contains(&format!(
            "{} user records into {} Kinesis records",
            records.len(),
            kinesis.len()
        )));
        let inspected = kpl(&["inspect", "--json"], &agg.stdout);
        assert!(inspected.status.success(), "{}", text(&inspected.stderr));
        let back = read_back(&lines(&inspected));
        // Kinesis keeps no explicit hash key inside a plain record's data, but `kpl aggregate`
        // prints it beside the record and `kpl inspect` reads it from there: exact either way.
        assert_eq!(back, expected, "{flags:?}");
        // And the inspected lines are valid `kpl aggregate` input again.
        let again = kpl(&["aggregate"], &inspected.stdout);
        assert_eq!(
            again.stdout,
            kpl(&["aggregate"], input.as_bytes()).stdout,
            "{flags:?}"
        );
    }
}

#[test]
fn aggregate_output_is_the_encoders() {
    let records = workload(4, 50, 10);
    let out = kpl(&["aggregate"], jsonl(&records).as_bytes());
    let kinesis = lines(&out);
    assert_eq!(kinesis.len(), 1);
    assert_eq!(kinesis[0]["partition_key"], "a");
    assert_eq!(kinesis[0]["user_records"], 50);
    assert_eq!(
        kinesis[0]["explicit_hash_key"],
        records[0].hash_key().to_string()
    );
    assert_eq!(
        unb64(kinesis[0]["data_base64"].as_str().unwrap()),
        encode_aggregated(&records)
    );
}

#[test]
fn bad_lines_are_reported_with_their_numbers_and_the_rest_goes_through() {
    let input = concat!(
        "{\"partition_key\": \"ok-1\", \"data\": \"one\"}\n",
        "{\"partition_key\": \"\", \"data\": \"x\"}\n",
        "\n",
        "{\"partition_key\": \"k\", \"explicit_hash_key\": \"340282366920938463463374607431768211456\", \"data\": \"x\"}\n",
        "{\"partition_key\": \"k\", \"data\": \"x\", \"data_base64\": \"eA==\"}\n",
        "{\"partition_key\": \"k\"}\n",
        "{\"partition_key\": \"k\", \"data_base64\": \"***\"}\n",
        "not json\n",
        "{\"partition_key\": \"ok-2\", \"data_base64\": \"AAE=\"}\n",
    );
    let long_key = format!(
        "{{\"partition_key\": \"{}\", \"data\": \"x\"}}\n",
        "k".repeat(300)
    );
    let input = format!("{input}{long_key}");
    let out = kpl(&["aggregate"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for expected in [
        "stdin line 2: partition key is empty; it must be 1 to 256 characters; skipped",
        "stdin line 4: explicit hash key \"340282366920938463463374607431768211456\" is above the maximum",
        "stdin line 5: give \"data\" or \"data_base64\", not both",
        "stdin line 6: missing \"data\" (UTF-8 text) or \"data_base64\"",
        "stdin line 7: data_base64 is not valid base64",
        "stdin line 8: not a JSON user record",
        "stdin line 10: partition key is 300 characters; the limit is 256",
        "2 user records into 1 Kinesis records",
        "7 lines rejected",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let back = read_back(&lines(&kpl(&["inspect", "--json"], &out.stdout)));
    assert_eq!(
        back.iter()
            .map(|r| r.partition_key.as_str())
            .collect::<Vec<_>>(),
        ["ok-1", "ok-2"]
    );
}

#[test]
fn a_record_over_the_stream_limit_is_rejected_by_name_and_size() {
    let big = format!(
        "{{\"partition_key\": \"big\", \"data\": \"{}\"}}\n",
        "x".repeat(1_048_574)
    );
    let out = kpl(&["aggregate"], big.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "record is 1048577 bytes (data 1048574 + partition key 3); the limit is 1048576 bytes"
        ),
        "{}",
        text(&out.stderr)
    );
    // With the stream's limit raised it goes through, alone and plain.
    let out = kpl(
        &["aggregate", "--max-record-size", "2097152"],
        big.as_bytes(),
    );
    assert!(out.status.success());
    assert_eq!(lines(&out)[0]["partition_key"], "big");
}

#[test]
fn out_of_range_flags_name_the_flag_the_property_and_the_range() {
    let out = kpl(&["aggregate", "--max-size", "10"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "kpl: --max-size: AggregationMaxSize is 10; the range is 64..=1048576"
    );
    let out = kpl(&["aggregate", "--max-count", "0"], b"");
    assert_eq!(
        text(&out.stderr).trim(),
        "kpl: --max-count: AggregationMaxCount is 0; the range is 1..=4294967295"
    );
}

#[test]
fn inspect_explains_each_kind_of_record() {
    let agg = encode_aggregated(&[
        UserRecord::new("k1", "first").unwrap(),
        UserRecord::new("k2", vec![0u8, 1, 2])
            .unwrap()
            .with_explicit_hash_key("7".parse().unwrap()),
    ]);
    let mut bad_md5 = agg.to_vec();
    *bad_md5.last_mut().unwrap() ^= 0xff;
    let out = kpl(
        &["inspect", &b64(&agg), &b64(b"just text"), &b64(&bad_md5)],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for expected in [
        "record 0: aggregated, 2 user records,",
        "MD5 ok",
        "partition key table (2): \"k1\", \"k2\"",
        "explicit hash key table (1): \"7\"",
        "user record 0: partition key [0] \"k1\", 5 bytes: \"first\"",
        "user record 1: partition key [1] \"k2\", explicit hash key [0] 7, 3 bytes: hex 000102",
        "record 1: not aggregated (no magic), 1 user record, 9 bytes",
        "record 2: has the aggregation magic but is not a valid aggregate (aggregate MD5 mismatch",
        "read as 1 plain user record, as the KCL does",
    ] {
        assert!(
            shown.contains(expected),
            "missing {expected:?} in:\n{shown}"
        );
    }
    // JSON flags the bad digest; --strict makes it an error.
    let json = lines(&kpl(&["inspect", "--json", &b64(&bad_md5)], b""));
    assert_eq!(
        (json[0]["aggregated"].clone(), json[0]["md5_ok"].clone()),
        (false.into(), false.into())
    );
    assert!(json[0]["error"].as_str().unwrap().contains("MD5 mismatch"));
    let strict = kpl(&["inspect", "--strict", &b64(&agg), &b64(&bad_md5)], b"");
    assert_eq!(strict.status.code(), Some(1));
    assert!(
        text(&strict.stderr).contains("argument 2 (record 1): aggregate MD5 mismatch"),
        "{}",
        text(&strict.stderr)
    );
    assert!(text(&strict.stdout).contains("record 0: aggregated"));
}

#[test]
fn inspect_reads_raw_files_and_bad_base64_is_an_error() {
    let dir = std::env::temp_dir().join(format!("kpl-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("record.bin");
    std::fs::write(
        &path,
        encode_aggregated(&[UserRecord::new("f", "from a file").unwrap()]),
    )
    .unwrap();
    let out = kpl(
        &["inspect", "--json", "--file", path.to_str().unwrap()],
        b"",
    );
    assert!(out.status.success());
    let back = read_back(&lines(&out));
    assert_eq!(
        (back[0].partition_key.as_str(), back[0].data()),
        ("f", b"from a file".to_vec())
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let out = kpl(&["inspect"], b"@@not base64@@\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("stdin line 1: not valid base64"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn demo_runs_the_producer_end_to_end_on_the_embedded_kinesis() {
    let out = kpl(&["demo", "--records", "5000"], b"");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let shown = text(&out.stdout);
    for expected in [
        "local Kinesis (ferrokinesis, in this process) at http://127.0.0.1:",
        "sent: 5000 records put, 0 failed",
        "read back: all 5000 user records, each exactly once",
        "demo passed",
    ] {
        assert!(
            shown.contains(expected),
            "missing {expected:?} in:\n{shown}"
        );
    }
    // Without aggregation every user record is its own Kinesis record.
    let out = kpl(&["demo", "--records", "300", "--no-aggregation"], b"");
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("packing: 300 Kinesis records (1.0 user records each)"),
        "{shown}"
    );
}

#[test]
fn help_shows_examples() {
    for cmd in ["aggregate", "inspect", "demo", "put", "read", "local"] {
        let out = kpl(&[cmd, "--help"], b"");
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("Examples:"), "{cmd}");
    }
}
