//! The setup the engine, fault, end-to-end and resharding tests share: test records, what a
//! stream holds read back as its consumers read it (strict deaggregation; the KCL's view, from
//! `kcl.rs`), and receipt checks. `common::harness`, from `mod common;`.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use kinesis_producer::aggregation::deaggregate_strict;
use kinesis_producer::local::ReadRecord;
use kinesis_producer::sink::PutEntry;
use kinesis_producer::sink::memory::{MemorySink, StoredRecord};
use kinesis_producer::{Config, HashKey, Producer, Receipt, RecordFuture, UserRecord};

pub use super::kcl;

/// A user record with text data.
pub fn record(pk: &str, data: &str) -> UserRecord {
    UserRecord::new(pk, data.to_owned()).unwrap()
}

/// Sends every record, then awaits every future in order; a failed record fails the test.
pub async fn send_all(producer: &Producer, stream: &str, records: &[UserRecord]) -> Vec<Receipt> {
    let futures: Vec<_> = records
        .iter()
        .map(|r| producer.send(stream, r.clone()))
        .collect();
    let mut receipts = Vec::with_capacity(futures.len());
    for f in futures {
        receipts.push(f.await.unwrap_or_else(|e| panic!("{e}")));
    }
    receipts
}

/// A producer over a one-shard in-memory stream "s" that fails every entry with
/// `InternalFailure: message`, records living `ttl`.
pub fn failing_producer(message: &'static str, ttl: Duration) -> (MemorySink, Producer) {
    let sink = MemorySink::new().with_stream("s", 1);
    sink.set_entry_fault(move |_| Some(("InternalFailure".into(), message.into())));
    let config = Config::builder().record_ttl(ttl).build().unwrap();
    (sink.clone(), Producer::with_sink(config, sink))
}

/// Awaits every future on a runtime of its own, for tests whose senders are plain threads;
/// every record must be put.
pub fn block_on_all(futures: Vec<RecordFuture>) -> Vec<Receipt> {
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    waiter.block_on(async {
        let mut receipts = Vec::with_capacity(futures.len());
        for f in futures {
            receipts.push(f.await.unwrap());
        }
        receipts
    })
}

/// An entry fault for `MemorySink::set_entry_fault` that fails every `nth` entry the sink sees
/// (the first included), whatever it is, with `code` and `message`.
pub fn every_nth(
    nth: usize,
    code: &'static str,
    message: &'static str,
) -> impl FnMut(&PutEntry) -> Option<(String, String)> + Send + 'static {
    let mut seen = 0usize;
    move |_| {
        seen += 1;
        (seen - 1)
            .is_multiple_of(nth)
            .then(|| (code.to_owned(), message.to_owned()))
    }
}

/// The error code of the first failed attempt a receipt records.
pub fn first_error_code(receipt: &Receipt) -> &str {
    &receipt.attempts[0].error.as_ref().unwrap().code
}

/// Whether a record was sent again after an attempt that failed with `code`.
pub fn retried_after(receipt: &Receipt, code: &str) -> bool {
    receipt
        .attempts
        .iter()
        .any(|a| a.error.as_ref().is_some_and(|e| e.code == code))
}

/// A Kinesis record as a stream holds it: the in-memory sink's or the local Kinesis's.
pub trait Stored {
    fn shard_id(&self) -> &str;
    fn sequence_number(&self) -> &str;
    fn partition_key(&self) -> &str;
    fn data(&self) -> &Bytes;
}

/// The two stored shapes have the same four fields.
macro_rules! stored {
    ($($t:ty),*) => {$(
        impl Stored for $t {
            fn shard_id(&self) -> &str {
                &self.shard_id
            }
            fn sequence_number(&self) -> &str {
                &self.sequence_number
            }
            fn partition_key(&self) -> &str {
                &self.partition_key
            }
            fn data(&self) -> &Bytes {
                &self.data
            }
        }
    )*};
}
stored!(StoredRecord, ReadRecord);

/// A user record read back, with the Kinesis record that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    pub shard_id: String,
    pub sequence_number: String,
    pub sub_sequence_number: u64,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub aggregated: bool,
    pub data: Bytes,
}

/// The user records of one Kinesis record, through strict deaggregation: a malformed aggregate
/// fails the test.
pub fn user_records<S: Stored>(r: &S) -> Vec<ReadBack> {
    deaggregate_strict(r.partition_key(), r.data().clone())
        .unwrap()
        .into_iter()
        .map(|u| ReadBack {
            shard_id: r.shard_id().to_owned(),
            sequence_number: r.sequence_number().to_owned(),
            sub_sequence_number: u.sub_sequence_number,
            partition_key: u.partition_key,
            explicit_hash_key: u.explicit_hash_key,
            aggregated: u.aggregated,
            data: u.data,
        })
        .collect()
}

/// Every user record `records` hold, in storage order, as a deaggregating consumer reads them.
pub fn read_back<S: Stored>(records: &[S]) -> Vec<ReadBack> {
    records.iter().flat_map(user_records).collect()
}

/// How many user records the in-memory sink's `stream` holds.
pub fn stored_count(sink: &MemorySink, stream: &str) -> usize {
    read_back(&sink.records(stream)).len()
}

/// The hash key range of every shard `sink` lists for `stream`, closed ones included: what a
/// KCL consumer filters each shard's aggregates by.
pub fn ranges(sink: &MemorySink, stream: &str) -> HashMap<String, (HashKey, HashKey)> {
    sink.shards(stream)
        .into_iter()
        .map(|s| (s.shard_id, (s.start, s.end)))
        .collect()
}

/// What a KCL consumer receives for one Kinesis record read from a shard of `ranges`
/// (`kcl.rs`: an aggregate with any record outside the shard's range is dropped whole; plain
/// records are kept).
pub fn kcl_records<S: Stored>(
    r: &S,
    ranges: &HashMap<String, (HashKey, HashKey)>,
) -> Vec<kcl::KclRecord> {
    let (start, end) = ranges[r.shard_id()];
    kcl::deaggregate(r.partition_key(), r.data(), r.sequence_number(), start, end)
}

/// What a KCL consumer keeps of `records`, by data: (shard, sequence number, sub-sequence
/// number) of the copy it keeps.
pub fn kcl_view<S: Stored>(
    records: &[S],
    ranges: &HashMap<String, (HashKey, HashKey)>,
) -> HashMap<Vec<u8>, (String, String, u64)> {
    let mut kept = HashMap::new();
    for r in records {
        for u in kcl_records(r, ranges) {
            kept.insert(
                u.data.to_vec(),
                (
                    r.shard_id().to_owned(),
                    u.sequence_number,
                    u.sub_sequence_number,
                ),
            );
        }
    }
    kept
}

/// Each partition key's user records in the order a KCL consumer processes them, by data:
/// - a shard is processed only once all its parents are processed to their end
///   (`BlockOnParentShardTask`, software.amazon.kinesis.lifecycle in amazon-kinesis-client:
///   a child's consumer waits until every parent's checkpoint is SHARD_END), so along one key's
///   lineage a parent's records come wholly before its children's; `parents` gives each shard's
///   parents (split or merge);
/// - within a shard, by sequence number, and within a Kinesis record by sub-sequence number;
/// - an aggregate with any record outside the shard's range is dropped whole (`kcl.rs`).
///
/// One key's records that a KCL consumer keeps lie on shards whose ranges hold the key, and
/// those form one chain of parents and children, so sorting by depth in the lineage (longest
/// path from a shard with no parents) orders them as the consumer does.
pub fn kcl_order_by_key<S: Stored>(
    records: &[S],
    ranges: &HashMap<String, (HashKey, HashKey)>,
    parents: &HashMap<String, Vec<String>>,
) -> HashMap<String, Vec<Bytes>> {
    fn depth(
        shard: &str,
        parents: &HashMap<String, Vec<String>>,
        memo: &mut HashMap<String, usize>,
    ) -> usize {
        if let Some(&d) = memo.get(shard) {
            return d;
        }
        let d = parents.get(shard).map_or(0, |ps| {
            1 + ps
                .iter()
                .map(|p| depth(p, parents, memo))
                .max()
                .unwrap_or(0)
        });
        memo.insert(shard.to_owned(), d);
        d
    }
    let mut memo = HashMap::new();
    let mut rows = Vec::new();
    for r in records {
        let d = depth(r.shard_id(), parents, &mut memo);
        for u in kcl_records(r, ranges) {
            let seq = (u.sequence_number.len(), u.sequence_number.clone());
            rows.push((d, r.shard_id().to_owned(), seq, u.sub_sequence_number, u));
        }
    }
    rows.sort_by(|a, b| (a.0, &a.1, &a.2, a.3).cmp(&(b.0, &b.1, &b.2, b.3)));
    let mut by_key: HashMap<String, Vec<Bytes>> = HashMap::new();
    for (_, _, _, _, u) in rows {
        by_key.entry(u.partition_key).or_default().push(u.data);
    }
    by_key
}

/// The keys whose records (data: the decimal index each was sent with) a reader gets out of the
/// order sent, as "key: n after m", sorted. Each record counts at its first copy: a Kinesis
/// record whose answer was lost is stored twice, whole, so an aggregate holding `a` and `b` of
/// one key reads `a b a b` (at least once), which a reader skipping what it has seen reads in
/// order. Data that is not a number (a probe) is skipped.
pub fn keys_out_of_order(order: &HashMap<String, Vec<Bytes>>) -> Vec<String> {
    let mut out = Vec::new();
    for (key, data) in order {
        let mut seen = std::collections::HashSet::new();
        let ns: Vec<usize> = data
            .iter()
            .filter_map(|d| std::str::from_utf8(d).ok()?.parse().ok())
            .filter(|n| seen.insert(*n))
            .collect();
        if let Some(w) = ns.windows(2).find(|w| w[0] > w[1]) {
            out.push(format!("{key}: {} after {}", w[1], w[0]));
        }
    }
    out.sort();
    out
}

/// Reshards `stream` of the in-memory Kinesis at random: splits an open shard at a random point,
/// or merges two adjacent open ones (always, once there are 6).
pub fn reshard_at_random(sink: &MemorySink, stream: &str, rng: &mut fastrand::Rng) {
    let mut open: Vec<_> = sink
        .shards(stream)
        .into_iter()
        .filter(|s| !s.closed)
        .collect();
    if open.is_empty() {
        return;
    }
    open.sort_by_key(|s| s.start);
    if open.len() >= 2 && (open.len() >= 6 || rng.bool()) {
        let i = rng.usize(..open.len() - 1);
        sink.merge_shards(stream, &open[i].shard_id, &open[i + 1].shard_id);
    } else {
        let s = &open[rng.usize(..open.len())];
        if s.end.0 > s.start.0 {
            let at = s.start.0 + 1 + rng.u128(..s.end.0 - s.start.0);
            sink.split_shard(stream, &s.shard_id, HashKey(at));
        }
    }
}

/// What a KCL reader of `sink`'s `stream` as it is now sees of the records reported `Ok`
/// (`receipts`, by the decimal index each was sent with as its data): every one put on the
/// stream as it is now (its incarnation in the sequence number; records put on an incarnation
/// deleted since are gone with it) is kept at the shard, sequence and sub-sequence number its
/// receipt names (`kcl_view`: the straddle rule); with `ordered`, each key's records come in the
/// order sent (`kcl_order_by_key`: lineage order, the straddle rule; each at its first copy).
/// The first thing wrong, if anything is.
pub fn check_receipts(
    sink: &MemorySink,
    stream: &str,
    receipts: &HashMap<usize, Receipt>,
    ordered: bool,
) -> Result<(), String> {
    let now = format!("{:04}", sink.incarnation(stream));
    let stored = sink.records(stream);
    let ranges = ranges(sink, stream);
    // By the number each record's data is (with zeros in front when the simulation pads it).
    let kept: HashMap<usize, (String, String, u64)> = kcl_view(&stored, &ranges)
        .into_iter()
        .filter_map(|(data, at)| Some((std::str::from_utf8(&data).ok()?.parse().ok()?, at)))
        .collect();
    // In the order sent, so that the first thing wrong is the same every run.
    let mut receipts: Vec<(&usize, &Receipt)> = receipts.iter().collect();
    receipts.sort_by_key(|(i, _)| **i);
    for (i, r) in receipts {
        if !r.sequence_number.starts_with(&now) {
            continue;
        }
        match kept.get(i) {
            None => {
                return Err(format!(
                    "record {i} reported Ok is invisible to a KCL reader"
                ));
            }
            Some((shard, seq, sub)) => {
                if (&**shard, &**seq, *sub)
                    != (&*r.shard_id, &*r.sequence_number, r.sub_sequence_number)
                {
                    return Err(format!("record {i} is not where its receipt says"));
                }
            }
        }
    }
    if ordered {
        let order = kcl_order_by_key(&stored, &ranges, &sink.parents(stream));
        if let Some(first) = keys_out_of_order(&order).into_iter().next() {
            return Err(format!("out of order: {first}"));
        }
    }
    Ok(())
}
