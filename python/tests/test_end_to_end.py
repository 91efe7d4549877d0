"""End to end through the Python package, the Rust engine and aws-sdk-kinesis, against the
embedded local Kinesis; every record is read back and deaggregated by aws-kinesis-agg."""

import asyncio
import collections
import concurrent.futures
import threading

import pytest

from kinesis_producer import (
    InvalidRecord,
    Producer,
    PutError,
    Receipt,
    SyncProducer,
)


def check_receipts(read, sent):
    """Each (key, data, receipt) sent is in the stream exactly where its receipt says, and
    the stream holds nothing else."""
    by_place = {(r.shard_id, r.sequence_number, r.sub_sequence_number): r for r in read}
    assert len(by_place) == len(read), "two user records at one place"
    for key, data, receipt in sent:
        assert isinstance(receipt, Receipt), receipt
        place = (receipt.shard_id, receipt.sequence_number, receipt.sub_sequence_number)
        got = by_place.get(place)
        assert got is not None, f"nothing at {place}"
        assert (got.partition_key, got.data) == (key, data)
    assert collections.Counter((r.partition_key, r.data) for r in read) == collections.Counter(
        (k, d) for k, d, _ in sent
    )


def test_async_put_put_nowait_and_put_many_are_read_back_where_their_receipts_say(
    endpoint, new_stream, read_stream
):
    stream = new_stream(4)

    async def main():
        sent = []
        async with Producer(endpoint_url=endpoint) as p:
            for i in range(50):
                key, data = f"user-{i % 7}", f"put {i}".encode()
                sent.append((key, data, await p.put(stream, data, partition_key=key)))
            futs = []
            for i in range(2_000):
                key, data = f"user-{i % 100}", b"nowait %d" % i
                futs.append((key, data, p.put_nowait(stream, data, partition_key=key)))
            for key, data, fut in futs:
                sent.append((key, data, await fut))
            batch = [(b"many %d" % i, f"user-{i % 13}") for i in range(1_000)]
            outcomes = await p.put_many(stream, batch)
            assert len(outcomes) == len(batch)
            sent.extend((k, d, o) for (d, k), o in zip(batch, outcomes))
            # Data as str, bytearray and memoryview; boto3-style dicts.
            sent.append(("s", "é".encode(), await p.put(stream, "é", partition_key="s")))
            sent.append(("b", b"ba", await p.put(stream, bytearray(b"ba"), partition_key="b")))
            sent.append(("m", b"mv", await p.put(stream, memoryview(b"mv"), partition_key="m")))
            dicts = [{"Data": b"d1", "PartitionKey": "d"}, {"data": "d2", "partition_key": "d"}]
            for d, o in zip((b"d1", b"d2"), await p.put_many(stream, dicts)):
                sent.append(("d", d, o))
            metrics = p.metrics()
        return sent, metrics

    sent, metrics = asyncio.run(main())
    assert any(r.aggregated for _, _, r in sent), "nothing was aggregated"
    check_receipts(read_stream(stream), sent)
    put = [m for m in metrics["UserRecordsPut"] if m["stream"] is None and m["shard"] is None]
    assert put[0]["total"]["sum"] == len(sent)


def test_a_missing_partition_key_gets_a_random_one(endpoint, new_stream, read_stream):
    stream = new_stream(2)
    with SyncProducer(endpoint_url=endpoint) as p:
        receipts = [p.put(stream, b"r%d" % i).result(timeout=30) for i in range(20)]
        outcomes = p.put_many(stream, [b"a", b"b"]).result(timeout=30)
    read = read_stream(stream)
    keys = {r.partition_key for r in read}
    assert len(read) == 22 and len(keys) == 22
    assert all(len(k) == 32 for k in keys)
    assert all(isinstance(r, Receipt) for r in receipts + outcomes)


def test_put_many_reads_every_record_form_as_put_does(endpoint, new_stream, read_stream):
    # The native module reads bytes and str, alone or in tuples with str keys, itself; every
    # other form goes through the Python layer's `entry`: both paths must agree.
    from kinesis_producer import Record

    stream = new_stream(2)
    top = str(2**128 - 1)
    forms = [
        (b"bare", None),
        ("str bare", None),
        ((b"one",), None),
        ((b"two", "k2"), "k2"),
        (("str two", "k3"), "k3"),
        ((b"none key", None), None),
        ((b"hashed", "k5", top), "k5"),
        ((b"int hash", "k6", 2**128 - 1), "k6"),
        ((bytearray(b"bytearray"), "k7"), "k7"),
        ((memoryview(b"memoryview"), "k8"), "k8"),
        ({"Data": "dict", "PartitionKey": "k9", "ExplicitHashKey": top}, "k9"),
        (Record(b"record", "k10", None), "k10"),
    ]
    wanted = [b"bare", b"str bare", b"one", b"two", b"str two", b"none key", b"hashed"]
    wanted += [b"int hash", b"bytearray", b"memoryview", b"dict", b"record"]
    with SyncProducer(endpoint_url=endpoint) as p:
        outcomes = p.put_many(stream, [r for r, _ in forms]).result(timeout=30)
        # Any iterable, read once.
        from_generator = p.put_many(stream, (d for d in [b"g1", ("g2", "g")])).result(timeout=30)
        # A form it does not know is refused before anything is sent.
        with pytest.raises(TypeError, match="data must be bytes, str or an object"):
            p.put_many(stream, [(b"fine", "k"), (5, "k")])
        with pytest.raises(TypeError, match="partition_key must be a str or None, not int"):
            p.put_many(stream, [(b"fine", 5)])
        with pytest.raises(TypeError, match="not 4 items"):
            p.put_many(stream, [(b"fine", "k", None, None)])
    assert all(isinstance(o, Receipt) for o in outcomes + from_generator), outcomes
    read = {r.data: r for r in read_stream(stream)}
    assert sorted(read) == sorted(wanted + [b"g1", b"g2"])
    for (_, key), data in zip(forms, wanted):
        got = read[data].partition_key
        assert got == key if key is not None else len(got) == 32, (data, got)
    # The top of the hash key range belongs to the last shard, whatever the partition key.
    last = max(o.shard_id for o in outcomes)
    assert {outcomes[i].shard_id for i in (6, 7, 10)} == {last}
    assert read[b"g2"].partition_key == "g"


def test_many_threads_share_one_sync_producer(endpoint, new_stream, read_stream):
    stream = new_stream(4)
    sent = []
    lock = threading.Lock()

    def worker(t, p):
        mine = []
        for i in range(500):
            key, data = f"t{t}-{i % 10}", b"thread %d record %d" % (t, i)
            mine.append((key, data, p.put(stream, data, partition_key=key)))
        with lock:
            sent.extend(mine)

    with SyncProducer(endpoint_url=endpoint) as p:
        threads = [threading.Thread(target=worker, args=(t, p)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert p.flush(timeout=60)
    resolved = [(k, d, f.result(timeout=30)) for k, d, f in sent]
    assert len(resolved) == 4_000
    check_receipts(read_stream(stream), resolved)


def test_sync_futures_work_with_concurrent_futures_helpers(endpoint, new_stream):
    stream = new_stream(1)
    with SyncProducer(endpoint_url=endpoint) as p:
        futs = [p.put(stream, b"x", partition_key=str(i)) for i in range(100)]
        done, not_done = concurrent.futures.wait(futs, timeout=30)
        assert len(done) == 100 and not not_done
        seen = []
        p.put(stream, b"y", partition_key="cb").add_done_callback(lambda f: seen.append(f))
        p.flush(timeout=30)
    assert len(seen) == 1 and seen[0].result().shard_id == "shardId-000000000000"


def test_a_stream_that_does_not_exist_hands_the_record_back(endpoint):
    async def main():
        async with Producer(endpoint_url=endpoint) as p:
            with pytest.raises(PutError) as e:
                await p.put("no-such-stream", b"lost?", partition_key="k")
            outcomes = await p.put_many("no-such-stream", [(b"a", "k1"), (b"b", "k2")])
        return e.value, outcomes

    err, outcomes = asyncio.run(main())
    assert err.kind == "rejected"
    assert err.code == "ResourceNotFoundException"
    assert err.record.data == b"lost?" and err.record.partition_key == "k"
    assert err.stream == "no-such-stream"
    assert err.attempts == 1
    assert "no-such-stream" in str(err) and "not retried" in str(err)
    assert [o.record.data for o in outcomes] == [b"a", b"b"]
    assert all(isinstance(o, PutError) and o.kind == "rejected" for o in outcomes)


def test_put_many_refuses_invalid_records_in_their_places_and_sends_the_rest(
    endpoint, new_stream, read_stream
):
    stream = new_stream(1)
    with SyncProducer(endpoint_url=endpoint) as p:
        outcomes = p.put_many(
            stream,
            [(b"ok1", "k"), (b"bad", ""), (b"ok2", "k", "12"), (b"bad2", "k", "x1")],
        ).result(timeout=30)
    kinds = [o.kind if isinstance(o, PutError) else "ok" for o in outcomes]
    assert kinds == ["ok", "invalid_record", "ok", "invalid_record"]
    assert isinstance(outcomes[1], InvalidRecord) and outcomes[1].record.data == b"bad"
    assert "1 to 256 characters" in str(outcomes[1])
    assert sorted(r.data for r in read_stream(stream)) == [b"ok1", b"ok2"]
