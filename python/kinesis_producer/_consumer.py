"""Reading aggregated records back: for consumers that get Kinesis records themselves (boto3's
``get_records``, a Lambda handler's event) instead of through the KCL."""

import base64
import copy
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Union

from . import _native


class UserRecord(NamedTuple):
    """One user record read out of a Kinesis record."""

    partition_key: str
    explicit_hash_key: Optional[str]
    data: bytes
    sub_sequence_number: int
    """Its index in the aggregate (0 for a plain record); with the Kinesis record's sequence
    number it identifies the user record, as the KCL's ``UserRecord`` does."""
    aggregated: bool
    sequence_number: Optional[str] = None
    """The Kinesis record's sequence number, where the record given had one."""


def deaggregate(
    record: Union[Mapping[str, Any], bytes], partition_key: str = ""
) -> List[UserRecord]:
    """The user records in a Kinesis record, as the KCL reads them.

    ``record`` is a record as boto3's ``get_records`` returns it (a dict with ``Data``,
    ``PartitionKey`` and ``SequenceNumber``), or its data as bytes (then give its
    ``partition_key``). An aggregate gives its user records in sub-sequence order; anything else
    (a plain record, or one with the magic but a bad digest) is one user record, itself."""
    sequence_number = None
    if isinstance(record, Mapping):
        data = record["Data"]
        partition_key = record.get("PartitionKey", partition_key)
        sequence_number = record.get("SequenceNumber")
    else:
        data = record
    return [
        UserRecord(*r, sequence_number=sequence_number)
        for r in _native.deaggregate(partition_key, bytes(data))
    ]


def deaggregate_lambda_event(event: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The user records of a Lambda event from a Kinesis stream, in the event's own record
    format: each aggregate becomes one record per user record (a copy of the event's record
    with ``kinesis.data`` (base64, as Lambda gives it), ``kinesis.partitionKey``,
    ``kinesis.explicitHashKey``, ``kinesis.subSequenceNumber`` and ``kinesis.aggregated`` set);
    plain records come through unchanged. The same records, in the same order, as
    ``aws_kinesis_agg.deaggregator.deaggregate_records`` gives."""
    out: List[Dict[str, Any]] = []
    for r in event.get("Records", []):
        k = r["kinesis"]
        data = base64.b64decode(k["data"])
        users = _native.deaggregate(k.get("partitionKey", ""), data)
        if len(users) == 1 and not users[0][4]:
            out.append(r)
            continue
        for pk, ehk, user_data, sub, _aggregated in users:
            n = copy.copy(r)
            n["kinesis"] = dict(
                k,
                data=base64.b64encode(user_data).decode("ascii"),
                partitionKey=pk,
                explicitHashKey=ehk,
                subSequenceNumber=sub,
                aggregated=True,
            )
            out.append(n)
    return out
