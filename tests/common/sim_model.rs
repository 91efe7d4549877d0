//! The model of Kinesis the deterministic simulation (`tests/simulation.rs`) drives the core
//! against, beside the in-memory sink: a time-ordered event queue, each shard's write limits,
//! and polling the sink's calls, which complete at once, without a runtime.

use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use kinesis_producer::HashKey;
use kinesis_producer::sink::memory::MemorySink;

/// A shard's write limits (`kinesis-facts.md`): records and bytes a second.
const SHARD_RECORDS: u32 = 1_000;
const SHARD_BYTES: usize = 1 << 20;

/// A time-ordered queue of events, ties in the order they were queued.
pub struct Queue<E> {
    heap: BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    events: HashMap<u64, E>,
    seq: u64,
}

impl<E> Queue<E> {
    pub fn new() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
        }
    }

    pub fn push(&mut self, at: Instant, e: E) {
        self.seq += 1;
        self.heap.push(std::cmp::Reverse((at, self.seq)));
        self.events.insert(self.seq, e);
    }

    pub fn next_time(&self) -> Option<Instant> {
        self.heap.peek().map(|r| r.0.0)
    }

    /// The next event due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<E> {
        if self.next_time()? > now {
            return None;
        }
        let std::cmp::Reverse((_, seq)) = self.heap.pop()?;
        self.events.remove(&seq)
    }
}

/// Polls a future once: the in-memory sink's calls, and resolved futures, are ready at once.
pub fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Each open shard's writes in the current one-second window of simulated time, applied in the
/// sink's entry fault (which sees each entry as Kinesis takes it): an entry over its shard's
/// 1,000 records or 1 MiB in the second is throttled, as is a random share of all entries
/// whatever the rate (other producers share the stream).
pub struct ShardLimits {
    stream: String,
    state: Arc<Mutex<Windows>>,
    /// Simulated milliseconds since the scenario started.
    clock: Arc<AtomicU64>,
}

struct Windows {
    /// The open shards' ranges, taken again after each resharding.
    open: Vec<(HashKey, HashKey)>,
    /// The window's second, and each open shard's (records, bytes) in it.
    second: u64,
    used: Vec<(u32, usize)>,
}

impl ShardLimits {
    /// Installs the limits on `sink`'s entries for `stream`, throttling `throttle` in 256 of all
    /// entries besides (drawn from `seed`).
    pub fn install(sink: &MemorySink, stream: &str, throttle: u8, seed: u64) -> ShardLimits {
        let limits = ShardLimits {
            stream: stream.to_owned(),
            state: Arc::new(Mutex::new(Windows {
                open: Vec::new(),
                second: 0,
                used: Vec::new(),
            })),
            clock: Arc::new(AtomicU64::new(0)),
        };
        limits.refresh(sink);
        let (clock, state) = (Arc::clone(&limits.clock), Arc::clone(&limits.state));
        let mut faults = fastrand::Rng::with_seed(seed);
        sink.set_entry_fault(move |e| {
            let throttled = || {
                Some((
                    "ProvisionedThroughputExceededException".to_owned(),
                    "Rate exceeded for shard".to_owned(),
                ))
            };
            if faults.u8(..=255) < throttle {
                return throttled();
            }
            let key = e
                .explicit_hash_key
                .unwrap_or_else(|| HashKey::from_partition_key(&e.partition_key));
            let mut w = state.lock().unwrap();
            let second = clock.load(Ordering::Relaxed) / 1_000;
            if second != w.second {
                w.second = second;
                w.used.iter_mut().for_each(|u| *u = (0, 0));
            }
            let k = w
                .open
                .iter()
                .position(|(s, end)| *s <= key && key <= *end)?;
            let size = e.data.len() + e.partition_key.len();
            let (n, b) = w.used[k];
            if n + 1 > SHARD_RECORDS || b + size > SHARD_BYTES {
                return throttled();
            }
            w.used[k] = (n + 1, b + size);
            None
        });
        limits
    }

    /// Takes the open shards again (after a resharding, or the stream created again).
    pub fn refresh(&self, sink: &MemorySink) {
        let mut w = self.state.lock().unwrap();
        w.open = sink
            .shards(&self.stream)
            .into_iter()
            .filter(|s| !s.closed)
            .map(|s| (s.start, s.end))
            .collect();
        w.used = vec![(0, 0); w.open.len()];
    }

    /// The simulated time since the scenario started.
    pub fn set_time(&self, since_start: Duration) {
        self.clock
            .store(since_start.as_millis() as u64, Ordering::Relaxed);
    }
}
