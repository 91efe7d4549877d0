//! Hash keys: where a record lands in a stream's 128-bit key space.
//!
//! Kinesis routes a record by its hash key: the caller's explicit hash key if given, otherwise
//! the MD5 of the partition key's UTF-8 bytes read as a big-endian unsigned 128-bit integer.
//! Each open shard owns an inclusive range of that space.

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::error::{RecordError, Shown};

/// The most Unicode characters a partition key may have (Kinesis API: `PartitionKey`).
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// A point in a stream's hash key space, `0 ..= 2^128-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashKey(pub u128);

impl HashKey {
    /// The smallest hash key.
    pub const MIN: HashKey = HashKey(0);
    /// The largest hash key, 2^128-1.
    pub const MAX: HashKey = HashKey(u128::MAX);

    /// The hash key Kinesis gives a partition key: MD5 of its UTF-8 bytes, big-endian.
    pub fn from_partition_key(partition_key: &str) -> HashKey {
        let digest: [u8; 16] = Md5::digest(partition_key.as_bytes()).into();
        HashKey(u128::from_be_bytes(digest))
    }

    /// The number of decimal digits in this key: its byte length in the explicit hash key table.
    pub fn decimal_len(self) -> usize {
        self.0.checked_ilog10().map_or(1, |d| d as usize + 1)
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for HashKey {
    type Err = RecordError;

    /// Parses an explicit hash key as the Kinesis API accepts it: `0|([1-9]\d{0,38})`, at most
    /// 2^128-1.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let canonical = !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        if !canonical {
            return Err(RecordError::MalformedExplicitHashKey {
                value: Shown::new(s),
            });
        }
        // Digits only, so the one way u128 parsing can fail is overflow.
        s.parse::<u128>()
            .map(HashKey)
            .map_err(|_| RecordError::ExplicitHashKeyOutOfRange {
                value: Shown::new(s),
            })
    }
}

/// Checks a partition key against the Kinesis rule: 1 to 256 Unicode characters.
///
/// # Errors
/// [`RecordError::EmptyPartitionKey`] or [`RecordError::PartitionKeyTooLong`] when the key is not
/// 1 to 256 characters.
pub fn validate_partition_key(partition_key: &str) -> Result<(), RecordError> {
    if partition_key.is_empty() {
        return Err(RecordError::EmptyPartitionKey);
    }
    // A key of at most 256 bytes has at most 256 characters: skip the count on the usual path.
    if partition_key.len() > MAX_PARTITION_KEY_CHARS {
        let chars = partition_key.chars().count();
        if chars > MAX_PARTITION_KEY_CHARS {
            return Err(RecordError::PartitionKeyTooLong { chars });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_hash_key_is_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(
            HashKey::from_partition_key(""),
            HashKey(0xd41d8cd98f00b204e9800998ecf8427e)
        );
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(
            HashKey::from_partition_key("a").to_string(),
            u128::from_str_radix("0cc175b9c0f1b6a831c399e269772661", 16)
                .unwrap()
                .to_string()
        );
    }

    #[test]
    fn explicit_hash_keys_parse_at_the_edges() {
        assert_eq!("0".parse::<HashKey>().unwrap(), HashKey::MIN);
        assert_eq!(
            "340282366920938463463374607431768211455"
                .parse::<HashKey>()
                .unwrap(),
            HashKey::MAX
        );
        assert!(matches!(
            "340282366920938463463374607431768211456".parse::<HashKey>(),
            Err(RecordError::ExplicitHashKeyOutOfRange { .. })
        ));
        assert!(matches!(
            "9".repeat(200).parse::<HashKey>(),
            Err(RecordError::ExplicitHashKeyOutOfRange { .. })
        ));
        for bad in ["", "-1", "+1", "01", "00", "1.5", "0x10", " 1", "1 ", "١"] {
            let err = bad.parse::<HashKey>().unwrap_err();
            assert!(
                matches!(err, RecordError::MalformedExplicitHashKey { .. }),
                "{bad:?} gave {err:?}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn decimal_len_matches_rendering() {
        for v in [0u128, 9, 10, 99, 100, u64::MAX as u128, u128::MAX] {
            assert_eq!(HashKey(v).decimal_len(), v.to_string().len(), "{v}");
        }
    }

    #[test]
    fn partition_keys_are_counted_in_characters() {
        assert_eq!(
            validate_partition_key(""),
            Err(RecordError::EmptyPartitionKey)
        );
        assert!(validate_partition_key(&"k".repeat(256)).is_ok());
        assert_eq!(
            validate_partition_key(&"k".repeat(257)),
            Err(RecordError::PartitionKeyTooLong { chars: 257 })
        );
        // 256 characters of 4 UTF-8 bytes (2 UTF-16 units) each: allowed.
        assert!(validate_partition_key(&"🔑".repeat(256)).is_ok());
        assert_eq!(
            validate_partition_key(&"é".repeat(300)),
            Err(RecordError::PartitionKeyTooLong { chars: 300 })
        );
    }
}
