//! Outcomes on their way back to Python.
//!
//! The producer's runtime threads never take the GIL: a Python thread that holds it would stall
//! the engine. Each resolved record goes, with its token (the Python future waiting for it),
//! into a channel; one thread per producer takes what has piled up, attaches to the interpreter
//! once for the lot, turns the outcomes into Python objects and hands the batch to the Python
//! layer's `deliver` callable, which resolves the futures (on their event loop, for asyncio).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use kinesis_producer::{PutError, PutErrorKind, Receipt as RustReceipt, RecordError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// How many outcomes one attachment to the interpreter delivers at most, so that a flood of
/// outcomes does not keep the GIL from the application for long.
const MOST_PER_BATCH: usize = 4096;

/// Where a user record was put.
// The strings are the Rust receipt's, shared (every record of an aggregate has the same shard
// and sequence number): a receipt costs no string copies until Python reads a field.
#[pyclass(frozen, module = "kinesis_producer")]
#[derive(Debug)]
pub struct Receipt {
    stream: Arc<str>,
    shard_id: Arc<str>,
    sequence_number: Arc<str>,
    /// Its index in that Kinesis record (0 when it was sent alone); consumers see the same
    /// number after deaggregating.
    #[pyo3(get)]
    sub_sequence_number: u64,
    /// Whether it travelled in an aggregate.
    #[pyo3(get)]
    aggregated: bool,
    /// How many attempts it took.
    #[pyo3(get)]
    attempts: usize,
}

#[pymethods]
impl Receipt {
    /// The stream.
    #[getter]
    fn stream(&self) -> &str {
        &self.stream
    }

    /// The shard that took the record.
    #[getter]
    fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// The sequence number of the Kinesis record that carries it.
    #[getter]
    fn sequence_number(&self) -> &str {
        &self.sequence_number
    }

    fn __repr__(&self) -> String {
        format!(
            "Receipt(stream={:?}, shard_id={:?}, sequence_number={:?}, sub_sequence_number={}, aggregated={}, attempts={})",
            self.stream,
            self.shard_id,
            self.sequence_number,
            self.sub_sequence_number,
            if self.aggregated { "True" } else { "False" },
            self.attempts
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Receipt>().is_ok_and(|o| {
            let o = o.get();
            (&self.stream, &self.shard_id, &self.sequence_number)
                == (&o.stream, &o.shard_id, &o.sequence_number)
                && (self.sub_sequence_number, self.aggregated, self.attempts)
                    == (o.sub_sequence_number, o.aggregated, o.attempts)
        })
    }
}

impl From<RustReceipt> for Receipt {
    fn from(r: RustReceipt) -> Self {
        Receipt {
            stream: r.stream,
            shard_id: r.shard_id,
            sequence_number: r.sequence_number,
            sub_sequence_number: r.sub_sequence_number,
            aggregated: r.aggregated,
            attempts: r.attempts.count(),
        }
    }
}

/// A record that was not put: refused by the producer or Kinesis, or never valid.
pub(crate) enum Failure {
    Put(Box<PutError>),
    /// Refused before it reached the producer (a bad partition or explicit hash key): the
    /// record as the caller gave it.
    Invalid(Box<Invalid>),
}

/// A record refused before it reached the producer, as the caller gave it.
pub(crate) struct Invalid {
    pub(crate) error: RecordError,
    pub(crate) stream: String,
    pub(crate) data: bytes::Bytes,
    pub(crate) partition_key: Option<String>,
    pub(crate) explicit_hash_key: Option<String>,
}

/// What a token waits for.
pub(crate) enum Outcome {
    One(Result<RustReceipt, Failure>),
    Many(Vec<Result<RustReceipt, Failure>>),
    /// A flush or a shutdown finished.
    Done,
    /// A spool sync failed, for this reason (raised as `SpoolError`).
    SpoolFailed(String),
}

pub(crate) struct Delivery {
    pub(crate) token: Py<PyAny>,
    pub(crate) outcome: Outcome,
}

/// Starts the delivery thread of a producer; it ends when every sender is gone.
pub(crate) fn start(deliver: Py<PyAny>) -> std::io::Result<Sender<Vec<Delivery>>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("kinesis-producer-deliver".into())
        .spawn(move || run(&rx, &deliver))?;
    Ok(tx)
}

fn run(rx: &Receiver<Vec<Delivery>>, deliver: &Py<PyAny>) {
    // Blocks without the GIL until something resolves.
    while let Ok(mut batch) = rx.recv() {
        while batch.len() < MOST_PER_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let Some(_guard) = crate::exit::attaching() else {
            // The interpreter is going away: the tokens cannot be resolved, nor their
            // references released safely; they are leaked with the process.
            std::mem::forget(batch);
            continue;
        };
        let delivered = Python::try_attach(|py| {
            let result = to_python(py, batch).and_then(|list| deliver.call1(py, (list,)));
            if let Err(e) = result {
                // The Python layer's callable catches what resolving a future can raise; an
                // error here is a bug to report, not to hide.
                e.print(py);
            }
        });
        if delivered.is_none() {
            // The interpreter is finalizing: nothing can be delivered any more.
            return;
        }
    }
}

/// `[(token, ok, value), ...]`: with `ok` True, `value` is a `Receipt`, a batch's list of
/// receipts, or `None` for a finished flush; with `ok` False, a failure tuple (see
/// [`failure`]); with `ok` None, a batch's list in which the failures are failure tuples (the
/// Python layer turns those, and only those, into exceptions).
fn to_python(py: Python<'_>, batch: Vec<Delivery>) -> PyResult<Bound<'_, PyList>> {
    let list = PyList::empty(py);
    for Delivery { token, outcome } in batch {
        let (ok, value) = match outcome {
            Outcome::One(Ok(receipt)) => (
                Some(true),
                Bound::new(py, Receipt::from(receipt))?.into_any(),
            ),
            Outcome::One(Err(f)) => (Some(false), failure(py, &f)?.into_any()),
            Outcome::Many(results) => {
                let all_ok = results.iter().all(Result::is_ok);
                let items = results
                    .into_iter()
                    .map(|r| match r {
                        Ok(receipt) => Bound::new(py, Receipt::from(receipt)).map(Bound::into_any),
                        Err(f) => failure(py, &f).map(Bound::into_any),
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                (all_ok.then_some(true), PyList::new(py, items)?.into_any())
            }
            Outcome::Done => (Some(true), py.None().into_bound(py)),
            Outcome::SpoolFailed(message) => (
                Some(false),
                crate::native::SpoolError::new_err(message)
                    .into_value(py)
                    .into_bound(py)
                    .into_any(),
            ),
        };
        list.append((token, ok, value))?;
    }
    Ok(list)
}

/// `(kind, sentence, code, message, stream, data, partition_key, explicit_hash_key, attempts)`,
/// from which the Python layer builds its `PutError`: `kind` names the reason (`"expired"`,
/// `"buffer_full"`, ...), `sentence` is the whole error as one sentence, `code` and `message`
/// are the service's where it gave them.
pub(crate) fn failure<'py>(py: Python<'py>, f: &Failure) -> PyResult<Bound<'py, PyTuple>> {
    match f {
        Failure::Put(e) => {
            let (kind, code, message) = kind(&e.kind);
            let r = &e.record;
            (
                kind,
                e.to_string(),
                code,
                message,
                &*e.stream,
                PyBytes::new(py, r.data()),
                r.partition_key(),
                r.explicit_hash_key().map(|k| k.to_string()),
                e.attempts.count(),
            )
                .into_pyobject(py)
        }
        Failure::Invalid(invalid) => {
            let Invalid {
                error,
                stream,
                data,
                partition_key,
                explicit_hash_key,
            } = &**invalid;
            (
                "invalid_record",
                format!("record for stream {stream} is not valid: {error}"),
                None::<String>,
                error.to_string(),
                stream,
                PyBytes::new(py, data),
                partition_key,
                explicit_hash_key,
                0usize,
            )
                .into_pyobject(py)
        }
    }
}

/// The reason's short name, and the service's code and message where it gave them.
fn kind(k: &PutErrorKind) -> (&'static str, Option<String>, String) {
    match k {
        PutErrorKind::InvalidRecord(e) => ("invalid_record", None, e.to_string()),
        PutErrorKind::Expired { last_error, .. } => (
            "expired",
            Some(last_error.code.clone()),
            last_error.message.clone(),
        ),
        PutErrorKind::Rejected { code, message } => {
            ("rejected", Some(code.clone()), message.clone())
        }
        PutErrorKind::Throttled { code, message } => {
            ("throttled", Some(code.clone()), message.clone())
        }
        PutErrorKind::NoCredentials { code, message } => {
            ("no_credentials", Some(code.clone()), message.clone())
        }
        PutErrorKind::BufferFull { .. } => ("buffer_full", None, k.to_string()),
        PutErrorKind::Closed => ("closed", None, k.to_string()),
        PutErrorKind::Stopped => ("stopped", None, k.to_string()),
        PutErrorKind::Spool(_) => ("spool", None, k.to_string()),
        _ => ("error", None, k.to_string()),
    }
}
