//! Which engine core takes which records, when the engine runs one core per CPU.
//!
//! Without per-key ordering, a record goes to the core that owns its shard: a stream's open
//! shards, in hash key order, are cut into contiguous runs, one per core ([`owner`], [`Table`],
//! made from each listing), so no shard is written by two cores.
//!
//! With per-key ordering, a key must stay on one core whatever the shard map does: the key space
//! is cut into `of` contiguous parts by the top 64 bits of the hash key ([`Part`]), and core
//! `index` takes every record whose key falls in part `index` (also what every stream does
//! before its first listing). The cut never moves, so per-key order and a record's place are
//! each core's own business (`order.rs` holds per core exactly as it held for one), and a change
//! of shard map moves nothing between cores.
//!
//! A shard whose hash range crosses a cut is written by the cores on both sides. Each core's
//! limiter for it then aims at its part of the shard's limits: the share of the shard's range it
//! owns, which is the share of its traffic when keys are spread evenly (MD5 of partition keys
//! is), never less than [`MIN_SHARE`]. Power-of-two shard counts on a power-of-two number of
//! cores cross no cut (both cut the space evenly).

/// Which engine core owns open shard `index` of `open` (in hash key order) of a stream whose
/// records are routed by shard (without per-key ordering): contiguous runs of shards, as even
/// as they can be, so that no shard is written by two cores and no core owns none while there
/// are at least as many shards as cores.
pub(crate) fn owner(index: usize, open: usize, of: usize) -> usize {
    index * of / open.max(1)
}

/// Which of `of` cores takes a record of hash key `key`: the owner of its shard by the stream's
/// `table` when records are routed by shard and a listing made one; else the core of its part
/// of the key space.
#[inline]
pub(crate) fn core_for(table: Option<&Table>, key: u128, of: usize) -> usize {
    match table {
        Some(t) => t.core_of(key),
        None => Part::index_of(key, of),
    }
}

/// A stream's open shards and the core that owns each ([`owner`]), for routing a record by
/// shard on the caller's side. Built from a listing, the same way each core reads its map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    /// Each open shard's first hash key, ascending.
    starts: Vec<u128>,
    /// The core owning each.
    cores: Vec<u32>,
}

impl Table {
    /// The table of a map's open shards, `(start, end)` in hash key order, over `of` cores;
    /// `None` for a map with none.
    pub(crate) fn new(open: &[(u128, u128)], of: usize) -> Option<Table> {
        if open.is_empty() {
            return None;
        }
        Some(Table {
            starts: open.iter().map(|s| s.0).collect(),
            cores: (0..open.len())
                .map(|i| owner(i, open.len(), of) as u32)
                .collect(),
        })
    }

    /// The table of the shards a listing found, read as each core reads its map (the open
    /// shards, in hash key order).
    pub(crate) fn from_listing(shards: &[crate::shard_map::Shard], of: usize) -> Option<Table> {
        let map = crate::shard_map::ShardMap::new(shards.to_vec(), 0);
        let open: Vec<(u128, u128)> = map.shards().iter().map(|s| (s.start.0, s.end.0)).collect();
        Table::new(&open, of)
    }

    /// The core that owns the shard holding `key` (in a gap of a map taken mid-resharding, the
    /// shard before it: any core may send anything, this only keeps shards whole).
    #[inline]
    pub(crate) fn core_of(&self, key: u128) -> usize {
        let i = self.starts.partition_point(|&s| s <= key).saturating_sub(1);
        self.cores[i] as usize
    }
}

/// The least share of a shard's limits a core aims at: a core that owns a sliver of a shard
/// still sends at a useful pace (throttling, if the sliver is busy, brings it down).
pub(crate) const MIN_SHARE: f64 = 0.05;

/// Part `index` of `of` parts of the hash key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) index: usize,
    pub(crate) of: usize,
}

impl Part {
    /// The whole key space: one core.
    #[cfg(test)]
    pub(crate) const WHOLE: Part = Part { index: 0, of: 1 };

    /// The part of `of` that `key` falls in.
    #[inline]
    pub(crate) fn index_of(key: u128, of: usize) -> usize {
        // floor(top64 * of / 2^64): a multiply and a shift, no division on the send path.
        let top = (key >> 64) as u64;
        ((u128::from(top) * of as u128) >> 64) as usize
    }

    /// The first and last hash keys of this part (inclusive).
    pub(crate) fn range(self) -> (u128, u128) {
        let start = |i: usize| -> u128 {
            // ceil(i * 2^64 / of): the least top64 whose part is i.
            let n = (i as u128) << 64;
            let of = self.of as u128;
            n.div_ceil(of)
        };
        let lo = start(self.index) << 64;
        let hi = if self.index + 1 == self.of {
            u128::MAX
        } else {
            (start(self.index + 1) << 64) - 1
        };
        (lo, hi)
    }

    /// How many of `total` connections (`MaxConnections`) this part's core may use: an even
    /// share, the first cores taking one more each until the remainder is used. At least one
    /// when there are no more cores than connections (the producer sees to that).
    pub(crate) fn connections(self, total: usize) -> usize {
        total / self.of + usize::from(self.index < total % self.of)
    }

    /// The share of a shard's limits this part's core aims at, for a shard whose hash range is
    /// `start..=end`: the share of that range it owns, at least [`MIN_SHARE`]; `None` when it
    /// owns no key of it (and so never sends to it).
    pub(crate) fn share_of(self, start: u128, end: u128) -> Option<f64> {
        if self.of == 1 {
            return Some(1.0);
        }
        let (lo, hi) = self.range();
        let (a, b) = (start.max(lo), end.min(hi));
        if a > b || end < start {
            return None;
        }
        // Widths as f64: 2^128 is not a u128, and the share needs no more than f64 precision.
        let owned = (b - a) as f64 + 1.0;
        let whole = (end - start) as f64 + 1.0;
        Some((owned / whole).clamp(MIN_SHARE, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_part_is_everything() {
        assert_eq!(Part::WHOLE.range(), (0, u128::MAX));
        assert_eq!(Part::index_of(u128::MAX, 1), 0);
        assert_eq!(Part::WHOLE.share_of(5, 10), Some(1.0));
    }

    #[test]
    fn two_parts_cut_at_the_middle() {
        let half = 1u128 << 127;
        assert_eq!(Part { index: 0, of: 2 }.range(), (0, half - 1));
        assert_eq!(Part { index: 1, of: 2 }.range(), (half, u128::MAX));
        // The four shards CreateStream makes cross no cut.
        let quarter = 1u128 << 126;
        let first = Part { index: 0, of: 2 };
        assert_eq!(first.share_of(0, quarter - 1), Some(1.0));
        assert_eq!(first.share_of(half, half + quarter - 1), None);
        // Three shards: the middle one is cut in two.
        let third = u128::MAX / 3;
        let share = first.share_of(third + 1, 2 * third).unwrap();
        assert!((share - 0.5).abs() < 1e-9, "{share}");
    }

    #[test]
    fn a_table_gives_each_shard_to_one_core_in_runs() {
        let q = 1u128 << 126;
        let four = [
            (0, q - 1),
            (q, 2 * q - 1),
            (2 * q, 3 * q - 1),
            (3 * q, u128::MAX),
        ];
        let t = Table::new(&four, 2).unwrap();
        let cores: Vec<usize> = four.iter().map(|s| t.core_of(s.0)).collect();
        assert_eq!(cores, [0, 0, 1, 1]);
        assert_eq!(t.core_of(q - 1), 0);
        assert_eq!(t.core_of(u128::MAX), 1);
        // Fewer shards than cores: each shard one core, whole.
        let t = Table::new(&four[..1], 8).unwrap();
        assert_eq!((t.core_of(0), t.core_of(u128::MAX)), (0, 0));
        let three = Table::new(&four[..3], 2).unwrap();
        assert_eq!(
            (0..3).map(|i| three.core_of(four[i].0)).collect::<Vec<_>>(),
            [0, 0, 1]
        );
        assert_eq!(Table::new(&[], 2), None);
        // Every core owns some shard when there are enough.
        for open in 1..40 {
            for of in 1..=open {
                let owners: std::collections::BTreeSet<usize> =
                    (0..open).map(|i| owner(i, open, of)).collect();
                assert_eq!(owners.len(), of, "{open} shards, {of} cores");
            }
        }
    }

    #[test]
    fn connections_are_shared_out_whole() {
        for total in 1..=40 {
            for of in 1..=total {
                let shares: Vec<usize> = (0..of)
                    .map(|index| Part { index, of }.connections(total))
                    .collect();
                assert_eq!(shares.iter().sum::<usize>(), total);
                assert!(shares.iter().all(|&c| c >= 1));
            }
        }
    }

    proptest! {
        /// Every key falls in the part whose range holds it, and the parts tile the space.
        #[test]
        fn parts_tile_the_key_space(key in any::<u128>(), of in 1usize..=256) {
            let i = Part::index_of(key, of);
            prop_assert!(i < of);
            let (lo, hi) = Part { index: i, of }.range();
            prop_assert!(lo <= key && key <= hi);
            prop_assert_eq!(Part::index_of(lo, of), i);
            prop_assert_eq!(Part::index_of(hi, of), i);
            if i + 1 < of {
                prop_assert_eq!(Part { index: i + 1, of }.range().0, hi + 1);
            }
        }

        /// A shard's shares over all parts add up to 1 (but for the floor).
        #[test]
        fn shares_of_a_shard_add_up(a in any::<u128>(), b in any::<u128>(), of in 1usize..=16) {
            let (start, end) = (a.min(b), a.max(b));
            let owned: f64 = (0..of)
                .map(|index| Part { index, of })
                .filter_map(|p| p.share_of(start, end))
                .sum();
            prop_assert!(owned >= 1.0 - 1e-9, "{owned}");
            prop_assert!(owned <= 1.0 + of as f64 * MIN_SHARE);
        }
    }
}
