"""kinesis_producer: put records into Amazon Kinesis Data Streams through a Rust engine that
aggregates them per shard in the KPL's format (every KCL, Lambda and Firehose consumer reads
them unchanged), with per-shard rate limits, retries and backpressure.

    import asyncio
    from kinesis_producer import Producer

    async def main():
        async with Producer(region="eu-west-1") as producer:
            receipt = await producer.put("events", b'{"user": 42}', partition_key="42")
            print(receipt.shard_id, receipt.sequence_number)

    asyncio.run(main())

:class:`SyncProducer` is the same for threads and scripts. See docs/python.md.
"""

from ._consumer import UserRecord, deaggregate, deaggregate_lambda_event
from ._errors import BufferFull, ConfigError, InvalidRecord, ProducerClosed, PutError, Record
from ._native import Receipt, SpoolError
from ._producer import Outcome, Producer, SyncProducer

__version__ = "0.1.0"

__all__ = [
    "BufferFull",
    "ConfigError",
    "InvalidRecord",
    "Outcome",
    "Producer",
    "ProducerClosed",
    "PutError",
    "Receipt",
    "Record",
    "SpoolError",
    "SyncProducer",
    "UserRecord",
    "deaggregate",
    "deaggregate_lambda_event",
]
