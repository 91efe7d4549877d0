"""Fixtures: the embedded local Kinesis (`kpl local`, started on 127.0.0.1 for the session),
a boto3 client on it, fresh streams, and a reader that deaggregates with the reference
aws-kinesis-agg library (not ours)."""

import base64
import itertools
import os
import pathlib
import re
import subprocess
import time
from typing import Dict, List, NamedTuple

import boto3
import pytest
from aws_kinesis_agg.deaggregator import iter_deaggregate_records
from botocore.config import Config

REPO = pathlib.Path(__file__).resolve().parents[2]


def kpl_binary() -> str:
    path = os.environ.get("KPL_BIN") or str(REPO / "target" / "debug" / "kpl")
    if not os.path.exists(path):
        pytest.fail(f"kpl not found at {path}: build it (cargo build -p kinesis-producer-cli) or set KPL_BIN")
    return path


def start_local(*args: str):
    """Starts `kpl local` on a free port of 127.0.0.1; returns (process, endpoint URL)."""
    proc = subprocess.Popen(
        [kpl_binary(), "local", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    pytest.fail("kpl local did not start within 30 s")


@pytest.fixture(scope="session")
def endpoint():
    proc, url = start_local()
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def client(endpoint):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
    )


_names = itertools.count()


@pytest.fixture
def new_stream(client):
    """Creates a stream of `shards` shards with a fresh name; returns its name."""

    def make(shards: int = 4) -> str:
        name = f"py-{os.getpid()}-{next(_names)}"
        client.create_stream(StreamName=name, ShardCount=shards)
        for _ in range(100):
            if client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
                "StreamStatus"
            ] == "ACTIVE":
                return name
            time.sleep(0.05)
        pytest.fail(f"stream {name} did not become ACTIVE")

    return make


class Read(NamedTuple):
    """One user record as a consumer reads it, deaggregated by aws-kinesis-agg."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    explicit_hash_key: object
    data: bytes


def kinesis_records(client, stream: str) -> Dict[str, List[dict]]:
    """Every Kinesis record in the stream, by shard, as boto3's get_records returns them."""
    out: Dict[str, List[dict]] = {}
    shards = client.list_shards(StreamName=stream)["Shards"]
    for shard in shards:
        sid = shard["ShardId"]
        it = client.get_shard_iterator(
            StreamName=stream, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records: List[dict] = []
        # A local stream holds what was put; reading until a page comes back empty reads it
        # all. Bounded: at most 10,000 pages.
        for _ in range(10_000):
            page = client.get_records(ShardIterator=it, Limit=10_000)
            records.extend(page["Records"])
            it = page.get("NextShardIterator")
            if not page["Records"] or not it:
                break
        out[sid] = records
    return out


@pytest.fixture
def read_stream(client):
    """Every user record in the stream, deaggregated by the reference aws-kinesis-agg."""

    def read(stream: str) -> List[Read]:
        out = []
        for sid, records in kinesis_records(client, stream).items():
            for r in records:
                seq = r["SequenceNumber"]
                for u in iter_deaggregate_records(r, data_format="Boto3"):
                    k = u["kinesis"]
                    # aws_kinesis_agg 1.2.3 (deaggregator.py, _create_user_record) base64-encodes
                    # the data of a user record out of an aggregate, as Lambda delivers data,
                    # and yields a plain record as boto3 gave it (raw bytes).
                    aggregated = k.get("aggregated", False)
                    data = base64.b64decode(k["data"]) if aggregated else bytes(k["data"])
                    out.append(
                        Read(
                            sid,
                            seq,
                            k["subSequenceNumber"] if aggregated else 0,
                            k["partitionKey"],
                            k.get("explicitHashKey"),
                            data,
                        )
                    )
        return out

    return read
