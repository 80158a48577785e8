"""Reading what is on a topic, for tests: end offsets and the records between two points.

Consumers here have no group (nothing is committed) and are assigned partitions
explicitly, so they read exactly the range asked for.
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["end_offsets", "partitions_of", "records_after"]


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for p in description["partitions"]]


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    parts = await partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign(parts)
        return {tp.partition: end for tp, end in (await consumer.end_offsets(parts)).items()}
    finally:
        await consumer.stop()


async def records_after(bootstrap: str, topic: str, starts: dict[int, int]) -> list[Any]:
    """Every record of ``topic`` from ``starts`` (partition -> offset) to the end as of now."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    found: list[Any] = []
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, starts.get(tp.partition, 0))
        deadline = time.monotonic() + 60
        remaining = {tp for tp in parts if starts.get(tp.partition, 0) < ends[tp.partition]}
        while remaining and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                found += [r for r in records if r.offset < ends[tp.partition]]
                if records and records[-1].offset >= ends[tp.partition] - 1:
                    remaining.discard(tp)
        assert not remaining, f"records not read in time from {sorted(remaining)}"
    finally:
        await consumer.stop()
    return found
