"""Type stubs for the native module (Rust, built by maturin). `scripts/test.sh` checks them
against the built module with mypy's stubtest."""

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union, final

__all__ = ["_after_fork_in_child", "_exiting", "deaggregate", "Receipt", "ConfigError", "SpoolError", "NativeProducer", "Waiting"]

class ConfigError(ValueError):
    """A producer setting is unknown or out of its range; the message names it and the range."""

class SpoolError(OSError):
    """The spool (SpoolDirectory) cannot be used: another producer holds the directory, or the disk refuses; the message names the directory or file and the cause."""

@final
class Receipt:
    """Where a user record was put."""

    @property
    def stream(self) -> str: ...
    @property
    def shard_id(self) -> str: ...
    @property
    def sequence_number(self) -> str:
        """The sequence number of the Kinesis record that carries it."""
    @property
    def sub_sequence_number(self) -> int:
        """Its index in that Kinesis record (0 when it was sent alone)."""
    @property
    def aggregated(self) -> bool:
        """Whether it travelled in an aggregate."""
    @property
    def attempts(self) -> int:
        """How many PutRecords attempts it took."""

@final
class Waiting:
    """A send waiting for room in the buffer."""

    def abort(self) -> None: ...

_Failure = Tuple[str, str, Optional[str], str, str, bytes, Optional[str], Optional[str], int]
_RecordArgs = Tuple[bytes, Optional[str], Optional[str]]

@final
class NativeProducer:
    def __new__(
        cls,
        deliver: Callable[[List[Tuple[Any, Optional[bool], Any]]], None],
        properties: List[Tuple[str, str]],
        properties_file: Optional[str] = None,
        region: Optional[str] = None,
        endpoint_url: Optional[str] = None,
    ) -> "NativeProducer": ...
    def send(
        self, stream: str, record_args: _RecordArgs, token: Any, room: str
    ) -> Union[None, _Failure, Waiting]: ...
    def send_many(
        self,
        stream: str,
        records: Iterable[Any],
        entry: Callable[[Any], _RecordArgs],
        token: Any,
        room: str,
    ) -> Optional[Waiting]: ...
    def flush(self) -> None: ...
    def flush_then(self, token: Any) -> None: ...
    def sync_spool_then(self, token: Any) -> None: ...
    def close_then(self, token: Any) -> None: ...
    def outstanding(self) -> int: ...
    def metrics(self, window: float = 60.0) -> List[Dict[str, Any]]: ...

def deaggregate(
    partition_key: str, data: bytes
) -> List[Tuple[str, Optional[str], bytes, int, bool]]: ...
def _exiting() -> None: ...
def _after_fork_in_child() -> None: ...
