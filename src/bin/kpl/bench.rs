//! `kpl bench`: the aggregation-efficiency benchmark.
//!
//! Runs a synthetic workload through the producer twice, aggregation on and off, against the
//! embedded local Kinesis (per-shard limits enforced), the in-memory sink, or a real endpoint,
//! and reports side by side what each costs: Kinesis records, PutRecords calls, PUT payload
//! units against the minimum for the same bytes, throttling, latency, CPU and memory.

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use kinesis_producer::aggregation::{deaggregate, put_payload_units};
use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::shard_map::Shard;
use kinesis_producer::sink::aws::AwsSink;
use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::sink::{EntryResult, PutEntry, Sink, SinkError};
use kinesis_producer::{ConfigBuilder, HashKey, Producer, PutErrorKind, RecordFuture, UserRecord};
use serde::Serialize;

use crate::conn::ConnArgs;
use crate::progress::Progress;
use crate::{chart, usage};

pub const EXAMPLES: &str = "\
Examples:
  kpl bench                                             # 20,000 records, local Kinesis, on vs off
  kpl bench --records 200000 --size lognormal:300:1.0 --keys 100 --shards 8
  kpl bench --duration 30 --rate 5000 --size uniform:50-2000 --ehk-share 0.1
  kpl bench --sink memory --records 1000000 --aggregation on   # the engine alone
  kpl bench --json --chart bench.svg                    # machine-readable, and a chart
  kpl bench --stream my-stream --region eu-west-1       # a real stream (it is written to!)
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
    /// Where the records go (default: local, unless --endpoint-url or --region is given).
    #[arg(long, value_enum)]
    sink: Option<SinkKind>,
    /// User records per run.
    #[arg(long, default_value_t = 20_000, conflicts_with = "duration")]
    records: u64,
    /// Seconds per run, instead of a record count.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Offered user records per second; 0 sends as fast as the producer accepts them.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
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
    /// Seed of the workload generator: the same seed gives the same records.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// A record-size distribution, in bytes of data.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SizeDist {
    Fixed { bytes: usize },
    Uniform { min: usize, max: usize },
    Lognormal { median: f64, sigma: f64 },
}

/// The largest data a record of the bench can carry: 1 MiB less its 16-byte key.
const MAX_DATA: usize = (1 << 20) - 16;

impl FromStr for SizeDist {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, params) = s.split_once(':').unwrap_or(("fixed", s));
        let num = |t: &str| {
            t.trim()
                .parse::<f64>()
                .map_err(|_| format!("{t:?} is not a number (in size distribution {s:?})"))
        };
        let bytes = |t: &str| -> Result<usize, String> {
            let v = num(t)?;
            if v < 1.0 || v > MAX_DATA as f64 || v.fract() != 0.0 {
                return Err(format!(
                    "record size {t} is out of range: a whole number of bytes from 1 to {MAX_DATA}"
                ));
            }
            Ok(v as usize)
        };
        match kind {
            "fixed" => Ok(SizeDist::Fixed {
                bytes: bytes(params)?,
            }),
            "uniform" => {
                let (a, b) = params
                    .split_once('-')
                    .ok_or_else(|| format!("uniform needs MIN-MAX, found {params:?}"))?;
                let (min, max) = (bytes(a)?, bytes(b)?);
                if min > max {
                    return Err(format!("uniform:{min}-{max}: MIN is above MAX"));
                }
                Ok(SizeDist::Uniform { min, max })
            }
            "lognormal" => {
                let (m, sigma) = params.split_once(':').unwrap_or((params, "1.0"));
                let (median, sigma) = (bytes(m)? as f64, num(sigma)?);
                if !(0.0..=4.0).contains(&sigma) {
                    return Err(format!("lognormal sigma {sigma} is out of range 0 to 4"));
                }
                Ok(SizeDist::Lognormal { median, sigma })
            }
            other => Err(format!(
                "unknown size distribution {other:?}: use fixed:N, uniform:MIN-MAX or lognormal:MEDIAN[:SIGMA]"
            )),
        }
    }
}

impl SizeDist {
    fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        match *self {
            SizeDist::Fixed { bytes } => bytes,
            SizeDist::Uniform { min, max } => rng.usize(min..=max),
            SizeDist::Lognormal { median, sigma } => {
                // Box-Muller: a standard normal from two uniforms.
                let (u1, u2) = (1.0 - rng.f64(), rng.f64());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                ((median * (sigma * z).exp()).round() as usize).clamp(1, MAX_DATA)
            }
        }
    }
}

impl std::fmt::Display for SizeDist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SizeDist::Fixed { bytes } => write!(f, "fixed:{bytes}"),
            SizeDist::Uniform { min, max } => write!(f, "uniform:{min}-{max}"),
            SizeDist::Lognormal { median, sigma } => write!(f, "lognormal:{median}:{sigma}"),
        }
    }
}

/// The synthetic workload: deterministic for a seed.
struct Workload {
    rng: fastrand::Rng,
    size: SizeDist,
    keys: u64,
    ehk_share: f64,
}

impl Workload {
    fn next(&mut self) -> UserRecord {
        let size = self.size.sample(&mut self.rng);
        let mut data = vec![0u8; size];
        self.rng.fill(&mut data);
        let key = format!("partition-{:06}", self.rng.u64(..self.keys));
        let record = UserRecord::new(key, data).expect("sizes and keys are checked up front");
        if self.ehk_share > 0.0 && self.rng.f64() < self.ehk_share {
            record.with_explicit_hash_key(HashKey(self.rng.u128(..)))
        } else {
            record
        }
    }
}

/// What the sink saw: every PutRecords call and entry, counted on the way through.
#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    entries_sent: AtomicU64,
    entries_put: AtomicU64,
    bytes_put: AtomicU64,
    units_put: AtomicU64,
    throttled: AtomicU64,
    entries_failed: AtomicU64,
}

/// A sink that counts what passes through it to the real one.
struct Counting<S> {
    inner: S,
    counters: Arc<Counters>,
}

fn is_throttle(code: &str) -> bool {
    matches!(
        kinesis_producer::error::classify(code),
        kinesis_producer::error::ErrorClass::Throttled
    )
}

impl<S: Sink> Sink for Counting<S> {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<EntryResult>, SinkError> {
        let c = &self.counters;
        let sizes: Vec<usize> = entries.iter().map(PutEntry::size).collect();
        c.calls.fetch_add(1, Relaxed);
        c.entries_sent.fetch_add(sizes.len() as u64, Relaxed);
        let result = self.inner.put_records(stream, entries).await;
        match &result {
            Ok(results) => {
                for (size, r) in sizes.iter().zip(results) {
                    match r {
                        EntryResult::Put { .. } => {
                            c.entries_put.fetch_add(1, Relaxed);
                            c.bytes_put.fetch_add(*size as u64, Relaxed);
                            c.units_put.fetch_add(put_payload_units(*size), Relaxed);
                        }
                        EntryResult::Failed { code, .. } if is_throttle(code) => {
                            c.throttled.fetch_add(1, Relaxed);
                        }
                        EntryResult::Failed { .. } => {
                            c.entries_failed.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
            Err(e) => {
                let counter = if is_throttle(&e.code) {
                    &c.throttled
                } else {
                    &c.entries_failed
                };
                counter.fetch_add(sizes.len() as u64, Relaxed);
            }
        }
        result
    }

    async fn list_shards(&self, stream: &str) -> Result<Vec<Shard>, SinkError> {
        self.inner.list_shards(stream).await
    }
}

/// A producer sending through `inner`, counted; made inside `rt`, so its engine runs there.
fn counted<S: Sink>(
    rt: &tokio::runtime::Runtime,
    config: kinesis_producer::Config,
    inner: S,
    counters: &Arc<Counters>,
) -> Producer {
    let counters = counters.clone();
    rt.block_on(async { Producer::with_sink(config, Counting { inner, counters }) })
}

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
    /// Seconds since the start and user records put per second in the interval before.
    pub rate_over_time: Vec<(f64, f64)>,
    /// Latency of the records put, as 1001 quantiles (0, 0.001, ..., 1), in milliseconds.
    pub latency_quantiles_ms: Vec<f64>,
}

#[derive(Serialize)]
struct Report<'a> {
    sink: String,
    stream: &'a str,
    shards: Option<u32>,
    records: Option<u64>,
    duration_seconds: Option<f64>,
    offered_rate: Option<f64>,
    size: SizeDist,
    keys: u64,
    ehk_share: f64,
    seed: u64,
    runs: Vec<RunReport>,
}

const PRODUCER_THREADS: &str = "kpl-producer";
const SENDER_THREAD: &str = "kpl-bench-send";
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const RATE_EVERY: u64 = 5;
/// Records whose outcomes one task awaits; a slow sender hands a chunk over after CHUNK_AGE.
const CHUNK: usize = 64;
const CHUNK_AGE: Duration = Duration::from_millis(20);

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    check(&args)?;
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
    if !args.json {
        println!(
            "kpl bench: {}, data sizes {}, {} partition keys, {:.0}% with explicit hash keys, offered {}",
            match args.duration {
                Some(d) => format!("{d} s per run"),
                None => format!("{} user records per run", args.records),
            },
            args.size,
            args.keys,
            args.ehk_share * 100.0,
            if args.rate > 0.0 {
                format!("{} records/s", args.rate)
            } else {
                "as fast as the producer takes them".into()
            }
        );
        println!("  sink: {sink_text}; stream {:?}", args.stream);
    }

    let mut runs = Vec::new();
    for &aggregation in modes {
        let counters = Arc::new(Counters::default());
        let mut local = None;
        // Both runs get the same properties; only AggregationEnabled differs (and the in-memory
        // sink, which has no shard limits, runs without the rate limiter).
        let config = |base: ConfigBuilder| {
            let builder = conn.builder(base)?.aggregation_enabled(aggregation);
            conn.build(if sink == SinkKind::Memory {
                builder.rate_limit(1_000_000)
            } else {
                builder
            })
        };
        let producer = match sink {
            SinkKind::Local => {
                let kinesis = local_rt.block_on(LocalKinesis::start(LocalOptions {
                    enforce_limits: true,
                    port: 0,
                }))?;
                local_rt.block_on(kinesis.create_stream(&args.stream, args.shards as i32))?;
                let config = config(kinesis.config())?;
                let inner = AwsSink::from_client(kinesis.client().clone());
                local = Some(kinesis);
                counted(&producer_rt, config, inner, &counters)
            }
            SinkKind::Memory => {
                let inner = MemorySink::new()
                    .with_stream(&args.stream, args.shards as usize)
                    .discarding();
                counted(
                    &producer_rt,
                    config(ConfigBuilder::default())?,
                    inner,
                    &counters,
                )
            }
            SinkKind::Kinesis => {
                let config = config(ConfigBuilder::default())?;
                let inner = producer_rt.block_on(AwsSink::new(&config));
                counted(&producer_rt, config, inner, &counters)
            }
        };
        let mut report = one_run(&args, aggregation, &producer, settle_rt.handle(), &counters)?;
        producer_rt.block_on(producer.shutdown());
        if let Some(kinesis) = local {
            let (kinesis_records, user_records) = local_rt.block_on(async {
                let read = kinesis.read_all(&args.stream).await?;
                let users: usize = read
                    .iter()
                    .map(|r| deaggregate(&r.partition_key, r.data.clone()).len())
                    .sum();
                Ok::<_, SinkError>((read.len() as u64, users as u64))
            })?;
            report.read_back_kinesis_records = Some(kinesis_records);
            report.read_back_user_records = Some(user_records);
        }
        runs.push(report);
    }

    let failed: u64 = runs.iter().map(|r| r.user_records_failed).sum();
    let mismatched = runs.iter().any(|r| {
        r.read_back_user_records
            .is_some_and(|n| n != r.user_records_put)
    });
    let report = Report {
        sink: sink_text,
        stream: &args.stream,
        shards: (sink != SinkKind::Kinesis).then_some(args.shards),
        records: args.duration.is_none().then_some(args.records),
        duration_seconds: args.duration,
        offered_rate: (args.rate > 0.0).then_some(args.rate),
        size: args.size,
        keys: args.keys,
        ehk_share: args.ehk_share,
        seed: args.seed,
        runs,
    };
    if let Some(path) = &args.chart {
        chart::write(path, &report.runs)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report.runs);
        if let Some(path) = &args.chart {
            println!("  chart written to {}", path.display());
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
    if !args.rate.is_finite() || args.rate < 0.0 {
        return Err(format!("--rate {} must be 0 (unpaced) or more", args.rate));
    }
    if args.duration.is_some_and(|d| !(d > 0.0 && d <= 86_400.0)) {
        return Err("--duration must be more than 0 and at most 86400 seconds".into());
    }
    if args.records == 0 && args.duration.is_none() {
        return Err("--records must be at least 1".into());
    }
    if let Some(path) = &args.chart {
        chart::format_of(path)?;
    }
    Ok(())
}

#[derive(Default)]
struct Settled {
    put: u64,
    failed: u64,
    failures: std::collections::BTreeMap<String, u64>,
    retried: u64,
    failed_bytes: u64,
    latencies_ms: Vec<f64>,
    /// The first failure, in full, to show why records failed.
    first_error: Option<String>,
    /// When the last record was settled: the end of the run.
    last_at: Option<Instant>,
}

/// Waits for a chunk of records' outcomes, in order, and counts them. A task per chunk, not
/// one for all: a record held back by retries holds back only its chunk's count, not every
/// record behind it; and not one per record, whose cost limited the in-memory runs. Latency
/// comes from each record's attempts, from its arrival to the end of its last call, so waiting
/// in order does not change it.
async fn chunk_outcomes(
    futures: Vec<RecordFuture>,
    settled: Arc<std::sync::Mutex<Settled>>,
    delivered: Arc<AtomicU64>,
) {
    let mut s = Settled::default();
    for future in futures {
        count_outcome(&mut s, future.await);
        delivered.fetch_add(1, Relaxed);
    }
    s.last_at = Some(Instant::now());
    settled.lock().expect("no settling task panics").merge(s);
}

impl Settled {
    fn merge(&mut self, other: Settled) {
        self.put += other.put;
        self.failed += other.failed;
        self.retried += other.retried;
        self.failed_bytes += other.failed_bytes;
        self.latencies_ms.extend(other.latencies_ms);
        for (kind, n) in other.failures {
            *self.failures.entry(kind).or_default() += n;
        }
        self.last_at = self.last_at.max(other.last_at);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

fn count_outcome(
    s: &mut Settled,
    outcome: Result<kinesis_producer::Receipt, kinesis_producer::PutError>,
) {
    match outcome {
        Ok(receipt) => {
            s.put += 1;
            s.retried += u64::from(receipt.attempts.count() > 1);
            if let Some(a) = receipt.attempts.last() {
                s.latencies_ms
                    .push((a.delay + a.duration).as_secs_f64() * 1000.0);
            }
        }
        Err(e) => {
            s.failed += 1;
            if s.first_error.is_none() {
                s.first_error = Some(e.to_string());
            }
            s.failed_bytes += e.record.size() as u64;
            let kind = match &e.kind {
                PutErrorKind::InvalidRecord(_) => "invalid record".to_string(),
                PutErrorKind::Expired { .. } => "expired (RecordTtl)".into(),
                PutErrorKind::Rejected { code, .. } => format!("rejected ({code})"),
                PutErrorKind::Throttled { .. } => "throttled (FailIfThrottled)".into(),
                PutErrorKind::BufferFull { .. } => "buffer full".into(),
                PutErrorKind::Closed => "closed".into(),
                PutErrorKind::Stopped => "stopped".into(),
                other => other.to_string(),
            };
            *s.failures.entry(kind).or_default() += 1;
        }
    }
}

fn one_run(
    args: &Args,
    aggregation: bool,
    producer: &Producer,
    settle: &tokio::runtime::Handle,
    counters: &Counters,
) -> Result<RunReport, Box<dyn std::error::Error>> {
    let label = if aggregation {
        "aggregation on"
    } else {
        "aggregation off"
    };
    let sent = Arc::new(AtomicU64::new(0));
    let sent_bytes = Arc::new(AtomicU64::new(0));
    // Peak buffered records and bytes in the producer.
    let peak = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let delivered = Arc::new(AtomicU64::new(0));
    let done_sending = Arc::new(AtomicBool::new(false));
    let settled = Arc::new(std::sync::Mutex::new(Settled::default()));

    usage::reset_peak_rss();
    let cpu_before = (
        usage::threads_cpu_seconds(&[PRODUCER_THREADS, SENDER_THREAD]),
        usage::process_cpu_seconds(),
    );
    let start = Instant::now();

    // The sender: its own thread, as an application's would be; `send_blocking` waits when
    // the producer's buffer is full, so the offered rate never outruns the memory bound.
    let sender = {
        let producer = producer.clone();
        let stream = args.stream.clone();
        let (sent, sent_bytes, done_sending) =
            (sent.clone(), sent_bytes.clone(), done_sending.clone());
        let (settled, delivered, settle) = (settled.clone(), delivered.clone(), settle.clone());
        let peak = peak.clone();
        let mut workload = Workload {
            rng: fastrand::Rng::with_seed(args.seed),
            size: args.size,
            keys: args.keys,
            ehk_share: args.ehk_share,
        };
        let (records, duration, rate) = (
            args.records,
            args.duration.map(Duration::from_secs_f64),
            args.rate,
        );
        std::thread::Builder::new()
            .name(SENDER_THREAD.into())
            .spawn(move || {
                let mut i = 0u64;
                let mut chunk = Vec::with_capacity(CHUNK);
                let mut chunk_started = Instant::now();
                loop {
                    let elapsed = start.elapsed();
                    let more = match duration {
                        Some(d) => elapsed < d,
                        None => i < records,
                    };
                    if !more {
                        break;
                    }
                    if rate > 0.0 {
                        let due = Duration::from_secs_f64(i as f64 / rate);
                        if due > elapsed {
                            std::thread::sleep(due - elapsed);
                        }
                    }
                    let record = workload.next();
                    sent_bytes.fetch_add(record.size() as u64, Relaxed);
                    chunk.push(producer.send_blocking(&stream, record));
                    if chunk.len() >= CHUNK || chunk_started.elapsed() >= CHUNK_AGE {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                        settle.spawn(chunk_outcomes(full, settled.clone(), delivered.clone()));
                        chunk_started = Instant::now();
                    }
                    i += 1;
                    sent.store(i, Relaxed);
                    // The sampler looks every 100 ms; a short run would slip between looks.
                    if i.is_multiple_of(256) {
                        let (records, bytes) = producer.buffered();
                        peak.0.fetch_max(records as u64, Relaxed);
                        peak.1.fetch_max(bytes as u64, Relaxed);
                    }
                }
                if !chunk.is_empty() {
                    settle.spawn(chunk_outcomes(chunk, settled.clone(), delivered.clone()));
                }
                producer.flush();
                done_sending.store(true, Relaxed);
            })?
    };

    // Sample progress, the rate and the producer's buffer until every future is settled.
    let total = args.duration.is_none().then_some(args.records);
    let mut progress = Progress::new("bench", total);
    let mut rate_over_time = Vec::new();
    let mut last = (Duration::ZERO, 0u64);
    let mut tick = 0u64;
    loop {
        tick += 1;
        std::thread::sleep(SAMPLE_EVERY);
        let (records, bytes) = producer.buffered();
        peak.0.fetch_max(records as u64, Relaxed);
        peak.1.fetch_max(bytes as u64, Relaxed);
        let now = start.elapsed();
        let done = delivered.load(Relaxed);
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
        // A point every RATE_EVERY samples: shorter windows only show batching noise.
        let finished = done_sending.load(Relaxed) && done == sent.load(Relaxed);
        if tick.is_multiple_of(RATE_EVERY) || finished {
            rate_over_time.push((now.as_secs_f64(), rate));
            last = (now, done);
        }
        let sent_now = sent.load(Relaxed);
        progress.update(done, || {
            format!("{label}: {sent_now} sent, {done} settled, {rate:.0} records/s")
        });
        if done_sending.load(Relaxed) && done == sent_now {
            break;
        }
    }
    sender.join().map_err(|_| "the sending thread panicked")?;
    let settled = std::mem::take(&mut *settled.lock().expect("no settling task panics"));
    let seconds = settled
        .last_at
        .map_or(Duration::ZERO, |t| t.duration_since(start))
        .as_secs_f64();
    progress.finish();
    let cpu_producer = usage::threads_cpu_seconds(&[PRODUCER_THREADS, SENDER_THREAD])
        .zip(cpu_before.0)
        .map(|(after, before)| after - before);
    let cpu_process = usage::process_cpu_seconds()
        .zip(cpu_before.1)
        .map(|(after, before)| after - before);

    let mut latencies = settled.latencies_ms;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let quantiles = (0..=1000)
        .map(|i| pct(i as f64 / 1000.0))
        .collect::<Vec<_>>();
    let g = |c: &AtomicU64| c.load(Relaxed);
    let kinesis_records = g(&counters.entries_put);
    let bytes_sent = g(&counters.bytes_put);
    // The user records put weigh what was sent less what failed (handed back with its error).
    let user_bytes = sent_bytes.load(Relaxed) - settled.failed_bytes;
    let units = g(&counters.units_put);
    Ok(RunReport {
        aggregation,
        user_records_sent: sent.load(Relaxed),
        user_records_put: settled.put,
        user_records_failed: settled.failed,
        failures: settled.failures,
        first_error: settled.first_error,
        seconds,
        user_records_per_second: settled.put as f64 / seconds.max(1e-9),
        kinesis_records_put: kinesis_records,
        put_records_calls: g(&counters.calls),
        entries_sent: g(&counters.entries_sent),
        user_records_per_kinesis_record: settled.put as f64 / kinesis_records.max(1) as f64,
        user_bytes,
        bytes_sent,
        put_payload_units: units,
        min_put_payload_units: user_bytes.div_ceil(25 * 1024),
        payload_unit_efficiency_percent: user_bytes.div_ceil(25 * 1024) as f64
            / units.max(1) as f64
            * 100.0,
        throttled_entries: g(&counters.throttled),
        other_failed_entries: g(&counters.entries_failed),
        user_records_retried: settled.retried,
        latency_ms_p50: pct(0.5),
        latency_ms_p99: pct(0.99),
        latency_ms_max: latencies.last().copied().unwrap_or(0.0),
        cpu_seconds_producer: cpu_producer,
        cpu_seconds_process: cpu_process,
        peak_rss_bytes: usage::peak_rss_bytes(),
        peak_buffered_records: peak.0.load(Relaxed),
        peak_buffered_bytes: peak.1.load(Relaxed),
        read_back_user_records: None,
        read_back_kinesis_records: None,
        rate_over_time,
        latency_quantiles_ms: if latencies.is_empty() {
            vec![]
        } else {
            quantiles
        },
    })
}

/// How a table cell is computed from a run.
type Cell = Box<dyn Fn(&RunReport) -> String>;

fn print_table(runs: &[RunReport]) {
    let header: Vec<String> = runs
        .iter()
        .map(|r| {
            if r.aggregation {
                "aggregation on".to_string()
            } else {
                "aggregation off".to_string()
            }
        })
        .collect();
    let opt = |v: Option<f64>, unit: &str| match v {
        Some(v) => format!("{v:.2}{unit}"),
        None => "n/a".to_string(),
    };
    let rows: Vec<(&str, Cell)> = vec![
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
                    (Some(u), Some(k)) => format!("{u} user in {k} Kinesis"),
                    _ => "not read".into(),
                },
            ),
        ),
    ];
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
    if let [on, off] = runs {
        println!();
        println!(
            "  aggregation put {:.1}x fewer Kinesis records and used {:.1}% fewer PUT payload units ({} vs {}).",
            off.kinesis_records_put as f64 / on.kinesis_records_put.max(1) as f64,
            (1.0 - on.put_payload_units as f64 / off.put_payload_units.max(1) as f64) * 100.0,
            on.put_payload_units,
            off.put_payload_units,
        );
    }
}
