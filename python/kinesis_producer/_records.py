"""Turning what Python callers pass into what the native module takes."""

import os
from typing import Any, List, Mapping, Optional, Tuple, Union

Data = Union[bytes, bytearray, memoryview, str, Any]
"""Record data: bytes, a str (sent as UTF-8) or any object with the buffer protocol."""

Native = Tuple[bytes, Optional[str], Optional[str]]


_KEYS = (str, type(None))


def data_bytes(data: Data) -> bytes:
    """The bytes to send for ``data``."""
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (int, float)) or data is None:
        # bytes(5) would be five zero bytes: never what was meant.
        raise TypeError(
            f"data must be bytes, str or an object with the buffer protocol, not {type(data).__name__}"
        )
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise TypeError(
            f"data must be bytes, str or an object with the buffer protocol, not {type(data).__name__}"
        ) from None


def key(value: Optional[str], name: str) -> Optional[str]:
    """A partition or explicit hash key: a str, or None."""
    if value is None or isinstance(value, str):
        return value
    if name == "explicit_hash_key" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")


def record(data: Data, partition_key: Optional[str], explicit_hash_key: Optional[str]) -> Native:
    if type(data) is bytes and explicit_hash_key is None and type(partition_key) in _KEYS:
        # The common case, without the checks' calls.
        return (data, partition_key, None)
    return (
        data_bytes(data),
        key(partition_key, "partition_key"),
        key(explicit_hash_key, "explicit_hash_key"),
    )


def entry(r: Any) -> Native:
    """One of ``put_many``'s records: data alone (a random partition key), a tuple
    ``(data, partition_key[, explicit_hash_key])``, or a dict as boto3's ``put_records`` takes
    (``Data``, ``PartitionKey``, ``ExplicitHashKey``) or in snake case.

    The native module reads bytes and str, alone or in such a tuple with str keys, itself; it
    calls this for every other form."""
    if isinstance(r, Mapping):
        data = r["Data"] if "Data" in r else r["data"]
        pk = r.get("PartitionKey", r.get("partition_key"))
        ehk = r.get("ExplicitHashKey", r.get("explicit_hash_key"))
        return record(data, pk, ehk)
    if isinstance(r, tuple):
        if not 1 <= len(r) <= 3:
            raise TypeError(
                f"a record tuple is (data, partition_key[, explicit_hash_key]), not {len(r)} items"
            )
        padded = r + (None,) * (3 - len(r))
        return record(padded[0], padded[1], padded[2])
    return record(r, None, None)


def properties(config: Optional[Mapping[str, Any]]) -> List[Tuple[str, str]]:
    """KPL properties as (name, value) strings: booleans as ``true``/``false``."""
    out = []
    for name, value in (config or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append((str(name), str(value)))
    return out


def path(p: Optional[Union[str, "os.PathLike[str]"]]) -> Optional[str]:
    return None if p is None else os.fspath(p)
