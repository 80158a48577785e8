"""The flow, on one screen.

    touchpoints.<channel>  --(record batches)-->  ingest
        ingest: parse, validate, normalise identifiers, correct clock skew,
                drop repeats of an event_id (duplicate window, changelogged table)
          -> ClickHouse events_store       (accepted)
          -> touchpoints.dlq + ClickHouse dead_letters_store   (rejected, with reason)

Offsets of a batch are acked only once its rows are stored in ClickHouse, and Faust
flushes the producer (dead letters, changelog) before it commits: at-least-once,
end to end, with idempotent sinks.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streams.batching import RecordBatch
from streams.dedup import Chunk
from streams.ingest import triage

if TYPE_CHECKING:
    from streams.app import Worker

__all__ = ["register_agents"]

logger = logging.getLogger(__name__)


def register_agents(worker: Worker) -> None:
    """Attach the agents to ``worker.app``."""
    app = worker.app
    table = worker.dedup_table
    window = worker.window
    metrics = worker.metrics

    @app.agent(worker.input_topic, name="ingest", concurrency=1)
    async def ingest(stream: Any) -> None:
        """Validate, normalise and de-duplicate touchpoints; store them; dead-letter the rest."""
        sink = await worker.wait_for_sink()
        logger.info("ingest agent running")
        async for event in stream.noack().events():
            batch: RecordBatch = event.value
            now = datetime.now(UTC)
            if not window.is_loaded(batch.partition):
                window.load(batch.partition, _chunks_of(table, batch.partition))

            result = triage(batch.source_records(), worker.rules, window, now)

            sealed = window.seal(batch.topic, batch.partition, int(now.timestamp() * 1000))
            if sealed.write is not None:
                table[sealed.write.key] = sealed.write.to_value()
            for key in sealed.delete:
                del table[key]
            for letter in result.dead_letters:
                await worker.dead_letters.publish(letter)

            metrics.count_batch(
                batch.topic,
                consumed=len(batch),
                accepted=Counter(e.channel for e in result.accepted),
                duplicates=len(result.duplicates),
                dead_lettered=Counter(d.reason.value for d in result.dead_letters),
                flags=Counter(f for e in result.accepted for f in e.flags),
            )
            await sink.add(
                result.accepted,
                result.dead_letters,
                on_stored=event.ack,
                token=f"{batch.topic}:{batch.partition}:{batch.first_offset}-{batch.last_offset}",
            )

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        """A partition that moves to another worker takes its duplicate window along."""
        window.forget({tp.partition for tp in revoked})


def _chunks_of(table: Any, partition: int) -> list[Chunk]:
    prefix = f"{partition}/"
    return [
        Chunk.from_value(key, value)
        for key, value in table.items()
        if isinstance(key, str) and key.startswith(prefix) and value
    ]
