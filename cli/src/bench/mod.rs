//! `kpl bench`: the aggregation-efficiency benchmark.
//!
//! Runs a synthetic workload through the producer twice, aggregation on and off, against the
//! embedded local Kinesis (per-shard limits enforced), the in-memory sink, or a real endpoint,
//! and reports side by side what each costs: Kinesis records, PutRecords calls, PUT payload
//! units against the minimum for the same bytes, throttling, latency, CPU and memory.

use std::process::ExitCode;
use std::sync::Arc;

use kinesis_producer::aggregation::deaggregate;
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::sink::SinkError;
use kinesis_producer::sink::aws::AwsSink;
use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{ConfigBuilder, Producer};

use crate::conn::ConnArgs;

mod bill;
mod chart;
mod counting;
mod fleet;
mod html;
mod outcomes;
mod replay;
mod report;
mod run;
mod sweep;
mod usage;
mod workload;

use counting::{Counters, counted};
use report::{Report, print_table};

use replay::{Fingerprint, InputFormat, Pace, Replay};
use run::{Source, one_run};
use sweep::{Setting, Sweep};
use workload::{SizeDist, Workload};

pub const EXAMPLES: &str = "\
Examples:
  kpl bench                                             # 20,000 records, local Kinesis, on vs off
  kpl bench --records 200000 --size lognormal:300:1.0 --keys 100 --shards 8
  kpl bench --duration 30 --rate 5000 --size uniform:50-2000 --ehk-share 0.1
  kpl bench --sink memory --records 1000000 --aggregation on   # the engine alone
  kpl bench --json --chart bench.svg                    # machine-readable, and a chart
  kpl bench --stream my-stream --region eu-west-1       # a real stream (it is written to!)
  kpl bench --input events.jsonl --partition-key-field user   # your own records, as kpl put reads them
  kpl bench --sweep RecordMaxBufferedTime=10,50,100,250,500 --aggregation on --chart sweep.svg
  kpl read --stream live --limit 100000 > sample.jsonl && kpl bench --input sample.jsonl --pace original
Size distributions: fixed:N (or N), uniform:MIN-MAX, lognormal:MEDIAN[:SIGMA] (bytes of data).
PUT payload units are counted per Kinesis record put (one per started 25 KiB); the minimum is
what the same user bytes (data + partition keys) would cost perfectly packed.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SinkKind {
    /// ferrokinesis in this process, on 127.0.0.1, throttling each shard as AWS does.
    Local,
    /// The in-memory Kinesis: the producer's engine alone, no HTTP, no limits.
    Memory,
    /// A Kinesis endpoint through the AWS SDK (--endpoint-url, --region, the AWS chains).
    Kinesis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Modes {
    Both,
    On,
    Off,
}

#[derive(clap::Args)]
pub struct Args {
    /// The stream: created in the local and in-memory Kinesis; must exist at a real endpoint.
    #[arg(long, default_value = "kpl-bench")]
    stream: String,
    /// The AWS region (selects --sink kinesis when --sink is not given).
    #[arg(long)]
    region: Option<String>,
    /// The endpoint URL (selects --sink kinesis when --sink is not given).
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// A KPL-style .properties file applied to both runs (AggregationEnabled is set per run).
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Ignore a property name in --config that no KPL or producer property has, with a warning,
    /// as the KPL does (by default it is an error naming the closest known property).
    #[arg(long)]
    ignore_unknown_properties: bool,
    /// Where the records go (default: local, unless --endpoint-url or --region is given).
    #[arg(long, value_enum)]
    sink: Option<SinkKind>,
    /// User records per run (default 20,000; with --input, one pass over it, cycled or cut to
    /// this number).
    #[arg(long, conflicts_with = "duration")]
    records: Option<u64>,
    /// Seconds per run, instead of a record count.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Offered user records per second; 0 sends as fast as the producer accepts them.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Replay these records instead of the synthetic workload: sizes, partition keys and
    /// explicit hash keys as they are (read into memory before the clock starts).
    #[arg(long, value_name = "FILE")]
    input: Option<std::path::PathBuf>,
    /// How --input's lines are read: lines (data, random keys), jsonl (as `kpl put --json`,
    /// with the field flags), read (what `kpl read` prints), or auto.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto, requires = "input")]
    input_format: InputFormat,
    /// With --input: original (the recorded arrival times, from `kpl read` output), as-fast,
    /// or a number of records per second.
    #[arg(long, value_name = "PACE", requires = "input", conflicts_with = "rate")]
    pace: Option<Pace>,
    /// With --input as JSON Lines: the field whose value is the partition key (otherwise a
    /// random key), as `kpl put` takes it.
    #[arg(long, value_name = "FIELD", requires = "input")]
    partition_key_field: Option<String>,
    /// With --input as JSON Lines: the field whose value is the explicit hash key.
    #[arg(long, value_name = "FIELD", requires = "input")]
    explicit_hash_key_field: Option<String>,
    /// With --input as JSON Lines: send this field's value instead of the whole line.
    #[arg(long, value_name = "FIELD", requires = "input")]
    data_field: Option<String>,
    /// Bytes of data per record: fixed:N, uniform:MIN-MAX or lognormal:MEDIAN[:SIGMA].
    #[arg(long, default_value = "fixed:100")]
    size: SizeDist,
    /// Distinct partition keys (16 characters each), chosen uniformly.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Share of records (0 to 1) with an explicit hash key.
    #[arg(long, default_value_t = 0.0)]
    ehk_share: f64,
    /// Shards of the stream created in the local or in-memory Kinesis.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Which runs: both (side by side), on or off.
    #[arg(long, value_enum, default_value_t = Modes::Both)]
    aggregation: Modes,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write a chart (rate over time, latency distribution): .svg, or .png.
    #[arg(long, value_name = "FILE")]
    chart: Option<std::path::PathBuf>,
    /// Run the same workload at each value of one producer property (its KPL name), e.g.
    /// RecordMaxBufferedTime=10,100,500, side by side (and --chart draws efficiency and p99
    /// latency against the value).
    #[arg(long, value_name = "NAME=V1,V2,...")]
    sweep: Option<Sweep>,
    /// Producers sharing the stream, each with its own buffers and rate limiter (as N
    /// processes of an application): records go to each in turn, so every key reaches every
    /// producer, unless --key-affinity.
    #[arg(long, default_value_t = 1, value_name = "N")]
    producers: u32,
    /// With --producers: each producer owns a range of the hash key space (the k-th of N equal
    /// ranges; with as many shards as producers, its own shards) and sends only the records of
    /// its keys.
    #[arg(long)]
    key_affinity: bool,
    /// The user records per second the monthly bill is for (default: the offered --rate, else
    /// the first run's measured rate); every run is billed at it, from its own Kinesis records,
    /// bytes and PUT payload units per user record.
    #[arg(long, value_name = "RATE")]
    bill_rate: Option<f64>,
    /// The bill's price of a provisioned shard-hour, in US dollars (default: us-east-1's).
    #[arg(long, value_name = "USD")]
    price_shard_hour: Option<f64>,
    /// The bill's price of a million PUT payload units (provisioned), in US dollars.
    #[arg(long, value_name = "USD")]
    price_put_million: Option<f64>,
    /// The bill's price of an on-demand stream-hour, in US dollars.
    #[arg(long, value_name = "USD")]
    price_stream_hour: Option<f64>,
    /// The bill's price of a GB written to an on-demand stream, in US dollars.
    #[arg(long, value_name = "USD")]
    price_gb_written: Option<f64>,
    /// Write the whole report as one self-contained HTML page (no network needed to view it):
    /// the workload, the runs side by side, the bill, the sweep and fleet charts, the rate and
    /// latency charts.
    #[arg(long, value_name = "FILE.html")]
    report: Option<std::path::PathBuf>,
    /// Seed of the workload generator: the same seed gives the same records.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    metrics: crate::prometheus::MetricsArgs,
}

pub(super) const PRODUCER_THREADS: &str = "kpl-producer";
pub(super) const SENDER_THREAD: &str = "kpl-bench-send";
/// User records per run of the synthetic workload when neither --records nor --duration is given.
pub(super) const DEFAULT_RECORDS: u64 = 20_000;

pub fn run(mut args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    check(&args)?;
    let replay = match &args.input {
        Some(path) => {
            let fields = crate::lines::LineArgs {
                json: false,
                partition_key_field: args.partition_key_field.clone(),
                explicit_hash_key_field: args.explicit_hash_key_field.clone(),
                data_field: args.data_field.clone(),
            };
            let replay = Replay::load(path, args.input_format, &fields)?;
            if args.pace == Some(Pace::Original) && !replay.has_timestamps() {
                return Err(format!(
                    "--pace original needs an arrival time on every record, and {} has none (records captured with `kpl read` have them)",
                    path.display()
                )
                .into());
            }
            Some(Arc::new(replay))
        }
        None => None,
    };
    if args.duration.is_none() && args.records.is_none() {
        args.records = Some(replay.as_ref().map_or(DEFAULT_RECORDS, |r| r.len()));
    }
    let pace = args.pace.unwrap_or(if args.rate > 0.0 {
        Pace::Rate(args.rate)
    } else {
        Pace::AsFast
    });
    let prices = prices(&args);
    args.metrics.install()?;
    let sink = args
        .sink
        .unwrap_or(if args.endpoint_url.is_some() || args.region.is_some() {
            SinkKind::Kinesis
        } else {
            SinkKind::Local
        });
    let modes: &[bool] = match args.aggregation {
        Modes::Both => &[true, false],
        Modes::On => &[true],
        Modes::Off => &[false],
    };
    // The producer gets a runtime of its own, its threads named, so its CPU time can be told
    // from the local Kinesis's, which runs on another.
    let producer_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(PRODUCER_THREADS)
        .enable_all()
        .build()?;
    let local_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("kpl-local-kinesis")
        .enable_all()
        .build()?;
    // Records' outcomes are awaited (a task per chunk) on a third runtime, off the producer's
    // threads.
    let settle_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("kpl-bench-settle")
        .enable_all()
        .build()?;
    let conn = ConnArgs {
        stream: args.stream.clone(),
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
        config: args.config.clone(),
        ignore_unknown_properties: args.ignore_unknown_properties,
    };
    let sink_text = match sink {
        SinkKind::Local => format!(
            "local Kinesis (ferrokinesis in this process, 127.0.0.1), {} shards, per-shard limits enforced (1000 records/s, 1 MiB/s)",
            args.shards
        ),
        SinkKind::Memory => format!(
            "in-memory Kinesis (the engine alone: no HTTP, no shard limits, RateLimit off), {} shards",
            args.shards
        ),
        SinkKind::Kinesis => format!(
            "Kinesis at {}",
            args.endpoint_url
                .as_deref()
                .or(args.region.as_deref())
                .unwrap_or("the default AWS region")
        ),
    };
    let workload_text = {
        let length = match args.duration {
            Some(d) => format!("{d} s per run"),
            None => format!("{} user records per run", args.records.unwrap_or(0)),
        };
        let offered = match pace {
            Pace::AsFast => "as fast as the producer takes them".to_string(),
            Pace::Rate(r) => format!("{r} records/s"),
            Pace::Original => "at the pace they arrived".to_string(),
        };
        let mut text = match &replay {
            Some(r) => {
                let i = &r.summary;
                format!(
                    "kpl bench: {length}, replaying {} ({} records: {} partition keys, {} with explicit hash keys, data {} bytes median, {} largest), offered {offered}",
                    i.path.display(),
                    i.records,
                    i.distinct_partition_keys,
                    i.with_explicit_hash_key,
                    i.data_bytes_p50,
                    i.data_bytes_max
                )
            }
            None => format!(
                "kpl bench: {length}, data sizes {}, {} partition keys, {:.0}% with explicit hash keys, offered {offered}",
                args.size,
                args.keys,
                args.ehk_share * 100.0,
            ),
        };
        if args.producers > 1 {
            text.push_str(&format!(
                "; {} producers sharing the stream, {}",
                args.producers,
                if args.key_affinity {
                    "each owning a range of the hash key space (--key-affinity)"
                } else {
                    "records to each in turn (every key reaches every producer)"
                }
            ));
        }
        text
    };
    if !args.json {
        println!("{workload_text}");
        println!("  sink: {sink_text}; stream {:?}", args.stream);
    }

    // Without --sweep, one setting: the configuration as given.
    let settings: Vec<Option<Setting>> = match &args.sweep {
        Some(s) => s.settings().into_iter().map(Some).collect(),
        None => vec![None],
    };
    let mut runs = Vec::new();
    for (setting, &aggregation) in settings
        .iter()
        .flat_map(|s| modes.iter().map(move |m| (s, m)))
    {
        let fleet = args.producers as usize;
        // Each producer counted apart (its share, its throttling); the run's counts add them.
        let counters: Vec<Arc<Counters>> =
            (0..fleet).map(|_| Arc::new(Counters::default())).collect();
        let mut local = None;
        // Both runs get the same properties; only AggregationEnabled differs (and the in-memory
        // sink, which has no shard limits, runs without the rate limiter).
        let config = |base: ConfigBuilder| {
            // The two runs' metrics (`--metrics-listen`) are told apart by a label.
            let run = if aggregation {
                "aggregated"
            } else {
                "unaggregated"
            };
            let mut builder = conn
                .builder(base)?
                .aggregation_enabled(aggregation)
                .metrics_dimension("run", run);
            // The swept value goes over what --config says.
            if let Some(s) = setting {
                builder = builder
                    .set_property(&s.name, &s.value)
                    .map_err(|e| format!("--sweep {}={}: {e}", s.name, s.value))?;
            }
            conn.build(if sink == SinkKind::Memory {
                builder.rate_limit(1_000_000)
            } else {
                builder
            })
        };
        // The fleet shares one stream: one local or in-memory Kinesis for all of them.
        let producers: Vec<Producer> = match sink {
            SinkKind::Local => {
                let kinesis = local_rt.block_on(LocalKinesis::start(LocalOptions {
                    enforce_limits: true,
                    port: 0,
                }))?;
                local_rt.block_on(kinesis.create_stream(&args.stream, args.shards as i32))?;
                let producers = fleet_of(&producer_rt, &counters, || {
                    Ok((
                        config(kinesis.config())?,
                        AwsSink::from_client(kinesis.client().clone()),
                    ))
                })?;
                local = Some(kinesis);
                producers
            }
            SinkKind::Memory => {
                let inner = MemorySink::new()
                    .with_stream(&args.stream, args.shards as usize)
                    .discarding();
                fleet_of(&producer_rt, &counters, || {
                    Ok((config(ConfigBuilder::default())?, inner.clone()))
                })?
            }
            SinkKind::Kinesis => fleet_of(&producer_rt, &counters, || {
                let config = config(ConfigBuilder::default())?;
                let inner = producer_rt.block_on(AwsSink::new(&config));
                Ok((config, inner))
            })?,
        };
        let source = match &replay {
            Some(r) => Source::Replay(Arc::clone(r)),
            None => Source::Synthetic(Workload {
                rng: fastrand::Rng::with_seed(args.seed),
                size: args.size,
                keys: args.keys,
                ehk_share: args.ehk_share,
            }),
        };
        let mut report = one_run(
            &args,
            aggregation,
            &producers,
            settle_rt.handle(),
            &counters,
            (source, pace),
        )?;
        report.setting = setting.clone();
        for producer in producers {
            producer_rt.block_on(producer.shutdown());
        }
        if let Some(kinesis) = local {
            let (kinesis_records, read_back) = local_rt.block_on(async {
                let read = kinesis.read_all(&args.stream).await?;
                let mut users = Fingerprint::default();
                for r in &read {
                    for u in deaggregate(&r.partition_key, r.data.clone()) {
                        users.add(&u.partition_key, &u.data);
                    }
                }
                Ok::<_, SinkError>((read.len() as u64, users))
            })?;
            report.read_back_kinesis_records = Some(kinesis_records);
            report.read_back_user_records = Some(read_back.records);
            // Replayed records are known: the stream must hold exactly those sent (when all
            // of them were put), keys and data alike.
            if let Some(r) = &replay
                && report.user_records_failed == 0
            {
                report.read_back_exact = Some(r.fingerprint(report.user_records_sent) == read_back);
            }
        }
        runs.push(report);
    }

    // Every run billed at one user rate, from its own costs per user record.
    let bill_rate = args
        .bill_rate
        .or(pace.rate())
        .unwrap_or_else(|| runs.first().map_or(0.0, |r| r.user_records_per_second));
    for r in &mut runs {
        let per_user = |n: u64| n as f64 / r.user_records_put.max(1) as f64 * bill_rate;
        r.bill = bill::bill(
            bill::Traffic {
                kinesis_records_per_second: per_user(r.kinesis_records_put),
                bytes_per_second: per_user(r.bytes_sent),
                put_payload_units_per_second: per_user(r.put_payload_units),
                kib_per_second: per_user(r.kib_written),
            },
            &prices,
        );
    }
    let failed: u64 = runs.iter().map(|r| r.user_records_failed).sum();
    let mismatched = runs.iter().any(read_back_differs);
    let report = Report {
        sink: sink_text,
        stream: &args.stream,
        shards: (sink != SinkKind::Kinesis).then_some(args.shards),
        records: args.records,
        duration_seconds: args.duration,
        offered_rate: pace.rate(),
        original_pace: pace == Pace::Original,
        input: replay.as_ref().map(|r| r.summary.clone()),
        prices,
        bill_user_records_per_second: bill_rate,
        size: args.size,
        keys: args.keys,
        ehk_share: args.ehk_share,
        seed: args.seed,
        runs,
    };
    if let Some(path) = &args.chart {
        chart::write(path, &report.runs)?;
    }
    if let Some(path) = &args.report {
        html::write(path, &report, &workload_text)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report.runs);
        if let Some(path) = &args.chart {
            println!("  chart written to {}", path.display());
        }
        if let Some(path) = &args.report {
            println!("  report written to {}", path.display());
        }
    }
    for r in &report.runs {
        if let Some(e) = &r.first_error {
            eprintln!(
                "kpl bench: aggregation {}: first failure: {e}",
                if r.aggregation { "on" } else { "off" }
            );
        }
    }
    if failed > 0 || mismatched {
        eprintln!(
            "kpl bench: {failed} user records failed{}",
            if mismatched {
                "; the stream read back does not hold exactly the records put"
            } else {
                ""
            }
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether what a run read back from the stream is not what it put: as many user records, and,
/// for a replay, exactly those. Such a run makes `kpl bench` exit 1.
fn read_back_differs(r: &report::RunReport) -> bool {
    r.read_back_user_records
        .is_some_and(|n| n != r.user_records_put)
        || r.read_back_exact == Some(false)
}

/// A producer per counter, each with the configuration and sink `make` gives it.
fn fleet_of<S: kinesis_producer::sink::Sink>(
    rt: &tokio::runtime::Runtime,
    counters: &[Arc<Counters>],
    mut make: impl FnMut() -> Result<(kinesis_producer::Config, S), String>,
) -> Result<Vec<Producer>, String> {
    counters
        .iter()
        .map(|c| {
            let (config, sink) = make()?;
            Ok(counted(rt, config, sink, c))
        })
        .collect()
}

/// The `--price-*` flags, by name.
fn price_flags(args: &Args) -> [(&'static str, Option<f64>); 4] {
    [
        ("--price-shard-hour", args.price_shard_hour),
        ("--price-put-million", args.price_put_million),
        ("--price-stream-hour", args.price_stream_hour),
        ("--price-gb-written", args.price_gb_written),
    ]
}

/// The bill's prices: us-east-1's, each overridden by its flag.
fn prices(args: &Args) -> bill::Prices {
    let d = bill::US_EAST_1;
    bill::Prices {
        shard_hour: args.price_shard_hour.unwrap_or(d.shard_hour),
        million_put_payload_units: args
            .price_put_million
            .unwrap_or(d.million_put_payload_units),
        on_demand_stream_hour: args.price_stream_hour.unwrap_or(d.on_demand_stream_hour),
        on_demand_gb_written: args.price_gb_written.unwrap_or(d.on_demand_gb_written),
        source: if price_flags(args).iter().any(|(_, p)| p.is_some()) {
            "us-east-1 list prices read 2026-12-03, some replaced by --price-* flags"
        } else {
            d.source
        },
    }
}

/// Flags that clap cannot check by itself.
fn check(args: &Args) -> Result<(), String> {
    if !(0.0..=1.0).contains(&args.ehk_share) {
        return Err(format!(
            "--ehk-share {} is out of range: a share from 0 to 1",
            args.ehk_share
        ));
    }
    if args.keys == 0 || args.keys > 1_000_000 {
        return Err(format!(
            "--keys {} is out of range: 1 to 1000000 distinct keys",
            args.keys
        ));
    }
    if args.shards == 0 || args.shards > 1000 {
        return Err(format!(
            "--shards {} is out of range: 1 to 1000",
            args.shards
        ));
    }
    if args.bill_rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err("--bill-rate must be a number of user records per second above 0".into());
    }
    for (flag, price) in price_flags(args) {
        if let Some(p) = price
            && !(p.is_finite() && p >= 0.0)
        {
            return Err(format!("{flag} {p} must be a price of 0 dollars or more"));
        }
    }
    if args.producers == 0 || args.producers > 64 {
        return Err(format!(
            "--producers {} is out of range: 1 to 64 producers",
            args.producers
        ));
    }
    if !args.rate.is_finite() || args.rate < 0.0 {
        return Err(format!("--rate {} must be 0 (unpaced) or more", args.rate));
    }
    if args.duration.is_some_and(|d| !(d > 0.0 && d <= 86_400.0)) {
        return Err("--duration must be more than 0 and at most 86400 seconds".into());
    }
    if args.records == Some(0) {
        return Err("--records must be at least 1".into());
    }
    if let Some(path) = &args.chart {
        chart::format_of(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::read_back_differs;
    use super::report::RunReport;

    #[test]
    fn a_run_differs_when_the_stream_holds_other_records_than_it_put() {
        let run = |read_back: u64, exact: Option<bool>| RunReport {
            user_records_put: 10,
            read_back_user_records: Some(read_back),
            read_back_exact: exact,
            ..RunReport::default()
        };
        assert!(!read_back_differs(&run(10, None)));
        assert!(!read_back_differs(&run(10, Some(true))));
        assert!(read_back_differs(&run(9, None)));
        // As many records, not the same ones (a replay knows which).
        assert!(read_back_differs(&run(10, Some(false))));
    }
}
