//! Exact-size building and encoding of one aggregate.
//!
//! The packer keeps, for the user records added so far, the deduplicated key tables and the exact
//! length of the protobuf body they would encode to, updated in O(1) per record. Encoding then
//! writes the protobuf by hand straight into the output buffer (one copy of each record's data)
//! in field-number order, which is the order every proto2 encoder (protobuf-python, the KPL's
//! C++, prost) writes, so the bytes equal theirs.

use std::hash::BuildHasher;

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use md5::{Digest, Md5};

use super::{DIGEST_LEN, MAGIC};
use crate::hash_key::HashKey;

// Protobuf keys (field number << 3 | wire type) of the fields we write. All fields are numbered
// below 16, so each key is one byte.
const KEY_PARTITION_KEY_TABLE: u8 = (1 << 3) | 2;
const KEY_EXPLICIT_HASH_KEY_TABLE: u8 = (2 << 3) | 2;
const KEY_RECORDS: u8 = (3 << 3) | 2;
const KEY_RECORD_PARTITION_KEY_INDEX: u8 = 1 << 3;
const KEY_RECORD_EXPLICIT_HASH_KEY_INDEX: u8 = 2 << 3;
const KEY_RECORD_DATA: u8 = (3 << 3) | 2;

/// Bytes a varint encoding of `v` takes.
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits; 0 still takes one byte.
    (64 - (v | 1).leading_zeros()).div_ceil(7) as usize
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Length of a length-delimited field (one-byte key) with a payload of `len` bytes.
#[inline]
fn delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Length of the body of one `Record` message.
#[inline]
fn record_body_len(pk_index: u32, ehk_index: Option<u32>, data_len: usize) -> usize {
    1 + varint_len(pk_index as u64)
        + ehk_index.map_or(0, |i| 1 + varint_len(i as u64))
        + delimited_len(data_len)
}

/// Where a user record's keys would go in the tables, found by [`Packer::probe`] and committed
/// by [`Packer::commit`] without hashing twice.
pub(crate) struct Probe {
    pk: Result<u32, u64>,
    ehk: Option<Result<u32, u128>>,
    /// Bytes the protobuf body grows by if the record is committed.
    pub(crate) growth: usize,
}

#[derive(Clone, Copy)]
struct Slot {
    pk_index: u32,
    ehk_index: Option<u32>,
}

/// Key tables and exact body length of one aggregate under construction.
#[derive(Default)]
pub(crate) struct Packer {
    /// Partition keys in table order, concatenated; `pk_spans[i]` locates key `i`. One arena
    /// instead of a `String` per key keeps a push free of allocation once warmed up.
    pk_arena: String,
    pk_spans: Vec<(u32, u32)>,
    /// Partition key index by key, hashing the key's bytes in `pk_arena`.
    pk_lookup: HashTable<u32>,
    hasher: DefaultHashBuilder,
    ehk_order: Vec<HashKey>,
    ehk_lookup: HashMap<HashKey, u32>,
    slots: Vec<Slot>,
    body_len: usize,
}

impl Packer {
    fn pk_at<'a>(arena: &'a str, spans: &[(u32, u32)], index: u32) -> &'a str {
        let (start, len) = spans[index as usize];
        &arena[start as usize..(start + len) as usize]
    }

    /// Length of the protobuf body for the records committed so far.
    pub(crate) fn body_len(&self) -> usize {
        self.body_len
    }

    /// Number of records committed.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Where a record's keys would go and how much the body would grow if it were added.
    pub(crate) fn probe(
        &self,
        partition_key: &str,
        ehk: Option<HashKey>,
        data_len: usize,
    ) -> Probe {
        let mut growth = 0;
        let hash = self.hasher.hash_one(partition_key);
        let pk = match self.pk_lookup.find(hash, |&i| {
            Self::pk_at(&self.pk_arena, &self.pk_spans, i) == partition_key
        }) {
            Some(&i) => Ok(i),
            None => {
                growth += delimited_len(partition_key.len());
                Err(hash)
            }
        };
        let ehk = ehk.map(|key| match self.ehk_lookup.get(&key) {
            Some(&i) => Ok(i),
            None => {
                growth += delimited_len(key.decimal_len());
                Err(key.0)
            }
        });
        let pk_index = pk.unwrap_or(self.pk_spans.len() as u32);
        let ehk_index = ehk.map(|e| e.unwrap_or(self.ehk_order.len() as u32));
        growth += delimited_len(record_body_len(pk_index, ehk_index, data_len));
        Probe { pk, ehk, growth }
    }

    /// Adds a record whose [`Probe`] was just taken (nothing committed in between).
    pub(crate) fn commit(&mut self, partition_key: &str, probe: Probe) {
        let pk_index = match probe.pk {
            Ok(i) => i,
            Err(hash) => {
                let index = self.pk_spans.len() as u32;
                let start = self.pk_arena.len() as u32;
                self.pk_arena.push_str(partition_key);
                self.pk_spans.push((start, partition_key.len() as u32));
                let (arena, spans, hasher) = (&self.pk_arena, &self.pk_spans, &self.hasher);
                self.pk_lookup.insert_unique(hash, index, |&i| {
                    hasher.hash_one(Self::pk_at(arena, spans, i))
                });
                index
            }
        };
        let ehk_index = probe.ehk.map(|e| match e {
            Ok(i) => i,
            Err(key) => {
                let index = self.ehk_order.len() as u32;
                self.ehk_order.push(HashKey(key));
                self.ehk_lookup.insert(HashKey(key), index);
                index
            }
        });
        self.slots.push(Slot {
            pk_index,
            ehk_index,
        });
        self.body_len += probe.growth;
    }

    /// Writes magic + protobuf + MD5 for the committed records, given their data in the order
    /// they were committed, and resets the packer for the next aggregate.
    pub(crate) fn encode_and_reset<'a>(&mut self, data: impl Iterator<Item = &'a [u8]>) -> Bytes {
        let total = MAGIC.len() + self.body_len + DIGEST_LEN;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&MAGIC);
        for &(start, len) in &self.pk_spans {
            out.push(KEY_PARTITION_KEY_TABLE);
            put_varint(&mut out, len as u64);
            out.extend_from_slice(
                &self.pk_arena.as_bytes()[start as usize..(start + len) as usize],
            );
        }
        for key in &self.ehk_order {
            out.push(KEY_EXPLICIT_HASH_KEY_TABLE);
            put_varint(&mut out, key.decimal_len() as u64);
            // u128's Display writes digits with no allocation of its own.
            use std::io::Write;
            write!(out, "{}", key.0).expect("writing to a Vec cannot fail");
        }
        let mut records = 0;
        for (slot, data) in self.slots.iter().zip(data) {
            out.push(KEY_RECORDS);
            put_varint(
                &mut out,
                record_body_len(slot.pk_index, slot.ehk_index, data.len()) as u64,
            );
            out.push(KEY_RECORD_PARTITION_KEY_INDEX);
            put_varint(&mut out, slot.pk_index as u64);
            if let Some(i) = slot.ehk_index {
                out.push(KEY_RECORD_EXPLICIT_HASH_KEY_INDEX);
                put_varint(&mut out, i as u64);
            }
            out.push(KEY_RECORD_DATA);
            put_varint(&mut out, data.len() as u64);
            out.extend_from_slice(data);
            records += 1;
        }
        debug_assert_eq!(
            records,
            self.slots.len(),
            "one data slice per committed record"
        );
        let digest = Md5::digest(&out[MAGIC.len()..]);
        out.extend_from_slice(&digest);
        // The size accounting is the product's promise (limits are enforced on it): every test
        // build checks it on every aggregate; the property tests check it on random input.
        debug_assert_eq!(
            out.len(),
            total,
            "predicted aggregate size must equal the encoded size"
        );
        self.reset();
        Bytes::from(out)
    }

    /// Empties the packer, keeping its allocations.
    pub(crate) fn reset(&mut self) {
        self.pk_arena.clear();
        self.pk_spans.clear();
        self.pk_lookup.clear();
        self.ehk_order.clear();
        self.ehk_lookup.clear();
        self.slots.clear();
        self.body_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(out.len(), prost::encoding::encoded_len_varint(v), "{v}");
        }
    }
}
