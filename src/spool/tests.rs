//! The spool on its own: what it keeps across a close without resolution, what it deletes,
//! its lock, torn tails and damaged segments on disk, a full spool and a full disk.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::record::UserRecord;

fn options(dir: &Path) -> Options {
    Options {
        dir: dir.to_path_buf(),
        max_bytes: 16 * 1024 * 1024,
        sync_interval: Duration::from_millis(2),
    }
}

fn record(i: usize) -> UserRecord {
    UserRecord::new(
        format!("key-{i}"),
        format!("record number {i}").into_bytes(),
    )
    .unwrap()
}

fn numbers(recovered: &[Recovered]) -> Vec<usize> {
    recovered
        .iter()
        .map(|r| {
            let data = std::str::from_utf8(r.stored.record.data()).unwrap();
            data.strip_prefix("record number ")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Appends records 0..n in batches of 7 and syncs: their tags.
fn fill(spool: &Spool, n: usize) -> Vec<Tag> {
    let records: Vec<UserRecord> = (0..n).map(record).collect();
    let mut tags = Vec::new();
    for batch in records.chunks(7) {
        let (appended, refused) = spool.append("s", batch);
        assert!(refused.is_none(), "{refused:?}");
        tags.extend(appended);
    }
    spool.sync_blocking().unwrap();
    tags
}

#[test]
fn what_is_not_resolved_is_sent_again_in_order_and_what_is_resolved_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    // Small segments, so that there are many.
    opts.max_bytes = 16 * 64 * 1024;
    let (spool, recovered) = open(opts.clone()).unwrap();
    assert!(recovered.is_empty());
    let tags = fill(&spool, 20_000);
    assert!(segments(dir.path()).len() > 3, "{:?}", segments(dir.path()));
    // Records 0..10,000 resolve; the rest do not before the producer goes.
    for tag in &tags[..10_000] {
        tag.resolved(true);
    }
    drop(tags);
    spool.close();
    drop(spool);
    let (spool, recovered) = open(opts.clone()).unwrap();
    let got = numbers(&recovered);
    // Whole segments of resolved records were deleted, and the acks of the resolved records in
    // the segment that holds both kinds keep those from being sent again.
    assert_eq!(got, (10_000..20_000).collect::<Vec<_>>());
    assert!(!segments(dir.path()).is_empty());
    assert_eq!(spool.stats().recovered_records, got.len() as u64);
    // Once they resolve too, the spool is empty.
    for r in &recovered {
        r.tag.resolved(true);
    }
    drop(recovered);
    spool.close();
    drop(spool);
    let (_spool, recovered) = open(opts).unwrap();
    assert!(recovered.is_empty());
}

#[test]
fn a_second_producer_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, _) = open(options(dir.path())).unwrap();
    let err = open(options(dir.path())).unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "the spool directory {} is in use by another producer (it holds {}); two producers cannot share a spool",
            dir.path().display(),
            dir.path().join("lock").display()
        )
    );
}

#[test]
fn a_torn_tail_is_cut_at_the_last_whole_record_wherever_the_crash_cut_it() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(options(dir.path())).unwrap();
    let tags = fill(&spool, 50);
    drop(tags);
    spool.close();
    drop(spool);
    let path = segments(dir.path()).pop().unwrap();
    let whole = std::fs::read(&path).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..40 {
        let cut = rng.usize(0..whole.len());
        std::fs::write(&path, &whole[..cut]).unwrap();
        let (spool, recovered) = open(options(dir.path())).unwrap();
        let got = numbers(&recovered);
        assert_eq!(got, (0..got.len()).collect::<Vec<_>>(), "cut at {cut}");
        let expect = frame::read_segment(&whole[..cut]).records.len();
        assert_eq!(got.len(), expect, "cut at {cut}");
        // Nothing moved aside: a torn tail is not damage.
        assert_eq!(spool.stats().corrupt_segments, 0);
        drop(recovered);
        spool.close();
        drop(spool);
        if expect > 0 {
            // Cut on disk to the last whole record.
            assert!(std::fs::metadata(&path).unwrap().len() <= cut as u64);
        }
        std::fs::write(&path, &whole).unwrap();
    }
}

#[test]
fn a_damaged_segment_is_reported_moved_aside_and_its_whole_records_and_the_rest_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.max_bytes = 16 * 64 * 1024;
    let (spool, _) = open(opts.clone()).unwrap();
    let tags = fill(&spool, 10_000);
    drop(tags);
    spool.close();
    drop(spool);
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    // Damage the second segment in its middle.
    let victim = files[1].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&victim, &bytes).unwrap();
    let in_victim = frame::read_segment(&std::fs::read(&files[1]).unwrap())
        .records
        .len();
    let (spool, recovered) = open(opts).unwrap();
    let stats = spool.stats();
    assert_eq!(stats.corrupt_segments, 1);
    let aside = dir.path().join("corrupt").join(victim.file_name().unwrap());
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        bytes,
        "moved aside as it was"
    );
    assert!(!victim.exists());
    let got = numbers(&recovered);
    // Every record but the damaged one's and those after it in its segment.
    let lost = 10_000 - got.len();
    assert!(lost >= 1 && lost < 10_000 / files.len() + 1, "lost {lost}");
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "no record twice");
    assert!(in_victim < 10_000 / files.len() + 1);
    // The rescued records were written again in a segment of the new spool's: a crash now
    // keeps them.
    drop(recovered);
    spool.close();
    drop(spool);
    let (_spool, again) = open(options(dir.path())).unwrap();
    let mut twice = numbers(&again);
    twice.sort();
    assert_eq!(twice, sorted);
}

#[test]
fn a_full_spool_refuses_with_the_limit_and_frees_as_records_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.max_bytes = 64 * 1024;
    let (spool, _) = open(opts).unwrap();
    let mut tags = Vec::new();
    let err = loop {
        match spool.append_one("s", &record(tags.len())) {
            Ok(tag) => tags.push(tag),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            SpoolError::Full {
                max_bytes: 65536,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("the spool is full: "), "{err}");
    assert!(
        err.to_string()
            .ends_with("(SpoolMaxBytes 65536); the record was not accepted")
    );
    assert!(!spool.has_room(100));
    for tag in tags.drain(..) {
        tag.resolved(true);
    }
    // Deleting is the writer's: wait for it, as a waiting send does.
    spool.wait_room_blocking(100, || false);
    spool.append_one("s", &record(0)).unwrap();
    let big = UserRecord::new("k", vec![0u8; 70 * 1024]).unwrap();
    let err = spool.append_one("s", &big).unwrap_err();
    assert!(
        matches!(
            err,
            SpoolError::TooLarge {
                max_bytes: 65536,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_full_disk_is_an_error_to_callers_and_writes_resume_when_it_clears() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(options(dir.path())).unwrap();
    fill(&spool, 10);
    spool.shared.fail_writes.store(3, Ordering::Release);
    spool.append_one("s", &record(10)).unwrap();
    let err = spool.sync_blocking().unwrap_err();
    assert!(matches!(err, SpoolError::Write { .. }), "{err}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(
        err.to_string().starts_with("writing the spool segment "),
        "{err}"
    );
    // Meanwhile, records are refused with that error, each handed back by the producer.
    let refused = spool.append_one("s", &record(11)).unwrap_err();
    assert!(matches!(refused, SpoolError::Write { .. }));
    // The writer tries again every interval; after the third failure it succeeds.
    let mut tries = 0;
    while spool.append_one("s", &record(11)).is_err() {
        tries += 1;
        assert!(tries < 2_000, "writes never resumed");
        std::thread::sleep(Duration::from_millis(5));
    }
    spool.sync_blocking().unwrap();
    spool.close();
    drop(spool);
    let (_spool, recovered) = open(options(dir.path())).unwrap();
    assert_eq!(numbers(&recovered), (0..12).collect::<Vec<_>>());
}
