//! Where the metrics are kept: one series per metric and dimension set, with its total since
//! the start and its last 60 seconds second by second (the KPL keeps the same per-second
//! buckets: `aws/metrics/accumulator.h`), and the ledger of unresolved arrivals.
//!
//! A value recorded for a shard also counts for its stream and for the whole producer, down to
//! the configured granularity, as the KPL's metrics count for their parents
//! (`aws/metrics/metric.h`: `put` adds to the parent too).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use std::time::Instant;

use super::facade::{Export, Handles};
use super::names::{COUNT, Dims, Granularity, Level, Name};
use super::tally::{Group, Tally};
use super::{Metric, Stat, WINDOW_SECONDS};

/// The series of one set of dimensions, by metric: found with one lookup for all the metrics a
/// call adds to it.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) series: [Option<Series>; COUNT],
}

impl Default for Block {
    fn default() -> Self {
        Block {
            series: std::array::from_fn(|_| None),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Series {
    pub(crate) total: Stat,
    /// The latest value (for sampled metrics: the quantity now).
    pub(crate) last: f64,
    /// Per second (counted from the store's origin), the last [`WINDOW_SECONDS`] with values.
    seconds: VecDeque<(u64, Stat)>,
    /// Changed since it was last exported to the `metrics` crate.
    pub(crate) dirty: bool,
    /// The values since the last upload to CloudWatch (kept only while uploading).
    upload: Stat,
    pub(crate) handles: Option<Handles>,
}

impl Series {
    fn add(&mut self, stat: &Stat, second: u64, upload: bool) {
        self.total.merge(stat);
        self.dirty = true;
        if upload {
            self.upload.merge(stat);
        }
        match self.seconds.back_mut() {
            Some((s, st)) if *s == second => st.merge(stat),
            _ => {
                self.seconds.push_back((second, *stat));
                while self
                    .seconds
                    .front()
                    .is_some_and(|(s, _)| s + WINDOW_SECONDS <= second)
                {
                    self.seconds.pop_front();
                }
            }
        }
    }

    /// The values of second `from` and those after it.
    fn recent(&self, from: u64) -> Stat {
        let mut out = Stat::default();
        for (_, st) in self.seconds.iter().filter(|(s, _)| *s >= from) {
            out.merge(st);
        }
        out
    }
}

/// How many user records arrived in each slot of time since the oldest unresolved one, so
/// the oldest one's age is known without looking at the records.
#[derive(Debug)]
pub(crate) struct Ledger {
    slot: Duration,
    /// The slot (counted from the origin) of `counts[0]`.
    base: u64,
    counts: VecDeque<u32>,
}

impl Ledger {
    /// A ledger of `slot`-long slots: the age is known to within one slot; the ledger holds one
    /// counter per slot between the oldest unresolved record and the newest.
    pub(crate) fn new(slot: Duration) -> Self {
        Ledger {
            slot: slot.max(Duration::from_millis(1)),
            base: 0,
            counts: VecDeque::new(),
        }
    }

    fn slot_of(&self, origin: Instant, t: Instant) -> u64 {
        (t.saturating_duration_since(origin).as_nanos() / self.slot.as_nanos()) as u64
    }

    pub(crate) fn arrive(&mut self, origin: Instant, t: Instant, n: u32) {
        let k = self.slot_of(origin, t);
        if self.counts.is_empty() {
            self.base = k;
        }
        while k < self.base {
            self.counts.push_front(0);
            self.base -= 1;
        }
        while self.base + (self.counts.len() as u64) <= k {
            self.counts.push_back(0);
        }
        let c = &mut self.counts[(k - self.base) as usize];
        *c = c.saturating_add(n);
    }

    pub(crate) fn resolve(&mut self, origin: Instant, t: Instant, n: u32) {
        let k = self.slot_of(origin, t);
        if k < self.base {
            return;
        }
        if let Some(c) = self.counts.get_mut((k - self.base) as usize) {
            *c = c.saturating_sub(n);
        }
        while self.counts.front() == Some(&0) {
            self.counts.pop_front();
            self.base += 1;
        }
    }

    /// When the oldest unresolved record arrived (the start of its slot), if there is one.
    pub(crate) fn oldest(&self, origin: Instant) -> Option<Instant> {
        (!self.counts.is_empty()).then(|| origin + self.slot * self.base as u32)
    }
}

/// One stream's counts, kept whatever the level: what `UserRecordsPending` samples.
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamCounts {
    pub(crate) name: Arc<str>,
    pub(crate) received: u64,
    pub(crate) finished: u64,
}

#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) level: Level,
    pub(crate) granularity: Granularity,
    pub(crate) origin: Instant,
    pub(crate) streams: Vec<StreamCounts>,
    pub(crate) blocks: HashMap<Dims, Block>,
    pub(crate) ledger: Ledger,
    /// Dimensions added to every exported series.
    pub(crate) dimensions: Vec<(String, String)>,
    /// Whether metrics are uploaded to CloudWatch: each series then keeps what came since the
    /// last upload.
    pub(crate) uploading: bool,
}

impl Store {
    pub(crate) fn new(
        level: Level,
        granularity: Granularity,
        origin: Instant,
        ledger_slot: Duration,
    ) -> Self {
        Store {
            level,
            granularity,
            origin,
            streams: Vec::new(),
            blocks: HashMap::new(),
            ledger: Ledger::new(ledger_slot),
            dimensions: Vec::new(),
            uploading: false,
        }
    }

    pub(crate) fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn enabled(&self, name: Name) -> bool {
        self.level != Level::None && name.level() <= self.level
    }

    fn block(&mut self, dims: Dims) -> &mut Block {
        self.blocks.entry(dims).or_default()
    }

    /// Adds what `tally` gathered for stream `stream` at `now`.
    pub(crate) fn apply(&mut self, stream: usize, tally: &Tally, now: Instant) {
        let second = self.second(now);
        let origin = self.origin;
        for &(arrival, n) in &tally.resolved {
            self.ledger.resolve(origin, arrival, n);
        }
        let Some(counts) = self.streams.get_mut(stream) else {
            return;
        };
        let name = Arc::clone(&counts.name);
        for g in &tally.groups {
            counts.received += g.stats[Name::UserRecordsReceived.index()].count;
            counts.finished += g.stats[Name::UserRecordsPut.index()].count;
        }
        for g in &tally.groups {
            self.apply_group(&name, g, second);
        }
    }

    fn apply_group(&mut self, stream: &Arc<str>, g: &Group, second: u64) {
        let level = self.level;
        let dims = |stream: Option<&Arc<str>>, shard: Option<&Arc<str>>| Dims {
            code: g.code.clone(),
            stream: stream.cloned(),
            shard: shard.cloned(),
        };
        // The whole, and down to the granularity the stream and the shard (no allocation: this
        // runs per group of every call).
        let levels = [
            Some(dims(None, None)),
            (self.granularity >= Granularity::Stream).then(|| dims(Some(stream), None)),
            (self.granularity >= Granularity::Shard && g.shard.is_some())
                .then(|| dims(Some(stream), g.shard.as_ref())),
        ];
        let upload = self.uploading;
        for d in levels.into_iter().flatten() {
            let block = self.block(d);
            for (name, stat) in Name::ALL.iter().zip(&g.stats) {
                if stat.count > 0 && name.level() <= level {
                    block.series[name.index()]
                        .get_or_insert_with(Series::default)
                        .add(stat, second, upload);
                }
            }
        }
    }

    /// Records one sample of a sampled metric at exactly these dimensions (a sample of the
    /// whole is taken as such, not added up from its parts), if the level and granularity
    /// record it.
    pub(crate) fn sample(
        &mut self,
        name: Name,
        stream: Option<&Arc<str>>,
        shard: Option<&Arc<str>>,
        value: f64,
        now: Instant,
    ) {
        let granularity = match (stream, shard) {
            (_, Some(_)) => Granularity::Shard,
            (Some(_), None) => Granularity::Stream,
            (None, None) => Granularity::Global,
        };
        if !self.enabled(name) || granularity > self.granularity {
            return;
        }
        let mut stat = Stat::default();
        stat.add(value);
        let second = self.second(now);
        let dims = Dims {
            code: None,
            stream: stream.cloned(),
            shard: shard.cloned(),
        };
        let upload = self.uploading;
        let series = self.block(dims).series[name.index()].get_or_insert_with(Series::default);
        series.add(&stat, second, upload);
        series.last = value;
    }

    /// Every series: its metric, its dimensions, its values.
    pub(crate) fn series(&self) -> impl Iterator<Item = (Name, &Dims, &Series)> {
        self.blocks.iter().flat_map(|(d, b)| {
            Name::ALL
                .iter()
                .zip(&b.series)
                .filter_map(move |(n, s)| s.as_ref().map(|s| (*n, d, s)))
        })
    }

    /// What each series gathered since the last call: the next upload's data.
    #[cfg_attr(not(feature = "cloudwatch"), allow(dead_code))]
    pub(crate) fn take_upload(&mut self) -> Vec<(Name, Dims, Stat)> {
        let mut out = Vec::new();
        for (d, b) in &mut self.blocks {
            for (name, s) in Name::ALL.iter().zip(b.series.iter_mut()) {
                if let Some(s) = s
                    && s.upload.count > 0
                {
                    out.push((*name, d.clone(), std::mem::take(&mut s.upload)));
                }
            }
        }
        out
    }

    /// Hands every series changed since the last export to the `metrics` crate.
    pub(crate) fn export(&mut self) {
        let series = self.blocks.iter_mut().flat_map(|(d, b)| {
            Name::ALL
                .iter()
                .zip(b.series.iter_mut())
                .filter_map(move |(n, s)| s.as_mut().map(|s| (*n, &*d, s)))
        });
        let changed = series.filter_map(|(name, dims, s)| {
            // Only what changed since the last export.
            std::mem::take(&mut s.dirty).then_some(Export {
                name,
                dims,
                total: &s.total,
                last: s.last,
                handles: &mut s.handles,
            })
        });
        super::facade::export(changed, &self.dimensions);
    }

    /// Every series, with its values over the last `window` (whole seconds, at most
    /// [`WINDOW_SECONDS`]; the second under way counts as one).
    pub(crate) fn snapshot(&self, window: Duration, now: Instant) -> Vec<Metric> {
        let second = self.second(now);
        let seconds = window.as_secs().clamp(1, WINDOW_SECONDS);
        let from = (second + 1).saturating_sub(seconds);
        let mut out: Vec<Metric> = self
            .series()
            .map(|(name, d, s)| Metric {
                name,
                error_code: d.code.clone(),
                stream: d.stream.clone(),
                shard: d.shard.clone(),
                total: s.total,
                recent: s.recent(from),
                last: name.is_sampled().then_some(s.last),
            })
            .collect();
        out.sort_by(|a, b| {
            (a.name, &a.error_code, &a.stream, &a.shard).cmp(&(
                b.name,
                &b.error_code,
                &b.stream,
                &b.shard,
            ))
        });
        out
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test picks its own instants from the clock
mod tests {
    use super::*;

    #[test]
    fn the_ledger_knows_the_oldest_unresolved_arrival() {
        let origin = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Ledger::new(ms(1));
        assert_eq!(l.oldest(origin), None);
        l.arrive(origin, origin + ms(5), 2);
        l.arrive(origin, origin + ms(9), 1);
        assert_eq!(l.oldest(origin), Some(origin + ms(5)));
        l.resolve(origin, origin + ms(5), 1);
        assert_eq!(l.oldest(origin), Some(origin + ms(5)));
        l.resolve(origin, origin + ms(5), 1);
        assert_eq!(l.oldest(origin), Some(origin + ms(9)));
        l.resolve(origin, origin + ms(9), 1);
        assert_eq!(l.oldest(origin), None);
    }

    #[test]
    fn a_shard_value_counts_for_its_stream_and_the_whole_down_to_the_granularity() {
        let origin = Instant::now();
        let mut store = Store::new(
            Level::Detailed,
            Granularity::Stream,
            origin,
            Duration::from_millis(1),
        );
        store.streams.push(StreamCounts {
            name: "s".into(),
            ..Default::default()
        });
        let mut t = Tally::new(true);
        t.put(Some(&"shardId-1".into()), Name::KinesisRecordsPut, 1.0);
        store.apply(0, &t, origin);
        assert_eq!(
            store.series().count(),
            2,
            "global and stream, no shard at stream granularity"
        );
        let mut summary = Store::new(
            Level::Summary,
            Granularity::Shard,
            origin,
            Duration::from_millis(1),
        );
        summary.streams = store.streams.clone();
        let mut t = Tally::new(true);
        t.put(None, Name::RequestTime, 3.0);
        summary.apply(0, &t, origin);
        assert_eq!(
            summary.series().count(),
            0,
            "RequestTime is a detailed metric"
        );
    }

    #[test]
    fn the_window_holds_the_last_seconds_and_the_total_everything() {
        let origin = Instant::now();
        let mut store = Store::new(
            Level::Detailed,
            Granularity::Global,
            origin,
            Duration::from_millis(1),
        );
        for s in 0..100u64 {
            store.sample(
                Name::UserRecordsBuffered,
                None,
                None,
                s as f64,
                origin + Duration::from_secs(s),
            );
        }
        let now = origin + Duration::from_secs(99);
        let m = &store.snapshot(Duration::from_secs(10), now)[0];
        assert_eq!(m.total.count, 100);
        assert_eq!(m.recent.count, 10);
        assert_eq!((m.recent.min, m.recent.max), (90.0, 99.0));
        let all = &store.snapshot(Duration::from_secs(3600), now)[0];
        assert_eq!(all.recent.count, WINDOW_SECONDS);
        // What a series keeps (docs/metrics.md counts on it): at most 60 one-second sets of 40
        // bytes, whatever has gone before.
        let series = store.series().next().unwrap().2;
        assert_eq!(series.seconds.len() as u64, WINDOW_SECONDS);
        assert_eq!(std::mem::size_of::<(u64, Stat)>(), 40);
    }
}
