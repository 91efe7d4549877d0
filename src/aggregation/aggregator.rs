//! The per-shard aggregator and the one-shot encoder.

use std::time::Instant;

use bytes::Bytes;

use super::packer::{Packer, Probe};
use super::{AGGREGATE_OVERHEAD, AGGREGATE_PARTITION_KEY, MAX_RECORD_SIZE, MAX_RECORD_SIZE_LIMIT};
use crate::error::{ConfigError, RecordError};
use crate::hash_key::HashKey;
use crate::record::UserRecord;

/// The KPL's default `AggregationMaxSize`, in bytes.
pub const DEFAULT_AGGREGATION_MAX_SIZE: usize = 51_200;
/// The KPL's default `AggregationMaxCount`.
pub const DEFAULT_AGGREGATION_MAX_COUNT: usize = 4_294_967_295;
/// The smallest `AggregationMaxSize` the KPL accepts.
pub const MIN_AGGREGATION_MAX_SIZE: usize = 64;

/// The fewest bytes any record can add to an aggregate: a key index under 128 into the existing
/// partition key table and empty data (`Record` is 6 bytes: key + length + 2 + 2).
const MIN_RECORD_GROWTH: usize = 6;

/// One Kinesis record, ready to send: the outcome of aggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KinesisRecord {
    /// The partition key to send. `"a"` for an aggregate (routing is by explicit hash key; one
    /// byte keeps the counted size small), the user record's own key for a plain record.
    pub partition_key: String,
    /// The explicit hash key to send. For an aggregate, the hash key of its first user record,
    /// so the aggregate lands on that record's shard; for a plain record, the caller's explicit
    /// hash key if one was set.
    pub explicit_hash_key: Option<HashKey>,
    /// The bytes to send: magic + protobuf + MD5, or the user record's data when plain.
    pub data: Bytes,
    /// Whether `data` is in the aggregation format.
    pub aggregated: bool,
    /// How many user records it carries.
    pub user_records: usize,
}

impl KinesisRecord {
    /// The size Kinesis counts against its per-record limit: data plus partition key bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// What an [`Aggregator`] holds per user record: the record itself, or the record with the
/// caller's own bookkeeping (a pair `(UserRecord, T)`, or a type of the caller's). The
/// aggregator reads the record to size and encode it and hands the entry back, in order, when it
/// flushes: the caller's bookkeeping and the record travel as one value, stored once.
pub trait Entry {
    /// The user record this entry carries.
    fn record(&self) -> &UserRecord;
}

impl Entry for UserRecord {
    fn record(&self) -> &UserRecord {
        self
    }
}

impl<T> Entry for (UserRecord, T) {
    fn record(&self) -> &UserRecord {
        &self.0
    }
}

/// What an [`Aggregator`] flushes: the Kinesis record and the entries of the user records in
/// it, in sub-sequence order.
#[derive(Debug)]
pub struct Aggregate<E> {
    /// The record to send.
    pub record: KinesisRecord,
    /// The earliest deadline of the user records in it: send it by then.
    pub deadline: Instant,
    /// The entries of the user records it carries, in sub-sequence order.
    pub entries: Vec<E>,
}

/// Limits an [`Aggregator`] works under, validated against the KPL's ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregationLimits {
    max_size: usize,
    max_count: usize,
    max_record_size: usize,
}

impl Default for AggregationLimits {
    /// The KPL defaults: 51200 bytes, 4294967295 records, 1 MiB Kinesis records.
    fn default() -> Self {
        AggregationLimits {
            max_size: DEFAULT_AGGREGATION_MAX_SIZE,
            max_count: DEFAULT_AGGREGATION_MAX_COUNT,
            max_record_size: MAX_RECORD_SIZE,
        }
    }
}

impl AggregationLimits {
    /// `AggregationMaxSize` (64 ..= 1048576 bytes, counting data and the outer partition key)
    /// and `AggregationMaxCount` (1 ..= 4294967295), for a stream with the default 1 MiB record
    /// limit.
    ///
    /// ```
    /// use kinesis_producer::aggregation::AggregationLimits;
    /// assert!(AggregationLimits::new(51_200, 1000).is_ok());
    /// let err = AggregationLimits::new(10, 1000).unwrap_err();
    /// assert_eq!(err.to_string(), "AggregationMaxSize is 10; the range is 64..=1048576");
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming the value and the range when a limit is outside the
    /// KPL's.
    pub fn new(max_size: usize, max_count: usize) -> Result<Self, ConfigError> {
        Self::with_max_record_size(max_size, max_count, MAX_RECORD_SIZE)
    }

    /// As [`new`](Self::new), for a stream whose `MaxRecordSizeInKiB` raises the per-record
    /// limit (1048576 ..= 10485760 bytes); `max_size` may then go up to that limit.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming the value and the range when a limit is outside what
    /// Kinesis and the KPL allow.
    pub fn with_max_record_size(
        max_size: usize,
        max_count: usize,
        max_record_size: usize,
    ) -> Result<Self, ConfigError> {
        if !(MAX_RECORD_SIZE..=MAX_RECORD_SIZE_LIMIT).contains(&max_record_size) {
            return Err(ConfigError::OutOfRange {
                property: "MaxRecordSize",
                value: max_record_size.to_string(),
                range: format!("{MAX_RECORD_SIZE}..={MAX_RECORD_SIZE_LIMIT}"),
            });
        }
        if !(MIN_AGGREGATION_MAX_SIZE..=max_record_size).contains(&max_size) {
            return Err(ConfigError::OutOfRange {
                property: "AggregationMaxSize",
                value: max_size.to_string(),
                range: format!("{MIN_AGGREGATION_MAX_SIZE}..={max_record_size}"),
            });
        }
        if !(1..=DEFAULT_AGGREGATION_MAX_COUNT).contains(&max_count) {
            return Err(ConfigError::OutOfRange {
                property: "AggregationMaxCount",
                value: max_count.to_string(),
                range: format!("1..={DEFAULT_AGGREGATION_MAX_COUNT}"),
            });
        }
        Ok(AggregationLimits {
            max_size,
            max_count,
            max_record_size,
        })
    }

    /// `AggregationMaxSize`: the largest aggregate, data plus outer partition key, in bytes.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// `AggregationMaxCount`: the most user records in one aggregate.
    pub fn max_count(&self) -> usize {
        self.max_count
    }

    /// The stream's per-record limit, data plus partition key, in bytes.
    pub fn max_record_size(&self) -> usize {
        self.max_record_size
    }

    /// Whether Kinesis can carry `record` at all: its data plus partition key within the
    /// stream's per-record limit.
    ///
    /// # Errors
    /// [`RecordError::RecordTooLarge`] naming the sizes and the limit.
    pub fn check(&self, record: &UserRecord) -> Result<(), RecordError> {
        let size = record.size();
        if size <= self.max_record_size {
            return Ok(());
        }
        Err(RecordError::RecordTooLarge {
            size,
            data_len: record.data().len(),
            key_len: record.partition_key().len(),
            limit: self.max_record_size,
        })
    }

    /// These limits for a stream whose own per-record limit (its `MaxRecordSizeInKiB`, in bytes)
    /// is `stream_limit`: the per-record limit is the lower of the two (so `MaxRecordSize` caps
    /// what the stream allows), and `AggregationMaxSize` at most that.
    ///
    /// ```
    /// use kinesis_producer::aggregation::AggregationLimits;
    /// let ten_mib = AggregationLimits::with_max_record_size(51_200, 1000, 10 << 20).unwrap();
    /// assert_eq!(ten_mib.for_stream(1 << 20).max_record_size(), 1 << 20);
    /// assert_eq!(ten_mib.for_stream(4 << 20).max_record_size(), 4 << 20);
    /// let one_mib = AggregationLimits::default();
    /// assert_eq!(one_mib.for_stream(10 << 20).max_record_size(), 1 << 20);
    /// ```
    pub fn for_stream(self, stream_limit: usize) -> Self {
        let stream_limit = stream_limit.clamp(MAX_RECORD_SIZE, MAX_RECORD_SIZE_LIMIT);
        let max_record_size = self.max_record_size.min(stream_limit);
        AggregationLimits {
            max_record_size,
            max_size: self.max_size.min(max_record_size),
            ..self
        }
    }

    /// These limits with `AggregationMaxSize` at most `cap` (and never under the smallest the KPL
    /// accepts).
    ///
    /// ```
    /// use kinesis_producer::aggregation::AggregationLimits;
    /// let limits = AggregationLimits::default();
    /// assert_eq!(limits.capped(25_600).max_size(), 25_600);
    /// assert_eq!(limits.capped(1 << 20).max_size(), 51_200);
    /// ```
    pub fn capped(self, cap: usize) -> Self {
        AggregationLimits {
            max_size: self.max_size.min(cap.max(MIN_AGGREGATION_MAX_SIZE)),
            ..self
        }
    }
}

/// The outcome of [`Aggregator::try_push`] for a record Kinesis would accept.
#[derive(Debug)]
#[must_use = "a record that did not fit is handed back and must be pushed again after a flush"]
pub enum TryPush<E> {
    /// The record was taken.
    Added,
    /// The record does not fit beside what the aggregator holds; here its entry is back. Flush,
    /// then push it again: an empty aggregator always takes a record Kinesis would accept.
    NoCapacity(E),
}

/// A record no Kinesis record can carry (its data plus partition key exceed the stream's
/// per-record limit), handed back with the reason.
#[derive(Debug)]
pub struct Rejected<E> {
    /// Why.
    pub error: RecordError,
    /// The entry, handed back.
    pub entry: E,
}

/// Accumulates user records bound for one shard into one Kinesis record.
///
/// Pure: no I/O, no clock. Each record comes with its deadline (the caller's arrival time plus
/// `RecordMaxBufferedTime`), and [`earliest_deadline`](Self::earliest_deadline) says when the
/// caller must flush at the latest. `E` is what it holds per record (see [`Entry`]): the record
/// alone, or the record with the caller's bookkeeping (the producer keeps each record's pending
/// future there); entries come back in sub-sequence order from [`flush`](Self::flush).
///
/// Size accounting is exact: [`size`](Self::size) always equals the flushed record's
/// [`KinesisRecord::size`] (data plus outer partition key), and never exceeds
/// `AggregationMaxSize`, except for a lone record too big to aggregate at all, which is held
/// alone and flushed as a plain record, as the KPL does.
///
/// ```
/// use std::time::{Duration, Instant};
/// use kinesis_producer::UserRecord;
/// use kinesis_producer::aggregation::{AggregationLimits, Aggregator, TryPush, deaggregate};
///
/// let mut agg = Aggregator::new(AggregationLimits::default());
/// let deadline = Instant::now() + Duration::from_millis(100);
/// for i in 0..3 {
///     let record = UserRecord::new(format!("key-{i}"), format!("data {i}")).unwrap();
///     assert!(matches!(agg.try_push(record, deadline), Ok(TryPush::Added)));
/// }
/// assert_eq!(agg.earliest_deadline(), Some(deadline));
/// let predicted = agg.size();
/// let out = agg.flush().unwrap();
/// assert_eq!(out.record.size(), predicted);
/// assert_eq!(out.record.partition_key, "a");
/// let users = deaggregate(&out.record.partition_key, out.record.data.clone());
/// assert_eq!(users.len(), 3);
/// assert_eq!(users[2].data.as_ref(), b"data 2");
/// ```
pub struct Aggregator<E = UserRecord> {
    limits: AggregationLimits,
    packer: Packer,
    entries: Vec<E>,
    earliest_deadline: Option<Instant>,
    /// Holding one record too big to share an aggregate: it leaves alone, as a plain record.
    solo: bool,
}

impl<E: Entry> Aggregator<E> {
    /// An empty aggregator working under `limits`.
    pub fn new(limits: AggregationLimits) -> Self {
        Aggregator {
            limits,
            packer: Packer::default(),
            entries: Vec::new(),
            earliest_deadline: None,
            solo: false,
        }
    }

    /// The limits it works under.
    pub fn limits(&self) -> AggregationLimits {
        self.limits
    }

    /// Works under `limits` from now on. What is held, if it is more than they allow, is
    /// flushed and returned (it was packed under the old limits, which Kinesis accepts too).
    ///
    /// ```
    /// use std::time::Instant;
    /// use kinesis_producer::UserRecord;
    /// use kinesis_producer::aggregation::{AggregationLimits, Aggregator};
    ///
    /// let mut agg = Aggregator::new(AggregationLimits::default());
    /// for i in 0..100 {
    ///     let record = UserRecord::new(format!("k{i}"), vec![0u8; 100]).unwrap();
    ///     assert!(agg.push(record, Instant::now()).unwrap().is_none());
    /// }
    /// let held = agg.set_limits(AggregationLimits::default().capped(1_000)).unwrap();
    /// assert_eq!(held.entries.len(), 100);
    /// assert!(agg.is_empty());
    /// ```
    pub fn set_limits(&mut self, limits: AggregationLimits) -> Option<Aggregate<E>> {
        self.limits = limits;
        let over = self.entries.len() > limits.max_count
            || (self.entries.len() > 1 && self.size() > limits.max_size);
        if over { self.flush() } else { None }
    }

    /// Number of user records held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The exact size, data plus outer partition key, of the Kinesis record
    /// [`flush`](Self::flush) would return now; 0 when empty.
    pub fn size(&self) -> usize {
        match self.entries.len() {
            0 => 0,
            1 => self.entries[0].record().size(),
            _ => self.aggregate_size(self.packer.body_len()),
        }
    }

    /// The size of an aggregate whose protobuf body is `body_len` bytes.
    fn aggregate_size(&self, body_len: usize) -> usize {
        AGGREGATE_OVERHEAD + body_len + AGGREGATE_PARTITION_KEY.len()
    }

    /// The earliest deadline of the records held: flush by then.
    pub fn earliest_deadline(&self) -> Option<Instant> {
        self.earliest_deadline
    }

    /// Whether no further record can fit: flushing now loses no packing.
    pub fn is_full(&self) -> bool {
        self.solo
            || self.entries.len() >= self.limits.max_count
            || (!self.entries.is_empty()
                && self.aggregate_size(self.packer.body_len()) + MIN_RECORD_GROWTH
                    > self.limits.max_size)
    }

    /// Offers a record with its deadline.
    ///
    /// Returns [`TryPush::Added`], or [`TryPush::NoCapacity`] handing the record back when it
    /// does not fit beside what is held (flush and push again, or use [`push`](Self::push)). A
    /// record whose data plus partition key exceed the stream's per-record limit can never be
    /// sent and is [`Rejected`], handed back with a [`RecordError::RecordTooLarge`]; the
    /// aggregator is unchanged.
    // The Err variant is large because it hands the record back by value; boxing it would add
    // an allocation to gain nothing on a path taken only by records Kinesis would refuse.
    ///
    /// # Errors
    /// [`Rejected`], handing the entry back unchanged, when the record's data plus partition key
    /// exceed the stream's per-record limit.
    #[allow(clippy::result_large_err)]
    pub fn try_push(&mut self, entry: E, deadline: Instant) -> Result<TryPush<E>, Rejected<E>> {
        let entry = self.check_size(entry)?;
        Ok(match self.place(entry.record()) {
            Some((probe, solo)) => {
                self.accept(entry, deadline, probe, solo);
                TryPush::Added
            }
            None => TryPush::NoCapacity(entry),
        })
    }

    /// Takes a record, first flushing what is held if the record does not fit beside it; returns
    /// that flushed aggregate, if any. Rejects (unchanged) only a record over the stream's
    /// per-record limit, as [`try_push`](Self::try_push) does.
    ///
    /// ```
    /// use std::time::Instant;
    /// use kinesis_producer::UserRecord;
    /// use kinesis_producer::aggregation::{AggregationLimits, Aggregator};
    ///
    /// let mut agg = Aggregator::new(AggregationLimits::new(51_200, 2).unwrap());
    /// let mut sent = Vec::new();
    /// for i in 0..5 {
    ///     let record = UserRecord::new("k", format!("{i}")).unwrap();
    ///     sent.extend(agg.push((record, i), Instant::now()).unwrap());
    /// }
    /// sent.extend(agg.flush());
    /// assert_eq!(sent.iter().map(|a| a.entries.len()).collect::<Vec<_>>(), [2, 2, 1]);
    /// assert_eq!(sent[2].entries[0].1, 4);
    /// ```
    ///
    /// # Errors
    /// [`Rejected`], handing the entry back unchanged, when the record's data plus partition key
    /// exceed the stream's per-record limit.
    #[allow(clippy::result_large_err)] // as for try_push
    pub fn push(
        &mut self,
        entry: E,
        deadline: Instant,
    ) -> Result<Option<Aggregate<E>>, Rejected<E>> {
        let entry = self.check_size(entry)?;
        let flushed = match self.place(entry.record()) {
            Some((probe, solo)) => {
                self.accept(entry, deadline, probe, solo);
                return Ok(None);
            }
            None => self.flush(),
        };
        let (probe, solo) = self.place_in_empty(entry.record());
        self.accept(entry, deadline, probe, solo);
        Ok(flushed)
    }

    /// Hands back a record no Kinesis record can carry.
    #[allow(clippy::result_large_err)] // as for try_push
    fn check_size(&self, entry: E) -> Result<E, Rejected<E>> {
        match self.limits.check(entry.record()) {
            Ok(()) => Ok(entry),
            Err(error) => Err(Rejected { error, entry }),
        }
    }

    /// Where a record within the per-record limit would go, and whether it must travel alone;
    /// `None` if it does not fit beside what is held.
    fn place(&self, record: &UserRecord) -> Option<(Probe, bool)> {
        if self.entries.is_empty() {
            return Some(self.place_in_empty(record));
        }
        if self.solo || self.entries.len() >= self.limits.max_count {
            return None;
        }
        let probe = self.probe(record);
        let fits =
            self.aggregate_size(self.packer.body_len() + probe.growth) <= self.limits.max_size;
        fits.then_some((probe, false))
    }

    /// An empty aggregator takes any record within the per-record limit: one too big to
    /// aggregate even alone goes out alone, as a plain record (smaller than its aggregate).
    fn place_in_empty(&self, record: &UserRecord) -> (Probe, bool) {
        let probe = self.probe(record);
        let solo = self.aggregate_size(probe.growth) > self.limits.max_size;
        (probe, solo)
    }

    fn probe(&self, record: &UserRecord) -> Probe {
        self.packer.probe(
            record.partition_key(),
            record.explicit_hash_key(),
            record.data().len(),
        )
    }

    fn accept(&mut self, entry: E, deadline: Instant, probe: Probe, solo: bool) {
        self.solo = solo;
        self.packer.commit(entry.record().partition_key(), probe);
        self.entries.push(entry);
        self.earliest_deadline = Some(match self.earliest_deadline {
            Some(d) => d.min(deadline),
            None => deadline,
        });
    }

    /// Takes out what is held as one Kinesis record: plain if it holds one user record, an
    /// aggregate otherwise; `None` when empty. The aggregator is empty afterwards.
    pub fn flush(&mut self) -> Option<Aggregate<E>> {
        // Held records and a deadline go together: `accept` sets both, only this clears them.
        let deadline = self.earliest_deadline.take()?;
        // The next aggregate will likely hold as many records as this one: size its list once
        // instead of regrowing (and moving) it a dozen times.
        let next = Vec::with_capacity(self.entries.len());
        let entries = std::mem::replace(&mut self.entries, next);
        self.solo = false;
        let record = match entries.len() {
            0 => return None,
            1 => {
                self.packer.reset();
                plain(entries[0].record())
            }
            _ => aggregate_record(
                entries[0].record(),
                entries.len(),
                self.packer
                    .encode_and_reset(entries.iter().map(|e| e.record().data().as_ref())),
            ),
        };
        Some(Aggregate {
            record,
            deadline,
            entries,
        })
    }
}

impl<E: Entry> std::fmt::Debug for Aggregator<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("limits", &self.limits)
            .field("records", &self.entries.len())
            .field("size", &self.size())
            .field("earliest_deadline", &self.earliest_deadline)
            .finish()
    }
}

fn plain(record: &UserRecord) -> KinesisRecord {
    KinesisRecord {
        partition_key: record.partition_key().to_owned(),
        explicit_hash_key: record.explicit_hash_key(),
        data: record.data().clone(),
        aggregated: false,
        user_records: 1,
    }
}

fn aggregate_record(first: &UserRecord, user_records: usize, data: Bytes) -> KinesisRecord {
    KinesisRecord {
        partition_key: AGGREGATE_PARTITION_KEY.to_owned(),
        explicit_hash_key: Some(first.hash_key()),
        data,
        aggregated: true,
        user_records,
    }
}

/// Encodes user records into one Kinesis record, as the KPL would: the record itself when there
/// is one, an aggregate otherwise; `None` for no records. No limits are applied: use an
/// [`Aggregator`] to stay under `AggregationMaxSize` and the per-record limit.
pub fn encode(records: &[UserRecord]) -> Option<KinesisRecord> {
    match records {
        [] => None,
        [one] => Some(plain(one)),
        [first, ..] => Some(aggregate_record(
            first,
            records.len(),
            encode_aggregated(records),
        )),
    }
}

/// The aggregation-format bytes (magic + protobuf + MD5) for `records`, whatever their number,
/// with no limits applied. [`encode`] is what a producer sends; this is for tools and tests that
/// need the aggregate form of any input, e.g. to compare with another implementation.
pub fn encode_aggregated(records: &[UserRecord]) -> Bytes {
    let mut packer = Packer::default();
    for r in records {
        let probe = packer.probe(r.partition_key(), r.explicit_hash_key(), r.data().len());
        packer.commit(r.partition_key(), probe);
    }
    debug_assert_eq!(packer.len(), records.len());
    packer.encode_and_reset(records.iter().map(|r| r.data().as_ref()))
}
