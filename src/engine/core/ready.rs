//! A stream's Kinesis records ready to send: one lane per shard of the current map, and one for
//! records no shard of it is predicted for (no map yet, a gap in it, a reference to an older
//! one), each in the order its records were queued.
//!
//! One queue for the whole stream made every call's collection walk past the records of shards
//! over their rate to find the others, and every wake-up walk the queue for its earliest
//! deadline: under skew (a few hot shards throttled, hundreds of thousands of records queued
//! behind them) those walks were most of the engine's CPU. Here a shard over its rate is passed
//! over as a whole, in one step, the oldest record of the others is found with a heap over the
//! lanes' heads, and each lane keeps its earliest deadline as it goes (a running minimum: O(1)
//! per record, amortised).

use std::collections::VecDeque;

use std::time::Instant;

use std::sync::Arc;

use crate::aggregation::{Aggregate, KinesisRecord};
use crate::engine::pending::Pending;

/// Where a Kinesis record is predicted to land: shard `index` of the map of `generation`. A
/// reference into an older map names nothing now ([`ShardRef::index_in`] checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ShardRef {
    pub(super) index: usize,
    pub(super) generation: u64,
}

impl ShardRef {
    /// Its index among the `shards` shards of the map of `generation`, if it names one of them:
    /// the one place where a reference's generation is checked.
    pub(super) fn index_in(self, generation: u64, shards: usize) -> Option<usize> {
        (self.generation == generation && self.index < shards).then_some(self.index)
    }
}

/// A Kinesis record ready to send (or waiting to be retried).
pub(super) struct Ready {
    pub(super) record: KinesisRecord,
    pub(super) entries: Vec<Pending>,
    /// When it must be sent at the latest: its earliest user record's deadline.
    pub(super) deadline: Instant,
    /// The shard it is predicted to land on: whose rate limiter it answers to. `None` while no
    /// map is known.
    pub(super) shard: Option<ShardRef>,
    /// The id of that shard: Kinesis naming another one means the map is stale, and an
    /// aggregate may then hold records outside the range of the shard that took it.
    pub(super) expected: Option<Arc<str>>,
    /// When its oldest user record was taken in: its RecordTtl runs out first.
    pub(super) born: Instant,
}

/// When the oldest of `entries` was taken in (`fallback` for none).
pub(super) fn born(entries: &[Pending], fallback: Instant) -> Instant {
    Pending::oldest_arrival(entries).unwrap_or(fallback)
}

impl Ready {
    /// An aggregate flushed from the aggregator of shard `shard`, whose id is `id`.
    pub(super) fn from_aggregate(a: Aggregate<Pending>, shard: ShardRef, id: Arc<str>) -> Ready {
        Ready {
            born: born(&a.entries, a.deadline),
            record: a.record,
            entries: a.entries,
            deadline: a.deadline,
            shard: Some(shard),
            expected: Some(id),
        }
    }
}

impl Ready {
    /// An aggregate of records that share one hash key, sent before any shard map is known:
    /// Kinesis routes it by that key, the same as each of its records, so no shard is predicted.
    pub(super) fn unmapped(a: Aggregate<Pending>, now: Instant) -> Ready {
        Ready {
            born: born(&a.entries, now),
            record: a.record,
            entries: a.entries,
            deadline: now,
            shard: None,
            expected: None,
        }
    }
}

/// The queue: lanes by shard index, for the map of `generation`.
#[derive(Default)]
pub(super) struct ReadyQueue {
    lanes: Vec<Lane>,
    /// Records for no shard of the current map: routed by Kinesis, under no limiter.
    other: Lane,
    generation: u64,
    /// The order of records across lanes: places at the back count up from 0, places at the
    /// front down from -1, so a place's value is its order.
    next_back: i64,
    next_front: i64,
    len: usize,
    bytes: usize,
    /// No record queued was born before this (a lower bound: exact after [`expire`]).
    ///
    /// [`expire`]: ReadyQueue::expire
    oldest_born: Option<Instant>,
}

/// Which lane: a shard's, by index, or the one for no shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum LaneId {
    Shard(usize),
    Other,
}

#[derive(Default)]
struct Lane {
    /// The records, each with its place in the order of the whole queue.
    items: VecDeque<(i64, Ready)>,
    /// The running minimum of the deadlines: each entry (place, deadline) is earlier than
    /// every deadline after it in `items`, so the front is the lane's earliest.
    earliest: VecDeque<(i64, Instant)>,
}

impl Lane {
    fn push_back(&mut self, at: i64, r: Ready) {
        while self.earliest.back().is_some_and(|(_, d)| *d >= r.deadline) {
            self.earliest.pop_back();
        }
        self.earliest.push_back((at, r.deadline));
        self.items.push_back((at, r));
    }

    fn push_front(&mut self, at: i64, r: Ready) {
        // Earlier than all after it only if no later deadline is earlier than its own.
        if self.earliest.front().is_none_or(|(_, d)| r.deadline <= *d) {
            self.earliest.push_front((at, r.deadline));
        }
        self.items.push_front((at, r));
    }

    /// Takes the record at `index` (0, the oldest, but for a stale lane's plain records).
    fn remove(&mut self, index: usize) -> (i64, Ready) {
        let (at, r) = self.items.remove(index).expect("an index in the lane");
        if index == 0 {
            if self.earliest.front().is_some_and(|(a, _)| *a == at) {
                self.earliest.pop_front();
            }
        } else {
            // Rare (see `take`): the running minimum is rebuilt.
            self.earliest.clear();
            let items = std::mem::take(&mut self.items);
            for (a, r) in items {
                self.push_back(a, r);
            }
        }
        (at, r)
    }

    fn earliest(&self) -> Option<Instant> {
        self.earliest.front().map(|(_, d)| *d)
    }
}

impl ReadyQueue {
    fn lane_of(&self, r: &Ready) -> LaneId {
        match r
            .shard
            .and_then(|s| s.index_in(self.generation, self.lanes.len()))
        {
            Some(k) => LaneId::Shard(k),
            None => LaneId::Other,
        }
    }

    fn lane_mut(&mut self, id: LaneId) -> &mut Lane {
        match id {
            LaneId::Shard(k) => &mut self.lanes[k],
            LaneId::Other => &mut self.other,
        }
    }

    pub(super) fn lane(&self, id: LaneId) -> impl Iterator<Item = &Ready> {
        let lane = match id {
            LaneId::Shard(k) => &self.lanes[k],
            LaneId::Other => &self.other,
        };
        lane.items.iter().map(|(_, r)| r)
    }

    /// Queues `r` behind everything queued.
    pub(super) fn push_back(&mut self, r: Ready) {
        self.note_born(r.born);
        let at = self.next_back;
        self.next_back += 1;
        self.len += 1;
        self.bytes += r.record.size();
        let lane = self.lane_of(&r);
        self.lane_mut(lane).push_back(at, r);
    }

    /// Queues `r` ahead of everything queued (an in-order retry, ahead of what is newer).
    pub(super) fn push_front(&mut self, r: Ready) {
        self.note_born(r.born);
        self.next_front -= 1;
        let at = self.next_front;
        self.len += 1;
        self.bytes += r.record.size();
        let lane = self.lane_of(&r);
        self.lane_mut(lane).push_front(at, r);
    }

    fn note_born(&mut self, born: Instant) {
        self.oldest_born = Some(self.oldest_born.map_or(born, |b| b.min(born)));
    }

    /// No record queued was born before this, if any is queued (a lower bound).
    pub(super) fn oldest_born(&self) -> Option<Instant> {
        self.oldest_born.filter(|_| self.len > 0)
    }

    /// Hands `expire` each record queued born at or before `cutoff`, to take out of it the user
    /// records whose RecordTtl is over (re-encoding the rest); records it leaves empty leave
    /// the queue. Everything else keeps its place.
    pub(super) fn expire(&mut self, cutoff: Instant, mut expire: impl FnMut(&mut Ready)) {
        let mut oldest: Option<Instant> = None;
        let (mut len, mut bytes) = (0, 0);
        for lane in self
            .lanes
            .iter_mut()
            .chain(std::iter::once(&mut self.other))
        {
            let mut changed = false;
            for (_, r) in lane.items.iter_mut() {
                if r.born <= cutoff {
                    expire(r);
                    changed = true;
                }
            }
            if changed {
                let items = std::mem::take(&mut lane.items);
                lane.earliest.clear();
                for (at, r) in items.into_iter().filter(|(_, r)| !r.entries.is_empty()) {
                    lane.push_back(at, r);
                }
            }
            for (_, r) in &lane.items {
                len += 1;
                bytes += r.record.size();
                oldest = Some(oldest.map_or(r.born, |o: Instant| o.min(r.born)));
            }
        }
        (self.len, self.bytes, self.oldest_born) = (len, bytes, oldest);
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Their bytes, as Kinesis counts them.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every record queued, lane by lane.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = &Ready> {
        self.lanes
            .iter()
            .chain(std::iter::once(&self.other))
            .flat_map(|l| l.items.iter().map(|(_, r)| r))
    }

    /// The earliest deadline queued.
    pub(super) fn earliest(&self) -> Option<Instant> {
        self.earliest_by_lane().min()
    }

    /// Each lane's earliest deadline (the wake-up skips lanes whose earliest has passed: what
    /// holds them back is a shard's state, and what frees it wakes the engine).
    pub(super) fn earliest_by_lane(&self) -> impl Iterator<Item = Instant> + '_ {
        self.lanes
            .iter()
            .chain(std::iter::once(&self.other))
            .filter_map(Lane::earliest)
    }

    /// Everything queued, oldest first, leaving lanes for the `shards` shards of the map of
    /// `generation` (a new map: what was queued is sorted out again by the caller).
    pub(super) fn take_all(&mut self, generation: u64, shards: usize) -> Vec<Ready> {
        let mut all: Vec<(i64, Ready)> = self
            .lanes
            .drain(..)
            .chain(std::iter::once(std::mem::take(&mut self.other)))
            .flat_map(|l| l.items)
            .collect();
        all.sort_by_key(|(at, _)| *at);
        *self = ReadyQueue {
            lanes: std::iter::repeat_with(Lane::default).take(shards).collect(),
            generation,
            ..ReadyQueue::default()
        };
        all.into_iter().map(|(_, r)| r).collect()
    }

    /// The place and size of the next record lane `id` offers, at `index` in it.
    pub(super) fn head(&self, id: LaneId, index: usize) -> Option<(i64, usize)> {
        let lane = match id {
            LaneId::Shard(k) => self.lanes.get(k)?,
            LaneId::Other => &self.other,
        };
        let (at, r) = lane.items.get(index)?;
        Some((*at, r.record.size()))
    }

    /// Takes the record at `index` of lane `id`.
    pub(super) fn take(&mut self, id: LaneId, index: usize) -> Ready {
        let (_, r) = self.lane_mut(id).remove(index);
        self.len -= 1;
        self.bytes -= r.record.size();
        r
    }

    /// The lanes with something queued.
    pub(super) fn lanes(&self) -> impl Iterator<Item = LaneId> + '_ {
        (0..self.lanes.len())
            .filter(|k| !self.lanes[*k].items.is_empty())
            .map(LaneId::Shard)
            .chain((!self.other.items.is_empty()).then_some(LaneId::Other))
    }

    /// User records waiting, in all and per shard lane.
    pub(super) fn waiting(&self) -> (usize, Vec<usize>) {
        let per: Vec<usize> = self
            .lanes
            .iter()
            .map(|l| l.items.iter().map(|(_, r)| r.entries.len()).sum())
            .collect();
        let other: usize = self.other.items.iter().map(|(_, r)| r.entries.len()).sum();
        (per.iter().sum::<usize>() + other, per)
    }
}

/// A Kinesis record of `size` bytes for shard `index` of the map of `generation`, due at
/// `deadline`, carrying no user records: for the stages' unit tests.
#[cfg(test)]
pub(super) fn test_ready(index: usize, generation: u64, size: usize, deadline: Instant) -> Ready {
    Ready {
        record: KinesisRecord {
            partition_key: "a".into(),
            explicit_hash_key: None,
            data: bytes::Bytes::from(vec![0; size - 1]),
            aggregated: true,
            user_records: 1,
        },
        entries: Vec::new(),
        deadline,
        shard: Some(ShardRef { index, generation }),
        expected: None,
        born: deadline,
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test picks its own instants from the clock
mod tests {
    use std::time::Duration;

    use super::test_ready;
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn each_lane_knows_its_earliest_deadline_as_records_come_and_go() {
        let now = Instant::now();
        let mut q = ReadyQueue::default();
        q.take_all(1, 2);
        for (shard, ms) in [(0, 50), (0, 20), (0, 70), (1, 30)] {
            q.push_back(test_ready(shard, 1, 10, now + ms * MS));
        }
        assert_eq!(q.earliest(), Some(now + 20 * MS));
        assert_eq!((q.len(), q.bytes()), (4, 40));
        // Lane 0 in order: 50, 20, 70. Taking the oldest (50) leaves 20 the earliest.
        let r = q.take(LaneId::Shard(0), 0);
        assert_eq!(r.deadline, now + 50 * MS);
        assert_eq!(q.earliest(), Some(now + 20 * MS));
        q.take(LaneId::Shard(0), 0);
        assert_eq!(q.earliest(), Some(now + 30 * MS), "lane 1's now");
        // A retry at the front with an earlier deadline is the earliest; one later is not.
        q.push_front(test_ready(0, 1, 10, now + 5 * MS));
        q.push_front(test_ready(0, 1, 10, now + 90 * MS));
        assert_eq!(q.earliest(), Some(now + 5 * MS));
        q.take(LaneId::Shard(0), 0); // the 90 ms one, now the oldest
        assert_eq!(q.earliest(), Some(now + 5 * MS));
        // Taken from the middle: the running minimum is rebuilt.
        let middle = q.take(LaneId::Shard(0), 1);
        assert_eq!(middle.deadline, now + 70 * MS);
        q.take(LaneId::Shard(0), 0);
        assert_eq!(q.earliest(), Some(now + 30 * MS));
        let by_lane: Vec<_> = q.earliest_by_lane().collect();
        assert_eq!(by_lane, vec![now + 30 * MS]);
    }

    #[test]
    fn a_new_map_takes_everything_back_oldest_first_front_ones_ahead() {
        let now = Instant::now();
        let mut q = ReadyQueue::default();
        q.take_all(1, 2);
        for (shard, size) in [(0, 10), (1, 11), (0, 12)] {
            q.push_back(test_ready(shard, 1, size, now));
        }
        q.push_front(test_ready(1, 1, 13, now));
        q.push_front(test_ready(0, 1, 14, now));
        // Records for an older map, or before one, go in the other lane.
        q.push_back(test_ready(0, 0, 15, now));
        assert_eq!(q.lane(LaneId::Other).count(), 1);
        let order: Vec<usize> = q.take_all(2, 3).iter().map(|r| r.record.size()).collect();
        assert_eq!(order, vec![14, 13, 10, 11, 12, 15]);
        assert!(q.is_empty());
        assert_eq!(q.lanes().count(), 0);
    }
}
