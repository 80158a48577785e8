"""The ClickHouse sink: accepted events and dead letters, batched and idempotent.

Lifecycle: ``start()`` once the event loop runs, ``add()`` for every processed input
batch, ``flush()`` to force out what waits, ``stop()`` on shutdown (flushes first).

Delivery contract: ``add`` takes a callback that the sink calls once the rows of that
call are stored. The worker acks Kafka offsets from that callback, so offsets are never
committed ahead of ClickHouse (at-least-once). An insert that fails is retried with the
same ``insert_deduplication_token`` until it succeeds, so a retry whose first attempt
did land stores nothing twice; a replay after a crash may insert rows again, and the
ReplacingMergeTree tables with their ``FINAL`` views collapse those. A ClickHouse
outage therefore stalls the stream (``add`` waits once ``max_pending_rows`` wait)
rather than losing or duplicating anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from schemas.clickhouse import DEAD_LETTER_COLUMNS, EVENT_COLUMNS
from schemas.dead_letter import DeadLetter
from schemas.ingested import IngestedEvent

__all__ = ["ClickHouseSink", "InsertClient", "SinkStats", "dead_letter_row", "event_row"]

logger = logging.getLogger(__name__)


class InsertClient(Protocol):
    """The part of clickhouse-connect's async client the sink uses."""

    async def insert(
        self,
        table: str,
        data: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        database: str,
        column_oriented: bool,
        settings: dict[str, Any],
    ) -> Any: ...


@dataclass
class SinkStats:
    """Counters the metrics module reads; monotonic except ``pending_rows``."""

    inserted_events: int = 0
    inserted_dead_letters: int = 0
    inserts: int = 0
    insert_errors: int = 0
    pending_rows: int = 0
    last_insert_seconds: float = 0.0


@dataclass
class _Pending:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    since: float = 0.0

    @property
    def rows(self) -> int:
        return len(self.events) + len(self.dead_letters)


def event_row(ingested: IngestedEvent) -> tuple[Any, ...]:
    """One ``events_store`` row, in :data:`schemas.clickhouse.EVENT_COLUMNS` order."""
    event = ingested.event
    survey = event.survey
    interaction = event.interaction
    commerce = event.commerce
    source = ingested.source
    return (
        event.event_id,
        ingested.occurred_at,
        ingested.client_occurred_at,
        event.sent_at,
        ingested.clock_skew_ms,
        ingested.received_at,
        ingested.channel,
        event.type,
        ingested.customer_id,
        ingested.identifiers,
        ingested.rejected_identifiers,
        event.schema_version,
        event.source,
        event.session_id,
        event.case_id,
        survey.metric if survey else None,
        survey.score if survey else None,
        (survey.scale_max or {"nps": 10, "csat": 5, "ces": 7}[survey.metric]) if survey else None,
        survey.comment if survey else None,
        interaction.direction if interaction else None,
        interaction.queue if interaction else None,
        interaction.agent_id if interaction else None,
        interaction.wait_seconds if interaction else None,
        interaction.handle_seconds if interaction else None,
        interaction.transferred if interaction else None,
        interaction.escalated if interaction else None,
        interaction.resolved if interaction else None,
        commerce.order_id if commerce else None,
        commerce.amount if commerce else None,
        commerce.currency.upper() if commerce and commerce.currency else None,
        event.context,
        orjson.dumps(event.properties).decode(),
        list(ingested.flags),
        source.topic,
        source.partition,
        source.offset,
    )


def dead_letter_row(letter: DeadLetter) -> tuple[Any, ...]:
    """One ``dead_letters_store`` row, in :data:`DEAD_LETTER_COLUMNS` order."""
    return (
        letter.source_topic,
        letter.source_partition,
        letter.source_offset,
        letter.source_timestamp,
        letter.received_at,
        letter.reason.value,
        letter.detail,
        letter.event_id,
        letter.key,
        letter.raw,
        [(name, value) for name, value in letter.headers],
    )


class ClickHouseSink:
    """Batches rows in memory and inserts them into ``events_store`` / ``dead_letters_store``.

    Rows are inserted when ``batch_rows`` wait or the oldest has waited ``linger_s``
    seconds, whichever comes first. One insert per table at a time, in arrival order.
    """

    def __init__(
        self,
        client: InsertClient,
        database: str,
        *,
        batch_rows: int = 20_000,
        linger_s: float = 0.5,
        max_pending_rows: int = 200_000,
        retry_max_s: float = 30.0,
    ) -> None:
        self._client = client
        self._database = database
        self._batch_rows = batch_rows
        self._linger_s = linger_s
        self._max_pending_rows = max_pending_rows
        self._retry_max_s = retry_max_s
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._flush_requested = False
        self.stats = SinkStats()

    async def start(self) -> None:
        """Start the background flusher. Call inside the running event loop."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="clickhouse-sink")

    async def add(
        self,
        events: Sequence[IngestedEvent],
        dead_letters: Sequence[DeadLetter],
        on_stored: Callable[[], None],
        token: str,
    ) -> None:
        """Queue rows; ``on_stored`` runs after every row of this call is in ClickHouse.

        ``token`` names the input this call covers (for example ``topic:partition:first-last``)
        and feeds the insert deduplication token. Waits while too many rows are pending.
        """
        while self._pending.rows >= self._max_pending_rows:
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        pending = self._pending
        if not pending.rows and not pending.callbacks:
            pending.since = time.monotonic()
        pending.events.extend(map(event_row, events))
        pending.dead_letters.extend(map(dead_letter_row, dead_letters))
        pending.callbacks.append(on_stored)
        pending.tokens.append(token)
        self._idle.clear()
        self.stats.pending_rows = pending.rows
        if len(pending.callbacks) == 1 or pending.rows >= self._batch_rows:
            self._wake.set()  # the flusher starts its linger clock, or inserts now

    async def flush(self) -> None:
        """Insert everything that waits now and return when it is stored."""
        while not self._idle.is_set():
            self._flush_requested = True
            self._wake.set()
            await self._idle.wait()

    async def stop(self) -> None:
        """Flush, then stop the flusher."""
        if self._task is None:
            return
        await self.flush()
        self._stopping = True
        self._wake.set()
        await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            if not self._pending.callbacks:
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._linger()
            self._flush_requested = False
            pending, self._pending = self._pending, _Pending()
            await self._insert_until_stored(pending)
            self.stats.pending_rows = self._pending.rows
            for callback in pending.callbacks:
                callback()
            if self._pending.rows < self._max_pending_rows:
                self._room.set()

    async def _linger(self) -> None:
        """Wait until a batch is full, the oldest row has waited linger_s, or flush() asks."""
        due = self._pending.since + self._linger_s
        while (
            self._pending.rows < self._batch_rows
            and not self._flush_requested
            and not self._stopping
            and self._room.is_set()
        ):
            remaining = due - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=remaining)
            except TimeoutError:
                return

    async def _insert_until_stored(self, pending: _Pending) -> None:
        token = hashlib.sha256("\n".join(pending.tokens).encode()).hexdigest()
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                if pending.events:
                    await self._insert("events_store", pending.events, EVENT_COLUMNS, token)
                if pending.dead_letters:
                    await self._insert(
                        "dead_letters_store", pending.dead_letters, DEAD_LETTER_COLUMNS, token
                    )
            except Exception as exc:  # retried forever: losing rows is not an option
                attempt += 1
                self.stats.insert_errors += 1
                delay = min(self._retry_max_s, 0.2 * 2**attempt) * (0.5 + random.random() / 2)
                logger.warning(
                    "ClickHouse insert of %d rows failed (attempt %d), retrying in %.1f s: %s",
                    pending.rows,
                    attempt,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                continue
            self.stats.inserts += 1
            self.stats.inserted_events += len(pending.events)
            self.stats.inserted_dead_letters += len(pending.dead_letters)
            self.stats.last_insert_seconds = time.monotonic() - started
            return

    async def _insert(
        self, table: str, rows: list[tuple[Any, ...]], columns: Sequence[str], token: str
    ) -> None:
        await self._client.insert(
            table,
            list(zip(*rows, strict=True)),
            column_names=columns,
            database=self._database,
            column_oriented=True,
            settings={
                "insert_deduplication_token": f"{token}:{table}",
                "async_insert": 0,
            },
        )
