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
