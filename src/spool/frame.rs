//! How a record is laid out in a spool segment, and how a segment is read back.
//!
//! A segment starts with [`HEADER`] (magic and version), then holds frames, one per record:
//!
//! ```text
//! u32 LE  payload length (1 ..= MAX_PAYLOAD)
//! u32 LE  CRC-32 of the length's 4 bytes and the payload
//! payload u8 flags (bit 0: explicit hash key)
//!         u16 LE stream name length, stream name
//!         u16 LE partition key length, partition key
//!         16 bytes explicit hash key (big-endian), when flagged
//!         data (the rest)
//! ```
//!
//! The checksum covers the length too, so a length torn or flipped is caught before it is
//! trusted. Reading is pure: [`read_segment`] takes a segment's bytes and says which records it
//! holds and where, if anywhere, it stops being whole, and why.

use std::sync::Arc;

use bytes::Bytes;

use crate::hash_key::HashKey;
use crate::record::UserRecord;

/// What every segment starts with: magic and format version 1.
pub(crate) const HEADER: &[u8; 12] = b"KPLSPOOL\x01\x00\x00\x00";

/// Bytes before a frame's payload: its length and checksum.
pub(crate) const FRAME_HEAD: usize = 8;

/// The largest payload a frame may claim: a 10 MiB record (the largest Kinesis takes) with its
/// stream name and key. A length above it is damage, not a record.
pub(crate) const MAX_PAYLOAD: usize = 10 * 1024 * 1024 + 1024;

/// The bytes `record`, bound for `stream`, takes in a segment.
pub(crate) fn frame_len(stream: &str, record: &UserRecord) -> usize {
    let explicit = if record.explicit_hash_key().is_some() {
        16
    } else {
        0
    };
    FRAME_HEAD
        + 1
        + 2
        + stream.len()
        + 2
        + record.partition_key().len()
        + explicit
        + record.data().len()
}

/// Appends the frame of `record`, bound for `stream`, to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, stream: &str, record: &UserRecord) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    let explicit = record.explicit_hash_key();
    out.push(u8::from(explicit.is_some()));
    // Stream names are at most 128 characters and partition keys 256: both fit in a u16.
    out.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    out.extend_from_slice(stream.as_bytes());
    let key = record.partition_key();
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    if let Some(HashKey(k)) = explicit {
        out.extend_from_slice(&k.to_be_bytes());
    }
    out.extend_from_slice(record.data());
    let len = (out.len() - start - FRAME_HEAD) as u32;
    let len = len.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(&out[start + FRAME_HEAD..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// A record read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) stream: Arc<str>,
    pub(crate) record: UserRecord,
}

/// Where and why a segment stops being whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damage {
    /// The last write was cut short (a crash while appending): from `offset` on, the bytes are a
    /// frame begun and not finished, or zeros a file system left after extending the file. Cut
    /// there, nothing acknowledged is lost.
    Torn { offset: usize },
    /// A whole-looking frame at `offset` fails its checksum or cannot be a record, with more
    /// data after it: the segment was damaged after it was written.
    Corrupt { offset: usize },
    /// The segment does not start with [`HEADER`] and holds more than zeros.
    NotASegment,
}

/// What a segment holds.
#[derive(Debug, Default)]
pub(crate) struct Read {
    /// Every whole record before any damage, in the order written.
    pub(crate) records: Vec<Stored>,
    /// The bytes up to the end of the last whole record (the header included).
    pub(crate) whole: usize,
    pub(crate) damage: Option<Damage>,
}

/// Reads a segment's bytes.
pub(crate) fn read_segment(bytes: &[u8]) -> Read {
    let mut read = Read::default();
    if bytes.len() < HEADER.len() {
        // A segment created and cut short before its header was written is torn at 0; one
        // that holds something else is not ours.
        if HEADER.starts_with(bytes) || zeros(bytes) {
            read.damage = (!bytes.is_empty()).then_some(Damage::Torn { offset: 0 });
        } else {
            read.damage = Some(Damage::NotASegment);
        }
        return read;
    }
    if &bytes[..HEADER.len()] != HEADER {
        read.damage = Some(if zeros(bytes) {
            Damage::Torn { offset: 0 }
        } else {
            Damage::NotASegment
        });
        return read;
    }
    let mut at = HEADER.len();
    read.whole = at;
    while at < bytes.len() {
        match frame_at(bytes, at) {
            Frame::Whole { stored, next } => {
                read.records.push(stored);
                at = next;
                read.whole = at;
            }
            Frame::Short => {
                read.damage = Some(Damage::Torn { offset: at });
                return read;
            }
            Frame::Bad { end } => {
                // A bad frame that ends the file is the last write torn (its pages partly
                // persisted), as is a run of zeros to the end; anything else is damage.
                let torn = end >= bytes.len() || zeros(&bytes[at..]);
                read.damage = Some(if torn {
                    Damage::Torn { offset: at }
                } else {
                    Damage::Corrupt { offset: at }
                });
                return read;
            }
        }
    }
    read
}

fn zeros(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

enum Frame {
    Whole {
        stored: Stored,
        next: usize,
    },
    /// The file ends within the frame.
    Short,
    /// The frame is whole but wrong; it would end at `end`.
    Bad {
        end: usize,
    },
}

fn frame_at(bytes: &[u8], at: usize) -> Frame {
    let Some(head) = bytes.get(at..at + FRAME_HEAD) else {
        return Frame::Short;
    };
    let len_bytes: [u8; 4] = head[..4].try_into().expect("4 bytes");
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    let start = at + FRAME_HEAD;
    if len == 0 || len > MAX_PAYLOAD {
        return Frame::Bad { end: start };
    }
    let Some(payload) = bytes.get(start..start + len) else {
        return Frame::Short;
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    let end = start + len;
    if hasher.finalize() != crc {
        return Frame::Bad { end };
    }
    match decode(payload) {
        Some(stored) => Frame::Whole { stored, next: end },
        None => Frame::Bad { end },
    }
}

/// A payload whose checksum held, as a record (`None` if it cannot be one: a frame written by
/// something else).
fn decode(payload: &[u8]) -> Option<Stored> {
    let (&flags, rest) = payload.split_first()?;
    let (stream, rest) = string(rest)?;
    let (key, rest) = string(rest)?;
    let (explicit, data) = if flags & 1 == 1 {
        let (k, rest) = rest.split_at_checked(16)?;
        (Some(HashKey(u128::from_be_bytes(k.try_into().ok()?))), rest)
    } else {
        (None, rest)
    };
    let mut record = UserRecord::new(key, Bytes::copy_from_slice(data)).ok()?;
    if let Some(k) = explicit {
        record = record.with_explicit_hash_key(k);
    }
    Some(Stored {
        stream: Arc::from(stream),
        record,
    })
}

fn string(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = bytes.split_at_checked(2)?;
    let len = u16::from_le_bytes(len.try_into().ok()?) as usize;
    let (s, rest) = rest.split_at_checked(len)?;
    Some((std::str::from_utf8(s).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[(&str, UserRecord)]) -> Vec<u8> {
        let mut out = HEADER.to_vec();
        for (stream, record) in records {
            let before = out.len();
            encode(&mut out, stream, record);
            assert_eq!(out.len() - before, frame_len(stream, record));
        }
        out
    }

    fn records(n: usize) -> Vec<(&'static str, UserRecord)> {
        (0..n)
            .map(|i| {
                let r =
                    UserRecord::new(format!("key-{i}"), format!("data {i}").into_bytes()).unwrap();
                let r = if i % 3 == 0 {
                    r.with_explicit_hash_key(HashKey(i as u128 * 7))
                } else {
                    r
                };
                (if i % 2 == 0 { "a" } else { "stream-b" }, r)
            })
            .collect()
    }

    #[test]
    fn records_come_back_as_written() {
        let written = records(10);
        let bytes = segment(&written);
        let read = read_segment(&bytes);
        assert_eq!(read.damage, None);
        assert_eq!(read.whole, bytes.len());
        let back: Vec<(&str, UserRecord)> = read
            .records
            .iter()
            .map(|s| (&*s.stream, s.record.clone()))
            .collect();
        assert_eq!(back, written);
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_record_wherever_it_is_cut() {
        let written = records(5);
        let bytes = segment(&written);
        let ends: Vec<usize> = (0..=5).map(|n| segment(&written[..n]).len()).collect();
        for cut in 0..bytes.len() {
            let read = read_segment(&bytes[..cut]);
            // `ends[0]` is the header's end: records whole by `cut` are one fewer than ends.
            let whole = ends.iter().filter(|&&e| e <= cut).count().saturating_sub(1);
            assert_eq!(read.records.len(), whole, "cut at {cut}");
            if cut >= HEADER.len() {
                assert_eq!(read.whole, ends[whole]);
            }
            let expect =
                (!ends.contains(&cut) && cut > 0).then_some(Damage::Torn { offset: read.whole });
            assert_eq!(read.damage, expect, "cut at {cut}");
        }
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let mut bytes = segment(&records(3));
        let whole = bytes.len();
        bytes.extend_from_slice(&[0; 4096]);
        let read = read_segment(&bytes);
        assert_eq!(read.records.len(), 3);
        assert_eq!(read.damage, Some(Damage::Torn { offset: whole }));
    }

    #[test]
    fn a_flipped_byte_in_the_middle_is_corruption_at_its_frame() {
        let written = records(6);
        let bytes = segment(&written);
        let third = segment(&written[..2]).len();
        for at in third..segment(&written[..3]).len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            let read = read_segment(&damaged);
            assert_eq!(read.records.len(), 2, "flip at {at}");
            assert_eq!(read.whole, third);
            // A length made longer than what follows reads as a frame cut short: the rest is
            // cut as a torn tail (and reported with its size).
            let expect = if at == third + 1 || at == third + 2 {
                Damage::Torn { offset: third }
            } else {
                Damage::Corrupt { offset: third }
            };
            assert_eq!(read.damage, Some(expect), "flip at {at}");
        }
    }

    #[test]
    fn a_flipped_byte_in_the_last_frame_is_a_torn_tail() {
        let written = records(3);
        let mut bytes = segment(&written);
        let last = segment(&written[..2]).len();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        let read = read_segment(&bytes);
        assert_eq!(read.records.len(), 2);
        assert_eq!(read.damage, Some(Damage::Torn { offset: last }));
    }

    proptest::proptest! {
        /// Whatever a file holds, reading it never panics, never reads past its end, and what it
        /// keeps is a prefix of whole frames: reading that prefix again gives the same records
        /// and no damage.
        #[test]
        fn any_bytes_read_without_panic_into_a_whole_prefix(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            with_header in proptest::prelude::any::<bool>(),
            keep in 0usize..6,
        ) {
            let mut bytes = if with_header { segment(&records(5)[..keep.min(5)]) } else { Vec::new() };
            bytes.extend_from_slice(&tail);
            let read = read_segment(&bytes);
            proptest::prop_assert!(read.whole <= bytes.len());
            let again = read_segment(&bytes[..read.whole]);
            proptest::prop_assert_eq!(again.records, read.records.clone());
            proptest::prop_assert_eq!(again.damage, None);
            if with_header {
                proptest::prop_assert!(read.records.len() >= keep.min(5));
            }
        }
    }

    #[test]
    fn something_else_is_not_a_segment() {
        assert_eq!(
            read_segment(b"hello world, not ours").damage,
            Some(Damage::NotASegment)
        );
        assert_eq!(read_segment(b"").damage, None);
        assert_eq!(
            read_segment(b"KPLS").damage,
            Some(Damage::Torn { offset: 0 })
        );
    }
}
