"""Consumer lag: how many records of its partitions the worker's group has not committed.

Sampled from the broker, the way ``kafka-consumer-groups.sh --describe`` reports it: the
partition's end offset minus the group's committed offset. The worker commits an offset
only once what the records produced is stored (see ``streams/agents.py``), so this lag
counts records not yet processed *and stored*. A partition the group never committed
counts from its first available offset (the worker reads from the beginning).

Each worker samples only the partitions it holds, so summing the gauge over workers
counts each partition once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.settings import Settings

__all__ = ["LagSampler"]

logger = logging.getLogger(__name__)


class LagSampler:
    """Reads committed and end offsets with a consumer of the worker's group that never
    joins it (it neither subscribes nor commits).

    Lifecycle: ``start()`` inside the running loop, ``sample()`` as often as wanted,
    ``stop()`` at shutdown. A failed sample raises; the caller keeps the last one.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        settings = self._settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.app_id,
            client_id=f"{settings.app_id}-lag",
            enable_auto_commit=False,
            **settings.kafka_client_options(),
        )
        await consumer.start()
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def sample(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Records behind per ``(topic, partition)``, never negative."""
        if self._consumer is None:
            await self.start()
        consumer: Any = self._consumer
        tps = [TopicPartition(topic, partition) for topic, partition in sorted(set(partitions))]
        if not tps:
            return {}
        ends = await consumer.end_offsets(tps)
        never = []
        lag: dict[tuple[str, int], int] = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is None:
                never.append(tp)
            else:
                lag[(tp.topic, tp.partition)] = max(0, ends[tp] - committed)
        if never:
            starts = await consumer.beginning_offsets(never)
            for tp in never:
                lag[(tp.topic, tp.partition)] = max(0, ends[tp] - starts[tp])
        return lag
