//! The user record: what a caller hands the producer.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::RecordError;
use crate::hash_key::{HashKey, validate_partition_key};

/// One record as the caller sees it: a partition key, an optional explicit hash key and data.
///
/// Construction checks the partition key (1 to 256 characters); explicit hash keys are checked
/// when parsed into a [`HashKey`]. The data's size limit depends on the stream (1 MiB by default,
/// up to 10 MiB where the stream allows), so it is checked where the limit is known: by the
/// [`Aggregator`](crate::aggregation::Aggregator) and the producer.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    // Shared, so that cloning a record costs a reference count, not an allocation.
    partition_key: Arc<str>,
    data: Bytes,
    // The hash key, computed once when the record is made (MD5 of the partition key) or set
    // explicitly: every stage that routes the record reads it instead of hashing again. Two
    // halves rather than a `u128`, whose 16-byte alignment would pad every buffered record.
    hash_key: [u64; 2],
    explicit: bool,
}

/// How much of a record's data its `Debug` form shows: a failed 10 MiB record printed whole
/// (in a panic message, a `{:?}` log line) drowned everything around it.
const DEBUG_DATA: usize = 64;

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("UserRecord");
        d.field("partition_key", &self.partition_key)
            .field("explicit_hash_key", &self.explicit_hash_key());
        if self.data.len() <= DEBUG_DATA {
            d.field("data", &self.data);
        } else {
            d.field("data_len", &self.data.len())
                .field("data_start", &self.data.slice(..DEBUG_DATA));
        }
        d.finish()
    }
}

fn halves(key: HashKey) -> [u64; 2] {
    [(key.0 >> 64) as u64, key.0 as u64]
}

impl UserRecord {
    /// A record routed by its partition key's MD5 (computed here, once).
    ///
    /// The key may be a `&str`, a `String` or an `Arc<str>`; reusing `Arc<str>` keys (a fixed set
    /// of device or tenant ids, say) avoids an allocation per record. The data may be anything
    /// that converts into [`Bytes`]; it is never copied.
    ///
    /// ```
    /// use kinesis_producer::UserRecord;
    /// let record = UserRecord::new("user-42", &b"hello"[..]).unwrap();
    /// assert_eq!(record.size(), 12);
    /// let err = UserRecord::new("", &b"x"[..]).unwrap_err();
    /// assert_eq!(err.to_string(), "partition key is empty; it must be 1 to 256 characters");
    /// ```
    ///
    /// # Errors
    /// [`RecordError::EmptyPartitionKey`] or [`RecordError::PartitionKeyTooLong`]: the key must be
    /// 1 to 256 characters.
    pub fn new(
        partition_key: impl Into<Arc<str>>,
        data: impl Into<Bytes>,
    ) -> Result<Self, RecordError> {
        let partition_key = partition_key.into();
        validate_partition_key(&partition_key)?;
        Ok(UserRecord {
            hash_key: halves(HashKey::from_partition_key(&partition_key)),
            explicit: false,
            partition_key,
            data: data.into(),
        })
    }

    /// Routes this record by `key` instead of its partition key's MD5. The partition key is
    /// still stored with the record and given back to consumers.
    ///
    /// ```
    /// use kinesis_producer::{HashKey, UserRecord};
    /// let key: HashKey = "170141183460469231731687303715884105728".parse().unwrap();
    /// let record = UserRecord::new("k", &b"x"[..]).unwrap().with_explicit_hash_key(key);
    /// assert_eq!(record.hash_key(), key);
    /// ```
    pub fn with_explicit_hash_key(mut self, key: HashKey) -> Self {
        self.hash_key = halves(key);
        self.explicit = true;
        self
    }

    /// The partition key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key, if the caller set one.
    pub fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit.then(|| self.hash_key())
    }

    /// The data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Where Kinesis will route this record: the explicit hash key if set, else MD5 of the
    /// partition key (computed when the record was made: this is a read).
    pub fn hash_key(&self) -> HashKey {
        let [hi, lo] = self.hash_key;
        HashKey((u128::from(hi) << 64) | u128::from(lo))
    }

    /// The size Kinesis counts against its per-record limit if this record is sent on its own:
    /// data plus the partition key's UTF-8 bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// Takes the record apart: partition key, explicit hash key, data.
    pub fn into_parts(self) -> (Arc<str>, Option<HashKey>, Bytes) {
        let explicit = self.explicit_hash_key();
        (self.partition_key, explicit, self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_record_shows_its_size_and_start_not_all_its_data() {
        let small = format!("{:?}", UserRecord::new("k", "tiny").unwrap());
        assert!(small.contains(r#"data: b"tiny""#), "{small}");
        let large = format!("{:?}", UserRecord::new("k", vec![7u8; 1 << 20]).unwrap());
        assert!(large.contains("data_len: 1048576"), "{large}");
        assert!(large.len() < 400, "{large}");
    }
}
