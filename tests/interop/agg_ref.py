#!/usr/bin/env python3
"""Drives the reference aws-kinesis-agg library (PyPI) for our interop tests.

Subcommands, JSON on stdin and stdout:
  aggregate --max-size N   [{partition_key, explicit_hash_key?, data_base64}] -> the Kinesis records
                           the reference RecordAggregator makes: [{partition_key,
                           explicit_hash_key, data_base64, user_records}]
  deaggregate              [{partition_key, data_base64}] (Kinesis records) -> the user records the
                           reference deaggregator reads: [{kinesis_record, partition_key,
                           explicit_hash_key, data_base64, sub_sequence_number, aggregated}]
  golden                   (no input) the golden vectors: fixed inputs and the reference bytes
                           for each, as committed in tests/golden/vectors.json
"""
import base64
import json
import sys

import aws_kinesis_agg
from aws_kinesis_agg.aggregator import AggRecord, RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records


def b64(data):
    return base64.b64encode(data).decode("ascii")


def record_data(r):
    if "data_base64" in r:
        return base64.b64decode(r["data_base64"])
    return r["data"].encode("utf-8")


def emit(agg_record):
    pk, ehk, data = agg_record.get_contents()
    return {
        "partition_key": pk,
        "explicit_hash_key": ehk,
        "data_base64": b64(data),
        "user_records": agg_record.get_num_user_records(),
    }


def aggregate(records, max_size):
    aggregator = RecordAggregator(max_size=max_size)
    out = []
    for r in records:
        full = aggregator.add_user_record(
            r["partition_key"], record_data(r), r.get("explicit_hash_key"))
        if full is not None:
            out.append(emit(full))
    rest = aggregator.clear_and_get()
    if rest is not None:
        out.append(emit(rest))
    return out


def deaggregate(kinesis_records):
    out = []
    for i, kr in enumerate(kinesis_records):
        event = {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "sequenceNumber": str(i),
                "approximateArrivalTimestamp": 0,
                "partitionKey": kr["partition_key"],
                "data": kr["data_base64"],
            }
        }
        for u in deaggregate_records([event]):
            k = u["kinesis"]
            data = k["data"]
            out.append({
                "kinesis_record": i,
                "partition_key": k["partitionKey"],
                "explicit_hash_key": k.get("explicitHashKey"),
                "data_base64": data.decode("ascii") if isinstance(data, bytes) else data,
                "sub_sequence_number": k.get("subSequenceNumber", 0),
                "aggregated": bool(k.get("aggregated", False)),
            })
    return out


def golden_cases():
    """Fixed inputs covering every encoding path: key dedup, explicit hash keys, multi-byte
    varints (indices >= 128, data >= 128 and >= 16384 bytes), non-ASCII keys, empty data."""
    max_ehk = str(2 ** 128 - 1)
    cases = [
        ("one record", [("k", None, b"v")]),
        ("two distinct keys", [("a", None, b"1"), ("b", None, b"2")]),
        ("repeated keys", [("x", None, b"one"), ("y", None, b"two"), ("x", None, b"three"),
                           ("y", None, b""), ("x", None, b"five")]),
        ("explicit hash keys", [("p", "0", b"zero"), ("q", None, b"none"), ("r", max_ehk, b"max"),
                                ("s", "0", b"zero again"),
                                ("t", "170141183460469231731687303715884105728", b"mid")]),
        ("non-ascii keys", [("é", None, b"\x00\x01\x02"), ("🔑", "12345", b"\xff" * 7),
                            ("ключ", None, b""), ("キー", None, "日本語".encode("utf-8")),
                            ("é", None, b"\x00")]),
        ("long key", [("k" * 256, None, b"a"), ("ж" * 256, None, b"b")]),
        ("data of 300 and 20000 bytes", [("m", None, bytes(i % 251 for i in range(300))),
                                         ("n", None, bytes(i % 253 for i in range(20000)))]),
        ("200 records, 150 keys", [("key-%d" % (i % 150), ("%d" % (i * 7919) if i % 10 == 0 else None),
                                    ("payload %d" % i).encode("ascii")) for i in range(200)]),
    ]
    out = []
    for name, records in cases:
        agg = AggRecord(max_size=aws_kinesis_agg.MAX_BYTES_PER_RECORD)
        for pk, ehk, data in records:
            if not agg.add_user_record(pk, data, ehk):
                raise SystemExit("golden case %r does not fit one aggregate" % name)
        _pk, _ehk, data = agg.get_contents()
        inputs = []
        for pk, ehk, d in records:
            r = {"partition_key": pk, "data_base64": b64(d)}
            if ehk is not None:
                r["explicit_hash_key"] = ehk
            inputs.append(r)
        out.append({"name": name, "records": inputs, "aggregate_base64": b64(data)})
    return {
        "generator": "tests/interop/agg_ref.py golden",
        "reference": "aws-kinesis-agg %s (PyPI)" % _version(),
        "cases": out,
    }


def _version():
    try:
        from importlib.metadata import version
        return version("aws-kinesis-agg")
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "aggregate":
        max_size = int(sys.argv[sys.argv.index("--max-size") + 1]) if "--max-size" in sys.argv \
            else aws_kinesis_agg.MAX_BYTES_PER_RECORD
        result = aggregate(json.load(sys.stdin), max_size)
    elif cmd == "deaggregate":
        result = deaggregate(json.load(sys.stdin))
    elif cmd == "golden":
        result = golden_cases()
    else:
        raise SystemExit(__doc__)
    json.dump(result, sys.stdout, indent=1 if cmd == "golden" else None, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
