"""The consumer helpers agree with the reference aws-kinesis-agg on what we put."""

import base64

from aws_kinesis_agg.deaggregator import deaggregate_records, iter_deaggregate_records

from conftest import kinesis_records
from kinesis_producer import SyncProducer, deaggregate, deaggregate_lambda_event


def lambda_event(records):
    """A Lambda event from a Kinesis stream, in the shape Lambda gives it."""
    return {
        "Records": [
            {
                "eventSource": "aws:kinesis",
                "eventID": f"shardId-000000000000:{r['SequenceNumber']}",
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r["PartitionKey"],
                    "sequenceNumber": r["SequenceNumber"],
                    "data": base64.b64encode(r["Data"]).decode("ascii"),
                    "approximateArrivalTimestamp": 1700000000.0,
                },
            }
            for r in records
        ]
    }


def test_deaggregate_and_the_lambda_helper_match_the_reference(endpoint, new_stream, client):
    stream = new_stream(1)
    with SyncProducer(endpoint_url=endpoint) as p:
        p.put_many(stream, [(b"u%d" % i, f"k{i % 5}") for i in range(300)]).result(timeout=30)
        p.put_many(stream, [(b"e%d" % i, "k", str(i)) for i in range(10)]).result(timeout=30)
        # One alone, sent plain: AggregationEnabled does not matter for a lone record.
        p.put(stream, b"alone", partition_key="solo").result(timeout=30)
    (records,) = kinesis_records(client, stream).values()
    assert any(len(deaggregate(r)) > 1 for r in records), "nothing was aggregated"

    ours = [(u.partition_key, u.explicit_hash_key, u.data) for r in records for u in deaggregate(r)]
    theirs = []
    for r in records:
        for u in iter_deaggregate_records(r, data_format="Boto3"):
            k = u["kinesis"]
            agg = k.get("aggregated", False)
            theirs.append(
                (
                    k["partitionKey"],
                    k.get("explicitHashKey"),
                    base64.b64decode(k["data"]) if agg else bytes(k["data"]),
                )
            )
    assert ours == theirs
    assert len(ours) == 311
    assert all(u.sequence_number == r["SequenceNumber"] for r in records for u in deaggregate(r))
    # The bytes form, with the partition key given.
    assert deaggregate(records[0]["Data"], records[0]["PartitionKey"])[0].data == ours[0][2]

    event = lambda_event(records)
    mine = deaggregate_lambda_event(event)
    ref = deaggregate_records(lambda_event(records)["Records"])
    assert len(mine) == len(ref) == 311
    for m, r in zip(mine, ref):
        mk, rk = m["kinesis"], r["kinesis"]
        assert base64.b64decode(mk["data"]) == base64.b64decode(rk["data"])
        assert mk["partitionKey"] == rk["partitionKey"]
        assert mk.get("explicitHashKey") == rk.get("explicitHashKey")
        assert mk["sequenceNumber"] == rk["sequenceNumber"]
        assert mk.get("subSequenceNumber") == rk.get("subSequenceNumber")
        assert m["eventID"] == r["eventID"]
    # The event itself is left as it was.
    assert event == lambda_event(records)
