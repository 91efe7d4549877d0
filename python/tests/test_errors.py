"""What is refused at once, with which exception and message."""

import asyncio

import pytest

from kinesis_producer import (
    BufferFull,
    ConfigError,
    InvalidRecord,
    Producer,
    ProducerClosed,
    PutError,
    SyncProducer,
)


def test_keys_kinesis_would_refuse_raise_invalid_record_at_once(endpoint):
    with SyncProducer(endpoint_url=endpoint) as p:
        with pytest.raises(InvalidRecord) as e:
            p.put("s", b"x", partition_key="k" * 257)
        assert "257 characters; the limit is 256" in str(e.value)
        assert e.value.record.partition_key == "k" * 257
        assert isinstance(e.value, ValueError) and isinstance(e.value, PutError)
        with pytest.raises(InvalidRecord) as e:
            p.put("s", b"x", partition_key="k", explicit_hash_key="-1")
        assert "not a decimal integer" in str(e.value)
        with pytest.raises(InvalidRecord) as e:
            p.put("s", b"x", partition_key="k", explicit_hash_key=str(2**128))
        assert "2^128-1" in str(e.value)


def test_data_must_be_bytes_str_or_a_buffer(endpoint):
    with SyncProducer(endpoint_url=endpoint) as p:
        for bad in (5, None, 1.5, object()):
            with pytest.raises(TypeError, match="data must be bytes, str or an object"):
                p.put("s", bad)
        with pytest.raises(TypeError, match="partition_key must be a str"):
            p.put("s", b"x", partition_key=5)


def test_a_record_over_the_stream_limit_fails_with_the_limit_named(endpoint, new_stream):
    stream = new_stream(1)
    with SyncProducer(endpoint_url=endpoint) as p:
        fut = p.put(stream, b"x" * (1024 * 1024), partition_key="k")
        with pytest.raises(InvalidRecord) as e:
            fut.result(timeout=30)
    assert "the limit is 1048576 bytes" in str(e.value)
    assert len(e.value.record.data) == 1024 * 1024


def test_a_full_buffer_refuses_put_nowait_and_makes_put_wait(endpoint, new_stream):
    stream = new_stream(1)

    async def main():
        # One record at a time: the second waits (put) or is refused (put_nowait).
        config = {"MaxBufferedRecords": 1, "RecordMaxBufferedTime": 200}
        async with Producer(endpoint_url=endpoint, config=config) as p:
            first = p.put_nowait(stream, b"1", partition_key="k")
            with pytest.raises(BufferFull) as e:
                p.put_nowait(stream, b"2", partition_key="k")
            assert e.value.kind == "buffer_full" and e.value.record.data == b"2"
            assert "MaxBufferedRecords 1" in str(e.value)
            second = asyncio.ensure_future(p.put(stream, b"3", partition_key="k"))
            return [await first, await second]

    receipts = asyncio.run(main())
    # Each went alone: the second waited for the first to resolve.
    assert [(r.sub_sequence_number, r.aggregated) for r in receipts] == [(0, False)] * 2


def test_sync_put_without_blocking_raises_buffer_full(endpoint, new_stream):
    stream = new_stream(1)
    with SyncProducer(endpoint_url=endpoint, config={"MaxBufferedRecords": 1}) as p:
        first = p.put(stream, b"1", partition_key="k")
        with pytest.raises(BufferFull):
            p.put(stream, b"2", partition_key="k", block=False)
        refused = p.put_many(stream, [b"3", b"4"], block=False).result(timeout=30)
        assert all(isinstance(o, BufferFull) for o in refused)
        # Blocking waits for room instead.
        assert p.put(stream, b"5", partition_key="k").result(timeout=30).shard_id
        assert first.result(timeout=30).shard_id


def test_unknown_or_out_of_range_properties_raise_config_error():
    with pytest.raises(ConfigError) as e:
        SyncProducer(config={"NoSuchProperty": 1})
    assert "NoSuchProperty" in str(e.value)
    with pytest.raises(ConfigError) as e:
        SyncProducer(config={"RecordMaxBufferedTime": -5})
    assert "RecordMaxBufferedTime" in str(e.value)
    assert issubclass(ConfigError, ValueError)


def test_a_properties_file_is_read(tmp_path, endpoint, new_stream):
    stream = new_stream(1)
    props = tmp_path / "kpl.properties"
    props.write_text("AggregationEnabled = false\nRecordMaxBufferedTime = 10\n")
    with SyncProducer(endpoint_url=endpoint, properties_file=props) as p:
        receipts = p.put_many(stream, [(b"a", "k"), (b"b", "k")]).result(timeout=30)
    assert [r.aggregated for r in receipts] == [False, False]
    bad = tmp_path / "bad.properties"
    bad.write_text("RateLimit = lots\n")
    with pytest.raises(ConfigError, match="bad.properties"):
        SyncProducer(properties_file=bad)


def test_puts_after_close_raise_producer_closed(endpoint):
    async def main():
        p = Producer(endpoint_url=endpoint)
        await p.close()
        with pytest.raises(ProducerClosed) as e:
            p.put_nowait("s", b"late", partition_key="k")
        assert e.value.record.data == b"late"
        with pytest.raises(ProducerClosed):
            await p.put("s", b"late", partition_key="k")

    asyncio.run(main())
    p = SyncProducer(endpoint_url=endpoint)
    assert p.close(timeout=30)
    with pytest.raises(ProducerClosed):
        p.put("s", b"late", partition_key="k")
