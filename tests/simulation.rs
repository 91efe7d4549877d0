//! The deterministic simulation of the engine's core (FoundationDB's simulation and
//! TigerBeetle's VOPR are the models): a seeded simulator drives the sans-I/O core exactly as
//! the driver does (`src/engine/driver.rs`), on simulated time, against a model of Kinesis and
//! a model of callers, and checks the invariants that span the engine's stages after each
//! scenario. Nothing in a scenario reads a clock or draws from an unseeded source: a seed
//! replays exactly.
//!
//! **Kinesis** is the in-memory one (`MemorySink`, driven synchronously: its calls complete on
//! their first poll), with what the simulator adds around it:
//! - per-entry throttling at a random share whatever our rate (other producers share the
//!   stream), and each shard's own limits, 1,000 records and 1 MiB a second (counted in
//!   one-second windows of simulated time, as `kinesis-facts.md` gives them);
//! - whole calls failing (`InternalFailure`), answers that never come (the records stored
//!   first: the driver's time limit, RequestTimeout plus its grace, then answers the call as
//!   timed out), latency both ways, calls finishing out of order;
//! - ListShards slow (up to 3 s) or failing (`LimitExceededException`);
//! - splits and merges at random points (`harness::reshard_at_random`), and the stream deleted
//!   and created again with other shards under the same ids, staying missing a while.
//!
//! **Callers** send one record at a time, or batches (`send_all`), waiting for room or refused
//! when the buffer is full; flush, and flush and wait; ask for a refresh; drop futures
//! (cancellation: the core must resolve them all the same); and shut down at the end.
//! Configurations vary: aggregation on or off, per-key ordering on or off, RecordMaxBufferedTime,
//! RecordTtl, the buffer's size, MaxConnections, CollectionMaxCount, CollectionMaxSize (up to
//! 10 MiB), and in some scenarios records of up to 128 KiB. Half the scenarios run two to four
//! engine cores (`SimCore::with_cores`), each given the records of its part of the hash key
//! space and its share of MaxConnections, as the producer runs them; the invariants hold over
//! all of them together (a shard whose range crosses a cut is written by two cores, and per-key
//! order still holds through resharding because a key never changes core). The seeds in
//! `FOUND` run on one core, as found, and on three.
//!
//! **Invariants**, checked at every step or after each scenario:
//! 1. every future resolves exactly once: each is ready at the end, none as `Stopped` (the core
//!    never drops a record), and the records the ledger resolved number exactly those taken in;
//! 2. every record `Ok` on the stream as it is now is visible to a KCL reader of the model's
//!    stream at the shard, sequence and sub-sequence number its receipt names (the straddle
//!    rule: `harness::kcl_view`);
//! 3. with `PerKeyOrdering`, each key's records are in the order sent as that reader reads them
//!    (lineage order, the straddle rule: `harness::kcl_order_by_key`; each record at its first
//!    copy);
//! 4. the charged budget never exceeds `MaxBufferedRecords`/`MaxBufferedBytes`, the core's count
//!    of what it holds equals what the callers were charged less what the ledger gave back, at
//!    every step, and both return to 0;
//! 5. a flush-and-wait is done only once every record sent before it has resolved, and is done;
//! 6. shutdown finishes within RecordTtl plus the request timeout (and its grace) after it is
//!    asked for, without the core spinning (asking to be woken at the same instant without
//!    end);
//! 7. counts add up: records put plus records failed equal records sent;
//! 8. no PutRecords call is over the request's limits: 500 entries, and for these streams (1 MiB
//!    records) 5 MiB whatever CollectionMaxSize says, and CollectionMaxSize itself (a single
//!    record larger than it goes alone); the in-memory Kinesis refuses a larger call as Kinesis
//!    does.
//!
//! A failing seed prints itself and its draw; `KPL_SIM_SEED=n` replays it alone and
//! `KPL_SIM_TRACE=1` prints each step (`KPL_SIM_TRACE=2` also each wake-up: what is due next, what
//! the core holds). `KPL_SIM_SEEDS=n` runs n scenarios (the test command runs
//! 3,000), `KPL_SIM_FIRST=n` starts at seed n, and `KPL_SIM_THREADS` sets how many threads
//! share them (default: the machine's cores).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kinesis_producer::__private::core::{SimCall, SimCore, SimListing};
use kinesis_producer::sink::memory::MemorySink;
use kinesis_producer::sink::{EntryResult, Sink, SinkError};
use kinesis_producer::{BatchFuture, Config, PutErrorKind, RecordFuture, UserRecord};

mod common;
use common::harness::{check_receipts, reshard_at_random};
use common::sim_model::{Queue, ShardLimits, now_or_never};

const STREAM: &str = "s";
/// The driver's grace after RequestTimeout (`driver::TIMEOUT_GRACE`).
const GRACE: Duration = Duration::from_millis(250);

/// What one scenario drew, printed with a failure.
#[derive(Debug)]
struct Draw {
    shards: usize,
    aggregation: bool,
    ordered: bool,
    linger_ms: u64,
    ttl_ms: u64,
    timeout_ms: u64,
    buffer: usize,
    max_connections: usize,
    max_count: usize,
    throttle: u8,
    answer_loss: u8,
    call_failure: u8,
    records: usize,
    keys: usize,
    reshards: usize,
    recreate: bool,
    slow_listing: bool,
}

fn draw(rng: &mut fastrand::Rng) -> Draw {
    Draw {
        shards: rng.usize(1..=4),
        aggregation: rng.u8(..4) != 0,
        ordered: rng.bool(),
        linger_ms: rng.u64(1..=150),
        ttl_ms: rng.u64(1_000..=30_000),
        timeout_ms: rng.u64(100..=2_000),
        buffer: rng.usize(10..=600),
        max_connections: rng.usize(1..=8),
        max_count: rng.usize(1..=500),
        throttle: if rng.u8(..3) == 0 { 0 } else { rng.u8(..=60) },
        answer_loss: if rng.u8(..4) == 0 { rng.u8(1..=8) } else { 0 },
        call_failure: if rng.bool() { rng.u8(1..=10) } else { 0 },
        records: rng.usize(10..=250),
        keys: rng.usize(1..=30),
        reshards: rng.usize(0..=3),
        recreate: rng.u8(..8) == 0,
        slow_listing: rng.u8(..4) == 0,
    }
}

type Outcome = Result<kinesis_producer::Receipt, kinesis_producer::PutError>;

/// What a caller holds for the records it sent: their future, or once it was seen ready, its
/// outcome (a future is polled to completion once).
enum Held {
    One(usize, RecordFuture),
    Batch(usize, usize, BatchFuture),
    Done(usize, Vec<Outcome>),
    /// Dropped by its caller: only the ledger's count shows it resolved.
    Dropped,
}

impl Held {
    /// How many records it stands for.
    fn len(&self) -> usize {
        match self {
            Held::One(..) | Held::Dropped => 1,
            Held::Batch(_, len, _) => *len,
            Held::Done(_, o) => o.len(),
        }
    }

    /// Whether its records have resolved (their outcomes kept if so); dropped ones count as
    /// resolved (the ledger's count covers them).
    fn resolved(&mut self) -> bool {
        let done = match self {
            Held::One(i, f) => now_or_never(f).map(|o| Held::Done(*i, vec![o])),
            Held::Batch(first, _, f) => now_or_never(f).map(|o| Held::Done(*first, o)),
            Held::Done(..) | Held::Dropped => return true,
        };
        match done {
            Some(d) => {
                *self = d;
                true
            }
            None => false,
        }
    }

    /// The first record's index, for messages.
    fn first(&self) -> Option<usize> {
        match self {
            Held::One(i, _) | Held::Batch(i, _, _) | Held::Done(i, _) => Some(*i),
            Held::Dropped => None,
        }
    }
}

/// Something the model does at a time.
enum Event {
    /// A call reaches Kinesis.
    Arrive(SimCall),
    /// A listing reaches Kinesis; its answer takes the time given.
    ListArrive(SimListing, Duration),
    /// Its answer reaches the driver.
    Answer(u64, Result<Vec<EntryResult>, SinkError>),
    /// A listing's answer reaches the driver.
    Listed(
        SimListing,
        Result<Vec<kinesis_producer::shard_map::Shard>, SinkError>,
    ),
    /// The deleted stream is created again.
    Recreate(usize),
}

/// Whether `answer` says the stream does not exist.
fn told_missing<T>(answer: &Result<T, SinkError>) -> bool {
    matches!(answer, Err(e) if e.code == "ResourceNotFoundException")
}

/// Mixes `v` into the digest `d` (FNV-1a's step).
fn mix(d: &mut u64, v: u64) {
    *d = (*d ^ v).wrapping_mul(0x0100_0000_01b3);
}

/// Runs scenario `seed`; returns what broke, if anything, or a digest of every call the core
/// made and when (two runs of a seed give the same digest: it replays exactly).
/// Scenario `seed`, on `cores` engine cores (drawn when `None`: one in half the scenarios, else
/// two to four).
fn scenario(seed: u64, trace: bool, cores: Option<usize>) -> Result<u64, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let d = draw(&mut rng);
    let fail = |what: String| Err(format!("seed {seed}: {what}\n{d:?}"));
    let t0 = base();
    let ttl = Duration::from_millis(d.ttl_ms);
    let timeout = Duration::from_millis(d.timeout_ms);
    // Drawn from a generator of their own, so that every other draw (and every seed in FOUND)
    // stays what it was: CollectionMaxSize, and records of up to 128 KiB in some scenarios, so
    // that calls reach the request limit (at most 5 MiB for these 1 MiB-record streams,
    // whatever CollectionMaxSize says; checked at every call below).
    let mut sizes = fastrand::Rng::with_seed(seed ^ 0x5123);
    let collection_max_size = if sizes.u8(..4) == 0 {
        sizes.usize(52_224..=10 << 20)
    } else {
        5 << 20
    };
    let padding = if sizes.u8(..32) == 0 {
        sizes.usize(1..=128 << 10)
    } else {
        0
    };
    let call_limit = collection_max_size.min(5 << 20);
    let cores = cores.unwrap_or_else(|| if sizes.bool() { 1 } else { sizes.usize(2..=4) });
    if std::env::var_os("KPL_SIM_TRACE").is_some() {
        eprintln!(
            "CollectionMaxSize {collection_max_size}, records padded to {padding} bytes, {cores} engine cores"
        );
    }
    let config = Config::builder()
        .collection_max_size(collection_max_size as u64)
        .aggregation_enabled(d.aggregation)
        .aggregation_max_count(rng.u64(1..=50))
        .per_key_ordering(d.ordered)
        .record_max_buffered_time(Duration::from_millis(d.linger_ms))
        .record_ttl(ttl)
        .request_timeout(timeout)
        .max_connections(d.max_connections as u64)
        .collection_max_count(d.max_count as u64)
        .max_buffered_records(d.buffer as u64)
        .build()
        .map_err(|e| format!("seed {seed}: config: {e}"))?;
    let (max_records, max_bytes) = (d.buffer, config.max_buffered_bytes());
    let sink = MemorySink::new().with_stream(STREAM, d.shards);
    // The model's clock, for the per-shard limits (milliseconds since t0).
    // Each shard's limits, and throttling at a random share whatever our rate.
    let limits = ShardLimits::install(&sink, STREAM, d.throttle, seed ^ 0xfa17);
    let mut core = SimCore::with_cores(config, seed ^ 0xc0de, t0, cores);
    core.add_stream(0, STREAM, t0);
    let mut q: Queue<Event> = Queue::new();
    let mut now = t0;
    let mut held: Vec<Held> = Vec::new();
    // The charge of what callers handed in, less what the ledger gave back.
    let (mut charged_records, mut charged_bytes) = (0usize, 0usize);
    let (mut sent, mut refused, mut resolved) = (0usize, 0usize, 0usize);
    // Flush waiters: token -> how many records had been sent before it.
    let mut flushes: HashMap<u64, usize> = HashMap::new();
    let mut next_token = 0u64;
    let mut n = 0usize; // records generated so far
    let events: Vec<usize> = (0..d.reshards).map(|_| rng.usize(..d.records)).collect();
    let recreate_at = d.recreate.then(|| rng.usize(..d.records));
    let mut deleted = false;
    // The core was told the stream is missing: an answer saying so reached it (one that was
    // lost, or a call failed for another reason, tells it nothing).
    // Per engine core: each core learns that the stream is missing from its own answers only.
    let mut met_missing = vec![false; core.cores()];
    let mut call_core: HashMap<u64, usize> = HashMap::new();
    let mut next_action = t0;
    let mut closed_at: Option<Instant> = None;
    let mut waiting: Option<Vec<UserRecord>> = None; // a send_wait waiting for room
    let mut same_instant = 0u32;
    let mut digest = seed;
    let mut last_now = now;
    loop {
        // 1. The callers act when due.
        while closed_at.is_none() && now >= next_action {
            if let Some(records) = waiting.take() {
                let bytes: usize = records.iter().map(SimCore::charge).sum();
                if charged_records + records.len() <= max_records
                    && charged_bytes + bytes <= max_bytes
                {
                    charged_records += records.len();
                    charged_bytes += bytes;
                    sent += records.len();
                    let first = n - records.len();
                    let (entries, f) = SimCore::batch(records, STREAM);
                    let len = entries.len();
                    core.handle_records(0, entries, now);
                    held.push(Held::Batch(first, len, f));
                } else {
                    waiting = Some(records);
                    next_action = now + Duration::from_millis(rng.u64(1..=20));
                    break;
                }
            }
            if n >= d.records {
                closed_at = Some(now);
                if trace {
                    eprintln!("{:?} close", now - t0);
                }
                core.close();
                break;
            }
            // At most half the buffer: a batch waits for room for all of it.
            let batch = rng.usize(1..=20).min(d.records - n).min(max_records / 2);
            let records: Vec<UserRecord> = (n..n + batch)
                .map(|i| {
                    // Zeros in front keep the data a number (the order check reads it).
                    let digits = i.to_string();
                    let data = "0".repeat(padding.saturating_sub(digits.len())) + &digits;
                    UserRecord::new(format!("key-{}", i % d.keys), data).unwrap()
                })
                .collect();
            let range = n..n + batch;
            n += batch;
            match rng.u8(..4) {
                // send: one at a time, refused when the buffer is full.
                0 | 1 => {
                    let drop_some = rng.u8(..8) == 0;
                    let mut taken = Vec::new();
                    for (k, r) in range.clone().zip(records) {
                        let bytes = SimCore::charge(&r);
                        if charged_records + 1 > max_records || charged_bytes + bytes > max_bytes {
                            refused += 1;
                            continue;
                        }
                        charged_records += 1;
                        charged_bytes += bytes;
                        sent += 1;
                        let (entry, f) = SimCore::record(r, STREAM);
                        taken.push(entry);
                        held.push(if drop_some && rng.bool() {
                            drop(f);
                            Held::Dropped
                        } else {
                            Held::One(k, f)
                        });
                    }
                    if !taken.is_empty() {
                        core.handle_records(0, taken, now);
                    }
                }
                // send_all_wait: the batch waits for room for all of it.
                _ => waiting = Some(records),
            }
            for _ in events.iter().filter(|&&e| range.contains(&e)) {
                if trace {
                    eprintln!("{:?} reshard (records {range:?})", now - t0);
                }
                if !deleted {
                    // Now and then a scaling: several splits and merges at once.
                    let times = if rng.u8(..10) == 0 {
                        rng.usize(2..=4)
                    } else {
                        1
                    };
                    for _ in 0..times {
                        reshard_at_random(&sink, STREAM, &mut rng);
                    }
                    limits.refresh(&sink);
                }
            }
            if !deleted && recreate_at.is_some_and(|r| range.contains(&r)) {
                // Deleted, and created again with other shards after longer than a record
                // lingers (`docs/delivery.md`: a recreation entirely between two calls is seen
                // only at the next listing).
                sink.delete_stream(STREAM);
                deleted = true;
                met_missing.fill(false);
                if trace {
                    eprintln!("{:?} stream deleted (records {range:?})", now - t0);
                }
                let gone = d.linger_ms + 1_000 + rng.u64(0..=2_000);
                q.push(
                    now + Duration::from_millis(gone),
                    Event::Recreate(rng.usize(1..=4)),
                );
            }
            if rng.u8(..50) == 0 {
                sink.fail_next_list_shards(
                    rng.usize(1..=3),
                    "LimitExceededException",
                    "Rate exceeded",
                );
            }
            match rng.u8(..40) {
                0 => core.flush(),
                1 => {
                    flushes.insert(next_token, sent);
                    core.flush_wait(next_token);
                    next_token += 1;
                }
                2 => core.refresh(STREAM, now),
                _ => {}
            }
            if waiting.is_none() {
                next_action = now + Duration::from_millis(rng.u64(0..=30));
            }
        }
        // 2. The driver's turn: the core acts on the time, its calls and listings go out, the
        //    ledger's outcomes are delivered.
        core.handle_timeout(now);
        while let Some(listing) = core.poll_listing() {
            let latency = if d.slow_listing {
                rng.u64(0..=3_000)
            } else {
                rng.u64(1..=30)
            };
            // Kinesis reads the stream somewhere between the request and the answer.
            let up = rng.u64(0..=latency);
            let down = Duration::from_millis(latency - up);
            q.push(
                now + Duration::from_millis(up),
                Event::ListArrive(listing, down),
            );
        }
        while let Some(call) = core.poll_call(now) {
            call_core.insert(call.id, call.core);
            if trace {
                eprintln!(
                    "{:?} call {} of {} entries",
                    now - t0,
                    call.id,
                    call.entries.len()
                );
            }
            // No call over the request limit, or over CollectionMaxSize (a record larger
            // than CollectionMaxSize goes alone).
            let bytes: usize = call
                .entries
                .iter()
                .map(|e| e.data.len() + e.partition_key.len())
                .sum();
            if call.entries.len() > 500 || (bytes > call_limit && call.entries.len() > 1) {
                return fail(format!(
                    "a call of {} entries and {bytes} bytes; the limit is {call_limit}",
                    call.entries.len()
                ));
            }
            mix(&mut digest, (now - t0).as_nanos() as u64);
            mix(&mut digest, call.entries.len() as u64);
            for e in &call.entries {
                mix(&mut digest, e.data.len() as u64);
            }
            let up = Duration::from_millis(rng.u64(0..=20));
            q.push(now + up, Event::Arrive(call));
        }
        let delivered = core.deliver();
        resolved += delivered.resolved;
        charged_records -= delivered.released_records;
        charged_bytes -= delivered.released_bytes;
        if core.held() != (charged_records, charged_bytes) {
            return fail(format!(
                "the core holds {:?}, the callers were charged ({charged_records}, {charged_bytes})",
                core.held()
            ));
        }
        for token in delivered.flushed {
            let Some(before) = flushes.remove(&token) else {
                return fail(format!("flush {token} done twice or never asked"));
            };
            let mut counted = 0;
            for h in &mut held {
                if counted >= before {
                    break;
                }
                counted += h.len();
                if !h.resolved() {
                    return fail(format!(
                        "a flush returned before the records from {:?} resolved",
                        h.first()
                    ));
                }
            }
        }
        if let Some(at) = closed_at
            && core.is_finished()
        {
            if now - at > ttl + timeout + GRACE + Duration::from_millis(50) {
                return fail(format!("shutdown took {:?}", now - at));
            }
            break;
        }
        // 3. Time moves on to what comes first: an event, the core's timeout, the callers.
        let next = [
            q.next_time(),
            core.poll_timeout(now),
            closed_at.is_none().then_some(next_action),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return fail(format!(
                "nothing is due, yet the core is not finished ({:?} held, {} calls)",
                core.held(),
                core.calls_in_flight()
            ));
        };
        if trace && std::env::var("KPL_SIM_TRACE").as_deref() == Ok("2") {
            eprintln!(
                "{:?} next {:?} (event {:?}, core {:?}), held {:?}, {} calls",
                now - t0,
                next - t0,
                q.next_time().map(|t| t - t0),
                core.poll_timeout(now).map(|t| t - t0),
                core.held(),
                core.calls_in_flight()
            );
        }
        now = now.max(next);
        if now == last_now {
            same_instant += 1;
            if same_instant > 10_000 {
                return fail(format!("the core spins at {:?}", now - t0));
            }
        } else {
            same_instant = 0;
            last_now = now;
        }
        if now - t0 > Duration::from_secs(3_600) {
            return fail("an hour of simulated time went by".into());
        }
        limits.set_time(now - t0);
        // 4. The model acts on what is due.
        while let Some(e) = q.pop_due(now) {
            match e {
                Event::ListArrive(listing, down) => {
                    let shards =
                        now_or_never(sink.list_shards(listing.stream())).expect("ready at once");
                    q.push(now + down, Event::Listed(listing, shards));
                }
                Event::Arrive(call) => {
                    if rng.u8(..100) < d.call_failure {
                        sink.fail_next_calls(
                            1,
                            "InternalFailure",
                            "We encountered an internal error.",
                        );
                    }
                    let answer =
                        now_or_never(sink.put_records(&call.stream, call.entries)).expect("ready");
                    if rng.u8(..100) < d.answer_loss {
                        // Stored, never answered: the driver's time limit answers.
                        let at = now + timeout + GRACE;
                        let e = SinkError::new("PutRecords", "RequestTimeout", "no answer");
                        q.push(at, Event::Answer(call.id, Err(e)));
                    } else {
                        let down = Duration::from_millis(rng.u64(0..=40));
                        q.push(now + down, Event::Answer(call.id, answer));
                    }
                }
                Event::Answer(id, answer) => {
                    if trace {
                        let what = match &answer {
                            Ok(r) => format!("{} results", r.len()),
                            Err(e) => e.code.clone(),
                        };
                        eprintln!("{:?} answer {id}: {what}", now - t0);
                    }
                    let by = call_core.remove(&id).expect("a call's core");
                    met_missing[by] |= deleted && told_missing(&answer);
                    core.handle_put_answer(id, answer, now);
                }
                Event::Listed(listing, shards) => {
                    if trace {
                        let what = match &shards {
                            Ok(s) => format!("{} shards", s.len()),
                            Err(e) => e.code.clone(),
                        };
                        eprintln!("{:?} listing: {what}", now - t0);
                    }
                    met_missing[listing.core()] |= deleted && told_missing(&shards);
                    let limit = shards.as_ref().ok().map(|_| Ok(None));
                    core.handle_listing(&listing, shards, limit, now);
                }
                // Not before an answer told every core the stream is missing: a recreation no
                // answer shows a core is not covered (`docs/delivery.md`), and is not what this
                // checks.
                // (The soak found this model counting a call that reached the missing stream
                // but whose answer was lost: seed 261809 and five others in 500,000.)
                Event::Recreate(shards) if !met_missing.iter().all(|m| *m) => {
                    q.push(now + Duration::from_millis(100), Event::Recreate(shards));
                }
                Event::Recreate(shards) => {
                    if trace {
                        eprintln!("{:?} stream created with {shards} shards", now - t0);
                    }
                    let _ = sink.clone().with_stream(STREAM, shards);
                    deleted = false;
                    limits.refresh(&sink);
                }
            }
        }
    }
    // Every future resolved, exactly once, none as stopped; counts add up.
    if resolved != sent {
        return fail(format!("{sent} records taken in, {resolved} resolved"));
    }
    if (charged_records, charged_bytes) != (0, 0) {
        return fail(format!(
            "({charged_records}, {charged_bytes}) still charged"
        ));
    }
    if !flushes.is_empty() {
        return fail(format!("{} flushes never done", flushes.len()));
    }
    let mut receipts = HashMap::new();
    let mut failed = 0usize;
    let dropped = held.iter().filter(|h| matches!(h, Held::Dropped)).count();
    for mut h in held {
        if !h.resolved() {
            return fail(format!("the records from {:?} never resolved", h.first()));
        }
        let Held::Done(first, outcomes) = h else {
            continue;
        };
        for (k, o) in outcomes.into_iter().enumerate() {
            let i = first + k;
            match o {
                Ok(r) => {
                    receipts.insert(i, r);
                }
                Err(e) if matches!(e.kind, PutErrorKind::Stopped) => {
                    return fail(format!("record {i} was dropped by the core (Stopped)"));
                }
                Err(_) => failed += 1,
            }
        }
    }
    if receipts.len() + failed + dropped != sent {
        return fail(format!(
            "{} put + {failed} failed + {dropped} dropped != {sent} sent ({refused} refused)",
            receipts.len()
        ));
    }
    if deleted {
        // The stream is gone, and every record put on it with it.
        return Ok(digest);
    }
    // Every Ok record on the stream as it is now is where its receipt says, for a KCL reader,
    // and with per-key ordering, in order.
    check_receipts(&sink, STREAM, &receipts, d.ordered)
        .map_err(|e| format!("seed {seed}: {e}\n{d:?}"))?;
    Ok(digest)
}

/// The instant scenarios start at: any will do (the core sees only differences), read once.
fn base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    #[allow(clippy::disallowed_methods)]
    *BASE.get_or_init(Instant::now)
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
}

#[test]
fn simulated_scenarios_keep_every_invariant() {
    let trace = std::env::var("KPL_SIM_TRACE").is_ok();
    let (first, count) = match env("KPL_SIM_SEED") {
        Some(one) => (one, 1),
        None => (
            env("KPL_SIM_FIRST").unwrap_or(0),
            env("KPL_SIM_SEEDS").unwrap_or(3_000),
        ),
    };
    let threads = env("KPL_SIM_THREADS")
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let next = AtomicU64::new(first);
    let done = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= first + count {
                        break;
                    }
                    if let Err(e) = scenario(seed, trace, None) {
                        eprintln!("{e}");
                        failures.lock().unwrap().push(seed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_unstable();
    eprintln!(
        "{} scenarios from seed {first}, {} failed: {failures:?}",
        done.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failing seeds (replay one with KPL_SIM_SEED=n): {failures:?}"
    );
}

#[test]
fn a_seed_replays_exactly() {
    for seed in 0..50 {
        let first = scenario(seed, false, None);
        assert_eq!(
            first,
            scenario(seed, false, None),
            "seed {seed} took another path"
        );
    }
}

/// Seeds that found a bug, kept so that it stays fixed (each also named where it was fixed).
const FOUND: &[(u64, &str)] = &[
    (
        65,
        "per-key ordering: records queued behind a busy shard did not expire at RecordTtl, and \
         shutdown took 22 s for a RecordTtl of 3.3 s (stream::expire_queued)",
    ),
    (
        6848,
        "per-key ordering: records of a call that failed after the stream was deleted waited \
         for ever to be routed again, and shutdown never finished (stream::expire_reroute, and \
         StreamState::needs_map asks for a listing for them)",
    ),
    (
        665590,
        "a ListShards read before the stream was deleted and answered after it was created again \
         (3 s later) was installed: aggregates packed for the old shards landed on new shards of \
         the same ids, and KCL consumers drop them (mapping::forget_map: listings asked for before \
         the stream was found missing are not used)",
    ),
    (
        3556678,
        "an aggregate in a call sent before the stream was found missing reached it after it \
         was created again, under a shard id it expected but a new range, and was reported put; \
         KCL consumers drop it (Core::handle_put_answer: such aggregates are checked against a \
         listing of the stream as it is now)",
    ),
    (
        8402965,
        "a record whose RecordTtl ended at the very moment it came out of its retry's wait was \
         queued behind a stale shard after the expiry check, with no wake-up for its TTL; \
         shutdown waited for the next listing, 0.3 s past RecordTtl + RequestTimeout \
         (wake::next_wake wakes for a queued TTL even when it has passed)",
    ),
    (
        32543,
        "per-key ordering: an in-order retry some of whose records expired kept its oldest \
         record's arrival as its own, so the wake-up for a TTL already past (the fix for seed \
         8402965) spun the core (resend::retry_in_order takes it from the records kept)",
    ),
];

#[test]
fn the_seeds_that_found_bugs_keep_every_invariant() {
    for (seed, what) in FOUND {
        // Found on one engine core: run as found, and on three.
        if let Err(e) = scenario(*seed, false, Some(1)).and(scenario(*seed, false, Some(3))) {
            panic!("{e}\nthis seed found: {what}");
        }
    }
}
