//! The spool through the producer, in one process, on the in-memory Kinesis: records a
//! producer never saw resolved (its engine stopped with them in flight) are sent by the next
//! producer on the directory; records refused by a full spool are handed back, or waited for;
//! a second producer on the directory is refused; what is resolved is deleted. The crash test
//! with `kill -9` against a real endpoint is `cli/tests/cli_spool.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use kinesis_producer::aggregation::deaggregate;
use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::{Config, Producer, PutErrorKind, SpoolError, UserRecord};

fn config(dir: &std::path::Path) -> kinesis_producer::ConfigBuilder {
    Config::builder()
        .spool_directory(dir)
        .spool_sync_interval(Duration::from_millis(2))
}

fn record(i: usize) -> UserRecord {
    UserRecord::new(format!("key-{}", i % 97), format!("record {i}")).unwrap()
}

/// Every user record in the stream, by its data, with how many times it is there.
fn stored(sink: &MemorySink, stream: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in sink.records(stream) {
        for user in deaggregate(&r.partition_key, r.data.clone()) {
            let data = String::from_utf8(user.data.to_vec()).unwrap();
            *seen.entry(data).or_insert(0) += 1;
        }
    }
    seen
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

#[test]
fn records_a_stopped_producer_held_are_sent_by_the_next_one_and_the_spool_empties() {
    let dir = tempfile::tempdir().unwrap();
    // The first producer's Kinesis never answers: its records are in flight or buffered when
    // its engine stops (its own runtime, dropped with it), as in a crash.
    let down = MemorySink::new().with_stream("s", 4);
    down.set_latency(Duration::from_secs(3600));
    let first = Producer::try_with_sink(config(dir.path()).build().unwrap(), down.clone()).unwrap();
    let futures: Vec<_> = (0..5_000).map(|i| first.send("s", record(i))).collect();
    first.sync_spool_blocking().unwrap();
    drop(futures);
    drop(first);
    assert!(down.records("s").is_empty());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let up = MemorySink::new().with_stream("s", 4);
        let second =
            Producer::try_with_sink(config(dir.path()).build().unwrap(), up.clone()).unwrap();
        let stats = second.spool_stats().unwrap();
        assert_eq!(stats.recovered_records, 5_000);
        // New records go in beside them.
        let new = second.send_all("s", (5_000..6_000).map(record)).await;
        assert!(new.iter().all(Result::is_ok));
        second.flush_and_wait().await;
        // The recovered records' outcomes go to no caller: wait until they are all put.
        for _ in 0..500 {
            if second.spool_stats().unwrap().recovered_put == 5_000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(second.spool_stats().unwrap().recovered_put, 5_000);
        let seen = stored(&up, "s");
        for i in 0..6_000 {
            assert_eq!(seen.get(&format!("record {i}")), Some(&1), "record {i}");
        }
        assert_eq!(seen.len(), 6_000);
        second.shutdown().await;
    });
    // Everything resolved: nothing is left to send again.
    assert_eq!(segments(dir.path()), 0);
    let (_, recovered) = {
        let p = Producer::try_with_sink(
            config(dir.path()).build().unwrap(),
            MemorySink::new().with_stream("s", 1),
        )
        .unwrap();
        (p.spool_stats(), p.spool_stats().unwrap().recovered_records)
    };
    assert_eq!(recovered, 0);
}

#[tokio::test]
async fn a_second_producer_on_the_directory_is_refused_and_new_reports_it_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::new().with_stream("s", 1);
    let cfg = config(dir.path()).build().unwrap();
    let first = Producer::try_with_sink(cfg.clone(), sink.clone()).unwrap();
    let err = Producer::try_with_sink(cfg.clone(), sink.clone()).unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
    // The infallible constructor refuses every record with the same error, and says so.
    let second = Producer::with_sink(cfg, sink.clone());
    let refused = second.send("s", record(1)).await.unwrap_err();
    assert!(
        matches!(refused.kind, PutErrorKind::Spool(SpoolError::Locked { .. })),
        "{refused}"
    );
    assert_eq!(refused.record, record(1));
    assert!(matches!(
        second.sync_spool().await,
        Err(SpoolError::Locked { .. })
    ));
    first.send("s", record(0)).await.unwrap();
    first.shutdown().await;
    // Without a spool, sync_spool says there is none.
    let plain = Producer::with_sink(Config::default(), sink);
    let e = plain.sync_spool().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "this producer has no spool (SpoolDirectory is not set): nothing is kept on disk"
    );
}

#[tokio::test]
async fn a_full_spool_hands_records_back_or_makes_waiting_sends_wait() {
    let dir = tempfile::tempdir().unwrap();
    let sink = MemorySink::new().with_stream("s", 2);
    sink.set_latency(Duration::from_millis(300));
    let cfg = config(dir.path()).spool_max_bytes(1 << 20).build().unwrap();
    let producer = Producer::try_with_sink(cfg, sink.clone()).unwrap();
    // 1 KiB records: about a thousand fill the 1 MiB spool while Kinesis is slow.
    let big = |i: usize| UserRecord::new(format!("k{i}"), vec![b'x'; 1024]).unwrap();
    let outcomes = producer.send_all("s", (0..2_000).map(big)).await;
    let full = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o,
                Err(e) if matches!(e.kind, PutErrorKind::Spool(SpoolError::Full { max_bytes: 1_048_576, .. }))
            )
        })
        .count();
    let put = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(
        full > 0 && put > 0 && full + put == 2_000,
        "{full} full, {put} put"
    );
    // The waiting form waits for room instead: all 2,000 go.
    let outcomes = producer.send_all_wait("s", (0..2_000).map(big)).await.await;
    assert!(outcomes.iter().all(Result::is_ok));
    let one = producer.send_wait("s", big(0)).await.await;
    assert!(one.is_ok());
    producer.shutdown().await;
    assert_eq!(segments(dir.path()), 0);
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A real full disk: the spool on a 2 MiB tmpfs, half of it taken by another file. Records are
/// refused with the disk's error (each handed back), `sync_spool` fails with it, nothing
/// panics; once the other file goes, records are taken and synced again and every record taken
/// before is put. Needs `mount` (root); without it, says so and checks nothing here
/// (`src/spool/tests.rs` injects ENOSPC into the writer regardless).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_records_with_its_error_and_they_flow_again_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&disk)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "skipped: cannot mount a tmpfs here (not root?); the writer's ENOSPC path is tested in src/spool/tests.rs"
        );
        return;
    }
    let _unmount = Mounted(disk.clone());
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![0u8; 1 << 20]).unwrap();
    let sink = MemorySink::new().with_stream("s", 2);
    let cfg = config(&disk.join("spool")).build().unwrap();
    let producer = Producer::try_with_sink(cfg, sink.clone()).unwrap();
    let big = |i: usize| UserRecord::new(format!("k{i}"), vec![b'x'; 1024]).unwrap();
    let mut taken = Vec::new();
    let mut refused = None;
    for i in 0..20_000 {
        match producer.try_send("s", big(i)) {
            Ok(future) => taken.push(future),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let refused = refused.expect("the disk never filled");
    let PutErrorKind::Spool(SpoolError::Write { path, .. }) = &refused.kind else {
        panic!("{refused}");
    };
    assert!(path.starts_with(disk.join("spool")), "{}", path.display());
    assert!(
        refused.to_string().contains("No space left on device"),
        "{refused}"
    );
    assert_eq!(
        refused.record.data().len(),
        1024,
        "the record is handed back"
    );
    assert!(matches!(
        producer.sync_spool().await,
        Err(SpoolError::Write { .. })
    ));
    // Room again: the writer's next try succeeds, and records are taken and synced.
    std::fs::remove_file(&filler).unwrap();
    let mut again = None;
    for i in 0..500 {
        if let Ok(future) = producer.try_send("s", big(i)) {
            again = Some(future);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = again.expect("records were not taken again once the disk had room");
    producer.sync_spool().await.unwrap();
    again.await.unwrap();
    for future in taken {
        future.await.unwrap();
    }
    producer.shutdown().await;
}

/// Records of one seed's run, by number: sent, and whose `sync_spool` returned.
#[derive(Default)]
struct Ledger {
    sent: u64,
    synced: Vec<std::ops::Range<u64>>,
}

/// One incarnation of a producer on `dir`: sends records `from..from + n` with random syncs,
/// under the sink's faults, then crashes (its runtime dropped with everything in it, the way a
/// killed process loses its memory) after a random time. Returns how far syncs got.
fn incarnation(
    dir: &std::path::Path,
    sink: &MemorySink,
    rng: &mut fastrand::Rng,
    from: u64,
    n: u64,
    ttl_ms: u64,
) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = config(dir)
        .record_ttl(Duration::from_millis(ttl_ms))
        .record_max_buffered_time(Duration::from_millis(rng.u64(5..50)))
        .spool_max_bytes(1 << 20)
        // One engine core or two (by the run's length, so that every other draw stays what it
        // was): recovery and acknowledgements through several cores too.
        .engine_cores(1 + n % 2)
        .build()
        .unwrap();
    let producer = {
        let _guard = rt.enter();
        Producer::try_with_sink(cfg, sink.clone()).unwrap()
    };
    let mut synced_to = from;
    let mut futures = Vec::new();
    for i in from..from + n {
        futures.push(producer.send("s", record(i as usize)));
        if rng.u8(..) < 8 {
            rt.block_on(producer.sync_spool()).unwrap();
            synced_to = i + 1;
        }
        if rng.u8(..) < 4 {
            std::thread::sleep(Duration::from_millis(rng.u64(1..5)));
        }
    }
    std::thread::sleep(Duration::from_millis(rng.u64(0..150)));
    // The crash: the engine's tasks, the outcomes on their way and the futures go; what the
    // spool's writer had not written is lost with them when it is dropped mid-way below.
    drop(futures);
    drop(rt);
    drop(producer);
    synced_to
}

/// Many seeds of crashes at random moments under faults (throttling, answers lost after the
/// write, latency): every
/// record whose `sync_spool` returned is in the stream at the end, and once the last producer
/// finished with the faults gone, the spool holds nothing. `KPL_SPOOL_SEEDS` runs more seeds.
#[test]
fn crashes_at_random_moments_lose_no_synced_record() {
    let seeds: u64 = std::env::var("KPL_SPOOL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut duplicates = 0;
    let mut recovered = 0;
    let mut sent = 0;
    for seed in 0..seeds {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let sink = MemorySink::new().with_stream("s", rng.usize(1..5));
        let throttle = rng.u8(..40);
        let mut faults = fastrand::Rng::with_seed(seed ^ 0xFA);
        sink.set_entry_fault(move |_| {
            (faults.u8(..100) < throttle).then(|| {
                (
                    "ProvisionedThroughputExceededException".to_owned(),
                    "Rate exceeded for shard".to_owned(),
                )
            })
        });
        if rng.bool() {
            sink.set_answer_loss(0.2, seed);
        }
        sink.set_latency(Duration::from_millis(rng.u64(0..20)));
        let mut ledger = Ledger::default();
        for _ in 0..rng.usize(1..4) {
            let n = rng.u64(50..400);
            // RecordTtl stays at its default: a record that fails is handed back to its caller
            // and leaves the spool (what `records_handed_back_leave_the_spool` checks), which a
            // caller that crashed never saw.
            let ttl = 30_000;
            let to = incarnation(dir.path(), &sink, &mut rng, ledger.sent, n, ttl);
            ledger.synced.push(ledger.sent..to);
            ledger.sent += n;
        }
        // The faults stop; a last producer sends what the spool holds, and finishes.
        sink.clear_entry_fault();
        sink.set_answer_loss(0.0, seed);
        sink.set_latency(Duration::ZERO);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let last =
                Producer::try_with_sink(config(dir.path()).build().unwrap(), sink.clone()).unwrap();
            let stats = last.spool_stats().unwrap();
            recovered += stats.recovered_records;
            // Bounded: the recovered records go in at once (the buffer has room for them all).
            for _ in 0..1_000 {
                if last.spool_stats().unwrap().recovered_put == stats.recovered_records {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(
                last.spool_stats().unwrap().recovered_put,
                stats.recovered_records,
                "seed {seed}: recovered records not all put"
            );
            last.shutdown().await;
        });
        let seen = stored(&sink, "s");
        for range in &ledger.synced {
            for i in range.clone() {
                assert!(
                    seen.contains_key(&format!("record {i}")),
                    "seed {seed}: record {i} was synced and is not in the stream"
                );
            }
        }
        assert!(
            seen.len() as u64 <= ledger.sent,
            "seed {seed}: records never sent"
        );
        duplicates += seen.values().map(|c| c - 1).sum::<usize>();
        sent += ledger.sent;
        assert_eq!(
            segments(dir.path()),
            0,
            "seed {seed}: the spool kept segments"
        );
    }
    eprintln!(
        "{seeds} seeds: {sent} records sent, {recovered} recovered after crashes, {duplicates} duplicates"
    );
}

/// Throttled without end, at a RecordTtl of 150 ms: each record expires.
fn always_throttled(shards: usize) -> MemorySink {
    let sink = MemorySink::new().with_stream("s", shards);
    sink.set_entry_fault(|_| {
        Some((
            "ProvisionedThroughputExceededException".to_owned(),
            "Rate exceeded for shard".to_owned(),
        ))
    });
    sink
}

/// A record that failed and was handed back to its caller is resolved: a crash after that
/// does not send it again. A recovered record that fails has no caller: it stays in the spool
/// until a producer puts it.
#[test]
fn records_handed_back_leave_the_spool_and_recovered_ones_that_fail_stay() {
    let dir = tempfile::tempdir().unwrap();
    let short = || {
        config(dir.path())
            .record_ttl(Duration::from_millis(150))
            .build()
            .unwrap()
    };
    // Handed back: expired, each future says so; a crash after that leaves nothing to send.
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let producer = {
            let _guard = rt.enter();
            Producer::try_with_sink(short(), always_throttled(1)).unwrap()
        };
        let outcomes = rt.block_on(producer.send_all("s", (0..50).map(record)));
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Err(e) if matches!(e.kind, PutErrorKind::Expired { .. })))
        );
        drop(rt); // the crash
        drop(producer);
    }
    {
        let p = Producer::try_with_sink(short(), MemorySink::new().with_stream("s", 1)).unwrap();
        assert_eq!(p.spool_stats().unwrap().recovered_records, 0);
    }
    // Not resolved at a crash (Kinesis never answers), then recovered by a producer whose
    // records all expire: they stay; a third producer puts them.
    let hung = MemorySink::new().with_stream("s", 1);
    hung.set_latency(Duration::from_secs(3600));
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let producer = {
            let _guard = rt.enter();
            Producer::try_with_sink(config(dir.path()).build().unwrap(), hung).unwrap()
        };
        drop(producer.send_all("s", (100..130).map(record)));
        producer.sync_spool_blocking().unwrap();
        drop(rt);
        drop(producer);
    }
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let producer = {
            let _guard = rt.enter();
            Producer::try_with_sink(short(), always_throttled(1)).unwrap()
        };
        assert_eq!(producer.spool_stats().unwrap().recovered_records, 30);
        // Long enough for them all to expire once (the resend task then waits 1 s).
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(producer.spool_stats().unwrap().recovered_put, 0);
        drop(rt);
        drop(producer);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let up = MemorySink::new().with_stream("s", 1);
        let producer =
            Producer::try_with_sink(config(dir.path()).build().unwrap(), up.clone()).unwrap();
        assert_eq!(producer.spool_stats().unwrap().recovered_records, 30);
        for _ in 0..400 {
            if producer.spool_stats().unwrap().recovered_put == 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        producer.shutdown().await;
        let seen = stored(&up, "s");
        assert!((100..130).all(|i| seen.contains_key(&format!("record {i}"))));
    });
    assert_eq!(segments(dir.path()), 0);
}

/// What was recovered is counted in the `metrics` facade too (`kpl_spool_recovered_records`,
/// `docs/metrics.md`): a recorder of this thread's counters sees it when the producer opens.
#[test]
fn what_was_recovered_is_counted_in_the_metrics_facade() {
    use metrics_facade::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder};
    use metrics_facade::{SharedString, Unit};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Count(AtomicU64);
    impl CounterFn for Count {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::Relaxed);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, Ordering::Relaxed);
        }
    }
    #[derive(Default)]
    struct Counters(Mutex<Vec<(String, Arc<Count>)>>);
    impl Recorder for Counters {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let count = Arc::new(Count::default());
            self.0
                .lock()
                .unwrap()
                .push((key.name().to_owned(), Arc::clone(&count)));
            Counter::from_arc(count)
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    let dir = tempfile::tempdir().unwrap();
    {
        // A producer whose Kinesis never answers, stopped with 25 records unresolved.
        let hung = MemorySink::new().with_stream("s", 1);
        hung.set_latency(Duration::from_secs(3600));
        let first = Producer::try_with_sink(config(dir.path()).build().unwrap(), hung).unwrap();
        drop(first.send_all("s", (0..25).map(record)));
        first.sync_spool_blocking().unwrap();
    }
    let counters = Counters::default();
    let next = metrics_facade::with_local_recorder(&counters, || {
        Producer::try_with_sink(
            config(dir.path()).build().unwrap(),
            MemorySink::new().with_stream("s", 1),
        )
        .unwrap()
    });
    assert_eq!(next.spool_stats().unwrap().recovered_records, 25);
    let seen: Vec<(String, u64)> = counters
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name == "kpl_spool_recovered_records")
        .map(|(name, c)| (name.clone(), c.0.load(Ordering::Relaxed)))
        .collect();
    assert_eq!(seen, [("kpl_spool_recovered_records".to_owned(), 25)]);
}
