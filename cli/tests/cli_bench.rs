//! `kpl bench` end to end: its counts against what `kpl read` finds in the stream, its own
//! read-back on the embedded default, its charts, its errors, and output with no terminal.

mod common;

use common::{assert_refused, json_report, kpl, text};
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_counts_agree_with_what_read_finds() {
    let kinesis = LocalKinesis::start(LocalOptions {
        enforce_limits: true,
        port: 0,
    })
    .await
    .unwrap();
    kinesis.create_stream("bench", 2).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        kpl(
            &[
                "bench",
                "--endpoint-url",
                &endpoint,
                "--stream",
                "bench",
                "--records",
                "3000",
                "--size",
                "uniform:20-400",
                "--keys",
                "50",
                "--ehk-share",
                "0.2",
                "--json",
            ],
            b"",
        )
    })
    .await
    .unwrap();
    let report = json_report(&out);
    assert!(
        report["sink"]
            .as_str()
            .unwrap()
            .starts_with("Kinesis at http://127.0.0.1:")
    );
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "aggregation on and off");
    let (on, off) = (&runs[0], &runs[1]);
    assert_eq!(on["aggregation"], true);
    assert_eq!(off["aggregation"], false);
    for run in runs {
        assert_eq!(u(&run["user_records_put"]), 3000);
        assert_eq!(u(&run["user_records_failed"]), 0);
        assert!(
            run["read_back_user_records"].is_null(),
            "read back only on the local sink"
        );
        // Units used are at least the minimum for the bytes, and each Kinesis record costs one
        // at least.
        assert!(u(&run["put_payload_units"]) >= u(&run["min_put_payload_units"]));
        assert!(u(&run["put_payload_units"]) >= u(&run["kinesis_records_put"]));
        assert!(u(&run["put_records_calls"]) >= 1);
    }
    // The same workload both times.
    assert_eq!(on["user_bytes"], off["user_bytes"]);
    // Off: one Kinesis record per user record, each at least one unit.
    assert_eq!(u(&off["kinesis_records_put"]), 3000);
    assert_eq!(u(&off["put_payload_units"]), 3000);
    // On: far fewer.
    assert!(u(&on["kinesis_records_put"]) * 10 < 3000, "{on}");

    // What `kpl read` finds is what bench says it put, in Kinesis and in user records.
    let endpoint = kinesis.endpoint().to_owned();
    let counted = tokio::task::spawn_blocking(move || {
        kpl(
            &[
                "read",
                "--stream",
                "bench",
                "--endpoint-url",
                &endpoint,
                "--count",
            ],
            b"",
        )
    })
    .await
    .unwrap();
    assert!(counted.status.success(), "{}", text(&counted.stderr));
    let kinesis_records = u(&on["kinesis_records_put"]) + u(&off["kinesis_records_put"]);
    assert_eq!(
        text(&counted.stdout).trim(),
        format!("{kinesis_records} Kinesis records, 6000 user records")
    );
}

#[test]
fn bench_on_the_embedded_default_reads_back_every_record_and_draws_charts() {
    let dir = std::env::temp_dir().join(format!("kpl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("bench.svg");
    let out = kpl(
        &[
            "bench",
            "--records",
            "2000",
            "--size",
            "lognormal:150:0.8",
            "--json",
            "--chart",
            svg.to_str().unwrap(),
        ],
        b"",
    );
    let report = json_report(&out);
    assert!(
        report["sink"]
            .as_str()
            .unwrap()
            .starts_with("local Kinesis")
    );
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(u(&run["user_records_put"]), 2000);
        assert_eq!(u(&run["read_back_user_records"]), 2000);
        assert_eq!(run["read_back_kinesis_records"], run["kinesis_records_put"]);
        assert!(!run["rate_over_time"].as_array().unwrap().is_empty());
        assert_eq!(run["latency_quantiles_ms"].as_array().unwrap().len(), 1001);
    }
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg"), "{drawn}");
    assert!(drawn.contains("aggregation on") && drawn.contains("aggregation off"));
    // The legend carries each run's bill.
    for run in report["runs"].as_array().unwrap() {
        let month = format!(
            "${:.2} provisioned",
            run["bill"]["provisioned_monthly_usd"].as_f64().unwrap()
        );
        assert!(drawn.contains(&month), "{month} not in the chart");
    }

    let png = dir.join("bench.png");
    let out = kpl(
        &[
            "bench",
            "--sink",
            "memory",
            "--records",
            "5000",
            "--aggregation",
            "on",
            "--chart",
            png.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::read(&png)
            .unwrap()
            .starts_with(b"\x89PNG\r\n\x1a\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_table_has_both_columns_and_no_terminal_codes_off_a_terminal() {
    let out = kpl(&["bench", "--sink", "memory", "--records", "3000"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for row in [
        "user records/s",
        "Kinesis records put",
        "PutRecords calls",
        "user records per Kinesis record",
        "PUT payload units",
        "efficiency",
        "throttled entries",
        "latency p99",
        "CPU seconds, producer",
        "peak memory, process (RSS)",
    ] {
        assert!(stdout.contains(row), "no {row:?} row in:\n{stdout}");
    }
    assert!(stdout.contains("aggregation on") && stdout.contains("aggregation off"));
    assert!(stdout.contains("fewer PUT payload units"), "{stdout}");
    for stream in [&out.stdout, &out.stderr] {
        assert!(!stream.contains(&0x1b), "an escape code: {}", text(stream));
        assert!(
            !stream.contains(&b'\r'),
            "a carriage return: {}",
            text(stream)
        );
    }
}

#[test]
fn bench_refuses_bad_flags_naming_the_value_and_the_limit() {
    for (flags, message) in [
        (
            &["--size", "uniform:500-10"][..],
            "uniform:500-10: MIN is above MAX",
        ),
        (
            &["--size", "fixed:0"],
            "record size 0 is out of range: a whole number of bytes from 1 to 1048560",
        ),
        (&["--size", "zipf:3"], "unknown size distribution \"zipf\""),
        (
            &["--ehk-share", "1.5"],
            "--ehk-share 1.5 is out of range: a share from 0 to 1",
        ),
        (
            &["--keys", "0"],
            "--keys 0 is out of range: 1 to 1000000 distinct keys",
        ),
        (
            &["--chart", "out.gif"],
            "--chart out.gif: the file name must end in .svg or .png",
        ),
    ] {
        assert_refused(&[&["bench"][..], flags].concat(), message);
    }
}

#[test]
fn a_sweep_runs_each_value_as_a_single_run_at_that_value_does() {
    // Aggregates close only when full (or at the end): how many there are is set by
    // AggregationMaxSize alone, so a sweep's run and a single run at its value must agree.
    let dir = std::env::temp_dir().join(format!("kpl-sweep-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.properties");
    // The swept property is in the file too: the sweep's value goes over it.
    std::fs::write(
        &base,
        "RecordMaxBufferedTime = 60000\nAggregationMaxSize = 1048576\n",
    )
    .unwrap();
    let chart = dir.join("sweep.svg");
    let workload = [
        "bench",
        "--sink",
        "memory",
        "--records",
        "3000",
        "--keys",
        "50",
        "--aggregation",
        "on",
        "--json",
    ];
    let base_arg = base.to_str().unwrap();
    let chart_arg = chart.to_str().unwrap();
    let sweep = json_report(&kpl(
        &[
            &workload[..],
            &[
                "--config",
                base_arg,
                "--sweep",
                "AggregationMaxSize=4096,51200",
                "--chart",
                chart_arg,
            ],
        ]
        .concat(),
        b"",
    ));
    let runs = sweep["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (run, value) in runs.iter().zip(["4096", "51200"]) {
        assert_eq!(run["setting"]["name"], "AggregationMaxSize");
        assert_eq!(run["setting"]["value"], value);
        assert_eq!(run["user_records_put"], 3000);
        let single = dir.join(format!("single-{value}.properties"));
        std::fs::write(
            &single,
            format!("RecordMaxBufferedTime = 60000\nAggregationMaxSize = {value}\n"),
        )
        .unwrap();
        let alone = json_report(&kpl(
            &[&workload[..], &["--config", single.to_str().unwrap()]].concat(),
            b"",
        ));
        for figure in [
            "kinesis_records_put",
            "put_payload_units",
            "bytes_sent",
            "user_records_put",
        ] {
            assert_eq!(
                run[figure], alone["runs"][0][figure],
                "{figure} at AggregationMaxSize={value}"
            );
        }
    }
    assert!(
        u(&runs[0]["kinesis_records_put"]) > u(&runs[1]["kinesis_records_put"]),
        "smaller aggregates, more of them"
    );
    let svg = std::fs::read_to_string(&chart).unwrap();
    for text in [
        "PUT payload unit efficiency",
        "AggregationMaxSize",
        ">4096<",
        ">51200<",
    ] {
        assert!(svg.contains(text), "{text} not in the chart");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert_refused(
        &["bench", "--sweep", "RecordMaxBufferedTme=10"],
        "unknown property RecordMaxBufferedTme",
    );
}

#[test]
fn a_fleet_counts_each_producer_and_its_parts_add_up_to_the_whole() {
    let run = |extra: &[&str]| {
        json_report(&kpl(
            &[
                &[
                    "bench",
                    "--records",
                    "4000",
                    "--rate",
                    "4000",
                    "--producers",
                    "4",
                    "--shards",
                    "4",
                    "--json",
                ][..],
                extra,
            ]
            .concat(),
            b"",
        ))
    };
    let spread = run(&[]);
    for r in spread["runs"].as_array().unwrap() {
        let shares = r["producers"].as_array().unwrap();
        assert_eq!(shares.len(), 4);
        for (figure, whole) in [
            ("user_records_sent", "user_records_sent"),
            ("user_records_put", "user_records_put"),
            ("kinesis_records_put", "kinesis_records_put"),
            ("put_records_calls", "put_records_calls"),
            ("entries_sent", "entries_sent"),
            ("throttled_entries", "throttled_entries"),
            ("put_payload_units", "put_payload_units"),
        ] {
            let parts: u64 = shares.iter().map(|s| u(&s[figure])).sum();
            assert_eq!(parts, u(&r[whole]), "{figure}: {r}");
        }
        assert_eq!(u(&r["user_records_put"]), 4000);
        assert_eq!(u(&r["read_back_user_records"]), 4000);
        // Each in turn: a quarter each.
        assert!(
            shares.iter().all(|s| u(&s["user_records_sent"]) == 1000),
            "{r}"
        );
    }
    // With four producers and four shards, key affinity gives each producer one shard's keys:
    // its aggregates per shard fill four times as fast as when every producer sends to every
    // shard, so there are far fewer of them.
    let affinity = run(&["--key-affinity", "--aggregation", "on"]);
    let packed = |r: &Value| u(&r["runs"][0]["kinesis_records_put"]);
    assert!(
        packed(&affinity) * 2 < packed(&spread),
        "affinity {} against spread {}",
        packed(&affinity),
        packed(&spread)
    );
    assert_refused(
        &["bench", "--producers", "0"],
        "--producers 0 is out of range: 1 to 64",
    );
}

#[test]
fn the_bill_is_the_runs_own_counts_at_the_bill_rate_and_the_prices_given() {
    let r = json_report(&kpl(
        &[
            "bench",
            "--sink",
            "memory",
            "--records",
            "3000",
            "--size",
            "uniform:100-3000",
            "--bill-rate",
            "1500",
            "--price-shard-hour",
            "0.02",
            "--json",
        ],
        b"",
    ));
    assert_eq!(r["bill_user_records_per_second"], 1500.0);
    assert_eq!(r["prices"]["shard_hour"], 0.02);
    assert_eq!(r["prices"]["million_put_payload_units"], 0.014);
    assert!(
        r["prices"]["source"]
            .as_str()
            .unwrap()
            .contains("--price-*")
    );
    let f = |v: &Value| v.as_f64().unwrap();
    let month = 730.0 * 3600.0;
    for run in r["runs"].as_array().unwrap() {
        // By hand from the run's own counts: per user record, times 1,500 a second.
        let per_second = |n: &Value| f(n) / f(&run["user_records_put"]) * 1500.0;
        let shards = (per_second(&run["kinesis_records_put"]) / 1000.0)
            .ceil()
            .max((per_second(&run["bytes_sent"]) / 1_048_576.0).ceil())
            .max(1.0);
        let b = &run["bill"];
        assert_eq!(f(&b["shards_needed"]), shards, "{run}");
        let want =
            shards * 730.0 * 0.02 + per_second(&run["put_payload_units"]) * month / 1e6 * 0.014;
        assert!(
            (f(&b["provisioned_monthly_usd"]) - want).abs() < 1e-6,
            "{b} against {want}"
        );
        let gib = per_second(&run["kib_written"]) * month / 1_048_576.0;
        let want = 730.0 * 0.04 + gib * 0.08;
        assert!(
            (f(&b["on_demand_monthly_usd"]) - want).abs() < 1e-6,
            "{b} against {want}"
        );
    }
    // Unaggregated, every record is at least a PUT payload unit and a KiB: it costs more.
    let (on, off) = (&r["runs"][0]["bill"], &r["runs"][1]["bill"]);
    assert!(f(&on["provisioned_monthly_usd"]) < f(&off["provisioned_monthly_usd"]));
    assert!(f(&on["on_demand_monthly_usd"]) < f(&off["on_demand_monthly_usd"]));
    assert_refused(
        &["bench", "--price-gb-written=-1"],
        "--price-gb-written -1 must be a price of 0 dollars or more",
    );
}
