"""The producers: :class:`Producer` for asyncio, :class:`SyncProducer` for threads."""

import asyncio
import atexit
import concurrent.futures
import os
import threading
import weakref
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

from . import _native
from ._errors import PutError, from_native
from ._native import Receipt
from ._records import Data, entry, path, properties, record

Outcome = Union[Receipt, PutError]
"""One record's outcome in ``put_many``'s list: its receipt, or the error handing it back."""


def _settle(batch: List[Any]) -> None:
    """Resolves the futures of a batch of outcomes from the delivery thread: ``(future, ok,
    value)`` where ``ok`` True gives ``value`` as the result, False a failure tuple to raise,
    None a ``put_many`` list whose failure tuples become :class:`PutError` in their places."""
    for fut, ok, value in batch:
        if fut.done():
            # Cancelled by the caller: the record was still put (or failed) once; no one waits.
            continue
        try:
            if isinstance(value, BaseException):
                fut.set_exception(value)
            elif ok:
                fut.set_result(value)
            elif ok is None:
                fut.set_result([from_native(v) if type(v) is tuple else v for v in value])
            else:
                fut.set_exception(from_native(value))
        except (asyncio.InvalidStateError, concurrent.futures.InvalidStateError):
            # Cancelled between the check and now.
            pass


def _wait(done: "concurrent.futures.Future[None]", timeout: Optional[float]) -> bool:
    try:
        done.result(timeout)
        return True
    except concurrent.futures.TimeoutError:
        return False


def _abort_if_cancelled(waiting: Any) -> Any:
    def callback(fut: "asyncio.Future[Any]") -> None:
        if fut.cancelled():
            waiting.abort()

    return callback


# The delivery threads (one per producer): ``concurrent.futures`` callbacks run there, and a
# flush or close waiting there would wait for itself.
_delivery_threads: "set[int]" = set()


def _deliver(batch: List[Any]) -> None:
    """Called by the delivery thread: resolves the ``concurrent.futures`` futures of a batch
    here and hands the asyncio ones to the event loops they belong to (usually one)."""
    _delivery_threads.add(threading.get_ident())
    by_loop: Dict[Any, List[Any]] = {}
    direct = []
    for item in batch:
        if isinstance(item[0], asyncio.Future):
            by_loop.setdefault(item[0].get_loop(), []).append(item)
        else:
            direct.append(item)
    _settle(direct)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:
            # The loop is closed: no one can await these futures any more.
            pass


# Producers still open, closed at interpreter exit so that records in flight are sent and no
# native thread calls into Python while it finalizes.
_open: "weakref.WeakSet[_Base]" = weakref.WeakSet()


# How many times this process is a child after ``os.fork()`` (gunicorn ``--preload``,
# multiprocessing's ``fork``): a producer made before the last fork has no threads here.
_forks = 0


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1
    # The parent's producers are not closed at this process's exit: their threads are not here.
    _open.clear()
    _delivery_threads.clear()
    _native._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _not_from_a_callback(what: str, timeout: Optional[float]) -> None:
    if (timeout is None or timeout > 0) and threading.get_ident() in _delivery_threads:
        raise RuntimeError(
            f"{what} was called from a future's done-callback, which runs on the producer's "
            "delivery thread: waiting there for outcomes that thread delivers would never end; "
            f"call it from another thread, or with timeout=0 to only send what is buffered"
        )


@atexit.register
def _at_exit() -> None:
    for p in list(_open):
        try:
            p._close_and_wait(p._close_timeout)
        except Exception:  # noqa: BLE001 - exiting: nothing to report to
            pass
    _native._exiting()


class _Base:
    def __init__(
        self,
        region: Optional[str] = None,
        endpoint_url: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
        properties_file: Optional[Union[str, "os.PathLike[str]"]] = None,
        close_timeout: Optional[float] = 30.0,
    ) -> None:
        self._native = _native.NativeProducer(
            _deliver,
            properties(config),
            path(properties_file),
            region,
            endpoint_url,
        )
        self._close_timeout = close_timeout
        self._forks = _forks
        self._pid = os.getpid()
        _open.add(self)

    def _usable(self) -> None:
        """Raises, in a child process after ``os.fork()``, for a producer made before it."""
        if self._forks != _forks:
            raise RuntimeError(
                f"this producer was made in process {self._pid} and cannot be used in its child "
                f"{os.getpid()} after os.fork() (gunicorn --preload, multiprocessing with fork): "
                "its threads did not come across; make a producer in each process after the "
                "fork (gunicorn's post_fork hook, a multiprocessing initializer)"
            )

    def metrics(self, window: float = 60.0) -> Dict[str, List[Dict[str, Any]]]:
        """The producer's metrics under the KPL's names (``UserRecordsPut``,
        ``KinesisRecordsPut``, ``BufferingTime``, ``ErrorsByCode``, ...): for each name, one dict
        per series with ``stream``, ``shard`` and ``error_code`` (None: across all of them),
        ``total`` (every value since start) and ``recent`` (the last ``window`` seconds), each
        ``{"sum", "count", "min", "max"}``, and ``last``, a sampled metric's latest value.
        Which metrics are kept is set by the ``MetricsLevel`` and ``MetricsGranularity``
        properties."""
        self._usable()
        out: Dict[str, List[Dict[str, Any]]] = {}
        for series in self._native.metrics(window):
            out.setdefault(series.pop("name"), []).append(series)
        return out

    def _close_and_wait(self, timeout: Optional[float]) -> bool:
        """Closes, and waits (the GIL released) until every record resolved and its outcome
        was delivered, or ``timeout`` seconds pass; returns whether they all were."""
        self._usable()
        _not_from_a_callback("close()", timeout)
        _open.discard(self)
        done: "concurrent.futures.Future[None]" = concurrent.futures.Future()
        self._native.close_then(done)
        return _wait(done, timeout)

    @property
    def outstanding(self) -> int:
        """Records accepted and not yet resolved (buffered or in flight)."""
        self._usable()
        return self._native.outstanding()


class Producer(_Base):
    """A producer for asyncio: aggregates records per shard and puts them with PutRecords.

    Args:
        region: the AWS region; otherwise the standard chain (``AWS_REGION``, the profile).
        endpoint_url: another Kinesis endpoint (e.g. ``http://127.0.0.1:4567`` for
            ``kpl local``); a loopback endpoint gets placeholder credentials unless
            ``AWS_ACCESS_KEY_ID`` is set.
        config: KPL properties by their KPL names, e.g. ``{"RecordMaxBufferedTime": 100,
            "AggregationEnabled": True}``; applied after ``properties_file``.
        properties_file: a KPL ``.properties`` file.
        close_timeout: how long, in seconds, interpreter exit waits for an open producer's
            records to be sent (None: as long as they take).

    Credentials come from the standard AWS chain. Use it as ``async with Producer(...) as p``,
    or call :meth:`close`. It belongs to no event loop: each future resolves on the loop that
    awaits it.

    Raises:
        ConfigError: a property is unknown or out of its range (the message names it).
    """

    async def put(
        self,
        stream: str,
        data: Data,
        partition_key: Optional[str] = None,
        explicit_hash_key: Optional[str] = None,
    ) -> Receipt:
        """Puts one record and returns where it went. Waits for room while the buffer is full.

        ``data`` is bytes, a str (UTF-8) or any object with the buffer protocol; without a
        ``partition_key`` the record gets a random one.

        Cancellation, as with ``asyncio.Queue.put``: cancelled while it waits for room, the
        record is not sent; cancelled once the producer took it, the record is still put, once,
        and only its receipt is lost.

        Raises:
            PutError: the record was not put (``.record`` hands it back).
            InvalidRecord: at once, for a key Kinesis would refuse.
        """
        self._usable()
        fut: "asyncio.Future[Receipt]" = asyncio.get_running_loop().create_future()
        sent = self._native.send(
            stream, record(data, partition_key, explicit_hash_key), fut, "await"
        )
        if isinstance(sent, tuple):
            raise from_native(sent)
        if sent is not None:
            # Waiting for room: cancelling gives the wait up.
            fut.add_done_callback(_abort_if_cancelled(sent))
        return await fut

    def put_nowait(
        self,
        stream: str,
        data: Data,
        partition_key: Optional[str] = None,
        explicit_hash_key: Optional[str] = None,
    ) -> "asyncio.Future[Receipt]":
        """Hands one record to the producer without waiting; returns the future of its
        :class:`Receipt` (which raises :class:`PutError` when it was not put). Call it from a
        running event loop.

        Raises:
            BufferFull: at once, when the buffer is full.
            InvalidRecord: at once, for a key Kinesis would refuse.
            ProducerClosed: at once, after :meth:`close`.
        """
        self._usable()
        fut: "asyncio.Future[Receipt]" = asyncio.get_running_loop().create_future()
        refused = self._native.send(
            stream, record(data, partition_key, explicit_hash_key), fut, "refuse"
        )
        if isinstance(refused, tuple):
            raise from_native(refused)
        return fut

    async def put_many(self, stream: str, records: Iterable[Any]) -> List[Outcome]:
        """Puts many records at once (one hand-over, one wake-up) and returns each one's
        outcome in order: its :class:`Receipt`, or the :class:`PutError` handing it back (not
        raised, so one failure does not hide the others). Waits for room as needed.

        Each record is data alone (a random partition key), a tuple ``(data, partition_key[,
        explicit_hash_key])``, or a dict as boto3's ``put_records`` takes (``Data``,
        ``PartitionKey``, ``ExplicitHashKey``).

        Cancelling gives up the records still waiting for room; those the producer took are
        still put, once."""
        self._usable()
        fut: "asyncio.Future[List[Outcome]]" = asyncio.get_running_loop().create_future()
        waiting = self._native.send_many(stream, records, entry, fut, "await")
        fut.add_done_callback(_abort_if_cancelled(waiting))
        return await fut

    async def flush(self) -> None:
        """Sends everything buffered now and returns once every record put before it has
        resolved. Cancelling stops the waiting only."""
        self._usable()
        fut = asyncio.get_running_loop().create_future()
        self._native.flush_then(fut)
        await fut

    async def sync_spool(self) -> None:
        """With the ``SpoolDirectory`` property set, returns once every record put before it
        is durable on disk: from then on it survives ``kill -9`` of the process or power loss
        of the machine, and a producer opened on the same directory sends it if this one did
        not. Cancelling stops the waiting only.

        Raises:
            SpoolError: without a spool, or when writing it fails.
        """
        self._usable()
        fut = asyncio.get_running_loop().create_future()
        self._native.sync_spool_then(fut)
        await fut

    async def close(self) -> None:
        """Stops taking records, sends everything buffered and returns once every record has
        resolved. Later puts raise :class:`ProducerClosed`."""
        self._usable()
        _open.discard(self)
        fut = asyncio.get_running_loop().create_future()
        self._native.close_then(fut)
        await fut

    async def __aenter__(self) -> "Producer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class SyncProducer(_Base):
    """A producer for scripts, Lambda handlers and threads: the same engine as
    :class:`Producer`, with ``concurrent.futures`` futures. Safe to share between threads; no
    call holds the GIL while it waits. Arguments as :class:`Producer`'s.
    """

    def put(
        self,
        stream: str,
        data: Data,
        partition_key: Optional[str] = None,
        explicit_hash_key: Optional[str] = None,
        block: bool = True,
    ) -> "concurrent.futures.Future[Receipt]":
        """Hands one record to the producer; returns the future of its :class:`Receipt`
        (``.result()`` raises :class:`PutError` when it was not put). While the buffer is full
        it blocks until there is room, or with ``block=False`` raises :class:`BufferFull`.

        Raises:
            BufferFull: with ``block=False``, when the buffer is full.
            InvalidRecord: at once, for a key Kinesis would refuse.
            ProducerClosed: at once, after :meth:`close`.
        """
        self._usable()
        fut: "concurrent.futures.Future[Receipt]" = concurrent.futures.Future()
        refused = self._native.send(
            stream,
            record(data, partition_key, explicit_hash_key),
            fut,
            "block" if block else "refuse",
        )
        if isinstance(refused, tuple):
            raise from_native(refused)
        return fut

    def put_many(
        self, stream: str, records: Iterable[Any], block: bool = True
    ) -> "concurrent.futures.Future[List[Outcome]]":
        """Hands many records to the producer at once; the future gives each one's outcome
        in order (its :class:`Receipt` or the :class:`PutError` handing it back). Records as
        :meth:`Producer.put_many` takes them. Blocks while the buffer is full, or with
        ``block=False`` refuses what does not fit as :class:`BufferFull` in the list."""
        self._usable()
        fut: "concurrent.futures.Future[List[Outcome]]" = concurrent.futures.Future()
        self._native.send_many(
            stream, records, entry, fut, "block" if block else "refuse"
        )
        return fut

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Sends everything buffered now and blocks until every record put before it has
        resolved (its future done), or ``timeout`` seconds pass; returns whether they all
        did."""
        self._usable()
        _not_from_a_callback("flush()", timeout)
        done: "concurrent.futures.Future[None]" = concurrent.futures.Future()
        self._native.flush_then(done)
        return _wait(done, timeout)

    def sync_spool(self, timeout: Optional[float] = None) -> bool:
        """With the ``SpoolDirectory`` property set, blocks until every record put before it
        is durable on disk (see :meth:`Producer.sync_spool`), or ``timeout`` seconds pass;
        returns whether it is.

        Raises:
            SpoolError: without a spool, or when writing it fails.
        """
        self._usable()
        _not_from_a_callback("sync_spool()", timeout)
        done: "concurrent.futures.Future[None]" = concurrent.futures.Future()
        self._native.sync_spool_then(done)
        return _wait(done, timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Stops taking records, sends everything buffered and blocks until every record has
        resolved (its future done), or ``timeout`` seconds pass; returns whether they all
        did."""
        return self._close_and_wait(timeout)

    def __enter__(self) -> "SyncProducer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
