"""Cancellation and interpreter exit: no record lost or doubled, no hang, no crash."""

import asyncio
import collections
import gc
import socket
import subprocess
import sys
import tempfile
import textwrap

from kinesis_producer import Producer, SyncProducer


def test_cancelling_awaiting_puts_neither_loses_nor_doubles_their_records(
    endpoint, new_stream, read_stream
):
    stream = new_stream(1)

    async def main():
        config = {"RecordMaxBufferedTime": 300}
        async with Producer(endpoint_url=endpoint, config=config) as p:
            tasks = [
                asyncio.create_task(p.put(stream, b"c%d" % i, partition_key="k"))
                for i in range(100)
            ]
            # Let them hand their records over; they then wait out RecordMaxBufferedTime.
            await asyncio.sleep(0.05)
            for t in tasks[::2]:
                t.cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 50
    counts = collections.Counter(r.data for r in read_stream(stream))
    assert counts == collections.Counter(b"c%d" % i for i in range(100))


def test_a_put_cancelled_while_it_waits_for_room_is_not_sent(endpoint, new_stream, read_stream):
    # As asyncio.Queue.put: cancelled before the producer took the record, it is not put.
    stream = new_stream(1)

    async def main():
        config = {"MaxBufferedRecords": 1, "RecordMaxBufferedTime": 300}
        async with Producer(endpoint_url=endpoint, config=config) as p:
            tasks = [
                asyncio.create_task(p.put(stream, b"w%d" % i, partition_key="k"))
                for i in range(20)
            ]
            # Each task hands its record over: the first is taken, the others wait for room
            # (the first holds it for RecordMaxBufferedTime).
            await asyncio.sleep(0)
            for t in tasks[1:10]:
                t.cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 9
    counts = collections.Counter(r.data for r in read_stream(stream))
    assert counts == collections.Counter(b"w%d" % i for i in [0, *range(10, 20)])


def test_a_producer_dropped_without_close_still_puts_what_it_held(
    endpoint, new_stream, read_stream
):
    stream = new_stream(1)
    p = SyncProducer(endpoint_url=endpoint, config={"RecordMaxBufferedTime": 300})
    futures = [p.put(stream, b"d%d" % i, partition_key="k") for i in range(100)]
    del p
    gc.collect()
    receipts = [f.result(timeout=30) for f in futures]
    assert all(r.shard_id == "shardId-000000000000" for r in receipts)
    assert sorted(r.data for r in read_stream(stream)) == sorted(b"d%d" % i for i in range(100))


def run_script(body: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # Run from a directory without the package's sources, so the installed package is used.
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(body)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )


def test_exiting_with_records_in_flight_sends_them_and_exits_cleanly(
    endpoint, new_stream, read_stream
):
    stream = new_stream(2)
    done = run_script(
        f"""
        import asyncio, threading
        from kinesis_producer import Producer, SyncProducer

        sync = SyncProducer(endpoint_url={endpoint!r})
        for i in range(3000):
            sync.put({stream!r}, b"sync %d" % i, partition_key=str(i % 50))

        async def main():
            p = Producer(endpoint_url={endpoint!r})
            for i in range(2000):
                p.put_nowait({stream!r}, b"async %d" % i, partition_key=str(i % 50))
            return p  # the loop closes with every future pending

        keep = asyncio.run(main())

        def keep_putting():
            i = 0
            try:
                while True:
                    sync.put({stream!r}, b"daemon %d" % i, partition_key="d")
                    i += 1
            except Exception:
                pass  # ProducerClosed, once the exit closed it

        threading.Thread(target=keep_putting, daemon=True).start()
        print("exiting", flush=True)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "Fatal Python error" not in done.stderr
    assert "exiting" in done.stdout
    data = [r.data for r in read_stream(stream)]
    counts = collections.Counter(d for d in data if not d.startswith(b"daemon"))
    expected = collections.Counter(
        [b"sync %d" % i for i in range(3000)] + [b"async %d" % i for i in range(2000)]
    )
    assert counts == expected
    # What the daemon thread put before the exit is there once each.
    daemon = collections.Counter(d for d in data if d.startswith(b"daemon"))
    assert all(n == 1 for n in daemon.values())


def test_exiting_while_the_endpoint_is_unreachable_gives_up_after_close_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port now: every call fails to connect and is retried.
    done = run_script(
        f"""
        from kinesis_producer import SyncProducer

        p = SyncProducer(
            endpoint_url="http://127.0.0.1:{port}",
            config={{"RecordTtl": 600000}},
            close_timeout=2.0,
        )
        futures = [p.put("s", b"x", partition_key="k") for _ in range(100)]
        print("exiting", flush=True)
        """,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Fatal Python error" not in done.stderr
    assert "exiting" in done.stdout


def test_a_producer_used_in_a_child_after_fork_raises_and_a_new_one_works(
    endpoint, new_stream, read_stream
):
    """gunicorn --preload, multiprocessing with fork: the child gets the parent's producer
    without its threads. Using it there raises a clear error (it hung); a producer made in the
    child works; the child and the parent exit without waiting on each other's producers."""
    stream = new_stream(1)
    done = run_script(
        f"""
        import os, sys
        from kinesis_producer import SyncProducer

        p = SyncProducer(endpoint_url={endpoint!r})
        p.put({stream!r}, b"parent before", partition_key="k").result(timeout=30)
        pending = [p.put({stream!r}, b"parent %d" % i, partition_key="k") for i in range(200)]
        pid = os.fork()
        if pid == 0:
            try:
                p.put({stream!r}, b"child on the parent's producer", partition_key="k")
                print("no error", flush=True)
                sys.exit(3)
            except RuntimeError as e:
                print("child error:", e, flush=True)
            try:
                p.flush()
                sys.exit(4)
            except RuntimeError:
                pass
            own = SyncProducer(endpoint_url={endpoint!r})
            own.put({stream!r}, b"child", partition_key="k").result(timeout=30)
            sys.exit(0)  # a normal exit: atexit must not wait for the parent's producer
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
        for f in pending:
            f.result(timeout=30)
        p.close()
        """,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert "child exit 0" in done.stdout, done.stdout + done.stderr
    assert "cannot be used in its child" in done.stdout
    assert "os.fork()" in done.stdout
    data = sorted(r.data for r in read_stream(stream))
    expected = sorted(
        [b"parent before", b"child"] + [b"parent %d" % i for i in range(200)]
    )
    assert data == expected


def test_flush_from_a_done_callback_raises_instead_of_waiting_for_itself(endpoint, new_stream):
    """A future's done-callback runs on the producer's delivery thread: a flush() there that
    waited for outcomes that thread delivers never returned. It raises a clear error now
    (timeout=0 only sends what is buffered), and the producer goes on."""
    stream = new_stream(1)
    seen = []
    with SyncProducer(endpoint_url=endpoint) as p:

        def callback(fut):
            try:
                p.flush()
                seen.append("returned")
            except RuntimeError as e:
                seen.append(str(e))
            seen.append(p.flush(timeout=0))

        first = p.put(stream, b"one", partition_key="k")
        first.add_done_callback(callback)
        first.result(timeout=30)
        assert p.flush(timeout=30)
    assert "delivery thread" in seen[0], seen
    assert seen[1] in (True, False)
