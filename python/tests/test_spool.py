"""The spool from Python: records whose ``sync_spool()`` returned survive ``kill -9`` of the
process (checked by killing a producer process several times and reading the stream back with
the reference aws-kinesis-agg), a second producer on the directory is refused, and
``sync_spool`` without a spool says so."""

import asyncio
import collections
import random
import subprocess
import sys
import textwrap

import pytest

from kinesis_producer import Producer, SpoolError, SyncProducer

PER_RUN = 1_500

CHILD = textwrap.dedent(
    """
    import sys
    from kinesis_producer import SyncProducer

    endpoint, spool, stream, start, count = sys.argv[1:6]
    start, count = int(start), int(count)
    p = SyncProducer(
        endpoint_url=endpoint,
        config={"SpoolDirectory": spool, "SpoolMaxBytes": 1 << 20},
    )
    for first in range(start, start + count, 50):
        last = min(first + 50, start + count) - 1
        for n in range(first, last + 1):
            p.put(stream, f"n{n:09}".encode(), partition_key=f"k{n % 16}")
        print(f"SENT {last}", flush=True)
        p.sync_spool()
        print(f"SYNCED {last}", flush=True)
    p.close()
    print("DONE", flush=True)
    """
)


def run(endpoint, spool, stream, start, kill_after_syncs):
    """Runs a producer process; kills it (SIGKILL) once it said it synced `kill_after_syncs`
    times (None: lets it finish). Returns (last synced, last sent, done)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, endpoint, str(spool), stream, str(start), str(PER_RUN)],
        stdout=subprocess.PIPE,
        text=True,
    )
    synced = sent = None
    done = False
    syncs = 0
    for line in proc.stdout:
        word, _, n = line.strip().partition(" ")
        if word == "SENT":
            sent = int(n)
        elif word == "SYNCED":
            synced = int(n)
            syncs += 1
            if kill_after_syncs is not None and syncs >= kill_after_syncs:
                proc.kill()
                break
        elif word == "DONE":
            done = True
    proc.wait(timeout=120)
    # What it printed before it died counts too.
    for line in proc.stdout:
        word, _, n = line.strip().partition(" ")
        if word == "SYNCED":
            synced = int(n)
        elif word == "SENT":
            sent = int(n)
    return synced, sent, done


def test_records_synced_before_kill_9_are_all_in_the_stream(endpoint, new_stream, read_stream, tmp_path):
    stream = new_stream(2)
    spool = tmp_path / "spool"
    rng = random.Random(24)
    runs = []
    for i in range(6):
        runs.append((i * PER_RUN,) + run(endpoint, spool, stream, i * PER_RUN, rng.randint(1, 25)))
    last = 6 * PER_RUN
    runs.append((last,) + run(endpoint, spool, stream, last, None))
    assert runs[-1][3], "the last run did not finish"
    seen = collections.Counter(int(r.data[1:10]) for r in read_stream(stream))
    missing = []
    acknowledged = at_risk = lost = 0
    for start, synced, sent, done in runs:
        synced_to = start + PER_RUN - 1 if done else synced
        if synced_to is not None:
            for n in range(start, synced_to + 1):
                acknowledged += 1
                if n not in seen:
                    missing.append(n)
        if sent is not None:
            for n in range((synced_to if synced_to is not None else start - 1) + 1, sent + 1):
                at_risk += 1
                lost += n not in seen
    duplicates = sum(c - 1 for c in seen.values())
    print(
        f"python spool crash test: {len(runs) - 1} kills; {acknowledged} records synced before "
        f"their kill, {len(missing)} missing; {duplicates} duplicates; {at_risk} sent but not "
        f"synced at a kill, {lost} of them lost"
    )
    assert not missing, missing[:20]
    assert max(seen) < len(runs) * PER_RUN


def test_a_second_producer_on_the_directory_is_refused(endpoint, tmp_path):
    config = {"SpoolDirectory": str(tmp_path / "spool")}
    with SyncProducer(endpoint_url=endpoint, config=config):
        with pytest.raises(SpoolError, match="is in use by another producer"):
            SyncProducer(endpoint_url=endpoint, config=config)


def test_sync_spool_without_a_spool_says_so(endpoint, new_stream, tmp_path):
    with SyncProducer(endpoint_url=endpoint) as p:
        with pytest.raises(SpoolError, match="this producer has no spool"):
            p.sync_spool()

    async def with_spool():
        stream = new_stream(1)
        config = {"SpoolDirectory": str(tmp_path / "spool")}
        async with Producer(endpoint_url=endpoint, config=config) as p:
            put = asyncio.create_task(p.put(stream, b"kept", partition_key="k"))
            await asyncio.sleep(0)  # the put runs to its first await: the record is sent
            await p.sync_spool()
            receipt = await put
            assert receipt.shard_id.startswith("shardId-")

    asyncio.run(with_spool())
