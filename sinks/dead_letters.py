"""The Kafka dead-letter sink: rejected messages to ``touchpoints.dlq``.

The value, key and headers are the original ones; the reason and source coordinates
are added as ``touchpoint.dlq.*`` headers. ``publish`` returns the send's future: the
caller acks the message it replaces only once that future says the broker has the
dead letter (a flush before a commit waits for a send, but does not fail on one that
failed).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from schemas.dead_letter import DeadLetter

__all__ = ["DeadLetterPublisher", "Producer"]


class Producer(Protocol):
    """The producer call used: Faust's ``app.producer.send`` has this shape."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> Any: ...


class DeadLetterPublisher:
    """Publishes dead letters to one topic. Lifecycle: none; the producer is the caller's."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def publish(self, letter: DeadLetter) -> asyncio.Future[Any]:
        """Enqueue the dead letter; the future resolves once the broker has it (and
        raises if the producer gave up)."""
        future: asyncio.Future[Any] = await self._producer.send(
            self.topic,
            letter.key,
            letter.raw,
            None,
            None,
            letter.kafka_headers(),
        )
        return future
