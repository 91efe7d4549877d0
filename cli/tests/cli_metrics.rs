//! `kpl put --metrics-listen`: a running `kpl put` serves its producer's metrics, scraped with a
//! real HTTP client and read as Prometheus reads the text exposition format (version 0.0.4:
//! `# TYPE name type` lines, then `name{label="value",...} value` samples).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, text};
use kinesis_producer::local::{LocalKinesis, LocalOptions};

/// The samples of an exposition: (name, labels) → value; and each name's declared type.
type Exposition = (
    HashMap<(String, Vec<(String, String)>), f64>,
    HashMap<String, String>,
);

/// Parses the text format: comment lines `# TYPE <name> <type>` declare types, `# HELP` and
/// other comments are skipped, a sample is `<name>[{<label>="<value>",...}] <value>`.
fn parse(body: &str) -> Exposition {
    let (mut samples, mut types) = (HashMap::new(), HashMap::new());
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                let mut labels: Vec<(String, String)> = inner
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').expect("label=value");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                labels.sort();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        samples.insert((name.to_owned(), labels), value);
    }
    (samples, types)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_put_serves_its_metrics_to_prometheus() {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await.unwrap();
    kinesis.create_stream("scraped", 2).await.unwrap();
    let endpoint = kinesis.endpoint().to_owned();
    let scraped = tokio::task::spawn_blocking(move || {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kpl"))
            .args(["put", "--stream", "scraped", "--endpoint-url", &endpoint])
            .args(["--metrics-listen", &addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..500 {
            writeln!(stdin, "line {i}").unwrap();
        }
        stdin.flush().unwrap();
        // stdin stays open, so kpl keeps running: scrape until every line is counted as put
        // (bounded: 30 tries, 200 ms apart).
        let url = format!("http://{addr}/metrics");
        let put = ("kpl_user_records_put_sum".to_owned(), vec![]);
        let mut last = None;
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(200));
            let Ok(mut response) = ureq::get(&url).call() else {
                continue;
            };
            let body = response.body_mut().read_to_string().unwrap();
            let parsed = parse(&body);
            let done = parsed.0.get(&put) == Some(&500.0);
            last = Some((body, parsed));
            if done {
                break;
            }
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (last, out)
    })
    .await
    .unwrap();
    let (last, out) = scraped;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (body, (samples, types)) = last.expect("the metrics were served");
    let get = |name: &str, labels: &[(&str, &str)]| {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        samples.get(&(name.to_owned(), labels)).copied()
    };
    assert_eq!(get("kpl_user_records_put_sum", &[]), Some(500.0), "{body}");
    assert_eq!(get("kpl_user_records_put_count", &[]), Some(500.0));
    assert_eq!(
        get("kpl_user_records_put_sum", &[("stream", "scraped")]),
        Some(500.0)
    );
    assert_eq!(get("kpl_user_records_received_count", &[]), Some(500.0));
    // Per shard: the two shards' counts add up to the stream's.
    let per_shard: f64 = samples
        .iter()
        .filter(|((name, labels), _)| {
            name == "kpl_user_records_put_sum" && labels.iter().any(|(k, _)| k == "shard")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(per_shard, 500.0);
    assert_eq!(types["kpl_user_records_put_sum"], "counter");
    assert_eq!(types["kpl_user_records_pending"], "gauge");
    assert!(get("kpl_buffering_time_milliseconds_count", &[]).unwrap() >= 500.0);
    let data = get("kpl_user_records_data_put_bytes_sum", &[]).unwrap();
    let expected: usize = (0..500).map(|i| format!("line {i}").len()).sum();
    assert_eq!(data, expected as f64);
}
