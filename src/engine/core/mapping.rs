//! The engine and its shard maps: records that wait for a stream's first map, a listing's
//! arrival (install), and aggregates Kinesis put on another shard than predicted (verify).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ledger::{Ledger, Misrouted};
use super::order::{hold_for_new_map, reroute_later};
use super::ready::{Ready, ShardRef};
use super::retrier;
use super::stream::Ctx;
use super::stream::{ShardState, StreamState, flush_aggregators, request_refresh, retune, route};
use crate::aggregation::Entry;
use crate::aggregation::{Aggregator, MAX_RECORD_SIZE};
use crate::engine::pending::Pending;
use crate::engine::slot::Put;
use crate::error::{ErrorClass, classify};
use crate::outcome::{AttemptError, PutErrorKind};
use crate::shard_map::Shard;
use crate::shard_map::ShardMap;
use crate::sink::SinkError;

/// How long to wait before asking for a shard map again after ListShards failed.
const REFRESH_RETRY: Duration = Duration::from_secs(1);

/// What a listing found.
#[derive(Clone)]
pub(crate) struct Listed {
    pub(crate) shards: Result<Vec<Shard>, SinkError>,
    /// The stream's own per-record limit (asked for once the listing is in), if asked.
    pub(crate) record_limit: Option<Result<Option<usize>, SinkError>>,
}

/// The error code of a call on a stream that does not exist (deleted, or not created yet).
pub(super) const STREAM_MISSING: &str = "ResourceNotFoundException";
/// Sends the records waiting for stream `i`'s first map that cannot wait any longer: all of
/// them when ListShards refused (the stream is missing or access denied: PutRecords will
/// say so), or when a flush, shutdown or a buffer at least half full asks for them after
/// ListShards failed at least once; otherwise those whose wait (`unmapped_wait`) is over.
/// They go out aggregated by hash key: records of one hash key always land on one shard,
/// whatever the map, so every consumer reads such an aggregate, and a cold start with a
/// slow or throttled ListShards costs latency, not one PUT unit per user record.
///
/// With per-key ordering, records wait for the map until their TTL instead (two of one key
/// in different calls could land in either order), and expire then.
pub(super) fn release_unmapped(
    s: &mut StreamState,
    cx: &mut Ctx<'_>,
    wait: Duration,
    now: Instant,
) {
    let ttl = cx.config.record_ttl;
    if cx.config.per_key_ordering {
        let no_map = Arc::new(AttemptError::new(
            "NoShardMap",
            "no shard map yet: ListShards has not answered",
        ));
        while let Some((pending, _)) = s.unmapped.pop_front_if(|(p, _)| p.arrival() + wait <= now) {
            cx.ledger
                .fail(s.index, pending, retrier::expiry(ttl, &no_map));
        }
        return;
    }
    // What the core holds against the buffer's limits (records in the channel aside).
    let (records, bytes) = cx.ledger.held();
    let pressed =
        records * 2 >= cx.config.max_buffered_records || bytes * 2 >= cx.config.max_buffered_bytes;
    let asked = cx.closing || s.flush_unmapped || pressed;
    let all = s.map_refused || (asked && s.map_failed);
    let mut out = Vec::new();
    while let Some(entry) = s
        .unmapped
        .pop_front_if(|(p, _)| all || p.arrival() + wait <= now)
    {
        out.push(entry);
    }
    if s.unmapped.is_empty() {
        s.flush_unmapped = false;
    }
    if out.is_empty() {
        return;
    }
    tracing::debug!(stream = %s.name, records = out.len(), "no shard map yet: sending records aggregated by hash key");
    // Grouped by hash key (a stable sort keeps each key's order).
    let mut out: Vec<Pending> = out.into_iter().map(|(pending, _)| pending).collect();
    out.sort_by_key(|p| p.record().hash_key());
    let mut aggregator: Aggregator<Pending> = Aggregator::new(s.limits);
    let mut key = None;
    for pending in out {
        let k = pending.record().hash_key();
        if key.replace(k).is_some_and(|last| last != k)
            && let Some(done) = aggregator.flush()
        {
            s.ready.push_back(Ready::unmapped(done, now));
        }
        match aggregator.push(pending, now) {
            Ok(Some(full)) => s.ready.push_back(Ready::unmapped(full, now)),
            Ok(None) => {}
            Err(rejected) => cx.ledger.fail(
                s.index,
                rejected.entry,
                PutErrorKind::InvalidRecord(rejected.error),
            ),
        }
    }
    if let Some(last) = aggregator.flush() {
        s.ready.push_back(Ready::unmapped(last, now));
    }
    s.forced = s.ready.len();
}

/// What a listing asked for as the `generation`th found, at `now`.
pub(super) fn on_listing(
    s: &mut StreamState,
    cx: &mut Ctx<'_>,
    generation: u64,
    done: Listed,
    now: Instant,
) {
    let interval = cx.config.shard_map_refresh_interval;
    s.refreshing = false;
    if generation <= s.listed_before_missing {
        // Asked for before the stream was found missing: it may list the stream as it was
        // (see `forget_map`). Ask again.
        tracing::debug!(stream = %s.name, generation, "a listing asked for before the stream was found missing is not used");
        s.refresh_again = false;
        s.next_refresh = now;
        return;
    }
    let again = std::mem::take(&mut s.refresh_again);
    if !again {
        // A listing is in (or ListShards failed): held aggregates go, packed for whatever
        // map is installed now; one that still straddles is caught by `verify`.
        s.shards.iter_mut().for_each(|h| h.stale = false);
    }
    if let Some(limit) = done.record_limit {
        set_record_limit(s, cx, limit);
    }
    match done.shards {
        Ok(shards) => {
            s.map_refused = false;
            s.next_refresh = if again { now } else { now + interval };
            let fresh = ShardMap::new(shards, generation);
            let newer = s.map.as_ref().is_none_or(|m| m.generation() < generation);
            let changed = s.map.as_ref().is_none_or(|m| m.shards() != fresh.shards());
            if newer && changed {
                install(s, cx, fresh.clone(), now);
            }
            if !s.unverified.is_empty() {
                verify(s, cx.ledger, &fresh, now);
            }
        }
        Err(e) => {
            tracing::warn!(stream = %s.name, error = %e, "could not list shards; retrying");
            s.map_failed = true;
            s.map_refused = classify(&e.code) == ErrorClass::NonRetryable;
            s.next_refresh = now + REFRESH_RETRY;
            if e.code == STREAM_MISSING {
                forget_map(s, cx.listings, now);
                s.next_refresh = now + REFRESH_RETRY;
            }
        }
    }
}

/// Stream `i` is missing (deleted; it may be created again with other shards under the
/// same shard ids, and an aggregate packed for an old shard would then land on the new one
/// of that id and be reported put, while KCL consumers drop it if it straddles the new
/// range). Its map is dropped: what was packed for it waits again for a map, as records do
/// before the first one (going out aggregated by hash key only, which lands right whatever
/// the shards), until a listing of the stream as it is now comes in.
pub(super) fn forget_map(s: &mut StreamState, listings: u64, now: Instant) {
    // A listing asked for before now may have been read before the stream was deleted, and
    // answer after it was created again, with the old stream's shards: it is not used (found by
    // the simulation's soak, seed 665590 of `tests/simulation.rs`: a 3-second ListShards of the
    // deleted stream, answered after the new one was created, was installed, and aggregates
    // packed for the old shards landed on the new shards of the same ids, which KCL consumers
    // drop). One asked for after this was read after the deletion.
    s.listed_before_missing = s.listed_before_missing.max(listings);
    s.missing += 1;
    if s.map.is_none() {
        return;
    }
    tracing::warn!(stream = %s.name, "the stream is missing: its shard map is dropped until it can be listed again");
    let mut shards = std::mem::take(&mut s.shards);
    let (unsent, _) = super::order::take_unsent(s, &mut shards, 0, 0);
    s.unmapped = unsent.into();
    s.map = None;
    if s.ordered {
        s.draining = s.in_flight;
    }
    request_refresh(s, now);
}

/// Applies stream `i`'s own per-record limit, as DescribeStreamSummary gave it (or failed to:
/// then the limit stays as it was, 1 MiB at first, which every stream allows).
fn set_record_limit(s: &mut StreamState, cx: &Ctx<'_>, limit: Result<Option<usize>, SinkError>) {
    let limits = match limit {
        Ok(limit) => cx
            .config
            .aggregation
            .for_stream(limit.unwrap_or(MAX_RECORD_SIZE)),
        Err(e) => {
            if !s.record_limit_failed {
                tracing::warn!(stream = %s.name, error = %e, "could not read the stream's record size limit (DescribeStreamSummary); records over 1 MiB are refused until it answers");
            }
            s.record_limit_failed = true;
            return;
        }
    };
    s.record_limit_failed = false;
    if limits == s.limits {
        return;
    }
    tracing::info!(stream = %s.name, max_record_size = limits.max_record_size(), "the stream's record size limit");
    s.limits = limits;
    for k in 0..s.shards.len() {
        retune(s, k);
    }
}

/// Makes `map` stream `i`'s shard map.
pub(super) fn install(s: &mut StreamState, cx: &mut Ctx<'_>, map: ShardMap, now: Instant) {
    tracing::info!(stream = %s.name, shards = map.len(), generation = map.generation(), "shard map");
    // A shard's range never changes while its stream lives: an id with another range is a
    // stream deleted and created again between two of our calls, which no answer showed.
    if let Some(old) = &s.map
        && let Some(id) = old.shards().iter().find_map(|sh| {
            map.range_of(&sh.shard_id)
                .is_some_and(|r| r != (sh.start, sh.end))
                .then_some(&sh.shard_id)
        })
    {
        tracing::warn!(stream = %s.name, shard = %id, "the stream was deleted and created again with other shards: records reported put since the last listing may be in aggregates that KCL consumers drop");
    }
    if s.ordered {
        let shards = shard_states(&map, cx, s.limits, s.ordered, now);
        let old = std::mem::replace(&mut s.shards, shards);
        s.map = Some(map);
        s.flush_unmapped = false;
        return hold_for_new_map(s, old, now);
    }
    // Nothing not yet sent keeps its old packing: an aggregate built for an old shard may
    // straddle the new ones, and would reach consumers that drop what lies outside the
    // shard that takes it. Its user records are packed again for the new map. (Aggregates
    // already in flight are checked against the shard that takes them: see `verify`.)
    // What is queued is older than what is still aggregating: it is packed again first.
    let mut repack: Vec<(Vec<Pending>, Instant)> = Vec::new();
    let mut aggregating: Vec<(Vec<Pending>, Instant)> = Vec::new();
    for shard in &mut s.shards {
        if let Some(a) = shard.aggregator.flush() {
            aggregating.push((a.entries, a.deadline));
        }
    }
    s.aggregators_due = None;
    s.shards = shard_states(&map, cx, s.limits, s.ordered, now);
    let queued = s.ready.take_all(map.generation(), s.shards.len());
    s.forced = 0;
    for mut r in queued {
        if r.record.aggregated {
            repack.push((r.entries, r.deadline));
        } else {
            // A plain record goes where its own key sends it: only its label changes.
            let key = r.entries[0].record().hash_key();
            r.shard = map.lookup(key).map(|index| ShardRef {
                index,
                generation: map.generation(),
            });
            r.expected = r.shard.map(|at| Arc::clone(&s.shards[at.index].id));
            s.ready.push_back(r);
        }
    }
    s.map = Some(map);
    repack.extend(aggregating);
    for (entries, deadline) in repack {
        for pending in entries {
            route(s, cx.ledger, pending, deadline);
        }
    }
    let waiting = std::mem::take(&mut s.unmapped);
    for (pending, deadline) in waiting {
        route(s, cx.ledger, pending, deadline);
    }
    if std::mem::take(&mut s.flush_unmapped) {
        // A flush asked for while they waited for this map: they go now.
        flush_aggregators(s);
        s.forced = s.ready.len();
    }
}

/// Aggregates put on another shard than predicted wait for a listing that names that
/// shard; when listings keep failing (ListShards denied or the stream gone after a split),
/// RecordTtl applies to them as to any record: once their oldest record's TTL has passed,
/// all of them fail as expired, with why (whether KCL consumers keep such an aggregate is
/// unknown without the shard's range: at least once, a record reported failed may be
/// there).
pub(super) fn expire_unverified(s: &mut StreamState, cx: &mut Ctx<'_>, now: Instant) {
    let ttl = cx.config.record_ttl;
    if !s
        .unverified
        .iter()
        .any(|m| unverified_expiry(m, ttl) <= now)
    {
        return;
    }
    let (gone, keep): (Vec<Misrouted>, Vec<Misrouted>) = std::mem::take(&mut s.unverified)
        .into_iter()
        .partition(|m| unverified_expiry(m, ttl) <= now);
    s.unverified = keep;
    for m in gone {
        let error = Arc::new(AttemptError::new(
            "ShardMapUnavailable",
            format!(
                "put on {} in an aggregate that may hold records outside that shard's range, \
                     and no shard map naming {} came (ListShards failing) to tell whether KCL \
                     consumers keep it",
                m.shard_id, m.shard_id
            ),
        ));
        tracing::warn!(shard = %m.shard_id, records = m.ready.entries.len(), "records expired (RecordTtl) waiting for a shard map to verify where they were put");
        for mut pending in m.ready.entries {
            pending.record_failure(m.started, m.duration, Arc::clone(&error));
            let kind = retrier::expiry(ttl, &error);
            cx.ledger.fail(s.index, pending, kind);
        }
    }
}

/// Settles aggregates that landed on another shard than predicted, now that `map` (a fresh
/// listing) may know that shard's range. The KCL drops a **whole** aggregate when any one of
/// its user records has a hash key outside the range of the shard it is read from
/// (`AggregatorUtil.deaggregate`, amazon-kinesis-client): so an aggregate that fits the shard
/// that took it is delivered, all of it, and one that does not is not delivered at all: all
/// its user records go back through aggregation, to the shards they belong to now. An
/// aggregate whose shard the listing does not know yet waits for the next one.
pub(super) fn verify(s: &mut StreamState, ledger: &mut Ledger, map: &ShardMap, now: Instant) {
    let waiting = std::mem::take(&mut s.unverified);
    let mut resend = Vec::new();
    for m in waiting {
        let Some((start, end)) = map.range_of(&m.shard_id) else {
            s.unverified.push(m);
            continue;
        };
        let outside = m.ready.entries.iter().find_map(|p| {
            let key = p.record().hash_key();
            (key < start || key > end).then_some(key)
        });
        let Some(outside) = outside else {
            let put = Arc::new(Put {
                shard_id: m.shard_id,
                sequence_number: m.sequence_number,
                aggregated: true,
                started: m.started,
                duration: m.duration,
            });
            ledger.put_verified(s.index, m.ready, put);
            continue;
        };
        let message = format!(
            "put on {} in an aggregate holding hash key {outside}, outside that shard's range: \
                 KCL consumers drop such an aggregate whole, so all its records are sent again",
            m.shard_id
        );
        let error = Arc::new(AttemptError::new("WrongShard", message));
        for mut pending in m.ready.entries {
            pending.record_failure(m.started, m.duration, Arc::clone(&error));
            resend.push(pending);
        }
    }
    if !resend.is_empty() {
        tracing::info!(
            records = resend.len(),
            "re-sending the records of aggregates that straddled the shard that took them"
        );
    }
    if s.ordered {
        // Older than what is queued for their keys: routed again with it, in order.
        reroute_later(s, resend, now);
    } else {
        for pending in resend {
            route(s, ledger, pending, now);
        }
    }
    if !s.unverified.is_empty() {
        // The listing did not know the shard that took them yet: look again soon.
        s.next_refresh = s.next_refresh.min(now + REFRESH_RETRY);
    }
}

/// When a misrouted aggregate's wait for a listing ends: its oldest record's RecordTtl.
pub(super) fn unverified_expiry(m: &Misrouted, ttl: std::time::Duration) -> Instant {
    m.ready
        .entries
        .iter()
        .map(Pending::arrival)
        .min()
        .map_or(m.started, |a| a + ttl)
}

/// The state of each open shard of `map` for this core. With several cores, which shards a core
/// owns (sends to, samples) depends on how records reach it: with per-key ordering each core is
/// given its part of the key space, so it owns the shards that part reaches, aiming at its share
/// of each (`Part::share_of`); without, records come to the core that owns their shard
/// (`part::owner`, as the producer's table routes them), at each shard's whole rate (a record
/// routed under an older table may still reach another core, which sends it all the same).
fn shard_states(
    map: &ShardMap,
    cx: &Ctx<'_>,
    limits: crate::aggregation::AggregationLimits,
    ordered: bool,
    now: Instant,
) -> Vec<ShardState> {
    let open = map.shards().len();
    map.shards()
        .iter()
        .enumerate()
        .map(|(i, sh)| {
            let (share, owned) = if ordered || cx.part.of == 1 {
                let share = cx.part.share_of(sh.start.0, sh.end.0);
                (share.unwrap_or(super::part::MIN_SHARE), share.is_some())
            } else {
                (
                    1.0,
                    super::part::owner(i, open, cx.part.of) == cx.part.index,
                )
            };
            ShardState::new(&sh.shard_id, cx.config, limits, share, owned, now)
        })
        .collect()
}
