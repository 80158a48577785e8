"""The ClickHouse sink: rows for the ``*_store`` tables, batched and idempotent.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.clickhouse import TABLE_COLUMNS

__all__ = ["ClickHouseSink", "InsertClient", "SinkStats"]

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

    async def command(
        self,
        cmd: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Any: ...


@dataclass
class SinkStats:
    """Counters the metrics module reads; monotonic except ``pending_rows``."""

    inserted: dict[str, int] = field(default_factory=dict)
    inserts: int = 0
    insert_errors: int = 0
    pending_rows: int = 0
    last_insert_seconds: float = 0.0
    #: ``time.monotonic()`` when the oldest row not yet stored was queued (in flight
    #: included); None while every queued row is stored
    oldest_pending_at: float | None = None
    #: ``time.monotonic()`` of the last insert that succeeded; None before the first
    last_stored_at: float | None = None


@dataclass
class _Pending:
    tables: dict[str, list[Sequence[Any]]] = field(default_factory=dict)
    callbacks: list[Callable[[], None]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    since: float = 0.0
    rows: int = 0


class ClickHouseSink:
    """Batches rows in memory and inserts them into the tables of
    :data:`schemas.clickhouse.TABLE_COLUMNS` (rows in that column order).

    Rows are inserted when ``batch_rows`` wait or the oldest has waited ``linger_s``
    seconds, whichever comes first. One flush at a time, tables in the order of
    ``TABLE_COLUMNS``, flushes in arrival order.
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
        rows: Mapping[str, Sequence[Sequence[Any]]],
        on_stored: Callable[[], None],
        token: str,
    ) -> None:
        """Queue rows (table name -> rows); ``on_stored`` runs once every row of this call
        is in ClickHouse.

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
            if self.stats.oldest_pending_at is None:
                self.stats.oldest_pending_at = pending.since
        for table, table_rows in rows.items():
            if table not in TABLE_COLUMNS:
                raise KeyError(f"no such table in the schema: {table}")
            if table_rows:
                pending.tables.setdefault(table, []).extend(table_rows)
                pending.rows += len(table_rows)
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

    async def erase(self, customer_ids: Sequence[str]) -> None:
        """Delete every stored row of these customers (erasure), after a flush.

        Runs ClickHouse mutations synchronously (``mutations_sync = 2``).
        """
        await self.flush()
        db = self._database
        ids = {"ids": list(customer_ids)}
        owned = "{ids:Array(String)}"
        conditions = {
            "events_store": f"customer_id IN {owned}",
            "customer_360_store": f"customer_id IN {owned}",
            "customer_aliases_store": f"customer_id IN {owned}",
            "customer_redirects_store": f"customer_id IN {owned} OR current_id IN {owned}",
            "identity_merges_store": f"merged_from IN {owned} OR merged_into IN {owned}",
            "identity_refusals_store": (f"customer_id IN {owned} OR other_customer_id IN {owned}"),
            "effort_store": f"customer_id IN {owned}",
            "followups_store": f"customer_id IN {owned}",
            "alerts_store": f"customer_id IN {owned}",
        }
        statements = [
            f"ALTER TABLE `{db}`.{table} DELETE WHERE {where}"
            for table, where in conditions.items()
        ]
        for statement in statements:
            await self._client.command(statement, parameters=ids, settings={"mutations_sync": 2})

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
            self.stats.oldest_pending_at = self._pending.since if self._pending.callbacks else None
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
        done: set[str] = set()
        while True:
            started = time.monotonic()
            try:
                for table, columns in TABLE_COLUMNS.items():
                    rows = pending.tables.get(table)
                    if rows and table not in done:
                        await self._insert(table, rows, columns, token)
                        done.add(table)  # a retry does not send it again
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
            for table in done:
                self.stats.inserted[table] = self.stats.inserted.get(table, 0) + len(
                    pending.tables[table]
                )
            self.stats.last_stored_at = time.monotonic()
            self.stats.last_insert_seconds = self.stats.last_stored_at - started
            return

    async def _insert(
        self, table: str, rows: list[Sequence[Any]], columns: Sequence[str], token: str
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
