//! `kinesis_producer._native`: the Rust producer for the Python package. The Python layer in
//! `python/kinesis_producer/` gives it its Python shape (asyncio and threads, exceptions,
//! records as bytes or str); this module is what it calls.

use pyo3::prelude::*;

mod deliver;
mod exit;
mod native;
mod reaper;
mod records;

/// A Kinesis record's user records, as the KCL reads them: an aggregate's in sub-sequence
/// order, anything else (including a record with the magic but a bad digest) as itself.
/// Each is `(partition_key, explicit_hash_key, data, sub_sequence_number, aggregated)`.
#[pyfunction]
fn deaggregate<'py>(
    py: Python<'py>,
    partition_key: &str,
    data: &Bound<'py, pyo3::types::PyBytes>,
) -> PyResult<Bound<'py, pyo3::types::PyList>> {
    let records = kinesis_producer::aggregation::deaggregate(
        partition_key,
        bytes::Bytes::copy_from_slice(data.as_bytes()),
    );
    let list = pyo3::types::PyList::empty(py);
    for r in records {
        list.append((
            r.partition_key,
            r.explicit_hash_key,
            pyo3::types::PyBytes::new(py, &r.data),
            r.sub_sequence_number,
            r.aggregated,
        ))?;
    }
    Ok(list)
}

/// Stops every delivery thread from touching the interpreter and waits for the threads that
/// still might: called at exit, after the producers were closed (see `exit`).
#[pyfunction]
fn _exiting(py: Python<'_>) {
    exit::exiting(py);
}

/// In a child process after `os.fork()`: the parent's threads do not exist here (see
/// `exit::after_fork_in_child`).
#[pyfunction]
fn _after_fork_in_child() {
    exit::after_fork_in_child();
}

#[pymodule]
mod _native {
    #[pymodule_export]
    use super::_after_fork_in_child;
    #[pymodule_export]
    use super::_exiting;
    #[pymodule_export]
    use super::deaggregate;
    #[pymodule_export]
    use super::deliver::Receipt;
    #[pymodule_export]
    use super::native::ConfigError;
    #[pymodule_export]
    use super::native::NativeProducer;
    #[pymodule_export]
    use super::native::SpoolError;
    #[pymodule_export]
    use super::native::Waiting;
}
