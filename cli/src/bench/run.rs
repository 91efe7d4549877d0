//! One run of `kpl bench`: the sending thread offering the workload at its pace, the sampler
//! watching progress and the producer's buffer, and the run's figures from what was counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use kinesis_producer::{Buffered, Producer};

use super::counting::Counters;
use super::fleet::{ProducerShare, owner};
use super::outcomes::{Settled, chunk_outcomes};
use super::replay::{Pace, Replay};
use super::report::RunReport;
use super::workload::Workload;
use super::{Args, DEFAULT_RECORDS, PRODUCER_THREADS, SENDER_THREAD, usage};
use crate::progress::Progress;

const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const RATE_EVERY: u64 = 5;
/// Records whose outcomes one task awaits; a slow sender hands a chunk over after CHUNK_AGE.
const CHUNK: usize = 64;
const CHUNK_AGE: Duration = Duration::from_millis(20);

/// Where a run's records come from.
pub(super) enum Source {
    Synthetic(Workload),
    Replay(Arc<Replay>),
}

impl Source {
    /// The `i`-th record of the run.
    fn record(&mut self, i: u64) -> kinesis_producer::UserRecord {
        match self {
            Source::Synthetic(w) => w.next(),
            Source::Replay(r) => r.record(i),
        }
    }

    /// When the `i`-th record is due after the start, at `pace`; `None`: at once.
    fn due(&self, i: u64, pace: Pace) -> Option<Duration> {
        match (pace, self) {
            (Pace::AsFast, _) => None,
            (Pace::Rate(rate), _) => Some(Duration::from_secs_f64(i as f64 / rate)),
            (Pace::Original, Source::Replay(r)) => r.due(i),
            (Pace::Original, Source::Synthetic(_)) => None,
        }
    }
}

pub(super) fn one_run(
    args: &Args,
    aggregation: bool,
    producers: &[Producer],
    settle: &tokio::runtime::Handle,
    counters: &[Arc<Counters>],
    (mut source, pace): (Source, Pace),
) -> Result<RunReport, Box<dyn std::error::Error>> {
    let fleet = producers.len();
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
    // Each producer's outcomes, counted apart so that its share can be told.
    let settled: Vec<_> = (0..fleet)
        .map(|_| Arc::new(std::sync::Mutex::new(Settled::default())))
        .collect();

    usage::reset_peak_rss();
    let cpu_before = (
        usage::threads_cpu_seconds(&[PRODUCER_THREADS, SENDER_THREAD]),
        usage::process_cpu_seconds(),
    );
    let start = Instant::now();

    // The sender: its own thread, as an application's would be; `send_blocking` waits when
    // the producer's buffer is full, so the offered rate never outruns the memory bound.
    let sender = {
        let producers = producers.to_vec();
        let affinity = args.key_affinity;
        let stream = args.stream.clone();
        let (sent, sent_bytes, done_sending) = (
            Arc::clone(&sent),
            Arc::clone(&sent_bytes),
            Arc::clone(&done_sending),
        );
        let (settled, delivered, settle) =
            (settled.clone(), Arc::clone(&delivered), settle.clone());
        let peak = Arc::clone(&peak);
        let (records, duration) = (
            args.records.unwrap_or(DEFAULT_RECORDS),
            args.duration.map(Duration::from_secs_f64),
        );
        std::thread::Builder::new()
            .name(SENDER_THREAD.into())
            .spawn(move || {
                let mut i = 0u64;
                // Per producer: its chunk of futures, when that chunk began, and its count.
                let mut chunks: Vec<(Vec<_>, Instant)> = (0..fleet)
                    .map(|_| (Vec::with_capacity(CHUNK), Instant::now()))
                    .collect();
                let mut sent_by = vec![0u64; fleet];
                loop {
                    let elapsed = start.elapsed();
                    let more = match duration {
                        Some(d) => elapsed < d,
                        None => i < records,
                    };
                    if !more {
                        break;
                    }
                    if let Some(due) = source.due(i, pace)
                        && due > elapsed
                    {
                        std::thread::sleep(due - elapsed);
                    }
                    let record = source.record(i);
                    sent_bytes.fetch_add(record.size() as u64, Relaxed);
                    let p = owner(&record, i, fleet, affinity);
                    sent_by[p] += 1;
                    let (chunk, chunk_started) = &mut chunks[p];
                    chunk.push(producers[p].send_blocking(&stream, record));
                    if chunk.len() >= CHUNK || chunk_started.elapsed() >= CHUNK_AGE {
                        let full = std::mem::replace(chunk, Vec::with_capacity(CHUNK));
                        settle.spawn(chunk_outcomes(
                            full,
                            Arc::clone(&settled[p]),
                            Arc::clone(&delivered),
                        ));
                        *chunk_started = Instant::now();
                    }
                    i += 1;
                    sent.store(i, Relaxed);
                    // The sampler looks every 100 ms; a short run would slip between looks.
                    if i.is_multiple_of(256) {
                        let (records, bytes) = buffered(&producers);
                        peak.0.fetch_max(records, Relaxed);
                        peak.1.fetch_max(bytes, Relaxed);
                    }
                }
                for (p, (chunk, _)) in chunks.into_iter().enumerate() {
                    if !chunk.is_empty() {
                        settle.spawn(chunk_outcomes(
                            chunk,
                            Arc::clone(&settled[p]),
                            Arc::clone(&delivered),
                        ));
                    }
                }
                for producer in &producers {
                    producer.flush();
                }
                done_sending.store(true, Relaxed);
                sent_by
            })?
    };

    // Sample progress, the rate and the producer's buffer until every future is settled.
    let total = args
        .duration
        .is_none()
        .then_some(args.records.unwrap_or(DEFAULT_RECORDS));
    let mut progress = Progress::new("bench", total);
    let mut rate_over_time = Vec::new();
    let mut last = (Duration::ZERO, 0u64);
    let mut tick = 0u64;
    loop {
        tick += 1;
        std::thread::sleep(SAMPLE_EVERY);
        let (records, bytes) = buffered(producers);
        peak.0.fetch_max(records, Relaxed);
        peak.1.fetch_max(bytes, Relaxed);
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
    let sent_by = sender.join().map_err(|_| "the sending thread panicked")?;
    let g = |c: &AtomicU64| c.load(Relaxed);
    // Each producer's part, then the whole run's outcomes merged from theirs.
    let mut shares = Vec::with_capacity(fleet);
    let mut all = Settled::default();
    for ((s, c), sent) in settled.iter().zip(counters).zip(sent_by) {
        let s = std::mem::take(&mut *s.lock().expect("no settling task panics"));
        shares.push(ProducerShare {
            user_records_sent: sent,
            user_records_put: s.put,
            user_records_failed: s.failed,
            kinesis_records_put: g(&c.entries_put),
            put_records_calls: g(&c.calls),
            entries_sent: g(&c.entries_sent),
            throttled_entries: g(&c.throttled),
            put_payload_units: g(&c.units_put),
            share_percent: 0.0,
            throttled_percent: g(&c.throttled) as f64 / g(&c.entries_sent).max(1) as f64 * 100.0,
        });
        all.merge(s);
    }
    for share in &mut shares {
        share.share_percent = share.user_records_put as f64 / all.put.max(1) as f64 * 100.0;
    }
    let settled = all;
    // The fleet's counts: each producer's, added up.
    let sum = |f: fn(&Counters) -> &AtomicU64| counters.iter().map(|c| g(f(c))).sum::<u64>();
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
    let pct = |p: f64| quantile(&latencies, p);
    let mut added = settled.added_ms;
    added.sort_by(f64::total_cmp);
    let quantiles = (0..=1000)
        .map(|i| pct(i as f64 / 1000.0))
        .collect::<Vec<_>>();
    let kinesis_records = sum(|c| &c.entries_put);
    let bytes_sent = sum(|c| &c.bytes_put);
    // The user records put weigh what was sent less what failed (handed back with its error).
    let user_bytes = sent_bytes.load(Relaxed) - settled.failed_bytes;
    let units = sum(|c| &c.units_put);

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
        put_records_calls: sum(|c| &c.calls),
        entries_sent: sum(|c| &c.entries_sent),
        user_records_per_kinesis_record: settled.put as f64 / kinesis_records.max(1) as f64,
        user_bytes,
        bytes_sent,
        put_payload_units: units,
        min_put_payload_units: user_bytes.div_ceil(25 * 1024),
        payload_unit_efficiency_percent: user_bytes.div_ceil(25 * 1024) as f64
            / units.max(1) as f64
            * 100.0,
        throttled_entries: sum(|c| &c.throttled),
        other_failed_entries: sum(|c| &c.entries_failed),
        user_records_retried: settled.retried,
        latency_ms_p50: pct(0.5),
        latency_ms_p99: pct(0.99),
        latency_ms_max: latencies.last().copied().unwrap_or(0.0),
        added_latency_ms_p50: quantile(&added, 0.5),
        added_latency_ms_p99: quantile(&added, 0.99),
        added_latency_ms_max: added.last().copied().unwrap_or(0.0),
        cpu_seconds_producer: cpu_producer,
        cpu_seconds_process: cpu_process,
        peak_rss_bytes: usage::peak_rss_bytes(),
        peak_buffered_records: peak.0.load(Relaxed),
        peak_buffered_bytes: peak.1.load(Relaxed),
        read_back_user_records: None,
        read_back_kinesis_records: None,
        read_back_exact: None,
        kib_written: sum(|c| &c.kib_put),
        bill: Default::default(),
        producers: if fleet > 1 { shares } else { Vec::new() },
        setting: None,
        rate_over_time,
        latency_quantiles_ms: if latencies.is_empty() {
            vec![]
        } else {
            quantiles
        },
    })
}

/// The `p` quantile of `sorted` (nearest rank), 0 when empty.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// Records and bytes buffered across the fleet.
fn buffered(producers: &[Producer]) -> (u64, u64) {
    producers.iter().fold((0, 0), |(r, b), p| {
        let Buffered { records, bytes, .. } = p.buffered();
        (r + records as u64, b + bytes as u64)
    })
}
