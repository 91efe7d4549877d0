//! What one PutRecords call (or one turn of the engine) adds to the metrics, gathered without
//! a lock: values for the same shard are merged into one statistic set per metric as they come,
//! so the store is touched once per call and per shard, not once per user record.

use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use super::Stat;
use super::names::{COUNT, Name};

/// The statistic sets of every metric for one shard (or for the stream, with no shard) and,
/// for `ErrorsByCode`, one error code.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) shard: Option<Arc<str>>,
    pub(crate) code: Option<Arc<str>>,
    pub(crate) stats: [Stat; COUNT],
}

impl Group {
    /// Adds one value of `name`.
    pub(crate) fn put(&mut self, name: Name, value: f64) {
        self.stats[name.index()].add(value);
    }

    /// Adds `n` values of 1 (`n` records counted at once).
    pub(crate) fn put_ones(&mut self, name: Name, n: u64) {
        self.stats[name.index()].add_ones(n);
    }
}

/// Metric values of one stream, by shard and error code, and the arrivals of the user records
/// resolved (for the age of the oldest one left).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// Whether metric values are gathered (`MetricsLevel` is not none): callers skip the work
    /// when not. Arrivals are noted either way, for `oldest_unresolved_age`.
    pub(crate) on: bool,
    pub(crate) groups: Vec<Group>,
    /// Arrival times of resolved user records, with how many arrived then (records taken in
    /// together share their arrival, so runs are long).
    pub(crate) resolved: Vec<(Instant, u32)>,
}

fn same(a: Option<&Arc<str>>, b: Option<&Arc<str>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

impl Tally {
    /// An empty tally; `on`: whether metric values are gathered.
    pub(crate) fn new(on: bool) -> Self {
        Tally {
            on,
            ..Tally::default()
        }
    }

    /// Whether nothing was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.resolved.is_empty()
    }

    /// The group of `shard` (`None`: the stream itself) and `code`. The latest groups are
    /// looked at first: the entries of one shard tend to come together.
    pub(crate) fn group(
        &mut self,
        shard: Option<&Arc<str>>,
        code: Option<&Arc<str>>,
    ) -> &mut Group {
        let i = self.index(shard, code);
        &mut self.groups[i]
    }

    /// The index in `groups` of the group of `shard` and `code`, made if there was none.
    pub(crate) fn index(&mut self, shard: Option<&Arc<str>>, code: Option<&Arc<str>>) -> usize {
        let found = self
            .groups
            .iter()
            .rposition(|g| same(g.shard.as_ref(), shard) && same(g.code.as_ref(), code));
        match found {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    shard: shard.cloned(),
                    code: code.cloned(),
                    stats: [Stat::default(); COUNT],
                });
                self.groups.len() - 1
            }
        }
    }

    /// Adds one value of `name` for `shard` (`None`: the stream).
    #[cfg(test)]
    pub(crate) fn put(&mut self, shard: Option<&Arc<str>>, name: Name, value: f64) {
        self.group(shard, None).put(name, value);
    }

    /// Notes that a user record that arrived at `arrival` was resolved.
    pub(crate) fn resolved_arrival(&mut self, arrival: Instant) {
        count_run(&mut self.resolved, arrival);
    }
}

/// A sample's metric, stream and shard.
type SampleKey = (super::Name, Option<usize>, Option<std::sync::Arc<str>>);

/// `own` with every sample of `others` added in: values of the same metric, stream and shard
/// summed (one engine core's samples with the other cores' latest).
pub(crate) fn sum_samples(
    mut own: Vec<super::Sample>,
    others: &[Vec<super::Sample>],
) -> Vec<super::Sample> {
    let mut at: hashbrown::HashMap<SampleKey, usize> = own
        .iter()
        .enumerate()
        .map(|(i, (n, st, sh, _))| ((*n, *st, sh.clone()), i))
        .collect();
    for (name, stream, shard, value) in others.iter().flatten() {
        match at.entry((*name, *stream, shard.clone())) {
            hashbrown::hash_map::Entry::Occupied(e) => own[*e.get()].3 += value,
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(own.len());
                own.push((*name, *stream, shard.clone(), *value));
            }
        }
    }
    own
}

/// Counts one more `at` in `runs`, instants with how many share each: records taken in (or
/// resolved) together share their arrival, so a run per batch is kept, not an entry per record.
pub(crate) fn count_run(runs: &mut Vec<(Instant, u32)>, at: Instant) {
    match runs.last_mut() {
        Some((last, n)) if *last == at && *n < u32::MAX => *n += 1,
        _ => runs.push((at, 1)),
    }
}

/// Milliseconds, as the KPL reports times.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The user records of one Kinesis record put, gathered before they go into its group. They
/// share most values (records taken in together share an arrival; most have no retries), so
/// equal values are counted in runs and the statistic sets see one addition per run, not four
/// per record (those four additions, and the time arithmetic per record, were most of what
/// metrics cost: callgrind on `cargo bench --bench engine`).
#[derive(Debug)]
pub(crate) struct Puts {
    /// When the call that put them started: each record's buffering time ends there.
    started: Instant,
    n: u64,
    data_sum: u64,
    data_min: usize,
    data_max: usize,
    /// Runs of records whose buffering began at the same instant.
    since: Option<(Instant, u64)>,
    buffering: Stat,
    /// Runs of records with the same number of retries.
    retries_run: (usize, u64),
    retries: Stat,
}

/// Adds `n` values of `v` to `stat`.
fn add_run(stat: &mut Stat, v: f64, n: u64) {
    if n > 0 {
        stat.merge(&Stat {
            sum: v * n as f64,
            count: n,
            min: v,
            max: v,
        });
    }
}

impl Puts {
    /// The records of a call that started at `started`.
    pub(crate) fn new(started: Instant) -> Self {
        Puts {
            started,
            n: 0,
            data_sum: 0,
            data_min: 0,
            data_max: 0,
            since: None,
            buffering: Stat::default(),
            retries_run: (0, 0),
            retries: Stat::default(),
        }
    }

    /// One user record put: its data's size, when its buffering before this attempt began
    /// (its arrival, or the end of its previous attempt), and the failed attempts before.
    #[inline]
    pub(crate) fn add(&mut self, data: usize, since: Instant, retries: usize) {
        if self.n == 0 {
            (self.data_min, self.data_max) = (data, data);
        } else {
            self.data_min = self.data_min.min(data);
            self.data_max = self.data_max.max(data);
        }
        self.n += 1;
        self.data_sum += data as u64;
        match &mut self.since {
            Some((at, n)) if *at == since => *n += 1,
            run => {
                if let Some((at, n)) = run.replace((since, 1)) {
                    let v = ms(self.started.saturating_duration_since(at));
                    add_run(&mut self.buffering, v, n);
                }
            }
        }
        match &mut self.retries_run {
            (r, n) if *r == retries => *n += 1,
            run => {
                let (r, n) = std::mem::replace(run, (retries, 1));
                add_run(&mut self.retries, r as f64, n);
            }
        }
    }

    /// Adds what was gathered to `g`.
    pub(crate) fn into_group(mut self, g: &mut Group) {
        if self.n == 0 {
            return;
        }
        if let Some((at, n)) = self.since.take() {
            let v = ms(self.started.saturating_duration_since(at));
            add_run(&mut self.buffering, v, n);
        }
        let (r, n) = self.retries_run;
        add_run(&mut self.retries, r as f64, n);
        g.put_ones(Name::UserRecordsPut, self.n);
        g.stats[Name::UserRecordsDataPut.index()].merge(&Stat {
            sum: self.data_sum as f64,
            count: self.n,
            min: self.data_min as f64,
            max: self.data_max as f64,
        });
        g.stats[Name::BufferingTime.index()].merge(&self.buffering);
        g.stats[Name::RetriesPerRecord.index()].merge(&self.retries);
    }
}

/// A user record that failed for good after `attempts` attempts: `UserRecordsPut` 0, and
/// `UserRecordExpired` 1 if its RecordTtl ran out.
pub(crate) fn user_record_failed(g: &mut Group, attempts: usize, expired: bool) {
    g.put(Name::UserRecordsPut, 0.0);
    g.put(Name::RetriesPerRecord, attempts.saturating_sub(1) as f64);
    if expired {
        g.put(Name::UserRecordExpired, 1.0);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test picks its own instants from the clock
mod tests {
    use super::*;

    #[test]
    fn the_cores_samples_are_summed_by_metric_stream_and_shard() {
        let shard = |s: &str| Some(std::sync::Arc::<str>::from(s));
        let own = vec![
            (Name::UserRecordsWaitingToSend, Some(0), None, 3.0),
            (Name::UserRecordsWaitingToSend, Some(0), shard("a"), 1.0),
        ];
        let others = vec![
            vec![
                (Name::UserRecordsWaitingToSend, Some(0), None, 4.0),
                (Name::UserRecordsWaitingToSend, Some(0), shard("b"), 2.0),
            ],
            vec![(Name::UserRecordsWaitingToSend, Some(0), shard("a"), 5.0)],
        ];
        let summed = sum_samples(own, &others);
        assert_eq!(
            summed,
            vec![
                (Name::UserRecordsWaitingToSend, Some(0), None, 7.0),
                (Name::UserRecordsWaitingToSend, Some(0), shard("a"), 6.0),
                (Name::UserRecordsWaitingToSend, Some(0), shard("b"), 2.0),
            ]
        );
    }

    #[test]
    fn runs_of_puts_give_the_statistic_sets_of_each_value() {
        let t0 = Instant::now();
        let started = t0 + Duration::from_millis(100);
        let mut puts = Puts::new(started);
        let ms = Duration::from_millis;
        for (data, since, retries) in [(10, 0, 0), (30, 0, 0), (20, 60, 2), (5, 0, 0)] {
            puts.add(data, t0 + ms(since), retries);
        }
        let mut t = Tally::new(true);
        puts.into_group(t.group(None, None));
        let s = |n: Name| {
            let s = t.groups[0].stats[n.index()];
            (s.sum, s.count, s.min, s.max)
        };
        assert_eq!(s(Name::UserRecordsPut), (4.0, 4, 1.0, 1.0));
        assert_eq!(s(Name::UserRecordsDataPut), (65.0, 4, 5.0, 30.0));
        assert_eq!(s(Name::BufferingTime), (340.0, 4, 40.0, 100.0));
        assert_eq!(s(Name::RetriesPerRecord), (2.0, 4, 0.0, 2.0));
    }

    #[test]
    fn values_of_one_shard_merge_into_one_group() {
        let mut t = Tally::new(true);
        let a: Arc<str> = "shardId-000000000000".into();
        let a2: Arc<str> = "shardId-000000000000".into();
        t.put(Some(&a), Name::KinesisRecordsPut, 1.0);
        t.put(Some(&a2), Name::KinesisRecordsPut, 0.0);
        t.put(None, Name::RequestTime, 12.0);
        t.group(None, Some(&"Throttled".into()))
            .put(Name::ErrorsByCode, 1.0);
        assert_eq!(t.groups.len(), 3);
        let s = t.groups[0].stats[Name::KinesisRecordsPut.index()];
        assert_eq!((s.sum, s.count, s.min, s.max), (1.0, 2, 0.0, 1.0));
        let now = Instant::now();
        t.resolved_arrival(now);
        t.resolved_arrival(now);
        t.resolved_arrival(now + Duration::from_millis(1));
        assert_eq!(
            t.resolved,
            vec![(now, 2), (now + Duration::from_millis(1), 1)]
        );
    }
}
