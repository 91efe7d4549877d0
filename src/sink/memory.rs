//! An in-memory Kinesis for deterministic tests: shards with hash ranges, sequence numbers, a
//! record of every request, and scripted faults (failed entries, failed calls, latency).
//!
//! Not a substitute for a real endpoint: the end-to-end tests use a real local Kinesis through
//! the AWS SDK. This is for faults a real endpoint cannot be made to produce on cue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use super::{EntryResult, PutEntry, Sink, SinkError};
use crate::hash_key::HashKey;
use crate::shard_map::{Shard, even_split};

/// A record as the in-memory Kinesis stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredRecord {
    /// The shard that took it.
    pub shard_id: String,
    /// Its sequence number.
    pub sequence_number: String,
    /// The partition key it was sent with.
    pub partition_key: String,
    /// The explicit hash key it was sent with.
    pub explicit_hash_key: Option<HashKey>,
    /// Its data.
    pub data: Bytes,
}

/// Decides the fate of one entry: `Some((code, message))` fails it.
pub type EntryFault = Box<dyn FnMut(&PutEntry) -> Option<(String, String)> + Send>;

struct MemShard {
    shard: Shard,
    next_sequence: u64,
    /// The shards it was split or merged from (the KCL reads them wholly before it).
    parents: Vec<String>,
}

#[derive(Default)]
struct State {
    streams: HashMap<String, Vec<MemShard>>,
    stored: HashMap<String, Vec<StoredRecord>>,
    requests: Vec<(String, Vec<PutEntry>)>,
    entry_fault: Option<EntryFault>,
    failing_calls: Vec<SinkError>,
    list_shards_calls: usize,
    in_flight: usize,
    max_in_flight: usize,
    /// ListShards takes this long instead of the call latency, when set.
    list_shards_latency: Option<Duration>,
    /// ListShards calls still to fail, in order.
    failing_list_shards: Vec<SinkError>,
    /// Each PutRecords call takes up to this much longer than the latency, drawn from `rng`:
    /// calls then finish in another order than they started.
    latency_spread: Duration,
    rng: Option<fastrand::Rng>,
    /// Keep nothing (benchmarks): assign sequence numbers, record no requests, store no data.
    discard: bool,
    /// How many times each stream was created: part of its sequence numbers, so that a record of
    /// a stream deleted and created again is told from one of the new stream.
    created: HashMap<String, u32>,
    /// The share of PutRecords calls whose answer never comes (the records are stored first),
    /// drawn from `loss_rng`.
    answer_loss: f64,
    loss_rng: Option<fastrand::Rng>,
}

/// An in-memory Kinesis. Cloning shares the same streams.
#[derive(Clone, Default)]
pub struct MemorySink {
    state: Arc<Mutex<State>>,
    latency: Arc<Mutex<Duration>>,
}

impl std::fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySink").finish_non_exhaustive()
    }
}

impl MemorySink {
    /// An empty Kinesis.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide other failures behind a poisoned lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a stream of `shards` evenly split shards.
    pub fn with_stream(self, stream: &str, shards: usize) -> Self {
        let ranges = even_split(shards);
        let shards = ranges
            .into_iter()
            .enumerate()
            .map(|(i, (start, end))| MemShard {
                shard: Shard {
                    shard_id: format!("shardId-{i:012}"),
                    start,
                    end,
                    closed: false,
                },
                next_sequence: 0,
                parents: Vec::new(),
            })
            .collect();
        let mut state = self.lock();
        *state.created.entry(stream.to_owned()).or_default() += 1;
        state.streams.insert(stream.to_owned(), shards);
        drop(state);
        self
    }

    /// How many times `stream` was created (1 for a stream never deleted): the first four digits
    /// of its sequence numbers.
    pub fn incarnation(&self, stream: &str) -> u32 {
        self.lock().created.get(stream).copied().unwrap_or(0)
    }

    /// Makes a share of PutRecords calls (from an RNG seeded with `seed`) store their records and
    /// then never answer, as a connection lost after the write: the caller's timeout must end
    /// the wait, and the records are in the stream though the caller cannot know.
    pub fn set_answer_loss(&self, share: f64, seed: u64) {
        let mut state = self.lock();
        state.answer_loss = share;
        state.loss_rng = Some(fastrand::Rng::with_seed(seed));
    }

    /// Deletes a stream, as DeleteStream does: its shards and records are gone, and calls for
    /// it fail with `ResourceNotFoundException` until [`with_stream`](Self::with_stream)
    /// creates it again (with the same shard ids, as Kinesis numbers a new stream's shards).
    pub fn delete_stream(&self, stream: &str) {
        let mut state = self.lock();
        state.streams.remove(stream);
        state.stored.remove(stream);
    }

    /// Keeps no requests and no records, only sequence numbers: for benchmarks, where storing
    /// everything would measure this sink instead of the producer.
    pub fn discarding(self) -> Self {
        self.lock().discard = true;
        self
    }

    /// Splits an open shard at `at` (the first hash key of the upper child), as SplitShard does:
    /// the parent closes, two new shards take its range. Returns the children's ids.
    pub fn split_shard(&self, stream: &str, shard_id: &str, at: HashKey) -> (String, String) {
        let mut state = self.lock();
        let shards = state
            .streams
            .get_mut(stream)
            .expect("a stream of this sink");
        let next = shards.len();
        let parent = shards
            .iter_mut()
            .find(|s| s.shard.shard_id == shard_id && !s.shard.closed)
            .expect("an open shard of this stream");
        assert!(
            parent.shard.start < at && at <= parent.shard.end,
            "split inside the range"
        );
        parent.shard.closed = true;
        let (start, end) = (parent.shard.start, parent.shard.end);
        let parents = vec![parent.shard.shard_id.clone()];
        let lower = format!("shardId-{next:012}");
        let upper = format!("shardId-{:012}", next + 1);
        for (id, start, end) in [
            (lower.clone(), start, HashKey(at.0 - 1)),
            (upper.clone(), at, end),
        ] {
            shards.push(MemShard {
                shard: Shard {
                    shard_id: id,
                    start,
                    end,
                    closed: false,
                },
                next_sequence: 0,
                parents: parents.clone(),
            });
        }
        (lower, upper)
    }

    /// Merges two open shards with adjacent ranges, as MergeShards does: both close, one new
    /// shard takes their joint range. Returns the child's id.
    pub fn merge_shards(&self, stream: &str, shard_id: &str, adjacent_id: &str) -> String {
        let mut state = self.lock();
        let shards = state
            .streams
            .get_mut(stream)
            .expect("a stream of this sink");
        let next = shards.len();
        let open = |id: &str| {
            shards
                .iter()
                .position(|s| s.shard.shard_id == id && !s.shard.closed)
                .expect("an open shard of this stream")
        };
        let (a, b) = (open(shard_id), open(adjacent_id));
        let (low, high) = if shards[a].shard.start < shards[b].shard.start {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(
            shards[low].shard.end.0.checked_add(1),
            Some(shards[high].shard.start.0),
            "adjacent ranges"
        );
        shards[a].shard.closed = true;
        shards[b].shard.closed = true;
        let child = format!("shardId-{next:012}");
        let shard = Shard {
            shard_id: child.clone(),
            start: shards[low].shard.start,
            end: shards[high].shard.end,
            closed: false,
        };
        let parents = vec![shard_id.to_owned(), adjacent_id.to_owned()];
        shards.push(MemShard {
            shard,
            next_sequence: 0,
            parents,
        });
        child
    }

    /// The parents of every shard of `stream` that has any (split or merged from them).
    pub fn parents(&self, stream: &str) -> HashMap<String, Vec<String>> {
        self.lock()
            .streams
            .get(stream)
            .map(|s| {
                s.iter()
                    .filter(|m| !m.parents.is_empty())
                    .map(|m| (m.shard.shard_id.clone(), m.parents.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every shard's id and range, closed ones included.
    pub fn shards(&self, stream: &str) -> Vec<Shard> {
        self.lock()
            .streams
            .get(stream)
            .map(|s| s.iter().map(|m| m.shard.clone()).collect())
            .unwrap_or_default()
    }

    /// Scripts the fate of each entry from now on (`None` puts it).
    pub fn set_entry_fault(
        &self,
        fault: impl FnMut(&PutEntry) -> Option<(String, String)> + Send + 'static,
    ) {
        self.lock().entry_fault = Some(Box::new(fault));
    }

    /// Puts every entry from now on.
    pub fn clear_entry_fault(&self) {
        self.lock().entry_fault = None;
    }

    /// Fails the next `n` PutRecords calls as a whole with `code`.
    pub fn fail_next_calls(&self, n: usize, code: &str, message: &str) {
        let err = SinkError::new("PutRecords", code, message);
        self.lock()
            .failing_calls
            .extend(std::iter::repeat_n(err, n));
    }

    /// Makes every call take `latency` (tokio time: a paused clock makes it instant).
    pub fn set_latency(&self, latency: Duration) {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = latency;
    }

    /// Makes ListShards take `latency` (instead of the call latency): a slow first shard map.
    pub fn set_list_shards_latency(&self, latency: Duration) {
        self.lock().list_shards_latency = Some(latency);
    }

    /// Fails the next `n` ListShards calls with `code` and `message` (e.g. a throttled
    /// `LimitExceededException` at a fleet's cold start).
    pub fn fail_next_list_shards(&self, n: usize, code: &str, message: &str) {
        let err = SinkError::new("ListShards", code, message);
        self.lock()
            .failing_list_shards
            .extend(std::iter::repeat_n(err, n));
    }

    /// Makes each PutRecords call take a further random time of up to `spread` (from an RNG
    /// seeded with `seed`), so that calls finish in another order than they started.
    pub fn set_latency_spread(&self, spread: Duration, seed: u64) {
        let mut state = self.lock();
        state.latency_spread = spread;
        state.rng = Some(fastrand::Rng::with_seed(seed));
    }

    /// Every PutRecords request received, in order: (stream, entries).
    pub fn requests(&self) -> Vec<(String, Vec<PutEntry>)> {
        self.lock().requests.clone()
    }

    /// How many ListShards calls were made.
    pub fn list_shards_calls(&self) -> usize {
        self.lock().list_shards_calls
    }

    /// Every record stored in `stream`, in the order stored.
    pub fn records(&self, stream: &str) -> Vec<StoredRecord> {
        self.lock().stored.get(stream).cloned().unwrap_or_default()
    }

    /// The most PutRecords calls that were ever in progress at once.
    pub fn max_concurrent_calls(&self) -> usize {
        self.lock().max_in_flight
    }

    /// One PutRecords call's effect on the streams, under the lock: its results, and whether
    /// its answer is to be lost.
    fn store(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> (Result<Vec<EntryResult>, SinkError>, bool) {
        let mut guard = self.lock();
        guard.in_flight -= 1;
        let state = &mut *guard;
        if !state.discard {
            state.requests.push((stream.to_owned(), entries.clone()));
        }
        if !state.failing_calls.is_empty() {
            return (Err(state.failing_calls.remove(0)), false);
        }
        let Some(shards) = state.streams.get_mut(stream) else {
            let missing = SinkError::new(
                "PutRecords",
                "ResourceNotFoundException",
                format!("Stream {stream} under account 000000000000 not found."),
            );
            return (Err(missing), false);
        };
        // Kinesis's limits on a request, as it checks them before any record: at most 500
        // entries and, for these streams (1 MiB records), 5 MiB of data and partition keys.
        let bytes: usize = entries
            .iter()
            .map(|e| e.data.len() + e.partition_key.len())
            .sum();
        if entries.len() > crate::config::MAX_PUT_RECORDS_ENTRIES
            || bytes > crate::config::PUT_RECORDS_SIZE_WITHOUT_LARGE_RECORDS
        {
            let refused = SinkError::new(
                "PutRecords",
                "ValidationException",
                format!(
                    "a request of {} records and {bytes} bytes is over the limit of 500 records and {} bytes",
                    entries.len(),
                    crate::config::PUT_RECORDS_SIZE_WITHOUT_LARGE_RECORDS
                ),
            );
            return (Err(refused), false);
        }
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some((code, message)) = state.entry_fault.as_mut().and_then(|f| f(&entry)) {
                results.push(EntryResult::Failed { code, message });
                continue;
            }
            let key = entry
                .explicit_hash_key
                .unwrap_or_else(|| HashKey::from_partition_key(&entry.partition_key));
            let (i, shard) = shards
                .iter_mut()
                .enumerate()
                .find(|(_, s)| !s.shard.closed && s.shard.start <= key && key <= s.shard.end)
                .expect("open shards cover the hash key space");
            shard.next_sequence += 1;
            let incarnation = state.created.get(stream).copied().unwrap_or(1);
            let sequence_number = format!("{:04}{:04}{:024}", incarnation, i, shard.next_sequence);
            let shard_id = shard.shard.shard_id.clone();
            state
                .stored
                .entry(stream.to_owned())
                .or_default()
                .push(StoredRecord {
                    shard_id: shard_id.clone(),
                    sequence_number: sequence_number.clone(),
                    partition_key: entry.partition_key,
                    explicit_hash_key: entry.explicit_hash_key,
                    data: entry.data,
                });
            results.push(EntryResult::Put {
                shard_id,
                sequence_number,
            });
        }
        let loss = state.answer_loss;
        let lost = loss > 0.0 && state.loss_rng.as_mut().is_some_and(|r| r.f64() < loss);
        (Ok(results), lost)
    }

    async fn delay(&self) {
        let latency = *self.latency.lock().unwrap_or_else(|e| e.into_inner());
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
}

impl Sink for MemorySink {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<EntryResult>, SinkError> {
        {
            let mut state = self.lock();
            state.in_flight += 1;
            state.max_in_flight = state.max_in_flight.max(state.in_flight);
        }
        let extra = {
            let mut state = self.lock();
            let spread = state.latency_spread;
            match state.rng.as_mut() {
                Some(rng) if !spread.is_zero() => spread.mul_f64(rng.f64()),
                _ => Duration::ZERO,
            }
        };
        self.delay().await;
        if !extra.is_zero() {
            tokio::time::sleep(extra).await;
        }
        let (result, lost) = self.store(stream, entries);
        if lost {
            // Stored, and never answered.
            std::future::pending::<()>().await;
        }
        result
    }

    async fn list_shards(&self, stream: &str) -> Result<Vec<Shard>, SinkError> {
        let latency = self.lock().list_shards_latency;
        match latency {
            Some(latency) => tokio::time::sleep(latency).await,
            None => self.delay().await,
        }
        let mut state = self.lock();
        state.list_shards_calls += 1;
        if !state.failing_list_shards.is_empty() {
            return Err(state.failing_list_shards.remove(0));
        }
        match state.streams.get(stream) {
            Some(shards) => Ok(shards.iter().map(|s| s.shard.clone()).collect()),
            None => Err(SinkError::new(
                "ListShards",
                "ResourceNotFoundException",
                format!("Stream {stream} under account 000000000000 not found."),
            )),
        }
    }
}
