//! A sink that counts every PutRecords call and entry on the way through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use kinesis_producer::Producer;
use kinesis_producer::aggregation::put_payload_units;
use kinesis_producer::shard_map::Shard;
use kinesis_producer::sink::{EntryResult, PutEntry, Sink, SinkError};

/// What the sink saw: every PutRecords call and entry, counted on the way through.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) calls: AtomicU64,
    pub(super) entries_sent: AtomicU64,
    pub(super) entries_put: AtomicU64,
    pub(super) bytes_put: AtomicU64,
    pub(super) units_put: AtomicU64,
    /// KiB put, each Kinesis record rounded up to a whole KiB (what on-demand streams bill).
    pub(super) kib_put: AtomicU64,
    pub(super) throttled: AtomicU64,
    pub(super) entries_failed: AtomicU64,
}

/// A sink that counts what passes through it to the real one.
pub(super) struct Counting<S> {
    pub(super) inner: S,
    pub(super) counters: Arc<Counters>,
}

pub(super) fn is_throttle(code: &str) -> bool {
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
                            c.kib_put.fetch_add(size.div_ceil(1024) as u64, Relaxed);
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
pub(super) fn counted<S: Sink>(
    rt: &tokio::runtime::Runtime,
    config: kinesis_producer::Config,
    inner: S,
    counters: &Arc<Counters>,
) -> Producer {
    let counters = Arc::clone(counters);
    rt.block_on(async { Producer::with_sink(config, Counting { inner, counters }) })
}
