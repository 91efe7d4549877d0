"""The exceptions a put raises, built from what the native module reports."""

from typing import Any, NamedTuple, Optional, Tuple

from ._native import ConfigError


class Record(NamedTuple):
    """A user record handed back by a :class:`PutError`, as it was given."""

    data: bytes
    partition_key: Optional[str]
    explicit_hash_key: Optional[str]


class PutError(Exception):
    """A user record that was not put, handed back with the reason.

    ``str(error)`` is one sentence naming the record, the stream and the reason.

    Attributes:
        kind: why: ``"invalid_record"``, ``"buffer_full"``, ``"expired"`` (not put within
            ``RecordTtl``), ``"rejected"`` (an error retrying cannot heal, e.g. no such stream),
            ``"no_credentials"`` (no AWS credentials found, or their configuration is invalid),
            ``"throttled"`` (with ``FailIfThrottled``), ``"closed"`` (the producer was closed),
            ``"stopped"`` (the producer stopped before the outcome was known) or ``"spool"``
            (with ``SpoolDirectory``: the spool is full or cannot be written).
        record: the record, handed back (:class:`Record`).
        stream: the stream it was sent to.
        attempts: how many PutRecords attempts were made for it.
        code: the service's error code (e.g. ``ResourceNotFoundException``), where it gave one.
        message: the service's message, or the reason as a sentence.
    """

    kind: str
    record: Record
    stream: str
    attempts: int
    code: Optional[str]
    message: str

    def __init__(
        self,
        sentence: str,
        *,
        kind: str,
        record: Record,
        stream: str,
        attempts: int = 0,
        code: Optional[str] = None,
        message: str = "",
    ) -> None:
        super().__init__(sentence)
        self.kind = kind
        self.record = record
        self.stream = stream
        self.attempts = attempts
        self.code = code
        self.message = message or sentence


class BufferFull(PutError):
    """The producer's buffer (``MaxBufferedRecords``, ``MaxBufferedBytes``) is full: the record
    was not accepted. ``put`` waits for room instead; ``put_nowait`` raises this."""


class InvalidRecord(PutError, ValueError):
    """Kinesis would refuse the record as it is: an empty or too long partition key, an explicit
    hash key that is not a decimal number up to 2**128-1, or data over the stream's limit. The
    message names the value and the limit."""


class ProducerClosed(PutError):
    """The producer was closed (or stopped) before it took the record."""


_KINDS = {
    "buffer_full": BufferFull,
    "invalid_record": InvalidRecord,
    "closed": ProducerClosed,
}


def from_native(t: Tuple[Any, ...]) -> PutError:
    """The exception for a failure tuple of the native module:
    ``(kind, sentence, code, message, stream, data, partition_key, explicit_hash_key, attempts)``.
    """
    kind, sentence, code, message, stream, data, pk, ehk, attempts = t
    cls = _KINDS.get(kind, PutError)
    return cls(
        sentence,
        kind=kind,
        record=Record(data, pk, ehk),
        stream=stream,
        attempts=attempts,
        code=code,
        message=message,
    )


__all__ = [
    "BufferFull",
    "ConfigError",
    "InvalidRecord",
    "ProducerClosed",
    "PutError",
    "Record",
    "from_native",
]
