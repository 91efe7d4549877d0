//! Building PutRecords calls: what to send now, from a stream's queue of Kinesis records, under
//! each shard's rate limiter, in order where per-key ordering asks for it.
//!
//! Pure: no I/O, no clock (the time is passed in); the engine sends what [`take`] returns.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use std::time::Instant;

use super::ready::Ready;
use super::ready::{LaneId, ReadyQueue};
use super::stream::{ShardState, StreamState};

/// The shortest wait for a shard over its rate: waking for each record's token made calls of
/// one or two records and a scan of the queue per token; the bucket keeps what accrues
/// meanwhile (up to its burst), so the rate is not lowered, only batched.
pub(super) const LIMITED_WAIT: Duration = Duration::from_millis(10);

/// How much longer than its first limited shard a call waits for the others: shards limited at
/// different moments (each sending an aggregate whenever its own tokens allow) made calls of
/// one or two Kinesis records each, one per shard's token; waiting a little for the others
/// lines them up, so that one call carries a record for each, and once lined up they stay so
/// (each is sent, and so limited again, at the same moment). Each shard still sends what its
/// tokens allow, so its bursts hardly grow: at most this long's worth of tokens.
pub(super) const LIMITED_ALIGN: Duration = Duration::from_millis(25);

/// What one PutRecords call may carry: `CollectionMaxCount` entries, `CollectionMaxSize` bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallLimits {
    pub(super) max_count: usize,
    pub(super) max_size: usize,
}

/// The most bytes one PutRecords call to a stream carries: `CollectionMaxSize`, within the
/// request limit the stream is known to take. A stream whose records may be over 1 MiB
/// (DescribeStreamSummary's `MaxRecordSizeInKiB` above 1024, as `max_record_size` says) is on
/// the service that raised the request limit to 10 MiB with larger records; any other stream
/// gets the API reference's 5 MiB, so that no call is ever over its limit. (A record larger than
/// this goes alone in its call: only a stream of large records has one.)
pub(super) fn max_call_size(collection_max_size: usize, max_record_size: usize) -> usize {
    let request_limit = if max_record_size > crate::aggregation::MAX_RECORD_SIZE {
        crate::config::MAX_PUT_RECORDS_SIZE
    } else {
        crate::config::PUT_RECORDS_SIZE_WITHOUT_LARGE_RECORDS
    };
    collection_max_size.min(request_limit)
}

/// One call's worth, taken from the queue.
pub(super) struct Taken {
    pub(super) batch: Vec<Ready>,
    /// Their bytes, as Kinesis counts them.
    pub(super) bytes: usize,
    /// When a record held back by its shard's limiter can go, if one was.
    pub(super) limited_until: Option<Instant>,
}

/// Whether `s` has a PutRecords call's worth to send now: unless a shard is over its rate until
/// later, a flush asked for it, or the queue fills a call or holds a record due now.
pub(super) fn should_send(s: &StreamState, limits: CallLimits, now: Instant) -> bool {
    // While a shard is over its rate, the next call waits for the time its limiter gave (at
    // least LIMITED_WAIT): each finished call would otherwise start another with the few tokens
    // accrued since, thousands of calls of a few records each. A flush waits too: it says not to
    // wait for RecordMaxBufferedTime, not to go past the limiter. Forcing calls past it after
    // `kpl bench`'s flush made 21,942 calls of 9 records each for 200,000 unaggregated records
    // (19.7 producer CPU seconds; now 523 calls, 3.5 s) and 378 calls of 2 aggregates for the
    // aggregated run.
    let limited = s.limited_until.is_some_and(|t| t > now);
    !s.ready.is_empty()
        && !limited
        && !s.held()
        && (s.forced > 0
            || s.ready.len() >= limits.max_count
            || s.ready.bytes() >= limits.max_size
            || s.ready.earliest().is_some_and(|d| d <= now))
}

/// Takes from `queue` what one PutRecords call can carry now, oldest first across its lanes: a
/// shard over its rate (its limiter in `shards`, the shards of the map the queue's lanes are
/// for) is passed over as a whole and the others go past it; a shard the map was shown stale for
/// holds its aggregates (its plain records route themselves and go); with `ordered`, a shard
/// takes one Kinesis record at a time (PutRecords does not order its entries), is marked busy,
/// and nothing of it passes what it holds. Records passed over stay where they are.
pub(super) fn take(
    queue: &mut ReadyQueue,
    shards: &mut [ShardState],
    limits: CallLimits,
    ordered: bool,
    now: Instant,
) -> Taken {
    let mut bytes = 0;
    // The earliest and the latest moment a limited shard can go.
    let mut limited: Option<(Instant, Instant)> = None;
    let mut batch = Vec::new();
    // Each lane's next record, oldest first: one heap entry per lane, not a walk of the queue
    // (which, behind throttled shards, was most of the engine's CPU under skew).
    let mut heads: BinaryHeap<Reverse<Offer>> = queue
        .lanes()
        .filter_map(|lane| offer(queue, lane, shards, ordered))
        .map(Reverse)
        .collect();
    while let Some(Reverse(next)) = heads.pop() {
        // The first record always goes, even one larger than CollectionMaxSize (a stream with
        // a raised record limit): the call must carry it somehow.
        if batch.len() >= limits.max_count
            || (!batch.is_empty() && bytes + next.size > limits.max_size)
        {
            break;
        }
        if let LaneId::Shard(k) = next.lane {
            let limiter = &mut shards[k].limiter;
            if !limiter.try_take(next.size, now) {
                let at = limiter.ready_at(next.size, now).max(now + LIMITED_WAIT);
                limited = Some(limited.map_or((at, at), |(a, b)| (a.min(at), b.max(at))));
                // The whole shard waits: its lane leaves the heap.
                continue;
            }
            if ordered {
                shards[k].busy = true;
            }
        }
        bytes += next.size;
        batch.push(queue.take(next.lane, next.index));
        if let Some(more) = offer(queue, next.lane, shards, ordered) {
            heads.push(Reverse(more));
        }
    }
    // The next call waits for the first limited shard and, a little longer, for the others.
    let limited_until = limited.map(|(first, last)| last.min(first + LIMITED_ALIGN));
    Taken {
        batch,
        bytes,
        limited_until,
    }
}

/// What a lane offers a call next: its record at `index`, with its place in the queue's order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Offer {
    place: i64,
    lane: LaneId,
    index: usize,
    size: usize,
}

/// The record lane `lane` offers next, if any: its oldest; for a shard the map was shown stale
/// for, its oldest plain record (none in order); for a busy shard in order, none.
fn offer(queue: &ReadyQueue, lane: LaneId, shards: &[ShardState], ordered: bool) -> Option<Offer> {
    let index = match lane {
        LaneId::Shard(k) if ordered && (shards[k].busy || shards[k].stale) => return None,
        // Rare (until the next map): the lane is walked for its plain records.
        LaneId::Shard(k) if shards[k].stale => {
            queue.lane(lane).position(|r| !r.record.aggregated)?
        }
        _ => 0,
    };
    let (place, size) = queue.head(lane, index)?;
    Some(Offer {
        place,
        lane,
        index,
        size,
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test picks its own instants from the clock
mod tests {
    use super::super::ready::{ShardRef, test_ready};
    use super::*;
    use crate::config::Config;

    const GENERATION: u64 = 7;

    fn shards(n: usize, now: Instant) -> Vec<ShardState> {
        let config = Config::builder().rate_limit(100).build().unwrap();
        (0..n)
            .map(|k| {
                ShardState::new(
                    &format!("shardId-{k:012}"),
                    &config,
                    config.aggregation,
                    1.0,
                    true,
                    now,
                )
            })
            .collect()
    }

    fn ready(shard: usize, size: usize, aggregated: bool, now: Instant) -> Ready {
        let mut r = test_ready(shard, GENERATION, size, now);
        r.record.aggregated = aggregated;
        r
    }

    fn limits(max_count: usize, max_size: usize) -> CallLimits {
        CallLimits {
            max_count,
            max_size,
        }
    }

    /// A queue with lanes for `shards` shards of the map of `GENERATION`, holding `records`.
    fn queue(records: impl IntoIterator<Item = Ready>, shards: usize) -> ReadyQueue {
        let mut q = ReadyQueue::default();
        q.take_all(GENERATION, shards);
        for r in records {
            q.push_back(r);
        }
        q
    }

    fn shards_of(t: &Taken) -> Vec<usize> {
        t.batch.iter().map(|r| r.shard.unwrap().index).collect()
    }

    #[test]
    fn a_call_carries_at_most_its_count_and_size_but_always_one() {
        let now = Instant::now();
        let mut s = shards(1, now);
        let mut q = queue((0..5).map(|_| ready(0, 1_000, true, now)), 1);
        let t = take(&mut q, &mut s, limits(3, 10_000), false, now);
        assert_eq!((t.batch.len(), t.bytes, q.len()), (3, 3_000, 2));
        let t = take(&mut q, &mut s, limits(500, 1_500), false, now);
        assert_eq!((t.batch.len(), q.len()), (1, 1));
        // Larger than a call may carry: it goes alone.
        let mut q = queue([ready(0, 5_000, true, now)], 1);
        let t = take(&mut q, &mut s, limits(500, 1_000), false, now);
        assert_eq!(t.batch.len(), 1);
    }

    #[test]
    fn a_shard_over_its_rate_waits_and_the_others_go_past_it() {
        let now = Instant::now();
        let mut s = shards(2, now);
        // At 100%, half a second of burst: 512 KiB. Shard 0 gets more than that.
        let mut q = queue(
            (0..12)
                .map(|_| ready(0, 50_000, true, now))
                .chain([ready(1, 50_000, true, now)]),
            2,
        );
        let t = take(&mut q, &mut s, limits(500, 5 << 20), false, now);
        assert_eq!(shards_of(&t).iter().filter(|&&k| k == 0).count(), 10);
        assert!(shards_of(&t).contains(&1));
        assert_eq!(q.len(), 2);
        let until = t.limited_until.expect("shard 0 is over its rate");
        assert!(until >= now + LIMITED_WAIT, "{:?}", until - now);
    }

    #[test]
    fn shards_limited_at_different_moments_are_waited_for_together_a_little() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let size = 52_428; // at 100%, 1 MiB/s: an aggregate's tokens take 50 ms to come
        let burst = |shard| (0..10).map(move |_| ready(shard, size, true, now));
        // Shard 0 spends its burst `apart` before shard 1 does; then each has one more
        // aggregate: 0 can go about 50 ms after its burst, 1 about 50 ms after its own.
        let limited_until = |apart: Duration| {
            let mut s = shards(2, now);
            let mut q = queue(burst(0), 2);
            assert_eq!(
                take(&mut q, &mut s, limits(500, 5 << 20), false, now)
                    .batch
                    .len(),
                10
            );
            let later = now + apart;
            let mut q = queue(
                burst(1).chain([ready(0, size, true, now), ready(1, size, true, now)]),
                2,
            );
            let t = take(&mut q, &mut s, limits(500, 5 << 20), false, later);
            assert_eq!(shards_of(&t), [1; 10]);
            let first = s[0].limiter.ready_at(size, later).max(later + LIMITED_WAIT);
            let last = s[1].limiter.ready_at(size, later);
            (t.limited_until.unwrap(), first, last)
        };
        // 40 ms apart: the call waits LIMITED_ALIGN past the first, not until the last.
        let (until, first, last) = limited_until(ms(40));
        assert!(last > first + LIMITED_ALIGN, "{:?}", last - first);
        assert_eq!(until, first + LIMITED_ALIGN);
        // 10 ms apart: it waits for the later one, and both go in one call.
        let (until, first, last) = limited_until(ms(10));
        assert!(
            last > first && last <= first + LIMITED_ALIGN,
            "{:?}",
            last - first
        );
        assert_eq!(until, last);
    }

    #[test]
    fn a_flush_does_not_send_past_a_shard_over_its_rate() {
        let now = Instant::now();
        let mut s = StreamState::new(0, std::sync::Arc::from("s"), Default::default(), now);
        s.ready
            .push_back(ready(0, 100, true, now + Duration::from_secs(1)));
        s.forced = 1;
        let l = limits(500, 5 << 20);
        assert!(should_send(&s, l, now), "a flush sends before the deadline");
        s.limited_until = Some(now + LIMITED_WAIT);
        assert!(
            !should_send(&s, l, now),
            "but not before the limiter's time"
        );
        assert!(should_send(&s, l, now + LIMITED_WAIT));
    }

    #[test]
    fn in_order_a_shard_takes_one_record_at_a_time() {
        let now = Instant::now();
        let mut s = shards(2, now);
        let mut q = queue([0, 0, 1, 0, 1].map(|k| ready(k, 100, true, now)), 2);
        let t = take(&mut q, &mut s, limits(500, 1 << 20), true, now);
        assert_eq!(shards_of(&t), [0, 1]);
        assert!(s[0].busy && s[1].busy);
        // Busy shards take nothing more until their records are settled.
        let t = take(&mut q, &mut s, limits(500, 1 << 20), true, now);
        assert!(t.batch.is_empty());
        s[0].busy = false;
        let t = take(&mut q, &mut s, limits(500, 1 << 20), true, now);
        assert_eq!(shards_of(&t), [0]);
        // The queue kept its order.
        assert_eq!(
            q.iter().map(|r| r.shard.unwrap().index).collect::<Vec<_>>(),
            [0, 1]
        );
    }

    #[test]
    fn a_stale_shard_holds_its_aggregates_but_not_its_plain_records() {
        let now = Instant::now();
        let mut s = shards(2, now);
        s[0].stale = true;
        let mut q = queue(
            [
                ready(0, 100, true, now),
                ready(0, 100, false, now),
                ready(1, 100, true, now),
            ],
            2,
        );
        let t = take(&mut q, &mut s, limits(500, 1 << 20), false, now);
        assert_eq!(t.batch.len(), 2);
        assert!(
            t.batch
                .iter()
                .all(|r| !(r.shard.unwrap().index == 0 && r.record.aggregated))
        );
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn records_for_an_older_map_answer_to_no_limiter() {
        let now = Instant::now();
        let mut s = shards(1, now);
        let mut old = ready(0, 900_000, true, now);
        old.shard = Some(ShardRef {
            index: 0,
            generation: GENERATION - 1,
        });
        let mut q = queue([old, ready(0, 900_000, true, now)], 1);
        let t = take(&mut q, &mut s, limits(500, 5 << 20), false, now);
        // The old one goes without tokens; the current one then has the whole burst to itself
        // (more than the bucket holds: it goes when the bucket is full).
        assert_eq!(t.batch.len(), 2);
    }
}
