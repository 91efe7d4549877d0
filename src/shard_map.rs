//! Which shard owns which hash keys: built from ListShards, looked up for every record.

use crate::hash_key::HashKey;

/// One open shard and the inclusive range of hash keys it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The shard's id, e.g. `shardId-000000000003`.
    pub shard_id: String,
    /// First hash key it owns.
    pub start: HashKey,
    /// Last hash key it owns (inclusive).
    pub end: HashKey,
    /// Closed by a split or merge: takes no new records, but still holds (and consumers still
    /// read, filtered by its range) what was written to it.
    pub closed: bool,
}

/// A snapshot of a stream's shards (lookups use the open ones), sorted by hash range, stamped with the generation it
/// was fetched at so a late answer to an old refresh never replaces a newer map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardMap {
    /// Open shards, sorted by range: what lookups search.
    shards: Vec<Shard>,
    /// Every shard listed, closed ones included, by id: the ranges consumers filter by.
    ranges: std::collections::HashMap<String, (HashKey, HashKey)>,
    generation: u64,
}

impl ShardMap {
    /// A map of `shards` (any order), stamped with `generation`. Shards whose ranges are
    /// inverted are dropped; a gap (possible in a snapshot taken mid-resharding) makes lookups
    /// in it return `None`, and the records there go out unaggregated, routed by Kinesis itself.
    pub fn new(mut shards: Vec<Shard>, generation: u64) -> ShardMap {
        shards.retain(|s| s.start <= s.end);
        let ranges = shards
            .iter()
            .map(|s| (s.shard_id.clone(), (s.start, s.end)))
            .collect();
        shards.retain(|s| !s.closed);
        shards.sort_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then_with(|| a.shard_id.cmp(&b.shard_id))
        });
        ShardMap {
            shards,
            ranges,
            generation,
        }
    }

    /// The hash key range of any listed shard, closed ones included.
    pub fn range_of(&self, shard_id: &str) -> Option<(HashKey, HashKey)> {
        self.ranges.get(shard_id).copied()
    }

    /// The generation this map was fetched at.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The open shards, sorted by hash range.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// The index (into [`shards`](Self::shards)) of the shard that owns `key`, if any.
    pub fn lookup(&self, key: HashKey) -> Option<usize> {
        // The last shard starting at or before the key; it owns the key if its range reaches it.
        let i = self
            .shards
            .partition_point(|s| s.start <= key)
            .checked_sub(1)?;
        (self.shards[i].end >= key).then_some(i)
    }

    /// Whether the open shards cover the whole hash key space without gaps or overlaps, as they
    /// do outside a resharding. (The tests' check of the maps `even_split` builds.)
    #[cfg(test)]
    pub fn is_complete(&self) -> bool {
        let mut next = Some(HashKey::MIN);
        for s in &self.shards {
            if Some(s.start) != next {
                return false;
            }
            next = s.end.0.checked_add(1).map(HashKey);
        }
        next.is_none() && !self.shards.is_empty()
    }
}

/// The hash ranges AWS gives `n` evenly split shards: shard i owns
/// `[i * floor(2^128 / n), (i + 1) * floor(2^128 / n) - 1]`, the last one ending at 2^128-1.
pub fn even_split(n: usize) -> Vec<(HashKey, HashKey)> {
    assert!(n > 0, "a stream has at least one shard");
    if n == 1 {
        return vec![(HashKey::MIN, HashKey::MAX)];
    }
    // floor(2^128 / n) without 2^128: floor((2^128 - 1) / n), plus one when n divides 2^128.
    let n128 = n as u128;
    let step = u128::MAX / n128 + u128::from(u128::MAX % n128 == n128 - 1);
    (0..n128)
        .map(|i| {
            let start = i * step;
            let end = if i + 1 == n128 {
                u128::MAX
            } else {
                (i + 1) * step - 1
            };
            (HashKey(start), HashKey(end))
        })
        .collect()
}

/// `n` open shards splitting the hash key space evenly, named as Kinesis names a new stream's.
#[cfg(test)]
pub(crate) fn even_shards(n: usize) -> Vec<Shard> {
    even_split(n)
        .into_iter()
        .enumerate()
        .map(|(i, (start, end))| Shard {
            shard_id: format!("shardId-{i:012}"),
            start,
            end,
            closed: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: usize) -> ShardMap {
        let shards = even_shards(n).into_iter().rev().collect();
        ShardMap::new(shards, 1)
    }

    #[test]
    fn even_split_matches_aws() {
        let two = even_split(2);
        assert_eq!(two[0], (HashKey(0), HashKey((1 << 127) - 1)));
        assert_eq!(two[1], (HashKey(1 << 127), HashKey::MAX));
        // 4 shards: 85070591730234615865843651857942052864 is 2^126.
        assert_eq!(
            even_split(4)[1].0.to_string(),
            "85070591730234615865843651857942052864"
        );
        let three = even_split(3);
        assert_eq!(
            three[1].0.to_string(),
            "113427455640312821154458202477256070485"
        );
        assert_eq!(three[2].1, HashKey::MAX);
    }

    #[test]
    fn lookup_at_the_edges() {
        for n in [1, 2, 3, 4, 7, 64] {
            let m = map(n);
            assert!(m.is_complete(), "{n}");
            for (i, s) in m.shards().iter().enumerate() {
                assert_eq!(m.lookup(s.start), Some(i));
                assert_eq!(m.lookup(s.end), Some(i));
            }
            assert_eq!(m.lookup(HashKey::MIN), Some(0));
            assert_eq!(m.lookup(HashKey::MAX), Some(n - 1));
        }
    }

    #[test]
    fn gaps_are_not_covered() {
        let m = ShardMap::new(
            vec![
                Shard {
                    shard_id: "a".into(),
                    start: HashKey(0),
                    end: HashKey(9),
                    closed: false,
                },
                Shard {
                    shard_id: "b".into(),
                    start: HashKey(20),
                    end: HashKey::MAX,
                    closed: false,
                },
                Shard {
                    shard_id: "old".into(),
                    start: HashKey(0),
                    end: HashKey::MAX,
                    closed: true,
                },
            ],
            3,
        );
        assert!(!m.is_complete());
        assert_eq!(m.lookup(HashKey(9)), Some(0));
        assert_eq!(m.lookup(HashKey(10)), None);
        assert_eq!(m.lookup(HashKey(20)), Some(1));
        assert_eq!(m.generation(), 3);
        assert_eq!(m.len(), 2, "closed shards take no records");
        assert_eq!(m.range_of("old"), Some((HashKey(0), HashKey::MAX)));
        assert_eq!(m.range_of("b"), Some((HashKey(20), HashKey::MAX)));
        assert_eq!(m.range_of("nope"), None);
        assert_eq!(ShardMap::new(vec![], 0).lookup(HashKey(5)), None);
    }
}
