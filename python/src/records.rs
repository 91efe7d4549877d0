//! Records as Python passes them, made into the producer's `UserRecord`s.
//!
//! `put_many`'s records come as the caller wrote them. The common forms, bytes or str alone or
//! in a `(data, partition_key[, explicit_hash_key])` tuple with str keys, are read here without
//! calling back into Python (a Python function call per record was most of `put_many`'s own
//! cost); everything else (dicts as boto3 takes them, buffers, integer hash keys) goes through
//! the Python layer's `entry`, which returns the `(bytes, str | None, str | None)` form or
//! raises the `TypeError` that names what is wrong.

use kinesis_producer::{HashKey, RecordError, UserRecord};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::deliver::{self, Failure};

/// One record as the Python layer passes it to `send`: data, partition key (None: a random
/// one), explicit hash key.
pub(crate) type RecordArgs<'py> = (Bound<'py, PyBytes>, Option<String>, Option<String>);

fn random_key() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The user record the arguments describe, or why it is not valid.
pub(crate) fn record(
    data: &[u8],
    partition_key: Option<&str>,
    explicit_hash_key: Option<&str>,
) -> Result<UserRecord, RecordError> {
    let record = match partition_key {
        Some(k) => UserRecord::new(k, bytes::Bytes::copy_from_slice(data))?,
        None => UserRecord::new(random_key(), bytes::Bytes::copy_from_slice(data))?,
    };
    Ok(match explicit_hash_key {
        Some(k) => record.with_explicit_hash_key(k.parse::<HashKey>()?),
        None => record,
    })
}

/// A record refused before it reached the producer, handed back as it was given.
pub(crate) fn invalid(
    error: RecordError,
    stream: &str,
    data: &[u8],
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
) -> Failure {
    Failure::Invalid(Box::new(deliver::Invalid {
        error,
        stream: stream.to_owned(),
        data: bytes::Bytes::copy_from_slice(data),
        partition_key,
        explicit_hash_key,
    }))
}

/// A `put_many`'s records, read.
pub(crate) struct Many {
    /// The valid ones, in order.
    pub(crate) valid: Vec<UserRecord>,
    /// The others, each with its place among all of them (ascending) and why it is not valid.
    pub(crate) refused: Vec<(usize, Failure)>,
}

/// The records of a `put_many`, in order: each a user record, or (in its place) why it is not
/// valid. What `entry` raises is raised, and then nothing is sent.
///
/// # Errors
/// The iterable's own errors, or what `entry` raises for a record of no known form.
pub(crate) fn many(
    stream: &str,
    records: &Bound<'_, PyAny>,
    entry: &Bound<'_, PyAny>,
) -> PyResult<Many> {
    let mut valid = Vec::with_capacity(records.len().unwrap_or(0));
    let mut refused = Vec::new();
    for (i, item) in records.try_iter()?.enumerate() {
        let item = item?;
        let (data, pk, ehk) = match common(&item)? {
            Some(parts) => parts,
            None => entry.call1((item,))?.extract()?,
        };
        match record(data.as_bytes(), pk.as_deref(), ehk.as_deref()) {
            Ok(r) => valid.push(r),
            Err(e) => refused.push((i, invalid(e, stream, data.as_bytes(), pk, ehk))),
        }
    }
    Ok(Many { valid, refused })
}

/// The record's parts when it is in a common form; `None` for the Python layer to read.
fn common<'py>(item: &Bound<'py, PyAny>) -> PyResult<Option<RecordArgs<'py>>> {
    if let Some(data) = data(item)? {
        return Ok(Some((data, None, None)));
    }
    let Ok(tuple) = item.cast::<PyTuple>() else {
        return Ok(None);
    };
    let n = tuple.len();
    if !(1..=3).contains(&n) {
        return Ok(None);
    }
    let Some(data) = data(&tuple.get_item(0)?)? else {
        return Ok(None);
    };
    // A key past the tuple's end is None; one of another type is for the Python layer.
    let key_at = |i: usize| {
        if i < n {
            key(&tuple.get_item(i)?)
        } else {
            Ok(Some(None))
        }
    };
    let (Some(pk), Some(ehk)) = (key_at(1)?, key_at(2)?) else {
        return Ok(None);
    };
    Ok(Some((data, pk, ehk)))
}

/// bytes as they are, a str encoded as UTF-8; `None` for any other type.
fn data<'py>(value: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyBytes>>> {
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(Some(b.clone()));
    }
    if let Ok(s) = value.cast::<PyString>() {
        // Raises UnicodeEncodeError for a lone surrogate, as `str.encode("utf-8")` does.
        return Ok(Some(s.encode_utf8()?));
    }
    Ok(None)
}

/// `Some(None)` for None, `Some(Some(key))` for a str; `None` for any other type.
fn key(value: &Bound<'_, PyAny>) -> PyResult<Option<Option<String>>> {
    if value.is_none() {
        return Ok(Some(None));
    }
    match value.cast::<PyString>() {
        Ok(s) => Ok(Some(Some(s.to_cow()?.into_owned()))),
        Err(_) => Ok(None),
    }
}
