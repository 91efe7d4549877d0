//! The core's decisions, tested by driving it directly: no tokio, no sink, no clock but the
//! instants each test picks. Each test is one rule of the core, stated in its name.

#![allow(clippy::disallowed_methods)] // a test picks its own instants from the clock

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::{Call, Core, Listed, Outcomes};
use crate::config::{Config, ConfigBuilder};
use crate::engine::pending::{Pending, RecordFuture};
use crate::outcome::{PutError, PutErrorKind, Receipt};
use crate::record::UserRecord;
use crate::shard_map::{Shard, even_shards};
use crate::sink::{EntryResult, SinkError};

const MS: Duration = Duration::from_millis(1);

fn config(f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Config {
    f(Config::builder()
        .record_max_buffered_time(Duration::from_millis(100))
        .record_ttl(Duration::from_secs(2)))
    .build()
    .expect("a valid configuration")
}

fn shards(n: usize) -> Vec<Shard> {
    even_shards(n)
}

/// A core with stream "s" (id 0) whose first listing, of `n` shards, is in at `now`.
fn mapped(config: Config, n: usize, now: Instant) -> Core {
    let mut core = Core::new(config, fastrand::Rng::with_seed(7), now);
    core.add_stream(0, Arc::from("s"), now);
    core.handle_timeout(now);
    let listing = core
        .poll_listing()
        .expect("a first listing is asked for at once");
    let listed = Listed {
        shards: Ok(shards(n)),
        record_limit: Some(Ok(None)),
    };
    core.handle_listing(&listing, listed, now);
    core
}

fn send(core: &mut Core, key: &str, data: &str, now: Instant) -> RecordFuture {
    let record = UserRecord::new(key, data.to_owned()).expect("a valid record");
    let (pending, future) = Pending::new(record, Arc::from("s"));
    core.handle_records(0, [pending], now);
    future
}

/// The future's outcome, if it has one.
fn outcome(f: &mut RecordFuture) -> Option<Result<Receipt, PutError>> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(f).poll(&mut cx) {
        Poll::Ready(o) => Some(o),
        Poll::Pending => None,
    }
}

/// Delivers what the ledger decided, as the driver does; gives back the rest (budget room,
/// flush waiters done).
fn deliver(core: &mut Core) -> Outcomes {
    let mut out = Outcomes::default();
    core.poll_outcomes(&mut out);
    for o in out.resolved.drain(..) {
        let _ = o.deliver();
    }
    out
}

/// Answers `call` at `now`, as the driver does: the answer read where it arrives, then handed
/// to the core.
fn reply(core: &mut Core, call: Call, answer: Result<Vec<EntryResult>, SinkError>, now: Instant) {
    let answered = call.carried.settle(answer, now);
    core.handle_put_answer(call.id, answered, now);
}

/// Every entry of `call` put on shard `shard`.
fn all_put(call: &Call, shard: &str) -> Vec<EntryResult> {
    (0..call.entries.len())
        .map(|i| EntryResult::Put {
            shard_id: shard.to_owned(),
            sequence_number: format!("{}", 100 + i),
        })
        .collect()
}

fn failed(call: &Call, code: &str) -> Vec<EntryResult> {
    (0..call.entries.len())
        .map(|_| EntryResult::Failed {
            code: code.to_owned(),
            message: "a message".to_owned(),
        })
        .collect()
}

#[test]
fn records_are_aggregated_and_sent_at_their_deadline_and_the_answer_resolves_them() {
    let t0 = Instant::now();
    let mut core = mapped(config(|c| c), 1, t0);
    let mut a = send(&mut core, "a", "1", t0);
    let mut b = send(&mut core, "b", "2", t0 + 10 * MS);
    core.handle_timeout(t0 + 50 * MS);
    assert!(
        core.poll_call(t0 + 50 * MS).is_none(),
        "not before the deadline"
    );
    assert_eq!(core.poll_timeout(t0 + 50 * MS), Some(t0 + 100 * MS));
    let now = t0 + 100 * MS;
    core.handle_timeout(now);
    let call = core
        .poll_call(now)
        .expect("due at the first record's deadline");
    assert_eq!(call.entries.len(), 1, "two user records in one aggregate");
    assert!(core.poll_call(now).is_none());
    assert_eq!(core.held().0, 2);
    let answer = all_put(&call, "shardId-000000000000");
    reply(&mut core, call, Ok(answer), now + 20 * MS);
    let out = deliver(&mut core);
    assert_eq!(out.released.0, 2);
    assert_eq!(core.held(), (0, 0));
    let (ra, rb) = (
        outcome(&mut a).unwrap().unwrap(),
        outcome(&mut b).unwrap().unwrap(),
    );
    assert_eq!((&*ra.sequence_number, ra.sub_sequence_number), ("100", 0));
    assert_eq!((&*rb.sequence_number, rb.sub_sequence_number), ("100", 1));
    assert_eq!(core.calls_in_flight(), 0);
}

#[test]
fn a_flush_waiter_is_done_once_every_record_before_it_resolved_and_not_for_later_ones() {
    let t0 = Instant::now();
    let mut core = mapped(config(|c| c), 1, t0);
    let _a = send(&mut core, "a", "1", t0);
    core.flush_wait(9);
    let _later = send(&mut core, "b", "2", t0);
    core.handle_timeout(t0);
    let call = core.poll_call(t0).expect("a flush sends at once");
    assert!(deliver(&mut core).flushed.is_empty());
    let answer = all_put(&call, "shardId-000000000000");
    reply(&mut core, call, Ok(answer), t0 + MS);
    assert_eq!(deliver(&mut core).flushed, vec![9]);
}

#[test]
fn a_throttled_record_is_tried_again_after_its_backoff_and_counts_its_attempts() {
    let t0 = Instant::now();
    let mut core = mapped(config(|c| c.aggregation_enabled(false)), 1, t0);
    let mut a = send(&mut core, "a", "1", t0);
    core.flush();
    core.handle_timeout(t0);
    let call = core.poll_call(t0).unwrap();
    let answer = failed(&call, "ProvisionedThroughputExceededException");
    reply(&mut core, call, Ok(answer), t0 + MS);
    assert!(outcome(&mut a).is_none());
    let again = core.poll_timeout(t0 + MS).expect("a retry is scheduled");
    assert!(
        again > t0 + MS && again <= t0 + 120 * MS,
        "{:?}",
        again - t0
    );
    core.handle_timeout(again);
    let call = core.poll_call(again).expect("tried again");
    let answer = all_put(&call, "shardId-000000000000");
    reply(&mut core, call, Ok(answer), again);
    deliver(&mut core);
    let receipt = outcome(&mut a).unwrap().unwrap();
    assert_eq!(receipt.attempts.count(), 2);
}

#[test]
fn an_error_that_cannot_heal_fails_the_records_at_once() {
    let t0 = Instant::now();
    let mut core = mapped(config(|c| c), 1, t0);
    let mut a = send(&mut core, "a", "1", t0);
    core.flush();
    core.handle_timeout(t0);
    let call = core.poll_call(t0).unwrap();
    let denied = SinkError::new("PutRecords", "AccessDeniedException", "not allowed");
    reply(&mut core, call, Err(denied), t0 + MS);
    deliver(&mut core);
    let e = outcome(&mut a).unwrap().unwrap_err();
    assert!(
        matches!(e.kind, PutErrorKind::Rejected { .. }),
        "{:?}",
        e.kind
    );
    assert_eq!(core.held(), (0, 0));
    assert!(
        core.poll_timeout(t0 + MS)
            .is_none_or(|t| t > t0 + Duration::from_secs(10))
    );
}

#[test]
fn at_most_max_connections_calls_are_in_flight() {
    let t0 = Instant::now();
    let cfg = config(|c| {
        c.max_connections(2)
            .aggregation_enabled(false)
            .collection_max_count(1)
    });
    let mut core = mapped(cfg, 1, t0);
    let _f: Vec<_> = (0..5)
        .map(|i| send(&mut core, "a", &i.to_string(), t0))
        .collect();
    core.flush();
    core.handle_timeout(t0);
    let calls: Vec<Call> = std::iter::from_fn(|| core.poll_call(t0)).collect();
    assert_eq!(calls.len(), 2);
    let first = calls.into_iter().next().unwrap();
    let answer = all_put(&first, "shardId-000000000000");
    reply(&mut core, first, Ok(answer), t0);
    assert!(core.poll_call(t0).is_some(), "an answer frees a connection");
}

#[test]
fn an_aggregate_put_on_an_unexpected_shard_waits_for_a_listing_and_is_sent_again_if_it_straddles() {
    let t0 = Instant::now();
    let mut core = mapped(config(|c| c), 1, t0);
    // Keys on both halves of the hash space, so the aggregate straddles either half.
    let mut futures: Vec<_> = (0..20)
        .map(|i| send(&mut core, &format!("k{i}"), &i.to_string(), t0))
        .collect();
    core.flush();
    core.handle_timeout(t0);
    let call = core.poll_call(t0).unwrap();
    assert_eq!(call.entries.len(), 1);
    // The stream was split meanwhile: Kinesis put the aggregate on child shard 1.
    let answer = all_put(&call, "shardId-000000000001");
    reply(&mut core, call, Ok(answer), t0 + MS);
    deliver(&mut core);
    assert!(
        futures.iter_mut().all(|f| outcome(f).is_none()),
        "unverified"
    );
    core.handle_timeout(t0 + MS);
    let listing = core.poll_listing().expect("a refresh is asked for");
    let mut split = shards(2);
    split[0].shard_id = "shardId-000000000001".into();
    split[1].shard_id = "shardId-000000000002".into();
    let listed = Listed {
        shards: Ok(split),
        record_limit: Some(Ok(None)),
    };
    core.handle_listing(&listing, listed, t0 + 2 * MS);
    core.handle_timeout(t0 + 2 * MS);
    let calls: Vec<Call> = std::iter::from_fn(|| core.poll_call(t0 + 2 * MS)).collect();
    let entries: usize = calls.iter().map(|c| c.entries.len()).sum();
    assert_eq!(entries, 2, "packed again, one aggregate per new shard");
    assert!(futures.iter_mut().all(|f| outcome(f).is_none()));
}

#[test]
fn with_per_key_ordering_a_shard_carries_one_kinesis_record_at_a_time() {
    let t0 = Instant::now();
    let cfg = config(|c| c.per_key_ordering(true).aggregation_enabled(false));
    let mut core = mapped(cfg, 1, t0);
    let _f: Vec<_> = (0..3)
        .map(|i| send(&mut core, "a", &i.to_string(), t0))
        .collect();
    core.flush();
    core.handle_timeout(t0);
    let call = core.poll_call(t0).unwrap();
    assert_eq!(
        call.entries.len(),
        1,
        "PutRecords does not order its entries"
    );
    assert!(core.poll_call(t0).is_none(), "the shard is busy");
    let first = call.entries[0].data.clone();
    let answer = failed(&call, "ProvisionedThroughputExceededException");
    reply(&mut core, call, Ok(answer), t0 + MS);
    core.handle_timeout(t0 + MS);
    assert!(
        core.poll_call(t0 + MS).is_none(),
        "busy until its retry goes"
    );
    let at = core.poll_timeout(t0 + MS).unwrap();
    core.handle_timeout(at);
    let again = core.poll_call(at).unwrap();
    assert_eq!(&*again.entries[0].data, &first[..], "the same record first");
}

#[test]
fn records_queued_behind_a_busy_shard_expire_at_their_ttl() {
    // Found by the simulation (seed 65): with per-key ordering, records queued behind their
    // busy shard waited past RecordTtl, and shutdown took 22 s for a RecordTtl of 3.3 s.
    let t0 = Instant::now();
    let cfg = config(|c| c.per_key_ordering(true).aggregation_enabled(false));
    let mut core = mapped(cfg, 1, t0);
    let mut f: Vec<_> = (0..3)
        .map(|i| send(&mut core, "a", &i.to_string(), t0))
        .collect();
    core.close();
    core.handle_timeout(t0);
    let call = core.poll_call(t0).unwrap();
    // Its answer does not come before the TTL of the records behind it, which wake the core
    // then (if nothing else does first).
    let ttl = Duration::from_secs(2);
    let mut now = t0;
    while let Some(at) = core.poll_timeout(now).filter(|&at| at <= t0 + ttl) {
        now = at;
        core.handle_timeout(now);
        assert!(core.poll_call(now).is_none(), "the shard is busy");
    }
    assert_eq!(now, t0 + ttl);
    deliver(&mut core);
    for later in &mut f[1..] {
        let e = outcome(later).expect("expired").unwrap_err();
        assert!(
            matches!(e.kind, PutErrorKind::Expired { .. }),
            "{:?}",
            e.kind
        );
    }
    assert!(
        outcome(&mut f[0]).is_none(),
        "in flight: its answer decides"
    );
    let answer = all_put(&call, "shardId-000000000000");
    reply(&mut core, call, Ok(answer), t0 + ttl);
    deliver(&mut core);
    assert!(outcome(&mut f[0]).unwrap().is_ok());
    assert!(core.is_finished());
}

#[test]
fn a_missing_stream_drops_its_map_and_records_wait_for_a_listing_of_it_as_it_is_now() {
    let t0 = Instant::now();
    let mut core = mapped(config(|c| c), 2, t0);
    let _a = send(&mut core, "a", "1", t0);
    core.flush();
    core.handle_timeout(t0);
    let call = core.poll_call(t0).unwrap();
    let missing = SinkError::new("PutRecords", "ResourceNotFoundException", "no stream");
    reply(&mut core, call, Err(missing), t0 + MS);
    let _b = send(&mut core, "b", "2", t0 + 2 * MS);
    core.flush();
    core.handle_timeout(t0 + 2 * MS);
    assert!(core.poll_call(t0 + 2 * MS).is_none(), "no map: it waits");
    assert!(core.poll_listing().is_some(), "a listing is asked for");
}

#[test]
fn a_listing_asked_for_before_the_stream_was_found_missing_is_not_used() {
    // Found by the simulation (seed 665590): such a listing may describe the stream as it was
    // before it was deleted and created again.
    let t0 = Instant::now();
    let mut core = mapped(config(|c| c), 1, t0);
    let _a = send(&mut core, "a", "1", t0);
    core.flush();
    core.refresh("s", t0);
    core.handle_timeout(t0);
    let listing = core.poll_listing().expect("the refresh");
    let call = core.poll_call(t0).unwrap();
    let missing = SinkError::new("PutRecords", "ResourceNotFoundException", "no stream");
    reply(&mut core, call, Err(missing), t0 + MS);
    let old = Listed {
        shards: Ok(shards(1)),
        record_limit: Some(Ok(None)),
    };
    core.handle_listing(&listing, old, t0 + 2 * MS);
    let _b = send(&mut core, "b", "2", t0 + 2 * MS);
    core.flush();
    core.handle_timeout(t0 + 2 * MS);
    assert!(
        core.poll_call(t0 + 2 * MS).is_none(),
        "no map was installed"
    );
    assert!(
        core.poll_listing().is_some(),
        "another listing is asked for at once"
    );
}

#[test]
fn an_aggregate_sent_before_the_stream_was_found_missing_is_verified_before_it_resolves() {
    // Found by the simulation (seed 3556678): it may have reached the stream created again,
    // under a shard id it expected but another range.
    let t0 = Instant::now();
    let mut core = mapped(config(|c| c), 1, t0);
    let mut first: Vec<_> = (0..10)
        .map(|i| send(&mut core, &format!("k{i}"), &i.to_string(), t0))
        .collect();
    core.flush();
    core.handle_timeout(t0);
    let a = core.poll_call(t0).unwrap();
    let _later = send(&mut core, "z", "z", t0);
    core.flush();
    core.handle_timeout(t0);
    let b = core.poll_call(t0).unwrap();
    let missing = SinkError::new("PutRecords", "ResourceNotFoundException", "no stream");
    reply(&mut core, b, Err(missing), t0 + MS);
    let answer = all_put(&a, "shardId-000000000000");
    reply(&mut core, a, Ok(answer), t0 + 2 * MS);
    deliver(&mut core);
    assert!(
        first.iter_mut().all(|f| outcome(f).is_none()),
        "not before a listing"
    );
    core.handle_timeout(t0 + 2 * MS);
    let listing = core.poll_listing().expect("a listing is asked for");
    let now = Listed {
        shards: Ok(shards(1)),
        record_limit: Some(Ok(None)),
    };
    core.handle_listing(&listing, now, t0 + 3 * MS);
    deliver(&mut core);
    assert!(
        first
            .iter_mut()
            .all(|f| outcome(f).is_some_and(|o| o.is_ok())),
        "the shard's range holds them all: put"
    );
}

/// A core whose stream "s" (one shard) reports records up to `record_limit` bytes.
fn mapped_with_limit(config: Config, record_limit: Option<usize>, now: Instant) -> Core {
    let mut core = Core::new(config, fastrand::Rng::with_seed(7), now);
    core.add_stream(0, Arc::from("s"), now);
    core.handle_timeout(now);
    let listing = core.poll_listing().expect("a first listing");
    let listed = Listed {
        shards: Ok(shards(1)),
        record_limit: Some(Ok(record_limit)),
    };
    core.handle_listing(&listing, listed, now);
    core
}

/// The calls the core makes for `records` records of `size` bytes sent at once and flushed,
/// each answered at once: their entries' data sizes.
fn calls_for(core: &mut Core, records: usize, size: usize, now: Instant) -> Vec<Vec<usize>> {
    for i in 0..records {
        let record = UserRecord::new(format!("k{i}"), vec![b'x'; size]).expect("valid");
        let (pending, _future) = Pending::new(record, Arc::from("s"));
        core.handle_records(0, [pending], now);
    }
    core.flush();
    let mut calls = Vec::new();
    for _ in 0..100 {
        core.handle_timeout(now);
        let Some(call) = core.poll_call(now) else {
            break;
        };
        calls.push(call.entries.iter().map(|e| e.data.len()).collect());
        let answer = all_put(&call, "shardId-000000000000");
        reply(core, call, Ok(answer), now);
    }
    calls
}

#[test]
fn calls_go_up_to_10_mib_only_to_a_stream_of_large_records() {
    let t0 = Instant::now();
    let ten = |c: ConfigBuilder| {
        c.collection_max_size(10 << 20)
            .rate_limit(1_000_000)
            .aggregation_max_size(51_200)
    };
    // A stream that takes 10 MiB records is on the service that takes 10 MiB requests: three
    // 3 MiB records go in one call.
    let mut large = mapped_with_limit(config(ten), Some(10 << 20), t0);
    let calls = calls_for(&mut large, 3, 3 << 20, t0);
    assert_eq!(calls, vec![vec![3 << 20; 3]]);
    // A stream of 1 MiB records is not known to: calls stay within 5 MiB, whatever
    // CollectionMaxSize says.
    let mut plain = mapped_with_limit(config(ten), None, t0);
    let calls = calls_for(&mut plain, 12, 1000 * 1024, t0);
    assert!(calls.len() >= 3, "{calls:?}");
    for call in &calls {
        let bytes: usize = call.iter().sum::<usize>() + 3 * call.len();
        assert!(bytes <= 5 << 20, "a call of {bytes} bytes");
    }
    assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), 12);
    // The default CollectionMaxSize (5 MiB, the KPL's) keeps large records to one call each
    // when two do not fit.
    let mut default = mapped_with_limit(config(|c| c.rate_limit(1_000_000)), Some(10 << 20), t0);
    let calls = calls_for(&mut default, 3, 3 << 20, t0);
    assert_eq!(calls, vec![vec![3 << 20]; 3]);
}
