"""The Kafka dead-letter sink: rejected messages to ``touchpoints.dlq``.

The value, key and headers are the original ones; the reason and source coordinates
are added as ``touchpoint.dlq.*`` headers. Sends go through the worker's producer,
which Faust flushes before it commits offsets, so a dead letter is durable in Kafka
before the offset of the message it replaces is committed.
"""

from __future__ import annotations

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

    async def publish(self, letter: DeadLetter) -> None:
        """Enqueue the dead letter; durable once the producer is flushed."""
        await self._producer.send(
            self.topic,
            letter.key,
            letter.raw,
            None,
            None,
            letter.kafka_headers(),
        )
