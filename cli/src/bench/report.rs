//! What a run found, as a table and as JSON.

use serde::Serialize;

use super::workload::SizeDist;

/// One run's figures.
#[derive(Serialize, Default)]
pub struct RunReport {
    pub aggregation: bool,
    pub user_records_sent: u64,
    pub user_records_put: u64,
    pub user_records_failed: u64,
    /// Failures by kind (expired, rejected, throttled, ...).
    pub failures: std::collections::BTreeMap<String, u64>,
    /// The first failure's full message (why records failed).
    pub first_error: Option<String>,
    pub seconds: f64,
    pub user_records_per_second: f64,
    pub kinesis_records_put: u64,
    pub put_records_calls: u64,
    /// Entries in PutRecords calls, retries included.
    pub entries_sent: u64,
    pub user_records_per_kinesis_record: f64,
    /// Data and partition keys of the user records put.
    pub user_bytes: u64,
    /// Data and partition keys of the Kinesis records put (aggregation framing included).
    pub bytes_sent: u64,
    pub put_payload_units: u64,
    /// The units the same user bytes would cost perfectly packed: ceil(user_bytes / 25 KiB).
    pub min_put_payload_units: u64,
    pub payload_unit_efficiency_percent: f64,
    /// Entries refused for throughput (per entry, or whole calls counted per entry).
    pub throttled_entries: u64,
    /// Entries that failed otherwise (server errors, timeouts, rejections), calls included.
    pub other_failed_entries: u64,
    /// User records that needed more than one attempt.
    pub user_records_retried: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// Latency less the round trip of the call that put the record: what the producer added
    /// (RecordMaxBufferedTime, the limiter's waits, earlier attempts and their backoff).
    pub added_latency_ms_p50: f64,
    pub added_latency_ms_p99: f64,
    pub added_latency_ms_max: f64,
    /// CPU seconds of the producer's threads (and the sending thread), where threads can be
    /// told apart (Linux); the embedded local Kinesis's threads are not included.
    pub cpu_seconds_producer: Option<f64>,
    /// CPU seconds of the whole process during the run (the local Kinesis included).
    pub cpu_seconds_process: Option<f64>,
    /// Peak resident memory of the process during the run (the local Kinesis's stored records
    /// included).
    pub peak_rss_bytes: Option<u64>,
    /// Peak of the producer's buffered user records and their bytes.
    pub peak_buffered_records: u64,
    pub peak_buffered_bytes: u64,
    /// User records found reading the stream back (local sink only): must equal
    /// `user_records_put`.
    pub read_back_user_records: Option<u64>,
    pub read_back_kinesis_records: Option<u64>,
    /// With --input and the local sink: whether the stream held exactly the records sent
    /// (partition keys and data, as a multiset), when none failed.
    pub read_back_exact: Option<bool>,
    /// KiB put, each Kinesis record rounded up to a whole KiB (what on-demand streams bill).
    pub kib_written: u64,
    /// A month of this run's traffic on Kinesis, provisioned and on demand, at the report's
    /// `bill_user_records_per_second` (every run at the same rate, so the bills compare).
    pub bill: super::bill::Bill,
    /// With `--producers N` (N > 1): each producer's part, in order.
    pub producers: Vec<super::fleet::ProducerShare>,
    /// The property value of a sweep this run was made at (`--sweep`).
    pub setting: Option<super::sweep::Setting>,
    /// Seconds since the start and user records put per second in the interval before.
    pub rate_over_time: Vec<(f64, f64)>,
    /// Latency of the records put, as 1001 quantiles (0, 0.001, ..., 1), in milliseconds.
    pub latency_quantiles_ms: Vec<f64>,
}

#[derive(Serialize)]
pub(super) struct Report<'a> {
    pub(super) sink: String,
    pub(super) stream: &'a str,
    pub(super) shards: Option<u32>,
    pub(super) records: Option<u64>,
    pub(super) duration_seconds: Option<f64>,
    pub(super) offered_rate: Option<f64>,
    /// Offered at the input's recorded pace (`--pace original`).
    pub(super) original_pace: bool,
    /// The replayed input (`--input`); the synthetic workload's fields below then do not apply.
    pub(super) input: Option<super::replay::InputSummary>,
    pub(super) size: SizeDist,
    pub(super) keys: u64,
    pub(super) ehk_share: f64,
    pub(super) seed: u64,
    /// The prices the bills are at.
    pub(super) prices: super::bill::Prices,
    /// The user records per second every run's bill is for: --bill-rate, else the offered
    /// --rate, else the first run's measured rate.
    pub(super) bill_user_records_per_second: f64,
    pub(super) runs: Vec<RunReport>,
}

/// How a table cell is computed from a run.
pub(super) type Cell = Box<dyn Fn(&RunReport) -> String>;

/// Each run's column heading: its mode, and its sweep setting.
pub(super) fn headings(runs: &[RunReport]) -> Vec<String> {
    runs.iter()
        .map(|r| {
            let mode = if r.aggregation {
                "aggregation on"
            } else {
                "aggregation off"
            };
            match &r.setting {
                Some(s) => format!("{}={}, {mode}", s.name, s.value),
                None => mode.to_string(),
            }
        })
        .collect()
}

/// The table's rows: a name and how the cell of a run is written.
pub(super) fn rows() -> Vec<(&'static str, Cell)> {
    let opt = |v: Option<f64>, unit: &str| match v {
        Some(v) => format!("{v:.2}{unit}"),
        None => "n/a".to_string(),
    };
    vec![
        (
            "user records put",
            Box::new(|r| r.user_records_put.to_string()),
        ),
        (
            "user records failed",
            Box::new(|r| {
                let kinds: Vec<String> = r
                    .failures
                    .iter()
                    .map(|(kind, n)| format!("{n} {kind}"))
                    .collect();
                if kinds.is_empty() {
                    "0".into()
                } else {
                    kinds.join(", ")
                }
            }),
        ),
        ("seconds", Box::new(|r| format!("{:.2}", r.seconds))),
        (
            "user records/s",
            Box::new(|r| format!("{:.0}", r.user_records_per_second)),
        ),
        (
            "Kinesis records put",
            Box::new(|r| r.kinesis_records_put.to_string()),
        ),
        (
            "PutRecords calls",
            Box::new(|r| r.put_records_calls.to_string()),
        ),
        (
            "user records per Kinesis record",
            Box::new(|r| format!("{:.1}", r.user_records_per_kinesis_record)),
        ),
        (
            "user bytes (data + keys)",
            Box::new(|r| r.user_bytes.to_string()),
        ),
        (
            "bytes sent (Kinesis records)",
            Box::new(|r| r.bytes_sent.to_string()),
        ),
        (
            "PUT payload units",
            Box::new(|r| r.put_payload_units.to_string()),
        ),
        (
            "  minimum for these bytes",
            Box::new(|r| r.min_put_payload_units.to_string()),
        ),
        (
            "  efficiency",
            Box::new(|r| format!("{:.1}%", r.payload_unit_efficiency_percent)),
        ),
        (
            "throttled entries",
            Box::new(|r| r.throttled_entries.to_string()),
        ),
        (
            "other failed entries",
            Box::new(|r| r.other_failed_entries.to_string()),
        ),
        (
            "user records retried",
            Box::new(|r| r.user_records_retried.to_string()),
        ),
        (
            "latency p50",
            Box::new(|r| format!("{:.1} ms", r.latency_ms_p50)),
        ),
        (
            "latency p99",
            Box::new(|r| format!("{:.1} ms", r.latency_ms_p99)),
        ),
        (
            "latency max",
            Box::new(|r| format!("{:.1} ms", r.latency_ms_max)),
        ),
        (
            "added latency p50 / p99 / max",
            Box::new(|r| {
                format!(
                    "{:.1} / {:.1} / {:.1} ms",
                    r.added_latency_ms_p50, r.added_latency_ms_p99, r.added_latency_ms_max
                )
            }),
        ),
        (
            "CPU seconds, producer",
            Box::new(move |r| opt(r.cpu_seconds_producer, " s")),
        ),
        (
            "CPU seconds, whole process",
            Box::new(move |r| opt(r.cpu_seconds_process, " s")),
        ),
        (
            "peak memory, process (RSS)",
            Box::new(|r| match r.peak_rss_bytes {
                Some(b) => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
                None => "n/a".into(),
            }),
        ),
        (
            "peak buffered in producer",
            Box::new(|r| {
                format!(
                    "{} rec, {:.1} MiB",
                    r.peak_buffered_records,
                    r.peak_buffered_bytes as f64 / (1 << 20) as f64
                )
            }),
        ),
        (
            "read back from the stream",
            Box::new(
                |r| match (r.read_back_user_records, r.read_back_kinesis_records) {
                    (Some(u), Some(k)) => format!(
                        "{u} user in {k} Kinesis{}",
                        match r.read_back_exact {
                            Some(true) => ", exactly those sent",
                            Some(false) => ", NOT those sent",
                            None => "",
                        }
                    ),
                    _ => "not read".into(),
                },
            ),
        ),
        (
            "a month at the bill's rate: shards needed",
            Box::new(|r| r.bill.shards_needed.to_string()),
        ),
        (
            "  provisioned (shards + PUT units)",
            Box::new(|r| {
                format!(
                    "${:.2} + ${:.2} = ${:.2}",
                    r.bill.provisioned_shard_hours_usd,
                    r.bill.provisioned_put_payload_units_usd,
                    r.bill.provisioned_monthly_usd
                )
            }),
        ),
        (
            "  on demand (stream + data written)",
            Box::new(|r| {
                format!(
                    "${:.2} + ${:.2} = ${:.2}",
                    r.bill.on_demand_stream_hours_usd,
                    r.bill.on_demand_data_written_usd,
                    r.bill.on_demand_monthly_usd
                )
            }),
        ),
    ]
}

pub(super) fn print_table(runs: &[RunReport]) {
    let header = headings(runs);
    let rows = rows();
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, value)| runs.iter().map(value).collect())
        .collect();
    let column = cells
        .iter()
        .flatten()
        .chain(&header)
        .map(String::len)
        .max()
        .unwrap_or(0);
    print!("\n  {:width$}", "");
    for h in &header {
        print!("  {h:>column$}");
    }
    println!();
    for ((name, _), row) in rows.iter().zip(&cells) {
        print!("  {name:width$}");
        for cell in row {
            print!("  {cell:>column$}");
        }
        println!();
    }
    for (r, h) in runs.iter().zip(&header) {
        if r.producers.is_empty() {
            continue;
        }
        println!();
        println!("  {h}, per producer:");
        for (i, p) in r.producers.iter().enumerate() {
            println!(
                "    producer {}: {} sent, {} put ({:.1}% of all), {} failed; {} Kinesis records in {} calls, {} PUT payload units; {} entries throttled ({:.1}% of its {})",
                i + 1,
                p.user_records_sent,
                p.user_records_put,
                p.share_percent,
                p.user_records_failed,
                p.kinesis_records_put,
                p.put_records_calls,
                p.put_payload_units,
                p.throttled_entries,
                p.throttled_percent,
                p.entries_sent,
            );
        }
    }
    if let [on, off] = runs {
        println!();
        println!(
            "  aggregation put {:.1}x fewer Kinesis records and used {:.1}% fewer PUT payload units ({} vs {}).",
            off.kinesis_records_put as f64 / on.kinesis_records_put.max(1) as f64,
            (1.0 - on.put_payload_units as f64 / off.put_payload_units.max(1) as f64) * 100.0,
            on.put_payload_units,
            off.put_payload_units,
        );
        println!(
            "  a month at the same user rate: ${:.2} provisioned with aggregation against ${:.2} without ({} shards against {}); ${:.2} against ${:.2} on demand.",
            on.bill.provisioned_monthly_usd,
            off.bill.provisioned_monthly_usd,
            on.bill.shards_needed,
            off.bill.shards_needed,
            on.bill.on_demand_monthly_usd,
            off.bill.on_demand_monthly_usd,
        );
    }
}
