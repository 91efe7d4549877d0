//! `NativeProducer`: the Rust producer as the Python layer drives it.
//!
//! Every call that could wait (for room in the buffer, for an outcome, for a flush) either
//! releases the GIL while it waits (the `_blocking` forms, for threads) or runs on the
//! producer's own runtime and reports through the delivery thread (the others, for asyncio and
//! for futures): a Python thread is never blocked holding the GIL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Sender;
use kinesis_producer::{Config, Producer, PutError, PutErrorKind};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::deliver::{self, Delivery, Failure, Outcome};
use crate::reaper::Reaper;
use crate::records::{RecordArgs, invalid, record};

pyo3::create_exception!(
    kinesis_producer,
    ConfigError,
    PyValueError,
    "A producer setting is unknown or out of its range; the message names it and the range."
);

pyo3::create_exception!(
    kinesis_producer,
    SpoolError,
    pyo3::exceptions::PyOSError,
    "The spool (SpoolDirectory) cannot be used: another producer holds the directory, or the disk refuses; the message names the directory or file and the cause."
);

/// How a send waits when the buffer is full.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Room {
    /// Refuse at once (`BufferFull`).
    Refuse,
    /// Wait on the producer's runtime, the caller not blocked (asyncio).
    Await,
    /// Block the calling thread, the GIL released (threads).
    Block,
}

impl Room {
    fn parse(s: &str) -> PyResult<Room> {
        match s {
            "refuse" => Ok(Room::Refuse),
            "await" => Ok(Room::Await),
            "block" => Ok(Room::Block),
            _ => Err(PyValueError::new_err(format!(
                "room must be 'refuse', 'await' or 'block', not {s:?}"
            ))),
        }
    }
}

/// The producer, its runtime and its delivery thread.
#[pyclass(module = "kinesis_producer._native")]
#[derive(Debug)]
pub struct NativeProducer {
    producer: Producer,
    handle: tokio::runtime::Handle,
    /// The runtime itself; taken (and shut down in the background) when this is dropped.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    /// Where outcomes go; `None` once dropped (the delivery thread then ends when the last
    /// outcome in flight is delivered).
    out: Mutex<Option<Sender<Vec<Delivery>>>>,
    /// Awaits the records' futures.
    reaper: Arc<Reaper>,
    /// The process it was made in: in a child after `fork` none of its threads exist.
    pid: u32,
}

/// The config the arguments describe: the properties file, then the properties one by one,
/// then region and endpoint.
fn config(
    properties: Vec<(String, String)>,
    properties_file: Option<std::path::PathBuf>,
    region: Option<String>,
    endpoint_url: Option<String>,
) -> PyResult<Config> {
    let bad = |e: &dyn std::fmt::Display| ConfigError::new_err(e.to_string());
    let mut builder = Config::builder();
    if let Some(path) = properties_file {
        builder = builder.properties_file(path).map_err(|e| bad(&e))?;
    }
    for (name, value) in properties {
        builder = builder.set_property(&name, &value).map_err(|e| bad(&e))?;
    }
    if let Some(region) = &region {
        builder = builder.region(region.clone());
    }
    if let Some(url) = endpoint_url {
        // As `kpl`: a local endpoint takes any credentials, so none need be configured.
        let loopback = ["://127.", "://localhost", "://[::1]"]
            .iter()
            .any(|p| url.contains(p));
        builder = builder.endpoint(url);
        if loopback && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            builder = builder.credentials("local", "local");
            if region.is_none() {
                builder = builder.region("us-east-1");
            }
        }
    }
    builder.build().map_err(|e| bad(&e))
}

impl NativeProducer {
    fn sender(&self) -> PyResult<Sender<Vec<Delivery>>> {
        self.out
            .lock()
            .expect("never poisoned: no code panics holding it")
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("the producer is closed"))
    }

    /// Awaits `future` on the runtime, then delivers its outcome to `token`.
    fn deliver_later<F>(&self, token: Py<PyAny>, future: F) -> PyResult<Waiting>
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let out = self.sender()?;
        let task = self.handle.spawn(async move {
            let outcome = future.await;
            // A send fails only when the delivery thread is gone (the interpreter exiting).
            let _ = out.send(vec![Delivery { token, outcome }]);
        });
        Ok(Waiting {
            task: task.abort_handle(),
        })
    }
}

/// A send waiting on the runtime for room in the buffer: `abort()` gives the wait up (what
/// the Python caller's cancellation does). A record still waiting is then not sent; one
/// already accepted is sent regardless, its outcome unreported.
#[pyclass(module = "kinesis_producer._native")]
#[derive(Debug)]
pub struct Waiting {
    task: tokio::task::AbortHandle,
}

#[pymethods]
impl Waiting {
    fn abort(&self) {
        self.task.abort();
    }
}

fn refused(py: Python<'_>, e: PutError) -> PyResult<Option<Bound<'_, PyTuple>>> {
    deliver::failure(py, &Failure::Put(Box::new(e))).map(Some)
}

#[pymethods]
impl NativeProducer {
    /// Builds the producer: `deliver(batch)` is called from the delivery thread with the
    /// outcomes that resolved.
    #[new]
    #[pyo3(signature = (deliver, properties, properties_file=None, region=None, endpoint_url=None))]
    fn new(
        py: Python<'_>,
        deliver: Py<PyAny>,
        properties: Vec<(String, String)>,
        properties_file: Option<std::path::PathBuf>,
        region: Option<String>,
        endpoint_url: Option<String>,
    ) -> PyResult<Self> {
        let config = config(properties, properties_file, region, endpoint_url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // One worker for the engine, one for PutRecords calls and their replies, as the
            // Rust producer takes when it builds its own.
            .worker_threads(2)
            .thread_name("kinesis-producer")
            .enable_all()
            .build()
            .map_err(|e| {
                PyRuntimeError::new_err(format!("cannot start the producer's threads: {e}"))
            })?;
        // Loading the AWS configuration (credentials, region) can take a moment: not holding
        // the GIL meanwhile.
        // With SpoolDirectory set, opening the spool can fail (another producer holds it):
        // an exception here, not a producer that refuses every record.
        let producer = crate::exit::detach(py, || runtime.block_on(Producer::try_new(config)))
            .map_err(|e| SpoolError::new_err(e.to_string()))?;
        let out = deliver::start(deliver).map_err(|e| {
            PyRuntimeError::new_err(format!("cannot start the producer's delivery thread: {e}"))
        })?;
        let reaper = Reaper::start(runtime.handle(), out.clone());
        Ok(NativeProducer {
            producer,
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            pid: std::process::id(),
            out: Mutex::new(Some(out)),
            reaper,
        })
    }

    /// Sends one record whose outcome goes to `token`. Returns `None` when it was accepted,
    /// the failure tuple when it was refused at once (not valid; buffer full with `room`
    /// "refuse"; closed), or, with `room` "await" and the buffer full, the [`Waiting`] send.
    fn send<'py>(
        &self,
        py: Python<'py>,
        stream: &str,
        record_args: RecordArgs<'py>,
        token: Py<PyAny>,
        room: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let room = Room::parse(room)?;
        let (data, partition_key, explicit_hash_key) = record_args;
        let record = match record(
            data.as_bytes(),
            partition_key.as_deref(),
            explicit_hash_key.as_deref(),
        ) {
            Ok(r) => r,
            Err(e) => {
                let f = invalid(e, stream, data.as_bytes(), partition_key, explicit_hash_key);
                return Ok(Some(deliver::failure(py, &f)?.into_any()));
            }
        };
        let future = match self.producer.try_send(stream, record) {
            Ok(future) => future,
            Err(e) if matches!(e.kind, PutErrorKind::BufferFull { .. }) && room != Room::Refuse => {
                let producer = self.producer.clone();
                let (stream, record) = (stream.to_owned(), e.record);
                if room == Room::Block {
                    crate::exit::detach(py, || producer.send_blocking(&stream, record))
                } else {
                    // Waits for room on the runtime; the caller's coroutine awaits the token.
                    let waiting = self.deliver_later(token, async move {
                        Outcome::One(
                            producer
                                .send_wait(&stream, record)
                                .await
                                .await
                                .map_err(|e| Failure::Put(Box::new(e))),
                        )
                    })?;
                    return Ok(Some(Bound::new(py, waiting)?.into_any()));
                }
            }
            Err(e) => return Ok(refused(py, e)?.map(Bound::into_any)),
        };
        self.reaper.add(future, token);
        Ok(None)
    }

    /// Sends records at once, their outcomes, in order, going to `token` as one list. Each
    /// record is read as `records::many` says (`entry` turns the forms it does not know into
    /// `(bytes, str | None, str | None)`). A record that is not valid is refused in its place in
    /// the list; with `room` "refuse" those that do not fit are refused as `buffer_full`,
    /// otherwise they wait for room. With `room` "await", returns the [`Waiting`] send
    /// (aborting it sends only what was accepted).
    fn send_many(
        &self,
        py: Python<'_>,
        stream: &str,
        records: &Bound<'_, PyAny>,
        entry: &Bound<'_, PyAny>,
        token: Py<PyAny>,
        room: &str,
    ) -> PyResult<Option<Waiting>> {
        let room = Room::parse(room)?;
        let crate::records::Many { valid, refused } = crate::records::many(stream, records, entry)?;
        let producer = self.producer.clone();
        let stream = stream.to_owned();
        let batch = match room {
            Room::Refuse => producer.send_all(&stream, valid),
            Room::Block => crate::exit::detach(py, || producer.send_all_blocking(&stream, valid)),
            Room::Await => {
                let waiting = self.deliver_later(token, async move {
                    let outcomes = producer.send_all_wait(&stream, valid).await.await;
                    Outcome::Many(merge(outcomes, refused))
                })?;
                return Ok(Some(waiting));
            }
        };
        self.deliver_later(
            token,
            async move { Outcome::Many(merge(batch.await, refused)) },
        )?;
        Ok(None)
    }

    /// Starts sending everything buffered now, without waiting for `RecordMaxBufferedTime`.
    fn flush(&self) {
        self.producer.flush();
    }

    /// Flushes; `token` is resolved once every record sent before has resolved, after their
    /// own outcomes were delivered.
    fn flush_then(&self, token: Py<PyAny>) -> PyResult<()> {
        let producer = self.producer.clone();
        let reaper = Arc::clone(&self.reaper);
        self.deliver_later(token, async move {
            producer.flush_and_wait().await;
            reaper.settle().await;
            Outcome::Done
        })
        .map(drop)
    }

    /// Makes every record sent before durable in the spool; then `token` is resolved (or
    /// fails with `SpoolError`, or without a spool).
    fn sync_spool_then(&self, token: Py<PyAny>) -> PyResult<()> {
        let producer = self.producer.clone();
        self.deliver_later(token, async move {
            match producer.sync_spool().await {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::SpoolFailed(e.to_string()),
            }
        })
        .map(drop)
    }

    /// Shuts down: no more records are accepted, everything buffered is sent and every record
    /// resolves; then, after their outcomes were delivered, `token` is resolved.
    fn close_then(&self, token: Py<PyAny>) -> PyResult<()> {
        let producer = self.producer.clone();
        let reaper = Arc::clone(&self.reaper);
        self.deliver_later(token, async move {
            producer.shutdown().await;
            reaper.settle().await;
            Outcome::Done
        })
        .map(drop)
    }

    /// Records buffered or in flight: accepted and not yet resolved.
    fn outstanding(&self) -> usize {
        self.producer.outstanding()
    }

    /// The metrics: one dict per series (`name`, `stream`, `shard`, `error_code`, `total`,
    /// `recent` over the last `window` seconds, `last`).
    #[pyo3(signature = (window=60.0))]
    fn metrics<'py>(&self, py: Python<'py>, window: f64) -> PyResult<Bound<'py, PyList>> {
        let window = duration(Some(window))?.unwrap_or_default();
        let snapshot = self.producer.metrics(window);
        let list = PyList::empty(py);
        for m in &snapshot.metrics {
            let d = PyDict::new(py);
            d.set_item("name", m.name.as_str())?;
            d.set_item("stream", m.stream.as_deref())?;
            d.set_item("shard", m.shard.as_deref())?;
            d.set_item("error_code", m.error_code.as_deref())?;
            d.set_item("total", stat(py, &m.total)?)?;
            d.set_item("recent", stat(py, &m.recent)?)?;
            d.set_item("last", m.last)?;
            list.append(d)?;
        }
        Ok(list)
    }
}

impl Drop for NativeProducer {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A copy in a child after `fork`: its runtime's threads are the parent's, and
            // shutting it down would wait for them for good. Its memory is left as it is.
            if let Ok(Some(rt)) = self.runtime.get_mut().map(Option::take) {
                std::mem::forget(rt);
            }
            return;
        }
        // Closing the channel lets the delivery thread end once what is in flight is delivered.
        self.out.get_mut().map(Option::take).ok();
        if let Ok(Some(rt)) = self.runtime.get_mut().map(Option::take) {
            // Dropped without being closed: what it holds is still sent and every future
            // resolves, as after `close`. Not waiting here, where the GIL is held (the delivery
            // thread needs it to hand the outcomes over): the drain has a thread of its own.
            let producer = self.producer.clone();
            let reaper = Arc::clone(&self.reaper);
            let drain = move || {
                rt.block_on(async {
                    producer.shutdown().await;
                    reaper.settle().await;
                });
            };
            if let Err(e) = std::thread::Builder::new()
                .name("kinesis-producer-drain".into())
                .spawn(drain)
            {
                eprintln!(
                    "kinesis_producer: cannot start a thread to send what a dropped producer held: {e}"
                );
            }
        }
    }
}

fn stat<'py>(py: Python<'py>, s: &kinesis_producer::metrics::Stat) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("sum", s.sum)?;
    d.set_item("count", s.count)?;
    d.set_item("min", s.min)?;
    d.set_item("max", s.max)?;
    Ok(d)
}

fn duration(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                PyValueError::new_err(format!("{s} is not a number of seconds (0 or more)"))
            })
        })
        .transpose()
}

/// The batch's outcomes with the records that were not valid put back in their places.
fn merge(
    outcomes: Vec<Result<kinesis_producer::Receipt, PutError>>,
    refused: Vec<(usize, Failure)>,
) -> Vec<Result<kinesis_producer::Receipt, Failure>> {
    let mut all = Vec::with_capacity(outcomes.len() + refused.len());
    let mut outcomes = outcomes.into_iter();
    for (place, failure) in refused {
        while all.len() < place {
            match outcomes.next() {
                Some(o) => all.push(o.map_err(|e| Failure::Put(Box::new(e)))),
                None => break,
            }
        }
        all.push(Err(failure));
    }
    all.extend(outcomes.map(|o| o.map_err(|e| Failure::Put(Box::new(e)))));
    all
}
